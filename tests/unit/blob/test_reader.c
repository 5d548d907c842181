/*
 * Readers and integrity: a flipped byte in a chunk or a commit record is detected, never
 * served; the blob is dropped from the index, reported missing, and a counter moves.
 * Compressed reads hand out the stored frames byte for byte (zero recompression). A chunk in
 * a segment lost from inside a blob's span is corruption too; one gone with the span's oldest
 * segment is an eviction.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <zstd.h>

#include "blob/format.h"
#include "blob/internal.h"
#include "harness.h"

static const char *first_segment = "seg-0000000000000001.rcs";

static void put_one(struct th *t, uint8_t *buf, size_t len, uint64_t seed, bool comp,
                    struct blob_key *k)
{
    th_fill(buf, len, seed, comp);
    th_key_of(k, buf, len);
    cr_assert(eq(int, th_put(t, k, buf, len, 0, 0), 0));
}

Test(blob_reader, a_corrupt_chunk_is_never_served_and_the_blob_is_dropped)
{
    for (int enc = 0; enc <= 1; enc++) {
        struct th t = { 0 };
        th_open_sim(&t, 10 + (uint64_t)enc);
        static uint8_t buf[10000];
        struct blob_key k;
        put_one(&t, buf, sizeof(buf), 1, true, &k);
        /* The first chunk record starts right after the header block. */
        cr_assert(eq(int, blob_io_sim_corrupt(t.io, first_segment, 4096 + 40, 0x20), 0));
        uint8_t *out = NULL;
        size_t n = 0;
        cr_assert(eq(int, th_get(&t, &k, 0, enc, &out, &n), -EBADMSG));
        cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
        cr_assert(not(blob_exists(t.bc, &k, false)), "dropped from the index");
        struct blob_store_stats st;
        blob_store_stats(t.s, &st);
        cr_assert(eq(u64, st.dropped_corrupt, 1));
        cr_assert(eq(int, th_get(&t, &k, 0, enc, &out, &n), -ENOENT));
        /* It can be uploaded again. */
        cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 0, 0), 0));
        cr_assert(eq(int, th_get(&t, &k, 0, enc, &out, &n), 0));
        cr_assert(memcmp(out, buf, n) == 0);
        free(out);
        th_close(&t);
    }
}

/*
 * A misdirected write: two chunk records of one blob, each valid with its own checksums, trade
 * places in the segment file. No record names its blob or position: only the commit's refs,
 * with the payload_sum each record must have, tell. The blob is corrupt (dropped, a counter
 * moves), never served with its chunks in the wrong order, in either encoding.
 */
Test(blob_reader, swapped_chunk_records_of_one_blob_are_never_served)
{
    for (int enc = 0; enc <= 1; enc++) {
        struct th t = { 0 };
        th_open_sim(&t, 30 + (uint64_t)enc);
        static uint8_t buf[4 * 4096];
        struct blob_key k;
        /* Incompressible: every chunk is stored raw, so the four records are equally long. */
        put_one(&t, buf, sizeof(buf), 7, false, &k);
        th_close_store(&t);
        struct th_record rec[8];
        cr_assert(eq(u32, th_chunk_records(&t, 1, rec, 8), 4));
        th_swap_records(&t, 1, &rec[1], &rec[2]);
        cr_assert(eq(int, th_open_store(&t), 0));
        cr_assert(blob_exists(t.bc, &k, false), "every record is valid: recovery indexes it");
        uint8_t *out = NULL;
        size_t n = 0;
        cr_assert(eq(int, th_get(&t, &k, 0, enc, &out, &n), -EBADMSG), "encoding %d", enc);
        cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
        cr_assert(not(blob_exists(t.bc, &k, false)), "dropped from the index");
        cr_assert(eq(int, th_get(&t, &k, 2 * 4096 + 5, enc, &out, &n), -ENOENT));
        th_close(&t);
    }
}

/* The same from the middle of the blob: a read that starts in a swapped chunk. */
Test(blob_reader, a_read_from_inside_a_swapped_chunk_is_refused)
{
    struct th t = { 0 };
    th_open_sim(&t, 32);
    static uint8_t buf[4 * 4096];
    struct blob_key k;
    put_one(&t, buf, sizeof(buf), 8, false, &k);
    th_close_store(&t);
    struct th_record rec[8];
    cr_assert(eq(u32, th_chunk_records(&t, 1, rec, 8), 4));
    th_swap_records(&t, 1, &rec[0], &rec[2]);
    cr_assert(eq(int, th_open_store(&t), 0));
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &k, 2 * 4096 + 100, 0, &out, &n), -EBADMSG));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    th_close(&t);
}

