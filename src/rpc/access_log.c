/*
 * The access log (access_log.h): per-core line buffers, swapped out and written by one thread.
 */
#include "rpc/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "proto/status.h"

#define FIELD_MAX RPC_ACCESS_LOG_FIELD_MAX

/*
 * One core's lines: a ring of RPC_ACCESS_LOG_BUF bytes with one writer (the core) and one
 * reader (the log's thread), and no lock. The core copies a line in, then publishes <head>
 * (release); the thread writes out what lies before <head>, then gives it back by publishing
 * <tail> (release). A core never waits for the thread: a mutex would leave it asleep whenever
 * the thread was preempted holding it, on a machine whose CPUs the cores keep busy.
 */
struct log_core {
    char *buf;                /* RPC_ACCESS_LOG_BUF bytes */
    _Atomic uint64_t head;    /* bytes ever appended (the core's) */
    _Atomic uint64_t tail;    /* bytes ever taken (the thread's) */
    _Atomic uint64_t lines;   /* lines appended */
    _Atomic uint64_t dropped; /* lines dropped: no room, or the write failed */
    _Atomic bool wake_sent;   /* the thread was woken for the lines it has not taken yet */
    uint64_t sec;             /* the wall-clock second <sec_text> shows (the core's) */
    char sec_text[24];        /* "2026-11-29T13:05:01" */
} __attribute__((aligned(64)));

struct rpc_access_log {
    char *path;             /* NULL for standard output */
    int fd;                 /* the file, or 1 */
    uint32_t core_count;    /* entries in <cores> */
    struct log_core *cores; /* one per core */
    pthread_t thread;       /* writes the lines */
    pthread_mutex_t lock;   /* guards the flags below */
    pthread_cond_t cond;    /* signalled when one of them is set */
    bool wake;              /* a core's buffer is half full */
    bool reopen;            /* SIGUSR1: open <path> again */
    bool stop;              /* write what is left and end */
    uint64_t warned_ns;     /* the last write error's log line (thread only) */
};

/* ---- formatting ---- */

/* Appends the C string <s> without its NUL. */
static char *put_str(char *p, const char *s)
{
    while (*s) {
        *p++ = *s++;
    }
    return p;
}

/* Appends <s>/<len> as the inside of a JSON string, cut at FIELD_MAX bytes. Bytes outside
 * printable ASCII are written \u00XX: a client chooses them, and the line stays valid JSON
 * and one line. Returns the new end. */
static char *put_json(char *p, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    bool cut = len > FIELD_MAX;
    if (cut) len = FIELD_MAX;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            p = put_str(p, "\\u00");
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        } else {
            *p++ = (char)ch;
        }
    }
    return cut ? put_str(p, "...") : p;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) {
        *p++ = tmp[--n];
    }
    return p;
}

/* The second's text, formatted once per second per core (gmtime_r is the dear part). */
static const char *second_text(struct log_core *lc, uint64_t sec)
{
    if (lc->sec != sec || lc->sec_text[0] == '\0') {
        time_t t = (time_t)sec;
        struct tm tm;
        gmtime_r(&t, &tm);
        (void)strftime(lc->sec_text, sizeof(lc->sec_text), "%Y-%m-%dT%H:%M:%S", &tm);
        lc->sec = sec;
    }
    return lc->sec_text;
}

static size_t format_line(char *out, struct log_core *lc, const struct rpc_access_entry *e,
                          uint64_t wall_ns, uint32_t core)
{
    /* At most RPC_ACCESS_LOG_LINE_MAX: peer, route, target and message are each cut at
     * FIELD_MAX bytes by put_json. */
    char *p = out;
    uint64_t sec = wall_ns / BASE_NS_PER_S;
    unsigned ms = (unsigned)(wall_ns % BASE_NS_PER_S / BASE_NS_PER_MS);
    p = put_str(p, "{\"time\":\"");
    p = put_str(p, second_text(lc, sec));
    *p++ = '.';
    *p++ = (char)('0' + ms / 100);
    *p++ = (char)('0' + ms / 10 % 10);
    *p++ = (char)('0' + ms % 10);
    p = put_str(p, "Z\",\"core\":");
    p = put_u64(p, core);
    p = put_str(p, ",\"peer\":\"");
    p = put_json(p, e->peer, strlen(e->peer));
    p = put_str(p, e->grpc ? "\",\"proto\":\"grpc\",\"route\":\""
                           : "\",\"proto\":\"http\",\"route\":\"");
    p = put_json(p, e->route, strlen(e->route));
    *p++ = '"';
    if (e->target) {
        p = put_str(p, ",\"target\":\"");
        p = put_json(p, e->target, e->target_len);
        *p++ = '"';
    }
    p = put_str(p, ",\"status\":");
    p = put_u64(p, (uint64_t)(e->status < 0 ? 0 : e->status));
    if (e->grpc) {
        p = put_str(p, ",\"grpc_status\":\"");
        p = put_str(p, proto_status_name(e->status));
        *p++ = '"';
    }
    if (e->message && e->message[0]) {
        p = put_str(p, ",\"message\":\"");
        p = put_json(p, e->message, strlen(e->message));
        *p++ = '"';
    }
    p = put_str(p, ",\"bytes_in\":");
    p = put_u64(p, e->bytes_in);
    p = put_str(p, ",\"bytes_out\":");
    p = put_u64(p, e->bytes_out);
    p = put_str(p, ",\"duration_us\":");
    p = put_u64(p, e->duration_ns / 1000);
    p = put_str(p, "}\n");
    return (size_t)(p - out);
}

