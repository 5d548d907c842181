/*
 * Reads in place: chunk records whose pages are in the page cache are checked and handed out
 * from a read-only mapping of their segment, without a read by the ring. Real files and a
 * real ring: the bytes are the same as read by the ring, in every encoding and from any
 * offset; a record changed in the page cache is caught by its checksum there; a read opened
 * before eviction finishes from the mapping; --no-map-reads never maps.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/internal.h"
#include "harness.h"

#define CHUNK (256u << 10)

/*
 * ThreadSanitizer runs a synchronous signal's handler through its own wrapper and does not
 * support leaving it with siglongjmp: the SIGBUS tests run in the other builds only.
 */
#if defined(__SANITIZE_THREAD__)
#    define UNDER_TSAN 1
#elif defined(__has_feature)
#    if __has_feature(thread_sanitizer)
#        define UNDER_TSAN 1
#    endif
#endif
#ifndef UNDER_TSAN
#    define UNDER_TSAN 0
#endif

/* A real store with 256 KiB chunks (records past the in-place threshold). */
static void open_big(struct th *t, bool map)
{
    th_options_small(&t->o);
    t->o.chunk_size = CHUNK;
    t->o.segment_size = 4ULL << 20;
    t->o.max_size = 64ULL << 20;
    t->o.write_buffer_size = 1U << 20;
    t->o.map_reads = map;
    th_open_real(t);
}

/* Chunks half random, half zeros: stored compressed, yet each record is over 64 KiB. */
static void fill_half(uint8_t *buf, size_t len, uint64_t seed)
{
    th_fill(buf, len, seed, false);
    for (size_t off = 0; off < len; off += CHUNK) {
        size_t half = off + CHUNK / 2;
        size_t end = off + CHUNK < len ? off + CHUNK : len;
        if (half < end) memset(buf + half, 0, end - half);
    }
}

static uint64_t mapped(struct th *t)
{
    return th_counters(t).mapped_reads;
}

/* Reads <k> from <off> as <enc> and checks the bytes against <want> (<len> in all). */
static void read_equal(struct th *t, const struct blob_key *k, uint64_t off, enum blob_encoding enc,
                       const uint8_t *want, size_t len)
{
    uint8_t *got = NULL;
    size_t n = 0;
    int rc = th_get(t, k, off, enc, &got, &n);
    cr_assert(eq(int, rc, 0));
    cr_assert(eq(sz, n, len - off));
    cr_assert(memcmp(got, want + off, n) == 0, "bytes differ (offset %llu, encoding %d)",
              (unsigned long long)off, (int)enc);
    free(got);
}

/*
 * Reads every file of the store's folder whole, so each of its pages is in the page cache.
 * Reading the records alone left the counts below failing now and then under load (1 run in
 * 10-20 with three copies of this test at once, on Linux 6.18 and ext4): which pages stay
 * cached after direct writes and partial reads is not fixed (a direct write drops every cached
 * folio it touches, whole, and with large folios one may hold much more than the bytes
 * written). With the writer idle first (th_settle) and the files read whole: 0 in 30.
 *
 * Read was still not enough now and then: pages read a moment before were gone, and
 * a_cached_raw_blob_is_read_in_place_byte_for_byte read 2 or 6 chunks in place instead of 8
 * (2 runs in 12, and 1 in 25 beside a build; 2026-11-30). Page cache is reclaimed here without
 * memory pressure: this VM's kernel runs DAMON's pageout scheme over physical memory
 * (kdamond: regions judged unaccessed for a minute, sampled a page per region, paged out
 * whole). So each file is also mapped and its pages locked (mlock: unevictable, every reclaim
 * skips them) for the rest of the test's process, which ends with the test: 0 in 58 since,
 * 25 of them beside a build. Where locking is refused (no CAP_IPC_LOCK, a small
 * RLIMIT_MEMLOCK) the read alone stays. A truncation or a write through the file still
 * changes those pages as before.
 */
static void warm_files(const struct th *t)
{
    DIR *d = opendir(t->dir);
    cr_assert(ne(ptr, d, NULL));
    static uint8_t buf[1 << 20];
    struct dirent *e;
    /* Bounded by the folder's files. */
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC);
        cr_assert(ge(int, fd, 0));
        /* Bounded by the file's size. */
        while (read(fd, buf, sizeof(buf)) > 0) {
        }
        off_t size = lseek(fd, 0, SEEK_END);
        void *m = size > 0 ? mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
        if (m != MAP_FAILED && mlock(m, (size_t)size) < 0) (void)munmap(m, (size_t)size);
        close(fd);
    }
    closedir(d);
}

