/*
 * build.bazel.remote.execution.v2.ActionCache, scoped by instance name: the engine key of an
 * action result is derived from (instance name, action hash) with a domain-separated SHA-256
 * (rpc/keys.h, shared with HTTP's <instance>/ac/<hash>), so tenants never see each other's
 * results while the CAS stays shared.
 *
 * UpdateActionResult stores the ActionResult bytes exactly as the client sent them (no
 * re-encoding: fields this server does not know are kept) and echoes them back.
 *
 * GetActionResult answers only complete results (DESIGN.md): every blob the result names is
 * present, and refreshed so eviction keeps it, before the result is returned (the check is
 * rpc/ac_check.h, shared with HTTP's GET <prefix>/ac/<hash>). Otherwise NOT_FOUND, so a cache
 * hit never points at an evicted output.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "proto/frame.h"
#include "proto/wire.h"
#include "rpc/ac_check.h"
#include "rpc/digest.h"
#include "rpc/fetch.h"
#include "rpc/internal.h"
#include "rpc/status.h"
#include "rpc/svc.h"

#define AC_VALUE_MAX (4u << 20) /* largest ActionResult stored or returned */

/* The action in the access log: "<instance>/ac/<hash>/<size>", as HTTP's path names it. */
static void log_action(struct rpc_call *c, const char *instance,
                       const Build__Bazel__Remote__Execution__V2__Digest *d)
{
    if (!c->rc->cfg->access_log || !d || !d->hash) return;
    char t[RPC_ACCESS_LOG_FIELD_MAX + 2];
    bool named = instance && instance[0];
    int n = snprintf(t, sizeof(t), "%s%sac/%s/%lld", named ? instance : "", named ? "/" : "",
                     d->hash, (long long)d->size_bytes);
    if (n > 0) rpc_call_log_target(c, t, (size_t)n < sizeof(t) ? (size_t)n : sizeof(t) - 1);
}

/*
 * Whether an instance_name of the request <msg>/<len> (field 1 of GetActionResultRequest and
 * of UpdateActionResultRequest) holds a NUL byte. protobuf-c hands strings over
 * NUL-terminated, so the key would be derived from the name cut at its first NUL: "team\0x"
 * read and wrote the results of instance "team". Such a name is refused (docs/grpc.md).
 * Bounded: each field takes at least one byte.
 */
static bool instance_has_nul(const uint8_t *msg, size_t len)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, msg, len);
    struct proto_wire_field f;
    bool nul = false;
    while (proto_wire_next(&r, &f) > 0) {
        if (f.number == 1 && f.type == PROTO_WIRE_LEN && memchr(f.data, 0, f.len)) nul = true;
    }
    return nul;
}

/* The message for an instance name refused by instance_has_nul. */
#define INSTANCE_NUL_MESSAGE "instance_name: holds a NUL byte"

/* ---- GetActionResult ---- */

struct ac_get {
    struct rpc_call *c;      /* the call */
    struct rpc_fetch f;      /* the stored result */
    uint8_t *value;          /* the stored result, framed: 5 free bytes, then the message */
    size_t value_len;        /* bytes of the message */
    struct rpc_ac_check chk; /* the completeness check (rpc/ac_check.h) */
    bool fetching;           /* f is reading */
};

static void ac_get_free(struct ac_get *g)
{
    if (g->fetching) rpc_fetch_cancel(&g->f);
    g->fetching = false;
    if (g->f.rc) rpc_fetch_release(&g->f);
    rpc_ac_check_stop(&g->chk);
    proto_alloc_free(&g->c->rc->pb_mem, g->value);
    g->value = NULL;
}

