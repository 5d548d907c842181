/*
 * The budget follows the disk: a file system smaller than --max-size (or filled by someone
 * else) makes the store evict to stay inside it instead of failing every write once the disk
 * is full; when room comes back, the budget goes back to --max-size.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "blob/internal.h"
#include "blob/io_sim.h"
#include "harness.h"

#define BLOB_LEN 8000U

static int put_n(struct th *t, uint64_t n, struct blob_key *k)
{
    static uint8_t buf[BLOB_LEN];
    th_fill(buf, sizeof(buf), n, false);
    th_key_of(k, buf, sizeof(buf));
    return th_put(t, k, buf, sizeof(buf), 0, 0);
}

static void open_budget(struct th *t, uint64_t seed, uint64_t max_size)
{
    th_options_small(&t->o);
    t->o.max_size = max_size;
    th_open_sim(t, seed);
}

static uint64_t budget_of(struct th *t)
{
    struct blob_store_stats st;
    blob_store_stats(t->s, &st);
    return st.budget_bytes;
}

Test(blob_diskroom, a_disk_smaller_than_the_budget_evicts_instead_of_failing)
{
    struct th t = { 0 };
    open_budget(&t, 1, 4ULL << 20);
    /* A 1 MiB disk under a 4 MiB budget: 3 MiB of writes would fill it three times. */
    blob_io_sim_capacity(t.io, 1ULL << 20);
    struct blob_key k;
    struct blob_key last = { 0 };
    uint32_t failed = 0;
    /* Bounded: 400 puts of 8000 bytes. */
    for (uint64_t n = 0; n < 400; n++) {
        int rc = put_n(&t, n, &k);
        if (rc != 0) failed++;
        if (rc == 0) last = k;
    }
    cr_assert(eq(u32, failed, 0), "%u of 400 puts failed on the full disk", failed);
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(lt(u64, st.budget_bytes, 1ULL << 20), "the budget follows the disk");
    cr_assert(gt(u64, st.evicted_segments, 0));
    cr_assert(le(u64, st.disk_bytes, 1ULL << 20));
    cr_assert(blob_exists(t.bc, &last, false), "the newest blob is there");
    uint8_t *out;
    size_t len;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &len), 0));
    cr_assert(eq(sz, len, BLOB_LEN));
    free(out);
    th_close(&t);
}

Test(blob_diskroom, the_budget_comes_back_when_the_disk_has_room)
{
    struct th t = { 0 };
    open_budget(&t, 2, 2ULL << 20);
    cr_assert(eq(u64, budget_of(&t), 2ULL << 20), "no size known: --max-size");
    blob_io_sim_capacity(t.io, 1ULL << 20);
    blob_store_evict(t.s);
    /* Empty store: 1 MiB free, less 1/64 of it. */
    cr_assert(eq(u64, budget_of(&t), (1ULL << 20) - (1ULL << 20) / 64));
    blob_io_sim_capacity(t.io, 64ULL << 20);
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), 2ULL << 20), "a large disk: --max-size again");
    th_close(&t);
}

/*
 * Another tenant fills the disk: the budget falls to nothing, and every upload is refused as
 * a full store (-ENOSPC, retry later), not as a blob larger than the store takes (-EFBIG,
 * which a retry never stores). The largest blob the store takes follows the disk's size, not
 * what is free on it, so Capabilities say the same before, during and after.
 */
Test(blob_diskroom, a_disk_full_of_other_files_is_a_full_store_not_a_blob_too_large)
{
    struct th t = { 0 };
    open_budget(&t, 4, 16ULL << 20);
    blob_io_sim_capacity(t.io, 4ULL << 20);
    struct blob_key k;
    cr_assert(eq(int, put_n(&t, 1, &k), 0));
    blob_store_evict(t.s);
    uint64_t largest = blob_cas_size_max(t.bc);
    cr_assert(eq(u64, largest, ((4ULL << 20) - (4ULL << 20) / 64) / 4), "a quarter of the disk");
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    blob_io_sim_others(t.io, (4ULL << 20) - st.disk_bytes);
    blob_store_evict(t.s);
    cr_assert(lt(u64, budget_of(&t), 100000), "the budget followed the full disk");
    cr_assert(eq(u64, blob_cas_size_max(t.bc), largest));
    struct blob_key big = k;
    big.size = 100000;
    big.hash[0] ^= 1;
    struct blob_upload *u = NULL;
    cr_assert(eq(int, blob_upload_begin(t.bc, &big, 0, &u), -ENOSPC));
    cr_assert(eq(int, put_n(&t, 2, &k), -ENOSPC));
    /* Room again: the same upload begins. */
    blob_io_sim_others(t.io, 0);
    blob_store_evict(t.s);
    cr_assert(eq(int, blob_upload_begin(t.bc, &big, 0, &u), 0));
    blob_upload_abort(u);
    cr_assert(eq(int, put_n(&t, 2, &k), 0));
    big.size = largest + 1;
    cr_assert(eq(int, blob_upload_begin(t.bc, &big, 0, &u), -EFBIG), "past the disk's quarter");
    th_close(&t);
}

