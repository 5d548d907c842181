/* One rpc core on a real ring with the engine on a simulated disk (env.h). */
#include "env.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/digest.h"
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
