/*
 * HTTP/2 on a connection, with nghttp2 fed from the ring's receive buffers.
 *
 * Receive: each receive buffer goes to nghttp2_session_mem_recv() whole; DATA payload reaches
 * the calls as pointers into the buffer. Send: nghttp2_session_mem_send() output is copied
 * into the connection's small output buffer, and DATA payload is added as iovecs pointing at
 * the calls' own memory (NGHTTP2_DATA_FLAG_NO_COPY + send_data_callback); one ring_conn_send
 * per flush carries it all, at most one in flight, and the flush runs as a deferred task
 * after the CQE batch so small responses of many streams share one send.
 *
 * Limits (docs/grpc.md): SETTINGS_MAX_CONCURRENT_STREAMS, live calls per connection, request
 * header list size (counted here: nghttp2 does not enforce it), message size (call.c),
 * rapid resets and CONTINUATION floods (nghttp2 options), invalid-frame "glitches", idle
 * connections (the ring's read timeout; is_busy while a call works), write progress (the
 * ring's write timeout). On drain: GOAWAY, then close once the last call is done.
 */
#ifndef RINGCAS_RPC_H2_H
#define RINGCAS_RPC_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/call.h"

#define RPC_H2_MAX_STREAMS    128u                      /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define RPC_H2_CALLS_MAX      (2u * RPC_H2_MAX_STREAMS) /* live calls, reset ones included */
#define RPC_H2_NOTICE_MS      1000u       /* drain: longest wait for the first GOAWAY's PING ACK */
#define RPC_H2_HEADERS_MAX    (16u << 10) /* request header list, RFC 9113 §6.5.2 size */
#define RPC_H2_STREAM_WINDOW  (1u << 20)  /* SETTINGS_INITIAL_WINDOW_SIZE */
#define RPC_H2_CONN_WINDOW    (8u << 20)  /* connection receive window */
#define RPC_H2_MAX_FRAME      (64u << 10) /* SETTINGS_MAX_FRAME_SIZE we accept */
#define RPC_H2_DATA_FRAME_MAX (64u << 10) /* largest DATA frame we send */
#define RPC_H2_RESET_BURST    1000u       /* incoming RST_STREAM: burst ... */
#define RPC_H2_RESET_RATE     100u        /* ... and sustained rate per second */
#define RPC_H2_CONTINUATIONS  8u          /* CONTINUATION frames per header block */
#define RPC_H2_GLITCH_BURST   1000u       /* invalid frames tolerated at once ... */
#define RPC_H2_GLITCH_RATE    330u        /* ... and per second after */

/*
 * The send path's limits (ring/gather.h: nghttp2's frames are copied, payload is not). Room
 * kept free before each nghttp2_session_mem_send (its largest chunk is one frame):
 */
#define RPC_H2_CHUNK_MAX ((16u << 10) + 64u)
/* A flush stops adding DATA past this many bytes (the next flush continues). */
#define RPC_H2_SEND_MAX (2u << 20)
/* A piece shorter than this is copied into the output buffer instead of its own iovec. */
#define RPC_H2_COPY_MAX 512u
/* Pieces one DATA frame may span (each may need an iovec). */
#define RPC_H2_FRAME_SEGS_MAX 24u

/*
 * Calls of one connection that may hold their input while they wait for something other than
 * the engine's progress (a Write waiting for another upload of its blob, which may be on the
 * same connection): each may hold a stream's window of it, unconsumed, and nghttp2 reopens
 * the connection's window only once half of it was consumed, so together they must leave
 * more than half of it to the connection's other streams.
 */
#define RPC_H2_WAITING_MAX (RPC_H2_CONN_WINDOW / 2 / RPC_H2_STREAM_WINDOW - 1)
STATIC_ASSERT(RPC_H2_WAITING_MAX >= 1, "the connection window leaves room for one waiting call");

struct rpc_conn;

/*
 * Transport calls from call.c. Each is a no-op once the call is detached (connection gone)
 * or its stream closed, unless said otherwise.
 */

/* Submits the response HEADERS (200, application/grpc) with the call's data provider. */
void rpc_h2_respond(struct rpc_call *c);

/* The call's queue grew or its trailers are due: wake its data provider and flush. */
void rpc_h2_wake(struct rpc_call *c);

/* Submits a headers-only response: HTTP <http_status>, and grpc-status/grpc-message. */
void rpc_h2_respond_trailers_only(struct rpc_call *c, int http_status);

/* Resets the stream with <error_code> (RFC 9113 §7). */
void rpc_h2_reset(struct rpc_call *c, uint32_t error_code);

/*
 * True when the server, not the client, holds up the call's input: its connection paused
 * receiving, or one of the connection's calls holds input the engine has not taken (the
 * connection's flow-control window may be full of it). False for a detached call. Computed
 * once per connection for each <check> (a non-zero value that changes between checks: the
 * stall check's time); within one check the answer is the first call's.
 */
bool rpc_h2_holds_input(const struct rpc_call *c, uint64_t check);

/* <bid> is the receive buffer nghttp2 is being fed on <c>'s connection (it lives until then). */
bool rpc_h2_is_feeding(const struct rpc_call *c, uint16_t bid);

/* True when the call's stream is open and the client's window (stream or connection) is
 * closed: its queued response cannot move until the client reads. */
bool rpc_h2_send_blocked(const struct rpc_call *c);

/*
 * What shows that the client reads while rpc_h2_send_blocked(<c>): the call's response bytes
 * sent when its stream's window is closed, the connection's DATA bytes sent when only the
 * connection's is (a stream waits its turn behind the others). Changes while the client reads.
 */
uint64_t rpc_h2_send_progress(const struct rpc_call *c);

/*
 * Calls that hold their input while they wait (RPC_H2_WAITING_MAX): whether one more of <c>'s
 * connection may (false for a detached call), and the count of those that do.
 */
bool rpc_h2_may_wait(const struct rpc_call *c);
void rpc_h2_wait_begin(struct rpc_call *c);
void rpc_h2_wait_end(struct rpc_call *c);

/* Gives <len> request bytes back to the flow-control windows (nghttp2_session_consume). */
void rpc_h2_consume(struct rpc_call *c, size_t len);

/*
 * Releases the call's queued pieces. With <keep_started>, pieces after one already partly
 * sent are kept up to the next message start (the client must see whole messages before the
 * trailers); otherwise every piece goes. Pieces in the send in flight are released when it
 * completes. Works on detached calls too.
 */
void rpc_h2_drop_output(struct rpc_call *c, bool keep_started);

/* The call's memory may go: unlinks it from the connection (if attached) and frees it. */
void rpc_h2_call_free(struct rpc_call *c);

#endif /* RINGCAS_RPC_H2_H */
