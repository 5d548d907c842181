/*
 * The store and the per-core engine: opening (recovery, the evictor), cores, lookups,
 * counters. Uploads live in upload.c, readers in reader.c, the segment writer in writer.c.
 *
 * Sections: keys, options, the store, cores, lookups, counters.
 */
#include "blob/store.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "blob/internal.h"

const uint8_t blob_empty_sha256[BLOB_HASH_SIZE] = {
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
};

void blob_key_cas(struct blob_key *k, const uint8_t hash[BLOB_HASH_SIZE], uint64_t size)
{
    memset(k, 0, sizeof(*k));
    k->kind = BLOB_KIND_CAS;
    k->digest_fn = BLOB_DIGEST_SHA256;
    memcpy(k->hash, hash, BLOB_HASH_SIZE);
    k->size = size;
}

void blob_key_ac(struct blob_key *k, const uint8_t key[BLOB_HASH_SIZE], uint64_t size)
{
    memset(k, 0, sizeof(*k));
    k->kind = BLOB_KIND_AC;
    k->digest_fn = BLOB_DIGEST_SHA256;
    memcpy(k->hash, key, BLOB_HASH_SIZE);
    k->size = size;
}

bool blob_key_is_empty(const struct blob_key *k)
{
    return k->kind == BLOB_KIND_CAS && (k->size == 0 || k->size == BLOB_SIZE_ANY) &&
           memcmp(k->hash, blob_empty_sha256, BLOB_HASH_SIZE) == 0;
}

/* ---- options ---- */

int blob_hash_from_hex(const char *hex, size_t len, uint8_t hash[BLOB_HASH_SIZE])
{
    if (len != (size_t)2 * BLOB_HASH_SIZE) return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = hex[i];
        int v;
        if (c >= '0' && c <= '9') {
            v = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            v = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            v = c - 'A' + 10;
        } else {
            return -EINVAL;
        }
        if (i % 2 == 0) {
            hash[i / 2] = (uint8_t)(v << 4);
        } else {
            hash[i / 2] = (uint8_t)(hash[i / 2] | v);
        }
    }
    return 0;
}

void blob_hash_to_hex(const uint8_t hash[BLOB_HASH_SIZE], char hex[2 * BLOB_HASH_SIZE + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < BLOB_HASH_SIZE; i++) {
        hex[2 * i] = digits[hash[i] >> 4];
        hex[2 * i + 1] = digits[hash[i] & 15];
    }
    hex[(size_t)2 * BLOB_HASH_SIZE] = '\0';
}

int blob_sync_parse(const char *name, enum blob_sync *out)
{
    if (strcmp(name, "group") == 0) {
        *out = BLOB_SYNC_GROUP;
    } else if (strcmp(name, "always") == 0) {
        *out = BLOB_SYNC_ALWAYS;
    } else if (strcmp(name, "none") == 0) {
        *out = BLOB_SYNC_NONE;
    } else {
        return -EINVAL;
    }
    return 0;
}

void blob_store_options_default(struct blob_store_options *o)
{
    memset(o, 0, sizeof(*o));
    o->max_size = 10ULL << 30;
    o->segment_size = 256ULL << 20;
    o->chunk_size = 256U << 10;
    o->zstd_level = 1;
    o->sync = BLOB_SYNC_GROUP;
    o->uploads_max = 1024;
    o->readers_max = 4096;
    o->disk_queue_max = 512;
    o->read_buffer_max = 256ULL << 20;
    o->zstd_memory_max = 256ULL << 20;
    o->read_ahead = 4;
    o->write_buffer_size = 2U << 20;
    o->cores_max = 1;
    o->direct_io = true;
    o->map_reads = true;
    o->evict_thread = true;
    o->evict_settle_ms = 10;
    o->io = NULL;
}

/* ---- the store ---- */

uint64_t blob_store_budget(const struct blob_store *s)
{
    return atomic_load(&s->budget);
}

uint64_t blob_store_limit(const struct blob_store *s)
{
    uint64_t reserve = (uint64_t)s->opts.cores_max * s->opts.segment_size;
    uint64_t budget = blob_store_budget(s);
    return budget > reserve ? budget - reserve : 0;
}

