/*
 * The HTTP/1.1 head parser: valid heads at every split point and byte by byte, inputs that end
 * at a PROT_NONE page, every malformed case, every byte of every character class, the limits,
 * and the request semantics (Host, framing, Connection, Expect, codings).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "rpc/h1_parse.h"

static struct rpc_h1_head head;

static int parse(const char *s)
{
    return rpc_h1_parse_head(s, strlen(s), 0, &head, NULL);
}

static bool span_eq(const struct rpc_h1_span *sp, const char *lit)
{
    return sp->len == strlen(lit) && memcmp(sp->ptr, lit, sp->len) == 0;
}

/* Copies <s> so that it ends right before a PROT_NONE page; unmap with guard_free. */
static char *guarded(const char *s, size_t len, void **map, size_t *map_len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (len + page - 1) / page + 1;
    *map_len = (pages + 1) * page;
    char *m = mmap(NULL, *map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(ne(ptr, m, MAP_FAILED));
    cr_assert(eq(int, mprotect(m + pages * page, page, PROT_NONE), 0));
    char *p = m + pages * page - len;
    memcpy(p, s, len);
    *map = m;
    return p;
}

static const char valid[] = "GET /bazel/cas/abc?x=1 HTTP/1.1\r\n"
                            "Host: example:8980\r\n"
                            "User-Agent: curl/7.88  \r\n"
                            "X-Empty:\r\n"
                            "Accept-Encoding: gzip, zstd;q=0.5\r\n"
                            "\r\n";

static void check_valid_head(void)
{
    cr_assert(span_eq(&head.method, "GET"));
    cr_assert(span_eq(&head.target, "/bazel/cas/abc?x=1"));
    cr_assert(eq(u8, head.version_minor, 1));
    cr_assert(eq(u32, head.field_count, 4));
    cr_assert(span_eq(&head.fields[0].name, "Host"));
    cr_assert(span_eq(&head.fields[0].value, "example:8980"));
    cr_assert(span_eq(&head.fields[1].value, "curl/7.88"));
    cr_assert(span_eq(&head.fields[2].name, "X-Empty"));
    cr_assert(eq(u32, head.fields[2].value.len, 0));
    cr_assert(span_eq(&head.fields[3].value, "gzip, zstd;q=0.5"));
}

Test(rpc_h1_parse, parses_a_valid_head)
{
    cr_assert(eq(int, parse(valid), (int)strlen(valid)));
    check_valid_head();
}

Test(rpc_h1_parse, every_split_point_gives_the_same_head)
{
    size_t len = strlen(valid);
    for (size_t cut = 0; cut < len; cut++) {
        /* First call with the first <cut> bytes, second with all of them. */
        cr_assert(eq(int, rpc_h1_parse_head(valid, cut, 0, &head, NULL), 0), "cut %zu", cut);
        cr_assert(eq(int, rpc_h1_parse_head(valid, len, cut, &head, NULL), (int)len));
        check_valid_head();
    }
}

Test(rpc_h1_parse, byte_by_byte_incremental)
{
    size_t len = strlen(valid);
    size_t last = 0;
    for (size_t n = 1; n <= len; n++) {
        int rc = rpc_h1_parse_head(valid, n, last, &head, NULL);
        if (n < len)
            cr_assert(eq(int, rc, 0), "at %zu", n);
        else
            cr_assert(eq(int, rc, (int)len));
        last = n;
    }
    check_valid_head();
}

Test(rpc_h1_parse, input_ending_at_a_prot_none_page_is_never_overread)
{
    static const char *const inputs[] = {
        valid,        "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET /%4",
        "GET /%",     "GET / HTTP/1.1\r\nHost: a\r",       "GET / HTTP/1.1\r\nHost: a\r\n\r",
        "\r\n\r\n\r", "GET / HTTP/1.1\r\nX: \x01\r\n\r\n", "GET / HTTP/1.1\r\n\r\n",
        "G",
    };
    for (size_t i = 0; i < ARRAY_LEN(inputs); i++) {
        size_t len = strlen(inputs[i]);
        for (size_t n = 0; n <= len; n++) {
            void *map;
            size_t map_len;
            char *p = guarded(inputs[i], n, &map, &map_len);
            int rc = rpc_h1_parse_head(p, n, 0, &head, NULL);
            cr_assert(le(int, rc, (int)n));
            munmap(map, map_len);
        }
    }
}

Test(rpc_h1_parse, skips_empty_lines_before_the_request_line)
{
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    cr_assert(eq(int, parse(s), (int)strlen(s)));
    cr_assert(span_eq(&head.method, "GET"));
    cr_assert(eq(int, parse("\r\n\r\n"), 0));
    cr_assert(eq(int, parse("\r\n\r"), 0));
}

Test(rpc_h1_parse, pipelined_heads_parse_one_at_a_time)
{
    const char *s = "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    int n = parse(s);
    cr_assert(eq(int, n, 28));
    cr_assert(span_eq(&head.target, "/a"));
    cr_assert(eq(int, rpc_h1_parse_head(s + n, strlen(s) - (size_t)n, 0, &head, NULL), 28));
    cr_assert(span_eq(&head.target, "/b"));
}

struct bad_case {
    const char *input;
    int err;
};

Test(rpc_h1_parse, bare_lf_or_cr_is_refused_without_waiting_for_crlfcrlf)
{
    /* Heads that never contain CRLFCRLF: refused as soon as the bad line end arrives. */
    static const struct {
        const char *input;
        size_t bad_at; /* the byte whose arrival makes the head malformed */
    } cases[] = {
        { "GET /healthz HTTP/1.1\nHost: x\n\n", 21 },
        { "GET / HTTP/1.1\r\nHost: x\n\n", 23 },
        { "GET / HTTP/1.1\r\nHost: x\r\n\n", 25 },
        { "\nGET / HTTP/1.1\r\n", 0 },
        { "\r\n\nGET / HTTP/1.1\r\n", 2 },
        { "GET / HTTP/1.1\rHost: x\r\r", 15 }, /* bare CR: decided by the byte after it */
    };

    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const char *s = cases[i].input;
        size_t len = strlen(s);
        /* Byte by byte, as a connection feeds it: more is asked for up to the bad byte. */
        for (size_t n = 1; n <= cases[i].bad_at + 1; n++) {
            const char *desc = NULL;
            int rc = rpc_h1_parse_head(s, n, n - 1, &head, &desc);
            int want = n <= cases[i].bad_at ? 0 : -EPROTO;
            cr_assert(eq(int, rc, want), "case %zu at %zu", i, n);
            if (rc < 0) cr_assert(ne(ptr, (void *)desc, NULL));
        }
        /* Every longer prefix, from scratch, is refused as well. */
        for (size_t n = cases[i].bad_at + 1; n <= len; n++) {
            cr_assert(eq(int, rpc_h1_parse_head(s, n, 0, &head, NULL), -EPROTO), "case %zu", i);
        }
    }
}

