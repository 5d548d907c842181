/*
 * The segment writer under failure: a failed or short write and a failed fsync are never
 * acknowledged, the segment is abandoned and never trusted to a later fsync, the next
 * upload goes to a new segment, earlier acknowledged blobs stay readable (also after a
 * restart). Group commit batches fsyncs; --sync=always syncs each commit; segments seal at
 * their size; a failed open is reported and retried.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "harness.h"

static void blob_n(uint8_t *buf, size_t len, uint64_t n, struct blob_key *k)
{
    th_fill(buf, len, n, n % 2);
    th_key_of(k, buf, len);
}

static void assert_reads(struct th *t, const uint8_t *data, size_t len, const struct blob_key *k)
{
    uint8_t *out;
    size_t n;
    cr_assert(eq(int, th_get(t, k, 0, 0, &out, &n), 0));
    cr_assert(eq(sz, n, len));
    cr_assert(memcmp(out, data, len) == 0);
    free(out);
}

/* Finds the op number at which a put starts failing with <fault>: the first op of a put. */
static void fail_next_put(struct th *t, int fault, int expect)
{
    static uint8_t data[3000];
    struct blob_key k;
    blob_n(data, sizeof(data), 500 + (uint64_t)fault, &k);
    blob_io_sim_fail_at(t->io, 1, fault);
    int rc = th_put(t, &k, data, sizeof(data), 0, 0);
    cr_assert(eq(int, rc, expect), "fault %d gave %d", fault, rc);
    cr_assert(not(blob_exists(t->bc, &k, false)), "a failed commit is visible");
}

Test(blob_writer, failed_write_is_not_acknowledged_and_the_segment_is_abandoned)
{
    /* A short write is what a disk that fills mid-write gives: the upload is told -ENOSPC
     * (507 / RESOURCE_EXHAUSTED, retried by clients), as for a write that fails with it. */
    int faults[] = { -EIO, -ENOSPC, BLOB_IO_SIM_SHORT };
    int expect[] = { -EIO, -ENOSPC, -ENOSPC };
    for (int f = 0; f < 3; f++) {
        struct th t = { 0 };
        th_open_sim(&t, 100 + (uint64_t)f);
        static uint8_t before[2000];
        struct blob_key kb;
        blob_n(before, sizeof(before), 1, &kb);
        cr_assert(eq(int, th_put(&t, &kb, before, sizeof(before), 0, 0), 0));
        fail_next_put(&t, faults[f], expect[f]);
        cr_assert(eq(u64, th_counters(&t).segments_abandoned, 1));
        cr_assert(ge(u64, th_counters(&t).write_errors, 1));
        /* The next upload goes to a new segment and works. */
        static uint8_t after[2000];
        struct blob_key ka;
        blob_n(after, sizeof(after), 2, &ka);
        cr_assert(eq(int, th_put(&t, &ka, after, sizeof(after), 0, 0), 0));
        cr_assert(eq(u64, th_counters(&t).segments_created, 2));
        assert_reads(&t, before, sizeof(before), &kb);
        assert_reads(&t, after, sizeof(after), &ka);
        th_reopen(&t);
        assert_reads(&t, before, sizeof(before), &kb);
        assert_reads(&t, after, sizeof(after), &ka);
        th_close(&t);
    }
}

Test(blob_writer, failed_fsync_is_not_acknowledged_and_not_covered_by_a_later_one)
{
    struct th t = { 0 };
    th_open_sim(&t, 110);
    static uint8_t data[2000];
    struct blob_key k;
    blob_n(data, sizeof(data), 3, &k);
    struct blob_upload *u;
    th_settle(&t);
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, data, sizeof(data), NULL, NULL), 0));
    /* The commit's write is op 1, its fsync op 2. */
    blob_io_sim_fail_at(t.io, 2, -EIO);

    struct done {
        bool done;
        int res;
    } d = { 0 };

    void cb(void *ctx, int res);
    cr_assert(eq(int, blob_upload_commit(u, cb, &d), 0));
    cr_assert(th_run_until(&t, &d.done));
    cr_assert(eq(int, d.res, -EIO));
    cr_assert(eq(u64, th_counters(&t).fsync_errors, 1));
    cr_assert(eq(u64, th_counters(&t).segments_abandoned, 1));
    cr_assert(not(blob_exists(t.bc, &k, false)));
    /* A later upload of the same blob lands in a new segment with its own fsync. */
    uint64_t fsyncs = th_counters(&t).fsyncs;
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    cr_assert(gt(u64, th_counters(&t).fsyncs, fsyncs));
    cr_assert(eq(u64, th_counters(&t).segments_created, 2));
    th_close(&t);
}

