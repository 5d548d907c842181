/*
 * ringcas: argument parsing and subcommand dispatch only. Each subcommand's flags are listed
 * here with their environment twins; the work is done by the module that owns it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/flags.h"
#include "base/log.h"
#include "blob/fsck.h"
#include "client/bench.h"
#include "client/cli.h"
#include "rpc/server.h"

#ifndef RINGCAS_VERSION
#    define RINGCAS_VERSION "0.0.0"
#endif

static void usage(FILE *out)
{
    (void)fprintf(
        out, "usage: ringcas COMMAND [FLAGS]\n"
             "\n"
             "A storage node for build-cache blobs: REAPI (gRPC) and an HTTP/1.1 cache API on\n"
             "one port, one io_uring per core.\n"
             "\n"
             "commands:\n"
             "  serve        run the node (default 127.0.0.1:8980, data in ./ringcas-data)\n"
             "  put FILE...  upload files (- is stdin) to a CAS; prints hash/size for each\n"
             "  get HASH/SIZE [-o FILE]\n"
             "               download a blob (to stdout by default), verified\n"
             "  stat         a server's capabilities and counters\n"
             "  fsck         check every record and blob of a data folder (offline)\n"
             "  bench        the load generator: REAPI and HTTP workloads, a build mix\n"
             "  --help       this text; `ringcas COMMAND --help` lists a command's flags\n"
             "  --version    print the version\n"
             "\n"
             "Every flag but --help has an environment twin: --max-size is RINGCAS_MAX_SIZE.\n");
}

/* Room for a command's flags and --help; bench has the most (26). */
#define CMD_FLAGS_MAX 40

/* Prints what a command's help shows after its flag list. */
typedef void cmd_help_fn(FILE *out);

/* What one subcommand states: the rest (--help, usage errors, the help text) is cmd_parse's. */
struct cmd_spec {
    const char *prog;              /* "ringcas serve": starts each usage error line */
    const char *usage;             /* the help's text before the flag list, "flags:\n" included */
    const struct base_flag *flags; /* the command's own flags; may be NULL when <flag_count> is 0 */
    size_t flag_count;             /* entries in <flags>, below CMD_FLAGS_MAX */
    struct base_flags_rest *rest;  /* receives the arguments that are not flags; NULL: none */
    cmd_help_fn *help_end;         /* prints what follows the flag list; NULL: nothing */
    const char *stray_flag;        /* base_flags_err's: "dir" for a command given a folder */
};

/* A flag's value before parsing: what its help line shows as the default. */
union cmd_default {
    const char *str; /* BASE_FLAG_STRING */
    uint64_t u64;    /* BASE_FLAG_U64, _SIZE, _DURATION_MS */
    bool on;         /* BASE_FLAG_BOOL */
};

/* Copies <f> into <out> with its value pointing at a copy of the value in <d>. */
static void cmd_default_keep(const struct base_flag *f, union cmd_default *d, struct base_flag *out)
{
    switch (f->type) {
    case BASE_FLAG_STRING:
        d->str = *(const char *const *)f->value;
        break;
    case BASE_FLAG_BOOL:
        d->on = *(const bool *)f->value;
        break;
    case BASE_FLAG_U64:
    case BASE_FLAG_SIZE:
    case BASE_FLAG_DURATION_MS:
        d->u64 = *(const uint64_t *)f->value;
        break;
    }
    *out = *f;
    out->value = d;
}

/*
 * A command's exit <status>, after it ran: a usage error it found in the values (2) names the
 * flag, so the variables that set flags are named too (base_flags_print_env_in_effect).
 */
static int cmd_ran(const struct cmd_spec *s, int argc, char **argv, int status)
{
    const struct base_flags_err err = { .out = stderr, .prog = s->prog };
    if (status == 2) base_flags_print_env_in_effect(s->flags, s->flag_count, argc, argv, &err);
    return status;
}

/* cmd_parse's answer when the command should go on and run. */
#define CMD_RUN (-1)

/*
 * Parses <argc>/<argv> against <s>'s flags and --help (always last). Returns CMD_RUN, or the
 * exit status the command ends with: 2 after a usage error (named on stderr), 0 after the help
 * is printed on stdout.
 */
