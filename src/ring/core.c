/*
 * The per-core loop: ring creation, the op table, CQE dispatch, deferred tasks, owners and
 * cross-core messages.
 *
 * Invariants:
 * - an op slot is FREE exactly when its index is on free_slots; ops_in_flight counts the rest;
 * - an op is released only by dispatch() after its final CQE (no IORING_CQE_F_MORE), or by
 *   ring_op_put() when it was never submitted;
 * - every SQE this core submits carries RING_UD_IGNORE, RING_UD_MSG|ptr, or the user_data of
 *   an ACTIVE/CANCELLING op; a CQE naming anything else is counted as stale and asserted on
 *   in debug builds.
 *
 * Sections: creation, ops, owners, tasks, messages, the loop.
 */
#include "ring/core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "ring/internal.h"

#define RING_LONG_TICK_NS BASE_NS_PER_MS /* a loop iteration this long counts in long_ticks */

static _Thread_local struct ring_core *current_core;
static ring_setup_fn *setup_hook;

void ring_core_set_setup_hook(ring_setup_fn *fn)
{
    setup_hook = fn;
}

void ring_core_options_default(struct ring_core_options *opts)
{
    opts->sq_entries = 1024;
    opts->cq_entries = 16384;
    opts->ops_max = 16384;
    opts->recv_buf_count = 1024;
    opts->recv_buf_size = 64 * 1024;
    opts->iowq_bounded_max = 4;
    opts->iowq_unbounded_max = 2;
}

void ring_counters_add_to(const struct ring_counters *c, struct ring_counters_snapshot *out)
{
#define ADD_ONE(name, kind, help) out->name += base_counter_get(&c->name);
    RING_COUNTERS(ADD_ONE)
#undef ADD_ONE
}

/* ---- creation ---- */

static int core_setup_ring(struct ring_core *core, const struct ring_core_options *opts, char *why,
                           size_t why_size)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN |
              IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
    p.cq_entries = opts->cq_entries;
    ring_setup_fn *setup = setup_hook ? setup_hook : io_uring_queue_init_params;
    int rc = setup(opts->sq_entries, &core->ring, &p);
    if (rc < 0) {
        ring_setup_explain(rc, "io_uring_setup", why, why_size);
        return rc;
    }
    unsigned need = IORING_FEAT_NODROP | IORING_FEAT_SUBMIT_STABLE;
    if ((p.features & need) != need) {
        io_uring_queue_exit(&core->ring);
        ring_setup_explain(-ENOSYS, "io_uring features", why, why_size);
        return -ENOSYS;
    }
    /* Optional speed-ups: failures here cost a little time per call, nothing else. */
    if (io_uring_register_ring_fd(&core->ring) < 0) {
        LOG_DEBUG("io_uring_register_ring_fd failed; entering with the plain ring fd");
    }
    unsigned workers[2] = { opts->iowq_bounded_max, opts->iowq_unbounded_max };
    if (io_uring_register_iowq_max_workers(&core->ring, workers) < 0) {
        LOG_DEBUG("io_uring_register_iowq_max_workers failed; io-wq keeps its defaults");
    }
    return 0;
}

static int core_probe_ops(struct ring_core *core, char *why, size_t why_size)
{
    static const int needed[] = {
        IORING_OP_ACCEPT,       IORING_OP_RECV,         IORING_OP_SEND,
        IORING_OP_SENDMSG,      IORING_OP_READ,         IORING_OP_WRITE,
        IORING_OP_FSYNC,        IORING_OP_TIMEOUT,      IORING_OP_TIMEOUT_REMOVE,
        IORING_OP_LINK_TIMEOUT, IORING_OP_ASYNC_CANCEL, IORING_OP_MSG_RING,
        IORING_OP_CLOSE,        IORING_OP_OPENAT,
    };
    struct io_uring_probe *probe = io_uring_get_probe_ring(&core->ring);
    if (!probe) {
        ring_setup_explain(-ENOMEM, "io_uring_get_probe_ring", why, why_size);
        return -ENOMEM;
    }
    int rc = 0;
    for (size_t i = 0; i < ARRAY_LEN(needed); i++) {
        if (!io_uring_opcode_supported(probe, needed[i])) {
            ring_setup_explain(-ENOSYS, "io_uring opcode probe", why, why_size);
            rc = -ENOSYS;
            break;
        }
    }
    io_uring_free_probe(probe);
    return rc;
}

