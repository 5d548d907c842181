/*
 * ringcas put, get and stat: argument checks, files, output, and one line per error, on top
 * of the synchronous helpers (client/sync.h). Exit statuses in client/cli.h and docs/cli.md.
 *
 * Sections: common, put, get, stat.
 */
#include "client/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "base/err.h"
#include "client/cas.h"
#include "client/resource.h"
#include "client/sync.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "proto/status.h"

/* ---- common ---- */

/* Files up to --batch-max (at most PUT_BATCH_BLOB_MAX) go in BatchUpdateBlobs requests of up
 * to PUT_BATCH_BYTES, well under the 4 MiB servers usually allow. */
#define PUT_BATCH_BLOB_MAX (256u << 10)
#define PUT_BATCH_BYTES    (1u << 20)
#define PUT_BATCH_COUNT    1000u

void client_cli_options_default(struct client_cli_options *o)
{
    memset(o, 0, sizeof(*o));
    o->server = "127.0.0.1:8980";
    o->instance = "";
    o->timeout_ms = 30000;
    o->deadline_ms = 0;
    o->batch_max = PUT_BATCH_BLOB_MAX;
}

int client_cli_exit_code(int err)
{
    switch (err) {
    case 0:
        return CLIENT_EXIT_OK;
    case -ENOENT:
        return CLIENT_EXIT_NOT_FOUND;
    case -ETIMEDOUT:
        return CLIENT_EXIT_TIMEOUT;
    case -ECONNREFUSED:
    case -EHOSTUNREACH:
    case -ENETUNREACH:
    case -ECONNRESET:
        return CLIENT_EXIT_UNAVAILABLE;
    case -EBADMSG:
    case -EILSEQ:
        return CLIENT_EXIT_INTEGRITY;
    default:
        return CLIENT_EXIT_FAILURE;
    }
}

/* Prints "ringcas CMD: WHAT: message [STATUS]" for a failed call. */
static void report(const char *cmd, const char *what, const struct client_result *r,
                   const struct client_cli_options *o)
{
    const char *msg = r->message[0] ? r->message : client_err_str(r->err);
    char status[48] = "";
    /* Only the server's own status: a local one (a timeout, a dead output) would confuse. */
    if (r->status_received && r->status > 0 && r->status < PROTO_STATUS_COUNT) {
        (void)snprintf(status, sizeof(status), " [%s]", proto_status_name(r->status));
    }
    if (client_cli_exit_code(r->err) == CLIENT_EXIT_UNAVAILABLE) {
        (void)fprintf(stderr, "ringcas %s: %s: %s%s (server %s)\n", cmd, what, msg, status,
                      o->server);
        return;
    }
    (void)fprintf(stderr, "ringcas %s: %s: %s%s\n", cmd, what, msg, status);
}

static int check_options(const char *cmd, const struct client_cli_options *o)
{
    const char *why;
    if (client_resource_check_instance(o->instance, &why) < 0) {
        (void)fprintf(stderr, "ringcas %s: --instance '%s': %s\n", cmd, o->instance, why);
        return CLIENT_EXIT_USAGE;
    }
    if (o->timeout_ms == 0 || o->timeout_ms > UINT32_MAX || o->deadline_ms > UINT32_MAX) {
        (void)fprintf(stderr, "ringcas %s: --timeout must be > 0 and both at most 49 days\n", cmd);
        return CLIENT_EXIT_USAGE;
    }
    if (o->batch_max > PUT_BATCH_BLOB_MAX) {
        (void)fprintf(stderr, "ringcas %s: --batch-max is at most 256KiB\n", cmd);
        return CLIENT_EXIT_USAGE;
    }
    return CLIENT_EXIT_OK;
}

static int session_open(const char *cmd, struct client_sync **s, const struct client_cli_options *o)
{
    struct client_sync_options so = {
        .server = o->server,
        .instance = o->instance,
        .timeout_ms = (uint32_t)o->timeout_ms,
        .deadline_ms = (uint32_t)o->deadline_ms,
    };
    char why[256];
    int rc = client_sync_create(&so, s, why, sizeof(why));
    if (rc == 0) return CLIENT_EXIT_OK;
    (void)fprintf(stderr, "ringcas %s: %s\n", cmd, why);
    if (rc == -EINVAL) return CLIENT_EXIT_USAGE;
    return rc == -EHOSTUNREACH ? CLIENT_EXIT_UNAVAILABLE : CLIENT_EXIT_FAILURE;
}

/* ---- put ---- */

