/*
 * Client HTTP/2 connections: connect, one nghttp2 client session per connection fed from
 * the ring's receive buffers, one send in flight built from nghttp2's frames (copied) and
 * the calls' request pieces (iovecs, NO_COPY).
 *
 * Invariants:
 * - nghttp2 is never re-entered: mem_recv and mem_send run only from ring callbacks and the
 *   deferred flush, never from inside an nghttp2 callback (in_session);
 * - the gather describes exactly the send being built or in flight, and begins a new one
 *   only after that send completed (on_sent) or the socket closed;
 * - a seg whose bytes are in the send in flight (ring_gather_piece_is_in_flight) is released
 *   only after that send completed;
 * - on_close runs once, after the socket's last op, every call's done, and the session's
 *   deletion.
 *
 * Sections: setup, receive, the send path, nghttp2 callbacks, calls' requests, close.
 */
#include "client/conn.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "base/clock.h"
#include "base/log.h"
#include "client/internal.h"
#include "ring/buf.h"
#include "ring/gather.h"

/* Room kept free before each nghttp2_session_mem_send (its largest chunk is one frame). */
#define CONN_CHUNK_MAX ((16u << 10) + 64u)
/* A flush stops adding DATA past this many bytes (the next flush continues). */
#define CONN_SEND_MAX (2u << 20)
/* A piece shorter than this is copied instead of taking an iovec. */
#define CONN_COPY_MAX 512u
/* Pieces one DATA frame may span. */
#define CONN_FRAME_SEGS_MAX 24u
/* SETTINGS_MAX_FRAME_SIZE we accept, and SETTINGS_MAX_HEADER_LIST_SIZE we announce. */
#define CONN_MAX_FRAME   (64u << 10)
#define CONN_HEADERS_MAX (64u << 10)

/* HTTP/2 frames carry a 9-byte header (RFC 9113 §4.1). */
#define CONN_FRAME_HEADER_SIZE 9u

RING_GATHER_LIMITS_DEFINE(gather_limits, CONN_CHUNK_MAX, CONN_SEND_MAX, CONN_COPY_MAX,
                          CONN_FRAME_HEADER_SIZE, CONN_FRAME_SEGS_MAX);

static void conn_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len);
static void conn_on_sent(struct ring_conn *rc);
static void conn_on_close(struct ring_conn *rc, int reason);
static bool conn_is_busy(const struct ring_conn *rc);
static void flush_task(struct ring_task *task);
static void close_task(struct ring_task *task);
static void schedule_flush(struct client_conn *conn);
static void conn_closed(struct client_conn *conn, int reason);

static const struct ring_conn_ops conn_ops = {
    .on_recv = conn_on_recv,
    .on_sent = conn_on_sent,
    .on_close = conn_on_close,
    .is_busy = conn_is_busy,
    .on_drain = NULL,
};

STATIC_ASSERT(offsetof(struct client_conn, rc) == 0, "ring_conn callbacks give the conn back");

static struct client_conn *conn_of(struct ring_conn *rc)
{
    return BASE_CONTAINER_OF(rc, struct client_conn, rc);
}

void client_conn_options_default(struct client_conn_options *opts)
{
    opts->connect_timeout_ms = 10000;
    opts->io_timeout_ms = 30000;
    opts->stream_window = 1u << 20;
    opts->conn_window = 16u << 20;
}

/* ---- setup ---- */

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud);
static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud);
static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *ud);
static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud);
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud);
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *frame, int lib_error,
                             void *ud);
static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *ud);
static ssize_t read_length(nghttp2_session *s, uint8_t frame_type, int32_t stream_id,
                           int32_t session_window, int32_t stream_window, uint32_t max_frame,
                           void *ud);

static void set_callbacks(nghttp2_session_callbacks *cbs)
{
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, send_data);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, read_length);
}