void cb(void *ctx, int res)
{
    struct done {
        bool done;
        int res;
    } *d = ctx;

    d->done = true;
    d->res = res;
}

struct many {
    int done;
    int ok;
};

static void many_cb(void *ctx, int res)
{
    struct many *m = ctx;
    m->done++;
    m->ok += res == 0;
}

static uint64_t commit_many(struct th *t, int n)
{
    static uint8_t data[64][1500];
    struct blob_upload *u[64];
    struct many m = { 0 };
    th_settle(t);
    uint64_t fsyncs = th_counters(t).fsyncs;
    for (int i = 0; i < n; i++) {
        struct blob_key k;
        blob_n(data[i], sizeof(data[i]), 1000 + (uint64_t)i + (uint64_t)t->o.sync * 100, &k);
        cr_assert(eq(int, blob_upload_begin(t->bc, &k, 0, &u[i]), 0));
        cr_assert(eq(int, blob_upload_append(u[i], data[i], sizeof(data[i]), NULL, NULL), 0));
    }
    for (int i = 0; i < n; i++)
        cr_assert(eq(int, blob_upload_commit(u[i], many_cb, &m), 0));
    th_settle(t);
    cr_assert(eq(int, m.done, n));
    cr_assert(eq(int, m.ok, n));
    return th_counters(t).fsyncs - fsyncs;
}

Test(blob_writer, group_commit_batches_and_always_syncs_each_commit)
{
    struct th g = { 0 };
    th_open_sim(&g, 120);
    uint64_t group = commit_many(&g, 32);
    cr_assert(le(u64, group, 4), "32 concurrent commits took %llu fsyncs",
              (unsigned long long)group);
    cr_assert(ge(u64, group, 1));
    th_close(&g);
    struct th a = { 0 };
    th_options_small(&a.o);
    a.o.sync = BLOB_SYNC_ALWAYS;
    th_open_sim(&a, 121);
    uint64_t always = commit_many(&a, 32);
    cr_assert(ge(u64, always, 32));
    th_close(&a);
    struct th n = { 0 };
    th_options_small(&n.o);
    n.o.sync = BLOB_SYNC_NONE;
    th_open_sim(&n, 122);
    cr_assert(eq(u64, commit_many(&n, 32), 0));
    th_close(&n);
}

Test(blob_writer, segments_seal_at_their_size_with_a_footer)
{
    struct th t = { 0 };
    th_open_sim(&t, 130);
    static uint8_t data[10000];
    for (int i = 0; i < 30; i++) {
        struct blob_key k;
        blob_n(data, sizeof(data), 2000 + (uint64_t)i, &k);
        cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    }
    struct blob_counters_snapshot c = th_counters(&t);
    cr_assert(ge(u64, c.segments_sealed, 3));
    cr_assert(eq(u64, c.segments_created, c.segments_sealed + 1));
    cr_assert(ge(u64, c.bytes_stored, c.segments_sealed * 32 * 1024));
    /* Every sealed segment is within its size. */
    char name[32];
    for (uint64_t seq = 1; seq <= c.segments_sealed; seq++) {
        snprintf(name, sizeof(name), "seg-%016llx.rcs", (unsigned long long)seq);
        uint64_t size;
        cr_assert(eq(int, blob_io_sim_size(t.io, name, &size), 0));
        cr_assert(le(u64, size, t.o.segment_size));
        cr_assert(eq(u64, size % 4096, 0));
    }
    th_close(&t);
}

