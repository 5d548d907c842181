/*
 * The shared segment table: sequence numbers, liveness published without the lock,
 * references, the oldest sealed segment for eviction, the graveyard, the cold line.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "blob/internal.h"
#include "blob/io.h"
#include "blob/io_sim.h"

static int open_fd(struct blob_io *io, const char *name)
{
    int fd;
    cr_assert(eq(int, io->ops->open(io, name, O_CREAT | O_RDWR, &fd), 0));
    return fd;
}

Test(blob_segment, sequence_numbers_skip_busy_slots)
{
    struct blob_segs t;
    cr_assert(eq(int, blob_segment_table_init(&t, 4), 0));
    struct blob_io *io = blob_io_sim_create(1);
    uint64_t a = blob_segment_next_seq(&t);
    cr_assert(eq(u64, a, 1));
    cr_assert(ne(ptr, blob_segment_add(&t, a, open_fd(io, "a"), 10, BLOB_SEG_ACTIVE), NULL));
    uint64_t b = blob_segment_next_seq(&t);
    cr_assert(eq(u64, b, 2));
    /* Slots 1,2,3 and 0 (seq 4): seq 5 would land on seq 1's slot and is skipped. */
    cr_assert(ne(ptr, blob_segment_add(&t, 2, open_fd(io, "b"), 10, BLOB_SEG_SEALED), NULL));
    cr_assert(ne(ptr, blob_segment_add(&t, 3, open_fd(io, "c"), 10, BLOB_SEG_SEALED), NULL));
    cr_assert(eq(u64, blob_segment_next_seq(&t), 4));
    cr_assert(ne(ptr, blob_segment_add(&t, 4, open_fd(io, "d"), 10, BLOB_SEG_SEALED), NULL));
    cr_assert(eq(u64, blob_segment_next_seq(&t), 0), "the table is full");
    cr_assert(eq(ptr, blob_segment_add(&t, 8, -1, 1, BLOB_SEG_SEALED), NULL), "slot taken");
    blob_segment_seen_seq(&t, 100);
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 40));
    blob_segment_table_deinit(&t, io);
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 0));
    blob_io_sim_destroy(io);
}

Test(blob_segment, liveness_references_and_the_graveyard)
{
    struct blob_segs t;
    cr_assert(eq(int, blob_segment_table_init(&t, 64), 0));
    struct blob_io *io = blob_io_sim_create(2);
    struct blob_seg *s1 = blob_segment_add(&t, 1, open_fd(io, "1"), 100, BLOB_SEG_SEALED);
    struct blob_seg *s2 = blob_segment_add(&t, 2, open_fd(io, "2"), 200, BLOB_SEG_ACTIVE);
    cr_assert(blob_segment_is_alive(&t, 1));
    cr_assert(blob_segment_is_alive(&t, 2));
    cr_assert(not(blob_segment_is_alive(&t, 3)));
    cr_assert(not(blob_segment_is_alive(&t, 65)), "same slot, other seq");
    struct blob_seg *r = blob_segment_get(&t, 1);
    cr_assert(eq(ptr, r, s1));
    cr_assert(eq(u32, atomic_load(&s1->refs), 2));
    /* The oldest non-active one is taken: segment 1. */
    struct blob_seg *old = blob_segment_take_oldest(&t);
    cr_assert(eq(ptr, old, s1));
    cr_assert(not(blob_segment_is_alive(&t, 1)));
    cr_assert(eq(ptr, blob_segment_get(&t, 1), NULL));
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 200));
    cr_assert(eq(ptr, blob_segment_take_oldest(&t), NULL), "the active one stays");
    blob_segment_put(&t, old); /* the evictor's reference */
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 2), "a reader still holds it");
    blob_segment_put(&t, r); /* the reader's */
    blob_segment_bury(&t, io);
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 1), "closed off the cores");
    blob_segment_set(&t, s2, BLOB_SEG_SEALED, 300);
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 300));
    blob_segment_set_bytes(&t, s2, 250);
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 250));
    blob_segment_kill(&t, s2);
    blob_segment_kill(&t, s2); /* twice is harmless until the struct is buried and reused */
    cr_assert(not(blob_segment_is_alive(&t, 2)));
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 0));
    blob_segment_table_deinit(&t, io);
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 0));
    blob_io_sim_destroy(io);
}

