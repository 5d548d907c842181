/*
 * The real backend of the I/O seam: blocking calls on a temporary folder, and requests
 * through a real io_uring core (open, write, read, fdatasync, folder fsync, close, cancel),
 * whose completions never run inside the submitting call.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/io.h"
#include "ring/core.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/blobio.XXXXXX");
    cr_assert(ne(ptr, mkdtemp(dir), NULL));
}

static void drop_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert(eq(int, system(cmd), 0)); /* NOLINT(cert-env33-c) */
}

struct names {
    int n;
    bool saw_a;
};

static void name_cb(void *ctx, const char *name)
{
    struct names *n = ctx;
    n->n++;
    if (strcmp(name, "a") == 0) n->saw_a = true;
}

Test(blob_io, blocking_calls_work_relative_to_the_folder)
{
    make_dir();
    struct blob_io *io;
    cr_assert(eq(int, blob_io_real_create(dir, &io), 0));
    int fd;
    cr_assert(eq(int, io->ops->open(io, "a", O_CREAT | O_RDWR | O_EXCL, &fd), 0));
    cr_assert(eq(int, io->ops->open(io, "a", O_CREAT | O_RDWR | O_EXCL, &fd), -EEXIST));
    cr_assert(eq(int, blob_io_pwrite_full(io, fd, "abcdef", 6, 10), 0));
    char buf[7] = { 0 };
    cr_assert(eq(int, blob_io_pread_full(io, fd, buf, 6, 10), 0));
    cr_assert(eq(str, buf, "abcdef"));
    cr_assert(eq(int, blob_io_pread_full(io, fd, buf, 6, 14), -EIO), "past the end");
    uint64_t size;
    cr_assert(eq(int, io->ops->fsize(io, fd, &size), 0));
    cr_assert(eq(u64, size, 16));
    cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
    cr_assert(eq(int, io->ops->ftruncate(io, fd, 4), 0));
    cr_assert(eq(int, io->ops->fsize(io, fd, &size), 0));
    cr_assert(eq(u64, size, 4));
    cr_assert(eq(int, io->ops->fsync_dir(io), 0));
    struct names n = { 0 };
    cr_assert(eq(int, io->ops->list(io, name_cb, &n), 0));
    cr_assert(eq(int, n.n, 1));
    cr_assert(n.saw_a);
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    cr_assert(eq(int, io->ops->rename(io, "a", "b"), 0));
    cr_assert(eq(int, io->ops->unlink(io, "a"), -ENOENT));
    cr_assert(eq(int, io->ops->unlink(io, "b"), 0));
    blob_io_real_destroy(io);
    blob_io_real_destroy(NULL);
    drop_dir();
    cr_assert(eq(int, blob_io_real_create("/nonexistent/x", &io), -ENOENT));
}

/* Nonzero: flock() fails with this errno, as on a file system without locks. This file's flock
 * is the one the store calls (an executable's symbol comes before libc's). */
static int flock_errno;

int flock(int fd, int op)
{
    if (flock_errno) {
        errno = flock_errno;
        return -1;
    }
    return (int)syscall(SYS_flock, fd, op);
}

Test(blob_io, a_folder_that_cannot_be_locked_is_used_unguarded)
{
    make_dir();
    struct blob_io *a;
    struct blob_io *b;
    flock_errno = ENOLCK;
    cr_assert(eq(int, blob_io_real_create(dir, &a), 0), "refused on a file system without locks");
    cr_assert(eq(int, blob_io_real_create(dir, &b), 0));
    flock_errno = 0;
    blob_io_real_destroy(a);
    blob_io_real_destroy(b);
    drop_dir();
}

