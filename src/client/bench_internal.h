/*
 * What the files of the load generator (ringcas bench) share; only src/client/bench*.c and
 * their tests include this header.
 *
 *   bench.c         options, the plan (blob set, data pool, encoded requests), threads,
 *                   phases, the entry point
 *   bench_run.c     one worker thread: its ring, connections, slots, pacing, recording
 *   bench_mix.c     the build mix: the size model and each action's steps
 *   bench_req.c     protobuf requests encoded by hand, responses checked by hand
 *   bench_report.c  merged results as text or JSON
 *
 * The plan is built by the main thread before any worker starts and is read-only after;
 * each worker thread owns its ring, connections, slots and statistics, which the main
 * thread reads only after joining it.
 */
#ifndef RINGCAS_CLIENT_BENCH_INTERNAL_H
#define RINGCAS_CLIENT_BENCH_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "client/bench.h"
#include "client/client.h"
#include "client/conn.h"
#include "client/connect.h"
#include "client/digest.h"
#include "client/get.h"
#include "client/h1.h"
#include "client/hist.h"
#include "client/put.h"
#include "client/raw.h"
#include "ring/timer.h"

enum bench_workload {
    BENCH_W_BS_READ = 0,
    BENCH_W_BS_WRITE,
    BENCH_W_BATCH_READ,
    BENCH_W_BATCH_UPDATE,
    BENCH_W_FIND_MISSING,
    BENCH_W_AC_GET,
    BENCH_W_HTTP_GET,
    BENCH_W_HTTP_PUT,
    BENCH_W_MIX,
    BENCH_W_COUNT,
};

/* The kinds of request, each with its own statistics. */
enum bench_op {
    BENCH_OP_BS_READ = 0,
    BENCH_OP_BS_WRITE,
    BENCH_OP_BATCH_READ,
    BENCH_OP_BATCH_UPDATE,
    BENCH_OP_FIND_MISSING,
    BENCH_OP_AC_GET,
    BENCH_OP_AC_UPDATE,
    BENCH_OP_HTTP_GET,
    BENCH_OP_HTTP_PUT,
    BENCH_OP_COUNT,
};

/* Workload names ("bs-read") and op names ("ByteStream.Read"). */
extern const char *const bench_workload_names[BENCH_W_COUNT];
extern const char *const bench_op_names[BENCH_OP_COUNT];

/* Error keys: where an error came from, and its code. */
#define BENCH_ERR_NONE  0 /* success */
#define BENCH_ERR_GRPC  1 /* a gRPC status the server sent */
#define BENCH_ERR_HTTP  2 /* an HTTP status other than 2xx */
#define BENCH_ERR_LOCAL 3 /* a local -errno (timeout, reset, a response that did not check) */
#define BENCH_ERR_KEYS  32
/* An error's description: the op, the status's name and code, and the server's whole message
 * (its grpc-message, or an HTTP answer's body). */
#define BENCH_ERROR_TEXT_MAX (CLIENT_MESSAGE_MAX + 96)

/* The longest --duration and --warmup: 720 hours. */
#define BENCH_DURATION_MAX_MS (720ull * 3600 * 1000)

struct bench_err {
    uint8_t kind;   /* BENCH_ERR_* */
    int32_t code;   /* status or positive errno */
    uint64_t count; /* occurrences */
};

struct bench_op_stats {
    struct client_hist lat; /* latency of successful requests (ns) */
    uint64_t ok;            /* successful requests completed in the window */
    uint64_t errors;        /* failed requests completed in the window */
    uint64_t bytes;         /* blob bytes moved by the successful ones (uncompressed) */
    uint64_t expected;      /* answers the workload expects and does not count as errors
                               (the NOT_FOUND of an action-cache miss) */
};

struct bench_stats {
    struct bench_op_stats ops[BENCH_OP_COUNT];
    struct bench_op_stats small; /* requests that moved only blobs < 64 KiB, of any kind */
    struct bench_err errs[BENCH_ERR_KEYS];
    uint32_t err_count;                     /* entries of errs[] used */
    uint64_t err_other;                     /* errors past BENCH_ERR_KEYS distinct keys */
    uint64_t arrivals;                      /* work units (requests or actions) completed */
    uint64_t arrivals_late;                 /* open loop: arrivals due before the end, never
                                               started (the server fell behind) */
    uint64_t hits;                          /* build mix: action-cache hits */
    uint64_t misses;                        /* build mix: misses, misses_evicted included */
    uint64_t misses_evicted;                /* build mix: seeded actions looked up as hits
                                               that the server no longer had (NOT_FOUND) */
    char first_error[BENCH_ERROR_TEXT_MAX]; /* the first error's description, whole */
};

