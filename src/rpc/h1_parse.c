/*
 * HTTP/1.1 request heads: the tri-state parser and the interpretation of the fields.
 *
 * The parser first looks for the end of the head (CRLFCRLF) in the new bytes only, refusing a
 * bare LF or CR as soon as it arrives, then parses the complete head in one pass. Because a head
 * is parsed only once it is complete, the result does not depend on how the input was cut, and
 * feeding a head byte by byte costs O(n), not O(n^2). Every scan is bounded by the head's
 * CRLFCRLF, so no byte past it is read.
 *
 * Sections: character classes, the head, the fields (request semantics), statuses.
 */
#include "rpc/h1_parse.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

/* ---- character classes ---- */

#define CLASS_TCHAR  1 /* token character, RFC 9110 §5.6.2 */
#define CLASS_VALUE  2 /* field-value character: VCHAR, obs-text, SP, HTAB (RFC 9110 §5.5) */
#define CLASS_TARGET 4 /* pchar, "/" and "?" (RFC 3986 §3.3, §3.4), "%" checked apart */
#define CLASS_HEX    8 /* HEXDIG */

/* Generated from the RFC definitions; tests/unit/rpc/test_h1_parse.c checks every byte. */
static const uint8_t char_class[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0, 0, 0, 0, 0, 0, /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, 0, 0, 0, 0, 0, /* 0x10 */
    2,  7,  2,  3,  7,  7,  7,  7,  6,  6,  7, 7, 6, 7, 7, 6, /* 0x20 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6, 6, 2, 6, 2, 6, /* 0x30 */
    6,  15, 15, 15, 15, 15, 15, 7,  7,  7,  7, 7, 7, 7, 7, 7, /* 0x40 */
    7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, 2, 2, 2, 3, 7, /* 0x50 */
    3,  15, 15, 15, 15, 15, 15, 7,  7,  7,  7, 7, 7, 7, 7, 7, /* 0x60 */
    7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, 2, 3, 2, 7, 0, /* 0x70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2, 2, 2, 2, /* 0x80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2, 2, 2, 2, /* 0x90 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2, 2, 2, 2, /* 0xa0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2, 2, 2, 2, /* 0xb0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2, 2, 2, 2, /* 0xc0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2, 2, 2, 2, /* 0xd0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2, 2, 2, 2, /* 0xe0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, 2, 2, 2, 2, 2, /* 0xf0 */
};

static bool is_class(char c, uint8_t cls)
{
    return (char_class[(uint8_t)c] & cls) != 0;
}

bool rpc_h1_is_tchar(uint8_t c)
{
    return (char_class[c] & CLASS_TCHAR) != 0;
}

bool rpc_h1_is_value_char(uint8_t c)
{
    return (char_class[c] & CLASS_VALUE) != 0;
}

static int fail(const char **err_desc, const char *desc, int err)
{
    if (err_desc) *err_desc = desc;
    return err;
}

/* ---- the head ---- */

/*
 * Finds the end of the head (CRLFCRLF from <start>); returns its length, 0 when absent so far,
 * -EPROTO at a bare LF or CR before it, or -EMSGSIZE. A head whose lines end in bare LF has
 * no CRLFCRLF: without this check it would wait for more bytes until the read timeout.
 */
static int find_end(const char *buf, size_t len, size_t last_len, size_t start,
                    const char **err_desc)
{
    size_t limit = len < RPC_H1_HEAD_MAX ? len : RPC_H1_HEAD_MAX;
    /* CRLFCRLF may straddle the old and the new bytes: look 3 bytes back. */
    size_t from = last_len > 3 ? last_len - 3 : 0;
    if (from < start) from = start;
    /* Bounded by RPC_H1_HEAD_MAX; each call looks at the new bytes (and 3 old ones) only. */
    for (size_t i = from; i < limit; i++) {
        if (buf[i] == '\r') {
            if (i + 1 == len) break; /* the next byte decides */
            if (buf[i + 1] != '\n') return fail(err_desc, "bare CR in the head", -EPROTO);
        } else if (buf[i] == '\n') {
            if (i == 0 || buf[i - 1] != '\r') {
                return fail(err_desc, "line ends in a bare LF, not CRLF", -EPROTO);
            }
            if (i >= start + 3 && buf[i - 2] == '\n' && buf[i - 3] == '\r') return (int)i + 1;
        }
    }
    return len >= RPC_H1_HEAD_MAX ? -EMSGSIZE : 0;
}

