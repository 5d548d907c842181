/*
 * Several cores on one store: the index and the segment table are shared, everything else is
 * per core. On the simulated disk two engines run from one thread (deterministic); on a real
 * folder two threads, each with its own io_uring and engine, upload and read at once, with
 * the evictor thread running.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/format.h"
#include "blob/internal.h"
#include "harness.h"

/* ---- two engines, one thread, the simulated disk ---- */

struct two {
    struct th t;           /* t.bc is core 0 */
    struct blob_core *bc1; /* core 1 */
};

static void two_open(struct two *w, uint64_t seed)
{
    th_options_small(&w->t.o);
    w->t.o.cores_max = 2;
    w->t.o.max_size = 32ULL << 20;
    th_open_sim(&w->t, seed);
    cr_assert(eq(int, blob_core_init(w->t.s, NULL, &w->bc1), 0));
    th_settle(&w->t);
}

static void two_close(struct two *w)
{
    th_settle(&w->t);
    blob_core_quiesce(w->bc1);
    th_settle(&w->t);
    blob_core_deinit(w->bc1);
    w->bc1 = NULL;
    th_close(&w->t);
}

/* Puts through core <bc> by swapping it into the harness. */
static int put_on(struct two *w, struct blob_core *bc, const struct blob_key *k, const void *d,
                  size_t n)
{
    struct blob_core *saved = w->t.bc;
    w->t.bc = bc;
    int rc = th_put(&w->t, k, d, n, 0, 0);
    w->t.bc = saved;
    return rc;
}

static int get_on(struct two *w, struct blob_core *bc, const struct blob_key *k, uint8_t **out,
                  size_t *n)
{
    struct blob_core *saved = w->t.bc;
    w->t.bc = bc;
    int rc = th_get(&w->t, k, 0, 0, out, n);
    w->t.bc = saved;
    return rc;
}

Test(blob_cores, a_blob_written_on_one_core_is_read_on_the_other)
{
    struct two w = { 0 };
    two_open(&w, 1);
    static uint8_t data[20000];
    th_fill(data, sizeof(data), 1, true);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    cr_assert(eq(int, put_on(&w, w.t.bc, &k, data, sizeof(data)), 0));
    cr_assert(blob_exists(w.bc1, &k, false));
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, get_on(&w, w.bc1, &k, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(data)));
    cr_assert(memcmp(out, data, n) == 0);
    free(out);
    /* The other core sees it present for uploads too. */
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(w.bc1, &k, 0, &u), -EEXIST));
    two_close(&w);
}

Test(blob_cores, each_core_appends_to_its_own_segment)
{
    struct two w = { 0 };
    two_open(&w, 2);
    cr_assert(eq(u64, blob_core_counters(w.t.bc)->segments_created.value, 1));
    cr_assert(eq(u64, blob_core_counters(w.bc1)->segments_created.value, 1));
    struct blob_store_stats st;
    blob_store_stats(w.t.s, &st);
    cr_assert(eq(u64, st.segments, 2));
    static uint8_t a[5000];
    static uint8_t b[5000];
    th_fill(a, sizeof(a), 2, false);
    th_fill(b, sizeof(b), 3, false);
    struct blob_key ka;
    struct blob_key kb;
    th_key_of(&ka, a, sizeof(a));
    th_key_of(&kb, b, sizeof(b));
    cr_assert(eq(int, put_on(&w, w.t.bc, &ka, a, sizeof(a)), 0));
    cr_assert(eq(int, put_on(&w, w.bc1, &kb, b, sizeof(b)), 0));
    cr_assert(gt(u64, blob_core_counters(w.t.bc)->bytes_stored.value, 0));
    cr_assert(gt(u64, blob_core_counters(w.bc1)->bytes_stored.value, 0));
    two_close(&w);
}

static uint64_t seg_of(struct two *w, const struct blob_key *k)
{
    struct blob_index_value v;
    cr_assert(blob_store_lookup(w->t.s, k, &v));
    return v.loc.seg;
}

