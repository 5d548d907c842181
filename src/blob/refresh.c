/*
 * Refresh on read: a blob found in the oldest part of the log (by a read, an existence check
 * with refresh, or the AC completeness check) is copied to this core's head before eviction
 * reaches it. The copy reads the stored chunk records and appends them as they are (no
 * decompression, no recompression), then a new commit record; once that is durable the index
 * entry moves, but only if it still points at the old copy.
 *
 * Keys wait in a per-core queue (at most REFRESH_QUEUE_MAX, oldest first) and at most
 * REFRESH_RUN_MAX copies run at once; a cache hit may name thousands of cold outputs, and each
 * must outlive the hit, so the queue is long and only the copies are few. A key already
 * waiting or copying is not queued again (a table of tags, one per slot, says so). A full
 * queue refuses the key (blob_refresh_queue answers false, `refreshes_dropped`); a refresh
 * that fails leaves the old entry as it was.
 *
 * Pins: a queued key keeps where it was found and pins the segments its copy reads, so that
 * eviction, which may take them while the key waits, cannot take the bytes: the copy reads the
 * unlinked file through the pin and indexes the copy even though the entry is gone (upload.c
 * copy_index keeps an entry that came since). Each core holds one reference and one
 * blob_segment_pin per segment, however many of its keys are there, until the last of them
 * ends; store-wide at most pin_max() segments are pinned (a quarter of the budget), and a key
 * whose segments cannot be pinned is refused as by a full queue (`refreshes_unpinned`). The
 * bytes of a pinned segment that eviction took stay on disk until then (blob_store_used); a
 * pass counts them as freed soon where --max-size sets the budget (evict.c held_soon), else
 * against it. When the copy starts, a key found elsewhere (another copy moved it, a
 * newer AC value came) or no longer cold is skipped.
 *
 * Found while queued: a queued key is also in the store's table of keys being refreshed
 * (BLOB_REFRESH_KEYS entries, shared by the cores), with where its copy reads it, from when
 * it is queued until its copy ends. Every core's lookups fall back to it when eviction took
 * the key's segment: a blob just reported present reads the same on any core (a client's
 * other connections land on other cores) until its copy lands. A key the table has no room
 * for is refused as by a full queue.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "blob/internal.h"

#define REFRESH_RUN_MAX   16U        /* copies running per core */
#define REFRESH_QUEUE_MAX (1U << 16) /* keys waiting per core (64 bytes each) */
#define REFRESH_QUEUE_MIN 64U        /* first allocation of the queue */
#define REFRESH_TAG_SLOTS (1U << 14) /* the tags of keys waiting or copying */
#define REFRESH_TAG_PROBE 8U         /* slots a key's tag may take, from its home slot */
#define REFRESH_PINS_MAX  64U        /* segments one core's keys may pin */
#define TABLE_BUCKET      16U        /* entries a key may take, in either of its two buckets */
#define TABLE_BUCKETS     (BLOB_REFRESH_KEYS / TABLE_BUCKET)

STATIC_ASSERT(TABLE_BUCKETS % BLOB_REFRESH_STRIPES == 0, "a bucket has one lock");
STATIC_ASSERT(sizeof(struct blob_refresh_entry) == 80, "docs/operations.md counts 80 bytes");

STATIC_ASSERT(sizeof(struct blob_refresh_item) == 64, "the queue's bound counts 64 bytes a key");

struct blob_refresh {
    struct blob_core *bc;          /* owner */
    struct base_list link;         /* on bc->refreshes */
    struct blob_refresh_item item; /* the blob and where it is copied from (pinned) */
    struct blob_reader *r;         /* reads the stored records */
    struct blob_upload *u;         /* appends them */
    bool checked;                  /* the first record came: <verify> is decided */
    bool verify;                   /* a version-1 CAS commit: the copy is hashed (below) */
    struct blob_digest digest;     /* the decoded bytes copied so far, when <verify> */
    uint8_t *raw;                  /* a decoded chunk, when <verify> */
    uint32_t raw_cap;              /* its room */
};

/* ---- the tags of keys waiting or copying ---- */

static uint32_t tag_slot(const struct blob_key *k)
{
    uint32_t x;
    memcpy(&x, k->hash + 8, sizeof(x));
    return x & (REFRESH_TAG_SLOTS - 1);
}