#define LINE_METHOD_MAX 32 /* a longer first token is no method we could answer */

/*
 * The method of a refused head: the token that begins its request line, when a space follows
 * it within <len> bytes, else empty. A refusal of a HEAD request carries no content (RFC 9110
 * §9.3.2), whatever was wrong further on.
 */
static struct rpc_h1_span line_method(const char *p, size_t len)
{
    size_t i = 0;
    while (i < len && i < LINE_METHOD_MAX && is_class(p[i], CLASS_TCHAR)) {
        i++;
    }
    if (i == 0 || i == len || p[i] != ' ') return (struct rpc_h1_span){ p, 0 };
    return (struct rpc_h1_span){ p, (uint32_t)i };
}

/*
 * True when the head limit cut the request line itself: a method and a space, then no line
 * end in <len> bytes. Its target is what is too long (414, RFC 9112 §3), not the fields.
 */
static bool line_is_cut(const char *p, size_t len)
{
    if (line_method(p, len).len == 0) return false;
    return memchr(p, '\n', len) == NULL;
}

/* Parses "HTTP/1.x\r\n" at <p>, which has at least 10 bytes. */
static int parse_version(const char *p, struct rpc_h1_head *head, const char **err_desc)
{
    if (memcmp(p, "HTTP/", 5) != 0 || p[6] != '.') {
        return fail(err_desc, "malformed HTTP version", -EPROTO);
    }
    if (p[5] < '0' || p[5] > '9' || p[7] < '0' || p[7] > '9') {
        return fail(err_desc, "malformed HTTP version", -EPROTO);
    }
    if (p[8] != '\r' || p[9] != '\n') {
        return fail(err_desc, "request line does not end in CRLF", -EPROTO);
    }
    if (p[5] != '1') return fail(err_desc, "HTTP version not supported", -EPROTONOSUPPORT);
    /* RFC 9110 §2.5: a higher minor version is answered as the highest one we speak. */
    head->version_minor = p[7] == '0' ? 0 : 1;
    return 0;
}

/*
 * Scans target characters from <p>; returns where they end, or NULL on a bad percent-encoding.
 * In an <authority>, "[" and "]" (an IP literal, RFC 3986 §3.2.2) are characters too, and "/"
 * or "?" ends the scan; no path or query may hold a bracket.
 */
static const char *scan_chars(const char *p, bool authority)
{
    /* Bounded by the head's CRLF, which is no target character. */
    while (is_class(p[0], CLASS_TARGET) || (authority && (p[0] == '[' || p[0] == ']'))) {
        if (authority && (p[0] == '/' || p[0] == '?')) break;
        if (p[0] == '%') {
            /* The head ends in CRLF, which is not HEXDIG: p[2] is read only if p[1] is. */
            if (!is_class(p[1], CLASS_HEX) || !is_class(p[2], CLASS_HEX)) return NULL;
            p += 2;
        }
        p++;
    }
    return p;
}

/* The authority of an absolute-form target at <p> (after "http://" or "https://", either
 * case), or NULL. The comparison stops at the head's CRLF at the latest. */
static const char *absolute_authority(const char *p)
{
    if (strncasecmp(p, "http://", 7) == 0) return p + 7;
    if (strncasecmp(p, "https://", 8) == 0) return p + 8;
    return NULL;
}

