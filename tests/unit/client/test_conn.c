/*
 * Connections and unary calls: GetCapabilities and FindMissingBlobs round trips, a refused
 * connect, closing a connection with calls in flight, a server that goes away, calls on a
 * socketpair peer that never answers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "client/cas.h"
#include "client/cli.h"
#include "fake.h"
#include "proto/build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "util.h"

struct done_flag {
    bool done;
    int order; /* position among the completions of a test */
};

static int completions;

static void flag_done(struct client_call *call)
{
    struct done_flag *d = call->user;
    d->done = true;
    d->order = ++completions;
}

static struct client_call_options opts(struct done_flag *d, uint32_t deadline_ms)
{
    struct client_call_options o = { .deadline_ms = deadline_ms, .done = flag_done, .user = d };
    return o;
}

Test(client_conn, capabilities_round_trip)
{
    struct fake_server *f = fake_start(NULL);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_unary u;
    client_unary_init(&u, &t->cl);
    struct done_flag d = { 0 };
    struct client_call_options o = opts(&d, 5000);
    cr_assert(eq(int, client_cas_capabilities_start(&u, &t->conn, "main", &o), 0));
    tctx_wait(t, &d.done, 5000);
    cr_assert(eq(int, u.call.result.err, 0), "%s", u.call.result.message);
    const Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = (const void *)u.response;
    cr_assert(caps && caps->cache_capabilities);
    cr_assert(eq(i64, caps->cache_capabilities->max_batch_total_size_bytes, 1234));
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->timeout_headers), 1));
    cr_assert(gt(u64, base_counter_get(&t->cl.pb_mem.blocks), 0));
    client_unary_deinit(&u);
    cr_assert(eq(u64, base_counter_get(&t->cl.pb_mem.blocks), 0));
    tctx_close(t);
    fake_stop(f);
}

Test(client_conn, find_missing_lists_what_the_server_lacks)
{
    struct fake_server *f = fake_start(NULL);
    fake_add_blob(f, "present", 7);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_digest ds[3];
    client_digest_buf("present", 7, &ds[0]);
    client_digest_buf("absent", 6, &ds[1]);
    client_digest_buf("", 0, &ds[2]);
    struct client_unary u;
    client_unary_init(&u, &t->cl);
    struct done_flag d = { 0 };
    struct client_call_options o = opts(&d, 0);
    cr_assert(eq(int, client_cas_find_missing_start(&u, &t->conn, "", ds, 3, &o), 0));
    tctx_wait(t, &d.done, 5000);
    cr_assert(eq(int, u.call.result.err, 0), "%s", u.call.result.message);
    cr_assert(not(client_cas_is_missing(&u, &ds[0])));
    cr_assert(client_cas_is_missing(&u, &ds[1]));
    cr_assert(client_cas_is_missing(&u, &ds[2]));
    client_unary_deinit(&u);
    tctx_close(t);
    fake_stop(f);
}

Test(client_conn, refused_connect_fails_calls_as_unavailable)
{
    uint16_t port;
    close(fake_silent_listener(&port)); /* nothing listens there any more */
    struct tctx *t = tctx_open(port, 5000);
    struct client_unary u;
    client_unary_init(&u, &t->cl);
    struct done_flag d = { 0 };
    struct client_call_options o = opts(&d, 0);
    cr_assert(eq(int, client_cas_capabilities_start(&u, &t->conn, "", &o), 0));
    tctx_wait(t, &d.done, 5000);
    cr_assert(eq(int, u.call.result.err, -ECONNREFUSED), "%s", u.call.result.message);
    cr_assert(eq(int, client_cli_exit_code(u.call.result.err), CLIENT_EXIT_UNAVAILABLE));
    tctx_wait(t, &t->conn_closed, 5000);
    cr_assert(eq(int, t->conn_reason, -ECONNREFUSED));
    client_unary_deinit(&u);
    tctx_close(t);
}

Test(client_conn, close_fails_calls_in_flight_before_reporting)
{
    struct fake_config cfg = { .no_answer = true };
    struct fake_server *f = fake_start(&cfg);
    struct tctx *t = tctx_open(fake_port(f), 5000);

    enum {
        N = 10
    };
    struct client_unary *us = calloc(N, sizeof(*us));
    struct done_flag ds[N] = { 0 };
    completions = 0;
    for (int i = 0; i < N; i++) {
        client_unary_init(&us[i], &t->cl);
        struct client_call_options o = opts(&ds[i], 0);
        cr_assert(eq(int, client_cas_capabilities_start(&us[i], &t->conn, "", &o), 0));
    }
    cr_assert(tctx_wait_counter(t, &fake_stats(f)->streams, N, 5000));
    client_conn_close(&t->conn);
    cr_assert(not(client_conn_is_usable(&t->conn)));
    tctx_wait(t, &t->conn_closed, 5000);
    cr_assert(eq(int, t->conn_reason, 0));
    for (int i = 0; i < N; i++) {
        cr_assert(ds[i].done);
        cr_assert(eq(int, us[i].call.result.err, -ECANCELED));
        client_unary_deinit(&us[i]);
    }
    free(us);
    tctx_close(t);
    fake_stop(f);
}

