/*
 * ByteStream.Read with inline zstd decompression and digest verification.
 *
 * ReadResponse is decoded by hand so that a data span can be taken in part: when the sink
 * pauses in the middle of one, the decoder has advanced only over what was taken, and the
 * call layer offers the rest again after the resume.
 *
 * Invariants:
 * - received counts exactly the bytes handed to the sink, and the hash covers exactly them;
 * - more bytes than the digest's size are never handed to the sink;
 * - with zstd, a pause is honoured only while compressed input is left: once a span's input
 *   is consumed the decoder's pending output (at most one block) is drained, so nothing is
 *   left inside it when no more input will come.
 */
#include "client/get.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "client/internal.h"
#include "proto/wire.h"

void client_get_options_default(struct client_get_options *o)
{
    memset(o, 0, sizeof(*o));
    o->instance = "";
}

int client_get_init(struct client_get *g, struct client *cl)
{
    memset(g, 0, sizeof(*g));
    client_call_init(&g->call, cl);
    return client_sha256_init(&g->sha);
}

void client_get_deinit(struct client_get *g)
{
    if (!g) return;
    client_call_deinit(&g->call);
    client_sha256_deinit(&g->sha);
    ZSTD_freeDCtx(g->dctx);
    g->dctx = NULL;
    free(g->zout);
    g->zout = NULL;
}

static struct client_get *get_of(struct client_call *c)
{
    return BASE_CONTAINER_OF(c, struct client_get, call);
}

/* ---- delivery ---- */

/* Hands <n> blob bytes to the sink after the size check; 0 or -errno. */
static int get_emit(struct client_get *g, const uint8_t *p, size_t n)
{
    if (n > g->o.digest.size - g->received) {
        client_call_fail(&g->call, -EBADMSG, "server sent more bytes than the blob's size");
        return -EBADMSG;
    }
    if (!g->o.skip_verify) client_sha256_update(&g->sha, p, n);
    g->received += n;
    if (!g->o.sink) return 0;
    int rc = g->o.sink(g, p, n);
    if (rc < 0) {
        char msg[CLIENT_MESSAGE_MAX];
        (void)snprintf(msg, sizeof(msg), "the reader stopped: %s", client_err_str(rc));
        client_call_fail(&g->call, rc, msg);
    }
    return rc;
}

/* Decompresses <n> bytes at <p> into the sink; returns the input bytes taken or -errno. */
static int64_t get_inflate(struct client_get *g, const uint8_t *p, size_t n)
{
    ZSTD_inBuffer in = { p, n, 0 };
    bool full = true;
    /* Bounded: each step consumes input or emits output; stops when neither happens. */
    while (in.pos < in.size || full) {
        if (in.pos < in.size && g->call.paused) break;
        ZSTD_outBuffer out = { g->zout, g->zout_size, 0 };
        size_t before = in.pos;
        size_t r = ZSTD_decompressStream(g->dctx, &out, &in);
        if (ZSTD_isError(r)) {
            client_call_fail(&g->call, -EBADMSG, "corrupt zstd stream from the server");
            return -EBADMSG;
        }
        /* 0: a frame ended and is flushed. Asked again with no input, the decoder waits for
         * a next frame (r > 0) without having started one: that is still "done". */
        if (r == 0) {
            g->frame_done = true;
        } else if (in.pos > before || out.pos > 0) {
            g->frame_done = false;
        }
        full = out.pos == out.size;
        if (out.pos > 0) {
            int rc = get_emit(g, g->zout, out.pos);
            if (rc < 0) return rc;
        } else if (in.pos == in.size) {
            break;
        }
    }
    return (int64_t)in.pos;
}

/* Takes up to <n> bytes of a data span; returns how many (fewer after a pause) or -errno. */
static int64_t get_data(struct client_get *g, const uint8_t *p, size_t n)
{
    if (g->o.zstd) return get_inflate(g, p, n);
    int rc = get_emit(g, p, n);
    return rc < 0 ? rc : (int64_t)n;
}

/* ---- ReadResponse decoding ---- */

/* Gathers a varint across inputs: bytes taken, with *<done> when complete; or -EBADMSG. */
static int get_varint(struct client_get *g, const uint8_t *p, size_t len, uint64_t *v, bool *done)
{
    *done = false;
    /* Bounded by <len> and the 10 bytes of the longest varint. */
    for (size_t i = 0; i < len; i++) {
        if (g->tmp_len >= sizeof(g->tmp)) return -EBADMSG;
        g->tmp[g->tmp_len++] = p[i];
        if (p[i] & 0x80) continue;
        int rc = proto_wire_varint(g->tmp, g->tmp_len, v);
        g->tmp_len = 0;
        if (rc <= 0) return -EBADMSG;
        *done = true;
        return (int)(i + 1);
    }
    return (int)len;
}

/* A complete varint <v> in the current state: moves to the next state; 0 or -EBADMSG. */
static int get_varint_done(struct client_get *g, uint64_t v)
{
    switch (g->dec_state) {
    case CLIENT_GET_KEY:
        g->field = (uint32_t)(v >> 3);
        if (g->field == 0 || (v >> 3) > 0x1fffffffu) return -EBADMSG;
        switch (v & 7) {
        case PROTO_WIRE_VARINT:
            g->dec_state = CLIENT_GET_SKIP_VARINT;
            return 0;
        case PROTO_WIRE_I64:
        case PROTO_WIRE_I32:
            g->left = (v & 7) == PROTO_WIRE_I64 ? 8 : 4;
            g->dec_state = CLIENT_GET_SKIP_BYTES;
            return 0;
        case PROTO_WIRE_LEN:
            g->dec_state = CLIENT_GET_LEN;
            return 0;
        default:
            return -EBADMSG;
        }
    case CLIENT_GET_LEN:
        g->left = v;
        g->dec_state = g->field == 10 ? CLIENT_GET_DATA : CLIENT_GET_SKIP_BYTES;
        if (v == 0) g->dec_state = CLIENT_GET_KEY;
        return 0;
    default: /* CLIENT_GET_SKIP_VARINT */
        g->dec_state = CLIENT_GET_KEY;
        return 0;
    }
}

