/*
 * One worker thread of ringcas bench: its ring, its connections, its slots, the open-loop
 * pacing and the recording of results.
 *
 * Life of a thread: create the ring and open the connections; seed its share of the blobs
 * (seed jobs j with j % threads == index); barrier; barrier (the main thread sets the times
 * in between); run: closed loop starts every slot at once and each restarts itself, open
 * loop starts a slot per due arrival; at the end, cancel what is in flight, close, drain.
 *
 * Invariants: a slot is busy exactly while its unit is in progress; busy_count counts them;
 * in open loop an idle slot is on the idle stack exactly while the run phase lasts and it
 * is not busy; a result is recorded only when its request finished inside the measured
 * window [warm_end_ns, end_ns) (open loop: when its unit was due inside it).
 *
 * Sections: statistics, connections, pacing, units, phases, the thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/err.h"
#include "client/bench_internal.h"
#include "proto/status.h"

/* ---- statistics ---- */

void bench_stats_reset(struct bench_stats *s)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < BENCH_OP_COUNT; i++) {
        client_hist_reset(&s->ops[i].lat);
    }
    client_hist_reset(&s->small.lat);
}

/* Adds <count> errors of <kind>/<code>. */
static void stats_error_add(struct bench_stats *s, uint8_t kind, int32_t code, uint64_t count)
{
    for (uint32_t i = 0; i < s->err_count; i++) {
        if (s->errs[i].kind == kind && s->errs[i].code == code) {
            s->errs[i].count += count;
            return;
        }
    }
    if (s->err_count == BENCH_ERR_KEYS) {
        s->err_other += count;
        return;
    }
    s->errs[s->err_count++] = (struct bench_err){ .kind = kind, .code = code, .count = count };
}

void bench_stats_error(struct bench_stats *s, uint8_t kind, int32_t code, const char *what)
{
    if (s->first_error[0] == '\0' && what) {
        (void)snprintf(s->first_error, sizeof(s->first_error), "%s", what);
    }
    stats_error_add(s, kind, code, 1);
}

static void op_stats_merge(struct bench_op_stats *a, const struct bench_op_stats *b)
{
    client_hist_merge(&a->lat, &b->lat);
    a->ok += b->ok;
    a->errors += b->errors;
    a->bytes += b->bytes;
    a->expected += b->expected;
}

void bench_stats_merge(struct bench_stats *into, const struct bench_stats *from)
{
    for (size_t i = 0; i < BENCH_OP_COUNT; i++) {
        op_stats_merge(&into->ops[i], &from->ops[i]);
    }
    op_stats_merge(&into->small, &from->small);
    for (uint32_t i = 0; i < from->err_count; i++) {
        stats_error_add(into, from->errs[i].kind, from->errs[i].code, from->errs[i].count);
    }
    if (into->first_error[0] == '\0') {
        (void)snprintf(into->first_error, sizeof(into->first_error), "%s", from->first_error);
    }
    into->err_other += from->err_other;
    into->arrivals += from->arrivals;
    into->arrivals_late += from->arrivals_late;
    into->hits += from->hits;
    into->misses += from->misses;
    into->misses_evicted += from->misses_evicted;
}

/*
 * Closed loop counts what ends inside the window. Open loop counts every arrival due inside
 * it, however late its answer: counting by the end time left out the requests a server sat
 * on at the end of the run, which were cancelled unanswered, so a stall in the last second
 * reported clean percentiles, no error and exit 0 (no coordinated omission at the window's
 * edge either). Those units are awaited after the window (run_phase). The window includes
 * its start and not its end, so an open-loop window of D s holds rate x D arrivals exactly.
 */
bool bench_run_counts(const struct bench_slot *s, uint64_t now)
{
    const struct bench_thread *t = s->t;
    const struct bench_plan *p = t->plan;
    uint64_t at = p->o.rate ? s->unit_ns : now;
    /* [warm_end, end): a window that held both its ends held rate x duration + 1 arrivals
     * when they fell on the schedule (--rate 1 for 1 s: 2 requests, 2.0 req/s). */
    return t->running && at >= p->warm_end_ns && at < p->end_ns;
}