/* Sends stderr (the log) to a new file <path> until log_release(); returns the saved fd. */
static int log_capture(char *path, size_t len)
{
    snprintf(path, len, "/tmp/ringcas-test-log-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(ge(int, fd, 0));
    int saved = dup(STDERR_FILENO);
    cr_assert(ge(int, saved, 0));
    cr_assert(ge(int, dup2(fd, STDERR_FILENO), 0));
    close(fd);
    return saved;
}

/* Puts stderr back (<saved>). */
static void log_release(int saved)
{
    cr_assert(ge(int, dup2(saved, STDERR_FILENO), 0));
    close(saved);
}

/* How many lines of the captured log <path> hold <what>. */
static uint32_t log_count(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    cr_assert(ne(ptr, f, NULL));
    char line[1024];
    uint32_t n = 0;
    /* Bounded by the file's lines. */
    while (fgets(line, sizeof(line), f)) {
        if (strstr(line, what)) n++;
    }
    fclose(f);
    return n;
}

/*
 * A disk-bound budget that dips and comes back at every pass (XFS frees a deleted segment's
 * blocks a moment after its file is closed, so a pass that closed files measures them neither
 * in the segments nor free) is said once, not at every pass: a soak on a 336 MiB XFS logged
 * "has less room" 25 times a minute with no other file on the disk. A real further fall, past
 * the level said, is still said at once.
 */
Test(blob_diskroom, a_budget_that_dips_and_comes_back_at_every_pass_is_said_once)
{
    struct th t = { 0 };
    open_budget(&t, 7, 64ULL << 20);
    blob_io_sim_capacity(t.io, 8ULL << 20);
    struct blob_key k;
    /* Bounded: 200 puts of 8000 bytes, 1.6 MB of the 8 MiB disk. */
    for (uint64_t n = 0; n < 200; n++)
        cr_assert(eq(int, put_n(&t, n, &k), 0));
    char path[64];
    int saved = log_capture(path, sizeof(path));
    blob_store_evict(t.s);
    uint64_t high = budget_of(&t);
    /* Bounded: 50 passes, every other one with a quarter of the disk not yet given back. */
    for (uint32_t i = 0; i < 50; i++) {
        blob_io_sim_others(t.io, i % 2 == 0 ? 2ULL << 20 : 0);
        blob_store_evict(t.s);
    }
    blob_io_sim_others(t.io, 0);
    blob_store_evict(t.s);
    log_release(saved);
    uint32_t dips = log_count(path, "has less room: the budget fell from");
    unlink(path);
    cr_assert(eq(u64, budget_of(&t), high), "the budget came back every time");
    cr_assert(eq(u32, dips, 1), "25 dips to the same level were said %u times", dips);
    /* Another file now takes half of the disk for good: past the level said, so said. */
    saved = log_capture(path, sizeof(path));
    blob_io_sim_others(t.io, 4ULL << 20);
    blob_store_evict(t.s);
    log_release(saved);
    uint32_t falls = log_count(path, "has less room: the budget fell from");
    unlink(path);
    cr_assert(lt(u64, budget_of(&t), high - (3ULL << 20)));
    cr_assert(eq(u32, falls, 1), "a further fall is said");
    th_close(&t);
}

/*
 * The same around --max-size (the manifest's: 90% of the volume): a budget that dips under
 * --max-size and comes back at every pass said "holds less than --max-size" and "has room for
 * --max-size again" at every pass, twice a second in a soak on XFS. Now the dip is said once,
 * and the room only once it has lasted a minute.
 */
Test(blob_diskroom, a_budget_that_dips_under_max_size_at_every_pass_is_said_once)
{
    struct th t = { 0 };
    open_budget(&t, 8, 4ULL << 20);
    blob_io_sim_capacity(t.io, 8ULL << 20);
    struct blob_key k;
    /* Bounded: 100 puts of 8000 bytes. */
    for (uint64_t n = 0; n < 100; n++)
        cr_assert(eq(int, put_n(&t, n, &k), 0));
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), 4ULL << 20), "the disk holds --max-size");
    char path[64];
    int saved = log_capture(path, sizeof(path));
    /* Bounded: 50 passes, every other one with 4.5 MiB of the 8 MiB disk taken. */
    for (uint32_t i = 0; i < 50; i++) {
        blob_io_sim_others(t.io, i % 2 == 0 ? (9ULL << 20) / 2 : 0);
        blob_store_evict(t.s);
        uint64_t want = i % 2 == 0 ? (7ULL << 19) - (1ULL << 17) : 4ULL << 20;
        cr_assert(eq(u64, budget_of(&t), want), "pass %u", i);
    }
    log_release(saved);
    uint32_t dips = log_count(path, "holds less than --max-size");
    uint32_t rooms = log_count(path, "has room for --max-size");
    unlink(path);
    cr_assert(eq(u32, dips, 1), "25 dips under --max-size were said %u times", dips);
    cr_assert(eq(u32, rooms, 0), "25 returns to --max-size were said %u times", rooms);
    th_close(&t);
}

