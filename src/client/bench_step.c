/*
 * The requests of each workload: how a slot begins a unit (one request, a build-mix action or
 * a seed job), starts the request of its current step, checks the answer and moves on.
 *
 * In open loop a unit's first request counts its latency from the moment the unit was due,
 * so time spent waiting for a free slot or a connection is counted; in closed loop every
 * request counts from its own start, once prepared. The later requests of a build-mix
 * action count from their own start, since a real client sends each as soon as the one
 * before it is answered.
 *
 * Sections: helpers, starting requests, completions, the build mix, seeding, units.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "base/clock.h"
#include "base/err.h"
#include "client/bench_internal.h"
#include "proto/status.h"
#include "proto/wire.h"

#define RE_PATH          "/build.bazel.remote.execution.v2."
#define PATH_FIND        RE_PATH "ContentAddressableStorage/FindMissingBlobs"
#define PATH_BATCH_READ  RE_PATH "ContentAddressableStorage/BatchReadBlobs"
#define PATH_BATCH_WRITE RE_PATH "ContentAddressableStorage/BatchUpdateBlobs"
#define PATH_AC_GET      RE_PATH "ActionCache/GetActionResult"
#define PATH_AC_UPDATE   RE_PATH "ActionCache/UpdateActionResult"
#define SMALL_MAX        (64u << 10) /* "small" blobs, for the latency class */
#define MIX_DUP_PERCENT  20          /* outputs identical to one of an earlier build */
#define MIX_LARGE_MIN    (1u << 20)  /* fresh outputs past this come from plan.large */
#define MIX_SCRATCH      ((size_t)BENCH_MIX_OUTPUTS_MAX * MIX_LARGE_MIN + (64u << 10))

static void step_start(struct bench_slot *s);
static void mix_next(struct bench_slot *s);
static int32_t mix_mark_missing(struct bench_slot *s);
static bool mix_evicted(struct bench_slot *s);

/* ---- helpers ---- */

static const struct bench_plan *plan_of(const struct bench_slot *s)
{
    return s->t->plan;
}

static const char *instance_of(const struct bench_slot *s)
{
    return plan_of(s)->o.instance;
}

/* Makes <s->buf> hold at least <size> bytes; 0 or -ENOMEM. */
static int buf_reserve(struct bench_slot *s, size_t size)
{
    if (s->buf_size >= size) return 0;
    uint8_t *m = realloc(s->buf, size ? size : 1);
    if (!m) return -ENOMEM;
    s->buf = m;
    s->buf_size = size;
    return 0;
}

/*
 * Writes <size> bytes of new content at <dst>: a slice of the pool with this run's nonce
 * and a per-slot counter over its first 16 bytes (so no two writes of a run, or of two runs,
 * are the same blob, when size >= 16), and computes its digest into <d>.
 */
static void fill_unique(struct bench_slot *s, uint8_t *dst, uint64_t size, struct client_digest *d)
{
    const struct bench_plan *p = plan_of(s);
    struct bench_thread *t = s->t;
    ASSERT(size <= p->pool_size);
    uint64_t off = bench_rand_below(&t->rng, p->pool_size - size + 1);
    memcpy(dst, p->pool + off, (size_t)size);
    uint64_t stamp[2] = { p->nonce,
                          ((uint64_t)t->index << 56) ^ ((uint64_t)s->index << 40) ^ s->counter++ };
    memcpy(dst, stamp, size < sizeof(stamp) ? (size_t)size : sizeof(stamp));
    client_digest_buf(dst, (size_t)size, d);
}

/* The outcome of a finished gRPC call as an error key (0/0: success). */
static void call_outcome(const struct client_call *c, uint8_t *kind, int32_t *code)
{
    *kind = 0;
    *code = 0;
    if (c->result.err == 0) return;
    if (c->result.status_received && c->result.status != 0) {
        *kind = BENCH_ERR_GRPC;
        *code = c->result.status;
    } else {
        *kind = BENCH_ERR_LOCAL;
        *code = -c->result.err;
    }
}

/* Records the outcome of <s>'s request; returns true when it succeeded. */
static bool finish_request(struct bench_slot *s, uint8_t kind, int32_t code, bool expected,
                           const char *detail)
{
    char what[BENCH_ERROR_TEXT_MAX];
    if (kind != 0 || code != 0) {
        const char *name = kind == BENCH_ERR_GRPC   ? proto_status_name(code)
                           : kind == BENCH_ERR_HTTP ? "HTTP"
                                                    : base_err_name(code);
        /* HTTP/1.1 answers and local failures come without a message: describe the errno. */
        if (!detail || detail[0] == '\0') {
            detail = kind == BENCH_ERR_LOCAL ? base_err_str(code) : "";
        }
        (void)snprintf(what, sizeof(what), "%s: %s %d%s%s", bench_op_names[s->op], name, code,
                       detail[0] ? ": " : "", detail);
    }
    bench_run_request_done(s, kind, code, expected, kind || code ? what : NULL);
    return kind == 0 && code == 0;
}

/* ---- starting requests ---- */

