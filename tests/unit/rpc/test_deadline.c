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

Test(rpc_deadline, fires_after_the_op_table_was_full_once)
{
    struct rpc_env e;
    rpc_env_defaults(&e);
    rpc_env_open(&e, 8);
    e.cfg.read_timeout_ms = 0; /* only the deadline may end the call */
    e.cfg.write_timeout_ms = 0;
    /* Take every free op of the table, so the deadline timer cannot be armed. */
    size_t n;
    struct ring_op **ops = rpc_env_ops_take_all(&e, &n);
    struct rpc_call *c = rpc_env_call_open(&e, 1, 50);
    rpc_env_ops_put_all(ops, n);
    /* The table has room again; no other call comes. The deadline must still fire. */
    rpc_env_run_ms(&e, 600);
    bool over = rpc_call_is_over(c);
    int status = c->status;
    rpc_env_call_close(c);
    rpc_env_run_ms(&e, 20);
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
        calls[i] = rpc_env_call_open(&e, 2 * i + 1, 100 + x % 400);
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
    rpc_env_run_ms(&e, 800);
    cr_assert(eq(u32, rc->deadlines_len, 0));
    for (int i = 0; i < N; i++) {
        if (i % 3 != 0) cr_assert(eq(int, calls[i]->status, PROTO_STATUS_DEADLINE_EXCEEDED));
        rpc_env_call_close(calls[i]);
    }
    rpc_env_run_ms(&e, 20);
    rpc_env_close(&e);
}
