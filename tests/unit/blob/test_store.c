/*
 * The public API end to end on the simulated disk (and once on a real folder and ring):
 * round trips of every interesting size, reads at every chunk boundary, digest mismatch,
 * abort, AC overwrite, existence checks, admission, counters back to zero.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "harness.h"

#define CHUNK 4096U

static void round_trip(struct th *t, size_t len, bool compressible, size_t piece)
{
    uint8_t *data = malloc(len + 1);
    th_fill(data, len, len * 31 + compressible, compressible);
    struct blob_key k;
    th_key_of(&k, data, len);
    int rc = th_put(t, &k, data, len, piece, BLOB_ENCODING_IDENTITY);
    if (len == 0) {
        cr_assert(eq(int, rc, -EEXIST), "the empty blob is always present");
    } else {
        cr_assert(eq(int, rc, 0), "put %zu: %d", len, rc);
    }
    cr_assert(blob_exists(t->bc, &k, false));
    uint8_t *out = NULL;
    size_t out_len = 0;
    cr_assert(eq(int, th_get(t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &out_len), 0));
    cr_assert(eq(sz, out_len, len));
    cr_assert(len == 0 || memcmp(out, data, len) == 0, "identity bytes differ (%zu)", len);
    free(out);
    out = NULL;
    cr_assert(eq(int, th_get(t, &k, 0, BLOB_ENCODING_ZSTD, &out, &out_len), 0));
    cr_assert(eq(sz, out_len, len));
    cr_assert(len == 0 || memcmp(out, data, len) == 0, "zstd bytes differ (%zu)", len);
    free(out);
    free(data);
}

Test(blob_store, round_trips_every_interesting_size)
{
    struct th t = { 0 };
    th_open_sim(&t, 1);
    size_t sizes[] = { 0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 40000 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        round_trip(&t, sizes[i], true, 0);
        round_trip(&t, sizes[i], false, 1000);
    }
    th_close(&t);
}

Test(blob_store, round_trips_on_a_real_folder_and_ring)
{
    struct th t = { 0 };
    th_open_real(&t);
    size_t sizes[] = { 1, CHUNK - 1, CHUNK, CHUNK + 1, 200000 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        round_trip(&t, sizes[i], true, 777);
        round_trip(&t, sizes[i], false, 0);
    }
    th_reopen(&t);
    uint8_t *data = malloc(200000);
    th_fill(data, 200000, 200000 * 31 + 1, true);
    struct blob_key k;
    th_key_of(&k, data, 200000);
    cr_assert(blob_exists(t.bc, &k, false), "a committed blob survives a restart");
    free(data);
    th_close(&t);
}

/* 100 MiB, compressible and random, with production-sized chunks and segments. */
Test(blob_store, round_trips_100_mib, .timeout = 240)
{
    struct th t = { 0 };
    blob_store_options_default(&t.o);
    t.o.max_size = 2ULL << 30;
    t.o.segment_size = 64ULL << 20;
    t.o.evict_thread = false;
    th_open_real(&t);
    size_t len = 100U << 20;
    uint8_t *data = malloc(len);
    for (int compressible = 1; compressible >= 0; compressible--) {
        th_fill(data, len, 7 + compressible, compressible);
        struct blob_key k;
        th_key_of(&k, data, len);
        cr_assert(eq(int, th_put(&t, &k, data, len, 1 << 20, BLOB_ENCODING_IDENTITY), 0));
        uint8_t *out;
        size_t out_len;
        cr_assert(eq(int, th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &out_len), 0));
        cr_assert(eq(sz, out_len, len));
        cr_assert(memcmp(out, data, len) == 0);
        free(out);
    }
    free(data);
    th_close(&t);
}

Test(blob_store, reads_at_every_chunk_boundary)
{
    struct th t = { 0 };
    th_open_sim(&t, 2);
    size_t len = 5 * CHUNK + 100;
    uint8_t *data = malloc(len);
    th_fill(data, len, 3, true);
    /* One chunk raw: random bytes in the middle. */
    th_fill(data + 2 * CHUNK, CHUNK, 4, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 0, BLOB_ENCODING_IDENTITY), 0));
    for (size_t c = 0; c <= 6; c++) {
        for (int d = -1; d <= 1; d++) {
            int64_t off = (int64_t)(c * CHUNK) + d;
            if (off < 0 || (uint64_t)off > len) continue;
            for (int enc = 0; enc <= 1; enc++) {
                uint8_t *out = NULL;
                size_t out_len = 0;
                int rc = th_get(&t, &k, (uint64_t)off, enc, &out, &out_len);
                cr_assert(eq(int, rc, 0), "offset %lld enc %d", (long long)off, enc);
                cr_assert(eq(sz, out_len, len - (size_t)off));
                cr_assert(out_len == 0 || memcmp(out, data + off, out_len) == 0,
                          "offset %lld enc %d", (long long)off, enc);
                free(out);
            }
        }
    }
    uint8_t *out;
    size_t out_len;
    cr_assert(eq(int, th_get(&t, &k, len + 1, 0, &out, &out_len), -ERANGE));
    free(data);
    th_close(&t);
}

