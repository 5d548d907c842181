/*
 * The completeness check of an ActionResult: collect the CAS keys it references (output
 * files, stdout, stderr), expand its output directories one at a time (a Tree blob is read
 * piece by piece and the files of each of its Directories collected, rpc_tree_scan; a root
 * Directory digest is walked with rpc_walk), then look every key up at once with refresh
 * (blob_keep_many). The first missing or malformed reference decides -ENOENT without reading
 * further. The verdict always arrives from a read's completion or a deferred task, never
 * inside rpc_ac_check_start.
 *
 * While a Tree is read, its files' keys are looked up and refreshed RPC_AC_CHECK_KEYS_BATCH at
 * a time (after the Directory that fills a batch): the first batch with a missing file ends
 * the read, so a miss on a large Tree costs the bytes up to it, and the keys' memory (48 bytes
 * each, in the core's message memory) stays a batch and one Directory's files, where a Tree of
 * 64 MiB names up to about 800,000. The keys of a result that turns out incomplete may have
 * been refreshed in part; a complete one's all are, as before the verdict.
 * A check refused memory fails busy (RESOURCE_EXHAUSTED / 503, retried), never as a miss. A
 * piece the engine cannot read yet (-EAGAIN: the core's disk queue or read buffers are full)
 * fails the check busy the same way.
 *
 * A Tree is complete only when each directory its DirectoryNodes name is one of its
 * Directories (by the SHA-256 of the Directory's bytes): the client rebuilds the output from
 * the Tree alone, and one it cannot find leaves the output directory short of a folder.
 *
 * What one check reads is bounded in all, not per output directory: a stored result may name
 * the same large Tree or deep root Directory thousands of times, and each GET would read it
 * again. Past RPC_AC_CHECK_READ_MAX bytes or RPC_AC_CHECK_DIRS_MAX blobs (each Directory of a
 * Tree counting as one) the result counts as incomplete (a miss costs a rebuild; serving it
 * unchecked could cost a broken build).
 *
 * With --no-ac-check the verdict is "complete" for any stored ActionResult: a shard behind a
 * frontend (bb-storage's completenessChecking over sharded backends) holds results whose
 * outputs hash to other shards, and the frontend checks them across all of them.
 *
 * Sections: state, expanding output directories, the verdict, the public side, the sniff of
 * opaque values.
 */
#include "rpc/ac_check.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blob/digest.h"
#include "proto/wire.h"
#include "rpc/digest.h"
#include "rpc/internal.h"

typedef Build__Bazel__Remote__Execution__V2__Digest reapi_digest;
typedef Build__Bazel__Remote__Execution__V2__Directory reapi_dir;
typedef Build__Bazel__Remote__Execution__V2__OutputDirectory reapi_out_dir;

/* ---- state ---- */

static struct proto_alloc *mem(const struct rpc_ac_check *chk)
{
    return &chk->rc->pb_mem;
}

/* Ends the read of a Tree blob, if one is open: a pending piece is cancelled. */
static void tree_close(struct rpc_ac_check *chk)
{
    if (!chk->tree) return;
    blob_read_close(chk->tree);
    chk->tree = NULL;
    base_counter_dec(&chk->rc->counters.bs_readers);
    rpc_tree_scan_free(&chk->scan);
    proto_alloc_free(mem(chk), chk->tree_dirs.v);
    proto_alloc_free(mem(chk), chk->tree_refs.v);
    chk->tree_dirs = (struct rpc_ac_check_ids){ 0 };
    chk->tree_refs = (struct rpc_ac_check_ids){ 0 };
}

static void free_all(struct rpc_ac_check *chk)
{
    if (!chk->rc) return;
    tree_close(chk);
    if (chk->ar) {
        build__bazel__remote__execution__v2__action_result__free_unpacked(chk->ar, &chk->rc->pb);
    }
    chk->ar = NULL;
    proto_alloc_free(mem(chk), chk->keys);
    chk->keys = NULL;
    chk->keys_len = 0;
    chk->keys_size = 0;
}