Test(blob_writer, a_failed_segment_open_is_reported_then_retried)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.io = blob_io_sim_create(140);
    snprintf(t.dir, sizeof(t.dir), "sim");
    /* Recovery lists the folder and fsyncs it (2 blocking ops); the core's first open is
     * the 3rd operation. */
    blob_io_sim_fail_at(t.io, 3, -EIO);
    cr_assert(eq(int, th_open_store(&t), 0));
    th_settle(&t);
    static uint8_t data[1000];
    struct blob_key k;
    blob_n(data, sizeof(data), 7, &k);
    int rc = th_put(&t, &k, data, sizeof(data), 0, 0);
    if (rc == 0) {
        /* The fault hit something the engine retried on its own. */
        cr_assert(blob_exists(t.bc, &k, false));
    } else {
        cr_assert(eq(int, rc, -EIO));
        cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0), "retried");
    }
    th_close(&t);
}

Test(blob_writer, large_uploads_stream_through_the_buffer_with_backpressure)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.segment_size = 1 << 20;
    t.o.max_size = 64 << 20;
    th_open_sim(&t, 150);
    size_t len = 3 << 20; /* 48 write buffers, 3 segments */
    uint8_t *data = malloc(len);
    th_fill(data, len, 9, false);
    struct blob_key k;
    th_key_of(&k, data, len);
    cr_assert(eq(int, th_put(&t, &k, data, len, 200000, 0), 0));
    struct blob_counters_snapshot c = th_counters(&t);
    cr_assert(ge(u64, c.writes, 40));
    cr_assert(ge(u64, c.segments_sealed, 2), "the blob spans segments");
    assert_reads(&t, data, len, &k);
    th_reopen(&t);
    assert_reads(&t, data, len, &k);
    free(data);
    th_close(&t);
}

Test(blob_writer, an_abandoned_segment_fails_the_uploads_that_wrote_into_it)
{
    struct th t = { 0 };
    th_open_sim(&t, 160);
    th_settle(&t);
    static uint8_t data[20000];
    struct blob_key k;
    blob_n(data, sizeof(data), 11, &k);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, data, 10000, NULL, NULL), 0));
    /* Another upload's commit forces a write of the buffer, which fails. */
    fail_next_put(&t, -EIO, -EIO);
    int rc = blob_upload_append(u, data + 10000, 10000, NULL, NULL);
    if (rc == 0) {
        struct done {
            bool done;
            int res;
        } d = { 0 };

        cr_assert(eq(int, blob_upload_commit(u, cb, &d), 0));
        cr_assert(th_run_until(&t, &d.done));
        cr_assert(eq(int, d.res, -EIO), "chunks lost with the segment: %d", d.res);
    } else {
        cr_assert(eq(int, rc, -EIO));
        blob_upload_abort(u);
    }
    cr_assert(not(blob_exists(t.bc, &k, false)));
    th_close(&t);
}

Test(blob_writer, eagain_from_the_disk_is_retried_not_failed)
{
    struct th t = { 0 };
    th_open_sim(&t, 170);
    th_settle(&t);
    static uint8_t data[3000];
    struct blob_key k;
    blob_n(data, sizeof(data), 21, &k);
    /* The commit's write comes back -EAGAIN once, then goes through. */
    blob_io_sim_fail_at(t.io, 1, -EAGAIN);
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    cr_assert(eq(u64, th_counters(&t).write_errors, 0));
    cr_assert(eq(u64, th_counters(&t).segments_abandoned, 0));
    /* And a read that bounces once still delivers. */
    blob_io_sim_fail_at(t.io, 1, -EAGAIN);
    assert_reads(&t, data, sizeof(data), &k);
    th_close(&t);
}

/* Fills the active segment until one more put makes it seal; returns the puts made. */
static int fill_to_seal(struct th *t, uint64_t seed, struct blob_key *keys, int max)
{
    static uint8_t data[6000];
    int n = 0;
    uint64_t sealed = th_counters(t).segments_sealed;
    while (n < max && th_counters(t).segments_sealed == sealed) {
        blob_n(data, sizeof(data), seed + (uint64_t)n, &keys[n]);
        cr_assert(eq(int, th_put(t, &keys[n], data, sizeof(data), 0, 0), 0));
        n++;
    }
    return n;
}