struct put_item {
    const char *path;       /* as given ("-": standard input) */
    int fd;                 /* "-": the copy of standard input (an unnamed temporary file);
                               else -1 */
    bool stdin_failed;      /* "-" whose copy failed (reported) */
    bool hashed;            /* it could be read and hashed (it is closed in between: a long
                               file list must not hold a descriptor per file) */
    struct client_digest d; /* its digest */
    bool missing;           /* the server lacks it (or --force) */
    bool done;              /* uploaded (or failed) by a batch */
    int status;             /* its exit status once done */
};

/* What went wrong with a local file, for a user. */
static const char *file_err_str(int err)
{
    switch (err) {
    case -ENOENT:
        return "no such file";
    case -EACCES:
        return "permission denied";
    case -EISDIR:
        return "is a directory";
    case -EINVAL:
        return "not a regular file";
    default:
        return base_err_str(err);
    }
}

/* Opens <it>'s file (or a descriptor of stdin's copy) for reading: a descriptor, or -errno. */
static int put_item_open(const struct put_item *it)
{
    int fd = it->fd >= 0 ? fcntl(it->fd, F_DUPFD_CLOEXEC, 0) : open(it->path, O_RDONLY | O_CLOEXEC);
    return fd == -1 ? -errno : fd;
}

/* Opens <it>'s file for reading; the descriptor, or -errno after reporting it. */
static int put_open(struct put_item *it)
{
    int fd = put_item_open(it);
    if (fd >= 0) return fd;
    (void)fprintf(stderr, "ringcas put: %s: %s\n", it->path, file_err_str(fd));
    return fd;
}

/*
 * An unnamed file in $TMPDIR (else /tmp), gone when closed: a descriptor or -errno. *<dir> is
 * the folder tried.
 */
static int put_stdin_temp(const char **dir_out)
{
    /* Read before any thread exists (the session's ring starts later), so getenv is safe. */
    const char *dir = getenv("TMPDIR"); /* NOLINT(concurrency-mt-unsafe) */
    if (!dir || !dir[0]) dir = "/tmp";
    *dir_out = dir;
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    /* Only a file system without O_TMPFILE (EOPNOTSUPP; EISDIR before Linux 3.11's support
     * reached it) gets the fallback: any other error would repeat there. */
    if (errno != EOPNOTSUPP && errno != EISDIR) return -errno;
    /* The fallback: a named file, unlinked at once; mkostemp(3) replaces the template's six
     * trailing X with a unique suffix. */
    char path[4096];
    int n = snprintf(path, sizeof(path), "%s/ringcas-put-XXXXXX", dir);
    if (n < 0 || (size_t)n >= sizeof(path)) return -ENAMETOOLONG;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd == -1) return -errno;
    (void)unlink(path);
    return fd;
}

/* Writes <len> bytes of <buf> to <fd>: 0 or -errno. */
static int put_write_all(int fd, const uint8_t *buf, size_t len)
{
    /* Bounded: each write makes progress or ends the loop. */
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n == -1 && errno == EINTR) continue;
        if (n == -1) return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Copies standard input to an unnamed temporary file (the digest must be known before the
 * upload starts, and a pipe can be read once): its descriptor, or -errno after reporting it.
 */
static int put_stdin_copy(void)
{
    const char *dir;
    int fd = put_stdin_temp(&dir);
    if (fd < 0) {
        (void)fprintf(stderr,
                      "ringcas put: -: cannot create a temporary file in %s ($TMPDIR): %s\n", dir,
                      file_err_str(fd));
        return fd;
    }
    static uint8_t buf[64 << 10];
    int rc = 0;
    /* Bounded by stdin's length: each read makes progress or ends the loop. */
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n == -1 && errno == EINTR) continue;
        if (n == -1) {
            rc = -errno;
            (void)fprintf(stderr, "ringcas put: -: reading stdin: %s\n", base_err_str(rc));
            break;
        }
        if (n == 0) break;
        rc = put_write_all(fd, buf, (size_t)n);
        if (rc < 0) {
            (void)fprintf(stderr, "ringcas put: -: writing the temporary copy: %s\n",
                          base_err_str(rc));
            break;
        }
    }
    if (rc == 0) return fd;
    (void)close(fd);
    return rc;
}

/*
 * Sets every item's path and fd, copying stdin for the item "-": CLIENT_EXIT_USAGE when "-"
 * is given more than once (stdin can be read once), else CLIENT_EXIT_OK. A copy that fails
 * is reported here and marks "-" stdin_failed (put_hash_all counts it as failed).
 */
