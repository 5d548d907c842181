/*
 * The simulated disk (see io_sim.h). Single-threaded by design: the test's thread plays
 * both the core and the disk. Sections: files, blocking calls, requests, power loss.
 *
 * Invariants: a file's durable image equals its current one right after an fdatasync; the
 * pending list holds exactly the writes since, in order; an fd names an existing file.
 */
#include "blob/io_sim.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"

#define FILES_MAX 4096U
#define FDS_MAX   1024U
#define FD_BASE   100
#define QUEUE_MAX 8192U
#define SECTOR    512U
#define NAME_SIZE 64U

struct sim_write {
    uint64_t off;  /* file offset */
    uint32_t len;  /* bytes */
    uint8_t *data; /* copy of what was written */
};

struct sim_file {
    char name[NAME_SIZE];      /* "" when the slot is free or the file unlinked */
    bool orphan;               /* unlinked while open: lives until its last fd closes */
    bool entry_durable;        /* a folder fsync happened since creation */
    uint8_t *cur;              /* what reads see */
    uint64_t cur_size;         /* bytes in cur */
    uint8_t *dur;              /* what survives a power loss */
    uint64_t dur_size;         /* bytes in dur */
    uint64_t alloc;            /* bytes reserved by fallocate (KEEP_SIZE) */
    struct sim_write *pending; /* writes since the last fdatasync */
    uint32_t pending_len;      /* used entries */
    uint32_t pending_size;     /* capacity */
};

struct sim_req {
    struct blob_aio *aio;   /* the caller's request */
    struct blob_io_req req; /* a copy */
    bool cancelled;         /* cancel() was called */
};

struct sim_io {
    struct blob_io io;                /* first: the seam */
    uint64_t rng;                     /* splitmix64 state */
    struct sim_file files[FILES_MAX]; /* the folder */
    int32_t fds[FDS_MAX];             /* file index + 1, or 0 */
    struct sim_req *queue[QUEUE_MAX]; /* requests in flight */
    uint32_t queue_len;               /* entries in queue */
    struct base_list deferred;        /* ring_task.link */
    uint64_t ops;                     /* operations performed */
    uint64_t fail_at;                 /* ops value that fails, 0: none */
    int fault;                        /* -EIO, -ENOSPC or BLOB_IO_SIM_SHORT */
    bool full;                        /* writes and reservations fail -ENOSPC (blob_io_sim_full) */
    bool read_only;                   /* every change fails -EROFS (blob_io_sim_read_only) */
    uint64_t capacity;                /* the disk's size (blob_io_sim_capacity), 0: unlimited */
    uint64_t others;                  /* bytes other files take (blob_io_sim_others) */
    uint8_t slow_op;                  /* requests of this type complete late (blob_io_sim_slow) */
    uint64_t slow_ns;                 /* by this much real time */
    uint64_t late_ns;                 /* freed files keep their blocks this long (frees_late) */
    uint64_t freeing;                 /* bytes of files freed late, taken until ... */
    uint64_t freeing_until;           /* ... this monotonic time */
    bool dead;                        /* power is off */
};

static struct sim_io *sim_of(struct blob_io *io)
{
    return (struct sim_io *)(void *)io;
}