Test(blob_diskroom, uploads_past_the_disks_budget_are_refused_until_eviction_catches_up)
{
    struct th t = { 0 };
    open_budget(&t, 3, 4ULL << 20);
    struct blob_key k;
    /* Bounded: 40 puts, 320 KB. */
    for (uint64_t n = 0; n < 40; n++)
        cr_assert(eq(int, put_n(&t, n, &k), 0));
    /* Someone else fills the disk: 64 KiB left beside what the store holds. */
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    blob_io_sim_capacity(t.io, st.disk_bytes + (128ULL << 10));
    blob_store_evict(t.s);
    blob_store_stats(t.s, &st);
    cr_assert(lt(u64, st.budget_bytes, 1ULL << 20));
    cr_assert(le(u64, st.disk_bytes + t.o.segment_size, st.budget_bytes),
              "eviction left room for the active segment to fill");
    /* Writes go on, inside the smaller disk. Bounded: 100 puts. */
    for (uint64_t n = 100; n < 200; n++)
        cr_assert(eq(int, put_n(&t, n, &k), 0), "put %llu", (unsigned long long)n);
    th_close(&t);
}

/*
 * Gives the simulated disk <cap> bytes and fills it one and a half times with the store's
 * blobs: everything on it is the store's then, and the budget is the disk less its margin,
 * which it returns.
 */
static uint64_t fill_disk(struct th *t, uint64_t cap)
{
    blob_io_sim_capacity(t->io, cap);
    struct blob_key k;
    /* Bounded: 200 puts of 8000 bytes. */
    for (uint64_t n = 0; n < 200; n++)
        cr_assert(eq(int, put_n(t, n, &k), 0));
    blob_store_evict(t->s);
    uint64_t full = budget_of(t);
    cr_assert(eq(u64, full, cap - cap / 64), "everything on the disk is the store's");
    return full;
}

/*
 * On XFS a deleted file's blocks are free a moment after its last close (the kernel frees
 * them in a worker). A segment that eviction took while a read held it is closed by the
 * next pass, once the read let go; that pass measured the disk right after the close and saw
 * the file's bytes neither free nor in the store, so the budget dipped by them and the pass
 * evicted that much more (a soak on a 336 MiB XFS: 308 MiB, then 245-266 MiB about once a
 * second). The pass measures first, with the files it will close counted as the store's.
 */
Test(blob_diskroom, a_segment_closed_by_a_pass_is_not_taken_off_the_budget)
{
    struct th t = { 0 };
    open_budget(&t, 9, 16ULL << 20);
    uint64_t cap = 1ULL << 20;
    uint64_t full = fill_disk(&t, cap);
    /* A read holds the oldest segment; the disk frees a closed file's blocks 50 ms late. */
    struct blob_seg *held = NULL;
    for (uint32_t q = 1; !held && q < 1000; q++)
        held = blob_segment_get(&t.s->segs, q);
    cr_assert(ne(ptr, held, NULL));
    uint64_t held_bytes = atomic_load(&held->bytes);
    cr_assert(gt(u64, held_bytes, 0));
    const uint64_t late = 50 * BASE_NS_PER_MS;
    blob_io_sim_frees_late(t.io, late);
    /* Another file takes a third of the disk: the pass evicts the held segment too. */
    blob_io_sim_others(t.io, cap / 3);
    blob_store_evict(t.s);
    cr_assert(not(blob_segment_is_alive(&t.s->segs, (uint32_t)atomic_load(&held->seq))),
              "not evicted");
    blob_io_sim_others(t.io, 0);
    cr_assert(eq(int, usleep((useconds_t)(2 * late / 1000)), 0)); /* what it closed is free */
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), full), "a held segment counts while it is held");
    /* The read ends: the next pass closes the file, and its blocks free 50 ms later. */
    blob_segment_put(&t.s->segs, held);
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), full),
              "the pass that closed the segment took its %llu bytes off the budget",
              (unsigned long long)held_bytes);
    cr_assert(eq(int, usleep((useconds_t)(2 * late / 1000)), 0));
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), full));
    th_close(&t);
}

/*
 * The active segment is reserved whole when it opens (fallocate): its unwritten tail is
 * neither free on the disk nor in the segments' bytes. Counted nowhere, it came off the budget,
 * and the limit then took the active segment's room off again: on a disk smaller than
 * --max-size the store kept a segment per core less than the disk holds (an eighth of the
 * disk with the default segment size), evicting blobs it had room for.
 */
