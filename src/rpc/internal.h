/*
 * What the files of src/rpc share: the server-wide configuration, the per-core state and the
 * connection every protocol starts from. Only src/rpc and its tests include this header.
 */
#ifndef RINGCAS_RPC_INTERNAL_H
#define RINGCAS_RPC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/counter.h"
#include "base/list.h"
#include "blob/store.h"
#include "proto/alloc.h"
#include "ring/conn.h"
#include "ring/core.h"
#include "ring/timer.h"
#include "rpc/metrics.h"
#include "rpc/server.h"

struct blob_core;
struct rpc_access_log;
struct rpc_call;

/*
 * Live counters of the HTTP/2 and gRPC layer, per core (X-macro as RING_COUNTERS): gauges
 * return to zero when the core is idle, which tests assert after every scenario. Rendered by
 * GET /metrics as ringcas_<name> (a counter with _total) through rpc_counters_sources().
 */
#define RPC_COUNTERS(X)                                                                            \
    X(h2_conns, gauge, "HTTP/2 connections open")                                                  \
    X(h2_streams, gauge, "HTTP/2 request streams open")                                            \
    X(grpc_calls, gauge, "gRPC calls alive (streams closed but still releasing included)")         \
    X(grpc_segs, gauge, "gRPC response pieces queued or in a send")                                \
    X(grpc_slices, gauge, "received pieces queued while the engine holds an upload's input")       \
    X(grpc_pins, gauge, "engine operations a call waits for that cannot be cancelled")             \
    X(bs_uploads_parked, gauge, "ByteStream uploads kept for resumption")                          \
    X(bs_readers, gauge, "ByteStream and batch readers open")                                      \
    X(bs_uploads, gauge, "ByteStream and batch uploads open")                                      \
    X(upload_waiters, gauge,                                                                       \
      "uploads (HTTP PUT, ByteStream Write) waiting for another upload of their blob")             \
    X(read_waiters, gauge,                                                                         \
      "downloads (HTTP GET, ByteStream Read) waiting for the disk queue or read memory")           \
    X(h2_refused_streams, counter, "streams refused: too many calls alive on the connection")      \
    X(h2_header_overflows, counter, "requests answered 431: headers over the limit")               \
    X(h2_glitches, counter, "invalid frames received")                                             \
    X(h2_goaways, counter, "connections sent GOAWAY (drain or error)")                             \
    X(h2_protocol_errors, counter, "connections closed on an HTTP/2 error")                        \
    X(h2_recv_yields, counter, "receives paused: input held for the engine, buffers low")          \
    X(grpc_oversize, counter, "messages refused over the size limit")                              \
    X(grpc_deadlines, counter, "calls ended by their grpc-timeout")                                \
    X(grpc_stalls, counter, "calls ended: no request data within --read-timeout")                  \
    X(grpc_send_stalls, counter, "streams reset: the client's window closed for --write-timeout")  \
    X(grpc_cancels, counter, "calls cancelled by the client or a closed connection")               \
    X(grpc_flushes, counter, "sends of HTTP/2 output")                                             \
    X(grpc_bytes_zero_copy, counter, "response bytes sent from service memory without a copy")     \
    X(upload_waits, counter, "uploads that waited for another upload of their blob (once each)")   \
    X(read_waits, counter,                                                                         \
      "downloads that waited for the disk queue or read memory (once per piece waited for)")

#define RPC_COUNTER_FIELD(name, kind, help) struct base_counter name;

struct rpc_counters {
    RPC_COUNTERS(RPC_COUNTER_FIELD)
};

/* Server-wide settings, fixed before the cores start; read by every core. */
struct rpc_config {
    struct rpc_server_options opts; /* what the operator asked for */
    struct blob_store *store;       /* the storage engine, shared by every core */
    uint32_t read_timeout_ms;       /* per connection receive */
    uint32_t write_timeout_ms;      /* per connection send progress */
    uint32_t bs_parked_idle_ms;     /* a parked ByteStream upload waits this long for its
                                       client (RPC_BS_PARKED_IDLE_MS; tests shorten it) */
    uint32_t core_count;            /* cores the server runs */
    struct rpc_core **cores;        /* core_count entries, each published (release store) by
                                       its core_init; other cores load them with acquire */
    const struct rpc_metrics_source *sources; /* other modules' counters for /metrics */
    size_t source_count;                      /* entries in sources */
    struct rpc_access_log *access_log;        /* --access-log, or NULL */
};

/*
 * The slowest a client may move a body, either way, averaged over each read (or write)
 * timeout: HTTP/1.1 request bodies (h1.c too_slow), gRPC requests and gRPC responses held by
 * the client's window (call.c). A client that moves data at all, on any link, is far above
 * it; one that trickles a byte now and then, which every single receive's timeout lets
 * through, is not.
 */
#define RPC_MIN_RATE 1024u /* bytes a second */

/* The bytes a client must move within one timeout of timeout_ms at RPC_MIN_RATE. */
static inline uint64_t rpc_min_bytes(uint64_t timeout_ms)
{
    return timeout_ms * RPC_MIN_RATE / 1000;
}

/* Freed small blocks each core's nghttp2 and message allocators keep for reuse (bytes). */
#define RPC_MEM_IDLE_MAX (2u << 20)

/* The main thread gives free heap memory back every RPC_HEAP_TRIM_PERIOD_MS once at least
 * RPC_HEAP_TRIM_MIN bytes are free (src/rpc/server.c wait_signals). */