/* A blob of the seeded set (or of the data pool): where its bytes are, and its digest. */
struct bench_blob {
    struct client_digest d;             /* of the bytes */
    uint64_t off;                       /* offset in the pool */
    char hex[2 * CLIENT_HASH_SIZE + 1]; /* d.hash in hex */
};

/* A request encoded once and sent many times (read-only, shared by the threads). */
struct bench_req {
    uint8_t *data;   /* framed request */
    size_t len;      /* its bytes */
    uint64_t expect; /* what the answer must show: missing digests, blobs read */
    uint64_t bytes;  /* blob bytes it moves */
    uint64_t sums;   /* bench_digest_key() of the digests the answer must list (batch read:
                        all; FindMissingBlobs: the absent ones; GetActionResult: the
                        outputs), added up */
    bool small;      /* every blob it moves is under 64 KiB */
};

/* A digest's hash in 64 bits, to check cheaply that a batch answered the digests asked for
 * (in any order): their keys add up to the request's. */
static inline uint64_t bench_digest_key(const uint8_t hash[CLIENT_HASH_SIZE])
{
    uint64_t k;
    memcpy(&k, hash, sizeof(k));
    return k;
}

/* A seeded action of the build mix: its key and its outputs (indexes into plan.blobs). */
#define BENCH_MIX_OUTPUTS_MAX 8
/* Bytes of a seeded action's Action message (made up: servers do not parse it). */
#define BENCH_ACTION_MESSAGE_SIZE 32

struct bench_action {
    struct client_digest key;                /* the action digest */
    uint32_t outputs[BENCH_MIX_OUTPUTS_MAX]; /* indexes into plan.blobs */
    uint32_t output_count;
    struct bench_req get;        /* GetActionResult */
    struct bench_req update;     /* UpdateActionResult (seeding) */
    struct bench_req batch_read; /* BatchReadBlobs of the small outputs */
};

struct bench_plan {
    struct client_bench_options o; /* as given, checked */
    enum bench_workload w;
    struct client_addr addr; /* resolved server */
    bool http;               /* HTTP/1.1 workload: one connection per slot */
    uint8_t *pool;           /* data pool: blob bytes come from here */
    size_t pool_size;
    uint64_t nonce;           /* per run: makes written blobs unique */
    struct bench_blob *blobs; /* the seeded set */
    size_t blob_count;
    struct bench_req *reqs; /* shared requests (batch read, find, ac get) */
    size_t req_count;
    struct bench_action *actions; /* build mix: seeded actions */
    size_t action_count;
    struct bench_blob *large; /* build mix: prepared fresh large blobs */
    size_t large_count;
    uint32_t thread_count;
    bool abort;                /* set by the main thread between the barriers */
    uint64_t start_ns;         /* run phase: arrivals begin */
    uint64_t warm_end_ns;      /* results count from here */
    uint64_t end_ns;           /* ... to here */
    pthread_barrier_t barrier; /* threads + main: seeded, then go */
};

/* ---- worker state (bench_run.c, bench_step.c) ---- */

/* A growable byte buffer for encoding. */
struct bench_buf {
    uint8_t *p;
    size_t len;
    size_t size;
};

/* One blob of a BatchUpdateBlobs request built here. */
struct bench_req_blob {
    const struct client_digest *d; /* its digest */
    const uint8_t *data;           /* its bytes (identity) */
};

/* One blob of a build-mix action in progress. */
struct bench_mix_blob {
    struct client_digest d; /* its digest */
    const uint8_t *data;    /* its bytes (pool, prepared large blob or the slot's scratch) */
    bool upload;            /* FindMissingBlobs reported it missing */
};

#define BENCH_MIX_BLOBS_MAX (BENCH_MIX_OUTPUTS_MAX + 2) /* outputs, Action, Command */

