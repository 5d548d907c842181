/*
 * Log-linear latency histogram. Bucket layout: index v for v < SUB; above, group g >= 1
 * holds the values whose highest set bit is bit g + SUB_BITS - 1, split into SUB buckets
 * of width 2^(g-1). The layout is continuous: group 1 (values SUB..2*SUB-1) has width 1.
 */
#include "client/hist.h"

#include <string.h>

#include "base/assert.h"

STATIC_ASSERT(CLIENT_HIST_EXP_MAX < 63, "a bucket's bounds fit in 64 bits");

void client_hist_reset(struct client_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

size_t client_hist_index(uint64_t v)
{
    if (v < CLIENT_HIST_SUB) return (size_t)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    if (e > CLIENT_HIST_EXP_MAX) return CLIENT_HIST_BUCKETS - 1;
    unsigned shift = e - CLIENT_HIST_SUB_BITS;
    size_t m = (size_t)(v >> shift) - CLIENT_HIST_SUB;
    size_t index = (size_t)(shift + 1) * CLIENT_HIST_SUB + m;
    DEBUG_ASSERT(index < CLIENT_HIST_BUCKETS);
    return index;
}

uint64_t client_hist_lowest(size_t index)
{
    ASSERT(index < CLIENT_HIST_BUCKETS);
    if (index < CLIENT_HIST_SUB) return index;
    size_t g = index / CLIENT_HIST_SUB;
    size_t m = index % CLIENT_HIST_SUB;
    return (uint64_t)(CLIENT_HIST_SUB + m) << (g - 1);
}

uint64_t client_hist_highest(size_t index)
{
    if (index < CLIENT_HIST_SUB) return index;
    size_t g = index / CLIENT_HIST_SUB;
    return client_hist_lowest(index) + ((uint64_t)1 << (g - 1)) - 1;
}

void client_hist_record(struct client_hist *h, uint64_t v)
{
    h->buckets[client_hist_index(v)]++;
    h->count++;
    h->sum += v;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

void client_hist_merge(struct client_hist *into, const struct client_hist *from)
{
    if (from->count == 0) return;
    for (size_t i = 0; i < CLIENT_HIST_BUCKETS; i++) {
        into->buckets[i] += from->buckets[i];
    }
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min) into->min = from->min;
    if (from->max > into->max) into->max = from->max;
}

uint64_t client_hist_quantile(const struct client_hist *h, uint32_t q_ppm)
{
    ASSERT(q_ppm <= 1000000u);
    if (h->count == 0) return 0;
    if (q_ppm == 1000000u) return h->max;
    /* The rank of the value at q: ceil(q * count), at least 1, without overflow. */
    uint64_t rank =
        (h->count / 1000000u) * q_ppm + ((h->count % 1000000u) * q_ppm + 999999u) / 1000000u;
    if (rank == 0) rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < CLIENT_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            if (i == CLIENT_HIST_BUCKETS - 1) return h->max; /* the clamped bucket */
            uint64_t v = client_hist_highest(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

uint64_t client_hist_mean(const struct client_hist *h)
{
    return h->count ? h->sum / h->count : 0;
}
