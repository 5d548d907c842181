/*
 * The serve command: options -> ring server -> protocols. Until the protocols are in place
 * every accepted connection is closed at once (cleanly: the peer sees EOF).
 */
#include "rpc/server.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/err.h"
#include "base/heap.h"
#include "base/log.h"
#include "base/parse.h"
#include "ring/cpus.h"
#include "ring/listen.h"
#include "ring/server.h"
#include "rpc/access_log.h"
#include "rpc/call.h"
#include "rpc/internal.h"
#include "rpc/ops.h"
#include "rpc/svc.h"

void rpc_server_options_default(struct rpc_server_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->listen = "127.0.0.1:8980";
    opts->dir = "./ringcas-data";
    opts->cores = 0;
    opts->read_timeout_ms = 60000;
    opts->write_timeout_ms = 30000;
    opts->drain_timeout_ms = 30000;
    opts->max_size = 10ULL << 30;
    opts->sync = "group";
    opts->recv_buffers = 1024;
    opts->recv_buffer_size = 64ULL * 1024;
    opts->log_level = "info";
    opts->segment_size = 0;
    opts->chunk_size = 256ULL * 1024;
    opts->read_ahead = 4;
    opts->zstd_level = 1;
    opts->direct_io = true;
    opts->map_reads = true;
    opts->ac_check = true;
    opts->message_memory = 256ULL << 20;
    opts->max_connections = RPC_CONNS_MAX;
    opts->max_uploads = 1024;
    opts->read_memory = 256ULL << 20;
    opts->zstd_memory = 256ULL << 20;
    opts->access_log = "";
}

/* Splits "HOST:PORT" ("[::1]:8980" for IPv6) into <host> and <port>. */
static int split_listen(const char *listen, char *host, size_t host_size, uint16_t *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen) return -EINVAL;
    size_t hl = (size_t)(colon - listen);
    if (hl >= host_size) return -EINVAL;
    memcpy(host, listen, hl);
    host[hl] = '\0';
    uint64_t p;
    if (base_parse_u64(colon + 1, &p) < 0 || p > 65535) return -EINVAL;
    *port = (uint16_t)p;
    return 0;
}

static int core_init(struct ring_core *core, void *arg)
{
    const struct rpc_config *cfg = arg;
    uint32_t index = ring_core_index(core);
    ASSERT(index < cfg->core_count);
    struct rpc_core *rc = calloc(1, sizeof(*rc));
    if (!rc) return -ENOMEM;
    rc->ring = core;
    rc->cfg = cfg;
    proto_alloc_init(&rc->h2_mem);
    proto_alloc_init(&rc->pb_mem);
    /* nghttp2 and the calls free and allocate the same small objects for every stream. */
    proto_alloc_cache(&rc->h2_mem, RPC_MEM_IDLE_MAX);
    proto_alloc_cache(&rc->pb_mem, RPC_MEM_IDLE_MAX);
    proto_alloc_protobuf(&rc->pb_mem, &rc->pb);
    /* What any number of clients can make the core hold in messages (docs/grpc.md). */
    proto_alloc_limit(&rc->pb_mem, cfg->opts.message_memory);
    rpc_call_core_init(rc);
    int err = blob_core_init(cfg->store, core, &rc->blob);
    if (err < 0) {
        LOG_ERROR("core %u: blob_core_init: %s", ring_core_index(core), base_err_str(err));
        free(rc);
        return err;
    }
    ring_core_set_app(core, rc);
    /* Other cores read the table (GET /metrics) while later cores are still starting. */
    __atomic_store_n(&cfg->cores[index], rc, __ATOMIC_RELEASE);
    return 0;
}

static void core_quiesce(struct ring_core *core, void *arg)
{
    (void)arg;
    struct rpc_core *rc = ring_core_app(core);
    /* Uploads kept for resumption are the rpc layer's: they go before the engine quiesces. */
    rpc_svc_bytestream_quiesce(rc);
    rpc_call_core_quiesce(rc);
    blob_core_quiesce(rc->blob);
}

