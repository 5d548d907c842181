/*
 * The session harness of fuzz_h2_session and fuzz_h1_session: one ring core runs in this
 * thread; each input is what a client sends on a connection, written into one end of a
 * socketpair whose other end the server accepted as a connection (so the receive path, the
 * protocol (nghttp2's callbacks and the gRPC calls, or the HTTP/1.1 requests), the services
 * and the send path all run for real, on a real store in a temporary folder). The input's first
 * byte picks the write size. Afterwards the connection must be gone and everything it held
 * given back: streams, calls, response pieces, held input, engine uploads and readers,
 * nghttp2's and protobuf-c's memory, receive buffers and ops.
 *
 * The store lives as long as the process, so what one input stores, a later one may find.
 */
#include "session.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/assert.h"
#include "blob/store.h"
#include "ring/core.h"
#include "rpc/call.h"
#include "rpc/internal.h"
#include "rpc/svc.h"

static struct ring_core *core;
static struct rpc_core *rc;
static struct rpc_config cfg;
static struct rpc_core *cores[1]; /* cfg.cores, as the server publishes them (GET /metrics) */
static struct blob_store *store;
static bool echo; /* FUZZ_VERBOSE=2: the server's answers go to stderr */
static char dir[] = "/tmp/ringcas-fuzz-session.XXXXXX";

/* At exit: the store's files go with their folder (it holds files only). */
static void remove_store(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[sizeof(dir) + 256];
        (void)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        (void)unlink(path);
    }
    if (d) (void)closedir(d);
    (void)rmdir(dir);
}

static void open_store(void)
{
    if (!mkdtemp(dir)) abort();
    if (atexit(remove_store) != 0) abort();
    struct blob_store_options bo;
    blob_store_options_default(&bo);
    bo.dir = dir;
    bo.max_size = 256ULL << 20;
    bo.segment_size = 16ULL << 20;
    bo.cores_max = 1;
    bo.direct_io = false;
    bo.sync = BLOB_SYNC_NONE;
    char why[256];
    if (blob_store_open(&bo, &store, why, sizeof(why)) < 0) {
        (void)fprintf(stderr, "fuzz session: %s\n", why);
        abort();
    }
    cfg.store = store;
    if (blob_core_init(store, core, &rc->blob) < 0) abort();
}

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
        (void)fprintf(stderr, "fuzz session: %s\n", why);
        abort();
    }
    rpc_server_options_default(&cfg.opts);
    cfg.read_timeout_ms = 2000;
    cfg.write_timeout_ms = 2000;
    cfg.bs_parked_idle_ms = RPC_BS_PARKED_IDLE_MS;
    cfg.core_count = 1;
    rc = calloc(1, sizeof(*rc));
    ASSERT(rc);
    rc->ring = core;
    rc->cfg = &cfg;
    proto_alloc_init(&rc->h2_mem);
    proto_alloc_init(&rc->pb_mem);
    proto_alloc_protobuf(&rc->pb_mem, &rc->pb);
    proto_alloc_limit(&rc->pb_mem, cfg.opts.message_memory);
    rpc_call_core_init(rc);
    ring_core_set_app(core, rc);
    cores[0] = rc;
    cfg.cores = cores;
    open_store();
    const char *verbose = getenv("FUZZ_VERBOSE"); /* NOLINT(concurrency-mt-unsafe) */
    if (verbose && atexit(report) != 0) abort();
    echo = verbose && strcmp(verbose, "2") == 0;
}

static void tick(uint32_t wait_ms)
{
    int n = ring_core_tick(core, wait_ms);
    ASSERT(n >= 0);
}

static void drain(int fd)
{
    static char buf[16384];
    ssize_t n;
    /* Bounded by what the server sent; the socket is non-blocking. */
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        if (echo) (void)fwrite(buf, 1, (size_t)n, stderr);
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
    ASSERT(base_counter_get(&rc->counters.bs_uploads) == 0);
    ASSERT(base_counter_get(&rc->counters.bs_readers) == 0);
    ASSERT(base_counter_get(&rc->counters.bs_uploads_parked) == 0);
    const struct blob_counters *bc = blob_core_counters(rc->blob);
    ASSERT(base_counter_get(&bc->uploads) == 0);
    ASSERT(base_counter_get(&bc->readers) == 0);
    ASSERT(base_counter_get(&rc->h2_mem.bytes) == 0);
    ASSERT(base_counter_get(&rc->pb_mem.bytes) == 0);
}

/*
 * Once no call is left, stops the core's stalled-call check and deadline timer, as a drain
 * does: they stay armed up to a quarter of the read timeout (500 ms) and 100 ms after the last
 * call, and waiting them out for the ops count to reach zero held every input with a gRPC call
 * for half a second (5 inputs a second). The next call arms them again.
 */
static void stop_call_timers(void)
{
    if (!base_list_is_empty(&rc->watched) || rc->deadlines_len > 0) return;
    rpc_call_core_quiesce(rc);
    rc->quiescing = false;
}

void fuzz_session_run(const uint8_t *data, size_t size, bool h2)
{
    if (!core) setup();
    if (size < 1) return;
    size_t step = ((size_t)data[0] + 1) * 64;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == -1) abort();
    rpc_conn_accept(core, sv[0], NULL);
    if (h2) {
        const char preface[] = RPC_H2_PREFACE;
        ASSERT(send(sv[1], preface, RPC_H2_PREFACE_LEN, MSG_NOSIGNAL) == RPC_H2_PREFACE_LEN);
    }
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
    /* Uploads parked for resumption would outlive the input: drop them, as a drain does. */
    rpc_svc_bytestream_quiesce(rc);
    /* Let the last deferred frees, cancels and engine writes complete. */
    for (int turn = 0; turn < 1000; turn++) {
        stop_call_timers();
        struct ring_counters_snapshot s;
        memset(&s, 0, sizeof(s));
        ring_counters_add_to(ring_core_counters(core), &s);
        if (s.ops_in_flight == 0 && base_counter_get(&rc->counters.grpc_calls) == 0 &&
            blob_core_is_idle(rc->blob))
            break;
        tick(10);
    }
    rpc_svc_bytestream_deinit(rc);
    (void)close(sv[1]);
    check_idle();
}
