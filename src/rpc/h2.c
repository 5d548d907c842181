/*
 * HTTP/2 connections: one nghttp2 server session per connection, fed from the ring's receive
 * buffers, written with one send at a time.
 *
 * Invariants:
 * - nghttp2 is never re-entered: mem_recv and mem_send run only from the ring's callbacks and
 *   the deferred flush task, never from inside an nghttp2 callback (in_session);
 * - the gather describes exactly the send being built or in flight, and begins a new one
 *   only when that send completed (on_sent) or the connection closed;
 * - a response piece whose bytes are in the send in flight (ring_gather_piece_is_in_flight)
 *   is released only after that send's completion;
 * - every request byte nghttp2 delivers is consumed exactly once (call.c or here).
 *
 * Sections: memory and setup, receive, the send path, nghttp2 callbacks, transport calls for
 * call.c, drain and close.
 */
#include "rpc/h2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "proto/timeout.h"
#include "ring/buf.h"
#include "ring/conn.h"
#include "ring/gather.h"
#include "ring/timer.h"
#include "rpc/internal.h"

/*
 * Streams whose RST_STREAM we sent are remembered, as many as a client may have open at once:
 * its frames sent before it read the reset still arrive (RFC 9113 §5.1), within a round trip.
 */
#define H2_RESETS RPC_H2_MAX_STREAMS

struct rpc_h2 {
    struct rpc_conn *conn;       /* the connection; conn->proto points back here */
    struct rpc_core *rc;         /* the core's protocol state */
    nghttp2_session *session;    /* the server session */
    struct base_list calls;      /* struct rpc_call.link, attached calls */
    uint32_t calls_count;        /* entries in <calls> */
    struct ring_task flush_task; /* the deferred flush */
    uint16_t cur_bid;            /* buffer being fed to mem_recv, or RING_CONN_NO_BUF */
    bool in_session;             /* inside mem_recv or mem_send */
    bool noticed;                /* drain: GOAWAY(2^31-1) and PING sent, final GOAWAY due */
    bool draining;               /* final GOAWAY sent: close once the last call is done */
    bool peer_eof;               /* the client closed its side: likewise */
    bool close_after_send;       /* a connection error: close once the output is out */
    bool bufs_yielded;           /* receiving paused to leave buffers to others (yield_bufs) */
    uint32_t waiting;            /* calls holding input while they wait (rpc_h2_wait_begin) */
    struct ring_task yield_task; /* checks whether to receive again */
    struct ring_timer notice;    /* sends the final GOAWAY if the PING's ACK is late */
    struct base_list sent;       /* struct rpc_seg whose last bytes are in the send */
    uint64_t data_sent;          /* DATA payload bytes put into sends, all streams */
    uint64_t held_check;         /* the stall check that computed <held> (its time) */
    bool held;                   /* then: the server held this connection's input up */
    uint64_t glitch_tokens;      /* invalid-frame budget, in thousandths of a frame */
    uint64_t glitch_ns;          /* when the budget was last refilled */
    uint64_t reset_tokens;       /* RST_STREAM budget, in thousandths of a frame */
    uint64_t reset_ns;           /* when the budget was last refilled */
    int32_t max_client_sid;      /* the highest stream id the client's HEADERS named */
    int32_t resets[H2_RESETS];   /* streams we reset last, a ring (0: free slot) ... */
    uint32_t resets_next;        /* ... and the slot written next (on_begin_frame) */
    uint32_t scan_skip;          /* input scan: bytes to pass before the next frame header */
    uint8_t scan_head[14];       /* ... the frame header being read, then a PRIORITY frame's
                                    5-byte payload */
    uint8_t scan_have;           /* ... bytes in <scan_head> */
    uint8_t scan_want;           /* ... bytes <scan_head> needs: 9, or 14 for a PRIORITY */
    uint8_t scan_conts;          /* ... CONTINUATION frames in the header block being read */
    int32_t last_sid;            /* the stream call_of found last (0: none) ... */
    struct rpc_call *last_call;  /* ... and its call: a request's callbacks come in a
                                    row, and nghttp2's lookup is a hash probe each */
    struct ring_gather gather;   /* the send: copies of nghttp2's frames and of small
                                    pieces, iovecs of the others */
};

/* The PING after a drain's first GOAWAY: its ACK says the client's earlier streams are in
 * and that it has read the GOAWAY (it opens no more streams). */
static const uint8_t drain_ping[8] = { 'r', 'c', 'd', 'r', 'a', 'i', 'n', '!' };

/* HTTP/2 frames carry a 9-byte header (RFC 9113 §4.1). */
#define H2_FRAME_HEADER_SIZE 9u

RING_GATHER_LIMITS_DEFINE(gather_limits, RPC_H2_CHUNK_MAX, RPC_H2_SEND_MAX, RPC_H2_COPY_MAX,
                          H2_FRAME_HEADER_SIZE, RPC_H2_FRAME_SEGS_MAX);

static void h2_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len);
static void h2_on_sent(struct ring_conn *rc);
static void h2_on_close(struct ring_conn *rc, int reason);
static bool h2_is_busy(const struct ring_conn *rc);
static void h2_on_drain(struct ring_conn *rc);
static bool h2_on_idle(struct ring_conn *rc);
static void flush_task(struct ring_task *task);
static void schedule_flush(struct rpc_h2 *h2);
static void notice_timer_fn(struct ring_timer *timer);
static void final_goaway(struct rpc_h2 *h2);

static const struct ring_conn_ops h2_ops = {
    .on_recv = h2_on_recv,
    .on_sent = h2_on_sent,
    .on_close = h2_on_close,
    .is_busy = h2_is_busy,
    .on_drain = h2_on_drain,
    .on_idle = h2_on_idle,
};

static struct rpc_h2 *h2_of(const struct ring_conn *rc)
{
    return ((const struct rpc_conn *)rc)->proto;
}

static struct ring_core *h2_core(const struct rpc_h2 *h2)
{
    return h2->conn->conn.core;
}

/* A header field for nghttp2, which takes non-const pointers but copies what it is given. */
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

/* ---- memory and setup ---- */

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud);
static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud);
static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud);
static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud);
static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *ud);
static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud);
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud);
static int on_invalid_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, int lib_error,
                                 void *ud);
static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *ud);
static ssize_t read_length(nghttp2_session *s, uint8_t frame_type, int32_t stream_id,
                           int32_t session_window, int32_t stream_window, uint32_t max_frame,
                           void *ud);

static void set_callbacks(nghttp2_session_callbacks *cbs)
{
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame_recv);
    nghttp2_session_callbacks_set_send_data_callback(cbs, send_data);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, read_length);
}

