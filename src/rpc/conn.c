/*
 * Accepted connections and protocol sniffing. A connection reads until it can tell the
 * HTTP/2 preface from anything else, then hands itself to that protocol; the bytes read so
 * far are passed along, so nothing is lost or read twice.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "ring/buf.h"
#include "rpc/internal.h"

static void sniff_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len);
static void sniff_on_sent(struct ring_conn *rc);
static void sniff_on_close(struct ring_conn *rc, int reason);

static const struct ring_conn_ops sniff_ops = {
    .on_recv = sniff_on_recv,
    .on_sent = sniff_on_sent,
    .on_close = sniff_on_close,
};

void rpc_conn_free(struct rpc_conn *c)
{
    ASSERT(c->rc->conns_open > 0);
    c->rc->conns_open--;
    free(c->log_peer);
    free(c);
}

const char *rpc_conn_log_peer(struct rpc_conn *c)
{
    if (!c->log_peer) {
        c->log_peer = malloc(RING_CONN_PEER_MAX);
        if (!c->log_peer) return "-";
        (void)ring_conn_peer(&c->conn, c->log_peer);
    }
    return c->log_peer;
}

void rpc_conn_accept(struct ring_core *core, int fd, void *arg)
{
    (void)arg;
    struct rpc_core *rc = ring_core_app(core);
    uint64_t max = rc->cfg->opts.max_connections;
    if (rc->conns_open >= max + RPC_CONNS_OPS_SLOTS) {
        /* Closed at once: the client sees the connection end before any answer and may
         * retry, or go to another replica. */
        base_counter_inc(&ring_core_counters(core)->conns_rejected);
        (void)close(fd);
        if (base_clock_every(&rc->refused_log_ns, BASE_NS_PER_S)) {
            LOG_WARN("core %u: %u connections open (--max-connections and the probes' slots): "
                     "closing new ones",
                     ring_core_index(core), rc->conns_open);
        }
        return;
    }
    struct rpc_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        base_counter_inc(&ring_core_counters(core)->conns_rejected);
        (void)close(fd);
        return;
    }
    c->rc = rc;
    /* Past the limit the connection may still be a health probe or a scrape: which one
     * shows only in its request, so it is read, and anything else refused then. */
    c->ops_only = rc->conns_open >= max;
    if (c->ops_only && base_clock_every(&rc->refused_log_ns, BASE_NS_PER_S)) {
        LOG_WARN("core %u: %u connections open (--max-connections): new ones get only "
                 "/healthz, /readyz and /metrics",
                 ring_core_index(core), rc->conns_open);
    }
    rc->conns_open++;
    ring_conn_init(&c->conn, core, fd, &sniff_ops, rc->cfg->read_timeout_ms,
                   rc->cfg->write_timeout_ms);
    if (ring_conn_recv_start(&c->conn) < 0) ring_conn_close(&c->conn, -EAGAIN);
}

/* True when the <len> bytes of <p> match the preface from offset <at>. */
static bool matches_preface(const uint8_t *p, uint32_t len, uint32_t at)
{
    return memcmp(p, &RPC_H2_PREFACE[at], len) == 0;
}

static void sniff_on_recv(struct ring_conn *rc, uint16_t bid, uint32_t len)
{
    struct rpc_conn *c = (struct rpc_conn *)rc;
    if (len == 0) {
        /* The peer closed before saying anything decisive: HTTP/1.1 answers a partial line. */
        rpc_h1_start(c, c->sniff, c->sniff_len, bid, 0);
        return;
    }
    const uint8_t *data = ring_buf_data(rc->core, bid);
    uint32_t want = RPC_H2_PREFACE_LEN - c->sniff_len;
    uint32_t n = len < want ? len : want;
    if (!matches_preface(data, n, c->sniff_len)) {
        rpc_h1_start(c, c->sniff, c->sniff_len, bid, len);
        return;
    }
    if (n == want && c->ops_only) {
        /* An HTTP/2 client past --max-connections: no probe speaks it, so the connection
         * ends as it would have at the accept. */
        base_counter_inc(&ring_core_counters(rc->core)->conns_rejected);
        ring_buf_unref(rc->core, bid);
        ring_conn_close(rc, -EAGAIN);
        return;
    }
    if (n == want) {
        rpc_h2_start(c, c->sniff, c->sniff_len, bid, len);
        return;
    }
    /* A preface split across receives: keep its start and wait for the rest. */
    memcpy(c->sniff + c->sniff_len, data, n);
    c->sniff_len = (uint8_t)(c->sniff_len + n);
    ring_buf_unref(rc->core, bid);
}

static void sniff_on_sent(struct ring_conn *rc)
{
    (void)rc;
    UNREACHABLE(); /* nothing is sent before a protocol takes over */
}

static void sniff_on_close(struct ring_conn *rc, int reason)
{
    (void)reason;
    rpc_conn_free((struct rpc_conn *)rc);
}
