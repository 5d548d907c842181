/*
 * Generic gRPC calls on a client connection: request headers, the request queue, response
 * deframing with pause/resume (held bytes wait in the call's inbox and the windows stay
 * closed behind them), the status, deadlines, cancel and the done callback.
 *
 * Invariants:
 * - done runs once per start, from the owner's idle task (never from a start, cancel or
 *   nghttp2 callback), after: the stream is over (ended), every seg is released
 *   (segs_in_send == 0, queue empty), held bytes were offered or dropped, and the deadline
 *   timer's op came back;
 * - every response DATA byte is consumed (window reopened) exactly once: when the typed call
 *   took it, or when it was dropped;
 * - a local failure (local_err) decides the outcome over whatever the server says later.
 *
 * Sections: setup and start, the request, the response, the end.
 */
#include "client/call.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "base/clock.h"
#include "base/err.h"
#include "client/internal.h"
#include "proto/status.h"

/* Response header bytes accepted per call (nghttp2 stores but does not enforce the limit). */
#define CALL_HEADERS_MAX (64u << 10)

static void deadline_fired(struct ring_timer *timer);
static void call_task(struct ring_task *task);
static void call_check_finish(struct client_call *c);
static void drain_inbox(struct client_call *c);

/* ---- setup and start ---- */

void client_call_init(struct client_call *c, struct client *cl)
{
    memset(c, 0, sizeof(*c));
    c->cl = cl;
    base_list_init(&c->link);
    base_list_init(&c->out);
    ring_owner_init(&c->owner);
    ring_timer_init(&c->deadline, deadline_fired, c);
    ring_task_init(&c->task, call_task);
}

void client_call_deinit(struct client_call *c)
{
    if (!c) return;
    ASSERT(!c->active);
    free(c->inbox);
    c->inbox = NULL;
    c->inbox_size = 0;
}

static nghttp2_nv make_nv(const char *name, const char *value)
{
    nghttp2_nv nv = {
        .name = (uint8_t *)(uintptr_t)name,
        .value = (uint8_t *)(uintptr_t)value,
        .namelen = strlen(name),
        .valuelen = strlen(value),
        .flags = NGHTTP2_NV_FLAG_NONE,
    };
    return nv;
}

/* grpc-timeout: at most 8 digits (PROTOCOL-HTTP2.md); milliseconds, else whole seconds. */
static void format_timeout(uint32_t ms, char *out, size_t size)
{
    if (ms <= 99999999u) {
        (void)snprintf(out, size, "%um", ms);
    } else {
        (void)snprintf(out, size, "%uS", (ms + 999u) / 1000u);
    }
}

static void reset_for_start(struct client_call *c, const struct client_call_options *o,
                            const struct client_call_ops *ops)
{
    memset(&c->result, 0, sizeof(c->result));
    memset(&c->timing, 0, sizeof(c->timing));
    c->result.status = -1;
    c->timing.start_ns = base_clock_now_ns();
    c->user = o->user;
    c->ops = ops;
    c->done = o->done;
    c->deadline_ms = o->deadline_ms;
    proto_deframer_init(&c->deframer, CLIENT_RESPONSE_MAX);
    c->inbox_len = 0;
    c->payload_left = 0;
    c->stream_id = 0;
    c->segs_in_send = 0;
    c->rst_code = 0;
    c->local_err = 0;
    c->http_status = 0;
    c->grpc_status = -1;
    c->header_bytes = 0;
    c->out_bytes = 0;
    c->out_done = false;
    c->deferred = false;
    c->stream_closed = false;
    c->stream_counted = false;
    c->ended = false;
    c->paused = false;
    c->finishing = false;
    c->content_grpc = false;
    ring_owner_init(&c->owner);
}

