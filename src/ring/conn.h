/*
 * A TCP connection driven by the core's ring: receives into provided buffers and sends from
 * the caller's memory, each with a linked timeout, one receive and one send in flight at most.
 *
 * Timeouts. Every receive carries an IORING_OP_LINK_TIMEOUT of read_timeout_ms: a peer that
 * sends nothing for that long is disconnected (-ETIMEDOUT, counted), unless the protocol says
 * the server itself is busy on the connection (ops->is_busy), in which case the receive is
 * re-armed, or takes its leave first (ops->on_idle). Every send carries write_timeout_ms: a send
 * that makes no progress for that long closes the connection (-ETIMEDOUT, counted). Partial sends
 * continue with the rest and a fresh timeout, so the write timeout bounds progress, not the whole
 * transfer.
 *
 * A zero-copy send (ring_conn_set_send_zc) is done only when the kernel let go of its pages
 * (its notification), which on a connection whose peer stopped reading is never: its result
 * ends the linked timeout, so the wait for the notification has a write timeout of its own.
 *
 * Close. ring_conn_close() cancels the receive, the send and every other op of the connection's
 * owner, and only after the last CQE closes the fd and calls ops->on_close, where the protocol
 * may free the memory. No callback other than on_close runs after ring_conn_close(). A close
 * while a zero-copy send waits for its notification resets the connection (the peer sees
 * ECONNRESET; what the send had queued is dropped): only that makes the kernel let go of the
 * pages of a peer that does not read.
 */
#ifndef RINGCAS_RING_CONN_H
#define RINGCAS_RING_CONN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "base/assert.h"
#include "base/list.h"
#include "ring/core.h"
#include "ring/timer.h"

#define RING_CONN_IOV_MAX 64
#define RING_CONN_NO_BUF  UINT16_MAX

struct ring_conn;

struct ring_conn_ops {
    /*
     * <len> bytes arrived in receive buffer <bid>, starting at its first byte; the callee owns
     * one reference (ring_buf_unref when done). <len> == 0 with bid RING_CONN_NO_BUF: the peer
     * closed its side; the callee decides when to close.
     */
    void (*on_recv)(struct ring_conn *c, uint16_t bid, uint32_t len);
    /* The send started with ring_conn_send() went out entirely; its memory is free again. */
    void (*on_sent)(struct ring_conn *c);
    /*
     * The connection is closed and none of its ops is in flight. <reason> is 0 after an
     * orderly close, -ETIMEDOUT after a read or write timeout, -ESHUTDOWN when a drain ran
     * out of time, or the socket's -errno. The callee releases the connection's memory.
     */
    void (*on_close)(struct ring_conn *c, int reason);
    /* Optional: true while the server works for the peer (a response pending), so a quiet
     * peer is not an idle one. NULL: never busy. */
    bool (*is_busy)(const struct ring_conn *c);
    /* Optional: the server is draining; finish what is in progress, then close. NULL: the
     * connection is closed at once. */
    void (*on_drain)(struct ring_conn *c);
    /*
     * Optional: the peer sent nothing for read_timeout_ms and the connection is not busy.
     * True: the protocol takes its leave first (an HTTP/2 GOAWAY) and closes the connection
     * itself; the receive goes on, with its timeout, so a peer that sends nothing more is
     * closed at the next one (-ETIMEDOUT), when on_idle should answer false. NULL or false:
     * closed now (-ETIMEDOUT).
     */
    bool (*on_idle)(struct ring_conn *c);
};

