/*
 * The directory walk: a queue of digests in BFS order, a hash set of the digests queued so
 * far (indexes into the queue), and one whole-blob read at a time. The end callback is always
 * deferred to a fetch completion or a task, never run inside rpc_walk_start/resume.
 */
#include "rpc/walk.h"

#include <errno.h>
#include <string.h>

#include "proto/wire.h"
#include "rpc/internal.h"

static struct proto_alloc *mem(const struct rpc_walk *w)
{
    return &w->rc->pb_mem;
}

static uint64_t digest_hash(const struct walk_digest *d)
{
    uint64_t h;
    memcpy(&h, d->hash, sizeof(h)); /* SHA-256 bytes are uniform already */
    return h ^ d->size;
}

static bool digest_eq(const struct walk_digest *a, const struct walk_digest *b)
{
    return a->size == b->size && memcmp(a->hash, b->hash, BLOB_HASH_SIZE) == 0;
}

static int set_grow(struct rpc_walk *w)
{
    size_t cap = w->set_cap ? w->set_cap * 2 : 256;
    uint32_t *set = proto_alloc_calloc(mem(w), cap, sizeof(*set));
    if (!set) return -ENOMEM;
    for (size_t i = 0; i < w->tail; i++) {
        size_t s = (size_t)digest_hash(&w->queue[i]) & (cap - 1);
        while (set[s] != 0) {
            s = (s + 1) & (cap - 1);
        }
        set[s] = (uint32_t)(i + 1);
    }
    proto_alloc_free(mem(w), w->set);
    w->set = set;
    w->set_cap = cap;
    return 0;
}

/*
 * Queues <d> unless it was queued before. 0, or -ENOMEM / -E2BIG. Past visit_max with
 * cut_at_max, <d> is left out: the positions of those queued are those of the whole walk, as
 * any directory queued later would come after it.
 */
static int enqueue(struct rpc_walk *w, const struct walk_digest *d)
{
    if (w->tail >= w->visit_max) {
        if (!w->cut_at_max) return -E2BIG;
        w->cut = true;
        return 0;
    }
    if ((w->tail + 1) * 2 > w->set_cap && set_grow(w) < 0) return -ENOMEM;
    size_t s = (size_t)digest_hash(d) & (w->set_cap - 1);
    /* Bounded: the table is at most half full. */
    while (w->set[s] != 0) {
        if (digest_eq(&w->queue[w->set[s] - 1], d)) return 0;
        s = (s + 1) & (w->set_cap - 1);
    }
    if (w->tail == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        struct walk_digest *q = proto_alloc_realloc(mem(w), w->queue, cap * sizeof(*q));
        if (!q) return -ENOMEM;
        w->queue = q;
        w->cap = cap;
    }
    w->queue[w->tail] = *d;
    w->set[s] = (uint32_t)(w->tail + 1);
    w->tail++;
    return 0;
}

static void free_all(struct rpc_walk *w)
{
    rpc_fetch_release(&w->f);
    proto_alloc_free(mem(w), w->queue);
    proto_alloc_free(mem(w), w->set);
    w->queue = NULL;
    w->set = NULL;
    w->cap = 0;
    w->set_cap = 0;
}

static void end(struct rpc_walk *w, int res)
{
    w->ended = true;
    free_all(w);
    w->on_end(w, res);
}

static int queue_children(struct rpc_walk *w,
                          const Build__Bazel__Remote__Execution__V2__Directory *d)
{
    for (size_t i = 0; i < d->n_directories; i++) {
        const Build__Bazel__Remote__Execution__V2__Digest *cd = d->directories[i]->digest;
        struct walk_digest wd;
        if (!cd || !cd->hash || strlen(cd->hash) != (size_t)2 * BLOB_HASH_SIZE ||
            cd->size_bytes < 0 ||
            proto_hex_decode(cd->hash, (size_t)2 * BLOB_HASH_SIZE, wd.hash) < 0) {
            w->malformed++; /* not followed */
            continue;
        }
        wd.size = (uint64_t)cd->size_bytes;
        int rc = enqueue(w, &wd);
        if (rc < 0) return rc;
    }
    return 0;
}

static void step(struct rpc_walk *w);

