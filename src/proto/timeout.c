/* grpc-timeout parsing: strict syntax, saturating conversion, rounding up. */
#include "proto/timeout.h"

#include <errno.h>

int proto_timeout_parse(const char *value, size_t len, uint64_t *ms)
{
    if (len < 2 || len > 9) return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (value[i] < '0' || value[i] > '9') return -EINVAL;
        v = v * 10 + (uint64_t)(value[i] - '0');
    }
    /* v < 10^8, so none of the products below overflows 64 bits. */
    uint64_t out;
    switch (value[len - 1]) {
    case 'H':
        out = v * 3600 * 1000;
        break;
    case 'M':
        out = v * 60 * 1000;
        break;
    case 'S':
        out = v * 1000;
        break;
    case 'm':
        out = v;
        break;
    case 'u':
        out = (v + 999) / 1000;
        break;
    case 'n':
        out = (v + 999999) / 1000000;
        break;
    default:
        return -EINVAL;
    }
    *ms = out < PROTO_TIMEOUT_MS_MAX ? out : PROTO_TIMEOUT_MS_MAX;
    return 0;
}
