/*
 * A gRPC call: one HTTP/2 stream carrying one RPC, from its request headers to the moment the
 * last byte of its response has left and nothing of it is in flight.
 *
 * The transport half (h2.c) owns the stream, the response queue and the sends; the gRPC half
 * (call.c) owns dispatch, deframing, deadlines, status and metrics; a service (svc_*.c)
 * implements one method through struct rpc_method's callbacks and answers with the
 * rpc_call_* functions below. Everything runs on the connection's core.
 *
 * Lifetime. A call is freed once (1) its stream is closed, (2) it is finished or cancelled,
 * (3) no piece of its response is in a send in flight, (4) no uncancellable work of its
 * service is pending (rpc_call_pin). A service never
 * sees a callback after on_cancel or after it called rpc_call_finish, except the release
 * callbacks of its own response pieces.
 *
 * Flow control. Request bytes are consumed (HTTP/2 WINDOW_UPDATE) only once the service is
 * done with them: a service that hands bytes to the engine and must wait returns RPC_HELD,
 * the call stops feeding it, keeps the receive buffer alive, and resumes when the service
 * calls rpc_call_resume_input(). Response bytes are queued as struct rpc_seg pieces sent
 * without copying; a service stops producing while rpc_call_is_writable() is false and is
 * told through on_writable when the queue has drained.
 */
#ifndef RINGCAS_RPC_CALL_H
#define RINGCAS_RPC_CALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "base/arena.h"
#include "base/assert.h"
#include "base/list.h"
#include "proto/frame.h"
#include "proto/status.h"
#include "ring/conn.h"
#include "ring/core.h"
#include "ring/gather.h"
#include "ring/timer.h"
#include "rpc/access_log.h"
#include "rpc/metrics.h"

struct blob_core;
struct rpc_call;
struct rpc_core;
struct rpc_h2;
struct rpc_seg;

/* Largest gRPC message accepted: 4 MiB (gRPC's default) plus room for a batch's framing. */
#define RPC_MESSAGE_MAX ((4u << 20) + (64u << 10))
/*
 * Smallest --message-memory: a batch of the largest size with its decoded copy (protobuf-c
 * copies bytes fields), or a batch answer being fetched and packed, twice over.
 */
#define RPC_MESSAGE_MEMORY_MIN (16ull << 20)
/* Response bytes a call may queue before rpc_call_is_writable() turns false. */
#define RPC_CALL_OUT_HIGH (1u << 20)
/* ... and the level at which on_writable is called again. */
#define RPC_CALL_OUT_LOW (256u << 10)
/* Longest :path kept (method names are short; a longer one is UNIMPLEMENTED). */
#define RPC_CALL_PATH_MAX 128
/* Longest grpc-message sent, after percent-encoding. */
#define RPC_CALL_MESSAGE_MAX 512
/* The grpc-message of a call (or a batch's blob) refused because the core's counting
 * allocator for messages (--message-memory) is at its limit. */
#define RPC_CALL_MEM_BUSY                                                                          \
    "server busy: the core's message memory (--message-memory) is taken, retry"

/* Bytes of service state kept inside each call (a ByteStream read's fits). */
#define RPC_CALL_SVC_INLINE 256

/* Returned by rpc_method.on_bytes: the service handed the bytes to the engine and must wait. */
#define RPC_HELD 1

/* Called once when the piece has been sent, or dropped because the call ended. */
typedef void rpc_seg_fn(struct rpc_seg *seg);

/* A piece of a response body, sent from the service's memory without copying. */
struct rpc_seg {
    struct ring_gather_piece piece; /* data/len: the bytes; link: on the call's queue, then on
                                       the connection's sent list */
    rpc_seg_fn *release;            /* the service's release callback */
    void *ctx;                      /* for the service */
    struct rpc_call *call;          /* set by rpc_call_send */
    bool msg_start;                 /* first piece of a gRPC message (may be dropped on abort) */
};

/* One method of a service. Only the callbacks a method needs are set. */
struct rpc_method {
    const char *path;     /* "/google.bytestream.ByteStream/Read" */
    enum rpc_route route; /* for metrics */
    bool streamed;        /* request messages go to on_msg_begin/on_bytes/on_msg_end */
    /*
     * Unary requests (streamed false): the complete request message, once. <msg> is valid
     * only during the call. The service answers now or later with rpc_call_finish.
     */
    void (*on_message)(struct rpc_call *c, const uint8_t *msg, size_t len);
    /* Streamed requests: a message of <len> bytes begins. 0, or -1 after rpc_call_finish. */
    int (*on_msg_begin)(struct rpc_call *c, uint32_t len);
    /*
     * Streamed requests: the next <len> bytes of the message, in the receive buffer. Returns
     * 0 (done with them), RPC_HELD (the engine borrowed them: no more bytes until
     * rpc_call_resume_input), or -1 after rpc_call_finish.
     */
    int (*on_bytes)(struct rpc_call *c, const uint8_t *p, size_t len);
    /* Streamed requests: the message is complete. 0, RPC_HELD or -1 as on_bytes. */
    int (*on_msg_end)(struct rpc_call *c);
    /* Streamed requests: the client ended its side after the last message. */
    void (*on_half_close)(struct rpc_call *c);
    /* The response queue drained below RPC_CALL_OUT_LOW after rpc_call_is_writable was false. */
    void (*on_writable)(struct rpc_call *c);
    /*
     * The call ends without the service: the client reset the stream, the connection
     * closed, or the deadline passed. Release or cancel everything now (pieces still queued
     * are released by the call); no callback of the method runs after this.
     */
    void (*on_cancel)(struct rpc_call *c);
};