static void get_done(struct client_call *c);
static void put_done(struct client_call *c);
static void raw_done(struct client_call *c);
static void h1_done(struct client_h1 *h);

static int start_get(struct bench_slot *s, struct client_conn *conn)
{
    struct client_get_options o;
    client_get_options_default(&o);
    o.call.deadline_ms = (uint32_t)plan_of(s)->o.deadline_ms;
    o.call.done = get_done;
    o.call.user = s;
    o.instance = instance_of(s);
    o.digest = s->d;
    o.zstd = plan_of(s)->o.compress;
    o.skip_verify = !plan_of(s)->o.verify;
    return client_get_start(&s->get, conn, &o);
}

static int start_put(struct bench_slot *s, struct client_conn *conn)
{
    struct client_put_options o;
    client_put_options_default(&o);
    o.call.deadline_ms = (uint32_t)plan_of(s)->o.deadline_ms;
    o.call.done = put_done;
    o.call.user = s;
    o.instance = instance_of(s);
    o.digest = s->d;
    o.zstd = plan_of(s)->o.compress && s->step != BENCH_STEP_SEED;
    o.fd = -1;
    o.data = s->data;
    o.trust_data = true;
    return client_put_start(&s->put, conn, &o);
}

/* A unary call on <s->shared> when set, else on the slot's own encoded request. */
static int start_raw(struct bench_slot *s, struct client_conn *conn, const char *path)
{
    struct client_raw_options o = {
        .call = { .deadline_ms = (uint32_t)plan_of(s)->o.deadline_ms, .done = raw_done, .user = s },
        .path = path,
        .request = s->shared ? s->shared->data : s->req.p,
        .request_len = s->shared ? s->shared->len : s->req.len,
    };
    return client_raw_start(&s->raw, conn, &o);
}

/* Hashes (--verify) and counts <n> decoded bytes of a GET's body. */
static void body_take(struct bench_slot *s, const uint8_t *p, size_t n)
{
    if (plan_of(s)->o.verify) client_sha256_update(&s->body_sha, p, n);
    s->body_decoded += n;
}

/* A piece of a seeded blob's GET body: decoded (zstd) and counted as it arrives. */
static void h1_body(struct client_h1 *h, const uint8_t *p, size_t n)
{
    struct bench_slot *s = h->user;
    if (h->result.encoding == CLIENT_H1_ENC_IDENTITY) {
        body_take(s, p, n);
        return;
    }
    if (h->result.encoding != CLIENT_H1_ENC_ZSTD || s->body_corrupt || !s->body_dctx) return;
    ZSTD_inBuffer in = { p, n, 0 };
    bool full = true;
    /* Bounded: each step consumes input or emits output; stops when neither happens. */
    while (in.pos < in.size || full) {
        ZSTD_outBuffer out = { s->body_out, s->body_out_size, 0 };
        size_t before = in.pos;
        size_t r = ZSTD_decompressStream(s->body_dctx, &out, &in);
        if (ZSTD_isError(r)) {
            s->body_corrupt = true;
            return;
        }
        if (r == 0) {
            s->body_frame_done = true;
        } else if (in.pos > before || out.pos > 0) {
            s->body_frame_done = false;
        }
        full = out.pos == out.size;
        if (out.pos > 0) {
            body_take(s, s->body_out, out.pos);
        } else if (in.pos == in.size) {
            break;
        }
    }
}

/* Prepares <s> to decode and check the body of the GET of blob s->d; 0 or -ENOMEM. */
static int body_begin(struct bench_slot *s)
{
    s->body_decoded = 0;
    s->body_corrupt = false;
    s->body_frame_done = false;
    uint8_t scratch[CLIENT_HASH_SIZE];
    client_sha256_final(&s->body_sha, scratch); /* start the hash afresh */
    if (!plan_of(s)->o.compress) return 0;
    if (!s->body_dctx) s->body_dctx = ZSTD_createDCtx();
    if (!s->body_out) {
        s->body_out_size = ZSTD_DStreamOutSize();
        s->body_out = malloc(s->body_out_size);
    }
    if (!s->body_dctx || !s->body_out) return -ENOMEM;
    size_t r = ZSTD_DCtx_reset(s->body_dctx, ZSTD_reset_session_and_parameters);
    return ZSTD_isError(r) ? -ENOMEM : 0;
}

/*
 * Checks the body of a seeded blob's GET: it decodes (identity, or zstd when asked for) to
 * the blob's size, and with --verify to its SHA-256. 0, or EBADMSG with the reason in
 * <why> (<size> bytes). Unchecked, a 200 with any body counted as the blob's bytes.
 */
