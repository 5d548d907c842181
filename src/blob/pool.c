/*
 * The per-core buffer pool (pool.h). Classes are found by a short scan (at most
 * BLOB_POOL_CLASSES_MAX entries); idle buffers sit on per-class stacks of pointers, so the
 * buffers themselves stay untouched (and poisoned under ASan) while idle.
 */
#include "blob/pool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/asan.h"

#define POOL_ALIGN     4096U
#define POOL_CLASS_MIN 4096U

static size_t align_up(size_t n)
{
    return (n + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
}

static int class_add(struct blob_pool *p, size_t size)
{
    ASSERT(p->class_count < BLOB_POOL_CLASSES_MAX);
    struct blob_pool_class *c = &p->classes[p->class_count];
    uint64_t cap = p->idle_max / size;
    c->size = size;
    c->cap = (uint32_t)(cap < 4096 ? cap : 4096);
    c->len = 0;
    c->idle = NULL;
    if (c->cap > 0) {
        c->idle = calloc(c->cap, sizeof(*c->idle));
        if (!c->idle) return -ENOMEM;
    }
    p->class_count++;
    return 0;
}

int blob_pool_init(struct blob_pool *p, uint32_t chunk_size, size_t record_size, uint64_t idle_max,
                   struct base_counter *idle_gauge, struct base_counter *taken_gauge)
{
    memset(p, 0, sizeof(*p));
    ASSERT(chunk_size >= POOL_CLASS_MIN);
    ASSERT((chunk_size & (chunk_size - 1)) == 0);
    ASSERT(record_size > chunk_size);
    p->idle_max = idle_max;
    p->idle_gauge = idle_gauge;
    p->taken_gauge = taken_gauge;
    /* Bounded: one class per power of two up to the chunk size (at most 9), then one. */
    for (size_t size = POOL_CLASS_MIN; size <= chunk_size; size *= 2) {
        if (class_add(p, size) < 0) goto err_free;
    }
    if (class_add(p, align_up(record_size)) < 0) goto err_free;
    return 0;

err_free:
    blob_pool_deinit(p);
    return -ENOMEM;
}

void blob_pool_deinit(struct blob_pool *p)
{
    for (uint32_t i = 0; i < p->class_count; i++) {
        struct blob_pool_class *c = &p->classes[i];
        for (uint32_t j = 0; j < c->len; j++) {
            base_asan_unpoison(c->idle[j], c->size);
            free(c->idle[j]);
        }
        base_counter_add(p->idle_gauge, (uint64_t)0 - (uint64_t)c->len * c->size);
        p->idle_bytes -= (uint64_t)c->len * c->size;
        free(c->idle);
        c->idle = NULL;
        c->len = 0;
    }
    ASSERT(p->idle_bytes == 0);
    p->class_count = 0;
}

/* The index of the class for <size>, or -1 past the largest. */
static int class_index(const struct blob_pool *p, size_t size)
{
    for (uint32_t i = 0; i < p->class_count; i++) {
        if (size <= p->classes[i].size) return (int)i;
    }
    return -1;
}

size_t blob_pool_class_size(const struct blob_pool *p, size_t size)
{
    ASSERT(size > 0);
    int i = class_index(p, size);
    return i < 0 ? align_up(size) : p->classes[i].size;
}

/* An idle buffer of class <i>, or NULL when there is none. */
static void *idle_take(struct blob_pool *p, int i)
{
    if (i < 0 || p->classes[i].len == 0) return NULL;
    struct blob_pool_class *c = &p->classes[i];
    void *buf = c->idle[--c->len];
    p->idle_bytes -= c->size;
    base_counter_add(p->idle_gauge, (uint64_t)0 - c->size);
    base_asan_unpoison(buf, c->size);
    return buf;
}

void *blob_pool_get(struct blob_pool *p, size_t size)
{
    int i = class_index(p, size);
    void *buf = idle_take(p, i);
    if (!buf) {
        buf = aligned_alloc(POOL_ALIGN, blob_pool_class_size(p, size));
        if (!buf) return NULL;
    }
    base_counter_inc(p->taken_gauge);
    return buf;
}

void blob_pool_put(struct blob_pool *p, void *buf, size_t size)
{
    if (!buf) return;
    base_counter_dec(p->taken_gauge);
    int i = class_index(p, size);
    bool keep = i >= 0 && p->classes[i].len < p->classes[i].cap &&
                p->idle_bytes + p->classes[i].size <= p->idle_max;
    if (!keep) {
        free(buf);
        return;
    }
    struct blob_pool_class *c = &p->classes[i];
    base_asan_poison(buf, c->size);
    c->idle[c->len++] = buf;
    p->idle_bytes += c->size;
    base_counter_add(p->idle_gauge, c->size);
}