static void finish(struct rpc_ac_check *chk, int res)
{
    free_all(chk);
    chk->done(chk, res); /* may reuse <chk>: last */
}

/* Adds the CAS key of <d> (NULL: nothing); a malformed digest makes the result incomplete. */
static int need(struct rpc_ac_check *chk, const reapi_digest *d)
{
    if (!d) return 0;
    if (chk->keys_len == chk->keys_size) {
        size_t size = chk->keys_size ? 2 * chk->keys_size : 64;
        struct blob_key *k = proto_alloc_realloc(mem(chk), chk->keys, size * sizeof(*k));
        if (!k) return -ENOMEM;
        chk->keys = k;
        chk->keys_size = size;
    }
    if (rpc_digest_cas_key(d, &chk->keys[chk->keys_len]) < 0) {
        chk->incomplete = true;
        return 0;
    }
    chk->keys_len++;
    return 0;
}

/* A file's digest, which REAPI requires (an empty file names the empty blob): a file without
 * one is as malformed as a bad digest, and the result incomplete. */
static int need_file(struct rpc_ac_check *chk, const reapi_digest *d)
{
    if (!d) {
        chk->incomplete = true;
        return 0;
    }
    return need(chk, d);
}

static int need_dir_files(struct rpc_ac_check *chk, const reapi_dir *d)
{
    int rc = 0;
    for (size_t i = 0; d && rc == 0 && i < d->n_files; i++) {
        rc = need_file(chk, d->files[i]->digest);
    }
    return rc;
}

/* ---- the verdict ---- */

/*
 * Looks the keys collected so far up with refresh, and forgets them: 0 (every one is present
 * and kept), -ENOENT (one is missing: the result is incomplete) or -ENOMEM.
 */
static int keep_keys(struct rpc_ac_check *chk)
{
    if (chk->keys_len == 0) return 0;
    bool *present = proto_alloc_calloc(mem(chk), chk->keys_len, sizeof(*present));
    if (!present) return -ENOMEM;
    /* Refreshes what is present, so the outputs outlive the hit; a cold one that cannot be
     * refreshed (the core's queue is full) makes a miss, not a hit eviction takes. */
    size_t n = blob_keep_many(chk->rc->blob, chk->keys, chk->keys_len, present);
    proto_alloc_free(mem(chk), present);
    int rc = n == chk->keys_len ? 0 : -ENOENT;
    chk->keys_len = 0;
    return rc;
}

static void answer(struct rpc_ac_check *chk)
{
    int res = chk->incomplete ? -ENOENT : chk->err;
    if (res == 0) res = keep_keys(chk);
    finish(chk, res);
}

static void answer_task(struct ring_task *task)
{
    struct rpc_ac_check *chk = BASE_CONTAINER_OF(task, struct rpc_ac_check, answer);
    chk->answering = false;
    answer(chk);
}

/* ---- expanding output directories ---- */

static bool expand_next(struct rpc_ac_check *chk);

/* Expands the rest from a read's completion: answers when nothing more is read. */
static void expand_rest(struct rpc_ac_check *chk)
{
    if (expand_next(chk)) answer(chk);
}

/*
 * A read that failed because the server is short of something (memory refused by
 * --message-memory, the core's readers or disk queue full, a drain) says nothing about the
 * blob: the check fails with it (RESOURCE_EXHAUSTED / 503, retried) instead of calling the
 * result incomplete, which would make the client rebuild.
 */
static bool is_busy(int err)
{
    return err == -ENOMEM || err == -EAGAIN || err == -ECANCELED;
}

/* A read of an output directory could not start: the server is busy (an error), or the blob is
 * not there (the result is incomplete). Returns 1: nothing to wait for. */
static int start_failed(struct rpc_ac_check *chk, int err)
{
    if (is_busy(err)) {
        chk->err = err;
    } else {
        chk->incomplete = true;
    }
    return 1;
}

