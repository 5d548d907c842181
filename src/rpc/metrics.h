/*
 * Request metrics of the protocols, per core, and their Prometheus text rendering.
 *
 * Each core owns one struct rpc_metrics (in its struct rpc_core); only that core's thread
 * writes it, any thread reads it (relaxed atomics, base/counter.h). GET /metrics renders every
 * core's metrics, the ring's counters (RING_COUNTERS) and any other module's counters
 * registered with rpc_metrics_add_source, each with a core="N" label.
 *
 * Routes are gRPC methods and HTTP/1.1 routes, listed once in RPC_ROUTES.
 */
#ifndef RINGCAS_RPC_METRICS_H
#define RINGCAS_RPC_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "base/counter.h"

/* X(id, protocol, name) */
#define RPC_ROUTES(X)                                                                              \
    X(GRPC_GET_CAPABILITIES, "grpc",                                                               \
      "build.bazel.remote.execution.v2.Capabilities/GetCapabilities")                              \
    X(GRPC_FIND_MISSING, "grpc",                                                                   \
      "build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs")                \
    X(GRPC_BATCH_UPDATE, "grpc",                                                                   \
      "build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs")                \
    X(GRPC_BATCH_READ, "grpc",                                                                     \
      "build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs")                  \
    X(GRPC_GET_TREE, "grpc", "build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree")  \
    X(GRPC_GET_ACTION_RESULT, "grpc",                                                              \
      "build.bazel.remote.execution.v2.ActionCache/GetActionResult")                               \
    X(GRPC_UPDATE_ACTION_RESULT, "grpc",                                                           \
      "build.bazel.remote.execution.v2.ActionCache/UpdateActionResult")                            \
    X(GRPC_BS_READ, "grpc", "google.bytestream.ByteStream/Read")                                   \
    X(GRPC_BS_WRITE, "grpc", "google.bytestream.ByteStream/Write")                                 \
    X(GRPC_BS_QUERY, "grpc", "google.bytestream.ByteStream/QueryWriteStatus")                      \
    X(GRPC_HEALTH_CHECK, "grpc", "grpc.health.v1.Health/Check")                                    \
    X(GRPC_UNKNOWN, "grpc", "unknown")                                                             \
    X(HTTP_GET_CAS, "http", "GET /cas")                                                            \
    X(HTTP_HEAD_CAS, "http", "HEAD /cas")                                                          \
    X(HTTP_PUT_CAS, "http", "PUT /cas")                                                            \
    X(HTTP_GET_AC, "http", "GET /ac")                                                              \
    X(HTTP_HEAD_AC, "http", "HEAD /ac")                                                            \
    X(HTTP_PUT_AC, "http", "PUT /ac")                                                              \
    X(HTTP_GET_KV, "http", "GET /key")                                                             \
    X(HTTP_HEAD_KV, "http", "HEAD /key")                                                           \
    X(HTTP_PUT_KV, "http", "PUT /key")                                                             \
    X(HTTP_METRICS, "http", "GET /metrics")                                                        \
    X(HTTP_HEALTHZ, "http", "GET /healthz")                                                        \
    X(HTTP_READYZ, "http", "GET /readyz")                                                          \
    X(HTTP_OTHER, "http", "other")

#define RPC_ROUTE_ENUM(id, proto, name) RPC_ROUTE_##id,

enum rpc_route {
    RPC_ROUTES(RPC_ROUTE_ENUM) RPC_ROUTE_COUNT
};

/*
 * Status slots counted per route: the 17 gRPC codes (0..16) for gRPC routes; for HTTP routes
 * the status codes below, and "other" for the rest. 499 is not sent: it counts a request the
 * client's close cut short (as nginx counts it).
 */
#define RPC_GRPC_STATUS_COUNT 17
/* The statuses in one block, not one per line. */
/* clang-format off */
#define RPC_HTTP_STATUSES(X)                                                                       \
    X(200) X(201) X(204) X(206) X(304) X(400) X(404) X(405) X(408) X(411) X(412) X(413) X(414)     \
    X(415) X(416) X(417) X(431) X(499) X(500) X(501) X(503) X(505) X(507)
/* clang-format on */
#define RPC_HTTP_STATUS_ENUM(code) RPC_HTTP_STATUS_SLOT_##code,