int blob_store_options_check(const struct blob_store_options *o, char *why, size_t why_size)
{
    uint32_t c = o->chunk_size;
    if (c < 4096 || c > (1U << 20) || (c & (c - 1)) != 0) {
        (void)snprintf(why, why_size, "--chunk-size %u: expected a power of two, 4KiB to 1MiB", c);
        return -EINVAL;
    }
    if (o->segment_size < 16ULL * BLOB_BLOCK_SIZE || o->segment_size > BLOB_SEG_SIZE_MAX ||
        o->segment_size < 4ULL * c) {
        (void)snprintf(why, why_size,
                       "--segment-size %llu: expected 64KiB..32GiB and at least 4 chunks "
                       "(--chunk-size %u)",
                       (unsigned long long)o->segment_size, c);
        return -EINVAL;
    }
    uint64_t least = 4 * o->segment_size * (o->cores_max ? o->cores_max : 1);
    if (o->max_size < least) {
        (void)snprintf(why, why_size,
                       "--max-size %llu is below 4 segments of %llu bytes per core (%llu): raise "
                       "--max-size, or lower --cores or --segment-size (at least 4 chunks: "
                       "lower --chunk-size with it)",
                       (unsigned long long)o->max_size, (unsigned long long)o->segment_size,
                       (unsigned long long)least);
        return -EINVAL;
    }
    if (o->write_buffer_size % BLOB_BLOCK_SIZE != 0 ||
        o->write_buffer_size < 2ULL * blob_chunk_record_bound(c) + 4ULL * BLOB_BLOCK_SIZE) {
        (void)snprintf(why, why_size,
                       "write buffer %u: expected a multiple of 4KiB above two chunks",
                       o->write_buffer_size);
        return -EINVAL;
    }
    /* One reader of a whole chunk: its record and decode buffers, as the pool sizes them. */
    uint64_t one_reader = blob_align_block(blob_chunk_record_bound(c)) + c;
    if (o->uploads_max == 0 || o->readers_max == 0 || o->disk_queue_max == 0 || o->cores_max == 0 ||
        o->read_buffer_max < one_reader || o->zstd_memory_max == 0) {
        (void)snprintf(why, why_size, "queue limits must be positive");
        return -EINVAL;
    }
    if (o->read_ahead == 0 || o->read_ahead > BLOB_READ_AHEAD_MAX) {
        (void)snprintf(why, why_size, "read-ahead %u: expected 1..%u chunks", o->read_ahead,
                       BLOB_READ_AHEAD_MAX);
        return -EINVAL;
    }
    if (o->zstd_level < BLOB_ZSTD_LEVEL_MIN || o->zstd_level > BLOB_ZSTD_LEVEL_MAX) {
        /* zstd itself takes any level: it would clamp or reinterpret it without a word. */
        (void)snprintf(why, why_size, "zstd level %d: expected %d..%d", o->zstd_level,
                       BLOB_ZSTD_LEVEL_MIN, BLOB_ZSTD_LEVEL_MAX);
        return -EINVAL;
    }
    return 0;
}

static uint32_t table_cap(const struct blob_store_options *o)
{
    uint64_t n = o->max_size / o->segment_size + 4ULL * o->cores_max + 16;
    uint32_t cap = 64;
    while (cap < 4 * n && cap < (1U << 24)) {
        cap *= 2;
    }
    return cap;
}

static void *evictor_main(void *arg);

static int store_start_evictor(struct blob_store *s)
{
    int rc = pthread_mutex_init(&s->evict_lock, NULL);
    ASSERT(rc == 0);
    /* The evictor's period is timed on the monotonic clock. */
    rc = base_clock_cond_init(&s->evict_cond);
    ASSERT(rc == 0);
    if (!s->opts.evict_thread) return 0;
    /* The thread starts with every signal blocked: SIGTERM belongs to the main thread's
     * sigwait, and a thread that let it through would end the process instead. */
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&s->evict_thread, NULL, evictor_main, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return -rc;
    s->evict_running = true;
    return 0;
}

/*
 * The first eviction pass, before serving. A store over its budget at start is one whose
 * --max-size was lowered (or mistyped: 90M for 90G) or whose disk shrank: the pass then
 * deletes what would take the serving store hours of uploads to evict, so it is said in the
 * log, where the operator who changed the flag looks, not only counted in /metrics.
 */