Test(blob_diskroom, the_active_segments_reserve_is_not_taken_off_the_disks_budget_twice)
{
    struct th t = { 0 };
    open_budget(&t, 5, 16ULL << 20);
    uint64_t cap = 1ULL << 20;
    blob_io_sim_capacity(t.io, cap);
    struct blob_key k;
    cr_assert(eq(int, put_n(&t, 1, &k), 0)); /* opens (and reserves) the active segment */
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), cap - cap / 64),
              "the store may use the whole disk but the margin, its active segment included");
    /* Filled three times over. Bounded: 400 puts of 8000 bytes. */
    for (uint64_t n = 2; n < 400; n++)
        cr_assert(eq(int, put_n(&t, n, &k), 0));
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), cap - cap / 64), "and still with the disk full of segments");
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    /* Kept: up to the limit (the budget less the active segment's room), less the segment
     * the last pass took at most. Before: another segment less (888,952 bytes here). */
    uint64_t seg = t.o.segment_size;
    cr_assert(gt(u64, st.disk_bytes, cap - cap / 64 - 2 * seg), "eviction kept what fits");
    th_close(&t);
}

/* ---- an evictor that lags behind ---- */

/* The lag that never ends: the evictor stopped. */
#define LAG_NEVER UINT32_MAX

/*
 * The evictor thread, played by the test: a kick (a segment sealed, or a new one short of
 * room) only makes a pass due, and the pass runs <lag> disk operations of the core later, as
 * when the thread is slow to be scheduled on a loaded machine.
 */
struct lagging {
    uint32_t lag;              /* operations between a kick and its pass, or LAG_NEVER */
    uint32_t since;            /* operations since the kick that made a pass due */
    bool due;                  /* a kick is waiting for its pass */
    bool on_wait;              /* with LAG_NEVER: the pass runs once a new segment waits for room */
    uint64_t waits;            /* segment_room_waits when that pass last ran */
    uint64_t room_waiting_max; /* the most segment_room_waiting seen between two steps */
    uint64_t writer_waiters_max; /* and writer_waiters */
};

static void lag_step(struct th *t, struct lagging *l, bool idle)
{
    pthread_mutex_lock(&t->s->evict_lock);
    bool kicked = t->s->evict_kick;
    t->s->evict_kick = false;
    pthread_mutex_unlock(&t->s->evict_lock);
    l->due = l->due || kicked;
    struct blob_counters_snapshot c = th_counters(t);
    if (c.segment_room_waiting > l->room_waiting_max) l->room_waiting_max = c.segment_room_waiting;
    if (c.writer_waiters > l->writer_waiters_max) l->writer_waiters_max = c.writer_waiters;
    if (l->on_wait && th_counters(t).segment_room_waits > l->waits) {
        l->waits = th_counters(t).segment_room_waits;
        l->due = false;
        (void)blob_store_evict(t->s);
        return;
    }
    if (!l->due || l->lag == LAG_NEVER) return;
    /* An idle core gives the evictor all the time it needs. */
    if (l->since++ < l->lag && !idle) return;
    l->due = false;
    l->since = 0;
    (void)blob_store_evict(t->s);
}

struct step {
    bool done;
    int res;
};

static void step_done(void *ctx, int res)
{
    struct step *st = ctx;
    st->done = true;
    st->res = res;
}

/* Runs the core until <st> is done: the simulated disk one operation at a time, or the real
 * ring one tick (up to 10 ms) at a time. */
static void run_lagging(struct th *t, struct lagging *l, const struct step *st)
{
    /* Bounded: a put takes a few hundred operations, waits for room included. */
    for (uint32_t i = 0; i < 100000 && !st->done; i++) {
        if (t->io) {
            lag_step(t, l, blob_io_sim_is_idle(t->io));
            (void)blob_io_sim_run(t->io, 1);
        } else {
            uint64_t ops = base_counter_get(&ring_core_counters(t->ring)->ops_in_flight);
            lag_step(t, l, blob_core_is_idle(t->bc) && ops == 0);
            cr_assert(ge(int, ring_core_tick(t->ring, 10), 0));
        }
    }
    cr_assert(st->done, "the put never ended");
}

/*
 * th_put's upload of blob <n> (put_n), the evictor lagging by <l>. *<admitted> tells whether
 * blob_upload_begin took it: a refusal there is the store over its budget until the evictor's
 * pass, which a client retries.
 */
static int put_lagging(struct th *t, struct lagging *l, uint64_t n, struct blob_key *k,
                       bool *admitted)
{
    static uint8_t buf[BLOB_LEN];
    th_fill(buf, sizeof(buf), n, false);
    th_key_of(k, buf, sizeof(buf));
    struct blob_upload *u;
    int rc = blob_upload_begin(t->bc, k, 0, &u);
    *admitted = rc == 0;
    if (rc < 0) return rc;
    struct step st = { 0 };
    rc = blob_upload_append(u, buf, sizeof(buf), step_done, &st);
    if (rc == -EINPROGRESS) {
        run_lagging(t, l, &st);
        rc = st.res;
    }
    if (rc < 0) {
        blob_upload_abort(u);
        return rc;
    }
    st = (struct step){ 0 };
    cr_assert(eq(int, blob_upload_commit(u, step_done, &st), 0));
    run_lagging(t, l, &st);
    return st.res;
}

