/*
 * The I/O seam: every file operation of the engine goes through a table of functions, so a
 * deterministic simulated backend (io_sim.h) can stand in for the disk in tests, hold
 * unsynced writes in memory, lose or tear them at a simulated power loss, and fail the N-th
 * operation.
 *
 * Two halves:
 * - blocking calls (open, pread, pwrite, fdatasync, ftruncate, unlink, list...) for start-up
 *   recovery, fsck and the evictor thread, which never run on a core's loop;
 * - asynchronous requests on a core (read, write, fdatasync, open, close, directory fsync),
 *   completed by calling blob_aio.fn on the core's thread; the real backend submits them on
 *   the core's io_uring (ring_op_get / ring_op_sqe / ring_op_commit), so no core blocks.
 *
 * File names are relative to the store's folder; the backend holds the folder.
 */
#ifndef RINGCAS_BLOB_IO_H
#define RINGCAS_BLOB_IO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "ring/core.h"

struct blob_io;
struct blob_aio;

enum blob_io_opcode {
    BLOB_IO_READ = 1,  /* res: bytes read */
    BLOB_IO_WRITE,     /* res: bytes written (a short count is -ENOSPC to the engine) */
    BLOB_IO_FDATASYNC, /* res: 0 */
    BLOB_IO_OPEN,      /* res: the new fd */
    BLOB_IO_CLOSE,     /* res: 0 */
    BLOB_IO_FSYNC_DIR, /* res: 0: the folder's entries are durable */
    BLOB_IO_FALLOCATE, /* res: 0: [off, off + len) allocated, the size unchanged (KEEP_SIZE) */
    BLOB_IO_TRUNCATE,  /* res: 0: the file cut to <off> bytes, blocks reserved past it freed */
    BLOB_IO_SLEEP,     /* res: 0 once <off> milliseconds passed (no file: a wait on the ring) */
};

/* Completion of an asynchronous request; runs on the core's thread. */
typedef void blob_aio_fn(struct blob_aio *a, int32_t res);

/* One asynchronous request, embedded in the caller's object. */
struct blob_aio {
    blob_aio_fn *fn; /* completion */
    void *ctx;       /* the caller's object */
    uint64_t t0;     /* the caller's: when it was submitted (the writer's disk timings) */
    /* private: */
    void *handle; /* the backend's op while in flight, else NULL */
};

struct blob_io_req {
    uint8_t op;       /* enum blob_io_opcode */
    int fd;           /* READ, WRITE, FDATASYNC, CLOSE, FALLOCATE, TRUNCATE */
    void *buf;        /* READ/WRITE memory: the backend's until completion */
    uint32_t len;     /* READ/WRITE bytes */
    uint64_t off;     /* READ/WRITE file offset; FALLOCATE: the length to allocate; TRUNCATE:
                       * the length to keep; SLEEP: milliseconds */
    const char *name; /* OPEN: file name, valid until completion */
    int flags;        /* OPEN: open(2) flags */
};

/* Called for each file name of the folder by blob_io_ops.list. */
typedef void blob_io_name_fn(void *ctx, const char *name);

