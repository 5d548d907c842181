/*
 * HTTP/1.1 on a connection: request heads, bodies, responses, keep-alive and pipelining.
 *
 * One request at a time. Received buffers queue up in in[] (at most H1_IN_MAX, then the
 * receive pauses: backpressure) and are consumed in place: heads are parsed in the receive
 * buffer, and only a head cut across receives is copied into <carry>. Requests behind the
 * current one wait in the queue, so responses leave in request order (pipelining). While a
 * request is handled or answered, nothing consumes input: the connection then reads ahead one
 * receive at most and copies what it holds (up to H1_AHEAD_MAX bytes) out of the core's shared
 * receive buffers, so that clients which send while their response waits cannot take the pool.
 *
 * A request: head -> route -> body (streamed into a sink: the cache handler of
 * src/rpc/h1_cache.c, or dropped) -> the handler answers, or streams its response piece by
 * piece (src/rpc/h1.h) -> the response is sent -> the next request. The connection stays open
 * (keep-alive) unless the client or an error says otherwise, or the server drains. A close
 * after a response shuts our side down first and discards what the client still sends until
 * it closes too (lingering close), so a response is never lost to a TCP reset.
 *
 * Timeouts: every receive has the read timeout, every send the write-progress timeout (ring
 * conn). While the server itself works on a request (the handler or a send), is_busy tells
 * the ring that the client's silence is expected. A client that does send, but slowly, is held
 * to progress as well (too_slow): a head must be complete within a read timeout of its start,
 * and a body must bring RPC_MIN_RATE bytes a second over each read timeout.
 *
 * Sections: state, input queue, responses, operations endpoints, requests and bodies, the
 * handler's side, ring callbacks.
 */
#include "rpc/h1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/clock.h"
#include "base/log.h"
#include "ring/buf.h"
#include "ring/timer.h"
#include "rpc/access_log.h"
#include "rpc/h1_cache.h"
#include "rpc/h1_chunked.h"
#include "rpc/h1_parse.h"
#include "rpc/h1_route.h"
#include "rpc/internal.h"
#include "rpc/ops.h"

#define H1_IN_MAX        4           /* received buffers queued per connection */
#define H1_RUN_STEPS_MAX 64          /* steps per run before yielding to the loop */
#define H1_DISCARD_MAX   (64u << 10) /* body bytes read and dropped to keep a connection */
#define H1_LINGER_MS     2000        /* lingering close: how long to wait for the client's FIN */
#define H1_RESP_HEAD_MAX 768         /* bytes of a response's status line and fields */
#define H1_AHEAD_MAX     (16u << 10) /* input copied out of receive buffers while busy */

/* ---- state ---- */

enum h1_state {
    H1_READ_HEAD = 0, /* waiting for a request head */
    H1_READ_BODY,     /* streaming the request body into the sink */
    H1_HANDLE,        /* the handler works on the request */
    H1_RESPOND,       /* the response is being sent */
    H1_LINGER,        /* our side is shut: discarding input until the client closes */
};

enum h1_sink {
    H1_SINK_DISCARD = 0, /* bytes are counted and dropped, up to H1_DISCARD_MAX */
    H1_SINK_DROP,        /* bytes are dropped up to drop_max (the answer needs no body) */
    H1_SINK_CACHE,       /* bytes go to rpc_h1_cache_body */
};

struct h1_in {
    uint8_t *mem; /* a copy of the bytes (owned, freed when consumed), or NULL: in <bid> */
    uint32_t off; /* first unconsumed byte */
    uint32_t len; /* unconsumed bytes from off */
    uint16_t bid; /* the receive buffer, when mem is NULL */
};

struct rpc_h1_conn {
    struct rpc_conn *c; /* the connection (owns this state through c->proto) */
    /* input */
    struct h1_in in[H1_IN_MAX]; /* received, not yet consumed; a ring */
    enum h1_state state;        /* see enum h1_state */
    uint32_t in_first;          /* index of the oldest entry */
    uint32_t in_count;          /* entries queued */
    uint32_t carry_len;         /* bytes in carry */
    char *carry;                /* a head cut across receives; RPC_H1_HEAD_MAX bytes */
    uint64_t carry_t0_ns;       /* when carry began to hold the head's start */
    bool eof;                   /* the client closed its side */
    bool draining;              /* the server drains: close after this request */
    struct rpc_h1_head head;    /* the head being handled */
    /* request */
    struct rpc_h1_request req;     /* the request's fields */
    struct rpc_h1_route route;     /* where it goes */
    bool in_request;               /* rpc_metrics_begin was called for it */
    bool keep_alive;               /* another request may follow on this connection */
    uint64_t t0_ns;                /* when its head was parsed */
    uint64_t idle_t0_ns;           /* when the server last stopped working for the client */
    char *log_target;              /* the request's path for the access log (allocated the
                                      first time, RPC_ACCESS_LOG_FIELD_MAX + 1 bytes), or NULL */
    uint32_t log_target_len;       /* bytes of it for this request; 0: none */
    struct rpc_h1_chunked chunked; /* body decoder when req.chunked */
    uint64_t body_left;            /* Content-Length bytes not yet read */
    uint64_t body_in;              /* body bytes received (decoded) */
    uint64_t window_t0_ns;         /* start of the body's current rate window */
    uint64_t window_mark;          /* body_in at that start */
    enum h1_sink sink;             /* where body bytes go */
    int pending_status;            /* the status to answer once a discarded body is read */
    const char *pending_desc;      /* its body */
    char fields[64];               /* extra response fields of a refusal (Allow) */
    uint64_t drop_max;             /* H1_SINK_DROP: body bytes dropped before a 413 */
    bool sink_busy;                /* rpc_h1_cache_body returned -EINPROGRESS */
    uint32_t sink_hold;            /* input bytes the engine holds, not yet consumed */
    struct rpc_h1_cache cache;     /* the cache routes' state */
    /* response */
    int status;                       /* the response's status, 0 before one is chosen */
    uint64_t bytes_out;               /* response body bytes */
    bool sending;                     /* a send of this connection is in flight */
    bool continue_sent;               /* "100 Continue" was sent for this request */
    bool vary_encoding;               /* its 200 says Vary: Accept-Encoding */
    bool resp_queued;                 /* the response waits for the 100 Continue's send */
    char resp_head[H1_RESP_HEAD_MAX]; /* status line and fields */
    char text[256];                   /* a one-line text body: a refusal that names sizes
                                       * (rpc_h1_cache's refusal) and its newline fit */
    char etag[RPC_H1_ETAG_MAX + 1];   /* its 200, 201 or 304 says ETag: this; "": none */
    uint32_t resp_head_len;           /* bytes in resp_head */
    const void *body;                 /* response body in memory, or NULL */
    size_t body_len;                  /* its bytes */
    void *body_owned;                 /* freed once sent (the /metrics text) */
    bool streaming;                   /* the response is streamed (rpc_h1_stream_begin) */
    bool stream_chunked;              /* in chunked coding (zstd frames) */
    bool stream_ended;                /* the end of the stream is in the send, or sent */
    bool head_sent;                   /* the streamed response's head went out */
    uint64_t stream_length;           /* Content-Length of a streamed identity response */
    char chunk_line[24];              /* "<hex size>\r\n" of the chunk in the send */
    struct ring_timer linger;         /* bounds the lingering close */
    struct ring_task run_task;        /* continues run() after the loop's batch */
    struct ring_task done_task;       /* ends a streamed response that has nothing left */
};

