/*
 * Keep-alive HTTP/1.1 client connection: connect, then one request at a time (head and body
 * in one ring_conn_send), the response parsed as it streams in.
 *
 * Invariants:
 * - a request's done runs exactly once per successful start, from a task: done_task when the
 *   response is complete and its send finished, close_task when the connection ended first;
 * - on_close runs once per successful open, from close_task, after the last request's done;
 * - the parser never keeps body bytes: it counts them and forgets them.
 *
 * Sections: the response parser, the connection, requests.
 */
#include "client/h1.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/parse.h"
#include "client/conn.h"
#include "ring/buf.h"

STATIC_ASSERT(offsetof(struct client_h1, rc) == 0, "ring_conn callbacks give the connection back");

static struct client_h1 *h1_of(struct ring_conn *rc)
{
    return BASE_CONTAINER_OF(rc, struct client_h1, rc);
}

/* ---- the response parser ---- */

void client_h1_parse_reset(struct client_h1 *h, uint8_t method)
{
    h->method = method;
    h->pstate = CLIENT_H1_P_HEAD;
    h->head_len = 0;
    h->line_len = 0;
    h->body_left = 0;
    h->keep_alive = true;
    h->result.status = 0;
    h->result.body_len = 0;
    h->result.encoding = CLIENT_H1_ENC_IDENTITY;
    h->result.message[0] = '\0';
}

/* The value of field <name> in the head's field lines [p, end), or NULL. */
static const char *field_value(const char *p, const char *end, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    /* Bounded by the head's lines (at most CLIENT_H1_HEAD_MAX bytes). */
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - p) > nlen && p[nlen] == ':' && strncasecmp(p, name, nlen) == 0) {
            const char *v = p + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            const char *ve = eol;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
                ve--;
            }
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* True when the comma-separated <v>/<len> lists <token> (case-insensitive). */
static bool has_token(const char *v, size_t len, const char *token)
{
    size_t tlen = strlen(token);
    /* Bounded by <len>. */
    for (size_t i = 0; i + tlen <= len; i++) {
        bool start = i == 0 || v[i - 1] == ',' || v[i - 1] == ' ';
        bool stop = i + tlen == len || v[i + tlen] == ',' || v[i + tlen] == ' ';
        if (start && stop && strncasecmp(v + i, token, tlen) == 0) return true;
    }
    return false;
}

