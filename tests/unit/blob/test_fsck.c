/*
 * fsck on a real folder: a clean store passes, a flipped byte fails with exit status 1, a
 * folder that cannot be read gives 2, and the summary line says what was found. A blob whose
 * first chunks were evicted is counted apart; a segment lost from inside a span is damage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/chunk.h"
#include "blob/format.h"
#include "blob/fsck.h"
#include "blob/internal.h"
#include "blob/io_sim.h"
#include "harness.h"

static void fill_store(struct th *t, int n)
{
    static uint8_t buf[20000];
    for (int i = 0; i < n; i++) {
        th_fill(buf, sizeof(buf), (uint64_t)i, i % 2);
        struct blob_key k;
        th_key_of(&k, buf, sizeof(buf));
        cr_assert(eq(int, th_put(t, &k, buf, sizeof(buf), 0, 0), 0));
    }
}

static int run_fsck(const char *dir, char *out, size_t out_size)
{
    FILE *f = fmemopen(out, out_size, "w");
    int rc = blob_fsck_main(dir, f);
    fclose(f);
    return rc;
}

Test(blob_fsck, a_clean_store_passes_and_a_flip_fails)
{
    struct th t = { 0 };
    th_open_real(&t);
    fill_store(&t, 20);
    th_close_store(&t);
    char out[4096] = "";
    cr_assert(eq(int, run_fsck(t.dir, out, sizeof(out)), 0), "%s", out);
    cr_assert(ne(ptr, strstr(out, ": ok:"), NULL), "%s", out);
    cr_assert(ne(ptr, strstr(out, "20 blobs ok"), NULL), "%s", out);
    /* Flip one byte inside the first chunk record. */
    char path[128];
    snprintf(path, sizeof(path), "%s/seg-0000000000000001.rcs", t.dir);
    int fd = open(path, O_RDWR);
    cr_assert(ge(int, fd, 0));
    uint8_t b;
    cr_assert(eq(int, (int)pread(fd, &b, 1, 4096 + 100), 1));
    b ^= 0x10;
    cr_assert(eq(int, (int)pwrite(fd, &b, 1, 4096 + 100), 1));
    close(fd);
    memset(out, 0, sizeof(out));
    cr_assert(eq(int, run_fsck(t.dir, out, sizeof(out)), 1), "%s", out);
    cr_assert(ne(ptr, strstr(out, "CORRUPT"), NULL), "%s", out);
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_fsck, a_folder_that_cannot_be_read_gives_2)
{
    char out[512] = "";
    cr_assert(eq(int, run_fsck("/nonexistent/ringcas", out, sizeof(out)), 2));
    cr_assert(ne(ptr, strstr(out, "cannot open"), NULL), "%s", out);
}

Test(blob_fsck, unsealed_tails_are_reported_not_counted_as_corruption)
{
    struct th t = { 0 };
    th_open_sim(&t, 3);
    fill_store(&t, 3);
    th_close_store(&t); /* the active segment stays unsealed */
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.corrupt_records + r.bad_blobs + r.bad_segments, 0));
    cr_assert(eq(u64, r.blobs_ok, 3));
    cr_assert(ge(u64, r.segments, 1));
    cr_assert(ge(u64, r.active, 1), "the active segment ends in zeros: a clean stop");
    cr_assert(eq(u64, r.torn_tails, 0), "a clean stop tears nothing");
    cr_assert(eq(u64, r.sealed + r.active, r.segments));
    char line[512];
    FILE *f = fmemopen(line, sizeof(line), "w");
    blob_fsck_print(&r, "sim", f);
    fclose(f);
    cr_assert(ne(ptr, strstr(line, "3 blobs ok"), NULL), "%s", line);
    cr_assert(ne(ptr, strstr(line, " active, "), NULL), "%s", line);
    cr_assert(ne(ptr, strstr(line, " 0 torn tails"), NULL), "%s", line);
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