STATIC_ASSERT(sizeof(((struct rpc_h1_conn *)0)->text) > sizeof(((struct rpc_h1_cache *)0)->refusal),
              "a refusal and its newline fit in the text body");

static void run(struct rpc_h1_conn *h);
static void send_response(struct rpc_h1_conn *h);

static struct rpc_h1_conn *h1_of(struct ring_conn *rc)
{
    return ((struct rpc_conn *)rc)->proto;
}

static struct ring_core *core_of(const struct rpc_h1_conn *h)
{
    return h->c->conn.core;
}

static bool is_closing(const struct rpc_h1_conn *h)
{
    return h->c->conn.closing;
}

/* ---- input queue ---- */

static struct h1_in *in_front(struct rpc_h1_conn *h)
{
    return h->in_count ? &h->in[h->in_first] : NULL;
}

static const uint8_t *in_data(struct rpc_h1_conn *h, const struct h1_in *e)
{
    if (e->mem) return e->mem + e->off;
    return ring_buf_data(core_of(h), e->bid) + e->off;
}

/* Consumes <n> bytes of the oldest entry, releasing its buffer when it is used up. */
static void in_consume(struct rpc_h1_conn *h, uint32_t n)
{
    struct h1_in *e = in_front(h);
    ASSERT(e);
    ASSERT(n <= e->len);
    e->off += n;
    e->len -= n;
    if (e->len > 0) return;
    if (e->mem) {
        free(e->mem);
        e->mem = NULL;
    } else {
        ring_buf_unref(core_of(h), e->bid);
    }
    h->in_first = (h->in_first + 1) % H1_IN_MAX;
    h->in_count--;
}

static void in_push(struct rpc_h1_conn *h, uint16_t bid, uint32_t len)
{
    ASSERT(h->in_count < H1_IN_MAX);
    struct h1_in *e = &h->in[(h->in_first + h->in_count) % H1_IN_MAX];
    *e = (struct h1_in){ .off = 0, .len = len, .bid = bid };
    h->in_count++;
}

static void in_release_all(struct rpc_h1_conn *h)
{
    /* Bounded by H1_IN_MAX entries. */
    while (h->in_count > 0) {
        in_consume(h, in_front(h)->len);
    }
}

/* True while the request is handled or answered: nothing consumes input until it ends. */
static bool is_waiting(const struct rpc_h1_conn *h)
{
    return h->state == H1_HANDLE || h->state == H1_RESPOND;
}

/*
 * Copies the unconsumed bytes of receive-buffer entries into memory of the connection's own,
 * up to H1_AHEAD_MAX bytes in all, and gives the buffers back. Without it, a few hundred
 * connections that send a few bytes at a time while their response waits (pipelined requests
 * behind a download the client does not read) would hold every buffer of the core, and every
 * other connection of the core would stop receiving. Only while waiting: then no borrowed
 * pointer (the head's spans, the engine's input) points into the entries.
 */
static void in_copy_out(struct rpc_h1_conn *h)
{
    uint32_t copied = 0;
    for (uint32_t i = 0; i < h->in_count; i++) { /* bounded by H1_IN_MAX */
        struct h1_in *e = &h->in[(h->in_first + i) % H1_IN_MAX];
        if (e->mem) {
            copied += e->len;
            continue;
        }
        if (e->len > H1_AHEAD_MAX - copied) return; /* kept as it is: the client sent that much */
        uint8_t *mem = malloc(e->len);
        if (!mem) return;
        memcpy(mem, in_data(h, e), e->len);
        ring_buf_unref(core_of(h), e->bid);
        *e = (struct h1_in){ .mem = mem, .off = 0, .len = e->len, .bid = RING_CONN_NO_BUF };
        copied += e->len;
    }
}

/*
 * Receive only while the queue has room for what the receive in flight may bring: one entry
 * is kept free for it, because a pause takes effect only after that receive completes. While
 * a request is handled or answered, one entry is enough: it is read only after the response.
 */
static void flow_control(struct rpc_h1_conn *h)
{
    if (is_closing(h)) return;
    uint32_t max = H1_IN_MAX - 1;
    if (is_waiting(h)) {
        in_copy_out(h);
        max = 1;
    }
    if (h->in_count >= max) {
        ring_conn_recv_pause(&h->c->conn);
    } else if (!h->eof) {
        ring_conn_recv_resume(&h->c->conn);
    }
}

/* ---- responses ---- */

static const char *reason(int status)
{
    static const struct {
        int code;
        const char *text;
    } reasons[] = {
        { 100, "Continue" },
        { 200, "OK" },
        { 201, "Created" },
        { 204, "No Content" },
        { 304, "Not Modified" },
        { 400, "Bad Request" },
        { 404, "Not Found" },
        { 405, "Method Not Allowed" },
        { 408, "Request Timeout" },
        { 411, "Length Required" },
        { 412, "Precondition Failed" },
        { 413, "Content Too Large" },
        { 414, "URI Too Long" },
        { 415, "Unsupported Media Type" },
        { 417, "Expectation Failed" },
        { 431, "Request Header Fields Too Large" },
        { 500, "Internal Server Error" },
        { 501, "Not Implemented" },
        { 503, "Service Unavailable" },
        { 505, "HTTP Version Not Supported" },
        { 507, "Insufficient Storage" },
    };

    for (size_t i = 0; i < ARRAY_LEN(reasons); i++) {
        if (reasons[i].code == status) return reasons[i].text;
    }
    return "Unknown";
}

/* IMF-fixdate (RFC 9110 §5.6.7) of the current second, formatted once per second per core. */
static const char *date_now(void)
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[64]; /* 29 used; room for any int gcc imagines */
    static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
    static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec == cached_sec) return cached;
    struct tm tm;
    if (!gmtime_r(&ts.tv_sec, &tm)) return cached;
    (void)snprintf(cached, sizeof(cached), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                   days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                   tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_sec = ts.tv_sec;
    return cached;
}

