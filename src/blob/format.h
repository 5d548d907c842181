/*
 * The on-disk layout of segment files, version 2 (docs/format.md is the grammar; this header
 * is its code). Version 2 changed only commit records: their chunk refs carry the payload_sum
 * of the chunk record they name; every other structure is still version 1, and commit
 * records of version 1 (16-byte refs) are still read. Every structure is little-endian, fixed-size
 * and pinned by STATIC_ASSERTs; every structure carries a checksum (XXH3-64) and every header a
 * version number.
 *
 *   segment  = header-block record* [footer-record pad trailer]
 *   record   = record-header payload pad-to-8
 *
 * Encoders fill structs in memory (x86-64 is little-endian, asserted at build time); decoders
 * validate untrusted bytes and return -EBADMSG, never assert on them.
 */
#ifndef RINGCAS_BLOB_FORMAT_H
#define RINGCAS_BLOB_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

#define BLOB_FORMAT_VERSION 1 /* segment header, trailer, chunk and footer records */
/*
 * Commit records written now. Their chunk refs carry the payload_sum of the record they name
 * (a checksum held by the parent, as ZFS's block pointers do): a valid chunk record that is
 * not the one the commit wrote there (a misdirected write, another blob's record) fails the
 * comparison, where its own checksums pass. Version 1 commit records (BLOB_FORMAT_VERSION)
 * are read as before, without that check.
 */
#define BLOB_COMMIT_VERSION  2
#define BLOB_BLOCK_SIZE      4096U           /* O_DIRECT alignment of offsets, lengths, memory */
#define BLOB_SEG_HEADER_SIZE BLOB_BLOCK_SIZE /* records start here */
#define BLOB_SEG_MAGIC       0x31534143474e4952ULL /* the bytes "RINGCAS1" */
#define BLOB_RECORD_MAGIC    0x44524352U           /* "RCRD" */
#define BLOB_TRAILER_MAGIC   0x52544352U           /* "RCTR" */
#define BLOB_RECORD_ALIGN    8U
#define BLOB_SEG_SIZE_MAX    (32ULL << 30)      /* offsets are stored in 8-byte units in 32 bits */
#define BLOB_SIZE_MAX        ((1ULL << 40) - 1) /* blob sizes fit 40 bits in the index */

enum blob_record_type {
    BLOB_RECORD_CHUNK = 1,  /* one chunk of a blob: a complete zstd frame */
    BLOB_RECORD_COMMIT = 2, /* makes a blob visible: key, size, chunk table */
    BLOB_RECORD_FOOTER = 3, /* seals a segment: one entry per commit record */
};

enum blob_chunk_enc {
    BLOB_CHUNK_ZSTD = 1, /* a compressed zstd frame */
    BLOB_CHUNK_RAW = 2,  /* a zstd frame of raw blocks (zstd did not shrink the chunk) */
};

/* The first bytes of a segment file; the rest of its first block is zero. */
struct blob_seg_header {
    uint64_t magic;      /* BLOB_SEG_MAGIC */
    uint32_t version;    /* BLOB_FORMAT_VERSION */
    uint32_t block_size; /* BLOB_BLOCK_SIZE: records start at this offset */
    uint64_t seq;        /* store-wide segment number, also in the file name */
    uint64_t created_ns; /* wall clock at creation */
    uint32_t core;       /* the core that wrote it */
    uint32_t reserved;   /* zero */
    uint64_t checksum;   /* XXH3-64 of the bytes above */
};

STATIC_ASSERT(sizeof(struct blob_seg_header) == 48, "segment header layout");

/* Precedes every record's payload; records start at 8-byte aligned offsets. */
struct blob_record_header {
    uint32_t magic;       /* BLOB_RECORD_MAGIC */
    uint8_t type;         /* enum blob_record_type */
    uint8_t version;      /* BLOB_FORMAT_VERSION */
    uint8_t enc;          /* chunks: enum blob_chunk_enc; others 0 */
    uint8_t reserved;     /* zero */
    uint32_t payload_len; /* bytes of payload after this header */
    uint32_t raw_len;     /* chunks: uncompressed bytes; others 0 */
    uint64_t payload_sum; /* XXH3-64 of the payload */
    uint64_t header_sum;  /* XXH3-64 of the 24 bytes above */
};

