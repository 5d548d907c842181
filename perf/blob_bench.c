/*
 * blob_bench: benchmarks of the storage engine (src/blob), run by perf/blob_bench.sh, which
 * writes perf/RESULTS.md's storage table. Not a test: it prints key=value lines.
 *
 *   blob_bench ingest  DIR CORES BLOBS_PER_CORE BLOB_MIB CORPUS(build|random) DIRECT CHUNK_KIB
 * LEVEL [STREAMS] Each core (a thread with its own io_uring and engine) uploads BLOBS_PER_CORE
 * blobs of BLOB_MIB MiB, --sync=group; then, in the same run and on the same bytes, the raw cost of
 * SHA-256 (EVP) + zstd of every chunk. Prints MB/s of both and their ratio. blob_bench commits DIR
 * SECONDS CONCURRENCY SYNC One core keeps CONCURRENCY uploads of 1-4 KiB random blobs in flight for
 * SECONDS. blob_bench restart DIR BLOBS Writes BLOBS small blobs as sealed segments (directly,
 * through the format code), then times blob_store_open (footers only) and measures the index's
 * memory per blob with mallinfo2 before and after.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zstd.h>

#include "base/clock.h"
#include "blob/chunk.h"
#include "blob/digest.h"
#include "blob/format.h"
#include "blob/store.h"
#include "ring/core.h"

static double now_s(void)
{
    return (double)base_clock_now_ns() / 1e9;
}

/* CPU time of the calling thread: steadier than wall time on a shared machine. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "blob_bench: %s: %d\n", what, rc);
    exit(1);
}

/* ---- corpus ---- */

static uint8_t *corpus;
static size_t corpus_len;
static size_t corpus_want;

static int add_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag != FTW_F || corpus_len >= corpus_want || !S_ISREG(st->st_mode)) return 0;
    size_t n = strlen(path);
    bool wanted = (n > 2 && strcmp(path + n - 2, ".a") == 0) || strstr(path, ".so") ||
                  (n > 2 && strcmp(path + n - 2, ".h") == 0);
    if (!wanted || st->st_size <= 0) return 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    size_t take = (size_t)st->st_size;
    if (take > corpus_want - corpus_len) take = corpus_want - corpus_len;
    ssize_t got = pread(fd, corpus + corpus_len, take, 0);
    close(fd);
    if (got > 0) corpus_len += (size_t)got;
    return 0;
}

static void load_corpus(const char *kind, size_t want)
{
    corpus = malloc(want);
    corpus_want = want;
    if (strcmp(kind, "random") == 0) {
        uint64_t x = 0x12345678;
        for (size_t i = 0; i < want; i += 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(corpus + i, &x, want - i < 8 ? want - i : 8);
        }
        corpus_len = want;
        return;
    }
    /* Build outputs: static and shared libraries, then headers, as a build cache sees. */
    nftw("/usr/lib/x86_64-linux-gnu", add_file, 32, FTW_PHYS);
    nftw("/usr/include", add_file, 32, FTW_PHYS);
    nftw("/usr/lib", add_file, 32, FTW_PHYS);
    if (corpus_len < want) {
        /* Not enough on this machine: repeat what there is. */
        size_t have = corpus_len;
        while (corpus_len < want) {
            size_t n = want - corpus_len < have ? want - corpus_len : have;
            memcpy(corpus + corpus_len, corpus, n);
            corpus_len += n;
        }
    }
}

/* ---- a core ---- */

struct core_job {
    struct blob_store *s;
    uint32_t streams; /* uploads in flight at once */
    uint32_t index;
    uint32_t blobs;
    size_t blob_len;
    uint32_t chunk;
    int level;
    uint8_t **data; /* the blobs' bytes, prepared before timing */
    struct blob_key *keys;
    double ingest_s;     /* wall time of the uploads */
    double ingest_cpu_s; /* the core thread's CPU time during the uploads */
    double raw_cpu_s;    /* its CPU time during the raw SHA-256 + zstd */
    double raw_s;        /* wall time of SHA-256 + zstd on the same bytes */
    double sha_s;        /* wall time of SHA-256 alone on the same bytes */
    uint64_t stored;     /* bytes written */
};

struct wait {
    bool done;
    int res;
};

static void wait_cb(void *ctx, int res)
{
    struct wait *w = ctx;
    w->done = true;
    w->res = res;
}

static void tick(struct ring_core *core, uint32_t ms)
{
    int rc = ring_core_tick(core, ms);
    if (rc < 0) die("ring_core_tick", rc);
}

