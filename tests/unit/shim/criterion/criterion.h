/*
 * A small stand-in for Criterion, used only by the ThreadSanitizer build: Criterion's
 * inheritable arena cannot be set up under TSan (Snaipe/Criterion#274), so the TSan preset
 * compiles the same test sources against this header. It supports what ringcas's tests use:
 * Test(suite, name, ...), cr_assert(cond[, fmt, ...]) and the comparison helpers of
 * <criterion/new/assert.h>. Each test runs in a forked child, like Criterion.
 */
#ifndef RINGCAS_TESTS_SHIM_CRITERION_H
#define RINGCAS_TESTS_SHIM_CRITERION_H

#include <stdio.h>
#include <stdlib.h>

struct shim_test {
    const char *suite;
    const char *name;
    void (*fn)(void);
    struct shim_test *next;
};

void shim_register(struct shim_test *t);
_Noreturn __attribute__((format(printf, 4, 5))) void
shim_fail(const char *file, int line, const char *expr, const char *fmt, ...);

#define Test(suite, name, ...)                                                                     \
    static void shim_fn_##suite##_##name(void);                                                    \
    static struct shim_test shim_t_##suite##_##name = { #suite, #name, shim_fn_##suite##_##name,   \
                                                        NULL };                                    \
    __attribute__((constructor)) static void shim_reg_##suite##_##name(void)                       \
    {                                                                                              \
        shim_register(&shim_t_##suite##_##name);                                                   \
    }                                                                                              \
    static void shim_fn_##suite##_##name(void)

#define cr_assert(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) shim_fail(__FILE__, __LINE__, #cond, "" __VA_ARGS__);                         \
    } while (0)

#define cr_fail(...) shim_fail(__FILE__, __LINE__, "cr_fail", "" __VA_ARGS__)

/* A skipped test passes, as Criterion counts it apart from failures. */
#define cr_skip_test(...) exit(0)

#endif
