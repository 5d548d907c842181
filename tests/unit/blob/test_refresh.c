/*
 * Refresh on read: a cold blob is copied to the head by the record (no recompression), the
 * index moves only if it still points at the old copy, a refresh that fails leaves the old
 * copy indexed, and nothing is refreshed on a quiescing core or for a hot blob. A queued key
 * pins its segments: its copy outlives their eviction; pins are bounded and given back.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/internal.h"
#include "harness.h"

static void put_n(struct th *t, uint64_t n, size_t len, bool comp, struct blob_key *k)
{
    static uint8_t buf[40000];
    th_fill(buf, len, n, comp);
    th_key_of(k, buf, len);
    cr_assert(eq(int, th_put(t, k, buf, len, 0, 0), 0));
}

static void open_small(struct th *t, uint64_t seed)
{
    th_options_small(&t->o);
    t->o.max_size = 1 << 20;
    th_open_sim(t, seed);
}

/* Writes filler until <k> is in the cold part of the log. */
static void make_cold(struct th *t, const struct blob_key *k)
{
    struct blob_info info = { 0 };
    struct blob_key f;
    for (uint64_t n = 0; n < 1000; n++) {
        put_n(t, 50000 + n, 8000, false, &f);
        cr_assert(eq(int, blob_stat(t->bc, k, &info), 0), "evicted before it was cold");
        if (info.cold) return;
    }
    cr_assert(0, "never cold");
}

static void check(struct th *t, uint64_t n, size_t len, bool comp, const struct blob_key *k)
{
    static uint8_t want[40000];
    th_fill(want, len, n, comp);
    for (int enc = 0; enc <= 1; enc++) {
        uint8_t *out;
        size_t got;
        cr_assert(eq(int, th_get(t, k, 0, enc, &out, &got), 0));
        cr_assert(eq(sz, got, len));
        cr_assert(memcmp(out, want, len) == 0);
        free(out);
    }
}

Test(blob_refresh, a_cold_blob_is_copied_by_the_record_and_stays_exact)
{
    struct th t = { 0 };
    open_small(&t, 1);
    struct blob_key k;
    put_n(&t, 1, 30000, true, &k); /* several chunks, compressed */
    make_cold(&t, &k);
    uint64_t stored = th_counters(&t).bytes_stored;
    cr_assert(blob_exists(t.bc, &k, true));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 1));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0));
    cr_assert(not(info.cold));
    /* The copy took about the blob's stored size: the frames were copied, not re-made. */
    uint64_t copied = th_counters(&t).bytes_stored - stored;
    cr_assert(lt(u64, copied, 30000), "copied %llu bytes of a compressible blob",
              (unsigned long long)copied);
    check(&t, 1, 30000, true, &k);
    th_reopen(&t);
    check(&t, 1, 30000, true, &k);
    cr_assert(not(blob_stat(t.bc, &k, &info) == 0 && info.cold));
    th_close(&t);
}

Test(blob_refresh, reading_a_cold_blob_refreshes_it)
{
    struct th t = { 0 };
    open_small(&t, 2);
    struct blob_key k;
    put_n(&t, 2, 5000, false, &k);
    make_cold(&t, &k);
    check(&t, 2, 5000, false, &k);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0));
    cr_assert(not(info.cold));
    th_close(&t);
}

Test(blob_refresh, a_hot_blob_is_not_copied)
{
    struct th t = { 0 };
    open_small(&t, 3);
    struct blob_key k;
    put_n(&t, 3, 5000, false, &k);
    uint64_t stored = th_counters(&t).bytes_stored;
    for (int i = 0; i < 10; i++)
        cr_assert(blob_exists(t.bc, &k, true));
    check(&t, 3, 5000, false, &k);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 0));
    cr_assert(eq(u64, th_counters(&t).bytes_stored, stored));
    th_close(&t);
}

/*
 * Eviction takes the segment a refresh is copying from, between the copy's read and its
 * commit: the copy holds the blob (its reader kept the file), so it is indexed. Before, the
 * index entry the copy meant to move was gone, and the blob was lost with a good copy on disk.
 */
Test(blob_refresh, a_copy_outrun_by_eviction_of_its_source_keeps_the_blob)
{
    struct th t = { 0 };
    open_small(&t, 5);
    struct blob_key k;
    put_n(&t, 5, 5000, false, &k);
    make_cold(&t, &k);
    cr_assert(blob_exists(t.bc, &k, true));
    for (int i = 0; i < 1000 && t.bc->refreshes_len == 0; i++)
        blob_io_sim_run(t.io, 1);
    cr_assert(eq(u32, t.bc->refreshes_len, 1), "the copy did not start");
    /* Every sealed segment goes, the source of the copy included. */
    uint64_t max = t.s->opts.max_size;
    t.s->opts.max_size = t.s->opts.segment_size;
    cr_assert(gt(u32, blob_store_evict(t.s), 0));
    t.s->opts.max_size = max;
    struct blob_info info;
    /* Found where the copy reads it (blob_refresh_find), until the copy lands. */
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0), "missing while copied");
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0), "the copy was not indexed");
    cr_assert(not(info.cold));
    check(&t, 5, 5000, false, &k);
    th_reopen(&t);
    check(&t, 5, 5000, false, &k);
    th_close(&t);
}