/*
 * Runs the core one disk operation at a time until <st> is done, with an eviction pass after
 * each, as an evictor thread may run at any moment: the lowest budget a pass measured.
 */
static uint64_t run_measuring(struct th *t, const struct step *st)
{
    uint64_t low = UINT64_MAX;
    /* Bounded: a put takes a few hundred operations. */
    for (uint32_t i = 0; i < 100000 && !st->done; i++) {
        (void)blob_io_sim_run(t->io, 1);
        (void)blob_store_evict(t->s);
        uint64_t b = budget_of(t);
        if (b < low) low = b;
    }
    cr_assert(st->done, "the put never ended");
    return low;
}

/*
 * Under load the evictor runs passes back to back (a kick per segment sealed or opened). A
 * pass closes the files of the segments it evicted as it ends, and on XFS their blocks are
 * free a moment later: the next pass, right after, measured them neither free nor the
 * store's, the budget dipped by them, and it evicted that much more. A pass that follows a
 * close that soon now waits out evict_settle_ms before it measures.
 */
Test(blob_diskroom, a_pass_right_after_one_that_closed_files_waits_for_their_space)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 16ULL << 20;
    t.o.evict_settle_ms = 40;
    th_open_sim(&t, 11);
    uint64_t cap = 1ULL << 20;
    uint64_t full = fill_disk(&t, cap);
    blob_io_sim_frees_late(t.io, 20 * BASE_NS_PER_MS);
    /* Another file takes a third of the disk: the pass evicts, and closes what it evicted. */
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    uint64_t evicted = st.evicted_segments;
    blob_io_sim_others(t.io, cap / 3);
    blob_store_evict(t.s);
    blob_store_stats(t.s, &st);
    cr_assert(gt(u64, st.evicted_segments, evicted), "the pass evicted nothing");
    /* The file is gone at once; the next pass comes right away. */
    blob_io_sim_others(t.io, 0);
    blob_store_evict(t.s);
    cr_assert(eq(u64, budget_of(&t), full),
              "the pass right after the close measured its files as neither free nor ours");
    th_close(&t);
}

/*
 * A new segment reserves its blocks (fallocate), then opens its read fd and fsyncs the folder
 * before it goes into the table, which counts its reservation from then on. A pass between
 * the two saw the reservation neither free nor the store's: the budget dipped by a whole
 * segment and the pass evicted one more. On a 336 MiB XFS under load (two cores opening a
 * 21 MiB segment every few hundred ms, the folder's fsync waiting on the log) the budget
 * read 308 MiB, then 287, 266 or 245 MiB, in a fifth of the samples taken every 200 ms.
 */
Test(blob_diskroom, a_segment_being_opened_is_not_taken_off_the_budget)
{
    struct th t = { 0 };
    open_budget(&t, 10, 16ULL << 20);
    uint64_t cap = 1ULL << 20;
    blob_io_sim_capacity(t.io, cap);
    blob_store_evict(t.s);
    uint64_t full = budget_of(&t);
    cr_assert(eq(u64, full, cap - cap / 64), "an empty store: the disk but the margin");
    static uint8_t buf[BLOB_LEN];
    th_fill(buf, sizeof(buf), 1, false);
    struct blob_key k;
    th_key_of(&k, buf, sizeof(buf));
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), 0));
    struct step st = { 0 };
    int rc = blob_upload_append(u, buf, sizeof(buf), step_done, &st);
    uint64_t low = full;
    if (rc == -EINPROGRESS) {
        low = run_measuring(&t, &st);
        rc = st.res;
    }
    cr_assert(eq(int, rc, 0));
    st = (struct step){ 0 };
    cr_assert(eq(int, blob_upload_commit(u, step_done, &st), 0));
    uint64_t low_commit = run_measuring(&t, &st);
    cr_assert(eq(int, st.res, 0));
    if (low_commit < low) low = low_commit;
    cr_assert(eq(u64, th_counters(&t).segments_created, 1), "the put opened a segment");
    cr_assert(eq(u64, low, full), "a pass while the segment opened measured %llu of %llu",
              (unsigned long long)low, (unsigned long long)full);
    th_close(&t);
}

/*
 * put_lagging as a client: a refusal for room (-ENOSPC: RESOURCE_EXHAUSTED / 507) is tried
 * again once the evictor had its time, up to 8 tries. *<late> counts the uploads refused after
 * blob_upload_begin took them.
 */