Test(blob_writer, a_failure_at_any_step_of_a_seal_keeps_what_was_acknowledged)
{
    /* The seal's steps: flush, fdatasync of the records, footer write, fdatasync, close. */
    for (uint64_t nth = 1; nth <= 8; nth++) {
        struct th t = { 0 };
        th_open_sim(&t, 180 + nth);
        th_settle(&t);
        static struct blob_key keys[40];
        int n = fill_to_seal(&t, 1000 * nth, keys, 39);
        (void)n;
        /* Now fill the next segment and fail the nth operation of its seal. */
        static struct blob_key more[40];
        static uint8_t data[6000];
        int acked = 0;
        int m = 0;
        uint64_t sealed = th_counters(&t).segments_sealed;
        bool armed = false;
        for (; m < 39 && th_counters(&t).segments_sealed == sealed; m++) {
            blob_n(data, sizeof(data), 5000 * nth + (uint64_t)m, &more[m]);
            if (!armed && m >= 7) {
                blob_io_sim_fail_at(t.io, nth, -EIO);
                armed = true;
            }
            int rc = th_put(&t, &more[m], data, sizeof(data), 0, 0);
            cr_assert(rc == 0 || rc == -EIO, "put: %d", rc);
            acked += rc == 0;
            if (rc < 0) break;
        }
        blob_io_sim_fail_at(t.io, 0, 0);
        th_reopen(&t);
        for (int i = 0; i < n; i++)
            cr_assert(blob_exists(t.bc, &keys[i], false), "sealed blob %d lost (fault %llu)", i,
                      (unsigned long long)nth);
        for (int i = 0; i < m; i++) {
            uint8_t *out;
            size_t got;
            int rc = th_get(&t, &more[i], 0, 0, &out, &got);
            cr_assert(rc == 0 || rc == -ENOENT, "blob %d: %d", i, rc);
            if (rc == 0) free(out);
        }
        cr_assert(gt(int, acked, 0));
        th_close(&t);
    }
}

Test(blob_writer, quiesce_syncs_even_without_a_sync_policy)
{
    struct th t = { 0 };
    th_options_small(&t.o);
    t.o.sync = BLOB_SYNC_NONE;
    th_open_sim(&t, 190);
    static uint8_t data[2000];
    struct blob_key k;
    blob_n(data, sizeof(data), 31, &k);
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    cr_assert(eq(u64, th_counters(&t).fsyncs, 0));
    blob_core_quiesce(t.bc);
    th_settle(&t);
    cr_assert(eq(u64, th_counters(&t).fsyncs, 1), "a clean shutdown leaves nothing unsynced");
    /* So a power cut right after shutdown keeps the blob. */
    th_close_store(&t);
    blob_io_sim_power_loss(t.io);
    blob_io_sim_restart(t.io);
    cr_assert(eq(int, th_open_store(&t), 0));
    assert_reads(&t, data, sizeof(data), &k);
    th_close(&t);
}

Test(blob_writer, an_idle_writer_is_idle_and_a_busy_one_is_not)
{
    struct th t = { 0 };
    th_open_sim(&t, 191);
    th_settle(&t);
    cr_assert(blob_core_is_idle(t.bc));
    static uint8_t data[2000];
    struct blob_key k;
    blob_n(data, sizeof(data), 32, &k);
    struct blob_upload *u;
    cr_assert(eq(int, blob_upload_begin(t.bc, &k, 0, &u), 0));
    cr_assert(eq(int, blob_upload_append(u, data, sizeof(data), NULL, NULL), 0));

    struct done {
        bool done;
        int res;
    } d = { 0 };

    cr_assert(eq(int, blob_upload_commit(u, cb, &d), 0));
    cr_assert(not(blob_core_is_idle(t.bc)), "a commit waits for its write and fsync");
    cr_assert(th_run_until(&t, &d.done));
    th_settle(&t);
    cr_assert(blob_core_is_idle(t.bc));
    th_close(&t);
}

struct order {
    int seen[16];
    int len;
};

struct waiting_upload {
    struct blob_upload *u;
    int id;
    struct order *order;
    bool done;
};

static void order_cb(void *ctx, int res)
{
    struct waiting_upload *w = ctx;
    cr_assert(eq(int, res, 0));
    w->order->seen[w->order->len++] = w->id;
    w->done = true;
}