/*
 * Rapid-reset (CVE-2023-44487) and CONTINUATION-flood (CVE-2024-28182) limits: upstream
 * nghttp2 has these from 1.57/1.61; Debian 12's 1.52.0-1+deb12u2 and later backport both, and
 * CMake refuses a library without them (RC_NGHTTP2_* checks in src/rpc/CMakeLists.txt).
 * We enforce both ourselves (on_frame_recv, scan_frames) and give nghttp2 twice the budget,
 * as a backstop that never fires first: past its reset limit nghttp2 says GOAWAY
 * INTERNAL_ERROR, and past its CONTINUATION limit it drops the connection without a GOAWAY;
 * ours say ENHANCE_YOUR_CALM (RFC 9113 §5.4.1: a GOAWAY before the close).
 */
static void set_flood_limits(nghttp2_option *opt)
{
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * (uint64_t)RPC_H2_RESET_BURST,
                                               2 * (uint64_t)RPC_H2_RESET_RATE);
    nghttp2_option_set_max_continuations(opt, 2 * (size_t)RPC_H2_CONTINUATIONS);
}

static int session_create(struct rpc_h2 *h2)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) return -ENOMEM;
    set_callbacks(cbs);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cbs);
        return -ENOMEM;
    }
    /* Windows reopen only as the engine takes the bytes: real backpressure (docs/grpc.md). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    /*
     * Closed streams are kept only to place later RFC 7540 PRIORITY frames in the dependency
     * tree, which gRPC never uses: with SETTINGS_NO_RFC7540_PRIORITIES (RFC 9218 §2.1) below,
     * nghttp2 schedules streams by urgency alone and a closed stream is freed at once.
     */
    nghttp2_option_set_no_closed_streams(opt, 1);
    set_flood_limits(opt);
    nghttp2_mem mem = proto_alloc_nghttp2(&h2->rc->h2_mem);
    int rv = nghttp2_session_server_new3(&h2->session, cbs, h2, opt, &mem);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) return -ENOMEM;
    const nghttp2_settings_entry settings[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, RPC_H2_MAX_STREAMS },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RPC_H2_STREAM_WINDOW },
        { NGHTTP2_SETTINGS_MAX_FRAME_SIZE, RPC_H2_MAX_FRAME },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, RPC_H2_HEADERS_MAX },
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1 },
    };
    rv = nghttp2_submit_settings(h2->session, NGHTTP2_FLAG_NONE, settings, ARRAY_LEN(settings));
    if (rv == 0) {
        /* SETTINGS cannot change the connection window; this sends a WINDOW_UPDATE. */
        rv = nghttp2_session_set_local_window_size(h2->session, NGHTTP2_FLAG_NONE, 0,
                                                   RPC_H2_CONN_WINDOW);
    }
    return rv == 0 ? 0 : -ENOMEM;
}

/* ---- receive ---- */

/* Closes the connection once what nghttp2 queued (a GOAWAY) has been sent. */
static void fail_after_send(struct rpc_h2 *h2, const char *why)
{
    if (h2->close_after_send) return;
    LOG_DEBUG("http2 connection fd %d: %s", h2->conn->conn.fd, why);
    base_counter_inc(&h2->rc->counters.h2_protocol_errors);
    h2->close_after_send = true;
    ring_conn_recv_pause(&h2->conn->conn);
    schedule_flush(h2);
}

/* True when a call holds input in receive buffers that the engine has not taken yet. */
static bool holds_input(const struct rpc_h2 *h2)
{
    BASE_LIST_FOR_EACH(it, &h2->calls)
    {
        const struct rpc_call *c = BASE_CONTAINER_OF(it, const struct rpc_call, link);
        if (c->input_held || !base_list_is_empty(&c->in)) return true;
    }
    return false;
}

bool rpc_h2_is_feeding(const struct rpc_call *c, uint16_t bid)
{
    return c->h2 && bid != RING_CONN_NO_BUF && c->h2->cur_bid == bid;
}

bool rpc_h2_holds_input(const struct rpc_call *c, uint64_t check)
{
    struct rpc_h2 *h2 = c->h2;
    if (!h2) return false;
    /* Once per connection and check: a connection's 128 calls would each walk the others. */
    if (h2->held_check != check) {
        h2->held_check = check;
        h2->held = h2->bufs_yielded || holds_input(h2);
    }
    return h2->held;
}

/*
 * The receive buffers are the core's, and input the engine has not taken yet stays in them
 * (zero copy), up to the connection's flow-control window. So when fewer than a quarter of
 * them are free, a connection that holds such input stops receiving (the kernel holds the
 * client's next bytes, and TCP pushes back): uploads faster than the disk cannot take every
 * buffer from the core's other connections. It receives again once the engine took its input
 * (rpc_h2_consume) or half of the buffers are free again (ring_buf_wait_plenty). Nothing it
 * holds waits for more input: the engine gives it back as the disk completes writes, or when
 * the call ends.
 */
static void yield_bufs(struct rpc_h2 *h2)
{
    if (h2->bufs_yielded || h2->close_after_send || !ring_buf_is_low(h2_core(h2))) return;
    if (!holds_input(h2)) return;
    h2->bufs_yielded = true;
    base_counter_inc(&h2->rc->counters.h2_recv_yields);
    ring_conn_recv_pause(&h2->conn->conn);
    ring_buf_wait_plenty(h2_core(h2), &h2->yield_task);
}

static void yield_task(struct ring_task *task)
{
    struct rpc_h2 *h2 = BASE_CONTAINER_OF(task, struct rpc_h2, yield_task);
    if (!h2->bufs_yielded) return;
    if (holds_input(h2) && !ring_buf_is_plenty(h2_core(h2))) {
        ring_buf_wait_plenty(h2_core(h2), &h2->yield_task);
        return;
    }
    h2->bufs_yielded = false;
    if (!h2->close_after_send) ring_conn_recv_resume(&h2->conn->conn);
}

static void feed(struct rpc_h2 *h2, const uint8_t *p, size_t len, uint16_t bid)
{
    if (len == 0 || h2->close_after_send) return;
    ASSERT(!h2->in_session);
    h2->in_session = true;
    h2->cur_bid = bid;
    ssize_t rv = nghttp2_session_mem_recv(h2->session, p, len);
    h2->cur_bid = RING_CONN_NO_BUF;
    h2->in_session = false;
    rpc_call_feed_done(h2->rc); /* before the caller gives <bid> back */
    if (rv < 0) {
        /* Bad preface, flood, or a callback failure: nghttp2 queued GOAWAY where it could. */
        fail_after_send(h2, nghttp2_strerror((int)rv));
        return;
    }
    /* No callback pauses (flow control is the backpressure), so everything was taken. */
    ASSERT((size_t)rv == len);
}

/*
 * With SETTINGS_NO_RFC7540_PRIORITIES, nghttp2 1.52 reads PRIORITY frames but neither checks
 * them (RFC 9113 §5.3.1, §6.3) nor hands them to a callback, and past its CONTINUATION limit
 * it drops the connection without a GOAWAY. So the input is walked frame header by frame
 * header (a few bytes a frame; payloads are skipped), and cut where one of these needs a
 * check: after a PRIORITY frame, and before the CONTINUATION frame that makes a header block
 * too long. nghttp2 sees the same bytes in the same order, only in more calls.
 */