static void core_deinit(struct ring_core *core, void *arg)
{
    (void)arg;
    struct rpc_core *rc = ring_core_app(core);
    ASSERT(rc->conns_open == 0);
    /* Every byte nghttp2 and protobuf-c took came back: a leak stops the process here. */
    uint64_t h2_bytes = base_counter_get(&rc->h2_mem.bytes);
    uint64_t pb_bytes = base_counter_get(&rc->pb_mem.bytes);
    ASSERT(h2_bytes == 0);
    ASSERT(pb_bytes == 0);
    proto_alloc_deinit(&rc->h2_mem);
    proto_alloc_deinit(&rc->pb_mem);
    rpc_call_pool_drain(rc);
    rpc_call_core_deinit(rc);
    rpc_svc_bytestream_deinit(rc);
    /* GET /metrics on another core may be reading the engine's counters right now: they stay
     * (with their last values, so that a scrape during the drain sees no counter reset) until
     * blob_store_close, after every core has stopped. <rc->blob> stays published for them. */
    blob_core_deinit(rc->blob);
    ring_core_set_app(core, NULL);
    /* Freed by free_cores once every core has stopped: another core may still be rendering
     * GET /metrics over this one's counters. */
}

/* Frees the cores' state and closes the access log (its last lines written): after the cores
 * stopped, or before they started. */
static void free_cores(struct rpc_config *cfg)
{
    for (uint32_t i = 0; i < cfg->core_count; i++) {
        free(cfg->cores[i]);
    }
    free(cfg->cores);
    rpc_access_log_close(cfg->access_log);
    cfg->access_log = NULL;
}

static const char *const access_log_names[] = { "access_log_lines", "access_log_dropped_lines" };
static const char *const access_log_kinds[] = { "counter", "counter" };
static const char *const access_log_helps[] = {
    "Lines the access log took (--access-log; 0 without it).",
    "Access log lines dropped: the log's thread fell a buffer behind, or the file refused them.",
};

static uint64_t read_access_log(void *ctx, uint32_t core, size_t index)
{
    const struct rpc_config *cfg = ctx;
    return index == 0 ? rpc_access_log_lines(cfg->access_log, core)
                      : rpc_access_log_dropped(cfg->access_log, core);
}

/* The access log's counters for /metrics, registered with or without --access-log (0). */
static size_t access_log_sources(struct rpc_config *cfg, struct rpc_metrics_source *out, size_t max)
{
    if (max == 0) return 0;
    out[0] = (struct rpc_metrics_source){
        .names = access_log_names,
        .kinds = access_log_kinds,
        .helps = access_log_helps,
        .count = ARRAY_LEN(access_log_names),
        .read = read_access_log,
        .ctx = cfg,
    };
    return 1;
}

/*
 * What <cfg> needs besides the options: the other modules' counters, which GET /metrics
 * renders with the ring's and the routes' (<sources>, <max> entries, which must outlive the
 * server), and --access-log, opened before the store's recovery (which may take a while) so
 * that a path that cannot be written is said at once, on stderr.
 */
static int config_extras(struct rpc_config *cfg, struct rpc_metrics_source *sources, size_t max)
{
    size_t n = rpc_counters_sources(cfg, sources, max);
    n += rpc_ops_sources(cfg, sources + n, max - n);
    n += access_log_sources(cfg, sources + n, max - n);
    cfg->sources = sources;
    cfg->source_count = n;
    const char *path = cfg->opts.access_log;
    if (path[0] == '\0') return 0;
    char why[512];
    int rc = rpc_access_log_open(path, cfg->core_count, &cfg->access_log, why, sizeof(why));
    if (rc < 0) (void)fprintf(stderr, "ringcas serve: %s\n", why);
    return rc;
}