struct seg_names {
    char name[16][32]; /* segment file names */
    int len;           /* used */
};

static void collect_seg(void *ctx, const char *name)
{
    struct seg_names *n = ctx;
    if (n->len < 16) snprintf(n->name[n->len++], sizeof(n->name[0]), "%s", name);
}

/* The name of an unsealed segment of a closed store that holds records; "" when none. */
/* noinline: each assertion takes stack under ASan, and inlined helpers add theirs to the test. */
__attribute__((noinline)) static void unsealed_with_records(struct th *t, char *out,
                                                            size_t out_size)
{
    struct seg_names n = { 0 };
    out[0] = 0;
    cr_assert(eq(int, t->io->ops->list(t->io, collect_seg, &n), 0));
    for (int i = 0; i < n.len; i++) {
        uint64_t size;
        cr_assert(eq(int, blob_io_sim_size(t->io, n.name[i], &size), 0));
        if (size <= BLOB_SEG_HEADER_SIZE) continue;
        int fd;
        struct blob_seg_trailer tr;
        cr_assert(eq(int, t->io->ops->open(t->io, n.name[i], O_RDONLY, &fd), 0));
        cr_assert(eq(int, blob_io_pread_full(t->io, fd, &tr, sizeof(tr), size - sizeof(tr)), 0));
        cr_assert(eq(int, t->io->ops->close(t->io, fd), 0));
        uint64_t seq;
        cr_assert(eq(int, blob_format_parse_seg_name(n.name[i], &seq), 0));
        if (blob_format_check_trailer(&tr, seq, size) < 0) {
            snprintf(out, out_size, "%s", n.name[i]);
            return;
        }
    }
}

/* Recovery cuts a torn tail and seals the segment before it: fsck finds no tear after it. */
__attribute__((noinline)) static void recover_and_recheck(struct th *t, uint64_t blobs)
{
    cr_assert(eq(int, th_open_store(t), 0), "recovery cuts the tail");
    th_close_store(t);
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t->io, &r, NULL), 0));
    cr_assert(eq(u64, r.torn_tails, 0), "recovery sealed it before the tear");
    cr_assert(eq(u64, r.blobs_ok, blobs));
    cr_assert(eq(int, th_open_store(t), 0));
    th_close(t);
}

Test(blob_fsck, a_byte_after_the_last_record_of_an_unsealed_segment_is_a_torn_tail)
{
    struct th t = { 0 };
    th_open_sim(&t, 3);
    fill_store(&t, 3);
    th_close_store(&t);
    char name[32];
    unsealed_with_records(&t, name, sizeof(name));
    cr_assert(ne(int, name[0], 0), "the active segment holds the last blob");
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), 0));
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    uint64_t active = r.active;
    /* The last byte of the file: the zero padding after the last record of its last block. */
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, name, size - 1, 0x5a), 0));
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.torn_tails, 1));
    cr_assert(eq(u64, r.active, active - 1));
    cr_assert(eq(u64, r.corrupt_records + r.bad_blobs + r.bad_segments, 0), "not corruption");
    cr_assert(eq(u64, r.blobs_ok, 3), "every record before the tear is sound");
    recover_and_recheck(&t, 3);
}

/*
 * Appends a chunk record whose length is not a multiple of 8 after the last record of the
 * unsealed segment <name> and cuts the file right after its bytes: the record is whole, its
 * padding was never written. Returns the file's new size.
 */