/*
 * Seeding runs again an upload the server refused for now, as Bazel retries (--remote_retries,
 * 100 ms doubling): "store full: ... retry later" while eviction catches up with a store
 * smaller than the seeded set, or a busy core. A refusal that said to retry failed the whole
 * run before (exit 1, no report): the bench's eviction test, at load 9, against a right server.
 */
#define SEED_TRIES_MAX 6  /* runs of one seed job after its first */
#define SEED_RETRY_MS  50 /* the first pause; doubled for each next one (3.15 s in all) */

static bool seed_refused_for_now(uint8_t kind, int32_t code)
{
    if (kind == BENCH_ERR_GRPC) {
        return code == PROTO_STATUS_RESOURCE_EXHAUSTED || code == PROTO_STATUS_UNAVAILABLE;
    }
    return kind == BENCH_ERR_HTTP && (code == 503 || code == 507);
}

void bench_run_request_done(struct bench_slot *s, uint8_t kind, int32_t code, bool expected,
                            const char *what)
{
    struct bench_thread *t = s->t;
    s->in_call = false;
    bool ok = kind == 0 && code == 0;
    if (s->step == BENCH_STEP_SEED) {
        if (ok) return;
        if (seed_refused_for_now(kind, code) && s->seed_tries < SEED_TRIES_MAX) {
            s->seed_retry = true; /* bench_run_unit_done pauses, then runs it again */
            return;
        }
        t->seed_errors++;
        bench_stats_error(&t->stats, kind, code, what);
        return;
    }
    uint64_t now = base_clock_now_ns();
    s->done_ns = now;
    if (!bench_run_counts(s, now)) return;
    /* The request's kind, and the small-blob class when it moved only small blobs: that
     * class's row had only latencies, and printed 0 MB/s and 0 errors whatever it moved. */
    struct bench_op_stats *kinds[2] = { &t->stats.ops[s->op],
                                        s->op_small ? &t->stats.small : NULL };
    for (size_t i = 0; i < 2 && kinds[i]; i++) {
        struct bench_op_stats *o = kinds[i];
        if (ok) {
            client_hist_record(&o->lat, now - s->req_ns);
            o->ok++;
            o->bytes += s->op_bytes;
        } else if (expected) {
            o->expected++;
        } else {
            o->errors++;
        }
    }
    if (!ok && !expected) bench_stats_error(&t->stats, kind, code, what);
}

void bench_run_fatal(struct bench_thread *t, int err, const char *what)
{
    if (t->fatal == 0) {
        t->fatal = err < 0 ? err : -EIO;
        (void)snprintf(t->fatal_text, sizeof(t->fatal_text), "%s: %s", what, base_err_str(err));
    }
    t->stopping = true;
}

/* ---- connections ---- */

static void conn_reopen_fire(struct ring_timer *timer);
static void conn_closed(struct client_conn *conn, int reason);

static int conn_open(struct bench_thread *t, uint32_t i)
{
    struct client_conn_options co;
    client_conn_options_default(&co);
    co.connect_timeout_ms = (uint32_t)t->plan->o.timeout_ms;
    co.io_timeout_ms = (uint32_t)t->plan->o.timeout_ms;
    t->conns[i].user = t;
    return client_conn_open(&t->conns[i], &t->cl, &t->plan->addr, &co, conn_closed);
}

/* Resumes the slots parked while no connection was usable. */
static void unpark_all(struct bench_thread *t)
{
    for (uint32_t i = 0; i < t->slot_count && !t->stopping; i++) {
        struct bench_slot *s = &t->slots[i];
        if (!s->parked) continue;
        s->parked = false;
        bench_step_resume(s);
    }
}

static void conn_closed(struct client_conn *conn, int reason)
{
    struct bench_thread *t = conn->user;
    (void)reason;
    if (t->stopping) return;
    uint32_t i = (uint32_t)(conn - t->conns);
    /* Not at once: a server that refuses connections would make this spin. */
    if (ring_timer_start(t->core, &t->conn_reopen[i], NULL, 10) < 0) {
        bench_run_fatal(t, -EAGAIN, "reopening a connection");
    }
}

static void conn_reopen_fire(struct ring_timer *timer)
{
    struct bench_thread *t = timer->ctx;
    if (t->stopping) return;
    uint32_t i = (uint32_t)(timer - t->conn_reopen);
    int rc = conn_open(t, i);
    if (rc < 0) {
        bench_run_fatal(t, rc, "reopening a connection");
        return;
    }
    unpark_all(t);
}