/*
 * A blob just reported present (or named by a hit) whose segment eviction takes while its
 * copy waits: this core still finds it, and reads it, where the copy reads it. Before, the
 * index entry went with the segment and the blob read NOT_FOUND until the copy landed.
 */
Test(blob_refresh, a_blob_whose_copy_waits_stays_readable_after_its_segment_is_evicted)
{
    struct th t = { 0 };
    open_small(&t, 6);
    struct blob_key k;
    put_n(&t, 6, 5000, false, &k);
    make_cold(&t, &k);
    cr_assert(blob_exists(t.bc, &k, true)); /* queued; nothing has run yet */
    cr_assert(eq(u32, t.bc->refreshes_len, 0));
    uint64_t max = t.s->opts.max_size;
    t.s->opts.max_size = t.s->opts.segment_size;
    cr_assert(gt(u32, blob_store_evict(t.s), 0));
    t.s->opts.max_size = max;
    struct blob_index_value v;
    cr_assert(not(blob_store_lookup(t.s, &k, &v)), "the index still has it: nothing to show");
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0), "missing while its copy waits");
    cr_assert(blob_exists(t.bc, &k, false));
    bool present = false;
    cr_assert(eq(sz, blob_keep_many(t.bc, &k, 1, &present), 1));
    check(&t, 6, 5000, false, &k); /* read from the evicted file, through the pins */
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    cr_assert(blob_store_lookup(t.s, &k, &v), "the copy was not indexed");
    check(&t, 6, 5000, false, &k);
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    th_close(&t);
}

/* A key the index dropped while its segments live (a read found it corrupt) is not found
 * through its waiting refresh. */
Test(blob_refresh, a_dropped_blob_is_not_found_through_its_waiting_copy)
{
    struct th t = { 0 };
    open_small(&t, 7);
    struct blob_key k;
    put_n(&t, 7, 5000, false, &k);
    make_cold(&t, &k);
    struct blob_index_value v;
    cr_assert(blob_store_lookup(t.s, &k, &v));
    cr_assert(blob_exists(t.bc, &k, true));
    blob_store_drop_corrupt(t.s, &k, &v.loc, -EBADMSG);
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), -ENOENT));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    th_close(&t);
}

Test(blob_refresh, a_newer_ac_value_is_not_overwritten_by_a_refresh_of_the_old_one)
{
    struct th t = { 0 };
    open_small(&t, 4);
    uint8_t key[BLOB_HASH_SIZE] = { 0x5a };
    static uint8_t v1[6000];
    memset(v1, 1, sizeof(v1));
    struct blob_key k;
    blob_key_ac(&k, key, sizeof(v1));
    cr_assert(eq(int, th_put(&t, &k, v1, sizeof(v1), 0, 0), 0));
    struct blob_key look;
    blob_key_ac(&look, key, 0);
    make_cold(&t, &look);
    /* The refresh of v1 is queued; before it runs, v2 is committed. */
    cr_assert(blob_exists(t.bc, &look, true));
    static uint8_t v2[100];
    memset(v2, 2, sizeof(v2));
    blob_key_ac(&k, key, sizeof(v2));
    cr_assert(eq(int, th_put(&t, &k, v2, sizeof(v2), 0, 0), 0));
    th_settle(&t);
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &look, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(v2)), "the refresh of the old value won");
    cr_assert(eq(u8, out[0], 2));
    free(out);
    th_reopen(&t);
    cr_assert(eq(int, th_get(&t, &look, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(v2)), "the old value came back after a restart");
    free(out);
    th_close(&t);
}

Test(blob_refresh, a_refresh_that_meets_corruption_leaves_nothing_wrong_behind)
{
    struct th t = { 0 };
    open_small(&t, 5);
    struct blob_key k;
    put_n(&t, 5, 5000, false, &k);
    make_cold(&t, &k);
    /* Flip the blob's first chunk: the refresh reads it, sees the flip, stops. */
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, "seg-0000000000000001.rcs", 4096 + 100, 4), 0));
    cr_assert(blob_exists(t.bc, &k, true));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 0));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
    cr_assert(not(blob_exists(t.bc, &k, false)), "a corrupt blob is dropped, not copied");
    th_close(&t);
}