/*
 * Scans the request-target at <p>; returns its end, or NULL on a bad percent-encoding. An
 * absolute-form target's authority may be an IP literal in brackets, "http://[::1]:8980/x":
 * a server must accept the absolute-form (RFC 9112 §3.2.2), and that is the form of an IPv6
 * address in it.
 */
static const char *scan_target(const char *p)
{
    const char *authority = absolute_authority(p);
    if (authority) {
        p = scan_chars(authority, true);
        if (!p) return NULL;
    }
    return scan_chars(p, false);
}

/* Parses the request line from <p> (the head ends at <e>); returns the next line or NULL. */
static const char *parse_request_line(const char *p, const char *e, struct rpc_h1_head *head,
                                      int *err, const char **err_desc)
{
    const char *q = p;
    while (is_class(p[0], CLASS_TCHAR)) {
        p++;
    }
    if (p == q || p[0] != ' ') {
        *err = fail(err_desc, "malformed method", -EPROTO);
        return NULL;
    }
    head->method = (struct rpc_h1_span){ q, (uint32_t)(p - q) };
    q = ++p;
    p = scan_target(p);
    if (!p) {
        *err = fail(err_desc, "malformed percent-encoding in request-target", -EPROTO);
        return NULL;
    }
    if (p == q || p[0] != ' ') {
        *err = fail(err_desc, "malformed request-target", -EPROTO);
        return NULL;
    }
    if (p - q > RPC_H1_TARGET_MAX) {
        *err = fail(err_desc, "request-target too long", -ENAMETOOLONG);
        return NULL;
    }
    head->target = (struct rpc_h1_span){ q, (uint32_t)(p - q) };
    p++;
    /* "HTTP/1.1\r\n" and at least the final CRLF. */
    if (e - p < 12) {
        *err = fail(err_desc, "malformed HTTP version", -EPROTO);
        return NULL;
    }
    *err = parse_version(p, head, err_desc);
    return *err < 0 ? NULL : p + 10;
}

/* Parses one field line at <p>; returns the next line or NULL. */
static const char *parse_field(const char *p, struct rpc_h1_field *f, int *err,
                               const char **err_desc)
{
    const char *q = p;
    while (is_class(p[0], CLASS_TCHAR)) {
        p++;
    }
    if (p == q) {
        bool fold = q[0] == ' ' || q[0] == '\t';
        *err = fail(err_desc, fold ? "obsolete line folding" : "malformed field name", -EPROTO);
        return NULL;
    }
    if (p[0] != ':') {
        bool ws = p[0] == ' ' || p[0] == '\t';
        *err = fail(err_desc, ws ? "whitespace before colon" : "malformed field name", -EPROTO);
        return NULL;
    }
    f->name = (struct rpc_h1_span){ q, (uint32_t)(p - q) };
    p++;
    while (p[0] == ' ' || p[0] == '\t') {
        p++;
    }
    q = p;
    while (is_class(p[0], CLASS_VALUE)) {
        p++;
    }
    if (p[0] != '\r' || p[1] != '\n') {
        *err = fail(err_desc, "invalid character in field value", -EPROTO);
        return NULL;
    }
    const char *v_end = p;
    while (v_end > q && (v_end[-1] == ' ' || v_end[-1] == '\t')) {
        v_end--;
    }
    f->value = (struct rpc_h1_span){ q, (uint32_t)(v_end - q) };
    return p + 2;
}

static int parse_head(const char *buf, size_t len, size_t last_len, size_t start,
                      struct rpc_h1_head *head, const char **err_desc)
{
    int head_len = find_end(buf, len, last_len, start, err_desc);
    if (head_len == -EMSGSIZE && start < RPC_H1_HEAD_MAX &&
        line_is_cut(buf + start, RPC_H1_HEAD_MAX - start)) {
        return fail(err_desc, "request-target too long", -ENAMETOOLONG);
    }
    if (head_len == -EMSGSIZE) return fail(err_desc, "request head too large", -EMSGSIZE);
    if (head_len <= 0) return head_len;
    const char *e = buf + head_len; /* e[-4..-1] is CRLFCRLF */
    int err = 0;
    const char *p = parse_request_line(buf + start, e, head, &err, err_desc);
    if (!p) return err;
    head->field_count = 0;
    /* One field per line; each line ends in CRLF, and e - 2 starts the final CRLF. */
    while (p < e - 2) {
        if (head->field_count == RPC_H1_FIELDS_MAX) {
            return fail(err_desc, "too many header fields", -EMSGSIZE);
        }
        p = parse_field(p, &head->fields[head->field_count], &err, err_desc);
        if (!p) return err;
        head->field_count++;
    }
    DEBUG_ASSERT(p == e - 2);
    return head_len;
}

