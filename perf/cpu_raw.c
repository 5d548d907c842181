/*
 * The CPU limit of ingest: raw SHA-256 (OpenSSL EVP) and zstd (level 1, the server's
 * default, in 256 KiB chunks as the engine stores them) on the same bytes ringcas bench
 * uploads (client_bench_pool_fill: "build" = files under /usr/lib/x86_64-linux-gnu and
 * /usr/include, "random" = incompressible), one thread, nothing else. Speeds are bytes per
 * second of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), the unit the server's ingest is
 * compared in (bytes per server CPU-second), so a busy machine slows neither side's figure.
 * Prints one line of key=value figures per corpus for perf/run.sh.
 *
 *   cpu_raw [MiB] [build|random|both] [chunk KiB] [zstd level]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <zstd.h>

#include "client/bench.h"

/* This thread's CPU time in ns. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double mbps(size_t bytes, uint64_t ns)
{
    return (double)bytes / 1e6 / ((double)ns / 1e9);
}

static uint64_t time_sha(const uint8_t *p, size_t len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned int mdlen = 0;
    uint64_t t0 = cpu_ns();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, p, len);
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    uint64_t t = cpu_ns() - t0;
    EVP_MD_CTX_free(ctx);
    return t;
}

/* zstd of each <chunk>-byte piece into a hot buffer; returns ns, writes the stored bytes. */
static uint64_t time_zstd(ZSTD_CCtx *cctx, const uint8_t *p, size_t len, size_t chunk, uint8_t *out,
                          size_t out_size, size_t *stored)
{
    *stored = 0;
    uint64_t t0 = cpu_ns();
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        size_t z = ZSTD_compress2(cctx, out, out_size, p + off, n);
        /* The engine stores a chunk raw when zstd does not shrink it. */
        *stored += ZSTD_isError(z) || z >= n ? n : z;
    }
    return cpu_ns() - t0;
}

static int run(const char *kind, size_t len, size_t chunk, int level)
{
    uint8_t *pool = malloc(len);
    uint8_t *out = malloc(ZSTD_compressBound(chunk));
    if (!pool || !out) return 1;
    int rc = client_bench_pool_fill(pool, len, kind, "/usr/lib/x86_64-linux-gnu:/usr/include", 0);
    if (rc != 0) {
        fprintf(stderr, "cpu_raw: cannot fill %s data (%d)\n", kind, rc);
        return 1;
    }
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    /* Warm: touch the pool and the contexts once. */
    size_t stored = 0;
    (void)time_sha(pool, len);
    (void)time_zstd(cctx, pool, len, chunk, out, ZSTD_compressBound(chunk), &stored);
    /* Best of 3: the machine is shared; the best run is the CPU's speed. */
    uint64_t sha = UINT64_MAX;
    uint64_t zstd = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        uint64_t s = time_sha(pool, len);
        uint64_t z = time_zstd(cctx, pool, len, chunk, out, ZSTD_compressBound(chunk), &stored);
        sha = s < sha ? s : sha;
        zstd = z < zstd ? z : zstd;
    }
    printf("corpus=%s bytes=%zu chunk=%zu level=%d sha256_mbps=%.0f zstd_mbps=%.0f "
           "sha256_zstd_mbps=%.0f stored_ratio=%.3f\n",
           kind, len, chunk, level, mbps(len, sha), mbps(len, zstd), mbps(len, sha + zstd),
           (double)stored / (double)len);
    ZSTD_freeCCtx(cctx);
    free(out);
    free(pool);
    return 0;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    const char *which = argc > 2 ? argv[2] : "both";
    size_t chunk = (argc > 3 ? strtoul(argv[3], NULL, 10) : 256) << 10;
    int level = argc > 4 ? (int)strtol(argv[4], NULL, 10) : 1;
    int rc = 0;
    if (strcmp(which, "random") != 0) rc |= run("build", mib << 20, chunk, level);
    if (strcmp(which, "build") != 0) rc |= run("random", mib << 20, chunk, level);
    return rc;
}