/*
 * A directory's id: 64 bits of its digest. The ids of one Tree's Directories are matched
 * against those its DirectoryNodes name; two distinct digests share an id with odds of about
 * n^2 / 2^65 for n directories, and 8 bytes an id keep a Tree of 2^20 directories within
 * 16 MiB of message memory where whole digests would take 80.
 */
static uint64_t dir_id(const uint8_t hash[BLOB_HASH_SIZE], uint64_t size)
{
    uint64_t id;
    memcpy(&id, hash, sizeof(id)); /* SHA-256 bytes are uniform already */
    return id ^ size * 0x9e3779b97f4a7c15u;
}

static int ids_add(struct rpc_ac_check *chk, struct rpc_ac_check_ids *ids, uint64_t id)
{
    if (ids->len == ids->size) {
        size_t size = ids->size ? 2 * ids->size : 64;
        uint64_t *v = proto_alloc_realloc(mem(chk), ids->v, size * sizeof(*v));
        if (!v) return -ENOMEM;
        ids->v = v;
        ids->size = size;
    }
    ids->v[ids->len++] = id;
    return 0;
}

/*
 * Notes the Directory <dir>/<len> of the Tree being read (<d> decoded): its own digest, and
 * the digests of the directories it names, which the client looks up among the Tree's
 * Directories to rebuild the output (REAPI Tree.children: "the directories referred to by the
 * root and, recursively, all its children"). -ENOENT for a DirectoryNode with a malformed or
 * absent digest, which names nothing the client can find.
 */
static int tree_note(struct rpc_ac_check *chk, const uint8_t *dir, size_t len, const reapi_dir *d)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < d->n_directories; i++) {
        struct blob_key k;
        if (rpc_digest_cas_key(d->directories[i]->digest, &k) < 0) return -ENOENT;
        rc = ids_add(chk, &chk->tree_refs, dir_id(k.hash, k.size));
    }
    uint8_t hash[BLOB_HASH_SIZE];
    if (rc == 0) rc = blob_digest_oneshot(BLOB_DIGEST_SHA256, dir, len, hash);
    if (rc == 0) rc = ids_add(chk, &chk->tree_dirs, dir_id(hash, len));
    return rc;
}

static int id_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* At the end of a Tree: 0 when each directory its DirectoryNodes name is one of its
 * Directories, -ENOENT when one is not (the client could not rebuild the output). */
static int tree_refs_resolve(struct rpc_ac_check *chk)
{
    struct rpc_ac_check_ids *dirs = &chk->tree_dirs;
    if (dirs->len > 0) qsort(dirs->v, dirs->len, sizeof(*dirs->v), id_cmp);
    /* Bounded by the Tree's DirectoryNodes. */
    for (size_t i = 0; i < chk->tree_refs.len; i++) {
        if (dirs->len == 0 ||
            !bsearch(&chk->tree_refs.v[i], dirs->v, dirs->len, sizeof(*dirs->v), id_cmp)) {
            return -ENOENT;
        }
    }
    return 0;
}

/* A Directory of the Tree being read: its files are needed, and the directories it names. */
static int tree_dir(void *ctx, const uint8_t *dir, size_t len)
{
    struct rpc_ac_check *chk = ctx;
    ProtobufCAllocator *a = &chk->rc->pb;
    /* Each Directory of a Tree counts as one a check reads: the ids it keeps are bounded so. */
    if (chk->dirs_left == 0) return -E2BIG;
    chk->dirs_left--;
    uint64_t refusals = base_counter_get(&mem(chk)->failed);
    reapi_dir *d = build__bazel__remote__execution__v2__directory__unpack(a, len, dir);
    if (!d) return base_counter_get(&mem(chk)->failed) != refusals ? -ENOMEM : -EBADMSG;
    int rc = need_dir_files(chk, d);
    if (rc == 0) rc = tree_note(chk, dir, len, d);
    build__bazel__remote__execution__v2__directory__free_unpacked(d, a);
    /* A large Tree's keys are kept a batch at a time: the first missing file ends the read,
     * and the keys' memory stays a batch and one Directory's files. */
    if (rc == 0 && chk->keys_len >= RPC_AC_CHECK_KEYS_BATCH) {
        rc = keep_keys(chk);
        if (rc == -ENOENT) chk->incomplete = true;
    }
    return rc;
}

