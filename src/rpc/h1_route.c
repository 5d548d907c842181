/*
 * HTTP/1.1 routing: the operations endpoints by exact path, the cache layouts by the path's
 * last two segments, plain keys for the rest; methods checked per target (405 with Allow for
 * methods HTTP defines, 501 for tokens it does not).
 */
#include "rpc/h1_route.h"

#include <string.h>

#define ALLOW_OPS   "GET, HEAD"
#define ALLOW_CACHE "GET, HEAD, PUT"

static bool span_is(const struct rpc_h1_span *s, const char *lit)
{
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

/* Methods RFC 9110 §9 defines that ringcas does not serve: 405, not 501. */
static bool is_known_method(const struct rpc_h1_span *name)
{
    static const char *const known[] = { "POST", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE" };
    for (size_t i = 0; i < ARRAY_LEN(known); i++) {
        if (span_is(name, known[i])) return true;
    }
    return false;
}

static void refuse(struct rpc_h1_route *out, int status, const char *desc)
{
    out->target = RPC_H1_TARGET_NONE;
    out->metric = RPC_ROUTE_HTTP_OTHER;
    out->status = status;
    out->err_desc = desc;
}

/* The method is not allowed on the target: 405 with <allow>, or 501 for unknown tokens. */
static void refuse_method(struct rpc_h1_route *out, enum rpc_h1_method m,
                          const struct rpc_h1_span *name, const char *allow)
{
    if (m != RPC_H1_METHOD_OTHER || is_known_method(name)) {
        refuse(out, 405, "method not allowed on this resource");
        out->allow = allow;
        return;
    }
    refuse(out, 501, "method not implemented");
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes 64 hex digits into 32 bytes; false when <s> is anything else. */
static bool parse_sha256(const char *s, size_t len, uint8_t out[RPC_KEY_SIZE])
{
    if (len != (size_t)2 * RPC_KEY_SIZE) return false;
    for (size_t i = 0; i < RPC_KEY_SIZE; i++) {
        int hi = hex_value(s[2 * i]);
        int lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static enum rpc_route cache_metric(enum rpc_h1_target target, enum rpc_h1_method m)
{
    static const enum rpc_route routes[3][3] = {
        { RPC_ROUTE_HTTP_GET_CAS, RPC_ROUTE_HTTP_HEAD_CAS, RPC_ROUTE_HTTP_PUT_CAS },
        { RPC_ROUTE_HTTP_GET_AC, RPC_ROUTE_HTTP_HEAD_AC, RPC_ROUTE_HTTP_PUT_AC },
        { RPC_ROUTE_HTTP_GET_KV, RPC_ROUTE_HTTP_HEAD_KV, RPC_ROUTE_HTTP_PUT_KV },
    };

    ASSERT(target >= RPC_H1_TARGET_CAS && target <= RPC_H1_TARGET_KV);
    ASSERT(m >= RPC_H1_METHOD_GET && m <= RPC_H1_METHOD_PUT);
    return routes[target - RPC_H1_TARGET_CAS][m - RPC_H1_METHOD_GET];
}

static bool route_ops(enum rpc_h1_method m, const struct rpc_h1_span *name,
                      const struct rpc_h1_span *path, struct rpc_h1_route *out)
{
    static const struct {
        const char *path;
        enum rpc_h1_target target;
        enum rpc_route metric;
    } ops[] = {
        { "/metrics", RPC_H1_TARGET_METRICS, RPC_ROUTE_HTTP_METRICS },
        { "/healthz", RPC_H1_TARGET_HEALTHZ, RPC_ROUTE_HTTP_HEALTHZ },
        { "/readyz", RPC_H1_TARGET_READYZ, RPC_ROUTE_HTTP_READYZ },
    };

    for (size_t i = 0; i < ARRAY_LEN(ops); i++) {
        if (!span_is(path, ops[i].path)) continue;
        if (m == RPC_H1_METHOD_GET || m == RPC_H1_METHOD_HEAD) {
            out->target = ops[i].target;
            out->metric = ops[i].metric;
        } else {
            refuse_method(out, m, name, ALLOW_OPS);
        }
        return true;
    }
    return false;
}

/* Whether the path segment <seg> of <len> bytes is "cas" or "ac". */
static bool is_layout_segment(const char *seg, size_t len)
{
    return (len == 3 && memcmp(seg, "cas", 3) == 0) || (len == 2 && memcmp(seg, "ac", 2) == 0);
}

/* Routes <prefix>/cas/<hash> and <prefix>/ac/<hash>; false for any other path. */
static bool route_layout(enum rpc_h1_method m, const struct rpc_h1_span *name,
                         const struct rpc_h1_span *path, struct rpc_h1_route *out)
{
    const char *p = path->ptr;
    const char *last = memrchr(p, '/', path->len);
    if (!last || last == p) return false;
    const char *kind = memrchr(p, '/', (size_t)(last - p));
    if (!kind) return false;
    size_t kind_len = (size_t)(last - kind - 1);
    uint8_t digest[RPC_KEY_SIZE];
    if (!is_layout_segment(kind + 1, kind_len)) {
        /* <prefix>/cas/<hash>/ is a mistyped digest as well: as a plain key its bytes would be
         * stored unchecked, and the client's later GET of the hash would miss. */
        if (last + 1 != p + path->len || kind == p) return false;
        const char *before = memrchr(p, '/', (size_t)(kind - p));
        if (!before || !is_layout_segment(before + 1, (size_t)(kind - before - 1)) ||
            !parse_sha256(kind + 1, kind_len, digest)) {
            return false;
        }
        refuse(out, 400,
               "expected 64 hex digits of a SHA-256 after /cas/ or /ac/, and no slash after them");
        return true;
    }
    bool cas = kind_len == 3; /* "cas", else "ac" */
    const char *hash = last + 1;
    size_t hash_len = path->len - (size_t)(hash - p);
    if (!parse_sha256(hash, hash_len, digest)) {
        refuse(out, 400, "expected 64 hex digits of a SHA-256 after /cas/ or /ac/");
        return true;
    }
    if (m == RPC_H1_METHOD_OTHER) {
        refuse_method(out, m, name, ALLOW_CACHE);
        return true;
    }
    out->target = cas ? RPC_H1_TARGET_CAS : RPC_H1_TARGET_AC;
    out->metric = cache_metric(out->target, m);
    if (cas) {
        memcpy(out->key, digest, RPC_KEY_SIZE);
        return true;
    }
    /* The instance is the prefix without its leading slash. */
    const char *inst = p[0] == '/' ? p + 1 : p;
    size_t inst_len = kind > inst ? (size_t)(kind - inst) : 0;
    rpc_keys_ac(inst, inst_len, digest, out->key);
    return true;
}

void rpc_h1_route(enum rpc_h1_method method, const struct rpc_h1_span *name,
                  const struct rpc_h1_span *path, struct rpc_h1_route *out)
{
    ASSERT(path->len > 0);
    ASSERT(path->len <= RPC_KEY_PATH_MAX);
    memset(out, 0, sizeof(*out));
    if (path->ptr[0] != '/') {
        /* Asterisk-form ("*") addresses the server, not a resource (RFC 9110 §9.3.7): OPTIONS
         * and the other methods HTTP defines get 405 with what the server serves, like on any
         * path; GET, HEAD and PUT have nothing to act on. */
        if (method == RPC_H1_METHOD_OTHER) {
            refuse_method(out, method, name, ALLOW_CACHE);
        } else {
            refuse(out, 400, "no resource for this request-target");
        }
        return;
    }
    if (route_ops(method, name, path, out)) return;
    if (route_layout(method, name, path, out)) return;
    if (method == RPC_H1_METHOD_OTHER) {
        refuse_method(out, method, name, ALLOW_CACHE);
        return;
    }
    out->target = RPC_H1_TARGET_KV;
    out->metric = cache_metric(RPC_H1_TARGET_KV, method);
    rpc_keys_http(path->ptr, path->len, out->key);
}
