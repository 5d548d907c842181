/*
 * google.bytestream messages as the client writes and reads them, by hand so blob bytes are
 * never copied into a protobuf message (field numbers of proto/google/bytestream/):
 *
 *   WriteRequest  { string resource_name = 1; int64 write_offset = 2;
 *                   bool finish_write = 3; bytes data = 10; }
 *   WriteResponse { int64 committed_size = 1; }
 *   ReadRequest   { string resource_name = 1; int64 read_offset = 2; int64 read_limit = 3; }
 *   ReadResponse  { bytes data = 10; }
 *
 * A WriteRequest goes out as a header (gRPC prefix and every field but data's bytes, in field
 * order as every encoder writes them) followed by the data bytes from the caller's buffer.
 */
#ifndef RINGCAS_CLIENT_BYTESTREAM_H
#define RINGCAS_CLIENT_BYTESTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "proto/bytestream.h"
#include "proto/frame.h"

/* The longest WriteRequest header: prefix, name (key, length, bytes), offset, finish, data
 * key and length. */
#define CLIENT_WRITE_HEADER_MAX                                                                    \
    (PROTO_FRAME_HEADER_SIZE + 1 + 2 + PROTO_RESOURCE_NAME_MAX + 11 + 2 + 6)

/* The longest WriteRequest header without a resource name. */
#define CLIENT_WRITE_HEADER_NO_NAME (PROTO_FRAME_HEADER_SIZE + 11 + 2 + 6)

/* The longest framed ReadRequest. */
#define CLIENT_READ_REQUEST_MAX (PROTO_FRAME_HEADER_SIZE + 1 + 2 + PROTO_RESOURCE_NAME_MAX + 22)

/*
 * Writes the header of a WriteRequest carrying <data_len> data bytes into <out> (room for
 * CLIENT_WRITE_HEADER_MAX bytes, or CLIENT_WRITE_HEADER_NO_NAME without a name): the resource name
 * when <name> is not NULL (<name_len> <= PROTO_RESOURCE_NAME_MAX), <write_offset> when not 0,
 * finish_write when <finish>. Returns the header's length; the message is that header followed by
 * the data bytes.
 */
size_t client_bytestream_write_header(uint8_t *out, const char *name, size_t name_len,
                                      int64_t write_offset, bool finish, uint32_t data_len);

/*
 * Writes a framed ReadRequest for <name> (<name_len> <= PROTO_RESOURCE_NAME_MAX) from
 * <offset>, at most <limit> bytes (0: all), into <out> (room for CLIENT_READ_REQUEST_MAX).
 * Returns its length.
 */
size_t client_bytestream_read_request(uint8_t *out, const char *name, size_t name_len,
                                      int64_t offset, int64_t limit);

/* Decodes a WriteResponse; returns 0 or -EBADMSG. Absent committed_size reads as 0. */
MUST_CHECK int client_bytestream_write_response(const uint8_t *msg, size_t len,
                                                int64_t *committed_size);

#endif /* RINGCAS_CLIENT_BYTESTREAM_H */
