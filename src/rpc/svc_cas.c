/*
 * build.bazel.remote.execution.v2.ContentAddressableStorage: FindMissingBlobs,
 * BatchUpdateBlobs and BatchReadBlobs (GetTree is in svc_tree.c).
 *
 * The CAS is shared by every instance name (content-addressed, so sharing is safe). Batches
 * run up to BATCH_PARALLEL blobs at once so their commits share the engine's group commit,
 * and answer per blob; a request over the advertised 4 MiB batch limit is INVALID_ARGUMENT.
 *
 * Sections: FindMissingBlobs, batch answers (shared), BatchUpdateBlobs, BatchReadBlobs.
 */
#include <errno.h>
#include <string.h>

#include "blob/store.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "proto/frame.h"
#include "proto/resource.h"
#include "proto/wire.h"
#include "rpc/digest.h"
#include "rpc/fetch.h"
#include "rpc/internal.h"
#include "rpc/status.h"
#include "rpc/svc.h"

#define BATCH_PARALLEL 32         /* blobs of one batch in the engine at once */
#define BATCH_LIMIT    (4u << 20) /* the batch limit Capabilities advertises */

typedef Build__Bazel__Remote__Execution__V2__Digest reapi_digest;

/*
 * The status message of a batch entry refused for its own fields, naming the field as the
 * other services' refusals do (a bare "invalid argument" left the client to guess); NULL when
 * <err> is not about them.
 */
static const char *entry_field_message(int err)
{
    switch (err) {
    case -EINVAL:
        return "digest: malformed (a hash of 64 hex digits and a size of 0 or more)";
    case -ENOTSUP:
        return "digest: not supported (SHA-256 only: 64 hex digits)";
    default:
        return NULL;
    }
}

/* ---- FindMissingBlobs ---- */

/*
 * FindMissingBlobs is decoded and answered by hand (proto/wire.h): a call carries a thousand
 * digests, and protobuf-c would allocate a Digest and a hash string for each, then pack them
 * again. The missing digests go back as the client's own Digest bytes.
 */
enum {
    FIND_INSTANCE = 1, /* FindMissingBlobsRequest.instance_name */
    FIND_DIGESTS = 2,  /* .blob_digests (request), .missing_blob_digests (response) */
    FIND_FUNCTION = 3, /* .digest_function */
};

/* Counts the digests and checks the fields' types: the count, or -EBADMSG / -ENOTSUP. */
static int find_missing_count(const uint8_t *msg, size_t len)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, msg, len);
    struct proto_wire_field f;
    int n = 0;
    int rc;
    /* Bounded: each field takes at least one byte. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        bool want_len = f.number == FIND_INSTANCE || f.number == FIND_DIGESTS;
        bool known = want_len || f.number == FIND_FUNCTION;
        if (known && (f.type == PROTO_WIRE_LEN) != want_len) return -EBADMSG;
        if (f.number == FIND_FUNCTION && !rpc_digest_fn_is_served((int)f.value)) return -ENOTSUP;
        if (f.number == FIND_DIGESTS) n++;
    }
    return rc < 0 ? rc : n;
}

struct digest_span {
    const uint8_t *p; /* the Digest message's bytes, inside the request */
    size_t len;       /* their count */
};

/* Fills <keys> and <spans> with the <n> digests of <msg>. 0, or -EINVAL / -ENOTSUP / -EBADMSG. */
static int find_missing_keys(const uint8_t *msg, size_t len, struct blob_key *keys,
                             struct digest_span *spans)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, msg, len);
    struct proto_wire_field f;
    size_t i = 0;
    int rc;
    /* Bounded: each field takes at least one byte. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number != FIND_DIGESTS) continue;
        const uint8_t *hash;
        size_t hash_len;
        int64_t size;
        if (proto_wire_digest(f.data, f.len, &hash, &hash_len, &size) < 0) return -EBADMSG;
        uint8_t h[BLOB_HASH_SIZE];
        int err = proto_resource_digest((const char *)hash, hash_len, size, h);
        if (err < 0) return err;
        blob_key_cas(&keys[i], h, (uint64_t)size);
        spans[i].p = f.data;
        spans[i].len = f.len;
        i++;
    }
    return rc;
}

/* Sends FindMissingBlobsResponse{missing_blob_digests} made of the missing spans. */
static int find_missing_answer(struct rpc_call *c, const struct digest_span *spans,
                               const bool *present, size_t n)
{
    size_t body = 0;
    for (size_t i = 0; i < n; i++) {
        if (!present[i]) body += 1 + proto_wire_varint_size(spans[i].len) + spans[i].len;
    }
    if (body > UINT32_MAX) return -EMSGSIZE;
    uint8_t *buf = proto_alloc_malloc(&c->rc->pb_mem, PROTO_FRAME_HEADER_SIZE + body);
    if (!buf) return -ENOMEM;
    proto_frame_header_put(buf, (uint32_t)body);
    uint8_t *p = buf + PROTO_FRAME_HEADER_SIZE;
    for (size_t i = 0; i < n; i++) {
        if (present[i]) continue;
        *p++ = (uint8_t)proto_wire_key(FIND_DIGESTS, PROTO_WIRE_LEN);
        p += proto_wire_varint_put(p, spans[i].len);
        memcpy(p, spans[i].p, spans[i].len);
        p += spans[i].len;
    }
    rpc_call_send_owned(c, buf, PROTO_FRAME_HEADER_SIZE + body);
    return 0;
}

