/*
 * The per-core event loop: one thread, one io_uring, one op table.
 *
 * An op (struct ring_op) is a slot in the core's op table with a callback. Its user_data is
 * {generation << 32 | slot}, unique among every SQE in flight, so a cancel or a link timeout
 * always reaches the op it names and a late CQE never reaches a reused slot. An op is taken
 * with ring_op_get(), prepared with one of the ring_op_prep_* helpers (or ring_op_sqe() for
 * anything else), and released by the loop after the callback of its final CQE (the first
 * CQE without IORING_CQE_F_MORE) returns.
 *
 * An owner (struct ring_owner: a connection, a stream, an upload) keeps the list of its ops
 * in flight. ring_owner_cancel() submits IORING_OP_ASYNC_CANCEL for each of them; the owner's
 * memory may be released only when ring_owner_is_idle() holds, i.e. after the last CQE, and
 * ring_owner_deinit() asserts it.
 *
 * Everything here is called from the core's own thread, except where a comment says
 * otherwise (counters, ring_core_post from another ring's core).
 */
#ifndef RINGCAS_RING_CORE_H
#define RINGCAS_RING_CORE_H

#include <stdbool.h>
#include <stdint.h>

#include <liburing.h>

#include "base/assert.h"
#include "base/counter.h"
#include "base/list.h"

struct ring_core;
struct ring_op;

/*
 * Called for each CQE of <op>: <res> is cqe->res, <flags> cqe->flags. The op is released
 * after the call when <flags> lacks IORING_CQE_F_MORE; the callback must not touch it then.
 */
typedef void ring_op_fn(struct ring_op *op, int32_t res, uint32_t flags);

/* Called when a cross-core message arrives on its target core. */
typedef void ring_msg_fn(struct ring_core *core, void *arg);

/* Called when an owner with a pending close has no op in flight any more. */
typedef void ring_owner_fn(struct ring_core *core, void *ctx);

enum ring_op_state {
    RING_OP_FREE = 0,   /* on the free list */
    RING_OP_ACTIVE,     /* taken; SQE prepared or in flight */
    RING_OP_CANCELLING, /* an ASYNC_CANCEL was submitted for it */
};

struct ring_task;
typedef void ring_task_fn(struct ring_task *task);

/* Work deferred to the end of the current loop iteration (see ring_task_defer). */
struct ring_task {
    struct base_list link;        /* on the core's deferred list while queued */
    ring_task_fn *fn;             /* runs on the core's thread */
    struct base_counter *waiting; /* the core's op_waiters gauge while the task waits for a
                                   * free op (ring_op_wait_free), else NULL */
};

struct ring_owner {
    struct base_list ops;   /* struct ring_op.owner_link, ops in flight */
    uint32_t ops_in_flight; /* length of <ops> */
    bool closing;           /* ring_owner_close() was called */
    ring_owner_fn *on_idle; /* called once when closing and the last op completed */
    void *ctx;              /* argument of on_idle */
    struct ring_task idle;  /* runs on_idle after the loop iteration */
};

struct ring_op {
    ring_op_fn *fn;              /* completion callback */
    void *ctx;                   /* the caller's object (owner's container) */
    struct ring_owner *owner;    /* NULL for ops nobody cancels */
    struct base_list owner_link; /* on owner->ops while in flight */
    struct ring_core *core;      /* the core whose table holds this op */
    uint32_t slot;               /* index in the op table */
    uint32_t gen;                /* bumped on every release; never 0 while active */
    uint8_t state;               /* enum ring_op_state */
    uint8_t opcode;              /* IORING_OP_* prepared, for diagnostics */
    bool timed;                  /* a LINK_TIMEOUT follows this op's SQE */
    struct __kernel_timespec ts; /* timeout read by the kernel at submit time */
    uint64_t arg;                /* free for the caller (bytes expected, an index) */
};

/*
 * Live counters of one core, readable from any thread (tests, metrics). X(name, kind, help):
 * kind is "gauge" (goes up and down, returns to zero when idle) or "counter" (only grows).
 * GET /metrics exports a counter as ringcas_<name>_total, busy_ns as busy_seconds_total.
 */