STATIC_ASSERT(sizeof(struct blob_record_header) == 32, "record header layout");
STATIC_ASSERT(offsetof(struct blob_record_header, header_sum) == 24, "header checksum place");

/* Where a chunk record lives, and what it holds: in a version-2 commit record's chunk table. */
struct blob_chunk_ref {
    uint64_t seg;    /* segment seq */
    uint32_t off8;   /* record offset / 8 */
    uint32_t stored; /* payload bytes (the frame) */
    uint64_t sum;    /* the chunk record's payload_sum */
};

STATIC_ASSERT(sizeof(struct blob_chunk_ref) == 24, "chunk ref layout");

/* A chunk ref of a version-1 commit record: no payload_sum. */
struct blob_chunk_ref_v1 {
    uint64_t seg;    /* segment seq */
    uint32_t off8;   /* record offset / 8 */
    uint32_t stored; /* payload bytes (the frame) */
};

STATIC_ASSERT(sizeof(struct blob_chunk_ref_v1) == 16, "version-1 chunk ref layout");

/* The payload of a commit record; chunk_count refs follow it. */
struct blob_commit {
    uint8_t kind;         /* enum blob_kind */
    uint8_t digest_fn;    /* enum blob_digest_fn */
    uint8_t chunk_shift;  /* log2 of the logical chunk size */
    uint8_t flags;        /* zero */
    uint32_t chunk_count; /* refs that follow */
    uint64_t size;        /* uncompressed bytes */
    uint64_t commit_seq;  /* store-wide commit order: the newest AC value wins */
    uint8_t hash[32];     /* CAS digest or AC key */
};

STATIC_ASSERT(sizeof(struct blob_commit) == 56, "commit layout");

/* One entry of a footer: enough to index a blob without reading its commit record. */
struct blob_footer_entry {
    uint8_t kind;        /* enum blob_kind */
    uint8_t digest_fn;   /* enum blob_digest_fn */
    uint16_t span;       /* this segment's seq minus the oldest seq holding its chunks */
    uint32_t off8;       /* commit record offset / 8 */
    uint64_t size;       /* uncompressed bytes */
    uint64_t commit_seq; /* as in the commit record */
    uint8_t hash[32];    /* as in the commit record */
};

STATIC_ASSERT(sizeof(struct blob_footer_entry) == 56, "footer entry layout");

/* The last 64 bytes of a sealed segment file. */
struct blob_seg_trailer {
    uint32_t magic;       /* BLOB_TRAILER_MAGIC */
    uint32_t version;     /* BLOB_FORMAT_VERSION */
    uint64_t seq;         /* as in the header */
    uint64_t footer_off;  /* offset of the footer record */
    uint64_t records_end; /* end of the last record before the footer */
    uint64_t count;       /* footer entries */
    uint64_t file_size;   /* size of the file, a multiple of BLOB_BLOCK_SIZE */
    uint64_t reserved;    /* zero */
    uint64_t checksum;    /* XXH3-64 of the 56 bytes above */
};

