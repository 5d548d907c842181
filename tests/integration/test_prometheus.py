"""GET /metrics as Prometheus itself reads it: Debian's prometheus package (scripts/deps.sh),
not our own parser. After traffic on every route and every kind of status (HTTP GET, PUT and
HEAD of /cas, /ac and plain keys, 400s, 404s, 405, 415, 501, a client that hangs up mid-body
for a 499, gRPC calls that succeed and that fail), `promtool check metrics` must find no error
and no lint problem but the ones kept on purpose (KEPT), and a real Prometheus server that
scrapes the node every second must see it up, a counter's rate above zero and a latency
quantile. Prometheus runs on a free 127.0.0.1 port with a temporary TSDB, and is stopped and
removed whatever happens."""

import ctypes
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

import grpc

import harness
import reapi
from http1 import Raw, request

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# Lint problems kept on purpose, (metric, problem). promlint reads "_pb_" as petabytes; here it
# is protobuf, and the gauge's name is the one docs/grpc.md and the tests have always used.
KEPT = {
    ("ringcas_pb_mem_bytes", "metric names should not contain abbreviated units"),
    ("ringcas_pb_mem_refused_total", "metric names should not contain abbreviated units"),
}

SC = grpc.StatusCode


def sha(data):
    return hashlib.sha256(data).hexdigest()


def digest(data):
    return reapi.msg("Digest", hash=sha(data), size_bytes=len(data))


def call(port, method, path, body=b"", headers=()):
    headers = list(headers)
    if method == "PUT" and not body:
        headers.append("Content-Length: 0")
    with Raw(port) as c:
        c.send(request(method, path, headers=headers, body=body))
        return c.read_response(head_request=method == "HEAD").status


def drive_http(test, port):
    """Every HTTP/1.1 route once, with the statuses each can answer."""
    data = os.urandom(1000)
    h = sha(data)
    missing = sha(os.urandom(16))
    want = [
        ("PUT", "/cas/" + h, data, (), 201),
        ("PUT", "/cas/" + h, data, (), 200),
        ("GET", "/cas/" + h, b"", (), 200),
        ("HEAD", "/cas/" + h, b"", (), 200),
        ("GET", "/cas/" + missing, b"", (), 404),
        ("HEAD", "/cas/" + missing, b"", (), 404),
        ("GET", "/cas/123", b"", (), 400),
        ("PUT", "/cas/" + missing, data, (), 400),  # the body's digest is not the path's
    ]
    ar = reapi.msg("ActionResult", exit_code=0)
    ar.output_files.add(path="out", digest=digest(data))
    value = ar.SerializeToString()
    key = sha(os.urandom(16))
    want += [
        ("PUT", "/bazel/ac/" + key, value, (), 201),
        ("GET", "/bazel/ac/" + key, b"", (), 200),
        ("HEAD", "/bazel/ac/" + key, b"", (), 200),
        ("GET", "/bazel/ac/" + missing, b"", (), 404),
        ("HEAD", "/bazel/ac/" + missing, b"", (), 404),
        ("PUT", "/ccache/k-" + key, b"plain value", (), 201),
        ("GET", "/ccache/k-" + key, b"", (), 200),
        ("HEAD", "/ccache/k-" + key, b"", (), 200),
        ("GET", "/ccache/k-" + missing, b"", (), 404),
        ("GET", "/healthz", b"", (), 200),
        ("GET", "/readyz", b"", (), 200),
        ("GET", "/metrics", b"", (), 200),
        ("PUT", "/metrics", b"x", (), 405),
        ("BREW", "/healthz", b"", (), 501),
        ("PUT", "/k-" + key, b"x", ("Content-Encoding: gzip",), 415),
    ]
    for method, path, body, headers, status in want:
        test.assertEqual(call(port, method, path, body, headers), status, (method, path))
    with Raw(port) as c:  # a malformed request line: 400, and the connection closes
        c.send(b"GET  /healthz HTTP/1.1\r\n\r\n")
        test.assertEqual(c.read_response().status, 400)
    with Raw(port) as c:  # the client hangs up in the middle of the body: counted as 499
        c.send(request("PUT", "/cas/" + missing, headers=["Content-Length: 1000"]) + b"x" * 10)
        c.sock.shutdown(socket.SHUT_WR)
        test.assertTrue(c.is_closed())