__attribute__((noinline)) static uint64_t append_unpadded_chunk(struct th *t, const char *name)
{
    int fd;
    cr_assert(eq(int, t->io->ops->open(t->io, name, O_RDWR, &fd), 0));
    uint64_t size;
    cr_assert(eq(int, t->io->ops->fsize(t->io, fd, &size), 0));
    uint64_t off = BLOB_SEG_HEADER_SIZE;
    /* Bounded by the file: every record advances at least its header. */
    for (;;) {
        struct blob_record_header h;
        cr_assert(eq(int, blob_io_pread_full(t->io, fd, &h, sizeof(h), off), 0));
        if (blob_format_check_record_header(&h, size - off - sizeof(h)) < 0) break;
        off += blob_record_size(h.payload_len);
    }
    static uint8_t rec[8192];
    uint8_t raw[37];
    memset(raw, 'r', sizeof(raw));
    uint32_t len = blob_chunk_raw_frame(raw, sizeof(raw), rec + 32);
    blob_format_record_header((struct blob_record_header *)(void *)rec, BLOB_RECORD_CHUNK,
                              BLOB_CHUNK_RAW, rec + 32, len, sizeof(raw));
    len += 32;
    cr_assert(ne(u32, len % 8, 0), "a record without its padding");
    cr_assert(eq(int, blob_io_pwrite_full(t->io, fd, rec, len, off), 0));
    cr_assert(eq(int, t->io->ops->ftruncate(t->io, fd, off + len), 0));
    cr_assert(eq(int, t->io->ops->close(t->io, fd), 0));
    return off + len;
}

/* A file cut right after its last record's bytes (a chunk of an upload that a crash stopped),
 * before the padding to 8 bytes: fsck stopped on an assertion (the scan's end was past the
 * file's size). The segment is an active one, as recovery sees it: it keeps the record. */
Test(blob_fsck, a_last_record_without_its_padding_is_active_not_a_crash)
{
    struct th t = { 0 };
    th_open_sim(&t, 12);
    fill_store(&t, 3);
    th_close_store(&t);
    char name[32];
    unsealed_with_records(&t, name, sizeof(name));
    cr_assert(ne(int, name[0], 0), "the active segment holds the last blob");
    uint64_t size = append_unpadded_chunk(&t, name);
    cr_assert(ne(u64, size % 8, 0));
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.corrupt_records + r.bad_blobs + r.bad_segments + r.torn_tails, 0));
    cr_assert(eq(u64, r.blobs_ok, 3));
    cr_assert(ge(u64, r.active, 1));
    recover_and_recheck(&t, 3);
}

Test(blob_fsck, an_empty_segment_file_is_active_not_torn)
{
    struct blob_io *io = blob_io_sim_create(11);
    int fd;
    cr_assert(eq(int, io->ops->open(io, "seg-0000000000000001.rcs", O_CREAT | O_WRONLY, &fd), 0));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(io, &r, NULL), 0));
    cr_assert(eq(u64, r.segments, 1));
    cr_assert(eq(u64, r.active, 1));
    cr_assert(eq(u64, r.torn_tails, 0));
    blob_io_sim_destroy(io);
}

