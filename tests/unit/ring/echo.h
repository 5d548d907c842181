/*
 * A small test protocol on the real ring, for the ring's own tests and benchmarks:
 *   - any bytes are echoed back (the receive pauses while the echo is in flight);
 *   - a message starting with "BLAST" makes the server send 64 MiB (receiving goes on);
 *   - a message starting with "QUIT" makes the server close the connection at once.
 * On drain, a connection finishes its echo and closes.
 */
#ifndef RINGCAS_TESTS_RING_ECHO_H
#define RINGCAS_TESTS_RING_ECHO_H

#include <stdbool.h>
#include <stdint.h>

#include "ring/server.h"

#define ECHO_BLAST_BYTES (64u << 20)

struct echo_config {
    uint32_t read_timeout_ms;
    uint32_t write_timeout_ms;
};

/* Starts a server of <cores> cores on 127.0.0.1 (free port) speaking the echo protocol. */
struct ring_server *echo_server_start(uint32_t cores, const struct echo_config *cfg);

/* Closes connections the echo server has on the core of the calling thread (for tests). */
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

#endif /* RINGCAS_TESTS_RING_ECHO_H */
