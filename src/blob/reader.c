/*
 * Readers: a stream over one blob from an uncompressed offset. The commit record is read
 * first (its checksum and key are checked), then one chunk record per step: its header and
 * payload checksums are checked before a byte of it is given out. A corrupt record drops the
 * blob from the index, moves a counter, and ends the stream with -EBADMSG.
 *
 * Every disk read goes through the core's ring; closing a reader with a read in flight
 * cancels it (ASYNC_CANCEL) and frees the reader when the completion comes back. Pieces are
 * handed out from the completion or, when no I/O is needed, from a deferred task: a callback
 * never runs inside blob_read_next.
 *
 * No copies where none is needed: compressed reads hand out the stored frames where they were
 * read, and identity reads of chunks stored raw hand out each raw block of the frame in place
 * (a piece per block, up to 128 KiB; the chunk stays "held" in the record buffer until its last
 * block went out). Only zstd-compressed chunks are decoded, into a second buffer taken when
 * first needed. Buffers come from the core's pool (pool.h) within the read buffer budget.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blob/internal.h"

enum reader_mode {
    MODE_IDENTITY = 0, /* decoded bytes */
    MODE_ZSTD = 1,     /* stored frames */
    MODE_RECORDS = 2,  /* stored chunk records, header included (refresh) */
};

struct blob_reader {
    struct blob_core *bc;        /* owner core */
    struct base_list link;       /* on bc->readers */
    struct blob_key key;         /* what is read */
    struct blob_index_value val; /* where it was found */
    uint8_t mode;                /* enum reader_mode */
    uint64_t offset;             /* next uncompressed byte to hand out */
    uint8_t *commit;             /* the commit record (header + payload) once read */
    uint32_t commit_len;         /* its length */
    bool commit_ok;              /* the commit record was read and checked */
    uint8_t *rbuf;               /* read buffer: one chunk record (pooled) */
    uint8_t *obuf;               /* decoded chunk (pooled), taken when first needed */
    uint32_t rbuf_size;          /* bytes asked of the pool for rbuf */
    uint32_t obuf_size;          /* bytes asked of the pool for obuf (reserved before taken) */
    uint64_t buf_bytes;          /* what rbuf and obuf count against the core budget */
    uint64_t held_start;         /* a raw chunk held in rbuf covers [held_start, held_end) */
    uint64_t held_end;           /* == held_start when nothing is held */
    struct blob_seg *seg;        /* segment of the read in flight (a reference) */
    struct blob_aio aio;         /* the read in flight */
    struct blob_io_req req;      /* kept to resubmit after -EAGAIN */
    uint32_t retries;            /* resubmissions of the read in flight */
    uint32_t want_len;           /* bytes the read asked for */
    uint32_t window_pre;         /* the commit read began this many bytes early (small blob) */
    int err;                     /* the error the stream ended with */
    bool closing;                /* close was called while a read was in flight */
    bool busy;                   /* a piece was asked for and not yet delivered */
    blob_data_fn *cb;            /* the caller's callback */
    void *ctx;                   /* its argument */
    const uint8_t *out;          /* deferred piece */
    size_t out_len;              /* its length */
    int out_res;                 /* its result */
    struct ring_task task;       /* delivers a piece that needed no I/O */
};

static void reader_free(struct blob_reader *r)
{
    struct blob_core *bc = r->bc;
    bool busy = blob_aio_is_busy(&r->aio);
    ASSERT(!busy);
    blob_segment_put(&bc->s->segs, r->seg);
    base_list_del(&r->link);
    ring_task_cancel(&r->task);
    free(r->commit);
    blob_pool_put(&bc->pool, r->rbuf, r->rbuf_size);
    blob_pool_put(&bc->pool, r->obuf, r->obuf_size);
    ASSERT(bc->read_buf_bytes >= r->buf_bytes);
    bc->read_buf_bytes -= r->buf_bytes;
    free(r);
    bc->readers_len--;
    base_counter_dec(&bc->counters.readers);
}

static void deliver_task(struct ring_task *t)
{
    struct blob_reader *r = BASE_CONTAINER_OF(t, struct blob_reader, task);
    ASSERT(r->busy);
    r->busy = false;
    r->cb(r->ctx, r->out_res, r->out, r->out_len);
}

