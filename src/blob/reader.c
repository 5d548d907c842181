/*
 * Readers: a stream over one blob from an uncompressed offset. The commit record is read
 * first (its checksum and key are checked), then one chunk record per step: its header and
 * payload checksums are checked before a byte of it is given out. A blob of one small chunk
 * has its chunk record read with the commit record, in one read (read_commit). A corrupt
 * record drops the blob from the index, moves a counter, and ends the stream with -EBADMSG; so
 * does a chunk in a segment missing from inside the blob's span (not one being evicted).
 *
 * Every disk read goes through the core's ring; closing a reader with a read in flight
 * cancels it (ASYNC_CANCEL) and frees the reader when the completion comes back. A chunk
 * record of MAP_MIN bytes or more whose pages are all in the page cache is not read at all:
 * it is checked and handed out in place, in its segment's read-only mapping (slot_map), and
 * while a blob's chunks are found there its reader reads nothing ahead. Pieces are
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

/*
 * Reads ahead take buffers only while the core's read buffers are under this share of the
 * budget (4 MiB of the default 256 MiB, about eight chunk sets). One stream gains from four
 * chunks ahead (its sends carry several pieces: 35 % less CPU per byte on a 256 MiB
 * ByteStream read); dozens of concurrent readers keep the disk and the network busy without
 * it, and their extra buffers only push each other out of the CPU cache (64 concurrent 4 MiB
 * GETs took 17 % more CPU per GET with four chunks ahead each than with one).
 */
#define READ_AHEAD_SHARE 64u

/*
 * A blob of one chunk up to this size is usually written in one piece with its commit record,
 * its chunk record just before it: the commit's read starts a record bound early, so one disk
 * read brings both and a read costs one trip through the ring instead of two. Larger chunks
 * would make the guess too costly when it misses (a streamed upload).
 */
#define WINDOW_RAW_MAX (64u << 10)

/*
 * Chunk records at least this long are read in place when their pages are in the page cache
 * (slot_map). Below it the ring's read costs less than the mincore(2) that tells whether the
 * pages are there: a 1 KiB GET took 9.4-10.4 µs of server CPU mapped against 7.7-9.1 µs read
 * by the ring, while a 4 MiB GET took 840-980 µs against 1530-1710 µs.
 */
#define MAP_MIN (64u << 10)

/*
 * A blob of one chunk from this size up to WINDOW_RAW_MAX is read in place, commit record and
 * chunk record with one mincore(2), when its window is in the page cache (window_map): the
 * chunk is then checked and sent from the mapping instead of copied by the ring's read.
 */
#define MAP_WINDOW_MIN (16u << 10)

enum reader_mode {
    MODE_IDENTITY = 0, /* decoded bytes */
    MODE_ZSTD = 1,     /* stored frames */
    MODE_RECORDS = 2,  /* stored chunk records, header included (refresh) */
};

enum slot_state {
    SLOT_FREE = 0,    /* holds no chunk (its buffers stay for the next one) */
    SLOT_READING = 1, /* its chunk's read is in flight */
    SLOT_READY = 2,   /* read, not yet checked: <res> holds the completion */
    SLOT_OPEN = 3,    /* checked: its pieces are being handed out or held by the caller */
};

/* One disk read of a reader: the commit record's, or a slot's chunk. */
struct reader_io {
    struct blob_reader *r;  /* owner */
    struct blob_aio aio;    /* the read in flight */
    struct blob_io_req req; /* kept to resubmit after -EAGAIN */
    struct blob_seg *seg;   /* segment of the read in flight (a reference), else NULL */
    uint32_t retries;       /* resubmissions of the read in flight */
    uint32_t want_len;      /* bytes the read asked for */
};

/* A chunk read ahead, or being handed out: slots are used in chunk order, a ring. */
struct reader_slot {
    struct reader_io io; /* its read */
    uint8_t *buf;        /* one chunk record (pooled; kept while the reader lives) */
    const uint8_t *rec;  /* not FREE: its chunk record, in <buf> or in the segment's mapping */
    struct blob_record_header hdr; /* checked: the record's header as it was checked (pieces
                                      never read it again: a mapped page may change) */
    uint8_t *obuf;                 /* decoded chunk (pooled), taken when first needed */
    uint32_t chunk;                /* index of the chunk it holds (not FREE) */
    int32_t res;                   /* READY: the read's result, -EBADMSG when its check failed */
    uint8_t state;                 /* enum slot_state */
    bool done;                     /* OPEN: every piece of the chunk was handed out */
    uint32_t held;                 /* pieces handed out and not released yet */
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
    uint32_t window_pre;         /* the commit read in flight began this many bytes early */
    const uint8_t *window;       /* that window in the segment's mapping (window_map), or NULL */
    bool commit_ok;              /* the commit record was read and checked */
    struct reader_io cio;        /* the commit record's read */
    uint32_t depth;              /* slots: chunks read ahead or held, 1 .. read_ahead */
    uint32_t first;              /* the oldest used slot */
    uint32_t used;               /* used slots (not FREE), from <first> on */
    uint32_t next_chunk;         /* the chunk the next slot will read */
    uint32_t inflight;           /* disk reads in flight (the commit's and the slots') */
    uint32_t held;               /* pieces handed out and not released */
    bool hold;                   /* pieces stay valid until blob_read_release */
    bool waiting;                /* busy, and the piece waits for the head slot's read */
    bool mapped;                 /* the last chunk asked for was read in place: none ahead */
    uint32_t rbuf_size;          /* bytes asked of the pool for each slot's buf */
    uint32_t obuf_size;          /* bytes asked of the pool for each slot's obuf */
    uint64_t buf_bytes;          /* what the slots' buffers count against the core budget */
    struct blob_seg **pins;      /* the segments its chunks may be in, referenced at open */
    uint32_t pins_lo;            /* seq of pins[0]: the commit's segment minus its span */
    uint32_t pins_len;           /* span + 1 (0 for the empty blob) */
    struct blob_seg *pin_one;    /* pins[] of a blob in one segment (most): no allocation */
    int err;                     /* the error the stream ended with */
    bool closing;                /* close was called while reads were in flight */
    bool busy;                   /* a piece was asked for and not yet delivered */
    blob_data_fn *cb;            /* the caller's callback */
    void *ctx;                   /* its argument */
    const uint8_t *out;          /* deferred piece */
    size_t out_len;              /* its length */
    int out_res;                 /* its result */
    struct ring_task task;       /* delivers a piece that needed no I/O */
    struct ring_task ctask;      /* checks a window read in place (commit_done) */
    struct reader_slot slots[];  /* a ring of <depth>, allocated with the reader */
};

