/* gRPC deframing: split across inputs, several per input, empty and oversize messages. */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "guard.h"
#include "proto/frame.h"

struct collected {
    uint8_t msgs[8][256];
    size_t lens[8];
    uint32_t announced[8];
    int count;
    bool in_msg;
};

/* Feeds <p>/<len> and collects messages; returns 0 or the deframer's error. */
static int feed_all(struct proto_deframer *d, const uint8_t *p, size_t len, struct collected *c)
{
    for (int guard = 0; guard < 100000; guard++) {
        struct proto_frame_event ev;
        int n = proto_deframer_feed(d, p, len, &ev);
        if (n < 0) return n;
        p += n;
        len -= (size_t)n;
        switch (ev.type) {
        case PROTO_FRAME_NEED_MORE:
            cr_assert(eq(sz, len, 0));
            return 0;
        case PROTO_FRAME_BEGIN:
            cr_assert(not(c->in_msg));
            c->in_msg = true;
            c->announced[c->count] = ev.msg_len;
            c->lens[c->count] = 0;
            break;
        case PROTO_FRAME_DATA:
            cr_assert(c->in_msg);
            cr_assert(gt(sz, ev.len, 0));
            memcpy(c->msgs[c->count] + c->lens[c->count], ev.data, ev.len);
            c->lens[c->count] += ev.len;
            break;
        case PROTO_FRAME_END:
            cr_assert(c->in_msg);
            cr_assert(eq(sz, c->lens[c->count], c->announced[c->count]));
            c->in_msg = false;
            c->count++;
            break;
        }
    }
    cr_fail("feed loop did not end");
    return -1;
}

static size_t put_msg(uint8_t *out, const char *payload)
{
    size_t n = strlen(payload);
    proto_frame_header_put(out, (uint32_t)n);
    memcpy(out + 5, payload, n);
    return 5 + n;
}

Test(proto_frame, several_messages_in_one_input)
{
    uint8_t buf[256];
    size_t n = put_msg(buf, "hello");
    n += put_msg(buf + n, "");
    n += put_msg(buf + n, "world!");
    struct proto_deframer d;
    proto_deframer_init(&d, 1024);
    struct collected c = { 0 };
    cr_assert(eq(int, feed_all(&d, guard_copy(buf, n), n, &c), 0));
    cr_assert(eq(int, c.count, 3));
    cr_assert(eq(sz, c.lens[0], 5));
    cr_assert(eq(int, memcmp(c.msgs[0], "hello", 5), 0));
    cr_assert(eq(sz, c.lens[1], 0));
    cr_assert(eq(int, memcmp(c.msgs[2], "world!", 6), 0));
    cr_assert(proto_deframer_is_idle(&d));
    cr_assert(eq(u64, d.messages, 3));
    guard_free_all();
}

Test(proto_frame, every_split_point_gives_the_same_messages)
{
    uint8_t buf[256];
    size_t n = put_msg(buf, "abcdefgh");
    n += put_msg(buf + n, "");
    n += put_msg(buf + n, "0123456789");
    /* Split the stream at every pair of cut points: headers and payloads straddle inputs. */
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            struct proto_deframer d;
            proto_deframer_init(&d, 64);
            struct collected c = { 0 };
            cr_assert(eq(int, feed_all(&d, guard_copy(buf, a), a, &c), 0));
            cr_assert(eq(int, feed_all(&d, guard_copy(buf + a, b - a), b - a, &c), 0));
            cr_assert(eq(int, feed_all(&d, guard_copy(buf + b, n - b), n - b, &c), 0));
            cr_assert(eq(int, c.count, 3), "cut at %zu,%zu", a, b);
            cr_assert(eq(int, memcmp(c.msgs[0], "abcdefgh", 8), 0));
            cr_assert(eq(int, memcmp(c.msgs[2], "0123456789", 10), 0));
            cr_assert(proto_deframer_is_idle(&d));
            guard_free_all();
        }
    }
}

Test(proto_frame, byte_by_byte)
{
    uint8_t buf[256];
    size_t n = put_msg(buf, "xyz");
    n += put_msg(buf + n, "pq");
    struct proto_deframer d;
    proto_deframer_init(&d, 64);
    struct collected c = { 0 };
    for (size_t i = 0; i < n; i++) {
        cr_assert(eq(int, feed_all(&d, guard_copy(buf + i, 1), 1, &c), 0));
        cr_assert(eq(int, proto_deframer_is_idle(&d), i == 7 || i == n - 1), "at %zu", i);
    }
    cr_assert(eq(int, c.count, 2));
    guard_free_all();
}

Test(proto_frame, oversize_is_refused_before_any_payload)
{
    uint8_t hdr[5];
    proto_frame_header_put(hdr, 65);
    struct proto_deframer d;
    proto_deframer_init(&d, 64);
    struct proto_frame_event ev;
    /* Four header bytes are fine; the fifth completes an announcement past the limit. */
    cr_assert(eq(int, proto_deframer_feed(&d, hdr, 4, &ev), 4));
    cr_assert(eq(int, ev.type, PROTO_FRAME_NEED_MORE));
    cr_assert(eq(int, proto_deframer_feed(&d, hdr + 4, 1, &ev), -EMSGSIZE));
    proto_frame_header_put(hdr, 64);
    proto_deframer_init(&d, 64);
    cr_assert(eq(int, proto_deframer_feed(&d, hdr, 5, &ev), 5));
    cr_assert(eq(int, ev.type, PROTO_FRAME_BEGIN));
    cr_assert(eq(u32, ev.msg_len, 64));
}

Test(proto_frame, largest_length_is_refused)
{
    const uint8_t hdr[5] = { 0, 0xff, 0xff, 0xff, 0xff };
    struct proto_deframer d;
    proto_deframer_init(&d, 4 << 20);
    struct proto_frame_event ev;
    cr_assert(eq(int, proto_deframer_feed(&d, guard_copy(hdr, 5), 5, &ev), -EMSGSIZE));
    guard_free_all();
}

Test(proto_frame, compressed_flag_is_a_protocol_error)
{
    const uint8_t one[6] = { 1, 0, 0, 0, 1, 'x' };
    const uint8_t two[6] = { 2, 0, 0, 0, 1, 'x' };
    struct proto_deframer d;
    struct proto_frame_event ev;
    proto_deframer_init(&d, 64);
    cr_assert(eq(int, proto_deframer_feed(&d, one, 6, &ev), -EPROTO));
    proto_deframer_init(&d, 64);
    cr_assert(eq(int, proto_deframer_feed(&d, two, 6, &ev), -EPROTO));
}

Test(proto_frame, truncated_stream_is_not_idle)
{
    uint8_t buf[32];
    size_t n = put_msg(buf, "abcdef");
    struct proto_deframer d;
    proto_deframer_init(&d, 64);
    struct collected c = { 0 };
    cr_assert(eq(int, feed_all(&d, buf, 3, &c), 0));
    cr_assert(not(proto_deframer_is_idle(&d)));
    cr_assert(eq(int, feed_all(&d, buf + 3, n - 4, &c), 0));
    cr_assert(not(proto_deframer_is_idle(&d)));
    cr_assert(eq(int, c.count, 0));
}
