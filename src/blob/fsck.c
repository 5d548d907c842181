/*
 * The offline checker (see fsck.h). It reads every segment whole, so it is as slow as the
 * disk; it shares the format's validators with recovery and the chunk decoder with readers.
 *
 * Sections: segments (scan and footer comparison), blobs (chunks, digests), the command.
 */
#include "blob/fsck.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "blob/chunk.h"
#include "blob/digest.h"
#include "blob/format.h"
#include "blob/store.h"

struct fsck_seg {
    uint64_t seq;  /* segment number */
    int fd;        /* open for reading, -1 when it could not be */
    int open_err;  /* why not (-errno), else 0 */
    uint64_t size; /* file size */
    uint32_t core; /* the core that wrote it (its header), CORE_UNKNOWN when unreadable */
};

#define CORE_UNKNOWN UINT32_MAX

struct fsck {
    struct blob_io *io;         /* the folder */
    FILE *log;                  /* problems, one per line */
    struct blob_fsck_report *r; /* the counts */
    struct fsck_seg *segs;      /* every segment, by seq */
    size_t segs_len;            /* used */
    size_t segs_size;           /* capacity */
    struct base_counter zmem;   /* zstd memory of the checker */
    struct blob_chunk_ctx z;    /* decoder */
    uint8_t *rec;               /* one chunk record */
    uint8_t *raw;               /* its decoded bytes */
};

static void problem(struct fsck *f, uint64_t seq, uint64_t off, const char *what)
{
    if (f->log) {
        (void)fprintf(f->log, "segment %llu offset %llu: %s\n", (unsigned long long)seq,
                      (unsigned long long)off, what);
    }
}

/* ---- segments ---- */

static void add_name(void *ctx, const char *name)
{
    struct fsck *f = ctx;
    uint64_t seq;
    if (blob_format_parse_seg_name(name, &seq) < 0) return;
    if (f->segs_len == f->segs_size) {
        size_t size = f->segs_size ? f->segs_size * 2 : 64;
        struct fsck_seg *n = realloc(f->segs, size * sizeof(*n));
        if (!n) return;
        f->segs = n;
        f->segs_size = size;
    }
    f->segs[f->segs_len++] = (struct fsck_seg){ .seq = seq, .fd = -1, .core = CORE_UNKNOWN };
}