static uint64_t tag_of(const struct blob_key *k)
{
    uint64_t x;
    memcpy(&x, k->hash, sizeof(x));
    x ^= k->kind;
    return x ? x : 1; /* 0 marks a free slot */
}

/* The slot holding <k>'s tag (one of REFRESH_TAG_PROBE from its home), or UINT32_MAX. */
static uint32_t tag_find(const struct blob_refresh_queue *q, const struct blob_key *k)
{
    if (!q->tags) return UINT32_MAX;
    uint32_t home = tag_slot(k);
    uint64_t tag = tag_of(k);
    /* Bounded by REFRESH_TAG_PROBE. */
    for (uint32_t i = 0; i < REFRESH_TAG_PROBE; i++) {
        uint32_t s = (home + i) & (REFRESH_TAG_SLOTS - 1);
        if (q->tags[s] == tag) return s;
    }
    return UINT32_MAX;
}

static bool tag_is_set(const struct blob_refresh_queue *q, const struct blob_key *k)
{
    return tag_find(q, k) != UINT32_MAX;
}

/*
 * Tags <k> in the first free slot from its home. With all of them taken the home slot's key
 * loses its tag: it may be queued twice (two copies; the second finds the key moved and is
 * skipped). Lookups do not read the tags (the store's table of keys being refreshed).
 */
static void tag_set(struct blob_refresh_queue *q, const struct blob_key *k)
{
    uint32_t home = tag_slot(k);
    uint32_t s = home;
    /* Bounded by REFRESH_TAG_PROBE. */
    for (uint32_t i = 0; i < REFRESH_TAG_PROBE; i++) {
        uint32_t at = (home + i) & (REFRESH_TAG_SLOTS - 1);
        if (q->tags[at] == 0) {
            s = at;
            break;
        }
    }
    q->tags[s] = tag_of(k);
}

/* Clears <k>'s tag unless another key took its slot since. */
static void tag_clear(struct blob_refresh_queue *q, const struct blob_key *k)
{
    uint32_t s = tag_find(q, k);
    if (s != UINT32_MAX) q->tags[s] = 0;
}

/* ---- pins: the segments keys waiting or copying read from ---- */

/*
 * Segments the refresh queues may pin, store-wide: a quarter of the budget, what the cold part
 * of the log holds (only cold keys are queued), and one more per core, as the cold boundary
 * moves a segment at a time. What eviction cannot free while they are pinned stays within it.
 */
static uint32_t pin_max(const struct blob_store *s)
{
    uint64_t n = blob_store_budget(s) / 4 / s->opts.segment_size + s->opts.cores_max;
    return n < UINT32_MAX ? (uint32_t)n : UINT32_MAX;
}

static struct blob_refresh_pin *pin_find(struct blob_refresh_queue *q, uint32_t seg32)
{
    if (q->pin_last < q->pins_len && q->pins[q->pin_last].seg32 == seg32) {
        return &q->pins[q->pin_last];
    }
    /* Bounded by REFRESH_PINS_MAX. */
    for (uint32_t i = 0; i < q->pins_len; i++) {
        if (q->pins[i].seg32 == seg32) {
            q->pin_last = i;
            return &q->pins[i];
        }
    }
    return NULL;
}

/* One more key in segment <seg32>: false when it cannot be pinned (dead, or over the budget). */
static bool pin_one(struct blob_core *bc, uint32_t seg32)
{
    struct blob_refresh_queue *q = &bc->rq;
    struct blob_refresh_pin *p = pin_find(q, seg32);
    if (p) {
        p->keys++;
        return true;
    }
    if (q->pins_len == REFRESH_PINS_MAX) return false;
    struct blob_segs *segs = &bc->s->segs;
    struct blob_seg *seg = blob_segment_get(segs, seg32);
    if (!seg) return false; /* evicted since the key was looked up */
    if (!blob_segment_pin(segs, seg, pin_max(bc->s))) {
        blob_segment_put(segs, seg);
        return false;
    }
    q->pin_last = q->pins_len;
    q->pins[q->pins_len++] = (struct blob_refresh_pin){ .seg = seg, .seg32 = seg32, .keys = 1 };
    return true;
}

/* One key fewer in segment <seg32>: the last one gives the pin and the reference back. */
static void unpin_one(struct blob_core *bc, uint32_t seg32)
{
    struct blob_refresh_queue *q = &bc->rq;
    struct blob_refresh_pin *p = pin_find(q, seg32);
    ASSERT(p != NULL);
    ASSERT(p->keys > 0);
    if (--p->keys > 0) return;
    blob_segment_unpin(&bc->s->segs, p->seg);
    blob_segment_put(&bc->s->segs, p->seg);
    *p = q->pins[--q->pins_len];
}

