/* Varints, keys, field walking, digests and hex: malformed and truncated input. */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "guard.h"
#include "proto/wire.h"

Test(proto_wire, varint_round_trips)
{
    const uint64_t values[] = {
        0, 1, 127, 128, 300, 16383, 16384, (1ULL << 32) - 1, 1ULL << 35, UINT64_MAX - 1, UINT64_MAX
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint8_t buf[PROTO_WIRE_VARINT_MAX];
        size_t n = proto_wire_varint_put(buf, values[i]);
        cr_assert(eq(sz, n, proto_wire_varint_size(values[i])));
        uint64_t v = 0;
        cr_assert(eq(int, proto_wire_varint(guard_copy(buf, n), n, &v), (int)n));
        cr_assert(eq(u64, v, values[i]));
        /* Every proper prefix asks for more. */
        for (size_t k = 0; k < n; k++)
            cr_assert(eq(int, proto_wire_varint(guard_copy(buf, k), k, &v), 0));
    }
    guard_free_all();
}

Test(proto_wire, overlong_and_overflowing_varints_are_refused)
{
    uint8_t eleven[11];
    memset(eleven, 0x80, sizeof(eleven));
    uint64_t v;
    cr_assert(eq(int, proto_wire_varint(guard_copy(eleven, 11), 11, &v), -EBADMSG));
    cr_assert(eq(int, proto_wire_varint(guard_copy(eleven, 10), 10, &v), -EBADMSG));
    /* Ten bytes whose last one carries more than bit 63. */
    uint8_t over[10];
    memset(over, 0xff, 9);
    over[9] = 0x02;
    cr_assert(eq(int, proto_wire_varint(guard_copy(over, 10), 10, &v), -EBADMSG));
    over[9] = 0x01;
    cr_assert(eq(int, proto_wire_varint(guard_copy(over, 10), 10, &v), 10));
    cr_assert(eq(u64, v, UINT64_MAX));
    guard_free_all();
}

Test(proto_wire, varints_as_protobuf_c_reads_them)
{
    /* A tenth byte over 1: refused by proto_wire_varint, kept to 64 bits by protobuf-c. */
    uint8_t over[10];
    memset(over, 0xff, 9);
    over[9] = 0x7f;
    uint64_t v = 0;
    cr_assert(eq(int, proto_wire_varint_pbc(guard_copy(over, 10), 10, 10, &v), 10));
    cr_assert(eq(u64, v, UINT64_MAX));
    /* <max> bounds the bytes: a 5-byte key or length, at its sixth byte. */
    uint8_t six[6] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
    cr_assert(eq(int, proto_wire_varint_pbc(guard_copy(six, 6), 6, 5, &v), -EBADMSG));
    cr_assert(eq(int, proto_wire_varint_pbc(guard_copy(six, 6), 6, 6, &v), 6));
    cr_assert(eq(u64, v, 0));
    /* Cut before its end (or before <max>): asks for more. */
    cr_assert(eq(int, proto_wire_varint_pbc(guard_copy(six, 4), 4, 5, &v), 0));
    cr_assert(eq(int, proto_wire_varint_pbc(guard_copy(six, 0), 0, 5, &v), 0));
    uint8_t one[1] = { 0x2a };
    cr_assert(eq(int, proto_wire_varint_pbc(guard_copy(one, 1), 1, 1, &v), 1));
    cr_assert(eq(u64, v, 42));
    guard_free_all();
}

static int walk(const uint8_t *p, size_t len, int *fields)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, guard_copy(p, len), len);
    struct proto_wire_field f;
    int rc;
    *fields = 0;
    while ((rc = proto_wire_next(&r, &f)) > 0)
        (*fields)++;
    return rc;
}

Test(proto_wire, walks_every_wire_type)
{
    /* 1: varint 150; 2: len "ab"; 3: fixed64; 4: fixed32. */
    const uint8_t msg[] = { 0x08, 0x96, 0x01, 0x12, 0x02, 'a',  'b', 0x19, 1, 2, 3,
                            4,    5,    6,    7,    8,    0x25, 1,   2,    3, 4 };
    int fields;
    cr_assert(eq(int, walk(msg, sizeof(msg), &fields), 0));
    cr_assert(eq(int, fields, 4));
    guard_free_all();
}

Test(proto_wire, truncated_and_malformed_fields_are_refused)
{
    int fields;
    const uint8_t trunc_varint[] = { 0x08, 0x96 };
    cr_assert(eq(int, walk(trunc_varint, sizeof(trunc_varint), &fields), -EBADMSG));
    const uint8_t trunc_len[] = { 0x12, 0x05, 'a', 'b' };
    cr_assert(eq(int, walk(trunc_len, sizeof(trunc_len), &fields), -EBADMSG));
    const uint8_t trunc_fixed[] = { 0x19, 1, 2, 3 };
    cr_assert(eq(int, walk(trunc_fixed, sizeof(trunc_fixed), &fields), -EBADMSG));
    const uint8_t field_zero[] = { 0x00, 0x01 };
    cr_assert(eq(int, walk(field_zero, sizeof(field_zero), &fields), -EBADMSG));
    const uint8_t group[] = { 0x0b, 0x0c };
    cr_assert(eq(int, walk(group, sizeof(group), &fields), -EBADMSG));
    const uint8_t type7[] = { 0x0f, 0x00 };
    cr_assert(eq(int, walk(type7, sizeof(type7), &fields), -EBADMSG));
    const uint8_t huge_len[] = { 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a' };
    cr_assert(eq(int, walk(huge_len, sizeof(huge_len), &fields), -EBADMSG));
    const uint8_t trunc_key[] = { 0x80 };
    cr_assert(eq(int, walk(trunc_key, sizeof(trunc_key), &fields), -EBADMSG));
    guard_free_all();
}

Test(proto_wire, digest_fields_and_wrong_wire_types)
{
    const uint8_t ok[] = { 0x0a, 3, 'a', 'b', 'c', 0x10, 0x2a, 0x18, 0x01 };
    const uint8_t *hash;
    size_t hash_len;
    int64_t size;
    cr_assert(eq(int,
                 proto_wire_digest(guard_copy(ok, sizeof(ok)), sizeof(ok), &hash, &hash_len, &size),
                 0));
    cr_assert(eq(sz, hash_len, 3));
    cr_assert(eq(int, memcmp(hash, "abc", 3), 0));
    cr_assert(eq(i64, size, 42));
    const uint8_t hash_as_varint[] = { 0x08, 0x01 };
    cr_assert(eq(int, proto_wire_digest(hash_as_varint, 2, &hash, &hash_len, &size), -EBADMSG));
    const uint8_t size_as_len[] = { 0x12, 0x01, 'x' };
    cr_assert(eq(int, proto_wire_digest(size_as_len, 3, &hash, &hash_len, &size), -EBADMSG));
    guard_free_all();
}

Test(proto_wire, hex)
{
    uint8_t out[4];
    cr_assert(eq(int, proto_hex_decode("00ff7Aa0", 8, out), 0));
    cr_assert(eq(u8, out[1], 0xff));
    cr_assert(eq(u8, out[2], 0x7a));
    cr_assert(eq(int, proto_hex_decode("abc", 3, out), -EINVAL));
    cr_assert(eq(int, proto_hex_decode("zz", 2, out), -EINVAL));
    cr_assert(eq(int, proto_hex_decode("0g", 2, out), -EINVAL));
    char hex[9];
    proto_hex_encode(out, 4, hex);
    cr_assert(eq(str, hex, "00ff7aa0"));
}