Test(blob_refresh, a_quiescing_core_starts_no_refresh)
{
    struct th t = { 0 };
    open_small(&t, 6);
    struct blob_key k;
    put_n(&t, 6, 5000, false, &k);
    make_cold(&t, &k);
    blob_core_quiesce(t.bc);
    cr_assert(blob_exists(t.bc, &k, true));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    th_close(&t);
}

/*
 * A cache hit promises its blobs: one that is cold and cannot be refreshed (here the core is
 * quiescing; in service, its refresh queue is full) is not kept, while a plain existence
 * check still reports it present and a hot blob is kept without a refresh.
 */
Test(blob_refresh, a_cold_blob_that_cannot_be_refreshed_is_not_kept)
{
    struct th t = { 0 };
    open_small(&t, 8);
    struct blob_key k[2];
    put_n(&t, 8, 5000, false, &k[0]);
    make_cold(&t, &k[0]);
    put_n(&t, 9, 5000, false, &k[1]);
    bool present[2];
    blob_core_quiesce(t.bc);
    cr_assert(eq(sz, blob_keep_many(t.bc, k, 2, present), 1));
    cr_assert(not(present[0]));
    cr_assert(present[1]);
    cr_assert(eq(sz, blob_exists_many(t.bc, k, 2, true, present), 2));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    th_close(&t);
}

Test(blob_refresh, refreshes_queued_then_quiesced_are_dropped_cleanly)
{
    struct th t = { 0 };
    open_small(&t, 7);
    struct blob_key keys[8];
    for (uint64_t i = 0; i < 8; i++)
        put_n(&t, 70 + i, 3000, false, &keys[i]);
    make_cold(&t, &keys[7]);
    for (int i = 0; i < 8; i++) {
        if (blob_exists(t.bc, &keys[i], false)) cr_assert(blob_exists(t.bc, &keys[i], true));
    }
    cr_assert(gt(u64, th_counters(&t).refreshes_open, 0));
    /* Quiesce before the deferred starts ran: they end without I/O. */
    blob_core_quiesce(t.bc);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    cr_assert(eq(u64, th_counters(&t).uploads, 0));
    cr_assert(eq(u64, th_counters(&t).readers, 0));
    th_close(&t);
}

Test(blob_refresh, an_empty_ac_value_is_refreshed_too)
{
    struct th t = { 0 };
    open_small(&t, 8);
    uint8_t key[BLOB_HASH_SIZE] = { 0xe0 };
    struct blob_key k;
    blob_key_ac(&k, key, 0);
    cr_assert(eq(int, th_put(&t, &k, "", 0, 0, 0), 0));
    make_cold(&t, &k);
    cr_assert(blob_exists(t.bc, &k, true));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0));
    cr_assert(eq(u64, info.size, 0));
    cr_assert(not(info.cold));
    th_close(&t);
}

Test(blob_refresh, a_cold_blob_found_by_hash_alone_is_refreshed_at_its_size)
{
    struct th t = { 0 };
    open_small(&t, 9);
    struct blob_key k;
    put_n(&t, 9, 20000, false, &k);
    make_cold(&t, &k);
    struct blob_key any;
    blob_key_cas(&any, k.hash, BLOB_SIZE_ANY);
    cr_assert(blob_exists(t.bc, &any, true));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1), "the index moved to the copy");
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &any, &info), 0));
    cr_assert(not(info.cold));
    cr_assert(eq(u64, info.size, 20000));
    check(&t, 9, 20000, false, &any);
    th_close(&t);
}

/* Evicts every sealed segment now, as a store that other clients fill would. */
static void evict_all_sealed(struct th *t)
{
    uint64_t max = t->s->opts.max_size;
    t->s->opts.max_size = t->s->opts.segment_size;
    cr_assert(gt(u32, blob_store_evict(t->s), 0));
    t->s->opts.max_size = max;
    cr_assert(eq(u32, blob_store_evict(t->s), 0)); /* the budget back at max_size */
}

/*
 * A hit queues cold keys; before any copy starts, eviction takes their segment (other clients
 * kept writing). The keys pinned it when they were queued, so every copy still reads the
 * blob from the unlinked file and indexes it at the head: all are there, exact, also after a
 * restart. Before, a copy starting later looked the key up, found nothing and skipped it: a
 * hit answered OK had lost its outputs.
 */
