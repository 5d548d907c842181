/*
 * Chunk records: compressible chunks become zstd frames, incompressible ones raw-block
 * frames, both decode with any zstd decoder, sizes around the 128 KiB block limit work, and
 * the counting allocator returns to zero.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <zstd.h>

#include "blob/chunk.h"
#include "harness.h"

static struct base_counter mem;

static void encode_decode(struct blob_chunk_ctx *z, uint32_t n, bool compressible, uint8_t want)
{
    uint8_t *raw = malloc(n);
    th_fill(raw, n, n, compressible);
    uint8_t *rec = malloc(blob_chunk_record_bound(n));
    uint32_t len = blob_chunk_encode(z, raw, n, rec);
    cr_assert(le(u32, len, blob_chunk_record_bound(n)));
    const struct blob_record_header *h = (const void *)rec;
    cr_assert(eq(int, blob_format_check_record_header(h, len - sizeof(*h)), 0));
    cr_assert(eq(int, blob_format_check_payload(h, rec + sizeof(*h)), 0));
    /* Incompressible data comes out of zstd as its own raw blocks, a few bytes shorter than
     * our raw frame (a shorter content-size field): our raw frame is stored all the same, so
     * reads can hand its blocks out in place. */
    cr_assert(eq(u8, h->enc, want), "size %u compressible %d", n, compressible);
    cr_assert(le(u32, h->payload_len, blob_chunk_raw_frame_size(n)));
    cr_assert(eq(u32, h->raw_len, n));
    cr_assert(eq(u32, h->payload_len, len - sizeof(*h)));
    /* Our decoder. */
    uint8_t *out = malloc(n);
    cr_assert(eq(int, blob_chunk_decode(z, h, rec + sizeof(*h), out, n), 0));
    cr_assert(memcmp(out, raw, n) == 0);
    /* Any zstd decoder: the payload is a complete frame with its content size. */
    memset(out, 0, n);
    cr_assert(eq(u64, ZSTD_getFrameContentSize(rec + sizeof(*h), h->payload_len), n));
    size_t d = ZSTD_decompress(out, n, rec + sizeof(*h), h->payload_len);
    cr_assert(eq(sz, d, n));
    cr_assert(memcmp(out, raw, n) == 0);
    free(out);
    free(rec);
    free(raw);
}

Test(blob_chunk, compressible_chunks_are_zstd_frames_random_ones_raw_frames)
{
    struct blob_chunk_ctx z;
    cr_assert(eq(int, blob_chunk_ctx_init(&z, 1, &mem), 0));
    cr_assert(gt(u64, base_counter_get(&mem), 0), "the contexts' memory is counted");
    uint32_t sizes[] = { 1, 100, 4096, 131071, 131072, 131073, 262144, 1048576 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        encode_decode(&z, sizes[i], false, BLOB_CHUNK_RAW);
        if (sizes[i] >= 100) encode_decode(&z, sizes[i], true, BLOB_CHUNK_ZSTD);
    }
    blob_chunk_ctx_deinit(&z);
    cr_assert(eq(u64, base_counter_get(&mem), 0), "every zstd byte was given back");
}

Test(blob_chunk, raw_frames_have_the_documented_size)
{
    uint32_t sizes[] = { 1, 131072, 131073, 262144 };
    uint32_t want[] = { 13 + 3 + 1, 13 + 3 + 131072, 13 + 6 + 131073, 13 + 6 + 262144 };
    for (size_t i = 0; i < 4; i++) {
        uint8_t *raw = calloc(1, sizes[i]);
        uint8_t *dst = malloc(blob_chunk_raw_frame_size(sizes[i]));
        cr_assert(eq(u32, blob_chunk_raw_frame_size(sizes[i]), want[i]));
        cr_assert(eq(u32, blob_chunk_raw_frame(raw, sizes[i], dst), want[i]));
        cr_assert(eq(u64, ZSTD_findFrameCompressedSize(dst, want[i]), want[i]));
        free(raw);
        free(dst);
    }
}