Test(blob_store, digest_mismatch_leaves_nothing_visible)
{
    struct th t = { 0 };
    th_open_sim(&t, 3);
    static uint8_t data[10000];
    th_fill(data, sizeof(data), 5, true);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    k.hash[7] ^= 1;
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 999, BLOB_ENCODING_IDENTITY), -EILSEQ));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), -ENOENT));
    cr_assert(eq(u64, th_counters(&t).digest_mismatches, 1));
    cr_assert(eq(u64, th_counters(&t).blobs_committed, 0));
    th_reopen(&t);
    cr_assert(not(blob_exists(t.bc, &k, false)), "nothing visible after a restart either");
    th_close(&t);
}

Test(blob_store, size_mismatch_is_refused)
{
    struct th t = { 0 };
    th_open_sim(&t, 4);
    static uint8_t data[5000];
    th_fill(data, sizeof(data), 6, true);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    /* Too few bytes. */
    cr_assert(
        eq(int, th_put(&t, &k, data, sizeof(data) - 1, 0, BLOB_ENCODING_IDENTITY), -EMSGSIZE));
    /* Too many bytes: the append itself refuses. */
    struct blob_key small = k;
    small.size = 100;
    cr_assert(eq(int, th_put(&t, &small, data, 200, 0, BLOB_ENCODING_IDENTITY), -EMSGSIZE));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    th_close(&t);
}

Test(blob_store, abort_leaves_counters_at_zero_and_nothing_visible)
{
    struct th t = { 0 };
    th_open_sim(&t, 5);
    size_t len = 20000;
    uint8_t *data = malloc(len);
    th_fill(data, len, 8, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), 0));
    cr_assert(eq(u64, th_counters(&t).uploads, 1));
    th_settle(&t); /* the first segment is open */
    cr_assert(eq(int, blob_upload_append(u, data, len / 2, NULL, NULL), 0));
    cr_assert(eq(u64, blob_upload_bytes_in(u), len / 2));
    blob_upload_abort(u);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).uploads, 0));
    cr_assert(eq(u64, th_counters(&t).uploads_aborted, 1));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    th_reopen(&t);
    cr_assert(not(blob_exists(t.bc, &k, false)));
    /* The same blob uploads fine afterwards. */
    cr_assert(eq(int, th_put(&t, &k, data, len, 0, BLOB_ENCODING_IDENTITY), 0));
    free(data);
    th_close(&t);
}

static void never_cb(void *ctx, int res)
{
    (void)ctx;
    (void)res;
    cr_assert(0, "an aborted upload's callback ran");
}

Test(blob_store, abort_while_an_append_waits_runs_no_callback)
{
    struct th t = { 0 };
    th_open_sim(&t, 6);
    size_t len = 200000; /* more than the 64 KiB write buffer */
    uint8_t *data = malloc(len);
    th_fill(data, len, 9, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), 0));
    int rc = blob_upload_append(u, data, len, never_cb, NULL);
    cr_assert(eq(int, rc, -EINPROGRESS), "backpressure expected, got %d", rc);
    blob_upload_abort(u);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).uploads, 0));
    free(data);
    th_close(&t);
}

Test(blob_store, ac_newest_write_wins_and_survives_restart)
{
    struct th t = { 0 };
    th_open_sim(&t, 7);
    uint8_t key[BLOB_HASH_SIZE];
    memset(key, 0xab, sizeof(key));
    const char *v1 = "first value";
    const char *v2 = "the second, longer value";
    struct blob_key k;
    blob_key_ac(&k, key, strlen(v1));
    cr_assert(eq(int, th_put(&t, &k, v1, strlen(v1), 0, BLOB_ENCODING_IDENTITY), 0));
    blob_key_ac(&k, key, strlen(v2));
    cr_assert(eq(int, th_put(&t, &k, v2, strlen(v2), 0, BLOB_ENCODING_IDENTITY), 0));
    struct blob_key look;
    blob_key_ac(&look, key, 0);
    for (int round = 0; round < 2; round++) {
        uint8_t *out;
        size_t n;
        cr_assert(eq(int, th_get(&t, &look, 0, BLOB_ENCODING_IDENTITY, &out, &n), 0));
        cr_assert(eq(sz, n, strlen(v2)));
        cr_assert(memcmp(out, v2, n) == 0);
        free(out);
        struct blob_info info;
        cr_assert(eq(int, blob_stat(t.bc, &look, &info), 0));
        cr_assert(eq(u64, info.size, strlen(v2)));
        th_reopen(&t);
    }
    /* An empty AC value is a value too. */
    blob_key_ac(&k, key, 0);
    cr_assert(eq(int, th_put(&t, &k, "", 0, 0, BLOB_ENCODING_IDENTITY), 0));
    cr_assert(blob_exists(t.bc, &look, false));
    th_close(&t);
}