struct ring_conn {
    struct ring_core *core;              /* the core that owns the connection */
    const struct ring_conn_ops *ops;     /* the protocol's callbacks */
    struct ring_owner owner;             /* every op of the connection, for cancel on close */
    struct base_list link;               /* on the core's connection list */
    int fd;                              /* the socket; -1 once closed */
    uint32_t read_timeout_ms;            /* idle/read timeout per receive; 0: none */
    uint32_t write_timeout_ms;           /* progress timeout per send; 0: none */
    bool recv_armed;                     /* a receive is in flight */
    bool recv_paused;                    /* the protocol asked for no receive (backpressure) */
    bool recv_wait_buf;                  /* waiting for a buffer after -ENOBUFS */
    bool recv_poll_first;                /* receive only once bytes are there (after -ENOBUFS) */
    bool recv_woken;                     /* the receive in flight was woken by a give-back */
    bool closing;                        /* ring_conn_close() was called */
    bool draining;                       /* the server asked this connection to finish */
    int close_reason;                    /* reason handed to on_close */
    struct ring_task recv_retry;         /* re-arms the receive when a buffer comes back */
    struct ring_op *send_op;             /* the send in flight, or NULL */
    struct msghdr msg;                   /* describes the rest of the current send */
    struct iovec iov[RING_CONN_IOV_MAX]; /* the rest of the current send */
    uint64_t send_left;                  /* bytes of the current send not yet confirmed */
    uint32_t send_zc_min;                /* sends this large use SENDMSG_ZC; 0: never */
    bool send_zc_notif_wait;             /* the zero-copy send's result came, its
                                          * notification has not */
    struct ring_timer send_zc_timer;     /* write timeout while it waits */
};

/*
 * Adopts the connected socket <fd> on <core> with the protocol's <ops> and timeouts. The
 * connection is counted and listed at once; call ring_conn_recv_start() to begin receiving.
 */
void ring_conn_init(struct ring_conn *c, struct ring_core *core, int fd,
                    const struct ring_conn_ops *ops, uint32_t read_timeout_ms,
                    uint32_t write_timeout_ms);

/* Arms the first receive (and again after ring_conn_recv_pause). Returns 0 or -EAGAIN. */
MUST_CHECK int ring_conn_recv_start(struct ring_conn *c);

/* Stops receiving after the receive in flight, if any, completes: backpressure. */
void ring_conn_recv_pause(struct ring_conn *c);

/* Resumes receiving after ring_conn_recv_pause(). */
void ring_conn_recv_resume(struct ring_conn *c);

/*
 * Sends the <count> buffers of <iov> entirely, calling ops->on_sent at the end. The memory
 * they point at must stay unchanged until then (or until on_close); the iovec array itself is
 * copied. Returns 0, -EBUSY when a send is in flight, -EINVAL when <count> exceeds
 * RING_CONN_IOV_MAX, -EPIPE when closing, or -EAGAIN when the op table is full.
 */
MUST_CHECK int ring_conn_send(struct ring_conn *c, const struct iovec *iov, unsigned count);

/*
 * Sends of at least <min_bytes> (0: none) use IORING_OP_SENDMSG_ZC: the kernel sends from
 * the caller's pages instead of copying them, and on_sent runs only after its notification
 * says the pages are free (within write_timeout_ms of the send's result, or the connection
 * is closed with -ETIMEDOUT and reset). Worth it for large payloads to real NICs; on loopback the
 * kernel copies anyway (perf/RESULTS.md has the measurement).
 */
void ring_conn_set_send_zc(struct ring_conn *c, uint32_t min_bytes);

/* True while a send is in flight. */
static inline bool ring_conn_is_sending(const struct ring_conn *c)
{
    return c->send_op != NULL;
}

/*
 * Asks <c> to finish what it is doing and close (server shutdown): calls ops->on_drain, or
 * closes at once when the protocol has none. Idempotent.
 */
void ring_conn_drain(struct ring_conn *c);

/* Begins closing with <reason> (see on_close). Idempotent; the first reason wins. */
void ring_conn_close(struct ring_conn *c, int reason);

/* Room for ring_conn_peer's text: "[" an IPv6 address "]:" a port, and a NUL. */
#define RING_CONN_PEER_MAX 56

/*
 * Writes who is at the other end of <c> into <buf> for a log line: "127.0.0.1:40312",
 * "[::1]:40312", or "fd N" when the socket cannot say (it was reset). Asks the kernel each
 * time (getpeername): for warnings and errors, not for every request. Returns <buf>.
 */
const char *ring_conn_peer(const struct ring_conn *c, char buf[RING_CONN_PEER_MAX]);

#endif /* RINGCAS_RING_CONN_H */
