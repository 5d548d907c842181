/*
 * ringcas bench: the load generator. One io_uring ring per thread (client/client.h), each
 * with its own connections and a fixed number of request slots; closed loop (every slot
 * sends its next request when the last one is answered) or open loop (requests arrive at a
 * fixed rate and each latency counts from the moment its request was due, so a stalled
 * server cannot hide behind a client that waited: no coordinated omission). It seeds the
 * blobs it reads, runs for a warm-up and a measured window, and reports throughput, latency
 * percentiles and a histogram per request kind, and errors by status, as text or JSON.
 *
 * Workloads and flags: docs/bench.md, `ringcas bench --help`.
 */
#ifndef RINGCAS_CLIENT_BENCH_H
#define RINGCAS_CLIENT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/assert.h"

struct client_bench_options {
    const char *server;     /* HOST:PORT */
    const char *workload;   /* bs-read, bs-write, ..., mix */
    const char *instance;   /* REAPI instance name ("" for none) */
    uint64_t threads;       /* worker threads, one ring each */
    uint64_t conns;         /* HTTP/2 connections per thread (HTTP/1.1: one per slot) */
    uint64_t concurrency;   /* request slots per thread */
    uint64_t duration_ms;   /* measured window */
    uint64_t warmup_ms;     /* before it, not counted */
    uint64_t rate;          /* open loop: arrivals per second over all threads; 0: closed */
    uint64_t size;          /* blob bytes (single-size workloads) */
    uint64_t blobs;         /* distinct blobs seeded for reads */
    uint64_t batch;         /* blobs per batch call, digests per FindMissingBlobs */
    const char *data;       /* "random" or "build" (bytes like build outputs) */
    const char *corpus;     /* colon-separated folders the build data is read from */
    const char *path;       /* HTTP: fixed request path (another server's static file) */
    uint64_t timeout_ms;    /* connect and I/O timeout */
    uint64_t deadline_ms;   /* gRPC: per-call deadline; 0: none */
    uint64_t seed;          /* random seed; 0: from the clock */
    uint64_t mix_hit;       /* build mix: action-cache hit ratio, percent */
    uint64_t mix_actions;   /* build mix: actions seeded (previous builds) */
    uint64_t mix_max_size;  /* build mix: largest blob */
    uint64_t mix_batch_max; /* build mix: blobs up to this go in batch calls */
    bool compress;          /* zstd transfers (compressed-blobs, batch compressors,
                               Accept-Encoding: zstd) */
    bool verify;            /* hash what is read (gRPC reads) */
    bool json;              /* print JSON instead of text */
    bool histogram;         /* text: print the latency histogram */
};

/* Fills <o> with the defaults `ringcas bench --help` shows. */
void client_bench_options_default(struct client_bench_options *o);

/*
 * Runs the benchmark <o> describes and prints its report to <out> (progress and errors to
 * <err>). Returns the process exit status: 0 when every request succeeded, 1 when some
 * failed (the report says which), 2 for bad options, 5 when the server cannot be reached.
 */
int client_bench_main(const struct client_bench_options *o, FILE *out, FILE *err);

/* Writes the workload descriptions for --help. */
void client_bench_print_workloads(FILE *out);

/*
 * Fills <pool> (<size> bytes) with benchmark data: "random" (xorshift, incompressible) or
 * "build" (the files under the colon-separated folders of <corpus>, concatenated in a fixed
 * order, repeated if they are short). perf/cpu_raw measures SHA-256 and zstd on the same
 * bytes. <corpus> may be of any length. Returns 0, or -EINVAL (unknown kind), -ENOENT (no
 * readable file in <corpus>) or -ENOMEM.
 */
MUST_CHECK int client_bench_pool_fill(uint8_t *pool, size_t size, const char *kind,
                                      const char *corpus, uint64_t seed);

#endif /* RINGCAS_CLIENT_BENCH_H */