static int session_create(struct client_conn *conn)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) return -ENOMEM;
    set_callbacks(cbs);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return -ENOMEM;
    }
    /* Windows reopen only as calls take the bytes: a paused reader stops the server. */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_mem mem = proto_alloc_nghttp2(&conn->cl->h2_mem);
    nghttp2_session *s;
    int rv = nghttp2_session_client_new3(&s, cbs, conn, opt, &mem);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) return -ENOMEM;
    const nghttp2_settings_entry settings[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, conn->opts.stream_window },
        { NGHTTP2_SETTINGS_MAX_FRAME_SIZE, CONN_MAX_FRAME },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, CONN_HEADERS_MAX },
    };
    rv = nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, settings, ARRAY_LEN(settings));
    if (rv == 0 && conn->opts.conn_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
        /* SETTINGS cannot change the connection window; this queues a WINDOW_UPDATE. */
        rv = nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0,
                                                   (int32_t)conn->opts.conn_window);
    }
    if (rv != 0) {
        nghttp2_session_del(s);
        return -ENOMEM;
    }
    conn->session = s;
    return 0;
}

static int conn_setup(struct client_conn *conn, struct client *cl,
                      const struct client_conn_options *opts, client_conn_close_fn *on_close)
{
    ASSERT(conn->state == CLIENT_CONN_IDLE);
    ASSERT(opts->connect_timeout_ms > 0 && opts->io_timeout_ms > 0);
    ASSERT(opts->stream_window > 0 && opts->stream_window <= NGHTTP2_MAX_WINDOW_SIZE);
    ASSERT(opts->conn_window > 0 && opts->conn_window <= NGHTTP2_MAX_WINDOW_SIZE);
    ASSERT(on_close);
    void *user = conn->user;
    /* Not the gather's buffers: 33 KiB that every send overwrites anyway. */
    memset(conn, 0, offsetof(struct client_conn, gather));
    conn->user = user;
    conn->cl = cl;
    conn->opts = *opts;
    conn->on_close = on_close;
    base_list_init(&conn->calls);
    base_list_init(&conn->sent);
    ring_gather_init(&conn->gather, &gather_limits);
    ring_task_init(&conn->flush_task, flush_task);
    ring_task_init(&conn->close_task, close_task);
    ring_owner_init(&conn->connect.owner);
    int rc = session_create(conn);
    if (rc < 0) return rc;
    base_counter_inc(&cl->counters.conns);
    return 0;
}

/* The socket is connected: hand it to a ring_conn and start the session. */
static void go_live(struct client_conn *conn, int fd)
{
    struct ring_core *core = conn->cl->core;
    uint32_t t = conn->opts.io_timeout_ms;
    ring_conn_init(&conn->rc, core, fd, &conn_ops, t, t);
    conn->ring_live = true;
    conn->state = CLIENT_CONN_OPEN;
    int rc = ring_conn_recv_start(&conn->rc);
    if (rc < 0) {
        conn->state = CLIENT_CONN_CLOSING;
        ring_conn_close(&conn->rc, rc);
        return;
    }
    schedule_flush(conn);
}

static void connect_done(struct client_connect *cc, int res)
{
    struct client_conn *conn = BASE_CONTAINER_OF(cc, struct client_conn, connect);
    if (res >= 0 && conn->state == CLIENT_CONN_CONNECTING) {
        go_live(conn, res);
        return;
    }
    if (res >= 0) (void)close(res); /* closed while the connect won the race */
    if (res == -ETIMEDOUT) base_counter_inc(&conn->cl->counters.io_timeouts);
    conn->state = CLIENT_CONN_CLOSING;
    conn_closed(conn, res == -ECANCELED ? 0 : res);
}

int client_conn_open(struct client_conn *conn, struct client *cl, const struct client_addr *addr,
                     const struct client_conn_options *opts, client_conn_close_fn *on_close)
{
    int rc = conn_setup(conn, cl, opts, on_close);
    if (rc < 0) return rc;
    (void)snprintf(conn->authority, sizeof(conn->authority), "%s", addr->authority);
    rc = client_connect_start(&conn->connect, cl->core, addr, opts->connect_timeout_ms,
                              connect_done);
    if (rc < 0) {
        nghttp2_session_del(conn->session);
        conn->session = NULL;
        base_counter_dec(&cl->counters.conns);
        return rc;
    }
    conn->state = CLIENT_CONN_CONNECTING;
    return 0;
}

