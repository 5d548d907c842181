#include <stdint.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/arena.h"

Test(base_arena, allocations_are_aligned_and_distinct)
{
    struct base_arena a;
    base_arena_init(&a, 256, 4096);
    char *p = base_arena_alloc(&a, 3);
    char *q = base_arena_alloc(&a, 5);
    cr_assert(ne(ptr, p, NULL));
    cr_assert(ne(ptr, q, NULL));
    cr_assert(eq(u64, (uintptr_t)p % 16, 0));
    cr_assert(eq(u64, (uintptr_t)q % 16, 0));
    cr_assert(ge(u64, (uintptr_t)q - (uintptr_t)p, 16));
    base_arena_deinit(&a);
}

Test(base_arena, refuses_past_its_bound)
{
    struct base_arena a;
    base_arena_init(&a, 1024, 2048);
    cr_assert(ne(ptr, base_arena_alloc(&a, 900), NULL));
    /* A second block would pass the 2 KiB bound with its header. */
    cr_assert(eq(ptr, base_arena_alloc(&a, 1000), NULL));
    cr_assert(eq(ptr, base_arena_alloc(&a, SIZE_MAX), NULL));
    base_arena_deinit(&a);
}

Test(base_arena, reset_keeps_one_block_and_reuses_it)
{
    struct base_arena a;
    base_arena_init(&a, 512, 1 << 20);
    char *first = base_arena_alloc(&a, 100);
    for (int i = 0; i < 20; i++)
        cr_assert(ne(ptr, base_arena_alloc(&a, 300), NULL));
    char *big = base_arena_alloc(&a, 10000);
    cr_assert(ne(ptr, big, NULL));
    memset(big, 0xab, 10000);
    base_arena_reset(&a);
    cr_assert(le(u64, a.bytes_reserved, 1024));
    char *again = base_arena_alloc(&a, 100);
    cr_assert(eq(ptr, again, first));
    base_arena_deinit(&a);
}

Test(base_arena, calloc_zeroes_and_checks_overflow)
{
    struct base_arena a;
    base_arena_init(&a, 256, 1 << 16);
    unsigned char *p = base_arena_calloc(&a, 10, 10);
    cr_assert(ne(ptr, p, NULL));
    for (int i = 0; i < 100; i++)
        cr_assert(eq(u8, p[i], 0));
    cr_assert(eq(ptr, base_arena_calloc(&a, SIZE_MAX / 2, 4), NULL));
    char *s = base_arena_strndup(&a, "hello world", 5);
    cr_assert(eq(str, s, "hello"));
    base_arena_deinit(&a);
}
