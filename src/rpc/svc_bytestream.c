/*
 * google.bytestream.ByteStream for the CAS (REAPI v2 resource names, rpc/proto resource.h).
 *
 * Read streams a blob as ReadResponse messages without copying it: each engine piece goes out
 * as a hand-written message header plus the engine's own buffer. The engine holds the pieces
 * until they are sent (blob_read_hold), so several are queued at once (up to READ_OUT_MAX
 * bytes) and go out in one send, while the engine reads the next chunks ahead.
 *
 * Write decodes WriteRequest as a stream (proto/bytestream.h): the data bytes go to the engine
 * straight from the receive buffer; when the engine must wait (-EINPROGRESS) the call holds
 * the input, so the HTTP/2 window closes behind the upload (backpressure). A blob that exists
 * ends the upload early (committed_size = size, or -1 for compressed uploads). A stream that
 * ends without finish_write, or whose connection drops, leaves its upload parked for
 * resumption, keyed by (uuid, digest, encoding), on this core; QueryWriteStatus reports it.
 * A client that cancels (RST_STREAM) or runs out of deadline aborts the upload: nothing is
 * visible. docs/grpc.md has the details.
 *
 * Sections: resource names, Read, Write (parking, the stream, the end), QueryWriteStatus.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "blob/store.h"
#include "proto/bytestream.h"
#include "proto/google/bytestream/bytestream.pb-c.h"
#include "proto/resource.h"
#include "ring/buf.h"
#include "ring/server.h"
#include "rpc/h2.h"
#include "rpc/internal.h"
#include "rpc/status.h"
#include "rpc/svc.h"

/* Uploads kept for resumption per core; the sweep that ends those whose client did not come
 * back within rpc_config.bs_parked_idle_ms runs every PARKED_SWEEP_MS (or that, if shorter). */
#define PARKED_MAX      64u
#define PARKED_SWEEP_MS 5000u
/* Parked zstd uploads' decoders hold at most 1/PARKED_ZSTD_SHARE of the core's zstd memory:
 * a client gone for good must not keep live uploads from decoding. */
#define PARKED_ZSTD_SHARE 2u
/*
 * A read refused because the core's disk queue is full (-EAGAIN) waits in a FIFO and is
 * retried as soon as another read's piece completes on the core (a slot came free); a timer
 * every WAKE_MS retries all of them in case slots free up elsewhere, and a read that waited
 * WAIT_MAX_MS ends with RESOURCE_EXHAUSTED.
 */
#define WAKE_MS     5u
#define WAIT_MAX_MS 10000u

/* ---- resource names ---- */

static enum blob_encoding encoding_of(const struct proto_resource *r)
{
    return r->compressor == PROTO_COMPRESSOR_ZSTD ? BLOB_ENCODING_ZSTD : BLOB_ENCODING_IDENTITY;
}

static void finish_bad_name(struct rpc_call *c, const char *why)
{
    char msg[160];
    (void)snprintf(msg, sizeof(msg), "resource name: %s", why);
    rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, msg);
}

/* ---- per-core state: parked uploads and reads waiting for the disk queue ---- */

#define UUID_MAX 128 /* longest uuid segment kept for resumption */

struct bs_parked {
    struct base_list link;        /* on bs_core.parked, oldest first */
    struct blob_upload *u;        /* the engine's upload, no append pending */
    uint8_t hash[BLOB_HASH_SIZE]; /* the blob's digest ... */
    uint64_t size;                /* ... and size */
    uint8_t enc;                  /* enum blob_encoding of the bytes received */
    uint8_t uuid_len;             /* bytes of uuid */
    char uuid[UUID_MAX];          /* the client's upload id */
    uint64_t expires_ns;          /* aborted after this */
    uint64_t zbytes;              /* zstd memory its decoder holds */
};

struct bs_core {
    struct rpc_core *rc;            /* the core */
    struct base_list parked;        /* struct bs_parked.link */
    uint32_t count;                 /* entries in <parked> */
    uint64_t zbytes;                /* their decoders' zstd memory */
    bool quiescing;                 /* no more parking */
    struct ring_owner owner;        /* the timers' ops */
    struct ring_timer sweep;        /* aborts expired uploads */
    struct ring_task sweep_retry;   /* arms <sweep> once an op is free (the table was full) */
    struct base_list read_waiters;  /* struct bs_read.wait_link, oldest first */
    struct base_list write_waiters; /* struct bs_write.wait_link: another upload of the blob */
    struct ring_timer wake;         /* retries the waiting reads */
};

static void sweep_fired(struct ring_timer *t);
static void sweep_retry_run(struct ring_task *task);
static void wake_fired(struct ring_timer *t);

static struct bs_core *bs_core_get(struct rpc_core *rc)
{
    struct bs_core *bs = rc->bytestream;
    if (bs) return bs;
    bs = calloc(1, sizeof(*bs));
    if (!bs) return NULL;
    bs->rc = rc;
    base_list_init(&bs->parked);
    base_list_init(&bs->read_waiters);
    base_list_init(&bs->write_waiters);
    ring_owner_init(&bs->owner);
    ring_timer_init(&bs->sweep, sweep_fired, bs);
    ring_task_init(&bs->sweep_retry, sweep_retry_run);
    ring_timer_init(&bs->wake, wake_fired, bs);
    rc->bytestream = bs;
    return bs;
}

/* ---- Read ---- */

/*
 * A read keeps several pieces queued or in a send at once (the engine holds them,
 * blob_read_hold), so one send carries up to READ_OUT_MAX bytes of the blob while the engine
 * reads the next chunks ahead.
 */
