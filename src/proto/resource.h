/*
 * ByteStream resource names of REAPI v2 (remote_execution.proto, "ContentAddressableStorage"):
 *
 *   read:  [{instance}/]blobs/{digest_function/}{hash}/{size}
 *          [{instance}/]compressed-blobs/{compressor}/{digest_function/}{hash}/{size}
 *   write: [{instance}/]uploads/{uuid}/blobs/{digest_function/}{hash}/{size}{/metadata}
 *          [{instance}/]uploads/{uuid}/compressed-blobs/{compressor}/{digest_function/}
 *                                                           {hash}/{size}{/metadata}
 *
 * The instance is every segment before the first keyword (`blobs`, `compressed-blobs`,
 * `uploads`), possibly none. The digest-function segment is absent for SHA-256 (the only
 * function ringcas serves; REAPI says it MUST be omitted for SHA-256 and is inferred from the
 * hash's length); a present one names a function ringcas does not serve. The one compressor
 * is `zstd`.
 */
#ifndef RINGCAS_PROTO_RESOURCE_H
#define RINGCAS_PROTO_RESOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

#define PROTO_SHA256_SIZE 32u

enum proto_compressor {
    PROTO_COMPRESSOR_IDENTITY = 0, /* numbered as REAPI's Compressor.Value */
    PROTO_COMPRESSOR_ZSTD = 1,
};

struct proto_resource {
    const char *instance;            /* inside the name; "" when absent */
    size_t instance_len;             /* bytes */
    const char *uuid;                /* write names: inside the name */
    size_t uuid_len;                 /* bytes; 0 for read names */
    uint8_t compressor;              /* enum proto_compressor */
    uint8_t hash[PROTO_SHA256_SIZE]; /* the (uncompressed) blob's SHA-256 */
    uint64_t size;                   /* the (uncompressed) blob's size, <= INT64_MAX */
};

/*
 * Parses <name>/<len> as a read name (<write> false) or a write name (<write> true) into
 * <out>, whose spans point into <name>. Returns 0, or:
 *   -EINVAL  malformed: a missing or empty segment, a bad hash or size, trailing segments on
 *            a read name, a keyword where a value is expected;
 *   -ENOTSUP well formed but not served: a digest-function segment (sha256 too, which REAPI
 *            says to omit) or a hash of another length, a compressor other than zstd.
 * <why> receives a static description of the problem.
 */
MUST_CHECK int proto_resource_parse(const char *name, size_t len, bool write,
                                    struct proto_resource *out, const char **why);

/*
 * Parses a Digest's hash (64 hex digits) and size (>= 0) into <hash>. Returns 0, -EINVAL
 * (malformed) or -ENOTSUP (a hash of another length: another digest function).
 */
MUST_CHECK int proto_resource_digest(const char *hex, size_t hex_len, int64_t size,
                                     uint8_t hash[PROTO_SHA256_SIZE]);

#endif /* RINGCAS_PROTO_RESOURCE_H */