/*
 * What the default segment size is cut from: --max-size, or the folder's file system when that
 * is smaller. A segment is evicted whole and only once sealed, so segments sized from a
 * budget the disk cannot hold (10 GiB of budget on a 64 MiB volume: 256 MiB each) would fill
 * the disk before the first one sealed, leaving eviction nothing to delete.
 */
static uint64_t segment_budget(const struct rpc_server_options *opts)
{
    struct statvfs st;
    if (statvfs(opts->dir, &st) == -1 || st.f_blocks == 0) return opts->max_size;
    uint64_t fs = (uint64_t)st.f_blocks * st.f_frsize;
    return fs < opts->max_size ? fs : opts->max_size;
}

/* Fills the engine's options from the operator's; segments shrink for small budgets. */
static int store_options(const struct rpc_server_options *opts, uint32_t cores,
                         struct blob_store_options *bo)
{
    blob_store_options_default(bo);
    bo->dir = opts->dir;
    bo->max_size = opts->max_size;
    bo->cores_max = cores;
    bo->chunk_size = (uint32_t)opts->chunk_size;
    bo->read_ahead = (uint32_t)opts->read_ahead; /* 1..BLOB_READ_AHEAD_MAX: check_core_limits */
    bo->zstd_level = (int)opts->zstd_level;      /* BLOB_ZSTD_LEVEL_ bounds: check_options */
    bo->direct_io = opts->direct_io;
    bo->map_reads = opts->map_reads;
    bo->segment_size = opts->segment_size;
    bo->uploads_max = (uint32_t)opts->max_uploads;
    bo->read_buffer_max = opts->read_memory;
    bo->zstd_memory_max = opts->zstd_memory;
    if (bo->segment_size == 0) {
        uint64_t seg = segment_budget(opts) / (8ULL * cores);
        seg = seg > (256ULL << 20) ? (256ULL << 20) : seg;
        bo->segment_size = seg & ~(uint64_t)(1024 * 1024 - 1);
        if (bo->segment_size < 4ULL * bo->chunk_size) bo->segment_size = 4ULL * bo->chunk_size;
    }
    return blob_sync_parse(opts->sync, &bo->sync);
}

/*
 * Creates <dir> and its missing parents (as mkdir -p does), 0755; 0 when <dir> is a folder
 * this process may write to.
 */
static int make_dir(const char *dir)
{
    char path[PATH_MAX];
    size_t len = strlen(dir);
    if (len == 0) return -ENOENT;
    if (len >= sizeof(path)) return -ENAMETOOLONG;
    memcpy(path, dir, len + 1);
    /* Bounded by <len>: each parent in turn, then the folder itself. */
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0') continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) == -1 && errno != EEXIST) return -errno;
        path[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) == -1) return -errno;
    if (!S_ISDIR(st.st_mode)) return -ENOTDIR;
    /* The server writes its segments there. Checked now, not by the first upload: a folder
     * the server may not write to (owned by another user, a read-only mount, chattr +i) would
     * otherwise start, answer /readyz 200 and fail every upload with 500. Root passes the
     * permission bits, not EROFS or the immutable flag. */
    if (access(dir, W_OK | X_OK) == -1) return -errno;
    return 0;
}

/*
 * Checks that the port is free, then makes the data folder: a port that is taken fails the
 * start before the folder is touched, since opening the store recovers it (seconds with
 * millions of blobs) and seals and rewrites segments. Returns 0, or -errno after printing
 * the reason.
 */
static int claim_port_and_dir(const struct rpc_server_options *opts, const char *host,
                              uint16_t port)
{
    char why[512] = ""; /* host (128) and the fix of listen_fix */
    int rc = ring_server_probe(host, port, why, sizeof(why));
    if (rc < 0) {
        (void)fprintf(stderr, "ringcas serve: %s\n", why);
        return rc;
    }
    rc = make_dir(opts->dir);
    if (rc < 0) {
        (void)fprintf(stderr, "ringcas serve: cannot use data folder %s: %s%s\n", opts->dir,
                      base_err_str(rc),
                      rc == -EACCES || rc == -EROFS || rc == -EPERM
                          ? " (the server writes its segments there: give the user it runs as "
                            "write access, or choose another --dir)"
                          : "");
    }
    return rc;
}

