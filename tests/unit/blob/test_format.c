/*
 * The on-disk structures: each encoder's output passes its validator, and each validator
 * refuses a flipped bit in every byte it covers, a wrong version, and lengths past the room.
 */
#include <errno.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/format.h"
#include "blob/store.h"

Test(blob_format, segment_header_round_trips_and_refuses_every_flip)
{
    struct blob_seg_header h;
    blob_format_seg_header(&h, 42, 3);
    cr_assert(eq(int, blob_format_check_seg_header(&h), 0));
    cr_assert(eq(u64, h.seq, 42));
    cr_assert(eq(u32, h.core, 3));
    cr_assert(eq(u32, h.version, BLOB_FORMAT_VERSION));
    cr_assert(memcmp(&h.magic, "RINGCAS1", 8) == 0, "the magic reads RINGCAS1 on disk");
    for (size_t i = 0; i < offsetof(struct blob_seg_header, checksum) + 8; i++) {
        struct blob_seg_header c = h;
        ((uint8_t *)&c)[i] ^= 0x10;
        cr_assert(eq(int, blob_format_check_seg_header(&c), -EBADMSG), "byte %zu", i);
    }
}

Test(blob_format, record_header_covers_itself_and_its_payload)
{
    uint8_t payload[100];
    memset(payload, 7, sizeof(payload));
    struct blob_record_header h;
    blob_format_record_header(&h, BLOB_RECORD_CHUNK, BLOB_CHUNK_ZSTD, payload, 100, 4096);
    cr_assert(eq(int, blob_format_check_record_header(&h, 100), 0));
    cr_assert(eq(int, blob_format_check_payload(&h, payload), 0));
    cr_assert(eq(int, blob_format_check_record_header(&h, 99), -EBADMSG), "payload past room");
    for (size_t i = 0; i < sizeof(h); i++) {
        struct blob_record_header c = h;
        ((uint8_t *)&c)[i] ^= 0x01;
        cr_assert(eq(int, blob_format_check_record_header(&c, 1000), -EBADMSG), "byte %zu", i);
    }
    payload[50] ^= 4;
    cr_assert(eq(int, blob_format_check_payload(&h, payload), -EBADMSG));
}

Test(blob_format, record_header_refuses_unknown_types_and_encodings)
{
    uint8_t payload[8] = { 0 };
    struct blob_record_header h;
    blob_format_record_header(&h, BLOB_RECORD_CHUNK, 7, payload, 8, 8);
    cr_assert(eq(int, blob_format_check_record_header(&h, 8), -EBADMSG), "encoding 7");
    blob_format_record_header(&h, BLOB_RECORD_COMMIT, 0, payload, 8, 0);
    cr_assert(eq(int, blob_format_check_record_header(&h, 8), 0));
    blob_format_record_header(&h, BLOB_RECORD_FOOTER, 0, payload, 8, 0);
    cr_assert(eq(int, blob_format_check_record_header(&h, 8), 0));
}

Test(blob_format, zeros_are_not_a_record)
{
    struct blob_record_header h;
    memset(&h, 0, sizeof(h));
    cr_assert(eq(int, blob_format_check_record_header(&h, 1 << 20), -EBADMSG));
}

/* Header fields of a commit record of <version> with <len> bytes of payload (checksums aside). */
static struct blob_record_header commit_header(uint8_t version, uint64_t len)
{
    struct blob_record_header h = { .magic = BLOB_RECORD_MAGIC,
                                    .type = BLOB_RECORD_COMMIT,
                                    .version = version,
                                    .payload_len = (uint32_t)len };
    return h;
}

static int check_commit(const struct blob_commit *c, uint64_t len)
{
    struct blob_record_header h = commit_header(BLOB_COMMIT_VERSION, len);
    return blob_format_check_commit(&h, c);
}

Test(blob_format, commit_payload_must_agree_with_its_sizes)
{
    uint64_t buf[(sizeof(struct blob_commit) + 3 * sizeof(struct blob_chunk_ref)) / 8];
    memset(buf, 0, sizeof(buf));
    struct blob_commit *c = (struct blob_commit *)(void *)buf;
    c->kind = BLOB_KIND_CAS;
    c->digest_fn = BLOB_DIGEST_SHA256;
    c->chunk_shift = 12;
    c->chunk_count = 3;
    c->size = 3 * 4096 - 5;
    cr_assert(eq(int, check_commit(c, sizeof(buf)), 0));
    cr_assert(eq(int, check_commit(c, sizeof(buf) - 1), -EBADMSG));
    c->size = 3 * 4096 + 1;
    cr_assert(eq(int, check_commit(c, sizeof(buf)), -EBADMSG), "4 chunks needed");
    c->size = 2 * 4096;
    cr_assert(eq(int, check_commit(c, sizeof(buf)), -EBADMSG), "2 chunks needed");
    c->size = 3 * 4096;
    c->kind = 5;
    cr_assert(eq(int, check_commit(c, sizeof(buf)), -EBADMSG));
    c->kind = BLOB_KIND_AC;
    c->chunk_shift = 11;
    cr_assert(eq(int, check_commit(c, sizeof(buf)), -EBADMSG));
    c->chunk_shift = 21;
    cr_assert(eq(int, check_commit(c, sizeof(buf)), -EBADMSG));
    c->chunk_shift = 12;
    cr_assert(eq(int, check_commit(c, sizeof(buf)), 0));
    cr_assert(eq(int, check_commit(c, 10), -EBADMSG));
}

