/*
 * The simulated disk itself: what a power loss keeps, drops or tears, directory entries,
 * fault injection, asynchronous completion and cancel, orphans, corruption, determinism.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/io_sim.h"

static int create(struct blob_io *io, const char *name)
{
    int fd = -1;
    cr_assert(eq(int, io->ops->open(io, name, O_CREAT | O_EXCL | O_WRONLY, &fd), 0));
    return fd;
}

static void put(struct blob_io *io, int fd, const char *s, uint64_t off)
{
    cr_assert(eq(int, blob_io_pwrite_full(io, fd, s, strlen(s), off), 0));
}

static uint64_t size_of(struct blob_io *io, const char *name)
{
    uint64_t size = 0;
    cr_assert(eq(int, blob_io_sim_size(io, name, &size), 0));
    return size;
}

Test(blob_io_sim, reads_see_writes_and_sync_makes_them_durable)
{
    struct blob_io *io = blob_io_sim_create(1);
    int fd = create(io, "a");
    put(io, fd, "hello", 0);
    char buf[16] = { 0 };
    cr_assert(eq(int, blob_io_pread_full(io, fd, buf, 5, 0), 0));
    cr_assert(eq(str, buf, "hello"));
    cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
    cr_assert(eq(int, io->ops->fsync_dir(io), 0));
    put(io, fd, "XXXXX", 0); /* unsynced */
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    blob_io_sim_power_loss(io);
    blob_io_sim_restart(io);
    cr_assert(eq(int, io->ops->open(io, "a", O_RDONLY, &fd), 0));
    cr_assert(eq(int, blob_io_pread_full(io, fd, buf, 5, 0), 0));
    /* Either image, sector by sector; never anything else. */
    cr_assert(strcmp(buf, "hello") == 0 || strcmp(buf, "XXXXX") == 0, "%s", buf);
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    blob_io_sim_destroy(io);
}

Test(blob_io_sim, a_power_loss_keeps_drops_or_tears_each_unsynced_write)
{
    int kept = 0;
    int dropped = 0;
    int torn = 0;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        struct blob_io *io = blob_io_sim_create(seed);
        int fd = create(io, "f");
        cr_assert(eq(int, io->ops->fsync_dir(io), 0));
        static char zeros[4096];
        cr_assert(eq(int, blob_io_pwrite_full(io, fd, zeros, sizeof(zeros), 0), 0));
        cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
        static char ones[4096];
        memset(ones, 1, sizeof(ones));
        cr_assert(eq(int, blob_io_pwrite_full(io, fd, ones, sizeof(ones), 0), 0));
        cr_assert(eq(int, io->ops->close(io, fd), 0));
        blob_io_sim_power_loss(io);
        blob_io_sim_restart(io);
        cr_assert(eq(int, io->ops->open(io, "f", O_RDONLY, &fd), 0));
        static char got[4096];
        cr_assert(eq(int, blob_io_pread_full(io, fd, got, sizeof(got), 0), 0));
        int ones_sectors = 0;
        for (int s = 0; s < 8; s++) {
            /* A sector is all old or all new. */
            cr_assert(got[s * 512] == got[s * 512 + 511]);
            ones_sectors += got[s * 512] == 1;
        }
        kept += ones_sectors == 8;
        dropped += ones_sectors == 0;
        torn += ones_sectors > 0 && ones_sectors < 8;
        cr_assert(eq(int, io->ops->close(io, fd), 0));
        blob_io_sim_destroy(io);
    }
    cr_assert(gt(int, kept, 20));
    cr_assert(gt(int, dropped, 20));
    cr_assert(gt(int, torn, 20));
}

Test(blob_io_sim, files_created_without_a_folder_fsync_may_vanish)
{
    int vanished = 0;
    for (uint64_t seed = 1; seed <= 50; seed++) {
        struct blob_io *io = blob_io_sim_create(seed);
        int fd = create(io, "new");
        put(io, fd, "data", 0);
        cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
        cr_assert(eq(int, io->ops->close(io, fd), 0));
        blob_io_sim_power_loss(io);
        blob_io_sim_restart(io);
        uint64_t size;
        vanished += blob_io_sim_size(io, "new", &size) == -ENOENT;
        blob_io_sim_destroy(io);
    }
    cr_assert(gt(int, vanished, 5));
    cr_assert(lt(int, vanished, 45));
}

