/*
 * One-shot timers on IORING_OP_TIMEOUT (CLOCK_MONOTONIC), for deadlines, drain limits and
 * periodic work. A timer is owned by the caller's memory; while armed it holds one op of its
 * owner, so the owner cannot be released before the timer's CQE came back.
 */
#ifndef RINGCAS_RING_TIMER_H
#define RINGCAS_RING_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/assert.h"
#include "ring/core.h"

struct ring_timer;

/* Runs on the core's thread when the timer expires (never after ring_timer_stop). */
typedef void ring_timer_fn(struct ring_timer *timer);

struct ring_timer {
    struct ring_op *op; /* the TIMEOUT op in flight, or NULL */
    ring_timer_fn *fn;  /* expiry callback */
    void *ctx;          /* for the callback */
    bool stopped;       /* ring_timer_stop() was called on the armed timer */
};

/* Prepares a disarmed timer. */
void ring_timer_init(struct ring_timer *timer, ring_timer_fn *fn, void *ctx);

/*
 * Arms <timer> to fire in <ms> milliseconds, as an op of <owner> (may be NULL). The timer
 * must not be pending (ring_timer_is_pending): never armed, fired, or stopped (its removal
 * may still be in flight). Returns 0 or -EAGAIN when the op table is full.
 */
MUST_CHECK int ring_timer_start(struct ring_core *core, struct ring_timer *timer,
                                struct ring_owner *owner, uint64_t ms);

/*
 * ring_timer_start, or, when the op table is full, <retry> queued to run on this core once an
 * op is free (ring_op_wait_free), with a warning naming <what> when it is first queued. For
 * periodic work that must not stay undone because the table was full at the moment it was
 * armed, with no later caller to try again (a timer re-armed from its own callback still
 * holds its op then): <retry> does the work that is due and arms again. Returns 0 when armed,
 * -EAGAIN when <retry> waits. Its owner cancels <retry> (ring_task_cancel) when it quiesces.
 */
int ring_timer_start_or_wait(struct ring_core *core, struct ring_timer *timer,
                             struct ring_owner *owner, uint64_t ms, struct ring_task *retry,
                             const char *what);

/*
 * Disarms <timer>: its callback will not run. The op stays in flight until the kernel
 * confirms (IORING_OP_TIMEOUT_REMOVE), so the owner's memory waits for it as usual.
 */
void ring_timer_stop(struct ring_core *core, struct ring_timer *timer);

/* True while the timer's op is in flight (armed, or stopped but not yet confirmed). */
static inline bool ring_timer_is_armed(const struct ring_timer *timer)
{
    return timer->op != NULL;
}

/* True while the timer's callback is still to run: armed and not stopped. */
static inline bool ring_timer_is_pending(const struct ring_timer *timer)
{
    return timer->op != NULL && !timer->stopped;
}

#endif /* RINGCAS_RING_TIMER_H */
