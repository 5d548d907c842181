/*
 * The echo protocol of echo.h, built only on the public API of src/ring.
 */
#include "echo.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ring/buf.h"
#include "ring/conn.h"

static uint32_t echo_cores;

struct ring_server *echo_server_start(uint32_t cores, const struct echo_config *cfg)
{
    echo_cores = cores;
    struct ring_server *srv = NULL;
    char why[256] = "";
    int rc = echo_server_open(cores, cfg, &srv, why, sizeof(why));
    cr_assert(rc == 0, "server start: %d %s", rc, why);
    return srv;
}

struct ring_core *echo_core_create(uint32_t index, uint32_t bufs, uint32_t buf_size)
{
    struct ring_core_options o;
    ring_core_options_default(&o);
    o.ops_max = 64;
    o.recv_buf_count = bufs;
    o.recv_buf_size = buf_size;
    struct ring_core *core = NULL;
    char why[256] = "";
    int rc = ring_core_create(&o, index, &core, why, sizeof(why));
    cr_assert(rc == 0, "core: %d %s", rc, why);
    return core;
}

static void bare_recv(struct ring_conn *c, uint16_t bid, uint32_t len)
{
    struct echo_bare *b = (struct echo_bare *)c;
    b->received += len;
    if (len > 0) ring_buf_unref(c->core, bid);
}

static void bare_sent(struct ring_conn *c)
{
    ((struct echo_bare *)c)->sent++;
}

static void bare_close(struct ring_conn *c, int reason)
{
    struct echo_bare *b = (struct echo_bare *)c;
    b->closed++;
    b->reason = reason;
}

const struct ring_conn_ops echo_bare_ops = {
    .on_recv = bare_recv,
    .on_sent = bare_sent,
    .on_close = bare_close,
};

int echo_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "connect: %d", errno);
    struct timeval tv = { .tv_sec = 20 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

void echo_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue; /* SO_SNDTIMEO or not, a signal may cut in */
        cr_assert(n > 0, "send: %zd errno %d", n, errno);
        p += n;
        len -= (size_t)n;
    }
}

void echo_read_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        /* With SO_RCVTIMEO a signal fails the call (EINTR) instead of restarting it. */
        if (n < 0 && errno == EINTR) continue;
        cr_assert(n > 0, "recv: %zd errno %d", n, errno);
        p += n;
        len -= (size_t)n;
    }
}

bool echo_wait_counters(struct ring_server *srv, uint32_t ms,
                        bool (*pred)(const struct ring_counters_snapshot *s),
                        struct ring_counters_snapshot *last)
{
    struct timespec nap = { .tv_nsec = 2 * 1000 * 1000 };
    for (uint32_t waited = 0;; waited += 2) {
        ring_server_counters(srv, last);
        if (pred(last)) return true;
        if (waited >= ms) return false;
        nanosleep(&nap, NULL);
    }
}

bool echo_is_quiet(const struct ring_counters_snapshot *s)
{
    /* One multishot accept per core stays armed while the server runs. */
    return s->conns == 0 && s->bufs_out == 0 && s->ops_in_flight == echo_cores;
}

int echo_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

int echo_fd_count_settled(int want)
{
    /* Another thread of the process (the sanitizers' own) may hold a file for a moment:
     * count again for up to 2 s before reporting a different count. */
    int n = echo_fd_count();
    for (int i = 0; i < 200 && n != want; i++) { /* bounded: 2 s */
        usleep(10000);
        n = echo_fd_count();
    }
    return n;
}
