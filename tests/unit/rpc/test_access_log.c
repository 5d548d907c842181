/*
 * The access log's lines (what a log pipeline parses) and its thread (every line a core hands
 * over reaches the file whole, and what the file refuses is counted).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "rpc/access_log.h"

/* 2026-11-29T13:05:01.284Z */
#define WALL_NS (1795957501ULL * 1000000000ULL + 284000000ULL)

Test(rpc_access_log, an_http_line_has_every_field)
{
    const struct rpc_access_entry e = {
        .peer = "127.0.0.1:49064",
        .route = "PUT /cas",
        .target = "/cas/ab",
        .target_len = 7,
        .status = 201,
        .bytes_in = 6,
        .bytes_out = 0,
        .duration_ns = 3590123,
    };
    static char out[RPC_ACCESS_LOG_LINE_MAX + 1];
    size_t n = rpc_access_log_format(out, &e, WALL_NS, 1);
    out[n] = '\0';
    cr_assert(eq(str, out,
                 "{\"time\":\"2026-11-29T13:05:01.284Z\",\"core\":1,\"peer\":\"127.0.0.1:49064\","
                 "\"proto\":\"http\",\"route\":\"PUT /cas\",\"target\":\"/cas/ab\",\"status\":201,"
                 "\"bytes_in\":6,\"bytes_out\":0,\"duration_us\":3590}\n"));
}

Test(rpc_access_log, a_grpc_line_names_its_code_and_message)
{
    const struct rpc_access_entry e = {
        .peer = "[::1]:40312",
        .route = "google.bytestream.ByteStream/Read",
        .target = "blobs/00/5",
        .target_len = 10,
        .message = "not found",
        .status = 5,
        .grpc = true,
        .bytes_in = 79,
        .duration_ns = 999,
    };
    static char out[RPC_ACCESS_LOG_LINE_MAX + 1];
    size_t n = rpc_access_log_format(out, &e, WALL_NS, 0);
    out[n] = '\0';
    cr_assert(eq(str, out,
                 "{\"time\":\"2026-11-29T13:05:01.284Z\",\"core\":0,\"peer\":\"[::1]:40312\","
                 "\"proto\":\"grpc\",\"route\":\"google.bytestream.ByteStream/Read\","
                 "\"target\":\"blobs/00/5\",\"status\":5,\"grpc_status\":\"NOT_FOUND\","
                 "\"message\":\"not found\",\"bytes_in\":79,\"bytes_out\":0,\"duration_us\":0}\n"));
}

/* A client chooses the target and the method's name: quotes, backslashes, control and
 * non-ASCII bytes are escaped, so a line stays one line of valid JSON. */
Test(rpc_access_log, what_a_client_chose_is_escaped)
{
    static const char target[] = "/a\"b\\c\nd\x01\xff";
    const struct rpc_access_entry e = {
        .peer = "p",
        .route = "x/\"y\"",
        .target = target,
        .target_len = sizeof(target) - 1,
        .status = 404,
    };
    static char out[RPC_ACCESS_LOG_LINE_MAX + 1];
    size_t n = rpc_access_log_format(out, &e, WALL_NS, 0);
    out[n] = '\0';
    cr_assert(not(eq(ptr, strstr(out, "\"route\":\"x/\\\"y\\\"\""), NULL)), "%s", out);
    cr_assert(not(eq(ptr, strstr(out, "\"target\":\"/a\\\"b\\\\c\\u000ad\\u0001\\u00ff\""), NULL)),
              "%s", out);
    cr_assert(eq(ptr, memchr(out, '\n', n - 1), NULL), "one line: %s", out);
}

/* A long target is cut at RPC_ACCESS_LOG_FIELD_MAX bytes and says so; the worst case (every
 * byte escaped, in every field) fits RPC_ACCESS_LOG_LINE_MAX. */
