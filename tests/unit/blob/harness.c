/*
 * The engine tests' harness (see harness.h).
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <zstd.h>

#include "blob/digest.h"
#include "blob/format.h"
#include "blob/internal.h"

void th_options_small(struct blob_store_options *o)
{
    blob_store_options_default(o);
    o->chunk_size = 4096;
    o->segment_size = 64 * 1024;
    o->max_size = 16ULL << 20;
    o->write_buffer_size = 64 * 1024;
    o->uploads_max = 64;
    o->readers_max = 64;
    o->disk_queue_max = 64;
    o->evict_thread = false;
    o->evict_settle_ms = 0; /* passes run back to back, on a disk that frees at once */
}

int th_open_store(struct th *t)
{
    char why[256] = "";
    t->o.io = t->io;
    t->o.dir = t->dir;
    int rc = blob_store_open(&t->o, &t->s, why, sizeof(why));
    if (rc < 0) return rc;
    rc = blob_core_init(t->s, t->ring, &t->bc);
    cr_assert(eq(int, rc, 0));
    return 0;
}

void th_open_sim(struct th *t, uint64_t seed)
{
    if (t->o.chunk_size == 0) th_options_small(&t->o);
    t->io = blob_io_sim_create(seed);
    cr_assert(ne(ptr, t->io, NULL));
    snprintf(t->dir, sizeof(t->dir), "sim");
    int rc = th_open_store(t);
    cr_assert(eq(int, rc, 0));
}

void th_open_real(struct th *t)
{
    if (t->o.chunk_size == 0) th_options_small(&t->o);
    struct ring_core_options ro;
    ring_core_options_default(&ro);
    ro.recv_buf_count = 16;
    ro.recv_buf_size = 4096;
    char why[256] = "";
    cr_assert(eq(int, ring_core_create(&ro, 0, &t->ring, why, sizeof(why)), 0), "%s", why);
    const char *tmp = getenv("TMPDIR"); /* NOLINT(concurrency-mt-unsafe) */
    snprintf(t->dir, sizeof(t->dir), "%s/blobtest.XXXXXX", tmp ? tmp : "/tmp");
    cr_assert(ne(ptr, mkdtemp(t->dir), NULL));
    t->io = NULL;
    int rc = th_open_store(t);
    cr_assert(eq(int, rc, 0));
}

void th_settle(struct th *t)
{
    for (int i = 0; i < 100000; i++) {
        if (t->io) {
            blob_io_sim_run(t->io, 1000000);
            if (blob_io_sim_is_idle(t->io)) return;
        } else {
            if (blob_core_is_idle(t->bc) &&
                base_counter_get(&ring_core_counters(t->ring)->ops_in_flight) == 0)
                return;
            cr_assert(ge(int, ring_core_tick(t->ring, 10), 0));
        }
    }
    cr_assert(0, "never settled");
}

bool th_run_until(struct th *t, const bool *flag)
{
    for (int i = 0; i < 1000000 && !*flag; i++) {
        if (t->io) {
            if (blob_io_sim_is_idle(t->io)) return *flag;
            blob_io_sim_run(t->io, 1);
        } else {
            cr_assert(ge(int, ring_core_tick(t->ring, 10), 0));
        }
    }
    return *flag;
}

void th_close_store(struct th *t)
{
    th_settle(t);
    blob_core_quiesce(t->bc);
    th_settle(t);
    blob_core_deinit(t->bc);
    t->bc = NULL;
    blob_store_close(t->s);
    t->s = NULL;
}

void th_reopen(struct th *t)
{
    th_close_store(t);
    int rc = th_open_store(t);
    cr_assert(eq(int, rc, 0));
}

struct blob_counters_snapshot th_counters(struct th *t)
{
    struct blob_counters_snapshot s;
    memset(&s, 0, sizeof(s));
    blob_counters_add_to(blob_core_counters(t->bc), &s);
    return s;
}

static void remove_dir(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    int rc = system(cmd); /* NOLINT(cert-env33-c): a test's own temporary folder */
    cr_assert(eq(int, rc, 0));
}

