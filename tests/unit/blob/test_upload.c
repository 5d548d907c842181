/*
 * Uploads in detail: every way of cutting the input into appends gives the same blob,
 * backpressure hands the data back only through the callback, a commit during a pending
 * append is refused, zstd uploads of several frames and of too much data, AC limits, many
 * uploads interleaved on one core, byte counters.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <zstd.h>

#include "blob/internal.h"
#include "harness.h"

Test(blob_upload, any_cut_of_the_input_gives_the_same_blob)
{
    struct th t = { 0 };
    th_open_sim(&t, 1);
    size_t len = 5 * 4096 + 123;
    uint8_t *data = malloc(len);
    th_fill(data, len, 1, true);
    struct blob_key k;
    th_key_of(&k, data, len);
    size_t pieces[] = { 1, 7, 4095, 4096, 4097, 10000 };
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        if (i > 0) {
            /* Upload under an AC key so it is not deduplicated. */
            struct blob_key ac;
            uint8_t key[BLOB_HASH_SIZE] = { (uint8_t)i };
            blob_key_ac(&ac, key, len);
            cr_assert(eq(int, th_put(&t, &ac, data, len, pieces[i], 0), 0));
            uint8_t *out;
            size_t n;
            blob_key_ac(&ac, key, 0);
            cr_assert(eq(int, th_get(&t, &ac, 0, 0, &out, &n), 0));
            cr_assert(eq(sz, n, len));
            cr_assert(memcmp(out, data, len) == 0, "pieces of %zu", pieces[i]);
            free(out);
        } else {
            cr_assert(eq(int, th_put(&t, &k, data, len, pieces[i], 0), 0));
        }
    }
    free(data);
    th_close(&t);
}

struct pending {
    bool done;
    int res;
};

static void pending_cb(void *ctx, int res)
{
    struct pending *p = ctx;
    p->done = true;
    p->res = res;
}

Test(blob_upload, backpressure_holds_the_data_until_the_callback)
{
    struct th t = { 0 };
    th_open_sim(&t, 2);
    th_settle(&t);
    size_t len = 300000;
    uint8_t *data = malloc(len);
    th_fill(data, len, 2, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), 0));
    struct pending p = { 0 };
    int rc = blob_upload_append(u, data, len, pending_cb, &p);
    cr_assert(eq(int, rc, -EINPROGRESS));
    cr_assert(not(p.done), "never inside the call");
    struct pending c = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &c), -EBUSY), "append pending");
    cr_assert(eq(int, blob_upload_append(u, data, 1, pending_cb, &c), -EBUSY));
    cr_assert(th_run_until(&t, &p.done));
    cr_assert(eq(int, p.res, 0));
    cr_assert(eq(u64, blob_upload_bytes_decoded(u), len));
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &c), 0));
    cr_assert(th_run_until(&t, &c.done));
    cr_assert(eq(int, c.res, 0));
    cr_assert(blob_exists(t.bc, &k, false));
    free(data);
    th_close(&t);
}

Test(blob_upload, zstd_streams_of_several_frames_are_accepted)
{
    struct th t = { 0 };
    th_open_sim(&t, 3);
    size_t len = 30000;
    uint8_t *data = malloc(len);
    th_fill(data, len, 3, true);
    struct blob_key k;
    th_key_of(&k, data, len);
    /* Two frames back to back, fed a few bytes at a time. */
    size_t cap = ZSTD_compressBound(len) * 2;
    uint8_t *z = malloc(cap);
    size_t a = ZSTD_compress(z, cap, data, 10000, 1);
    size_t b = ZSTD_compress(z + a, cap - a, data + 10000, len - 10000, 19);
    cr_assert(not(ZSTD_isError(a)));
    cr_assert(not(ZSTD_isError(b)));
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u), 0));
    for (size_t off = 0; off < a + b; off += 13) {
        size_t n = a + b - off < 13 ? a + b - off : 13;
        struct pending p = { 0 };
        int rc = blob_upload_append(u, z + off, n, pending_cb, &p);
        if (rc == -EINPROGRESS) {
            cr_assert(th_run_until(&t, &p.done));
            rc = p.res;
        }
        cr_assert(eq(int, rc, 0));
    }
    cr_assert(eq(u64, blob_upload_bytes_in(u), a + b));
    cr_assert(eq(u64, blob_upload_bytes_decoded(u), len));
    struct pending c = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &c), 0));
    cr_assert(th_run_until(&t, &c.done));
    cr_assert(eq(int, c.res, 0));
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0));
    cr_assert(memcmp(out, data, len) == 0);
    free(out);
    free(z);
    free(data);
    th_close(&t);
}