#define READ_PIECES_MAX  8u           /* pieces of one read queued or in a send */
#define READ_OUT_MAX     (1u << 20)   /* their bytes: no new piece is asked for past this */
#define READ_PIECE_BYTES (128u << 10) /* an engine piece of a raw chunk: one raw block */

struct bs_read;

/* One ReadResponse: its hand-written header and the engine's piece. */
struct bs_piece {
    struct bs_read *st;   /* the read */
    struct rpc_seg hdr;   /* the message header */
    struct rpc_seg data;  /* the piece, in the engine's buffer */
    const uint8_t *piece; /* the piece as the engine handed it out (to release it) */
    size_t len;           /* its bytes in the message */
    bool in_use;          /* queued or in a send */
    uint8_t hdr_bytes[PROTO_READ_RESPONSE_HEADER_MAX];
};

struct bs_read {
    struct rpc_call *c;         /* the call */
    struct blob_reader *r;      /* the engine's reader; NULL once closed */
    uint64_t left;              /* bytes still to send (read_limit or the rest of the blob) */
    bool identity;              /* identity read (left counts); zstd reads run to the end */
    bool reading;               /* a piece was asked for and has not come yet */
    bool done;                  /* the status is decided: close once no piece is out */
    uint32_t out;               /* pieces queued or in a send */
    uint64_t out_bytes;         /* their bytes */
    struct base_list wait_link; /* on bs_core.read_waiters while waiting for the disk queue */
    uint64_t wait_since_ns;     /* when it began waiting (0: not waiting) */
    uint32_t pieces_max;        /* room in <pieces>: 1 .. READ_PIECES_MAX */
    struct bs_piece pieces[];   /* the messages, in_use or free (allocated with the read) */
};

/* Pieces a read of <left> bytes may keep out: one for a small blob, so small reads stay small. */
static uint32_t pieces_for(uint64_t left)
{
    uint64_t n = 1 + left / READ_PIECE_BYTES;
    return n < READ_PIECES_MAX ? (uint32_t)n : READ_PIECES_MAX;
}

static void read_close(struct bs_read *st)
{
    if (!st->r) return;
    blob_read_close(st->r);
    st->r = NULL;
    base_counter_dec(&st->c->rc->counters.bs_readers);
}

/* The status is decided: the reader closes now, or when the last piece out is released. */
static void read_end(struct bs_read *st)
{
    st->done = true;
    if (st->out == 0) read_close(st);
}

static void read_next(struct bs_read *st);
static void write_wake_all(struct bs_core *bs);

/* A piece completed on this core: the oldest read waiting for the disk queue goes again. */
static void wake_one(struct rpc_core *rc)
{
    struct bs_core *bs = rc->bytestream;
    struct base_list *node = bs ? base_list_pop_head(&bs->read_waiters) : NULL;
    if (!node) return;
    struct bs_read *st = BASE_CONTAINER_OF(node, struct bs_read, wait_link);
    read_next(st);
}

static void wake_fired(struct ring_timer *t)
{
    struct bs_core *bs = t->ctx;
    struct base_list waiting;
    base_list_init(&waiting);
    /* Retry each read waiting now once; those refused again queue up anew. */
    while (!base_list_is_empty(&bs->read_waiters)) {
        struct base_list *node = base_list_pop_head(&bs->read_waiters);
        base_list_add_tail(&waiting, node);
    }
    struct base_list *node;
    while ((node = base_list_pop_head(&waiting))) {
        read_next(BASE_CONTAINER_OF(node, struct bs_read, wait_link));
    }
    write_wake_all(bs); /* those waiting again arm the timer (write_wait) */
    /* A read refused again above may have armed the timer already. */
    if (!base_list_is_empty(&bs->read_waiters) && !bs->quiescing &&
        !ring_timer_is_armed(&bs->wake) &&
        ring_timer_start(bs->rc->ring, &bs->wake, &bs->owner, WAKE_MS) < 0) {
        LOG_WARN("bytestream: cannot arm the read wake-up timer (op table full)");
    }
}

/* The read no longer waits for the disk queue: it got its piece, or it ends. */
static void read_wait_end(struct bs_read *st)
{
    if (st->wait_since_ns == 0) return;
    st->wait_since_ns = 0;
    base_counter_dec(&st->c->rc->counters.read_waiters);
}

/* The disk queue is full: wait for a slot (FIFO), or give up after WAIT_MAX_MS. */
static int read_wait(struct bs_read *st)
{
    struct bs_core *bs = bs_core_get(st->c->rc);
    uint64_t now = base_clock_now_ns();
    if (!bs || bs->quiescing) return -EAGAIN;
    if (st->wait_since_ns == 0) {
        /* Counted until it gets its piece or ends (ringcas_read_waiters): wake-ups that find
         * the queue still full continue the same wait. */
        st->wait_since_ns = now;
        base_counter_inc(&st->c->rc->counters.read_waiters);
        base_counter_inc(&st->c->rc->counters.read_waits);
    }
    if (now - st->wait_since_ns > (uint64_t)WAIT_MAX_MS * BASE_NS_PER_MS) return -EAGAIN;
    base_list_add_tail(&bs->read_waiters, &st->wait_link);
    if (!ring_timer_is_armed(&bs->wake) &&
        ring_timer_start(bs->rc->ring, &bs->wake, &bs->owner, WAKE_MS) < 0) {
        base_list_del(&st->wait_link);
        return -EAGAIN;
    }
    return 0;
}

static void hdr_release(struct rpc_seg *seg)
{
    (void)seg;
}

