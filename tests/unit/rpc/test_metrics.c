#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "ring/core.h"
#include "rpc/metrics.h"

static struct rpc_metrics m0;
static struct rpc_metrics m1;
static struct ring_counters r0;
static struct ring_counters r1;

static uint64_t read_extra(void *ctx, uint32_t core, size_t index)
{
    (void)ctx;
    return index == 2 ? 2500000001ull + core : 100 * core + index;
}

Test(rpc_metrics, renders_counts_latency_and_sources)
{
    rpc_metrics_begin(&m0, RPC_ROUTE_GRPC_BS_READ);
    rpc_metrics_end(&m0, RPC_ROUTE_GRPC_BS_READ, 0, 300 * 1000, 10, 1024);
    rpc_metrics_begin(&m1, RPC_ROUTE_GRPC_BS_READ);
    rpc_metrics_end(&m1, RPC_ROUTE_GRPC_BS_READ, 5, 20 * 1000 * 1000, 10, 0);
    rpc_metrics_begin(&m1, RPC_ROUTE_HTTP_GET_CAS);
    rpc_metrics_end(&m1, RPC_ROUTE_HTTP_GET_CAS, 404, 1000, 0, 0);
    rpc_metrics_begin(&m1, RPC_ROUTE_HTTP_PUT_CAS); /* still in flight */
    base_counter_set(&r1.conns, 7);
    static const char *const names[] = { "blobs", "evictions", "wait_ns" };
    static const char *const kinds[] = { "gauge", "counter", "counter" };
    static const char *const helps[] = { "stored blobs", "evicted segments", "time waited" };
    struct rpc_metrics_source src = { names, kinds, helps, 3, read_extra, NULL, false };
    struct rpc_metrics *ms[] = { &m0, &m1 };
    struct ring_counters *rs[] = { &r0, &r1 };
    char *buf = malloc(1 << 20);
    struct rpc_metrics_view view = { 2, ms, rs, &src, 1 };
    int n = rpc_metrics_render(buf, 1 << 20, &view);
    cr_assert(gt(int, n, 0));
    cr_assert(eq(sz, strlen(buf), (size_t)n));
    cr_assert(ne(ptr,
                 strstr(buf, "ringcas_requests_total{core=\"0\",protocol=\"grpc\",route=\"google."
                             "bytestream.ByteStream/Read\",status=\"0\"} 1\n"),
                 NULL));
    cr_assert(ne(ptr, strstr(buf, "route=\"google.bytestream.ByteStream/Read\",status=\"5\"} 1\n"),
                 NULL));
    cr_assert(ne(ptr,
                 strstr(buf, "ringcas_requests_total{core=\"1\",protocol=\"http\",route=\"GET "
                             "/cas\",status=\"404\"} 1\n"),
                 NULL));
    cr_assert(ne(
        ptr,
        strstr(buf,
               "ringcas_requests_in_flight{core=\"1\",protocol=\"http\",route=\"PUT /cas\"} 1\n"),
        NULL));
    /* 300 µs falls in the 500 µs bucket and every bucket above. */
    cr_assert(ne(ptr,
                 strstr(buf, "ringcas_request_duration_seconds_bucket{core=\"0\",route=\"google."
                             "bytestream.ByteStream/Read\",le=\"0.00025\"} 0\n"),
                 NULL));
    cr_assert(ne(ptr,
                 strstr(buf, "ringcas_request_duration_seconds_bucket{core=\"0\",route=\"google."
                             "bytestream.ByteStream/Read\",le=\"0.0005\"} 1\n"),
                 NULL));
    cr_assert(ne(ptr,
                 strstr(buf, "ringcas_request_duration_seconds_count{core=\"0\",route=\"google."
                             "bytestream.ByteStream/Read\"} 1\n"),
                 NULL));
    cr_assert(ne(ptr,
                 strstr(buf, "ringcas_response_bytes_total{core=\"0\",protocol=\"grpc\",route="
                             "\"google.bytestream.ByteStream/Read\"} 1024\n"),
                 NULL));
    cr_assert(ne(ptr, strstr(buf, "ringcas_conns{core=\"1\"} 7\n"), NULL));
    cr_assert(ne(ptr, strstr(buf, "ringcas_conns_accepted_total{core=\"1\"} 0\n"), NULL));
    /* Counters end in _total, and nanoseconds are exported as seconds (Prometheus names). */
    cr_assert(ne(ptr, strstr(buf, "# TYPE ringcas_evictions_total counter\n"), NULL));
    cr_assert(ne(ptr, strstr(buf, "ringcas_evictions_total{core=\"1\"} 101\n"), NULL));
    cr_assert(
        ne(ptr, strstr(buf, "# TYPE ringcas_blobs gauge\nringcas_blobs{core=\"0\"} 0\n"), NULL));
    cr_assert(ne(ptr, strstr(buf, "# TYPE ringcas_wait_seconds_total counter\n"), NULL));
    cr_assert(ne(ptr, strstr(buf, "ringcas_wait_seconds_total{core=\"1\"} 2.500000002\n"), NULL));
    cr_assert(ne(ptr, strstr(buf, "# TYPE ringcas_busy_seconds_total counter\n"), NULL));
    cr_assert(eq(ptr, strstr(buf, "_ns"), NULL));
    /* Too small a buffer fails as a whole. */
    cr_assert(eq(int, rpc_metrics_render(buf, 100, &view), -EMSGSIZE));
    free(buf);
}

