/*
 * One rpc core on a real ring with the engine on a simulated disk, for unit tests of the rpc
 * layer's pieces that need both (connections, fetches, walks).
 */
#ifndef RINGCAS_TESTS_UNIT_RPC_ENV_H
#define RINGCAS_TESTS_UNIT_RPC_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <nghttp2/nghttp2.h>

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

/* Opens the core (8 receive buffers) and a store whose disk takes one read at a time, and
 * stores a blob of three chunks (12 KiB of <fill>; its key in *<k>): of two readers of it,
 * the second waits for the disk. */
void rpc_env_open_one_disk_slot(struct rpc_env *e, int fill, struct blob_key *k);

/* Runs the ring and the simulated disk for <ms> of real time. */
void rpc_env_run_ms(struct rpc_env *e, uint64_t ms);

/* Takes every free op of the core's table (it is full then); *<n> of them, in an array
 * that rpc_env_ops_put_all gives back and frees. */
struct ring_op **rpc_env_ops_take_all(struct rpc_env *e, size_t *n);
void rpc_env_ops_put_all(struct ring_op **ops, size_t n);

/* A dispatched BatchUpdateBlobs call with no connection, waiting for its request; with a
 * grpc-timeout of <timeout_ms> unless it is 0. */
struct rpc_call *rpc_env_call_open(struct rpc_env *e, int32_t sid, uint64_t timeout_ms);

/* Ends <c> (CANCELLED, unless it is over) and frees it. */
void rpc_env_call_close(struct rpc_call *c);

/* nghttp2's client on the other end of a TCP connection on 127.0.0.1 that the core serves. */
struct rpc_env_client {
    int fd;                   /* the client's end, non-blocking */
    bool closed;              /* the stream closed: the call is over */
    nghttp2_session *session; /* the client's session */
    uint8_t *body;            /* the gRPC-framed request (the test's memory) */
    size_t body_len;          /* bytes of it */
    size_t body_off;          /* bytes handed to nghttp2 */
};

/* Frames, at <body>, a WriteRequest {resource_name <name>, data of <data_len> bytes} for
 * gRPC, the data left for the caller at the returned offset; sets *<len> to the whole. */
size_t rpc_env_write_request(uint8_t *body, const char *name, size_t data_len, size_t *len);

/* Connects a plain TCP client to the core (what it sends first selects the protocol: an
 * HTTP/1.1 request, for one); returns the client's end, non-blocking. */
int rpc_env_connect_raw(struct rpc_env *e);

/* Connects <cl> to the core and starts a call of <path> whose request is <cl>'s body. */
void rpc_env_client_connect(struct rpc_env *e, struct rpc_env_client *cl, const char *path);

#endif /* RINGCAS_TESTS_UNIT_RPC_ENV_H */