Test(blob_upload, a_zstd_stream_that_decodes_to_too_much_or_too_little_is_refused)
{
    struct th t = { 0 };
    th_open_sim(&t, 4);
    th_settle(&t);
    size_t len = 5000;
    uint8_t *data = malloc(len);
    th_fill(data, len, 4, true);
    static uint8_t z[8000];
    size_t zl = ZSTD_compress(z, sizeof(z), data, len, 1);
    struct blob_key k;
    th_key_of(&k, data, len - 1); /* claims one byte less */
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, z, zl, NULL, NULL), -EMSGSIZE));
    blob_upload_abort(u);
    /* A truncated stream: the frame never ends. It is malformed (-EBADMSG), not a size
     * mismatch, although it decoded fewer bytes than the size: it was cut (a client that
     * never flushed its compressor), and "size mismatch" names the wrong fault. */
    th_key_of(&k, data, len);
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, z, zl / 2, NULL, NULL), 0));
    struct pending c = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &c), 0));
    cr_assert(th_run_until(&t, &c.done));
    cr_assert(eq(int, c.res, -EBADMSG));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    /* A whole frame of fewer bytes is the size mismatch. */
    th_key_of(&k, data, len);
    k.size = len + 1;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, z, zl, NULL, NULL), 0));
    c = (struct pending){ 0 };
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &c), 0));
    cr_assert(th_run_until(&t, &c.done));
    cr_assert(eq(int, c.res, -EMSGSIZE));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    free(data);
    th_close(&t);
}

/* A zstd frame of <len> zero bytes with a window of 2^<wlog> and no content size. */
static size_t zstd_window_frame(uint8_t *z, size_t cap, const uint8_t *data, size_t len, int wlog)
{
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    cr_assert(ne(ptr, cc, NULL));
    cr_assert(not(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_windowLog, wlog))));
    cr_assert(not(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0))));
    ZSTD_outBuffer out = { z, cap, 0 };
    /* Fed in two steps: given all of it at once, zstd would shrink the window to the data. */
    ZSTD_inBuffer in = { data, len / 2, 0 };
    cr_assert(not(ZSTD_isError(ZSTD_compressStream2(cc, &out, &in, ZSTD_e_continue))));
    in = (ZSTD_inBuffer){ data, len, in.pos };
    size_t left = ZSTD_compressStream2(cc, &out, &in, ZSTD_e_end);
    cr_assert(eq(sz, left, 0));
    ZSTD_freeCCtx(cc);
    return out.pos;
}

Test(blob_upload, zstd_windows_are_bounded_by_the_cores_zstd_memory)
{
    /* A frame may declare a 128 MiB window in a few bytes: each upload's decoder would hold
     * that much. The core's zstd memory limit refuses the window instead (-ENOMEM: retry). */
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.zstd_memory_max = 48ULL << 20;
    th_open_sim(&t, 5);
    th_settle(&t);
    size_t len = 100000;
    uint8_t *data = calloc(1, len);
    static uint8_t big[4096];
    static uint8_t small[4096];
    size_t bl = zstd_window_frame(big, sizeof(big), data, len, 25); /* 32 MiB */
    size_t sl = zstd_window_frame(small, sizeof(small), data, len, 17);
    struct blob_key k;
    th_key_of(&k, data, len);
    struct blob_upload *u1;
    struct blob_upload *u2;
    struct blob_upload *u3;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u1), 0));
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u2), 0));
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u3), 0));
    /* The first 32 MiB window fits, the second does not; a small window still does. */
    cr_assert(eq(int, blob_upload_append(u1, big, bl - 1, NULL, NULL), 0));
    const struct blob_counters *c = blob_core_counters(t.bc);
    cr_assert(gt(u64, base_counter_get(&c->zstd_bytes), 32ULL << 20));
    cr_assert(eq(int, blob_upload_append(u2, big, bl - 1, NULL, NULL), -ENOMEM));
    cr_assert(eq(u64, base_counter_get(&c->zstd_refused), 1));
    blob_upload_abort(u2);
    cr_assert(eq(int, blob_upload_append(u3, small, sl, NULL, NULL), 0));
    blob_upload_abort(u3);
    /* The first goes on to the end and is stored. */
    cr_assert(eq(int, blob_upload_append(u1, big + bl - 1, 1, NULL, NULL), 0));
    struct pending p = { 0 };
    cr_assert(eq(int, blob_upload_commit(u1, pending_cb, &p), 0));
    cr_assert(th_run_until(&t, &p.done));
    cr_assert(eq(int, p.res, 0));
    cr_assert(blob_exists(t.bc, &k, false));
    free(data);
    th_close(&t);
}

Test(blob_upload, ac_values_have_a_size_limit_and_kinds_are_checked)
{
    struct th t = { 0 };
    th_open_sim(&t, 5);
    uint8_t key[BLOB_HASH_SIZE] = { 1 };
    struct blob_key k;
    blob_key_ac(&k, key, (64ULL << 20) + 1);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), -EINVAL));
    blob_key_ac(&k, key, 10);
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 2, &u), -EINVAL), "unknown encoding");
    k.digest_fn = 3;
    k.kind = BLOB_KIND_CAS;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), -EINVAL), "unknown digest");
    th_close(&t);
}

struct job {
    struct blob_upload *u;
    uint8_t *data;
    size_t len;
    size_t fed;
    bool waiting;
    bool committed;
    bool done;
    int res;
};

static void job_append_cb(void *ctx, int res)
{
    struct job *j = ctx;
    j->waiting = false;
    cr_assert(eq(int, res, 0));
}

static void job_commit_cb(void *ctx, int res)
{
    struct job *j = ctx;
    j->done = true;
    j->res = res;
}