#define RING_COUNTERS(X)                                                                           \
    X(ops_in_flight, gauge, "io_uring operations submitted and not yet completed")                 \
    X(bufs_out, gauge, "provided receive buffers held by handlers")                                \
    X(conns, gauge, "open connections")                                                            \
    X(conns_accepted, counter, "connections accepted")                                             \
    X(conns_handed_over, counter, "connections accepted here and handed to a core with fewer")     \
    X(conns_rejected, counter,                                                                     \
      "connections refused past the limit: closed at once, or answered 503 on a probe slot")       \
    X(timeouts, counter, "socket reads and writes whose linked timeout closed the connection")     \
    X(read_timeouts, counter, "connections closed idle, or for an HTTP/1.1 head or body too slow") \
    X(write_timeouts, counter, "write progress timeouts that closed a connection")                 \
    X(cancels, counter, "ASYNC_CANCEL requests submitted")                                         \
    X(enobufs, counter, "receives that found no free provided buffer")                             \
    X(stale_cqes, counter, "completions whose generation matched no live operation")               \
    X(bytes_in, counter, "bytes received from sockets")                                            \
    X(bytes_out, counter, "bytes sent to sockets")                                                 \
    X(loops, counter, "event loop iterations")                                                     \
    X(cqes, counter, "completions handled")                                                        \
    X(busy_ns, counter, "time the event loop spent handling completions and tasks")                \
    X(long_ticks, counter, "loop iterations that worked 1 ms or more, delaying the core's others") \
    X(op_waiters, gauge,                                                                           \
      "tasks waiting for a free op: a timer or an accept the full op table could not arm")         \
    X(op_waits, counter, "tasks that had to wait for a free op (the op table was full)")

#define RING_COUNTER_FIELD(name, kind, help) struct base_counter name;

struct ring_counters {
    RING_COUNTERS(RING_COUNTER_FIELD)
};

/* A plain copy of the counters, summed over cores or read once. */
#define RING_COUNTER_VALUE(name, kind, help) uint64_t name;

struct ring_counters_snapshot {
    RING_COUNTERS(RING_COUNTER_VALUE)
};

/* Adds <c>'s current values into <out>. Any thread. */
void ring_counters_add_to(const struct ring_counters *c, struct ring_counters_snapshot *out);

/* Sizes of one core's preallocated tables; ring_core_options_default() fills them. */
struct ring_core_options {
    uint32_t sq_entries;         /* submission queue size (power of two) */
    uint32_t cq_entries;         /* completion queue size, > sq_entries */
    uint32_t ops_max;            /* op table slots */
    uint32_t recv_buf_count;     /* provided receive buffers (power of two, <= 32768) */
    uint32_t recv_buf_size;      /* bytes per receive buffer */
    uint32_t iowq_bounded_max;   /* io-wq workers for disk (fsync) per core */
    uint32_t iowq_unbounded_max; /* io-wq workers for sockets per core */
};

void ring_core_options_default(struct ring_core_options *opts);

/*
 * Creates a core in the calling thread (the ring is SINGLE_ISSUER: only this thread may use
 * it) with the given <index>. On failure returns -errno and writes one line into <why>
 * (<why_size> bytes) naming the cause and the fix.
 */
MUST_CHECK int ring_core_create(const struct ring_core_options *opts, uint32_t index,
                                struct ring_core **out, char *why, size_t why_size);

/*
 * Destroys <core>. Every op must have been released (asserted): stop the loop only after
 * every owner went idle. NULL is accepted.
 */
void ring_core_destroy(struct ring_core *core);

/*
 * Runs the loop until ring_core_stop() is called from this core, submitting prepared SQEs
 * and dispatching CQEs. Returns 0, or -errno when io_uring_enter fails for good.
 */
MUST_CHECK int ring_core_run(struct ring_core *core);

/* ring_core_tick's wait_ms meaning "until a CQE arrives". */
#define RING_WAIT_FOREVER UINT32_MAX

/*
 * Runs one iteration: submit, wait up to <wait_ms> (0: do not wait; RING_WAIT_FOREVER: until
 * a CQE arrives) for at least one CQE, dispatch what is there. Returns the number of CQEs
 * handled or -errno. For tests and for ring_core_run.
 */
MUST_CHECK int ring_core_tick(struct ring_core *core, uint32_t wait_ms);

/* Makes ring_core_run return after the current iteration. */
void ring_core_stop(struct ring_core *core);

/* True once ring_core_stop() was called. */
bool ring_core_is_stopped(const struct ring_core *core);

/* Returns the core of the calling thread, or NULL outside core threads. */
struct ring_core *ring_core_current(void);

/*
 * CLOCK_MONOTONIC in nanoseconds when <core>'s current batch of completions (or of deferred
 * tasks) began: no later than now and at most a batch old, and free to read. For what is
 * timed in seconds (stalls) or counted from when a request arrived; the clock itself outside
 * a batch.
 */
uint64_t ring_core_batch_ns(const struct ring_core *core);

/* This core's index (0-based) and counters. The counters may be read from any thread. */
uint32_t ring_core_index(const struct ring_core *core);
struct ring_counters *ring_core_counters(struct ring_core *core);

/* The io_uring of <core>, for layers that prepare their own SQEs through ring_op_sqe(). */
struct io_uring *ring_core_uring(struct ring_core *core);

/* Upper layers' per-core state: set once after creation, read on the core's thread. */
void ring_core_set_app(struct ring_core *core, void *app);
void *ring_core_app(const struct ring_core *core);

/*
 * Work deferred to the end of the current loop iteration (after the CQE batch): upper layers
 * use it to coalesce sends. A task is queued at most once; queueing a queued task is a no-op.
 * Tasks queued while tasks run are run in the same drain (bounded by the loop's task budget).
 */
