/*
 * ByteStream codecs against protobuf-c's own encoding: WriteRequest streamed at every split
 * point, ReadRequest, the ReadResponse header; malformed input of every kind.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "guard.h"
#include "proto/bytestream.h"
#include "proto/google/bytestream/bytestream.pb-c.h"

static size_t pack_write(const char *name, int64_t offset, bool finish, const uint8_t *data,
                         size_t data_len, uint8_t *out)
{
    Google__Bytestream__WriteRequest w = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
    w.resource_name = (char *)name;
    w.write_offset = offset;
    w.finish_write = finish;
    w.data.data = (uint8_t *)data;
    w.data.len = data_len;
    return google__bytestream__write_request__pack(&w, out);
}

struct parsed {
    uint8_t data[4096];
    size_t data_len;
};

/* Feeds <msg> in pieces cut at <cuts> (ascending, within the message). */
static int parse_cut(struct proto_write_request *w, const uint8_t *msg, size_t len,
                     const size_t *cuts, int ncuts, struct parsed *out)
{
    proto_write_request_begin(w, (uint32_t)len);
    out->data_len = 0;
    size_t start = 0;
    for (int c = 0; c <= ncuts; c++) {
        size_t end = c < ncuts ? cuts[c] : len;
        const uint8_t *p = guard_copy(msg + start, end - start);
        size_t left = end - start;
        while (left > 0) {
            const uint8_t *data;
            size_t data_len;
            int n = proto_write_request_feed(w, p, left, &data, &data_len);
            if (n < 0) return n;
            cr_assert(gt(int, n, 0));
            if (data_len) {
                cr_assert(eq(ptr, (void *)data, (void *)p), "data spans start at the input");
                cr_assert(eq(sz, data_len, (size_t)n));
                memcpy(out->data + out->data_len, data, data_len);
                out->data_len += data_len;
            }
            p += n;
            left -= (size_t)n;
        }
        start = end;
    }
    return proto_write_request_end(w);
}

Test(proto_bytestream, write_request_at_every_split)
{
    uint8_t data[300];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 13);
    const char *name = "inst/uploads/u-1/blobs/"
                       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/300";
    uint8_t msg[1024];
    size_t len = pack_write(name, 1234567890123LL, true, data, sizeof(data), msg);
    struct proto_write_request *w = malloc(sizeof(*w));
    struct parsed *out = malloc(sizeof(*out));
    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len; b += 7) {
            size_t cuts[2] = { a, b };
            cr_assert(eq(int, parse_cut(w, msg, len, cuts, 2, out), 0), "cut %zu %zu", a, b);
            cr_assert(w->has_name);
            cr_assert(eq(u32, w->name_len, (uint32_t)strlen(name)));
            cr_assert(eq(int, memcmp(w->name, name, w->name_len), 0));
            cr_assert(eq(i64, w->write_offset, 1234567890123LL));
            cr_assert(w->finish_write);
            cr_assert(w->has_data);
            cr_assert(eq(sz, out->data_len, sizeof(data)));
            cr_assert(eq(int, memcmp(out->data, data, sizeof(data)), 0));
            guard_free_all();
        }
    }
    free(w);
    free(out);
}

Test(proto_bytestream, write_request_without_optional_fields)
{
    uint8_t msg[64];
    size_t len = pack_write(NULL, 0, false, NULL, 0, msg);
    cr_assert(eq(sz, len, 0));
    static struct proto_write_request w;
    static struct parsed out;
    cr_assert(eq(int, parse_cut(&w, msg, len, NULL, 0, &out), 0));
    cr_assert(not(w.has_name));
    cr_assert(not(w.has_data));
    cr_assert(not(w.finish_write));
    /* Negative offsets travel as 10-byte varints and come back negative. */
    len = pack_write(NULL, -5, false, (const uint8_t *)"x", 1, msg);
    cr_assert(eq(int, parse_cut(&w, msg, len, NULL, 0, &out), 0));
    cr_assert(eq(i64, w.write_offset, -5));
    guard_free_all();
}

Test(proto_bytestream, write_request_skips_unknown_fields)
{
    /* field 4 varint, field 5 fixed64, field 6 fixed32, field 7 len, then data. */
    const uint8_t msg[] = { 0x20, 0x01, 0x29, 1,    2,    3,   4,   5,    6,    7,   8,   0x35, 1,
                            2,    3,    4,    0x3a, 0x02, 'z', 'z', 0x52, 0x03, 'a', 'b', 'c' };
    static struct proto_write_request w;
    static struct parsed out;
    for (size_t a = 0; a <= sizeof(msg); a++) {
        cr_assert(eq(int, parse_cut(&w, msg, sizeof(msg), &a, 1, &out), 0));
        cr_assert(eq(sz, out.data_len, 3));
    }
    guard_free_all();
}

static int parse_whole(const uint8_t *msg, size_t len)
{
    static struct proto_write_request w;
    static struct parsed out;
    return parse_cut(&w, msg, len, NULL, 0, &out);
}

