/*
 * Listening sockets: one per core, bound to the same address with SO_REUSEPORT so the kernel
 * spreads connections over the cores, each drained by a multishot accept on its core's ring.
 */
#ifndef RINGCAS_RING_LISTEN_H
#define RINGCAS_RING_LISTEN_H

#include <stdbool.h>
#include <stdint.h>

#include "base/assert.h"
#include "ring/core.h"
#include "ring/timer.h"

/* Runs on the core's thread for each accepted socket <fd>, which the callee now owns. */
typedef void ring_accept_fn(struct ring_core *core, int fd, void *ctx);

struct ring_listener {
    struct ring_core *core;    /* the core that accepts on it */
    int fd;                    /* the listening socket; -1 when closed */
    struct ring_owner owner;   /* the accept op and the re-arm timer */
    struct ring_timer rearm;   /* delays re-arming after EMFILE and similar errors */
    struct ring_task retry;    /* re-arms once an op is free, when the table was full */
    bool retry_delayed;        /* <retry> arms <rearm>, not the accept (after an error) */
    uint64_t full_log_ns;      /* when "op table full" was last logged */
    uint64_t err_log_ns;       /* when an accept error was last logged */
    ring_accept_fn *fn;        /* accept callback */
    void *ctx;                 /* its argument */
    bool stopping;             /* ring_listener_stop() was called */
    bool accepting;            /* the multishot accept is in flight */
    ring_owner_fn *on_stopped; /* the caller's on_idle of ring_listener_stop */
    void *stopped_ctx;         /* its argument */
};

/*
 * Fails with -EADDRINUSE when a socket of any process is bound to <host>:<port> (port > 0).
 * Call it before ring_listen_open: the kernel lets a socket with SO_REUSEPORT join another
 * process's SO_REUSEPORT listeners of the same user, which would split the connections
 * between two servers without an error. Returns 0 or -errno. Any thread.
 */
MUST_CHECK int ring_listen_probe(const char *host, uint16_t port);

/*
 * True when <host> is what ring_listen_open takes: an IPv4 literal, an IPv6 literal (in
 * brackets or not) or "localhost". Other names are not resolved. Any thread.
 */
bool ring_listen_host_is_valid(const char *host);

/*
 * Opens a TCP listening socket on <host>:<port> (an IPv4 or IPv6 literal, or "localhost")
 * with SO_REUSEADDR and SO_REUSEPORT. Port 0 picks a free port; pass the port it reports in
 * *<port_out> to open the other cores' sockets. Returns the fd or -errno. Any thread.
 */
MUST_CHECK int ring_listen_open(const char *host, uint16_t port, int backlog, uint16_t *port_out);

/*
 * Starts accepting on <fd>, which the listener now owns, calling <fn>(<core>, fd, <ctx>) per
 * connection. Returns 0 or -EAGAIN.
 */
MUST_CHECK int ring_listener_start(struct ring_listener *l, struct ring_core *core, int fd,
                                   ring_accept_fn *fn, void *ctx);

/*
 * Stops accepting: cancels the accept and closes the socket once it completed. <on_idle> runs
 * (deferred) when nothing of the listener is in flight; then it may be freed.
 */
void ring_listener_stop(struct ring_listener *l, ring_owner_fn *on_idle, void *ctx);

/*
 * Takes <l>'s socket out of listening at once, without its core's ring (for a core whose loop
 * failed): the kernel sends new connections to the other sockets of its SO_REUSEPORT group,
 * and resets those waiting in its accept queue. The fd stays open (the ring may still hold the
 * accept). Any thread once the core's loop has ended.
 */
void ring_listener_abort(struct ring_listener *l);

#endif /* RINGCAS_RING_LISTEN_H */