/* Decides the body's framing from the complete head in head[0, <end>). 0 or -EPROTO. */
static int head_done(struct client_h1 *h, size_t end)
{
    const char *p = h->head;
    if (end < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ') return -EPROTO;
    int code = 0;
    for (size_t i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9') return -EPROTO;
        code = code * 10 + (p[i] - '0');
    }
    const char *fields = memmem(p, end, "\r\n", 2);
    ASSERT(fields); /* the head ends with CRLF CRLF */
    fields += 2;
    const char *fend = p + end;
    size_t vlen = 0;
    const char *conn = field_value(fields, fend, "Connection", &vlen);
    if (p[7] == '0') {
        h->keep_alive = conn && has_token(conn, vlen, "keep-alive");
    } else {
        h->keep_alive = !(conn && has_token(conn, vlen, "close"));
    }
    if (code >= 100 && code < 200 && code != 101) {
        h->head_len = 0; /* an interim response (100 Continue): the final one follows */
        return 0;
    }
    h->result.status = code;
    const char *ce = field_value(fields, fend, "Content-Encoding", &vlen);
    if (ce && vlen == 4 && strncasecmp(ce, "zstd", 4) == 0) {
        h->result.encoding = CLIENT_H1_ENC_ZSTD;
    } else if (ce && vlen > 0 && !(vlen == 8 && strncasecmp(ce, "identity", 8) == 0)) {
        h->result.encoding = CLIENT_H1_ENC_OTHER;
    }
    if (h->method == CLIENT_H1_HEAD || code == 204 || code == 304) {
        h->pstate = CLIENT_H1_P_DONE;
        return 0;
    }
    const char *te = field_value(fields, fend, "Transfer-Encoding", &vlen);
    if (te && has_token(te, vlen, "chunked")) {
        h->pstate = CLIENT_H1_P_CHUNK_SIZE;
        return 0;
    }
    const char *cl = field_value(fields, fend, "Content-Length", &vlen);
    if (!cl) {
        h->pstate = CLIENT_H1_P_UNTIL_EOF;
        h->keep_alive = false;
        return 0;
    }
    char num[24];
    if (vlen == 0 || vlen >= sizeof(num)) return -EPROTO;
    memcpy(num, cl, vlen);
    num[vlen] = '\0';
    if (base_parse_u64(num, &h->body_left) < 0) return -EPROTO;
    h->pstate = h->body_left == 0 ? CLIENT_H1_P_DONE : CLIENT_H1_P_LENGTH;
    return 0;
}

/* Gathers head bytes; returns the bytes taken or -EPROTO. */
static int64_t parse_head(struct client_h1 *h, const uint8_t *p, size_t len)
{
    size_t old = h->head_len;
    size_t room = sizeof(h->head) - old;
    size_t n = len < room ? len : room;
    memcpy(h->head + old, p, n);
    h->head_len = old + n;
    size_t from = old > 3 ? old - 3 : 0;
    const char *e = memmem(h->head + from, h->head_len - from, "\r\n\r\n", 4);
    if (!e) return h->head_len == sizeof(h->head) ? -EPROTO : (int64_t)n;
    size_t end = (size_t)(e - h->head) + 4;
    int rc = head_done(h, end);
    if (rc < 0) return rc;
    return (int64_t)(end - old);
}

/*
 * Gathers a CRLF-terminated line into line[]; returns the bytes taken or -EPROTO (too long).
 * *<complete> tells whether the line ended (line[] then holds it without its CRLF).
 */
static int64_t take_line(struct client_h1 *h, const uint8_t *p, size_t len, bool *complete)
{
    const uint8_t *nl = memchr(p, '\n', len);
    size_t n = nl ? (size_t)(nl - p) + 1 : len;
    if (h->line_len + n > sizeof(h->line)) return -EPROTO;
    memcpy(h->line + h->line_len, p, n);
    h->line_len += n;
    *complete = nl != NULL;
    if (!nl) return (int64_t)n;
    if (h->line_len < 2 || h->line[h->line_len - 2] != '\r') return -EPROTO;
    h->line_len -= 2;
    return (int64_t)n;
}

/* Parses line[] as a chunk-size line (hex digits, optional extensions). */
static int chunk_size(struct client_h1 *h)
{
    uint64_t v = 0;
    size_t digits = 0;
    for (size_t i = 0; i < h->line_len && h->line[i] != ';' && h->line[i] != ' '; i++) {
        char c = h->line[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0 || ++digits > 15) return -EPROTO;
        v = v * 16 + (uint64_t)d;
    }
    if (digits == 0) return -EPROTO;
    h->line_len = 0;
    h->body_left = v;
    h->pstate = v == 0 ? CLIENT_H1_P_TRAILER : CLIENT_H1_P_CHUNK_DATA;
    return 0;
}

/*
 * Keeps the start of an error answer's body: a load generator counts bodies, it does not
 * store them, but a 413 or 507 says why in its body, and "HTTP 507" alone does not. Line
 * breaks become spaces and other control bytes '?', so the reason prints on one line.
 */
static void keep_message(struct client_h1 *h, const uint8_t *p, size_t len)
{
    if (h->result.status >= 200 && h->result.status <= 299) return;
    char *m = h->result.message;
    size_t have = strlen(m);
    /* Bounded by the room left. */
    for (size_t i = 0; i < len && have + 1 < CLIENT_H1_MESSAGE_MAX; i++) {
        char c = (char)p[i];
        if (c == '\r' || c == '\n' || c == '\t') c = ' ';
        if ((unsigned char)c < 0x20 || c == 0x7f) c = '?';
        m[have++] = c;
    }
    m[have] = '\0';
}

/* Body bytes of a Content-Length body, a chunk or an until-close body. */
static int64_t take_body(struct client_h1 *h, const uint8_t *p, size_t len)
{
    bool ok = h->result.status >= 200 && h->result.status <= 299;
    if (h->pstate == CLIENT_H1_P_UNTIL_EOF) {
        keep_message(h, p, len);
        if (ok && h->on_body) h->on_body(h, p, len);
        h->result.body_len += len;
        return (int64_t)len;
    }
    size_t n = h->body_left < len ? (size_t)h->body_left : len;
    keep_message(h, p, n);
    if (ok && h->on_body && n > 0) h->on_body(h, p, n);
    h->body_left -= n;
    h->result.body_len += n;
    if (h->body_left == 0) {
        h->pstate = h->pstate == CLIENT_H1_P_LENGTH ? CLIENT_H1_P_DONE : CLIENT_H1_P_CHUNK_CRLF;
    }
    return (int64_t)n;
}

/* One step of the chunked framing's lines; returns the bytes taken or -EPROTO. */
static int64_t take_chunk_line(struct client_h1 *h, const uint8_t *p, size_t len)
{
    if (h->pstate == CLIENT_H1_P_CHUNK_CRLF) {
        /* Exactly CRLF after the data, checked byte by byte. */
        char want = h->line_len == 0 ? '\r' : '\n';
        if ((char)p[0] != want) return -EPROTO;
        if (++h->line_len == 2) {
            h->line_len = 0;
            h->pstate = CLIENT_H1_P_CHUNK_SIZE;
        }
        return 1;
    }
    bool complete = false;
    int64_t n = take_line(h, p, len, &complete);
    if (n < 0 || !complete) return n;
    if (h->pstate == CLIENT_H1_P_CHUNK_SIZE) return chunk_size(h) < 0 ? -EPROTO : n;
    ASSERT(h->pstate == CLIENT_H1_P_TRAILER);
    if (h->line_len == 0) h->pstate = CLIENT_H1_P_DONE; /* trailer fields are ignored */
    h->line_len = 0;
    return n;
}

int64_t client_h1_parse(struct client_h1 *h, const uint8_t *p, size_t len)
{
    size_t used = 0;
    /* Bounded: every step takes at least one byte. */
    while (used < len && h->pstate != CLIENT_H1_P_DONE) {
        int64_t n;
        switch (h->pstate) {
        case CLIENT_H1_P_HEAD:
            n = parse_head(h, p + used, len - used);
            break;
        case CLIENT_H1_P_LENGTH:
        case CLIENT_H1_P_CHUNK_DATA:
        case CLIENT_H1_P_UNTIL_EOF:
            n = take_body(h, p + used, len - used);
            break;
        default:
            n = take_chunk_line(h, p + used, len - used);
            break;
        }
        if (n < 0) return n;
        ASSERT(n > 0);
        used += (size_t)n;
    }
    return (int64_t)used;
}

/* ---- the connection ---- */

static void h1_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len);
static void h1_on_sent(struct ring_conn *rc);
static void h1_on_close(struct ring_conn *rc, int reason);
static bool h1_is_busy(const struct ring_conn *rc);

