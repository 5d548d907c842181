/*
 * Listening sockets: addresses, SO_REUSEPORT groups, and accepts that fail for a while.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "echo.h"
#include "ring/listen.h"

Test(ring_listen, opens_ipv4_ipv6_and_localhost)
{
    uint16_t port = 0;
    int fd = ring_listen_open("127.0.0.1", 0, 16, &port);
    cr_assert(ge(int, fd, 0));
    cr_assert(gt(u32, port, 0));
    /* A second socket joins the same port: that is how every core gets its own listener. */
    uint16_t again = 0;
    int fd2 = ring_listen_open("127.0.0.1", port, 16, &again);
    cr_assert(ge(int, fd2, 0));
    cr_assert(eq(u32, again, port));
    close(fd);
    close(fd2);
    fd = ring_listen_open("localhost", 0, 16, &port);
    cr_assert(ge(int, fd, 0));
    close(fd);
    fd = ring_listen_open("[::1]", 0, 16, &port);
    if (fd == -EADDRNOTAVAIL || fd == -EAFNOSUPPORT) cr_skip_test("no IPv6 loopback here");
    cr_assert(ge(int, fd, 0), "[::1]: %d", fd);
    close(fd);
    fd = ring_listen_open("::1", 0, 16, &port);
    cr_assert(ge(int, fd, 0));
    close(fd);
}

Test(ring_listen, rejects_names_it_cannot_parse)
{
    uint16_t port;
    cr_assert(eq(int, ring_listen_open("example.com", 0, 16, &port), -EINVAL));
    cr_assert(eq(int, ring_listen_open("", 0, 16, &port), -EINVAL));
    cr_assert(eq(int, ring_listen_open("[::1", 0, 16, &port), -EINVAL));
    cr_assert(eq(int, ring_listen_open("999.1.1.1", 0, 16, &port), -EINVAL));
}

Test(ring_listen, a_port_held_without_reuseport_is_refused)
{
    int plain = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    cr_assert(eq(int, bind(plain, (struct sockaddr *)&a, sizeof(a)), 0));
    cr_assert(eq(int, listen(plain, 4), 0));
    cr_assert(eq(int, getsockname(plain, (struct sockaddr *)&a, &len), 0));
    uint16_t port;
    cr_assert(eq(int, ring_listen_open("127.0.0.1", ntohs(a.sin_port), 16, &port), -EADDRINUSE));
    close(plain);
}

static bool accepted(const struct ring_counters_snapshot *s)
{
    return s->conns == 1;
}

Test(ring_listen, accepting_resumes_after_running_out_of_descriptors, .timeout = 60)
{
    /* io_uring's accept reads RLIMIT_NOFILE when it is prepared, so the limit is lowered
     * before the server starts: its multishot accept then runs into EMFILE as soon as every
     * descriptor number below the limit is taken. */
    struct rlimit rl;
    cr_assert(eq(int, getrlimit(RLIMIT_NOFILE, &rl), 0));
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = (rlim_t)echo_fd_count() + 32;
    cr_assert(eq(int, setrlimit(RLIMIT_NOFILE, &rl), 0));
    struct echo_config cfg = { .read_timeout_ms = 10000, .write_timeout_ms = 10000 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    uint16_t port = ring_server_port(srv);
    /* Fill every free descriptor number below the limit (there may be gaps). */
    static int hog[4096];
    int nhog = 0;
    while (nhog < 4096) {
        int fd = dup(0);
        if (fd < 0) break;
        hog[nhog++] = fd;
    }
    cr_assert(gt(int, nhog, 0));
    cr_assert(lt(int, nhog, 4096));
    /* The client's socket needs a descriptor too: free one for it, none is left for accept. */
    close(hog[--nhog]);
    int client = echo_connect(port);
    struct timespec nap = { .tv_nsec = 200 * 1000 * 1000 };
    nanosleep(&nap, NULL);
    struct ring_counters_snapshot s;
    ring_server_counters(srv, &s);
    cr_assert(eq(u64, s.conns, 0), "accept should have failed with EMFILE");
    /* Give the descriptors back: the listener re-arms and the waiting client is served. */
    for (int i = 0; i < nhog; i++)
        close(hog[i]);
    rl.rlim_cur = old;
    cr_assert(eq(int, setrlimit(RLIMIT_NOFILE, &rl), 0));
    cr_assert(echo_wait_counters(srv, 5000, accepted, &s), "conns %lu", s.conns);
    echo_write_all(client, "ping", 4);
    char in[4];
    echo_read_exact(client, in, 4);
    cr_assert(eq(int, memcmp(in, "ping", 4), 0));
    close(client);
    cr_assert(eq(int, ring_server_stop(srv), 0));
}
