/*
 * The failure path of ASSERT: one report on stderr, then abort().
 *
 * It must work when the process is already broken, so it formats into a stack buffer, writes
 * with write(2) and uses backtrace_symbols_fd(), which does not allocate.
 */
#include "base/assert.h"

#include <execinfo.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

_Noreturn void base_assert_fail(const char *expr, const char *file, int line)
{
    char msg[512];
    int len =
        snprintf(msg, sizeof(msg), "ringcas: assertion failed: %s (%s:%d)\n", expr, file, line);
    if (len > 0) {
        size_t n = (size_t)len < sizeof(msg) ? (size_t)len : sizeof(msg) - 1;
        ssize_t rc = write(STDERR_FILENO, msg, n);
        (void)rc; /* nothing better to do when stderr is gone */
    }
    void *frames[64];
    int count = backtrace(frames, (int)ARRAY_LEN(frames));
    backtrace_symbols_fd(frames, count, STDERR_FILENO);
    abort();
}
