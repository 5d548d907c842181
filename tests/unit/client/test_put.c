/*
 * Streaming put against the fake server: round trips from memory and files, identity and
 * zstd, message sizes, change detection, early answers, statuses, timeouts and deadlines.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "client/put.h"
#include "fake.h"
#include "util.h"

/* Runs one put of <o> (source and digest set by the caller) to completion. */
static void run_put(struct tctx *t, struct client_put *p, struct client_put_options *o)
{
    bool done = false;
    o->call.done = tctx_done;
    o->call.user = &done;
    cr_assert(eq(int, client_put_start(p, &t->conn, o), 0));
    tctx_wait(t, &done, 20000);
}

static struct client_put *new_put(struct tctx *t)
{
    struct client_put *p = malloc(sizeof(*p));
    cr_assert(eq(int, client_put_init(p, &t->cl), 0));
    return p;
}

static void free_put(struct client_put *p)
{
    client_put_deinit(p);
    free(p);
}

static int temp_file(const uint8_t *data, size_t len, char *path)
{
    strcpy(path, "/tmp/ringcas-put-XXXXXX"); /* NOLINT: fixed template */
    int fd = mkstemp(path);
    cr_assert(ge(int, fd, 0));
    cr_assert(eq(sz, (size_t)write(fd, data, len), len));
    return fd;
}

static void put_mem(bool zstd, size_t len, uint32_t chunk)
{
    struct fake_server *f = fake_start(NULL);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    uint8_t *data = malloc(len + 1);
    tctx_fill(data, len, 7, zstd);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    client_digest_buf(data, len, &o.digest);
    o.data = data;
    o.zstd = zstd;
    o.chunk_size = chunk;
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, 0), "%s", p->call.result.message);
    cr_assert(fake_has_blob(f, data, len));
    uint32_t c = chunk ? chunk : CLIENT_PUT_CHUNK_DEFAULT;
    uint64_t messages = len == 0 ? 1 : (len + c - 1) / c;
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->write_messages), messages));
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->write_finished), 1));
    if (!zstd) {
        cr_assert(le(u64, atomic_load(&fake_stats(f)->write_max_data), c));
        cr_assert(eq(i64, p->committed_size, (int64_t)len));
    }
    cr_assert(gt(u64, p->call.timing.end_ns, p->call.timing.start_ns));
    free_put(p);
    tctx_close(t);
    fake_stop(f);
    free(data);
}

Test(client_put, memory_identity_round_trip_in_chunks)
{
    put_mem(false, (1u << 20) + 17, 64 * 1024);
}

Test(client_put, memory_zstd_round_trip)
{
    put_mem(true, 3u << 20, 0);
}

Test(client_put, empty_and_one_byte_blobs)
{
    put_mem(false, 0, 0);
    put_mem(true, 0, 0);
    put_mem(false, 1, 0);
    put_mem(true, 1, 0);
}

static void put_file(bool zstd)
{
    struct fake_server *f = fake_start(NULL);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    size_t len = (5u << 20) + 3;
    uint8_t *data = malloc(len);
    tctx_fill(data, len / 2, 3, true);
    tctx_fill(data + len / 2, len - len / 2, 4, false);
    char path[64];
    int fd = temp_file(data, len, path);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    cr_assert(eq(int, client_digest_fd(fd, &o.digest), 0));
    cr_assert(eq(u64, o.digest.size, len));
    o.fd = fd;
    o.zstd = zstd;
    o.slots = 2;
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, 0), "%s", p->call.result.message);
    cr_assert(fake_has_blob(f, data, len));
    free_put(p);
    tctx_close(t);
    fake_stop(f);
    close(fd);
    unlink(path);
    free(data);
}

Test(client_put, file_identity_round_trip)
{
    put_file(false);
}

Test(client_put, file_zstd_round_trip)
{
    put_file(true);
}

Test(client_put, changed_file_is_cancelled_before_commit)
{
    struct fake_server *f = fake_start(NULL);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    size_t len = 1u << 20;
    uint8_t *data = malloc(len);
    tctx_fill(data, len, 9, false);
    char path[64];
    int fd = temp_file(data, len, path);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    cr_assert(eq(int, client_digest_fd(fd, &o.digest), 0));
    /* The file changes after it was hashed: same size, one byte different. */
    cr_assert(eq(int, (int)pwrite(fd, "!", 1, 100), 1));
    o.fd = fd;
    o.chunk_size = 64 * 1024;
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, -EILSEQ), "%s", p->call.result.message);
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->write_finished), 0));
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->write_committed), 0));
    cr_assert(tctx_wait_counter(t, &fake_stats(f)->rst_cancel, 1, 2000));
    /* A shorter file fails the same way. */
    cr_assert(eq(int, ftruncate(fd, (off_t)len / 2), 0));
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, -EILSEQ), "%s", p->call.result.message);
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->write_committed), 0));
    free_put(p);
    tctx_close(t);
    fake_stop(f);
    close(fd);
    unlink(path);
    free(data);
}

