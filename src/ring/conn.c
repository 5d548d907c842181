/*
 * Connections: one receive (provided buffer + linked read timeout) and one send (sendmsg +
 * linked write timeout) in flight at most.
 *
 * Invariants:
 * - recv_armed is true exactly while a receive op of the connection is in flight;
 * - send_op is non-NULL exactly while a send op is in flight;
 * - once closing, no callback but on_close runs, and on_close runs once, after the owner's
 *   last op completed and the fd was closed;
 * - a buffer reported by a CQE is always taken, and released at once if nobody wants it;
 * - only a connection with bytes (or its peer's FIN) to read waits for a buffer, and a
 *   give-back's wake-up is never lost: the connection it woke takes the buffer or passes the
 *   wake-up on (ring_buf_wake_one). A waiting connection has no receive armed, so no read
 *   timeout: one left waiting while buffers lie with the kernel would wait forever.
 */
#include "ring/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "ring/buf.h"
#include "ring/internal.h"

#ifdef RC_ASAN
#    include <sanitizer/asan_interface.h>
#endif

static void recv_arm(struct ring_conn *c);
static int send_arm(struct ring_conn *c);
static void send_zc_timed_out(struct ring_timer *timer);

static void conn_idle(struct ring_core *core, void *ctx)
{
    struct ring_conn *c = ctx;
    ASSERT(c->closing);
    ASSERT(!c->recv_armed);
    ASSERT(!c->send_op);
    ring_owner_deinit(&c->owner);
    if (c->fd >= 0) {
        /* close(2) on a socket without SO_LINGER does not block. */
        (void)close(c->fd);
        c->fd = -1;
    }
    base_list_del(&c->link);
    base_counter_dec(&core->counters.conns);
    c->ops->on_close(c, c->close_reason);
    /* <c> may be freed now. */
    if (core->on_conn_closed) core->on_conn_closed(core);
}

static void recv_retry_task(struct ring_task *task)
{
    struct ring_conn *c = BASE_CONTAINER_OF(task, struct ring_conn, recv_retry);
    c->recv_wait_buf = false;
    if (!c->closing && !c->recv_paused && !c->recv_armed) recv_arm(c);
    if (c->recv_armed) {
        c->recv_woken = true;
    } else {
        /* Paused since it began waiting, or closing: the buffer is for the next in line. */
        ring_buf_wake_one(c->core);
    }
}

void ring_conn_init(struct ring_conn *c, struct ring_core *core, int fd,
                    const struct ring_conn_ops *ops, uint32_t read_timeout_ms,
                    uint32_t write_timeout_ms)
{
    ASSERT(fd >= 0);
    ASSERT(ops && ops->on_recv && ops->on_sent && ops->on_close);
    memset(c, 0, sizeof(*c));
    c->core = core;
    c->ops = ops;
    c->fd = fd;
    c->read_timeout_ms = read_timeout_ms;
    c->write_timeout_ms = write_timeout_ms;
    ring_owner_init(&c->owner);
    ring_task_init(&c->recv_retry, recv_retry_task);
    ring_timer_init(&c->send_zc_timer, send_zc_timed_out, c);
    base_list_add_tail(&core->conns, &c->link);
    base_counter_inc(&core->counters.conns);
}

static bool conn_is_busy(const struct ring_conn *c)
{
    if (c->send_op) return true;
    return c->ops->is_busy && c->ops->is_busy(c);
}

