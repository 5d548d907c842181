/*
 * The chunked decoder: bodies cut at every point and fed byte by byte decode to the same
 * bytes; extensions and trailers are skipped; malformed framing and oversize lines fail.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "rpc/h1_chunked.h"

struct result {
    char body[4096];
    size_t len;
    int err;
    bool done;
    size_t consumed;
};

/* Feeds <in> in pieces of at most <step> bytes (0: all at once). */
static void decode(const char *in, size_t len, size_t step, struct result *r)
{
    struct rpc_h1_chunked d;
    rpc_h1_chunked_init(&d);
    memset(r, 0, sizeof(*r));
    size_t off = 0;
    while (off < len && !rpc_h1_chunked_is_done(&d)) {
        size_t piece = step && len - off > step ? step : len - off;
        size_t used = 0;
        /* Bounded: each call consumes at least one byte of the piece. */
        while (used < piece && !rpc_h1_chunked_is_done(&d)) {
            const uint8_t *data;
            size_t n;
            int rc = rpc_h1_chunked_decode(&d, (const uint8_t *)in + off + used, piece - used,
                                           &data, &n, NULL);
            if (rc < 0) {
                r->err = rc;
                return;
            }
            cr_assert(gt(int, rc, 0));
            cr_assert(le(sz, n, (size_t)rc));
            if (n) {
                cr_assert(ge(ptr, (void *)data, (void *)(in + off + used)));
                memcpy(r->body + r->len, data, n);
                r->len += n;
            }
            used += (size_t)rc;
        }
        off += used;
    }
    r->done = rpc_h1_chunked_is_done(&d);
    r->consumed = off;
}

static const char body[] = "4\r\nWiki\r\n"
                           "6;name=\"va;lue\";flag\r\npedia \r\n"
                           "E\r\nin \r\n\r\nchunks.\r\n"
                           "0000\r\n"
                           "Expires: never\r\n"
                           "X: y\r\n"
                           "\r\n"
                           "NEXT";

Test(rpc_h1_chunked, decodes_at_every_step_size)
{
    size_t len = strlen(body);
    for (size_t step = 0; step <= len; step++) {
        struct result r;
        decode(body, len, step, &r);
        cr_assert(eq(int, r.err, 0), "step %zu", step);
        cr_assert(r.done, "step %zu", step);
        cr_assert(eq(sz, r.len, 24));
        cr_assert(eq(int, memcmp(r.body, "Wikipedia in \r\n\r\nchunks.", 24), 0));
        /* The bytes after the body are left for the next request. */
        cr_assert(eq(sz, r.consumed, len - 4), "step %zu", step);
    }
}

Test(rpc_h1_chunked, empty_body_and_upper_case_hex)
{
    struct result r;
    decode("0\r\n\r\n", 5, 1, &r);
    cr_assert(r.done);
    cr_assert(eq(sz, r.len, 0));
    decode("A\r\n0123456789\r\n0\r\n\r\n", 20, 0, &r);
    cr_assert(r.done);
    cr_assert(eq(sz, r.len, 10));
}

Test(rpc_h1_chunked, incomplete_body_is_not_done)
{
    static const char *const cuts[] = { "4\r\nWi", "4\r\nWiki\r\n", "4\r\nWiki\r\n0\r\n",
                                        "4\r\nWiki\r\n0\r\n\r", "4\r\nWiki\r\n0\r\nX: y\r\n" };
    for (size_t i = 0; i < ARRAY_LEN(cuts); i++) {
        struct result r;
        decode(cuts[i], strlen(cuts[i]), 0, &r);
        cr_assert(eq(int, r.err, 0));
        cr_assert(not(r.done), "%s", cuts[i]);
    }
}

Test(rpc_h1_chunked, rejects_malformed_framing)
{
    static const struct {
        const char *in;
        int err;
    } cases[] = {
        { "\r\n", -EPROTO },  /* no size */
        { "g\r\n", -EPROTO }, /* not hex */
        { "-1\r\n", -EPROTO },
        { "4\nWiki\r\n0\r\n\r\n", -EPROTO },    /* bare LF after the size */
        { "4\r\nWikiX\r\n", -EPROTO },          /* data longer than the size */
        { "4\r\nWiki\n0\r\n\r\n", -EPROTO },    /* bare LF after data */
        { "4\r\nWiki\r\n0\r\n\n", -EPROTO },    /* bare LF at the end */
        { "4;a=\x01\r\n", -EPROTO },            /* CTL in an extension */
        { "0\r\n X: y\r\n\r\n", -EPROTO },      /* folded trailer */
        { "0\r\n:y\r\n\r\n", -EPROTO },         /* trailer without a name */
        { "0\r\nX: \x7f\r\n\r\n", -EPROTO },    /* DEL in a trailer */
        { "0\r\nX: y\rZ\r\n\r\n", -EPROTO },    /* bare CR in a trailer */
        { "10000000000000000\r\n", -EMSGSIZE }, /* 17 hex digits */
    };

    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct result r;
        decode(cases[i].in, strlen(cases[i].in), 0, &r);
        cr_assert(eq(int, r.err, cases[i].err), "case %zu", i);
        decode(cases[i].in, strlen(cases[i].in), 1, &r);
        cr_assert(eq(int, r.err, cases[i].err), "case %zu byte by byte", i);
    }
}

Test(rpc_h1_chunked, bounds_size_lines_and_trailers)
{
    static char in[RPC_H1_TRAILER_MAX + 64];
    /* A size line of exactly RPC_H1_CHUNK_LINE_MAX bytes passes (CRLF included). */
    memset(in, 0, sizeof(in));
    in[0] = '1';
    in[1] = ';';
    memset(in + 2, 'e', RPC_H1_CHUNK_LINE_MAX - 4);
    memcpy(in + RPC_H1_CHUNK_LINE_MAX - 2, "\r\nx\r\n0\r\n\r\n", 10);
    struct result r;
    decode(in, strlen(in), 7, &r);
    cr_assert(eq(int, r.err, 0));
    cr_assert(r.done);
    in[RPC_H1_CHUNK_LINE_MAX - 2] = 'e';
    memcpy(in + RPC_H1_CHUNK_LINE_MAX - 1, "\r\nx\r\n0\r\n\r\n", 10);
    decode(in, strlen(in), 7, &r);
    cr_assert(eq(int, r.err, -EMSGSIZE));
    /* A trailer section over RPC_H1_TRAILER_MAX. */
    memset(in, 0, sizeof(in));
    memcpy(in, "0\r\nX: ", 6);
    memset(in + 6, 'v', RPC_H1_TRAILER_MAX);
    memcpy(in + 6 + RPC_H1_TRAILER_MAX, "\r\n\r\n", 4);
    decode(in, strlen(in), 0, &r);
    cr_assert(eq(int, r.err, -EMSGSIZE));
}

Test(rpc_h1_chunked, sixteen_digit_sizes_decode)
{
    struct rpc_h1_chunked d;
    rpc_h1_chunked_init(&d);
    const uint8_t *data;
    size_t n;
    const char *in = "00000000000000ff\r\nabc";
    int rc = rpc_h1_chunked_decode(&d, (const uint8_t *)in, strlen(in), &data, &n, NULL);
    cr_assert(eq(int, rc, (int)strlen(in)));
    cr_assert(eq(sz, n, 3));
    cr_assert(not(rpc_h1_chunked_is_done(&d)));
}
