/*
 * Chunked body decoding: a byte-at-a-time state machine over the framing and a single memcpy-
 * free step over each data run. The state survives between calls, so the input may be cut
 * anywhere.
 *
 *   chunked-body = *chunk last-chunk trailer-section CRLF
 *   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   last-chunk   = 1*("0") [ chunk-ext ] CRLF
 *   trailer-section = *( field-line CRLF ), field-line = field-name ":" OWS field-value OWS
 */
#include "rpc/h1_chunked.h"

#include <errno.h>
#include <string.h>

#include "rpc/h1_parse.h"

/* The size line's states come first and the trailer's last: count_line relies on the order. */
enum state {
    ST_SIZE = 0,       /* reading hex digits of a chunk size */
    ST_EXT_BWS,        /* whitespace after the size or an extension: ";" must follow */
    ST_EXT_NAME_START, /* after ";": BWS, then the first character of a name */
    ST_EXT_NAME,       /* inside an extension name (a token) */
    ST_EXT_NAME_BWS,   /* whitespace after a name: "=" or ";" must follow */
    ST_EXT_VALUE,      /* after "=": BWS, then a token or a quoted-string */
    ST_EXT_TOKEN,      /* inside a token value */
    ST_EXT_QUOTED,     /* inside a quoted-string value */
    ST_EXT_QUOTED_BS,  /* after a backslash in a quoted-string */
    ST_EXT_QUOTED_END, /* after the closing quote: CR, ";" or BWS must follow */
    ST_SIZE_LF,        /* CR of the size line seen */
    ST_DATA,           /* inside chunk data */
    ST_DATA_CR,        /* expecting CR after chunk data */
    ST_DATA_LF,        /* expecting LF after chunk data */
    ST_TRAILER,        /* at the start of a trailer line (or of the final CRLF) */
    ST_TRAILER_NAME,   /* inside a trailer field name, up to its colon */
    ST_TRAILER_VALUE,  /* inside a trailer field value */
    ST_TRAILER_LF,     /* CR of a trailer line seen */
    ST_FINAL_LF,       /* CR of the final empty line seen */
    ST_DONE,           /* the body is complete */
};

static int fail(const char **err_desc, const char *desc, int err)
{
    if (err_desc) *err_desc = desc;
    return err;
}

static int hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t';
}

void rpc_h1_chunked_init(struct rpc_h1_chunked *d)
{
    memset(d, 0, sizeof(*d));
    d->state = ST_SIZE;
}

bool rpc_h1_chunked_is_done(const struct rpc_h1_chunked *d)
{
    return d->state == ST_DONE;
}

static int step_size(struct rpc_h1_chunked *d, uint8_t c, const char **err_desc)
{
    int v = hex_value(c);
    if (v >= 0) {
        /* 1*HEXDIG (RFC 9112 §7.1): leading zeros are allowed, bounded by the size line's
         * bound; the value has at most 16 significant digits. */
        if (d->left >> 60 != 0) return fail(err_desc, "chunk size too large", -EMSGSIZE);
        d->digits = 1;
        d->left = (d->left << 4) | (uint64_t)v;
        return 0;
    }
    if (d->digits == 0) return fail(err_desc, "malformed chunk size", -EPROTO);
    if (c == '\r') {
        d->state = ST_SIZE_LF;
    } else if (c == ';') {
        d->state = ST_EXT_NAME_START;
    } else if (is_ws(c)) {
        d->state = ST_EXT_BWS; /* BWS ";" chunk-ext */
    } else {
        return fail(err_desc, "malformed chunk size", -EPROTO);
    }
    return 0;
}

/* Where <c> leads at the end of an extension's name or value: CR, ";" or BWS; else -1. */
static int ext_end(uint8_t c)
{
    if (c == '\r') return ST_SIZE_LF;
    if (c == ';') return ST_EXT_NAME_START;
    if (is_ws(c)) return ST_EXT_BWS;
    return -1;
}

/*
 * One byte of the chunk extensions (RFC 9112 §7.1.1), which are checked, then ignored:
 *   chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   chunk-ext-name = token; chunk-ext-val = token / quoted-string
 */
static int step_ext(struct rpc_h1_chunked *d, uint8_t c, const char **err_desc)
{
    int next = -1;
    switch (d->state) {
    case ST_EXT_BWS:
        if (is_ws(c)) return 0;
        if (c == ';') next = ST_EXT_NAME_START;
        break;
    case ST_EXT_NAME_START:
        if (is_ws(c)) return 0;
        if (rpc_h1_is_tchar(c)) next = ST_EXT_NAME;
        break;
    case ST_EXT_NAME:
        if (rpc_h1_is_tchar(c)) return 0;
        next = is_ws(c) ? ST_EXT_NAME_BWS : ext_end(c);
        if (c == '=') next = ST_EXT_VALUE;
        break;
    case ST_EXT_NAME_BWS:
        if (is_ws(c)) return 0;
        if (c == '=') next = ST_EXT_VALUE;
        if (c == ';') next = ST_EXT_NAME_START;
        break;
    case ST_EXT_VALUE:
        if (is_ws(c)) return 0;
        if (c == '"') next = ST_EXT_QUOTED;
        if (rpc_h1_is_tchar(c)) next = ST_EXT_TOKEN;
        break;
    case ST_EXT_TOKEN:
        if (rpc_h1_is_tchar(c)) return 0;
        next = ext_end(c);
        break;
    case ST_EXT_QUOTED_END:
        next = ext_end(c);
        break;
    case ST_EXT_QUOTED: /* qdtext = HTAB / SP / VCHAR except '"' and '\\' / obs-text */
        if (c == '"') next = ST_EXT_QUOTED_END;
        if (c == '\\') next = ST_EXT_QUOTED_BS;
        if (c != '"' && c != '\\' && rpc_h1_is_value_char(c)) return 0;
        break;
    case ST_EXT_QUOTED_BS: /* quoted-pair = "\\" ( HTAB / SP / VCHAR / obs-text ) */
        if (rpc_h1_is_value_char(c)) next = ST_EXT_QUOTED;
        break;
    default:
        UNREACHABLE();
    }
    if (next < 0) return fail(err_desc, "malformed chunk extension", -EPROTO);
    d->state = (uint8_t)next;
    return 0;
}