struct client_conn *bench_run_conn(struct bench_slot *s)
{
    struct bench_thread *t = s->t;
    /* Bounded by the connection count: try the slot's own, then the others. */
    for (uint32_t k = 0; k < t->conn_count; k++) {
        struct client_conn *c = &t->conns[(s->index + k) % t->conn_count];
        if (client_conn_is_usable(c)) return c;
        /* GOAWAY: start afresh, but only once the calls the server took have ended; closing
         * now would cancel what a draining server is still finishing. With calls left, the
         * session ends by itself after the last one, and conn_closed reopens it. */
        if (c->state == CLIENT_CONN_OPEN && client_conn_calls(c) == 0) client_conn_close(c);
    }
    s->parked = true;
    return NULL;
}

/* ---- pacing (open loop) ---- */

/*
 * The arrivals of all threads form one schedule: arrival j is due j / rate seconds after the
 * start, and thread <index> takes j = k * threads + index. Each thread used to pace itself
 * at rate / threads a second, rounded down: --rate 7 --threads 4 sent 4 a second, and the
 * report said 7. Split in whole seconds and the rest so that nothing overflows
 * (rate <= 1e9, checked in bench.c).
 */
static uint64_t schedule_ns(uint64_t rate, uint64_t j)
{
    return j / rate * BASE_NS_PER_S + j % rate * BASE_NS_PER_S / rate;
}

/* How many arrivals of the schedule are due at or before <offset_ns> after the start. */
static uint64_t schedule_due(uint64_t rate, uint64_t offset_ns)
{
    uint64_t secs = offset_ns / BASE_NS_PER_S;
    uint64_t rest = offset_ns % BASE_NS_PER_S;
    /* Arrival secs * rate + m is due when floor(m * 1e9 / rate) <= rest, that is when
     * m * 1e9 < (rest + 1) * rate: a ceiling division, at most one second's worth. */
    uint64_t m = ((rest + 1) * rate + BASE_NS_PER_S - 1) / BASE_NS_PER_S;
    return secs * rate + (m < rate ? m : rate);
}

/* Of the first <all> arrivals of the schedule, how many are <t>'s (j % threads == index). */
static uint64_t thread_share(const struct bench_thread *t, uint64_t all)
{
    return all > t->index ? (all - t->index - 1) / t->plan->thread_count + 1 : 0;
}

static uint64_t arrival_ns(const struct bench_thread *t, uint64_t k)
{
    uint64_t j = k * t->plan->thread_count + t->index;
    return t->plan->start_ns + schedule_ns(t->plan->o.rate, j);
}

static void pace(struct bench_thread *t);

static void pace_fired(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)res;
    (void)flags;
    struct bench_thread *t = op->ctx;
    t->pace_op = NULL;
    pace(t);
}

static void pace_arm(struct bench_thread *t, uint64_t at_ns)
{
    struct ring_op *op = ring_op_get(t->core, NULL, pace_fired, t);
    if (!op) {
        bench_run_fatal(t, -EAGAIN, "arming the pacing timer");
        return;
    }
    t->pace_ts.tv_sec = (long long)(at_ns / BASE_NS_PER_S);
    t->pace_ts.tv_nsec = (long long)(at_ns % BASE_NS_PER_S);
    struct io_uring_sqe *sqe = ring_op_sqe(op, 0);
    io_uring_prep_timeout(sqe, &t->pace_ts, 0, IORING_TIMEOUT_ABS);
    ring_op_commit(op, sqe);
    t->pace_op = op;
}

/* Starts every due arrival an idle slot can take; arms the timer for the next one. */
static void pace(struct bench_thread *t)
{
    if (!t->running || t->stopping || t->draining) return;
    uint64_t now = base_clock_now_ns();
    /* Bounded by the idle slots. */
    while (t->idle_count > 0) {
        uint64_t due = arrival_ns(t, t->arrival_next);
        if (due > now) break;
        struct bench_slot *s = &t->slots[t->idle[--t->idle_count]];
        t->arrival_next++;
        s->unit_ns = due;
        s->busy = true;
        t->busy_count++;
        bench_step_begin(s);
        if (t->stopping) return;
    }
    if (t->idle_count > 0 && !t->pace_op) pace_arm(t, arrival_ns(t, t->arrival_next));
}