Test(blob_refresh, keys_queued_before_their_segment_is_evicted_are_copied_from_it)
{
    struct th t = { 0 };
    open_small(&t, 10);
    struct blob_key keys[8];
    for (uint64_t i = 0; i < 8; i++)
        put_n(&t, 100 + i, 3000, i % 2 == 0, &keys[i]);
    make_cold(&t, &keys[7]);
    bool present[8];
    cr_assert(eq(sz, blob_keep_many(t.bc, keys, 8, present), 8), "every key was cold and kept");
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 8));
    cr_assert(eq(u32, t.bc->refreshes_len, 0), "nothing starts inside the call");
    cr_assert(gt(u32, blob_segment_pinned(&t.s->segs), 0));
    evict_all_sealed(&t);
    struct blob_info info;
    for (int i = 0; i < 8; i++) {
        struct blob_index_value v;
        cr_assert(not(blob_store_lookup(t.s, &keys[i], &v)), "key %d not evicted", i);
        /* Found where its copy reads it until the copy lands (blob_refresh_find). */
        cr_assert(eq(int, blob_stat(t.bc, &keys[i], &info), 0), "key %d missing", i);
    }
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(gt(u64, st.held_bytes, 0), "the pinned segments stay on disk, counted");
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 8));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    cr_assert(eq(u32, blob_segment_pinned(&t.s->segs), 0), "the pins went with the copies");
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.held_bytes, 0), "and the evicted files with them");
    for (uint64_t i = 0; i < 8; i++) {
        cr_assert(eq(int, blob_stat(t.bc, &keys[i], &info), 0), "key %d lost", (int)i);
        cr_assert(not(info.cold));
        check(&t, 100 + i, 3000, i % 2 == 0, &keys[i]);
    }
    th_reopen(&t);
    for (uint64_t i = 0; i < 8; i++)
        check(&t, 100 + i, 3000, i % 2 == 0, &keys[i]);
    th_close(&t);
}

/* The same for a blob whose chunks span segments: each of them is pinned. */
Test(blob_refresh, a_queued_blob_spanning_segments_is_copied_after_they_are_evicted)
{
    struct th t = { 0 };
    open_small(&t, 11);
    static uint8_t want[100000]; /* random: chunks in two or more 64 KiB segments */
    th_fill(want, sizeof(want), 11, false);
    struct blob_key k;
    th_key_of(&k, want, sizeof(want));
    cr_assert(eq(int, th_put(&t, &k, want, sizeof(want), 0, 0), 0));
    make_cold(&t, &k);
    cr_assert(blob_exists(t.bc, &k, true));
    cr_assert(ge(u32, blob_segment_pinned(&t.s->segs), 2));
    evict_all_sealed(&t);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0), "the spanning blob was lost");
    cr_assert(eq(sz, n, sizeof(want)));
    cr_assert(memcmp(out, want, n) == 0);
    free(out);
    th_close(&t);
}

/*
 * Pins are bounded store-wide (a quarter of the budget, in segments, and one per core): with
 * the budget spent, a cold key whose segment is not pinned yet is refused, so the hit counts
 * it missing rather than promise what eviction may take; keys in a segment already pinned
 * still come in. Eviction goes on meanwhile: it takes pinned segments too, and their files
 * count against the budget until the pins go.
 */
Test(blob_refresh, past_the_pin_budget_a_cold_key_is_refused_and_eviction_goes_on)
{
    struct th t = { 0 };
    open_small(&t, 12);
    struct blob_key k[2];
    put_n(&t, 12, 3000, false, &k[0]);
    put_n(&t, 13, 3000, false, &k[1]);
    make_cold(&t, &k[1]);
    struct blob_index_value v;
    cr_assert(blob_store_lookup(t.s, &k[0], &v));
    uint32_t key_seg = v.loc.seg;
    /* Another core's keys hold the budget: the newest sealed segments, pinned. */
    uint32_t max = (uint32_t)(t.s->opts.max_size / 4 / t.s->opts.segment_size + 1);
    struct blob_seg *held[16];
    uint32_t n = 0;
    uint32_t top = t.s->segs.next_seq > UINT32_MAX ? UINT32_MAX : (uint32_t)t.s->segs.next_seq;
    for (uint32_t seq = top; seq > key_seg && n < max; seq--) {
        struct blob_seg *seg = blob_segment_get(&t.s->segs, seq);
        if (!seg) continue;
        cr_assert(blob_segment_pin(&t.s->segs, seg, max));
        held[n++] = seg;
    }
    cr_assert(eq(u32, n, max));
    cr_assert(eq(u32, blob_segment_pinned(&t.s->segs), max));
    bool present[2];
    cr_assert(eq(sz, blob_keep_many(t.bc, k, 2, present), 0), "a key past the budget was kept");
    cr_assert(eq(u64, th_counters(&t).refreshes_unpinned, 2));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    cr_assert(blob_exists(t.bc, &k[0], false), "refused, not dropped");
    /* Eviction takes everything sealed, pinned or not; what is pinned stays on disk. */
    struct blob_store_stats before;
    blob_store_stats(t.s, &before);
    evict_all_sealed(&t);
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(not(blob_exists(t.bc, &k[0], false)));
    cr_assert(gt(u64, st.held_bytes, 0));
    cr_assert(lt(u64, st.disk_bytes, before.disk_bytes));
    cr_assert(eq(u64, st.pinned_segments, max), "a pin outlives its segment's eviction");
    for (uint32_t i = 0; i < n; i++) {
        blob_segment_unpin(&t.s->segs, held[i]);
        blob_segment_put(&t.s->segs, held[i]);
    }
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.held_bytes, 0));
    cr_assert(eq(u64, st.pinned_segments, 0));
    th_close(&t);
}

