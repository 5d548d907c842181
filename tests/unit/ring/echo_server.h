/*
 * A small test protocol on the real ring, for the ring's own tests and benchmarks:
 *   - any bytes are echoed back (the receive pauses while the echo is in flight);
 *   - a message starting with "BLAST" makes the server send 64 MiB (receiving goes on);
 *   - a message starting with "QUIT" makes the server close the connection at once.
 * On drain, a connection finishes its echo and closes.
 */
#ifndef RINGCAS_TESTS_RING_ECHO_SERVER_H
#define RINGCAS_TESTS_RING_ECHO_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "ring/server.h"

#define ECHO_BLAST_BYTES (64u << 20)

struct echo_config {
    uint32_t read_timeout_ms;  /* 0: receives carry no linked timeout */
    uint32_t write_timeout_ms; /* 0: sends carry no linked timeout */
    uint16_t port;             /* 0: a free port */
    uint32_t recv_buf_count;   /* receive buffers per core; 0: 256 */
    uint32_t recv_buf_size;    /* bytes per receive buffer; 0: 16 KiB */
    uint64_t drain_timeout_ms; /* 0: 5 s */
};

/* Starts a server of <cores> cores on 127.0.0.1 speaking the echo protocol. */
int echo_server_open(uint32_t cores, const struct echo_config *cfg, struct ring_server **out,
                     char *why, size_t why_size);

#endif /* RINGCAS_TESTS_RING_ECHO_SERVER_H */
