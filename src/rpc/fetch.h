/*
 * Reading a whole stored blob into memory, for the services that need a blob's bytes at once
 * (batch reads, action results, directories and trees). The bytes land in counted memory
 * (rpc_core.pb_mem) after <reserve> free bytes, so a caller can put a gRPC or protobuf header
 * in front and send the buffer without another copy.
 */
#ifndef RINGCAS_RPC_FETCH_H
#define RINGCAS_RPC_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "blob/store.h"

struct rpc_core;
struct rpc_fetch;

/* The fetch ended: <res> 0 (the bytes are in f->buf + f->reserve, f->len of them) or -errno. */
typedef void rpc_fetch_fn(struct rpc_fetch *f, int res);

struct rpc_fetch {
    struct rpc_core *rc;   /* whose engine and memory (the core's) */
    struct blob_reader *r; /* the open reader, or NULL */
    uint8_t *buf;          /* counted memory: <reserve> bytes, then the blob; or NULL */
    size_t reserve;        /* free bytes kept in front of the blob */
    size_t len;            /* blob bytes in buf */
    size_t cap;            /* bytes allocated after <reserve> */
    uint64_t max;          /* refuse blobs larger than this (-EMSGSIZE) */
    rpc_fetch_fn *done;    /* the caller's callback */
    void *ctx;             /* for the caller */
};

/*
 * Starts reading <k> as <enc> (the zstd form's size is not known ahead: the buffer grows).
 * Returns 0 (<done> runs later, exactly once unless rpc_fetch_cancel), or -errno at once
 * (-ENOENT, -EAGAIN, -EMSGSIZE, -ENOMEM ...). f->rc, reserve, max, done and ctx must be set.
 */
MUST_CHECK int rpc_fetch_start(struct rpc_fetch *f, const struct blob_key *k,
                               enum blob_encoding enc);

/* Stops a fetch in progress: its pending disk read is cancelled and <done> will not run. */
void rpc_fetch_cancel(struct rpc_fetch *f);

/* Takes the buffer away from <f> (the caller frees it with proto_alloc_free on pb_mem). */
uint8_t *rpc_fetch_take(struct rpc_fetch *f);

/* Frees the buffer (after done or cancel). NULL buffers are fine. */
void rpc_fetch_release(struct rpc_fetch *f);

#endif /* RINGCAS_RPC_FETCH_H */
