/*
 * Unary gRPC calls with protobuf-c messages: one request message, one response message
 * (e.g. Capabilities/GetCapabilities, ContentAddressableStorage/FindMissingBlobs,
 * Health/Check). The request is packed at start into the call's buffer; the response is
 * assembled (at most CLIENT_RESPONSE_MAX bytes) and unpacked with the client's counting
 * protobuf allocator.
 */
#ifndef RINGCAS_CLIENT_UNARY_H
#define RINGCAS_CLIENT_UNARY_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "client/call.h"

struct client_unary_options {
    struct client_call_options call;                 /* deadline, done, user */
    const char *path;                                /* "/package.Service/Method" */
    const ProtobufCMessage *request;                 /* packed at start (borrowed) */
    const ProtobufCMessageDescriptor *response_desc; /* the response's type */
};

struct client_unary {
    struct client_call call;    /* first: done receives it */
    ProtobufCMessage *response; /* after done with err 0: the response, valid until the next
                                   start or deinit; NULL otherwise */
    /* private: */
    const ProtobufCMessageDescriptor *desc; /* response type */
    uint8_t *req;                           /* framed request */
    size_t req_size;                        /* capacity of req */
    uint8_t *resp;                          /* response bytes gathered */
    size_t resp_size;                       /* capacity of resp */
    size_t resp_len;                        /* bytes gathered */
    bool got;                               /* a complete response message arrived */
    struct client_seg seg;                  /* the request, queued */
};

/* Prepares <u> once. */
void client_unary_init(struct client_unary *u, struct client *cl);

/* Releases <u>'s buffers and response; <u> must not be active. NULL is accepted. */
void client_unary_deinit(struct client_unary *u);

/*
 * Starts the call on <conn>. Returns 0, or -ENOMEM, -EMSGSIZE (request over 4 MiB), -EPIPE;
 * then done will not run. In done: 0 with u->response set, or an error (a missing or second
 * response message, or an undecodable one, is -EPROTO).
 */
MUST_CHECK int client_unary_start(struct client_unary *u, struct client_conn *conn,
                                  const struct client_unary_options *o);

#endif /* RINGCAS_CLIENT_UNARY_H */
