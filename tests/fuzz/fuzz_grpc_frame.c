/*
 * Fuzz target: gRPC message deframing (src/proto/frame.c). The first input byte picks how the
 * rest is cut into pieces; the messages found must be the same whatever the cut, every
 * payload byte must belong to exactly one message of its announced length, and nothing may be
 * read outside the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "proto/frame.h"

#define MAX_LEN (1u << 16)

struct summary {
    uint64_t messages; /* complete messages */
    uint64_t payload;  /* payload bytes reported */
    uint64_t hash;     /* of every payload byte, in order */
    int err;           /* the error that stopped it, or 0 */
};

static void feed(const uint8_t *p, size_t len, size_t step, struct summary *s)
{
    struct proto_deframer d;
    proto_deframer_init(&d, MAX_LEN);
    memset(s, 0, sizeof(*s));
    uint64_t in_msg = 0;
    uint32_t announced = 0;
    size_t off = 0;
    while (off <= len && s->err == 0) {
        size_t piece = len - off < step ? len - off : step;
        const uint8_t *q = p + off;
        size_t left = piece;
        for (;;) {
            struct proto_frame_event ev;
            int n = proto_deframer_feed(&d, q, left, &ev);
            if (n < 0) {
                s->err = n;
                break;
            }
            ASSERT((size_t)n <= left);
            q += n;
            left -= (size_t)n;
            if (ev.type == PROTO_FRAME_BEGIN) {
                ASSERT(ev.msg_len <= MAX_LEN);
                announced = ev.msg_len;
                in_msg = 0;
            } else if (ev.type == PROTO_FRAME_DATA) {
                ASSERT(ev.data >= p && ev.data + ev.len <= p + len);
                in_msg += ev.len;
                s->payload += ev.len;
                for (size_t i = 0; i < ev.len; i++)
                    s->hash = s->hash * 31 + ev.data[i];
            } else if (ev.type == PROTO_FRAME_END) {
                ASSERT(in_msg == announced);
                s->messages++;
            } else {
                ASSERT(left == 0);
                break;
            }
        }
        if (off == len) break;
        off += piece;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    struct summary whole;
    struct summary cut;
    feed(data + 1, size - 1, size, &whole);
    feed(data + 1, size - 1, step, &cut);
    ASSERT(whole.err == cut.err);
    ASSERT(whole.messages == cut.messages);
    ASSERT(whole.payload == cut.payload);
    ASSERT(whole.hash == cut.hash);
    return 0;
}
