/*
 * Fuzz target: start-up recovery of a data folder (src/blob/recover.c), and the reads and fsck
 * that follow it. Each input becomes a fresh folder of segment files; the store is opened on
 * it (recovery), every blob a segment names is read back, the store is closed, opened again,
 * and fsck checks the folder. For any folder:
 *
 * - recovery does not crash, leak, hang or assert; an open that fails says why;
 * - a read never hands out wrong bytes: it ends with an error, or with exactly the blob's
 *   size in bytes, which (CAS, version-2 commit) hash to its digest; an AC value is one that
 *   was committed under its key (where the input's commits are the harness's own, see
 *   below); the zstd stream of a blob decodes to the identity read's bytes; a read from the
 *   middle gives the identity read's tail;
 * - a read that fails (nothing evicts here, the disk does not fail: it found damage) leaves the
 *   blob unlisted: one left listed would fail every read and refuse every upload that could
 *   repair it;
 * - after the reads every gauge of the core is back to zero (readers, buffers, disk I/O,
 *   pinned and held segments);
 * - a second open finds the same number of blobs as the first (recovery seals what it scanned:
 *   a restart reads the footer it wrote and must agree with the scan);
 * - fsck runs to its end on the folder as given and as recovery left it.
 *
 * Input layout: byte 0 holds flags (bit 0: raw files, bit 1: mapped reads, bit 2: zstd and
 * mid-blob reads too, bit 3: fsck). Raw mode: files, each one byte (seq step and whether the
 * harness writes the header block), two bytes of length, the bytes. Structured mode: a list of
 * operations that build segments the way a writer does (chunk records framed with the engine's
 * encoder and checksums, commit records, footers and trailers built from the records) and then
 * damage them as a torn, lost or misdirected write, bit rot, an older writer (version-1
 * commits) or a buggy one would: records copied over others, bytes flipped (with or without
 * fresh checksums), tails cut, refs and sizes edited, footers and trailers that disagree with
 * the records. See the OP_ list.
 *
 * A commit record whose key or chunk table was rewritten with fresh checksums (OP_RECORD of a
 * commit, OP_EDIT of its key, OP_FLIP with fresh checksums in a commit or a record header)
 * may describe other bytes consistently: no checksum can tell, so such inputs ("forged") are
 * checked for everything but the bytes. A version-1 commit cannot detect a misplaced chunk
 * record of the same length (docs/format.md, Versioning): its bytes are not checked either.
 *
 * FUZZ_RECOVER_SEEDS=DIR (any build): the first input also writes seeds into DIR: segments of a
 * store the engine itself wrote (blobs of one and several chunks, compressible and not, AC
 * values), as raw-mode inputs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "base/assert.h"
#include "base/log.h"
#include "blob/chunk.h"
#include "blob/digest.h"
#include "blob/format.h"
#include "blob/fsck.h"
#include "blob/internal.h"
#include "blob/io.h"
#include "blob/store.h"
#include "ring/core.h"

#define SEGS_MAX    8
#define SEG_MAX     (512U << 10) /* bytes of one built segment */
#define RECS_MAX    256
#define PENDING_MAX 4
#define KNOWN_MAX   128
#define KEYS_MAX    128
#define BLOB_MAX    40000U /* bytes of one blob the harness writes: 10 chunks of 4 KiB */
#define READ_MAX    (4U << 20)

enum {
    F_RAW = 1,
    F_MAP = 2,
    F_MORE_READS = 4,
    F_FSCK = 8,
};

enum {
    OP_BLOB,     /* kind/flags, len (2), seed, key id: chunk records, then its commit (or later) */
    OP_COMMIT,   /* the oldest deferred commit record */
    OP_NEXT_SEG, /* flags [, entry, field, value] [, field, value]: seal (or not), next seq */
    OP_RECORD,   /* type, version, enc, raw_len (2), len, bytes: a record of any content */
    OP_COPY,     /* src, dst, how: a record copied over another or appended (misdirected) */
    OP_FLIP,     /* rec, offset (2), xor, fix: bit rot, or (fix) a rewrite with checksums */
    OP_CUT,      /* bytes (2): the current segment's tail is torn off */
    OP_ZERO,     /* rec, how: a record (or its header, or payload) never written */
    OP_EDIT,     /* field, index, value: the last commit rewritten with fresh checksums */
    OP_PAD,      /* len, byte: bytes appended to the current segment as they are */
    OP_COUNT
};

struct seg {
    uint64_t seq;
    uint8_t *p;
    size_t len;
};

struct rec {
    uint8_t seg;  /* index into segs */
    uint32_t off; /* record offset */
    uint32_t len; /* header and payload, unpadded */
};

struct known {
    uint8_t kind;
    uint8_t key[BLOB_HASH_SIZE];
    uint8_t value[BLOB_HASH_SIZE]; /* SHA-256 of a value committed under <key> */
};

struct pending {
    uint8_t version;
    uint32_t len;
    uint8_t payload[sizeof(struct blob_commit) + 10 * sizeof(struct blob_chunk_ref) + 64];
};

struct input {
    const uint8_t *p;
    size_t len;
};

