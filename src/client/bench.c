/*
 * ringcas bench: options, the plan every thread reads, the threads' phases and the result.
 *
 * The plan is built here, in the main thread, before any worker starts: the data pool (the
 * bytes every blob is cut from), the seeded blob set with its digests, the requests that are
 * encoded once (batch reads, FindMissingBlobs, action-cache lookups), the build mix's seeded
 * actions. Then the workers seed their shares, meet at a barrier, wait for the start time
 * the main thread sets, run, and are joined; their statistics are merged and reported.
 *
 * Sections: names and defaults, the data pool, the plan, running, the entry point.
 */
#include "client/bench.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/err.h"
#include "client/bench_internal.h"
#include "client/resource.h"
#include "proto/wire.h"

/* ---- names and defaults ---- */

const char *const bench_workload_names[BENCH_W_COUNT] = {
    [BENCH_W_BS_READ] = "bs-read",
    [BENCH_W_BS_WRITE] = "bs-write",
    [BENCH_W_BATCH_READ] = "batch-read",
    [BENCH_W_BATCH_UPDATE] = "batch-update",
    [BENCH_W_FIND_MISSING] = "find-missing",
    [BENCH_W_AC_GET] = "ac-get",
    [BENCH_W_HTTP_GET] = "http-get",
    [BENCH_W_HTTP_PUT] = "http-put",
    [BENCH_W_MIX] = "mix",
};

const char *const bench_op_names[BENCH_OP_COUNT] = {
    [BENCH_OP_BS_READ] = "ByteStream.Read",
    [BENCH_OP_BS_WRITE] = "ByteStream.Write",
    [BENCH_OP_BATCH_READ] = "BatchReadBlobs",
    [BENCH_OP_BATCH_UPDATE] = "BatchUpdateBlobs",
    [BENCH_OP_FIND_MISSING] = "FindMissingBlobs",
    [BENCH_OP_AC_GET] = "GetActionResult",
    [BENCH_OP_AC_UPDATE] = "UpdateActionResult",
    [BENCH_OP_HTTP_GET] = "HTTP GET",
    [BENCH_OP_HTTP_PUT] = "HTTP PUT",
};

static const char *const workload_help[BENCH_W_COUNT] = {
    [BENCH_W_BS_READ] = "ByteStream.Read of --blobs seeded blobs of --size bytes, at random\n"
                        "                (--compress: compressed-blobs/zstd, decompressed here)",
    [BENCH_W_BS_WRITE] = "ByteStream.Write of a new blob of --size bytes per request (each one\n"
                         "                unique: a slice of the data pool stamped with a counter)",
    [BENCH_W_BATCH_READ] = "BatchReadBlobs of --batch seeded blobs of --size bytes",
    [BENCH_W_BATCH_UPDATE] = "BatchUpdateBlobs of --batch new blobs of --size bytes",
    [BENCH_W_FIND_MISSING] = "FindMissingBlobs of --batch digests, half of them present",
    [BENCH_W_AC_GET] = "GetActionResult of seeded action results (hits: the server checks\n"
                       "                that every output is present)",
    [BENCH_W_HTTP_GET] = "HTTP/1.1 GET /cas/<sha256> of seeded blobs (--path: GET that path of\n"
                         "                any server instead, nothing seeded); one connection per\n"
                         "                slot, keep-alive",
    [BENCH_W_HTTP_PUT] = "HTTP/1.1 PUT /cas/<sha256> of new blobs (--path P: PUT P/<thread>/\n"
                         "                <slot>-<n> instead, e.g. an nginx WebDAV folder)",
    [BENCH_W_MIX] = "a build's cache traffic, one action per arrival: GetActionResult;\n"
                    "                on a hit (--mix-hit %) BatchReadBlobs of the small outputs\n"
                    "                and ByteStream.Read of the large ones; on a miss (a new\n"
                    "                action, or a seeded one the server evicted: NOT_FOUND)\n"
                    "                FindMissingBlobs of the outputs, Action and Command, then\n"
                    "                BatchUpdateBlobs / ByteStream.Write of the missing ones and\n"
                    "                UpdateActionResult. Sizes: the model below (docs/bench.md)",
};