static int get_on_msg_begin(struct client_call *c, uint32_t len)
{
    (void)len;
    struct client_get *g = get_of(c);
    g->dec_state = CLIENT_GET_KEY;
    g->tmp_len = 0;
    return 0;
}

static int64_t get_on_msg_data(struct client_call *c, const uint8_t *p, size_t len)
{
    struct client_get *g = get_of(c);
    size_t off = 0;
    /* Bounded: each step takes at least one byte, or stops after a pause. */
    while (off < len) {
        uint8_t st = g->dec_state;
        if (st == CLIENT_GET_DATA || st == CLIENT_GET_SKIP_BYTES) {
            size_t n = g->left < len - off ? (size_t)g->left : len - off;
            int64_t k = st == CLIENT_GET_DATA ? get_data(g, p + off, n) : (int64_t)n;
            if (k < 0) return k;
            off += (size_t)k;
            g->left -= (uint64_t)k;
            if (g->left == 0) g->dec_state = CLIENT_GET_KEY;
            if ((size_t)k < n) break; /* paused */
            continue;
        }
        uint64_t v;
        bool done;
        int rc = get_varint(g, p + off, len - off, &v, &done);
        if (rc < 0) return -EPROTO;
        off += (size_t)rc;
        if (done && get_varint_done(g, v) < 0) return -EPROTO;
    }
    return (int64_t)off;
}

static int get_on_msg_end(struct client_call *c)
{
    struct client_get *g = get_of(c);
    /* A message must not end inside a field. */
    return g->dec_state == CLIENT_GET_KEY && g->tmp_len == 0 ? 0 : -EPROTO;
}

static void get_on_end(struct client_call *c)
{
    struct client_get *g = get_of(c);
    if (c->result.err != 0) return;
    uint8_t hash[CLIENT_HASH_SIZE];
    client_sha256_final(&g->sha, hash);
    const char *why = NULL;
    if (g->received != g->o.digest.size) {
        why = "server sent fewer bytes than the blob's size";
    } else if (g->o.zstd && !g->frame_done && g->o.digest.size > 0) {
        /* (The empty blob may come as no bytes at all: its hash is checked below.) */
        why = "zstd stream ended early";
    } else if (!g->o.skip_verify && memcmp(hash, g->o.digest.hash, CLIENT_HASH_SIZE) != 0) {
        why = "the bytes received do not hash to the digest";
    }
    if (!why) return;
    c->result.err = -EBADMSG;
    (void)snprintf(c->result.message, sizeof(c->result.message), "%s", why);
}

static const struct client_call_ops get_ops = {
    .on_msg_begin = get_on_msg_begin,
    .on_msg_data = get_on_msg_data,
    .on_msg_end = get_on_msg_end,
    .on_seg_done = NULL,
    .on_end = get_on_end,
};

/* ---- start and control ---- */

static int get_zstd_begin(struct client_get *g)
{
    if (!g->dctx) {
        ZSTD_customMem mem = proto_alloc_zstd(&g->call.cl->zstd_mem);
        g->dctx = ZSTD_createDCtx_advanced(mem);
        if (!g->dctx) return -ENOMEM;
    }
    if (!g->zout) {
        g->zout_size = ZSTD_DStreamOutSize();
        g->zout = malloc(g->zout_size);
        if (!g->zout) return -ENOMEM;
    }
    size_t r = ZSTD_DCtx_reset(g->dctx, ZSTD_reset_session_and_parameters);
    return ZSTD_isError(r) ? -ENOMEM : 0;
}

int client_get_start(struct client_get *g, struct client_conn *conn,
                     const struct client_get_options *o)
{
    ASSERT(!g->call.active);
    const char *why;
    if (client_resource_check_instance(o->instance, &why) < 0) return -EINVAL;
    int n = client_resource_read(g->name, sizeof(g->name), o->instance, &o->digest, o->zstd);
    if (n < 0 || (size_t)n > PROTO_RESOURCE_NAME_MAX) return -ENAMETOOLONG;
    g->o = *o;
    g->o.instance = NULL; /* borrowed: not kept past this call */
    if (o->zstd) {
        int rc = get_zstd_begin(g);
        if (rc < 0) return rc;
    }
    g->received = 0;
    g->dec_state = CLIENT_GET_KEY;
    g->tmp_len = 0;
    g->left = 0;
    g->frame_done = false;
    uint8_t scratch[CLIENT_HASH_SIZE];
    client_sha256_final(&g->sha, scratch); /* start the hash afresh */
    g->req_seg.piece.data = g->req;
    g->req_seg.piece.len = client_bytestream_read_request(g->req, g->name, (size_t)n, 0, 0);
    g->req_seg.tag = 0;
    int rc =
        client_call_start(&g->call, conn, "/google.bytestream.ByteStream/Read", &o->call, &get_ops);
    if (rc < 0) return rc;
    client_call_queue(&g->call, &g->req_seg);
    client_call_close_send(&g->call);
    return 0;
}

void client_get_close(struct client_get *g)
{
    client_call_cancel(&g->call);
}

void client_get_pause(struct client_get *g)
{
    client_call_pause(&g->call);
}

void client_get_resume(struct client_get *g)
{
    client_call_resume(&g->call);
}