enum scan_event {
    SCAN_NONE,
    SCAN_PRIORITY,     /* a PRIORITY frame ends the piece; its header is in scan_head */
    SCAN_CONTINUATIONS /* the piece ends before a CONTINUATION past the limit */
};

#define SCAN_PRIORITY_LEN 5u /* RFC 9113 §6.3 */

static uint32_t scan_length(const struct rpc_h2 *h2)
{
    const uint8_t *h = h2->scan_head;
    return (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
}

/* The frame header in <scan_head> is complete: what to read next, and the event it makes. */
static enum scan_event scan_header(struct rpc_h2 *h2)
{
    uint32_t length = scan_length(h2);
    uint8_t type = h2->scan_head[3];
    bool end_headers = h2->scan_head[4] & NGHTTP2_FLAG_END_HEADERS;
    if (type == NGHTTP2_PRIORITY && length == SCAN_PRIORITY_LEN) {
        /* Read its payload before the check; another length is nghttp2's FRAME_SIZE_ERROR. */
        h2->scan_want = H2_FRAME_HEADER_SIZE + SCAN_PRIORITY_LEN;
        return SCAN_NONE;
    }
    h2->scan_have = 0;
    h2->scan_skip = length;
    if (type == NGHTTP2_HEADERS) h2->scan_conts = 0;
    if (type != NGHTTP2_CONTINUATION) return SCAN_NONE;
    if (end_headers) {
        h2->scan_conts = 0;
        return SCAN_NONE;
    }
    /* The RPC_H2_CONTINUATIONS-th without END_HEADERS: one more would have to follow. */
    return ++h2->scan_conts >= RPC_H2_CONTINUATIONS ? SCAN_CONTINUATIONS : SCAN_NONE;
}

/* A PRIORITY frame is complete. */
static enum scan_event scan_priority(struct rpc_h2 *h2)
{
    h2->scan_skip = 0;
    h2->scan_have = 0;
    h2->scan_want = H2_FRAME_HEADER_SIZE;
    return SCAN_PRIORITY;
}

/* How many of the <len> bytes at <p> to feed before the event it sets in <ev>. */
static size_t scan_frames(struct rpc_h2 *h2, const uint8_t *p, size_t len, enum scan_event *ev)
{
    size_t i = 0;
    *ev = SCAN_NONE;
    /* Bounded by <len>: each pass takes at least one byte or returns. */
    while (i < len) {
        if (h2->scan_skip > 0) {
            size_t k = len - i < h2->scan_skip ? len - i : h2->scan_skip;
            h2->scan_skip -= (uint32_t)k;
            i += k;
            continue;
        }
        size_t start = h2->scan_have == 0 ? i : 0; /* where this header began in <p> */
        size_t take = (size_t)(h2->scan_want - h2->scan_have);
        if (take > len - i) take = len - i;
        memcpy(h2->scan_head + h2->scan_have, p + i, take);
        h2->scan_have = (uint8_t)(h2->scan_have + take);
        i += take;
        if (h2->scan_have < h2->scan_want) return len;
        if (h2->scan_want > H2_FRAME_HEADER_SIZE) {
            *ev = scan_priority(h2);
            return i;
        }
        *ev = scan_header(h2);
        if (*ev == SCAN_CONTINUATIONS) return start; /* none of it: nghttp2 would drop us */
        if (*ev == SCAN_PRIORITY) return i;
    }
    return len;
}

/* An invalid frame: true while the connection's budget of them lasts (on_invalid_frame_recv). */
static bool glitch_allowed(struct rpc_h2 *h2);
static bool bucket_take(uint64_t *tokens, uint64_t *ns, uint32_t burst, uint32_t rate);

static void on_scan_priority(struct rpc_h2 *h2)
{
    const uint8_t *h = h2->scan_head;
    int32_t sid =
        (int32_t)(((uint32_t)h[5] << 24 | (uint32_t)h[6] << 16 | (uint32_t)h[7] << 8 | h[8]) &
                  0x7fffffffu);
    uint32_t dep =
        ((uint32_t)h[9] << 24 | (uint32_t)h[10] << 16 | (uint32_t)h[11] << 8 | h[12]) & 0x7fffffffu;
    if (sid == 0) {
        /* RFC 9113 §6.3: a connection error. */
        (void)nghttp2_session_terminate_session(h2->session, NGHTTP2_PROTOCOL_ERROR);
        fail_after_send(h2, "PRIORITY frame on stream 0");
        return;
    }
    if (dep != (uint32_t)sid) return;
    if (sid > h2->max_client_sid) {
        /* RFC 9113 §5.3.1 asks for a stream error, but RST_STREAM must not name an idle stream
         * (§5.1; nghttp2 drops it): a connection error (§5.4), as nghttp2's own check. */
        (void)nghttp2_session_terminate_session(h2->session, NGHTTP2_PROTOCOL_ERROR);
        fail_after_send(h2, "idle stream depends on itself");
        return;
    }
    /* Each answers with a RST_STREAM: they count as invalid frames, which are limited. */
    base_counter_inc(&h2->rc->counters.h2_glitches);
    if (!glitch_allowed(h2)) {
        (void)nghttp2_session_terminate_session(h2->session, NGHTTP2_ENHANCE_YOUR_CALM);
        fail_after_send(h2, "too many invalid frames");
        return;
    }
    (void)nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, sid, NGHTTP2_PROTOCOL_ERROR);
}

/* feed, in pieces cut where scan_frames finds something to check between them. */
static void feed_scanned(struct rpc_h2 *h2, const uint8_t *p, size_t len, uint16_t bid)
{
    size_t off = 0;
    /* Bounded by the frames in <len> bytes: each piece but the last ends one. */
    while (off < len && !h2->close_after_send) {
        enum scan_event ev;
        size_t n = scan_frames(h2, p + off, len - off, &ev);
        feed(h2, p + off, n, bid);
        off += n;
        if (h2->close_after_send) return;
        if (ev == SCAN_PRIORITY) on_scan_priority(h2);
        if (ev == SCAN_CONTINUATIONS) {
            (void)nghttp2_session_terminate_session(h2->session, NGHTTP2_ENHANCE_YOUR_CALM);
            fail_after_send(h2, "too many CONTINUATION frames");
        }
    }
}

static void h2_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len)
{
    struct rpc_h2 *h2 = h2_of(rc);
    if (len == 0) {
        /*
         * The client closed the connection. HTTP/2 has no half-close of the connection: a
         * client that stops sending is gone, so every call is cancelled (readers' disk reads
         * included) rather than left waiting for request bytes that cannot come.
         */
        h2->peer_eof = true;
        ring_conn_close(rc, 0);
        return;
    }
    feed_scanned(h2, ring_buf_data(rc->core, bid), len, bid);
    ring_buf_unref(rc->core, bid);
    yield_bufs(h2);
    schedule_flush(h2);
}

