/*
 * Time: monotonic nanoseconds for deadlines and latencies, and the few conversions ringcas
 * needs. CLOCK_MONOTONIC is the clock io_uring's timeouts use by default.
 */
#ifndef RINGCAS_BASE_CLOCK_H
#define RINGCAS_BASE_CLOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define BASE_NS_PER_US 1000ULL
#define BASE_NS_PER_MS 1000000ULL
#define BASE_NS_PER_S  1000000000ULL

/* Returns CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t base_clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * BASE_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* Returns CLOCK_REALTIME in nanoseconds since the Unix epoch (for timestamps on disk). */
static inline uint64_t base_clock_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * BASE_NS_PER_S + (uint64_t)ts.tv_nsec;
}

/* <ns> nanoseconds as a timespec: a duration, or a time of base_clock_now_ns's clock. */
static inline struct timespec base_clock_timespec(uint64_t ns)
{
    return (struct timespec){ .tv_sec = (time_t)(ns / BASE_NS_PER_S),
                              .tv_nsec = (long)(ns % BASE_NS_PER_S) };
}

/*
 * Initializes <cond> to time its waits by CLOCK_MONOTONIC, so that pthread_cond_timedwait
 * until base_clock_timespec(base_clock_now_ns() + d) lasts d: a wait until a wall-clock time
 * lasts as much longer as the clock steps back meanwhile (NTP, date -s). 0 or an errno.
 */
static inline int base_clock_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc == 0) rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(cond, &ca);
    pthread_condattr_destroy(&ca);
    return rc;
}

/*
 * True at most once per <period_ns> for the same *<last_ns> (0 before the first time), which
 * it then sets: for logs a flood would repeat (one writer thread per *<last_ns>).
 */
static inline bool base_clock_every(uint64_t *last_ns, uint64_t period_ns)
{
    uint64_t now = base_clock_now_ns();
    if (*last_ns != 0 && now - *last_ns < period_ns) return false;
    *last_ns = now;
    return true;
}

#endif /* RINGCAS_BASE_CLOCK_H */