Test(blob_cores, a_core_that_writes_little_writes_at_the_head_of_the_log)
{
    /* Segments are evicted in the order they opened. Core 1 writes one blob into the segment
     * it opened at start, then core 0 fills eight: what core 1 writes next must not go into
     * its old segment, which eviction would take before all of core 0's. */
    struct two w = { 0 };
    two_open(&w, 9);
    /* Core 1's two blobs fit its segment; each of core 0's takes one of 64 KiB. */
    static uint8_t data[10][60000];
    size_t len[10];
    struct blob_key k[10];
    for (int i = 0; i < 10; i++) {
        len[i] = i == 0 || i == 9 ? 20000 : sizeof(data[i]);
        th_fill(data[i], len[i], 100 + (uint64_t)i, false);
        th_key_of(&k[i], data[i], len[i]);
    }
    cr_assert(eq(int, put_on(&w, w.bc1, &k[0], data[0], len[0]), 0));
    for (int i = 1; i <= 8; i++)
        cr_assert(eq(int, put_on(&w, w.t.bc, &k[i], data[i], len[i]), 0));
    uint64_t newest = seg_of(&w, &k[8]);
    cr_assert(lt(u64, seg_of(&w, &k[0]), seg_of(&w, &k[1])));
    cr_assert(eq(u64, blob_core_counters(w.bc1)->segments_sealed.value, 0));
    cr_assert(eq(int, put_on(&w, w.bc1, &k[9], data[9], len[9]), 0));
    cr_assert(gt(u64, seg_of(&w, &k[9]), newest), "written behind core 0's segments");
    cr_assert(eq(u64, blob_core_counters(w.bc1)->segments_sealed.value, 1));
    cr_assert(eq(u64, blob_core_counters(w.bc1)->segments_created.value, 2));
    /* Sealed before it filled, it gave back what it reserved past its end when it opened. */
    char name[32];
    blob_format_seg_name(seg_of(&w, &k[0]), name, sizeof(name));
    uint64_t size;
    uint64_t blocks;
    cr_assert(eq(int, blob_io_sim_size(w.t.io, name, &size), 0));
    cr_assert(eq(int, blob_io_sim_blocks(w.t.io, name, &blocks), 0));
    cr_assert(lt(u64, size, 64 << 10));
    cr_assert(eq(u64, blocks, size), "%llu bytes reserved", (unsigned long long)blocks);
    /* Both read back, the old segment sealed with its blob in it. */
    for (int i = 0; i < 10; i += 9) {
        uint8_t *out;
        size_t n;
        cr_assert(eq(int, get_on(&w, w.bc1, &k[i], &out, &n), 0));
        cr_assert(eq(sz, n, len[i]));
        cr_assert(memcmp(out, data[i], n) == 0);
        free(out);
    }
    /* Cores that write in turn do not seal early: a segment each, filled. */
    uint64_t sealed0 = blob_core_counters(w.t.bc)->segments_sealed.value;
    uint64_t sealed1 = blob_core_counters(w.bc1)->segments_sealed.value;
    static uint8_t small[20][3000];
    for (int i = 0; i < 20; i++) {
        struct blob_key ks;
        th_fill(small[i], sizeof(small[i]), 500 + (uint64_t)i, false);
        th_key_of(&ks, small[i], sizeof(small[i]));
        cr_assert(eq(int, put_on(&w, i % 2 ? w.bc1 : w.t.bc, &ks, small[i], sizeof(small[i])), 0));
    }
    cr_assert(eq(u64, blob_core_counters(w.t.bc)->segments_sealed.value, sealed0));
    cr_assert(eq(u64, blob_core_counters(w.bc1)->segments_sealed.value, sealed1));
    two_close(&w);
}

Test(blob_cores, the_last_ac_commit_wins_across_cores_and_restarts)
{
    struct two w = { 0 };
    two_open(&w, 3);
    uint8_t key[BLOB_HASH_SIZE] = { 0x77 };
    struct blob_key k;
    for (int round = 0; round < 6; round++) {
        char v[32];
        int n = snprintf(v, sizeof(v), "value %d", round);
        blob_key_ac(&k, key, (uint64_t)n);
        struct blob_core *bc = round % 2 ? w.bc1 : w.t.bc;
        cr_assert(eq(int, put_on(&w, bc, &k, v, (size_t)n), 0));
    }
    blob_key_ac(&k, key, 0);
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, get_on(&w, w.t.bc, &k, &out, &n), 0));
    cr_assert(eq(sz, n, 7));
    cr_assert(memcmp(out, "value 5", 7) == 0);
    free(out);
    /* After a restart the highest commit number decides, whatever segment it is in. */
    th_settle(&w.t);
    blob_core_quiesce(w.bc1);
    th_settle(&w.t);
    blob_core_deinit(w.bc1);
    th_close_store(&w.t);
    cr_assert(eq(int, th_open_store(&w.t), 0));
    cr_assert(eq(int, blob_core_init(w.t.s, NULL, &w.bc1), 0));
    cr_assert(eq(int, get_on(&w, w.bc1, &k, &out, &n), 0));
    cr_assert(memcmp(out, "value 5", 7) == 0);
    free(out);
    two_close(&w);
}