/* A valid chunk record of another blob where a blob's ref points: neither blob is served. */
Test(blob_reader, a_chunk_record_of_another_blob_is_never_served)
{
    struct th t = { 0 };
    th_open_sim(&t, 33);
    static uint8_t a[4096];
    static uint8_t b[4096];
    struct blob_key ka;
    struct blob_key kb;
    put_one(&t, a, sizeof(a), 9, false, &ka);
    put_one(&t, b, sizeof(b), 10, false, &kb);
    th_close_store(&t);
    struct th_record rec[8];
    cr_assert(eq(u32, th_chunk_records(&t, 1, rec, 8), 2));
    th_swap_records(&t, 1, &rec[0], &rec[1]);
    cr_assert(eq(int, th_open_store(&t), 0));
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &ka, 0, 0, &out, &n), -EBADMSG));
    cr_assert(eq(int, th_get(&t, &kb, 0, 1, &out, &n), -EBADMSG));
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 2));
    th_close(&t);
}

Test(blob_reader, a_corrupt_later_chunk_ends_the_stream_after_good_pieces)
{
    struct th t = { 0 };
    th_open_sim(&t, 12);
    static uint8_t buf[3 * 4096];
    struct blob_key k;
    put_one(&t, buf, sizeof(buf), 2, false, &k);
    /* Raw chunks: 32 + 13 + 3 + 4096 bytes each, 8-aligned. */
    uint64_t second = 4096 + ((32 + 13 + 3 + 4096 + 7) & ~7ULL);
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, first_segment, second + 100, 1), 0));
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 0, &r), 0));

    struct {
        bool done;
        int res;
        size_t len;
    } p = { 0 };

    void piece(void *ctx, int res, const uint8_t *data, size_t len);
    cr_assert(eq(int, blob_read_next(r, piece, &p), 0));
    cr_assert(th_run_until(&t, &p.done));
    cr_assert(eq(int, p.res, 0));
    cr_assert(eq(sz, p.len, 4096), "the good first chunk");
    p.done = false;
    cr_assert(eq(int, blob_read_next(r, piece, &p), 0));
    cr_assert(th_run_until(&t, &p.done));
    cr_assert(eq(int, p.res, -EBADMSG));
    cr_assert(eq(int, blob_read_next(r, piece, &p), -EBADMSG), "the stream stays ended");
    blob_read_close(r);
    cr_assert(not(blob_exists(t.bc, &k, false)));
    th_close(&t);
}

void piece(void *ctx, int res, const uint8_t *data, size_t len)
{
    (void)data;

    struct {
        bool done;
        int res;
        size_t len;
    } *p = ctx;

    p->done = true;
    p->res = res;
    p->len = len;
}

Test(blob_reader, a_corrupt_commit_record_is_detected)
{
    struct th t = { 0 };
    th_open_sim(&t, 13);
    static uint8_t buf[100];
    struct blob_key k;
    put_one(&t, buf, sizeof(buf), 3, true, &k);
    /* One chunk record (< 200 bytes), then the commit record: flip inside its hash. */
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, first_segment, &size), 0));
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 0, &r), 0));
    blob_read_close(r);
    /* Find the commit record by scanning for its magic after the chunk. */
    uint8_t *out = NULL;
    size_t n = 0;
    int found = 0;
    for (uint64_t off = 4096 + 8; off < 4096 + 400; off += 8) {
        uint8_t b[4];
        int fd;
        cr_assert(eq(int, t.io->ops->open(t.io, first_segment, 0, &fd), 0));
        cr_assert(eq(int, blob_io_pread_full(t.io, fd, b, 4, off), 0));
        cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
        if (memcmp(b, "RCRD", 4) == 0) {
            cr_assert(eq(int, blob_io_sim_corrupt(t.io, first_segment, off + 32 + 30, 0x80), 0));
            found = 1;
            break;
        }
    }
    cr_assert(found);
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), -EBADMSG));
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    th_close(&t);
}

struct frames {
    bool done;
    int res;
    uint8_t *buf;
    size_t len;
};

static void frames_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct frames *f = ctx;
    f->done = true;
    f->res = res;
    if (res == 0 && len > 0) {
        f->buf = realloc(f->buf, f->len + len);
        memcpy(f->buf + f->len, data, len);
        f->len += len;
    }
}

