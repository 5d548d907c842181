/*
 * One gRPC call on a client connection: an HTTP/2 stream with the request headers
 * (grpc-timeout when the call has a deadline), request messages sent from the caller's
 * memory, response messages deframed as they arrive, and the status from the trailers.
 *
 * The typed calls embed a struct client_call and start it: client/put.h (ByteStream.Write),
 * client/get.h (ByteStream.Read), client/unary.h (any unary method: GetCapabilities,
 * FindMissingBlobs, ...). Their done callback receives the embedded call; the result and the
 * timings are in it. A load generator keeps an array of typed calls, starts them on a few
 * connections, and restarts each from its done callback: nothing is allocated per call on
 * that path beyond nghttp2's own stream state.
 *
 * Lifetime: from a successful start until the done callback, the call's memory belongs to
 * the library. The done callback runs exactly once, from the ring (never from inside a start
 * or cancel function), after the stream is over, every request byte that was handed to a
 * send has left the socket or been abandoned with it, and the deadline timer is confirmed
 * stopped. After it, the call may be restarted or freed.
 *
 * Deadline: a call with deadline_ms > 0 sends grpc-timeout and arms a ring timer; when it
 * fires the stream is reset (RST_STREAM CANCEL) and the call fails with -ETIMEDOUT. Cancel:
 * client_call_cancel() resets the stream the same way, failing with -ECANCELED; the server
 * then cancels its work (its pending disk reads, an upload in progress).
 */
#ifndef RINGCAS_CLIENT_CALL_H
#define RINGCAS_CLIENT_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "base/list.h"
#include "proto/frame.h"
#include "ring/core.h"
#include "ring/gather.h"
#include "ring/timer.h"

struct client;
struct client_conn;
struct client_call;

#define CLIENT_MESSAGE_MAX  256                        /* result message, NUL included */
#define CLIENT_RESPONSE_MAX ((4u << 20) + (64u << 10)) /* longest response message accepted */

struct client_result {
    int err;                          /* 0, or -errno (client_call_err_str explains) */
    int status;                       /* gRPC status received or decided locally */
    bool status_received;             /* <status> came from the server's grpc-status */
    char message[CLIENT_MESSAGE_MAX]; /* grpc-message (decoded) or a local description */
};

/* Monotonic nanoseconds (base_clock_now_ns) of a call's milestones; 0: did not happen. */
struct client_timing {
    uint64_t start_ns;       /* the call was started */
    uint64_t headers_ns;     /* response headers arrived */
    uint64_t first_byte_ns;  /* first response DATA byte arrived */
    uint64_t end_ns;         /* the stream was over (status decided) */
    uint64_t bytes_sent;     /* request bytes handed to HTTP/2, gRPC framing included */
    uint64_t bytes_received; /* response DATA bytes, gRPC framing included */
};

/* The call is over: result and timing are final. Runs on the ring's thread. */
typedef void client_call_done_fn(struct client_call *call);

/* A piece of request bytes in the caller's memory, queued on a call (internal to typed
 * calls; see client/internal.h). */
struct client_seg {
    struct ring_gather_piece piece; /* data/len: the bytes left to hand to HTTP/2; link: on
                                       the call's queue, then the connection's sent list */
    struct client_call *call;       /* owner */
    uint32_t tag;                   /* the typed call's (which buffer) */
};

struct client_call_ops;

struct client_call {
    /* public: final when done runs */
    struct client_result result; /* how it ended */
    struct client_timing timing; /* milestones */
    void *user;                  /* the caller's, untouched */
    /* private: */
    const struct client_call_ops *ops; /* the typed call's hooks */
    struct client *cl;                 /* the ring's client */
    struct client_conn *conn;          /* attached connection; NULL when detached */
    client_call_done_fn *done;         /* completion */
    struct base_list link;             /* on conn->calls while attached */
    struct base_list out;              /* struct client_seg queued, in order */
    size_t out_bytes;                  /* bytes in <out> */
    struct ring_owner owner;           /* the deadline timer's op */
    struct ring_timer deadline;        /* overall deadline */
    struct ring_task task;             /* deferred: process held input, finish */
    struct proto_deframer deframer;    /* response messages */
    uint8_t *inbox;                    /* response bytes held while paused (lazily allocated) */
    size_t inbox_size;                 /* capacity of inbox */
    size_t inbox_len;                  /* bytes held */
    uint32_t payload_left;             /* leading held bytes that are message payload */
    int32_t stream_id;                 /* > 0 once submitted */
    uint32_t segs_in_send;             /* segs on conn->sent */
    uint32_t deadline_ms;              /* 0: none */
    uint32_t rst_code;                 /* RST_STREAM error code received or sent */
    int local_err;                     /* a local failure decided the outcome */
    int http_status;                   /* :status, 0 before headers */
    int grpc_status;                   /* grpc-status, -1 before trailers */
    uint32_t header_bytes;             /* response header bytes seen (limited) */
    bool active;                       /* started, done not run yet */
    bool out_done;                     /* no more request bytes: END_STREAM after <out> */
    bool deferred;                     /* the data provider is deferred */
    bool stream_closed;                /* nghttp2 closed the stream, or never opened it */
    bool stream_counted;               /* its HEADERS went out: counted in streams */
    bool ended;                        /* the result is decided */
    bool paused;                       /* the typed call stopped taking response bytes */
    bool finishing;                    /* waiting for the timer's op before done */
    bool content_grpc;                 /* content-type was application/grpc */
};

/* Options every typed call's start takes. */
struct client_call_options {
    uint32_t deadline_ms;      /* overall deadline; 0: none (I/O timeouts still apply) */
    client_call_done_fn *done; /* completion, required */
    void *user;                /* copied into call->user */
};

/*
 * Resets the call's stream (RST_STREAM CANCEL): done follows with -ECANCELED unless the call
 * had already ended. No-op on a call that is not active or already failing.
 */
void client_call_cancel(struct client_call *call);

/* True between a successful start and the done callback. */
static inline bool client_call_is_active(const struct client_call *call)
{
    return call->active;
}

/* The one-line explanation of <err> for a user: "not found", "timed out", ... */
const char *client_err_str(int err);

/*
 * Makes the NUL-terminated <text> (a server's words: a grpc-message, a batch entry's status
 * message) safe to print on one line, in place: CR, LF and tab become spaces, other control
 * bytes (ESC, BEL, DEL, ...) '?'. Bytes from 0x80 up are kept (UTF-8).
 */
void client_message_printable(char *text);

/*
 * The -errno a gRPC <status> maps to (OK 0, NOT_FOUND -ENOENT, DEADLINE_EXCEEDED -ETIMEDOUT,
 * CANCELLED -ECANCELED, INVALID_ARGUMENT -EINVAL, RESOURCE_EXHAUSTED -EAGAIN, UNAVAILABLE
 * -ECONNREFUSED, UNIMPLEMENTED -ENOSYS, DATA_LOSS -EBADMSG, ...; docs/client.md lists all).
 */
int client_status_errno(int status);

#endif /* RINGCAS_CLIENT_CALL_H */