/* A piece left (or was dropped, in any order): give it back, ask for more, or close. */
static void data_release(struct rpc_seg *seg)
{
    struct bs_piece *p = BASE_CONTAINER_OF(seg, struct bs_piece, data);
    struct bs_read *st = p->st;
    ASSERT(p->in_use);
    ASSERT(st->out > 0);
    p->in_use = false;
    st->out--;
    st->out_bytes -= p->len;
    if (st->r) blob_read_release(st->r, p->piece);
    if (st->done || rpc_call_is_over(st->c)) {
        read_end(st);
        return;
    }
    if (!base_list_is_linked(&st->wait_link)) read_next(st);
}

static void read_fail(struct bs_read *st, int err)
{
    const char *message;
    int status = rpc_status_from_read_err(err, &message);
    read_wait_end(st);
    read_end(st);
    rpc_call_finish(st->c, status, message);
}

static struct bs_piece *piece_free(struct bs_read *st)
{
    /* Bounded by READ_PIECES_MAX. */
    for (uint32_t i = 0; i < st->pieces_max; i++) {
        if (!st->pieces[i].in_use) return &st->pieces[i];
    }
    UNREACHABLE(); /* read_next asks for a piece only while one is free */
}

/* Queues <data> (<len> bytes of engine piece <piece>) as one ReadResponse. */
static void piece_send(struct bs_read *st, const uint8_t *piece, size_t len)
{
    struct bs_piece *p = piece_free(st);
    /* A piece is at most one engine chunk (<= 1 MiB): one message each. */
    size_t n = proto_bytestream_read_response_header(p->hdr_bytes, (uint32_t)len);
    p->st = st;
    p->piece = piece;
    p->len = len;
    p->in_use = true;
    p->hdr = (struct rpc_seg){ .piece = { .data = p->hdr_bytes, .len = n },
                               .release = hdr_release,
                               .ctx = st,
                               .msg_start = true };
    p->data = (struct rpc_seg){ .piece = { .data = piece, .len = len },
                                .release = data_release,
                                .ctx = st };
    st->out++;
    st->out_bytes += len;
    rpc_call_send(st->c, &p->hdr);
    rpc_call_send(st->c, &p->data);
}

static void on_piece(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct bs_read *st = ctx;
    struct rpc_call *c = st->c;
    st->reading = false;
    wake_one(c->rc);
    if (st->done) {
        /* Cancelled while the piece was on its way. */
        if (res == 0 && len > 0) blob_read_release(st->r, data);
        read_end(st);
        return;
    }
    if (res < 0) {
        read_fail(st, res);
        return;
    }
    if (len == 0) {
        read_end(st);
        rpc_call_finish(c, PROTO_STATUS_OK, NULL);
        return;
    }
    size_t n = st->identity && len > st->left ? (size_t)st->left : len;
    if (st->identity) st->left -= n;
    bool last = st->identity && st->left == 0;
    if (last) st->done = true;
    piece_send(st, data, n);
    /* The last identity piece: the status goes out after it, the reader closes on release. */
    if (last) {
        rpc_call_finish(c, PROTO_STATUS_OK, NULL);
        return;
    }
    if (!st->done && !rpc_call_is_over(c)) read_next(st);
}

static void read_next(struct bs_read *st)
{
    if (st->reading || st->out >= st->pieces_max || st->out_bytes >= READ_OUT_MAX) return;
    /*
     * A read waiting for the disk queue goes again at a wake-up (wake_one, wake_fired), not
     * here: on_piece asks again after its piece's send, and a piece released within that
     * send (a call without a connection) has asked already and may be waiting. Queued twice
     * on read_waiters, the list looped on itself and the wake-up spun forever.
     */
    if (base_list_is_linked(&st->wait_link)) return;
    int rc = blob_read_next(st->r, on_piece, st);
    if (rc == -ENOBUFS) return; /* the engine's slots hold pieces out: a release asks again */
    if (rc == -EAGAIN) rc = read_wait(st);
    if (rc < 0) {
        read_fail(st, rc);
        return;
    }
    if (base_list_is_linked(&st->wait_link)) return;
    read_wait_end(st);
    st->reading = true;
}

static int read_check(struct rpc_call *c, const struct proto_read_request *req,
                      const struct proto_resource *res)
{
    if (req->read_offset < 0) {
        rpc_call_finish(c, PROTO_STATUS_OUT_OF_RANGE, "negative read_offset");
        return -1;
    }
    if (req->read_limit < 0) {
        rpc_call_finish(c, PROTO_STATUS_OUT_OF_RANGE, "negative read_limit");
        return -1;
    }
    if (res->compressor != PROTO_COMPRESSOR_IDENTITY && req->read_limit != 0) {
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT,
                        "read_limit must be 0 for compressed-blobs reads");
        return -1;
    }
    if ((uint64_t)req->read_offset > res->size) {
        rpc_call_finish(c, PROTO_STATUS_OUT_OF_RANGE, "read_offset past the end of the blob");
        return -1;
    }
    return 0;
}

/*
 * Ends a read that has no blob bytes to send: an identity read with no messages; a compressed
 * one with one empty zstd frame, since zero bytes are no zstd stream (REAPI: the answer is
 * the blob from read_offset, compressed; strict decoders refuse an empty input).
 */
static void read_finish_empty(struct rpc_call *c, bool identity)
{
    if (!identity) {
        uint8_t msg[PROTO_READ_RESPONSE_HEADER_MAX + RPC_ZSTD_EMPTY_FRAME_SIZE];
        size_t n = proto_bytestream_read_response_header(msg, RPC_ZSTD_EMPTY_FRAME_SIZE);
        memcpy(msg + n, rpc_zstd_empty_frame, RPC_ZSTD_EMPTY_FRAME_SIZE);
        if (rpc_call_send_copy(c, msg, n + RPC_ZSTD_EMPTY_FRAME_SIZE) < 0) {
            rpc_call_finish_err(c, -ENOMEM, NULL);
            return;
        }
    }
    rpc_call_finish(c, PROTO_STATUS_OK, NULL);
}