Test(blob_fsck, a_footer_that_disagrees_with_its_records_is_reported)
{
    struct th t = { 0 };
    th_open_sim(&t, 4);
    fill_store(&t, 12); /* several sealed segments */
    th_close_store(&t);
    /* Destroy the first commit record's magic: the records stop early, the footer lists more. */
    static uint8_t seg[70000];
    int fd;
    cr_assert(eq(int, t.io->ops->open(t.io, "seg-0000000000000001.rcs", O_RDONLY, &fd), 0));
    uint64_t size;
    cr_assert(eq(int, t.io->ops->fsize(t.io, fd, &size), 0));
    cr_assert(eq(int, blob_io_pread_full(t.io, fd, seg, size, 0), 0));
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    uint64_t off = 4096;
    while (off + 32 < size) {
        uint32_t plen;
        memcpy(&plen, seg + off + 8, 4);
        if (seg[off + 4] == 2) break;
        off += (32 + plen + 7) & ~7ULL;
    }
    cr_assert(lt(u64, off + 32, size));
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, "seg-0000000000000001.rcs", off, 0xff), 0));
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(gt(u64, r.corrupt_records, 0));
    cr_assert(gt(u64, r.bad_segments, 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

/* Writes a segment by hand whose only commit record names a digest its chunk does not have. */
static void write_lying_segment(struct blob_io *io)
{
    int fd;
    cr_assert(eq(int, io->ops->open(io, "seg-0000000000000001.rcs", O_CREAT | O_WRONLY, &fd), 0));
    static uint8_t seg[8192];
    memset(seg, 0, sizeof(seg));
    struct blob_seg_header h;
    blob_format_seg_header(&h, 1, 0);
    memcpy(seg, &h, sizeof(h));
    struct base_counter mem = { 0 };
    struct blob_chunk_ctx z;
    cr_assert(eq(int, blob_chunk_ctx_init(&z, 1, &mem), 0));
    uint8_t data[100];
    memset(data, 'x', sizeof(data));
    uint32_t used = blob_chunk_encode(&z, data, sizeof(data), seg + 4096);
    blob_chunk_ctx_deinit(&z);
    uint64_t commit_off = 4096 + blob_align8(used);
    uint8_t *p = seg + commit_off;
    struct blob_commit c;
    memset(&c, 0, sizeof(c));
    c.kind = BLOB_KIND_CAS;
    c.digest_fn = BLOB_DIGEST_SHA256;
    c.chunk_shift = 12;
    c.chunk_count = 1;
    c.size = sizeof(data);
    c.commit_seq = 1;
    memset(c.hash, 0x42, sizeof(c.hash)); /* not the SHA-256 of the data */
    struct blob_record_header chunk_h;
    memcpy(&chunk_h, seg + 4096, sizeof(chunk_h));
    struct blob_chunk_ref ref = {
        .seg = 1, .off8 = 4096 / 8, .stored = used - 32, .sum = chunk_h.payload_sum
    };
    memcpy(p + 32, &c, sizeof(c));
    memcpy(p + 32 + sizeof(c), &ref, sizeof(ref));
    struct blob_record_header rh;
    blob_format_record_header(&rh, BLOB_RECORD_COMMIT, 0, p + 32, sizeof(c) + sizeof(ref), 0);
    memcpy(p, &rh, sizeof(rh));
    cr_assert(eq(int, blob_io_pwrite_full(io, fd, seg, sizeof(seg), 0), 0));
    cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
}

Test(blob_fsck, a_blob_whose_bytes_do_not_hash_to_its_name_is_reported)
{
    struct blob_io *io = blob_io_sim_create(7);
    write_lying_segment(io);
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(io, &r, NULL), 0));
    cr_assert(eq(u64, r.bad_blobs, 1));
    cr_assert(eq(u64, r.blobs_ok, 0));
    cr_assert(eq(u64, r.records, 2));
    blob_io_sim_destroy(io);
}

/*
 * Two chunk records of a blob trade places (a misdirected write): each is still a valid
 * record, and an AC value has no digest to catch it. The commits' refs hold each record's
 * payload_sum: both blobs are bad, fsck names the misplaced records and exits 1.
 */