int rpc_h1_parse_head(const char *buf, size_t len, size_t last_len, struct rpc_h1_head *head,
                      const char **err_desc)
{
    ASSERT(buf || len == 0);
    ASSERT(last_len <= len);
    size_t start = 0;
    /* Empty lines before the request line (RFC 9112 §2.2); bounded by <len>. */
    while (start + 1 < len && buf[start] == '\r' && buf[start + 1] == '\n') {
        start += 2;
    }
    int rc = parse_head(buf, len, last_len, start, head, err_desc);
    if (rc < 0) head->method = line_method(buf + start, len - start);
    return rc;
}

/* ---- the fields ---- */

static bool span_is(const struct rpc_h1_span *s, const char *lit)
{
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

static bool span_is_nocase(const struct rpc_h1_span *s, const char *lit)
{
    size_t n = strlen(lit);
    return s->len == n && strncasecmp(s->ptr, lit, n) == 0;
}

const struct rpc_h1_span *rpc_h1_parse_field(const struct rpc_h1_head *head, const char *name)
{
    for (uint32_t i = 0; i < head->field_count; i++) {
        if (span_is_nocase(&head->fields[i].name, name)) return &head->fields[i].value;
    }
    return NULL;
}

/* Skips the empty elements and OWS at the front of <list>; false when nothing is left. */
static bool skip_separators(struct rpc_h1_span *list)
{
    const char *p = list->ptr;
    const char *e = p + list->len;
    while (p < e && (*p == ',' || *p == ' ' || *p == '\t')) {
        p++;
    }
    list->ptr = p;
    list->len = (uint32_t)(e - p);
    return p < e;
}

/*
 * Cuts the next list element (RFC 9110 §5.6.1) from <list>: skips empty elements and OWS;
 * returns false at the end. The element keeps its parameters (";q=0.5").
 */
static bool next_element(struct rpc_h1_span *list, struct rpc_h1_span *out)
{
    if (!skip_separators(list)) return false;
    const char *p = list->ptr;
    const char *e = p + list->len;
    const char *q = p;
    while (p < e && *p != ',') {
        p++;
    }
    const char *v_end = p;
    while (v_end > q && (v_end[-1] == ' ' || v_end[-1] == '\t')) {
        v_end--;
    }
    *out = (struct rpc_h1_span){ q, (uint32_t)(v_end - q) };
    list->ptr = p;
    list->len = (uint32_t)(e - p);
    return true;
}

/* Splits "token;params" into the token (trimmed) and whether a q parameter is zero. */
static void element_token(const struct rpc_h1_span *el, struct rpc_h1_span *token, bool *q_zero)
{
    const char *p = el->ptr;
    const char *e = p + el->len;
    const char *semi = memchr(p, ';', el->len);
    const char *t_end = semi ? semi : e;
    while (t_end > p && (t_end[-1] == ' ' || t_end[-1] == '\t')) {
        t_end--;
    }
    *token = (struct rpc_h1_span){ p, (uint32_t)(t_end - p) };
    *q_zero = false;
    /* A weight (RFC 9110 §12.4.2) of 0, 0., 0.0, 0.00 or 0.000 means "not acceptable". */
    for (p = semi; p && p < e; p = memchr(p + 1, ';', (size_t)(e - p - 1))) {
        const char *v = p + 1;
        while (v < e && (*v == ' ' || *v == '\t')) {
            v++;
        }
        if (e - v < 3 || (v[0] != 'q' && v[0] != 'Q') || v[1] != '=') continue;
        v += 2;
        if (v < e && *v == '0') {
            v++;
            if (v < e && *v == '.') v++;
            while (v < e && *v == '0') {
                v++;
            }
            *q_zero = v == e || *v == ' ' || *v == '\t' || *v == ';';
        }
    }
}

static int parse_length(const struct rpc_h1_span *v, uint64_t *out)
{
    /* 1*DIGIT (RFC 9110 §8.6), at most 2^63 - 1 so it fits every signed offset. */
    if (v->len == 0 || v->len > 19) return -EPROTO;
    uint64_t n = 0;
    for (uint32_t i = 0; i < v->len; i++) {
        char c = v->ptr[i];
        if (c < '0' || c > '9') return -EPROTO;
        n = n * 10 + (uint64_t)(c - '0');
    }
    if (n > INT64_MAX) return -EPROTO;
    *out = n;
    return 0;
}

struct field_counts {
    uint32_t host;        /* Host fields */
    uint32_t te;          /* Transfer-Encoding fields */
    uint32_t te_codings;  /* transfer codings in every Transfer-Encoding field together */
    bool te_last_chunked; /* the last of them is chunked */
    uint32_t zstd;        /* zstd codings in every Content-Encoding field together */
};

static int read_length(const struct rpc_h1_span *v, struct rpc_h1_request *req,
                       const char **err_desc)
{
    uint64_t n;
    if (parse_length(v, &n) < 0) return fail(err_desc, "malformed Content-Length", -EPROTO);
    /* RFC 9112 §6.3: repeated Content-Length fields must agree. */
    if (req->has_length && req->content_length != n) {
        return fail(err_desc, "conflicting Content-Length fields", -EPROTO);
    }
    req->has_length = true;
    req->content_length = n;
    return 0;
}

static void read_connection(struct rpc_h1_span v, bool *close, bool *keep)
{
    struct rpc_h1_span el;
    while (next_element(&v, &el)) {
        if (span_is_nocase(&el, "close")) {
            *close = true;
        } else if (span_is_nocase(&el, "keep-alive")) {
            *keep = true;
        }
    }
}

static void read_accept_encoding(struct rpc_h1_span v, struct rpc_h1_request *req)
{
    struct rpc_h1_span el;
    struct rpc_h1_span token;
    bool q_zero;
    while (next_element(&v, &el)) {
        element_token(&el, &token, &q_zero);
        if (span_is_nocase(&token, "zstd")) req->accept_zstd = !q_zero;
    }
}

/*
 * Counts the codings of one Content-Encoding field. Repeated fields are one list, in order
 * (RFC 9110 §5.3), so "zstd" twice is "zstd, zstd": the caller refuses more than one zstd.
 * "identity" (no coding) and empty elements add nothing.
 */
static int read_content_encoding(struct rpc_h1_span v, struct field_counts *n,
                                 const char **err_desc)
{
    struct rpc_h1_span el;
    while (next_element(&v, &el)) {
        if (span_is_nocase(&el, "zstd")) {
            n->zstd++;
        } else if (!span_is_nocase(&el, "identity")) {
            return fail(err_desc, "unsupported Content-Encoding", -EMEDIUMTYPE);
        }
    }
    return 0;
}

/*
 * Reads the codings of one Transfer-Encoding field: repeated fields are one list, in order
 * (RFC 9110 §5.3), which rpc_h1_parse_request judges once every field is read. An empty
 * element ("chunked,", ", chunked", an empty field) counts as a coding that is not chunked:
 * RFC 9110 §5.6.1 lets a recipient skip it, but a proxy in front that framed such a body
 * otherwise would pass bytes ringcas reads as a body, or the reverse (request smuggling). No
 * client sends one; it is refused, as before.
 */
static void read_transfer_encoding(struct rpc_h1_span v, struct field_counts *n)
{
    const char *p = v.ptr;
    const char *e = p + v.len;
    /* One element per comma and one more: bounded by the field's length. */
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(e - p));
        const char *end = comma ? comma : e;
        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        struct rpc_h1_span el = { p, (uint32_t)(end - p) };
        n->te_codings++;
        n->te_last_chunked = span_is_nocase(&el, "chunked");
        if (!comma) return;
        p = comma + 1;
    }
}