Test(blob_upload, many_uploads_interleave_on_one_core)
{
    struct th t = { 0 };
    th_open_sim(&t, 6);

    enum {
        N = 24
    };
    static struct job jobs[N];
    struct blob_key keys[N];
    for (int i = 0; i < N; i++) {
        jobs[i].len = 1000 + (size_t)i * 1500;
        jobs[i].data = malloc(jobs[i].len);
        th_fill(jobs[i].data, jobs[i].len, 100 + (uint64_t)i, i % 2);
        th_key_of(&keys[i], jobs[i].data, jobs[i].len);
        cr_assert(eq(int, blob_upload_begin(t.bc, &keys[i], 0, &jobs[i].u), 0));
    }
    for (int round = 0; round < 10000; round++) {
        int left = 0;
        for (int i = 0; i < N; i++) {
            struct job *j = &jobs[i];
            if (j->done) continue;
            left++;
            if (j->waiting || j->committed) continue;
            if (j->fed < j->len) {
                size_t n = j->len - j->fed < 777 ? j->len - j->fed : 777;
                int rc = blob_upload_append(j->u, j->data + j->fed, n, job_append_cb, j);
                j->fed += n;
                j->waiting = rc == -EINPROGRESS;
                cr_assert(rc == 0 || rc == -EINPROGRESS);
            } else {
                j->committed = true;
                cr_assert(eq(int, blob_upload_commit(j->u, job_commit_cb, j), 0));
            }
        }
        if (left == 0) break;
        blob_io_sim_run(t.io, 3);
    }
    for (int i = 0; i < N; i++) {
        cr_assert(jobs[i].done);
        cr_assert(eq(int, jobs[i].res, 0));
        uint8_t *out;
        size_t n;
        cr_assert(eq(int, th_get(&t, &keys[i], 0, 0, &out, &n), 0));
        cr_assert(eq(sz, n, jobs[i].len));
        cr_assert(memcmp(out, jobs[i].data, n) == 0);
        free(out);
        free(jobs[i].data);
    }
    cr_assert(eq(u64, th_counters(&t).blobs_committed, N));
    th_close(&t);
}

Test(blob_upload, a_quiescing_core_takes_no_new_uploads)
{
    struct th t = { 0 };
    th_open_sim(&t, 7);
    blob_core_quiesce(t.bc);
    uint8_t b = 1;
    struct blob_key k;
    th_key_of(&k, &b, 1);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), -ECANCELED));
    th_close(&t);
}

Test(blob_upload, counters_follow_the_bytes)
{
    struct th t = { 0 };
    th_open_sim(&t, 8);
    static uint8_t data[9000];
    th_fill(data, sizeof(data), 9, true);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 1000, 0), 0));
    struct blob_counters_snapshot c = th_counters(&t);
    cr_assert(eq(u64, c.blobs_committed, 1));
    cr_assert(eq(u64, c.bytes_in, sizeof(data)));
    cr_assert(gt(u64, c.bytes_stored, 0));
    cr_assert(gt(u64, c.zstd_bytes, 0));
    cr_assert(eq(u64, c.uploads, 0));
    th_close(&t);
}

Test(blob_upload, empty_appends_are_harmless_and_errors_stick)
{
    struct th t = { 0 };
    th_open_sim(&t, 9);
    th_settle(&t);
    static uint8_t data[3000];
    th_fill(data, sizeof(data), 10, true);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, data, 0, NULL, NULL), 0));
    cr_assert(eq(int, blob_upload_append(u, data, sizeof(data), NULL, NULL), 0));
    cr_assert(eq(int, blob_upload_append(u, data, 0, NULL, NULL), 0));
    cr_assert(eq(int, blob_upload_append(u, data, 1, NULL, NULL), -EMSGSIZE));
    cr_assert(eq(int, blob_upload_append(u, data, 1, NULL, NULL), -EMSGSIZE), "it sticks");
    struct pending c = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &c), 0));
    cr_assert(th_run_until(&t, &c.done));
    cr_assert(eq(int, c.res, -EMSGSIZE), "the commit reports the upload's error");
    cr_assert(not(blob_exists(t.bc, &k, false)));
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    th_close(&t);
}

Test(blob_upload, identity_counts_bytes_in_and_decoded_alike)
{
    struct th t = { 0 };
    th_open_sim(&t, 11);
    th_settle(&t);
    static uint8_t data[9000];
    th_fill(data, sizeof(data), 12, false);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), 0));
    cr_assert(eq(u64, blob_upload_bytes_in(u), 0));
    cr_assert(eq(int, blob_upload_append(u, data, 4000, NULL, NULL), 0));
    cr_assert(eq(u64, blob_upload_bytes_in(u), 4000));
    cr_assert(eq(u64, blob_upload_bytes_decoded(u), 4000));
    blob_upload_abort(u);
    blob_upload_abort(NULL);
    th_close(&t);
}

