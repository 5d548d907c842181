/*
 * Listening sockets: addresses, SO_REUSEPORT groups, and accepts that fail for a while.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/assert.h"
#include "base/clock.h"
#include "echo.h"
#include "ring/listen.h"
#include "ring/timer.h"

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

struct accept_count {
    int fds[8]; /* accepted sockets, closed at the end */
    int n;      /* entries in fds */
};

static void count_accept(struct ring_core *core, int fd, void *ctx)
{
    (void)core;
    struct accept_count *a = ctx;
    cr_assert(lt(int, a->n, 8));
    a->fds[a->n++] = fd;
}

static void timer_never(struct ring_timer *t)
{
    (void)t;
    cr_fail("the table's timers are cancelled, never fired");
}

static void listener_gone(struct ring_core *core, void *ctx)
{
    (void)core;
    *(bool *)ctx = true;
}

/* Runs <core>'s loop for <ms> milliseconds, or until *<until> when given. */
static void tick_for(struct ring_core *core, uint32_t ms, const bool *until)
{
    uint64_t end = base_clock_now_ns() + ms * BASE_NS_PER_MS;
    while (base_clock_now_ns() < end && !(until && *until)) {
        int rc = ring_core_tick(core, 10);
        cr_assert(ge(int, rc, 0));
    }
}

/*
 * The open files limit lowered to what is open plus 32 (before the accept is armed: io_uring
 * reads the limit when it prepares the accept), then every descriptor under it taken but one:
 * room for a client's socket, none for the socket the accept would make.
 */
struct fd_squeeze {
    rlim_t old_limit;
    int n;
    int fds[4096];
};

static void fd_squeeze_limit(struct fd_squeeze *q)
{
    struct rlimit rl;
    cr_assert(eq(int, getrlimit(RLIMIT_NOFILE, &rl), 0));
    q->old_limit = rl.rlim_cur;
    rl.rlim_cur = (rlim_t)echo_fd_count() + 32;
    cr_assert(eq(int, setrlimit(RLIMIT_NOFILE, &rl), 0));
    q->n = 0;
}

static void fd_squeeze_take(struct fd_squeeze *q)
{
    while (q->n < (int)ARRAY_LEN(q->fds)) {
        int fd = dup(0);
        if (fd < 0) break;
        q->fds[q->n++] = fd;
    }
    cr_assert(gt(int, q->n, 0));
    close(q->fds[--q->n]);
}

static void fd_squeeze_end(struct fd_squeeze *q)
{
    for (int i = 0; i < q->n; i++)
        close(q->fds[i]);
    q->n = 0;
    struct rlimit rl;
    cr_assert(eq(int, getrlimit(RLIMIT_NOFILE, &rl), 0));
    rl.rlim_cur = q->old_limit;
    cr_assert(eq(int, setrlimit(RLIMIT_NOFILE, &rl), 0));
}

/* A listener on <core> (its port in *<port>) counting into <acc>, armed under a lowered open
 * files limit (fd_squeeze_limit; the test takes the descriptors with fd_squeeze_take). */
static void squeezed_listener_start(struct ring_core *core, uint16_t *port, struct fd_squeeze *q,
                                    struct ring_listener *l, struct accept_count *acc)
{
    int lfd = ring_listen_open("127.0.0.1", 0, 16, port);
    cr_assert(ge(int, lfd, 0));
    fd_squeeze_limit(q);
    cr_assert(eq(int, ring_listener_start(l, core, lfd, count_accept, acc), 0));
}

/* Ticks <core> until <acc> has its first connection, for up to 3 s. */
static void tick_until_accepted(struct ring_core *core, const struct accept_count *acc)
{
    for (uint32_t waited = 0; waited < 3000 && acc->n == 0; waited += 10) {
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    }
}

/* Stops <l> and ticks <core> until it is gone. */
static void listener_stop_and_wait(struct ring_core *core, struct ring_listener *l)
{
    bool gone = false;
    ring_listener_stop(l, listener_gone, &gone);
    tick_for(core, 3000, &gone);
    cr_assert(gone);
}