/* A reg-name's character (unreserved or sub-delims, RFC 3986 §3.2.2): a pchar other than
 * ":", "@" and "%" (a percent-encoding is checked apart). */
static bool is_host_char(char c)
{
    return is_class(c, CLASS_TARGET) && c != '/' && c != '?' && c != ':' && c != '@' && c != '%';
}

/*
 * True when <v> is a Host field value (RFC 9112 §3.2: uri-host [ ":" port ], or empty): a
 * reg-name or an IP-literal in brackets, then digits after a colon. Anything else is a 400,
 * as a missing or repeated Host is: a proxy in front and ringcas must not read it apart.
 */
static bool host_is_valid(const struct rpc_h1_span *v)
{
    const char *p = v->ptr;
    const char *e = p + v->len;
    if (p < e && p[0] == '[') {
        const char *close = memchr(p, ']', (size_t)(e - p));
        if (!close || close == p + 1) return false;
        /* Bounded by the field's length. */
        for (p++; p < close; p++) {
            if (!is_host_char(*p) && *p != ':') return false;
        }
        p++;
    } else {
        /* Bounded by the field's length. */
        for (; p < e && *p != ':'; p++) {
            if (*p != '%') {
                if (!is_host_char(*p)) return false;
            } else if (e - p < 3 || !is_class(p[1], CLASS_HEX) || !is_class(p[2], CLASS_HEX)) {
                return false;
            } else {
                p += 2;
            }
        }
    }
    if (p == e) return true;
    if (*p != ':') return false;
    /* Bounded by the field's length. */
    for (p++; p < e; p++) {
        if (*p < '0' || *p > '9') return false;
    }
    return true;
}