Test(blob_cores, a_refresh_on_one_core_keeps_a_blob_written_on_the_other)
{
    struct two w = { 0 };
    th_options_small(&w.t.o);
    w.t.o.cores_max = 2;
    w.t.o.max_size = 2ULL << 20;
    th_open_sim(&w.t, 4);
    cr_assert(eq(int, blob_core_init(w.t.s, NULL, &w.bc1), 0));
    static uint8_t buf[8000];
    th_fill(buf, sizeof(buf), 4, false);
    struct blob_key hot;
    th_key_of(&hot, buf, sizeof(buf));
    cr_assert(eq(int, put_on(&w, w.t.bc, &hot, buf, sizeof(buf)), 0));
    for (uint64_t n = 0; n < 600; n++) {
        th_fill(buf, sizeof(buf), 100 + n, false);
        struct blob_key k;
        th_key_of(&k, buf, sizeof(buf));
        cr_assert(eq(int, put_on(&w, n % 2 ? w.bc1 : w.t.bc, &k, buf, sizeof(buf)), 0));
        if (n % 20 == 0) {
            cr_assert(blob_exists(w.bc1, &hot, true), "lost after %llu", (unsigned long long)n);
            th_settle(&w.t);
        }
    }
    struct blob_store_stats st;
    blob_store_stats(w.t.s, &st);
    cr_assert(gt(u64, st.evicted_segments, 5));
    cr_assert(blob_exists(w.t.bc, &hot, false));
    cr_assert(gt(u64, blob_core_counters(w.bc1)->refreshes.value, 0));
    two_close(&w);
}

/* ---- two threads, two rings, a real folder, the evictor thread ---- */

struct worker {
    struct blob_store *s;
    uint32_t index;
    int blobs;
    int errors;
    struct blob_key keys[64];
    pthread_barrier_t *start;
};

struct wait {
    bool done;
    int res;
};

static void wait_cb(void *ctx, int res)
{
    struct wait *w = ctx;
    w->done = true;
    w->res = res;
}

static void tick_until(struct ring_core *core, const bool *flag)
{
    for (int i = 0; i < 100000 && !*flag; i++) {
        if (ring_core_tick(core, 10) < 0) return;
    }
}

static int thread_put(struct ring_core *core, struct blob_core *bc, const struct blob_key *k,
                      const uint8_t *d, size_t n)
{
    struct blob_upload *u;
    int rc = blob_upload_begin(bc, k, 0, &u);
    if (rc < 0) return rc;
    struct wait a = { 0 };
    rc = blob_upload_append(u, d, n, wait_cb, &a);
    if (rc == -EINPROGRESS) {
        tick_until(core, &a.done);
        rc = a.res;
    }
    if (rc < 0) {
        blob_upload_abort(u);
        return rc;
    }
    struct wait c = { 0 };
    rc = blob_upload_commit(u, wait_cb, &c);
    if (rc < 0) return rc;
    tick_until(core, &c.done);
    return c.res;
}

/* A small ring of its own for a worker thread (core <index>), or NULL. */
static struct ring_core *thread_ring(uint32_t index)
{
    struct ring_core_options ro;
    ring_core_options_default(&ro);
    ro.recv_buf_count = 16;
    ro.recv_buf_size = 4096;
    struct ring_core *core;
    char why[256];
    return ring_core_create(&ro, index, &core, why, sizeof(why)) < 0 ? NULL : core;
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    struct ring_core *core = thread_ring(wk->index);
    if (!core) {
        wk->errors++;
        return NULL;
    }
    struct blob_core *bc;
    if (blob_core_init(wk->s, core, &bc) < 0) {
        wk->errors++;
        ring_core_destroy(core);
        return NULL;
    }
    pthread_barrier_wait(wk->start);
    uint8_t *buf = malloc(30000);
    for (int i = 0; i < wk->blobs; i++) {
        size_t n = 1000 + (size_t)i * 400;
        th_fill(buf, n, wk->index * 1000 + (uint64_t)i, i % 2);
        th_key_of(&wk->keys[i], buf, n);
        if (thread_put(core, bc, &wk->keys[i], buf, n) != 0) wk->errors++;
        if (!blob_exists(bc, &wk->keys[i], false)) wk->errors++;
    }
    free(buf);
    blob_core_quiesce(bc);
    for (int i = 0; i < 1000 && !blob_core_is_idle(bc); i++) {
        if (ring_core_tick(core, 10) < 0) break;
    }
    blob_core_deinit(bc);
    ring_core_destroy(core);
    return NULL;
}