int client_call_start(struct client_call *c, struct client_conn *conn, const char *path,
                      const struct client_call_options *o, const struct client_call_ops *ops)
{
    ASSERT(!c->active);
    ASSERT(o->done);
    ASSERT(c->cl == conn->cl);
    bool empty = base_list_is_empty(&c->out);
    ASSERT(empty);
    reset_for_start(c, o, ops);
    char timeout[16];
    nghttp2_nv nva[8];
    size_t n = 0;
    nva[n++] = make_nv(":method", "POST");
    nva[n++] = make_nv(":scheme", "http");
    nva[n++] = make_nv(":path", path);
    nva[n++] = make_nv(":authority", conn->authority);
    nva[n++] = make_nv("content-type", "application/grpc");
    nva[n++] = make_nv("te", "trailers");
    nva[n++] = make_nv("user-agent", CLIENT_USER_AGENT);
    if (o->deadline_ms > 0) {
        format_timeout(o->deadline_ms, timeout, sizeof(timeout));
        nva[n++] = make_nv("grpc-timeout", timeout);
    }
    int32_t id = client_conn_submit(conn, c, nva, n);
    if (id < 0) return id;
    c->stream_id = id;
    c->conn = conn;
    c->active = true;
    client_conn_attach(conn, c);
    base_counter_inc(&c->cl->counters.calls);
    base_counter_inc(&c->cl->counters.calls_started);
    if (o->deadline_ms > 0) {
        int rc = ring_timer_start(c->cl->core, &c->deadline, &c->owner, o->deadline_ms);
        if (rc < 0) client_call_fail(c, rc, "no ring op left for the deadline timer");
    }
    return 0;
}

/* ---- the request ---- */

void client_call_queue(struct client_call *c, struct client_seg *seg)
{
    ASSERT(c->active);
    /* Typed calls queue only while the stream can still end normally. */
    ASSERT(!c->ended);
    seg->call = c;
    seg->piece.send_gen = 0;
    base_list_add_tail(&c->out, &seg->piece.link);
    c->out_bytes += seg->piece.len;
    c->timing.bytes_sent += seg->piece.len;
    base_counter_add(&c->cl->counters.bytes_sent, seg->piece.len);
    client_conn_resume_data(c->conn, c);
}

void client_call_close_send(struct client_call *c)
{
    ASSERT(c->active);
    c->out_done = true;
    if (!c->ended) client_conn_resume_data(c->conn, c);
}

void client_call_seg_release(struct client_seg *seg)
{
    struct client_call *c = seg->call;
    ASSERT(c->segs_in_send > 0);
    c->segs_in_send--;
    base_counter_dec(&c->cl->counters.segs_in_send);
    if (c->ops->on_seg_done) c->ops->on_seg_done(c, seg);
    call_check_finish(c);
}

/* ---- the response ---- */

static void drop_inbox(struct client_call *c)
{
    if (c->conn) client_conn_consume(c->conn, c, c->inbox_len);
    c->inbox_len = 0;
    c->payload_left = 0;
}

static void set_paused(struct client_call *c, bool paused)
{
    if (c->paused == paused) return;
    c->paused = paused;
    if (c->conn) client_conn_paused(c->conn, paused ? 1 : -1);
}

/* The gRPC status of a local failure <err>. */
static int local_status(int err)
{
    switch (err) {
    case -ETIMEDOUT:
        return PROTO_STATUS_DEADLINE_EXCEEDED;
    case -ECANCELED:
        return PROTO_STATUS_CANCELLED;
    case -EBADMSG:
    case -EILSEQ:
        return PROTO_STATUS_DATA_LOSS;
    case -EPROTO:
        return PROTO_STATUS_INTERNAL;
    default:
        return PROTO_STATUS_UNAVAILABLE;
    }
}

void client_call_fail(struct client_call *c, int err, const char *msg)
{
    ASSERT(err < 0);
    if (!c->active || client_call_is_over(c)) return;
    c->local_err = err;
    c->result.status = local_status(err);
    (void)snprintf(c->result.message, sizeof(c->result.message), "%s", msg);
    drop_inbox(c);
    set_paused(c, false);
    if (!c->stream_closed && c->conn) {
        /* The server cancels its work for the stream: disk reads, an upload (nothing kept). */
        base_counter_inc(&c->cl->counters.cancels);
        client_conn_reset(c->conn, c, NGHTTP2_CANCEL);
    }
    /* Finished from the call's task: never inside the typed call's hook that failed it. */
    ring_task_defer(c->cl->core, &c->task);
}