Test(proto_bytestream, malformed_write_requests)
{
    const uint8_t name_as_varint[] = { 0x08, 0x01 };
    cr_assert(eq(int, parse_whole(name_as_varint, 2), -EBADMSG));
    const uint8_t offset_as_len[] = { 0x12, 0x01, 'x' };
    cr_assert(eq(int, parse_whole(offset_as_len, 3), -EBADMSG));
    const uint8_t finish_as_fixed[] = { 0x19, 1, 2, 3, 4, 5, 6, 7, 8 };
    cr_assert(eq(int, parse_whole(finish_as_fixed, 9), -EBADMSG));
    const uint8_t data_as_varint[] = { 0x50, 0x01 };
    cr_assert(eq(int, parse_whole(data_as_varint, 2), -EBADMSG));
    const uint8_t data_twice[] = { 0x52, 0x01, 'a', 0x52, 0x01, 'b' };
    cr_assert(eq(int, parse_whole(data_twice, 6), -EBADMSG));
    const uint8_t len_past_end[] = { 0x52, 0x05, 'a', 'b' };
    cr_assert(eq(int, parse_whole(len_past_end, 4), -EBADMSG));
    const uint8_t trunc_varint[] = { 0x10, 0x80 };
    cr_assert(eq(int, parse_whole(trunc_varint, 2), -EBADMSG));
    const uint8_t trunc_key[] = { 0xd2 };
    cr_assert(eq(int, parse_whole(trunc_key, 1), -EBADMSG));
    const uint8_t long_varint[] = { 0x10, 0x80, 0x80, 0x80, 0x80, 0x80,
                                    0x80, 0x80, 0x80, 0x80, 0x80, 0x01 };
    cr_assert(eq(int, parse_whole(long_varint, sizeof(long_varint)), -EBADMSG));
    const uint8_t group[] = { 0x23, 0x24 };
    cr_assert(eq(int, parse_whole(group, 2), -EBADMSG));
    const uint8_t field0[] = { 0x02, 0x00 };
    cr_assert(eq(int, parse_whole(field0, 2), -EBADMSG));
    const uint8_t fixed_past_end[] = { 0x29, 1, 2 };
    cr_assert(eq(int, parse_whole(fixed_past_end, 3), -EBADMSG));
    guard_free_all();
}

Test(proto_bytestream, resource_name_too_long)
{
    static uint8_t msg[PROTO_RESOURCE_NAME_MAX + 16];
    char *name = malloc(PROTO_RESOURCE_NAME_MAX + 2);
    memset(name, 'a', PROTO_RESOURCE_NAME_MAX + 1);
    name[PROTO_RESOURCE_NAME_MAX + 1] = '\0';
    size_t len = pack_write(name, 0, false, NULL, 0, msg);
    cr_assert(eq(int, parse_whole(msg, len), -ENAMETOOLONG));
    name[PROTO_RESOURCE_NAME_MAX] = '\0';
    len = pack_write(name, 0, false, NULL, 0, msg);
    cr_assert(eq(int, parse_whole(msg, len), 0));
    free(name);
    guard_free_all();
}

Test(proto_bytestream, read_request)
{
    Google__Bytestream__ReadRequest r = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
    r.resource_name = "blobs/abc/3";
    r.read_offset = 7;
    r.read_limit = -2;
    uint8_t msg[128];
    size_t len = google__bytestream__read_request__pack(&r, msg);
    struct proto_read_request out;
    cr_assert(eq(int, proto_bytestream_read_request(guard_copy(msg, len), len, &out), 0));
    cr_assert(eq(sz, out.resource_name_len, 11));
    cr_assert(eq(int, memcmp(out.resource_name, "blobs/abc/3", 11), 0));
    cr_assert(eq(i64, out.read_offset, 7));
    cr_assert(eq(i64, out.read_limit, -2));
    cr_assert(eq(int, proto_bytestream_read_request(msg, 0, &out), 0));
    cr_assert(eq(sz, out.resource_name_len, 0));
    const uint8_t bad[] = { 0x0a, 0x10, 'a' };
    cr_assert(eq(int, proto_bytestream_read_request(guard_copy(bad, 3), 3, &out), -EBADMSG));
    const uint8_t wrong_type[] = { 0x10, 0x01, 0x1a, 0x00 };
    cr_assert(eq(int, proto_bytestream_read_request(wrong_type, 4, &out), -EBADMSG));
    guard_free_all();
}

Test(proto_bytestream, read_response_header_matches_protobuf_c)
{
    const uint32_t sizes[] = { 1, 127, 128, 16383, 16384, 1 << 20, 4 << 20 };
    uint8_t *data = calloc(4 << 20, 1);
    uint8_t *packed = malloc((4 << 20) + 16);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t hdr[PROTO_READ_RESPONSE_HEADER_MAX];
        size_t n = proto_bytestream_read_response_header(hdr, sizes[i]);
        Google__Bytestream__ReadResponse r = GOOGLE__BYTESTREAM__READ_RESPONSE__INIT;
        r.data.data = data;
        r.data.len = sizes[i];
        size_t plen = google__bytestream__read_response__pack(&r, packed);
        uint32_t framed = (uint32_t)hdr[1] << 24 | hdr[2] << 16 | hdr[3] << 8 | hdr[4];
        cr_assert(eq(u32, framed, (uint32_t)plen));
        cr_assert(eq(sz, n - 5 + sizes[i], plen));
        cr_assert(eq(int, memcmp(hdr + 5, packed, n - 5), 0));
    }
    free(data);
    free(packed);
}