static void store_evict_at_open(struct blob_store *s)
{
    uint64_t used = blob_store_used(s);
    uint64_t blobs = blob_index_count(s->index);
    uint32_t segments = blob_store_evict(s);
    if (segments == 0) return;
    uint64_t evicted = atomic_load(&s->evicted_blobs);
    LOG_WARN("the store held %llu MiB, over its limit of %llu MiB (--max-size, less a segment "
             "per core; or the disk's room): evicted its %u oldest segments with %llu of its "
             "%llu blobs and action results",
             (unsigned long long)(used >> 20), (unsigned long long)(blob_store_limit(s) >> 20),
             segments, (unsigned long long)evicted, (unsigned long long)blobs);
}

int blob_store_open(const struct blob_store_options *o, struct blob_store **out, char *why,
                    size_t why_size)
{
    *out = NULL;
    if (why_size > 0) why[0] = '\0';
    int rc = blob_store_options_check(o, why, why_size);
    if (rc < 0) return rc;
    struct blob_store *s = calloc(1, sizeof(*s));
    if (!s) return -ENOMEM;
    s->opts = *o;
    s->dir = strdup(o->dir ? o->dir : ".");
    s->opts.dir = s->dir;
    s->chunk_shift = (uint32_t)__builtin_ctz(o->chunk_size);
    atomic_store(&s->commit_seq, 1);
    atomic_store(&s->budget, o->max_size);
    atomic_store(&s->ceiling, o->max_size);
    s->io = o->io;
    if (!s->io) {
        rc = s->dir ? blob_io_real_create(s->dir, &s->io) : -ENOMEM;
        if (rc == -EBUSY) {
            (void)snprintf(why, why_size,
                           "data folder %s is in use by another ringcas process (a server or "
                           "fsck): stop it, or give this one its own --dir",
                           s->dir);
            goto err_free;
        }
        if (rc < 0) {
            (void)snprintf(why, why_size, "cannot open data folder %s: %s", s->dir,
                           base_err_str(rc));
            goto err_free;
        }
        s->io_owned = true;
    }
    s->index = blob_index_create();
    if (!s->index || blob_segment_table_init(&s->segs, table_cap(o)) < 0) {
        (void)snprintf(why, why_size, "out of memory for the index");
        rc = -ENOMEM;
        goto err_index;
    }
    if (blob_refresh_table_init(s) < 0 || blob_uploading_init(&s->uploading) < 0) {
        (void)snprintf(why, why_size, "out of memory for the refresh and upload tables");
        rc = -ENOMEM;
        goto err_segs;
    }
    if (o->map_reads && s->io->map_ok) {
        /* A sealed segment runs past segment_size by its last record and footer at most. */
        uint64_t len = 2 * o->segment_size;
        blob_segment_table_map(&s->segs, len < BLOB_SEG_SIZE_MAX ? len : BLOB_SEG_SIZE_MAX);
    }
    rc = blob_recover_run(s, why, why_size);
    if (rc < 0) goto err_segs;
    store_evict_at_open(s);
    rc = store_start_evictor(s);
    if (rc < 0) {
        (void)snprintf(why, why_size, "cannot start the evictor thread: %s", base_err_str(rc));
        goto err_segs;
    }
    *out = s;
    return 0;

err_segs:
    blob_uploading_deinit(&s->uploading);
    blob_refresh_table_deinit(s);
    blob_segment_table_deinit(&s->segs, s->io);
err_index:
    blob_index_destroy(s->index);
    if (s->io_owned) blob_io_real_destroy(s->io);
err_free:
    free(s->dir);
    free(s);
    return rc;
}

void blob_store_close(struct blob_store *s)
{
    if (!s) return;
    ASSERT(atomic_load(&s->cores) == 0);
    /* Bounded: one per blob_core_deinit since open. */
    for (struct blob_core *bc = atomic_load(&s->retired); bc;) {
        struct blob_core *next = bc->retired_next;
        free(bc);
        bc = next;
    }
    if (s->evict_running) {
        pthread_mutex_lock(&s->evict_lock);
        s->evict_stop = true;
        pthread_cond_signal(&s->evict_cond);
        pthread_mutex_unlock(&s->evict_lock);
        pthread_join(s->evict_thread, NULL);
    }
    pthread_cond_destroy(&s->evict_cond);
    pthread_mutex_destroy(&s->evict_lock);
    blob_uploading_deinit(&s->uploading);
    blob_refresh_table_deinit(s);
    blob_segment_table_deinit(&s->segs, s->io);
    blob_index_destroy(s->index);
    if (s->io_owned) blob_io_real_destroy(s->io);
    free(s->dir);
    free(s);
}