static int put_stdin_prepare(struct put_item *items, char *const *files, size_t count)
{
    size_t dashes = 0;
    for (size_t i = 0; i < count; i++) {
        items[i].path = files[i];
        items[i].fd = -1;
        dashes += strcmp(files[i], "-") == 0;
    }
    if (dashes > 1) {
        (void)fprintf(stderr, "ringcas put: stdin (-) can be given once\n");
        return CLIENT_EXIT_USAGE;
    }
    if (dashes == 0) return CLIENT_EXIT_OK;
    int fd = put_stdin_copy();
    for (size_t i = 0; i < count; i++) {
        if (strcmp(files[i], "-") != 0) continue;
        items[i].fd = fd >= 0 ? fd : -1;
        items[i].stdin_failed = fd < 0;
    }
    return CLIENT_EXIT_OK;
}

/* Hashes every file; returns the exit status so far. */
static int put_hash_all(struct put_item *items, size_t count)
{
    int status = CLIENT_EXIT_OK;
    for (size_t i = 0; i < count; i++) {
        items[i].missing = true;
        if (items[i].stdin_failed) {
            if (status == CLIENT_EXIT_OK) status = CLIENT_EXIT_USAGE; /* reported */
            continue;
        }
        int fd = put_open(&items[i]);
        int rc = fd < 0 ? fd : client_digest_fd(fd, &items[i].d);
        if (fd >= 0) (void)close(fd);
        items[i].hashed = rc == 0;
        if (rc == 0) continue;
        if (fd >= 0) {
            (void)fprintf(stderr, "ringcas put: %s: %s\n", items[i].path,
                          rc == -EILSEQ ? "file got shorter while it was hashed"
                                        : file_err_str(rc));
        }
        /* A file that changed is an integrity failure, as it is during the upload. */
        if (status == CLIENT_EXIT_OK) {
            status = rc == -EILSEQ ? CLIENT_EXIT_INTEGRITY : CLIENT_EXIT_USAGE;
        }
    }
    return status;
}

/* Asks the server which of the hashed files it lacks; 0 or the exit status of a failure. */
static int put_find_missing(struct client_sync *s, struct put_item *items, size_t count,
                            const struct client_cli_options *o)
{
    struct client_digest *ds = calloc(count, sizeof(*ds));
    size_t *idx = calloc(count, sizeof(*idx));
    bool *missing = calloc(count, sizeof(*missing));
    int status = CLIENT_EXIT_OK;
    size_t n = 0;
    if (!ds || !idx || !missing) {
        (void)fprintf(stderr, "ringcas put: out of memory\n");
        status = CLIENT_EXIT_FAILURE;
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        if (!items[i].hashed) continue;
        ds[n] = items[i].d;
        idx[n++] = i;
    }
    /* Batches within the request limit; bounded by <n>. */
    for (size_t at = 0; at < n && status == CLIENT_EXIT_OK; at += CLIENT_CAS_FIND_MAX) {
        size_t k = n - at < CLIENT_CAS_FIND_MAX ? n - at : CLIENT_CAS_FIND_MAX;
        struct client_result r;
        int rc = client_sync_find_missing(s, ds + at, k, missing + at, &r);
        if (rc == -ENOSYS) break; /* a server without FindMissingBlobs: upload everything */
        if (rc < 0) {
            report("put", "FindMissingBlobs", &r, o);
            status = client_cli_exit_code(rc);
        }
    }
    for (size_t j = 0; j < n && status == CLIENT_EXIT_OK; j++) {
        items[idx[j]].missing = missing[j];
    }
out:
    free(ds);
    free(idx);
    free(missing);
    return status;
}

/* Reads the whole small file <fd> of <it> into <buf> (d.size bytes); 0 or -errno. */
static int put_read_small(const struct put_item *it, int fd, uint8_t *buf)
{
    size_t got = 0;
    /* Bounded: each read makes progress or ends the loop. */
    while (got < it->d.size) {
        ssize_t n = pread(fd, buf + got, it->d.size - got, (off_t)got);
        if (n == -1 && errno == EINTR) continue;
        if (n == -1) return -errno;
        if (n == 0) return -EILSEQ; /* shorter than when it was hashed */
        got += (size_t)n;
    }
    return 0;
}

/* The batch being built: blobs, their bytes, and which item each is. */
struct put_batch {
    struct client_batch_blob blobs[PUT_BATCH_COUNT];
    size_t items[PUT_BATCH_COUNT];
    int statuses[PUT_BATCH_COUNT];
    char messages[PUT_BATCH_COUNT][CLIENT_MESSAGE_MAX];
    size_t count;
    size_t bytes;
    uint8_t *raw;  /* PUT_BATCH_BYTES of file bytes */
    uint8_t *z;    /* their zstd frames (--compress) */
    size_t z_used; /* bytes of z used */
    size_t z_size; /* capacity of z */
};

