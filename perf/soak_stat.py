#!/usr/bin/python3
"""perf/soak.sh's sampler and report.

  soak_stat.py sample PID PORT OUTDIR LABEL   append one sample (samples.jsonl, samples.tsv)
  soak_stat.py idle PORT TIMEOUT_S            wait until the in-flight gauges are at rest
  soak_stat.py summary OUTDIR                 print the run's summary (markdown-ish text)
  soak_stat.py table OUTDIR [N]               every Nth sample as a markdown table

A sample is the server's /proc/PID/status (VmRSS, VmHWM, RssAnon, Threads), its open
descriptors, and every /metrics gauge and counter summed over cores (histograms left out),
plus requests by protocol and status."""

import json
import os
import sys
import time
import urllib.request

# Gauges that count work under way: each must be back to its value before the load once the
# load stopped (ringcas_conns counts the scrape's own connection).
IN_FLIGHT = [
    "ringcas_conns", "ringcas_h2_conns", "ringcas_h2_streams", "ringcas_grpc_calls",
    "ringcas_grpc_segs", "ringcas_grpc_slices", "ringcas_grpc_pins", "ringcas_bs_uploads",
    "ringcas_bs_uploads_parked", "ringcas_bs_readers", "ringcas_requests_in_flight",
    "ringcas_ops_in_flight", "ringcas_bufs_out", "ringcas_h2_mem_bytes", "ringcas_pb_mem_bytes",
    "ringcas_blob_uploads", "ringcas_blob_readers", "ringcas_blob_refreshes_open",
    "ringcas_blob_io_in_flight", "ringcas_store_held_bytes", "ringcas_store_pinned_segments",
]

# Memory kept on purpose between requests, each with its bound (docs/operations.md "Memory"):
# the engine's buffer pool (an eighth of --read-memory per core), the core's own zstd
# contexts (sized by the level and the chunk size once used), the index (grows to the most
# blobs held, never shrinks).
KEPT = ["ringcas_blob_pool_bytes", "ringcas_blob_zstd_bytes", "ringcas_store_index_bytes"]

# The TSV's columns after the process's own.
TSV_METRICS = IN_FLIGHT + KEPT + [
    "ringcas_blob_bufs", "ringcas_store_blobs", "ringcas_store_disk_bytes", "ringcas_store_segments",
    "ringcas_store_evicted_segments_total", "ringcas_store_evicted_blobs_total",
    "ringcas_conns_accepted_total", "ringcas_read_timeouts_total", "ringcas_write_timeouts_total",
    "ringcas_grpc_deadlines_total", "ringcas_grpc_cancels_total", "ringcas_grpc_stalls_total",
    "ringcas_blob_uploads_aborted_total", "ringcas_blob_refreshes_total",
    "ringcas_blob_refreshes_dropped_total", "ringcas_stale_cqes_total", "ringcas_enobufs_total",
    "ringcas_blob_write_errors_total", "ringcas_blob_fsync_errors_total",
    "ringcas_blob_digest_mismatches_total", "ringcas_h2_protocol_errors_total",
    "ringcas_conns_rejected_total", "ringcas_blob_full_total",
]


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=30) as r:
        text = r.read().decode()
    kinds, vals, reqs, buckets = {}, {}, {}, {}
    for line in text.splitlines():
        if line.startswith("ringcas_request_duration_seconds_bucket{"):
            # Server-side latency: requests over 100 ms and over 1 s, by route.
            key, _, value = line.rpartition(" ")
            labels = dict(p.split("=", 1) for p in key[key.index("{") + 1:-1].split(","))
            route, le = labels["route"].strip('"'), labels["le"].strip('"')
            if le in ("0.1", "1", "+Inf"):
                b = buckets.setdefault(route, {})
                b[le] = b.get(le, 0) + float(value)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            kinds[name] = kind
            continue
        if not line or line[0] == "#":
            continue
        key, _, value = line.rpartition(" ")
        name = key.split("{", 1)[0]
        if kinds.get(name) not in ("gauge", "counter"):
            continue
        v = float(value)
        vals[name] = vals.get(name, 0) + v
        if name == "ringcas_requests_total":
            labels = dict(p.split("=", 1) for p in key[len(name) + 1:-1].split(","))
            k = "%s %s" % (labels["protocol"].strip('"'), labels["status"].strip('"'))
            reqs[k] = reqs.get(k, 0) + v
    slow = {r: [b.get("+Inf", 0) - b.get("0.1", 0), b.get("+Inf", 0) - b.get("1", 0)]
            for r, b in buckets.items()}
    return vals, reqs, slow


def proc(pid):
    out = {}
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
    out["fds"] = len(os.listdir("/proc/%s/fd" % pid))
    return out


