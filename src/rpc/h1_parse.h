/*
 * HTTP/1.1 request heads (RFC 9112 §2–§5): a strict, incremental, allocation-free parser in the
 * manner of picohttpparser, and the interpretation of the header fields ringcas acts on.
 *
 * rpc_h1_parse_head() is tri-state: it returns the length of a complete head (> 0), 0 when the
 * bytes so far are a prefix that needs more, or -errno. It never reads outside [buf, buf+len)
 * and keeps no state: the caller passes the same bytes again with more appended, and
 * <last_len> (the length of the previous call's input) so only the new bytes are searched for
 * the end of the head. The result is the same for every way of cutting the input.
 *
 * Strictness: lines end in CRLF (a bare LF or CR is an error); the request line is exactly
 * method SP request-target SP HTTP-version; no whitespace between a field name and its colon;
 * no obs-fold; no control characters in values; the request-target is checked against RFC 3986
 * (origin-form, absolute-form, or "*"). Empty lines before the request line are skipped
 * (RFC 9112 §2.2) and count as consumed bytes.
 */
#ifndef RINGCAS_RPC_H1_PARSE_H
#define RINGCAS_RPC_H1_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

#define RPC_H1_HEAD_MAX   16384 /* bytes of a head, empty lines and final CRLF included */
#define RPC_H1_FIELDS_MAX 64    /* header fields in a head */
#define RPC_H1_TARGET_MAX 4096  /* bytes of a request-target */

/* A run of bytes inside the caller's buffer. */
struct rpc_h1_span {
    const char *ptr; /* into the parsed buffer; valid while it is */
    uint32_t len;    /* bytes */
};

struct rpc_h1_field {
    struct rpc_h1_span name;  /* a token, as sent (compare case-insensitively) */
    struct rpc_h1_span value; /* without leading and trailing whitespace; may be empty */
};

/* A parsed head; every span points into the buffer given to rpc_h1_parse_head. */
struct rpc_h1_head {
    struct rpc_h1_span method;                     /* a token, case-sensitive */
    struct rpc_h1_span target;                     /* the request-target as sent */
    uint8_t version_minor;                         /* HTTP/1.<minor>: 0, or 1 for 1.1+ */
    uint32_t field_count;                          /* entries used in fields[] */
    struct rpc_h1_field fields[RPC_H1_FIELDS_MAX]; /* in the order received */
};

/* RFC 9110 character classes, for the other HTTP/1.1 parsers (chunked framing): a token
 * character (§5.6.2), and a field-value character: VCHAR, obs-text, SP, HTAB (§5.5). */
bool rpc_h1_is_tchar(uint8_t c);
bool rpc_h1_is_value_char(uint8_t c);

/*
 * Parses the request head at the start of <buf> (<len> bytes). <last_len> is the length passed
 * to the previous call for the same head (0 for the first). Returns:
 *   > 0                the head's length, CRLFCRLF included; <head> is filled;
 *   0                  a valid prefix: call again with more bytes;
 *   -EPROTO            malformed (400); a bare LF or CR is refused as soon as it arrives,
 *                      before the head is complete (such a head never ends in CRLFCRLF);
 *   -EMSGSIZE          longer than RPC_H1_HEAD_MAX or more than RPC_H1_FIELDS_MAX fields (431);
 *   -ENAMETOOLONG      a request-target longer than RPC_H1_TARGET_MAX (414);
 *   -EPROTONOSUPPORT   an HTTP version other than 1.x (505).
 * On an error <err_desc> (may be NULL) points at a static description, and head->method is
 * the token that begins the request line when a space follows it (empty otherwise; the other
 * fields of <head> are undefined), so that the refusal of a HEAD request goes without content.
 * <head> is written to only when the result is > 0 or an error.
 */
MUST_CHECK int rpc_h1_parse_head(const char *buf, size_t len, size_t last_len,
                                 struct rpc_h1_head *head, const char **err_desc);

enum rpc_h1_method {
    RPC_H1_METHOD_OTHER = 0, /* a valid token this server does not implement (501) */
    RPC_H1_METHOD_GET,
    RPC_H1_METHOD_HEAD,
    RPC_H1_METHOD_PUT,
};

