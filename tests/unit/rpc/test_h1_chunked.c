/*
 * The chunked decoder: bodies cut at every point and fed byte by byte decode to the same
 * bytes; extensions and trailers are skipped; malformed framing and oversize lines fail.
 */
#include <errno.h>
#include <stdio.h>
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
        { "4\nWiki\r\n0\r\n\r\n", -EPROTO },       /* bare LF after the size */
        { "4\r\nWikiX\r\n", -EPROTO },             /* data longer than the size */
        { "4\r\nWiki\n0\r\n\r\n", -EPROTO },       /* bare LF after data */
        { "4\r\nWiki\r\n0\r\n\n", -EPROTO },       /* bare LF at the end */
        { "4;a=\x01\r\n", -EPROTO },               /* CTL in an extension */
        { "0\r\n X: y\r\n\r\n", -EPROTO },         /* folded trailer */
        { "0\r\n:y\r\n\r\n", -EPROTO },            /* trailer without a name */
        { "0\r\nX: \x7f\r\n\r\n", -EPROTO },       /* DEL in a trailer */
        { "0\r\nX: y\rZ\r\n\r\n", -EPROTO },       /* bare CR in a trailer */
        { "10000000000000000\r\n", -EMSGSIZE },    /* 17 hex digits */
        { "00010000000000000000\r\n", -EMSGSIZE }, /* 17 significant digits */
    };

    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct result r;
        decode(cases[i].in, strlen(cases[i].in), 0, &r);
        cr_assert(eq(int, r.err, cases[i].err), "case %zu", i);
        decode(cases[i].in, strlen(cases[i].in), 1, &r);
        cr_assert(eq(int, r.err, cases[i].err), "case %zu byte by byte", i);
    }
}

Test(rpc_h1_chunked, extensions_and_trailer_lines_follow_their_grammar)
{
    /* RFC 9112 §7.1.1: BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ]. */
    static const char *const bad[] = {
        "5 x\r\nhello\r\n0\r\n\r\n",          /* whitespace, then no extension */
        "5 \r\nhello\r\n0\r\n\r\n",           /* whitespace, then CRLF */
        "5;\r\nhello\r\n0\r\n\r\n",           /* no name */
        "5;=v\r\nhello\r\n0\r\n\r\n",         /* no name before "=" */
        "5;a=\r\nhello\r\n0\r\n\r\n",         /* "=" without a value */
        "5;a b\r\nhello\r\n0\r\n\r\n",        /* two names */
        "5;a=b c\r\nhello\r\n0\r\n\r\n",      /* text after a value */
        "5;a=\"b\r\nhello\r\n0\r\n\r\n",      /* an unterminated quoted-string */
        "5;a=\"b\"c\r\nhello\r\n0\r\n\r\n",   /* text after a quoted-string */
        "5;a=(b)\r\nhello\r\n0\r\n\r\n",      /* not a token */
        "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", /* CTL in a quoted-string */
        "5\r\nhello\r\n0\r\nNoColon\r\n\r\n", /* a trailer line without a colon */
        "5\r\nhello\r\n0\r\nX : y\r\n\r\n",   /* whitespace before the colon */
        "5\r\nhello\r\n0\r\nX(: y\r\n\r\n",   /* not a token */
    };
    static struct result r; /* 4 KiB: not on the stack */
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        decode(bad[i], strlen(bad[i]), 0, &r);
        cr_assert(eq(int, r.err, -EPROTO), "case %zu", i);
        decode(bad[i], strlen(bad[i]), 1, &r);
        cr_assert(eq(int, r.err, -EPROTO), "case %zu byte by byte", i);
    }
    static const char *const good[] = {
        "5;a\r\nhello\r\n0\r\n\r\n",
        "5 ; a = b ;c\r\nhello\r\n0\r\n\r\n",
        "5\t;a=\"q \\\" ;\\x\";b=1\r\nhello\r\n0;last\r\n\r\n",
        "5;a=\"\"\r\nhello\r\n0\r\nX:\r\nY: a b\t\r\n\r\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(good); i++) {
        decode(good[i], strlen(good[i]), 1, &r);
        cr_assert(eq(int, r.err, 0), "case %zu", i);
        cr_assert(r.done, "case %zu", i);
        cr_assert(eq(sz, r.len, 5));
        cr_assert(eq(int, memcmp(r.body, "hello", 5), 0));
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

/* 1*HEXDIG has no length (RFC 9112 §7.1): zeros before a size are not digits of its value. */
Test(rpc_h1_chunked, leading_zeros_do_not_count_against_the_size)
{
    struct result r;
    static const char in[] = "000000000000000000000000000000004\r\nWiki\r\n"
                             "0000000000000000000\r\n\r\n";
    decode(in, strlen(in), 0, &r);
    cr_assert(eq(int, r.err, 0));
    cr_assert(r.done);
    cr_assert(eq(sz, r.len, 4));
    cr_assert(eq(int, memcmp(r.body, "Wiki", 4), 0));
    decode(in, strlen(in), 1, &r);
    cr_assert(eq(int, r.err, 0), "byte by byte");
    cr_assert(r.done);

    struct rpc_h1_chunked d;
    rpc_h1_chunked_init(&d);
    const uint8_t *data;
    size_t n;
    static const char max[] = "0ffffffffffffffff\r\nabc";
    int rc = rpc_h1_chunked_decode(&d, (const uint8_t *)max, strlen(max), &data, &n, NULL);
    cr_assert(eq(int, rc, (int)strlen(max)), "2^64 - 1 with a leading zero");
    cr_assert(eq(sz, n, 3));
}

/* xorshift64*: deterministic pseudo-random numbers for the property tests. */
static uint64_t rnd_state = 88172645463325252ULL;

static uint64_t rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * 2685821657736338717ULL;
}

