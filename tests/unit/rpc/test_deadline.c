/*
 * grpc-timeout deadlines (call.c, one heap and one timer per core): a call is never left
 * waiting with its deadline unarmed when the core's op table was full at the moment its timer
 * should have been armed (refused then, as before the heap), and
 * calls that are removed from the heap in any order leave it a valid heap (every call still
 * ends at its deadline, in deadline order).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "blob/io_sim.h"
#include "env.h"
#include "proto/status.h"
#include "ring/core.h"
#include "rpc/call.h"
#include "rpc/internal.h"

#define BATCH_UPDATE "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"

/* A dispatched BatchUpdateBlobs call with no connection, waiting for its request. */
static struct rpc_call *call_open(struct rpc_env *e, int32_t sid, uint64_t timeout_ms)
{
    struct rpc_call *c = rpc_call_new(e->rc, NULL, sid);
    cr_assert(ne(ptr, c, NULL));
    c->method_post = true;
    c->content_grpc = true;
    (void)snprintf(c->path, sizeof(c->path), "%s", BATCH_UPDATE);
    c->has_timeout = true;
    c->timeout_ms = timeout_ms;
    rpc_call_on_headers(c);
    return c;
}

static void call_close(struct rpc_call *c)
{
    if (!rpc_call_is_over(c)) rpc_call_finish(c, PROTO_STATUS_CANCELLED, "test");
    c->stream_closed = true;
    rpc_call_check_free(c);
}

static void run_ms(struct rpc_env *e, uint64_t ms)
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

Test(rpc_deadline, fires_after_the_op_table_was_full_once)
{
    struct rpc_env e;
    rpc_env_defaults(&e);
    rpc_env_open(&e, 8);
    e.cfg.read_timeout_ms = 0; /* only the deadline may end the call */
    e.cfg.write_timeout_ms = 0;
    /* Take every free op of the table, so the deadline timer cannot be armed. */
    size_t cap = 1 << 16;
    struct ring_op **ops = calloc(cap, sizeof(*ops));
    cr_assert(ne(ptr, ops, NULL));
    size_t n = 0;
    while (n < cap && (ops[n] = ring_op_get(e.core, NULL, nop_done, NULL)) != NULL)
        n++;
    cr_assert(lt(sz, n, cap));
    struct rpc_call *c = call_open(&e, 1, 50);
    for (size_t i = 0; i < n; i++)
        ring_op_put(ops[i]);
    free(ops);
    /* The table has room again; no other call comes. The deadline must still fire. */
    run_ms(&e, 600);
    bool over = rpc_call_is_over(c);
    int status = c->status;
    call_close(c);
    run_ms(&e, 20);
    rpc_env_close(&e);
    cr_assert(over, "a 50 ms deadline did not fire in 600 ms");
    /* Refused at once (nothing would end it), or ended at its deadline. */
    cr_assert(status == PROTO_STATUS_RESOURCE_EXHAUSTED ||
              status == PROTO_STATUS_DEADLINE_EXCEEDED);
}

Test(rpc_deadline, removals_in_any_order_keep_the_heap)
{
    struct rpc_env e;
    rpc_env_defaults(&e);
    rpc_env_open(&e, 8);
    e.cfg.read_timeout_ms = 0;
    e.cfg.write_timeout_ms = 0;

    enum {
        N = 200
    };
    struct rpc_call *calls[N];
    uint64_t x = 7; /* xorshift: arbitrary, repeatable timeouts */
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        calls[i] = call_open(&e, 2 * i + 1, 100 + x % 400);
    }
    /* Remove every third one (arbitrary indexes), then check the heap property. */
    for (int i = 0; i < N; i += 3) {
        rpc_call_finish(calls[i], PROTO_STATUS_CANCELLED, "test");
    }
    struct rpc_core *rc = e.rc;
    for (uint32_t i = 1; i < rc->deadlines_len; i++) {
        cr_assert(le(u64, rc->deadlines[(i - 1) / 2]->deadline_ns, rc->deadlines[i]->deadline_ns));
        cr_assert(eq(u32, rc->deadlines[i]->deadline_index, i));
    }
    run_ms(&e, 800);
    cr_assert(eq(u32, rc->deadlines_len, 0));
    for (int i = 0; i < N; i++) {
        if (i % 3 != 0) cr_assert(eq(int, calls[i]->status, PROTO_STATUS_DEADLINE_EXCEEDED));
        call_close(calls[i]);
    }
    run_ms(&e, 20);
    rpc_env_close(&e);
}
