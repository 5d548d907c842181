/* Counting allocators: counts return to zero, injected failures, the library adapters. */
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "proto/alloc.h"
#include "proto/google/rpc/status.pb-c.h"

/* Every byte and block <a> handed out came back. */
static void assert_all_given_back(struct proto_alloc *a)
{
    cr_assert(eq(u64, base_counter_get(&a->bytes), 0));
    cr_assert(eq(u64, base_counter_get(&a->blocks), 0));
}

Test(proto_alloc, counts_come_back_to_zero)
{
    struct proto_alloc a;
    proto_alloc_init(&a);
    void *p = proto_alloc_malloc(&a, 100);
    void *q = proto_alloc_calloc(&a, 10, 10);
    cr_assert(ne(ptr, p, NULL));
    cr_assert(ne(ptr, q, NULL));
    cr_assert(eq(u64, base_counter_get(&a.bytes), 200));
    cr_assert(eq(u64, base_counter_get(&a.blocks), 2));
    p = proto_alloc_realloc(&a, p, 1000);
    cr_assert(ne(ptr, p, NULL));
    memset(p, 1, 1000);
    cr_assert(eq(u64, base_counter_get(&a.bytes), 1100));
    proto_alloc_free(&a, p);
    proto_alloc_free(&a, q);
    proto_alloc_free(&a, NULL);
    assert_all_given_back(&a);
    cr_assert(eq(u64, base_counter_get(&a.total), 3));
}

Test(proto_alloc, injected_failure_hits_the_nth_allocation)
{
    struct proto_alloc a;
    proto_alloc_init(&a);
    proto_alloc_fail_in(&a, 2);
    void *p = proto_alloc_malloc(&a, 8);
    cr_assert(ne(ptr, p, NULL));
    cr_assert(eq(ptr, proto_alloc_malloc(&a, 8), NULL));
    void *q = proto_alloc_malloc(&a, 8);
    cr_assert(ne(ptr, q, NULL));
    cr_assert(eq(u64, base_counter_get(&a.failed), 1));
    proto_alloc_free(&a, p);
    proto_alloc_free(&a, q);
    cr_assert(eq(ptr, proto_alloc_calloc(&a, SIZE_MAX / 2, 4), NULL));
    /* Every refusal counts, so callers can tell memory from bad input after an unpack. */
    cr_assert(eq(u64, base_counter_get(&a.failed), 2));
}

Test(proto_alloc, a_limit_refuses_what_would_pass_it_and_frees_make_room)
{
    struct proto_alloc a;
    proto_alloc_init(&a);
    proto_alloc_limit(&a, 1000);
    void *p = proto_alloc_malloc(&a, 600);
    cr_assert(ne(ptr, p, NULL));
    cr_assert(eq(ptr, proto_alloc_malloc(&a, 401), NULL));
    cr_assert(eq(u64, base_counter_get(&a.failed), 1));
    void *q = proto_alloc_malloc(&a, 400); /* exactly at the limit */
    cr_assert(ne(ptr, q, NULL));
    /* Growing is refused; shrinking and freeing are not. */
    cr_assert(eq(ptr, proto_alloc_realloc(&a, q, 401), NULL));
    cr_assert(eq(u64, base_counter_get(&a.failed), 2));
    q = proto_alloc_realloc(&a, q, 100);
    cr_assert(ne(ptr, q, NULL));
    cr_assert(eq(u64, base_counter_get(&a.bytes), 700));
    proto_alloc_free(&a, p);
    void *r = proto_alloc_malloc(&a, 900);
    cr_assert(ne(ptr, r, NULL));
    cr_assert(eq(ptr, proto_alloc_malloc(&a, SIZE_MAX / 2), NULL));
    proto_alloc_free(&a, q);
    proto_alloc_free(&a, r);
    cr_assert(eq(u64, base_counter_get(&a.bytes), 0));
    cr_assert(eq(u64, base_counter_get(&a.failed), 3));
}

Test(proto_alloc, protobuf_unpack_sweep_frees_everything)
{
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = 5;
    st.message = "not here";
    uint8_t buf[64];
    size_t len = google__rpc__status__pack(&st, buf);
    struct proto_alloc a;
    proto_alloc_init(&a);
    ProtobufCAllocator pa;
    proto_alloc_protobuf(&a, &pa);
    /* Fail allocation 1, 2, ... in turn until an unpack succeeds; nothing may leak. */
    for (uint64_t n = 1; n < 16; n++) {
        proto_alloc_fail_in(&a, n);
        Google__Rpc__Status *m = google__rpc__status__unpack(&pa, len, buf);
        if (m) {
            cr_assert(eq(int, m->code, 5));
            cr_assert(eq(str, m->message, "not here"));
            google__rpc__status__free_unpacked(m, &pa);
            proto_alloc_fail_in(&a, 0);
            break;
        }
        cr_assert(eq(u64, base_counter_get(&a.blocks), 0), "leak after failure %lu", n);
    }
    cr_assert(eq(u64, base_counter_get(&a.bytes), 0));
    cr_assert(gt(u64, base_counter_get(&a.failed), 0));
}