/*
 * Gives back the pins of the first <n> segments of the span from <lo> (<span> segments after
 * it). A segment inside the span may have been left out as a gap (pin_take): it has no pin on
 * this core, since it was dead when the key came and a dead segment takes no new pin, so what
 * is missing there is no pin of the key's. Both ends always have one.
 */
static void pin_undo(struct blob_core *bc, uint32_t lo, uint32_t span, uint32_t n)
{
    /* Bounded by the span (below REFRESH_PINS_MAX). */
    for (uint32_t i = 0; i < n; i++) {
        bool inside = i > 0 && i < span;
        if (inside && !pin_find(&bc->rq, lo + i)) continue;
        unpin_one(bc, lo + i);
    }
}

/*
 * Pins the segments of <loc> (its commit's and the span before it): all of them, or none,
 * but for a gap: a segment inside the span that is gone while the span's oldest lives holds
 * none of the blob's chunks (another core's that a full disk left empty and the evictor
 * deleted; eviction takes segments oldest first), or one lost, which the copy's read finds
 * (reader_chunk_gone). Reads skip such a segment; before, pinning wanted it and refused the
 * key, so a blob with a gap in its span was never refreshed and a hit counted it missing.
 */
static bool pin_take(struct blob_core *bc, const struct blob_loc *loc)
{
    if (loc->span >= REFRESH_PINS_MAX) return false;
    uint32_t lo = loc->seg - loc->span;
    struct blob_segs *segs = &bc->s->segs;
    bool gap = false;
    /* Bounded by the span. */
    for (uint32_t i = 0; i <= loc->span; i++) {
        if (pin_one(bc, lo + i)) continue;
        bool inside = i > 0 && i < loc->span;
        if (inside && !blob_segment_is_alive(segs, lo + i)) {
            gap = true;
            continue;
        }
        pin_undo(bc, lo, loc->span, i);
        return false;
    }
    /* The oldest, pinned first, still alive: nothing newer was evicted, so a segment found
     * dead inside the span was a gap, not one eviction took meanwhile. */
    if (gap && !blob_segment_is_alive(segs, lo)) {
        pin_undo(bc, lo, loc->span, (uint32_t)loc->span + 1);
        return false;
    }
    return true;
}

static void pin_drop(struct blob_core *bc, const struct blob_loc *loc)
{
    pin_undo(bc, loc->seg - loc->span, loc->span, (uint32_t)loc->span + 1);
}

/* ---- the store's table of keys being refreshed ---- */

/* The <i>th (0 or 1) of <k>'s two buckets (blob_key_bucket). */
static uint32_t table_bucket(const struct blob_key *k, uint32_t i)
{
    return blob_key_bucket(k, 16, i, TABLE_BUCKETS);
}

static pthread_mutex_t *table_lock(struct blob_refresh_table *rt, uint32_t bucket)
{
    return &rt->locks[bucket % BLOB_REFRESH_STRIPES];
}

static bool same_blob(const struct blob_key *a, const struct blob_key *b)
{
    return a->kind == b->kind && a->digest_fn == b->digest_fn &&
           memcmp(a->hash, b->hash, BLOB_HASH_SIZE) == 0;
}

int blob_refresh_table_init(struct blob_store *s)
{
    struct blob_refresh_table *rt = &s->refreshing;
    rt->entries = calloc(BLOB_REFRESH_KEYS, sizeof(*rt->entries));
    if (!rt->entries) return -ENOMEM;
    atomic_store(&rt->count, 0);
    /* Bounded by BLOB_REFRESH_STRIPES. */
    for (uint32_t i = 0; i < BLOB_REFRESH_STRIPES; i++) {
        int rc = pthread_mutex_init(&rt->locks[i], NULL);
        ASSERT(rc == 0);
    }
    return 0;
}

void blob_refresh_table_deinit(struct blob_store *s)
{
    struct blob_refresh_table *rt = &s->refreshing;
    if (!rt->entries) return;
    ASSERT(atomic_load(&rt->count) == 0); /* every core's keys ended */
    /* Bounded by BLOB_REFRESH_STRIPES. */
    for (uint32_t i = 0; i < BLOB_REFRESH_STRIPES; i++) {
        pthread_mutex_destroy(&rt->locks[i]);
    }
    free(rt->entries);
    rt->entries = NULL;
}