Test(blob_reader, compressed_reads_are_the_stored_frames_byte_for_byte)
{
    struct th t = { 0 };
    th_open_sim(&t, 14);
    static uint8_t buf[4 * 4096 + 10];
    th_fill(buf, sizeof(buf), 4, true);
    th_fill(buf + 4096, 4096, 5, false); /* one raw chunk */
    struct blob_key k;
    th_key_of(&k, buf, sizeof(buf));
    cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 0, 0), 0));
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_ZSTD, &r), 0));
    struct frames f = { 0 };
    for (int i = 0; i < 10; i++) {
        f.done = false;
        cr_assert(eq(int, blob_read_next(r, frames_cb, &f), 0));
        cr_assert(th_run_until(&t, &f.done));
        if (f.res != 0 || (f.done && f.len > 0 && i == 9)) break;
    }
    blob_read_close(r);
    /* Five frames, each the payload of a chunk record in the segment file, in order. */
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, first_segment, &size), 0));
    uint8_t *file = malloc(size);
    int fd;
    cr_assert(eq(int, t.io->ops->open(t.io, first_segment, 0, &fd), 0));
    cr_assert(eq(int, blob_io_pread_full(t.io, fd, file, size, 0), 0));
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    size_t pos = 0;
    uint64_t off = 4096;
    for (int c = 0; c < 5; c++) {
        struct blob_record_header h;
        memcpy(&h, file + off, sizeof(h));
        cr_assert(eq(int, h.type, BLOB_RECORD_CHUNK));
        cr_assert(le(sz, pos + h.payload_len, f.len));
        cr_assert(memcmp(f.buf + pos, file + off + 32, h.payload_len) == 0, "frame %d", c);
        pos += h.payload_len;
        off += (32 + h.payload_len + 7) & ~7ULL;
    }
    cr_assert(eq(sz, pos, f.len), "nothing but the stored frames");
    uint8_t *dec = malloc(sizeof(buf));
    size_t d = ZSTD_decompress(dec, sizeof(buf), f.buf, f.len);
    cr_assert(eq(sz, d, sizeof(buf)));
    cr_assert(memcmp(dec, buf, sizeof(buf)) == 0);
    free(dec);
    free(file);
    free(f.buf);
    th_close(&t);
}

Test(blob_reader, reads_past_the_end_and_of_missing_blobs_are_refused)
{
    struct th t = { 0 };
    th_open_sim(&t, 15);
    static uint8_t buf[500];
    struct blob_key k;
    put_one(&t, buf, sizeof(buf), 6, true, &k);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 501, 0, &r), -ERANGE));
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 7, &r), -EINVAL));
    struct blob_key missing = k;
    missing.hash[0] ^= 1;
    cr_assert(eq(int, blob_read_open(t.bc, &missing, 0, 0, &r), -ENOENT));
    cr_assert(eq(int, blob_read_open(t.bc, &k, 500, 0, &r), 0));
    cr_assert(eq(u64, blob_reader_size(r), 500));
    struct frames f = { 0 };
    cr_assert(eq(int, blob_read_next(r, frames_cb, &f), 0));
    cr_assert(not(f.done));
    cr_assert(th_run_until(&t, &f.done));
    cr_assert(eq(int, f.res, 0));
    cr_assert(eq(sz, f.len, 0), "offset == size reads nothing");
    blob_read_close(r);
    blob_read_close(NULL);
    th_close(&t);
}

Test(blob_reader, the_disk_queue_is_bounded)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.disk_queue_max = 2;
    th_open_sim(&t, 16);
    static uint8_t buf[500];
    struct blob_key k;
    put_one(&t, buf, sizeof(buf), 7, true, &k);
    struct blob_reader *r[3];
    struct frames f[3] = { 0 };
    for (int i = 0; i < 3; i++)
        cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 0, &r[i]), 0));
    cr_assert(eq(int, blob_read_next(r[0], frames_cb, &f[0]), 0));
    cr_assert(eq(int, blob_read_next(r[1], frames_cb, &f[1]), 0));
    cr_assert(eq(int, blob_read_next(r[2], frames_cb, &f[2]), -EAGAIN));
    cr_assert(ge(u64, th_counters(&t).queue_full, 1));
    th_settle(&t);
    cr_assert(eq(int, blob_read_next(r[2], frames_cb, &f[2]), 0), "room again");
    th_settle(&t);
    for (int i = 0; i < 3; i++) {
        blob_read_close(r[i]);
        free(f[i].buf);
    }
    th_close(&t);
}

