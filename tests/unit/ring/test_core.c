/*
 * The op table, owners, timers, tasks and messages of one core, driven tick by tick from the
 * test's own thread.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "echo.h"
#include "ring/core.h"
#include "ring/internal.h"
#include "ring/timer.h"

static uint64_t in_flight(struct ring_core *core)
{
    return base_counter_get(&ring_core_counters(core)->ops_in_flight);
}

/* Ticks until <done> is set or 5 s passed. */
static void run_until(struct ring_core *core, const bool *done)
{
    for (int i = 0; i < 500 && !*done; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(done[0], "condition not reached");
}

struct record {
    int calls;
    int32_t res;
    bool timed_out;
    bool done;
};

static void record_cqe(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)flags;
    struct record *r = op->ctx;
    r->calls++;
    r->res = res;
    r->timed_out = ring_op_timed_out(op, res);
    r->done = true;
}

Test(ring_core, nop_completes_once_and_releases_its_slot)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct record r = { 0 };
    struct ring_op *op = ring_op_get(core, NULL, record_cqe, &r);
    cr_assert(ne(ptr, op, NULL));
    uint64_t first_ud = ring_op_user_data(op);
    struct io_uring_sqe *sqe = ring_op_sqe(op, 0);
    io_uring_prep_nop(sqe);
    ring_op_commit(op, sqe);
    cr_assert(eq(u64, in_flight(core), 1));
    run_until(core, &r.done);
    cr_assert(eq(int, r.calls, 1));
    cr_assert(eq(int, r.res, 0));
    cr_assert(eq(u64, in_flight(core), 0));
    /* The slot comes back with a new generation: a late CQE could not reach it. */
    struct ring_op *again = ring_op_get(core, NULL, record_cqe, &r);
    cr_assert(eq(ptr, again, op));
    cr_assert(ne(u64, ring_op_user_data(again), first_ud));
    ring_op_put(again);
    ring_core_destroy(core);
}

Test(ring_core, full_table_refuses_instead_of_growing)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct ring_op *ops[64];
    struct record r = { 0 };
    for (int i = 0; i < 64; i++) {
        ops[i] = ring_op_get(core, NULL, record_cqe, &r);
        cr_assert(ne(ptr, ops[i], NULL));
    }
    cr_assert(eq(ptr, ring_op_get(core, NULL, record_cqe, &r), NULL));
    for (int i = 0; i < 64; i++)
        ring_op_put(ops[i]);
    cr_assert(eq(u64, in_flight(core), 0));
    ring_core_destroy(core);
}

static void submit_recv(struct ring_core *core, struct ring_owner *owner, int fd, char *buf,
                        uint32_t timeout_ms, struct record *r)
{
    struct ring_op *op = ring_op_get(core, owner, record_cqe, r);
    cr_assert(ne(ptr, op, NULL));
    struct io_uring_sqe *sqe = ring_op_sqe(op, timeout_ms);
    io_uring_prep_recv(sqe, fd, buf, 16, 0);
    ring_op_commit(op, sqe);
}

Test(ring_core, linked_timeout_fires_on_a_silent_socket)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    char buf[16];
    struct record r = { 0 };
    submit_recv(core, NULL, sv[0], buf, 50, &r);
    run_until(core, &r.done);
    cr_assert(eq(int, r.calls, 1));
    cr_assert(r.timed_out, "res %d", r.res);
    cr_assert(eq(u64, in_flight(core), 0));
    /* With data waiting, the same pair completes with the data and no timeout. */
    cr_assert(eq(sz, (size_t)write(sv[1], "hi", 2), 2));
    r = (struct record){ 0 };
    submit_recv(core, NULL, sv[0], buf, 1000, &r);
    run_until(core, &r.done);
    cr_assert(eq(int, r.res, 2));
    cr_assert(not(r.timed_out));
    close(sv[0]);
    close(sv[1]);
    ring_core_destroy(core);
}

struct closer {
    struct ring_owner owner;
    bool idle;
    bool in_close_call;
};