/* A key that cannot be copied (the core is short of readers) gives its pins back. */
Test(blob_refresh, a_key_whose_copy_cannot_start_gives_its_pins_back)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 1 << 20;
    t.o.readers_max = 1;
    th_open_sim(&t, 13);
    struct blob_key k[2];
    put_n(&t, 14, 3000, false, &k[0]);
    put_n(&t, 15, 3000, false, &k[1]);
    make_cold(&t, &k[1]);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k[0], 0, 0, &r), 0)); /* the one reader */
    cr_assert(blob_exists(t.bc, &k[1], true));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 2));
    th_settle(&t);
    blob_read_close(r);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    cr_assert(eq(u32, blob_segment_pinned(&t.s->segs), 0));
    th_close(&t);
}

enum {
    PRESENT_N = 8
};

/* Core <bc> (number <c>) finds every key, without running the loop, and opens a reader of
 * each into <r>. */
static void find_and_open_all(struct th *t, struct blob_core *bc, int c,
                              const struct blob_key *keys, struct blob_reader **r)
{
    for (int i = 0; i < PRESENT_N; i++) {
        struct blob_index_value v;
        cr_assert(not(blob_store_lookup(t->s, &keys[i], &v)), "key %d not evicted", i);
        struct blob_info info;
        cr_assert(eq(int, blob_stat(bc, &keys[i], &info), 0), "core %d: key %d missing", c, i);
        cr_assert(eq(u64, info.size, 3000));
        cr_assert(blob_exists(bc, &keys[i], true), "core %d: key %d missing", c, i);
        int rc = blob_read_open(bc, &keys[i], 0, BLOB_ENCODING_IDENTITY, &r[i]);
        cr_assert(eq(int, rc, 0), "core %d: key %d not readable", c, i);
    }
    bool present[PRESENT_N];
    cr_assert(eq(sz, blob_keep_many(bc, keys, PRESENT_N, present), PRESENT_N),
              "core %d: a hit lost an output", c);
}

/* Reads each of <r> whole on core <bc>: the bytes put as blob 300 + i. */
static void read_all(struct th *t, struct blob_core *bc, int c, struct blob_reader **r)
{
    static uint8_t want[3000];
    static uint8_t got[3000];
    struct blob_core *saved = t->bc;
    t->bc = bc;
    for (int i = 0; i < PRESENT_N; i++) {
        th_fill(want, sizeof(want), 300 + (uint64_t)i, i % 2 == 0);
        struct th_collect col = { .out = got };
        for (int n = 0; n < 100 && !col.end; n++) { /* bounded: 3000 bytes in pieces */
            cr_assert(eq(int, th_collect_next(t, r[i], &col), 0), "core %d key %d", c, i);
        }
        cr_assert(eq(sz, col.len, sizeof(want)));
        cr_assert(memcmp(got, want, sizeof(want)) == 0, "core %d: key %d differs", c, i);
        blob_read_close(r[i]);
    }
    t->bc = saved;
}

/*
 * What FindMissingBlobs said present on one core stays readable on every core. A client's
 * connections land on different cores (Bazel opens several; an HTTP cache client one per
 * request): the keys below are found present and queued on core 0, eviction takes their
 * segments before any copy starts, and core 1, where the client's BatchReadBlobs lands, still
 * finds and reads every one of them, byte for byte, before the copies land and after. Before,
 * only the core that queued a key found it where its copy reads it: core 1 answered NOT_FOUND
 * for every one until the copies landed (the race probe's 40 of 40).
 */
