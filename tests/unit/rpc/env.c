/* One rpc core on a real ring with the engine on a simulated disk (env.h). */
#include "env.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "blob/digest.h"
#include "proto/status.h"
#include "proto/wire.h"
#include "rpc/call.h"
#include "rpc/svc.h"

void rpc_env_defaults(struct rpc_env *e)
{
    blob_store_options_default(&e->bo);
    e->bo.dir = "sim";
    e->bo.chunk_size = 4096;
    e->bo.segment_size = 1 << 20;
    e->bo.max_size = 64ULL << 20;
    e->bo.write_buffer_size = 64 * 1024; /* four of them fill after 256 KiB */
    e->bo.sync = BLOB_SYNC_NONE;
    e->bo.evict_thread = false;
}

/* noinline: Criterion's assertions make a large frame (clang-tidy's limit). */
__attribute__((noinline)) void rpc_env_open(struct rpc_env *e, uint32_t bufs)
{
    struct ring_core_options o;
    ring_core_options_default(&o);
    o.recv_buf_count = bufs;
    o.recv_buf_size = 16 * 1024;
    char why[256];
    cr_assert(eq(int, ring_core_create(&o, 0, &e->core, why, sizeof(why)), 0), "%s", why);
    memset(&e->cfg, 0, sizeof(e->cfg)); /* no access log, no metrics sources */
    rpc_server_options_default(&e->cfg.opts);
    e->cfg.read_timeout_ms = 200;
    e->cfg.write_timeout_ms = 200;
    e->cfg.bs_parked_idle_ms = RPC_BS_PARKED_IDLE_MS;
    e->cfg.core_count = 1;
    e->rc = calloc(1, sizeof(*e->rc));
    cr_assert(ne(ptr, e->rc, NULL));
    e->rc->ring = e->core;
    e->rc->cfg = &e->cfg;
    proto_alloc_init(&e->rc->h2_mem);
    proto_alloc_init(&e->rc->pb_mem);
    proto_alloc_protobuf(&e->rc->pb_mem, &e->rc->pb);
    rpc_call_core_init(e->rc);
    ring_core_set_app(e->core, e->rc);
    e->io = blob_io_sim_create(11);
    cr_assert(ne(ptr, e->io, NULL));
    e->bo.io = e->io;
    cr_assert(eq(int, blob_store_open(&e->bo, &e->store, why, sizeof(why)), 0), "%s", why);
    cr_assert(eq(int, blob_core_init(e->store, e->core, &e->rc->blob), 0));
}

void rpc_env_close(struct rpc_env *e)
{
    rpc_call_core_quiesce(e->rc);
    for (int i = 0; i < 100 && e->rc->owner.ops_in_flight > 0; i++) {
        cr_assert(ge(int, ring_core_tick(e->core, 10), 0));
    }
    rpc_call_core_deinit(e->rc);
    blob_core_deinit(e->rc->blob);
    blob_store_close(e->store);
    blob_io_sim_destroy(e->io);
    ring_core_destroy(e->core);
    free(e->rc);
}

void rpc_env_run_until(struct rpc_env *e, const bool *flag)
{
    for (int i = 0; i < 10000 && !*flag; i++) {
        (void)blob_io_sim_run(e->io, 100);
        cr_assert(ge(int, ring_core_tick(e->core, 0), 0));
    }
    bool done = *flag;
    cr_assert(done, "the operation did not complete");
}

struct put_wait {
    bool done;
    int res;
};

static void put_done(void *ctx, int res)
{
    struct put_wait *w = ctx;
    w->done = true;
    w->res = res;
}

void rpc_env_put(struct rpc_env *e, const void *data, size_t len, struct blob_key *k)
{
    uint8_t hash[BLOB_HASH_SIZE];
    cr_assert(eq(int, blob_digest_oneshot(BLOB_DIGEST_SHA256, data, len, hash), 0));
    blob_key_cas(k, hash, len);
    struct blob_upload *u;
    int begun = blob_upload_begin(e->rc->blob, k, BLOB_ENCODING_IDENTITY, &u);
    if (begun == -EEXIST) return; /* present already (the empty blob always is) */
    cr_assert(eq(int, begun, 0));
    struct put_wait w = { 0 };
    int rc = blob_upload_append(u, data, len, put_done, &w);
    if (rc == -EINPROGRESS) {
        rpc_env_run_until(e, &w.done);
        rc = w.res;
    }
    cr_assert(eq(int, rc, 0));
    w = (struct put_wait){ 0 };
    cr_assert(eq(int, blob_upload_commit(u, put_done, &w), 0));
    rpc_env_run_until(e, &w.done);
    cr_assert(eq(int, w.res, 0));
}

void rpc_env_open_one_disk_slot(struct rpc_env *e, int fill, struct blob_key *k)
{
    rpc_env_defaults(e);
    e->bo.disk_queue_max = 1; /* one disk read in flight */
    rpc_env_open(e, 8);
    static uint8_t blob[3 * 4096];
    memset(blob, fill, sizeof(blob));
    rpc_env_put(e, blob, sizeof(blob), k);
}

void rpc_env_run_ms(struct rpc_env *e, uint64_t ms)
{
    uint64_t end = base_clock_now_ns() + ms * BASE_NS_PER_MS;
    while (base_clock_now_ns() < end) {
        (void)blob_io_sim_run(e->io, 100);
        cr_assert(ge(int, ring_core_tick(e->core, 5), 0));
    }
}

static void nop_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)op;
    (void)res;
    (void)flags;
}

