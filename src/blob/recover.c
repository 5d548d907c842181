/*
 * Start-up recovery: builds the index and the segment table from the folder, before any core
 * serves, with blocking I/O.
 *
 * Sealed segments are read by their footer only (trailer -> footer record -> entries), so a
 * restart reads ~56 bytes per blob. A segment without a valid trailer (a core's active
 * segment at a crash, an abandoned one, a damaged footer) is scanned record by record from its
 * header; the scan stops at the first invalid record (a torn tail) unless it is a record with a
 * valid header whose payload fails its checksum and a valid record follows it: that record is
 * skipped with the CAS commits of this segment that use it, and the scan goes on. The segment is
 * sealed where the scan stopped: footer written after the last valid record, file cut, synced;
 * a valid record further on (past a damaged header) is logged and counted, not salvaged.
 * Segments are visited in seq order and a later copy of a CAS blob replaces an earlier one (a
 * refresh copy is newer); for AC keys the highest commit_seq wins, whatever the segment order.
 * A commit whose chunks are in a segment missing from inside its span (set aside, or gone from
 * the folder) is not indexed: it could never be read whole (span_has_hole).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "blob/internal.h"

#define SCAN_WINDOW (4U << 20)

/* ---- scanning and footers ---- */

struct scan {
    struct blob_io *io; /* the seam */
    int fd;             /* the segment */
    uint64_t size;      /* file size */
    uint8_t *win;       /* window of the file */
    uint64_t win_off;   /* file offset of win[0] */
    uint32_t win_len;   /* valid bytes in win */
};

/* Makes [off, off + len) available in the window; returns a pointer or NULL (past the end). */
static const uint8_t *scan_at(struct scan *sc, uint64_t off, uint64_t len, int *err)
{
    *err = 0;
    if (off + len > sc->size) return NULL;
    if (off >= sc->win_off && off + len <= sc->win_off + sc->win_len) {
        return sc->win + (off - sc->win_off);
    }
    if (len > SCAN_WINDOW) return NULL;
    uint64_t n = sc->size - off < SCAN_WINDOW ? sc->size - off : SCAN_WINDOW;
    int rc = blob_io_pread_full(sc->io, sc->fd, sc->win, n, off);
    if (rc < 0) {
        *err = rc;
        return NULL;
    }
    sc->win_off = off;
    sc->win_len = (uint32_t)n;
    return sc->win;
}

/*
 * Checks the record at <off>; returns its payload, or NULL when it is invalid. *<skip> is the
 * record's size on disk when its header is valid (a payload that fails its checksum included),
 * else 0: the length is unknown.
 */
static const uint8_t *scan_record(struct scan *sc, uint64_t off,
                                  const struct blob_record_header **hp, uint64_t *skip, int *err)
{
    *skip = 0;
    const uint8_t *p = scan_at(sc, off, sizeof(struct blob_record_header), err);
    if (!p) return NULL;
    struct blob_record_header h;
    memcpy(&h, p, sizeof(h));
    uint64_t room = sc->size - off - sizeof(h);
    if (blob_format_check_record_header(&h, room) < 0) return NULL;
    *skip = blob_record_size(h.payload_len);
    p = scan_at(sc, off, sizeof(h) + h.payload_len, err);
    if (!p) return NULL;
    *hp = (const struct blob_record_header *)(const void *)p;
    if (blob_format_check_payload(*hp, p + sizeof(h)) < 0) return NULL;
    return p + sizeof(h);
}

/*
 * True when the record at <off> (after one whose payload failed its checksum) is valid. Then
 * the bad record is damage, or a tear inside one write whose later sectors survived; cutting
 * the segment there would drop every record after it, acknowledged ones included (a clean stop
 * leaves active segments unsealed: every restart scans them).
 */
static bool scan_valid_after(struct scan *sc, uint64_t off, int *err)
{
    const struct blob_record_header *h;
    uint64_t skip;
    if (off + sizeof(struct blob_record_header) > sc->size) return false;
    return scan_record(sc, off, &h, &skip, err) != NULL;
}

/*
 * Looks for a valid record (header and payload; not a footer) at an 8-byte aligned offset
 * after <off>, where the scan stopped. Returns its offset, or 0 when none follows: then the
 * cut is a torn tail, a crash's partial last write. One that follows means the cut drops
 * records that may have been acknowledged: a damaged header (no length to skip by), or a tear
 * inside one write whose later sectors survived. Reads the rest of the file once.
 */