/* The Connection field this response needs, if any. */
static const char *connection_field(const struct rpc_h1_conn *h)
{
    if (!h->keep_alive) return "Connection: close\r\n";
    if (h->head.version_minor == 0) return "Connection: keep-alive\r\n";
    return "";
}

/* What a response head says, besides the status line, Server and Date. */
struct resp_fields {
    int status;           /* the status code */
    const char *ctype;    /* Content-Type, or NULL */
    const char *encoding; /* Content-Encoding, or NULL */
    bool chunked;         /* Transfer-Encoding: chunked instead of Content-Length */
    uint64_t length;      /* Content-Length when not chunked */
    const char *extra;    /* more fields, each ending in CRLF, or NULL */
    bool vary;            /* Vary: Accept-Encoding (the representation was chosen by it) */
};

/* Appends <text> to the response head; the head is sized so that every head fits. */
static void head_add(struct rpc_h1_conn *h, const char *text)
{
    size_t n = strlen(text);
    ASSERT(n < sizeof(h->resp_head) - h->resp_head_len);
    memcpy(h->resp_head + h->resp_head_len, text, n);
    h->resp_head_len += (uint32_t)n;
}

/* Appends the decimal digits of <v>. */
static void head_add_u64(struct rpc_h1_conn *h, uint64_t v)
{
    char digits[24];
    size_t i = sizeof(digits);
    digits[--i] = '\0';
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    head_add(h, digits + i);
}

static void format_head(struct rpc_h1_conn *h, const struct resp_fields *f)
{
    ASSERT(f->status >= 100 && f->status <= 999);
    h->resp_head_len = 0;
    head_add(h, "HTTP/1.1 ");
    head_add_u64(h, (uint64_t)f->status);
    head_add(h, " ");
    head_add(h, reason(f->status));
    head_add(h, "\r\nServer: ringcas\r\nDate: ");
    head_add(h, date_now());
    if (f->chunked) {
        head_add(h, "\r\nTransfer-Encoding: chunked\r\n");
    } else if (f->status == 304) {
        /* No content, and no length: a 304's Content-Length would have to be its 200's
         * (RFC 9110 §8.6), which a HEAD-like answer need not know. */
        head_add(h, "\r\n");
    } else {
        head_add(h, "\r\nContent-Length: ");
        head_add_u64(h, f->length);
        head_add(h, "\r\n");
    }
    if (f->ctype) {
        head_add(h, "Content-Type: ");
        head_add(h, f->ctype);
        head_add(h, "\r\n");
    }
    if (f->encoding) {
        head_add(h, "Content-Encoding: ");
        head_add(h, f->encoding);
        head_add(h, "\r\n");
    }
    if (f->vary) head_add(h, "Vary: Accept-Encoding\r\n");
    if (h->etag[0] && (f->status == 200 || f->status == 201 || f->status == 304)) {
        head_add(h, "ETag: ");
        head_add(h, h->etag);
        head_add(h, "\r\n");
    }
    /* Without it a shared cache in front may keep a 200 or 404 for a while (RFC 9111
     * §4.2.2, nginx's proxy_cache_valid, Varnish's default TTL) and serve an action result
     * after its outputs were evicted, or a miss after the upload. */
    if ((f->status != 200 && f->status != 304) || h->route.target != RPC_H1_TARGET_CAS) {
        /* Only a CAS blob's 200 never changes under its name; its 304 says what its 200
         * would (RFC 9110 §15.4.5). */
        head_add(h, "Cache-Control: no-cache\r\n");
    }
    if (f->extra) head_add(h, f->extra);
    head_add(h, connection_field(h));
    head_add(h, "\r\n");
}

/*
 * Answers the current request with the head <f> and the f->length bytes at <body> (borrowed
 * until sent, or owned when <owned> is set: freed once sent). A HEAD request gets the head
 * only.
 */
static void respond(struct rpc_h1_conn *h, const struct resp_fields *f, const void *body,
                    void *owned)
{
    ASSERT(h->status == 0);
    ASSERT(!h->body_owned);
    /* A chunked body is streamed; only a HEAD's answer says chunked here, and sends none. */
    ASSERT(!f->chunked || (h->req.method == RPC_H1_METHOD_HEAD && !body));
    if (h->draining) h->keep_alive = false;
    h->status = f->status;
    h->body = body;
    h->body_len = f->chunked ? 0 : (size_t)f->length;
    h->body_owned = owned;
    format_head(h, f);
    h->state = H1_RESPOND;
    if (h->sending) {
        h->resp_queued = true; /* behind the 100 Continue */
        return;
    }
    send_response(h);
}

/* Answers with a one-line text body: <text> and a newline; <fields> as in resp_fields. */
static void respond_text(struct rpc_h1_conn *h, int status, const char *text, const char *fields)
{
    int n = snprintf(h->text, sizeof(h->text), "%s\n", text);
    ASSERT(n > 0);
    size_t len = (size_t)n < sizeof(h->text) ? (size_t)n : sizeof(h->text) - 1;
    struct resp_fields f = {
        .status = status,
        .ctype = "text/plain; charset=utf-8",
        .length = len,
        .extra = fields,
    };
    respond(h, &f, h->text, NULL);
}

static void send_response(struct rpc_h1_conn *h)
{
    struct iovec iov[2] = { { h->resp_head, h->resp_head_len } };
    unsigned count = 1;
    bool with_body = h->req.method != RPC_H1_METHOD_HEAD && h->body_len > 0;
    if (with_body) {
        iov[1] = (struct iovec){ (void *)(uintptr_t)h->body, h->body_len };
        count = 2;
        h->bytes_out += h->body_len;
    }
    int rc = ring_conn_send(&h->c->conn, iov, count);
    if (rc < 0) {
        ring_conn_close(&h->c->conn, rc);
        return;
    }
    h->sending = true;
}

static void send_continue(struct rpc_h1_conn *h)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    struct iovec iov = { (void *)(uintptr_t)line, sizeof(line) - 1 };
    int rc = ring_conn_send(&h->c->conn, &iov, 1);
    if (rc < 0) {
        ring_conn_close(&h->c->conn, rc);
        return;
    }
    h->sending = true;
    h->continue_sent = true;
}

static void linger_expired(struct ring_timer *timer)
{
    struct rpc_h1_conn *h = timer->ctx;
    if (!is_closing(h)) ring_conn_close(&h->c->conn, 0);
}

/*
 * Closes after a response: shut our side (the client reads everything we sent, then EOF),
 * discard what it still sends, close at its FIN or after H1_LINGER_MS.
 */
static void start_linger(struct rpc_h1_conn *h)
{
    h->state = H1_LINGER;
    if (h->eof || shutdown(h->c->conn.fd, SHUT_WR) == -1 ||
        ring_timer_start(core_of(h), &h->linger, &h->c->conn.owner, H1_LINGER_MS) < 0) {
        ring_conn_close(&h->c->conn, 0);
        return;
    }
    run(h);
}

