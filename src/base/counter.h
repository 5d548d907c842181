/*
 * Live counters: written by one core's thread, read by any thread (metrics, tests).
 *
 * A counter has one writer, so it needs no read-modify-write atomic (a lock-prefixed
 * instruction on x86): the writer loads and stores relaxed, readers load relaxed. Counters
 * shared by several writers use base_counter_add_shared(), which is a real atomic add.
 */
#ifndef RINGCAS_BASE_COUNTER_H
#define RINGCAS_BASE_COUNTER_H

#include <stdatomic.h>
#include <stdint.h>

struct base_counter {
    _Atomic uint64_t value; /* single writer unless added with _shared */
};

/* Adds <n> (may wrap to "subtract" with a negative cast); only the owning thread calls it. */
static inline void base_counter_add(struct base_counter *c, uint64_t n)
{
    uint64_t v = atomic_load_explicit(&c->value, memory_order_relaxed);
    atomic_store_explicit(&c->value, v + n, memory_order_relaxed);
}

static inline void base_counter_inc(struct base_counter *c)
{
    base_counter_add(c, 1);
}

static inline void base_counter_dec(struct base_counter *c)
{
    base_counter_add(c, (uint64_t)-1);
}

/* Adds <n> from any thread. */
static inline void base_counter_add_shared(struct base_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

/* Reads the counter from any thread. */
static inline uint64_t base_counter_get(const struct base_counter *c)
{
    return atomic_load_explicit(&c->value, memory_order_relaxed);
}

/* Sets a gauge; only the owning thread calls it. */
static inline void base_counter_set(struct base_counter *c, uint64_t v)
{
    atomic_store_explicit(&c->value, v, memory_order_relaxed);
}

#endif /* RINGCAS_BASE_COUNTER_H */
