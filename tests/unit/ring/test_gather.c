/*
 * The send-gather buffer: copies and borrowed iovecs, the limits of fill and of frames, the
 * pieces a frame takes, and a real send over a socketpair.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "echo.h"
#include "ring/conn.h"
#include "ring/core.h"
#include "ring/gather.h"

/* Small numbers, so that every limit is easy to reach. */
static const struct ring_gather_limits limits = {
    .chunk_bytes_max = 1000,
    .send_bytes_max = 4000,
    .copy_bytes_max = 16,
    .head_bytes_max = 9,
    .frame_pieces_max = 4,
};

static struct ring_gather *gather_new(const struct ring_gather_limits *lim)
{
    struct ring_gather *g = malloc(sizeof(*g));
    cr_assert(ne(ptr, g, NULL));
    ring_gather_init(g, lim);
    ring_gather_begin(g);
    return g;
}

/* The bytes of the send being built, in order, into <dst> (at least send_bytes long). */
static size_t gathered(const struct ring_gather *g, uint8_t *dst)
{
    size_t n = 0;
    for (unsigned i = 0; i < g->iov_count; i++) {
        memcpy(dst + n, g->iov[i].iov_base, g->iov[i].iov_len);
        n += g->iov[i].iov_len;
    }
    cr_assert(eq(sz, n, g->send_bytes));
    return n;
}

static bool points_into_out(const struct ring_gather *g, unsigned i)
{
    const uint8_t *p = g->iov[i].iov_base;
    return p >= g->out && p + g->iov[i].iov_len <= g->out + RING_GATHER_OUT_SIZE;
}

Test(ring_gather, copies_join_one_iovec_and_refs_take_their_own)
{
    struct ring_gather *g = gather_new(&limits);
    static uint8_t big[1000];
    memset(big, 'x', sizeof(big));
    ring_gather_copy(g, "ab", 2);
    ring_gather_copy(g, "cd", 2);
    cr_assert(eq(u32, g->iov_count, 1), "a copy after a copy grows the same iovec");
    cr_assert(eq(sz, g->iov[0].iov_len, 4));
    ring_gather_ref(g, big, sizeof(big));
    cr_assert(eq(u32, g->iov_count, 2));
    cr_assert(eq(ptr, g->iov[1].iov_base, big), "borrowed, not copied");
    ring_gather_copy(g, "ef", 2);
    cr_assert(eq(u32, g->iov_count, 3), "a copy after a ref starts a new iovec");
    cr_assert(points_into_out(g, 2));
    cr_assert(eq(ptr, g->iov[2].iov_base, g->out + 4), "copies stay contiguous in out[]");
    cr_assert(eq(sz, g->send_bytes, 1006));
    cr_assert(eq(sz, ring_gather_ref_bytes(g), 1000));
    cr_assert(eq(sz, g->out_len, 6));
    uint8_t all[1006];
    gathered(g, all);
    cr_assert(eq(int, memcmp(all, "abcd", 4), 0));
    cr_assert(eq(int, memcmp(all + 1004, "ef", 2), 0));
    uint64_t gen = g->send_gen;
    ring_gather_begin(g);
    cr_assert(ring_gather_is_empty(g));
    cr_assert(eq(sz, g->send_bytes, 0));
    cr_assert(eq(sz, ring_gather_ref_bytes(g), 0));
    cr_assert(eq(u64, g->send_gen, gen + 1));
    free(g);
}

/* A pull that hands out <size>-byte chunks, <left> of them, or fails with <err>. */
struct puller {
    uint8_t chunk[2048];
    size_t size;
    int left;
    int err;
    int pulls;
};

static ssize_t pull(void *ctx, const uint8_t **chunk)
{
    struct puller *p = ctx;
    p->pulls++;
    if (p->err) return p->err;
    if (p->left == 0) return 0;
    p->left--;
    memset(p->chunk, 'a' + p->pulls % 26, p->size);
    *chunk = p->chunk;
    return (ssize_t)p->size;
}

/* Fills a new send from <left> chunks of <size> bytes: expects <pulls> pulls and <bytes>. */
static void check_fill(const struct ring_gather_limits *lim, size_t size, int left, int pulls,
                       size_t bytes)
{
    struct ring_gather *g = gather_new(lim);
    struct puller p = { .size = size, .left = left };
    cr_assert(eq(int, ring_gather_fill(g, pull, &p), 0));
    cr_assert(eq(int, p.pulls, pulls));
    cr_assert(eq(sz, g->send_bytes, bytes));
    cr_assert(eq(sz, g->out_len, bytes), "every chunk copied");
    cr_assert(eq(u32, g->iov_count, 1), "into one iovec");
    free(g);
}