static void spin(struct ring_core *core, struct wait *w)
{
    while (!w->done) {
        int rc = ring_core_tick(core, 100);
        if (rc < 0) die("ring_core_tick", rc);
    }
}

static void upload(struct ring_core *core, struct blob_core *bc, const struct blob_key *k,
                   const uint8_t *data, size_t len)
{
    struct blob_upload *u;
    int rc = blob_upload_begin(bc, k, BLOB_ENCODING_IDENTITY, &u);
    if (rc < 0) die("blob_upload_begin", rc);
    /* Pieces of 256 KiB, as receives from a fast socket arrive after reassembly. */
    for (size_t off = 0; off < len; off += 256 * 1024) {
        size_t n = len - off < 256 * 1024 ? len - off : 256 * 1024;
        struct wait w = { 0 };
        rc = blob_upload_append(u, data + off, n, wait_cb, &w);
        if (rc == -EINPROGRESS) {
            spin(core, &w);
            rc = w.res;
        }
        if (rc < 0) die("blob_upload_append", rc);
    }
    struct wait w = { 0 };
    rc = blob_upload_commit(u, wait_cb, &w);
    if (rc < 0) die("blob_upload_commit", rc);
    spin(core, &w);
    if (w.res < 0) die("commit", w.res);
}

/* The raw cost of blob <b>: SHA-256 of it and zstd of each chunk, nothing else. */
struct stream {
    struct blob_upload *u;
    size_t off;
    struct wait w; /* append or commit */
    bool committing;
};

/* <n> uploads at once, 256 KiB pieces in turn: a commit's fsync overlaps the others' work. */
static void upload_many(struct ring_core *core, struct blob_core *bc, struct core_job *j,
                        uint32_t first, uint32_t n)
{
    struct stream st[16];
    for (uint32_t i = 0; i < n; i++) {
        st[i] = (struct stream){ 0 };
        st[i].w.done = true;
        int rc = blob_upload_begin(bc, &j->keys[first + i], BLOB_ENCODING_IDENTITY, &st[i].u);
        if (rc < 0) die("blob_upload_begin", rc);
    }
    uint32_t left = n;
    while (left > 0) {
        bool progressed = false;
        for (uint32_t i = 0; i < n; i++) {
            struct stream *x = &st[i];
            if (!x->w.done || !x->u) continue;
            if (x->w.res < 0) die("upload", x->w.res);
            if (x->committing) {
                x->u = NULL;
                left--;
                continue;
            }
            progressed = true;
            if (x->off == j->blob_len) {
                x->w = (struct wait){ 0 };
                x->committing = true;
                if (blob_upload_commit(x->u, wait_cb, &x->w) < 0) die("commit", -1);
                continue;
            }
            size_t m = j->blob_len - x->off < 256 * 1024 ? j->blob_len - x->off : 256 * 1024;
            x->w = (struct wait){ 0 };
            int rc = blob_upload_append(x->u, j->data[first + i] + x->off, m, wait_cb, &x->w);
            x->off += m;
            if (rc != -EINPROGRESS) {
                if (rc < 0) die("append", rc);
                x->w.done = true;
            }
        }
        if (!progressed && left > 0) tick(core, 100);
    }
}

/* SHA-256 of the same blobs alone: issue 6's raw cost for random data. */
static double sha_cost(const struct core_job *j, uint32_t first, uint32_t count)
{
    uint8_t hash[32];
    double t0 = now_s();
    for (uint32_t b = first; b < first + count; b++) {
        if (blob_digest_oneshot(BLOB_DIGEST_SHA256, j->data[b], j->blob_len, hash) < 0) {
            die("digest", -1);
        }
    }
    return now_s() - t0;
}

static double raw_cost(const struct core_job *j, uint32_t first, uint32_t count)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, j->level);
    size_t cap = ZSTD_compressBound(j->chunk);
    uint8_t *out = malloc(cap);
    uint8_t hash[32];
    double t0 = now_s();
    for (uint32_t b = first; b < first + count; b++) {
        struct blob_digest d;
        if (blob_digest_init(&d, BLOB_DIGEST_SHA256) < 0) die("digest", -1);
        for (size_t off = 0; off < j->blob_len; off += j->chunk) {
            size_t n = j->blob_len - off < j->chunk ? j->blob_len - off : j->chunk;
            blob_digest_update(&d, j->data[b] + off, n);
            size_t z = ZSTD_compress2(c, out, cap, j->data[b] + off, n);
            if (ZSTD_isError(z)) die("zstd", -1);
        }
        blob_digest_final(&d, hash);
        blob_digest_deinit(&d);
    }
    double t = now_s() - t0;
    free(out);
    ZSTD_freeCCtx(c);
    return t;
}

