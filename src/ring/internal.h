/*
 * What the files of src/ring share: the layout of struct ring_core. Only src/ring and its
 * tests include this header.
 */
#ifndef RINGCAS_RING_INTERNAL_H
#define RINGCAS_RING_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <liburing.h>

#include "base/list.h"
#include "ring/buf.h"
#include "ring/core.h"

/* user_data of SQEs whose CQEs nobody waits for (cancels, linked timeouts, closes). */
#define RING_UD_IGNORE 0ULL
/* user_data bit of cross-core messages: the rest is a struct ring_msg pointer. */
#define RING_UD_MSG (1ULL << 63)
/* With RING_UD_MSG, on the sender's own SQE: the post failed (SKIP_SUCCESS hides success).
 * Free in a message's user_data, whose pointer stays below bit 48. */
#define RING_UD_MSG_BACK (1ULL << 62)
/* Generations live in bits 32..62; 0 is never used so user_data 0 is never an op. */
#define RING_GEN_MASK 0x7fffffffU

/* CQEs handled per loop iteration before deferred tasks run again (fairness bound). */
#define RING_CQE_BATCH_MAX 256
/* Deferred tasks run per drain; the rest wait for the next iteration. */
#define RING_TASK_BATCH_MAX 4096

struct ring_core {
    struct io_uring ring;            /* created and used by this core's thread only */
    int ring_fd;                     /* ring.ring_fd, fixed at creation: other rings send here */
    uint32_t index;                  /* 0-based core number */
    bool stopped;                    /* ring_core_stop() was called */
    struct ring_op *ops;             /* op table, ops_max slots */
    uint32_t *free_slots;            /* stack of free slot indices */
    uint32_t free_count;             /* entries in free_slots */
    uint32_t ops_max;                /* slots in the op table */
    uint64_t full_log_ns;            /* when "op table full" was last logged */
    uint64_t batch_ns;               /* CLOCK_MONOTONIC when the current batch began, or 0 */
    struct ring_buf_pool bufs;       /* provided receive buffers */
    struct base_list deferred;       /* struct ring_task.link, run after each CQE batch */
    struct base_list buf_waiters;    /* struct ring_task.link, run when a buffer comes back */
    struct base_list plenty_waiters; /* struct ring_task.link, run when half the pool is free */
    struct base_list op_waiters;     /* struct ring_task.link, run when an op slot is released */
    struct ring_counters counters;   /* live counters, readable from any thread */
    struct base_list conns;          /* struct ring_conn.link, open connections */
    void (*on_conn_closed)(struct ring_core *core); /* the server's drain watcher, or NULL */
    void *server;                                   /* the server's per-core state, or NULL */
    void *app;                                      /* upper layers' per-core state */
};

/*
 * ThreadSanitizer cannot see that a message handed over by IORING_OP_MSG_RING was written
 * before the target reads it (the kernel orders them): these annotations tell it.
 */
#if defined(__SANITIZE_THREAD__)
#    define RING_TSAN 1
#elif defined(__has_feature)
#    if __has_feature(thread_sanitizer)
#        define RING_TSAN 1
#    endif
#endif
#ifdef RING_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#    define RING_TSAN_RELEASE(p) __tsan_release(p)
#    define RING_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#    define RING_TSAN_RELEASE(p) ((void)(p))
#    define RING_TSAN_ACQUIRE(p) ((void)(p))
#endif

/* Returns an SQE with user_data RING_UD_IGNORE, submitting first if the SQ is full. */
struct io_uring_sqe *ring_core_sqe_ignored(struct ring_core *core);

/* Queues <task> to run when a receive buffer is returned (after -ENOBUFS). */
void ring_core_wait_for_buf(struct ring_core *core, struct ring_task *task);

/*
 * Wakes the first receive waiting for a buffer (ring_core_wait_for_buf), if any, when a buffer
 * is with the kernel: each give-back wakes one, and one woken that does not take it (paused,
 * closed, or it had only the peer's FIN to read) passes the wake-up on with this.
 */
void ring_buf_wake_one(struct ring_core *core);

/* Writes the one-line explanation of an io_uring setup failure <err> into <why>. */
void ring_setup_explain(int err, const char *step, char *why, size_t why_size);

#endif /* RINGCAS_RING_INTERNAL_H */
