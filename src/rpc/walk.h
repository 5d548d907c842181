/*
 * A breadth-first walk over a Directory tree stored in the CAS (REAPI Directory messages
 * linked by DirectoryNode digests), for GetTree and for the action cache's completeness check
 * of output directories stored as root Directory digests. Each distinct directory is read
 * once (digests are deduplicated) and handed to the caller in BFS order; a missing
 * non-root directory is skipped and counted, as GetTree's "return the portion present" asks,
 * but one the server was too busy to read ends the walk with that error (-EAGAIN, -ENOMEM,
 * -ECANCELED).
 */
#ifndef RINGCAS_RPC_WALK_H
#define RINGCAS_RPC_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "blob/store.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/fetch.h"

struct rpc_walk;

/*
 * One directory: its bytes <dir>/<len> (valid during the call) and its decoded form <d>.
 * Returns 0 to go on, 1 to pause (the caller resumes with rpc_walk_resume), or -errno to stop
 * (the end callback then gets that error).
 */
typedef int rpc_walk_dir_fn(struct rpc_walk *w, const uint8_t *dir, size_t len,
                            const Build__Bazel__Remote__Execution__V2__Directory *d);

/* The walk ended: 0, -ENOENT (the root is missing), or an error. Runs once, never inline. */
typedef void rpc_walk_end_fn(struct rpc_walk *w, int res);

struct walk_digest {
    uint8_t hash[BLOB_HASH_SIZE]; /* SHA-256 */
    uint64_t size;                /* bytes */
};

struct rpc_walk {
    struct rpc_core *rc;     /* whose engine and memory (the core's) */
    rpc_walk_dir_fn *on_dir; /* per directory */
    rpc_walk_end_fn *on_end; /* at the end */
    void *ctx;               /* for the caller */
    uint64_t dir_max;        /* largest Directory read, bytes */
    uint64_t visit_max;      /* most directories queued (so visited) before -E2BIG */
    bool cut_at_max;         /* past visit_max, directories are left unqueued and the walk
                                ends -E2BIG once it visited those it queued (GetTree: a page
                                of them, and a token to go on from); else queueing one more
                                ends the walk -E2BIG at once (the action cache's check) */
    /* private: */
    struct rpc_fetch f;        /* the directory being read */
    struct walk_digest *queue; /* directories to visit, BFS order (counted memory) */
    size_t head;               /* next to visit */
    size_t tail;               /* entries queued */
    size_t cap;                /* capacity of queue */
    uint32_t *set;             /* open-addressing table of queue indexes + 1 (0: empty) */
    size_t set_cap;            /* slots, a power of two */
    uint64_t missing;          /* directories that were not found (root excluded) */
    uint64_t malformed;        /* directories skipped as unreadable: present but no Directory
                                  (root excluded: it fails the walk), or named by a malformed
                                  or absent digest. GetTree returns the rest; the action
                                  cache's check counts them as missing */
    bool cut;                  /* cut_at_max: a directory was left unqueued */
    bool fetching;             /* a read is in progress */
    bool paused;               /* the caller paused the walk */
    bool ended;                /* the end callback ran or the walk was cancelled */
};

/* Starts at <root>. Returns 0 (callbacks follow) or -errno at once (-ENOMEM, -ENOSYS). */
MUST_CHECK int rpc_walk_start(struct rpc_walk *w, const struct walk_digest *root);

/* Continues a walk paused by its directory callback. */
void rpc_walk_resume(struct rpc_walk *w);

/* Stops the walk (no callback runs after this) and frees its memory. Idempotent. */
void rpc_walk_stop(struct rpc_walk *w);

/* Directories visited so far (handed to on_dir). */
static inline size_t rpc_walk_visited(const struct rpc_walk *w)
{
    return w->head;
}

#endif /* RINGCAS_RPC_WALK_H */