static void commit_task(struct ring_task *t);

static void reader_free(struct blob_reader *r)
{
    struct blob_core *bc = r->bc;
    ASSERT(r->inflight == 0);
    bool commit_busy = blob_aio_is_busy(&r->cio.aio);
    ASSERT(!commit_busy);
    base_list_del(&r->link);
    ring_task_cancel(&r->task);
    ring_task_cancel(&r->ctask);
    free(r->commit);
    /* Bounded by BLOB_READ_AHEAD_MAX. */
    for (uint32_t i = 0; i < r->depth; i++) {
        struct reader_slot *s = &r->slots[i];
        ASSERT(s->io.seg == NULL);
        blob_pool_put(&bc->pool, s->buf, r->rbuf_size);
        blob_pool_put(&bc->pool, s->obuf, r->obuf_size);
    }
    ASSERT(bc->read_buf_bytes >= r->buf_bytes);
    bc->read_buf_bytes -= r->buf_bytes;
    /* Bounded by the blob's span. */
    for (uint32_t i = 0; i < r->pins_len; i++) {
        blob_segment_put(&bc->s->segs, r->pins[i]);
    }
    if (r->pins != &r->pin_one) free(r->pins);
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
    r->cb(r->ctx, res, p, n);
}

/* Slots a reader of a <size>-byte blob can use: read_ahead, or fewer for a smaller blob. */
static uint32_t reader_depth(const struct blob_store_options *o, uint64_t size)
{
    uint64_t chunks = (size + o->chunk_size - 1) / o->chunk_size;
    uint32_t depth = chunks < o->read_ahead ? (uint32_t)chunks : o->read_ahead;
    return depth > 0 ? depth : 1;
}

static int reader_open_common(struct blob_core *bc, const struct blob_key *k, uint64_t size,
                              uint8_t mode, struct blob_reader **out)
{
    *out = NULL;
    if (bc->readers_len >= bc->s->opts.readers_max) {
        base_counter_inc(&bc->counters.queue_full);
        return -EAGAIN;
    }
    /* A blob of one chunk (most of them) gets one slot: small reads stay small. */
    uint32_t depth = reader_depth(&bc->s->opts, size);
    ASSERT(depth >= 1 && depth <= BLOB_READ_AHEAD_MAX);
    struct blob_reader *r = calloc(1, sizeof(*r) + depth * sizeof(r->slots[0]));
    if (!r) return -ENOMEM;
    r->bc = bc;
    r->key = *k;
    r->mode = mode;
    r->depth = depth;
    r->cio.r = r;
    /* Bounded by BLOB_READ_AHEAD_MAX. */
    for (uint32_t i = 0; i < r->depth; i++) {
        r->slots[i].io.r = r;
    }
    base_list_init(&r->link);
    ring_task_init(&r->task, deliver_task);
    ring_task_init(&r->ctask, commit_task);
    base_list_add_tail(&bc->readers, &r->link);
    bc->readers_len++;
    base_counter_inc(&bc->counters.readers);
    base_counter_inc(&bc->counters.reads);
    *out = r;
    return 0;
}

/* Room for the references of every segment the blob's chunks may be in: 0 or -ENOMEM. */
static int reader_pins_alloc(struct blob_reader *r)
{
    uint32_t len = (uint32_t)r->val.loc.span + 1;
    r->pins = len == 1
                  ? &r->pin_one
                  : calloc(len, sizeof(struct blob_seg *)); /* NOLINT(bugprone-sizeof-expression) */
    if (!r->pins) return -ENOMEM;
    r->pins_lo = r->val.loc.seg - r->val.loc.span;
    r->pins_len = len;
    return 0;
}

/*
 * References every segment the blob's chunks may be in (its commit's segment and the <span>
 * before it), so that eviction cannot take a chunk away from an open read: a killed segment
 * keeps its file open until the last reference goes (the disk space comes back then). A
 * segment already dead is left out: a chunk in it reads as -ENOENT, as before. Returns 0,
 * -ENOENT (the commit's segment is gone: so is the blob) or -ENOMEM.
 */
static int reader_pin(struct blob_reader *r)
{
    int rc = reader_pins_alloc(r);
    if (rc < 0) return rc;
    /* Bounded by the span (at most UINT16_MAX + 1). */
    for (uint32_t i = 0; i < r->pins_len; i++) {
        r->pins[i] = blob_segment_get(&r->bc->s->segs, r->pins_lo + i);
    }
    return r->pins[r->pins_len - 1] ? 0 : -ENOENT;
}

/*
 * References the segments of a blob that eviction took while a refresh of it, queued on any
 * core, waits or copies (blob_core_lookup): the refresh pins them, so their files stay open
 * until the last reader and the copy let go. A segment inside the span that neither the
 * table nor the pins hold, while the span's oldest is alive (so eviction took nothing newer),
 * is a gap the refresh left out (none of the blob's chunks are there, pin_take): left out
 * here too. Otherwise a segment missing is one the refresh no longer pins: it ended. Returns
 * 0, -ENOMEM, or -EAGAIN when the refresh ended since the lookup (its copy landed, or
 * failed): the caller looks again.
 */
static int reader_pin_refreshing(struct blob_reader *r)
{
    int rc = reader_pins_alloc(r);
    if (rc < 0) return rc;
    struct blob_segs *segs = &r->bc->s->segs;
    /* Bounded by the span (below REFRESH_PINS_MAX). */
    for (uint32_t i = 0; i < r->pins_len; i++) {
        r->pins[i] = blob_segment_get(segs, r->pins_lo + i);
        if (!r->pins[i]) r->pins[i] = blob_segment_get_pinned(segs, r->pins_lo + i);
        bool inside = i > 0 && i + 1 < r->pins_len;
        if (!r->pins[i] && !(inside && blob_segment_is_alive(segs, r->pins_lo))) return -EAGAIN;
    }
    return 0;
}

/* The pinned segment <seg32>, or NULL (outside the blob's span, or dead at open). */
static struct blob_seg *reader_pinned(const struct blob_reader *r, uint32_t seg32)
{
    uint32_t i = seg32 - r->pins_lo;
    return i < r->pins_len ? r->pins[i] : NULL;
}

