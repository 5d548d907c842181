/*
 * REAPI v2 unary calls the client needs, on top of client/unary.h:
 * Capabilities/GetCapabilities and ContentAddressableStorage/FindMissingBlobs.
 */
#ifndef RINGCAS_CLIENT_CAS_H
#define RINGCAS_CLIENT_CAS_H

#include <stddef.h>

#include "client/digest.h"
#include "client/unary.h"

/* Starts GetCapabilities for <instance>; u->response is a ServerCapabilities. As
 * client_unary_start. */
MUST_CHECK int client_cas_capabilities_start(struct client_unary *u, struct client_conn *conn,
                                             const char *instance,
                                             const struct client_call_options *o);

/*
 * Starts FindMissingBlobs for the <count> digests at <digests> under <instance>;
 * u->response is a FindMissingBlobsResponse. As client_unary_start, plus -EINVAL when
 * <count> is over CLIENT_CAS_FIND_MAX.
 */
#define CLIENT_CAS_FIND_MAX 10000u
MUST_CHECK int client_cas_find_missing_start(struct client_unary *u, struct client_conn *conn,
                                             const char *instance,
                                             const struct client_digest *digests, size_t count,
                                             const struct client_call_options *o);

/*
 * After a successful FindMissingBlobs: true when <d> is listed missing. A digest the server
 * sent malformed never matches.
 */
bool client_cas_is_missing(const struct client_unary *u, const struct client_digest *d);

/* One blob of a BatchUpdateBlobs request. */
struct client_batch_blob {
    struct client_digest digest; /* of the uncompressed blob */
    const uint8_t *data;         /* the bytes as sent: compressed when <zstd> */
    size_t len;                  /* their count */
    bool zstd;                   /* <data> is a zstd frame of the blob */
};

/*
 * Starts BatchUpdateBlobs of the <count> blobs at <blobs> (their data is copied into the
 * request, so it may go once this returns); u->response is a BatchUpdateBlobsResponse. As
 * client_unary_start, plus -EINVAL when <count> is over CLIENT_CAS_FIND_MAX. Keep a batch
 * under the server's max_batch_total_size_bytes (ringcas: 4 MiB).
 */
MUST_CHECK int client_cas_batch_update_start(struct client_unary *u, struct client_conn *conn,
                                             const char *instance,
                                             const struct client_batch_blob *blobs, size_t count,
                                             const struct client_call_options *o);

/*
 * After a successful BatchUpdateBlobs: the status the server gave <d> (0 OK), and its
 * message in *<message> (static "" when none; valid until the unary call is restarted).
 * A blob the response does not mention is UNKNOWN (2).
 */
int client_cas_batch_status(const struct client_unary *u, const struct client_digest *d,
                            const char **message);

#endif /* RINGCAS_CLIENT_CAS_H */