Test(ring_listen, accepting_resumes_when_the_op_table_was_full_at_its_re_arm, .timeout = 60)
{
    /* The accept's multishot ends on EMFILE while every op slot is taken (connections'
     * receives, timers), so its delayed re-arm cannot take a slot at that moment. The
     * listener must accept again once slots and descriptors are back, not stay deaf. */
    struct ring_core *core = echo_core_create(0, 16, 4096);
    uint16_t port = 0;
    static struct fd_squeeze squeeze;
    struct ring_listener l;
    struct accept_count acc = { .n = 0 };
    squeezed_listener_start(core, &port, &squeeze, &l, &acc);
    /* Take every other slot with a timer that does not fire during the test. */
    static struct ring_timer timers[64];
    struct ring_owner hold;
    ring_owner_init(&hold);
    int held = 0;
    for (; held < 64; held++) {
        ring_timer_init(&timers[held], timer_never, NULL);
        if (ring_timer_start(core, &timers[held], &hold, 600000) < 0) break;
    }
    cr_assert(gt(int, held, 0));
    cr_assert(lt(int, held, 64), "the table should have filled up");
    cr_assert(ge(int, ring_core_tick(core, 0), 0)); /* submitted: accept and timers armed */
    fd_squeeze_take(&squeeze);
    int client = echo_connect(port);
    tick_for(core, 300, NULL); /* the accept fails with EMFILE; its re-arm finds no slot */
    cr_assert(eq(int, acc.n, 0), "accept should have failed with EMFILE");
    fd_squeeze_end(&squeeze);
    /* Slots come back: the timers are cancelled, and their CQEs release them. */
    for (int i = 0; i < held; i++)
        ring_timer_stop(core, &timers[i]);
    tick_until_accepted(core, &acc);
    cr_assert(eq(int, acc.n, 1), "the client waiting in the backlog was never accepted");
    cr_assert(ring_owner_is_idle(&hold));
    listener_stop_and_wait(core, &l);
    for (int i = 0; i < acc.n; i++)
        close(acc.fds[i]);
    close(client);
    ring_core_destroy(core);
}

/* Lines of <path> that contain <needle>. */
static int count_lines_with(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    cr_assert(f != NULL);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

Test(ring_listen, an_accept_failing_for_a_while_is_logged_once_a_second, .timeout = 60)
{
    /* A peer that holds connections past the open files limit makes every re-arm of the
     * accept (one each LISTEN_REARM_DELAY_MS) fail with EMFILE for as long as it does so. */
    char path[] = "/tmp/ring_listen_log_XXXXXX";
    int log_fd = mkstemp(path);
    cr_assert(ge(int, log_fd, 0));
    int saved_stderr = dup(STDERR_FILENO);
    cr_assert(ge(int, saved_stderr, 0));
    struct ring_core *core = echo_core_create(0, 16, 4096);
    uint16_t port = 0;
    static struct fd_squeeze squeeze;
    struct ring_listener l;
    struct accept_count acc = { .n = 0 };
    squeezed_listener_start(core, &port, &squeeze, &l, &acc);
    cr_assert(ge(int, ring_core_tick(core, 0), 0)); /* the accept is armed */
    fd_squeeze_take(&squeeze);
    int client = echo_connect(port);
    cr_assert(ge(int, dup2(log_fd, STDERR_FILENO), 0));
    uint64_t start = base_clock_now_ns();
    tick_for(core, 1500, NULL); /* about 30 re-arms, each failing with EMFILE */
    uint64_t seconds = (base_clock_now_ns() - start) / BASE_NS_PER_S;
    cr_assert(ge(int, dup2(saved_stderr, STDERR_FILENO), 0));
    fd_squeeze_end(&squeeze);
    cr_assert(eq(int, acc.n, 0), "accept should have failed with EMFILE");
    int lines = count_lines_with(path, "too many open files");
    unlink(path);
    cr_assert(ge(int, lines, 1), "the failure is logged");
    cr_assert(le(u64, (uint64_t)lines, seconds + 1), "%d lines in %lu s: one a second at most",
              lines, seconds);
    /* The listener still serves once descriptors are back. */
    tick_until_accepted(core, &acc);
    cr_assert(eq(int, acc.n, 1));
    listener_stop_and_wait(core, &l);
    close(acc.fds[0]);
    close(client);
    close(log_fd);
    close(saved_stderr);
    ring_core_destroy(core);
}