static void read_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    struct proto_read_request req;
    if (proto_bytestream_read_request(msg, len, &req) < 0) {
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, "undecodable ReadRequest");
        return;
    }
    rpc_call_log_target(c, req.resource_name, req.resource_name_len);
    struct proto_resource res;
    const char *why;
    if (proto_resource_parse(req.resource_name, req.resource_name_len, false, &res, &why) < 0) {
        finish_bad_name(c, why);
        return;
    }
    if (read_check(c, &req, &res) < 0) return;
    uint64_t left = res.size - (uint64_t)req.read_offset;
    if (req.read_limit > 0 && (uint64_t)req.read_limit < left) left = (uint64_t)req.read_limit;
    uint32_t pieces = pieces_for(left);
    struct bs_read *st = rpc_call_alloc(c, sizeof(*st) + pieces * sizeof(st->pieces[0]));
    struct blob_core *bc = rpc_call_blob(c);
    if (!st || !bc) {
        rpc_call_finish_err(c, st ? -ENOSYS : -ENOMEM, NULL);
        return;
    }
    st->c = c;
    st->pieces_max = pieces;
    c->svc = st;
    base_list_init(&st->wait_link);
    struct blob_key k;
    blob_key_cas(&k, res.hash, res.size);
    int rc = blob_read_open(bc, &k, (uint64_t)req.read_offset, encoding_of(&res), &st->r);
    if (rc < 0) {
        read_fail(st, rc);
        return;
    }
    blob_read_hold(st->r);
    base_counter_inc(&c->rc->counters.bs_readers);
    st->identity = res.compressor == PROTO_COMPRESSOR_IDENTITY;
    st->left = left;
    bool nothing = st->identity ? st->left == 0 : (uint64_t)req.read_offset == res.size;
    if (nothing) {
        st->done = true;
        read_close(st);
        read_finish_empty(c, st->identity);
        return;
    }
    read_next(st);
}

static void read_on_cancel(struct rpc_call *c)
{
    struct bs_read *st = c->svc;
    if (!st) return;
    if (base_list_is_linked(&st->wait_link)) base_list_del(&st->wait_link);
    read_wait_end(st);
    /* Pieces in a send keep the reader (their buffers) until they are released. */
    read_end(st);
}

const struct rpc_method rpc_svc_bs_read = {
    .path = "/google.bytestream.ByteStream/Read",
    .route = RPC_ROUTE_GRPC_BS_READ,
    .on_message = read_on_message,
    .on_cancel = read_on_cancel,
};

static void upload_abort(struct rpc_core *rc, struct blob_upload *u)
{
    blob_upload_abort(u);
    base_counter_dec(&rc->counters.bs_uploads);
}

static void parked_drop(struct bs_core *bs, struct bs_parked *p, bool abort)
{
    base_list_del(&p->link);
    bs->count--;
    bs->zbytes -= p->zbytes;
    base_counter_dec(&bs->rc->counters.bs_uploads_parked);
    if (abort) upload_abort(bs->rc, p->u);
    free(p);
}

static uint64_t parked_idle_ms(const struct bs_core *bs)
{
    return bs->rc->cfg->bs_parked_idle_ms;
}

/*
 * Arms the sweep while uploads are parked. When the op table is full it is armed as soon as
 * an op comes back (ring_op_wait_free): waiting for the next upload to park, as it did, left
 * the parked uploads of a core where none parked again (and their engine buffers and disk
 * reservations) alive past their time indefinitely.
 */
static void sweep_arm(struct bs_core *bs)
{
    if (bs->count == 0 || bs->quiescing || ring_timer_is_armed(&bs->sweep)) return;
    uint64_t ms = parked_idle_ms(bs) < PARKED_SWEEP_MS ? parked_idle_ms(bs) : PARKED_SWEEP_MS;
    (void)ring_timer_start_or_wait(bs->rc->ring, &bs->sweep, &bs->owner, ms, &bs->sweep_retry,
                                   "the parked-upload sweep");
}

/* Aborts the parked uploads whose time is up. Bounded by PARKED_MAX. */
static void sweep_expire(struct bs_core *bs)
{
    uint64_t now = base_clock_now_ns();
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &bs->parked)
    {
        struct bs_parked *p = BASE_CONTAINER_OF(it, struct bs_parked, link);
        if (p->expires_ns <= now) parked_drop(bs, p, true);
    }
}

static void sweep_fired(struct ring_timer *t)
{
    struct bs_core *bs = t->ctx;
    sweep_expire(bs);
    sweep_arm(bs);
}

/* An op is free again after the sweep could not be armed: it may be overdue, so it runs now. */
static void sweep_retry_run(struct ring_task *task)
{
    struct bs_core *bs = BASE_CONTAINER_OF(task, struct bs_core, sweep_retry);
    if (bs->quiescing) return;
    sweep_expire(bs);
    sweep_arm(bs);
}

/*
 * Keeps <u> for resumption; aborts it when it cannot be kept. Takes <u> over either way. A
 * parked upload leaves the store's table of blobs being uploaded: its client left, and other
 * uploads of the blob (another client, or this one restarting on a connection that lands on
 * another core) must not wait for a resumption that may never come.
 */
