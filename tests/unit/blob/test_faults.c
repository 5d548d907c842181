/*
 * A fault sweep in the manner of SQLite's: the same small scenario runs again and again,
 * with operation 1, 2, ... n of the simulated disk failing in turn (EIO, ENOSPC, a short
 * write, EAGAIN). Whatever fails, the engine must answer with an error or succeed, never
 * acknowledge what is not stored, never serve a wrong byte, keep its gauges at zero, and
 * work again once the disk does (also after a restart).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "harness.h"

#define BLOBS 4

struct scenario {
    uint8_t *data[BLOBS];
    size_t len[BLOBS];
    struct blob_key key[BLOBS];
    int put_rc[BLOBS];
};

static void scenario_init(struct scenario *sc, uint64_t seed)
{
    /* A small blob, one of a few chunks, one larger than a write buffer, an AC value. */
    size_t lens[BLOBS] = { 700, 3 * 4096 + 5, 150000, 900 };
    for (int i = 0; i < BLOBS; i++) {
        sc->len[i] = lens[i];
        sc->data[i] = malloc(lens[i]);
        th_fill(sc->data[i], lens[i], seed * 10 + (uint64_t)i, i % 2 == 0);
        if (i == BLOBS - 1) {
            uint8_t k[BLOB_HASH_SIZE] = { 0xac, (uint8_t)seed };
            blob_key_ac(&sc->key[i], k, lens[i]);
        } else {
            th_key_of(&sc->key[i], sc->data[i], lens[i]);
        }
    }
}

static void scenario_free(struct scenario *sc)
{
    for (int i = 0; i < BLOBS; i++)
        free(sc->data[i]);
}

static struct blob_key lookup_key(const struct scenario *sc, int i)
{
    struct blob_key k = sc->key[i];
    if (k.kind == BLOB_KIND_AC) k.size = 0;
    return k;
}

/* Reads blob <i>: either missing or exactly right. Returns true when present. */
static bool check_exact(struct th *t, const struct scenario *sc, int i)
{
    struct blob_key k = lookup_key(sc, i);
    uint8_t *out = NULL;
    size_t n = 0;
    int rc = th_get(t, &k, 0, (i % 2) ? BLOB_ENCODING_ZSTD : BLOB_ENCODING_IDENTITY, &out, &n);
    if (rc == -ENOENT) return false;
    cr_assert(eq(int, rc, 0), "blob %d: %d", i, rc);
    cr_assert(eq(sz, n, sc->len[i]));
    cr_assert(memcmp(out, sc->data[i], n) == 0, "blob %d: wrong bytes", i);
    free(out);
    return true;
}

static bool gauges_are_zero(struct th *t)
{
    struct blob_counters_snapshot c = th_counters(t);
    return c.uploads == 0 && c.readers == 0 && c.io_in_flight == 0 && c.bufs == 0;
}

/* One run: the fault at op <nth>, then the whole scenario checked. Returns how many puts
 * failed. */
static int run_one(int fault, uint64_t nth, uint64_t seed)
{
    struct th t = { 0 };
    th_open_sim(&t, seed);
    th_settle(&t);
    struct scenario sc;
    scenario_init(&sc, seed);
    blob_io_sim_fail_at(t.io, nth, fault);
    for (int i = 0; i < BLOBS; i++) {
        sc.put_rc[i] = th_put(&t, &sc.key[i], sc.data[i], sc.len[i], 5000, 0);
        bool known = sc.put_rc[i] == 0 || sc.put_rc[i] == -EIO || sc.put_rc[i] == -ENOSPC;
        cr_assert(known, "fault %d at %llu: blob %d gave %d", fault, (unsigned long long)nth, i,
                  sc.put_rc[i]);
    }
    th_settle(&t);
    cr_assert(gauges_are_zero(&t));
    /* What was acknowledged is there and exact; nothing else is served wrong. */
    blob_io_sim_fail_at(t.io, 0, 0);
    for (int i = 0; i < BLOBS; i++) {
        bool present = check_exact(&t, &sc, i);
        if (sc.put_rc[i] == 0)
            cr_assert(present, "fault %d at %llu: acknowledged blob %d missing", fault,
                      (unsigned long long)nth, i);
    }
    /* The engine works again: what failed uploads now. */
    for (int i = 0; i < BLOBS; i++) {
        if (sc.put_rc[i] == 0) continue;
        int rc = th_put(&t, &sc.key[i], sc.data[i], sc.len[i], 0, 0);
        cr_assert(rc == 0 || rc == -EEXIST, "retry of blob %d: %d", i, rc);
    }
    th_reopen(&t);
    for (int i = 0; i < BLOBS; i++)
        cr_assert(check_exact(&t, &sc, i), "fault %d at %llu: blob %d lost at restart", fault,
                  (unsigned long long)nth, i);
    int failed = 0;
    for (int i = 0; i < BLOBS; i++)
        failed += sc.put_rc[i] != 0;
    scenario_free(&sc);
    th_close(&t);
    return failed;
}