Test(blob_io_sim, the_nth_operation_fails_as_asked)
{
    struct blob_io *io = blob_io_sim_create(2);
    int fd = create(io, "x");
    blob_io_sim_fail_at(io, 2, -ENOSPC);
    put(io, fd, "one", 0);
    cr_assert(eq(int, blob_io_pwrite_full(io, fd, "two", 3, 3), -ENOSPC));
    put(io, fd, "three", 3);
    blob_io_sim_fail_at(io, 1, BLOB_IO_SIM_SHORT);
    /* A short write is a full disk (the kernel keeps ENOSPC for the next call). */
    cr_assert(eq(int, blob_io_pwrite_full(io, fd, "abcdef", 6, 0), -ENOSPC), "short write");
    blob_io_sim_fail_at(io, 1, -EIO);
    cr_assert(eq(int, io->ops->fdatasync(io, fd), -EIO));
    blob_io_sim_fail_at(io, 3, -EIO);
    blob_io_sim_fail_at(io, 0, 0);
    cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
    cr_assert(gt(u64, blob_io_sim_ops(io), 5));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    blob_io_sim_destroy(io);
}

struct done {
    int calls;
    int32_t res;
};

static void aio_cb(struct blob_aio *a, int32_t res)
{
    struct done *d = a->ctx;
    d->calls++;
    d->res = res;
}

Test(blob_io_sim, requests_complete_later_and_reads_can_be_cancelled)
{
    struct blob_io *io = blob_io_sim_create(3);
    struct done d = { 0 };
    struct blob_aio a = { .fn = aio_cb, .ctx = &d };
    struct blob_io_req open_req = { .op = BLOB_IO_OPEN, .name = "r", .flags = O_CREAT | O_RDWR };
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &open_req), 0));
    cr_assert(eq(int, d.calls, 0), "never inside submit");
    cr_assert(blob_aio_is_busy(&a));
    cr_assert(eq(u32, blob_io_sim_run(io, 10), 1));
    cr_assert(eq(int, d.calls, 1));
    int fd = d.res;
    cr_assert(ge(int, fd, 0));
    char buf[8] = "abcdefg";
    struct blob_io_req w = { .op = BLOB_IO_WRITE, .fd = fd, .buf = buf, .len = 7, .off = 0 };
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &w), 0));
    blob_io_sim_run(io, 10);
    cr_assert(eq(int, d.res, 7));
    char rb[8] = { 0 };
    struct blob_io_req r = { .op = BLOB_IO_READ, .fd = fd, .buf = rb, .len = 7, .off = 0 };
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &r), 0));
    io->ops->cancel(io, &a);
    blob_io_sim_run(io, 10);
    cr_assert(eq(int, d.res, -ECANCELED));
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &r), 0));
    blob_io_sim_run(io, 10);
    cr_assert(eq(int, d.res, 7));
    cr_assert(eq(str, rb, "abcdefg"));
    struct blob_io_req s = { .op = BLOB_IO_FDATASYNC, .fd = fd };
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &s), 0));
    blob_io_sim_run(io, 10);
    cr_assert(eq(int, d.res, 0));
    struct blob_io_req ds = { .op = BLOB_IO_FSYNC_DIR };
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &ds), 0));
    blob_io_sim_run(io, 10);
    struct blob_io_req c = { .op = BLOB_IO_CLOSE, .fd = fd };
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &c), 0));
    blob_io_sim_run(io, 10);
    cr_assert(eq(int, d.res, 0));
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 0));
    cr_assert(blob_io_sim_is_idle(io));
    blob_io_sim_destroy(io);
}

Test(blob_io_sim, queued_requests_fail_after_a_power_loss)
{
    struct blob_io *io = blob_io_sim_create(4);
    int fd = create(io, "q");
    struct done d = { 0 };
    struct blob_aio a = { .fn = aio_cb, .ctx = &d };
    char buf[4] = "abc";
    struct blob_io_req w = { .op = BLOB_IO_WRITE, .fd = fd, .buf = buf, .len = 3 };
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &w), 0));
    blob_io_sim_power_loss(io);
    blob_io_sim_run(io, 10);
    cr_assert(eq(int, d.res, -EIO));
    cr_assert(eq(int, io->ops->fdatasync(io, fd), -EIO), "no I/O while the power is off");
    blob_io_sim_restart(io);
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 0), "a restart closes every fd");
    blob_io_sim_destroy(io);
}