/* Applies one field to <req>; returns 0 or -errno. */
static int read_field(const struct rpc_h1_field *f, struct rpc_h1_request *req,
                      struct field_counts *n, bool *close, bool *keep, const char **err_desc)
{
    const struct rpc_h1_span *name = &f->name;
    if (span_is_nocase(name, "host")) {
        n->host++;
        if (!host_is_valid(&f->value)) return fail(err_desc, "invalid Host", -EPROTO);
    } else if (span_is_nocase(name, "content-length")) {
        return read_length(&f->value, req, err_desc);
    } else if (span_is_nocase(name, "transfer-encoding")) {
        n->te++;
        read_transfer_encoding(f->value, n);
    } else if (span_is_nocase(name, "connection")) {
        read_connection(f->value, close, keep);
    } else if (span_is_nocase(name, "expect")) {
        if (!span_is_nocase(&f->value, "100-continue")) {
            return fail(err_desc, "unsupported expectation", -EBADE);
        }
        req->expect_continue = true;
    } else if (span_is_nocase(name, "accept-encoding")) {
        read_accept_encoding(f->value, req);
    } else if (span_is_nocase(name, "content-encoding")) {
        return read_content_encoding(f->value, n, err_desc);
    }
    return 0;
}

/*
 * Cuts the next element of an If-Match or If-None-Match list (RFC 9110 §13.1.1: "*" or
 * #entity-tag) from <list> into <tag> ("*" or the entity-tag, W/ and quotes included). Returns
 * 1, 0 at the end, or -EPROTO when what follows is neither. An opaque-tag may hold a comma, so
 * the list is cut by its quotes, not at commas.
 */
