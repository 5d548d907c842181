/*
 * The load generator's data pool (client_bench_pool_fill): random bytes, and the build data
 * read from the folders of --corpus, however long that list is.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

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
