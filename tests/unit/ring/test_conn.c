/*
 * Connections on the real ring over 127.0.0.1: timeouts, cancellation, leaks, drain.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "echo.h"
#include "ring/buf.h"
#include "ring/conn.h"

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

/* Quiet, and every connection accepted: the last ones may still wait in the accept queue
 * (connected and closed by the client before the server took them) when it first looks quiet. */
static bool all_accepted_and_quiet(const struct ring_counters_snapshot *s)
{
    return s->conns_accepted == 10000 && echo_is_quiet(s);
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
    cr_assert(echo_wait_counters(srv, 20000, all_accepted_and_quiet, &s),
              "accepted %lu conns %lu bufs %lu ops %lu", s.conns_accepted, s.conns, s.bufs_out,
              s.ops_in_flight);
    cr_assert(eq(int, echo_fd_count_settled(fds_before), fds_before));
    cr_assert(eq(u64, s.stale_cqes, 0));
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

struct talker {
    uint16_t port;
    _Atomic int exchanges; /* completed round trips; the test thread polls it */
    bool saw_eof;          /* the server closed after draining */
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
    /* Traffic first: every talker has finished an exchange before the signal. */
    struct timespec nap = { .tv_nsec = 2 * 1000 * 1000 };
    for (int i = 0; i < 8; i++) {
        for (int waited = 0; atomic_load(&talkers[i].exchanges) == 0; waited++) {
            cr_assert(lt(int, waited, 10000), "talker %d made no exchange", i);
            nanosleep(&nap, NULL);
        }
    }
    cr_assert(eq(int, ring_server_wait_signals(srv, 20), 0)); /* no signal: back after 20 ms */
    cr_assert(eq(int, kill(getpid(), SIGTERM), 0));
    cr_assert(eq(int, ring_server_wait_signals(srv, 10000), SIGTERM));
    cr_assert(eq(int, ring_server_stop(srv), 0));
    for (int i = 0; i < 8; i++) {
        pthread_join(threads[i], NULL);
        cr_assert(gt(int, atomic_load(&talkers[i].exchanges), 0));
        cr_assert(talkers[i].saw_eof, "talker %d saw a cut echo", i);
    }
}

static bool blast_sent(const struct ring_counters_snapshot *s)
{
    return s->bytes_out == ECHO_BLAST_BYTES;
}

static void slow_reader_gets_it_all(uint32_t send_zc_min, bool slow)
{
    /* The write timeout bounds progress, not the transfer: a reader that keeps reading,
     * however slowly, gets all 64 MiB through many partial sends. */
    struct echo_config cfg = { .read_timeout_ms = 60000,
                               .write_timeout_ms = 500,
                               .send_zc_min = send_zc_min };
    struct ring_server *srv = echo_server_start(1, &cfg);
    int fd = echo_connect(ring_server_port(srv));
    int small = 16384;
    if (slow) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    echo_write_all(fd, "BLAST", 5);
    static char buf[1 << 20];
    uint64_t got = 0;
    uint64_t start = base_clock_now_ns();
    struct timespec nap = { .tv_nsec = 1000 * 1000 };
    while (got < ECHO_BLAST_BYTES) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        cr_assert(gt(sz, (size_t)(n > 0 ? n : 0), 0), "recv %zd after %lu bytes", n, got);
        for (ssize_t i = 0; i < n; i += 4096)
            cr_assert(eq(chr, buf[i], 'b'));
        got += (uint64_t)n;
        if (slow && base_clock_now_ns() - start < 2 * BASE_NS_PER_S)
            nanosleep(&nap, NULL); /* slow for the first seconds: many partial sends */
    }
    cr_assert(eq(u64, got, ECHO_BLAST_BYTES));
    /* The client can hold the last bytes before the server has handled their send's CQE. */
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 5000, blast_sent, &s), "bytes_out %lu", s.bytes_out);
    cr_assert(eq(u64, s.write_timeouts, 0));
    close(fd);
    cr_assert(echo_wait_counters(srv, 5000, echo_is_quiet, &s));
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

Test(ring_conn, a_large_send_to_a_slow_reader_arrives_whole, .timeout = 120)
{
    slow_reader_gets_it_all(0, true);
}

Test(ring_conn, a_zero_copy_send_arrives_whole_and_releases_after_its_notification, .timeout = 120)
{
    /* At full speed: on loopback a zero-copy send waits for the reader to consume its pages
     * (perf/RESULTS.md), so a throttled reader would take minutes. */
    slow_reader_gets_it_all(64 * 1024, false);
}

static bool zc_result_in(const struct ring_counters_snapshot *s)
{
    /* accept + receive + the zero-copy send in flight (+ the timer of its notification's
     * wait once its result came): the peer reads nothing. */
    return s->conns == 1 && s->ops_in_flight >= 3;
}

/*
 * A peer that stops reading during a zero-copy send: on loopback its receive window is full
 * and our socket keeps the rest queued, so the kernel holds the send's pages, and its
 * notification waits, for as long as the peer keeps the connection open without reading.
 * The send's linked timeout ended with its first CQE.
 */
