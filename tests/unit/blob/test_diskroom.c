/*
 * The budget follows the disk: a file system smaller than --max-size (or filled by someone
 * else) makes the store evict to stay inside it instead of failing every write once the disk
 * is full; when room comes back, the budget goes back to --max-size.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/internal.h"
#include "blob/io_sim.h"
#include "harness.h"

#define BLOB_LEN 8000U

static int put_n(struct th *t, uint64_t n, struct blob_key *k)
{
    static uint8_t buf[BLOB_LEN];
    th_fill(buf, sizeof(buf), n, false);
    th_key_of(k, buf, sizeof(buf));
    return th_put(t, k, buf, sizeof(buf), 0, 0);
}

static void open_budget(struct th *t, uint64_t seed, uint64_t max_size)
{
    th_options_small(&t->o);
    t->o.max_size = max_size;
    th_open_sim(t, seed);
}

static uint64_t budget_of(struct th *t)
{
    struct blob_store_stats st;
    blob_store_stats(t->s, &st);
    return st.budget_bytes;
}

Test(blob_diskroom, a_disk_smaller_than_the_budget_evicts_instead_of_failing)
{
    struct th t = { 0 };
    open_budget(&t, 1, 4ULL << 20);
    /* A 1 MiB disk under a 4 MiB budget: 3 MiB of writes would fill it three times. */
    blob_io_sim_capacity(t.io, 1ULL << 20);
    struct blob_key k;
    struct blob_key last = { 0 };
    uint32_t failed = 0;
    /* Bounded: 400 puts of 8000 bytes. */
    for (uint64_t n = 0; n < 400; n++) {
        int rc = put_n(&t, n, &k);
        if (rc != 0) failed++;
        if (rc == 0) last = k;
    }
    cr_assert(eq(u32, failed, 0), "%u of 400 puts failed on the full disk", failed);
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(lt(u64, st.budget_bytes, 1ULL << 20), "the budget follows the disk");
    cr_assert(gt(u64, st.evicted_segments, 0));
    cr_assert(le(u64, st.disk_bytes, 1ULL << 20));
    cr_assert(blob_exists(t.bc, &last, false), "the newest blob is there");
    uint8_t *out;
    size_t len;
    cr_assert(eq(int, th_get(&t, &last, 0, 0, &out, &len), 0));
    cr_assert(eq(sz, len, BLOB_LEN));
    free(out);
    th_close(&t);
}

Test(blob_diskroom, the_budget_comes_back_when_the_disk_has_room)
{
    struct th t = { 0 };
    open_budget(&t, 2, 2ULL << 20);
    cr_assert(eq(u64, budget_of(&t), 2ULL << 20), "no size known: --max-size");
    blob_io_sim_capacity(t.io, 1ULL << 20);
    blob_store_evict(t.s);
    /* Empty store: 1 MiB free, less 1/64 of it. */
    cr_assert(eq(u64, budget_of(&t), (1ULL << 20) - (1ULL << 20) / 64));
    blob_io_sim_capacity(t.io, 64ULL << 20);
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), 2ULL << 20), "a large disk: --max-size again");
    th_close(&t);
}

/*
 * Another tenant fills the disk: the budget falls to nothing, and every upload is refused as
 * a full store (-ENOSPC, retry later), not as a blob larger than the store takes (-EFBIG,
 * which a retry never stores). The largest blob the store takes follows the disk's size, not
 * what is free on it, so Capabilities say the same before, during and after.
 */
