/*
 * The keep-alive HTTP/1.1 connection: the response parser fed in every split (Content-Length,
 * chunked, close-delimited, interim 100, HEAD, malformed, an over-long head), and live
 * requests against a thread server: several requests on one connection, a PUT body, a
 * response that closes the connection, a server that never answers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "client/h1.h"
#include "fake.h"
#include "util.h"

static struct client_h1 ph; /* the parser's state (large: static) */

/* Feeds <text> in pieces of <step> bytes; returns the last result (bytes or -EPROTO). */
static int64_t feed(const char *text, uint8_t method, size_t step)
{
    client_h1_parse_reset(&ph, method);
    size_t len = strlen(text);
    size_t used = 0;
    while (used < len && !client_h1_parse_is_done(&ph)) {
        size_t n = len - used < step ? len - used : step;
        int64_t rc = client_h1_parse(&ph, (const uint8_t *)text + used, n);
        if (rc < 0) return rc;
        used += (size_t)rc;
        if ((size_t)rc < n) break;
    }
    return (int64_t)used;
}

Test(client_h1, parses_every_framing_in_every_split)
{
    static const char *const ok[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\n"
         "Trailer: x\r\n\r\n"),
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        for (size_t step = 1; step <= strlen(ok[i]); step++) {
            int64_t n = feed(ok[i], CLIENT_H1_GET, step);
            cr_assert(eq(i64, n, (int64_t)strlen(ok[i])), "case %zu step %zu", i, step);
            cr_assert(client_h1_parse_is_done(&ph));
            cr_assert(eq(u64, ph.result.body_len, 5));
            cr_assert(ph.keep_alive);
        }
    }
    cr_assert(eq(int, ph.result.status, 201));
}

Test(client_h1, an_error_answers_body_is_kept_as_its_reason)
{
    /* ringcas bench reported "HTTP 413" without the server's reason, which is in the body. */
    static const char *const errs[] = {
        "HTTP/1.1 413 Content Too Large\r\nContent-Length: 18\r\n\r\nblob is\ttoo large\n",
        ("HTTP/1.1 507 Insufficient Storage\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nblob is\t\r\n"
         "b\r\ntoo large\r\n\r\n0\r\n\r\n"),
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        for (size_t step = 1; step <= strlen(errs[i]); step++) {
            cr_assert(eq(i64, feed(errs[i], CLIENT_H1_PUT, step), (int64_t)strlen(errs[i])));
            /* Line breaks and tabs are spaces (the trailing ones go when the request ends). */
            cr_assert(eq(str, ph.result.message, i ? "blob is too large  " : "blob is too large "),
                      "case %zu step %zu: '%s'", i, step, ph.result.message);
        }
    }
    /* A long body is cut to the room; a 2xx body is never kept. */
    static char big[1200];
    int n = snprintf(big, sizeof(big), "HTTP/1.1 503 Busy\r\nContent-Length: 1000\r\n\r\n");
    memset(big + n, 'x', 1000);
    cr_assert(eq(i64, feed(big, CLIENT_H1_GET, 7), (int64_t)strlen(big)));
    cr_assert(eq(sz, strlen(ph.result.message), CLIENT_H1_MESSAGE_MAX - 1));
    cr_assert(
        eq(i64, feed("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", CLIENT_H1_GET, 1), 40));
    cr_assert(eq(str, ph.result.message, ""));
}

/* What on_body saw of the last response. */
static char seen[64];
static size_t seen_len;

static void collect(struct client_h1 *h, const uint8_t *p, size_t len)
{
    (void)h;
    cr_assert(le(sz, seen_len + len, sizeof(seen)));
    memcpy(seen + seen_len, p, len);
    seen_len += len;
}

/* A load generator checks the body it got (ringcas bench's http-get): on_body sees every
 * byte of a 2xx body, de-chunked, and the answer's Content-Encoding is reported. */
Test(client_h1, body_pieces_and_content_encoding)
{
    static const struct {
        const char *text;
        uint8_t encoding;
        const char *body; /* what on_body sees */
    } cases[] = {
        { "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", CLIENT_H1_ENC_IDENTITY, "hello" },
        { ("HTTP/1.1 200 OK\r\nContent-Encoding: ZSTD\r\nTransfer-Encoding: chunked\r\n\r\n"
           "3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"),
          CLIENT_H1_ENC_ZSTD, "hello" },
        { "HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: 2\r\n\r\nok",
          CLIENT_H1_ENC_IDENTITY, "ok" },
        { "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok",
          CLIENT_H1_ENC_OTHER, "ok" },
        { "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy", CLIENT_H1_ENC_IDENTITY, "" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t step = 1; step <= strlen(cases[i].text); step++) {
            seen_len = 0;
            ph.on_body = collect;
            cr_assert(
                eq(i64, feed(cases[i].text, CLIENT_H1_GET, step), (int64_t)strlen(cases[i].text)));
            cr_assert(eq(u8, ph.result.encoding, cases[i].encoding), "case %zu", i);
            cr_assert(eq(sz, seen_len, strlen(cases[i].body)), "case %zu step %zu", i, step);
            cr_assert(eq(int, memcmp(seen, cases[i].body, seen_len), 0));
        }
    }
    ph.on_body = NULL;
}

