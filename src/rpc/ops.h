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

/* True when core <rc> should take new work: the store is open and no drain has begun. */
bool rpc_ops_is_ready(const struct rpc_core *rc);

#endif /* RINGCAS_RPC_OPS_H */