static void deliver_later(struct blob_reader *r, int res, const uint8_t *p, size_t n)
{
    if (res < 0 && res != -EAGAIN) r->err = res; /* EAGAIN: try again later */
    r->out_res = res;
    r->out = p;
    r->out_len = n;
    blob_core_defer(r->bc, &r->task);
}

static void deliver_now(struct blob_reader *r, int res, const uint8_t *p, size_t n)
{
    ASSERT(r->busy);
    r->busy = false;
    if (res < 0 && res != -EAGAIN) r->err = res; /* EAGAIN: try again later */
    if (res == 0) base_counter_add(&r->bc->counters.read_bytes, n);
    r->cb(r->ctx, res, p, n);
}

static int reader_open_common(struct blob_core *bc, const struct blob_key *k, uint8_t mode,
                              struct blob_reader **out)
{
    *out = NULL;
    if (bc->readers_len >= bc->s->opts.readers_max) {
        base_counter_inc(&bc->counters.queue_full);
        return -EAGAIN;
    }
    struct blob_reader *r = calloc(1, sizeof(*r));
    if (!r) return -ENOMEM;
    r->bc = bc;
    r->key = *k;
    r->mode = mode;
    base_list_init(&r->link);
    ring_task_init(&r->task, deliver_task);
    base_list_add_tail(&bc->readers, &r->link);
    bc->readers_len++;
    base_counter_inc(&bc->counters.readers);
    base_counter_inc(&bc->counters.reads);
    *out = r;
    return 0;
}

int blob_read_open(struct blob_core *bc, const struct blob_key *k, uint64_t offset,
                   enum blob_encoding want, struct blob_reader **out)
{
    *out = NULL;
    if (want != BLOB_ENCODING_IDENTITY && want != BLOB_ENCODING_ZSTD) return -EINVAL;
    if (k->kind != BLOB_KIND_CAS && k->kind != BLOB_KIND_AC) return -EINVAL;
    struct blob_index_value v = { 0 };
    bool empty = blob_key_is_empty(k);
    if (!empty && !blob_store_lookup(bc->s, k, &v)) return -ENOENT;
    if (offset > v.size) return -ERANGE;
    struct blob_reader *r;
    int rc = reader_open_common(bc, k, want == BLOB_ENCODING_ZSTD ? MODE_ZSTD : MODE_IDENTITY, &r);
    if (rc < 0) return rc;
    r->val = v;
    r->key.size = v.size;
    r->offset = offset;
    if (!empty && blob_store_is_cold(bc->s, &v)) blob_refresh_queue(bc, &r->key, &v);
    *out = r;
    return 0;
}

int blob_read_open_records(struct blob_core *bc, const struct blob_key *k, struct blob_reader **out)
{
    struct blob_index_value v;
    if (!blob_store_lookup(bc->s, k, &v)) return -ENOENT;
    int rc = reader_open_common(bc, k, MODE_RECORDS, out);
    if (rc == 0) {
        (*out)->val = v;
        (*out)->key.size = v.size;
    }
    return rc;
}

uint64_t blob_reader_commit_seq(const struct blob_reader *r)
{
    if (!r->commit_ok) return 0;
    const struct blob_commit *c =
        (const struct blob_commit *)(const void *)(r->commit + sizeof(struct blob_record_header));
    return c->commit_seq;
}

uint64_t blob_reader_size(const struct blob_reader *r)
{
    return r->key.size;
}

/* ---- reads ---- */

static void read_done(struct blob_aio *a, int32_t res);