static void closer_idle(struct ring_core *core, void *ctx)
{
    (void)core;
    struct closer *c = ctx;
    cr_assert(not(c->in_close_call), "on_idle ran inside ring_owner_close");
    cr_assert(ring_owner_is_idle(&c->owner));
    ring_owner_deinit(&c->owner);
    c->idle = true;
}

Test(ring_core, owner_close_cancels_every_op_then_goes_idle)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    struct closer c = { 0 };
    ring_owner_init(&c.owner);
    char buf1[16];
    char buf2[16];
    struct record r1 = { 0 };
    struct record r2 = { 0 };
    submit_recv(core, &c.owner, sv[0], buf1, 0, &r1);
    submit_recv(core, &c.owner, sv[0], buf2, 10000, &r2);
    cr_assert(eq(int, ring_core_tick(core, 0), 0)); /* submitted, nothing completes */
    cr_assert(eq(u32, c.owner.ops_in_flight, 2));
    c.in_close_call = true;
    ring_owner_close(core, &c.owner, closer_idle, &c);
    c.in_close_call = false;
    cr_assert(not(c.idle));
    run_until(core, &c.idle);
    cr_assert(eq(int, r1.res, -ECANCELED));
    cr_assert(eq(int, r2.res, -ECANCELED));
    cr_assert(not(r2.timed_out), "an own cancel is not a timeout");
    cr_assert(eq(u64, base_counter_get(&ring_core_counters(core)->cancels), 2));
    cr_assert(eq(u64, in_flight(core), 0));
    close(sv[0]);
    close(sv[1]);
    ring_core_destroy(core);
}

Test(ring_core, closing_an_idle_owner_defers_its_callback)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct closer c = { 0 };
    ring_owner_init(&c.owner);
    c.in_close_call = true;
    ring_owner_close(core, &c.owner, closer_idle, &c);
    c.in_close_call = false;
    cr_assert(not(c.idle));
    run_until(core, &c.idle);
    ring_core_destroy(core);
}

struct tick {
    struct ring_timer timer;
    int fired;
    bool done;
};

static void tick_fired(struct ring_timer *t)
{
    struct tick *k = t->ctx;
    k->fired++;
    k->done = true;
}

Test(ring_core, timers_fire_and_stopped_timers_do_not)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct tick a = { 0 };
    struct tick b = { 0 };
    ring_timer_init(&a.timer, tick_fired, &a);
    ring_timer_init(&b.timer, tick_fired, &b);
    cr_assert(eq(int, ring_timer_start(core, &a.timer, NULL, 20), 0));
    cr_assert(eq(int, ring_timer_start(core, &b.timer, NULL, 20), 0));
    ring_timer_stop(core, &b.timer);
    run_until(core, &a.done);
    for (int i = 0; i < 20 && ring_timer_is_armed(&b.timer); i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(int, a.fired, 1));
    cr_assert(eq(int, b.fired, 0));
    cr_assert(not(ring_timer_is_armed(&b.timer)));
    cr_assert(eq(u64, in_flight(core), 0));
    ring_core_destroy(core);
}

/*
 * A connection's request stops its retry timer when it ends; the next request, handled in the
 * same batch, may need the timer at once, before the kernel confirmed the removal. Starting it
 * again then aborted (the timer still held the old op), and a request that only checked
 * whether the timer was armed waited for a callback that never ran.
 */
Test(ring_core, a_stopped_timer_starts_again_before_its_removal_is_back)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct tick k = { 0 };
    ring_timer_init(&k.timer, tick_fired, &k);
    cr_assert(eq(int, ring_timer_start(core, &k.timer, NULL, 10000), 0));
    cr_assert(ring_timer_is_pending(&k.timer));
    ring_timer_stop(core, &k.timer);
    cr_assert(ring_timer_is_armed(&k.timer), "the removal is not back yet");
    cr_assert(not(ring_timer_is_pending(&k.timer)), "a stopped timer's callback never runs");
    cr_assert(eq(int, ring_timer_start(core, &k.timer, NULL, 5), 0));
    cr_assert(ring_timer_is_pending(&k.timer));
    cr_assert(eq(u64, in_flight(core), 2));
    run_until(core, &k.done);
    cr_assert(eq(int, k.fired, 1));
    for (int i = 0; i < 20 && in_flight(core) > 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(int, k.fired, 1), "the first, stopped timer did not fire");
    cr_assert(not(ring_timer_is_armed(&k.timer)));
    cr_assert(eq(u64, in_flight(core), 0));
    ring_core_destroy(core);
}

