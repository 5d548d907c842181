/*
 * How engine errors become HTTP statuses on the cache routes (docs/http.md lists them), and
 * a GET that waits for the disk queue, served by the real ring and rpc core over TCP on
 * 127.0.0.1 with the store on the simulated disk (env.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "base/clock.h"
#include "env.h"
#include "rpc/h1_cache.h"

Test(rpc_h1_cache, read_errors)
{
    cr_assert(eq(int, rpc_h1_cache_status(-ENOENT, false), 404));
    cr_assert(eq(int, rpc_h1_cache_status(-EBADMSG, false), 404)); /* corrupt: reported missing */
    cr_assert(eq(int, rpc_h1_cache_status(-EAGAIN, false), 503));
    cr_assert(eq(int, rpc_h1_cache_status(-ECANCELED, false), 503));
    cr_assert(eq(int, rpc_h1_cache_status(-ERANGE, false), 416));
    cr_assert(eq(int, rpc_h1_cache_status(-EINVAL, false), 400));
    cr_assert(eq(int, rpc_h1_cache_status(-EIO, false), 404)); /* unreadable: dropped */
    cr_assert(eq(int, rpc_h1_cache_status(-EPERM, false), 500));
}

Test(rpc_h1_cache, upload_errors)
{
    cr_assert(eq(int, rpc_h1_cache_status(-EILSEQ, true), 400));   /* digest mismatch */
    cr_assert(eq(int, rpc_h1_cache_status(-EMSGSIZE, true), 400)); /* size mismatch */
    cr_assert(eq(int, rpc_h1_cache_status(-EBADMSG, true), 400));  /* malformed zstd */
    cr_assert(eq(int, rpc_h1_cache_status(-EINVAL, true), 400));
    cr_assert(eq(int, rpc_h1_cache_status(-EAGAIN, true), 503)); /* admission full */
    cr_assert(eq(int, rpc_h1_cache_status(-ECANCELED, true), 503));
    cr_assert(eq(int, rpc_h1_cache_status(-ENOMEM, true), 503));
    cr_assert(eq(int, rpc_h1_cache_status(-ENOSPC, true), 507)); /* the store is full */
    cr_assert(eq(int, rpc_h1_cache_status(-EIO, true), 500));
}

/* ---- waits, counted while they last ---- */

/* Receives what <fd> has now (non-blocking) into <buf> at *<len>. */
static void recv_some(int fd, char *buf, size_t cap, size_t *len)
{
    ssize_t n = recv(fd, buf + *len, cap - 1 - *len, MSG_DONTWAIT);
    if (n > 0) *len += (size_t)n;
    buf[*len] = '\0';
}

/*
 * A GET whose read the full disk queue refuses waits (a retry every millisecond): an operator
 * must tell a server whose downloads wait for its disk from an idle one. While it waits,
 * ringcas_read_waiters counts it (once, whatever the retries: ringcas_read_waits_total); once
 * the disk frees the slot and both GETs are answered 200, the gauge is back to 0.
 */
Test(rpc_h1_cache, a_get_waiting_for_the_disk_queue_shows_while_it_waits)
{
    static struct rpc_env e;
    struct blob_key k;
    rpc_env_open_one_disk_slot(&e, 'g', &k); /* the second GET waits for the disk */
    char hex[2 * BLOB_HASH_SIZE + 1];
    blob_hash_to_hex(k.hash, hex);
    char req[160];
    size_t n = (size_t)snprintf(req, sizeof(req), "GET /cas/%s HTTP/1.1\r\nHost: t\r\n\r\n", hex);
    int fd[2];
    static char resp[2][64 << 10];
    size_t got[2] = { 0, 0 };
    for (int i = 0; i < 2; i++) {
        fd[i] = rpc_env_connect_raw(&e);
        cr_assert(eq(sz, (size_t)send(fd[i], req, n, 0), n));
    }
    /* The disk held still: the first GET's read takes the one slot, the second waits. */
    uint64_t end = base_clock_now_ns() + 30 * BASE_NS_PER_MS;
    while (base_clock_now_ns() < end)
        cr_assert(ge(int, ring_core_tick(e.core, 2), 0));
    uint64_t waiting = base_counter_get(&e.rc->counters.read_waiters);
    uint64_t waits = base_counter_get(&e.rc->counters.read_waits);
    const size_t whole = (size_t)k.size;
    end = base_clock_now_ns() + 3000 * BASE_NS_PER_MS;
    bool done = false;
    while (!done && base_clock_now_ns() < end) {
        (void)blob_io_sim_run(e.io, 100);
        cr_assert(ge(int, ring_core_tick(e.core, 2), 0));
        done = true;
        for (int i = 0; i < 2; i++) {
            recv_some(fd[i], resp[i], sizeof(resp[i]), &got[i]);
            const char *body = strstr(resp[i], "\r\n\r\n");
            done = done && body && got[i] - (size_t)(body + 4 - resp[i]) >= whole;
        }
    }
    uint64_t after = base_counter_get(&e.rc->counters.read_waiters);
    for (int i = 0; i < 2; i++)
        (void)close(fd[i]);
    for (int i = 0; i < 200 && e.rc->conns_open > 0; i++) {
        (void)blob_io_sim_run(e.io, 100);
        cr_assert(ge(int, ring_core_tick(e.core, 5), 0));
    }
    cr_assert(eq(u32, e.rc->conns_open, 0));
    rpc_env_close(&e);
    cr_assert(eq(u64, waiting, 1), "the waiting GET did not show");
    cr_assert(eq(u64, waits, 1), "its retries counted as more than one wait");
    cr_assert(done, "the GETs were not answered in 3 s");
    cr_assert(eq(int, strncmp(resp[0], "HTTP/1.1 200", 12), 0), "%.40s", resp[0]);
    cr_assert(eq(int, strncmp(resp[1], "HTTP/1.1 200", 12), 0), "%.40s", resp[1]);
    cr_assert(eq(u64, after, 0), "the GET served still counts as waiting");
}