static int
reader_submit(struct blob_reader *r, uint32_t seg32, uint64_t off,
              uint8_t *buf, /* NOLINT(readability-non-const-parameter): the kernel writes it */
              uint32_t len)
{
    struct blob_core *bc = r->bc;
    if (bc->disk_reads >= bc->s->opts.disk_queue_max) {
        base_counter_inc(&bc->counters.queue_full);
        return -EAGAIN;
    }
    struct blob_seg *seg = blob_segment_get(&bc->s->segs, seg32);
    if (!seg) return -ENOENT;
    struct blob_io_req req = {
        .op = BLOB_IO_READ, .fd = seg->fd, .buf = buf, .len = len, .off = off
    };
    r->aio.fn = read_done;
    r->aio.ctx = r;
    r->req = req;
    r->retries = 0;
    int rc = blob_core_submit(bc, &r->aio, &req);
    if (rc < 0) {
        blob_segment_put(&bc->s->segs, seg);
        base_counter_inc(&bc->counters.queue_full);
        return rc;
    }
    r->seg = seg;
    r->want_len = len;
    bc->disk_reads++;
    base_counter_inc(&bc->counters.io_in_flight);
    return 0;
}

static uint32_t commit_guess(const struct blob_reader *r)
{
    uint64_t chunk = r->bc->s->opts.chunk_size;
    uint64_t chunks = (r->key.size + chunk - 1) / chunk;
    return (uint32_t)(sizeof(struct blob_record_header) + blob_commit_payload_len(chunks));
}

/*
 * A blob of one small chunk is usually written in one piece with its commit record, its chunk
 * record just before it: the first read then starts that far early, so one disk read brings
 * both (commit_arrived), and a read costs one trip through the ring instead of two.
 */
#define WINDOW_RAW_MAX (64u << 10)

static uint32_t window_pre(const struct blob_reader *r, uint64_t off)
{
    if (r->key.size == 0 || r->key.size > WINDOW_RAW_MAX) return 0;
    if (r->key.size > r->bc->s->opts.chunk_size) return 0;
    uint64_t pre = (blob_chunk_record_bound((uint32_t)r->key.size) + 7u) & ~(uint64_t)7;
    return (uint32_t)(pre < off ? pre : off);
}

static int take_buffers(struct blob_reader *r, uint32_t raw, uint32_t rsize);

/*
 * Reads the commit record (<len> bytes), the first time with the window in front of it: then
 * into the record buffer, where the chunk record is wanted (commit_arrived copies the commit
 * record out). Without room in the read buffer budget the window is skipped.
 */
static int read_commit(struct blob_reader *r, uint32_t len, bool first)
{
    uint64_t off = (uint64_t)r->val.loc.off8 * 8;
    uint32_t pre = first ? window_pre(r, off) : 0;
    free(r->commit);
    r->commit = malloc(len);
    if (!r->commit) return -ENOMEM;
    r->commit_len = len;
    r->window_pre = 0;
    uint8_t *buf = r->commit;
    if (pre > 0 && !r->rbuf) {
        uint32_t raw = (uint32_t)r->key.size;
        uint32_t bound = blob_chunk_record_bound(raw);
        (void)take_buffers(r, raw, pre + len > bound ? pre + len : bound);
    }
    /* A retry after -EAGAIN finds the buffer taken the first time. */
    if (pre > 0 && r->rbuf && r->rbuf_size >= pre + len) {
        r->window_pre = pre;
        buf = r->rbuf;
    }
    return reader_submit(r, r->val.loc.seg, off - r->window_pre, buf, r->window_pre + len);
}

static const struct blob_commit *commit_of(const struct blob_reader *r)
{
    return (const struct blob_commit *)(const void *)(r->commit +
                                                      sizeof(struct blob_record_header));
}

static const struct blob_chunk_ref *ref_of(const struct blob_reader *r, uint32_t i)
{
    return (const struct blob_chunk_ref *)(const void *)(commit_of(r) + 1) + i;
}

static void reader_corrupt(struct blob_reader *r)
{
    base_counter_inc(&r->bc->counters.corrupt_chunks);
    blob_store_drop_corrupt(r->bc->s, &r->key, &r->val.loc);
    deliver_now(r, -EBADMSG, NULL, 0);
}