/* Adds item <i> to <b> (its bytes read, checked and, with --compress, compressed). */
static void put_batch_add(struct put_batch *b, struct put_item *items, size_t i,
                          const struct client_cli_options *o)
{
    struct put_item *it = &items[i];
    uint8_t *raw = b->raw + b->bytes;
    int fd = put_item_open(it);
    int rc = fd < 0 ? fd : put_read_small(it, fd, raw);
    if (fd >= 0) (void)close(fd);
    struct client_digest now;
    if (rc == 0) client_digest_buf(raw, (size_t)it->d.size, &now);
    if (rc == 0 && !client_digest_equal(&now, &it->d)) rc = -EILSEQ;
    it->done = rc < 0;
    if (rc < 0) {
        (void)fprintf(stderr, "ringcas put: %s: %s\n", it->path,
                      rc == -EILSEQ ? "content changed since it was hashed" : file_err_str(rc));
        it->status = rc == -EILSEQ ? CLIENT_EXIT_INTEGRITY : CLIENT_EXIT_USAGE;
        return;
    }
    struct client_batch_blob *bb = &b->blobs[b->count];
    bb->digest = it->d;
    bb->data = raw;
    bb->len = (size_t)it->d.size;
    bb->zstd = false;
    if (o->compress) {
        size_t z = ZSTD_compress(b->z + b->z_used, b->z_size - b->z_used, raw, bb->len,
                                 ZSTD_CLEVEL_DEFAULT);
        if (!ZSTD_isError(z)) {
            bb->data = b->z + b->z_used;
            bb->len = z;
            bb->zstd = true;
            b->z_used += z;
        }
    }
    b->items[b->count++] = i;
    b->bytes += (size_t)it->d.size;
}

/* Sends <b>; marks its items done with their outcome unless the server lacks the method. */
static void put_batch_send(struct client_sync *s, struct put_batch *b, struct put_item *items,
                           const struct client_cli_options *o)
{
    struct client_result r = { 0 };
    int rc = client_sync_batch_update(s, b->blobs, b->count, b->statuses, b->messages, &r);
    for (size_t k = 0; rc != -ENOSYS && k < b->count; k++) {
        struct put_item *it = &items[b->items[k]];
        it->done = true;
        if (rc < 0) {
            report("put", it->path, &r, o);
            it->status = client_cli_exit_code(rc);
        } else if (b->statuses[k] != 0) {
            struct client_result one = { .err = client_status_errno(b->statuses[k]),
                                         .status = b->statuses[k],
                                         .status_received = true };
            (void)snprintf(one.message, sizeof(one.message), "%s", b->messages[k]);
            client_message_printable(one.message); /* the server's words: one line */
            report("put", it->path, &one, o);
            it->status = client_cli_exit_code(one.err);
        }
    }
    b->count = 0;
    b->bytes = 0;
    b->z_used = 0;
}

/*
 * Uploads the missing small files in BatchUpdateBlobs requests. Their bytes are read again
 * and checked against the digest (a file that changed is not sent). A server without the
 * method (UNIMPLEMENTED) leaves them to the streaming upload.
 */
static void put_batches(struct client_sync *s, struct put_item *items, size_t count,
                        const struct client_cli_options *o)
{
    struct put_batch *b = calloc(1, sizeof(*b));
    if (!b) return;
    b->raw = malloc(PUT_BATCH_BYTES);
    /* Each blob is its own frame: the bound of the whole plus a frame header per blob. */
    b->z_size = ZSTD_compressBound(PUT_BATCH_BYTES) + (size_t)PUT_BATCH_COUNT * 64;
    b->z = o->compress ? malloc(b->z_size) : NULL;
    bool ok = b->raw && (!o->compress || b->z);
    for (size_t i = 0; ok && i < count; i++) {
        struct put_item *it = &items[i];
        if (!it->hashed || !it->missing || it->d.size > o->batch_max) continue;
        if (b->bytes + it->d.size > PUT_BATCH_BYTES || b->count == PUT_BATCH_COUNT) {
            put_batch_send(s, b, items, o);
        }
        put_batch_add(b, items, i, o);
    }
    if (ok && b->count > 0) put_batch_send(s, b, items, o);
    free(b->z);
    free(b->raw);
    free(b);
}