Test(blob_format, empty_commit_has_no_chunks)
{
    struct blob_commit c;
    memset(&c, 0, sizeof(c));
    c.kind = BLOB_KIND_AC;
    c.digest_fn = BLOB_DIGEST_SHA256;
    c.chunk_shift = 18;
    cr_assert(eq(int, check_commit(&c, sizeof(c)), 0));
}

Test(blob_format, commit_records_are_version_2_and_version_1_ones_still_pass)
{
    uint8_t payload[8] = { 0 };
    struct blob_record_header h;
    blob_format_record_header(&h, BLOB_RECORD_COMMIT, 0, payload, 8, 0);
    cr_assert(eq(u8, h.version, BLOB_COMMIT_VERSION));
    cr_assert(eq(u8, h.version, 2));
    /* A store written before version 2 holds version-1 commit records. */
    h.version = BLOB_FORMAT_VERSION;
    h.header_sum = blob_format_sum(&h, offsetof(struct blob_record_header, header_sum));
    cr_assert(eq(int, blob_format_check_record_header(&h, 8), 0));
    h.version = 3;
    h.header_sum = blob_format_sum(&h, offsetof(struct blob_record_header, header_sum));
    cr_assert(eq(int, blob_format_check_record_header(&h, 8), -EBADMSG), "an unknown version");
    /* Only commit records changed: a chunk or footer record of version 2 is refused. */
    blob_format_record_header(&h, BLOB_RECORD_CHUNK, BLOB_CHUNK_RAW, payload, 8, 8);
    cr_assert(eq(u8, h.version, BLOB_FORMAT_VERSION));
    h.version = 2;
    h.header_sum = blob_format_sum(&h, offsetof(struct blob_record_header, header_sum));
    cr_assert(eq(int, blob_format_check_record_header(&h, 8), -EBADMSG));
    blob_format_record_header(&h, BLOB_RECORD_FOOTER, 0, payload, 8, 0);
    h.version = 2;
    h.header_sum = blob_format_sum(&h, offsetof(struct blob_record_header, header_sum));
    cr_assert(eq(int, blob_format_check_record_header(&h, 8), -EBADMSG));
}

Test(blob_format, refs_are_read_in_the_layout_of_their_commit_version)
{
    uint64_t buf[(sizeof(struct blob_commit) + 2 * sizeof(struct blob_chunk_ref)) / 8];
    memset(buf, 0, sizeof(buf));
    struct blob_commit *c = (struct blob_commit *)(void *)buf;
    c->kind = BLOB_KIND_CAS;
    c->chunk_shift = 12;
    c->chunk_count = 2;
    c->size = 2 * 4096;
    struct blob_chunk_ref v2[2] = { { 7, 512, 100, 0x1111 }, { 8, 1024, 200, 0x2222 } };
    memcpy(c + 1, v2, sizeof(v2));
    struct blob_record_header h = commit_header(2, blob_commit_payload_len_of(2, 2));
    cr_assert(eq(int, blob_format_check_commit(&h, c), 0));
    h = commit_header(1, blob_commit_payload_len_of(2, 2));
    cr_assert(eq(int, blob_format_check_commit(&h, c), -EBADMSG), "24-byte refs in version 1");
    struct blob_chunk_ref r;
    blob_format_commit_ref(c, 2, 1, &r);
    cr_assert(eq(u64, r.seg, 8));
    cr_assert(eq(u32, r.off8, 1024));
    cr_assert(eq(u32, r.stored, 200));
    cr_assert(eq(u64, r.sum, 0x2222));

    struct blob_chunk_ref_v1 v1[2] = { { 7, 512, 100 }, { 8, 1024, 200 } };
    memcpy(c + 1, v1, sizeof(v1));
    h = commit_header(1, blob_commit_payload_len_of(1, 2));
    cr_assert(eq(int, blob_format_check_commit(&h, c), 0));
    h = commit_header(2, blob_commit_payload_len_of(1, 2));
    cr_assert(eq(int, blob_format_check_commit(&h, c), -EBADMSG), "16-byte refs in version 2");
    blob_format_commit_ref(c, 1, 1, &r);
    cr_assert(eq(u64, r.seg, 8));
    cr_assert(eq(u32, r.off8, 1024));
    cr_assert(eq(u32, r.stored, 200));
    cr_assert(eq(u64, r.sum, 0));
}