/* A received piece queued while the service holds input (zero-copy: a buffer reference). */
struct rpc_slice {
    struct base_list link; /* on rpc_call.in */
    const uint8_t *p;      /* inside receive buffer <bid>, or in <copy> */
    size_t len;            /* bytes */
    uint16_t bid;          /* RING_CONN_NO_BUF: the bytes live in <copy> */
    uint8_t copy[];        /* the bytes, when they were not in a receive buffer */
};

struct rpc_call {
    /* --- transport (h2.c) --- */
    struct rpc_h2 *h2;            /* the connection; NULL once it closed (detached) */
    struct rpc_core *rc;          /* the core's protocol state */
    struct base_list link;        /* on the connection's call list while attached */
    struct base_list out;         /* struct rpc_seg queued, not entirely handed to a send */
    uint64_t out_bytes;           /* bytes left in <out> */
    uint32_t frame_bytes;         /* the head of <out> a sized DATA frame nghttp2 holds covers */
    uint64_t timeout_ms;          /* grpc-timeout, rounded up */
    int32_t stream_id;            /* the HTTP/2 stream */
    uint32_t segs_in_send;        /* pieces of this call on the connection's sent list */
    uint32_t header_bytes;        /* header list size (RFC 9113 §6.5.2 rule): the request's,
                                     then its trailers' */
    bool provider;                /* a response was submitted (with a data provider or not) */
    bool deferred;                /* the data provider is waiting for data */
    bool trailers_due;            /* trailers follow once <out> is empty */
    bool stream_closed;           /* nghttp2 closed the stream */
    bool peer_ended;              /* the client ended its side (END_STREAM) */
    bool headers_done;            /* the request headers were dispatched */
    bool writable_wanted;         /* rpc_call_is_writable returned false: call on_writable */
    bool method_post;             /* :method is POST */
    bool content_grpc;            /* content-type is application/grpc[+proto|;...] */
    bool encoding_ok;             /* grpc-encoding absent or identity */
    bool timeout_bad;             /* grpc-timeout present and malformed */
    bool has_timeout;             /* grpc-timeout present */
    char path[RPC_CALL_PATH_MAX]; /* :path, NUL-terminated; "" when too long */
    /* --- gRPC (call.c) --- */
    const struct rpc_method *method;    /* NULL until dispatched (and for unknown methods) */
    uint64_t start_ns;                  /* when the headers were dispatched */
    uint64_t bytes_in;                  /* request body bytes */
    uint64_t bytes_out;                 /* response body bytes queued */
    uint8_t *msg;                       /* unary request being assembled (counted allocator) */
    const uint8_t *msg_direct;          /* unary request lying whole in one received piece */
    struct base_list in;                /* struct rpc_slice queued while input is held */
    struct rpc_slice *held_slice;       /* the queued copy that holds the held bytes, or NULL */
    size_t held_len;                    /* held bytes to consume on resume */
    void *svc;                          /* the service's state (in <arena>) */
    struct ring_owner owner;            /* closes the call (call_idle) once nothing is left */
    struct base_arena arena;            /* the service's per-call memory past svc_mem */
    struct rpc_call *pool_next;         /* next free call in the core's pool */
    size_t svc_used;                    /* bytes of svc_mem handed out */
    struct proto_deframer deframer;     /* request messages */
    enum rpc_route route;               /* for metrics */
    int status;                         /* the final gRPC status */
    int cancel_status;                  /* why on_cancel ran: CANCELLED (client reset),
                                           DEADLINE_EXCEEDED, UNAVAILABLE (conn closed) */
    uint32_t msg_got;                   /* bytes in <msg> */
    uint32_t messages;                  /* request messages completed */
    uint32_t pins;                      /* uncancellable service work in progress */
    uint32_t msg_len;                   /* length of the unary request */
    uint16_t held_bid;                  /* buffer of the held bytes, or RING_CONN_NO_BUF */
    uint16_t in_bid;                    /* buffer of the bytes being processed */
    bool msg_ready;                     /* the unary request waits for the end of the stream */
    bool msg_in_feed;                   /* on rpc_core.msg_in_feed (msg_direct is in the
                                           receive buffer being fed) */
    bool metrics_begun;                 /* rpc_metrics_begin was called */
    bool finished;                      /* the status is decided */
    bool cancelled;                     /* on_cancel ran (or is running) */
    bool freeing;                       /* the owner is closing; memory goes soon */
    bool half_closed;                   /* the end of the request was delivered to the service */
    bool input_held;                    /* the service holds input bytes (RPC_HELD) */
    bool watched;                       /* on rpc_core.watched */
    bool waiting;                       /* rpc_call_wait_begin: holds input while it waits */
    uint32_t msg_cap;                   /* bytes allocated for <msg> */
    uint64_t input_ns;                  /* when request bytes last came (or the server let go) */
    uint64_t window_ns;                 /* start of the period check_request measures the rate in */
    uint64_t window_bytes;              /* bytes_in at window_ns */
    uint64_t blocked_ns;                /* since when the response waits for the client's window */
    uint64_t blocked_sent;              /* rpc_h2_send_progress() by then */
    uint64_t blocked_want;              /* progress that starts a new period (check_response) */
    struct base_list watch_link;        /* on rpc_core.watched */
    struct base_list msg_link;          /* on rpc_core.msg_in_feed */
    uint64_t deadline_ns;               /* grpc-timeout, as a clock time */
    uint32_t deadline_index;            /* its place in rpc_core.deadlines while queued */
    bool deadline_queued;               /* on rpc_core.deadlines */
    char message[RPC_CALL_MESSAGE_MAX]; /* grpc-message, percent-encoded; from here on a
                                           reused call is not cleared (rpc_call_new) */
    /* For the access log (--access-log), set by rpc_call_new and rpc_call_log_target. */
    char log_peer[RING_CONN_PEER_MAX];             /* the client; "" without the log */
    uint16_t log_target_len;                       /* bytes in log_target; 0: none */
    char log_target[RPC_ACCESS_LOG_FIELD_MAX + 1]; /* the call's resource, cut */
    /* Small service state lives here, so most calls need no allocation of their own. */
    _Alignas(16) uint8_t svc_mem[RPC_CALL_SVC_INLINE];
};