static int32_t body_check(struct bench_slot *s, const struct client_h1 *h, char *why, size_t size)
{
    const struct bench_plan *p = plan_of(s);
    uint8_t enc = h->result.encoding;
    if (enc == CLIENT_H1_ENC_OTHER || (enc == CLIENT_H1_ENC_ZSTD && !p->o.compress)) {
        (void)snprintf(why, size, "a Content-Encoding the request did not accept");
        return EBADMSG;
    }
    if (enc == CLIENT_H1_ENC_ZSTD && (s->body_corrupt || !s->body_frame_done)) {
        (void)snprintf(why, size, "a zstd body that does not decode (%llu bytes)",
                       (unsigned long long)h->result.body_len);
        return EBADMSG;
    }
    if (s->body_decoded != s->d.size) {
        (void)snprintf(why, size, "%llu bytes%s for a blob of %llu",
                       (unsigned long long)s->body_decoded,
                       enc == CLIENT_H1_ENC_ZSTD ? " decoded" : "", (unsigned long long)s->d.size);
        return EBADMSG;
    }
    if (p->o.verify) {
        uint8_t hash[CLIENT_HASH_SIZE];
        client_sha256_final(&s->body_sha, hash);
        if (memcmp(hash, s->d.hash, sizeof(hash)) != 0) {
            (void)snprintf(why, size, "the body's SHA-256 is not the blob's");
            return EBADMSG;
        }
    }
    return 0;
}

static int start_h1(struct bench_slot *s, uint8_t method, const uint8_t *body, uint64_t len)
{
    if (!client_h1_is_ready(&s->h1)) {
        s->parked = true; /* the connection is being reopened */
        return 0;
    }
    bool check = method == CLIENT_H1_GET && !plan_of(s)->o.path;
    if (check) {
        int rc = body_begin(s);
        if (rc < 0) return rc;
    }
    struct client_h1_request r = {
        .method = method,
        .path = s->path,
        .extra_headers =
            plan_of(s)->o.compress && method == CLIENT_H1_GET ? "Accept-Encoding: zstd\r\n" : NULL,
        .body = body,
        .body_len = len,
        .done = h1_done,
        .on_body = check ? h1_body : NULL,
    };
    return client_h1_request_start(&s->h1, &r);
}

static const char *const op_paths[BENCH_OP_COUNT] = {
    [BENCH_OP_FIND_MISSING] = PATH_FIND,        [BENCH_OP_BATCH_READ] = PATH_BATCH_READ,
    [BENCH_OP_BATCH_UPDATE] = PATH_BATCH_WRITE, [BENCH_OP_AC_GET] = PATH_AC_GET,
    [BENCH_OP_AC_UPDATE] = PATH_AC_UPDATE,
};

/* Starts the request s->op describes (its fields were prepared by the step). */
static int start_op(struct bench_slot *s)
{
    if (s->op == BENCH_OP_HTTP_GET) return start_h1(s, CLIENT_H1_GET, NULL, 0);
    if (s->op == BENCH_OP_HTTP_PUT) return start_h1(s, CLIENT_H1_PUT, s->data, s->d.size);
    struct client_conn *conn = bench_run_conn(s);
    if (!conn) return 0; /* parked until a connection is back */
    if (s->op == BENCH_OP_BS_READ) return start_get(s, conn);
    if (s->op == BENCH_OP_BS_WRITE) return start_put(s, conn);
    return start_raw(s, conn, op_paths[s->op]);
}

/* Starts the prepared request; parks the slot or stops the thread when it cannot. */
static void step_start(struct bench_slot *s)
{
    uint64_t now = base_clock_now_ns();
    s->req_ns = s->req_ns == 0 ? now : s->req_ns;
    int rc = start_op(s);
    if (rc == 0 && s->parked) return;
    if (rc == -EPIPE) {
        s->parked = true; /* the connection went away: wait for it to be reopened */
        return;
    }
    if (rc < 0) {
        bench_run_fatal(s->t, rc, bench_op_names[s->op]);
        bench_run_unit_done(s);
        return;
    }
    s->in_call = true;
}

/* Prepares the next request of a unit: its latency counts from now. */
static void next_request(struct bench_slot *s, uint8_t op, uint64_t bytes, bool small)
{
    s->op = op;
    s->op_bytes = bytes;
    s->op_small = small;
    s->req_ns = 0;
}

/* ---- completions ---- */

static void after_request(struct bench_slot *s, bool ok)
{
    if (s->step >= BENCH_STEP_AC_GET && s->step <= BENCH_STEP_AC_UPDATE && ok) {
        mix_next(s);
        return;
    }
    bench_run_unit_done(s);
}

static void get_done(struct client_call *c)
{
    struct bench_slot *s = c->user;
    uint8_t kind;
    int32_t code;
    call_outcome(c, &kind, &code);
    if (kind == 0 && s->get.received != s->d.size) {
        kind = BENCH_ERR_LOCAL;
        code = EBADMSG;
    }
    after_request(s, finish_request(s, kind, code, false, c->result.message));
}

static void put_done(struct client_call *c)
{
    struct bench_slot *s = c->user;
    uint8_t kind;
    int32_t code;
    call_outcome(c, &kind, &code);
    after_request(s, finish_request(s, kind, code, false, c->result.message));
}

