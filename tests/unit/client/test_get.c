/*
 * Streaming get against the fake server: round trips, verification, not found, early close,
 * pause and resume, deadlines, silent servers, many concurrent gets on one connection.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "client/get.h"
#include "fake.h"
#include "util.h"

/* What a test's sink gathers. */
struct sink {
    bool done;
    uint8_t *buf;
    size_t len;
    size_t cap;
    bool pause_each; /* pause after every sink call */
    uint64_t calls;
};

static int sink_fn(struct client_get *g, const uint8_t *p, size_t n)
{
    struct sink *s = g->call.user;
    cr_assert(gt(sz, n, 0));
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = realloc(s->buf, s->cap);
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->calls++;
    if (s->pause_each) client_get_pause(g);
    return 0;
}

static void sink_done(struct client_call *call)
{
    ((struct sink *)call->user)->done = true;
}

static struct client_get *new_get(struct tctx *t)
{
    struct client_get *g = malloc(sizeof(*g));
    cr_assert(eq(int, client_get_init(g, &t->cl), 0));
    return g;
}

static void free_get(struct client_get *g)
{
    client_get_deinit(g);
    free(g);
}

static void start_get(struct tctx *t, struct client_get *g, struct sink *s, const uint8_t *data,
                      size_t len, bool zstd, uint32_t deadline_ms)
{
    struct client_get_options o;
    client_get_options_default(&o);
    client_digest_buf(data, len, &o.digest);
    o.zstd = zstd;
    o.sink = sink_fn;
    o.call.done = sink_done;
    o.call.user = s;
    o.call.deadline_ms = deadline_ms;
    cr_assert(eq(int, client_get_start(g, &t->conn, &o), 0));
}

static void round_trip(size_t len, bool zstd, bool text, uint32_t chunk)
{
    struct fake_config cfg = { .read_chunk = chunk };
    struct fake_server *f = fake_start(&cfg);
    uint8_t *data = malloc(len + 1);
    tctx_fill(data, len, 11, text);
    fake_add_blob(f, data, len);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_get *g = new_get(t);
    struct sink s = { 0 };
    start_get(t, g, &s, data, len, zstd, 0);
    tctx_wait(t, &s.done, 20000);
    cr_assert(eq(int, g->call.result.err, 0), "%s", g->call.result.message);
    cr_assert(eq(sz, s.len, len));
    cr_assert(eq(u64, g->received, len));
    cr_assert(len == 0 || memcmp(s.buf, data, len) == 0);
    cr_assert(ge(u64, g->call.timing.headers_ns, g->call.timing.start_ns));
    free_get(g);
    tctx_close(t);
    fake_stop(f);
    free(s.buf);
    free(data);
}

Test(client_get, identity_round_trip)
{
    round_trip((3u << 20) + 5, false, false, 0);
}

Test(client_get, identity_round_trip_with_small_messages)
{
    round_trip(300000, false, false, 1000);
}

Test(client_get, zstd_round_trip_decompresses_inline)
{
    round_trip((3u << 20) + 5, true, false, 0);
    /* Very compressible: one DATA frame expands to many output buffers. */
    round_trip(16u << 20, true, true, 0);
}

Test(client_get, empty_and_one_byte_blobs)
{
    round_trip(0, false, false, 0);
    round_trip(0, true, false, 0);
    round_trip(1, false, false, 0);
    round_trip(1, true, false, 0);
}

static int get_once(uint8_t mode, bool zstd, char *msg, size_t msg_size)
{
    struct fake_config cfg = { .read_mode = mode };
    struct fake_server *f = fake_start(&cfg);
    size_t len = 200000;
    uint8_t *data = malloc(len);
    tctx_fill(data, len, 13, false);
    fake_add_blob(f, data, len);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_get *g = new_get(t);
    struct sink s = { 0 };
    start_get(t, g, &s, data, len, zstd, 0);
    tctx_wait(t, &s.done, 20000);
    int err = g->call.result.err;
    snprintf(msg, msg_size, "%s", g->call.result.message);
    cr_assert(le(sz, s.len, len)); /* never more than the digest's size reaches the sink */
    free_get(g);
    tctx_close(t);
    fake_stop(f);
    free(s.buf);
    free(data);
    return err;
}

