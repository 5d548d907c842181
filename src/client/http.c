/*
 * HTTP/1.1 GET on the ring: connect, one send, receive until the response is complete or the
 * server closes, then close and report.
 *
 * Invariant: done runs once, after the socket's last op (ring_conn's on_close) or, when the
 * connect failed, after the connect op's CQE.
 */
#include "client/http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/parse.h"
#include "ring/buf.h"

static void http_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len);
static void http_on_sent(struct ring_conn *rc);
static void http_on_close(struct ring_conn *rc, int reason);

static const struct ring_conn_ops http_ops = {
    .on_recv = http_on_recv,
    .on_sent = http_on_sent,
    .on_close = http_on_close,
    .is_busy = NULL,
    .on_drain = NULL,
};

STATIC_ASSERT(offsetof(struct client_http, rc) == 0, "ring_conn callbacks give the request back");

static struct client_http *http_of(struct ring_conn *rc)
{
    return BASE_CONTAINER_OF(rc, struct client_http, rc);
}

/* ---- parsing ---- */

/* Parses the hex chunk size at <p> up to its CRLF; bytes of the line or 0 (need more). */
static int64_t chunk_line(const char *p, size_t len, uint64_t *size)
{
    const char *crlf = memmem(p, len, "\r\n", 2);
    if (!crlf) return len > 1024 ? -EPROTO : 0;
    uint64_t v = 0;
    size_t digits = 0;
    for (const char *q = p; q < crlf && *q != ';'; q++, digits++) {
        int d = *q >= '0' && *q <= '9'   ? *q - '0'
                : *q >= 'a' && *q <= 'f' ? *q - 'a' + 10
                : *q >= 'A' && *q <= 'F' ? *q - 'A' + 10
                                         : -1;
        if (d < 0 || digits >= 15) return -EPROTO;
        v = v * 16 + (uint64_t)d;
    }
    if (digits == 0) return -EPROTO;
    *size = v;
    return (int64_t)(crlf - p) + 2;
}

/*
 * Walks the chunked body at <p>/<len>: 1 complete, 0 need more, -EPROTO. With <apply> it also
 * decodes it in place (only once complete: decoding moves bytes).
 */
static int dechunk(char *p, size_t len, bool apply, size_t *out_len)
{
    size_t in = 0;
    size_t out = 0;
    /* Bounded: each chunk takes at least its 3-byte line. */
    for (;;) {
        uint64_t size;
        int64_t n = chunk_line(p + in, len - in, &size);
        if (n <= 0) return (int)n;
        in += (size_t)n;
        if (size == 0) break; /* trailers, if any, are ignored */
        if (size > len - in || len - in - size < 2) return 0;
        if (apply) memmove(p + out, p + in, size);
        out += size;
        in += size + 2;
    }
    *out_len = out;
    return 1;
}

/* Finds header <name> in the head [p, end); returns its value (not NUL-terminated) or NULL. */
static const char *find_header(const char *p, const char *end, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    /* Bounded by the head's lines. */
    for (const char *line = p; line < end;) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - line) > nlen && line[nlen] == ':' &&
            strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            *vlen = (size_t)(eol - v);
            return v;
        }
        line = eol + 2;
    }
    return NULL;
}

/* Parses "HTTP/1.x NNN" at the start of <buf>; the code, or -EPROTO. */
static int status_code(const char *buf, size_t len)
{
    if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ') return -EPROTO;
    int code = 0;
    for (size_t i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9') return -EPROTO;
        code = code * 10 + (buf[i] - '0');
    }
    return code;
}

/* The body's framing: chunked, Content-Length <*length>, or until the close. */
enum body_kind {
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_CLOSE
};

static int body_kind(const char *head, const char *head_end, uint64_t *length)
{
    size_t vlen;
    const char *te = find_header(head, head_end, "Transfer-Encoding", &vlen);
    if (te && vlen >= 7 && strncasecmp(te + vlen - 7, "chunked", 7) == 0) return BODY_CHUNKED;
    const char *cl = find_header(head, head_end, "Content-Length", &vlen);
    if (!cl) return BODY_CLOSE;
    char num[24];
    if (vlen == 0 || vlen >= sizeof(num)) return -EPROTO;
    memcpy(num, cl, vlen);
    num[vlen] = '\0';
    return base_parse_u64(num, length) < 0 ? -EPROTO : BODY_LENGTH;
}

int client_http_parse(char *buf, size_t len, bool at_eof, struct client_http_response *out)
{
    memset(out, 0, sizeof(*out));
    const char *head_end = memmem(buf, len, "\r\n\r\n", 4);
    if (!head_end) return at_eof ? -EPROTO : 0;
    int code = status_code(buf, len);
    uint64_t want = 0;
    int kind = body_kind(buf, head_end, &want);
    if (code < 0 || kind < 0) return -EPROTO;
    out->status = code;
    char *b = buf + (head_end - buf) + 4;
    size_t have = len - (size_t)(b - buf);
    if (kind == BODY_CHUNKED) {
        int rc = dechunk(b, have, false, &out->body_len);
        if (rc < 0 || (rc == 0 && at_eof)) return -EPROTO;
        out->complete = rc == 1;
        if (out->complete) (void)dechunk(b, have, true, &out->body_len);
    } else if (kind == BODY_LENGTH) {
        if (have > want || (at_eof && have < want)) return -EPROTO;
        out->complete = have == want;
        out->body_len = have;
    } else {
        out->complete = at_eof;
        out->body_len = have;
    }
    if (out->complete) b[out->body_len] = '\0';
    out->body = b;
    return 0;
}