static int core_alloc_ops(struct ring_core *core, uint32_t ops_max)
{
    core->ops = calloc(ops_max, sizeof(*core->ops));
    core->free_slots = calloc(ops_max, sizeof(*core->free_slots));
    if (!core->ops || !core->free_slots) return -ENOMEM;
    core->ops_max = ops_max;
    /* Hand out low slots first: the stack pops from the end. */
    for (uint32_t i = 0; i < ops_max; i++) {
        struct ring_op *op = &core->ops[i];
        op->core = core;
        op->slot = i;
        op->gen = 1;
        op->state = RING_OP_FREE;
        base_list_init(&op->owner_link);
        core->free_slots[i] = ops_max - 1 - i;
    }
    core->free_count = ops_max;
    return 0;
}

int ring_core_create(const struct ring_core_options *opts, uint32_t index, struct ring_core **out,
                     char *why, size_t why_size)
{
    ASSERT(opts->cq_entries > opts->sq_entries);
    ASSERT(opts->ops_max > 0 && opts->ops_max <= 0xffffffffU - 1);
    struct ring_core *core = calloc(1, sizeof(*core));
    if (!core) {
        ring_setup_explain(-ENOMEM, "allocating the core", why, why_size);
        return -ENOMEM;
    }
    core->index = index;
    base_list_init(&core->deferred);
    base_list_init(&core->buf_waiters);
    base_list_init(&core->plenty_waiters);
    base_list_init(&core->op_waiters);
    base_list_init(&core->conns);
    int rc = core_setup_ring(core, opts, why, why_size);
    if (rc < 0) goto err_free_core;
    core->ring_fd = core->ring.ring_fd;
    rc = core_probe_ops(core, why, why_size);
    if (rc < 0) goto err_exit_ring;
    rc = core_alloc_ops(core, opts->ops_max);
    if (rc < 0) {
        ring_setup_explain(rc, "allocating the op table", why, why_size);
        goto err_free_ops;
    }
    rc = ring_buf_pool_init(&core->bufs, &core->ring, opts->recv_buf_count, opts->recv_buf_size);
    if (rc < 0) {
        ring_setup_explain(rc, "registering the receive buffer ring", why, why_size);
        goto err_free_ops;
    }
    current_core = core;
    *out = core;
    return 0;

err_free_ops:
    free(core->ops);
    free(core->free_slots);
err_exit_ring:
    io_uring_queue_exit(&core->ring);
err_free_core:
    free(core);
    return rc;
}

void ring_core_destroy(struct ring_core *core)
{
    if (!core) return;
    ASSERT(core->free_count == core->ops_max);
    uint64_t in_flight = base_counter_get(&core->counters.ops_in_flight);
    ASSERT(in_flight == 0);
    ring_buf_pool_deinit(&core->bufs, &core->ring);
    io_uring_queue_exit(&core->ring);
    free(core->ops);
    free(core->free_slots);
    if (current_core == core) current_core = NULL;
    free(core);
}

struct ring_core *ring_core_current(void)
{
    return current_core;
}

uint32_t ring_core_index(const struct ring_core *core)
{
    return core->index;
}

struct ring_counters *ring_core_counters(struct ring_core *core)
{
    return &core->counters;
}

struct io_uring *ring_core_uring(struct ring_core *core)
{
    return &core->ring;
}

void ring_core_set_app(struct ring_core *core, void *app)
{
    core->app = app;
}

