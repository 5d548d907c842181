/*
 * The real I/O backend: blocking calls are the plain syscalls relative to the folder's fd
 * (EINTR retried in one place); asynchronous requests go to the core's io_uring as one op
 * each, with no linked timeout (disk I/O is not cancellable once it runs, and a stuck disk is
 * the operator's alarm, not a request's).
 */
#include "blob/io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"

struct real_io {
    struct blob_io io; /* first: the seam */
    int dir_fd;        /* the store's folder */
    char *dir;         /* its path, for opendir */
};

static struct real_io *real_of(struct blob_io *io)
{
    return (struct real_io *)(void *)io;
}

/*
 * Refuses an open file that is not a regular file (<f> is closed then): -EISDIR for a folder,
 * -ENODEV for anything else. Else clears the O_NONBLOCK the open used: io_uring gives -EAGAIN
 * back instead of waiting for a file marked O_NONBLOCK on some file systems.
 */
static int open_check_regular(int f)
{
    struct stat st;
    int rc = 0;
    if (fstat(f, &st) == -1) {
        rc = -errno;
    } else if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -ENODEV;
    } else {
        int fl = fcntl(f, F_GETFL);
        if (fl == -1 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) == -1) rc = -errno;
    }
    if (rc < 0) (void)close(f);
    return rc;
}

/*
 * A read-only open asks for O_NOATIME: reads of a segment are the server's own business, and
 * relatime would otherwise write the inode at a segment's first read after each write (a
 * touch_atime check on every read). The kernel refuses it (EPERM) for files another user
 * owns, such as a folder copied in by root: those are opened as before.
 *
 * Every open is O_NONBLOCK until the file is known to be regular: a FIFO named like a segment
 * would otherwise block a read-only open until a writer came, and start-up or fsck with it,
 * forever and without a word (a device would be read as a segment).
 */