Test(blob_writer, uploads_waiting_for_room_are_all_served)
{
    struct th t = { 0 };
    th_open_sim(&t, 200);
    th_settle(&t);

    /* Four uploads each bigger than all buffers together: each waits at least once. */
    enum {
        N = 4
    };

    size_t len = 5 * 64 * 1024;
    static uint8_t *data[N];
    static struct blob_key keys[N];
    struct order order = { 0 };
    static struct waiting_upload w[N];
    for (int i = 0; i < N; i++) {
        data[i] = malloc(len);
        th_fill(data[i], len, 300 + (uint64_t)i, false);
        th_key_of(&keys[i], data[i], len);
        w[i] = (struct waiting_upload){ .id = i, .order = &order };
        cr_assert(eq(int, blob_upload_begin(t.bc, &keys[i], 0, &w[i].u), 0));
    }
    for (int i = 0; i < N; i++) {
        int rc = blob_upload_append(w[i].u, data[i], len, order_cb, &w[i]);
        cr_assert(eq(int, rc, -EINPROGRESS), "upload %d did not wait", i);
    }
    for (int i = 0; i < N; i++)
        cr_assert(th_run_until(&t, &w[i].done));
    cr_assert(eq(int, order.len, N));
    for (int i = 0; i < N; i++) {
        struct done {
            bool done;
            int res;
        } d = { 0 };

        cr_assert(eq(int, blob_upload_commit(w[i].u, cb, &d), 0));
        cr_assert(th_run_until(&t, &d.done));
        cr_assert(eq(int, d.res, 0));
        assert_reads(&t, data[i], len, &keys[i]);
        free(data[i]);
    }
    th_close(&t);
}

Test(blob_writer, records_never_straddle_the_end_of_a_segment)
{
    /* Fill many segments with uneven sizes; every sealed file stays within its size and
     * every blob reads back, so no record was cut by a seal. */
    struct th t = { 0 };
    th_open_sim(&t, 201);
    static uint8_t data[20000];
    static struct blob_key keys[80];
    for (int i = 0; i < 80; i++) {
        size_t n = 500 + (size_t)(i * 7919) % 19000;
        th_fill(data, n, 400 + (uint64_t)i, i % 3 == 0);
        th_key_of(&keys[i], data, n);
        cr_assert(eq(int, th_put(&t, &keys[i], data, n, 0, 0), 0));
    }
    cr_assert(ge(u64, th_counters(&t).segments_sealed, 5));
    th_reopen(&t);
    for (int i = 0; i < 80; i++) {
        size_t n = 500 + (size_t)(i * 7919) % 19000;
        th_fill(data, n, 400 + (uint64_t)i, i % 3 == 0);
        assert_reads(&t, data, n, &keys[i]);
    }
    th_close(&t);
}

Test(blob_writer, slow_writes_and_fsyncs_are_timed_and_counted)
{
    struct th t = { 0 };
    th_open_sim(&t, 192);
    static uint8_t data[2000];
    struct blob_key k;
    blob_n(data, sizeof(data), 40, &k);
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    struct blob_counters_snapshot c = th_counters(&t);
    cr_assert(gt(u64, c.fsyncs, 0));
    /*
     * Only what is slow for certain is asserted: the times are wall-clock, from submission
     * to completion, so on a busy machine (CI's two CPUs running the suite) any operation may
     * pass 10 ms, and the simulated disk runs one request at a time, so a write queued behind
     * a slow fdatasync is slow too. "Not counted" assertions failed that way (write_slow 1).
     */
    /* Each fdatasync now takes 12 ms. */
    blob_io_sim_slow(t.io, BLOB_IO_FDATASYNC, 12 * BASE_NS_PER_MS);
    blob_n(data, sizeof(data), 41, &k);
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    struct blob_counters_snapshot s = th_counters(&t);
    uint64_t syncs = s.fsyncs - c.fsyncs;
    cr_assert(gt(u64, syncs, 0));
    cr_assert(eq(u64, s.fsync_slow - c.fsync_slow, syncs), "every slow fdatasync is counted");
    cr_assert(ge(u64, s.fsync_ns - c.fsync_ns, syncs * 12 * BASE_NS_PER_MS));
    /* Then each segment write. */
    blob_io_sim_slow(t.io, BLOB_IO_WRITE, 12 * BASE_NS_PER_MS);
    blob_n(data, sizeof(data), 42, &k);
    cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), 0));
    struct blob_counters_snapshot w = th_counters(&t);
    cr_assert(gt(u64, w.writes, s.writes));
    cr_assert(eq(u64, w.write_slow - s.write_slow, w.writes - s.writes));
    cr_assert(ge(u64, w.write_ns - s.write_ns, (w.writes - s.writes) * 12 * BASE_NS_PER_MS));
    blob_io_sim_slow(t.io, 0, 0);
    th_close(&t);
}