Test(ring_gather, fill_copies_until_the_pull_runs_dry)
{
    check_fill(&limits, 100, 3, 4, 300); /* three chunks and the empty answer */
}

Test(ring_gather, fill_stops_at_the_bytes_of_a_send)
{
    check_fill(&limits, 500, 1000, 8, 4000);
}

Test(ring_gather, fill_keeps_room_for_a_chunk)
{
    /* 64 chunks leave 768 bytes of 32 KiB: less than a chunk, so no 65th pull. */
    struct ring_gather_limits roomy = limits;
    roomy.send_bytes_max = 1u << 30; /* no limit on a send's bytes */
    check_fill(&roomy, 500, 1000, 64, 32000);
}

Test(ring_gather, fill_keeps_two_iovecs_free)
{
    static uint8_t big[64];
    struct ring_gather *g = gather_new(&limits);
    for (int i = 0; i < RING_CONN_IOV_MAX - 2; i++)
        ring_gather_ref(g, big, sizeof(big));
    struct puller p = { .size = 10, .left = 5 };
    cr_assert(eq(int, ring_gather_fill(g, pull, &p), 0));
    cr_assert(eq(int, p.pulls, 0), "62 iovecs: no pull");
    ring_gather_begin(g);
    for (int i = 0; i < RING_CONN_IOV_MAX - 3; i++)
        ring_gather_ref(g, big, sizeof(big));
    cr_assert(eq(int, ring_gather_fill(g, pull, &p), 0));
    cr_assert(eq(int, p.pulls, 1), "61 iovecs: one pull, whose copy takes the 62nd");
    cr_assert(eq(u32, g->iov_count, RING_CONN_IOV_MAX - 2));
    free(g);
}

Test(ring_gather, fill_reports_errors_and_chunks_over_the_room)
{
    struct ring_gather_limits small_chunks = limits;
    small_chunks.chunk_bytes_max = 500;
    small_chunks.send_bytes_max = 1u << 30;
    struct ring_gather *g = gather_new(&small_chunks);
    struct puller p = { .size = 100, .left = 1, .err = -EPROTO };
    cr_assert(eq(int, ring_gather_fill(g, pull, &p), -EPROTO));
    cr_assert(ring_gather_is_empty(g));
    static uint8_t fill[RING_GATHER_OUT_SIZE - 600];
    ring_gather_copy(g, fill, sizeof(fill));
    p = (struct puller){ .size = 700, .left = 1 };
    cr_assert(eq(int, ring_gather_fill(g, pull, &p), -EMSGSIZE), "700 bytes, 600 of room");
    cr_assert(eq(sz, g->out_len, sizeof(fill)), "nothing of it copied");
    free(g);
}

struct piece {
    struct ring_gather_piece gp;
    uint8_t bytes[4000];
};

/* A frame test's queue of pieces, and the list of those taken whole. */
static struct base_list queue;
static struct base_list sent;

/* Queues pieces of the given sizes on <queue>, bytes counting up from <seed>; <sent> empty. */
static void queue_pieces(struct piece *pieces, const size_t *sizes, int n, uint8_t seed)
{
    base_list_init(&sent);
    base_list_init(&queue);
    for (int i = 0; i < n; i++) {
        struct piece *p = &pieces[i];
        for (size_t k = 0; k < sizes[i]; k++)
            p->bytes[k] = (uint8_t)(seed + i * 31 + k);
        p->gp.data = p->bytes;
        p->gp.len = sizes[i];
        p->gp.send_gen = 0;
        base_list_add_tail(&queue, &p->gp.link);
    }
}

static size_t list_len(const struct base_list *l)
{
    size_t n = 0;
    BASE_LIST_FOR_EACH(it, l)
    n++;
    return n;
}

Test(ring_gather, frame_length_stops_at_length_and_at_frame_pieces_max)
{
    struct ring_gather *g = gather_new(&limits);
    static struct piece pieces[6];
    const size_t sizes[] = { 10, 100, 5, 3000, 7, 7 };
    queue_pieces(pieces, sizes, 6, 0);
    cr_assert(eq(sz, ring_gather_frame_length(g, &queue, 50), 50));
    cr_assert(eq(sz, ring_gather_frame_length(g, &queue, 110), 110));
    cr_assert(eq(sz, ring_gather_frame_length(g, &queue, 100000), 3115), "four pieces at most");
    struct ring_gather_limits two = limits;
    two.frame_pieces_max = 2;
    g->limits = &two;
    cr_assert(eq(sz, ring_gather_frame_length(g, &queue, 100000), 110));
    free(g);
}

