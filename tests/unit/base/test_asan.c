/*
 * The pools' poisoning helpers: under ASan a poisoned range is unaddressable until it is
 * unpoisoned, exactly over the bytes named; elsewhere the helpers do nothing.
 */
#include <stdint.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/asan.h"

#ifdef RC_ASAN
/* ASan tracks poisoning in 8-byte granules: aligned ranges keep the edges exact. */
static _Alignas(8) uint8_t block[64];

Test(base_asan, poisons_exactly_the_range_until_unpoisoned)
{
    base_asan_poison(block + 16, 32);
    cr_assert(eq(int, __asan_address_is_poisoned(block + 16), 1));
    cr_assert(eq(int, __asan_address_is_poisoned(block + 47), 1));
    cr_assert(eq(int, __asan_address_is_poisoned(block + 15), 0), "the byte before stays");
    cr_assert(eq(int, __asan_address_is_poisoned(block + 48), 0), "the byte after stays");
    base_asan_unpoison(block + 16, 32);
    cr_assert(eq(ptr, __asan_region_is_poisoned(block, sizeof(block)), NULL));
}
#else
Test(base_asan, does_nothing_without_asan)
{
    uint8_t block[8] = { 1 };
    base_asan_poison(block, sizeof(block));
    base_asan_unpoison(block, sizeof(block));
    cr_assert(eq(u8, block[0], 1));
}
#endif