static void park(struct rpc_core *rc, struct blob_upload *u, const struct proto_resource *res)
{
    blob_upload_unshare(u);
    struct bs_core *bs = bs_core_get(rc);
    struct bs_parked *p = NULL;
    if (bs && !bs->quiescing && res->uuid_len <= UUID_MAX) p = calloc(1, sizeof(*p));
    if (!p) {
        upload_abort(rc, u);
        return;
    }
    uint64_t zbytes = blob_upload_zstd_bytes(u);
    uint64_t zmax = rc->cfg->opts.zstd_memory / PARKED_ZSTD_SHARE;
    if (zbytes > zmax) {
        /* Its window alone would take the parked share: a few bytes of frame header can
         * declare 128 MiB, and parking keeps it after the client left. */
        free(p);
        upload_abort(rc, u);
        return;
    }
    /* Room, oldest first: a slot when all PARKED_MAX are taken (the oldest goes), and the
     * zstd memory of its decoder (the oldest compressed ones go). Bounded by PARKED_MAX. */
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &bs->parked)
    {
        bool full = bs->count == PARKED_MAX;
        if (!full && bs->zbytes + zbytes <= zmax) break;
        struct bs_parked *old = BASE_CONTAINER_OF(it, struct bs_parked, link);
        if (full || old->zbytes > 0) parked_drop(bs, old, true);
    }
    p->u = u;
    p->zbytes = zbytes;
    bs->zbytes += zbytes;
    memcpy(p->hash, res->hash, BLOB_HASH_SIZE);
    p->size = res->size;
    p->enc = (uint8_t)encoding_of(res);
    p->uuid_len = (uint8_t)res->uuid_len;
    memcpy(p->uuid, res->uuid, res->uuid_len);
    p->expires_ns = base_clock_now_ns() + parked_idle_ms(bs) * BASE_NS_PER_MS;
    base_list_add_tail(&bs->parked, &p->link);
    bs->count++;
    base_counter_inc(&rc->counters.bs_uploads_parked);
    sweep_arm(bs);
}

/* The parked upload of <res>, or NULL; it stays parked. */
static struct bs_parked *parked_find(struct rpc_core *rc, const struct proto_resource *res)
{
    struct bs_core *bs = rc->bytestream;
    if (!bs) return NULL;
    BASE_LIST_FOR_EACH(it, &bs->parked)
    {
        struct bs_parked *p = BASE_CONTAINER_OF(it, struct bs_parked, link);
        if (p->uuid_len == res->uuid_len && memcmp(p->uuid, res->uuid, res->uuid_len) == 0 &&
            p->size == res->size && p->enc == (uint8_t)encoding_of(res) &&
            memcmp(p->hash, res->hash, BLOB_HASH_SIZE) == 0) {
            return p;
        }
    }
    return NULL;
}

void rpc_svc_bytestream_quiesce(struct rpc_core *rc)
{
    struct bs_core *bs = rc->bytestream;
    if (!bs) return;
    bs->quiescing = true;
    ring_task_cancel(&bs->sweep_retry);
    if (ring_timer_is_armed(&bs->sweep)) ring_timer_stop(rc->ring, &bs->sweep);
    if (ring_timer_is_armed(&bs->wake)) ring_timer_stop(rc->ring, &bs->wake);
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &bs->parked)
    {
        parked_drop(bs, BASE_CONTAINER_OF(it, struct bs_parked, link), true);
    }
}

void rpc_svc_bytestream_deinit(struct rpc_core *rc)
{
    struct bs_core *bs = rc->bytestream;
    if (!bs) return;
    ASSERT(bs->count == 0);
    bool retry_queued = base_list_is_linked(&bs->sweep_retry.link);
    ASSERT(!retry_queued);
    ring_owner_deinit(&bs->owner);
    free(bs);
    rc->bytestream = NULL;
}

/* ---- Write: the stream ---- */

struct bs_write {
    struct rpc_call *c;           /* the call */
    struct blob_upload *u;        /* the engine's upload; NULL before begin and after the end */
    struct proto_write_request w; /* the message being decoded */
    struct proto_resource res;    /* the first message's resource name (spans into name) */
    char name[PROTO_RESOURCE_NAME_MAX]; /* its bytes */
    uint32_t name_len;                  /* bytes in name */
    uint64_t next_offset;               /* the write_offset the next message must carry */
    uint64_t bytes_in;                  /* bytes received when the commit began */
    const uint8_t *rest;                /* bytes of the current input span not decoded yet */
    size_t rest_len;                    /* their count */
    bool begun;                         /* the upload is known (begun, resumed or present) */
    bool msg_checked;                   /* this message's fields before data were checked */
    bool appending;                     /* an append is pending: the engine holds the input */
    bool committing;                    /* the commit is pending (the call is pinned) */
    struct base_list wait_link;         /* on bs_core.write_waiters while another upload of
                                         * the blob is under way: the input is held */
    const uint8_t *wait_data;           /* the data of the message that began it */
    size_t wait_len;                    /* its length */
    uint64_t wait_since_ns;             /* when it began waiting */
};

static int write_fail(struct bs_write *st, int err, const char *what);

/* Ends the stream with <err>; an upload not yet committing is aborted (nothing visible). */
static int write_fail(struct bs_write *st, int err, const char *what)
{
    if (st->u && !st->committing) {
        upload_abort(st->c->rc, st->u);
        st->u = NULL;
    }
    /* -EBADMSG of the upload or its commit is the engine's: the zstd stream is malformed. */
    if (err == -EBADMSG && what && strcmp(what, "WriteRequest") != 0) {
        char message[RPC_CALL_MESSAGE_MAX];
        (void)snprintf(message, sizeof(message), "%s: %s", what, RPC_STATUS_ZSTD_MALFORMED);
        rpc_call_finish(st->c, PROTO_STATUS_INVALID_ARGUMENT, message);
        return -1;
    }
    rpc_call_finish_err(st->c, err, what);
    return -1;
}