/* Options of a two-core store with its evictor thread in a new folder made from <tmpl>
 * (<dir>: 64 bytes; real_remove removes it). */
static void real_options(char *dir, const char *tmpl, uint64_t max_size,
                         struct blob_store_options *o)
{
    snprintf(dir, 64, "%s", tmpl);
    cr_assert(ne(ptr, mkdtemp(dir), NULL));
    th_options_small(o);
    o->dir = dir;
    o->cores_max = 2;
    o->max_size = max_size;
    o->evict_thread = true;
}

static struct blob_store *real_open(const struct blob_store_options *o)
{
    struct blob_store *s;
    char why[256];
    cr_assert(eq(int, blob_store_open(o, &s, why, sizeof(why)), 0), "%s", why);
    return s;
}

static void real_remove(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert(eq(int, system(cmd), 0)); /* NOLINT(cert-env33-c): the test's own folder */
}

Test(blob_cores, two_threads_share_the_index_and_the_segment_table, .timeout = 120)
{
    char dir[64];
    struct blob_store_options o;
    real_options(dir, "/tmp/blobcores.XXXXXX", 64ULL << 20, &o);
    struct blob_store *s = real_open(&o);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    static struct worker wk[2];
    pthread_t th[2];
    for (uint32_t i = 0; i < 2; i++) {
        wk[i] = (struct worker){ .s = s, .index = i, .blobs = 60, .start = &start };
        cr_assert(eq(int, pthread_create(&th[i], NULL, worker_main, &wk[i]), 0));
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    cr_assert(eq(int, wk[0].errors + wk[1].errors, 0));
    struct blob_store_stats st;
    blob_store_stats(s, &st);
    cr_assert(eq(u64, st.blobs, 120));
    blob_store_close(s);
    /* And all of it comes back. */
    s = real_open(&o);
    blob_store_stats(s, &st);
    cr_assert(eq(u64, st.blobs, 120));
    blob_store_close(s);
    real_remove(dir);
}

Test(blob_cores, the_evictor_thread_keeps_a_real_store_within_budget, .timeout = 120)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 1ULL << 20;
    t.o.evict_thread = true;
    th_open_real(&t);
    static uint8_t buf[8000];
    for (uint64_t n = 0; n < 400; n++) {
        th_fill(buf, sizeof(buf), n, false);
        struct blob_key k;
        th_key_of(&k, buf, sizeof(buf));
        int rc = th_put(&t, &k, buf, sizeof(buf), 0, 0);
        /* The evictor runs beside: a put may find the store full for a moment. */
        cr_assert(rc == 0 || rc == -ENOSPC, "put %llu: %d", (unsigned long long)n, rc);
        if (rc == -ENOSPC) usleep(1000);
    }
    struct blob_store_stats st;
    /* Up to 10 s: the evictor is a thread of its own, and CI machines are shared. Until its
     * passes are over, not only until the disk is under --max-size: a pass goes on to its own
     * limit, below --max-size, and a segment it killed but has not let go of yet counts as
     * held, which th_close finds (a CI run failed so, with 61440 bytes held). The last puts
     * may leave the store over that limit without sealing a segment, which would wait for the
     * evictor's period (5 s): it is woken as a seal wakes it. Within the limit with nothing
     * held, no pass kills again, since nothing is written. */
    for (int i = 0; i < 2000; i++) {
        blob_store_stats(t.s, &st);
        bool over = blob_store_used(t.s) > blob_store_limit(t.s);
        if (st.disk_bytes <= t.o.max_size && st.held_bytes == 0 && !over) break;
        if (over) blob_store_changed(t.s);
        usleep(5000);
    }
    cr_assert(eq(u64, st.held_bytes, 0));
    cr_assert(le(u64, st.disk_bytes, t.o.max_size));
    cr_assert(gt(u64, st.evicted_segments, 0));
    th_close(&t);
}