Test(blob_store, present_blob_answers_eexist_and_empty_blob_needs_no_disk)
{
    struct th t = { 0 };
    th_open_sim(&t, 8);
    uint8_t data[3000];
    th_fill(data, sizeof(data), 10, true);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, BLOB_ENCODING_IDENTITY), 0));
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), -EEXIST));
    cr_assert(eq(u64, th_counters(&t).uploads_present, 1));
    struct blob_key empty;
    blob_key_cas(&empty, blob_empty_sha256, 0);
    cr_assert(blob_key_is_empty(&empty));
    uint64_t ops = blob_io_sim_ops(t.io);
    cr_assert(blob_exists(t.bc, &empty, true));
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &empty, &info), 0));
    cr_assert(eq(u64, info.size, 0));
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &empty, 0, BLOB_ENCODING_IDENTITY, &out, &n), 0));
    cr_assert(eq(sz, n, 0));
    free(out);
    cr_assert(eq(u64, blob_io_sim_ops(t.io), ops), "the empty blob touched the disk");
    /* The empty hash with another size is not the empty blob. */
    struct blob_key not_empty = empty;
    not_empty.size = 1;
    cr_assert(not(blob_exists(t.bc, &not_empty, false)));
    th_close(&t);
}

Test(blob_store, exists_many_reports_each_key)
{
    struct th t = { 0 };
    th_open_sim(&t, 9);
    struct blob_key keys[6];
    static uint8_t data[6][500];
    for (int i = 0; i < 6; i++) {
        th_fill(data[i], sizeof(data[i]), 100 + i, i % 2);
        th_key_of(&keys[i], data[i], sizeof(data[i]));
        if (i % 3 != 0) cr_assert(eq(int, th_put(&t, &keys[i], data[i], 500, 0, 0), 0));
    }
    bool present[6];
    cr_assert(eq(sz, blob_exists_many(t.bc, keys, 6, true, present), 4));
    for (int i = 0; i < 6; i++)
        cr_assert(eq(int, present[i], i % 3 != 0));
    /* The size is part of a CAS key. */
    struct blob_key wrong = keys[1];
    wrong.size++;
    cr_assert(not(blob_exists(t.bc, &wrong, false)));
    th_close(&t);
}

Test(blob_store, full_upload_queue_answers_eagain)
{
    struct th t = { 0 };
    t.o.chunk_size = 0;
    th_options_small(&t.o);
    t.o.uploads_max = 2;
    t.o.readers_max = 1;
    th_open_sim(&t, 10);
    struct blob_key k[3];
    struct blob_upload *u[3];
    for (int i = 0; i < 3; i++) {
        uint8_t b = (uint8_t)i;
        th_key_of(&k[i], &b, 1);
    }
    cr_assert(eq(int, blob_upload_begin(t.bc, &k[0], 0, &u[0]), 0));
    cr_assert(eq(int, blob_upload_begin(t.bc, &k[1], 0, &u[1]), 0));
    cr_assert(eq(int, blob_upload_begin(t.bc, &k[2], 0, &u[2]), -EAGAIN));
    cr_assert(eq(u64, th_counters(&t).queue_full, 1));
    blob_upload_abort(u[0]);
    blob_upload_abort(u[1]);
    uint8_t b = 0;
    cr_assert(eq(int, th_put(&t, &k[0], &b, 1, 0, 0), 0));
    struct blob_reader *r1;
    struct blob_reader *r2;
    cr_assert(eq(int, blob_read_open(t.bc, &k[0], 0, 0, &r1), 0));
    cr_assert(eq(int, blob_read_open(t.bc, &k[0], 0, 0, &r2), -EAGAIN));
    blob_read_close(r1);
    th_close(&t);
}

Test(blob_store, too_big_for_the_budget_answers_efbig)
{
    struct th t = { 0 };
    th_open_sim(&t, 11);
    struct blob_key k;
    uint8_t h[BLOB_HASH_SIZE] = { 1 };
    blob_key_cas(&k, h, t.o.max_size);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), -EFBIG));
    cr_assert(eq(u64, th_counters(&t).full, 1));
    k.kind = 9;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), -EINVAL));
    th_close(&t);
}

Test(blob_store, zstd_uploads_are_verified_and_stored)
{
    struct th t = { 0 };
    th_open_sim(&t, 12);
    size_t len = 3 * CHUNK + 5;
    uint8_t *data = malloc(len);
    th_fill(data, len, 13, true);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 7, BLOB_ENCODING_ZSTD), 0));
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &n), 0));
    cr_assert(eq(sz, n, len));
    cr_assert(memcmp(out, data, len) == 0);
    free(out);
    /* Garbage is not a zstd stream. */
    struct blob_key k2;
    th_fill(data, len, 14, true);
    th_key_of(&k2, data, len);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k2, BLOB_ENCODING_ZSTD, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, "not zstd at all", 15, NULL, NULL), -EBADMSG));
    blob_upload_abort(u);
    free(data);
    th_close(&t);
}

static void count_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    (void)res;
    (void)data;
    (void)len;
    int *n = ctx;
    (*n)++;
}