Test(blob_format, a_chunk_record_is_the_ref_only_with_the_sum_the_ref_holds)
{
    uint8_t a[64];
    uint8_t b[64];
    memset(a, 'a', sizeof(a));
    memset(b, 'b', sizeof(b));
    struct blob_record_header ha;
    struct blob_record_header hb;
    blob_format_record_header(&ha, BLOB_RECORD_CHUNK, BLOB_CHUNK_RAW, a, sizeof(a), 51);
    blob_format_record_header(&hb, BLOB_RECORD_CHUNK, BLOB_CHUNK_RAW, b, sizeof(b), 51);
    struct blob_chunk_ref ref = { .seg = 1, .off8 = 512, .stored = 64, .sum = ha.payload_sum };
    cr_assert(blob_format_chunk_is_ref(&ha, BLOB_COMMIT_VERSION, &ref));
    cr_assert(not(blob_format_chunk_is_ref(&hb, BLOB_COMMIT_VERSION, &ref)),
              "a valid record of the same length, but another one");
    ref.stored = 65;
    cr_assert(not(blob_format_chunk_is_ref(&ha, BLOB_COMMIT_VERSION, &ref)));
    /* Version 1 refs hold no sum: only the length is compared (what they cannot detect). */
    struct blob_chunk_ref v1 = { .seg = 1, .off8 = 512, .stored = 64 };
    cr_assert(blob_format_chunk_is_ref(&hb, BLOB_FORMAT_VERSION, &v1));
}

Test(blob_format, trailer_names_its_segment_and_size)
{
    struct blob_seg_trailer t;
    blob_format_trailer(&t, 9, 8192, 8000, 12, 16384);
    cr_assert(eq(int, blob_format_check_trailer(&t, 9, 16384), 0));
    cr_assert(eq(int, blob_format_check_trailer(&t, 8, 16384), -EBADMSG), "another segment");
    cr_assert(eq(int, blob_format_check_trailer(&t, 9, 20480), -EBADMSG), "another size");
    for (size_t i = 0; i < sizeof(t); i++) {
        struct blob_seg_trailer c = t;
        ((uint8_t *)&c)[i] ^= 0x80;
        cr_assert(eq(int, blob_format_check_trailer(&c, 9, 16384), -EBADMSG), "byte %zu", i);
    }
    blob_format_trailer(&t, 9, 8192, 8200, 12, 16384);
    cr_assert(eq(int, blob_format_check_trailer(&t, 9, 16384), -EBADMSG), "records past footer");
    blob_format_trailer(&t, 9, 100, 50, 12, 16384);
    cr_assert(eq(int, blob_format_check_trailer(&t, 9, 16384), -EBADMSG), "footer in header");
    blob_format_trailer(&t, 9, 16384, 8000, 12, 16384);
    cr_assert(eq(int, blob_format_check_trailer(&t, 9, 16384), -EBADMSG), "footer past end");
    blob_format_trailer(&t, 9, 8193, 8000, 12, 16384);
    cr_assert(eq(int, blob_format_check_trailer(&t, 9, 16384), -EBADMSG), "unaligned footer");
}