Test(blob_upload, a_chunk_that_fits_is_taken_without_a_copy)
{
    /* Whole-chunk appends go straight from the caller's memory: the chunk buffer stays
     * empty, so an abort right after leaves nothing half-taken. */
    struct th t = { 0 };
    th_open_sim(&t, 13);
    th_settle(&t);
    size_t len = 8 * 4096;
    uint8_t *data = malloc(len);
    th_fill(data, len, 14, true);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 4096, 0), 0));
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, len));
    cr_assert(memcmp(out, data, len) == 0);
    free(out);
    /* And misaligned pieces around whole chunks. */
    th_fill(data, len, 15, true);
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 4096 * 3 + 1, 0), 0));
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0));
    cr_assert(memcmp(out, data, len) == 0);
    free(out);
    free(data);
    th_close(&t);
}

Test(blob_upload, a_large_zstd_upload_streams_with_backpressure)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.segment_size = 1 << 20;
    t.o.max_size = 64 << 20;
    th_open_sim(&t, 16);
    size_t len = 2 << 20;
    uint8_t *data = malloc(len);
    th_fill(data, len, 17, true);
    th_fill(data + len / 2, len / 4, 18, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    size_t cap = ZSTD_compressBound(len);
    uint8_t *z = malloc(cap);
    size_t zl = ZSTD_compress(z, cap, data, len, 1);
    cr_assert(not(ZSTD_isError(zl)));
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u), 0));
    int waited = 0;
    for (size_t off = 0; off < zl; off += 65536) {
        size_t n = zl - off < 65536 ? zl - off : 65536;
        struct pending p = { 0 };
        int rc = blob_upload_append(u, z + off, n, pending_cb, &p);
        if (rc == -EINPROGRESS) {
            waited++;
            cr_assert(th_run_until(&t, &p.done));
            rc = p.res;
        }
        cr_assert(eq(int, rc, 0));
    }
    cr_assert(gt(int, waited, 0), "a 2 MiB blob never met a full buffer");
    struct pending c = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &c), 0));
    cr_assert(th_run_until(&t, &c.done));
    cr_assert(eq(int, c.res, 0));
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &k, 12345, 1, &out, &n), 0));
    cr_assert(eq(sz, n, len - 12345));
    cr_assert(memcmp(out, data + 12345, n) == 0);
    free(out);
    free(z);
    free(data);
    th_close(&t);
}

Test(blob_upload, the_upload_limit_frees_up_as_uploads_end)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.uploads_max = 3;
    th_open_sim(&t, 17);
    th_settle(&t);
    for (int round = 0; round < 5; round++) {
        struct blob_upload *u[3];
        struct blob_key k[3];
        static uint8_t d[3][100];
        for (int i = 0; i < 3; i++) {
            th_fill(d[i], 100, (uint64_t)(round * 10 + i), true);
            th_key_of(&k[i], d[i], 100);
            cr_assert(eq(int, blob_upload_begin(t.bc, &k[i], 0, &u[i]), 0));
        }
        struct blob_upload *extra;
        cr_assert(eq(int, blob_upload_begin(t.bc, &k[0], 0, &extra), -EAGAIN));
        /* One commits, one aborts, one commits with a wrong size. */
        cr_assert(eq(int, blob_upload_append(u[0], d[0], 100, NULL, NULL), 0));
        struct pending c0 = { 0 };
        cr_assert(eq(int, blob_upload_commit(u[0], pending_cb, &c0), 0));
        blob_upload_abort(u[1]);
        struct pending c2 = { 0 };
        cr_assert(eq(int, blob_upload_commit(u[2], pending_cb, &c2), 0));
        cr_assert(th_run_until(&t, &c0.done));
        cr_assert(th_run_until(&t, &c2.done));
        cr_assert(eq(int, c0.res, 0));
        cr_assert(eq(int, c2.res, -EMSGSIZE));
        th_settle(&t);
        cr_assert(eq(u64, th_counters(&t).uploads, 0));
    }
    th_close(&t);
}

/* ---- uploads of unknown size (BLOB_SIZE_UNKNOWN) ---- */

static void unsized_key(struct blob_key *k, const uint8_t *data, size_t len)
{
    th_key_of(k, data, len);
    k->size = BLOB_SIZE_UNKNOWN;
}

static void check_blob(struct th *t, const uint8_t *data, size_t len)
{
    struct blob_key k;
    th_key_of(&k, data, len);
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t->bc, &k, &info), 0), "found at its exact size %zu", len);
    cr_assert(eq(u64, info.size, len));
    for (int enc = 0; enc <= 1; enc++) {
        uint8_t *out;
        size_t n;
        cr_assert(eq(int, th_get(t, &k, 0, enc, &out, &n), 0));
        cr_assert(eq(sz, n, len));
        cr_assert(len == 0 || memcmp(out, data, len) == 0, "bytes of %zu", len);
        free(out);
    }
}