/* ---- units ---- */

/* Takes the next seed job for <s>, if any is left. */
static bool seed_next(struct bench_slot *s)
{
    struct bench_thread *t = s->t;
    uint64_t job = t->seed_next;
    if (job >= t->seed_total) return false;
    t->seed_next += t->plan->thread_count;
    s->seed_job = job;
    s->step = BENCH_STEP_SEED;
    return true;
}

static void unit_start(struct bench_slot *s)
{
    struct bench_thread *t = s->t;
    s->busy = true;
    t->busy_count++;
    s->unit_ns = base_clock_now_ns();
    bench_step_begin(s);
}

/* Runs the seed job of <s> again after its pause (seed_retry_arm). */
static void seed_retry_fired(struct ring_timer *timer)
{
    struct bench_slot *s = timer->ctx;
    struct bench_thread *t = s->t;
    ASSERT(t->seed_waiting > 0);
    t->seed_waiting--;
    if (!t->stopping) unit_start(s);
}

static void seed_retry_arm(struct bench_slot *s)
{
    struct bench_thread *t = s->t;
    s->seed_retry = false;
    uint64_t ms = (uint64_t)SEED_RETRY_MS << s->seed_tries;
    s->seed_tries++;
    if (ring_timer_start(t->core, &s->seed_timer, NULL, ms) < 0) {
        bench_run_fatal(t, -EAGAIN, "pausing before a refused seed upload");
        return;
    }
    t->seed_waiting++;
}

void bench_run_unit_done(struct bench_slot *s)
{
    struct bench_thread *t = s->t;
    ASSERT(s->busy);
    ASSERT(t->busy_count > 0);
    s->busy = false;
    t->busy_count--;
    if (t->stopping) return;
    if (t->seeding) {
        if (s->seed_retry) {
            seed_retry_arm(s);
            return;
        }
        s->seed_tries = 0;
        if (seed_next(s)) unit_start(s);
        return;
    }
    if (!t->running) return;
    /* The unit counts when its last request did: one clock reading decides both, so a
     * request that ends at the window's edge cannot count in one and not the other. */
    uint64_t end = s->done_ns ? s->done_ns : base_clock_now_ns();
    s->done_ns = 0;
    if (bench_run_counts(s, end)) t->stats.arrivals++;
    if (t->plan->o.rate == 0) {
        unit_start(s);
        return;
    }
    t->idle[t->idle_count++] = s->index;
    if (t->draining && t->busy_count == 0) t->stopping = true; /* the last one is in */
    pace(t);
}

/* ---- phases ---- */

/* Ticks the ring until <t> has no busy slot and no seed job pausing (or stops). */
static int drive_until_idle(struct bench_thread *t)
{
    /* Bounded by the requests' timeouts (every op carries one) and, while seeding, by
     * SEED_TRIES_MAX pauses per job. */
    while ((t->busy_count > 0 || t->seed_waiting > 0) && !t->stopping) {
        int rc = ring_core_tick(t->core, RING_WAIT_FOREVER);
        if (rc < 0) return rc;
    }
    return 0;
}

static int seed_phase(struct bench_thread *t)
{
    t->seeding = true;
    t->seed_total = bench_step_seed_jobs(t->plan);
    t->seed_next = t->index;
    for (uint32_t i = 0; i < t->slot_count && !t->stopping; i++) {
        if (!seed_next(&t->slots[i])) break;
        unit_start(&t->slots[i]);
    }
    int rc = drive_until_idle(t);
    t->seeding = false;
    return rc;
}

/*
 * The window is over. Closed loop stops at once. Open loop starts no new arrival and waits
 * for the units under way, at most --timeout (the timer fires again then).
 */
static void end_fired(struct ring_timer *timer)
{
    struct bench_thread *t = timer->ctx;
    if (t->plan->o.rate == 0 || t->draining || t->busy_count == 0) {
        t->stopping = true;
        return;
    }
    t->draining = true;
    if (ring_timer_start(t->core, &t->end_timer, NULL, t->plan->o.timeout_ms) < 0) {
        t->stopping = true;
    }
}