static const struct ring_conn_ops h1_ops = {
    .on_recv = h1_on_recv,
    .on_sent = h1_on_sent,
    .on_close = h1_on_close,
    .is_busy = h1_is_busy,
    .on_drain = NULL,
};

/* Begins closing; the request in flight (if any) fails with <err> unless complete. */
static void h1_fail(struct client_h1 *h, int err)
{
    if (h->active && h->pstate != CLIENT_H1_P_DONE && h->result.err == 0) h->result.err = err;
    if (h->close_reason == 0) h->close_reason = err == -ECANCELED ? 0 : err;
    if (h->state == CLIENT_CONN_OPEN) {
        h->state = CLIENT_CONN_CLOSING;
        ring_conn_close(&h->rc, h->close_reason);
    } else if (h->state == CLIENT_CONN_CONNECTING) {
        h->state = CLIENT_CONN_CLOSING;
        client_connect_cancel(&h->connect);
    }
}

/* The request is complete when its response is and its send finished. */
static void h1_maybe_finish(struct client_h1 *h)
{
    if (!h->active || h->pstate != CLIENT_H1_P_DONE || !h->sent) return;
    if (!h->keep_alive) {
        h1_fail(h, 0); /* done runs from the close, with the complete result */
        return;
    }
    ring_task_defer(h->cl->core, &h->done_task);
}