static void *ingest_core(void *arg)
{
    struct core_job *j = arg;
    struct ring_core_options ro;
    ring_core_options_default(&ro);
    ro.recv_buf_count = 16;
    ro.recv_buf_size = 4096;
    struct ring_core *core;
    char why[256];
    int rc = ring_core_create(&ro, j->index, &core, why, sizeof(why));
    if (rc < 0) die(why, rc);
    struct blob_core *bc;
    rc = blob_core_init(j->s, core, &bc);
    if (rc < 0) die("blob_core_init", rc);
    for (int i = 0; i < 10; i++)
        tick(core, 10); /* the first segment opens */
    /* Interleaved, group by group, so both see the same machine (these are shared and
     * noisy). A group is <streams> uploads in flight at once on this core. */
    for (uint32_t b = 0; b < j->blobs; b += j->streams) {
        uint32_t n = j->blobs - b < j->streams ? j->blobs - b : j->streams;
        double t0 = now_s();
        double c0 = cpu_s();
        if (n == 1)
            upload(core, bc, &j->keys[b], j->data[b], j->blob_len);
        else
            upload_many(core, bc, j, b, n);
        j->ingest_s += now_s() - t0;
        double c1 = cpu_s();
        j->ingest_cpu_s += c1 - c0;
        j->raw_s += raw_cost(j, b, n);
        j->raw_cpu_s += cpu_s() - c1;
        j->sha_s += sha_cost(j, b, n);
    }
    struct blob_counters_snapshot c = { 0 };
    blob_counters_add_to(blob_core_counters(bc), &c);
    j->stored = c.bytes_stored;
    blob_core_quiesce(bc);
    while (!blob_core_is_idle(bc))
        tick(core, 10);
    blob_core_deinit(bc);
    ring_core_destroy(core);
    return NULL;
}

static struct blob_store *open_store(const char *dir, uint32_t cores, uint64_t max, bool direct,
                                     uint32_t chunk, int level, enum blob_sync sync)
{
    struct blob_store_options o;
    blob_store_options_default(&o);
    o.dir = dir;
    o.cores_max = cores;
    o.max_size = max;
    o.direct_io = direct;
    o.chunk_size = chunk;
    o.zstd_level = level;
    o.sync = sync;
    o.segment_size = 256ULL << 20;
    o.write_buffer_size = 4U << 20;
    const char *wb = getenv("BLOB_BENCH_WRITE_BUFFER_MIB");
    if (wb) o.write_buffer_size = (uint32_t)atoi(wb) << 20;
    if (o.write_buffer_size < 2 * blob_chunk_record_bound(chunk) + 4 * 4096)
        o.write_buffer_size = (uint32_t)(2 * blob_chunk_record_bound(chunk) + (1U << 20)) & ~4095U;
    struct blob_store *s;
    char why[256];
    int rc = blob_store_open(&o, &s, why, sizeof(why));
    if (rc < 0) die(why, rc);
    return s;
}

