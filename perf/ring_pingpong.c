/*
 * ring_pingpong: what the ring and its linked timeouts cost on small messages.
 *
 * Runs the same 64-byte ping-pong against (a) the ring's echo server with 1 and 2 cores, with
 * and without linked timeouts on every receive and send, and (b) a plain blocking-socket echo
 * server (one thread per connection), one after the other in the same process, and prints a
 * Markdown table of round trips per second and latency percentiles.
 *
 *   ring_pingpong [--seconds S] [--conns N,N,...]
 *   ring_pingpong --stream [--seconds S]    64 MiB transfers: sendmsg vs sendmsg_zc
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "echo_server.h"
#include "ring/server.h"

#define MSG_BYTES    64
#define MAX_CONNS    64
#define HIST_BUCKETS 4096 /* 1 µs each, up to ~4 ms; slower round trips land in the last */

struct client {
    uint16_t port;
    double seconds;
    uint64_t round_trips;
    uint32_t hist[HIST_BUCKETS];
    pthread_barrier_t *start;
};

static int connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static bool exchange(int fd, char *buf)
{
    if (send(fd, buf, MSG_BYTES, MSG_NOSIGNAL) != MSG_BYTES) return false;
    size_t got = 0;
    while (got < MSG_BYTES) {
        ssize_t n = recv(fd, buf + got, MSG_BYTES - got, 0);
        if (n <= 0) return false;
        got += (size_t)n;
    }
    return true;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    int fd = connect_to(c->port);
    if (fd < 0) {
        (void)fprintf(stderr, "connect: %d\n", fd);
        exit(1);
    }
    char buf[MSG_BYTES];
    memset(buf, 'p', sizeof(buf));
    pthread_barrier_wait(c->start);
    uint64_t end = base_clock_now_ns() + (uint64_t)(c->seconds * 1e9);
    for (;;) {
        uint64_t t0 = base_clock_now_ns();
        if (t0 >= end) break;
        if (!exchange(fd, buf)) {
            (void)fprintf(stderr, "exchange failed\n");
            exit(1);
        }
        uint64_t us = (base_clock_now_ns() - t0) / 1000;
        c->hist[us < HIST_BUCKETS ? us : HIST_BUCKETS - 1]++;
        c->round_trips++;
    }
    close(fd);
    return NULL;
}

struct result {
    double per_second;
    uint32_t p50_us;
    uint32_t p99_us;
};

static uint32_t percentile(const uint64_t *hist, uint64_t total, double q)
{
    uint64_t want = (uint64_t)((double)total * q);
    uint64_t seen = 0;
    for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
        seen += hist[i];
        if (seen > want) return i;
    }
    return HIST_BUCKETS;
}

static struct result run_clients(uint16_t port, uint32_t conns, double seconds)
{
    struct client *cs = calloc(conns, sizeof(*cs));
    pthread_t *threads = calloc(conns, sizeof(*threads));
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, conns + 1);
    for (uint32_t i = 0; i < conns; i++) {
        cs[i].port = port; /* calloc'd: the histogram starts at zero */
        cs[i].seconds = seconds;
        cs[i].start = &start;
        pthread_create(&threads[i], NULL, client_main, &cs[i]);
    }
    pthread_barrier_wait(&start);
    uint64_t total = 0;
    static uint64_t hist[HIST_BUCKETS];
    memset(hist, 0, sizeof(hist));
    for (uint32_t i = 0; i < conns; i++) {
        pthread_join(threads[i], NULL);
        total += cs[i].round_trips;
        for (uint32_t b = 0; b < HIST_BUCKETS; b++)
            hist[b] += cs[i].hist[b];
    }
    pthread_barrier_destroy(&start);
    struct result r = {
        .per_second = (double)total / seconds,
        .p50_us = percentile(hist, total, 0.50),
        .p99_us = percentile(hist, total, 0.99),
    };
    free(cs);
    free(threads);
    return r;
}

/* ---- the blocking baseline: one thread per connection ---- */

struct blocking_server {
    int listen_fd;
    uint16_t port;
    pthread_t acceptor;
};

static void *blocking_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[MSG_BYTES];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        if (send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n) break;
    }
    close(fd);
    return NULL;
}