/* Checks the commit record read into r->commit. 0, 1 (read again, longer) or -EBADMSG. */
static int check_commit(struct blob_reader *r)
{
    const struct blob_record_header *h = (const void *)r->commit;
    uint64_t room = BLOB_SEG_SIZE_MAX;
    if (blob_format_check_record_header(h, room) < 0 || h->type != BLOB_RECORD_COMMIT) {
        return -EBADMSG;
    }
    uint32_t need = (uint32_t)sizeof(*h) + h->payload_len;
    if (need > r->commit_len) return 1;
    if (blob_format_check_payload(h, r->commit + sizeof(*h)) < 0) return -EBADMSG;
    const struct blob_commit *c = commit_of(r);
    if (blob_format_check_commit(c, h->payload_len) < 0) return -EBADMSG;
    if (c->kind != r->key.kind || c->size != r->key.size ||
        memcmp(c->hash, r->key.hash, BLOB_HASH_SIZE) != 0) {
        return -EBADMSG;
    }
    return 0;
}

static uint64_t chunk_bytes(const struct blob_reader *r)
{
    return 1ULL << commit_of(r)->chunk_shift;
}

/*
 * Takes the reader's record buffer (<rsize> bytes) from the core's pool and reserves its
 * decode buffer (<raw> bytes), both within the core's read buffer budget: past it the read
 * answers -EAGAIN (retry later) instead of growing.
 */
static int take_buffers(struct blob_reader *r, uint32_t raw, uint32_t rsize)
{
    ASSERT(r->rbuf == NULL);
    struct blob_pool *pool = &r->bc->pool;
    uint32_t osize = r->mode != MODE_RECORDS ? raw : 0;
    uint64_t need =
        blob_pool_class_size(pool, rsize) + (osize ? blob_pool_class_size(pool, osize) : 0);
    if (r->bc->read_buf_bytes + need > r->bc->s->opts.read_buffer_max) return -EAGAIN;
    r->rbuf = blob_pool_get(pool, rsize);
    if (!r->rbuf) return -ENOMEM;
    r->rbuf_size = rsize;
    r->obuf_size = osize;
    r->bc->read_buf_bytes += need;
    r->buf_bytes = need;
    return 0;
}

/* The buffers for the blob's chunks (take_buffers), unless a window read took them. */
static int ensure_buffers(struct blob_reader *r)
{
    if (r->rbuf) return 0;
    uint64_t chunk = chunk_bytes(r);
    uint32_t raw = (uint32_t)(r->key.size < chunk ? r->key.size : chunk);
    int rc = take_buffers(r, raw, blob_chunk_record_bound(raw));
    if (rc == -EAGAIN) base_counter_inc(&r->bc->counters.queue_full);
    return rc;
}

/* The decode buffer, taken from the pool the first time a chunk must be decoded. */
static uint8_t *decode_buffer(struct blob_reader *r)
{
    ASSERT(r->obuf_size > 0);
    if (!r->obuf) r->obuf = blob_pool_get(&r->bc->pool, r->obuf_size);
    return r->obuf;
}

/* Starts the read of the chunk holding r->offset. */
static int read_chunk(struct blob_reader *r)
{
    int rc = ensure_buffers(r);
    if (rc < 0) return rc;
    uint32_t i = (uint32_t)(r->offset >> commit_of(r)->chunk_shift);
    const struct blob_chunk_ref *ref = ref_of(r, i);
    uint32_t len = (uint32_t)sizeof(struct blob_record_header) + ref->stored;
    if (len > r->rbuf_size) return -EBADMSG;
    return reader_submit(r, (uint32_t)ref->seg, (uint64_t)ref->off8 * 8, r->rbuf, len);
}

/*
 * The next piece of the raw chunk held in rbuf: from r->offset to the end of its raw block.
 * Advances r->offset and drops the hold after the last block. 0 or -EBADMSG.
 */
static int held_piece(struct blob_reader *r, const uint8_t **p, size_t *n)
{
    ASSERT(r->offset >= r->held_start);
    ASSERT(r->offset < r->held_end);
    const struct blob_record_header *h = (const void *)r->rbuf;
    const uint8_t *payload = r->rbuf + sizeof(*h);
    int64_t span = blob_chunk_raw_span(h, payload, (uint32_t)(r->offset - r->held_start), p);
    if (span < 0) return (int)span;
    *n = (size_t)span;
    r->offset += *n;
    if (r->offset >= r->held_end) r->held_start = r->held_end = 0;
    return 0;
}