/* A piece of the Tree blob: scanned, then the next is asked for; at the end, the verdict on
 * this output directory. */
static void tree_piece(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct rpc_ac_check *chk = ctx;
    int rc = res;
    if (rc == 0 && len > 0) {
        rc = rpc_tree_scan_feed(&chk->scan, data, len);
        if (rc == 0) rc = blob_read_next(chk->tree, tree_piece, chk);
        if (rc == 0) return;
    } else if (rc == 0) {
        rc = rpc_tree_scan_end(&chk->scan);
        if (rc == 0) rc = tree_refs_resolve(chk);
    }
    tree_close(chk);
    if (is_busy(rc)) {
        finish(chk, rc);
        return;
    }
    /* Missing, evicted while read, corrupt, not a Tree, a Directory too large, or one named
     * that the Tree does not hold. */
    if (rc < 0) chk->incomplete = true;
    expand_rest(chk);
}

/* Starts reading the Tree blob <k>: 0 (a callback follows), 1 (nothing to read). */
static int tree_start(struct rpc_ac_check *chk, const struct blob_key *k)
{
    struct blob_reader *r;
    int rc = blob_read_open(chk->rc->blob, k, 0, BLOB_ENCODING_IDENTITY, &r);
    if (rc < 0) return start_failed(chk, rc);
    uint64_t size = blob_reader_size(r);
    if (size > chk->read_left) {
        blob_read_close(r);
        chk->incomplete = true; /* more than one check reads */
        return 1;
    }
    chk->read_left -= size;
    chk->tree = r;
    chk->tree_dirs = (struct rpc_ac_check_ids){ 0 };
    chk->tree_refs = (struct rpc_ac_check_ids){ 0 };
    base_counter_inc(&chk->rc->counters.bs_readers);
    chk->scan = (struct rpc_tree_scan){
        .mem = mem(chk), .on_dir = tree_dir, .ctx = chk, .dir_max = RPC_AC_CHECK_DIR_MAX
    };
    rpc_tree_scan_init(&chk->scan, size);
    rc = size == 0 ? 0 : blob_read_next(r, tree_piece, chk);
    if (size == 0 || rc < 0) {
        /* An empty Tree is a Tree with nothing in it. */
        tree_close(chk);
        return rc < 0 ? start_failed(chk, rc) : 1;
    }
    return 0;
}

static int walk_dir(struct rpc_walk *w, const uint8_t *dir, size_t len, const reapi_dir *d)
{
    struct rpc_ac_check *chk = w->ctx;
    (void)dir;
    /* A directory already missing or unreadable decides: the rest of the subtree need not
     * be read. */
    if (w->missing > 0 || w->malformed > 0) return -ENOENT;
    if (len > chk->read_left) return -E2BIG;
    chk->read_left -= len;
    return need_dir_files(chk, d);
}

static void walk_end(struct rpc_walk *w, int res)
{
    struct rpc_ac_check *chk = w->ctx;
    chk->walking = false;
    size_t visited = rpc_walk_visited(w);
    chk->dirs_left -= visited < chk->dirs_left ? visited : chk->dirs_left;
    if (is_busy(res)) {
        finish(chk, res);
        return;
    }
    /* A directory the client cannot read back (not a Directory, or named by a malformed
     * digest) leaves the output as unusable as a missing one: a Tree's undecodable Directory
     * makes the result incomplete too. */
    if (res < 0 || w->missing > 0 || w->malformed > 0) chk->incomplete = true;
    expand_rest(chk);
}

