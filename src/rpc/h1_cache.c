/*
 * Cache routes over the storage engine. One request at a time per connection, so the state
 * lives in the connection (struct rpc_h1_cache) and is reset per request.
 *
 * Keys: a CAS blob is (SHA-256, size) in the engine, but HTTP names it by hash alone: GET and
 * HEAD look it up with BLOB_SIZE_ANY, which finds it whatever its size and however it was
 * uploaded (HTTP or gRPC). The empty blob is size 0, always present. AC and plain-key entries
 * use the route's derived 32-byte key (src/rpc/keys.c).
 *
 * Uploads stream into the engine as they arrive, whatever their framing: a body with a
 * Content-Length and no content coding is an upload of that size; a chunked or zstd-encoded
 * body is an upload whose size the engine fixes at commit (BLOB_SIZE_UNKNOWN), bounded by the
 * engine as the bytes arrive. No body is held in memory.
 *
 * Action results (GET and HEAD of <prefix>/ac/<hash>): the value is read as identity bytes and
 * held unsent until its verdict. Its first piece is sniffed (rpc_ac_check_may_decode); an
 * opaque value is then answered as stored, as any read. A value that may be an ActionResult
 * is decoded in place when its first piece holds all of it, else gathered into message memory
 * first (up to AC_GATHER_MAX); if it decodes, the completeness check (rpc/ac_check.h) decides
 * between serving it and 404, as gRPC's GetActionResult does. docs/http.md says why.
 *
 * Conditions (If-Match, If-None-Match; RFC 9110 §13.2.2) are evaluated where the answer
 * without them would be 2xx, with what that answer already looked up: a GET or HEAD once the
 * entry was found (an action result once its verdict is "serve"), a PUT once its upload began
 * or found the CAS blob present. A request without them costs no more. Only a CAS blob has an
 * ETag: its hash, one per representation ("<hash>", "<hash>.zst"); an AC or plain-key value
 * changes under its name and has no cheap validator, so only "*" matches it.
 *
 * Sections: keys and statuses, conditions, reads (GET, HEAD), action results, uploads (PUT).
 */
#include "rpc/h1_cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "blob/store.h"
#include "rpc/internal.h"
#include "rpc/keys.h"
#include "rpc/status.h"

#define READ_RETRY_MS   1          /* after blob_read_next answered -EAGAIN */
#define READ_RETRY_MAX  2000       /* then 503 */
#define AC_GATHER_MAX   (4u << 20) /* largest /ac/ value decoded: gRPC's ActionResult limit */
#define PUT_WAIT_MS     5          /* a PUT's first wait for another upload of its blob */
#define PUT_WAIT_MAX_MS 100        /* its longest, doubling from PUT_WAIT_MS */

/* ---- keys and statuses ---- */

static bool is_cas(const struct rpc_h1_cache *cr)
{
    return cr->route->target == RPC_H1_TARGET_CAS;
}

/* The key to look the entry up with: a CAS blob by its hash alone. */
static void lookup_key(const struct rpc_h1_cache *cr, struct blob_key *k)
{
    if (!is_cas(cr)) {
        blob_key_ac(k, cr->route->key, 0);
        return;
    }
    blob_key_cas(k, cr->route->key, BLOB_SIZE_ANY);
}

static void upload_key(const struct rpc_h1_cache *cr, struct blob_key *k, uint64_t size)
{
    if (is_cas(cr)) {
        blob_key_cas(k, cr->route->key, size);
    } else {
        blob_key_ac(k, cr->route->key, size);
    }
}

static int read_status(int err)
{
    switch (err) {
    case -ENOENT:
    case -EBADMSG: /* a corrupt chunk: the engine dropped the blob, it is missing now */
    case -EIO:     /* the disk failed the read: dropped as well */
        return 404;
    case -ERANGE:
        return 416;
    case -EAGAIN:
    case -ECANCELED:
    case -ENOMEM: /* the message memory an action result's check needs */
        return 503;
    case -EINVAL:
        return 400;
    default:
        return 500;
    }
}

static int upload_status(int err)
{
    switch (err) {
    case -EILSEQ:   /* digest mismatch */
    case -EMSGSIZE: /* more or fewer bytes than the blob's size */
    case -EBADMSG:  /* malformed zstd */
    case -EINVAL:
        return 400;
    case -EAGAIN:
    case -ECANCELED:
    case -ENOMEM:
    case -EROFS: /* out of service for writes; /readyz says so */
        return 503;
    case -ENOSPC:
    case -EFBIG: /* a CAS blob over the limit is answered with the sizes (put_begin) */
        return 507;
    default:
        return 500;
    }
}

int rpc_h1_cache_status(int err, bool upload)
{
    return upload ? upload_status(err) : read_status(err);
}

