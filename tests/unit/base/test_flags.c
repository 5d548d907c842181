#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/flags.h"

struct opts {
    const char *listen;
    uint64_t max_size;
    uint64_t timeout_ms;
    bool verbose;
};

static size_t make_flags(struct opts *o, struct base_flag *f)
{
    f[0] = (struct base_flag){ "listen", BASE_FLAG_STRING, &o->listen, "where", NULL };
    f[1] = (struct base_flag){ "max-size", BASE_FLAG_SIZE, &o->max_size, "budget", NULL };
    f[2] = (struct base_flag){ "read-timeout", BASE_FLAG_DURATION_MS, &o->timeout_ms, "t", NULL };
    f[3] = (struct base_flag){ "verbose", BASE_FLAG_BOOL, &o->verbose, "v", NULL };
    return 4;
}

Test(base_flags, argv_wins_over_environment)
{
    setenv("RINGCAS_LISTEN", "0.0.0.0:1", 1);
    setenv("RINGCAS_MAX_SIZE", "1G", 1);
    struct opts o = { "127.0.0.1:8980", 10, 5, false };
    struct base_flag f[4];
    size_t n = make_flags(&o, f);
    char *argv[] = { "--max-size=2G", "--read-timeout", "250ms", "--verbose", "file1", "--",
                     "--not-a-flag" };
    char *args[4];
    struct base_flags_rest rest = { args, 4, 0 };
    const struct base_flags_err err = { stderr, "ringcas test", NULL };
    cr_assert(eq(int, base_flags_parse(f, n, 7, argv, &rest, &err), 0));
    cr_assert(eq(str, (char *)o.listen, "0.0.0.0:1"));
    cr_assert(eq(u64, o.max_size, 2ULL << 30));
    cr_assert(eq(u64, o.timeout_ms, 250));
    cr_assert(o.verbose);
    cr_assert(eq(sz, rest.count, 2));
    cr_assert(eq(str, args[0], "file1"));
    cr_assert(eq(str, args[1], "--not-a-flag"));
}

Test(base_flags, rejects_unknown_and_malformed)
{
    unsetenv("RINGCAS_LISTEN");
    unsetenv("RINGCAS_MAX_SIZE");
    struct opts o = { NULL, 0, 0, true };
    struct base_flag f[4];
    size_t n = make_flags(&o, f);
    FILE *sink = fopen("/dev/null", "w");
    const struct base_flags_err err = { sink, "ringcas test", NULL };
    char *bad1[] = { "--nope" };
    cr_assert(eq(int, base_flags_parse(f, n, 1, bad1, NULL, &err), -EINVAL));
    char *bad2[] = { "--max-size", "lots" };
    cr_assert(eq(int, base_flags_parse(f, n, 2, bad2, NULL, &err), -EINVAL));
    char *bad3[] = { "--read-timeout" };
    cr_assert(eq(int, base_flags_parse(f, n, 1, bad3, NULL, &err), -EINVAL));
    char *bad4[] = { "stray" };
    cr_assert(eq(int, base_flags_parse(f, n, 1, bad4, NULL, &err), -EINVAL));
    char *neg[] = { "--no-verbose" };
    cr_assert(eq(int, base_flags_parse(f, n, 1, neg, NULL, &err), 0));
    cr_assert(not(o.verbose));
    o.verbose = true;
    char *neg_value[] = { "--no-verbose=1" };
    cr_assert(eq(int, base_flags_parse(f, n, 1, neg_value, NULL, &err), -EINVAL));
    cr_assert(o.verbose);
    setenv("RINGCAS_MAX_SIZE", "huge", 1);
    cr_assert(eq(int, base_flags_parse(f, n, 0, NULL, NULL, &err), -EINVAL));
    unsetenv("RINGCAS_MAX_SIZE");
    fclose(sink);
}