Test(blob_segment, the_cold_line_covers_the_oldest_bytes)
{
    struct blob_segs t;
    cr_assert(eq(int, blob_segment_table_init(&t, 64), 0));
    struct blob_io *io = blob_io_sim_create(3);
    for (uint64_t s = 1; s <= 5; s++)
        cr_assert(ne(ptr, blob_segment_add(&t, s, -1, 100, BLOB_SEG_SEALED), NULL));
    cr_assert(ne(ptr, blob_segment_add(&t, 6, -1, 100, BLOB_SEG_ACTIVE), NULL));
    blob_segment_update_cold(&t, 0);
    cr_assert(eq(u64, atomic_load(&t.cold_below), 0));
    blob_segment_update_cold(&t, 250);
    cr_assert(eq(u64, atomic_load(&t.cold_below), 3), "segments 1 and 2 are cold");
    blob_segment_update_cold(&t, 10000);
    cr_assert(eq(u64, atomic_load(&t.cold_below), 6), "never the active one");
    blob_segment_table_deinit(&t, io);
    blob_io_sim_destroy(io);
}

Test(blob_segment, abandoned_segments_are_evicted_like_sealed_ones)
{
    struct blob_segs t;
    cr_assert(eq(int, blob_segment_table_init(&t, 16), 0));
    struct blob_io *io = blob_io_sim_create(4);
    struct blob_seg *a = blob_segment_add(&t, 3, -1, 10, BLOB_SEG_ACTIVE);
    struct blob_seg *b = blob_segment_add(&t, 4, -1, 10, BLOB_SEG_SEALED);
    blob_segment_set(&t, a, BLOB_SEG_ABANDONED, 20);
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 30));
    struct blob_seg *old = blob_segment_take_oldest(&t);
    cr_assert(eq(ptr, old, a), "the abandoned one is older");
    blob_segment_put(&t, old);
    old = blob_segment_take_oldest(&t);
    cr_assert(eq(ptr, old, b));
    blob_segment_put(&t, old);
    cr_assert(eq(ptr, blob_segment_take_oldest(&t), NULL));
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 0));
    blob_segment_table_deinit(&t, io);
    blob_io_sim_destroy(io);
}

Test(blob_segment, a_dead_segment_keeps_its_size_out_of_the_budget)
{
    struct blob_segs t;
    cr_assert(eq(int, blob_segment_table_init(&t, 16), 0));
    struct blob_io *io = blob_io_sim_create(5);
    struct blob_seg *a = blob_segment_add(&t, 1, -1, 100, BLOB_SEG_ACTIVE);
    struct blob_seg *r = blob_segment_get(&t, 1);
    blob_segment_kill(&t, a);
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 0));
    /* Later size updates or state changes of a dead segment change nothing. */
    blob_segment_set_bytes(&t, a, 500);
    cr_assert(eq(u64, atomic_load(&t.disk_bytes), 0));
    blob_segment_put(&t, r);
    blob_segment_bury(&t, io);
    blob_segment_table_deinit(&t, io);
    blob_io_sim_destroy(io);
}

Test(blob_segment, a_reader_keeps_a_killed_segment_open_until_it_lets_go)
{
    struct blob_segs t;
    cr_assert(eq(int, blob_segment_table_init(&t, 16), 0));
    struct blob_io *io = blob_io_sim_create(6);
    struct blob_seg *s = blob_segment_add(&t, 5, open_fd(io, "five"), 10, BLOB_SEG_SEALED);
    struct blob_seg *r1 = blob_segment_get(&t, 5);
    struct blob_seg *r2 = blob_segment_get(&t, 5);
    cr_assert(eq(ptr, r1, s));
    cr_assert(eq(ptr, r2, s));
    blob_segment_kill(&t, s);
    cr_assert(eq(ptr, blob_segment_get(&t, 5), NULL), "no new reference to a dead one");
    blob_segment_put(&t, r1);
    blob_segment_bury(&t, io);
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 1), "one reader still holds it");
    blob_segment_put(&t, r2);
    blob_segment_bury(&t, io);
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 0));
    blob_segment_put(&t, NULL);
    blob_segment_table_deinit(&t, io);
    blob_io_sim_destroy(io);
}

