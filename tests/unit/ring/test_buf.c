/*
 * The provided-buffer pool: references, bounds, and receives that find the pool empty.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "echo.h"
#include "ring/buf.h"
#include "ring/core.h"

static uint64_t bufs_out(struct ring_core *core)
{
    return base_counter_get(&ring_core_counters(core)->bufs_out);
}

struct got {
    int32_t res;
    uint32_t flags;
    bool done;
};

static void got_cqe(struct ring_op *op, int32_t res, uint32_t flags)
{
    struct got *g = op->ctx;
    g->res = res;
    g->flags = flags;
    g->done = true;
}

/* Receives into a provided buffer from <fd>; returns the buffer id the kernel picked. */
static uint16_t recv_one(struct ring_core *core, int fd, struct got *g)
{
    struct ring_op *op = ring_op_get(core, NULL, got_cqe, g);
    cr_assert(ne(ptr, op, NULL));
    struct io_uring_sqe *sqe = ring_op_sqe(op, 0);
    io_uring_prep_recv(sqe, fd, NULL, ring_buf_size(core), 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RING_BUF_GROUP;
    ring_op_commit(op, sqe);
    for (int i = 0; i < 500 && !g->done; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(g->done);
    if (g->res < 0) return UINT16_MAX;
    cr_assert(ne(u32, g->flags & IORING_CQE_F_BUFFER, 0));
    uint16_t bid = (uint16_t)(g->flags >> IORING_CQE_BUFFER_SHIFT);
    ring_buf_take(core, bid);
    return bid;
}

Test(ring_buf, references_keep_a_buffer_until_the_last_drop)
{
    struct ring_core *core = echo_core_create(0, 4, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    cr_assert(eq(sz, (size_t)write(sv[1], "abc", 3), 3));
    struct got g = { 0 };
    uint16_t bid = recv_one(core, sv[0], &g);
    cr_assert(eq(int, g.res, 3));
    cr_assert(eq(int, memcmp(ring_buf_data(core, bid), "abc", 3), 0));
    cr_assert(eq(u64, bufs_out(core), 1));
    ring_buf_ref(core, bid);
    ring_buf_unref(core, bid);
    cr_assert(eq(u64, bufs_out(core), 1), "one reference is still held");
    ring_buf_unref(core, bid);
    cr_assert(eq(u64, bufs_out(core), 0));
    close(sv[0]);
    close(sv[1]);
    ring_core_destroy(core);
}

Test(ring_buf, contains_checks_both_ends)
{
    struct ring_core *core = echo_core_create(0, 4, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    cr_assert(eq(sz, (size_t)write(sv[1], "x", 1), 1));
    struct got g = { 0 };
    uint16_t bid = recv_one(core, sv[0], &g);
    const uint8_t *p = ring_buf_data(core, bid);
    cr_assert(ring_buf_contains(core, bid, p, 4096));
    cr_assert(ring_buf_contains(core, bid, p + 4095, 1));
    cr_assert(ring_buf_contains(core, bid, p + 4096, 0));
    cr_assert(not(ring_buf_contains(core, bid, p + 4095, 2)));
    cr_assert(not(ring_buf_contains(core, bid, p - 1, 1)));
    cr_assert(not(ring_buf_contains(core, bid, p, 4097)));
    cr_assert(not(ring_buf_contains(core, 4, p, 1)), "bid past the pool");
    ring_buf_unref(core, bid);
    close(sv[0]);
    close(sv[1]);
    ring_core_destroy(core);
}

Test(ring_buf, an_empty_pool_answers_enobufs_and_loses_no_data)
{
    struct ring_core *core = echo_core_create(0, 1, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    cr_assert(eq(sz, (size_t)write(sv[1], "first", 5), 5));
    struct got g1 = { 0 };
    uint16_t bid = recv_one(core, sv[0], &g1);
    cr_assert(eq(int, g1.res, 5));
    cr_assert(eq(sz, (size_t)write(sv[1], "second", 6), 6));
    struct got g2 = { 0 };
    cr_assert(eq(int, recv_one(core, sv[0], &g2), UINT16_MAX));
    cr_assert(eq(int, g2.res, -ENOBUFS));
    ring_buf_unref(core, bid);
    struct got g3 = { 0 };
    bid = recv_one(core, sv[0], &g3);
    cr_assert(eq(int, g3.res, 6), "the bytes waited in the socket");
    cr_assert(eq(int, memcmp(ring_buf_data(core, bid), "second", 6), 0));
    ring_buf_unref(core, bid);
    close(sv[0]);
    close(sv[1]);
    ring_core_destroy(core);
}

struct counted_task {
    struct ring_task task;
    int runs;
};

static void count_run(struct ring_task *task)
{
    BASE_CONTAINER_OF(task, struct counted_task, task)->runs++;
}

Test(ring_buf, a_task_waits_until_half_the_pool_is_free)
{
    struct ring_core *core = echo_core_create(0, 8, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    uint16_t bids[7];
    for (int i = 0; i < 7; i++) {
        cr_assert(eq(sz, (size_t)write(sv[1], "x", 1), 1));
        struct got g = { 0 };
        bids[i] = recv_one(core, sv[0], &g);
        cr_assert(eq(int, g.res, 1));
        /* Low below a quarter free (2 of 8), plenty from half (4 of 8). */
        cr_assert(eq(int, ring_buf_is_low(core), i >= 6), "after %d taken", i + 1);
        cr_assert(eq(int, ring_buf_is_plenty(core), i < 4), "after %d taken", i + 1);
    }
    static struct counted_task t;
    ring_task_init(&t.task, count_run);
    ring_buf_wait_plenty(core, &t.task);
    ring_buf_wait_plenty(core, &t.task); /* once is enough */
    /* Giving back 1, 2, then 3 buffers (2, 3, then 4 free). */
    for (int i = 0; i < 3; i++) {
        ring_buf_unref(core, bids[i]);
        cr_assert(ge(int, ring_core_tick(core, 0), 0));
        cr_assert(eq(int, t.runs, i == 2 ? 1 : 0), "after %d given back", i + 1);
    }
    /* Already plenty: the task runs at the next turn. */
    ring_buf_wait_plenty(core, &t.task);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, t.runs, 2));
    /* A cancelled waiter does not run. */
    for (int i = 3; i < 7; i++)
        ring_buf_unref(core, bids[i]);
    struct got g = { 0 };
    for (int i = 0; i < 7; i++) {
        cr_assert(eq(sz, (size_t)write(sv[1], "y", 1), 1));
        memset(&g, 0, sizeof(g));
        bids[i] = recv_one(core, sv[0], &g);
    }
    ring_buf_wait_plenty(core, &t.task);
    ring_task_cancel(&t.task);
    for (int i = 0; i < 7; i++)
        ring_buf_unref(core, bids[i]);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, t.runs, 2));
    close(sv[0]);
    close(sv[1]);
    ring_core_destroy(core);
}

struct pusher {
    uint16_t port;
    int rounds;
    bool ok;
};

static void *push_and_check(void *arg)
{
    struct pusher *p = arg;
    int fd = echo_connect(p->port);
    char out[3000];
    char in[3000];
    p->ok = true;
    for (int r = 0; r < p->rounds && p->ok; r++) {
        memset(out, 'a' + r % 26, sizeof(out));
        echo_write_all(fd, out, sizeof(out));
        echo_read_exact(fd, in, sizeof(in));
        p->ok = memcmp(in, out, sizeof(in)) == 0;
    }
    close(fd);
    return NULL;
}

static bool waited_for_buffers(const struct ring_counters_snapshot *s)
{
    return s->conns == 0 && s->bufs_out == 0;
}

Test(ring_buf, connections_wait_for_buffers_when_the_pool_runs_dry, .timeout = 60)
{
    /* Two 1 KiB buffers for eight connections sending 3000-byte messages: receives keep
     * finding the pool empty, wait for a buffer to come back, and every echo is still exact. */
    struct echo_config cfg = { .read_timeout_ms = 10000,
                               .write_timeout_ms = 10000,
                               .recv_buf_count = 2,
                               .recv_buf_size = 1024 };
    struct ring_server *srv = echo_server_start(1, &cfg);
    struct pusher ps[8];
    pthread_t threads[8];
    for (int i = 0; i < 8; i++) {
        ps[i] = (struct pusher){ .port = ring_server_port(srv), .rounds = 50 };
        cr_assert(eq(int, pthread_create(&threads[i], NULL, push_and_check, &ps[i]), 0));
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(threads[i], NULL);
        cr_assert(ps[i].ok, "pusher %d got wrong bytes", i);
    }
    struct ring_counters_snapshot s;
    cr_assert(echo_wait_counters(srv, 5000, waited_for_buffers, &s));
    cr_assert(gt(u64, s.enobufs, 0), "the pool never ran dry");
    cr_assert(eq(u64, s.bytes_in, 8ULL * 50 * 3000));
    cr_assert(eq(int, ring_server_stop(srv), 0));
}

/*
 * Receives that found the pool empty wait for a buffer, and each buffer given back wakes one
 * of them. The one woken must then take the buffer, or pass the wake-up on: a connection
 * still waiting while the buffer lies with the kernel has no receive armed (so no read
 * timeout either), and no later give-back may ever come to wake it.
 */

/* A protocol that keeps the buffer of its first receive and then stops receiving. */
struct holder {
    struct ring_conn conn; /* first: the callbacks cast back */
    uint16_t bid;          /* the buffer held, or RING_CONN_NO_BUF */
    bool pause;            /* stop receiving once it holds one */
    bool closed;           /* on_close ran */
};

static void holder_recv(struct ring_conn *c, uint16_t bid, uint32_t len)
{
    struct holder *h = (struct holder *)c;
    if (len > 0 && h->bid == RING_CONN_NO_BUF) {
        h->bid = bid;
        if (h->pause) ring_conn_recv_pause(c);
        return;
    }
    if (len > 0) ring_buf_unref(c->core, bid);
}

static void holder_sent(struct ring_conn *c)
{
    (void)c;
}

static void holder_close(struct ring_conn *c, int reason)
{
    (void)reason;
    ((struct holder *)c)->closed = true;
}

static const struct ring_conn_ops holder_ops = {
    .on_recv = holder_recv,
    .on_sent = holder_sent,
    .on_close = holder_close,
};

/* Lets the completions of what was just submitted come in. */
static void settle(struct ring_core *core)
{
    for (int i = 0; i < 10; i++)
        cr_assert(ge(int, ring_core_tick(core, 5), 0));
}

struct waiters {
    struct ring_core *core; /* one receive buffer */
    struct holder x;        /* holds it */
    struct echo_bare a;     /* first in line */
    struct echo_bare b;     /* second in line */
    int peers[3];           /* the other ends of x, a, b */
};

/* <w>'s connections, <x> holding the pool's only buffer (and receiving on unless <pause>). */
static void waiters_open(struct waiters *w, bool pause)
{
    memset(w, 0, sizeof(*w));
    w->core = echo_core_create(0, 1, 4096);
    w->x.bid = RING_CONN_NO_BUF;
    w->x.pause = pause;
    struct ring_conn *conns[3] = { &w->x.conn, &w->a.conn, &w->b.conn };
    const struct ring_conn_ops *ops[3] = { &holder_ops, &echo_bare_ops, &echo_bare_ops };
    for (int i = 0; i < 3; i++) {
        int sv[2];
        cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
        ring_conn_init(conns[i], w->core, sv[0], ops[i], 0, 0);
        w->peers[i] = sv[1];
    }
    cr_assert(eq(int, ring_conn_recv_start(&w->x.conn), 0));
    cr_assert(eq(sz, (size_t)write(w->peers[0], "x", 1), 1));
    for (int i = 0; i < 100 && w->x.bid == RING_CONN_NO_BUF; i++)
        cr_assert(ge(int, ring_core_tick(w->core, 10), 0));
    cr_assert(ne(u32, w->x.bid, RING_CONN_NO_BUF));
    settle(w->core);
}

/* <c> starts receiving after its peer sent a byte (or closed, with <eof>): it waits. */
static void waiters_line_up(struct waiters *w, struct echo_bare *c, int peer, bool eof)
{
    if (eof) {
        cr_assert(eq(int, shutdown(peer, SHUT_WR), 0));
    } else {
        cr_assert(eq(sz, (size_t)write(peer, "y", 1), 1));
    }
    cr_assert(eq(int, ring_conn_recv_start(&c->conn), 0));
    settle(w->core);
    cr_assert(eq(u32, c->received, 0), "the pool is empty");
}

/* <x> gives its buffer back. */
static void waiters_give_back(struct waiters *w)
{
    ring_buf_unref(w->core, w->x.bid);
    w->x.bid = RING_CONN_NO_BUF;
}

/* Ticks until <b> received its byte; false when it never does. */
static bool waiters_b_receives(struct waiters *w)
{
    for (int i = 0; i < 100 && w->b.received == 0; i++)
        cr_assert(ge(int, ring_core_tick(w->core, 10), 0));
    return w->b.received == 1;
}

static void waiters_close(struct waiters *w)
{
    ring_conn_close(&w->x.conn, 0);
    ring_conn_close(&w->a.conn, 0);
    ring_conn_close(&w->b.conn, 0);
    for (int i = 0; i < 100 && !(w->x.closed && w->a.closed && w->b.closed); i++)
        cr_assert(ge(int, ring_core_tick(w->core, 10), 0));
    cr_assert(w->x.closed && w->a.closed == 1 && w->b.closed == 1);
    cr_assert(eq(u64, base_counter_get(&ring_core_counters(w->core)->ops_in_flight), 0));
    cr_assert(eq(u64, bufs_out(w->core), 0));
    for (int i = 0; i < 3; i++)
        close(w->peers[i]);
    ring_core_destroy(w->core);
}

Test(ring_buf, a_receive_with_bytes_gets_the_buffer_before_an_idle_one)
{
    /* An idle connection whose receive re-armed while the pool was empty must not take the
     * wake-up of a buffer it has nothing to put in: <x> has sent nothing more, <b> has. */
    struct waiters w;
    waiters_open(&w, false);
    waiters_line_up(&w, &w.b, w.peers[2], false);
    waiters_give_back(&w);
    cr_assert(waiters_b_receives(&w), "the buffer went back, yet the bytes were never read");
    waiters_close(&w);
}

Test(ring_buf, a_buffer_woken_for_a_paused_receive_goes_to_the_next_in_line)
{
    /* The connection woken was paused by its protocol meanwhile (backpressure). */
    struct waiters w;
    waiters_open(&w, true);
    waiters_line_up(&w, &w.a, w.peers[1], false);
    waiters_line_up(&w, &w.b, w.peers[2], false);
    ring_conn_recv_pause(&w.a.conn);
    waiters_give_back(&w);
    cr_assert(waiters_b_receives(&w), "the buffer went back, yet the bytes were never read");
    cr_assert(eq(u32, w.a.received, 0), "paused");
    ring_conn_recv_resume(&w.a.conn);
    for (int i = 0; i < 100 && w.a.received == 0; i++)
        cr_assert(ge(int, ring_core_tick(w.core, 10), 0));
    cr_assert(eq(u32, w.a.received, 1));
    waiters_close(&w);
}

Test(ring_buf, a_buffer_woken_for_a_closing_receive_goes_to_the_next_in_line)
{
    /* The connection woken closes before its retry runs (another completion of the same
     * batch ended it). */
    struct waiters w;
    waiters_open(&w, true);
    waiters_line_up(&w, &w.a, w.peers[1], false);
    waiters_line_up(&w, &w.b, w.peers[2], false);
    waiters_give_back(&w);
    ring_conn_close(&w.a.conn, 0);
    cr_assert(waiters_b_receives(&w), "the buffer went back, yet the bytes were never read");
    waiters_close(&w);
}

Test(ring_buf, a_buffer_woken_for_an_end_of_stream_goes_to_the_next_in_line)
{
    /* The connection woken had only its peer's FIN to read: its receive takes no buffer. */
    struct waiters w;
    waiters_open(&w, true);
    waiters_line_up(&w, &w.a, w.peers[1], true);
    waiters_line_up(&w, &w.b, w.peers[2], false);
    waiters_give_back(&w);
    cr_assert(waiters_b_receives(&w), "the buffer went back, yet the bytes were never read");
    cr_assert(eq(int, w.a.closed, 0), "echo_bare closes only when asked");
    waiters_close(&w);
}