static int write_respond(struct bs_write *st, int64_t committed)
{
    Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
    resp.committed_size = committed;
    if (rpc_call_send_message(st->c, &resp.base) < 0) return write_fail(st, -ENOMEM, NULL);
    rpc_call_finish(st->c, PROTO_STATUS_OK, NULL);
    return -1;
}

/*
 * REAPI: an upload of a blob that is already complete ends at once without error, "regardless
 * of how much data was transmitted by the client": committed_size is the size for an identity
 * upload, -1 for a compressed one.
 */
static int write_respond_present(struct bs_write *st)
{
    bool identity = st->res.compressor == PROTO_COMPRESSOR_IDENTITY;
    return write_respond(st, identity ? (int64_t)st->res.size : -1);
}

/*
 * Begins (or resumes) the upload at <offset>: 0, -1 after the call was finished (the blob is
 * present, or an error), or 1 when another upload of the blob is under way and this one may
 * wait (<can_wait>): blob_upload_begin_shared. After a read timeout of waiting, it no longer
 * waits: a first upload may be as slow as its client.
 */
static int begin_upload(struct bs_write *st, uint64_t offset, bool can_wait)
{
    struct rpc_call *c = st->c;
    struct blob_key k;
    blob_key_cas(&k, st->res.hash, st->res.size);
    struct blob_core *bc = rpc_call_blob(c);
    struct bs_parked *p = parked_find(c->rc, &st->res);
    /* Parked uploads do not hold others back (park): another client may have stored the
     * blob meanwhile. Then the rest of this one's bytes are not needed. */
    if (p && bc && blob_exists(bc, &k, true)) {
        parked_drop(c->rc->bytestream, p, true);
        return write_respond_present(st);
    }
    uint64_t parked_bytes = p ? blob_upload_bytes_in(p->u) : 0;
    if (p && parked_bytes == offset) {
        st->u = p->u;
        st->next_offset = offset;
        parked_drop(c->rc->bytestream, p, false);
        blob_upload_reshare(st->u); /* under way again: new uploads of the blob wait for it */
        return 0;
    }
    if (p && offset != 0) {
        /* google.bytestream: a wrong write_offset "will cause an error", and QueryWriteStatus's
         * committed_size of a resource never decreases. So the parked upload stays, to be
         * resumed at its size: dropping it lost the client's bytes to one bad request. */
        char message[RPC_CALL_MESSAGE_MAX];
        (void)snprintf(message, sizeof(message),
                       "write_offset %" PRIu64 " does not match the committed size %" PRIu64
                       " of this upload (QueryWriteStatus answers it): resume there, or at 0 "
                       "to start over",
                       offset, parked_bytes);
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, message);
        return -1;
    }
    if (p) parked_drop(c->rc->bytestream, p, true); /* at 0: the client starts over */
    if (offset != 0) {
        /* Nothing to resume here, but a complete blob still ends the upload early. */
        if (bc && blob_exists(bc, &k, true)) return write_respond_present(st);
        char message[RPC_CALL_MESSAGE_MAX];
        (void)snprintf(message, sizeof(message),
                       "write_offset %" PRIu64 ": no upload of this resource to resume on this "
                       "server (QueryWriteStatus: NOT_FOUND); start at 0",
                       offset);
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, message);
        return -1;
    }
    if (can_wait && st->wait_since_ns != 0) {
        uint64_t max_ns = (uint64_t)c->rc->cfg->read_timeout_ms * BASE_NS_PER_MS;
        can_wait = max_ns == 0 || base_clock_now_ns() - st->wait_since_ns < max_ns;
    }
    /*
     * A waiting Write holds its client's bytes in the core's receive buffers. Once they run
     * low, a connection holding input stops receiving (h2.c yield_bufs) until the engine takes
     * it, and the upload waited for may be on that very connection (a client uploading a blob
     * twice, clients behind one HTTP/2 proxy) or need a buffer itself: each would wait for the
     * other. So then the Write stops waiting and uploads its own copy.
     */
    if (can_wait && c->rc->ring && ring_buf_is_low(c->rc->ring)) can_wait = false;
    /* Likewise with the connection's flow-control window: a few waiting Writes of one
     * connection can hold so much of it that the others, the upload waited for among them,
     * cannot receive (rpc_call_may_wait). */
    if (can_wait && !rpc_call_may_wait(c)) can_wait = false;
    enum blob_encoding enc = encoding_of(&st->res);
    int rc = !bc        ? -ENOSYS
             : can_wait ? blob_upload_begin_shared(bc, &k, enc, &st->u)
                        : blob_upload_begin(bc, &k, enc, &st->u);
    if (rc == -EALREADY) return 1;
    if (rc == -EEXIST) return write_respond_present(st);
    if (rc == -EFBIG) {
        /* Not "store full": a retry, or an empty store, would not take it either; so not
         * RESOURCE_EXHAUSTED, which clients retry (rpc_status_from_err). */
        char message[RPC_CALL_MESSAGE_MAX];
        rpc_status_too_large(message, sizeof(message), k.size, blob_cas_size_max(bc),
                             st->c->rc->cfg->opts.max_size);
        rpc_call_finish(st->c, PROTO_STATUS_INVALID_ARGUMENT, message);
        return -1;
    }
    if (rc < 0) return write_fail(st, rc, "upload");
    base_counter_inc(&c->rc->counters.bs_uploads);
    st->next_offset = 0;
    return 0;
}