void rpc_h2_start(struct rpc_conn *c, const uint8_t *prefix, uint32_t prefix_len, uint16_t bid,
                  uint32_t len)
{
    struct rpc_core *rc = c->rc;
    struct ring_core *core = c->conn.core;
    struct rpc_h2 *h2 = proto_alloc_calloc(&rc->h2_mem, 1, sizeof(*h2));
    c->conn.ops = &h2_ops;
    c->proto = h2;
    if (!h2) {
        if (len > 0) ring_buf_unref(core, bid);
        ring_conn_close(&c->conn, -ENOMEM);
        return;
    }
    h2->conn = c;
    h2->rc = rc;
    h2->cur_bid = RING_CONN_NO_BUF;
    h2->glitch_tokens = (uint64_t)RPC_H2_GLITCH_BURST * 1000;
    h2->glitch_ns = base_clock_now_ns();
    h2->reset_tokens = (uint64_t)RPC_H2_RESET_BURST * 1000;
    h2->reset_ns = h2->glitch_ns;
    h2->scan_skip = RPC_H2_PREFACE_LEN; /* the client's preface, then frames */
    h2->scan_want = H2_FRAME_HEADER_SIZE;
    base_list_init(&h2->calls);
    base_list_init(&h2->sent);
    ring_gather_init(&h2->gather, &gather_limits);
    ring_task_init(&h2->flush_task, flush_task);
    ring_task_init(&h2->yield_task, yield_task);
    ring_timer_init(&h2->notice, notice_timer_fn, h2);
    base_counter_inc(&rc->counters.h2_conns);
    if (session_create(h2) < 0) {
        if (len > 0) ring_buf_unref(core, bid);
        ring_conn_close(&c->conn, -ENOMEM);
        return;
    }
    feed_scanned(h2, prefix, prefix_len, RING_CONN_NO_BUF);
    if (len > 0) {
        feed_scanned(h2, ring_buf_data(core, bid), len, bid);
        ring_buf_unref(core, bid);
    }
    schedule_flush(h2);
}

/* ---- the send path ---- */

static void schedule_flush(struct rpc_h2 *h2)
{
    ring_task_defer(h2_core(h2), &h2->flush_task);
}

/* The connection has nothing left to do for anybody: close it. */
static bool should_close(struct rpc_h2 *h2)
{
    if (h2->close_after_send) return true;
    if (!nghttp2_session_want_read(h2->session) && !nghttp2_session_want_write(h2->session)) {
        return true;
    }
    return (h2->draining || h2->peer_eof) && h2->calls_count == 0;
}

/* Hands ring_gather_fill nghttp2's next chunk of serialized frames. */
static ssize_t pull(void *ctx, const uint8_t **chunk)
{
    struct rpc_h2 *h2 = ctx;
    h2->in_session = true;
    ssize_t n = nghttp2_session_mem_send(h2->session, chunk);
    h2->in_session = false;
    if (n < 0) {
        char peer[RING_CONN_PEER_MAX];
        LOG_WARN("http2 connection %s: %s", ring_conn_peer(&h2->conn->conn, peer),
                 nghttp2_strerror((int)n));
        return -EPROTO;
    }
    return n;
}

/* Pulls frames out of nghttp2 into the send being built; returns -errno on a fatal error. */
static int fill(struct rpc_h2 *h2)
{
    int rc = ring_gather_fill(&h2->gather, pull, h2);
    base_counter_add(&h2->rc->counters.grpc_bytes_zero_copy, ring_gather_ref_bytes(&h2->gather));
    if (rc == -EMSGSIZE) {
        char peer[RING_CONN_PEER_MAX];
        LOG_ERROR("http2 connection %s: a frame over the output buffer",
                  ring_conn_peer(&h2->conn->conn, peer));
    }
    return rc;
}

static void flush(struct rpc_h2 *h2)
{
    struct ring_conn *conn = &h2->conn->conn;
    if (conn->closing || ring_conn_is_sending(conn)) return;
    ASSERT(!h2->in_session);
    ring_gather_begin(&h2->gather);
    int rc = fill(h2);
    if (rc < 0) {
        base_counter_inc(&h2->rc->counters.h2_protocol_errors);
        ring_conn_close(conn, rc);
        return;
    }
    if (ring_gather_is_empty(&h2->gather)) {
        if (should_close(h2)) ring_conn_close(conn, 0);
        return;
    }
    rc = ring_gather_send(&h2->gather, conn);
    if (rc < 0) {
        ring_conn_close(conn, rc);
        return;
    }
    base_counter_inc(&h2->rc->counters.grpc_flushes);
}

static void flush_task(struct ring_task *task)
{
    flush(BASE_CONTAINER_OF(task, struct rpc_h2, flush_task));
}

/* Releases the pieces whose bytes were in the send that just completed (or never will be). */
static void release_sent(struct rpc_h2 *h2)
{
    struct base_list *node;
    /* Bounded by the pieces one send holds. */
    while ((node = base_list_pop_head(&h2->sent))) {
        struct rpc_seg *seg = BASE_CONTAINER_OF(node, struct rpc_seg, piece.link);
        struct rpc_call *c = seg->call;
        ASSERT(c->segs_in_send > 0);
        c->segs_in_send--;
        base_counter_dec(&h2->rc->counters.grpc_segs);
        seg->release(seg);
        rpc_call_check_free(c);
    }
}

static void wake_writers(struct rpc_h2 *h2)
{
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &h2->calls)
    {
        struct rpc_call *c = BASE_CONTAINER_OF(it, struct rpc_call, link);
        if (c->writable_wanted && c->out_bytes < RPC_CALL_OUT_LOW) rpc_call_on_drained(c);
    }
}

static void h2_on_sent(struct ring_conn *rc)
{
    struct rpc_h2 *h2 = h2_of(rc);
    ring_gather_send_done(&h2->gather);
    release_sent(h2);
    wake_writers(h2);
    flush(h2);
}

static int send_data(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *ud)
{
    (void)s;
    struct rpc_h2 *h2 = ud;
    struct rpc_call *c = source->ptr;
    ASSERT(frame->data.padlen == 0); /* no select_padding callback: never padded */
    ASSERT(length <= c->out_bytes);
    /* The frame waits for the next send when this one is full; an empty one always has room. */
    int moved =
        ring_gather_frame(&h2->gather, framehd, H2_FRAME_HEADER_SIZE, &c->out, length, &h2->sent);
    if (moved < 0) return NGHTTP2_ERR_WOULDBLOCK; /* retried with this length: frame_bytes */
    c->frame_bytes = 0;
    c->out_bytes -= length;
    c->segs_in_send += (uint32_t)moved;
    h2->data_sent += length;
    return 0;
}

