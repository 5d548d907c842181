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

/*
 * The units as operators write them elsewhere: nginx and the JVM take 64k and 10g (docs/cli.md
 * says sizes read the way they do), Kubernetes sizes volumes in Gi. Each was a usage error, so a
 * manifest that passed a PVC's "100Gi" to RINGCAS_MAX_SIZE never started.
 */
Test(base_parse, sizes_take_any_case_and_kubernetes_units)
{
    static const struct {
        const char *text;
        uint64_t bytes;
    } cases[] = {
        { "64k", 64ULL << 10 },    { "10g", 10ULL << 30 },
        { "10gb", 10ULL << 30 },   { "10gib", 10ULL << 30 },
        { "10GIB", 10ULL << 30 },  { "100Gi", 100ULL << 30 },
        { "512Mi", 512ULL << 20 }, { "4Ki", 4ULL << 10 },
        { "2Ti", 2ULL << 40 },     { "7b", 7 },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 0;
        cr_assert(eq(int, base_parse_size(cases[i].text, &v), 0), "%s", cases[i].text);
        cr_assert(eq(u64, v, cases[i].bytes), "%s", cases[i].text);
    }
    uint64_t v = 0;
    /* Nothing else: no other letters, no space before or after the unit. */
    cr_assert(eq(int, base_parse_size("1Gx", &v), -EINVAL));
    cr_assert(eq(int, base_parse_size("1q", &v), -EINVAL));
    cr_assert(eq(int, base_parse_size("1 G", &v), -EINVAL));
    cr_assert(eq(int, base_parse_size("1Gib ", &v), -EINVAL));
    /* Durations keep their case: m is minutes, and M is no duration. */
    cr_assert(eq(int, base_parse_duration_ms("1M", &v), -EINVAL));
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