/*
 * Uploads <len> random bytes (seed <seed>) as *<k> and reads them once, then reads the
 * store's files whole: their pages are in the page cache (the writer bypasses it). Returns
 * the bytes (free them).
 */
static uint8_t *put_warm(struct th *t, size_t len, uint64_t seed, struct blob_key *k)
{
    uint8_t *want = malloc(len);
    cr_assert(ne(ptr, want, NULL));
    th_fill(want, len, seed, false);
    th_key_of(k, want, len);
    cr_assert(eq(int, th_put(t, k, want, len, 0, BLOB_ENCODING_IDENTITY), 0));
    th_settle(t);
    read_equal(t, k, 0, BLOB_ENCODING_IDENTITY, want, len);
    warm_files(t);
    return want;
}

Test(blob_mapread, a_cached_raw_blob_is_read_in_place_byte_for_byte)
{
    struct th t = { 0 };
    open_big(&t, true);
    size_t len = 8 * CHUNK + 1000; /* 9 chunks, the last one short */
    struct blob_key k;
    uint8_t *want = put_warm(&t, len, 11, &k);
    uint64_t before = mapped(&t);
    read_equal(&t, &k, 0, BLOB_ENCODING_IDENTITY, want, len);
    /* Eight full chunks in place; the last (1000 bytes) is below the threshold. */
    cr_assert(eq(u64, mapped(&t) - before, 8));
    before = mapped(&t);
    read_equal(&t, &k, 3 * CHUNK + 77, BLOB_ENCODING_IDENTITY, want, len);
    cr_assert(eq(u64, mapped(&t) - before, 5));
    read_equal(&t, &k, 0, BLOB_ENCODING_ZSTD, want, len);
    free(want);
    th_close(&t);
}

Test(blob_mapread, compressed_chunks_decode_and_pass_through_from_the_mapping)
{
    struct th t = { 0 };
    open_big(&t, true);
    size_t len = 6 * CHUNK;
    uint8_t *want = malloc(len);
    fill_half(want, len, 12);
    struct blob_key k;
    th_key_of(&k, want, len);
    cr_assert(eq(int, th_put(&t, &k, want, len, 0, BLOB_ENCODING_IDENTITY), 0));
    read_equal(&t, &k, 0, BLOB_ENCODING_IDENTITY, want, len);
    uint64_t before = mapped(&t);
    read_equal(&t, &k, 0, BLOB_ENCODING_IDENTITY, want, len);
    cr_assert(eq(u64, mapped(&t) - before, 6), "decoded from the mapping");
    before = mapped(&t);
    read_equal(&t, &k, 0, BLOB_ENCODING_ZSTD, want, len);
    cr_assert(eq(u64, mapped(&t) - before, 6), "stored frames handed out from the mapping");
    /* From inside chunk 1: its raw frame is built in a buffer (read by the ring), the rest
     * are the stored frames in place. */
    before = mapped(&t);
    read_equal(&t, &k, CHUNK + 5, BLOB_ENCODING_ZSTD, want, len);
    cr_assert(eq(u64, mapped(&t) - before, 4));
    free(want);
    th_close(&t);
}

/*
 * In the segment file under <dir> that holds <needle> (16 bytes), at <delta> bytes from it:
 * flips that byte through the page cache (<cut> false), or cuts the file at the page that
 * holds it (<cut> true). Returns true when it found the needle.
 */
static bool change_segment(const char *dir, const uint8_t *needle, int64_t delta, bool cut)
{
    DIR *d = opendir(dir);
    cr_assert(ne(ptr, d, NULL));
    bool done = false;
    struct dirent *e;
    while (!done && (e = readdir(d)) != NULL) {
        char path[512];
        (void)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        int fd = open(path, O_RDWR);
        if (fd < 0) continue;
        off_t size = lseek(fd, 0, SEEK_END);
        uint8_t *all = size > 0 ? malloc((size_t)size) : NULL;
        bool got = all && pread(fd, all, (size_t)size, 0) == size;
        const uint8_t *at = got ? memmem(all, (size_t)size, needle, 16) : NULL;
        off_t where = at ? (off_t)(at - all) + (off_t)delta : -1;
        if (where >= 0 && where < size && cut) {
            done = ftruncate(fd, where & ~(off_t)4095) == 0;
        } else if (where >= 0 && where < size) {
            uint8_t b = (uint8_t)(all[where] ^ 0x40);
            done = pwrite(fd, &b, 1, where) == 1;
        }
        free(all);
        close(fd);
    }
    closedir(d);
    return done;
}