/* Keeps the request's path for its access log line: the head's buffer is gone by its end. */
static void log_target_keep(struct rpc_h1_conn *h)
{
    h->log_target_len = 0;
    if (!h->c->rc->cfg->access_log) return;
    if (!h->log_target) h->log_target = malloc(RPC_ACCESS_LOG_FIELD_MAX + 1);
    if (!h->log_target) return;
    uint32_t n = h->req.path.len;
    /* One byte past the log's field: it then marks the cut. */
    if (n > RPC_ACCESS_LOG_FIELD_MAX + 1) n = RPC_ACCESS_LOG_FIELD_MAX + 1;
    memcpy(h->log_target, h->req.path.ptr, n);
    h->log_target_len = n;
}

static void log_request(struct rpc_h1_conn *h, int status, uint64_t ns)
{
    const struct rpc_access_entry e = {
        .peer = rpc_conn_log_peer(h->c),
        .route = rpc_route_name(h->route.metric),
        .target = h->log_target_len ? h->log_target : NULL,
        .target_len = h->log_target_len,
        .status = status,
        .bytes_in = h->body_in,
        .bytes_out = h->bytes_out,
        .duration_ns = ns,
    };
    rpc_access_log_add(h->c->rc->cfg->access_log, ring_core_index(core_of(h)), &e);
}

/* Counts the finished request and resets the per-request state. */
static void end_request(struct rpc_h1_conn *h, int status)
{
    if (h->in_request) {
        uint64_t ns = base_clock_now_ns() - h->t0_ns;
        rpc_metrics_end(&h->c->rc->metrics, h->route.metric, status, ns, h->body_in, h->bytes_out);
        if (h->c->rc->cfg->access_log) log_request(h, status, ns);
    }
    free(h->body_owned);
    h->body_owned = NULL;
    h->body = NULL;
    h->body_len = 0;
    h->in_request = false;
    h->status = 0;
    h->bytes_out = 0;
    h->body_in = 0;
    h->body_left = 0;
    h->continue_sent = false;
    h->vary_encoding = false;
    h->etag[0] = '\0';
    h->resp_queued = false;
    h->pending_status = 0;
    h->pending_desc = NULL;
    h->fields[0] = '\0';
    h->sink_busy = false;
    h->sink_hold = 0;
    h->drop_max = 0;
    h->sink = H1_SINK_DISCARD;
    h->streaming = false;
    h->stream_chunked = false;
    h->stream_ended = false;
    h->head_sent = false;
    h->stream_length = 0;
    rpc_h1_cache_close(&h->cache);
    memset(&h->req, 0, sizeof(h->req));
}

/*
 * The server stops working for the client (an answer went out, a body it made wait is
 * taken): the client's quiet counts from here (h1_is_busy).
 */
static void busy_ended(struct rpc_h1_conn *h)
{
    h->idle_t0_ns = base_clock_now_ns();
}

static void response_sent(struct rpc_h1_conn *h)
{
    busy_ended(h);
    end_request(h, h->status);
    if (!h->keep_alive || h->draining) {
        start_linger(h);
        return;
    }
    h->state = H1_READ_HEAD;
    run(h);
}

/* ---- operations endpoints ---- */

static void serve_metrics(struct rpc_h1_conn *h)
{
    char *text;
    size_t len;
    if (rpc_ops_metrics(h->c->rc->cfg, &text, &len) < 0) {
        respond_text(h, 503, "out of memory", NULL);
        return;
    }
    struct resp_fields f = {
        .status = 200,
        .ctype = "text/plain; version=0.0.4; charset=utf-8",
        .length = len,
    };
    respond(h, &f, text, text);
}

/* Starts the cache handler (src/rpc/h1_cache.c) on the request. */
static void start_cache(struct rpc_h1_conn *h)
{
    /* zstd responses are chunked, which HTTP/1.0 lacks. */
    if (h->head.version_minor == 0) h->req.accept_zstd = false;
    h->state = H1_HANDLE;
    struct rpc_core *core = h->c->rc;
    /* The engine takes blobs up to a quarter of its budget. */
    uint64_t max_blob = core->cfg->opts.max_size / 4;
    rpc_h1_cache_start(&h->cache, core, &h->req, &h->route, max_blob);
}

static void serve(struct rpc_h1_conn *h)
{
    switch (h->route.target) {
    case RPC_H1_TARGET_METRICS:
        serve_metrics(h);
        return;
    case RPC_H1_TARGET_HEALTHZ:
        respond_text(h, 200, "ok", NULL);
        return;
    case RPC_H1_TARGET_READYZ: {
        const char *why = rpc_ops_unready(h->c->rc);
        respond_text(h, why ? 503 : 200, why ? why : "ready", NULL);
        return;
    }
    case RPC_H1_TARGET_CAS:
    case RPC_H1_TARGET_AC:
    case RPC_H1_TARGET_KV:
        start_cache(h);
        return;
    case RPC_H1_TARGET_NONE:
        break;
    }
    UNREACHABLE();
}

/* ---- requests and bodies ---- */

static bool has_body(const struct rpc_h1_conn *h)
{
    return h->req.chunked || h->body_left > 0;
}

static bool body_is_complete(const struct rpc_h1_conn *h)
{
    return h->req.chunked ? rpc_h1_chunked_is_done(&h->chunked) : h->body_left == 0;
}

/* The body was read: answer the request. */
static void body_done(struct rpc_h1_conn *h)
{
    h->state = H1_HANDLE;
    if (h->pending_status && !h->pending_desc) {
        rpc_h1_answer_empty(h, h->pending_status);
        return;
    }
    if (h->pending_status) {
        respond_text(h, h->pending_status, h->pending_desc, h->fields);
        return;
    }
    if (h->sink == H1_SINK_CACHE) {
        rpc_h1_cache_body_end(&h->cache);
        return;
    }
    serve(h);
}

/*
 * Answers <status> without serving the request. A small body still to come is read and
 * dropped first so the connection can stay open; otherwise (a large or chunked body, or a
 * client waiting for 100 Continue) the answer goes out now and the connection closes.
 */
static void refuse(struct rpc_h1_conn *h, int status, const char *desc)
{
    h->fields[0] = '\0';
    if (status == 405 && h->route.allow) {
        (void)snprintf(h->fields, sizeof(h->fields), "Allow: %s\r\n", h->route.allow);
    }
    /* A chunked body is discarded too; sink_write stops it at H1_DISCARD_MAX. */
    bool small = h->req.chunked || h->body_left <= H1_DISCARD_MAX;
    if (has_body(h) && small && !h->req.expect_continue) {
        h->pending_status = status;
        h->pending_desc = desc;
        h->sink = H1_SINK_DISCARD;
        h->state = H1_READ_BODY;
        return;
    }
    if (has_body(h)) h->keep_alive = false;
    h->state = H1_HANDLE;
    respond_text(h, status, desc, h->fields);
}

