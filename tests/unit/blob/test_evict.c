/*
 * Eviction: the oldest sealed segment goes when the budget is reached; a blob refreshed by
 * an existence check (or a read) from the cold part survives, a cold one does not; an
 * evicted blob is reported missing at once; a reader that holds an evicted segment finishes;
 * a store over its budget answers -ENOSPC.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "harness.h"

static void put_n(struct th *t, uint64_t n, size_t len, struct blob_key *k, uint8_t *buf)
{
    th_fill(buf, len, n, false);
    th_key_of(k, buf, len);
    cr_assert(eq(int, th_put(t, k, buf, len, 0, 0), 0), "blob %llu", (unsigned long long)n);
}

static void small_budget(struct th *t, uint64_t seed)
{
    th_options_small(&t->o);
    t->o.max_size = 1 << 20; /* 16 segments of 64 KiB */
    th_open_sim(t, seed);
}

Test(blob_evict, keeps_a_refreshed_blob_and_drops_a_cold_one)
{
    struct th t = { 0 };
    small_budget(&t, 1);
    static uint8_t buf[8000];
    struct blob_key hot;
    struct blob_key cold;
    put_n(&t, 1, sizeof(buf), &hot, buf);
    put_n(&t, 2, sizeof(buf), &cold, buf);
    struct blob_key k;
    /* Fill until both sit in the cold part of the log. */
    uint64_t n = 100;
    struct blob_info info = { 0 };
    for (; n < 400; n++) {
        put_n(&t, n, sizeof(buf), &k, buf);
        cr_assert(eq(int, blob_stat(t.bc, &hot, &info), 0));
        if (info.cold) break;
    }
    cr_assert(info.cold, "the first blobs never became cold");
    /* The existence check reports it present and queues the copy to the head. */
    cr_assert(blob_exists(t.bc, &hot, true));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    cr_assert(eq(int, blob_stat(t.bc, &hot, &info), 0));
    cr_assert(not(info.cold), "a refreshed blob is at the head");
    /* Write a whole budget more: every old segment goes. */
    for (uint64_t m = 0; m < 150; m++)
        put_n(&t, 1000 + m, sizeof(buf), &k, buf);
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(gt(u64, st.evicted_segments, 0));
    cr_assert(le(u64, st.disk_bytes, t.o.max_size));
    cr_assert(not(blob_exists(t.bc, &cold, false)), "the cold blob was evicted");
    /* The hot one was refreshed once; reading it now refreshes it again if needed. */
    uint8_t *out;
    size_t len;
    int rc = th_get(&t, &hot, 0, 0, &out, &len);
    if (rc == 0) {
        th_fill(buf, sizeof(buf), 1, false);
        cr_assert(eq(sz, len, sizeof(buf)));
        cr_assert(memcmp(out, buf, len) == 0);
        free(out);
    }
    th_close(&t);
}

Test(blob_evict, reads_refresh_blobs_and_keep_them)
{
    struct th t = { 0 };
    small_budget(&t, 2);
    static uint8_t buf[8000];
    struct blob_key hot;
    put_n(&t, 1, sizeof(buf), &hot, buf);
    struct blob_key k;
    /* Keep reading the hot blob while writing three budgets' worth. */
    for (uint64_t n = 0; n < 400; n++) {
        put_n(&t, 100 + n, sizeof(buf), &k, buf);
        if (n % 10 == 0) {
            uint8_t *out;
            size_t len;
            cr_assert(eq(int, th_get(&t, &hot, 0, 0, &out, &len), 0), "after %llu",
                      (unsigned long long)n);
            free(out);
            th_settle(&t);
        }
    }
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(gt(u64, st.evicted_segments, 10));
    cr_assert(gt(u64, th_counters(&t).refreshes, 0));
    cr_assert(blob_exists(t.bc, &hot, false), "a blob read all along survived");
    th_reopen(&t);
    cr_assert(blob_exists(t.bc, &hot, false), "and survives a restart");
    th_close(&t);
}