/*
 * mincore(2) tells the truth about a file's page cache only to a process that owns the file or
 * may write it; to any other it reports every page resident, even pages past the end of the
 * file (mm/mincore.c can_do_mincore). A segment served by another uid than the one that wrote
 * it (a changed runAsUser, a restored data folder) must then not be read in place: a page past
 * the end raises SIGBUS, and an uncached page is read from the disk by the core itself.
 */
Test(blob_segment, a_page_past_the_end_is_never_mapped_even_when_mincore_cannot_tell)
{
    if (geteuid() != 0) cr_skip_test("needs root to hand the file to another uid");
    char dir[] = "/tmp/rc-mincore-XXXXXX";
    cr_assert(ne(ptr, mkdtemp(dir), NULL));
    cr_assert(eq(int, chmod(dir, 0755), 0));
    char path[64];
    (void)snprintf(path, sizeof(path), "%s/seg", dir);
    int wfd = open(path, O_CREAT | O_WRONLY, 0644); /* root's, read-only to others */
    cr_assert(ge(int, wfd, 0));
    static uint8_t page[4096];
    memset(page, 7, sizeof(page));
    cr_assert(eq(sz, (size_t)write(wfd, page, sizeof(page)), sizeof(page)));
    close(wfd);
    struct blob_io *io;
    cr_assert(eq(int, blob_io_real_create(dir, &io), 0));
    int fd = open(path, O_RDONLY);
    cr_assert(ge(int, fd, 0));
    /* Nothing is left behind: the open fds keep the file while the test runs. */
    cr_assert(eq(int, unlink(path), 0));
    cr_assert(eq(int, rmdir(dir), 0));
    /* Serve it as another user (this test runs in its own process): mincore(2) judges the
     * caller's credentials when it is called. */
    cr_assert(eq(int, setresgid(65534, 65534, 65534), 0));
    cr_assert(eq(int, setresuid(65534, 65534, 65534), 0));
    struct blob_segs t;
    cr_assert(eq(int, blob_segment_table_init(&t, 4), 0));
    blob_segment_table_map(&t, 1u << 20);
    struct blob_seg *seg = blob_segment_add(&t, 1, fd, sizeof(page), BLOB_SEG_SEALED);
    cr_assert(ne(ptr, seg, NULL));
    /* Pages 2 and 3 of the mapping lie past the end of the 1-page file. */
    cr_assert(eq(ptr, (void *)blob_segment_mapped(&t, seg, 8192, 4096), NULL),
              "a page past the end of the file was handed out: touching it raises SIGBUS");
    blob_segment_table_deinit(&t, io);
    blob_io_real_destroy(io);
}

Test(blob_segment, a_buried_segments_struct_is_reused_and_a_stale_lookup_misses)
{
    struct blob_segs t;
    cr_assert(eq(int, blob_segment_table_init(&t, 8), 0));
    struct blob_io *io = blob_io_sim_create(7);
    struct blob_seg *s1 = blob_segment_add(&t, 1, open_fd(io, "one"), 10, BLOB_SEG_SEALED);
    blob_segment_kill(&t, s1);
    blob_segment_bury(&t, io);
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 0), "closed when buried");
    /* Seq 9 lands in seq 1's slot and gets its struct back. */
    struct blob_seg *s9 = blob_segment_add(&t, 9, open_fd(io, "nine"), 20, BLOB_SEG_SEALED);
    cr_assert(eq(ptr, s9, s1), "the struct is reused, never freed");
    cr_assert(eq(u64, atomic_load(&s9->seq), 9));
    /* A lookup of 1 reads the reused struct from the slot, takes a reference, sees seq 9 and
     * gives the reference back. */
    cr_assert(eq(ptr, blob_segment_get(&t, 1), NULL));
    cr_assert(eq(u32, atomic_load(&s9->refs), 1));
    struct blob_seg *r = blob_segment_get(&t, 9);
    cr_assert(eq(ptr, r, s9));
    cr_assert(eq(u32, atomic_load(&s9->refs), 2));
    blob_segment_put(&t, r);
    blob_segment_table_deinit(&t, io);
    cr_assert(eq(u32, blob_io_sim_open_fds(io), 0));
    blob_io_sim_destroy(io);
}

