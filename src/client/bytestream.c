/*
 * Hand encoders and decoders of the ByteStream messages the client sends and receives.
 */
#include "client/bytestream.h"

#include <errno.h>
#include <string.h>

#include "proto/wire.h"

/* Appends a LEN field's key and length (not its bytes) at <p>; returns the bytes written. */
static size_t put_len_key(uint8_t *p, uint32_t field, uint64_t len)
{
    size_t n = proto_wire_varint_put(p, proto_wire_key(field, PROTO_WIRE_LEN));
    return n + proto_wire_varint_put(p + n, len);
}

static size_t put_varint_field(uint8_t *p, uint32_t field, uint64_t v)
{
    size_t n = proto_wire_varint_put(p, proto_wire_key(field, PROTO_WIRE_VARINT));
    return n + proto_wire_varint_put(p + n, v);
}

size_t client_bytestream_write_header(uint8_t *out, const char *name, size_t name_len,
                                      int64_t write_offset, bool finish, uint32_t data_len)
{
    ASSERT(name_len <= PROTO_RESOURCE_NAME_MAX);
    uint8_t *p = out + PROTO_FRAME_HEADER_SIZE;
    if (name) {
        p += put_len_key(p, 1, name_len);
        memcpy(p, name, name_len);
        p += name_len;
    }
    if (write_offset != 0) p += put_varint_field(p, 2, (uint64_t)write_offset);
    if (finish) p += put_varint_field(p, 3, 1);
    if (data_len > 0) p += put_len_key(p, 10, data_len);
    size_t fields = (size_t)(p - out) - PROTO_FRAME_HEADER_SIZE;
    ASSERT((size_t)(p - out) <= (name ? CLIENT_WRITE_HEADER_MAX : CLIENT_WRITE_HEADER_NO_NAME));
    uint64_t msg_len = fields + (uint64_t)data_len;
    ASSERT(msg_len <= UINT32_MAX);
    proto_frame_header_put(out, (uint32_t)msg_len);
    return (size_t)(p - out);
}

size_t client_bytestream_read_request(uint8_t *out, const char *name, size_t name_len,
                                      int64_t offset, int64_t limit)
{
    ASSERT(name_len <= PROTO_RESOURCE_NAME_MAX);
    uint8_t *p = out + PROTO_FRAME_HEADER_SIZE;
    p += put_len_key(p, 1, name_len);
    memcpy(p, name, name_len);
    p += name_len;
    if (offset != 0) p += put_varint_field(p, 2, (uint64_t)offset);
    if (limit != 0) p += put_varint_field(p, 3, (uint64_t)limit);
    size_t len = (size_t)(p - out);
    ASSERT(len <= CLIENT_READ_REQUEST_MAX);
    proto_frame_header_put(out, (uint32_t)(len - PROTO_FRAME_HEADER_SIZE));
    return len;
}

int client_bytestream_write_response(const uint8_t *msg, size_t len, int64_t *committed_size)
{
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, msg, len);
    *committed_size = 0;
    struct proto_wire_field f;
    int rc;
    /* Bounded: each step takes at least one byte of the message. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        if (f.number != 1) continue;
        if (f.type != PROTO_WIRE_VARINT) return -EBADMSG;
        *committed_size = (int64_t)f.value;
    }
    return rc < 0 ? -EBADMSG : 0;
}