Test(blob_reader, many_readers_of_one_blob_interleave)
{
    struct th t = { 0 };
    th_open_sim(&t, 17);
    static uint8_t buf[5 * 4096 + 1];
    th_fill(buf, sizeof(buf), 8, true);
    struct blob_key k;
    th_key_of(&k, buf, sizeof(buf));
    cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 0, 0), 0));

    enum {
        R = 8
    };
    struct blob_reader *r[R];
    struct frames f[R];
    memset(f, 0, sizeof(f));
    for (int i = 0; i < R; i++)
        cr_assert(eq(int, blob_read_open(t.bc, &k, (uint64_t)i * 1000, i % 2, &r[i]), 0));
    /* Round-robin: one piece each per round until every stream ended. */
    bool ended[R] = { false };
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < R; i++) {
            if (ended[i]) continue;
            size_t before = f[i].len;
            f[i].done = false;
            cr_assert(eq(int, blob_read_next(r[i], frames_cb, &f[i]), 0));
            cr_assert(th_run_until(&t, &f[i].done));
            cr_assert(eq(int, f[i].res, 0));
            ended[i] = f[i].len == before;
        }
    }
    for (int i = 0; i < R; i++) {
        cr_assert(ended[i]);
        size_t off = (size_t)i * 1000;
        if (i % 2 == 0) {
            cr_assert(eq(sz, f[i].len, sizeof(buf) - off));
            cr_assert(memcmp(f[i].buf, buf + off, f[i].len) == 0, "reader %d", i);
        } else {
            uint8_t *dec = malloc(sizeof(buf));
            size_t d = ZSTD_decompress(dec, sizeof(buf), f[i].buf, f[i].len);
            cr_assert(eq(sz, d, sizeof(buf) - off));
            cr_assert(memcmp(dec, buf + off, d) == 0, "reader %d", i);
            free(dec);
        }
        blob_read_close(r[i]);
        free(f[i].buf);
    }
    th_close(&t);
}

/*
 * A read the disk fails (-EIO) drops the blob: kept, a bad sector failed every later read, and
 * every upload of the blob was told it was present, so no client could ever store it again.
 */
Test(blob_reader, a_read_that_fails_on_the_disk_reports_eio_and_drops_the_blob)
{
    for (int step = 0; step < 2; step++) { /* the commit record's read, then a chunk's */
        struct th t = { 0 };
        th_open_sim(&t, 18);
        static uint8_t buf[600000];
        th_fill(buf, sizeof(buf), 9, false);
        struct blob_key k;
        th_key_of(&k, buf, sizeof(buf));
        cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 65536, 0), 0));
        blob_io_sim_fail_at(t.io, 1 + (uint64_t)step, -EIO);
        uint8_t *out = NULL;
        size_t n = 0;
        cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), -EIO), "step %d", step);
        free(out);
        out = NULL;
        cr_assert(not(blob_exists(t.bc, &k, false)), "step %d: dropped", step);
        cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 0), "not counted as corrupt");
        struct blob_store_stats st;
        blob_store_stats(t.s, &st);
        cr_assert(eq(u64, st.dropped_corrupt, 1));
        /* Stored again, it reads. */
        cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 65536, 0), 0));
        cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0));
        cr_assert(eq(sz, n, sizeof(buf)));
        cr_assert(memcmp(out, buf, n) == 0);
        free(out);
        th_close(&t);
    }
}

Test(blob_reader, a_commit_record_read_past_the_end_of_its_file_still_reads)
{
    /* The first read of a commit record guesses its length from the current chunk size; a
     * store reopened with a smaller chunk size guesses long, possibly past the file's end. */
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.chunk_size = 64 * 1024;
    t.o.segment_size = 1 << 20;
    t.o.write_buffer_size = 1 << 20;
    th_open_sim(&t, 19);
    static uint8_t buf[100000];
    struct blob_key k;
    put_one(&t, buf, sizeof(buf), 10, true, &k);
    th_close_store(&t);
    t.o.chunk_size = 4096;
    cr_assert(eq(int, th_open_store(&t), 0));
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(buf)));
    cr_assert(memcmp(out, buf, n) == 0);
    free(out);
    /* And the other way: a larger chunk size now, a short guess, a second read. */
    th_close_store(&t);
    t.o.chunk_size = 256 * 1024;
    cr_assert(eq(int, th_open_store(&t), 0));
    cr_assert(eq(int, th_get(&t, &k, 5, 1, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(buf) - 5));
    cr_assert(memcmp(out, buf + 5, n) == 0);
    free(out);
    th_close(&t);
}

Test(blob_reader, an_empty_ac_value_reads_as_nothing_in_both_encodings)
{
    struct th t = { 0 };
    th_open_sim(&t, 20);
    uint8_t key[BLOB_HASH_SIZE] = { 0xee };
    struct blob_key k;
    blob_key_ac(&k, key, 0);
    cr_assert(eq(int, th_put(&t, &k, "", 0, 0, 0), 0));
    for (int enc = 0; enc <= 1; enc++) {
        struct blob_reader *r;
        cr_assert(eq(int, blob_read_open(t.bc, &k, 0, enc, &r), 0));
        cr_assert(eq(u64, blob_reader_size(r), 0));
        struct frames f = { 0 };
        cr_assert(eq(int, blob_read_next(r, frames_cb, &f), 0));
        cr_assert(th_run_until(&t, &f.done));
        cr_assert(eq(int, f.res, 0));
        cr_assert(eq(sz, f.len, 0));
        blob_read_close(r);
    }
    th_close(&t);
}