Test(client_get, bytes_that_do_not_match_fail_verification)
{
    char msg[256];
    cr_assert(eq(int, get_once(FAKE_READ_CORRUPT, false, msg, sizeof(msg)), -EBADMSG));
    cr_assert(eq(int, get_once(FAKE_READ_CORRUPT, true, msg, sizeof(msg)), -EBADMSG));
    cr_assert(eq(int, get_once(FAKE_READ_SHORT, false, msg, sizeof(msg)), -EBADMSG));
    cr_assert(eq(int, get_once(FAKE_READ_LONG, false, msg, sizeof(msg)), -EBADMSG));
    cr_assert(eq(int, get_once(FAKE_READ_LONG, true, msg, sizeof(msg)), -EBADMSG));
}

/* One get with skip_verify from a fake server in <mode>; returns the error. */
static int get_unverified(uint8_t mode)
{
    struct fake_config cfg = { .read_mode = mode };
    struct fake_server *f = fake_start(&cfg);
    static uint8_t data[10000];
    tctx_fill(data, sizeof(data), 31, false);
    fake_add_blob(f, data, sizeof(data));
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_get *g = new_get(t);
    struct client_get_options o;
    client_get_options_default(&o);
    client_digest_buf(data, sizeof(data), &o.digest);
    bool done = false;
    o.call.done = tctx_done;
    o.call.user = &done;
    o.skip_verify = true;
    cr_assert(eq(int, client_get_start(g, &t->conn, &o), 0));
    tctx_wait(t, &done, 5000);
    int err = g->call.result.err;
    free_get(g);
    tctx_close(t);
    fake_stop(f);
    return err;
}

Test(client_get, skip_verify_still_checks_the_size)
{
    cr_assert(eq(int, get_unverified(FAKE_READ_CORRUPT), 0)); /* not hashed: not seen */
    cr_assert(eq(int, get_unverified(FAKE_READ_LONG), -EBADMSG));
    cr_assert(eq(int, get_unverified(FAKE_READ_SHORT), -EBADMSG));
}

Test(client_get, missing_blob_is_not_found)
{
    struct fake_server *f = fake_start(NULL);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_get *g = new_get(t);
    struct sink s = { 0 };
    start_get(t, g, &s, (const uint8_t *)"nope", 4, false, 0);
    tctx_wait(t, &s.done, 5000);
    cr_assert(eq(int, g->call.result.err, -ENOENT));
    cr_assert(eq(int, g->call.result.status, 5));
    cr_assert(eq(int, strcmp(client_err_str(g->call.result.err), "not found"), 0));
    free_get(g);
    tctx_close(t);
    fake_stop(f);
}

Test(client_get, early_close_resets_the_stream)
{
    struct fake_config cfg = { .read_mode = FAKE_READ_STALL, .stall_after = 100000 };
    struct fake_server *f = fake_start(&cfg);
    size_t len = 4u << 20;
    uint8_t *data = malloc(len);
    tctx_fill(data, len, 17, false);
    fake_add_blob(f, data, len);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_get *g = new_get(t);
    struct sink s = { 0 };
    start_get(t, g, &s, data, len, false, 0);
    uint64_t start = base_clock_now_ns();
    while (s.len < 90000) {
        cr_assert(lt(u64, tctx_ms_since(start), 5000));
        cr_assert(ge(int, ring_core_tick(t->core, 10), 0));
    }
    client_get_close(g);
    tctx_wait(t, &s.done, 5000);
    cr_assert(eq(int, g->call.result.err, -ECANCELED));
    cr_assert(tctx_wait_counter(t, &fake_stats(f)->rst_cancel, 1, 2000));
    cr_assert(eq(u64, base_counter_get(&t->cl.counters.cancels), 1));
    free_get(g);
    tctx_close(t);
    fake_stop(f);
    free(s.buf);
    free(data);
}