Test(blob_diskroom, a_disk_full_of_other_files_is_a_full_store_not_a_blob_too_large)
{
    struct th t = { 0 };
    open_budget(&t, 4, 16ULL << 20);
    blob_io_sim_capacity(t.io, 4ULL << 20);
    struct blob_key k;
    cr_assert(eq(int, put_n(&t, 1, &k), 0));
    blob_store_evict(t.s);
    uint64_t largest = blob_cas_size_max(t.bc);
    cr_assert(eq(u64, largest, ((4ULL << 20) - (4ULL << 20) / 64) / 4), "a quarter of the disk");
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    blob_io_sim_others(t.io, (4ULL << 20) - st.disk_bytes);
    blob_store_evict(t.s);
    cr_assert(lt(u64, budget_of(&t), 100000), "the budget followed the full disk");
    cr_assert(eq(u64, blob_cas_size_max(t.bc), largest));
    struct blob_key big = k;
    big.size = 100000;
    big.hash[0] ^= 1;
    struct blob_upload *u = NULL;
    cr_assert(eq(int, blob_upload_begin(t.bc, &big, 0, &u), -ENOSPC));
    cr_assert(eq(int, put_n(&t, 2, &k), -ENOSPC));
    /* Room again: the same upload begins. */
    blob_io_sim_others(t.io, 0);
    blob_store_evict(t.s);
    cr_assert(eq(int, blob_upload_begin(t.bc, &big, 0, &u), 0));
    blob_upload_abort(u);
    cr_assert(eq(int, put_n(&t, 2, &k), 0));
    big.size = largest + 1;
    cr_assert(eq(int, blob_upload_begin(t.bc, &big, 0, &u), -EFBIG), "past the disk's quarter");
    th_close(&t);
}

Test(blob_diskroom, uploads_past_the_disks_budget_are_refused_until_eviction_catches_up)
{
    struct th t = { 0 };
    open_budget(&t, 3, 4ULL << 20);
    struct blob_key k;
    /* Bounded: 40 puts, 320 KB. */
    for (uint64_t n = 0; n < 40; n++)
        cr_assert(eq(int, put_n(&t, n, &k), 0));
    /* Someone else fills the disk: 64 KiB left beside what the store holds. */
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    blob_io_sim_capacity(t.io, st.disk_bytes + (128ULL << 10));
    blob_store_evict(t.s);
    blob_store_stats(t.s, &st);
    cr_assert(lt(u64, st.budget_bytes, 1ULL << 20));
    cr_assert(le(u64, st.disk_bytes + t.o.segment_size, st.budget_bytes),
              "eviction left room for the active segment to fill");
    /* Writes go on, inside the smaller disk. Bounded: 100 puts. */
    for (uint64_t n = 100; n < 200; n++)
        cr_assert(eq(int, put_n(&t, n, &k), 0), "put %llu", (unsigned long long)n);
    th_close(&t);
}

/*
 * The active segment is reserved whole when it opens (fallocate): its unwritten tail is
 * neither free on the disk nor in the segments' bytes. Counted nowhere, it came off the budget,
 * and the limit then took the active segment's room off again: on a disk smaller than
 * --max-size the store kept a segment per core less than the disk holds (an eighth of the
 * disk with the default segment size), evicting blobs it had room for.
 */
Test(blob_diskroom, the_active_segments_reserve_is_not_taken_off_the_disks_budget_twice)
{
    struct th t = { 0 };
    open_budget(&t, 5, 16ULL << 20);
    uint64_t cap = 1ULL << 20;
    blob_io_sim_capacity(t.io, cap);
    struct blob_key k;
    cr_assert(eq(int, put_n(&t, 1, &k), 0)); /* opens (and reserves) the active segment */
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), cap - cap / 64),
              "the store may use the whole disk but the margin, its active segment included");
    /* Filled three times over. Bounded: 400 puts of 8000 bytes. */
    for (uint64_t n = 2; n < 400; n++)
        cr_assert(eq(int, put_n(&t, n, &k), 0));
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), cap - cap / 64), "and still with the disk full of segments");
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    /* Kept: up to the limit (the budget less the active segment's room), less the segment
     * the last pass took at most. Before: another segment less (888,952 bytes here). */
    uint64_t seg = t.o.segment_size;
    cr_assert(gt(u64, st.disk_bytes, cap - cap / 64 - 2 * seg), "eviction kept what fits");
    th_close(&t);
}
