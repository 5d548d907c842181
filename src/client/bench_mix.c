/*
 * The build mix's size model: the sizes of build outputs, taken from real files. The table
 * counts the regular files under /usr/lib and /usr/include of a Debian 12 machine with a
 * C/C++ toolchain (73,773 files, 4.95 GB: shared and static libraries, object files,
 * headers, scripts), by power-of-two size class; perf/sizes.py regenerates it on any
 * machine. A draw picks a class by its share, then a size uniformly inside it: 55 % of the
 * blobs are under 4 KiB, 94 % under 64 KiB, and the tail runs to hundreds of MiB (mean
 * 67 KB). Empty files (1.1 %) are folded into the 1-byte class: REAPI clients never upload
 * the empty blob. docs/bench.md gives the whole model and why.
 */
#include <inttypes.h>

#include "client/bench_internal.h"

/* Files per class: class k holds sizes [2^(k-1), 2^k), class 1 is size 1 (and 0). */
static const uint32_t size_classes[] = {
    0,    949,   5,     56,    104,  281,  236,  529,  2792, 2634, /* 0..9 */
    7634, 11923, 13470, 10597, 8659, 6054, 3589, 2106, 1019, 509,  /* 10..19 */
    279,  118,   84,    48,    43,   30,   18,   6,    1,          /* 20..28 */
};
#define CLASS_COUNT (sizeof(size_classes) / sizeof(size_classes[0]))

static uint64_t class_total(void)
{
    uint64_t t = 0;
    for (size_t k = 0; k < CLASS_COUNT; k++) {
        t += size_classes[k];
    }
    return t;
}

uint64_t bench_mix_size(uint64_t *rng, uint64_t max)
{
    ASSERT(max >= 1);
    uint64_t total = class_total();
    uint64_t pick = bench_rand_below(rng, total);
    size_t k = 1;
    /* Bounded by CLASS_COUNT. */
    for (k = 1; k < CLASS_COUNT; k++) {
        if (pick < size_classes[k]) break;
        pick -= size_classes[k];
    }
    if (k == CLASS_COUNT) k = CLASS_COUNT - 1;
    uint64_t lo = k == 1 ? 1 : (uint64_t)1 << (k - 1);
    uint64_t size = lo + bench_rand_below(rng, lo);
    return size < max ? size : max;
}

uint32_t bench_mix_output_count(uint64_t *rng)
{
    /* 1: 40 %, 2: 35 % (an object file and its .d), 3: 15 %, 4-8: 10 %. */
    uint64_t r = bench_rand_below(rng, 100);
    if (r < 40) return 1;
    if (r < 75) return 2;
    if (r < 90) return 3;
    return 4 + (uint32_t)bench_rand_below(rng, 5);
}

void bench_mix_print_model(FILE *out)
{
    uint64_t total = class_total();
    uint64_t cum = 0;
    (void)fprintf(out, "  size class            share    cumulative\n");
    for (size_t k = 1; k < CLASS_COUNT; k++) {
        uint64_t lo = k == 1 ? 1 : (uint64_t)1 << (k - 1);
        uint64_t hi = ((uint64_t)1 << k) - 1;
        cum += size_classes[k];
        (void)fprintf(out, "  %10" PRIu64 "..%-10" PRIu64 " %6.2f%%   %6.2f%%\n", lo, hi,
                      100.0 * (double)size_classes[k] / (double)total,
                      100.0 * (double)cum / (double)total);
    }
}