static void h1_finish(struct client_h1 *h)
{
    ASSERT(h->active);
    h->active = false;
    h->timing.end_ns = base_clock_now_ns();
    /* The body's trailing line break is no part of the reason. Bounded by its length. */
    size_t len = strlen(h->result.message);
    while (len > 0 && h->result.message[len - 1] == ' ') {
        h->result.message[--len] = '\0';
    }
    h->done(h);
}

static void h1_done_task(struct ring_task *task)
{
    struct client_h1 *h = BASE_CONTAINER_OF(task, struct client_h1, done_task);
    if (h->active) h1_finish(h);
}

static void h1_close_task(struct ring_task *task)
{
    struct client_h1 *h = BASE_CONTAINER_OF(task, struct client_h1, close_task);
    ring_task_cancel(&h->done_task);
    if (h->active) {
        if (h->pstate != CLIENT_H1_P_DONE && h->result.err == 0) h->result.err = -ECONNRESET;
        h1_finish(h);
    }
    h->state = CLIENT_CONN_IDLE;
    base_counter_dec(&h->cl->counters.conns);
    h->on_close(h, h->close_reason);
    /* <h> may be freed or reopened now. */
}

static void h1_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len)
{
    struct client_h1 *h = h1_of(rc);
    if (len == 0) {
        if (h->active && h->pstate == CLIENT_H1_P_UNTIL_EOF) {
            h->pstate = CLIENT_H1_P_DONE;
            h->keep_alive = false;
        }
        /* The server closed: quietly when nothing was cut short. */
        bool clean = !h->active || h->pstate == CLIENT_H1_P_DONE;
        h1_fail(h, clean ? 0 : -ECONNRESET);
        return;
    }
    const uint8_t *p = ring_buf_data(rc->core, bid);
    int64_t n = -EPROTO; /* bytes nobody asked for are a broken server */
    if (h->active && h->pstate != CLIENT_H1_P_DONE) {
        if (h->timing.first_byte_ns == 0) h->timing.first_byte_ns = base_clock_now_ns();
        n = client_h1_parse(h, p, len);
        if (n >= 0 && (uint64_t)n < len) n = -EPROTO; /* we never pipeline */
    }
    ring_buf_unref(rc->core, bid);
    if (n < 0) {
        h1_fail(h, (int)n);
        return;
    }
    h1_maybe_finish(h);
}

static void h1_on_sent(struct ring_conn *rc)
{
    struct client_h1 *h = h1_of(rc);
    h->sent = true;
    h1_maybe_finish(h);
}

static bool h1_is_busy(const struct ring_conn *rc)
{
    const struct client_h1 *h = (const struct client_h1 *)(const void *)rc; /* rc is first */
    /* Not waiting for the server: its silence is no timeout. */
    return !h->active || h->pstate == CLIENT_H1_P_DONE;
}

static void h1_on_close(struct ring_conn *rc, int reason)
{
    struct client_h1 *h = h1_of(rc);
    h->ring_live = false;
    h->state = CLIENT_CONN_CLOSING;
    if (reason == -ETIMEDOUT) base_counter_inc(&h->cl->counters.io_timeouts);
    if (h->close_reason == 0) h->close_reason = reason;
    if (h->active && h->pstate != CLIENT_H1_P_DONE && h->result.err == 0) {
        h->result.err = reason < 0 ? reason : -ECONNRESET;
    }
    ring_task_defer(h->cl->core, &h->close_task);
}

static int h1_send(struct client_h1 *h)
{
    unsigned count = h->iov[1].iov_len > 0 ? 2 : 1;
    return ring_conn_send(&h->rc, h->iov, count);
}

static void h1_connected(struct client_connect *cc, int res)
{
    struct client_h1 *h = BASE_CONTAINER_OF(cc, struct client_h1, connect);
    if (res < 0 || h->state != CLIENT_CONN_CONNECTING) {
        if (res == -ETIMEDOUT) base_counter_inc(&h->cl->counters.io_timeouts);
        if (res >= 0) (void)close(res);
        if (h->close_reason == 0) h->close_reason = res < 0 ? res : 0;
        if (h->active && h->result.err == 0) h->result.err = res < 0 ? res : -ECANCELED;
        h->state = CLIENT_CONN_CLOSING;
        ring_task_defer(h->cl->core, &h->close_task);
        return;
    }
    ring_conn_init(&h->rc, h->cl->core, res, &h1_ops, h->opts.io_timeout_ms, h->opts.io_timeout_ms);
    h->ring_live = true;
    h->state = CLIENT_CONN_OPEN;
    int rc = ring_conn_recv_start(&h->rc);
    if (rc == 0 && h->send_pending) {
        h->send_pending = false;
        rc = h1_send(h);
    }
    if (rc < 0) h1_fail(h, rc);
}

