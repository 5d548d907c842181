/*
 * One rpc core on a real ring with the engine on a simulated disk, for unit tests of the rpc
 * layer's pieces that need both (connections, fetches, walks).
 */
#ifndef RINGCAS_TESTS_UNIT_RPC_ENV_H
#define RINGCAS_TESTS_UNIT_RPC_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob/io_sim.h"
#include "blob/store.h"
#include "ring/core.h"
#include "rpc/internal.h"

struct rpc_env {
    struct ring_core *core;
    struct rpc_core *rc;
    struct rpc_config cfg;
    struct blob_io *io;
    struct blob_store *store;
    struct blob_store_options bo; /* the store's options: set by rpc_env_defaults, then the
                                     test's own changes, before rpc_env_open */
};

/* Small store options on the simulated disk: 4 KiB chunks, 1 MiB segments, no fsync. */
void rpc_env_defaults(struct rpc_env *e);

/* Opens the core with <bufs> receive buffers of 16 KiB, and the store with e->bo. */
void rpc_env_open(struct rpc_env *e, uint32_t bufs);

/* Stops the core's timers and closes everything. */
void rpc_env_close(struct rpc_env *e);

/* Runs the ring and the simulated disk until *<flag> is true (asserts it gets there). */
void rpc_env_run_until(struct rpc_env *e, const bool *flag);

/* Stores <data> as a CAS blob through the engine (unless present); its key in *<k>. */
void rpc_env_put(struct rpc_env *e, const void *data, size_t len, struct blob_key *k);

#endif /* RINGCAS_TESTS_UNIT_RPC_ENV_H */
