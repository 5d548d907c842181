/*
 * ByteStream messages by hand. The WriteRequest decoder is a state machine over one message:
 * KEY -> (VARINT | LENGTH -> (NAME | DATA | SKIP) | fixed-size SKIP) -> KEY ... It keeps at
 * most one varint (10 bytes) and the resource name; data bytes are handed back as spans of
 * the input. msg_left bounds every length taken from the input.
 */
#include "proto/bytestream.h"

#include <errno.h>
#include <string.h>

enum {
    FIELD_RESOURCE_NAME = 1,
    FIELD_OFFSET = 2, /* read_offset / write_offset */
    FIELD_LIMIT = 3,  /* read_limit */
    FIELD_FINISH = 3, /* finish_write */
    FIELD_DATA = 10,
};

int proto_bytestream_read_request(const uint8_t *msg, size_t len, struct proto_read_request *out)
{
    memset(out, 0, sizeof(*out));
    out->resource_name = "";
    struct proto_wire_reader r;
    proto_wire_reader_init(&r, msg, len);
    struct proto_wire_field f;
    int rc;
    /* Bounded: every field consumes at least one byte. */
    while ((rc = proto_wire_next(&r, &f)) > 0) {
        switch (f.number) {
        case FIELD_RESOURCE_NAME:
            if (f.type != PROTO_WIRE_LEN) return -EBADMSG;
            out->resource_name = (const char *)f.data;
            out->resource_name_len = f.len;
            break;
        case FIELD_OFFSET:
            if (f.type != PROTO_WIRE_VARINT) return -EBADMSG;
            out->read_offset = (int64_t)f.value;
            break;
        case FIELD_LIMIT:
            if (f.type != PROTO_WIRE_VARINT) return -EBADMSG;
            out->read_limit = (int64_t)f.value;
            break;
        default:
            break;
        }
    }
    return rc;
}

size_t proto_bytestream_read_response_header(uint8_t out[PROTO_READ_RESPONSE_HEADER_MAX],
                                             uint32_t data_len)
{
    uint8_t field[6];
    field[0] = (uint8_t)proto_wire_key(FIELD_DATA, PROTO_WIRE_LEN);
    size_t n = 1 + proto_wire_varint_put(field + 1, data_len);
    uint64_t msg_len = n + (uint64_t)data_len;
    ASSERT(msg_len <= UINT32_MAX);
    proto_frame_header_put(out, (uint32_t)msg_len);
    memcpy(out + PROTO_FRAME_HEADER_SIZE, field, n);
    return PROTO_FRAME_HEADER_SIZE + n;
}

void proto_write_request_begin(struct proto_write_request *w, uint32_t msg_len)
{
    w->state = PROTO_WRITE_KEY;
    w->tmp_len = 0;
    w->field = 0;
    w->left = 0;
    w->msg_left = msg_len;
    w->name_len = 0;
    w->has_name = false;
    w->write_offset = 0;
    w->finish_write = false;
    w->has_data = false;
    w->data_len = 0;
}

/*
 * Gathers a varint from <p>/<len> into w->tmp. Returns bytes taken (>= 1) with *<done> set
 * when the varint is complete (value in *<v>), or -EBADMSG.
 */
static int gather_varint(struct proto_write_request *w, const uint8_t *p, size_t len, bool *done,
                         uint64_t *v)
{
    size_t n = 0;
    *done = false;
    /* Bounded by the 10 bytes of tmp. */
    while (n < len && !*done) {
        if (w->tmp_len == PROTO_WIRE_VARINT_MAX) return -EBADMSG;
        w->tmp[w->tmp_len++] = p[n++];
        *done = (p[n - 1] & 0x80) == 0;
    }
    if (*done) {
        int rc = proto_wire_varint(w->tmp, w->tmp_len, v);
        if (rc <= 0) return -EBADMSG;
        w->tmp_len = 0;
    }
    return (int)n;
}

