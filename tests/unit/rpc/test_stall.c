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

/* The check runs every quarter of it: 25 ms. */
#define READ_TIMEOUT_MS 100u

static struct rpc_env *env_open(void)
{
    static struct rpc_env e;
    rpc_env_defaults(&e);
    rpc_env_open(&e, 8);
    e.cfg.read_timeout_ms = READ_TIMEOUT_MS;
    e.cfg.write_timeout_ms = 0;
    return &e;
}

/* After the table has room again and nothing else comes: <c> must end DEADLINE_EXCEEDED
 * within 1 s, counted once in <counter> (<what> says what it outlived otherwise). */
static void expect_ended(struct rpc_env *e, struct rpc_call *c, const struct base_counter *counter,
                         const char *what)
{
    rpc_env_run_ms(e, 1000);
    bool over = rpc_call_is_over(c);
    int status = c->status;
    uint64_t count = base_counter_get(counter);
    rpc_env_call_close(c);
    rpc_env_run_ms(e, 20);
    rpc_env_close(e);
    cr_assert(over, "%s", what);
    cr_assert(eq(int, status, PROTO_STATUS_DEADLINE_EXCEEDED));
    cr_assert(eq(u64, count, 1));
}

/* The silent call ends as a stalled request, far past its 100 ms (checked every 25 ms). */
static void expect_stalled(struct rpc_env *e, struct rpc_call *c)
{
    expect_ended(e, c, &e->rc->counters.grpc_stalls,
                 "a call silent for 1 s outlived its 100 ms --read-timeout");
}

/* The check could not be armed when the call was dispatched (watch). */
Test(rpc_stall, a_silent_call_ends_when_the_check_could_not_be_armed)
{
    struct rpc_env *e = env_open();
    size_t n;
    struct ring_op **ops = rpc_env_ops_take_all(e, &n);
    struct rpc_call *c = rpc_env_call_open(e, 1, 0);
    cr_assert(not(rpc_call_is_over(c)));
    rpc_env_ops_put_all(ops, n);
    expect_stalled(e, c);
}

/* The check was armed, then fired while the table was full: it could not arm itself again
 * (its own op is given back only after it ran). */
Test(rpc_stall, a_silent_call_ends_when_the_check_could_not_be_rearmed)
{
    struct rpc_env *e = env_open();
    struct rpc_call *c = rpc_env_call_open(e, 1, 0);
    cr_assert(not(rpc_call_is_over(c)));
    cr_assert(ring_timer_is_armed(&e->rc->stall));
    size_t n;
    struct ring_op **ops = rpc_env_ops_take_all(e, &n);
    /* The check fires (every 25 ms) with the table full: 60 ms, before the call is due. */
    rpc_env_run_ms(e, 60);
    rpc_env_ops_put_all(ops, n);
    expect_stalled(e, c);
}

/* The deadline timer fired (at its 100 ms tick) while the table was full, so it could not arm
 * itself again (its own op is given back only after it ran), and no other call ended to try
 * again: the call must still end at its deadline. */
Test(rpc_stall, a_deadline_is_kept_when_its_timer_could_not_be_rearmed)
{
    struct rpc_env *e = env_open();
    e->cfg.read_timeout_ms = 0; /* only the deadline may end the call */
    struct rpc_call *c = rpc_env_call_open(e, 1, 300);
    cr_assert(not(rpc_call_is_over(c)));
    cr_assert(ring_timer_is_armed(&e->rc->deadline));
    size_t n;
    struct ring_op **ops = rpc_env_ops_take_all(e, &n);
    rpc_env_run_ms(e, 150); /* the 100 ms tick fires with the table full */
    rpc_env_ops_put_all(ops, n);
    expect_ended(e, c, &e->rc->counters.grpc_deadlines,
                 "a call 1.15 s old outlived its 300 ms deadline");
}
