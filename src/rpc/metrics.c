/*
 * Request metrics and the Prometheus text format. Rendering is bounded by the caller's
 * buffer: an append that does not fit makes the whole render fail with -EMSGSIZE, never a
 * truncated exposition.
 */
#include "rpc/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ring/core.h"

#define ROUTE_NAME(id, proto, name) name,
static const char *const route_names[] = { RPC_ROUTES(ROUTE_NAME) };
#define ROUTE_PROTO(id, proto, name) proto,
static const char *const route_protos[] = { RPC_ROUTES(ROUTE_PROTO) };

#define HTTP_CODE(code) code,
static const int http_codes[] = { RPC_HTTP_STATUSES(HTTP_CODE) };

static const uint64_t latency_bounds_us[] = RPC_LATENCY_BUCKETS_US;

STATIC_ASSERT(sizeof(latency_bounds_us) / sizeof(latency_bounds_us[0]) + 1 ==
                  RPC_LATENCY_BUCKET_COUNT,
              "bucket count matches the bounds");
STATIC_ASSERT(sizeof(http_codes) / sizeof(http_codes[0]) + 1 == RPC_HTTP_STATUS_COUNT,
              "HTTP status slots match the list");

const char *rpc_route_name(enum rpc_route route)
{
    ASSERT(route < RPC_ROUTE_COUNT);
    return route_names[route];
}

static bool route_is_grpc(enum rpc_route route)
{
    return route_protos[route][0] == 'g';
}

static size_t status_slot(enum rpc_route route, int status)
{
    if (route_is_grpc(route)) {
        return status >= 0 && status < RPC_GRPC_STATUS_COUNT ? (size_t)status : 2; /* UNKNOWN */
    }
    for (size_t i = 0; i < ARRAY_LEN(http_codes); i++) {
        if (http_codes[i] == status) return i;
    }
    return ARRAY_LEN(http_codes);
}

void rpc_metrics_begin(struct rpc_metrics *m, enum rpc_route route)
{
    ASSERT(route < RPC_ROUTE_COUNT);
    base_counter_inc(&m->routes[route].in_flight);
}

void rpc_metrics_end(struct rpc_metrics *m, enum rpc_route route, int status, uint64_t latency_ns,
                     uint64_t bytes_in, uint64_t bytes_out)
{
    ASSERT(route < RPC_ROUTE_COUNT);
    struct rpc_route_metrics *r = &m->routes[route];
    uint64_t in_flight = base_counter_get(&r->in_flight);
    ASSERT(in_flight > 0);
    base_counter_dec(&r->in_flight);
    base_counter_inc(&r->requests);
    base_counter_inc(&r->status[status_slot(route, status)]);
    uint64_t us = latency_ns / 1000;
    size_t b = 0;
    while (b < ARRAY_LEN(latency_bounds_us) && us > latency_bounds_us[b]) {
        b++;
    }
    base_counter_inc(&r->latency[b]);
    base_counter_add(&r->latency_sum_us, us);
    base_counter_add(&r->bytes_in, bytes_in);
    base_counter_add(&r->bytes_out, bytes_out);
}

struct out {
    char *buf;   /* the caller's buffer */
    size_t size; /* its capacity */
    size_t len;  /* bytes written */
    bool full;   /* an append did not fit */
};

__attribute__((format(printf, 2, 0))) static void vput(struct out *o, const char *fmt, va_list ap)
{
    /* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): put() starts <ap>. */
    int n = vsnprintf(o->buf + o->len, o->size - o->len, fmt, ap);
    if (n < 0 || (size_t)n >= o->size - o->len) {
        o->full = true;
        return;
    }
    o->len += (size_t)n;
}

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!o->full) vput(o, fmt, ap);
    va_end(ap);
}

static const char *status_label(enum rpc_route route, size_t slot, char *tmp, size_t tmp_size)
{
    if (route_is_grpc(route) || slot < ARRAY_LEN(http_codes)) {
        int code = route_is_grpc(route) ? (int)slot : http_codes[slot];
        (void)snprintf(tmp, tmp_size, "%d", code);
        return tmp;
    }
    return "other";
}

