/*
 * Counting allocators over malloc. The header in front of each block keeps the size so free
 * can uncount it; it is 16 bytes so the caller's pointer keeps malloc's alignment.
 */
#include "proto/alloc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"

struct header {
    size_t size;     /* bytes the caller asked for */
    size_t reserved; /* pads the header to 16 bytes */
};

STATIC_ASSERT(sizeof(struct header) == 16, "header keeps 16-byte alignment");

void proto_alloc_init(struct proto_alloc *a)
{
    memset(a, 0, sizeof(*a));
}

void proto_alloc_fail_in(struct proto_alloc *a, uint64_t n)
{
    a->fail_in = n;
}

static bool should_fail(struct proto_alloc *a)
{
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
    if (size > SIZE_MAX - sizeof(struct header) || should_fail(a)) return NULL;
    struct header *h = malloc(sizeof(*h) + size);
    if (!h) return NULL;
    h->size = size;
    count(a, size);
    return h + 1;
}

void *proto_alloc_calloc(struct proto_alloc *a, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size) return NULL;
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
    free(h);
}

void *proto_alloc_realloc(struct proto_alloc *a, void *p, size_t size)
{
    if (!p) return proto_alloc_malloc(a, size);
    struct header *old = (struct header *)p - 1;
    if (size > SIZE_MAX - sizeof(struct header) || should_fail(a)) return NULL;
    size_t old_size = old->size;
    struct header *h = realloc(old, sizeof(*h) + size);
    if (!h) return NULL;
    h->size = size;
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