/* A batch's refused blob: its status negated, its message (printable bytes) into <detail>. */
static int32_t raw_bad(const struct bench_req_bad *bad, char *detail, size_t size)
{
    size_t n = 0;
    /* Bounded by <detail>'s size. */
    for (size_t i = 0; i < bad->message_len && n + 1 < size; i++) {
        uint8_t c = bad->message[i];
        char printable = '?';
        if (c >= 0x20 && c < 0x7f) printable = (char)c;
        detail[n++] = printable;
    }
    detail[n] = '\0';
    return -(int32_t)bad->status;
}

/*
 * Checks a unary answer against what the request expects: 0, a positive errno, or a blob's
 * gRPC status negated (its message, when it has one, goes to <detail>, <size> bytes).
 */
static int32_t check_raw(struct bench_slot *s, char *detail, size_t size)
{
    const uint8_t *p = s->raw.response;
    size_t len = s->raw.response_len;
    struct bench_req_bad bad = { 0 };
    int64_t n = 0;
    switch (s->op) {
    case BENCH_OP_FIND_MISSING: {
        if (s->step == BENCH_STEP_FIND) return mix_mark_missing(s); /* the mix's own list */
        uint64_t sums = 0;
        n = bench_req_count_missing(p, len, &sums);
        /* The absent half, and not the present one (a shared request: s->shared is set). */
        bool same = n == (int64_t)s->op_expect && (!s->shared || sums == s->shared->sums);
        return same ? 0 : EBADMSG;
    }
    case BENCH_OP_BATCH_READ: {
        struct bench_req_read rd = { .zstd = plan_of(s)->o.compress,
                                     .verify = plan_of(s)->o.verify };
        n = bench_req_count_read(p, len, &rd, &bad);
        if (n >= 0 && bad.status) return raw_bad(&bad, detail, size);
        /* Every blob asked for, and no other: a batch read is always a shared request. */
        bool same = n == (int64_t)s->op_expect && rd.size == s->op_bytes &&
                    (!s->shared || rd.sums == s->shared->sums);
        return same ? 0 : EBADMSG;
    }
    case BENCH_OP_AC_GET: {
        if (!s->shared) return 0; /* a mix miss answered (a result nobody here recorded) */
        uint64_t sums = 0;
        n = bench_req_count_outputs(p, len, &sums);
        /* The result seeded for this action: its outputs, no fewer, no others. */
        bool same = n == (int64_t)s->shared->expect && sums == s->shared->sums;
        return same ? 0 : EBADMSG;
    }
    case BENCH_OP_BATCH_UPDATE:
        n = bench_req_count_updated(p, len, &bad);
        if (n >= 0 && bad.status) return raw_bad(&bad, detail, size);
        return n == (int64_t)s->op_expect ? 0 : EBADMSG;
    default:
        return 0;
    }
}

static void raw_done(struct client_call *c)
{
    struct bench_slot *s = c->user;
    uint8_t kind;
    int32_t code;
    call_outcome(c, &kind, &code);
    bool expected = false;
    char blob_message[CLIENT_MESSAGE_MAX] = "";
    const char *detail = c->result.message;
    if (kind == 0) {
        int32_t r = check_raw(s, blob_message, sizeof(blob_message));
        kind = r == 0 ? 0 : r < 0 ? BENCH_ERR_GRPC : BENCH_ERR_LOCAL;
        code = r < 0 ? -r : r;
        if (r < 0) detail = blob_message; /* the call was OK: the refused blob says why */
    } else if (s->step == BENCH_STEP_AC_GET && kind == BENCH_ERR_GRPC &&
               code == PROTO_STATUS_NOT_FOUND) {
        /* A miss: the action was never run before, or it was (seeded) and the server evicted
         * its result or outputs since, which REAPI's NOT_FOUND also says. */
        expected = !s->action || mix_evicted(s);
    }
    bool ok = finish_request(s, kind, code, expected, detail);
    after_request(s, ok || expected);
}

static void h1_done(struct client_h1 *h)
{
    struct bench_slot *s = h->user;
    uint8_t kind = 0;
    int32_t code = 0;
    char why[128] = "";
    if (h->result.err != 0) {
        kind = BENCH_ERR_LOCAL;
        code = -h->result.err;
    } else if (h->result.status < 200 || h->result.status > 299) {
        kind = BENCH_ERR_HTTP;
        code = h->result.status;
    } else if (s->op == BENCH_OP_HTTP_GET) {
        if (plan_of(s)->o.path) {
            s->op_bytes = h->result.body_len;
        } else {
            code = body_check(s, h, why, sizeof(why));
            kind = code ? BENCH_ERR_LOCAL : 0;
        }
    }
    /* An error answer's body is the server's reason (ringcas: "blob of N bytes is larger
     * than this store takes ..."), as a gRPC status's message is. */
    after_request(
        s, finish_request(s, kind, code, false, kind == BENCH_ERR_HTTP ? h->result.message : why));
}

/* ---- the build mix ---- */

/* A fresh blob of <size> bytes in the slot's scratch at *<used>. */
static void mix_fresh(struct bench_slot *s, struct bench_mix_blob *b, uint64_t size, size_t *used)
{
    ASSERT(*used + size <= s->buf_size);
    uint8_t *dst = s->buf + *used;
    fill_unique(s, dst, size, &b->d);
    b->data = dst;
    b->upload = false;
    *used += (size_t)size;
}