Test(ring_gather, frame_copies_short_runs_and_borrows_long_ones)
{
    struct ring_gather *g = gather_new(&limits);
    static struct piece pieces[4];
    const size_t sizes[] = { 10, 100, 16, 3000 }; /* 16: copy_bytes_max */
    queue_pieces(pieces, sizes, 4, 7);
    size_t length = ring_gather_frame_length(g, &queue, 100000);
    cr_assert(eq(int, ring_gather_frame(g, "HEAD12345", 9, &queue, length, &sent), 4));
    /* head + 10 copied, 100 borrowed, 16 copied, 3000 borrowed. */
    cr_assert(eq(u32, g->iov_count, 4));
    cr_assert(points_into_out(g, 0));
    cr_assert(eq(sz, g->iov[0].iov_len, 19));
    cr_assert(eq(ptr, g->iov[1].iov_base, pieces[1].bytes));
    cr_assert(points_into_out(g, 2));
    cr_assert(eq(sz, g->iov[2].iov_len, 16));
    cr_assert(eq(ptr, g->iov[3].iov_base, pieces[3].bytes));
    cr_assert(eq(sz, ring_gather_ref_bytes(g), 3100));
    static uint8_t all[9 + 3126];
    cr_assert(eq(sz, gathered(g, all), 9 + 3126));
    cr_assert(eq(int, memcmp(all, "HEAD12345", 9), 0));
    size_t at = 9;
    for (int i = 0; i < 4; i++) {
        cr_assert(eq(int, memcmp(all + at, pieces[i].bytes, sizes[i]), 0), "piece %d", i);
        at += sizes[i];
    }
    cr_assert(base_list_is_empty(&queue));
    cr_assert(eq(sz, list_len(&sent), 4), "every piece taken whole is on the sent list");
    for (int i = 0; i < 4; i++) {
        cr_assert(eq(u64, pieces[i].gp.send_gen, g->send_gen));
        cr_assert(eq(sz, pieces[i].gp.len, 0));
    }
    free(g);
}

Test(ring_gather, frame_takes_part_of_a_piece_and_leaves_the_rest_queued)
{
    struct ring_gather *g = gather_new(&limits);
    static struct piece pieces[1];
    const size_t sizes[] = { 3000 };
    queue_pieces(pieces, sizes, 1, 0);
    cr_assert(not(ring_gather_piece_is_started(&pieces[0].gp)));
    cr_assert(eq(int, ring_gather_frame(g, "h", 1, &queue, 2000, &sent), 0));
    cr_assert(ring_gather_piece_is_started(&pieces[0].gp));
    cr_assert(eq(sz, pieces[0].gp.len, 1000));
    cr_assert(eq(ptr, (void *)(uintptr_t)pieces[0].gp.data, pieces[0].bytes + 2000));
    cr_assert(eq(sz, list_len(&queue), 1));
    cr_assert(base_list_is_empty(&sent));
    /* The rest, in a frame of its own: the head joins no iovec of borrowed bytes. */
    cr_assert(eq(int, ring_gather_frame(g, "h", 1, &queue, 1000, &sent), 1));
    cr_assert(eq(u32, g->iov_count, 4));
    cr_assert(eq(ptr, g->iov[3].iov_base, pieces[0].bytes + 2000));
    cr_assert(eq(sz, g->send_bytes, 3002));
    free(g);
}