Test(blob_store, closing_a_reader_cancels_its_read_and_runs_no_callback)
{
    struct th t = { 0 };
    th_open_sim(&t, 13);
    static uint8_t data[9000];
    th_fill(data, sizeof(data), 15, false);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 0, &r), 0));
    int calls = 0;
    cr_assert(eq(int, blob_read_next(r, count_cb, &calls), 0));
    cr_assert(eq(int, blob_read_next(r, count_cb, &calls), -EBUSY));
    blob_read_close(r);
    th_settle(&t);
    cr_assert(eq(int, calls, 0));
    cr_assert(eq(u64, th_counters(&t).readers, 0));
    th_close(&t);
}

Test(blob_store, many_blobs_cross_segments_and_survive_restarts)
{
    struct th t = { 0 };
    th_open_sim(&t, 14);

    enum {
        N = 120
    };

    static uint8_t data[N][3000];
    static struct blob_key k[N];
    for (int i = 0; i < N; i++) {
        th_fill(data[i], sizeof(data[i]), 1000 + i, i % 3 != 0);
        th_key_of(&k[i], data[i], sizeof(data[i]));
        cr_assert(eq(int, th_put(&t, &k[i], data[i], sizeof(data[i]), 0, 0), 0));
    }
    cr_assert(gt(u64, th_counters(&t).segments_sealed, 2));
    for (int round = 0; round < 2; round++) {
        th_reopen(&t);
        for (int i = 0; i < N; i++) {
            uint8_t *out;
            size_t n;
            cr_assert(eq(int, th_get(&t, &k[i], 0, 0, &out, &n), 0), "blob %d", i);
            cr_assert(eq(sz, n, sizeof(data[i])));
            cr_assert(memcmp(out, data[i], n) == 0);
            free(out);
        }
    }
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.blobs, N));
    th_close(&t);
}

Test(blob_store, sync_policies_all_acknowledge)
{
    enum blob_sync policies[] = { BLOB_SYNC_GROUP, BLOB_SYNC_ALWAYS, BLOB_SYNC_NONE };

    for (int p = 0; p < 3; p++) {
        struct th t = { 0 };
        th_options_small(&t.o);
        t.o.sync = policies[p];
        th_open_sim(&t, 15 + (uint64_t)p);
        uint8_t data[700];
        for (int i = 0; i < 20; i++) {
            th_fill(data, sizeof(data), (uint64_t)i, true);
            struct blob_key k;
            th_key_of(&k, data, sizeof(data));
            cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
        }
        uint64_t fsyncs = th_counters(&t).fsyncs;
        if (policies[p] == BLOB_SYNC_NONE)
            cr_assert(eq(u64, fsyncs, 0));
        else
            cr_assert(ge(u64, fsyncs, 20));
        th_close(&t);
    }
}

Test(blob_store, parses_sync_names_and_hex)
{
    enum blob_sync s;
    cr_assert(eq(int, blob_sync_parse("group", &s), 0));
    cr_assert(eq(int, s, BLOB_SYNC_GROUP));
    cr_assert(eq(int, blob_sync_parse("always", &s), 0));
    cr_assert(eq(int, s, BLOB_SYNC_ALWAYS));
    cr_assert(eq(int, blob_sync_parse("none", &s), 0));
    cr_assert(eq(int, s, BLOB_SYNC_NONE));
    cr_assert(eq(int, blob_sync_parse("sometimes", &s), -EINVAL));
    char hex[65];
    blob_hash_to_hex(blob_empty_sha256, hex);
    cr_assert(eq(str, hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    uint8_t h[32];
    cr_assert(eq(int, blob_hash_from_hex(hex, 64, h), 0));
    cr_assert(memcmp(h, blob_empty_sha256, 32) == 0);
    hex[3] = 'G';
    cr_assert(eq(int, blob_hash_from_hex(hex, 64, h), -EINVAL));
    cr_assert(eq(int, blob_hash_from_hex(hex, 63, h), -EINVAL));
}

Test(blob_store, refuses_options_that_cannot_work)
{
    struct blob_store_options o;
    th_options_small(&o);
    o.chunk_size = 5000;
    struct blob_store *s;
    char why[256];
    cr_assert(eq(int, blob_store_open(&o, &s, why, sizeof(why)), -EINVAL));
    cr_assert(ne(sz, strlen(why), 0));
    th_options_small(&o);
    o.max_size = o.segment_size;
    cr_assert(eq(int, blob_store_open(&o, &s, why, sizeof(why)), -EINVAL));
    cr_assert(ne(ptr, strstr(why, "max-size"), NULL));
    /* zstd would take these without a word: 0 as its level 3, 23 clamped to 22. */
    int levels[] = { 0, -1, BLOB_ZSTD_LEVEL_MAX + 1 };
    for (size_t i = 0; i < ARRAY_LEN(levels); i++) {
        th_options_small(&o);
        o.zstd_level = levels[i];
        cr_assert(eq(int, blob_store_open(&o, &s, why, sizeof(why)), -EINVAL));
        cr_assert(ne(ptr, strstr(why, "zstd level"), NULL), "%s", why);
    }
}

/* Every 97th offset of a blob with a compressed and a raw chunk, both encodings. */
Test(blob_store, reads_from_any_offset_inside_chunks_are_exact)
{
    struct th t = { 0 };
    th_open_sim(&t, 30);
    size_t len = 3 * CHUNK + 333;
    uint8_t *data = malloc(len);
    th_fill(data, len, 31, true);
    th_fill(data + CHUNK, CHUNK, 32, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 0, 0), 0));
    for (size_t off = 0; off <= len; off += 97) {
        for (int enc = 0; enc <= 1; enc++) {
            uint8_t *out = NULL;
            size_t n = 0;
            cr_assert(eq(int, th_get(&t, &k, off, enc, &out, &n), 0), "offset %zu", off);
            cr_assert(eq(sz, n, len - off));
            cr_assert(n == 0 || memcmp(out, data + off, n) == 0, "offset %zu enc %d", off, enc);
            free(out);
        }
    }
    free(data);
    th_close(&t);
}