static const char *status_text(int status, int err)
{
    switch (status) {
    case 404:
        return "not found";
    case 503:
        if (err == -EROFS) return "the data folder is read-only: nothing can be stored now";
        return err == -ECANCELED ? "draining" : "busy, retry later";
    case 507: /* -ENOSPC passes, -EFBIG (an AC or plain value over the limit) does not */
        return err == -ENOSPC ? "the store is full now, retry later"
                              : "the store cannot fit this blob";
    default:
        break;
    }
    if (err == -EILSEQ) return "digest mismatch: body does not hash to the name";
    if (err == -EMSGSIZE) return "size mismatch";
    if (err == -EBADMSG) return "malformed zstd body";
    return "storage error";
}

/* ---- conditions ---- */

static void read_close(struct rpc_h1_cache *cr);
static void ac_end(struct rpc_h1_cache *cr);

enum cond {
    COND_PASS = 0,    /* serve the request as without the condition */
    COND_FAILED,      /* 412 */
    COND_NOT_MODIFIED /* 304 (GET, HEAD) */
};

/* The ETag of a CAS blob <hash>'s representation: "<hash>" (identity) or "<hash>.zst"
 * (<zstd>, the stored frames), quoted. Two representations need two strong tags (RFC 9110
 * §8.8.3). */
static void cas_etag(const uint8_t *hash, bool zstd, char out[RPC_H1_ETAG_MAX + 1])
{
    STATIC_ASSERT(RPC_KEY_SIZE == BLOB_HASH_SIZE, "a route's key is a blob's hash");
    STATIC_ASSERT(2 * BLOB_HASH_SIZE + 6 <= RPC_H1_ETAG_MAX, "quotes and .zst");
    char *p = out;
    *p++ = '"';
    blob_hash_to_hex(hash, p);
    p += (size_t)2 * BLOB_HASH_SIZE;
    if (zstd) {
        memcpy(p, ".zst", 4);
        p += 4;
    }
    *p++ = '"';
    *p = '\0';
}

static uint8_t names(const struct rpc_h1_head *head, uint64_t fields, const char *etag,
                     const char *etag2, bool weak)
{
    if (!fields) return 0;
    uint8_t n = rpc_h1_etag_match(head, fields, NULL, weak) ? RPC_H1_NAMES_ANY : 0;
    if (etag && rpc_h1_etag_match(head, fields, etag, weak)) n |= RPC_H1_NAMES_TAG;
    if (etag2 && rpc_h1_etag_match(head, fields, etag2, weak)) n |= RPC_H1_NAMES_TAG2;
    return n;
}

void rpc_h1_cache_conds(const struct rpc_h1_head *head, struct rpc_h1_request *req,
                        const struct rpc_h1_route *route)
{
    char etag[RPC_H1_ETAG_MAX + 1];
    char etag2[RPC_H1_ETAG_MAX + 1];
    bool cas = route->target == RPC_H1_TARGET_CAS;
    if (cas) {
        cas_etag(route->key, false, etag);
        cas_etag(route->key, true, etag2);
    }
    /* If-Match compares strongly, If-None-Match weakly (RFC 9110 §13.1.1, §13.1.2). */
    req->if_match_names = names(head, req->if_match, cas ? etag : NULL, cas ? etag2 : NULL, false);
    req->if_none_match_names =
        names(head, req->if_none_match, cas ? etag : NULL, cas ? etag2 : NULL, true);
}

static bool has_cond(const struct rpc_h1_cache *cr)
{
    return cr->req->if_match || cr->req->if_none_match;
}

/*
 * A create-only write of an AC entry or a plain key (If-None-Match: *): the engine decides at
 * the commit, before its record is written, so that of two such PUTs one succeeds however
 * they overlap (blob_upload_begin_create). A CAS blob's PUT needs none: its begin finds the
 * blob present, or waits for an upload of it under way.
 */
static bool is_create(const struct rpc_h1_cache *cr)
{
    return !is_cas(cr) && (cr->req->if_none_match_names & RPC_H1_NAMES_ANY);
}

/*
 * RFC 9110 §13.2.2 for a request whose answer without conditions would be 2xx: If-Match
 * (nothing matches an absent entry), then If-None-Match (a match is 304 for GET and HEAD, 412
 * otherwise). <exists>: the entry is there now; <tags>: the RPC_H1_NAMES_TAG bits of its
 * representation (a CAS PUT: both, its blob has both). If-Modified-Since and
 * If-Unmodified-Since are ignored: there is no modification date (docs/http.md).
 */
static enum cond cond_eval(const struct rpc_h1_cache *cr, bool exists, uint8_t tags)
{
    const struct rpc_h1_request *req = cr->req;
    uint8_t named = RPC_H1_NAMES_ANY | tags;
    if (req->if_match && (!exists || !(req->if_match_names & named))) return COND_FAILED;
    if (req->if_none_match && exists && (req->if_none_match_names & named)) {
        bool read = req->method == RPC_H1_METHOD_GET || req->method == RPC_H1_METHOD_HEAD;
        return read ? COND_NOT_MODIFIED : COND_FAILED;
    }
    return COND_PASS;
}

