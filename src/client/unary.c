/*
 * Unary calls: pack, send, gather the one response message, unpack.
 */
#include "client/unary.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"

void client_unary_init(struct client_unary *u, struct client *cl)
{
    memset(u, 0, sizeof(*u));
    client_call_init(&u->call, cl);
}

static void free_response(struct client_unary *u)
{
    if (!u->response) return;
    protobuf_c_message_free_unpacked(u->response, &u->call.cl->pb);
    u->response = NULL;
}

void client_unary_deinit(struct client_unary *u)
{
    if (!u) return;
    client_call_deinit(&u->call);
    free_response(u);
    free(u->req);
    free(u->resp);
    u->req = NULL;
    u->resp = NULL;
}

static struct client_unary *unary_of(struct client_call *c)
{
    return BASE_CONTAINER_OF(c, struct client_unary, call);
}

static int grow(uint8_t **buf, size_t *size, size_t want)
{
    if (*size >= want) return 0;
    uint8_t *m = realloc(*buf, want);
    if (!m) return -ENOMEM;
    *buf = m;
    *size = want;
    return 0;
}

static int unary_on_msg_begin(struct client_call *c, uint32_t len)
{
    struct client_unary *u = unary_of(c);
    if (u->got) return -EPROTO; /* a second response message */
    u->resp_len = 0;
    return grow(&u->resp, &u->resp_size, len > 0 ? len : 1);
}

static int64_t unary_on_msg_data(struct client_call *c, const uint8_t *p, size_t len)
{
    struct client_unary *u = unary_of(c);
    ASSERT(u->resp_len + len <= u->resp_size); /* begin sized it from the message length */
    memcpy(u->resp + u->resp_len, p, len);
    u->resp_len += len;
    return (int64_t)len;
}

static int unary_on_msg_end(struct client_call *c)
{
    struct client_unary *u = unary_of(c);
    u->got = true;
    u->response = protobuf_c_message_unpack(u->desc, &c->cl->pb, u->resp_len, u->resp);
    return u->response ? 0 : -EPROTO;
}

static void unary_on_end(struct client_call *c)
{
    struct client_unary *u = unary_of(c);
    if (c->result.err == 0 && !u->response) {
        c->result.err = -EPROTO;
        (void)snprintf(c->result.message, sizeof(c->result.message), "no response message");
    }
    if (c->result.err != 0) free_response(u);
}

static const struct client_call_ops unary_ops = {
    .on_msg_begin = unary_on_msg_begin,
    .on_msg_data = unary_on_msg_data,
    .on_msg_end = unary_on_msg_end,
    .on_seg_done = NULL,
    .on_end = unary_on_end,
};

int client_unary_start(struct client_unary *u, struct client_conn *conn,
                       const struct client_unary_options *o)
{
    ASSERT(!u->call.active);
    ASSERT(o->path && o->request && o->response_desc);
    free_response(u);
    size_t len = protobuf_c_message_get_packed_size(o->request);
    if (len > CLIENT_RESPONSE_MAX) return -EMSGSIZE;
    int rc = grow(&u->req, &u->req_size, PROTO_FRAME_HEADER_SIZE + len);
    if (rc < 0) return rc;
    size_t packed = protobuf_c_message_pack(o->request, u->req + PROTO_FRAME_HEADER_SIZE);
    ASSERT(packed == len);
    proto_frame_header_put(u->req, (uint32_t)len);
    u->desc = o->response_desc;
    u->got = false;
    u->resp_len = 0;
    u->seg.piece.data = u->req;
    u->seg.piece.len = PROTO_FRAME_HEADER_SIZE + len;
    u->seg.tag = 0;
    rc = client_call_start(&u->call, conn, o->path, &o->call, &unary_ops);
    if (rc < 0) return rc;
    client_call_queue(&u->call, &u->seg);
    client_call_close_send(&u->call);
    return 0;
}
