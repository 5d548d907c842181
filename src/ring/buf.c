/*
 * Provided-buffer ring for receives. liburing 2.3 has no io_uring_setup_buf_ring(), so the
 * ring is mmap'd and registered here as 2.4's fallback does.
 *
 * Invariants: refs[bid] == 0 exactly when buffer bid is with the kernel; the core's bufs_out
 * counter equals the number of bids with refs > 0.
 */
#include "ring/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "base/asan.h"
#include "base/counter.h"
#include "ring/internal.h"

static void give_back(struct ring_buf_pool *pool, uint16_t bid, int offset)
{
    uint8_t *data = pool->mem + (size_t)bid * pool->size;
    base_asan_poison(data, pool->size);
    io_uring_buf_ring_add(pool->br, data, pool->size, bid, (int)pool->ring_mask, offset);
}

int ring_buf_pool_init(struct ring_buf_pool *pool, struct io_uring *ring, uint32_t count,
                       uint32_t size)
{
    ASSERT(count > 0 && count <= 32768);
    ASSERT((count & (count - 1)) == 0);
    ASSERT(size > 0);
    memset(pool, 0, sizeof(*pool));
    size_t ring_bytes = (size_t)count * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED) return -errno;
    size_t mem_bytes = (size_t)count * size;
    void *mem = mmap(NULL, mem_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        int err = -errno;
        munmap(br, ring_bytes);
        return err;
    }
    pool->refs = calloc(count, sizeof(*pool->refs));
    if (!pool->refs) {
        munmap(mem, mem_bytes);
        munmap(br, ring_bytes);
        return -ENOMEM;
    }
    pool->br = br;
    pool->mem = mem;
    pool->count = count;
    pool->size = size;
    pool->ring_mask = (uint32_t)io_uring_buf_ring_mask(count);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)(uintptr_t)br;
    reg.ring_entries = count;
    reg.bgid = RING_BUF_GROUP;
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) {
        free(pool->refs);
        munmap(mem, mem_bytes);
        munmap(br, ring_bytes);
        memset(pool, 0, sizeof(*pool));
        return rc;
    }
    pool->registered = true;
    io_uring_buf_ring_init(pool->br);
    for (uint32_t i = 0; i < count; i++) {
        give_back(pool, (uint16_t)i, (int)i);
    }
    io_uring_buf_ring_advance(pool->br, (int)count);
    return 0;
}

void ring_buf_pool_deinit(struct ring_buf_pool *pool, struct io_uring *ring)
{
    if (!pool->br) return;
    for (uint32_t i = 0; i < pool->count; i++) {
        ASSERT(pool->refs[i] == 0);
    }
    if (pool->registered) io_uring_unregister_buf_ring(ring, RING_BUF_GROUP);
    base_asan_unpoison(pool->mem, (size_t)pool->count * pool->size);
    munmap(pool->mem, (size_t)pool->count * pool->size);
    munmap(pool->br, (size_t)pool->count * sizeof(struct io_uring_buf));
    free(pool->refs);
    memset(pool, 0, sizeof(*pool));
}

void ring_buf_take(struct ring_core *core, uint16_t bid)
{
    struct ring_buf_pool *pool = &core->bufs;
    ASSERT(bid < pool->count);
    ASSERT(pool->refs[bid] == 0);
    pool->refs[bid] = 1;
    base_asan_unpoison(pool->mem + (size_t)bid * pool->size, pool->size);
    base_counter_inc(&core->counters.bufs_out);
}

uint8_t *ring_buf_data(struct ring_core *core, uint16_t bid)
{
    struct ring_buf_pool *pool = &core->bufs;
    ASSERT(bid < pool->count);
    DEBUG_ASSERT(pool->refs[bid] > 0);
    return pool->mem + (size_t)bid * pool->size;
}

/* Buffers with the kernel. */
static uint64_t bufs_free(const struct ring_core *core)
{
    uint64_t out = base_counter_get(&core->counters.bufs_out);
    return out > core->bufs.count ? 0 : core->bufs.count - out;
}

void ring_buf_wake_one(struct ring_core *core)
{
    if (bufs_free(core) == 0) return;
    struct base_list *node = base_list_pop_head(&core->buf_waiters);
    if (node) ring_task_defer(core, BASE_CONTAINER_OF(node, struct ring_task, link));
}

bool ring_buf_is_low(const struct ring_core *core)
{
    return bufs_free(core) * 4 < core->bufs.count;
}

bool ring_buf_is_plenty(const struct ring_core *core)
{
    return bufs_free(core) * 2 >= core->bufs.count;
}

void ring_buf_wait_plenty(struct ring_core *core, struct ring_task *task)
{
    if (ring_buf_is_plenty(core)) {
        ring_task_defer(core, task);
        return;
    }
    if (!base_list_is_linked(&task->link)) base_list_add_tail(&core->plenty_waiters, &task->link);
}

void ring_buf_ref(struct ring_core *core, uint16_t bid)
{
    struct ring_buf_pool *pool = &core->bufs;
    ASSERT(bid < pool->count);
    ASSERT(pool->refs[bid] > 0 && pool->refs[bid] < UINT16_MAX);
    pool->refs[bid]++;
}

void ring_buf_unref(struct ring_core *core, uint16_t bid)
{
    struct ring_buf_pool *pool = &core->bufs;
    ASSERT(bid < pool->count);
    ASSERT(pool->refs[bid] > 0);
    if (--pool->refs[bid] > 0) return;
    give_back(pool, bid, 0);
    io_uring_buf_ring_advance(pool->br, 1);
    base_counter_dec(&core->counters.bufs_out);
    /* Receives that found the ring empty retry now that a buffer is back. */
    ring_buf_wake_one(core);
    if (base_list_is_empty(&core->plenty_waiters) || !ring_buf_is_plenty(core)) return;
    struct base_list *node;
    /* Bounded by the waiters (one per paused connection). */
    while ((node = base_list_pop_head(&core->plenty_waiters)) != NULL) {
        ring_task_defer(core, BASE_CONTAINER_OF(node, struct ring_task, link));
    }
}

uint32_t ring_buf_size(const struct ring_core *core)
{
    return core->bufs.size;
}

bool ring_buf_contains(struct ring_core *core, uint16_t bid, const void *p, size_t len)
{
    struct ring_buf_pool *pool = &core->bufs;
    if (bid >= pool->count) return false;
    const uint8_t *start = pool->mem + (size_t)bid * pool->size;
    const uint8_t *q = p;
    return q >= start && len <= pool->size && (size_t)(q - start) <= pool->size - len;
}