void client_bench_options_default(struct client_bench_options *o)
{
    memset(o, 0, sizeof(*o));
    o->server = "127.0.0.1:8980";
    o->workload = "bs-read";
    o->instance = "";
    o->threads = 1;
    o->conns = 4;
    o->concurrency = 64;
    o->duration_ms = 10000;
    o->warmup_ms = 1000;
    o->size = 1024;
    o->blobs = 1024;
    o->batch = 16;
    o->data = "random";
    o->corpus = "/usr/lib/x86_64-linux-gnu:/usr/include";
    o->timeout_ms = 30000;
    o->mix_hit = 80;
    o->mix_actions = 2000;
    o->mix_max_size = 256u << 20;
    o->mix_batch_max = 64u << 10;
    o->histogram = true;
}

void client_bench_print_workloads(FILE *out)
{
    (void)fprintf(out, "workloads (--workload):\n");
    for (size_t i = 0; i < BENCH_W_COUNT; i++) {
        (void)fprintf(out, "  %-13s %s\n", bench_workload_names[i], workload_help[i]);
    }
    (void)fprintf(out, "\nbuild-mix blob sizes (files under /usr/lib and /usr/include):\n");
    bench_mix_print_model(out);
}

/* ---- the data pool ---- */

/* nftw() has no argument for its callback: the fill in progress (main thread only). */
static struct {
    uint8_t *pool;
    size_t size;
    size_t len;
} corpus_fill;

/* Appends one regular file's bytes to the pool; stops the walk when it is full. */
static int corpus_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || !S_ISREG(st->st_mode) || st->st_size == 0) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    /* Bounded by the pool's room: each read takes at least a byte or ends the file. */
    while (corpus_fill.len < corpus_fill.size) {
        ssize_t n =
            read(fd, corpus_fill.pool + corpus_fill.len, corpus_fill.size - corpus_fill.len);
        if (n <= 0) break;
        corpus_fill.len += (size_t)n;
    }
    (void)close(fd);
    return corpus_fill.len == corpus_fill.size ? 1 : 0;
}

static int fill_build(uint8_t *pool, size_t size, const char *corpus)
{
    corpus_fill.pool = pool;
    corpus_fill.size = size;
    corpus_fill.len = 0;
    /* A copy of the whole list, however long (it was cut at 1024 characters once). */
    char *dirs = strdup(corpus);
    if (!dirs) return -ENOMEM;
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d && corpus_fill.len < size;
         d = strtok_r(NULL, ":", &save)) {
        /* Main thread only, before any worker starts (corpus_fill is its context). */
        (void)nftw(d, corpus_file, 32, FTW_PHYS); /* NOLINT(concurrency-mt-unsafe) */
    }
    free(dirs);
    size_t have = corpus_fill.len;
    if (have == 0) return -ENOENT;
    /* A short corpus is repeated. Bounded: each copy doubles what is filled. */
    while (have < size) {
        size_t n = have < size - have ? have : size - have;
        memcpy(pool + have, pool, n);
        have += n;
    }
    return 0;
}

int client_bench_pool_fill(uint8_t *pool, size_t size, const char *kind, const char *corpus,
                           uint64_t seed)
{
    if (strcmp(kind, "build") == 0) return fill_build(pool, size, corpus);
    if (strcmp(kind, "random") != 0) return -EINVAL;
    uint64_t s = seed ? seed : 0x853c49e6748fea9bULL;
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t v = bench_rand(&s);
        memcpy(pool + i, &v, 8);
    }
    uint64_t v = bench_rand(&s);
    memcpy(pool + i, &v, size - i);
    return 0;
}

/* ---- the plan ---- */

static bool is_http(enum bench_workload w)
{
    return w == BENCH_W_HTTP_GET || w == BENCH_W_HTTP_PUT;
}