static struct build {
    struct seg segs[SEGS_MAX];
    uint32_t nsegs;
    struct rec recs[RECS_MAX];
    uint32_t nrecs;
    int32_t last_commit; /* index into recs, -1 */
    struct pending pending[PENDING_MAX];
    uint32_t npending;
    struct known known[KNOWN_MAX];
    uint32_t nknown;
    uint64_t commit_seq;
    bool forged;
} b;

static struct ring_core *ring;
static struct blob_chunk_ctx zctx;
static struct base_counter zgauge;
static uint8_t blob_buf[BLOB_MAX];
static uint8_t rec_buf[BLOB_MAX + 4096];

/* ---- input ---- */

static uint64_t take(struct input *in, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n && in->len > 0; i++, in->p++, in->len--)
        v |= (uint64_t)in->p[0] << (8 * i);
    return v;
}

/* ---- building segments ---- */

static struct seg *cur(void)
{
    return &b.segs[b.nsegs - 1];
}

static void seg_new(uint64_t seq)
{
    ASSERT(b.nsegs < SEGS_MAX);
    struct seg *s = &b.segs[b.nsegs++];
    s->seq = seq;
    s->p = calloc(1, SEG_MAX);
    ASSERT(s->p);
    struct blob_seg_header h;
    blob_format_seg_header(&h, seq, 0);
    memcpy(s->p, &h, sizeof(h));
    s->len = BLOB_SEG_HEADER_SIZE;
}

/* Appends <len> bytes at the current segment's next 8-aligned offset; false when full. */
static bool append(const void *p, size_t len, uint32_t *off)
{
    struct seg *s = cur();
    size_t at = blob_align8(s->len);
    if (at + len > SEG_MAX) return false;
    memset(s->p + s->len, 0, at - s->len);
    memcpy(s->p + at, p, len);
    s->len = at + len;
    if (off) *off = (uint32_t)at;
    return true;
}

static bool append_record(const void *p, size_t len, uint32_t *off)
{
    uint32_t at;
    if (b.nrecs == RECS_MAX || !append(p, len, &at)) return false;
    b.recs[b.nrecs++] =
        (struct rec){ .seg = (uint8_t)(b.nsegs - 1), .off = at, .len = (uint32_t)len };
    if (off) *off = at;
    return true;
}

/* Bytes of <r>'s segment from its offset on: 0 when a cut took the record. */
static size_t room_of(const struct rec *r)
{
    const struct seg *s = &b.segs[r->seg];
    return s->len > r->off ? s->len - r->off : 0;
}

/* Frames <payload> as a record of <type> with valid checksums into rec_buf; its length. */
static uint32_t frame(uint8_t type, uint8_t version, uint8_t enc, const void *payload, uint32_t len,
                      uint32_t raw_len)
{
    struct blob_record_header *h = (void *)rec_buf;
    memcpy(rec_buf + sizeof(*h), payload, len);
    blob_format_record_header(h, type, enc, rec_buf + sizeof(*h), len, raw_len);
    h->version = version;
    h->header_sum = blob_format_sum(h, offsetof(struct blob_record_header, header_sum));
    return (uint32_t)sizeof(*h) + len;
}

/* Recomputes the checksums of the record at <p> (its payload_len as it says, within <room>). */
static void refresh_sums(uint8_t *p, size_t room)
{
    struct blob_record_header *h = (void *)p;
    if (room < sizeof(*h)) return;
    if (sizeof(*h) + h->payload_len <= room)
        h->payload_sum = blob_format_sum(p + sizeof(*h), h->payload_len);
    h->header_sum = blob_format_sum(h, offsetof(struct blob_record_header, header_sum));
}

static void remember(uint8_t kind, const uint8_t *key, const uint8_t *value_hash)
{
    if (b.nknown == KNOWN_MAX) return;
    struct known *k = &b.known[b.nknown++];
    k->kind = kind;
    memcpy(k->key, key, BLOB_HASH_SIZE);
    memcpy(k->value, value_hash, BLOB_HASH_SIZE);
}

static void fill(uint8_t *buf, size_t len, uint64_t seed, bool compressible)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
    static const char *words[] = { "static ", "int ", "return ", "struct ", "{\n", "}\n", "0x" };
    size_t i = 0;
    while (i < len) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (compressible) {
            const char *w = words[x % (sizeof(words) / sizeof(words[0]))];
            for (size_t j = 0; w[j] && i < len; j++)
                buf[i++] = (uint8_t)w[j];
        } else {
            for (int j = 0; j < 8 && i < len; j++)
                buf[i++] = (uint8_t)(x >> (8 * j));
        }
    }
}

static void write_commit(const struct pending *pc)
{
    uint32_t n = frame(BLOB_RECORD_COMMIT, pc->version, 0, pc->payload, pc->len, 0);
    if (append_record(rec_buf, n, NULL)) b.last_commit = (int32_t)b.nrecs - 1;
}

