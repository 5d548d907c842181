/*
 * A ByteStream.Write whose input the engine holds (the disk is slow): a connection that goes
 * away then gives everything back, and nothing the close queues outlives the connection; and
 * the held input does not take every receive buffer from the core's other connections. The
 * real ring core and rpc stack serve one end of a TCP connection on 127.0.0.1; the test
 * speaks HTTP/2 on the other with nghttp2's client. The store runs on the simulated disk,
 * whose writes complete only when the test lets them: its write buffers fill, and the engine
 * holds the rest of the upload's input.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <nghttp2/nghttp2.h>

#include "blob/io_sim.h"
#include "blob/store.h"
#include "env.h"
#include "ring/core.h"
#include "rpc/call.h"
#include "rpc/internal.h"
#include "rpc/svc.h"

#define DATA_LEN (4u << 20) /* more than the stream window: the client waits for the server */

/* <bufs> receive buffers of 16 KiB. */
static void env_open(struct rpc_env *e, uint32_t bufs)
{
    rpc_env_defaults(e);
    rpc_env_open(e, bufs);
}

/* One WriteRequest {resource_name, data} with DATA_LEN bytes, framed for gRPC. */
static void make_body(struct rpc_env_client *cl)
{
    static const char name[] = "uploads/5b0c0d6e-0000-4000-8000-000000000001/blobs/"
                               "ab00000000000000000000000000000000000000000000000000000000000000/"
                               "4194304";
    cl->body = malloc(DATA_LEN + 256); /* the prefix, the name and the fields' tags */
    cr_assert(ne(ptr, cl->body, NULL));
    uint8_t *m = cl->body + rpc_env_write_request(cl->body, name, DATA_LEN, &cl->body_len);
    uint64_t x = 0x9e3779b97f4a7c15ULL; /* incompressible: every chunk is stored raw */
    for (size_t i = 0; i < DATA_LEN; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(m + i, &x, 8);
    }
}

/* Sends what the windows allow, lets the server run, and reads its frames; <cl2> may be NULL. */
__attribute__((noinline)) static void turn(struct rpc_env *e, struct rpc_env_client *cl,
                                           struct rpc_env_client *cl2)
{
    struct rpc_env_client *cls[2] = { cl, cl2 };
    for (int i = 0; i < 2; i++) {
        if (cls[i]) cr_assert(eq(int, nghttp2_session_send(cls[i]->session), 0));
    }
    cr_assert(ge(int, ring_core_tick(e->core, 1), 0));
    static uint8_t buf[16384];
    for (int i = 0; i < 2; i++) {
        ssize_t n;
        /* Bounded by what the server sent; the socket is non-blocking. */
        while (cls[i] && (n = recv(cls[i]->fd, buf, sizeof(buf), 0)) > 0) {
            cr_assert(eq(sz, (size_t)nghttp2_session_mem_recv(cls[i]->session, buf, (size_t)n),
                         (size_t)n));
        }
    }
}

/* Turns until the upload stops getting window back: the engine holds the rest. */
__attribute__((noinline)) static void stall(struct rpc_env *e, struct rpc_env_client *cl)
{
    size_t sent = 0;
    for (int i = 0, still = 0; i < 2000 && still < 50; i++) {
        turn(e, cl, NULL);
        still = cl->body_off == sent ? still + 1 : 0;
        sent = cl->body_off;
    }
    const struct blob_counters *bcnt = blob_core_counters(e->rc->blob);
    cr_assert(lt(sz, cl->body_off, cl->body_len), "the server took every byte");
    cr_assert(eq(u64, base_counter_get(&bcnt->uploads), 1));
    cr_assert(gt(u64, base_counter_get(&bcnt->io_in_flight), 0), "no write waits on the disk");
}

