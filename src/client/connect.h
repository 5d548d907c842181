/*
 * Opening a TCP connection through the ring: a non-blocking socket, IORING_OP_CONNECT with a
 * linked timeout (nothing waits for a peer without a deadline), TCP_NODELAY once connected.
 *
 * Also the server address: "HOST:PORT" or "[IPV6]:PORT", resolved once with getaddrinfo
 * before any connection is opened (a name lookup is set-up, not I/O on the ring). A name may
 * resolve to several addresses (`localhost` to ::1 and 127.0.0.1 on a stock Debian
 * /etc/hosts, where a server may listen on only one of them): a connect tries them in the
 * order getaddrinfo gave, moving to the next one when an address refuses or cannot be
 * reached, as curl does.
 */
#ifndef RINGCAS_CLIENT_CONNECT_H
#define RINGCAS_CLIENT_CONNECT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/assert.h"
#include "ring/core.h"

#define CLIENT_AUTHORITY_MAX 256
/* Addresses of one name kept (getaddrinfo's first ones): a copy sits in every connect. */
#define CLIENT_ADDR_MAX 8

/* One TCP address: IPv4 or IPv6 (sockaddr_storage would be 128 bytes each). */
union client_sockaddr {
    struct sockaddr sa;     /* sa_family tells which */
    struct sockaddr_in v4;  /* AF_INET */
    struct sockaddr_in6 v6; /* AF_INET6 */
};

/* A resolved server address and the authority (":authority", "Host") that names it. */
struct client_addr {
    union client_sockaddr addrs[CLIENT_ADDR_MAX]; /* to connect to, in getaddrinfo's order */
    socklen_t lens[CLIENT_ADDR_MAX];              /* bytes of each of <addrs> used */
    uint32_t count;                               /* <addrs> used, 1..CLIENT_ADDR_MAX */
    char authority[CLIENT_AUTHORITY_MAX];         /* "HOST:PORT" as given, NUL-terminated */
};

/*
 * Parses and resolves <hostport> into <out>: every IPv4 and IPv6 address getaddrinfo returns,
 * in its order, up to CLIENT_ADDR_MAX. Returns 0, -EINVAL for a malformed value (no port, a
 * port out of range, an empty host, too long), or -EHOSTUNREACH when the name does not
 * resolve (or only to other families); <why> (<why_size> bytes) receives a one-line
 * description in both cases.
 */
MUST_CHECK int client_addr_parse(const char *hostport, struct client_addr *out, char *why,
                                 size_t why_size);

struct client_connect;

/* The connection attempt ended: <res> is the connected socket (>= 0, now the callee's), or
 * -errno: that of the last address tried when every one failed, -ETIMEDOUT after the connect
 * timeout, -ECANCELED after client_connect_cancel. */
typedef void client_connect_fn(struct client_connect *cc, int res);

struct client_connect {
    /* private: */
    struct ring_core *core;  /* the ring */
    struct ring_owner owner; /* the connect op */
    int fd;                  /* the socket while connecting, else -1 */
    bool cancelled;          /* client_connect_cancel was called */
    client_connect_fn *fn;   /* completion */
    uint32_t index;          /* the address of <addr> being tried */
    uint32_t timeout_ms;     /* of each attempt */
    struct client_addr addr; /* read by the kernel when the SQE is submitted */
};

/*
 * Starts connecting to <addr> (copied): to each of its addresses in turn, until one accepts.
 * A refused or unreachable address (ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL,
 * ENETDOWN, or a family the host lacks) moves on to the next one; a timeout (<timeout_ms>
 * > 0, per attempt) or any other error ends the connect, so a black-holed address costs
 * one timeout, not one per address. <fn> runs from the ring once, never from inside this
 * call. Returns 0, or -errno (socket(2) failed for every address, the op table is full) and
 * then <fn> will not run.
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
