/*
 * REAPI v2 ByteStream resource names, as a client writes them (remote_execution.proto,
 * "ContentAddressableStorage"); only standard forms, so any REAPI server understands them:
 *
 *   read:  [{instance}/]blobs/{hash}/{size}
 *          [{instance}/]compressed-blobs/zstd/{hash}/{size}
 *   write: [{instance}/]uploads/{uuid}/blobs/{hash}/{size}
 *          [{instance}/]uploads/{uuid}/compressed-blobs/zstd/{hash}/{size}
 *
 * The digest-function segment is omitted: REAPI says so for SHA-256.
 */
#ifndef RINGCAS_CLIENT_RESOURCE_H
#define RINGCAS_CLIENT_RESOURCE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/assert.h"
#include "client/digest.h"

#define CLIENT_UUID_SIZE 37 /* 36 characters and a NUL */

/* Longest instance name accepted, bytes. */
#define CLIENT_INSTANCE_MAX 512

/*
 * Checks an instance name: "" (none), or '/'-separated non-empty segments none of which is a
 * REAPI keyword (blobs, uploads, actions, actionResults, operations, capabilities,
 * compressed-blobs), at most CLIENT_INSTANCE_MAX bytes. Returns 0 or -EINVAL with <why>.
 */
MUST_CHECK int client_resource_check_instance(const char *instance, const char **why);

/*
 * Writes the read name of <d> under <instance> into <out> (<size> bytes), compressed-blobs/
 * zstd when <zstd>. Returns its length, or -ENAMETOOLONG when it does not fit.
 */
MUST_CHECK int client_resource_read(char *out, size_t size, const char *instance,
                                    const struct client_digest *d, bool zstd);

/* Like client_resource_read for a write name with upload id <uuid>. */
MUST_CHECK int client_resource_write(char *out, size_t size, const char *instance, const char *uuid,
                                     const struct client_digest *d, bool zstd);

/* Writes a random (version 4) UUID, lower case, into <out>. */
void client_resource_uuid(char out[CLIENT_UUID_SIZE]);

#endif /* RINGCAS_CLIENT_RESOURCE_H */