/*
 * Open loop, --timeout after the window: the units due inside it that are still under way
 * (a server that does not answer; a slot parked while no connection could be made) are
 * errors, ETIMEDOUT: their latency is at least their age, which no percentile would show.
 */
static void count_unanswered(struct bench_thread *t)
{
    char what[BENCH_ERROR_TEXT_MAX];
    uint64_t now = base_clock_now_ns();
    for (uint32_t i = 0; i < t->slot_count; i++) {
        struct bench_slot *s = &t->slots[i];
        if (!s->busy || !bench_run_counts(s, now)) continue;
        (void)snprintf(what, sizeof(what),
                       "%s: ETIMEDOUT %d: unanswered %.1f s after its due time, "
                       "at the end of the run",
                       bench_op_names[s->op], ETIMEDOUT, (double)(now - s->unit_ns) / 1e9);
        t->stats.ops[s->op].errors++;
        if (s->op_small) t->stats.small.errors++;
        bench_stats_error(&t->stats, BENCH_ERR_LOCAL, ETIMEDOUT, what);
    }
}

static int run_phase(struct bench_thread *t)
{
    const struct bench_plan *p = t->plan;
    uint64_t now = base_clock_now_ns();
    if (p->start_ns > now) {
        const struct timespec ts = base_clock_timespec(p->start_ns - now);
        (void)nanosleep(&ts, NULL);
    }
    t->running = true;
    now = base_clock_now_ns();
    uint64_t ms = p->end_ns > now ? (p->end_ns - now) / BASE_NS_PER_MS + 1 : 1;
    ring_timer_init(&t->end_timer, end_fired, t);
    int rc = ring_timer_start(t->core, &t->end_timer, NULL, ms);
    if (rc < 0) return rc;
    if (p->o.rate == 0) {
        for (uint32_t i = 0; i < t->slot_count && !t->stopping; i++) {
            unit_start(&t->slots[i]);
        }
    } else {
        for (uint32_t i = 0; i < t->slot_count; i++) {
            t->idle[t->idle_count++] = t->slot_count - 1 - i;
        }
        pace(t);
    }
    /* Bounded by the end timer (open loop: fired twice at most, the drain's limit). */
    while (!t->stopping) {
        rc = ring_core_tick(t->core, RING_WAIT_FOREVER);
        if (rc < 0) return rc;
    }
    if (p->o.rate > 0) {
        if (t->fatal == 0) count_unanswered(t);
        /* This thread's arrivals due inside the window that never started. Not those of the
         * warm-up: they were counted as late too, so that an overloaded run reported more
         * late arrivals than the window holds. */
        uint64_t due = thread_share(t, schedule_due(p->o.rate, p->end_ns - p->start_ns - 1));
        uint64_t warm = p->warm_end_ns > p->start_ns
                            ? schedule_due(p->o.rate, p->warm_end_ns - p->start_ns - 1)
                            : 0;
        uint64_t started = t->arrival_next;
        if (started < thread_share(t, warm)) started = thread_share(t, warm);
        if (due > started) t->stats.arrivals_late = due - started;
    }
    return 0;
}

/* Cancels everything, closes every connection and ticks until no op is in flight. */
static int shut_down(struct bench_thread *t)
{
    t->stopping = true;
    t->running = false; /* what is cancelled now is no result */
    if (t->pace_op) ring_op_cancel(t->pace_op);
    if (ring_timer_is_armed(&t->end_timer)) ring_timer_stop(t->core, &t->end_timer);
    for (uint32_t i = 0; i < t->slot_count; i++) {
        struct bench_slot *s = &t->slots[i];
        if (s->in_call) bench_step_cancel(s);
        if (ring_timer_is_armed(&s->reopen)) ring_timer_stop(t->core, &s->reopen);
        if (ring_timer_is_armed(&s->seed_timer)) ring_timer_stop(t->core, &s->seed_timer);
        if (t->plan->http) client_h1_close(&s->h1);
    }
    for (uint32_t i = 0; i < t->conn_count; i++) {
        if (ring_timer_is_armed(&t->conn_reopen[i])) ring_timer_stop(t->core, &t->conn_reopen[i]);
        client_conn_close(&t->conns[i]);
    }
    struct ring_counters *rc = ring_core_counters(t->core);
    /* Bounded: every op was cancelled or carries a timeout. */
    while (!client_is_idle(&t->cl) || base_counter_get(&rc->ops_in_flight) > 0) {
        int err = ring_core_tick(t->core, RING_WAIT_FOREVER);
        if (err < 0) return err;
    }
    return 0;
}

