/*
 * gRPC calls on HTTP/2 streams: dispatch by :path, request validation (PROTOCOL-HTTP2.md),
 * deframing, unary message assembly, streamed input with held bytes, deadlines, the status
 * and its trailers, metrics, and the end of a call's life.
 *
 * Invariants:
 * - metrics: rpc_metrics_begin once when the headers are dispatched, rpc_metrics_end once
 *   when the status is decided (finished), whatever ends the call;
 * - every request byte handed to rpc_call_on_data is consumed exactly once: at once, when the
 *   service is done with it, or when the call ends;
 * - while input is held, bytes are queued in order and delivered in order after resume;
 * - the service sees no callback after finish or cancel;
 * - a call is on rpc_core.watched from its dispatch until it is freed;
 *
 * Sections: life, stalled clients, input, output, status.
 */
#include "rpc/call.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "base/clock.h"
#include "base/log.h"
#include "ring/buf.h"
#include "rpc/h2.h"
#include "rpc/internal.h"
#include "rpc/status.h"
#include "rpc/svc.h"

#define CALL_ARENA_BLOCK (4u << 10)
#define CALL_ARENA_MAX   (1u << 20)

static void finish_with(struct rpc_call *c, int status, const char *message, int http_status);
static void unary_release(struct rpc_call *c);
static void cancel(struct rpc_call *c, int status, const char *message);
static void unwatch(struct rpc_call *c);

/* ---- life ---- */

static void deadline_fired(struct ring_timer *timer);
static void deadline_remove(struct rpc_call *c);

/*
 * Free calls kept per core: enough for a busy connection's worth of streams. Sanitizer builds
 * keep none, so ASan sees every call's lifetime (RC_POOL_PASSTHROUGH, STYLE.md §10).
 */
#ifdef RC_POOL_PASSTHROUGH
#    define CALL_POOL_MAX 0
#else
#    define CALL_POOL_MAX 512
#endif

struct rpc_call *rpc_call_new(struct rpc_core *rc, struct rpc_h2 *h2, int32_t stream_id)
{
    struct rpc_call *c = rc->call_pool;
    if (c) {
        rc->call_pool = c->pool_next;
        rc->call_pool_count--;
        /*
         * Only the fields before the message need clearing: the message is a C string and
         * svc_mem is handed out by svc_used.
         */
        memset(c, 0, offsetof(struct rpc_call, message));
        c->message[0] = '\0';
        c->log_peer[0] = '\0';
        c->log_target_len = 0;
    } else {
        c = calloc(1, sizeof(*c));
        if (!c) return NULL;
    }
    c->h2 = h2;
    c->rc = rc;
    c->stream_id = stream_id;
    base_list_init(&c->link);
    base_list_init(&c->out);
    base_list_init(&c->in);
    c->encoding_ok = true;
    c->route = RPC_ROUTE_GRPC_UNKNOWN;
    c->held_bid = RING_CONN_NO_BUF;
    c->in_bid = RING_CONN_NO_BUF;
    base_list_init(&c->msg_link);
    ring_owner_init(&c->owner);
    base_arena_init(&c->arena, CALL_ARENA_BLOCK, CALL_ARENA_MAX);
    base_counter_inc(&rc->counters.grpc_calls);
    return c;
}

void rpc_call_delete(struct rpc_call *c)
{
    struct rpc_core *rc = c->rc;
    unwatch(c);
    if (rc->call_pool_count + 1 > CALL_POOL_MAX) {
        free(c);
        return;
    }
    c->pool_next = rc->call_pool;
    rc->call_pool = c;
    rc->call_pool_count++;
}

void rpc_call_pool_drain(struct rpc_core *rc)
{
    /* Bounded by CALL_POOL_MAX. */
    while (rc->call_pool) {
        struct rpc_call *c = rc->call_pool;
        rc->call_pool = c->pool_next;
        rc->call_pool_count--;
        free(c);
    }
}

struct ring_core *rpc_call_core(const struct rpc_call *c)
{
    return c->rc->ring;
}

struct blob_core *rpc_call_blob(const struct rpc_call *c)
{
    return c->rc->blob;
}

void *rpc_call_alloc(struct rpc_call *c, size_t size)
{
    size_t aligned = (size + 15) & ~(size_t)15;
    if (aligned <= sizeof(c->svc_mem) - c->svc_used) {
        void *p = c->svc_mem + c->svc_used;
        c->svc_used += aligned;
        memset(p, 0, size);
        return p;
    }
    return base_arena_calloc(&c->arena, 1, size);
}

ProtobufCAllocator *rpc_call_pb_allocator(struct rpc_call *c)
{
    return &c->rc->pb;
}

static void call_idle(struct ring_core *core, void *ctx)
{
    (void)core;
    struct rpc_call *c = ctx;
    ring_owner_deinit(&c->owner);
    bool out_empty = base_list_is_empty(&c->out);
    bool in_empty = base_list_is_empty(&c->in);
    ASSERT(out_empty);
    ASSERT(in_empty);
    ASSERT(c->segs_in_send == 0);
    ASSERT(c->pins == 0);
    ASSERT(!c->input_held);
    unary_release(c);
    base_arena_deinit(&c->arena);
    base_counter_dec(&c->rc->counters.grpc_calls);
    rpc_h2_call_free(c);
}

void rpc_call_check_free(struct rpc_call *c)
{
    if (c->freeing || !c->stream_closed || !rpc_call_is_over(c)) return;
    if (c->segs_in_send > 0 || c->pins > 0 || !base_list_is_empty(&c->out)) return;
    c->freeing = true;
    ring_owner_close(c->rc->ring, &c->owner, call_idle, c);
}

bool rpc_call_may_wait(const struct rpc_call *c)
{
    return c->waiting || rpc_h2_may_wait(c);
}

void rpc_call_wait_begin(struct rpc_call *c)
{
    if (c->waiting) return;
    c->waiting = true;
    rpc_h2_wait_begin(c);
    base_counter_inc(&c->rc->counters.upload_waiters);
}