Test(blob_chunk, decode_refuses_a_frame_of_the_wrong_length)
{
    struct blob_chunk_ctx z;
    cr_assert(eq(int, blob_chunk_ctx_init(&z, 1, &mem), 0));
    static uint8_t raw[5000];
    th_fill(raw, sizeof(raw), 1, true);
    static uint8_t rec[6000];
    uint32_t len = blob_chunk_encode(&z, raw, sizeof(raw), rec);
    struct blob_record_header h;
    memcpy(&h, rec, sizeof(h));
    static uint8_t out[6000];
    h.raw_len = 4999;
    cr_assert(eq(int, blob_chunk_decode(&z, &h, rec + sizeof(h), out, sizeof(out)), -EBADMSG));
    h.raw_len = 5001;
    cr_assert(eq(int, blob_chunk_decode(&z, &h, rec + sizeof(h), out, sizeof(out)), -EBADMSG));
    h.raw_len = 5000;
    cr_assert(eq(int, blob_chunk_decode(&z, &h, rec + sizeof(h), out, 10), -EBADMSG), "no room");
    /* A garbled frame with a valid header and checksum (as if written wrong) fails too. */
    rec[sizeof(h) + 6] ^= 0xff;
    cr_assert(eq(int, blob_chunk_decode(&z, &h, rec + sizeof(h), out, sizeof(out)), -EBADMSG));
    (void)len;
    blob_chunk_ctx_deinit(&z);
}

Test(blob_chunk, levels_change_the_size_not_the_bytes)
{
    struct blob_chunk_ctx fast;
    struct blob_chunk_ctx slow;
    cr_assert(eq(int, blob_chunk_ctx_init(&fast, 1, &mem), 0));
    cr_assert(eq(int, blob_chunk_ctx_init(&slow, 9, &mem), 0));
    uint32_t n = 65536;
    uint8_t *raw = malloc(n);
    th_fill(raw, n, 3, true);
    uint8_t *a = malloc(blob_chunk_record_bound(n));
    uint8_t *b = malloc(blob_chunk_record_bound(n));
    uint32_t la = blob_chunk_encode(&fast, raw, n, a);
    uint32_t lb = blob_chunk_encode(&slow, raw, n, b);
    cr_assert(le(u32, lb, la));
    uint8_t *out = malloc(n);
    const struct blob_record_header *h = (const void *)b;
    cr_assert(eq(int, blob_chunk_decode(&fast, h, b + sizeof(*h), out, n), 0));
    cr_assert(memcmp(out, raw, n) == 0);
    free(out);
    free(a);
    free(b);
    free(raw);
    blob_chunk_ctx_deinit(&fast);
    blob_chunk_ctx_deinit(&slow);
    cr_assert(eq(u64, base_counter_get(&mem), 0));
}

Test(blob_chunk, counting_allocator_counts_up_and_down)
{
    struct base_counter g = { 0 };
    ZSTD_customMem m = blob_chunk_zstd_mem(&g);
    void *p = m.customAlloc(m.opaque, 1000);
    cr_assert(ne(ptr, p, NULL));
    cr_assert(eq(u64, base_counter_get(&g), 1000));
    void *q = m.customAlloc(m.opaque, 24);
    cr_assert(eq(u64, base_counter_get(&g), 1024));
    m.customFree(m.opaque, p);
    m.customFree(m.opaque, q);
    m.customFree(m.opaque, NULL);
    cr_assert(eq(u64, base_counter_get(&g), 0));
}