/* The next output of a fresh action: a copy of an earlier build's, a large one, or new. */
static void mix_output(struct bench_slot *s, struct bench_mix_blob *b, size_t *used)
{
    const struct bench_plan *p = plan_of(s);
    struct bench_thread *t = s->t;
    uint64_t size = bench_mix_size(&t->rng, p->o.mix_max_size);
    b->upload = false;
    if (p->blob_count > 0 && bench_rand_below(&t->rng, 100) < MIX_DUP_PERCENT) {
        const struct bench_blob *pb = &p->blobs[bench_rand_below(&t->rng, p->blob_count)];
        b->d = pb->d;
        b->data = p->pool + pb->off;
    } else if (size > MIX_LARGE_MIN && p->large_count > 0) {
        uint64_t k = t->index + t->large_next++ * p->thread_count;
        const struct bench_blob *pl = &p->large[k % p->large_count];
        b->d = pl->d;
        b->data = p->pool + pl->off;
    } else {
        mix_fresh(s, b, size < MIX_LARGE_MIN ? size : MIX_LARGE_MIN, used);
    }
}

static int mix_begin_miss(struct bench_slot *s)
{
    struct bench_thread *t = s->t;
    int rc = buf_reserve(s, MIX_SCRATCH);
    if (rc < 0) return rc;
    size_t used = 0;
    uint32_t n = bench_mix_output_count(&t->rng);
    for (uint32_t i = 0; i < n; i++) {
        mix_output(s, &s->blobs[s->blob_count++], &used);
    }
    /* The Action and Command messages Bazel uploads beside the outputs; the action's key
     * is the Action's digest. */
    mix_fresh(s, &s->blobs[s->blob_count++], 140 + bench_rand_below(&t->rng, 60), &used);
    mix_fresh(s, &s->blobs[s->blob_count++], 512 + bench_rand_below(&t->rng, 7680), &used);
    s->key = s->blobs[n].d;
    return bench_req_ac_get(&s->req, instance_of(s), &s->key);
}

/*
 * A seeded action answered NOT_FOUND: the server evicted its result or some of its outputs
 * (a small, busy store does; docs/storage.md). To a client that is a miss like any other: it
 * runs the action, which reproduces the seeded outputs, and uploads what the server lacks
 * with the Action and Command, then records the result, as for a new action (mix_next); the
 * action is then found again. Counted as a miss, not a hit. Returns false when the run
 * cannot go on (out of memory: the thread stops).
 */
static bool mix_evicted(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    struct bench_thread *t = s->t;
    const struct bench_action *a = s->action;
    if (s->hit_counted) {
        t->stats.hits--;
        t->stats.misses++;
        t->stats.misses_evicted++;
        s->hit_counted = false;
    }
    int rc = buf_reserve(s, MIX_SCRATCH);
    if (rc < 0) {
        bench_run_fatal(t, rc, "preparing an action");
        return false;
    }
    s->blob_count = 0;
    for (uint32_t i = 0; i < a->output_count; i++) {
        const struct bench_blob *pb = &p->blobs[a->outputs[i]];
        s->blobs[s->blob_count++] =
            (struct bench_mix_blob){ .d = pb->d, .data = p->pool + pb->off };
    }
    struct bench_mix_blob *action = &s->blobs[s->blob_count++];
    bench_action_message(p->nonce, (size_t)(a - p->actions), s->buf);
    client_digest_buf(s->buf, BENCH_ACTION_MESSAGE_SIZE, &action->d);
    action->data = s->buf;
    action->upload = false;
    bool same_key = memcmp(action->d.hash, a->key.hash, sizeof(a->key.hash)) == 0;
    ASSERT(same_key);
    size_t used = BENCH_ACTION_MESSAGE_SIZE;
    mix_fresh(s, &s->blobs[s->blob_count++], 512 + bench_rand_below(&t->rng, 7680), &used);
    s->key = a->key;
    s->action = NULL; /* a miss from here on */
    s->shared = NULL;
    return true;
}

static void mix_begin(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    struct bench_thread *t = s->t;
    s->blob_count = 0;
    s->next = 0;
    s->action = NULL;
    s->hit_counted = false;
    s->step = BENCH_STEP_AC_GET;
    next_request(s, BENCH_OP_AC_GET, 0, false);
    bool hit = p->action_count > 0 && bench_rand_below(&t->rng, 100) < p->o.mix_hit;
    if (bench_run_counts(s, base_clock_now_ns())) {
        if (hit) {
            t->stats.hits++;
            s->hit_counted = true;
        } else {
            t->stats.misses++;
        }
    }
    if (hit) {
        s->action = &p->actions[bench_rand_below(&t->rng, p->action_count)];
        s->shared = &s->action->get;
        return;
    }
    int rc = mix_begin_miss(s);
    if (rc < 0) bench_run_fatal(t, rc, "preparing an action");
}

