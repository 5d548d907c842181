/*
 * The report of a run: per request kind, successes, errors, throughput, latency percentiles
 * and a histogram (1-2-5 steps from a microsecond up, folded from the fine log buckets); the
 * build mix's small-blob latency class; errors by status. As text for people, or as one JSON
 * object (--json) for perf/run.sh and tests: docs/bench.md describes its fields.
 *
 * Sections: formatting, text, JSON.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "client/bench_internal.h"
#include "proto/status.h"

/* ---- formatting ---- */

#define EDGE_COUNT 28 /* 1 us .. 5000 s in 1-2-5 steps */

/* The histogram's row bounds in ns: 1000, 2000, 5000, 10000, ... */
static uint64_t edge(size_t k)
{
    static const uint64_t steps[3] = { 1, 2, 5 };
    uint64_t v = 1000;
    for (size_t i = 0; i < k / 3; i++) {
        v *= 10;
    }
    return v * steps[k % 3];
}

/* Folds <h> into rows[EDGE_COUNT] (values past the last edge go in the last row). */
static void fold(const struct client_hist *h, uint64_t rows[EDGE_COUNT])
{
    memset(rows, 0, sizeof(uint64_t) * EDGE_COUNT);
    size_t k = 0;
    for (size_t i = 0; i < CLIENT_HIST_BUCKETS; i++) {
        if (h->buckets[i] == 0) continue;
        uint64_t v = client_hist_highest(i);
        if (v > h->max) v = h->max;
        while (k + 1 < EDGE_COUNT && v > edge(k)) {
            k++;
        }
        rows[k] += h->buckets[i];
    }
}

/* Writes <ns> for people: 850ns, 12.5us, 3.20ms, 1.50s. */
static void fmt_ns(char *out, size_t size, uint64_t ns)
{
    if (ns < 1000) {
        (void)snprintf(out, size, "%" PRIu64 "ns", ns);
    } else if (ns < 1000000) {
        (void)snprintf(out, size, "%.1fus", (double)ns / 1e3);
    } else if (ns < 1000000000) {
        (void)snprintf(out, size, "%.2fms", (double)ns / 1e6);
    } else {
        (void)snprintf(out, size, "%.2fs", (double)ns / 1e9);
    }
}

/* A latency of <h> for the text table: "-" when <h> holds no request (every one of its kind
 * failed), where 0ns would read as a measured time. */
static void fmt_lat(char *out, size_t size, const struct client_hist *h, uint64_t ns)
{
    if (h->count == 0) {
        (void)snprintf(out, size, "-");
    } else {
        fmt_ns(out, size, ns);
    }
}

static void err_name(const struct bench_err *e, char *out, size_t size)
{
    if (e->kind == BENCH_ERR_GRPC) {
        (void)snprintf(out, size, "grpc %s", proto_status_name(e->code));
    } else if (e->kind == BENCH_ERR_HTTP) {
        (void)snprintf(out, size, "http %d", e->code);
    } else {
        (void)snprintf(out, size, "local %s", base_err_name(e->code));
    }
}

static bool op_seen(const struct bench_op_stats *o)
{
    return o->ok + o->errors + o->expected > 0;
}

/* ---- text ---- */

static void text_header(FILE *out, const struct bench_plan *p)
{
    const struct client_bench_options *o = &p->o;
    (void)fprintf(out, "ringcas bench: %s against %s, %s data%s\n", bench_workload_names[p->w],
                  o->server, o->data, o->compress ? ", zstd transfers" : "");
    (void)fprintf(out, "  %" PRIu64 " thread(s), %" PRIu64 " slot(s) per thread, ", o->threads,
                  o->concurrency);
    if (p->http) {
        (void)fprintf(out, "one HTTP/1.1 connection per slot\n");
    } else {
        (void)fprintf(out, "%" PRIu64 " HTTP/2 connection(s) per thread\n", o->conns);
    }
    if (o->rate) {
        (void)fprintf(
            out, "  open loop at %" PRIu64 " arrivals/s (latency from each arrival's due time)\n",
            o->rate);
    } else {
        (void)fprintf(out, "  closed loop\n");
    }
    if (p->w != BENCH_W_MIX && p->w != BENCH_W_AC_GET && p->w != BENCH_W_FIND_MISSING) {
        (void)fprintf(out, "  blob size %" PRIu64 " bytes", o->size);
        if (p->blob_count) (void)fprintf(out, ", %zu seeded", p->blob_count);
        if (p->w == BENCH_W_BATCH_READ || p->w == BENCH_W_BATCH_UPDATE) {
            (void)fprintf(out, ", %" PRIu64 " per batch", o->batch);
        }
        (void)fprintf(out, "\n");
    }
    (void)fprintf(out, "  measured %.1f s after a %.1f s warm-up\n\n", (double)o->duration_ms / 1e3,
                  (double)o->warmup_ms / 1e3);
}