struct counted_task {
    struct ring_task task;
    int runs;
};

static void count_run(struct ring_task *t)
{
    ((struct counted_task *)t)->runs++;
}

Test(ring_core, deferred_task_runs_once_per_queueing)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct counted_task t = { 0 };
    ring_task_init(&t.task, count_run);
    ring_task_defer(core, &t.task);
    ring_task_defer(core, &t.task); /* already queued: no-op */
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, t.runs, 1));
    ring_task_defer(core, &t.task);
    ring_task_cancel(&t.task);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, t.runs, 1));
    ring_core_destroy(core);
}

/* A timer armed by a task that waited for a free op (ring_op_wait_free). */
struct arming_task {
    struct ring_task task;
    struct ring_core *core;
    struct tick tick;
    int runs;
};

static void arm_run(struct ring_task *t)
{
    struct arming_task *a = (struct arming_task *)t;
    a->runs++;
    if (ring_timer_start(a->core, &a->tick.timer, NULL, 5) < 0) ring_op_wait_free(a->core, t);
}

/*
 * A periodic timer that cannot be armed because the op table is full must be armed once an op
 * comes back, not only when its caller happens to try again: the parked uploads' sweep waited
 * for the next upload to park, and on a quiet core they outlived their 60 s indefinitely.
 */
Test(ring_core, a_task_waiting_for_a_free_op_runs_when_one_is_released)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct ring_op *ops[64];
    struct record r = { 0 };
    for (int i = 0; i < 64; i++) {
        ops[i] = ring_op_get(core, NULL, record_cqe, &r);
        cr_assert(ne(ptr, ops[i], NULL));
    }
    struct arming_task a[2];
    for (int i = 0; i < 2; i++) {
        memset(&a[i], 0, sizeof(a[i]));
        a[i].core = core;
        ring_task_init(&a[i].task, arm_run);
        ring_timer_init(&a[i].tick.timer, tick_fired, &a[i].tick);
        ring_op_wait_free(core, &a[i].task);
    }
    ring_op_wait_free(core, &a[0].task); /* already waiting: no second wake-up */
    for (int i = 0; i < 3; i++)
        cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, a[0].runs + a[1].runs, 0), "ran with the table full");
    /* A real completion releases one op: the first waiter runs and takes it for its timer. */
    struct io_uring_sqe *sqe = ring_op_sqe(ops[0], 0);
    io_uring_prep_nop(sqe);
    ring_op_commit(ops[0], sqe);
    run_until(core, &r.done);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, a[0].runs, 1));
    cr_assert(ring_timer_is_armed(&a[0].tick.timer));
    cr_assert(eq(int, a[1].runs, 0), "one waiter per released op");
    /* The next op given back goes to the second. */
    ring_op_put(ops[1]);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, a[1].runs, 1));
    cr_assert(ring_timer_is_armed(&a[1].tick.timer));
    for (int i = 2; i < 64; i++)
        ring_op_put(ops[i]);
    run_until(core, &a[0].tick.done);
    run_until(core, &a[1].tick.done);
    /* With a free op, a waiter runs after the iteration at once. */
    a[0].tick.done = false;
    ring_op_wait_free(core, &a[0].task);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, a[0].runs, 2));
    run_until(core, &a[0].tick.done);
    for (int i = 0; i < 20 && in_flight(core) > 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(u64, in_flight(core), 0));
    ring_core_destroy(core);
}

static uint64_t op_waiters(struct ring_core *core)
{
    return base_counter_get(&ring_core_counters(core)->op_waiters);
}

static uint64_t op_waits(struct ring_core *core)
{
    return base_counter_get(&ring_core_counters(core)->op_waits);
}

/*
 * A timer that waits for a free op is a core that does its periodic work late, or not at all:
 * an operator must see it. ringcas_op_waiters counts the tasks waiting now (one waiting twice
 * counts once), ringcas_op_waits_total every wait; a task given its op, or cancelled, no longer
 * counts.
 */
