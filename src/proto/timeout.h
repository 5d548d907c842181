/*
 * The grpc-timeout request header (grpc/grpc doc/PROTOCOL-HTTP2.md): "TimeoutValue
 * TimeoutUnit", a positive integer of at most 8 ASCII digits and one unit letter of
 * H (hours), M (minutes), S (seconds), m (milliseconds), u (microseconds), n (nanoseconds).
 */
#ifndef RINGCAS_PROTO_TIMEOUT_H
#define RINGCAS_PROTO_TIMEOUT_H

#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

/* Longest deadline honoured: longer ones are clamped to it (a week; 99999999H overflows). */
#define PROTO_TIMEOUT_MS_MAX (7ULL * 24 * 3600 * 1000)

/*
 * Parses <value>/<len> into milliseconds, rounded up so a deadline never fires early, and
 * clamped to PROTO_TIMEOUT_MS_MAX. "0m" gives 0 (already expired). Returns 0, or -EINVAL
 * for no digit, more than 8 digits, a sign, a space, a missing or unknown unit, or trailing
 * bytes.
 */
MUST_CHECK int proto_timeout_parse(const char *value, size_t len, uint64_t *ms);

#endif /* RINGCAS_PROTO_TIMEOUT_H */