Test(rpc_h1_parse, rejects_every_malformed_case)
{
    static const struct bad_case cases[] = {
        { "GET  / HTTP/1.1\r\n\r\n", -EPROTO },                 /* two spaces */
        { " GET / HTTP/1.1\r\n\r\n", -EPROTO },                 /* leading space */
        { "GET / HTTP/1.1 \r\n\r\n", -EPROTO },                 /* trailing space */
        { "GET /\tHTTP/1.1\r\n\r\n", -EPROTO },                 /* tab as separator */
        { "GET / HTTP/1.1\n\r\n\r\n", -EPROTO },                /* bare LF after the version */
        { "GET / HTTP/1.1\r\nHost: a\n\r\n\r\n", -EPROTO },     /* bare LF after a field */
        { "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", -EPROTO },    /* bare CR in a value */
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", -EPROTO },      /* space before colon */
        { "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", -EPROTO },     /* tab before colon */
        { "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", -EPROTO }, /* obs-fold */
        { "GET / HTTP/1.1\r\n: a\r\n\r\n", -EPROTO },           /* empty name */
        { "GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", -EPROTO },      /* non-token name */
        { "GET / HTTP/1.1\r\nHost\r\n\r\n", -EPROTO },          /* no colon */
        { "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", -EPROTO },      /* DEL in a value */
        { "GET / HTTP/1.1\r\nX: a\x01\r\n\r\n", -EPROTO },      /* CTL in a value */
        { "G(T / HTTP/1.1\r\n\r\n", -EPROTO },                  /* non-token method */
        { " / HTTP/1.1\r\n\r\n", -EPROTO },                     /* empty method */
        { "GET HTTP/1.1\r\n\r\n", -EPROTO },                    /* no target */
        { "GET / \r\n\r\n", -EPROTO },                          /* no version */
        { "GET /\r\n\r\n", -EPROTO },                           /* HTTP/0.9 style */
        { "GET / http/1.1\r\n\r\n", -EPROTO },                  /* lower-case version */
        { "GET / HTTP/1.x\r\n\r\n", -EPROTO },                  /* bad minor */
        { "GET / HTTP/11\r\n\r\n", -EPROTO },                   /* no dot */
        { "GET / HTTP/10.0\r\n\r\n", -EPROTO },                 /* two-digit major */
        { "GET / HTTP/2.0\r\n\r\n", -EPROTONOSUPPORT },         /* other major */
        { "GET / HTTP/0.9\r\n\r\n", -EPROTONOSUPPORT },
        { "GET /a b HTTP/1.1\r\n\r\n", -EPROTO },  /* space in target */
        { "GET /a#b HTTP/1.1\r\n\r\n", -EPROTO },  /* fragment */
        { "GET /a\"b HTTP/1.1\r\n\r\n", -EPROTO }, /* quote */
        { "GET /a<b HTTP/1.1\r\n\r\n", -EPROTO },
        { "GET /a\\b HTTP/1.1\r\n\r\n", -EPROTO },
        { "GET /a%zz HTTP/1.1\r\n\r\n", -EPROTO }, /* bad percent-encoding */
        { "GET /a%4 HTTP/1.1\r\n\r\n", -EPROTO },
        { "GET /a% HTTP/1.1\r\n\r\n", -EPROTO },
        { "GET /\xc3\xa9 HTTP/1.1\r\n\r\n", -EPROTO }, /* raw UTF-8 in target */
        { "GET /\x00 HTTP/1.1\r\n\r\n", -EPROTO },     /* NUL (cut by strlen: see below) */
        { "\r\r\n\r\n", -EPROTO },                     /* stray CR */
        { "\n\r\n\r\n", -EPROTO },                     /* stray LF */
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        const char *desc = NULL;
        const char *s = cases[i].input;
        int rc = rpc_h1_parse_head(s, strlen(s), 0, &head, &desc);
        if (strlen(s) < 8) /* the NUL case is cut short by strlen: only a prefix */
            continue;
        cr_assert(eq(int, rc, cases[i].err), "case %zu: %s", i, s);
        cr_assert(ne(ptr, (void *)desc, NULL));
    }
    /* A NUL byte in a value or the target. */
    static const char nul_value[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    cr_assert(
        eq(int, rpc_h1_parse_head(nul_value, sizeof(nul_value) - 1, 0, &head, NULL), -EPROTO));
    static const char nul_target[] = "GET /\0 HTTP/1.1\r\n\r\n";
    cr_assert(
        eq(int, rpc_h1_parse_head(nul_target, sizeof(nul_target) - 1, 0, &head, NULL), -EPROTO));
}

Test(rpc_h1_parse, a_refused_head_names_its_method)
{
    /* The refusal of a HEAD request goes without content (RFC 9110 §9.3.2): whatever made the
     * head malformed, its method is told when the request line begins with one. */
    static char long_target[RPC_H1_HEAD_MAX + 64];
    memset(long_target, 'a', sizeof(long_target) - 1);
    memcpy(long_target, "HEAD /", 6);

    static const struct {
        const char *input;
        int err;
        const char *method; /* "" when none can be told */
    } cases[] = {
        { "HEAD / HTTP/1.1\r\nHost : a\r\n\r\n", -EPROTO, "HEAD" },
        { "HEAD / HTTP/1.1\nHost: a\n\n", -EPROTO, "HEAD" }, /* bare LF, before the end */
        { "\r\nHEAD /a b HTTP/1.1\r\n\r\n", -EPROTO, "HEAD" },
        { "HEAD / HTTP/2.0\r\n\r\n", -EPROTONOSUPPORT, "HEAD" },
        { "GET / HTTP/1.1\r\nX: \x01\r\n\r\n", -EPROTO, "GET" },
        { " HEAD / HTTP/1.1\r\n\r\n", -EPROTO, "" },
        { "HEAD\t/ HTTP/1.1\r\n\r\n", -EPROTO, "" },
        { "\n", -EPROTO, "" },
        { long_target, -ENAMETOOLONG, "HEAD" },
    };

    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        /* A valid head first: nothing of it may be left in <head> after the refusal. */
        cr_assert(gt(int, parse(valid), 0));
        cr_assert(eq(int, parse(cases[i].input), cases[i].err), "case %zu", i);
        cr_assert(span_eq(&head.method, cases[i].method), "case %zu: %.*s", i, (int)head.method.len,
                  head.method.ptr);
    }
    cr_assert(eq(int, rpc_h1_parse_method(&head.method), RPC_H1_METHOD_HEAD));
}