int client_cli_put(const struct client_cli_options *o, char *const *files, size_t count)
{
    if (count == 0) {
        (void)fprintf(stderr, "ringcas put: no FILE given (see ringcas put --help)\n");
        return CLIENT_EXIT_USAGE;
    }
    int status = check_options("put", o);
    if (status != CLIENT_EXIT_OK) return status;
    struct put_item *items = calloc(count, sizeof(*items));
    if (!items) return CLIENT_EXIT_FAILURE;
    status = put_stdin_prepare(items, files, count);
    if (status != CLIENT_EXIT_OK) goto out_free;
    status = put_hash_all(items, count);
    struct client_sync *s = NULL;
    int rc = session_open("put", &s, o);
    if (rc != CLIENT_EXIT_OK) {
        status = rc;
        goto out_free;
    }
    rc = o->force ? CLIENT_EXIT_OK : put_find_missing(s, items, count, o);
    if (rc == CLIENT_EXIT_OK) put_batches(s, items, count, o);
    for (size_t i = 0; i < count && rc == CLIENT_EXIT_OK; i++) {
        struct put_item *it = &items[i];
        if (!it->hashed || it->done || !it->missing) continue;
        struct client_result r = { 0 };
        it->done = true;
        int fd = put_open(it);
        if (fd < 0) {
            it->status = CLIENT_EXIT_USAGE;
            continue;
        }
        if (client_sync_put_fd(s, fd, &it->d, o->compress, &r) < 0) {
            report("put", it->path, &r, o);
            it->status = client_cli_exit_code(r.err);
        }
        (void)close(fd);
    }
    /* The digests, in the order given, of every file that is on the server now. */
    for (size_t i = 0; i < count && rc == CLIENT_EXIT_OK; i++) {
        if (!items[i].hashed) continue;
        if (items[i].status != CLIENT_EXIT_OK) {
            if (status == CLIENT_EXIT_OK) status = items[i].status;
            continue;
        }
        char text[CLIENT_DIGEST_TEXT_MAX];
        client_digest_format(&items[i].d, text);
        printf("%s\n", text);
    }
    if (rc != CLIENT_EXIT_OK && status == CLIENT_EXIT_OK) status = rc;
    client_sync_destroy(s);
out_free:
    for (size_t i = 0; i < count; i++) {
        if (items[i].fd >= 0) (void)close(items[i].fd);
    }
    free(items);
    if (fflush(stdout) != 0 && status == CLIENT_EXIT_OK) status = CLIENT_EXIT_FAILURE;
    return status;
}

/* ---- get ---- */

/* True when the folder <path> goes in exists ("x" goes in "."). */
static bool parent_exists(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = !slash          ? strdup(".")
                : slash == path ? strdup("/")
                                : strndup(path, (size_t)(slash - path));
    if (!dir) return false;
    struct stat st;
    bool is_dir = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
    free(dir);
    return is_dir;
}

/*
 * What went wrong writing the output file <path>, for a user: the folder it goes in is what
 * is missing when the open fails with ENOENT, and "not found" would read like a missing blob;
 * a folder that exists but takes no new files (/proc, /sys) answers ENOENT too.
 */
static const char *output_err_str(const char *path, int err)
{
    switch (err) {
    case -ENOENT:
        return parent_exists(path) ? "no new file can be made in that folder" : "no such folder";
    case -ENOTDIR:
        return "a part of the path is not a folder";
    case -EISDIR:
        return "is a directory";
    case -EACCES:
        return "permission denied";
    case -EINVAL:
        return "an empty file name";
    default:
        return base_err_str(err);
    }
}

/* Reports that the output file <path> cannot be written. */
static void output_report(const char *path, int err)
{
    (void)fprintf(stderr, "ringcas get: cannot write %s: %s\n", path, output_err_str(path, err));
}

/*
 * Checks that <path> can become the blob's file before anything is downloaded: an empty
 * name, a folder or a name ending in '/' would otherwise fail only at the rename, after the
 * whole download. Returns 0 (a regular file or a new one: written beside and renamed; *<mode>
 * the existing file's st_mode, or 0 for a new one), 1 (it is there and not a regular file, such as
 * /dev/null or a FIFO: written in place, since a rename would replace the device node
 * itself), or -errno (-EINVAL: an empty name).
 */
static int output_check(const char *path, mode_t *mode)
{
    *mode = 0;
    if (path[0] == '\0') return -EINVAL;
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return -EISDIR;
        if (!S_ISREG(st.st_mode)) return 1;
        *mode = st.st_mode; /* with its S_IFREG bits: never 0 */
        return 0;
    }
    int err = -errno;
    /* "x/" names a folder: x is missing (ENOENT) or a file (ENOTDIR). */
    return path[strlen(path) - 1] == '/' ? err : 0;
}

/*
 * The temporary file a get writes into, while it exists: the handler of a signal that ends
 * the process (Ctrl-C, kill, a closed terminal) removes it, so an interrupted download leaves
 * nothing beside FILE. Only SIGKILL (which no process can catch) leaves FILE.ringcas-PID-*.
 */
static char get_tmp_path[4096];
static volatile sig_atomic_t get_tmp_live; /* get_tmp_path names a file of ours */