static void op_blob(struct input *in)
{
    uint8_t f = (uint8_t)take(in, 1);
    uint32_t len = (uint32_t)take(in, 2) % (BLOB_MAX + 1);
    uint8_t seed = (uint8_t)take(in, 1);
    uint8_t key_id = (uint8_t)take(in, 1);
    bool ac = f & 1;
    uint8_t version = f & 2 ? 1 : BLOB_COMMIT_VERSION;
    bool raw = f & 4;
    uint8_t shift = f & 8 ? 13 : 12;
    fill(blob_buf, len, seed, f & 16);
    uint8_t value_hash[BLOB_HASH_SIZE];
    ASSERT(blob_digest_oneshot(BLOB_DIGEST_SHA256, blob_buf, len, value_hash) == 0);

    struct pending pc = { .version = version };
    struct blob_commit *c = (void *)pc.payload;
    uint32_t chunk = 1U << shift;
    uint32_t chunks = (len + chunk - 1) / chunk;
    *c = (struct blob_commit){ .kind = ac ? BLOB_KIND_AC : BLOB_KIND_CAS,
                               .digest_fn = BLOB_DIGEST_SHA256,
                               .chunk_shift = shift,
                               .chunk_count = chunks,
                               .size = len,
                               .commit_seq = ++b.commit_seq };
    if (f & 32) c->commit_seq = b.commit_seq > 2 ? b.commit_seq - 2 : 0; /* older than others */
    if (ac) {
        uint8_t name[3] = { 'a', 'c', key_id };
        ASSERT(blob_digest_oneshot(BLOB_DIGEST_SHA256, name, sizeof(name), c->hash) == 0);
    } else {
        memcpy(c->hash, value_hash, BLOB_HASH_SIZE);
    }
    uint8_t *refs = pc.payload + sizeof(*c);
    size_t ref_size = blob_chunk_ref_size(version);
    for (uint32_t i = 0; i < chunks; i++) {
        uint32_t n = len - i * chunk < chunk ? len - i * chunk : chunk;
        uint32_t rlen;
        if (raw) {
            static uint8_t frame_buf[4096 * 2 + 64];
            uint32_t fl = blob_chunk_raw_frame(blob_buf + i * chunk, n, frame_buf);
            rlen = frame(BLOB_RECORD_CHUNK, BLOB_FORMAT_VERSION, BLOB_CHUNK_RAW, frame_buf, fl, n);
        } else {
            rlen = blob_chunk_encode(&zctx, blob_buf + i * chunk, n, rec_buf);
        }
        uint32_t off;
        if (!append_record(rec_buf, rlen, &off)) return;
        const struct blob_record_header *h = (const void *)rec_buf;
        struct blob_chunk_ref ref = {
            .seg = cur()->seq, .off8 = off / 8, .stored = h->payload_len, .sum = h->payload_sum
        };
        memcpy(refs + i * ref_size, &ref, ref_size);
    }
    pc.len = (uint32_t)blob_commit_payload_len_of(version, chunks);
    remember(c->kind, c->hash, value_hash);
    if (f & 64 && b.npending < PENDING_MAX) {
        b.pending[b.npending++] = pc;
    } else {
        write_commit(&pc);
    }
}

static void op_commit(void)
{
    if (b.npending == 0) return;
    write_commit(&b.pending[0]);
    memmove(&b.pending[0], &b.pending[1], (b.npending - 1) * sizeof(b.pending[0]));
    b.npending--;
}

/* Flips the bits <value> (or bit 0) of byte <field> (modulo <size>) of the struct at <p>. */
static void poke(uint8_t *p, size_t size, uint8_t field, uint8_t value)
{
    p[field % size] ^= value ? value : 1;
}

/* Seals the current segment as a writer does: footer listing its valid commit records. */
static void seal(struct input *in, uint8_t f)
{
    struct seg *s = cur();
    static struct blob_footer_entry entries[RECS_MAX];
    uint32_t n = 0;
    uint64_t end = BLOB_SEG_HEADER_SIZE;
    /* The records as a scan sees them: bounded by the segment, each advances >= 32 bytes. */
    for (uint64_t off = BLOB_SEG_HEADER_SIZE; off + sizeof(struct blob_record_header) <= s->len;) {
        const struct blob_record_header *h = (const void *)(s->p + off);
        if (blob_format_check_record_header(h, s->len - off - sizeof(*h)) < 0 ||
            blob_format_check_payload(h, h + 1) < 0)
            break;
        const struct blob_commit *c = (const void *)(h + 1);
        if (h->type == BLOB_RECORD_COMMIT && blob_format_check_commit(h, c) == 0 && n < RECS_MAX)
            blob_format_footer_entry(c, h->version, s->seq, off, &entries[n++]);
        off += blob_record_size(h->payload_len);
        end = off;
    }
    if (f & 4 && n > 0) { /* a footer that disagrees with the records */
        uint8_t i = (uint8_t)take(in, 1);
        uint8_t field = (uint8_t)take(in, 1);
        poke((uint8_t *)&entries[i % n], sizeof(entries[0]), field, (uint8_t)take(in, 1));
    }
    uint64_t payload = n * sizeof(struct blob_footer_entry);
    uint64_t footer_off = blob_align_block(s->len);
    uint64_t len = blob_align_block(blob_record_size(payload) + sizeof(struct blob_seg_trailer));
    if (footer_off + len > SEG_MAX) return;
    memset(s->p + s->len, 0, footer_off + len - s->len);
    uint32_t fl = frame(BLOB_RECORD_FOOTER, BLOB_FORMAT_VERSION, 0, entries, (uint32_t)payload, 0);
    memcpy(s->p + footer_off, rec_buf, fl);
    struct blob_seg_trailer t;
    blob_format_trailer(&t, s->seq, footer_off, end, n, footer_off + len);
    if (f & 16) { /* a trailer that disagrees, with a valid checksum */
        uint8_t field = (uint8_t)take(in, 1);
        poke((uint8_t *)&t, offsetof(struct blob_seg_trailer, checksum), field,
             (uint8_t)take(in, 1));
        t.checksum = blob_format_sum(&t, offsetof(struct blob_seg_trailer, checksum));
    }
    if (!(f & 8)) memcpy(s->p + footer_off + len - sizeof(t), &t, sizeof(t)); /* else: torn seal */
    s->len = footer_off + len;
}

