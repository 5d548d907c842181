/*
 * Restart: sealed segments are read from their footers; an unsealed tail is scanned and a
 * torn tail cut at the last valid record, then sealed; a damaged footer falls back to a
 * scan; a header-less file is set aside; empty segments go; AC keys take the newest commit
 * across segments; segment numbers and commit numbers continue past what was found.
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
#include "harness.h"

static void put_n(struct th *t, uint64_t n, size_t len, struct blob_key *k)
{
    static uint8_t buf[20000];
    th_fill(buf, len, n, n % 2);
    th_key_of(k, buf, len);
    cr_assert(eq(int, th_put(t, k, buf, len, 0, 0), 0));
}

static bool readable(struct th *t, uint64_t n, size_t len, const struct blob_key *k)
{
    static uint8_t want[20000];
    th_fill(want, len, n, n % 2);
    uint8_t *out;
    size_t got;
    if (th_get(t, k, 0, 0, &out, &got) != 0) return false;
    bool same = got == len && memcmp(out, want, len) == 0;
    free(out);
    return same;
}

static void seg_name(uint64_t seq, char *name)
{
    blob_format_seg_name(seq, name, 32);
}

/* Flips a byte inside the stored copy of <want> (raw-stored bytes) in segment 1. */
static void damage_bytes_of(struct th *t, const uint8_t *want, size_t len)
{
    char name[32];
    seg_name(1, name);
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t->io, name, &size), 0));
    static uint8_t image[32768];
    cr_assert(le(u64, size, sizeof(image)));
    int fd;
    cr_assert(eq(int, t->io->ops->open(t->io, name, O_RDONLY, &fd), 0));
    cr_assert(eq(int, blob_io_pread_full(t->io, fd, image, size, 0), 0));
    cr_assert(eq(int, t->io->ops->close(t->io, fd), 0));
    const uint8_t *at = memmem(image, size, want, len);
    cr_assert(ne(ptr, (void *)(uintptr_t)at, NULL), "the bytes are not stored raw in segment 1");
    cr_assert(eq(int, blob_io_sim_corrupt(t->io, name, (uint64_t)(at - image) + 100, 0x20), 0));
}

Test(blob_recover, sealed_segments_come_back_from_their_footers)
{
    struct th t = { 0 };
    th_open_sim(&t, 1);
    struct blob_key k[40];
    for (uint64_t i = 0; i < 40; i++)
        put_n(&t, i, 5000, &k[i]);
    uint64_t sealed = th_counters(&t).segments_sealed;
    cr_assert(ge(u64, sealed, 2));
    th_reopen(&t);
    for (uint64_t i = 0; i < 40; i++)
        cr_assert(readable(&t, i, 5000, &k[i]), "blob %llu", (unsigned long long)i);
    /* Segment numbers continue after the last one found. */
    th_settle(&t);
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.blobs, 40));
    cr_assert(ge(u64, st.segments, sealed + 1));
    th_close(&t);
}

/*
 * A footer whose checksum is valid and whose entry names a size no commit record can have
 * (past 2^40 - 1, what a scan refuses): the index asserted on it and the store could not
 * start. The footer is damaged however valid its checksum: the segment is scanned and sealed
 * again, and every blob reads back.
 */
Test(blob_recover, a_footer_entry_with_an_impossible_size_falls_back_to_a_scan)
{
    struct th t = { 0 };
    th_open_sim(&t, 41);
    struct blob_key k[30];
    for (uint64_t i = 0; i < 30; i++)
        put_n(&t, 300 + i, 5000, &k[i]);
    cr_assert(ge(u64, th_counters(&t).segments_sealed, 1));
    th_close_store(&t);
    char name[32];
    seg_name(1, name);
    int fd;
    cr_assert(eq(int, t.io->ops->open(t.io, name, O_RDWR, &fd), 0));
    uint64_t size;
    cr_assert(eq(int, t.io->ops->fsize(t.io, fd, &size), 0));
    struct blob_seg_trailer tr;
    cr_assert(eq(int, blob_io_pread_full(t.io, fd, &tr, sizeof(tr), size - sizeof(tr)), 0));
    cr_assert(eq(int, blob_format_check_trailer(&tr, 1, size), 0), "segment 1 is sealed");
    cr_assert(gt(u64, tr.count, 0));
    uint64_t payload = tr.count * sizeof(struct blob_footer_entry);
    uint8_t *buf = malloc(sizeof(struct blob_record_header) + payload);
    cr_assert(ne(ptr, buf, NULL));
    cr_assert(eq(int, blob_io_pread_full(t.io, fd, buf, 32 + payload, tr.footer_off), 0));
    struct blob_footer_entry *e = (void *)(buf + 32);
    e[0].size |= 1ULL << 48;
    blob_format_record_header((struct blob_record_header *)(void *)buf, BLOB_RECORD_FOOTER, 0, e,
                              (uint32_t)payload, 0);
    cr_assert(eq(int, blob_io_pwrite_full(t.io, fd, buf, 32 + payload, tr.footer_off), 0));
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    free(buf);
    cr_assert(eq(int, th_open_store(&t), 0));
    for (uint64_t i = 0; i < 30; i++)
        cr_assert(readable(&t, 300 + i, 5000, &k[i]), "blob %llu", (unsigned long long)i);
    th_close_store(&t);
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.bad_segments + r.corrupt_records + r.bad_blobs, 0),
              "the segment was sealed again from its records");
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

/*
 * A trailer with a valid checksum whose entry count does not fit the file: recovery read as
 * many entries as it says from a footer of the length the count gave, which wraps past 2^64
 * for 2^61 more entries (the entries were read past the buffer's end), and sized the index
 * for the count (64 GiB of slots) before any footer was read. Such a trailer is damaged: the
 * segment is scanned and sealed again, and every blob reads back.
 */