/* The steps of a unit of work (a request, or a build-mix action). */
enum bench_step {
    BENCH_STEP_ONE = 0,      /* single-request workloads: the request */
    BENCH_STEP_AC_GET,       /* mix: GetActionResult */
    BENCH_STEP_READ_BATCH,   /* mix hit: BatchReadBlobs of the small outputs */
    BENCH_STEP_READ_STREAM,  /* mix hit: ByteStream.Read of each large output */
    BENCH_STEP_FIND,         /* mix miss: FindMissingBlobs of outputs, Action, Command */
    BENCH_STEP_WRITE_BATCH,  /* mix miss: BatchUpdateBlobs of the small missing ones */
    BENCH_STEP_WRITE_STREAM, /* mix miss: ByteStream.Write of each large missing one */
    BENCH_STEP_AC_UPDATE,    /* mix miss: UpdateActionResult */
    BENCH_STEP_SEED,         /* seeding: one blob or one action-cache entry */
};

struct bench_thread;

struct bench_slot {
    struct bench_thread *t;         /* owner */
    uint32_t index;                 /* in t->slots */
    bool busy;                      /* a unit is in progress */
    bool parked;                    /* its step waits for a usable connection */
    bool in_call;                   /* a request of it is in flight */
    uint8_t step;                   /* enum bench_step */
    uint8_t op;                     /* enum bench_op of the request in flight */
    bool op_small;                  /* it moves only blobs under 64 KiB */
    bool seed_retry;                /* its seed job was refused for now: run it again */
    uint8_t seed_tries;             /* runs of its seed job so far, after the first */
    uint64_t unit_ns;               /* the unit's latency origin (its due time in open loop) */
    uint64_t req_ns;                /* the request's latency origin */
    uint64_t done_ns;               /* when its last request ended (0: none yet) */
    uint64_t op_bytes;              /* blob bytes the request moves */
    uint64_t op_expect;             /* what its answer must show (blobs, missing digests) */
    uint64_t seed_job;              /* BENCH_STEP_SEED: which */
    uint64_t counter;               /* units this slot started (unique content) */
    struct client_get get;          /* ByteStream.Read */
    struct client_put put;          /* ByteStream.Write */
    struct client_raw raw;          /* unary calls on encoded bytes */
    struct client_h1 h1;            /* HTTP workloads: the slot's own connection */
    struct ring_timer reopen;       /* HTTP: reopens h1 after a failure */
    struct ring_timer seed_timer;   /* seeding: the pause before a refused job runs again */
    const struct bench_req *shared; /* a shared request in flight */
    struct bench_buf req;           /* requests encoded for this slot */
    uint8_t *buf;                   /* unique blob bytes */
    size_t buf_size;                /* capacity */
    struct client_digest d;         /* digest of the blob in buf (or of the one read) */
    struct client_digest *digests;  /* batch-update: the batch's digests */
    struct bench_req_blob *entries; /* ... and its entries */
    const uint8_t *data;            /* bytes of the blob being written */
    char path[CLIENT_H1_PATH_MAX + 1];
    /* HTTP GET of a seeded blob: its body as it arrives, decoded and checked */
    struct client_sha256 body_sha; /* --verify: the decoded bytes' hash */
    struct ZSTD_DCtx_s *body_dctx; /* Content-Encoding: zstd (created on first use) */
    uint8_t *body_out;             /* ... its output buffer */
    size_t body_out_size;          /* ... of ZSTD_DStreamOutSize() bytes */
    uint64_t body_decoded;         /* decoded bytes */
    bool body_corrupt;             /* the zstd stream did not decode */
    bool body_frame_done;          /* the zstd frame ended */
    /* build mix */
    const struct bench_action *action; /* hit: the seeded action */
    bool hit_counted;                  /* the hit is in the stats (begun in the window) */
    struct client_digest key;          /* miss: the fresh action's key */
    struct bench_mix_blob blobs[BENCH_MIX_BLOBS_MAX];
    uint32_t blob_count; /* entries of blobs[] */
    uint32_t next;       /* next blob the streaming step handles */
};