void rpc_call_wait_end(struct rpc_call *c)
{
    if (!c->waiting) return;
    c->waiting = false;
    rpc_h2_wait_end(c);
    base_counter_dec(&c->rc->counters.upload_waiters);
}

void rpc_call_pin(struct rpc_call *c)
{
    c->pins++;
    base_counter_inc(&c->rc->counters.grpc_pins);
}

void rpc_call_unpin(struct rpc_call *c)
{
    ASSERT(c->pins > 0);
    c->pins--;
    base_counter_dec(&c->rc->counters.grpc_pins);
    rpc_call_check_free(c);
}

/* Releases held and queued input, giving its bytes back to the windows. */
static void input_release_all(struct rpc_call *c)
{
    struct ring_core *core = c->rc->ring;
    if (c->input_held) {
        c->input_held = false;
        rpc_h2_consume(c, c->held_len);
        if (c->held_bid != RING_CONN_NO_BUF) ring_buf_unref(core, c->held_bid);
        if (c->held_slice) {
            base_counter_dec(&c->rc->counters.grpc_slices);
            proto_alloc_free(&c->rc->pb_mem, c->held_slice);
        }
        c->held_bid = RING_CONN_NO_BUF;
        c->held_slice = NULL;
        c->held_len = 0;
    }
    struct base_list *node;
    /* Bounded by the slices queued (the flow-control window bounds them). */
    while ((node = base_list_pop_head(&c->in))) {
        struct rpc_slice *s = BASE_CONTAINER_OF(node, struct rpc_slice, link);
        rpc_h2_consume(c, s->len);
        if (s->bid != RING_CONN_NO_BUF) ring_buf_unref(core, s->bid);
        base_counter_dec(&c->rc->counters.grpc_slices);
        proto_alloc_free(&c->rc->pb_mem, s);
    }
}

/* The service is told to stop, then the call ends with <status> (trailers if still open). */
static void cancel(struct rpc_call *c, int status, const char *message)
{
    if (rpc_call_is_over(c)) return;
    c->cancelled = true;
    c->cancel_status = status;
    if (c->method && c->method->on_cancel) c->method->on_cancel(c);
    /* Whole messages already started still go out; the rest is dropped. */
    rpc_h2_drop_output(c, true);
    finish_with(c, status, message, 200);
}

void rpc_call_on_stream_close(struct rpc_call *c, uint32_t error_code)
{
    c->stream_closed = true;
    if (!rpc_call_is_over(c)) {
        base_counter_inc(&c->rc->counters.grpc_cancels);
        LOG_DEBUG("call %s on stream %d reset by the client (error %u)", c->path, c->stream_id,
                  error_code);
        cancel(c, PROTO_STATUS_CANCELLED, "cancelled by the client");
    }
    rpc_h2_drop_output(c, false);
    input_release_all(c);
    rpc_call_check_free(c);
}

void rpc_call_on_conn_close(struct rpc_call *c)
{
    if (!c->stream_closed) {
        c->stream_closed = true;
        base_counter_dec(&c->rc->counters.h2_streams);
    }
    if (!rpc_call_is_over(c)) {
        base_counter_inc(&c->rc->counters.grpc_cancels);
        cancel(c, PROTO_STATUS_UNAVAILABLE, "connection closed");
    }
    /* No send is in flight once the connection closed: everything is released now. */
    rpc_h2_drop_output(c, false);
    input_release_all(c);
    rpc_call_wait_end(c);
    c->h2 = NULL;
    rpc_call_check_free(c);
}

/* ---- stalled clients ---- */

/*
 * Every dispatched call is watched until it is freed, for two ways a client can hold a
 * call's memory while its connection stays alive (HTTP/2 PINGs and other streams reset the
 * ring's receive timeout, and a send that waits for a window is not a send in progress):
 * - it stops sending its request: one that sends no request bytes for --read-timeout before
 *   ending it, or fewer than RPC_MIN_RATE bytes a second over each --read-timeout, ends with
 *   DEADLINE_EXCEEDED (an upload it began is aborted through on_cancel);
 *   a request held incomplete keeps its memory (a unary message up to RPC_MESSAGE_MAX, an
 *   upload's slot and buffers). Time the server itself holds the input up (the engine waits
 *   for the disk, a commit is pending, the connection paused its receives) does not count;
 * - it stops reading: a call whose queued response waits for the client's flow-control
 *   window (the stream's or the connection's) and sends no byte for --write-timeout has its
 *   stream reset (RST_STREAM CANCEL), which drops the response (a batch answer, a Read's
 *   engine pieces).
 * Checked every quarter of the shorter timeout, at most a second apart, while calls live.
 * When the core's op table is full at the moment the check is to be armed, it runs and is
 * armed as soon as an op is free (ring_op_wait_free), not when the next call is watched.
 */
static void stall_fired(struct ring_timer *t);
static void stall_retry_run(struct ring_task *task);
static void deadline_retry_run(struct ring_task *task);

void rpc_call_core_init(struct rpc_core *rc)
{
    base_list_init(&rc->watched);
    base_list_init(&rc->msg_in_feed);
    ring_owner_init(&rc->owner);
    ring_timer_init(&rc->stall, stall_fired, rc);
    ring_task_init(&rc->stall_retry, stall_retry_run);
    ring_timer_init(&rc->deadline, deadline_fired, rc);
    ring_task_init(&rc->deadline_retry, deadline_retry_run);
}

void rpc_call_core_quiesce(struct rpc_core *rc)
{
    rc->quiescing = true;
    ring_task_cancel(&rc->stall_retry);
    ring_task_cancel(&rc->deadline_retry);
    if (ring_timer_is_armed(&rc->stall)) ring_timer_stop(rc->ring, &rc->stall);
    if (ring_timer_is_armed(&rc->deadline)) ring_timer_stop(rc->ring, &rc->deadline);
}

