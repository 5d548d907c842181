/*
 * Counting allocators: every byte the third-party libraries take (nghttp2's nghttp2_mem,
 * protobuf-c's ProtobufCAllocator) is counted, so tests can assert that it all comes back
 * and metrics show it. Each allocation carries a 16-byte header with its size.
 *
 * One struct proto_alloc is written by one thread (a core); any thread may read its counters.
 * For tests, an allocator can be told to fail its n-th allocation from now (an allocation-
 * failure sweep fails 1, 2, ... n in turn).
 *
 * An allocator may keep freed small blocks (size classes of 32 B to 4 KiB) for reuse, within
 * a byte budget (proto_alloc_cache): nghttp2 allocates and frees several small objects per
 * stream, and malloc was a sixth of a small gRPC call's CPU. Idle blocks are not counted as
 * live; under ASan they are poisoned while idle.
 */
#ifndef RINGCAS_PROTO_ALLOC_H
#define RINGCAS_PROTO_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>
#include <zstd.h>

#include "base/counter.h"

#define PROTO_ALLOC_CLASSES 8 /* idle-block classes: 32, 64, ... 4096 bytes */

struct proto_alloc {
    struct base_counter bytes;  /* live bytes handed out (gauge) */
    struct base_counter blocks; /* live allocations (gauge) */
    struct base_counter total;  /* allocations ever made (counter) */
    struct base_counter failed; /* allocations refused: injected, over <limit>, or malloc's */
    uint64_t fail_in;           /* test hook: the fail_in-th allocation from now fails; 0: off */
    uint64_t limit;             /* live bytes past which allocations fail; 0: none */
    /* private: */
    void *idle[PROTO_ALLOC_CLASSES];        /* per class, a stack of idle blocks */
    uint32_t idle_len[PROTO_ALLOC_CLASSES]; /* blocks on each stack */
    uint32_t idle_cap[PROTO_ALLOC_CLASSES]; /* at most this many; 0: the class is not kept */
};

/* Prepares <a> with zero counters and no failure injection. */
void proto_alloc_init(struct proto_alloc *a);

/*
 * Keeps up to <idle_max> bytes of freed blocks of at most 4 KiB (an equal share per size
 * class) for reuse by later allocations of <a>; 0 keeps none (the default). Call before the
 * first allocation. Blocks of a kept class are allocated at the class's full size.
 */
void proto_alloc_cache(struct proto_alloc *a, size_t idle_max);

/*
 * Makes allocations (and reallocations that grow) fail while they would take the live bytes
 * past <limit>; 0 (the default) sets no limit. Refusals count in <failed>.
 */
void proto_alloc_limit(struct proto_alloc *a, uint64_t limit);

/* Releases the idle blocks <a> kept. Its live blocks are the caller's business (counters). */
void proto_alloc_deinit(struct proto_alloc *a);

/* Makes the <n>-th allocation from now fail (1: the next one); 0 turns it off. Tests. */
void proto_alloc_fail_in(struct proto_alloc *a, uint64_t n);

/* malloc/calloc/realloc/free through <a>; NULL on failure. free and realloc accept NULL. */
void *proto_alloc_malloc(struct proto_alloc *a, size_t size);
void *proto_alloc_calloc(struct proto_alloc *a, size_t count, size_t size);
void *proto_alloc_realloc(struct proto_alloc *a, void *p, size_t size);
void proto_alloc_free(struct proto_alloc *a, void *p);

/* A ProtobufCAllocator that allocates through <a> (which must outlive its use). */
void proto_alloc_protobuf(struct proto_alloc *a, ProtobufCAllocator *out);

/* nghttp2's allocator over <a>, for nghttp2_session_*_new3 (which copies it); <a> must
 * outlive the session. */
nghttp2_mem proto_alloc_nghttp2(struct proto_alloc *a);

/* zstd's allocator over <a>, for ZSTD_create*_advanced; <a> must outlive the context. */
ZSTD_customMem proto_alloc_zstd(struct proto_alloc *a);

#endif /* RINGCAS_PROTO_ALLOC_H */