static int cmd_parse(const struct cmd_spec *s, int argc, char **argv)
{
    ASSERT(s->flag_count < CMD_FLAGS_MAX);
    bool help = false;
    struct base_flag flags[CMD_FLAGS_MAX];
    size_t n = 0;
    /* Bounded by CMD_FLAGS_MAX; a loop, not memcpy, because <flags> may be NULL. */
    for (; n < s->flag_count; n++) {
        flags[n] = s->flags[n];
    }
    flags[n++] = (struct base_flag){ "help", BASE_FLAG_BOOL, &help, "show this help", "" };
    /* The help shows the defaults, not what the environment or argv set: keep them. */
    union cmd_default defaults[CMD_FLAGS_MAX];
    struct base_flag shown[CMD_FLAGS_MAX];
    for (size_t i = 0; i < n; i++) {
        cmd_default_keep(&flags[i], &defaults[i], &shown[i]);
    }
    const struct base_flags_err err = { .out = stderr,
                                        .prog = s->prog,
                                        .stray_flag = s->stray_flag };
    if (base_flags_parse(flags, n, argc, argv, s->rest, &err) < 0) return 2;
    if (!help) return CMD_RUN;
    (void)fputs(s->usage, stdout);
    base_flags_print_help(shown, n, stdout);
    if (s->help_end) s->help_end(stdout);
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    struct rpc_server_options o;
    rpc_server_options_default(&o);
    const struct base_flag flags[] = {
        { "listen", BASE_FLAG_STRING, &o.listen, "address to serve on", "HOST:PORT" },
        { "dir", BASE_FLAG_STRING, &o.dir, "data folder", "DIR" },
        { "cores", BASE_FLAG_U64, &o.cores,
          "threads, one per core; 0: one per CPU, fewer under a cgroup CPU limit", NULL },
        { "max-size", BASE_FLAG_SIZE, &o.max_size, "size budget of the store", NULL },
        { "sync", BASE_FLAG_STRING, &o.sync, "when writes reach the disk", "group|always|none" },
        { "read-timeout", BASE_FLAG_DURATION_MS, &o.read_timeout_ms,
          "close a connection that sends nothing for this long", NULL },
        { "write-timeout", BASE_FLAG_DURATION_MS, &o.write_timeout_ms,
          "close a connection whose send makes no progress for this long", NULL },
        { "drain-timeout", BASE_FLAG_DURATION_MS, &o.drain_timeout_ms,
          "on SIGTERM, how long requests may take to finish", NULL },
        { "recv-buffers", BASE_FLAG_U64, &o.recv_buffers,
          "receive buffers per core, a power of two", NULL },
        { "recv-buffer-size", BASE_FLAG_SIZE, &o.recv_buffer_size, "bytes per receive buffer",
          NULL },
        { "log-level", BASE_FLAG_STRING, &o.log_level, "error, warn, info or debug", "LEVEL" },
        { "segment-size", BASE_FLAG_SIZE, &o.segment_size,
          "segment file size; 0: max-size / 8 per core, at most 256MiB", NULL },
        { "chunk-size", BASE_FLAG_SIZE, &o.chunk_size,
          "logical chunk of stored blobs, a power of two, 4KiB..1MiB", NULL },
        { "zstd-level", BASE_FLAG_U64, &o.zstd_level, "compression level of stored chunks, 1..22",
          NULL },
        { "read-ahead", BASE_FLAG_U64, &o.read_ahead,
          "chunks a large read keeps read ahead or in a send, 1..8", NULL },
        { "direct-io", BASE_FLAG_BOOL, &o.direct_io, "O_DIRECT segment writes", "" },
        { "map-reads", BASE_FLAG_BOOL, &o.map_reads,
          "read records already in the page cache in place, through a mapping", "" },
        { "ac-check", BASE_FLAG_BOOL, &o.ac_check,
          "answer an action result only when every output it names is in this server's CAS; "
          "off for a shard behind a frontend that checks completeness itself",
          "" },
        { "message-memory", BASE_FLAG_SIZE, &o.message_memory,
          "per core, memory gRPC messages may hold (requests being received, answers being "
          "sent); past it calls are refused, RESOURCE_EXHAUSTED",
          NULL },
        { "max-connections", BASE_FLAG_U64, &o.max_connections,
          "per core, open connections; past it 16 more answer only /healthz, /readyz and "
          "/metrics, then new ones are closed at once (at most 4096)",
          NULL },
        { "max-uploads", BASE_FLAG_U64, &o.max_uploads,
          "per core, uploads open at once, each holding a chunk buffer; past it uploads are "
          "refused (HTTP 503, RESOURCE_EXHAUSTED)",
          NULL },
        { "read-memory", BASE_FLAG_SIZE, &o.read_memory,
          "per core, memory downloads' chunk buffers may hold; past it reads wait", NULL },
        { "zstd-memory", BASE_FLAG_SIZE, &o.zstd_memory,
          "per core, memory zstd contexts may hold (compressed uploads' windows); past it "
          "uploads are refused (HTTP 503, RESOURCE_EXHAUSTED)",
          NULL },
        { "access-log", BASE_FLAG_STRING, &o.access_log,
          "append a JSON line per request to this file (-: standard output; empty: none); "
          "SIGUSR1 opens it again",
          "FILE" },
    };
    const struct cmd_spec spec = { .prog = "ringcas serve",
                                   .usage = "usage: ringcas serve [FLAGS]\n\nflags:\n",
                                   .flags = flags,
                                   .flag_count = ARRAY_LEN(flags),
                                   .stray_flag = "dir" };
    int status = cmd_parse(&spec, argc, argv);
    return status == CMD_RUN ? cmd_ran(&spec, argc, argv, rpc_server_run(&o)) : status;
}