/* The signals whose default action ends the process that a user or a supervisor sends. */
static const int get_signals[] = { SIGINT, SIGTERM, SIGHUP };

static void get_on_signal(int sig)
{
    /* unlink(2), signal(2) and raise(3) are async-signal-safe (signal-safety(7)). */
    if (get_tmp_live) (void)unlink(get_tmp_path);
    (void)signal(sig, SIG_DFL);
    /* Delivered once this handler returns: the process ends as the signal's default says, so
     * the shell sees the signal (status 130 after Ctrl-C), as it would without the handler. */
    (void)raise(sig);
}

/*
 * Installs get_on_signal for get_signals, keeping the old actions in <old>; a signal the
 * process was started ignoring (nohup, a background job) stays ignored.
 */
static void get_signals_catch(struct sigaction *old)
{
    for (size_t i = 0; i < ARRAY_LEN(get_signals); i++) {
        (void)sigaction(get_signals[i], NULL, &old[i]);
        if (old[i].sa_handler == SIG_IGN) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = get_on_signal;
        (void)sigemptyset(&sa.sa_mask);
        (void)sigaction(get_signals[i], &sa, NULL);
    }
}

static void get_signals_restore(const struct sigaction *old)
{
    for (size_t i = 0; i < ARRAY_LEN(get_signals); i++) {
        (void)sigaction(get_signals[i], &old[i], NULL);
    }
}

/* Opens a new file beside <path> to write into, named in get_tmp_path. */
static int open_temp(const char *path)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) r = (uint32_t)getpid();
    get_tmp_live = 0;
    int n = snprintf(get_tmp_path, sizeof(get_tmp_path), "%s.ringcas-%u-%08x", path,
                     (unsigned)getpid(), r);
    if (n < 0 || (size_t)n >= sizeof(get_tmp_path)) return -ENAMETOOLONG;
    /* Live before the file exists: a signal in between unlinks a name nobody has (the pid and
     * the random part make it ours). */
    get_tmp_live = 1;
    int fd = open(get_tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd == -1) {
        int err = -errno;
        get_tmp_live = 0;
        return err;
    }
    return fd;
}

static int get_run(struct client_sync *s, const struct client_digest *d, int fd, const char *what,
                   const struct client_cli_options *o)
{
    struct client_result r = { 0 };
    int rc = client_sync_get_fd(s, d, o->compress, fd, &r);
    if (rc == 0) return CLIENT_EXIT_OK;
    report("get", what, &r, o);
    return client_cli_exit_code(rc);
}

/*
 * Downloads <d> into <fd> on a session of its own, then closes <fd> (a close that fails is
 * a failed write: the bytes may not be there); the exit status. <path> names the output.
 */
static int get_session(const struct client_digest *d, int fd, const char *path, const char *what,
                       const struct client_cli_options *o)
{
    struct client_sync *s = NULL;
    int status = session_open("get", &s, o);
    if (status == CLIENT_EXIT_OK) {
        status = get_run(s, d, fd, what, o);
        client_sync_destroy(s);
    }
    if (fd != STDOUT_FILENO && close(fd) == -1 && status == CLIENT_EXIT_OK) {
        output_report(path, -errno);
        status = CLIENT_EXIT_FAILURE;
    }
    return status;
}

/*
 * Downloads into o->output that is there and not a regular file (/dev/null, a FIFO, a
 * terminal): written as the bytes arrive, as stdout is. A FIFO's open waits for its reader,
 * as a shell's redirection does.
 */
static int get_in_place(const struct client_digest *d, const char *what,
                        const struct client_cli_options *o)
{
    int fd = open(o->output, O_WRONLY | O_CLOEXEC);
    if (fd == -1) {
        output_report(o->output, -errno);
        return CLIENT_EXIT_USAGE;
    }
    return get_session(d, fd, o->output, what, o);
}

/*
 * Downloads into a temporary file beside <target>, renamed to it once verified; <target> is
 * o->output, or the file a symbolic link there names. An existing file's permissions (from its
 * st_mode <mode>; 0: a new file) are the new one's, as a rewrite in place would keep them.
 */
static int get_to_file(const struct client_digest *d, const char *what, const char *target,
                       mode_t mode, const struct client_cli_options *o)
{
    struct sigaction old[ARRAY_LEN(get_signals)];
    get_signals_catch(old);
    int fd = open_temp(target);
    if (fd < 0) {
        get_signals_restore(old);
        output_report(o->output, fd);
        return CLIENT_EXIT_USAGE;
    }
    if (mode != 0) (void)fchmod(fd, mode & 07777); /* best effort: the bytes matter more */
    int status = get_session(d, fd, o->output, what, o);
    if (status == CLIENT_EXIT_OK && rename(get_tmp_path, target) == -1) {
        output_report(o->output, -errno);
        status = CLIENT_EXIT_FAILURE;
    }
    if (status != CLIENT_EXIT_OK) (void)unlink(get_tmp_path);
    /* After the rename a signal would unlink a name that is gone: harmless, but not needed. */
    get_tmp_live = 0;
    get_signals_restore(old);
    return status;
}

