/*
 * SHA-256 digests with OpenSSL's EVP interface (it picks the CPU's SHA extensions), and the
 * "HASH/SIZE" text form.
 */
#include "client/digest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "base/parse.h"
#include "proto/wire.h"

/* Bytes of a file read (and hashed) at a time. */
#define DIGEST_READ_SIZE (1u << 20)

int client_digest_parse(const char *text, struct client_digest *out, const char **why)
{
    const char *slash = strchr(text, '/');
    if (!slash) {
        *why = "expected HASH/SIZE";
        return -EINVAL;
    }
    size_t hex_len = (size_t)(slash - text);
    if (hex_len != 2 * CLIENT_HASH_SIZE) {
        *why = "HASH must be 64 hex digits (SHA-256)";
        return -EINVAL;
    }
    if (proto_hex_decode(text, hex_len, out->hash) < 0) {
        *why = "HASH must be 64 hex digits (SHA-256)";
        return -EINVAL;
    }
    uint64_t size;
    if (base_parse_u64(slash + 1, &size) < 0 || size > (uint64_t)INT64_MAX) {
        *why = "SIZE must be a decimal number of bytes";
        return -EINVAL;
    }
    out->size = size;
    return 0;
}

void client_digest_format(const struct client_digest *d, char out[CLIENT_DIGEST_TEXT_MAX])
{
    proto_hex_encode(d->hash, CLIENT_HASH_SIZE, out);
    (void)snprintf(out + 2 * CLIENT_HASH_SIZE, CLIENT_DIGEST_TEXT_MAX - 2 * CLIENT_HASH_SIZE,
                   "/%llu", (unsigned long long)d->size);
}

bool client_digest_equal(const struct client_digest *a, const struct client_digest *b)
{
    return a->size == b->size && memcmp(a->hash, b->hash, CLIENT_HASH_SIZE) == 0;
}

void client_digest_buf(const void *p, size_t len, struct client_digest *out)
{
    unsigned int n = 0;
    int ok = EVP_Digest(p, len, out->hash, &n, EVP_sha256(), NULL);
    /* Fails only without memory for a context or without SHA-256 in the library. */
    ASSERT(ok == 1 && n == CLIENT_HASH_SIZE);
    out->size = len;
}

int client_digest_fd(int fd, struct client_digest *out)
{
    struct stat st;
    if (fstat(fd, &st) == -1) return -errno;
    if (S_ISDIR(st.st_mode)) return -EISDIR;
    if (!S_ISREG(st.st_mode)) return -EINVAL;
    /*
     * Read, not mmap: a file that another process truncates while it is hashed (a log
     * rotated, a build output rewritten) must be an error to report, and through an mmap it
     * is a SIGBUS that kills the command.
     */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint8_t *buf = malloc(DIGEST_READ_SIZE);
    if (!buf) return -ENOMEM;
    struct client_sha256 h = { NULL }; /* deinit takes it even when init failed */
    int rc = client_sha256_init(&h);
    uint64_t size = (uint64_t)st.st_size;
    uint64_t off = 0;
    /* Bounded by the size fstat gave: each read makes progress or ends the loop. */
    while (rc == 0 && off < size) {
        size_t want = size - off < DIGEST_READ_SIZE ? (size_t)(size - off) : DIGEST_READ_SIZE;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n == -1 && errno == EINTR) continue;
        if (n == -1) {
            rc = -errno;
        } else if (n == 0) {
            rc = -EILSEQ; /* shorter than fstat said: it changed while it was hashed */
        } else {
            client_sha256_update(&h, buf, (size_t)n);
            off += (uint64_t)n;
        }
    }
    if (rc == 0) {
        client_sha256_final(&h, out->hash);
        out->size = size;
    }
    client_sha256_deinit(&h);
    free(buf);
    return rc;
}

int client_sha256_init(struct client_sha256 *h)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return -ENOMEM;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return -ENOMEM;
    }
    h->ctx = ctx;
    return 0;
}

void client_sha256_update(struct client_sha256 *h, const void *p, size_t len)
{
    int ok = EVP_DigestUpdate(h->ctx, p, len);
    ASSERT(ok == 1);
}

void client_sha256_final(struct client_sha256 *h, uint8_t out[CLIENT_HASH_SIZE])
{
    unsigned int n = 0;
    int ok = EVP_DigestFinal_ex(h->ctx, out, &n);
    ASSERT(ok == 1 && n == CLIENT_HASH_SIZE);
    ok = EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
    ASSERT(ok == 1);
}

void client_sha256_deinit(struct client_sha256 *h)
{
    if (!h || !h->ctx) return;
    EVP_MD_CTX_free(h->ctx);
    h->ctx = NULL;
}
