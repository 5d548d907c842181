/*
 * Line-at-a-time logging to stderr. The level is a relaxed atomic so any thread may read it;
 * the thread name is thread-local.
 */
#include "base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int log_level = BASE_LOG_INFO;
static _Thread_local char log_thread_name[24] = "main";

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void base_log_set_level(enum base_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

int base_log_parse_level(const char *name, enum base_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum base_log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

bool base_log_enabled(enum base_log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void base_log_set_thread_name(const char *name)
{
    (void)snprintf(log_thread_name, sizeof(log_thread_name), "%s", name);
}

void base_log(enum base_log_level level, const char *fmt, ...)
{
    if (!base_log_enabled(level)) return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int len = snprintf(line, sizeof(line),
                       "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ringcas[%s] %s: ", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                       ts.tv_nsec / 1000000, log_thread_name, level_names[level]);
    if (len < 0) return;
    va_list ap;
    va_start(ap, fmt);
    int more = vsnprintf(line + len, sizeof(line) - (size_t)len, fmt, ap);
    va_end(ap);
    size_t n = (size_t)len + (more > 0 ? (size_t)more : 0);
    if (n > sizeof(line) - 2) n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t rc = write(STDERR_FILENO, line, n);
    (void)rc; /* a log line that cannot be written has nowhere else to go */
}

int base_log_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
        /* open returns the lowest free descriptor: this one, since those below are open. */
        int got = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (got < 0) return -errno;
        if (got != fd) {
            (void)close(got);
            return -EBADF;
        }
    }
    return 0;
}
