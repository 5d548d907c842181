/*
 * The load generator's data pool (client_bench_pool_fill): random bytes, and the build data
 * read from the folders of --corpus, however long that list is. The build mix's draws, and
 * where a request's latency starts in closed and open loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "client/bench.h"
#include "client/bench_internal.h"

/* Makes a folder holding one file of <text>; returns the folder's path (free it). */
static char *corpus_folder(const char *text)
{
    char *dir = strdup("/tmp/ringcas-corpus-XXXXXX");
    cr_assert(dir != NULL);
    cr_assert(mkdtemp(dir) != NULL);
    char path[128];
    (void)snprintf(path, sizeof(path), "%s/data", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    cr_assert(ge(int, fd, 0));
    cr_assert(eq(sz, (size_t)write(fd, text, strlen(text)), strlen(text)));
    cr_assert(eq(int, close(fd), 0));
    return dir;
}

static void corpus_folder_remove(char *dir)
{
    char path[128];
    (void)snprintf(path, sizeof(path), "%s/data", dir);
    cr_assert(eq(int, unlink(path), 0));
    cr_assert(eq(int, rmdir(dir), 0));
    free(dir);
}

Test(client_bench, build_data_reads_every_folder_of_a_long_corpus)
{
    char *dir = corpus_folder("abcdefgh");
    /* 300 missing folders (about 6 KiB of list), then the real one at the end. */
    size_t size = 300 * 20 + strlen(dir) + 1;
    char *corpus = calloc(1, size);
    cr_assert(corpus != NULL);
    size_t n = 0;
    for (int i = 0; i < 300; i++) {
        n += (size_t)snprintf(corpus + n, size - n, "/nonexistent/%06d:", i);
    }
    (void)snprintf(corpus + n, size - n, "%s", dir);
    cr_assert(gt(sz, strlen(corpus), 4096));
    uint8_t pool[20];
    cr_assert(eq(int, client_bench_pool_fill(pool, sizeof(pool), "build", corpus, 1), 0));
    /* The file's 8 bytes, repeated to fill the pool. */
    cr_assert(eq(int, memcmp(pool, "abcdefghabcdefghabcd", sizeof(pool)), 0));
    free(corpus);
    corpus_folder_remove(dir);
}

Test(client_bench, build_data_without_a_readable_file_is_enoent)
{
    uint8_t pool[16];
    cr_assert(eq(int, client_bench_pool_fill(pool, sizeof(pool), "build", "/nonexistent/a::", 1),
                 -ENOENT));
    cr_assert(eq(int, client_bench_pool_fill(pool, sizeof(pool), "build", "", 1), -ENOENT));
    cr_assert(eq(int, client_bench_pool_fill(pool, sizeof(pool), "other", "/", 1), -EINVAL));
}

/*
 * The build mix draws what docs/bench.md's table says: over a million draws, each row's share
 * within 0.25 points of the table's, every size inside [1, max], and the output counts at
 * 40/35/15/10 %. (The table is what the report's numbers are read against: a model that
 * drifted from it would publish a different mix than the one documented.)
 */
Test(client_bench, build_mix_draws_the_documented_distribution)
{
    /* docs/bench.md: 1 B-511 B, 512 B-4 KiB, 4-64 KiB, 64 KiB-1 MiB, 1-16 MiB, 16-256 MiB */
    static const uint64_t top[6] = { 511,           4095, 65535, (1u << 20) - 1, (1u << 24) - 1,
                                     (1u << 28) - 1 };
    static const double share[6] = { 10.3, 44.8, 39.2, 5.3, 0.40, 0.07 };

    enum {
        DRAWS = 1000000
    };

    uint64_t rows[6] = { 0 };
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    for (int i = 0; i < DRAWS; i++) {
        uint64_t v = bench_mix_size(&rng, 256u << 20);
        cr_assert(ge(u64, v, 1));
        cr_assert(lt(u64, v, 256u << 20));
        size_t r = 0;
        while (v > top[r]) {
            r++;
        }
        rows[r]++;
    }
    for (size_t r = 0; r < 6; r++) {
        double got = 100.0 * (double)rows[r] / DRAWS;
        cr_expect(got > share[r] - 0.25 && got < share[r] + 0.25,
                  "row %zu: %.3f %% drawn, %.2f %% documented", r, got, share[r]);
    }
    /* --mix-max-size cuts the tail to it. */
    for (int i = 0; i < 10000; i++) {
        cr_assert(le(u64, bench_mix_size(&rng, 4096), 4096));
    }
    uint64_t outputs[BENCH_MIX_OUTPUTS_MAX + 1] = { 0 };
    for (int i = 0; i < DRAWS; i++) {
        uint32_t n = bench_mix_output_count(&rng);
        cr_assert(ge(u32, n, 1));
        cr_assert(le(u32, n, BENCH_MIX_OUTPUTS_MAX));
        outputs[n]++;
    }
    static const double out_share[4] = { 40, 35, 15, 10 }; /* 1, 2, 3, 4-8 */
    uint64_t four_up = 0;
    for (size_t n = 4; n <= BENCH_MIX_OUTPUTS_MAX; n++) {
        four_up += outputs[n];
        cr_expect(gt(u64, outputs[n], 0), "%zu outputs never drawn", n);
    }
    const uint64_t got_out[4] = { outputs[1], outputs[2], outputs[3], four_up };
    for (size_t k = 0; k < 4; k++) {
        double got = 100.0 * (double)got_out[k] / DRAWS;
        cr_expect(got > out_share[k] - 0.5 && got < out_share[k] + 0.5, "outputs %zu: %.2f %%",
                  k + 1, got);
    }
}

/*
 * A slot of a bs-write thread with no connection: bench_step_begin prepares the request (a
 * new --size blob: its bytes copied from the pool and hashed) and parks it, which is where
 * its latency origin (req_ns) is set. <rate> 0 is closed loop.
 */
struct origin_rig {
    struct bench_plan plan;
    struct bench_thread *t;
    struct ring_core *core;
};

static void origin_rig_open(struct origin_rig *r, uint64_t rate)
{
    memset(r, 0, sizeof(*r));
    client_bench_options_default(&r->plan.o);
    r->plan.o.rate = rate;
    r->plan.o.size = 8u << 20;
    r->plan.w = BENCH_W_BS_WRITE;
    r->plan.thread_count = 1;
    r->plan.pool_size = 16u << 20;
    r->plan.pool = malloc(r->plan.pool_size);
    cr_assert(r->plan.pool != NULL);
    cr_assert(eq(int, client_bench_pool_fill(r->plan.pool, r->plan.pool_size, "random", "", 7), 0));
    r->t = bench_run_create(&r->plan, 0);
    cr_assert(r->t != NULL);
    r->t->conn_count = 0; /* no connection: the request is prepared, then parked */
    struct ring_core_options ro;
    client_core_options(&ro);
    char why[256];
    cr_assert(eq(int, ring_core_create(&ro, 0, &r->core, why, sizeof(why)), 0), "%s", why);
    r->t->core = r->core;
    client_init(&r->t->cl, r->core);
    cr_assert(eq(int, bench_step_init(&r->t->slots[0], r->t, 0), 0));
}

static void origin_rig_close(struct origin_rig *r)
{
    bench_step_deinit(&r->t->slots[0]);
    client_deinit(&r->t->cl);
    ring_core_destroy(r->core);
    bench_run_destroy(r->t);
    free(r->plan.pool);
}

/* Begins a unit whose origin (its due time, or when its slot took it) was a second ago. */
static struct bench_slot *origin_begin(struct origin_rig *r, uint64_t *before)
{
    struct bench_slot *s = &r->t->slots[0];
    *before = base_clock_now_ns();
    s->unit_ns = *before - BASE_NS_PER_S;
    s->busy = true;
    r->t->busy_count = 1;
    bench_step_begin(s);
    cr_assert(s->parked, "the slot waits for a connection");
    cr_assert(eq(u64, s->d.size, r->plan.o.size), "the new blob was prepared");
    return s;
}

/*
 * Closed loop: a request's latency is its own, from when it is started, after the client
 * prepared it. It counted from the unit's start, before the new blob was copied and hashed:
 * every bs-write, http-put and batch-update latency held the client's SHA-256 of its blob
 * (measured: 8 MiB writes, bench mean 34.0 ms where the server's access log said 24.6 ms).
 */
Test(client_bench, closed_loop_latency_starts_after_the_request_is_prepared)
{
    struct origin_rig r;
    origin_rig_open(&r, 0);
    uint64_t before;
    struct bench_slot *s = origin_begin(&r, &before);
    cr_assert(ge(u64, s->req_ns, before), "origin %llu ns before the request began",
              (unsigned long long)(before - s->req_ns));
    origin_rig_close(&r);
}

/* Open loop: the first request counts from its unit's due time, whatever delayed it. */
Test(client_bench, open_loop_latency_starts_at_the_due_time)
{
    struct origin_rig r;
    origin_rig_open(&r, 100);
    uint64_t before;
    struct bench_slot *s = origin_begin(&r, &before);
    cr_assert(eq(u64, s->req_ns, s->unit_ns));
    origin_rig_close(&r);
}