/* Writes the flags put, get and stat share into <f> (room for 4); returns how many. */
static size_t client_flags(struct base_flag *f, struct client_cli_options *o)
{
    f[0] =
        (struct base_flag){ "server", BASE_FLAG_STRING, &o->server, "server address", "HOST:PORT" };
    f[1] = (struct base_flag){ "instance", BASE_FLAG_STRING, &o->instance, "REAPI instance name",
                               "NAME" };
    f[2] = (struct base_flag){ "timeout", BASE_FLAG_DURATION_MS, &o->timeout_ms,
                               "fail when a connect, read or write makes no progress for this "
                               "long",
                               NULL };
    f[3] =
        (struct base_flag){ "deadline", BASE_FLAG_DURATION_MS, &o->deadline_ms,
                            "fail a call that takes longer than this in all; 0: no limit", NULL };
    return 4;
}

static void client_help_end(FILE *out)
{
    (void)fputs("\nExit status: 0 ok, 1 failure, 2 usage, 3 not found, 4 timed out, 5 server\n"
                "unavailable, 6 data does not match its digest (docs/cli.md).\n",
                out);
}

/* cmd_parse for put, get and stat: the flags they share into <o>, then <s>'s, then --help. */
static int client_cmd_parse(const struct cmd_spec *s, struct client_cli_options *o, int argc,
                            char **argv)
{
    struct base_flag flags[CMD_FLAGS_MAX];
    size_t n = client_flags(flags, o);
    ASSERT(n + s->flag_count < CMD_FLAGS_MAX);
    /* Bounded by the assert above; a loop, not memcpy, because <s->flags> may be NULL. */
    for (size_t i = 0; i < s->flag_count; i++) {
        flags[n++] = s->flags[i];
    }
    struct cmd_spec all = *s;
    all.flags = flags;
    all.flag_count = n;
    all.help_end = client_help_end;
    return cmd_parse(&all, argc, argv);
}

static int cmd_put(int argc, char **argv)
{
    struct client_cli_options o;
    client_cli_options_default(&o);
    const struct base_flag flags[] = {
        { "compress", BASE_FLAG_BOOL, &o.compress, "upload zstd-compressed (compressed-blobs)",
          "" },
        { "force", BASE_FLAG_BOOL, &o.force, "upload even when the server has the blob", "" },
        { "batch-max", BASE_FLAG_SIZE, &o.batch_max,
          "files up to this size go in BatchUpdateBlobs; 0: stream every file", NULL },
    };
    char **files = calloc((size_t)argc + 1, sizeof(*files));
    if (!files) return 1;
    struct base_flags_rest rest = { .args = files, .size = (size_t)argc, .count = 0 };
    const struct cmd_spec spec = { .prog = "ringcas put",
                                   .usage = "usage: ringcas put [FLAGS] FILE...\n\n"
                                            "A FILE of - is standard input, copied to an unnamed "
                                            "file in $TMPDIR\n(default /tmp) first; give it "
                                            "once.\n\nflags:\n",
                                   .flags = flags,
                                   .flag_count = ARRAY_LEN(flags),
                                   .rest = &rest };
    int status = client_cmd_parse(&spec, &o, argc, argv);
    if (status == CMD_RUN) status = client_cli_put(&o, files, rest.count);
    free(files);
    return status;
}

/* Accepts -o FILE as --output FILE: rewrites argv in place (same count, static strings). */
static void short_output_flag(int argc, char **argv)
{
    static char output_flag[] = "--output";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) return;
        if (strcmp(argv[i], "-o") == 0) argv[i] = output_flag;
    }
}