/* Enters <k> (at its real size) found at <v>, queued on <bc>: false when its bucket is full. */
static bool table_add(struct blob_core *bc, const struct blob_key *k,
                      const struct blob_index_value *v)
{
    struct blob_refresh_table *rt = &bc->s->refreshing;
    bool added = false;
    /* Bounded by the two buckets of TABLE_BUCKET entries. */
    for (uint32_t c = 0; c < 2 && !added; c++) {
        uint32_t b = table_bucket(k, c);
        struct blob_refresh_entry *e = &rt->entries[(size_t)b * TABLE_BUCKET];
        pthread_mutex_lock(table_lock(rt, b));
        for (uint32_t i = 0; i < TABLE_BUCKET; i++) {
            if (e[i].owner) continue;
            e[i] = (struct blob_refresh_entry){ .key = *k, .v = *v, .owner = bc };
            atomic_fetch_add(&rt->count, 1);
            added = true;
            break;
        }
        pthread_mutex_unlock(table_lock(rt, b));
    }
    return added;
}

/* Takes out the entry of <k> at <loc> queued on <bc> (one, if it was queued twice). */
static void table_del(struct blob_core *bc, const struct blob_key *k, const struct blob_loc *loc)
{
    struct blob_refresh_table *rt = &bc->s->refreshing;
    bool found = false;
    /* Bounded by the two buckets of TABLE_BUCKET entries. */
    for (uint32_t c = 0; c < 2 && !found; c++) {
        uint32_t b = table_bucket(k, c);
        struct blob_refresh_entry *e = &rt->entries[(size_t)b * TABLE_BUCKET];
        pthread_mutex_lock(table_lock(rt, b));
        for (uint32_t i = 0; i < TABLE_BUCKET; i++) {
            if (e[i].owner != bc || !same_blob(&e[i].key, k)) continue;
            const struct blob_loc *at = &e[i].v.loc;
            if (at->seg != loc->seg || at->off8 != loc->off8 || at->span != loc->span) continue;
            e[i].owner = NULL;
            atomic_fetch_sub(&rt->count, 1);
            found = true;
            break;
        }
        pthread_mutex_unlock(table_lock(rt, b));
    }
    ASSERT(found); /* entered when it was queued */
}

/* ---- the queue ---- */

/* Makes room for one more key; false when the queue is at its bound or memory is short. */
static bool queue_room(struct blob_refresh_queue *q)
{
    if (!q->tags) {
        q->tags = calloc(REFRESH_TAG_SLOTS, sizeof(*q->tags));
        if (!q->tags) return false;
    }
    if (!q->pins) {
        q->pins = calloc(REFRESH_PINS_MAX, sizeof(*q->pins));
        if (!q->pins) return false;
    }
    if (q->len < q->cap) return true;
    if (q->cap == REFRESH_QUEUE_MAX) return false;
    uint32_t cap = q->cap ? 2 * q->cap : REFRESH_QUEUE_MIN;
    struct blob_refresh_item *items = malloc((size_t)cap * sizeof(*items));
    if (!items) return false;
    /* Bounded by the queue's length: the ring is unwrapped into the new array (a queue with
     * no slots yet holds nothing). */
    for (uint32_t i = 0; q->cap > 0 && i < q->len; i++) {
        items[i] = q->items[(q->head + i) % q->cap];
    }
    free(q->items);
    q->items = items;
    q->cap = cap;
    q->head = 0;
    return true;
}

static void queue_push(struct blob_refresh_queue *q, const struct blob_refresh_item *it)
{
    q->items[(q->head + q->len) % q->cap] = *it;
    q->len++;
}

static void queue_push_front(struct blob_refresh_queue *q, const struct blob_refresh_item *it)
{
    q->head = (q->head + q->cap - 1) % q->cap;
    q->items[q->head] = *it;
    q->len++;
}

static struct blob_refresh_item queue_pop(struct blob_refresh_queue *q)
{
    struct blob_refresh_item it = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return it;
}

/* A key leaves the queue without a copy (or its copy ended): its pins go. */
static void key_done(struct blob_core *bc, const struct blob_refresh_item *it)
{
    tag_clear(&bc->rq, &it->key);
    /* Out of the table before the pins go: a lookup that finds the entry finds its segments
     * pinned (blob_segment_get_pinned), or looks again. */
    table_del(bc, &it->key, &it->loc);
    pin_drop(bc, &it->loc);
    base_counter_dec(&bc->counters.refreshes_open);
}