static bool uses_actions(enum bench_workload w)
{
    return w == BENCH_W_AC_GET || w == BENCH_W_MIX;
}

/* What is wrong with the options, or NULL. */
static const char *options_problem(const struct client_bench_options *o, int w)
{
    if (w < 0) return "--workload: unknown (see ringcas bench --help)";
    if (o->threads < 1 || o->threads > 64) return "--threads: 1 to 64";
    if (o->conns < 1 || o->conns > 1024) return "--conns: 1 to 1024";
    if (o->concurrency < 1 || o->concurrency > 4096) return "--concurrency: 1 to 4096";
    if (o->duration_ms == 0) return "--duration: must be more than 0";
    /* The run's times are nanoseconds in 64 bits: longer windows overflowed into a run that
     * never ended (99999999999h) or ended at once. A month is past any benchmark. */
    if (o->duration_ms > BENCH_DURATION_MAX_MS) return "--duration: at most 720h";
    if (o->warmup_ms > BENCH_DURATION_MAX_MS) return "--warmup: at most 720h";
    if (o->size > (1ull << 30)) return "--size: at most 1GiB";
    if (o->batch < 1 || o->batch > 10000) return "--batch: 1 to 10000";
    if (o->blobs < 1 || o->blobs > 10000000) return "--blobs: 1 to 10000000";
    if (strcmp(o->data, "random") != 0 && strcmp(o->data, "build") != 0) {
        return "--data: random or build";
    }
    if (o->mix_hit > 100) return "--mix-hit: a percentage, 0 to 100";
    /* ac-get draws from the seeded actions (0 divided by zero), and the mix without any
     * would miss every lookup whatever --mix-hit says (--mix-hit 0 is the cold cache). The
     * top keeps the plan in memory: each action holds up to 8 blobs and 3 requests. */
    if (o->mix_actions < 1 || o->mix_actions > 1000000) return "--mix-actions: 1 to 1000000";
    if (o->mix_max_size < 1 || o->mix_max_size > (1ull << 30)) return "--mix-max-size: 1 to 1GiB";
    if (o->mix_batch_max > (1u << 20)) return "--mix-batch-max: at most 1MiB";
    if (o->timeout_ms == 0 || o->timeout_ms > UINT32_MAX) return "--timeout: more than 0";
    if (o->deadline_ms > UINT32_MAX) return "--deadline: too long";
    if (o->rate > 0 && o->rate < o->threads) return "--rate: at least one per thread";
    /* One arrival a nanosecond, the clock's unit (and what keeps the schedule's arithmetic
     * in 64 bits, bench_run.c). */
    if (o->rate > BASE_NS_PER_S) return "--rate: at most 1000000000";
    if (o->path && (o->path[0] != '/' || strlen(o->path) > 1024)) return "--path: /...";
    if (o->path && !is_http((enum bench_workload)w)) return "--path: HTTP workloads only";
    bool batch = w == BENCH_W_BATCH_READ || w == BENCH_W_BATCH_UPDATE;
    if (batch && o->batch * o->size > (4u << 20) - (64u << 10)) {
        return "--batch x --size: a batch must stay under the 4 MiB batch limit";
    }
    return NULL;
}

/* Checks the options; returns the workload or -EINVAL with a message on <err>. */
static int check_options(const struct client_bench_options *o, FILE *err)
{
    int w = -1;
    for (int i = 0; i < BENCH_W_COUNT; i++) {
        if (strcmp(o->workload, bench_workload_names[i]) == 0) w = i;
    }
    const char *bad = options_problem(o, w);
    if (bad) {
        (void)fprintf(err, "ringcas bench: %s\n", bad);
        return -EINVAL;
    }
    /* Here, not at the first request: every request would fail INVALID_ARGUMENT. */
    if (client_resource_check_instance(o->instance, &bad) < 0) {
        (void)fprintf(err, "ringcas bench: --instance '%s': %s\n", o->instance, bad);
        return -EINVAL;
    }
    return w;
}

