/*
 * Fuzz target: HTTP/2 session input, through the real stack. One ring core runs in this
 * thread; each input is what a client sends after the connection preface, written into one
 * end of a socketpair whose other end the server accepted as a connection (so the receive
 * path, nghttp2's callbacks, the gRPC calls, the services and the send path all run for
 * real). The input's first byte picks the write size. Afterwards the connection must be gone
 * and everything it held given back: streams, calls, response pieces, held input, nghttp2's
 * and protobuf-c's memory, receive buffers and ops.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/assert.h"
#include "ring/core.h"
#include "rpc/internal.h"

static struct ring_core *core;
static struct rpc_core *rc;
static struct rpc_config cfg;

/* FUZZ_VERBOSE=1: how much the inputs exercised, to check that a corpus reaches the calls. */
static void report(void)
{
    uint64_t calls = 0;
    for (size_t r = 0; r < RPC_ROUTE_COUNT; r++)
        calls += base_counter_get(&rc->metrics.routes[r].requests);
    (void)fprintf(stderr, "calls %llu, flushes %llu, glitches %llu, protocol errors %llu\n",
                  (unsigned long long)calls,
                  (unsigned long long)base_counter_get(&rc->counters.grpc_flushes),
                  (unsigned long long)base_counter_get(&rc->counters.h2_glitches),
                  (unsigned long long)base_counter_get(&rc->counters.h2_protocol_errors));
}

static void setup(void)
{
    struct ring_core_options o;
    ring_core_options_default(&o);
    o.sq_entries = 256;
    o.cq_entries = 2048;
    o.ops_max = 2048;
    o.recv_buf_count = 64;
    o.recv_buf_size = 16 * 1024;
    char why[256];
    if (ring_core_create(&o, 0, &core, why, sizeof(why)) < 0) {
        (void)fprintf(stderr, "fuzz_h2_session: %s\n", why);
        abort();
    }
    cfg.read_timeout_ms = 2000;
    cfg.write_timeout_ms = 2000;
    cfg.core_count = 1;
    rc = calloc(1, sizeof(*rc));
    ASSERT(rc);
    rc->ring = core;
    rc->cfg = &cfg;
    proto_alloc_init(&rc->h2_mem);
    proto_alloc_init(&rc->pb_mem);
    proto_alloc_protobuf(&rc->pb_mem, &rc->pb);
    ring_core_set_app(core, rc);
    if (getenv("FUZZ_VERBOSE")) atexit(report);
}

static void tick(uint32_t wait_ms)
{
    int n = ring_core_tick(core, wait_ms);
    ASSERT(n >= 0);
}

static void drain(int fd)
{
    static char buf[16384];
    /* Bounded by what the server sent; the socket is non-blocking. */
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

static void check_idle(void)
{
    struct ring_counters_snapshot s;
    memset(&s, 0, sizeof(s));
    ring_counters_add_to(ring_core_counters(core), &s);
    ASSERT(rc->conns_open == 0);
    ASSERT(s.conns == 0);
    ASSERT(s.bufs_out == 0);
    ASSERT(s.ops_in_flight == 0);
    ASSERT(base_counter_get(&rc->counters.h2_conns) == 0);
    ASSERT(base_counter_get(&rc->counters.h2_streams) == 0);
    ASSERT(base_counter_get(&rc->counters.grpc_calls) == 0);
    ASSERT(base_counter_get(&rc->counters.grpc_segs) == 0);
    ASSERT(base_counter_get(&rc->counters.grpc_slices) == 0);
    ASSERT(base_counter_get(&rc->counters.grpc_pins) == 0);
    ASSERT(base_counter_get(&rc->h2_mem.bytes) == 0);
    ASSERT(base_counter_get(&rc->pb_mem.bytes) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!core) setup();
    if (size < 1) return 0;
    size_t step = ((size_t)data[0] + 1) * 64;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == -1) abort();
    rpc_conn_accept(core, sv[0], NULL);
    const char preface[] = RPC_H2_PREFACE;
    ASSERT(send(sv[1], preface, RPC_H2_PREFACE_LEN, MSG_NOSIGNAL) == RPC_H2_PREFACE_LEN);
    size_t off = 1;
    /* Bounded: each turn writes, or lets the server run and read. */
    for (int turn = 0; off < size && turn < 100000; turn++) {
        size_t n = size - off < step ? size - off : step;
        ssize_t w = send(sv[1], data + off, n, MSG_NOSIGNAL);
        if (w > 0) off += (size_t)w;
        if (w == -1 && errno != EAGAIN) break; /* the server closed */
        tick(0);
        drain(sv[1]);
    }
    (void)shutdown(sv[1], SHUT_WR);
    for (int turn = 0; rc->conns_open > 0 && turn < 10000; turn++) {
        tick(10);
        drain(sv[1]);
    }
    /* Let the last deferred frees and cancels complete. */
    for (int turn = 0; turn < 100; turn++) {
        struct ring_counters_snapshot s;
        memset(&s, 0, sizeof(s));
        ring_counters_add_to(ring_core_counters(core), &s);
        if (s.ops_in_flight == 0 && base_counter_get(&rc->counters.grpc_calls) == 0) break;
        tick(10);
    }
    (void)close(sv[1]);
    check_idle();
    return 0;
}