static void render_statuses(struct out *o, uint32_t core, enum rpc_route r,
                            const struct rpc_route_metrics *rm)
{
    for (size_t s = 0; s < RPC_STATUS_SLOTS; s++) {
        uint64_t v = base_counter_get(&rm->status[s]);
        if (v == 0) continue;
        char tmp[16];
        put(o,
            "ringcas_requests_total{core=\"%u\",protocol=\"%s\",route=\"%s\",status=\"%s\"} "
            "%llu\n",
            core, route_protos[r], route_names[r], status_label(r, s, tmp, sizeof(tmp)),
            (unsigned long long)v);
    }
}

static void render_route_counters(struct out *o, const struct rpc_metrics_view *v)
{
    put(o, "# HELP ringcas_requests_total Finished requests by route and status.\n"
           "# TYPE ringcas_requests_total counter\n");
    for (uint32_t c = 0; c < v->core_count; c++) {
        for (size_t r = 0; r < RPC_ROUTE_COUNT; r++) {
            render_statuses(o, c, (enum rpc_route)r, &v->metrics[c]->routes[r]);
        }
    }
}

enum route_field {
    FIELD_IN_FLIGHT,
    FIELD_BYTES_IN,
    FIELD_BYTES_OUT,
};

struct route_gauge {
    const char *name;       /* without the ringcas_ prefix */
    const char *kind;       /* counter or gauge */
    const char *help;       /* one line */
    enum route_field field; /* which rpc_route_metrics field */
};

static const struct base_counter *route_field(const struct rpc_route_metrics *rm,
                                              enum route_field f)
{
    switch (f) {
    case FIELD_IN_FLIGHT:
        return &rm->in_flight;
    case FIELD_BYTES_IN:
        return &rm->bytes_in;
    case FIELD_BYTES_OUT:
        return &rm->bytes_out;
    }
    UNREACHABLE();
}

static void render_route_gauge(struct out *o, const struct rpc_metrics_view *v,
                               const struct route_gauge *g)
{
    put(o, "# HELP ringcas_%s %s\n# TYPE ringcas_%s %s\n", g->name, g->help, g->name, g->kind);
    for (uint32_t c = 0; c < v->core_count; c++) {
        for (size_t r = 0; r < RPC_ROUTE_COUNT; r++) {
            const struct rpc_route_metrics *rm = &v->metrics[c]->routes[r];
            uint64_t value = base_counter_get(route_field(rm, g->field));
            /* Routes never used stay out of the exposition. */
            if (value == 0 && base_counter_get(&rm->requests) == 0) continue;
            put(o, "ringcas_%s{core=\"%u\",protocol=\"%s\",route=\"%s\"} %llu\n", g->name, c,
                route_protos[r], route_names[r], (unsigned long long)value);
        }
    }
}

static void render_latency_route(struct out *o, uint32_t core, size_t r,
                                 const struct rpc_route_metrics *rm)
{
    uint64_t count = base_counter_get(&rm->requests);
    if (count == 0) return;
    uint64_t cumulative = 0;
    for (size_t b = 0; b < RPC_LATENCY_BUCKET_COUNT; b++) {
        cumulative += base_counter_get(&rm->latency[b]);
        char le[32] = "+Inf";
        if (b < ARRAY_LEN(latency_bounds_us)) {
            (void)snprintf(le, sizeof(le), "%g", (double)latency_bounds_us[b] / 1e6);
        }
        put(o, "ringcas_request_duration_seconds_bucket{core=\"%u\",route=\"%s\",le=\"%s\"} %llu\n",
            core, route_names[r], le, (unsigned long long)cumulative);
    }
    put(o, "ringcas_request_duration_seconds_sum{core=\"%u\",route=\"%s\"} %.6f\n", core,
        route_names[r], (double)base_counter_get(&rm->latency_sum_us) / 1e6);
    /* The +Inf bucket's count, not <count>: the core may finish a request between the reads,
     * and a histogram's _count must equal its +Inf bucket. */
    put(o, "ringcas_request_duration_seconds_count{core=\"%u\",route=\"%s\"} %llu\n", core,
        route_names[r], (unsigned long long)cumulative);
}

static void render_latency(struct out *o, const struct rpc_metrics_view *v)
{
    put(o, "# HELP ringcas_request_duration_seconds Request latency by route.\n"
           "# TYPE ringcas_request_duration_seconds histogram\n");
    for (uint32_t c = 0; c < v->core_count; c++) {
        for (size_t r = 0; r < RPC_ROUTE_COUNT; r++) {
            render_latency_route(o, c, r, &v->metrics[c]->routes[r]);
        }
    }
}