void th_close(struct th *t)
{
    th_settle(t);
    struct blob_counters_snapshot c = th_counters(t);
    cr_assert(eq(u64, c.uploads, 0));
    cr_assert(eq(u64, c.readers, 0));
    cr_assert(eq(u64, c.refreshes_open, 0));
    cr_assert(eq(u64, c.io_in_flight, 0));
    cr_assert(eq(u64, c.bufs, 0));
    /* No key waits, so nothing is pinned; no reader is open, so no evicted file is held. */
    cr_assert(eq(u32, blob_segment_pinned(&t->s->segs), 0));
    cr_assert(eq(u64, atomic_load(&t->s->segs.held_bytes), 0));
    th_close_store(t);
    if (t->io) {
        cr_assert(eq(u32, blob_io_sim_open_fds(t->io), 0));
        blob_io_sim_destroy(t->io);
        t->io = NULL;
    } else {
        cr_assert(eq(u64, base_counter_get(&ring_core_counters(t->ring)->ops_in_flight), 0));
        ring_core_destroy(t->ring);
        t->ring = NULL;
        remove_dir(t->dir);
    }
}

void th_fill(uint8_t *buf, size_t len, uint64_t seed, bool compressible)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
    static const char *words[] = { "static ", "int ", "return ", "struct ", "blob_",
                                   "core ",   "{\n",  "}\n",     "0x",      "uint64_t ",
                                   "void ",   "(",    ");\n" };
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

void th_key_of(struct blob_key *k, const void *data, size_t len)
{
    uint8_t hash[BLOB_HASH_SIZE];
    cr_assert(eq(int, blob_digest_oneshot(BLOB_DIGEST_SHA256, data, len, hash), 0));
    blob_key_cas(k, hash, len);
}

struct done {
    bool done;
    int res;
};

static void done_cb(void *ctx, int res)
{
    struct done *d = ctx;
    cr_assert(not(d->done), "callback ran twice");
    d->done = true;
    d->res = res;
}

static int put_pieces(struct th *t, struct blob_upload *u, const uint8_t *p, size_t len,
                      size_t piece)
{
    size_t off = 0;
    while (off < len) {
        size_t n = piece && piece < len - off ? piece : len - off;
        struct done d = { 0 };
        int rc = blob_upload_append(u, p + off, n, done_cb, &d);
        if (rc == -EINPROGRESS) {
            cr_assert(th_run_until(t, &d.done), "append never completed");
            rc = d.res;
        }
        if (rc < 0) return rc;
        off += n;
    }
    return 0;
}

int th_put(struct th *t, const struct blob_key *k, const void *data, size_t len, size_t piece,
           enum blob_encoding enc)
{
    struct blob_upload *u;
    int rc = blob_upload_begin(t->bc, k, enc, &u);
    if (rc < 0) return rc;
    const uint8_t *p = data;
    uint8_t *z = NULL;
    size_t zlen = len;
    if (enc == BLOB_ENCODING_ZSTD) {
        z = malloc(ZSTD_compressBound(len));
        zlen = ZSTD_compress(z, ZSTD_compressBound(len), data, len, 3);
        cr_assert(not(ZSTD_isError(zlen)));
        p = z;
    }
    rc = put_pieces(t, u, p, zlen, piece);
    free(z);
    if (rc < 0) {
        blob_upload_abort(u);
        return rc;
    }
    struct done d = { 0 };
    rc = blob_upload_commit(u, done_cb, &d);
    cr_assert(eq(int, rc, 0));
    cr_assert(not(d.done), "commit callback ran inside the call");
    cr_assert(th_run_until(t, &d.done), "commit never completed");
    return d.res;
}

static void collect_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct th_collect *c = ctx;
    c->done = true;
    c->res = res;
    c->end = res == 0 && len == 0;
    if (res == 0 && len > 0) {
        memcpy(c->out + c->len, data, len);
        c->len += len;
    }
}

int th_collect_try(struct th *t, struct blob_reader *r, struct th_collect *c)
{
    c->done = false;
    int rc = blob_read_next(r, collect_cb, c);
    if (rc < 0) return rc;
    cr_assert(th_run_until(t, &c->done), "the piece never came");
    return c->res;
}

int th_collect_next(struct th *t, struct blob_reader *r, struct th_collect *c)
{
    int rc = th_collect_try(t, r, c);
    cr_assert(c->done, "blob_read_next refused at once: %d", rc);
    return rc;
}

struct piece {
    bool done;
    int res;
    uint8_t *buf;
    size_t len;
    size_t cap;
};

static void piece_cb(void *ctx, int res, const uint8_t *data, size_t len)
{
    struct piece *p = ctx;
    p->done = true;
    p->res = res;
    if (res == 0 && len > 0) {
        if (p->len + len > p->cap) {
            p->cap = (p->len + len) * 2;
            p->buf = realloc(p->buf, p->cap);
        }
        memcpy(p->buf + p->len, data, len);
        p->len += len;
    }
    if (res == 0 && len == 0) p->res = 1; /* end */
}