enum rpc_h1_coding {
    RPC_H1_CODING_IDENTITY = 0,
    RPC_H1_CODING_ZSTD,
};

/* The method named by <m> (case-sensitive, RFC 9110 §9.1): GET, HEAD, PUT, else OTHER. */
enum rpc_h1_method rpc_h1_parse_method(const struct rpc_h1_span *m);

/* What ringcas acts on in a head, after the semantic checks of RFC 9110/9112. */
struct rpc_h1_request {
    enum rpc_h1_method method;   /* GET, HEAD, PUT or OTHER */
    bool keep_alive;             /* the connection may carry another request after this */
    bool chunked;                /* Transfer-Encoding: chunked body */
    bool has_length;             /* Content-Length was sent */
    uint64_t content_length;     /* body bytes when has_length, else 0 */
    bool expect_continue;        /* Expect: 100-continue */
    bool accept_zstd;            /* Accept-Encoding lists zstd with q > 0 */
    enum rpc_h1_coding encoding; /* Content-Encoding of the body */
    struct rpc_h1_span path;     /* the target's path: no scheme, authority or query */
    uint64_t if_match;           /* If-Match fields: bit i for head->fields[i], 0: none */
    uint64_t if_none_match;      /* If-None-Match fields, likewise */
    uint8_t if_match_names;      /* what If-Match names (RPC_H1_NAMES_*): filled by the */
    uint8_t if_none_match_names; /* handler while the head's bytes are held */
};

/* What a condition's list names, of a representation's ETags (rpc_h1_request). */
#define RPC_H1_NAMES_ANY  1u /* "*" */
#define RPC_H1_NAMES_TAG  2u /* the identity representation's ETag */
#define RPC_H1_NAMES_TAG2 4u /* the other representation's (zstd frames) */

/*
 * Interprets <head> into <req>. Returns 0, or:
 *   -EPROTO        a missing or repeated Host in HTTP/1.1, a bad or conflicting Content-Length,
 *                  Transfer-Encoding with Content-Length or in HTTP/1.0, a bad target (400);
 *   -EOPNOTSUPP    a transfer coding other than chunked before a final chunked (501; a list
 *                  whose final coding is not chunked is -EPROTO);
 *   -EMEDIUMTYPE   a content coding other than identity or zstd, or zstd more than once
 *                  (repeated Content-Encoding fields are one list) (415);
 *   -EBADE         an Expect other than 100-continue (417).
 * An If-Match or If-None-Match that is not "*" or a list of entity-tags (RFC 9110 §8.8.3) is
 * -EPROTO too: a condition the server cannot read must not be taken as met or as failed.
 * <err_desc> (may be NULL) names the problem. The spans in <req> point where <head>'s do.
 */
MUST_CHECK int rpc_h1_parse_request(const struct rpc_h1_head *head, struct rpc_h1_request *req,
                                    const char **err_desc);

/* The value of the first field named <name> (case-insensitive), or NULL. */
const struct rpc_h1_span *rpc_h1_parse_field(const struct rpc_h1_head *head, const char *name);

STATIC_ASSERT(RPC_H1_FIELDS_MAX <= 64, "if_match and if_none_match are bitmasks of fields");

/*
 * Whether the entity-tag lists of the fields <fields> of <head> (rpc_h1_request's if_match or
 * if_none_match) name the current representation, whose ETag is <etag> (quoted, strong, or
 * NULL when it has none): "*" always does (the caller asks only when a representation
 * exists); an entity-tag does when its opaque-tag equals <etag>, and, with <weak> false
 * (If-Match's strong comparison, RFC 9110 §8.8.3.2), only when it is not weak ("W/").
 * Only while <head>'s bytes are held: they are the receive buffers', given back once the
 * head is consumed, so a handler reads what it needs at once (rpc_h1_cache_conds).
 */
bool rpc_h1_etag_match(const struct rpc_h1_head *head, uint64_t fields, const char *etag,
                       bool weak);

/* The HTTP status for an error of rpc_h1_parse_head or rpc_h1_parse_request. */
int rpc_h1_parse_status(int err);

#endif /* RINGCAS_RPC_H1_PARSE_H */