Test(base_flags, a_negated_boolean_with_a_value_is_named)
{
    struct opts o = { NULL, 0, 0, true };
    struct base_flag f[4];
    size_t n = make_flags(&o, f);
    FILE *out = tmpfile();
    cr_assert(out != NULL);
    const struct base_flags_err err = { out, "ringcas test", NULL };
    char *argv[] = { "--no-verbose=1" };
    cr_assert(eq(int, base_flags_parse(f, n, 1, argv, NULL, &err), -EINVAL));
    rewind(out);
    char buf[256] = "";
    size_t got = fread(buf, 1, sizeof(buf) - 1, out);
    cr_assert(gt(sz, got, 0));
    fclose(out);
    cr_assert(eq(str, buf,
                 "ringcas test: --no-verbose takes no value: use --verbose=false (or "
                 "--no-verbose alone)\n"));
    cr_assert(o.verbose);
}

/* A manifest's env: values are written by people and by YAML tools (`value: "True"`,
 * `ON`): any case of the spellings docs/cli.md lists is taken, as sizes' units are. */
Test(base_flags, booleans_take_any_case)
{
    static const char *const on[] = { "TRUE", "True", "ON", "Yes", "1" };
    static const char *const off[] = { "FALSE", "False", "OFF", "No", "0" };
    struct opts o = { NULL, 0, 0, false };
    struct base_flag f[4];
    size_t n = make_flags(&o, f);
    const struct base_flags_err err = { stderr, "ringcas test", NULL };
    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
        setenv("RINGCAS_VERBOSE", on[i], 1);
        o.verbose = false;
        cr_assert(eq(int, base_flags_parse(f, n, 0, NULL, NULL, &err), 0), "%s", on[i]);
        cr_assert(o.verbose, "%s", on[i]);
        setenv("RINGCAS_VERBOSE", off[i], 1);
        cr_assert(eq(int, base_flags_parse(f, n, 0, NULL, NULL, &err), 0), "%s", off[i]);
        cr_assert(not(o.verbose), "%s", off[i]);
    }
    unsetenv("RINGCAS_VERBOSE");
    char *argv[] = { "--verbose=On" };
    cr_assert(eq(int, base_flags_parse(f, n, 1, argv, NULL, &err), 0));
    cr_assert(o.verbose);
}

Test(base_flags, env_names_are_upper_snake)
{
    char name[64];
    base_flags_env_name("max-size", name, sizeof(name));
    cr_assert(eq(str, name, "RINGCAS_MAX_SIZE"));
}

/* Parses <argv> with errors into a buffer; returns the result, the text in <out>. */
static int parse_err(const struct base_flag *f, size_t n, int argc, char **argv, char *out,
                     size_t out_size)
{
    FILE *m = fmemopen(out, out_size, "w");
    const struct base_flags_err err = { m, "ringcas serve", NULL };
    int rc = base_flags_parse(f, n, argc, argv, NULL, &err);
    fclose(m);
    return rc;
}

/* Like parse_err, for a command whose stray arguments are likely values of <stray_flag>. */
static int parse_stray(const struct base_flag *f, size_t n, int argc, char **argv,
                       const char *stray_flag, char *out, size_t out_size)
{
    FILE *m = fmemopen(out, out_size, "w");
    const struct base_flags_err err = { m, "ringcas fsck", stray_flag };
    int rc = base_flags_parse(f, n, argc, argv, NULL, &err);
    fclose(m);
    return rc;
}

Test(base_flags, a_stray_argument_names_the_flag_it_is_likely_the_value_of)
{
    /* "ringcas fsck ./data" said only "unexpected argument ./data". */
    unsetenv("RINGCAS_MAX_SIZE");
    struct opts o = { NULL, 0, 0, false };
    struct base_flag f[4];
    size_t n = make_flags(&o, f);
    char out[256] = "";
    char *stray[] = { "--max-size", "1G", "./data" };
    cr_assert(eq(int, parse_stray(f, n, 3, stray, "listen", out, sizeof(out)), -EINVAL));
    cr_assert(eq(str, out,
                 "ringcas fsck: unexpected argument ./data: did you mean --listen ./data? "
                 "(see --help)\n"));
    /* After "--" a word that looks like a flag is an argument too: no flag is suggested
     * for it, since "--listen -x" would be read as two flags. */
    char *dash[] = { "--", "-x" };
    cr_assert(eq(int, parse_stray(f, n, 2, dash, "listen", out, sizeof(out)), -EINVAL));
    cr_assert(eq(str, out, "ringcas fsck: unexpected argument -x\n"));
    /* A command without a likely flag keeps the plain line. */
    cr_assert(eq(int, parse_stray(f, n, 3, stray, NULL, out, sizeof(out)), -EINVAL));
    cr_assert(eq(str, out, "ringcas fsck: unexpected argument ./data\n"));
}