static bool is_held(const struct blob_reader *r)
{
    return r->held_end > r->held_start && r->offset >= r->held_start && r->offset < r->held_end;
}

/* Hands out the chunk now in r->rbuf, checked. */
static void chunk_arrived(struct blob_reader *r)
{
    const struct blob_record_header *h = (const void *)r->rbuf;
    uint64_t chunk = chunk_bytes(r);
    uint64_t start = r->offset & ~(chunk - 1);
    uint64_t raw = r->key.size - start < chunk ? r->key.size - start : chunk;
    if (blob_format_check_record_header(h, r->want_len - sizeof(*h)) < 0 ||
        h->type != BLOB_RECORD_CHUNK || h->raw_len != raw ||
        h->payload_len != r->want_len - sizeof(*h) ||
        blob_format_check_payload(h, r->rbuf + sizeof(*h)) < 0) {
        reader_corrupt(r);
        return;
    }
    const uint8_t *payload = r->rbuf + sizeof(*h);
    uint64_t skip = r->offset - start;
    if (r->mode == MODE_RECORDS) {
        r->offset = start + raw;
        deliver_now(r, 0, r->rbuf, r->want_len);
        return;
    }
    if (r->mode == MODE_ZSTD && skip == 0) {
        r->offset = start + raw;
        deliver_now(r, 0, payload, h->payload_len);
        return;
    }
    if (r->mode == MODE_IDENTITY && h->enc == BLOB_CHUNK_RAW) {
        /* Its bytes are in the frame already: hand them out block by block, in place. */
        r->held_start = start;
        r->held_end = start + raw;
        const uint8_t *p;
        size_t n;
        if (held_piece(r, &p, &n) < 0) {
            reader_corrupt(r);
            return;
        }
        deliver_now(r, 0, p, n);
        return;
    }
    uint8_t *obuf = decode_buffer(r);
    if (!obuf) {
        deliver_now(r, -ENOMEM, NULL, 0);
        return;
    }
    if (blob_chunk_decode(&r->bc->zctx, h, payload, obuf, r->obuf_size) < 0) {
        reader_corrupt(r);
        return;
    }
    r->offset = start + raw;
    if (r->mode == MODE_IDENTITY) {
        deliver_now(r, 0, r->obuf + skip, (size_t)(raw - skip));
        return;
    }
    /* A compressed read from inside a chunk: the rest of it as a raw frame, exact. */
    uint32_t n = blob_chunk_raw_frame(r->obuf + skip, (uint32_t)(raw - skip), r->rbuf);
    deliver_now(r, 0, r->rbuf, n);
}

static void reader_step(struct blob_reader *r);

/*
 * The window before a checked commit record (<pre> bytes at the start of rbuf, read from the
 * commit's offset - <pre>): when the blob's one chunk record lies wholly inside it, moves it
 * to the start of rbuf as if read_chunk had read it. chunk_arrived checks its checksums.
 */
static bool window_take_chunk(struct blob_reader *r, uint32_t pre)
{
    if (commit_of(r)->chunk_count != 1) return false;
    const struct blob_chunk_ref *ref = ref_of(r, 0);
    uint64_t commit_off = (uint64_t)r->val.loc.off8 * 8;
    uint64_t start = commit_off - pre;
    uint64_t off = (uint64_t)ref->off8 * 8;
    uint64_t len = sizeof(struct blob_record_header) + (uint64_t)ref->stored;
    if ((uint32_t)ref->seg != r->val.loc.seg || off < start || off + len > commit_off) {
        return false; /* written apart from its commit (a streamed upload): read it alone */
    }
    /* A raw chunk fills the window exactly; a compressed one ends just before the commit. */
    if (off > start) memmove(r->rbuf, r->rbuf + (off - start), (size_t)len);
    r->want_len = (uint32_t)len;
    return true;
}

