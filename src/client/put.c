/*
 * ByteStream.Write from a file (read through the ring) or memory, hashed as it is read,
 * compressed inline with zstd when asked, in bounded messages that go out as flow control
 * allows.
 *
 * Invariants:
 * - at most one read op is in flight, and chunks are queued in file order;
 * - a slot is free (reusable) exactly when none of its segs is queued or in a send;
 * - the finish_write message is queued only after the whole content's hash matched;
 * - no read starts once the call is over; the one in flight is cancelled with the call's
 *   owner and its buffer stays until its CQE (done waits for the owner).
 *
 * Sections: setup, the pipeline, the response, start.
 */
#include "client/put.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "base/err.h"
#include "client/internal.h"
#include "ring/core.h"

#define PUT_SLOTS_DEFAULT 3u

/* ---- setup ---- */

void client_put_options_default(struct client_put_options *o)
{
    memset(o, 0, sizeof(*o));
    o->instance = "";
    o->fd = -1;
}

int client_put_init(struct client_put *p, struct client *cl)
{
    memset(p, 0, sizeof(*p));
    client_call_init(&p->call, cl);
    return client_sha256_init(&p->sha);
}

void client_put_deinit(struct client_put *p)
{
    if (!p) return;
    client_call_deinit(&p->call);
    for (uint32_t i = 0; i < CLIENT_PUT_SLOTS_MAX; i++) {
        free(p->slots[i].raw);
        free(p->slots[i].z);
        p->slots[i].raw = NULL;
        p->slots[i].z = NULL;
    }
    client_sha256_deinit(&p->sha);
    ZSTD_freeCCtx(p->cctx);
    p->cctx = NULL;
}

static struct client_put *put_of(struct client_call *c)
{
    return BASE_CONTAINER_OF(c, struct client_put, call);
}

/* Makes sure every slot has the buffers this upload needs (grown, never shrunk). */
static int put_buffers(struct client_put *p, uint32_t chunk, bool need_raw, bool need_z)
{
    size_t z = need_z ? ZSTD_compressBound(chunk) + 1024 : 0;
    for (uint32_t i = 0; i < p->slot_count; i++) {
        struct client_put_slot *s = &p->slots[i];
        if (need_raw && (!s->raw || p->raw_size < chunk)) {
            uint8_t *m = realloc(s->raw, chunk);
            if (!m) return -ENOMEM;
            s->raw = m;
        }
        if (need_z && (!s->z || p->z_size < z)) {
            uint8_t *m = realloc(s->z, z);
            if (!m) return -ENOMEM;
            s->z = m;
        }
    }
    if (need_raw && p->raw_size < chunk) p->raw_size = chunk;
    if (need_z && p->z_size < z) p->z_size = z;
    return 0;
}

static int put_zstd_begin(struct client_put *p)
{
    if (!p->cctx) {
        ZSTD_customMem mem = proto_alloc_zstd(&p->call.cl->zstd_mem);
        p->cctx = ZSTD_createCCtx_advanced(mem);
        if (!p->cctx) return -ENOMEM;
    }
    ZSTD_CCtx *cctx = p->cctx;
    size_t r = ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
    int level = p->o.zstd_level ? p->o.zstd_level : ZSTD_CLEVEL_DEFAULT;
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    /* The frame header then names the content size, which servers may check. */
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setPledgedSrcSize(cctx, p->o.digest.size);
    return ZSTD_isError(r) ? -EINVAL : 0;
}

/* ---- the pipeline ---- */

static void put_pump(struct client_put *p);

/* Compresses <n> bytes at <in> into <s>->z; returns the compressed length or -errno. */
static int64_t put_compress(struct client_put *p, struct client_put_slot *s, const uint8_t *in,
                            size_t n, bool last)
{
    ZSTD_outBuffer out = { s->z, p->z_size, 0 };
    ZSTD_inBuffer src = { in, n, 0 };
    ZSTD_EndDirective mode = last ? ZSTD_e_end : ZSTD_e_flush;
    /* Bounded: the output has room for the worst case, so one call normally finishes. */
    for (int i = 0; i < 64; i++) {
        size_t r = ZSTD_compressStream2(p->cctx, &out, &src, mode);
        if (ZSTD_isError(r)) return -EIO;
        if (r == 0 && src.pos == src.size) return (int64_t)out.pos;
        if (out.pos == out.size) return -EOVERFLOW;
    }
    return -EOVERFLOW;
}