/* ---- a core's counters outlive its engine ---- */

struct counting {
    struct blob_store *s;
    _Atomic(struct blob_core *) bc; /* published by the owner once its engine runs */
    atomic_bool deinited;           /* the owner's engine is deinitialised (relaxed: no order) */
    uint64_t reads;                 /* the reader's passes */
    int owner_errors;
    int reader_errors;
};

/* The owner: a core that writes a blob, then stops its engine while the reader reads on. */
static void *counting_owner(void *arg)
{
    struct counting *c = arg;
    struct ring_core *core = thread_ring(0);
    struct blob_core *bc;
    if (!core || blob_core_init(c->s, core, &bc) < 0) {
        c->owner_errors++;
        if (core) ring_core_destroy(core);
        atomic_store(&c->deinited, true);
        return NULL;
    }
    static uint8_t buf[5000];
    th_fill(buf, sizeof(buf), 7, false);
    struct blob_key k;
    th_key_of(&k, buf, sizeof(buf));
    if (thread_put(core, bc, &k, buf, sizeof(buf)) != 0) c->owner_errors++;
    atomic_store(&c->bc, bc);
    blob_core_quiesce(bc);
    for (int i = 0; i < 1000 && !blob_core_is_idle(bc); i++) {
        if (ring_core_tick(core, 10) < 0) break;
    }
    blob_core_deinit(bc);
    ring_core_destroy(core);
    atomic_store_explicit(&c->deinited, true, memory_order_relaxed);
    return NULL;
}

/* The reader: GET /metrics on another core, which sums every core's counters at any time. */
static void *counting_reader(void *arg)
{
    struct counting *c = arg;
    struct blob_core *bc;
    while (!(bc = atomic_load(&c->bc)) && !atomic_load(&c->deinited)) {
        usleep(100);
    }
    if (!bc) return NULL;
    /* Bounded: the owner ends within its tick bound; then a few passes more. */
    for (int after = 0; after < 100;) {
        struct blob_counters_snapshot snap = { 0 };
        blob_counters_add_to(blob_core_counters(bc), &snap);
        if (snap.blobs_committed != 1) c->reader_errors++;
        c->reads++;
        if (atomic_load_explicit(&c->deinited, memory_order_relaxed)) after++;
        usleep(50);
    }
    return NULL;
}

/*
 * Another core reads a core's counters whenever it renders GET /metrics, with nothing that
 * orders those reads before the core's shutdown: a core that deinitialises its engine while
 * the other still serves a scrape must leave the counters readable (they were freed with the
 * engine: a read after free, which ThreadSanitizer and AddressSanitizer both report).
 */
Test(blob_cores, a_cores_counters_stay_readable_after_its_engine_is_deinitialised, .timeout = 120)
{
    char dir[64];
    struct blob_store_options o;
    real_options(dir, "/tmp/blobcount.XXXXXX", 64ULL << 20, &o);
    static struct counting c;
    c = (struct counting){ .s = real_open(&o) };
    pthread_t owner;
    pthread_t reader;
    cr_assert(eq(int, pthread_create(&reader, NULL, counting_reader, &c), 0));
    cr_assert(eq(int, pthread_create(&owner, NULL, counting_owner, &c), 0));
    pthread_join(owner, NULL);
    pthread_join(reader, NULL);
    cr_assert(eq(int, c.owner_errors, 0));
    cr_assert(eq(int, c.reader_errors, 0));
    cr_assert(gt(u64, c.reads, 0));
    blob_store_close(c.s);
    real_remove(dir);
}

