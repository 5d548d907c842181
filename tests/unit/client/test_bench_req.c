/*
 * The load generator's hand-encoded REAPI requests, checked by decoding them with the
 * generated protobuf-c code, and its readers of the answers, fed answers protobuf-c packed.
 * Also the build mix's size model: its draws stay in range and follow the table.
 */
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "client/bench_internal.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "proto/frame.h"
#include "proto/wire.h"

#define T(x)       Build__Bazel__Remote__Execution__V2__##x
#define F(x)       build__bazel__remote__execution__v2__##x
#define PB_INIT(x) BUILD__BAZEL__REMOTE__EXECUTION__V2__##x

static void digest_of(struct client_digest *d, uint8_t seed, uint64_t size)
{
    memset(d->hash, seed, sizeof(d->hash));
    d->size = size;
}

/* The payload of a framed request, after checking its frame header. */
static const uint8_t *payload(const struct bench_buf *b, size_t *len)
{
    cr_assert(ge(sz, b->len, PROTO_FRAME_HEADER_SIZE));
    cr_assert(eq(u8, b->p[0], 0));
    *len = b->len - PROTO_FRAME_HEADER_SIZE;
    return b->p + PROTO_FRAME_HEADER_SIZE;
}

static void check_digest(const T(Digest) * m, const struct client_digest *d)
{
    char hex[65];
    proto_hex_encode(d->hash, 32, hex);
    cr_assert(eq(str, m->hash, hex));
    cr_assert(eq(i64, m->size_bytes, (int64_t)d->size));
}

Test(client_bench_req, find_missing_and_batch_read_decode)
{
    struct client_digest d[3];
    const struct client_digest *ds[3];
    for (int i = 0; i < 3; i++) {
        digest_of(&d[i], (uint8_t)(i + 1), i == 0 ? 0 : (uint64_t)i * 1000000);
        ds[i] = &d[i];
    }
    struct bench_buf b = { 0 };
    cr_assert(eq(int, bench_req_find_missing(&b, "inst/a", ds, 3), 0));
    size_t len;
    const uint8_t *p = payload(&b, &len);
    T(FindMissingBlobsRequest) *f = F(find_missing_blobs_request__unpack)(NULL, len, p);
    cr_assert(f != NULL);
    cr_assert(eq(str, f->instance_name, "inst/a"));
    cr_assert(eq(sz, f->n_blob_digests, 3));
    for (int i = 0; i < 3; i++) {
        check_digest(f->blob_digests[i], &d[i]);
    }
    F(find_missing_blobs_request__free_unpacked)(f, NULL);
    cr_assert(eq(int, bench_req_batch_read(&b, "", ds, 2, true), 0));
    p = payload(&b, &len);
    T(BatchReadBlobsRequest) *r = F(batch_read_blobs_request__unpack)(NULL, len, p);
    cr_assert(r != NULL);
    cr_assert(eq(str, r->instance_name, ""));
    cr_assert(eq(sz, r->n_digests, 2));
    cr_assert(eq(sz, r->n_acceptable_compressors, 1));
    cr_assert(eq(int, (int)r->acceptable_compressors[0], 1));
    F(batch_read_blobs_request__free_unpacked)(r, NULL);
    bench_buf_free(&b);
}

Test(client_bench_req, batch_update_and_action_result_decode)
{
    uint8_t data[2][300];
    memset(data[0], 'a', sizeof(data[0]));
    memset(data[1], 'b', sizeof(data[1]));
    struct client_digest d[2];
    digest_of(&d[0], 7, 300);
    digest_of(&d[1], 8, 200);
    struct bench_req_blob e[2] = { { &d[0], data[0] }, { &d[1], data[1] } };
    struct bench_buf b = { 0 };
    cr_assert(eq(int, bench_req_batch_update(&b, "x", e, 2), 0));
    size_t len;
    const uint8_t *p = payload(&b, &len);
    T(BatchUpdateBlobsRequest) *u = F(batch_update_blobs_request__unpack)(NULL, len, p);
    cr_assert(u != NULL);
    cr_assert(eq(sz, u->n_requests, 2));
    check_digest(u->requests[1]->digest, &d[1]);
    cr_assert(eq(sz, u->requests[1]->data.len, 200));
    cr_assert(eq(int, memcmp(u->requests[1]->data.data, data[1], 200), 0));
    F(batch_update_blobs_request__free_unpacked)(u, NULL);

    struct client_digest action;
    digest_of(&action, 9, 150);
    const struct client_digest *outs[2] = { &d[0], &d[1] };
    cr_assert(eq(int, bench_req_ac_update(&b, "x", &action, outs, 2), 0));
    p = payload(&b, &len);
    T(UpdateActionResultRequest) *a = F(update_action_result_request__unpack)(NULL, len, p);
    cr_assert(a != NULL);
    check_digest(a->action_digest, &action);
    cr_assert(eq(sz, a->action_result->n_output_files, 2));
    check_digest(a->action_result->output_files[0]->digest, &d[0]);
    cr_assert(eq(sz, strlen(a->action_result->output_files[0]->path), 20));
    F(update_action_result_request__free_unpacked)(a, NULL);

    cr_assert(eq(int, bench_req_ac_get(&b, "", &action), 0));
    p = payload(&b, &len);
    T(GetActionResultRequest) *g = F(get_action_result_request__unpack)(NULL, len, p);
    cr_assert(g != NULL);
    check_digest(g->action_digest, &action);
    F(get_action_result_request__free_unpacked)(g, NULL);
    bench_buf_free(&b);
}