Test(blob_store, ac_values_upload_as_zstd_and_read_both_ways)
{
    struct th t = { 0 };
    th_open_sim(&t, 33);
    uint8_t key[BLOB_HASH_SIZE] = { 0x3c };
    size_t len = 2 * CHUNK + 10;
    uint8_t *v = malloc(len);
    th_fill(v, len, 34, true);
    struct blob_key k;
    blob_key_ac(&k, key, len);
    cr_assert(eq(int, th_put(&t, &k, v, len, 100, BLOB_ENCODING_ZSTD), 0));
    blob_key_ac(&k, key, 0);
    for (int enc = 0; enc <= 1; enc++) {
        uint8_t *out;
        size_t n;
        cr_assert(eq(int, th_get(&t, &k, 5, enc, &out, &n), 0));
        cr_assert(eq(sz, n, len - 5));
        cr_assert(memcmp(out, v + 5, n) == 0);
        free(out);
    }
    /* An AC key is not a CAS key with the same bytes. */
    struct blob_key cas;
    blob_key_cas(&cas, key, len);
    cr_assert(not(blob_exists(t.bc, &cas, false)));
    free(v);
    th_close(&t);
}

Test(blob_store, exists_many_mixes_kinds_and_the_empty_blob)
{
    struct th t = { 0 };
    th_open_sim(&t, 35);
    struct blob_key keys[4];
    blob_key_cas(&keys[0], blob_empty_sha256, 0);
    uint8_t key[BLOB_HASH_SIZE] = { 0x11 };
    blob_key_ac(&keys[1], key, 3);
    cr_assert(eq(int, th_put(&t, &keys[1], "abc", 3, 0, 0), 0));
    blob_key_ac(&keys[1], key, 0);
    uint8_t other[BLOB_HASH_SIZE] = { 0x12 };
    blob_key_ac(&keys[2], other, 0);
    keys[3] = keys[0];
    keys[3].kind = 7; /* unknown kinds are never present */
    bool present[4];
    cr_assert(eq(sz, blob_exists_many(t.bc, keys, 4, true, present), 2));
    cr_assert(present[0]);
    cr_assert(present[1]);
    cr_assert(not(present[2]));
    cr_assert(not(present[3]));
    cr_assert(eq(sz, blob_exists_many(t.bc, keys, 0, false, present), 0));
    th_close(&t);
}

Test(blob_store, a_finished_reader_keeps_answering_the_end)
{
    struct th t = { 0 };
    th_open_sim(&t, 36);
    static uint8_t data[100];
    th_fill(data, sizeof(data), 37, true);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 0, &r), 0));
    int calls = 0;
    for (int i = 0; i < 3; i++) {
        cr_assert(eq(int, blob_read_next(r, count_cb, &calls), 0));
        th_settle(&t);
    }
    cr_assert(eq(int, calls, 3), "the data, then the end twice");
    blob_read_close(r);
    th_close(&t);
}

Test(blob_store, counters_are_summed_and_stats_follow_the_store)
{
    struct th t = { 0 };
    th_open_sim(&t, 38);
    static uint8_t data[3000];
    for (int i = 0; i < 5; i++) {
        th_fill(data, sizeof(data), 40 + (uint64_t)i, true);
        struct blob_key k;
        th_key_of(&k, data, sizeof(data));
        cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    }
    struct blob_counters_snapshot a = { 0 };
    blob_counters_add_to(blob_core_counters(t.bc), &a);
    blob_counters_add_to(blob_core_counters(t.bc), &a);
    cr_assert(eq(u64, a.blobs_committed, 10), "two cores' worth, summed");
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.blobs, 5));
    cr_assert(gt(u64, st.index_bytes, 0));
    cr_assert(gt(u64, st.disk_bytes, 0));
    cr_assert(eq(u64, st.segments, 1));
    cr_assert(eq(u64, st.evicted_segments, 0));
    cr_assert(eq(u64, st.dropped_corrupt, 0));
    th_close(&t);
}