Test(blob_cores, readers_on_both_cores_of_blobs_from_both_cores)
{
    struct two w = { 0 };
    two_open(&w, 5);
    static uint8_t a[30000];
    static uint8_t b[30000];
    th_fill(a, sizeof(a), 50, true);
    th_fill(b, sizeof(b), 51, false);
    struct blob_key ka;
    struct blob_key kb;
    th_key_of(&ka, a, sizeof(a));
    th_key_of(&kb, b, sizeof(b));
    cr_assert(eq(int, put_on(&w, w.t.bc, &ka, a, sizeof(a)), 0));
    cr_assert(eq(int, put_on(&w, w.bc1, &kb, b, sizeof(b)), 0));
    struct blob_core *cores[2] = { w.t.bc, w.bc1 };
    for (int c = 0; c < 2; c++) {
        uint8_t *out;
        size_t n;
        cr_assert(eq(int, get_on(&w, cores[c], &ka, &out, &n), 0));
        cr_assert(memcmp(out, a, n) == 0);
        free(out);
        cr_assert(eq(int, get_on(&w, cores[c], &kb, &out, &n), 0));
        cr_assert(memcmp(out, b, n) == 0);
        free(out);
    }
    /* Readers count on the core that opened them. */
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(w.bc1, &ka, 0, 0, &r), 0));
    cr_assert(eq(u64, blob_core_counters(w.bc1)->readers.value, 1));
    cr_assert(eq(u64, blob_core_counters(w.t.bc)->readers.value, 0));
    blob_read_close(r);
    two_close(&w);
}

Test(blob_cores, uploads_of_the_same_blob_on_both_cores_both_succeed)
{
    struct two w = { 0 };
    two_open(&w, 6);
    static uint8_t d[12000];
    th_fill(d, sizeof(d), 60, true);
    struct blob_key k;
    th_key_of(&k, d, sizeof(d));
    /* Both begin before either commits: no -EEXIST, both commit, one entry. */
    struct blob_upload *u0;
    struct blob_upload *u1;
    cr_assert(eq(int, blob_upload_begin(w.t.bc, &k, 0, &u0), 0));
    cr_assert(eq(int, blob_upload_begin(w.bc1, &k, 0, &u1), 0));
    struct wait c0 = { 0 };
    struct wait c1 = { 0 };
    struct wait a0 = { 0 };
    struct wait a1 = { 0 };
    int rc = blob_upload_append(u0, d, sizeof(d), wait_cb, &a0);
    if (rc == -EINPROGRESS) cr_assert(th_run_until(&w.t, &a0.done));
    rc = blob_upload_append(u1, d, sizeof(d), wait_cb, &a1);
    if (rc == -EINPROGRESS) cr_assert(th_run_until(&w.t, &a1.done));
    cr_assert(eq(int, blob_upload_commit(u0, wait_cb, &c0), 0));
    cr_assert(eq(int, blob_upload_commit(u1, wait_cb, &c1), 0));
    cr_assert(th_run_until(&w.t, &c0.done));
    cr_assert(th_run_until(&w.t, &c1.done));
    cr_assert(eq(int, c0.res, 0));
    cr_assert(eq(int, c1.res, 0));
    struct blob_store_stats st;
    blob_store_stats(w.t.s, &st);
    cr_assert(eq(u64, st.blobs, 1));
    two_close(&w);
}

/* ---- two threads refresh and read each other's keys while the evictor runs ---- */

enum {
    HOT_N = 24,     /* keys both threads find present (refresh) and read */
    HOT_LEN = 3000, /* bytes each */
    STRESS_ROUNDS = 3000,
};

struct piece_wait {
    bool done;
    int res;
    const uint8_t *data;
    size_t len;
};

static void piece_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct piece_wait *p = ctx;
    p->done = true;
    p->res = res;
    p->data = data;
    p->len = len;
}

/* Reads <k> whole on <bc> into <out> (room for <room> bytes): 0 and *<n>, or the error. */
static int thread_get(struct ring_core *core, struct blob_core *bc, const struct blob_key *k,
                      uint8_t *out, size_t room, size_t *n)
{
    struct blob_reader *r;
    int rc = blob_read_open(bc, k, 0, BLOB_ENCODING_IDENTITY, &r);
    if (rc < 0) return rc;
    *n = 0;
    for (int i = 0; i < 10000; i++) { /* bounded: a few pieces, and -EAGAIN retries */
        struct piece_wait p = { 0 };
        rc = blob_read_next(r, piece_cb, &p);
        if (rc == -EAGAIN) {
            if (ring_core_tick(core, 1) < 0) break;
            continue;
        }
        if (rc < 0) break;
        tick_until(core, &p.done);
        if (!p.done) {
            rc = -ETIMEDOUT;
            break;
        }
        if (p.res == -EAGAIN) continue;
        rc = p.res == -ENOENT ? -ENODATA : p.res; /* evicted while open */
        if (rc < 0 || p.len == 0) break;
        if (*n + p.len > room) {
            rc = -EOVERFLOW;
            break;
        }
        memcpy(out + *n, p.data, p.len);
        *n += p.len;
    }
    blob_read_close(r);
    return rc;
}

