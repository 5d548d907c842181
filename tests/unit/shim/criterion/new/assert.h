/* Comparison helpers of Criterion's new assertion API, for the TSan stand-in. */
#ifndef RINGCAS_TESTS_SHIM_CRITERION_NEW_ASSERT_H
#define RINGCAS_TESTS_SHIM_CRITERION_NEW_ASSERT_H

#include <string.h>

/* Each operand is evaluated once, as in Criterion. */
static inline int shim_cmp_s(long long a, long long b)
{
    return (a > b) - (a < b);
}

static inline int shim_cmp_u(unsigned long long a, unsigned long long b)
{
    return (a > b) - (a < b);
}

static inline int shim_cmp_d(double a, double b)
{
    return (a > b) - (a < b);
}

static inline int shim_cmp_p(const void *a, const void *b)
{
    return ((const char *)a > (const char *)b) - ((const char *)a < (const char *)b);
}

#define SHIM_CMP_str(a, b) strcmp((a), (b))
#define SHIM_CMP_int(a, b) shim_cmp_s((long long)(a), (long long)(b))
#define SHIM_CMP_i64(a, b) shim_cmp_s((long long)(a), (long long)(b))
#define SHIM_CMP_chr(a, b) shim_cmp_s((long long)(a), (long long)(b))
#define SHIM_CMP_u8(a, b)  shim_cmp_u((unsigned long long)(a), (unsigned long long)(b))
#define SHIM_CMP_u16(a, b) shim_cmp_u((unsigned long long)(a), (unsigned long long)(b))
#define SHIM_CMP_u32(a, b) shim_cmp_u((unsigned long long)(a), (unsigned long long)(b))
#define SHIM_CMP_u64(a, b) shim_cmp_u((unsigned long long)(a), (unsigned long long)(b))
#define SHIM_CMP_sz(a, b)  shim_cmp_u((unsigned long long)(a), (unsigned long long)(b))
#define SHIM_CMP_ptr(a, b) shim_cmp_p((a), (b))
#define SHIM_CMP_dbl(a, b) shim_cmp_d((double)(a), (double)(b))

#define eq(T, a, b) (SHIM_CMP_##T(a, b) == 0)
#define ne(T, a, b) (SHIM_CMP_##T(a, b) != 0)
#define lt(T, a, b) (SHIM_CMP_##T(a, b) < 0)
#define le(T, a, b) (SHIM_CMP_##T(a, b) <= 0)
#define gt(T, a, b) (SHIM_CMP_##T(a, b) > 0)
#define ge(T, a, b) (SHIM_CMP_##T(a, b) >= 0)
#define not(x) (!(x))

#endif