/* ---- the thread ---- */

struct bench_thread *bench_run_create(struct bench_plan *plan, uint32_t index)
{
    struct bench_thread *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->plan = plan;
    t->index = index;
    t->rng = plan->o.seed * 0x9E3779B97F4A7C15ULL + index + 1;
    t->slot_count = (uint32_t)plan->o.concurrency;
    t->conn_count = plan->http ? 0 : (uint32_t)plan->o.conns;
    t->slots = calloc(t->slot_count, sizeof(*t->slots));
    t->idle = calloc(t->slot_count, sizeof(*t->idle));
    t->conns = calloc(t->conn_count ? t->conn_count : 1, sizeof(*t->conns));
    t->conn_reopen = calloc(t->conn_count ? t->conn_count : 1, sizeof(*t->conn_reopen));
    if (!t->slots || !t->idle || !t->conns || !t->conn_reopen) {
        bench_run_destroy(t);
        return NULL;
    }
    bench_stats_reset(&t->stats);
    return t;
}

void bench_run_destroy(struct bench_thread *t)
{
    if (!t) return;
    free(t->slots);
    free(t->idle);
    free(t->conns);
    free(t->conn_reopen);
    free(t);
}

/* Creates the ring, the client, the slots and the connections. */
static int set_up(struct bench_thread *t)
{
    const struct bench_plan *p = t->plan;
    struct ring_core_options ro;
    client_core_options(&ro);
    uint32_t conns = p->http ? t->slot_count : t->conn_count;
    ro.sq_entries = 1024;
    ro.cq_entries = 16384;
    ro.ops_max = 4 * t->slot_count + 4 * conns + 256;
    if (ro.ops_max < 4096) ro.ops_max = 4096;
    ro.recv_buf_count = 256;
    /* Bounded: doubles up to 4096. */
    while (ro.recv_buf_count < 4 * conns && ro.recv_buf_count < 4096) {
        ro.recv_buf_count *= 2;
    }
    char why[200];
    int rc = ring_core_create(&ro, t->index, &t->core, why, sizeof(why));
    if (rc < 0) {
        (void)snprintf(t->fatal_text, sizeof(t->fatal_text), "%s", why);
        t->fatal = rc;
        return rc;
    }
    client_init(&t->cl, t->core);
    for (uint32_t i = 0; i < t->slot_count; i++) {
        ring_timer_init(&t->slots[i].seed_timer, seed_retry_fired, &t->slots[i]);
        rc = bench_step_init(&t->slots[i], t, i);
        if (rc < 0) return rc;
    }
    for (uint32_t i = 0; i < t->conn_count; i++) {
        ring_timer_init(&t->conn_reopen[i], conn_reopen_fire, t);
        rc = conn_open(t, i);
        if (rc < 0) return rc;
    }
    return 0;
}

static void tear_down(struct bench_thread *t)
{
    if (!t->core) return;
    int rc = shut_down(t);
    if (rc < 0 && t->fatal == 0) bench_run_fatal(t, rc, "io_uring_enter");
    for (uint32_t i = 0; i < t->slot_count; i++) {
        bench_step_deinit(&t->slots[i]);
    }
    client_deinit(&t->cl);
    ring_core_destroy(t->core);
    t->core = NULL;
}

void *bench_run_thread(void *arg)
{
    struct bench_thread *t = arg;
    int rc = set_up(t);
    if (rc < 0 && t->fatal == 0) bench_run_fatal(t, rc, "setting up the thread");
    if (t->fatal == 0) {
        rc = seed_phase(t);
        if (rc < 0) bench_run_fatal(t, rc, "seeding");
    }
    (void)pthread_barrier_wait(&t->plan->barrier); /* seeded */
    (void)pthread_barrier_wait(&t->plan->barrier); /* the main thread set the times */
    if (t->fatal == 0 && !t->plan->abort) {
        rc = run_phase(t);
        if (rc < 0) bench_run_fatal(t, rc, "running");
    }
    tear_down(t);
    return NULL;
}
