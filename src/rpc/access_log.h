/*
 * The access log: one JSON line per finished request (HTTP/1.1 and gRPC), for the operator
 * who needs to know which client asked for what and what it got (docs/operations.md "Access
 * log"). Off unless --access-log names a file ("-": standard output).
 *
 * The cores never wait on the log's disk: each appends its lines to a ring of its own, with
 * no lock, which the log's thread writes out with plain write(2) every
 * RPC_ACCESS_LOG_FLUSH_MS, or sooner once a ring is half full. A line that does not fit (the
 * thread fell behind a slow disk) is dropped and counted
 * (ringcas_access_log_dropped_lines_total), never waited for.
 */
#ifndef RINGCAS_RPC_ACCESS_LOG_H
#define RINGCAS_RPC_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/assert.h"

struct rpc_access_log;

#define RPC_ACCESS_LOG_BUF      (1u << 20) /* bytes of lines a core may hold unwritten */
#define RPC_ACCESS_LOG_FLUSH_MS 100u
#define RPC_ACCESS_LOG_FIELD_MAX                                                                   \
    256u /* bytes of a target or message a line keeps; the rest                                    \
            is cut and marked "..." */
/* The longest line: four strings of up to RPC_ACCESS_LOG_FIELD_MAX bytes, each escaped to at
 * most 6 bytes per byte, and the fixed text and numbers. */
#define RPC_ACCESS_LOG_LINE_MAX (4u * (6u * RPC_ACCESS_LOG_FIELD_MAX + 3u) + 512u)

/* One finished request. Strings need not be NUL-terminated where a length is given. */
struct rpc_access_entry {
    const char *peer;     /* "127.0.0.1:40312" */
    const char *route;    /* rpc_route_name(), e.g. "GET /cas" or "google...ByteStream/Read" */
    const char *target;   /* the HTTP path, the gRPC call's resource; NULL: none */
    size_t target_len;    /* bytes of <target> */
    const char *message;  /* gRPC: grpc-message of a failed call (percent-encoded); or NULL */
    int status;           /* the HTTP status, or the gRPC code */
    bool grpc;            /* <status> is a gRPC code */
    uint64_t bytes_in;    /* request body bytes */
    uint64_t bytes_out;   /* response body bytes */
    uint64_t duration_ns; /* from the request's head to its status */
};

/*
 * Opens <path> for appending (created 0640 if missing; "-": standard output) for <cores>
 * cores, and starts the thread that writes their lines. On failure returns -errno and says
 * why in <why>.
 */
MUST_CHECK int rpc_access_log_open(const char *path, uint32_t cores, struct rpc_access_log **out,
                                   char *why, size_t why_size);

/* Writes out every line the cores left and stops the thread. Call once the cores stopped. */
void rpc_access_log_close(struct rpc_access_log *log);

/* Asks the thread to open the path again before its next write (SIGUSR1, after logrotate
 * renamed the file). Any thread. */
void rpc_access_log_reopen(struct rpc_access_log *log);

/* Appends <e>'s line to core <core>'s buffer. Core thread; never blocks on the disk. */
void rpc_access_log_add(struct rpc_access_log *log, uint32_t core,
                        const struct rpc_access_entry *e);

/* Formats <e> as one line, ending in '\n', at <wall_ns> into <out> (at least
 * RPC_ACCESS_LOG_LINE_MAX bytes); returns its length. */
size_t rpc_access_log_format(char *out, const struct rpc_access_entry *e, uint64_t wall_ns,
                             uint32_t core);

/* Lines core <core> wrote, and dropped (the buffer full, or the file's write failed). Any
 * thread; 0 for a NULL log. */
uint64_t rpc_access_log_lines(const struct rpc_access_log *log, uint32_t core);
uint64_t rpc_access_log_dropped(const struct rpc_access_log *log, uint32_t core);

#endif /* RINGCAS_RPC_ACCESS_LOG_H */