void *ring_core_app(const struct ring_core *core)
{
    return core->app;
}

void ring_core_stop(struct ring_core *core)
{
    core->stopped = true;
}

bool ring_core_is_stopped(const struct ring_core *core)
{
    return core->stopped;
}

/* ---- ops ---- */

struct ring_op *ring_op_get(struct ring_core *core, struct ring_owner *owner, ring_op_fn *fn,
                            void *ctx)
{
    ASSERT(fn);
    if (core->free_count == 0) return NULL;
    uint32_t slot = core->free_slots[--core->free_count];
    struct ring_op *op = &core->ops[slot];
    ASSERT(op->state == RING_OP_FREE);
    bool linked = base_list_is_linked(&op->owner_link);
    ASSERT(!linked);
    op->state = RING_OP_ACTIVE;
    op->fn = fn;
    op->ctx = ctx;
    op->owner = owner;
    op->timed = false;
    op->opcode = 0;
    op->arg = 0;
    if (owner) {
        ASSERT(!owner->closing);
        base_list_add_tail(&owner->ops, &op->owner_link);
        owner->ops_in_flight++;
    }
    base_counter_inc(&core->counters.ops_in_flight);
    return op;
}

/* A task taken off the op waiters (its slot came, or it was cancelled) waits no more. */
static void task_unwait(struct ring_task *task)
{
    if (!task->waiting) return;
    base_counter_dec(task->waiting);
    task->waiting = NULL;
}

static void op_release(struct ring_op *op)
{
    struct ring_core *core = op->core;
    ASSERT(op->state != RING_OP_FREE);
    struct ring_owner *owner = op->owner;
    if (owner) {
        ASSERT(owner->ops_in_flight > 0);
        base_list_del(&op->owner_link);
        owner->ops_in_flight--;
        if (owner->closing && owner->ops_in_flight == 0) ring_task_defer(core, &owner->idle);
    }
    op->state = RING_OP_FREE;
    op->fn = NULL;
    op->ctx = NULL;
    op->owner = NULL;
    op->gen = (op->gen + 1) & RING_GEN_MASK;
    if (op->gen == 0) op->gen = 1;
    ASSERT(core->free_count < core->ops_max);
    core->free_slots[core->free_count++] = op->slot;
    base_counter_dec(&core->counters.ops_in_flight);
    /* One waiter per slot given back (ring_op_wait_free): it runs after this batch, so an op
     * taken meanwhile may leave it the table full again, and then it waits anew. */
    struct base_list *node = base_list_pop_head(&core->op_waiters);
    if (node) {
        struct ring_task *task = BASE_CONTAINER_OF(node, struct ring_task, link);
        task_unwait(task);
        ring_task_defer(core, task);
    }
}

void ring_op_put(struct ring_op *op)
{
    op_release(op);
}

/* Makes room for <count> SQEs by submitting what is queued. */
static void core_reserve_sqes(struct ring_core *core, unsigned count)
{
    /* Bounded: each submit empties the SQ unless the kernel refuses, and a refusal is fatal. */
    for (int tries = 0; io_uring_sq_space_left(&core->ring) < count; tries++) {
        int rc = io_uring_submit(&core->ring);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            LOG_ERROR("io_uring_submit while making room: %s", base_err_str(rc));
            PANIC("io_uring_submit failed while making room in the SQ");
        }
        if (rc == -EBUSY || rc == -EAGAIN) io_uring_get_events(&core->ring);
        ASSERT(tries < 1000);
    }
}

struct io_uring_sqe *ring_op_sqe(struct ring_op *op, uint32_t timeout_ms)
{
    ASSERT(op->state == RING_OP_ACTIVE);
    struct ring_core *core = op->core;
    core_reserve_sqes(core, timeout_ms > 0 ? 2 : 1);
    op->timed = timeout_ms > 0;
    if (op->timed) {
        op->ts.tv_sec = (long long)(timeout_ms / 1000);
        op->ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&core->ring);
    ASSERT(sqe);
    return sqe;
}

