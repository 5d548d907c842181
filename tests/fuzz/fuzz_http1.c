/*
 * Fuzz target for HTTP/1.1 request input: the head parser, the request semantics, routing
 * and the chunked decoder. Beyond "no crash, no read past the input" it checks invariants:
 *
 * - a head's result never exceeds the input; a complete head ends in CRLFCRLF, every span
 *   lies inside it, tokens are tokens, values hold no CR, LF or NUL and are trimmed;
 * - the result does not depend on how the input is cut (two cuts chosen by the input, fed
 *   incrementally with last_len), and every proper prefix of a complete head needs more;
 * - the chunked decoder gives the same bytes, the same end and the same error whether the
 *   body comes at once or in small pieces, and never hands out bytes outside its input;
 * - a routed CAS/AC request names 64 hex digits; a refusal has a 4xx/5xx status.
 *
 * Input layout: byte 0 picks the cuts, byte 1 the piece size of the chunked replay; the rest
 * is the request (head, then body).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/assert.h"
#include "rpc/h1_chunked.h"
#include "rpc/h1_parse.h"
#include "rpc/h1_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct rpc_h1_head head_a;
static struct rpc_h1_head head_b;

static bool is_tchar(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool span_inside(const struct rpc_h1_span *s, const char *buf, size_t len)
{
    return s->ptr >= buf && s->ptr + s->len <= buf + len;
}

static void check_token(const struct rpc_h1_span *s)
{
    ASSERT(s->len > 0);
    for (uint32_t i = 0; i < s->len; i++) {
        ASSERT(is_tchar(s->ptr[i]));
    }
}

static void check_head(const struct rpc_h1_head *h, const char *buf, size_t n)
{
    ASSERT(n >= 4 && memcmp(buf + n - 4, "\r\n\r\n", 4) == 0);
    ASSERT(h->version_minor <= 1);
    ASSERT(h->field_count <= RPC_H1_FIELDS_MAX);
    ASSERT(span_inside(&h->method, buf, n));
    ASSERT(span_inside(&h->target, buf, n));
    ASSERT(h->target.len > 0 && h->target.len <= RPC_H1_TARGET_MAX);
    check_token(&h->method);
    for (uint32_t i = 0; i < h->field_count; i++) {
        const struct rpc_h1_field *f = &h->fields[i];
        ASSERT(span_inside(&f->name, buf, n));
        ASSERT(span_inside(&f->value, buf, n));
        check_token(&f->name);
        const char *v = f->value.ptr;
        uint32_t len = f->value.len;
        ASSERT(memchr(v, '\r', len) == NULL);
        ASSERT(memchr(v, '\n', len) == NULL);
        ASSERT(memchr(v, '\0', len) == NULL);
        if (len > 0) {
            ASSERT(v[0] != ' ' && v[0] != '\t');
            ASSERT(v[len - 1] != ' ' && v[len - 1] != '\t');
        }
    }
}

static bool same_head(const struct rpc_h1_head *a, const struct rpc_h1_head *b)
{
    if (a->field_count != b->field_count || a->version_minor != b->version_minor) return false;
    if (a->method.ptr != b->method.ptr || a->method.len != b->method.len) return false;
    if (a->target.ptr != b->target.ptr || a->target.len != b->target.len) return false;
    for (uint32_t i = 0; i < a->field_count; i++) {
        if (a->fields[i].value.ptr != b->fields[i].value.ptr) return false;
        if (a->fields[i].value.len != b->fields[i].value.len) return false;
    }
    return true;
}

static bool is_known_head_error(int rc)
{
    return rc == -EPROTO || rc == -EMSGSIZE || rc == -ENAMETOOLONG || rc == -EPROTONOSUPPORT;
}

/* Feeds buf[0..len) in three calls cut at <c1> <= <c2>; returns the last result. */
static int parse_in_pieces(const char *buf, size_t len, size_t c1, size_t c2)
{
    int rc = rpc_h1_parse_head(buf, c1, 0, &head_b, NULL);
    if (rc != 0) return rc;
    rc = rpc_h1_parse_head(buf, c2, c1, &head_b, NULL);
    if (rc != 0) return rc;
    return rpc_h1_parse_head(buf, len, c2, &head_b, NULL);
}