Test(blob_refresh, a_blob_found_present_on_one_core_stays_readable_on_another_while_queued)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 1 << 20;
    t.o.cores_max = 2;
    th_open_sim(&t, 15);
    struct blob_core *cores[2] = { t.bc, NULL };
    cr_assert(eq(int, blob_core_init(t.s, NULL, &cores[1]), 0));
    th_settle(&t);
    static struct blob_key keys[PRESENT_N];
    for (uint64_t i = 0; i < PRESENT_N; i++)
        put_n(&t, 300 + i, 3000, i % 2 == 0, &keys[i]);
    make_cold(&t, &keys[PRESENT_N - 1]);
    bool present[PRESENT_N];
    cr_assert(eq(sz, blob_exists_many(cores[0], keys, PRESENT_N, true, present), PRESENT_N));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, PRESENT_N), "every key queued on core 0");
    cr_assert(eq(u32, cores[0]->refreshes_len, 0), "nothing starts inside the call");
    evict_all_sealed(&t);
    /* Nothing runs from here until every reader is open: no copy can land meanwhile. */
    static struct blob_reader *r[2][PRESENT_N];
    find_and_open_all(&t, cores[1], 1, keys, r[1]);
    find_and_open_all(&t, cores[0], 0, keys, r[0]);
    cr_assert(eq(u64, base_counter_get(&blob_core_counters(cores[1])->refreshes_open), 0));
    /* The bytes come from the evicted files, which the queued keys hold open. */
    read_all(&t, cores[1], 1, r[1]);
    read_all(&t, cores[0], 0, r[0]);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, PRESENT_N));
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    for (int c = 1; c >= 0; c--) {
        t.bc = cores[c];
        for (uint64_t i = 0; i < PRESENT_N; i++) {
            struct blob_info info;
            cr_assert(eq(int, blob_stat(t.bc, &keys[i], &info), 0), "key %d lost", (int)i);
            cr_assert(not(info.cold));
            check(&t, 300 + i, 3000, i % 2 == 0, &keys[i]);
        }
    }
    t.bc = cores[0];
    blob_core_quiesce(cores[1]);
    th_settle(&t);
    blob_core_deinit(cores[1]);
    th_close(&t);
}

/*
 * docs/storage.md: `--chunk-size` "Existing data keeps the chunk size it was written with."
 * A blob written with 4 KiB chunks, read after a restart with 8 KiB chunks, reads as it was
 * written (the reader takes the commit's chunk_shift). Once it turns cold its refresh copies
 * the stored chunk records as they are (4 KiB of raw bytes each); the copy's commit record
 * must name the chunk size those records hold, or the copy the index then points at reads as
 * a corrupt record and the blob a client just read is dropped.
 */
Test(blob_refresh, a_copy_keeps_the_chunk_size_its_blob_was_written_with)
{
    struct th t = { 0 };
    open_small(&t, 33);
    struct blob_key k;
    put_n(&t, 33, 30000, true, &k); /* 8 chunks of 4 KiB */
    check(&t, 33, 30000, true, &k);
    th_close_store(&t);
    t.o.chunk_size = 8192; /* the operator changes --chunk-size; the store keeps its data */
    cr_assert(eq(int, th_open_store(&t), 0));
    check(&t, 33, 30000, true, &k);
    make_cold(&t, &k);
    cr_assert(blob_exists(t.bc, &k, true));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0));
    cr_assert(not(info.cold), "the copy is at the head");
    uint64_t corrupt = th_counters(&t).corrupt_chunks;
    uint8_t *out = NULL;
    size_t n = 0;
    int rc = th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &n);
    free(out);
    cr_assert(eq(int, rc, 0),
              "the refreshed copy reads as corrupt: %d (corrupt_chunks %llu -> %llu)", rc,
              (unsigned long long)corrupt, (unsigned long long)th_counters(&t).corrupt_chunks);
    check(&t, 33, 30000, true, &k);
    th_close(&t);
}

/*
 * A copy carries the refs of the records it copies, cut at the chunk size the blob was
 * written with: more of them than the store now counts for its largest blob when that was
 * smaller (an older --chunk-size, or 16-byte refs of version 1 becoming 24). A commit record
 * past one write buffer tripped the writer's assertion and stopped the server; the copy now
 * fails, and the blob stays where it is.
 */
Test(blob_refresh, a_copy_whose_commit_outgrows_the_write_buffer_fails_alone)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.segment_size = 1 << 20;
    t.o.max_size = 32 << 20;
    th_open_sim(&t, 41);
    static uint8_t buf[2000 * 4096];
    th_fill(buf, sizeof(buf), 41, false);
    struct blob_key k;
    th_key_of(&k, buf, sizeof(buf));
    cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 0, 0), 0)); /* 2000 refs: 47 KiB */
    th_close_store(&t);
    /* 16 KiB chunks now: the store takes such a blob (500 refs), its copy has 2000 refs. */
    t.o.chunk_size = 16 << 10;
    t.o.write_buffer_size = 52 << 10; /* the smallest for 16 KiB chunks */
    cr_assert(eq(int, th_open_store(&t), 0));
    static uint8_t filler[200000];
    struct blob_info info = { 0 };
    for (uint64_t i = 0; i < 300 && !info.cold; i++) { /* bounded: 60 MB of filler at most */
        struct blob_key f;
        th_fill(filler, sizeof(filler), 4100 + i, false);
        th_key_of(&f, filler, sizeof(filler));
        cr_assert(eq(int, th_put(&t, &f, filler, sizeof(filler), 0, 0), 0));
        cr_assert(eq(int, blob_stat(t.bc, &k, &info), 0), "evicted before it was cold");
    }
    cr_assert(info.cold);
    cr_assert(blob_exists(t.bc, &k, true)); /* queues its copy */
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes_open, 0));
    cr_assert(eq(u64, th_counters(&t).refreshes, 0), "the copy cannot be committed");
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(buf)));
    cr_assert(memcmp(out, buf, n) == 0);
    free(out);
    th_close(&t);
}

