#include "util.h"

#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "fake.h"
#include "ring/buf.h"

void tctx_conn_closed(struct client_conn *conn, int reason)
{
    struct tctx *t = conn->user;
    t->conn_closed = true;
    t->conn_reason = reason;
}

struct tctx *tctx_new(void)
{
    struct tctx *t = calloc(1, sizeof(*t));
    struct ring_core_options o;
    client_core_options(&o);
    char why[256];
    int rc = ring_core_create(&o, 0, &t->core, why, sizeof(why));
    cr_assert(eq(int, rc, 0), "%s", why);
    client_init(&t->cl, t->core);
    t->conn_closed = true;
    return t;
}

struct tctx *tctx_open_addr(const struct client_addr *addr, uint32_t io_timeout_ms)
{
    struct tctx *t = tctx_new();
    struct client_conn_options co;
    client_conn_options_default(&co);
    co.io_timeout_ms = io_timeout_ms;
    co.connect_timeout_ms = io_timeout_ms;
    t->conn.user = t;
    t->conn_closed = false;
    cr_assert(eq(int, client_conn_open(&t->conn, &t->cl, addr, &co, tctx_conn_closed), 0));
    return t;
}

struct tctx *tctx_open(uint16_t port, uint32_t io_timeout_ms)
{
    struct client_addr addr;
    fake_addr(port, &addr);
    return tctx_open_addr(&addr, io_timeout_ms);
}

void tctx_wait(struct tctx *t, const bool *flag, uint32_t ms)
{
    uint64_t start = base_clock_now_ns();
    while (!*flag) {
        cr_assert(lt(u64, tctx_ms_since(start), ms), "timed out waiting");
        int rc = ring_core_tick(t->core, 50);
        cr_assert(ge(int, rc, 0));
    }
}

void tctx_close(struct tctx *t)
{
    if (!t->conn_closed) client_conn_close(&t->conn);
    tctx_wait(t, &t->conn_closed, 10000);
    uint64_t start = base_clock_now_ns();
    while (!client_is_idle(&t->cl)) {
        cr_assert(lt(u64, tctx_ms_since(start), 10000), "client never went idle");
        cr_assert(ge(int, ring_core_tick(t->core, 50), 0));
    }
    struct ring_counters_snapshot s;
    memset(&s, 0, sizeof(s));
    /* One more tick lets deferred closes finish. */
    cr_assert(ge(int, ring_core_tick(t->core, 0), 0));
    ring_counters_add_to(ring_core_counters(t->core), &s);
    cr_assert(eq(u64, s.ops_in_flight, 0));
    cr_assert(eq(u64, s.bufs_out, 0));
    cr_assert(eq(u64, s.conns, 0));
    cr_assert(eq(u64, base_counter_get(&t->cl.counters.streams), 0));
    cr_assert(eq(u64, base_counter_get(&t->cl.counters.segs_in_send), 0));
    client_deinit(&t->cl);
    ring_core_destroy(t->core);
    free(t);
}

bool tctx_wait_counter(struct tctx *t, _Atomic uint64_t *counter, uint64_t want, uint32_t ms)
{
    uint64_t start = base_clock_now_ns();
    while (atomic_load(counter) < want) {
        if (tctx_ms_since(start) > ms) return false;
        cr_assert(ge(int, ring_core_tick(t->core, 10), 0));
    }
    return true;
}

void tctx_done(struct client_call *call)
{
    *(bool *)call->user = true;
}

void tctx_fill(uint8_t *p, size_t len, uint32_t seed, bool text)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = text ? (uint8_t)("ringcas blob storage "[(x >> 8) % 21]) : (uint8_t)x;
    }
}

uint64_t tctx_ms_since(uint64_t start_ns)
{
    return (base_clock_now_ns() - start_ns) / BASE_NS_PER_MS;
}
