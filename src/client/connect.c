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
        /* A URL (the grpc://HOST:PORT of Bazel's --remote_cache) is the likely mistake: say
         * what is wrong with it rather than only what is expected. */
        (void)snprintf(why, why_size, "bad server address '%s': expected HOST:PORT%s", hostport,
                       strstr(hostport, "://") ? " without a scheme (grpc://, http://), e.g. "
                                                 "127.0.0.1:8980"
                                               : "");
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
    /* Bounded by CLIENT_ADDR_MAX: a name with more addresses keeps its first ones. */
    for (struct addrinfo *ai = res; ai && out->count < CLIENT_ADDR_MAX; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
        ASSERT(ai->ai_addrlen <= sizeof(out->addrs[0]));
        memcpy(&out->addrs[out->count], ai->ai_addr, ai->ai_addrlen);
        out->lens[out->count] = ai->ai_addrlen;
        out->count++;
    }
    freeaddrinfo(res);
    if (out->count == 0) {
        (void)snprintf(why, why_size, "cannot resolve '%s': no IPv4 or IPv6 address", host);
        return -EHOSTUNREACH;
    }
    (void)snprintf(out->authority, sizeof(out->authority), "%s", hostport);
    return 0;
}

/* True for a connect error after which the next address of the name is worth a try. */
static bool error_moves_on(int err)
{
    switch (err) {
    case -ECONNREFUSED:
    case -ENETUNREACH:
    case -EHOSTUNREACH:
    case -EADDRNOTAVAIL:
    case -ENETDOWN:
    case -EAFNOSUPPORT:
        return true;
    default:
        return false;
    }
}

static void connect_done(struct ring_op *op, int32_t res, uint32_t flags);

/*
 * Submits the connect to <cc>'s addresses from <cc->index> on: an address whose socket
 * cannot be made for a reason error_moves_on names (no IPv6 on this host) is skipped.
 * Returns 0 once a connect is in flight, or the -errno of the last address tried.
 */
static int attempt(struct client_connect *cc)
{
    ASSERT(cc->fd == -1);
    int rc = -EHOSTUNREACH;
    for (; cc->index < cc->addr.count; cc->index++) {
        const union client_sockaddr *sa = &cc->addr.addrs[cc->index];
        cc->fd = socket(sa->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (cc->fd == -1) {
            rc = -errno;
            if (error_moves_on(rc)) continue;
            return rc;
        }
        struct ring_op *op = ring_op_get(cc->core, &cc->owner, connect_done, cc);
        if (!op) {
            (void)close(cc->fd);
            cc->fd = -1;
            return -EAGAIN;
        }
        struct io_uring_sqe *sqe = ring_op_sqe(op, cc->timeout_ms);
        io_uring_prep_connect(sqe, cc->fd, &sa->sa, cc->addr.lens[cc->index]);
        ring_op_commit(op, sqe);
        return 0;
    }
    return rc;
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
    if (result < 0 && !cc->cancelled && error_moves_on(result) && cc->index + 1 < cc->addr.count) {
        /* The next address of the name; this op is released after we return. */
        cc->index++;
        int rc = attempt(cc);
        if (rc == 0) return;
        /* Every address left failed at once: report what the last one said. */
        result = rc;
    }
    cc->fn(cc, result);
}

int client_connect_start(struct client_connect *cc, struct ring_core *core,
                         const struct client_addr *addr, uint32_t timeout_ms, client_connect_fn *fn)
{
    ASSERT(timeout_ms > 0);
    ASSERT(fn);
    ASSERT(addr->count > 0 && addr->count <= CLIENT_ADDR_MAX);
    cc->core = core;
    cc->fn = fn;
    cc->cancelled = false;
    cc->addr = *addr;
    cc->index = 0;
    cc->timeout_ms = timeout_ms;
    cc->fd = -1;
    ring_owner_init(&cc->owner);
    return attempt(cc);
}

void client_connect_cancel(struct client_connect *cc)
{
    if (ring_owner_is_idle(&cc->owner)) return;
    cc->cancelled = true;
    ring_owner_cancel(cc->core, &cc->owner);
}