static void find_missing_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    struct blob_core *bc = rpc_call_blob(c);
    int n = find_missing_count(msg, len);
    if (n < 0 || !bc) {
        const char *what = n == -ENOTSUP ? "digest_function" : "FindMissingBlobsRequest";
        rpc_call_finish_err(c, n < 0 ? n : -ENOSYS, what);
        return;
    }
    struct proto_alloc *mem = &c->rc->pb_mem;
    size_t count = (size_t)n;
    size_t bytes =
        (count ? count : 1) * (sizeof(struct blob_key) + sizeof(struct digest_span) + sizeof(bool));
    uint8_t *block = proto_alloc_malloc(mem, bytes);
    if (!block) {
        rpc_call_finish_err(c, -ENOMEM, NULL);
        return;
    }
    struct blob_key *keys = (struct blob_key *)(void *)block;
    struct digest_span *spans = (struct digest_span *)(void *)(keys + count);
    bool *present = (bool *)(spans + count);
    int rc = find_missing_keys(msg, len, keys, spans);
    if (rc == 0) {
        /* Exact, in memory; what is present is refreshed so eviction keeps it. */
        (void)blob_exists_many(bc, keys, count, true, present);
        rc = find_missing_answer(c, spans, present, count);
    }
    proto_alloc_free(mem, block);
    if (rc < 0) {
        rpc_call_finish_err(c, rc, "blob_digests");
        return;
    }
    rpc_call_finish(c, PROTO_STATUS_OK, NULL);
}

const struct rpc_method rpc_svc_cas_find_missing = {
    .path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs",
    .route = RPC_ROUTE_GRPC_FIND_MISSING,
    .on_message = find_missing_on_message,
};

/* ---- Batch answers ---- */

/*
 * The arrays a BatchUpdateBlobs or BatchReadBlobs answer points into: a response per blob, a
 * pointer to each, and a status per response. The two methods' response types differ, so the
 * arrays are held untyped here and each method fills them through its own typed pointers.
 */
struct batch_answer {
    void *responses;         /* n responses of the method's type (calloc'd: zero) */
    void *ptrs;              /* n pointers to them, the repeated field's array */
    Google__Rpc__Status *st; /* n statuses, one per response */
};

/*
 * Allocates <a>'s arrays for <n> responses of <response_size> bytes: 0 or -ENOMEM. Either way,
 * batch_answer_end releases them.
 */
static int batch_answer_alloc(struct rpc_call *c, size_t n, size_t response_size,
                              struct batch_answer *a)
{
    struct proto_alloc *mem = &c->rc->pb_mem;
    size_t count = n ? n : 1;
    a->responses = proto_alloc_calloc(mem, count, response_size);
    a->ptrs = proto_alloc_calloc(mem, count, sizeof(void *));
    a->st = proto_alloc_calloc(mem, count, sizeof(*a->st));
    return a->responses && a->ptrs && a->st ? 0 : -ENOMEM;
}

/* Sets <st> to <code> with the static <message>; returns <st> for the response to point at. */
static Google__Rpc__Status *batch_answer_status(Google__Rpc__Status *st, int32_t code,
                                                const char *message)
{
    google__rpc__status__init(st);
    st->code = code;
    st->message = (char *)(uintptr_t)message; /* protobuf-c's field is not const; only read */
    return st;
}

/*
 * Sends <resp> when <rc> is 0, releases <a>'s arrays, and finishes the call: OK once sent, else
 * with <rc>'s status.
 */
