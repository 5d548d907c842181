/*
 * Logging: one line per event on stderr, written with one write(2) so lines from different
 * cores never interleave. Each line carries a UTC timestamp, the thread's name (the core) and
 * the level. Log once, where an error is handled, naming the call and the object.
 */
#ifndef RINGCAS_BASE_LOG_H
#define RINGCAS_BASE_LOG_H

#include <stdbool.h>

enum base_log_level {
    BASE_LOG_ERROR = 0,
    BASE_LOG_WARN = 1,
    BASE_LOG_INFO = 2,
    BASE_LOG_DEBUG = 3,
};

/* Sets the most verbose level printed (process-wide; default INFO). */
void base_log_set_level(enum base_log_level level);

/* Parses "error", "warn", "info" or "debug"; returns 0 or -EINVAL. */
int base_log_parse_level(const char *name, enum base_log_level *out);

/* True when <level> would be printed. */
bool base_log_enabled(enum base_log_level level);

/*
 * Opens /dev/null on each of descriptors 0, 1 and 2 that is closed (a process started with
 * `1>&- 2>&-`): else the first files and sockets the process opens take them, and log lines,
 * or `get`'s blob bytes, would be written into a data file or a client's connection. Call
 * first thing in main. Returns 0, or the -errno of an open that failed.
 */
int base_log_std_fds(void);

/* Names the calling thread in its log lines ("main", "core 3"); <name> is copied. */
void base_log_set_thread_name(const char *name);

/* Formats and prints one line at <level>; lines longer than 1 KiB are cut. */
__attribute__((format(printf, 2, 3))) void base_log(enum base_log_level level, const char *fmt,
                                                    ...);

#define LOG_ERROR(...) base_log(BASE_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...)  base_log(BASE_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...)  base_log(BASE_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) base_log(BASE_LOG_DEBUG, __VA_ARGS__)

#endif /* RINGCAS_BASE_LOG_H */
