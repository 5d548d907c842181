/*
 * Connections on the real ring over 127.0.0.1: timeouts, cancellation, leaks, drain.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "echo.h"

static bool has_read_timeout(const struct ring_counters_snapshot *s)
{
    return s->read_timeouts == 1 && s->conns == 0;
}

static bool has_write_timeout(const struct ring_counters_snapshot *s)
{
    return s->write_timeouts == 1 && s->conns == 0;
}

Test(ring_conn, echoes_bytes)
{
    struct echo_config cfg = { .read_timeout_ms = 5000, .write_timeout_ms = 5000 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    int fd = echo_connect(ring_server_port(srv));
    char out[1000];
    char in[1000];
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < sizeof(out); i++)
            out[i] = (char)(i * 7 + (size_t)round);
        echo_write_all(fd, out, sizeof(out));
        echo_read_exact(fd, in, sizeof(in));
        cr_assert(eq(int, memcmp(in, out, sizeof(out)), 0));
    }
    close(fd);
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 5000, echo_is_quiet, &s), "conns %lu bufs %lu ops %lu",
              s.conns, s.bufs_out, s.ops_in_flight);
    cr_assert(eq(u64, s.bytes_in, 50 * 1000));
    cr_assert(eq(u64, s.bytes_out, 50 * 1000));
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

Test(ring_conn, silent_peer_is_closed_by_read_timeout)
{
    struct echo_config cfg = { .read_timeout_ms = 200, .write_timeout_ms = 5000 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    uint64_t start = base_clock_now_ns();
    int fd = echo_connect(ring_server_port(srv));
    char b;
    ssize_t n = recv(fd, &b, 1, 0); /* blocks until the server closes */
    uint64_t waited_ms = (base_clock_now_ns() - start) / BASE_NS_PER_MS;
    cr_assert(eq(sz, (size_t)n, 0), "expected EOF, got %zd errno %d", n, errno);
    cr_assert(ge(u64, waited_ms, 150));
    cr_assert(lt(u64, waited_ms, 5000));
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 2000, has_read_timeout, &s));
    cr_assert(eq(u64, s.timeouts, 1));
    cr_assert(eq(u64, s.write_timeouts, 0));
    cr_assert(echo_wait_counters(srv, 2000, echo_is_quiet, &s));
    close(fd);
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

