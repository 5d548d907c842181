/* REAPI digests to engine keys. */
#include "rpc/digest.h"

#include <errno.h>
#include <string.h>

#include "proto/resource.h"
#include "rpc/keys.h"

STATIC_ASSERT(PROTO_SHA256_SIZE == BLOB_HASH_SIZE, "one hash size");
STATIC_ASSERT(RPC_KEY_SIZE == BLOB_HASH_SIZE, "AC keys are engine hashes");

static int parse(const Build__Bazel__Remote__Execution__V2__Digest *d, uint8_t hash[BLOB_HASH_SIZE])
{
    if (!d || !d->hash) return -EINVAL;
    return proto_resource_digest(d->hash, strlen(d->hash), d->size_bytes, hash);
}

int rpc_digest_cas_key(const Build__Bazel__Remote__Execution__V2__Digest *d, struct blob_key *k)
{
    uint8_t hash[BLOB_HASH_SIZE];
    int rc = parse(d, hash);
    if (rc < 0) return rc;
    blob_key_cas(k, hash, (uint64_t)d->size_bytes);
    return 0;
}

int rpc_digest_ac_key(const char *instance, const Build__Bazel__Remote__Execution__V2__Digest *d,
                      struct blob_key *k)
{
    uint8_t hash[BLOB_HASH_SIZE];
    int rc = parse(d, hash);
    if (rc < 0) return rc;
    size_t len = instance ? strlen(instance) : 0;
    if (len > RPC_INSTANCE_MAX) return -ENAMETOOLONG;
    uint8_t key[RPC_KEY_SIZE];
    rpc_keys_ac(instance ? instance : "", len, hash, key);
    blob_key_ac(k, key, 0);
    return 0;
}

bool rpc_digest_fn_is_served(int digest_function)
{
    return digest_function ==
               BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__UNKNOWN ||
           digest_function == BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256;
}