Test(blob_fsck, swapped_chunk_records_make_bad_blobs_even_without_a_digest)
{
    struct th t = { 0 };
    th_open_real(&t);
    static uint8_t buf[4 * 4096];
    th_fill(buf, sizeof(buf), 21, false); /* raw chunks: records of equal length */
    struct blob_key cas;
    th_key_of(&cas, buf, sizeof(buf));
    cr_assert(eq(int, th_put(&t, &cas, buf, sizeof(buf), 0, 0), 0));
    th_fill(buf, sizeof(buf), 22, false);
    struct blob_key ac = { .kind = BLOB_KIND_AC, .digest_fn = BLOB_DIGEST_SHA256 };
    memset(ac.hash, 0x5a, sizeof(ac.hash));
    ac.size = sizeof(buf);
    cr_assert(eq(int, th_put(&t, &ac, buf, sizeof(buf), 0, 0), 0));
    th_close_store(&t);
    char out[4096] = "";
    cr_assert(eq(int, run_fsck(t.dir, out, sizeof(out)), 0), "%s", out);
    struct th_record rec[16];
    cr_assert(eq(u32, th_chunk_records(&t, 1, rec, 16), 8));
    th_swap_records(&t, 1, &rec[1], &rec[2]); /* the CAS blob's */
    th_swap_records(&t, 1, &rec[4], &rec[7]); /* the AC value's */
    cr_assert(eq(int, run_fsck(t.dir, out, sizeof(out)), 1), "%s", out);
    cr_assert(ne(ptr, strstr(out, "0 blobs ok, 0 corrupt records, 2 bad blobs"), NULL), "%s", out);
    char want[96];
    snprintf(want, sizeof(want), "segment 1 offset %llu: chunk record is not the one",
             (unsigned long long)rec[4].off);
    cr_assert(ne(ptr, strstr(out, want), NULL), "%s", out);
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_fsck, a_segment_with_a_bad_header_is_a_bad_segment)
{
    struct th t = { 0 };
    th_open_sim(&t, 8);
    fill_store(&t, 2);
    th_close_store(&t);
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, "seg-0000000000000001.rcs", 8, 1), 0));
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.bad_segments, 1));
    cr_assert(eq(u64, r.blobs_ok, 0), "nothing in it is checked once the header is bad");
    blob_io_sim_destroy(t.io);
}

/* A FIFO named like a segment blocked fsck's open forever; other unopenable names passed as
 * empty active segments. Both are bad segments now, as the server refuses to start on them. */
Test(blob_fsck, a_fifo_named_like_a_segment_is_a_bad_segment_not_a_hang, .timeout = 30)
{
    struct th t = { 0 };
    th_open_real(&t);
    fill_store(&t, 2);
    th_close_store(&t);
    char path[128];
    snprintf(path, sizeof(path), "%s/seg-0000000000000007.rcs", t.dir);
    cr_assert(eq(int, mkfifo(path, 0644), 0));
    char out[4096] = "";
    cr_assert(eq(int, run_fsck(t.dir, out, sizeof(out)), 1), "%s", out);
    cr_assert(ne(ptr, strstr(out, "segment 7 offset 0: not a regular file"), NULL), "%s", out);
    cr_assert(ne(ptr, strstr(out, "2 blobs ok"), NULL), "%s", out);
    cr_assert(ne(ptr, strstr(out, "1 bad segments"), NULL), "%s", out);
    cr_assert(eq(int, unlink(path), 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_fsck, an_empty_folder_is_clean)
{
    struct blob_io *io = blob_io_sim_create(9);
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(io, &r, NULL), 0));
    cr_assert(eq(u64, r.segments, 0));
    char line[512];
    FILE *f = fmemopen(line, sizeof(line), "w");
    blob_fsck_print(&r, "empty", f);
    fclose(f);
    cr_assert(ne(ptr, strstr(line, ": ok:"), NULL), "%s", line);
    blob_io_sim_destroy(io);
}

Test(blob_fsck, a_listing_error_is_reported)
{
    struct blob_io *io = blob_io_sim_create(10);
    blob_io_sim_power_loss(io); /* every operation fails now */
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(io, &r, NULL), -EIO));
    blob_io_sim_restart(io);
    blob_io_sim_destroy(io);
}

/* Reads the trailer of the first segment of a store closed after fill_store. */
static void first_trailer(struct th *t, struct blob_seg_trailer *tr)
{
    int fd;
    cr_assert(eq(int, t->io->ops->open(t->io, "seg-0000000000000001.rcs", O_RDONLY, &fd), 0));
    uint64_t size;
    cr_assert(eq(int, t->io->ops->fsize(t->io, fd, &size), 0));
    cr_assert(eq(int, blob_io_pread_full(t->io, fd, tr, sizeof(*tr), size - sizeof(*tr)), 0));
    cr_assert(eq(int, t->io->ops->close(t->io, fd), 0));
    cr_assert(eq(int, blob_format_check_trailer(tr, 1, size), 0), "segment 1 is sealed");
}