Test(blob_store, a_folder_without_o_direct_falls_back_to_buffered_writes)
{
    /* tmpfs refuses O_DIRECT: the writer opens its segments buffered and goes on. */
    struct th t = { 0 };
    th_options_small(&t.o);
    struct ring_core_options ro;
    ring_core_options_default(&ro);
    ro.recv_buf_count = 16;
    ro.recv_buf_size = 4096;
    char why[256] = "";
    cr_assert(eq(int, ring_core_create(&ro, 0, &t.ring, why, sizeof(why)), 0), "%s", why);
    snprintf(t.dir, sizeof(t.dir), "/dev/shm/blobtest.XXXXXX");
    if (!mkdtemp(t.dir)) {
        ring_core_destroy(t.ring);
        cr_skip_test("no /dev/shm here");
    }
    cr_assert(eq(int, th_open_store(&t), 0));
    for (size_t len = 1; len < 100000; len = len * 3 + 7) {
        round_trip(&t, len, len % 2, 0);
    }
    th_reopen(&t);
    round_trip(&t, 5000, true, 0);
    th_close(&t);
}

Test(blob_store, key_helpers_fill_every_field)
{
    uint8_t h[BLOB_HASH_SIZE];
    memset(h, 9, sizeof(h));
    struct blob_key k;
    memset(&k, 0xff, sizeof(k));
    blob_key_cas(&k, h, 42);
    cr_assert(eq(u8, k.kind, BLOB_KIND_CAS));
    cr_assert(eq(u8, k.digest_fn, BLOB_DIGEST_SHA256));
    cr_assert(eq(u64, k.size, 42));
    cr_assert(memcmp(k.hash, h, sizeof(h)) == 0);
    cr_assert(not(blob_key_is_empty(&k)));
    blob_key_ac(&k, h, 7);
    cr_assert(eq(u8, k.kind, BLOB_KIND_AC));
    cr_assert(eq(u64, k.size, 7));
    cr_assert(not(blob_key_is_empty(&k)));
    blob_key_ac(&k, blob_empty_sha256, 0);
    cr_assert(not(blob_key_is_empty(&k)), "an AC key is never the empty blob");
}

Test(blob_store, default_options_open_a_real_store)
{
    struct blob_store_options o;
    blob_store_options_default(&o);
    cr_assert(eq(u64, o.max_size, 10ULL << 30));
    cr_assert(eq(u32, o.chunk_size, 256U << 10));
    cr_assert(eq(int, o.sync, BLOB_SYNC_GROUP));
    cr_assert(o.direct_io);
    char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/blobdef.XXXXXX");
    cr_assert(ne(ptr, mkdtemp(dir), NULL));
    o.dir = dir;
    o.evict_thread = true;
    struct blob_store *s;
    char why[256];
    cr_assert(eq(int, blob_store_open(&o, &s, why, sizeof(why)), 0), "%s", why);
    struct blob_store_stats st;
    blob_store_stats(s, &st);
    cr_assert(eq(u64, st.blobs, 0));
    blob_store_close(s);
    blob_store_close(NULL);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert(eq(int, system(cmd), 0)); /* NOLINT(cert-env33-c) */
    cr_assert(eq(int, blob_store_open(&o, &s, why, sizeof(why)), -ENOENT), "the folder is gone");
    cr_assert(ne(sz, strlen(why), 0));
}

Test(blob_store, lookups_by_hash_alone_find_a_blob_at_its_size)
{
    struct th t = { 0 };
    th_open_sim(&t, 41);
    size_t len = 3 * CHUNK + 17;
    uint8_t *data = malloc(len);
    th_fill(data, len, 41, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 0, BLOB_ENCODING_IDENTITY), 0));
    struct blob_key any;
    blob_key_cas(&any, k.hash, BLOB_SIZE_ANY);
    cr_assert(blob_exists(t.bc, &any, false));
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &any, &info), 0));
    cr_assert(eq(u64, info.size, len));
    for (int enc = 0; enc <= 1; enc++) {
        uint8_t *out = NULL;
        size_t n = 0;
        cr_assert(eq(int, th_get(&t, &any, 0, enc, &out, &n), 0));
        cr_assert(eq(sz, n, len));
        cr_assert(memcmp(out, data, len) == 0);
        free(out);
        cr_assert(eq(int, th_get(&t, &any, CHUNK + 5, enc, &out, &n), 0));
        cr_assert(eq(sz, n, len - CHUNK - 5));
        cr_assert(memcmp(out, data + CHUNK + 5, n) == 0);
        free(out);
    }
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &any, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    cr_assert(eq(u64, blob_reader_size(r), len));
    blob_read_close(r);
    cr_assert(eq(int, blob_read_open(t.bc, &any, len + 1, BLOB_ENCODING_IDENTITY, &r), -ERANGE));
    free(data);
    th_close(&t);
}