static int blob_add(struct bench_plan *p, uint64_t size, uint64_t *rng)
{
    ASSERT(size <= p->pool_size);
    struct bench_blob *b = &p->blobs[p->blob_count++];
    b->off = bench_rand_below(rng, p->pool_size - size + 1);
    client_digest_buf(p->pool + b->off, (size_t)size, &b->d);
    proto_hex_encode(b->d.hash, CLIENT_HASH_SIZE, b->hex);
    return 0;
}

/* Encodes <r> with the builder's result in <b> (which gives its memory away). */
static void req_take(struct bench_req *r, struct bench_buf *b)
{
    r->data = b->p;
    r->len = b->len;
    *b = (struct bench_buf){ 0 };
}

/* A random digest of a blob nobody uploaded. */
static void absent_digest(struct client_digest *d, uint64_t size, uint64_t *rng)
{
    for (size_t k = 0; k < CLIENT_HASH_SIZE; k += 8) {
        uint64_t v = bench_rand(rng);
        memcpy(d->hash + k, &v, 8);
    }
    d->size = size;
}

/* Request <r>: a batch read of consecutive seeded blobs, or FindMissingBlobs with every
 * second digest absent. <ds> and <absent> have room for a batch. */
static int plan_request(struct bench_plan *p, size_t r, const struct client_digest **ds,
                        struct client_digest *absent, uint64_t *rng)
{
    struct bench_req *q = &p->reqs[r];
    size_t n = (size_t)p->o.batch;
    bool read = p->w == BENCH_W_BATCH_READ;
    for (size_t i = 0; i < n; i++) {
        if (!read && i % 2 == 1) {
            absent_digest(&absent[i], p->o.size, rng);
            ds[i] = &absent[i];
            q->expect++;
            q->sums += bench_digest_key(absent[i].hash);
        } else {
            size_t k =
                read ? (r * n + i) % p->blob_count : (size_t)bench_rand_below(rng, p->blob_count);
            ds[i] = &p->blobs[k].d;
        }
    }
    struct bench_buf b = { 0 };
    int rc;
    if (read) {
        rc = bench_req_batch_read(&b, p->o.instance, ds, n, p->o.compress);
        for (size_t i = 0; i < n; i++) {
            q->sums += bench_digest_key(ds[i]->hash);
        }
        q->expect = n;
        q->bytes = n * p->o.size;
        q->small = p->o.size < (64u << 10);
    } else {
        rc = bench_req_find_missing(&b, p->o.instance, ds, n);
    }
    req_take(q, &b);
    return rc;
}

static int plan_requests(struct bench_plan *p, uint64_t *rng)
{
    size_t n = (size_t)p->o.batch;
    ASSERT(n >= 1);
    p->req_count = p->w == BENCH_W_BATCH_READ ? (p->blob_count + n - 1) / n : 16;
    if (p->req_count == 0) p->req_count = 1;
    p->reqs = calloc(p->req_count, sizeof(*p->reqs));
    const struct client_digest **ds = calloc(n, sizeof(const struct client_digest *)); /* NOLINT */
    struct client_digest *absent = calloc(n, sizeof(*absent));
    int rc = p->reqs && ds && absent ? 0 : -ENOMEM;
    for (size_t r = 0; r < p->req_count && rc == 0; r++) {
        rc = plan_request(p, r, ds, absent, rng);
    }
    free(ds);
    free(absent);
    return rc;
}