static int put_retrying(struct th *t, struct lagging *l, uint64_t n, struct blob_key *k,
                        uint32_t *late)
{
    int rc = -ENOSPC;
    /* Bounded: 8 tries. */
    for (uint32_t i = 0; i < 8 && rc == -ENOSPC; i++) {
        bool admitted;
        rc = put_lagging(t, l, n, k, &admitted);
        if (rc < 0 && admitted) (*late)++;
        if (rc == -ENOSPC) lag_step(t, l, true); /* the client waits: the evictor runs */
    }
    return rc;
}

/* Fills the disk with another file up to <left> bytes beside the store's files. */
static void others_leave(struct th *t, uint64_t left)
{
    uint64_t avail;
    uint64_t total;
    cr_assert(eq(int, t->io->ops->space(t->io, &avail, &total), 0));
    cr_assert(gt(u64, avail, left));
    blob_io_sim_others(t->io, avail - left);
}

/*
 * With the evictor stalled for good, puts blobs 100.. until a new segment finds no room:
 * that is a full store (-ENOSPC, refused by the segment, not at the door), not a failed
 * disk, and every blob acknowledged until then reads back. Answers the refused blob's n.
 */
static uint64_t put_until_no_room(struct th *t, struct lagging *l, struct blob_key *keys)
{
    l->lag = LAG_NEVER;
    uint64_t n = 100;
    int rc = 0;
    bool admitted = false;
    /* Bounded: the active segment holds at most 8 more. */
    for (; n < 200 && rc == 0; n++)
        rc = put_lagging(t, l, n, &keys[n], &admitted);
    uint64_t refused = n - 1;
    cr_assert(eq(int, rc, -ENOSPC), "put %llu: %d", (unsigned long long)refused, rc);
    cr_assert(admitted, "refused by the segment, not at the door");
    struct blob_counters_snapshot c = th_counters(t);
    cr_assert(eq(u64, c.segments_abandoned, 0), "a full disk is not a failed write");
    cr_assert(eq(u64, c.segments_no_room, 1));
    for (uint64_t i = 100; i < refused; i++) {
        uint8_t *out;
        size_t len;
        cr_assert(eq(int, th_get(t, &keys[i], 0, 0, &out, &len), 0), "blob %llu",
                  (unsigned long long)i);
        cr_assert(eq(sz, len, BLOB_LEN));
        free(out);
    }
    return refused;
}

/*
 * The store keeps room on the disk for its active segments, but only as of the evictor's last
 * pass: when the disk fills since (another file, or segments sealed faster than the evictor
 * runs on a loaded machine: tests/integration/test_diskroom.py failed so once in a clean `make
 * test`), the core's next segment finds no room for its reservation. It used to open anyway:
 * its first write failed, the segment was abandoned (counted and logged as a disk error) and
 * the upload in it refused after it was taken. Now the opening wakes the evictor and waits for
 * its pass, then reserves again: the upload is stored.
 */
Test(blob_diskroom, a_new_segment_that_finds_the_disk_full_waits_for_a_lagging_evictor)
{
    struct th t = { 0 };
    open_budget(&t, 6, 16ULL << 20);
    blob_io_sim_capacity(t.io, 1ULL << 20);
    t.s->evict_held = true;
    struct lagging l = { .lag = 0 };
    struct blob_key k;
    uint32_t late = 0;
    /* Bounded: 100 puts, the evictor keeping up. */
    for (uint64_t n = 0; n < 100; n++)
        cr_assert(eq(int, put_retrying(&t, &l, n, &k, &late), 0));
    others_leave(&t, 8U << 10);
    /* The evictor now runs 32 disk operations after each kick: a new segment opens sooner. */
    l.lag = 32;
    uint64_t created = th_counters(&t).segments_created;
    uint64_t n = 100;
    /* Bounded: the active segment holds at most 8 more, then the next one opens. */
    for (; n < 120 && th_counters(&t).segments_created < created + 2; n++)
        cr_assert(eq(int, put_retrying(&t, &l, n, &k, &late), 0), "put %llu",
                  (unsigned long long)n);
    struct blob_counters_snapshot c = th_counters(&t);
    cr_assert(eq(u64, c.segments_created, created + 2), "two new segments opened");
    cr_assert(eq(u32, late, 0), "%u uploads refused after they were taken", late);
    cr_assert(eq(u64, c.segments_abandoned, 0), "a full disk is not a failed write");
    cr_assert(eq(u64, c.segment_room_waits, 1), "the first new segment found the disk full");
    cr_assert(eq(u64, c.segments_no_room, 0));
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(gt(u64, st.evicted_segments, 0));
    uint8_t *out;
    size_t len;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &len), 0));
    cr_assert(eq(sz, len, BLOB_LEN));
    free(out);
    th_close(&t);
}

/*
 * A new segment waiting for the evictor's pass holds up every upload of its core: the
 * operator must see the wait while it lasts, not only a counter afterwards. While the segment
 * waits, ringcas_blob_segment_room_waiting is 1 and the upload that needs it counts in
 * ringcas_blob_writer_waiters; both are 0 again once the pass made room and the upload is
 * stored, and ringcas_blob_writer_waits_total counted its wait.
 */