static struct ring_server *zc_blast_to_a_stalled_reader(uint32_t write_timeout_ms, int *fd_out)
{
    struct echo_config cfg = { .read_timeout_ms = 10000,
                               .write_timeout_ms = write_timeout_ms,
                               .send_zc_min = 4096 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    int fd = echo_connect(ring_server_port(srv));
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    echo_write_all(fd, "BLAST", 5);
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 5000, zc_result_in, &s), "ops %lu conns %lu", s.ops_in_flight,
              s.conns);
    *fd_out = fd;
    return srv;
}

Test(ring_conn, a_zero_copy_send_whose_reader_stops_is_closed_by_write_timeout)
{
    int fd;
    struct ring_server *srv = zc_blast_to_a_stalled_reader(300, &fd);
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 5000, has_write_timeout, &s),
              "write timeouts %lu conns %lu ops %lu", s.write_timeouts, s.conns, s.ops_in_flight);
    cr_assert(echo_wait_counters(srv, 2000, echo_is_quiet, &s), "ops %lu", s.ops_in_flight);
    cr_assert(eq(u64, s.read_timeouts, 0));
    cr_assert(eq(u64, s.stale_cqes, 0));
    /* The socket was reset to make the kernel let go of the pages. */
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
    }
    cr_assert(eq(int, (int)n, -1));
    cr_assert(eq(int, errno, ECONNRESET));
    close(fd);
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

Test(ring_conn, closing_during_a_zero_copy_send_does_not_wait_for_the_reader)
{
    /* No write timeout: only the close can end the wait. The blast's memory is freed in
     * on_close, after the notification (ASan would see the kernel's pages freed early). */
    int fd;
    struct ring_server *srv = zc_blast_to_a_stalled_reader(0, &fd);
    echo_write_all(fd, "QUIT", 4);
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 5000, echo_is_quiet, &s),
              "the connection waited for its reader: conns %lu ops %lu", s.conns, s.ops_in_flight);
    cr_assert(eq(u64, s.timeouts, 0));
    cr_assert(eq(u64, s.stale_cqes, 0));
    close(fd);
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

Test(ring_conn, send_refuses_what_it_cannot_take)
{
    struct ring_core *core = echo_core_create(0, 8, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    struct echo_bare b = { 0 };
    ring_conn_init(&b.conn, core, sv[0], &echo_bare_ops, 0, 1000);
    struct iovec many[RING_CONN_IOV_MAX + 1];
    for (int i = 0; i <= RING_CONN_IOV_MAX; i++)
        many[i] = (struct iovec){ "x", 1 };
    cr_assert(eq(int, ring_conn_send(&b.conn, many, RING_CONN_IOV_MAX + 1), -EINVAL));
    cr_assert(eq(int, ring_conn_send(&b.conn, many, 0), -EINVAL));
    struct iovec empty = { "", 0 };
    cr_assert(eq(int, ring_conn_send(&b.conn, &empty, 1), -EINVAL));
    cr_assert(eq(int, ring_conn_send(&b.conn, many, 3), 0));
    cr_assert(ring_conn_is_sending(&b.conn));
    cr_assert(eq(int, ring_conn_send(&b.conn, many, 1), -EBUSY), "one send at a time");
    for (int i = 0; i < 100 && b.sent == 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(int, b.sent, 1));
    char got[3];
    cr_assert(eq(sz, (size_t)read(sv[1], got, 3), 3));
    /* The first close reason wins; later closes change nothing; sends are refused. */
    ring_conn_close(&b.conn, -ETIMEDOUT);
    ring_conn_close(&b.conn, 0);
    cr_assert(eq(int, ring_conn_send(&b.conn, many, 1), -EPIPE));
    for (int i = 0; i < 100 && b.closed == 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(int, b.closed, 1));
    cr_assert(eq(int, b.reason, -ETIMEDOUT));
    cr_assert(eq(int, b.conn.fd, -1));
    close(sv[1]);
    ring_core_destroy(core);
}

Test(ring_conn, a_paused_connection_receives_nothing_until_resumed)
{
    struct ring_core *core = echo_core_create(0, 8, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    struct echo_bare b = { 0 };
    ring_conn_init(&b.conn, core, sv[0], &echo_bare_ops, 0, 0);
    cr_assert(eq(int, ring_conn_recv_start(&b.conn), 0));
    cr_assert(eq(sz, (size_t)write(sv[1], "one", 3), 3));
    for (int i = 0; i < 100 && b.received == 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(u32, b.received, 3));
    ring_conn_recv_pause(&b.conn);
    /* The receive re-armed after "one" completes with "two"; nothing after that. */
    cr_assert(eq(sz, (size_t)write(sv[1], "two", 3), 3));
    for (int i = 0; i < 20; i++)
        cr_assert(ge(int, ring_core_tick(core, 5), 0));
    cr_assert(eq(u32, b.received, 6));
    cr_assert(eq(sz, (size_t)write(sv[1], "three", 5), 5));
    for (int i = 0; i < 20; i++)
        cr_assert(ge(int, ring_core_tick(core, 5), 0));
    cr_assert(eq(u32, b.received, 6), "paused: the bytes wait in the socket");
    ring_conn_recv_resume(&b.conn);
    for (int i = 0; i < 100 && b.received < 11; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(u32, b.received, 11));
    ring_conn_close(&b.conn, 0);
    for (int i = 0; i < 100 && b.closed == 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(u64, base_counter_get(&ring_core_counters(core)->ops_in_flight), 0));
    close(sv[1]);
    ring_core_destroy(core);
}
