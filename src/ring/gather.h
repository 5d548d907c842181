/*
 * A send-gather buffer: one ring_conn_send built from copies and borrowed memory. Small
 * chunks (a protocol's frame headers and control frames, short pieces) are copied into a
 * fixed output buffer; longer pieces go out as iovecs pointing at their owner's memory, so
 * payload is never copied. One send is built while none is in flight, and its memory stays
 * unchanged until that send completes.
 *
 * Producers: a pull function that hands out chunks to copy (ring_gather_fill), and frames
 * of a head plus the next bytes of a queue of pieces (ring_gather_frame), which may be added
 * from inside a pull. Limits, from the caller: room kept free for the next pulled chunk,
 * bytes per send, how short a run is copied, and how many pieces a frame may span; together
 * they guarantee that a frame always fits an empty send, so every flush makes progress.
 *
 * Pieces carry the number of the send that took their latest bytes, so their owner knows
 * whether one is in the send in flight before releasing it. Everything runs on one core.
 */
#ifndef RINGCAS_RING_GATHER_H
#define RINGCAS_RING_GATHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "base/assert.h"
#include "base/list.h"
#include "ring/conn.h"

/* Bytes of the output buffer that holds a send's copies. */
#define RING_GATHER_OUT_SIZE (32u << 10)

/* A run of bytes queued for sending from its owner's memory, embedded in the owner's type. */
struct ring_gather_piece {
    struct base_list link; /* on its owner's queue, then on a sent list once taken whole */
    const uint8_t *data;   /* next byte not yet taken into a send */
    size_t len;            /* bytes not yet taken into a send */
    uint64_t send_gen;     /* the send that took its latest bytes; 0: none yet */
};

/* The limits of a gather's sends; the caller's memory, unchanged while a gather uses it. */
struct ring_gather_limits {
    size_t chunk_bytes_max;    /* longest pulled chunk: kept free in out[] before each pull */
    size_t send_bytes_max;     /* no frame is added to a send holding this many bytes */
    size_t copy_bytes_max;     /* runs of pieces up to this long are copied, longer ones not */
    size_t head_bytes_max;     /* longest frame head */
    unsigned frame_pieces_max; /* pieces one frame may span */
};

/*
 * Defines <name>, a static const struct ring_gather_limits of constants, in the order of its
 * fields, with ring_gather_init's checks done at compile time: a frame of <pieces> pieces
 * fits an empty send's iovecs, and its copies (<head> bytes, and up to <copy> of each piece)
 * leave <chunk> bytes of room.
 */
#define RING_GATHER_LIMITS_DEFINE(name, chunk, send, copy, head, pieces)                           \
    STATIC_ASSERT(2 * (pieces) + 4 <= RING_CONN_IOV_MAX, "a frame always fits a send");            \
    STATIC_ASSERT((head) + (pieces) * (copy) < RING_GATHER_OUT_SIZE - (chunk),                     \
                  "a frame's copies always fit an empty send");                                    \
    static const struct ring_gather_limits name = { (chunk), (send), (copy), (head), (pieces) }

struct ring_gather {
    /* private: */
    const struct ring_gather_limits *limits; /* borrowed */
    uint64_t send_gen;                       /* number of the send being built; from 1 */
    uint64_t inflight_gen;                   /* number of the send in flight; 0: none */
    unsigned iov_count;                      /* iovecs of the send being built */
    bool last_iov_out;                       /* the last iovec ends at out + out_len */
    size_t out_len;                          /* bytes of out[] used */
    size_t send_bytes;                       /* bytes of the send being built */
    size_t ref_bytes;                        /* ... of them borrowed, not copied */
    struct iovec iov[RING_CONN_IOV_MAX];     /* the send being built or in flight */
    uint8_t out[RING_GATHER_OUT_SIZE];       /* its copies */
};

/*
 * Pulls the next chunk to send into *<chunk> (memory the pull owns, valid until the next
 * pull): returns its length, 0 when there is nothing more, or -errno.
 */
typedef ssize_t ring_gather_pull_fn(void *ctx, const uint8_t **chunk);

/*
 * Readies <g> (caller's memory) to build sends within <limits> (borrowed; asserted to let a
 * frame fit an empty send). Neither the output buffer nor the iovecs are cleared.
 */
void ring_gather_init(struct ring_gather *g, const struct ring_gather_limits *limits);

/* Starts building a new send, empty, numbered one past the last. */
void ring_gather_begin(struct ring_gather *g);

/* Copies <n> bytes at <p> into the send; the caller checked there is room (asserted). */
void ring_gather_copy(struct ring_gather *g, const void *p, size_t n);

/*
 * Adds the <n> bytes at <p> (borrowed until the send completes) as an iovec of their own;
 * the caller checked that an iovec is free (asserted).
 */
void ring_gather_ref(struct ring_gather *g, const void *p, size_t n);

/*
 * Copies chunks from <pull>(<ctx>) into the send until it returns 0, or until the send holds
 * send_bytes_max bytes, or has less than chunk_bytes_max room or two iovecs left. Bounded
 * by 4096 pulls. Returns 0, the pull's -errno, or -EMSGSIZE for a chunk over the room left.
 */
MUST_CHECK int ring_gather_fill(struct ring_gather *g, ring_gather_pull_fn *pull, void *ctx);

/*
 * Bytes of <queue> (struct ring_gather_piece.link) one frame may carry: up to <length>,
 * spanning at most frame_pieces_max pieces.
 */
size_t ring_gather_frame_length(const struct ring_gather *g, const struct base_list *queue,
                                size_t length);

/*
 * Adds a frame to the send: the <head_len> bytes at <head> (copied; at most head_bytes_max),
 * then the next <length> bytes of <queue>'s pieces (no more than ring_gather_frame_length
 * allows): runs of up to copy_bytes_max bytes are copied, longer ones borrowed. Each piece
 * touched gets the send's number; one whose last byte is taken moves to the tail of <sent>.
 * Returns the number of pieces moved, or -EAGAIN, with nothing added, when the send is not
 * empty and the frame would leave less than chunk_bytes_max room, or too few iovecs, or the
 * send already holds send_bytes_max bytes: the frame then waits for the next send.
 */
MUST_CHECK int ring_gather_frame(struct ring_gather *g, const void *head, size_t head_len,
                                 struct base_list *queue, size_t length, struct base_list *sent);

/*
 * Submits the send built on <c> (ring_conn_send, whose result it returns) and, on success,
 * numbers it the send in flight. The send must not be empty (asserted).
 */
MUST_CHECK int ring_gather_send(struct ring_gather *g, struct ring_conn *c);

/* The send in flight completed, or never will (the connection closed). */
static inline void ring_gather_send_done(struct ring_gather *g)
{
    g->inflight_gen = 0;
}

/* True when the send being built holds nothing. */
static inline bool ring_gather_is_empty(const struct ring_gather *g)
{
    return g->iov_count == 0;
}

/* Bytes of the send being built that are borrowed, not copied. */
static inline size_t ring_gather_ref_bytes(const struct ring_gather *g)
{
    return g->ref_bytes;
}

/* True when some of <p>'s bytes went into a send. */
static inline bool ring_gather_piece_is_started(const struct ring_gather_piece *p)
{
    return p->send_gen != 0;
}

/* True when the send in flight holds some of <p>'s bytes: release it only once that is done. */
static inline bool ring_gather_piece_is_in_flight(const struct ring_gather *g,
                                                  const struct ring_gather_piece *p)
{
    return g->inflight_gen != 0 && p->send_gen == g->inflight_gen;
}

#endif /* RINGCAS_RING_GATHER_H */