Test(blob_upload, unknown_size_uploads_take_the_size_that_arrived)
{
    struct th t = { 0 };
    th_open_sim(&t, 20);
    size_t sizes[] = { 1, 4095, 4096, 4097, 2 * 4096, 3 * 4096 + 17, 70000 };
    size_t pieces[] = { 0, 1, 1000, 4096, 9000 };
    uint8_t *data = malloc(70000);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t len = sizes[i];
        size_t piece = pieces[i % 5];
        th_fill(data, len, 2000 + i, i % 2 == 0);
        struct blob_key k;
        unsized_key(&k, data, len);
        cr_assert(eq(int, th_put(&t, &k, data, len, piece, BLOB_ENCODING_IDENTITY), 0),
                  "%zu bytes in pieces of %zu", len, piece);
        check_blob(&t, data, len);
        /* Present now, at its size: a second unknown-size upload of it ends at once. */
        struct blob_upload *u;
        cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), -EEXIST));
    }
    cr_assert(eq(u64, th_counters(&t).blobs_committed, sizeof(sizes) / sizeof(sizes[0])));
    th_reopen(&t); /* the commit records hold the final sizes */
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        th_fill(data, sizes[i], 2000 + i, i % 2 == 0);
        check_blob(&t, data, sizes[i]);
    }
    free(data);
    th_close(&t);
}

Test(blob_upload, unknown_size_ac_values_and_the_empty_blob)
{
    struct th t = { 0 };
    th_open_sim(&t, 21);
    uint8_t key[BLOB_HASH_SIZE] = { 0xac, 21 };
    struct blob_key k;
    blob_key_ac(&k, key, BLOB_SIZE_UNKNOWN);
    static uint8_t data[9000];
    th_fill(data, sizeof(data), 21, true);
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 1234, BLOB_ENCODING_IDENTITY), 0));
    cr_assert(eq(int, th_put(&t, &k, data, 0, 0, BLOB_ENCODING_IDENTITY), 0), "an empty value");
    blob_key_ac(&k, key, 0);
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0));
    cr_assert(eq(u64, info.size, 0), "the newest value is the empty one");
    /* The empty blob is always present, at any size. */
    struct blob_key e;
    blob_key_cas(&e, blob_empty_sha256, BLOB_SIZE_UNKNOWN);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &e, BLOB_ENCODING_IDENTITY, &u), -EEXIST));
    /* Nothing arrived for a blob that is not empty: a digest mismatch. */
    unsized_key(&e, data, 10);
    cr_assert(eq(int, th_put(&t, &e, data, 0, 0, BLOB_ENCODING_IDENTITY), -EILSEQ));
    th_close(&t);
}

Test(blob_upload, unknown_size_digest_mismatch_stores_nothing)
{
    struct th t = { 0 };
    th_open_sim(&t, 22);
    size_t len = 30000;
    uint8_t *data = malloc(len);
    th_fill(data, len, 22, false);
    struct blob_key k;
    unsized_key(&k, data, len);
    uint64_t stored = th_counters(&t).bytes_stored;
    data[len - 1] ^= 1;
    cr_assert(eq(int, th_put(&t, &k, data, len, 5000, BLOB_ENCODING_IDENTITY), -EILSEQ));
    data[len - 1] ^= 1;
    k.size = BLOB_SIZE_ANY;
    cr_assert(not(blob_exists(t.bc, &k, false)));
    /* One byte short or over is another blob, and refused the same way. */
    k.size = BLOB_SIZE_UNKNOWN;
    cr_assert(eq(int, th_put(&t, &k, data, len - 1, 0, BLOB_ENCODING_IDENTITY), -EILSEQ));
    k.size = BLOB_SIZE_ANY;
    cr_assert(not(blob_exists(t.bc, &k, false)));
    cr_assert(eq(u64, th_counters(&t).digest_mismatches, 2));
    cr_assert(gt(u64, th_counters(&t).bytes_stored, stored), "the chunks streamed to disk");
    th_reopen(&t); /* and recovery finds no commit either */
    cr_assert(not(blob_exists(t.bc, &k, false)));
    free(data);
    th_close(&t);
}

Test(blob_upload, unknown_size_zstd_uploads_are_verified_after_decoding)
{
    struct th t = { 0 };
    th_open_sim(&t, 23);
    size_t len = 50000;
    uint8_t *data = malloc(len);
    th_fill(data, len, 23, true);
    /* Two frames, the first without a declared size, fed in odd pieces. */
    ZSTD_CCtx *c = ZSTD_createCCtx();
    static uint8_t z[120000];
    ZSTD_CCtx_setParameter(c, ZSTD_c_contentSizeFlag, 0);
    ZSTD_outBuffer o = { z, sizeof(z), 0 };
    ZSTD_inBuffer in = { data, 20000, 0 };
    cr_assert(eq(sz, ZSTD_compressStream2(c, &o, &in, ZSTD_e_end), 0));
    size_t zl = o.pos + ZSTD_compress(z + o.pos, sizeof(z) - o.pos, data + 20000, len - 20000, 3);
    ZSTD_freeCCtx(c);
    struct blob_key k;
    unsized_key(&k, data, len);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u), 0));
    for (size_t off = 0; off < zl; off += 333) {
        size_t n = zl - off < 333 ? zl - off : 333;
        struct pending p = { 0 };
        int rc = blob_upload_append(u, z + off, n, pending_cb, &p);
        if (rc == -EINPROGRESS) {
            cr_assert(th_run_until(&t, &p.done));
            rc = p.res;
        }
        cr_assert(eq(int, rc, 0));
    }
    cr_assert(eq(u64, blob_upload_bytes_in(u), zl));
    cr_assert(eq(u64, blob_upload_bytes_decoded(u), len));
    struct pending p = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &p), 0));
    cr_assert(th_run_until(&t, &p.done));
    cr_assert(eq(int, p.res, 0));
    check_blob(&t, data, len);
    /* A truncated stream never ends its frame; a stream of another blob fails its digest. */
    uint8_t key[BLOB_HASH_SIZE] = { 0xac, 23 };
    struct blob_key ac;
    blob_key_ac(&ac, key, BLOB_SIZE_UNKNOWN);
    cr_assert(eq(int, blob_upload_begin(t.bc, &ac, BLOB_ENCODING_ZSTD, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, z, zl - 5, NULL, NULL), 0));
    p.done = false;
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &p), 0));
    cr_assert(th_run_until(&t, &p.done));
    cr_assert(eq(int, p.res, -EBADMSG));
    blob_key_ac(&ac, key, 0);
    cr_assert(not(blob_exists(t.bc, &ac, false)));
    k.hash[0] ^= 1;
    cr_assert(eq(int, th_put(&t, &k, data, len, 4000, BLOB_ENCODING_ZSTD), -EILSEQ));
    free(data);
    th_close(&t);
}