int client_cli_get(const struct client_cli_options *o, const char *digest)
{
    struct client_digest d;
    const char *why;
    if (client_digest_parse(digest, &d, &why) < 0) {
        (void)fprintf(stderr, "ringcas get: '%s': %s\n", digest, why);
        return CLIENT_EXIT_USAGE;
    }
    int status = check_options("get", o);
    if (status != CLIENT_EXIT_OK) return status;
    /*
     * A reader that goes away (get ... | head) must end the download with RST_STREAM(CANCEL),
     * which cancels the server's reads, not kill the process mid-stream: the write reports
     * EPIPE instead.
     */
    (void)signal(SIGPIPE, SIG_IGN);
    if (!o->output || strcmp(o->output, "-") == 0) {
        return get_session(&d, STDOUT_FILENO, "-", digest, o);
    }
    mode_t mode;
    int rc = output_check(o->output, &mode);
    if (rc < 0) {
        output_report(o->output, rc);
        return CLIENT_EXIT_USAGE;
    }
    if (rc == 1) return get_in_place(&d, digest, o);
    /* A symbolic link to a file is written through, as a shell's > or curl -o do: renamed
     * over, the link itself would become the file and its target keep the old bytes. */
    char *real = mode != 0 ? realpath(o->output, NULL) : NULL;
    status = get_to_file(&d, digest, real ? real : o->output, mode, o);
    free(real);
    return status;
}

/* ---- stat ---- */

static const char *enum_name(const ProtobufCEnumDescriptor *desc, int value)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(desc, value);
    return v ? v->name : "?";
}

static void print_compressors(const char *label, size_t n, const int *values)
{
    printf("%s:", label);
    for (size_t i = 0; i < n; i++) {
        printf(" %s", enum_name(&build__bazel__remote__execution__v2__compressor__value__descriptor,
                                values[i]));
    }
    printf("%s\n", n == 0 ? " none" : "");
}

static void print_capabilities(const Build__Bazel__Remote__Execution__V2__ServerCapabilities *c)
{
    const Build__Bazel__Semver__SemVer *lo = c->low_api_version;
    const Build__Bazel__Semver__SemVer *hi = c->high_api_version;
    if (lo && hi) {
        printf("api versions: %d.%d to %d.%d\n", lo->major, lo->minor, hi->major, hi->minor);
    }
    const Build__Bazel__Remote__Execution__V2__CacheCapabilities *cc = c->cache_capabilities;
    if (!cc) {
        printf("cache: not served\n");
        return;
    }
    printf("digest functions:");
    for (size_t i = 0; i < cc->n_digest_functions; i++) {
        printf(" %s",
               enum_name(&build__bazel__remote__execution__v2__digest_function__value__descriptor,
                         (int)cc->digest_functions[i]));
    }
    printf("\n");
    print_compressors("compressors (ByteStream)", cc->n_supported_compressors,
                      (const int *)cc->supported_compressors);
    print_compressors("compressors (batch updates)", cc->n_supported_batch_update_compressors,
                      (const int *)cc->supported_batch_update_compressors);
    printf("max batch size: %lld bytes\n", (long long)cc->max_batch_total_size_bytes);
    /* 0 is REAPI's "no limit"; ringcas always sends its own (a quarter of --max-size). */
    if (cc->max_cas_blob_size_bytes > 0) {
        printf("max blob size: %lld bytes\n", (long long)cc->max_cas_blob_size_bytes);
    } else {
        printf("max blob size: no limit\n");
    }
    bool ac = cc->action_cache_update_capabilities &&
              cc->action_cache_update_capabilities->update_enabled;
    printf("action cache updates: %s\n", ac ? "enabled" : "disabled");
    printf("execution: %s\n", c->execution_capabilities ? "served" : "not served");
}