/* A closed store of several sealed segments; <tr>: the first one's trailer. */
static void sealed_store(struct th *t, struct blob_seg_trailer *tr)
{
    th_open_sim(t, 4);
    fill_store(t, 12);
    th_close_store(t);
    first_trailer(t, tr);
}

static struct blob_fsck_report fsck_sim(struct th *t)
{
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t->io, &r, NULL), 0));
    return r;
}

Test(blob_fsck, a_flipped_footer_entry_is_reported)
{
    struct th t = { 0 };
    struct blob_seg_trailer tr;
    sealed_store(&t, &tr);
    cr_assert(gt(u64, tr.count, 0));
    uint64_t at = tr.footer_off + sizeof(struct blob_record_header) + 8; /* entry 0's size */
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, "seg-0000000000000001.rcs", at, 0x01), 0));
    struct blob_fsck_report r = fsck_sim(&t);
    cr_assert(eq(u64, r.corrupt_records, 0), "the records themselves are sound");
    cr_assert(eq(u64, r.bad_segments, 1));
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_fsck, a_footer_with_a_valid_checksum_that_lies_is_reported)
{
    struct th t = { 0 };
    struct blob_seg_trailer tr;
    sealed_store(&t, &tr);
    uint64_t payload = tr.count * sizeof(struct blob_footer_entry);
    uint64_t len = sizeof(struct blob_record_header) + payload;
    uint8_t *buf = malloc(len);
    cr_assert(not(eq(ptr, buf, NULL)));
    int fd;
    cr_assert(eq(int, t.io->ops->open(t.io, "seg-0000000000000001.rcs", O_RDWR, &fd), 0));
    cr_assert(eq(int, blob_io_pread_full(t.io, fd, buf, len, tr.footer_off), 0));
    struct blob_footer_entry *e = (void *)(buf + sizeof(struct blob_record_header));
    e[0].size += 1; /* a footer that names a size its commit record does not */
    struct blob_record_header h;
    blob_format_record_header(&h, BLOB_RECORD_FOOTER, 0, e, (uint32_t)payload, 0);
    memcpy(buf, &h, sizeof(h));
    cr_assert(eq(int, blob_io_pwrite_full(t.io, fd, buf, len, tr.footer_off), 0));
    cr_assert(eq(int, t.io->ops->fdatasync(t.io, fd), 0));
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    free(buf);
    struct blob_fsck_report r = fsck_sim(&t);
    cr_assert(eq(u64, r.corrupt_records, 0));
    cr_assert(eq(u64, r.bad_segments, 1));
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_fsck, a_sealed_segment_with_a_flipped_trailer_is_reported)
{
    struct th t = { 0 };
    struct blob_seg_trailer tr;
    sealed_store(&t, &tr);
    struct blob_fsck_report before = fsck_sim(&t);
    cr_assert(eq(u64, before.bad_segments, 0));
    uint64_t at = tr.file_size - sizeof(tr) + 24; /* records_end */
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, "seg-0000000000000001.rcs", at, 0x10), 0));
    struct blob_fsck_report r = fsck_sim(&t);
    cr_assert(eq(u64, r.bad_segments, 1), "not taken for an unsealed tail");
    cr_assert(eq(u64, r.torn_tails, before.torn_tails));
    cr_assert(eq(int, th_open_store(&t), 0), "recovery copes: it scans the segment");
    th_close(&t);
}

