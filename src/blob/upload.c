/*
 * Uploads: bytes arrive, are hashed (after zstd decoding for compressed uploads), cut into
 * logical chunks, compressed straight into the core's write buffer and streamed into the
 * active segment. Nothing is staged in a file and nothing is written twice. Commit checks the
 * size and the digest, appends the commit record and makes the blob visible once the record
 * is durable. An upload that fails or is aborted leaves its chunks as unindexed garbage.
 *
 * States: OPEN (appends allowed), WAIT (an append waits for buffer room), COMMIT (waiting for
 * room for the last chunk or the commit record), DURABLE (the record waits for its fsync).
 * The copy mode (refresh) appends stored chunk records as they are and moves the index entry
 * instead of inserting one.
 *
 * Uploads of unknown size (BLOB_SIZE_UNKNOWN) stream the same way: full chunks go out as they
 * fill, the last (short) one at commit, where the size is fixed, checked and written into the
 * commit record. Until then the upload's bound is the largest blob the store takes
 * (upload_limit): past it, and whenever the store is over its budget when a chunk goes out,
 * the upload fails mid-stream; nothing is visible before the commit record is durable.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "blob/internal.h"

#define AC_SIZE_MAX         (64ULL << 20)
#define ZSTD_WINDOW_LOG_MAX 27 /* 128 MiB: what zstd -19 --long may use; memory is counted */
/* Compressed bytes a zstd upload may feed per decoded byte of its limit (the named size, or for
 * an unknown size the largest value the store takes), plus a MiB: bounds a stream of skippable
 * or empty frames that never decodes to anything. Real streams stay far below it: zstd's worst
 * case is the data plus 3 bytes per 128 KiB block and some 18 bytes per frame. */
#define ZSTD_IN_PER_OUT_MAX 2ULL

enum upload_state {
    UP_OPEN = 1,
    UP_WAIT,
    UP_COMMIT,
    UP_DURABLE,
};

struct blob_upload {
    struct blob_core *bc;        /* owner core */
    struct base_list link;       /* on bc->uploads */
    struct blob_key key;         /* what is uploaded */
    uint8_t state;               /* enum upload_state */
    uint8_t enc;                 /* enum blob_encoding of the incoming bytes */
    bool copy;                   /* refresh copy of stored records */
    bool unsized;                /* begun with BLOB_SIZE_UNKNOWN: key.size is fixed at commit */
    bool entered;                /* in the store's table of blobs being uploaded */
    bool unshared;               /* taken out of it (blob_upload_unshare): may go back */
    bool create;                 /* create-only (blob_upload_begin_create): in the table */
    bool commit_waited;          /* the commit waited for the writer once (writer_waits) */
    uint64_t limit;              /* decoded bytes expected (key.size) or, unsized, allowed */
    struct blob_loc from;        /* copy: the location being replaced */
    uint64_t copy_seq;           /* copy: the commit number it keeps */
    uint8_t copy_shift;          /* copy: the chunk shift of the records it copies */
    struct blob_digest digest;   /* running hash of decoded bytes */
    ZSTD_DCtx *dstream;          /* zstd uploads: the decoder */
    bool frame_done;             /* zstd: the last frame ended */
    uint8_t *chunk;              /* decoded bytes of the chunk being filled */
    uint32_t chunk_len;          /* bytes in chunk */
    uint32_t chunk_size;         /* capacity (min(chunk size, blob size)) */
    struct blob_chunk_ref *refs; /* chunks written so far */
    uint32_t refs_len;           /* used */
    uint32_t refs_size;          /* capacity */
    uint64_t oldest_seq;         /* oldest segment holding a chunk */
    uint64_t bytes_in;           /* bytes fed by the caller */
    uint64_t decoded;            /* decoded bytes */
    uint64_t emitted;            /* decoded bytes already in chunk records */
    int err;                     /* a failure that ends the upload */
    const uint8_t *in;           /* pending append: input left */
    size_t in_len;               /* its length */
    uint32_t rec_len;            /* copy mode: record length pending */
    blob_done_fn *cb;            /* pending append or commit callback */
    void *ctx;                   /* its argument */
    struct blob_waiter waiter;   /* waiting for buffer room */
    struct blob_pending pending; /* the commit record waiting for durability */
    struct blob_loc new_loc;     /* where the commit record went */
    int result;                  /* commit result for the deferred callback */
    struct ring_task task;       /* runs the deferred commit callback */
};