static uint64_t scan_find_valid(struct scan *sc, uint64_t off, int *err)
{
    *err = 0;
    /* Bounded by the file size: every pass advances 8 bytes. */
    for (uint64_t at = off + BLOB_RECORD_ALIGN; at + sizeof(struct blob_record_header) <= sc->size;
         at += BLOB_RECORD_ALIGN) {
        const uint8_t *p = scan_at(sc, at, sizeof(struct blob_record_header), err);
        if (!p) return 0;
        uint32_t magic;
        memcpy(&magic, p, sizeof(magic));
        if (magic != BLOB_RECORD_MAGIC) continue; /* the cheap test first */
        const struct blob_record_header *h;
        uint64_t skip;
        bool valid = scan_record(sc, at, &h, &skip, err) != NULL;
        if (*err < 0) return 0;
        /* A footer after the records is a seal a crash interrupted before its trailer. */
        if (valid && h->type != BLOB_RECORD_FOOTER) return at;
    }
    return 0;
}

/* Damaged records one scan skips at most; past them the rest is cut as a torn tail. */
#define SKIPPED_MAX BLOB_SCAN_SKIPPED_MAX

static int scan_segment(struct scan *sc, struct blob_visit *v)
{
    uint64_t seq = v->seq;
    blob_commit_visit_fn *fn = v->fn;
    void *ctx = v->ctx;
    bool at_footer = false;
    uint64_t skipped[SKIPPED_MAX];
    uint32_t skipped_len = 0;
    uint64_t off = BLOB_SEG_HEADER_SIZE;
    /* Bounded by the file size: every record advances by at least its header. */
    while (off + sizeof(struct blob_record_header) <= sc->size) {
        const struct blob_record_header *h;
        uint64_t skip;
        int err;
        const uint8_t *payload = scan_record(sc, off, &h, &skip, &err);
        if (err < 0) return err;
        if (!payload && skip > 0 && skipped_len < SKIPPED_MAX) {
            bool valid_after = scan_valid_after(sc, off + skip, &err);
            if (err < 0) return err;
            if (!valid_after) break;
            /* Not indexed, nor any CAS commit of this segment whose chunk it is. */
            LOG_WARN("segment %llu offset %llu: a record fails its checksum; skipped, the records "
                     "after it are kept",
                     (unsigned long long)seq, (unsigned long long)off);
            skipped[skipped_len++] = off;
            off += skip;
            continue;
        }
        if (!payload) break;
        if (h->type == BLOB_RECORD_FOOTER) {
            at_footer = true; /* a seal a crash interrupted: nothing after it is a record */
            break;
        }
        if (h->type == BLOB_RECORD_COMMIT) {
            const struct blob_commit *c = (const void *)payload;
            if (blob_format_check_commit(h, c) < 0) break;
            /* An AC value whose chunk is damaged stays listed: it is still the key's newest,
             * and its first read drops the key (a miss), where leaving it out would bring
             * back the value it replaced, as leave_out explains. */
            if (c->kind == BLOB_KIND_AC ||
                !blob_format_commit_uses(c, h->version, seq, skipped, skipped_len)) {
                struct blob_footer_entry e;
                blob_format_footer_entry(c, h->version, seq, off, &e);
                fn(ctx, &e);
            }
        }
        off += blob_record_size(h->payload_len);
    }
    v->end = off;
    if (v->find_cut && !at_footer && off + sizeof(struct blob_record_header) <= sc->size) {
        int err;
        v->cut_next = scan_find_valid(sc, off, &err);
        if (err < 0) return err;
    }
    return 0;
}

