/*
 * A ring, a client and one connection for the client's unit tests, and the checks every
 * scenario ends with: every call completed, every connection closed, no op in flight, no
 * receive buffer held, every byte the libraries allocated given back.
 */
#ifndef RINGCAS_TESTS_CLIENT_UTIL_H
#define RINGCAS_TESTS_CLIENT_UTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "client/call.h"
#include "client/client.h"
#include "client/conn.h"
#include "ring/core.h"

struct tctx {
    struct ring_core *core;
    struct client cl;
    struct client_conn conn;
    bool conn_closed;
    int conn_reason;
};

/* Creates the ring and client and opens the connection to 127.0.0.1:<port>. */
struct tctx *tctx_open(uint16_t port, uint32_t io_timeout_ms);

/* Like tctx_open, to every address of <addr> in turn. */
struct tctx *tctx_open_addr(const struct client_addr *addr, uint32_t io_timeout_ms);

/* Like tctx_open without a connection. */
struct tctx *tctx_new(void);

/* Ticks the ring until *<flag> (asserts it happens within <ms>). */
void tctx_wait(struct tctx *t, const bool *flag, uint32_t ms);

/* Closes the connection, waits until everything is idle, checks the counters, frees <t>. */
void tctx_close(struct tctx *t);

/* Ticks the ring until *<counter> >= <want> (the fake server's counters); false after <ms>. */
bool tctx_wait_counter(struct tctx *t, _Atomic uint64_t *counter, uint64_t want, uint32_t ms);

/* The connection close callback tctx_open uses (sets conn_closed, conn_reason). */
void tctx_conn_closed(struct client_conn *conn, int reason);

/* A done callback that sets *(bool *)call->user. */
void tctx_done(struct client_call *call);

/* Fills <p>/<len> with bytes from <seed>, compressible when <text>. */
void tctx_fill(uint8_t *p, size_t len, uint32_t seed, bool text);

/* Milliseconds since <start_ns>. */
uint64_t tctx_ms_since(uint64_t start_ns);

#endif
