/*
 * What the files of src/client share: the hooks a typed call gives the generic call, and the
 * calls between the connection (conn.c, which owns the nghttp2 session) and the calls
 * (call.c). Only src/client and its tests include this header.
 */
#ifndef RINGCAS_CLIENT_INTERNAL_H
#define RINGCAS_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/call.h"
#include "client/client.h"
#include "client/conn.h"

#define CLIENT_USER_AGENT "ringcas-client/0.1"

/* What a typed call (put, get, unary) does with its stream. */
struct client_call_ops {
    /* A response message of <len> bytes begins: 0, or -errno to fail the call. */
    int (*on_msg_begin)(struct client_call *c, uint32_t len);
    /*
     * <len> payload bytes of the current message (valid during the call only). Returns how
     * many were taken: all of them, or fewer after client_call_pause() (the rest is held and
     * offered again after client_call_resume()); or -errno to fail the call.
     */
    int64_t (*on_msg_data)(struct client_call *c, const uint8_t *p, size_t len);
    /* The current message is complete: 0, or -errno to fail the call. */
    int (*on_msg_end)(struct client_call *c);
    /* <seg> is no longer referenced (sent, or dropped when the call ended). May be NULL. */
    void (*on_seg_done)(struct client_call *c, struct client_seg *seg);
    /* The stream is over and every response byte was offered; c->result holds the outcome,
     * which the typed call may amend (verification). May be NULL. */
    void (*on_end)(struct client_call *c);
};

/* ---- call.c, for typed calls ---- */

/* Prepares <c> once per object (it can then be started many times). */
void client_call_init(struct client_call *c, struct client *cl);

/* Releases what <c> allocated (its inbox); <c> must not be active. NULL is accepted. */
void client_call_deinit(struct client_call *c);

/*
 * Submits the request headers for <path> on <conn> with the typed call's <ops>. Request
 * bytes queued before (client_call_queue) or after go out in order. Returns 0, or -EPIPE
 * (connection not usable), -ENOMEM; then done will not run.
 */
MUST_CHECK int client_call_start(struct client_call *c, struct client_conn *conn, const char *path,
                                 const struct client_call_options *o,
                                 const struct client_call_ops *ops);

/* Appends <seg> (the caller's memory, unchanged until on_seg_done) to the request. */
void client_call_queue(struct client_call *c, struct client_seg *seg);

/* No more request bytes after those queued: the last DATA frame carries END_STREAM. */
void client_call_close_send(struct client_call *c);

/*
 * Fails the call locally with <err> and <msg>: resets the stream (RST_STREAM CANCEL) if it
 * is open; done follows. No-op when the call already ended or failed.
 */
void client_call_fail(struct client_call *c, int err, const char *msg);

/* Stops taking response bytes (flow control closes behind them) / takes them again. */
void client_call_pause(struct client_call *c);
void client_call_resume(struct client_call *c);

/* True once the outcome is decided (or the call failed locally): no more work is useful. */
static inline bool client_call_is_over(const struct client_call *c)
{
    return c->ended || c->local_err != 0;
}

/* ---- call.c, for conn.c (from nghttp2's callbacks) ---- */

/* A response header or trailer field. */
void client_call_on_header(struct client_call *c, const uint8_t *name, size_t namelen,
                           const uint8_t *value, size_t valuelen);

/* The response HEADERS frame is complete. */
void client_call_on_response(struct client_call *c);

/* <len> bytes of response DATA. */
void client_call_on_data(struct client_call *c, const uint8_t *p, size_t len);

/* The stream closed (<error_code>: RST_STREAM's, or NO_ERROR), or never opened. */
void client_call_on_stream_close(struct client_call *c, uint32_t error_code);

/* The connection closed with <reason>: the call is detached and ends. */
void client_call_on_conn_gone(struct client_call *c, int reason);

/* <seg> of the send that just completed (or was abandoned) is released. */
void client_call_seg_release(struct client_seg *seg);

/* ---- conn.c, for call.c ---- */

/* Submits a request with the call's data provider; returns the stream id or -errno. */
MUST_CHECK int32_t client_conn_submit(struct client_conn *conn, struct client_call *c,
                                      const void *nva, size_t nva_len);

/* Attaches <c> to <conn> (after a successful submit). */
void client_conn_attach(struct client_conn *conn, struct client_call *c);

/* The call is done: unlinks it; the connection may report its close now. */
void client_conn_detach(struct client_conn *conn, struct client_call *c);

/* Asks nghttp2 to send more of <c>'s request (after queueing), and flushes. */
void client_conn_resume_data(struct client_conn *conn, struct client_call *c);

/* Resets <c>'s stream with <error_code> and flushes. */
void client_conn_reset(struct client_conn *conn, struct client_call *c, uint32_t error_code);

/* <len> response bytes of <c> were taken: reopen the windows. */
void client_conn_consume(struct client_conn *conn, struct client_call *c, size_t len);

/* A queued seg of an ending call: released now, or after the send in flight that has it. */
void client_conn_drop_seg(struct client_conn *conn, struct client_seg *seg);

/* The number of paused calls changed by <delta> (the read timeout ignores a quiet server
 * while a call of ours holds it back). */
void client_conn_paused(struct client_conn *conn, int delta);

#endif /* RINGCAS_CLIENT_INTERNAL_H */