/* ---- one copy ---- */

static void refresh_end(struct blob_refresh *f)
{
    struct blob_core *bc = f->bc;
    if (f->verify) blob_digest_deinit(&f->digest);
    free(f->raw);
    blob_read_close(f->r);
    if (f->u) blob_upload_abort(f->u);
    base_list_del(&f->link);
    key_done(bc, &f->item);
    free(f);
    bc->refreshes_len--;
    if (bc->rq.len > 0 && !bc->quiescing) blob_core_defer(bc, &bc->rq.pump);
}

static void refresh_next(struct blob_refresh *f);

static void refresh_committed(void *ctx, int res)
{
    struct blob_refresh *f = ctx;
    (void)res;   /* a failed refresh leaves the old copy indexed */
    f->u = NULL; /* freed by the engine after this callback */
    refresh_end(f);
}

static void refresh_appended(void *ctx, int res)
{
    struct blob_refresh *f = ctx;
    if (res < 0) {
        refresh_end(f);
        return;
    }
    refresh_next(f);
}

/*
 * A version-1 commit names its chunk records by place and length only, so a misplaced record
 * of the same length (a misdirected write) reads as the blob's. Its copy would be a version-2
 * commit binding that record's sum: served wrong for good, and no longer found by anything
 * but fsck. So the copy of a version-1 CAS blob decodes and hashes what it copies, and is not
 * committed unless the bytes hash to the digest; else the blob is dropped as corrupt. (An AC
 * value has no digest: copied as is.)
 * 0, or -EBADMSG / -ENOMEM: the copy ends.
 */
static int refresh_verify(struct blob_refresh *f, const uint8_t *rec, size_t len)
{
    if (!f->checked) {
        f->checked = true;
        f->verify = blob_reader_commit_version(f->r) == 1 && f->item.key.kind == BLOB_KIND_CAS;
        if (f->verify && blob_digest_init(&f->digest, f->item.key.digest_fn) < 0) {
            f->verify = false;
            return -ENOMEM;
        }
    }
    if (!f->verify) return 0;
    struct blob_record_header h;
    if (len < sizeof(h)) return -EBADMSG;
    memcpy(&h, rec, sizeof(h));
    if (h.raw_len > f->raw_cap) {
        uint8_t *raw = realloc(f->raw, h.raw_len);
        if (!raw) return -ENOMEM;
        f->raw = raw;
        f->raw_cap = h.raw_len;
    }
    int rc = blob_chunk_decode(&f->bc->zctx, &h, rec + sizeof(h), f->raw, f->raw_cap);
    if (rc < 0) return rc;
    blob_digest_update(&f->digest, f->raw, h.raw_len);
    return 0;
}

/* True when the copy may be committed: not verified, or hashing to its digest. */
static bool refresh_verified(struct blob_refresh *f)
{
    if (!f->verify) return true;
    uint8_t hash[BLOB_HASH_SIZE];
    blob_digest_final(&f->digest, hash);
    return memcmp(hash, f->item.key.hash, BLOB_HASH_SIZE) == 0;
}

static void refresh_piece(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct blob_refresh *f = ctx;
    if (res < 0) {
        refresh_end(f);
        return;
    }
    /* Before the first record is written: a copy that cannot be committed writes nothing
     * (its records would only push older segments out). */
    if (len > 0 && !f->checked && !blob_upload_copy_fits(f->u, blob_reader_chunk_count(f->r))) {
        refresh_end(f);
        return;
    }
    if (len > 0 && refresh_verify(f, data, len) < 0) {
        refresh_end(f);
        return;
    }
    if (len == 0 && !refresh_verified(f)) {
        /* The stored blob is not what its digest says: it is corrupt, as a read finds it. */
        base_counter_inc(&f->bc->counters.corrupt_chunks);
        blob_store_drop_corrupt(f->bc->s, &f->item.key, &f->item.loc, -EBADMSG);
        refresh_end(f);
        return;
    }
    if (len == 0) {
        struct blob_upload *u = f->u;
        blob_upload_set_commit_seq(u, blob_reader_commit_seq(f->r));
        blob_upload_set_chunk_shift(u, blob_reader_chunk_shift(f->r));
        if (blob_upload_commit(u, refresh_committed, f) < 0) refresh_end(f);
        return;
    }
    int rc = blob_upload_append_record(f->u, data, (uint32_t)len, refresh_appended, f);
    if (rc == -EINPROGRESS) return;
    if (rc < 0) {
        refresh_end(f);
        return;
    }
    refresh_next(f);
}

