/*
 * The core's pool of receive buffers, handed to the kernel as a provided-buffer ring
 * (IORING_REGISTER_PBUF_RING, group RING_BUF_GROUP). A receive picks a buffer only when data
 * arrives, so an idle connection holds no memory.
 *
 * A buffer is identified by its id (bid). When a receive completes, the handler owns one
 * reference; ring_buf_ref() adds more (e.g. several HTTP/2 streams keep zero-copy slices of
 * one buffer), ring_buf_unref() drops one, and the last drop gives the buffer back to the
 * kernel. Under ASan a returned buffer is poisoned, so touching it after the last unref is
 * reported.
 */
#ifndef RINGCAS_RING_BUF_H
#define RINGCAS_RING_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

#include "base/assert.h"

#define RING_BUF_GROUP 0

struct ring_core;
struct ring_task;

struct ring_buf_pool {
    struct io_uring_buf_ring *br; /* shared with the kernel; page aligned */
    uint8_t *mem;                 /* count * size bytes, page aligned */
    uint16_t *refs;               /* per bid; 0 = with the kernel */
    uint32_t count;               /* buffers (power of two) */
    uint32_t size;                /* bytes each */
    uint32_t ring_mask;           /* io_uring_buf_ring_mask(count) */
    bool registered;              /* the ring is registered with the kernel */
};

/*
 * Allocates <count> buffers of <size> bytes and registers them with <ring> as group
 * RING_BUF_GROUP. Returns 0, -ENOMEM (memory or RLIMIT_MEMLOCK) or another -errno.
 */
MUST_CHECK int ring_buf_pool_init(struct ring_buf_pool *pool, struct io_uring *ring, uint32_t count,
                                  uint32_t size);

/* Unregisters and frees the pool; every buffer must be back (asserted). */
void ring_buf_pool_deinit(struct ring_buf_pool *pool, struct io_uring *ring);

/* Takes ownership of buffer <bid> that a CQE reported (IORING_CQE_F_BUFFER): one reference. */
void ring_buf_take(struct ring_core *core, uint16_t bid);

/* The memory of buffer <bid>. */
uint8_t *ring_buf_data(struct ring_core *core, uint16_t bid);

/* Adds a reference to buffer <bid>, which the caller already holds. */
void ring_buf_ref(struct ring_core *core, uint16_t bid);

/* Drops a reference; the last one gives the buffer back to the kernel. */
void ring_buf_unref(struct ring_core *core, uint16_t bid);

/*
 * True when fewer than a quarter of <core>'s buffers are with the kernel. A connection whose
 * input waits for the engine stops receiving then, so that the core's others still can.
 */
bool ring_buf_is_low(const struct ring_core *core);

/* True when at least half of <core>'s buffers are with the kernel. */
bool ring_buf_is_plenty(const struct ring_core *core);

/*
 * Runs <task> (deferred) once at least half of the buffers are with the kernel again: at the
 * next give-back that gets there, or at once when they already are. Cancel with
 * ring_task_cancel. One list per core, woken all together.
 */
void ring_buf_wait_plenty(struct ring_core *core, struct ring_task *task);

/* Bytes in each buffer of <core>'s pool. */
uint32_t ring_buf_size(const struct ring_core *core);

/*
 * True when [<p>, <p> + <len>) lies inside buffer <bid>; used by zero-copy consumers to
 * check that a pointer handed to them really points into a receive buffer.
 */
bool ring_buf_contains(struct ring_core *core, uint16_t bid, const void *p, size_t len);

#endif /* RINGCAS_RING_BUF_H */
