/*
 * Strict parsers for the values flags and environment variables carry: unsigned integers,
 * sizes ("64MiB", "10G", "4096") and durations ("30s", "250ms", "2m"). No sign, no spaces,
 * no trailing garbage, no overflow: each returns 0 or -EINVAL / -ERANGE.
 */
#ifndef RINGCAS_BASE_PARSE_H
#define RINGCAS_BASE_PARSE_H

#include <stdint.h>

#include "base/assert.h"

/* Parses decimal digits only into <out>. */
MUST_CHECK int base_parse_u64(const char *s, uint64_t *out);

/*
 * Parses a size in bytes: digits with an optional suffix B, K, M, G, T (powers of 1024), also
 * written KiB, KB or Ki and so on (also powers of 1024, as operators mean them), in any case.
 */
MUST_CHECK int base_parse_size(const char *s, uint64_t *out);

/* Parses a duration into milliseconds: digits with ms, s, m or h; a bare number is seconds. */
MUST_CHECK int base_parse_duration_ms(const char *s, uint64_t *out);

#endif /* RINGCAS_BASE_PARSE_H */