int client_conn_adopt(struct client_conn *conn, struct client *cl, int fd,
                      const struct client_conn_options *opts, client_conn_close_fn *on_close)
{
    ASSERT(fd >= 0);
    int rc = conn_setup(conn, cl, opts, on_close);
    if (rc < 0) return rc;
    (void)snprintf(conn->authority, sizeof(conn->authority), "localhost");
    go_live(conn, fd);
    return 0;
}

bool client_conn_is_usable(const struct client_conn *conn)
{
    bool up = conn->state == CLIENT_CONN_CONNECTING || conn->state == CLIENT_CONN_OPEN;
    return up && !conn->goaway && conn->session;
}

/* ---- receive ---- */

/* Closes the socket after a protocol error; calls fail with -EPROTO. */
static void fail(struct client_conn *conn, int reason, const char *why)
{
    if (conn->state != CLIENT_CONN_OPEN) return;
    LOG_DEBUG("client connection fd %d: %s", conn->rc.fd, why);
    conn->state = CLIENT_CONN_CLOSING;
    ring_conn_close(&conn->rc, reason);
}

static void conn_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len)
{
    struct client_conn *conn = conn_of(rc);
    if (len == 0) {
        /* The server closed its side: whatever was still running cannot finish. */
        fail(conn, conn->calls_count > 0 ? -ECONNRESET : 0, "server closed the connection");
        return;
    }
    const uint8_t *data = ring_buf_data(rc->core, bid);
    if (!conn->received && len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        /* An HTTP/1.x server on the port (another service, a proxy without h2c) answered our
         * preface with a status line. nghttp2 reads it as an oversized frame, and the user
         * saw only "connection closed" or a reset. No HTTP/2 frame begins so: its first
         * bytes would be a 4.5 MiB length, over any SETTINGS_MAX_FRAME_SIZE we allow. */
        ring_buf_unref(rc->core, bid);
        fail(conn, -EPROTONOSUPPORT, "the server answered in HTTP/1.x");
        return;
    }
    conn->received = true;
    ASSERT(!conn->in_session);
    conn->in_session = true;
    ssize_t rv = nghttp2_session_mem_recv(conn->session, data, len);
    conn->in_session = false;
    ring_buf_unref(rc->core, bid);
    if (rv < 0) {
        fail(conn, -EPROTO, nghttp2_strerror((int)rv));
        return;
    }
    /* No callback pauses (flow control is the backpressure), so everything was taken. */
    ASSERT((size_t)rv == len);
    schedule_flush(conn);
}

static bool conn_is_busy(const struct ring_conn *rc)
{
    const struct client_conn *conn = (const struct client_conn *)(const void *)rc;
    /* No call waits for the server, or ours hold it back: a quiet server is no failure. */
    if (conn->calls_count == 0 || conn->paused_count > 0) return true;
    /*
     * The receive that timed out may have been armed while the connection was idle, before
     * the first call started: then the server has not had a full timeout to answer yet.
     */
    uint64_t waited_ns = base_clock_now_ns() - conn->busy_since_ns;
    return waited_ns < (uint64_t)conn->opts.io_timeout_ms * BASE_NS_PER_MS;
}

void client_conn_paused(struct client_conn *conn, int delta)
{
    if (delta > 0) {
        conn->paused_count++;
    } else {
        ASSERT(conn->paused_count > 0);
        conn->paused_count--;
    }
}

/* ---- the send path ---- */

static void schedule_flush(struct client_conn *conn)
{
    if (conn->state == CLIENT_CONN_OPEN) ring_task_defer(conn->cl->core, &conn->flush_task);
}

