/*
 * build.bazel.remote.execution.v2.Capabilities/GetCapabilities, the same answer for every
 * instance name (DESIGN.md, "Spec decisions"): SHA-256; zstd for ByteStream and for batch
 * uploads; a 4 MiB batch limit; the largest CAS blob the store takes; the action cache
 * accepts updates; API versions 2.0 to 2.3.
 * Execution is not served, so execution_capabilities is absent.
 */
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/internal.h"
#include "rpc/svc.h"

/* The batch limit advertised: total request/response size of one batch call. */
#define CAPABILITIES_BATCH_MAX (4 << 20)

static void get_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    ProtobufCAllocator *a = rpc_call_pb_allocator(c);
    Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest *req = rpc_call_unpack(
        c, &build__bazel__remote__execution__v2__get_capabilities_request__descriptor, msg, len, 0,
        NULL);
    if (!req) return;
    build__bazel__remote__execution__v2__get_capabilities_request__free_unpacked(req, a);

    Build__Bazel__Remote__Execution__V2__DigestFunction__Value digests[] = {
        BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST_FUNCTION__VALUE__SHA256,
    };
    Build__Bazel__Remote__Execution__V2__Compressor__Value compressors[] = {
        BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD,
    };
    Build__Bazel__Remote__Execution__V2__ActionCacheUpdateCapabilities update =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_CACHE_UPDATE_CAPABILITIES__INIT;
    update.update_enabled = true;
    Build__Bazel__Remote__Execution__V2__CacheCapabilities cache =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__CACHE_CAPABILITIES__INIT;
    cache.n_digest_functions = ARRAY_LEN(digests);
    cache.digest_functions = digests;
    cache.action_cache_update_capabilities = &update;
    cache.max_batch_total_size_bytes = CAPABILITIES_BATCH_MAX;
    /* REAPI 2.3: 0 would say "no limit", and a larger upload would fail only at its start. */
    cache.max_cas_blob_size_bytes = (int64_t)blob_cas_size_max(rpc_call_blob(c));
    cache.symlink_absolute_path_strategy =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__SYMLINK_ABSOLUTE_PATH_STRATEGY__VALUE__ALLOWED;
    cache.n_supported_compressors = ARRAY_LEN(compressors);
    cache.supported_compressors = compressors;
    cache.n_supported_batch_update_compressors = ARRAY_LEN(compressors);
    cache.supported_batch_update_compressors = compressors;
    /* The _init functions, not the INIT macros: those cast a const string (-Wcast-qual). */
    Build__Bazel__Semver__SemVer low;
    build__bazel__semver__sem_ver__init(&low);
    low.major = 2;
    Build__Bazel__Semver__SemVer high;
    build__bazel__semver__sem_ver__init(&high);
    high.major = 2;
    high.minor = 3;
    Build__Bazel__Remote__Execution__V2__ServerCapabilities caps =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__SERVER_CAPABILITIES__INIT;
    caps.cache_capabilities = &cache;
    caps.low_api_version = &low;
    caps.high_api_version = &high;
    if (rpc_call_send_message(c, &caps.base) < 0) {
        rpc_call_finish_err(c, -ENOMEM, NULL);
        return;
    }
    rpc_call_finish(c, PROTO_STATUS_OK, NULL);
}

const struct rpc_method rpc_svc_capabilities_get = {
    .path = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
    .route = RPC_ROUTE_GRPC_GET_CAPABILITIES,
    .on_message = get_on_message,
};