static void batch_answer_end(struct rpc_call *c, struct batch_answer *a,
                             const ProtobufCMessage *resp, int rc)
{
    struct proto_alloc *mem = &c->rc->pb_mem;
    if (rc == 0) rc = rpc_call_send_message(c, resp);
    proto_alloc_free(mem, a->responses);
    proto_alloc_free(mem, a->ptrs);
    proto_alloc_free(mem, a->st);
    if (rc == -ENOMEM) {
        /* The answer's arrays and its packed copy come from the core's message memory. */
        rpc_call_finish(c, PROTO_STATUS_RESOURCE_EXHAUSTED, RPC_CALL_MEM_BUSY);
        return;
    }
    if (rc < 0) {
        rpc_call_finish_err(c, rc, NULL);
        return;
    }
    rpc_call_finish(c, PROTO_STATUS_OK, NULL);
}

/* ---- BatchUpdateBlobs ---- */

enum item_stage {
    ITEM_WAIT = 0, /* not started */
    ITEM_APPEND,   /* an append is pending */
    ITEM_COMMIT,   /* the commit is pending (pinned: cannot be cancelled) */
    ITEM_DONE,     /* <err> is its answer */
};

struct update_item {
    struct batch_update *b; /* the batch */
    struct blob_upload *u;  /* while APPEND or COMMIT */
    uint8_t stage;          /* enum item_stage */
    int err;                /* DONE: 0 or -errno */
    const char *why;        /* DONE: a static message naming the entry's field at fault, or NULL */
};

struct batch_update {
    struct rpc_call *c;                                                /* the call */
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest *req; /* holds the data */
    struct update_item *items;                                         /* one per request entry */
    size_t next;                                                       /* first item not started */
    size_t in_flight; /* items in APPEND or COMMIT */
    size_t done;      /* items DONE */
    bool cancelled;   /* on_cancel ran: finish what is pinned, answer nothing */
};

static void update_pump(struct batch_update *b);

static void update_free(struct batch_update *b)
{
    struct proto_alloc *mem = &b->c->rc->pb_mem;
    build__bazel__remote__execution__v2__batch_update_blobs_request__free_unpacked(
        b->req, rpc_call_pb_allocator(b->c));
    b->req = NULL;
    proto_alloc_free(mem, b->items);
    b->items = NULL;
}

static void item_done(struct update_item *it, int err)
{
    struct batch_update *b = it->b;
    if (it->stage == ITEM_APPEND || it->stage == ITEM_COMMIT) b->in_flight--;
    it->stage = ITEM_DONE;
    it->err = err;
    /* The digest's own faults are -EINVAL/-ENOTSUP; -EBADMSG is the engine's of a zstd entry. */
    if (err == -EBADMSG && !it->why) it->why = RPC_STATUS_ZSTD_MALFORMED;
    it->u = NULL;
    b->done++;
}

static void update_answer(struct batch_update *b)
{
    size_t n = b->req->n_requests;
    struct batch_answer a;
    int rc = batch_answer_alloc(
        b->c, n, sizeof(Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response),
        &a);
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response *rs = a.responses;
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response **ptrs = a.ptrs;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *message;
        int code = rpc_status_from_err(b->items[i].err, &message);
        if (b->items[i].why) message = b->items[i].why;
        build__bazel__remote__execution__v2__batch_update_blobs_response__response__init(&rs[i]);
        rs[i].digest = b->req->requests[i]->digest;
        rs[i].status = batch_answer_status(&a.st[i], code, message);
        ptrs[i] = &rs[i];
    }
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse resp =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_UPDATE_BLOBS_RESPONSE__INIT;
    resp.n_responses = n;
    resp.responses = ptrs;
    batch_answer_end(b->c, &a, &resp.base, rc);
}

/* Every item is done (or the call was cancelled and nothing is pinned any more). */
static void update_maybe_end(struct batch_update *b)
{
    if (b->in_flight > 0) return;
    if (b->cancelled) {
        update_free(b);
        return;
    }
    if (b->done < b->req->n_requests) return;
    update_answer(b);
    update_free(b);
}

static void commit_done(void *ctx, int res)
{
    struct update_item *it = ctx;
    struct batch_update *b = it->b;
    struct rpc_call *c = b->c;
    base_counter_dec(&c->rc->counters.bs_uploads);
    item_done(it, res);
    if (!b->cancelled) update_pump(b);
    update_maybe_end(b);
    rpc_call_unpin(c); /* may free the call: last */
}