static void refresh_next(struct blob_refresh *f)
{
    int rc = blob_read_next(f->r, refresh_piece, f);
    if (rc < 0) refresh_end(f);
}

static bool is_copying(struct blob_core *bc, const struct blob_key *k)
{
    /* Bounded by REFRESH_RUN_MAX. */
    BASE_LIST_FOR_EACH(it, &bc->refreshes)
    {
        struct blob_refresh *f = BASE_CONTAINER_OF(it, struct blob_refresh, link);
        const struct blob_key *fk = &f->item.key;
        if (fk->kind == k->kind && memcmp(fk->hash, k->hash, BLOB_HASH_SIZE) == 0) {
            return true;
        }
    }
    return false;
}

static bool loc_eq(const struct blob_loc *a, const struct blob_loc *b)
{
    return a->seg == b->seg && a->off8 == b->off8 && a->span == b->span;
}

/*
 * Whether the key of <it> is to be copied now: still indexed where it was queued and cold, or
 * gone with a segment eviction took while it waited (the pins kept the files). Not when it
 * was found elsewhere (another copy moved it, a newer AC value came), is no longer cold, was
 * dropped while its segments live (a read found it corrupt), or is being copied.
 */
static bool refresh_wanted(struct blob_core *bc, const struct blob_refresh_item *it)
{
    struct blob_index_value v;
    struct blob_segs *segs = &bc->s->segs;
    if (blob_store_lookup(bc->s, &it->key, &v)) {
        if (!loc_eq(&v.loc, &it->loc) || !blob_store_is_cold(bc->s, &v)) return false;
    } else if (blob_segment_is_alive(segs, it->loc.seg) &&
               blob_segment_is_alive(segs, it->loc.seg - it->loc.span)) {
        return false;
    }
    return !is_copying(bc, &it->key);
}

/*
 * Starts the copy of <it>: 0 (started, or skipped: nothing to copy, refresh_wanted), -EAGAIN
 * when the core is short of readers or uploads right now (the key may wait for a running copy
 * to end). The copy reads where the key was queued, through its pins.
 */
static int refresh_start(struct blob_core *bc, const struct blob_refresh_item *it)
{
    if (!refresh_wanted(bc, it)) {
        key_done(bc, it);
        return 0;
    }
    struct blob_refresh *f = calloc(1, sizeof(*f));
    if (!f) {
        key_done(bc, it);
        return 0;
    }
    struct blob_seg *segs[REFRESH_PINS_MAX];
    blob_refresh_segs(bc, &it->loc, segs);
    int rc = blob_read_open_records(bc, &it->key, &it->loc, segs, &f->r);
    if (rc == 0) rc = blob_upload_begin_copy(bc, &it->key, &it->loc, &f->u);
    if (rc == -EAGAIN && bc->refreshes_len > 0) {
        blob_read_close(f->r);
        free(f);
        return -EAGAIN;
    }
    f->bc = bc;
    f->item = *it;
    base_list_add_tail(&bc->refreshes, &f->link);
    bc->refreshes_len++;
    if (rc < 0) {
        refresh_end(f);
        return 0;
    }
    refresh_next(f);
    return 0;
}

/* Starts copies from the queue, oldest key first, up to REFRESH_RUN_MAX at once. */
static void refresh_pump(struct ring_task *t)
{
    struct blob_core *bc = BASE_CONTAINER_OF(t, struct blob_core, rq.pump);
    /* Bounded by the queue's length. */
    while (!bc->quiescing && bc->refreshes_len < REFRESH_RUN_MAX && bc->rq.len > 0) {
        struct blob_refresh_item it = queue_pop(&bc->rq);
        if (refresh_start(bc, &it) == -EAGAIN) {
            queue_push_front(&bc->rq, &it); /* retried when a running copy ends */
            return;
        }
    }
}

/* ---- the engine's side ---- */

void blob_refresh_init(struct blob_core *bc)
{
    memset(&bc->rq, 0, sizeof(bc->rq));
    ring_task_init(&bc->rq.pump, refresh_pump);
}