/*
 * Prints the engine's refusal <why> of the sizes in <opts>. A --max-size under 1 MiB is a
 * unit left out (`--max-size 10` for 10 GiB), which "is below 4 segments of 1048576 bytes"
 * did not say: a second line does.
 */
static void store_options_refused(const struct rpc_server_options *opts, const char *why)
{
    (void)fprintf(stderr, "ringcas serve: %s\n", why);
    if (opts->max_size > 0 && opts->max_size < (1ULL << 20)) {
        unsigned long long n = opts->max_size;
        (void)fprintf(stderr,
                      "ringcas serve: --max-size %llu is %llu bytes: a size without a unit is "
                      "bytes; write --max-size %lluG for %llu GiB\n",
                      n, n, n, n);
    }
}

/* A per-core memory bound of at least <min> bytes (a whole number of MiB), else named. */
static int check_memory(const char *flag, uint64_t value, uint64_t min)
{
    if (value >= min) return 0;
    (void)fprintf(stderr, "ringcas serve: --%s: at least %lluMiB\n", flag,
                  (unsigned long long)(min >> 20));
    return -EINVAL;
}

/* The per-core bounds the operator sets: uploads, and the memory of reads, zstd, messages. */
static int check_core_limits(const struct rpc_server_options *opts)
{
    if (opts->max_uploads == 0 || opts->max_uploads > RPC_MAX_UPLOADS_MAX) {
        (void)fprintf(stderr, "ringcas serve: --max-uploads: 1 to %u\n", RPC_MAX_UPLOADS_MAX);
        return -EINVAL;
    }
    if (check_memory("read-memory", opts->read_memory, RPC_ENGINE_MEMORY_MIN) < 0 ||
        check_memory("zstd-memory", opts->zstd_memory, RPC_ENGINE_MEMORY_MIN) < 0 ||
        check_memory("message-memory", opts->message_memory, RPC_MESSAGE_MEMORY_MIN) < 0) {
        return -EINVAL;
    }
    /* Checked here, not only by the engine: the engine would name the value it was handed. */
    if (opts->read_ahead == 0 || opts->read_ahead > BLOB_READ_AHEAD_MAX) {
        (void)fprintf(stderr, "ringcas serve: --read-ahead: 1 to %u\n", BLOB_READ_AHEAD_MAX);
        return -EINVAL;
    }
    return 0;
}