static void upload_free(struct blob_upload *u)
{
    struct blob_core *bc = u->bc;
    /* After the commit indexed the blob: an upload that waited for this one finds it. */
    if (u->entered) blob_uploading_leave(&bc->s->uploading, &u->key);
    base_list_del(&u->link);
    ring_task_cancel(&u->task);
    blob_writer_unwait(&bc->writer, &u->waiter);
    blob_digest_deinit(&u->digest);
    if (u->dstream) ZSTD_freeDCtx(u->dstream);
    blob_pool_put(&bc->pool, u->chunk, u->chunk_size);
    free(u->refs);
    free(u);
    ASSERT(bc->uploads_len > 0);
    bc->uploads_len--;
    base_counter_dec(&bc->counters.uploads);
}

static void upload_waiter_fn(struct blob_waiter *wt, int res);

static struct blob_upload *upload_alloc(struct blob_core *bc, const struct blob_key *k)
{
    struct blob_upload *u = calloc(1, sizeof(*u));
    if (!u) return NULL;
    u->bc = bc;
    u->key = *k;
    u->state = UP_OPEN;
    u->oldest_seq = UINT64_MAX;
    base_list_init(&u->link);
    base_list_init(&u->waiter.link);
    base_list_init(&u->pending.link);
    u->waiter.fn = upload_waiter_fn;
    ring_task_init(&u->task, NULL);
    uint64_t chunk = bc->s->opts.chunk_size;
    u->chunk_size = (uint32_t)(k->size < chunk ? k->size : chunk);
    u->limit = k->size;
    if (u->chunk_size > 0 && !u->copy) {
        u->chunk = blob_pool_get(&bc->pool, u->chunk_size);
        if (!u->chunk) {
            free(u);
            return NULL;
        }
    }
    base_list_add_tail(&bc->uploads, &u->link);
    bc->uploads_len++;
    base_counter_inc(&bc->counters.uploads);
    return u;
}

/*
 * The most chunk refs a commit record may hold: the record, with a block of room on either
 * side, fits in one write buffer (the writer asserts it does). The one rule behind the largest
 * blob the store takes and the refresh copies it can commit (blob_upload_copy_fits).
 */
static uint64_t commit_refs_max(const struct blob_store *s)
{
    uint64_t fixed =
        sizeof(struct blob_record_header) + blob_commit_payload_len(0) + 2ULL * BLOB_BLOCK_SIZE;
    return (s->opts.write_buffer_size - fixed) / blob_chunk_ref_size(BLOB_COMMIT_VERSION);
}

/*
 * The largest blob of <kind> the store takes: a quarter of its ceiling (the budget with the
 * whole file system free), what the index can hold, and a chunk table that fits in one write
 * buffer with its record (AC: 64 MiB). Not a quarter of the budget now: that falls to nothing
 * while other files fill the disk, and a blob refused as larger than the store takes is one a
 * retry would not store either.
 */
static uint64_t upload_limit(const struct blob_store *s, uint8_t kind)
{
    uint64_t limit = commit_refs_max(s) * s->opts.chunk_size;
    uint64_t quarter = atomic_load(&s->ceiling) / 4;
    if (limit > quarter) limit = quarter;
    if (kind == BLOB_KIND_AC && limit > AC_SIZE_MAX) limit = AC_SIZE_MAX;
    return limit < BLOB_SIZE_MAX ? limit : BLOB_SIZE_MAX;
}

uint64_t blob_upload_zstd_bytes(const struct blob_upload *u)
{
    return u->dstream ? (uint64_t)ZSTD_sizeof_DCtx(u->dstream) : 0;
}

uint64_t blob_cas_size_max(const struct blob_core *bc)
{
    return upload_limit(bc->s, BLOB_KIND_CAS);
}

static bool over_budget(const struct blob_store *s)
{
    return atomic_load(&s->segs.disk_bytes) > blob_store_budget(s);
}

/* Admission and budget checks shared by every kind of upload. */
static int upload_admit(struct blob_core *bc, const struct blob_key *k)
{
    struct blob_store *s = bc->s;
    if (bc->quiescing) return -ECANCELED;
    if (bc->uploads_len >= s->opts.uploads_max) {
        base_counter_inc(&bc->counters.queue_full);
        return -EAGAIN;
    }
    bool unsized = k->size == BLOB_SIZE_UNKNOWN;
    if (!unsized && k->size > upload_limit(s, BLOB_KIND_CAS)) {
        base_counter_inc(&bc->counters.full);
        return -EFBIG; /* never fits: not a full store a retry could find emptier */
    }
    /* Over a quarter of the budget now, not of the ceiling: the disk is full of other files
     * (or of ours, eviction behind), and a retry once it has room stores the blob. */
    if (over_budget(s) || (!unsized && k->size > blob_store_budget(s) / 4)) {
        base_counter_inc(&bc->counters.full);
        return -ENOSPC;
    }
    return 0;
}