/* ---- HEAD of a blob that eviction takes while HEAD looks ---- */

/* The link wraps rpc's calls of blob_exists (CMakeLists.txt: --wrap): armed, the wrapper runs
 * the evictor's pass, with the disk shrunk so that it takes every sealed segment, just before
 * the call, as the evictor's thread may do at that moment. */
bool __real_blob_exists(struct blob_core *bc, const struct blob_key *k, bool refresh);
bool __wrap_blob_exists(struct blob_core *bc, const struct blob_key *k, bool refresh);

static struct rpc_env *evict_env; /* armed: evicts before the next blob_exists */

bool __wrap_blob_exists(struct blob_core *bc, const struct blob_key *k, bool refresh)
{
    struct rpc_env *e = evict_env;
    evict_env = NULL;
    if (e) {
        blob_io_sim_capacity(e->io, 1 << 20);
        cr_assert(gt(u32, blob_store_evict(e->store), 0));
        blob_io_sim_capacity(e->io, 0);
        (void)blob_store_evict(e->store); /* the budget back at max_size */
    }
    return __real_blob_exists(bc, k, refresh);
}

/*
 * HEAD looks a blob up, and looks again to refresh it when it is in the oldest part of the
 * log. Eviction may take it in between: it is then gone, and HEAD must say 404, or a client
 * (Bazel's HTTP cache, ccache) skips the upload of a blob the store no longer has. Before,
 * the second look's answer was dropped and HEAD said 200, and the GET after it 404: one way to
 * a soak's "HEAD 200, then 404 12-25 ms later", and this one counted no refused refresh.
 */
Test(rpc_h1_cache, a_head_of_a_blob_evicted_while_it_looks_is_404)
{
    static struct rpc_env e;
    rpc_env_defaults(&e);
    e.bo.max_size = 8 << 20;
    rpc_env_open(&e, 8);
    static uint8_t blob[3000];
    memset(blob, 'h', sizeof(blob));
    struct blob_key k;
    rpc_env_put(&e, blob, sizeof(blob), &k);
    static uint8_t filler[64 << 10];
    struct blob_info info = { 0 };
    /* Bounded: 200 blobs of 64 KiB, 12.5 MiB, past the cold quarter of 8 MiB. */
    for (uint32_t i = 0; i < 200 && !info.cold; i++) {
        uint64_t x = 0x9e3779b97f4a7c15ULL * (i + 1); /* incompressible: xorshift */
        for (size_t j = 0; j < sizeof(filler); j += sizeof(x)) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            memcpy(filler + j, &x, sizeof(x));
        }
        struct blob_key f;
        rpc_env_put(&e, filler, sizeof(filler), &f);
        (void)blob_store_evict(e.store);
        cr_assert(eq(int, blob_stat(e.rc->blob, &k, &info), 0), "evicted before it was cold");
    }
    cr_assert(info.cold, "never cold");
    char hex[2 * BLOB_HASH_SIZE + 1];
    blob_hash_to_hex(k.hash, hex);
    char req[160];
    size_t n = (size_t)snprintf(req, sizeof(req), "HEAD /cas/%s HTTP/1.1\r\nHost: t\r\n\r\n", hex);
    evict_env = &e;
    int fd = rpc_env_connect_raw(&e);
    cr_assert(eq(sz, (size_t)send(fd, req, n, 0), n));
    static char resp[4096];
    size_t got = 0;
    uint64_t end = base_clock_now_ns() + 3000 * BASE_NS_PER_MS;
    while (!strstr(resp, "\r\n\r\n") && base_clock_now_ns() < end) {
        (void)blob_io_sim_run(e.io, 100);
        cr_assert(ge(int, ring_core_tick(e.core, 2), 0));
        recv_some(fd, resp, sizeof(resp), &got);
    }
    (void)close(fd);
    for (int i = 0; i < 200 && e.rc->conns_open > 0; i++) {
        (void)blob_io_sim_run(e.io, 100);
        cr_assert(ge(int, ring_core_tick(e.core, 5), 0));
    }
    cr_assert(evict_env == NULL, "HEAD did not look twice");
    cr_assert(eq(int, blob_stat(e.rc->blob, &k, &info), -ENOENT), "the blob was not evicted");
    rpc_env_close(&e);
    cr_assert(eq(int, strncmp(resp, "HTTP/1.1 404", 12), 0), "HEAD of a gone blob: %.40s", resp);
}
