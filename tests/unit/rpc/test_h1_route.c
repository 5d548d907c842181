/*
 * Routing and key derivation: the operations endpoints, the CAS and AC layouts with their
 * instance prefixes, plain keys, methods (405 with Allow, 501), and known-answer keys.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "rpc/h1_route.h"
#include "rpc/keys.h"

#define HASH "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static struct rpc_h1_route r;

static void route(enum rpc_h1_method m, const char *name, const char *path)
{
    struct rpc_h1_span n = { name, (uint32_t)strlen(name) };
    struct rpc_h1_span p = { path, (uint32_t)strlen(path) };
    rpc_h1_route(m, &n, &p, &r);
}

static void from_hex(const char *hex, uint8_t out[32])
{
    for (size_t i = 0; i < 32; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v); /* NOLINT: test input is well formed */
        out[i] = (uint8_t)v;
    }
}

Test(rpc_h1_route, operations_endpoints)
{
    route(RPC_H1_METHOD_GET, "GET", "/metrics");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_METRICS));
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_METRICS));
    route(RPC_H1_METHOD_HEAD, "HEAD", "/healthz");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_HEALTHZ));
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_HEALTHZ));
    route(RPC_H1_METHOD_GET, "GET", "/readyz");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_READYZ));
    route(RPC_H1_METHOD_PUT, "PUT", "/metrics");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_NONE));
    cr_assert(eq(int, r.status, 405));
    cr_assert(eq(str, (char *)r.allow, "GET, HEAD"));
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_OTHER));
    route(RPC_H1_METHOD_OTHER, "BREW", "/healthz");
    cr_assert(eq(int, r.status, 501));
    /* Near misses are plain keys. */
    route(RPC_H1_METHOD_GET, "GET", "/metrics/");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_KV));
}

Test(rpc_h1_route, cas_is_shared_by_every_prefix)
{
    uint8_t want[32];
    from_hex(HASH, want);
    route(RPC_H1_METHOD_GET, "GET", "/cas/" HASH);
    cr_assert(eq(int, r.target, RPC_H1_TARGET_CAS));
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_GET_CAS));
    cr_assert(eq(int, memcmp(r.key, want, 32), 0));
    route(RPC_H1_METHOD_PUT, "PUT", "/bazel/x/cas/" HASH);
    cr_assert(eq(int, r.target, RPC_H1_TARGET_CAS));
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_PUT_CAS));
    cr_assert(eq(int, memcmp(r.key, want, 32), 0));
    /* Upper-case hex names the same blob. */
    route(RPC_H1_METHOD_HEAD, "HEAD",
          "/cas/000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_HEAD_CAS));
    cr_assert(eq(int, memcmp(r.key, want, 32), 0));
}

Test(rpc_h1_route, ac_keys_are_scoped_by_instance)
{
    /* Known answers: SHA-256("ringcas/ac\0" || instance || "\0" || hash). */
    uint8_t bazel[32];
    uint8_t none[32];
    from_hex("b8a6d549f6e2e1a347516806c719c62620ccc2016f15bce339185f1cc7e432f9", bazel);
    from_hex("71a7b2daf50828fbf07f65eeab14201d4942ae492643cff2ed95c835396dd553", none);
    route(RPC_H1_METHOD_PUT, "PUT", "/bazel/ac/" HASH);
    cr_assert(eq(int, r.target, RPC_H1_TARGET_AC));
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_PUT_AC));
    cr_assert(eq(int, memcmp(r.key, bazel, 32), 0));
    route(RPC_H1_METHOD_GET, "GET", "/ac/" HASH);
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_GET_AC));
    cr_assert(eq(int, memcmp(r.key, none, 32), 0));
    uint8_t hash[32];
    from_hex(HASH, hash);
    uint8_t k[32];
    rpc_keys_ac("bazel", 5, hash, k);
    cr_assert(eq(int, memcmp(k, bazel, 32), 0));
    route(RPC_H1_METHOD_GET, "GET", "/other/ac/" HASH);
    cr_assert(ne(int, memcmp(r.key, bazel, 32), 0));
}

