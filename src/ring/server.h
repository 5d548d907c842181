/*
 * The server: one thread per core (pinned when there is one per CPU), each with its own ring, its
 * own SO_REUSEPORT listener and its own connections, and a graceful shutdown.
 *
 * Shutdown (ring_server_stop, or SIGTERM/SIGINT/SIGHUP through ring_server_wait_signals): the
 * main thread sends each core a message over IORING_OP_MSG_RING. Each core stops accepting, asks
 * every connection to finish (ring_conn_ops.on_drain), and waits up to drain_timeout_ms for
 * them to close; then it closes the rest, lets upper layers quiesce (hooks.core_quiesce),
 * waits for its last op to complete, and exits its loop.
 */
#ifndef RINGCAS_RING_SERVER_H
#define RINGCAS_RING_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"
#include "ring/core.h"
#include "ring/listen.h"

struct ring_server;

/* What upper layers plug in. Every hook runs on the core's own thread; NULL ones are skipped. */
struct ring_server_hooks {
    /* The core's ring exists; set up per-core state. Non-zero fails the server's start. */
    int (*core_init)(struct ring_core *core, void *arg);
    /* Shutdown began: the listener is stopping and connections were asked to drain. */
    void (*core_drain)(struct ring_core *core, void *arg);
    /* No connection is left: finish background work; the loop runs until no op is left. */
    void (*core_quiesce)(struct ring_core *core, void *arg);
    /* The loop has ended: release per-core state. */
    void (*core_deinit)(struct ring_core *core, void *arg);
    /* A connection was accepted: the callee owns <fd>. Required. */
    ring_accept_fn *on_accept;
    void *arg; /* passed to every hook */
};

struct ring_server_options {
    struct ring_core_options core; /* per-core table sizes */
    uint32_t cores;                /* threads; 0: ring_cpus_cores() (CPUs, CPU limit) */
    const char *host;              /* listen address */
    uint16_t port;                 /* listen port; 0 picks a free one */
    int backlog;                   /* listen(2) backlog per core */
    uint64_t drain_timeout_ms;     /* how long connections may take to finish on shutdown */
    bool pin; /* pin core i to the i-th allowed CPU, when every one gets a core */
    struct ring_server_hooks hooks; /* upper layers */
};

void ring_server_options_default(struct ring_server_options *opts);

/*
 * Checks that <host>:<port> is free (a bind without SO_REUSEPORT, see ring_listen_probe),
 * waiting up to 2 s for a port held by a predecessor that just died. Port 0 always passes.
 * Call it before start-up work that a refused start must not do (opening a data folder):
 * ring_server_start probes again just before its listeners open, since the port may be
 * taken in between. Returns 0, or -errno with one line in <why>, the one ring_server_start
 * would give. Main thread; it may sleep.
 */
MUST_CHECK int ring_server_probe(const char *host, uint16_t port, char *why, size_t why_size);

/*
 * Opens the listeners and starts the cores; returns when every core is serving. On failure
 * returns -errno with one line in <why> naming the cause and the fix; nothing is left running.
 * SIGTERM, SIGINT, SIGHUP and SIGPIPE are blocked in the calling thread (and so in the cores).
 */
MUST_CHECK int ring_server_start(const struct ring_server_options *opts, struct ring_server **out,
                                 char *why, size_t why_size);

/* The port the listeners are bound to (useful with port 0). */
uint16_t ring_server_port(const struct ring_server *srv);

/* The number of cores and core <i>'s state (for counters). Any thread. */
uint32_t ring_server_core_count(const struct ring_server *srv);
struct ring_core *ring_server_core(const struct ring_server *srv, uint32_t i);

/* Sums every core's counters. Any thread. */
void ring_server_counters(const struct ring_server *srv, struct ring_counters_snapshot *out);

/*
 * Holds SIGTERM, SIGINT, SIGHUP, SIGUSR1 and SIGPIPE back from the calling thread and from
 * every thread it starts afterwards: they then wait for ring_server_wait_signals or
 * ring_server_take_signal instead of ending the process by their default action. serve calls
 * it before the long steps of its start-up (a port's wait, the store's recovery);
 * ring_server_start calls it too.
 */
void ring_server_block_signals(void);

/* A SIGTERM, SIGINT or SIGHUP held back since ring_server_block_signals: takes it and returns
 * its number, or 0 at once when none is. */
int ring_server_take_signal(void);

/*
 * Blocks until SIGTERM, SIGINT, SIGHUP or SIGUSR1 (not a stop: the caller's to act on)
 * arrives and returns the signal number, or returns 0 once <timeout_ms> passed without one
 * (RING_WAIT_FOREVER: no limit), for the main thread's periodic housekeeping.
 */
int ring_server_wait_signals(struct ring_server *srv, uint32_t timeout_ms);

/*
 * Drains and stops every core, joins the threads and frees <srv>. A stop signal that arrives
 * meanwhile (the second: SIGTERM, SIGINT or SIGHUP, blocked by ring_server_block_signals)
 * ends the drain at once, as its timeout would. Returns 0 when every core ended cleanly, -EIO
 * when a core's loop failed.
 */
MUST_CHECK int ring_server_stop(struct ring_server *srv);

/* True once shutdown began on <core>. Core thread. */
bool ring_server_core_is_draining(const struct ring_core *core);

#endif /* RINGCAS_RING_SERVER_H */
