/*
 * A keep-alive HTTP/1.1 client connection on the ring, for load generation (ringcas bench's
 * HTTP workloads) and anything else that sends many requests to one server: GET, HEAD and PUT
 * with a Content-Length body sent from the caller's memory, one request at a time per
 * connection (no pipelining), responses streamed (Content-Length, chunked or close-delimited
 * bodies of any size) and counted, not buffered. (client/http.h is the one-shot GET with a
 * buffered body that the CLI uses.)
 *
 * Lifetime: client_h1_open() connects (IORING_OP_CONNECT with a timeout); a request may be
 * started at once and goes out when the connection is up. Its done callback runs once per
 * successful start, from the ring (never inside start), after the whole response arrived
 * and the request's last byte left (or the connection failed): then the request's memory
 * may be reused, and the next request started from the callback. A response that says
 * "Connection: close" (or an HTTP/1.0 one without keep-alive) ends the connection after it.
 *
 * Timeouts: every receive and send carries the ring_conn's linked timeout (io_timeout_ms).
 * A connection with no request in flight is not timed out (an idle keep-alive connection is
 * not a silent server); while a request waits for its response, io_timeout_ms of silence
 * closes the connection and fails the request with -ETIMEDOUT.
 *
 * Close: a failure, the server's close or client_h1_close() fail the request in flight (its
 * done runs first), then on_close runs once; then the memory may be freed or reopened.
 */
#ifndef RINGCAS_CLIENT_H1_H
#define RINGCAS_CLIENT_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "client/client.h"
#include "client/connect.h"
#include "ring/conn.h"

#define CLIENT_H1_PATH_MAX    2048u       /* request-target bytes */
#define CLIENT_H1_EXTRA_MAX   512u        /* extra header field lines */
#define CLIENT_H1_HEAD_MAX    (16u << 10) /* response head (status line and fields) */
#define CLIENT_H1_MESSAGE_MAX 256u        /* an error answer's body kept, NUL included */

enum client_h1_method {
    CLIENT_H1_GET = 0,
    CLIENT_H1_HEAD,
    CLIENT_H1_PUT,
};

struct client_h1;

/* The request is over: h->result and h->timing are final. Runs on the ring's thread. */
typedef void client_h1_done_fn(struct client_h1 *h);

/* A piece of a 2xx response's body (chunked framing removed, Content-Encoding not). */
typedef void client_h1_body_fn(struct client_h1 *h, const uint8_t *p, size_t len);

/* A response's Content-Encoding. */
enum client_h1_encoding {
    CLIENT_H1_ENC_IDENTITY = 0, /* none, or "identity" */
    CLIENT_H1_ENC_ZSTD,         /* "zstd" */
    CLIENT_H1_ENC_OTHER,        /* anything else */
};

/*
 * The connection is closed and no request is left on it. <reason>: 0 after client_h1_close()
 * or the server's orderly close, -ETIMEDOUT, -ECONNREFUSED, -ECONNRESET, -EPROTO (a response
 * that is not HTTP/1.1), or another -errno.
 */
typedef void client_h1_close_fn(struct client_h1 *h, int reason);

struct client_h1_options {
    uint32_t connect_timeout_ms; /* > 0 */
    uint32_t io_timeout_ms;      /* > 0: per receive while a request waits, per send */
};

struct client_h1_request {
    uint8_t method;             /* enum client_h1_method */
    const char *path;           /* request-target, "/..."; copied at start */
    const char *extra_headers;  /* NULL, or complete "Name: value\r\n" lines; copied */
    const uint8_t *body;        /* PUT: the body, unchanged until done */
    uint64_t body_len;          /* PUT: its bytes (sent as Content-Length) */
    client_h1_done_fn *done;    /* required */
    client_h1_body_fn *on_body; /* NULL (the body is counted only), or sees every body
                                   byte of a 2xx answer: a load generator checks what it
                                   read */
};

struct client_h1_result {
    int err;           /* 0, or -errno: -ETIMEDOUT, -ECONNRESET (closed mid-response), -EPROTO
                          (malformed response), -ECANCELED (client_h1_close) */
    int status;        /* the HTTP status code; 0 when no response head arrived */
    uint64_t body_len; /* body bytes received (decoded when chunked) */
    uint8_t encoding;  /* enum client_h1_encoding: the answer's Content-Encoding */
    /* A status other than 2xx: the start of its body, the server's reason ("blob of N bytes
     * is larger than this store takes ..."), on one line, NUL-terminated; "" otherwise. */
    char message[CLIENT_H1_MESSAGE_MAX];
};

