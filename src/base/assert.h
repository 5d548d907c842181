/*
 * Assertions that stay on in every build.
 *
 * ASSERT checks a programmer's invariant and aborts with the expression, the place and a
 * backtrace when it breaks: a storage node that has lost an invariant must stop before it
 * acknowledges or serves a wrong byte. DEBUG_ASSERT is for hot paths and O(n) checks; it is
 * evaluated only in debug, sanitizer and fuzz builds (RC_DEBUG), and type-checked elsewhere.
 * Never assert on bytes that came from the network or the disk: that is input to handle.
 */
#ifndef RINGCAS_BASE_ASSERT_H
#define RINGCAS_BASE_ASSERT_H

#define LIKELY(x)    __builtin_expect(!!(x), 1)
#define UNLIKELY(x)  __builtin_expect(!!(x), 0)
#define MUST_CHECK   __attribute__((warn_unused_result))
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Prints <expr>, <file>:<line> and a backtrace to stderr, then aborts. */
_Noreturn void base_assert_fail(const char *expr, const char *file, int line);

#define ASSERT(cond) (LIKELY(cond) ? (void)0 : base_assert_fail(#cond, __FILE__, __LINE__))
#ifdef RC_DEBUG
#    define DEBUG_ASSERT(cond) ASSERT(cond)
#else
#    define DEBUG_ASSERT(cond) ((void)sizeof(cond)) /* type-checked, never evaluated */
#endif
#define STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)

/* Marks a case that cannot happen; aborts like a failed ASSERT. */
#define UNREACHABLE() base_assert_fail("unreachable", __FILE__, __LINE__)

/* Aborts with <msg> (a string literal) in every build: a broken invariant found by a branch. */
#define PANIC(msg) base_assert_fail(msg, __FILE__, __LINE__)

/* Like PANIC in debug, sanitizer and fuzz builds; counted and logged by the caller elsewhere. */
#ifdef RC_DEBUG
#    define DEBUG_PANIC(msg) base_assert_fail(msg, __FILE__, __LINE__)
#else
#    define DEBUG_PANIC(msg) ((void)0)
#endif

#endif /* RINGCAS_BASE_ASSERT_H */
