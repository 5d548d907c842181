/*
 * The comparisons every test relies on, checked on both test frameworks: real Criterion (with
 * the gt() fix in compat/criterion/new/assert.h) and the TSan stand-in. Each comparison is
 * checked where it must hold and where it must not, equality included.
 */
#include <stdint.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

Test(criterion, gt_is_strict)
{
    uint64_t zero = 0;
    uint64_t one = 1;
    int izero = 0;
    int ione = 1;
    size_t szero = 0;
    cr_assert(gt(u64, one, zero));
    cr_assert(not(gt(u64, zero, zero)));
    cr_assert(not(gt(u64, zero, one)));
    cr_assert(gt(int, ione, izero));
    cr_assert(not(gt(int, izero, izero)));
    cr_assert(not(gt(int, -1, izero)));
    cr_assert(not(gt(sz, szero, 0)));
    cr_assert(not(gt(u32, 7, 7)));
    cr_assert(not(gt(i64, -3, -3)));
}

Test(criterion, the_other_comparisons_hold_at_and_around_equality)
{
    uint64_t zero = 0;
    uint64_t one = 1;
    cr_assert(ge(u64, one, zero));
    cr_assert(ge(u64, zero, zero));
    cr_assert(not(ge(u64, zero, one)));
    cr_assert(lt(u64, zero, one));
    cr_assert(not(lt(u64, zero, zero)));
    cr_assert(not(lt(u64, one, zero)));
    cr_assert(le(u64, zero, one));
    cr_assert(le(u64, zero, zero));
    cr_assert(not(le(u64, one, zero)));
    cr_assert(eq(u64, one, 1));
    cr_assert(not(eq(u64, one, zero)));
    cr_assert(ne(u64, one, zero));
    cr_assert(not(ne(u64, one, 1)));
}
