/*
 * Refresh on read: a blob found in the oldest part of the log (by a read, an existence check
 * with refresh, or the AC completeness check) is copied to this core's head before eviction
 * reaches it. The copy reads the stored chunk records and appends them as they are (no
 * decompression, no recompression), then a new commit record; once that is durable the index
 * entry moves, but only if it still points at the old copy.
 *
 * At most REFRESH_MAX refreshes run per core; more are skipped (the blob may be evicted, as
 * a cold blob would be). A refresh that fails leaves the old entry as it was.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blob/internal.h"

#define REFRESH_MAX 16U

struct blob_refresh {
    struct blob_core *bc;  /* owner */
    struct base_list link; /* on bc->refreshes */
    struct blob_key key;   /* the blob */
    struct blob_reader *r; /* reads the stored records */
    struct blob_upload *u; /* appends them */
    struct ring_task task; /* starts the copy outside the caller's call */
};

static void refresh_end(struct blob_refresh *f)
{
    struct blob_core *bc = f->bc;
    blob_read_close(f->r);
    if (f->u) blob_upload_abort(f->u);
    base_list_del(&f->link);
    ring_task_cancel(&f->task);
    free(f);
    bc->refreshes_len--;
    base_counter_dec(&bc->counters.refreshes_open);
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

static void refresh_start(struct ring_task *t)
{
    struct blob_refresh *f = BASE_CONTAINER_OF(t, struct blob_refresh, task);
    struct blob_index_value v;
    if (!blob_store_lookup(f->bc->s, &f->key, &v)) {
        refresh_end(f);
        return;
    }
    if (blob_read_open_records(f->bc, &f->key, &f->r) < 0) {
        refresh_end(f);
        return;
    }
    struct blob_key k = f->key;
    k.size = v.size;
    if (blob_upload_begin_copy(f->bc, &k, &v.loc, &f->u) < 0) {
        refresh_end(f);
        return;
    }
    refresh_next(f);
}

void blob_refresh_queue(struct blob_core *bc, const struct blob_key *k,
                        const struct blob_index_value *v)
{
    if (bc->refreshes_len >= REFRESH_MAX || bc->quiescing) return;
    BASE_LIST_FOR_EACH(it, &bc->refreshes)
    {
        struct blob_refresh *f = BASE_CONTAINER_OF(it, struct blob_refresh, link);
        if (f->key.kind == k->kind && memcmp(f->key.hash, k->hash, BLOB_HASH_SIZE) == 0) return;
    }
    struct blob_refresh *f = calloc(1, sizeof(*f));
    if (!f) return;
    f->bc = bc;
    f->key = *k;
    /* A lookup by hash alone found the blob: the copy names it by its real size, which the
     * index's conditional move matches exactly. */
    if (k->kind == BLOB_KIND_CAS) f->key.size = v->size;
    base_list_init(&f->link);
    ring_task_init(&f->task, refresh_start);
    base_list_add_tail(&bc->refreshes, &f->link);
    bc->refreshes_len++;
    base_counter_inc(&bc->counters.refreshes_open);
    blob_core_defer(bc, &f->task);
}

void blob_refresh_cancel_all(struct blob_core *bc)
{
    /* Only refreshes not yet started or idle between steps can end here; the others end
     * when their I/O completes (quiesce waits for them). */
    BASE_LIST_FOR_EACH_SAFE(it, tmp, &bc->refreshes)
    {
        struct blob_refresh *f = BASE_CONTAINER_OF(it, struct blob_refresh, link);
        if (!f->r) refresh_end(f);
    }
}