static void begin_request(struct rpc_h1_conn *h, enum rpc_route metric)
{
    h->log_target_len = 0; /* a head refused before its route has no target to log */
    /* Read now: a request cut short by its client is logged after the socket is closed. */
    if (h->c->rc->cfg->access_log) (void)rpc_conn_log_peer(h->c);
    h->t0_ns = ring_core_batch_ns(h->c->rc->ring); /* when its bytes were there */
    h->window_t0_ns = h->t0_ns;
    h->window_mark = 0;
    h->route.metric = metric;
    h->in_request = true;
    rpc_metrics_begin(&h->c->rc->metrics, metric);
}

/* The head is parsed: route the request and start reading its body. */
static void handle_head(struct rpc_h1_conn *h)
{
    const char *desc = NULL;
    int rc = rpc_h1_parse_request(&h->head, &h->req, &desc);
    if (rc < 0) {
        memset(&h->route, 0, sizeof(h->route));
        begin_request(h, RPC_ROUTE_HTTP_OTHER);
        /* The framing cannot be trusted: answer and close. */
        h->keep_alive = false;
        h->state = H1_HANDLE;
        respond_text(h, rpc_h1_parse_status(rc), desc, NULL);
        return;
    }
    rpc_h1_route(h->req.method, &h->head.method, &h->req.path, &h->route);
    /* The head's bytes are given back before the request is served: its conditions are read
     * now, against the representations the route names. */
    if ((h->req.if_match | h->req.if_none_match) && h->route.target >= RPC_H1_TARGET_CAS) {
        rpc_h1_cache_conds(&h->head, &h->req, &h->route);
    }
    begin_request(h, h->route.metric);
    log_target_keep(h);
    h->keep_alive = h->req.keep_alive && !h->draining;
    h->body_left = h->req.has_length ? h->req.content_length : 0;
    if (h->req.chunked) rpc_h1_chunked_init(&h->chunked);
    if (h->c->ops_only) {
        /* A probe slot (rpc_conn_accept): one request, then the slot is free again. */
        h->keep_alive = false;
        if (h->route.target == RPC_H1_TARGET_NONE || h->route.target >= RPC_H1_TARGET_CAS) {
            base_counter_inc(&ring_core_counters(h->c->conn.core)->conns_rejected);
            refuse(h, 503, "too many connections (--max-connections): retry later");
            return;
        }
    }
    if (h->route.target == RPC_H1_TARGET_NONE) {
        refuse(h, h->route.status, h->route.err_desc);
        return;
    }
    if (h->route.target >= RPC_H1_TARGET_CAS && h->req.method == RPC_H1_METHOD_PUT) {
        start_cache(h); /* the handler takes the body, or refuses it */
        return;
    }
    /* GET and HEAD take no body, on the operations endpoints and the cache routes alike: a
     * small one is read and dropped before the request is served (body_done), so the
     * connection can carry the next request; a larger one is refused. */
    if (has_body(h) && (h->body_left > H1_DISCARD_MAX || h->req.expect_continue)) {
        refuse(h, 413, "this resource takes no request body");
        return;
    }
    h->sink = H1_SINK_DISCARD;
    h->state = H1_READ_BODY;
}

static void head_error(struct rpc_h1_conn *h, int err, const char *desc)
{
    memset(&h->route, 0, sizeof(h->route));
    memset(&h->req, 0, sizeof(h->req));
    /* A HEAD request's refusal has the refusal's fields but no content (RFC 9110 §9.3.2);
     * the method is the one thing of a refused head that is read (rpc_h1_parse_head). */
    h->req.method = rpc_h1_parse_method(&h->head.method);
    begin_request(h, RPC_ROUTE_HTTP_OTHER);
    h->keep_alive = false;
    h->state = H1_HANDLE;
    LOG_DEBUG("http: fd %d: bad request head: %s", h->c->conn.fd, desc);
    respond_text(h, rpc_h1_parse_status(err), desc, NULL);
}

/* Parses a head straight from the oldest receive buffer. Returns true on progress. */
static bool read_head_in_place(struct rpc_h1_conn *h, struct h1_in *e)
{
    const char *data = (const char *)in_data(h, e);
    const char *desc = "";
    int rc = rpc_h1_parse_head(data, e->len, 0, &h->head, &desc);
    if (rc < 0) {
        head_error(h, rc, desc);
        return true;
    }
    if (rc > 0) {
        handle_head(h);
        in_consume(h, (uint32_t)rc); /* the head's spans are not used past this point */
        return true;
    }
    /* Cut across receives: keep the start (shorter than RPC_H1_HEAD_MAX, or rc would be
     * -EMSGSIZE) in carry and wait for the rest. */
    if (!h->carry) {
        h->carry = malloc(RPC_H1_HEAD_MAX);
        if (!h->carry) {
            ring_conn_close(&h->c->conn, -ENOMEM);
            return false;
        }
    }
    ASSERT(e->len < RPC_H1_HEAD_MAX);
    memcpy(h->carry, data, e->len);
    h->carry_len = e->len;
    h->carry_t0_ns = base_clock_now_ns();
    in_consume(h, e->len);
    return true;
}

/* Appends the oldest buffer to carry and parses again. Returns true on progress. */
static bool read_head_carried(struct rpc_h1_conn *h, struct h1_in *e)
{
    uint32_t old = h->carry_len;
    uint32_t n = e->len;
    if (n > RPC_H1_HEAD_MAX - old) n = RPC_H1_HEAD_MAX - old;
    memcpy(h->carry + old, in_data(h, e), n);
    const char *desc = "";
    int rc = rpc_h1_parse_head(h->carry, old + n, old, &h->head, &desc);
    if (rc < 0) {
        h->carry_len = 0;
        head_error(h, rc, desc);
        return true;
    }
    if (rc == 0) {
        h->carry_len = old + n;
        in_consume(h, n);
        return true;
    }
    /* The previous call found no end in carry[0, old): the head ends in the new bytes. */
    ASSERT((uint32_t)rc > old);
    h->carry_len = 0;
    handle_head(h);
    in_consume(h, (uint32_t)rc - old);
    return true;
}

static bool read_head(struct rpc_h1_conn *h)
{
    struct h1_in *e = in_front(h);
    if (!e) {
        /* At EOF: a clean end between requests, or a head cut short. */
        if (h->eof) ring_conn_close(&h->c->conn, 0);
        return false;
    }
    if (h->carry_len == 0) return read_head_in_place(h, e);
    return read_head_carried(h, e);
}