/* Reads a sealed segment's footer; returns 0, 1 (no valid footer: scan) or -errno. */
static int read_footer(struct scan *sc, uint64_t seq, blob_commit_visit_fn *fn, void *ctx,
                       uint64_t *end, bool *sealed_now)
{
    if (sc->size < 2ULL * BLOB_BLOCK_SIZE || sc->size % BLOB_BLOCK_SIZE != 0) return 1;
    struct blob_seg_trailer t;
    int rc = blob_io_pread_full(sc->io, sc->fd, &t, sizeof(t), sc->size - sizeof(t));
    if (rc < 0) return rc;
    if (blob_format_check_trailer(&t, seq, sc->size) < 0) return 1;
    uint64_t len = sizeof(struct blob_record_header) + t.count * sizeof(struct blob_footer_entry);
    if (t.footer_off + len > sc->size - sizeof(t)) return 1;
    uint8_t *buf = malloc(len);
    if (!buf) return -ENOMEM;
    rc = blob_io_pread_full(sc->io, sc->fd, buf, len, t.footer_off);
    const struct blob_record_header *h = (const void *)buf;
    if (rc == 0 && (blob_format_check_record_header(h, len - sizeof(*h)) < 0 ||
                    h->type != BLOB_RECORD_FOOTER || h->payload_len != len - sizeof(*h) ||
                    blob_format_check_payload(h, buf + sizeof(*h)) < 0)) {
        rc = 1;
    }
    const struct blob_footer_entry *e = (const void *)(buf + sizeof(*h));
    /* Bounded by the footer's entries. */
    for (uint64_t i = 0; rc == 0 && i < t.count; i++) {
        /* A size no commit record can have (a scan refuses it: blob_format_check_commit):
         * the footer is damaged, however valid its checksum. The records are the truth. */
        if (e[i].size > BLOB_SIZE_MAX) rc = 1;
    }
    if (rc == 0) {
        *sealed_now = true;
        for (uint64_t i = 0; i < t.count; i++) {
            fn(ctx, &e[i]);
        }
        *end = t.records_end;
    }
    free(buf);
    return rc;
}

int blob_recover_visit(struct blob_visit *v)
{
    struct blob_seg_header h;
    v->sealed = false;
    v->end = 0;
    v->cut_next = 0;
    if (v->size < sizeof(h)) return -EBADMSG;
    int rc = blob_io_pread_full(v->io, v->fd, &h, sizeof(h), 0);
    if (rc < 0) return rc;
    if (blob_format_check_seg_header(&h) < 0 || h.seq != v->seq) return -EBADMSG;
    struct scan sc = { .io = v->io, .fd = v->fd, .size = v->size };
    rc = read_footer(&sc, v->seq, v->fn, v->ctx, &v->end, &v->sealed);
    if (rc <= 0) return rc;
    sc.win = malloc(SCAN_WINDOW);
    if (!sc.win) return -ENOMEM;
    rc = scan_segment(&sc, v);
    free(sc.win);
    return rc;
}

/* ---- the index side ---- */

/* AC keys seen during recovery and their commit_seq: the newest wins across segments. */
struct ac_seen {
    uint8_t hash[BLOB_HASH_SIZE]; /* the AC key */
    uint64_t commit_seq;          /* its newest commit */
};

struct recover {
    struct blob_store *s;                   /* the store */
    uint64_t seq;                           /* segment being visited */
    struct ac_seen *ac;                     /* open-addressing table of AC keys */
    uint64_t ac_size;                       /* power of two */
    uint64_t ac_len;                        /* used */
    uint64_t max_commit;                    /* highest commit_seq seen */
    uint64_t blobs;                         /* entries visited */
    int err;                                /* first index failure */
    struct blob_footer_entry *entries;      /* of the segment being sealed */
    uint64_t entries_len;                   /* used */
    uint64_t entries_size;                  /* capacity */
    struct blob_visit *visit;               /* the visit in progress (sealed: nothing to collect) */
    struct blob_key batch_keys[32];         /* puts waiting for their prefetch */
    struct blob_index_value batch_vals[32]; /* their values */
    uint32_t batch_len;                     /* used */
};

/* Puts the batch: prefetch every slot first, so the cache misses overlap. */
static void batch_flush(struct recover *r)
{
    for (uint32_t i = 0; i < r->batch_len; i++) {
        blob_index_prefetch(r->s->index, &r->batch_keys[i]);
    }
    for (uint32_t i = 0; i < r->batch_len; i++) {
        int rc =
            blob_index_put(r->s->index, &r->batch_keys[i], &r->batch_vals[i], BLOB_INDEX_REPLACE);
        if (rc < 0 && r->err == 0) {
            r->err = rc;
        }
    }
    r->batch_len = 0;
}