/* Starts the check of output directory <od>'s Tree (<tree>) or else its root Directory: 0 (a
 * callback follows), 1 (nothing to read). */
static int expand_one(struct rpc_ac_check *chk, const reapi_out_dir *od, bool tree)
{
    struct blob_key k;
    if (chk->dirs_left == 0 || chk->read_left == 0) {
        chk->incomplete = true; /* more than one check reads */
        return 1;
    }
    if (tree) {
        if (rpc_digest_cas_key(od->tree_digest, &k) < 0) {
            chk->incomplete = true;
            return 1;
        }
        chk->dirs_left--;
        return tree_start(chk, &k);
    }
    uint64_t max = chk->read_left < RPC_AC_CHECK_DIR_MAX ? chk->read_left : RPC_AC_CHECK_DIR_MAX;
    if (!od->root_directory_digest || rpc_digest_cas_key(od->root_directory_digest, &k) < 0) {
        chk->incomplete = true;
        return 1;
    }
    struct walk_digest root;
    memcpy(root.hash, k.hash, BLOB_HASH_SIZE);
    root.size = k.size;
    chk->w = (struct rpc_walk){ .rc = chk->rc,
                                .on_dir = walk_dir,
                                .on_end = walk_end,
                                .ctx = chk,
                                .dir_max = max,
                                .visit_max = chk->dirs_left };
    int rc = rpc_walk_start(&chk->w, &root);
    if (rc < 0) return start_failed(chk, rc);
    chk->walking = true;
    return 0;
}

/*
 * Expands the output directories one at a time, from the next one. Returns true when nothing
 * more is read (the verdict is due: every directory was expanded, or something is missing),
 * false when a read's completion continues.
 *
 * An output directory that gives both a Tree and a root Directory digest (REAPI 2.3: the
 * latter "MUST match" the Tree's root) has both checked, the Tree first: a client may use
 * either (a Command's output_directory_format lets it ask for the Directories), and the
 * Directory blobs it would read are refreshed only by this walk.
 */
static bool expand_next(struct rpc_ac_check *chk)
{
    /* Bounded by twice the result's output directories. */
    while (!chk->incomplete && chk->err == 0 && chk->dir_index < chk->ar->n_output_directories) {
        const reapi_out_dir *od = chk->ar->output_directories[chk->dir_index];
        bool tree = od->tree_digest && !chk->dir_tree_done;
        chk->dir_tree_done = tree;
        if (!tree || !od->root_directory_digest) {
            chk->dir_index++;
            chk->dir_tree_done = false;
        }
        if (tree && need(chk, od->tree_digest) < 0) {
            chk->err = -ENOMEM;
            break;
        }
        if (expand_one(chk, od, tree) == 0) return false;
    }
    return true;
}

/* ---- the public side ---- */

