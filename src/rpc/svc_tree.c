/*
 * ContentAddressableStorage/GetTree: the directories under a root, breadth first, each once,
 * streamed as GetTreeResponse pages of at most page_size directories (default and cap below)
 * and about 2 MiB. Every page carries the token of the next directory's position, empty on
 * the last one; a call stops after TREE_CALL_MAX directories, or once it visited the
 * positions up to TREE_CALL_MAX past its token (its walk's queue is cut there: a wide tree),
 * with a non-empty token, and the token (a breadth-first position, missing directories
 * counted, in decimal) resumes the walk where it left off. Missing directories below the root are
 * skipped (REAPI: "return the portion present"); a missing root is NOT_FOUND.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "proto/frame.h"
#include "proto/wire.h"
#include "rpc/digest.h"
#include "rpc/internal.h"
#include "rpc/status.h"
#include "rpc/svc.h"
#include "rpc/walk.h"

#define TREE_PAGE_DEFAULT 1000u      /* directories per page when page_size is 0 */
#define TREE_PAGE_MAX     10000u     /* page_size is clamped to this */
#define TREE_PAGE_BYTES   (2u << 20) /* a page is sent once it holds this many bytes */
#define TREE_CALL_MAX     100000u    /* directories one call returns at most */
#define TREE_DIR_MAX      (4u << 20) /* largest Directory message read */

struct tree {
    struct rpc_call *c;  /* the call */
    struct rpc_walk w;   /* the walk */
    uint64_t skip;       /* directories to pass over (page_token) */
    uint64_t sent;       /* directories returned by this call */
    uint64_t next;       /* position after the last directory put in a page */
    bool call_full;      /* TREE_CALL_MAX directories went out: the walk stopped there */
    uint32_t page_size;  /* directories per page */
    uint32_t page_count; /* directories in the page being built */
    uint8_t *page;       /* the page: gRPC prefix, then GetTreeResponse fields */
    size_t page_len;     /* bytes used */
    size_t page_cap;     /* bytes allocated */
};

static int page_reserve(struct tree *t, size_t more)
{
    if (t->page && t->page_len + more <= t->page_cap) return 0;
    size_t cap = t->page_cap ? t->page_cap : 64u << 10;
    while (cap < t->page_len + more) {
        cap *= 2;
    }
    uint8_t *p = proto_alloc_realloc(&t->c->rc->pb_mem, t->page, cap);
    if (!p) return -ENOMEM;
    t->page = p;
    t->page_cap = cap;
    if (t->page_len == 0) t->page_len = PROTO_FRAME_HEADER_SIZE;
    return 0;
}

/* Appends a length-delimited field <field> of <len> bytes at <p>. */
static int page_add(struct tree *t, uint32_t field, const uint8_t *p, size_t len)
{
    int rc = page_reserve(t, 1 + PROTO_WIRE_VARINT_MAX + len);
    if (rc < 0) return rc;
    t->page[t->page_len++] = (uint8_t)proto_wire_key(field, PROTO_WIRE_LEN);
    t->page_len += proto_wire_varint_put(t->page + t->page_len, len);
    memcpy(t->page + t->page_len, p, len);
    t->page_len += len;
    return 0;
}

/* Sends the page with <token> as next_page_token ("" on the last page). */
static int page_send(struct tree *t, const char *token)
{
    int rc = page_reserve(t, 0);
    if (rc == 0 && token[0]) rc = page_add(t, 2, (const uint8_t *)token, strlen(token));
    if (rc < 0) return rc;
    proto_frame_header_put(t->page, (uint32_t)(t->page_len - PROTO_FRAME_HEADER_SIZE));
    rc = rpc_call_send_copy(t->c, t->page, t->page_len);
    t->page_len = PROTO_FRAME_HEADER_SIZE;
    t->page_count = 0;
    return rc;
}

static void tree_free(struct tree *t)
{
    proto_alloc_free(&t->c->rc->pb_mem, t->page);
    t->page = NULL;
    t->page_cap = 0;
    t->page_len = 0;
}

static bool page_is_full(const struct tree *t)
{
    return t->page_count >= t->page_size || t->page_len >= TREE_PAGE_BYTES;
}

static int on_dir(struct rpc_walk *w, const uint8_t *dir, size_t len,
                  const Build__Bazel__Remote__Execution__V2__Directory *d)
{
    (void)d;
    struct tree *t = w->ctx;
    uint64_t index = rpc_walk_visited(w) - 1;
    if (index < t->skip) return 0;
    /* A full page goes out once another directory shows that more follow, so the last page
     * of the tree is sent by on_end with an empty token, never with a token past the end. */
    bool sent_page = false;
    if (page_is_full(t)) {
        char token[24];
        (void)snprintf(token, sizeof(token), "%" PRIu64, index);
        int rc = page_send(t, token);
        if (rc < 0) return rc;
        if (t->sent >= TREE_CALL_MAX) {
            t->call_full = true;
            return -E2BIG; /* the client continues with the token */
        }
        sent_page = true;
    }
    int rc = page_add(t, 1, dir, len);
    if (rc < 0) return rc;
    t->sent++;
    t->page_count++;
    t->next = index + 1;
    return sent_page && !rpc_call_is_writable(t->c) ? 1 : 0;
}