Test(blob_recover, a_trailer_whose_count_does_not_fit_the_file_falls_back_to_a_scan)
{
    for (int mode = 0; mode < 2; mode++) {
        struct th t = { 0 };
        th_open_sim(&t, 43 + (uint64_t)mode);
        struct blob_key k[30];
        for (uint64_t i = 0; i < 30; i++)
            put_n(&t, 400 + i, 5000, &k[i]);
        cr_assert(ge(u64, th_counters(&t).segments_sealed, 1));
        th_close_store(&t);
        char name[32];
        seg_name(1, name);
        int fd;
        cr_assert(eq(int, t.io->ops->open(t.io, name, O_RDWR, &fd), 0));
        uint64_t size;
        cr_assert(eq(int, t.io->ops->fsize(t.io, fd, &size), 0));
        struct blob_seg_trailer tr;
        cr_assert(eq(int, blob_io_pread_full(t.io, fd, &tr, sizeof(tr), size - sizeof(tr)), 0));
        cr_assert(eq(int, blob_format_check_trailer(&tr, 1, size), 0), "segment 1 is sealed");
        /* 2^61 more entries take 56 * 2^61 = 7 * 2^64 more bytes: the same length, wrapped. */
        uint64_t count = mode == 0 ? tr.count + (1ULL << 61) : 1ULL << 40;
        blob_format_trailer(&tr, 1, tr.footer_off, tr.records_end, count, size);
        cr_assert(eq(int, blob_io_pwrite_full(t.io, fd, &tr, sizeof(tr), size - sizeof(tr)), 0));
        cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
        cr_assert(eq(int, th_open_store(&t), 0));
        struct blob_store_stats st;
        blob_store_stats(t.s, &st);
        cr_assert(lt(u64, st.index_bytes, 64ULL << 20),
                  "mode %d: the index is sized by the "
                  "blobs, not by the count",
                  mode);
        for (uint64_t i = 0; i < 30; i++)
            cr_assert(readable(&t, 400 + i, 5000, &k[i]), "mode %d: blob %llu", mode,
                      (unsigned long long)i);
        th_close_store(&t);
        struct blob_fsck_report r;
        cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
        cr_assert(eq(u64, r.bad_segments + r.corrupt_records + r.bad_blobs, 0),
                  "mode %d: the segment was sealed again from its records", mode);
        cr_assert(eq(int, th_open_store(&t), 0));
        th_close(&t);
    }
}

/* Points the first chunk ref of the first commit record of segment <seq> (of a closed store)
 * at segment <to>, with fresh checksums: a commit record written wrongly. */
__attribute__((noinline)) static void retarget_first_ref(struct th *t, uint64_t seq, uint64_t to)
{
    char name[32];
    seg_name(seq, name);
    int fd;
    cr_assert(eq(int, t->io->ops->open(t->io, name, O_RDWR, &fd), 0));
    uint64_t size;
    cr_assert(eq(int, t->io->ops->fsize(t->io, fd, &size), 0));
    static uint8_t image[65536];
    cr_assert(le(u64, size, sizeof(image)));
    cr_assert(eq(int, blob_io_pread_full(t->io, fd, image, size, 0), 0));
    uint64_t off = BLOB_SEG_HEADER_SIZE;
    struct blob_record_header *h = (void *)(image + off);
    /* Bounded by the file: every record advances at least its header. */
    while (h->type != BLOB_RECORD_COMMIT) {
        cr_assert(eq(int, blob_format_check_record_header(h, size - off - sizeof(*h)), 0));
        off += blob_record_size(h->payload_len);
        h = (void *)(image + off);
    }
    struct blob_commit *c = (void *)(h + 1);
    cr_assert(eq(u8, h->version, BLOB_COMMIT_VERSION));
    struct blob_chunk_ref *ref = (void *)(c + 1);
    ref->seg = to;
    blob_format_record_header(h, BLOB_RECORD_COMMIT, 0, c, h->payload_len, 0);
    cr_assert(eq(int, blob_io_pwrite_full(t->io, fd, image, size, 0), 0));
    cr_assert(eq(int, t->io->ops->close(t->io, fd), 0));
}

/*
 * A commit record, checksums valid, whose chunk ref names a segment after its own (chunks
 * precede their commit in the log: a writer's bug, or a misdirected update of the ref): each
 * read ended -ENOENT and the blob stayed present, so every upload that could repair it was
 * told it was there. It is corrupt: the first read drops it, and it can be stored again.
 */
Test(blob_recover, a_commit_whose_chunk_is_in_a_later_segment_is_dropped_on_read)
{
    for (int later_exists = 0; later_exists < 2; later_exists++) {
        struct th t = { 0 };
        th_open_sim(&t, 45 + (uint64_t)later_exists);
        static uint8_t data[3000];
        th_fill(data, sizeof(data), 500, false);
        struct blob_key k;
        th_key_of(&k, data, sizeof(data));
        cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
        th_close_store(&t);
        /* Segment 1 holds the blob; the next start creates segment 2. */
        retarget_first_ref(&t, 1, later_exists ? 2 : 9);
        cr_assert(eq(int, th_open_store(&t), 0));
        cr_assert(blob_exists(t.bc, &k, false), "recovery lists the commit");
        uint8_t *out = NULL;
        size_t n = 0;
        cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), -EBADMSG), "case %d", later_exists);
        cr_assert(not(blob_exists(t.bc, &k, false)), "case %d: dropped", later_exists);
        cr_assert(eq(u64, th_counters(&t).corrupt_chunks, 1));
        cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0), "stored again");
        cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &n), 0));
        cr_assert(eq(sz, n, sizeof(data)));
        cr_assert(memcmp(out, data, n) == 0);
        free(out);
        th_close(&t);
    }
}

/* Sets the span of the footer entry at <off8> of sealed segment <seq> (of a closed store) to
 * <span>, with a valid footer checksum: a footer written wrongly. */
