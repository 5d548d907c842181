/*
 * The latency histogram: bucket layout (exact below 128, continuous, 1/128 resolution
 * above), quantiles against a known distribution, merging, and the clamp past its range.
 */
#include <stdint.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "client/hist.h"

static struct client_hist h;
static struct client_hist g;

Test(client_hist, buckets_are_exact_then_continuous)
{
    for (uint64_t v = 0; v < 128; v++) {
        cr_assert(eq(sz, client_hist_index(v), (size_t)v));
    }
    /* Every bucket starts one past the end of the one before. */
    for (size_t i = 1; i < CLIENT_HIST_BUCKETS; i++) {
        cr_assert(eq(u64, client_hist_lowest(i), client_hist_highest(i - 1) + 1), "bucket %zu", i);
        cr_assert(eq(sz, client_hist_index(client_hist_lowest(i)), i));
        cr_assert(eq(sz, client_hist_index(client_hist_highest(i)), i));
    }
}

Test(client_hist, resolution_is_within_one_percent)
{
    for (uint64_t v = 128; v < (1ull << 40); v = v * 3 / 2 + 7) {
        size_t i = client_hist_index(v);
        uint64_t lo = client_hist_lowest(i);
        uint64_t hi = client_hist_highest(i);
        cr_assert(le(u64, lo, v));
        cr_assert(ge(u64, hi, v));
        cr_assert(le(u64, (hi - lo) * 128, lo), "bucket of %llu too wide", (unsigned long long)v);
    }
}

Test(client_hist, quantiles_of_a_uniform_distribution)
{
    client_hist_reset(&h);
    cr_assert(eq(u64, client_hist_quantile(&h, 500000), 0));
    for (uint64_t v = 1; v <= 100000; v++) {
        client_hist_record(&h, v * 1000); /* 1 us .. 100 ms */
    }
    cr_assert(eq(u64, h.count, 100000));
    cr_assert(eq(u64, h.min, 1000));
    cr_assert(eq(u64, h.max, 100000000));
    uint64_t p50 = client_hist_quantile(&h, 500000);
    uint64_t p99 = client_hist_quantile(&h, 990000);
    uint64_t p999 = client_hist_quantile(&h, 999000);
    cr_assert(ge(u64, p50, 50000000));
    cr_assert(le(u64, p50, 50000000 + 50000000 / 128));
    cr_assert(ge(u64, p99, 99000000));
    cr_assert(le(u64, p99, 99000000 + 99000000 / 128));
    cr_assert(ge(u64, p999, 99900000));
    cr_assert(le(u64, p999, 100000000));
    cr_assert(eq(u64, client_hist_quantile(&h, 1000000), 100000000));
    cr_assert(eq(u64, client_hist_mean(&h), 50000500));
}

Test(client_hist, merge_adds_counts_and_extremes)
{
    client_hist_reset(&h);
    client_hist_reset(&g);
    client_hist_record(&h, 10);
    client_hist_record(&g, 5000);
    client_hist_record(&g, 7);
    client_hist_merge(&h, &g);
    cr_assert(eq(u64, h.count, 3));
    cr_assert(eq(u64, h.min, 7));
    cr_assert(eq(u64, h.max, 5000));
    cr_assert(eq(u64, client_hist_quantile(&h, 500000), 10));
}

Test(client_hist, values_past_the_range_land_in_the_last_bucket)
{
    client_hist_reset(&h);
    client_hist_record(&h, UINT64_MAX);
    cr_assert(eq(u64, h.buckets[CLIENT_HIST_BUCKETS - 1], 1));
    cr_assert(eq(u64, client_hist_quantile(&h, 500000), UINT64_MAX));
}
