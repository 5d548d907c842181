/*
 * ASan's manual poisoning, for memory that pools keep instead of freeing: a block handed back
 * to its pool is poisoned, so a use after release is reported as with free(); a block taken
 * again is unpoisoned first. Builds without ASan (RC_ASAN unset) compile these to nothing.
 */
#ifndef RINGCAS_BASE_ASAN_H
#define RINGCAS_BASE_ASAN_H

#include <stddef.h>

#ifdef RC_ASAN
#    include <sanitizer/asan_interface.h>

/* Marks the <n> bytes at <p> unaddressable until base_asan_unpoison. */
static inline void base_asan_poison(const void *p, size_t n)
{
    __asan_poison_memory_region(p, n);
}

/* Marks the <n> bytes at <p> addressable again. */
static inline void base_asan_unpoison(const void *p, size_t n)
{
    __asan_unpoison_memory_region(p, n);
}
#else
static inline void base_asan_poison(const void *p, size_t n)
{
    (void)p;
    (void)n;
}

static inline void base_asan_unpoison(const void *p, size_t n)
{
    (void)p;
    (void)n;
}
#endif

#endif /* RINGCAS_BASE_ASAN_H */