/* The root is over TREE_DIR_MAX: no GetTreeResponse could carry it. */
static void finish_root_too_large(struct rpc_call *c)
{
    rpc_call_finish(c, PROTO_STATUS_RESOURCE_EXHAUSTED,
                    "root_digest: the root directory is over 4 MiB, more than an answer carries");
}

static void on_end(struct rpc_walk *w, int res)
{
    struct tree *t = w->ctx;
    struct rpc_call *c = t->c;
    int rc = res;
    if (res == 0) {
        /* The last page, possibly empty (a token at or past the end). */
        rc = page_send(t, "");
    } else if (res == -E2BIG && !t->call_full) {
        /* The walk queued as many directories as one call visits (a wide tree) and visited
         * them: the page built so far goes out, empty when every one of them was missing,
         * with the position after the last one visited, where the next call goes on. That
         * position is past the token's: every call moves on, however wide a level is. */
        char token[24];
        (void)snprintf(token, sizeof(token), "%" PRIu64, (uint64_t)rpc_walk_visited(w));
        rc = page_send(t, token);
    } else if (res == -E2BIG) {
        rc = 0; /* the page with the token to go on with is out (TREE_CALL_MAX) */
    }
    tree_free(t);
    if (res == -ENOENT) {
        rpc_call_finish(c, PROTO_STATUS_NOT_FOUND, "root directory not found");
        return;
    }
    if (res == -EMSGSIZE) {
        finish_root_too_large(c);
        return;
    }
    if (rc < 0) {
        rpc_call_finish_err(c, rc, "GetTree");
        return;
    }
    rpc_call_finish(c, PROTO_STATUS_OK, NULL);
}

static int parse_token(const char *token, uint64_t *skip)
{
    *skip = 0;
    size_t n = strlen(token);
    if (n > 19) return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (token[i] < '0' || token[i] > '9') return -EINVAL;
        *skip = *skip * 10 + (uint64_t)(token[i] - '0');
    }
    return 0;
}

/* Starts the walk of <req>; on a malformed request, *<field> names the field at fault. */
static int tree_begin(struct tree *t,
                      const Build__Bazel__Remote__Execution__V2__GetTreeRequest *req,
                      const char **field)
{
    struct blob_key k;
    *field = "root_digest";
    int rc = rpc_digest_cas_key(req->root_digest, &k);
    if (rc < 0) return rc;
    *field = "digest_function";
    if (!rpc_digest_fn_is_served((int)req->digest_function)) return -ENOTSUP;
    *field = "page_token";
    rc = parse_token(req->page_token, &t->skip);
    if (rc < 0) return rc;
    *field = "GetTree";
    uint32_t ps = req->page_size > 0 ? (uint32_t)req->page_size : TREE_PAGE_DEFAULT;
    t->page_size = ps < TREE_PAGE_MAX ? ps : TREE_PAGE_MAX;
    struct walk_digest root;
    memcpy(root.hash, k.hash, BLOB_HASH_SIZE);
    root.size = k.size;
    t->w.rc = t->c->rc;
    t->w.on_dir = on_dir;
    t->w.on_end = on_end;
    t->w.ctx = t;
    t->w.dir_max = TREE_DIR_MAX;
    /* The positions up to one call's worth past the token: the queue is cut there. */
    t->w.visit_max = t->skip + TREE_CALL_MAX + 1;
    t->w.cut_at_max = true;
    return rpc_walk_start(&t->w, &root);
}

static void get_tree_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    ProtobufCAllocator *a = rpc_call_pb_allocator(c);
    struct tree *t;
    Build__Bazel__Remote__Execution__V2__GetTreeRequest *req =
        rpc_call_unpack(c, &build__bazel__remote__execution__v2__get_tree_request__descriptor, msg,
                        len, sizeof(*t), (void **)&t);
    if (!req) return;
    t->c = c;
    c->svc = t;
    const char *field = "GetTree";
    int rc = tree_begin(t, req, &field);
    build__bazel__remote__execution__v2__get_tree_request__free_unpacked(req, a);
    if (rc == -ENOENT) {
        rpc_call_finish(c, PROTO_STATUS_NOT_FOUND, "root directory not found");
        return;
    }
    if (rc == -EMSGSIZE) {
        finish_root_too_large(c);
        return;
    }
    if (rc < 0) rpc_call_finish_err(c, rc, field);
}

static void get_tree_on_writable(struct rpc_call *c)
{
    struct tree *t = c->svc;
    rpc_walk_resume(&t->w);
}

static void get_tree_on_cancel(struct rpc_call *c)
{
    struct tree *t = c->svc;
    if (!t) return;
    rpc_walk_stop(&t->w);
    tree_free(t);
}

const struct rpc_method rpc_svc_cas_get_tree = {
    .path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/GetTree",
    .route = RPC_ROUTE_GRPC_GET_TREE,
    .on_message = get_tree_on_message,
    .on_writable = get_tree_on_writable,
    .on_cancel = get_tree_on_cancel,
};
