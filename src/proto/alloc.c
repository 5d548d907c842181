/*
 * Counting allocators over malloc. The header in front of each block keeps the size so free
 * can uncount it, and the size class the block was cut for (0: none, exact malloc); it is 16
 * bytes so the caller's pointer keeps malloc's alignment. Idle blocks of a kept class sit on
 * a per-class stack linked through their headers, their payload poisoned under ASan.
 */
#include "proto/alloc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/asan.h"
#include "base/assert.h"

#define CLASS_MIN_SHIFT 5 /* the smallest class holds 32 bytes */

struct header {
    union {
        size_t size;         /* bytes the caller asked for, while live */
        struct header *next; /* the next idle block of the class, while idle */
    };

    size_t cls; /* 1 + the size class the block was cut for; 0: exact size, never kept */
};

STATIC_ASSERT(sizeof(struct header) == 16, "header keeps 16-byte alignment");
STATIC_ASSERT(PROTO_ALLOC_CLASSES + CLASS_MIN_SHIFT - 1 == 12, "the largest class is 4 KiB");

static size_t class_size(size_t k)
{
    return (size_t)1 << (k + CLASS_MIN_SHIFT);
}

/* The class of a <size>-byte block when <a> keeps it, or -1. */
static int class_of(const struct proto_alloc *a, size_t size)
{
    if (size > class_size(PROTO_ALLOC_CLASSES - 1)) return -1;
    size_t k = 0;
    /* Bounded by PROTO_ALLOC_CLASSES. */
    while (class_size(k) < size) {
        k++;
    }
    return a->idle_cap[k] > 0 ? (int)k : -1;
}

/* A block for <size> bytes, not counted; NULL when malloc fails. */
static struct header *block_get(struct proto_alloc *a, size_t size)
{
    int k = class_of(a, size);
    struct header *h;
    if (k < 0) {
        h = malloc(sizeof(*h) + size);
        if (!h) return NULL;
        h->cls = 0;
    } else if (a->idle[k]) {
        h = a->idle[k];
        a->idle[k] = h->next;
        a->idle_len[k]--;
        base_asan_unpoison(h + 1, class_size((size_t)k));
    } else {
        h = malloc(sizeof(*h) + class_size((size_t)k));
        if (!h) return NULL;
        h->cls = (size_t)k + 1;
    }
    h->size = size;
    /* The class's slack past <size> stays poisoned: ASan sees overruns as with malloc. */
    if (h->cls > 0) base_asan_poison((uint8_t *)(h + 1) + size, class_size(h->cls - 1) - size);
    return h;
}

/* Keeps <h> for reuse when its class has room, else frees it. */
static void block_put(struct proto_alloc *a, struct header *h)
{
    size_t k = h->cls - 1;
    if (h->cls == 0 || a->idle_len[k] >= a->idle_cap[k]) {
        if (h->cls > 0) base_asan_unpoison(h + 1, class_size(k));
        free(h);
        return;
    }
    base_asan_poison(h + 1, class_size(k));
    h->next = a->idle[k];
    a->idle[k] = h;
    a->idle_len[k]++;
}

void proto_alloc_init(struct proto_alloc *a)
{
    memset(a, 0, sizeof(*a));
}

void proto_alloc_cache(struct proto_alloc *a, size_t idle_max)
{
    uint64_t made = base_counter_get(&a->total);
    ASSERT(made == 0);
    for (size_t k = 0; k < PROTO_ALLOC_CLASSES; k++) {
        size_t cap = idle_max / PROTO_ALLOC_CLASSES / (sizeof(struct header) + class_size(k));
        a->idle_cap[k] = (uint32_t)(cap < UINT32_MAX ? cap : UINT32_MAX);
    }
}

void proto_alloc_deinit(struct proto_alloc *a)
{
    for (size_t k = 0; k < PROTO_ALLOC_CLASSES; k++) {
        /* Bounded by idle_cap[k]. */
        while (a->idle[k]) {
            struct header *h = a->idle[k];
            a->idle[k] = h->next;
            base_asan_unpoison(h + 1, class_size(k));
            free(h);
        }
        a->idle_len[k] = 0;
        a->idle_cap[k] = 0;
    }
}

void proto_alloc_fail_in(struct proto_alloc *a, uint64_t n)
{
    a->fail_in = n;
}

void proto_alloc_limit(struct proto_alloc *a, uint64_t limit)
{
    a->limit = limit;
}