/* The directory at queue[head] was read (or not): hand it over, queue its children. */
static int visit(struct rpc_walk *w, int res)
{
    size_t index = w->head++;
    if (res < 0) {
        /* A directory the server had no room to read (memory refused by --message-memory,
         * readers or the disk queue full, a drain) is not missing: the walk cannot go on
         * (skipping it would answer part of a tree as the whole). */
        if (index == 0 || res == -ENOMEM || res == -EAGAIN || res == -ECANCELED) return res;
        w->missing++;
        return 0;
    }
    ProtobufCAllocator *a = &w->rc->pb;
    const uint8_t *p = w->f.buf;
    uint64_t refusals = base_counter_get(&w->rc->pb_mem.failed);
    Build__Bazel__Remote__Execution__V2__Directory *d =
        build__bazel__remote__execution__v2__directory__unpack(a, w->f.len, p);
    /* NULL for memory refused (--message-memory) is no malformed directory to skip. */
    if (!d && base_counter_get(&w->rc->pb_mem.failed) != refusals) return -ENOMEM;
    if (!d && index > 0) w->malformed++;
    if (!d) return index == 0 ? -EBADMSG : 0;
    int rc = queue_children(w, d);
    if (rc == 0) rc = w->on_dir(w, p, w->f.len, d);
    build__bazel__remote__execution__v2__directory__free_unpacked(d, a);
    return rc;
}

static void fetched(struct rpc_fetch *f, int res)
{
    struct rpc_walk *w = f->ctx;
    w->fetching = false;
    int rc = visit(w, res);
    rpc_fetch_release(&w->f);
    if (rc < 0) {
        end(w, rc);
        return;
    }
    if (rc == 1) {
        w->paused = true;
        return;
    }
    step(w);
}

static void step(struct rpc_walk *w)
{
    /* Bounded by the queue: each turn visits one directory. */
    for (;;) {
        if (w->head == w->tail) {
            end(w, w->cut ? -E2BIG : 0);
            return;
        }
        const struct walk_digest *d = &w->queue[w->head];
        struct blob_key k;
        blob_key_cas(&k, d->hash, d->size);
        w->f.rc = w->rc;
        w->f.reserve = 0;
        w->f.max = w->dir_max;
        w->f.done = fetched;
        w->f.ctx = w;
        int rc = rpc_fetch_start(&w->f, &k, BLOB_ENCODING_IDENTITY);
        if (rc == 0) {
            w->fetching = true;
            return;
        }
        /* Not found (or refused) at once: account for it as a completion would. */
        rc = visit(w, rc);
        if (rc < 0) {
            end(w, rc);
            return;
        }
        if (rc == 1) {
            w->paused = true;
            return;
        }
    }
}

int rpc_walk_start(struct rpc_walk *w, const struct walk_digest *root)
{
    ASSERT(w->rc && w->on_dir && w->on_end);
    w->queue = NULL;
    w->set = NULL;
    w->head = 0;
    w->tail = 0;
    w->cap = 0;
    w->set_cap = 0;
    w->missing = 0;
    w->malformed = 0;
    w->cut = false;
    w->fetching = false;
    w->paused = false;
    w->ended = false;
    memset(&w->f, 0, sizeof(w->f));
    w->f.rc = w->rc;
    if (!w->rc->blob) return -ENOSYS;
    int rc = enqueue(w, root);
    if (rc < 0) {
        free_all(w);
        return rc;
    }
    const struct walk_digest *d = &w->queue[0];
    struct blob_key k;
    blob_key_cas(&k, d->hash, d->size);
    w->f.reserve = 0;
    w->f.max = w->dir_max;
    w->f.done = fetched;
    w->f.ctx = w;
    rc = rpc_fetch_start(&w->f, &k, BLOB_ENCODING_IDENTITY);
    if (rc < 0) {
        free_all(w);
        return rc;
    }
    w->fetching = true;
    return 0;
}

void rpc_walk_resume(struct rpc_walk *w)
{
    if (!w->paused || w->ended) return;
    w->paused = false;
    step(w);
}

void rpc_walk_stop(struct rpc_walk *w)
{
    if (w->ended || !w->rc || !w->f.rc) return;
    w->ended = true;
    if (w->fetching) rpc_fetch_cancel(&w->f);
    w->fetching = false;
    free_all(w);
}