int blob_read_open(struct blob_core *bc, const struct blob_key *k, uint64_t offset,
                   enum blob_encoding want, struct blob_reader **out)
{
    *out = NULL;
    if (want != BLOB_ENCODING_IDENTITY && want != BLOB_ENCODING_ZSTD) return -EINVAL;
    if (k->kind != BLOB_KIND_CAS && k->kind != BLOB_KIND_AC) return -EINVAL;
    struct blob_index_value v = { 0 };
    bool empty = blob_key_is_empty(k);
    bool refreshing = false;
    struct blob_reader *r = NULL;
    uint8_t mode = want == BLOB_ENCODING_ZSTD ? MODE_ZSTD : MODE_IDENTITY;
    int rc = -EAGAIN;
    /* Twice at most: a refresh found by the first lookup that ended before its segments were
     * referenced has moved the key (the index has the copy) or failed (the blob is gone). */
    for (int tries = 0; rc == -EAGAIN; tries++) {
        if (!empty && !blob_core_lookup(bc, k, &v, &refreshing)) return -ENOENT;
        if (offset > v.size) return -ERANGE;
        rc = reader_open_common(bc, k, v.size, mode, &r);
        if (rc < 0) return rc;
        r->val = v;
        r->key.size = v.size;
        r->offset = offset;
        rc = empty ? 0 : refreshing ? reader_pin_refreshing(r) : reader_pin(r);
        if (rc == -EAGAIN && tries > 0) rc = -ENOENT;
        if (rc < 0) reader_free(r);
        if (rc < 0 && rc != -EAGAIN) return rc;
    }
    if (!empty && !refreshing && blob_store_is_cold(bc->s, &v)) {
        (void)blob_refresh_queue(bc, &r->key, &v);
    }
    *out = r;
    return 0;
}