/* Appends <len> bytes at <data> to <u> in pieces of <piece>; returns the first error. */
static int feed(struct th *t, struct blob_upload *u, const uint8_t *data, size_t len, size_t piece)
{
    for (size_t off = 0; off < len; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        struct pending p = { 0 };
        int rc = blob_upload_append(u, data + off, n, pending_cb, &p);
        if (rc == -EINPROGRESS) {
            cr_assert(th_run_until(t, &p.done));
            rc = p.res;
        }
        if (rc < 0) return rc;
    }
    return 0;
}

Test(blob_upload, unknown_size_uploads_stop_at_the_largest_blob_the_store_takes)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 1 << 20; /* blobs up to 256 KiB */
    th_open_sim(&t, 24);
    size_t limit = 256 << 10;
    uint8_t *data = malloc(limit + 1);
    th_fill(data, limit + 1, 24, false);
    struct blob_key k;
    unsized_key(&k, data, limit);
    cr_assert(eq(int, th_put(&t, &k, data, limit, 10000, BLOB_ENCODING_IDENTITY), 0));
    check_blob(&t, data, limit);
    unsized_key(&k, data, limit + 1);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), 0));
    cr_assert(eq(int, feed(&t, u, data, limit + 1, 10000), -EMSGSIZE));
    cr_assert(eq(int, blob_upload_append(u, data, 1, NULL, NULL), -EMSGSIZE), "the error sticks");
    blob_upload_abort(u);
    /* AC values the same; and as zstd, the decoded bytes count. */
    uint8_t key[BLOB_HASH_SIZE] = { 0xac, 24 };
    struct blob_key ac;
    blob_key_ac(&ac, key, BLOB_SIZE_UNKNOWN);
    cr_assert(eq(int, blob_upload_begin(t.bc, &ac, BLOB_ENCODING_IDENTITY, &u), 0));
    cr_assert(eq(int, feed(&t, u, data, limit + 1, 4096), -EMSGSIZE));
    blob_upload_abort(u);
    size_t zb = ZSTD_compressBound(limit + 1);
    uint8_t *z = malloc(zb);
    size_t zl = ZSTD_compress(z, zb, data, limit + 1, 1);
    cr_assert(eq(int, blob_upload_begin(t.bc, &ac, BLOB_ENCODING_ZSTD, &u), 0));
    cr_assert(eq(int, feed(&t, u, z, zl, 7000), -EMSGSIZE));
    blob_upload_abort(u);
    blob_key_ac(&ac, key, 0);
    cr_assert(not(blob_exists(t.bc, &ac, false)));
    free(z);
    free(data);
    th_close(&t);
}

Test(blob_upload, unknown_size_zstd_input_is_bounded_even_when_it_decodes_to_nothing)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 1 << 20; /* blobs up to 256 KiB: compressed input up to 1.5 MiB */
    th_open_sim(&t, 25);
    /* Skippable frames (RFC 8878 §3.1.2): valid zstd that decodes to no byte at all. */
    static uint8_t skip[8 + 65536];
    uint32_t magic = 0x184D2A50;
    uint32_t n = 65536;
    memcpy(skip, &magic, 4);
    memcpy(skip + 4, &n, 4);
    uint8_t key[BLOB_HASH_SIZE] = { 0xac, 25 };
    struct blob_key ac;
    blob_key_ac(&ac, key, BLOB_SIZE_UNKNOWN);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &ac, BLOB_ENCODING_ZSTD, &u), 0));
    int rc = 0;
    int frames = 0;
    for (; frames < 100 && rc == 0; frames++)
        rc = blob_upload_append(u, skip, sizeof(skip), NULL, NULL);
    cr_assert(eq(int, rc, -EMSGSIZE));
    cr_assert(eq(int, frames, 24), "stopped past 1.5 MiB of input, not before");
    cr_assert(eq(u64, blob_upload_bytes_decoded(u), 0));
    blob_upload_abort(u);
    th_close(&t);
}