Test(ring_core, tasks_waiting_for_a_free_op_are_counted_until_they_get_one)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct ring_op *ops[64];
    struct record r = { 0 };
    for (int i = 0; i < 64; i++) {
        ops[i] = ring_op_get(core, NULL, record_cqe, &r);
        cr_assert(ne(ptr, ops[i], NULL));
    }
    cr_assert(eq(ptr, ring_op_get(core, NULL, record_cqe, &r), NULL), "the table is full");
    struct arming_task a[3];
    for (int i = 0; i < 3; i++) {
        memset(&a[i], 0, sizeof(a[i]));
        a[i].core = core;
        ring_task_init(&a[i].task, arm_run);
        ring_timer_init(&a[i].tick.timer, tick_fired, &a[i].tick);
        ring_op_wait_free(core, &a[i].task);
    }
    ring_op_wait_free(core, &a[0].task); /* already waiting: counted once */
    cr_assert(eq(u64, op_waiters(core), 3));
    cr_assert(eq(u64, op_waits(core), 3));
    /* A cancelled waiter waits no more. */
    ring_task_cancel(&a[2].task);
    cr_assert(eq(u64, op_waiters(core), 2));
    /* A real completion gives one op back: the first waiter takes it for its timer. */
    struct io_uring_sqe *sqe = ring_op_sqe(ops[0], 0);
    io_uring_prep_nop(sqe);
    ring_op_commit(ops[0], sqe);
    run_until(core, &r.done);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, a[0].runs, 1));
    cr_assert(eq(u64, op_waiters(core), 1), "the second still waits");
    ring_op_put(ops[1]);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, a[1].runs, 1));
    cr_assert(eq(u64, op_waiters(core), 0));
    cr_assert(eq(u64, op_waits(core), 3));
    for (int i = 2; i < 64; i++)
        ring_op_put(ops[i]);
    /* With a free op a task does not wait: nothing counted. */
    ring_op_wait_free(core, &a[2].task);
    cr_assert(eq(u64, op_waiters(core), 0));
    cr_assert(eq(u64, op_waits(core), 3));
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    cr_assert(eq(int, a[2].runs, 1));
    for (int i = 0; i < 3; i++)
        run_until(core, &a[i].tick.done);
    for (int i = 0; i < 20 && in_flight(core) > 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(u64, in_flight(core), 0));
    ring_core_destroy(core);
}

/* Keeps the loop busy for 3 ms, as a handler compressing a large chunk would. */
static void spin_3ms(struct ring_task *t)
{
    (void)t;
    uint64_t until = base_clock_now_ns() + 3 * BASE_NS_PER_MS;
    while (base_clock_now_ns() < until) {
    }
}

Test(ring_core, busy_time_and_long_iterations_are_counted)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    const struct ring_counters *c = ring_core_counters(core);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    uint64_t busy = base_counter_get(&c->busy_ns);
    cr_assert(eq(u64, base_counter_get(&c->long_ticks), 0)); /* nothing to do: short */
    struct ring_task t;
    ring_task_init(&t, spin_3ms);
    ring_task_defer(core, &t);
    cr_assert(ge(int, ring_core_tick(core, 0), 0));
    uint64_t grew = base_counter_get(&c->busy_ns) - busy;
    cr_assert(ge(u64, grew, 3 * BASE_NS_PER_MS), "busy_ns grew by %llu", (unsigned long long)grew);
    cr_assert(eq(u64, base_counter_get(&c->long_ticks), 1));
    ring_core_destroy(core);
}

struct peer {
    struct ring_core *core;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool ready;
    int received;
};

static void peer_got(struct ring_core *core, void *arg)
{
    struct peer *p = arg;
    cr_assert(eq(ptr, core, p->core));
    p->received++;
    if (p->received == 2) ring_core_stop(core);
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    struct ring_core *core = echo_core_create(1, 16, 4096);
    pthread_mutex_lock(&p->lock);
    p->core = core;
    p->ready = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    cr_assert(eq(int, ring_core_run(core), 0));
    ring_core_destroy(core);
    return NULL;
}