Test(blob_reader, read_buffers_are_bounded_per_core)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.read_buffer_max = 16000; /* one reader's buffers of a 4 KiB chunk (12 KiB), not two */
    th_open_sim(&t, 21);
    static uint8_t buf[20000];
    struct blob_key k;
    put_one(&t, buf, sizeof(buf), 11, true, &k);
    struct blob_reader *a;
    struct blob_reader *b;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 0, &a), 0));
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 0, &b), 0));
    struct frames fa = { 0 };
    struct frames fb = { 0 };
    /* Each reads its commit record first, then wants its chunk buffers. */
    cr_assert(eq(int, blob_read_next(a, frames_cb, &fa), 0));
    cr_assert(eq(int, blob_read_next(b, frames_cb, &fb), 0));
    th_settle(&t);
    cr_assert(fa.done && fb.done);
    int again = (fa.res == -EAGAIN) + (fb.res == -EAGAIN);
    cr_assert(eq(int, again, 1), "one of the two must have been refused (%d, %d)", fa.res, fb.res);
    cr_assert(ge(u64, th_counters(&t).queue_full, 1));
    /* The refused one is intact: once the other is closed it reads on. */
    struct blob_reader *refused = fa.res == -EAGAIN ? a : b;
    struct frames *fr = fa.res == -EAGAIN ? &fa : &fb;
    blob_read_close(refused == a ? b : a);
    fr->done = false;
    cr_assert(eq(int, blob_read_next(refused, frames_cb, fr), 0));
    cr_assert(th_run_until(&t, &fr->done));
    cr_assert(eq(int, fr->res, 0));
    cr_assert(eq(sz, fr->len, 4096));
    blob_read_close(refused);
    free(fa.buf);
    free(fb.buf);
    /* With the first gone, a new reader reads the whole blob. */
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(buf)));
    free(out);
    t.o.read_buffer_max = 100; /* too small for one chunk: refused at open */
    th_close_store(&t);
    cr_assert(eq(int, th_open_store(&t), -EINVAL));
    t.o.read_buffer_max = 1 << 20;
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

struct piece_log {
    bool done;
    int res;
    size_t lens[64];
    int count;
    uint8_t *out;
    size_t len;
    uint64_t bufs; /* the core's buffer gauge while the piece was handed out */
    struct th *t;
};

static void piece_log_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct piece_log *l = ctx;
    l->done = true;
    l->res = res;
    if (res != 0 || len == 0) return;
    cr_assert(lt(int, l->count, 64));
    l->lens[l->count++] = len;
    memcpy(l->out + l->len, data, len);
    l->len += len;
    uint64_t b = th_counters(l->t).bufs;
    if (b > l->bufs) l->bufs = b;
}

/* Reads <k> from <off> piece by piece into <l>. */
static void read_pieces(struct th *t, const struct blob_key *k, uint64_t off, struct piece_log *l)
{
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t->bc, k, off, BLOB_ENCODING_IDENTITY, &r), 0));
    for (int guard = 0; guard < 100; guard++) {
        l->done = false;
        cr_assert(eq(int, blob_read_next(r, piece_log_cb, l), 0));
        cr_assert(not(l->done), "never inside blob_read_next");
        cr_assert(th_run_until(t, &l->done));
        cr_assert(eq(int, l->res, 0));
        if (l->len == blob_reader_size(r) - off) break;
    }
    blob_read_close(r);
}

Test(blob_reader, identity_reads_of_raw_chunks_hand_out_each_block_in_place)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.chunk_size = 256 << 10; /* production chunks: two 128 KiB raw blocks each */
    t.o.segment_size = 4 << 20;
    t.o.write_buffer_size = 2 << 20;
    t.o.max_size = 64 << 20;
    t.o.read_ahead = 1; /* one chunk at a time: the buffer counts below are exact */
    th_open_sim(&t, 31);
    size_t len = (512 << 10) + 1000; /* raw, raw, and a short raw chunk */
    uint8_t *data = malloc(len);
    th_fill(data, len, 31, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 0, 0), 0));
    struct piece_log l = { .t = &t, .out = malloc(len) };
    read_pieces(&t, &k, 0, &l);
    cr_assert(eq(sz, l.len, len));
    cr_assert(memcmp(l.out, data, len) == 0);
    cr_assert(eq(int, l.count, 5), "a piece per raw block");
    cr_assert(eq(sz, l.lens[0], 128 << 10));
    cr_assert(eq(sz, l.lens[4], 1000));
    cr_assert(eq(u64, l.bufs, 1), "only the record buffer: nothing was decoded or copied");
    /* From inside the second block of the second chunk: the rest of that block first. */
    free(l.out);
    memset(&l, 0, sizeof(l));
    l.t = &t;
    l.out = malloc(len);
    uint64_t off = (256 << 10) + (128 << 10) + 77;
    read_pieces(&t, &k, off, &l);
    cr_assert(eq(sz, l.len, len - off));
    cr_assert(memcmp(l.out, data + off, l.len) == 0);
    cr_assert(eq(sz, l.lens[0], (128 << 10) - 77));
    free(l.out);
    /* A compressible blob is decoded: the decode buffer is taken then, and only then. */
    th_fill(data, len, 32, true);
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 0, 0), 0));
    memset(&l, 0, sizeof(l));
    l.t = &t;
    l.out = malloc(len);
    read_pieces(&t, &k, 0, &l);
    cr_assert(eq(sz, l.len, len));
    cr_assert(memcmp(l.out, data, len) == 0);
    cr_assert(eq(int, l.count, 3), "a piece per decoded chunk");
    cr_assert(eq(u64, l.bufs, 2));
    free(l.out);
    free(data);
    cr_assert(gt(u64, th_counters(&t).pool_bytes, 0), "the buffers went back to the pool");
    th_close(&t);
}