static void recv_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    struct ring_conn *c = op->ctx;
    struct ring_core *core = c->core;
    ASSERT(c->recv_armed);
    c->recv_armed = false;
    uint16_t bid = RING_CONN_NO_BUF;
    if (flags & IORING_CQE_F_BUFFER) {
        bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
        ring_buf_take(core, bid);
        c->recv_poll_first = false;
    }
    /* Woken for a buffer it did not take (the FIN, an error, a cancel): the next in line may.
     * Another -ENOBUFS means another receive took it first: its give-back wakes again. */
    if (c->recv_woken && bid == RING_CONN_NO_BUF && res != -ENOBUFS) ring_buf_wake_one(core);
    c->recv_woken = false;
    if (c->closing || res <= 0) {
        if (bid != RING_CONN_NO_BUF) ring_buf_unref(core, bid);
    }
    if (c->closing) return;
    if (res > 0) {
        ASSERT(bid != RING_CONN_NO_BUF);
        base_counter_add(&core->counters.bytes_in, (uint64_t)res);
        c->ops->on_recv(c, bid, (uint32_t)res);
        if (!c->closing && !c->recv_paused && !c->recv_armed) recv_arm(c);
        return;
    }
    if (res == 0) {
        c->ops->on_recv(c, RING_CONN_NO_BUF, 0);
        return;
    }
    if (res == -ENOBUFS) {
        base_counter_inc(&core->counters.enobufs);
        if (!c->recv_poll_first) {
            /*
             * A receive picks its buffer before it looks for bytes, so an idle connection
             * gets -ENOBUFS too. Waiting, it would take a give-back's wake-up and then receive
             * nothing (its receive holds no buffer while it waits for bytes), and a connection
             * behind it whose bytes are there would never be woken. So it receives again,
             * looking for bytes first: only a connection that has some waits for a buffer.
             */
            c->recv_poll_first = true;
            if (!c->recv_paused) recv_arm(c);
            return;
        }
        c->recv_wait_buf = true;
        ring_core_wait_for_buf(core, &c->recv_retry);
        return;
    }
    if (ring_op_timed_out(op, res)) {
        if (conn_is_busy(c)) {
            recv_arm(c);
            return;
        }
        base_counter_inc(&core->counters.timeouts);
        base_counter_inc(&core->counters.read_timeouts);
        if (c->ops->on_idle && c->ops->on_idle(c)) {
            /* The protocol says goodbye first and closes when done; the next timeout at the
             * latest (then on_idle answers false). */
            if (!c->closing && !c->recv_paused) recv_arm(c);
            return;
        }
        ring_conn_close(c, -ETIMEDOUT);
        return;
    }
    ring_conn_close(c, res);
}

static void recv_arm(struct ring_conn *c)
{
    ASSERT(!c->recv_armed);
    ASSERT(!c->closing);
    struct ring_op *op = ring_op_get(c->core, &c->owner, recv_done, c);
    if (!op) {
        /* Once a second at most: under a flood of connections this is every accept. */
        if (base_clock_every(&c->core->full_log_ns, BASE_NS_PER_S)) {
            LOG_WARN("op table full: closing connection fd %d", c->fd);
        }
        ring_conn_close(c, -EAGAIN);
        return;
    }
    struct io_uring_sqe *sqe = ring_op_sqe(op, c->read_timeout_ms);
    io_uring_prep_recv(sqe, c->fd, NULL, ring_buf_size(c->core), 0);
    if (c->recv_poll_first) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RING_BUF_GROUP;
    ring_op_commit(op, sqe);
    c->recv_armed = true;
}

int ring_conn_recv_start(struct ring_conn *c)
{
    if (c->closing) return -EPIPE;
    c->recv_paused = false;
    if (!c->recv_armed && !c->recv_wait_buf) recv_arm(c);
    return c->closing ? -EAGAIN : 0;
}

void ring_conn_recv_pause(struct ring_conn *c)
{
    c->recv_paused = true;
}

void ring_conn_recv_resume(struct ring_conn *c)
{
    if (!c->recv_paused) return;
    c->recv_paused = false;
    if (!c->closing && !c->recv_armed && !c->recv_wait_buf) recv_arm(c);
}

/* Drops <n> sent bytes from the front of the pending iovecs. */
static void send_advance(struct ring_conn *c, uint64_t n)
{
    ASSERT(n <= c->send_left);
    c->send_left -= n;
    struct iovec *iov = c->msg.msg_iov;
    size_t count = c->msg.msg_iovlen;
    /* Bounded by RING_CONN_IOV_MAX entries. */
    while (count > 0 && n >= iov->iov_len) {
        n -= iov->iov_len;
        iov++;
        count--;
    }
    if (count > 0) {
        iov->iov_base = (char *)iov->iov_base + n;
        iov->iov_len -= n;
    }
    c->msg.msg_iov = iov;
    c->msg.msg_iovlen = count;
}

