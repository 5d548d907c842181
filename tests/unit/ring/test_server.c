/*
 * The server: start-up failures leave nothing behind, the drain deadline closes what will
 * not finish, counters add up across cores.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "echo.h"
#include "ring/conn.h"
#include "ring/cpus.h"
#include "ring/server.h"

static void never_called(struct ring_core *core, int fd, void *arg)
{
    (void)core;
    (void)arg;
    close(fd);
}

static int fail_on_second_core(struct ring_core *core, void *arg)
{
    (void)arg;
    return ring_core_index(core) == 1 ? -ENOMEM : 0;
}

static int deinits;

static void count_deinit(struct ring_core *core, void *arg)
{
    (void)core;
    (void)arg;
    deinits++;
}

Test(ring_server, a_core_that_fails_to_start_stops_the_others, .timeout = 60)
{
    int fds_before = echo_fd_count();
    struct ring_server_options o;
    ring_server_options_default(&o);
    o.cores = 2;
    o.port = 0;
    o.hooks.on_accept = never_called;
    o.hooks.core_init = fail_on_second_core;
    o.hooks.core_deinit = count_deinit;
    struct ring_server *srv = NULL;
    char why[256] = "";
    int rc = ring_server_start(&o, &srv, why, sizeof(why));
    cr_assert(eq(int, rc, -ENOMEM));
    cr_assert(eq(ptr, srv, NULL));
    cr_assert(ne(ptr, strstr(why, "core 1"), NULL), "why: %s", why);
    cr_assert(eq(int, deinits, 1), "core 0 started and was stopped");
    cr_assert(eq(int, echo_fd_count_settled(fds_before), fds_before),
              "listeners and rings all closed");
}

Test(ring_server, a_busy_port_is_named, .timeout = 60)
{
    struct echo_config cfg = { .read_timeout_ms = 1000, .write_timeout_ms = 1000 };
    struct ring_server *first = echo_server_start(1, &cfg);
    int plain = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    cr_assert(eq(int, bind(plain, (struct sockaddr *)&a, sizeof(a)), 0));
    cr_assert(eq(int, listen(plain, 4), 0));
    cr_assert(eq(int, getsockname(plain, (struct sockaddr *)&a, &len), 0));
    struct ring_server_options o;
    ring_server_options_default(&o);
    o.cores = 1;
    o.port = ntohs(a.sin_port);
    o.hooks.on_accept = never_called;
    struct ring_server *srv = NULL;
    char why[256] = "";
    cr_assert(eq(int, ring_server_start(&o, &srv, why, sizeof(why)), -EADDRINUSE));
    cr_assert(ne(ptr, strstr(why, "address already in use"), NULL), "why: %s", why);
    close(plain);
    cr_assert(eq(int, ring_server_stop(first), 0));
}

Test(ring_server, the_drain_deadline_closes_what_does_not_finish, .timeout = 60)
{
    /* A client that stopped reading in the middle of a 64 MiB send would hold the drain
     * forever; the drain deadline (300 ms) closes it instead, long before the write timeout. */
    struct echo_config cfg = { .read_timeout_ms = 60000,
                               .write_timeout_ms = 60000,
                               .drain_timeout_ms = 300 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    int fd = echo_connect(ring_server_port(srv));
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    echo_write_all(fd, "BLAST", 5);
    char buf[4096];
    echo_read_exact(fd, buf, sizeof(buf));
    uint64_t start = base_clock_now_ns();
    cr_assert(eq(int, ring_server_stop(srv), 0));
    uint64_t took_ms = (base_clock_now_ns() - start) / BASE_NS_PER_MS;
    cr_assert(ge(u64, took_ms, 250));
    cr_assert(lt(u64, took_ms, 10000));
    close(fd);
}

