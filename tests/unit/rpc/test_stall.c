/*
 * The stalled-call check and the deadline timer (call.c, one each per core) still run when the
 * core's op table was full at the moment they were to be armed or re-armed, with no new call
 * arriving or ending to try again: a call whose client stopped sending its request ends after
 * --read-timeout, and one with a grpc-timeout at its deadline. The calls are
 * real calls of the rpc layer on a real ring (no connection: their client is silent).
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

/* The check runs every quarter of it: 25 ms. */
#define READ_TIMEOUT_MS 100u

/* A dispatched BatchUpdateBlobs call with no connection and no deadline, waiting for its
 * request: watched by the stall check from here on. */
static struct rpc_call *call_open(struct rpc_env *e, int32_t sid)
{
    struct rpc_call *c = rpc_call_new(e->rc, NULL, sid);
    cr_assert(ne(ptr, c, NULL));
    c->method_post = true;
    c->content_grpc = true;
    (void)snprintf(c->path, sizeof(c->path), "%s", BATCH_UPDATE);
    rpc_call_on_headers(c);
    cr_assert(not(rpc_call_is_over(c)));
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

/* Takes every free op of the core's table into <ops> (room for 1 << 16); returns how many. */
static size_t ops_take_all(struct rpc_env *e, struct ring_op **ops)
{
    size_t n = 0;
    while (n < (1u << 16) && (ops[n] = ring_op_get(e->core, NULL, nop_done, NULL)) != NULL)
        n++;
    cr_assert(lt(sz, n, 1u << 16));
    return n;
}

static void ops_put_all(struct ring_op **ops, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ring_op_put(ops[i]);
}

static struct rpc_env *env_open(void)
{
    static struct rpc_env e;
    rpc_env_defaults(&e);
    rpc_env_open(&e, 8);
    e.cfg.read_timeout_ms = READ_TIMEOUT_MS;
    e.cfg.write_timeout_ms = 0;
    return &e;
}

/* After the table has room again and no other call comes: the silent call must end as a
 * stalled request within a bound far above its 100 ms (the check runs every 25 ms). */
static void expect_stalled(struct rpc_env *e, struct rpc_call *c)
{
    run_ms(e, 1000);
    bool over = rpc_call_is_over(c);
    int status = c->status;
    uint64_t stalls = base_counter_get(&e->rc->counters.grpc_stalls);
    call_close(c);
    run_ms(e, 20);
    rpc_env_close(e);
    cr_assert(over, "a call silent for 1 s outlived its 100 ms --read-timeout");
    cr_assert(eq(int, status, PROTO_STATUS_DEADLINE_EXCEEDED));
    cr_assert(eq(u64, stalls, 1));
}

/* The check could not be armed when the call was dispatched (watch). */
Test(rpc_stall, a_silent_call_ends_when_the_check_could_not_be_armed)
{
    struct rpc_env *e = env_open();
    struct ring_op **ops = calloc(1u << 16, sizeof(*ops));
    cr_assert(ne(ptr, ops, NULL));
    size_t n = ops_take_all(e, ops);
    struct rpc_call *c = call_open(e, 1);
    ops_put_all(ops, n);
    free(ops);
    expect_stalled(e, c);
}

/* The check was armed, then fired while the table was full: it could not arm itself again
 * (its own op is given back only after it ran). */
Test(rpc_stall, a_silent_call_ends_when_the_check_could_not_be_rearmed)
{
    struct rpc_env *e = env_open();
    struct rpc_call *c = call_open(e, 1);
    cr_assert(ring_timer_is_armed(&e->rc->stall));
    struct ring_op **ops = calloc(1u << 16, sizeof(*ops));
    cr_assert(ne(ptr, ops, NULL));
    size_t n = ops_take_all(e, ops);
    /* The check fires (every 25 ms) with the table full: 60 ms, before the call is due. */
    run_ms(e, 60);
    ops_put_all(ops, n);
    free(ops);
    expect_stalled(e, c);
}

/* A call with a grpc-timeout of <ms>, dispatched: its deadline is queued and the deadline
 * timer armed (at most 100 ms ahead). */
static struct rpc_call *call_open_with_deadline(struct rpc_env *e, int32_t sid, uint64_t ms)
{
    struct rpc_call *c = rpc_call_new(e->rc, NULL, sid);
    cr_assert(ne(ptr, c, NULL));
    c->method_post = true;
    c->content_grpc = true;
    c->has_timeout = true;
    c->timeout_ms = ms;
    (void)snprintf(c->path, sizeof(c->path), "%s", BATCH_UPDATE);
    rpc_call_on_headers(c);
    cr_assert(not(rpc_call_is_over(c)));
    return c;
}

/* The deadline timer fired (at its 100 ms tick) while the table was full, so it could not arm
 * itself again (its own op is given back only after it ran), and no other call ended to try
 * again: the call must still end at its deadline. */
Test(rpc_stall, a_deadline_is_kept_when_its_timer_could_not_be_rearmed)
{
    struct rpc_env *e = env_open();
    e->cfg.read_timeout_ms = 0; /* only the deadline may end the call */
    struct rpc_call *c = call_open_with_deadline(e, 1, 300);
    cr_assert(ring_timer_is_armed(&e->rc->deadline));
    struct ring_op **ops = calloc(1u << 16, sizeof(*ops));
    cr_assert(ne(ptr, ops, NULL));
    size_t n = ops_take_all(e, ops);
    run_ms(e, 150); /* the 100 ms tick fires with the table full */
    ops_put_all(ops, n);
    free(ops);
    run_ms(e, 1000);
    bool over = rpc_call_is_over(c);
    int status = c->status;
    uint64_t deadlines = base_counter_get(&e->rc->counters.grpc_deadlines);
    call_close(c);
    run_ms(e, 20);
    rpc_env_close(e);
    cr_assert(over, "a call 1.15 s old outlived its 300 ms deadline");
    cr_assert(eq(int, status, PROTO_STATUS_DEADLINE_EXCEEDED));
    cr_assert(eq(u64, deadlines, 1));
}