/* <out>: a name that resolved to 127.0.0.1:<first>, then 127.0.0.1:<second>. */
static void two_addrs(uint16_t first, uint16_t second, struct client_addr *out)
{
    struct client_addr next;
    fake_addr(first, out);
    fake_addr(second, &next);
    cr_assert(eq(u32, out->count, 1));
    out->addrs[1] = next.addrs[0];
    out->lens[1] = next.lens[0];
    out->count = 2;
}

/* A name with several addresses (localhost: ::1, then 127.0.0.1): the first one refuses, the
 * connect moves on to the next, and the call goes through. */
Test(client_conn, refused_address_moves_on_to_the_next)
{
    struct fake_server *f = fake_start(NULL);
    uint16_t refused;
    close(fake_silent_listener(&refused)); /* nothing listens there any more */
    struct client_addr addr;
    two_addrs(refused, fake_port(f), &addr);
    struct tctx *t = tctx_open_addr(&addr, 5000);
    struct client_unary u;
    client_unary_init(&u, &t->cl);
    struct done_flag d = { 0 };
    struct client_call_options o = opts(&d, 5000);
    cr_assert(eq(int, client_cas_capabilities_start(&u, &t->conn, "", &o), 0));
    tctx_wait(t, &d.done, 5000);
    cr_assert(eq(int, u.call.result.err, 0), "%s", u.call.result.message);
    client_unary_deinit(&u);
    tctx_close(t);
    fake_stop(f);
}

/* Every address refuses: the connect fails with the last one's error. */
Test(client_conn, every_address_refused_fails_with_the_last_error)
{
    uint16_t refused;
    close(fake_silent_listener(&refused));
    struct client_addr addr;
    two_addrs(refused, refused, &addr);
    struct tctx *t = tctx_open_addr(&addr, 5000);
    tctx_wait(t, &t->conn_closed, 5000);
    cr_assert(eq(int, t->conn_reason, -ECONNREFUSED));
    tctx_close(t);
}

Test(client_conn, server_going_away_fails_its_calls)
{
    struct fake_config cfg = { .no_answer = true };
    struct fake_server *f = fake_start(&cfg);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_unary u;
    client_unary_init(&u, &t->cl);
    struct done_flag d = { 0 };
    struct client_call_options o = opts(&d, 0);
    cr_assert(eq(int, client_cas_capabilities_start(&u, &t->conn, "", &o), 0));
    cr_assert(tctx_wait_counter(t, &fake_stats(f)->streams, 1, 5000));
    fake_stop(f);
    tctx_wait(t, &d.done, 5000);
    cr_assert(eq(int, u.call.result.err, -ECONNRESET), "%s", u.call.result.message);
    client_unary_deinit(&u);
    tctx_close(t);
}

Test(client_conn, socketpair_peer_that_never_answers_times_out)
{
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0));
    struct tctx *t = tctx_new();
    struct client_conn_options co;
    client_conn_options_default(&co);
    co.io_timeout_ms = 200;
    t->conn.user = t;
    t->conn_closed = false;
    cr_assert(eq(int, client_conn_adopt(&t->conn, &t->cl, sv[0], &co, tctx_conn_closed), 0));
    struct client_unary u;
    client_unary_init(&u, &t->cl);
    struct done_flag d = { 0 };
    struct client_call_options o = opts(&d, 0);
    uint64_t start = base_clock_now_ns();
    cr_assert(eq(int, client_cas_capabilities_start(&u, &t->conn, "", &o), 0));
    tctx_wait(t, &d.done, 5000);
    uint64_t ms = tctx_ms_since(start);
    cr_assert(eq(int, u.call.result.err, -ETIMEDOUT), "%s", u.call.result.message);
    cr_assert(ge(u64, ms, 190));
    cr_assert(lt(u64, ms, 2000));
    /* The peer saw the client's preface and request: the client did write. */
    char buf[64];
    cr_assert(gt(int, (int)recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT), 0));
    client_unary_deinit(&u);
    tctx_close(t);
    close(sv[1]);
}

Test(client_conn, calls_cannot_start_on_a_closed_connection)
{
    struct fake_server *f = fake_start(NULL);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    client_conn_close(&t->conn);
    struct client_unary u;
    client_unary_init(&u, &t->cl);
    struct done_flag d = { 0 };
    struct client_call_options o = opts(&d, 0);
    cr_assert(eq(int, client_cas_capabilities_start(&u, &t->conn, "", &o), -EPIPE));
    client_unary_deinit(&u);
    tctx_close(t);
    fake_stop(f);
}