static int next_etag(struct rpc_h1_span *list, struct rpc_h1_span *tag)
{
    if (!skip_separators(list)) return 0;
    const char *p = list->ptr;
    const char *e = p + list->len;
    const char *q = p;
    if (*p == '*') {
        p++;
    } else {
        if (e - p >= 2 && p[0] == 'W' && p[1] == '/') p += 2;
        if (p == e || *p != '"') return -EPROTO;
        p++;
        /* etagc: %x21 / %x23-7E / obs-text */
        while (p < e && *p != '"') {
            uint8_t c = (uint8_t)*p;
            if (c < 0x21 || c == 0x7f) return -EPROTO;
            p++;
        }
        if (p == e) return -EPROTO; /* no closing quote */
        p++;
    }
    *tag = (struct rpc_h1_span){ q, (uint32_t)(p - q) };
    while (p < e && (*p == ' ' || *p == '\t')) {
        p++;
    }
    if (p < e && *p != ',') return -EPROTO; /* "\"a\" \"b\"", "*x" */
    list->ptr = p;
    list->len = (uint32_t)(e - p);
    return 1;
}

static bool etag_list_is_valid(struct rpc_h1_span list)
{
    struct rpc_h1_span tag;
    int rc;
    while ((rc = next_etag(&list, &tag)) > 0) {
    }
    return rc == 0;
}

bool rpc_h1_etag_match(const struct rpc_h1_head *head, uint64_t fields, const char *etag, bool weak)
{
    for (uint32_t i = 0; i < head->field_count; i++) {
        if (!(fields & (1ULL << i))) continue;
        struct rpc_h1_span list = head->fields[i].value;
        struct rpc_h1_span tag;
        /* Checked by rpc_h1_parse_request: every element is "*" or an entity-tag. */
        while (next_etag(&list, &tag) > 0) {
            if (span_is(&tag, "*")) return true;
            if (tag.ptr[0] == 'W') {
                if (!weak) continue;
                tag.ptr += 2;
                tag.len -= 2;
            }
            if (etag && span_is(&tag, etag)) return true;
        }
    }
    return false;
}

/* Extracts the path of origin-form or absolute-form <target> (RFC 9112 §3.2). */
static int read_path(const struct rpc_h1_span *target, struct rpc_h1_span *path)
{
    const char *p = target->ptr;
    const char *e = p + target->len;
    if (p[0] != '/') {
        size_t skip = 0;
        if (target->len > 7 && strncasecmp(p, "http://", 7) == 0) {
            skip = 7;
        } else if (target->len > 8 && strncasecmp(p, "https://", 8) == 0) {
            skip = 8;
        } else if (span_is(target, "*")) {
            skip = 0; /* asterisk-form: routed as the path "*" (OPTIONS only) */
        } else {
            return -EPROTO;
        }
        p += skip;
        if (skip) {
            /* RFC 3986 §3.2: the authority ends at the first "/", "?" or "#", so the query
             * of "http://h?/x" is "/x" and its path is empty ("/"). */
            const char *a_end = p;
            while (a_end < e && *a_end != '/' && *a_end != '?' && *a_end != '#') {
                a_end++;
            }
            if (a_end == p) return -EPROTO; /* empty authority */
            /* RFC 9110 §4.2.4: userinfo ("user@host") is an error in a request. */
            if (memchr(p, '@', (size_t)(a_end - p))) return -EPROTO;
            /* A host and an optional port, as in a Host field: "[::1" or "h:x" is none. */
            struct rpc_h1_span authority = { p, (uint32_t)(a_end - p) };
            if (!host_is_valid(&authority)) return -EPROTO;
            p = a_end;
        }
    }
    const char *query = memchr(p, '?', (size_t)(e - p));
    const char *p_end = query ? query : e;
    if (p == p_end) {
        *path = (struct rpc_h1_span){ "/", 1 }; /* "http://host" means "/" */
        return 0;
    }
    *path = (struct rpc_h1_span){ p, (uint32_t)(p_end - p) };
    return 0;
}