Test(blob_store, lookups_by_hash_alone_stay_exact_about_hashes)
{
    struct th t = { 0 };
    th_open_sim(&t, 42);
    size_t len = CHUNK + 3;
    uint8_t *data = malloc(len);
    th_fill(data, len, 42, true);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 0, BLOB_ENCODING_IDENTITY), 0));
    struct blob_key any;
    blob_key_cas(&any, k.hash, BLOB_SIZE_ANY);
    struct blob_info info;
    struct blob_reader *r;

    /* An exact size is still exact; an absent hash is absent at any size. */
    struct blob_key keys[3] = { any, k, any };
    keys[1].size = len + 1;
    keys[2].hash[0] ^= 1;
    bool present[3];
    cr_assert(eq(sz, blob_exists_many(t.bc, keys, 3, false, present), 1));
    cr_assert(present[0]);
    cr_assert(not(present[1]));
    cr_assert(not(present[2]));
    cr_assert(eq(int, blob_stat(t.bc, &keys[2], &info), -ENOENT));
    cr_assert(eq(int, blob_read_open(t.bc, &keys[2], 0, 0, &r), -ENOENT));

    /* The empty blob by its hash alone: present, size 0, reads as nothing. */
    struct blob_key empty;
    blob_key_cas(&empty, blob_empty_sha256, BLOB_SIZE_ANY);
    cr_assert(blob_exists(t.bc, &empty, false));
    cr_assert(eq(int, blob_stat(t.bc, &empty, &info), 0));
    cr_assert(eq(u64, info.size, 0));
    uint8_t *out = NULL;
    size_t n = 1;
    cr_assert(eq(int, th_get(&t, &empty, 0, BLOB_ENCODING_IDENTITY, &out, &n), 0));
    cr_assert(eq(sz, n, 0));
    free(out);

    /* Lookups only: an upload must name a size (or BLOB_SIZE_UNKNOWN). */
    struct blob_upload *u;
    blob_key_cas(&any, k.hash, BLOB_SIZE_ANY);
    any.hash[0] ^= 1;
    cr_assert(eq(int, blob_upload_begin(t.bc, &any, BLOB_ENCODING_IDENTITY, &u), -EINVAL));
    free(data);
    th_close(&t);
}

/*
 * Concurrent uploads of one CAS blob (CI runners building the same commit): while one is
 * under way, on any core, blob_upload_begin_shared tells the others to wait (-EALREADY); once
 * it committed they find the blob present (-EEXIST), and if it failed the next one writes the
 * blob. blob_upload_begin never waits. Before, each wrote a whole copy of the blob.
 */
Test(blob_store, a_second_shared_upload_of_a_blob_waits_for_the_first)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.cores_max = 2;
    th_open_sim(&t, 21);
    struct blob_core *other;
    cr_assert(eq(int, blob_core_init(t.s, NULL, &other), 0));
    static uint8_t data[50000];
    th_fill(data, sizeof(data), 22, false);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    struct blob_upload *first;
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &first), 0));
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), -EALREADY));
    cr_assert(eq(int, blob_upload_begin_shared(other, &k, BLOB_ENCODING_IDENTITY, &u), -EALREADY),
              "another core's upload of the blob waits too");
    cr_assert(eq(u64, th_counters(&t).uploads_waiting, 1));
    /* An upload of unknown size is the same blob. */
    struct blob_key unsized = k;
    unsized.size = BLOB_SIZE_UNKNOWN;
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &unsized, BLOB_ENCODING_ZSTD, &u), -EALREADY));
    /* A caller that cannot wait still begins. */
    cr_assert(eq(int, blob_upload_begin(other, &k, BLOB_ENCODING_IDENTITY, &u), 0));
    blob_upload_abort(u);
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), -EALREADY),
              "the first is still under way");

    /* The first fails: the next one writes the blob. */
    blob_upload_abort(first);
    cr_assert(eq(int, blob_upload_begin_shared(other, &k, BLOB_ENCODING_IDENTITY, &first), 0));
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), -EALREADY));
    blob_upload_abort(first);

    /* The first commits: the others find the blob present, and it was written once. */
    uint64_t stored = th_counters(&t).bytes_stored;
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 7000, BLOB_ENCODING_IDENTITY), 0));
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), -EEXIST));
    cr_assert(eq(int, blob_upload_begin_shared(other, &k, BLOB_ENCODING_IDENTITY, &u), -EEXIST));
    cr_assert(lt(u64, th_counters(&t).bytes_stored - stored, 2 * sizeof(data)));

    /* Action results are values that replace each other: never told to wait. */
    struct blob_key ac;
    blob_key_ac(&ac, k.hash, 10);
    struct blob_upload *a1;
    struct blob_upload *a2;
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &ac, BLOB_ENCODING_IDENTITY, &a1), 0));
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &ac, BLOB_ENCODING_IDENTITY, &a2), 0));
    blob_upload_abort(a1);
    blob_upload_abort(a2);
    blob_core_quiesce(other);
    th_settle(&t);
    blob_core_deinit(other);
    th_close(&t);
}

struct share_done {
    bool done;
    int res;
};

static void share_done_cb(void *ctx, int res)
{
    struct share_done *d = ctx;
    d->done = true;
    d->res = res;
}

/* Feeds <len> bytes of <data> to <u> and waits out any backpressure; the append's result. */
static int share_append(struct th *t, struct blob_upload *u, const uint8_t *data, size_t len)
{
    struct share_done d = { 0 };
    int rc = blob_upload_append(u, data, len, share_done_cb, &d);
    if (rc != -EINPROGRESS) return rc;
    cr_assert(th_run_until(t, &d.done), "append never completed");
    return d.res;
}

