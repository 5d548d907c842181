/*
 * Client-side helpers for the ring tests, around the echo protocol of echo_server.h.
 */
#ifndef RINGCAS_TESTS_RING_ECHO_H
#define RINGCAS_TESTS_RING_ECHO_H

#include <stdbool.h>
#include <stdint.h>

#include "echo_server.h"
#include "ring/conn.h"
#include "ring/server.h"

/* Starts the echo server (echo_server_open) or fails the test. */
struct ring_server *echo_server_start(uint32_t cores, const struct echo_config *cfg);

/*
 * A core of the test's own, not started by a server: 64 ops, <bufs> receive buffers of
 * <buf_size> bytes, core index <index>. Fails the test when it cannot be created; release it
 * with ring_core_destroy.
 */
struct ring_core *echo_core_create(uint32_t index, uint32_t bufs, uint32_t buf_size);

/* A bare protocol for API checks on a socketpair, driven tick by tick: it counts. */
struct echo_bare {
    struct ring_conn conn; /* first: the callbacks cast back */
    int sent;              /* on_sent calls */
    int closed;            /* on_close calls */
    int reason;            /* the last close reason */
    uint32_t received;     /* bytes received (their buffers released at once) */
};

/* The callbacks of struct echo_bare. */
extern const struct ring_conn_ops echo_bare_ops;

/* Connects to 127.0.0.1:<port> with a 20 s receive timeout and TCP_NODELAY. */
int echo_connect(uint16_t port);

/* Blocking helpers for the client side; they assert on failure. */
void echo_write_all(int fd, const void *buf, size_t len);
void echo_read_exact(int fd, void *buf, size_t len);

/* Waits up to <ms> for the server-wide counters to satisfy <pred>; returns the last sample. */
bool echo_wait_counters(struct ring_server *srv, uint32_t ms,
                        bool (*pred)(const struct ring_counters_snapshot *s),
                        struct ring_counters_snapshot *last);

/* True when the server holds no connection, no receive buffer and only its accept ops. */
bool echo_is_quiet(const struct ring_counters_snapshot *s);

/* Number of open file descriptors of this process. */
int echo_fd_count(void);
/* The count once it equals <want>, or after 2 s of it differing (then as counted last). */
int echo_fd_count_settled(int want);

#endif /* RINGCAS_TESTS_RING_ECHO_H */
