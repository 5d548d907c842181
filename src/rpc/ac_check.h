/*
 * The action cache's completeness check, for every transport: a stored ActionResult is a
 * cache hit only when every blob it references is in the CAS (DESIGN.md, docs/grpc.md
 * "ActionCache"): output files, stdout and stderr, each output directory's Tree blob and every
 * file in that Tree, and for directories given as a root Directory digest (as well as a Tree,
 * or instead of one) every directory and file under it. Those found are refreshed, so
 * eviction keeps the outputs behind a hit. gRPC's GetActionResult (svc_ac.c) and HTTP's
 * GET/HEAD of <prefix>/ac/<hash> (h1_cache.c) answer from its verdict.
 *
 * One check per struct, on the core that started it; it reads Tree and Directory blobs
 * through the core's engine and holds its memory in the core's message memory (pb_mem). A
 * Tree blob is read piece by piece (rpc/tree_scan.h), one Directory message of it at a time,
 * so its size is bounded only by what one check reads in all.
 */
#ifndef RINGCAS_RPC_AC_CHECK_H
#define RINGCAS_RPC_AC_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "blob/store.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "ring/core.h"
#include "rpc/tree_scan.h"
#include "rpc/walk.h"

#define RPC_AC_CHECK_DIR_MAX    (4u << 20)  /* largest Directory read (a blob, or in a Tree) */
#define RPC_AC_CHECK_READ_MAX   (64u << 20) /* Tree and Directory bytes one check reads, in all */
#define RPC_AC_CHECK_DIRS_MAX   (1u << 20)  /* Trees and Directories (blobs, or in a Tree) read */
#define RPC_AC_CHECK_KEYS_BATCH 4096        /* a Tree's keys looked up and kept at once */

struct rpc_ac_check;

/*
 * The check ended: <res> 0 (every referenced blob is present, and was refreshed), -ENOENT
 * (something referenced is missing, or the result names a malformed digest, or a Tree or root
 * Directory that does not decode, or a Tree with a DirectoryNode that names no Directory of the
 * Tree (by a malformed digest, or one none of its Directories hashes to), or a root Directory's
 * subtree holds a directory that does not decode or names one by a malformed digest, or a
 * Directory over RPC_AC_CHECK_DIR_MAX bytes, or its Trees and Directories are more than one
 * check reads: RPC_AC_CHECK_READ_MAX bytes or RPC_AC_CHECK_DIRS_MAX Tree blobs and Directories
 * in all), or -ENOMEM (the core's message memory is taken). Runs once, on the core's thread,
 * never inside rpc_ac_check_start; the callee may reuse <chk>.
 */
typedef void rpc_ac_check_fn(struct rpc_ac_check *chk, int res);

/* A growing array of directory ids (ac_check.c's dir_id) in the core's message memory. */
struct rpc_ac_check_ids {
    uint64_t *v; /* entries (pb_mem), or NULL */
    size_t len;  /* entries used */
    size_t size; /* entries allocated */
};

struct rpc_ac_check {
    struct rpc_core *rc;   /* whose engine and memory; set before rpc_ac_check_start */
    rpc_ac_check_fn *done; /* the verdict; set before rpc_ac_check_start */
    void *ctx;             /* for the caller */
    /* private: */
    Build__Bazel__Remote__Execution__V2__ActionResult *ar; /* decoded (pb_mem), or NULL */
    struct blob_key *keys;                                 /* blobs that must be present (pb_mem) */
    size_t keys_len;                                       /* entries used */
    size_t keys_size;                                      /* entries allocated */
    size_t dir_index;                                      /* next output directory to expand */
    struct blob_reader *tree;                              /* an output directory's Tree blob */
    struct rpc_tree_scan scan;                             /* of <tree>'s bytes */
    struct rpc_ac_check_ids tree_dirs; /* <tree>'s Directories, by the digest of their bytes */
    struct rpc_ac_check_ids tree_refs; /* the digests its DirectoryNodes name */
    struct rpc_walk w;                 /* a root Directory's subtree */
    struct ring_task answer;           /* runs the verdict when nothing had to be read */
    bool dir_tree_done;                /* the Tree of output directory <dir_index> was
                                          checked: its root Directory digest is next */
    bool walking;                      /* w is walking */
    bool answering;                    /* <answer> is queued */
    bool incomplete;                   /* something referenced is missing or malformed */
    int err;                           /* 0, or -ENOMEM once memory ran out while expanding */
    uint64_t read_left;                /* of RPC_AC_CHECK_READ_MAX: bytes still to be read */
    uint64_t dirs_left;                /* of RPC_AC_CHECK_DIRS_MAX: blobs still to be read */
};

/*
 * Decodes <value>/<len> (borrowed during the call) as a REAPI ActionResult and starts
 * checking it. Returns 0 (<chk>->done runs later, exactly once, unless rpc_ac_check_stop),
 * -EBADMSG (the bytes are not an ActionResult: nothing started) or -ENOMEM (the core's message
 * memory is taken: nothing started). With --no-ac-check a decoded result is complete at once
 * (nothing is looked up or refreshed). Core thread.
 */
MUST_CHECK int rpc_ac_check_start(struct rpc_ac_check *chk, const uint8_t *value, size_t len);

/*
 * Stops a check in progress (its reads are cancelled, <done> will not run) and frees its
 * memory. Idempotent; a struct zeroed, or whose check ended, is fine. Core thread.
 */
void rpc_ac_check_stop(struct rpc_ac_check *chk);

/*
 * False when <len> bytes at <p>, the first bytes of a value of <total> bytes (<len> <=
 * <total>), show that the value cannot decode as an ActionResult (nor as any protobuf message
 * protobuf-c 1.4 accepts): a field with wire type 3, 4, 6 or 7 (groups, which protobuf-c
 * refuses, or none), a varint over 10 bytes, or a field running past <total>. True otherwise:
 * the value may decode. Reads only field keys and lengths, not their contents, so an opaque
 * value is told apart at the cost of its first few bytes without holding all of it.
 */
bool rpc_ac_check_may_decode(const uint8_t *p, size_t len, uint64_t total);

#endif /* RINGCAS_RPC_AC_CHECK_H */