static int cmd_ingest(char **argv)
{
    const char *dir = argv[0];
    uint32_t cores = (uint32_t)atoi(argv[1]);
    uint32_t blobs = (uint32_t)atoi(argv[2]);
    size_t len = (size_t)atoi(argv[3]) << 20;
    const char *kind = argv[4];
    bool direct = atoi(argv[5]) != 0;
    uint32_t chunk = (uint32_t)atoi(argv[6]) << 10;
    int level = atoi(argv[7]);
    uint32_t streams = argv[8] ? (uint32_t)atoi(argv[8]) : 1;
    if (streams < 1 || streams > 16) die("streams 1..16", -EINVAL);
    load_corpus(kind, len + 64 * 1024 * 1024);
    struct blob_store *s =
        open_store(dir, cores, 64ULL << 30, direct, chunk, level, BLOB_SYNC_GROUP);
    struct core_job *jobs = calloc(cores, sizeof(*jobs));
    for (uint32_t c = 0; c < cores; c++) {
        struct core_job *j = &jobs[c];
        *j = (struct core_job){ .s = s,
                                .index = c,
                                .blobs = blobs,
                                .blob_len = len,
                                .chunk = chunk,
                                .level = level,
                                .streams = streams };
        j->data = calloc(blobs, sizeof(*j->data));
        j->keys = calloc(blobs, sizeof(*j->keys));
        for (uint32_t b = 0; b < blobs; b++) {
            /* Each blob a different window of the corpus: same kind of bytes, new digest. */
            size_t start = ((size_t)(c * blobs + b) * 1048573U) % (corpus_len - len);
            j->data[b] = malloc(len);
            memcpy(j->data[b], corpus + start, len);
            uint8_t h[32];
            if (blob_digest_oneshot(BLOB_DIGEST_SHA256, j->data[b], len, h) < 0) die("digest", -1);
            blob_key_cas(&j->keys[b], h, len);
        }
    }
    pthread_t *th = calloc(cores, sizeof(*th));
    for (uint32_t c = 0; c < cores; c++)
        pthread_create(&th[c], NULL, ingest_core, &jobs[c]);
    for (uint32_t c = 0; c < cores; c++)
        pthread_join(th[c], NULL);
    double mb = (double)blobs * (double)len / 1e6;
    for (uint32_t c = 0; c < cores; c++) {
        struct core_job *j = &jobs[c];
        printf("ingest core=%u streams=%u corpus=%s direct=%d chunk_kib=%u level=%d blobs=%u "
               "blob_mib=%zu "
               "ingest_mbps=%.0f raw_mbps=%.0f ratio=%.2f stored_ratio=%.3f sha_mbps=%.0f "
               "sha_ratio=%.2f cpu_ratio=%.2f\n",
               c, streams, kind, direct, chunk >> 10, level, blobs, len >> 20, mb / j->ingest_s,
               mb / j->raw_s, j->raw_s / j->ingest_s, (double)j->stored / (mb * 1e6), mb / j->sha_s,
               j->sha_s / j->ingest_s, j->raw_cpu_s / j->ingest_cpu_s);
        for (uint32_t b = 0; b < blobs; b++)
            free(j->data[b]);
        free(j->data);
        free(j->keys);
    }
    blob_store_close(s);
    free(jobs);
    free(th);
    free(corpus);
    return 0;
}

/* ---- commits ---- */

struct slot {
    struct blob_upload *u;
    uint8_t data[4096];
    size_t len;
    bool busy;
    uint64_t *acked;
};

static void slot_done(void *ctx, int res)
{
    struct slot *s = ctx;
    if (res < 0) die("commit", res);
    (*s->acked)++;
    s->busy = false;
}

static void slot_commit(struct slot *s)
{
    int rc = blob_upload_commit(s->u, slot_done, s);
    if (rc < 0) die("commit", rc);
}

/* The append waited for room (a segment being sealed and the next one opened). */
static void slot_appended(void *ctx, int res)
{
    struct slot *s = ctx;
    if (res < 0) die("append", res);
    slot_commit(s);
}

static uint64_t rng_state = 88172645463325252ULL;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void slot_start(struct blob_core *bc, struct slot *s)
{
    s->len = 1024 + rng() % 3073;
    for (size_t i = 0; i < s->len; i += 8) {
        uint64_t v = rng();
        memcpy(s->data + i, &v, s->len - i < 8 ? s->len - i : 8);
    }
    uint8_t h[32];
    if (blob_digest_oneshot(BLOB_DIGEST_SHA256, s->data, s->len, h) < 0) die("digest", -1);
    struct blob_key k;
    blob_key_cas(&k, h, s->len);
    int rc = blob_upload_begin(bc, &k, BLOB_ENCODING_IDENTITY, &s->u);
    if (rc < 0) die("begin", rc);
    s->busy = true;
    rc = blob_upload_append(s->u, s->data, s->len, slot_appended, s);
    if (rc == -EINPROGRESS) return;
    if (rc < 0) die("append", rc);
    slot_commit(s);
}

