/*
 * ByteStream uploads parked for resumption (svc_bytestream.c) expire even when the core's op
 * table was full at the moment the sweep timer was to be armed. The real ring core and rpc
 * stack serve one end of a TCP connection on 127.0.0.1; the test speaks HTTP/2 on the other
 * with nghttp2's client: a Write whose stream ends without finish_write, as a client that
 * goes away half-way does. And a Read waiting for the core's disk queue is never left waiting
 * with its wake-up timer unarmed (calls without a connection, the disk held still). The store
 * runs on the simulated disk.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <nghttp2/nghttp2.h>

#include "base/clock.h"
#include "blob/io_sim.h"
#include "blob/store.h"
#include "env.h"
#include "proto/status.h"
#include "proto/wire.h"
#include "ring/core.h"
#include "rpc/call.h"
#include "rpc/internal.h"
#include "rpc/svc.h"

#define DATA_LEN 1024u /* of a blob of BLOB_LEN: the rest never comes */
#define BLOB_LEN "8192"

/* One WriteRequest {resource_name, data} of DATA_LEN bytes without finish_write, framed. */
static void make_body(struct rpc_env_client *cl)
{
    static uint8_t body[DATA_LEN + 256];
    cl->body = body;
    size_t at = rpc_env_write_request(cl->body,
                                      "uploads/5b0c0d6e-0000-4000-8000-000000000002/blobs/"
                                      "cd00000000000000000000000000000000000000000000000000000000"
                                      "000000/" BLOB_LEN,
                                      DATA_LEN, &cl->body_len);
    memset(cl->body + at, 'x', DATA_LEN);
}

/* Connects <cl> and sends its whole Write, the stream's end included (nothing is read). */
__attribute__((noinline)) static void client_write(struct rpc_env *e, struct rpc_env_client *cl)
{
    make_body(cl);
    rpc_env_client_connect(e, cl, "/google.bytestream.ByteStream/Write");
    cr_assert(eq(int, nghttp2_session_send(cl->session), 0));
    cr_assert(eq(sz, cl->body_off, cl->body_len), "the client could not send its request");
}

static uint64_t parked(const struct rpc_env *e)
{
    return base_counter_get(&e->rc->counters.bs_uploads_parked);
}

/* Runs the core and the disk until the parked uploads are <want> or <ms> passed. */
static void run_until_parked(struct rpc_env *e, uint64_t want, uint64_t ms)
{
    uint64_t end = base_clock_now_ns() + ms * BASE_NS_PER_MS;
    while (parked(e) != want && base_clock_now_ns() < end) {
        (void)blob_io_sim_run(e->io, 100);
        cr_assert(ge(int, ring_core_tick(e->core, 5), 0));
    }
}

/*
 * The sweep timer could not be armed when the upload parked (every op of the table taken);
 * no upload parks after it on this core. The upload must still expire after its idle time:
 * it waited for another upload to park, and on a quiet core kept its engine upload (buffers,
 * disk reservation) indefinitely.
 */
Test(rpc_svc_bytestream, a_parked_upload_expires_after_the_op_table_was_full)
{
    static struct rpc_env e;
    rpc_env_defaults(&e);
    rpc_env_open(&e, 64);
    e.cfg.bs_parked_idle_ms = 200;
    static struct rpc_env_client cl;
    client_write(&e, &cl);
    /* Take every free op: the connection's receive, prepared already, still completes. */
    size_t n;
    struct ring_op **ops = rpc_env_ops_take_all(&e, &n);
    run_until_parked(&e, 1, 2000);
    cr_assert(eq(u64, parked(&e), 1), "the stream's end did not park the upload");
    /* The table has room again; nothing else parks. */
    rpc_env_ops_put_all(ops, n);
    nghttp2_session_del(cl.session);
    (void)close(cl.fd);
    run_until_parked(&e, 0, 3000);
    uint64_t left = parked(&e);
    const struct blob_counters *bcnt = blob_core_counters(e.rc->blob);
    uint64_t uploads = base_counter_get(&bcnt->uploads);
    /* Everything back, so that the next assertion's failure leaves nothing behind. */
    for (int i = 0; i < 500 && e.rc->conns_open > 0; i++)
        cr_assert(ge(int, ring_core_tick(e.core, 10), 0));
    rpc_svc_bytestream_quiesce(e.rc);
    for (int i = 0; i < 100 && (i < 3 || !blob_core_is_idle(e.rc->blob)); i++) {
        (void)blob_io_sim_run(e.io, 1000);
        cr_assert(ge(int, ring_core_tick(e.core, 0), 0));
    }
    cr_assert(eq(u64, left, 0), "a parked upload outlived its 200 ms by 3 s");
    cr_assert(eq(u64, uploads, 0), "its engine upload is still held");
    cr_assert(eq(u32, e.rc->conns_open, 0));
    rpc_svc_bytestream_deinit(e.rc);
    cr_assert(eq(u64, base_counter_get(&e.rc->counters.bs_uploads), 0));
    cr_assert(eq(u64, base_counter_get(&e.rc->counters.grpc_calls), 0));
    rpc_env_close(&e);
}

