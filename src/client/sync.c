/*
 * Synchronous helpers: start a call on the session's connection and tick the ring until it
 * is done. The output of a download goes to its file descriptor through the ring as well,
 * one write at a time (ordered), from two staging buffers; the download pauses while both
 * are taken.
 *
 * Sections: session, calls, the download writer.
 */
#include "client/sync.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "client/cas.h"
#include "client/get.h"
#include "client/internal.h"
#include "client/put.h"

/* Staging buffers of a download's writer, and the room kept free in the one being filled:
 * more than the sink receives between two pause checks (a DATA frame, or a zstd block and an
 * output buffer). */
#define WRITER_BUF_SIZE (4u << 20)
#define WRITER_HEADROOM (1u << 20)

/* ---- session ---- */

static void conn_closed(struct client_conn *conn, int reason)
{
    struct client_sync *s = conn->user;
    s->conn_closed = true;
    s->conn_reason = reason;
}

int client_sync_create(const struct client_sync_options *o, struct client_sync **out, char *why,
                       size_t why_size)
{
    ASSERT(o->timeout_ms > 0);
    struct client_sync *s = calloc(1, sizeof(*s));
    if (!s) {
        (void)snprintf(why, why_size, "out of memory");
        return -ENOMEM;
    }
    s->o = *o;
    int rc = client_addr_parse(o->server, &s->addr, why, why_size);
    struct ring_core_options ro;
    client_core_options(&ro);
    if (rc == 0) rc = ring_core_create(&ro, 0, &s->core, why, why_size);
    if (rc < 0) {
        free(s);
        return rc;
    }
    client_init(&s->cl, s->core);
    client_conn_options_default(&s->conn_opts);
    s->conn_opts.connect_timeout_ms = o->timeout_ms;
    s->conn_opts.io_timeout_ms = o->timeout_ms;
    *out = s;
    return 0;
}

/* Opens the connection unless it is usable; a closed one is reopened. */
static int session_conn(struct client_sync *s)
{
    if (s->conn_open && !s->conn_closed && client_conn_is_usable(&s->conn)) return 0;
    if (s->conn_open && !s->conn_closed) {
        client_conn_close(&s->conn);
        int rc = client_wait(&s->cl, &s->conn_closed);
        if (rc < 0) return rc;
    }
    s->conn_open = false;
    s->conn_closed = false;
    s->conn.user = s;
    int rc = client_conn_open(&s->conn, &s->cl, &s->addr, &s->conn_opts, conn_closed);
    if (rc < 0) return rc;
    s->conn_open = true;
    return 0;
}

void client_sync_destroy(struct client_sync *s)
{
    if (!s) return;
    if (s->conn_open && !s->conn_closed) client_conn_close(&s->conn);
    if (client_wait_idle(&s->cl) < 0) {
        /* The ring failed: nothing can complete any more; leave it to process exit. */
        return;
    }
    client_deinit(&s->cl);
    ring_core_destroy(s->core);
    free(s);
}

/* ---- calls ---- */

struct sync_wait {
    bool done; /* the call's done ran */
};

static void sync_done(struct client_call *call)
{
    struct sync_wait *w = call->user;
    w->done = true;
}

/* Fails <r> with <err> and a message naming what failed before a call could start. */
static int start_failed(struct client_result *r, int err, const char *what)
{
    r->err = err;
    r->status = -1;
    (void)snprintf(r->message, sizeof(r->message), "%s: %s", what, client_err_str(err));
    return err;
}

/* Waits for <c>'s done and copies its result into <r>. */
static int wait_call(struct client_sync *s, struct client_call *c, struct sync_wait *w,
                     struct client_result *r)
{
    int rc = client_wait(&s->cl, &w->done);
    if (rc < 0) return start_failed(r, rc, "io_uring_enter");
    *r = c->result;
    return r->err;
}

static struct client_call_options call_options(struct client_sync *s, struct sync_wait *w)
{
    struct client_call_options o = {
        .deadline_ms = s->o.deadline_ms,
        .done = sync_done,
        .user = w,
    };
    return o;
}

int client_sync_capabilities(struct client_sync *s, struct client_unary *u, struct client_result *r)
{
    int rc = session_conn(s);
    if (rc < 0) return start_failed(r, rc, "connecting");
    struct sync_wait w = { false };
    struct client_call_options o = call_options(s, &w);
    rc = client_cas_capabilities_start(u, &s->conn, s->o.instance, &o);
    if (rc < 0) return start_failed(r, rc, "GetCapabilities");
    return wait_call(s, &u->call, &w, r);
}

int client_sync_find_missing(struct client_sync *s, const struct client_digest *digests,
                             size_t count, bool *missing, struct client_result *r)
{
    int rc = session_conn(s);
    if (rc < 0) return start_failed(r, rc, "connecting");
    struct client_unary u;
    client_unary_init(&u, &s->cl);
    struct sync_wait w = { false };
    struct client_call_options o = call_options(s, &w);
    rc = client_cas_find_missing_start(&u, &s->conn, s->o.instance, digests, count, &o);
    if (rc < 0) {
        client_unary_deinit(&u);
        return start_failed(r, rc, "FindMissingBlobs");
    }
    rc = wait_call(s, &u.call, &w, r);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        missing[i] = client_cas_is_missing(&u, &digests[i]);
    }
    client_unary_deinit(&u);
    return rc;
}

