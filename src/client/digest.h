/*
 * Blob digests on the client: SHA-256 (OpenSSL EVP) of a buffer, of a file (one pass over
 * an mmap of it) or as a stream, and the "HASH/SIZE" text form the CLI reads and prints.
 */
#ifndef RINGCAS_CLIENT_DIGEST_H
#define RINGCAS_CLIENT_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

#define CLIENT_HASH_SIZE ((size_t)32)
/* "HASH/SIZE": 64 hex digits, '/', up to 19 digits, NUL. */
#define CLIENT_DIGEST_TEXT_MAX (2 * CLIENT_HASH_SIZE + 1 + 20 + 1)

struct client_digest {
    uint8_t hash[CLIENT_HASH_SIZE]; /* SHA-256 of the uncompressed blob */
    uint64_t size;                  /* bytes of the uncompressed blob, <= INT64_MAX */
};

/*
 * Parses "HASH/SIZE" (64 hex digits, lower or upper case; a decimal size) into <out>.
 * Returns 0 or -EINVAL with <why> set to a static description.
 */
MUST_CHECK int client_digest_parse(const char *text, struct client_digest *out, const char **why);

/* Writes "hash/size" (lower-case hex) into <out>, which has CLIENT_DIGEST_TEXT_MAX bytes. */
void client_digest_format(const struct client_digest *d, char out[CLIENT_DIGEST_TEXT_MAX]);

/* True when <a> and <b> name the same blob. */
bool client_digest_equal(const struct client_digest *a, const struct client_digest *b);

/* The digest of <len> bytes at <p>. */
void client_digest_buf(const void *p, size_t len, struct client_digest *out);

/*
 * The digest of the regular file open on <fd>, read in one pass (the file's size is taken
 * from fstat; bytes past it are not read). Returns 0, -EISDIR / -EINVAL (not a regular
 * file), -EILSEQ (the file ended before that size: it got shorter while it was hashed),
 * -ENOMEM, or the -errno of fstat or pread.
 */
MUST_CHECK int client_digest_fd(int fd, struct client_digest *out);

/* A SHA-256 in progress. */
struct client_sha256 {
    void *ctx; /* EVP_MD_CTX */
};

/* Returns 0 or -ENOMEM. */
MUST_CHECK int client_sha256_init(struct client_sha256 *h);
void client_sha256_update(struct client_sha256 *h, const void *p, size_t len);
/* Writes the hash and starts over (the context stays usable). */
void client_sha256_final(struct client_sha256 *h, uint8_t out[CLIENT_HASH_SIZE]);
/* NULL-safe: releases the context. */
void client_sha256_deinit(struct client_sha256 *h);

#endif /* RINGCAS_CLIENT_DIGEST_H */
