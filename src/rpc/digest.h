/*
 * REAPI digests as engine keys: a Digest message's hash (64 lower-case hex digits: SHA-256,
 * the only function ringcas serves) and size become a CAS key; action digests become AC keys
 * scoped by instance name (rpc/keys.h, shared with HTTP's /ac/).
 */
#ifndef RINGCAS_RPC_DIGEST_H
#define RINGCAS_RPC_DIGEST_H

#include <stdbool.h>

#include "base/assert.h"
#include "blob/store.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"

/*
 * Fills <k> with the CAS key of <d>. Returns 0, -EINVAL (missing, malformed hash, negative
 * size) or -ENOTSUP (a hash of another length: another digest function).
 */
MUST_CHECK int rpc_digest_cas_key(const Build__Bazel__Remote__Execution__V2__Digest *d,
                                  struct blob_key *k);

/*
 * Fills <k> with the AC key of action digest <d> under <instance> (NUL-terminated). Returns
 * 0, -EINVAL or -ENOTSUP as rpc_digest_cas_key, or -ENAMETOOLONG for an instance name past
 * RPC_INSTANCE_MAX bytes.
 */
MUST_CHECK int rpc_digest_ac_key(const char *instance,
                                 const Build__Bazel__Remote__Execution__V2__Digest *d,
                                 struct blob_key *k);

/* True for a request's digest_function field that ringcas serves (unset or SHA-256). */
bool rpc_digest_fn_is_served(int digest_function);

#endif /* RINGCAS_RPC_DIGEST_H */
