/*
 * Directory walks (rpc/walk.h): a directory that is missing is skipped and counted, but one the
 * server could not read because it was busy (readers or disk queue full, memory refused, a
 * drain) ends the walk with that error: skipping it would answer a GetTree with part of the
 * tree and OK, or call an action's outputs missing when they are not.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/store.h"
#include "env.h"
#include "rpc/walk.h"

typedef Build__Bazel__Remote__Execution__V2__Directory reapi_dir;
typedef Build__Bazel__Remote__Execution__V2__DirectoryNode reapi_dir_node;
typedef Build__Bazel__Remote__Execution__V2__Digest reapi_digest;

struct walk_test {
    struct rpc_walk w;
    struct rpc_env *e;
    struct blob_key hold_key; /* a blob to hold a reader of from the first directory on */
    struct blob_reader *held; /* that reader: the core's only one */
    int dirs;                 /* directories handed over */
    bool ended;
    int res;
};

static int on_dir(struct rpc_walk *w, const uint8_t *dir, size_t len, const reapi_dir *d)
{
    (void)dir;
    (void)len;
    (void)d;
    struct walk_test *t = w->ctx;
    t->dirs++;
    if (t->dirs == 1 && t->hold_key.size > 0) {
        /* The root was read; now the core's reader is taken, as by a crowd of downloads. */
        cr_assert(eq(
            int, blob_read_open(t->e->rc->blob, &t->hold_key, 0, BLOB_ENCODING_IDENTITY, &t->held),
            0));
    }
    return 0;
}

static void on_end(struct rpc_walk *w, int res)
{
    struct walk_test *t = w->ctx;
    t->ended = true;
    t->res = res;
}

/* A Directory with one subdirectory per digest in <kids>; its bytes in *<out> (malloc). */
static size_t dir_with(const struct blob_key *kids, size_t n, uint8_t **out)
{
    reapi_dir d = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIRECTORY__INIT;
    reapi_dir_node nodes[4];
    reapi_dir_node *ptrs[4];
    reapi_digest digests[4];
    char names[4][24];
    char hex[4][2 * BLOB_HASH_SIZE + 1];
    cr_assert(le(sz, n, 4));
    for (size_t i = 0; i < n; i++) {
        build__bazel__remote__execution__v2__directory_node__init(&nodes[i]);
        build__bazel__remote__execution__v2__digest__init(&digests[i]);
        blob_hash_to_hex(kids[i].hash, hex[i]);
        digests[i].hash = hex[i];
        digests[i].size_bytes = (int64_t)kids[i].size;
        (void)snprintf(names[i], sizeof(names[i]), "d%zu", i);
        nodes[i].name = names[i];
        nodes[i].digest = &digests[i];
        ptrs[i] = &nodes[i];
    }
    d.n_directories = n;
    d.directories = ptrs;
    size_t len = build__bazel__remote__execution__v2__directory__get_packed_size(&d);
    *out = malloc(len ? len : 1);
    cr_assert(ne(ptr, *out, NULL));
    cr_assert(eq(sz, build__bazel__remote__execution__v2__directory__pack(&d, *out), len));
    return len;
}

/*
 * Walks a root with two present children (one of them with a child of its own, the other
 * one's copy); with <hold>, the core's only reader is taken once the root is read.
 */
static void walk_tree(struct rpc_env *e, struct walk_test *t, bool hold)
{
    uint8_t *empty;
    size_t empty_len = dir_with(NULL, 0, &empty);
    /* Two different leaves: an empty Directory and one with a single empty subdirectory. */
    struct blob_key leaves[2];
    rpc_env_put(e, empty, empty_len, &leaves[0]);
    uint8_t *one;
    size_t one_len = dir_with(&leaves[0], 1, &one);
    rpc_env_put(e, one, one_len, &leaves[1]);
    uint8_t *root;
    size_t root_len = dir_with(leaves, 2, &root);
    struct blob_key rk;
    rpc_env_put(e, root, root_len, &rk);
    static const char other[] = "a blob a download holds";
    struct blob_key ok;
    rpc_env_put(e, other, sizeof(other), &ok);
    if (hold) t->hold_key = ok;
    t->e = e;
    t->w = (struct rpc_walk){ .rc = e->rc,
                              .on_dir = on_dir,
                              .on_end = on_end,
                              .ctx = t,
                              .dir_max = 1 << 20,
                              .visit_max = 100 };
    struct walk_digest d;
    memcpy(d.hash, rk.hash, BLOB_HASH_SIZE);
    d.size = rk.size;
    cr_assert(eq(int, rpc_walk_start(&t->w, &d), 0));
    rpc_env_run_until(e, &t->ended);
    if (t->held) blob_read_close(t->held);
    free(empty);
    free(one);
    free(root);
}

Test(rpc_walk, a_directory_the_server_is_too_busy_to_read_ends_the_walk)
{
    struct rpc_env e;
    rpc_env_defaults(&e);
    e.bo.readers_max = 1;
    rpc_env_open(&e, 64);
    struct walk_test t = { 0 };
    walk_tree(&e, &t, true);
    /* Before: the two children were "missing" and the walk ended 0 with only the root. */
    cr_assert(eq(int, t.res, -EAGAIN));
    cr_assert(eq(int, t.dirs, 1));
    rpc_env_close(&e);
}

Test(rpc_walk, every_present_directory_is_visited_when_the_server_has_room)
{
    struct rpc_env e;
    rpc_env_defaults(&e);
    e.bo.readers_max = 1;
    rpc_env_open(&e, 64);
    struct walk_test t = { 0 };
    walk_tree(&e, &t, false);
    cr_assert(eq(int, t.res, 0));
    cr_assert(eq(int, t.dirs, 3)); /* the root, its two children; the shared leaf once */
    rpc_env_close(&e);
}