void rpc_call_core_deinit(struct rpc_core *rc)
{
    bool none = base_list_is_empty(&rc->watched); /* no call in an ASSERT (clang-tidy) */
    ASSERT(none);
    bool retry_queued =
        base_list_is_linked(&rc->stall_retry.link) || base_list_is_linked(&rc->deadline_retry.link);
    ASSERT(!retry_queued);
    ASSERT(rc->deadlines_len == 0);
    free(rc->deadlines);
    rc->deadlines = NULL;
    rc->deadlines_cap = 0;
    ring_owner_deinit(&rc->owner);
}

/*
 * Arms the stalled-call check while calls live. When the op table is full it is armed as soon
 * as an op comes back: waiting for the next call to be watched, as it did, left the calls of a
 * core where none came (their queued answers, their held requests) unchecked indefinitely.
 */
static void stall_arm(struct rpc_core *rc)
{
    const struct rpc_config *cfg = rc->cfg;
    uint64_t ms = cfg->read_timeout_ms;
    if (ms == 0 || (cfg->write_timeout_ms > 0 && cfg->write_timeout_ms < ms)) {
        ms = cfg->write_timeout_ms;
    }
    if (ms == 0) return; /* both timeouts off */
    /* A second at most, so the timer's op ends soon after the last call went. */
    ms /= 4;
    ms = ms < 10 ? 10 : ms > 1000 ? 1000 : ms;
    if (base_list_is_empty(&rc->watched) || rc->quiescing || ring_timer_is_armed(&rc->stall)) {
        return;
    }
    (void)ring_timer_start_or_wait(rc->ring, &rc->stall, &rc->owner, ms, &rc->stall_retry,
                                   "the stalled-call check");
}

static void watch(struct rpc_call *c)
{
    struct rpc_core *rc = c->rc;
    c->watched = true;
    c->input_ns = ring_core_batch_ns(rc->ring);
    c->window_ns = c->input_ns;
    c->window_bytes = c->bytes_in;
    base_list_add_tail(&rc->watched, &c->watch_link);
    stall_arm(rc);
}

static void unwatch(struct rpc_call *c)
{
    if (!c->watched) return;
    c->watched = false;
    base_list_del(&c->watch_link);
}

/* The request is still coming: dispatched, not over, not ended by the client. */
static bool waits_for_request(const struct rpc_call *c)
{
    return c->method && !rpc_call_is_over(c) && !c->peer_ended && !c->stream_closed;
}

/*
 * A request still coming must bring RPC_MIN_RATE bytes a second, averaged over each
 * --read-timeout, as HTTP/1.1 bodies must (h1.c too_slow). Any byte was enough before: a
 * client that sent a byte of a ByteStream.Write every few seconds kept the upload (its slot
 * of --max-uploads, its buffers) for as long as it liked, with no deadline.
 */
static void check_request(struct rpc_call *c, uint64_t now, uint64_t limit)
{
    if (limit == 0 || !waits_for_request(c)) return;
    if (c->input_held || c->pins > 0 || rpc_h2_holds_input(c, now)) {
        /* The server holds it up: the client's time starts later. */
        c->input_ns = now;
        c->window_ns = now;
        c->window_bytes = c->bytes_in;
        return;
    }
    const char *why = "no request data within --read-timeout";
    if (now - c->input_ns < limit) {
        if (now - c->window_ns < limit) return;
        uint64_t want = rpc_min_bytes(limit / BASE_NS_PER_MS);
        if (c->bytes_in - c->window_bytes >= want) {
            c->window_ns = now;
            c->window_bytes = c->bytes_in;
            return;
        }
        why = "request data slower than 1 KiB/s over --read-timeout";
    }
    base_counter_inc(&c->rc->counters.grpc_stalls);
    LOG_DEBUG("call %s on stream %d: %s", c->path, c->stream_id, why);
    cancel(c, PROTO_STATUS_DEADLINE_EXCEEDED, why);
}

/*
 * A response waiting for the client's window must see RPC_MIN_RATE bytes a second
 * leave, averaged over each --write-timeout (or all it has left, when less), as HTTP/1.1
 * bodies must arrive (h1.c). Any progress was enough before: a client that opened its window
 * by one byte every few seconds kept each of 256 queued 3 MiB answers, and every other
 * BatchReadBlobs of the core was refused for memory, for as long as it liked.
 */
static void check_response(struct rpc_call *c, uint64_t now, uint64_t limit)
{
    if (limit == 0 || c->out_bytes == 0 || !rpc_h2_send_blocked(c)) {
        c->blocked_ns = 0;
        return;
    }
    /* A client that opens its window a little at a time is reading, if fast enough. Behind
     * the connection's window, any stream's bytes count: the streams of a connection are
     * served one after another. */
    uint64_t sent = rpc_h2_send_progress(c);
    if (c->blocked_ns == 0 || sent - c->blocked_sent >= c->blocked_want) {
        uint64_t want = rpc_min_bytes(limit / BASE_NS_PER_MS);
        c->blocked_ns = now;
        c->blocked_sent = sent;
        c->blocked_want = want < c->out_bytes ? want : c->out_bytes;
        if (c->blocked_want == 0) c->blocked_want = 1;
        return;
    }
    if (now - c->blocked_ns < limit) return;
    c->blocked_ns = 0;
    base_counter_inc(&c->rc->counters.grpc_send_stalls);
    LOG_DEBUG("call %s on stream %d: the client's window let out too little in --write-timeout",
              c->path, c->stream_id);
    /* Ended here (its metrics say so), not as a client's reset when the stream closes. */
    cancel(c, PROTO_STATUS_CANCELLED, "the client stopped reading (--write-timeout)");
    rpc_h2_reset(c, NGHTTP2_CANCEL);
}