int client_h1_open(struct client_h1 *h, struct client *cl, const struct client_addr *addr,
                   const struct client_h1_options *o, client_h1_close_fn *on_close)
{
    ASSERT(on_close);
    ASSERT(o->connect_timeout_ms > 0 && o->io_timeout_ms > 0);
    ASSERT(h->state == CLIENT_CONN_IDLE);
    ASSERT(!h->active);
    h->cl = cl;
    h->opts = *o;
    h->on_close = on_close;
    h->close_reason = 0;
    h->send_pending = false;
    h->keep_alive = true;
    h->ring_live = false;
    ring_task_init(&h->done_task, h1_done_task);
    ring_task_init(&h->close_task, h1_close_task);
    ring_owner_init(&h->connect.owner);
    (void)snprintf(h->host, sizeof(h->host), "%s", addr->authority);
    int rc = client_connect_start(&h->connect, cl->core, addr, o->connect_timeout_ms, h1_connected);
    if (rc < 0) return rc;
    h->state = CLIENT_CONN_CONNECTING;
    base_counter_inc(&cl->counters.conns);
    return 0;
}

void client_h1_close(struct client_h1 *h)
{
    h1_fail(h, -ECANCELED);
}

bool client_h1_is_ready(const struct client_h1 *h)
{
    bool up = h->state == CLIENT_CONN_CONNECTING || h->state == CLIENT_CONN_OPEN;
    return up && h->keep_alive && !h->active;
}

/* ---- requests ---- */

static const char *const method_names[] = {
    [CLIENT_H1_GET] = "GET",
    [CLIENT_H1_HEAD] = "HEAD",
    [CLIENT_H1_PUT] = "PUT",
};

/* Writes the request head into out[]. */
static int build_head(struct client_h1 *h, const struct client_h1_request *req)
{
    char length[48] = "";
    if (req->method == CLIENT_H1_PUT) {
        (void)snprintf(length, sizeof(length), "Content-Length: %llu\r\n",
                       (unsigned long long)req->body_len);
    }
    const char *extra = req->extra_headers ? req->extra_headers : "";
    int n = snprintf(h->out, sizeof(h->out),
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ringcas-bench\r\n%s%s\r\n",
                     method_names[req->method], req->path, h->host, length, extra);
    if (n < 0 || (size_t)n >= sizeof(h->out)) return -EINVAL;
    h->out_len = (size_t)n;
    return 0;
}

int client_h1_request_start(struct client_h1 *h, const struct client_h1_request *req)
{
    ASSERT(req->done);
    if (h->active) return -EBUSY;
    if (!client_h1_is_ready(h)) return -EPIPE;
    if (req->method > CLIENT_H1_PUT || !req->path || req->path[0] != '/') return -EINVAL;
    if (strlen(req->path) > CLIENT_H1_PATH_MAX) return -EINVAL;
    if (req->extra_headers && strlen(req->extra_headers) > CLIENT_H1_EXTRA_MAX) return -EINVAL;
    if (req->method != CLIENT_H1_PUT && req->body_len > 0) return -EINVAL;
    int rc = build_head(h, req);
    if (rc < 0) return rc;
    h->iov[0] = (struct iovec){ .iov_base = h->out, .iov_len = h->out_len };
    h->iov[1] = (struct iovec){ .iov_base = (void *)(uintptr_t)req->body,
                                .iov_len = (size_t)req->body_len };
    client_h1_parse_reset(h, req->method);
    h->result.err = 0;
    h->timing = (struct client_h1_timing){ .start_ns = base_clock_now_ns() };
    h->done = req->done;
    h->on_body = req->on_body;
    h->sent = false;
    if (h->state == CLIENT_CONN_OPEN) {
        rc = h1_send(h);
        if (rc < 0) return rc;
    } else {
        h->send_pending = true;
    }
    h->active = true;
    return 0;
}