/* The RFC's definitions, written independently of the parser's table. */
static bool rfc_tchar(int c)
{
    return c != 0 && (strchr("!#$%&'*+-.^_`|~", c) || (c >= '0' && c <= '9') ||
                      (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
}

static bool rfc_pchar_or_query(int c)
{
    return c != 0 && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      strchr("-._~!$&'()*+,;=:@/?", c));
}

static bool rfc_field_vchar(int c)
{
    return c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80;
}

Test(rpc_h1_parse, every_byte_of_every_character_class)
{
    char buf[128];
    for (int c = 0; c < 256; c++) {
        if (c == '\r' || c == '\n') continue;
        /* method */
        int n = snprintf(buf, sizeof(buf), "G%cT / HTTP/1.1\r\n\r\n", c ? c : 'E');
        buf[1] = (char)c;
        int rc = rpc_h1_parse_head(buf, (size_t)n, 0, &head, NULL);
        cr_assert(eq(int, rc > 0, rfc_tchar(c)), "method byte 0x%02x", c);
        /* field name */
        n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nX%cY: v\r\n\r\n", 'Z');
        buf[17] = (char)c;
        rc = rpc_h1_parse_head(buf, (size_t)n, 0, &head, NULL);
        /* ':' ends the name early ("X" with value "Y: v"), which is valid. */
        cr_assert(eq(int, rc > 0, rfc_tchar(c) || c == ':'), "name byte 0x%02x", c);
        /* field value, inside (leading and trailing whitespace are trimmed) */
        n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nX: aZb\r\n\r\n");
        buf[20] = (char)c;
        rc = rpc_h1_parse_head(buf, (size_t)n, 0, &head, NULL);
        cr_assert(eq(int, rc > 0, rfc_field_vchar(c)), "value byte 0x%02x", c);
        /* target (percent is checked apart) */
        if (c == '%') continue;
        n = snprintf(buf, sizeof(buf), "GET /aZ HTTP/1.1\r\n\r\n");
        buf[6] = (char)c;
        rc = rpc_h1_parse_head(buf, (size_t)n, 0, &head, NULL);
        cr_assert(eq(int, rc > 0, rfc_pchar_or_query(c)), "target byte 0x%02x", c);
    }
}

static char *make_head(size_t target_len, size_t fields, size_t pad)
{
    size_t size = target_len + fields * 16 + pad + 128;
    char *s = malloc(size);
    size_t n = (size_t)sprintf(s, "GET /"); /* NOLINT: bounded by size */
    memset(s + n, 'a', target_len - 1);
    n += target_len - 1;
    n += (size_t)sprintf(s + n, " HTTP/1.1\r\n"); /* NOLINT */
    for (size_t i = 0; i < fields; i++)
        n += (size_t)sprintf(s + n, "F%05zu: v\r\n", i); /* NOLINT */
    if (pad) {
        n += (size_t)sprintf(s + n, "P: "); /* NOLINT */
        memset(s + n, 'p', pad);
        n += pad;
        n += (size_t)sprintf(s + n, "\r\n"); /* NOLINT */
    }
    n += (size_t)sprintf(s + n, "\r\n"); /* NOLINT */
    s[n] = '\0';
    return s;
}

Test(rpc_h1_parse, enforces_the_limits)
{
    char *s = make_head(RPC_H1_TARGET_MAX, 0, 0);
    cr_assert(gt(int, parse(s), 0));
    free(s);
    s = make_head(RPC_H1_TARGET_MAX + 1, 0, 0);
    cr_assert(eq(int, parse(s), -ENAMETOOLONG));
    free(s);
    s = make_head(1, RPC_H1_FIELDS_MAX, 0);
    cr_assert(gt(int, parse(s), 0));
    cr_assert(eq(u32, head.field_count, RPC_H1_FIELDS_MAX));
    free(s);
    s = make_head(1, RPC_H1_FIELDS_MAX + 1, 0);
    cr_assert(eq(int, parse(s), -EMSGSIZE));
    free(s);
    /* A head of exactly RPC_H1_HEAD_MAX bytes passes, one more byte does not. */
    s = make_head(1, 0, 1);
    size_t base = strlen(s) - 1;
    free(s);
    s = make_head(1, 0, RPC_H1_HEAD_MAX - base);
    cr_assert(eq(sz, strlen(s), (size_t)RPC_H1_HEAD_MAX));
    cr_assert(eq(int, parse(s), RPC_H1_HEAD_MAX));
    free(s);
    s = make_head(1, 0, RPC_H1_HEAD_MAX - base + 1);
    cr_assert(eq(int, parse(s), -EMSGSIZE));
    /* Incomplete but already over the limit. */
    cr_assert(eq(int, rpc_h1_parse_head(s, RPC_H1_HEAD_MAX, 0, &head, NULL), -EMSGSIZE));
    cr_assert(eq(int, rpc_h1_parse_head(s, RPC_H1_HEAD_MAX - 1, 0, &head, NULL), 0));
    free(s);
    /* A request line the head limit cuts is a target too long (414), not fields (431). */
    s = make_head(RPC_H1_HEAD_MAX + 100, 0, 0);
    cr_assert(eq(int, rpc_h1_parse_head(s, RPC_H1_HEAD_MAX, 0, &head, NULL), -ENAMETOOLONG));
    cr_assert(eq(int, parse(s), -ENAMETOOLONG));
    memset(s, 'x', RPC_H1_HEAD_MAX); /* no method and space: not a request line */
    cr_assert(eq(int, rpc_h1_parse_head(s, RPC_H1_HEAD_MAX, 0, &head, NULL), -EMSGSIZE));
    free(s);
}

/* ---- request semantics ---- */

static struct rpc_h1_request req;

static int request(const char *s)
{
    int n = parse(s);
    cr_assert(gt(int, n, 0), "head of: %s", s);
    return rpc_h1_parse_request(&head, &req, NULL);
}

Test(rpc_h1_parse, request_fields)
{
    cr_assert(eq(int,
                 request("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n"
                         "Expect: 100-Continue\r\nContent-Encoding: zstd\r\n"
                         "Accept-Encoding: gzip;q=1, zstd\r\n\r\n"),
                 0));
    cr_assert(eq(int, req.method, RPC_H1_METHOD_PUT));
    cr_assert(req.has_length);
    cr_assert(eq(u64, req.content_length, 42));
    cr_assert(req.expect_continue);
    cr_assert(eq(int, req.encoding, RPC_H1_CODING_ZSTD));
    cr_assert(req.accept_zstd);
    cr_assert(req.keep_alive);
    cr_assert(not(req.chunked));
    cr_assert(span_eq(&req.path, "/k"));
    cr_assert(
        eq(int, request("GET /k?q=1 HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n"), 0));
    cr_assert(not(req.keep_alive));
    cr_assert(span_eq(&req.path, "/k"));
    cr_assert(eq(int, req.method, RPC_H1_METHOD_GET));
    cr_assert(
        eq(int, request("HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"), 0));
    cr_assert(eq(int, req.method, RPC_H1_METHOD_HEAD));
    cr_assert(req.chunked);
    cr_assert(
        eq(int, request("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  chunked \r\n\r\n"), 0));
    cr_assert(req.chunked);
    cr_assert(eq(int, request("DELETE / HTTP/1.1\r\nHost: a\r\n\r\n"), 0));
    cr_assert(eq(int, req.method, RPC_H1_METHOD_OTHER));
    cr_assert(eq(int, request("get / HTTP/1.1\r\nHost: a\r\n\r\n"), 0));
    cr_assert(eq(int, req.method, RPC_H1_METHOD_OTHER)); /* methods are case-sensitive */
}

Test(rpc_h1_parse, http_1_0_keep_alive_and_host)
{
    cr_assert(eq(int, request("GET / HTTP/1.0\r\n\r\n"), 0));
    cr_assert(not(req.keep_alive));
    cr_assert(eq(int, request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 0));
    cr_assert(req.keep_alive);
    cr_assert(eq(int, request("GET / HTTP/1.1\r\n\r\n"), -EPROTO));
    cr_assert(eq(int, request("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"), -EPROTO));
    cr_assert(eq(int, request("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"), -EPROTO));
    /* HTTP/1.9 is answered as 1.1. */
    cr_assert(eq(int, request("GET / HTTP/1.9\r\nHost: a\r\n\r\n"), 0));
    cr_assert(eq(u8, head.version_minor, 1));
    cr_assert(req.keep_alive);
}

Test(rpc_h1_parse, host_values_are_checked)
{
    /* RFC 9112 §3.2: uri-host [ ":" port ], or empty; anything else is a 400. */
    static const char *const good[] = {
        "a", "example:8980", "127.0.0.1:0",          "[::1]:8980", "[v1.x]",
        "",  "h%41st",       "a-b.c_d~e!$&'()*+,;=", "h:",
    };
    static const char *const bad[] = {
        "a b", "@@@",  "[::1", "a\200b", /* obs-text: a field value may hold it, a host may not */
        "u@h", "h:8x", "[]",   "h%4",    "h%zz", "h/x", "h?x", "[::1]x", "a:1:2",
    };
    char s[256];
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        (void)snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", good[i]);
        cr_assert(eq(int, request(s), 0), "Host: %s", good[i]);
    }
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        (void)snprintf(s, sizeof(s), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", bad[i]);
        cr_assert(eq(int, request(s), -EPROTO), "Host: %s", bad[i]);
    }
    /* HTTP/1.0 needs none, but one it sends is checked the same. */
    cr_assert(eq(int, request("GET / HTTP/1.0\r\nHost: a b\r\n\r\n"), -EPROTO));
    /* Userinfo in an absolute-form target (RFC 9110 §4.2.4). */
    cr_assert(eq(int, request("GET http://u@h/cas/x HTTP/1.1\r\nHost: h\r\n\r\n"), -EPROTO));
    cr_assert(eq(int, request("GET http://h/a@b HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/a@b"));
}

Test(rpc_h1_parse, expect_100_continue_in_http_1_0_is_ignored)
{
    /* RFC 9110 §10.1.1: a 1.0 client knows no 100; its body follows the head. */
    cr_assert(eq(int,
                 request("PUT /k HTTP/1.0\r\nContent-Length: 1\r\n"
                         "Expect: 100-continue\r\n\r\n"),
                 0));
    cr_assert(not(req.expect_continue));
    cr_assert(eq(int,
                 request("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                         "Expect: 100-continue\r\n\r\n"),
                 0));
    cr_assert(req.expect_continue);
}

Test(rpc_h1_parse, framing_rules)
{
    static const struct bad_case cases[] = {
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
          -EPROTO },
        { "PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", -EOPNOTSUPP },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
          "Transfer-Encoding: chunked\r\n\r\n",
          -EOPNOTSUPP },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
          "Transfer-Encoding: chunked\r\n\r\n",
          -EOPNOTSUPP },
        /* RFC 9112 §6.3: chunked not the final coding, so no length can be found: 400. */
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
          "Transfer-Encoding: gzip\r\n\r\n",
          -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", -EPROTO },
        /* Empty elements are refused, not skipped: a proxy in front may frame them otherwise. */
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n", -EOPNOTSUPP },
        { "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
          "Transfer-Encoding:\r\n\r\n",
          -EPROTO },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\n\r\n", -EMEDIUMTYPE },
        { "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", -EBADE },
        { "GET foo HTTP/1.1\r\nHost: a\r\n\r\n", -EPROTO },
        { "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", -EPROTO },
        { "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", -EPROTO },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        cr_assert(eq(int, request(cases[i].input), cases[i].err), "case %zu", i);
    cr_assert(eq(int,
                 request("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n"
                         "Content-Length: 7\r\n\r\n"),
                 0));
    cr_assert(eq(u64, req.content_length, 7));
    cr_assert(eq(int,
                 request("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807"
                         "\r\n\r\n"),
                 0));
    cr_assert(eq(int, request("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 000\r\n\r\n"), 0));
    cr_assert(eq(u64, req.content_length, 0));
}

