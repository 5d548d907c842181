/*
 * What the files of src/rpc share: the server-wide configuration, the per-core state and the
 * connection every protocol starts from. Only src/rpc and its tests include this header.
 */
#ifndef RINGCAS_RPC_INTERNAL_H
#define RINGCAS_RPC_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "blob/store.h"
#include "ring/conn.h"
#include "ring/core.h"
#include "rpc/server.h"

/* Server-wide settings, fixed before the cores start; read by every core. */
struct rpc_config {
    struct rpc_server_options opts; /* what the operator asked for */
    struct blob_store *store;       /* the storage engine, shared by every core */
    uint32_t read_timeout_ms;       /* per connection receive */
    uint32_t write_timeout_ms;      /* per connection send progress */
};

/* One core's protocol state; created by the core_init hook on the core's thread. */
struct rpc_core {
    struct ring_core *ring;          /* this core's loop */
    const struct rpc_config *cfg;    /* shared, read-only */
    uint32_t conns_open;             /* rpc connections alive on this core */
    struct blob_core *blob;          /* this core's storage engine */
};

/*
 * A connection as accepted: the first bytes decide its protocol. The HTTP/2 client preface
 * ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", RFC 9113 §3.4) selects HTTP/2; anything else is HTTP/1.1.
 * The chosen protocol takes the connection over with rpc_h2_start() or rpc_h1_start(): it
 * replaces conn.ops with its own callbacks and keeps its state in <proto>.
 */
struct rpc_conn {
    struct ring_conn conn;  /* first member: ring callbacks cast back to rpc_conn */
    struct rpc_core *rc;    /* the core's protocol state */
    void *proto;            /* the protocol's per-connection state */
    uint8_t sniff[24];      /* the first bytes, while fewer than the preface arrived */
    uint8_t sniff_len;      /* bytes in sniff[] */
};

#define RPC_H2_PREFACE     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define RPC_H2_PREFACE_LEN 24

/*
 * Takes <c> over as HTTP/2 or HTTP/1.1. <prefix>/<prefix_len> are bytes already received and
 * consumed from earlier buffers (at most 24, copied by the callee), then <len> bytes of
 * receive buffer <bid> follow (one reference passes to the callee; len may be 0 with
 * bid RING_CONN_NO_BUF when the peer closed). The callee sets c->conn.ops and c->proto.
 */
void rpc_h2_start(struct rpc_conn *c, const uint8_t *prefix, uint32_t prefix_len, uint16_t bid,
                  uint32_t len);
void rpc_h1_start(struct rpc_conn *c, const uint8_t *prefix, uint32_t prefix_len, uint16_t bid,
                  uint32_t len);

/* Accepts socket <fd> on <core> as a new rpc connection (the ring's on_accept hook). */
void rpc_conn_accept(struct ring_core *core, int fd, void *arg);

/* Releases a connection's memory; the protocols' on_close ends with it. */
void rpc_conn_free(struct rpc_conn *c);

#endif /* RINGCAS_RPC_INTERNAL_H */