Test(blob_writer, full_disk_leaves_no_empty_segments_behind)
{
    struct th t = { 0 };
    th_open_sim(&t, 130);
    static uint8_t before[2000];
    struct blob_key kb;
    blob_n(before, sizeof(before), 1, &kb);
    cr_assert(eq(int, th_put(&t, &kb, before, sizeof(before), 0, 0), 0));
    blob_io_sim_full(t.io, true);
    /* Each refused upload opens a new segment whose first write fails: none may stay. */
    for (uint64_t i = 0; i < 50; i++) {
        static uint8_t data[2000];
        struct blob_key k;
        blob_n(data, sizeof(data), 10 + i, &k);
        int rc = th_put(&t, &k, data, sizeof(data), 0, 0);
        cr_assert(eq(int, rc, -ENOSPC), "put %llu", (unsigned long long)i);
    }
    th_settle(&t);
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(le(u64, st.segments, 2), "empty abandoned segments kept: %llu",
              (unsigned long long)st.segments);
    uint32_t fds = blob_io_sim_open_fds(t.io);
    cr_assert(le(u32, fds, 2), "fds held: %u", fds);
    blob_io_sim_full(t.io, false);
    static uint8_t after[2000];
    struct blob_key ka;
    blob_n(after, sizeof(after), 2, &ka);
    cr_assert(eq(int, th_put(&t, &ka, after, sizeof(after), 0, 0), 0));
    assert_reads(&t, before, sizeof(before), &kb);
    th_reopen(&t);
    assert_reads(&t, before, sizeof(before), &kb);
    assert_reads(&t, after, sizeof(after), &ka);
    th_close(&t);
}

Test(blob_writer, a_read_only_file_system_refuses_uploads_until_it_is_writable_again)
{
    struct th t = { 0 };
    th_open_sim(&t, 131);
    static uint8_t before[2000];
    struct blob_key kb;
    blob_n(before, sizeof(before), 1, &kb);
    cr_assert(eq(int, th_put(&t, &kb, before, sizeof(before), 0, 0), 0));
    cr_assert(not(blob_store_folder_read_only(t.s)));
    /* The kernel remounts the volume read-only after an error: the active segment's next
     * write fails, then every new segment's open. */
    blob_io_sim_read_only(t.io, true);
    for (uint64_t i = 0; i < 3; i++) {
        static uint8_t data[2000];
        struct blob_key k;
        blob_n(data, sizeof(data), 10 + i, &k);
        cr_assert(eq(int, th_put(&t, &k, data, sizeof(data), 0, 0), -EROFS), "put %llu",
                  (unsigned long long)i);
        cr_assert(blob_store_folder_read_only(t.s), "said at the first failed write");
    }
    struct blob_store_stats st;
    blob_store_stats(t.s, &st);
    cr_assert(eq(u64, st.read_only, 1));
    assert_reads(&t, before, sizeof(before), &kb); /* reads go on */
    /* The evictor's pass keeps finding it read-only... */
    blob_store_evict(t.s);
    cr_assert(blob_store_folder_read_only(t.s));
    /* ...and finds it writable again, with no upload to tell (an unready node gets none). */
    blob_io_sim_read_only(t.io, false);
    blob_store_evict(t.s);
    cr_assert(not(blob_store_folder_read_only(t.s)));
    static uint8_t after[2000];
    struct blob_key ka;
    blob_n(after, sizeof(after), 2, &ka);
    cr_assert(eq(int, th_put(&t, &ka, after, sizeof(after), 0, 0), 0));
    th_reopen(&t);
    assert_reads(&t, before, sizeof(before), &kb);
    assert_reads(&t, after, sizeof(after), &ka);
    th_close(&t);
}