Test(blob_diskroom, a_segment_waiting_for_room_and_the_uploads_behind_it_show_in_gauges)
{
    struct th t = { 0 };
    open_budget(&t, 6, 16ULL << 20);
    blob_io_sim_capacity(t.io, 1ULL << 20);
    t.s->evict_held = true;
    struct lagging l = { .lag = 0 };
    struct blob_key k;
    uint32_t late = 0;
    /* Bounded: 100 puts, the evictor keeping up. */
    for (uint64_t n = 0; n < 100; n++)
        cr_assert(eq(int, put_retrying(&t, &l, n, &k, &late), 0));
    cr_assert(eq(u64, l.room_waiting_max, 0), "no segment waited while the evictor kept up");
    others_leave(&t, 8U << 10);
    l.lag = 32;
    l.writer_waiters_max = 0;
    uint64_t created = th_counters(&t).segments_created;
    uint64_t writer_waits = th_counters(&t).writer_waits;
    /* Bounded: the active segment holds at most 8 more, then the next one opens. */
    for (uint64_t n = 100; n < 120 && th_counters(&t).segments_created < created + 2; n++)
        cr_assert(eq(int, put_retrying(&t, &l, n, &k, &late), 0));
    struct blob_counters_snapshot c = th_counters(&t);
    cr_assert(eq(u64, c.segment_room_waits, 1), "the first new segment found the disk full");
    cr_assert(eq(u64, l.room_waiting_max, 1), "the wait showed while it lasted");
    cr_assert(ge(u64, l.writer_waiters_max, 1), "the upload behind it showed");
    cr_assert(gt(u64, c.writer_waits, writer_waits));
    cr_assert(eq(u64, c.segment_room_waiting, 0), "back to 0 after the pass");
    cr_assert(eq(u64, c.writer_waiters, 0));
    th_close(&t);
}

/*
 * Another file takes the room on the disk before the evictor's next look: the active segment
 * fills inside its reservation, but the next one finds no room, and still none after waiting
 * (the evictor lags on). It is not opened: the uploads waiting for it are refused as a full
 * store (-ENOSPC: RESOURCE_EXHAUSTED / 507, retry later), nothing acknowledged is lost, no
 * segment counts as abandoned (a disk error), and the empty file goes at the evictor's next
 * pass, which also makes room: the same upload is then stored.
 */
Test(blob_diskroom, a_new_segment_without_room_after_waiting_is_a_full_store_not_a_failed_disk)
{
    struct th t = { 0 };
    open_budget(&t, 7, 16ULL << 20);
    blob_io_sim_capacity(t.io, 1ULL << 20);
    t.s->evict_held = true;
    struct lagging l = { .lag = 0 };
    static struct blob_key keys[400];
    bool admitted;
    /* Bounded: 100 puts, the evictor keeping up. */
    for (uint64_t n = 0; n < 100; n++)
        cr_assert(eq(int, put_lagging(&t, &l, n, &keys[n], &admitted), 0));
    others_leave(&t, 8U << 10);
    uint64_t refused = put_until_no_room(&t, &l, keys);
    /* The segment that found no room took the last seq; its file, empty, stays until the
     * evictor's pass deletes it. */
    char name[32];
    blob_format_seg_name(atomic_load(&t.s->segs.next_seq) - 1, name, sizeof(name));
    uint64_t size;
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), 0));
    cr_assert(eq(u64, size, 0));
    l.lag = 0;
    (void)blob_store_evict(t.s);
    cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), -ENOENT), "%s deleted", name);
    cr_assert(eq(int, put_lagging(&t, &l, refused, &keys[refused], &admitted), 0),
              "the retry is stored");
    cr_assert(blob_exists(t.bc, &keys[refused], false));
    th_close(&t);
}

/* ---- the same on a real tmpfs ---- */

/*
 * Mounts a tmpfs of <size> (a mount option: "size=1m") of this test's own on /tmp, in a mount
 * namespace of its own: criterion runs each test in a child process, and the mount goes with
 * it, whatever the test's outcome. Points TMPDIR there for th_open_real. False where this
 * process may not (no root, or no CAP_SYS_ADMIN).
 */
static bool tmpfs_mount(char *mnt, size_t mnt_size, const char *size)
{
    if (unshare(CLONE_NEWNS) != 0) return false;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) return false;
    if (mount("ringcas-test", "/tmp", "tmpfs", 0, size) != 0) return false;
    (void)snprintf(mnt, mnt_size, "/tmp");
    cr_assert(eq(int, setenv("TMPDIR", mnt, 1), 0)); /* NOLINT(concurrency-mt-unsafe) */
    return true;
}

