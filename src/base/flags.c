/*
 * Flags and their RINGCAS_* environment twins. Environment first, argv second, so the
 * command line wins. No allocation: string values point into argv or the environment.
 *
 * Sections: values, parsing, help.
 */
#include "base/flags.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/parse.h"

void base_flags_env_name(const char *flag_name, char *out, size_t out_size)
{
    ASSERT(out_size > 8);
    size_t n = (size_t)snprintf(out, out_size, "RINGCAS_");
    for (const char *p = flag_name; *p && n + 1 < out_size; p++) {
        out[n++] = (char)(*p == '-' ? '_' : toupper((unsigned char)*p));
    }
    out[n] = '\0';
}

/* ---- values ---- */

/* --help is a request, not a setting: it has no environment twin (flags.h). */
static bool has_env_twin(const struct base_flag *f)
{
    return strcmp(f->name, "help") != 0;
}

/* Any case: a manifest's `value: "True"` means what it says (docs/cli.md). */
static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "1", "true", "yes", "on" };
    static const char *const no[] = { "0", "false", "no", "off" };
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

static const char *type_hint(enum base_flag_type type)
{
    switch (type) {
    case BASE_FLAG_STRING:
        return "a string";
    case BASE_FLAG_U64:
        return "a whole number";
    case BASE_FLAG_SIZE:
        return "a size such as 4096, 64KiB or 10G";
    case BASE_FLAG_DURATION_MS:
        return "a duration such as 250ms, 30s or 2m";
    case BASE_FLAG_BOOL:
        return "1/0, true/false, yes/no or on/off";
    }
    return "a value";
}

static int set_value(const struct base_flag *f, const char *s)
{
    switch (f->type) {
    case BASE_FLAG_STRING:
        *(const char **)f->value = s;
        return 0;
    case BASE_FLAG_U64:
        return base_parse_u64(s, f->value);
    case BASE_FLAG_SIZE:
        return base_parse_size(s, f->value);
    case BASE_FLAG_DURATION_MS:
        return base_parse_duration_ms(s, f->value);
    case BASE_FLAG_BOOL:
        return parse_bool(s, f->value);
    }
    return -EINVAL;
}

/* ---- parsing ---- */

static int apply_env(const struct base_flag *flags, size_t count, const struct base_flags_err *err)
{
    for (size_t i = 0; i < count; i++) {
        if (!has_env_twin(&flags[i])) continue;
        char env[96];
        base_flags_env_name(flags[i].name, env, sizeof(env));
        /* Read once at start-up, before any thread exists, so getenv is safe here. */
        const char *v = getenv(env); /* NOLINT(concurrency-mt-unsafe) */
        if (!v) continue;
        if (set_value(&flags[i], v) < 0) {
            (void)fprintf(err->out, "%s: %s=%s: expected %s\n", err->prog, env, v,
                          type_hint(flags[i].type));
            return -EINVAL;
        }
    }
    return 0;
}

static const struct base_flag *find(const struct base_flag *flags, size_t count, const char *name,
                                    size_t len)
{
    for (size_t i = 0; i < count; i++) {
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0) {
            return &flags[i];
        }
    }
    return NULL;
}

/* Parses argv[*i] as a flag, consuming a value argument if needed. */
static int parse_one(const struct base_flag *flags, size_t count, int argc, char **argv, int *i,
                     const struct base_flags_err *err)
{
    const char *arg = argv[*i] + 2;
    const char *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const struct base_flag *f = find(flags, count, arg, len);
    bool negated = false;
    if (!f && len > 3 && strncmp(arg, "no-", 3) == 0) {
        f = find(flags, count, arg + 3, len - 3);
        negated = f && f->type == BASE_FLAG_BOOL;
        if (!negated) f = NULL;
        if (negated && eq) {
            /* "--no-direct-io=1": the flag exists, so "unknown flag" would mislead. */
            (void)fprintf(err->out, "%s: --%.*s takes no value: use --%s=false (or --%.*s alone)\n",
                          err->prog, (int)len, arg, f->name, (int)len, arg);
            return -EINVAL;
        }
    }
    if (!f) {
        (void)fprintf(err->out, "%s: unknown flag --%.*s (see --help)\n", err->prog, (int)len, arg);
        return -EINVAL;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (f->type == BASE_FLAG_BOOL && !value) {
        *(bool *)f->value = !negated;
        return 0;
    }
    if (!value) {
        if (*i + 1 >= argc) {
            (void)fprintf(err->out, "%s: --%s needs %s\n", err->prog, f->name, type_hint(f->type));
            return -EINVAL;
        }
        value = argv[++*i];
    }
    if (set_value(f, value) < 0) {
        (void)fprintf(err->out, "%s: --%s %s: expected %s\n", err->prog, f->name, value,
                      type_hint(f->type));
        return -EINVAL;
    }
    return 0;
}

/*
 * The line for argument <a>, which is not a flag and has no place in <rest>. "ringcas fsck
 * ./data" said only "unexpected argument ./data": the command's likely flag is named.
 */
static void unexpected_argument(const char *a, const struct base_flags_rest *rest,
                                const struct base_flags_err *err)
{
    if (!rest && err->stray_flag && a[0] != '-') {
        (void)fprintf(err->out, "%s: unexpected argument %s: did you mean --%s %s? (see --help)\n",
                      err->prog, a, err->stray_flag, a);
        return;
    }
    (void)fprintf(err->out, "%s: unexpected argument %s\n", err->prog, a);
}

int base_flags_parse(const struct base_flag *flags, size_t count, int argc, char **argv,
                     struct base_flags_rest *rest, const struct base_flags_err *err)
{
    int rc = apply_env(flags, count, err);
    if (rc < 0) return rc;
    size_t nrest = 0;
    bool only_args = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_args && strcmp(a, "--") == 0) {
            only_args = true;
            continue;
        }
        if (!only_args && a[0] == '-' && a[1] == '-' && a[2] != '\0') {
            rc = parse_one(flags, count, argc, argv, &i, err);
            if (rc < 0) return rc;
            continue;
        }
        if (!rest || nrest >= rest->size) {
            unexpected_argument(a, rest, err);
            return -EINVAL;
        }
        rest->args[nrest++] = argv[i];
    }
    if (rest) rest->count = nrest;
    return 0;
}

