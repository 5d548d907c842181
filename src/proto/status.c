/* gRPC status names and grpc-message encoding. */
#include "proto/status.h"

#include <stdbool.h>

#include "base/assert.h"

static const char *const names[PROTO_STATUS_COUNT] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *proto_status_name(int code)
{
    if (code < 0 || code >= PROTO_STATUS_COUNT) return "UNKNOWN";
    return names[code];
}

size_t proto_status_encode_message(const char *in, size_t in_len, char *out, size_t out_size)
{
    static const char hex[] = "0123456789ABCDEF";
    ASSERT(out_size > 0);
    size_t n = 0;
    for (size_t i = 0; i < in_len; i++) {
        unsigned char c = (unsigned char)in[i];
        bool plain = c >= 0x20 && c <= 0x7e && c != '%';
        size_t need = plain ? 1 : 3;
        if (n + need >= out_size) break;
        if (plain) {
            out[n++] = (char)c;
            continue;
        }
        out[n++] = '%';
        out[n++] = hex[c >> 4];
        out[n++] = hex[c & 15];
    }
    out[n] = '\0';
    return n;
}