Test(rpc_metrics, http_415_and_499_have_their_own_status_labels)
{
    static struct rpc_metrics m;
    static const int statuses[] = { 415, 499, 499, 418 };
    for (size_t i = 0; i < ARRAY_LEN(statuses); i++) {
        rpc_metrics_begin(&m, RPC_ROUTE_HTTP_OTHER);
        rpc_metrics_end(&m, RPC_ROUTE_HTTP_OTHER, statuses[i], 1000, 0, 0);
    }
    struct rpc_metrics *ms[] = { &m };
    static struct ring_counters r;
    struct ring_counters *rs[] = { &r };
    char *buf = malloc(1 << 20);
    struct rpc_metrics_view view = { 1, ms, rs, NULL, 0 };
    cr_assert(gt(int, rpc_metrics_render(buf, 1 << 20, &view), 0));
    static const char *const want[] = {
        "route=\"other\",status=\"415\"} 1\n", "route=\"other\",status=\"499\"} 2\n",
        "route=\"other\",status=\"other\"} 1\n", /* 418: no slot of its own */
    };
    for (size_t i = 0; i < ARRAY_LEN(want); i++)
        cr_assert(ne(ptr, strstr(buf, want[i]), NULL), "%s", want[i]);
    free(buf);
}

/* A store-wide source (core0_only) is one series per name, core="0": no zero series on the
 * other cores for a min() or an alert on the bare name (ringcas_store_budget_bytes < X) to
 * trip over. */
Test(rpc_metrics, a_core0_only_source_has_no_series_on_other_cores)
{
    static const char *const names[] = { "store_budget_bytes" };
    static const char *const kinds[] = { "gauge" };
    static const char *const helps[] = { "size budget" };
    struct rpc_metrics_source src = {
        .names = names,
        .kinds = kinds,
        .helps = helps,
        .count = 1,
        .read = read_extra,
        .core0_only = true,
    };
    struct rpc_metrics *ms[] = { &m0, &m1 };
    struct ring_counters *rs[] = { &r0, &r1 };
    char *buf = malloc(1 << 20);
    struct rpc_metrics_view view = { 2, ms, rs, &src, 1 };
    int n = rpc_metrics_render(buf, 1 << 20, &view);
    cr_assert(gt(int, n, 0));
    cr_assert(ne(ptr, strstr(buf, "ringcas_store_budget_bytes{core=\"0\"} 0\n"), NULL));
    cr_assert(eq(ptr, strstr(buf, "ringcas_store_budget_bytes{core=\"1\"}"), NULL));
    /* The ring's per-core counters still have every core. */
    cr_assert(ne(ptr, strstr(buf, "ringcas_conns{core=\"1\"}"), NULL));
    free(buf);
}
