/*
 * The protobuf wire format, by hand: varints, field keys and length-delimited spans, for the
 * messages ringcas decodes or encodes without protobuf-c (blob bytes must not be copied, and
 * protobuf-c copies every `bytes` field on unpack).
 *
 * Decoders never read past the end they are given and never trust a length from the input:
 * a truncated or malformed field is -EBADMSG, never a crash or a read out of bounds.
 */
#ifndef RINGCAS_PROTO_WIRE_H
#define RINGCAS_PROTO_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

/* Wire types (protobuf encoding guide). Groups (3, 4) are rejected: proto3 has none. */
enum proto_wire_type {
    PROTO_WIRE_VARINT = 0,
    PROTO_WIRE_I64 = 1,
    PROTO_WIRE_LEN = 2,
    PROTO_WIRE_I32 = 5,
};

#define PROTO_WIRE_VARINT_MAX 10 /* bytes of the longest varint (a uint64) */

/*
 * Decodes a varint from <p>/<len> into *<out>. Returns the bytes it took (1..10), 0 when
 * <len> ends inside the varint (need more), or -EBADMSG when it runs past 10 bytes or
 * overflows 64 bits.
 */
MUST_CHECK int proto_wire_varint(const uint8_t *p, size_t len, uint64_t *out);

/*
 * A varint of at most <max> bytes (1 to PROTO_WIRE_VARINT_MAX) at <p>/<len>, read as protobuf-c
 * 1.4 reads one: the bytes it takes with its low 64 bits in *<out>, 0 when <len> ends inside
 * it, -EBADMSG when it runs past <max> bytes. Unlike proto_wire_varint, a tenth byte over 1 is
 * accepted (protobuf-c keeps the low 64 bits): for code that must agree with protobuf-c on
 * what decodes (the action cache's sniff and Tree scan).
 */
MUST_CHECK int proto_wire_varint_pbc(const uint8_t *p, size_t len, size_t max, uint64_t *out);

/* Writes <v> as a varint into <out> (room for PROTO_WIRE_VARINT_MAX bytes); returns its size. */
size_t proto_wire_varint_put(uint8_t *out, uint64_t v);

/* The encoded size of <v> as a varint (1..10). */
size_t proto_wire_varint_size(uint64_t v);

/* A field's key: (field number << 3) | wire type. */
static inline uint64_t proto_wire_key(uint32_t field, enum proto_wire_type type)
{
    return ((uint64_t)field << 3) | (uint64_t)type;
}

/*
 * A cursor over one complete message in memory. proto_wire_next() steps from field to field;
 * each field gives its number, its wire type and either its integer value (varint, I64, I32)
 * or its span (LEN).
 */
struct proto_wire_reader {
    const uint8_t *p;   /* next unread byte */
    const uint8_t *end; /* one past the message */
};

struct proto_wire_field {
    uint32_t number;     /* field number, >= 1 */
    uint8_t type;        /* enum proto_wire_type */
    uint64_t value;      /* VARINT, I64, I32: the value */
    const uint8_t *data; /* LEN: the bytes, inside the message */
    size_t len;          /* LEN: their count */
};

static inline void proto_wire_reader_init(struct proto_wire_reader *r, const uint8_t *p, size_t len)
{
    r->p = p;
    r->end = p + len;
}

/*
 * Reads the next field into <f>. Returns 1 with a field, 0 at the end of the message, or
 * -EBADMSG for a truncated field, a field number of 0 or past 2^29-1, a group or an unknown
 * wire type.
 */
MUST_CHECK int proto_wire_next(struct proto_wire_reader *r, struct proto_wire_field *f);

/*
 * Parses a Digest message ({string hash = 1; int64 size_bytes = 2;}) from <data>/<len>:
 * the hash's span and the size. Returns 0 or -EBADMSG (malformed, or a field with the wrong
 * wire type). Values are not validated here (see proto_hex_decode for the hash).
 */
MUST_CHECK int proto_wire_digest(const uint8_t *data, size_t len, const uint8_t **hash,
                                 size_t *hash_len, int64_t *size);

/*
 * Decodes <len> hexadecimal digits of <hex> (lower case, as REAPI requires; upper case is
 * accepted too) into <len>/2 bytes at <out>. Returns 0, or -EINVAL for an odd length or a
 * character that is not a hex digit.
 */
MUST_CHECK int proto_hex_decode(const char *hex, size_t len, uint8_t *out);

/* Writes the <len> bytes of <in> as 2*<len> lower-case hex digits and a NUL into <out>. */
void proto_hex_encode(const uint8_t *in, size_t len, char *out);

#endif /* RINGCAS_PROTO_WIRE_H */
