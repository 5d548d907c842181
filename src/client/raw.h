/*
 * Unary gRPC calls on bytes the caller encoded: one request message, framed by the caller
 * (5-byte prefix included) and sent from its memory without a copy, and one response message
 * gathered into the call's buffer as it arrives, not unpacked. For load generators, which
 * send the same request many times and read only a field or two of the answer
 * (proto/wire.h walks it); client/unary.h is the protobuf-c variant.
 */
#ifndef RINGCAS_CLIENT_RAW_H
#define RINGCAS_CLIENT_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/call.h"

struct client_raw_options {
    struct client_call_options call; /* deadline, done, user */
    const char *path;                /* "/package.Service/Method" */
    const uint8_t *request;          /* the framed request: unchanged until done */
    size_t request_len;              /* its bytes, > PROTO_FRAME_HEADER_SIZE - 1 */
};

struct client_raw {
    struct client_call call; /* first: done receives it */
    const uint8_t *response; /* after done with err 0: the response message's payload, valid
                                until the next start or deinit; NULL otherwise */
    size_t response_len;     /* its bytes */
    /* private: */
    uint8_t *resp;         /* response bytes gathered */
    size_t resp_size;      /* capacity of resp */
    size_t resp_len;       /* bytes gathered */
    bool got;              /* a complete response message arrived */
    struct client_seg seg; /* the request, queued */
};

/* Prepares <r> once (its response buffer grows on demand and is kept). */
void client_raw_init(struct client_raw *r, struct client *cl);

/* Releases <r>'s buffer; <r> must not be active. NULL is accepted. */
void client_raw_deinit(struct client_raw *r);

/*
 * Starts the call on <conn>. Returns 0, or -EINVAL (a request shorter than its frame header),
 * -ENOMEM, -EPIPE (connection not usable); then done will not run. In done: 0 with
 * r->response set, or an error (no response message, or a second one, is -EPROTO).
 */
MUST_CHECK int client_raw_start(struct client_raw *r, struct client_conn *conn,
                                const struct client_raw_options *o);

#endif /* RINGCAS_CLIENT_RAW_H */
