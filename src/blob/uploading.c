/*
 * The CAS blobs being uploaded, store-wide: a second upload of a blob while one is under way
 * is told so (blob_upload_begin_shared answers -EALREADY) and its caller waits for the first
 * one's end before it sends its bytes. Without it, CI runners building the same commit each
 * wrote a whole copy (16 concurrent PUTs of one 50 MB blob stored 800 MB) and the copies,
 * interleaved in the log, pushed out the segments of the one that was acknowledged first: the
 * index keeps the first copy of a CAS blob, and eviction takes the oldest segments.
 *
 * Fixed: BLOB_UPLOADING_KEYS entries in buckets of UPLOADING_BUCKET, each key in the first of
 * its two buckets with room, a lock per stripe of buckets. An entry counts the uploads of its
 * blob; a key without room is not entered (its upload runs unguarded, as before).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "blob/internal.h"

#define UPLOADING_BUCKET  16U
#define UPLOADING_BUCKETS (BLOB_UPLOADING_KEYS / UPLOADING_BUCKET)

STATIC_ASSERT(UPLOADING_BUCKETS % BLOB_UPLOADING_STRIPES == 0, "a bucket has one lock");

/* The <i>th (0 or 1) of <k>'s two buckets (blob_key_bucket). */
static uint32_t bucket_of(const struct blob_key *k, uint32_t i)
{
    return blob_key_bucket(k, 8, i, UPLOADING_BUCKETS);
}

static pthread_mutex_t *lock_of(struct blob_uploading *t, uint32_t bucket)
{
    return &t->locks[bucket % BLOB_UPLOADING_STRIPES];
}

static bool same(const struct blob_uploading_entry *e, const struct blob_key *k)
{
    return e->count > 0 && e->kind == k->kind && e->digest_fn == k->digest_fn &&
           memcmp(e->hash, k->hash, BLOB_HASH_SIZE) == 0;
}

int blob_uploading_init(struct blob_uploading *t)
{
    t->entries = calloc(BLOB_UPLOADING_KEYS, sizeof(*t->entries));
    if (!t->entries) return -ENOMEM;
    /* Bounded by BLOB_UPLOADING_STRIPES. */
    for (uint32_t i = 0; i < BLOB_UPLOADING_STRIPES; i++) {
        int rc = pthread_mutex_init(&t->locks[i], NULL);
        ASSERT(rc == 0);
    }
    return 0;
}

void blob_uploading_deinit(struct blob_uploading *t)
{
    if (!t->entries) return;
    /* Bounded by BLOB_UPLOADING_KEYS. */
    for (uint32_t i = 0; i < BLOB_UPLOADING_KEYS; i++) {
        ASSERT(t->entries[i].count == 0); /* every upload ended */
    }
    /* Bounded by BLOB_UPLOADING_STRIPES. */
    for (uint32_t i = 0; i < BLOB_UPLOADING_STRIPES; i++) {
        pthread_mutex_destroy(&t->locks[i]);
    }
    free(t->entries);
    t->entries = NULL;
}

/*
 * Finds <k>'s entry, or with <add> a free one for it, in the locked bucket <b>; NULL if
 * neither. The caller holds the bucket's lock.
 */
static struct blob_uploading_entry *find(struct blob_uploading *t, uint32_t b,
                                         const struct blob_key *k, bool add)
{
    struct blob_uploading_entry *e = &t->entries[(size_t)b * UPLOADING_BUCKET];
    struct blob_uploading_entry *free_one = NULL;
    /* Bounded by UPLOADING_BUCKET. */
    for (uint32_t i = 0; i < UPLOADING_BUCKET; i++) {
        if (same(&e[i], k)) return &e[i];
        if (!free_one && e[i].count == 0) free_one = &e[i];
    }
    return add ? free_one : NULL;
}

int blob_uploading_enter(struct blob_uploading *t, const struct blob_key *k, bool alone)
{
    /* Either bucket may hold the key: look in both before taking a free entry. */
    for (uint32_t c = 0; c < 2; c++) {
        uint32_t b = bucket_of(k, c);
        pthread_mutex_lock(lock_of(t, b));
        struct blob_uploading_entry *e = find(t, b, k, false);
        int rc = 0;
        if (e != NULL) {
            rc = alone ? 1 : -EALREADY;
            e->count += alone ? 1 : 0;
        }
        pthread_mutex_unlock(lock_of(t, b));
        if (rc != 0) return rc;
    }
    /* Bounded by the two buckets. */
    for (uint32_t c = 0; c < 2; c++) {
        uint32_t b = bucket_of(k, c);
        pthread_mutex_lock(lock_of(t, b));
        /* Another core may have entered the key since the look above: one entry per key. */
        struct blob_uploading_entry *e = find(t, b, k, true);
        int rc = 0;
        if (e && e->count > 0 && !alone) {
            rc = -EALREADY;
        } else if (e) {
            if (e->count == 0) {
                e->digest_fn = k->digest_fn;
                e->kind = k->kind;
                memcpy(e->hash, k->hash, BLOB_HASH_SIZE);
            }
            e->count++;
            rc = 1;
        }
        pthread_mutex_unlock(lock_of(t, b));
        if (e) return rc;
    }
    return 0; /* both buckets full: not entered */
}

void blob_uploading_leave(struct blob_uploading *t, const struct blob_key *k)
{
    /* Bounded by the two buckets. */
    for (uint32_t c = 0; c < 2; c++) {
        uint32_t b = bucket_of(k, c);
        pthread_mutex_lock(lock_of(t, b));
        struct blob_uploading_entry *e = find(t, b, k, false);
        if (e) e->count--;
        pthread_mutex_unlock(lock_of(t, b));
        if (e) return;
    }
    ASSERT(false); /* entered when its upload began */
}