Test(rpc_access_log, long_fields_are_cut_and_marked)
{
    static char big[4096];
    memset(big, 'a', sizeof(big));
    const struct rpc_access_entry e = {
        .peer = "p", .route = "r", .target = big, .target_len = sizeof(big), .status = 200
    };
    static char out[RPC_ACCESS_LOG_LINE_MAX + 1];
    size_t n = rpc_access_log_format(out, &e, WALL_NS, 0);
    out[n] = '\0';
    char want[RPC_ACCESS_LOG_FIELD_MAX + 16];
    memset(want, 'a', RPC_ACCESS_LOG_FIELD_MAX);
    memcpy(want + RPC_ACCESS_LOG_FIELD_MAX, "...\"", 5);
    cr_assert(not(eq(ptr, strstr(out, want), NULL)), "%s", out);

    static char ctl[4096];
    memset(ctl, 1, sizeof(ctl) - 1);
    ctl[sizeof(ctl) - 1] = '\0';
    const struct rpc_access_entry worst = { .peer = ctl,
                                            .route = ctl,
                                            .target = ctl,
                                            .target_len = sizeof(ctl) - 1,
                                            .message = ctl,
                                            .status = 16,
                                            .grpc = true,
                                            .bytes_in = UINT64_MAX,
                                            .bytes_out = UINT64_MAX,
                                            .duration_ns = UINT64_MAX };
    n = rpc_access_log_format(out, &worst, UINT64_MAX, UINT32_MAX);
    cr_assert(le(sz, n, sizeof(out)));
    cr_assert(eq(chr, out[n - 1], '\n'));
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    cr_assert(not(eq(ptr, f, NULL)));
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    for (size_t got; (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *len = n;
    return buf;
}

struct writer {
    struct rpc_access_log *log;
    uint32_t core;
    uint32_t lines;
};

static void *write_lines(void *arg)
{
    struct writer *w = arg;
    char target[64];
    for (uint32_t i = 0; i < w->lines; i++) {
        int n = snprintf(target, sizeof(target), "/k/%u/%u", w->core, i);
        const struct rpc_access_entry e = { .peer = "127.0.0.1:1",
                                            .route = "GET /key",
                                            .target = target,
                                            .target_len = (size_t)n,
                                            .status = 200 };
        rpc_access_log_add(w->log, w->core, &e);
        if (i % 100 == 99) usleep(1000); /* a busy core's pace, not a flood */
    }
    return NULL;
}

/* Two cores' lines, while the thread writes them out: each reaches the file once and whole. */
Test(rpc_access_log, every_line_reaches_the_file_whole)
{
    char path[] = "/tmp/rc_access_log_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(ge(int, fd, 0));
    close(fd);
    struct rpc_access_log *log;
    char why[256] = "";
    cr_assert(eq(int, rpc_access_log_open(path, 2, &log, why, sizeof(why)), 0), "%s", why);
    struct writer w[2] = { { log, 0, 20000 }, { log, 1, 20000 } };
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, write_lines, &w[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    uint64_t lines = rpc_access_log_lines(log, 0) + rpc_access_log_lines(log, 1);
    uint64_t dropped = rpc_access_log_dropped(log, 0) + rpc_access_log_dropped(log, 1);
    rpc_access_log_close(log);
    cr_assert(eq(u64, lines + dropped, 40000));
    cr_assert(eq(u64, dropped, 0));
    size_t len;
    char *text = read_all(path, &len);
    unlink(path);
    /* Each core's lines in its order, each whole. */
    uint32_t next[2] = { 0, 0 };
    size_t count = 0;
    for (char *line = text; line < text + len; count++) {
        char *eol = memchr(line, '\n', (size_t)(text + len - line));
        cr_assert(not(eq(ptr, eol, NULL)), "a cut line at byte %zu", (size_t)(line - text));
        *eol = '\0';
        unsigned core, i;
        const char *at = strstr(line, "\"target\":\"/k/");
        cr_assert(at != NULL, "%s", line);
        cr_assert(eq(int, sscanf(at, "\"target\":\"/k/%u/%u\"", &core, &i), 2), "%s", line);
        cr_assert(lt(u32, core, 2));
        cr_assert(eq(u32, i, next[core]), "%s", line);
        next[core]++;
        cr_assert(eq(int, line[0], '{'));
        cr_assert(eq(int, eol[-1], '}'));
        line = eol + 1;
    }
    cr_assert(eq(sz, count, 40000));
    free(text);
}

struct drain {
    int fd;       /* the FIFO's read end */
    size_t lines; /* newlines read */
};

static void *drain_fifo(void *arg)
{
    struct drain *d = arg;
    static char buf[65536];
    ssize_t n;
    /* Bounded: ends at EOF, when the log closes the FIFO's write end. */
    while ((n = read(d->fd, buf, sizeof(buf))) != 0) {
        if (n < 0 && errno == EINTR) continue;
        cr_assert(gt(sz, (size_t)n, 0));
        for (ssize_t i = 0; i < n; i++) {
            d->lines += buf[i] == '\n';
        }
    }
    return NULL;
}

/* A file the thread cannot write to for a while (a FIFO nobody reads: its write blocks, as on
 * a stalled disk). The core's unwritten lines are bounded by its ring: the lines past it are
 * dropped and counted, and the core never waits. Once a reader comes, every line kept reaches
 * it. */
Test(rpc_access_log, a_stalled_file_fills_the_ring_and_the_rest_is_dropped)
{
    char dir[] = "/tmp/rc_access_fifo_XXXXXX";
    cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
    char path[64];
    (void)snprintf(path, sizeof(path), "%s/fifo", dir);
    cr_assert(eq(int, mkfifo(path, 0600), 0));
    struct drain d = { .fd = open(path, O_RDONLY | O_NONBLOCK) };
    cr_assert(ge(int, d.fd, 0));
    struct rpc_access_log *log;
    char why[256] = "";
    cr_assert(eq(int, rpc_access_log_open(path, 1, &log, why, sizeof(why)), 0), "%s", why);
    /* About 3 MB of lines: more than the ring and the pipe hold together. */
    struct writer w = { log, 0, 20000 };
    write_lines(&w);
    uint64_t lines = rpc_access_log_lines(log, 0);
    uint64_t dropped = rpc_access_log_dropped(log, 0);
    cr_assert(eq(u64, lines + dropped, 20000));
    cr_assert(gt(u64, dropped, 0), "the unwritten lines outgrew the ring");
    cr_assert(eq(int, fcntl(d.fd, F_SETFL, 0), 0)); /* the reader blocks now */
    pthread_t t;
    cr_assert(eq(int, pthread_create(&t, NULL, drain_fifo, &d), 0));
    rpc_access_log_close(log); /* writes what the ring kept, then closes the FIFO */
    pthread_join(t, NULL);
    (void)close(d.fd);
    (void)unlink(path);
    (void)rmdir(dir);
    cr_assert(eq(sz, d.lines, lines));
}

/* A file that refuses the lines (a full disk: /dev/full) loses them, counted, and the cores
 * are never held up. */
Test(rpc_access_log, lines_the_file_refuses_are_counted_as_dropped)
{
    struct rpc_access_log *log;
    char why[256] = "";
    cr_assert(eq(int, rpc_access_log_open("/dev/full", 1, &log, why, sizeof(why)), 0), "%s", why);
    struct writer w = { log, 0, 500 };
    write_lines(&w);
    /* The thread's next flush (every RPC_ACCESS_LOG_FLUSH_MS) meets the full disk. */
    for (int i = 0; i < 500 && rpc_access_log_dropped(log, 0) < 500; i++)
        usleep(10000);
    cr_assert(eq(u64, rpc_access_log_lines(log, 0), 500));
    cr_assert(eq(u64, rpc_access_log_dropped(log, 0), 500));
    rpc_access_log_close(log);
}

Test(rpc_access_log, a_path_that_cannot_be_opened_is_named)
{
    struct rpc_access_log *log = (struct rpc_access_log *)1;
    char why[256] = "";
    int rc = rpc_access_log_open("/nonexistent/dir/access.log", 1, &log, why, sizeof(why));
    cr_assert(eq(int, rc, -ENOENT));
    cr_assert(eq(ptr, log, NULL));
    cr_assert(eq(str, why,
                 "--access-log /nonexistent/dir/access.log: cannot open it for appending: "
                 "not found"));
}
