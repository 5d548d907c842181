/*
 * Digests of uploads, hashed as they arrive: OpenSSL EVP, chosen by the key's digest
 * function. SHA-256 (REAPI DigestFunction 1) is the one built in; others add a case to
 * blob_digest_md() and keep 32-byte hashes or grow BLOB_HASH_SIZE.
 */
#ifndef RINGCAS_BLOB_DIGEST_H
#define RINGCAS_BLOB_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "blob/store.h"

struct evp_md_ctx_st;

struct blob_digest {
    struct evp_md_ctx_st *ctx; /* owned; NULL before init and after deinit */
};

/* True when <fn> (enum blob_digest_fn) is supported. */
bool blob_digest_is_supported(uint8_t fn);

/* Starts a digest of function <fn>. Returns 0, -EINVAL (unknown function) or -ENOMEM. */
MUST_CHECK int blob_digest_init(struct blob_digest *d, uint8_t fn);

/* Adds <len> bytes at <p>. */
void blob_digest_update(struct blob_digest *d, const void *p, size_t len);

/* Writes the digest into <out>; the digest must be deinitialised after. */
void blob_digest_final(struct blob_digest *d, uint8_t out[BLOB_HASH_SIZE]);

/* Frees the context. Safe on a digest never initialised (zeroed) or already freed. */
void blob_digest_deinit(struct blob_digest *d);

/* One-shot digest of <len> bytes. Returns 0 or -errno as blob_digest_init. */
MUST_CHECK int blob_digest_oneshot(uint8_t fn, const void *p, size_t len,
                                   uint8_t out[BLOB_HASH_SIZE]);

#endif /* RINGCAS_BLOB_DIGEST_H */