/* Answers a condition that did not pass; nothing else of the request may be held. */
static void cond_answer(struct rpc_h1_cache *cr, enum cond c)
{
    ASSERT(c != COND_PASS);
    if (c == COND_NOT_MODIFIED) {
        rpc_h1_answer_not_modified(cr->h);
        return;
    }
    rpc_h1_answer(cr->h, 412, "precondition failed");
}

/* Evaluates the conditions of a GET or HEAD of a present entry whose 200 would send the
 * representation <zstd>; false when they were answered. Sets the 200's ETag. */
static bool read_cond(struct rpc_h1_cache *cr, bool zstd)
{
    if (is_cas(cr)) {
        char etag[RPC_H1_ETAG_MAX + 1];
        cas_etag(cr->route->key, zstd, etag);
        rpc_h1_etag(cr->h, etag);
    }
    if (!has_cond(cr)) return true;
    uint8_t tag = !is_cas(cr) ? 0 : zstd ? RPC_H1_NAMES_TAG2 : RPC_H1_NAMES_TAG;
    enum cond c = cond_eval(cr, true, tag);
    if (c == COND_PASS) return true;
    if (cr->reader) read_close(cr);
    ac_end(cr);
    cond_answer(cr, c);
    return false;
}

/* ---- reads ---- */

#define READ_OUT_MAX (2u << 20) /* bytes of pieces queued or in a send: no more asked past it */

static void read_next(struct rpc_h1_cache *cr);
static void ac_piece(struct rpc_h1_cache *cr, int res, const uint8_t *data, size_t len);

static void read_close(struct rpc_h1_cache *cr)
{
    blob_read_close(cr->reader);
    cr->reader = NULL;
    cr->queued_count = 0;
    cr->sent_count = 0;
    cr->out_bytes = 0;
}

static void read_fail(struct rpc_h1_cache *cr, int err)
{
    /* Pieces in a send stay the engine's until the send's completion: the connection's close
     * (which a failed stream leads to) releases the reader then. */
    if (!cr->sending) read_close(cr);
    int status = read_status(err);
    if (cr->ac_pending) {
        /* Nothing was answered yet: no stream began. */
        ac_end(cr);
        rpc_h1_answer(cr->h, status, status_text(status, err));
        return;
    }
    rpc_h1_stream_fail(cr->h, status, status_text(status, err));
}

/* Sends the pieces that arrived, in one send. */
static void send_queued(struct rpc_h1_cache *cr)
{
    ASSERT(!cr->sending);
    ASSERT(cr->sent_count == 0);
    ASSERT(cr->queued_count > 0);
    memcpy(cr->in_send, cr->queued, cr->queued_count * sizeof(cr->queued[0]));
    cr->sent_count = cr->queued_count;
    cr->queued_count = 0;
    cr->sending = true;
    rpc_h1_stream_pieces(cr->h, cr->in_send, cr->sent_count);
}

/* Every piece went out: close the reader and end the response. */
static void read_finish(struct rpc_h1_cache *cr)
{
    read_close(cr);
    rpc_h1_stream_end(cr->h);
}

static void read_done(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct rpc_h1_cache *cr = ctx;
    ASSERT(cr->reading);
    cr->reading = false;
    if (cr->ac_pending) {
        ac_piece(cr, res, data, len);
        return;
    }
    if (res < 0) {
        read_fail(cr, res);
        return;
    }
    if (len == 0) {
        cr->read_ended = true;
        if (!cr->sending) read_finish(cr);
        return;
    }
    cr->retries = 0;
    ASSERT(cr->queued_count < RPC_H1_STREAM_PIECES_MAX);
    cr->queued[cr->queued_count++] = (struct iovec){ (void *)(uintptr_t)data, len };
    cr->out_bytes += len;
    if (!cr->sending) send_queued(cr);
    /* The send may have failed and closed the connection: then the reader is gone. */
    if (cr->reader) read_next(cr);
}

static void put_retry(struct rpc_h1_cache *cr);

/*
 * The request waits (<waiting>) or no longer does: a GET's read refused by the full disk queue
 * or read memory, a PUT behind another upload of its blob. Counted by the core while it
 * waits, and once per wait however many retries it takes, so that /metrics tells a server
 * whose requests wait from an idle one (docs/operations.md).
 */
static void read_wait_set(struct rpc_h1_cache *cr, bool waiting)
{
    if (cr->read_waiting == waiting) return;
    cr->read_waiting = waiting;
    if (!waiting) {
        base_counter_dec(&cr->rc->counters.read_waiters);
        return;
    }
    base_counter_inc(&cr->rc->counters.read_waiters);
    base_counter_inc(&cr->rc->counters.read_waits);
}