Test(blob_chunk, a_damaged_raw_frame_does_not_decode)
{
    struct blob_chunk_ctx z;
    cr_assert(eq(int, blob_chunk_ctx_init(&z, 1, &mem), 0));
    static uint8_t raw[200000];
    th_fill(raw, sizeof(raw), 5, false);
    static uint8_t rec[200100];
    uint32_t len = blob_chunk_encode(&z, raw, sizeof(raw), rec);
    struct blob_record_header h;
    memcpy(&h, rec, sizeof(h));
    static uint8_t out[200000];
    cr_assert(eq(int, blob_chunk_decode(&z, &h, rec + sizeof(h), out, sizeof(out)), 0));
    /* The second raw block's header claims a wrong size: the frame no longer adds up. */
    uint8_t *block2 = rec + sizeof(h) + BLOB_RAW_FRAME_HEADER + 3 + BLOB_ZSTD_BLOCK_MAX;
    if (h.enc == BLOB_CHUNK_RAW) {
        block2[1] ^= 0x10;
        cr_assert(eq(int, blob_chunk_decode(&z, &h, rec + sizeof(h), out, sizeof(out)), -EBADMSG));
    }
    /* A frame cut short does not decode either. */
    h.payload_len = len - (uint32_t)sizeof(h) - 10;
    cr_assert(eq(int, blob_chunk_decode(&z, &h, rec + sizeof(h), out, sizeof(out)), -EBADMSG));
    blob_chunk_ctx_deinit(&z);
}

Test(blob_chunk, fast_negative_levels_work_too)
{
    struct blob_chunk_ctx z;
    cr_assert(eq(int, blob_chunk_ctx_init(&z, -5, &mem), 0));
    encode_decode(&z, 65536, true, BLOB_CHUNK_ZSTD);
    encode_decode(&z, 65536, false, BLOB_CHUNK_RAW);
    blob_chunk_ctx_deinit(&z);
    cr_assert(eq(u64, base_counter_get(&mem), 0));
}

Test(blob_chunk, raw_spans_point_into_the_frame_at_every_block)
{
    uint32_t n = 3 * BLOB_ZSTD_BLOCK_MAX + 1000; /* four blocks, the last one short */
    uint8_t *raw = malloc(n);
    th_fill(raw, n, 77, false);
    uint8_t *rec = malloc(blob_chunk_record_bound(n));
    struct blob_record_header *h = (void *)rec;
    uint32_t len = (uint32_t)sizeof(*h) + blob_chunk_raw_frame(raw, n, rec + sizeof(*h));
    blob_format_record_header(h, BLOB_RECORD_CHUNK, BLOB_CHUNK_RAW, rec + sizeof(*h),
                              len - sizeof(*h), n);
    const uint8_t *payload = rec + sizeof(*h);
    uint32_t ats[] = {
        0, 1, BLOB_ZSTD_BLOCK_MAX - 1, BLOB_ZSTD_BLOCK_MAX, 2 * BLOB_ZSTD_BLOCK_MAX + 5, n - 1
    };
    for (size_t i = 0; i < sizeof(ats) / sizeof(ats[0]); i++) {
        const uint8_t *p = NULL;
        int64_t span = blob_chunk_raw_span(h, payload, ats[i], &p);
        uint32_t block_end = (ats[i] / BLOB_ZSTD_BLOCK_MAX + 1) * BLOB_ZSTD_BLOCK_MAX;
        if (block_end > n) block_end = n;
        cr_assert(eq(i64, span, block_end - ats[i]), "at %u", ats[i]);
        cr_assert(p > payload && p + span <= payload + h->payload_len, "inside the frame");
        cr_assert(memcmp(p, raw + ats[i], (size_t)span) == 0, "the bytes at %u", ats[i]);
    }
    /* Walking span by span gives the chunk back exactly. */
    uint32_t at = 0;
    int pieces = 0;
    while (at < n) {
        const uint8_t *p;
        int64_t span = blob_chunk_raw_span(h, payload, at, &p);
        cr_assert(gt(i64, span, 0));
        cr_assert(memcmp(p, raw + at, (size_t)span) == 0);
        at += (uint32_t)span;
        pieces++;
    }
    cr_assert(eq(int, pieces, 4));
    free(raw);
    free(rec);
}

