/*
 * Operations endpoints. /metrics renders into a buffer that doubles until the text fits
 * (rpc_metrics_render fails as a whole rather than truncate), up to OPS_METRICS_MAX.
 */
#include "rpc/ops.h"

#include <errno.h>
#include <stdlib.h>

#include "blob/store.h"
#include "ring/server.h"

#define OPS_METRICS_FIRST (64u << 10)
#define OPS_METRICS_MAX   (64u << 20)

int rpc_ops_metrics(const struct rpc_config *cfg, char **out, size_t *len)
{
    static struct rpc_metrics zero_metrics;    /* for cores not started yet; never written */
    static struct ring_counters zero_counters; /* likewise */
    uint32_t n = cfg->core_count;
    /* Arrays of pointers, as rpc_metrics_render takes them. */
    struct rpc_metrics **metrics =
        calloc(n, sizeof(*metrics)); /* NOLINT(bugprone-sizeof-expression) */
    struct ring_counters **counters =
        calloc(n, sizeof(*counters)); /* NOLINT(bugprone-sizeof-expression) */
    int rc = -ENOMEM;
    if (!metrics || !counters) goto out_free;
    for (uint32_t i = 0; i < n; i++) {
        /* Published by each core's start hook; the release store pairs with this load. */
        struct rpc_core *core = __atomic_load_n(&cfg->cores[i], __ATOMIC_ACQUIRE);
        metrics[i] = core ? &core->metrics : &zero_metrics;
        counters[i] = core ? ring_core_counters(core->ring) : &zero_counters;
    }
    struct rpc_metrics_view view = {
        .core_count = n,
        .metrics = metrics,
        .ring_counters = counters,
        .sources = cfg->sources,
        .source_count = cfg->source_count,
    };
    /* Bounded: the size doubles from 64 KiB up to OPS_METRICS_MAX. */
    for (size_t size = OPS_METRICS_FIRST; size <= OPS_METRICS_MAX; size *= 2) {
        char *buf = malloc(size);
        if (!buf) break;
        int n_out = rpc_metrics_render(buf, size, &view);
        if (n_out >= 0) {
            *out = buf;
            *len = (size_t)n_out;
            rc = 0;
            break;
        }
        free(buf);
    }
out_free:
    free(metrics);
    free(counters);
    return rc;
}

const char *rpc_ops_unready(const struct rpc_core *rc)
{
    if (ring_server_core_is_draining(rc->ring)) return "draining";
    if (!rc->blob) return "no store";
    if (rc->cfg->store && blob_store_folder_removed(rc->cfg->store)) {
        return "data folder removed";
    }
    if (rc->cfg->store && blob_store_folder_read_only(rc->cfg->store)) {
        return "data folder read-only";
    }
    return NULL;
}

/* ---- the engine's counters ---- */

#define BLOB_NAME(name, kind, help) "blob_" #name,
#define BLOB_KIND(name, kind, help) #kind,
#define BLOB_HELP(name, kind, help) help,
static const char *const blob_names[] = { BLOB_COUNTERS(BLOB_NAME) };
static const char *const blob_kinds[] = { BLOB_COUNTERS(BLOB_KIND) };
static const char *const blob_helps[] = { BLOB_COUNTERS(BLOB_HELP) };

STATIC_ASSERT(sizeof(struct blob_counters) == ARRAY_LEN(blob_names) * sizeof(struct base_counter),
              "the engine's counters are an array of base_counter");

static uint64_t blob_read(void *ctx, uint32_t core, size_t index)
{
    const struct rpc_config *cfg = ctx;
    struct rpc_core *rc = __atomic_load_n(&cfg->cores[core], __ATOMIC_ACQUIRE);
    struct blob_core *bc = rc ? __atomic_load_n(&rc->blob, __ATOMIC_ACQUIRE) : NULL;
    if (!bc) return 0;
    const struct base_counter *first = (const void *)blob_core_counters(bc);
    return base_counter_get(&first[index]);
}

/* Store-wide figures, shown on core 0 only (no series for the other cores), so that sums over
 * cores stay right and a min() or an alert on the bare name sees the real value. */
static const char *const store_names[] = {
    "store_blobs",           "store_index_bytes",      "store_disk_bytes",
    "store_held_bytes",      "store_budget_bytes",     "store_segments",
    "store_pinned_segments", "store_evicted_segments", "store_evicted_blobs",
    "store_dropped_corrupt", "store_recovery_cuts",    "store_read_only",
};
static const char *const store_kinds[] = { "gauge",   "gauge",   "gauge",   "gauge",
                                           "gauge",   "gauge",   "gauge",   "counter",
                                           "counter", "counter", "counter", "gauge" };
static const char *const store_helps[] = {
    "blobs in the index (store-wide, on core 0)",
    "memory held by the index, bytes (store-wide, on core 0)",
    "bytes of every live segment on disk (store-wide, on core 0)",
    ("bytes of evicted segments held open by reads or refresh copies, counted against the "
     "budget (store-wide, on core 0)"),
    "size budget: --max-size, or less while the disk holds less (store-wide, on core 0)",
    "segment files (store-wide, on core 0)",
    "segments pinned by keys waiting for a refresh copy (store-wide, on core 0)",
    "segments deleted by eviction since start (store-wide, on core 0)",
    "index entries dropped by eviction since start (store-wide, on core 0)",
    ("index entries dropped because a stored record was corrupt or the disk could not read it "
     "(store-wide, on core 0)"),
    ("unsealed segments that start-up cut at a damaged record with valid records after it "
     "(store-wide, on core 0)"),
    ("1 while the data folder's file system refuses writes (read-only): uploads are refused "
     "(store-wide, on core 0)"),
};

static uint64_t store_read(void *ctx, uint32_t core, size_t index)
{
    const struct rpc_config *cfg = ctx;
    if (core != 0 || !cfg->store) return 0;
    struct blob_store_stats st;
    blob_store_stats(cfg->store, &st);
    const uint64_t values[] = { st.blobs,           st.index_bytes,      st.disk_bytes,
                                st.held_bytes,      st.budget_bytes,     st.segments,
                                st.pinned_segments, st.evicted_segments, st.evicted_blobs,
                                st.dropped_corrupt, st.recovery_cuts,    st.read_only };
    STATIC_ASSERT(ARRAY_LEN(values) == ARRAY_LEN(store_names), "one value per name");
    return index < ARRAY_LEN(values) ? values[index] : 0;
}

size_t rpc_ops_sources(const struct rpc_config *cfg, struct rpc_metrics_source *out, size_t max)
{
    const struct rpc_metrics_source sources[] = {
        {
            .names = blob_names,
            .kinds = blob_kinds,
            .helps = blob_helps,
            .count = ARRAY_LEN(blob_names),
            .read = blob_read,
            .ctx = (void *)(uintptr_t)cfg,
        },
        {
            .names = store_names,
            .kinds = store_kinds,
            .helps = store_helps,
            .count = ARRAY_LEN(store_names),
            .read = store_read,
            .ctx = (void *)(uintptr_t)cfg,
            .core0_only = true,
        },
    };
    size_t n = ARRAY_LEN(sources) < max ? ARRAY_LEN(sources) : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = sources[i];
    }
    return n;
}