#define RPC_HEAP_TRIM_PERIOD_MS 5000u
#define RPC_HEAP_TRIM_MIN       (32u << 20)

/* One core's protocol state; created by the core_init hook on the core's thread. */
struct rpc_core {
    struct ring_core *ring;          /* this core's loop */
    const struct rpc_config *cfg;    /* shared, read-only */
    uint32_t conns_open;             /* rpc connections alive on this core */
    struct rpc_metrics metrics;      /* this core's request metrics */
    struct rpc_counters counters;    /* RPC_COUNTERS */
    struct proto_alloc h2_mem;       /* nghttp2's memory (nghttp2_mem) */
    struct proto_alloc pb_mem;       /* protobuf-c's memory and gRPC message buffers */
    ProtobufCAllocator pb;           /* protobuf-c's allocator over pb_mem */
    struct blob_core *blob;          /* this core's storage engine; NULL without a store */
    void *bytestream;                /* ByteStream's per-core state (parked uploads) */
    struct rpc_call *call_pool;      /* free calls for reuse (rpc_call.pool_next) */
    uint32_t call_pool_count;        /* entries in call_pool */
    struct base_list watched;        /* struct rpc_call.watch_link: dispatched calls */
    struct base_list msg_in_feed;    /* struct rpc_call.msg_link: unary requests lying in the
                                        receive buffer being fed, waiting for END_STREAM */
    struct ring_owner owner;         /* the stall check's op */
    struct ring_timer stall;         /* ends the calls whose client stopped sending or reading */
    struct ring_task stall_retry;    /* arms <stall> once an op is free (the table was full) */
    bool quiescing;                  /* the stall check and the deadlines are off */
    struct rpc_call **deadlines;     /* calls with a grpc-timeout: a min-heap by deadline_ns */
    uint32_t deadlines_len;          /* entries in <deadlines> */
    uint32_t deadlines_cap;          /* its capacity */
    struct ring_timer deadline;      /* fires for the earliest deadline, at most 100 ms ahead */
    struct ring_task deadline_retry; /* arms <deadline> once an op is free (the table was full) */
    uint64_t refused_log_ns;         /* when a refused connection was last logged */
};

/*
 * The counters of the rpc layer as metrics sources (RPC_COUNTERS and the allocators), for
 * GET /metrics: <cfg>'s cores, read from any thread. Returns the number of sources written
 * into <out> (at most <max>).
 */
size_t rpc_counters_sources(const struct rpc_config *cfg, struct rpc_metrics_source *out,
                            size_t max);

/*
 * A connection as accepted: the first bytes decide its protocol. The HTTP/2 client preface
 * ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", RFC 9113 §3.4) selects HTTP/2; anything else is HTTP/1.1.
 * The chosen protocol takes the connection over with rpc_h2_start() or rpc_h1_start(): it
 * replaces conn.ops with its own callbacks and keeps its state in <proto>.
 */
struct rpc_conn {
    struct ring_conn conn; /* first member: ring callbacks cast back to rpc_conn */
    struct rpc_core *rc;   /* the core's protocol state */
    void *proto;           /* the protocol's per-connection state */
    uint8_t sniff[24];     /* the first bytes, while fewer than the preface arrived */
    uint8_t sniff_len;     /* bytes in sniff[] */
    bool ops_only;         /* accepted past --max-connections, into the probe slots: answers
                              /healthz, /readyz and /metrics only (rpc_conn_accept) */
    char *log_peer;        /* the client's address for the access log, read once; or NULL */
};

/* The client's address for the access log ("127.0.0.1:40312"), read from the socket the first
 * time and kept for the connection's life: a request that ends with its connection closed is
 * logged after the socket can no longer say. */
const char *rpc_conn_log_peer(struct rpc_conn *c);

/*
 * Connections a core accepts past --max-connections for the operations endpoints only: a
 * kubelet's liveness probe on /healthz must be answered while clients hold every connection,
 * or a busy pod is restarted for being busy (docs/operations.md "Connections"). Such a
 * connection answers one request; anything but /healthz, /readyz or /metrics gets 503, and
 * an HTTP/2 client is closed. Each takes an op of the table, as any connection does, so
 * RPC_CONNS_MAX plus these stays well under a quarter of it.
 */
#define RPC_CONNS_OPS_SLOTS 16u

#define RPC_H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define RPC_H2_PREFACE_LEN 24

/*
 * Takes <c> over as HTTP/2 or HTTP/1.1. <prefix>/<prefix_len> are bytes already received and
 * consumed from earlier buffers (at most 24, copied by the callee), then <len> bytes of
 * receive buffer <bid> follow (one reference passes to the callee; len may be 0 with
 * bid RING_CONN_NO_BUF when the peer closed). The callee sets c->conn.ops and c->proto.
 */
void rpc_h2_start(struct rpc_conn *c, const uint8_t *prefix, uint32_t prefix_len, uint16_t bid,
                  uint32_t len);
void rpc_h1_start(struct rpc_conn *c, const uint8_t *prefix, uint32_t prefix_len, uint16_t bid,
                  uint32_t len);

/* Accepts socket <fd> on <core> as a new rpc connection (the ring's on_accept hook). */
void rpc_conn_accept(struct ring_core *core, int fd, void *arg);

/* Releases a connection's memory; the protocols' on_close ends with it. */
void rpc_conn_free(struct rpc_conn *c);

#endif /* RINGCAS_RPC_INTERNAL_H */