Test(blob_io, a_folder_is_used_by_one_backend_at_a_time)
{
    make_dir();
    struct blob_io *a;
    struct blob_io *b;
    cr_assert(eq(int, blob_io_real_create(dir, &a), 0));
    cr_assert(eq(int, blob_io_real_create(dir, &b), -EBUSY));
    /* Another process too: flock belongs to the open folder, and the child opens its own. */
    pid_t pid = fork();
    cr_assert(ge(int, pid, 0));
    if (pid == 0) {
        struct blob_io *c;
        _exit(blob_io_real_create(dir, &c) == -EBUSY ? 0 : 1);
    }
    int status = 0;
    cr_assert(eq(int, waitpid(pid, &status, 0), pid));
    bool refused = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    cr_assert(refused, "the child could open the folder");
    blob_io_real_destroy(a);
    cr_assert(eq(int, blob_io_real_create(dir, &b), 0), "free again once the first is closed");
    blob_io_real_destroy(b);
    drop_dir();
}

struct done {
    int calls;
    int32_t res;
    bool in_submit;
};

static void done_cb(struct blob_aio *a, int32_t res)
{
    struct done *d = a->ctx;
    cr_assert(not(d->in_submit), "completion inside submit");
    d->calls++;
    d->res = res;
}

static int32_t run(struct ring_core *core, struct blob_io *io, struct blob_aio *a,
                   const struct blob_io_req *req)
{
    struct done *d = a->ctx;
    int before = d->calls;
    d->in_submit = true;
    cr_assert(eq(int, blob_io_submit(io, core, a, req), 0));
    d->in_submit = false;
    for (int i = 0; i < 500 && d->calls == before; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(int, d->calls, before + 1));
    return d->res;
}

/* A temporary folder, a small real core and the real backend on both. */
static void ring_open(struct ring_core **core, struct blob_io **io)
{
    make_dir();
    struct ring_core_options o;
    ring_core_options_default(&o);
    o.recv_buf_count = 16;
    o.recv_buf_size = 4096;
    char why[256];
    cr_assert(eq(int, ring_core_create(&o, 0, core, why, sizeof(why)), 0), "%s", why);
    cr_assert(eq(int, blob_io_real_create(dir, io), 0));
}

static void ring_close(struct ring_core *core, struct blob_io *io)
{
    blob_io_real_destroy(io);
    ring_core_destroy(core);
    drop_dir();
}

Test(blob_io, requests_go_through_the_core_ring)
{
    struct ring_core *core;
    struct blob_io *io;
    ring_open(&core, &io);
    struct done d = { 0 };
    struct blob_aio a = { .fn = done_cb, .ctx = &d };
    struct blob_io_req op = { .op = BLOB_IO_OPEN,
                              .name = "seg",
                              .flags = O_CREAT | O_RDWR | O_DIRECT };
    int fd = run(core, io, &a, &op);
    if (fd == -EINVAL) { /* a folder on tmpfs: no O_DIRECT */
        op.flags = O_CREAT | O_RDWR;
        fd = run(core, io, &a, &op);
    }
    cr_assert(ge(int, fd, 0));
    uint8_t *buf = aligned_alloc(4096, 8192);
    memset(buf, 0x5a, 8192);
    struct blob_io_req w = { .op = BLOB_IO_WRITE, .fd = fd, .buf = buf, .len = 8192, .off = 4096 };
    cr_assert(eq(int, run(core, io, &a, &w), 8192));
    struct blob_io_req s = { .op = BLOB_IO_FDATASYNC, .fd = fd };
    cr_assert(eq(int, run(core, io, &a, &s), 0));
    struct blob_io_req ds = { .op = BLOB_IO_FSYNC_DIR };
    cr_assert(eq(int, run(core, io, &a, &ds), 0));
    memset(buf, 0, 8192);
    struct blob_io_req r = { .op = BLOB_IO_READ, .fd = fd, .buf = buf, .len = 4096, .off = 8192 };
    cr_assert(eq(int, run(core, io, &a, &r), 4096));
    cr_assert(eq(u8, buf[100], 0x5a));
    struct blob_io_req c = { .op = BLOB_IO_CLOSE, .fd = fd };
    cr_assert(eq(int, run(core, io, &a, &c), 0));
    cr_assert(not(blob_aio_is_busy(&a)));
    free(buf);
    cr_assert(eq(u64, base_counter_get(&ring_core_counters(core)->ops_in_flight), 0));
    ring_close(core, io);
}