Test(ring_server, counters_add_up_across_cores, .timeout = 60)
{
    struct echo_config cfg = { .read_timeout_ms = 10000, .write_timeout_ms = 10000 };
    struct ring_server *srv = echo_server_start(2, &cfg);
    cr_assert(eq(u32, ring_server_core_count(srv), 2));
    int fds[20];
    for (int i = 0; i < 20; i++) {
        fds[i] = echo_connect(ring_server_port(srv));
        echo_write_all(fds[i], "hello", 5);
        char in[5];
        echo_read_exact(fds[i], in, 5);
    }
    struct ring_counters_snapshot total;
    ring_server_counters(srv, &total);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < 2; i++)
        sum += base_counter_get(&ring_core_counters(ring_server_core(srv, i))->conns_accepted);
    cr_assert(eq(u64, total.conns_accepted, 20));
    cr_assert(eq(u64, sum, 20));
    cr_assert(eq(u64, total.conns, 20));
    cr_assert(eq(u64, total.bytes_in, 100));
    for (int i = 0; i < 20; i++)
        close(fds[i]);
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

static uint64_t conns_on(struct ring_server *srv, uint32_t i)
{
    return base_counter_get(&ring_core_counters(ring_server_core(srv, i))->conns);
}

Test(ring_server, new_connections_go_to_the_core_with_the_fewest, .timeout = 60)
{
    /* SO_REUSEPORT alone puts a connection on a core by a hash of its ports: 40 of them
     * stay within one of each other all along about once in a million runs. */
    struct echo_config cfg = { .read_timeout_ms = 10000, .write_timeout_ms = 10000 };
    struct ring_server *srv = echo_server_start(2, &cfg);
    int fds[40];
    for (int i = 0; i < 40; i++) {
        fds[i] = echo_connect(ring_server_port(srv));
        echo_write_all(fds[i], "hello", 5);
        char in[5];
        echo_read_exact(fds[i], in, 5); /* answered: adopted by now */
        uint64_t a = conns_on(srv, 0);
        uint64_t b = conns_on(srv, 1);
        cr_assert(eq(u64, a + b, (uint64_t)i + 1));
        cr_assert(le(u64, a > b ? a - b : b - a, 1), "after %d: %llu and %llu", i + 1,
                  (unsigned long long)a, (unsigned long long)b);
    }
    struct ring_counters_snapshot total;
    ring_server_counters(srv, &total);
    cr_assert(eq(u64, total.conns_accepted, 40), "counted once, where accepted");
    cr_assert(gt(u64, total.conns_handed_over, 0));
    cr_assert(eq(u64, total.bytes_in, 200));
    /* Closing the connections of core 0 makes it the one that takes the next. */
    for (int i = 0; i < 40; i++)
        close(fds[i]);
    for (int i = 0; i < 500 && conns_on(srv, 0) + conns_on(srv, 1) > 0; i++)
        usleep(10000);
    cr_assert(eq(u64, conns_on(srv, 0) + conns_on(srv, 1), 0));
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

Test(ring_server, a_stop_while_connections_are_handed_over_loses_none, .timeout = 60)
{
    /* Connections arrive on 4 cores until the stop: each is kept, handed over or, on a core
     * that drains, closed. Every stop returns, every fd is closed, nothing leaks (ASan). */
    int fds_before = echo_fd_count();
    uint64_t handed = 0;
    for (int round = 0; round < 20; round++) {
        struct echo_config cfg = { .read_timeout_ms = 10000,
                                   .write_timeout_ms = 10000,
                                   .drain_timeout_ms = 1000 };
        struct ring_server *srv = echo_server_start(4, &cfg);
        int fds[16];
        for (int i = 0; i < 16; i++)
            fds[i] = echo_connect(ring_server_port(srv));
        /* The last connections may still be on their way when the stop begins. */
        echo_write_all(fds[0], "hello", 5);
        char in[5];
        echo_read_exact(fds[0], in, 5);
        struct ring_counters_snapshot total;
        ring_server_counters(srv, &total);
        handed += total.conns_handed_over;
        cr_assert(eq(int, ring_server_stop(srv), 0));
        for (int i = 0; i < 16; i++)
            close(fds[i]);
    }
    cr_assert(gt(u64, handed, 0));
    cr_assert(eq(int, echo_fd_count_settled(fds_before), fds_before));
}

/* Sends the process SIGINT after 300 ms (the second stop signal of the test below). */
static void *signal_later(void *arg)
{
    (void)arg;
    usleep(300000);
    kill(getpid(), SIGINT);
    return NULL;
}

Test(ring_server, a_second_signal_after_one_core_ended_forces_the_others, .timeout = 60)
{
    /* Ctrl-C pressed twice: the stop waits on core 0, whose client stopped reading in the
     * middle of a send, while core 1 (no connection) has already ended its loop. The second
     * signal must end core 0's drain at once and leave core 1 alone: the stop reads what core
     * 1's thread wrote as it ended (its status) without having joined it yet. */
    ring_server_block_signals(); /* the signal waits for ring_server_take_signal */
    struct echo_config cfg = { .read_timeout_ms = 60000,
                               .write_timeout_ms = 60000,
                               .drain_timeout_ms = 30000 };
    struct ring_server *srv = echo_server_start(2, &cfg);
    char in[5];
    int fd = echo_connect(ring_server_port(srv));
    echo_write_all(fd, "hello", 5);
    echo_read_exact(fd, in, 5); /* answered: adopted by now */
    if (conns_on(srv, 0) == 0) {
        /* On core 1: the next goes to core 0, the one with fewer; this one goes away. */
        int other = echo_connect(ring_server_port(srv));
        echo_write_all(other, "hello", 5);
        echo_read_exact(other, in, 5);
        close(fd);
        fd = other;
        for (int i = 0; i < 500 && conns_on(srv, 1) > 0; i++)
            usleep(10000);
    }
    cr_assert(eq(u64, conns_on(srv, 0), 1));
    cr_assert(eq(u64, conns_on(srv, 1), 0));
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    echo_write_all(fd, "BLAST", 5);
    char buf[4096];
    echo_read_exact(fd, buf, sizeof(buf));
    pthread_t later;
    cr_assert(eq(int, pthread_create(&later, NULL, signal_later, NULL), 0));
    uint64_t start = base_clock_now_ns();
    cr_assert(eq(int, ring_server_stop(srv), 0));
    uint64_t took_ms = (base_clock_now_ns() - start) / BASE_NS_PER_MS;
    pthread_join(later, NULL);
    cr_assert(lt(u64, took_ms, 20000), "the drain ran to its deadline: %llu ms",
              (unsigned long long)took_ms);
    close(fd);
}

Test(ring_server, counts_the_cpus_it_may_run_on, .timeout = 60)
{
    uint32_t n = ring_cpus_allowed();
    cr_assert(ge(u32, n, 1));
    cr_assert(le(u32, n, (uint32_t)sysconf(_SC_NPROCESSORS_CONF)));
}

/* Runs on the core it is sent to: breaks its ring for good, as a failed io_uring_enter
 * would (the loop's next enter fails with EBADF, and the loop ends with an error). */
static void break_ring(struct ring_core *core, void *arg)
{
    (void)arg;
    struct io_uring *ring = ring_core_uring(core);
    (void)io_uring_unregister_ring_fd(ring);
    close(ring->ring_fd);
}

/* Connects, sends "ping" and reads it back within 2 s: true when the server answered. */
static bool served(uint16_t port)
{
    int fd = echo_connect(port);
    struct timeval tv = { .tv_sec = 2 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    echo_write_all(fd, "ping", 4);
    char in[4];
    size_t got = 0;
    while (got < sizeof(in)) {
        ssize_t n = recv(fd, in + got, sizeof(in) - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    return got == sizeof(in) && memcmp(in, "ping", 4) == 0;
}

Test(ring_server, a_core_whose_loop_failed_takes_no_more_connections, .timeout = 120)
{
    /* Its listener stayed in the SO_REUSEPORT group with nobody accepting: the kernel kept
     * queueing about one new connection in two there, and those clients waited for good
     * while the other core served. */
    struct echo_config cfg = { .read_timeout_ms = 10000, .write_timeout_ms = 10000 };
    struct ring_server *srv = echo_server_start(2, &cfg);
    uint16_t port = ring_server_port(srv);
    struct io_uring from;
    cr_assert(eq(int, io_uring_queue_init(4, &from, 0), 0));
    static struct ring_msg msg = { .fn = break_ring };
    cr_assert(eq(int, ring_msg_send_from(&from, ring_server_core(srv, 1), &msg), 0));
    io_uring_queue_exit(&from);
    usleep(200000); /* the core's loop ends */
    int ok = 0;
    for (int i = 0; i < 16; i++)
        ok += served(port);
    cr_assert(eq(int, ok, 16), "%d of 16 connections served", ok);
    cr_assert(eq(int, ring_server_stop(srv), -EIO));
}
