/*
 * The Tree scan (src/rpc/tree_scan.c): Directories handed over whole whatever the pieces,
 * in place when they lie in one piece, the framing checked as protobuf-c checks it.
 * tests/fuzz/fuzz_tree_scan.c holds it to protobuf-c on arbitrary bytes.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>

#include "proto/alloc.h"
#include "rpc/tree_scan.h"

struct seen {
    int dirs;
    uint8_t bytes[256]; /* the Directories, one after another */
    size_t len;
    const uint8_t *last; /* where the last one was handed over */
    int fail_at;         /* the Directory whose callback fails (1-based), or 0 */
};

static int on_dir(void *ctx, const uint8_t *dir, size_t len)
{
    struct seen *s = ctx;
    s->dirs++;
    if (s->fail_at == s->dirs) return -ENOENT;
    cr_assert_leq(s->len + len, sizeof(s->bytes));
    memcpy(s->bytes + s->len, dir, len);
    s->len += len;
    s->last = dir;
    return 0;
}

static struct proto_alloc mem;

static void setup(void)
{
    proto_alloc_init(&mem);
}

/* root {file "a"}, unknown field 3 (varint), children {file "bc"}, children {} */
static const uint8_t tree[] = {
    0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 'a',      /* root: Directory{files{name "a"}} */
    0x18, 0x96, 0x01,                             /* field 3, varint 150 */
    0x12, 0x06, 0x0a, 0x04, 0x0a, 0x02, 'b', 'c', /* children */
    0x12, 0x00,                                   /* an empty child */
};
static const uint8_t dirs[] = { 0x0a, 0x03, 0x0a, 0x01, 'a', 0x0a, 0x04, 0x0a, 0x02, 'b', 'c' };

static int scan(const uint8_t *p, size_t len, size_t step, uint64_t dir_max, struct seen *s)
{
    struct rpc_tree_scan sc = { .mem = &mem, .on_dir = on_dir, .ctx = s, .dir_max = dir_max };
    rpc_tree_scan_init(&sc, len);
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += step) {
        rc = rpc_tree_scan_feed(&sc, p + off, len - off < step ? len - off : step);
    }
    if (rc == 0) rc = rpc_tree_scan_end(&sc);
    rpc_tree_scan_free(&sc);
    cr_assert_eq(base_counter_get(&mem.bytes), 0, "nothing is kept");
    return rc;
}

TestSuite(rpc_tree_scan, .init = setup);

Test(rpc_tree_scan, every_directory_is_handed_over_whole_whatever_the_pieces)
{
    for (size_t step = 1; step <= sizeof(tree); step++) {
        struct seen s = { 0 };
        cr_assert_eq(scan(tree, sizeof(tree), step, 1024, &s), 0, "step %zu", step);
        cr_assert_eq(s.dirs, 3, "step %zu", step);
        cr_assert_eq(s.len, sizeof(dirs));
        cr_assert_arr_eq(s.bytes, dirs, sizeof(dirs), "step %zu", step);
    }
}

Test(rpc_tree_scan, a_directory_in_one_piece_is_handed_over_where_it_lies)
{
    struct seen s = { 0 };
    cr_assert_eq(scan(tree, sizeof(tree), sizeof(tree), 1024, &s), 0);
    cr_assert_eq(s.last, tree + sizeof(tree), "the empty child, at the end of the input");
    struct seen one = { .fail_at = 0 };
    cr_assert_eq(scan(tree, 7, 7, 1024, &one), 0);
    cr_assert_eq(one.last, tree + 2, "the root, inside the input");
}