/* One framing byte (every state but ST_DATA and ST_DONE). */
static int step(struct rpc_h1_chunked *d, uint8_t c, const char **err_desc)
{
    switch (d->state) {
    case ST_SIZE:
        return step_size(d, c, err_desc);
    case ST_EXT_BWS:
    case ST_EXT_NAME_START:
    case ST_EXT_NAME:
    case ST_EXT_NAME_BWS:
    case ST_EXT_VALUE:
    case ST_EXT_TOKEN:
    case ST_EXT_QUOTED:
    case ST_EXT_QUOTED_BS:
    case ST_EXT_QUOTED_END:
        return step_ext(d, c, err_desc);
    case ST_SIZE_LF:
        if (c != '\n') return fail(err_desc, "chunk size line does not end in CRLF", -EPROTO);
        d->state = d->left == 0 ? ST_TRAILER : ST_DATA;
        d->line_len = 0;
        return 0;
    case ST_DATA_CR:
        if (c != '\r') return fail(err_desc, "chunk data does not end in CRLF", -EPROTO);
        d->state = ST_DATA_LF;
        return 0;
    case ST_DATA_LF:
        if (c != '\n') return fail(err_desc, "chunk data does not end in CRLF", -EPROTO);
        rpc_h1_chunked_init(d);
        return 0;
    case ST_TRAILER:
        /* A field line as in a head: token ":" value, no whitespace before the colon. */
        if (c == '\r') {
            d->state = ST_FINAL_LF;
        } else if (rpc_h1_is_tchar(c)) {
            d->state = ST_TRAILER_NAME;
        } else {
            return fail(err_desc, "malformed trailer field", -EPROTO);
        }
        return 0;
    case ST_TRAILER_NAME:
        if (c == ':') {
            d->state = ST_TRAILER_VALUE;
        } else if (!rpc_h1_is_tchar(c)) {
            return fail(err_desc, "malformed trailer field", -EPROTO);
        }
        return 0;
    case ST_TRAILER_VALUE:
        if (c == '\r') {
            d->state = ST_TRAILER_LF;
        } else if (!rpc_h1_is_value_char(c)) {
            return fail(err_desc, "malformed trailer field", -EPROTO);
        }
        return 0;
    case ST_TRAILER_LF:
    case ST_FINAL_LF:
        if (c != '\n') return fail(err_desc, "trailer line does not end in CRLF", -EPROTO);
        d->state = d->state == ST_FINAL_LF ? ST_DONE : ST_TRAILER;
        return 0;
    default:
        UNREACHABLE();
    }
}

/* Counts a framing byte against its line's (or the trailer section's) bound. */
static int count_line(struct rpc_h1_chunked *d, const char **err_desc)
{
    bool trailer = d->state >= ST_TRAILER && d->state <= ST_FINAL_LF;
    bool size_line = d->state <= ST_SIZE_LF;
    if (!trailer && !size_line) return 0;
    d->line_len++;
    if (trailer && d->line_len > RPC_H1_TRAILER_MAX) {
        return fail(err_desc, "trailer section too large", -EMSGSIZE);
    }
    if (size_line && d->line_len > RPC_H1_CHUNK_LINE_MAX) {
        return fail(err_desc, "chunk size line too long", -EMSGSIZE);
    }
    return 0;
}

int rpc_h1_chunked_decode(struct rpc_h1_chunked *d, const uint8_t *in, size_t len,
                          const uint8_t **data, size_t *data_len, const char **err_desc)
{
    ASSERT(len <= INT32_MAX);
    ASSERT(in || len == 0);
    *data = NULL;
    *data_len = 0;
    size_t i = 0;
    /* Bounded by <len>: each iteration consumes at least one byte, or returns. */
    while (i < len && d->state != ST_DONE) {
        if (d->state == ST_DATA) {
            size_t n = len - i;
            if (n > d->left) n = (size_t)d->left;
            *data = in + i;
            *data_len = n;
            d->left -= n;
            if (d->left == 0) d->state = ST_DATA_CR;
            return (int)(i + n);
        }
        int rc = count_line(d, err_desc);
        if (rc == 0) rc = step(d, in[i], err_desc);
        if (rc < 0) return rc;
        i++;
    }
    return (int)i;
}