static void item_commit(struct update_item *it)
{
    int rc = blob_upload_commit(it->u, commit_done, it);
    if (rc < 0) {
        /* Only -EBUSY (an append pending), which cannot happen here. */
        blob_upload_abort(it->u);
        base_counter_dec(&it->b->c->rc->counters.bs_uploads);
        item_done(it, rc);
        return;
    }
    it->stage = ITEM_COMMIT;
    rpc_call_pin(it->b->c);
}

static void append_done(void *ctx, int res)
{
    struct update_item *it = ctx;
    struct batch_update *b = it->b;
    if (res < 0) {
        blob_upload_abort(it->u);
        base_counter_dec(&b->c->rc->counters.bs_uploads);
        item_done(it, res);
    } else {
        item_commit(it);
    }
    update_pump(b);
    update_maybe_end(b);
}

/* Starts item <i>. Returns 0, or -EAGAIN when the engine has no room now (retry later). */
static int item_start(struct batch_update *b, size_t i)
{
    struct update_item *it = &b->items[i];
    const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *r =
        b->req->requests[i];
    struct blob_key k;
    int rc = rpc_digest_cas_key(r->digest, &k);
    it->why = entry_field_message(rc);
    bool zstd = r->compressor == BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD;
    if (rc == 0 && !zstd && r->compressor != 0) {
        rc = -ENOTSUP;
        it->why = "compressor: not supported (IDENTITY or ZSTD)";
    }
    /* Identity data of another length than its digest names can never match it: a size
     * mismatch (INVALID_ARGUMENT), not whatever the engine says of the size named (a huge
     * one is "store full", which a client would retry). */
    if (rc == 0 && !zstd && r->data.len != k.size) rc = -EMSGSIZE;
    struct blob_core *bc = rpc_call_blob(b->c);
    if (rc == 0) {
        rc = blob_upload_begin(bc, &k, zstd ? BLOB_ENCODING_ZSTD : BLOB_ENCODING_IDENTITY, &it->u);
    }
    if (rc == -EAGAIN && b->in_flight > 0) return -EAGAIN;
    if (rc < 0) {
        item_done(it, rc == -EEXIST ? 0 : rc);
        return 0;
    }
    base_counter_inc(&b->c->rc->counters.bs_uploads);
    b->in_flight++;
    it->stage = ITEM_APPEND;
    rc = blob_upload_append(it->u, r->data.data, r->data.len, append_done, it);
    if (rc == -EINPROGRESS) return 0;
    if (rc < 0) {
        blob_upload_abort(it->u);
        base_counter_dec(&b->c->rc->counters.bs_uploads);
        item_done(it, rc);
        return 0;
    }
    item_commit(it);
    return 0;
}

static void update_pump(struct batch_update *b)
{
    /* Bounded by the request's entries. */
    while (b->next < b->req->n_requests && b->in_flight < BATCH_PARALLEL) {
        if (item_start(b, b->next) == -EAGAIN) return;
        b->next++;
    }
}

static void batch_update_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    struct batch_update *b;
    Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest *req = rpc_call_unpack(
        c, &build__bazel__remote__execution__v2__batch_update_blobs_request__descriptor, msg, len,
        sizeof(*b), (void **)&b);
    if (!req) return;
    b->c = c;
    b->req = req;
    c->svc = b;
    size_t n = req->n_requests;
    b->items = proto_alloc_calloc(&c->rc->pb_mem, n ? n : 1, sizeof(*b->items));
    int rc = b->items ? 0 : -ENOMEM;
    if (rc == 0 && !rpc_digest_fn_is_served((int)req->digest_function)) rc = -ENOTSUP;
    if (rc == 0 && !rpc_call_blob(c)) rc = -ENOSYS;
    if (rc < 0) {
        update_free(b);
        rpc_call_finish_err(c, rc, rc == -ENOTSUP ? "digest_function" : NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        b->items[i].b = b;
    }
    update_pump(b);
    update_maybe_end(b);
}

static void batch_update_on_cancel(struct rpc_call *c)
{
    struct batch_update *b = c->svc;
    if (!b || !b->req) return;
    b->cancelled = true;
    /* Pending appends are aborted; pending commits finish (pinned) and are not answered. */
    for (size_t i = 0; i < b->req->n_requests; i++) {
        struct update_item *it = &b->items[i];
        if (it->stage != ITEM_APPEND) continue;
        blob_upload_abort(it->u);
        base_counter_dec(&c->rc->counters.bs_uploads);
        item_done(it, -ECANCELED);
    }
    update_maybe_end(b);
}