/* Hands <n> decoded body bytes at <data> to the sink; <consumed> input bytes carry them. */
static void sink_write(struct rpc_h1_conn *h, const uint8_t *data, size_t n, uint32_t consumed)
{
    h->body_in += n;
    if (h->sink == H1_SINK_CACHE && n > 0) {
        /* Held until the engine has taken <data>: an answer before that (a refusal from
         * inside the call, or from its completion) finds the bytes still queued where the
         * next request would start, and closes the connection (give_up_body). */
        h->sink_hold = consumed;
        int rc = rpc_h1_cache_body(&h->cache, data, n);
        if (rc == -EINPROGRESS) {
            /* The engine reads <data> later: keep the buffer until it resumes. */
            h->sink_busy = true;
            return;
        }
        if (rc < 0) return; /* answered and closing: the held bytes go with the connection */
        h->sink_hold = 0;
    }
    in_consume(h, consumed);
    if (h->sink == H1_SINK_DISCARD && h->body_in > H1_DISCARD_MAX) {
        /* Too much to drop: answer now (the refusal's own status, or 413) and close. */
        int status = h->pending_status ? h->pending_status : 413;
        const char *desc = h->pending_desc ? h->pending_desc : "request body too large";
        h->keep_alive = false;
        h->state = H1_HANDLE;
        respond_text(h, status, desc, h->fields);
    } else if (h->sink == H1_SINK_DROP && h->body_in > h->drop_max) {
        /* Not needed, and past what the request may carry (a chunked body has no length
         * to refuse up front): the same 413 as when the body is wanted. */
        h->keep_alive = false;
        h->state = H1_HANDLE;
        respond_text(h, 413, "body over the size limit", NULL);
    }
}

/* Sends "100 Continue" when the client waits for it before sending the body (RFC 9110 §10.1.1). */
static bool wants_continue(const struct rpc_h1_conn *h)
{
    return h->req.expect_continue && h->head.version_minor >= 1 && !h->continue_sent &&
           h->sink == H1_SINK_CACHE && h->body_in == 0 && !h->sending;
}

static bool read_body(struct rpc_h1_conn *h)
{
    if (h->sink_busy) return false;
    if (body_is_complete(h)) {
        body_done(h);
        return true;
    }
    struct h1_in *e = in_front(h);
    if (!e) {
        /* At EOF the body is shorter than announced: nothing is stored. */
        if (h->eof) {
            ring_conn_close(&h->c->conn, -EPROTO);
        } else if (wants_continue(h)) {
            send_continue(h);
        }
        return false;
    }
    if (h->req.chunked) {
        const uint8_t *data;
        size_t n;
        const char *desc = "";
        int rc = rpc_h1_chunked_decode(&h->chunked, in_data(h, e), e->len, &data, &n, &desc);
        if (rc < 0) {
            h->keep_alive = false;
            h->state = H1_HANDLE;
            respond_text(h, rc == -EMSGSIZE ? 413 : 400, desc, NULL);
            return true;
        }
        sink_write(h, data, n, (uint32_t)rc);
        return true;
    }
    uint32_t n = e->len;
    if (n > h->body_left) n = (uint32_t)h->body_left;
    h->body_left -= n;
    sink_write(h, in_data(h, e), n, n);
    return true;
}

/* Lingering close: drop everything until the client's FIN. */
static bool read_linger(struct rpc_h1_conn *h)
{
    in_release_all(h);
    if (h->eof) ring_conn_close(&h->c->conn, 0);
    return false;
}

static bool step(struct rpc_h1_conn *h)
{
    switch (h->state) {
    case H1_READ_HEAD:
        return read_head(h);
    case H1_READ_BODY:
        return read_body(h);
    case H1_LINGER:
        return read_linger(h);
    case H1_HANDLE:
    case H1_RESPOND:
        return false;
    }
    UNREACHABLE();
}

static void run(struct rpc_h1_conn *h)
{
    for (uint32_t i = 0; i < H1_RUN_STEPS_MAX; i++) {
        if (is_closing(h)) return;
        if (!step(h)) {
            flow_control(h);
            return;
        }
    }
    /* Many pipelined requests: let other connections run, then continue. */
    ring_task_defer(core_of(h), &h->run_task);
    flow_control(h);
}

static void run_task(struct ring_task *task)
{
    struct rpc_h1_conn *h = BASE_CONTAINER_OF(task, struct rpc_h1_conn, run_task);
    run(h);
}

/* ---- the handler's side (src/rpc/h1.h) ---- */

struct ring_owner *rpc_h1_owner(struct rpc_h1_conn *h)
{
    return &h->c->conn.owner;
}

/*
 * The body's rate window starts when the body is taken: the time a handler took to decide
 * (a PUT that waited for another upload of its blob, the client held back) is the server's,
 * not the client's.
 */
static void body_window_restart(struct rpc_h1_conn *h)
{
    h->window_t0_ns = base_clock_now_ns();
    h->window_mark = h->body_in;
}

void rpc_h1_body_accept(struct rpc_h1_conn *h)
{
    ASSERT(h->state == H1_HANDLE);
    h->sink = H1_SINK_CACHE;
    h->state = H1_READ_BODY;
    busy_ended(h);
    body_window_restart(h);
    /* Also when the handler decided later (a PUT that waited): the input it held is read. */
    ring_task_defer(core_of(h), &h->run_task);
}

void rpc_h1_body_discard(struct rpc_h1_conn *h, int status, uint64_t max)
{
    ASSERT(h->state == H1_HANDLE);
    if (has_body(h) && h->req.expect_continue) {
        /* The client waits for our word before sending: no body will come. */
        h->keep_alive = false;
        rpc_h1_answer_empty(h, status);
        return;
    }
    h->sink = H1_SINK_DROP;
    h->drop_max = max;
    h->pending_status = status;
    h->pending_desc = NULL;
    h->state = H1_READ_BODY;
    busy_ended(h);
    body_window_restart(h);
    ring_task_defer(core_of(h), &h->run_task); /* as rpc_h1_body_accept */
}

void rpc_h1_body_resume(struct rpc_h1_conn *h)
{
    ASSERT(h->sink_busy);
    h->sink_busy = false;
    busy_ended(h);
    in_consume(h, h->sink_hold);
    h->sink_hold = 0;
    /* The engine held the input: the client could not send meanwhile. */
    body_window_restart(h);
    /* Not from inside the engine's callback: the loop continues after its batch. */
    ring_task_defer(core_of(h), &h->run_task);
}