/* Runs a get whose sink pauses every time; resumes after <hold_ms> of quiet each time. */
static void paused_get(bool zstd, uint32_t hold_ms)
{
    struct fake_server *f = fake_start(NULL);
    size_t len = (2u << 20) + 100;
    uint8_t *data = malloc(len);
    tctx_fill(data, len, 19, zstd);
    fake_add_blob(f, data, len);
    /* The I/O timeout is shorter than a pause: a paused reader is not a silent server. */
    struct tctx *t = tctx_open(fake_port(f), 300);
    struct client_get *g = new_get(t);
    struct sink s = { .pause_each = true };
    start_get(t, g, &s, data, len, zstd, 0);
    uint64_t start = base_clock_now_ns();
    bool held_long = false;
    while (!s.done) {
        cr_assert(lt(u64, tctx_ms_since(start), 30000));
        cr_assert(ge(int, ring_core_tick(t->core, 5), 0));
        if (!g->call.paused) continue;
        if (!held_long && hold_ms > 0) {
            uint64_t t0 = base_clock_now_ns();
            while (tctx_ms_since(t0) < hold_ms)
                cr_assert(ge(int, ring_core_tick(t->core, 20), 0));
            held_long = true;
        }
        client_get_resume(g);
    }
    cr_assert(eq(int, g->call.result.err, 0), "%s", g->call.result.message);
    cr_assert(eq(sz, s.len, len));
    cr_assert(memcmp(s.buf, data, len) == 0);
    cr_assert(gt(u64, s.calls, 10));
    free_get(g);
    tctx_close(t);
    fake_stop(f);
    free(s.buf);
    free(data);
}

Test(client_get, pause_and_resume_keep_every_byte)
{
    paused_get(false, 700);
    paused_get(true, 700);
}

Test(client_get, deadline_resets_a_stalled_read)
{
    struct fake_config cfg = { .read_mode = FAKE_READ_STALL, .stall_after = 10 };
    struct fake_server *f = fake_start(&cfg);
    uint8_t data[5000];
    tctx_fill(data, sizeof(data), 23, false);
    fake_add_blob(f, data, sizeof(data));
    struct tctx *t = tctx_open(fake_port(f), 10000);
    struct client_get *g = new_get(t);
    struct sink s = { 0 };
    uint64_t start = base_clock_now_ns();
    start_get(t, g, &s, data, sizeof(data), false, 250);
    tctx_wait(t, &s.done, 5000);
    cr_assert(eq(int, g->call.result.err, -ETIMEDOUT), "%s", g->call.result.message);
    cr_assert(ge(u64, tctx_ms_since(start), 240));
    cr_assert(lt(u64, tctx_ms_since(start), 2000));
    cr_assert(tctx_wait_counter(t, &fake_stats(f)->rst_cancel, 1, 2000));
    free_get(g);
    tctx_close(t);
    fake_stop(f);
    free(s.buf);
}

Test(client_get, silent_server_fails_after_the_io_timeout)
{
    uint16_t port;
    int lfd = fake_silent_listener(&port);
    struct tctx *t = tctx_open(port, 300);
    struct client_get *g = new_get(t);
    struct sink s = { 0 };
    uint64_t start = base_clock_now_ns();
    start_get(t, g, &s, (const uint8_t *)"x", 1, false, 0);
    tctx_wait(t, &s.done, 5000);
    cr_assert(eq(int, g->call.result.err, -ETIMEDOUT), "%s", g->call.result.message);
    cr_assert(ge(u64, tctx_ms_since(start), 250));
    cr_assert(lt(u64, tctx_ms_since(start), 3000));
    free_get(g);
    tctx_close(t);
    close(lfd);
}

Test(client_get, many_concurrent_gets_share_one_connection)
{
    struct fake_server *f = fake_start(NULL);
    uint8_t data[3000];
    tctx_fill(data, sizeof(data), 29, false);
    fake_add_blob(f, data, sizeof(data));
    struct tctx *t = tctx_open(fake_port(f), 5000);

    enum {
        N = 300
    }; /* over the fake's 100 concurrent streams: nghttp2 queues the rest */
    struct client_get **gs = calloc(N, sizeof(*gs));
    struct sink *ss = calloc(N, sizeof(*ss));
    for (int i = 0; i < N; i++) {
        gs[i] = new_get(t);
        start_get(t, gs[i], &ss[i], data, sizeof(data), i % 2 == 1, 0);
    }
    cr_assert(eq(u32, client_conn_calls(&t->conn), N));
    uint64_t start = base_clock_now_ns();
    for (int i = 0; i < N; i++) {
        while (!ss[i].done) {
            cr_assert(lt(u64, tctx_ms_since(start), 20000));
            cr_assert(ge(int, ring_core_tick(t->core, 10), 0));
        }
        cr_assert(eq(int, gs[i]->call.result.err, 0), "%d: %s", i, gs[i]->call.result.message);
        cr_assert(eq(sz, ss[i].len, sizeof(data)));
    }
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->streams), N));
    for (int i = 0; i < N; i++) {
        free_get(gs[i]);
        free(ss[i].buf);
    }
    free(gs);
    free(ss);
    tctx_close(t);
    fake_stop(f);
}