struct bench_thread {
    struct bench_plan *plan; /* shared; written by the main thread between barriers */
    uint32_t index;          /* 0..threads-1 */
    pthread_t tid;
    uint64_t rng;                   /* this thread's generator */
    struct ring_core *core;         /* created on the thread */
    struct client cl;               /* the client on that ring */
    struct client_conn *conns;      /* HTTP/2 connections */
    struct ring_timer *conn_reopen; /* one per connection */
    uint32_t conn_count;
    struct bench_slot *slots; /* request slots */
    uint32_t slot_count;
    uint32_t *idle; /* open loop: slots waiting for an arrival (a stack) */
    uint32_t idle_count;
    uint32_t busy_count;              /* slots with a unit in progress */
    bool seeding;                     /* the seed phase runs */
    bool running;                     /* the run phase runs (arrivals are started) */
    bool draining;                    /* open loop, after the window: no new arrival starts;
                                         the units under way are awaited (--timeout) */
    bool stopping;                    /* no new unit starts; everything is closing */
    uint64_t seed_next;               /* next seed job to hand out */
    uint64_t seed_total;              /* seed jobs (over all threads) */
    uint64_t seed_errors;             /* seed jobs that failed */
    uint64_t seed_waiting;            /* slots pausing before a refused seed job runs again */
    uint64_t large_next;              /* build mix: next prepared large blob */
    struct ring_op *pace_op;          /* open loop: the pacing timeout in flight */
    struct __kernel_timespec pace_ts; /* its absolute time (read at submit) */
    uint64_t arrival_next;            /* open loop: index of this thread's next arrival */
    struct ring_timer end_timer;      /* ends the run phase */
    int fatal;                        /* a set-up or local error that stopped the thread */
    char fatal_text[200];
    struct bench_stats stats; /* counted in the measured window */
};

/* bench_run.c */

/* Runs one worker thread's whole life (pthread start routine); <arg> is its bench_thread. */
void *bench_run_thread(void *arg);

/* Allocates thread <index> of <plan>; NULL when out of memory. */
struct bench_thread *bench_run_create(struct bench_plan *plan, uint32_t index);

/* Releases a joined thread. NULL is accepted. */
void bench_run_destroy(struct bench_thread *t);

/*
 * A request of <s> is over. <kind>/<code>: BENCH_ERR_* and its code, or kind 0 with code 0
 * for success; <expected> marks a failure the workload expects (it is counted apart);
 * <what> describes an error. Records it when it finished inside the measured window.
 */
void bench_run_request_done(struct bench_slot *s, uint8_t kind, int32_t code, bool expected,
                            const char *what);

/*
 * Whether a result of <s> that ends at <now> counts: closed loop, when it ends inside the
 * measured window; open loop, when its unit was due inside it (docs/bench.md).
 */
bool bench_run_counts(const struct bench_slot *s, uint64_t now);

/* <s>'s unit is over (successfully or not): the slot takes its next unit or waits. */
void bench_run_unit_done(struct bench_slot *s);

/* The HTTP/2 connection a request of <s> goes on, or NULL (then <s> is parked). */
struct client_conn *bench_run_conn(struct bench_slot *s);

/* Stops the thread for a local error (a bug, or out of memory), with a description. */
void bench_run_fatal(struct bench_thread *t, int err, const char *what);

/* Records an error of <kind>/<code> in <s>. */
void bench_stats_error(struct bench_stats *s, uint8_t kind, int32_t code, const char *what);

/* Adds <from> into <into>. */
void bench_stats_merge(struct bench_stats *into, const struct bench_stats *from);

/* Empties <s>. */
void bench_stats_reset(struct bench_stats *s);

/* bench_step.c */

/*
 * Begins a unit on <s>: a request of the workload, a build-mix action, or (while seeding)
 * seed job s->seed_job. Prepares the slot's state and starts its first request.
 */
void bench_step_begin(struct bench_slot *s);

/* Starts the request of <s>'s current step again (after it was parked). */
void bench_step_resume(struct bench_slot *s);

/* Cancels <s>'s request in flight (the run is over). */
void bench_step_cancel(struct bench_slot *s);

/* Prepares <s>'s calls (once) and releases them. */
MUST_CHECK int bench_step_init(struct bench_slot *s, struct bench_thread *t, uint32_t index);
void bench_step_deinit(struct bench_slot *s);

/* The seed jobs of <plan> (blobs to upload, then action-cache entries). */
uint64_t bench_step_seed_jobs(const struct bench_plan *plan);

/* ---- bench_req.c: requests encoded by hand ---- */

/* Makes room for <more> bytes; 0 or -ENOMEM. */
MUST_CHECK int bench_buf_reserve(struct bench_buf *b, size_t more);
void bench_buf_free(struct bench_buf *b);