/* Queues the message of slot <s> with <len> data bytes at <data>. */
static void put_queue(struct client_put *p, struct client_put_slot *s, const uint8_t *data,
                      uint32_t len, bool last)
{
    uint32_t tag = (uint32_t)(s - p->slots);
    const char *name = p->first_queued ? NULL : p->name;
    uint8_t *hdr = name ? p->first_hdr : s->hdr;
    size_t hlen =
        client_bytestream_write_header(hdr, name, p->name_len, (int64_t)p->sent_off, last, len);
    p->first_queued = true;
    p->sent_off += len;
    p->free_slots--;
    p->next_slot = (p->next_slot + 1) % p->slot_count;
    s->segs_out = len > 0 ? 2 : 1;
    s->hdr_seg.piece.data = hdr;
    s->hdr_seg.piece.len = hlen;
    s->hdr_seg.tag = tag;
    client_call_queue(&p->call, &s->hdr_seg);
    if (len > 0) {
        s->data_seg.piece.data = data;
        s->data_seg.piece.len = len;
        s->data_seg.tag = tag;
        client_call_queue(&p->call, &s->data_seg);
    }
    if (last) {
        p->last_queued = true;
        client_call_close_send(&p->call);
    }
}

/* Hashes (and compresses) the <n> bytes at <in> just read into slot <s>, then queues them. */
static void put_chunk(struct client_put *p, struct client_put_slot *s, const uint8_t *in,
                      uint32_t n)
{
    bool rehash = !(p->o.trust_data && p->o.fd < 0);
    if (rehash) client_sha256_update(&p->sha, in, n);
    p->read_off += n;
    bool last = p->read_off == p->o.digest.size;
    if (last && rehash) {
        uint8_t hash[CLIENT_HASH_SIZE];
        client_sha256_final(&p->sha, hash);
        if (memcmp(hash, p->o.digest.hash, CLIENT_HASH_SIZE) != 0) {
            /* Nothing asked the server to commit yet: the reset leaves nothing behind. */
            client_call_fail(&p->call, -EILSEQ, "content changed since it was hashed");
            return;
        }
    }
    if (!p->o.zstd) {
        put_queue(p, s, in, n, last);
        return;
    }
    int64_t z = put_compress(p, s, in, n, last);
    if (z < 0) {
        client_call_fail(&p->call, (int)z, "zstd compression failed");
        return;
    }
    put_queue(p, s, s->z, (uint32_t)z, last);
}

static int put_read_submit(struct client_put *p, struct client_put_slot *s);

static void put_read_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)flags;
    struct client_put *p = op->ctx;
    struct client_put_slot *s = &p->slots[op->arg];
    p->reading = false;
    if (client_call_is_over(&p->call)) return;
    if (res < 0) {
        char msg[CLIENT_MESSAGE_MAX];
        (void)snprintf(msg, sizeof(msg), "reading the file: %s", base_err_str(res));
        client_call_fail(&p->call, res, msg);
        return;
    }
    if (res == 0) {
        client_call_fail(&p->call, -EILSEQ, "file got shorter since it was hashed");
        return;
    }
    s->got += (uint32_t)res;
    if (s->got < s->want) {
        int rc = put_read_submit(p, s); /* a short read: the rest of the chunk */
        if (rc < 0) client_call_fail(&p->call, rc, "no ring op left for a file read");
        return;
    }
    put_chunk(p, s, s->raw, s->want);
    put_pump(p);
}

static int put_read_submit(struct client_put *p, struct client_put_slot *s)
{
    struct client_call *c = &p->call;
    struct ring_op *op = ring_op_get(c->cl->core, &c->owner, put_read_done, p);
    if (!op) return -EAGAIN;
    op->arg = (uint64_t)(s - p->slots);
    /* A local file: no timeout (disk reads are not waits on a peer). */
    struct io_uring_sqe *sqe = ring_op_sqe(op, 0);
    io_uring_prep_read(sqe, p->o.fd, s->raw + s->got, s->want - s->got, p->read_off + s->got);
    ring_op_commit(op, sqe);
    p->reading = true;
    return 0;
}

/* Fills free slots while content is left: memory at once, a file one read at a time. */
static void put_pump(struct client_put *p)
{
    /* Bounded by the slots. */
    while (!client_call_is_over(&p->call) && !p->last_queued && !p->reading && p->free_slots > 0) {
        struct client_put_slot *s = &p->slots[p->next_slot];
        ASSERT(s->segs_out == 0);
        uint64_t left = p->o.digest.size - p->read_off;
        s->want = (uint32_t)(left < p->o.chunk_size ? left : p->o.chunk_size);
        s->got = 0;
        if (p->o.fd < 0 || s->want == 0) {
            put_chunk(p, s, p->o.data ? p->o.data + p->read_off : (const uint8_t *)"", s->want);
            continue;
        }
        int rc = put_read_submit(p, s);
        if (rc < 0) client_call_fail(&p->call, rc, "no ring op left for a file read");
    }
}

static void put_on_seg_done(struct client_call *c, struct client_seg *seg)
{
    struct client_put *p = put_of(c);
    struct client_put_slot *s = &p->slots[seg->tag];
    ASSERT(s->segs_out > 0);
    s->segs_out--;
    if (s->segs_out > 0) return;
    p->free_slots++;
    put_pump(p);
}