static void op_next_seg(struct input *in)
{
    uint8_t f = (uint8_t)take(in, 1);
    if (f & 1) seal(in, f);
    if (b.nsegs == SEGS_MAX) return;
    seg_new(cur()->seq + 1 + (f & 2 ? 1 : 0)); /* a seq skipped: a segment lost */
}

static void op_record(struct input *in)
{
    uint8_t type = (uint8_t)take(in, 1) % 3 + 1;
    uint8_t version = (uint8_t)take(in, 1) % 3;
    uint8_t enc = (uint8_t)take(in, 1) % 3;
    uint32_t raw_len = (uint32_t)take(in, 2);
    uint32_t len = (uint32_t)take(in, 1) * 4;
    static uint8_t payload[1024];
    memset(payload, 0, sizeof(payload));
    for (uint32_t i = 0; i < len && in->len > 0; i++)
        payload[i] = (uint8_t)take(in, 1);
    if (type == BLOB_RECORD_COMMIT) b.forged = true;
    uint32_t n = frame(type, version, enc, payload, len, raw_len);
    (void)append_record(rec_buf, n, NULL);
}

static void op_copy(struct input *in)
{
    uint8_t src = (uint8_t)take(in, 1);
    uint8_t dst = (uint8_t)take(in, 1);
    uint8_t how = (uint8_t)take(in, 1);
    if (b.nrecs == 0) return;
    const struct rec *r = &b.recs[src % b.nrecs];
    static uint8_t copy[SEG_MAX];
    memcpy(copy, b.segs[r->seg].p + r->off, r->len);
    if (how & 1) {
        (void)append_record(copy, r->len, NULL); /* a record written twice */
        return;
    }
    /* Over another record (a misdirected write), within its segment's bytes. */
    const struct rec *d = &b.recs[dst % b.nrecs];
    size_t n = r->len < room_of(d) ? r->len : room_of(d);
    memcpy(b.segs[d->seg].p + d->off, copy, n);
}

static void op_flip(struct input *in)
{
    uint8_t i = (uint8_t)take(in, 1);
    uint16_t at = (uint16_t)take(in, 2);
    uint8_t x = (uint8_t)take(in, 1);
    uint8_t fix = (uint8_t)take(in, 1);
    if (b.nrecs == 0) return;
    const struct rec *r = &b.recs[i % b.nrecs];
    struct seg *s = &b.segs[r->seg];
    uint8_t *p = s->p + r->off;
    p[at % r->len] ^= x ? x : 0x20;
    if (fix & 1) {
        /* A rewrite with fresh checksums: a commit's new bytes say something else. */
        const struct blob_record_header *h = (const void *)p;
        if (h->type == BLOB_RECORD_COMMIT || at % r->len < sizeof(*h)) b.forged = true;
        refresh_sums(p, room_of(r));
    }
}

static void op_cut(struct input *in)
{
    uint16_t n = (uint16_t)take(in, 2);
    struct seg *s = cur();
    s->len -= n < s->len - BLOB_SEG_HEADER_SIZE ? n : s->len - BLOB_SEG_HEADER_SIZE;
}

static void op_zero(struct input *in)
{
    uint8_t i = (uint8_t)take(in, 1);
    uint8_t how = (uint8_t)take(in, 1);
    if (b.nrecs == 0) return;
    const struct rec *r = &b.recs[i % b.nrecs];
    uint8_t *p = b.segs[r->seg].p + r->off;
    size_t hl = sizeof(struct blob_record_header);
    if (how % 3 == 0) memset(p, 0, r->len);
    if (how % 3 == 1) memset(p, 0, hl);
    if (how % 3 == 2) memset(p + hl, 0, r->len - hl);
}

/* <x> plus <v> taken as a signed byte. */
static uint32_t add8(uint32_t x, uint8_t v)
{
    return v < 128 ? x + v : x - (256U - v);
}

