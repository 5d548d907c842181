/*
 * Chunk encoding. Every stored chunk is a complete zstd frame, so the stored bytes of a blob
 * are already a valid zstd stream: compressed reads hand them out as they are. Chunks zstd
 * cannot shrink are stored as frames of raw blocks (RFC 8878 §3.1.1.2: Block_Type 0), which
 * cost 3 bytes per 128 KiB plus a 13-byte frame header and decode at memcpy speed.
 */
#include "blob/chunk.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A size prefix lets the free hook know how much to subtract. */
#define MEM_PREFIX 16U
/*
 * zstd -1 spends as long failing on a random 128 KiB block as SHA-256 takes to hash it. A
 * chunk.s first SAMPLE_BYTES are compressed first (and the frame goes on from there, so a
 * compressible chunk pays nothing extra); when they do not shrink by SAMPLE_GAIN_MIN the
 * chunk is stored raw without compressing the rest (perf/RESULTS.md).
 */
#define SAMPLE_BYTES    ((size_t)16 * 1024)
#define SAMPLE_GAIN_MIN (SAMPLE_BYTES / 32U)

static void *mem_alloc(void *opaque, size_t size)
{
    uint8_t *p = malloc(size + MEM_PREFIX);
    if (!p) return NULL;
    memcpy(p, &size, sizeof(size));
    base_counter_add(opaque, size);
    return p + MEM_PREFIX;
}

static void mem_free(void *opaque, void *addr)
{
    if (!addr) return;
    uint8_t *p = (uint8_t *)addr - MEM_PREFIX;
    size_t size;
    memcpy(&size, p, sizeof(size));
    base_counter_add(opaque, (uint64_t)0 - size);
    free(p);
}

ZSTD_customMem blob_chunk_zstd_mem(struct base_counter *gauge)
{
    ZSTD_customMem m = { mem_alloc, mem_free, gauge };
    return m;
}

static void *budget_alloc(void *opaque, size_t size)
{
    struct blob_zstd_budget *b = opaque;
    uint64_t used = base_counter_get(b->gauge);
    if (size > b->limit || used > b->limit - size) {
        base_counter_inc(b->refused);
        return NULL;
    }
    return mem_alloc(b->gauge, size);
}

static void budget_free(void *opaque, void *addr)
{
    struct blob_zstd_budget *b = opaque;
    mem_free(b->gauge, addr);
}

ZSTD_customMem blob_chunk_zstd_budget_mem(struct blob_zstd_budget *b)
{
    ZSTD_customMem m = { budget_alloc, budget_free, b };
    return m;
}

int blob_chunk_ctx_init(struct blob_chunk_ctx *z, int level, struct base_counter *gauge)
{
    memset(z, 0, sizeof(*z));
    z->mem_bytes = gauge;
    z->mem = blob_chunk_zstd_mem(gauge);
    z->cctx = ZSTD_createCCtx_advanced(z->mem);
    z->dctx = ZSTD_createDCtx_advanced(z->mem);
    if (!z->cctx || !z->dctx) goto err_free;
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level))) {
        goto err_free;
    }
    /* The content size lets any decoder size its output; xxh3 in the record replaces the
     * frame checksum. */
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_contentSizeFlag, 1))) goto err_free;
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, 0))) goto err_free;
    /* The input and the output stay in place for the whole frame (blob_chunk_encode): zstd
     * reads the chunk where it is and writes straight into the record, no internal copies. */
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_stableInBuffer, 1))) goto err_free;
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_stableOutBuffer, 1))) goto err_free;
    return 0;

err_free:
    blob_chunk_ctx_deinit(z);
    return -ENOMEM;
}

void blob_chunk_ctx_deinit(struct blob_chunk_ctx *z)
{
    ZSTD_freeCCtx(z->cctx);
    ZSTD_freeDCtx(z->dctx);
    z->cctx = NULL;
    z->dctx = NULL;
}

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

uint32_t blob_chunk_raw_frame(const void *raw, uint32_t n, uint8_t *dst)
{
    ASSERT(n > 0);
    const uint8_t *src = raw;
    put_le(dst, ZSTD_MAGICNUMBER, 4);
    /* Frame_Header_Descriptor: FCS_Flag 3 (8 bytes), Single_Segment_Flag 1, no checksum,
     * no dictionary (RFC 8878 §3.1.1.1.1). */
    dst[4] = 0xE0;
    put_le(dst + 5, n, 8);
    uint32_t out = BLOB_RAW_FRAME_HEADER;
    uint32_t done = 0;
    /* Bounded: one block per 128 KiB of input. */
    while (done < n) {
        uint32_t b = n - done < BLOB_ZSTD_BLOCK_MAX ? n - done : BLOB_ZSTD_BLOCK_MAX;
        uint32_t last = done + b == n ? 1U : 0U;
        put_le(dst + out, (uint64_t)(b << 3) | last, 3); /* Block_Type 0: raw */
        memcpy(dst + out + 3, src + done, b);
        out += 3 + b;
        done += b;
    }
    uint32_t want = blob_chunk_raw_frame_size(n);
    ASSERT(out == want);
    return out;
}