void client_call_cancel(struct client_call *c)
{
    client_call_fail(c, -ECANCELED, "cancelled by the caller");
}

static void deadline_fired(struct ring_timer *timer)
{
    struct client_call *c = timer->ctx;
    if (client_call_is_over(c)) return;
    base_counter_inc(&c->cl->counters.deadlines);
    char msg[64];
    (void)snprintf(msg, sizeof(msg), "deadline of %u ms exceeded", c->deadline_ms);
    client_call_fail(c, -ETIMEDOUT, msg);
}

static bool bytes_are(const uint8_t *v, size_t len, const char *want)
{
    size_t n = strlen(want);
    return len == n && memcmp(v, want, n) == 0;
}

static int hex_value(uint8_t ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

void client_message_printable(char *text)
{
    /* Bounded by the string's length. */
    for (char *p = text; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '\r' || ch == '\n' || ch == '\t') {
            *p = ' ';
        } else if (ch < 0x20 || ch == 0x7f) {
            *p = '?';
        }
    }
}

/*
 * grpc-message is percent-encoded (PROTOCOL-HTTP2.md); a bad escape is kept as it is. What it
 * decodes to is made printable: a server's %0A or %1B must not forge lines or drive the
 * terminal of whoever reads the message (the CLI prints it on stderr, bench in its report).
 */
static void decode_message(const uint8_t *v, size_t len, char *out, size_t size)
{
    size_t o = 0;
    /* Bounded by <len> and <size>. */
    for (size_t i = 0; i < len && o + 1 < size; i++) {
        int hi = i + 2 < len && v[i] == '%' ? hex_value(v[i + 1]) : -1;
        int lo = hi >= 0 ? hex_value(v[i + 2]) : -1;
        if (lo >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = (char)v[i];
        }
    }
    out[o] = '\0';
    client_message_printable(out);
}