static bool flip_in_segment(const char *dir, const uint8_t *needle)
{
    return change_segment(dir, needle, 0, false);
}

Test(blob_mapread, a_record_changed_in_the_page_cache_is_caught_in_place)
{
    struct th t = { 0 };
    open_big(&t, true);
    size_t len = 4 * CHUNK;
    struct blob_key k;
    uint8_t *want = put_warm(&t, len, 13, &k);
    cr_assert(flip_in_segment(t.dir, want + 2 * CHUNK + 5000), "chunk 2's bytes not found");
    uint64_t before = mapped(&t);
    uint8_t *got = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &got, &n), -EBADMSG));
    free(got);
    cr_assert(eq(u64, mapped(&t) - before, 3), "chunks 0-2 were read in place");
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
    cr_assert(not(blob_exists(t.bc, &k, false)), "a corrupt blob is dropped");
    free(want);
    th_close(&t);
}

Test(blob_mapread, without_map_reads_every_record_is_read_by_the_ring)
{
    struct th t = { 0 };
    open_big(&t, false);
    size_t len = 4 * CHUNK;
    struct blob_key k;
    uint8_t *want = put_warm(&t, len, 14, &k);
    read_equal(&t, &k, 0, BLOB_ENCODING_IDENTITY, want, len);
    cr_assert(eq(u64, mapped(&t), 0));
    free(want);
    th_close(&t);
}

Test(blob_mapread, a_read_in_place_finishes_after_its_segments_are_evicted)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.chunk_size = 64u << 10;
    t.o.segment_size = 256u << 10;
    t.o.max_size = 2u << 20;
    t.o.write_buffer_size = 256u << 10;
    th_open_real(&t);
    /* 300 KB: chunks in two segments. */
    size_t len = 300000;
    struct blob_key kb;
    uint8_t *want = put_warm(&t, len, 15, &kb);
    uint8_t *got = malloc(len);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &kb, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    struct th_collect c = { .out = got };
    cr_assert(eq(int, th_collect_next(&t, r, &c), 0));
    uint64_t before = mapped(&t);
    cr_assert(gt(u64, before, 0), "the first chunk was read in place");
    static uint8_t buf[50000];
    bool gone = false;
    for (uint64_t i = 0; i < 200 && !gone; i++) {
        th_fill(buf, sizeof(buf), 900 + i, false);
        struct blob_key k;
        th_key_of(&k, buf, sizeof(buf));
        cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 0, BLOB_ENCODING_IDENTITY), 0));
        gone = !blob_exists(t.bc, &kb, false);
    }
    cr_assert(gone, "the blob's segments were never evicted");
    for (int i = 0; i < 100 && !c.end; i++) { /* bounded: 5 chunks */
        cr_assert(eq(int, th_collect_next(&t, r, &c), 0), "after %zu bytes", c.len);
    }
    cr_assert(eq(sz, c.len, len));
    cr_assert(memcmp(got, want, len) == 0);
    cr_assert(gt(u64, mapped(&t), before), "later chunks came from the evicted segments' maps");
    blob_read_close(r);
    free(want);
    free(got);
    th_close(&t);
}

/* Uploads <want> (<len> bytes) as *<k> and reads it once (into the page cache). */
static void put_bytes_warm(struct th *t, const uint8_t *want, size_t len, struct blob_key *k)
{
    th_key_of(k, want, len);
    cr_assert(eq(int, th_put(t, k, want, len, 0, BLOB_ENCODING_IDENTITY), 0));
    read_equal(t, k, 0, BLOB_ENCODING_IDENTITY, want, len);
}

