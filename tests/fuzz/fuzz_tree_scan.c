/*
 * Fuzz target: the Tree scan of the action cache's completeness check (src/rpc/tree_scan.c)
 * against protobuf-c's unpack of the whole Tree, which it replaced. For any bytes:
 *
 * - the scan accepts them (every Directory decoding) exactly when protobuf-c unpacks them as a
 *   Tree, and then both see the same files (count, and an order-free sum of their digests:
 *   protobuf-c merges a root given twice);
 * - the verdict and the files do not depend on where the pieces are cut;
 * - a Directory is gathered in counted memory only when it is cut, and nothing is kept;
 * - memory refused (a small limit) ends a scan as -ENOMEM, never as another verdict.
 *
 * Input layout: byte 0 picks the piece size (1 to 64, or all at once), byte 1 the largest
 * Directory allowed (0: no limit; else 1 to 255 bytes, which must make the scan say -E2BIG
 * where protobuf-c is not asked); the rest is the Tree.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "proto/alloc.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "rpc/tree_scan.h"

typedef Build__Bazel__Remote__Execution__V2__Directory reapi_dir;

struct files {
    uint64_t count; /* files */
    uint64_t sum;   /* of a hash of each one's digest (hash and size), or of its name */
};

static uint64_t mix(const char *s, uint64_t size)
{
    uint64_t h = 1469598103934665603ULL ^ size;
    for (; s && *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h * 0x9e3779b97f4a7c15ULL;
}

static void add_dir(struct files *f, const reapi_dir *d)
{
    for (size_t i = 0; d && i < d->n_files; i++) {
        const Build__Bazel__Remote__Execution__V2__Digest *dg = d->files[i]->digest;
        f->count++;
        f->sum += dg ? mix(dg->hash, (uint64_t)dg->size_bytes) : mix(d->files[i]->name, 0);
    }
}

struct run {
    ProtobufCAllocator *pa;
    struct proto_alloc *a;
    struct files files;
};

static int on_dir(void *ctx, const uint8_t *dir, size_t len)
{
    struct run *r = ctx;
    uint64_t refusals = base_counter_get(&r->a->failed);
    reapi_dir *d = build__bazel__remote__execution__v2__directory__unpack(r->pa, len, dir);
    /* As the completeness check tells them apart: memory refused is not a malformed one. */
    if (!d) return base_counter_get(&r->a->failed) != refusals ? -ENOMEM : -EBADMSG;
    add_dir(&r->files, d);
    build__bazel__remote__execution__v2__directory__free_unpacked(d, r->pa);
    return 0;
}

/* Scans <p>/<len> in pieces of <step> bytes, each an exact copy so ASan sees a read past it. */
static int scan(const uint8_t *p, size_t len, size_t step, uint64_t dir_max, struct proto_alloc *a,
                struct run *r)
{
    struct rpc_tree_scan s = { .mem = a, .on_dir = on_dir, .ctx = r, .dir_max = dir_max };
    rpc_tree_scan_init(&s, len);
    int rc = 0;
    /* Bounded: <off> grows by at least 1 each turn up to <len>. */
    for (size_t off = 0; off < len && rc == 0; off += step) {
        size_t n = len - off < step ? len - off : step;
        uint8_t *piece = malloc(n);
        ASSERT(piece);
        memcpy(piece, p + off, n);
        rc = rpc_tree_scan_feed(&s, piece, n);
        free(piece);
        /* Only a cut Directory is held between pieces. */
        ASSERT(s.buf == NULL || rc == 0);
    }
    if (rc == 0) rc = rpc_tree_scan_end(&s);
    rpc_tree_scan_free(&s);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    static struct proto_alloc a;
    ProtobufCAllocator pa;
    proto_alloc_init(&a);
    proto_alloc_protobuf(&a, &pa);
    const uint8_t *p = data + 2;
    size_t len = size - 2;
    size_t step = data[0] % 65 ? data[0] % 65 : (len ? len : 1);
    uint64_t dir_max = data[1] ? data[1] : UINT64_MAX;

    struct run whole = { .pa = &pa, .a = &a };
    int whole_rc = scan(p, len, len ? len : 1, UINT64_MAX, &a, &whole);
    ASSERT(whole_rc == 0 || whole_rc == -EBADMSG); /* no limit on memory or Directories */
    struct run cut = { .pa = &pa, .a = &a };
    int cut_rc = scan(p, len, step, dir_max, &a, &cut);
    ASSERT(base_counter_get(&a.bytes) == 0);
    if (cut_rc == -E2BIG) {
        ASSERT(dir_max != UINT64_MAX); /* only a limit refuses a Directory for its size */
    } else {
        /* Where the pieces are cut changes nothing. */
        ASSERT(cut_rc == whole_rc);
        if (cut_rc == 0) {
            ASSERT(cut.files.count == whole.files.count && cut.files.sum == whole.files.sum);
        }
    }

    /* With little memory (a limit from byte 1's value): refused memory ends the scan as
     * -ENOMEM, never as another verdict, and nothing is kept. */
    struct run poor = { .pa = &pa, .a = &a };
    proto_alloc_limit(&a, 64 + (uint64_t)data[1] * 16);
    int poor_rc = scan(p, len, step, UINT64_MAX, &a, &poor);
    proto_alloc_limit(&a, 0);
    ASSERT(base_counter_get(&a.bytes) == 0);
    ASSERT(poor_rc == whole_rc || poor_rc == -ENOMEM);
    if (poor_rc == 0)
        ASSERT(poor.files.count == whole.files.count && poor.files.sum == whole.files.sum);

    Build__Bazel__Remote__Execution__V2__Tree *t =
        build__bazel__remote__execution__v2__tree__unpack(&pa, len, p);
    ASSERT((t != NULL) == (whole_rc == 0));
    if (t) {
        struct files f = { 0 };
        add_dir(&f, t->root);
        for (size_t i = 0; i < t->n_children; i++)
            add_dir(&f, t->children[i]);
        ASSERT(f.count == whole.files.count && f.sum == whole.files.sum);
        build__bazel__remote__execution__v2__tree__free_unpacked(t, &pa);
    }
    ASSERT(base_counter_get(&a.bytes) == 0);
    return 0;
}