__attribute__((noinline)) static void footer_span_lie(struct th *t, uint64_t seq, uint32_t off8,
                                                      uint16_t span)
{
    char name[32];
    seg_name(seq, name);
    int fd;
    cr_assert(eq(int, t->io->ops->open(t->io, name, O_RDWR, &fd), 0));
    uint64_t size;
    cr_assert(eq(int, t->io->ops->fsize(t->io, fd, &size), 0));
    struct blob_seg_trailer tr;
    cr_assert(eq(int, blob_io_pread_full(t->io, fd, &tr, sizeof(tr), size - sizeof(tr)), 0));
    cr_assert(eq(int, blob_format_check_trailer(&tr, seq, size), 0), "segment %llu is sealed",
              (unsigned long long)seq);
    uint64_t payload = tr.count * sizeof(struct blob_footer_entry);
    uint8_t *buf = malloc(32 + payload);
    cr_assert(ne(ptr, buf, NULL));
    cr_assert(eq(int, blob_io_pread_full(t->io, fd, buf, 32 + payload, tr.footer_off), 0));
    struct blob_footer_entry *e = (void *)(buf + 32);
    uint64_t i = 0;
    while (i < tr.count && e[i].off8 != off8)
        i++;
    cr_assert(lt(u64, i, tr.count), "the footer lists the commit");
    e[i].span = span;
    blob_format_record_header((struct blob_record_header *)(void *)buf, BLOB_RECORD_FOOTER, 0, e,
                              (uint32_t)payload, 0);
    cr_assert(eq(int, blob_io_pwrite_full(t->io, fd, buf, 32 + payload, tr.footer_off), 0));
    cr_assert(eq(int, t->io->ops->close(t->io, fd), 0));
    free(buf);
}

/*
 * A footer, checksum valid, that gives a blob a shorter span than its chunks have: the reads
 * of its chunks before the span ended -ENOENT and the blob stayed present for good. As with
 * a ref to a later segment, the listing is corrupt: the read drops the blob.
 */
Test(blob_recover, a_footer_span_shorter_than_the_chunks_is_dropped_on_read)
{
    struct th t = { 0 };
    th_open_sim(&t, 47);
    static uint8_t big[100000];
    th_fill(big, sizeof(big), 501, false);
    struct blob_key kb;
    th_key_of(&kb, big, sizeof(big));
    cr_assert(eq(int, th_put(&t, &kb, big, sizeof(big), 0, 0), 0));
    struct blob_index_value v;
    cr_assert(blob_store_lookup(t.s, &kb, &v));
    cr_assert(ge(u16, v.loc.span, 1), "chunks in two segments or more");
    struct blob_key k[16];
    for (uint64_t i = 0; i < 16; i++) /* seal the commit's segment */
        put_n(&t, 600 + i, 5000, &k[i]);
    th_close_store(&t);
    footer_span_lie(&t, v.loc.seg, v.loc.off8, 0);
    cr_assert(eq(int, th_open_store(&t), 0));
    cr_assert(blob_exists(t.bc, &kb, false), "recovery lists the commit");
    uint8_t *out = NULL;
    size_t n = 0;
    cr_assert(eq(int, th_get(&t, &kb, 0, 0, &out, &n), -EBADMSG));
    cr_assert(not(blob_exists(t.bc, &kb, false)), "dropped");
    cr_assert(eq(int, th_put(&t, &kb, big, sizeof(big), 0, 0), 0), "stored again");
    cr_assert(eq(int, th_get(&t, &kb, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(big)));
    cr_assert(memcmp(out, big, n) == 0);
    free(out);
    th_close(&t);
}

Test(blob_recover, a_torn_tail_is_cut_at_the_last_valid_record)
{
    struct th t = { 0 };
    th_open_sim(&t, 2);
    struct blob_key a;
    struct blob_key b;
    put_n(&t, 1, 3000, &a);
    put_n(&t, 2, 3000, &b);
    th_close_store(&t);
    /* Tear the second blob's records: garbage in its chunk. */
    char name[32];
    seg_name(1, name);
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), 0));
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, name, 4096 + 3300, 0x5a), 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    cr_assert(readable(&t, 1, 3000, &a), "the record before the tear");
    cr_assert(not(blob_exists(t.bc, &b, false)), "records after the tear are cut");
    /* The segment is sealed now: a second restart reads its footer and agrees. */
    th_reopen(&t);
    cr_assert(readable(&t, 1, 3000, &a));
    cr_assert(not(blob_exists(t.bc, &b, false)));
    th_close(&t);
}

Test(blob_recover, a_damaged_footer_falls_back_to_a_scan)
{
    struct th t = { 0 };
    th_open_sim(&t, 3);
    struct blob_key k[30];
    for (uint64_t i = 0; i < 30; i++)
        put_n(&t, 100 + i, 5000, &k[i]);
    cr_assert(ge(u64, th_counters(&t).segments_sealed, 1));
    th_close_store(&t);
    char name[32];
    seg_name(1, name);
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), 0));
    /* Flip a byte of the trailer: the footer cannot be trusted. */
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, name, size - 20, 1), 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.recovery_cuts, 0), "a footer after the records is no damage");
    for (uint64_t i = 0; i < 30; i++)
        cr_assert(readable(&t, 100 + i, 5000, &k[i]), "blob %llu", (unsigned long long)i);
    th_close(&t);
}

Test(blob_recover, a_file_without_a_header_is_set_aside)
{
    struct th t = { 0 };
    th_open_sim(&t, 4);
    struct blob_key k;
    put_n(&t, 1, 3000, &k);
    th_close_store(&t);
    char name[32];
    seg_name(1, name);
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, name, 3, 1), 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    uint64_t size;
    char bad[48];
    snprintf(bad, sizeof(bad), "%s.bad", name);
    cr_assert(eq(int, blob_io_sim_size(t.io, bad, &size), 0), "kept for inspection");
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), -ENOENT));
    put_n(&t, 1, 3000, &k);
    th_close(&t);
}

Test(blob_recover, segments_without_records_are_deleted)
{
    struct th t = { 0 };
    th_open_sim(&t, 5);
    th_settle(&t); /* the core opened segment 1 and wrote nothing */
    th_close_store(&t);
    uint64_t size;
    char name[32];
    seg_name(1, name);
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), -ENOENT));
    th_close(&t);
}

Test(blob_recover, unknown_files_are_left_alone)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.io = blob_io_sim_create(6);
    snprintf(t.dir, sizeof(t.dir), "sim");
    int fd;
    cr_assert(eq(int, t.io->ops->open(t.io, "README", O_CREAT | O_WRONLY, &fd), 0));
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    cr_assert(eq(int, t.io->ops->open(t.io, "seg-zz.rcs", O_CREAT | O_WRONLY, &fd), 0));
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, "README", &size), 0));
    th_close(&t);
}