/*
 * A zero-copy send completes twice: its result (with IORING_CQE_F_MORE) and, once the kernel
 * let go of the pages, a notification (IORING_CQE_F_NOTIF). The memory is the caller's again
 * only after the second, so the result waits in op->arg until then.
 */
static bool send_zc_pending(struct ring_op *op, int32_t *res, uint32_t flags)
{
    if (op->opcode != IORING_OP_SENDMSG_ZC) return false;
    if (flags & IORING_CQE_F_MORE) {
        op->arg = (uint64_t)(uint32_t)*res;
        return true;
    }
    if (flags & IORING_CQE_F_NOTIF) *res = (int32_t)(uint32_t)op->arg;
    return false;
}

/*
 * Resets <c>'s socket without closing its fd (TCP: tcp_disconnect, an RST to the peer): the
 * kernel drops what the socket still holds of the sends, and a zero-copy send's pages with
 * it, so its notification comes. On loopback the pages otherwise wait for the peer to read
 * (or close), measured on 6.18; shutdown() does not release them.
 */
static void conn_reset(struct ring_conn *c)
{
    struct sockaddr unspec;
    memset(&unspec, 0, sizeof(unspec));
    unspec.sa_family = AF_UNSPEC;
    if (connect(c->fd, &unspec, sizeof(unspec)) == -1) {
        LOG_DEBUG("resetting fd %d for its zero-copy send failed: %s", c->fd, base_err_str(-errno));
    }
}

/* The zero-copy send's notification did not come within write_timeout_ms of its result. */
static void send_zc_timed_out(struct ring_timer *timer)
{
    struct ring_conn *c = timer->ctx;
    if (c->closing || !c->send_zc_notif_wait) return;
    base_counter_inc(&c->core->counters.timeouts);
    base_counter_inc(&c->core->counters.write_timeouts);
    ring_conn_close(c, -ETIMEDOUT);
}

/* The zero-copy send's result came: its notification is bounded by the write timeout. */
static void send_zc_wait_begin(struct ring_conn *c)
{
    c->send_zc_notif_wait = true;
    if (c->closing) {
        /* Closed while the send was still under way (its cancel may end it with F_MORE). */
        conn_reset(c);
        return;
    }
    if (c->write_timeout_ms == 0) return;
    if (ring_timer_start(c->core, &c->send_zc_timer, &c->owner, c->write_timeout_ms) < 0) {
        /* Without its timeout a peer that stops reading would hold the connection for good. */
        if (base_clock_every(&c->core->full_log_ns, BASE_NS_PER_S)) {
            LOG_WARN("op table full: closing connection fd %d", c->fd);
        }
        ring_conn_close(c, -EAGAIN);
    }
}

static void send_zc_wait_end(struct ring_conn *c)
{
    c->send_zc_notif_wait = false;
    if (ring_timer_is_pending(&c->send_zc_timer)) ring_timer_stop(c->core, &c->send_zc_timer);
}

static void send_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    struct ring_conn *c = op->ctx;
    struct ring_core *core = c->core;
    ASSERT(c->send_op == op);
    if (send_zc_pending(op, &res, flags)) {
        send_zc_wait_begin(c);
        return;
    }
    if (c->send_zc_notif_wait) send_zc_wait_end(c);
    c->send_op = NULL;
    if (c->closing) return;
    if (res > 0) {
        base_counter_add(&core->counters.bytes_out, (uint64_t)res);
        send_advance(c, (uint64_t)res);
        if (c->send_left > 0) {
            int rc = send_arm(c);
            if (rc < 0) ring_conn_close(c, rc);
            return;
        }
        c->ops->on_sent(c);
        return;
    }
    if (ring_op_timed_out(op, res)) {
        base_counter_inc(&core->counters.timeouts);
        base_counter_inc(&core->counters.write_timeouts);
        ring_conn_close(c, -ETIMEDOUT);
        return;
    }
    ring_conn_close(c, res == 0 ? -EPIPE : res);
}