Test(blob_mapread, a_blob_of_one_mid_size_chunk_is_read_in_place_with_its_commit_record)
{
    struct th t = { 0 };
    open_big(&t, true);
    static uint8_t raw[20000];
    static uint8_t half[60000];
    static uint8_t tiny[1000];
    th_fill(raw, sizeof(raw), 21, false);
    th_fill(half, sizeof(half) / 2, 22, false); /* the rest zeros: stored compressed */
    th_fill(tiny, sizeof(tiny), 23, false);

    struct {
        const uint8_t *data;
        size_t len;
        uint64_t in_place; /* records read in place by one read from offset 0 */
    } cases[] = { { raw, sizeof(raw), 1 }, { half, sizeof(half), 1 }, { tiny, sizeof(tiny), 0 } };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct blob_key k;
        put_bytes_warm(&t, cases[i].data, cases[i].len, &k);
        uint64_t before = mapped(&t);
        read_equal(&t, &k, 0, BLOB_ENCODING_IDENTITY, cases[i].data, cases[i].len);
        read_equal(&t, &k, 0, BLOB_ENCODING_ZSTD, cases[i].data, cases[i].len);
        cr_assert(eq(u64, mapped(&t) - before, 2 * cases[i].in_place), "case %zu", i);
        /* From inside the chunk: identity in place, compressed read by the ring. */
        before = mapped(&t);
        read_equal(&t, &k, 100, BLOB_ENCODING_IDENTITY, cases[i].data, cases[i].len);
        read_equal(&t, &k, 100, BLOB_ENCODING_ZSTD, cases[i].data, cases[i].len);
        cr_assert(eq(u64, mapped(&t) - before, cases[i].in_place), "case %zu", i);
    }
    /* A byte changed in the page cache is caught in place too. */
    struct blob_key k;
    th_key_of(&k, raw, sizeof(raw));
    cr_assert(flip_in_segment(t.dir, raw + 9000));
    uint64_t before = mapped(&t);
    uint8_t *got = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &got, &n), -EBADMSG));
    free(got);
    cr_assert(eq(u64, mapped(&t) - before, 1));
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
    th_close(&t);
}

static void never_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    (void)res;
    (void)data;
    (void)len;
    *(bool *)ctx = true;
}

/*
 * A read in place of a small blob checks its window from a deferred task: a reader closed
 * before the task runs is freed with the task taken off the loop, and its callback never runs.
 */
Test(blob_mapread, a_reader_closed_before_its_window_is_checked_never_calls_back)
{
    struct th t = { 0 };
    open_big(&t, true);
    static uint8_t data[20000];
    th_fill(data, sizeof(data), 41, false);
    struct blob_key k;
    put_bytes_warm(&t, data, sizeof(data), &k);
    uint64_t before = mapped(&t);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    bool called = false;
    cr_assert(eq(int, blob_read_next(r, never_cb, &called), 0));
    cr_assert(eq(u64, mapped(&t) - before, 1), "the window was taken in place");
    blob_read_close(r);
    th_settle(&t);
    cr_assert(not(called), "a closed reader called back");
    th_close(&t);
}

/*
 * A page that mincore saw cached but the kernel can no longer give back (here: cut off the
 * file; in production, a disk error after the page left the cache) raises SIGBUS in the
 * read in place: the read ends with -EIO, nothing crashes, and the blob is dropped as any
 * blob the disk could not read back (not counted corrupt), so that it can be stored again.
 */
Test(blob_mapread, a_page_that_cannot_be_read_back_ends_the_read_with_eio)
{
    if (UNDER_TSAN) cr_skip_test("SIGBUS handling under ThreadSanitizer");
    struct th t = { 0 };
    open_big(&t, true);
    blob_segment_table_trust_cache(&t.s->segs);
    size_t len = 4 * CHUNK;
    struct blob_key k;
    uint8_t *want = put_warm(&t, len, 31, &k);
    uint8_t *got = malloc(len);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    struct th_collect c = { .out = got };
    cr_assert(eq(int, th_collect_next(&t, r, &c), 0), "the commit record is read first");
    cr_assert(change_segment(t.dir, want + 2 * CHUNK + 8192, 0, true));
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0 && !c.end; i++) { /* bounded: 4 chunks */
        rc = th_collect_next(&t, r, &c);
    }
    cr_assert(eq(int, rc, -EIO));
    cr_assert(eq(sz, c.len, 2 * CHUNK), "chunks 0 and 1 came whole");
    cr_assert(memcmp(got, want, c.len) == 0);
    blob_read_close(r);
    /* One chunk with its commit record in one window: the commit record's copy fails. */
    static uint8_t small[20000];
    th_fill(small, sizeof(small), 32, false);
    struct blob_key ks;
    put_bytes_warm(&t, small, sizeof(small), &ks);
    cr_assert(change_segment(t.dir, small, 0, true));
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &ks, 0, BLOB_ENCODING_IDENTITY, &out, &n), -EIO));
    free(out);
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 0), "a disk error is not corruption");
    cr_assert(not(blob_exists(t.bc, &k, false)), "dropped: it could not be read back");
    cr_assert(not(blob_exists(t.bc, &ks, false)));
    free(want);
    free(got);
    th_close(&t);
}