static void put_wait_set(struct rpc_h1_cache *cr, bool waiting)
{
    if (cr->put_waiting == waiting) return;
    cr->put_waiting = waiting;
    if (!waiting) {
        base_counter_dec(&cr->rc->counters.upload_waiters);
        return;
    }
    base_counter_inc(&cr->rc->counters.upload_waiters);
    base_counter_inc(&cr->rc->counters.upload_waits);
}

static void retry_fired(struct ring_timer *timer)
{
    struct rpc_h1_cache *cr = timer->ctx;
    if (cr->put_waiting) {
        put_retry(cr);
        return;
    }
    if (cr->reader) read_next(cr);
}

static void read_next(struct rpc_h1_cache *cr)
{
    uint32_t out = cr->queued_count + cr->sent_count;
    if (cr->reading || cr->read_ended || out == RPC_H1_STREAM_PIECES_MAX ||
        cr->out_bytes >= READ_OUT_MAX) {
        return;
    }
    int rc = blob_read_next(cr->reader, read_done, cr);
    if (rc != -EAGAIN) read_wait_set(cr, false);
    if (rc == 0) {
        cr->reading = true;
        return;
    }
    /* Every engine buffer holds a piece in the send: its completion asks again. */
    if (rc == -ENOBUFS && cr->sending) return;
    /* The core's disk queue is full: try again shortly, a bounded number of times. */
    if (rc == -EAGAIN && cr->retries < READ_RETRY_MAX && !ring_timer_is_pending(&cr->retry)) {
        cr->retries++;
        struct ring_core *core = ring_core_current();
        if (ring_timer_start(core, &cr->retry, rpc_h1_owner(cr->h), READ_RETRY_MS) == 0) {
            read_wait_set(cr, true);
            return;
        }
    }
    if (rc == -EAGAIN && ring_timer_is_pending(&cr->retry)) return;
    read_wait_set(cr, false);
    read_fail(cr, rc);
}

/* Opens the reader of the request's key in <enc>, held (pieces released one by one); false
 * when that failed and the answer is given. */
static bool read_open(struct rpc_h1_cache *cr, enum blob_encoding enc)
{
    struct blob_key k;
    lookup_key(cr, &k);
    int rc = blob_read_open(cr->bc, &k, 0, enc, &cr->reader);
    if (rc < 0) {
        cr->reader = NULL;
        int status = read_status(rc);
        rpc_h1_answer(cr->h, status, status_text(status, rc));
        return false;
    }
    blob_read_hold(cr->reader);
    return true;
}

static void start_get(struct rpc_h1_cache *cr)
{
    enum blob_encoding want = cr->req->accept_zstd ? BLOB_ENCODING_ZSTD : BLOB_ENCODING_IDENTITY;
    if (!read_open(cr, want)) return;
    /* Chosen by Accept-Encoding, also when the answer is identity (not asked for, HTTP/1.0,
     * the empty value): a cache in front must not give these bytes to a client that asks
     * otherwise. */
    rpc_h1_vary_encoding(cr->h);
    /* An empty value goes out as identity: zero bytes are no zstd stream, and strict
     * decoders refuse a Content-Encoding: zstd body without a frame. */
    cr->zstd_out = want == BLOB_ENCODING_ZSTD && blob_reader_size(cr->reader) > 0;
    if (!read_cond(cr, cr->zstd_out)) return;
    rpc_h1_stream_begin(cr->h, blob_reader_size(cr->reader), cr->zstd_out);
    read_next(cr);
}

static void start_head(struct rpc_h1_cache *cr)
{
    struct blob_key k;
    lookup_key(cr, &k);
    struct blob_info info;
    int rc = blob_stat(cr->bc, &k, &info);
    /* A client that skips an upload because HEAD found the blob relies on it as on a
     * FindMissingBlobs: a blob in the oldest part of the log is refreshed, as GET does. That
     * second look answers: eviction may have taken the blob since the first (then it is
     * missing, and a 200 would have sent the client on without uploading it). */
    if (rc == 0 && info.cold && !blob_exists(cr->bc, &k, true)) rc = -ENOENT;
    if (rc < 0) {
        rpc_h1_answer(cr->h, 404, "not found");
        return;
    }
    /* The same fields as its GET (RFC 9110 §9.3.2), which sends zstd frames, chunked, when
     * they are asked for and the value is not empty (start_get). */
    rpc_h1_vary_encoding(cr->h);
    bool zstd = cr->req->accept_zstd && info.size > 0;
    if (!read_cond(cr, zstd)) return;
    rpc_h1_answer_head(cr->h, info.size, zstd);
}