void ring_op_commit(struct ring_op *op, struct io_uring_sqe *sqe)
{
    ASSERT(op->state == RING_OP_ACTIVE);
    op->opcode = sqe->opcode;
    io_uring_sqe_set_data64(sqe, ring_op_user_data(op));
    if (!op->timed) return;
    sqe->flags |= IOSQE_IO_LINK;
    struct io_uring_sqe *t = io_uring_get_sqe(&op->core->ring);
    ASSERT(t); /* reserved by ring_op_sqe */
    io_uring_prep_link_timeout(t, &op->ts, 0);
    t->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(t, RING_UD_IGNORE);
}

struct io_uring_sqe *ring_core_sqe_ignored(struct ring_core *core)
{
    core_reserve_sqes(core, 1);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&core->ring);
    ASSERT(sqe);
    return sqe;
}

void ring_op_cancel(struct ring_op *op)
{
    if (op->state != RING_OP_ACTIVE) return;
    struct io_uring_sqe *sqe = ring_core_sqe_ignored(op->core);
    io_uring_prep_cancel64(sqe, ring_op_user_data(op), 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, RING_UD_IGNORE);
    op->state = RING_OP_CANCELLING;
    base_counter_inc(&op->core->counters.cancels);
}

bool ring_op_timed_out(const struct ring_op *op, int32_t res)
{
    return op->timed && op->state == RING_OP_ACTIVE && (res == -ECANCELED || res == -EINTR);
}

/* ---- owners ---- */

static void owner_idle_task(struct ring_task *task)
{
    struct ring_owner *owner = BASE_CONTAINER_OF(task, struct ring_owner, idle);
    ASSERT(owner->closing);
    ASSERT(owner->ops_in_flight == 0);
    struct ring_core *core = ring_core_current();
    owner->on_idle(core, owner->ctx);
}

void ring_owner_init(struct ring_owner *owner)
{
    base_list_init(&owner->ops);
    owner->ops_in_flight = 0;
    owner->closing = false;
    owner->on_idle = NULL;
    owner->ctx = NULL;
    ring_task_init(&owner->idle, owner_idle_task);
}

void ring_owner_cancel(struct ring_core *core, struct ring_owner *owner)
{
    (void)core;
    BASE_LIST_FOR_EACH(it, &owner->ops)
    {
        struct ring_op *op = BASE_CONTAINER_OF(it, struct ring_op, owner_link);
        ring_op_cancel(op);
    }
}

void ring_owner_close(struct ring_core *core, struct ring_owner *owner, ring_owner_fn *on_idle,
                      void *ctx)
{
    ASSERT(on_idle);
    if (owner->closing) return;
    owner->closing = true;
    owner->on_idle = on_idle;
    owner->ctx = ctx;
    ring_owner_cancel(core, owner);
    if (owner->ops_in_flight == 0) ring_task_defer(core, &owner->idle);
}

void ring_owner_deinit(struct ring_owner *owner)
{
    ASSERT(owner->ops_in_flight == 0);
    bool empty = base_list_is_empty(&owner->ops);
    ASSERT(empty);
    bool idle_queued = base_list_is_linked(&owner->idle.link);
    ASSERT(!idle_queued);
}

/* ---- tasks ---- */

void ring_task_init(struct ring_task *task, ring_task_fn *fn)
{
    base_list_init(&task->link);
    task->fn = fn;
    task->waiting = NULL;
}

void ring_task_defer(struct ring_core *core, struct ring_task *task)
{
    if (base_list_is_linked(&task->link)) return;
    base_list_add_tail(&core->deferred, &task->link);
}

void ring_task_cancel(struct ring_task *task)
{
    base_list_del(&task->link);
    task_unwait(task);
}