static int check_options(const struct rpc_server_options *opts, char *host, size_t host_size,
                         uint16_t *port)
{
    if (check_core_limits(opts) < 0) return -EINVAL;
    /* Checked here on the flag's own value, not only by the engine: the (int) the engine is
     * handed wraps (2^32 + 1 would arrive as level 1), and its message would not name the
     * flag. */
    if (opts->zstd_level < BLOB_ZSTD_LEVEL_MIN || opts->zstd_level > BLOB_ZSTD_LEVEL_MAX) {
        (void)fprintf(stderr, "ringcas serve: --zstd-level: %d to %d\n", BLOB_ZSTD_LEVEL_MIN,
                      BLOB_ZSTD_LEVEL_MAX);
        return -EINVAL;
    }
    if (opts->dir[0] == '\0') {
        /* "--dir $DATA" with DATA unset, or an empty RINGCAS_DIR in a manifest: it failed as
         * "cannot use data folder : not found". */
        (void)fprintf(stderr, "ringcas serve: --dir is empty: name the data folder, e.g. "
                              "--dir ./ringcas-data\n");
        return -EINVAL;
    }
    if (strstr(opts->listen, "://")) {
        /* A client's URL copied into the flag (http://127.0.0.1:8980) was refused as a host
         * name, "names are not resolved", which sent the user to look at DNS. */
        (void)fprintf(stderr,
                      "ringcas serve: --listen %s: expected HOST:PORT without a scheme "
                      "(http://, grpc://: the port serves both), e.g. 127.0.0.1:8980\n",
                      opts->listen);
        return -EINVAL;
    }
    if (split_listen(opts->listen, host, host_size, port) < 0) {
        (void)fprintf(stderr,
                      "ringcas serve: --listen %s: expected HOST:PORT, e.g. 127.0.0.1:8980\n",
                      opts->listen);
        return -EINVAL;
    }
    if (!ring_listen_host_is_valid(host)) {
        /* Before, a name failed at the bind as "cannot listen on ...: invalid argument", exit
         * status 1, which named neither the flag's fault nor the forms it takes. */
        (void)fprintf(stderr,
                      "ringcas serve: --listen %s: HOST must be an IP address (0.0.0.0:8980, "
                      "[::]:8980) or localhost; names are not resolved\n",
                      opts->listen);
        return -EINVAL;
    }
    if (strcmp(opts->sync, "group") != 0 && strcmp(opts->sync, "always") != 0 &&
        strcmp(opts->sync, "none") != 0) {
        (void)fprintf(stderr, "ringcas serve: --sync %s: expected group, always or none\n",
                      opts->sync);
        return -EINVAL;
    }
    uint64_t n = opts->recv_buffers;
    if (n == 0 || n > 32768 || (n & (n - 1)) != 0) {
        (void)fprintf(stderr,
                      "ringcas serve: --recv-buffers %llu: expected a power of two up to 32768\n",
                      (unsigned long long)n);
        return -EINVAL;
    }
    if (opts->recv_buffer_size < 4096 || opts->recv_buffer_size > (1U << 24)) {
        (void)fprintf(stderr, "ringcas serve: --recv-buffer-size: expected 4KiB to 16MiB\n");
        return -EINVAL;
    }
    if (opts->read_timeout_ms > UINT32_MAX || opts->write_timeout_ms > UINT32_MAX) {
        (void)fprintf(stderr, "ringcas serve: --read-timeout/--write-timeout: at most 49 days\n");
        return -EINVAL;
    }
    if (opts->max_connections == 0 || opts->max_connections > RPC_CONNS_MAX) {
        (void)fprintf(stderr, "ringcas serve: --max-connections: 1 to %u\n", RPC_CONNS_MAX);
        return -EINVAL;
    }
    if (opts->chunk_size > UINT32_MAX) { /* the engine's field: it checks the rest */
        (void)fprintf(stderr,
                      "ringcas serve: --chunk-size %llu: expected a power of two, 4KiB "
                      "to 1MiB\n",
                      (unsigned long long)opts->chunk_size);
        return -EINVAL;
    }
    if (opts->cores > 1024) {
        (void)fprintf(stderr, "ringcas serve: --cores %llu: at most 1024\n",
                      (unsigned long long)opts->cores);
        return -EINVAL;
    }
    return 0;
}

/*
 * --cores as given. More cores than CPUs to run on is allowed (a test may want it), but each
 * core is a thread that polls its ring: the extra ones only take turns on the same CPUs.
 */
static uint32_t given_cores(uint64_t cores)
{
    uint32_t allowed = ring_cpus_allowed();
    if (cores > allowed) {
        LOG_WARN("--cores %llu is more than the %u CPUs this process may run on: the cores will "
                 "take turns on them (0 picks one per CPU)",
                 (unsigned long long)cores, allowed);
    }
    return (uint32_t)cores;
}

/*
 * Every connection and every segment file takes a descriptor, and the soft open-files limit
 * is often 1024 (systemd's default) under a far higher hard one: a store of 1 TiB in 256 MiB
 * segments alone needs 4096, and past the limit new segments cannot be opened and every
 * upload fails. The soft limit is raised to the hard one, as Go's runtime and nginx's
 * worker_rlimit_nofile do.
 */
#define NOFILE_LOW 4096