Test(ring_gather, frame_waits_when_the_send_is_full)
{
    struct ring_gather_limits roomy = limits;
    roomy.send_bytes_max = 1u << 30; /* no limit on a send's bytes */
    struct ring_gather *g = gather_new(&roomy);
    static struct piece pieces[2];
    const size_t sizes[] = { 8, 2000 };
    queue_pieces(pieces, sizes, 2, 0);

    /* Not enough room left for the head, the copies and one more chunk. */
    static uint8_t fill[RING_GATHER_OUT_SIZE - 1016];
    ring_gather_copy(g, fill, sizeof(fill));
    cr_assert(eq(int, ring_gather_frame(g, "HEAD12345", 9, &queue, 2008, &sent), -EAGAIN));
    cr_assert(eq(sz, g->out_len, sizeof(fill)), "nothing added");
    cr_assert(eq(u32, g->iov_count, 1));
    cr_assert(not(ring_gather_piece_is_started(&pieces[0].gp)));
    cr_assert(eq(sz, list_len(&queue), 2));
    /* One byte more of room and it fits: 9 + 8 + 1000. */
    ring_gather_begin(g);
    ring_gather_copy(g, fill, sizeof(fill) - 1);
    cr_assert(eq(int, ring_gather_frame(g, "HEAD12345", 9, &queue, 2008, &sent), 2));
    free(g);
}

Test(ring_gather, frame_waits_for_iovecs_and_for_the_bytes_of_a_send)
{
    struct ring_gather *g = gather_new(&limits);
    static uint8_t big[4000];
    static struct piece pieces[1];
    const size_t sizes[] = { 2000 };
    queue_pieces(pieces, sizes, 1, 0);
    /* One borrowed run needs 2 * 1 + 4 iovecs free: 59 used is one too many. */
    for (int i = 0; i < RING_CONN_IOV_MAX - 5; i++)
        ring_gather_ref(g, big, 1);
    cr_assert(eq(int, ring_gather_frame(g, "h", 1, &queue, 2000, &sent), -EAGAIN));
    ring_gather_begin(g);
    for (int i = 0; i < RING_CONN_IOV_MAX - 6; i++)
        ring_gather_ref(g, big, 1);
    cr_assert(eq(int, ring_gather_frame(g, "h", 1, &queue, 1000, &sent), 0));
    /* 3000 bytes of 4000: another frame still fits; at 4000 none does. */
    ring_gather_begin(g);
    ring_gather_ref(g, big, 1);
    ring_gather_ref(g, big, 3999);
    cr_assert(eq(int, ring_gather_frame(g, "h", 1, &queue, 1000, &sent), -EAGAIN));
    ring_gather_begin(g);
    cr_assert(eq(int, ring_gather_frame(g, "h", 1, &queue, 1000, &sent), 1),
              "an empty send always takes a frame");
    free(g);
}

Test(ring_gather, a_send_carries_the_frames_and_marks_its_pieces_in_flight)
{
    struct ring_core *core = echo_core_create(0, 4, 4096);
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0));
    static struct echo_bare s;
    ring_conn_init(&s.conn, core, sv[0], &echo_bare_ops, 0, 5000);

    struct ring_gather *g = gather_new(&limits);
    static struct piece pieces[2];
    const size_t sizes[] = { 12, 1500 };
    queue_pieces(pieces, sizes, 2, 3);
    cr_assert(eq(int, ring_gather_frame(g, "HEAD", 4, &queue, 1512, &sent), 2));
    cr_assert(not(ring_gather_piece_is_in_flight(g, &pieces[1].gp)), "not sent yet");
    cr_assert(eq(int, ring_gather_send(g, &s.conn), 0));
    cr_assert(ring_gather_piece_is_in_flight(g, &pieces[0].gp));
    cr_assert(ring_gather_piece_is_in_flight(g, &pieces[1].gp));
    for (int i = 0; i < 500 && s.sent == 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(int, s.sent, 1));
    ring_gather_send_done(g);
    cr_assert(not(ring_gather_piece_is_in_flight(g, &pieces[1].gp)));

    static uint8_t got[4 + 1512];
    size_t n = 0;
    while (n < sizeof(got)) {
        ssize_t r = read(sv[1], got + n, sizeof(got) - n);
        cr_assert(gt(sz, (size_t)(r > 0 ? r : 0), 0));
        n += (size_t)r;
    }
    cr_assert(eq(int, memcmp(got, "HEAD", 4), 0));
    cr_assert(eq(int, memcmp(got + 4, pieces[0].bytes, 12), 0));
    cr_assert(eq(int, memcmp(got + 16, pieces[1].bytes, 1500), 0));

    ring_conn_close(&s.conn, 0);
    for (int i = 0; i < 500 && s.closed == 0; i++)
        cr_assert(ge(int, ring_core_tick(core, 10), 0));
    cr_assert(eq(int, s.closed, 1));
    cr_assert(eq(u64, base_counter_get(&ring_core_counters(core)->ops_in_flight), 0));
    close(sv[1]);
    ring_core_destroy(core);
    free(g);
}