Test(blob_io_sim, an_unlinked_open_file_stays_readable_until_closed)
{
    struct blob_io *io = blob_io_sim_create(5);
    int fd = create(io, "gone");
    put(io, fd, "still here", 0);
    int rfd;
    cr_assert(eq(int, io->ops->open(io, "gone", O_RDONLY, &rfd), 0));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    cr_assert(eq(int, io->ops->unlink(io, "gone"), 0));
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(io, "gone", &size), -ENOENT));
    char buf[11] = { 0 };
    cr_assert(eq(int, blob_io_pread_full(io, rfd, buf, 10, 0), 0));
    cr_assert(eq(str, buf, "still here"));
    cr_assert(eq(int, io->ops->close(io, rfd), 0));
    int again = create(io, "gone"); /* the name is free again */
    cr_assert(eq(int, io->ops->close(io, again), 0));
    blob_io_sim_destroy(io);
}

Test(blob_io_sim, truncate_rename_corrupt_and_list)
{
    struct blob_io *io = blob_io_sim_create(6);
    int fd = create(io, "t");
    put(io, fd, "0123456789", 0);
    cr_assert(eq(int, io->ops->ftruncate(io, fd, 4), 0));
    cr_assert(eq(u64, size_of(io, "t"), 4));
    cr_assert(eq(int, io->ops->ftruncate(io, fd, 8), 0));
    cr_assert(eq(u64, size_of(io, "t"), 8));
    uint64_t fsz;
    cr_assert(eq(int, io->ops->fsize(io, fd, &fsz), 0));
    cr_assert(eq(u64, fsz, 8));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    cr_assert(eq(int, blob_io_sim_corrupt(io, "t", 1, 0xff), 0));
    cr_assert(eq(int, blob_io_sim_corrupt(io, "t", 100, 0xff), -ERANGE));
    cr_assert(eq(int, blob_io_sim_corrupt(io, "nope", 1, 0xff), -ENOENT));
    cr_assert(eq(int, io->ops->rename(io, "t", "u"), 0));
    cr_assert(eq(int, io->ops->open(io, "t", O_RDONLY, &fd), -ENOENT));
    cr_assert(eq(int, io->ops->open(io, "u", O_RDONLY, &fd), 0));
    char b[2];
    cr_assert(eq(int, blob_io_pread_full(io, fd, b, 2, 0), 0));
    cr_assert(eq(int, (uint8_t)b[1], '1' ^ 0xff));
    cr_assert(eq(int, blob_io_pread_full(io, fd, b, 2, 7), -EIO), "past the end");
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    cr_assert(eq(int, io->ops->close(io, fd), -EBADF));
    cr_assert(eq(int, io->ops->unlink(io, "u"), 0));
    cr_assert(eq(int, io->ops->unlink(io, "u"), -ENOENT));
    cr_assert(eq(int, io->ops->open(io, "x", O_CREAT | O_EXCL, &fd), 0));
    cr_assert(eq(int, io->ops->open(io, "x", O_CREAT | O_EXCL, &fd), -EEXIST));
    blob_io_sim_destroy(io);
}

Test(blob_io_sim, the_same_seed_gives_the_same_run)
{
    uint64_t a[5];
    uint64_t b[5];
    struct blob_io *x = blob_io_sim_create(77);
    struct blob_io *y = blob_io_sim_create(77);
    for (int i = 0; i < 5; i++) {
        a[i] = blob_io_sim_rand(x);
        b[i] = blob_io_sim_rand(y);
    }
    cr_assert(memcmp(a, b, sizeof(a)) == 0);
    blob_io_sim_destroy(x);
    blob_io_sim_destroy(y);
}