/* ---- references taken on every core while the evictor kills and reuses segments ---- */

#define CHURN_SEGS    20000u   /* segments added and killed at least */
#define CHURN_MAX     2000000u /* and at most, until the readers took CHURN_HITS references */
#define CHURN_HITS    10000u
#define CHURN_LIVE    3u /* segments alive at once */
#define CHURN_READERS 3

struct churn {
    struct blob_segs t;
    struct blob_io *io;
    _Atomic uint64_t newest; /* the seq added last */
    _Atomic bool done;
    _Atomic int started;
    _Atomic uint64_t hits;
    _Atomic uint64_t wrong; /* references to another segment than asked for, or a dead one */
};

static void *churn_reader(void *arg)
{
    struct churn *c = arg;
    uint64_t x = (uint64_t)(uintptr_t)&x;
    atomic_fetch_add(&c->started, 1);
    while (!atomic_load(&c->done)) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t want = atomic_load(&c->newest) - (x >> 60) % (CHURN_LIVE + 2);
        struct blob_seg *seg = blob_segment_get(&c->t, (uint32_t)want);
        if (!seg) continue;
        if (atomic_load(&seg->seq) != want || atomic_load(&seg->refs) < 1) {
            atomic_fetch_add(&c->wrong, 1);
        }
        atomic_fetch_add(&c->hits, 1);
        blob_segment_put(&c->t, seg);
    }
    return NULL;
}

Test(blob_segment, lock_free_references_stay_right_while_segments_die_and_are_reused)
{
    static struct churn c;
    cr_assert(eq(int, blob_segment_table_init(&c.t, 8), 0));
    c.io = blob_io_sim_create(8);
    pthread_t readers[CHURN_READERS];
    for (int i = 0; i < CHURN_READERS; i++) {
        cr_assert(eq(int, pthread_create(&readers[i], NULL, churn_reader, &c), 0));
    }
    while (atomic_load(&c.started) < CHURN_READERS)
        sched_yield();
    struct blob_seg *live[CHURN_LIVE + 1] = { 0 }; /* by seq % (CHURN_LIVE + 1) */
    /* Bounded by CHURN_MAX. */
    for (uint64_t s = 1; s <= CHURN_MAX; s++) {
        if (s > CHURN_SEGS && atomic_load(&c.hits) >= CHURN_HITS) break;
        struct blob_seg *seg = blob_segment_add(&c.t, s, -1, 1, BLOB_SEG_SEALED);
        cr_assert(ne(ptr, seg, NULL));
        live[s % (CHURN_LIVE + 1)] = seg;
        atomic_store(&c.newest, s);
        if (s > CHURN_LIVE) blob_segment_kill(&c.t, live[(s - CHURN_LIVE) % (CHURN_LIVE + 1)]);
        blob_segment_bury(&c.t, c.io);
    }
    atomic_store(&c.done, true);
    for (int i = 0; i < CHURN_READERS; i++)
        pthread_join(readers[i], NULL);
    blob_segment_bury(&c.t, c.io);
    cr_assert(eq(u64, atomic_load(&c.wrong), 0));
    cr_assert(ge(u64, atomic_load(&c.hits), CHURN_HITS));
    /* Reuse keeps the structs to the few alive or waiting at once, not one per segment. */
    size_t spares = 0;
    for (struct base_list *n = c.t.spares.next; n != &c.t.spares; n = n->next)
        spares++;
    cr_assert(le(sz, spares, (size_t)(CHURN_LIVE + CHURN_READERS + 2)), "%zu spare structs",
              spares);
    blob_segment_table_deinit(&c.t, c.io);
    blob_io_sim_destroy(c.io);
}