/* Hands ring_gather_fill nghttp2's next chunk of serialized frames. */
static ssize_t pull(void *ctx, const uint8_t **chunk)
{
    struct client_conn *conn = ctx;
    conn->in_session = true;
    ssize_t n = nghttp2_session_mem_send(conn->session, chunk);
    conn->in_session = false;
    return n < 0 ? -EPROTO : n;
}

static void flush(struct client_conn *conn)
{
    if (conn->state != CLIENT_CONN_OPEN || ring_conn_is_sending(&conn->rc)) return;
    ASSERT(!conn->in_session);
    ring_gather_begin(&conn->gather);
    int rc = ring_gather_fill(&conn->gather, pull, conn);
    if (rc < 0) {
        fail(conn, rc, "nghttp2_session_mem_send failed");
        return;
    }
    if (ring_gather_is_empty(&conn->gather)) {
        /* After a GOAWAY with every stream done the session has nothing left to do. */
        if (!nghttp2_session_want_read(conn->session) &&
            !nghttp2_session_want_write(conn->session)) {
            fail(conn, 0, "session over");
        }
        return;
    }
    rc = ring_gather_send(&conn->gather, &conn->rc);
    if (rc < 0) fail(conn, rc, "ring_conn_send failed");
}

static void flush_task(struct ring_task *task)
{
    flush(BASE_CONTAINER_OF(task, struct client_conn, flush_task));
}

/* Releases the segs whose last bytes were in the send that completed (or never will). */
static void release_sent(struct client_conn *conn)
{
    struct base_list *node;
    /* Bounded by the segs one send holds. */
    while ((node = base_list_pop_head(&conn->sent))) {
        client_call_seg_release(BASE_CONTAINER_OF(node, struct client_seg, piece.link));
    }
}

static void conn_on_sent(struct ring_conn *rc)
{
    struct client_conn *conn = conn_of(rc);
    ring_gather_send_done(&conn->gather);
    release_sent(conn);
    flush(conn);
}

/* nghttp2's callback type fixes the parameter list (and <buf>'s constness). */
// NOLINTNEXTLINE(readability-function-size,readability-non-const-parameter)
static ssize_t provider_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    (void)s;
    (void)stream_id;
    (void)buf;
    struct client_conn *conn = ud;
    struct client_call *c = source->ptr;
    if (c->out_bytes > 0) {
        /* Sent by send_data from the segs themselves, across few enough of them. */
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        return (ssize_t)ring_gather_frame_length(&conn->gather, &c->out, length);
    }
    if (c->out_done) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    c->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
}

static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *ud)
{
    (void)s;
    struct client_conn *conn = ud;
    struct client_call *c = source->ptr;
    ASSERT(frame->data.padlen == 0); /* no select_padding callback: never padded */
    ASSERT(length <= c->out_bytes);
    /* The frame waits for the next send when this one is full; an empty one always has room. */
    int moved = ring_gather_frame(&conn->gather, framehd, CONN_FRAME_HEADER_SIZE, &c->out, length,
                                  &conn->sent);
    if (moved < 0) return NGHTTP2_ERR_WOULDBLOCK;
    c->out_bytes -= length;
    c->segs_in_send += (uint32_t)moved;
    base_counter_add(&conn->cl->counters.segs_in_send, (uint64_t)moved);
    return 0;
}

/* The longest DATA frame: the windows and the server's SETTINGS_MAX_FRAME_SIZE. */
/* nghttp2's callback type fixes the parameter list. */
// NOLINTNEXTLINE(readability-function-size)
static ssize_t read_length(nghttp2_session *s, uint8_t frame_type, int32_t stream_id,
                           int32_t session_window, int32_t stream_window, uint32_t max_frame,
                           void *ud)
{
    (void)s;
    (void)frame_type;
    (void)stream_id;
    (void)ud;
    int64_t n = session_window < stream_window ? session_window : stream_window;
    if ((int64_t)max_frame < n) n = max_frame;
    return n > 0 ? (ssize_t)n : 1;
}

/* ---- nghttp2 callbacks ---- */

