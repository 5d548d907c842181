/*
 * Opening a TCP connection through the ring: a non-blocking socket, IORING_OP_CONNECT with a
 * linked timeout (nothing waits for a peer without a deadline), TCP_NODELAY once connected.
 *
 * Also the server address: "HOST:PORT" or "[IPV6]:PORT", resolved once with getaddrinfo
 * before any connection is opened (a name lookup is set-up, not I/O on the ring).
 */
#ifndef RINGCAS_CLIENT_CONNECT_H
#define RINGCAS_CLIENT_CONNECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/assert.h"
#include "ring/core.h"

#define CLIENT_AUTHORITY_MAX 256

/* A resolved server address and the authority (":authority", "Host") that names it. */
struct client_addr {
    struct sockaddr_storage ss;           /* the address to connect to */
    socklen_t len;                        /* bytes of <ss> used */
    char authority[CLIENT_AUTHORITY_MAX]; /* "HOST:PORT" as given, NUL-terminated */
};

/*
 * Parses and resolves <hostport> into <out> (the first address getaddrinfo returns). Returns
 * 0, -EINVAL for a malformed value (no port, a port out of range, an empty host, too long),
 * or -EHOSTUNREACH when the name does not resolve; <why> (<why_size> bytes) receives a
 * one-line description in both cases.
 */
MUST_CHECK int client_addr_parse(const char *hostport, struct client_addr *out, char *why,
                                 size_t why_size);

struct client_connect;

/* The connection attempt ended: <res> is the connected socket (>= 0, now the callee's), or
 * -errno (-ETIMEDOUT after the connect timeout, -ECANCELED after client_connect_cancel). */
typedef void client_connect_fn(struct client_connect *cc, int res);

struct client_connect {
    /* private: */
    struct ring_core *core;  /* the ring */
    struct ring_owner owner; /* the connect op */
    int fd;                  /* the socket while connecting, else -1 */
    bool cancelled;          /* client_connect_cancel was called */
    client_connect_fn *fn;   /* completion */
    struct client_addr addr; /* read by the kernel when the SQE is submitted */
};

/*
 * Starts connecting to <addr> (copied) with a timeout of <timeout_ms> (> 0). <fn> runs from
 * the ring once, never from inside this call. Returns 0, or -errno (socket(2) failed, the op
 * table is full) and then <fn> will not run.
 */
MUST_CHECK int client_connect_start(struct client_connect *cc, struct ring_core *core,
                                    const struct client_addr *addr, uint32_t timeout_ms,
                                    client_connect_fn *fn);

/* Cancels a connect in progress: <fn> still runs, with -ECANCELED unless it already won. */
void client_connect_cancel(struct client_connect *cc);

/* True while the connect op is in flight (its memory must stay). */
static inline bool client_connect_is_busy(const struct client_connect *cc)
{
    return !ring_owner_is_idle(&cc->owner);
}

#endif /* RINGCAS_CLIENT_CONNECT_H */