static void op_edit(struct input *in)
{
    uint8_t field = (uint8_t)take(in, 1);
    uint8_t idx = (uint8_t)take(in, 1);
    uint8_t v = (uint8_t)take(in, 1);
    if (b.last_commit < 0) return;
    const struct rec *r = &b.recs[b.last_commit];
    struct seg *s = &b.segs[r->seg];
    uint8_t *p = s->p + r->off;
    struct blob_record_header *h = (void *)p;
    struct blob_commit *c = (void *)(h + 1);
    if (r->len < sizeof(*h) + sizeof(*c) || h->type != BLOB_RECORD_COMMIT) return;
    uint32_t nrefs =
        (uint32_t)((r->len - sizeof(*h) - sizeof(*c)) / blob_chunk_ref_size(h->version));
    /* Version 1 refs begin as version 2 ones do: seg, off8, stored. */
    struct blob_chunk_ref *rf =
        (void *)((uint8_t *)(c + 1) + (nrefs ? idx % nrefs : 0) * blob_chunk_ref_size(h->version));
    switch (field % 8) {
    case 0: /* the size: a chunk table that does not add up to it */
        c->size += (uint64_t)(int64_t)(int8_t)v;
        break;
    case 1:
        c->chunk_shift = 12 + v % 3;
        break;
    case 2: /* newer or older than the other values of its key */
        c->commit_seq = v;
        break;
    case 3: /* a ref into another segment (past the end, a hole, a future one) */
        if (nrefs) rf->seg += (uint64_t)(int64_t)(int8_t)v;
        break;
    case 4: /* a ref that points elsewhere: past the segment, inside another record */
        if (nrefs) rf->off8 = add8(rf->off8, v);
        break;
    case 5: /* a ref whose length is not the record's */
        if (nrefs) rf->stored = add8(rf->stored, v);
        break;
    case 6: /* the key: a consistent lie no checksum can tell */
        c->hash[idx % BLOB_HASH_SIZE] ^= v | 1;
        b.forged = true;
        break;
    default:
        c->chunk_count = add8(c->chunk_count, v);
        break;
    }
    refresh_sums(p, room_of(r));
}

static void op_pad(struct input *in)
{
    uint8_t n = (uint8_t)take(in, 1);
    uint8_t v = (uint8_t)take(in, 1);
    struct seg *s = cur();
    if (s->len + n > SEG_MAX) return;
    memset(s->p + s->len, v, n);
    s->len += n;
}

static void build(struct input *in)
{
    seg_new(1 + take(in, 1) % 4);
    /* Bounded by the input: every operation takes at least its own byte. */
    while (in->len > 0) {
        switch (take(in, 1) % OP_COUNT) {
        case OP_BLOB:
            op_blob(in);
            break;
        case OP_COMMIT:
            op_commit();
            break;
        case OP_NEXT_SEG:
            op_next_seg(in);
            break;
        case OP_RECORD:
            op_record(in);
            break;
        case OP_COPY:
            op_copy(in);
            break;
        case OP_FLIP:
            op_flip(in);
            break;
        case OP_CUT:
            op_cut(in);
            break;
        case OP_ZERO:
            op_zero(in);
            break;
        case OP_EDIT:
            op_edit(in);
            break;
        default:
            op_pad(in);
            break;
        }
    }
}

/* Raw mode: the input's files as they are (with a valid header block, if asked). */
static void build_raw(struct input *in)
{
    uint64_t seq = 0;
    while (in->len > 0 && b.nsegs < SEGS_MAX) {
        uint8_t f = (uint8_t)take(in, 1);
        seq += 1 + (f & 3);
        seg_new(seq);
        struct seg *s = cur();
        if (!(f & 4)) s->len = 0;
        size_t n = (size_t)take(in, 2) + ((size_t)(f >> 4) << 16);
        if (n > in->len) n = in->len;
        if (s->len + n > SEG_MAX) n = SEG_MAX - s->len;
        memcpy(s->p + s->len, in->p, n);
        s->len += n;
        in->p += n;
        in->len -= n;
    }
}

/* ---- the folder ---- */

static void write_folder(const char *dir)
{
    for (uint32_t i = 0; i < b.nsegs; i++) {
        char name[32];
        char path[128];
        blob_format_seg_name(b.segs[i].seq, name, sizeof(name));
        (void)snprintf(path, sizeof(path), "%s/%s", dir, name);
        int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
        ASSERT(fd >= 0);
        ASSERT(write(fd, b.segs[i].p, b.segs[i].len) == (ssize_t)b.segs[i].len);
        ASSERT(close(fd) == 0);
    }
}

static void remove_folder(const char *dir)
{
    DIR *d = opendir(dir);
    ASSERT(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        (void)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        ASSERT(unlink(path) == 0);
    }
    (void)closedir(d);
    ASSERT(rmdir(dir) == 0);
}

/* ---- the keys the segments name ---- */

static struct blob_key keys[KEYS_MAX];
static uint32_t nkeys;

static void add_key(void *ctx, const struct blob_footer_entry *e)
{
    (void)ctx;
    if (nkeys == KEYS_MAX || (e->kind != BLOB_KIND_CAS && e->kind != BLOB_KIND_AC)) return;
    struct blob_key k = { .kind = e->kind, .digest_fn = e->digest_fn, .size = e->size };
    memcpy(k.hash, e->hash, BLOB_HASH_SIZE);
    if (k.kind == BLOB_KIND_AC) k.size = 0;
    for (uint32_t i = 0; i < nkeys; i++) {
        if (memcmp(&keys[i], &k, sizeof(k)) == 0) return;
    }
    keys[nkeys++] = k;
}