/* Reads the next large output of a hit, or ends the action. */
static void mix_read_stream(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    const struct bench_action *a = s->action;
    /* Bounded by the action's outputs. */
    while (s->next < a->output_count) {
        const struct bench_blob *b = &p->blobs[a->outputs[s->next++]];
        if (b->d.size <= p->o.mix_batch_max) continue;
        s->step = BENCH_STEP_READ_STREAM;
        s->d = b->d;
        next_request(s, BENCH_OP_BS_READ, b->d.size, b->d.size < SMALL_MAX);
        step_start(s);
        return;
    }
    bench_run_unit_done(s);
}

/* Marks the blobs the FindMissingBlobs answer lists; 0 or EBADMSG. */
static int32_t mix_mark_missing(struct bench_slot *s)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, s->raw.response, s->raw.response_len);
    struct proto_wire_field f;
    int rc;
    /* Bounded by the answer's length. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number != 2 || f.type != PROTO_WIRE_LEN) continue;
        const uint8_t *hex;
        size_t hex_len;
        int64_t size;
        uint8_t hash[CLIENT_HASH_SIZE];
        if (proto_wire_digest(f.data, f.len, &hex, &hex_len, &size) < 0) return EBADMSG;
        if (hex_len != 2 * CLIENT_HASH_SIZE) return EBADMSG;
        if (proto_hex_decode((const char *)hex, hex_len, hash) < 0) return EBADMSG;
        for (uint32_t i = 0; i < s->blob_count; i++) {
            struct bench_mix_blob *b = &s->blobs[i];
            if ((int64_t)b->d.size == size && memcmp(b->d.hash, hash, sizeof(hash)) == 0) {
                b->upload = true;
            }
        }
    }
    return rc < 0 ? EBADMSG : 0;
}

static void mix_write_stream(struct bench_slot *s);

/* Uploads the small missing blobs in one BatchUpdateBlobs, then the large ones. */
static void mix_write_batch(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    struct bench_req_blob e[BENCH_MIX_BLOBS_MAX];
    size_t n = 0;
    uint64_t bytes = 0;
    bool small = true;
    for (uint32_t i = 0; i < s->blob_count; i++) {
        const struct bench_mix_blob *b = &s->blobs[i];
        if (!b->upload || b->d.size > p->o.mix_batch_max) continue;
        e[n++] = (struct bench_req_blob){ .d = &b->d, .data = b->data };
        bytes += b->d.size;
        small = small && b->d.size < SMALL_MAX;
    }
    s->next = 0;
    if (n == 0) {
        mix_write_stream(s);
        return;
    }
    int rc = bench_req_batch_update(&s->req, instance_of(s), e, n);
    if (rc < 0) {
        bench_run_fatal(s->t, rc, "encoding a batch");
        bench_run_unit_done(s);
        return;
    }
    s->step = BENCH_STEP_WRITE_BATCH;
    s->shared = NULL;
    next_request(s, BENCH_OP_BATCH_UPDATE, bytes, small);
    s->op_expect = n;
    step_start(s);
}

/* Streams the next large missing blob, or records the action's result. */
static void mix_write_stream(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    /* Bounded by the action's blobs. */
    while (s->next < s->blob_count) {
        const struct bench_mix_blob *b = &s->blobs[s->next++];
        if (!b->upload || b->d.size <= p->o.mix_batch_max) continue;
        s->step = BENCH_STEP_WRITE_STREAM;
        s->d = b->d;
        s->data = b->data;
        next_request(s, BENCH_OP_BS_WRITE, b->d.size, b->d.size < SMALL_MAX);
        step_start(s);
        return;
    }
    const struct client_digest *outs[BENCH_MIX_OUTPUTS_MAX];
    uint32_t n = s->blob_count - 2; /* the outputs; not the Action and Command */
    for (uint32_t i = 0; i < n; i++) {
        outs[i] = &s->blobs[i].d;
    }
    int rc = bench_req_ac_update(&s->req, instance_of(s), &s->key, outs, n);
    if (rc < 0) {
        bench_run_fatal(s->t, rc, "encoding an action result");
        bench_run_unit_done(s);
        return;
    }
    s->step = BENCH_STEP_AC_UPDATE;
    s->shared = NULL;
    next_request(s, BENCH_OP_AC_UPDATE, 0, false);
    step_start(s);
}

/* The request of the current step succeeded: the action's next one. */
static void mix_next(struct bench_slot *s)
{
    switch (s->step) {
    case BENCH_STEP_AC_GET:
        if (s->action && s->action->batch_read.len > 0) {
            s->step = BENCH_STEP_READ_BATCH;
            s->shared = &s->action->batch_read;
            next_request(s, BENCH_OP_BATCH_READ, s->shared->bytes, s->shared->small);
            s->op_expect = s->shared->expect;
            step_start(s);
        } else if (s->action) {
            mix_read_stream(s);
        } else {
            const struct client_digest *all[BENCH_MIX_BLOBS_MAX];
            for (uint32_t i = 0; i < s->blob_count; i++) {
                all[i] = &s->blobs[i].d;
            }
            int rc = bench_req_find_missing(&s->req, instance_of(s), all, s->blob_count);
            if (rc < 0) {
                bench_run_fatal(s->t, rc, "encoding FindMissingBlobs");
                bench_run_unit_done(s);
                return;
            }
            s->step = BENCH_STEP_FIND;
            s->shared = NULL;
            next_request(s, BENCH_OP_FIND_MISSING, 0, false);
            step_start(s);
        }
        return;
    case BENCH_STEP_READ_BATCH:
    case BENCH_STEP_READ_STREAM:
        mix_read_stream(s);
        return;
    case BENCH_STEP_FIND:
        mix_write_batch(s);
        return;
    case BENCH_STEP_WRITE_BATCH:
    case BENCH_STEP_WRITE_STREAM:
        mix_write_stream(s);
        return;
    default:
        bench_run_unit_done(s);
        return;
    }
}

