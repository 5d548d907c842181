/*
 * A bump arena for per-request scratch memory (h2o mem pools, nginx pools).
 *
 * Allocations are carved from blocks; base_arena_reset() releases everything at once and keeps
 * the first block for the next request. The arena is bounded: past <bytes_max> an allocation
 * fails with NULL, which callers answer as RESOURCE_EXHAUSTED, never a crash or silent growth.
 * One arena belongs to one thread.
 */
#ifndef RINGCAS_BASE_ARENA_H
#define RINGCAS_BASE_ARENA_H

#include <stddef.h>

#include "base/assert.h"

struct base_arena_block;

struct base_arena {
    struct base_arena_block *head; /* newest block first; the last one is kept on reset */
    size_t block_size;             /* size of a regular block, bytes */
    size_t bytes_max;              /* bound on all blocks together, bytes */
    size_t bytes_reserved;         /* what the blocks hold now, bytes */
};

/*
 * Prepares <a> in the caller's memory. Blocks of <block_size> bytes are taken from malloc as
 * needed, up to <bytes_max> in all. Nothing is allocated until the first base_arena_alloc().
 */
void base_arena_init(struct base_arena *a, size_t block_size, size_t bytes_max);

/* Releases every block. <a> may be initialised again afterwards. */
void base_arena_deinit(struct base_arena *a);

/*
 * Returns <size> bytes aligned to 16, valid until the next reset or deinit; NULL when the
 * bound would be passed or malloc fails. Oversize requests get a block of their own.
 */
MUST_CHECK void *base_arena_alloc(struct base_arena *a, size_t size);

/* Like base_arena_alloc, zero-filled. */
MUST_CHECK void *base_arena_calloc(struct base_arena *a, size_t count, size_t size);

/* Copies <len> bytes of <src> into the arena and appends a NUL; NULL when full. */
MUST_CHECK char *base_arena_strndup(struct base_arena *a, const char *src, size_t len);

/* Forgets every allocation, keeping one regular block for reuse. */
void base_arena_reset(struct base_arena *a);

#endif /* RINGCAS_BASE_ARENA_H */
