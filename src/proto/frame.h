/*
 * gRPC message framing (grpc/grpc doc/PROTOCOL-HTTP2.md, "Length-Prefixed-Message"): each
 * message is a 1-byte compressed flag, a 4-byte big-endian length and that many bytes. DATA
 * frame boundaries have nothing to do with message boundaries: a message may be split over
 * many frames and one frame may carry several messages.
 *
 * The deframer is a small state machine fed with whatever bytes arrive. It never copies and
 * never buffers a payload: it reports where each message begins (its length, checked against
 * the limit before a byte of it is kept), which input bytes belong to it, and where it ends.
 * Whether to assemble a message or stream it is the caller's choice.
 */
#ifndef RINGCAS_PROTO_FRAME_H
#define RINGCAS_PROTO_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

#define PROTO_FRAME_HEADER_SIZE 5

enum proto_frame_event_type {
    PROTO_FRAME_NEED_MORE = 0, /* every input byte was taken; feed more */
    PROTO_FRAME_BEGIN,         /* a message header was read: <msg_len> bytes follow */
    PROTO_FRAME_DATA,          /* <data>/<len> are payload bytes of the current message */
    PROTO_FRAME_END,           /* the current message is complete */
};

struct proto_frame_event {
    uint8_t type;        /* enum proto_frame_event_type */
    uint32_t msg_len;    /* BEGIN: the message's length */
    const uint8_t *data; /* DATA: inside the caller's input */
    size_t len;          /* DATA: bytes */
};

struct proto_deframer {
    uint8_t hdr[PROTO_FRAME_HEADER_SIZE]; /* header bytes gathered so far */
    uint8_t hdr_len;                      /* 0..5 */
    bool in_msg;                          /* between BEGIN and END */
    bool end_pending;                     /* the payload is complete, END not yet reported */
    uint32_t msg_len;                     /* length of the current message */
    uint32_t msg_left;                    /* payload bytes still to come */
    uint32_t max_len;                     /* longest message accepted */
    uint64_t messages;                    /* messages completed */
};

/* Prepares <d> for a new stream, accepting messages of at most <max_len> bytes. */
void proto_deframer_init(struct proto_deframer *d, uint32_t max_len);

/*
 * Takes bytes from <p>/<len> up to the next event and describes it in <ev>. Returns the
 * number of input bytes taken (the caller advances by it and calls again while input is
 * left or the event was not NEED_MORE), or:
 *   -EMSGSIZE  a message announces more than max_len bytes (nothing of it was taken);
 *   -EPROTO    the compressed flag is set (ringcas accepts no message encoding, so the flag
 *              must be 0) or has a value other than 0 or 1.
 * After an error the deframer is dead; the stream must end.
 */
MUST_CHECK int proto_deframer_feed(struct proto_deframer *d, const uint8_t *p, size_t len,
                                   struct proto_frame_event *ev);

/* True when the stream may end here: no message is partly received. */
static inline bool proto_deframer_is_idle(const struct proto_deframer *d)
{
    return d->hdr_len == 0 && !d->in_msg;
}

/* Writes the 5-byte header of an uncompressed message of <len> bytes into <out>. */
void proto_frame_header_put(uint8_t out[PROTO_FRAME_HEADER_SIZE], uint32_t len);

#endif /* RINGCAS_PROTO_FRAME_H */