/*
 * The request is answered: if its body was not read to its end, or bytes of it the engine
 * was given are still queued (held, not consumed: a refusal while the engine had them), the
 * connection cannot carry another request. Those bytes are the body's, whatever the count
 * of body_left says, and must never be parsed as a request (RFC 9112 §6.3; they would be
 * smuggled past any proxy in front).
 */
static void give_up_body(struct rpc_h1_conn *h)
{
    if (h->sink_hold > 0) h->keep_alive = false;
    h->sink_busy = false; /* the handler gave the held input up */
    if (has_body(h) && !body_is_complete(h)) h->keep_alive = false;
}

void rpc_h1_answer(struct rpc_h1_conn *h, int status, const char *text)
{
    /* Refused before any of its body was read (the handler has not taken it: the state is
     * still H1_HANDLE): a small body is read and dropped first, as for every refusal. */
    if (h->state == H1_HANDLE && has_body(h) && !body_is_complete(h) && h->body_in == 0) {
        refuse(h, status, text);
        /* From the request's own step the loop goes on; from an engine callback it must be
         * started again, after the callback's batch. */
        if (h->state == H1_READ_BODY) ring_task_defer(core_of(h), &h->run_task);
        return;
    }
    give_up_body(h);
    h->state = H1_HANDLE;
    respond_text(h, status, text, NULL);
}

void rpc_h1_answer_empty(struct rpc_h1_conn *h, int status)
{
    give_up_body(h);
    struct resp_fields f = { .status = status, .length = 0 };
    h->state = H1_HANDLE;
    respond(h, &f, NULL, NULL);
}

void rpc_h1_answer_head(struct rpc_h1_conn *h, uint64_t length, bool zstd)
{
    ASSERT(h->req.method == RPC_H1_METHOD_HEAD);
    give_up_body(h);
    /* The GET's fields (RFC 9110 §9.3.2), as stream_head writes them; a Content-Length the
     * GET would not send is one a HEAD must not send (RFC 9110 §8.6). */
    struct resp_fields f = {
        .status = 200,
        .ctype = "application/octet-stream",
        .encoding = zstd ? "zstd" : NULL,
        .chunked = zstd,
        .length = length,
        .vary = h->vary_encoding,
    };
    h->state = H1_HANDLE;
    respond(h, &f, NULL, NULL);
}

void rpc_h1_answer_not_modified(struct rpc_h1_conn *h)
{
    ASSERT(h->req.method == RPC_H1_METHOD_GET || h->req.method == RPC_H1_METHOD_HEAD);
    give_up_body(h);
    struct resp_fields f = { .status = 304, .vary = h->vary_encoding };
    h->state = H1_HANDLE;
    respond(h, &f, NULL, NULL);
}

void rpc_h1_etag(struct rpc_h1_conn *h, const char *etag)
{
    size_t n = strlen(etag);
    ASSERT(n <= RPC_H1_ETAG_MAX);
    memcpy(h->etag, etag, n + 1);
}

void rpc_h1_vary_encoding(struct rpc_h1_conn *h)
{
    h->vary_encoding = true;
}

void rpc_h1_stream_begin(struct rpc_h1_conn *h, uint64_t length, bool zstd)
{
    ASSERT(!h->streaming);
    ASSERT(h->status == 0);
    h->streaming = true;
    h->stream_chunked = zstd;
    h->stream_length = length;
    h->head_sent = false;
    h->stream_ended = false;
    h->state = H1_RESPOND;
}

/* Formats the streamed response's head once, before its first bytes go out. */
static void stream_head(struct rpc_h1_conn *h, struct iovec *iov, unsigned *count)
{
    if (h->head_sent) return;
    give_up_body(h);
    if (h->draining) h->keep_alive = false;
    h->status = 200;
    struct resp_fields f = {
        .status = 200,
        .ctype = "application/octet-stream",
        .encoding = h->stream_chunked ? "zstd" : NULL,
        .chunked = h->stream_chunked,
        .length = h->stream_length,
        .vary = h->vary_encoding,
    };
    format_head(h, &f);
    iov[(*count)++] = (struct iovec){ h->resp_head, h->resp_head_len };
    h->head_sent = true;
}

static void stream_send(struct rpc_h1_conn *h, const struct iovec *iov, unsigned count)
{
    int rc = ring_conn_send(&h->c->conn, iov, count);
    if (rc < 0) {
        ring_conn_close(&h->c->conn, rc);
        return;
    }
    h->sending = true;
}

void rpc_h1_stream_pieces(struct rpc_h1_conn *h, const struct iovec *pieces, unsigned count)
{
    ASSERT(h->streaming && !h->stream_ended);
    ASSERT(count > 0 && count <= RPC_H1_STREAM_PIECES_MAX);
    STATIC_ASSERT(RPC_H1_STREAM_PIECES_MAX + 3 <= RING_CONN_IOV_MAX, "head, chunk line, CRLF");
    struct iovec iov[RPC_H1_STREAM_PIECES_MAX + 3];
    unsigned n = 0;
    stream_head(h, iov, &n);
    size_t len = 0;
    for (unsigned i = 0; i < count; i++) { /* bounded by RPC_H1_STREAM_PIECES_MAX */
        len += pieces[i].iov_len;
    }
    ASSERT(len > 0);
    if (h->stream_chunked) {
        /* One chunk for the whole send: chunk boundaries carry no meaning (RFC 9112 §7.1). */
        int k = snprintf(h->chunk_line, sizeof(h->chunk_line), "%zx\r\n", len);
        ASSERT(k > 0 && (size_t)k < sizeof(h->chunk_line));
        iov[n++] = (struct iovec){ h->chunk_line, (size_t)k };
    }
    memcpy(&iov[n], pieces, count * sizeof(*pieces));
    n += count;
    if (h->stream_chunked) iov[n++] = (struct iovec){ (void *)(uintptr_t) "\r\n", 2 };
    h->bytes_out += len;
    stream_send(h, iov, n);
}

static void done_task(struct ring_task *task)
{
    struct rpc_h1_conn *h = BASE_CONTAINER_OF(task, struct rpc_h1_conn, done_task);
    if (!is_closing(h)) response_sent(h);
}

void rpc_h1_stream_end(struct rpc_h1_conn *h)
{
    ASSERT(h->streaming && !h->stream_ended);
    h->stream_ended = true;
    struct iovec iov[2];
    unsigned count = 0;
    stream_head(h, iov, &count);
    if (h->stream_chunked) iov[count++] = (struct iovec){ (void *)(uintptr_t) "0\r\n\r\n", 5 };
    if (count > 0) {
        stream_send(h, iov, count);
        return;
    }
    /* Every byte went out already; finish after the engine's callback returns. */
    ring_task_defer(core_of(h), &h->done_task);
}