void blob_store_changed(struct blob_store *s)
{
    if (!s->opts.evict_thread && !s->evict_held) {
        blob_store_evict(s);
        return;
    }
    pthread_mutex_lock(&s->evict_lock);
    s->evict_kick = true;
    pthread_cond_signal(&s->evict_cond);
    pthread_mutex_unlock(&s->evict_lock);
}

/*
 * The evictor also runs every EVICT_PERIOD_S seconds with no segment sealed: the file system
 * may fill (or free) under an idle store when it is shared, and the budget follows it.
 */
#define EVICT_PERIOD_S 5

static void *evictor_main(void *arg)
{
    struct blob_store *s = arg;
    base_log_set_thread_name("evictor");
    pthread_mutex_lock(&s->evict_lock);
    struct timespec due = base_clock_timespec(base_clock_now_ns() + EVICT_PERIOD_S * BASE_NS_PER_S);
    /* The evictor's loop: one pass per wake-up or period until close. */
    while (!s->evict_stop) {
        if (!s->evict_kick) {
            int rc = pthread_cond_timedwait(&s->evict_cond, &s->evict_lock, &due);
            if (rc != ETIMEDOUT) continue;
        }
        due = base_clock_timespec(base_clock_now_ns() + EVICT_PERIOD_S * BASE_NS_PER_S);
        s->evict_kick = false;
        pthread_mutex_unlock(&s->evict_lock);
        blob_store_evict(s);
        pthread_mutex_lock(&s->evict_lock);
    }
    pthread_mutex_unlock(&s->evict_lock);
    return NULL;
}

void blob_store_drop_corrupt(struct blob_store *s, const struct blob_key *k,
                             const struct blob_loc *loc, int err)
{
    if (blob_index_remove_at(s->index, k, loc->seg, loc->off8)) {
        atomic_fetch_add(&s->dropped_corrupt, 1);
    }
    if (err == -EIO) {
        LOG_WARN("the disk failed a read of a blob in segment %u at %llu (input/output error): "
                 "dropped from the index, so that it can be stored again; check the disk",
                 loc->seg, (unsigned long long)loc->off8 * 8);
        return;
    }
    LOG_WARN("corrupt record for a blob in segment %u at %llu: dropped from the index", loc->seg,
             (unsigned long long)loc->off8 * 8);
}

/* ---- cores ---- */

/*
 * Idle bytes a core's buffer pool keeps: an eighth of the read buffer budget (32 MiB by
 * default), and at least two whole chunks with their records.
 */
static uint64_t pool_idle_max(const struct blob_store_options *o)
{
    uint64_t least = 2ULL * (o->chunk_size + blob_chunk_record_bound(o->chunk_size));
    return o->read_buffer_max / 8 > least ? o->read_buffer_max / 8 : least;
}

int blob_core_init(struct blob_store *s, struct ring_core *core, struct blob_core **out)
{
    *out = NULL;
    struct blob_core *bc = calloc(1, sizeof(*bc));
    if (!bc) return -ENOMEM;
    bc->s = s;
    bc->ring = core;
    bc->index = core ? ring_core_index(core) : atomic_load(&s->cores);
    base_list_init(&bc->uploads);
    base_list_init(&bc->readers);
    base_list_init(&bc->refreshes);
    blob_refresh_init(bc);
    int rc = blob_chunk_ctx_init(&bc->zctx, s->opts.zstd_level, &bc->counters.zstd_bytes);
    bc->zbudget = (struct blob_zstd_budget){ .gauge = &bc->counters.zstd_bytes,
                                             .refused = &bc->counters.zstd_refused,
                                             .limit = s->opts.zstd_memory_max };
    if (rc < 0) goto err_free;
    uint32_t chunk = s->opts.chunk_size;
    rc = blob_pool_init(&bc->pool, chunk, blob_chunk_record_bound(chunk), pool_idle_max(&s->opts),
                        &bc->counters.pool_bytes, &bc->counters.bufs);
    if (rc < 0) goto err_zstd;
    rc = blob_writer_init(&bc->writer, bc, s->opts.write_buffer_size);
    if (rc < 0) goto err_pool;
    uint32_t n = atomic_fetch_add(&s->cores, 1);
    ASSERT(n < s->opts.cores_max);
    blob_writer_start(&bc->writer);
    *out = bc;
    return 0;

err_pool:
    blob_pool_deinit(&bc->pool);
err_zstd:
    blob_chunk_ctx_deinit(&bc->zctx);
err_free:
    free(bc);
    return rc;
}