/* Writes a file <name> in <mnt> that leaves <left> bytes free there; returns its path. */
static void tmpfs_fill(const char *mnt, const char *name, uint64_t left, char *path,
                       size_t path_size)
{
    struct statvfs vfs;
    cr_assert(eq(int, statvfs(mnt, &vfs), 0));
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    cr_assert(gt(u64, avail, left));
    (void)snprintf(path, path_size, "%s/%s", mnt, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    cr_assert(ge(int, fd, 0));
    static const uint8_t zeros[4096];
    /* Bounded by the free space, a block at a time. */
    for (uint64_t done = 0; done < avail - left;) {
        uint64_t n = avail - left - done < sizeof(zeros) ? avail - left - done : sizeof(zeros);
        ssize_t w = write(fd, zeros, n);
        cr_assert(eq(i64, (int64_t)w, (int64_t)n));
        done += n;
    }
    cr_assert(eq(int, close(fd), 0));
}

/*
 * The real path: the reservation that fails is fallocate(2) on a 1 MiB tmpfs through the ring,
 * the waits are IORING_OP_TIMEOUTs, and the pass is the real evictor's, run by the test the
 * moment the segment starts waiting (an evictor that was not scheduled until then).
 */
Test(blob_diskroom, on_a_real_tmpfs_a_new_segment_without_room_waits_and_is_stored)
{
    char mnt[64];
    if (!tmpfs_mount(mnt, sizeof(mnt), "size=1m")) cr_skip_test("no tmpfs of its own here");
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 16ULL << 20;
    th_open_real(&t);
    t.s->evict_held = true;
    struct lagging l = { .lag = 0 };
    struct blob_key k;
    uint32_t late = 0;
    /* Bounded: 100 puts, the evictor keeping up. */
    for (uint64_t n = 0; n < 100; n++)
        cr_assert(eq(int, put_retrying(&t, &l, n, &k, &late), 0));
    char filler[128];
    tmpfs_fill(mnt, "filler", 8U << 10, filler, sizeof(filler));
    l = (struct lagging){ .lag = LAG_NEVER, .on_wait = true };
    uint64_t created = th_counters(&t).segments_created;
    uint64_t n = 100;
    /* Bounded: the active segment holds at most 8 more, then the next one opens. */
    for (; n < 120 && th_counters(&t).segments_created < created + 2; n++)
        cr_assert(eq(int, put_retrying(&t, &l, n, &k, &late), 0), "put %llu",
                  (unsigned long long)n);
    struct blob_counters_snapshot c = th_counters(&t);
    cr_assert(eq(u64, c.segments_created, created + 2), "two new segments opened");
    cr_assert(eq(u32, late, 0), "%u uploads refused after they were taken", late);
    cr_assert(eq(u64, c.segments_abandoned, 0), "a full disk is not a failed write");
    cr_assert(eq(u64, c.segment_room_waits, 1), "the first new segment found the disk full");
    cr_assert(eq(u64, c.segments_no_room, 0));
    uint8_t *out;
    size_t len;
    cr_assert(eq(int, th_get(&t, &k, 0, 0, &out, &len), 0));
    cr_assert(eq(sz, len, BLOB_LEN));
    free(out);
    cr_assert(eq(int, unlink(filler), 0));
    th_close(&t);
}

/* The evictor never comes: after its second of polls the segment is given up, the upload is
 * refused as a full store, and the empty file goes at the evictor's next pass. */
Test(blob_diskroom, on_a_real_tmpfs_a_new_segment_without_room_after_waiting_is_a_full_store)
{
    char mnt[64];
    if (!tmpfs_mount(mnt, sizeof(mnt), "size=1m")) cr_skip_test("no tmpfs of its own here");
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.max_size = 16ULL << 20;
    th_open_real(&t);
    t.s->evict_held = true;
    struct lagging l = { .lag = 0 };
    static struct blob_key keys[200];
    bool admitted;
    /* Bounded: 100 puts, the evictor keeping up. */
    for (uint64_t n = 0; n < 100; n++)
        cr_assert(eq(int, put_lagging(&t, &l, n, &keys[n], &admitted), 0));
    char filler[128];
    tmpfs_fill(mnt, "filler", 8U << 10, filler, sizeof(filler));
    uint64_t refused = put_until_no_room(&t, &l, keys);
    char name[32];
    blob_format_seg_name(atomic_load(&t.s->segs.next_seq) - 1, name, sizeof(name));
    char path[192];
    (void)snprintf(path, sizeof(path), "%s/%s", t.dir, name);
    struct stat st;
    cr_assert(eq(int, stat(path, &st), 0), "%s", path);
    cr_assert(eq(i64, (int64_t)st.st_size, 0));
    l.lag = 0;
    (void)blob_store_evict(t.s);
    cr_assert(eq(int, stat(path, &st), -1), "%s deleted", path);
    cr_assert(eq(int, put_lagging(&t, &l, refused, &keys[refused], &admitted), 0),
              "the retry is stored");
    cr_assert(eq(int, unlink(filler), 0));
    th_close(&t);
}