/* ---- for services ---- */

/* Names what the call is about in its access log line (a ByteStream resource name, an action
 * digest); a no-op without --access-log. The last one given is kept. */
void rpc_call_log_target(struct rpc_call *c, const char *target, size_t len);

/* The core this call runs on, and the engine of that core (NULL without a store). */
struct ring_core *rpc_call_core(const struct rpc_call *c);
struct blob_core *rpc_call_blob(const struct rpc_call *c);

/* Per-call memory for the service, freed with the call; NULL when the call's bound is hit. */
MUST_CHECK void *rpc_call_alloc(struct rpc_call *c, size_t size);

/* The protobuf-c allocator of this core (counted). */
ProtobufCAllocator *rpc_call_pb_allocator(struct rpc_call *c);

/*
 * Queues <seg> (its data, len, release and ctx set; msg_start on a message's first piece).
 * The call takes it over until its release callback runs. Never fails: after the call
 * ended the piece is released at once.
 */
void rpc_call_send(struct rpc_call *c, struct rpc_seg *seg);

/*
 * Packs <m> as one gRPC message into counted memory and queues it. Returns 0, or -ENOMEM
 * (the caller finishes with RESOURCE_EXHAUSTED).
 */
MUST_CHECK int rpc_call_send_message(struct rpc_call *c, const ProtobufCMessage *m);

/*
 * Queues <buf>/<len>, whole gRPC messages already framed, in counted memory (pb_mem) that
 * the call takes over and frees once sent. Never fails.
 */
void rpc_call_send_owned(struct rpc_call *c, uint8_t *buf, size_t len);

/* Queues the already framed message bytes <p>/<len> as a copy. Returns 0 or -ENOMEM. */
MUST_CHECK int rpc_call_send_copy(struct rpc_call *c, const uint8_t *p, size_t len);

/* True while the queued response is below RPC_CALL_OUT_HIGH; false arms on_writable. */
bool rpc_call_is_writable(struct rpc_call *c);

/*
 * Ends the call with gRPC <status> and <message> (plain text, may be NULL; encoded here):
 * trailers follow the queued response, or a trailers-only response when nothing was sent.
 * The service gets no callback after this but its pieces' releases. Idempotent: the first
 * status wins.
 */
void rpc_call_finish(struct rpc_call *c, int status, const char *message);