/* The longest DATA frame: the peer's limits, and at most RPC_H2_FRAME_SEGS_MAX pieces. */
/* nghttp2's callback type fixes the parameter list (and <buf>'s constness). */
// NOLINTNEXTLINE(readability-function-size,readability-non-const-parameter)
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
    /* nghttp2 grows its frame buffer to the largest length returned here, even for NO_COPY
     * frames it never copies into: a peer advertising 4 MiB frames would cost 4 MiB a
     * connection. 64 KiB keeps frame overhead under 0.02% at a 64 KiB buffer. */
    if (n > (int64_t)RPC_H2_DATA_FRAME_MAX) n = RPC_H2_DATA_FRAME_MAX;
    return n > 0 ? (ssize_t)n : 1;
}

/* <status> in decimal into <buf> (12 bytes); the 17 gRPC codes without snprintf. */
static const char *status_text(int status, char *buf)
{
    static const char *const codes[] = { "0", "1",  "2",  "3",  "4",  "5",  "6",  "7", "8",
                                         "9", "10", "11", "12", "13", "14", "15", "16" };
    if (status >= 0 && (size_t)status < ARRAY_LEN(codes)) return codes[status];
    (void)snprintf(buf, 12, "%d", status);
    return buf;
}

static int submit_trailers(struct rpc_h2 *h2, struct rpc_call *c)
{
    char buf[12];
    const char *code = status_text(c->status, buf);
    nghttp2_nv nva[2] = { make_nv("grpc-status", code), make_nv("grpc-message", c->message) };
    size_t n = c->message[0] ? 2 : 1;
    return nghttp2_submit_trailer(h2->session, c->stream_id, nva, n);
}

/* nghttp2's callback type fixes the parameter list (and <buf>'s constness). */
// NOLINTNEXTLINE(readability-function-size,readability-non-const-parameter)
static ssize_t provider_read(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                             uint32_t *flags, nghttp2_data_source *source, void *ud)
{
    (void)s;
    (void)stream_id;
    (void)buf;
    struct rpc_h2 *h2 = ud;
    struct rpc_call *c = source->ptr;
    if (c->out_bytes > 0) {
        /* Sent by send_data from the pieces themselves, across few enough of them. */
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        size_t n = ring_gather_frame_length(&h2->gather, &c->out, length);
        c->frame_bytes = (uint32_t)n; /* at most RPC_H2_DATA_FRAME_MAX (read_length) */
        return (ssize_t)n;
    }
    if (!c->trailers_due) {
        c->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    /* Without trailers the stream ends here and the client sees no status (INTERNAL). */
    if (submit_trailers(h2, c) == 0) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    return 0;
}

/* ---- nghttp2 callbacks ---- */

static struct rpc_call *call_of(struct rpc_h2 *h2, int32_t stream_id)
{
    if (stream_id == h2->last_sid) return h2->last_call;
    struct rpc_call *c = nghttp2_session_get_stream_user_data(h2->session, stream_id);
    h2->last_sid = stream_id;
    h2->last_call = c;
    return c;
}

/* <stream_id> has no call any more (closed or detached): forget it. */
static void call_forget(struct rpc_h2 *h2, int32_t stream_id)
{
    if (h2->last_sid == stream_id) {
        h2->last_sid = 0;
        h2->last_call = NULL;
    }
}

static void refuse(struct rpc_h2 *h2, int32_t stream_id)
{
    base_counter_inc(&h2->rc->counters.h2_refused_streams);
    (void)nghttp2_submit_rst_stream(h2->session, NGHTTP2_FLAG_NONE, stream_id,
                                    NGHTTP2_REFUSED_STREAM);
}

/* <stream_id>'s RST_STREAM was sent: the client may not have read it yet (on_begin_frame). */
static void remember_reset(struct rpc_h2 *h2, int32_t stream_id)
{
    h2->resets[h2->resets_next] = stream_id;
    h2->resets_next = (h2->resets_next + 1) % H2_RESETS;
}

/* True once for a stream remember_reset kept, which it then forgets. */
static bool take_reset(struct rpc_h2 *h2, int32_t stream_id)
{
    /* Bounded by H2_RESETS; runs only for a HEADERS frame on a stream nghttp2 forgot. */
    for (uint32_t i = 0; i < H2_RESETS; i++) {
        if (h2->resets[i] == stream_id) {
            h2->resets[i] = 0;
            return true;
        }
    }
    return false;
}

/*
 * RFC 9113 §5.1.1: a client's new stream id is greater than every one it used before, and an
 * id that is not is a connection error (PROTOCOL_ERROR). nghttp2 keeps no closed streams
 * here (no_closed_streams, and no RFC 7540 dependency tree) and ignores HEADERS on an id it
 * no longer knows; so the highest id is kept, and a HEADERS frame at or below it, on no
 * stream nghttp2 still has (trailers come on those), ends the connection, as Go's and
 * gRPC-Go's servers do. Except once on a stream we reset: §5.1 says to ignore what the
 * client sent before it read our RST_STREAM, and its trailers are that (sent while we
 * answered early or reset a malformed request); before, they ended the connection and every
 * call on it. nghttp2 then ignores the block (decoding it, for HPACK), as it ignores the
 * DATA on a closed stream. Called before nghttp2 processes the frame.
 */
static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    struct rpc_h2 *h2 = ud;
    /* Even ids are nghttp2's own connection error. */
    if (hd->type != NGHTTP2_HEADERS || !(hd->stream_id & 1)) return 0;
    if (hd->stream_id > h2->max_client_sid) {
        h2->max_client_sid = hd->stream_id;
        return 0;
    }
    if (nghttp2_session_find_stream(s, hd->stream_id)) return 0;
    if (take_reset(h2, hd->stream_id)) return 0;
    (void)nghttp2_session_terminate_session(s, NGHTTP2_PROTOCOL_ERROR);
    fail_after_send(h2, "HEADERS on a stream id already used");
    return 0;
}

/*
 * The client's trailers begin: SETTINGS_MAX_HEADER_LIST_SIZE bounds each field section (RFC
 * 9113 §6.5.2), so they are counted from zero; the request's headers were checked when their
 * block ended (rpc_call_on_headers). Before, the two were summed, and a request of 10 KiB of
 * headers and 10 KiB of trailers, each under the 16 KiB we advertise, was reset.
 */
static void trailers_begin(struct rpc_h2 *h2, int32_t stream_id)
{
    struct rpc_call *c = call_of(h2, stream_id);
    if (c) c->header_bytes = 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct rpc_h2 *h2 = ud;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
        trailers_begin(h2, frame->hd.stream_id);
        return 0;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    /*
     * Streams the client reset but whose calls still release their work count here too, so
     * resetting streams cannot pile up work (the Rapid Reset lesson).
     */
    if (h2->calls_count >= RPC_H2_CALLS_MAX || h2->draining || h2->peer_eof) {
        refuse(h2, frame->hd.stream_id);
        return 0;
    }
    struct rpc_call *c = rpc_call_new(h2->rc, h2, frame->hd.stream_id);
    if (!c) {
        refuse(h2, frame->hd.stream_id);
        return 0;
    }
    base_list_add_tail(&h2->calls, &c->link);
    h2->calls_count++;
    base_counter_inc(&h2->rc->counters.h2_streams);
    /* Copied: a call may end after its connection is gone (a cancel, a deadline). */
    if (h2->rc->cfg->access_log) {
        (void)snprintf(c->log_peer, sizeof(c->log_peer), "%s", rpc_conn_log_peer(h2->conn));
    }
    if (nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, c) != 0) UNREACHABLE();
    h2->last_sid = frame->hd.stream_id;
    h2->last_call = c;
    return 0;
}

