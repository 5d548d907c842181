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

#endif /* RINGCAS_CLIENT_CAS_H */