/* A complete key <key> was read: choose the next state. */
static int on_key(struct proto_write_request *w, uint64_t key)
{
    uint64_t number = key >> 3;
    unsigned type = (unsigned)(key & 7);
    if (number == 0 || number > (1u << 29) - 1) return -EBADMSG;
    w->field = (uint32_t)number;
    bool known = number == FIELD_RESOURCE_NAME || number == FIELD_OFFSET ||
                 number == FIELD_FINISH || number == FIELD_DATA;
    bool want_len = number == FIELD_RESOURCE_NAME || number == FIELD_DATA;
    if (known && (type == PROTO_WIRE_LEN) != want_len) return -EBADMSG;
    switch (type) {
    case PROTO_WIRE_VARINT:
        w->state = PROTO_WRITE_VARINT;
        return 0;
    case PROTO_WIRE_LEN:
        w->state = PROTO_WRITE_LENGTH;
        return 0;
    case PROTO_WIRE_I64:
    case PROTO_WIRE_I32:
        if (known) return -EBADMSG;
        w->left = type == PROTO_WIRE_I64 ? 8 : 4;
        if (w->left > w->msg_left) return -EBADMSG;
        w->state = PROTO_WRITE_SKIP;
        return 0;
    default:
        return -EBADMSG;
    }
}

static void on_varint(struct proto_write_request *w, uint64_t v)
{
    if (w->field == FIELD_OFFSET) {
        w->write_offset = (int64_t)v;
    } else if (w->field == FIELD_FINISH) {
        w->finish_write = v != 0;
    }
    w->state = PROTO_WRITE_KEY;
}

static int on_length(struct proto_write_request *w, uint64_t len)
{
    if (len > w->msg_left) return -EBADMSG;
    w->left = len;
    if (w->field == FIELD_RESOURCE_NAME) {
        if (len > PROTO_RESOURCE_NAME_MAX) return -ENAMETOOLONG;
        w->name_len = 0;
        w->has_name = true;
        w->state = PROTO_WRITE_NAME;
    } else if (w->field == FIELD_DATA) {
        if (w->has_data) {
            return -EBADMSG; /* a second data field cannot be streamed; see docs/grpc.md */
        }
        w->has_data = true;
        w->data_len = len;
        w->state = PROTO_WRITE_DATA;
    } else {
        w->state = PROTO_WRITE_SKIP;
    }
    if (len == 0) w->state = PROTO_WRITE_KEY;
    return 0;
}

/* KEY, VARINT and LENGTH: one varint each. */
static int feed_varint(struct proto_write_request *w, const uint8_t *p, size_t len)
{
    bool done;
    uint64_t v = 0;
    int n = gather_varint(w, p, len, &done, &v);
    if (n < 0) return n;
    w->msg_left -= (uint64_t)n;
    if (!done) return n;
    int rc = 0;
    if (w->state == PROTO_WRITE_KEY) {
        rc = on_key(w, v);
    } else if (w->state == PROTO_WRITE_VARINT) {
        on_varint(w, v);
    } else {
        rc = on_length(w, v);
    }
    return rc < 0 ? rc : n;
}

/* NAME, DATA and SKIP: <w->left> bytes of a field. */
static int feed_bytes(struct proto_write_request *w, const uint8_t *p, size_t len,
                      const uint8_t **data, size_t *data_len)
{
    size_t n = len < w->left ? len : (size_t)w->left;
    if (w->state == PROTO_WRITE_NAME) {
        memcpy(w->name + w->name_len, p, n);
        w->name_len += (uint32_t)n;
    } else if (w->state == PROTO_WRITE_DATA) {
        *data = p;
        *data_len = n;
    }
    w->left -= n;
    w->msg_left -= n;
    if (w->left == 0) w->state = PROTO_WRITE_KEY;
    return (int)n;
}

int proto_write_request_feed(struct proto_write_request *w, const uint8_t *p, size_t len,
                             const uint8_t **data, size_t *data_len)
{
    *data = NULL;
    *data_len = 0;
    if (len == 0) return 0;
    if (len > w->msg_left) return -EBADMSG;
    int n;
    switch (w->state) {
    case PROTO_WRITE_KEY:
    case PROTO_WRITE_VARINT:
    case PROTO_WRITE_LENGTH:
        n = feed_varint(w, p, len);
        break;
    default:
        n = feed_bytes(w, p, len, data, data_len);
        break;
    }
    return n;
}

int proto_write_request_end(struct proto_write_request *w)
{
    if (w->msg_left != 0 || w->state != PROTO_WRITE_KEY || w->tmp_len != 0) return -EBADMSG;
    return 0;
}
