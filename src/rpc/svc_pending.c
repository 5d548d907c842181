/*
 * The storage services until the engine (src/blob) is merged: each answers UNAVAILABLE, so
 * clients see a clear, retryable status instead of UNIMPLEMENTED.
 */
#include "rpc/svc.h"

static void pending_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    (void)msg;
    (void)len;
    rpc_call_finish(c, PROTO_STATUS_UNAVAILABLE, "storage engine not available in this build");
}

static int pending_begin(struct rpc_call *c, uint32_t len)
{
    (void)len;
    pending_on_message(c, NULL, 0);
    return -1;
}

#define PENDING(var, method_path, method_route)                                                    \
    const struct rpc_method var = {                                                                \
        .path = (method_path),                                                                     \
        .route = (method_route),                                                                   \
        .on_message = pending_on_message,                                                          \
    }

PENDING(rpc_svc_cas_find_missing,
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
        RPC_ROUTE_GRPC_FIND_MISSING);
PENDING(rpc_svc_cas_batch_update,
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
        RPC_ROUTE_GRPC_BATCH_UPDATE);
PENDING(rpc_svc_cas_batch_read,
        "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs",
        RPC_ROUTE_GRPC_BATCH_READ);
PENDING(rpc_svc_cas_get_tree, "/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree",
        RPC_ROUTE_GRPC_GET_TREE);
PENDING(rpc_svc_ac_get, "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
        RPC_ROUTE_GRPC_GET_ACTION_RESULT);
PENDING(rpc_svc_ac_update, "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
        RPC_ROUTE_GRPC_UPDATE_ACTION_RESULT);
PENDING(rpc_svc_bs_read, "/google.bytestream.ByteStream/Read", RPC_ROUTE_GRPC_BS_READ);
PENDING(rpc_svc_bs_query, "/google.bytestream.ByteStream/QueryWriteStatus",
        RPC_ROUTE_GRPC_BS_QUERY);

const struct rpc_method rpc_svc_bs_write = {
    .path = "/google.bytestream.ByteStream/Write",
    .route = RPC_ROUTE_GRPC_BS_WRITE,
    .streamed = true,
    .on_msg_begin = pending_begin,
};