static bool value_is(const uint8_t *v, size_t len, const char *want)
{
    size_t n = strlen(want);
    return len == n && memcmp(v, want, n) == 0;
}

/* application/grpc, optionally followed by "+proto", "+json", ";params" (PROTOCOL-HTTP2.md). */
static bool is_grpc_content_type(const uint8_t *v, size_t len)
{
    static const char prefix[] = "application/grpc";
    size_t n = sizeof(prefix) - 1;
    if (len < n || memcmp(v, prefix, n) != 0) return false;
    return len == n || v[n] == '+' || v[n] == ';';
}

static void record_header(struct rpc_call *c, const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen)
{
    if (value_is(name, namelen, ":method")) {
        c->method_post = value_is(value, valuelen, "POST");
    } else if (value_is(name, namelen, ":path")) {
        size_t n = valuelen < sizeof(c->path) ? valuelen : 0;
        memcpy(c->path, value, n);
        c->path[n] = '\0';
    } else if (value_is(name, namelen, "content-type")) {
        c->content_grpc = is_grpc_content_type(value, valuelen);
    } else if (value_is(name, namelen, "grpc-encoding")) {
        c->encoding_ok = value_is(value, valuelen, "identity");
    } else if (value_is(name, namelen, "grpc-timeout")) {
        c->has_timeout = true;
        c->timeout_bad = proto_timeout_parse((const char *)value, valuelen, &c->timeout_ms) < 0;
    }
}

/* nghttp2's callback type fixes the parameter list (and <buf>'s constness). */
// NOLINTNEXTLINE(readability-function-size,readability-non-const-parameter)
static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    struct rpc_h2 *h2 = ud;
    struct rpc_call *c = call_of(h2, frame->hd.stream_id);
    if (!c || frame->hd.type != NGHTTP2_HEADERS) return 0;
    bool request = frame->headers.cat == NGHTTP2_HCAT_REQUEST;
    /* Over the limit already: the rest is decoded (HPACK state) but not kept. */
    if (request && c->header_bytes > RPC_H2_HEADERS_MAX) return 0;
    /* nghttp2 stores SETTINGS_MAX_HEADER_LIST_SIZE but does not enforce it: we do. */
    c->header_bytes += (uint32_t)(namelen + valuelen + 32);
    if (c->header_bytes > RPC_H2_HEADERS_MAX) {
        base_counter_inc(&h2->rc->counters.h2_header_overflows);
        /* A request is answered (HTTP 431, rpc_call_on_headers); trailers reset the stream. */
        return request ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (request) record_header(c, name, namelen, value, valuelen);
    return 0;
}

/*
 * Rapid reset (CVE-2023-44487): the client's RST_STREAM frames, a token bucket per connection.
 * Past it, GOAWAY(ENHANCE_YOUR_CALM), the code that says the client is abusive; called before
 * nghttp2 counts the frame against its own (looser) limit, which then sees the GOAWAY.
 */
static void count_reset(nghttp2_session *s, struct rpc_h2 *h2)
{
    if (bucket_take(&h2->reset_tokens, &h2->reset_ns, RPC_H2_RESET_BURST, RPC_H2_RESET_RATE)) {
        return;
    }
    (void)nghttp2_session_terminate_session(s, NGHTTP2_ENHANCE_YOUR_CALM);
    fail_after_send(h2, "too many stream resets");
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct rpc_h2 *h2 = ud;
    if (frame->hd.type == NGHTTP2_RST_STREAM) count_reset(s, h2);
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK) && h2->noticed &&
        memcmp(frame->ping.opaque_data, drain_ping, sizeof(drain_ping)) == 0) {
        final_goaway(h2);
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    struct rpc_call *c = call_of(h2, frame->hd.stream_id);
    if (!c) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        rpc_call_on_headers(c);
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) rpc_call_on_end_stream(c);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *ud)
{
    (void)flags;
    struct rpc_h2 *h2 = ud;
    struct rpc_call *c = call_of(h2, stream_id);
    if (!c) {
        /* A refused or finished stream: give the window back at once. */
        (void)nghttp2_session_consume(s, stream_id, len);
        return 0;
    }
    uint16_t bid = h2->cur_bid;
    if (bid != RING_CONN_NO_BUF && !ring_buf_contains(h2_core(h2), bid, data, len)) {
        bid = RING_CONN_NO_BUF;
    }
    rpc_call_on_data(c, data, len, bid);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
    (void)s;
    struct rpc_h2 *h2 = ud;
    struct rpc_call *c = call_of(h2, stream_id);
    call_forget(h2, stream_id);
    if (!c) return 0;
    base_counter_dec(&h2->rc->counters.h2_streams);
    rpc_call_on_stream_close(c, error_code);
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct rpc_h2 *h2 = ud;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        /* Ours, nghttp2's stream errors and refusals alike. */
        remember_reset(h2, frame->hd.stream_id);
        return 0;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY && h2->noticed && !h2->draining) {
        /* After the first GOAWAY, not with it: nghttp2 sends PINGs ahead of GOAWAY frames, and
         * the client's ACK must say that it has read the GOAWAY. */
        if (nghttp2_submit_ping(s, NGHTTP2_FLAG_NONE, drain_ping) != 0) final_goaway(h2);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    struct rpc_call *c = call_of(h2, frame->hd.stream_id);
    /*
     * The response is complete while the client is still sending (an early error, an upload
     * that ended early): RFC 9113 §8.1 lets the server ask it to stop with RST_STREAM
     * (NO_ERROR). Submitted only now: a reset cancels frames still queued (the trailers).
     */
    if (c && !c->peer_ended) {
        (void)nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                        NGHTTP2_NO_ERROR);
    }
    return 0;
}

/*
 * Takes one frame from a token bucket of <burst> frames refilled at <rate> a second (its
 * <tokens> in thousandths of a frame, refilled last at <ns>); false when it is empty.
 */
static bool bucket_take(uint64_t *tokens, uint64_t *ns, uint32_t burst, uint32_t rate)
{
    uint64_t ms = (base_clock_now_ns() - *ns) / BASE_NS_PER_MS;
    uint64_t cap = (uint64_t)burst * 1000;
    uint64_t refill = ms * rate;
    *tokens = *tokens + refill > cap ? cap : *tokens + refill;
    /* Whole milliseconds only: frames less than 1 ms apart still refill the bucket. */
    *ns += ms * BASE_NS_PER_MS;
    if (*tokens < 1000) return false;
    *tokens -= 1000;
    return true;
}