size_t rpc_access_log_format(char *out, const struct rpc_access_entry *e, uint64_t wall_ns,
                             uint32_t core)
{
    struct log_core lc = { .sec = 0 };
    return format_line(out, &lc, e, wall_ns, core);
}

/* ---- the cores' side ---- */

void rpc_access_log_add(struct rpc_access_log *log, uint32_t core, const struct rpc_access_entry *e)
{
    ASSERT(core < log->core_count);
    struct log_core *lc = &log->cores[core];
    char line[RPC_ACCESS_LOG_LINE_MAX];
    size_t n = format_line(line, lc, e, base_clock_wall_ns(), core);
    uint64_t head = atomic_load_explicit(&lc->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&lc->tail, memory_order_acquire);
    if (RPC_ACCESS_LOG_BUF - (head - tail) < n) {
        atomic_fetch_add_explicit(&lc->dropped, 1, memory_order_relaxed);
        return;
    }
    size_t at = (size_t)(head % RPC_ACCESS_LOG_BUF);
    size_t first = n < RPC_ACCESS_LOG_BUF - at ? n : RPC_ACCESS_LOG_BUF - at;
    memcpy(lc->buf + at, line, first);
    memcpy(lc->buf, line + first, n - first); /* the rest at the start, when it wraps */
    atomic_store_explicit(&lc->head, head + n, memory_order_release);
    atomic_fetch_add_explicit(&lc->lines, 1, memory_order_relaxed);
    /* One wake per half buffer: the thread clears wake_sent when it takes the lines. */
    bool half = head + n - tail >= RPC_ACCESS_LOG_BUF / 2;
    if (half && !atomic_exchange_explicit(&lc->wake_sent, true, memory_order_relaxed)) {
        pthread_mutex_lock(&log->lock);
        log->wake = true;
        pthread_cond_signal(&log->cond);
        pthread_mutex_unlock(&log->lock);
    }
}

/* ---- the thread ---- */

static int open_path(const char *path, int *fd_out)
{
    *fd_out = -1;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return -errno;
    *fd_out = fd;
    return 0;
}

static void reopen(struct rpc_access_log *log)
{
    if (!log->path) return; /* standard output is not rotated by renaming */
    int fd = -1;
    int rc = open_path(log->path, &fd);
    if (rc < 0) {
        /* Keep writing to the file we have: its lines are not lost, only misplaced. */
        LOG_ERROR("access log: cannot open %s again: %s; still writing to the file open before",
                  log->path, base_err_str(rc));
        return;
    }
    (void)close(log->fd);
    log->fd = fd;
    LOG_INFO("access log: %s opened again", log->path);
}

static size_t count_lines(const char *p, size_t n)
{
    size_t lines = 0;
    for (const char *end = p + n; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) {
        lines++;
    }
    return lines;
}