int rpc_ac_check_start(struct rpc_ac_check *chk, const uint8_t *value, size_t len)
{
    ASSERT(chk->rc);
    ASSERT(chk->done);
    ASSERT(chk->rc->blob);
    chk->ar = NULL;
    chk->keys = NULL;
    chk->keys_len = 0;
    chk->keys_size = 0;
    chk->dir_index = 0;
    chk->dir_tree_done = false;
    chk->tree = NULL;
    memset(&chk->scan, 0, sizeof(chk->scan));
    chk->tree_dirs = (struct rpc_ac_check_ids){ 0 };
    chk->tree_refs = (struct rpc_ac_check_ids){ 0 };
    memset(&chk->w, 0, sizeof(chk->w));
    ring_task_init(&chk->answer, answer_task);
    chk->walking = false;
    chk->answering = false;
    chk->incomplete = false;
    chk->err = 0;
    chk->read_left = RPC_AC_CHECK_READ_MAX;
    chk->dirs_left = RPC_AC_CHECK_DIRS_MAX;
    uint64_t refusals = base_counter_get(&mem(chk)->failed);
    chk->ar = build__bazel__remote__execution__v2__action_result__unpack(&chk->rc->pb, len, value);
    if (!chk->ar) return base_counter_get(&mem(chk)->failed) != refusals ? -ENOMEM : -EBADMSG;
    if (!chk->rc->cfg->opts.ac_check) {
        /* --no-ac-check (only gRPC gets here: HTTP serves /ac/ values as stored without
         * asking): decoded still, so a stored value that is no ActionResult stays NOT_FOUND. */
        chk->answering = true;
        ring_task_defer(chk->rc->ring, &chk->answer);
        return 0;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < chk->ar->n_output_files; i++) {
        rc = need_file(chk, chk->ar->output_files[i]->digest);
    }
    if (rc == 0) rc = need(chk, chk->ar->stdout_digest);
    if (rc == 0) rc = need(chk, chk->ar->stderr_digest);
    if (rc == 0 && chk->keys_len > 0 && chk->ar->n_output_directories > 0) {
        /* A missing file or stdout decides before any tree is read (not refreshed here:
         * answer() refreshes every key of a complete result). */
        bool *present = proto_alloc_calloc(mem(chk), chk->keys_len, sizeof(*present));
        if (!present) rc = -ENOMEM;
        if (present && blob_exists_many(chk->rc->blob, chk->keys, chk->keys_len, false, present) <
                           chk->keys_len) {
            chk->incomplete = true;
        }
        proto_alloc_free(mem(chk), present);
    }
    if (rc < 0) {
        free_all(chk);
        return rc;
    }
    if (expand_next(chk)) {
        chk->answering = true;
        ring_task_defer(chk->rc->ring, &chk->answer);
    }
    return 0;
}

void rpc_ac_check_stop(struct rpc_ac_check *chk)
{
    if (chk->walking) rpc_walk_stop(&chk->w);
    chk->walking = false;
    if (chk->answering) ring_task_cancel(&chk->answer);
    chk->answering = false;
    free_all(chk);
}

/* ---- the sniff of opaque values ---- */

bool rpc_ac_check_may_decode(const uint8_t *p, size_t len, uint64_t total)
{
    ASSERT(len <= total);
    size_t at = 0;
    /* Varints are read as protobuf-c reads them (proto_wire_varint_pbc): the sniff must never
     * call opaque what protobuf-c decodes. Bounded: each turn moves past a byte, or returns. */
    while (at < len) {
        uint64_t key;
        int n = proto_wire_varint_pbc(p + at, len - at, PROTO_WIRE_VARINT_MAX, &key);
        if (n <= 0) return n == 0; /* cut by the end of <p>: cannot tell */
        at += (size_t)n;
        uint64_t left = total - at; /* bytes of the value after the key */
        uint64_t skip;
        switch (key & 7) {
        case 0: /* varint */
            n = proto_wire_varint_pbc(p + at, len - at, PROTO_WIRE_VARINT_MAX, &skip);
            if (n <= 0) return n == 0;
            skip = (uint64_t)n;
            break;
        case 1: /* fixed 64 bits */
            skip = 8;
            break;
        case 2: /* length-delimited */
            n = proto_wire_varint_pbc(p + at, len - at, PROTO_WIRE_VARINT_MAX, &skip);
            if (n <= 0) return n == 0;
            /* protobuf-c reads a length as 32 bits: a longer varint may wrap to a length that
             * fits, so only a short one (< 2^28) is known to run past the end. */
            if (n >= 5) return true;
            skip += (uint64_t)n;
            break;
        case 5: /* fixed 32 bits */
            skip = 4;
            break;
        default: /* groups (3, 4) and the unused 6, 7 */
            return false;
        }
        if (skip > left) return false;
        if (skip >= len - at) return true; /* the next key is past <p> */
        at += (size_t)skip;
    }
    return true;
}