def drive_grpc(test, address):
    """A few REAPI, ByteStream and Health calls, with OK and error codes."""
    c = reapi.Client(address)
    try:
        c.Check(reapi.msg("grpc.health.v1.HealthCheckRequest"), timeout=30)
        c.GetCapabilities(reapi.msg("GetCapabilitiesRequest"), timeout=30)
        data = os.urandom(3000)
        req = reapi.msg("BatchUpdateBlobsRequest")
        r = req.requests.add()
        r.digest.CopyFrom(digest(data))
        r.data = data
        test.assertEqual(c.BatchUpdateBlobs(req, timeout=30).responses[0].status.code, 0)
        c.FindMissingBlobs(reapi.msg("FindMissingBlobsRequest", blob_digests=[digest(data)]),
                           timeout=30)
        c.BatchReadBlobs(reapi.msg("BatchReadBlobsRequest", digests=[digest(data)]), timeout=30)
        more = os.urandom(5000)
        name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), sha(more), len(more))
        w = reapi.msg("google.bytestream.WriteRequest", resource_name=name, data=more,
                      finish_write=True)
        test.assertEqual(c.Write(iter([w]), timeout=30).committed_size, len(more))
        read = reapi.msg("google.bytestream.ReadRequest",
                         resource_name="blobs/%s/%d" % (sha(more), len(more)))
        test.assertEqual(b"".join(x.data for x in c.Read(read, timeout=30)), more)
        gone = os.urandom(10)
        failing = [
            (lambda: list(c.Read(reapi.msg("google.bytestream.ReadRequest",
                                           resource_name="blobs/%s/10" % sha(gone)),
                                 timeout=30)), SC.NOT_FOUND),
            (lambda: list(c.Read(reapi.msg("google.bytestream.ReadRequest",
                                           resource_name="blobs/nothex/1"), timeout=30)),
             SC.INVALID_ARGUMENT),
            (lambda: c.GetActionResult(reapi.msg("GetActionResultRequest",
                                                 action_digest=digest(gone)), timeout=30),
             SC.NOT_FOUND),
            (lambda: c.raw("/no.such.Service/Method")(b"", timeout=30), SC.UNIMPLEMENTED),
        ]
        for fn, code in failing:
            with test.assertRaises(grpc.RpcError) as cm:
                fn()
            test.assertEqual(cm.exception.code(), code)
    finally:
        c.close()


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In the child before exec: SIGTERM when the test's process dies, so that a test killed
    by ctest's timeout leaves no Prometheus behind (prctl(2))."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


_PROBLEM = re.compile(r"^(ringcas_[a-zA-Z0-9_:]*) (.+)$")


def promtool_check(text):
    """`promtool check metrics` on <text>: (exit status, [(metric, problem)], raw output)."""
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    problems = []
    for line in out.splitlines():
        m = _PROBLEM.match(line.strip())
        if m:
            problems.append((m.group(1), m.group(2)))
    return p.returncode, problems, out


def series_problems(text):
    """What promtool does not check: a series given twice, and a histogram whose _count is not
    its +Inf bucket."""
    seen = set()
    dupes = []
    inf = {}
    count = {}
    for name, labels, value in harness.parse_metrics(text):
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            dupes.append(key)
        seen.add(key)
        if name.endswith("_bucket") and labels.get("le") == "+Inf":
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            inf[(name[:-len("_bucket")], rest)] = value
        elif name.endswith("_count"):
            count[(name[:-len("_count")], tuple(sorted(labels.items())))] = value
    mismatched = [(k, inf[k], count.get(k)) for k in inf if count.get(k) != inf[k]]
    return dupes, mismatched


