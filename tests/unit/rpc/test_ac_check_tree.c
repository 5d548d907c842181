/*
 * The action-result check reading a Tree blob piece by piece (rpc/ac_check.c, rpc/tree_scan.c)
 * on the simulated disk with 4 KiB chunks, so the Tree comes in ten pieces and most of
 * its Directories are cut by a piece's end: every file is needed, a stop in the middle of a
 * read leaves no reader and no memory, and memory refused in the middle is "busy", not
 * "missing" (a miss would make the client rebuild).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/store.h"
#include "env.h"
#include "rpc/ac_check.h"

typedef Build__Bazel__Remote__Execution__V2__Directory reapi_dir;
typedef Build__Bazel__Remote__Execution__V2__FileNode reapi_file;
typedef Build__Bazel__Remote__Execution__V2__Digest reapi_digest;

#define DIRS  40 /* children of the root */
#define FILES 10 /* files in each */
#define BLOBS 16 /* distinct file contents */

struct check_test {
    struct rpc_ac_check chk;
    struct rpc_env e;
    bool done;
    int res;
};

static void done(struct rpc_ac_check *chk, int res)
{
    struct check_test *t = chk->ctx;
    t->done = true;
    t->res = res;
}

static void put_blob(struct rpc_env *e, int i, struct blob_key *k)
{
    char data[32];
    int n = snprintf(data, sizeof(data), "file %d", i);
    rpc_env_put(e, data, (size_t)n, k);
}

/* A Digest of <k>, its hex in <hex>. */
static void digest_of(const struct blob_key *k, reapi_digest *d, char *hex)
{
    build__bazel__remote__execution__v2__digest__init(d);
    blob_hash_to_hex(k->hash, hex);
    d->hash = hex;
    d->size_bytes = (int64_t)k->size;
}

/*
 * Packs a Tree of DIRS children of FILES files each over the BLOBS blobs (malloc'd into
 * *<out>); with <absent>, the last child also names a blob that is not stored.
 */
static size_t tree_bytes(const struct blob_key *blobs, bool absent, uint8_t **out)
{
    static reapi_file files[DIRS + 1][FILES];
    static reapi_file *file_ptrs[DIRS + 1][FILES];
    static reapi_digest digests[BLOBS + 1];
    static char hex[BLOBS + 1][2 * BLOB_HASH_SIZE + 1];
    static char names[DIRS + 1][FILES][64];
    static reapi_dir dirs[DIRS + 1];
    static reapi_dir *dir_ptrs[DIRS];
    for (int b = 0; b < BLOBS; b++)
        digest_of(&blobs[b], &digests[b], hex[b]);
    struct blob_key missing;
    static const char gone[] = "never stored";
    blob_key_cas(&missing, (const uint8_t *)"0123456789abcdef0123456789abcdef", sizeof(gone));
    digest_of(&missing, &digests[BLOBS], hex[BLOBS]);
    for (int d = 0; d <= DIRS; d++) {
        build__bazel__remote__execution__v2__directory__init(&dirs[d]);
        size_t n = d == DIRS ? 1 : FILES; /* the root: one file */
        for (size_t f = 0; f < n; f++) {
            build__bazel__remote__execution__v2__file_node__init(&files[d][f]);
            (void)snprintf(names[d][f], sizeof(names[d][f]), "output-%02d-%02zu-of-a-tree", d, f);
            files[d][f].name = names[d][f];
            files[d][f].digest = &digests[(d * FILES + (int)f) % BLOBS];
            file_ptrs[d][f] = &files[d][f];
        }
        if (d == DIRS - 1 && absent) files[d][FILES - 1].digest = &digests[BLOBS];
        dirs[d].n_files = n;
        dirs[d].files = file_ptrs[d];
        if (d < DIRS) dir_ptrs[d] = &dirs[d];
    }
    Build__Bazel__Remote__Execution__V2__Tree tree =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__TREE__INIT;
    tree.root = &dirs[DIRS];
    tree.n_children = DIRS;
    tree.children = dir_ptrs;
    size_t len = build__bazel__remote__execution__v2__tree__get_packed_size(&tree);
    *out = malloc(len);
    cr_assert(ne(ptr, *out, NULL));
    build__bazel__remote__execution__v2__tree__pack(&tree, *out);
    return len;
}

/* Packs an ActionResult whose one output directory has the Tree <k> (malloc'd into *<out>). */
static size_t result_bytes(const struct blob_key *k, uint8_t **out)
{
    reapi_digest d;
    char hex[2 * BLOB_HASH_SIZE + 1];
    digest_of(k, &d, hex);
    Build__Bazel__Remote__Execution__V2__OutputDirectory od =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__OUTPUT_DIRECTORY__INIT;
    od.path = "out";
    od.tree_digest = &d;
    Build__Bazel__Remote__Execution__V2__OutputDirectory *ods[] = { &od };
    Build__Bazel__Remote__Execution__V2__ActionResult ar =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__ACTION_RESULT__INIT;
    ar.n_output_directories = 1;
    ar.output_directories = ods;
    size_t len = build__bazel__remote__execution__v2__action_result__get_packed_size(&ar);
    *out = malloc(len);
    cr_assert(ne(ptr, *out, NULL));
    build__bazel__remote__execution__v2__action_result__pack(&ar, *out);
    return len;
}