/*
 * A raw chunk read in place is handed out a block at a time, each piece found by walking the
 * frame's block headers in the mapping. A page cut off the file between two pieces (in
 * production: dropped from the page cache and not read back from a failing disk) raises
 * SIGBUS in that walk: the read ends with -EIO and the blob is dropped, as for a page lost
 * before the check. Before, the walk ran unguarded and the process stopped on SIGBUS.
 */
Test(blob_mapread, a_page_cut_off_between_two_pieces_of_a_chunk_ends_the_read_with_eio)
{
    if (UNDER_TSAN) cr_skip_test("SIGBUS handling under ThreadSanitizer");
    struct th t = { 0 };
    open_big(&t, true);
    blob_segment_table_trust_cache(&t.s->segs);
    size_t len = 2 * CHUNK; /* random: stored raw, two 128 KiB blocks per chunk */
    struct blob_key k;
    uint8_t *want = put_warm(&t, len, 34, &k);
    uint8_t *got = malloc(len);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    struct th_collect c = { .out = got };
    cr_assert(eq(int, th_collect_next(&t, r, &c), 0));
    cr_assert(eq(sz, c.len, (size_t)CHUNK / 2), "chunk 0's first block came alone");
    cr_assert(gt(u64, mapped(&t), 0), "chunk 0 was read in place");
    /* Cut at the page that holds the second block's 3-byte header. */
    cr_assert(change_segment(t.dir, want + c.len, -3, true));
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0 && !c.end; i++) { /* bounded: 4 blocks */
        rc = th_collect_next(&t, r, &c);
    }
    cr_assert(eq(int, rc, -EIO));
    cr_assert(eq(sz, c.len, (size_t)CHUNK / 2));
    cr_assert(memcmp(got, want, c.len) == 0);
    blob_read_close(r);
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 0), "a disk error is not corruption");
    cr_assert(not(blob_exists(t.bc, &k, false)), "dropped: it could not be read back");
    free(want);
    free(got);
    th_close(&t);
}

/*
 * A chunk is handed out over several pieces (one per raw block). Bytes that change in the
 * page cache after the check (here a write through the file; in production a page dropped
 * and read back from a disk that no longer holds what was checked):
 *   - read by the ring, the chunk is one private copy, checked and served as it was;
 *   - read in place, the pieces are the page cache's bytes when they are sent (documented in
 *     docs/storage.md, like the send's own copy): what must hold is that a changed record
 *     header does not stop the process, since later pieces use the header as checked.
 * <delta> places the changed byte from the chunk's second block's first data byte.
 */
static void later_change(bool map, int64_t delta, bool must_match)
{
    struct th t = { 0 };
    open_big(&t, map);
    size_t len = 2 * CHUNK; /* random: stored raw, two 128 KiB blocks per chunk */
    struct blob_key k;
    uint8_t *want = put_warm(&t, len, 31, &k);
    uint8_t *got = malloc(len);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    struct th_collect c = { .out = got };
    cr_assert(eq(int, th_collect_next(&t, r, &c), 0));
    cr_assert(lt(sz, c.len, (size_t)CHUNK), "chunk 0 is handed out over several pieces");
    cr_assert(change_segment(t.dir, want + c.len, delta, false));
    int res = 0;
    for (int i = 0; i < 100 && !c.end && res == 0; i++) { /* bounded: 4 blocks */
        res = th_collect_next(&t, r, &c);
    }
    if (must_match) {
        cr_assert(res == -EBADMSG || (c.len == len && memcmp(got, want, len) == 0),
                  "bytes that were never checked were served (res %d)", res);
    }
    blob_read_close(r);
    free(got);
    free(want);
    th_close(&t);
}

Test(blob_mapread, bytes_changed_after_the_check_are_not_served_by_the_ring)
{
    later_change(false, 5000, true);
}

Test(blob_mapread, a_record_header_changed_after_the_check_does_not_stop_a_read_in_place)
{
    /* The record header's enc byte: back from block 1's first byte over its 3-byte header,
     * block 0's 128 KiB and 3-byte header, the frame's 13 and the record header's 32; enc
     * is byte 6 of the header. */
    int64_t enc = -3 - (int64_t)(128u << 10) - 3 - 13 - 32 + 6;
    later_change(true, enc, false);
    later_change(false, enc, true);
}

