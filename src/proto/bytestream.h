/*
 * google.bytestream messages by hand, so blob bytes are never copied on the hot path:
 *   - ReadRequest is decoded from a complete message (it carries no blob bytes);
 *   - ReadResponse is encoded as a header (gRPC prefix, field key, length) that goes out in
 *     its own iovec before the caller's data;
 *   - WriteRequest is decoded as a stream: the metadata fields are gathered, and the bytes
 *     of `data` (field 10) are reported as spans of the caller's input, never copied.
 *
 * Field numbers as in google/bytestream/bytestream.proto (proto/google/bytestream/).
 */
#ifndef RINGCAS_PROTO_BYTESTREAM_H
#define RINGCAS_PROTO_BYTESTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "proto/frame.h"
#include "proto/wire.h"

/* Longest resource name accepted, bytes (instance names are short; this is generous). */
#define PROTO_RESOURCE_NAME_MAX 2048

struct proto_read_request {
    const char *resource_name; /* inside the message; not NUL-terminated */
    size_t resource_name_len;  /* bytes */
    int64_t read_offset;       /* as sent; may be negative (the caller answers OUT_OF_RANGE) */
    int64_t read_limit;        /* as sent; 0: no limit */
};

/*
 * Decodes a ReadRequest from the complete message <msg>/<len>. Returns 0 or -EBADMSG
 * (malformed, or a known field with the wrong wire type). Unknown fields are skipped.
 */
MUST_CHECK int proto_bytestream_read_request(const uint8_t *msg, size_t len,
                                             struct proto_read_request *out);

/* Bytes of the longest ReadResponse header: gRPC prefix, key of field 10, 5-byte length. */
#define PROTO_READ_RESPONSE_HEADER_MAX (PROTO_FRAME_HEADER_SIZE + 1 + 5)

/*
 * Writes the header of a ReadResponse message carrying <data_len> data bytes into <out>:
 * the gRPC length prefix, the key of `data` and its length. The caller sends the header and
 * then the <data_len> bytes. Returns the header's size. <data_len> must leave the message
 * under 4 GiB (asserted).
 */
size_t proto_bytestream_read_response_header(uint8_t out[PROTO_READ_RESPONSE_HEADER_MAX],
                                             uint32_t data_len);

enum proto_write_state {
    PROTO_WRITE_KEY = 0, /* reading a field key (varint) */
    PROTO_WRITE_VARINT,  /* reading a varint value */
    PROTO_WRITE_LENGTH,  /* reading the length of a LEN field */
    PROTO_WRITE_NAME,    /* gathering resource_name */
    PROTO_WRITE_DATA,    /* reporting data bytes */
    PROTO_WRITE_SKIP,    /* skipping an unknown field's bytes */
};

/*
 * The streaming decoder of one WriteRequest message. Fields of the current message; the
 * caller keeps what it needs across messages.
 */
struct proto_write_request {
    /* private: */
    uint8_t state;                      /* enum proto_write_state */
    uint8_t tmp[PROTO_WIRE_VARINT_MAX]; /* a varint split across inputs */
    uint8_t tmp_len;                    /* bytes in tmp */
    uint32_t field;                     /* number of the field being read */
    uint64_t left;                      /* bytes left of the LEN field being read */
    uint64_t msg_left;                  /* bytes left of the message */
    /* public, valid after proto_write_request_end() returned 0: */
    char name[PROTO_RESOURCE_NAME_MAX]; /* resource_name (no NUL) */
    uint32_t name_len;                  /* its bytes */
    bool has_name;                      /* resource_name was present */
    int64_t write_offset;               /* write_offset (0 when absent) */
    bool finish_write;                  /* finish_write */
    bool has_data;                      /* a data field was present (maybe empty) */
    uint64_t data_len;                  /* bytes of data */
};

/* Starts decoding a message of <msg_len> bytes. */
void proto_write_request_begin(struct proto_write_request *w, uint32_t msg_len);

/*
 * Decodes from <p>/<len>, which must not run past the message. Returns the bytes taken
 * (>= 1 when <len> >= 1), or -EBADMSG (malformed, wrong wire type for a known field, a second
 * data field) or -ENAMETOOLONG (resource_name over PROTO_RESOURCE_NAME_MAX). When the bytes
 * taken are data bytes, *<data> and *<data_len> describe them (they are the first bytes of
 * <p>); otherwise *<data_len> is 0. The fields before `data` (resource_name, write_offset,
 * finish_write, in field order as every encoder writes them) are decoded by the time the
 * first data span is reported, and w->has_data is set then.
 */
MUST_CHECK int proto_write_request_feed(struct proto_write_request *w, const uint8_t *p, size_t len,
                                        const uint8_t **data, size_t *data_len);

/* Ends the message: 0, or -EBADMSG when it ended inside a field. */
MUST_CHECK int proto_write_request_end(struct proto_write_request *w);

#endif /* RINGCAS_PROTO_BYTESTREAM_H */