static int cmd_get(int argc, char **argv)
{
    struct client_cli_options o;
    client_cli_options_default(&o);
    const struct base_flag flags[] = {
        { "compress", BASE_FLAG_BOOL, &o.compress, "download zstd-compressed (compressed-blobs)",
          "" },
        { "output", BASE_FLAG_STRING, &o.output, "write to FILE instead of stdout (also -o)",
          "FILE" },
    };
    short_output_flag(argc, argv);
    char *args[2];
    struct base_flags_rest rest = { .args = args, .size = 2, .count = 0 };
    const struct cmd_spec spec = {
        .prog = "ringcas get",
        .usage = "usage: ringcas get [FLAGS] HASH/SIZE [-o FILE]\n\nflags:\n",
        .flags = flags,
        .flag_count = ARRAY_LEN(flags),
        .rest = &rest,
    };
    int status = client_cmd_parse(&spec, &o, argc, argv);
    if (status != CMD_RUN) return status;
    if (rest.count != 1) {
        (void)fprintf(stderr, "ringcas get: expected one HASH/SIZE (see ringcas get --help)\n");
        return 2;
    }
    return client_cli_get(&o, args[0]);
}

static int cmd_stat(int argc, char **argv)
{
    struct client_cli_options o;
    client_cli_options_default(&o);
    /* No flags but the shared ones, and no arguments. */
    const struct cmd_spec spec = { .prog = "ringcas stat",
                                   .usage = "usage: ringcas stat [FLAGS]\n\nflags:\n" };
    int status = client_cmd_parse(&spec, &o, argc, argv);
    return status == CMD_RUN ? client_cli_stat(&o) : status;
}

/* The flags of ringcas bench but --help, written into <f> (room for 40); returns how many. */
static size_t bench_flags(struct base_flag *f, struct client_bench_options *o)
{
    size_t n = 0;
    f[n++] =
        (struct base_flag){ "server", BASE_FLAG_STRING, &o->server, "server address", "HOST:PORT" };
    f[n++] = (struct base_flag){ "workload", BASE_FLAG_STRING, &o->workload,
                                 "what to send (see workloads below)", "NAME" };
    f[n++] = (struct base_flag){ "instance", BASE_FLAG_STRING, &o->instance, "REAPI instance name",
                                 "NAME" };
    f[n++] = (struct base_flag){ "threads", BASE_FLAG_U64, &o->threads,
                                 "worker threads, one io_uring ring each", NULL };
    f[n++] = (struct base_flag){ "conns", BASE_FLAG_U64, &o->conns,
                                 "HTTP/2 connections per thread (HTTP/1.1: one per slot)", NULL };
    f[n++] = (struct base_flag){ "concurrency", BASE_FLAG_U64, &o->concurrency,
                                 "requests (or actions) in flight per thread", NULL };
    f[n++] = (struct base_flag){ "duration", BASE_FLAG_DURATION_MS, &o->duration_ms,
                                 "measured window", NULL };
    f[n++] = (struct base_flag){ "warmup", BASE_FLAG_DURATION_MS, &o->warmup_ms,
                                 "load before the window, not counted", NULL };
    f[n++] = (struct base_flag){ "rate", BASE_FLAG_U64, &o->rate,
                                 "open loop: arrivals per second, all threads together; latency "
                                 "counts from each arrival's due time; 0: closed loop",
                                 NULL };
    f[n++] = (struct base_flag){ "size", BASE_FLAG_SIZE, &o->size, "blob size", NULL };
    f[n++] = (struct base_flag){ "blobs", BASE_FLAG_U64, &o->blobs,
                                 "distinct blobs seeded for the read workloads", NULL };
    f[n++] = (struct base_flag){ "batch", BASE_FLAG_U64, &o->batch,
                                 "blobs per batch call, digests per FindMissingBlobs", NULL };
    f[n++] = (struct base_flag){ "data", BASE_FLAG_STRING, &o->data,
                                 "blob bytes: random (incompressible) or build (files of --corpus)",
                                 "random|build" };
    f[n++] = (struct base_flag){ "corpus", BASE_FLAG_STRING, &o->corpus,
                                 "folders --data build reads, colon-separated", "DIRS" };
    f[n++] = (struct base_flag){ "compress", BASE_FLAG_BOOL, &o->compress,
                                 "zstd transfers: compressed-blobs, batch compressors, "
                                 "Accept-Encoding: zstd",
                                 "" };
    f[n++] = (struct base_flag){ "verify", BASE_FLAG_BOOL, &o->verify,
                                 "hash every blob read (ByteStream.Read, BatchReadBlobs, http-get "
                                 "of seeded blobs; the size is always checked)",
                                 "" };
    f[n++] = (struct base_flag){ "path", BASE_FLAG_STRING, &o->path,
                                 "http-get: GET this path; http-put: PUT under it (other servers)",
                                 "PATH" };
    f[n++] = (struct base_flag){ "timeout", BASE_FLAG_DURATION_MS, &o->timeout_ms,
                                 "fail when a connect, read or write makes no progress this "
                                 "long; open loop: how long the end awaits the requests under way",
                                 NULL };
    f[n++] = (struct base_flag){ "deadline", BASE_FLAG_DURATION_MS, &o->deadline_ms,
                                 "gRPC: each call's deadline; 0: none", NULL };
    f[n++] = (struct base_flag){ "seed", BASE_FLAG_U64, &o->seed,
                                 "random seed for sizes and choices; 0: from the clock", NULL };
    f[n++] = (struct base_flag){ "mix-hit", BASE_FLAG_U64, &o->mix_hit,
                                 "mix: action-cache hits, percent", NULL };
    f[n++] = (struct base_flag){ "mix-actions", BASE_FLAG_U64, &o->mix_actions,
                                 "mix, ac-get: actions of earlier builds seeded", NULL };
    f[n++] = (struct base_flag){ "mix-max-size", BASE_FLAG_SIZE, &o->mix_max_size,
                                 "mix, ac-get: largest blob drawn", NULL };
    f[n++] = (struct base_flag){ "mix-batch-max", BASE_FLAG_SIZE, &o->mix_batch_max,
                                 "mix: blobs up to this go in batch calls", NULL };
    f[n++] = (struct base_flag){ "json", BASE_FLAG_BOOL, &o->json, "print the report as JSON", "" };
    f[n++] = (struct base_flag){ "histogram", BASE_FLAG_BOOL, &o->histogram,
                                 "text report: latency histograms", "" };
    return n;
}