/* The call of <stream_id>, checked against the call's own idea of its stream. */
static struct client_call *call_of(nghttp2_session *s, int32_t stream_id)
{
    struct client_call *c = nghttp2_session_get_stream_user_data(s, stream_id);
    if (c && (c->stream_id != stream_id || !c->active)) return NULL;
    return c;
}

/* nghttp2's callback type fixes the parameter list. */
// NOLINTNEXTLINE(readability-function-size)
static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    struct client_call *c = call_of(s, frame->hd.stream_id);
    if (!c) return 0;
    client_call_on_header(c, name, namelen, value, valuelen);
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct client_conn *conn = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        /* Streams past last_stream_id are closed by nghttp2 (REFUSED_STREAM). */
        conn->goaway = true;
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    int32_t id = frame->hd.stream_id;
    struct client_call *c = call_of(s, id);
    if (!c) return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) client_call_on_response(c);
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
        !nghttp2_session_get_stream_local_close(s, id)) {
        /*
         * The server ended the call while the request was still going (REAPI: a Write of a
         * blob it already has): stop sending (RFC 9113 §8.1), unless the server's own
         * RST_STREAM already did.
         */
        (void)nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    struct client_call *c = call_of(s, stream_id);
    if (!c) {
        /* A stream nobody reads any more: give the window back at once. */
        (void)nghttp2_session_consume(s, stream_id, len);
        return 0;
    }
    client_call_on_data(c, data, len);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct client_conn *conn = ud;
    struct client_call *c = call_of(s, stream_id);
    if (!c) return 0;
    if (c->stream_counted) base_counter_dec(&conn->cl->counters.streams);
    c->stream_counted = false;
    client_call_on_stream_close(c, error_code);
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct client_conn *conn = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    struct client_call *c = call_of(s, frame->hd.stream_id);
    if (c && !c->stream_counted && !c->stream_closed) {
        c->stream_counted = true;
        base_counter_inc(&conn->cl->counters.streams);
    }
    return 0;
}

/*
 * A request's HEADERS that was never sent (the call was reset before its stream opened, the
 * server's GOAWAY or stream limit refused it): the stream never existed, so no
 * on_stream_close follows; end the call here.
 */
static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *frame, int lib_error,
                             void *ud)
{
    (void)s;
    (void)lib_error;
    struct client_conn *conn = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    BASE_LIST_FOR_EACH(it, &conn->calls)
    {
        struct client_call *c = BASE_CONTAINER_OF(it, struct client_call, link);
        if (c->stream_id == frame->hd.stream_id && !c->stream_closed) {
            client_call_on_stream_close(c, NGHTTP2_REFUSED_STREAM);
            break;
        }
    }
    return 0;
}

/* ---- calls' requests ---- */

int32_t client_conn_submit(struct client_conn *conn, struct client_call *c, const void *nva,
                           size_t nva_len)
{
    if (!client_conn_is_usable(conn)) return -EPIPE;
    nghttp2_data_provider dp = { .source.ptr = c, .read_callback = provider_read };
    int32_t id = nghttp2_submit_request(conn->session, NULL, nva, nva_len, &dp, c);
    if (id < 0) return id == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EPIPE;
    return id;
}

void client_conn_attach(struct client_conn *conn, struct client_call *c)
{
    if (conn->calls_count == 0) conn->busy_since_ns = base_clock_now_ns();
    base_list_add_tail(&conn->calls, &c->link);
    conn->calls_count++;
    schedule_flush(conn);
}

static void maybe_report_close(struct client_conn *conn)
{
    if (conn->state != CLIENT_CONN_CLOSING || conn->ring_live || conn->session) return;
    /* The connect op, if its callback got here, is released before the task runs. */
    if (conn->calls_count > 0) return;
    ring_task_defer(conn->cl->core, &conn->close_task);
}