/* Every connection closed: the disk completes, the engine goes idle, everything is back. */
__attribute__((noinline)) static void settle(struct rpc_env *e)
{
    for (int i = 0; i < 500 && e->rc->conns_open > 0; i++) {
        cr_assert(ge(int, ring_core_tick(e->core, 10), 0));
    }
    cr_assert(eq(u32, e->rc->conns_open, 0));
    /* The loop runs on after the close: nothing of the connection may be left queued. */
    for (int i = 0; i < 10; i++) {
        cr_assert(ge(int, ring_core_tick(e->core, 0), 0));
    }
    rpc_svc_bytestream_quiesce(e->rc);
    /* Bounded: the disk's writes complete, then the engine is idle; the first turns also
     * reap the cancels of the service's timers. */
    for (int i = 0; i < 100 && (i < 3 || !blob_core_is_idle(e->rc->blob)); i++) {
        (void)blob_io_sim_run(e->io, 1000);
        cr_assert(ge(int, ring_core_tick(e->core, 0), 0));
    }
    cr_assert(blob_core_is_idle(e->rc->blob));
    rpc_svc_bytestream_deinit(e->rc);
    const struct blob_counters *bcnt = blob_core_counters(e->rc->blob);
    cr_assert(eq(u64, base_counter_get(&bcnt->uploads), 0));
    cr_assert(eq(u64, base_counter_get(&e->rc->counters.h2_conns), 0));
    cr_assert(eq(u64, base_counter_get(&e->rc->counters.grpc_calls), 0));
    cr_assert(eq(u64, base_counter_get(&e->rc->counters.grpc_slices), 0));
    cr_assert(eq(u64, base_counter_get(&e->rc->h2_mem.bytes), 0));
    cr_assert(eq(u64, base_counter_get(&e->rc->pb_mem.bytes), 0));
}

/* Connects <cl> and starts a call of <path> on it; returns the client's socket. */
static int client_connect(struct rpc_env *e, struct rpc_env_client *cl, const char *path)
{
    rpc_env_client_connect(e, cl, path);
    return cl->fd;
}

Test(rpc_h2_close, a_connection_gone_while_the_engine_holds_input_frees_everything)
{
    static struct rpc_env e;
    /* 4 MiB of receive buffers, more than the stream's window the engine can hold: a
     * receive stays armed, so the server sees the client's reset at once. */
    env_open(&e, 256);
    static struct rpc_env_client cl;
    make_body(&cl);
    int fd = client_connect(&e, &cl, "/google.bytestream.ByteStream/Write");
    stall(&e, &cl);
    /* The client vanishes (a reset, as from a killed process). The server closes the
     * connection at once; closing the call gives its held input back to the windows. */
    nghttp2_session_del(cl.session);
    struct linger reset = { 1, 0 };
    cr_assert(eq(int, setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)), 0));
    (void)close(fd);
    settle(&e);
    free(cl.body);
    rpc_env_close(&e);
}

Test(rpc_h2_close, an_upload_the_disk_holds_leaves_receive_buffers_to_other_connections)
{
    static struct rpc_env e;
    /* 512 KiB of receive buffers: half of what one stream's window lets the upload hold. */
    env_open(&e, 32);
    static struct rpc_env_client w;
    make_body(&w);
    int up = client_connect(&e, &w, "/google.bytestream.ByteStream/Write");
    stall(&e, &w);
    cr_assert(gt(u64, base_counter_get(&e.rc->counters.h2_recv_yields), 0),
              "the upload kept receiving into the last buffers");
    /* Another client's health check is answered while the disk still holds the upload. */
    static struct rpc_env_client h;
    h.body = calloc(1, 5); /* an empty HealthCheckRequest */
    cr_assert(ne(ptr, h.body, NULL));
    h.body_len = 5;
    int hc = client_connect(&e, &h, "/grpc.health.v1.Health/Check");
    for (int i = 0; i < 200 && !h.closed; i++)
        turn(&e, &w, &h);
    cr_assert(h.closed, "the health check waited for the upload's disk");
    const struct blob_counters *bcnt = blob_core_counters(e.rc->blob);
    cr_assert(gt(u64, base_counter_get(&bcnt->io_in_flight), 0), "the disk let go meanwhile");
    /* Then the disk moves: the upload receives again and ends (its digest is made up, so
     * the server refuses it at the end; what matters is that it is not left paused). */
    for (int i = 0; i < 5000 && !w.closed; i++) {
        (void)blob_io_sim_run(e.io, 100);
        turn(&e, &w, NULL);
    }
    cr_assert(w.closed, "the upload stayed paused after the disk caught up");
    cr_assert(eq(sz, w.body_off, w.body_len), "the upload did not send everything");
    nghttp2_session_del(w.session);
    nghttp2_session_del(h.session);
    (void)close(up);
    (void)close(hc);
    settle(&e);
    free(w.body);
    free(h.body);
    rpc_env_close(&e);
}