/* ---- read-ahead ---- */

struct held_log {
    bool done;
    int res;
    const uint8_t *data;
    size_t len;
    uint64_t in_flight; /* the core's disk reads in flight while the piece was handed out */
    struct th *t;
};

static void held_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct held_log *l = ctx;
    l->done = true;
    l->res = res;
    l->data = data;
    l->len = len;
    l->in_flight = th_counters(l->t).io_in_flight;
}

/* A 10-chunk random blob (stored raw) of 4 KiB chunks, read ahead 4 chunks. */
static uint8_t *put_chunks(struct th *t, size_t len, uint64_t seed, struct blob_key *k)
{
    th_options_small(&t->o);
    t->o.read_ahead = 4;
    th_open_sim(t, seed);
    uint8_t *data = malloc(len);
    th_fill(data, len, seed, false);
    th_key_of(k, data, len);
    cr_assert(eq(int, th_put(t, k, data, len, 0, 0), 0));
    return data;
}

static void next_piece(struct th *t, struct blob_reader *r, struct held_log *l)
{
    l->done = false;
    cr_assert(eq(int, blob_read_next(r, held_cb, l), 0));
    cr_assert(not(l->done), "never inside blob_read_next");
    cr_assert(th_run_until(t, &l->done));
    cr_assert(eq(int, l->res, 0));
}

Test(blob_reader, reads_ahead_the_next_chunks_and_a_close_cancels_them_all)
{
    struct th t = { 0 };
    struct blob_key k;
    size_t len = 10 * 4096;
    uint8_t *data = put_chunks(&t, len, 41, &k);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    struct held_log l = { .t = &t };
    next_piece(&t, r, &l);
    cr_assert(eq(sz, l.len, 4096));
    cr_assert(memcmp(l.data, data, l.len) == 0);
    /* The first chunk is handed out while the next three are read (or were). */
    cr_assert(eq(u64, th_counters(&t).bufs, 4), "a record buffer per chunk read ahead");
    /* The next piece frees the first chunk's slot, which reads chunk 4 at once. */
    l.done = false;
    cr_assert(eq(int, blob_read_next(r, held_cb, &l), 0));
    uint64_t in_flight = th_counters(&t).io_in_flight;
    cr_assert(ge(u64, in_flight, 1));
    /* Closed with reads in flight: each is cancelled, the memory goes after the last. */
    blob_read_close(r);
    cr_assert(eq(u64, th_counters(&t).readers, 1), "freed only after the completions");
    th_settle(&t);
    cr_assert(not(l.done), "no callback after close");
    struct blob_counters_snapshot c = th_counters(&t);
    cr_assert(eq(u64, c.readers, 0));
    cr_assert(eq(u64, c.io_in_flight, 0));
    cr_assert(eq(u64, c.bufs, 0));
    free(data);
    th_close(&t);
}

Test(blob_reader, reads_from_every_chunk_boundary_are_byte_identical)
{
    for (int comp = 0; comp <= 1; comp++) {
        struct th t = { 0 };
        th_options_small(&t.o);
        t.o.read_ahead = 3;
        th_open_sim(&t, 42 + (uint64_t)comp);
        size_t len = 7 * 4096 + 123;
        uint8_t *data = malloc(len);
        th_fill(data, len, 42, comp != 0);
        struct blob_key k;
        th_key_of(&k, data, len);
        cr_assert(eq(int, th_put(&t, &k, data, len, 0, 0), 0));
        for (uint64_t b = 0; b <= len / 4096; b++) {
            for (int d = -1; d <= 1; d++) {
                int64_t off = (int64_t)(b * 4096) + d;
                if (off < 0 || (uint64_t)off > len) continue;
                for (int enc = 0; enc <= 1; enc++) {
                    uint8_t *out = NULL;
                    size_t n = 0;
                    cr_assert(eq(int, th_get(&t, &k, (uint64_t)off, enc, &out, &n), 0));
                    cr_assert(eq(sz, n, len - (size_t)off), "offset %lld enc %d", (long long)off,
                              enc);
                    cr_assert(n == 0 || memcmp(out, data + off, n) == 0, "offset %lld enc %d",
                              (long long)off, enc);
                    free(out);
                }
            }
        }
        free(data);
        th_close(&t);
    }
}