static void text_row(FILE *out, const char *name, const struct bench_op_stats *o, double secs)
{
    const struct client_hist *h = &o->lat;
    char p50[16];
    char p99[16];
    char p999[16];
    char max[16];
    char mean[16];
    fmt_lat(p50, sizeof(p50), h, client_hist_quantile(h, 500000));
    fmt_lat(p99, sizeof(p99), h, client_hist_quantile(h, 990000));
    fmt_lat(p999, sizeof(p999), h, client_hist_quantile(h, 999000));
    fmt_lat(max, sizeof(max), h, h->max);
    fmt_lat(mean, sizeof(mean), h, client_hist_mean(h));
    (void)fprintf(out, "%-19s %9" PRIu64 " %7" PRIu64 " %10.1f %9.1f %9s %9s %9s %9s %9s\n", name,
                  o->ok, o->errors, (double)o->ok / secs, (double)o->bytes / secs / 1e6, p50, p99,
                  p999, max, mean);
}

static void text_histogram(FILE *out, const char *name, const struct client_hist *h)
{
    if (h->count == 0) return;
    uint64_t rows[EDGE_COUNT];
    fold(h, rows);
    size_t first = 0;
    size_t last = 0;
    for (size_t k = 0; k < EDGE_COUNT; k++) {
        if (rows[k] && !rows[first]) first = k;
        if (rows[k]) last = k;
    }
    uint64_t peak = 0;
    for (size_t k = first; k <= last; k++) {
        if (rows[k] > peak) peak = rows[k];
    }
    (void)fprintf(out, "\nlatency histogram, %s:\n", name);
    uint64_t cum = 0;
    for (size_t k = first; k <= last; k++) {
        char le[16];
        fmt_ns(le, sizeof(le), edge(k));
        cum += rows[k];
        char bar[41];
        size_t w = peak ? (size_t)(rows[k] * 40 / peak) : 0;
        memset(bar, '#', w);
        bar[w] = '\0';
        (void)fprintf(out, "  <= %-8s %10" PRIu64 " %7.3f%%  %-40s\n", le, rows[k],
                      100.0 * (double)cum / (double)h->count, bar);
    }
}

/* Build mix: the share of actions (begun in the window) the action cache answered. */
static double hit_rate(const struct bench_stats *s)
{
    uint64_t actions = s->hits + s->misses;
    return actions ? (double)s->hits / (double)actions : 0.0;
}

static void report_text(FILE *out, const struct bench_plan *p, const struct bench_stats *s,
                        double secs)
{
    text_header(out, p);
    (void)fprintf(out, "%-19s %9s %7s %10s %9s %9s %9s %9s %9s %9s\n", "request", "ok", "errors",
                  "req/s", "MB/s", "p50", "p99", "p99.9", "max", "mean");
    for (size_t i = 0; i < BENCH_OP_COUNT; i++) {
        if (op_seen(&s->ops[i])) text_row(out, bench_op_names[i], &s->ops[i], secs);
    }
    if (p->w == BENCH_W_MIX) {
        text_row(out, "blobs < 64 KiB", &s->small, secs);
        (void)fprintf(out,
                      "\nactions: %" PRIu64 " (%.1f/s), hits %" PRIu64 ", misses %" PRIu64
                      " (seeded actions the server evicted: %" PRIu64 "), hit rate %.1f%%"
                      " (action-cache lookups answered NOT_FOUND: %" PRIu64 ")\n",
                      s->arrivals, (double)s->arrivals / secs, s->hits, s->misses,
                      s->misses_evicted, 100.0 * hit_rate(s), s->ops[BENCH_OP_AC_GET].expected);
    }
    if (p->o.rate) {
        (void)fprintf(out, "arrivals due but never started before the end: %" PRIu64 "%s\n",
                      s->arrivals_late,
                      s->arrivals_late ? " (the server fell behind the rate)" : "");
    }
    for (size_t i = 0; i < BENCH_OP_COUNT && p->o.histogram; i++) {
        if (s->ops[i].ok) text_histogram(out, bench_op_names[i], &s->ops[i].lat);
    }
    if (s->err_count || s->err_other) {
        (void)fprintf(out, "\nerrors by status:\n");
        for (uint32_t i = 0; i < s->err_count; i++) {
            char name[64];
            err_name(&s->errs[i], name, sizeof(name));
            (void)fprintf(out, "  %-32s %" PRIu64 "\n", name, s->errs[i].count);
        }
        if (s->err_other) (void)fprintf(out, "  %-32s %" PRIu64 "\n", "other", s->err_other);
        (void)fprintf(out, "first error: %s\n", s->first_error);
    }
}