static void note_piece(void *ctx, int res, const uint8_t *data, size_t len)
{
    (void)res;
    (void)data;
    (void)len;
    *(bool *)ctx = true;
}

/*
 * A reader that holds a piece of a compressed chunk and asks for the next chunk reads ahead
 * of it: READ_AHEAD_SHARE limits the buffers it may take, and past that it is told to release
 * first (-ENOBUFS). Returns what blob_read_next answered.
 */
static int held_next(bool map)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.chunk_size = CHUNK;
    t.o.segment_size = 4ULL << 20;
    t.o.max_size = 64ULL << 20;
    t.o.write_buffer_size = 1U << 20;
    t.o.map_reads = map;
    t.o.read_buffer_max = 4u << 20; /* reads ahead: 64 KiB, not one chunk's buffers */
    th_open_real(&t);
    size_t len = 4 * CHUNK;
    uint8_t *want = malloc(len);
    th_fill(want, len, 41, false);
    for (size_t off = 0; off < len; off += CHUNK) {
        memset(want + off, 0, CHUNK / 2); /* zeros first: stored compressed, decoded */
    }
    struct blob_key k;
    th_key_of(&k, want, len);
    cr_assert(eq(int, th_put(&t, &k, want, len, 0, BLOB_ENCODING_IDENTITY), 0));
    read_equal(&t, &k, 0, BLOB_ENCODING_IDENTITY, want, len); /* into the page cache */
    uint8_t *got = malloc(len);
    struct blob_reader *r;
    cr_assert(eq(int, blob_read_open(t.bc, &k, 0, BLOB_ENCODING_IDENTITY, &r), 0));
    blob_read_hold(r);
    struct th_collect c = { .out = got };
    cr_assert(eq(int, th_collect_next(&t, r, &c), 0)); /* chunk 0, held */
    bool done = false;
    int rc = blob_read_next(r, note_piece, &done);
    if (rc == 0) cr_assert(th_run_until(&t, &done));
    blob_read_close(r);
    free(got);
    free(want);
    th_close(&t);
    return rc;
}

Test(blob_mapread, a_read_ahead_by_the_ring_keeps_to_its_share_of_the_buffers)
{
    cr_assert(eq(int, held_next(false), -ENOBUFS));
}

Test(blob_mapread, a_read_ahead_in_place_keeps_to_its_share_of_the_buffers)
{
    cr_assert(eq(int, held_next(true), -ENOBUFS));
}

#if !UNDER_TSAN
/* Outside a guarded read, SIGBUS stops the process (with a message) rather than go on. */
Test(blob_mapread, sigbus_outside_a_guarded_read_stops_the_process, .signal = SIGBUS)
{
    char path[] = "/tmp/blobmap.XXXXXX";
    int fd = mkstemp(path);
    cr_assert(ge(int, fd, 0));
    (void)unlink(path);
    cr_assert(eq(int, ftruncate(fd, 8192), 0));
    const volatile uint8_t *m = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
    cr_assert(ne(ptr, (void *)(uintptr_t)m, MAP_FAILED));
    cr_assert(eq(int, ftruncate(fd, 0), 0));
    blob_map_guard_install();
    uint8_t b = m[4096]; /* beyond the end of the file: SIGBUS */
    cr_assert(0, "read %u past the end of the file", b);
}
#endif

/*
 * Two chunk records of one blob swapped in the file, each still valid, and in the page cache:
 * the check in place compares each record's payload_sum with the one its commit's ref holds,
 * as the ring's read does, so the swapped bytes are not sent from the mapping either.
 */
Test(blob_mapread, swapped_chunk_records_are_not_served_in_place)
{
    struct th t = { 0 };
    open_big(&t, true);
    static uint8_t buf[4 * CHUNK];
    th_fill(buf, sizeof(buf), 71, false); /* raw chunks: four records of one length */
    struct blob_key k;
    th_key_of(&k, buf, sizeof(buf));
    cr_assert(eq(int, th_put(&t, &k, buf, sizeof(buf), 0, 0), 0));
    th_close_store(&t);
    struct th_record rec[8];
    cr_assert(eq(u32, th_chunk_records(&t, 1, rec, 8), 4));
    th_swap_records(&t, 1, &rec[1], &rec[2]);
    cr_assert(eq(int, th_open_store(&t), 0));
    warm_files(&t);
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &n), -EBADMSG));
    cr_assert(ge(u64, mapped(&t), 2), "the chunks were checked in place");
    cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    th_close(&t);
}