Test(rpc_tree_scan, a_directory_over_the_limit_is_refused_before_it_is_gathered)
{
    struct seen s = { 0 };
    cr_assert_eq(scan(tree, sizeof(tree), 1, 5, &s), -E2BIG);
    cr_assert_eq(s.dirs, 1, "the root (5 bytes) passed, the first child (6) did not");
    /* With the child cut after its head and no memory to gather it in, the limit still
     * decides: nothing was allocated for a Directory it refuses. */
    proto_alloc_limit(&mem, 1);
    struct seen cut = { 0 };
    struct rpc_tree_scan sc = { .mem = &mem, .on_dir = on_dir, .ctx = &cut, .dir_max = 5 };
    rpc_tree_scan_init(&sc, sizeof(tree));
    cr_assert_eq(rpc_tree_scan_feed(&sc, tree, 13), -E2BIG);
    cr_assert_eq(base_counter_get(&mem.failed), 0);
    rpc_tree_scan_free(&sc);
    /* A child within the limit but cut, without memory: -ENOMEM. */
    struct seen busy = { 0 };
    sc = (struct rpc_tree_scan){ .mem = &mem, .on_dir = on_dir, .ctx = &busy, .dir_max = 64 };
    rpc_tree_scan_init(&sc, sizeof(tree));
    cr_assert_eq(rpc_tree_scan_feed(&sc, tree, 13), -ENOMEM);
    cr_assert_eq(busy.dirs, 1);
    rpc_tree_scan_free(&sc);
    proto_alloc_limit(&mem, 0);
}

Test(rpc_tree_scan, framings_protobuf_c_refuses_are_refused)
{
    static const struct {
        const char *what;
        uint8_t bytes[8];
        size_t len;
    } bad[] = {
        { "cut inside a Directory", { 0x0a, 0x05, 0x0a, 0x03 }, 4 },
        { "cut inside a key", { 0x80 }, 1 },
        { "cut inside a length", { 0x0a, 0x80 }, 2 },
        { "field 0", { 0x02, 0x00 }, 2 },
        { "a group", { 0x0b, 0x0c }, 2 },
        { "wire type 7", { 0x0f }, 1 },
        { "the root as a varint", { 0x08, 0x01 }, 2 },
        { "a key of 6 bytes", { 0x88, 0x80, 0x80, 0x80, 0x80, 0x00 }, 6 },
        { "a length of 6 bytes", { 0x0a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 }, 7 },
        { "a length of 2^31", { 0x1a, 0x80, 0x80, 0x80, 0x80, 0x08 }, 6 },
        { "a fixed64 past the end", { 0x19, 0, 0, 0 }, 4 },
        { "a Directory past the end", { 0x12, 0x7f, 0x0a }, 3 },
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (size_t step = 1; step <= bad[i].len; step++) {
            struct seen s = { 0 };
            cr_assert_eq(scan(bad[i].bytes, bad[i].len, step, 1024, &s), -EBADMSG, "%s, step %zu",
                         bad[i].what, step);
        }
    }
    struct seen s = { 0 };
    cr_assert_eq(scan(NULL, 0, 1, 1024, &s), 0, "an empty Tree");
    cr_assert_eq(s.dirs, 0);
}

Test(rpc_tree_scan, a_callbacks_error_ends_the_scan_and_stays)
{
    struct seen s = { .fail_at = 2 };
    struct rpc_tree_scan sc = { .mem = &mem, .on_dir = on_dir, .ctx = &s, .dir_max = 1024 };
    rpc_tree_scan_init(&sc, sizeof(tree));
    cr_assert_eq(rpc_tree_scan_feed(&sc, tree, 14), 0, "the root; the child is cut");
    cr_assert_eq(rpc_tree_scan_feed(&sc, tree + 14, 4), -ENOENT, "the child, gathered, failed");
    cr_assert_eq(rpc_tree_scan_feed(&sc, tree + 18, sizeof(tree) - 18), -ENOENT);
    cr_assert_eq(rpc_tree_scan_end(&sc), -ENOENT);
    cr_assert_eq(s.dirs, 2);
    rpc_tree_scan_free(&sc);
    cr_assert_eq(base_counter_get(&mem.bytes), 0);
}