/* A dispatched ByteStream Read of <k> with no connection: its pieces are let go as they are
 * sent (nothing reads them), so it reads the whole blob. <req> must outlive the call. */
static struct rpc_call *read_open(struct rpc_env *e, int32_t sid, const struct blob_key *k,
                                  uint8_t *req, size_t cap)
{
    struct rpc_call *c = rpc_call_new(e->rc, NULL, sid);
    cr_assert(ne(ptr, c, NULL));
    c->method_post = true;
    c->content_grpc = true;
    (void)snprintf(c->path, sizeof(c->path), "%s", "/google.bytestream.ByteStream/Read");
    rpc_call_on_headers(c);
    char hex[2 * BLOB_HASH_SIZE + 1];
    blob_hash_to_hex(k->hash, hex);
    char name[128];
    size_t n =
        (size_t)snprintf(name, sizeof(name), "blobs/%s/%llu", hex, (unsigned long long)k->size);
    cr_assert(lt(sz, n + 8, cap));
    uint8_t *m = req + 5;
    size_t len = 0;
    m[len++] = 0x0a; /* resource_name = 1 */
    len += proto_wire_varint_put(m + len, n);
    memcpy(m + len, name, n);
    len += n;
    req[0] = 0;
    req[1] = (uint8_t)(len >> 24);
    req[2] = (uint8_t)(len >> 16);
    req[3] = (uint8_t)(len >> 8);
    req[4] = (uint8_t)len;
    rpc_call_on_data(c, req, len + 5, RING_CONN_NO_BUF);
    rpc_call_on_end_stream(c);
    return c;
}

/*
 * A Read refused by a full disk queue waits for the read wake-up timer (bs->wake). When that
 * timer fires while the op table is full, it cannot arm itself again: the read must not be
 * left waiting with nothing to retry it. It is not: read_wait adds a read to the waiters only
 * with the timer armed, else the read ends at once, RESOURCE_EXHAUSTED (retry later).
 */
Test(rpc_svc_bytestream, a_read_waiting_for_the_disk_queue_is_not_left_unarmed)
{
    static struct rpc_env e;
    struct blob_key k;
    rpc_env_open_one_disk_slot(&e, 'r', &k); /* the second read waits for the disk */
    static uint8_t req[2][256];
    struct rpc_call *a = read_open(&e, 1, &k, req[0], sizeof(req[0]));
    struct rpc_call *b = read_open(&e, 3, &k, req[1], sizeof(req[1]));
    const struct blob_counters *bcnt = blob_core_counters(e.rc->blob);
    cr_assert(ge(u64, base_counter_get(&bcnt->queue_full), 1), "the disk queue was not full");
    cr_assert(not(rpc_call_is_over(b)), "the second read did not wait");
    /* Take every free op, then let the wake-up fire (every 5 ms) with the disk held still. */
    size_t n;
    struct ring_op **ops = rpc_env_ops_take_all(&e, &n);
    uint64_t end = base_clock_now_ns() + 50 * BASE_NS_PER_MS;
    while (base_clock_now_ns() < end)
        cr_assert(ge(int, ring_core_tick(e.core, 5), 0));
    bool b_over_full = rpc_call_is_over(b);
    int b_status = b->status;
    rpc_env_ops_put_all(ops, n);
    /* The table has room again; no other read comes. Both reads must end. */
    end = base_clock_now_ns() + 2000 * BASE_NS_PER_MS;
    while ((!rpc_call_is_over(a) || !rpc_call_is_over(b)) && base_clock_now_ns() < end) {
        (void)blob_io_sim_run(e.io, 100);
        cr_assert(ge(int, ring_core_tick(e.core, 5), 0));
    }
    bool a_over = rpc_call_is_over(a);
    bool b_over = rpc_call_is_over(b);
    int a_status = a->status;
    int b_final = b->status;
    rpc_env_call_close(a);
    rpc_env_call_close(b);
    rpc_svc_bytestream_quiesce(e.rc);
    for (int i = 0; i < 100 && (i < 3 || !blob_core_is_idle(e.rc->blob)); i++) {
        (void)blob_io_sim_run(e.io, 1000);
        cr_assert(ge(int, ring_core_tick(e.core, 1), 0));
    }
    rpc_svc_bytestream_deinit(e.rc);
    rpc_env_close(&e);
    cr_assert(a_over, "the first read did not end in 2 s");
    cr_assert(eq(int, a_status, PROTO_STATUS_OK));
    cr_assert(b_over, "the waiting read was left waiting after the op table was full");
    cr_log_info("the waiting read: %s while the table was full (status %d), then status %d",
                b_over_full ? "ended" : "still waiting", b_status, b_final);
    cr_assert(b_status == PROTO_STATUS_RESOURCE_EXHAUSTED || !b_over_full);
}