int client_sync_batch_update(struct client_sync *s, const struct client_batch_blob *blobs,
                             size_t count, int *statuses, char (*messages)[CLIENT_MESSAGE_MAX],
                             struct client_result *r)
{
    int rc = session_conn(s);
    if (rc < 0) return start_failed(r, rc, "connecting");
    struct client_unary u;
    client_unary_init(&u, &s->cl);
    struct sync_wait w = { false };
    struct client_call_options o = call_options(s, &w);
    rc = client_cas_batch_update_start(&u, &s->conn, s->o.instance, blobs, count, &o);
    if (rc < 0) {
        client_unary_deinit(&u);
        return start_failed(r, rc, "BatchUpdateBlobs");
    }
    rc = wait_call(s, &u.call, &w, r);
    for (size_t i = 0; rc == 0 && i < count; i++) {
        const char *msg;
        statuses[i] = client_cas_batch_status(&u, &blobs[i].digest, &msg);
        if (messages) (void)snprintf(messages[i], CLIENT_MESSAGE_MAX, "%s", msg);
    }
    client_unary_deinit(&u);
    return rc;
}

int client_sync_put_fd(struct client_sync *s, int fd, const struct client_digest *d, bool zstd,
                       struct client_result *r)
{
    int rc = session_conn(s);
    if (rc < 0) return start_failed(r, rc, "connecting");
    struct client_put *p = malloc(sizeof(*p));
    if (!p) return start_failed(r, -ENOMEM, "ByteStream.Write");
    rc = client_put_init(p, &s->cl);
    struct sync_wait w = { false };
    if (rc == 0) {
        struct client_put_options o;
        client_put_options_default(&o);
        o.call = call_options(s, &w);
        o.instance = s->o.instance;
        o.digest = *d;
        o.zstd = zstd;
        o.fd = fd;
        rc = client_put_start(p, &s->conn, &o);
    }
    if (rc < 0) {
        start_failed(r, rc, "ByteStream.Write");
    } else {
        rc = wait_call(s, &p->call, &w, r);
    }
    client_put_deinit(p);
    free(p);
    return rc;
}

static void http_done(struct client_http *h)
{
    struct sync_wait *w = h->user;
    w->done = true;
}

int client_sync_http_get(struct client_sync *s, const char *path, struct client_http *h)
{
    struct sync_wait w = { false };
    h->user = &w;
    int rc = client_http_get_start(h, &s->cl, &s->addr, path, s->o.timeout_ms, http_done);
    if (rc == 0) rc = client_wait(&s->cl, &w.done);
    h->user = NULL;
    return rc < 0 ? rc : h->err;
}

/* ---- the download writer ---- */

enum writer_buf_state {
    WB_EMPTY = 0, /* free */
    WB_FILLING,   /* the sink copies into it */
    WB_FULL,      /* waiting for the write in flight to finish */
    WB_WRITING,   /* its write is in flight */
};

struct writer {
    struct client_get *g;
    struct ring_core *core;
    struct ring_owner owner; /* the write op */
    int fd;                  /* output */
    uint32_t timeout_ms;     /* per write */
    int err;                 /* first write error */
    unsigned cur;            /* buffer being filled */
    uint8_t *buf[2];
    size_t len[2]; /* bytes in each */
    size_t off[2]; /* bytes of each written */
    uint8_t st[2]; /* enum writer_buf_state */
    bool done_get; /* the download finished well: flush what is left */
};

static int writer_submit(struct writer *w, unsigned i);

static void writer_write_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)flags;
    struct writer *w = op->ctx;
    unsigned i = (unsigned)op->arg;
    ASSERT(w->st[i] == WB_WRITING);
    if (res <= 0 || w->err) {
        int err = ring_op_timed_out(op, res) ? -ETIMEDOUT : (res < 0 ? res : -EIO);
        if (!w->err) w->err = err;
        w->st[i] = WB_EMPTY;
        if (w->g->call.active) {
            char msg[CLIENT_MESSAGE_MAX];
            (void)snprintf(msg, sizeof(msg), "writing the output: %s", base_err_str(w->err));
            client_call_fail(&w->g->call, w->err, msg);
        }
        return;
    }
    w->off[i] += (size_t)res;
    if (w->off[i] < w->len[i]) {
        if (writer_submit(w, i) < 0 && !w->err) w->err = -EAGAIN;
        return;
    }
    w->st[i] = WB_EMPTY;
    w->len[i] = 0;
    w->off[i] = 0;
    unsigned other = i ^ 1u;
    if (w->st[other] == WB_FULL && writer_submit(w, other) < 0 && !w->err) w->err = -EAGAIN;
    if (w->g->call.paused && w->st[w->cur] == WB_EMPTY) {
        w->st[w->cur] = WB_FILLING;
        client_get_resume(w->g);
    }
}

