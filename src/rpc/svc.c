/* The method table: every gRPC method ringcas serves. */
#include "rpc/svc.h"

#include <string.h>

static const struct rpc_method *const methods[] = {
    &rpc_svc_health_check,     &rpc_svc_capabilities_get, &rpc_svc_cas_find_missing,
    &rpc_svc_cas_batch_update, &rpc_svc_cas_batch_read,   &rpc_svc_cas_get_tree,
    &rpc_svc_ac_get,           &rpc_svc_ac_update,        &rpc_svc_bs_read,
    &rpc_svc_bs_write,         &rpc_svc_bs_query,
};

const uint8_t rpc_zstd_empty_frame[RPC_ZSTD_EMPTY_FRAME_SIZE] = {
    0x28, 0xb5, 0x2f, 0xfd, /* magic */
    0x20,                   /* Single_Segment_Flag, Frame_Content_Size 1 byte */
    0x00,                   /* content size 0 */
    0x01, 0x00, 0x00,       /* last block, raw, 0 bytes */
};

static const char *const services[] = {
    "grpc.health.v1.Health",
    "build.bazel.remote.execution.v2.Capabilities",
    "build.bazel.remote.execution.v2.ContentAddressableStorage",
    "build.bazel.remote.execution.v2.ActionCache",
    "google.bytestream.ByteStream",
};

const struct rpc_method *rpc_svc_lookup(const char *path)
{
    for (size_t i = 0; i < ARRAY_LEN(methods); i++) {
        if (strcmp(methods[i]->path, path) == 0) return methods[i];
    }
    return NULL;
}

bool rpc_svc_is_known_service(const char *name, size_t len)
{
    if (len == 0) return true; /* "": the server as a whole */
    for (size_t i = 0; i < ARRAY_LEN(services); i++) {
        if (strlen(services[i]) == len && memcmp(services[i], name, len) == 0) return true;
    }
    return false;
}
