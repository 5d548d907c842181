/*
 * Resource-name parsing. The name is cut into at most SEGMENTS_MAX segments; the first keyword
 * segment ends the instance, and the rest must match the grammar in resource.h exactly.
 */
#include "proto/resource.h"

#include <errno.h>
#include <string.h>

#include "proto/wire.h"

#define SEGMENTS_MAX 64

struct seg {
    const char *p; /* inside the name */
    size_t len;    /* bytes, > 0 */
};

static bool seg_is(const struct seg *s, const char *word)
{
    size_t n = strlen(word);
    return s->len == n && memcmp(s->p, word, n) == 0;
}

static bool seg_is_keyword(const struct seg *s)
{
    return seg_is(s, "blobs") || seg_is(s, "compressed-blobs") || seg_is(s, "uploads") ||
           seg_is(s, "actions") || seg_is(s, "actionResults") || seg_is(s, "operations") ||
           seg_is(s, "capabilities");
}

/* Digest functions REAPI names in resource names (DigestFunction.Value, lower case). */
static bool seg_is_digest_function(const struct seg *s)
{
    static const char *const names[] = { "sha256", "sha1",    "md5",        "vso",    "sha384",
                                         "sha512", "murmur3", "sha256tree", "blake3", "gitsha1" };
    for (size_t i = 0; i < ARRAY_LEN(names); i++) {
        if (seg_is(s, names[i])) return true;
    }
    return false;
}

/* Splits <name> at '/'; returns the number of segments or -EINVAL (empty segment, too many). */
static int split(const char *name, size_t len, struct seg *segs)
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] != '/') continue;
        if (i == start || n == SEGMENTS_MAX) return -EINVAL;
        segs[n].p = name + start;
        segs[n].len = i - start;
        n++;
        start = i + 1;
    }
    return n;
}

static int parse_size(const struct seg *s, uint64_t *out)
{
    if (s->len > 19) return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (s->p[i] < '0' || s->p[i] > '9') return -EINVAL;
        v = v * 10 + (uint64_t)(s->p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX) return -EINVAL;
    *out = v;
    return 0;
}

int proto_resource_digest(const char *hex, size_t hex_len, int64_t size,
                          uint8_t hash[PROTO_SHA256_SIZE])
{
    if (size < 0 || hex_len == 0) return -EINVAL;
    uint8_t tmp[64];
    if (hex_len > 2 * sizeof(tmp) || proto_hex_decode(hex, hex_len, tmp) < 0) return -EINVAL;
    if (hex_len != (size_t)2 * PROTO_SHA256_SIZE) return -ENOTSUP;
    memcpy(hash, tmp, PROTO_SHA256_SIZE);
    return 0;
}

/* Parses "{compressor}/" when <compressed>, then "{digest_function/}{hash}/{size}". */
static int parse_blob(const struct seg *s, int n, bool compressed, struct proto_resource *out,
                      int *used, const char **why)
{
    int i = 0;
    out->compressor = PROTO_COMPRESSOR_IDENTITY;
    if (compressed) {
        if (n < 1) {
            *why = "missing compressor";
            return -EINVAL;
        }
        if (seg_is(&s[0], "deflate") || seg_is(&s[0], "brotli")) {
            *why = "compressor not supported (only zstd)";
            return -ENOTSUP;
        }
        if (seg_is(&s[0], "identity")) {
            /* REAPI: the compressor is a Compressor.Value "other than identity". */
            *why = "compressor identity has no compressed-blobs form (name the blob blobs/...)";
            return -EINVAL;
        }
        if (!seg_is(&s[0], "zstd")) {
            *why = "unknown compressor";
            return -EINVAL;
        }
        out->compressor = PROTO_COMPRESSOR_ZSTD;
        i = 1;
    }
    if (n - i >= 1 && seg_is(&s[i], "sha256")) {
        /* REAPI: the segment MUST be omitted for SHA-256 (and the other functions a hash's
         * length tells apart); "not supported" read as if SHA-256 were not served. */
        *why = "digest function segment sha256 must be omitted: SHA-256 is named by omission "
               "({hash}/{size})";
        return -ENOTSUP;
    }
    if (n - i >= 1 && seg_is_digest_function(&s[i])) {
        *why = "digest function not supported (only SHA-256, named by omission)";
        return -ENOTSUP;
    }
    if (n - i < 2) {
        *why = "missing hash or size";
        return -EINVAL;
    }
    uint64_t size;
    if (parse_size(&s[i + 1], &size) < 0) {
        *why = "malformed size";
        return -EINVAL;
    }
    int rc = proto_resource_digest(s[i].p, s[i].len, (int64_t)size, out->hash);
    if (rc < 0) {
        *why = rc == -ENOTSUP ? "hash is not SHA-256 (64 hex digits)" : "malformed hash";
        return rc;
    }
    out->size = size;
    *used = i + 2;
    return 0;
}

static int parse_tail(const struct seg *s, int n, bool write, struct proto_resource *out,
                      const char **why)
{
    int i = 0;
    if (write) {
        if (n < 2 || !seg_is(&s[0], "uploads") || seg_is_keyword(&s[1])) {
            *why = "expected uploads/{uuid}/";
            return -EINVAL;
        }
        out->uuid = s[1].p;
        out->uuid_len = s[1].len;
        i = 2;
    }
    if (i >= n || !(seg_is(&s[i], "blobs") || seg_is(&s[i], "compressed-blobs"))) {
        *why = "expected blobs/ or compressed-blobs/";
        return -EINVAL;
    }
    bool compressed = seg_is(&s[i], "compressed-blobs");
    int used = 0;
    int rc = parse_blob(s + i + 1, n - i - 1, compressed, out, &used, why);
    if (rc < 0) return rc;
    /* Write names may carry optional metadata after the size; read names may not. */
    if (!write && i + 1 + used != n) {
        *why = "trailing segments after the size";
        return -EINVAL;
    }
    return 0;
}

int proto_resource_parse(const char *name, size_t len, bool write, struct proto_resource *out,
                         const char **why)
{
    memset(out, 0, sizeof(*out));
    out->instance = "";
    out->uuid = "";
    *why = "malformed resource name";
    struct seg segs[SEGMENTS_MAX];
    int n = split(name, len, segs);
    if (n < 0) {
        *why = "empty segment or too many segments";
        return -EINVAL;
    }
    int k = 0;
    while (k < n && !seg_is_keyword(&segs[k])) {
        k++;
    }
    if (k == n) {
        *why = write ? "expected uploads/{uuid}/" : "expected blobs/ or compressed-blobs/";
        return -EINVAL;
    }
    if (k > 0) {
        out->instance = name;
        out->instance_len = (size_t)(segs[k - 1].p + segs[k - 1].len - name);
    }
    return parse_tail(segs + k, n - k, write, out, why);
}
