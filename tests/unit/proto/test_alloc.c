/* Counting allocators: counts return to zero, injected failures, the protobuf-c adapter. */
#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "proto/alloc.h"
#include "proto/google/rpc/status.pb-c.h"

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
    cr_assert(eq(u64, base_counter_get(&a.bytes), 0));
    cr_assert(eq(u64, base_counter_get(&a.blocks), 0));
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