/* ---- seeding ---- */

uint64_t bench_step_seed_jobs(const struct bench_plan *plan)
{
    switch (plan->w) {
    case BENCH_W_BS_READ:
    case BENCH_W_BATCH_READ:
    case BENCH_W_FIND_MISSING:
        return plan->blob_count;
    case BENCH_W_HTTP_GET:
        return plan->o.path ? 0 : plan->blob_count;
    case BENCH_W_AC_GET:
    case BENCH_W_MIX:
        return plan->blob_count + plan->action_count;
    default:
        return 0;
    }
}

/* Uploads one blob of the seeded set, or records one seeded action. */
static void seed_begin(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    s->step = BENCH_STEP_SEED;
    s->shared = NULL;
    if (s->seed_job < p->blob_count) {
        const struct bench_blob *b = &p->blobs[s->seed_job];
        s->d = b->d;
        s->data = p->pool + b->off;
        if (p->http) {
            (void)snprintf(s->path, sizeof(s->path), "/cas/%s", b->hex);
            next_request(s, BENCH_OP_HTTP_PUT, b->d.size, false);
        } else {
            next_request(s, BENCH_OP_BS_WRITE, b->d.size, false);
        }
    } else {
        s->shared = &p->actions[s->seed_job - p->blob_count].update;
        next_request(s, BENCH_OP_AC_UPDATE, 0, false);
    }
    step_start(s);
}

/* ---- units ---- */

/* Prepares a batch of fresh blobs and its BatchUpdateBlobs request. */
static int batch_update_prepare(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    size_t n = (size_t)p->o.batch;
    size_t size = (size_t)p->o.size;
    int rc = buf_reserve(s, n * size);
    if (rc < 0) return rc;
    if (!s->digests) {
        s->digests = calloc(n, sizeof(*s->digests));
        s->entries = calloc(n, sizeof(*s->entries));
        if (!s->digests || !s->entries) return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        fill_unique(s, s->buf + i * size, size, &s->digests[i]);
        s->entries[i] = (struct bench_req_blob){ .d = &s->digests[i], .data = s->buf + i * size };
    }
    next_request(s, BENCH_OP_BATCH_UPDATE, (uint64_t)(n * size), size < SMALL_MAX);
    s->op_expect = n;
    return bench_req_batch_update(&s->req, instance_of(s), s->entries, n);
}

/* A fresh blob in the slot's buffer for a write. */
static int write_prepare(struct bench_slot *s, uint8_t op)
{
    uint64_t size = plan_of(s)->o.size;
    int rc = buf_reserve(s, (size_t)size);
    if (rc < 0) return rc;
    fill_unique(s, s->buf, size, &s->d);
    s->data = s->buf;
    next_request(s, op, size, size < SMALL_MAX);
    return 0;
}

static void http_path(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    if (!p->o.path) {
        char hex[2 * CLIENT_HASH_SIZE + 1];
        proto_hex_encode(s->d.hash, CLIENT_HASH_SIZE, hex);
        (void)snprintf(s->path, sizeof(s->path), "/cas/%s", hex);
    } else if (s->op == BENCH_OP_HTTP_PUT) {
        /* WebDAV-style: a few files per slot, overwritten in turn. */
        (void)snprintf(s->path, sizeof(s->path), "%s/%u/%u-%u", p->o.path, s->t->index, s->index,
                       (unsigned)(s->counter % 16));
    } else {
        (void)snprintf(s->path, sizeof(s->path), "%s", p->o.path);
    }
}