void rpc_h1_stream_fail(struct rpc_h1_conn *h, int status, const char *text)
{
    ASSERT(h->streaming);
    if (!h->head_sent) {
        h->streaming = false;
        rpc_h1_answer(h, status, text);
        return;
    }
    /* The client reads a body shorter than announced, or no final chunk. */
    char peer[RING_CONN_PEER_MAX];
    LOG_WARN("http: %s: response cut short: %s", ring_conn_peer(&h->c->conn, peer), text);
    ring_conn_close(&h->c->conn, -EIO);
}

/* ---- ring callbacks ---- */

/*
 * True when the client, though it sends, is too slow to go on: a request head begun more than
 * a read timeout ago and still not complete, or a body that brought fewer than
 * RPC_MIN_RATE bytes a second over the last read timeout. A byte now and then keeps every
 * receive within its own timeout, so without this a client would hold a connection, and an
 * upload slot of the engine, for as long as it likes. Checked as bytes arrive: a client that
 * sends nothing is the read timeout's; a slow one is found within two read timeouts.
 */
static bool too_slow(struct rpc_h1_conn *h)
{
    uint64_t window_ns = (uint64_t)h->c->rc->cfg->read_timeout_ms * BASE_NS_PER_MS;
    if (window_ns == 0) return false;
    uint64_t now = base_clock_now_ns();
    if (h->state == H1_READ_HEAD) return h->carry_len > 0 && now - h->carry_t0_ns > window_ns;
    if (h->state != H1_READ_BODY || h->sink_busy || now - h->window_t0_ns < window_ns) {
        return false;
    }
    uint64_t want = rpc_min_bytes(h->c->rc->cfg->read_timeout_ms);
    if (h->body_in - h->window_mark < want) return true;
    h->window_t0_ns = now;
    h->window_mark = h->body_in;
    return false;
}

static void h1_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len)
{
    struct rpc_h1_conn *h = h1_of(rc);
    if (len > 0 && too_slow(h)) {
        ring_buf_unref(rc->core, bid);
        LOG_DEBUG("http: fd %d: client too slow: closing", rc->fd);
        base_counter_inc(&ring_core_counters(rc->core)->read_timeouts);
        h->status = 408; /* counted so; never sent */
        ring_conn_close(rc, -ETIMEDOUT);
        return;
    }
    if (len == 0) {
        h->eof = true;
    } else if (h->state == H1_LINGER) {
        ring_buf_unref(rc->core, bid);
        return;
    } else {
        in_push(h, bid, len);
    }
    run(h);
}

static void h1_on_sent(struct ring_conn *rc)
{
    struct rpc_h1_conn *h = h1_of(rc);
    ASSERT(h->sending);
    h->sending = false;
    if (h->state != H1_RESPOND) {
        /* The 100 Continue went out while the body is being read. */
        run(h);
        return;
    }
    if (h->resp_queued) {
        h->resp_queued = false;
        send_response(h);
        return;
    }
    if (h->streaming && !h->stream_ended) {
        rpc_h1_cache_piece_sent(&h->cache);
        return;
    }
    response_sent(h);
}

static void h1_on_close(struct ring_conn *rc, int reason)
{
    struct rpc_h1_conn *h = h1_of(rc);
    (void)reason;
    /* The engine lets go of borrowed input before the buffers go back. */
    rpc_h1_cache_close(&h->cache);
    in_release_all(h);
    /* A request cut short by the close counts with the status it was getting, or 499 (the
     * client went away first, as nginx counts it). */
    end_request(h, h->status ? h->status : 499);
    /* Last, so that nothing the steps above queued stays queued in freed memory. */
    ring_task_cancel(&h->run_task);
    ring_task_cancel(&h->done_task);
    free(h->carry);
    free(h->log_target);
    struct rpc_conn *c = h->c;
    free(h);
    rpc_conn_free(c);
}

/*
 * Asked when a receive's read timeout runs out. Busy while the server works for the client,
 * and for a read timeout after that: the receive under a long answer (or a PUT that waits for
 * another upload of its blob) is armed while the server works and re-armed at each timeout,
 * so the one in flight when the work ends may run out a moment later, and the client, which
 * waited for the server until then, would find its connection closed as idle as it sends its
 * next request (or its body, after a 100 Continue). It gets a whole read timeout instead.
 */
static bool h1_is_busy(const struct ring_conn *rc)
{
    const struct rpc_h1_conn *h = ((const struct rpc_conn *)rc)->proto;
    if (h->state == H1_HANDLE || h->state == H1_RESPOND || h->sink_busy) return true;
    uint64_t window_ns = (uint64_t)h->c->rc->cfg->read_timeout_ms * BASE_NS_PER_MS;
    return h->idle_t0_ns != 0 && base_clock_now_ns() - h->idle_t0_ns < window_ns;
}

static void h1_on_drain(struct ring_conn *rc)
{
    struct rpc_h1_conn *h = h1_of(rc);
    h->draining = true;
    /* Between requests with nothing of the next one received: close now. Otherwise the
     * request in progress finishes and its response says Connection: close. */
    if (h->state == H1_READ_HEAD && h->in_count == 0 && h->carry_len == 0) ring_conn_close(rc, 0);
}

static const struct ring_conn_ops h1_ops = {
    .on_recv = h1_on_recv,
    .on_sent = h1_on_sent,
    .on_close = h1_on_close,
    .is_busy = h1_is_busy,
    .on_drain = h1_on_drain,
};

void rpc_h1_start(struct rpc_conn *c, const uint8_t *prefix, uint32_t prefix_len, uint16_t bid,
                  uint32_t len)
{
    ASSERT(prefix_len <= RPC_H2_PREFACE_LEN);
    struct rpc_h1_conn *h = calloc(1, sizeof(*h));
    if (h && prefix_len > 0) {
        h->carry = malloc(RPC_H1_HEAD_MAX);
        if (h->carry) {
            memcpy(h->carry, prefix, prefix_len);
            h->carry_len = prefix_len;
            h->carry_t0_ns = base_clock_now_ns();
        }
    }
    if (!h || (prefix_len > 0 && !h->carry)) {
        /* The sniffing callbacks stay: their on_close frees the connection. */
        free(h);
        if (len > 0) ring_buf_unref(c->conn.core, bid);
        ring_conn_close(&c->conn, -ENOMEM);
        return;
    }
    h->c = c;
    h->state = H1_READ_HEAD;
    ring_timer_init(&h->linger, linger_expired, h);
    ring_task_init(&h->run_task, run_task);
    ring_task_init(&h->done_task, done_task);
    rpc_h1_cache_init(&h->cache, h);
    c->proto = h;
    c->conn.ops = &h1_ops;
    h->draining = c->conn.draining;
    if (len > 0) {
        in_push(h, bid, len);
    } else {
        h->eof = true;
    }
    run(h);
}