/* The fields that precede data are known: check them against the stream. 0, -1 after the
 * call was finished, or 1: the upload waits (begin_upload). */
static int check_message(struct bs_write *st, bool can_wait)
{
    const struct proto_write_request *w = &st->w;
    st->msg_checked = true;
    if (st->begun) {
        if (w->has_name &&
            (w->name_len != st->name_len || memcmp(w->name, st->name, st->name_len) != 0)) {
            return write_fail(st, -EINVAL, "resource_name changed within the stream");
        }
        if (w->write_offset < 0 || (uint64_t)w->write_offset != st->next_offset) {
            return write_fail(st, -EINVAL, "write_offset does not follow the bytes sent");
        }
        return 0;
    }
    if (!w->has_name) return write_fail(st, -EINVAL, "the first WriteRequest has no resource_name");
    memcpy(st->name, w->name, w->name_len);
    st->name_len = w->name_len;
    rpc_call_log_target(st->c, st->name, st->name_len);
    const char *why;
    if (proto_resource_parse(st->name, st->name_len, true, &st->res, &why) < 0) {
        finish_bad_name(st->c, why);
        return -1;
    }
    if (w->write_offset < 0) return write_fail(st, -EINVAL, "negative write_offset");
    st->begun = true;
    return begin_upload(st, (uint64_t)w->write_offset, can_wait);
}

/*
 * Another upload of the blob is under way: hold the input (the data of the first message
 * included) and ask the engine again at each wake-up (WAKE_MS) until that upload ends. If it
 * committed, this call ends at once as for a present blob (the client stops sending); if it
 * failed, this one uploads.
 */
static int write_wait(struct bs_write *st, const uint8_t *data, size_t len)
{
    struct bs_core *bs = bs_core_get(st->c->rc);
    if (!bs || bs->quiescing) return write_fail(st, -ECANCELED, "upload");
    st->wait_data = data;
    st->wait_len = len;
    if (st->wait_since_ns == 0) {
        st->wait_since_ns = base_clock_now_ns();
        base_counter_inc(&st->c->rc->counters.upload_waits); /* once: wake-ups continue it */
    }
    base_list_add_tail(&bs->write_waiters, &st->wait_link);
    if (!ring_timer_is_armed(&bs->wake) &&
        ring_timer_start(bs->rc->ring, &bs->wake, &bs->owner, WAKE_MS) < 0) {
        base_list_del(&st->wait_link);
        return write_fail(st, -EAGAIN, "upload");
    }
    rpc_call_wait_begin(st->c);
    return RPC_HELD;
}

static void append_done(void *ctx, int res);

/* Decodes st->rest and feeds data to the engine: 0 when all taken, RPC_HELD, or -1. */
static int write_pump(struct bs_write *st)
{
    /* Bounded: every step takes at least one byte of rest. */
    while (st->rest_len > 0) {
        const uint8_t *data;
        size_t len;
        int n = proto_write_request_feed(&st->w, st->rest, st->rest_len, &data, &len);
        if (n < 0) return write_fail(st, n == -ENAMETOOLONG ? n : -EBADMSG, "WriteRequest");
        st->rest += n;
        st->rest_len -= (size_t)n;
        if (len == 0) continue;
        if (!st->msg_checked) {
            int checked = check_message(st, true);
            if (checked < 0) return -1;
            if (checked == 1) return write_wait(st, data, len);
        }
        int rc = blob_upload_append(st->u, data, len, append_done, st);
        if (rc == -EINPROGRESS) {
            st->appending = true;
            return RPC_HELD;
        }
        if (rc < 0) return write_fail(st, rc, "upload");
    }
    return 0;
}

/* A wake-up of a write waiting for another upload of its blob (wake_fired). */
static void write_retry(struct bs_write *st)
{
    rpc_call_wait_end(st->c); /* counted again if it waits again */
    int rc = begin_upload(st, 0, true);
    if (rc < 0) return; /* finished: present, or failed */
    if (rc == 1) {
        (void)write_wait(st, st->wait_data, st->wait_len);
        return;
    }
    rc = blob_upload_append(st->u, st->wait_data, st->wait_len, append_done, st);
    if (rc == -EINPROGRESS) {
        st->appending = true;
        return;
    }
    if (rc < 0) {
        (void)write_fail(st, rc, "upload");
        return;
    }
    if (write_pump(st) == 0) rpc_call_resume_input(st->c);
}

/* Each write waiting for another upload of its blob asks the engine again; those told to wait
 * again queue up anew. */
static void write_wake_all(struct bs_core *bs)
{
    struct base_list waiting;
    base_list_init(&waiting);
    while (!base_list_is_empty(&bs->write_waiters)) {
        base_list_add_tail(&waiting, base_list_pop_head(&bs->write_waiters));
    }
    struct base_list *node;
    while ((node = base_list_pop_head(&waiting))) {
        write_retry(BASE_CONTAINER_OF(node, struct bs_write, wait_link));
    }
}

static void append_done(void *ctx, int res)
{
    struct bs_write *st = ctx;
    st->appending = false;
    if (res < 0) {
        (void)write_fail(st, res, "upload");
        return;
    }
    if (write_pump(st) == 0) rpc_call_resume_input(st->c);
}

static int write_on_msg_begin(struct rpc_call *c, uint32_t len)
{
    struct bs_write *st = c->svc;
    if (!st) {
        st = rpc_call_alloc(c, sizeof(*st));
        if (!st) {
            rpc_call_finish_err(c, -ENOMEM, NULL);
            return -1;
        }
        st->c = c;
        base_list_init(&st->wait_link);
        c->svc = st;
    }
    if (st->committing) {
        /* google.bytestream: a WriteRequest after finish_write is an error (the commit goes
         * on; the blob is stored). */
        return write_fail(st, -EINVAL, "a WriteRequest after the one with finish_write");
    }
    proto_write_request_begin(&st->w, len);
    st->msg_checked = false;
    return 0;
}