void rpc_h1_cache_piece_sent(struct rpc_h1_cache *cr)
{
    if (cr->ac_value) {
        /* A gathered action result went out in one piece; its reader is closed. */
        ASSERT(cr->sending);
        cr->sending = false;
        ac_end(cr);
        rpc_h1_stream_end(cr->h);
        return;
    }
    ASSERT(cr->reader);
    ASSERT(cr->sending);
    cr->sending = false;
    /* Bounded by RPC_H1_STREAM_PIECES_MAX. */
    for (uint32_t i = 0; i < cr->sent_count; i++) {
        ASSERT(cr->out_bytes >= cr->in_send[i].iov_len);
        cr->out_bytes -= cr->in_send[i].iov_len;
        blob_read_release(cr->reader, cr->in_send[i].iov_base);
    }
    cr->sent_count = 0;
    if (cr->queued_count > 0) {
        send_queued(cr);
    } else if (cr->read_ended) {
        read_finish(cr);
        return;
    }
    if (cr->reader) read_next(cr);
}

static void start_ac_read(struct rpc_h1_cache *cr);

static void start_read(struct rpc_h1_cache *cr)
{
    /* --no-ac-check: action results are values like any other (served as stored). */
    if (cr->route->target == RPC_H1_TARGET_AC && cr->rc->cfg->opts.ac_check) {
        start_ac_read(cr);
    } else if (cr->req->method == RPC_H1_METHOD_HEAD) {
        start_head(cr);
    } else {
        start_get(cr);
    }
}

/* ---- action results ---- */

/* Ends the /ac/ verdict's state: the check stops, the gathered value is freed. */
static void ac_end(struct rpc_h1_cache *cr)
{
    cr->ac_pending = false;
    rpc_ac_check_stop(&cr->ac_chk);
    if (cr->ac_value) proto_alloc_free(&cr->rc->pb_mem, cr->ac_value);
    cr->ac_value = NULL;
    cr->ac_value_len = 0;
}

/* Answers with the value as read: an opaque value, or an ActionResult found complete. */
static void ac_serve(struct rpc_h1_cache *cr)
{
    cr->ac_pending = false;
    if (!read_cond(cr, false)) return; /* the verdict was "serve": a 2xx without conditions */
    if (cr->req->method == RPC_H1_METHOD_HEAD) {
        if (cr->reader) read_close(cr);
        ac_end(cr);
        rpc_h1_answer_head(cr->h, cr->ac_size, false); /* checked results are identity */
        return;
    }
    rpc_h1_stream_begin(cr->h, cr->ac_size, false);
    if (cr->ac_value) {
        /* Gathered: the reader is closed and the bytes go out in one piece. */
        ASSERT(cr->ac_value_len > 0);
        cr->in_send[0] = (struct iovec){ cr->ac_value, cr->ac_value_len };
        cr->sending = true;
        rpc_h1_stream_pieces(cr->h, cr->in_send, 1);
        return;
    }
    /* In place: the held first piece (if any) goes out, the read goes on as any GET's. */
    if (cr->queued_count > 0) send_queued(cr);
    if (!cr->reader) return; /* the send failed and the connection closes */
    if (cr->read_ended && !cr->sending) {
        read_finish(cr);
        return;
    }
    read_next(cr);
}

static void ac_checked(struct rpc_ac_check *chk, int res)
{
    struct rpc_h1_cache *cr = chk->ctx;
    ASSERT(cr->ac_pending);
    if (res == -ENOENT) {
        if (cr->reader) read_close(cr);
        ac_end(cr);
        rpc_h1_answer(cr->h, 404,
                      "action result found, but some of its outputs are not in the CAS");
        return;
    }
    if (res < 0) {
        read_fail(cr, res);
        return;
    }
    ac_serve(cr);
}

/* The whole value is at <p>/<len>: check it if it is an ActionResult, else serve it. */
static void ac_decide(struct rpc_h1_cache *cr, const uint8_t *p, size_t len)
{
    cr->ac_chk = (struct rpc_ac_check){ .rc = cr->rc, .done = ac_checked, .ctx = cr };
    int rc = rpc_ac_check_start(&cr->ac_chk, p, len);
    if (rc == -EBADMSG) {
        ac_serve(cr); /* not an ActionResult: opaque, served as stored */
        return;
    }
    if (rc < 0) read_fail(cr, rc);
}

/* A piece of a value that may be an ActionResult, read into one buffer to be decoded. */
static void ac_gather(struct rpc_h1_cache *cr, const uint8_t *data, size_t len)
{
    if (!cr->ac_value) {
        cr->ac_value = proto_alloc_malloc(&cr->rc->pb_mem, (size_t)cr->ac_size);
        if (!cr->ac_value) {
            read_fail(cr, -ENOMEM);
            return;
        }
    }
    if (len > cr->ac_size - cr->ac_value_len) {
        read_fail(cr, -EIO); /* the engine gave more than the value's size */
        return;
    }
    memcpy(cr->ac_value + cr->ac_value_len, data, len);
    cr->ac_value_len += len;
    blob_read_release(cr->reader, data);
    read_next(cr);
}