void ring_task_init(struct ring_task *task, ring_task_fn *fn);
void ring_task_defer(struct ring_core *core, struct ring_task *task);
void ring_task_cancel(struct ring_task *task);

/*
 * Cross-core messages over IORING_OP_MSG_RING. <msg> must stay valid until <fn> runs on the
 * target core, which then owns it. ring_core_post() is called on the sending core's thread;
 * ring_msg_send_from() sends from any thread through a ring of the caller's own (the main
 * thread uses it for shutdown). Both return 0 or -errno. A post the kernel could not deliver
 * (the target ring gone or unable to take a completion) fails after the call returned: then
 * <failed>, when set, runs on the sending core instead of <fn> on the target, and owns <msg>;
 * unset, the failure is logged and the message is lost.
 */
struct ring_msg {
    ring_msg_fn *fn;     /* runs on the target core */
    ring_msg_fn *failed; /* runs on the sending core when the post failed; may be NULL */
    void *arg;           /* the argument of either */
};

MUST_CHECK int ring_core_post(struct ring_core *from, struct ring_core *to, struct ring_msg *msg);
MUST_CHECK int ring_msg_send_from(struct io_uring *from, struct ring_core *to,
                                  struct ring_msg *msg);

/* ---- ops ---- */

/*
 * Takes an op from <core>'s table for <owner> (may be NULL) with callback <fn> and argument
 * <ctx>. Returns NULL when the table is full: the caller answers with -EAGAIN.
 */
MUST_CHECK struct ring_op *ring_op_get(struct ring_core *core, struct ring_owner *owner,
                                       ring_op_fn *fn, void *ctx);

/*
 * Returns the SQE for <op>, submitting what is queued first if the SQ is short of room. With
 * <timeout_ms> > 0 it also reserves the SQE after it for an IORING_OP_LINK_TIMEOUT of that many
 * milliseconds, so the pair always goes in one submit (a chain ends at a submit boundary).
 * The caller prepares the SQE (io_uring_prep_*, extra flags), then calls ring_op_commit(),
 * which sets user_data and appends the linked timeout (IOSQE_CQE_SKIP_SUCCESS: it posts no
 * CQE of its own; a fired timeout shows as -ECANCELED on the op, see ring_op_timed_out).
 */
MUST_CHECK struct io_uring_sqe *ring_op_sqe(struct ring_op *op, uint32_t timeout_ms);
void ring_op_commit(struct ring_op *op, struct io_uring_sqe *sqe);

/*
 * Releases an op that was taken but never submitted (an error before ring_op_commit).
 */
void ring_op_put(struct ring_op *op);

/*
 * Runs <task> on this core once an op slot is free: after the current loop iteration when
 * one is free now, else after the iteration in which the next op is released (one waiting
 * task per released op, oldest first). For what must not stay undone because the table was
 * full at the moment it was tried, with nothing else to try it again: a periodic timer that
 * could not be armed. The task may find the table full again (an op taken before it ran)
 * and then calls this anew. A task already queued (here or deferred) stays as it is;
 * ring_task_cancel() takes it off.
 */
void ring_op_wait_free(struct ring_core *core, struct ring_task *task);

/* Submits IORING_OP_ASYNC_CANCEL for <op>, once; the op's own CQE still follows. */
void ring_op_cancel(struct ring_op *op);

/* True when a CQE with <res> means the op's linked timeout fired (not an own cancel). */
bool ring_op_timed_out(const struct ring_op *op, int32_t res);

/* Encoded user_data of <op> (for diagnostics and tests). */
static inline uint64_t ring_op_user_data(const struct ring_op *op)
{
    return ((uint64_t)op->gen << 32) | op->slot;
}

/* ---- owners ---- */

/* Prepares <owner> in the caller's memory with no op in flight. */
void ring_owner_init(struct ring_owner *owner);

/*
 * Cancels every op of <owner> still in flight (ASYNC_CANCEL by user_data) and arranges for
 * <on_idle>(<ctx>) to run once the last of them has completed; if none is in flight it runs
 * at the end of the current loop iteration, never from inside this call.
 */
void ring_owner_close(struct ring_core *core, struct ring_owner *owner, ring_owner_fn *on_idle,
                      void *ctx);

/* Cancels every op of <owner> in flight without closing it. */
void ring_owner_cancel(struct ring_core *core, struct ring_owner *owner);

static inline bool ring_owner_is_idle(const struct ring_owner *owner)
{
    return owner->ops_in_flight == 0;
}

/* Asserts that <owner> has no op in flight: call it just before freeing the owner. */
void ring_owner_deinit(struct ring_owner *owner);

/* Test hook: replaces io_uring_queue_init_params for the next ring_core_create calls (NULL
 * restores it), so tests can inject the failures of seccomp, sysctl and old kernels. */
typedef int ring_setup_fn(unsigned entries, struct io_uring *ring, struct io_uring_params *p);
void ring_core_set_setup_hook(ring_setup_fn *fn);

#endif /* RINGCAS_RING_CORE_H */