static int cmp_seg(const void *a, const void *b)
{
    const struct fsck_seg *x = a;
    const struct fsck_seg *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static struct fsck_seg *seg_find(struct fsck *f, uint64_t seq)
{
    struct fsck_seg key = { .seq = seq };
    return bsearch(&key, f->segs, f->segs_len, sizeof(key), cmp_seg);
}

/* ---- blobs ---- */

/*
 * Tells why segment <gone>, holding a chunk of a commit in segment <home>, is not in the
 * folder: -ENOENT when eviction took it, -EBADMSG when it is a hole (damage). Eviction takes
 * the segments that are not a core's active one, oldest first. A core's segment is never
 * active once the same core has opened a newer one, and seqs grow across restarts; so a
 * segment of the commit's core older than <gone> and still here was evictable when <gone>
 * went, and would have gone first: <gone> is a hole. Without one, it was evicted. Other cores'
 * older segments prove nothing: an idle core's active segment outlives newer evicted ones.
 */
static int chunk_gone(const struct fsck *f, const struct fsck_seg *home, uint64_t gone)
{
    /* Bounded by the segments; they are sorted by seq. */
    for (size_t i = 0; i < f->segs_len && f->segs[i].seq < gone; i++) {
        if (f->segs[i].core == home->core && home->core != CORE_UNKNOWN) return -EBADMSG;
    }
    return -ENOENT;
}

/*
 * Reads, checks and decodes chunk <i> of commit <c> (of a record of <version>, in segment
 * <home>); feeds the digest. 0, -ENOENT (its segment was evicted: chunk_gone) or -EBADMSG.
 */
static int check_chunk(struct fsck *f, const struct fsck_seg *home, const struct blob_commit *c,
                       uint8_t version, uint32_t i, struct blob_digest *d)
{
    struct blob_chunk_ref r;
    blob_format_commit_ref(c, version, i, &r);
    const struct blob_chunk_ref *ref = &r;
    struct fsck_seg *s = seg_find(f, ref->seg);
    uint64_t chunk = 1ULL << c->chunk_shift;
    uint64_t raw = c->size - (uint64_t)i * chunk < chunk ? c->size - (uint64_t)i * chunk : chunk;
    uint64_t len = sizeof(struct blob_record_header) + (uint64_t)ref->stored;
    if (!s && ref->seg < home->seq) return chunk_gone(f, home, ref->seg);
    if (!s || s->fd < 0 || ref->stored > blob_chunk_raw_frame_size((uint32_t)chunk)) {
        return -EBADMSG;
    }
    if (blob_io_pread_full(f->io, s->fd, f->rec, len, (uint64_t)ref->off8 * 8) < 0) return -EBADMSG;
    const struct blob_record_header *h = (const void *)f->rec;
    if (blob_format_check_record_header(h, ref->stored) < 0 || h->type != BLOB_RECORD_CHUNK ||
        h->payload_len != ref->stored || h->raw_len != raw ||
        blob_format_check_payload(h, f->rec + sizeof(*h)) < 0) {
        return -EBADMSG;
    }
    if (!blob_format_chunk_is_ref(h, version, ref)) {
        /* A valid record, but not the one the commit wrote there: named where it is, since
         * nothing else reports it (the record itself passes every scan). */
        problem(f, ref->seg, (uint64_t)ref->off8 * 8,
                "chunk record is not the one its commit names");
        return -EBADMSG;
    }
    if (blob_chunk_decode(&f->z, h, f->rec + sizeof(*h), f->raw, chunk) < 0) return -EBADMSG;
    blob_digest_update(d, f->raw, raw);
    return 0;
}

static void check_blob(struct fsck *f, const struct fsck_seg *home, uint64_t off,
                       const struct blob_commit *c, uint8_t version)
{
    uint64_t seq = home->seq;
    struct blob_digest d;
    if (blob_digest_init(&d, c->digest_fn) < 0) {
        f->r->bad_blobs++;
        problem(f, seq, off, "unknown digest function");
        return;
    }
    int rc = 0;
    for (uint32_t i = 0; i < c->chunk_count && rc == 0; i++) {
        rc = check_chunk(f, home, c, version, i, &d);
    }
    uint8_t hash[BLOB_HASH_SIZE];
    blob_digest_final(&d, hash);
    blob_digest_deinit(&d);
    if (rc == -ENOENT) {
        /* As the server sees it: its lookups miss a blob whose oldest chunks were evicted. */
        f->r->evicted_blobs++;
        return;
    }
    if (rc < 0) {
        f->r->bad_blobs++;
        problem(f, seq, off, "a chunk is missing or corrupt");
        return;
    }
    if (c->kind == BLOB_KIND_CAS && memcmp(hash, c->hash, BLOB_HASH_SIZE) != 0) {
        f->r->bad_blobs++;
        problem(f, seq, off, "digest mismatch");
        return;
    }
    f->r->blobs_ok++;
}

/* ---- scanning ---- */

struct seg_scan {
    uint64_t commits;                        /* commit records seen */
    uint64_t end;                            /* end of the valid records */
    bool stopped_early;                      /* an invalid record before <end> of the scan */
    bool footer_seen;                        /* the scan stopped at a valid footer record header */
    struct blob_footer_entry *entries;       /* what a footer must list, one per commit, in order */
    size_t entries_len;                      /* used */
    size_t entries_size;                     /* capacity */
    uint64_t skipped[BLOB_SCAN_SKIPPED_MAX]; /* offsets of the damaged records skipped */
    uint32_t skipped_len;                    /* used */
};

/* Remembers the entry of a valid commit; false when out of memory. */
static bool keep_entry(struct seg_scan *sc, const struct blob_footer_entry *e)
{
    if (sc->entries_len == sc->entries_size) {
        size_t size = sc->entries_size ? sc->entries_size * 2 : 64;
        struct blob_footer_entry *n = realloc(sc->entries, size * sizeof(*n));
        if (!n) return false;
        sc->entries = n;
        sc->entries_size = size;
    }
    sc->entries[sc->entries_len++] = *e;
    return true;
}

/* True when a record at <off> (before <limit>) has a valid header and payload. */
static bool record_valid_at(struct fsck *f, struct fsck_seg *s, uint64_t off, uint64_t limit)
{
    struct blob_record_header h;
    if (off + sizeof(h) > limit || blob_io_pread_full(f->io, s->fd, &h, sizeof(h), off) < 0 ||
        blob_format_check_record_header(&h, limit - off - sizeof(h)) < 0) {
        return false;
    }
    uint8_t *buf = malloc(h.payload_len > 0 ? h.payload_len : 1);
    if (!buf) return false;
    bool ok = blob_io_pread_full(f->io, s->fd, buf, h.payload_len, off + sizeof(h)) == 0 &&
              blob_format_check_payload(&h, buf) == 0;
    free(buf);
    return ok;
}

static int scan_records(struct fsck *f, struct fsck_seg *s, uint64_t limit, struct seg_scan *out)
{
    uint64_t off = BLOB_SEG_HEADER_SIZE;
    size_t buf_size = 4096;
    uint8_t *buf = malloc(buf_size);
    if (!buf) return -ENOMEM;
    /* Bounded by <limit>: each record advances at least its header. */
    while (off + sizeof(struct blob_record_header) <= limit) {
        struct blob_record_header h;
        if (blob_io_pread_full(f->io, s->fd, &h, sizeof(h), off) < 0 ||
            blob_format_check_record_header(&h, limit - off - sizeof(h)) < 0) {
            break;
        }
        if (h.type == BLOB_RECORD_FOOTER) {
            out->footer_seen = true;
            break;
        }
        if (h.payload_len > buf_size) {
            uint8_t *n = realloc(buf, h.payload_len);
            if (!n) break;
            buf = n;
            buf_size = h.payload_len;
        }
        if (blob_io_pread_full(f->io, s->fd, buf, h.payload_len, off + sizeof(h)) < 0 ||
            blob_format_check_payload(&h, buf) < 0) {
            /* A torn tail has nothing valid after it; a damaged record does, and recovery
             * skips it (docs/format.md), so the scan goes on as recovery's does. */
            if (out->skipped_len == BLOB_SCAN_SKIPPED_MAX) break;
            if (!record_valid_at(f, s, off + blob_record_size(h.payload_len), limit)) break;
            out->skipped[out->skipped_len++] = off;
            f->r->corrupt_records++;
            problem(f, s->seq, off, "corrupt record");
            off += blob_record_size(h.payload_len);
            continue;
        }
        f->r->records++;
        if (h.type == BLOB_RECORD_COMMIT) {
            out->commits++;
            const struct blob_commit *c = (const void *)buf;
            if (blob_format_check_commit(&h, c) < 0) {
                f->r->bad_blobs++;
                problem(f, s->seq, off, "malformed commit");
            } else if (blob_format_commit_uses(c, h.version, s->seq, out->skipped,
                                               out->skipped_len)) {
                /* Recovery leaves it out of the footer: its chunk is the damaged record. */
                f->r->bad_blobs++;
                problem(f, s->seq, off, "a chunk is missing or corrupt");
            } else {
                struct blob_footer_entry e;
                blob_format_footer_entry(c, h.version, s->seq, off, &e);
                if (!keep_entry(out, &e)) break;
                check_blob(f, s, off, c, h.version);
            }
        }
        off += blob_record_size(h.payload_len);
    }
    free(buf);
    out->end = off;
    out->stopped_early = off + sizeof(struct blob_record_header) <= limit;
    return 0;
}

/* True when the record header at <off> is a footer's: after the records, a seal that a crash
 * interrupted before its trailer. */
static bool footer_at(struct fsck *f, struct fsck_seg *s, uint64_t off)
{
    struct blob_record_header h;
    return blob_io_pread_full(f->io, s->fd, &h, sizeof(h), off) == 0 &&
           h.type == BLOB_RECORD_FOOTER;
}

/*
 * Returns the offset of the first valid record (not a footer) at an 8-byte aligned offset
 * after <off>, where the scan of an unsealed segment stopped, or 0 when none follows: recovery
 * then cuts a torn tail; when one follows, it cuts records that may have been acknowledged.
 * The same search as recover.c's scan_find_valid, over fsck's own reads (fsck checks records
 * with its own scanner, record_valid_at, and does not share recovery's window).
 */
static uint64_t valid_record_after(struct fsck *f, struct fsck_seg *s, uint64_t off)
{
    const size_t step = 1U << 20; /* f->raw's size, a multiple of 8 */
    uint64_t at = off + BLOB_RECORD_ALIGN;
    /* Bounded by the file size: every pass reads up to <step> bytes further. */
    while (at + sizeof(struct blob_record_header) <= s->size) {
        size_t n = s->size - at < step ? (size_t)(s->size - at) : step;
        if (blob_io_pread_full(f->io, s->fd, f->raw, n, at) < 0) return 0;
        for (size_t i = 0; i + sizeof(uint32_t) <= n; i += BLOB_RECORD_ALIGN) {
            uint32_t magic;
            memcpy(&magic, f->raw + i, sizeof(magic));
            if (magic == BLOB_RECORD_MAGIC && record_valid_at(f, s, at + i, s->size) &&
                !footer_at(f, s, at + i)) {
                return at + i;
            }
        }
        at += n;
    }
    return 0;
}

/* Reads the trailer; returns true with the records' end and the footer's count when valid. */
static bool read_trailer(struct fsck *f, struct fsck_seg *s, struct blob_seg_trailer *t)
{
    if (s->size < 2ULL * BLOB_BLOCK_SIZE || s->size % BLOB_BLOCK_SIZE != 0) return false;
    if (blob_io_pread_full(f->io, s->fd, t, sizeof(*t), s->size - sizeof(*t)) < 0) return false;
    return blob_format_check_trailer(t, s->seq, s->size) == 0;
}

/* True when <len> bytes at <off> are all zero (the padding around a footer). */
static bool zeros_at(struct fsck *f, struct fsck_seg *s, uint64_t off, uint64_t len)
{
    uint8_t buf[4096];
    while (len > 0) {
        size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
        if (blob_io_pread_full(f->io, s->fd, buf, n, off) < 0) return false;
        for (size_t i = 0; i < n; i++) {
            if (buf[i] != 0) return false;
        }
        off += n;
        len -= n;
    }
    return true;
}

/*
 * Checks a sealed segment's footer record against the commit records the scan found: its
 * checksum, one entry per commit with the same place, key and size, and zeros before it
 * and after it up to the trailer. Recovery trusts a valid footer without reading the records,
 * so a footer that lies is corruption even when every record is sound. Returns the problem.
 */
static const char *footer_problem(struct fsck *f, struct fsck_seg *s,
                                  const struct blob_seg_trailer *t, const struct seg_scan *sc)
{
    uint64_t payload = t->count * sizeof(struct blob_footer_entry);
    uint64_t len = sizeof(struct blob_record_header) + payload;
    uint64_t trailer_off = s->size - sizeof(*t);
    if (t->footer_off < t->records_end || t->footer_off + len > trailer_off) {
        return "footer out of place";
    }
    if (sc->entries_len != t->count) return "footer does not list the commit records";
    uint8_t *buf = malloc(len);
    if (!buf) return "out of memory reading the footer";
    const char *why = NULL;
    const struct blob_record_header *h = (const void *)buf;
    if (blob_io_pread_full(f->io, s->fd, buf, len, t->footer_off) < 0 ||
        blob_format_check_record_header(h, payload) < 0 || h->type != BLOB_RECORD_FOOTER ||
        h->payload_len != payload || blob_format_check_payload(h, buf + sizeof(*h)) < 0) {
        why = "footer record fails its checksum";
    } else if (payload > 0 && memcmp(buf + sizeof(*h), sc->entries, payload) != 0) {
        why = "footer entries disagree with the commit records";
    } else if (!zeros_at(f, s, t->records_end, t->footer_off - t->records_end) ||
               !zeros_at(f, s, t->footer_off + blob_record_size(payload),
                         trailer_off - t->footer_off - blob_record_size(payload))) {
        why = "bytes other than zeros around the footer";
    }
    free(buf);
    return why;
}

/* True when the last 64 bytes of a block-sized file are not all zero: a trailer was written. */
static bool trailer_written(struct fsck *f, struct fsck_seg *s)
{
    if (s->size < 2ULL * BLOB_BLOCK_SIZE || s->size % BLOB_BLOCK_SIZE != 0) return false;
    return !zeros_at(f, s, s->size - sizeof(struct blob_seg_trailer),
                     sizeof(struct blob_seg_trailer));
}

/* True when a footer record header sits at the first block boundary after <end>. */
static bool footer_after(struct fsck *f, struct fsck_seg *s, uint64_t end)
{
    struct blob_record_header h;
    uint64_t off = blob_align_block(end);
    if (off + sizeof(h) > s->size) return false;
    if (blob_io_pread_full(f->io, s->fd, &h, sizeof(h), off) < 0) return false;
    return blob_format_check_record_header(&h, s->size - off - sizeof(h)) == 0 &&
           h.type == BLOB_RECORD_FOOTER;
}

/*
 * Counts an unsealed segment whose valid records end at <end>. Only zeros after them (the
 * padding of the last block written, or nothing) is how a server leaves its active segment
 * when it stops cleanly: recovery seals it at the next start. Any other byte there is a
 * record a crash tore, or a seal it interrupted: recovery cuts it, so it is no corruption
 * either, but it is reported.
 */
static void count_unsealed(struct fsck *f, struct fsck_seg *s, uint64_t end)
{
    /* <end> is past the last record's padding, which a file cut right after the record's
     * bytes lacks (up to 7 bytes past its size): nothing follows that record, and recovery
     * keeps it (its seal writes the padding as zeros). */
    uint64_t after = end < s->size ? s->size - end : 0;
    if (zeros_at(f, s, end, after)) {
        f->r->active++;
        return;
    }
    f->r->torn_tails++;
    problem(f, s->seq, end, "torn tail: bytes after the last valid record (recovery cuts them)");
}

static void check_segment(struct fsck *f, struct fsck_seg *s)
{
    struct blob_seg_header h;
    if (s->open_err < 0) {
        /* Recovery refuses to start on it: the same name, unreadable, is no empty segment. */
        char why[128];
        if (blob_io_not_regular(s->open_err)) {
            (void)snprintf(why, sizeof(why), "not a regular file (a folder, FIFO or device)");
        } else {
            (void)snprintf(why, sizeof(why), "cannot be opened (%s)", base_err_str(s->open_err));
        }
        f->r->bad_segments++;
        problem(f, s->seq, 0, why);
        return;
    }
    f->r->bytes += s->size;
    if (s->size < BLOB_SEG_HEADER_SIZE) {
        /* Created and not written yet (the header goes out with the first write), or a
         * header a crash tore: recovery deletes the file either way. */
        count_unsealed(f, s, 0);
        return;
    }
    if (blob_io_pread_full(f->io, s->fd, &h, sizeof(h), 0) < 0 ||
        blob_format_check_seg_header(&h) < 0 || h.seq != s->seq) {
        f->r->bad_segments++;
        problem(f, s->seq, 0, "invalid header");
        return;
    }
    struct blob_seg_trailer t;
    bool sealed = read_trailer(f, s, &t);
    struct seg_scan sc = { 0 };
    (void)scan_records(f, s, sealed ? t.records_end : s->size, &sc);
    uint64_t next = 0;
    if (!sealed && sc.stopped_early && !sc.footer_seen) next = valid_record_after(f, s, sc.end);
    if (!sealed && trailer_written(f, s) && (sc.footer_seen || footer_after(f, s, sc.end))) {
        /* Records end in a footer and a trailer was written whole (it is the last 64 bytes
         * of a sector, so a torn seal leaves none): the segment was sealed, its trailer is
         * damaged. Without a trailer it is a seal a crash interrupted, as a torn tail. */
        f->r->bad_segments++;
        problem(f, s->seq, s->size - sizeof(t), "sealed segment with a damaged trailer");
    } else if (next > 0) {
        /* Not a torn tail: recovery cuts here and drops the valid records after it. */
        char why[160];
        (void)snprintf(why, sizeof(why),
                       "damaged record: a valid record follows at offset %" PRIu64
                       " (recovery cuts the %" PRIu64 " bytes from here)",
                       next, s->size - sc.end);
        f->r->corrupt_records++;
        problem(f, s->seq, sc.end, why);
    } else if (!sealed) {
        count_unsealed(f, s, sc.end);
    } else {
        f->r->sealed++;
        if (sc.stopped_early || sc.end != t.records_end) {
            f->r->corrupt_records++;
            problem(f, s->seq, sc.end, "corrupt record");
        }
        const char *why = footer_problem(f, s, &t, &sc);
        if (why) {
            f->r->bad_segments++;
            problem(f, s->seq, t.footer_off, why);
        }
    }
    free(sc.entries);
}

/* Notes the core that wrote <s> from its header, when the header is valid (chunk_gone). */
static void read_core(struct fsck *f, struct fsck_seg *s)
{
    struct blob_seg_header h;
    if (s->fd < 0 || s->size < sizeof(h)) return;
    if (blob_io_pread_full(f->io, s->fd, &h, sizeof(h), 0) < 0) return;
    if (blob_format_check_seg_header(&h) < 0 || h.seq != s->seq) return;
    s->core = h.core;
}

int blob_fsck_run(struct blob_io *io, struct blob_fsck_report *out, FILE *log)
{
    memset(out, 0, sizeof(*out));
    struct fsck f = { .io = io, .log = log, .r = out };
    int rc = io->ops->list(io, add_name, &f);
    if (rc < 0) return rc;
    if (f.segs_len > 1) qsort(f.segs, f.segs_len, sizeof(*f.segs), cmp_seg);
    rc = blob_chunk_ctx_init(&f.z, 1, &f.zmem);
    f.rec = malloc(blob_chunk_record_bound(1U << 20));
    f.raw = malloc(1U << 20);
    if (rc < 0 || !f.rec || !f.raw) rc = -ENOMEM;
    for (size_t i = 0; i < f.segs_len && rc == 0; i++) {
        char name[32];
        blob_format_seg_name(f.segs[i].seq, name, sizeof(name));
        f.segs[i].open_err = io->ops->open(io, name, O_RDONLY, &f.segs[i].fd);
        if (f.segs[i].open_err < 0) {
            f.segs[i].fd = -1;
        } else if (io->ops->fsize(io, f.segs[i].fd, &f.segs[i].size) < 0) {
            f.segs[i].size = 0;
        }
        read_core(&f, &f.segs[i]);
    }
    for (size_t i = 0; i < f.segs_len && rc == 0; i++) {
        out->segments++;
        check_segment(&f, &f.segs[i]);
    }
    for (size_t i = 0; i < f.segs_len; i++) {
        if (f.segs[i].fd >= 0) (void)io->ops->close(io, f.segs[i].fd);
    }
    blob_chunk_ctx_deinit(&f.z);
    free(f.rec);
    free(f.raw);
    free(f.segs);
    return rc;
}

void blob_fsck_print(const struct blob_fsck_report *r, const char *dir, FILE *out)
{
    bool bad = r->corrupt_records || r->bad_blobs || r->bad_segments;
    (void)fprintf(out,
                  "fsck %s: %s: %" PRIu64 " segments (%" PRIu64 " sealed, %" PRIu64
                  " active, %" PRIu64 " bytes), %" PRIu64 " records, %" PRIu64
                  " evicted blobs, %" PRIu64 " blobs ok, %" PRIu64 " corrupt records, %" PRIu64
                  " bad blobs, %" PRIu64 " bad segments, %" PRIu64 " torn tails\n",
                  dir, bad ? "CORRUPT" : "ok", r->segments, r->sealed, r->active, r->bytes,
                  r->records, r->evicted_blobs, r->blobs_ok, r->corrupt_records, r->bad_blobs,
                  r->bad_segments, r->torn_tails);
}

int blob_fsck_main(const char *dir, FILE *out)
{
    struct blob_io *io;
    int rc = blob_io_real_create(dir, &io);
    if (rc == -EBUSY) {
        (void)fprintf(out,
                      "fsck %s: the folder is in use by another ringcas process: fsck checks a "
                      "stopped server's folder\n",
                      dir);
        return 2;
    }
    if (rc < 0) {
        (void)fprintf(out, "fsck %s: cannot open the folder: %s\n", dir, base_err_str(rc));
        return 2;
    }
    struct blob_fsck_report r;
    rc = blob_fsck_run(io, &r, out);
    blob_io_real_destroy(io);
    if (rc < 0) {
        (void)fprintf(out, "fsck %s: %s\n", dir, base_err_str(rc));
        return 2;
    }
    blob_fsck_print(&r, dir, out);
    return (r.corrupt_records || r.bad_blobs || r.bad_segments) ? 1 : 0;
}