#define RING_NAME(name, kind, help) #name,
#define RING_KIND(name, kind, help) #kind,
#define RING_HELP(name, kind, help) help,
static const char *const ring_names[] = { RING_COUNTERS(RING_NAME) };
static const char *const ring_kinds[] = { RING_COUNTERS(RING_KIND) };
static const char *const ring_helps[] = { RING_COUNTERS(RING_HELP) };

/*
 * A source's name as exported: ringcas_<stem><suffix>. Prometheus names a counter
 * <name>_total and measures time in seconds, its base unit (promtool check metrics says so
 * otherwise), so a counter is exported with _total, and one counted in nanoseconds (a name
 * ending in _ns) as <stem>_seconds_total, its value in seconds.
 */
struct export_name {
    int stem_len;       /* bytes of the source's name kept */
    const char *suffix; /* appended to them */
    bool ns;            /* the value counts nanoseconds; rendered in seconds */
};

static struct export_name export_name(const char *name, const char *kind)
{
    static const char ns_suffix[] = "_ns";
    size_t len = strlen(name);
    size_t ns_len = sizeof(ns_suffix) - 1;
    bool counter = strcmp(kind, "counter") == 0;
    bool ns = len > ns_len && strcmp(name + len - ns_len, ns_suffix) == 0;
    size_t stem_len = ns ? len - ns_len : len;
    ASSERT(stem_len < 256);
    struct export_name e = { .stem_len = (int)stem_len, .suffix = "", .ns = ns };
    if (ns) {
        e.suffix = counter ? "_seconds_total" : "_seconds";
    } else if (counter) {
        e.suffix = "_total";
    }
    return e;
}

static void render_source(struct out *o, uint32_t cores, const struct rpc_metrics_source *src)
{
    for (size_t i = 0; i < src->count; i++) {
        const char *name = src->names[i];
        struct export_name e = export_name(name, src->kinds[i]);
        put(o, "# HELP ringcas_%.*s%s %s\n# TYPE ringcas_%.*s%s %s\n", e.stem_len, name, e.suffix,
            src->helps[i], e.stem_len, name, e.suffix, src->kinds[i]);
        uint32_t shown = src->core0_only && cores > 0 ? 1 : cores;
        for (uint32_t c = 0; c < shown; c++) {
            unsigned long long v = src->read(src->ctx, c, i);
            put(o, "ringcas_%.*s%s{core=\"%u\"} ", e.stem_len, name, e.suffix, c);
            /* Exact decimal seconds: no rounding through a double. */
            if (e.ns) {
                put(o, "%llu.%09llu\n", v / 1000000000ull, v % 1000000000ull);
            } else {
                put(o, "%llu\n", v);
            }
        }
    }
}

static uint64_t ring_read(void *ctx, uint32_t core, size_t index)
{
    const struct rpc_metrics_view *v = ctx;
    const struct base_counter *first = (const struct base_counter *)v->ring_counters[core];
    return base_counter_get(&first[index]);
}

static const struct route_gauge route_gauges[] = {
    { "requests_in_flight", "gauge", "Requests started and not finished.", FIELD_IN_FLIGHT },
    { "request_bytes_total", "counter", "Request body bytes received.", FIELD_BYTES_IN },
    { "response_bytes_total", "counter", "Response body bytes sent.", FIELD_BYTES_OUT },
};

int rpc_metrics_render(char *buf, size_t size, const struct rpc_metrics_view *view)
{
    STATIC_ASSERT(sizeof(struct ring_counters) ==
                      ARRAY_LEN(ring_names) * sizeof(struct base_counter),
                  "ring counters are an array of base_counter");
    if (size == 0) return -EMSGSIZE;
    struct out o = { .buf = buf, .size = size };
    buf[0] = '\0';
    render_route_counters(&o, view);
    for (size_t i = 0; i < ARRAY_LEN(route_gauges); i++) {
        render_route_gauge(&o, view, &route_gauges[i]);
    }
    render_latency(&o, view);
    struct rpc_metrics_source ring = {
        .names = ring_names,
        .kinds = ring_kinds,
        .helps = ring_helps,
        .count = ARRAY_LEN(ring_names),
        .read = ring_read,
        .ctx = (void *)(uintptr_t)view,
    };
    render_source(&o, view->core_count, &ring);
    for (size_t i = 0; i < view->source_count; i++) {
        render_source(&o, view->core_count, &view->sources[i]);
    }
    if (o.full) return -EMSGSIZE;
    return (int)o.len;
}