/* A FIFO named like a segment blocked a read-only open until a writer came: start-up hung
 * forever with no line. Now the open refuses it at once, and so does the store, with a reason
 * that names the file and what to do; a folder of that name is refused the same way. */
Test(blob_recover, a_fifo_or_folder_named_like_a_segment_stops_the_open_with_a_reason,
     .timeout = 30)
{
    struct th t = { 0 };
    th_open_real(&t);
    struct blob_key k;
    put_n(&t, 1, 3000, &k);
    th_close_store(&t);
    char name[32];
    seg_name(7, name);
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", t.dir, name);
    for (int kind = 0; kind < 2; kind++) {
        cr_assert(eq(int, kind == 0 ? mkfifo(path, 0644) : mkdir(path, 0755), 0));
        char why[256] = "";
        t.o.io = NULL;
        t.o.dir = t.dir;
        struct blob_store *s;
        int rc = blob_store_open(&t.o, &s, why, sizeof(why));
        cr_assert(eq(int, rc, kind == 0 ? -ENODEV : -EISDIR));
        cr_assert(ne(ptr, strstr(why, name), NULL), "%s", why);
        cr_assert(ne(ptr, strstr(why, "not a regular file"), NULL), "%s", why);
        struct stat st;
        cr_assert(eq(int, stat(path, &st), 0), "left where it was");
        cr_assert(eq(int, kind == 0 ? unlink(path) : rmdir(path), 0));
    }
    cr_assert(eq(int, th_open_store(&t), 0), "once it is gone, the store opens");
    cr_assert(readable(&t, 1, 3000, &k));
    th_close(&t);
}

Test(blob_recover, the_newest_ac_value_wins_across_segments)
{
    struct th t = { 0 };
    th_open_sim(&t, 7);
    uint8_t key[BLOB_HASH_SIZE];
    memset(key, 0x42, sizeof(key));
    static uint8_t v[6000];
    struct blob_key filler;
    for (uint8_t i = 1; i <= 6; i++) {
        memset(v, i, sizeof(v));
        struct blob_key k;
        blob_key_ac(&k, key, sizeof(v) - i);
        cr_assert(eq(int, th_put(&t, &k, v, sizeof(v) - i, 0, 0), 0));
        for (uint64_t j = 0; j < 8; j++)
            put_n(&t, 1000 + i * 20 + 2 * j, 6000, &filler);
    }
    cr_assert(ge(u64, th_counters(&t).segments_sealed, 3));
    th_reopen(&t);
    struct blob_key look;
    blob_key_ac(&look, key, 0);
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &look, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, sizeof(v) - 6));
    cr_assert(eq(u8, out[0], 6));
    free(out);
    th_close(&t);
}

Test(blob_recover, commit_numbers_continue_after_a_restart)
{
    struct th t = { 0 };
    th_open_sim(&t, 8);
    struct blob_key k;
    put_n(&t, 1, 100, &k);
    uint64_t before = atomic_load(&t.s->commit_seq);
    th_reopen(&t);
    cr_assert(ge(u64, atomic_load(&t.s->commit_seq), before));
    uint8_t key[BLOB_HASH_SIZE] = { 9 };
    struct blob_key ac;
    blob_key_ac(&ac, key, 3);
    cr_assert(eq(int, th_put(&t, &ac, "old", 3, 0, 0), 0));
    th_reopen(&t);
    blob_key_ac(&ac, key, 3);
    cr_assert(eq(int, th_put(&t, &ac, "new", 3, 0, 0), 0));
    th_reopen(&t);
    blob_key_ac(&ac, key, 0);
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(&t, &ac, 0, 0, &out, &n), 0));
    cr_assert(memcmp(out, "new", 3) == 0, "a value written after a restart is newer");
    free(out);
    th_close(&t);
}

Test(blob_recover, a_read_error_during_recovery_fails_the_open_with_a_reason)
{
    struct th t = { 0 };
    th_open_sim(&t, 9);
    struct blob_key k;
    put_n(&t, 1, 100, &k);
    th_close_store(&t);
    blob_io_sim_fail_at(t.io, 3, -EIO);
    char why[256] = "";
    t.o.io = t.io;
    struct blob_store *s;
    int rc = blob_store_open(&t.o, &s, why, sizeof(why));
    cr_assert(eq(int, rc, -EIO));
    cr_assert(ne(ptr, strstr(why, "segment"), NULL), "%s", why);
    cr_assert(eq(int, th_open_store(&t), 0), "the next try works");
    cr_assert(blob_exists(t.bc, &k, false));
    th_close(&t);
}

struct visit {
    uint64_t n;
};

static void count_entry(void *ctx, const struct blob_footer_entry *e)
{
    (void)e;
    ((struct visit *)ctx)->n++;
}