/* ---- the response ---- */

static int put_on_msg_begin(struct client_call *c, uint32_t len)
{
    struct client_put *p = put_of(c);
    if (p->got_response || len > sizeof(p->resp)) return -EPROTO;
    p->resp_len = 0;
    return 0;
}

static int64_t put_on_msg_data(struct client_call *c, const uint8_t *data, size_t len)
{
    struct client_put *p = put_of(c);
    ASSERT(p->resp_len + len <= sizeof(p->resp)); /* begin checked the message's length */
    memcpy(p->resp + p->resp_len, data, len);
    p->resp_len += (uint32_t)len;
    return (int64_t)len;
}

static int put_on_msg_end(struct client_call *c)
{
    struct client_put *p = put_of(c);
    p->got_response = true;
    return client_bytestream_write_response(p->resp, p->resp_len, &p->committed_size) < 0 ? -EPROTO
                                                                                          : 0;
}

static void put_on_end(struct client_call *c)
{
    struct client_put *p = put_of(c);
    if (c->result.err != 0) return;
    char msg[CLIENT_MESSAGE_MAX];
    if (!p->got_response) {
        c->result.err = -EPROTO;
        (void)snprintf(c->result.message, sizeof(c->result.message), "no WriteResponse");
        return;
    }
    /* A compressed upload reports compressed bytes, or -1 when the blob was there already. */
    bool ok = p->o.zstd ? p->committed_size >= -1 : p->committed_size == (int64_t)p->o.digest.size;
    if (!ok) {
        (void)snprintf(msg, sizeof(msg), "server committed %lld of %llu bytes",
                       (long long)p->committed_size, (unsigned long long)p->o.digest.size);
        c->result.err = -EPROTO;
        (void)snprintf(c->result.message, sizeof(c->result.message), "%s", msg);
    }
}

static const struct client_call_ops put_ops = {
    .on_msg_begin = put_on_msg_begin,
    .on_msg_data = put_on_msg_data,
    .on_msg_end = put_on_msg_end,
    .on_seg_done = put_on_seg_done,
    .on_end = put_on_end,
};

/* ---- start ---- */

static int put_prepare(struct client_put *p, const struct client_put_options *o)
{
    const char *why;
    if (client_resource_check_instance(o->instance, &why) < 0) return -EINVAL;
    if (o->fd < 0 && !o->data && o->digest.size > 0) return -EINVAL;
    if (o->digest.size > (uint64_t)INT64_MAX) return -EINVAL;
    p->o = *o;
    if (p->o.chunk_size == 0) p->o.chunk_size = CLIENT_PUT_CHUNK_DEFAULT;
    if (p->o.chunk_size < CLIENT_PUT_CHUNK_MIN || p->o.chunk_size > CLIENT_PUT_CHUNK_MAX) {
        return -EINVAL;
    }
    p->slot_count = p->o.slots ? p->o.slots : PUT_SLOTS_DEFAULT;
    if (p->slot_count > CLIENT_PUT_SLOTS_MAX) return -EINVAL;
    char uuid[CLIENT_UUID_SIZE];
    client_resource_uuid(uuid);
    int n = client_resource_write(p->name, sizeof(p->name), o->instance, uuid, &o->digest, o->zstd);
    if (n < 0 || (size_t)n > PROTO_RESOURCE_NAME_MAX) return -ENAMETOOLONG;
    p->name_len = (size_t)n;
    int rc = put_buffers(p, p->o.chunk_size, p->o.fd >= 0, p->o.zstd);
    if (rc == 0 && p->o.zstd) rc = put_zstd_begin(p);
    return rc;
}

int client_put_start(struct client_put *p, struct client_conn *conn,
                     const struct client_put_options *o)
{
    ASSERT(!p->call.active);
    int rc = put_prepare(p, o);
    if (rc < 0) return rc;
    p->o.instance = NULL; /* borrowed: not kept past this call */
    p->next_slot = 0;
    p->free_slots = p->slot_count;
    for (uint32_t i = 0; i < p->slot_count; i++) {
        p->slots[i].segs_out = 0;
    }
    p->reading = false;
    p->last_queued = false;
    p->first_queued = false;
    p->got_response = false;
    p->read_off = 0;
    p->sent_off = 0;
    p->resp_len = 0;
    p->committed_size = 0;
    /* Start the hash afresh (a previous upload may have stopped halfway). */
    uint8_t scratch[CLIENT_HASH_SIZE];
    client_sha256_final(&p->sha, scratch);
    rc = client_call_start(&p->call, conn, "/google.bytestream.ByteStream/Write", &o->call,
                           &put_ops);
    if (rc < 0) return rc;
    put_pump(p);
    return 0;
}
