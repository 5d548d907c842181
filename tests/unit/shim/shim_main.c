/* Runs the tests registered by the Criterion stand-in, each in a forked child. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "criterion/criterion.h"

static struct shim_test *tests;

void shim_register(struct shim_test *t)
{
    t->next = tests;
    tests = t;
}

__attribute__((format(printf, 4, 5))) void shim_fail(const char *file, int line, const char *expr,
                                                     const char *fmt, ...)
{
    fprintf(stderr, "%s:%d: assertion failed: %s", file, line, expr);
    if (fmt[0]) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, ": ");
        vfprintf(stderr, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "\n");
    exit(1);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    int failed = 0;
    int ran = 0;
    /* SHIM_FILTER=text runs only the tests whose name contains it. */
    const char *filter = getenv("SHIM_FILTER");
    for (struct shim_test *t = tests; t; t = t->next) {
        if (filter && !strstr(t->name, filter)) continue;
        pid_t pid = fork();
        if (pid == 0) {
            t->fn();
            exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        fprintf(stderr, "[%s] %s::%s\n", ok ? "PASS" : "FAIL", t->suite, t->name);
        failed += !ok;
        ran++;
    }
    fprintf(stderr, "[====] Synthesis: Tested: %d | Passing: %d | Failing: %d\n", ran, ran - failed,
            failed);
    return failed ? 1 : 0;
}