Test(ring_core, msg_ring_reaches_another_core)
{
    struct peer p = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };
    pthread_t thread;
    cr_assert(eq(int, pthread_create(&thread, NULL, peer_main, &p), 0));
    pthread_mutex_lock(&p.lock);
    while (!p.ready)
        pthread_cond_wait(&p.cond, &p.lock);
    pthread_mutex_unlock(&p.lock);
    /* From another core's ring... */
    struct ring_core *self = echo_core_create(0, 16, 4096);
    struct ring_msg m1 = { .fn = peer_got, .arg = &p };
    cr_assert(eq(int, ring_core_post(self, p.core, &m1), 0));
    cr_assert(ge(int, ring_core_tick(self, 0), 0));
    /* ...and from a plain ring, as the main thread does for shutdown. */
    struct io_uring plain;
    cr_assert(eq(int, io_uring_queue_init(4, &plain, 0), 0));
    struct ring_msg m2 = { .fn = peer_got, .arg = &p };
    cr_assert(eq(int, ring_msg_send_from(&plain, p.core, &m2), 0));
    pthread_join(thread, NULL);
    cr_assert(eq(int, p.received, 2));
    io_uring_queue_exit(&plain);
    ring_core_destroy(self);
}

struct back {
    struct ring_core *core;
    int count;
};

static void never_delivered(struct ring_core *core, void *arg)
{
    (void)core;
    (void)arg;
    cr_assert(false, "a message the kernel refused ran on its target");
}

static void came_back(struct ring_core *core, void *arg)
{
    struct back *b = arg;
    b->core = core;
    b->count++;
}

/*
 * A post the kernel cannot deliver fails after ring_core_post returned: its failure used to be
 * a debug line, and the message (a connection handed to another core) was lost with whatever
 * it carried; the server's drain then waited for that connection for good.
 */
Test(ring_core, a_post_the_kernel_cannot_deliver_comes_back_to_its_sender)
{
    struct ring_core *other = echo_core_create(1, 16, 4096);
    struct ring_core *self = echo_core_create(0, 16, 4096); /* this thread's core */
    int pipe_fds[2];
    cr_assert(eq(int, pipe(pipe_fds), 0));
    int ring_fd = other->ring_fd;
    other->ring_fd = pipe_fds[0]; /* no io_uring: MSG_RING fails with -EBADFD */
    struct back b = { 0 };
    struct ring_msg m = { .fn = never_delivered, .failed = came_back, .arg = &b };
    cr_assert(eq(int, ring_core_post(self, other, &m), 0));
    for (int i = 0; i < 100 && b.count == 0; i++)
        cr_assert(ge(int, ring_core_tick(self, 10), 0));
    other->ring_fd = ring_fd;
    cr_assert(eq(int, b.count, 1));
    cr_assert(eq(ptr, b.core, self), "the failure runs on the sending core");
    cr_assert(eq(u64, in_flight(self), 0));
    (void)close(pipe_fds[0]);
    (void)close(pipe_fds[1]);
    ring_core_destroy(self);
    ring_core_destroy(other);
}

static int inject_err;

static int failing_setup(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    (void)entries;
    (void)ring;
    (void)p;
    return inject_err;
}

static void expect_setup_failure(int err, const char *needle)
{
    inject_err = err;
    ring_core_set_setup_hook(failing_setup);
    struct ring_core_options o;
    ring_core_options_default(&o);
    struct ring_core *core = NULL;
    char why[512] = "";
    int rc = ring_core_create(&o, 0, &core, why, sizeof(why));
    ring_core_set_setup_hook(NULL);
    cr_assert(eq(int, rc, err));
    cr_assert(eq(ptr, core, NULL));
    cr_assert(ne(ptr, strstr(why, needle), NULL), "'%s' lacks '%s'", why, needle);
    cr_assert(ne(ptr, strstr(why, "fix:"), NULL), "'%s' names no fix", why);
    cr_assert(eq(ptr, strchr(why, '\n'), NULL), "one line only");
}