def sample(pid, port, outdir, label):
    p = proc(pid)
    vals, reqs, slow = scrape(port)
    t = time.time()
    row = {"t": t, "label": label, "proc": p, "metrics": vals, "requests": reqs, "slow": slow}
    with open(os.path.join(outdir, "samples.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    write_tsv(outdir)


def write_tsv(outdir):
    """samples.tsv: the samples so far, one row each (rewritten whole: a few hundred rows)."""
    cols = ["time", "label", "rss_kb", "hwm_kb", "anon_kb", "threads", "fds"] + \
        [c.replace("ringcas_", "") for c in TSV_METRICS]
    lines = ["\t".join(cols)]
    for x in open(os.path.join(outdir, "samples.jsonl")):
        r = json.loads(x)
        p, vals = r["proc"], r["metrics"]
        lines.append("\t".join([time.strftime("%H:%M:%S", time.gmtime(r["t"])), r["label"],
                                str(p["VmRSS"]), str(p["VmHWM"]), str(p.get("RssAnon", "")),
                                str(p["Threads"]), str(p["fds"])] +
                               ["%d" % vals.get(c, -1) for c in TSV_METRICS]))
    tmp = os.path.join(outdir, "samples.tsv.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(outdir, "samples.tsv"))


def idle(port, timeout):
    """Waits until the in-flight gauges stop moving and hold no upload, stream or reader."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        vals, _, _ = scrape(port)
        cur = tuple(vals.get(c, 0) for c in IN_FLIGHT)
        busy = sum(vals.get(c, 0) for c in ("ringcas_bs_uploads", "ringcas_bs_uploads_parked",
                                             "ringcas_bs_readers", "ringcas_grpc_calls",
                                             "ringcas_blob_uploads", "ringcas_blob_readers"))
        if cur == last and busy == 0 and vals.get("ringcas_conns", 0) <= 1:
            return 0
        last = cur
        time.sleep(2)
    print("soak: not idle after %ss" % timeout, file=sys.stderr)
    return 1


def slope_per_hour(points):
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 3600 if sxx else 0.0


def summary(outdir):
    rows = [json.loads(x) for x in open(os.path.join(outdir, "samples.jsonl"))]
    start = next(r for r in rows if r["label"] == "start")
    load = [r for r in rows if r["label"] == "load"]
    idle_rows = [r for r in rows if r["label"] == "idle"]
    meta = json.load(open(os.path.join(outdir, "meta.json")))
    t0 = load[0]["t"] if load else start["t"]
    warm = [r for r in load if r["t"] - t0 >= meta["warmup_s"]]
    mib = lambda kb: "%.1f MiB" % (kb / 1024)
    print("## soak summary (%s)" % outdir)
    print("load: %.1f min, %d samples (%d after the %d s warm-up)" %
          ((load[-1]["t"] - t0) / 60 if load else 0, len(load), len(warm), meta["warmup_s"]))
    if warm:
        for key in ("VmRSS", "RssAnon"):
            vs = [r["proc"][key] for r in warm]
            half = warm[len(warm) // 2:]
            sl = slope_per_hour([(r["t"], r["proc"][key] / 1024) for r in half])
            print("%-8s after warm-up: first %s, last %s, max %s; slope over the second half "
                  "%+.1f MiB/h" % (key, mib(vs[0]), mib(vs[-1]), mib(max(vs)), sl))
        print("VmHWM    at the end of the load: %s" % mib(load[-1]["proc"]["VmHWM"]))
        sl = slope_per_hour([(r["t"], r["proc"]["fds"]) for r in warm[len(warm) // 2:]])
        print("fds      under load: min %d, max %d (slope %+.1f/h); threads %d..%d" %
              (min(r["proc"]["fds"] for r in warm), max(r["proc"]["fds"] for r in warm), sl,
               min(r["proc"]["Threads"] for r in warm), max(r["proc"]["Threads"] for r in warm)))
    if idle_rows:
        end = idle_rows[-1]
        print("\nat idle vs. at start (before any load):")
        print("  %-36s %14s %14s" % ("", "start", "idle"))
        bad = []
        for k in ("fds", "Threads", "VmRSS", "RssAnon"):
            print("  %-36s %14d %14d" % (k, start["proc"][k], end["proc"][k]))
        for c in IN_FLIGHT:
            a, b = start["metrics"].get(c, 0), end["metrics"].get(c, 0)
            flag = "" if a == b else "   <-- not back"
            if a != b:
                bad.append(c)
            print("  %-36s %14d %14d%s" % (c.replace("ringcas_", ""), a, b, flag))
        extra_fds = end["proc"]["fds"] - start["proc"]["fds"]
        segs = end["metrics"].get("ringcas_store_segments", 0) - \
            start["metrics"].get("ringcas_store_segments", 0)
        print("  fds beyond start: %+d (segments beyond start: %+d)" % (extra_fds, segs))
        print("IN-FLIGHT GAUGES BACK TO IDLE: %s" % ("yes" if not bad else "NO: " + ", ".join(bad)))
        print("kept on purpose (bounded; start, max under load, idle):")
        for c in KEPT:
            print("  %-36s %14d %14d %14d" % (c.replace("ringcas_", ""), start["metrics"].get(c, 0),
                                               max(r["metrics"].get(c, 0) for r in load),
                                               end["metrics"].get(c, 0)))
        print("store at idle:")
        for c in ("ringcas_store_blobs", "ringcas_store_disk_bytes", "ringcas_store_segments",
                  "ringcas_store_evicted_segments_total", "ringcas_store_evicted_blobs_total",
                  "ringcas_blob_refreshes_total", "ringcas_blob_refreshes_dropped_total",
                  "ringcas_blob_uploads_aborted_total", "ringcas_conns_accepted_total"):
            print("  %-36s %14d" % (c.replace("ringcas_", ""), end["metrics"].get(c, 0)))
        print("server-side latency over the run, requests over 100 ms / over 1 s, by route:")
        for route, (a, b) in sorted(end.get("slow", {}).items()):
            if a:
                print("  %-40s %6d / %d" % (route, a, b))
        print("requests by protocol and status over the run:")
        for k, v in sorted(end["requests"].items()):
            if v:
                print("  %-20s %d" % (k, v))
    print("\nbench slices (mix, open loop):")
    print("  %-5s %-6s %8s %6s %5s %9s %9s %9s %9s  %s" %
          ("slice", "exit", "actions", "hits", "late", "p50 ms", "p99 ms", "small p99", "max ms",
           "errors by status"))
    i = 0
    while True:
        path = os.path.join(outdir, "slice%02d.json" % i)
        if not os.path.exists(path):
            break
        code = open(os.path.join(outdir, "slice%02d.rc" % i)).read().strip() \
            if os.path.exists(os.path.join(outdir, "slice%02d.rc" % i)) else "?"
        try:
            j = json.load(open(path))
            lat = j["latency_ns"]
            print("  %-5d %-6s %8d %6d %5d %9.2f %9.2f %9.2f %9.1f  %s" %
                  (i, code, j["arrivals"], j.get("hits", 0), j.get("arrivals_late", 0),
                   lat["p50"] / 1e6, lat["p99"] / 1e6, j["small_latency_ns"]["p99"] / 1e6,
                   lat["max"] / 1e6, json.dumps(j.get("errors_by_status", {}))))
            if j.get("first_error"):
                print("        first error: %s" % j["first_error"])
        except (ValueError, KeyError) as e:
            print("  %-5d %-6s (no report: %s)" % (i, code, e))
        i += 1
    cpath = os.path.join(outdir, "churn.json")
    if os.path.exists(cpath):
        print("\nchurn outcomes:")
        for kind, outs in sorted(json.load(open(cpath)).items()):
            print("  %-28s %s" % (kind, json.dumps(outs, sort_keys=True)))
    for name in ("stop.txt", "restart.txt"):
        p = os.path.join(outdir, name)
        if os.path.exists(p):
            print("\n" + open(p).read().rstrip())


def table(outdir, every):
    """A markdown table of every <every>th load sample, and the start and idle ones."""
    rows = [json.loads(x) for x in open(os.path.join(outdir, "samples.jsonl"))]
    t0 = rows[0]["t"]
    load = [r for r in rows if r["label"] == "load"]
    pick = [rows[0]] + load[every - 1::every] + [r for r in rows if r["label"] == "idle"]
    cols = [("RSS MiB", lambda r: "%.0f" % (r["proc"]["VmRSS"] / 1024)),
            ("anon MiB", lambda r: "%.0f" % (r["proc"]["RssAnon"] / 1024)),
            ("thr", lambda r: r["proc"]["Threads"]), ("fds", lambda r: r["proc"]["fds"])]
    short = [("conns", "ringcas_conns"), ("streams", "ringcas_h2_streams"),
             ("uploads", "ringcas_bs_uploads"), ("parked", "ringcas_bs_uploads_parked"),
             ("readers", "ringcas_blob_readers"), ("refresh q", "ringcas_blob_refreshes_open"),
             ("pinned", "ringcas_store_pinned_segments"), ("blobs", "ringcas_store_blobs")]
    for name, m in short:
        cols.append((name, lambda r, m=m: "%d" % r["metrics"].get(m, 0)))
    for name, m in (("held MiB", "ringcas_store_held_bytes"),
                    ("store MiB", "ringcas_store_disk_bytes"),
                    ("pool MiB", "ringcas_blob_pool_bytes")):
        cols.append((name, lambda r, m=m: "%.1f" % (r["metrics"].get(m, 0) / 2**20)))
    cols.append(("evicted segs", lambda r: "%d" %
                 r["metrics"].get("ringcas_store_evicted_segments_total", 0)))
    print("| min | " + " | ".join(c for c, _ in cols) + " |")
    print("|---:|" + "---:|" * len(cols))
    for r in pick:
        label = "%.0f" % ((r["t"] - t0) / 60) if r["label"] == "load" else r["label"]
        print("| %s | " % label + " | ".join(str(f(r)) for _, f in cols) + " |")


def main():
    cmd = sys.argv[1]
    if cmd == "table":
        table(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
        return
    if cmd == "sample":
        sample(*sys.argv[2:6])
    elif cmd == "idle":
        sys.exit(idle(sys.argv[2], float(sys.argv[3])))
    elif cmd == "summary":
        summary(sys.argv[2])
    else:
        sys.exit("usage: soak_stat.py sample|idle|summary ...")


if __name__ == "__main__":
    main()