/* Whether <argv> gives flag <f> (--name, --name=value, --no-name), up to a "--". */
static bool given_in_argv(const struct base_flag *f, int argc, char **argv)
{
    size_t len = strlen(f->name);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) return false;
        if (a[0] != '-' || a[1] != '-') continue;
        a += 2;
        if (f->type == BASE_FLAG_BOOL && strncmp(a, "no-", 3) == 0) a += 3;
        if (strncmp(a, f->name, len) == 0 && (a[len] == '\0' || a[len] == '=')) return true;
    }
    return false;
}

void base_flags_print_env_in_effect(const struct base_flag *flags, size_t count, int argc,
                                    char **argv, const struct base_flags_err *err)
{
    bool first = true;
    for (size_t i = 0; i < count; i++) {
        if (!has_env_twin(&flags[i]) || given_in_argv(&flags[i], argc, argv)) continue;
        char env[96];
        base_flags_env_name(flags[i].name, env, sizeof(env));
        /* Called before any thread exists, as apply_env is. */
        const char *v = getenv(env); /* NOLINT(concurrency-mt-unsafe) */
        if (!v) continue;
        if (first) (void)fprintf(err->out, "%s: set from the environment: ", err->prog);
        (void)fprintf(err->out, "%s%s=%s", first ? "" : ", ", env, v);
        first = false;
    }
    if (!first) (void)fputc('\n', err->out);
}

/* ---- help ---- */

/* Writes <bytes> in the largest binary unit that divides it: 65536 -> "64KiB". */
static void format_size(uint64_t bytes, char *out, size_t out_size)
{
    static const char *const units[] = { "TiB", "GiB", "MiB", "KiB" };
    for (size_t i = 0; i < ARRAY_LEN(units); i++) {
        uint64_t unit = 1ULL << (10 * (ARRAY_LEN(units) - i));
        if (bytes != 0 && bytes % unit == 0) {
            (void)snprintf(out, out_size, "%llu%s", (unsigned long long)(bytes / unit), units[i]);
            return;
        }
    }
    (void)snprintf(out, out_size, "%llu", (unsigned long long)bytes);
}

/* Writes <ms> in the largest unit base_parse_duration_ms takes that divides it: "30s". */
static void format_duration(uint64_t ms, char *out, size_t out_size)
{
    static const struct {
        const char *name; /* suffix */
        uint64_t ms;      /* milliseconds per unit */
    } units[] = { { "h", 3600ULL * 1000 }, { "m", 60ULL * 1000 }, { "s", 1000 } };

    for (size_t i = 0; i < ARRAY_LEN(units); i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            (void)snprintf(out, out_size, "%llu%s", (unsigned long long)(ms / units[i].ms),
                           units[i].name);
            return;
        }
    }
    (void)snprintf(out, out_size, "%llu%s", (unsigned long long)ms, ms == 0 ? "" : "ms");
}

/* Writes " (default X)" for <f>'s current value, or "" when there is none to show. */
static void format_default(const struct base_flag *f, char *out, size_t out_size)
{
    char v[64] = "";
    switch (f->type) {
    case BASE_FLAG_STRING: {
        const char *s = *(const char *const *)f->value;
        if (s) (void)snprintf(v, sizeof(v), "%s", s);
        break;
    }
    case BASE_FLAG_U64:
        (void)snprintf(v, sizeof(v), "%llu", (unsigned long long)*(const uint64_t *)f->value);
        break;
    case BASE_FLAG_SIZE:
        format_size(*(const uint64_t *)f->value, v, sizeof(v));
        break;
    case BASE_FLAG_DURATION_MS:
        format_duration(*(const uint64_t *)f->value, v, sizeof(v));
        break;
    case BASE_FLAG_BOOL:
        (void)snprintf(v, sizeof(v), "%s", *(const bool *)f->value ? "on" : "off");
        break;
    }
    out[0] = '\0';
    if (v[0] != '\0' && has_env_twin(f)) (void)snprintf(out, out_size, " (default %s)", v);
}

void base_flags_print_help(const struct base_flag *flags, size_t count, FILE *out)
{
    for (size_t i = 0; i < count; i++) {
        const struct base_flag *f = &flags[i];
        char env[96] = "";
        if (has_env_twin(f)) {
            char name[80];
            base_flags_env_name(f->name, name, sizeof(name));
            (void)snprintf(env, sizeof(env), " [%s]", name);
        }
        const char *meta = f->metavar;
        if (!meta) {
            static const char *const metas[] = { "STR", "N", "SIZE", "DURATION", "" };
            meta = metas[f->type];
        }
        /* A boolean takes --no-name too; --help only asks. */
        bool negatable = f->type == BASE_FLAG_BOOL && has_env_twin(f);
        char left[64];
        (void)snprintf(left, sizeof(left), "--%s%s%s%s", negatable ? "[no-]" : "", f->name,
                       meta[0] ? " " : "", meta);
        char def[96];
        format_default(f, def, sizeof(def));
        (void)fprintf(out, "  %-30s %s%s%s\n", left, f->help, def, env);
    }
}
