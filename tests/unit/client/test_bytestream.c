/*
 * The client's ByteStream encoders, checked against the server's decoders (proto/).
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "client/bytestream.h"
#include "proto/bytestream.h"
#include "proto/frame.h"

/* Decodes a framed WriteRequest made of <hdr> and <len> data bytes at <data>. */
static void decode_write(const uint8_t *hdr, size_t hlen, const uint8_t *data, size_t len,
                         struct proto_write_request *w, size_t *data_seen)
{
    static uint8_t msg[8192];
    cr_assert(le(sz, hlen + len, sizeof(msg)));
    memcpy(msg, hdr, hlen);
    if (len) memcpy(msg + hlen, data, len);
    struct proto_deframer d;
    proto_deframer_init(&d, 1 << 20);
    struct proto_frame_event ev;
    int rc = proto_deframer_feed(&d, msg, hlen + len, &ev);
    cr_assert(eq(int, rc, 5));
    cr_assert(eq(int, ev.type, PROTO_FRAME_BEGIN));
    cr_assert(eq(u32, ev.msg_len, hlen + len - 5));
    proto_write_request_begin(w, ev.msg_len);
    size_t off = 5;
    *data_seen = 0;
    while (off < hlen + len) {
        const uint8_t *p;
        size_t n;
        rc = proto_write_request_feed(w, msg + off, hlen + len - off, &p, &n);
        cr_assert(gt(int, rc, 0));
        if (n > 0) cr_assert(eq(int, memcmp(p, data + *data_seen, n), 0));
        *data_seen += n;
        off += (size_t)rc;
    }
    cr_assert(eq(int, proto_write_request_end(w), 0));
}

Test(client_bytestream, write_header_round_trips)
{
    static struct proto_write_request w;
    uint8_t hdr[CLIENT_WRITE_HEADER_MAX];
    const char *name = "uploads/u/blobs/abc/3";
    size_t seen;
    size_t hlen = client_bytestream_write_header(hdr, name, strlen(name), 0, false, 3);
    decode_write(hdr, hlen, (const uint8_t *)"xyz", 3, &w, &seen);
    cr_assert(w.has_name);
    cr_assert(eq(int, memcmp(w.name, name, strlen(name)), 0));
    cr_assert(eq(i64, w.write_offset, 0));
    cr_assert(not(w.finish_write));
    cr_assert(eq(sz, seen, 3));
    hlen = client_bytestream_write_header(hdr, NULL, 0, 1000000, true, 0);
    cr_assert(le(sz, hlen, CLIENT_WRITE_HEADER_NO_NAME));
    decode_write(hdr, hlen, NULL, 0, &w, &seen);
    cr_assert(not(w.has_name));
    cr_assert(eq(i64, w.write_offset, 1000000));
    cr_assert(w.finish_write);
    cr_assert(not(w.has_data));
    uint8_t data[300];
    memset(data, 7, sizeof(data));
    hlen = client_bytestream_write_header(hdr, NULL, 0, 5, false, sizeof(data));
    decode_write(hdr, hlen, data, sizeof(data), &w, &seen);
    cr_assert(eq(sz, seen, sizeof(data)));
}

Test(client_bytestream, read_request_round_trips)
{
    uint8_t req[CLIENT_READ_REQUEST_MAX];
    const char *name = "i/blobs/abc/10";
    size_t len = client_bytestream_read_request(req, name, strlen(name), 3, 4);
    cr_assert(eq(u32, (uint32_t)req[4], (uint32_t)(len - 5)));
    struct proto_read_request r;
    cr_assert(eq(int, proto_bytestream_read_request(req + 5, len - 5, &r), 0));
    cr_assert(eq(sz, r.resource_name_len, strlen(name)));
    cr_assert(eq(i64, r.read_offset, 3));
    cr_assert(eq(i64, r.read_limit, 4));
}

Test(client_bytestream, write_response_decodes)
{
    int64_t c;
    const uint8_t ok[] = { 0x08, 0x96, 0x01 };
    cr_assert(eq(int, client_bytestream_write_response(ok, sizeof(ok), &c), 0));
    cr_assert(eq(i64, c, 150));
    cr_assert(eq(int, client_bytestream_write_response(NULL, 0, &c), 0));
    cr_assert(eq(i64, c, 0));
    const uint8_t neg[] = { 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
    cr_assert(eq(int, client_bytestream_write_response(neg, sizeof(neg), &c), 0));
    cr_assert(eq(i64, c, -1));
    const uint8_t wrong_type[] = { 0x0a, 0x01, 0x00 };
    cr_assert(eq(int, client_bytestream_write_response(wrong_type, 3, &c), -EBADMSG));
    const uint8_t truncated[] = { 0x08, 0x96 };
    cr_assert(eq(int, client_bytestream_write_response(truncated, 2, &c), -EBADMSG));
}