/* The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open): an unlimited hard limit means this. */
static rlim_t nr_open(void)
{
    FILE *f = fopen("/proc/sys/fs/nr_open", "re");
    char line[32] = "";
    uint64_t v = 0;
    if (f) {
        if (!fgets(line, sizeof(line), f)) line[0] = '\0';
        (void)fclose(f);
    }
    line[strcspn(line, "\n")] = '\0';
    if (base_parse_u64(line, &v) < 0) v = 0;
    return v > 0 ? (rlim_t)v : (rlim_t)1 << 20;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return;
    rlim_t ceiling = nr_open();
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > ceiling ? ceiling : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            LOG_WARN("cannot raise the open files limit from %llu: %s", (unsigned long long)was,
                     base_err_str(-errno));
            rl.rlim_cur = was;
        } else {
            LOG_DEBUG("open files limit raised from %llu to %llu", (unsigned long long)was,
                      (unsigned long long)rl.rlim_cur);
        }
    }
    if (rl.rlim_cur < NOFILE_LOW) {
        LOG_WARN("open files limit is %llu: each connection and each segment takes one; raise "
                 "it (`ulimit -n`, systemd LimitNOFILE) to serve many clients or a large store",
                 (unsigned long long)rl.rlim_cur);
    }
}

/*
 * The main thread's wait for SIGTERM/SIGINT/SIGHUP, and its housekeeping meanwhile: SIGUSR1
 * opens the access log again (after logrotate renamed it), and every few
 * seconds it gives the memory the C library holds free back to the system once enough is
 * (docs/operations.md "Memory"), so a burst's buffers do not stay resident for the life of
 * the process.
 */
static int wait_signals(struct ring_server *srv, struct rpc_access_log *access_log)
{
    struct base_heap_trim trim = { 0 };
    for (;;) {
        int sig = ring_server_wait_signals(srv, RPC_HEAP_TRIM_PERIOD_MS);
        if (sig == SIGUSR1) {
            /* logrotate's postrotate, as for nginx: the renamed file is closed once the
             * lines already taken are in it. */
            if (access_log) {
                rpc_access_log_reopen(access_log);
            } else {
                LOG_INFO("SIGUSR1: no --access-log to open again");
            }
            continue;
        }
        if (sig != 0) return sig;
        if (base_heap_trim(&trim, RPC_HEAP_TRIM_MIN)) {
            LOG_DEBUG("returned free heap memory to the system (%zu MiB free in the arenas)",
                      trim.free_after >> 20);
        }
    }
}

/* The name of a signal ring_server_wait_signals returns, for the drain's log line. */
static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGHUP:
        return "SIGHUP";
    default:
        return "signal";
    }
}

/*
 * A signal held back while the server started: a port's wait and the store's recovery take
 * seconds, and Kubernetes may stop a pod that is still starting (the signal's default action
 * ended the process there, status 143 and no line). Stops before any listener opens, so no
 * client meets a port that accepts and then closes, and closes the store as after a drain.
 * True when it did.
 */
static bool stopped_before_serving(struct rpc_config *cfg)
{
    int sig = ring_server_take_signal();
    if (sig == 0) return false;
    LOG_INFO("%s (signal %d) during start-up: stopping before serving", signal_name(sig), sig);
    free_cores(cfg);
    blob_store_close(cfg->store);
    LOG_INFO("stopped");
    return true;
}