Test(blob_io, a_cancelled_read_of_a_pipe_completes_with_ecanceled)
{
    struct ring_core *core;
    struct blob_io *io;
    ring_open(&core, &io);
    /* A read that never completes on its own: an empty pipe. */
    int p[2];
    cr_assert(eq(int, pipe(p), 0));
    struct done d = { 0 };
    struct blob_aio a = { .fn = done_cb, .ctx = &d };
    char buf[16];
    struct blob_io_req r = { .op = BLOB_IO_READ, .fd = p[0], .buf = buf, .len = 16, .off = 0 };
    r.off = (uint64_t)-1; /* current position, as pipes need */
    cr_assert(eq(int, blob_io_submit(io, core, &a, &r), 0));
    cr_assert(eq(int, ring_core_tick(core, 0) >= 0, 1));
    cr_assert(eq(int, d.calls, 0));
    io->ops->cancel(io, &a);
    for (int i = 0; i < 500 && d.calls == 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(int, d.calls, 1));
    cr_assert(eq(int, d.res, -ECANCELED));
    close(p[0]);
    close(p[1]);
    ring_close(core, io);
}

Test(blob_io, fallocate_reserves_without_growing_the_file)
{
    struct ring_core *core;
    struct blob_io *io;
    ring_open(&core, &io);
    struct done d = { 0 };
    struct blob_aio a = { .fn = done_cb, .ctx = &d };
    struct blob_io_req op = { .op = BLOB_IO_OPEN, .name = "f", .flags = O_CREAT | O_RDWR };
    int fd = run(core, io, &a, &op);
    cr_assert(ge(int, fd, 0));
    struct blob_io_req fa = { .op = BLOB_IO_FALLOCATE, .fd = fd, .off = 1 << 20 };
    int res = run(core, io, &a, &fa);
    cr_assert(res == 0 || res == -EOPNOTSUPP, "fallocate: %d", res);
    uint64_t size;
    cr_assert(eq(int, io->ops->fsize(io, fd, &size), 0));
    cr_assert(eq(u64, size, 0), "KEEP_SIZE: the size stays");
    /* A truncation at the file's own size gives the reserved blocks back (a segment sealed
     * before it filled does this). */
    static const uint8_t block[4096];
    struct blob_io_req w = { .op = BLOB_IO_WRITE, .fd = fd, .buf = (void *)block, .len = 4096 };
    cr_assert(eq(int, run(core, io, &a, &w), 4096));
    struct stat st;
    cr_assert(eq(int, fstat(fd, &st), 0));
    if (res == 0) cr_assert(ge(i64, (int64_t)st.st_blocks * 512, 1 << 20), "reserved");
    struct blob_io_req tr = { .op = BLOB_IO_TRUNCATE, .fd = fd, .off = 4096 };
    cr_assert(eq(int, run(core, io, &a, &tr), 0), "IORING_OP_FTRUNCATE (Linux 6.9)");
    cr_assert(eq(int, fstat(fd, &st), 0));
    cr_assert(eq(i64, (int64_t)st.st_size, 4096));
    cr_assert(le(i64, (int64_t)st.st_blocks * 512, 64 << 10), "%lld bytes still reserved",
              (long long)st.st_blocks * 512);
    struct blob_io_req c = { .op = BLOB_IO_CLOSE, .fd = fd };
    cr_assert(eq(int, run(core, io, &a, &c), 0));
    ring_close(core, io);
}

/*
 * A sleep is an IORING_OP_TIMEOUT, which completes with -ETIME when it runs its course: the
 * backend answers 0, the caller (a new segment polling the evictor) tells it from a failure.
 */
Test(blob_io, a_sleep_on_the_ring_completes_with_0)
{
    struct ring_core *core;
    struct blob_io *io;
    ring_open(&core, &io);
    struct done d = { 0 };
    struct blob_aio a = { .fn = done_cb, .ctx = &d };
    struct blob_io_req sl = { .op = BLOB_IO_SLEEP, .off = 20 };
    cr_assert(eq(int, run(core, io, &a, &sl), 0));
    cr_assert(not(blob_aio_is_busy(&a)));
    cr_assert(eq(u64, base_counter_get(&ring_core_counters(core)->ops_in_flight), 0));
    ring_close(core, io);
}