/* The first read (<got> bytes, window included) or a longer re-read of the commit record. */
static void commit_arrived(struct blob_reader *r, uint32_t got)
{
    uint32_t pre = r->window_pre;
    r->window_pre = 0;
    if (got < pre + sizeof(struct blob_record_header)) {
        /* Not even a record header where the index points: torn or cut. */
        reader_corrupt(r);
        return;
    }
    /* The guessed length may run past the file's end. */
    r->commit_len = got - pre;
    if (pre > 0) memcpy(r->commit, r->rbuf + pre, r->commit_len);
    int rc = check_commit(r);
    if (rc < 0) {
        reader_corrupt(r);
        return;
    }
    if (rc == 1) {
        const struct blob_record_header *h = (const void *)r->commit;
        rc = read_commit(r, (uint32_t)sizeof(*h) + h->payload_len, false);
        if (rc < 0) deliver_now(r, rc, NULL, 0);
        return;
    }
    r->commit_ok = true;
    if (pre > 0 && window_take_chunk(r, pre)) {
        chunk_arrived(r);
        return;
    }
    reader_step(r);
}

static void read_done(struct blob_aio *a, int32_t res)
{
    struct blob_reader *r = a->ctx;
    struct blob_core *bc = r->bc;
    /* XFS and others may answer -EAGAIN even for blocking files: read again (bounded). */
    if ((res == -EAGAIN || res == -EINTR) && !r->closing && r->retries < 16) {
        r->retries++;
        if (blob_core_submit(bc, &r->aio, &r->req) == 0) return;
    }
    bc->disk_reads--;
    base_counter_dec(&bc->counters.io_in_flight);
    blob_segment_put(&bc->s->segs, r->seg);
    r->seg = NULL;
    if (r->closing) {
        reader_free(r);
        return;
    }
    if (res < 0) {
        deliver_now(r, res == -ECANCELED ? -ECANCELED : -EIO, NULL, 0);
        return;
    }
    if (!r->commit_ok) {
        commit_arrived(r, (uint32_t)res);
        return;
    }
    if ((uint32_t)res != r->want_len) {
        /* A record that runs past the end of its file: torn or cut. */
        reader_corrupt(r);
        return;
    }
    chunk_arrived(r);
}

/* Moves the stream on: end, the commit record, or the next chunk. */
static void reader_step(struct blob_reader *r)
{
    if (r->offset >= r->key.size) {
        deliver_later(r, 0, NULL, 0);
        return;
    }
    int rc = read_chunk(r);
    if (rc == -EBADMSG) {
        reader_corrupt(r);
    } else if (rc < 0) {
        deliver_later(r, rc, NULL, 0);
    }
}

int blob_read_next(struct blob_reader *r, blob_data_fn *cb, void *ctx)
{
    if (r->busy) return -EBUSY;
    if (r->err < 0) return r->err;
    r->cb = cb;
    r->ctx = ctx;
    r->busy = true;
    if (r->offset >= r->key.size) {
        deliver_later(r, 0, NULL, 0);
        return 0;
    }
    if (is_held(r)) {
        /* The next raw block of the chunk read last time: no I/O. */
        const uint8_t *p;
        size_t n;
        if (held_piece(r, &p, &n) == 0) {
            base_counter_add(&r->bc->counters.read_bytes, n);
            deliver_later(r, 0, p, n);
            return 0;
        }
        base_counter_inc(&r->bc->counters.corrupt_chunks);
        blob_store_drop_corrupt(r->bc->s, &r->key, &r->val.loc);
        deliver_later(r, -EBADMSG, NULL, 0);
        r->err = -EBADMSG;
        return 0;
    }
    int rc = r->commit_ok ? read_chunk(r) : read_commit(r, commit_guess(r), true);
    if (rc == -EBADMSG) {
        base_counter_inc(&r->bc->counters.corrupt_chunks);
        blob_store_drop_corrupt(r->bc->s, &r->key, &r->val.loc);
        deliver_later(r, -EBADMSG, NULL, 0);
        r->err = -EBADMSG;
        return 0;
    }
    if (rc < 0) {
        r->busy = false;
        return rc;
    }
    return 0;
}

void blob_read_close(struct blob_reader *r)
{
    if (!r) return;
    if (blob_aio_is_busy(&r->aio)) {
        r->closing = true;
        r->bc->s->io->ops->cancel(r->bc->s->io, &r->aio);
        ring_task_cancel(&r->task);
        return;
    }
    reader_free(r);
}