#define READ_WAITERS(e) base_counter_get(&(e)->rc->counters.read_waiters)
#define READ_WAITS(e)   base_counter_get(&(e)->rc->counters.read_waits)

/*
 * Two reads of one blob share a disk queue of one slot: the second waits, the read wake-up
 * (every 5 ms) finds the queue still full, then the disk moves and both are served. A read's
 * piece released within its own send (a call without a connection) asked for the next piece
 * there, found the queue full and began to wait; on_piece then asked again and queued the
 * same read a second time on read_waiters: the list looped on itself and the next wake-up
 * spun forever (the test never ended).
 * While the second read waits, ringcas_read_waiters counts it (the wake-ups that find the
 * queue full continue one wait, ringcas_read_waits_total), and once both are served the gauge
 * is back to 0.
 */
Test(rpc_svc_bytestream, two_reads_sharing_one_disk_slot_are_both_served)
{
    static struct rpc_env e;
    struct blob_key k;
    rpc_env_open_one_disk_slot(&e, 'w', &k); /* the second read waits for the disk */
    cr_assert(eq(u64, READ_WAITERS(&e), 0));
    static uint8_t req[2][256];
    struct rpc_call *a = read_open(&e, 1, &k, req[0], sizeof(req[0]));
    struct rpc_call *b = read_open(&e, 3, &k, req[1], sizeof(req[1]));
    cr_assert(not(rpc_call_is_over(b)), "the second read did not wait");
    /* The disk held still: the wake-up fires (every 5 ms) and finds the queue full again. */
    uint64_t end = base_clock_now_ns() + 30 * BASE_NS_PER_MS;
    while (base_clock_now_ns() < end)
        cr_assert(ge(int, ring_core_tick(e.core, 5), 0));
    uint64_t waiting = READ_WAITERS(&e);
    uint64_t waits = READ_WAITS(&e);
    end = base_clock_now_ns() + 2000 * BASE_NS_PER_MS;
    while ((!rpc_call_is_over(a) || !rpc_call_is_over(b)) && base_clock_now_ns() < end) {
        (void)blob_io_sim_run(e.io, 100);
        cr_assert(ge(int, ring_core_tick(e.core, 5), 0));
    }
    bool over = rpc_call_is_over(a) && rpc_call_is_over(b);
    int a_status = a->status;
    int b_status = b->status;
    uint64_t after = READ_WAITERS(&e);
    rpc_env_call_close(a);
    rpc_env_call_close(b);
    rpc_svc_bytestream_quiesce(e.rc);
    for (int i = 0; i < 100 && (i < 3 || !blob_core_is_idle(e.rc->blob)); i++) {
        (void)blob_io_sim_run(e.io, 1000);
        cr_assert(ge(int, ring_core_tick(e.core, 1), 0));
    }
    rpc_svc_bytestream_deinit(e.rc);
    rpc_env_close(&e);
    cr_assert(eq(u64, waiting, 1), "the waiting read did not show");
    cr_assert(ge(u64, waits, 1));
    cr_assert(over, "the reads did not end in 2 s");
    cr_assert(eq(int, a_status, PROTO_STATUS_OK));
    cr_assert(eq(int, b_status, PROTO_STATUS_OK));
    cr_assert(eq(u64, after, 0), "the read served still counts as waiting");
}