Test(proto_alloc, nghttp2_sessions_allocate_through_it)
{
    struct proto_alloc a;
    proto_alloc_init(&a);
    nghttp2_mem mem = proto_alloc_nghttp2(&a);
    nghttp2_session_callbacks *cbs;
    cr_assert(eq(int, nghttp2_session_callbacks_new(&cbs), 0));
    nghttp2_session *s = NULL;
    /* A refused allocation fails the session cleanly. */
    proto_alloc_fail_in(&a, 1);
    cr_assert(ne(int, nghttp2_session_server_new3(&s, cbs, NULL, NULL, &mem), 0));
    cr_assert(eq(u64, base_counter_get(&a.blocks), 0));
    cr_assert(eq(int, nghttp2_session_server_new3(&s, cbs, NULL, NULL, &mem), 0));
    nghttp2_session_callbacks_del(cbs);
    cr_assert(gt(u64, base_counter_get(&a.bytes), 0), "the session's memory is counted");
    nghttp2_session_del(s);
    assert_all_given_back(&a);
}

Test(proto_alloc, zstd_contexts_allocate_through_it)
{
    struct proto_alloc a;
    proto_alloc_init(&a);
    ZSTD_customMem mem = proto_alloc_zstd(&a);
    proto_alloc_fail_in(&a, 1);
    cr_assert(eq(ptr, ZSTD_createCCtx_advanced(mem), NULL));
    cr_assert(eq(u64, base_counter_get(&a.blocks), 0));
    ZSTD_CCtx *cctx = ZSTD_createCCtx_advanced(mem);
    ZSTD_DCtx *dctx = ZSTD_createDCtx_advanced(mem);
    cr_assert(ne(ptr, cctx, NULL));
    cr_assert(ne(ptr, dctx, NULL));
    /* A round trip makes both contexts take their working memory, counted too. */
    static const char text[] = "counted counted counted counted counted";
    uint8_t z[128];
    char back[sizeof(text)];
    size_t zlen = ZSTD_compress2(cctx, z, sizeof(z), text, sizeof(text));
    cr_assert(not(ZSTD_isError(zlen)));
    cr_assert(eq(sz, ZSTD_decompressDCtx(dctx, back, sizeof(back), z, zlen), sizeof(text)));
    cr_assert(eq(int, memcmp(back, text, sizeof(text)), 0));
    cr_assert(gt(u64, base_counter_get(&a.blocks), 2), "working memory goes through it");
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
    assert_all_given_back(&a);
}

Test(proto_alloc, a_kept_class_reuses_freed_blocks_within_its_budget)
{
    struct proto_alloc a;
    proto_alloc_init(&a);
    /* 8 classes, 2 blocks of the 64-byte class fit its share: (2 * 8) * (16 + 64) bytes. */
    proto_alloc_cache(&a, 2 * 8 * (16 + 64));
    void *p = proto_alloc_malloc(&a, 40);
    void *q = proto_alloc_malloc(&a, 64);
    void *r = proto_alloc_malloc(&a, 50);
    cr_assert(ne(ptr, p, NULL));
    cr_assert(ne(ptr, q, NULL));
    cr_assert(ne(ptr, r, NULL));
    proto_alloc_free(&a, p);
    proto_alloc_free(&a, q);
    proto_alloc_free(&a, r); /* over the class's share: freed */
    assert_all_given_back(&a);
    cr_assert(eq(u32, a.idle_len[1], 2));
    /* The last block kept comes back first, for any size of its class. */
    void *s = proto_alloc_malloc(&a, 33);
    cr_assert(eq(ptr, s, q));
    cr_assert(eq(u64, base_counter_get(&a.bytes), 33));
    /* Growing within the class keeps the block; past it, the bytes move. */
    memset(s, 7, 33);
    cr_assert(eq(ptr, proto_alloc_realloc(&a, s, 64), s));
    uint8_t *t = proto_alloc_realloc(&a, s, 1000);
    cr_assert(ne(ptr, t, NULL));
    cr_assert(eq(u8, t[32], 7));
    cr_assert(eq(u64, base_counter_get(&a.bytes), 1000));
    cr_assert(eq(u32, a.idle_len[1], 2), "the old block went back to its class");
    /* Large blocks are never kept. */
    void *big = proto_alloc_malloc(&a, 5000);
    cr_assert(ne(ptr, big, NULL));
    proto_alloc_free(&a, big);
    proto_alloc_free(&a, t);
    assert_all_given_back(&a);
    proto_alloc_deinit(&a);
    cr_assert(eq(u32, a.idle_len[1], 0));
    cr_assert(eq(u32, a.idle_len[5], 0));
}
