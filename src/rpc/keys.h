/*
 * The 32-byte engine keys ringcas derives for entries that are not content-addressed. The
 * engine treats an AC key as opaque bytes, so each kind of entry hashes its name with its own
 * domain prefix (the NUL after each part keeps "ab"+"c" apart from "a"+"bc"):
 *
 *   action cache    SHA-256("ringcas/ac\0" || instance || "\0" || action hash (32 bytes))
 *   HTTP plain key  SHA-256("ringcas/http\0" || path)
 *
 * The action cache key is the one gRPC's ActionCache and HTTP's <prefix>/ac/<hash> share, so
 * an entry written through one protocol under instance "x" is read through the other with
 * instance name "x" (HTTP prefix "/x"). docs/http.md and docs/grpc.md describe both.
 */
#ifndef RINGCAS_RPC_KEYS_H
#define RINGCAS_RPC_KEYS_H

#include <stddef.h>
#include <stdint.h>

#define RPC_KEY_SIZE     32
#define RPC_INSTANCE_MAX 4096 /* bytes of an instance name */
#define RPC_KEY_PATH_MAX 4096 /* bytes of an HTTP path used as a key */

/*
 * Writes the action cache key of <hash> (the action digest's 32 hash bytes) under instance
 * <instance> (<instance_len> <= RPC_INSTANCE_MAX bytes, not NUL-terminated) into <out>.
 */
void rpc_keys_ac(const char *instance, size_t instance_len, const uint8_t hash[RPC_KEY_SIZE],
                 uint8_t out[RPC_KEY_SIZE]);

/* Writes the key of HTTP path <path> (<path_len> <= RPC_KEY_PATH_MAX bytes) into <out>. */
void rpc_keys_http(const char *path, size_t path_len, uint8_t out[RPC_KEY_SIZE]);

#endif /* RINGCAS_RPC_KEYS_H */
