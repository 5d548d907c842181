/*
 * REAPI digests to engine keys: CAS keys carry hash and size; action cache keys are scoped
 * by instance name and shared with HTTP's /ac/ (rpc/keys.c); malformed digests are refused.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "rpc/digest.h"
#include "rpc/keys.h"
#include "rpc/svc.h"

#define H "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static Build__Bazel__Remote__Execution__V2__Digest digest(const char *hash, int64_t size)
{
    Build__Bazel__Remote__Execution__V2__Digest d;
    build__bazel__remote__execution__v2__digest__init(&d);
    d.hash = (char *)hash;
    d.size_bytes = size;
    return d;
}

Test(rpc_digest, cas_keys_carry_hash_and_size)
{
    Build__Bazel__Remote__Execution__V2__Digest d = digest(H, 0);
    struct blob_key k;
    cr_assert(eq(int, rpc_digest_cas_key(&d, &k), 0));
    cr_assert(eq(u8, k.kind, BLOB_KIND_CAS));
    cr_assert(eq(u64, k.size, 0));
    cr_assert(eq(u8, k.hash[0], 0xe3));
    cr_assert(blob_key_is_empty(&k));
    d.size_bytes = 7;
    cr_assert(eq(int, rpc_digest_cas_key(&d, &k), 0));
    cr_assert(not(blob_key_is_empty(&k)));
}

Test(rpc_digest, malformed_digests_are_refused)
{
    struct blob_key k;
    cr_assert(eq(int, rpc_digest_cas_key(NULL, &k), -EINVAL));
    Build__Bazel__Remote__Execution__V2__Digest d = digest(H, -1);
    cr_assert(eq(int, rpc_digest_cas_key(&d, &k), -EINVAL));
    d = digest("xyz", 1);
    cr_assert(eq(int, rpc_digest_cas_key(&d, &k), -EINVAL));
    d = digest("da39a3ee5e6b4b0d3255bfef95601890afd80709", 1); /* SHA-1 */
    cr_assert(eq(int, rpc_digest_cas_key(&d, &k), -ENOTSUP));
}

Test(rpc_digest, action_cache_keys_are_scoped_by_instance)
{
    Build__Bazel__Remote__Execution__V2__Digest d = digest(H, 0);
    struct blob_key a;
    struct blob_key b;
    struct blob_key a2;
    cr_assert(eq(int, rpc_digest_ac_key("team-a", &d, &a), 0));
    cr_assert(eq(int, rpc_digest_ac_key("team-b", &d, &b), 0));
    cr_assert(eq(int, rpc_digest_ac_key("team-a", &d, &a2), 0));
    cr_assert(eq(u8, a.kind, BLOB_KIND_AC));
    cr_assert(ne(int, memcmp(a.hash, b.hash, BLOB_HASH_SIZE), 0));
    cr_assert(eq(int, memcmp(a.hash, a2.hash, BLOB_HASH_SIZE), 0));
    /* The same derivation as HTTP's <instance>/ac/<hash>. */
    uint8_t raw[32];
    memcpy(raw, a2.hash, 32);
    uint8_t http[RPC_KEY_SIZE];
    struct blob_key cas;
    cr_assert(eq(int, rpc_digest_cas_key(&d, &cas), 0));
    rpc_keys_ac("team-a", 6, cas.hash, http);
    cr_assert(eq(int, memcmp(http, raw, RPC_KEY_SIZE), 0));
    /* "" and NULL are the same, unnamed instance; a name past the limit is refused. */
    struct blob_key n1;
    struct blob_key n2;
    cr_assert(eq(int, rpc_digest_ac_key("", &d, &n1), 0));
    cr_assert(eq(int, rpc_digest_ac_key(NULL, &d, &n2), 0));
    cr_assert(eq(int, memcmp(n1.hash, n2.hash, BLOB_HASH_SIZE), 0));
    static char long_name[RPC_INSTANCE_MAX + 2];
    memset(long_name, 'i', RPC_INSTANCE_MAX + 1);
    cr_assert(eq(int, rpc_digest_ac_key(long_name, &d, &n1), -ENAMETOOLONG));
}

Test(rpc_digest, served_digest_functions)
{
    cr_assert(rpc_digest_fn_is_served(0));
    cr_assert(rpc_digest_fn_is_served(1));
    cr_assert(not(rpc_digest_fn_is_served(2)));
    cr_assert(not(rpc_digest_fn_is_served(9)));
}

Test(rpc_svc, methods_and_services)
{
    const struct rpc_method *m = rpc_svc_lookup("/google.bytestream.ByteStream/Read");
    cr_assert(ne(ptr, (void *)m, NULL));
    cr_assert(eq(int, m->route, RPC_ROUTE_GRPC_BS_READ));
    cr_assert(not(m->streamed));
    m = rpc_svc_lookup("/google.bytestream.ByteStream/Write");
    cr_assert(m->streamed);
    cr_assert(eq(ptr, (void *)rpc_svc_lookup("/google.bytestream.ByteStream/read"), NULL));
    cr_assert(eq(ptr, (void *)rpc_svc_lookup(""), NULL));
    cr_assert(eq(ptr, (void *)rpc_svc_lookup("/grpc.health.v1.Health/Watch"), NULL));
    cr_assert(rpc_svc_is_known_service("", 0));
    cr_assert(rpc_svc_is_known_service("google.bytestream.ByteStream", 28));
    cr_assert(not(rpc_svc_is_known_service("google.bytestream.ByteStrea", 27)));
    cr_assert(not(rpc_svc_is_known_service("build.bazel.remote.execution.v2.Execution", 41)));
}