/* ---- JSON ---- */

/* The length of the well-formed UTF-8 sequence at <c> (RFC 3629: no overlong form, no
 * surrogate, at most U+10FFFF), or 0. <c> is NUL-terminated: a NUL ends a sequence early. */
static size_t utf8_seq(const unsigned char *c)
{
    size_t n;
    uint32_t cp;
    if (c[0] >= 0xc2 && c[0] <= 0xdf) {
        n = 2;
        cp = c[0] & 0x1fu;
    } else if (c[0] >= 0xe0 && c[0] <= 0xef) {
        n = 3;
        cp = c[0] & 0x0fu;
    } else if (c[0] >= 0xf0 && c[0] <= 0xf4) {
        n = 4;
        cp = c[0] & 0x07u;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((c[i] & 0xc0u) != 0x80u) return 0;
        cp = (cp << 6) | (c[i] & 0x3fu);
    }
    if (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) return 0;
    if (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) return 0;
    return n;
}

/*
 * A JSON string. The server's reason (a grpc-message, an HTTP error body) is bytes, and the
 * first error keeps at most 255 of them, which can cut a character in two: what is not
 * well-formed UTF-8 is written as U+FFFD, or the report would not be JSON (RFC 8259).
 */
static void json_string(FILE *out, const char *v)
{
    (void)fputc('"', out);
    /* Bounded by the string's length: each step takes at least one byte. */
    for (const unsigned char *c = (const unsigned char *)v; *c;) {
        if (*c == '"' || *c == '\\') {
            (void)fprintf(out, "\\%c", *c++);
        } else if (*c < 0x20) {
            (void)fprintf(out, "\\u%04x", *c++);
        } else if (*c < 0x80) {
            (void)fputc(*c++, out);
        } else {
            size_t n = utf8_seq(c);
            if (n == 0) {
                (void)fputs("\\ufffd", out);
                c++;
            } else {
                (void)fwrite(c, 1, n, out);
                c += n;
            }
        }
    }
    (void)fputc('"', out);
}

static void json_latency(FILE *out, const struct client_hist *h)
{
    (void)fprintf(out,
                  "{\"count\": %" PRIu64 ", \"min\": %" PRIu64 ", \"p50\": %" PRIu64
                  ", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"p999\": %" PRIu64
                  ", \"max\": %" PRIu64 ", \"mean\": %" PRIu64 ", \"histogram\": [",
                  h->count, h->count ? h->min : 0, client_hist_quantile(h, 500000),
                  client_hist_quantile(h, 900000), client_hist_quantile(h, 990000),
                  client_hist_quantile(h, 999000), h->max, client_hist_mean(h));
    uint64_t rows[EDGE_COUNT];
    fold(h, rows);
    bool first = true;
    for (size_t k = 0; k < EDGE_COUNT; k++) {
        if (!rows[k]) continue;
        (void)fprintf(out, "%s[%" PRIu64 ", %" PRIu64 "]", first ? "" : ", ", edge(k), rows[k]);
        first = false;
    }
    (void)fprintf(out, "]}");
}

static void json_op(FILE *out, const struct bench_op_stats *o, double secs)
{
    (void)fprintf(out,
                  "{\"ok\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"expected\": %" PRIu64
                  ", \"bytes\": %" PRIu64 ", \"requests_per_s\": %.3f, \"mb_per_s\": %.3f, "
                  "\"latency_ns\": ",
                  o->ok, o->errors, o->expected, o->bytes, (double)o->ok / secs,
                  (double)o->bytes / secs / 1e6);
    json_latency(out, &o->lat);
    (void)fprintf(out, "}");
}