/*
 * Interleavings the tests cannot reach from one thread: another core or the evictor acting
 * between two steps of one call. The link wraps the engine's calls from store.c into
 * refresh.c (CMakeLists.txt: --wrap), and a test arms a step (between_*) to run once, just
 * before the wrapped call does its work: what another thread did at that moment, done by
 * this one.
 */
bool __real_blob_refresh_find(struct blob_store *s, const struct blob_key *k,
                              struct blob_index_value *out);
bool __wrap_blob_refresh_find(struct blob_store *s, const struct blob_key *k,
                              struct blob_index_value *out);
bool __real_blob_refresh_queue(struct blob_core *bc, const struct blob_key *k,
                               const struct blob_index_value *v);
bool __wrap_blob_refresh_queue(struct blob_core *bc, const struct blob_key *k,
                               const struct blob_index_value *v);

static struct th *between_t;                /* the test the step runs in */
static void (*between_find)(struct th *t);  /* runs before the next blob_refresh_find */
static void (*between_queue)(struct th *t); /* runs before the next blob_refresh_queue */

bool __wrap_blob_refresh_find(struct blob_store *s, const struct blob_key *k,
                              struct blob_index_value *out)
{
    void (*fn)(struct th *) = between_find;
    between_find = NULL;
    if (fn) fn(between_t);
    return __real_blob_refresh_find(s, k, out);
}

bool __wrap_blob_refresh_queue(struct blob_core *bc, const struct blob_key *k,
                               const struct blob_index_value *v)
{
    void (*fn)(struct th *) = between_queue;
    between_queue = NULL;
    if (fn) fn(between_t);
    return __real_blob_refresh_queue(bc, k, v);
}

/*
 * A lookup on one core looks in the index, then in the table of keys being refreshed. A copy
 * that lands on another core between the two looks has indexed the copy after the first and
 * left the table before the second: the blob, just reported present and readable the whole
 * time, was answered missing to that request (a HEAD 200 then a GET 404, and no refresh
 * refused to account for it). Now the index is looked at again after a miss in the table.
 */
Test(blob_refresh, a_copy_landing_between_a_lookups_two_looks_is_found)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 1 << 20;
    t.o.cores_max = 2;
    th_open_sim(&t, 16);
    struct blob_core *cores[2] = { t.bc, NULL };
    cr_assert(eq(int, blob_core_init(t.s, NULL, &cores[1]), 0));
    th_settle(&t);
    struct blob_key k;
    put_n(&t, 400, 3000, false, &k);
    make_cold(&t, &k);
    cr_assert(blob_exists(cores[0], &k, true), "found present, queued on core 0");
    evict_all_sealed(&t);
    struct blob_index_value v;
    cr_assert(not(blob_store_lookup(t.s, &k, &v)), "its entry went with its segment");
    /* Core 1 looks it up; between its two looks, core 0's copy lands. */
    between_t = &t;
    between_find = th_settle;
    struct blob_info info;
    int rc = blob_stat(cores[1], &k, &info);
    cr_assert(between_find == NULL, "the copy did not land between the looks");
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    cr_assert(eq(int, rc, 0), "a blob present all along was answered missing");
    cr_assert(eq(u64, info.size, 3000));
    cr_assert(blob_exists(cores[1], &k, false));
    check(&t, 400, 3000, false, &k);
    blob_core_quiesce(cores[1]);
    th_settle(&t);
    blob_core_deinit(cores[1]);
    th_close(&t);
}

/*
 * FindMissingBlobs, HEAD, an upload that ends early: a lookup finds a cold blob, and its
 * refresh pins the segments the lookup found it in. Eviction may take them in between (the
 * evictor runs on its own thread): the pin is refused (`refreshes_unpinned`), and the blob is
 * gone already. It was answered present all the same, as for a refresh refused by a bound,
 * and a client skipped the upload of a blob the store no longer had: the soak's "PUT 200,
 * then 404 12-25 ms later". Now it is answered as a lookup answers then: missing.
 */