/*
 * The same bound holds for an upload whose size is named (a ByteStream compressed-blobs
 * Write): before, only unknown sizes were bounded, and a Write naming a 1000-byte blob took
 * 200 MB of skippable frames, decoding to nothing, for as long as its client sent them.
 */
Test(blob_upload, sized_zstd_input_is_bounded_even_when_it_decodes_to_nothing)
{
    struct th t = { 0 };
    th_open_sim(&t, 26);
    th_settle(&t);
    static uint8_t skip[8 + 65536];
    uint32_t magic = 0x184D2A50;
    uint32_t n = 65536;
    memcpy(skip, &magic, 4);
    memcpy(skip + 4, &n, 4);
    uint8_t data[1000];
    th_fill(data, sizeof(data), 26, false);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data)); /* compressed input up to 2 * 1000 bytes + 1 MiB */
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u), 0));
    int rc = 0;
    int frames = 0;
    for (; frames < 100 && rc == 0; frames++)
        rc = blob_upload_append(u, skip, sizeof(skip), NULL, NULL);
    cr_assert(eq(int, rc, -EMSGSIZE));
    cr_assert(eq(int, frames, 17), "stopped past 1 MiB + 2000 bytes of input, not before");
    cr_assert(eq(u64, blob_upload_bytes_decoded(u), 0));
    blob_upload_abort(u);
    /* A real stream of the blob after skippable frames within the bound is taken. */
    static uint8_t z[2048];
    size_t zl = ZSTD_compress(z, sizeof(z), data, sizeof(data), 1);
    cr_assert(not(ZSTD_isError(zl)));
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_ZSTD, &u), 0));
    for (int i = 0; i < 15; i++)
        cr_assert(eq(int, blob_upload_append(u, skip, sizeof(skip), NULL, NULL), 0));
    cr_assert(eq(int, blob_upload_append(u, z, zl, NULL, NULL), 0));
    struct pending c = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, pending_cb, &c), 0));
    cr_assert(th_run_until(&t, &c.done));
    cr_assert(eq(int, c.res, 0));
    cr_assert(blob_exists(t.bc, &k, false));
    th_close(&t);
}

Test(blob_upload, unknown_size_uploads_meet_the_budget_as_data_arrives)
{
    struct th t = { 0 };
    th_open_sim(&t, 26);
    size_t len = 40000;
    uint8_t *data = malloc(len);
    th_fill(data, len, 26, false);
    struct blob_key k;
    unsized_key(&k, data, len);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), 0));
    cr_assert(eq(int, feed(&t, u, data, 10000, 10000), 0));
    /* Eviction falls behind: the store is over its budget while the upload streams. */
    uint64_t real = atomic_load(&t.s->segs.disk_bytes);
    atomic_store(&t.s->segs.disk_bytes, t.o.max_size + 1);
    uint64_t full = th_counters(&t).full;
    cr_assert(eq(int, feed(&t, u, data + 10000, len - 10000, 10000), -ENOSPC));
    cr_assert(eq(u64, th_counters(&t).full, full + 1));
    blob_upload_abort(u);
    /* A new upload of unknown size is refused at once, as any other. */
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), -ENOSPC));
    atomic_store(&t.s->segs.disk_bytes, real);
    k.size = BLOB_SIZE_ANY;
    cr_assert(not(blob_exists(t.bc, &k, false)));
    k.size = BLOB_SIZE_UNKNOWN;
    cr_assert(eq(int, th_put(&t, &k, data, len, 7000, BLOB_ENCODING_IDENTITY), 0));
    check_blob(&t, data, len);
    free(data);
    th_close(&t);
}

Test(blob_upload, an_aborted_unknown_size_upload_releases_everything)
{
    struct th t = { 0 };
    th_open_sim(&t, 27);
    size_t len = 30000;
    uint8_t *data = malloc(len);
    th_fill(data, len, 27, true);
    struct blob_key k;
    unsized_key(&k, data, len);
    for (int enc = 0; enc <= 1; enc++) {
        struct blob_upload *u;
        cr_assert(eq(int, blob_upload_begin(t.bc, &k, enc, &u), 0));
        const uint8_t *feed_data = data;
        size_t feed_len = len;
        static uint8_t z[40000];
        if (enc == BLOB_ENCODING_ZSTD) {
            feed_len = ZSTD_compress(z, sizeof(z), data, len, 1) / 2;
            feed_data = z;
        }
        cr_assert(eq(int, feed(&t, u, feed_data, feed_len, 5000), 0));
        cr_assert(eq(u64, th_counters(&t).uploads, 1));
        blob_upload_abort(u);
    }
    k.size = BLOB_SIZE_ANY;
    cr_assert(not(blob_exists(t.bc, &k, false)));
    cr_assert(eq(u64, th_counters(&t).uploads_aborted, 2));
    free(data);
    th_close(&t); /* uploads, buffers, zstd memory and I/O back to zero */
}

/* Appends <len> bytes to <u> (they fit the write buffer) and commits; the commit's result. */
static int commit_small(struct th *t, struct blob_upload *u, const void *data, size_t len)
{
    struct pending p = { 0 };
    int rc = blob_upload_append(u, data, len, pending_cb, &p);
    if (rc == -EINPROGRESS) {
        cr_assert(th_run_until(t, &p.done));
        rc = p.res;
    }
    cr_assert(eq(int, rc, 0));
    struct job j = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, job_commit_cb, &j), 0));
    cr_assert(th_run_until(t, &j.done));
    return j.res;
}