static void ac_piece(struct rpc_h1_cache *cr, int res, const uint8_t *data, size_t len)
{
    if (res < 0) {
        read_fail(cr, res);
        return;
    }
    if (len == 0) {
        cr->read_ended = true;
        if (!cr->ac_value) {
            ac_decide(cr, data, 0); /* the empty value: the empty ActionResult */
        } else if (cr->ac_value_len != cr->ac_size) {
            read_fail(cr, -EIO);
        } else {
            read_close(cr);
            ac_decide(cr, cr->ac_value, cr->ac_value_len);
        }
        return;
    }
    cr->retries = 0;
    if (cr->ac_value) {
        ac_gather(cr, data, len);
        return;
    }
    /* The first piece. */
    if (!rpc_ac_check_may_decode(data, len, cr->ac_size)) {
        cr->queued[cr->queued_count++] = (struct iovec){ (void *)(uintptr_t)data, len };
        cr->out_bytes += len;
        ac_serve(cr);
        return;
    }
    if (len == cr->ac_size) {
        /* All of it in one piece: decoded in place, held until the verdict. */
        cr->queued[cr->queued_count++] = (struct iovec){ (void *)(uintptr_t)data, len };
        cr->out_bytes += len;
        ac_decide(cr, data, len);
        return;
    }
    if (cr->ac_size > AC_GATHER_MAX) {
        /* Too large to check within the memory bound: a false miss costs a rebuild, a false
         * hit a broken build (docs/http.md). */
        read_close(cr);
        ac_end(cr);
        rpc_h1_answer(cr->h, 404, "action result too large to check");
        return;
    }
    ac_gather(cr, data, len);
}

static void start_ac_read(struct rpc_h1_cache *cr)
{
    /* Identity, whatever the client accepts: the verdict needs the value's bytes. */
    if (!read_open(cr, BLOB_ENCODING_IDENTITY)) return;
    cr->ac_pending = true;
    cr->ac_size = blob_reader_size(cr->reader);
    read_next(cr);
}

/* ---- uploads ---- */

/*
 * Answers <status> for a CAS blob of <size> bytes (UINT64_MAX: not known) larger than the
 * store takes, <limit> bytes, naming both: "store full" would mislead on an empty store.
 */
static void answer_too_large(struct rpc_h1_cache *cr, int status, uint64_t size, uint64_t limit)
{
    rpc_status_too_large(cr->refusal, sizeof(cr->refusal), size, limit, cr->max_blob * 4);
    rpc_h1_answer(cr->h, status, cr->refusal);
}

static void upload_fail(struct rpc_h1_cache *cr, int err)
{
    if (cr->upload) {
        blob_upload_abort(cr->upload);
        cr->upload = NULL;
    }
    if (err == -EMSGSIZE && cr->unsized) {
        /* A body without a declared size grew past the largest entry the store takes. */
        if (is_cas(cr)) {
            answer_too_large(cr, 413, UINT64_MAX, blob_cas_size_max(cr->bc));
        } else {
            rpc_h1_answer(cr->h, 413, "body over the size limit");
        }
        return;
    }
    int status = upload_status(err);
    rpc_h1_answer(cr->h, status, status_text(status, err));
}

static void put_etag(struct rpc_h1_cache *cr);

static void committed(void *ctx, int res)
{
    struct rpc_h1_cache *cr = ctx;
    cr->upload = NULL; /* the engine frees it after this callback */
    if (res == -EEXIST) {
        /* A create-only write whose key was stored while its body arrived. */
        rpc_h1_answer(cr->h, 412, "precondition failed");
        return;
    }
    if (res < 0) {
        upload_fail(cr, res);
        return;
    }
    put_etag(cr);
    rpc_h1_answer_empty(cr->h, cr->existed ? 200 : 201);
}

static void commit(struct rpc_h1_cache *cr)
{
    int rc = blob_upload_commit(cr->upload, committed, cr);
    if (rc < 0) upload_fail(cr, rc);
}

/*
 * Begins the engine's upload of <size> decoded bytes arriving as <enc>; with <shared>, a CAS
 * blob another upload is writing answers -EALREADY (blob_upload_begin_shared).
 */
static int begin_upload(struct rpc_h1_cache *cr, uint64_t size, enum blob_encoding enc, bool shared)
{
    struct blob_key k;
    if (!is_cas(cr)) {
        struct blob_info info;
        lookup_key(cr, &k);
        cr->existed = blob_stat(cr->bc, &k, &info) == 0;
    }
    upload_key(cr, &k, size);
    int rc;
    if (is_create(cr)) {
        /* One create-only upload of the key at a time; one that waited a read timeout for
         * another stops waiting, and may not write unguarded: busy. */
        rc = shared ? blob_upload_begin_create(cr->bc, &k, enc, &cr->upload) : -EAGAIN;
    } else if (shared && is_cas(cr)) {
        rc = blob_upload_begin_shared(cr->bc, &k, enc, &cr->upload);
    } else {
        rc = blob_upload_begin(cr->bc, &k, enc, &cr->upload);
    }
    if (rc < 0) cr->upload = NULL;
    return rc;
}

