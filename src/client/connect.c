/*
 * TCP connect through the ring with a linked timeout, and server address parsing.
 *
 * Invariant: the socket belongs to the connect until its op's CQE arrives; then it goes to
 * the callback (success) or is closed here (failure), never both.
 */
#include "client/connect.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/parse.h"

/* Splits "host:port" / "[v6]:port" into <host> (NUL-terminated) and <port>. */
static int split_hostport(const char *s, char *host, size_t host_size, const char **port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') return -EINVAL;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -EINVAL;
        hlen = (size_t)(colon - s);
        /* A bare IPv6 address has more colons: it must be bracketed. */
        if (memchr(s, ':', hlen)) return -EINVAL;
    }
    if (hlen == 0 || hlen >= host_size) return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = colon + 1;
    return 0;
}

int client_addr_parse(const char *hostport, struct client_addr *out, char *why, size_t why_size)
{
    memset(out, 0, sizeof(*out));
    char host[CLIENT_AUTHORITY_MAX];
    const char *port;
    uint64_t port_num;
    if (strlen(hostport) >= sizeof(out->authority) ||
        split_hostport(hostport, host, sizeof(host), &port) < 0 ||
        base_parse_u64(port, &port_num) < 0 || port_num == 0 || port_num > 65535) {
        (void)snprintf(why, why_size, "bad server address '%s': expected HOST:PORT", hostport);
        return -EINVAL;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        (void)snprintf(why, why_size, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    ASSERT(res->ai_addrlen <= sizeof(out->ss));
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    (void)snprintf(out->authority, sizeof(out->authority), "%s", hostport);
    return 0;
}

static void connect_done(struct ring_op *op, int32_t res, uint32_t flags)
{
    (void)flags;
    struct client_connect *cc = op->ctx;
    int fd = cc->fd;
    cc->fd = -1;
    int result = res;
    if (ring_op_timed_out(op, res)) {
        result = -ETIMEDOUT;
    } else if (cc->cancelled && res < 0) {
        result = -ECANCELED;
    } else if (res == 0) {
        /* Small gRPC frames must not wait for Nagle; failure costs latency only. */
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        result = fd;
    }
    if (result < 0) (void)close(fd);
    cc->fn(cc, result);
}

int client_connect_start(struct client_connect *cc, struct ring_core *core,
                         const struct client_addr *addr, uint32_t timeout_ms, client_connect_fn *fn)
{
    ASSERT(timeout_ms > 0);
    ASSERT(fn);
    cc->core = core;
    cc->fn = fn;
    cc->cancelled = false;
    cc->addr = *addr;
    ring_owner_init(&cc->owner);
    cc->fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cc->fd == -1) return -errno;
    struct ring_op *op = ring_op_get(core, &cc->owner, connect_done, cc);
    if (!op) {
        (void)close(cc->fd);
        cc->fd = -1;
        return -EAGAIN;
    }
    struct io_uring_sqe *sqe = ring_op_sqe(op, timeout_ms);
    io_uring_prep_connect(sqe, cc->fd, (const struct sockaddr *)&cc->addr.ss, cc->addr.len);
    ring_op_commit(op, sqe);
    return 0;
}

void client_connect_cancel(struct client_connect *cc)
{
    if (ring_owner_is_idle(&cc->owner)) return;
    cc->cancelled = true;
    ring_owner_cancel(cc->core, &cc->owner);
}