static void json_options(FILE *out, const struct bench_plan *p)
{
    const struct client_bench_options *o = &p->o;
    (void)fprintf(out, "{\"workload\": \"%s\", \"server\": ", bench_workload_names[p->w]);
    json_string(out, o->server);
    (void)fprintf(out,
                  ", \"threads\": %" PRIu64 ", \"conns\": %" PRIu64 ", \"concurrency\": %" PRIu64
                  ", \"mode\": \"%s\", \"rate\": %" PRIu64 ", \"duration_s\": %.3f"
                  ", \"warmup_s\": %.3f, \"size\": %" PRIu64 ", \"batch\": %" PRIu64
                  ", \"blobs_seeded\": %zu, \"actions_seeded\": %zu, \"data\": \"%s\""
                  ", \"compress\": %s",
                  o->threads, o->conns, o->concurrency, o->rate ? "open" : "closed", o->rate,
                  (double)o->duration_ms / 1e3, (double)o->warmup_ms / 1e3, o->size, o->batch,
                  p->blob_count, p->action_count, o->data, o->compress ? "true" : "false");
}

/* The whole run's figures; <all> receives every request kind merged (heap: it is large). */
static void report_json(FILE *out, const struct bench_plan *p, const struct bench_stats *s,
                        double secs, struct bench_op_stats *all)
{
    for (size_t i = 0; i < BENCH_OP_COUNT; i++) {
        all->ok += s->ops[i].ok;
        all->errors += s->ops[i].errors;
        all->expected += s->ops[i].expected;
        all->bytes += s->ops[i].bytes;
        client_hist_merge(&all->lat, &s->ops[i].lat);
    }
    json_options(out, p);
    (void)fprintf(out,
                  ", \"requests\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"bytes\": %" PRIu64
                  ", \"requests_per_s\": %.3f, \"mb_per_s\": %.3f, \"arrivals\": %" PRIu64
                  ", \"arrivals_per_s\": %.3f, \"arrivals_late\": %" PRIu64 ", \"hits\": %" PRIu64
                  ", \"misses\": %" PRIu64 ", \"misses_evicted\": %" PRIu64
                  ", \"hit_rate\": %.4f, \"latency_ns\": ",
                  all->ok, all->errors, all->bytes, (double)all->ok / secs,
                  (double)all->bytes / secs / 1e6, s->arrivals, (double)s->arrivals / secs,
                  s->arrivals_late, s->hits, s->misses, s->misses_evicted, hit_rate(s));
    json_latency(out, &all->lat);
    (void)fprintf(out, ", \"small_latency_ns\": ");
    json_latency(out, &s->small.lat);
    (void)fprintf(out, ", \"small\": ");
    json_op(out, &s->small, secs);
    (void)fprintf(out, ", \"ops\": {");
    bool first = true;
    for (size_t i = 0; i < BENCH_OP_COUNT; i++) {
        if (!op_seen(&s->ops[i])) continue;
        (void)fprintf(out, "%s\"%s\": ", first ? "" : ", ", bench_op_names[i]);
        json_op(out, &s->ops[i], secs);
        first = false;
    }
    (void)fprintf(out, "}, \"errors_by_status\": {");
    for (uint32_t i = 0; i < s->err_count; i++) {
        char name[64];
        err_name(&s->errs[i], name, sizeof(name));
        (void)fprintf(out, "%s\"%s\": %" PRIu64, i ? ", " : "", name, s->errs[i].count);
    }
    if (s->err_other) {
        (void)fprintf(out, "%s\"other\": %" PRIu64, s->err_count ? ", " : "", s->err_other);
    }
    (void)fprintf(out, "}, \"first_error\": ");
    json_string(out, s->first_error);
    (void)fprintf(out, "}\n");
}

void bench_report(FILE *out, const struct bench_plan *p, const struct bench_stats *s,
                  double seconds)
{
    if (p->o.json) {
        struct bench_op_stats *all = calloc(1, sizeof(*all));
        if (!all) return;
        client_hist_reset(&all->lat);
        report_json(out, p, s, seconds, all);
        free(all);
    } else {
        report_text(out, p, s, seconds);
    }
}