struct client_h1_timing {
    uint64_t start_ns;      /* the request was started (base_clock_now_ns) */
    uint64_t first_byte_ns; /* the first response byte arrived; 0: none */
    uint64_t end_ns;        /* the request was over */
};

/* The response parser's states. */
enum client_h1_parse_state {
    CLIENT_H1_P_HEAD = 0,   /* gathering the status line and fields */
    CLIENT_H1_P_LENGTH,     /* a Content-Length body */
    CLIENT_H1_P_CHUNK_SIZE, /* a chunk-size line */
    CLIENT_H1_P_CHUNK_DATA, /* chunk data */
    CLIENT_H1_P_CHUNK_CRLF, /* the CRLF after chunk data */
    CLIENT_H1_P_TRAILER,    /* trailer lines up to the empty one */
    CLIENT_H1_P_UNTIL_EOF,  /* a body delimited by the close */
    CLIENT_H1_P_DONE,       /* the response is complete */
};

struct client_h1 {
    struct ring_conn rc; /* first: ring_conn callbacks give it back (private) */
    void *user;          /* the caller's, untouched */
    /* public, final when a request's done runs: */
    struct client_h1_result result;
    struct client_h1_timing timing;
    /* private: */
    struct client *cl;               /* the ring's client */
    struct client_h1_options opts;   /* as opened */
    client_h1_close_fn *on_close;    /* called once when closed */
    client_h1_done_fn *done;         /* the request's */
    client_h1_body_fn *on_body;      /* the request's, or NULL */
    struct client_connect connect;   /* the connect op */
    struct ring_task done_task;      /* runs done */
    struct ring_task close_task;     /* runs on_close */
    uint8_t state;                   /* enum client_conn_state (client/conn.h) */
    bool ring_live;                  /* rc initialised, its close not reported */
    bool active;                     /* a request started, done not run yet */
    bool sent;                       /* its last byte left (or it had none left to send) */
    bool send_pending;               /* started while connecting: send once connected */
    bool keep_alive;                 /* the response allows another request */
    uint8_t method;                  /* of the request */
    uint8_t pstate;                  /* enum client_h1_parse_state */
    int close_reason;                /* first reason recorded */
    uint64_t body_left;              /* bytes left of a Content-Length body or a chunk */
    size_t head_len;                 /* bytes in head[] */
    size_t line_len;                 /* bytes in line[] */
    size_t out_len;                  /* bytes of out[] */
    struct iovec iov[2];             /* the request: head, body */
    char host[CLIENT_AUTHORITY_MAX]; /* the Host field: the server's authority */
    char line[1024];                 /* a chunk-size or trailer line */
    char out[CLIENT_H1_PATH_MAX + CLIENT_H1_EXTRA_MAX + CLIENT_AUTHORITY_MAX + 256];
    char head[CLIENT_H1_HEAD_MAX]; /* the response head */
};

/*
 * Opens <h> (caller's memory) to <addr>. Returns 0 (on_close will run once), or -errno (no
 * socket, op table full) and then on_close will not run.
 */
MUST_CHECK int client_h1_open(struct client_h1 *h, struct client *cl,
                              const struct client_addr *addr, const struct client_h1_options *o,
                              client_h1_close_fn *on_close);

/*
 * Starts <req> on <h>, which must be opening or open with no request active. Returns 0 (done
 * will run once), or -EINVAL (path, extra headers or method), -EPIPE (the connection is
 * closing or closed), -EBUSY (a request is active); then done will not run.
 */
MUST_CHECK int client_h1_request_start(struct client_h1 *h, const struct client_h1_request *req);

/* Closes <h>: a request in flight fails with -ECANCELED, then on_close. Idempotent. */
void client_h1_close(struct client_h1 *h);

/* True when a request may be started: opening or open, keep-alive, none active. */
bool client_h1_is_ready(const struct client_h1 *h);

/*
 * The parser, for tests: feeds <len> response bytes at <p> to <h>'s parser as if received,
 * for a request of <method>. Returns the bytes taken (all of them, or fewer once the response
 * is complete), or -EPROTO.
 */
MUST_CHECK int64_t client_h1_parse(struct client_h1 *h, const uint8_t *p, size_t len);

/* Resets the parser for a response to <method> (tests; start does it). */
void client_h1_parse_reset(struct client_h1 *h, uint8_t method);

/* True once the response fed to the parser is complete. */
static inline bool client_h1_parse_is_done(const struct client_h1 *h)
{
    return h->pstate == CLIENT_H1_P_DONE;
}

#endif /* RINGCAS_CLIENT_H1_H */
