/*
 * The gRPC deframer. States: gathering the 5 header bytes (hdr_len < 5) -> in a message
 * (msg_left payload bytes to come) -> END reported -> gathering again. A zero-length message
 * gives BEGIN then END with no DATA. Every call takes at least one byte or reports an event,
 * so a caller's loop over its input always ends.
 */
#include "proto/frame.h"

#include <errno.h>
#include <string.h>

void proto_deframer_init(struct proto_deframer *d, uint32_t max_len)
{
    memset(d, 0, sizeof(*d));
    d->max_len = max_len;
}

static int begin_message(struct proto_deframer *d, struct proto_frame_event *ev)
{
    uint8_t flag = d->hdr[0];
    uint32_t len = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
                   (uint32_t)d->hdr[3] << 8 | (uint32_t)d->hdr[4];
    if (flag != 0) return -EPROTO;
    if (len > d->max_len) return -EMSGSIZE;
    d->hdr_len = 0;
    d->in_msg = true;
    d->msg_len = len;
    d->msg_left = len;
    d->end_pending = len == 0;
    ev->type = PROTO_FRAME_BEGIN;
    ev->msg_len = len;
    return 0;
}

int proto_deframer_feed(struct proto_deframer *d, const uint8_t *p, size_t len,
                        struct proto_frame_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    if (d->in_msg && d->end_pending) {
        d->in_msg = false;
        d->end_pending = false;
        d->messages++;
        ev->type = PROTO_FRAME_END;
        return 0;
    }
    if (d->in_msg) {
        size_t n = len < d->msg_left ? len : d->msg_left;
        if (n == 0) {
            ev->type = PROTO_FRAME_NEED_MORE;
            return 0;
        }
        d->msg_left -= (uint32_t)n;
        d->end_pending = d->msg_left == 0;
        ev->type = PROTO_FRAME_DATA;
        ev->data = p;
        ev->len = n;
        return (int)n;
    }
    size_t want = PROTO_FRAME_HEADER_SIZE - d->hdr_len;
    size_t n = len < want ? len : want;
    memcpy(d->hdr + d->hdr_len, p, n);
    d->hdr_len = (uint8_t)(d->hdr_len + n);
    if (d->hdr_len < PROTO_FRAME_HEADER_SIZE) {
        ev->type = PROTO_FRAME_NEED_MORE;
        return (int)n;
    }
    int rc = begin_message(d, ev);
    return rc < 0 ? rc : (int)n;
}

void proto_frame_header_put(uint8_t out[PROTO_FRAME_HEADER_SIZE], uint32_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}
