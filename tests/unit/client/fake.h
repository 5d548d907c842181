/*
 * A fake gRPC server for the client's unit tests: one thread, blocking sockets, an nghttp2
 * server session, and an in-memory ByteStream/CAS (Read, Write, FindMissingBlobs,
 * GetCapabilities). Behaviours the tests need are switched on in struct fake_config: stall a
 * read, corrupt it, answer every call with a status, answer a write early, never answer.
 * It records what it saw (messages, resets, headers) in struct fake_stats.
 *
 * Also a silent peer: a listening socket nobody accepts on (the kernel still completes the
 * handshake), so a client's connect succeeds and its reads time out.
 */
#ifndef RINGCAS_TESTS_CLIENT_FAKE_H
#define RINGCAS_TESTS_CLIENT_FAKE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/connect.h"

enum fake_read_mode {
    FAKE_READ_NORMAL = 0,
    FAKE_READ_STALL,   /* send stall_after bytes, then nothing until the client resets */
    FAKE_READ_CORRUPT, /* flip one byte of the blob */
    FAKE_READ_SHORT,   /* leave out the last byte */
    FAKE_READ_LONG,    /* send one byte more */
};

struct fake_config {
    uint8_t read_mode;    /* enum fake_read_mode */
    uint32_t read_chunk;  /* data bytes per ReadResponse; 0: 64 KiB */
    uint32_t stall_after; /* FAKE_READ_STALL: bytes sent before stalling */
    int status;           /* > 0: answer every call with this gRPC status */
    bool write_early_ok;  /* answer a Write as soon as its first message arrives */
    bool no_answer;       /* read requests, never answer */
    bool no_batch;        /* answer BatchUpdateBlobs with UNIMPLEMENTED */
};

struct fake_stats {
    _Atomic uint64_t streams;         /* request streams begun */
    _Atomic uint64_t rst_cancel;      /* RST_STREAM(CANCEL) received */
    _Atomic uint64_t write_messages;  /* WriteRequest messages */
    _Atomic uint64_t write_max_data;  /* largest data field of one WriteRequest */
    _Atomic uint64_t write_finished;  /* WriteRequests with finish_write */
    _Atomic uint64_t write_committed; /* uploads stored */
    _Atomic uint64_t write_bad;       /* uploads refused (digest, offsets, zstd) */
    _Atomic uint64_t reads;           /* Read calls answered with data */
    _Atomic uint64_t read_bytes;      /* response data bytes sent by Read */
    _Atomic uint64_t timeout_headers; /* requests that carried grpc-timeout */
    _Atomic uint64_t batch_calls;     /* BatchUpdateBlobs answered */
    _Atomic uint64_t batch_blobs;     /* blobs stored by them */
};

struct fake_server;

/* Starts the server on 127.0.0.1 (any port). Asserts on failure. */
struct fake_server *fake_start(const struct fake_config *cfg);

/* Stops it (closing its connection) and frees it. */
void fake_stop(struct fake_server *f);

uint16_t fake_port(const struct fake_server *f);
struct fake_stats *fake_stats(struct fake_server *f);

/* Stores a blob the server will serve; returns its digest. */
void fake_add_blob(struct fake_server *f, const void *data, size_t len);

/* True when the server stores a blob of <len> bytes equal to <data>. */
bool fake_has_blob(struct fake_server *f, const void *data, size_t len);

/* Waits up to <ms> for *<counter> >= <want>. */
bool fake_wait(_Atomic uint64_t *counter, uint64_t want, uint32_t ms);

/* A listening socket on 127.0.0.1 that nobody accepts on; *<port> receives its port.
 * Returns the fd (close it to stop). */
int fake_silent_listener(uint16_t *port);

/* Fills <out> for 127.0.0.1:<port>. */
void fake_addr(uint16_t port, struct client_addr *out);

#endif /* RINGCAS_TESTS_CLIENT_FAKE_H */