/* Prepares the one request of a single-request workload. */
static int single_prepare(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    uint64_t *rng = &s->t->rng;
    const struct bench_blob *b =
        p->blob_count ? &p->blobs[bench_rand_below(rng, p->blob_count)] : NULL;
    s->step = BENCH_STEP_ONE;
    switch (p->w) {
    case BENCH_W_BS_READ:
    case BENCH_W_HTTP_GET:
        if (b) s->d = b->d;
        next_request(s, p->w == BENCH_W_BS_READ ? BENCH_OP_BS_READ : BENCH_OP_HTTP_GET, p->o.size,
                     p->o.size < SMALL_MAX);
        if (p->http) http_path(s);
        return 0;
    case BENCH_W_BS_WRITE:
        return write_prepare(s, BENCH_OP_BS_WRITE);
    case BENCH_W_HTTP_PUT: {
        int rc = write_prepare(s, BENCH_OP_HTTP_PUT);
        if (rc == 0) http_path(s);
        return rc;
    }
    case BENCH_W_BATCH_UPDATE:
        return batch_update_prepare(s);
    case BENCH_W_AC_GET:
        s->shared = &p->actions[bench_rand_below(rng, p->action_count)].get;
        next_request(s, BENCH_OP_AC_GET, 0, false);
        return 0;
    default:
        s->shared = &p->reqs[bench_rand_below(rng, p->req_count)];
        next_request(s, p->w == BENCH_W_BATCH_READ ? BENCH_OP_BATCH_READ : BENCH_OP_FIND_MISSING,
                     s->shared->bytes, s->shared->small);
        s->op_expect = s->shared->expect;
        return 0;
    }
}

void bench_step_begin(struct bench_slot *s)
{
    s->parked = false;
    s->shared = NULL;
    if (s->t->seeding) {
        seed_begin(s);
        return;
    }
    if (plan_of(s)->w == BENCH_W_MIX) {
        mix_begin(s);
    } else {
        int rc = single_prepare(s);
        if (rc < 0) {
            bench_run_fatal(s->t, rc, "preparing a request");
            bench_run_unit_done(s);
            return;
        }
    }
    if (s->t->stopping) {
        bench_run_unit_done(s);
        return;
    }
    /* Open loop: the unit's first request counts from when it was due, whatever held it up
     * (a slot, a connection, preparing it). Closed loop: from when it is started, after it was
     * prepared: a new blob's copy and SHA-256 are the client's work, not the request's, and
     * counting them put a 64 MiB blob's hashing (tens of ms) into every bs-write latency. */
    s->req_ns = plan_of(s)->o.rate ? s->unit_ns : 0;
    step_start(s);
}

void bench_step_resume(struct bench_slot *s)
{
    s->parked = false;
    step_start(s);
}

void bench_step_cancel(struct bench_slot *s)
{
    switch (s->op) {
    case BENCH_OP_BS_READ:
        if (client_call_is_active(&s->get.call)) client_get_close(&s->get);
        return;
    case BENCH_OP_BS_WRITE:
        client_call_cancel(&s->put.call);
        return;
    case BENCH_OP_HTTP_GET:
    case BENCH_OP_HTTP_PUT:
        client_h1_close(&s->h1);
        return;
    default:
        client_call_cancel(&s->raw.call);
        return;
    }
}

/* ---- slots ---- */

static void h1_closed(struct client_h1 *h, int reason);

static void h1_open(struct bench_slot *s)
{
    const struct bench_plan *p = plan_of(s);
    struct client_h1_options o = { .connect_timeout_ms = (uint32_t)p->o.timeout_ms,
                                   .io_timeout_ms = (uint32_t)p->o.timeout_ms };
    s->h1.user = s;
    int rc = client_h1_open(&s->h1, &s->t->cl, &p->addr, &o, h1_closed);
    if (rc < 0) {
        bench_run_fatal(s->t, rc, "opening an HTTP connection");
        return;
    }
    if (s->parked) bench_step_resume(s);
}

static void h1_reopen_fire(struct ring_timer *timer)
{
    struct bench_slot *s = timer->ctx;
    if (!s->t->stopping) h1_open(s);
}

static void h1_closed(struct client_h1 *h, int reason)
{
    struct bench_slot *s = h->user;
    if (s->t->stopping) return;
    if (reason == 0) {
        h1_open(s); /* the server ended a keep-alive connection: a new one at once */
        return;
    }
    /* After a failure, not at once: a server that refuses connections would make it spin. */
    if (ring_timer_start(s->t->core, &s->reopen, NULL, 10) < 0) {
        bench_run_fatal(s->t, -EAGAIN, "reopening an HTTP connection");
    }
}

int bench_step_init(struct bench_slot *s, struct bench_thread *t, uint32_t index)
{
    s->t = t;
    s->index = index;
    int rc = client_get_init(&s->get, &t->cl);
    if (rc == 0) rc = client_put_init(&s->put, &t->cl);
    if (rc == 0) rc = client_sha256_init(&s->body_sha);
    if (rc < 0) return rc;
    client_raw_init(&s->raw, &t->cl);
    ring_timer_init(&s->reopen, h1_reopen_fire, s);
    if (t->plan->http) h1_open(s);
    return t->fatal;
}

void bench_step_deinit(struct bench_slot *s)
{
    if (!s->t) return;
    client_get_deinit(&s->get);
    client_put_deinit(&s->put);
    client_raw_deinit(&s->raw);
    bench_buf_free(&s->req);
    client_sha256_deinit(&s->body_sha);
    ZSTD_freeDCtx(s->body_dctx);
    s->body_dctx = NULL;
    free(s->body_out);
    s->body_out = NULL;
    free(s->buf);
    free(s->digests);
    free(s->entries);
    s->buf = NULL;
    s->digests = NULL;
    s->entries = NULL;
}