/* Every commit a segment lists (footer) or holds (scan), as recovery visits them. */
static void collect_keys(const char *dir)
{
    nkeys = 0;
    struct blob_io *io;
    ASSERT(blob_io_real_create(dir, &io) == 0);
    for (uint32_t i = 0; i < b.nsegs; i++) {
        char name[32];
        blob_format_seg_name(b.segs[i].seq, name, sizeof(name));
        int fd;
        if (io->ops->open(io, name, O_RDONLY, &fd) < 0) continue;
        struct blob_visit v = { .io = io, .fd = fd, .seq = b.segs[i].seq, .fn = add_key };
        /* A segment recovery sets aside names nothing: its error is no finding here. */
        int vr = io->ops->fsize(io, fd, &v.size) == 0 ? blob_recover_visit(&v) : 0;
        (void)vr;
        (void)io->ops->close(io, fd);
    }
    blob_io_real_destroy(io);
}

static void fsck(const char *dir)
{
    struct blob_io *io;
    ASSERT(blob_io_real_create(dir, &io) == 0);
    struct blob_fsck_report rep;
    ASSERT(blob_fsck_run(io, &rep, NULL) == 0);
    blob_io_real_destroy(io);
}

/* ---- reads ---- */

struct piece {
    bool done;
    int res;
    uint8_t *buf;
    size_t len;
};

static void piece_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct piece *p = ctx;
    ASSERT(!p->done);
    p->done = true;
    p->res = res;
    if (res == 0 && len == 0) p->res = 1; /* the end */
    if (res == 0 && len > 0) {
        ASSERT(p->len + len <= READ_MAX);
        memcpy(p->buf + p->len, data, len);
        p->len += len;
    }
}

static void tick(void)
{
    ASSERT(ring_core_tick(ring, 10) >= 0);
}

/* Runs the loop until *<flag>: what is ready first (a tick that waits would wait after running
 * the deferred callback that sets it), then waiting for completions. */
static bool tick_until(const bool *flag)
{
    ASSERT(ring_core_tick(ring, 0) >= 0);
    /* Bounded: a store on tmpfs completes a read or write in a few ticks. */
    for (int i = 0; i < 10000 && !*flag; i++)
        tick();
    return *flag;
}

static void settle(struct blob_core *bc)
{
    /* Bounded: a store on tmpfs settles in a few ticks. */
    for (int i = 0; i < 100000; i++) {
        ASSERT(ring_core_tick(ring, i == 0 ? 0 : 10) >= 0);
        if (blob_core_is_idle(bc) &&
            base_counter_get(&ring_core_counters(ring)->ops_in_flight) == 0)
            return;
    }
    (void)fprintf(stderr, "fuzz recover: the core never settled\n");
    abort();
}

/*
 * Reads <k> from <off> as <enc> into <buf> (READ_MAX bytes); returns 0 and *<len>, 1 when
 * the open found nothing to read, or the error the read ended with. *<version> is the commit
 * record's version.
 */
static int read_blob(struct blob_core *bc, const struct blob_key *k, uint64_t off,
                     enum blob_encoding enc, uint8_t *buf, size_t *len, uint64_t *size,
                     uint8_t *version)
{
    struct blob_reader *r;
    int rc = blob_read_open(bc, k, off, enc, &r);
    if (rc < 0) {
        ASSERT(rc == -ENOENT || rc == -ERANGE);
        return 1; /* not there: no read to judge */
    }
    *size = blob_reader_size(r);
    struct piece p = { .buf = buf };
    /* Bounded: every piece holds a byte, and a stuck read asserts below. */
    for (;;) {
        p.done = false;
        rc = blob_read_next(r, piece_cb, &p);
        if (rc == -EAGAIN) {
            tick();
            continue;
        }
        if (rc < 0) break;
        ASSERT(tick_until(&p.done));
        if (p.res == -EAGAIN) continue;
        if (p.res != 0) {
            rc = p.res == 1 ? 0 : p.res;
            break;
        }
    }
    *version = blob_reader_commit_version(r);
    blob_read_close(r);
    if (rc < 0 && blob_exists(bc, k, false)) {
        /* Nothing evicts here and the disk does not fail: a read that fails finds damage,
         * which drops the blob. One left listed would fail every read and refuse every
         * upload that could repair it. */
        (void)fprintf(stderr, "fuzz recover: a read failed (%d) and the blob stays listed\n", rc);
        abort();
    }
    if (rc == 0 && enc == BLOB_ENCODING_IDENTITY) ASSERT(p.len == *size - off);
    *len = p.len;
    return rc;
}

static bool known_value(uint8_t kind, const uint8_t *key, const uint8_t *value_hash)
{
    for (uint32_t i = 0; i < b.nknown; i++) {
        if (b.known[i].kind == kind && memcmp(b.known[i].key, key, BLOB_HASH_SIZE) == 0 &&
            memcmp(b.known[i].value, value_hash, BLOB_HASH_SIZE) == 0)
            return true;
    }
    return false;
}

static uint8_t *rbuf;
static uint8_t *zbuf;
static uint8_t *dbuf;