Test(base_flags, errors_name_the_subcommand)
{
    unsetenv("RINGCAS_MAX_SIZE");
    struct opts o = { NULL, 0, 0, false };
    struct base_flag f[4];
    size_t n = make_flags(&o, f);
    char out[256] = "";
    char *bogus[] = { "--bogus" };
    cr_assert(eq(int, parse_err(f, n, 1, bogus, out, sizeof(out)), -EINVAL));
    cr_assert(eq(str, out, "ringcas serve: unknown flag --bogus (see --help)\n"));
    char *bad[] = { "--max-size", "lots" };
    cr_assert(eq(int, parse_err(f, n, 2, bad, out, sizeof(out)), -EINVAL));
    cr_assert(eq(str, out,
                 "ringcas serve: --max-size lots: expected a size such as 4096, 64KiB "
                 "or 10G\n"));
    char *stray[] = { "stray" };
    cr_assert(eq(int, parse_err(f, n, 1, stray, out, sizeof(out)), -EINVAL));
    cr_assert(eq(str, out, "ringcas serve: unexpected argument stray\n"));
    /* A boolean's error lists every spelling it takes (docs/cli.md), not just two. */
    setenv("RINGCAS_VERBOSE", "maybe", 1);
    cr_assert(eq(int, parse_err(f, n, 0, NULL, out, sizeof(out)), -EINVAL));
    unsetenv("RINGCAS_VERBOSE");
    cr_assert(eq(str, out,
                 "ringcas serve: RINGCAS_VERBOSE=maybe: expected 1/0, true/false, yes/no or "
                 "on/off\n"));
}

static void help_text(const struct base_flag *f, size_t n, char *out, size_t out_size)
{
    FILE *m = fmemopen(out, out_size, "w");
    base_flags_print_help(f, n, m);
    fclose(m);
}

Test(base_flags, help_shows_defaults_by_type_and_negatable_booleans)
{
    struct opts o = { "127.0.0.1:8980", 10ULL << 30, 60000, true };
    struct base_flag f[4];
    size_t n = make_flags(&o, f);
    char out[1024] = "";
    help_text(f, n, out, sizeof(out));
    cr_assert(
        eq(str, out,
           "  --listen STR                   where (default 127.0.0.1:8980) [RINGCAS_LISTEN]\n"
           "  --max-size SIZE                budget (default 10GiB) [RINGCAS_MAX_SIZE]\n"
           "  --read-timeout DURATION        t (default 1m) [RINGCAS_READ_TIMEOUT]\n"
           "  --[no-]verbose                 v (default on) [RINGCAS_VERBOSE]\n"));
    struct opts odd = { NULL, 4096 + 1, 1500, false };
    n = make_flags(&odd, f);
    help_text(f, n, out, sizeof(out));
    cr_assert(ne(ptr, strstr(out, "where [RINGCAS_LISTEN]"), NULL), "no string: no default\n%s",
              out);
    cr_assert(ne(ptr, strstr(out, "(default 4097)"), NULL), "%s", out);
    cr_assert(ne(ptr, strstr(out, "(default 1500ms)"), NULL), "%s", out);
    cr_assert(ne(ptr, strstr(out, "(default off)"), NULL), "%s", out);
    struct opts zero = { "", 0, 30000, false };
    n = make_flags(&zero, f);
    help_text(f, n, out, sizeof(out));
    cr_assert(ne(ptr, strstr(out, "where [RINGCAS_LISTEN]"), NULL), "%s", out);
    cr_assert(ne(ptr, strstr(out, "budget (default 0)"), NULL), "%s", out);
    cr_assert(ne(ptr, strstr(out, "(default 30s)"), NULL), "%s", out);
}