Test(blob_reader, held_pieces_stay_valid_until_released_in_any_order)
{
    struct th t = { 0 };
    struct blob_key k;
    size_t len = 10 * 4096;
    uint8_t *data = put_chunks(&t, len, 43, &k);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    blob_read_hold(r);
    const uint8_t *held[4];
    size_t got = 0;
    struct held_log l = { .t = &t };
    /* Four chunks' slots: four pieces held, then the reader needs one back. */
    for (int i = 0; i < 4; i++) {
        next_piece(&t, r, &l);
        cr_assert(eq(sz, l.len, 4096));
        held[i] = l.data;
        got += l.len;
    }
    cr_assert(eq(int, blob_read_next(r, held_cb, &l), -ENOBUFS));
    th_settle(&t);
    for (int i = 0; i < 4; i++) {
        cr_assert(memcmp(held[i], data + (size_t)i * 4096, 4096) == 0, "piece %d intact", i);
    }
    /* Released out of order: the slots come back once the oldest is released too. */
    blob_read_release(r, held[2]);
    blob_read_release(r, held[1]);
    cr_assert(eq(int, blob_read_next(r, held_cb, &l), -ENOBUFS), "the oldest is still held");
    blob_read_release(r, held[0]);
    blob_read_release(r, held[3]);
    /* Bounded by the blob's chunks. */
    while (got < len) {
        next_piece(&t, r, &l);
        cr_assert(memcmp(l.data, data + got, l.len) == 0, "at %zu", got);
        got += l.len;
        blob_read_release(r, l.data);
    }
    next_piece(&t, r, &l);
    cr_assert(eq(sz, l.len, 0), "the end");
    blob_read_close(r);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).bufs, 0));
    free(data);
    th_close(&t);
}

Test(blob_reader, read_ahead_stays_within_a_share_of_the_read_buffer_budget)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.read_ahead = 8;
    t.o.read_buffer_max = 64 * 18432; /* a reader's set is 12 KiB: ahead only to 18 KiB */
    th_open_sim(&t, 44);
    size_t len = 10 * 4096;
    uint8_t *data = malloc(len);
    th_fill(data, len, 44, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 0, 0), 0));
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    struct held_log l = { .t = &t };
    next_piece(&t, r, &l);
    cr_assert(eq(u64, th_counters(&t).bufs, 1), "no set ahead fits under 1/64 of the budget");
    cr_assert(eq(u64, l.in_flight, 0));
    /* A second reader still gets its buffers. */
    struct blob_reader *r2;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r2), 0));
    struct held_log l2 = { .t = &t };
    next_piece(&t, r2, &l2);
    cr_assert(memcmp(l2.data, data, l2.len) == 0);
    blob_read_close(r);
    blob_read_close(r2);
    th_settle(&t);
    free(data);
    th_close(&t);
}

Test(blob_reader, a_small_blob_is_read_with_one_disk_read_and_still_checked)
{
    struct th t = { 0 };
    th_open_sim(&t, 21);
    static uint8_t small[1000];
    static uint8_t raw[3000];
    static uint8_t two[5000];
    struct blob_key ks;
    struct blob_key kr;
    struct blob_key kt;
    put_one(&t, small, sizeof(small), 31, true, &ks);
    put_one(&t, raw, sizeof(raw), 32, false, &kr);
    put_one(&t, two, sizeof(two), 33, true, &kt);
    const struct blob_key *keys[3] = { &ks, &kr, &kt };
    const uint8_t *bufs[3] = { small, raw, two };
    const size_t lens[3] = { sizeof(small), sizeof(raw), sizeof(two) };
    /* One chunk: the commit record and the chunk record in one read; two chunks: three. */
    const uint64_t reads[3] = { 1, 1, 3 };
    for (int i = 0; i < 3; i++) {
        for (int enc = 0; enc <= 1; enc++) {
            uint64_t before = blob_io_sim_ops(t.io);
            uint8_t *out = NULL;
            size_t n = 0;
            cr_assert(eq(int, th_get(&t, keys[i], 7, enc, &out, &n), 0));
            cr_assert(eq(u64, blob_io_sim_ops(t.io) - before, reads[i]));
            if (enc == 0) {
                cr_assert(eq(sz, n, lens[i] - 7));
                cr_assert(memcmp(out, bufs[i] + 7, n) == 0);
            }
            free(out);
        }
    }
    /* The chunk that came with the commit record is still checked: a flipped byte is found. */
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, first_segment, 4096 + 40, 0x20), 0));
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &ks, 0, 0, &out, &n), -EBADMSG));
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
    cr_assert(not(blob_exists(t.bc, &ks, false)));
    th_close(&t);
}