/* One seeded action: outputs from the size model, its requests encoded. */
static int plan_action(struct bench_plan *p, struct bench_action *a, size_t index, uint64_t *rng)
{
    uint8_t action[BENCH_ACTION_MESSAGE_SIZE];
    bench_action_message(p->nonce, index, action);
    client_digest_buf(action, sizeof(action), &a->key);
    a->output_count = bench_mix_output_count(rng);
    const struct client_digest *outs[BENCH_MIX_OUTPUTS_MAX];
    const struct client_digest *small[BENCH_MIX_OUTPUTS_MAX];
    size_t small_count = 0;
    for (uint32_t i = 0; i < a->output_count; i++) {
        uint64_t size = bench_mix_size(rng, p->o.mix_max_size);
        a->outputs[i] = (uint32_t)p->blob_count;
        int rc = blob_add(p, size, rng);
        if (rc < 0) return rc;
        outs[i] = &p->blobs[a->outputs[i]].d;
        if (size <= p->o.mix_batch_max) {
            small[small_count++] = outs[i];
            a->batch_read.bytes += size;
            a->batch_read.sums += bench_digest_key(outs[i]->hash);
        }
    }
    a->batch_read.expect = small_count;
    a->batch_read.small = true;
    for (size_t i = 0; i < small_count; i++) {
        a->batch_read.small = a->batch_read.small && small[i]->size < (64u << 10);
    }
    struct bench_buf b = { 0 };
    int rc = bench_req_ac_get(&b, p->o.instance, &a->key);
    req_take(&a->get, &b);
    a->get.expect = a->output_count; /* the result must be the one seeded */
    for (uint32_t i = 0; i < a->output_count; i++) {
        a->get.sums += bench_digest_key(outs[i]->hash);
    }
    if (rc == 0) rc = bench_req_ac_update(&b, p->o.instance, &a->key, outs, a->output_count);
    req_take(&a->update, &b);
    if (rc == 0 && small_count > 0) {
        rc = bench_req_batch_read(&b, p->o.instance, small, small_count, p->o.compress);
        req_take(&a->batch_read, &b);
    }
    return rc;
}

/* Fresh large blobs for the build mix's misses, hashed now rather than on a worker's ring. */
static int plan_large(struct bench_plan *p, uint64_t *rng)
{
    size_t want = p->w == BENCH_W_MIX ? 32 : 0;
    p->large = calloc(want ? want : 1, sizeof(*p->large));
    if (!p->large) return -ENOMEM;
    for (size_t i = 0; i < want && p->o.mix_max_size > (1u << 20); i++) {
        uint64_t size = 2u << 20;
        /* Bounded: 1000 draws of the model's tail (1 in 200 is over 1 MiB). */
        for (int k = 0; k < 1000; k++) {
            uint64_t v = bench_mix_size(rng, p->o.mix_max_size);
            if (v > (1u << 20)) {
                size = v;
                break;
            }
        }
        struct bench_blob *b = &p->large[p->large_count++];
        b->off = bench_rand_below(rng, p->pool_size - size + 1);
        client_digest_buf(p->pool + b->off, (size_t)size, &b->d);
    }
    return 0;
}

static int plan_blobs(struct bench_plan *p, uint64_t *rng)
{
    size_t count = 0;
    if (p->w == BENCH_W_BS_READ || p->w == BENCH_W_BATCH_READ || p->w == BENCH_W_FIND_MISSING ||
        (p->w == BENCH_W_HTTP_GET && !p->o.path)) {
        count = (size_t)p->o.blobs;
        if (count < p->o.batch && p->w != BENCH_W_BS_READ && p->w != BENCH_W_HTTP_GET) {
            count = (size_t)p->o.batch;
        }
    }
    size_t actions = uses_actions(p->w) ? (size_t)p->o.mix_actions : 0;
    p->blobs = calloc(count + actions * BENCH_MIX_OUTPUTS_MAX + 1, sizeof(*p->blobs));
    p->actions = calloc(actions ? actions : 1, sizeof(*p->actions));
    if (!p->blobs || !p->actions) return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        int rc = blob_add(p, p->o.size, rng);
        if (rc < 0) return rc;
    }
    for (size_t i = 0; i < actions; i++) {
        int rc = plan_action(p, &p->actions[i], i, rng);
        if (rc < 0) return rc;
        p->action_count++;
    }
    if (p->w == BENCH_W_BATCH_READ || p->w == BENCH_W_FIND_MISSING) {
        int rc = plan_requests(p, rng);
        if (rc < 0) return rc;
    }
    return plan_large(p, rng);
}