void blob_core_quiesce(struct blob_core *bc)
{
    bc->quiescing = true;
    blob_refresh_cancel_all(bc);
    blob_writer_flush(&bc->writer);
}

bool blob_core_is_idle(const struct blob_core *bc)
{
    return blob_writer_is_idle(&bc->writer) && bc->disk_reads == 0 && bc->refreshes_len == 0 &&
           bc->rq.len == 0 && base_counter_get(&bc->counters.io_in_flight) == 0;
}

void blob_core_deinit(struct blob_core *bc)
{
    if (!bc) return;
    bool no_uploads = base_list_is_empty(&bc->uploads);
    bool no_readers = base_list_is_empty(&bc->readers);
    bool no_refreshes = base_list_is_empty(&bc->refreshes);
    ASSERT(no_uploads);
    ASSERT(no_readers);
    ASSERT(no_refreshes);
    blob_refresh_deinit(bc);
    blob_writer_deinit(&bc->writer);
    uint64_t taken = base_counter_get(&bc->counters.bufs);
    ASSERT(taken == 0);
    blob_pool_deinit(&bc->pool);
    blob_chunk_ctx_deinit(&bc->zctx);
    uint64_t zstd_left = base_counter_get(&bc->counters.zstd_bytes);
    ASSERT(zstd_left == 0);
    struct blob_store *s = bc->s;
    atomic_fetch_sub(&s->cores, 1);
    /* Other threads read the counters at any time (GET /metrics on another core renders every
     * core's) and nothing orders their last read before this: the struct stays until
     * blob_store_close, which runs once every thread that could read it has been joined. */
    struct blob_core *head = atomic_load(&s->retired);
    do {
        bc->retired_next = head;
    } while (!atomic_compare_exchange_weak(&s->retired, &head, bc));
}

void blob_core_segment_failed(struct blob_core *bc, uint64_t seq, int err)
{
    blob_upload_fail_segment(bc, seq, err);
}

/* ---- lookups ---- */

bool blob_store_lookup(struct blob_store *s, const struct blob_key *k, struct blob_index_value *out)
{
    if (k->kind == BLOB_KIND_CAS && k->size == BLOB_SIZE_UNKNOWN) return false;
    if (!blob_index_get(s->index, k, out)) return false;
    /* Entries of evicted segments are removed by the evictor; until then (and for chunks
     * in an older segment than the commit) liveness is checked here. */
    return blob_store_loc_is_alive(s, &out->loc);
}

bool blob_store_loc_is_alive(struct blob_store *s, const struct blob_loc *loc)
{
    if (!blob_segment_is_alive(&s->segs, loc->seg)) return false;
    return loc->span == 0 || blob_segment_is_alive(&s->segs, loc->seg - loc->span);
}

bool blob_core_lookup(struct blob_core *bc, const struct blob_key *k, struct blob_index_value *out,
                      bool *refreshing)
{
    *refreshing = false;
    if (blob_store_lookup(bc->s, k, out)) return true;
    if (k->kind == BLOB_KIND_CAS && k->size == BLOB_SIZE_UNKNOWN) return false;
    *refreshing = blob_refresh_find(bc->s, k, out);
    if (*refreshing) return true;
    /* A copy that landed on another core between the two looks above has left the table, and
     * it indexed the copy before it left (copy_index, then key_done): the index has it now.
     * Answered missing, a blob just reported present read NOT_FOUND for one request. */
    return blob_store_lookup(bc->s, k, out);
}

