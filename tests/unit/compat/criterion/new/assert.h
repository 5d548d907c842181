/*
 * Criterion's <criterion/new/assert.h> with gt() fixed. In C, Criterion 2.4.1 (Debian 12)
 * expands gt(Tag, a, b) to !(a < b), which is a >= b: cr_assert(gt(u64, 0, 0)) passes
 * (Snaipe/Criterion#473, fixed upstream after 2.4.1). Every test that includes the header
 * through the Criterion build's include path (tests/CMakeLists.txt) gets a strict gt(); the
 * TSan stand-in (tests/unit/shim) has its own. test_criterion.c checks both.
 */
#ifndef RINGCAS_TESTS_COMPAT_CRITERION_NEW_ASSERT_H
#define RINGCAS_TESTS_COMPAT_CRITERION_NEW_ASSERT_H

/* This folder is a SYSTEM include folder searched before /usr/include: the next one found is
 * Criterion's own. */
#include_next <criterion/new/assert.h>

#ifndef __cplusplus
#    undef CRI_BINOP_T_GT
#    define CRI_BINOP_T_GT(Tag, Actual, Ref)                                                       \
        (CRI_BINOP_LT_TAG(Tag, !, Actual, Ref) && CRI_BINOP_EQ_TAG(Tag, !, Actual, Ref))
#endif

#endif /* RINGCAS_TESTS_COMPAT_CRITERION_NEW_ASSERT_H */