static void check_blob(struct blob_core *bc, const struct blob_key *k, uint8_t flags)
{
    size_t len;
    uint64_t size;
    uint8_t version = 0;
    int rc = read_blob(bc, k, 0, BLOB_ENCODING_IDENTITY, rbuf, &len, &size, &version);
    if (rc != 0) return; /* an error is an answer; wrong bytes are not */
    uint8_t hash[BLOB_HASH_SIZE];
    ASSERT(blob_digest_oneshot(BLOB_DIGEST_SHA256, rbuf, len, hash) == 0);
    bool checked = version == BLOB_COMMIT_VERSION && !b.forged;
    if (k->kind == BLOB_KIND_CAS && checked) {
        if (memcmp(hash, k->hash, BLOB_HASH_SIZE) != 0 || len != k->size) {
            (void)fprintf(stderr, "fuzz recover: a CAS read gave %zu bytes that are not its blob\n",
                          len);
            abort();
        }
    }
    if (k->kind == BLOB_KIND_AC && checked && !(flags & F_RAW)) {
        if (!known_value(k->kind, k->hash, hash)) {
            (void)fprintf(stderr, "fuzz recover: an AC read gave %zu bytes never committed\n", len);
            abort();
        }
    }
    if (!(flags & F_MORE_READS)) return;
    size_t zlen;
    uint64_t zsize;
    uint8_t zversion;
    if (read_blob(bc, k, 0, BLOB_ENCODING_ZSTD, zbuf, &zlen, &zsize, &zversion) == 0) {
        size_t n = ZSTD_decompress(dbuf, READ_MAX, zbuf, zlen);
        ASSERT(!ZSTD_isError(n) && n == len && memcmp(dbuf, rbuf, len) == 0);
    }
    uint64_t mid = len / 2 + 1;
    if (mid < len &&
        read_blob(bc, k, mid, BLOB_ENCODING_IDENTITY, dbuf, &zlen, &zsize, &zversion) == 0) {
        ASSERT(zlen == len - mid && memcmp(dbuf, rbuf + mid, zlen) == 0);
    }
}

static void options(struct blob_store_options *o, const char *dir, uint8_t flags)
{
    blob_store_options_default(o);
    o->dir = dir;
    o->chunk_size = 4096;
    o->segment_size = 64 * 1024;
    o->max_size = 16ULL << 20;
    o->write_buffer_size = 64 * 1024;
    o->uploads_max = 8;
    o->readers_max = 8;
    o->disk_queue_max = 16;
    o->read_buffer_max = 8ULL << 20;
    o->cores_max = 1;
    o->direct_io = false;
    o->sync = BLOB_SYNC_NONE;
    o->evict_thread = false;
    o->map_reads = flags & F_MAP;
}

static void setup(void)
{
    if (ring) return;
    const char *verbose = getenv("FUZZ_VERBOSE"); /* NOLINT(concurrency-mt-unsafe) */
    if (!verbose) base_log_set_level(BASE_LOG_ERROR);
    struct ring_core_options ro;
    ring_core_options_default(&ro);
    ro.recv_buf_count = 16;
    ro.recv_buf_size = 4096;
    char why[256];
    if (ring_core_create(&ro, 0, &ring, why, sizeof(why)) < 0) {
        (void)fprintf(stderr, "fuzz recover: %s\n", why);
        abort();
    }
    ASSERT(blob_chunk_ctx_init(&zctx, 1, &zgauge) == 0);
    rbuf = malloc(READ_MAX);
    zbuf = malloc(READ_MAX);
    dbuf = malloc(READ_MAX);
    ASSERT(rbuf && zbuf && dbuf);
}

static void make_seeds(const char *out);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    setup();
    static bool seeded;
    const char *seeds = getenv("FUZZ_RECOVER_SEEDS"); /* NOLINT(concurrency-mt-unsafe) */
    if (seeds && !seeded) {
        seeded = true;
        make_seeds(seeds);
    }
    uint8_t flags = data[0];
    struct input in = { data + 1, size - 1 };
    memset(&b, 0, sizeof(b));
    b.last_commit = -1;
    if (flags & F_RAW) {
        build_raw(&in);
    } else {
        build(&in);
    }
    const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    char dir[64];
    (void)snprintf(dir, sizeof(dir), "%s/ringcas-fuzz-recover.XXXXXX", tmp);
    ASSERT(mkdtemp(dir));
    write_folder(dir);
    for (uint32_t i = 0; i < b.nsegs; i++)
        free(b.segs[i].p);
    if (flags & F_FSCK) fsck(dir);
    collect_keys(dir);

    struct blob_store_options o;
    options(&o, dir, flags);
    struct blob_store *s;
    char why[256] = "";
    int rc = blob_store_open(&o, &s, why, sizeof(why));
    if (rc < 0) {
        ASSERT(why[0] != '\0'); /* a failed open says why */
        remove_folder(dir);
        return 0;
    }
    struct blob_store_stats st;
    blob_store_stats(s, &st);
    uint64_t blobs = st.blobs;
    struct blob_core *bc;
    ASSERT(blob_core_init(s, ring, &bc) == 0);
    for (uint32_t i = 0; i < nkeys; i++)
        check_blob(bc, &keys[i], flags);
    settle(bc);
    struct blob_counters_snapshot c = { 0 };
    blob_counters_add_to(blob_core_counters(bc), &c);
    ASSERT(c.readers == 0 && c.bufs == 0 && c.io_in_flight == 0 && c.uploads == 0);
    blob_core_quiesce(bc);
    settle(bc);
    blob_core_deinit(bc);
    ASSERT(blob_segment_pinned(&s->segs) == 0);
    ASSERT(atomic_load(&s->segs.held_bytes) == 0);
    blob_store_close(s);

    /* A restart reads what the first one sealed, and agrees with it. */
    rc = blob_store_open(&o, &s, why, sizeof(why));
    ASSERT(rc == 0);
    blob_store_stats(s, &st);
    if (st.blobs != blobs) {
        (void)fprintf(stderr, "fuzz recover: %llu blobs at the first open, %llu at the second\n",
                      (unsigned long long)blobs, (unsigned long long)st.blobs);
        abort();
    }
    blob_store_close(s);
    if (flags & F_FSCK) fsck(dir);
    remove_folder(dir);
    return 0;
}