/* Encodes <body> in random chunks with random extensions and trailers into <out>. */
static size_t encode_random(const uint8_t *data, size_t len, char *out, size_t size)
{
    size_t n = 0;
    size_t i = 0;
    while (i < len) {
        size_t c = 1 + rnd() % 700;
        if (c > len - i) c = len - i;
        bool upper = rnd() % 2;
        n += (size_t)snprintf(out + n, size - n, upper ? "%zX" : "%zx", c);
        if (rnd() % 4 == 0) n += (size_t)snprintf(out + n, size - n, ";name=value%u", 7u);
        n += (size_t)snprintf(out + n, size - n, "\r\n");
        memcpy(out + n, data + i, c);
        n += c;
        n += (size_t)snprintf(out + n, size - n, "\r\n");
        i += c;
    }
    n += (size_t)snprintf(out + n, size - n, "0\r\n");
    if (rnd() % 2) n += (size_t)snprintf(out + n, size - n, "X-Checksum: abc\r\n");
    n += (size_t)snprintf(out + n, size - n, "\r\n");
    return n;
}

Test(rpc_h1_chunked, random_encodings_decode_at_random_cuts)
{
    static uint8_t data[3000];
    static char wire[8192];
    for (int round = 0; round < 300; round++) {
        size_t len = (size_t)(rnd() % sizeof(data));
        for (size_t i = 0; i < len; i++)
            data[i] = (uint8_t)rnd();
        size_t n = encode_random(data, len, wire, sizeof(wire));
        cr_assert(lt(sz, n, sizeof(wire)));
        struct result r;
        decode(wire, n, 1 + (size_t)(rnd() % 97), &r);
        cr_assert(eq(int, r.err, 0), "round %d", round);
        cr_assert(r.done, "round %d", round);
        cr_assert(eq(sz, r.len, len));
        cr_assert(eq(sz, r.consumed, n));
        cr_assert(eq(int, memcmp(r.body, data, len), 0), "round %d", round);
    }
}

Test(rpc_h1_chunked, any_corrupted_byte_of_the_framing_is_refused_or_changes_nothing)
{
    /* Flipping a framing byte either fails the decode or, for bytes inside an extension or a
     * trailer value, leaves the body as it was; it never yields other body bytes silently. */
    const char *wire = "5;a=b\r\nhello\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n";
    size_t n = strlen(wire);
    static char copy[64];
    for (size_t i = 0; i < n; i++) {
        bool in_data = (i >= 7 && i < 12) || (i >= 17 && i < 20);
        if (in_data) continue;
        memcpy(copy, wire, n);
        copy[i] = copy[i] == 'z' ? 'y' : 'z';
        struct result r;
        decode(copy, n, 3, &r);
        if (r.err == 0 && r.done) {
            cr_assert(eq(sz, r.len, 8), "byte %zu", i);
            cr_assert(eq(int, memcmp(r.body, "helloabc", 8), 0), "byte %zu", i);
        }
    }
}
