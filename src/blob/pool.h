/*
 * A per-core pool of the engine's large buffers: readers' chunk records and decoded chunks,
 * uploads' chunk buffers. Without it each request's 256 KiB buffers went through malloc, and
 * glibc handed them back to the kernel on free (mmap threshold, heap trimming): the next
 * request faulted fresh zeroed pages in again (perf: about half the CPU of a 64 KiB GET).
 *
 * Buffers come in size classes: powers of two from 4 KiB up to the chunk size, and one class
 * for the largest chunk record (a raw frame of a whole chunk and its header). Every buffer is
 * 4096-aligned (O_DIRECT-ready). A size past the largest class (data written with a larger
 * chunk size than the store's now) is allocated and freed as it comes. Idle buffers are kept
 * per class up to <idle_max> bytes in all (a gauge counts them); past that a released buffer
 * is freed. Under ASan idle buffers are poisoned, so a use after release is caught as it
 * would be after free.
 *
 * One core's thread only; no lock.
 */
#ifndef RINGCAS_BLOB_POOL_H
#define RINGCAS_BLOB_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "base/counter.h"

#define BLOB_POOL_CLASSES_MAX 10 /* 4 KiB .. 1 MiB, and the record class */

struct blob_pool_class {
    size_t size;  /* bytes of each buffer of the class, a multiple of 4096 */
    void **idle;  /* idle buffers, a stack */
    uint32_t len; /* idle buffers held */
    uint32_t cap; /* room in <idle> */
};

struct blob_pool {
    struct blob_pool_class classes[BLOB_POOL_CLASSES_MAX]; /* ascending sizes */
    uint32_t class_count;                                  /* classes in use */
    uint64_t idle_bytes;                                   /* bytes of idle buffers */
    uint64_t idle_max;                                     /* bound of idle_bytes */
    struct base_counter *idle_gauge;                       /* mirrors idle_bytes */
    struct base_counter *taken_gauge;                      /* buffers handed out, not back */
};

/*
 * Prepares the classes for <chunk_size> (a power of two, 4 KiB .. 1 MiB) and <record_size>
 * (the largest buffer asked for, above chunk_size). Keeps at most <idle_max> bytes idle.
 * <idle_gauge> and <taken_gauge> are the owner's counters. Returns 0 or -ENOMEM.
 */
MUST_CHECK int blob_pool_init(struct blob_pool *p, uint32_t chunk_size, size_t record_size,
                              uint64_t idle_max, struct base_counter *idle_gauge,
                              struct base_counter *taken_gauge);

/* Frees the idle buffers and the pool; every buffer must have been put back. */
void blob_pool_deinit(struct blob_pool *p);

/* The capacity of the buffer blob_pool_get hands out for <size> > 0 bytes. */
size_t blob_pool_class_size(const struct blob_pool *p, size_t size);

/*
 * Returns a 4096-aligned buffer of blob_pool_class_size(<size>) bytes, an idle one when there
 * is one (its bytes are whatever they were), or NULL when out of memory. Release it with
 * blob_pool_put and the same <size>.
 */
void *blob_pool_get(struct blob_pool *p, size_t size);

/* Gives back <buf> taken for <size> bytes: kept idle within the bound, else freed. NULL is
 * accepted. */
void blob_pool_put(struct blob_pool *p, void *buf, size_t size);

#endif /* RINGCAS_BLOB_POOL_H */
