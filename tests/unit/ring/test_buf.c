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