Test(client_put, trusted_memory_is_not_hashed_again)
{
    struct fake_server *f = fake_start(NULL);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    uint8_t data[5000];
    tctx_fill(data, sizeof(data), 8, false);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    client_digest_buf(data, sizeof(data), &o.digest);
    o.data = data;
    o.trust_data = true;
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, 0), "%s", p->call.result.message);
    /* A wrong digest is not caught by the client then, but by the server. */
    o.digest.hash[0] ^= 1;
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, -EINVAL), "%s", p->call.result.message);
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->write_bad), 1));
    free_put(p);
    tctx_close(t);
    fake_stop(f);
}

Test(client_put, early_answer_ends_the_upload)
{
    struct fake_config cfg = { .write_early_ok = true };
    struct fake_server *f = fake_start(&cfg);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    size_t len = 4u << 20;
    uint8_t *data = malloc(len);
    tctx_fill(data, len, 1, false);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    client_digest_buf(data, len, &o.digest);
    o.data = data;
    o.zstd = true;
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, 0), "%s", p->call.result.message);
    cr_assert(eq(i64, p->committed_size, -1));
    /* The client stopped sending once the server had answered. */
    cr_assert(lt(u64, p->call.timing.bytes_sent, len / 2));
    /* The same object uploads again (restart without re-init). */
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, 0), "%s", p->call.result.message);
    free_put(p);
    tctx_close(t);
    fake_stop(f);
    free(data);
}

Test(client_put, server_status_is_mapped_with_its_message)
{
    struct fake_config cfg = { .status = 8 };
    struct fake_server *f = fake_start(&cfg);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    uint8_t data[100];
    tctx_fill(data, sizeof(data), 2, false);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    client_digest_buf(data, sizeof(data), &o.digest);
    o.data = data;
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, -EAGAIN));
    cr_assert(eq(int, p->call.result.status, 8));
    cr_assert(p->call.result.status_received);
    cr_assert(eq(str, p->call.result.message, "fake says no"));
    cr_assert(eq(u64, base_counter_get(&t->cl.counters.calls_failed), 1));
    free_put(p);
    tctx_close(t);
    fake_stop(f);
}

Test(client_put, silent_server_fails_after_the_io_timeout)
{
    uint16_t port;
    int lfd = fake_silent_listener(&port);
    struct tctx *t = tctx_open(port, 300);
    size_t len = 1u << 20;
    uint8_t *data = malloc(len);
    tctx_fill(data, len, 5, false);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    client_digest_buf(data, len, &o.digest);
    o.data = data;
    uint64_t start = base_clock_now_ns();
    run_put(t, p, &o);
    uint64_t ms = tctx_ms_since(start);
    cr_assert(eq(int, p->call.result.err, -ETIMEDOUT), "%s", p->call.result.message);
    cr_assert(ge(u64, ms, 250));
    cr_assert(lt(u64, ms, 3000));
    tctx_wait(t, &t->conn_closed, 1000);
    cr_assert(eq(int, t->conn_reason, -ETIMEDOUT));
    cr_assert(eq(u64, base_counter_get(&t->cl.counters.io_timeouts), 1));
    free_put(p);
    tctx_close(t);
    close(lfd);
    free(data);
}

Test(client_put, deadline_resets_the_stream)
{
    struct fake_config cfg = { .no_answer = true };
    struct fake_server *f = fake_start(&cfg);
    struct tctx *t = tctx_open(fake_port(f), 10000);
    uint8_t data[1000];
    tctx_fill(data, sizeof(data), 2, false);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    client_digest_buf(data, sizeof(data), &o.digest);
    o.data = data;
    o.call.deadline_ms = 200;
    uint64_t start = base_clock_now_ns();
    run_put(t, p, &o);
    cr_assert(eq(int, p->call.result.err, -ETIMEDOUT), "%s", p->call.result.message);
    cr_assert(eq(int, p->call.result.status, 4));
    cr_assert(not(p->call.result.status_received));
    cr_assert(ge(u64, tctx_ms_since(start), 190));
    cr_assert(eq(u64, atomic_load(&fake_stats(f)->timeout_headers), 1));
    cr_assert(tctx_wait_counter(t, &fake_stats(f)->rst_cancel, 1, 2000));
    cr_assert(eq(u64, base_counter_get(&t->cl.counters.deadlines), 1));
    free_put(p);
    tctx_close(t);
    fake_stop(f);
}

Test(client_put, rejects_bad_options_without_a_callback)
{
    struct fake_server *f = fake_start(NULL);
    struct tctx *t = tctx_open(fake_port(f), 5000);
    struct client_put *p = new_put(t);
    struct client_put_options o;
    client_put_options_default(&o);
    uint8_t b = 1;
    client_digest_buf(&b, 1, &o.digest);
    o.data = &b;
    o.call.done = tctx_done;
    o.chunk_size = 100;
    cr_assert(eq(int, client_put_start(p, &t->conn, &o), -EINVAL));
    o.chunk_size = 0;
    o.instance = "a/blobs";
    cr_assert(eq(int, client_put_start(p, &t->conn, &o), -EINVAL));
    o.instance = "";
    o.data = NULL;
    cr_assert(eq(int, client_put_start(p, &t->conn, &o), -EINVAL));
    cr_assert(eq(u64, base_counter_get(&t->cl.counters.calls), 0));
    free_put(p);
    tctx_close(t);
    fake_stop(f);
}