void ring_op_wait_free(struct ring_core *core, struct ring_task *task)
{
    if (base_list_is_linked(&task->link)) return; /* waiting, or due to run already */
    if (core->free_count > 0) {
        ring_task_defer(core, task);
        return;
    }
    base_list_add_tail(&core->op_waiters, &task->link);
    /* Counted while it waits: a timer that cannot be armed is a core that stalls quietly
     * (docs/operations.md, ringcas_op_waiters). */
    task->waiting = &core->counters.op_waiters;
    base_counter_inc(&core->counters.op_waiters);
    base_counter_inc(&core->counters.op_waits);
}

void ring_core_wait_for_buf(struct ring_core *core, struct ring_task *task)
{
    if (base_list_is_linked(&task->link)) return;
    base_list_add_tail(&core->buf_waiters, &task->link);
}

/* Runs up to RING_TASK_BATCH_MAX deferred tasks; returns how many ran. */
static int core_run_tasks(struct ring_core *core)
{
    int ran = 0;
    while (ran < RING_TASK_BATCH_MAX) {
        struct base_list *node = base_list_pop_head(&core->deferred);
        if (!node) break;
        struct ring_task *task = BASE_CONTAINER_OF(node, struct ring_task, link);
        task->fn(task);
        ran++;
    }
    return ran;
}

/* ---- messages ---- */

static void prep_msg(struct io_uring_sqe *sqe, struct ring_core *to, struct ring_msg *msg)
{
    uint64_t data = (uint64_t)(uintptr_t)msg;
    ASSERT((data & (RING_UD_MSG | RING_UD_MSG_BACK)) == 0);
    int fd = to->ring_fd;
    /* Everything this thread did before, reads of <to> included, precedes the handler. */
    RING_TSAN_RELEASE(msg);
    RING_TSAN_RELEASE(to);
    io_uring_prep_msg_ring(sqe, fd, 0, data | RING_UD_MSG, 0);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, RING_UD_IGNORE);
}

int ring_core_post(struct ring_core *from, struct ring_core *to, struct ring_msg *msg)
{
    ASSERT(msg->fn);
    /* Read before prep_msg hands <msg> over (its release for TSan): the target may free it. */
    bool back = msg->failed != NULL;
    struct io_uring_sqe *sqe = ring_core_sqe_ignored(from);
    prep_msg(sqe, to, msg);
    /* Only a failure completes on this side (SKIP_SUCCESS): it brings <msg> back. */
    if (back) {
        io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)msg | RING_UD_MSG | RING_UD_MSG_BACK);
    }
    return 0;
}

int ring_msg_send_from(struct io_uring *from, struct ring_core *to, struct ring_msg *msg)
{
    ASSERT(msg->fn);
    struct io_uring_sqe *sqe = io_uring_get_sqe(from);
    if (!sqe) {
        int rc = io_uring_submit(from);
        if (rc < 0) return rc;
        sqe = io_uring_get_sqe(from);
        if (!sqe) return -EAGAIN;
    }
    prep_msg(sqe, to, msg);
    /* Without SKIP_SUCCESS we could not tell the send failed; with it, failures still post. */
    int rc = io_uring_submit_and_wait(from, 0);
    if (rc < 0) return rc;
    struct io_uring_cqe *cqe;
    if (io_uring_peek_cqe(from, &cqe) == 0) {
        int res = cqe->res;
        io_uring_cqe_seen(from, cqe);
        if (res < 0) return res;
    }
    return 0;
}

/* ---- the loop ---- */

