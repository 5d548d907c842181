/*
 * The rpc layer's counters as metrics sources: RPC_COUNTERS of every core, and the bytes the
 * counting allocators hold for nghttp2 and protobuf-c.
 */
#include <stddef.h>

#include "rpc/internal.h"

#define NAME(name, kind, help) #name,
#define KIND(name, kind, help) #kind,
#define HELP(name, kind, help) help,
static const char *const counter_names[] = { RPC_COUNTERS(NAME) };
static const char *const counter_kinds[] = { RPC_COUNTERS(KIND) };
static const char *const counter_helps[] = { RPC_COUNTERS(HELP) };

STATIC_ASSERT(sizeof(struct rpc_counters) == ARRAY_LEN(counter_names) * sizeof(struct base_counter),
              "rpc counters are an array of base_counter");

static const char *const mem_names[] = { "h2_mem_bytes", "pb_mem_bytes", "pb_mem_refused" };
static const char *const mem_kinds[] = { "gauge", "gauge", "counter" };
static const char *const mem_helps[] = {
    "bytes nghttp2 holds (sessions, streams, HPACK tables)",
    "bytes protobuf-c and gRPC message buffers hold",
    "gRPC message allocations refused over --message-memory",
};

/*
 * The core's table entry, or NULL while it starts: GET /metrics on a core already serving
 * renders every core while later ones are still being set up (a fixed port is probed as soon
 * as it accepts). The acquire pairs with the release that publishes the entry (server.c).
 */
static const struct rpc_core *core_of(const struct rpc_config *cfg, uint32_t core)
{
    if (core >= cfg->core_count) return NULL;
    return __atomic_load_n(&cfg->cores[core], __ATOMIC_ACQUIRE);
}

static uint64_t read_counter(void *ctx, uint32_t core, size_t index)
{
    const struct rpc_core *rc = core_of(ctx, core);
    if (!rc) return 0;
    const struct base_counter *first = (const struct base_counter *)&rc->counters;
    return base_counter_get(&first[index]);
}

static uint64_t read_mem(void *ctx, uint32_t core, size_t index)
{
    const struct rpc_core *rc = core_of(ctx, core);
    if (!rc) return 0;
    const struct base_counter *c[] = { &rc->h2_mem.bytes, &rc->pb_mem.bytes, &rc->pb_mem.failed };
    return base_counter_get(c[index]);
}

size_t rpc_counters_sources(const struct rpc_config *cfg, struct rpc_metrics_source *out,
                            size_t max)
{
    const struct rpc_metrics_source sources[] = {
        {
            .names = counter_names,
            .kinds = counter_kinds,
            .helps = counter_helps,
            .count = ARRAY_LEN(counter_names),
            .read = read_counter,
            .ctx = (void *)(uintptr_t)cfg,
        },
        {
            .names = mem_names,
            .kinds = mem_kinds,
            .helps = mem_helps,
            .count = ARRAY_LEN(mem_names),
            .read = read_mem,
            .ctx = (void *)(uintptr_t)cfg,
        },
    };
    size_t n = ARRAY_LEN(sources) < max ? ARRAY_LEN(sources) : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = sources[i];
    }
    return n;
}