Test(blob_recover, visit_lists_commits_from_footers_and_scans_alike)
{
    struct th t = { 0 };
    th_open_sim(&t, 10);
    struct blob_key k;
    for (uint64_t i = 0; i < 20; i++)
        put_n(&t, 50 + i, 5000, &k);
    th_close_store(&t);
    char name[32];
    seg_name(1, name);
    int fd;
    cr_assert(eq(int, t.io->ops->open(t.io, name, O_RDONLY, &fd), 0));
    uint64_t size;
    cr_assert(eq(int, t.io->ops->fsize(t.io, fd, &size), 0));
    struct visit footer = { 0 };
    struct blob_visit v = {
        .io = t.io, .fd = fd, .seq = 1, .size = size, .fn = count_entry, .ctx = &footer
    };
    cr_assert(eq(int, blob_recover_visit(&v), 0));
    cr_assert(v.sealed);
    cr_assert(gt(u64, footer.n, 0));
    /* Pretend the file is shorter: no trailer, a scan finds the same commits. */
    struct visit scan = { 0 };
    v.size = size - 1;
    v.ctx = &scan;
    cr_assert(eq(int, blob_recover_visit(&v), 0));
    cr_assert(not(v.sealed));
    cr_assert(eq(u64, scan.n, footer.n));
    v.seq = 2;
    v.size = size;
    cr_assert(eq(int, blob_recover_visit(&v), -EBADMSG), "the header names segment 1");
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_recover, every_torn_length_of_the_last_record_is_cut_cleanly)
{
    /* Cut the file at every 8-byte step through the last two records: recovery keeps the
     * records before the cut and nothing else, never crashes, and the store works after. */
    struct th t = { 0 };
    th_open_sim(&t, 20);
    struct blob_key a;
    struct blob_key b;
    put_n(&t, 2, 2000, &a);
    put_n(&t, 4, 2000, &b);
    th_close_store(&t);
    char name[32];
    seg_name(1, name);
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), 0));
    int fd;
    cr_assert(eq(int, t.io->ops->open(t.io, name, O_RDONLY, &fd), 0));
    static uint8_t image[16384];
    cr_assert(le(u64, size, sizeof(image)));
    cr_assert(eq(int, blob_io_pread_full(t.io, fd, image, size, 0), 0));
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    for (uint64_t cut = 4096 + 2000; cut <= size; cut += 8) {
        /* Rebuild the file as it was, cut at <cut>. */
        (void)t.io->ops->unlink(t.io, name); /* recovery may have deleted or set it aside */
        cr_assert(eq(int, t.io->ops->open(t.io, name, O_CREAT | O_WRONLY, &fd), 0));
        cr_assert(eq(int, blob_io_pwrite_full(t.io, fd, image, cut, 0), 0));
        cr_assert(eq(int, t.io->ops->fdatasync(t.io, fd), 0));
        cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
        cr_assert(eq(int, th_open_store(&t), 0), "cut at %llu", (unsigned long long)cut);
        struct blob_store_stats st;
        blob_store_stats(t.s, &st);
        cr_assert(eq(u64, st.recovery_cuts, 0), "a torn tail is no damage (cut at %llu)",
                  (unsigned long long)cut);
        bool has_a = blob_exists(t.bc, &a, false);
        bool has_b = blob_exists(t.bc, &b, false);
        cr_assert(not(has_b && !has_a), "b survived a cut before a");
        if (has_a) cr_assert(readable(&t, 2, 2000, &a));
        if (has_b) cr_assert(readable(&t, 4, 2000, &b));
        th_close_store(&t);
        /* Recovery sealed the file: drop what it wrote for the next cut. */
        char bad[48];
        snprintf(bad, sizeof(bad), "%s.bad", name);
        (void)t.io->ops->unlink(t.io, bad);
        for (uint64_t s = 2; s < 6; s++) {
            char other[32];
            seg_name(s, other);
            (void)t.io->ops->unlink(t.io, other);
        }
    }
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_recover, a_crash_before_the_first_write_leaves_an_empty_store)
{
    struct th t = { 0 };
    th_open_sim(&t, 21);
    th_settle(&t);
    blob_io_sim_power_loss(t.io);
    th_settle(&t);
    blob_core_quiesce(t.bc);
    th_settle(&t);
    blob_core_deinit(t.bc);
    blob_store_close(t.s);
    blob_io_sim_restart(t.io);
    cr_assert(eq(int, th_open_store(&t), 0));
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.blobs, 0));
    struct blob_key k;
    put_n(&t, 6, 1000, &k);
    th_close(&t);
}

Test(blob_recover, many_restarts_in_a_row_change_nothing)
{
    struct th t = { 0 };
    th_open_sim(&t, 22);
    struct blob_key k[10];
    for (uint64_t i = 0; i < 10; i++)
        put_n(&t, 300 + i, 7000, &k[i]);
    struct blob_store_stats first;
    th_reopen(&t);
    blob_store_stats(t.s, &first);
    for (int r = 0; r < 5; r++) {
        th_reopen(&t);
        struct blob_store_stats st;
        blob_store_stats(t.s, &st);
        cr_assert(eq(u64, st.blobs, first.blobs));
        cr_assert(eq(u64, st.disk_bytes, first.disk_bytes), "restart %d grew the store", r);
    }
    for (uint64_t i = 0; i < 10; i++)
        cr_assert(readable(&t, 300 + i, 7000, &k[i]));
    th_close(&t);
}

Test(blob_recover, a_damaged_record_inside_an_unsealed_segment_keeps_the_records_after_it)
{
    /* A clean stop leaves the active segment unsealed: a flipped byte in an acknowledged
     * record must not cut the acknowledged records after it as if it were a torn tail. */
    struct th t = { 0 };
    th_open_sim(&t, 21);
    struct blob_key k[4];
    for (uint64_t i = 0; i < 4; i++)
        put_n(&t, 2 * i, 3000, &k[i]); /* even: random bytes, stored raw */
    th_close_store(&t);
    static uint8_t want[3000];
    th_fill(want, sizeof(want), 2, false);
    damage_bytes_of(&t, want, sizeof(want)); /* the second blob's chunk */
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.corrupt_records, 1));
    cr_assert(eq(u64, r.torn_tails, 0));
    for (int round = 0; round < 2; round++) { /* scanned, then from the footer it wrote */
        cr_assert(eq(int, th_open_store(&t), 0));
        cr_assert(readable(&t, 0, 3000, &k[0]));
        cr_assert(not(blob_exists(t.bc, &k[1], false)), "the damaged blob is not indexed");
        cr_assert(readable(&t, 4, 3000, &k[2]), "acknowledged after the damage, round %d", round);
        cr_assert(readable(&t, 6, 3000, &k[3]), "acknowledged after the damage, round %d", round);
        th_close_store(&t);
    }
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.bad_segments, 0), "the footer recovery wrote agrees with fsck");
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