static size_t pool_size_for(const struct bench_plan *p)
{
    uint64_t largest = p->o.size;
    if (p->w == BENCH_W_BATCH_UPDATE) largest = p->o.size * p->o.batch;
    if (uses_actions(p->w)) largest = p->o.mix_max_size;
    if (p->w == BENCH_W_HTTP_GET && p->o.path) largest = 0;
    uint64_t size = largest + (16u << 20);
    return (size_t)(size < (64u << 20) ? (64u << 20) : size);
}

static int plan_build(struct bench_plan *p, FILE *err)
{
    char why[256];
    int rc = client_addr_parse(p->o.server, &p->addr, why, sizeof(why));
    if (rc < 0) {
        (void)fprintf(err, "ringcas bench: --server: %s\n", why);
        return rc;
    }
    if (p->o.seed == 0) p->o.seed = base_clock_wall_ns() ^ ((uint64_t)getpid() << 32);
    if (getrandom(&p->nonce, sizeof(p->nonce), 0) != (ssize_t)sizeof(p->nonce)) {
        p->nonce = base_clock_wall_ns() * 0x9E3779B97F4A7C15ULL;
    }
    p->pool_size = pool_size_for(p);
    p->pool = malloc(p->pool_size);
    if (!p->pool) return -ENOMEM;
    rc = client_bench_pool_fill(p->pool, p->pool_size, p->o.data, p->o.corpus, p->o.seed);
    if (rc == -ENOMEM) {
        (void)fprintf(err, "ringcas bench: --corpus: out of memory\n");
        return rc;
    }
    if (rc < 0) {
        (void)fprintf(err, "ringcas bench: --data %s: no readable file under %s\n", p->o.data,
                      p->o.corpus);
        return rc;
    }
    uint64_t rng = p->o.seed | 1;
    rc = plan_blobs(p, &rng);
    if (rc < 0) (void)fprintf(err, "ringcas bench: preparing the blobs: %s\n", base_err_str(rc));
    return rc;
}

static void plan_free(struct bench_plan *p)
{
    for (size_t i = 0; i < p->req_count; i++) {
        free(p->reqs[i].data);
    }
    for (size_t i = 0; i < p->action_count; i++) {
        free(p->actions[i].get.data);
        free(p->actions[i].update.data);
        free(p->actions[i].batch_read.data);
    }
    free(p->reqs);
    free(p->actions);
    free(p->blobs);
    free(p->large);
    free(p->pool);
    free(p);
}

/* ---- running ---- */