static int real_open(struct blob_io *io, const char *name, int flags, int *fd)
{
    bool noatime = (flags & O_ACCMODE) == O_RDONLY;
    int f;
    for (;;) {
        int extra = O_CLOEXEC | O_NONBLOCK | (noatime ? O_NOATIME : 0);
        f = openat(real_of(io)->dir_fd, name, flags | extra, 0644);
        if (f != -1) break;
        if (errno == EPERM && noatime) {
            noatime = false;
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    int rc = open_check_regular(f);
    if (rc < 0) return rc;
    *fd = f;
    return 0;
}

static int real_close(struct blob_io *io, int fd)
{
    (void)io;
    /* close(2) is not retried on EINTR: the fd is gone either way on Linux. */
    return close(fd) == -1 ? -errno : 0;
}

static int64_t real_pread(struct blob_io *io, int fd, void *buf, size_t len, uint64_t off)
{
    (void)io;
    ssize_t n;
    do {
        n = pread(fd, buf, len, (off_t)off);
    } while (n == -1 && errno == EINTR);
    return n == -1 ? -errno : n;
}

static int64_t real_pwrite(struct blob_io *io, int fd, const void *buf, size_t len, uint64_t off)
{
    (void)io;
    ssize_t n;
    do {
        n = pwrite(fd, buf, len, (off_t)off);
    } while (n == -1 && errno == EINTR);
    return n == -1 ? -errno : n;
}

static int real_fdatasync(struct blob_io *io, int fd)
{
    (void)io;
    return fdatasync(fd) == -1 ? -errno : 0;
}

static int real_ftruncate(struct blob_io *io, int fd, uint64_t size)
{
    (void)io;
    return ftruncate(fd, (off_t)size) == -1 ? -errno : 0;
}

static int real_fsize(struct blob_io *io, int fd, uint64_t *size)
{
    (void)io;
    struct stat st;
    if (fstat(fd, &st) == -1) return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int real_unlink(struct blob_io *io, const char *name)
{
    return unlinkat(real_of(io)->dir_fd, name, 0) == -1 ? -errno : 0;
}

static int real_rename(struct blob_io *io, const char *from, const char *to)
{
    int d = real_of(io)->dir_fd;
    return renameat(d, from, d, to) == -1 ? -errno : 0;
}

static int real_fsync_dir(struct blob_io *io)
{
    return fsync(real_of(io)->dir_fd) == -1 ? -errno : 0;
}

static int real_space(struct blob_io *io, uint64_t *avail, uint64_t *total)
{
    struct statvfs st;
    if (fstatvfs(real_of(io)->dir_fd, &st) == -1) return -errno;
    if (st.f_blocks == 0) return -ENOTSUP; /* a file system that does not say (some FUSE ones) */
    *avail = (uint64_t)st.f_bavail * st.f_frsize;
    *total = (uint64_t)st.f_blocks * st.f_frsize;
    return 0;
}

static int real_folder_check(struct blob_io *io)
{
    struct stat st;
    if (fstat(real_of(io)->dir_fd, &st) == -1) return -errno;
    return st.st_nlink == 0 ? -ENOENT : 0;
}

/*
 * An unnamed file (O_TMPFILE), closed at once, so nothing is left in the folder. ext4's
 * emergency read-only mode after an error leaves the mount's flags "rw" (statvfs says
 * nothing), so the attempt is the test; where O_TMPFILE is not supported the mount's flags
 * are all there is.
 */
static int real_folder_writable(struct blob_io *io)
{
    int dir = real_of(io)->dir_fd;
    int fd = openat(dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) {
        (void)close(fd);
        return 0;
    }
    if (errno == EROFS) return -EROFS;
    struct statvfs st;
    if (fstatvfs(dir, &st) == 0 && (st.f_flag & ST_RDONLY)) return -EROFS;
    return 0;
}

static int real_list(struct blob_io *io, blob_io_name_fn *fn, void *ctx)
{
    DIR *d = opendir(real_of(io)->dir);
    if (!d) return -errno;
    /* Bounded by the folder's entries. */
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d); /* NOLINT(concurrency-mt-unsafe): one DIR per call */
        if (!e) break;
        if (e->d_name[0] != '.') fn(ctx, e->d_name);
    }
    int rc = errno ? -errno : 0;
    closedir(d);
    return rc;
}

static void real_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)flags;
    struct blob_aio *a = op->ctx;
    ASSERT(a->handle == op);
    a->handle = NULL;
    /* A timeout that ran its course completes with -ETIME: for a sleep, that is success. */
    if (op->opcode == IORING_OP_TIMEOUT && res == -ETIME) res = 0;
    a->fn(a, res);
}

/* IORING_OP_FTRUNCATE (Linux 6.9): liburing 2.3 predates it, so the SQE is prepared by hand. */
enum {
    REAL_OP_FTRUNCATE = 55
};

static int real_submit(struct blob_io *io, struct ring_core *core, struct blob_aio *a,
                       const struct blob_io_req *req)
{
    ASSERT(core);
    struct ring_op *op = ring_op_get(core, NULL, real_done, a);
    if (!op) return -EAGAIN;
    struct io_uring_sqe *sqe = ring_op_sqe(op, 0);
    switch (req->op) {
    case BLOB_IO_READ:
        io_uring_prep_read(sqe, req->fd, req->buf, req->len, req->off);
        break;
    case BLOB_IO_WRITE:
        io_uring_prep_write(sqe, req->fd, req->buf, req->len, req->off);
        break;
    case BLOB_IO_FDATASYNC:
        io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
        break;
    case BLOB_IO_OPEN:
        io_uring_prep_openat(sqe, real_of(io)->dir_fd, req->name, req->flags | O_CLOEXEC, 0644);
        break;
    case BLOB_IO_CLOSE:
        io_uring_prep_close(sqe, req->fd);
        break;
    case BLOB_IO_FSYNC_DIR:
        io_uring_prep_fsync(sqe, real_of(io)->dir_fd, 0);
        break;
    case BLOB_IO_FALLOCATE:
        io_uring_prep_fallocate(sqe, req->fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)req->off);
        break;
    case BLOB_IO_TRUNCATE:
        /* Cutting at the file's own size still frees what fallocate reserved past it (ext4,
         * XFS); a hole punched past the end would not on ext4. */
        io_uring_prep_rw(REAL_OP_FTRUNCATE, sqe, req->fd, NULL, 0, req->off);
        break;
    case BLOB_IO_SLEEP:
        /* The op's own timespec: the kernel reads it when the SQE is submitted. */
        op->ts.tv_sec = (long long)(req->off / 1000);
        op->ts.tv_nsec = (long long)(req->off % 1000) * 1000000;
        io_uring_prep_timeout(sqe, &op->ts, 0, 0);
        break;
    default:
        UNREACHABLE();
    }
    a->handle = op;
    ring_op_commit(op, sqe);
    if (req->op == BLOB_IO_WRITE) {
        /* Submit now: a core busy hashing and compressing the next buffer may not enter the
         * kernel for milliseconds, and the write would wait for it instead of overlapping. */
        (void)io_uring_submit(ring_core_uring(core));
    }
    return 0;
}

