/*
 * Unary calls on caller-encoded bytes: queue the framed request, gather the one response
 * message (at most CLIENT_RESPONSE_MAX bytes, checked by the deframer before a byte is kept).
 */
#include "client/raw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "proto/frame.h"

void client_raw_init(struct client_raw *r, struct client *cl)
{
    memset(r, 0, sizeof(*r));
    client_call_init(&r->call, cl);
}

void client_raw_deinit(struct client_raw *r)
{
    if (!r) return;
    client_call_deinit(&r->call);
    free(r->resp);
    r->resp = NULL;
    r->resp_size = 0;
}

static struct client_raw *raw_of(struct client_call *c)
{
    return BASE_CONTAINER_OF(c, struct client_raw, call);
}

static int raw_on_msg_begin(struct client_call *c, uint32_t len)
{
    struct client_raw *r = raw_of(c);
    if (r->got) return -EPROTO; /* a second response message */
    r->resp_len = 0;
    size_t want = len > 0 ? len : 1;
    if (r->resp_size >= want) return 0;
    uint8_t *m = realloc(r->resp, want);
    if (!m) return -ENOMEM;
    r->resp = m;
    r->resp_size = want;
    return 0;
}

static int64_t raw_on_msg_data(struct client_call *c, const uint8_t *p, size_t len)
{
    struct client_raw *r = raw_of(c);
    ASSERT(r->resp_len + len <= r->resp_size); /* begin sized it from the message length */
    memcpy(r->resp + r->resp_len, p, len);
    r->resp_len += len;
    return (int64_t)len;
}

static int raw_on_msg_end(struct client_call *c)
{
    raw_of(c)->got = true;
    return 0;
}

static void raw_on_end(struct client_call *c)
{
    struct client_raw *r = raw_of(c);
    if (c->result.err == 0 && !r->got) {
        c->result.err = -EPROTO;
        (void)snprintf(c->result.message, sizeof(c->result.message), "no response message");
    }
    if (c->result.err == 0) {
        r->response = r->resp;
        r->response_len = r->resp_len;
    }
}

static const struct client_call_ops raw_ops = {
    .on_msg_begin = raw_on_msg_begin,
    .on_msg_data = raw_on_msg_data,
    .on_msg_end = raw_on_msg_end,
    .on_seg_done = NULL,
    .on_end = raw_on_end,
};

int client_raw_start(struct client_raw *r, struct client_conn *conn,
                     const struct client_raw_options *o)
{
    ASSERT(!r->call.active);
    ASSERT(o->path && o->request);
    if (o->request_len < PROTO_FRAME_HEADER_SIZE) return -EINVAL;
    r->response = NULL;
    r->response_len = 0;
    r->got = false;
    r->resp_len = 0;
    r->seg.piece.data = o->request;
    r->seg.piece.len = o->request_len;
    r->seg.tag = 0;
    int rc = client_call_start(&r->call, conn, o->path, &o->call, &raw_ops);
    if (rc < 0) return rc;
    client_call_queue(&r->call, &r->seg);
    client_call_close_send(&r->call);
    return 0;
}