Test(blob_recover, a_damaged_record_header_inside_an_unsealed_segment_is_reported_not_torn)
{
    /* A damaged header has no length to skip by: the scan still cuts there and the
     * acknowledged records after it are lost (not salvaged), but valid records after the cut
     * tell damage from a torn tail. Before, recovery logged nothing and fsck passed it as a
     * torn tail with exit status 0. */
    struct th t = { 0 };
    th_open_sim(&t, 22);
    struct blob_key k[4];
    for (uint64_t i = 0; i < 4; i++)
        put_n(&t, 2 * i, 3000, &k[i]); /* even: random bytes, stored raw */
    th_close_store(&t);
    char name[32];
    seg_name(1, name);
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), 0));
    static uint8_t image[32768];
    cr_assert(le(u64, size, sizeof(image)));
    int fd;
    cr_assert(eq(int, t.io->ops->open(t.io, name, O_RDONLY, &fd), 0));
    cr_assert(eq(int, blob_io_pread_full(t.io, fd, image, size, 0), 0));
    cr_assert(eq(int, t.io->ops->close(t.io, fd), 0));
    static uint8_t want[3000];
    th_fill(want, sizeof(want), 2, false);
    const uint8_t *at = memmem(image, size, want, sizeof(want));
    cr_assert(ne(ptr, (void *)(uintptr_t)at, NULL), "the second blob's chunk");
    uint64_t hdr = (uint64_t)(at - image) - sizeof(struct blob_record_header);
    cr_assert(eq(int, blob_io_sim_corrupt(t.io, name, hdr + 9, 0xff), 0));
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.corrupt_records, 1), "damage, not a torn tail");
    cr_assert(eq(u64, r.torn_tails, 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.recovery_cuts, 1), "the cut is counted (and logged)");
    cr_assert(readable(&t, 0, 3000, &k[0]));
    for (int i = 1; i < 4; i++)
        cr_assert(not(blob_exists(t.bc, &k[i], false)), "blob %d: the cut is kept as it was", i);
    th_close_store(&t);
    /* Recovery sealed it at the cut: from then on it is an ordinary sealed segment. */
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.corrupt_records + r.bad_segments + r.bad_blobs, 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.recovery_cuts, 0));
    th_close(&t);
}

/*
 * A blob whose chunks span segments, with its middle segment lost (header damaged: set aside;
 * or the file gone): recovery must not index it, else every lookup answered present, every
 * read ended at the hole, and every upload that could repair it ended as "already present".
 */
Test(blob_recover, a_blob_whose_middle_segment_is_lost_is_not_indexed)
{
    for (int mode = 0; mode < 2; mode++) {
        struct th t = { 0 };
        th_open_sim(&t, 31 + (uint64_t)mode);
        static uint8_t big[200000];
        th_fill(big, sizeof(big), 77, false);
        struct blob_key kb;
        th_key_of(&kb, big, sizeof(big));
        cr_assert(eq(int, th_put(&t, &kb, big, sizeof(big), 0, 0), 0));
        struct blob_key after;
        put_n(&t, 5, 3000, &after);
        struct blob_index_value v;
        cr_assert(blob_store_lookup(t.s, &kb, &v));
        cr_assert(ge(u16, v.loc.span, 2), "chunks in three segments or more");
        th_close_store(&t);
        char name[32];
        seg_name(v.loc.seg - 1, name);
        if (mode == 0) {
            /* The seq field of the header: recovery sets the segment aside. */
            cr_assert(eq(int, blob_io_sim_corrupt(t.io, name, 20, 1), 0));
        } else {
            cr_assert(eq(int, t.io->ops->unlink(t.io, name), 0));
        }
        cr_assert(eq(int, th_open_store(&t), 0));
        cr_assert(not(blob_exists(t.bc, &kb, false)), "mode %d: a blob with a hole", mode);
        uint8_t *out = NULL;
        size_t n = 0;
        cr_assert(eq(int, th_get(&t, &kb, 0, 0, &out, &n), -ENOENT));
        cr_assert(readable(&t, 5, 3000, &after), "the blob after it is whole");
        struct blob_store_stats st;
        blob_store_stats(t.s, &st);
        cr_assert(eq(u64, st.dropped_corrupt, 1));
        /* It can be stored again, and the new copy outlives the next restart. */
        cr_assert(eq(int, th_put(&t, &kb, big, sizeof(big), 0, 0), 0));
        th_reopen(&t);
        cr_assert(eq(int, th_get(&t, &kb, 0, 0, &out, &n), 0));
        cr_assert(eq(sz, n, sizeof(big)));
        cr_assert(memcmp(out, big, n) == 0);
        free(out);
        th_close(&t);
    }
}

/* The newest value of an AC key has a hole in its span: the key is missing after a restart,
 * not answered with the older value it replaced. */