/* Decodes a zstd stream that must hold exactly <want> bytes; frees <z>. */
static int th_unzstd(uint8_t *z, size_t zlen, uint64_t want, uint8_t **out, size_t *len)
{
    uint8_t *buf = malloc(want + 1);
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_outBuffer o = { buf, want + 1, 0 };
    ZSTD_inBuffer in = { z, zlen, 0 };
    size_t rc = 0;
    while (in.pos < in.size) {
        rc = ZSTD_decompressStream(d, &o, &in);
        cr_assert(not(ZSTD_isError(rc)), "zstd: %s", ZSTD_getErrorName(rc));
    }
    cr_assert(eq(sz, rc, 0), "the stream ends inside a frame");
    ZSTD_freeDCtx(d);
    free(z);
    cr_assert(eq(u64, o.pos, want));
    *out = buf;
    *len = o.pos;
    return 0;
}

int th_get(struct th *t, const struct blob_key *k, uint64_t off, enum blob_encoding enc,
           uint8_t **out, size_t *len)
{
    struct blob_reader *r;
    int rc = blob_read_open(t->bc, k, off, enc, &r);
    if (rc < 0) return rc;
    struct piece p = { 0 };
    for (int guard = 0; guard < 1000000; guard++) {
        p.done = false;
        rc = blob_read_next(r, piece_cb, &p);
        if (rc < 0) break;
        cr_assert(not(p.done), "read callback ran inside blob_read_next");
        cr_assert(th_run_until(t, &p.done), "read never completed");
        if (p.res != 0) {
            rc = p.res == 1 ? 0 : p.res;
            break;
        }
    }
    uint64_t size = blob_reader_size(r);
    blob_read_close(r);
    if (rc < 0) {
        free(p.buf);
        return rc;
    }
    if (enc == BLOB_ENCODING_ZSTD) return th_unzstd(p.buf, p.len, size - off, out, len);
    *out = p.buf;
    *len = p.len;
    return 0;
}

/* The disk of <t> (a closed store's): the simulated one, or the real folder's, opened here. */
static struct blob_io *disk_of(struct th *t)
{
    if (t->io) return t->io;
    struct blob_io *io;
    cr_assert(eq(int, blob_io_real_create(t->dir, &io), 0), "%s", t->dir);
    return io;
}

static void disk_done(struct th *t, struct blob_io *io)
{
    if (io != t->io) blob_io_real_destroy(io);
}

uint32_t th_chunk_records(struct th *t, uint64_t seq, struct th_record *out, uint32_t max)
{
    struct blob_io *io = disk_of(t);
    char name[32];
    blob_format_seg_name(seq, name, sizeof(name));
    int fd;
    cr_assert(eq(int, io->ops->open(io, name, O_RDONLY, &fd), 0), "%s", name);
    uint64_t size;
    cr_assert(eq(int, io->ops->fsize(io, fd, &size), 0));
    uint32_t n = 0;
    uint64_t off = BLOB_SEG_HEADER_SIZE;
    /* Bounded by the file: every record advances at least its header. */
    while (n < max && off + sizeof(struct blob_record_header) <= size) {
        struct blob_record_header h;
        cr_assert(eq(int, blob_io_pread_full(io, fd, &h, sizeof(h), off), 0));
        if (blob_format_check_record_header(&h, size - off - sizeof(h)) < 0) break;
        if (h.type == BLOB_RECORD_CHUNK) {
            out[n++] = (struct th_record){ off, blob_record_size(h.payload_len) };
        }
        off += blob_record_size(h.payload_len);
    }
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    disk_done(t, io);
    return n;
}

void th_swap_records(struct th *t, uint64_t seq, const struct th_record *a,
                     const struct th_record *b)
{
    cr_assert(eq(u64, a->len, b->len), "records of equal length");
    struct blob_io *io = disk_of(t);
    char name[32];
    blob_format_seg_name(seq, name, sizeof(name));
    int fd;
    cr_assert(eq(int, io->ops->open(io, name, O_RDWR, &fd), 0), "%s", name);
    uint8_t *x = malloc(a->len);
    uint8_t *y = malloc(b->len);
    cr_assert(x && y);
    cr_assert(eq(int, blob_io_pread_full(io, fd, x, a->len, a->off), 0));
    cr_assert(eq(int, blob_io_pread_full(io, fd, y, b->len, b->off), 0));
    cr_assert(memcmp(x, y, a->len) != 0, "two different records");
    cr_assert(eq(int, blob_io_pwrite_full(io, fd, y, b->len, a->off), 0));
    cr_assert(eq(int, blob_io_pwrite_full(io, fd, x, a->len, b->off), 0));
    cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    disk_done(t, io);
    free(x);
    free(y);
}