uint64_t blob_io_sim_rand(struct blob_io *io)
{
    struct sim_io *s = sim_of(io);
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Counts an operation and returns the fault it must suffer, or 0. */
static int sim_tick(struct sim_io *s)
{
    if (s->dead) return -EIO;
    s->ops++;
    if (s->fail_at != 0 && s->ops == s->fail_at) return s->fault;
    return 0;
}

/* ---- files ---- */

static struct sim_file *file_find(struct sim_io *s, const char *name)
{
    for (uint32_t i = 0; i < FILES_MAX; i++) {
        if (s->files[i].name[0] && strcmp(s->files[i].name, name) == 0) return &s->files[i];
    }
    return NULL;
}

static void file_free(struct sim_file *f)
{
    for (uint32_t i = 0; i < f->pending_len; i++) {
        free(f->pending[i].data);
    }
    free(f->pending);
    free(f->cur);
    free(f->dur);
    memset(f, 0, sizeof(*f));
}

static struct sim_file *file_of_fd(struct sim_io *s, int fd)
{
    int i = fd - FD_BASE;
    if (i < 0 || (uint32_t)i >= FDS_MAX || s->fds[i] == 0) return NULL;
    return &s->files[s->fds[i] - 1];
}

/* Bytes file <f> takes on the simulated disk. */
static uint64_t file_blocks(const struct sim_file *f)
{
    return f->cur_size > f->alloc ? f->cur_size : f->alloc;
}

/* Bytes every file takes, unlinked ones still open included, and those freed late. */
static uint64_t disk_used(const struct sim_io *s)
{
    uint64_t used = s->others;
    if (s->freeing > 0 && base_clock_now_ns() < s->freeing_until) used += s->freeing;
    for (uint32_t i = 0; i < FILES_MAX; i++) {
        const struct sim_file *f = &s->files[i];
        if (f->name[0] || f->orphan) used += file_blocks(f);
    }
    return used;
}

/* <f>'s last name and fd are gone: its blocks are free now, or after late_ns. */
static void file_release(struct sim_io *s, struct sim_file *f)
{
    if (s->late_ns > 0) {
        uint64_t now = base_clock_now_ns();
        if (now >= s->freeing_until) s->freeing = 0;
        s->freeing += file_blocks(f);
        s->freeing_until = now + s->late_ns;
    }
    file_free(f);
}

/* -ENOSPC when growing <f> to <end> bytes would pass the disk's capacity, else 0. */
static int disk_room(const struct sim_io *s, const struct sim_file *f, uint64_t end)
{
    if (s->read_only) return -EROFS;
    if (s->full) return -ENOSPC;
    uint64_t have = file_blocks(f);
    if (s->capacity == 0 || end <= have) return 0;
    return disk_used(s) + (end - have) > s->capacity ? -ENOSPC : 0;
}

static void image_write(uint8_t **img, uint64_t *size, uint64_t off, const uint8_t *p, uint64_t len)
{
    if (off + len > *size) {
        uint8_t *n = realloc(*img, off + len);
        ASSERT(n);
        memset(n + *size, 0, off + len - *size);
        *img = n;
        *size = off + len;
    }
    memcpy(*img + off, p, len);
}

static void file_sync(struct sim_file *f)
{
    free(f->dur);
    f->dur = malloc(f->cur_size ? f->cur_size : 1);
    ASSERT(f->dur);
    if (f->cur_size > 0) memcpy(f->dur, f->cur, f->cur_size);
    f->dur_size = f->cur_size;
    for (uint32_t i = 0; i < f->pending_len; i++) {
        free(f->pending[i].data);
    }
    f->pending_len = 0;
}

static void file_write(struct sim_file *f, const uint8_t *p, uint64_t len, uint64_t off)
{
    image_write(&f->cur, &f->cur_size, off, p, len);
    if (f->pending_len == f->pending_size) {
        f->pending_size = f->pending_size ? f->pending_size * 2 : 8;
        f->pending = realloc(f->pending, f->pending_size * sizeof(*f->pending));
        ASSERT(f->pending);
    }
    struct sim_write *w = &f->pending[f->pending_len++];
    w->off = off;
    w->len = (uint32_t)len;
    w->data = malloc(len ? len : 1);
    ASSERT(w->data);
    memcpy(w->data, p, len);
}

/* ---- blocking calls ---- */

static int sim_open(struct blob_io *io, const char *name, int flags, int *fd)
{
    struct sim_io *s = sim_of(io);
    int fault = sim_tick(s);
    if (fault) return fault < 0 ? fault : -EIO;
    if (s->read_only && (flags & (O_CREAT | O_WRONLY | O_RDWR))) return -EROFS;
    struct sim_file *f = file_find(s, name);
    if (!f && !(flags & O_CREAT)) return -ENOENT;
    if (f && (flags & O_EXCL)) return -EEXIST;
    if (!f) {
        for (uint32_t i = 0; i < FILES_MAX && !f; i++) {
            if (!s->files[i].name[0] && !s->files[i].orphan) f = &s->files[i];
        }
        if (!f || strlen(name) >= NAME_SIZE) return -ENOSPC;
        memset(f, 0, sizeof(*f));
        memcpy(f->name, name, strlen(name) + 1);
    }
    for (uint32_t i = 0; i < FDS_MAX; i++) {
        if (s->fds[i] == 0) {
            s->fds[i] = (int32_t)(f - s->files) + 1;
            *fd = FD_BASE + (int)i;
            return 0;
        }
    }
    return -EMFILE;
}

static bool file_is_open(const struct sim_io *s, const struct sim_file *f)
{
    for (uint32_t i = 0; i < FDS_MAX; i++) {
        if (s->fds[i] == (int32_t)(f - s->files) + 1) return true;
    }
    return false;
}

static int sim_close(struct blob_io *io, int fd)
{
    struct sim_io *s = sim_of(io);
    struct sim_file *f = file_of_fd(s, fd);
    if (!f) return -EBADF;
    s->fds[fd - FD_BASE] = 0;
    if (f->orphan && !file_is_open(s, f)) file_release(s, f);
    return 0;
}

static int64_t sim_pread(struct blob_io *io, int fd, void *buf, size_t len, uint64_t off)
{
    struct sim_io *s = sim_of(io);
    int fault = sim_tick(s);
    if (fault) return fault < 0 ? fault : -EIO;
    struct sim_file *f = file_of_fd(s, fd);
    if (!f) return -EBADF;
    if (off >= f->cur_size) return 0;
    uint64_t n = f->cur_size - off < len ? f->cur_size - off : len;
    memcpy(buf, f->cur + off, n);
    return (int64_t)n;
}

static int64_t sim_pwrite(struct blob_io *io, int fd, const void *buf, size_t len, uint64_t off)
{
    struct sim_io *s = sim_of(io);
    int fault = sim_tick(s);
    if (fault < 0) return fault;
    struct sim_file *f = file_of_fd(s, fd);
    if (!f) return -EBADF;
    int rc = disk_room(s, f, off + len);
    if (rc < 0) return rc;
    if (fault == BLOB_IO_SIM_SHORT) len /= 2;
    file_write(f, buf, len, off);
    return (int64_t)len;
}

static int sim_fdatasync(struct blob_io *io, int fd)
{
    struct sim_io *s = sim_of(io);
    int fault = sim_tick(s);
    if (fault) return fault < 0 ? fault : -EIO;
    struct sim_file *f = file_of_fd(s, fd);
    if (!f) return -EBADF;
    file_sync(f);
    return 0;
}

static int sim_ftruncate(struct blob_io *io, int fd, uint64_t size)
{
    struct sim_io *s = sim_of(io);
    int fault = sim_tick(s);
    if (fault) return fault < 0 ? fault : -EIO;
    if (s->read_only) return -EROFS;
    struct sim_file *f = file_of_fd(s, fd);
    if (!f) return -EBADF;
    /* Simplification: the new size is durable at once (a journaled metadata change), but
     * not the data written before it: ftruncate(2) syncs nothing, so writes not yet synced
     * stay exposed to a power cut (only what lay past <size> is gone). It frees the blocks
     * reserved past <size>, as on a real file system. */
    if (f->alloc > size) f->alloc = size;
    if (size < f->cur_size) {
        f->cur_size = size;
    } else {
        uint8_t zero = 0;
        if (size > f->cur_size) image_write(&f->cur, &f->cur_size, size - 1, &zero, 1);
    }
    if (size < f->dur_size) {
        f->dur_size = size;
    } else {
        uint8_t zero = 0;
        if (size > f->dur_size) image_write(&f->dur, &f->dur_size, size - 1, &zero, 1);
    }
    /* Bounded by the pending writes: those past <size> are cut to it. */
    for (uint32_t i = 0; i < f->pending_len; i++) {
        struct sim_write *w = &f->pending[i];
        if (w->off >= size) {
            w->len = 0;
        } else if (w->off + w->len > size) {
            w->len = (uint32_t)(size - w->off);
        }
    }
    return 0;
}

static int sim_fsize(struct blob_io *io, int fd, uint64_t *size)
{
    struct sim_io *s = sim_of(io);
    if (s->dead) return -EIO;
    struct sim_file *f = file_of_fd(s, fd);
    if (!f) return -EBADF;
    *size = f->cur_size;
    return 0;
}

static int sim_unlink(struct blob_io *io, const char *name)
{
    struct sim_io *s = sim_of(io);
    int fault = sim_tick(s);
    if (fault) return fault < 0 ? fault : -EIO;
    if (s->read_only) return -EROFS;
    struct sim_file *f = file_find(s, name);
    if (!f) return -ENOENT;
    /* An open file stays readable through its fds, like an unlinked inode. */
    if (file_is_open(s, f)) {
        f->name[0] = '\0';
        f->orphan = true;
        return 0;
    }
    file_release(s, f);
    return 0;
}

static int sim_rename(struct blob_io *io, const char *from, const char *to)
{
    struct sim_io *s = sim_of(io);
    int fault = sim_tick(s);
    if (fault) return fault < 0 ? fault : -EIO;
    struct sim_file *f = file_find(s, from);
    if (!f || strlen(to) >= NAME_SIZE) return -ENOENT;
    struct sim_file *old = file_find(s, to);
    if (old) file_free(old);
    memcpy(f->name, to, strlen(to) + 1);
    return 0;
}

static int sim_fsync_dir(struct blob_io *io)
{
    struct sim_io *s = sim_of(io);
    int fault = sim_tick(s);
    if (fault) return fault < 0 ? fault : -EIO;
    for (uint32_t i = 0; i < FILES_MAX; i++) {
        s->files[i].entry_durable = true;
    }
    return 0;
}

static int sim_list(struct blob_io *io, blob_io_name_fn *fn, void *ctx)
{
    struct sim_io *s = sim_of(io);
    if (s->dead) return -EIO;
    for (uint32_t i = 0; i < FILES_MAX; i++) {
        if (s->files[i].name[0]) fn(ctx, s->files[i].name);
    }
    return 0;
}

/* ---- requests ---- */

static int sim_submit(struct blob_io *io, struct ring_core *core, struct blob_aio *a,
                      const struct blob_io_req *req)
{
    (void)core;
    struct sim_io *s = sim_of(io);
    if (s->queue_len == QUEUE_MAX) return -EAGAIN;
    struct sim_req *r = calloc(1, sizeof(*r));
    if (!r) return -EAGAIN;
    r->aio = a;
    r->req = *req;
    a->handle = r;
    s->queue[s->queue_len++] = r;
    return 0;
}

static void sim_cancel(struct blob_io *io, struct blob_aio *a)
{
    (void)io;
    struct sim_req *r = a->handle;
    if (r && (r->req.op == BLOB_IO_READ)) r->cancelled = true;
}

static void sim_defer(struct blob_io *io, struct ring_core *core, struct ring_task *task)
{
    (void)core;
    struct sim_io *s = sim_of(io);
    if (!base_list_is_linked(&task->link)) base_list_add_tail(&s->deferred, &task->link);
}

static int32_t sim_perform(struct sim_io *s, const struct blob_io_req *q)
{
    struct blob_io *io = &s->io;
    int fd = -1;
    int rc;
    switch (q->op) {
    case BLOB_IO_READ:
        return (int32_t)sim_pread(io, q->fd, q->buf, q->len, q->off);
    case BLOB_IO_WRITE:
        return (int32_t)sim_pwrite(io, q->fd, q->buf, q->len, q->off);
    case BLOB_IO_FDATASYNC:
        return sim_fdatasync(io, q->fd);
    case BLOB_IO_OPEN:
        rc = sim_open(io, q->name, q->flags, &fd);
        return rc < 0 ? rc : fd;
    case BLOB_IO_CLOSE:
        return sim_close(io, q->fd);
    case BLOB_IO_FSYNC_DIR:
        return sim_fsync_dir(io);
    case BLOB_IO_FALLOCATE: {
        /* Blocks reserved, nothing visible. */
        rc = sim_tick(s);
        if (rc < 0) return rc;
        struct sim_file *f = file_of_fd(s, q->fd);
        if (!f) return -EBADF;
        rc = disk_room(s, f, q->off);
        if (rc == 0 && q->off > f->alloc) f->alloc = q->off;
        return rc;
    }
    case BLOB_IO_TRUNCATE:
        return sim_ftruncate(io, q->fd, q->off);
    case BLOB_IO_SLEEP:
        return 0; /* no disk operation: simulated time passes as the queue is run */
    default:
        UNREACHABLE();
    }
}

static void sim_run_tasks(struct sim_io *s)
{
    /* Bounded: tasks queued by tasks run in the same drain, as on a ring (4096 per drain). */
    for (int n = 0; n < 4096; n++) {
        struct base_list *node = base_list_pop_head(&s->deferred);
        if (!node) break;
        struct ring_task *t = BASE_CONTAINER_OF(node, struct ring_task, link);
        t->fn(t);
    }
}

uint32_t blob_io_sim_run(struct blob_io *io, uint32_t max_steps)
{
    struct sim_io *s = sim_of(io);
    uint32_t steps = 0;
    sim_run_tasks(s);
    while (steps < max_steps && s->queue_len > 0) {
        uint32_t i = (uint32_t)(blob_io_sim_rand(io) % s->queue_len);
        struct sim_req *r = s->queue[i];
        s->queue[i] = s->queue[--s->queue_len];
        int32_t res;
        if (r->cancelled) {
            res = -ECANCELED;
        } else if (s->dead && r->req.op != BLOB_IO_CLOSE) {
            res = -EIO;
        } else {
            if (s->slow_ns > 0 && r->req.op == s->slow_op) {
                const struct timespec ts = base_clock_timespec(s->slow_ns);
                (void)nanosleep(&ts, NULL);
            }
            res = sim_perform(s, &r->req);
        }
        struct blob_aio *a = r->aio;
        free(r);
        a->handle = NULL;
        a->fn(a, res);
        steps++;
        sim_run_tasks(s);
    }
    return steps;
}

bool blob_io_sim_is_idle(const struct blob_io *io)
{
    const struct sim_io *s = (const struct sim_io *)(const void *)io;
    return s->queue_len == 0 && base_list_is_empty(&s->deferred);
}

void blob_io_sim_slow(struct blob_io *io, uint8_t op, uint64_t ns)
{
    struct sim_io *s = sim_of(io);
    s->slow_op = op;
    s->slow_ns = ns;
}

void blob_io_sim_full(struct blob_io *io, bool full)
{
    sim_of(io)->full = full;
}

void blob_io_sim_read_only(struct blob_io *io, bool read_only)
{
    sim_of(io)->read_only = read_only;
}

static int sim_folder_writable(struct blob_io *io)
{
    return sim_of(io)->read_only ? -EROFS : 0;
}

void blob_io_sim_capacity(struct blob_io *io, uint64_t bytes)
{
    sim_of(io)->capacity = bytes;
}

void blob_io_sim_others(struct blob_io *io, uint64_t bytes)
{
    sim_of(io)->others = bytes;
}

void blob_io_sim_frees_late(struct blob_io *io, uint64_t ns)
{
    struct sim_io *s = sim_of(io);
    s->late_ns = ns;
    s->freeing = 0;
}

static int sim_space(struct blob_io *io, uint64_t *avail, uint64_t *total)
{
    const struct sim_io *s = sim_of(io);
    if (s->capacity == 0) return -ENOTSUP;
    uint64_t used = disk_used(s);
    *avail = used < s->capacity ? s->capacity - used : 0;
    *total = s->capacity;
    return 0;
}

void blob_io_sim_fail_at(struct blob_io *io, uint64_t nth, int fault)
{
    struct sim_io *s = sim_of(io);
    s->fail_at = nth ? s->ops + nth : 0;
    s->fault = fault;
}

uint64_t blob_io_sim_ops(const struct blob_io *io)
{
    return ((const struct sim_io *)(const void *)io)->ops;
}

/* ---- power loss ---- */

/* Torn: each sector of <w> reaches the durable image on its own (the engine's writes are
 * block-aligned; other offsets follow the write's own 512-byte steps). */
static void write_torn(struct sim_io *s, struct sim_file *f, const struct sim_write *w)
{
    for (uint32_t o = 0; o < w->len; o += SECTOR) {
        uint32_t n = w->len - o < SECTOR ? w->len - o : SECTOR;
        if (blob_io_sim_rand(&s->io) & 1) {
            image_write(&f->dur, &f->dur_size, w->off + o, w->data + o, n);
        }
    }
}

static void file_power_loss(struct sim_io *s, struct sim_file *f)
{
    for (uint32_t i = 0; i < f->pending_len; i++) {
        struct sim_write *w = &f->pending[i];
        if (w->len == 0) continue; /* cut off by a truncation */
        uint64_t r = blob_io_sim_rand(&s->io) % 3;
        if (r == 0) {
            image_write(&f->dur, &f->dur_size, w->off, w->data, w->len);
        } else if (r == 2) {
            write_torn(s, f, w);
        }
    }
    free(f->cur);
    f->cur = malloc(f->dur_size ? f->dur_size : 1);
    ASSERT(f->cur);
    if (f->dur_size > 0) memcpy(f->cur, f->dur, f->dur_size);
    f->cur_size = f->dur_size;
    for (uint32_t i = 0; i < f->pending_len; i++) {
        free(f->pending[i].data);
    }
    f->pending_len = 0;
}

void blob_io_sim_power_loss(struct blob_io *io)
{
    struct sim_io *s = sim_of(io);
    for (uint32_t i = 0; i < FILES_MAX; i++) {
        struct sim_file *f = &s->files[i];
        if (f->orphan) {
            file_free(f);
            continue;
        }
        if (!f->name[0]) continue;
        if (!f->entry_durable && (blob_io_sim_rand(io) & 1)) {
            file_free(f);
            continue;
        }
        file_power_loss(s, f);
    }
    s->dead = true;
    s->fail_at = 0;
}

void blob_io_sim_restart(struct blob_io *io)
{
    struct sim_io *s = sim_of(io);
    ASSERT(s->queue_len == 0);
    memset(s->fds, 0, sizeof(s->fds));
    for (uint32_t i = 0; i < FILES_MAX; i++) {
        if (s->files[i].name[0]) s->files[i].entry_durable = true;
    }
    s->dead = false;
}

int blob_io_sim_corrupt(struct blob_io *io, const char *name, uint64_t off, uint8_t mask)
{
    struct sim_file *f = file_find(sim_of(io), name);
    if (!f) return -ENOENT;
    if (off >= f->cur_size) return -ERANGE;
    f->cur[off] ^= mask;
    if (off < f->dur_size) f->dur[off] ^= mask;
    return 0;
}

int blob_io_sim_size(struct blob_io *io, const char *name, uint64_t *size)
{
    struct sim_file *f = file_find(sim_of(io), name);
    if (!f) return -ENOENT;
    *size = f->cur_size;
    return 0;
}

int blob_io_sim_blocks(struct blob_io *io, const char *name, uint64_t *bytes)
{
    struct sim_file *f = file_find(sim_of(io), name);
    if (!f) return -ENOENT;
    *bytes = file_blocks(f);
    return 0;
}

uint32_t blob_io_sim_open_fds(const struct blob_io *io)
{
    const struct sim_io *s = (const struct sim_io *)(const void *)io;
    uint32_t n = 0;
    for (uint32_t i = 0; i < FDS_MAX; i++) {
        n += s->fds[i] != 0;
    }
    return n;
}

static const struct blob_io_ops sim_ops = {
    .open = sim_open,
    .close = sim_close,
    .pread = sim_pread,
    .pwrite = sim_pwrite,
    .fdatasync = sim_fdatasync,
    .ftruncate = sim_ftruncate,
    .fsize = sim_fsize,
    .unlink = sim_unlink,
    .rename = sim_rename,
    .fsync_dir = sim_fsync_dir,
    .list = sim_list,
    .space = sim_space,
    .folder_writable = sim_folder_writable,
    .submit = sim_submit,
    .cancel = sim_cancel,
    .defer = sim_defer,
};

struct blob_io *blob_io_sim_create(uint64_t seed)
{
    struct sim_io *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    s->io.ops = &sim_ops;
    s->io.direct_ok = false;
    s->io.map_ok = false;
    s->rng = seed;
    base_list_init(&s->deferred);
    return &s->io;
}

void blob_io_sim_destroy(struct blob_io *io)
{
    if (!io) return;
    struct sim_io *s = sim_of(io);
    ASSERT(s->queue_len == 0);
    for (uint32_t i = 0; i < FILES_MAX; i++) {
        if (s->files[i].name[0] || s->files[i].orphan) file_free(&s->files[i]);
    }
    free(s);
}