static int writer_submit(struct writer *w, unsigned i)
{
    struct ring_op *op = ring_op_get(w->core, &w->owner, writer_write_done, w);
    if (!op) return -EAGAIN;
    op->arg = i;
    struct io_uring_sqe *sqe = ring_op_sqe(op, w->timeout_ms);
    /* Offset -1: the file's position, so pipes and terminals work too. */
    io_uring_prep_write(sqe, w->fd, w->buf[i] + w->off[i], (unsigned)(w->len[i] - w->off[i]),
                        (uint64_t)-1);
    ring_op_commit(op, sqe);
    w->st[i] = WB_WRITING;
    return 0;
}

/* The buffer being filled is done: write it (or queue it behind the write in flight). */
static int writer_rotate(struct writer *w)
{
    unsigned i = w->cur;
    unsigned other = i ^ 1u;
    if (w->len[i] == 0) return 0;
    if (w->st[other] == WB_WRITING) {
        w->st[i] = WB_FULL;
    } else {
        int rc = writer_submit(w, i);
        if (rc < 0) return rc;
    }
    w->cur = other;
    if (w->st[other] == WB_EMPTY) {
        w->st[other] = WB_FILLING;
    } else {
        client_get_pause(w->g); /* both taken: the download waits for a write */
    }
    return 0;
}

/* A download: the wait flag first (call.user points at it), then its writer. */
struct get_job {
    struct sync_wait w;
    struct writer wr;
    struct client_get g;
};

static int writer_sink(struct client_get *g, const uint8_t *p, size_t n)
{
    struct get_job *job = BASE_CONTAINER_OF(g->call.user, struct get_job, w);
    struct writer *w = &job->wr;
    if (w->err) return w->err;
    unsigned i = w->cur;
    if (w->st[i] != WB_FILLING || n > WRITER_BUF_SIZE - w->len[i]) return -ENOBUFS;
    memcpy(w->buf[i] + w->len[i], p, n);
    w->len[i] += n;
    if (WRITER_BUF_SIZE - w->len[i] < WRITER_HEADROOM) return writer_rotate(w);
    return 0;
}

static int writer_init(struct writer *w, struct client_sync *s, struct client_get *g, int fd)
{
    memset(w, 0, sizeof(*w));
    w->g = g;
    w->core = s->core;
    w->fd = fd;
    w->timeout_ms = s->o.timeout_ms;
    ring_owner_init(&w->owner);
    w->buf[0] = malloc(WRITER_BUF_SIZE);
    w->buf[1] = malloc(WRITER_BUF_SIZE);
    w->st[0] = WB_FILLING;
    return w->buf[0] && w->buf[1] ? 0 : -ENOMEM;
}

/* After the download: writes what is left (if it went well) and waits for the writes. */
static int writer_finish(struct writer *w, struct client_sync *s, bool flush)
{
    if (flush && !w->err && w->len[w->cur] > 0 && w->st[w->cur] == WB_FILLING) {
        int rc = writer_rotate(w);
        if (rc < 0) w->err = rc;
    }
    /* Bounded by the writes left (each has the I/O timeout). */
    while (!ring_owner_is_idle(&w->owner) || (flush && !w->err && w->st[w->cur ^ 1u] == WB_FULL)) {
        int rc = ring_core_tick(s->core, RING_WAIT_FOREVER);
        if (rc < 0) return rc;
    }
    ring_owner_deinit(&w->owner);
    free(w->buf[0]);
    free(w->buf[1]);
    return w->err;
}

int client_sync_get_fd(struct client_sync *s, const struct client_digest *d, bool zstd, int out_fd,
                       struct client_result *r)
{
    int rc = session_conn(s);
    if (rc < 0) return start_failed(r, rc, "connecting");
    struct get_job *job = calloc(1, sizeof(*job));
    if (!job) return start_failed(r, -ENOMEM, "ByteStream.Read");
    rc = writer_init(&job->wr, s, &job->g, out_fd);
    if (rc == 0) rc = client_get_init(&job->g, &s->cl);
    if (rc == 0) {
        struct client_get_options o;
        client_get_options_default(&o);
        o.call = call_options(s, &job->w);
        o.instance = s->o.instance;
        o.digest = *d;
        o.zstd = zstd;
        o.sink = writer_sink;
        rc = client_get_start(&job->g, &s->conn, &o);
    }
    if (rc < 0) {
        start_failed(r, rc, "ByteStream.Read");
    } else {
        rc = wait_call(s, &job->g.call, &job->w, r);
    }
    int wrc = writer_finish(&job->wr, s, rc == 0);
    if (rc == 0 && wrc < 0) {
        rc = wrc;
        r->err = wrc;
        (void)snprintf(r->message, sizeof(r->message), "writing the output: %s", base_err_str(wrc));
    }
    client_get_deinit(&job->g);
    free(job);
    return rc;
}
