/*
 * Strict number parsers. Each walks the digits itself (no strtoull: it accepts signs, spaces
 * and hex) and checks for overflow before each multiply.
 */
#include "base/parse.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

/* Parses the leading digits of <s>; sets *end past them. */
static int parse_digits(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    const char *p = s;
    while (*p >= '0' && *p <= '9') {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return -ERANGE;
        v = v * 10 + d;
        p++;
    }
    if (p == s) return -EINVAL;
    *out = v;
    *end = p;
    return 0;
}

int base_parse_u64(const char *s, uint64_t *out)
{
    const char *end;
    int rc = parse_digits(s, out, &end);
    if (rc < 0) return rc;
    return *end == '\0' ? 0 : -EINVAL;
}

struct unit {
    const char *suffix;
    uint64_t factor;
};

/* <fold>: units match in any case (sizes); else exactly (durations, where m is not M). */
static int parse_with_units(const char *s, const struct unit *units, size_t count,
                            uint64_t bare_factor, bool fold, uint64_t *out)
{
    uint64_t v;
    const char *end;
    int rc = parse_digits(s, &v, &end);
    if (rc < 0) return rc;
    uint64_t factor = 0;
    if (*end == '\0') {
        factor = bare_factor;
    } else {
        for (size_t i = 0; i < count; i++) {
            if ((fold ? strcasecmp(end, units[i].suffix) : strcmp(end, units[i].suffix)) == 0) {
                factor = units[i].factor;
                break;
            }
        }
    }
    if (factor == 0) return -EINVAL;
    if (v != 0 && factor > UINT64_MAX / v) return -ERANGE;
    *out = v * factor;
    return 0;
}

int base_parse_size(const char *s, uint64_t *out)
{
    /* Ki, Mi, ... as Kubernetes writes its quantities; any case, as nginx and the JVM read
     * 64k and 10g. */
    static const struct unit units[] = {
        { "B", 1ULL },        { "K", 1ULL << 10 }, { "KiB", 1ULL << 10 }, { "KB", 1ULL << 10 },
        { "Ki", 1ULL << 10 }, { "M", 1ULL << 20 }, { "MiB", 1ULL << 20 }, { "MB", 1ULL << 20 },
        { "Mi", 1ULL << 20 }, { "G", 1ULL << 30 }, { "GiB", 1ULL << 30 }, { "GB", 1ULL << 30 },
        { "Gi", 1ULL << 30 }, { "T", 1ULL << 40 }, { "TiB", 1ULL << 40 }, { "TB", 1ULL << 40 },
        { "Ti", 1ULL << 40 },
    };
    return parse_with_units(s, units, sizeof(units) / sizeof(units[0]), 1, true, out);
}

int base_parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        { "ms", 1ULL },
        { "s", 1000ULL },
        { "m", 60ULL * 1000 },
        { "h", 3600ULL * 1000 },
    };
    return parse_with_units(s, units, sizeof(units) / sizeof(units[0]), 1000, false, out);
}
