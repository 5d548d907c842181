/*
 * gRPC status codes (grpc/grpc doc/statuscodes.md) and the grpc-message encoding: percent-
 * encoded UTF-8 (PROTOCOL-HTTP2.md: bytes outside 0x20..0x7E, and '%', become %XX).
 */
#ifndef RINGCAS_PROTO_STATUS_H
#define RINGCAS_PROTO_STATUS_H

#include <stddef.h>

enum proto_status {
    PROTO_STATUS_OK = 0,
    PROTO_STATUS_CANCELLED = 1,
    PROTO_STATUS_UNKNOWN = 2,
    PROTO_STATUS_INVALID_ARGUMENT = 3,
    PROTO_STATUS_DEADLINE_EXCEEDED = 4,
    PROTO_STATUS_NOT_FOUND = 5,
    PROTO_STATUS_ALREADY_EXISTS = 6,
    PROTO_STATUS_PERMISSION_DENIED = 7,
    PROTO_STATUS_RESOURCE_EXHAUSTED = 8,
    PROTO_STATUS_FAILED_PRECONDITION = 9,
    PROTO_STATUS_ABORTED = 10,
    PROTO_STATUS_OUT_OF_RANGE = 11,
    PROTO_STATUS_UNIMPLEMENTED = 12,
    PROTO_STATUS_INTERNAL = 13,
    PROTO_STATUS_UNAVAILABLE = 14,
    PROTO_STATUS_DATA_LOSS = 15,
    PROTO_STATUS_UNAUTHENTICATED = 16,
    PROTO_STATUS_COUNT = 17,
};

/* "OK", "NOT_FOUND", ...; "UNKNOWN" for values out of range. */
const char *proto_status_name(int code);

/*
 * Percent-encodes <in>/<in_len> into <out> (<out_size> bytes, > 0), NUL-terminated; stops
 * before an escape that would not fit (never cuts one in half). Returns the length written.
 */
size_t proto_status_encode_message(const char *in, size_t in_len, char *out, size_t out_size);

#endif /* RINGCAS_PROTO_STATUS_H */