Test(blob_recover, an_ac_value_with_a_lost_segment_does_not_bring_back_the_older_one)
{
    struct th t = { 0 };
    th_open_sim(&t, 33);
    uint8_t key[BLOB_HASH_SIZE];
    memset(key, 0x24, sizeof(key));
    static uint8_t old[3000];
    memset(old, 1, sizeof(old));
    struct blob_key k;
    blob_key_ac(&k, key, sizeof(old));
    cr_assert(eq(int, th_put(&t, &k, old, sizeof(old), 0, 0), 0));
    static uint8_t big[200000];
    th_fill(big, sizeof(big), 79, false);
    blob_key_ac(&k, key, sizeof(big));
    cr_assert(eq(int, th_put(&t, &k, big, sizeof(big), 0, 0), 0));
    struct blob_key look;
    blob_key_ac(&look, key, 0);
    struct blob_index_value v;
    cr_assert(blob_store_lookup(t.s, &look, &v));
    cr_assert(ge(u16, v.loc.span, 2), "chunks in three segments or more");
    cr_assert(gt(u64, v.loc.seg - v.loc.span, 0));
    th_close_store(&t);
    char name[32];
    seg_name(v.loc.seg - 1, name);
    cr_assert(eq(int, t.io->ops->unlink(t.io, name), 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    cr_assert(not(blob_exists(t.bc, &look, false)), "the replaced value came back");
    th_close(&t);
}

Test(blob_recover, an_ac_value_with_a_damaged_chunk_does_not_bring_back_the_older_one)
{
    /* Both values in the unsealed active segment; the newer one's chunk is damaged. The key
     * must read as a miss, never as the value the client replaced. */
    struct th t = { 0 };
    th_open_sim(&t, 35);
    uint8_t key[BLOB_HASH_SIZE];
    memset(key, 0x25, sizeof(key));
    static uint8_t old[3000];
    static uint8_t newer[3000];
    th_fill(old, sizeof(old), 40, false); /* random bytes: stored raw, findable */
    th_fill(newer, sizeof(newer), 42, false);
    struct blob_key k;
    blob_key_ac(&k, key, sizeof(old));
    cr_assert(eq(int, th_put(&t, &k, old, sizeof(old), 0, 0), 0));
    blob_key_ac(&k, key, sizeof(newer));
    cr_assert(eq(int, th_put(&t, &k, newer, sizeof(newer), 0, 0), 0));
    struct blob_key filler;
    put_n(&t, 44, 3000, &filler); /* a valid record after the damage */
    th_close_store(&t);
    damage_bytes_of(&t, newer, sizeof(newer)); /* the newer value's chunk */
    struct blob_key look;
    blob_key_ac(&look, key, 0);
    for (int round = 0; round < 2; round++) { /* scanned, then from the footer it wrote */
        cr_assert(eq(int, th_open_store(&t), 0));
        uint8_t *out = NULL;
        size_t n = 0;
        int rc = th_get(&t, &look, 0, 0, &out, &n);
        bool older = rc == 0 && n == sizeof(old) && memcmp(out, old, n) == 0;
        free(out);
        cr_assert(not(older), "round %d: the replaced value came back", round);
        cr_assert(ne(int, rc, 0), "round %d: the damaged value read as a value", round);
        cr_assert(not(blob_exists(t.bc, &look, false)), "round %d: a miss after the read", round);
        cr_assert(readable(&t, 44, 3000, &filler));
        th_close_store(&t);
    }
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

/*
 * Writes segment <seq> by hand as a build before format version 2 did: the chunk records of
 * <len> bytes of <data> (4 KiB chunks), then a version-1 commit record of CAS blob <k>, whose
 * refs are 16 bytes (no payload_sum). Unsealed, as a server leaves its active segment.
 */
static void write_v1_segment(struct blob_io *io, uint64_t seq, const uint8_t *data, size_t len,
                             const struct blob_key *k)
{
    static uint8_t seg[64 * 1024];
    memset(seg, 0, sizeof(seg));
    struct blob_seg_header sh;
    blob_format_seg_header(&sh, seq, 0);
    memcpy(seg, &sh, sizeof(sh));
    struct base_counter mem = { 0 };
    struct blob_chunk_ctx z;
    cr_assert(eq(int, blob_chunk_ctx_init(&z, 1, &mem), 0));
    struct blob_chunk_ref_v1 refs[8];
    uint32_t chunks = 0;
    uint64_t off = BLOB_SEG_HEADER_SIZE;
    for (size_t at = 0; at < len; at += 4096) {
        uint32_t n = (uint32_t)(len - at < 4096 ? len - at : 4096);
        cr_assert(lt(u32, chunks, 8));
        cr_assert(le(u64, off + blob_chunk_record_bound(n), sizeof(seg) / 2));
        uint32_t used = blob_chunk_encode(&z, data + at, n, seg + off);
        refs[chunks++] = (struct blob_chunk_ref_v1){ seq, (uint32_t)(off / 8), used - 32 };
        off += blob_align8(used);
    }
    blob_chunk_ctx_deinit(&z);
    struct blob_commit c = { .kind = k->kind,
                             .digest_fn = k->digest_fn,
                             .chunk_shift = 12,
                             .chunk_count = chunks,
                             .size = len,
                             .commit_seq = 1 };
    memcpy(c.hash, k->hash, sizeof(c.hash));
    uint8_t *p = seg + off;
    uint32_t plen = (uint32_t)(sizeof(c) + chunks * sizeof(refs[0]));
    cr_assert(eq(u64, plen, blob_commit_payload_len_of(BLOB_FORMAT_VERSION, chunks)));
    memcpy(p + 32, &c, sizeof(c));
    memcpy(p + 32 + sizeof(c), refs, chunks * sizeof(refs[0]));
    struct blob_record_header rh;
    blob_format_record_header(&rh, BLOB_RECORD_COMMIT, 0, p + 32, plen, 0);
    rh.version = 1; /* what every record header said before version 2 */
    rh.header_sum = blob_format_sum(&rh, offsetof(struct blob_record_header, header_sum));
    memcpy(p, &rh, sizeof(rh));
    off += blob_record_size(plen);
    char name[32];
    blob_format_seg_name(seq, name, sizeof(name));
    int fd;
    cr_assert(eq(int, io->ops->open(io, name, O_CREAT | O_WRONLY, &fd), 0));
    cr_assert(eq(int, blob_io_pwrite_full(io, fd, seg, blob_align_block(off), 0), 0));
    cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
}

/*
 * A store written before format version 2 (commit records of version 1, refs without the
 * chunk records' payload_sum) opens, reads in both encodings, passes fsck, and takes new
 * (version 2) commits beside it: scanned the first time, then from the footer recovery wrote.
 */
Test(blob_recover, a_store_with_version_1_commit_records_still_reads)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.io = blob_io_sim_create(61);
    snprintf(t.dir, sizeof(t.dir), "sim");
    static uint8_t old[3 * 4096 - 100];
    th_fill(old, sizeof(old), 61, false);
    struct blob_key k;
    th_key_of(&k, old, sizeof(old));
    write_v1_segment(t.io, 1, old, sizeof(old), &k);
    struct blob_key fresh;
    for (int round = 0; round < 2; round++) {
        cr_assert(eq(int, th_open_store(&t), 0), "round %d", round);
        for (int enc = 0; enc <= 1; enc++) {
            uint8_t *out = NULL;
            size_t n = 0;
            cr_assert(eq(int, th_get(&t, &k, 0, enc, &out, &n), 0), "round %d enc %d", round, enc);
            cr_assert(eq(u64, n, sizeof(old)));
            cr_assert(memcmp(out, old, n) == 0);
            free(out);
        }
        if (round == 0) put_n(&t, 62, 9000, &fresh);
        cr_assert(readable(&t, 62, 9000, &fresh));
        th_close_store(&t);
        struct blob_fsck_report r;
        cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
        cr_assert(eq(u64, r.blobs_ok, 2), "round %d", round);
        cr_assert(eq(u64, r.bad_blobs + r.corrupt_records + r.bad_segments, 0));
    }
    cr_assert(eq(int, th_open_store(&t), 0));
    th_close(&t);
}

/* Writes filler through <t> until <k> is in the cold part of the log (a read refreshes it). */
static void make_cold_v1(struct th *t, const struct blob_key *k)
{
    struct blob_info info = { 0 };
    struct blob_key f;
    for (uint64_t n = 0; n < 1000; n++) {
        put_n(t, 80000 + 2 * n, 8000, &f); /* even: incompressible */
        cr_assert(eq(int, blob_stat(t->bc, k, &info), 0), "evicted before it was cold");
        if (info.cold) return;
    }
    cr_assert(0, "never cold");
}

/* The record header of the commit record of the blob indexed as <k>, read from its segment. */
static struct blob_record_header commit_header_of(struct th *t, const struct blob_key *k)
{
    struct blob_index_value v;
    cr_assert(blob_store_lookup(t->s, k, &v));
    struct blob_seg *seg = blob_segment_get(&t->s->segs, v.loc.seg);
    cr_assert(ne(ptr, seg, NULL));
    struct blob_record_header h;
    cr_assert(
        eq(int, blob_io_pread_full(t->s->io, seg->fd, &h, sizeof(h), (uint64_t)v.loc.off8 * 8), 0));
    blob_segment_put(&t->s->segs, seg);
    return h;
}

/* A simulated store (1 MiB budget) holding one version-1 blob of <len> bytes at <data>, filled
 * from <seed>; not opened. */
static void v1_store(struct th *t, uint64_t seed, uint8_t *data, size_t len, bool compressible,
                     struct blob_key *k)
{
    th_options_small(&t->o);
    t->o.max_size = 1 << 20;
    t->io = blob_io_sim_create(seed);
    snprintf(t->dir, sizeof(t->dir), "sim");
    th_fill(data, len, seed, compressible);
    th_key_of(k, data, len);
    write_v1_segment(t->io, 1, data, len, k);
}

/*
 * A blob of a store written before format version 2 that turns cold is copied to the head
 * like any other: the copy is a version-2 commit record whose refs hold the sums of the
 * chunk records it copied, reads the same in both encodings, also once the old segment is
 * gone, and passes fsck.
 */
Test(blob_recover, a_version_1_blob_refreshed_is_written_as_a_version_2_commit)
{
    struct th t = { 0 };
    static uint8_t old[3 * 4096 - 100];
    struct blob_key k;
    v1_store(&t, 63, old, sizeof(old), true, &k);
    cr_assert(eq(int, th_open_store(&t), 0));
    cr_assert(eq(u8, commit_header_of(&t, &k).version, 1));
    make_cold_v1(&t, &k);
    cr_assert(blob_exists(t.bc, &k, true));
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).refreshes, 1));
    struct blob_index_value v;
    cr_assert(blob_store_lookup(t.s, &k, &v));
    cr_assert(gt(u32, v.loc.seg, 1), "the copy is at the head");
    cr_assert(eq(u8, commit_header_of(&t, &k).version, BLOB_COMMIT_VERSION));
    for (int enc = 0; enc <= 1; enc++) {
        uint8_t *out = NULL;
        size_t n = 0;
        cr_assert(eq(int, th_get(&t, &k, 0, enc, &out, &n), 0), "enc %d", enc);
        cr_assert(eq(u64, n, sizeof(old)));
        cr_assert(memcmp(out, old, n) == 0);
        free(out);
    }
    th_close_store(&t);
    struct blob_fsck_report r;
    cr_assert(eq(int, blob_fsck_run(t.io, &r, NULL), 0));
    cr_assert(eq(u64, r.bad_blobs + r.corrupt_records + r.bad_segments, 0));
    cr_assert(eq(int, th_open_store(&t), 0));
    cr_assert(eq(u8, commit_header_of(&t, &k).version, BLOB_COMMIT_VERSION));
    th_close(&t);
}