static bool glitch_allowed(struct rpc_h2 *h2)
{
    return bucket_take(&h2->glitch_tokens, &h2->glitch_ns, RPC_H2_GLITCH_BURST, RPC_H2_GLITCH_RATE);
}

/*
 * Invalid frames ("glitches", the MadeYouReset class that nghttp2 1.52 does not limit): a
 * token bucket per connection; past it the connection gets GOAWAY(ENHANCE_YOUR_CALM).
 */
static int on_invalid_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, int lib_error,
                                 void *ud)
{
    (void)frame;
    (void)lib_error;
    struct rpc_h2 *h2 = ud;
    base_counter_inc(&h2->rc->counters.h2_glitches);
    if (glitch_allowed(h2)) return 0;
    (void)nghttp2_session_terminate_session(s, NGHTTP2_ENHANCE_YOUR_CALM);
    fail_after_send(h2, "too many invalid frames");
    return 0;
}

/* ---- transport calls for call.c ---- */

static bool stream_usable(const struct rpc_call *c)
{
    return c->h2 && !c->stream_closed && c->h2->session;
}

void rpc_h2_respond(struct rpc_call *c)
{
    if (!stream_usable(c) || c->provider) return;
    struct rpc_h2 *h2 = c->h2;
    const nghttp2_nv nva[] = { make_nv(":status", "200"),
                               make_nv("content-type", "application/grpc") };
    nghttp2_data_provider dp = { .source.ptr = c, .read_callback = provider_read };
    if (nghttp2_submit_response(h2->session, c->stream_id, nva, ARRAY_LEN(nva), &dp) != 0) {
        rpc_h2_reset(c, NGHTTP2_INTERNAL_ERROR);
        return;
    }
    c->provider = true;
    schedule_flush(h2);
}

void rpc_h2_respond_trailers_only(struct rpc_call *c, int http_status)
{
    if (!stream_usable(c) || c->provider) return;
    struct rpc_h2 *h2 = c->h2;
    char status[12];
    char code[12];
    (void)snprintf(status, sizeof(status), "%d", http_status);
    (void)snprintf(code, sizeof(code), "%d", c->status);
    /* grpc-accept-encoding: what the server takes (gRPC compression.md asks for it with the
     * UNIMPLEMENTED of an unsupported grpc-encoding; any answer may carry it). */
    nghttp2_nv nva[5] = { make_nv(":status", status), make_nv("content-type", "application/grpc"),
                          make_nv("grpc-accept-encoding", "identity"), make_nv("grpc-status", code),
                          make_nv("grpc-message", c->message) };
    size_t n = c->message[0] ? 5 : 4;
    c->provider = true; /* a response was submitted: nothing else may be */
    if (nghttp2_submit_response(h2->session, c->stream_id, nva, n, NULL) != 0) {
        rpc_h2_reset(c, NGHTTP2_INTERNAL_ERROR);
    }
    schedule_flush(h2);
}

void rpc_h2_wake(struct rpc_call *c)
{
    if (!stream_usable(c)) return;
    if (c->deferred) {
        c->deferred = false;
        (void)nghttp2_session_resume_data(c->h2->session, c->stream_id);
    }
    schedule_flush(c->h2);
}

bool rpc_h2_send_blocked(const struct rpc_call *c)
{
    if (!stream_usable(c)) return false;
    nghttp2_session *s = c->h2->session;
    return nghttp2_session_get_stream_remote_window_size(s, c->stream_id) <= 0 ||
           nghttp2_session_get_remote_window_size(s) <= 0;
}

uint64_t rpc_h2_send_progress(const struct rpc_call *c)
{
    if (!stream_usable(c)) return 0;
    nghttp2_session *s = c->h2->session;
    /* Its own window closed: only its own bytes show that the client reads this stream. */
    if (nghttp2_session_get_stream_remote_window_size(s, c->stream_id) <= 0) {
        return c->bytes_out - c->out_bytes;
    }
    /* The connection's window closed: nghttp2 serves the streams of one urgency one after
     * another (RFC 9218 §4, non-incremental), so a stream may wait behind others for as long
     * as the client's link is slow; the client reads while any stream's bytes leave. */
    return c->h2->data_sent;
}

void rpc_h2_reset(struct rpc_call *c, uint32_t error_code)
{
    if (!stream_usable(c)) return;
    (void)nghttp2_submit_rst_stream(c->h2->session, NGHTTP2_FLAG_NONE, c->stream_id, error_code);
    schedule_flush(c->h2);
}

bool rpc_h2_may_wait(const struct rpc_call *c)
{
    return c->h2 && c->h2->waiting < RPC_H2_WAITING_MAX;
}

void rpc_h2_wait_begin(struct rpc_call *c)
{
    if (c->h2) c->h2->waiting++;
}

void rpc_h2_wait_end(struct rpc_call *c)
{
    if (!c->h2) return;
    ASSERT(c->h2->waiting > 0);
    c->h2->waiting--;
}

void rpc_h2_consume(struct rpc_call *c, size_t len)
{
    if (c->h2 && c->h2->bufs_yielded) {
        /* The input went to the engine or the call ended: maybe receive again. Also from
         * inside the session (a stream closed while sending), which queues no flush. */
        ring_task_cancel(&c->h2->yield_task);
        ring_task_defer(h2_core(c->h2), &c->h2->yield_task);
    }
    if (!c->h2 || !c->h2->session || len == 0) return;
    /* Works for closed streams too: then only the connection window reopens. */
    (void)nghttp2_session_consume(c->h2->session, c->stream_id, len);
    if (!c->h2->in_session) schedule_flush(c->h2);
}

/* Releases <seg> now, or after the send in flight when some of its bytes are in it. */
static void drop_seg(struct rpc_call *c, struct rpc_seg *seg)
{
    base_list_del(&seg->piece.link);
    c->out_bytes -= seg->piece.len;
    struct rpc_h2 *h2 = c->h2;
    if (h2 && ring_gather_piece_is_in_flight(&h2->gather, &seg->piece)) {
        base_list_add_tail(&h2->sent, &seg->piece.link);
        c->segs_in_send++;
        return;
    }
    base_counter_dec(&c->rc->counters.grpc_segs);
    seg->release(seg);
}

/*
 * With <keep_started>, the stream stays open and the output is cut at the first message start
 * nothing of which was sent, and past the DATA frame nghttp2 has sized and holds: it retries
 * that frame with the same length (send_data answered WOULDBLOCK), so the messages it covers
 * count as started. Without, the stream or connection closed, and no frame is retried.
 */