const struct rpc_method rpc_svc_cas_batch_update = {
    .path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs",
    .route = RPC_ROUTE_GRPC_BATCH_UPDATE,
    .on_message = batch_update_on_message,
    .on_cancel = batch_update_on_cancel,
};

/* ---- BatchReadBlobs ---- */

struct read_item {
    struct batch_read *b; /* the batch */
    struct rpc_fetch f;   /* the read in progress or its bytes */
    bool running;         /* the fetch is in progress */
    bool done;            /* <err> and (when 0) f's bytes are its answer */
    bool identity;        /* read as identity although the client accepts zstd */
    const char *why;      /* a static message naming its digest's fault, or NULL */
    int err;              /* 0 or -errno */
};

struct batch_read {
    struct rpc_call *c; /* the call */
    Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest *req;
    struct read_item *items; /* one per digest */
    size_t next;             /* first item not started */
    size_t in_flight;        /* fetches running */
    size_t done;             /* items done */
    bool zstd;               /* the client accepts zstd: send the stored frames */
};

static void read_pump(struct batch_read *b);

static void read_free(struct batch_read *b)
{
    if (!b->req) return;
    for (size_t i = 0; b->items && i < b->req->n_digests; i++) {
        struct read_item *it = &b->items[i];
        if (it->running) rpc_fetch_cancel(&it->f);
        if (it->f.rc) rpc_fetch_release(&it->f);
    }
    proto_alloc_free(&b->c->rc->pb_mem, b->items);
    b->items = NULL;
    build__bazel__remote__execution__v2__batch_read_blobs_request__free_unpacked(
        b->req, rpc_call_pb_allocator(b->c));
    b->req = NULL;
}

/* Points the responses of <a> at each digest's status and (when read) its bytes. */
static void read_answer_fill(struct batch_read *b, struct batch_answer *a)
{
    Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response *rs = a->responses;
    Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response **ptrs = a->ptrs;
    for (size_t i = 0; i < b->req->n_digests; i++) {
        const struct read_item *it = &b->items[i];
        const char *message;
        int code = rpc_status_from_read_err(it->err, &message);
        /* A fetch's buffer comes from the core's message memory (docs/grpc.md says so). */
        if (it->err == -ENOMEM) message = RPC_CALL_MEM_BUSY;
        if (it->why) message = it->why;
        build__bazel__remote__execution__v2__batch_read_blobs_response__response__init(&rs[i]);
        rs[i].digest = b->req->digests[i];
        rs[i].status = batch_answer_status(&a->st[i], code, message);
        if (it->err == 0) {
            rs[i].data.data = it->f.buf;
            rs[i].data.len = it->f.len;
            bool zstd = b->zstd && !it->identity;
            if (zstd && it->f.len == 0) {
                /* The empty blob has no stored frame; zero bytes are no zstd stream. */
                rs[i].data.data = (uint8_t *)(uintptr_t)rpc_zstd_empty_frame; /* only read */
                rs[i].data.len = RPC_ZSTD_EMPTY_FRAME_SIZE;
            }
            if (zstd) {
                rs[i].compressor = BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD;
            }
        }
        ptrs[i] = &rs[i];
    }
}

static void read_answer(struct batch_read *b)
{
    size_t n = b->req->n_digests;
    struct batch_answer a;
    int rc = batch_answer_alloc(
        b->c, n, sizeof(Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response), &a);
    if (rc == 0) read_answer_fill(b, &a);
    Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse resp =
        BUILD__BAZEL__REMOTE__EXECUTION__V2__BATCH_READ_BLOBS_RESPONSE__INIT;
    resp.n_responses = n;
    resp.responses = a.ptrs;
    batch_answer_end(b->c, &a, &resp.base, rc);
}

static void read_maybe_end(struct batch_read *b)
{
    if (b->in_flight > 0 || b->done < b->req->n_digests) return;
    read_answer(b);
    read_free(b);
}

static void fetch_done(struct rpc_fetch *f, int res);

/*
 * A blob's zstd form came out larger than the batch limit: incompressible chunks are stored
 * as raw-block frames, a few bytes more per block, so a blob of exactly 4 MiB has a zstd form
 * over 4 MiB. REAPI lets the server answer identity whatever the client accepts
 * (Response.compressor), and the identity bytes fit: read again as identity. Returns 0 (the
 * fetch runs again) or -errno.
 */