enum rpc_http_status_slot {
    RPC_HTTP_STATUSES(RPC_HTTP_STATUS_ENUM) RPC_HTTP_STATUS_SLOT_OTHER
};

#define RPC_HTTP_STATUS_COUNT (RPC_HTTP_STATUS_SLOT_OTHER + 1)
#define RPC_STATUS_SLOTS                                                                           \
    (RPC_GRPC_STATUS_COUNT > RPC_HTTP_STATUS_COUNT ? RPC_GRPC_STATUS_COUNT : RPC_HTTP_STATUS_COUNT)

/* Latency histogram upper bounds in microseconds (Prometheus "le"), then +Inf. */
#define RPC_LATENCY_BUCKETS_US                                                                     \
    {                                                                                              \
        50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, \
            2500000, 10000000                                                                      \
    }
#define RPC_LATENCY_BUCKET_COUNT 17 /* 16 bounds + Inf */

struct rpc_route_metrics {
    struct base_counter requests;                          /* finished requests */
    struct base_counter status[RPC_STATUS_SLOTS];          /* finished, by status slot */
    struct base_counter latency[RPC_LATENCY_BUCKET_COUNT]; /* by bucket (not cumulative) */
    struct base_counter latency_sum_us;                    /* sum of latencies, µs */
    struct base_counter bytes_in;                          /* request bytes (bodies) */
    struct base_counter bytes_out;                         /* response bytes (bodies) */
    struct base_counter in_flight;                         /* started and not finished */
};

struct rpc_metrics {
    struct rpc_route_metrics routes[RPC_ROUTE_COUNT]; /* indexed by enum rpc_route */
};

/* Counts a request of <route> as started (in flight). Core thread. */
void rpc_metrics_begin(struct rpc_metrics *m, enum rpc_route route);

/*
 * Counts a request of <route> as finished with <status> (a gRPC code for gRPC routes, an HTTP
 * status code for HTTP routes), <latency_ns> since it began, and its body bytes. Every
 * rpc_metrics_begin is matched by exactly one rpc_metrics_end. Core thread.
 */
void rpc_metrics_end(struct rpc_metrics *m, enum rpc_route route, int status, uint64_t latency_ns,
                     uint64_t bytes_in, uint64_t bytes_out);

/* The route's name, e.g. "google.bytestream.ByteStream/Read" or "GET /cas". */
const char *rpc_route_name(enum rpc_route route);

/*
 * Another module's counters, rendered with a core label as ringcas_<name> (a gauge),
 * ringcas_<name>_total (a counter), or ringcas_<stem>_seconds_total in seconds (a counter of
 * nanoseconds, named <stem>_ns), as Prometheus names them. <read> returns core <core>'s value
 * of counter <index> (0..count-1). A store-wide source sets <core0_only>: its figures are one
 * series each, core="0", with no zero series on the other cores for a min() or an alert on a
 * bare name to trip over. Register before the server starts.
 */
struct rpc_metrics_source {
    const char *const *names; /* without the ringcas_ prefix nor _total; see above */
    const char *const *kinds; /* "counter" or "gauge" per counter */
    const char *const *helps; /* one line each */
    size_t count;             /* entries in the arrays */
    uint64_t (*read)(void *ctx, uint32_t core, size_t index);
    void *ctx;
    bool core0_only; /* rendered for core 0 only (store-wide figures) */
};

/* What GET /metrics shows: <metrics>[i] and <ring_counters>[i] belong to core i. */
struct ring_counters;

struct rpc_metrics_view {
    uint32_t core_count;                        /* cores */
    struct rpc_metrics *const *metrics;         /* core_count entries */
    struct ring_counters *const *ring_counters; /* core_count entries */
    const struct rpc_metrics_source *sources;   /* other modules' counters */
    size_t source_count;                        /* entries in sources */
};

/*
 * Renders <view> as Prometheus text (version 0.0.4). Writes at most <size> bytes into <out>;
 * returns the length, or -EMSGSIZE when <size> is too small. Any thread.
 */
MUST_CHECK int rpc_metrics_render(char *out, size_t size, const struct rpc_metrics_view *view);

#endif /* RINGCAS_RPC_METRICS_H */
