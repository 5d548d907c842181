/*
 * The server side of the echo protocol (echo.h), built only on the public API of src/ring.
 * It has no test-framework dependency so perf/ can run it too.
 */
#include "echo_server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/assert.h"
#include "ring/buf.h"
#include "ring/conn.h"

struct echo_conn {
    struct ring_conn conn; /* first: on_close frees the whole struct */
    uint16_t bid;          /* buffer being echoed */
    bool has_buf;          /* bid is held */
    bool sending;          /* an echo or a blast is in flight */
    uint8_t *blast;        /* the 64 MiB of a blast, or NULL */
};

static struct echo_config echo_cfg;

static void echo_release(struct echo_conn *e)
{
    if (e->has_buf) {
        ring_buf_unref(e->conn.core, e->bid);
        e->has_buf = false;
    }
}

static void echo_on_recv(struct ring_conn *c, uint16_t bid, uint32_t len)
{
    struct echo_conn *e = (struct echo_conn *)c;
    if (len == 0) {
        ring_conn_close(c, 0);
        return;
    }
    uint8_t *data = ring_buf_data(c->core, bid);
    if (len >= 4 && memcmp(data, "QUIT", 4) == 0) {
        ring_buf_unref(c->core, bid);
        ring_conn_close(c, 0);
        return;
    }
    if (len >= 5 && memcmp(data, "BLAST", 5) == 0 && !e->sending) {
        ring_buf_unref(c->core, bid);
        e->blast = malloc(ECHO_BLAST_BYTES);
        ASSERT(e->blast);
        memset(e->blast, 'b', ECHO_BLAST_BYTES);
        struct iovec v = { e->blast, ECHO_BLAST_BYTES };
        int rc = ring_conn_send(c, &v, 1);
        ASSERT(rc == 0);
        e->sending = true;
        return; /* keep receiving: a QUIT must reach us while the send is in flight */
    }
    if (e->sending) {
        ring_buf_unref(c->core, bid); /* bytes during a blast are dropped */
        return;
    }
    e->bid = bid;
    e->has_buf = true;
    struct iovec v = { data, len };
    int rc = ring_conn_send(c, &v, 1);
    if (rc < 0) {
        echo_release(e);
        ring_conn_close(c, rc);
        return;
    }
    e->sending = true;
    ring_conn_recv_pause(c);
}

static void echo_on_sent(struct ring_conn *c)
{
    struct echo_conn *e = (struct echo_conn *)c;
    e->sending = false;
    echo_release(e);
    free(e->blast);
    e->blast = NULL;
    if (c->draining) {
        ring_conn_close(c, 0);
        return;
    }
    ring_conn_recv_resume(c);
}

static void echo_on_close(struct ring_conn *c, int reason)
{
    (void)reason;
    struct echo_conn *e = (struct echo_conn *)c;
    echo_release(e);
    free(e->blast);
    free(e);
}

static bool echo_is_busy(const struct ring_conn *c)
{
    return ((const struct echo_conn *)c)->sending;
}

static void echo_on_drain(struct ring_conn *c)
{
    if (!((struct echo_conn *)c)->sending) ring_conn_close(c, 0);
}

static const struct ring_conn_ops echo_ops = {
    .on_recv = echo_on_recv,
    .on_sent = echo_on_sent,
    .on_close = echo_on_close,
    .is_busy = echo_is_busy,
    .on_drain = echo_on_drain,
};

static void echo_accept(struct ring_core *core, int fd, void *arg)
{
    (void)arg;
    struct echo_conn *e = calloc(1, sizeof(*e));
    if (!e) {
        close(fd);
        return;
    }
    ring_conn_init(&e->conn, core, fd, &echo_ops, echo_cfg.read_timeout_ms,
                   echo_cfg.write_timeout_ms);
    if (ring_conn_recv_start(&e->conn) < 0) ring_conn_close(&e->conn, -EAGAIN);
}

int echo_server_open(uint32_t cores, const struct echo_config *cfg, struct ring_server **out,
                     char *why, size_t why_size)
{
    echo_cfg = *cfg;
    struct ring_server_options o;
    ring_server_options_default(&o);
    o.cores = cores;
    o.port = cfg->port;
    o.drain_timeout_ms = cfg->drain_timeout_ms ? cfg->drain_timeout_ms : 5000;
    o.core.recv_buf_count = cfg->recv_buf_count ? cfg->recv_buf_count : 256;
    o.core.recv_buf_size = cfg->recv_buf_size ? cfg->recv_buf_size : 16384;
    o.hooks.on_accept = echo_accept;
    return ring_server_start(&o, out, why, why_size);
}
