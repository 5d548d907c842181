/*
 * The HTTP/1.1 GET: response parsing (Content-Length, chunked, close-delimited, truncated,
 * malformed) and live requests against a tiny thread server, including one that never
 * answers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "client/http.h"
#include "fake.h"
#include "util.h"

static int parse(const char *text, bool eof, int *status, char *body, size_t size, bool *complete)
{
    size_t len = strlen(text);
    char *buf = malloc(len + 1);
    memcpy(buf, text, len);
    struct client_http_response r;
    int rc = client_http_parse(buf, len, eof, &r);
    *complete = r.complete;
    *status = r.status;
    if (rc == 0 && r.complete) {
        cr_assert(lt(sz, r.body_len, size));
        memcpy(body, r.body, r.body_len + 1);
    }
    free(buf);
    return rc;
}

Test(client_http, parses_content_length_chunked_and_close_delimited)
{
    int status;
    char body[64];
    bool complete;
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, &status, body,
                       64, &complete),
                 0));
    cr_assert(complete);
    cr_assert(eq(int, status, 200));
    cr_assert(eq(str, body, "hello"));
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", false, &status, body, 64,
                       &complete),
                 0));
    cr_assert(not(complete));
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\ntransfer-encoding: "
                       "chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
                       false, &status, body, 64, &complete),
                 0));
    cr_assert(complete);
    cr_assert(eq(str, body, "abcde"));
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", false,
                       &status, body, 64, &complete),
                 0));
    cr_assert(not(complete));
    cr_assert(eq(
        int, parse("HTTP/1.0 404 Not Found\r\n\r\nnope", true, &status, body, 64, &complete), 0));
    cr_assert(complete);
    cr_assert(eq(int, status, 404));
    cr_assert(eq(str, body, "nope"));
}

Test(client_http, rejects_malformed_and_truncated_responses)
{
    int status;
    char body[64];
    bool complete;
    cr_assert(
        eq(int, parse("SSH-2.0-OpenSSH\r\n\r\n", true, &status, body, 64, &complete), -EPROTO));
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", true, &status, body, 64,
                       &complete),
                 -EPROTO));
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhello", false, &status, body,
                       64, &complete),
                 -EPROTO));
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false,
                       &status, body, 64, &complete),
                 -EPROTO));
    cr_assert(eq(int,
                 parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", true,
                       &status, body, 64, &complete),
                 -EPROTO));
    cr_assert(eq(int, parse("HTTP/1.1 200 OK\r\nContent-Len", true, &status, body, 64, &complete),
                 -EPROTO));
}

/* A server thread that answers one request with a chunked body in small pieces. */
static void *chunky(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept(lfd, NULL, NULL);
    char req[1024];
    ssize_t n = recv(fd, req, sizeof(req), 0);
    cr_assert(gt(int, (int)n, 0));
    const char *parts[] = { "HTTP/1.1 200 OK\r\nTransfer-Enc", "oding: chunked\r\n\r\n4\r\nring",
                            "\r\n3\r\ncas\r\n0\r\n", "\r\n" };
    for (size_t i = 0; i < 4; i++) {
        send(fd, parts[i], strlen(parts[i]), MSG_NOSIGNAL);
        struct timespec ts = { 0, 20 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    char b;
    recv(fd, &b, 1, 0); /* until the client closes */
    close(fd);
    return NULL;
}

struct http_wait {
    bool done;
};

static void http_done(struct client_http *h)
{
    ((struct http_wait *)h->user)->done = true;
}

Test(client_http, live_get_of_a_chunked_response)
{
    uint16_t port;
    int lfd = fake_silent_listener(&port);
    pthread_t th;
    pthread_create(&th, NULL, chunky, &lfd);
    struct tctx *t = tctx_new();
    struct client_addr addr;
    fake_addr(port, &addr);
    struct client_http *h = calloc(1, sizeof(*h));
    struct http_wait w = { false };
    h->user = &w;
    cr_assert(eq(int, client_http_get_start(h, &t->cl, &addr, "/metrics", 5000, http_done), 0));
    tctx_wait(t, &w.done, 5000);
    cr_assert(eq(int, h->err, 0));
    cr_assert(eq(int, h->status, 200));
    cr_assert(eq(int, strcmp(h->body, "ringcas"), 0));
    pthread_join(th, NULL);
    client_http_deinit(h);
    free(h);
    tctx_close(t);
    close(lfd);
}

Test(client_http, server_that_never_answers_times_out)
{
    uint16_t port;
    int lfd = fake_silent_listener(&port);
    struct tctx *t = tctx_new();
    struct client_addr addr;
    fake_addr(port, &addr);
    struct client_http *h = calloc(1, sizeof(*h));
    struct http_wait w = { false };
    h->user = &w;
    uint64_t start = base_clock_now_ns();
    cr_assert(eq(int, client_http_get_start(h, &t->cl, &addr, "/metrics", 250, http_done), 0));
    tctx_wait(t, &w.done, 5000);
    cr_assert(eq(int, h->err, -ETIMEDOUT));
    cr_assert(ge(u64, tctx_ms_since(start), 240));
    cr_assert(
        eq(int, client_http_get_start(h, &t->cl, &addr, "no-slash", 250, http_done), -EINVAL));
    client_http_deinit(h);
    free(h);
    tctx_close(t);
    close(lfd);
}
