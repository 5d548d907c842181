/*
 * Operations endpoints. /metrics renders into a buffer that doubles until the text fits
 * (rpc_metrics_render fails as a whole rather than truncate), up to OPS_METRICS_MAX.
 */
#include "rpc/ops.h"

#include <errno.h>
#include <stdlib.h>

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

bool rpc_ops_is_ready(const struct rpc_core *rc)
{
    return !ring_server_core_is_draining(rc->ring);
}
