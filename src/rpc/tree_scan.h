/*
 * A REAPI Tree blob (build.bazel.remote.execution.v2.Tree) read piece by piece, for the action
 * cache's completeness check: each of its Directory messages (the root, field 1, and the
 * children, field 2) is handed over whole and in order, without the Tree ever being held. A
 * Directory that lies inside one piece is handed over where it lies; one cut by a piece's end
 * is gathered in counted memory, so a scan holds at most one Directory (<dir_max> bytes).
 * Every other field is skipped.
 *
 * The framing is checked as protobuf-c 1.4's unpack checks it: a key of at most 5 bytes whose
 * first byte names a field other than 0, wire types 0, 1, 2 and 5 only (groups and 6, 7 are
 * refused), a varint value of at most 10 bytes, a length of at most 5 bytes that is below
 * 2^31 and fits in what is left of the Tree, fields 1 and 2 length-delimited. So a Tree the
 * scan accepts, whose Directories each decode, is a Tree protobuf-c decodes, with the same
 * Directories (a root given twice is merged by protobuf-c: the same files in all); and the
 * other way round (tests/fuzz/fuzz_tree_scan.c holds both to it). One difference is the
 * order of the errors: protobuf-c checks the framing of the whole Tree before it decodes a
 * Directory, the scan hands Directories over as they come, so a Tree broken further on may
 * first end in on_dir's error (memory refused while one is decoded, say) instead of -EBADMSG.
 */
#ifndef RINGCAS_RPC_TREE_SCAN_H
#define RINGCAS_RPC_TREE_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "proto/alloc.h"

/*
 * A Directory's bytes <dir>/<len>, valid during the call; runs inside rpc_tree_scan_feed, once
 * per Directory, in order. Returns 0, or -errno to stop.
 */
typedef int rpc_tree_dir_fn(void *ctx, const uint8_t *dir, size_t len);

#define RPC_TREE_SCAN_HEAD_MAX 15 /* a key (5 bytes) and a varint value (10) */

struct rpc_tree_scan {
    struct proto_alloc *mem; /* where a cut Directory is gathered */
    rpc_tree_dir_fn *on_dir; /* per Directory */
    void *ctx;               /* for on_dir */
    uint64_t dir_max;        /* largest Directory message handed over (-E2BIG past it) */
    /* private: */
    uint64_t left;                        /* Tree bytes not yet fed */
    uint64_t need;                        /* bytes of the current field still to come */
    uint8_t *buf;                         /* the Directory being gathered, or NULL */
    size_t buf_len;                       /* its bytes so far */
    uint8_t head[RPC_TREE_SCAN_HEAD_MAX]; /* a field's head cut by a piece's end */
    uint8_t head_len;                     /* its bytes */
    uint8_t state;                        /* reading a head, gathering, or skipping */
    int err;                              /* the error that stopped the scan, or 0 */
};

/*
 * Starts a scan of a Tree of <size> bytes. mem, on_dir, ctx and dir_max must be set; the
 * rest is reset.
 */
void rpc_tree_scan_init(struct rpc_tree_scan *s, uint64_t size);

/*
 * Feeds the next <len> bytes (at most what is left of the size). Returns 0, -EBADMSG (the
 * bytes are not a Tree), -E2BIG (a Directory over dir_max), -ENOMEM (gathering one was
 * refused), or on_dir's error; once it returned an error, it returns it again.
 */
MUST_CHECK int rpc_tree_scan_feed(struct rpc_tree_scan *s, const uint8_t *p, size_t len);

/* After the last byte: 0 when the Tree ended on a field's end, else -EBADMSG (or the error). */
MUST_CHECK int rpc_tree_scan_end(const struct rpc_tree_scan *s);

/* Frees a Directory being gathered. Idempotent. */
void rpc_tree_scan_free(struct rpc_tree_scan *s);

#endif /* RINGCAS_RPC_TREE_SCAN_H */