Test(base_flags, help_has_no_environment_twin)
{
    bool help = false;
    const struct base_flag f[] = { { "help", BASE_FLAG_BOOL, &help, "show this help", "" } };
    setenv("RINGCAS_HELP", "1", 1);
    const struct base_flags_err err = { stderr, "ringcas test", NULL };
    cr_assert(eq(int, base_flags_parse(f, 1, 0, NULL, NULL, &err), 0));
    cr_assert(not(help), "RINGCAS_HELP must not turn a command into its help");
    unsetenv("RINGCAS_HELP");
    char *argv[] = { "--help" };
    cr_assert(eq(int, base_flags_parse(f, 1, 1, argv, NULL, &err), 0));
    cr_assert(help);
    char out[256] = "";
    help_text(f, 1, out, sizeof(out));
    cr_assert(eq(str, out, "  --help                         show this help\n"));
}

/* Writes base_flags_print_env_in_effect's line for <argv> into <out>. */
static void env_in_effect(int argc, char **argv, char *out, size_t out_size)
{
    struct opts o = { NULL, 0, 0, false };
    struct base_flag f[4];
    size_t n = make_flags(&o, f);
    memset(out, 0, out_size);
    FILE *mem = fmemopen(out, out_size - 1, "w");
    cr_assert_not_null(mem);
    const struct base_flags_err err = { mem, "ringcas test", NULL };
    base_flags_print_env_in_effect(f, n, argc, argv, &err);
    fclose(mem);
}

Test(base_flags, a_usage_error_names_the_variables_that_set_flags)
{
    char line[256];
    unsetenv("RINGCAS_LISTEN");
    unsetenv("RINGCAS_MAX_SIZE");
    unsetenv("RINGCAS_READ_TIMEOUT");
    unsetenv("RINGCAS_VERBOSE");
    env_in_effect(0, NULL, line, sizeof(line));
    cr_assert(eq(str, line, "")); /* none in effect: nothing */
    setenv("RINGCAS_MAX_SIZE", "3KiB", 1);
    setenv("RINGCAS_VERBOSE", "1", 1);
    setenv("RINGCAS_LISTEN", "0.0.0.0:1", 1);
    env_in_effect(0, NULL, line, sizeof(line));
    cr_assert(eq(str, line,
                 "ringcas test: set from the environment: RINGCAS_LISTEN=0.0.0.0:1, "
                 "RINGCAS_MAX_SIZE=3KiB, RINGCAS_VERBOSE=1\n"));
    /* What the command line gives, in any form, is its own: left out. */
    char *argv[] = { "--listen", "127.0.0.1:2", "--no-verbose", "x", "--", "--max-size=1G" };
    env_in_effect(6, argv, line, sizeof(line));
    cr_assert(eq(str, line, "ringcas test: set from the environment: RINGCAS_MAX_SIZE=3KiB\n"));
    char *argv2[] = { "--max-size=1G", "--listen=a", "--verbose" };
    env_in_effect(3, argv2, line, sizeof(line));
    cr_assert(eq(str, line, ""));
    /* A flag whose name begins another's is not that one. */
    char *argv3[] = { "--max-sizes", "--listener" };
    env_in_effect(2, argv3, line, sizeof(line));
    cr_assert(eq(str, line,
                 "ringcas test: set from the environment: RINGCAS_LISTEN=0.0.0.0:1, "
                 "RINGCAS_MAX_SIZE=3KiB, RINGCAS_VERBOSE=1\n"));
    unsetenv("RINGCAS_LISTEN");
    unsetenv("RINGCAS_MAX_SIZE");
    unsetenv("RINGCAS_VERBOSE");
}