Test(rpc_h1_parse, repeated_content_encoding_fields_are_one_list)
{
    /* RFC 9110 §5.3: two fields are the list of both; zstd twice is not a coding we decode. */
    static const struct bad_case cases[] = {
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: zstd\r\n"
          "Content-Encoding: zstd\r\n\r\n",
          -EMEDIUMTYPE },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: zstd, ZSTD\r\n\r\n", -EMEDIUMTYPE },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: zstd\r\n"
          "Content-Encoding: gzip\r\n\r\n",
          -EMEDIUMTYPE },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: identity, br\r\n\r\n", -EMEDIUMTYPE },
        { "PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: zstd;q=1\r\n\r\n", -EMEDIUMTYPE },
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        cr_assert(eq(int, request(cases[i].input), cases[i].err), "case %zu", i);
    static const char *const zstd_once[] = {
        ("PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: identity\r\n"
         "Content-Encoding: zstd\r\n\r\n"),
        "PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: zstd, identity\r\n\r\n",
        "PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: , zstd ,\r\n\r\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(zstd_once); i++) {
        cr_assert(eq(int, request(zstd_once[i]), 0), "%s", zstd_once[i]);
        cr_assert(eq(int, req.encoding, RPC_H1_CODING_ZSTD), "%s", zstd_once[i]);
    }
    cr_assert(eq(int,
                 request("PUT / HTTP/1.1\r\nHost: a\r\nContent-Encoding: identity\r\n"
                         "Content-Encoding: identity\r\n\r\n"),
                 0));
    cr_assert(eq(int, req.encoding, RPC_H1_CODING_IDENTITY));
}