/* The first fatal error of the threads, or of their seeding; 0 when none. */
static int threads_failed(struct bench_thread **ts, uint32_t n, FILE *err)
{
    for (uint32_t i = 0; i < n; i++) {
        if (ts[i]->fatal) {
            (void)fprintf(err, "ringcas bench: %s\n", ts[i]->fatal_text);
            return ts[i]->fatal;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (ts[i]->seed_errors) {
            (void)fprintf(err, "ringcas bench: seeding failed (%llu uploads): %s\n",
                          (unsigned long long)ts[i]->seed_errors, ts[i]->stats.first_error);
            const struct bench_err *e = &ts[i]->stats.errs[0];
            bool refused = e->kind == BENCH_ERR_LOCAL && e->code == ECONNREFUSED;
            return refused ? -ECONNREFUSED : -EIO;
        }
    }
    return 0;
}

/* Starts the threads, seeds, runs, joins; merges their statistics into <s>. */
static int run_threads(struct bench_plan *p, struct bench_stats *s, FILE *err)
{
    uint32_t n = p->thread_count;
    struct bench_thread **ts = calloc(n, sizeof(struct bench_thread *)); /* NOLINT */
    if (!ts) return -ENOMEM;
    int rc = pthread_barrier_init(&p->barrier, NULL, n + 1);
    if (rc != 0) {
        free(ts);
        return -rc;
    }
    uint32_t started = 0;
    for (; started < n; started++) {
        ts[started] = bench_run_create(p, started);
        if (!ts[started]) break;
        if (pthread_create(&ts[started]->tid, NULL, bench_run_thread, ts[started]) != 0) {
            bench_run_destroy(ts[started]);
            break;
        }
    }
    ASSERT(started == n); /* a thread that cannot start would leave the barrier waiting */
    uint64_t seeds = bench_step_seed_jobs(p);
    if (seeds) {
        (void)fprintf(err, "ringcas bench: seeding %llu blobs and entries\n",
                      (unsigned long long)seeds);
    }
    (void)pthread_barrier_wait(&p->barrier);
    rc = threads_failed(ts, n, err);
    p->abort = rc != 0;
    p->start_ns = base_clock_now_ns() + 20 * BASE_NS_PER_MS;
    p->warm_end_ns = p->start_ns + p->o.warmup_ms * BASE_NS_PER_MS;
    p->end_ns = p->warm_end_ns + p->o.duration_ms * BASE_NS_PER_MS;
    if (!p->abort) {
        (void)fprintf(err, "ringcas bench: %s for %.1f s after a %.1f s warm-up\n",
                      bench_workload_names[p->w], (double)p->o.duration_ms / 1e3,
                      (double)p->o.warmup_ms / 1e3);
    }
    (void)pthread_barrier_wait(&p->barrier);
    for (uint32_t i = 0; i < n; i++) {
        (void)pthread_join(ts[i]->tid, NULL);
    }
    if (rc == 0) rc = threads_failed(ts, n, err);
    for (uint32_t i = 0; i < n; i++) {
        bench_stats_merge(s, &ts[i]->stats);
        bench_run_destroy(ts[i]);
    }
    (void)pthread_barrier_destroy(&p->barrier);
    free(ts);
    return rc;
}

/* ---- the entry point ---- */

/*
 * Exit status 5 when nothing got through because the server refused every connection, 1
 * when some request failed or none finished in the window (a server that never answers:
 * its requests end neither well nor badly before --timeout, and are cut off at the end).
 */
static int exit_status(const struct bench_stats *s, FILE *err)
{
    uint64_t ok = 0;
    uint64_t errors = 0;
    uint64_t expected = 0;
    for (size_t i = 0; i < BENCH_OP_COUNT; i++) {
        ok += s->ops[i].ok;
        errors += s->ops[i].errors;
        expected += s->ops[i].expected;
    }
    if (ok + errors + expected == 0 && s->arrivals_late > 0) {
        (void)fprintf(err,
                      "ringcas bench: no request finished in the measured window: the server "
                      "fell behind the rate (%" PRIu64 " arrivals due in it never started)\n",
                      s->arrivals_late);
        return 1;
    }
    if (ok + errors + expected == 0) {
        (void)fprintf(err, "ringcas bench: no request finished in the measured window: the "
                           "server did not answer\n");
        return 1;
    }
    if (errors == 0) return 0;
    bool refused =
        s->err_count == 1 && s->errs[0].kind == BENCH_ERR_LOCAL && s->errs[0].code == ECONNREFUSED;
    return ok == 0 && refused ? 5 : 1;
}

int client_bench_main(const struct client_bench_options *o, FILE *out, FILE *err)
{
    int w = check_options(o, err);
    if (w < 0) return 2;
    struct bench_plan *p = calloc(1, sizeof(*p));
    struct bench_stats *s = calloc(1, sizeof(*s));
    if (!p || !s) {
        free(p);
        free(s);
        return 1;
    }
    p->o = *o;
    p->w = (enum bench_workload)w;
    p->http = is_http(p->w);
    p->thread_count = (uint32_t)o->threads;
    int status = 2;
    int rc = plan_build(p, err);
    if (rc == -EHOSTUNREACH) status = 5;
    if (rc == 0) {
        bench_stats_reset(s);
        rc = run_threads(p, s, err);
        if (rc == -ECONNREFUSED) {
            status = 5;
        } else if (rc < 0) {
            status = 1;
        } else {
            bench_report(out, p, s, (double)o->duration_ms / 1e3);
            status = exit_status(s, err);
        }
    }
    plan_free(p);
    free(s);
    return status;
}