class Prometheus:
    """A real Prometheus server scraping <target> every second, on a free port, with its
    configuration and TSDB in a temporary folder that stop() removes."""

    def __init__(self, target):
        self.target = target
        self.dir = tempfile.mkdtemp(prefix="ringcas-prometheus-")
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: ringcas\n"
                    "    static_configs:\n"
                    "      - targets: ['%s']\n" % target)
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None
        self.port = None

    def start(self):
        for _ in range(20):
            if self._start(harness.pick_port() or self._free_port()):
                return self
        raise AssertionError("no free port for Prometheus\n" + self.log_tail())

    @staticmethod
    def _free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _start(self, port):
        """True once it answers /-/ready; False when the port was taken."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS, "--config.file=" + self.config,
                 "--storage.tsdb.path=" + os.path.join(self.dir, "tsdb"),
                 "--web.listen-address=127.0.0.1:%d" % port],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=die_with_parent)
        self.port = port
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                if "address already in use" in self.log_tail():
                    return False
                raise AssertionError("prometheus exited\n" + self.log_tail())
            try:
                status, _ = self.get("/-/ready")
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready within 60 s\n" + self.log_tail())

    def stop(self):
        try:
            if self.proc and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    def get(self, path):
        """GET <path> on Prometheus, directly (no proxy from the environment)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def query(self, promql):
        """An instant query's result vector: [(labels, float value)]."""
        status, body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if status != 200:
            raise AssertionError("query %r: HTTP %d %s" % (promql, status, body[:300]))
        data = json.loads(body)["data"]
        if data["resultType"] != "vector":
            raise AssertionError("query %r: %r" % (promql, data))
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def self_metric(self, name):
        """Sum of Prometheus's own <name> samples (from its /metrics)."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


class PrometheusReads(harness.ServerTestCase):
    server_args = ("--max-size", "1GiB")

    def tearDown(self):
        self.server.wait_quiet(extra=("blob_readers", "bs_readers", "pb_mem_bytes"))

    def check(self, text, when):
        rc, problems, out = promtool_check(text)
        self.assertIn(rc, (0, 3), "promtool check metrics (%s) failed:\n%s" % (when, out))
        unexpected = ["%s %s" % p for p in problems if p not in KEPT]
        if unexpected:
            self.fail("promtool check metrics (%s) found %d problems:\n%s" %
                      (when, len(unexpected), "\n".join(unexpected)))
        if rc == 3:  # lint problems only: each must be one kept on purpose
            self.assertTrue(problems, out)
        dupes, mismatched = series_problems(text)
        self.assertEqual(dupes, [], "series given twice (%s)" % when)
        self.assertEqual(mismatched, [], "histogram _count is not its +Inf bucket (%s)" % when)

    def test_promtool_finds_no_problem_after_every_route_and_status(self):
        self.check(self.server.metrics_text(), "fresh server")
        drive_http(self, self.server.port)
        drive_grpc(self, self.server.address)
        harness.wait_for(lambda: self.server.metric("ringcas_requests_total",
                                                    status="499") >= 1, what="a 499")
        text = self.server.metrics_text()
        # The traffic reached what it is meant to reach.
        samples = harness.parse_metrics(text)
        statuses = {(l["protocol"], l["status"]) for n, l, v in samples
                    if n == "ringcas_requests_total" and v > 0}
        for want in (("http", "200"), ("http", "201"), ("http", "400"), ("http", "404"),
                     ("http", "405"), ("http", "415"), ("http", "499"), ("http", "501"),
                     ("grpc", "0"), ("grpc", "3"), ("grpc", "5"), ("grpc", "12")):
            self.assertIn(want, statuses)
        self.check(text, "after traffic")

    def test_store_figures_are_one_series_on_core_0(self):
        """The store's figures are store-wide: one series each, core="0". A zero series per
        other core made min(ringcas_store_budget_bytes), or an alert on the bare name, see a
        budget of 0 (docs/operations.md "Live counters")."""
        samples = harness.parse_metrics(self.server.metrics_text())
        store = [(n, l.get("core")) for n, l, v in samples if n.startswith("ringcas_store_")]
        self.assertIn(("ringcas_store_budget_bytes", "0"), store)
        self.assertEqual([s for s in store if s[1] != "0"], [])
        # Per-core engine counters keep a series per core.
        cores = {l.get("core") for n, l, v in samples if n == "ringcas_blob_uploads"}
        self.assertEqual(cores, {str(c) for c in range(self.server.cores)})

    def test_every_store_figure_is_documented(self):
        """An operator sizing --max-size watches the store's figures: how many blobs, how much
        memory the index takes, and above all how fast eviction deletes segments and blobs.
        docs/operations.md named only the size gauges and the damage counters, so an operator
        had no documented way to see evictions (ringcas_store_evicted_*_total)."""
        doc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                           "operations.md")
        with open(doc) as f:
            text = f.read()
        names = sorted({n for n, _, _ in harness.parse_metrics(self.server.metrics_text())
                        if n.startswith("ringcas_store_")})
        self.assertGreater(len(names), 5)
        self.assertEqual([n for n in names if "`%s`" % n not in text], [])

    def test_prometheus_scrapes_rates_and_quantiles(self):
        prom = Prometheus(self.server.address)
        stop = threading.Event()
        failure = []

        def traffic():
            try:
                while not stop.is_set():
                    drive_http(self, self.server.port)
                    drive_grpc(self, self.server.address)
                    stop.wait(0.2)
            except BaseException as e:  # reported by the main thread
                failure.append(e)

        worker = threading.Thread(target=traffic, daemon=True)
        try:
            prom.start()
            worker.start()
            job = '{job="ringcas"}'
            queries = {
                "up": "up" + job,
                "rate": "sum(rate(ringcas_requests_total%s[10s]))" % job,
                # A ring counter, by the name Prometheus users expect (with _total).
                "accepts": "sum(rate(ringcas_conns_accepted_total%s[10s]))" % job,
                "quantile": "histogram_quantile(0.9, sum by (le) "
                            "(rate(ringcas_request_duration_seconds_bucket%s[10s])))" % job,
            }
            seen = {}

            def answered():
                if failure:
                    raise failure[0]
                for k, q in queries.items():
                    r = prom.query(q)
                    seen[k] = r[0][1] if len(r) == 1 else r
                # A rate needs two scrapes in its window; NaN (no traffic) is not a number.
                rates = all(isinstance(seen[k], float) and seen[k] > 0
                            for k in ("rate", "accepts"))
                return (seen["up"] == 1 and rates and isinstance(seen["quantile"], float) and
                        seen["quantile"] == seen["quantile"] and seen["quantile"] > 0) or None

            try:
                harness.wait_for(answered, timeout=90, interval=0.5, what="Prometheus' answers")
            except AssertionError as e:
                raise AssertionError("%s: %r\n%s" % (e, seen, prom.log_tail())) from None
            status, body = prom.get("/api/v1/targets")
            self.assertEqual(status, 200)
            targets = json.loads(body)["data"]["activeTargets"]
            self.assertEqual([(t["health"], t["lastError"]) for t in targets], [("up", "")])
            # Samples Prometheus dropped while ingesting a scrape.
            for name in ("prometheus_target_scrapes_sample_duplicate_timestamp_total",
                         "prometheus_target_scrapes_sample_out_of_order_total",
                         "prometheus_target_scrapes_sample_out_of_bounds_total",
                         "prometheus_target_scrapes_exemplar_out_of_order_total"):
                self.assertEqual(prom.self_metric(name), 0, name)
        finally:
            stop.set()
            if worker.is_alive():
                worker.join(timeout=120)
            prom.stop()
        if failure:
            raise failure[0]


if __name__ == "__main__":
    unittest.main()