/* Ends the calls whose client stopped sending or reading. */
static void stall_check(struct rpc_core *rc)
{
    uint64_t now = base_clock_now_ns();
    uint64_t read_limit = (uint64_t)rc->cfg->read_timeout_ms * BASE_NS_PER_MS;
    uint64_t write_limit = (uint64_t)rc->cfg->write_timeout_ms * BASE_NS_PER_MS;
    /* Bounded by the calls alive on this core; none is freed before the loop ends (the
     * owner's idle callback is deferred). */
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &rc->watched)
    {
        struct rpc_call *c = BASE_CONTAINER_OF(it, struct rpc_call, watch_link);
        check_request(c, now, read_limit);
        check_response(c, now, write_limit);
    }
}

static void stall_fired(struct ring_timer *t)
{
    struct rpc_core *rc = t->ctx;
    stall_check(rc);
    stall_arm(rc);
}

/* An op is free again after the check could not be armed: it may be overdue, so it runs now. */
static void stall_retry_run(struct ring_task *task)
{
    struct rpc_core *rc = BASE_CONTAINER_OF(task, struct rpc_core, stall_retry);
    if (rc->quiescing) return;
    stall_check(rc);
    stall_arm(rc);
}

/* ---- deadlines ---- */

/*
 * grpc-timeout deadlines live in one min-heap per core, behind one timer: a call costs no op
 * of the core's table for its deadline (Bazel sends one with every call, and 128 streams on
 * each of 128 connections would fill the table), nor a timeout and its removal per call. The
 * timer is armed for the earliest deadline but at most DEADLINE_TICK_MS ahead, so a call
 * arriving with an earlier deadline is ended at most that late.
 */
#define DEADLINE_TICK_MS 100u

static bool deadline_before(const struct rpc_call *a, const struct rpc_call *b)
{
    return a->deadline_ns < b->deadline_ns;
}

static void heap_set(struct rpc_core *rc, uint32_t i, struct rpc_call *c)
{
    rc->deadlines[i] = c;
    c->deadline_index = i;
}