#ifdef RC_ASAN
/* ASan cannot see the kernel read the buffers: check them before they are handed over. */
static void send_check_poison(const struct ring_conn *c)
{
    for (size_t i = 0; i < c->msg.msg_iovlen; i++) {
        const struct iovec *v = &c->msg.msg_iov[i];
        ASSERT(__asan_region_is_poisoned(v->iov_base, v->iov_len) == NULL);
    }
}
#else
static void send_check_poison(const struct ring_conn *c)
{
    (void)c;
}
#endif

static int send_arm(struct ring_conn *c)
{
    ASSERT(!c->send_op);
    struct ring_op *op = ring_op_get(c->core, &c->owner, send_done, c);
    if (!op) return -EAGAIN;
    send_check_poison(c);
    struct io_uring_sqe *sqe = ring_op_sqe(op, c->write_timeout_ms);
    if (c->send_zc_min && c->send_left >= c->send_zc_min) {
        io_uring_prep_sendmsg_zc(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
    } else {
        io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
    }
    ring_op_commit(op, sqe);
    c->send_op = op;
    return 0;
}

void ring_conn_set_send_zc(struct ring_conn *c, uint32_t min_bytes)
{
    c->send_zc_min = min_bytes;
}

int ring_conn_send(struct ring_conn *c, const struct iovec *iov, unsigned count)
{
    if (c->closing) return -EPIPE;
    if (c->send_op) return -EBUSY;
    if (count == 0 || count > RING_CONN_IOV_MAX) return -EINVAL;
    uint64_t total = 0;
    for (unsigned i = 0; i < count; i++) {
        c->iov[i] = iov[i];
        total += iov[i].iov_len;
    }
    if (total == 0) return -EINVAL;
    memset(&c->msg, 0, sizeof(c->msg));
    c->msg.msg_iov = c->iov;
    c->msg.msg_iovlen = count;
    c->send_left = total;
    return send_arm(c);
}

void ring_conn_close(struct ring_conn *c, int reason)
{
    if (c->closing) return;
    c->closing = true;
    c->close_reason = reason;
    ring_task_cancel(&c->recv_retry);
    /* Its retry may have been woken already (queued to run): pass the wake-up on. */
    if (c->recv_wait_buf) ring_buf_wake_one(c->core);
    c->recv_wait_buf = false;
    if (c->send_zc_notif_wait) conn_reset(c);
    /* Cancels the zero-copy send's timer too (its callback does not run then). */
    ring_owner_close(c->core, &c->owner, conn_idle, c);
}

void ring_conn_drain(struct ring_conn *c)
{
    if (c->closing || c->draining) return;
    c->draining = true;
    if (c->ops->on_drain) {
        c->ops->on_drain(c);
    } else {
        ring_conn_close(c, 0);
    }
}

const char *ring_conn_peer(const struct ring_conn *c, char buf[RING_CONN_PEER_MAX])
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss)); /* AF_UNSPEC unless the kernel says */
    socklen_t len = sizeof(ss);
    const void *ip = NULL;
    unsigned port = 0;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            ip = &in->sin_addr;
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            ip = &in6->sin6_addr;
            port = ntohs(in6->sin6_port);
        }
    }
    char addr[INET6_ADDRSTRLEN];
    if (ip && inet_ntop(ss.ss_family, ip, addr, sizeof(addr))) {
        bool v6 = ss.ss_family == AF_INET6;
        (void)snprintf(buf, RING_CONN_PEER_MAX, v6 ? "[%s]:%u" : "%s:%u", addr, port);
    } else {
        (void)snprintf(buf, RING_CONN_PEER_MAX, "fd %d", c->fd);
    }
    return buf;
}