/* Packs <m> into a fresh buffer. */
static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(*len + 1);
    protobuf_c_message_pack(m, p);
    return p;
}

Test(client_bench_req, reads_answers)
{
    T(Digest) dg[2] = { PB_INIT(DIGEST__INIT), PB_INIT(DIGEST__INIT) };
    char h0[] = "aa00000000000000000000000000000000000000000000000000000000000000";
    dg[0].hash = h0;
    dg[0].size_bytes = 3;
    dg[1].hash = h0;
    dg[1].size_bytes = 4;
    T(FindMissingBlobsResponse) fr = PB_INIT(FIND_MISSING_BLOBS_RESPONSE__INIT);
    T(Digest) * dp[2] = { &dg[0], &dg[1] };
    fr.n_missing_blob_digests = 2;
    fr.missing_blob_digests = dp;
    size_t len;
    uint8_t *p = pack(&fr.base, &len);
    uint64_t sums = 0;
    cr_assert(eq(i64, bench_req_count_missing(p, len, &sums), 2));
    cr_assert(eq(u64, sums, 2 * 0xaa)); /* each hash's first 8 bytes, little-endian */
    free(p);

    T(BatchReadBlobsResponse__Response)
    e[2] = { PB_INIT(BATCH_READ_BLOBS_RESPONSE__RESPONSE__INIT),
             PB_INIT(BATCH_READ_BLOBS_RESPONSE__RESPONSE__INIT) };
    uint8_t bytes[4] = { 1, 2, 3, 4 };
    e[0].digest = &dg[0];
    e[0].data.data = bytes;
    e[0].data.len = 3;
    Google__Rpc__Status nf = GOOGLE__RPC__STATUS__INIT;
    nf.code = 5;
    e[1].digest = &dg[1];
    e[1].status = &nf;
    T(BatchReadBlobsResponse__Response) * ep[2] = { &e[0], &e[1] };
    T(BatchReadBlobsResponse) rr = PB_INIT(BATCH_READ_BLOBS_RESPONSE__INIT);
    rr.n_responses = 2;
    rr.responses = ep;
    p = pack(&rr.base, &len);
    struct bench_req_bad bad;
    struct bench_req_read rd = { 0 };
    cr_assert(eq(i64, bench_req_count_read(p, len, &rd, &bad), 1));
    cr_assert(eq(int, bad.status, 5));
    cr_assert(eq(ptr, (void *)bad.message, NULL)); /* a status without a message */
    cr_assert(eq(u64, rd.size, 3));
    cr_assert(eq(u64, rd.sums, 0xaa)); /* the hash's first 8 bytes, little-endian */
    /* --verify: the bytes are not h0's blob. They are this one's. */
    rd.verify = true;
    cr_assert(eq(i64, bench_req_count_read(p, len, &rd, &bad), -EBADMSG));
    free(p);
    char h123[] = "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81";
    dg[0].hash = h123;
    p = pack(&rr.base, &len);
    cr_assert(eq(i64, bench_req_count_read(p, len, &rd, &bad), 1));
    free(p);
    e[0].data.len = 2; /* shorter than its digest says */
    p = pack(&rr.base, &len);
    rd.verify = false;
    cr_assert(eq(i64, bench_req_count_read(p, len, &rd, &bad), -EBADMSG));
    free(p);
    cr_assert(eq(i64, bench_req_count_missing((const uint8_t *)"\x12\x05", 2, &sums), -EBADMSG));
}

/* A batch whose call is OK but whose blobs were refused: the first refusal's code and message
 * are what the report shows (they used to be a bare code). */