Test(blob_refresh, a_cold_blob_evicted_between_its_lookup_and_its_refresh_is_missing)
{
    struct th t = { 0 };
    open_small(&t, 17);
    struct blob_key k[2];
    put_n(&t, 410, 3000, false, &k[0]);
    make_cold(&t, &k[0]);
    put_n(&t, 411, 3000, false, &k[1]);
    between_t = &t;
    between_queue = evict_all_sealed;
    cr_assert(not(blob_exists(t.bc, &k[0], true)), "an evicted blob was answered present");
    cr_assert(between_queue == NULL, "eviction did not run between");
    cr_assert(eq(u64, th_counters(&t).refreshes_unpinned, 1), "still counted as refused");
    struct blob_info info;
    cr_assert(eq(int, blob_stat(t.bc, &k[0], &info), -ENOENT));
    /* A refresh refused by a bound leaves the blob where it is: still present (the doc's
     * promise), and a hot blob needs no refresh at all. */
    cr_assert(blob_exists(t.bc, &k[1], true));
    th_settle(&t);
    th_close(&t);
}

/* The newest segment seq handed out: the one a single core's writer has open. */
static uint64_t newest_seq(struct th *t)
{
    return atomic_load(&t->s->segs.next_seq) - 1;
}

/* Reads <k> whole, in both encodings, and compares it with <want>. */
static void check_bytes(struct th *t, const struct blob_key *k, const uint8_t *want, size_t len)
{
    for (int enc = 0; enc <= 1; enc++) {
        uint8_t *out;
        size_t got;
        cr_assert(eq(int, th_get(t, k, 0, enc, &out, &got), 0), "encoding %d", enc);
        cr_assert(eq(sz, got, len));
        cr_assert(memcmp(out, want, len) == 0);
        free(out);
    }
}

static void append_done(void *ctx, int res)
{
    int *out = ctx;
    *out = res == 0 ? 1 : res;
}

/* Appends <len> bytes to <u> and waits for them to be taken. */
static void append_all(struct th *t, struct blob_upload *u, const uint8_t *p, size_t len)
{
    int res = 0;
    int rc = blob_upload_append(u, p, len, append_done, &res);
    if (rc == -EINPROGRESS) {
        /* Bounded by th_settle's own bound. */
        th_settle(t);
        rc = res == 1 ? 0 : res;
    }
    cr_assert(eq(int, rc, 0));
}

static void commit_done(void *ctx, int res)
{
    int *out = ctx;
    *out = res == 0 ? 1 : res;
}

/*
 * A blob whose span holds a segment with none of its chunks, gone (another core's segment
 * that a full disk left empty, deleted by the evictor; here one the blob skipped, taken out):
 * the blob reads whole, and once cold it is refreshed like any other, its gap left unpinned.
 * Before, pinning wanted every segment of the span: the refresh was refused
 * (refreshes_unpinned), so a hit that named the blob counted it missing and eviction took it.
 */
Test(blob_refresh, a_cold_blob_with_a_harmless_gap_in_its_span_is_refreshed)
{
    struct th t = { 0 };
    open_small(&t, 13);
    static uint8_t want[3 * 4096]; /* random: three raw 4 KiB chunks */
    th_fill(want, sizeof(want), 13, false);
    struct blob_key k;
    th_key_of(&k, want, sizeof(want));
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, BLOB_ENCODING_IDENTITY, &u), 0));
    append_all(&t, u, want, 4096); /* chunk 0 in the segment open now */
    th_settle(&t);
    uint64_t first = newest_seq(&t);
    /* Others fill that segment and the next one whole; chunks 1 and 2 go after them. */
    struct blob_key f;
    for (uint64_t n = 0; newest_seq(&t) < first + 2; n++) {
        cr_assert(lt(u64, n, 100));
        put_n(&t, 70000 + n, 8000, false, &f);
    }
    append_all(&t, u, want + 4096, sizeof(want) - 4096);
    int res = 0;
    cr_assert(eq(int, blob_upload_commit(u, commit_done, &res), 0));
    th_settle(&t);
    cr_assert(eq(int, res, 1));
    struct blob_index_value v;
    cr_assert(blob_store_lookup(t.s, &k, &v));
    cr_assert(eq(u32, v.loc.seg - v.loc.span, (uint32_t)first));
    cr_assert(eq(u32, v.loc.span, 2), "chunk 0 two segments before the commit");
    /* The middle segment holds none of the blob's chunks: gone, it is no loss. */
    struct blob_seg *mid = blob_segment_get(&t.s->segs, (uint32_t)first + 1);
    cr_assert(ne(ptr, mid, NULL));
    blob_segment_kill(&t.s->segs, mid);
    blob_segment_put(&t.s->segs, mid);
    check_bytes(&t, &k, want, sizeof(want));
    make_cold(&t, &k);
    bool present = false;
    cr_assert(eq(sz, blob_keep_many(t.bc, &k, 1, &present), 1), "a hit counted it missing");
    cr_assert(present);
    cr_assert(eq(u64, th_counters(&t).refreshes_unpinned, 0));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    cr_assert(blob_store_lookup(t.s, &k, &v));
    cr_assert(eq(u16, v.loc.span, 0), "copied to the head");
    evict_all_sealed(&t);
    check_bytes(&t, &k, want, sizeof(want));
    th_close(&t);
}
