/*
 * The gRPC methods ringcas serves, looked up by :path. Each service file (svc_*.c) defines
 * its methods' struct rpc_method; svc.c lists them.
 */
#ifndef RINGCAS_RPC_SVC_H
#define RINGCAS_RPC_SVC_H

#include "rpc/call.h"

/* The method for <path> ("/package.Service/Method"), or NULL. */
const struct rpc_method *rpc_svc_lookup(const char *path);

/* True when <name> is a service this server implements (for Health/Check). */
bool rpc_svc_is_known_service(const char *name, size_t len);

extern const struct rpc_method rpc_svc_health_check;
extern const struct rpc_method rpc_svc_capabilities_get;
extern const struct rpc_method rpc_svc_cas_find_missing;
extern const struct rpc_method rpc_svc_cas_batch_update;
extern const struct rpc_method rpc_svc_cas_batch_read;
extern const struct rpc_method rpc_svc_cas_get_tree;
extern const struct rpc_method rpc_svc_ac_get;
extern const struct rpc_method rpc_svc_ac_update;
extern const struct rpc_method rpc_svc_bs_read;
extern const struct rpc_method rpc_svc_bs_write;
extern const struct rpc_method rpc_svc_bs_query;

/*
 * A zstd frame with no content (RFC 8878 §3.1.1: the magic number, a single-segment header
 * whose 1-byte content size is 0, one empty last raw block). A compressed answer that holds
 * no blob bytes sends it: zero bytes are no zstd stream (`zstd -d`: "unexpected end of file").
 */
#define RPC_ZSTD_EMPTY_FRAME_SIZE 9u
extern const uint8_t rpc_zstd_empty_frame[RPC_ZSTD_EMPTY_FRAME_SIZE];

struct rpc_core;

/* How long an upload parked for resumption waits for its client (docs/grpc.md). */
#define RPC_BS_PARKED_IDLE_MS 60000u

/* Server hook core_quiesce: aborts the uploads kept for resumption and stops their sweep. */
void rpc_svc_bytestream_quiesce(struct rpc_core *rc);

/* Server hook core_deinit: frees ByteStream's per-core state. */
void rpc_svc_bytestream_deinit(struct rpc_core *rc);

#endif /* RINGCAS_RPC_SVC_H */