Test(ring_conn, active_peer_is_not_timed_out)
{
    struct echo_config cfg = { .read_timeout_ms = 300, .write_timeout_ms = 5000 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    int fd = echo_connect(ring_server_port(srv));
    struct timespec nap = { .tv_nsec = 100 * 1000 * 1000 };
    for (int i = 0; i < 10; i++) { /* 1 s in all, never 300 ms of silence */
        echo_write_all(fd, "ping", 4);
        char in[4];
        echo_read_exact(fd, in, 4);
        nanosleep(&nap, NULL);
    }
    struct ring_counters_snapshot s;
    ring_server_counters(srv, &s);
    cr_assert(eq(u64, s.timeouts, 0));
    cr_assert(eq(u64, s.conns, 1));
    close(fd);
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

Test(ring_conn, reader_that_stops_is_closed_by_write_timeout)
{
    struct echo_config cfg = { .read_timeout_ms = 10000, .write_timeout_ms = 300 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    int fd = echo_connect(ring_server_port(srv));
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    echo_write_all(fd, "BLAST", 5);
    /* Read a little so the transfer is known to be in progress, then stop reading. */
    char buf[4096];
    echo_read_exact(fd, buf, sizeof(buf));
    cr_assert(eq(chr, buf[0], 'b'));
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 5000, has_write_timeout, &s), "write timeouts %lu conns %lu",
              s.write_timeouts, s.conns);
    cr_assert(lt(u64, s.bytes_out, ECHO_BLAST_BYTES));
    cr_assert(eq(u64, s.read_timeouts, 0));
    cr_assert(echo_wait_counters(srv, 2000, echo_is_quiet, &s));
    close(fd);
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

static bool one_conn_sending(const struct ring_counters_snapshot *s)
{
    /* accept + recv + send of the blasting connection */
    return s->conns == 1 && s->ops_in_flight == 3;
}

Test(ring_conn, close_cancels_pending_recv_and_send)
{
    struct echo_config cfg = { .read_timeout_ms = 10000, .write_timeout_ms = 10000 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    int fd = echo_connect(ring_server_port(srv));
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    echo_write_all(fd, "BLAST", 5);
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 5000, one_conn_sending, &s), "ops %lu conns %lu",
              s.ops_in_flight, s.conns);
    uint64_t cancels_before = s.cancels;
    /* The server receives QUIT while its 64 MiB send is stuck, and closes: both the
     * receive it re-armed and the send must be cancelled before the connection goes. */
    echo_write_all(fd, "QUIT", 4);
    cr_assert(echo_wait_counters(srv, 5000, echo_is_quiet, &s), "conns %lu bufs %lu ops %lu",
              s.conns, s.bufs_out, s.ops_in_flight);
    cr_assert(ge(u64, s.cancels - cancels_before, 2));
    cr_assert(eq(u64, s.timeouts, 0));
    cr_assert(eq(u64, s.stale_cqes, 0));
    close(fd);
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

Test(ring_conn, ten_thousand_connect_close_cycles_leak_nothing, .timeout = 240)
{
    struct echo_config cfg = { .read_timeout_ms = 5000, .write_timeout_ms = 5000 };
    struct ring_server *srv = echo_server_start(2, &cfg);
    uint16_t port = ring_server_port(srv);
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 2000, echo_is_quiet, &s));
    int fds_before = echo_fd_count();
    for (int i = 0; i < 10000; i++) {
        int fd = echo_connect(port);
        if (i % 3 == 0) { /* a third of them exchange a byte first */
            echo_write_all(fd, "x", 1);
            char c;
            echo_read_exact(fd, &c, 1);
        }
        close(fd);
    }
    cr_assert(echo_wait_counters(srv, 20000, echo_is_quiet, &s), "conns %lu bufs %lu ops %lu",
              s.conns, s.bufs_out, s.ops_in_flight);
    cr_assert(eq(u64, s.conns_accepted, 10000));
    cr_assert(eq(int, echo_fd_count(), fds_before));
    cr_assert(eq(u64, s.stale_cqes, 0));
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

struct talker {
    uint16_t port;
    int exchanges; /* completed round trips */
    bool saw_eof;  /* the server closed after draining */
};

static void *talk_until_closed(void *arg)
{
    struct talker *t = arg;
    int fd = echo_connect(t->port);
    char out[512];
    char in[512];
    memset(out, 'q', sizeof(out));
    for (;;) {
        if (send(fd, out, sizeof(out), MSG_NOSIGNAL) != (ssize_t)sizeof(out)) break;
        size_t got = 0;
        while (got < sizeof(in)) {
            ssize_t n = recv(fd, in + got, sizeof(in) - got, 0);
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (got < sizeof(in)) {
            /* A drained server finishes the echo in flight; a partial one is a failure. */
            t->saw_eof = got == 0;
            break;
        }
        t->exchanges++;
    }
    close(fd);
    return NULL;
}

Test(ring_server, sigterm_during_traffic_drains_and_stops_cleanly, .timeout = 60)
{
    struct echo_config cfg = { .read_timeout_ms = 5000, .write_timeout_ms = 5000 };
    struct ring_server *srv = echo_server_start(2, &cfg); /* blocks SIGTERM in this thread */
    struct talker talkers[8];
    pthread_t threads[8];
    for (int i = 0; i < 8; i++) {
        talkers[i] = (struct talker){ .port = ring_server_port(srv) };
        cr_assert(eq(int, pthread_create(&threads[i], NULL, talk_until_closed, &talkers[i]), 0));
    }
    struct timespec nap = { .tv_nsec = 300 * 1000 * 1000 };
    nanosleep(&nap, NULL);
    cr_assert(eq(int, kill(getpid(), SIGTERM), 0));
    cr_assert(eq(int, ring_server_wait_signals(srv), SIGTERM));
    cr_assert(eq(int, ring_server_stop(srv), 0));
    for (int i = 0; i < 8; i++) {
        pthread_join(threads[i], NULL);
        cr_assert(gt(int, talkers[i].exchanges, 0));
        cr_assert(talkers[i].saw_eof, "talker %d saw a cut echo", i);
    }
}