Test(client_h1, keep_alive_and_close)
{
    feed("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", CLIENT_H1_GET, 64);
    cr_assert(client_h1_parse_is_done(&ph));
    cr_assert(not(ph.keep_alive));
    feed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", CLIENT_H1_GET, 64);
    cr_assert(not(ph.keep_alive));
    feed("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", CLIENT_H1_GET,
         64);
    cr_assert(ph.keep_alive);
    /* No length: the body runs to the close, and the connection cannot be reused. */
    feed("HTTP/1.1 200 OK\r\n\r\nabc", CLIENT_H1_GET, 64);
    cr_assert(not(client_h1_parse_is_done(&ph)));
    cr_assert(eq(u64, ph.result.body_len, 3));
    cr_assert(not(ph.keep_alive));
}

Test(client_h1, head_and_204_have_no_body)
{
    feed("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", CLIENT_H1_HEAD, 64);
    cr_assert(client_h1_parse_is_done(&ph));
    cr_assert(eq(u64, ph.result.body_len, 0));
    feed("HTTP/1.1 204 No Content\r\n\r\n", CLIENT_H1_PUT, 64);
    cr_assert(client_h1_parse_is_done(&ph));
}

Test(client_h1, rejects_malformed_responses)
{
    cr_assert(eq(i64, feed("HTTP/2 200 OK\r\n\r\n", CLIENT_H1_GET, 64), -EPROTO));
    cr_assert(eq(i64, feed("HTTP/1.1 2x0 OK\r\n\r\n", CLIENT_H1_GET, 64), -EPROTO));
    cr_assert(
        eq(i64, feed("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", CLIENT_H1_GET, 64), -EPROTO));
    cr_assert(eq(
        i64, feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", CLIENT_H1_GET, 64),
        -EPROTO));
    cr_assert(
        eq(i64,
           feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXY", CLIENT_H1_GET, 64),
           -EPROTO));
    /* A head that never ends is refused once it fills the buffer. */
    char *big = malloc(CLIENT_H1_HEAD_MAX + 64);
    memset(big, 'a', CLIENT_H1_HEAD_MAX + 63);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    big[CLIENT_H1_HEAD_MAX + 63] = '\0';
    cr_assert(eq(i64, feed(big, CLIENT_H1_GET, 4096), -EPROTO));
    free(big);
}

/* ---- live ---- */

/* Reads one request from <fd> (its body read and dropped); false at EOF. */
static bool read_request(int fd)
{
    static char head[4096]; /* one server thread at a time */
    size_t have = 0;
    /* Byte by byte up to the head's end: the body is never read into <head>. */
    while (have < 4 || memcmp(head + have - 4, "\r\n\r\n", 4) != 0) {
        if (have + 1 >= sizeof(head) || recv(fd, head + have, 1, 0) != 1) return false;
        have++;
    }
    head[have] = '\0';
    char *cl = strstr(head, "Content-Length: ");
    size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
    static char sink[65536];
    while (body > 0) {
        ssize_t n = recv(fd, sink, body < sizeof(sink) ? body : sizeof(sink), 0);
        if (n <= 0) return false;
        body -= (size_t)n;
    }
    return true;
}

/* Answers the requests of one connection: the third response closes it. */
static void *keep_alive_server(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept(lfd, NULL, NULL);
    static const char *const resp[3] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
    };
    for (int i = 0; i < 3 && read_request(fd); i++) {
        send(fd, resp[i], strlen(resp[i]), MSG_NOSIGNAL);
    }
    close(fd);
    return NULL;
}

struct live {
    int dones;
    bool closed;
    int reason;
};

static void live_done(struct client_h1 *h)
{
    ((struct live *)h->user)->dones++;
}

static void live_closed(struct client_h1 *h, int reason)
{
    struct live *l = h->user;
    l->closed = true;
    l->reason = reason;
}

static void wait_dones(struct tctx *t, struct live *l, int want)
{
    uint64_t start = base_clock_now_ns();
    while (l->dones < want) {
        cr_assert(lt(u64, tctx_ms_since(start), 5000), "timed out");
        cr_assert(ge(int, ring_core_tick(t->core, 50), 0));
    }
}

