/*
 * Key derivation: one SHA-256 (OpenSSL) over a domain prefix and the entry's name, assembled
 * in a bounded stack buffer so no allocation but OpenSSL's own is made.
 */
#include "rpc/keys.h"

#include <string.h>

#include <openssl/evp.h>

#include "base/assert.h"

#define AC_DOMAIN   "ringcas/ac"   /* followed by its NUL */
#define HTTP_DOMAIN "ringcas/http" /* followed by its NUL */

static void sha256(const uint8_t *data, size_t len, uint8_t out[RPC_KEY_SIZE])
{
    unsigned out_len = 0;
    /* EVP_Digest fails only when OpenSSL cannot allocate or has no SHA-256: a broken host. */
    int ok = EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL);
    ASSERT(ok == 1);
    ASSERT(out_len == RPC_KEY_SIZE);
}

void rpc_keys_ac(const char *instance, size_t instance_len, const uint8_t hash[RPC_KEY_SIZE],
                 uint8_t out[RPC_KEY_SIZE])
{
    ASSERT(instance_len <= RPC_INSTANCE_MAX);
    uint8_t buf[sizeof(AC_DOMAIN) + RPC_INSTANCE_MAX + 1 + RPC_KEY_SIZE];
    size_t n = 0;
    memcpy(buf, AC_DOMAIN, sizeof(AC_DOMAIN)); /* with its NUL */
    n += sizeof(AC_DOMAIN);
    if (instance_len > 0) memcpy(buf + n, instance, instance_len);
    n += instance_len;
    buf[n++] = 0;
    memcpy(buf + n, hash, RPC_KEY_SIZE);
    n += RPC_KEY_SIZE;
    sha256(buf, n, out);
}

void rpc_keys_http(const char *path, size_t path_len, uint8_t out[RPC_KEY_SIZE])
{
    ASSERT(path_len <= RPC_KEY_PATH_MAX);
    uint8_t buf[sizeof(HTTP_DOMAIN) + RPC_KEY_PATH_MAX];
    memcpy(buf, HTTP_DOMAIN, sizeof(HTTP_DOMAIN));
    if (path_len > 0) memcpy(buf + sizeof(HTTP_DOMAIN), path, path_len);
    sha256(buf, sizeof(HTTP_DOMAIN) + path_len, out);
}