Test(rpc_h1_parse, absolute_and_asterisk_forms)
{
    cr_assert(eq(int, request("GET http://h:1/a/b?c HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/a/b"));
    cr_assert(eq(int, request("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/"));
    cr_assert(eq(int, request("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "*"));
    cr_assert(eq(int, request("GET /?only-query HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/"));
}

Test(rpc_h1_parse, absolute_form_authority_may_be_an_ip_literal)
{
    /* RFC 9112 §3.2.2: a server must accept the absolute-form, and an IPv6 address is written
     * in brackets there (RFC 3986 §3.2.2). */
    cr_assert(
        eq(int, request("GET http://[::1]:8980/cas/x?y HTTP/1.1\r\nHost: [::1]:8980\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/cas/x"));
    cr_assert(eq(int, request("PUT HTTP://[2001:db8::7] HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/"));
    cr_assert(eq(int, request("GET http://[::1]?/x HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/"));
    /* The authority is a host and an optional port, as a Host field's value. */
    static const char *const bad_authority[] = {
        "GET http://[::1/x HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://[]/x HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://[::1]x/x HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://h:8x/x HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://h]/x HTTP/1.1\r\nHost: h\r\n\r\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad_authority); i++) {
        cr_assert(eq(int, request(bad_authority[i]), -EPROTO), "%s", bad_authority[i]);
    }
    /* Brackets belong to the authority only: a path or a query holds none. */
    static const char *const bad_target[] = {
        "GET /[::1] HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://h/[x] HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET http://[::1]/?[ HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET ftp://[::1]/ HTTP/1.1\r\nHost: h\r\n\r\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad_target); i++) {
        cr_assert(eq(int, parse(bad_target[i]), -EPROTO), "%s", bad_target[i]);
    }
}

Test(rpc_h1_parse, absolute_form_authority_ends_at_the_query)
{
    /* The authority ends at "?" as well as "/": a slash in the query is not the path. */
    cr_assert(eq(int, request("GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/"));
    cr_assert(eq(int,
                 request("GET http://h?/i/ac/"
                         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
                         " HTTP/1.1\r\nHost: h\r\n\r\n"),
                 0));
    cr_assert(span_eq(&req.path, "/"));
    cr_assert(eq(int, request("GET https://h:8/a?/b HTTP/1.1\r\nHost: h\r\n\r\n"), 0));
    cr_assert(span_eq(&req.path, "/a"));
    cr_assert(eq(int, request("GET http://?/x HTTP/1.1\r\nHost: h\r\n\r\n"), -EPROTO));
}

Test(rpc_h1_parse, accept_encoding_weights)
{
    static const struct {
        const char *value;
        bool zstd;
    } cases[] = {
        { "zstd", true },
        { "ZSTD", true },
        { "gzip, zstd", true },
        { "zstd;q=0", false },
        { "zstd; q=0.000", false },
        { "zstd;Q=0.", false },
        { "zstd;q=0.001", true },
        { "zstd;q=1", true },
        { "gzip;q=0, zstd", true },
        { "zstdx", false },
        { "*", false },
        { "", false },
        { " , ,zstd ,", true },
        { "zstd;level=3;q=0", false },
    };

    char buf[256];
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: %s\r\n\r\n",
                 cases[i].value);
        cr_assert(eq(int, request(buf), 0));
        cr_assert(eq(int, req.accept_zstd, cases[i].zstd), "%s", cases[i].value);
    }
}

Test(rpc_h1_parse, field_lookup_is_case_insensitive)
{
    cr_assert(gt(int, parse("GET / HTTP/1.1\r\nX-Thing: 1\r\nx-thing: 2\r\n\r\n"), 0));
    const struct rpc_h1_span *v = rpc_h1_parse_field(&head, "X-THING");
    cr_assert(ne(ptr, (void *)v, NULL));
    cr_assert(span_eq(v, "1"));
    cr_assert(eq(ptr, (void *)rpc_h1_parse_field(&head, "nope"), NULL));
}

Test(rpc_h1_parse, statuses)
{
    cr_assert(eq(int, rpc_h1_parse_status(-EPROTO), 400));
    cr_assert(eq(int, rpc_h1_parse_status(-EMSGSIZE), 431));
    cr_assert(eq(int, rpc_h1_parse_status(-ENAMETOOLONG), 414));
    cr_assert(eq(int, rpc_h1_parse_status(-EPROTONOSUPPORT), 505));
    cr_assert(eq(int, rpc_h1_parse_status(-EOPNOTSUPP), 501));
    cr_assert(eq(int, rpc_h1_parse_status(-EMEDIUMTYPE), 415));
    cr_assert(eq(int, rpc_h1_parse_status(-EBADE), 417));
}

static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * 2685821657736338717ULL;
}

/* Random valid heads parse to what was generated, fed in random pieces. */
Test(rpc_h1_parse, random_heads_round_trip_at_random_cuts)
{
    static const char tchars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                 "!#$%&'*+-.^_`|~";
    static const char *const methods[] = { "GET", "HEAD", "PUT", "DELETE", "X-CUSTOM" };
    static char buf[RPC_H1_HEAD_MAX];
    static char names[RPC_H1_FIELDS_MAX][32];
    static char values[RPC_H1_FIELDS_MAX][64];
    for (int round = 0; round < 500; round++) {
        uint32_t fields = (uint32_t)(rnd() % 20);
        const char *method = methods[rnd() % ARRAY_LEN(methods)];
        int n = snprintf(buf, sizeof(buf), "%s /r/%d?q=%d HTTP/1.%d\r\n", method, round, round * 3,
                         (int)(rnd() % 2));
        for (uint32_t f = 0; f < fields; f++) {
            size_t nl = 1 + rnd() % 20;
            for (size_t i = 0; i < nl; i++)
                names[f][i] = tchars[rnd() % (sizeof(tchars) - 1)];
            names[f][nl] = '\0';
            size_t vl = rnd() % 40;
            for (size_t i = 0; i < vl; i++)
                values[f][i] = (char)(0x21 + rnd() % 94); /* VCHAR */
            if (vl > 2) values[f][vl / 2] = ' ';
            values[f][vl] = '\0';
            n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%s:%s%s%s\r\n", names[f],
                          rnd() % 2 ? " " : "", values[f], rnd() % 3 ? "" : " \t");
        }
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "\r\n");
        size_t last = 0;
        int rc = 0;
        /* Bounded by the head's length: each piece adds at least one byte. */
        while (rc == 0) {
            size_t next = last + 1 + (size_t)(rnd() % 40);
            if (next > (size_t)n) next = (size_t)n;
            rc = rpc_h1_parse_head(buf, next, last, &head, NULL);
            if (next < (size_t)n) cr_assert(eq(int, rc, 0), "round %d", round);
            last = next;
        }
        cr_assert(eq(int, rc, n), "round %d: %s", round, buf);
        cr_assert(span_eq(&head.method, method));
        cr_assert(eq(u32, head.field_count, fields));
        for (uint32_t f = 0; f < fields; f++) {
            cr_assert(span_eq(&head.fields[f].name, names[f]), "round %d field %u", round, f);
            cr_assert(span_eq(&head.fields[f].value, values[f]), "round %d field %u", round, f);
        }
    }
}

/* If-Match and If-None-Match (RFC 9110 §13.1.1, §13.1.2): "*" or a list of entity-tags,
 * checked when the head is read, matched by rpc_h1_etag_match. */
static bool cond_request(const char *field, const char *value)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\n%s: %s\r\n\r\n", field, value);
    const char *desc = NULL;
    cr_assert(gt(int, parse(buf), 0), "%s", buf);
    int rc = rpc_h1_parse_request(&head, &req, &desc);
    if (rc < 0) {
        cr_assert(eq(int, rc, -EPROTO));
        cr_assert(ne(ptr, (void *)strstr(desc, field), NULL), "%s", desc);
    }
    return rc == 0;
}

Test(rpc_h1_parse, conditional_lists_are_checked)
{
    static const char *const good[] = {
        "*",       "\"a\"",    "W/\"a\"", "\"\"",        " \"a\" , W/\"b\" ",
        "\"a,b\"", ",\"a\",,", "",        "\"\x80\xff\""
    };
    static const char *const bad[] = { "a",  "\"a", "W/a",    "w/\"a\"", "\"a\" \"b\"",
                                       "*x", "* *", "\"a\"x", "W/",      "\"a b\"" };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        cr_assert(cond_request("If-Match", good[i]), "%s", good[i]);
        cr_assert(eq(u64, req.if_match, 1ULL << 1), "%s", good[i]);
        cr_assert(eq(u64, req.if_none_match, 0));
        cr_assert(cond_request("if-none-match", good[i]), "%s", good[i]);
        cr_assert(eq(u64, req.if_none_match, 1ULL << 1), "%s", good[i]);
    }
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        cr_assert(not(cond_request("If-Match", bad[i])), "%s", bad[i]);
        cr_assert(not(cond_request("If-None-Match", bad[i])), "%s", bad[i]);
    }
    cr_assert(cond_request("X-Other", "\"a"), "another field is not a condition");
    cr_assert(eq(u64, req.if_match | req.if_none_match, 0));
}

Test(rpc_h1_parse, etag_match_compares_strong_or_weak)
{
    cr_assert(eq(int,
                 request("GET / HTTP/1.1\r\nHost: a\r\nIf-Match: \"x\", W/\"w\"\r\n"
                         "If-None-Match: \"n\"\r\nIf-Match: \"a,b\"\r\n\r\n"),
                 0));
    cr_assert(eq(u64, req.if_match, (1ULL << 1) | (1ULL << 3)));
    cr_assert(rpc_h1_etag_match(&head, req.if_match, "\"x\"", false));
    cr_assert(rpc_h1_etag_match(&head, req.if_match, "\"a,b\"", false));    /* the second field */
    cr_assert(not(rpc_h1_etag_match(&head, req.if_match, "\"w\"", false))); /* weak */
    cr_assert(rpc_h1_etag_match(&head, req.if_match, "\"w\"", true));
    cr_assert(not(rpc_h1_etag_match(&head, req.if_match, "\"n\"", true))); /* not its field */
    cr_assert(not(rpc_h1_etag_match(&head, req.if_match, "\"X\"", true))); /* case-sensitive */
    cr_assert(not(rpc_h1_etag_match(&head, req.if_match, NULL, true)));
    cr_assert(rpc_h1_etag_match(&head, req.if_none_match, "\"n\"", false));
    cr_assert(eq(int, request("GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"q\", *\r\n\r\n"), 0));
    cr_assert(rpc_h1_etag_match(&head, req.if_none_match, NULL, false)); /* "*": any */
}