/* Parses a small decimal number; -1 when <v> is not one. */
static int parse_small(const uint8_t *v, size_t len)
{
    if (len == 0 || len > 4) return -1;
    int n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

void client_call_on_header(struct client_call *c, const uint8_t *name, size_t namelen,
                           const uint8_t *value, size_t valuelen)
{
    c->header_bytes += (uint32_t)(namelen + valuelen + 32);
    if (c->header_bytes > CALL_HEADERS_MAX) {
        client_call_fail(c, -EPROTO, "response headers over 64 KiB");
        return;
    }
    if (bytes_are(name, namelen, ":status")) {
        c->http_status = parse_small(value, valuelen);
    } else if (bytes_are(name, namelen, "content-type")) {
        static const char grpc[] = "application/grpc";
        c->content_grpc =
            valuelen >= sizeof(grpc) - 1 && memcmp(value, grpc, sizeof(grpc) - 1) == 0;
    } else if (bytes_are(name, namelen, "grpc-status")) {
        int s = parse_small(value, valuelen);
        c->grpc_status = s >= 0 && s < PROTO_STATUS_COUNT ? s : PROTO_STATUS_UNKNOWN;
    } else if (bytes_are(name, namelen, "grpc-message") && c->local_err == 0) {
        decode_message(value, valuelen, c->result.message, sizeof(c->result.message));
    }
}

void client_call_on_response(struct client_call *c)
{
    if (c->timing.headers_ns == 0) c->timing.headers_ns = base_clock_now_ns();
}

static void fail_framing(struct client_call *c, int rc)
{
    client_call_fail(c, -EPROTO,
                     rc == -EMSGSIZE ? "response message over the size limit"
                                     : "malformed gRPC framing in the response");
}

/* Runs the typed call's hook result <rc>: false (and the call failed) when it is an error. */
static bool hook_ok(struct client_call *c, int rc)
{
    if (rc >= 0) return true;
    if (!client_call_is_over(c)) client_call_fail(c, rc, base_err_str(rc));
    return false;
}

/* Offers <p>/<len> to the typed call; returns the bytes taken (fewer after a pause). */
static size_t call_feed(struct client_call *c, const uint8_t *p, size_t len)
{
    size_t off = 0;
    /* Bounded: each step takes bytes or reports an event (proto/frame.h): <= 3 * len + 8. */
    for (size_t step = 0; step < 3 * len + 8; step++) {
        if (c->paused || c->local_err) break;
        if (c->payload_left > 0) {
            size_t n = c->payload_left < len - off ? c->payload_left : len - off;
            if (n == 0) break;
            int64_t k = c->ops->on_msg_data(c, p + off, n);
            if (!hook_ok(c, (int)(k < 0 ? k : 0))) return len;
            ASSERT((size_t)k <= n);
            off += (size_t)k;
            c->payload_left -= (uint32_t)k;
            if ((size_t)k < n) break;
            continue;
        }
        struct proto_frame_event ev;
        int rc = proto_deframer_feed(&c->deframer, p + off, len - off, &ev);
        if (rc < 0) {
            fail_framing(c, rc);
            return len;
        }
        if (ev.type == PROTO_FRAME_DATA) {
            /* Delivered from <off> by the branch above; the deframer already counted them. */
            c->payload_left = (uint32_t)ev.len;
            continue;
        }
        off += (size_t)rc;
        if (ev.type == PROTO_FRAME_NEED_MORE) break;
        rc = ev.type == PROTO_FRAME_BEGIN ? c->ops->on_msg_begin(c, ev.msg_len)
                                          : c->ops->on_msg_end(c);
        if (!hook_ok(c, rc)) return len;
    }
    return off;
}

/* Keeps <p>/<n> until the call takes it; fails the call past the stream window. */
static void inbox_hold(struct client_call *c, const uint8_t *p, size_t n)
{
    size_t want = c->conn ? c->conn->opts.stream_window : 0;
    if (c->inbox_size < want) {
        uint8_t *m = realloc(c->inbox, want);
        if (m) {
            c->inbox = m;
            c->inbox_size = want;
        }
    }
    if (c->inbox_len + n > c->inbox_size) {
        if (c->conn) client_conn_consume(c->conn, c, n);
        client_call_fail(c, -EPROTO, "server sent past the flow-control window");
        return;
    }
    memcpy(c->inbox + c->inbox_len, p, n);
    c->inbox_len += n;
}

void client_call_on_data(struct client_call *c, const uint8_t *p, size_t len)
{
    if (c->timing.first_byte_ns == 0) c->timing.first_byte_ns = base_clock_now_ns();
    c->timing.bytes_received += len;
    base_counter_add(&c->cl->counters.bytes_received, len);
    if (c->local_err) {
        client_conn_consume(c->conn, c, len);
        return;
    }
    if (c->paused || c->inbox_len > 0) {
        /* Order: what is held goes first; it is offered again at once unless paused. */
        inbox_hold(c, p, len);
        drain_inbox(c);
        return;
    }
    size_t used = call_feed(c, p, len);
    client_conn_consume(c->conn, c, used);
    if (used < len && !c->local_err) inbox_hold(c, p + used, len - used);
}

void client_call_pause(struct client_call *c)
{
    if (!c->active || c->local_err) return;
    set_paused(c, true);
}

void client_call_resume(struct client_call *c)
{
    if (!c->paused) return;
    set_paused(c, false);
    ring_task_defer(c->cl->core, &c->task);
}

/* Offers the held bytes again; the window reopens for what the typed call took. */
static void drain_inbox(struct client_call *c)
{
    /* Also with nothing held: a message end the deframer has not reported yet goes out. */
    if (c->paused || c->local_err) return;
    static const uint8_t nothing[1];
    size_t used = call_feed(c, c->inbox_len > 0 ? c->inbox : nothing, c->inbox_len);
    if (c->local_err || used == 0) return; /* a failure dropped the inbox */
    if (c->conn) client_conn_consume(c->conn, c, used);
    memmove(c->inbox, c->inbox + used, c->inbox_len - used);
    c->inbox_len -= used;
}

/* After a resume: offers the held bytes, then finishes if the stream is over. */
static void call_task(struct ring_task *task)
{
    struct client_call *c = BASE_CONTAINER_OF(task, struct client_call, task);
    if (!c->active) return;
    drain_inbox(c);
    call_check_finish(c);
}

/* ---- the end ---- */

static void end_stream(struct client_call *c)
{
    if (c->ended) return;
    c->ended = true;
    c->timing.end_ns = base_clock_now_ns();
    struct base_list *node;
    /* Bounded by the queue's length. */
    while ((node = c->out.next) != &c->out) {
        client_conn_drop_seg(c->conn, BASE_CONTAINER_OF(node, struct client_seg, piece.link));
    }
    /* The task offers what the deframer still holds (a message end) before finishing. */
    ring_task_defer(c->cl->core, &c->task);
}

void client_call_on_stream_close(struct client_call *c, uint32_t error_code)
{
    if (c->stream_closed) return;
    c->stream_closed = true;
    c->rst_code = error_code;
    end_stream(c);
}

void client_call_on_conn_gone(struct client_call *c, int reason)
{
    c->stream_closed = true;
    c->stream_counted = false;
    /* A call whose status arrived is complete even if its stream never formally closed. */
    if (!c->local_err && c->grpc_status < 0) {
        char msg[CLIENT_MESSAGE_MAX];
        if (reason == -ETIMEDOUT) {
            (void)snprintf(msg, sizeof(msg), "no progress from the server for %u ms",
                           c->conn->opts.io_timeout_ms);
        } else if (reason == 0) {
            (void)snprintf(msg, sizeof(msg), "connection closed");
        } else if (reason == -EPROTONOSUPPORT) {
            (void)snprintf(msg, sizeof(msg),
                           "the server answered in HTTP/1.x, not HTTP/2 (gRPC): name the "
                           "HOST:PORT of a ringcas or other REAPI server");
        } else {
            (void)snprintf(msg, sizeof(msg), "connection failed: %s", base_err_str(reason));
        }
        c->local_err = reason == 0 ? -ECANCELED : reason;
        c->result.status = local_status(c->local_err);
        (void)snprintf(c->result.message, sizeof(c->result.message), "%s", msg);
        c->inbox_len = 0;
        c->payload_left = 0;
        set_paused(c, false);
    }
    end_stream(c);
}

/* The status an HTTP response without grpc-status means (grpc http-grpc-status-mapping.md). */
static int http_status_grpc(int http)
{
    switch (http) {
    case 400:
        return PROTO_STATUS_INTERNAL;
    case 401:
        return PROTO_STATUS_UNAUTHENTICATED;
    case 403:
        return PROTO_STATUS_PERMISSION_DENIED;
    case 404:
        return PROTO_STATUS_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return PROTO_STATUS_UNAVAILABLE;
    default:
        return PROTO_STATUS_UNKNOWN;
    }
}

static void decide(struct client_call *c, int status, const char *msg)
{
    c->result.status = status;
    c->result.err = client_status_errno(status);
    if (msg) (void)snprintf(c->result.message, sizeof(c->result.message), "%s", msg);
}

/* Sets c->result from what happened. */
static void call_decide(struct client_call *c)
{
    if (c->local_err) {
        c->result.err = c->local_err;
        return;
    }
    if (c->grpc_status >= 0) {
        decide(c, c->grpc_status, NULL);
        c->result.status_received = true;
        if (c->grpc_status == PROTO_STATUS_OK && !proto_deframer_is_idle(&c->deframer)) {
            decide(c, PROTO_STATUS_INTERNAL, "response ended inside a message");
            c->result.err = -EPROTO;
        }
        return;
    }
    char msg[64];
    if (c->http_status != 0 && c->http_status != 200) {
        (void)snprintf(msg, sizeof(msg), "HTTP status %d without grpc-status", c->http_status);
        decide(c, http_status_grpc(c->http_status), msg);
        return;
    }
    if (c->rst_code == NGHTTP2_REFUSED_STREAM) {
        decide(c, PROTO_STATUS_UNAVAILABLE, "server refused the stream");
        return;
    }
    if (c->rst_code == NGHTTP2_CANCEL) {
        decide(c, PROTO_STATUS_CANCELLED, "server cancelled the stream");
        return;
    }
    (void)snprintf(msg, sizeof(msg), "stream ended without grpc-status (HTTP/2 error %u)",
                   c->rst_code);
    decide(c, PROTO_STATUS_INTERNAL, msg);
    c->result.err = -EPROTO;
}

static void call_idle(struct ring_core *core, void *ctx)
{
    (void)core;
    struct client_call *c = ctx;
    ring_owner_deinit(&c->owner);
    ASSERT(c->segs_in_send == 0);
    c->active = false;
    if (c->conn) client_conn_detach(c->conn, c);
    c->conn = NULL;
    base_counter_dec(&c->cl->counters.calls);
    c->done(c);
    /* <c> may be restarted or freed now. */
}

static void call_check_finish(struct client_call *c)
{
    if (!c->ended || c->finishing || c->segs_in_send > 0) return;
    /* Held bytes of a stream that ended well wait for the typed call to take them. */
    if (!c->local_err && (c->inbox_len > 0 || c->paused)) return;
    c->finishing = true;
    set_paused(c, false);
    ring_task_cancel(&c->task);
    call_decide(c);
    if (c->ops->on_end) c->ops->on_end(c);
    if (c->result.err) base_counter_inc(&c->cl->counters.calls_failed);
    if (ring_timer_is_armed(&c->deadline)) ring_timer_stop(c->cl->core, &c->deadline);
    ring_owner_close(c->cl->core, &c->owner, call_idle, c);
}

int client_status_errno(int status)
{
    static const int map[PROTO_STATUS_COUNT] = {
        [PROTO_STATUS_OK] = 0,
        [PROTO_STATUS_CANCELLED] = -ECANCELED,
        [PROTO_STATUS_UNKNOWN] = -EIO,
        [PROTO_STATUS_INVALID_ARGUMENT] = -EINVAL,
        [PROTO_STATUS_DEADLINE_EXCEEDED] = -ETIMEDOUT,
        [PROTO_STATUS_NOT_FOUND] = -ENOENT,
        [PROTO_STATUS_ALREADY_EXISTS] = -EEXIST,
        [PROTO_STATUS_PERMISSION_DENIED] = -EACCES,
        [PROTO_STATUS_RESOURCE_EXHAUSTED] = -EAGAIN,
        [PROTO_STATUS_FAILED_PRECONDITION] = -EPERM,
        [PROTO_STATUS_ABORTED] = -ECONNABORTED,
        [PROTO_STATUS_OUT_OF_RANGE] = -ERANGE,
        [PROTO_STATUS_UNIMPLEMENTED] = -ENOSYS,
        [PROTO_STATUS_INTERNAL] = -EIO,
        [PROTO_STATUS_UNAVAILABLE] = -ECONNREFUSED,
        [PROTO_STATUS_DATA_LOSS] = -EBADMSG,
        [PROTO_STATUS_UNAUTHENTICATED] = -EACCES,
    };
    if (status < 0 || status >= PROTO_STATUS_COUNT) return -EIO;
    return map[status];
}

const char *client_err_str(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case -ENOENT:
        return "not found";
    case -ETIMEDOUT:
        return "timed out";
    case -ECANCELED:
        return "cancelled";
    case -ECONNREFUSED:
        return "server unavailable";
    case -EILSEQ:
        return "content changed while uploading";
    case -EBADMSG:
        return "data does not match its digest";
    case -EPROTO:
        return "protocol error";
    case -EAGAIN:
        return "server busy (resource exhausted)";
    case -ENOSYS:
        return "not implemented by the server";
    default:
        return base_err_str(err);
    }
}