void rpc_h2_drop_output(struct rpc_call *c, bool keep_started)
{
    struct base_list *from = c->out.next;
    if (keep_started) {
        uint64_t ahead = 0;
        while (from != &c->out) {
            struct rpc_seg *seg = BASE_CONTAINER_OF(from, struct rpc_seg, piece.link);
            bool started = ring_gather_piece_is_started(&seg->piece) || ahead < c->frame_bytes;
            if (seg->msg_start && !started) break;
            ahead += seg->piece.len;
            from = from->next;
        }
    } else {
        c->frame_bytes = 0;
    }
    /* Bounded by the queue's length. */
    while (from != &c->out) {
        struct base_list *next = from->next;
        drop_seg(c, BASE_CONTAINER_OF(from, struct rpc_seg, piece.link));
        from = next;
    }
}

void rpc_h2_call_free(struct rpc_call *c)
{
    struct rpc_h2 *h2 = c->h2;
    if (h2) {
        ASSERT(h2->calls_count > 0);
        base_list_del(&c->link);
        h2->calls_count--;
        if (h2->session && !c->stream_closed) {
            (void)nghttp2_session_set_stream_user_data(h2->session, c->stream_id, NULL);
        }
        call_forget(h2, c->stream_id);
        if (h2->draining || h2->peer_eof) schedule_flush(h2);
    }
    rpc_call_delete(c);
}

/* ---- drain and close ---- */

/*
 * A call works for the client without waiting for it: its request is complete (or the engine
 * holds its input), and it is not stuck behind the client's flow-control window. A call that
 * waits for the client does not keep an idle connection open (invariant 3: nothing waits on
 * a peer without a deadline).
 */
static bool call_is_busy(const struct rpc_h2 *h2, const struct rpc_call *c)
{
    if (!c->method || rpc_call_is_over(c) || c->stream_closed) return c->pins > 0;
    if (!c->peer_ended && !c->input_held) return false;
    if (c->out_bytes == 0) return true;
    return nghttp2_session_get_stream_remote_window_size(h2->session, c->stream_id) > 0 &&
           nghttp2_session_get_remote_window_size(h2->session) > 0;
}

static bool h2_is_busy(const struct ring_conn *rc)
{
    const struct rpc_h2 *h2 = h2_of(rc);
    if (!h2) return false;
    BASE_LIST_FOR_EACH(it, &h2->calls)
    {
        const struct rpc_call *c = BASE_CONTAINER_OF(it, const struct rpc_call, link);
        if (call_is_busy(h2, c)) return true;
    }
    return false;
}

/* The final GOAWAY (drain, idle): streams up to the last one begun are served, later ones are not
 * (the client retries them elsewhere), and the connection closes after its last call. */
static void final_goaway(struct rpc_h2 *h2)
{
    if (h2->draining) return;
    h2->draining = true;
    ring_timer_stop(h2_core(h2), &h2->notice);
    int32_t last = nghttp2_session_get_last_proc_stream_id(h2->session);
    (void)nghttp2_submit_goaway(h2->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
    schedule_flush(h2);
}

static void notice_timer_fn(struct ring_timer *timer)
{
    struct rpc_h2 *h2 = timer->ctx;
    if (h2->conn->conn.closing || !h2->session) return;
    final_goaway(h2);
}

/*
 * A drain's GOAWAY, and an idle connection's, comes in two (gRPC's graceful GOAWAY; RFC 9113
 * §6.8): first one that names
 * stream 2^31-1, then a PING, then, once the PING's ACK came back (or after RPC_H2_NOTICE_MS),
 * the final one naming the last stream begun. A request the client sent before it read the
 * first GOAWAY reaches the server before the ACK, so it is served; with a single GOAWAY it
 * crossed the frame on the wire and was dropped unanswered (UNAVAILABLE "GOAWAY received"),
 * or the close found its bytes unread and reset the connection (UNAVAILABLE "Socket closed",
 * which a client cannot tell from a call that was served and may not retry).
 */
static void goaway_begin(struct rpc_h2 *h2)
{
    h2->noticed = true;
    base_counter_inc(&h2->rc->counters.h2_goaways);
    /* The PING follows once the GOAWAY is out (on_frame_send). */
    if (nghttp2_submit_shutdown_notice(h2->session) != 0) {
        final_goaway(h2);
        return;
    }
    schedule_flush(h2);
}

/* A drain waits at most RPC_H2_NOTICE_MS for the PING's ACK (also after an idle notice). */
static void h2_on_drain(struct ring_conn *rc)
{
    struct rpc_h2 *h2 = h2_of(rc);
    if (!h2 || !h2->session || h2->draining) return;
    if (!h2->noticed) goaway_begin(h2);
    if (h2->draining || ring_timer_is_pending(&h2->notice)) return;
    if (ring_timer_start(h2_core(h2), &h2->notice, &rc->owner, RPC_H2_NOTICE_MS) < 0) {
        final_goaway(h2);
    }
}

/*
 * The client sent nothing for --read-timeout and no call works for it: the connection ends as
 * a drain ends it, GOAWAY first (RFC 9113 §6.8: "Endpoints SHOULD always send a GOAWAY frame
 * before closing a connection"). Closed without one, a connection that a client had just
 * sent a request on (the request and the close crossed) reset, and the client could not tell
 * whether the call had been served (UNAVAILABLE "Socket closed"). The final GOAWAY waits for
 * the PING's ACK or the next timeout, not RPC_H2_NOTICE_MS: a client that reads nothing
 * between its calls (grpcio's Python channels) sees the GOAWAY only with its next call, which
 * is served if it comes before then; after the final GOAWAY the connection closes with its
 * last call, or at the timeout after (when this answers false).
 */
static bool h2_on_idle(struct ring_conn *rc)
{
    struct rpc_h2 *h2 = h2_of(rc);
    if (!h2 || !h2->session || h2->draining || h2->close_after_send) return false;
    if (h2->noticed) {
        final_goaway(h2);
    } else {
        goaway_begin(h2);
    }
    return true;
}

static void h2_on_close(struct ring_conn *rc, int reason)
{
    struct rpc_conn *conn = (struct rpc_conn *)rc;
    struct rpc_h2 *h2 = conn->proto;
    if (reason < 0 && reason != -ETIMEDOUT) {
        LOG_DEBUG("http2 connection closed: %s", base_err_str(reason));
    }
    if (h2) {
        /* No op of the connection is in flight any more: its sends are over. */
        ring_gather_send_done(&h2->gather);
        release_sent(h2);
        struct base_list *node;
        /* Bounded by calls_count. */
        while ((node = base_list_pop_head(&h2->calls))) {
            struct rpc_call *c = BASE_CONTAINER_OF(node, struct rpc_call, link);
            h2->calls_count--;
            rpc_call_on_conn_close(c);
        }
        ASSERT(h2->calls_count == 0);
        if (h2->session) nghttp2_session_del(h2->session);
        /* Last: closing the calls gives their held input back to the windows, which queues
         * a flush (rpc_h2_consume); the task must not stay queued in freed memory. */
        ring_task_cancel(&h2->flush_task);
        ring_task_cancel(&h2->yield_task);
        base_counter_dec(&h2->rc->counters.h2_conns);
        proto_alloc_free(&h2->rc->h2_mem, h2);
    }
    rpc_conn_free(conn);
}
