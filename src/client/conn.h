/*
 * An HTTP/2 connection to a gRPC server, driven by the ring: IORING_OP_CONNECT with a linked
 * timeout, then a ring_conn (every receive and send carries a linked timeout) feeding an
 * nghttp2 client session (nghttp2_session_mem_recv / mem_send). Many calls share one
 * connection, each on its own stream (client/call.h); nghttp2 queues requests past the
 * server's SETTINGS_MAX_CONCURRENT_STREAMS and starts them as streams close.
 *
 * Send path: nghttp2's frames are copied into a small output buffer; request payload goes
 * out as iovecs pointing at the calls' own memory (NGHTTP2_DATA_FLAG_NO_COPY), one
 * ring_conn_send in flight at a time, flushed from a deferred task so the requests of many
 * calls share one send. Receive path: each receive buffer goes to mem_recv whole; response
 * DATA reaches the calls as pointers into it; windows reopen (nghttp2_session_consume) only
 * as calls take the bytes, so a reader that pauses stops the server (flow control).
 *
 * Timeouts: connect_timeout_ms for the connect; io_timeout_ms for each receive while a call
 * waits for the server (an idle connection with no call is not timed out) and for each
 * send's progress. A timeout closes the connection and fails its calls with -ETIMEDOUT.
 *
 * Close: client_conn_close(), a timeout, the server's EOF or a protocol error close the
 * socket, fail every call still on it, and call on_close only after every call's done
 * callback has run; then the connection's memory may be freed or reopened.
 */
#ifndef RINGCAS_CLIENT_CONN_H
#define RINGCAS_CLIENT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "base/list.h"
#include "client/client.h"
#include "client/connect.h"
#include "ring/conn.h"
#include "ring/gather.h"

/* nghttp2_session, without including nghttp2 in every caller. */
struct nghttp2_session;

struct client_conn_options {
    uint32_t connect_timeout_ms; /* > 0 */
    uint32_t io_timeout_ms;      /* per receive (while a call waits) and per send; > 0 */
    uint32_t stream_window;      /* SETTINGS_INITIAL_WINDOW_SIZE: response bytes in flight
                                    per stream, and the most a paused call buffers */
    uint32_t conn_window;        /* receive window of the whole connection */
};

/* connect 10 s, I/O 30 s, windows 1 MiB per stream and 16 MiB per connection. */
void client_conn_options_default(struct client_conn_options *opts);

struct client_conn;

/*
 * The connection is closed and no call is left on it. <reason>: 0 after client_conn_close()
 * or an orderly end, -ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -EPROTO (the server broke
 * HTTP/2), or another -errno of the socket. The callee may free or reopen <conn>.
 */
typedef void client_conn_close_fn(struct client_conn *conn, int reason);

enum client_conn_state {
    CLIENT_CONN_IDLE = 0,   /* never opened, or closed and reported */
    CLIENT_CONN_CONNECTING, /* the connect op is in flight */
    CLIENT_CONN_OPEN,       /* the ring_conn carries the session */
    CLIENT_CONN_CLOSING,    /* socket closing or closed; calls are failing */
};

struct client_conn {
    struct ring_conn rc; /* first: ring_conn callbacks give it back (private) */
    void *user;          /* the caller's, untouched */
    /* private: */
    struct client *cl;                    /* the ring's client */
    struct client_conn_options opts;      /* as opened */
    client_conn_close_fn *on_close;       /* called once when closed and empty */
    struct nghttp2_session *session;      /* the client session; NULL once closed */
    struct client_connect connect;        /* the connect op */
    struct ring_task flush_task;          /* deferred flush of nghttp2's output */
    struct ring_task close_task;          /* deferred on_close */
    struct base_list calls;               /* struct client_call.link, calls attached */
    struct base_list sent;                /* struct client_seg in the send in flight */
    uint32_t calls_count;                 /* entries in <calls> */
    uint32_t paused_count;                /* calls that stopped taking response bytes */
    uint8_t state;                        /* enum client_conn_state */
    bool ring_live;                       /* rc was initialised and its close not reported */
    bool in_session;                      /* inside mem_recv or mem_send */
    bool goaway;                          /* the server sent GOAWAY: no new calls */
    bool received;                        /* the server sent a byte: its first were looked at */
    int close_reason;                     /* first reason recorded */
    uint64_t busy_since_ns;               /* when the first of the current calls started */
    char authority[CLIENT_AUTHORITY_MAX]; /* :authority of every request */
    struct ring_gather gather;            /* last, not cleared on open: the send, copies of
                                             nghttp2's frames and small pieces, iovecs of the
                                             others */
};

/*
 * Opens <conn> (caller's memory, idle) to <addr> on <cl>'s ring. Calls may be started at
 * once: they go out when the connection is up, or fail with its error. Returns 0, or -errno
 * (no socket, op table full, out of memory) and then <on_close> will not run.
 */
MUST_CHECK int client_conn_open(struct client_conn *conn, struct client *cl,
                                const struct client_addr *addr,
                                const struct client_conn_options *opts,
                                client_conn_close_fn *on_close);

/*
 * Like client_conn_open on a socket that is already connected (<fd>, which <conn> then
 * owns): for tests on a socketpair, or a caller that connected by other means.
 */
MUST_CHECK int client_conn_adopt(struct client_conn *conn, struct client *cl, int fd,
                                 const struct client_conn_options *opts,
                                 client_conn_close_fn *on_close);

/*
 * Closes <conn>: every call on it fails (-ECANCELED unless it already ended), then on_close
 * runs with 0. Idempotent; no-op on an idle connection.
 */
void client_conn_close(struct client_conn *conn);

/* True when new calls may be started on <conn> (opening or open, no GOAWAY received). */
bool client_conn_is_usable(const struct client_conn *conn);

/* Calls attached to <conn> (started, done callback not run yet). */
static inline uint32_t client_conn_calls(const struct client_conn *conn)
{
    return conn->calls_count;
}

#endif /* RINGCAS_CLIENT_CONN_H */