static int write_on_bytes(struct rpc_call *c, const uint8_t *p, size_t len)
{
    struct bs_write *st = c->svc;
    st->rest = p;
    st->rest_len = len;
    return write_pump(st);
}

static void commit_done(void *ctx, int res)
{
    struct bs_write *st = ctx;
    struct rpc_call *c = st->c;
    st->u = NULL; /* freed by the engine after this callback */
    st->committing = false;
    base_counter_dec(&c->rc->counters.bs_uploads);
    if (!rpc_call_is_over(c)) {
        if (res < 0) {
            (void)write_fail(st, res, "commit");
        } else {
            bool identity = st->res.compressor == PROTO_COMPRESSOR_IDENTITY;
            (void)write_respond(st, identity ? (int64_t)st->res.size : (int64_t)st->bytes_in);
        }
    }
    rpc_call_unpin(c); /* may free the call: last */
}

static int write_on_msg_end(struct rpc_call *c)
{
    struct bs_write *st = c->svc;
    if (proto_write_request_end(&st->w) < 0) return write_fail(st, -EBADMSG, "WriteRequest");
    /* A message without data: nothing to hold while waiting, so it does not wait. */
    if (!st->msg_checked && check_message(st, false) < 0) return -1;
    st->next_offset += st->w.data_len;
    if (!st->w.finish_write) return 0;
    st->bytes_in = blob_upload_bytes_in(st->u);
    int rc = blob_upload_commit(st->u, commit_done, st);
    if (rc < 0) return write_fail(st, rc, "commit");
    st->committing = true;
    rpc_call_pin(c);
    return 0;
}

static void write_on_half_close(struct rpc_call *c)
{
    struct bs_write *st = c->svc;
    if (!st || !st->begun) {
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, "no WriteRequest");
        return;
    }
    if (st->committing || !st->u) return;
    /* Ended without finish_write: keep the upload for a resumed Write. */
    uint64_t committed = blob_upload_bytes_in(st->u);
    park(c->rc, st->u, &st->res);
    st->u = NULL;
    (void)write_respond(st, (int64_t)committed);
}

static void write_on_cancel(struct rpc_call *c)
{
    struct bs_write *st = c->svc;
    if (st && base_list_is_linked(&st->wait_link)) base_list_del(&st->wait_link);
    rpc_call_wait_end(c);
    if (!st || !st->u || st->committing) return;
    /* A dropped connection may come back to resume; a reset or a deadline means "stop". */
    if (c->cancel_status == PROTO_STATUS_UNAVAILABLE && !st->appending) {
        park(c->rc, st->u, &st->res);
    } else {
        upload_abort(c->rc, st->u);
    }
    st->u = NULL;
}

const struct rpc_method rpc_svc_bs_write = {
    .path = "/google.bytestream.ByteStream/Write",
    .route = RPC_ROUTE_GRPC_BS_WRITE,
    .streamed = true,
    .on_msg_begin = write_on_msg_begin,
    .on_bytes = write_on_bytes,
    .on_msg_end = write_on_msg_end,
    .on_half_close = write_on_half_close,
    .on_cancel = write_on_cancel,
};

/* ---- QueryWriteStatus ---- */

static void query_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    ProtobufCAllocator *a = rpc_call_pb_allocator(c);
    Google__Bytestream__QueryWriteStatusRequest *req = rpc_call_unpack(
        c, &google__bytestream__query_write_status_request__descriptor, msg, len, 0, NULL);
    if (!req) return;
    struct proto_resource res;
    const char *why;
    rpc_call_log_target(c, req->resource_name, strlen(req->resource_name));
    int rc = proto_resource_parse(req->resource_name, strlen(req->resource_name), true, &res, &why);
    Google__Bytestream__QueryWriteStatusResponse resp =
        GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_RESPONSE__INIT;
    bool found = false;
    if (rc == 0) {
        struct bs_parked *p = parked_find(c->rc, &res);
        struct blob_key k;
        blob_key_cas(&k, res.hash, res.size);
        struct blob_core *bc = rpc_call_blob(c);
        if (bc && blob_exists(bc, &k, true)) {
            /* Complete: the client skips the upload, so the blob is refreshed as an upload
             * that finds it present would. A parked upload of it (another client stored the
             * blob while this one's was parked) is of no use any more. */
            if (p) parked_drop(c->rc->bytestream, p, true);
            resp.committed_size = (int64_t)res.size;
            resp.complete = true;
            found = true;
        } else if (p) {
            resp.committed_size = (int64_t)blob_upload_bytes_in(p->u);
            found = true;
        }
    }
    google__bytestream__query_write_status_request__free_unpacked(req, a);
    if (rc < 0) {
        finish_bad_name(c, why);
        return;
    }
    if (!found) {
        rpc_call_finish(c, PROTO_STATUS_NOT_FOUND, "no upload of this resource on this server");
        return;
    }
    if (rpc_call_send_message(c, &resp.base) < 0) {
        rpc_call_finish_err(c, -ENOMEM, NULL);
        return;
    }
    rpc_call_finish(c, PROTO_STATUS_OK, NULL);
}

const struct rpc_method rpc_svc_bs_query = {
    .path = "/google.bytestream.ByteStream/QueryWriteStatus",
    .route = RPC_ROUTE_GRPC_BS_QUERY,
    .on_message = query_on_message,
};