bool blob_store_is_cold(struct blob_store *s, const struct blob_index_value *v)
{
    uint64_t below = atomic_load(&s->segs.cold_below);
    uint32_t oldest = v->loc.seg - v->loc.span;
    return (uint64_t)oldest < below;
}

enum exists_mode {
    EXISTS_PLAIN,   /* a lookup */
    EXISTS_REFRESH, /* and a refresh of a cold blob, when one can be queued */
    EXISTS_KEEP,    /* and a cold blob that cannot be refreshed counts as missing */
};

static bool exists(struct blob_core *bc, const struct blob_key *k, enum exists_mode mode)
{
    if (blob_key_is_empty(k)) return true;
    if (k->kind != BLOB_KIND_CAS && k->kind != BLOB_KIND_AC) return false;
    struct blob_index_value v;
    bool refreshing;
    if (!blob_core_lookup(bc, k, &v, &refreshing)) return false;
    if (refreshing || mode == EXISTS_PLAIN || !blob_store_is_cold(bc->s, &v)) return true;
    if (blob_refresh_queue(bc, k, &v)) return true;
    if (mode == EXISTS_KEEP) return false;
    /* Not queued: by a bound (the blob is still where it was found, and goes with its segment:
     * docs/storage.md), or because eviction took its segment since the lookup above, and then
     * it is missing now, unless another core's refresh holds it. Answered present, a client
     * skipped an upload of a blob that was already gone. */
    return blob_core_lookup(bc, k, &v, &refreshing);
}

static size_t exists_many(struct blob_core *bc, const struct blob_key *keys, size_t count,
                          enum exists_mode mode, bool *present)
{
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        present[i] = exists(bc, &keys[i], mode);
        n += present[i] ? 1 : 0;
    }
    return n;
}

bool blob_exists(struct blob_core *bc, const struct blob_key *k, bool refresh)
{
    return exists(bc, k, refresh ? EXISTS_REFRESH : EXISTS_PLAIN);
}

size_t blob_exists_many(struct blob_core *bc, const struct blob_key *keys, size_t count,
                        bool refresh, bool *present)
{
    return exists_many(bc, keys, count, refresh ? EXISTS_REFRESH : EXISTS_PLAIN, present);
}

size_t blob_keep_many(struct blob_core *bc, const struct blob_key *keys, size_t count,
                      bool *present)
{
    return exists_many(bc, keys, count, EXISTS_KEEP, present);
}

int blob_stat(struct blob_core *bc, const struct blob_key *k, struct blob_info *out)
{
    memset(out, 0, sizeof(*out));
    if (blob_key_is_empty(k)) return 0;
    struct blob_index_value v;
    bool refreshing;
    if (!blob_core_lookup(bc, k, &v, &refreshing)) return -ENOENT;
    out->size = v.size;
    out->cold = refreshing || blob_store_is_cold(bc->s, &v);
    return 0;
}

/* ---- counters ---- */

const struct blob_counters *blob_core_counters(const struct blob_core *bc)
{
    return &bc->counters;
}

void blob_counters_add_to(const struct blob_counters *c, struct blob_counters_snapshot *out)
{
#define ADD_ONE(name, kind, help) out->name += base_counter_get(&c->name);
    BLOB_COUNTERS(ADD_ONE)
#undef ADD_ONE
}

void blob_store_stats(struct blob_store *s, struct blob_store_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->blobs = blob_index_count(s->index);
    out->index_bytes = blob_index_memory(s->index);
    out->disk_bytes = atomic_load(&s->segs.disk_bytes);
    out->held_bytes = atomic_load(&s->segs.held_bytes);
    out->budget_bytes = blob_store_budget(s);
    pthread_mutex_lock(&s->segs.lock);
    out->segments = s->segs.count;
    out->pinned_segments = s->segs.pinned;
    pthread_mutex_unlock(&s->segs.lock);
    out->evicted_segments = atomic_load(&s->evicted_segments);
    out->evicted_blobs = atomic_load(&s->evicted_blobs);
    out->dropped_corrupt = atomic_load(&s->dropped_corrupt);
    out->recovery_cuts = atomic_load(&s->recovery_cuts);
    out->read_only = blob_store_folder_read_only(s);
}
