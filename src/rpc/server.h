/*
 * `ringcas serve`: the node. Starts the per-core server with the protocols of this folder on
 * every accepted connection, waits for SIGTERM/SIGINT, drains and returns.
 */
#ifndef RINGCAS_RPC_SERVER_H
#define RINGCAS_RPC_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/assert.h"

struct rpc_server_options {
    const char *listen;        /* HOST:PORT; port 0 picks one (printed on stdout) */
    const char *dir;           /* data folder */
    uint64_t cores;            /* 0: one per CPU */
    uint64_t read_timeout_ms;  /* a connection silent this long is closed */
    uint64_t write_timeout_ms; /* a send without progress this long closes the connection */
    uint64_t drain_timeout_ms; /* on SIGTERM, how long requests may take to finish */
    uint64_t max_size;         /* store size budget, bytes */
    const char *sync;          /* group | always | none */
    uint64_t recv_buffers;     /* provided receive buffers per core */
    uint64_t recv_buffer_size; /* bytes per receive buffer */
    const char *log_level;     /* error | warn | info | debug */
    uint64_t segment_size;     /* segment size, bytes; 0: picked from max_size and cores */
    uint64_t chunk_size;       /* logical chunk of stored blobs, bytes */
    uint64_t read_ahead;       /* chunks a reader reads ahead or holds (1..8) */
    uint64_t zstd_level;       /* compression level of stored chunks */
    bool direct_io;            /* O_DIRECT segment writes */
    bool map_reads;            /* read records in the page cache in place (mapped segments) */
    bool ac_check;             /* action results answered only with their outputs present */
    uint64_t message_memory;   /* per core, bytes gRPC messages may hold (pb_mem's limit) */
    uint64_t max_connections;  /* per core, open connections; past it RPC_CONNS_OPS_SLOTS serve
                                  the probes only, then new ones are closed */
    uint64_t max_uploads;      /* per core, open uploads (the engine's uploads_max) */
    uint64_t read_memory;      /* per core, bytes of readers' chunk buffers (read_buffer_max) */
    uint64_t zstd_memory;      /* per core, bytes zstd contexts may hold (zstd_memory_max) */
    const char *access_log;    /* a file to append a JSON line per request to; "-": standard
                                  output; "": none */
};

/* Bounds of the engine's per-core limits the operator sets (src/rpc/server.c checks them). */
#define RPC_MAX_UPLOADS_MAX   65536u
#define RPC_ENGINE_MEMORY_MIN (16ULL << 20)

/*
 * Most connections a core keeps (--max-connections): each holds an op of the core's table
 * (16384 slots) for its receive, and one more while it sends; past a quarter of the table the
 * ops that existing connections, the engine and the timers need would run out, and a flood of
 * idle connections would close busy ones ("op table full").
 */
#define RPC_CONNS_MAX 4096u

void rpc_server_options_default(struct rpc_server_options *opts);

/*
 * Runs the server until SIGTERM or SIGINT and a drain. Returns the process exit status: 0
 * after a clean drain, 2 for a flag value it refuses, 1 when the server could not start
 * otherwise or a core failed (one line on stderr says why).
 */
int rpc_server_run(const struct rpc_server_options *opts);

#endif /* RINGCAS_RPC_SERVER_H */
