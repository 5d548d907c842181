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
 * waiting or copying is not queued again (a table of tags, one per slot, says so). When the
 * copy starts, a key no longer present or no longer cold (another copy moved it) is skipped.
 * A full queue refuses the key (blob_refresh_queue answers false, `refreshes_dropped`); a
 * refresh that fails leaves the old entry as it was.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blob/internal.h"

#define REFRESH_RUN_MAX   16U        /* copies running per core */
#define REFRESH_QUEUE_MAX (1U << 16) /* keys waiting per core (48 bytes each) */
#define REFRESH_QUEUE_MIN 64U        /* first allocation of the queue */
#define REFRESH_TAG_SLOTS (1U << 14) /* the tags of keys waiting or copying */

struct blob_refresh {
    struct blob_core *bc;  /* owner */
    struct base_list link; /* on bc->refreshes */
    struct blob_key key;   /* the blob */
    struct blob_reader *r; /* reads the stored records */
    struct blob_upload *u; /* appends them */
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

static bool tag_is_set(const struct blob_refresh_queue *q, const struct blob_key *k)
{
    return q->tags && q->tags[tag_slot(k)] == tag_of(k);
}

/* Clears <k>'s tag unless another key took its slot since. */
static void tag_clear(struct blob_refresh_queue *q, const struct blob_key *k)
{
    if (tag_is_set(q, k)) q->tags[tag_slot(k)] = 0;
}

/* ---- the queue ---- */

/* Makes room for one more key; false when the queue is at its bound or memory is short. */
static bool queue_room(struct blob_refresh_queue *q)
{
    if (!q->tags) {
        q->tags = calloc(REFRESH_TAG_SLOTS, sizeof(*q->tags));
        if (!q->tags) return false;
    }
    if (q->len < q->cap) return true;
    if (q->cap == REFRESH_QUEUE_MAX) return false;
    uint32_t cap = q->cap ? 2 * q->cap : REFRESH_QUEUE_MIN;
    struct blob_key *keys = malloc((size_t)cap * sizeof(*keys));
    if (!keys) return false;
    /* Bounded by the queue's length: the ring is unwrapped into the new array (a queue with
     * no slots yet holds nothing). */
    for (uint32_t i = 0; q->cap > 0 && i < q->len; i++) {
        keys[i] = q->keys[(q->head + i) % q->cap];
    }
    free(q->keys);
    q->keys = keys;
    q->cap = cap;
    q->head = 0;
    return true;
}

static void queue_push(struct blob_refresh_queue *q, const struct blob_key *k)
{
    q->keys[(q->head + q->len) % q->cap] = *k;
    q->len++;
}

static void queue_push_front(struct blob_refresh_queue *q, const struct blob_key *k)
{
    q->head = (q->head + q->cap - 1) % q->cap;
    q->keys[q->head] = *k;
    q->len++;
}

static struct blob_key queue_pop(struct blob_refresh_queue *q)
{
    struct blob_key k = q->keys[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return k;
}

/* A key leaves the queue without a copy (or its copy ended). */
static void key_done(struct blob_core *bc, const struct blob_key *k)
{
    tag_clear(&bc->rq, k);
    base_counter_dec(&bc->counters.refreshes_open);
}

/* ---- one copy ---- */

static void refresh_end(struct blob_refresh *f)
{
    struct blob_core *bc = f->bc;
    blob_read_close(f->r);
    if (f->u) blob_upload_abort(f->u);
    base_list_del(&f->link);
    key_done(bc, &f->key);
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

static void refresh_piece(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct blob_refresh *f = ctx;
    if (res < 0) {
        refresh_end(f);
        return;
    }
    if (len == 0) {
        struct blob_upload *u = f->u;
        blob_upload_set_commit_seq(u, blob_reader_commit_seq(f->r));
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
        if (f->key.kind == k->kind && memcmp(f->key.hash, k->hash, BLOB_HASH_SIZE) == 0) {
            return true;
        }
    }
    return false;
}

/*
 * Starts the copy of <k>: 0 (started, or skipped: nothing to copy), -EAGAIN when the core is
 * short of readers or uploads right now (the key may wait for a running copy to end).
 */
static int refresh_start(struct blob_core *bc, const struct blob_key *k)
{
    struct blob_index_value v;
    if (!blob_store_lookup(bc->s, k, &v) || !blob_store_is_cold(bc->s, &v) || is_copying(bc, k)) {
        key_done(bc, k);
        return 0;
    }
    struct blob_refresh *f = calloc(1, sizeof(*f));
    if (!f) {
        key_done(bc, k);
        return 0;
    }
    int rc = blob_read_open_records(bc, k, &f->r);
    struct blob_key copy = *k;
    copy.size = v.size;
    if (rc == 0) rc = blob_upload_begin_copy(bc, &copy, &v.loc, &f->u);
    if (rc == -EAGAIN && bc->refreshes_len > 0) {
        blob_read_close(f->r);
        free(f);
        return -EAGAIN;
    }
    f->bc = bc;
    f->key = *k;
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
        struct blob_key k = queue_pop(&bc->rq);
        if (refresh_start(bc, &k) == -EAGAIN) {
            queue_push_front(&bc->rq, &k); /* retried when a running copy ends */
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
    struct blob_key key = *k;
    /* A lookup by hash alone found the blob: the copy names it by its real size, which the
     * index's conditional move matches exactly. */
    if (k->kind == BLOB_KIND_CAS) key.size = v->size;
    if (tag_is_set(q, &key)) return true; /* waiting or copying */
    if (!queue_room(q)) {
        base_counter_inc(&bc->counters.refreshes_dropped);
        return false;
    }
    queue_push(q, &key);
    q->tags[tag_slot(&key)] = tag_of(&key);
    base_counter_inc(&bc->counters.refreshes_open);
    blob_core_defer(bc, &q->pump);
    return true;
}

void blob_refresh_cancel_all(struct blob_core *bc)
{
    /* The keys waiting are dropped; running copies end when their I/O completes (quiesce
     * waits for them). */
    ring_task_cancel(&bc->rq.pump);
    while (bc->rq.len > 0) {
        struct blob_key k = queue_pop(&bc->rq);
        key_done(bc, &k);
    }
}

void blob_refresh_deinit(struct blob_core *bc)
{
    ASSERT(bc->rq.len == 0);
    ring_task_cancel(&bc->rq.pump);
    free(bc->rq.keys);
    free(bc->rq.tags);
    memset(&bc->rq, 0, sizeof(bc->rq));
}
