/* grpc-timeout: units, rounding up, clamping and strict syntax. */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "proto/timeout.h"

static int parse(const char *s, uint64_t *ms)
{
    return proto_timeout_parse(s, strlen(s), ms);
}

Test(proto_timeout, units)
{
    uint64_t ms;
    cr_assert(eq(int, parse("1H", &ms), 0));
    cr_assert(eq(u64, ms, 3600000));
    cr_assert(eq(int, parse("2M", &ms), 0));
    cr_assert(eq(u64, ms, 120000));
    cr_assert(eq(int, parse("3S", &ms), 0));
    cr_assert(eq(u64, ms, 3000));
    cr_assert(eq(int, parse("250m", &ms), 0));
    cr_assert(eq(u64, ms, 250));
    cr_assert(eq(int, parse("1500u", &ms), 0));
    cr_assert(eq(u64, ms, 2));
    cr_assert(eq(int, parse("1n", &ms), 0));
    cr_assert(eq(u64, ms, 1));
    cr_assert(eq(int, parse("0m", &ms), 0));
    cr_assert(eq(u64, ms, 0));
    cr_assert(eq(int, parse("99999999S", &ms), 0));
    cr_assert(eq(u64, ms, PROTO_TIMEOUT_MS_MAX));
    cr_assert(eq(int, parse("99999999H", &ms), 0));
    cr_assert(eq(u64, ms, PROTO_TIMEOUT_MS_MAX));
}

Test(proto_timeout, strict_syntax)
{
    uint64_t ms;
    const char *bad[] = { "",    "S",  "10",  "123456789S", "-1S",  "+1S", " 1S",
                          "1 S", "1s", "1SS", "1x",         "1.5S", "0x1S" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(eq(int, parse(bad[i], &ms), -EINVAL), "%s", bad[i]);
}
