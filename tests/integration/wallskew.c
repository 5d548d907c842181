/*
 * wallskew: an LD_PRELOAD library that moves the process's reading of the wall clock
 * (CLOCK_REALTIME, CLOCK_REALTIME_COARSE) by RC_WALL_SKEW_S seconds, and leaves every other
 * clock alone. The kernel's own wall clock does not move, so a wait until "the wall clock
 * read now, plus 100 ms" lasts the skew more: what a step back of the clock between the
 * reading and the wait (NTP correcting a pod that started fast, an operator's `date -s`) does
 * to a wait on the wall clock. A wait on CLOCK_MONOTONIC does not notice.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

typedef int clock_gettime_fn(clockid_t, struct timespec *);

static clock_gettime_fn *real;
static long skew;

/* Before main; also from the first call, for a runtime that reads a clock before that. */
__attribute__((constructor)) static void wallskew_init(void)
{
    if (real) return;
    const char *s = getenv("RC_WALL_SKEW_S");
    skew = s ? strtol(s, NULL, 10) : 0;
    *(void **)&real = dlsym(RTLD_NEXT, "clock_gettime"); /* POSIX's way to a function */
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    if (!real) wallskew_init();
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) ts->tv_sec += skew;
    return rc;
}
