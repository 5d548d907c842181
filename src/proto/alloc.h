/*
 * Counting allocators: every byte the third-party libraries take (nghttp2's nghttp2_mem,
 * protobuf-c's ProtobufCAllocator) is counted, so tests can assert that it all comes back
 * and metrics show it. Each allocation carries a 16-byte header with its size.
 *
 * One struct proto_alloc is written by one thread (a core); any thread may read its counters.
 * For tests, an allocator can be told to fail its n-th allocation from now (an allocation-
 * failure sweep fails 1, 2, ... n in turn).
 */
#ifndef RINGCAS_PROTO_ALLOC_H
#define RINGCAS_PROTO_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "base/counter.h"

struct proto_alloc {
    struct base_counter bytes;  /* live bytes handed out (gauge) */
    struct base_counter blocks; /* live allocations (gauge) */
    struct base_counter total;  /* allocations ever made (counter) */
    struct base_counter failed; /* allocations refused (counter) */
    uint64_t fail_in;           /* test hook: the fail_in-th allocation from now fails; 0: off */
};

/* Prepares <a> with zero counters and no failure injection. */
void proto_alloc_init(struct proto_alloc *a);

/* Makes the <n>-th allocation from now fail (1: the next one); 0 turns it off. Tests. */
void proto_alloc_fail_in(struct proto_alloc *a, uint64_t n);

/* malloc/calloc/realloc/free through <a>; NULL on failure. free and realloc accept NULL. */
void *proto_alloc_malloc(struct proto_alloc *a, size_t size);
void *proto_alloc_calloc(struct proto_alloc *a, size_t count, size_t size);
void *proto_alloc_realloc(struct proto_alloc *a, void *p, size_t size);
void proto_alloc_free(struct proto_alloc *a, void *p);

/* A ProtobufCAllocator that allocates through <a> (which must outlive its use). */
void proto_alloc_protobuf(struct proto_alloc *a, ProtobufCAllocator *out);

#endif /* RINGCAS_PROTO_ALLOC_H */