/* Moves the entry at <i> up, then down, to its place. Bounded by the heap's depth. */
static void heap_fix(struct rpc_core *rc, uint32_t i)
{
    struct rpc_call *c = rc->deadlines[i];
    while (i > 0 && deadline_before(c, rc->deadlines[(i - 1) / 2])) {
        heap_set(rc, i, rc->deadlines[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    for (;;) {
        uint32_t l = 2 * i + 1;
        uint32_t m = l;
        if (l >= rc->deadlines_len) break;
        if (l + 1 < rc->deadlines_len && deadline_before(rc->deadlines[l + 1], rc->deadlines[l])) {
            m = l + 1;
        }
        if (!deadline_before(rc->deadlines[m], c)) break;
        heap_set(rc, i, rc->deadlines[m]);
        i = m;
    }
    heap_set(rc, i, c);
}

static void deadline_arm(struct rpc_core *rc)
{
    if (rc->deadlines_len == 0 || rc->quiescing || ring_timer_is_armed(&rc->deadline)) return;
    uint64_t now = base_clock_now_ns();
    uint64_t first = rc->deadlines[0]->deadline_ns;
    uint64_t ms = first > now ? (first - now + BASE_NS_PER_MS - 1) / BASE_NS_PER_MS : 0;
    ms = ms < 1 ? 1 : ms > DEADLINE_TICK_MS ? DEADLINE_TICK_MS : ms;
    /* It fails when a call's deadline is added (that call is refused, deadline_add) or when
     * the timer fired with the table full (its own op is given back only after it ran):
     * trying again only when a call ended, as before, left the deadlines of a core where none
     * ended unkept. */
    (void)ring_timer_start_or_wait(rc->ring, &rc->deadline, &rc->owner, ms, &rc->deadline_retry,
                                   "the deadline timer");
}

/* Queues <c>'s deadline and arms the timer; -ENOMEM when the heap cannot grow, -EAGAIN when
 * the timer cannot be armed (op table full), and then <c> is not queued. */
static int deadline_add(struct rpc_call *c)
{
    struct rpc_core *rc = c->rc;
    if (rc->deadlines_len == rc->deadlines_cap) {
        uint32_t cap = rc->deadlines_cap ? 2 * rc->deadlines_cap : 64;
        struct rpc_call **p = realloc(rc->deadlines, cap * sizeof(struct rpc_call *));
        if (!p) return -ENOMEM;
        rc->deadlines = p;
        rc->deadlines_cap = cap;
    }
    /* The deadline counts from the request's arrival. */
    uint64_t now = ring_core_batch_ns(rc->ring);
    uint64_t span = c->timeout_ms;
    c->deadline_ns =
        span < (UINT64_MAX - now) / BASE_NS_PER_MS ? now + span * BASE_NS_PER_MS : UINT64_MAX;
    c->deadline_queued = true;
    heap_set(rc, rc->deadlines_len++, c);
    heap_fix(rc, c->deadline_index);
    deadline_arm(rc);
    if (!rc->quiescing && !ring_timer_is_armed(&rc->deadline)) {
        deadline_remove(c);
        return -EAGAIN;
    }
    return 0;
}

static void deadline_remove(struct rpc_call *c)
{
    if (!c->deadline_queued) return;
    struct rpc_core *rc = c->rc;
    uint32_t i = c->deadline_index;
    ASSERT(i < rc->deadlines_len && rc->deadlines[i] == c);
    c->deadline_queued = false;
    struct rpc_call *last = rc->deadlines[--rc->deadlines_len];
    if (last != c) {
        heap_set(rc, i, last);
        heap_fix(rc, i);
    }
}

/* Ends the calls whose deadline passed, and arms the timer for the next. */
static void deadline_expire(struct rpc_core *rc)
{
    uint64_t now = base_clock_now_ns();
    /* Bounded by the calls queued; each pass takes one off. */
    while (rc->deadlines_len > 0 && rc->deadlines[0]->deadline_ns <= now) {
        struct rpc_call *c = rc->deadlines[0];
        deadline_remove(c);
        base_counter_inc(&rc->counters.grpc_deadlines);
        cancel(c, PROTO_STATUS_DEADLINE_EXCEEDED, "deadline exceeded (grpc-timeout)");
    }
    deadline_arm(rc);
}

static void deadline_fired(struct ring_timer *timer)
{
    deadline_expire(timer->ctx);
}

/* An op is free again after the timer could not be armed: a deadline may be overdue. */
static void deadline_retry_run(struct ring_task *task)
{
    struct rpc_core *rc = BASE_CONTAINER_OF(task, struct rpc_core, deadline_retry);
    if (rc->quiescing) return;
    deadline_expire(rc);
}

/* ---- input ---- */

static bool header_error(struct rpc_call *c)
{
    if (c->header_bytes > RPC_H2_HEADERS_MAX) {
        /* First: the fields past the limit were not kept. RFC 9113 §10.5.1 names HTTP 431. */
        finish_with(c, PROTO_STATUS_RESOURCE_EXHAUSTED,
                    "request header list over the 16 KiB limit (SETTINGS_MAX_HEADER_LIST_SIZE)",
                    431);
        return true;
    }
    if (!c->method_post) {
        finish_with(c, PROTO_STATUS_UNIMPLEMENTED, "gRPC requires POST", 405);
        return true;
    }
    if (!c->content_grpc) {
        /* PROTOCOL-HTTP2.md: a content-type that is not application/grpc gets HTTP 415. */
        finish_with(c, PROTO_STATUS_UNKNOWN, "content-type must be application/grpc", 415);
        return true;
    }
    if (!c->method) {
        finish_with(c, PROTO_STATUS_UNIMPLEMENTED, "unknown method", 200);
        return true;
    }
    if (!c->encoding_ok) {
        finish_with(c, PROTO_STATUS_UNIMPLEMENTED, "grpc-encoding not supported (identity only)",
                    200);
        return true;
    }
    if (c->timeout_bad) {
        finish_with(c, PROTO_STATUS_INVALID_ARGUMENT, "malformed grpc-timeout", 200);
        return true;
    }
    return false;
}

void rpc_call_on_headers(struct rpc_call *c)
{
    if (c->headers_done) return;
    c->headers_done = true;
    c->start_ns = ring_core_batch_ns(c->rc->ring); /* when its bytes were there */
    watch(c);
    c->method = rpc_svc_lookup(c->path);
    c->route = c->method ? c->method->route : RPC_ROUTE_GRPC_UNKNOWN;
    rpc_metrics_begin(&c->rc->metrics, c->route);
    c->metrics_begun = true;
    if (header_error(c)) return;
    proto_deframer_init(&c->deframer, RPC_MESSAGE_MAX);
    if (!c->has_timeout) return;
    if (c->timeout_ms == 0) {
        base_counter_inc(&c->rc->counters.grpc_deadlines);
        finish_with(c, PROTO_STATUS_DEADLINE_EXCEEDED, "deadline exceeded (grpc-timeout)", 200);
        return;
    }
    int rc = deadline_add(c);
    if (rc == -ENOMEM) {
        finish_with(c, PROTO_STATUS_RESOURCE_EXHAUSTED,
                    "server busy: out of memory for a deadline, retry later", 200);
    } else if (rc < 0) {
        finish_with(c, PROTO_STATUS_RESOURCE_EXHAUSTED,
                    "server busy: the core's op table is full, retry later", 200);
    }
}

/*
 * Room for <need> bytes of the unary message being assembled: grown by doubling from 64 KiB
 * up to its declared length, so what a request holds follows what its client sent, not what
 * it announced. Past --message-memory (the core's allocator limit) the call ends
 * RESOURCE_EXHAUSTED, which clients retry.
 */
static int unary_grow(struct rpc_call *c, uint32_t need)
{
    if (need <= c->msg_cap) return 0;
    uint32_t len = c->deframer.msg_len;
    uint32_t cap = c->msg_cap ? c->msg_cap * 2 : 64u << 10;
    if (cap < need) cap = need;
    if (cap > len) cap = len;
    uint8_t *p = proto_alloc_realloc(&c->rc->pb_mem, c->msg, cap);
    if (!p) {
        rpc_call_finish(c, PROTO_STATUS_RESOURCE_EXHAUSTED, RPC_CALL_MEM_BUSY);
        return -1;
    }
    c->msg = p;
    c->msg_cap = cap;
    return 0;
}

static int unary_data(struct rpc_call *c, const struct proto_frame_event *ev)
{
    uint32_t len = c->deframer.msg_len;
    if (c->msg_got == 0 && ev->len == len) {
        /* The whole message lies in this piece: no copy (the usual case). */
        c->msg_direct = ev->data;
        c->msg_got = len;
        return 0;
    }
    if (ev->len == 0) return 0;
    if (unary_grow(c, c->msg_got + (uint32_t)ev->len) < 0) return -1;
    memcpy(c->msg + c->msg_got, ev->data, ev->len);
    c->msg_got += (uint32_t)ev->len;
    return 0;
}

/* Forgets the unary request (after dispatch, or when the call ends first). */
static void unary_release(struct rpc_call *c)
{
    proto_alloc_free(&c->rc->pb_mem, c->msg);
    if (c->msg_in_feed) base_list_del(&c->msg_link);
    c->msg_cap = 0;
    c->msg = NULL;
    c->msg_direct = NULL;
    c->msg_got = 0;
    c->msg_in_feed = false;
    c->msg_ready = false;
}

static void unary_dispatch(struct rpc_call *c)
{
    const uint8_t *msg = c->msg_direct ? c->msg_direct : c->msg;
    c->msg_ready = false;
    c->method->on_message(c, msg ? msg : (const uint8_t *)"", c->msg_len);
    unary_release(c);
}

/* Copies the waiting unary request into message memory; -1 when the call ended. */
static int unary_copy(struct rpc_call *c)
{
    ASSERT(c->msg_direct);
    c->msg = proto_alloc_malloc(&c->rc->pb_mem, c->msg_len ? c->msg_len : 1);
    if (!c->msg) {
        rpc_call_finish(c, PROTO_STATUS_RESOURCE_EXHAUSTED, RPC_CALL_MEM_BUSY);
        return -1;
    }
    memcpy(c->msg, c->msg_direct, c->msg_len);
    c->msg_direct = NULL;
    return 0;
}

/*
 * A unary request is complete. It is handed over with the end of the stream (a second
 * message must be refused first), which nghttp2 nearly always reports from the same receive
 * buffer: until the buffer is done (rpc_call_feed_done) a message lying whole in it is used
 * in place. One still waiting then is copied into message memory, where --message-memory
 * counts it: a receive buffer kept for it would hold 64 KiB for a few bytes, counted nowhere,
 * and clients that never end their streams would take every buffer of the core and stop it.
 */
static int unary_end(struct rpc_call *c)
{
    c->messages++;
    c->msg_len = c->deframer.msg_len;
    c->msg_ready = true;
    if (!c->msg_direct) return 0;
    if (!rpc_h2_is_feeding(c, c->in_bid)) return unary_copy(c); /* a queued copy: goes soon */
    c->msg_in_feed = true;
    base_list_add_tail(&c->rc->msg_in_feed, &c->msg_link);
    return 0;
}

void rpc_call_feed_done(struct rpc_core *rc)
{
    /* Bounded by the streams of the connection fed; each leaves the list. */
    while (!base_list_is_empty(&rc->msg_in_feed)) {
        struct rpc_call *c =
            BASE_CONTAINER_OF(base_list_pop_head(&rc->msg_in_feed), struct rpc_call, msg_link);
        c->msg_in_feed = false;
        (void)unary_copy(c);
    }
}

/* One deframer event: 0 to go on, RPC_HELD, or -1 when the call ended. */
static int on_event(struct rpc_call *c, const struct proto_frame_event *ev)
{
    const struct rpc_method *m = c->method;
    switch (ev->type) {
    case PROTO_FRAME_BEGIN:
        if (m->streamed) return m->on_msg_begin(c, ev->msg_len);
        if (c->messages > 0) {
            rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT,
                            "more than one request message for a unary method");
            return -1;
        }
        return 0;
    case PROTO_FRAME_DATA:
        return m->streamed ? m->on_bytes(c, ev->data, ev->len) : unary_data(c, ev);
    case PROTO_FRAME_END:
        if (!m->streamed) return unary_end(c);
        c->messages++;
        return m->on_msg_end(c);
    default:
        return 0;
    }
}

/* The request's framing is wrong: the method is told to stop (an upload it began is
 * aborted) and the call ends with the error. */
static void frame_error(struct rpc_call *c, int err)
{
    if (err == -EMSGSIZE) {
        base_counter_inc(&c->rc->counters.grpc_oversize);
        cancel(c, PROTO_STATUS_RESOURCE_EXHAUSTED,
               "message larger than the limit (4 MiB + 64 KiB)");
        return;
    }
    cancel(c, PROTO_STATUS_INTERNAL, "compressed messages are not accepted");
}

/*
 * Queues <p>/<len> to be processed after resume; a copy unless it is in a receive buffer.
 * <front>: the rest of a slice being processed, which comes before everything queued after
 * it (at the tail it would be fed after them and the deframer would read the stream out of
 * order).
 */
static void queue_slice(struct rpc_call *c, const uint8_t *p, size_t len, uint16_t bid, bool front)
{
    size_t extra = bid == RING_CONN_NO_BUF ? len : 0;
    struct rpc_slice *s = proto_alloc_malloc(&c->rc->pb_mem, sizeof(*s) + extra);
    if (!s) {
        rpc_h2_consume(c, len);
        cancel(c, PROTO_STATUS_RESOURCE_EXHAUSTED, RPC_CALL_MEM_BUSY);
        return;
    }
    s->len = len;
    s->bid = bid;
    if (bid == RING_CONN_NO_BUF) {
        memcpy(s->copy, p, len);
        s->p = s->copy;
    } else {
        ring_buf_ref(c->rc->ring, bid);
        s->p = p;
    }
    base_counter_inc(&c->rc->counters.grpc_slices);
    if (front) {
        base_list_add_head(&c->in, &s->link);
    } else {
        base_list_add_tail(&c->in, &s->link);
    }
}

/* The service holds <len> bytes of <bid> / <owner>; they are consumed on resume. */
static void hold(struct rpc_call *c, size_t len, uint16_t bid, struct rpc_slice *owner)
{
    c->input_held = true;
    c->held_len = len;
    c->held_bid = RING_CONN_NO_BUF;
    c->held_slice = NULL;
    if (owner) {
        c->held_slice = owner;
    } else if (bid != RING_CONN_NO_BUF) {
        ring_buf_ref(c->rc->ring, bid);
        c->held_bid = bid;
    }
}

/*
 * Feeds <p>/<len> through the deframer to the method. <owner> is the slice <p> lives in (or
 * NULL); returns true when the slice was taken over by a hold (the caller must not free it).
 */
static bool process(struct rpc_call *c, const uint8_t *p, size_t len, uint16_t bid,
                    struct rpc_slice *owner)
{
    size_t done = 0;
    c->in_bid = bid;
    /* Bounded: each event takes bytes or changes the deframer's state (frame.c). */
    for (;;) {
        struct proto_frame_event ev;
        int n = proto_deframer_feed(&c->deframer, p + done, len - done, &ev);
        if (n < 0) {
            rpc_h2_consume(c, len);
            frame_error(c, n);
            return false;
        }
        done += (size_t)n;
        int r = on_event(c, &ev);
        if (r < 0) {
            rpc_h2_consume(c, len);
            return false;
        }
        if (r == RPC_HELD) {
            size_t held = ev.type == PROTO_FRAME_DATA ? (size_t)n : 0;
            rpc_h2_consume(c, done - held);
            if (done < len) queue_slice(c, p + done, len - done, bid, true);
            bool keep = owner && held > 0;
            hold(c, held, bid, keep ? owner : NULL);
            return keep;
        }
        if (ev.type == PROTO_FRAME_NEED_MORE) break;
    }
    rpc_h2_consume(c, len);
    return false;
}

static void deliver_half_close(struct rpc_call *c)
{
    if (c->half_closed || rpc_call_is_over(c) || !c->method) return;
    c->half_closed = true;
    if (!proto_deframer_is_idle(&c->deframer)) {
        cancel(c, PROTO_STATUS_INVALID_ARGUMENT, "request ended inside a message");
        return;
    }
    if (c->method->streamed) {
        if (c->method->on_half_close) c->method->on_half_close(c);
        return;
    }
    if (c->messages == 0) {
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, "missing request message");
        return;
    }
    if (c->msg_ready) unary_dispatch(c);
}

void rpc_call_on_data(struct rpc_call *c, const uint8_t *p, size_t len, uint16_t bid)
{
    c->bytes_in += len;
    c->input_ns = ring_core_batch_ns(c->rc->ring);
    if (rpc_call_is_over(c) || !c->method) {
        rpc_h2_consume(c, len);
        return;
    }
    if (c->input_held || !base_list_is_empty(&c->in) || bid == RING_CONN_NO_BUF) {
        /* Behind held input, or not in a receive buffer (a copy then keeps it). */
        queue_slice(c, p, len, bid, false);
        if (!c->input_held) rpc_call_resume_input(c);
        return;
    }
    (void)process(c, p, len, bid, NULL);
}

void rpc_call_on_end_stream(struct rpc_call *c)
{
    c->peer_ended = true;
    if (c->input_held || !base_list_is_empty(&c->in)) return; /* delivered after the input */
    deliver_half_close(c);
}

void rpc_call_resume_input(struct rpc_call *c)
{
    struct ring_core *core = c->rc->ring;
    if (c->input_held) {
        c->input_held = false;
        c->input_ns = base_clock_now_ns(); /* the client's time starts now */
        rpc_h2_consume(c, c->held_len);
        if (c->held_bid != RING_CONN_NO_BUF) ring_buf_unref(core, c->held_bid);
        if (c->held_slice) {
            base_counter_dec(&c->rc->counters.grpc_slices);
            proto_alloc_free(&c->rc->pb_mem, c->held_slice);
        }
        c->held_bid = RING_CONN_NO_BUF;
        c->held_slice = NULL;
        c->held_len = 0;
    }
    /*
     * Events the deframer still owes for bytes already taken (the END of a message whose
     * last bytes were held) come first: they need no input.
     */
    static const uint8_t none[1];
    if (!rpc_call_is_over(c)) (void)process(c, none, 0, RING_CONN_NO_BUF, NULL);
    /* Bounded by the queue, which the flow-control window bounds. */
    while (!c->input_held && !rpc_call_is_over(c) && !base_list_is_empty(&c->in)) {
        struct rpc_slice *s = BASE_CONTAINER_OF(base_list_pop_head(&c->in), struct rpc_slice, link);
        bool taken = process(c, s->p, s->len, s->bid, s->bid == RING_CONN_NO_BUF ? s : NULL);
        if (taken) continue;
        if (s->bid != RING_CONN_NO_BUF) ring_buf_unref(core, s->bid);
        base_counter_dec(&c->rc->counters.grpc_slices);
        proto_alloc_free(&c->rc->pb_mem, s);
    }
    if (rpc_call_is_over(c)) {
        input_release_all(c);
        return;
    }
    if (!c->input_held && c->peer_ended) deliver_half_close(c);
}

/* ---- output ---- */

void rpc_call_send(struct rpc_call *c, struct rpc_seg *seg)
{
    seg->call = c;
    seg->piece.send_gen = 0;
    base_counter_inc(&c->rc->counters.grpc_segs);
    if (c->finished || c->stream_closed || !c->h2) {
        base_counter_dec(&c->rc->counters.grpc_segs);
        seg->release(seg);
        return;
    }
    base_list_add_tail(&c->out, &seg->piece.link);
    c->out_bytes += seg->piece.len;
    c->bytes_out += seg->piece.len;
    if (!c->provider) rpc_h2_respond(c);
    rpc_h2_wake(c);
}

struct copy_seg {
    struct rpc_seg seg;    /* first: release casts back */
    struct proto_alloc *a; /* where it came from */
    uint8_t data[];        /* the message, framed */
};

static void copy_seg_release(struct rpc_seg *seg)
{
    struct copy_seg *cs = (struct copy_seg *)seg;
    proto_alloc_free(cs->a, cs);
}

static struct copy_seg *copy_seg_new(struct rpc_call *c, size_t len)
{
    struct copy_seg *cs = proto_alloc_malloc(&c->rc->pb_mem, sizeof(*cs) + len);
    if (!cs) return NULL;
    memset(&cs->seg, 0, sizeof(cs->seg));
    cs->a = &c->rc->pb_mem;
    cs->seg.piece.data = cs->data;
    cs->seg.piece.len = len;
    cs->seg.release = copy_seg_release;
    cs->seg.msg_start = true;
    return cs;
}

int rpc_call_send_message(struct rpc_call *c, const ProtobufCMessage *m)
{
    size_t size = protobuf_c_message_get_packed_size(m);
    if (size > UINT32_MAX - PROTO_FRAME_HEADER_SIZE) return -EMSGSIZE;
    struct copy_seg *cs = copy_seg_new(c, PROTO_FRAME_HEADER_SIZE + size);
    if (!cs) return -ENOMEM;
    proto_frame_header_put(cs->data, (uint32_t)size);
    size_t n = protobuf_c_message_pack(m, cs->data + PROTO_FRAME_HEADER_SIZE);
    ASSERT(n == size);
    rpc_call_send(c, &cs->seg);
    return 0;
}

struct owned_seg {
    struct rpc_seg seg;    /* first: release casts back */
    struct proto_alloc *a; /* where both came from */
    uint8_t *buf;          /* the caller's buffer */
};

static void owned_seg_release(struct rpc_seg *seg)
{
    struct owned_seg *os = (struct owned_seg *)seg;
    proto_alloc_free(os->a, os->buf);
    proto_alloc_free(os->a, os);
}

void rpc_call_send_owned(struct rpc_call *c, uint8_t *buf, size_t len)
{
    struct owned_seg *os = proto_alloc_malloc(&c->rc->pb_mem, sizeof(*os));
    if (!os) {
        /* No memory for the envelope: fall back to a copy, or give up on the call. */
        if (rpc_call_send_copy(c, buf, len) < 0) {
            rpc_call_finish(c, PROTO_STATUS_RESOURCE_EXHAUSTED, RPC_CALL_MEM_BUSY);
        }
        proto_alloc_free(&c->rc->pb_mem, buf);
        return;
    }
    memset(&os->seg, 0, sizeof(os->seg));
    os->a = &c->rc->pb_mem;
    os->buf = buf;
    os->seg.piece.data = buf;
    os->seg.piece.len = len;
    os->seg.release = owned_seg_release;
    os->seg.msg_start = true;
    rpc_call_send(c, &os->seg);
}

int rpc_call_send_copy(struct rpc_call *c, const uint8_t *p, size_t len)
{
    struct copy_seg *cs = copy_seg_new(c, len);
    if (!cs) return -ENOMEM;
    memcpy(cs->data, p, len);
    rpc_call_send(c, &cs->seg);
    return 0;
}

bool rpc_call_is_writable(struct rpc_call *c)
{
    if (c->out_bytes < RPC_CALL_OUT_HIGH) return true;
    c->writable_wanted = true;
    return false;
}

void rpc_call_on_drained(struct rpc_call *c)
{
    c->writable_wanted = false;
    if (!rpc_call_is_over(c) && c->method && c->method->on_writable) c->method->on_writable(c);
}

/* ---- status ---- */

void rpc_call_log_target(struct rpc_call *c, const char *target, size_t len)
{
    if (!c->rc->cfg->access_log) return;
    /* One byte past the log's field: it then marks the cut. */
    if (len > RPC_ACCESS_LOG_FIELD_MAX + 1) len = RPC_ACCESS_LOG_FIELD_MAX + 1;
    memcpy(c->log_target, target, len);
    c->log_target_len = (uint16_t)len;
}

static void log_call(struct rpc_call *c, int status, uint64_t ns)
{
    const struct rpc_access_entry e = {
        .peer = c->log_peer[0] ? c->log_peer : "-",
        .route = c->method ? rpc_route_name(c->route) : c->path,
        .target = c->log_target_len ? c->log_target : NULL,
        .target_len = c->log_target_len,
        .message = status != PROTO_STATUS_OK ? c->message : NULL,
        .status = status,
        .grpc = true,
        .bytes_in = c->bytes_in,
        .bytes_out = c->bytes_out,
        .duration_ns = ns,
    };
    rpc_access_log_add(c->rc->cfg->access_log, ring_core_index(c->rc->ring), &e);
}

static void finish_with(struct rpc_call *c, int status, const char *message, int http_status)
{
    if (c->finished) return;
    c->finished = true;
    c->status = status;
    if (message) {
        (void)proto_status_encode_message(message, strlen(message), c->message, sizeof(c->message));
    }
    deadline_remove(c);
    deadline_arm(c->rc); /* armed again if an op table that was full refused it */
    if (c->metrics_begun) {
        uint64_t ns = base_clock_now_ns() - c->start_ns;
        rpc_metrics_end(&c->rc->metrics, c->route, status, ns, c->bytes_in, c->bytes_out);
        if (c->rc->cfg->access_log) log_call(c, status, ns);
    }
    input_release_all(c);
    unary_release(c);
    rpc_call_wait_end(c);
    if (c->h2 && !c->stream_closed) {
        if (!c->provider) {
            rpc_h2_respond_trailers_only(c, http_status);
        } else {
            c->trailers_due = true;
            rpc_h2_wake(c);
        }
    }
    rpc_call_check_free(c);
}

void rpc_call_finish(struct rpc_call *c, int status, const char *message)
{
    finish_with(c, status, message, 200);
}

uint64_t rpc_call_mem_refusals(const struct rpc_call *c)
{
    return base_counter_get(&c->rc->pb_mem.failed);
}

void rpc_call_finish_undecodable(struct rpc_call *c, uint64_t refusals, const char *what)
{
    if (rpc_call_mem_refusals(c) != refusals) {
        rpc_call_finish(c, PROTO_STATUS_RESOURCE_EXHAUSTED, RPC_CALL_MEM_BUSY);
        return;
    }
    char buf[RPC_CALL_MESSAGE_MAX];
    (void)snprintf(buf, sizeof(buf), "undecodable %s", what);
    rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, buf);
}

void *rpc_call_unpack(struct rpc_call *c, const ProtobufCMessageDescriptor *desc,
                      const uint8_t *msg, size_t len, size_t svc_size, void **svc)
{
    ProtobufCAllocator *a = rpc_call_pb_allocator(c);
    uint64_t refusals = rpc_call_mem_refusals(c);
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, a, len, msg);
    void *state = svc_size > 0 ? rpc_call_alloc(c, svc_size) : NULL;
    if (m && (svc_size == 0 || state)) {
        if (svc) *svc = state;
        return m;
    }
    if (m) protobuf_c_message_free_unpacked(m, a);
    if (svc_size > 0 && !state) {
        rpc_call_finish_err(c, -ENOMEM, NULL);
    } else {
        rpc_call_finish_undecodable(c, refusals, desc->short_name);
    }
    return NULL;
}

void rpc_call_finish_err(struct rpc_call *c, int err, const char *what)
{
    const char *message;
    int status = rpc_status_from_err(err, &message);
    char buf[RPC_CALL_MESSAGE_MAX];
    if (what) {
        (void)snprintf(buf, sizeof(buf), "%s: %s", what, message);
        message = buf;
    }
    rpc_call_finish(c, status, message);
}