/* Puts 200 KB of random bytes (chunks in 4 or more 64 KiB segments); its index value. */
static void put_spanning(struct th *t, uint8_t *buf, size_t len, struct blob_key *k,
                         struct blob_index_value *v)
{
    put_one(t, buf, len, 31, false, k);
    cr_assert(blob_store_lookup(t->s, k, v));
    cr_assert(ge(u16, v->loc.span, 2), "the blob spans three segments or more");
}

/* Takes segment <seq> out of the table as if it were lost (eviction never takes one out of
 * order): lookups miss it, readers cannot pin it. */
static void lose_segment(struct th *t, uint64_t seq)
{
    struct blob_seg *seg = blob_segment_get(&t->s->segs, (uint32_t)seq);
    cr_assert(not(eq(ptr, seg, NULL)));
    blob_segment_kill(&t->s->segs, seg);
    blob_segment_put(&t->s->segs, seg);
}

Test(blob_reader, a_chunk_in_a_segment_lost_inside_the_span_drops_the_blob)
{
    struct th t = { 0 };
    th_open_sim(&t, 41);
    static uint8_t buf[200000];
    struct blob_key k;
    struct blob_index_value v;
    put_spanning(&t, buf, sizeof(buf), &k, &v);
    lose_segment(&t, v.loc.seg - 1);
    /* The commit's segment and the span's oldest are there: the lookup still finds it. */
    cr_assert(blob_exists(t.bc, &k, false));
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), -EBADMSG));
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.dropped_corrupt, 1));
    /* Dropped: missing now, and an upload stores it again instead of ending as present. */
    cr_assert(not(blob_exists(t.bc, &k, false)));
    cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 0, 0), 0));
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(buf)));
    cr_assert(memcmp(out, buf, n) == 0);
    free(out);
    th_close(&t);
}

Test(blob_reader, a_chunk_gone_with_the_oldest_segment_of_the_span_is_an_eviction)
{
    struct th t = { 0 };
    th_open_sim(&t, 42);
    static uint8_t buf[200000];
    struct blob_key k;
    struct blob_index_value v;
    put_spanning(&t, buf, sizeof(buf), &k, &v);
    uint64_t oldest = v.loc.seg - v.loc.span;
    /* What a reader sees when eviction (oldest first) takes the span's first two segments
     * between the lookup and its pins: the second is not pinned, and by the time its chunk is
     * read the oldest is gone too. */
    lose_segment(&t, oldest + 1);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, 0, &r), 0));
    lose_segment(&t, oldest);
    static uint8_t got[200000];
    struct th_collect c = { .out = got };
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0 && !c.end; i++) { /* bounded: pieces of 1 KiB or more */
        rc = th_collect_try(&t, r, &c);
    }
    cr_assert(eq(int, rc, -ENOENT), "the blob is being evicted, not corrupt");
    cr_assert(gt(sz, c.len, 0), "the chunks of the pinned oldest segment came");
    cr_assert(memcmp(got, buf, c.len) == 0);
    blob_read_close(r);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 0));
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.dropped_corrupt, 0));
    th_close(&t);
}

/*
 * A segment file cut inside a commit record while the server runs (a volume shrunk under it,
 * a file truncated by hand), its record header whole: the read of the commit record comes
 * back short of the length its header names. The read is corrupt: the blob is dropped and the
 * stream ends with -EBADMSG. Before, the reader took the short read for a length guessed too
 * short (the case above), read the record again at the length its header names, got the same
 * short read, and so on without end: the reader never answered and held its core's disk queue.
 */
Test(blob_reader, a_commit_record_cut_short_by_the_end_of_its_file_is_corrupt)
{
    struct th t = { 0 };
    th_open_sim(&t, 23);
    static uint8_t buf[10 * 4096]; /* ten chunks: a commit record of ten refs */
    th_fill(buf, sizeof(buf), 23, false);
    struct blob_key k;
    th_key_of(&k, buf, sizeof(buf));
    cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 4096, 0), 0));
    struct blob_index_value v;
    cr_assert(blob_store_lookup(t.s, &k, &v));
    struct blob_seg *seg = blob_segment_get(&t.s->segs, v.loc.seg);
    cr_assert(ne(ptr, seg, NULL));
    uint64_t cut = (uint64_t)v.loc.off8 * 8 + sizeof(struct blob_record_header) + 8;
    cr_assert(eq(int, t.io->ops->ftruncate(t.io, seg->fd, cut), 0));
    blob_segment_put(&t.s->segs, seg);
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), -EBADMSG));
    free(out);
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
    cr_assert(not(blob_exists(t.bc, &k, false)), "a blob that cannot be read is dropped");
    th_close(&t);
}
