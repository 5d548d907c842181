/*
 * A minimal HTTP/1.1 GET through the ring, for what the CLI reads over plain HTTP on the same
 * port as gRPC (GET /metrics): connect with a timeout, send one request with
 * "Connection: close", receive with the ring_conn's read timeout, accept a Content-Length,
 * chunked or close-delimited body of at most CLIENT_HTTP_BODY_MAX bytes.
 */
#ifndef RINGCAS_CLIENT_HTTP_H
#define RINGCAS_CLIENT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/client.h"
#include "client/connect.h"
#include "ring/conn.h"

#define CLIENT_HTTP_BODY_MAX (16u << 20)

struct client_http;

/* The request is over: h->err, h->status and h->body are final. */
typedef void client_http_done_fn(struct client_http *h);

struct client_http {
    struct ring_conn rc; /* first: ring_conn callbacks give it back (private) */
    /* public, final when done runs: */
    int err;          /* 0, or -errno: -ETIMEDOUT, -ECONNREFUSED, -EPROTO (bad response),
                         -EMSGSIZE (body over the limit) */
    int status;       /* the HTTP status code (0 when none arrived) */
    const char *body; /* the body (NUL-terminated), inside the response buffer */
    size_t body_len;  /* its bytes */
    void *user;       /* the caller's, untouched */
    /* private: */
    struct client *cl;
    struct client_connect connect; /* the connect op */
    client_http_done_fn *done;
    struct ring_task done_task; /* runs done after the socket's last op */
    uint32_t timeout_ms;        /* connect and I/O timeout */
    bool live;                  /* rc was initialised */
    bool complete;              /* the whole response arrived */
    char req[CLIENT_AUTHORITY_MAX + 256];
    size_t req_len;
    char *buf;   /* response bytes (NUL-terminated after parsing) */
    size_t len;  /* bytes in buf */
    size_t size; /* capacity of buf */
};

/*
 * Starts GET <path> (at most 128 bytes) on <addr> with <timeout_ms> for the connect and each
 * receive and send. <h> is the caller's memory. Returns 0 (done will run once, from the
 * ring), or -errno (then it will not).
 */
MUST_CHECK int client_http_get_start(struct client_http *h, struct client *cl,
                                     const struct client_addr *addr, const char *path,
                                     uint32_t timeout_ms, client_http_done_fn *done);

/* Releases the response buffer; <h> must be done. NULL is accepted. */
void client_http_deinit(struct client_http *h);

/*
 * Parses the response received so far in <buf>/<len> (<at_eof>: the server closed after
 * it) into <out>: whether it is whole, and then the status code and the body (decoded in
 * place when chunked, and NUL-terminated: <buf> needs one spare byte). Returns 0, or
 * -EPROTO for a malformed or truncated response.
 */
struct client_http_response {
    bool complete;    /* the response is whole; the fields below are set */
    int status;       /* HTTP status code */
    const char *body; /* inside the buffer, NUL-terminated */
    size_t body_len;  /* bytes */
};

MUST_CHECK int client_http_parse(char *buf, size_t len, bool at_eof,
                                 struct client_http_response *out);

#endif /* RINGCAS_CLIENT_HTTP_H */