static void bench_help_end(FILE *out)
{
    (void)fputs("\n", out);
    client_bench_print_workloads(out);
    (void)fputs("\nExit status: 0 every request succeeded, 1 some failed, seeding failed or none\n"
                "finished in the measured window, 2 usage, 5 server unavailable.\n",
                out);
}

static int cmd_bench(int argc, char **argv)
{
    struct client_bench_options o;
    client_bench_options_default(&o);
    struct base_flag flags[CMD_FLAGS_MAX];
    const struct cmd_spec spec = {
        .prog = "ringcas bench",
        .usage = "usage: ringcas bench [FLAGS]\n\n"
                 "Load generator: one io_uring ring per thread, closed or open loop; seeds what\n"
                 "it reads; reports throughput, latency p50/p99/p99.9/max with a histogram per\n"
                 "request kind, and errors by status (docs/bench.md).\n\nflags:\n",
        .flags = flags,
        .flag_count = bench_flags(flags, &o),
        .help_end = bench_help_end,
    };
    int status = cmd_parse(&spec, argc, argv);
    return status == CMD_RUN ? cmd_ran(&spec, argc, argv, client_bench_main(&o, stdout, stderr))
                             : status;
}

static int cmd_fsck(int argc, char **argv)
{
    const char *dir = "./ringcas-data";
    const struct base_flag flags[] = {
        { "dir", BASE_FLAG_STRING, &dir, "data folder to check", "DIR" },
    };
    const struct cmd_spec spec = {
        .prog = "ringcas fsck",
        .usage = "usage: ringcas fsck --dir DIR\n\nChecks every record's checksums and every "
                 "blob's digest; exits 1 on corruption, 2 when it cannot run.\n\nflags:\n",
        .flags = flags,
        .flag_count = ARRAY_LEN(flags),
        .stray_flag = "dir",
    };
    int status = cmd_parse(&spec, argc, argv);
    if (status != CMD_RUN) return status;
    if (dir[0] == '\0') {
        /* As serve's: "fsck : cannot open the folder: not found" named no flag. */
        (void)fprintf(stderr, "ringcas fsck: --dir is empty: name the data folder to check\n");
        return cmd_ran(&spec, argc, argv, 2);
    }
    return blob_fsck_main(dir, stdout);
}

int main(int argc, char **argv)
{
    /* Before anything opens a file or a socket that could take a standard descriptor. */
    if (base_log_std_fds() < 0) return 1;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("ringcas %s\n", RINGCAS_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "put") == 0) return cmd_put(argc - 2, argv + 2);
    if (strcmp(cmd, "get") == 0) return cmd_get(argc - 2, argv + 2);
    if (strcmp(cmd, "stat") == 0) return cmd_stat(argc - 2, argv + 2);
    if (strcmp(cmd, "fsck") == 0) return cmd_fsck(argc - 2, argv + 2);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 2, argv + 2);
    (void)fprintf(stderr, "ringcas: unknown command '%s' (see ringcas --help)\n", cmd);
    return 2;
}