static uint64_t get_le(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

int64_t blob_chunk_raw_span(const struct blob_record_header *h, const uint8_t *payload, uint32_t at,
                            const uint8_t **data)
{
    ASSERT(h->enc == BLOB_CHUNK_RAW);
    ASSERT(at < h->raw_len);
    uint32_t len = h->payload_len;
    /* Disk bytes: checked, never asserted (their checksum only says they are what was
     * written, not who wrote them). */
    if (len < BLOB_RAW_FRAME_HEADER || get_le(payload, 4) != ZSTD_MAGICNUMBER ||
        payload[4] != 0xE0 || get_le(payload + 5, 8) != h->raw_len) {
        return -EBADMSG;
    }
    uint32_t pos = BLOB_RAW_FRAME_HEADER;
    uint32_t done = 0;
    /* Bounded: each block holds at least one byte and the payload is finite. */
    while (pos + 3 <= len) {
        uint32_t bh = (uint32_t)get_le(payload + pos, 3);
        uint32_t size = bh >> 3;
        bool last = (bh & 1) != 0;
        if (((bh >> 1) & 3) != 0 || size == 0 || size > BLOB_ZSTD_BLOCK_MAX ||
            size > len - pos - 3 || size > h->raw_len - done) {
            return -EBADMSG;
        }
        if (at < done + size) {
            *data = payload + pos + 3 + (at - done);
            return (int64_t)(done + size - at);
        }
        done += size;
        pos += 3 + size;
        if (last) break;
    }
    return -EBADMSG;
}

/*
 * Compresses <n> bytes at <raw> into <dst> (room for <cap>) as one frame, sample first.
 * Returns the frame's length, or 0 when the sample or the whole does not shrink (the context
 * is then reset for the next frame).
 */
static size_t compress_sampled(struct blob_chunk_ctx *z,
                               uint8_t *dst, /* NOLINT(readability-non-const-parameter): zstd */
                               size_t cap, const void *raw, uint32_t n)
{
    ZSTD_CCtx *c = z->cctx;
    ZSTD_outBuffer out = { dst, cap, 0 };
    ZSTD_inBuffer in = { raw, n <= SAMPLE_BYTES ? n : SAMPLE_BYTES, 0 };
    size_t rc = ZSTD_CCtx_setPledgedSrcSize(c, n);
    bool pledged = !ZSTD_isError(rc);
    ASSERT(pledged); /* a finished or reset frame */
    if (n > SAMPLE_BYTES) {
        rc = ZSTD_compressStream2(c, &out, &in, ZSTD_e_flush);
        if (ZSTD_isError(rc) || rc != 0 || out.pos + SAMPLE_GAIN_MIN > SAMPLE_BYTES) goto err_reset;
        in.size = n; /* stableInBuffer lets the same input grow */
    }
    rc = ZSTD_compressStream2(c, &out, &in, ZSTD_e_end);
    if (ZSTD_isError(rc) || rc != 0) goto err_reset; /* the output filled up: it does not shrink */
    return out.pos;

err_reset:
    rc = ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
    bool reset = !ZSTD_isError(rc);
    ASSERT(reset);
    return 0;
}

uint32_t blob_chunk_encode(struct blob_chunk_ctx *z, const void *raw, uint32_t n, uint8_t *dst)
{
    ASSERT(n > 0);
    struct blob_record_header *h = (struct blob_record_header *)(void *)dst;
    uint8_t *payload = dst + sizeof(*h);
    uint32_t raw_frame = blob_chunk_raw_frame_size(n);
    /* A frame as large as the raw frame gains nothing: cap the output so zstd gives up
     * early on incompressible data (dstSize_tooSmall) and store raw. */
    size_t c = compress_sampled(z, payload, raw_frame - 1, raw, n);
    uint32_t len;
    uint8_t enc;
    /* A zstd frame no smaller than the data itself is zstd's own raw blocks (a shorter
     * content-size field makes it a few bytes smaller than ours): store our raw frame, whose
     * blocks identity reads hand out in place (blob_chunk_raw_span) instead of decoding. */
    if (c == 0 || c >= n) {
        len = blob_chunk_raw_frame(raw, n, payload);
        enc = BLOB_CHUNK_RAW;
    } else {
        len = (uint32_t)c;
        enc = BLOB_CHUNK_ZSTD;
    }
    blob_format_record_header(h, BLOB_RECORD_CHUNK, enc, payload, len, n);
    return (uint32_t)sizeof(*h) + len;
}

int blob_chunk_decode(struct blob_chunk_ctx *z, const struct blob_record_header *h,
                      const uint8_t *payload, uint8_t *out, size_t out_size)
{
    ASSERT(h->type == BLOB_RECORD_CHUNK);
    if (h->raw_len > out_size) return -EBADMSG;
    size_t n = ZSTD_decompressDCtx(z->dctx, out, h->raw_len, payload, h->payload_len);
    if (ZSTD_isError(n) || n != h->raw_len) return -EBADMSG;
    return 0;
}