static int cmd_commits(char **argv)
{
    const char *dir = argv[0];
    double seconds = atof(argv[1]);
    uint32_t conc = (uint32_t)atoi(argv[2]);
    enum blob_sync sync;
    if (blob_sync_parse(argv[3], &sync) < 0) die("sync", -EINVAL);
    struct blob_store *s = open_store(dir, 1, 64ULL << 30, true, 256 * 1024, 1, sync);
    struct ring_core_options ro;
    ring_core_options_default(&ro);
    ro.recv_buf_count = 16;
    ro.recv_buf_size = 4096;
    struct ring_core *core;
    char why[256];
    int rc = ring_core_create(&ro, 0, &core, why, sizeof(why));
    if (rc < 0) die(why, rc);
    struct blob_core *bc;
    if (blob_core_init(s, core, &bc) < 0) die("core", -1);
    for (int i = 0; i < 10; i++)
        tick(core, 10);
    uint64_t acked = 0;
    struct slot *slots = calloc(conc, sizeof(*slots));
    double t0 = now_s();
    double end = t0 + seconds;
    while (now_s() < end) {
        for (uint32_t i = 0; i < conc; i++) {
            slots[i].acked = &acked;
            if (!slots[i].busy) slot_start(bc, &slots[i]);
        }
        tick(core, 1);
    }
    double t = now_s() - t0;
    for (int guard = 0; guard < 100000; guard++) {
        bool busy = false;
        for (uint32_t i = 0; i < conc; i++)
            busy = busy || slots[i].busy;
        if (!busy) break;
        tick(core, 1);
    }
    struct blob_counters_snapshot c = { 0 };
    blob_counters_add_to(blob_core_counters(bc), &c);
    printf("commits sync=%s concurrency=%u seconds=%.1f commits_per_s=%.0f fsyncs_per_s=%.0f "
           "commits_per_fsync=%.1f\n",
           argv[3], conc, t, (double)acked / t, (double)c.fsyncs / t,
           c.fsyncs ? (double)c.blobs_committed / (double)c.fsyncs : 0.0);
    blob_core_quiesce(bc);
    while (!blob_core_is_idle(bc))
        tick(core, 10);
    blob_core_deinit(bc);
    ring_core_destroy(core);
    blob_store_close(s);
    free(slots);
    return 0;
}

/* ---- restart ---- */

struct seg_writer {
    int fd;
    uint64_t seq;
    uint8_t *buf;      /* records, flushed in big writes */
    size_t len;        /* bytes in buf */
    uint64_t file_off; /* file offset of buf[0] */
    struct blob_footer_entry *foot;
    uint64_t foot_len;
    uint64_t foot_size;
};

#define GEN_BUF (64U << 20)

static void gen_flush(struct seg_writer *w)
{
    if (pwrite(w->fd, w->buf, w->len, (off_t)w->file_off) != (ssize_t)w->len) die("pwrite", -errno);
    w->file_off += w->len;
    w->len = 0;
}