static void checked(struct rpc_ac_check *chk, int res)
{
    struct ac_get *g = chk->ctx;
    struct rpc_call *c = g->c;
    if (res < 0) {
        ac_get_free(g);
        if (res == -ENOENT) {
            rpc_call_finish(c, PROTO_STATUS_NOT_FOUND,
                            "action result found, but some of its outputs are not in the CAS");
        } else {
            rpc_call_finish_err(c, res, NULL);
        }
        return;
    }
    uint8_t *value = g->value;
    size_t len = g->value_len;
    g->value = NULL;
    ac_get_free(g);
    proto_frame_header_put(value, (uint32_t)len);
    rpc_call_send_owned(c, value, PROTO_FRAME_HEADER_SIZE + len);
    rpc_call_finish(c, PROTO_STATUS_OK, NULL);
}

/*
 * The stored value could not be read: none (NOT_FOUND), or one over 4 MiB, which only HTTP's
 * PUT /ac/ stores (an opaque value, or a result no gRPC client could have sent): NOT_FOUND
 * too, as HTTP's GET answers 404 for it, so the client runs the action instead of failing on
 * an argument it did not get wrong. Other errors as mapped (busy, corrupt, disk).
 */
static void finish_unread(struct rpc_call *c, int err)
{
    if (err == -ENOENT) {
        rpc_call_finish(c, PROTO_STATUS_NOT_FOUND, "no action result for this action");
        return;
    }
    if (err == -EMSGSIZE) {
        rpc_call_finish(c, PROTO_STATUS_NOT_FOUND,
                        "stored action result is over 4 MiB (written over HTTP): too large "
                        "for gRPC");
        return;
    }
    const char *message;
    int status = rpc_status_from_read_err(err, &message);
    rpc_call_finish(c, status, message);
}

static void value_fetched(struct rpc_fetch *f, int res)
{
    struct ac_get *g = f->ctx;
    struct rpc_call *c = g->c;
    g->fetching = false;
    if (res < 0) {
        ac_get_free(g);
        finish_unread(c, res);
        return;
    }
    g->value_len = f->len;
    g->value = rpc_fetch_take(f);
    g->chk = (struct rpc_ac_check){ .rc = c->rc, .done = checked, .ctx = g };
    int rc = rpc_ac_check_start(&g->chk, g->value + PROTO_FRAME_HEADER_SIZE, g->value_len);
    if (rc < 0) {
        ac_get_free(g);
        /* An undecodable stored value is not a result: the client recomputes (NOT_FOUND). */
        if (rc == -EBADMSG) {
            rpc_call_finish(c, PROTO_STATUS_NOT_FOUND, "stored action result is undecodable");
        } else {
            rpc_call_finish_err(c, rc, NULL);
        }
    }
}

static void get_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    ProtobufCAllocator *a = rpc_call_pb_allocator(c);
    struct ac_get *g;
    Build__Bazel__Remote__Execution__V2__GetActionResultRequest *req = rpc_call_unpack(
        c, &build__bazel__remote__execution__v2__get_action_result_request__descriptor, msg, len,
        sizeof(*g), (void **)&g);
    if (!req) return;
    g->c = c;
    c->svc = g;
    struct blob_key k;
    log_action(c, req->instance_name, req->action_digest);
    int rc = rpc_digest_ac_key(req->instance_name, req->action_digest, &k);
    /* The message names the field at fault: a long instance name is not a bad digest. */
    const char *field = rc == -ENAMETOOLONG ? "instance_name" : "action_digest";
    bool nul = rc == 0 && instance_has_nul(msg, len);
    if (rc == 0 && !nul && !rpc_digest_fn_is_served((int)req->digest_function)) {
        rc = -ENOTSUP;
        field = "digest_function";
    }
    build__bazel__remote__execution__v2__get_action_result_request__free_unpacked(req, a);
    if (nul) {
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, INSTANCE_NUL_MESSAGE);
        return;
    }
    if (rc < 0) {
        rpc_call_finish_err(c, rc, field);
        return;
    }
    g->f = (struct rpc_fetch){ .rc = c->rc,
                               .reserve = PROTO_FRAME_HEADER_SIZE,
                               .max = AC_VALUE_MAX,
                               .done = value_fetched,
                               .ctx = g };
    rc = rpc_fetch_start(&g->f, &k, BLOB_ENCODING_IDENTITY);
    if (rc < 0) {
        finish_unread(c, rc);
        return;
    }
    g->fetching = true;
}