struct hot_worker {
    struct blob_store *s;
    uint32_t index;
    const struct blob_key *hot; /* HOT_N keys, both threads' */
    int errors;                 /* wrong bytes, corrupt reads, failed puts */
    int missing;                /* reads of a key just found present that found nothing */
    int reads;                  /* reads that returned the blob whole */
    uint64_t refreshes;         /* this core's copies that landed */
    uint64_t full;              /* uploads and copies refused: over budget */
    uint64_t dropped;           /* refreshes not queued */
    uint64_t unpinned;          /* refreshes not pinned */
    int via_table;              /* reads opened while only a queued refresh found the key */
    pthread_barrier_t *start;
    _Atomic bool *writer_done; /* the other thread has finished its rounds */
    int missing_open;          /* of those, the ones that opened and lost the blob after */
    int err_line;              /* where the last error was counted */
    int err_rc;                /* and its result */
};

static void hot_fill(uint8_t *buf, uint32_t i)
{
    th_fill(buf, HOT_LEN, 7000 + i, i % 2 == 0);
}

#define HOT_ERR(wk, rc) ((wk)->errors++, (wk)->err_line = __LINE__, (wk)->err_rc = (rc))

static void *hot_main(void *arg)
{
    struct hot_worker *wk = arg;
    struct ring_core *core = thread_ring(wk->index);
    if (!core) {
        HOT_ERR(wk, -1);
        atomic_store(wk->writer_done, true); /* the other thread stops too */
        return NULL;
    }
    struct blob_core *bc;
    if (blob_core_init(wk->s, core, &bc) < 0) {
        HOT_ERR(wk, -3);
        atomic_store(wk->writer_done, true);
        ring_core_destroy(core);
        return NULL;
    }
    pthread_barrier_wait(wk->start);
    static _Thread_local uint8_t buf[8000];
    static _Thread_local uint8_t want[HOT_LEN];
    static _Thread_local uint8_t got[HOT_LEN + 100];
    uint64_t fills = 0;
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        /* Filler pushes the hot keys into the cold part, and eviction after it. */
        th_fill(buf, sizeof(buf), 100000 * (wk->index + 1) + fills++, false);
        struct blob_key f;
        th_key_of(&f, buf, sizeof(buf));
        int rc = thread_put(core, bc, &f, buf, sizeof(buf));
        if (rc != 0 && rc != -ENOSPC) HOT_ERR(wk, rc);
        /* A hit: the keys found present are queued for a copy on this core. */
        bool present[HOT_N];
        (void)blob_exists_many(bc, wk->hot, HOT_N, wk->index == 0, present);
        if (wk->index == 0) {
            /* A busy core: its queued copies wait while the other core writes on, the
             * evictor takes their segments, and the other core reads them. */
            usleep(10000 + (unsigned)(fills % 7) * 2000);
            for (int i = 0; i < 20; i++) {
                if (ring_core_tick(core, 0) < 0) HOT_ERR(wk, -4);
            }
            if (atomic_load(wk->writer_done)) break;
            round = 0; /* until the other thread is done */
            continue;
        }
        for (int extra = 0; extra < 6; extra++) {
            th_fill(buf, sizeof(buf), 900000 + 1000 * (uint64_t)round + (uint64_t)extra, false);
            th_key_of(&f, buf, sizeof(buf));
            rc = thread_put(core, bc, &f, buf, sizeof(buf));
            if (rc != 0 && rc != -ENOSPC) HOT_ERR(wk, rc);
        }
        usleep(300);
        (void)blob_exists_many(bc, wk->hot, HOT_N, false, present);
        for (uint32_t i = 0; i < HOT_N; i++) {
            if (present[i]) continue;
            hot_fill(want, i);
            rc = thread_put(core, bc, &wk->hot[i], want, HOT_LEN);
            if (rc != 0 && rc != -ENOSPC && rc != -EEXIST) HOT_ERR(wk, rc);
        }
        /* Read those that only the other core's queued copies still find (the index lost
         * them with their segment): a read of one the index finds would refresh it here. */
        for (uint32_t i = 0; i < HOT_N; i++) {
            struct blob_index_value v;
            struct blob_info info;
            if (!present[i] || blob_store_lookup(wk->s, &wk->hot[i], &v)) continue;
            if (blob_stat(bc, &wk->hot[i], &info) != 0) continue; /* not queued: may go */
            wk->via_table++;
            size_t n = 0;
            rc = thread_get(core, bc, &wk->hot[i], got, sizeof(got), &n);
            hot_fill(want, i);
            if (rc == -ENOENT || rc == -ENODATA) {
                wk->missing++;
                if (rc == -ENODATA) wk->missing_open++;
            } else if (rc != 0 || n != HOT_LEN || memcmp(got, want, HOT_LEN) != 0) {
                HOT_ERR(wk, rc);
            } else {
                wk->reads++;
            }
        }
        if (ring_core_tick(core, 0) < 0) HOT_ERR(wk, rc);
    }
    if (wk->index == 1) atomic_store(wk->writer_done, true);
    blob_core_quiesce(bc);
    for (int i = 0; i < 10000 && !blob_core_is_idle(bc); i++) {
        if (ring_core_tick(core, 10) < 0) break;
    }
    if (!blob_core_is_idle(bc)) HOT_ERR(wk, -2);
    wk->refreshes = blob_core_counters(bc)->refreshes.value;
    wk->full = blob_core_counters(bc)->full.value;
    wk->dropped = blob_core_counters(bc)->refreshes_dropped.value;
    wk->unpinned = blob_core_counters(bc)->refreshes_unpinned.value;
    blob_core_deinit(bc);
    ring_core_destroy(core);
    return NULL;
}

