/*
 * The send-gather buffer: a send built from copies in out[] and iovecs borrowing pieces.
 *
 * Invariants:
 * - iov[0..iov_count) describe exactly the send being built or in flight: the copies in
 *   out[0..out_len) and the borrowed runs in between; send_bytes is their total, ref_bytes
 *   that of the borrowed runs;
 * - last_iov_out: the last iovec ends at out + out_len, so the next copy extends it;
 * - sends are numbered from 1, so a piece's send_gen of 0 means none took its bytes yet and
 *   an inflight_gen of 0 means no send is in flight.
 *
 * Sections: the send, frames of queued pieces.
 */
#include "ring/gather.h"

#include <errno.h>
#include <string.h>

/* ---- the send ---- */

static size_t out_room(const struct ring_gather *g)
{
    return RING_GATHER_OUT_SIZE - g->out_len;
}

/* Forgets the send being built; out[] and iov[] are overwritten, not cleared. */
static void clear_send(struct ring_gather *g)
{
    g->iov_count = 0;
    g->last_iov_out = false;
    g->out_len = 0;
    g->send_bytes = 0;
    g->ref_bytes = 0;
}

void ring_gather_init(struct ring_gather *g, const struct ring_gather_limits *limits)
{
    ASSERT(limits->chunk_bytes_max < RING_GATHER_OUT_SIZE);
    ASSERT(limits->frame_pieces_max > 0);
    /* A frame's copied runs and iovecs alternate (2 * pieces + 1), with 2 iovecs to spare. */
    ASSERT(2 * (size_t)limits->frame_pieces_max + 4 <= RING_CONN_IOV_MAX);
    /* A frame's copies leave room for a chunk in an empty send: every flush makes progress. */
    ASSERT(limits->head_bytes_max + limits->frame_pieces_max * limits->copy_bytes_max <
           RING_GATHER_OUT_SIZE - limits->chunk_bytes_max);
    g->limits = limits;
    g->send_gen = 0;
    g->inflight_gen = 0;
    clear_send(g);
}

void ring_gather_begin(struct ring_gather *g)
{
    g->send_gen++;
    ASSERT(g->send_gen != 0);
    clear_send(g);
}

void ring_gather_copy(struct ring_gather *g, const void *p, size_t n)
{
    size_t room = out_room(g);
    ASSERT(n <= room);
    uint8_t *dst = g->out + g->out_len;
    memcpy(dst, p, n);
    g->out_len += n;
    g->send_bytes += n;
    if (g->last_iov_out) {
        g->iov[g->iov_count - 1].iov_len += n;
        return;
    }
    ASSERT(g->iov_count < RING_CONN_IOV_MAX);
    g->iov[g->iov_count].iov_base = dst;
    g->iov[g->iov_count].iov_len = n;
    g->iov_count++;
    g->last_iov_out = true;
}

void ring_gather_ref(struct ring_gather *g, const void *p, size_t n)
{
    ASSERT(g->iov_count < RING_CONN_IOV_MAX);
    /* iovec's base is not const; the kernel only reads it for a send. */
    g->iov[g->iov_count].iov_base = (void *)(uintptr_t)p;
    g->iov[g->iov_count].iov_len = n;
    g->iov_count++;
    g->last_iov_out = false;
    g->send_bytes += n;
    g->ref_bytes += n;
}

int ring_gather_fill(struct ring_gather *g, ring_gather_pull_fn *pull, void *ctx)
{
    const struct ring_gather_limits *lim = g->limits;
    /* Bounded: each step takes a chunk, and out[], iov[] and the byte budget are finite. */
    for (int i = 0; i < 4096; i++) {
        if (out_room(g) < lim->chunk_bytes_max || g->iov_count + 2 >= RING_CONN_IOV_MAX ||
            g->send_bytes >= lim->send_bytes_max) {
            return 0;
        }
        const uint8_t *p;
        /* The pull may add frames (ring_gather_frame) before it returns its chunk. */
        ssize_t n = pull(ctx, &p);
        if (n < 0) return (int)n;
        if (n == 0) return 0;
        if ((size_t)n > out_room(g)) return -EMSGSIZE;
        ring_gather_copy(g, p, (size_t)n);
    }
    return 0;
}

