/*
 * The operations endpoints' bodies, independent of the protocol that serves them:
 * Prometheus text for /metrics over every core, and the readiness answer for /readyz.
 */
#ifndef RINGCAS_RPC_OPS_H
#define RINGCAS_RPC_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "base/assert.h"
#include "rpc/internal.h"

/*
 * Renders the metrics of every core of <cfg> (request metrics, ring counters, registered
 * sources) into a buffer of its own. Returns 0 with *<out> (release with free) and *<len>, or
 * -ENOMEM. Any core's thread; cores that have not started yet render as zeros.
 */
MUST_CHECK int rpc_ops_metrics(const struct rpc_config *cfg, char **out, size_t *len);

/*
 * Why core <rc> should take no new work, for /readyz: NULL when it should (the store is open,
 * its data folder is there and no drain has begun), else a short reason.
 */
const char *rpc_ops_unready(const struct rpc_core *rc);

/*
 * The storage engine's counters as metrics sources: every core's BLOB_COUNTERS (as
 * ringcas_blob_<name>, counters with _total: rpc/metrics.h) and the store-wide figures
 * (ringcas_store_<name>, on core 0). Writes at most <max> sources into <out> and returns how
 * many; they read <cfg> while the server runs.
 */
size_t rpc_ops_sources(const struct rpc_config *cfg, struct rpc_metrics_source *out, size_t max);

#endif /* RINGCAS_RPC_OPS_H */