/* Writes <n> bytes of <lc>'s lines; what the file refuses is counted as dropped. */
static void write_out(struct rpc_access_log *log, struct log_core *lc, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(log->fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int err = w < 0 ? -errno : -EIO;
            atomic_fetch_add_explicit(&lc->dropped, count_lines(p, n), memory_order_relaxed);
            if (base_clock_every(&log->warned_ns, 60 * BASE_NS_PER_S)) {
                LOG_WARN("access log: cannot write %s: %s; its lines are dropped (counted in "
                         "ringcas_access_log_dropped_lines_total)",
                         log->path ? log->path : "standard output", base_err_str(err));
            }
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Writes out what core <lc> appended, in its order (two pieces when it wraps), and gives the
 * room back. */
static void flush_core(struct rpc_access_log *log, struct log_core *lc)
{
    atomic_store_explicit(&lc->wake_sent, false, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&lc->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&lc->head, memory_order_acquire);
    while (tail < head) {
        size_t at = (size_t)(tail % RPC_ACCESS_LOG_BUF);
        size_t n = (size_t)(head - tail);
        if (n > RPC_ACCESS_LOG_BUF - at) n = RPC_ACCESS_LOG_BUF - at;
        write_out(log, lc, lc->buf + at, n);
        tail += n;
    }
    atomic_store_explicit(&lc->tail, tail, memory_order_release);
}

static void *log_main(void *arg)
{
    struct rpc_access_log *log = arg;
    base_log_set_thread_name("access-log");
    for (;;) {
        pthread_mutex_lock(&log->lock);
        if (!log->wake && !log->stop && !log->reopen) {
            const struct timespec until =
                base_clock_timespec(base_clock_now_ns() + RPC_ACCESS_LOG_FLUSH_MS * BASE_NS_PER_MS);
            (void)pthread_cond_timedwait(&log->cond, &log->lock, &until);
        }
        bool stop = log->stop;
        bool again = log->reopen;
        log->wake = false;
        log->reopen = false;
        pthread_mutex_unlock(&log->lock);
        if (again) reopen(log);
        for (uint32_t i = 0; i < log->core_count; i++) {
            flush_core(log, &log->cores[i]);
        }
        if (stop) return NULL;
    }
}

/* ---- life ---- */

static void free_log(struct rpc_access_log *log)
{
    for (uint32_t i = 0; log->cores && i < log->core_count; i++) {
        free(log->cores[i].buf);
    }
    free(log->cores);
    free(log->path);
    pthread_cond_destroy(&log->cond);
    pthread_mutex_destroy(&log->lock);
    free(log);
}

int rpc_access_log_open(const char *path, uint32_t cores, struct rpc_access_log **out, char *why,
                        size_t why_size)
{
    *out = NULL;
    if (why_size > 0) why[0] = '\0';
    struct rpc_access_log *log = calloc(1, sizeof(*log));
    if (!log) return -ENOMEM;
    pthread_mutex_init(&log->lock, NULL);
    /* By the monotonic clock: after a step back of the wall clock, the lines of a quiet
     * server stayed unwritten that long. */
    int rc = base_clock_cond_init(&log->cond);
    ASSERT(rc == 0);
    log->core_count = cores;
    log->cores = aligned_alloc(64, sizeof(struct log_core) * cores);
    rc = log->cores ? 0 : -ENOMEM;
    if (log->cores) memset(log->cores, 0, sizeof(struct log_core) * cores);
    for (uint32_t i = 0; rc == 0 && i < cores; i++) {
        log->cores[i].buf = malloc(RPC_ACCESS_LOG_BUF);
        if (!log->cores[i].buf) rc = -ENOMEM;
    }
    if (rc == 0 && strcmp(path, "-") == 0) {
        log->fd = STDOUT_FILENO;
    } else if (rc == 0) {
        log->path = strdup(path);
        rc = log->path ? open_path(path, &log->fd) : -ENOMEM;
        if (rc < 0 && log->path) {
            (void)snprintf(why, why_size, "--access-log %s: cannot open it for appending: %s", path,
                           base_err_str(rc));
            free(log->path);
            log->path = NULL;
        }
    }
    if (rc == 0) {
        rc = -pthread_create(&log->thread, NULL, log_main, log);
        if (rc < 0 && log->path) (void)close(log->fd);
    }
    if (rc < 0) {
        if (why[0] == '\0') (void)snprintf(why, why_size, "access log: %s", base_err_str(rc));
        free_log(log);
        return rc;
    }
    *out = log;
    return 0;
}

void rpc_access_log_reopen(struct rpc_access_log *log)
{
    pthread_mutex_lock(&log->lock);
    log->reopen = true;
    pthread_cond_signal(&log->cond);
    pthread_mutex_unlock(&log->lock);
}

void rpc_access_log_close(struct rpc_access_log *log)
{
    if (!log) return;
    pthread_mutex_lock(&log->lock);
    log->stop = true;
    pthread_cond_signal(&log->cond);
    pthread_mutex_unlock(&log->lock);
    (void)pthread_join(log->thread, NULL);
    if (log->path) (void)close(log->fd);
    free_log(log);
}

uint64_t rpc_access_log_lines(const struct rpc_access_log *log, uint32_t core)
{
    if (!log || core >= log->core_count) return 0;
    return atomic_load_explicit(&log->cores[core].lines, memory_order_relaxed);
}

uint64_t rpc_access_log_dropped(const struct rpc_access_log *log, uint32_t core)
{
    if (!log || core >= log->core_count) return 0;
    return atomic_load_explicit(&log->cores[core].dropped, memory_order_relaxed);
}