int ring_gather_send(struct ring_gather *g, struct ring_conn *c)
{
    ASSERT(g->iov_count > 0);
    int rc = ring_conn_send(c, g->iov, g->iov_count);
    if (rc < 0) return rc;
    g->inflight_gen = g->send_gen;
    return 0;
}

/* ---- frames of queued pieces ---- */

size_t ring_gather_frame_length(const struct ring_gather *g, const struct base_list *queue,
                                size_t length)
{
    size_t n = 0;
    unsigned pieces = 0;
    BASE_LIST_FOR_EACH(it, queue)
    {
        if (n == length || pieces == g->limits->frame_pieces_max) break;
        const struct ring_gather_piece *p = BASE_CONTAINER_OF(it, struct ring_gather_piece, link);
        size_t k = p->len < length - n ? p->len : length - n;
        n += k;
        pieces++;
    }
    return n;
}

/* What a frame of <length> bytes at the head of a queue adds to a send. */
struct frame_plan {
    size_t copy_bytes; /* bytes of runs short enough to copy */
    unsigned iovs;     /* runs that need their own iovec */
    unsigned pieces;   /* pieces the frame spans */
};

static void plan_frame(const struct ring_gather *g, const struct base_list *queue, size_t length,
                       struct frame_plan *plan)
{
    plan->copy_bytes = 0;
    plan->iovs = 0;
    plan->pieces = 0;
    /* Bounded by the queue; asserted below to be frame_pieces_max pieces at most. */
    BASE_LIST_FOR_EACH(it, queue)
    {
        if (length == 0) break;
        const struct ring_gather_piece *p = BASE_CONTAINER_OF(it, struct ring_gather_piece, link);
        size_t k = p->len < length ? p->len : length;
        if (k <= g->limits->copy_bytes_max) {
            plan->copy_bytes += k;
        } else {
            plan->iovs++;
        }
        plan->pieces++;
        length -= k;
    }
    /* The queue held the frame, over few enough pieces (ring_gather_frame_length). */
    ASSERT(length == 0);
    ASSERT(plan->pieces <= g->limits->frame_pieces_max);
}

/* Moves <length> bytes of <queue> into the send; returns the pieces moved to <sent>. */
static int take(struct ring_gather *g, struct base_list *queue, size_t length,
                struct base_list *sent)
{
    int moved = 0;
    /* Bounded by the frame's pieces. */
    while (length > 0) {
        bool empty = base_list_is_empty(queue);
        ASSERT(!empty);
        struct ring_gather_piece *p =
            BASE_CONTAINER_OF(queue->next, struct ring_gather_piece, link);
        size_t k = p->len < length ? p->len : length;
        if (k <= g->limits->copy_bytes_max) {
            ring_gather_copy(g, p->data, k);
        } else {
            ring_gather_ref(g, p->data, k);
        }
        p->data += k;
        p->len -= k;
        p->send_gen = g->send_gen;
        length -= k;
        if (p->len == 0) {
            base_list_del(&p->link);
            base_list_add_tail(sent, &p->link);
            moved++;
        }
    }
    return moved;
}

int ring_gather_frame(struct ring_gather *g, const void *head, size_t head_len,
                      struct base_list *queue, size_t length, struct base_list *sent)
{
    const struct ring_gather_limits *lim = g->limits;
    ASSERT(head_len <= lim->head_bytes_max);
    struct frame_plan plan;
    plan_frame(g, queue, length, &plan);
    /*
     * Room for the frame, and still for one more chunk of the pull in progress: it may copy
     * another before it returns. Copied runs and iovecs alternate: at most 2 * iovs + 1
     * entries. An empty send always has room (ring_gather_init's asserts).
     */
    bool fits = out_room(g) >= head_len + plan.copy_bytes + lim->chunk_bytes_max &&
                g->iov_count + 2 * plan.iovs + 4 <= RING_CONN_IOV_MAX;
    bool empty = g->iov_count == 0;
    if (!empty && (!fits || g->send_bytes >= lim->send_bytes_max)) return -EAGAIN;
    if (head_len > 0) ring_gather_copy(g, head, head_len);
    return take(g, queue, length, sent);
}
