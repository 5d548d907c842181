/*
 * Encoding and validation of the on-disk structures of format.h. Validation treats every
 * byte as untrusted: it returns -EBADMSG and never asserts.
 */
#include "blob/format.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <xxhash.h>
#ifdef RC_XXH3_DISPATCH
#    include <immintrin.h>
#    include <xxh_x86dispatch.h>
#endif

#include "base/clock.h"
#include "blob/store.h"

#ifdef RC_XXH3_DISPATCH
/*
 * libxxhash's dispatcher runs its AVX2/AVX-512 code (30 GB/s here, the same values as the
 * baseline build's 3.7 GB/s) and returns with the upper halves of the vector registers
 * dirty: legacy-SSE code after it (OpenSSL's SHA-NI SHA-256, hashing every upload) then ran
 * 25 % slower on this Zen 4 until something cleared them. vzeroupper after each call does.
 */
__attribute__((target("avx"))) static void clear_upper(void)
{
    _mm256_zeroupper();
}

uint64_t blob_format_sum(const void *p, size_t len)
{
    uint64_t sum = XXH3_64bits_dispatch(p, len);
    if (__builtin_cpu_supports("avx")) clear_upper();
    return sum;
}
#else
uint64_t blob_format_sum(const void *p, size_t len)
{
    return XXH3_64bits(p, len);
}
#endif

void blob_format_seg_header(struct blob_seg_header *h, uint64_t seq, uint32_t core)
{
    memset(h, 0, sizeof(*h));
    h->magic = BLOB_SEG_MAGIC;
    h->version = BLOB_FORMAT_VERSION;
    h->block_size = BLOB_BLOCK_SIZE;
    h->seq = seq;
    h->created_ns = base_clock_wall_ns();
    h->core = core;
    h->checksum = blob_format_sum(h, offsetof(struct blob_seg_header, checksum));
}

int blob_format_check_seg_header(const struct blob_seg_header *h)
{
    if (h->magic != BLOB_SEG_MAGIC || h->version != BLOB_FORMAT_VERSION) return -EBADMSG;
    if (h->block_size != BLOB_BLOCK_SIZE) return -EBADMSG;
    if (h->checksum != blob_format_sum(h, offsetof(struct blob_seg_header, checksum))) {
        return -EBADMSG;
    }
    return 0;
}

void blob_format_record_header(struct blob_record_header *h, uint8_t type, uint8_t enc,
                               const void *payload, uint32_t payload_len, uint32_t raw_len)
{
    ASSERT(type >= BLOB_RECORD_CHUNK && type <= BLOB_RECORD_FOOTER);
    h->magic = BLOB_RECORD_MAGIC;
    h->type = type;
    h->version = type == BLOB_RECORD_COMMIT ? BLOB_COMMIT_VERSION : BLOB_FORMAT_VERSION;
    h->enc = enc;
    h->reserved = 0;
    h->payload_len = payload_len;
    h->raw_len = raw_len;
    h->payload_sum = blob_format_sum(payload, payload_len);
    h->header_sum = blob_format_sum(h, offsetof(struct blob_record_header, header_sum));
}

int blob_format_check_record_header(const struct blob_record_header *h, uint64_t room)
{
    if (h->magic != BLOB_RECORD_MAGIC) return -EBADMSG;
    /* Commit records come in both versions (1: stores written before version 2). */
    bool commit = h->type == BLOB_RECORD_COMMIT;
    if (h->version != BLOB_FORMAT_VERSION && !(commit && h->version == BLOB_COMMIT_VERSION)) {
        return -EBADMSG;
    }
    if (h->header_sum != blob_format_sum(h, offsetof(struct blob_record_header, header_sum))) {
        return -EBADMSG;
    }
    if (h->type < BLOB_RECORD_CHUNK || h->type > BLOB_RECORD_FOOTER) return -EBADMSG;
    if (h->type == BLOB_RECORD_CHUNK && h->enc != BLOB_CHUNK_ZSTD && h->enc != BLOB_CHUNK_RAW) {
        return -EBADMSG;
    }
    if (h->payload_len > room) return -EBADMSG;
    return 0;
}

int blob_format_check_payload(const struct blob_record_header *h, const void *payload)
{
    return blob_format_sum(payload, h->payload_len) == h->payload_sum ? 0 : -EBADMSG;
}

int blob_format_check_commit(const struct blob_record_header *h, const struct blob_commit *c)
{
    uint64_t len = h->payload_len;
    if (len < sizeof(*c) || blob_commit_payload_len_of(h->version, c->chunk_count) != len) {
        return -EBADMSG;
    }
    if (c->kind != BLOB_KIND_CAS && c->kind != BLOB_KIND_AC) return -EBADMSG;
    if (c->chunk_shift < 12 || c->chunk_shift > 20 || c->size > BLOB_SIZE_MAX) return -EBADMSG;
    uint64_t chunk = 1ULL << c->chunk_shift;
    if ((c->size + chunk - 1) / chunk != c->chunk_count) return -EBADMSG;
    return 0;
}