Test(blob_fsck, a_byte_in_the_padding_before_the_footer_is_reported)
{
    struct th t = { 0 };
    struct blob_seg_trailer tr;
    sealed_store(&t, &tr);
    cr_assert(lt(u64, tr.records_end, tr.footer_off), "the footer starts on the next block");
    cr_assert(
        eq(int, blob_io_sim_corrupt(t.io, "seg-0000000000000001.rcs", tr.footer_off - 1, 0x5a), 0));
    struct blob_fsck_report r = fsck_sim(&t);
    cr_assert(eq(u64, r.bad_segments, 1));
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

/*
 * A closed store on the simulated disk holding a blob whose chunks span three segments or
 * more, with <before> blobs of 20 KB before it and a small one after it; <v>: where the spanning
 * blob's commit is.
 */
static void spanning_store(struct th *t, uint64_t seed, int before, struct blob_index_value *v)
{
    th_open_sim(t, seed);
    fill_store(t, before);
    static uint8_t big[200000];
    th_fill(big, sizeof(big), 77, false);
    struct blob_key k;
    th_key_of(&k, big, sizeof(big));
    cr_assert(eq(int, th_put(t, &k, big, sizeof(big), 0, 0), 0));
    cr_assert(blob_store_lookup(t->s, &k, v));
    cr_assert(ge(u16, v->loc.span, 2), "chunks in three segments or more");
    static uint8_t small[3000];
    th_fill(small, sizeof(small), 78, false);
    th_key_of(&k, small, sizeof(small));
    cr_assert(eq(int, th_put(t, &k, small, sizeof(small), 0, 0), 0));
    th_close_store(t);
}

static void unlink_seg(struct th *t, uint64_t seq)
{
    char name[32];
    blob_format_seg_name(seq, name, sizeof(name));
    cr_assert(eq(int, t->io->ops->unlink(t->io, name), 0));
}

Test(blob_fsck, a_blob_whose_oldest_chunks_were_evicted_is_counted_apart)
{
    struct th t = { 0 };
    struct blob_index_value v;
    spanning_store(&t, 51, 2, &v);
    /* Eviction takes the oldest segments first, up to the span's first one: the server's
     * lookups miss the blob from then on, and that is no damage. */
    for (uint64_t seq = 1; seq <= v.loc.seg - v.loc.span; seq++)
        unlink_seg(&t, seq);
    struct blob_fsck_report r = fsck_sim(&t);
    cr_assert(eq(u64, r.evicted_blobs, 1));
    cr_assert(eq(u64, r.bad_blobs, 0), "an evicted blob is not a bad one");
    cr_assert(eq(u64, r.corrupt_records, 0));
    cr_assert(eq(u64, r.bad_segments, 0));
    cr_assert(ge(u64, r.blobs_ok, 1));
    char line[512] = "";
    FILE *f = fmemopen(line, sizeof(line), "w");
    blob_fsck_print(&r, "sim", f);
    fclose(f);
    cr_assert(ne(ptr, strstr(line, ": ok: "), NULL), "%s", line);
    cr_assert(ne(ptr, strstr(line, " 1 evicted blobs, "), NULL), "%s", line);
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_fsck, a_segment_lost_from_inside_a_span_is_damage)
{
    struct th t = { 0 };
    struct blob_index_value v;
    spanning_store(&t, 52, 2, &v);
    /* The middle of the span, with older segments of the same core still there: eviction
     * would have taken those first, so this is a hole (what recovery sets aside). */
    unlink_seg(&t, v.loc.seg - 1);
    struct blob_fsck_report r = fsck_sim(&t);
    cr_assert(eq(u64, r.bad_blobs, 1));
    cr_assert(eq(u64, r.evicted_blobs, 0));
    /* Also when the lost segment is the span's oldest and older ones are there. */
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
    spanning_store(&t, 53, 5, &v);
    cr_assert(gt(u64, v.loc.seg - v.loc.span, 1), "segment 1 holds the blobs before it");
    unlink_seg(&t, v.loc.seg - v.loc.span);
    r = fsck_sim(&t);
    cr_assert(eq(u64, r.bad_blobs, 1));
    cr_assert(eq(u64, r.evicted_blobs, 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}