/* <grow> more live bytes are asked for: false when that is refused (injected or the limit). */
static bool should_fail(struct proto_alloc *a, size_t grow)
{
    uint64_t live = base_counter_get(&a->bytes);
    if (a->limit > 0 && grow > 0 && (grow > a->limit || live > a->limit - grow)) {
        base_counter_inc(&a->failed);
        return true;
    }
    if (a->fail_in == 0) return false;
    a->fail_in--;
    if (a->fail_in > 0) return false;
    base_counter_inc(&a->failed);
    return true;
}

static void count(struct proto_alloc *a, size_t size)
{
    base_counter_add(&a->bytes, size);
    base_counter_inc(&a->blocks);
    base_counter_inc(&a->total);
}

void *proto_alloc_malloc(struct proto_alloc *a, size_t size)
{
    if (size > SIZE_MAX - sizeof(struct header) || should_fail(a, size)) return NULL;
    struct header *h = block_get(a, size);
    if (!h) {
        base_counter_inc(&a->failed); /* malloc itself: a refusal all the same */
        return NULL;
    }
    count(a, size);
    return h + 1;
}

void *proto_alloc_calloc(struct proto_alloc *a, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size) {
        base_counter_inc(&a->failed);
        return NULL;
    }
    void *p = proto_alloc_malloc(a, count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

void proto_alloc_free(struct proto_alloc *a, void *p)
{
    if (!p) return;
    struct header *h = (struct header *)p - 1;
    uint64_t bytes = base_counter_get(&a->bytes);
    uint64_t blocks = base_counter_get(&a->blocks);
    ASSERT(bytes >= h->size);
    ASSERT(blocks > 0);
    base_counter_add(&a->bytes, (uint64_t)0 - h->size);
    base_counter_dec(&a->blocks);
    block_put(a, h);
}

void *proto_alloc_realloc(struct proto_alloc *a, void *p, size_t size)
{
    if (!p) return proto_alloc_malloc(a, size);
    struct header *old = (struct header *)p - 1;
    if (size > SIZE_MAX - sizeof(struct header)) return NULL;
    if (should_fail(a, size > old->size ? size - old->size : 0)) return NULL;
    size_t old_size = old->size;
    struct header *h;
    if (old->cls == 0) {
        h = realloc(old, sizeof(*h) + size);
        if (!h) {
            base_counter_inc(&a->failed);
            return NULL;
        }
        h->size = size;
    } else if (size <= class_size(old->cls - 1)) {
        /* It still fits the block's class: only the poisoned slack moves. */
        h = old;
        base_asan_unpoison(h + 1, class_size(h->cls - 1));
        h->size = size;
        base_asan_poison((uint8_t *)(h + 1) + size, class_size(h->cls - 1) - size);
    } else {
        h = block_get(a, size);
        if (!h) {
            base_counter_inc(&a->failed);
            return NULL;
        }
        memcpy(h + 1, p, old_size);
        block_put(a, old);
    }
    base_counter_add(&a->bytes, (uint64_t)size - old_size);
    base_counter_inc(&a->total);
    return h + 1;
}

static void *pb_alloc(void *data, size_t size)
{
    return proto_alloc_malloc(data, size);
}

static void pb_free(void *data, void *p)
{
    proto_alloc_free(data, p);
}

void proto_alloc_protobuf(struct proto_alloc *a, ProtobufCAllocator *out)
{
    out->alloc = pb_alloc;
    out->free = pb_free;
    out->allocator_data = a;
}

static void *h2_malloc(size_t size, void *ud)
{
    return proto_alloc_malloc(ud, size);
}

static void h2_free(void *p, void *ud)
{
    proto_alloc_free(ud, p);
}

static void *h2_calloc(size_t count, size_t size, void *ud)
{
    return proto_alloc_calloc(ud, count, size);
}

static void *h2_realloc(void *p, size_t size, void *ud)
{
    return proto_alloc_realloc(ud, p, size);
}

nghttp2_mem proto_alloc_nghttp2(struct proto_alloc *a)
{
    nghttp2_mem mem = {
        .mem_user_data = a,
        .malloc = h2_malloc,
        .free = h2_free,
        .calloc = h2_calloc,
        .realloc = h2_realloc,
    };
    return mem;
}

static void *zstd_alloc(void *opaque, size_t size)
{
    return proto_alloc_malloc(opaque, size);
}

static void zstd_free(void *opaque, void *address)
{
    proto_alloc_free(opaque, address);
}

ZSTD_customMem proto_alloc_zstd(struct proto_alloc *a)
{
    ZSTD_customMem mem = { zstd_alloc, zstd_free, a };
    return mem;
}