bool blob_refresh_queue(struct blob_core *bc, const struct blob_key *k,
                        const struct blob_index_value *v)
{
    struct blob_refresh_queue *q = &bc->rq;
    if (bc->quiescing) return false;
    struct blob_refresh_item it = { .key = *k, .loc = v->loc };
    /* The copy names the blob by its real size (a lookup by hash alone has none, an AC
     * lookup's is ignored), which the index's conditional move matches exactly. */
    it.key.size = v->size;
    if (tag_is_set(q, &it.key)) return true; /* waiting or copying */
    if (!queue_room(q)) {
        base_counter_inc(&bc->counters.refreshes_dropped);
        return false;
    }
    if (!pin_take(bc, &it.loc)) {
        base_counter_inc(&bc->counters.refreshes_unpinned);
        return false;
    }
    if (!table_add(bc, &it.key, &(struct blob_index_value){ .loc = it.loc, .size = v->size })) {
        pin_drop(bc, &it.loc);
        base_counter_inc(&bc->counters.refreshes_dropped);
        return false;
    }
    queue_push(q, &it);
    tag_set(q, &it.key);
    base_counter_inc(&bc->counters.refreshes_open);
    blob_core_defer(bc, &q->pump);
    return true;
}

/*
 * Eviction may take a queued key's segment before its copy lands: the index entry goes with
 * the segment, and the blob a client was just told is present (FindMissingBlobs, an AC hit's
 * outputs) read NOT_FOUND for the milliseconds the copies take behind heavy writes (up to 40
 * of 40 outputs, measured), on whichever core the client's next request landed. The refresh
 * still holds the files (its pins), so every core's lookups find the key where its copy reads
 * it until the copy lands.
 */
bool blob_refresh_find(struct blob_store *s, const struct blob_key *k, struct blob_index_value *out)
{
    struct blob_refresh_table *rt = &s->refreshing;
    if (atomic_load_explicit(&rt->count, memory_order_acquire) == 0) return false;
    bool sized = k->kind == BLOB_KIND_CAS && k->size != BLOB_SIZE_ANY;
    bool found = false;
    /* Bounded by the two buckets of TABLE_BUCKET entries. */
    for (uint32_t c = 0; c < 2 && !found; c++) {
        uint32_t b = table_bucket(k, c);
        const struct blob_refresh_entry *e = &rt->entries[(size_t)b * TABLE_BUCKET];
        pthread_mutex_lock(table_lock(rt, b));
        for (uint32_t i = 0; i < TABLE_BUCKET && !found; i++) {
            if (!e[i].owner || !same_blob(&e[i].key, k)) continue;
            if (sized && k->size != e[i].v.size) continue;
            *out = e[i].v;
            found = true;
        }
        pthread_mutex_unlock(table_lock(rt, b));
    }
    if (!found) return false;
    struct blob_segs *segs = &s->segs;
    uint32_t lo = out->loc.seg - out->loc.span;
    return !blob_segment_is_alive(segs, out->loc.seg) || !blob_segment_is_alive(segs, lo);
}

void blob_refresh_segs(struct blob_core *bc, const struct blob_loc *loc, struct blob_seg **segs)
{
    uint32_t lo = loc->seg - loc->span;
    /* Bounded by the span (below REFRESH_PINS_MAX: pin_take). */
    for (uint32_t i = 0; i <= loc->span; i++) {
        struct blob_refresh_pin *p = pin_find(&bc->rq, lo + i);
        bool inside = i > 0 && i < loc->span;
        ASSERT(p != NULL || inside); /* a key's own, or a gap (pin_take) */
        segs[i] = p ? p->seg : NULL;
    }
}

void blob_refresh_cancel_all(struct blob_core *bc)
{
    /* The keys waiting are dropped with their pins; running copies end when their I/O
     * completes (quiesce waits for them) and give theirs back then. */
    ring_task_cancel(&bc->rq.pump);
    /* Bounded by the queue's length. */
    while (bc->rq.len > 0) {
        struct blob_refresh_item it = queue_pop(&bc->rq);
        key_done(bc, &it);
    }
}

void blob_refresh_deinit(struct blob_core *bc)
{
    ASSERT(bc->rq.len == 0);
    ASSERT(bc->rq.pins_len == 0); /* every key ended, and its pins with it */
    ring_task_cancel(&bc->rq.pump);
    free(bc->rq.items);
    free(bc->rq.tags);
    free(bc->rq.pins);
    memset(&bc->rq, 0, sizeof(bc->rq));
}
