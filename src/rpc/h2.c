/*
 * HTTP/2 on a connection. Until the protocol is in place the connection is closed cleanly
 * after the bytes that selected it.
 */
#include "ring/buf.h"
#include "rpc/internal.h"

static void closing_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len)
{
    if (len > 0) ring_buf_unref(rc->core, bid);
}

static void closing_on_sent(struct ring_conn *rc)
{
    (void)rc;
}

static void closing_on_close(struct ring_conn *rc, int reason)
{
    (void)reason;
    rpc_conn_free((struct rpc_conn *)rc);
}

static const struct ring_conn_ops closing_ops = {
    .on_recv = closing_on_recv,
    .on_sent = closing_on_sent,
    .on_close = closing_on_close,
};

void rpc_h2_start(struct rpc_conn *c, const uint8_t *prefix, uint32_t prefix_len, uint16_t bid,
                  uint32_t len)
{
    (void)prefix;
    (void)prefix_len;
    if (len > 0) ring_buf_unref(c->conn.core, bid);
    c->conn.ops = &closing_ops;
    ring_conn_close(&c->conn, 0);
}