/* ---- seeds: segments the engine wrote ---- */

struct done {
    bool done;
    int res;
};

static void done_cb(void *ctx, int res)
{
    struct done *d = ctx;
    d->done = true;
    d->res = res;
}

static void put(struct blob_core *bc, const struct blob_key *k, const uint8_t *p, size_t len)
{
    struct blob_upload *u;
    ASSERT(blob_upload_begin(bc, k, BLOB_ENCODING_IDENTITY, &u) == 0);
    struct done d = { 0 };
    int rc = blob_upload_append(u, p, len, done_cb, &d);
    /* Bounded: the store on tmpfs completes a write in a few ticks. */
    ASSERT(rc == 0 || (rc == -EINPROGRESS && tick_until(&d.done) && d.res == 0));
    d.done = false;
    ASSERT(blob_upload_commit(u, done_cb, &d) == 0);
    ASSERT(tick_until(&d.done) && d.res == 0);
}

/* Writes the segments of <dir> as raw-mode inputs <out>/<prefix>-N (header block left out). */
static void save_raw(const char *dir, const char *out, const char *prefix)
{
    static uint8_t in[SEGS_MAX * (SEG_MAX + 4)];
    size_t n = 0;
    in[n++] = F_RAW | F_MORE_READS | F_FSCK;
    uint64_t prev = 0;
    for (uint64_t seq = 1; seq < 16; seq++) {
        char name[32];
        char path[256];
        blob_format_seg_name(seq, name, sizeof(name));
        (void)snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        static uint8_t file[SEG_MAX];
        size_t len = fread(file, 1, sizeof(file), f);
        (void)fclose(f);
        if (len <= BLOB_SEG_HEADER_SIZE || seq - prev > 4) continue;
        size_t body = len - BLOB_SEG_HEADER_SIZE;
        in[n++] = (uint8_t)((seq - prev - 1) | 4 | ((body >> 16) << 4));
        in[n++] = (uint8_t)body;
        in[n++] = (uint8_t)(body >> 8);
        memcpy(in + n, file + BLOB_SEG_HEADER_SIZE, body);
        n += body;
        prev = seq;
    }
    char path[256];
    (void)snprintf(path, sizeof(path), "%s/%s", out, prefix);
    FILE *f = fopen(path, "wb");
    ASSERT(f && fwrite(in, 1, n, f) == n && fclose(f) == 0);
}

static void make_seeds(const char *out)
{
    static const struct {
        const char *name;
        size_t sizes[4];
        bool ac;
        bool compressible;
    } sets[] = {
        { "seed-engine-small", { 100, 3000, 0, 0 }, false, true },
        { "seed-engine-multichunk", { 9000, 13000, 0, 0 }, false, false },
        { "seed-engine-mixed", { 5000, 200, 17000, 0 }, false, true },
        { "seed-engine-ac", { 700, 6000, 0, 0 }, true, true },
        { "seed-engine-sealed", { 30000, 30000, 9000, 5000 }, false, false },
    };

    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        char dir[64];
        (void)snprintf(dir, sizeof(dir), "/tmp/ringcas-fuzz-seed.XXXXXX");
        ASSERT(mkdtemp(dir));
        struct blob_store_options o;
        options(&o, dir, 0);
        struct blob_store *s;
        char why[256] = "";
        if (blob_store_open(&o, &s, why, sizeof(why)) < 0) {
            (void)fprintf(stderr, "fuzz recover: seeds: %s\n", why);
            abort();
        }
        struct blob_core *bc;
        ASSERT(blob_core_init(s, ring, &bc) == 0);
        for (size_t j = 0; j < 4 && sets[i].sizes[j]; j++) {
            size_t len = sets[i].sizes[j];
            fill(blob_buf, len, i * 16 + j, sets[i].compressible && j % 2 == 0);
            struct blob_key k;
            uint8_t hash[BLOB_HASH_SIZE];
            ASSERT(blob_digest_oneshot(BLOB_DIGEST_SHA256, blob_buf, len, hash) == 0);
            if (sets[i].ac) {
                hash[0] ^= 1; /* an opaque key */
                blob_key_ac(&k, hash, len);
            } else {
                blob_key_cas(&k, hash, len);
            }
            put(bc, &k, blob_buf, len);
        }
        settle(bc);
        blob_core_quiesce(bc);
        settle(bc);
        blob_core_deinit(bc);
        blob_store_close(s);
        save_raw(dir, out, sets[i].name);
        remove_folder(dir);
    }
}