static void *blocking_accept(void *arg)
{
    struct blocking_server *s = arg;
    for (;;) {
        int fd = accept(s->listen_fd, NULL, NULL);
        if (fd < 0) return NULL; /* the listener was shut down */
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_t t;
        pthread_create(&t, NULL, blocking_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static void blocking_start(struct blocking_server *s)
{
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(s->listen_fd, 128) != 0 ||
        getsockname(s->listen_fd, (struct sockaddr *)&a, &len) != 0) {
        perror("blocking server");
        exit(1);
    }
    s->port = ntohs(a.sin_port);
    pthread_create(&s->acceptor, NULL, blocking_accept, s);
}

static void blocking_stop(struct blocking_server *s)
{
    shutdown(s->listen_fd, SHUT_RDWR);
    pthread_join(s->acceptor, NULL);
    close(s->listen_fd);
}

/* ---- stream: one 64 MiB transfer per round, plain sends vs zero-copy sends ---- */

static double stream_mb_per_s(uint32_t send_zc_min, double seconds)
{
    struct echo_config cfg = { .read_timeout_ms = 60000,
                               .write_timeout_ms = 30000,
                               .send_zc_min = send_zc_min };
    struct ring_server *srv;
    char why[256];
    if (echo_server_open(1, &cfg, &srv, why, sizeof(why)) != 0) {
        (void)fprintf(stderr, "ring server: %s\n", why);
        exit(1);
    }
    int fd = connect_to(ring_server_port(srv));
    static char buf[1 << 20];
    uint64_t bytes = 0;
    uint64_t start = base_clock_now_ns();
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    while (base_clock_now_ns() < end) {
        if (send(fd, "BLAST", 5, MSG_NOSIGNAL) != 5) exit(1);
        for (uint64_t got = 0; got < ECHO_BLAST_BYTES;) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);
            if (n <= 0) exit(1);
            got += (uint64_t)n;
        }
        bytes += ECHO_BLAST_BYTES;
    }
    double elapsed = (double)(base_clock_now_ns() - start) / 1e9;
    close(fd);
    if (ring_server_stop(srv) != 0) (void)fprintf(stderr, "ring server did not stop cleanly\n");
    return (double)bytes / elapsed / 1e6;
}

/* ---- main ---- */

static void print_row(const char *server, uint32_t conns, struct result r, double baseline)
{
    printf("| %-34s | %5u | %10.0f | %6u | %6u | %5.2f |\n", server, conns, r.per_second, r.p50_us,
           r.p99_us, baseline > 0 ? r.per_second / baseline : 1.0);
    (void)fflush(stdout);
}

static struct result ring_run(uint32_t cores, bool timeouts, uint32_t conns, double seconds)
{
    struct echo_config cfg = { 0 };
    if (timeouts) {
        cfg.read_timeout_ms = 60000;
        cfg.write_timeout_ms = 30000;
    }
    struct ring_server *srv;
    char why[256];
    if (echo_server_open(cores, &cfg, &srv, why, sizeof(why)) != 0) {
        (void)fprintf(stderr, "ring server: %s\n", why);
        exit(1);
    }
    struct result r = run_clients(ring_server_port(srv), conns, seconds);
    if (ring_server_stop(srv) != 0) (void)fprintf(stderr, "ring server did not stop cleanly\n");
    return r;
}

int main(int argc, char **argv)
{
    double seconds = 3;
    bool stream = false;
    uint32_t conn_list[8] = { 1, 2, 16 };
    uint32_t conn_count = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = strtod(argv[++i], NULL);
        } else if (strcmp(argv[i], "--stream") == 0) {
            stream = true;
        } else if (strcmp(argv[i], "--conns") == 0 && i + 1 < argc) {
            conn_count = 0;
            char *save = NULL;
            for (char *p = strtok_r(argv[++i], ",", &save); p && conn_count < 8;
                 p = strtok_r(NULL, ",", &save))
                conn_list[conn_count++] = (uint32_t)strtoul(p, NULL, 10);
        } else {
            (void)fprintf(stderr,
                          "usage: ring_pingpong [--seconds S] [--conns N,N,...] [--stream]\n");
            return 2;
        }
    }
    if (stream) {
        printf("| 64 MiB transfers, 1 core | MB/s |\n|---|---|\n");
        printf("| sendmsg | %.0f |\n", stream_mb_per_s(0, seconds));
        printf("| sendmsg_zc (≥ 64 KiB) | %.0f |\n", stream_mb_per_s(64 * 1024, seconds));
        return 0;
    }
    printf("| server | conns | round trips/s | p50 µs | p99 µs | × blocking |\n");
    printf("|---|---|---|---|---|---|\n");
    for (uint32_t k = 0; k < conn_count; k++) {
        uint32_t conns = conn_list[k] > MAX_CONNS ? MAX_CONNS : conn_list[k];
        struct blocking_server bs;
        blocking_start(&bs);
        struct result base = run_clients(bs.port, conns, seconds);
        blocking_stop(&bs);
        print_row("blocking sockets, thread per conn", conns, base, base.per_second);
        for (uint32_t cores = 1; cores <= 2; cores++) {
            for (int t = 1; t >= 0; t--) {
                char name[64];
                (void)snprintf(name, sizeof(name), "ring, %u core%s, %s", cores,
                               cores > 1 ? "s" : "", t ? "linked timeouts" : "no timeouts");
                print_row(name, conns, ring_run(cores, t, conns, seconds), base.per_second);
            }
        }
    }
    return 0;
}