static int ac_grow(struct recover *r)
{
    uint64_t size = r->ac_size ? r->ac_size * 2 : 1024;
    struct ac_seen *t = calloc(size, sizeof(*t));
    if (!t) return -ENOMEM;
    for (uint64_t i = 0; i < r->ac_size; i++) {
        if (r->ac[i].commit_seq == 0) continue;
        uint64_t pos;
        memcpy(&pos, r->ac[i].hash, sizeof(pos));
        for (pos &= size - 1; t[pos].commit_seq != 0; pos = (pos + 1) & (size - 1)) {
            ;
        }
        t[pos] = r->ac[i];
    }
    free(r->ac);
    r->ac = t;
    r->ac_size = size;
    return 0;
}

/* True when <e> (an AC entry) is newer than what was seen for its key; records it. */
static bool ac_is_newest(struct recover *r, const struct blob_footer_entry *e)
{
    if ((r->ac_len + 1) * 2 > r->ac_size && ac_grow(r) < 0) {
        r->err = -ENOMEM;
        return false;
    }
    uint64_t pos;
    memcpy(&pos, e->hash, sizeof(pos));
    for (pos &= r->ac_size - 1; r->ac[pos].commit_seq != 0; pos = (pos + 1) & (r->ac_size - 1)) {
        if (memcmp(r->ac[pos].hash, e->hash, BLOB_HASH_SIZE) != 0) continue;
        if (r->ac[pos].commit_seq > e->commit_seq) return false;
        r->ac[pos].commit_seq = e->commit_seq;
        return true;
    }
    memcpy(r->ac[pos].hash, e->hash, BLOB_HASH_SIZE);
    r->ac[pos].commit_seq = e->commit_seq ? e->commit_seq : 1;
    r->ac_len++;
    return true;
}

/* Keeps <e> for the footer of a scanned segment; 0 or -ENOMEM. */
static int collect_entry(struct recover *r, const struct blob_footer_entry *e)
{
    if (r->entries_len == r->entries_size) {
        uint64_t size = r->entries_size * 2;
        struct blob_footer_entry *n = realloc(r->entries, size * sizeof(*n));
        if (!n) {
            return -ENOMEM;
        }
        r->entries = n;
        r->entries_size = size;
    }
    r->entries[r->entries_len++] = *e;
    return 0;
}

/*
 * Reads the commit record of <e> (in the segment being visited); true when one of its chunks
 * is in a segment that is not in the table. Recovery trusts a footer without reading the
 * records, and a footer's span only tells how far back the chunks go, so this reads the one
 * record. A record that is not the commit <e> lists is as unreadable to a reader: true. A
 * read error is not damage (a reader meets it, or not): false.
 */
static bool commit_misses_segment(struct recover *r, const struct blob_footer_entry *e)
{
    struct blob_visit *v = r->visit;
    uint64_t off = (uint64_t)e->off8 * 8;
    struct blob_record_header h;
    if (off + sizeof(h) > v->size) return true;
    if (blob_io_pread_full(v->io, v->fd, &h, sizeof(h), off) < 0) return false;
    if (blob_format_check_record_header(&h, v->size - off - sizeof(h)) < 0 ||
        h.type != BLOB_RECORD_COMMIT) {
        return true;
    }
    uint8_t *buf = malloc(h.payload_len > 0 ? h.payload_len : 1);
    if (!buf) {
        r->err = -ENOMEM;
        return false;
    }
    bool missing = true;
    const struct blob_commit *c = (const void *)buf;
    if (blob_io_pread_full(v->io, v->fd, buf, h.payload_len, off + sizeof(h)) < 0) {
        missing = false;
    } else if (blob_format_check_payload(&h, buf) == 0 && blob_format_check_commit(&h, c) == 0 &&
               memcmp(c->hash, e->hash, BLOB_HASH_SIZE) == 0) {
        missing = false;
        /* Bounded by chunk_count (checked against the payload). */
        for (uint32_t i = 0; i < c->chunk_count && !missing; i++) {
            struct blob_chunk_ref ref;
            blob_format_commit_ref(c, h.version, i, &ref);
            missing = ref.seg != r->seq && !blob_segment_is_alive(&r->s->segs, (uint32_t)ref.seg);
        }
    }
    free(buf);
    return missing;
}

/*
 * True when <e>'s chunks reach a segment that is gone from inside its span: one that recovery
 * set aside (a damaged header) or that is missing from the folder. Such a blob can never be
 * read whole, and indexed, it would answer every lookup present and every upload "already
 * present": it could never be stored again. The segments of the span were visited before
 * this one (seq order), so the table holds those that are there. When the span's oldest
 * segment is gone, the blob was evicted (eviction takes the oldest first) and lookups miss
 * it anyway (blob_store_lookup). A segment missing inside the span may also be another
 * core's that held nothing (deleted empty): only the commit's chunk table tells, so it is
 * read for the few blobs whose span has a gap.
 */