static void get_on_cancel(struct rpc_call *c)
{
    struct ac_get *g = c->svc;
    if (g) ac_get_free(g);
}

const struct rpc_method rpc_svc_ac_get = {
    .path = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult",
    .route = RPC_ROUTE_GRPC_GET_ACTION_RESULT,
    .on_message = get_on_message,
    .on_cancel = get_on_cancel,
};

/* ---- UpdateActionResult ---- */

struct ac_put {
    struct rpc_call *c;    /* the call */
    struct blob_upload *u; /* the engine's upload */
    uint8_t *value;        /* framed: 5 free bytes, then the ActionResult as sent */
    size_t value_len;      /* bytes of the ActionResult */
    bool committing;       /* the commit is pending (pinned) */
};

/* The bytes of field 3 (action_result) of an UpdateActionResultRequest, as sent. */
static int find_result(const uint8_t *msg, size_t len, const uint8_t **p, size_t *n)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, msg, len);
    struct proto_wire_field f;
    int rc;
    *p = NULL;
    *n = 0;
    /* Bounded: each field takes at least one byte. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number == 3 && f.type == PROTO_WIRE_LEN) {
            *p = f.data;
            *n = f.len;
        }
    }
    return rc;
}

static void put_free(struct ac_put *p)
{
    if (p->u && !p->committing) {
        blob_upload_abort(p->u);
        base_counter_dec(&p->c->rc->counters.bs_uploads);
    }
    p->u = NULL;
    proto_alloc_free(&p->c->rc->pb_mem, p->value);
    p->value = NULL;
}

static void put_commit_done(void *ctx, int res)
{
    struct ac_put *p = ctx;
    struct rpc_call *c = p->c;
    p->u = NULL;
    p->committing = false;
    base_counter_dec(&c->rc->counters.bs_uploads);
    if (rpc_call_is_over(c)) {
        put_free(p);
    } else if (res < 0) {
        put_free(p);
        rpc_call_finish_err(c, res, "UpdateActionResult");
    } else {
        /* The response is the result as stored: the same bytes, framed. */
        uint8_t *value = p->value;
        p->value = NULL;
        proto_frame_header_put(value, (uint32_t)p->value_len);
        rpc_call_send_owned(c, value, PROTO_FRAME_HEADER_SIZE + p->value_len);
        rpc_call_finish(c, PROTO_STATUS_OK, NULL);
    }
    rpc_call_unpin(c); /* may free the call: last */
}

static void put_commit(struct ac_put *p)
{
    int rc = blob_upload_commit(p->u, put_commit_done, p);
    if (rc < 0) {
        put_free(p);
        rpc_call_finish_err(p->c, rc, "UpdateActionResult");
        return;
    }
    p->committing = true;
    rpc_call_pin(p->c);
}

static void put_append_done(void *ctx, int res)
{
    struct ac_put *p = ctx;
    if (res < 0) {
        put_free(p);
        rpc_call_finish_err(p->c, res, "UpdateActionResult");
        return;
    }
    put_commit(p);
}

/*
 * Checks <req>, whose action_result is <len> bytes and whose instance name holds a NUL byte
 * when <nul> (-EILSEQ, instance_has_nul), and sets *<k> to its engine key; on a malformed
 * request, *<field> names the field at fault (as GetActionResult's messages do).
 */