/*
 * docs/format.md: a version-1 commit cannot tell a misplaced chunk record of the same length,
 * so its blob "is served with the wrong bytes, as before, until fsck finds it or a refresh
 * rewrites it". The refresh copies the records it finds (their own checksums pass) and writes
 * a version-2 commit whose refs hold the misplaced records' sums: the wrong bytes are now
 * bound as if they were the blob's, and still served. A copy of a version-1 blob is the one
 * chance to check what the new refs bind (a CAS blob's digest): it must not serve the wrong
 * bytes once it has been rewritten.
 */
Test(blob_recover, a_refresh_does_not_bind_a_version_1_blobs_misplaced_chunk_records)
{
    struct th t = { 0 };
    static uint8_t old[3 * 4096 - 100];
    struct blob_key k;
    v1_store(&t, 64, old, sizeof(old), false, &k); /* raw chunks: the first two are as long */
    struct th_record rec[4];
    cr_assert(eq(u32, th_chunk_records(&t, 1, rec, 4), 3));
    th_swap_records(&t, 1, &rec[0], &rec[1]); /* a misdirected write */
    cr_assert(eq(int, th_open_store(&t), 0));
    make_cold_v1(&t, &k);
    cr_assert(blob_exists(t.bc, &k, true));
    th_settle(&t);
    struct blob_index_value v;
    if (blob_store_lookup(t.s, &k, &v) && v.loc.seg > 1) {
        cr_assert(eq(u8, commit_header_of(&t, &k).version, BLOB_COMMIT_VERSION));
    }
    uint8_t *out = NULL;
    size_t n = 0;
    int rc = th_get(&t, &k, 0, BLOB_ENCODING_IDENTITY, &out, &n);
    bool wrong = rc == 0 && (n != sizeof(old) || memcmp(out, old, n) != 0);
    free(out);
    cr_assert(not(wrong),
              "rewritten by its refresh (%llu copies), the blob still reads the "
              "misplaced records' bytes, now under a version-2 commit",
              (unsigned long long)th_counters(&t).refreshes);
    cr_assert(eq(int, rc, -ENOENT), "its copy found the bytes do not hash to the digest");
    cr_assert(eq(u64, th_counters(&t).refreshes, 0));
    th_close(&t);
}
