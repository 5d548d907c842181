/*
 * Per-ring client state: allocators, counters and the wait loops of the synchronous helpers.
 */
#include "client/client.h"

#include <string.h>

void client_core_options(struct ring_core_options *opts)
{
    ring_core_options_default(opts);
    opts->sq_entries = 256;
    opts->cq_entries = 4096;
    opts->ops_max = 4096;
    opts->recv_buf_count = 256;
    opts->recv_buf_size = 64 * 1024;
    opts->iowq_bounded_max = 2;
    opts->iowq_unbounded_max = 2;
}

void client_init(struct client *cl, struct ring_core *core)
{
    ASSERT(core);
    memset(cl, 0, sizeof(*cl));
    cl->core = core;
    proto_alloc_init(&cl->h2_mem);
    proto_alloc_init(&cl->pb_mem);
    proto_alloc_init(&cl->zstd_mem);
    proto_alloc_protobuf(&cl->pb_mem, &cl->pb);
}

bool client_is_idle(const struct client *cl)
{
    return base_counter_get(&cl->counters.conns) == 0 &&
           base_counter_get(&cl->counters.calls) == 0 &&
           base_counter_get(&cl->counters.segs_in_send) == 0;
}

void client_deinit(struct client *cl)
{
    if (!cl) return;
    bool idle = client_is_idle(cl);
    ASSERT(idle);
    uint64_t streams = base_counter_get(&cl->counters.streams);
    ASSERT(streams == 0);
    /* Everything the libraries took came back: a leak here is a bug of ours. */
    uint64_t blocks = base_counter_get(&cl->h2_mem.blocks) + base_counter_get(&cl->pb_mem.blocks) +
                      base_counter_get(&cl->zstd_mem.blocks);
    ASSERT(blocks == 0);
    cl->core = NULL;
}

int client_wait(struct client *cl, const bool *done)
{
    /* Bounded by the callers' timeouts: each tick waits for the next completion. */
    while (!*done) {
        int rc = ring_core_tick(cl->core, RING_WAIT_FOREVER);
        if (rc < 0) return rc;
    }
    return 0;
}

int client_wait_idle(struct client *cl)
{
    /* Bounded as client_wait: closing connections cancel their ops. */
    while (!client_is_idle(cl)) {
        int rc = ring_core_tick(cl->core, RING_WAIT_FOREVER);
        if (rc < 0) return rc;
    }
    return 0;
}