static int update_check(const Build__Bazel__Remote__Execution__V2__UpdateActionResultRequest *req,
                        size_t len, bool nul, struct blob_key *k, const char **field)
{
    int rc = rpc_digest_ac_key(req->instance_name, req->action_digest, k);
    /* A long instance name is not a bad digest. */
    *field = rc == -ENAMETOOLONG ? "instance_name" : "action_digest";
    if (rc < 0) return rc;
    *field = "instance_name";
    if (nul) return -EILSEQ;
    *field = "digest_function";
    if (!rpc_digest_fn_is_served((int)req->digest_function)) return -ENOTSUP;
    *field = "action_result";
    if (!req->action_result) return -EINVAL;
    if (len > AC_VALUE_MAX) return -EMSGSIZE;
    *field = "UpdateActionResult";
    uint8_t key[BLOB_HASH_SIZE];
    memcpy(key, k->hash, BLOB_HASH_SIZE); /* blob_key_ac clears <k> before it copies */
    blob_key_ac(k, key, len);
    return 0;
}

/* Stores the <len> bytes at <result> under <k> (update_check's key). */
static int put_begin(struct ac_put *p, const struct blob_key *k, const uint8_t *result, size_t len)
{
    struct rpc_call *c = p->c;
    p->value = proto_alloc_malloc(&c->rc->pb_mem, PROTO_FRAME_HEADER_SIZE + len);
    if (!p->value) return -ENOMEM;
    if (len > 0) memcpy(p->value + PROTO_FRAME_HEADER_SIZE, result, len);
    p->value_len = len;
    struct blob_core *bc = rpc_call_blob(c);
    int rc = bc ? blob_upload_begin(bc, k, BLOB_ENCODING_IDENTITY, &p->u) : -ENOSYS;
    if (rc < 0) return rc;
    base_counter_inc(&c->rc->counters.bs_uploads);
    rc = blob_upload_append(p->u, p->value + PROTO_FRAME_HEADER_SIZE, len, put_append_done, p);
    if (rc == -EINPROGRESS) return 0;
    if (rc < 0) return rc;
    put_commit(p);
    return 0;
}

static void update_on_message(struct rpc_call *c, const uint8_t *msg, size_t len)
{
    ProtobufCAllocator *a = rpc_call_pb_allocator(c);
    struct ac_put *p;
    Build__Bazel__Remote__Execution__V2__UpdateActionResultRequest *req = rpc_call_unpack(
        c, &build__bazel__remote__execution__v2__update_action_result_request__descriptor, msg, len,
        sizeof(*p), (void **)&p);
    if (!req) return;
    const uint8_t *result;
    size_t result_len;
    if (find_result(msg, len, &result, &result_len) < 0) {
        /* Decoded, yet its action_result is not where the wire says: bad bytes, not memory. */
        build__bazel__remote__execution__v2__update_action_result_request__free_unpacked(req, a);
        rpc_call_finish_undecodable(c, rpc_call_mem_refusals(c), "UpdateActionResultRequest");
        return;
    }
    p->c = c;
    c->svc = p;
    struct blob_key k;
    const char *field;
    log_action(c, req->instance_name, req->action_digest);
    int rc = update_check(req, result_len, instance_has_nul(msg, len), &k, &field);
    build__bazel__remote__execution__v2__update_action_result_request__free_unpacked(req, a);
    if (rc == -EILSEQ) {
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, INSTANCE_NUL_MESSAGE);
        return;
    }
    if (rc == -EMSGSIZE) {
        /* status.c's text for -EMSGSIZE is an upload's size mismatch: not this. */
        rpc_call_finish(c, PROTO_STATUS_INVALID_ARGUMENT, "action_result: larger than 4 MiB");
        return;
    }
    if (rc == 0) rc = put_begin(p, &k, result, result_len);
    if (rc < 0) {
        put_free(p);
        rpc_call_finish_err(c, rc, field);
    }
}

static void update_on_cancel(struct rpc_call *c)
{
    struct ac_put *p = c->svc;
    if (p && !p->committing) put_free(p);
}

const struct rpc_method rpc_svc_ac_update = {
    .path = "/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult",
    .route = RPC_ROUTE_GRPC_UPDATE_ACTION_RESULT,
    .on_message = update_on_message,
    .on_cancel = update_on_cancel,
};
