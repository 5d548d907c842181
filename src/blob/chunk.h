/*
 * One chunk: compress a logical chunk into a chunk record (a complete zstd frame, or a frame
 * of raw blocks when zstd does not shrink it), and check and decode one read back.
 *
 * A per-core struct blob_chunk_ctx holds the zstd contexts. Their memory comes from a
 * counting allocator (ZSTD_customMem) so the bytes they hold show in a gauge.
 */
#ifndef RINGCAS_BLOB_CHUNK_H
#define RINGCAS_BLOB_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include <zstd.h>

#include "base/assert.h"
#include "base/counter.h"
#include "blob/format.h"

/* The largest raw block zstd allows (RFC 8878 §3.1.1.2.3: Block_Maximum_Size). */
#define BLOB_ZSTD_BLOCK_MAX (128U * 1024U)
/* Frame header of a raw frame: magic, descriptor, 8-byte content size. */
#define BLOB_RAW_FRAME_HEADER 13U

struct blob_chunk_ctx {
    ZSTD_CCtx *cctx;                /* compression, level fixed at init */
    ZSTD_DCtx *dctx;                /* one-shot decompression of stored frames */
    struct base_counter *mem_bytes; /* gauge of zstd memory (owner's counter) */
    ZSTD_customMem mem;             /* counting allocator bound to mem_bytes */
};

/* A counting ZSTD_customMem that adds to <gauge> (the single writer is the caller's thread). */
ZSTD_customMem blob_chunk_zstd_mem(struct base_counter *gauge);

/* A counting allocator that refuses what would take <gauge> past <limit>. */
struct blob_zstd_budget {
    struct base_counter *gauge;   /* counted here, with the other contexts of its owner */
    struct base_counter *refused; /* allocations refused over <limit> */
    uint64_t limit;               /* bytes <gauge> may reach */
};

/* A ZSTD_customMem over <b> (which must outlive the contexts made with it). */
ZSTD_customMem blob_chunk_zstd_budget_mem(struct blob_zstd_budget *b);

/* Creates the contexts at <level>. Returns 0 or -ENOMEM. */
MUST_CHECK int blob_chunk_ctx_init(struct blob_chunk_ctx *z, int level, struct base_counter *gauge);

/* Frees the contexts; the gauge goes back down. */
void blob_chunk_ctx_deinit(struct blob_chunk_ctx *z);

/* Bytes of a raw frame holding <n> > 0 bytes. */
static inline uint32_t blob_chunk_raw_frame_size(uint32_t n)
{
    return BLOB_RAW_FRAME_HEADER + 3U * ((n + BLOB_ZSTD_BLOCK_MAX - 1) / BLOB_ZSTD_BLOCK_MAX) + n;
}

/* The most bytes blob_chunk_encode writes for <n> raw bytes (header + payload, unpadded). */
static inline uint32_t blob_chunk_record_bound(uint32_t n)
{
    return (uint32_t)sizeof(struct blob_record_header) + blob_chunk_raw_frame_size(n);
}

/* Writes <raw> (<n> > 0 bytes) as a frame of raw blocks at <dst>; returns its length. */
uint32_t blob_chunk_raw_frame(const void *raw, uint32_t n, uint8_t *dst);

/*
 * Encodes <raw> (<n> bytes, 0 < n) as a chunk record at <dst> (room for
 * blob_chunk_record_bound(n) bytes): the header, then a zstd frame, or a raw frame when
 * compression does not make it smaller. Returns the record's length without padding.
 */
uint32_t blob_chunk_encode(struct blob_chunk_ctx *z, const void *raw, uint32_t n, uint8_t *dst);

/*
 * Finds byte <at> (< h->raw_len) of a chunk stored as a raw-block frame (h->enc ==
 * BLOB_CHUNK_RAW, checksums passed) without copying: checks the frame's structure (magic,
 * descriptor, content size, raw blocks that add up to raw_len within the payload), sets
 * *<data> to that byte inside <payload> and returns how many bytes follow it in its block
 * (> 0). Returns -EBADMSG when the frame is not the layout blob_chunk_raw_frame writes.
 */
MUST_CHECK int64_t blob_chunk_raw_span(const struct blob_record_header *h, const uint8_t *payload,
                                       uint32_t at, const uint8_t **data);

/*
 * Decodes a chunk record whose header and payload checksums passed: writes h->raw_len bytes
 * to <out> (room for <out_size>). Returns 0, or -EBADMSG when the frame does not decode to
 * exactly raw_len bytes.
 */
MUST_CHECK int blob_chunk_decode(struct blob_chunk_ctx *z, const struct blob_record_header *h,
                                 const uint8_t *payload, uint8_t *out, size_t out_size);

#endif /* RINGCAS_BLOB_CHUNK_H */
