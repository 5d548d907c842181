/*
 * Per-core listeners with multishot accept. A multishot accept stops (a CQE without
 * IORING_CQE_F_MORE) on errors such as EMFILE or when the CQ is full; it is re-armed at once
 * after a clean stop and after a short delay after an error, so a full fd table does not spin.
 * A re-arm (the accept, or the delay's timer) that finds the op table full waits for a free
 * op (ring_op_wait_free): nothing else would ever arm the accept again.
 */
#include "ring/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "ring/internal.h"

#define LISTEN_REARM_DELAY_MS 50

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        *len = sizeof(*v4);
        return 0;
    }
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    const char *h = host;
    char buf[64];
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, hl - 2);
        buf[hl - 2] = '\0';
        h = buf;
    }
    if (inet_pton(AF_INET6, h, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        *len = sizeof(*v6);
        return 0;
    }
    return -EINVAL;
}

bool ring_listen_host_is_valid(const char *host)
{
    struct sockaddr_storage ss;
    socklen_t len;
    return resolve(host, 0, &ss, &len) == 0;
}

/*
 * A TCP socket bound to <host>:<port> with SO_REUSEADDR, and SO_REUSEPORT when <reuseport>.
 * Returns the fd or -errno.
 */
static int bound_socket(const char *host, uint16_t port, bool reuseport)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = resolve(host, port, &ss, &len);
    if (rc < 0) return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) return -errno;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1) ||
        bind(fd, (struct sockaddr *)&ss, len) == -1) {
        rc = -errno;
        (void)close(fd);
        return rc;
    }
    return fd;
}

int ring_listen_probe(const char *host, uint16_t port)
{
    /* Without SO_REUSEPORT: a TIME_WAIT left by our own last run does not count as a user,
     * while any listener, with SO_REUSEPORT or not, does. */
    int fd = bound_socket(host, port, false);
    if (fd < 0) return fd;
    (void)close(fd);
    return 0;
}

int ring_listen_open(const char *host, uint16_t port, int backlog, uint16_t *port_out)
{
    int fd = bound_socket(host, port, true);
    if (fd < 0) return fd;
    int rc;
    if (listen(fd, backlog) == -1) {
        rc = -errno;
        goto err_close;
    }
    if (port_out) {
        struct sockaddr_storage bound;
        memset(&bound, 0, sizeof(bound));
        socklen_t blen = sizeof(bound);
        if (getsockname(fd, (struct sockaddr *)&bound, &blen) == -1) {
            rc = -errno;
            goto err_close;
        }
        *port_out = bound.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&bound)->sin_port)
                                               : ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    }
    return fd;

err_close:
    (void)close(fd);
    return rc;
}

static int accept_arm(struct ring_listener *l);

/*
 * Arms the accept again: at once, or after LISTEN_REARM_DELAY_MS when <delayed> (after an
 * error). When the op table is full, <retry> does it once an op is released.
 */
static void accept_rearm(struct ring_listener *l, bool delayed)
{
    if (l->stopping || l->accepting || ring_timer_is_armed(&l->rearm)) return;
    int rc = delayed ? ring_timer_start(l->core, &l->rearm, &l->owner, LISTEN_REARM_DELAY_MS)
                     : accept_arm(l);
    if (rc == 0) return;
    l->retry_delayed = delayed;
    /* Once a second at most: with the fd table full too, this comes at every re-arm. */
    if (base_clock_every(&l->full_log_ns, BASE_NS_PER_S)) {
        LOG_WARN("cannot re-arm accept on core %u (op table full): re-armed when an operation "
                 "completes",
                 ring_core_index(l->core));
    }
    ring_op_wait_free(l->core, &l->retry);
}

static void retry_run(struct ring_task *task)
{
    struct ring_listener *l = BASE_CONTAINER_OF(task, struct ring_listener, retry);
    accept_rearm(l, l->retry_delayed);
}

static void rearm_fired(struct ring_timer *timer)
{
    accept_rearm(timer->ctx, false);
}

static void accept_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    struct ring_listener *l = op->ctx;
    struct ring_core *core = l->core;
    bool more = flags & IORING_CQE_F_MORE;
    if (!more) l->accepting = false;
    if (res >= 0) {
        if (l->stopping) {
            (void)close(res);
        } else {
            int one = 1;
            /* Small responses must not wait for Nagle; failure only costs latency. */
            (void)setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            base_counter_inc(&core->counters.conns_accepted);
            l->fn(core, res, l->ctx);
        }
    } else if (res != -ECANCELED && base_clock_every(&l->err_log_ns, BASE_NS_PER_S)) {
        /* Once a second at most: an error such as EMFILE comes back at every re-arm, 1000 /
         * LISTEN_REARM_DELAY_MS times a second, for as long as a peer holds the descriptors. */
        LOG_WARN("accept on core %u: %s", ring_core_index(core), base_err_str(res));
    }
    if (more || l->stopping) return;
    accept_rearm(l, res < 0 && res != -ECANCELED);
}

static int accept_arm(struct ring_listener *l)
{
    struct ring_op *op = ring_op_get(l->core, &l->owner, accept_done, l);
    if (!op) return -EAGAIN;
    struct io_uring_sqe *sqe = ring_op_sqe(op, 0);
    io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
    ring_op_commit(op, sqe);
    l->accepting = true;
    return 0;
}

int ring_listener_start(struct ring_listener *l, struct ring_core *core, int fd, ring_accept_fn *fn,
                        void *ctx)
{
    ASSERT(fd >= 0);
    memset(l, 0, sizeof(*l));
    l->core = core;
    l->fd = fd;
    l->fn = fn;
    l->ctx = ctx;
    ring_owner_init(&l->owner);
    ring_timer_init(&l->rearm, rearm_fired, l);
    ring_task_init(&l->retry, retry_run);
    return accept_arm(l);
}

static void listener_idle(struct ring_core *core, void *ctx)
{
    struct ring_listener *l = ctx;
    ASSERT(!l->accepting);
    ring_owner_deinit(&l->owner);
    (void)close(l->fd);
    l->fd = -1;
    l->on_stopped(core, l->stopped_ctx);
}

void ring_listener_stop(struct ring_listener *l, ring_owner_fn *on_idle, void *ctx)
{
    if (l->stopping) return;
    l->stopping = true;
    l->on_stopped = on_idle;
    l->stopped_ctx = ctx;
    /* Closing the fd first would not cancel the accept: io_uring holds its own reference. */
    ring_timer_stop(l->core, &l->rearm);
    ring_task_cancel(&l->retry);
    ring_owner_close(l->core, &l->owner, listener_idle, l);
}

void ring_listener_abort(struct ring_listener *l)
{
    if (l->fd < 0) return;
    /* close() would not do: the ring's accept holds its own reference to the socket, which
     * stays listening while it does. shutdown() leaves LISTEN (tcp_disconnect) and the group
     * with it. */
    if (shutdown(l->fd, SHUT_RDWR) == -1) {
        LOG_WARN("cannot stop listening on core %u: %s", ring_core_index(l->core),
                 base_err_str(-errno));
    }
}