Test(rpc_h1_route, plain_keys)
{
    uint8_t want[32];
    from_hex("69521df53822b0fdae73820f99a983fe1a7be6876dc3edfdcd9a010688ea33da", want);
    route(RPC_H1_METHOD_PUT, "PUT", "/ccache/ab/cdef");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_KV));
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_PUT_KV));
    cr_assert(eq(int, memcmp(r.key, want, 32), 0));
    route(RPC_H1_METHOD_GET, "GET", "/ccache/ab/cdef");
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_GET_KV));
    cr_assert(eq(int, memcmp(r.key, want, 32), 0));
    route(RPC_H1_METHOD_HEAD, "HEAD", "/gradle/cache/0123");
    cr_assert(eq(int, r.metric, RPC_ROUTE_HTTP_HEAD_KV));
    /* A plain key never equals the AC key of the same bytes (domain separation). */
    uint8_t ac[32];
    route(RPC_H1_METHOD_GET, "GET", "/ac/" HASH);
    memcpy(ac, r.key, 32);
    route(RPC_H1_METHOD_GET, "GET", "/acx/" HASH);
    cr_assert(eq(int, r.target, RPC_H1_TARGET_KV));
    cr_assert(ne(int, memcmp(r.key, ac, 32), 0));
    route(RPC_H1_METHOD_GET, "GET", "/");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_KV));
}

Test(rpc_h1_route, malformed_digests_and_methods)
{
    route(RPC_H1_METHOD_GET, "GET", "/cas/abc");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_NONE));
    cr_assert(eq(int, r.status, 400));
    cr_assert(ne(ptr, (void *)r.err_desc, NULL));
    route(RPC_H1_METHOD_GET, "GET", "/x/ac/" HASH "0");
    cr_assert(eq(int, r.status, 400));
    route(RPC_H1_METHOD_GET, "GET",
          "/cas/"
          "g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    cr_assert(eq(int, r.status, 400));
    route(RPC_H1_METHOD_GET, "GET", "/cas/");
    cr_assert(eq(int, r.status, 400));
    /* A slash after the hash is a mistyped digest too, not a plain key stored unchecked. */
    route(RPC_H1_METHOD_PUT, "PUT", "/cas/" HASH "/");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_NONE));
    cr_assert(eq(int, r.status, 400));
    route(RPC_H1_METHOD_GET, "GET", "/bazel/ac/" HASH "/");
    cr_assert(eq(int, r.status, 400));
    /* Only after a hash-like last segment: other paths ending in a slash stay plain keys. */
    route(RPC_H1_METHOD_PUT, "PUT", "/x/cas/y/");
    cr_assert(eq(int, r.target, RPC_H1_TARGET_KV));
    route(RPC_H1_METHOD_OTHER, "DELETE", "/cas/" HASH);
    cr_assert(eq(int, r.status, 405));
    cr_assert(eq(str, (char *)r.allow, "GET, HEAD, PUT"));
    route(RPC_H1_METHOD_OTHER, "POST", "/k");
    cr_assert(eq(int, r.status, 405));
    route(RPC_H1_METHOD_OTHER, "FROB", "/k");
    cr_assert(eq(int, r.status, 501));
    route(RPC_H1_METHOD_GET, "GET", "*");
    cr_assert(eq(int, r.status, 400));
    route(RPC_H1_METHOD_OTHER, "OPTIONS", "*");
    cr_assert(eq(int, r.status, 405)); /* as docs/http.md lists OPTIONS */
    cr_assert(eq(str, (char *)r.allow, "GET, HEAD, PUT"));
    route(RPC_H1_METHOD_OTHER, "OPTIONS", "/k");
    cr_assert(eq(int, r.status, 405));
    cr_assert(eq(str, (char *)r.allow, "GET, HEAD, PUT"));
}