/* Commits <u> and waits: the commit's result. */
static int share_commit(struct th *t, struct blob_upload *u)
{
    struct share_done d = { 0 };
    cr_assert(eq(int, blob_upload_commit(u, share_done_cb, &d), 0));
    cr_assert(th_run_until(t, &d.done), "commit never completed");
    return d.res;
}

/*
 * An upload whose client left and that is kept for a resumption (a parked ByteStream upload)
 * leaves the table (blob_upload_unshare): others of its blob begin at once instead of waiting
 * for a client that may never come back. Resumed, it goes back in (blob_upload_reshare) and
 * new uploads wait for it again; if another upload stored the blob meanwhile, its commit still
 * succeeds and the store keeps one copy, also after a restart. Before, a parked upload held
 * every other upload of its blob back until its park expired.
 */
Test(blob_store, an_unshared_upload_no_longer_holds_others_of_its_blob_back)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.cores_max = 2;
    th_open_sim(&t, 23);
    struct blob_core *other;
    cr_assert(eq(int, blob_core_init(t.s, NULL, &other), 0));
    static uint8_t data[50000];
    th_fill(data, sizeof(data), 24, false);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    struct blob_upload *parked;
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &parked), 0));
    cr_assert(eq(int, share_append(&t, parked, data, 20000), 0));
    cr_assert(eq(int, blob_upload_begin_shared(other, &k, BLOB_ENCODING_IDENTITY, &u), -EALREADY));

    /* Its client left: the others go ahead, on any core. */
    blob_upload_unshare(parked);
    blob_upload_unshare(parked); /* once is enough: no second leave */
    cr_assert(eq(int, blob_upload_begin_shared(other, &k, BLOB_ENCODING_IDENTITY, &u), 0),
              "an unshared upload does not make others wait");
    blob_upload_abort(u);

    /* Resumed, it is under way again: new uploads of the blob wait for it. */
    blob_upload_reshare(parked);
    blob_upload_reshare(parked); /* once is enough: no second entry */
    cr_assert(eq(int, blob_upload_begin_shared(other, &k, BLOB_ENCODING_IDENTITY, &u), -EALREADY));

    /* Parked again, and another client stores the blob meanwhile. */
    blob_upload_unshare(parked);
    struct blob_store_stats before;
    blob_store_stats(t.s, &before);
    struct blob_upload *second;
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &second), 0));
    cr_assert(eq(int, share_append(&t, second, data, sizeof(data)), 0));
    cr_assert(eq(int, share_commit(&t, second), 0));
    cr_assert(eq(int, blob_upload_begin_shared(other, &k, BLOB_ENCODING_IDENTITY, &u), -EEXIST));

    /* The parked one resumes after all and ends well: the blob is there, once. */
    blob_upload_reshare(parked);
    cr_assert(eq(int, share_append(&t, parked, data + 20000, sizeof(data) - 20000), 0));
    cr_assert(eq(int, share_commit(&t, parked), 0));
    struct blob_store_stats after;
    blob_store_stats(t.s, &after);
    cr_assert(eq(u64, after.blobs, before.blobs + 1), "one index entry for the blob");
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(data)));
    cr_assert(eq(int, memcmp(out, data, n), 0));
    free(out);
    /* A restart finds one entry for the blob (two commit records of it are in the log). */
    blob_core_quiesce(other);
    th_settle(&t);
    blob_core_deinit(other);
    th_reopen(&t);
    cr_assert(eq(int, th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(data)), "one copy after recovery, whole");
    cr_assert(eq(int, memcmp(out, data, n), 0));
    free(out);
    blob_store_stats(t.s, &after);
    cr_assert(eq(u64, after.blobs, before.blobs + 1));
    th_close(&t);
}

/*
 * Unshared, parked, then dropped (expiry, a restart at offset 0, shutdown): the abort leaves
 * nothing behind in the table. Action results and uploads the table had no room for were
 * never in it: unshare and reshare leave them alone.
 */
Test(blob_store, an_unshared_upload_aborts_cleanly_and_ac_uploads_are_untouched)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    th_open_sim(&t, 25);
    static uint8_t data[30000];
    th_fill(data, sizeof(data), 26, false);
    struct blob_key k;
    th_key_of(&k, data, sizeof(data));
    struct blob_upload *parked;
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &parked), 0));
    blob_upload_unshare(parked);
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), 0));
    blob_upload_abort(parked); /* the parked one expires while the other is under way */
    cr_assert(
        eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &parked), -EALREADY),
        "the other is still in the table");
    blob_upload_abort(u);
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), 0));
    blob_upload_abort(u);

    struct blob_key ac;
    blob_key_ac(&ac, k.hash, 10);
    cr_assert(eq(int, blob_upload_begin_shared(t.bc, &ac, BLOB_ENCODING_IDENTITY, &u), 0));
    blob_upload_unshare(u);
    blob_upload_reshare(u);
    cr_assert(eq(int, share_append(&t, u, data, 10), 0));
    cr_assert(eq(int, share_commit(&t, u), 0));
    th_close(&t); /* the table's deinit asserts every entry is free */
}