Test(ring_core, setup_failures_name_cause_and_fix)
{
    expect_setup_failure(-EPERM, "seccomp");
    expect_setup_failure(-ENOSYS, "Linux 6.1");
    expect_setup_failure(-EINVAL, "Linux 6.1");
    expect_setup_failure(-ENOMEM, "RLIMIT_MEMLOCK");
    expect_setup_failure(-EMFILE, "ulimit -n");
}

struct timed_owner {
    struct ring_owner owner;
    struct ring_timer timer;
    bool fired;
    bool idle;
};

static void owner_timer_fired(struct ring_timer *t)
{
    ((struct timed_owner *)t->ctx)->fired = true;
}

static void timed_owner_idle(struct ring_core *core, void *ctx)
{
    (void)core;
    struct timed_owner *t = ctx;
    ring_owner_deinit(&t->owner);
    t->idle = true;
}

Test(ring_core, closing_an_owner_cancels_its_timer_without_firing_it)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct timed_owner t = { 0 };
    ring_owner_init(&t.owner);
    ring_timer_init(&t.timer, owner_timer_fired, &t);
    cr_assert(eq(int, ring_timer_start(core, &t.timer, &t.owner, 10000), 0));
    cr_assert(eq(u32, t.owner.ops_in_flight, 1));
    ring_owner_close(core, &t.owner, timed_owner_idle, &t);
    run_until(core, &t.idle);
    cr_assert(not(t.fired));
    cr_assert(not(ring_timer_is_armed(&t.timer)));
    cr_assert(eq(u64, in_flight(core), 0));
    ring_core_destroy(core);
}

Test(ring_core, a_fired_timer_can_be_armed_again)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct tick k = { 0 };
    ring_timer_init(&k.timer, tick_fired, &k);
    for (int round = 1; round <= 3; round++) {
        k.done = false;
        cr_assert(eq(int, ring_timer_start(core, &k.timer, NULL, 5), 0));
        run_until(core, &k.done);
        cr_assert(eq(int, k.fired, round));
        for (int i = 0; i < 10 && ring_timer_is_armed(&k.timer); i++)
            cr_assert(ge(int, ring_core_tick(core, 1), 0));
    }
    cr_assert(eq(u64, in_flight(core), 0));
    ring_core_destroy(core);
}

struct stamp {
    struct ring_core *core;
    uint64_t batch_ns;
    uint64_t clock_ns;
    bool done;
};

static void stamp_cqe(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)res;
    (void)flags;
    struct stamp *s = op->ctx;
    s->batch_ns = ring_core_batch_ns(s->core);
    s->clock_ns = base_clock_now_ns();
    s->done = true;
    uint64_t until = s->clock_ns + 2 * BASE_NS_PER_MS; /* a slow handler */
    while (base_clock_now_ns() < until) {
    }
}

Test(ring_core, batch_clock_is_read_once_per_batch)
{
    struct ring_core *core = echo_core_create(0, 16, 4096);
    struct stamp s[2] = { { .core = core }, { .core = core } };
    for (int i = 0; i < 2; i++) {
        struct ring_op *op = ring_op_get(core, NULL, stamp_cqe, &s[i]);
        cr_assert(ne(ptr, op, NULL));
        struct io_uring_sqe *sqe = ring_op_sqe(op, 0);
        io_uring_prep_nop(sqe);
        ring_op_commit(op, sqe);
    }
    uint64_t before = base_clock_now_ns();
    while (!s[1].done)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(s[0].done);
    /* Both completions of the batch see when it began, not when each ran. */
    cr_assert(eq(u64, s[1].batch_ns, s[0].batch_ns));
    cr_assert(ge(u64, s[0].batch_ns, before));
    cr_assert(le(u64, s[0].batch_ns, s[0].clock_ns));
    cr_assert(ge(u64, s[1].clock_ns - s[1].batch_ns, 2 * BASE_NS_PER_MS));
    /* Outside a batch it is the clock itself. */
    uint64_t now = base_clock_now_ns();
    cr_assert(ge(u64, ring_core_batch_ns(core), now));
    cr_assert(eq(u64, in_flight(core), 0));
    ring_core_destroy(core);
}
