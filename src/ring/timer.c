/*
 * Timers: one IORING_OP_TIMEOUT per armed timer. Expiry completes with -ETIME; removal with
 * -ECANCELED. A removal that races with expiry may still see -ETIME: the stopped flag keeps
 * the callback from running then. A timer stopped and started again before its removal came
 * back (a connection's next request) leaves the old op detached: its completion only ends it.
 */
#include "ring/timer.h"

#include <errno.h>

#include "base/log.h"
#include "ring/internal.h"

static void timer_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)flags;
    struct ring_timer *timer = op->ctx;
    if (!timer) return; /* stopped, then started again before this removal came back */
    ASSERT(timer->op == op);
    timer->op = NULL;
    if (timer->stopped) return;
    if (res == -ETIME) timer->fn(timer);
}

void ring_timer_init(struct ring_timer *timer, ring_timer_fn *fn, void *ctx)
{
    timer->op = NULL;
    timer->fn = fn;
    timer->ctx = ctx;
    timer->stopped = false;
}

int ring_timer_start(struct ring_core *core, struct ring_timer *timer, struct ring_owner *owner,
                     uint64_t ms)
{
    ASSERT(!timer->op || timer->stopped);
    struct ring_op *op = ring_op_get(core, owner, timer_done, timer);
    if (!op) return -EAGAIN;
    if (timer->op) {
        /* Stopped, its removal not yet back: that op goes on alone (its owner still waits
         * for it) and no longer names the timer, so the timer is free for the new one. */
        timer->op->ctx = NULL;
    }
    struct io_uring_sqe *sqe = ring_op_sqe(op, 0);
    op->ts.tv_sec = (long long)(ms / 1000);
    op->ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    io_uring_prep_timeout(sqe, &op->ts, 0, 0);
    ring_op_commit(op, sqe);
    timer->op = op;
    timer->stopped = false;
    return 0;
}

int ring_timer_start_or_wait(struct ring_core *core, struct ring_timer *timer,
                             struct ring_owner *owner, uint64_t ms, struct ring_task *retry,
                             const char *what)
{
    if (ring_timer_start(core, timer, owner, ms) == 0) return 0;
    if (!base_list_is_linked(&retry->link)) {
        LOG_WARN("cannot arm %s (op table full): armed when an operation completes", what);
    }
    ring_op_wait_free(core, retry);
    return -EAGAIN;
}

void ring_timer_stop(struct ring_core *core, struct ring_timer *timer)
{
    if (!timer->op || timer->stopped) return;
    timer->stopped = true;
    struct io_uring_sqe *sqe = ring_core_sqe_ignored(core);
    io_uring_prep_timeout_remove(sqe, ring_op_user_data(timer->op), 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, RING_UD_IGNORE);
}