struct ring_op **rpc_env_ops_take_all(struct rpc_env *e, size_t *n)
{
    const size_t cap = 1u << 16; /* above any table's size */
    struct ring_op **ops = calloc(cap, sizeof(*ops));
    cr_assert(ne(ptr, ops, NULL));
    size_t got = 0;
    while (got < cap && (ops[got] = ring_op_get(e->core, NULL, nop_done, NULL)) != NULL) {
        got++;
    }
    cr_assert(lt(sz, got, cap));
    *n = got;
    return ops;
}

void rpc_env_ops_put_all(struct ring_op **ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ring_op_put(ops[i]);
    }
    free(ops);
}

struct rpc_call *rpc_env_call_open(struct rpc_env *e, int32_t sid, uint64_t timeout_ms)
{
    struct rpc_call *c = rpc_call_new(e->rc, NULL, sid);
    cr_assert(ne(ptr, c, NULL));
    c->method_post = true;
    c->content_grpc = true;
    (void)snprintf(c->path, sizeof(c->path), "%s",
                   "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs");
    c->has_timeout = timeout_ms > 0;
    c->timeout_ms = timeout_ms;
    rpc_call_on_headers(c);
    return c;
}

void rpc_env_call_close(struct rpc_call *c)
{
    if (!rpc_call_is_over(c)) rpc_call_finish(c, PROTO_STATUS_CANCELLED, "test");
    c->stream_closed = true;
    rpc_call_check_free(c);
}

size_t rpc_env_write_request(uint8_t *body, const char *name, size_t data_len, size_t *len)
{
    uint8_t *m = body + 5;
    size_t n = 0;
    size_t name_len = strlen(name);
    m[n++] = 0x0a; /* resource_name = 1 */
    n += proto_wire_varint_put(m + n, name_len);
    memcpy(m + n, name, name_len);
    n += name_len;
    m[n++] = 0x52; /* data = 10 */
    n += proto_wire_varint_put(m + n, data_len);
    size_t data_at = 5 + n;
    n += data_len;
    body[0] = 0;
    body[1] = (uint8_t)(n >> 24);
    body[2] = (uint8_t)(n >> 16);
    body[3] = (uint8_t)(n >> 8);
    body[4] = (uint8_t)n;
    *len = n + 5;
    return data_at;
}

static ssize_t client_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
                           void *arg)
{
    (void)s;
    (void)flags;
    struct rpc_env_client *cl = arg;
    ssize_t n = send(cl->fd, data, len, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static int client_stream_closed(nghttp2_session *s, int32_t sid, uint32_t error, void *arg)
{
    (void)s;
    (void)sid;
    (void)error;
    ((struct rpc_env_client *)arg)->closed = true;
    return 0;
}

static ssize_t client_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len,
                           uint32_t *flags, nghttp2_data_source *src, void *arg)
{
    (void)s;
    (void)sid;
    (void)src;
    struct rpc_env_client *cl = arg;
    size_t n = cl->body_len - cl->body_off < len ? cl->body_len - cl->body_off : len;
    memcpy(buf, cl->body + cl->body_off, n);
    cl->body_off += n;
    if (cl->body_off == cl->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static nghttp2_nv nv(const char *name, const char *value)
{
    nghttp2_nv v = { (uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, strlen(name),
                     strlen(value), NGHTTP2_NV_FLAG_NONE };
    return v;
}

/* A TCP connection on 127.0.0.1: sv[0] the server's end, sv[1] the client's (non-blocking). */
__attribute__((noinline)) static void tcp_pair(int sv[2])
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(ge(int, l, 0));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);
    cr_assert(eq(int, bind(l, (struct sockaddr *)&a, sizeof(a)), 0));
    cr_assert(eq(int, listen(l, 1), 0));
    cr_assert(eq(int, getsockname(l, (struct sockaddr *)&a, &len), 0));
    sv[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(eq(int, connect(sv[1], (struct sockaddr *)&a, sizeof(a)), 0));
    sv[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    cr_assert(ge(int, sv[0], 0));
    (void)close(l);
    cr_assert(eq(int, fcntl(sv[1], F_SETFL, O_NONBLOCK), 0));
}

int rpc_env_connect_raw(struct rpc_env *e)
{
    int sv[2];
    tcp_pair(sv);
    rpc_conn_accept(e->core, sv[0], NULL);
    return sv[1];
}

__attribute__((noinline)) void rpc_env_client_connect(struct rpc_env *e, struct rpc_env_client *cl,
                                                      const char *path)
{
    int sv[2];
    tcp_pair(sv);
    rpc_conn_accept(e->core, sv[0], NULL);
    cl->fd = sv[1];
    /* nghttp2's client sends the connection preface first, which selects HTTP/2. */
    nghttp2_session_callbacks *cbs;
    cr_assert(eq(int, nghttp2_session_callbacks_new(&cbs), 0));
    nghttp2_session_callbacks_set_send_callback(cbs, client_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, client_stream_closed);
    cr_assert(eq(int, nghttp2_session_client_new(&cl->session, cbs, cl), 0));
    nghttp2_session_callbacks_del(cbs);
    cr_assert(eq(int, nghttp2_submit_settings(cl->session, NGHTTP2_FLAG_NONE, NULL, 0), 0));
    const nghttp2_nv hdrs[] = { nv(":method", "POST"),
                                nv(":scheme", "http"),
                                nv(":path", path),
                                nv(":authority", "test"),
                                nv("content-type", "application/grpc"),
                                nv("te", "trailers") };
    nghttp2_data_provider dp = { .read_callback = client_read };
    cr_assert(gt(int, nghttp2_submit_request(cl->session, NULL, hdrs, 6, &dp, NULL), 0));
}