Test(blob_format, segment_names_round_trip)
{
    char name[32];
    blob_format_seg_name(0xa1, name, sizeof(name));
    cr_assert(eq(str, name, "seg-00000000000000a1.rcs"));
    uint64_t seq = 0;
    cr_assert(eq(int, blob_format_parse_seg_name(name, &seq), 0));
    cr_assert(eq(u64, seq, 0xa1));
    blob_format_seg_name(UINT64_MAX, name, sizeof(name));
    cr_assert(eq(int, blob_format_parse_seg_name(name, &seq), 0));
    cr_assert(eq(u64, seq, UINT64_MAX));
    const char *bad[] = { "seg-00000000000000a1.rcs.bad", "seg-00000000000000A1.rcs",
                          "seg-0000000000000a1.rcs",      "xeg-00000000000000a1.rcs",
                          "seg-00000000000000a1.rcx",     "",
                          "seg-0000000000000g01.rcs" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(eq(int, blob_format_parse_seg_name(bad[i], &seq), -EINVAL), "%s", bad[i]);
}

Test(blob_format, sizes_and_alignment_helpers)
{
    cr_assert(eq(u64, blob_align8(0), 0));
    cr_assert(eq(u64, blob_align8(1), 8));
    cr_assert(eq(u64, blob_align8(8), 8));
    cr_assert(eq(u64, blob_align_block(1), 4096));
    cr_assert(eq(u64, blob_align_block(4096), 4096));
    cr_assert(eq(u64, blob_align_block(4097), 8192));
    cr_assert(eq(u64, blob_record_size(0), 32));
    cr_assert(eq(u64, blob_record_size(1), 40));
    cr_assert(eq(u64, blob_commit_payload_len(0), 56));
    cr_assert(eq(u64, blob_commit_payload_len(2), 104), "version 2: 24-byte refs");
    cr_assert(eq(u64, blob_commit_payload_len_of(BLOB_FORMAT_VERSION, 2), 88), "version 1");
    cr_assert(eq(u64, blob_format_sum("abc", 3), blob_format_sum("abc", 3)));
    cr_assert(ne(u64, blob_format_sum("abc", 3), blob_format_sum("abd", 3)));
}

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

Test(blob_format, random_bytes_never_pass_a_validator)
{
    uint64_t x = 0x1234567;
    for (int i = 0; i < 20000; i++) {
        uint64_t buf[8];
        for (int j = 0; j < 8; j++)
            buf[j] = rnd(&x);
        /* Half of them with the right magic, to get past the first test. */
        if (i % 2) {
            uint32_t m = BLOB_RECORD_MAGIC;
            memcpy(buf, &m, 4);
        }
        struct blob_record_header h;
        memcpy(&h, buf, sizeof(h));
        cr_assert(eq(int, blob_format_check_record_header(&h, 1 << 20), -EBADMSG));
        struct blob_seg_header sh;
        memcpy(&sh, buf, sizeof(sh));
        if (i % 2) sh.magic = BLOB_SEG_MAGIC;
        cr_assert(eq(int, blob_format_check_seg_header(&sh), -EBADMSG));
        struct blob_seg_trailer t;
        memcpy(&t, buf, sizeof(t));
        if (i % 2) t.magic = BLOB_TRAILER_MAGIC;
        cr_assert(eq(int, blob_format_check_trailer(&t, t.seq, t.file_size), -EBADMSG));
    }
}

Test(blob_format, a_valid_record_with_a_wrong_payload_is_caught)
{
    uint64_t x = 99;
    for (int i = 0; i < 1000; i++) {
        uint8_t payload[64];
        for (size_t j = 0; j < sizeof(payload); j++)
            payload[j] = (uint8_t)rnd(&x);
        struct blob_record_header h;
        uint32_t len = (uint32_t)(rnd(&x) % sizeof(payload));
        blob_format_record_header(&h, BLOB_RECORD_COMMIT, 0, payload, len, 0);
        cr_assert(eq(int, blob_format_check_record_header(&h, len), 0));
        cr_assert(eq(int, blob_format_check_payload(&h, payload), 0));
        if (len == 0) continue;
        uint64_t at = rnd(&x) % len; /* drawn apart: operand order is unspecified */
        payload[at] ^= (uint8_t)(1u << (rnd(&x) % 8));
        cr_assert(eq(int, blob_format_check_payload(&h, payload), -EBADMSG));
    }
}

Test(blob_format, checksums_are_xxh3_64_whichever_code_path_computes_them)
{
    /* Known answers of XXH3-64 (seed 0), as the format requires: the runtime-dispatched
     * vector code must give exactly these, or stores written before would read as corrupt. */
    uint8_t b[1000];
    for (int i = 0; i < 1000; i++)
        b[i] = (uint8_t)(i * 131 + 7);
    cr_assert(eq(u64, blob_format_sum(b, 0), 0x2d06800538d394c2ULL));
    cr_assert(eq(u64, blob_format_sum(b, 100), 0x5da67eac6d4093d5ULL));
    cr_assert(eq(u64, blob_format_sum(b, 1000), 0x571d5cbfef44331bULL));
}

#if defined(__x86_64__)
#    include <cpuid.h>

/* XINUSE (XGETBV with ECX = 1): which register state components are not in their initial
 * state; 0 when the CPU cannot tell. */
static uint64_t xinuse(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(0xd, 1, &a, &b, &c, &d) || !(a & (1u << 2))) return 0;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
    return ((uint64_t)hi << 32) | lo;
}

Test(blob_format, a_checksum_leaves_the_upper_vector_halves_clean)
{
    /* Dirty upper halves slow the legacy-SSE code that runs next (SHA-NI SHA-256) by a
     * quarter on Zen 4: the vector code that checksums must clear them (format.c). */
    static uint8_t b[256 << 10];
    uint64_t sum = blob_format_sum(b, sizeof(b));
    uint64_t in_use = xinuse();
    cr_assert(ne(u64, sum, 0));
    cr_assert(eq(u64, in_use & ((1u << 2) | (1u << 6)), 0), "YMM_Hi128 / ZMM_Hi256 in use: %#llx",
              (unsigned long long)in_use);
}
#endif