Test(client_h1, live_requests_share_one_connection)
{
    uint16_t port;
    int lfd = fake_silent_listener(&port);
    pthread_t th;
    pthread_create(&th, NULL, keep_alive_server, &lfd);
    struct tctx *t = tctx_new();
    struct client_addr addr;
    fake_addr(port, &addr);
    struct client_h1 *h = calloc(1, sizeof(*h));
    struct live l = { 0 };
    h->user = &l;
    struct client_h1_options o = { .connect_timeout_ms = 5000, .io_timeout_ms = 5000 };
    cr_assert(eq(int, client_h1_open(h, &t->cl, &addr, &o, live_closed), 0));
    struct client_h1_request r = { .method = CLIENT_H1_GET, .path = "/a", .done = live_done };
    cr_assert(eq(int, client_h1_request_start(h, &r), 0)); /* while connecting */
    cr_assert(eq(int, client_h1_request_start(h, &r), -EBUSY));
    wait_dones(t, &l, 1);
    cr_assert(eq(int, h->result.err, 0));
    cr_assert(eq(int, h->result.status, 200));
    cr_assert(eq(u64, h->result.body_len, 3));
    static uint8_t body[100000];
    memset(body, 'x', sizeof(body));
    struct client_h1_request put = { .method = CLIENT_H1_PUT,
                                     .path = "/b",
                                     .body = body,
                                     .body_len = sizeof(body),
                                     .done = live_done };
    cr_assert(eq(int, client_h1_request_start(h, &put), 0));
    wait_dones(t, &l, 2);
    cr_assert(eq(int, h->result.status, 201));
    cr_assert(eq(int, client_h1_request_start(h, &r), 0));
    wait_dones(t, &l, 3);
    cr_assert(eq(int, h->result.err, 0));
    cr_assert(eq(int, h->result.status, 404));
    cr_assert(eq(u64, h->result.body_len, 2));
    tctx_wait(t, &l.closed, 5000); /* the server said Connection: close */
    cr_assert(eq(int, l.reason, 0));
    cr_assert(eq(int, client_h1_request_start(h, &r), -EPIPE));
    pthread_join(th, NULL);
    free(h);
    tctx_close(t);
    close(lfd);
}

Test(client_h1, a_silent_server_times_out_the_request)
{
    uint16_t port;
    int lfd = fake_silent_listener(&port);
    struct tctx *t = tctx_new();
    struct client_addr addr;
    fake_addr(port, &addr);
    struct client_h1 *h = calloc(1, sizeof(*h));
    struct live l = { 0 };
    h->user = &l;
    struct client_h1_options o = { .connect_timeout_ms = 5000, .io_timeout_ms = 200 };
    cr_assert(eq(int, client_h1_open(h, &t->cl, &addr, &o, live_closed), 0));
    struct client_h1_request r = { .method = CLIENT_H1_GET, .path = "/a", .done = live_done };
    uint64_t start = base_clock_now_ns();
    cr_assert(eq(int, client_h1_request_start(h, &r), 0));
    wait_dones(t, &l, 1);
    cr_assert(eq(int, h->result.err, -ETIMEDOUT));
    cr_assert(ge(u64, tctx_ms_since(start), 190));
    tctx_wait(t, &l.closed, 5000);
    cr_assert(eq(int, l.reason, -ETIMEDOUT));
    free(h);
    tctx_close(t);
    close(lfd);
}

Test(client_h1, close_fails_the_request_in_flight)
{
    uint16_t port;
    int lfd = fake_silent_listener(&port);
    struct tctx *t = tctx_new();
    struct client_addr addr;
    fake_addr(port, &addr);
    struct client_h1 *h = calloc(1, sizeof(*h));
    struct live l = { 0 };
    h->user = &l;
    struct client_h1_options o = { .connect_timeout_ms = 5000, .io_timeout_ms = 5000 };
    cr_assert(eq(int, client_h1_open(h, &t->cl, &addr, &o, live_closed), 0));
    struct client_h1_request r = { .method = CLIENT_H1_GET, .path = "/a", .done = live_done };
    cr_assert(eq(int, client_h1_request_start(h, &r), 0));
    for (int i = 0; i < 5; i++) {
        cr_assert(ge(int, ring_core_tick(t->core, 10), 0));
    }
    client_h1_close(h);
    wait_dones(t, &l, 1);
    cr_assert(eq(int, h->result.err, -ECANCELED));
    tctx_wait(t, &l.closed, 5000);
    cr_assert(eq(int, l.reason, 0));
    free(h);
    tctx_close(t);
    close(lfd);
}