static bool span_has_hole(struct recover *r, const struct blob_footer_entry *e)
{
    if (e->span == 0 || e->span > r->seq) return false;
    uint64_t lo = r->seq - e->span;
    if (!blob_segment_is_alive(&r->s->segs, (uint32_t)lo)) return false;
    bool gap = false;
    /* Bounded by the span (at most UINT16_MAX). */
    for (uint64_t q = lo + 1; q < r->seq && !gap; q++) {
        gap = !blob_segment_is_alive(&r->s->segs, (uint32_t)q);
    }
    return gap && commit_misses_segment(r, e);
}

/*
 * Leaves out <e>, whose span has a hole. For an AC key it was the newest value: an older one
 * already indexed goes too, else a restart would bring back a result the client replaced.
 */
static void leave_out(struct recover *r, const struct blob_footer_entry *e)
{
    LOG_WARN("segment %llu offset %llu: a blob whose chunks are in a segment that is missing or "
             "was set aside; not indexed (it can be uploaded again)",
             (unsigned long long)r->seq, (unsigned long long)e->off8 * 8);
    atomic_fetch_add(&r->s->dropped_corrupt, 1);
    if (e->kind != BLOB_KIND_AC) return;
    batch_flush(r); /* an older value may wait in the batch */
    struct blob_key k = { .kind = e->kind, .digest_fn = e->digest_fn, .size = 0 };
    memcpy(k.hash, e->hash, BLOB_HASH_SIZE);
    struct blob_index_value v;
    if (blob_index_get(r->s->index, &k, &v)) {
        (void)blob_index_remove_at(r->s->index, &k, v.loc.seg, v.loc.off8);
    }
}

static void recover_entry(void *ctx, const struct blob_footer_entry *e)
{
    struct recover *r = ctx;
    if (e->kind != BLOB_KIND_CAS && e->kind != BLOB_KIND_AC) return;
    if (e->commit_seq > r->max_commit) r->max_commit = e->commit_seq;
    r->blobs++;
    if (!r->visit->sealed && collect_entry(r, e) < 0) {
        r->err = -ENOMEM;
        return;
    }
    if (e->kind == BLOB_KIND_AC && !ac_is_newest(r, e)) return;
    if (span_has_hole(r, e)) {
        leave_out(r, e);
        return;
    }
    struct blob_key *k = &r->batch_keys[r->batch_len];
    *k = (struct blob_key){ .kind = e->kind, .digest_fn = e->digest_fn, .size = e->size };
    memcpy(k->hash, e->hash, BLOB_HASH_SIZE);
    r->batch_vals[r->batch_len] = (struct blob_index_value){
        .loc = { .seg = (uint32_t)r->seq, .off8 = e->off8, .span = e->span },
        .size = e->size,
    };
    if (++r->batch_len == 32) batch_flush(r);
}

/* ---- sealing a scanned segment ---- */

static int seal_scanned(struct blob_store *s, const char *name, struct recover *r, uint64_t seq,
                        uint64_t end, uint64_t *size)
{
    int fd;
    int rc = s->io->ops->open(s->io, name, O_RDWR, &fd);
    if (rc < 0) return rc;
    uint64_t payload = r->entries_len * sizeof(struct blob_footer_entry);
    uint64_t footer_off = blob_align_block(end);
    uint64_t len = blob_align_block(blob_record_size(payload) + sizeof(struct blob_seg_trailer));
    uint8_t *buf = calloc(1, len);
    if (!buf) {
        (void)s->io->ops->close(s->io, fd);
        return -ENOMEM;
    }
    struct blob_record_header *h = (void *)buf;
    if (payload > 0) memcpy(buf + sizeof(*h), r->entries, payload);
    blob_format_record_header(h, BLOB_RECORD_FOOTER, 0, buf + sizeof(*h), (uint32_t)payload, 0);
    struct blob_seg_trailer t;
    blob_format_trailer(&t, seq, footer_off, end, r->entries_len, footer_off + len);
    memcpy(buf + len - sizeof(t), &t, sizeof(t));
    /* Cut the torn tail first, so the zeros between the last record and the footer are
     * zeros. The scanned records may be in the page cache only (a write whose fdatasync
     * failed, a process killed before its fsync), and the next start trusts a valid footer
     * without reading them: they are made durable before the footer is written (as the
     * writer's seal does), else a power cut could keep the footer and take the records, and
     * blobs never acknowledged would be listed present with nothing behind them. Then the
     * footer, made durable in turn. */
    rc = s->io->ops->ftruncate(s->io, fd, end);
    if (rc == 0) rc = s->io->ops->fdatasync(s->io, fd);
    if (rc == 0) rc = blob_io_pwrite_full(s->io, fd, buf, len, footer_off);
    if (rc == 0) rc = s->io->ops->ftruncate(s->io, fd, footer_off + len);
    if (rc == 0) rc = s->io->ops->fdatasync(s->io, fd);
    free(buf);
    (void)s->io->ops->close(s->io, fd);
    *size = footer_off + len;
    return rc;
}