bool client_cli_metric_sum(const char *text, size_t len, const char *name, double *sum)
{
    size_t nlen = strlen(name);
    bool found = false;
    *sum = 0;
    /* Bounded by the text's lines. */
    for (const char *line = text; line < text + len;) {
        const char *eol = memchr(line, '\n', (size_t)(text + len - line));
        if (!eol) eol = text + len;
        size_t llen = (size_t)(eol - line);
        bool match = llen > nlen && memcmp(line, name, nlen) == 0 &&
                     (line[nlen] == ' ' || line[nlen] == '{');
        const char *sp = match ? memrchr(line, ' ', llen) : NULL;
        if (sp) {
            char num[64];
            size_t vlen = (size_t)(eol - sp - 1);
            if (vlen > 0 && vlen < sizeof(num)) {
                memcpy(num, sp + 1, vlen);
                num[vlen] = '\0';
                *sum += strtod(num, NULL);
                found = true;
            }
        }
        line = eol + 1;
    }
    return found;
}

static void print_counters(const char *text, size_t len)
{
    static const char *const rows[][2] = {
        { "ringcas_conns", "connections open" },
        { "ringcas_conns_accepted_total", "connections accepted" },
        { "ringcas_requests_total", "requests finished" },
        { "ringcas_requests_in_flight", "requests in flight" },
        { "ringcas_bytes_in_total", "bytes received" },
        { "ringcas_bytes_out_total", "bytes sent" },
        { "ringcas_ops_in_flight", "io_uring ops in flight" },
        { "ringcas_bufs_out", "receive buffers held" },
        { "ringcas_timeouts_total", "I/O timeouts" },
        { "ringcas_cancels_total", "cancels" },
        { "ringcas_h2_streams", "HTTP/2 streams open" },
        { "ringcas_grpc_calls", "gRPC calls alive" },
        { "ringcas_bs_readers", "ByteStream readers" },
        { "ringcas_bs_uploads", "ByteStream uploads" },
        /* What requests wait for now: all 0 on a server that is idle, not stalled. */
        { "ringcas_upload_waiters", "uploads wait for upload" },
        { "ringcas_read_waiters", "reads wait for disk" },
        { "ringcas_blob_writer_waiters", "writes wait for writer" },
        { "ringcas_blob_segment_room_waiting", "segments wait for room" },
        { "ringcas_op_waiters", "timers wait for an op" },
    };
    printf("counters (GET /metrics, summed over cores):\n");
    for (size_t i = 0; i < ARRAY_LEN(rows); i++) {
        double v;
        if (client_cli_metric_sum(text, len, rows[i][0], &v)) {
            printf("  %-24s %.0f\n", rows[i][1], v);
        }
    }
}

/* Reads GET /metrics and prints the summary; returns <status>, or the failure's. */
static int stat_metrics(struct client_sync *s, int status)
{
    struct client_http h;
    memset(&h, 0, sizeof(h));
    int rc = client_sync_http_get(s, "/metrics", &h);
    if (rc < 0 || h.status != 200) {
        /* The status itself: "unexpected HTTP status" did not say which (a 404 from a server
         * that is no ringcas, a 503 of one past --max-connections). */
        if (rc < 0) {
            (void)fprintf(stderr, "ringcas stat: GET /metrics: %s\n", client_err_str(rc));
        } else {
            (void)fprintf(stderr, "ringcas stat: GET /metrics: HTTP status %d\n", h.status);
        }
        if (status == CLIENT_EXIT_OK) {
            status = rc < 0 ? client_cli_exit_code(rc) : CLIENT_EXIT_FAILURE;
        }
    } else {
        print_counters(h.body, h.body_len);
    }
    client_http_deinit(&h);
    return status;
}

int client_cli_stat(const struct client_cli_options *o)
{
    int status = check_options("stat", o);
    if (status != CLIENT_EXIT_OK) return status;
    struct client_sync *s = NULL;
    status = session_open("stat", &s, o);
    if (status != CLIENT_EXIT_OK) return status;
    struct client_unary u;
    client_unary_init(&u, &s->cl);
    struct client_result r = { 0 };
    bool reached = true;
    bool answered = client_sync_capabilities(s, &u, &r) == 0;
    if (!answered) {
        report("stat", "GetCapabilities", &r, o);
        status = client_cli_exit_code(r.err);
        /* A server that cannot be reached or does not answer will not serve /metrics either. */
        reached = status != CLIENT_EXIT_UNAVAILABLE && status != CLIENT_EXIT_TIMEOUT;
    }
    /* Only for a server that answered: one that could not be reached gets one line on stderr
     * and nothing on stdout (no half report for a script to read). */
    if (reached) printf("server: %s\n", o->server);
    if (answered) {
        print_capabilities(
            (const Build__Bazel__Remote__Execution__V2__ServerCapabilities *)u.response);
    }
    client_unary_deinit(&u);
    if (reached) status = stat_metrics(s, status);
    client_sync_destroy(s);
    if (fflush(stdout) != 0 && status == CLIENT_EXIT_OK) status = CLIENT_EXIT_FAILURE;
    return status;
}