/* The value of AC key <name>, read back; it must be present. */
static void check_ac(struct th *t, const uint8_t *name, const void *want, size_t len)
{
    struct blob_key k;
    blob_key_ac(&k, name, 0);
    uint8_t *got = NULL;
    size_t got_len = 0;
    cr_assert(eq(int, th_get(t, &k, 0, BLOB_ENCODING_IDENTITY, &got, &got_len), 0));
    cr_assert(eq(sz, got_len, len));
    cr_assert(eq(int, memcmp(got, want, len), 0));
    free(got);
}

Test(blob_upload, create_only_uploads_succeed_once_and_a_refused_one_leaves_no_record)
{
    struct th t = { 0 };
    th_open_sim(&t, 31);
    uint8_t name[BLOB_HASH_SIZE] = { 0xc4, 31 };
    static const uint8_t a[] = "create-only A", b[] = "plain B", c[] = "create-only C";
    struct blob_key ka, kb, kc;
    blob_key_ac(&ka, name, sizeof(a));
    blob_key_ac(&kb, name, sizeof(b));
    blob_key_ac(&kc, name, sizeof(c));
    struct blob_upload *ua = NULL;
    struct blob_upload *uc = NULL;
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &ka, BLOB_ENCODING_IDENTITY, &ua), 0));
    /* Another create-only upload of the key waits for A: nothing begun. */
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &kc, BLOB_ENCODING_IDENTITY, &uc), -EALREADY));
    cr_assert(eq(ptr, uc, NULL));
    /* A plain upload does not wait, and commits first. */
    cr_assert(eq(int, th_put(&t, &kb, b, sizeof(b), 0, BLOB_ENCODING_IDENTITY), 0));
    /* A's commit finds the key: refused, and B stays. */
    cr_assert(eq(int, commit_small(&t, ua, a, sizeof(a)), -EEXIST));
    check_ac(&t, name, b, sizeof(b));
    /* A left the table: C is told the key is there. */
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &kc, BLOB_ENCODING_IDENTITY, &uc), -EEXIST));
    /* Recovery keeps an AC key's highest commit number: A wrote no commit record, or its
     * value (committed after B's) would come back over the one acknowledged. */
    th_reopen(&t);
    check_ac(&t, name, b, sizeof(b));
    /* An absent key: the first create-only upload stores, the next is refused at begin. */
    uint8_t other[BLOB_HASH_SIZE] = { 0xc4, 32 };
    blob_key_ac(&ka, other, sizeof(a));
    blob_key_ac(&kc, other, sizeof(c));
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &ka, BLOB_ENCODING_IDENTITY, &ua), 0));
    cr_assert(eq(int, commit_small(&t, ua, a, sizeof(a)), 0));
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &kc, BLOB_ENCODING_IDENTITY, &uc), -EEXIST));
    check_ac(&t, other, a, sizeof(a));
    /* An aborted create-only upload lets the next one begin. */
    uint8_t third[BLOB_HASH_SIZE] = { 0xc4, 33 };
    blob_key_ac(&ka, third, sizeof(a));
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &ka, BLOB_ENCODING_IDENTITY, &ua), 0));
    blob_upload_abort(ua);
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &ka, BLOB_ENCODING_IDENTITY, &ua), 0));
    blob_upload_abort(ua);
    /* Only action-cache keys. */
    struct blob_key cas;
    th_key_of(&cas, a, sizeof(a));
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &cas, BLOB_ENCODING_IDENTITY, &ua), -EINVAL));
    th_close(&t);
}

/*
 * The table of keys being uploaded holds CAS blobs and create-only AC keys: one kind never
 * waits for the other, though an action's digest and a blob's may be the same hash (the
 * Action message stored in the CAS under the digest its AC entry is keyed by).
 */
Test(blob_upload, an_ac_key_and_a_cas_blob_of_one_hash_do_not_wait_for_each_other)
{
    struct th t = { 0 };
    th_open_sim(&t, 34);
    static const uint8_t action[] = "an Action message";
    struct blob_key cas;
    th_key_of(&cas, action, sizeof(action));
    struct blob_key ac;
    blob_key_ac(&ac, cas.hash, 10);
    struct blob_upload *u_ac = NULL;
    struct blob_upload *u_cas = NULL;
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &ac, BLOB_ENCODING_IDENTITY, &u_ac), 0));
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &cas, BLOB_ENCODING_IDENTITY, &u_cas), 0),
              "a CAS upload waited for a create-only AC upload of the same hash");
    blob_upload_abort(u_ac);
    /* And the other way round. */
    cr_assert(eq(int, blob_upload_begin_create(t.bc, &ac, BLOB_ENCODING_IDENTITY, &u_ac), 0),
              "a create-only AC upload waited for a CAS upload of the same hash");
    blob_upload_abort(u_ac);
    blob_upload_abort(u_cas);
    th_close(&t);
}
