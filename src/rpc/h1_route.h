/*
 * Where an HTTP/1.1 request goes: the operations endpoints, the cache's CAS and AC entries
 * under an instance prefix, or a plain key. Pure functions of the method and the path, so
 * routing and key derivation are tested without a server.
 *
 *   /metrics, /healthz, /readyz       GET, HEAD
 *   <prefix>/cas/<64 hex>             GET, HEAD, PUT   the CAS (shared by every prefix)
 *   <prefix>/ac/<64 hex>              GET, HEAD, PUT   the action cache of instance <prefix>
 *   any other path                    GET, HEAD, PUT   a plain key -> value entry
 *
 * <prefix> is the path before "/cas/" or "/ac/" without its leading slash ("/bazel" names
 * instance "bazel"; no prefix is the instance ""). A path whose next-to-last segment is "cas"
 * or "ac" but whose last segment is not 64 hex digits is refused (400), so a mistyped digest
 * never silently becomes a plain key.
 */
#ifndef RINGCAS_RPC_H1_ROUTE_H
#define RINGCAS_RPC_H1_ROUTE_H

#include <stdint.h>

#include "rpc/h1_parse.h"
#include "rpc/keys.h"
#include "rpc/metrics.h"

enum rpc_h1_target {
    RPC_H1_TARGET_NONE = 0, /* answered with route.status at once */
    RPC_H1_TARGET_METRICS,
    RPC_H1_TARGET_HEALTHZ,
    RPC_H1_TARGET_READYZ,
    RPC_H1_TARGET_CAS,
    RPC_H1_TARGET_AC,
    RPC_H1_TARGET_KV,
};

struct rpc_h1_route {
    enum rpc_h1_target target; /* what serves the request */
    enum rpc_route metric;     /* the route counted in rpc_metrics */
    int status;                /* target NONE: 400, 405 or 501 */
    const char *allow;         /* status 405: the Allow field's value */
    const char *err_desc;      /* target NONE: why, one static line */
    uint8_t key[RPC_KEY_SIZE]; /* CAS: the SHA-256; AC and KV: the derived engine key */
};

/*
 * Routes a request of method <method> (its token <name>) for <path> (origin-form path, no
 * query) into <out>. Never fails: a request that cannot be served gets target NONE and a
 * status.
 */
void rpc_h1_route(enum rpc_h1_method method, const struct rpc_h1_span *name,
                  const struct rpc_h1_span *path, struct rpc_h1_route *out);

#endif /* RINGCAS_RPC_H1_ROUTE_H */