Test(blob_chunk, raw_spans_refuse_frames_they_did_not_write)
{
    uint32_t n = BLOB_ZSTD_BLOCK_MAX + 10;
    uint8_t *raw = malloc(n);
    th_fill(raw, n, 78, false);
    uint32_t plen = blob_chunk_raw_frame_size(n);
    uint8_t *good = malloc(plen);
    cr_assert(eq(u32, blob_chunk_raw_frame(raw, n, good), plen));
    uint8_t *bad = malloc(plen);
    struct blob_record_header h = { .type = BLOB_RECORD_CHUNK, .enc = BLOB_CHUNK_RAW };
    h.raw_len = n;
    h.payload_len = plen;
    const uint8_t *p;
    /* Each damage: bad magic, another descriptor, another content size, a compressed block
     * type, a first block that claims more than the payload holds, a payload cut short. */
    uint32_t offs[] = { 0, 4, 5, BLOB_RAW_FRAME_HEADER, BLOB_RAW_FRAME_HEADER + 2 };
    uint8_t xors[] = { 1, 1, 1, 2, 0x80 };
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        memcpy(bad, good, plen);
        bad[offs[i]] ^= xors[i];
        cr_assert(eq(i64, blob_chunk_raw_span(&h, bad, n - 1, &p), -EBADMSG), "damage %zu", i);
    }
    h.payload_len = plen - 1; /* the last block runs past the payload */
    cr_assert(eq(i64, blob_chunk_raw_span(&h, good, n - 1, &p), -EBADMSG));
    h.payload_len = plen;
    h.raw_len = n + 1; /* the blocks end before raw_len */
    cr_assert(eq(i64, blob_chunk_raw_span(&h, good, n, &p), -EBADMSG));
    h.raw_len = n;
    cr_assert(eq(i64, blob_chunk_raw_span(&h, good, n - 1, &p), 1), "and the frame itself is fine");
    free(raw);
    free(good);
    free(bad);
}

Test(blob_chunk, the_first_32_kib_decide_whether_a_chunk_is_compressed)
{
    struct blob_chunk_ctx z;
    cr_assert(eq(int, blob_chunk_ctx_init(&z, 1, &mem), 0));
    uint32_t n = 256 << 10;
    uint8_t *raw = malloc(n);
    uint8_t *rec = malloc(blob_chunk_record_bound(n));
    uint8_t *out = malloc(n);
    const struct blob_record_header *h = (const void *)rec;
    /* A random start, then text: the sample says no, and the rest is never tried. */
    th_fill(raw, 32 << 10, 1, false);
    th_fill(raw + (32 << 10), n - (32 << 10), 2, true);
    blob_chunk_encode(&z, raw, n, rec);
    cr_assert(eq(u8, h->enc, BLOB_CHUNK_RAW));
    /* Text, then random: the sample says yes and the frame goes on; it shrinks. */
    th_fill(raw, 64 << 10, 3, true);
    th_fill(raw + (64 << 10), n - (64 << 10), 4, false);
    uint32_t len = blob_chunk_encode(&z, raw, n, rec);
    cr_assert(eq(u8, h->enc, BLOB_CHUNK_ZSTD));
    cr_assert(lt(u32, len, n - (32 << 10)));
    cr_assert(eq(int, blob_chunk_decode(&z, h, rec + sizeof(*h), out, n), 0));
    cr_assert(memcmp(out, raw, n) == 0);
    /* Random bytes throughout: stored raw, and the context is ready for the next chunk. */
    th_fill(raw, n, 5, false);
    blob_chunk_encode(&z, raw, n, rec);
    cr_assert(eq(u8, h->enc, BLOB_CHUNK_RAW));
    th_fill(raw, n, 7, true);
    len = blob_chunk_encode(&z, raw, n, rec);
    cr_assert(eq(u8, h->enc, BLOB_CHUNK_ZSTD));
    cr_assert(eq(u64, ZSTD_getFrameContentSize(rec + sizeof(*h), h->payload_len), n));
    cr_assert(eq(sz, ZSTD_decompress(out, n, rec + sizeof(*h), len - sizeof(*h)), n));
    cr_assert(memcmp(out, raw, n) == 0);
    free(raw);
    free(rec);
    free(out);
    blob_chunk_ctx_deinit(&z);
}
