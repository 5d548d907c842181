/*
 * Bump arena. Invariants: every block's used <= size; bytes_reserved is the sum of the
 * blocks' sizes (headers included) and never exceeds bytes_max.
 */
#include "base/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 16

struct base_arena_block {
    struct base_arena_block *next; /* older block */
    size_t size;                   /* usable bytes in data[] */
    size_t used;                   /* bytes handed out from data[] */
    _Alignas(ARENA_ALIGN) unsigned char data[];
};

void base_arena_init(struct base_arena *a, size_t block_size, size_t bytes_max)
{
    ASSERT(block_size > 0);
    ASSERT(bytes_max >= block_size);
    a->head = NULL;
    a->block_size = block_size;
    a->bytes_max = bytes_max;
    a->bytes_reserved = 0;
}

static void free_blocks(struct base_arena_block *b)
{
    while (b) {
        struct base_arena_block *next = b->next;
        free(b);
        b = next;
    }
}

void base_arena_deinit(struct base_arena *a)
{
    free_blocks(a->head);
    a->head = NULL;
    a->bytes_reserved = 0;
}

static struct base_arena_block *arena_grow(struct base_arena *a, size_t size)
{
    size_t usable = size > a->block_size ? size : a->block_size;
    size_t total = sizeof(struct base_arena_block) + usable;
    if (total < usable || a->bytes_reserved + total > a->bytes_max) return NULL;
    struct base_arena_block *b = malloc(total);
    if (!b) return NULL;
    b->size = usable;
    b->used = 0;
    b->next = a->head;
    a->head = b;
    a->bytes_reserved += total;
    return b;
}

void *base_arena_alloc(struct base_arena *a, size_t size)
{
    if (size == 0) size = 1;
    if (size > SIZE_MAX - ARENA_ALIGN) return NULL;
    size_t rounded = (size + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    struct base_arena_block *b = a->head;
    if (!b || b->size - b->used < rounded) {
        b = arena_grow(a, rounded);
        if (!b) return NULL;
    }
    void *p = b->data + b->used;
    b->used += rounded;
    DEBUG_ASSERT(b->used <= b->size);
    return p;
}

void *base_arena_calloc(struct base_arena *a, size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    void *p = base_arena_alloc(a, count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

char *base_arena_strndup(struct base_arena *a, const char *src, size_t len)
{
    if (len == SIZE_MAX) return NULL;
    char *p = base_arena_alloc(a, len + 1);
    if (!p) return NULL;
    memcpy(p, src, len);
    p[len] = '\0';
    return p;
}

void base_arena_reset(struct base_arena *a)
{
    /* Keep the oldest regular-sized block: it is the one every request needs. */
    struct base_arena_block *keep = NULL;
    struct base_arena_block *b = a->head;
    while (b) {
        struct base_arena_block *next = b->next;
        if (!keep && b->size == a->block_size && !next) {
            keep = b;
        } else {
            a->bytes_reserved -= sizeof(*b) + b->size;
            free(b);
        }
        b = next;
    }
    if (keep) {
        keep->used = 0;
        keep->next = NULL;
    }
    a->head = keep;
    ASSERT(keep || a->bytes_reserved == 0);
}