/* ---- the request ---- */

static void http_finish(struct client_http *h, int err)
{
    if (h->err == 0) h->err = err;
    if (h->live && !h->rc.closing) ring_conn_close(&h->rc, 0);
}

/* Appends <len> bytes; checks whether the response is complete. */
static void http_take(struct client_http *h, const uint8_t *p, size_t len, bool at_eof)
{
    if (h->len + len + 1 > h->size) {
        size_t want = h->size ? h->size * 2 : (size_t)64 * 1024;
        while (want < h->len + len + 1) {
            want *= 2;
        }
        if (want > CLIENT_HTTP_BODY_MAX + (size_t)64 * 1024) {
            http_finish(h, -EMSGSIZE);
            return;
        }
        char *m = realloc(h->buf, want);
        if (!m) {
            http_finish(h, -ENOMEM);
            return;
        }
        h->buf = m;
        h->size = want;
    }
    memcpy(h->buf + h->len, p, len);
    h->len += len;
    struct client_http_response r;
    int rc = client_http_parse(h->buf, h->len, at_eof, &r);
    if (rc < 0) {
        http_finish(h, rc);
        return;
    }
    if (!r.complete) return;
    h->complete = true;
    h->status = r.status;
    h->body = r.body;
    h->body_len = r.body_len;
    http_finish(h, 0);
}

static void http_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len)
{
    struct client_http *h = http_of(rc);
    if (len == 0) {
        if (!h->complete) http_take(h, (const uint8_t *)"", 0, true);
        if (!h->complete) http_finish(h, -EPROTO);
        return;
    }
    if (!h->complete) http_take(h, ring_buf_data(rc->core, bid), len, false);
    ring_buf_unref(rc->core, bid);
}

static void http_on_sent(struct ring_conn *rc)
{
    (void)rc;
}

static void http_done_task(struct ring_task *task)
{
    struct client_http *h = BASE_CONTAINER_OF(task, struct client_http, done_task);
    base_counter_dec(&h->cl->counters.conns);
    h->done(h);
}

static void http_on_close(struct ring_conn *rc, int reason)
{
    struct client_http *h = http_of(rc);
    h->live = false;
    if (reason == -ETIMEDOUT) base_counter_inc(&h->cl->counters.io_timeouts);
    if (!h->complete && h->err == 0) h->err = reason < 0 ? reason : -EPROTO;
    ring_task_defer(h->cl->core, &h->done_task);
}

static void http_connected(struct client_connect *cc, int res)
{
    struct client_http *h = BASE_CONTAINER_OF(cc, struct client_http, connect);
    if (res < 0) {
        if (res == -ETIMEDOUT) base_counter_inc(&h->cl->counters.io_timeouts);
        h->err = res;
        ring_task_defer(h->cl->core, &h->done_task);
        return;
    }
    ring_conn_init(&h->rc, h->cl->core, res, &http_ops, h->timeout_ms, h->timeout_ms);
    h->live = true;
    struct iovec iov = { .iov_base = h->req, .iov_len = h->req_len };
    int rc = ring_conn_send(&h->rc, &iov, 1);
    if (rc == 0) rc = ring_conn_recv_start(&h->rc);
    if (rc < 0) http_finish(h, rc);
}

int client_http_get_start(struct client_http *h, struct client *cl, const struct client_addr *addr,
                          const char *path, uint32_t timeout_ms, client_http_done_fn *done)
{
    ASSERT(done);
    if (strlen(path) > 128 || path[0] != '/') return -EINVAL;
    char *buf = h->buf;
    size_t size = h->size;
    void *user = h->user;
    memset(h, 0, sizeof(*h));
    h->buf = buf;
    h->size = size;
    h->user = user;
    h->cl = cl;
    h->done = done;
    h->timeout_ms = timeout_ms;
    ring_task_init(&h->done_task, http_done_task);
    int n = snprintf(h->req, sizeof(h->req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ringcas-client\r\n"
                     "Accept: */*\r\nConnection: close\r\n\r\n",
                     path, addr->authority);
    ASSERT(n > 0 && (size_t)n < sizeof(h->req));
    h->req_len = (size_t)n;
    ring_owner_init(&h->connect.owner);
    int rc = client_connect_start(&h->connect, cl->core, addr, timeout_ms, http_connected);
    if (rc < 0) return rc;
    base_counter_inc(&cl->counters.conns);
    return 0;
}

void client_http_deinit(struct client_http *h)
{
    if (!h) return;
    free(h->buf);
    h->buf = NULL;
    h->size = 0;
}