/* ---- the folder ---- */

struct seq_list {
    uint64_t *seqs; /* segment numbers found */
    size_t len;     /* used */
    size_t size;    /* capacity */
    int err;        /* allocation failure */
};

static void list_name(void *ctx, const char *name)
{
    struct seq_list *l = ctx;
    uint64_t seq;
    if (blob_format_parse_seg_name(name, &seq) < 0 || seq == 0) return;
    if (l->len == l->size) {
        size_t size = l->size ? l->size * 2 : 256;
        uint64_t *n = realloc(l->seqs, size * sizeof(*n));
        if (!n) {
            l->err = -ENOMEM;
            return;
        }
        l->seqs = n;
        l->size = size;
    }
    l->seqs[l->len++] = seq;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A segment whose header is unreadable holds nothing acknowledged: set it aside. */
static void set_aside(struct blob_store *s, const char *name, uint64_t size)
{
    if (size <= BLOB_SEG_HEADER_SIZE) {
        (void)s->io->ops->unlink(s->io, name);
        return;
    }
    char bad[48];
    (void)snprintf(bad, sizeof(bad), "%s.bad", name);
    LOG_WARN("segment %s has no valid header: renamed to %s", name, bad);
    (void)s->io->ops->rename(s->io, name, bad);
}

static int recover_one(struct blob_store *s, struct recover *r, uint64_t seq)
{
    char name[32];
    blob_format_seg_name(seq, name, sizeof(name));
    int fd;
    int rc = s->io->ops->open(s->io, name, O_RDONLY, &fd);
    if (rc < 0) return rc;
    uint64_t size = 0;
    rc = s->io->ops->fsize(s->io, fd, &size);
    r->seq = seq;
    r->entries_len = 0;
    struct blob_visit v = { .io = s->io,
                            .fd = fd,
                            .seq = seq,
                            .size = size,
                            .fn = recover_entry,
                            .ctx = r,
                            .find_cut = true };
    r->visit = &v;
    if (rc == 0) rc = blob_recover_visit(&v);
    batch_flush(r); /* this segment's entries go in before the next segment's */
    r->visit = NULL;
    uint64_t end = v.end;
    bool sealed = v.sealed;
    if (rc == 0 && v.cut_next > 0) {
        /* The records after the cut stay cut (a damaged header has no length to skip by,
         * and what follows it cannot be told from a torn write's survivors); but they may
         * have been acknowledged, so it is said, not passed off as a torn tail. */
        LOG_WARN("segment %llu offset %llu: a damaged record, and a valid record follows at "
                 "offset %llu: the segment is cut there, %llu bytes with the records after it "
                 "are dropped (damage, or a write torn by a crash)",
                 (unsigned long long)seq, (unsigned long long)end, (unsigned long long)v.cut_next,
                 (unsigned long long)(size - end));
        atomic_fetch_add(&s->recovery_cuts, 1);
    }
    if (rc == -EBADMSG) {
        (void)s->io->ops->close(s->io, fd);
        set_aside(s, name, size);
        return 0;
    }
    if (rc == 0 && !sealed && end <= BLOB_SEG_HEADER_SIZE) {
        /* Not a single record: a core opened it and wrote nothing (or nothing survived). */
        (void)s->io->ops->close(s->io, fd);
        return s->io->ops->unlink(s->io, name);
    }
    if (rc == 0 && !sealed) rc = seal_scanned(s, name, r, seq, end, &size);
    if (rc < 0 || r->err < 0) {
        (void)s->io->ops->close(s->io, fd);
        return rc < 0 ? rc : r->err;
    }
    if (!blob_segment_add(&s->segs, seq, fd, size, BLOB_SEG_SEALED)) {
        (void)s->io->ops->close(s->io, fd);
        return -ENOMEM;
    }
    return 0;
}

/* Sums the entry counts of the valid trailers, to size the index once (0 when unknown). */
static uint64_t count_hint(struct blob_store *s, const uint64_t *seqs, size_t len)
{
    uint64_t total = 0;
    for (size_t i = 0; i < len; i++) {
        char name[32];
        blob_format_seg_name(seqs[i], name, sizeof(name));
        int fd;
        if (s->io->ops->open(s->io, name, O_RDONLY, &fd) < 0) continue;
        uint64_t size = 0;
        struct blob_seg_trailer t;
        if (s->io->ops->fsize(s->io, fd, &size) == 0 && size >= sizeof(t) &&
            blob_io_pread_full(s->io, fd, &t, sizeof(t), size - sizeof(t)) == 0 &&
            blob_format_check_trailer(&t, seqs[i], size) == 0) {
            total += t.count;
        }
        (void)s->io->ops->close(s->io, fd);
    }
    return total;
}

int blob_recover_run(struct blob_store *s, char *why, size_t why_size)
{
    struct seq_list l = { 0 };
    int rc = s->io->ops->list(s->io, list_name, &l);
    if (rc == 0) rc = l.err;
    if (rc < 0) {
        (void)snprintf(why, why_size, "cannot list %s: %s", s->dir, base_err_str(rc));
        free(l.seqs);
        return rc;
    }
    if (l.len > 1) qsort(l.seqs, l.len, sizeof(*l.seqs), cmp_u64);
    if (blob_index_reserve(s->index, count_hint(s, l.seqs, l.len)) < 0) {
        LOG_WARN("cannot size the index ahead; it grows as it loads");
    }
    struct recover r = { .s = s, .entries_size = 1024 };
    r.entries = malloc(r.entries_size * sizeof(*r.entries));
    rc = r.entries ? 0 : -ENOMEM;
    for (size_t i = 0; i < l.len && rc == 0; i++) {
        rc = recover_one(s, &r, l.seqs[i]);
        if (blob_io_not_regular(rc)) {
            /* Not ours to delete or rename: someone put it there, and it may matter. */
            char name[32];
            blob_format_seg_name(l.seqs[i], name, sizeof(name));
            (void)snprintf(why, why_size,
                           "recovering segment %llu in %s: %s is not a regular file (a folder, "
                           "FIFO or device): move it out of the data folder",
                           (unsigned long long)l.seqs[i], s->dir, name);
        } else if (rc == -EACCES || rc == -EPERM) {
            /* Most often a folder a server running as root wrote before (`make run` as
             * root, an image without USER) and the image's user now opens: name the file
             * and the fix, which the bare errno did not. */
            char name[32];
            blob_format_seg_name(l.seqs[i], name, sizeof(name));
            unsigned uid = (unsigned)geteuid();
            (void)snprintf(why, why_size,
                           "recovering segment %llu in %s: %s/%s: %s (start-up reopens the "
                           "segments a server left active to seal them: the user this one "
                           "runs as, uid %u, must own the segment files, e.g. chown -R %u %s)",
                           (unsigned long long)l.seqs[i], s->dir, s->dir, name, base_err_str(rc),
                           uid, uid, s->dir);
        } else if (rc < 0) {
            (void)snprintf(why, why_size, "recovering segment %llu in %s: %s",
                           (unsigned long long)l.seqs[i], s->dir, base_err_str(rc));
        }
        blob_segment_seen_seq(&s->segs, l.seqs[i]);
    }
    if (rc == 0) rc = s->io->ops->fsync_dir(s->io);
    atomic_store(&s->commit_seq, r.max_commit + 1);
    /* Commit records, one per stored copy (a refreshed blob, a replaced action result), not
     * fsck's "records", which also counts chunk records; the index holds each key once, as
     * the ringcas_store_blobs gauge does. */
    LOG_INFO("recovered %llu commit records from %zu segments in %s: %llu blobs and action "
             "results",
             (unsigned long long)r.blobs, l.len, s->dir,
             (unsigned long long)blob_index_count(s->index));
    free(r.entries);
    free(r.ac);
    free(l.seqs);
    return rc;
}