/*
 * Refresh on read across threads: thread 0 finds the cold keys present (queueing their copies
 * on its core) and then stays busy for a while, as a loaded core does; thread 1 writes on, the
 * evictor thread takes the keys' segments, and thread 1 reads every key that only thread 0's
 * queued copies still find (the store's table of keys being refreshed, and the segments those
 * copies pin), while thread 0's copies run and land and eviction goes on. Every such read
 * returns the exact bytes (ASan, TSan); both stop with keys still queued (quiesce) and the
 * store closes with no pin and the table empty. About 500 reads go through the table.
 */
Test(blob_cores, two_threads_refresh_and_read_the_same_cold_keys_while_evicting, .timeout = 240)
{
    char dir[64];
    struct blob_store_options o;
    real_options(dir, "/tmp/blobhot.XXXXXX", 1ULL << 20, &o);
    o.sync = BLOB_SYNC_NONE;
    struct blob_store *s = real_open(&o);
    static struct blob_key hot[HOT_N];
    static uint8_t d[HOT_LEN];
    for (uint32_t i = 0; i < HOT_N; i++) {
        hot_fill(d, i);
        th_key_of(&hot[i], d, HOT_LEN);
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    static struct hot_worker wk[2];
    static _Atomic bool writer_done;
    atomic_store(&writer_done, false);
    pthread_t th[2];
    for (uint32_t i = 0; i < 2; i++) {
        wk[i] = (struct hot_worker){
            .s = s, .index = i, .hot = hot, .start = &start, .writer_done = &writer_done
        };
        cr_assert(eq(int, pthread_create(&th[i], NULL, hot_main, &wk[i]), 0));
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    fprintf(stderr, "reads %d/%d, missing %d/%d, refreshes %llu/%llu\n", wk[0].reads, wk[1].reads,
            wk[0].missing, wk[1].missing, (unsigned long long)wk[0].refreshes,
            (unsigned long long)wk[1].refreshes);
    fprintf(stderr, "errors %d (line %d rc %d) / %d (line %d rc %d)\n", wk[0].errors,
            wk[0].err_line, wk[0].err_rc, wk[1].errors, wk[1].err_line, wk[1].err_rc);
    fprintf(stderr, "missing after open %d; core 0: full %llu dropped %llu unpinned %llu\n",
            wk[1].missing_open, (unsigned long long)wk[0].full, (unsigned long long)wk[0].dropped,
            (unsigned long long)wk[0].unpinned);
    fprintf(stderr, "found only through the refresh table: %d/%d\n", wk[0].via_table,
            wk[1].via_table);
    cr_assert(eq(int, wk[0].errors + wk[1].errors, 0));
    struct blob_store_stats st;
    blob_store_stats(s, &st);
    cr_assert(eq(u32, st.pinned_segments, 0));
    cr_assert(gt(u64, st.evicted_segments, 0));
    blob_store_close(s); /* asserts the table of keys being refreshed is empty */
    real_remove(dir);
}