static void check_request(const struct rpc_h1_head *h)
{
    struct rpc_h1_request req;
    const char *desc = NULL;
    int rc = rpc_h1_parse_request(h, &req, &desc);
    if (rc < 0) {
        ASSERT(desc != NULL);
        int status = rpc_h1_parse_status(rc);
        ASSERT(status >= 400 && status <= 599);
        return;
    }
    ASSERT(!(req.chunked && req.has_length));
    ASSERT(req.path.len > 0);
    ASSERT(span_inside(&req.path, h->target.ptr, h->target.len) || req.path.len == 1);
    struct rpc_h1_route route;
    rpc_h1_route(req.method, &h->method, &req.path, &route);
    if (route.target == RPC_H1_TARGET_NONE) {
        ASSERT(route.status >= 400 && route.status <= 599);
        ASSERT(route.err_desc != NULL);
        ASSERT(route.status != 405 || route.allow != NULL);
        return;
    }
    if (route.target == RPC_H1_TARGET_CAS || route.target == RPC_H1_TARGET_AC) {
        ASSERT(req.path.len >= 64);
        const char *hex = req.path.ptr + req.path.len - 64;
        for (size_t i = 0; i < 64; i++) {
            ASSERT(strchr("0123456789abcdefABCDEF", hex[i]) != NULL && hex[i] != '\0');
        }
    }
}

struct chunked_result {
    uint8_t body[4096]; /* the first decoded bytes */
    size_t body_len;    /* decoded bytes in all */
    uint64_t sum;       /* a checksum of every decoded byte with its position */
    size_t consumed;    /* input bytes consumed */
    int err;            /* 0 or the error */
    bool done;          /* the body ended */
};

static void decode(const uint8_t *in, size_t len, size_t piece, struct chunked_result *r)
{
    struct rpc_h1_chunked d;
    rpc_h1_chunked_init(&d);
    memset(r, 0, sizeof(*r));
    size_t off = 0;
    /* Bounded: each call consumes at least one byte or ends the loop. */
    while (off < len && !rpc_h1_chunked_is_done(&d)) {
        size_t avail = len - off < piece ? len - off : piece;
        const uint8_t *data;
        size_t n;
        int rc = rpc_h1_chunked_decode(&d, in + off, avail, &data, &n, NULL);
        if (rc < 0) {
            ASSERT(rc == -EPROTO || rc == -EMSGSIZE);
            r->err = rc;
            break;
        }
        ASSERT(rc > 0 && (size_t)rc <= avail);
        ASSERT(n <= (size_t)rc);
        if (n > 0) ASSERT(data >= in + off && data + n <= in + off + (size_t)rc);
        for (size_t i = 0; i < n; i++) {
            if (r->body_len + i < sizeof(r->body)) r->body[r->body_len + i] = data[i];
            r->sum += (uint64_t)data[i] * (r->body_len + i + 1);
        }
        r->body_len += n;
        off += (size_t)rc;
    }
    r->consumed = off;
    r->done = rpc_h1_chunked_is_done(&d);
}

static void check_chunked(const uint8_t *in, size_t len, size_t piece)
{
    static struct chunked_result whole;
    static struct chunked_result pieces;
    decode(in, len, len ? len : 1, &whole);
    decode(in, len, piece, &pieces);
    ASSERT(whole.err == pieces.err);
    if (whole.err) return;
    ASSERT(whole.done == pieces.done);
    ASSERT(whole.body_len == pieces.body_len);
    ASSERT(whole.sum == pieces.sum);
    ASSERT(whole.consumed == pieces.consumed);
    size_t cmp = whole.body_len < sizeof(whole.body) ? whole.body_len : sizeof(whole.body);
    ASSERT(memcmp(whole.body, pieces.body, cmp) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t cut = data[0];
    size_t piece = (size_t)(data[1] % 7) + 1;
    const char *buf = (const char *)data + 2;
    size_t len = size - 2;

    int rc = rpc_h1_parse_head(buf, len, 0, &head_a, NULL);
    ASSERT(rc <= (int)len);
    size_t c1 = len ? (size_t)(cut & 0x0f) * len / 16 : 0;
    size_t c2 = len ? c1 + (size_t)(cut >> 4) * (len - c1) / 16 : 0;
    int rc_pieces = parse_in_pieces(buf, len, c1, c2);
    if (rc < 0) {
        ASSERT(is_known_head_error(rc));
        ASSERT(rc_pieces == rc); /* an error shows once the head is complete, at any cut */
        return 0;
    }
    if (rc == 0) {
        ASSERT(rc_pieces == 0);
        ASSERT(len < RPC_H1_HEAD_MAX);
        check_chunked(data + 2, len, piece);
        return 0;
    }
    size_t n = (size_t)rc;
    check_head(&head_a, buf, n);
    ASSERT(rc_pieces == rc);
    ASSERT(same_head(&head_a, &head_b));
    /* Every proper prefix needs more. */
    ASSERT(rpc_h1_parse_head(buf, n - 1, 0, &head_b, NULL) == 0);
    ASSERT(rpc_h1_parse_head(buf, n / 2, 0, &head_b, NULL) == 0);
    ASSERT(rpc_h1_parse_head(buf, n, 0, &head_b, NULL) == rc);
    check_request(&head_a);
    check_chunked(data + 2 + n, len - n, piece);
    return 0;
}