Test(blob_evict, an_evicted_blob_is_missing_at_once_and_after_restart)
{
    struct th t = { 0 };
    small_budget(&t, 3);
    static uint8_t buf[8000];
    struct blob_key first;
    put_n(&t, 1, sizeof(buf), &first, buf);
    struct blob_key k;
    for (uint64_t n = 0; n < 200; n++)
        put_n(&t, 100 + n, sizeof(buf), &k, buf);
    cr_assert(not(blob_exists(t.bc, &first, false)));
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &first, &info), -ENOENT));
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &first, 0, 0, &r), -ENOENT));
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(gt(u64, st.evicted_blobs, 0));
    th_reopen(&t);
    cr_assert(not(blob_exists(t.bc, &first, false)));
    cr_assert(blob_exists(t.bc, &k, false), "the newest blob is kept");
    th_close(&t);
}

struct piece {
    bool done;
    int res;
    size_t len;
};

static void piece_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    (void)data;
    struct piece *p = ctx;
    p->done = true;
    p->res = res;
    p->len = len;
}

Test(blob_evict, a_reader_holding_an_evicted_segment_finishes_its_read)
{
    struct th t = { 0 };
    small_budget(&t, 4);
    static uint8_t buf[8000];
    struct blob_key first;
    put_n(&t, 1, sizeof(buf), &first, buf);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &first, 0, 0, &r), 0));
    struct piece p = { 0 };
    cr_assert(eq(int, blob_read_next(r, piece_cb, &p), 0));
    cr_assert(th_run_until(&t, &p.done));
    cr_assert(eq(int, p.res, 0));
    struct blob_key k;
    for (uint64_t n = 0; n < 200; n++)
        put_n(&t, 100 + n, sizeof(buf), &k, buf);
    cr_assert(not(blob_exists(t.bc, &first, false)));
    /* The reader's next chunk is in a segment that is gone: it ends cleanly. */
    p.done = false;
    int rc = blob_read_next(r, piece_cb, &p);
    if (rc == 0) {
        cr_assert(th_run_until(&t, &p.done));
        cr_assert(p.res == 0 || p.res == -ENOENT, "res %d", p.res);
    } else {
        cr_assert(eq(int, rc, -ENOENT));
    }
    blob_read_close(r);
    th_close(&t);
}

Test(blob_evict, nothing_is_cold_while_the_store_is_small)
{
    struct th t = { 0 };
    small_budget(&t, 5);
    static uint8_t buf[8000];
    struct blob_key k;
    put_n(&t, 1, sizeof(buf), &k, buf);
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0));
    cr_assert(not(info.cold));
    cr_assert(blob_exists(t.bc, &k, true));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 0), "no refresh for a hot blob");
    cr_assert(eq(u32, blob_store_evict(t.s), 0));
    th_close(&t);
}

Test(blob_evict, refreshes_are_bounded_and_deduplicated)
{
    struct th t = { 0 };
    small_budget(&t, 6);
    static uint8_t buf[8000];
    static struct blob_key keys[100];
    for (uint64_t n = 0; n < 100; n++)
        put_n(&t, n, 3000, &keys[n], buf);
    struct blob_key k;
    struct blob_info info = { 0 };
    for (uint64_t n = 0; n < 400 && !info.cold; n++) {
        put_n(&t, 1000 + n, 8000, &k, buf);
        cr_assert(eq(int, blob_stat(t.bc, &keys[99], &info), 0));
    }
    cr_assert(info.cold);
    int present = 0;
    for (int i = 0; i < 100; i++) {
        if (!blob_exists(t.bc, &keys[i], false)) continue; /* already evicted */
        present++;
        cr_assert(blob_exists(t.bc, &keys[i], true));
        cr_assert(blob_exists(t.bc, &keys[i], true));
    }
    cr_assert(gt(int, present, 16));
    cr_assert(le(u64, th_counters(&t).refreshes_open, 16));
    th_settle(&t);
    cr_assert(le(u64, th_counters(&t).refreshes, 16));
    cr_assert(gt(u64, th_counters(&t).refreshes, 0));
    th_close(&t);
}

static uint8_t big[4 << 20];

Test(blob_evict, a_store_over_its_budget_answers_enospc)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 1 << 20;
    t.o.evict_thread = false;
    th_open_sim(&t, 7);
    struct blob_key k;
    th_fill(big, 300000, 1, false);
    th_key_of(&k, big, 300000);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), -ENOSPC), "a quarter of the budget");
    th_close(&t);
}