static void dispatch(struct ring_core *core, const struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    if (ud == RING_UD_IGNORE) {
        /* Failed cancels (-ENOENT, -EALREADY) and MSG_RING sends that could not post. */
        if (cqe->res < 0 && cqe->res != -ENOENT && cqe->res != -EALREADY) {
            LOG_DEBUG("untracked SQE failed: %s", base_err_str(cqe->res));
        }
        return;
    }
    if (ud & RING_UD_MSG) {
        struct ring_msg *msg =
            (struct ring_msg *)(uintptr_t)(ud & ~(RING_UD_MSG | RING_UD_MSG_BACK));
        if (ud & RING_UD_MSG_BACK) {
            /* Our own post, which the kernel could not deliver: the message is ours again. */
            LOG_WARN("a message to another core was not delivered: %s", base_err_str(cqe->res));
            msg->failed(core, msg->arg);
            return;
        }
        RING_TSAN_ACQUIRE(msg);
        RING_TSAN_ACQUIRE(core);
        msg->fn(core, msg->arg);
        return;
    }
    uint32_t slot = (uint32_t)ud;
    uint32_t gen = (uint32_t)(ud >> 32);
    struct ring_op *op = slot < core->ops_max ? &core->ops[slot] : NULL;
    if (!op || op->gen != gen || op->state == RING_OP_FREE) {
        base_counter_inc(&core->counters.stale_cqes);
        LOG_ERROR("stale CQE user_data=%#llx res=%d", (unsigned long long)ud, cqe->res);
        DEBUG_PANIC("stale CQE");
        return;
    }
    uint32_t flags = cqe->flags;
    op->fn(op, cqe->res, flags);
    if (!(flags & IORING_CQE_F_MORE)) op_release(op);
}

uint64_t ring_core_batch_ns(const struct ring_core *core)
{
    return core->batch_ns ? core->batch_ns : base_clock_now_ns();
}

int ring_core_tick(struct ring_core *core, uint32_t wait_ms)
{
    ASSERT(current_core == core);
    uint64_t busy = 0; /* the work between two waits: what the core's other connections wait for */
    if (!base_list_is_empty(&core->deferred)) {
        uint64_t t = base_clock_now_ns();
        core->batch_ns = t;
        core_run_tasks(core);
        busy = base_clock_now_ns() - t;
        core->batch_ns = 0;
    }
    int rc;
    struct io_uring_cqe *cqe = NULL;
    if (wait_ms == 0 || !base_list_is_empty(&core->deferred)) {
        rc = io_uring_submit_and_get_events(&core->ring);
    } else if (wait_ms == RING_WAIT_FOREVER) {
        /* No timer for the wait itself: every deadline is an io_uring timeout already. */
        rc = io_uring_submit_and_wait(&core->ring, 1);
    } else {
        struct __kernel_timespec ts = {
            .tv_sec = wait_ms / 1000,
            .tv_nsec = (long long)(wait_ms % 1000) * 1000000,
        };
        rc = io_uring_submit_and_wait_timeout(&core->ring, &cqe, 1, &ts, NULL);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) return rc;
    uint64_t start = base_clock_now_ns();
    core->batch_ns = start;
    base_counter_inc(&core->counters.loops);
    int handled = 0;
    /* Bounded: at most RING_CQE_BATCH_MAX CQEs before deferred work runs again. */
    while (handled < RING_CQE_BATCH_MAX) {
        if (io_uring_peek_cqe(&core->ring, &cqe) != 0) break;
        struct io_uring_cqe copy = *cqe;
        io_uring_cqe_seen(&core->ring, cqe);
        dispatch(core, &copy);
        handled++;
    }
    base_counter_add(&core->counters.cqes, (uint64_t)handled);
    core_run_tasks(core);
    busy += base_clock_now_ns() - start;
    core->batch_ns = 0;
    base_counter_add(&core->counters.busy_ns, busy);
    if (busy >= RING_LONG_TICK_NS) base_counter_inc(&core->counters.long_ticks);
    return handled;
}

int ring_core_run(struct ring_core *core)
{
    /* The event loop: unbounded by design; each tick is bounded (RING_CQE_BATCH_MAX). */
    while (!core->stopped) {
        int rc = ring_core_tick(core, RING_WAIT_FOREVER);
        if (rc < 0) {
            LOG_ERROR("io_uring_enter failed on core %u: %s", core->index, base_err_str(rc));
            return rc;
        }
    }
    return 0;
}