static uint64_t size_limit(const struct rpc_h1_cache *cr)
{
    return is_cas(cr) ? cr->max_blob : RPC_H1_AC_MAX;
}

static void put_begin(struct rpc_h1_cache *cr, bool shared);

/*
 * A CAS PUT whose body is stored as sent (identity) tells its client the ETag of the identity
 * representation, which is now what a GET returns (RFC 9110 §8.8.3); a zstd body is not that
 * representation, and gets none.
 */
static void put_etag(struct rpc_h1_cache *cr)
{
    if (!is_cas(cr) || cr->req->encoding != RPC_H1_CODING_IDENTITY) return;
    char etag[RPC_H1_ETAG_MAX + 1];
    cas_etag(cr->route->key, false, etag);
    rpc_h1_etag(cr->h, etag);
}

/*
 * Evaluates a PUT's conditions once its upload began (the entry was absent, or, AC and plain
 * keys, cr->existed says) or the CAS blob was found present (<present>). False when they
 * failed: the upload is aborted and 412 answered before the body is read (a body that is not
 * needed is dropped, or the connection closes, as for every refusal). "If-None-Match: *" is
 * the create-only write: checked here, before the body, and for AC and plain keys by the
 * engine again at the commit (is_create).
 */
static bool put_cond(struct rpc_h1_cache *cr, bool present)
{
    bool exists = is_cas(cr) ? present : cr->existed || present;
    /* A CAS blob has both representations: a tag of either names it. */
    uint8_t tags = is_cas(cr) ? RPC_H1_NAMES_TAG | RPC_H1_NAMES_TAG2 : 0;
    enum cond c = cond_eval(cr, exists, tags);
    if (c == COND_PASS) return true;
    if (cr->upload) {
        blob_upload_abort(cr->upload);
        cr->upload = NULL;
    }
    cond_answer(cr, c);
    return false;
}

/*
 * The most body bytes a PUT may send: a zstd body may be a little larger than what it decodes
 * to; the engine takes up to twice its limit of compressed bytes (store.h), and refuses past
 * that as they arrive.
 */
static uint64_t body_limit(const struct rpc_h1_cache *cr)
{
    bool identity = cr->req->encoding == RPC_H1_CODING_IDENTITY;
    return identity ? size_limit(cr) : 2 * size_limit(cr) + (1ULL << 20);
}

/* The PUT's upload size: BLOB_SIZE_UNKNOWN (cr->unsized) when fixed at commit. */
static uint64_t put_size(const struct rpc_h1_cache *cr)
{
    return cr->unsized ? BLOB_SIZE_UNKNOWN : cr->req->content_length;
}

static void start_put(struct rpc_h1_cache *cr)
{
    const struct rpc_h1_request *req = cr->req;
    bool identity = req->encoding == RPC_H1_CODING_IDENTITY;
    uint64_t limit = body_limit(cr);
    /* Neither framing means no body (RFC 9112 §6.3), which is what `curl -X PUT URL` without
     * data sends: stored, it would be an empty value, under /ac/ an empty ActionResult served
     * as a hit with no outputs. A client that wants to store nothing says Content-Length: 0. */
    if (!req->has_length && !req->chunked) {
        rpc_h1_answer(cr->h, 411, "PUT needs Content-Length or Transfer-Encoding: chunked");
        return;
    }
    if (req->has_length && req->content_length > limit) {
        if (is_cas(cr)) {
            answer_too_large(cr, 413, identity ? req->content_length : UINT64_MAX, cr->max_blob);
        } else {
            rpc_h1_answer(cr->h, 413, "body over the size limit");
        }
        return;
    }
    /* Chunked, or zstd-encoded, the decoded size is known only at the end: the engine fixes
     * it at commit. */
    cr->unsized = req->chunked || !identity;
    cr->put_wait_t0_ns = base_clock_now_ns();
    cr->put_wait_ms = PUT_WAIT_MS;
    put_begin(cr, true);
}

/*
 * Begins the PUT's upload, or waits while another upload of its blob is under way (on any
 * core): its body stays unread (the connection is busy, not idle) and the engine is asked
 * again, a little later each time. When that upload commits, this one's body is not needed;
 * when it fails, this one writes the blob. After a read timeout of waiting (a first upload as
 * slow as its client may be), this one writes its own copy.
 */