STATIC_ASSERT(sizeof(struct blob_seg_trailer) == 64, "trailer layout");
STATIC_ASSERT(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the format is little-endian");

static inline uint64_t blob_align8(uint64_t n)
{
    return (n + 7) & ~7ULL;
}

static inline uint64_t blob_align_block(uint64_t n)
{
    return (n + BLOB_BLOCK_SIZE - 1) & ~(uint64_t)(BLOB_BLOCK_SIZE - 1);
}

/* Bytes a record with <payload_len> bytes of payload takes, padding included. */
static inline uint64_t blob_record_size(uint64_t payload_len)
{
    return blob_align8(sizeof(struct blob_record_header) + payload_len);
}

/* Bytes of one chunk ref in a commit record of <version> (the record header's). */
static inline uint64_t blob_chunk_ref_size(uint8_t version)
{
    return version == BLOB_COMMIT_VERSION ? sizeof(struct blob_chunk_ref)
                                          : sizeof(struct blob_chunk_ref_v1);
}

/* Bytes of the payload of a commit record of <version> for <chunks> chunks. */
static inline uint64_t blob_commit_payload_len_of(uint8_t version, uint64_t chunks)
{
    return sizeof(struct blob_commit) + chunks * blob_chunk_ref_size(version);
}

/* Bytes of the payload of a commit record written now for <chunks> chunks. */
static inline uint64_t blob_commit_payload_len(uint64_t chunks)
{
    return blob_commit_payload_len_of(BLOB_COMMIT_VERSION, chunks);
}

/* True when the refs of a commit record of <version> carry their chunk record's payload_sum. */
static inline bool blob_commit_binds_chunks(uint8_t version)
{
    return version == BLOB_COMMIT_VERSION;
}

/* XXH3-64 of <len> bytes at <p>. */
uint64_t blob_format_sum(const void *p, size_t len);

/* Fills a segment header for <seq> written by <core>. */
void blob_format_seg_header(struct blob_seg_header *h, uint64_t seq, uint32_t core);

/* Checks magic, version, block size and checksum; 0 or -EBADMSG. */
MUST_CHECK int blob_format_check_seg_header(const struct blob_seg_header *h);

/* Fills <h> for a record of <type> whose payload (<payload_len> bytes at <payload>) is final. */
void blob_format_record_header(struct blob_record_header *h, uint8_t type, uint8_t enc,
                               const void *payload, uint32_t payload_len, uint32_t raw_len);

/*
 * Checks a record header read from disk: magic, version, type, checksum and that the payload
 * fits in <room> bytes after it. Returns 0 or -EBADMSG.
 */
MUST_CHECK int blob_format_check_record_header(const struct blob_record_header *h, uint64_t room);

/* Checks the payload checksum of a record whose header passed. 0 or -EBADMSG. */
MUST_CHECK int blob_format_check_payload(const struct blob_record_header *h, const void *payload);

/*
 * Checks the payload <c> of a commit record whose (checked) header is <h>: the chunk count
 * matches the length for the record's version, the sizes agree with the chunk shift. Returns
 * 0 or -EBADMSG.
 */
MUST_CHECK int blob_format_check_commit(const struct blob_record_header *h,
                                        const struct blob_commit *c);

/*
 * Chunk ref <i> of the (checked) commit <c> of a record of <version>, decoded into <out>; a
 * version-1 ref has no sum (0: blob_commit_binds_chunks tells whether to compare it).
 */
void blob_format_commit_ref(const struct blob_commit *c, uint8_t version, uint32_t i,
                            struct blob_chunk_ref *out);

/*
 * True when the chunk record whose (checked) header is <h> is the one <ref>, a ref of a
 * commit record of <version>, names: its length, and for version 2 its payload_sum. Readers
 * and fsck check it along with the record's own checksums.
 */
bool blob_format_chunk_is_ref(const struct blob_record_header *h, uint8_t version,
                              const struct blob_chunk_ref *ref);

/* Damaged records a scan of one segment skips at most (recovery, fsck). */
#define BLOB_SCAN_SKIPPED_MAX 64U

/*
 * True when a chunk of the (checked) commit <c>, of a record of <version>, is the record at
 * one of the <len> offsets <offs> of segment <seq>: recovery and fsck leave out the commits
 * of the damaged records a scan skipped.
 */
bool blob_format_commit_uses(const struct blob_commit *c, uint8_t version, uint64_t seq,
                             const uint64_t *offs, uint32_t len);

/* The footer entry of a (checked) commit <c> of a record of <version> at <off> of segment
 * <seq>: what the writer lists in the footer, what recovery indexes from a scan and what fsck
 * compares. */
void blob_format_footer_entry(const struct blob_commit *c, uint8_t version, uint64_t seq,
                              uint64_t off, struct blob_footer_entry *e);

/* Fills a trailer and its checksum. */
void blob_format_trailer(struct blob_seg_trailer *t, uint64_t seq, uint64_t footer_off,
                         uint64_t records_end, uint64_t count, uint64_t file_size);

/* Checks a trailer read from the end of a file of <file_size> bytes for segment <seq>: its
 * checksum, and that the footer it names fits between its footer_off and the trailer. */
MUST_CHECK int blob_format_check_trailer(const struct blob_seg_trailer *t, uint64_t seq,
                                         uint64_t file_size);

/* Writes the file name of segment <seq> ("seg-00000000000000a1.rcs") into <out>. */
void blob_format_seg_name(uint64_t seq, char *out, size_t out_size);

/* Parses a segment file name; returns 0 and *<seq>, or -EINVAL for other names. */
MUST_CHECK int blob_format_parse_seg_name(const char *name, uint64_t *seq);

#endif /* RINGCAS_BLOB_FORMAT_H */