/* How an upload begins: alone, sharing its CAS blob (waits), or create-only (AC). */
enum begin_mode {
    BEGIN_ALONE,
    BEGIN_SHARED,
    BEGIN_CREATE,
};

static int upload_begin(struct blob_core *bc, const struct blob_key *k, enum blob_encoding incoming,
                        enum begin_mode mode, struct blob_upload **out)
{
    bool shared = mode == BEGIN_SHARED;
    bool create = mode == BEGIN_CREATE;
    *out = NULL;
    if (k->kind != BLOB_KIND_CAS && k->kind != BLOB_KIND_AC) return -EINVAL;
    if (!blob_digest_is_supported(k->digest_fn)) return -EINVAL;
    if (incoming != BLOB_ENCODING_IDENTITY && incoming != BLOB_ENCODING_ZSTD) return -EINVAL;
    if (k->size == BLOB_SIZE_ANY) return -EINVAL; /* a lookup's size, not a blob's */
    bool unsized = k->size == BLOB_SIZE_UNKNOWN;
    if (k->kind == BLOB_KIND_AC && k->size > AC_SIZE_MAX && !unsized) return -EINVAL;
    struct blob_key present = *k;
    if (unsized) present.size = BLOB_SIZE_ANY; /* a CAS blob is present at any size */
    if (create && k->kind != BLOB_KIND_AC) return -EINVAL;
    if ((k->kind == BLOB_KIND_CAS || create) && blob_exists(bc, &present, !create)) {
        base_counter_inc(&bc->counters.uploads_present);
        return -EEXIST;
    }
    int rc = upload_admit(bc, k);
    if (rc < 0) return rc;
    int entered = 0;
    if (k->kind == BLOB_KIND_CAS || create) {
        /*
         * The store's table of keys being uploaded. A CAS blob's shared upload waits for one
         * under way (alone, it is counted and goes on); a create-only upload is one at a time
         * store-wide, so no other create-only commit comes between its check at the commit
         * and its record, and a key the table has no room for cannot be guarded: refused.
         */
        bool waits = shared || create;
        entered = blob_uploading_enter(&bc->s->uploading, k, !waits);
        if (entered == -EALREADY) {
            base_counter_inc(&bc->counters.uploads_waiting);
            return -EALREADY;
        }
        if (entered == 0 && create) {
            base_counter_inc(&bc->counters.queue_full);
            return -EAGAIN;
        }
        /* The upload waited for may have been indexed and left between the look above and
         * the entry: its blob (or key) is present. */
        if (entered == 1 && waits && blob_exists(bc, &present, false)) {
            blob_uploading_leave(&bc->s->uploading, k);
            base_counter_inc(&bc->counters.uploads_present);
            return -EEXIST;
        }
    }
    struct blob_upload *u = upload_alloc(bc, k);
    if (!u) {
        if (entered == 1) blob_uploading_leave(&bc->s->uploading, k);
        return -ENOMEM;
    }
    u->entered = entered == 1;
    u->create = create;
    u->enc = (uint8_t)incoming;
    if (unsized) {
        u->unsized = true;
        u->limit = upload_limit(bc->s, k->kind);
    }
    rc = blob_digest_init(&u->digest, k->digest_fn);
    if (rc == 0 && incoming == BLOB_ENCODING_ZSTD) {
        u->dstream = ZSTD_createDCtx_advanced(blob_chunk_zstd_budget_mem(&bc->zbudget));
        if (!u->dstream || ZSTD_isError(ZSTD_DCtx_setParameter(u->dstream, ZSTD_d_windowLogMax,
                                                               ZSTD_WINDOW_LOG_MAX))) {
            rc = -ENOMEM;
        }
    }
    if (rc < 0) {
        upload_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

int blob_upload_begin(struct blob_core *bc, const struct blob_key *k, enum blob_encoding incoming,
                      struct blob_upload **out)
{
    return upload_begin(bc, k, incoming, BEGIN_ALONE, out);
}

int blob_upload_begin_shared(struct blob_core *bc, const struct blob_key *k,
                             enum blob_encoding incoming, struct blob_upload **out)
{
    return upload_begin(bc, k, incoming, BEGIN_SHARED, out);
}

int blob_upload_begin_create(struct blob_core *bc, const struct blob_key *k,
                             enum blob_encoding incoming, struct blob_upload **out)
{
    return upload_begin(bc, k, incoming, BEGIN_CREATE, out);
}

void blob_upload_unshare(struct blob_upload *u)
{
    ASSERT(!u->copy || !u->entered);
    if (!u->entered) return;
    blob_uploading_leave(&u->bc->s->uploading, &u->key);
    u->entered = false;
    u->unshared = true;
}

void blob_upload_reshare(struct blob_upload *u)
{
    ASSERT(u->state == UP_OPEN);
    if (!u->unshared) return; /* in the table, or never was (AC, copies, no room) */
    ASSERT(!u->entered);
    ASSERT(u->key.kind == BLOB_KIND_CAS);
    /* Alone: it never waits, and counts as one more upload under way. */
    int rc = blob_uploading_enter(&u->bc->s->uploading, &u->key, true);
    ASSERT(rc == 0 || rc == 1);
    u->entered = rc == 1;
    u->unshared = !u->entered;
}

int blob_upload_begin_copy(struct blob_core *bc, const struct blob_key *k,
                           const struct blob_loc *from, struct blob_upload **out)
{
    *out = NULL;
    int rc = upload_admit(bc, k);
    if (rc < 0) return rc;
    struct blob_key key = *k;
    key.size = 0; /* no chunk buffer: records arrive encoded */
    struct blob_upload *u = upload_alloc(bc, &key);
    if (!u) return -ENOMEM;
    u->key.size = k->size;
    u->copy = true;
    u->from = *from;
    *out = u;
    return 0;
}

/* Adds the chunk record whose header is <h>, written at <off> of segment <seq>, to the table. */
static int refs_push(struct blob_upload *u, uint64_t seq, uint64_t off,
                     const struct blob_record_header *h)
{
    if (u->refs_len == u->refs_size) {
        uint32_t size = u->refs_size ? u->refs_size * 2 : 4;
        struct blob_chunk_ref *r = realloc(u->refs, size * sizeof(*r));
        if (!r) return -ENOMEM;
        u->refs = r;
        u->refs_size = size;
    }
    struct blob_chunk_ref *r = &u->refs[u->refs_len++];
    r->seg = seq;
    r->off8 = (uint32_t)(off / 8);
    r->stored = h->payload_len;
    r->sum = h->payload_sum; /* binds the record to this blob and place (format.h) */
    if (seq < u->oldest_seq) u->oldest_seq = seq;
    return 0;
}

/*
 * Writes <n> bytes at <src> (a full chunk) as a chunk record. With <hash>, the bytes are
 * hashed first (they come straight from the caller). 0, -EINPROGRESS (wait: nothing was
 * taken) or -errno.
 */
static int upload_emit_from(struct blob_upload *u, const uint8_t *src, uint32_t n, bool hash)
{
    struct blob_writer *w = &u->bc->writer;
    if (u->unsized && over_budget(u->bc->s)) {
        /* Admitted without a size: the budget is checked again as the data arrives. */
        base_counter_inc(&u->bc->counters.full);
        return -ENOSPC;
    }
    uint64_t off;
    uint64_t seq;
    int err;
    uint8_t *p = blob_writer_reserve(w, blob_chunk_record_bound(n), false, &off, &seq, &err);
    if (!p) return err;
    if (hash) blob_digest_update(&u->digest, src, n);
    uint32_t used = blob_chunk_encode(&u->bc->zctx, src, n, p);
    struct blob_record_header h;
    memcpy(&h, p, sizeof(h)); /* before the commit, which may start the buffer's write */
    blob_writer_commit(w, used);
    int rc = refs_push(u, seq, off, &h);
    if (rc < 0) return rc;
    u->emitted += n;
    return 0;
}

/* Writes the full chunk buffer as a chunk record. 0, -EINPROGRESS (wait) or -errno. */
static int upload_emit(struct blob_upload *u)
{
    int rc = upload_emit_from(u, u->chunk, u->chunk_len, false);
    if (rc == 0) u->chunk_len = 0;
    return rc;
}

/*
 * Identity input that holds a whole chunk while none is buffered is compressed straight from
 * the caller's memory: no copy. Returns 1 when it took a chunk, 0 when it does not apply,
 * or <0 (-EINPROGRESS: wait).
 */
static int take_direct(struct blob_upload *u)
{
    uint64_t left = u->limit - u->decoded;
    uint64_t want = left < u->chunk_size ? left : u->chunk_size;
    /* Unsized, a short chunk may not be the last: it goes through the chunk buffer. */
    if (u->unsized) want = u->chunk_size;
    if (u->chunk_len != 0 || want == 0 || u->in_len < want || want > left) return 0;
    int rc = upload_emit_from(u, u->in, (uint32_t)want, true);
    if (rc < 0) return rc;
    u->decoded += want;
    u->in += want;
    u->in_len -= want;
    return 1;
}

/* The chunk is full: the last one is shorter than chunk_size. */
static bool chunk_is_full(const struct blob_upload *u)
{
    uint64_t left = u->limit - u->emitted;
    uint64_t want = left < u->chunk_size && !u->unsized ? left : u->chunk_size;
    return u->chunk_len > 0 && u->chunk_len == want;
}

/* Takes identity bytes from u->in into the chunk buffer. Returns bytes taken or -EMSGSIZE. */
static int64_t take_identity(struct blob_upload *u)
{
    uint64_t room = u->chunk_size - u->chunk_len;
    uint64_t left = u->limit - u->decoded;
    if (left == 0) return -EMSGSIZE;
    uint64_t n = u->in_len < room ? u->in_len : room;
    n = n < left ? n : left;
    memcpy(u->chunk + u->chunk_len, u->in, n);
    blob_digest_update(&u->digest, u->in, n);
    u->chunk_len += (uint32_t)n;
    u->decoded += n;
    u->in += n;
    u->in_len -= n;
    return (int64_t)n;
}

/*
 * Decodes zstd bytes from u->in into the chunk buffer. Returns 0 or -EBADMSG/-EMSGSIZE, or
 * -ENOMEM when the frame's window would take the core past its zstd memory limit (a frame
 * may declare up to 128 MiB: a few KiB of input would make each upload hold that much).
 */
static int take_zstd(struct blob_upload *u)
{
    uint8_t spare;
    uint64_t room = u->chunk ? u->chunk_size - u->chunk_len : 0;
    uint64_t left = u->limit - u->decoded;
    /* Never decode past the declared size (or the limit): the spare byte below detects more. */
    ZSTD_outBuffer out = { u->chunk ? u->chunk + u->chunk_len : &spare, room < left ? room : left,
                           0 };
    if (u->decoded == u->limit) {
        /* Everything expected arrived: any further output is too much. */
        out.dst = &spare;
        out.size = 1;
    }
    ZSTD_inBuffer in = { u->in, u->in_len, 0 };
    size_t rc = ZSTD_decompressStream(u->dstream, &out, &in);
    if (ZSTD_isError(rc)) {
        return ZSTD_getErrorCode(rc) == ZSTD_error_memory_allocation ? -ENOMEM : -EBADMSG;
    }
    if (u->decoded == u->limit && out.pos > 0) return -EMSGSIZE;
    u->frame_done = rc == 0;
    if (out.dst != &spare) {
        blob_digest_update(&u->digest, u->chunk + u->chunk_len, out.pos);
        u->chunk_len += (uint32_t)out.pos;
        u->decoded += out.pos;
    }
    u->in += in.pos;
    u->in_len -= in.pos;
    if (in.pos == 0 && out.pos == 0 && u->in_len > 0 && !chunk_is_full(u)) {
        return -EBADMSG; /* no progress: a frame larger than its declared window */
    }
    return 0;
}

/* Consumes u->in. Returns 0 (all taken), -EINPROGRESS (waiting for room) or -errno. */
static int upload_pump(struct blob_upload *u)
{
    /* Bounded: each pass takes input or emits a chunk, or returns. */
    for (;;) {
        if (chunk_is_full(u)) {
            int rc = upload_emit(u);
            if (rc < 0) return rc;
            continue;
        }
        if (u->in_len == 0) return 0;
        if (u->enc == BLOB_ENCODING_IDENTITY) {
            int rc = take_direct(u);
            if (rc < 0) return rc;
            if (rc > 0) continue;
        }
        if (u->enc == BLOB_ENCODING_ZSTD) {
            int rc = take_zstd(u);
            if (rc < 0) return rc;
        } else {
            int64_t n = take_identity(u);
            if (n < 0) return (int)n;
        }
    }
}

static int append_record(struct blob_upload *u)
{
    struct blob_writer *w = &u->bc->writer;
    uint64_t off;
    uint64_t seq;
    int err;
    uint8_t *p = blob_writer_reserve(w, u->rec_len, false, &off, &seq, &err);
    if (!p) return err;
    memcpy(p, u->in, u->rec_len);
    blob_writer_commit(w, u->rec_len);
    int rc = refs_push(u, seq, off, (const struct blob_record_header *)(const void *)u->in);
    u->in_len = 0;
    return rc;
}

static void append_wait(struct blob_upload *u, blob_done_fn *cb, void *ctx)
{
    u->state = UP_WAIT;
    u->cb = cb;
    u->ctx = ctx;
    /* One wait per append, however many wake-ups find no room yet (upload_waiter_fn). */
    base_counter_inc(&u->bc->counters.writer_waits);
    blob_writer_wait(&u->bc->writer, &u->waiter);
}

/* The commit waits for the writer: counted once per commit, as an append's wait. */
static void commit_wait(struct blob_upload *u)
{
    if (!u->commit_waited) base_counter_inc(&u->bc->counters.writer_waits);
    u->commit_waited = true;
    blob_writer_wait(&u->bc->writer, &u->waiter);
}

int blob_upload_append(struct blob_upload *u, const void *data, size_t len, blob_done_fn *cb,
                       void *ctx)
{
    ASSERT(!u->copy);
    if (u->state != UP_OPEN) return -EBUSY;
    if (u->err < 0) return u->err;
    u->in = data;
    u->in_len = len;
    u->bytes_in += len;
    int rc = 0;
    if (u->enc == BLOB_ENCODING_ZSTD &&
        u->bytes_in > ZSTD_IN_PER_OUT_MAX * u->limit + (1ULL << 20)) {
        rc = -EMSGSIZE;
    }
    if (rc == 0) rc = upload_pump(u);
    if (rc == -EINPROGRESS) {
        append_wait(u, cb, ctx);
        return -EINPROGRESS;
    }
    if (rc < 0) {
        u->err = rc;
        u->in_len = 0;
    }
    return rc;
}

int blob_upload_append_record(struct blob_upload *u, const uint8_t *rec, uint32_t len,
                              blob_done_fn *cb, void *ctx)
{
    ASSERT(u->copy);
    ASSERT(u->state == UP_OPEN);
    if (u->err < 0) return u->err;
    u->in = rec;
    u->in_len = len;
    u->rec_len = len;
    int rc = append_record(u);
    if (rc == -EINPROGRESS) {
        append_wait(u, cb, ctx);
    } else if (rc < 0) {
        u->err = rc;
    }
    return rc;
}

static void commit_step(struct blob_upload *u);

static void upload_waiter_fn(struct blob_waiter *wt, int res)
{
    struct blob_upload *u = BASE_CONTAINER_OF(wt, struct blob_upload, waiter);
    if (u->state == UP_COMMIT) {
        if (res < 0) u->err = res;
        commit_step(u);
        return;
    }
    ASSERT(u->state == UP_WAIT);
    int rc = res;
    if (rc == 0) rc = u->copy ? append_record(u) : upload_pump(u);
    if (rc == -EINPROGRESS) {
        blob_writer_wait(&u->bc->writer, &u->waiter);
        return;
    }
    if (rc < 0) {
        u->err = rc;
        u->in_len = 0;
    }
    u->state = UP_OPEN;
    u->cb(u->ctx, rc);
}

/* ---- commit ---- */

static void commit_task(struct ring_task *t)
{
    struct blob_upload *u = BASE_CONTAINER_OF(t, struct blob_upload, task);
    blob_done_fn *cb = u->cb;
    void *ctx = u->ctx;
    int res = u->result;
    upload_free(u);
    cb(ctx, res);
}

/* Ends the upload with <res>: the callback runs from a deferred task, then <u> is gone. */
static void commit_end(struct blob_upload *u, int res)
{
    struct blob_core *bc = u->bc;
    if (res == -EILSEQ || res == -EMSGSIZE) base_counter_inc(&bc->counters.digest_mismatches);
    if (res == 0 && !u->copy) {
        base_counter_inc(&bc->counters.blobs_committed);
        base_counter_add(&bc->counters.bytes_in, u->key.size);
    }
    u->result = res;
    u->task.fn = commit_task;
    blob_core_defer(bc, &u->task);
}

static bool loc_is_alive(void *ctx, const struct blob_loc *loc)
{
    return blob_store_loc_is_alive(ctx, loc);
}

/*
 * Indexes a refresh's durable copy: the entry moves to it if it still points at the copied
 * record. If eviction removed the entry meanwhile (the queued key's pins, then the copy's
 * reader, kept the old segment's file open, so the copy is whole), the copy is inserted unless
 * another live entry came since: else the blob a hit just promised would be lost with a good
 * copy of it on disk. A newer AC value written since is kept. True when the copy is indexed.
 */
static bool copy_index(struct blob_upload *u)
{
    struct blob_store *s = u->bc->s;
    if (blob_index_move(s->index, &u->key, &u->from, &u->new_loc)) return true;
    struct blob_index_value v = { .loc = u->new_loc, .size = u->key.size };
    return blob_index_put_unless_live(s->index, &u->key, &v, loc_is_alive, s) == 1;
}

static void commit_durable(struct blob_pending *p, int res)
{
    struct blob_upload *u = BASE_CONTAINER_OF(p, struct blob_upload, pending);
    struct blob_store *s = u->bc->s;
    /* An upload slower than the log: its first chunks' segment was evicted meanwhile. The
     * blob would be missing the moment it is visible, so it is not acknowledged. */
    uint32_t oldest = u->new_loc.seg - u->new_loc.span;
    if (res == 0 && !blob_segment_is_alive(&s->segs, oldest)) {
        base_counter_inc(&u->bc->counters.full);
        res = -ENOSPC;
    }
    if (res == 0 && u->copy) {
        if (copy_index(u)) base_counter_inc(&u->bc->counters.refreshes);
    } else if (res == 0) {
        struct blob_index_value v = { .loc = u->new_loc, .size = u->key.size };
        /* AC: the newest wins. CAS: an entry already there is the same bytes, kept if it can
         * be read; a dead one (its segments evicted, not yet removed) is not, or the blob
         * just acknowledged would be missing, and go with the old copy's entry. */
        int rc = u->key.kind == BLOB_KIND_AC
                     ? blob_index_put(s->index, &u->key, &v, BLOB_INDEX_REPLACE)
                     : blob_index_put_unless_live(s->index, &u->key, &v, loc_is_alive, s);
        res = rc < 0 ? rc : 0;
    }
    commit_end(u, res);
}

static int commit_check(struct blob_upload *u)
{
    /* A zstd stream whose last frame did not end is malformed, whatever it decoded to so far:
     * said first, since its decoded bytes fall short of the size only because it was cut (a
     * client that never flushed its compressor), and "size mismatch" would send its author to
     * the wrong place. */
    bool ended = u->frame_done || (u->unsized ? u->bytes_in == 0 : u->key.size == 0);
    if (u->enc == BLOB_ENCODING_ZSTD && !ended) return -EBADMSG;
    if (u->decoded != u->key.size && !u->copy) return -EMSGSIZE;
    if (u->copy || u->key.kind != BLOB_KIND_CAS) return 0;
    uint8_t hash[BLOB_HASH_SIZE];
    blob_digest_final(&u->digest, hash);
    return memcmp(hash, u->key.hash, BLOB_HASH_SIZE) == 0 ? 0 : -EILSEQ;
}

/* Writes the commit record; 0, -EINPROGRESS or -errno. */
static int commit_record(struct blob_upload *u)
{
    struct blob_core *bc = u->bc;
    struct blob_writer *w = &bc->writer;
    /* Checked by the refresh before it copies (blob_upload_copy_fits); the writer asserts. */
    if (!blob_upload_copy_fits(u, u->refs_len)) return -EMSGSIZE;
    uint32_t payload = (uint32_t)blob_commit_payload_len(u->refs_len);
    uint32_t len = (uint32_t)sizeof(struct blob_record_header) + payload;
    uint64_t off;
    uint64_t seq;
    int err;
    uint8_t *p = blob_writer_reserve(w, len, true, &off, &seq, &err);
    if (!p) return err;
    uint64_t oldest = u->oldest_seq < seq ? u->oldest_seq : seq;
    if (seq - oldest > UINT16_MAX) {
        return -ENOSPC; /* chunks too far back in the log: the upload took too long */
    }
    struct blob_commit *c = (struct blob_commit *)(void *)(p + sizeof(struct blob_record_header));
    memset(c, 0, sizeof(*c));
    c->kind = u->key.kind;
    c->digest_fn = u->key.digest_fn;
    /* A copy's records keep the chunk size they were written with (--chunk-size may have
     * changed since): its commit names that one, or every read of the copy fails its checks. */
    c->chunk_shift = u->copy ? u->copy_shift : (uint8_t)bc->s->chunk_shift;
    c->chunk_count = u->refs_len;
    c->size = u->key.size;
    c->commit_seq = u->copy ? u->copy_seq : atomic_fetch_add(&bc->s->commit_seq, 1);
    memcpy(c->hash, u->key.hash, BLOB_HASH_SIZE);
    if (u->refs_len > 0) memcpy(c + 1, u->refs, (size_t)u->refs_len * sizeof(*u->refs));
    blob_format_record_header((struct blob_record_header *)(void *)p, BLOB_RECORD_COMMIT, 0, c,
                              payload, 0);
    struct blob_footer_entry e = {
        .kind = c->kind,
        .digest_fn = c->digest_fn,
        .span = (uint16_t)(seq - oldest),
        .off8 = (uint32_t)(off / 8),
        .size = c->size,
        .commit_seq = c->commit_seq,
    };
    memcpy(e.hash, c->hash, BLOB_HASH_SIZE);
    int rc = blob_writer_add_footer(w, &e);
    if (rc < 0) return rc;
    blob_writer_commit(w, len);
    u->new_loc.seg = (uint32_t)seq;
    u->new_loc.off8 = e.off8;
    u->new_loc.span = e.span;
    u->pending.end = off + len;
    u->pending.done = commit_durable;
    u->state = UP_DURABLE;
    blob_writer_add_pending(w, &u->pending);
    return 0;
}

/* Emits the last chunk, checks the digest, writes the record; waits where it must. */
static void commit_step(struct blob_upload *u)
{
    if (u->err < 0) {
        commit_end(u, u->err);
        return;
    }
    if (!u->copy && u->chunk_len > 0) {
        if (u->chunk_len != u->key.size - u->emitted) {
            commit_end(u, -EMSGSIZE);
            return;
        }
        int rc = upload_emit(u);
        if (rc == -EINPROGRESS) {
            commit_wait(u);
            return;
        }
        if (rc < 0) {
            commit_end(u, rc);
            return;
        }
    }
    if (u->digest.ctx) {
        int rc = commit_check(u);
        blob_digest_deinit(&u->digest);
        if (rc < 0) {
            commit_end(u, rc);
            return;
        }
    }
    /* A create-only upload whose key came meanwhile (a plain upload of it) fails before its
     * commit record is written: recovery keeps an AC key's highest commit number, so a
     * refused value in the log could come back after a restart over the one acknowledged. */
    if (u->create && blob_exists(u->bc, &u->key, false)) {
        commit_end(u, -EEXIST);
        return;
    }
    int rc = commit_record(u);
    if (rc == -EINPROGRESS) {
        commit_wait(u);
    } else if (rc < 0) {
        commit_end(u, rc);
    }
}

int blob_upload_commit(struct blob_upload *u, blob_done_fn *cb, void *ctx)
{
    if (u->state != UP_OPEN) return -EBUSY;
    u->cb = cb;
    u->ctx = ctx;
    u->state = UP_COMMIT;
    if (u->unsized) {
        /* The size is what arrived (within the limit, checked as it arrived). */
        ASSERT(u->decoded <= u->limit);
        u->key.size = u->decoded;
        u->limit = u->decoded;
    }
    if (u->copy) {
        blob_digest_deinit(&u->digest);
    } else if (u->key.size == 0 && u->digest.ctx) {
        (void)0; /* an empty AC value: nothing to emit */
    }
    commit_step(u);
    return 0;
}

void blob_upload_abort(struct blob_upload *u)
{
    if (!u) return;
    /* A commit in its durable phase belongs to the writer until its fsync ends. */
    ASSERT(u->state != UP_DURABLE);
    if (!u->copy) base_counter_inc(&u->bc->counters.uploads_aborted);
    upload_free(u);
}

bool blob_upload_copy_fits(const struct blob_upload *u, uint32_t chunks)
{
    return chunks <= commit_refs_max(u->bc->s);
}

void blob_upload_set_commit_seq(struct blob_upload *u, uint64_t commit_seq)
{
    ASSERT(u->copy);
    u->copy_seq = commit_seq;
}

void blob_upload_set_chunk_shift(struct blob_upload *u, uint8_t chunk_shift)
{
    ASSERT(u->copy);
    u->copy_shift = chunk_shift;
}

uint64_t blob_upload_bytes_in(const struct blob_upload *u)
{
    return u->bytes_in;
}

uint64_t blob_upload_bytes_decoded(const struct blob_upload *u)
{
    return u->decoded;
}

static void upload_fail_if_in(struct blob_upload *u, uint64_t seq, int err)
{
    if (u->state == UP_DURABLE) return; /* its pending was finished by the writer */
    for (uint32_t i = 0; i < u->refs_len; i++) {
        if (u->refs[i].seg == seq) {
            u->err = err;
            return;
        }
    }
}

void blob_upload_fail_segment(struct blob_core *bc, uint64_t seq, int err)
{
    BASE_LIST_FOR_EACH(it, &bc->uploads)
    {
        struct blob_upload *u = BASE_CONTAINER_OF(it, struct blob_upload, link);
        upload_fail_if_in(u, seq, err);
    }
}