static void real_cancel(struct blob_io *io, struct blob_aio *a)
{
    (void)io;
    if (a->handle) ring_op_cancel(a->handle);
}

static void real_defer(struct blob_io *io, struct ring_core *core, struct ring_task *task)
{
    (void)io;
    ring_task_defer(core, task);
}

static const struct blob_io_ops real_ops = {
    .open = real_open,
    .close = real_close,
    .pread = real_pread,
    .pwrite = real_pwrite,
    .fdatasync = real_fdatasync,
    .ftruncate = real_ftruncate,
    .fsize = real_fsize,
    .unlink = real_unlink,
    .rename = real_rename,
    .fsync_dir = real_fsync_dir,
    .list = real_list,
    .space = real_space,
    .folder_check = real_folder_check,
    .folder_writable = real_folder_writable,
    .submit = real_submit,
    .cancel = real_cancel,
    .defer = real_defer,
};

int blob_io_real_create(const char *dir, struct blob_io **out)
{
    struct real_io *r = calloc(1, sizeof(*r));
    if (!r) return -ENOMEM;
    r->dir = strdup(dir);
    r->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (!r->dir || r->dir_fd == -1) {
        rc = r->dir ? -errno : -ENOMEM;
    } else if (flock(r->dir_fd, LOCK_EX | LOCK_NB) == -1) {
        /* Released when dir_fd is closed, also by a crash. A file system without locks (NFS
         * emulates flock with write locks, which a read-only fd cannot take; some FUSE file
         * systems have none) must not stop the server: it runs unguarded, and says so. */
        if (errno == EWOULDBLOCK) {
            rc = -EBUSY;
        } else {
            LOG_WARN("data folder %s cannot be locked (%s): a second ringcas started on it "
                     "would not be refused",
                     dir, base_err_str(-errno));
        }
    }
    if (rc < 0) {
        if (r->dir_fd >= 0) close(r->dir_fd);
        free(r->dir);
        free(r);
        return rc;
    }
    r->io.ops = &real_ops;
    r->io.direct_ok = true;
    r->io.map_ok = true;
    *out = &r->io;
    return 0;
}

void blob_io_real_destroy(struct blob_io *io)
{
    if (!io) return;
    struct real_io *r = real_of(io);
    close(r->dir_fd);
    free(r->dir);
    free(r);
}

int blob_io_pread_full(struct blob_io *io, int fd, void *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    /* Bounded: each pass reads at least one byte or returns. */
    while (done < len) {
        int64_t n = io->ops->pread(io, fd, (uint8_t *)buf + done, len - done, off + done);
        if (n < 0) return (int)n;
        if (n == 0) return -EIO;
        done += (size_t)n;
    }
    return 0;
}

int blob_io_pwrite_full(struct blob_io *io, int fd, const void *buf, size_t len, uint64_t off)
{
    return blob_io_write_err(io->ops->pwrite(io, fd, buf, len, off), len);
}