Test(blob_io_sim, every_kind_of_operation_counts_and_can_fail)
{
    struct blob_io *io = blob_io_sim_create(8);
    int fd = create(io, "f");
    uint64_t ops = blob_io_sim_ops(io);
    struct done d = { 0 };
    struct blob_aio a = { .fn = aio_cb, .ctx = &d };
    struct blob_io_req reqs[] = {
        { .op = BLOB_IO_FALLOCATE, .fd = fd, .off = 1 << 20 },
        { .op = BLOB_IO_FDATASYNC, .fd = fd },
        { .op = BLOB_IO_FSYNC_DIR },
        { .op = BLOB_IO_OPEN, .name = "f", .flags = O_RDONLY },
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        blob_io_sim_fail_at(io, 1, -EIO);
        cr_assert(eq(int, blob_io_submit(io, NULL, &a, &reqs[i]), 0));
        blob_io_sim_run(io, 10);
        cr_assert(eq(int, d.res, -EIO), "op %zu", i);
    }
    cr_assert(gt(u64, blob_io_sim_ops(io), ops));
    /* Without a fault they succeed; a fallocate changes nothing visible. */
    blob_io_sim_fail_at(io, 0, 0);
    cr_assert(eq(int, blob_io_submit(io, NULL, &a, &reqs[0]), 0));
    blob_io_sim_run(io, 10);
    cr_assert(eq(int, d.res, 0));
    cr_assert(eq(u64, size_of(io, "f"), 0));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    blob_io_sim_destroy(io);
}

Test(blob_io_sim, bad_arguments_answer_errors)
{
    struct blob_io *io = blob_io_sim_create(9);
    int fd;
    cr_assert(eq(int, io->ops->open(io, "missing", O_RDONLY, &fd), -ENOENT));
    cr_assert(eq(int, io->ops->close(io, 12345), -EBADF));
    char b[4];
    cr_assert(eq(int, (int)io->ops->pread(io, 12345, b, 4, 0), -EBADF));
    cr_assert(eq(int, (int)io->ops->pwrite(io, 12345, b, 4, 0), -EBADF));
    cr_assert(eq(int, io->ops->fdatasync(io, 12345), -EBADF));
    cr_assert(eq(int, io->ops->rename(io, "missing", "x"), -ENOENT));
    uint64_t size;
    cr_assert(eq(int, io->ops->fsize(io, 12345, &size), -EBADF));
    blob_io_sim_destroy(io);
}

Test(blob_io_sim, a_write_that_extends_a_file_fills_the_gap_with_zeros)
{
    struct blob_io *io = blob_io_sim_create(10);
    int fd = create(io, "gap");
    put(io, fd, "end", 8192);
    cr_assert(eq(u64, size_of(io, "gap"), 8195));
    char buf[16];
    memset(buf, 0x55, sizeof(buf));
    cr_assert(eq(int, blob_io_pread_full(io, fd, buf, 16, 4000), 0));
    for (int i = 0; i < 16; i++)
        cr_assert(eq(int, buf[i], 0));
    cr_assert(eq(int, io->ops->close(io, fd), 0));
    blob_io_sim_destroy(io);
}

Test(blob_io_sim, a_later_write_wins_over_an_earlier_one_at_a_power_cut_when_both_survive)
{
    /* Writes are applied in order at a power cut: a kept rewrite of a block replaces the
     * first version, a dropped one leaves it (the writer's rewrite-the-tail rule). */
    int rewritten = 0;
    for (uint64_t seed = 1; seed <= 100; seed++) {
        struct blob_io *io = blob_io_sim_create(seed);
        int fd = create(io, "b");
        cr_assert(eq(int, io->ops->fsync_dir(io), 0));
        put(io, fd, "first", 0);
        cr_assert(eq(int, io->ops->fdatasync(io, fd), 0));
        put(io, fd, "first+more", 0);
        cr_assert(eq(int, io->ops->close(io, fd), 0));
        blob_io_sim_power_loss(io);
        blob_io_sim_restart(io);
        cr_assert(eq(int, io->ops->open(io, "b", O_RDONLY, &fd), 0));
        char got[11] = { 0 };
        uint64_t size = size_of(io, "b");
        cr_assert(eq(int, blob_io_pread_full(io, fd, got, size, 0), 0));
        /* The synced prefix is never damaged: both versions start with "first". */
        cr_assert(eq(int, strncmp(got, "first", 5), 0), "%s", got);
        rewritten += size == 10;
        cr_assert(eq(int, io->ops->close(io, fd), 0));
        blob_io_sim_destroy(io);
    }
    cr_assert(gt(int, rewritten, 10));
    cr_assert(lt(int, rewritten, 90));
}