Test(client_bench_req, refused_blobs_keep_the_servers_message)
{
    T(Digest) dg = PB_INIT(DIGEST__INIT);
    char h0[] = "bb00000000000000000000000000000000000000000000000000000000000000";
    dg.hash = h0;
    dg.size_bytes = 3;
    char busy[] = "server busy: the core's message memory (--message-memory) is taken, retry";
    char other[] = "not this one";
    Google__Rpc__Status st[2] = { GOOGLE__RPC__STATUS__INIT, GOOGLE__RPC__STATUS__INIT };
    st[0].code = 8;
    st[0].message = busy;
    st[1].code = 14;
    st[1].message = other;

    T(BatchReadBlobsResponse__Response)
    e[2] = { PB_INIT(BATCH_READ_BLOBS_RESPONSE__RESPONSE__INIT),
             PB_INIT(BATCH_READ_BLOBS_RESPONSE__RESPONSE__INIT) };
    T(BatchReadBlobsResponse__Response) * ep[2] = { &e[0], &e[1] };
    for (int i = 0; i < 2; i++) {
        e[i].digest = &dg;
        e[i].status = &st[i];
    }
    T(BatchReadBlobsResponse) rr = PB_INIT(BATCH_READ_BLOBS_RESPONSE__INIT);
    rr.n_responses = 2;
    rr.responses = ep;
    size_t len;
    uint8_t *p = pack(&rr.base, &len);
    struct bench_req_bad bad;
    struct bench_req_read rd = { .zstd = true };
    cr_assert(eq(i64, bench_req_count_read(p, len, &rd, &bad), 0));
    cr_assert(eq(int, bad.status, 8));
    cr_assert(eq(sz, bad.message_len, strlen(busy)));
    cr_assert(eq(int, memcmp(bad.message, busy, strlen(busy)), 0));
    free(p);

    T(BatchUpdateBlobsResponse__Response)
    u[2] = { PB_INIT(BATCH_UPDATE_BLOBS_RESPONSE__RESPONSE__INIT),
             PB_INIT(BATCH_UPDATE_BLOBS_RESPONSE__RESPONSE__INIT) };
    T(BatchUpdateBlobsResponse__Response) * up[2] = { &u[0], &u[1] };
    Google__Rpc__Status ok = GOOGLE__RPC__STATUS__INIT;
    u[0].digest = &dg;
    u[0].status = &ok;
    u[1].digest = &dg;
    u[1].status = &st[1];
    T(BatchUpdateBlobsResponse) ur = PB_INIT(BATCH_UPDATE_BLOBS_RESPONSE__INIT);
    ur.n_responses = 2;
    ur.responses = up;
    p = pack(&ur.base, &len);
    cr_assert(eq(i64, bench_req_count_updated(p, len, &bad), 1));
    cr_assert(eq(int, bad.status, 14));
    cr_assert(eq(sz, bad.message_len, strlen(other)));
    cr_assert(eq(int, memcmp(bad.message, other, strlen(other)), 0));
    free(p);
}

Test(client_bench_mix, sizes_follow_the_model)
{
    uint64_t rng = 12345;
    uint64_t under_4k = 0;
    uint64_t under_64k = 0;
    uint64_t big = 0;
    for (int i = 0; i < 200000; i++) {
        uint64_t v = bench_mix_size(&rng, 256u << 20);
        cr_assert(ge(u64, v, 1));
        cr_assert(le(u64, v, 256u << 20));
        under_4k += v <= 4096;
        under_64k += v <= 65536;
        big += v > (1u << 20);
    }
    /* The table: 55 % up to 4 KiB, 94 % up to 64 KiB, 0.5 % past 1 MiB. */
    cr_assert(gt(u64, under_4k, 200000 * 50 / 100));
    cr_assert(lt(u64, under_4k, 200000 * 60 / 100));
    cr_assert(gt(u64, under_64k, 200000 * 92 / 100));
    cr_assert(gt(u64, big, 200000 / 1000));
    for (int i = 0; i < 1000; i++) {
        uint32_t n = bench_mix_output_count(&rng);
        cr_assert(ge(u32, n, 1));
        cr_assert(le(u32, n, BENCH_MIX_OUTPUTS_MAX));
    }
}

/* GetActionResult's answer: its output files and their digests' keys, so that a hit checks
 * it got the result seeded for the action (any OK answer used to count). */
Test(client_bench_req, counts_an_action_results_outputs)
{
    T(Digest) dg[2] = { PB_INIT(DIGEST__INIT), PB_INIT(DIGEST__INIT) };
    char h0[] = "0100000000000000000000000000000000000000000000000000000000000000";
    char h1[] = "0200000000000000000000000000000000000000000000000000000000000000";
    dg[0].hash = h0;
    dg[0].size_bytes = 3;
    dg[1].hash = h1;
    dg[1].size_bytes = 4;
    T(OutputFile) of[2] = { PB_INIT(OUTPUT_FILE__INIT), PB_INIT(OUTPUT_FILE__INIT) };
    char path[] = "out/x";
    of[0].path = path;
    of[0].digest = &dg[0];
    of[1].path = path;
    of[1].digest = &dg[1];
    T(OutputFile) * op[2] = { &of[0], &of[1] };
    T(ActionResult) ar = PB_INIT(ACTION_RESULT__INIT);
    ar.n_output_files = 2;
    ar.output_files = op;
    ar.exit_code = 0;
    size_t len;
    uint8_t *p = pack(&ar.base, &len);
    uint64_t sums = 0;
    cr_assert(eq(i64, bench_req_count_outputs(p, len, &sums), 2));
    cr_assert(eq(u64, sums, 3)); /* 1 + 2: each hash's first 8 bytes, little-endian */
    free(p);
    ar.n_output_files = 0; /* an empty result */
    p = pack(&ar.base, &len);
    cr_assert(eq(i64, bench_req_count_outputs(p, len, &sums), 0));
    cr_assert(eq(u64, sums, 0));
    free(p);
    of[0].digest = NULL; /* an output file without its digest */
    ar.n_output_files = 1;
    p = pack(&ar.base, &len);
    cr_assert(eq(i64, bench_req_count_outputs(p, len, &sums), -EBADMSG));
    free(p);
}