void blob_format_commit_ref(const struct blob_commit *c, uint8_t version, uint32_t i,
                            struct blob_chunk_ref *out)
{
    ASSERT(i < c->chunk_count);
    const uint8_t *p = (const uint8_t *)(c + 1) + (size_t)i * blob_chunk_ref_size(version);
    if (blob_commit_binds_chunks(version)) {
        memcpy(out, p, sizeof(*out));
        return;
    }
    struct blob_chunk_ref_v1 v1;
    memcpy(&v1, p, sizeof(v1));
    *out = (struct blob_chunk_ref){ .seg = v1.seg, .off8 = v1.off8, .stored = v1.stored };
}

bool blob_format_chunk_is_ref(const struct blob_record_header *h, uint8_t version,
                              const struct blob_chunk_ref *ref)
{
    if (h->payload_len != ref->stored) return false;
    return !blob_commit_binds_chunks(version) || h->payload_sum == ref->sum;
}

void blob_format_footer_entry(const struct blob_commit *c, uint8_t version, uint64_t seq,
                              uint64_t off, struct blob_footer_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->kind = c->kind;
    e->digest_fn = c->digest_fn;
    uint64_t oldest = seq;
    for (uint32_t i = 0; i < c->chunk_count; i++) {
        struct blob_chunk_ref ref;
        blob_format_commit_ref(c, version, i, &ref);
        if (ref.seg < oldest) oldest = ref.seg;
    }
    e->span = (uint16_t)(seq - oldest > UINT16_MAX ? UINT16_MAX : seq - oldest);
    e->off8 = (uint32_t)(off / 8);
    e->size = c->size;
    e->commit_seq = c->commit_seq;
    memcpy(e->hash, c->hash, BLOB_HASH_SIZE);
}

void blob_format_trailer(struct blob_seg_trailer *t, uint64_t seq, uint64_t footer_off,
                         uint64_t records_end, uint64_t count, uint64_t file_size)
{
    memset(t, 0, sizeof(*t));
    t->magic = BLOB_TRAILER_MAGIC;
    t->version = BLOB_FORMAT_VERSION;
    t->seq = seq;
    t->footer_off = footer_off;
    t->records_end = records_end;
    t->count = count;
    t->file_size = file_size;
    t->checksum = blob_format_sum(t, offsetof(struct blob_seg_trailer, checksum));
}

int blob_format_check_trailer(const struct blob_seg_trailer *t, uint64_t seq, uint64_t file_size)
{
    if (t->magic != BLOB_TRAILER_MAGIC || t->version != BLOB_FORMAT_VERSION) return -EBADMSG;
    if (t->checksum != blob_format_sum(t, offsetof(struct blob_seg_trailer, checksum))) {
        return -EBADMSG;
    }
    if (t->seq != seq || t->file_size != file_size) return -EBADMSG;
    if (t->footer_off < BLOB_SEG_HEADER_SIZE || t->footer_off >= file_size) return -EBADMSG;
    if (t->records_end > t->footer_off || t->footer_off % BLOB_RECORD_ALIGN != 0) return -EBADMSG;
    /* The footer it names fits between footer_off and the trailer. A count past that (a
     * trailer damaged or written wrongly, its checksum valid) made start-up size the index
     * for it (up to 64 GiB of slots), and a count whose length wraps past 2^64 passed for a
     * short footer whose entries were then read past its end. */
    uint64_t room = file_size - t->footer_off;
    if (room < sizeof(*t) + sizeof(struct blob_record_header)) return -EBADMSG;
    room -= sizeof(*t) + sizeof(struct blob_record_header);
    if (t->count > room / sizeof(struct blob_footer_entry)) return -EBADMSG;
    return 0;
}

void blob_format_seg_name(uint64_t seq, char *out, size_t out_size)
{
    int n = snprintf(out, out_size, "seg-%016" PRIx64 ".rcs", seq);
    ASSERT(n > 0 && (size_t)n < out_size);
}

int blob_format_parse_seg_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != 24 || strncmp(name, "seg-", 4) != 0 || strcmp(name + 20, ".rcs") != 0) {
        return -EINVAL;
    }
    uint64_t v = 0;
    for (int i = 4; i < 20; i++) {
        char c = name[i];
        int digit;
        if (c >= '0' && c <= '9') {
            digit = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            digit = c - 'a' + 10;
        } else {
            return -EINVAL;
        }
        v = (v << 4) | (uint64_t)(unsigned)digit;
    }
    *seq = v;
    return 0;
}

bool blob_format_commit_uses(const struct blob_commit *c, uint8_t version, uint64_t seq,
                             const uint64_t *offs, uint32_t len)
{
    /* Bounded by chunk_count (checked against the payload) times <len>. */
    for (uint32_t i = 0; i < c->chunk_count; i++) {
        struct blob_chunk_ref ref;
        blob_format_commit_ref(c, version, i, &ref);
        for (uint32_t j = 0; j < len && ref.seg == seq; j++) {
            if ((uint64_t)ref.off8 * 8 == offs[j]) return true;
        }
    }
    return false;
}