int rpc_server_run(const struct rpc_server_options *opts)
{
    enum base_log_level level;
    if (base_log_parse_level(opts->log_level, &level) < 0) {
        (void)fprintf(stderr,
                      "ringcas serve: --log-level %s: expected error, warn, info or debug\n",
                      opts->log_level);
        return 2;
    }
    base_log_set_level(level);
    char host[128];
    struct ring_server_options so;
    ring_server_options_default(&so);
    /* A flag value refused is a usage error, as one the parser refuses (docs/cli.md). */
    if (check_options(opts, host, sizeof(host), &so.port) < 0) return 2;
    uint32_t cores = opts->cores ? given_cores(opts->cores) : ring_cpus_cores();
    char why[512] = "";
    struct blob_store_options bo;
    /* Sizes that do not fit together are refused before the folder is made. The segment size
     * follows the folder's file system once it exists (store_options): below, the check is
     * made again, and a smaller file system only makes smaller segments, which fit more
     * easily. */
    if (store_options(opts, cores, &bo) < 0) return 1;
    if (blob_store_options_check(&bo, why, sizeof(why)) < 0) {
        store_options_refused(opts, why);
        return 2; /* a usage error */
    }
    raise_nofile();
    ring_server_block_signals(); /* until stopped_before_serving or wait_signals */
    if (claim_port_and_dir(opts, host, so.port) < 0) return 1;
    so.host = host;
    so.cores = (uint32_t)opts->cores;
    so.drain_timeout_ms = opts->drain_timeout_ms;
    so.core.recv_buf_count = (uint32_t)opts->recv_buffers;
    so.core.recv_buf_size = (uint32_t)opts->recv_buffer_size;
    struct rpc_config cfg = {
        .opts = *opts,
        .read_timeout_ms = (uint32_t)opts->read_timeout_ms,
        .write_timeout_ms = (uint32_t)opts->write_timeout_ms,
        .bs_parked_idle_ms = RPC_BS_PARKED_IDLE_MS,
    };
    cfg.core_count = cores;
    so.cores = cfg.core_count;
    cfg.cores = calloc(cfg.core_count, sizeof(struct rpc_core *));
    if (!cfg.cores) {
        (void)fprintf(stderr, "ringcas serve: out of memory\n");
        return 1;
    }
    struct rpc_metrics_source sources[8];
    if (config_extras(&cfg, sources, ARRAY_LEN(sources)) < 0) {
        free_cores(&cfg);
        return 1;
    }
    if (store_options(opts, cfg.core_count, &bo) < 0) {
        free_cores(&cfg);
        return 1;
    }
    if (blob_store_options_check(&bo, why, sizeof(why)) < 0) {
        store_options_refused(opts, why);
        free_cores(&cfg);
        return 2; /* sizes that do not fit together: a usage error */
    }
    int rc = blob_store_open(&bo, &cfg.store, why, sizeof(why));
    if (rc < 0) {
        (void)fprintf(stderr, "ringcas serve: cannot open the store: %s\n",
                      why[0] ? why : base_err_str(rc));
        free_cores(&cfg);
        return 1;
    }
    if (stopped_before_serving(&cfg)) return 0;
    so.hooks.core_init = core_init;
    so.hooks.core_quiesce = core_quiesce;
    so.hooks.core_deinit = core_deinit;
    so.hooks.on_accept = rpc_conn_accept;
    so.hooks.arg = &cfg;
    struct ring_server *srv;
    rc = ring_server_start(&so, &srv, why, sizeof(why));
    if (rc < 0) {
        (void)fprintf(stderr, "ringcas serve: %s\n", why[0] ? why : base_err_str(rc));
        free_cores(&cfg);
        blob_store_close(cfg.store);
        return 1;
    }
    LOG_INFO("serving on %s:%u with %u cores, data in %s", host, ring_server_port(srv),
             ring_server_core_count(srv), opts->dir);
    printf("ringcas listening on %s:%u\n", host, ring_server_port(srv));
    (void)fflush(stdout);
    int sig = wait_signals(srv, cfg.access_log);
    LOG_INFO("%s (signal %d): draining (up to %llu ms)", signal_name(sig), sig,
             (unsigned long long)opts->drain_timeout_ms);
    rc = ring_server_stop(srv);
    free_cores(&cfg);
    blob_store_close(cfg.store);
    if (rc < 0) {
        LOG_ERROR("stopped with errors: %s", base_err_str(rc));
        return 1;
    }
    LOG_INFO("stopped");
    return 0;
}