enum rpc_h1_method rpc_h1_parse_method(const struct rpc_h1_span *m)
{
    if (span_is(m, "GET")) return RPC_H1_METHOD_GET;
    if (span_is(m, "HEAD")) return RPC_H1_METHOD_HEAD;
    if (span_is(m, "PUT")) return RPC_H1_METHOD_PUT;
    return RPC_H1_METHOD_OTHER;
}

int rpc_h1_parse_request(const struct rpc_h1_head *head, struct rpc_h1_request *req,
                         const char **err_desc)
{
    ASSERT(head->field_count <= RPC_H1_FIELDS_MAX);
    memset(req, 0, sizeof(*req));
    req->method = rpc_h1_parse_method(&head->method);
    if (read_path(&head->target, &req->path) < 0) {
        return fail(err_desc, "malformed request-target", -EPROTO);
    }
    struct field_counts n = { 0 };
    bool close = false;
    bool keep = false;
    for (uint32_t i = 0; i < head->field_count; i++) {
        const struct rpc_h1_field *f = &head->fields[i];
        /* Conditions: only checked here, and evaluated by the handler that knows the
         * representation (h1_cache.c), so a request without one costs nothing more. */
        if (span_is_nocase(&f->name, "if-match")) {
            if (!etag_list_is_valid(f->value)) return fail(err_desc, "malformed If-Match", -EPROTO);
            req->if_match |= 1ULL << i;
            continue;
        }
        if (span_is_nocase(&f->name, "if-none-match")) {
            if (!etag_list_is_valid(f->value)) {
                return fail(err_desc, "malformed If-None-Match", -EPROTO);
            }
            req->if_none_match |= 1ULL << i;
            continue;
        }
        int rc = read_field(f, req, &n, &close, &keep, err_desc);
        if (rc < 0) return rc;
    }
    if (n.te > 0) {
        /* RFC 9112 §6.3: a body whose final transfer coding is not chunked ("gzip",
         * "chunked, identity", an empty field) has no length a recipient can find; 400, and
         * the connection closes. */
        if (!n.te_last_chunked) {
            return fail(err_desc, "chunked is not the final transfer coding", -EPROTO);
        }
        /* Only chunked is implemented, once (RFC 9112 §6.1: 501 for codings we do not know). */
        if (n.te_codings > 1) return fail(err_desc, "unsupported Transfer-Encoding", -EOPNOTSUPP);
        req->chunked = true;
    }
    /* RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one otherwise. */
    if (n.host > 1 || (n.host == 0 && head->version_minor >= 1)) {
        return fail(err_desc, "missing or repeated Host", -EPROTO);
    }
    /* RFC 9110 §10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored (the
     * body follows the head: a 1.0 client knows no 100). */
    if (head->version_minor == 0) req->expect_continue = false;
    /* RFC 9112 §6.1 and §6.3: both framings at once, or chunked in 1.0, is faulty framing. */
    if (req->chunked && req->has_length) {
        return fail(err_desc, "Transfer-Encoding with Content-Length", -EPROTO);
    }
    if (req->chunked && head->version_minor == 0) {
        return fail(err_desc, "Transfer-Encoding in HTTP/1.0", -EPROTO);
    }
    /* One zstd layer is decoded; a body compressed twice is a coding we do not implement. */
    if (n.zstd > 1) return fail(err_desc, "unsupported Content-Encoding", -EMEDIUMTYPE);
    if (n.zstd == 1) req->encoding = RPC_H1_CODING_ZSTD;
    req->keep_alive = head->version_minor >= 1 ? !close : keep && !close;
    return 0;
}

/* ---- statuses ---- */

int rpc_h1_parse_status(int err)
{
    switch (err) {
    case -EMSGSIZE:
        return 431;
    case -ENAMETOOLONG:
        return 414;
    case -EPROTONOSUPPORT:
        return 505;
    case -EOPNOTSUPP:
        return 501;
    case -EMEDIUMTYPE:
        return 415;
    case -EBADE:
        return 417;
    default:
        return 400;
    }
}
