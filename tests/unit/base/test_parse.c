#include <errno.h>
#include <stdint.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/parse.h"

Test(base_parse, u64_is_strict)
{
    uint64_t v = 0;
    cr_assert(eq(int, base_parse_u64("0", &v), 0));
    cr_assert(eq(u64, v, 0));
    cr_assert(eq(int, base_parse_u64("18446744073709551615", &v), 0));
    cr_assert(eq(u64, v, UINT64_MAX));
    cr_assert(eq(int, base_parse_u64("18446744073709551616", &v), -ERANGE));
    cr_assert(eq(int, base_parse_u64("", &v), -EINVAL));
    cr_assert(eq(int, base_parse_u64("-1", &v), -EINVAL));
    cr_assert(eq(int, base_parse_u64(" 1", &v), -EINVAL));
    cr_assert(eq(int, base_parse_u64("1 ", &v), -EINVAL));
    cr_assert(eq(int, base_parse_u64("0x10", &v), -EINVAL));
}

Test(base_parse, sizes_take_binary_suffixes)
{
    uint64_t v = 0;
    cr_assert(eq(int, base_parse_size("4096", &v), 0));
    cr_assert(eq(u64, v, 4096));
    cr_assert(eq(int, base_parse_size("64KiB", &v), 0));
    cr_assert(eq(u64, v, 65536));
    cr_assert(eq(int, base_parse_size("10G", &v), 0));
    cr_assert(eq(u64, v, 10ULL << 30));
    cr_assert(eq(int, base_parse_size("3MB", &v), 0));
    cr_assert(eq(u64, v, 3ULL << 20));
    cr_assert(eq(int, base_parse_size("1Q", &v), -EINVAL));
    cr_assert(eq(int, base_parse_size("20000000000T", &v), -ERANGE));
    cr_assert(eq(int, base_parse_size("G", &v), -EINVAL));
}

Test(base_parse, durations_are_milliseconds)
{
    uint64_t v = 0;
    cr_assert(eq(int, base_parse_duration_ms("250ms", &v), 0));
    cr_assert(eq(u64, v, 250));
    cr_assert(eq(int, base_parse_duration_ms("30s", &v), 0));
    cr_assert(eq(u64, v, 30000));
    cr_assert(eq(int, base_parse_duration_ms("2m", &v), 0));
    cr_assert(eq(u64, v, 120000));
    cr_assert(eq(int, base_parse_duration_ms("7", &v), 0));
    cr_assert(eq(u64, v, 7000));
    cr_assert(eq(int, base_parse_duration_ms("1d", &v), -EINVAL));
}