static int fetch_again_as_identity(struct read_item *it)
{
    struct batch_read *b = it->b;
    struct blob_key k;
    int rc = rpc_digest_cas_key(b->req->digests[it - b->items], &k);
    if (rc < 0) return rc;
    rpc_fetch_release(&it->f);
    it->identity = true;
    return rpc_fetch_start(&it->f, &k, BLOB_ENCODING_IDENTITY);
}

static void fetch_done(struct rpc_fetch *f, int res)
{
    struct read_item *it = f->ctx;
    struct batch_read *b = it->b;
    if (res == -EMSGSIZE && b->zstd && !it->identity) {
        res = fetch_again_as_identity(it);
        if (res == 0) return; /* still running */
    }
    it->running = false;
    it->done = true;
    it->err = res;
    b->in_flight--;
    b->done++;
    read_pump(b);
    read_maybe_end(b);
}

static int read_item_start(struct batch_read *b, size_t i)
{
    struct read_item *it = &b->items[i];
    struct blob_key k;
    int rc = rpc_digest_cas_key(b->req->digests[i], &k);
    it->why = entry_field_message(rc);
    it->b = b;
    it->f.rc = b->c->rc;
    it->f.max = BATCH_LIMIT;
    it->f.done = fetch_done;
    it->f.ctx = it;
    if (rc == 0) {
        rc = rpc_fetch_start(&it->f, &k, b->zstd ? BLOB_ENCODING_ZSTD : BLOB_ENCODING_IDENTITY);
    }
    if (rc == -EAGAIN && b->in_flight > 0) return -EAGAIN;
    if (rc < 0) {
        it->done = true;
        it->err = rc;
        b->done++;
        return 0;
    }
    it->running = true;
    b->in_flight++;
    return 0;
}

static void read_pump(struct batch_read *b)
{
    /* Bounded by the request's digests. */
    while (b->next < b->req->n_digests && b->in_flight < BATCH_PARALLEL) {
        if (read_item_start(b, b->next) == -EAGAIN) return;
        b->next++;
    }
}

/* 0, or -EINVAL when the digests add up past the batch limit (REAPI: INVALID_ARGUMENT). */
static int read_check(const Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest *req,
                      bool *zstd)
{
    uint64_t total = 0;
    /* Bounded by the request's digests; stops past the limit, before the sum can wrap (two
     * sizes near 2^63 added up to a few bytes and passed). */
    for (size_t i = 0; i < req->n_digests && total <= BATCH_LIMIT; i++) {
        int64_t size = req->digests[i] ? req->digests[i]->size_bytes : 0;
        if (size > 0) total += (uint64_t)size;
    }
    *zstd = false;
    for (size_t i = 0; i < req->n_acceptable_compressors; i++) {
        if (req->acceptable_compressors[i] ==
            BUILD__BAZEL__REMOTE__EXECUTION__V2__COMPRESSOR__VALUE__ZSTD) {
            *zstd = true;
        }
    }
    if (!rpc_digest_fn_is_served((int)req->digest_function)) return -ENOTSUP;
    return total > BATCH_LIMIT ? -EINVAL : 0;
}

static void batch_read_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    struct batch_read *b;
    Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest *req = rpc_call_unpack(
        c, &build__bazel__remote__execution__v2__batch_read_blobs_request__descriptor, msg, len,
        sizeof(*b), (void **)&b);
    if (!req) return;
    b->c = c;
    b->req = req;
    c->svc = b;
    int rc = read_check(req, &b->zstd);
    size_t n = req->n_digests;
    if (rc == 0) {
        b->items = proto_alloc_calloc(&c->rc->pb_mem, n ? n : 1, sizeof(*b->items));
        rc = b->items ? 0 : -ENOMEM;
    }
    if (rc == 0 && !rpc_call_blob(c)) rc = -ENOSYS;
    if (rc < 0) {
        read_free(b);
        const char *what = rc == -EINVAL    ? "digests exceed the 4 MiB batch limit"
                           : rc == -ENOTSUP ? "digest_function"
                                            : NULL;
        rpc_call_finish_err(c, rc, what);
        return;
    }
    read_pump(b);
    read_maybe_end(b);
}

static void batch_read_on_cancel(struct rpc_call *c)
{
    struct batch_read *b = c->svc;
    if (b) read_free(b);
}

const struct rpc_method rpc_svc_cas_batch_read = {
    .path = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs",
    .route = RPC_ROUTE_GRPC_BATCH_READ,
    .on_message = batch_read_on_message,
    .on_cancel = batch_read_on_cancel,
};