/*
 * Request messages that do not unpack: protobuf-c returns NULL both for bad bytes and for
 * memory it could not get. Take rpc_call_mem_refusals() before the unpack; then
 * rpc_call_finish_undecodable ends the call INVALID_ARGUMENT "undecodable <what>", or
 * RESOURCE_EXHAUSTED (retryable) when the core's message memory refused an allocation since.
 */
uint64_t rpc_call_mem_refusals(const struct rpc_call *c);
void rpc_call_finish_undecodable(struct rpc_call *c, uint64_t refusals, const char *what);

/*
 * A unary call's start: unpacks its request <msg> (a <desc> message) with the core's
 * allocator and, when <svc_size> > 0, allocates that much service state (rpc_call_alloc)
 * into *svc. On failure the call is ended (as rpc_call_finish_undecodable says, or
 * RESOURCE_EXHAUSTED when the state did not fit) and NULL returned, with nothing left to
 * free. Free the message with protobuf_c_message_free_unpacked and rpc_call_pb_allocator(c).
 */
MUST_CHECK void *rpc_call_unpack(struct rpc_call *c, const ProtobufCMessageDescriptor *desc,
                                 const uint8_t *msg, size_t len, size_t svc_size, void **svc);

/* rpc_call_finish with the status that engine error <err> maps to (rpc/status.h). */
void rpc_call_finish_err(struct rpc_call *c, int err, const char *what);

/*
 * Streamed requests: the engine released the bytes the service held (RPC_HELD); consume them
 * and continue feeding queued input. May run the method's callbacks before it returns.
 */
void rpc_call_resume_input(struct rpc_call *c);

/*
 * Streamed requests that wait for something other than the engine's progress (a Write
 * waiting for another upload of its blob) hold their input, unconsumed, and with it a share
 * of the connection's flow-control window: only a few calls of a connection may
 * (RPC_H2_WAITING_MAX), or the others, the upload waited for among them, could not receive.
 * rpc_call_may_wait says whether this one may; rpc_call_wait_begin counts it until
 * rpc_call_wait_end, or the end of the call (in the connection's share, and in the core's
 * upload_waiters gauge: such a wait is an upload's, ringcas_upload_waiters).
 */
bool rpc_call_may_wait(const struct rpc_call *c);
void rpc_call_wait_begin(struct rpc_call *c);
void rpc_call_wait_end(struct rpc_call *c);

/* Keeps the call alive across service work that cannot be cancelled (an engine commit). */
void rpc_call_pin(struct rpc_call *c);
void rpc_call_unpin(struct rpc_call *c);

/* True once the call ended (finished or cancelled): the service stops working for it. */
static inline bool rpc_call_is_over(const struct rpc_call *c)
{
    return c->finished || c->cancelled;
}

/* ---- for the transport (h2.c) ---- */

/*
 * A new stream's call, from the core's pool of free calls (malloc when it is empty), zeroed
 * and initialised; NULL when memory is short. rpc_h2_call_free gives it back through
 * rpc_call_delete.
 */
struct rpc_call *rpc_call_new(struct rpc_core *rc, struct rpc_h2 *h2, int32_t stream_id);
void rpc_call_delete(struct rpc_call *c);

/* Frees the core's pool of free calls (server hook core_deinit). */
void rpc_call_pool_drain(struct rpc_core *rc);

/*
 * The core's watch over calls waiting for request bytes: init with the core, quiesce (stops
 * the check) before the engine quiesces, deinit when the core stops.
 */
void rpc_call_core_init(struct rpc_core *rc);
void rpc_call_core_quiesce(struct rpc_core *rc);
void rpc_call_core_deinit(struct rpc_core *rc);

/* The request headers are complete: validate and dispatch. */
void rpc_call_on_headers(struct rpc_call *c);

/* Request body bytes <p>/<len>, inside receive buffer <bid> (or RING_CONN_NO_BUF). */
void rpc_call_on_data(struct rpc_call *c, const uint8_t *p, size_t len, uint16_t bid);

/* The client ended its side. */
void rpc_call_on_end_stream(struct rpc_call *c);

/*
 * The receive buffer fed to nghttp2 goes back: unary requests lying in it that still wait
 * for the end of their stream are copied out (see unary_end).
 */
void rpc_call_feed_done(struct rpc_core *rc);

/* The stream closed (RST_STREAM from either side, or the response completed). */
void rpc_call_on_stream_close(struct rpc_call *c, uint32_t error_code);

/* The connection is gone: the call is detached from it and cancelled if still running. */
void rpc_call_on_conn_close(struct rpc_call *c);

/* Called by h2.c when a piece of the call left in a send, or the queue shrank: may free. */
void rpc_call_check_free(struct rpc_call *c);

/* Called by h2.c after pieces left the queue, to wake a service waiting for room. */
void rpc_call_on_drained(struct rpc_call *c);

#endif /* RINGCAS_RPC_CALL_H */