static void sweep(int fault, uint64_t seed)
{
    int failed_runs = 0;
    int clean_runs = 0;
    /* Enough operations to cover the puts, a seal or two, the reads. */
    for (uint64_t nth = 1; nth <= 60; nth++) {
        if (run_one(fault, nth, seed + nth) > 0)
            failed_runs++;
        else
            clean_runs++;
    }
    /* The sweep reached the puts (some failed) and went past them (some did not). */
    cr_assert(gt(int, failed_runs, 5), "only %d runs saw a failed put", failed_runs);
    cr_assert(gt(int, clean_runs, 0));
}

Test(blob_faults, every_operation_failing_with_eio, .timeout = 120)
{
    sweep(-EIO, 1000);
}

Test(blob_faults, every_operation_failing_with_enospc, .timeout = 120)
{
    sweep(-ENOSPC, 2000);
}

Test(blob_faults, every_write_coming_back_short, .timeout = 120)
{
    sweep(BLOB_IO_SIM_SHORT, 3000);
}

Test(blob_faults, every_operation_bouncing_with_eagain, .timeout = 120)
{
    for (uint64_t nth = 1; nth <= 60; nth++) {
        struct th t = { 0 };
        th_open_sim(&t, 4000 + nth);
        th_settle(&t);
        struct scenario sc;
        scenario_init(&sc, nth);
        blob_io_sim_fail_at(t.io, nth, -EAGAIN);
        /* A bounce is retried: nothing fails (an open or fsync bounce is an error). */
        for (int i = 0; i < BLOBS; i++) {
            int rc = th_put(&t, &sc.key[i], sc.data[i], sc.len[i], 5000, 0);
            cr_assert(rc == 0 || rc == -EAGAIN, "bounce at %llu: blob %d gave %d",
                      (unsigned long long)nth, i, rc);
            if (rc < 0) cr_assert(eq(int, th_put(&t, &sc.key[i], sc.data[i], sc.len[i], 0, 0), 0));
        }
        for (int i = 0; i < BLOBS; i++)
            cr_assert(check_exact(&t, &sc, i));
        scenario_free(&sc);
        th_close(&t);
    }
}

Test(blob_faults, faults_during_recovery_fail_the_open_cleanly, .timeout = 120)
{
    /* A store with sealed segments and an unsealed tail, opened with op n failing. */
    struct th t = { 0 };
    th_open_sim(&t, 5000);
    struct scenario sc;
    scenario_init(&sc, 5);
    for (int i = 0; i < BLOBS; i++)
        cr_assert(eq(int, th_put(&t, &sc.key[i], sc.data[i], sc.len[i], 0, 0), 0));
    static uint8_t filler[9000];
    for (uint64_t i = 0; i < 20; i++) {
        th_fill(filler, sizeof(filler), 100 + i, false);
        struct blob_key k;
        th_key_of(&k, filler, sizeof(filler));
        cr_assert(eq(int, th_put(&t, &k, filler, sizeof(filler), 0, 0), 0));
    }
    th_close_store(&t);
    int opened = 0;
    for (uint64_t nth = 1; nth <= 40; nth++) {
        blob_io_sim_fail_at(t.io, nth, -EIO);
        int rc = th_open_store(&t);
        blob_io_sim_fail_at(t.io, 0, 0);
        if (rc == 0) {
            opened++;
            th_close_store(&t);
        } else {
            cr_assert(eq(int, rc, -EIO), "open with op %llu failing: %d", (unsigned long long)nth,
                      rc);
        }
        cr_assert(eq(u32, blob_io_sim_open_fds(t.io), 0), "fds leaked when open failed");
    }
    cr_assert(gt(int, opened, 0), "late faults hit nothing recovery does");
    cr_assert(eq(int, th_open_store(&t), 0));
    for (int i = 0; i < BLOBS; i++)
        cr_assert(check_exact(&t, &sc, i));
    scenario_free(&sc);
    th_close(&t);
}