static void gen_open(struct seg_writer *w, const char *dir, uint64_t seq)
{
    char name[300];
    char base[32];
    blob_format_seg_name(seq, base, sizeof(base));
    snprintf(name, sizeof(name), "%s/%s", dir, base);
    w->fd = open(name, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (w->fd < 0) die("open", -errno);
    w->seq = seq;
    memset(w->buf, 0, BLOB_SEG_HEADER_SIZE);
    struct blob_seg_header h;
    blob_format_seg_header(&h, seq, 0);
    memcpy(w->buf, &h, sizeof(h));
    w->len = BLOB_SEG_HEADER_SIZE;
    w->file_off = 0;
    w->foot_len = 0;
}

static void gen_seal(struct seg_writer *w)
{
    uint64_t end = w->file_off + w->len;
    uint64_t footer_off = blob_align_block(end);
    memset(w->buf + w->len, 0, footer_off - end);
    w->len += footer_off - end;
    gen_flush(w);
    uint64_t payload = w->foot_len * sizeof(struct blob_footer_entry);
    uint64_t len = blob_align_block(blob_record_size(payload) + sizeof(struct blob_seg_trailer));
    uint8_t *f = calloc(1, len);
    struct blob_record_header *h = (void *)f;
    memcpy(f + sizeof(*h), w->foot, payload);
    blob_format_record_header(h, BLOB_RECORD_FOOTER, 0, f + sizeof(*h), (uint32_t)payload, 0);
    struct blob_seg_trailer t;
    blob_format_trailer(&t, w->seq, footer_off, end, w->foot_len, footer_off + len);
    memcpy(f + len - sizeof(t), &t, sizeof(t));
    if (pwrite(w->fd, f, len, (off_t)footer_off) != (ssize_t)len) die("pwrite footer", -errno);
    free(f);
    close(w->fd);
}

/* Appends one small blob (chunk record + commit record) and its footer entry. */
static void gen_blob(struct seg_writer *w, struct blob_chunk_ctx *z, uint64_t n)
{
    uint8_t data[16];
    memcpy(data, &n, 8);
    memcpy(data + 8, "ringcas!", 8);
    uint8_t h[32];
    if (blob_digest_oneshot(BLOB_DIGEST_SHA256, data, sizeof(data), h) < 0) die("digest", -1);
    if (w->len + 4096 > GEN_BUF) gen_flush(w);
    uint64_t chunk_off = w->file_off + w->len;
    uint32_t used = blob_chunk_encode(z, data, sizeof(data), w->buf + w->len);
    struct blob_record_header chunk_h;
    memcpy(&chunk_h, w->buf + w->len, sizeof(chunk_h));
    w->len += blob_align8(used);
    uint64_t commit_off = w->file_off + w->len;
    uint8_t *p = w->buf + w->len;
    struct blob_commit *c = (void *)(p + sizeof(struct blob_record_header));
    memset(c, 0, sizeof(*c));
    c->kind = BLOB_KIND_CAS;
    c->digest_fn = BLOB_DIGEST_SHA256;
    c->chunk_shift = 18;
    c->chunk_count = 1;
    c->size = sizeof(data);
    c->commit_seq = n + 1;
    memcpy(c->hash, h, 32);
    struct blob_chunk_ref ref = { .seg = w->seq,
                                  .off8 = (uint32_t)(chunk_off / 8),
                                  .stored = used - 32,
                                  .sum = chunk_h.payload_sum };
    memcpy(c + 1, &ref, sizeof(ref));
    uint32_t payload = (uint32_t)blob_commit_payload_len(1);
    blob_format_record_header((void *)p, BLOB_RECORD_COMMIT, 0, c, payload, 0);
    w->len += blob_record_size(payload);
    if (w->foot_len == w->foot_size) {
        w->foot_size = w->foot_size ? w->foot_size * 2 : 1 << 16;
        w->foot = realloc(w->foot, w->foot_size * sizeof(*w->foot));
    }
    struct blob_footer_entry *e = &w->foot[w->foot_len++];
    memset(e, 0, sizeof(*e));
    e->kind = BLOB_KIND_CAS;
    e->digest_fn = BLOB_DIGEST_SHA256;
    e->off8 = (uint32_t)(commit_off / 8);
    e->size = sizeof(data);
    e->commit_seq = n + 1;
    memcpy(e->hash, h, 32);
}

static int cmd_restart(char **argv)
{
    const char *dir = argv[0];
    uint64_t blobs = strtoull(argv[1], NULL, 10);
    bool generate = argv[2] == NULL || strcmp(argv[2], "reuse") != 0;
    if (generate) {
        struct seg_writer w = { 0 };
        w.buf = aligned_alloc(4096, GEN_BUF);
        struct base_counter zmem = { 0 };
        struct blob_chunk_ctx z;
        if (blob_chunk_ctx_init(&z, 1, &zmem) < 0) die("zstd", -1);
        uint64_t seq = 1;
        uint64_t per_seg = (256ULL << 20) / 160;
        double t0 = now_s();
        for (uint64_t n = 0; n < blobs; n++) {
            if (n % per_seg == 0) {
                if (n > 0) gen_seal(&w);
                gen_open(&w, dir, seq++);
            }
            gen_blob(&w, &z, n);
        }
        gen_seal(&w);
        sync();
        printf("restart generated=%llu segments=%llu gen_s=%.1f\n", (unsigned long long)blobs,
               (unsigned long long)(seq - 1), now_s() - t0);
        blob_chunk_ctx_deinit(&z);
        free(w.buf);
        free(w.foot);
    }
    struct mallinfo2 m0 = mallinfo2();
    double t0 = now_s();
    struct blob_store *s = open_store(dir, 1, 1ULL << 40, true, 256 * 1024, 1, BLOB_SYNC_GROUP);
    double t = now_s() - t0;
    struct mallinfo2 m1 = mallinfo2();
    struct blob_store_stats st;
    blob_store_stats(s, &st);
    double used = (double)(m1.uordblks + m1.hblkhd) - (double)(m0.uordblks + m0.hblkhd);
    printf("restart blobs=%llu open_s=%.2f index_bytes_per_blob=%.1f "
           "malloc_bytes_per_blob=%.1f\n",
           (unsigned long long)st.blobs, t, (double)st.index_bytes / (double)st.blobs,
           used / (double)st.blobs);
    blob_store_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 10 && strcmp(argv[1], "ingest") == 0) return cmd_ingest(argv + 2);
    if (argc >= 6 && strcmp(argv[1], "commits") == 0) return cmd_commits(argv + 2);
    if (argc >= 4 && strcmp(argv[1], "restart") == 0) return cmd_restart(argv + 2);
    fprintf(stderr, "usage: see the comment at the top of perf/blob_bench.c\n");
    return 2;
}