void client_conn_detach(struct client_conn *conn, struct client_call *c)
{
    ASSERT(conn->calls_count > 0);
    base_list_del(&c->link);
    conn->calls_count--;
    if (conn->session && c->stream_id > 0 && !c->stream_closed) {
        (void)nghttp2_session_set_stream_user_data(conn->session, c->stream_id, NULL);
    }
    maybe_report_close(conn);
}

void client_conn_resume_data(struct client_conn *conn, struct client_call *c)
{
    if (!conn->session || c->stream_closed) return;
    if (c->deferred) {
        c->deferred = false;
        (void)nghttp2_session_resume_data(conn->session, c->stream_id);
    }
    schedule_flush(conn);
}

void client_conn_reset(struct client_conn *conn, struct client_call *c, uint32_t error_code)
{
    if (!conn->session || c->stream_closed) return;
    (void)nghttp2_submit_rst_stream(conn->session, NGHTTP2_FLAG_NONE, c->stream_id, error_code);
    schedule_flush(conn);
}

void client_conn_consume(struct client_conn *conn, struct client_call *c, size_t len)
{
    if (!conn->session || len == 0) return;
    /* Works for closed streams too: then only the connection window reopens. */
    (void)nghttp2_session_consume(conn->session, c->stream_id, len);
    if (!conn->in_session) schedule_flush(conn);
}

void client_conn_drop_seg(struct client_conn *conn, struct client_seg *seg)
{
    struct client_call *c = seg->call;
    base_list_del(&seg->piece.link);
    c->out_bytes -= seg->piece.len;
    if (conn && ring_gather_piece_is_in_flight(&conn->gather, &seg->piece)) {
        /* Some of its bytes are in the send in flight: released when it completes. */
        base_list_add_tail(&conn->sent, &seg->piece.link);
        c->segs_in_send++;
        base_counter_inc(&conn->cl->counters.segs_in_send);
        return;
    }
    if (c->ops->on_seg_done) c->ops->on_seg_done(c, seg);
}

/* ---- close ---- */

void client_conn_close(struct client_conn *conn)
{
    if (conn->state == CLIENT_CONN_CONNECTING) {
        conn->state = CLIENT_CONN_CLOSING;
        client_connect_cancel(&conn->connect);
        return;
    }
    if (conn->state == CLIENT_CONN_OPEN) {
        conn->state = CLIENT_CONN_CLOSING;
        ring_conn_close(&conn->rc, 0);
    }
}

/* No op of the socket is in flight any more: fail the calls and drop the session. */
static void conn_closed(struct client_conn *conn, int reason)
{
    ASSERT(conn->state == CLIENT_CONN_CLOSING);
    conn->close_reason = reason;
    ring_gather_send_done(&conn->gather);
    ring_task_cancel(&conn->flush_task);
    release_sent(conn);
    BASE_LIST_FOR_EACH(it, &conn->calls)
    {
        struct client_call *c = BASE_CONTAINER_OF(it, struct client_call, link);
        if (c->stream_counted) base_counter_dec(&conn->cl->counters.streams);
        client_call_on_conn_gone(c, reason);
    }
    nghttp2_session_del(conn->session);
    conn->session = NULL;
    maybe_report_close(conn);
}

static void conn_on_close(struct ring_conn *rc, int reason)
{
    struct client_conn *conn = conn_of(rc);
    conn->ring_live = false;
    conn->state = CLIENT_CONN_CLOSING;
    if (reason == -ETIMEDOUT) base_counter_inc(&conn->cl->counters.io_timeouts);
    conn_closed(conn, reason);
}

static void close_task(struct ring_task *task)
{
    struct client_conn *conn = BASE_CONTAINER_OF(task, struct client_conn, close_task);
    ASSERT(conn->calls_count == 0);
    bool sent_empty = base_list_is_empty(&conn->sent);
    ASSERT(sent_empty);
    bool connecting = client_connect_is_busy(&conn->connect);
    ASSERT(!connecting);
    conn->state = CLIENT_CONN_IDLE;
    base_counter_dec(&conn->cl->counters.conns);
    conn->on_close(conn, conn->close_reason);
    /* <conn> may be freed or reopened now. */
}