/* Each builds a framed request into <b> (reset first); 0 or -ENOMEM. */
MUST_CHECK int bench_req_find_missing(struct bench_buf *b, const char *instance,
                                      const struct client_digest *const *digests, size_t count);
MUST_CHECK int bench_req_batch_read(struct bench_buf *b, const char *instance,
                                    const struct client_digest *const *digests, size_t count,
                                    bool zstd);

MUST_CHECK int bench_req_batch_update(struct bench_buf *b, const char *instance,
                                      const struct bench_req_blob *blobs, size_t count);
MUST_CHECK int bench_req_ac_get(struct bench_buf *b, const char *instance,
                                const struct client_digest *action);
MUST_CHECK int bench_req_ac_update(struct bench_buf *b, const char *instance,
                                   const struct client_digest *action,
                                   const struct client_digest *const *outputs, size_t count);

/* The first blob of a batch answer with a non-OK status. */
struct bench_req_bad {
    int status;             /* its google.rpc.Status code; 0 when every blob was OK */
    const uint8_t *message; /* its message, borrowed from the answer; NULL when it has none */
    size_t message_len;     /* bytes of <message> (not NUL-terminated) */
};

/* How a BatchReadBlobs answer is checked, and what it showed. */
struct bench_req_read {
    bool zstd;     /* blobs may come zstd-compressed (then their length is free, unless verify) */
    bool verify;   /* each blob's bytes (decompressed) must hash to its digest: --verify */
    uint64_t size; /* out: bytes of the blobs answered OK, by their digests */
    uint64_t sums; /* out: bench_digest_key() of their digests, added up */
};

/*
 * Checks a response: the number of missing digests (FindMissingBlobs, with the sum of
 * their bench_digest_key() in *<sums>), of blobs answered OK
 * with the expected bytes (BatchReadBlobs, as <rd> says) or answered OK (BatchUpdateBlobs).
 * Each returns the count, or -EBADMSG for a malformed message or a blob whose bytes are not
 * its digest's; the first blob with a non-OK status is reported through *<bad> (code and
 * message: a server says there why it refused a blob, while the call itself is OK).
 */
MUST_CHECK int64_t bench_req_count_missing(const uint8_t *p, size_t len, uint64_t *sums);
MUST_CHECK int64_t bench_req_count_read(const uint8_t *p, size_t len, struct bench_req_read *rd,
                                        struct bench_req_bad *bad);
/* The output files of an ActionResult (GetActionResult's answer), with the sum of their
 * digests' bench_digest_key() in *<sums>; or -EBADMSG. */
MUST_CHECK int64_t bench_req_count_outputs(const uint8_t *p, size_t len, uint64_t *sums);
MUST_CHECK int64_t bench_req_count_updated(const uint8_t *p, size_t len, struct bench_req_bad *bad);

/* ---- bench_mix.c: the build mix ---- */

/*
 * Draws a blob size from the build-output model (docs/bench.md) with the 64-bit generator
 * state <rng>, at most <max>.
 */
uint64_t bench_mix_size(uint64_t *rng, uint64_t max);

/* Draws the number of outputs of an action (1..BENCH_MIX_OUTPUTS_MAX). */
uint32_t bench_mix_output_count(uint64_t *rng);

/* Prints the model's table (size class, share) for --help and docs. */
void bench_mix_print_model(FILE *out);

/* xorshift64*: the generator every thread uses (never 0 state). */
static inline uint64_t bench_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/*
 * The Action message of seeded action <index> of the run with <nonce>, into <out>: the
 * action's key is its digest, as in REAPI, so a client running the action again (after the
 * server evicted it) uploads the very Action blob the key names.
 */
static inline void bench_action_message(uint64_t nonce, size_t index,
                                        uint8_t out[BENCH_ACTION_MESSAGE_SIZE])
{
    const uint64_t words[4] = { nonce, (uint64_t)index, 0x61637469, 0 };
    memcpy(out, words, sizeof(words));
}

/* A number in [0, n) (n > 0). */
static inline uint64_t bench_rand_below(uint64_t *s, uint64_t n)
{
    return bench_rand(s) % n;
}

/* ---- bench_report.c ---- */

/* Writes the merged results of a run as text (or JSON when o.json) to <out>. */
void bench_report(FILE *out, const struct bench_plan *plan, const struct bench_stats *s,
                  double seconds);

#endif /* RINGCAS_CLIENT_BENCH_INTERNAL_H */