static void put_begin(struct rpc_h1_cache *cr, bool shared)
{
    enum blob_encoding enc =
        cr->req->encoding == RPC_H1_CODING_IDENTITY ? BLOB_ENCODING_IDENTITY : BLOB_ENCODING_ZSTD;
    int rc = begin_upload(cr, put_size(cr), enc, shared);
    if (rc == -EALREADY) {
        struct ring_core *core = ring_core_current();
        if (ring_timer_start(core, &cr->retry, rpc_h1_owner(cr->h), cr->put_wait_ms) == 0) {
            put_wait_set(cr, true);
            cr->put_wait_ms =
                cr->put_wait_ms * 2 > PUT_WAIT_MAX_MS ? PUT_WAIT_MAX_MS : cr->put_wait_ms * 2;
            return;
        }
        put_wait_set(cr, false);
        rc = begin_upload(cr, put_size(cr), enc, false); /* no timer: do not wait */
    }
    put_wait_set(cr, false);
    if ((rc == 0 || rc == -EEXIST) && has_cond(cr) && !put_cond(cr, rc == -EEXIST)) return;
    if (is_cas(cr) && rc == -EFBIG) {
        /* Within --max-size/4 but over what the engine takes now: 507, as before. */
        answer_too_large(cr, upload_status(rc), put_size(cr), blob_cas_size_max(cr->bc));
        return;
    }
    if (rc == -EEXIST) {
        put_etag(cr);
        rpc_h1_body_discard(cr->h, 200, body_limit(cr)); /* present: the body is not needed */
        return;
    }
    if (rc < 0) {
        upload_fail(cr, rc);
        return;
    }
    rpc_h1_body_accept(cr->h);
}

static void put_retry(struct rpc_h1_cache *cr)
{
    uint64_t waited_ns = base_clock_now_ns() - cr->put_wait_t0_ns;
    uint64_t max_ns = (uint64_t)cr->rc->cfg->read_timeout_ms * BASE_NS_PER_MS;
    put_begin(cr, max_ns == 0 || waited_ns < max_ns);
}

static void appended(void *ctx, int res)
{
    struct rpc_h1_cache *cr = ctx;
    if (res < 0) {
        upload_fail(cr, res);
        return;
    }
    rpc_h1_body_resume(cr->h);
}

int rpc_h1_cache_body(struct rpc_h1_cache *cr, const uint8_t *data, size_t len)
{
    ASSERT(cr->upload);
    int rc = blob_upload_append(cr->upload, data, len, appended, cr);
    if (rc == 0 || rc == -EINPROGRESS) return rc;
    upload_fail(cr, rc);
    return -ECANCELED;
}

void rpc_h1_cache_body_end(struct rpc_h1_cache *cr)
{
    commit(cr);
}

/* ---- the request ---- */

void rpc_h1_cache_init(struct rpc_h1_cache *cr, struct rpc_h1_conn *h)
{
    memset(cr, 0, sizeof(*cr));
    cr->h = h;
    ring_timer_init(&cr->retry, retry_fired, cr);
}

void rpc_h1_cache_start(struct rpc_h1_cache *cr, struct rpc_core *rc,
                        const struct rpc_h1_request *req, const struct rpc_h1_route *route,
                        uint64_t max_blob)
{
    ASSERT(!cr->upload);
    ASSERT(!cr->reader);
    ASSERT(!cr->ac_pending);
    ASSERT(!cr->ac_value);
    struct blob_core *bc = rc->blob;
    cr->rc = rc;
    cr->bc = bc;
    cr->req = req;
    cr->route = route;
    cr->max_blob = max_blob;
    cr->reading = false;
    cr->read_ended = false;
    cr->sending = false;
    cr->existed = false;
    cr->zstd_out = false;
    cr->unsized = false;
    cr->retries = 0;
    read_wait_set(cr, false);
    put_wait_set(cr, false);
    if (!bc) {
        rpc_h1_answer(cr->h, 503, "store not available");
        return;
    }
    switch (req->method) {
    case RPC_H1_METHOD_GET:
    case RPC_H1_METHOD_HEAD:
        start_read(cr);
        return;
    case RPC_H1_METHOD_PUT:
        start_put(cr);
        return;
    case RPC_H1_METHOD_OTHER:
        break;
    }
    UNREACHABLE(); /* routing refuses other methods */
}

void rpc_h1_cache_close(struct rpc_h1_cache *cr)
{
    if (cr->upload) {
        blob_upload_abort(cr->upload);
        cr->upload = NULL;
    }
    if (cr->reader) read_close(cr);
    ac_end(cr);
    cr->reading = false;
    cr->read_ended = false;
    cr->sending = false;
    if (ring_timer_is_armed(&cr->retry)) ring_timer_stop(ring_core_current(), &cr->retry);
    cr->unsized = false;
    read_wait_set(cr, false);
    put_wait_set(cr, false);
}