/* Opens the core and store, stores the blobs and the Tree (<absent>: one file missing), and
 * starts the check of a result naming it; the Tree's size in *<size>. */
static void start(struct check_test *t, bool absent, bool empty_tree, uint64_t *size)
{
    rpc_env_defaults(&t->e);
    rpc_env_open(&t->e, 64);
    struct blob_key blobs[BLOBS];
    for (int b = 0; b < BLOBS; b++)
        put_blob(&t->e, b, &blobs[b]);
    uint8_t *tree = NULL;
    size_t tree_len = empty_tree ? 0 : tree_bytes(blobs, absent, &tree);
    struct blob_key tk;
    rpc_env_put(&t->e, tree ? tree : (const uint8_t *)"", tree_len, &tk);
    uint8_t *ar;
    size_t ar_len = result_bytes(&tk, &ar);
    t->chk = (struct rpc_ac_check){ .rc = t->e.rc, .done = done, .ctx = t };
    cr_assert(eq(int, rpc_ac_check_start(&t->chk, ar, ar_len), 0));
    free(ar);
    free(tree);
    *size = tree_len;
}

/* Nothing is left of the check: no reader, no message memory. */
static void finish(struct check_test *t)
{
    cr_assert(eq(u64, base_counter_get(&t->e.rc->counters.bs_readers), 0));
    cr_assert(eq(u64, base_counter_get(&t->e.rc->pb_mem.bytes), 0));
    rpc_env_close(&t->e);
}

/* One step of the disk and the ring. */
static void step(struct check_test *t)
{
    (void)blob_io_sim_run(t->e.io, 1);
    cr_assert(ge(int, ring_core_tick(t->e.core, 0), 0));
}

/* Runs a whole check (start's arguments) and returns its verdict; the Tree's size in *<size>. */
static int check_verdict(bool absent, bool empty_tree, uint64_t *size)
{
    struct check_test t = { 0 };
    start(&t, absent, empty_tree, size);
    rpc_env_run_until(&t.e, &t.done);
    cr_assert(t.done);
    int res = t.res;
    finish(&t);
    return res;
}

Test(rpc_ac_check_tree, a_tree_read_in_pieces_is_complete_when_every_file_is_present)
{
    uint64_t size;
    cr_assert(eq(int, check_verdict(false, false, &size), 0));
    cr_assert(gt(u64, size, 8 * 4096), "a Tree of ten chunks");
}

Test(rpc_ac_check_tree, a_file_missing_in_the_last_directory_makes_it_incomplete)
{
    uint64_t size;
    cr_assert(eq(int, check_verdict(true, false, &size), -ENOENT));
}

Test(rpc_ac_check_tree, an_empty_tree_is_an_output_directory_with_nothing_in_it)
{
    uint64_t size;
    cr_assert(eq(int, check_verdict(false, true, &size), 0));
}

Test(rpc_ac_check_tree, a_stop_while_a_directory_is_half_gathered_leaves_nothing)
{
    struct check_test t = { 0 };
    uint64_t size;
    start(&t, false, false, &size);
    /* Until a Directory is cut by a piece's end and waits for the next piece. */
    for (int i = 0; i < 10000 && !t.chk.scan.buf && !t.done; i++)
        step(&t);
    cr_assert(not(t.done));
    cr_assert(ne(ptr, t.chk.tree, NULL));
    cr_assert(ne(ptr, t.chk.scan.buf, NULL));
    cr_assert(eq(u64, base_counter_get(&t.e.rc->counters.bs_readers), 1));
    rpc_ac_check_stop(&t.chk);
    for (int i = 0; i < 200; i++)
        step(&t);
    cr_assert(not(t.done), "a stopped check gives no verdict");
    finish(&t);
}

Test(rpc_ac_check_tree, memory_refused_while_reading_is_busy_not_missing)
{
    struct check_test t = { 0 };
    uint64_t size;
    start(&t, false, false, &size);
    for (int i = 0; i < 10000 && !t.chk.tree && !t.done; i++)
        step(&t);
    cr_assert(ne(ptr, t.chk.tree, NULL));
    /* From now on nothing more may be allocated: a cut Directory, a decoded one, more keys. */
    proto_alloc_limit(&t.e.rc->pb_mem, base_counter_get(&t.e.rc->pb_mem.bytes) + 1);
    rpc_env_run_until(&t.e, &t.done);
    cr_assert(eq(int, t.res, -ENOMEM));
    proto_alloc_limit(&t.e.rc->pb_mem, 0);
    finish(&t);
}