int blob_read_open_records(struct blob_core *bc, const struct blob_key *k,
                           const struct blob_loc *loc, struct blob_seg *const *segs,
                           struct blob_reader **out)
{
    ASSERT(k->size != BLOB_SIZE_ANY && k->size != BLOB_SIZE_UNKNOWN);
    int rc = reader_open_common(bc, k, k->size, MODE_RECORDS, out);
    if (rc < 0) return rc;
    struct blob_reader *r = *out;
    r->val.loc = *loc;
    r->val.size = k->size;
    rc = reader_pins_alloc(r);
    if (rc < 0) {
        reader_free(r);
        *out = NULL;
        return rc;
    }
    /* The caller's references keep even a dead segment's file: one more each for the reader.
     * A gap inside the span (NULL) is left out, as reader_pin leaves out a dead segment.
     * Bounded by the span. */
    for (uint32_t i = 0; i < r->pins_len; i++) {
        bool inside = i > 0 && i + 1 < r->pins_len;
        ASSERT(segs[i] != NULL || inside);
        if (!segs[i]) continue;
        DEBUG_ASSERT((uint32_t)atomic_load(&segs[i]->seq) == r->pins_lo + i);
        blob_segment_ref(segs[i]);
        r->pins[i] = segs[i];
    }
    return 0;
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

/*
 * Answers a chunk whose segment <seg32> was not there when the reader opened. Eviction takes
 * the sealed segments oldest first, which is why blob_store_lookup checks only the commit's
 * segment and the span's oldest: while the span's oldest segment is alive, no eviction has
 * taken one newer than it (and it cannot come back: seqs are never reused). So a chunk's
 * segment gone while the span's oldest is alive is a hole (a segment lost, or set aside by
 * recovery): the blob can never be read whole, and -EBADMSG makes the caller drop it as a
 * corrupt record, else it would stay present and refuse every upload that could repair it.
 * Otherwise the blob is being evicted under the open (it passed the lookup just before the
 * pins were taken): -ENOENT, as a lookup now answers.
 *
 * A reference outside the span cannot be right, but where the span is capped (UINT16_MAX
 * segments: one before it may be there): chunks precede their commit record in the log, and
 * the span reaches the oldest of them. So a commit record or a footer entry was written
 * wrongly, checksums valid: as corrupt as a record that fails them, -EBADMSG. Answered
 * -ENOENT, the blob stayed present, every read of it failed, and every upload that could
 * repair it was told it was there.
 */
static int reader_chunk_gone(const struct blob_reader *r, uint64_t seg)
{
    /* The commit's segment is pinned while the reader is open: its seq stays. */
    if (seg > atomic_load(&r->pins[r->pins_len - 1]->seq)) return -EBADMSG;
    uint32_t seg32 = (uint32_t)seg;
    if (seg32 - r->pins_lo >= r->pins_len) {
        return r->val.loc.span < UINT16_MAX ? -EBADMSG : -ENOENT;
    }
    return blob_segment_is_alive(&r->bc->s->segs, r->pins_lo) ? -EBADMSG : -ENOENT;
}

/* ---- reads ---- */

static void read_done(struct blob_aio *a, int32_t res);

static int
reader_submit(struct reader_io *io, uint32_t seg32, uint64_t off,
              uint8_t *buf, /* NOLINT(readability-non-const-parameter): the kernel writes it */
              uint32_t len)
{
    struct blob_reader *r = io->r;
    struct blob_core *bc = r->bc;
    if (bc->disk_reads >= bc->s->opts.disk_queue_max) {
        base_counter_inc(&bc->counters.queue_full);
        return -EAGAIN;
    }
    struct blob_seg *seg = reader_pinned(r, seg32);
    if (!seg) return -ENOENT;
    blob_segment_ref(seg);
    struct blob_io_req req = {
        .op = BLOB_IO_READ, .fd = seg->fd, .buf = buf, .len = len, .off = off
    };
    io->aio.fn = read_done;
    io->aio.ctx = io;
    io->req = req;
    io->retries = 0;
    int rc = blob_core_submit(bc, &io->aio, &req);
    if (rc < 0) {
        blob_segment_put(&bc->s->segs, seg);
        base_counter_inc(&bc->counters.queue_full);
        return rc;
    }
    io->seg = seg;
    io->want_len = len;
    r->inflight++;
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

static const struct blob_commit *commit_of(const struct blob_reader *r)
{
    return (const struct blob_commit *)(const void *)(r->commit +
                                                      sizeof(struct blob_record_header));
}

uint8_t blob_reader_chunk_shift(const struct blob_reader *r)
{
    return r->commit_ok ? commit_of(r)->chunk_shift : 0;
}

/* The version of the commit record read into r->commit: it says how its refs are laid out. */
static uint8_t commit_version(const struct blob_reader *r)
{
    return ((const struct blob_record_header *)(const void *)r->commit)->version;
}

uint32_t blob_reader_chunk_count(const struct blob_reader *r)
{
    return r->commit_ok ? commit_of(r)->chunk_count : 0;
}

uint8_t blob_reader_commit_version(const struct blob_reader *r)
{
    return r->commit_ok ? commit_version(r) : 0;
}

/* Chunk ref <i> of the (checked) commit record. */
static struct blob_chunk_ref ref_of(const struct blob_reader *r, uint32_t i)
{
    struct blob_chunk_ref ref;
    blob_format_commit_ref(commit_of(r), commit_version(r), i, &ref);
    return ref;
}

/* Counts a corrupt record and drops the blob: it is missing from now on. */
static void mark_corrupt(struct blob_reader *r)
{
    base_counter_inc(&r->bc->counters.corrupt_chunks);
    blob_store_drop_corrupt(r->bc->s, &r->key, &r->val.loc, -EBADMSG);
}

/*
 * The disk failed a read of the blob's records (EIO: a bad sector, a volume going away). It
 * is dropped as a corrupt one is: kept, every later read failed the same way, and an upload
 * of it was told "present" and skipped, so a client could never store it again (Bazel ran
 * the action locally on every build and its upload changed nothing).
 */
static void mark_unreadable(struct blob_reader *r)
{
    blob_store_drop_corrupt(r->bc->s, &r->key, &r->val.loc, -EIO);
}

static void reader_corrupt(struct blob_reader *r)
{
    mark_corrupt(r);
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
    if (blob_format_check_commit(h, c) < 0) return -EBADMSG;
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

static uint32_t chunk_count(const struct blob_reader *r)
{
    uint64_t c = chunk_bytes(r);
    return (uint32_t)((r->key.size + c - 1) / c);
}

/* The chunk that holds r->offset. */
static uint32_t head_chunk(const struct blob_reader *r)
{
    return (uint32_t)(r->offset >> commit_of(r)->chunk_shift);
}

/* ---- slots: chunks read ahead ---- */

static struct reader_slot *slot_at(struct blob_reader *r, uint32_t k)
{
    ASSERT(k < r->used);
    return &r->slots[(r->first + k) % r->depth];
}

/* The used slot holding <chunk>, or NULL. */
static struct reader_slot *find_slot(struct blob_reader *r, uint32_t chunk)
{
    /* Bounded by BLOB_READ_AHEAD_MAX. */
    for (uint32_t k = 0; k < r->used; k++) {
        struct reader_slot *s = slot_at(r, k);
        if (s->chunk == chunk) return s;
    }
    return NULL;
}

/*
 * Takes <s>'s record buffer (<rsize> bytes) from the core's pool and reserves its decode
 * buffer (<raw> bytes, none for MODE_RECORDS), both within <limit> bytes of the core's read
 * buffers: past it -EAGAIN. The reader's slots all take buffers of these sizes.
 */
static int slot_take(struct blob_reader *r, struct reader_slot *s, uint32_t raw, uint32_t rsize,
                     uint64_t limit)
{
    ASSERT(s->buf == NULL);
    uint32_t bound = blob_chunk_record_bound(raw);
    ASSERT(rsize >= bound);
    struct blob_pool *pool = &r->bc->pool;
    uint32_t osize = r->mode != MODE_RECORDS ? raw : 0;
    uint64_t need =
        blob_pool_class_size(pool, rsize) + (osize ? blob_pool_class_size(pool, osize) : 0);
    if (r->bc->read_buf_bytes + need > limit) return -EAGAIN;
    s->buf = blob_pool_get(pool, rsize);
    if (!s->buf) return -ENOMEM;
    r->rbuf_size = rsize;
    r->obuf_size = osize;
    r->bc->read_buf_bytes += need;
    r->buf_bytes += need;
    return 0;
}

/*
 * Takes <s>'s record buffer from the core's pool and reserves its decode buffer, both within
 * <limit> bytes of the core's read buffers: past it the read answers -EAGAIN (retry later)
 * instead of growing. A slot keeps its buffers for the next chunks it reads.
 */
static int slot_buffers(struct blob_reader *r, struct reader_slot *s, uint64_t limit)
{
    if (s->buf) return 0;
    /* A free slot's buffers move over first: the slots rotate, the buffers need not. */
    for (uint32_t i = 0; i < r->depth; i++) { /* bounded by BLOB_READ_AHEAD_MAX */
        struct reader_slot *f = &r->slots[i];
        if (f == s || f->state != SLOT_FREE || !f->buf) continue;
        s->buf = f->buf;
        s->obuf = f->obuf;
        f->buf = NULL;
        f->obuf = NULL;
        return 0;
    }
    uint64_t chunk = chunk_bytes(r);
    uint32_t raw = (uint32_t)(r->key.size < chunk ? r->key.size : chunk);
    return slot_take(r, s, raw, blob_chunk_record_bound(raw), limit);
}

/* The decode buffer of <s>, taken from the pool the first time a chunk must be decoded. */
static uint8_t *decode_buffer(struct blob_reader *r, struct reader_slot *s)
{
    ASSERT(r->obuf_size > 0);
    if (!s->obuf) s->obuf = blob_pool_get(&r->bc->pool, r->obuf_size);
    return s->obuf;
}

static int slot_check(const struct blob_reader *r, const struct reader_slot *s, int32_t res);

/*
 * slot_check, and on success <s> keeps the record's header as checked: pieces handed out
 * later never read it again (in a mapping, the page may have been dropped and read back).
 * 0 or -EBADMSG.
 */
static int slot_check_keep(const struct blob_reader *r, struct reader_slot *s, int32_t len)
{
    if (slot_check(r, s, len) < 0) return -EBADMSG;
    memcpy(&s->hdr, s->rec, sizeof(s->hdr));
    return 0;
}

struct check_arg {
    const struct blob_reader *r;
    struct reader_slot *s;
    int32_t len;
};

static int check_fn(void *arg)
{
    const struct check_arg *a = arg;
    return slot_check_keep(a->r, a->s, a->len);
}

/*
 * slot_check_keep of <s>'s record in a segment's mapping: 0, -EBADMSG, or -EIO when a page
 * of it could not be read back from the disk (SIGBUS, blob_map_guarded).
 */
static int slot_check_mapped(const struct blob_reader *r, struct reader_slot *s, int32_t len)
{
    struct check_arg a = { r, s, len };
    return blob_map_guarded(check_fn, &a);
}

/*
 * Checks the chunk record of <s> (s->io.want_len bytes) at <rec>, in a segment's mapping. A
 * compressed chunk read as identity bytes then takes its decode buffer as a read would,
 * within <limit>. Returns the check's result (0, -EBADMSG, or -EIO when a page could not be
 * read back), or -ENOBUFS when that buffer was not to be had: <s> then keeps no record.
 */
static int slot_check_in_place(struct blob_reader *r, struct reader_slot *s, const uint8_t *rec,
                               uint64_t limit)
{
    s->rec = rec;
    int rc = slot_check_mapped(r, s, (int32_t)s->io.want_len);
    if (rc == 0 && r->mode == MODE_IDENTITY && s->hdr.enc != BLOB_CHUNK_RAW &&
        slot_buffers(r, s, limit) < 0) {
        s->rec = NULL;
        return -ENOBUFS;
    }
    return rc;
}

/* Puts <chunk> into the next free slot <s>, in <state>. */
static void slot_claim(struct blob_reader *r, struct reader_slot *s, uint32_t chunk, uint8_t state)
{
    s->state = state;
    s->chunk = chunk;
    s->held = 0;
    s->done = false;
    r->used++;
    r->next_chunk = chunk + 1;
}

/*
 * Reads <chunk>'s record (<len> bytes) in place into the next free slot <s> when every page
 * of it is in the page cache: checked in the segment's mapping and handed out from there, so
 * the bytes are neither read by the ring nor copied (a 4 MiB GET of a cached blob does one
 * copy, into the socket, instead of two). Not for refresh copies (MODE_RECORDS) nor a
 * compressed read from inside a chunk, whose raw frame is built in <buf>. True when it did:
 * <s> is READY with its check's result.
 */
static bool slot_map(struct blob_reader *r, struct reader_slot *s, uint32_t chunk, uint32_t len,
                     uint64_t limit)
{
    if (len < MAP_MIN || r->mode == MODE_RECORDS) return false;
    struct blob_chunk_ref ref = ref_of(r, chunk);
    struct blob_seg *seg = reader_pinned(r, (uint32_t)ref.seg);
    const uint8_t *rec =
        seg ? blob_segment_mapped(&r->bc->s->segs, seg, (uint64_t)ref.off8 * 8, len) : NULL;
    /* Whether the blob is in the page cache decides the reads ahead (read_ahead). */
    r->mapped = rec != NULL;
    if (!rec) return false;
    uint64_t start = (uint64_t)chunk << commit_of(r)->chunk_shift;
    if (r->mode == MODE_ZSTD && r->offset > start) return false;
    s->io.want_len = len;
    s->chunk = chunk;
    int rc = slot_check_in_place(r, s, rec, limit);
    if (rc == -ENOBUFS) return false;
    slot_claim(r, s, chunk, SLOT_READY);
    s->res = rc < 0 ? rc : (int32_t)len;
    base_counter_inc(&r->bc->counters.mapped_reads);
    return true;
}

/*
 * Starts the read of <chunk> into the next free slot: in place when its pages are in the
 * page cache (<map>: a chunk asked for, not one read ahead), else by the ring. <ahead>: a
 * read ahead, which takes only what readers that need their next piece leave over (half the
 * core's disk queue, and buffers only while the core's read buffers are under
 * 1/READ_AHEAD_SHARE of the budget), and fails quietly. Returns 0 (the slot is READY when
 * read in place, else READING), -ENOBUFS (every slot is used), -EAGAIN, -ENOMEM, -ENOENT or
 * -EBADMSG (a chunk reference that cannot be right, or into a segment lost from the span:
 * reader_chunk_gone).
 */
static int slot_read(struct blob_reader *r, uint32_t chunk, bool ahead, bool map)
{
    if (r->used == r->depth) return -ENOBUFS;
    struct blob_core *bc = r->bc;
    const struct blob_store_options *o = &bc->s->opts;
    struct reader_slot *s = &r->slots[(r->first + r->used) % r->depth];
    ASSERT(s->state == SLOT_FREE);
    struct blob_chunk_ref ref = ref_of(r, chunk);
    if (!reader_pinned(r, (uint32_t)ref.seg)) return reader_chunk_gone(r, ref.seg);
    uint32_t len = (uint32_t)sizeof(struct blob_record_header) + ref.stored;
    uint64_t chunk_size = chunk_bytes(r);
    uint32_t raw = (uint32_t)(r->key.size < chunk_size ? r->key.size : chunk_size);
    if (len > blob_chunk_record_bound(raw)) return -EBADMSG;
    uint64_t limit = ahead ? o->read_buffer_max / READ_AHEAD_SHARE : o->read_buffer_max;
    if (map && slot_map(r, s, chunk, len, limit)) return 0;
    if (ahead && bc->disk_reads >= o->disk_queue_max / 2) return -EAGAIN;
    int rc = slot_buffers(r, s, limit);
    if (rc == -EAGAIN && !ahead) base_counter_inc(&bc->counters.queue_full);
    if (rc < 0) return rc;
    rc = reader_submit(&s->io, (uint32_t)ref.seg, (uint64_t)ref.off8 * 8, s->buf, len);
    if (rc < 0) return rc;
    s->rec = s->buf;
    slot_claim(r, s, chunk, SLOT_READING);
    return 0;
}

/* Reads ahead into the free slots, as far as the limits let it. */
static void read_ahead(struct blob_reader *r)
{
    /* Chunks in the page cache need no reading ahead: each is mapped when it is asked for. */
    if (!r->commit_ok || r->closing || r->err < 0 || r->used == 0 || r->mapped) return;
    uint32_t chunks = chunk_count(r);
    /* Bounded by the slots. */
    while (r->used < r->depth && r->next_chunk < chunks) {
        if (slot_read(r, r->next_chunk, true, false) < 0) return;
    }
}

/* Frees the oldest slots whose pieces were all handed out and released. */
static void slots_retire(struct blob_reader *r)
{
    /* Bounded by the used slots. */
    while (r->used > 0) {
        struct reader_slot *s = slot_at(r, 0);
        if (s->state != SLOT_OPEN || !s->done || s->held > 0) return;
        s->state = SLOT_FREE;
        s->rec = NULL;
        r->first = (r->first + 1) % r->depth;
        r->used--;
    }
}

/* Releases the oldest piece handed out. */
static void release_oldest(struct blob_reader *r)
{
    ASSERT(r->held > 0);
    /* Bounded by the used slots. */
    for (uint32_t k = 0; k < r->used; k++) {
        struct reader_slot *s = slot_at(r, k);
        if (s->held == 0) continue;
        s->held--;
        r->held--;
        slots_retire(r);
        return;
    }
    UNREACHABLE();
}

/* ---- pieces ---- */

struct span_arg {
    const struct blob_record_header *h;
    const uint8_t *payload;
    uint32_t at;
    const uint8_t **p;
    int64_t span;
};

static int span_fn(void *arg)
{
    struct span_arg *a = arg;
    a->span = blob_chunk_raw_span(a->h, a->payload, a->at, a->p);
    return 0;
}

/*
 * The next piece of the raw chunk held open in <s>: from r->offset to the end of its raw
 * block. 0, -EBADMSG, or -EIO when the chunk is read in place and a page of its frame could
 * not be read back (SIGBUS, blob_map_guarded): finding the block walks the frame's block
 * headers in the mapping again, long after the check, for every piece.
 */
static int held_piece(struct blob_reader *r, const struct reader_slot *s, const uint8_t **p,
                      size_t *n)
{
    uint64_t start = (uint64_t)s->chunk << commit_of(r)->chunk_shift;
    ASSERT(r->offset >= start);
    struct span_arg a = { .h = &s->hdr,
                          .payload = s->rec + sizeof(s->hdr),
                          .at = (uint32_t)(r->offset - start),
                          .p = p };
    if (s->rec == s->buf) {
        (void)span_fn(&a);
    } else if (blob_map_guarded(span_fn, &a) < 0) {
        return -EIO;
    }
    int64_t span = a.span;
    if (span < 0) return (int)span;
    *n = (size_t)span;
    r->offset += *n;
    return 0;
}

/* The uncompressed bytes of chunk <chunk>. */
static uint64_t chunk_raw(const struct blob_reader *r, uint32_t chunk)
{
    uint64_t size = chunk_bytes(r);
    uint64_t start = (uint64_t)chunk * size;
    return r->key.size - start < size ? r->key.size - start : size;
}

/*
 * Checks the chunk record of <res> bytes just read into <s> (header and payload checksums,
 * and that it is the record its commit names: the payload_sum the commit's ref holds, so a
 * valid record of another chunk or blob found there is not served): 0 or -EBADMSG. It runs as
 * the read completes, while the bytes are still in this core's cache, not when the chunk's
 * first piece is handed out, which may be a while later. No hashing beyond the payload's own.
 */
static int slot_check(const struct blob_reader *r, const struct reader_slot *s, int32_t res)
{
    const struct blob_record_header *h = (const void *)s->rec;
    uint32_t want = s->io.want_len;
    uint64_t raw = chunk_raw(r, s->chunk);
    struct blob_chunk_ref ref = ref_of(r, s->chunk);
    if ((uint32_t)res != want) return -EBADMSG; /* runs past the end of its file: torn */
    if (blob_format_check_record_header(h, want - sizeof(*h)) < 0 || h->type != BLOB_RECORD_CHUNK ||
        h->raw_len != raw || h->payload_len != want - sizeof(*h) ||
        !blob_format_chunk_is_ref(h, commit_version(r), &ref) ||
        blob_format_check_payload(h, s->rec + sizeof(*h)) < 0) {
        return -EBADMSG;
    }
    return 0;
}

/* Decodes the chunk record <h> (payload <payload>) into <obuf>: 0 or -EBADMSG. */
static int decode(struct blob_reader *r, const struct blob_record_header *h, const uint8_t *payload,
                  uint8_t *obuf)
{
    return blob_chunk_decode(&r->bc->zctx, h, payload, obuf, r->obuf_size) < 0 ? -EBADMSG : 0;
}

struct decode_arg {
    struct blob_reader *r;
    const struct blob_record_header *h;
    const uint8_t *payload;
    uint8_t *obuf;
};

static int decode_fn(void *arg)
{
    const struct decode_arg *a = arg;
    return decode(a->r, a->h, a->payload, a->obuf);
}

/* decode from a segment's mapping: 0, -EBADMSG, or -EIO (a page could not be read back). */
static int decode_mapped(struct blob_reader *r, const struct blob_record_header *h,
                         const uint8_t *payload,
                         uint8_t *obuf) /* NOLINT(readability-non-const-parameter): decoded into */
{
    struct decode_arg a = { r, h, payload, obuf };
    return blob_map_guarded(decode_fn, &a);
}

/* The first piece of the chunk read into <s> (checked by then). 0 or -errno. */
static int open_piece(struct blob_reader *r, struct reader_slot *s, const uint8_t **p, size_t *n)
{
    if (s->res == -EBADMSG) return -EBADMSG; /* slot_check failed */
    if (s->res < 0) return s->res == -ECANCELED ? -ECANCELED : -EIO;
    uint64_t start = (uint64_t)s->chunk * chunk_bytes(r);
    uint64_t raw = chunk_raw(r, s->chunk);
    s->state = SLOT_OPEN;
    const struct blob_record_header *h = &s->hdr;
    const uint8_t *payload = s->rec + sizeof(*h);
    uint64_t skip = r->offset - start;
    if (r->mode == MODE_RECORDS || (r->mode == MODE_ZSTD && skip == 0)) {
        r->offset = start + raw;
        *p = r->mode == MODE_RECORDS ? s->rec : payload;
        *n = r->mode == MODE_RECORDS ? s->io.want_len : h->payload_len;
        return 0;
    }
    /* Raw bytes are in the frame already: handed out block by block, in place. */
    if (r->mode == MODE_IDENTITY && h->enc == BLOB_CHUNK_RAW) return held_piece(r, s, p, n);
    uint8_t *obuf = decode_buffer(r, s);
    if (!obuf) return -ENOMEM;
    int rc = s->rec == s->buf ? decode(r, h, payload, obuf) : decode_mapped(r, h, payload, obuf);
    if (rc < 0) return rc;
    r->offset = start + raw;
    if (r->mode == MODE_IDENTITY) {
        *p = obuf + skip;
        *n = (size_t)(raw - skip);
        return 0;
    }
    /* A compressed read from inside a chunk: the rest of it as a raw frame, exact (never a
     * mapped record: slot_map leaves this case to a read into <buf>). */
    ASSERT(s->rec == s->buf);
    *n = blob_chunk_raw_frame(obuf + skip, (uint32_t)(raw - skip), s->buf);
    *p = s->buf;
    return 0;
}

/*
 * Hands out the next piece of head slot <s> (READY or OPEN), now (from a completion) or
 * later (from blob_read_next), and reads ahead.
 */
static void slot_piece(struct blob_reader *r, struct reader_slot *s, bool now)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    int rc = s->state == SLOT_OPEN ? held_piece(r, s, &p, &n) : open_piece(r, s, &p, &n);
    if (rc == -EBADMSG) mark_corrupt(r);
    /* The disk's own -EIO, or a mapped page it could not read back (s->res was the length). */
    if (rc == -EIO && (s->res == -EIO || s->res >= 0)) mark_unreadable(r);
    if (rc == 0) {
        s->held++;
        r->held++;
        uint64_t end = ((uint64_t)s->chunk + 1) << commit_of(r)->chunk_shift;
        s->done = r->offset >= end || r->offset >= r->key.size;
        base_counter_add(&r->bc->counters.read_bytes, n);
        read_ahead(r);
    }
    if (now) {
        deliver_now(r, rc, p, n);
    } else {
        deliver_later(r, rc, p, n);
    }
}

/*
 * Moves the stream on from blob_read_next (<now> false) or the commit's completion: the end,
 * the head chunk's next piece when it is there, else its read. Returns 0 when a piece will be
 * delivered, or -errno with nothing pending.
 */
static int reader_step(struct blob_reader *r, bool now)
{
    if (r->offset >= r->key.size) {
        deliver_later(r, 0, NULL, 0);
        return 0;
    }
    uint32_t chunk = head_chunk(r);
    struct reader_slot *s = find_slot(r, chunk);
    if (s && s->state != SLOT_READING) {
        slot_piece(r, s, now);
        return 0;
    }
    if (!s) {
        /* Slots are read in chunk order: the head's is the next one. */
        ASSERT(r->used == 0 || r->next_chunk == chunk);
        /* A caller that still holds pieces (in its send) reads ahead of them: limited as any
         * read ahead, and told to release first (-ENOBUFS) past the limits. */
        bool ahead = r->held > 0;
        int rc = slot_read(r, chunk, ahead, true);
        if (rc == -EBADMSG) {
            mark_corrupt(r);
            deliver_later(r, -EBADMSG, NULL, 0);
            return 0;
        }
        if (rc == -EAGAIN && ahead) return -ENOBUFS;
        if (rc < 0) return rc;
        s = slot_at(r, r->used - 1);
        if (s->state == SLOT_READY) { /* read in place: nothing to wait for */
            slot_piece(r, s, now);
            return 0;
        }
    }
    r->waiting = true;
    read_ahead(r);
    return 0;
}

/* ---- the commit record's read ---- */

/*
 * The bytes the first read of the commit record at <off> (<len> bytes) starts early, with
 * slot 0's record buffer taken for it, or 0: not a blob of one small chunk, or no room in the
 * read buffer budget (the chunk is then read alone, and its read asks for the buffer).
 */
static uint32_t window_pre(const struct blob_reader *r, uint64_t off)
{
    uint64_t size = r->key.size;
    if (r->depth != 1 || size == 0 || size > WINDOW_RAW_MAX) return 0;
    if (size > r->bc->s->opts.chunk_size) return 0;
    uint32_t bound = blob_chunk_record_bound((uint32_t)size);
    uint64_t pre = ((uint64_t)bound + 7u) & ~(uint64_t)7; /* records start on 8 bytes */
    return (uint32_t)(pre < off ? pre : off);             /* the segment's first record */
}

/*
 * The bytes the first read of the commit record at <off> (<len> bytes) starts early, with
 * slot 0's record buffer taken for it, or 0: not a blob of one small chunk, or no room in the
 * read buffer budget (the chunk is then read alone, and its read asks for the buffer).
 */
static uint32_t window_open(struct blob_reader *r, uint64_t off, uint32_t len)
{
    uint64_t size = r->key.size;
    uint32_t pre = window_pre(r, off);
    if (pre == 0) return 0;
    uint32_t bound = blob_chunk_record_bound((uint32_t)size);
    uint32_t want = pre + len;
    struct reader_slot *s = &r->slots[0];
    ASSERT(s->state == SLOT_FREE);
    /* A retry after -EAGAIN (disk queue full) finds the buffer taken the first time. */
    if (!s->buf) {
        uint32_t rsize = want > bound ? want : bound;
        if (slot_take(r, s, (uint32_t)size, rsize, r->bc->s->opts.read_buffer_max) < 0) return 0;
    }
    return r->rbuf_size >= want ? pre : 0;
}

static void commit_done(struct blob_reader *r, int32_t res);

static void commit_task(struct ring_task *t)
{
    struct blob_reader *r = BASE_CONTAINER_OF(t, struct blob_reader, ctask);
    commit_done(r, (int32_t)(r->window_pre + r->commit_len));
}

/*
 * For a blob of one chunk of MAP_WINDOW_MIN bytes or more: when the window of the first read
 * of its commit record (<len> bytes at <off>) is all in the page cache, takes it in place
 * from the segment's mapping (r->window) and lets commit_done check it from a deferred task,
 * as if the read had completed (a callback never runs inside blob_read_next). A compressed
 * read from inside the chunk and refresh copies keep the ring's read (they need <buf>).
 */
static bool window_map(struct blob_reader *r, uint64_t off, uint32_t len)
{
    if (r->key.size < MAP_WINDOW_MIN || r->mode == MODE_RECORDS) return false;
    if (r->mode == MODE_ZSTD && r->offset > 0) return false;
    uint32_t pre = window_pre(r, off);
    struct blob_seg *seg = pre > 0 ? reader_pinned(r, r->val.loc.seg) : NULL;
    const uint8_t *p = seg ? blob_segment_mapped(&r->bc->s->segs, seg, off - pre, pre + len) : NULL;
    if (!p) return false;
    r->window = p;
    r->window_pre = pre;
    base_counter_inc(&r->bc->counters.mapped_reads);
    blob_core_defer(r->bc, &r->ctask);
    return true;
}

/*
 * Reads the commit record (<len> bytes). The <first> time, for a blob of one small chunk, the
 * read starts early (window_open) into slot 0's record buffer, where the chunk record is
 * wanted: commit_done copies the commit record out and window_chunk keeps the chunk.
 */
static int read_commit(struct blob_reader *r, uint32_t len, bool first)
{
    uint64_t off = (uint64_t)r->val.loc.off8 * 8;
    free(r->commit);
    r->commit = malloc(len);
    if (!r->commit) return -ENOMEM;
    r->commit_len = len;
    r->window = NULL;
    if (first && window_map(r, off, len)) return 0;
    r->window_pre = first ? window_open(r, off, len) : 0;
    uint8_t *buf = r->window_pre > 0 ? r->slots[0].buf : r->commit;
    return reader_submit(&r->cio, r->val.loc.seg, off - r->window_pre, buf, r->window_pre + len);
}

/*
 * After the commit record read with <pre> bytes before it was checked: when the blob's one
 * chunk record lies wholly in those bytes, moves it to the start of slot 0's record buffer
 * and checks it as if its own read had just completed. False when it is not there (a chunk
 * written apart from its commit record, as a streamed upload's): it is then read alone.
 */
static bool window_chunk(struct blob_reader *r, uint32_t pre)
{
    ASSERT(r->used == 0);
    ASSERT(pre > 0);
    if (commit_of(r)->chunk_count != 1) return false;
    uint32_t head = head_chunk(r);
    ASSERT(head == 0); /* a read from the blob's end reads no commit record */
    struct blob_chunk_ref ref = ref_of(r, 0);
    uint64_t commit_off = (uint64_t)r->val.loc.off8 * 8;
    uint64_t start = commit_off - pre;
    uint64_t off = (uint64_t)ref.off8 * 8;
    uint64_t len = sizeof(struct blob_record_header) + (uint64_t)ref.stored;
    if (ref.seg != r->val.loc.seg || off < start || off + len > commit_off) return false;
    struct reader_slot *s = &r->slots[0];
    s->io.want_len = (uint32_t)len;
    s->chunk = 0;
    int rc;
    if (r->window) {
        rc = slot_check_in_place(r, s, r->window + (off - start), r->bc->s->opts.read_buffer_max);
        if (rc == -ENOBUFS) return false;
    } else {
        /* A raw chunk fills the window exactly; a compressed one ends just before the commit. */
        if (off > start) memmove(s->buf, s->buf + (off - start), (size_t)len);
        s->rec = s->buf;
        rc = slot_check_keep(r, s, (int32_t)len);
    }
    slot_claim(r, s, 0, SLOT_READY);
    s->res = rc < 0 ? rc : (int32_t)len;
    return true;
}

static void commit_done(struct blob_reader *r, int32_t res)
{
    if (res < 0) {
        if (res == -EIO) mark_unreadable(r); /* not a retried EAGAIN: the disk said so */
        deliver_now(r, res == -ECANCELED ? -ECANCELED : -EIO, NULL, 0);
        return;
    }
    uint32_t pre = r->window_pre;
    r->window_pre = 0;
    if ((uint32_t)res < pre + sizeof(struct blob_record_header)) {
        reader_corrupt(r); /* not even a record header where the index points: torn or cut */
        return;
    }
    /* The guessed length may run past the file's end: a short read is no error by itself. */
    bool cut = (uint32_t)res - pre < r->commit_len;
    r->commit_len = (uint32_t)res - pre;
    if (r->window && blob_map_copy(r->commit, r->window + pre, r->commit_len) < 0) {
        mark_unreadable(r);
        deliver_now(r, -EIO, NULL, 0); /* a page of the window could not be read back */
        return;
    }
    if (pre > 0 && !r->window) memcpy(r->commit, r->slots[0].buf + pre, r->commit_len);
    int rc = check_commit(r);
    if (rc < 0) {
        reader_corrupt(r);
        return;
    }
    if (rc == 1 && cut) {
        /* The file ends inside the record its header names (cut under a running server):
         * read again, it comes back as short, for ever. */
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
    r->next_chunk = head_chunk(r);
    /* The head chunk (the only one) came with the commit record: hand it out now. */
    if (pre > 0 && window_chunk(r, pre)) {
        slot_piece(r, &r->slots[0], true);
        return;
    }
    rc = reader_step(r, false);
    if (rc < 0) deliver_later(r, rc, NULL, 0);
}

static void read_done(struct blob_aio *a, int32_t res)
{
    struct reader_io *io = a->ctx;
    struct blob_reader *r = io->r;
    struct blob_core *bc = r->bc;
    /* XFS and others may answer -EAGAIN even for blocking files: read again (bounded). */
    if ((res == -EAGAIN || res == -EINTR) && !r->closing && io->retries < 16) {
        io->retries++;
        if (blob_core_submit(bc, &io->aio, &io->req) == 0) return;
    }
    ASSERT(r->inflight > 0);
    r->inflight--;
    bc->disk_reads--;
    base_counter_dec(&bc->counters.io_in_flight);
    blob_segment_put(&bc->s->segs, io->seg);
    io->seg = NULL;
    if (r->closing) {
        if (r->inflight == 0) reader_free(r);
        return;
    }
    if (io == &r->cio) {
        commit_done(r, res);
        return;
    }
    struct reader_slot *s = BASE_CONTAINER_OF(io, struct reader_slot, io);
    ASSERT(s->state == SLOT_READING);
    s->state = SLOT_READY;
    s->res = res >= 0 && slot_check_keep(r, s, res) < 0 ? -EBADMSG : res;
    if (r->waiting && s->chunk == head_chunk(r)) {
        r->waiting = false;
        slot_piece(r, s, true);
    }
}

int blob_read_next(struct blob_reader *r, blob_data_fn *cb, void *ctx)
{
    if (r->busy) return -EBUSY;
    if (r->err < 0) return r->err;
    /* Without blob_read_hold, the piece handed out last is released by asking for the next. */
    if (!r->hold && r->held > 0) release_oldest(r);
    r->cb = cb;
    r->ctx = ctx;
    r->busy = true;
    int rc;
    if (r->commit_ok || r->offset >= r->key.size) {
        rc = reader_step(r, false);
    } else {
        rc = read_commit(r, commit_guess(r), true);
    }
    if (rc < 0) r->busy = false;
    return rc;
}

void blob_read_hold(struct blob_reader *r)
{
    ASSERT(!r->busy);
    ASSERT(r->held == 0);
    r->hold = true;
}

static bool slot_has(const struct blob_reader *r, const struct reader_slot *s, const uint8_t *p)
{
    bool in_buf = s->buf && p >= s->buf && p < s->buf + r->rbuf_size;
    bool in_obuf = s->obuf && p >= s->obuf && p < s->obuf + r->obuf_size;
    bool in_rec = s->rec && p >= s->rec && p < s->rec + s->io.want_len;
    return in_buf || in_obuf || in_rec;
}

void blob_read_release(struct blob_reader *r, const uint8_t *data)
{
    ASSERT(r->hold);
    ASSERT(r->held > 0);
    /* Bounded by the used slots. Releases may come in any order: slots retire in order. */
    for (uint32_t k = 0; k < r->used; k++) {
        struct reader_slot *s = slot_at(r, k);
        if (s->held == 0 || !slot_has(r, s, data)) continue;
        s->held--;
        r->held--;
        slots_retire(r);
        read_ahead(r);
        return;
    }
    UNREACHABLE(); /* not a piece this reader handed out */
}

void blob_read_close(struct blob_reader *r)
{
    if (!r) return;
    if (r->inflight == 0) {
        reader_free(r);
        return;
    }
    r->closing = true;
    ring_task_cancel(&r->task);
    ring_task_cancel(&r->ctask);
    struct blob_io *io = r->bc->s->io;
    if (blob_aio_is_busy(&r->cio.aio)) io->ops->cancel(io, &r->cio.aio);
    /* Bounded by BLOB_READ_AHEAD_MAX; each completion comes back, the last one frees. */
    for (uint32_t i = 0; i < r->depth; i++) {
        struct blob_aio *a = &r->slots[i].io.aio;
        if (blob_aio_is_busy(a)) io->ops->cancel(io, a);
    }
}