struct blob_io_ops {
    /* Blocking; any thread but a core's. Return 0 / a count, or -errno. */
    /* open refuses a name that is not a regular file, without waiting on it (a FIFO): -EISDIR
     * for a folder, -ENODEV for anything else (blob_io_not_regular). */
    int (*open)(struct blob_io *io, const char *name, int flags, int *fd);
    int (*close)(struct blob_io *io, int fd);
    int64_t (*pread)(struct blob_io *io, int fd, void *buf, size_t len, uint64_t off);
    int64_t (*pwrite)(struct blob_io *io, int fd, const void *buf, size_t len, uint64_t off);
    int (*fdatasync)(struct blob_io *io, int fd);
    int (*ftruncate)(struct blob_io *io, int fd, uint64_t size);
    int (*fsize)(struct blob_io *io, int fd, uint64_t *size);
    int (*unlink)(struct blob_io *io, const char *name);
    int (*rename)(struct blob_io *io, const char *from, const char *to);
    int (*fsync_dir)(struct blob_io *io);
    int (*list)(struct blob_io *io, blob_io_name_fn *fn, void *ctx);
    /* The folder's file system: bytes an unprivileged writer may still allocate (<avail>) and
     * its size (<total>). -ENOTSUP when the backend cannot tell. */
    int (*space)(struct blob_io *io, uint64_t *avail, uint64_t *total);
    /* 0 while the folder is there, -ENOENT once it was removed (its last name gone: no new
     * file can be made in it), or -errno. NULL when the backend cannot tell. */
    int (*folder_check)(struct blob_io *io);
    /* 0 while a file can be made in the folder, -EROFS while its file system refuses writes
     * (mounted read-only, or remounted so after an error). Anything else (a full disk, no
     * way to tell) is 0: only the file system's own word counts. NULL when the backend cannot
     * tell. */
    int (*folder_writable)(struct blob_io *io);
    /*
     * Asynchronous, on <core>'s thread (<core> is NULL with the simulated backend). Returns
     * 0 and a->fn runs later (never inside this call), or -EAGAIN when the core's op table
     * is full, with nothing submitted.
     */
    int (*submit)(struct blob_io *io, struct ring_core *core, struct blob_aio *a,
                  const struct blob_io_req *req);
    /* Asks to cancel a request in flight; its completion still runs (maybe -ECANCELED). */
    void (*cancel)(struct blob_io *io, struct blob_aio *a);
    /* Runs <task> at the end of the core's current loop iteration (ring_task_defer). */
    void (*defer)(struct blob_io *io, struct ring_core *core, struct ring_task *task);
};

struct blob_io {
    const struct blob_io_ops *ops; /* the backend */
    bool direct_ok;                /* O_DIRECT is available for segment writes */
    bool map_ok;                   /* its fds are real files that mmap(2) can map */
};

/*
 * Opens the real backend on folder <dir> (which must exist) and locks the folder (flock on
 * it, exclusive) for as long as the backend lives: two processes in one data folder would
 * each recover, seal and delete the other's active segments. Returns 0 and *<out> (release
 * with blob_io_real_destroy), -EBUSY when another process holds the folder, or -errno.
 */
MUST_CHECK int blob_io_real_create(const char *dir, struct blob_io **out);

/* Closes the folder and frees the backend. NULL is accepted. */
void blob_io_real_destroy(struct blob_io *io);

/* Shorthands for the engine. */
static inline int blob_io_submit(struct blob_io *io, struct ring_core *core, struct blob_aio *a,
                                 const struct blob_io_req *req)
{
    ASSERT(a->fn);
    ASSERT(!a->handle);
    return io->ops->submit(io, core, a, req);
}

/*
 * The error of a write of <len> bytes that returned <res>: 0 when it wrote them all, <res>
 * when it failed, -ENOSPC when it came back short. A write to a regular file stops short only
 * when the file system (or the user's quota) has no block left for the rest: the kernel writes
 * what fits and keeps ENOSPC for the next call. It is a full disk, and must be answered as one
 * (RESOURCE_EXHAUSTED / 507, which clients retry), not as a failing disk (-EIO, an internal
 * error).
 */
static inline int blob_io_write_err(int64_t res, size_t len)
{
    if (res < 0) return (int)res;
    return (uint64_t)res == len ? 0 : -ENOSPC;
}

/* True when <err> from blob_io_ops.open means the name is not a regular file. */
static inline bool blob_io_not_regular(int err)
{
    return err == -EISDIR || err == -ENODEV;
}

static inline bool blob_aio_is_busy(const struct blob_aio *a)
{
    return a->handle != NULL;
}

/* Reads exactly <len> bytes at <off> (looping over short reads); -EIO when the file ends. */
MUST_CHECK int blob_io_pread_full(struct blob_io *io, int fd, void *buf, size_t len, uint64_t off);

/* Writes exactly <len> bytes at <off>; a short write is -ENOSPC (blob_io_write_err). */
MUST_CHECK int blob_io_pwrite_full(struct blob_io *io, int fd, const void *buf, size_t len,
                                   uint64_t off);

#endif /* RINGCAS_BLOB_IO_H */
