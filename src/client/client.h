/*
 * The client library's per-ring state: one struct client per ring_core (one thread), shared
 * by every connection and call on that ring. It holds the counting allocators that nghttp2,
 * protobuf-c and zstd allocate through, and the client's live counters.
 *
 * The calling thread creates the ring (ring_core_create, with client_core_options() for
 * sizes that suit a client), then client_init(), opens connections (client/conn.h) and
 * starts calls on them (client/call.h, put.h, get.h, unary.h). Everything is driven by
 * ring_core_tick() on that thread; client_wait() is the synchronous helper that ticks until
 * a flag is set. Nothing here is thread-safe, except reading the counters.
 */
#ifndef RINGCAS_CLIENT_CLIENT_H
#define RINGCAS_CLIENT_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "base/assert.h"
#include "base/counter.h"
#include "proto/alloc.h"
#include "ring/core.h"

/*
 * Live counters of one client, X(name, kind, help) as RING_COUNTERS: gauges return to zero
 * when every connection is closed and every call has completed, which tests assert.
 */
#define CLIENT_COUNTERS(X)                                                                         \
    X(conns, gauge, "connections opening or open (HTTP/2 and HTTP/1.1)")                           \
    X(calls, gauge, "calls started whose done callback has not run yet")                           \
    X(streams, gauge, "HTTP/2 streams open")                                                       \
    X(segs_in_send, gauge, "request pieces referenced by a send in flight")                        \
    X(calls_started, counter, "calls started")                                                     \
    X(calls_failed, counter, "calls that completed with an error")                                 \
    X(deadlines, counter, "calls ended by their overall deadline")                                 \
    X(io_timeouts, counter, "connections closed by a connect, read or write timeout")              \
    X(cancels, counter, "streams reset with RST_STREAM(CANCEL) by the client")                     \
    X(bytes_sent, counter, "request message bytes handed to HTTP/2")                               \
    X(bytes_received, counter, "response message bytes received")

#define CLIENT_COUNTER_FIELD(name, kind, help) struct base_counter name;

struct client_counters {
    CLIENT_COUNTERS(CLIENT_COUNTER_FIELD)
};

struct client {
    struct ring_core *core;          /* the ring every connection and call of this client uses */
    struct client_counters counters; /* live counters; any thread may read them */
    struct proto_alloc h2_mem;       /* what nghttp2 allocates */
    struct proto_alloc pb_mem;       /* what protobuf-c allocates (unpacked responses) */
    struct proto_alloc zstd_mem;     /* what zstd contexts allocate */
    ProtobufCAllocator pb;           /* protobuf-c allocator over pb_mem */
};

/*
 * Fills <opts> with ring sizes for a client: a few hundred ops and receive buffers rather
 * than a server core's thousands. Callers may raise them (a load generator with many
 * concurrent calls wants more ops and buffers).
 */
void client_core_options(struct ring_core_options *opts);

/* Prepares <cl> in the caller's memory for <core>, which must be the calling thread's ring. */
void client_init(struct client *cl, struct ring_core *core);

/* Releases <cl>; every connection must be closed and every call completed (asserted). */
void client_deinit(struct client *cl);

/* True when no connection is open and no call is alive: the ring may be destroyed. */
bool client_is_idle(const struct client *cl);

/*
 * Drives the ring until *<done> becomes true (a done or close callback sets it). Returns 0,
 * or the -errno of a failed io_uring_enter. Every operation the library submits carries a
 * timeout or belongs to a call with a deadline, so this returns as long as callers gave
 * timeouts (client/conn.h, client/call.h).
 */
MUST_CHECK int client_wait(struct client *cl, const bool *done);

/* Runs the ring until the client is idle (after closing its connections). Returns as above. */
MUST_CHECK int client_wait_idle(struct client *cl);

#endif /* RINGCAS_CLIENT_CLIENT_H */
