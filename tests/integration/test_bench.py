"""ringcas bench against the real `ringcas serve`: each workload runs for a couple of seconds
and must report zero errors and consistent numbers (not timings): requests > 0, bytes equal to
requests x blob bytes, percentiles in order, histogram counts adding up, the JSON parsing.

Workloads whose gRPC services the server in this build does not serve yet (it answers
UNAVAILABLE "storage engine not available in this build", or UNIMPLEMENTED) are skipped with
that reason; the HTTP/1.1 ones always run. Also: --help documents every workload and flag
with its RINGCAS_* twin, flags have environment twins, the text report, open loop at a fixed
rate, and an unreachable server (exit status 5); a server stalled by SIGSTOP in an open-loop
run; percentiles against injected delays; fake servers (http.server, grpcio) whose answers
have the right shape but the wrong contents, which must count as errors, not throughput.
"""

import contextlib
import hashlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness

SIZE = 4096
BATCH = 8
NOT_SERVED = ("storage engine not available", "UNIMPLEMENTED")
WORKLOADS = ("bs-read", "bs-write", "batch-read", "batch-update", "find-missing", "ac-get",
             "http-get", "http-put", "mix")
# Gauges of the server that must be back to zero after every run.
QUIET = ("grpc_calls", "h2_streams", "bs_readers", "bs_uploads", "grpc_pins")
# The same while uploads may be parked (a run that ends with a write in flight, as the mix can).
QUIET_ACTIVE = tuple(g for g in QUIET if g != "bs_uploads")
DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs")


def bench(server, *args, env=None, timeout=300):
    """Runs `ringcas bench` against <server>; returns (exit status, stdout, stderr)."""
    cmd = [harness.binary(), "bench", "--server", server, "--duration", "2s", "--warmup", "300ms",
           "--threads", "2", "--conns", "2", "--concurrency", "8", "--size", str(SIZE),
           "--blobs", "32", "--batch", str(BATCH), "--mix-actions", "40", "--mix-max-size",
           "2MiB", "--timeout", "20s"] + list(args)
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1:exitcode=66")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=full_env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def check_latency(tc, lat, what):
    """Percentiles in order and the histogram adding up to the count."""
    tc.assertGreater(lat["count"], 0, what)
    order = [lat[k] for k in ("min", "p50", "p90", "p99", "p999", "max")]
    tc.assertEqual(order, sorted(order), "%s: percentiles out of order: %r" % (what, lat))
    tc.assertGreater(lat["max"], 0, what)
    tc.assertLessEqual(lat["min"], lat["mean"], what)
    tc.assertLessEqual(lat["mean"], lat["max"], what)
    tc.assertEqual(sum(c for _, c in lat["histogram"]), lat["count"], what)
    bounds = [b for b, _ in lat["histogram"]]
    tc.assertEqual(bounds, sorted(bounds), what)


@contextlib.contextmanager
def http_server(answer, put_status=None, bodies=None):
    """A throwaway HTTP/1.1 server on 127.0.0.1 whose every GET is answered by answer(path),
    a (status, body) pair or (status, body, extra header pairs), sent at once (no Nagle delay
    between head and body); every PUT is taken whole and answered 201, or the status
    put_status(n) returns for the n-th PUT; the bodies of those answered 201 go in
    bodies[path] when a dict is given. Yields its HOST:PORT."""
    puts = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_PUT(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            puts[0] += 1
            status = put_status(puts[0]) if put_status else 201
            if status == 201 and bodies is not None:
                bodies[self.path] = body
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            status, body, *extra = answer(self.path)
            self.send_response(status)
            for name, value in extra[0] if extra else ():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield "127.0.0.1:%d" % srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


class BenchTest(harness.ServerTestCase):
    server_args = ("--max-size", "4GiB")

    def run_json(self, workload, *args):
        rc, out, err = bench(self.server.address, "--workload", workload, "--json", *args)
        if rc != 0 and any(s in err + out for s in NOT_SERVED):
            self.skipTest("%s: not served by this build (%s)" % (workload, err.strip()[-200:]))
        self.assertEqual(rc, 0, "%s: exit %d\n%s\n%s" % (workload, rc, out, err))
        r = json.loads(out)
        self.assertEqual(r["workload"], workload)
        self.assertEqual(r["errors"], 0, r["errors_by_status"])
        self.assertEqual(r["errors_by_status"], {})
        self.assertGreater(r["requests"], 0)
        self.assertGreater(r["requests_per_s"], 0)
        check_latency(self, r["latency_ns"], workload)
        for name, op in r["ops"].items():
            self.assertEqual(op["errors"], 0, name)
            if op["ok"]:
                check_latency(self, op["latency_ns"], "%s %s" % (workload, name))
                self.assertEqual(op["latency_ns"]["count"], op["ok"], name)
        self.server.wait_quiet(extra=QUIET_ACTIVE)
        # Uploads cut off when the run ended are parked for resumption for a minute
        # (docs/grpc.md); every engine upload still held must be one of those.
        self.assertEqual(self.server.metric("ringcas_bs_uploads"),
                         self.server.metric("ringcas_bs_uploads_parked"))
        return r

    def check_single(self, workload, op, per_request, *args):
        r = self.run_json(workload, *args)
        self.assertEqual(list(r["ops"]), [op])
        self.assertEqual(r["bytes"], r["requests"] * per_request)
        self.assertEqual(r["ops"][op]["bytes"], r["ops"][op]["ok"] * per_request)
        self.assertEqual(r["arrivals"], r["requests"])
        return r

    def test_bs_read(self):
        r = self.check_single("bs-read", "ByteStream.Read", SIZE)
        self.assertEqual(r["blobs_seeded"], 32)

    def test_bs_write(self):
        self.check_single("bs-write", "ByteStream.Write", SIZE)

    def test_bs_write_large_random_blobs_keep_the_stream_in_order(self):
        # Uploads fast enough to meet the engine's backpressure mid-slice: the rest of a held
        # slice must be fed before slices that arrived after it, or the deframer reads the
        # stream out of order (it answered INTERNAL "compressed messages are not accepted").
        # Its own server: uploads cut off when the run ends are parked for resumption for a
        # minute (docs/grpc.md), which the other tests' quiet checks would count.
        with harness.Server(args=self.server_args) as srv:
            rc, out, err = bench(srv.address, "--workload", "bs-write", "--json", "--size",
                                 "4MiB", "--data", "random", "--threads", "1", "--conns", "1",
                                 "--concurrency", "16", "--duration", "3s")
            self.assertEqual(rc, 0, "exit %d\n%s\n%s" % (rc, out, err))
            r = json.loads(out)
            self.assertEqual(r["errors_by_status"], {})
            self.assertGreater(r["ops"]["ByteStream.Write"]["ok"], 0)
            srv.wait_quiet(extra=QUIET_ACTIVE)
            # Every engine upload still held is a parked one.
            self.assertEqual(srv.metric("ringcas_bs_uploads"),
                             srv.metric("ringcas_bs_uploads_parked"))

    def test_batch_read(self):
        self.check_single("batch-read", "BatchReadBlobs", SIZE * BATCH)

    def test_batch_read_compressed_and_verified(self):
        # zstd blobs are decompressed and hashed: every one must check out.
        self.check_single("batch-read", "BatchReadBlobs", SIZE * BATCH, "--compress", "--verify",
                          "--data", "build")

    def test_batch_update(self):
        self.check_single("batch-update", "BatchUpdateBlobs", SIZE * BATCH)

    def test_find_missing(self):
        self.check_single("find-missing", "FindMissingBlobs", 0)

    def test_ac_get(self):
        r = self.check_single("ac-get", "GetActionResult", 0)
        self.assertEqual(r["actions_seeded"], 40)

    def test_http_get(self):
        self.check_single("http-get", "HTTP GET", SIZE)

    def test_http_get_compressed_and_verified(self):
        # zstd answers are decoded and hashed: every one must check out.
        self.check_single("http-get", "HTTP GET", SIZE, "--compress", "--verify", "--data",
                          "build")

    def test_http_put(self):
        self.check_single("http-put", "HTTP PUT", SIZE)

    def test_mix(self):
        r = self.run_json("mix", "--mix-hit", "50", "--data", "build")
        self.assertGreater(r["hits"], 0)
        self.assertGreater(r["misses"], 0)
        self.assertGreater(r["arrivals"], 0)
        ops = r["ops"]
        # Every action starts with a lookup; misses answered NOT_FOUND are expected, not errors.
        self.assertIn("GetActionResult", ops)
        self.assertGreater(ops["GetActionResult"]["expected"], 0)
        self.assertIn("FindMissingBlobs", ops)
        self.assertIn("UpdateActionResult", ops)
        self.assertTrue("BatchReadBlobs" in ops or "ByteStream.Read" in ops, list(ops))
        check_latency(self, r["small_latency_ns"], "mix small blobs")

    def test_mix_small_blob_class_counts_what_it_moved(self):
        # Blobs of at most 1 KiB: every blob request is a batch (BatchReadBlobs of a hit's
        # outputs, BatchUpdateBlobs of a miss's), all of the small-blob class. Its row had
        # only latencies: it printed 0.0 MB/s and 0 errors whatever it moved.
        r = self.run_json("mix", "--mix-max-size", "1KiB")
        ops = r["ops"]
        batches = [ops[k] for k in ("BatchReadBlobs", "BatchUpdateBlobs") if k in ops]
        small = r["small"]
        self.assertGreater(small["bytes"], 0, r)
        self.assertEqual(small["bytes"], sum(o["bytes"] for o in batches), r)
        self.assertEqual(small["ok"], sum(o["ok"] for o in batches), r)
        self.assertEqual(small["latency_ns"], r["small_latency_ns"])
        self.assertEqual(small["latency_ns"]["count"], small["ok"])
        rc, out, err = bench(self.server.address, "--workload", "mix", "--mix-max-size", "1KiB",
                             "--no-histogram")
        self.assertEqual(rc, 0, out + err)
        row = [line.split() for line in out.splitlines() if line.startswith("blobs < 64 KiB")]
        self.assertEqual(len(row), 1, out)
        ok, errors, per_s, mb_per_s = row[0][4:8]
        self.assertGreater(float(mb_per_s), 0, out)
        self.assertEqual(errors, "0", out)
        self.server.wait_quiet(extra=QUIET_ACTIVE)

    def test_open_loop_runs_at_the_rate(self):
        rc, out, err = bench(self.server.address, "--workload", "http-get", "--json",
                             "--rate", "200")
        self.assertEqual(rc, 0, out + err)
        r = json.loads(out)
        self.assertEqual(r["mode"], "open")
        self.assertEqual(r["errors"], 0)
        # 200 arrivals/s over a 2 s window: about 400 (the window's edges cut one or two).
        self.assertGreater(r["arrivals"], 200)
        self.assertLessEqual(r["arrivals"], 420)
        self.assertEqual(r["arrivals_late"], 0)
        check_latency(self, r["latency_ns"], "open loop")
        self.server.wait_quiet(extra=QUIET_ACTIVE)

    def test_open_loop_rate_is_kept_when_threads_do_not_divide_it(self):
        # Each thread paced itself at rate / threads rounded down: 15 over 8 threads sent 8
        # a second. One schedule dealt to the threads keeps 15.
        rc, out, err = bench(self.server.address, "--workload", "http-get", "--json",
                             "--rate", "15", "--threads", "8", "--concurrency", "2")
        self.assertEqual(rc, 0, out + err)
        r = json.loads(out)
        # 15 arrivals/s over a 2 s window: 30 (the window's edges cut one or two).
        self.assertGreaterEqual(r["arrivals"], 27, out)
        self.assertLessEqual(r["arrivals"], 31, out)
        self.assertEqual(r["arrivals_late"], 0, out)
        self.server.wait_quiet(extra=QUIET_ACTIVE)

    def test_open_loop_window_holds_rate_times_duration_arrivals(self):
        # Open loop counts arrivals by due time, so the window's count is exact: every arrival
        # due in it succeeds, fails or is late (test_late_arrivals_are_those_due_in_the_window). The window held both its ends: at --rate 10
        # a 300 ms warm-up and a 2 s window (both ending on an arrival) held 21 arrivals, and
        # --rate 1 for 1 s reported 2 requests, 2.0 req/s.
        for rate, warmup, duration, want in (("10", "300ms", "2s", 20), ("1", "0s", "1s", 1),
                                              ("4", "250ms", "1500ms", 6)):
            rc, out, err = bench(self.server.address, "--workload", "http-get", "--json",
                                 "--rate", rate, "--warmup", warmup, "--duration", duration,
                                 "--threads", "1")
            self.assertEqual(rc, 0, out + err)
            r = json.loads(out)
            self.assertEqual(r["errors"], 0, out)
            self.assertEqual(r["requests"] + r["arrivals_late"], want, out)
            self.assertEqual(r["arrivals"] + r["arrivals_late"], want, out)
        self.server.wait_quiet(extra=QUIET_ACTIVE)

    def test_text_report_and_environment_twins(self):
        rc, out, err = bench(self.server.address, env={"RINGCAS_WORKLOAD": "http-put",
                                                       "RINGCAS_SIZE": "1KiB"})
        self.assertEqual(rc, 0, out + err)
        self.assertIn("ringcas bench: http-put", out)
        self.assertIn("HTTP PUT", out)
        for word in ("p50", "p99", "p99.9", "max", "latency histogram"):
            self.assertIn(word, out)
        self.assertNotIn("errors by status", out)
        self.server.wait_quiet(extra=QUIET_ACTIVE)

    def test_long_corpus_is_read_to_its_end(self):
        # Over 1024 characters of folders that do not exist, then one that does: the list
        # used to be cut at 1024, and the run failed with "no readable file".
        with tempfile.TemporaryDirectory(prefix="ringcas-corpus-") as d:
            with open(os.path.join(d, "data"), "wb") as f:
                f.write(os.urandom(4096) * 4)
            corpus = ":".join("/nonexistent/%04d" % i for i in range(200)) + ":" + d
            self.assertGreater(len(corpus), 2048)
            rc, out, err = bench(self.server.address, "--workload", "http-put", "--data",
                                 "build", "--corpus", corpus, "--duration", "500ms",
                                 "--concurrency", "2", "--json")
            self.assertEqual(rc, 0, out + err)
            self.assertEqual(json.loads(out)["errors"], 0)


class BenchCliTest(unittest.TestCase):
    def test_help_documents_every_workload_and_flag(self):
        p = subprocess.run([harness.binary(), "bench", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        self.assertEqual(p.returncode, 0)
        text = p.stdout.decode()
        for w in WORKLOADS:
            self.assertIn("  %s " % w, text)
        flags = [l.split()[0].replace("[no-]", "") for l in text.splitlines()
                 if l.startswith("  --")]
        self.assertGreater(len(flags), 20)
        for line in text.splitlines():
            if line.startswith("  --") and not line.startswith("  --help"):
                self.assertIn("RINGCAS_", line, line)
        for f in ("--rate", "--concurrency", "--threads", "--conns", "--json", "--workload"):
            self.assertIn(f, flags)
        # docs/bench.md's flag table has every flag (--instance and --workload were missing).
        with open(os.path.join(DOCS, "bench.md")) as f:
            doc = f.read()
        for flag in flags:
            self.assertIn("| `%s" % flag, doc, "%s is not in docs/bench.md's flag table" % flag)

    def test_bad_flags_are_usage_errors(self):
        for args in (["--workload", "nope"], ["--threads", "0"], ["--data", "zeros"],
                     ["--workload", "bs-read", "--path", "/x"], ["--instance", "a/blobs/b"],
                     # ac-get divided by zero actions (UBSan; SIGFPE in a release build)
                     ["--workload", "ac-get", "--mix-actions", "0"],
                     ["--workload", "mix", "--mix-actions", "0"],
                     ["--mix-actions", "1000001"]):
            p = subprocess.run([harness.binary(), "bench"] + args, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("ringcas bench:", p.stderr.decode())
            self.assertNotIn("runtime error", p.stderr.decode(), args)

    def test_huge_durations_and_rates_are_usage_errors(self):
        # Nanoseconds past 64 bits: a run that never ended, or ended at once.
        for args, what in ((["--duration", "99999999999h"], "--duration: at most 720h"),
                           (["--warmup", "721h"], "--warmup: at most 720h"),
                           (["--rate", "1000000001"], "--rate: at most 1000000000")):
            p = subprocess.run([harness.binary(), "bench", "--server", "127.0.0.1:1"] + args,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(what, p.stderr.decode())

    def test_http_error_reports_the_bodys_reason_whole(self):
        # Any HTTP server (--path): each answer is a 503 whose body says why, at more length
        # than the 160 bytes the first error used to keep. The report said "HTTP 503" only.
        reason = "busy: " + "the reason, " * 30 + "end"
        with http_server(lambda path: (503, (reason + "\n").encode())) as address:
            rc, out, err = bench(address, "--workload", "http-get", "--path", "/x", "--threads",
                                 "1", "--concurrency", "2", "--duration", "500ms", "--json")
        self.assertEqual(rc, 1, out + err)
        r = json.loads(out)
        self.assertGreater(r["errors_by_status"].get("http 503", 0), 0, out)
        self.assertEqual(r["first_error"], "HTTP GET: HTTP 503: " + reason[:255])

    def test_json_is_valid_whatever_bytes_the_servers_reason_has(self):
        # The first error keeps the server's reason as bytes: invalid UTF-8, or a character
        # cut at the 255-byte limit, went into the JSON as is, and the report did not parse.
        reasons = {"/bad": b"busy \xff\xfe\xc3 end",
                   "/cut": ("x" * 236).encode() + "\u00e9".encode() * 20}
        with http_server(lambda path: (503, reasons[path])) as address:
            for path, first in (("/bad", "busy \ufffd\ufffd\ufffd end"),
                                ("/cut", "x" * 236 + "\u00e9" * 9 + "\ufffd")):
                cmd = [harness.binary(), "bench", "--server", address, "--workload", "http-get",
                       "--path", path, "--threads", "1", "--concurrency", "1", "--duration",
                       "300ms", "--warmup", "0s", "--json"]
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   timeout=60)
                self.assertEqual(p.returncode, 1, p.stderr)
                r = json.loads(p.stdout.decode("utf-8"))  # strict: raises on invalid UTF-8
                self.assertEqual(r["first_error"], "HTTP GET: HTTP 503: " + first)

    def test_percentiles_of_injected_delays(self):
        # A server that holds every 10th answer 300 ms: one slot, closed loop, so a tenth of
        # the latencies are >= 300 ms and the rest are the server's quick answers. Checks
        # the report against what was injected, with wide margins (no speed is asserted
        # beyond a quick answer taking under 200 ms).
        count = [0]
        lock = threading.Lock()

        def answer(path):
            with lock:
                count[0] += 1
                slow = count[0] % 10 == 0
            if slow:
                time.sleep(0.3)
            return 200, b"ok"

        with http_server(answer) as address:
            rc, out, err = bench(address, "--workload", "http-get", "--path", "/x", "--threads",
                                 "1", "--concurrency", "1", "--duration", "3s", "--json")
        self.assertEqual(rc, 0, out + err)
        lat = json.loads(out)["latency_ns"]
        check_latency(self, lat, "injected delays")
        slow = sum(c for bound, c in lat["histogram"] if bound >= 500 * 10**6)
        quick = sum(c for bound, c in lat["histogram"] if bound <= 200 * 10**6)
        self.assertEqual(slow + quick, lat["count"], out)
        # A tenth were held: the window cuts at most one held answer at each edge.
        self.assertLessEqual(abs(slow * 10 - lat["count"]), 20, out)
        self.assertGreaterEqual(lat["max"], 300 * 10**6, out)
        self.assertGreaterEqual(lat["p99"], 300 * 10**6, out)
        self.assertLess(lat["p50"], 200 * 10**6, out)
        self.assertGreaterEqual(lat["mean"], 25 * 10**6, out)  # at least a tenth of 300 ms, less the edges

    def test_http_get_checks_the_bytes_it_got(self):
        # A server that takes the seeded blobs and answers each GET 200 with the wrong body.
        # With --compress nothing was checked (a 4-byte body counted as a 4 KiB read), and
        # --verify checked nothing over HTTP: both reported 0 errors, exit 0.
        answers = {}

        def answer(path):
            encoding, body = answers["get"]
            return 200, body, [("Content-Encoding", encoding)] if encoding else []

        cases = (
            # (Content-Encoding, body, flags, the first error's reason)
            ("zstd", b"oops", ["--compress"], "a zstd body that does not decode (4 bytes)"),
            (None, b"oops", ["--compress"], "4 bytes for a blob of %d" % SIZE),
            (None, b"x" * SIZE, ["--verify"], "the body's SHA-256 is not the blob's"),
            ("gzip", b"x" * SIZE, [], "a Content-Encoding the request did not accept"),
        )
        with http_server(answer) as address:
            for encoding, body, flags, why in cases:
                answers["get"] = (encoding, body)
                rc, out, err = bench(address, "--workload", "http-get", "--threads", "1",
                                     "--concurrency", "2", "--blobs", "4", "--duration",
                                     "500ms", "--json", *flags)
                self.assertEqual(rc, 1, out + err)
                r = json.loads(out)
                self.assertEqual(r["requests"], 0, out)
                self.assertEqual(r["bytes"], 0, out)
                self.assertEqual(list(r["errors_by_status"]), ["local EBADMSG"], out)
                self.assertEqual(r["first_error"], "HTTP GET: EBADMSG 74: " + why)

    def test_unreachable_server_is_exit_5(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        rc, out, err = bench("127.0.0.1:%d" % port, "--workload", "http-put", "--duration", "1s",
                             "--warmup", "0s")
        self.assertEqual(rc, 5, out + err)
        rc, out, err = bench("127.0.0.1:%d" % port, "--workload", "http-get", "--duration", "1s")
        self.assertEqual(rc, 5, out + err)
        self.assertIn("seeding failed", err)
        self.assertIn("HTTP PUT: ECONNREFUSED 111: connection refused", err)

    def test_server_that_never_answers_is_a_failure(self):
        # The kernel accepts the connections into the backlog; nothing ever answers. No
        # request ends, well or badly, before --timeout (20 s): it used to exit 0.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        try:
            for workload in ("bs-write", "http-put"):
                rc, out, err = bench("127.0.0.1:%d" % s.getsockname()[1], "--workload", workload,
                                     "--duration", "1s", "--warmup", "0s")
                self.assertEqual(rc, 1, out + err)
                self.assertIn("no request finished in the measured window", err)
        finally:
            s.close()


class FakeCas:
    """A gRPC server (grpcio) that keeps what ByteStream.Write uploads (or refuses the n-th
    Write call with the (code, message) refuse(n) returns, when it returns one), answers
    BatchReadBlobs with answer(digests, blobs) -> [(digest, data[, status code])] (OK when
    no code is given), and
    FindMissingBlobs with missing(digests, blobs) -> [digest], and GetActionResult with
    result(the ActionResult UpdateActionResult stored for the key)."""

    def __init__(self, answer=None, missing=None, result=None, refuse=None):
        import concurrent.futures

        import grpc

        import reapi
        self.blobs = {}
        self.writes = 0  # Write calls, refused ones included

        def write(requests, context):
            self.writes += 1
            if refuse and refuse(self.writes):
                context.abort(*refuse(self.writes))
            data = b"".join(r.data for r in requests)
            self.blobs[hashlib.sha256(data).hexdigest()] = data
            return reapi.msg("google.bytestream.WriteResponse", committed_size=len(data))

        def batch_read(request, context):
            resp = reapi.msg("BatchReadBlobsResponse")
            for d, data, *code in answer(list(request.digests), self.blobs):
                e = resp.responses.add()
                e.digest.hash = d.hash
                e.digest.size_bytes = d.size_bytes
                e.data = data
                if code:
                    e.status.code = code[0]
            return resp

        def find_missing(request, context):
            resp = reapi.msg("FindMissingBlobsResponse")
            for d in missing(list(request.blob_digests), self.blobs):
                resp.missing_blob_digests.add(hash=d.hash, size_bytes=d.size_bytes)
            return resp

        results = {}

        def ac_update(request, context):
            results[request.action_digest.hash] = request.action_result
            return request.action_result

        def ac_get(request, context):
            return result(results[request.action_digest.hash])

        def handler(kind, fn, req):
            return kind(fn, request_deserializer=reapi.cls(req).FromString,
                        response_serializer=lambda m: m.SerializeToString())

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("google.bytestream.ByteStream", {
                "Write": handler(grpc.stream_unary_rpc_method_handler, write,
                                 "google.bytestream.WriteRequest")}),
            grpc.method_handlers_generic_handler(
                "build.bazel.remote.execution.v2.ContentAddressableStorage", {
                    "BatchReadBlobs": handler(grpc.unary_unary_rpc_method_handler, batch_read,
                                              "BatchReadBlobsRequest"),
                    "FindMissingBlobs": handler(grpc.unary_unary_rpc_method_handler,
                                                find_missing, "FindMissingBlobsRequest")}),
            grpc.method_handlers_generic_handler(
                "build.bazel.remote.execution.v2.ActionCache", {
                    "UpdateActionResult": handler(grpc.unary_unary_rpc_method_handler,
                                                  ac_update, "UpdateActionResultRequest"),
                    "GetActionResult": handler(grpc.unary_unary_rpc_method_handler, ac_get,
                                               "GetActionResultRequest")}),
        ))
        self.address = "127.0.0.1:%d" % self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self):
        self.server.stop(None)


class BenchSeedRetryTest(unittest.TestCase):
    """Seeding runs again an upload the server refused for now (RESOURCE_EXHAUSTED "store
    full ... retry later" while its eviction catches up, UNAVAILABLE), as Bazel does, up to 6
    more times, pausing 50 ms doubled each time; what else fails, or still fails, ends the run.
    A refusal that said to retry failed the whole run before (exit 1, no report)."""

    FULL = "upload: store full: no room in the size budget now, retry later"

    def seed(self, refuse):
        import grpc
        codes = {"full": (grpc.StatusCode.RESOURCE_EXHAUSTED, self.FULL),
                 "down": (grpc.StatusCode.UNAVAILABLE, "draining"),
                 "bad": (grpc.StatusCode.INVALID_ARGUMENT, "bad upload")}
        cas = FakeCas(lambda ds, blobs: [(d, blobs.get(d.hash, b"")) for d in ds],
                      refuse=lambda n: codes[refuse(n)] if refuse(n) else None)
        try:
            rc, out, err = bench(cas.address, "--workload", "batch-read", "--blobs", "1",
                                 "--batch", "1", "--size", "1KiB", "--threads", "1",
                                 "--concurrency", "1", "--duration", "300ms", "--json")
        finally:
            cas.close()
        return rc, out, err, cas.writes

    def test_an_upload_refused_for_now_is_run_again(self):
        rc, out, err, writes = self.seed(lambda n: "full" if n <= 2 else "down" if n == 3 else None)
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(writes, 4)
        r = json.loads(out)
        self.assertEqual(r["errors"], 0, out)
        self.assertGreater(r["ops"]["BatchReadBlobs"]["ok"], 0, out)

    def test_a_refusal_that_lasts_fails_the_run_after_six_more_tries(self):
        start = time.monotonic()
        rc, out, err, writes = self.seed(lambda n: "full")
        self.assertEqual(rc, 1, out + err)
        self.assertEqual(writes, 7)
        self.assertGreaterEqual(time.monotonic() - start, 3.15)  # the pauses: 50 ms to 1.6 s
        self.assertIn("seeding failed (1 uploads)", err)
        self.assertIn("RESOURCE_EXHAUSTED", err)

    def test_an_http_upload_refused_for_now_is_run_again(self):
        bodies = {}
        status = {1: 507, 2: 503}
        with http_server(lambda path: (200, bodies[path]) if path in bodies else (404, b""),
                         put_status=lambda n: status.get(n, 201), bodies=bodies) as addr:
            rc, out, err = bench(addr, "--workload", "http-get", "--blobs", "1", "--size",
                                 "1KiB", "--threads", "1", "--concurrency", "1", "--duration",
                                 "300ms", "--verify", "--json")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(len(bodies), 1)
        r = json.loads(out)
        self.assertEqual(r["errors"], 0, out)
        self.assertGreater(r["ops"]["HTTP GET"]["ok"], 0, out)

    def test_other_refusals_fail_the_run_at_once(self):
        rc, out, err, writes = self.seed(lambda n: "bad")
        self.assertEqual(rc, 1, out + err)
        self.assertEqual(writes, 1)
        self.assertIn("INVALID_ARGUMENT", err)


class BenchAnswerCheckTest(unittest.TestCase):
    """A fake REAPI server whose answers have the right shape and counts but not the right
    contents: reads and lookups must check what they got."""

    def batch_read(self, answer, *flags, workload="batch-read", missing=None, result=None):
        cas = FakeCas(answer, missing, result)
        try:
            rc, out, err = bench(cas.address, "--workload", workload, "--threads", "1",
                                 "--concurrency", "2", "--duration", "500ms", "--json", *flags)
        finally:
            cas.close()
        return rc, out, err

    def test_ac_get_checks_the_result_is_the_one_seeded(self):
        # Any OK answer counted as a hit: a server answering an empty ActionResult for every
        # key (or another action's) measured as a working action cache.
        import reapi
        self.check_answers("ac-get", ((dict(result=lambda seeded: reapi.msg("ActionResult")),
                                       False), (dict(result=lambda seeded: seeded), True)))

    def test_find_missing_listing_the_present_half_is_an_error(self):
        # Half of each request's digests were uploaded, half never were: a server that lists
        # the present half as missing answered the right count, and that was a success.
        self.check_answers("find-missing", (
            (dict(missing=lambda ds, blobs: [d for d in ds if d.hash in blobs]), False),
            (dict(missing=lambda ds, blobs: [d for d in ds if d.hash not in blobs]), True)))

    def check_answers(self, workload, cases):
        """Runs <workload> against the fake server once per (answer options, right) case: a
        right answer is a clean run; a wrong one fails every request, as local EBADMSG."""
        for kw, ok in cases:
            rc, out, err = self.batch_read(None, workload=workload, **kw)
            r = json.loads(out)
            if ok:
                self.assertEqual(rc, 0, out + err)
                self.assertGreater(r["requests"], 0, out)
            else:
                self.assertEqual(rc, 1, out + err)
                self.assertEqual(r["requests"], 0, out)
                self.assertEqual(list(r["errors_by_status"]), ["local EBADMSG"], out)

    def test_mix_read_not_found_right_after_a_hit_is_an_error(self):
        # A seeded action's lookup answered with its result: its outputs were there. A read of
        # them answered NOT_FOUND right after is no eviction a client takes as a miss (the
        # lookup checked and refreshed them): it stays an error, and no miss is counted.
        rc, out, err = self.batch_read(lambda ds, blobs: [(d, b"", 5) for d in ds], "--mix-hit",
                                       "100", "--mix-max-size", "32KiB", workload="mix",
                                       result=lambda seeded: seeded)
        self.assertEqual(rc, 1, out + err)
        r = json.loads(out)
        self.assertEqual(list(r["errors_by_status"]), ["grpc NOT_FOUND"], out)
        self.assertTrue(r["first_error"].startswith("BatchReadBlobs: NOT_FOUND"), out)
        # Every output is under 32 KiB: the small-blob class failed as the reads did.
        self.assertGreater(r["ops"]["BatchReadBlobs"]["errors"], 0, out)
        self.assertEqual(r["small"]["errors"], r["ops"]["BatchReadBlobs"]["errors"], out)
        self.assertEqual(r["small"]["ok"], 0, out)
        self.assertEqual(r["misses"], 0, out)
        self.assertEqual(r["misses_evicted"], 0, out)
        self.assertGreater(r["hits"], 0, out)

    def test_batch_read_wrong_bytes_fail_verify(self):
        # Each blob answered with bytes of its size that are not its bytes: --verify said
        # nothing of batch reads, and this counted as throughput.
        rc, out, err = self.batch_read(
            lambda ds, blobs: [(d, b"x" * d.size_bytes) for d in ds], "--verify")
        self.assertEqual(rc, 1, out + err)
        r = json.loads(out)
        self.assertEqual(r["requests"], 0, out)
        self.assertEqual(list(r["errors_by_status"]), ["local EBADMSG"], out)

    def test_batch_read_answering_other_blobs_is_an_error(self):
        # Every digest asked for answered with the first one's blob (a real blob, the right
        # count and sizes): it counted as reading them all.
        rc, out, err = self.batch_read(
            lambda ds, blobs: [(ds[0], blobs[ds[0].hash]) for _ in ds])
        self.assertEqual(rc, 1, out + err)
        r = json.loads(out)
        self.assertEqual(r["requests"], 0, out)
        self.assertEqual(list(r["errors_by_status"]), ["local EBADMSG"], out)

    def test_batch_read_of_the_right_blobs_in_any_order_succeeds(self):
        rc, out, err = self.batch_read(
            lambda ds, blobs: [(d, blobs[d.hash]) for d in reversed(ds)], "--verify")
        self.assertEqual(rc, 0, out + err)
        r = json.loads(out)
        self.assertGreater(r["requests"], 0, out)
        self.assertEqual(r["bytes"], r["requests"] * SIZE * BATCH, out)


class BenchDrainTest(unittest.TestCase):
    def test_a_drain_ends_no_call_the_server_took(self):
        # A server that drains (SIGTERM, a rolling restart) sends GOAWAY and still finishes
        # the streams it took. The bench closed such a connection as soon as a slot looked
        # for one to start its next call on, and so cancelled the calls the server was
        # finishing on it: errors "local ECANCELED" in the report that the server never
        # caused (14 of 16 uploads in flight, measured). Calls begun after the GOAWAY are
        # refused (REFUSED_STREAM, or the connection refused once the listener is closed):
        # those are the drain's own errors.
        srv = harness.Server(cores=1).start()
        try:
            p = subprocess.Popen(
                [harness.binary(), "bench", "--server", srv.address, "--workload", "bs-write",
                 "--size", "1MiB", "--threads", "1", "--conns", "2", "--concurrency", "32",
                 "--duration", "3s", "--warmup", "0s", "--timeout", "20s", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env=dict(os.environ, ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:exitcode=66"))
            # Uploads are under way once the server has acknowledged some.
            harness.wait_for(lambda: srv.metric("ringcas_requests_total", route="google.bytestream.ByteStream/Write") > 20,
                             timeout=30, what="uploads under way")
            srv.proc.send_signal(signal.SIGTERM)
            srv.wait_exit(30)
            out, err = p.communicate(timeout=120)
        finally:
            srv.cleanup()
        r = json.loads(out)
        self.assertGreater(r["ops"]["ByteStream.Write"]["ok"], 0, out)
        self.assertNotIn("local ECANCELED", r["errors_by_status"], err)


class BenchStallTest(unittest.TestCase):
    """A server that stalls (SIGSTOP) during an open-loop run: the requests due meanwhile
    count from their due time, so the stall shows in the latencies, wherever in the window
    it falls. Margins are wide: a 1 s stall must show as at least 0.8 s."""

    def stalled_run(self, stop_at, stop_for, *args):
        """Runs http-get for a 3 s window after a 300 ms warm-up; SIGSTOPs the server
        <stop_at> s after the run began, for <stop_for> s. Returns (exit status, report)."""
        srv = harness.Server().start()
        try:
            cmd = [harness.binary(), "bench", "--server", srv.address, "--workload", "http-get",
                   "--threads", "1", "--concurrency", "64", "--duration", "3s", "--warmup",
                   "300ms", "--blobs", "16", "--size", "4KiB", "--json"] + list(args)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ,
                                          ASAN_OPTIONS="abort_on_error=0:detect_leaks=1:exitcode=66"))
            # The run begins (20 ms after) this line, once the blobs are seeded.
            line = ""
            while "for 3.0 s after" not in line:
                line = p.stderr.readline()
                self.assertTrue(line, "the bench ended before its run")
            time.sleep(stop_at)
            srv.proc.send_signal(signal.SIGSTOP)
            time.sleep(stop_for)
            srv.proc.send_signal(signal.SIGCONT)
            out, err = p.communicate(timeout=120)
            return p.returncode, out, err
        finally:
            if srv.proc:
                srv.proc.send_signal(signal.SIGCONT)
            srv.cleanup()

    def test_open_loop_counts_a_stall_from_the_due_time(self):
        rc, out, err = self.stalled_run(1.3, 1.0, "--rate", "100")
        self.assertEqual(rc, 0, out + err)
        r = json.loads(out)
        self.assertEqual(r["errors"], 0, out)
        lat = r["latency_ns"]
        self.assertGreaterEqual(lat["max"], 800 * 10**6, out)
        # A tenth of the window's arrivals were due during the stall: they waited for it.
        self.assertGreaterEqual(lat["p99"], 500 * 10**6, out)
        check_latency(self, lat, "open loop with a stall")

    def test_a_stall_at_the_end_of_an_open_loop_run_is_counted(self):
        # The server stops 1 s before the window ends and resumes 0.5 s after it. Counting
        # what ended inside the window cancelled the requests due in that last second
        # unanswered and left them out: max and p99 read as if the server never stopped,
        # with no error and exit 0. They are awaited, and count from their due time.
        rc, out, err = self.stalled_run(2.3, 1.5, "--rate", "100")
        self.assertEqual(rc, 0, out + err)
        r = json.loads(out)
        self.assertEqual(r["errors"], 0, out)
        self.assertGreaterEqual(r["latency_ns"]["max"], 800 * 10**6, out)
        self.assertGreaterEqual(r["latency_ns"]["p99"], 500 * 10**6, out)

    def test_requests_still_unanswered_after_the_timeout_are_errors(self):
        # The server stops at the end and resumes 3 s later: past --timeout (1 s), what it
        # held fails ETIMEDOUT, counted as errors, not dropped.
        rc, out, err = self.stalled_run(2.3, 3.0, "--rate", "100", "--timeout", "1s")
        self.assertEqual(rc, 1, out + err)
        r = json.loads(out)
        self.assertGreater(r["errors_by_status"].get("local ETIMEDOUT", 0), 0, out)
        self.assertEqual(r["errors"], r["errors_by_status"]["local ETIMEDOUT"], out)


    def test_late_arrivals_are_those_due_in_the_window(self):
        # The server stops as the run begins, for longer than the run: one slot takes the
        # first arrival (due in the warm-up) and waits (--timeout 30 s); every later one never
        # starts. The window (3 s at 10/s) holds 30 arrivals, all late; the warm-up's 2 others
        # were counted late too (32), more than the window holds. No request finished: exit 1.
        rc, out, err = self.stalled_run(0.0, 5.0, "--rate", "10", "--concurrency", "1")
        self.assertEqual(rc, 1, out + err)
        r = json.loads(out)
        self.assertEqual(r["requests"], 0, out)
        self.assertEqual(r["errors"], 0, out)
        self.assertEqual(r["arrivals_late"], 30, out)
        self.assertIn("30 arrivals due in it never started", err)


class BenchSmallStoreTest(harness.ServerTestCase):
    """A store too small for the blobs: uploads are refused, each with the server's reason, by
    gRPC (INVALID_ARGUMENT) and HTTP (413) alike. HTTP said only "HTTP 413"."""

    server_args = ("--max-size", "8MiB")

    def test_uploads_larger_than_the_store_takes_say_so(self):
        for workload, status in (("bs-write", "grpc INVALID_ARGUMENT"), ("http-put", "http 413")):
            rc, out, err = bench(self.server.address, "--workload", workload, "--size", "4MiB",
                                 "--threads", "1", "--concurrency", "2", "--duration", "500ms",
                                 "--json")
            self.assertEqual(rc, 1, out + err)
            r = json.loads(out)
            self.assertEqual(r["requests"], 0, out)
            self.assertEqual(list(r["errors_by_status"]), [status], out)
            self.assertIn("larger than this store takes", r["first_error"])
        # The text table: a kind whose every request failed has no latency, and prints "-"
        # where it printed 0ns, which reads as a measured time.
        rc, out, err = bench(self.server.address, "--workload", "http-put", "--size", "4MiB",
                             "--threads", "1", "--concurrency", "2", "--duration", "500ms")
        self.assertEqual(rc, 1, out + err)
        row = [line for line in out.splitlines() if line.startswith("HTTP PUT")]
        self.assertEqual(len(row), 1, out)
        fields = row[0].split()  # HTTP PUT, ok, errors, req/s, MB/s, 5 latencies
        self.assertEqual(fields[2], "0", out)
        self.assertEqual(fields[-5:], ["-"] * 5, out)
        self.assertNotIn("0ns", out, out)
        self.server.wait_quiet(extra=QUIET_ACTIVE)


class BenchEvictionTest(harness.ServerTestCase):
    """A store much smaller than the build mix's seeded actions and their outputs (2000
    actions, about 50 MB, in a 16 MiB budget): seeding alone evicts most of them, so lookups
    of seeded actions find no result, or outputs missing, and GetActionResult answers
    NOT_FOUND, correctly. A client (Bazel) takes that as a miss: it runs the action and
    uploads. The bench counted each as an error (`grpc NOT_FOUND`, exit 1): the soak run's
    every slice failed against a correct server (perf/SOAK.md). They are misses now, counted
    apart as evicted and in the hit rate, and run again as a miss is. A NOT_FOUND where none
    can be (a read right after a hit, whose outputs the server just checked and refreshed)
    is still an error: zero errors here means there were none."""

    server_args = ("--max-size", "16MiB")
    # Each action's outputs fit one batch (64 KiB at most): what a hit reads right after its
    # lookup stays far inside the quarter of the budget a hit's outputs survive.
    # Open loop at 200 actions/s (about 4 MB/s): closed loop wrote about 100 MB/s into the
    # 16 MiB store, which then turned over in a fifth of a second, and a hit's outputs were
    # now and then evicted before their read (the churn limit of docs/storage.md), failing
    # 1 run in 6. Seeding alone still evicts most of the seeded actions.
    ARGS = ("--workload", "mix", "--mix-hit", "100", "--mix-actions", "2000", "--mix-max-size",
            "64KiB", "--rate", "200")

    def test_evicted_seeded_actions_are_misses_not_errors(self):
        rc, out, err = bench(self.server.address, "--json", *self.ARGS)
        if rc != 0 and any(s in err + out for s in NOT_SERVED):
            self.skipTest("mix: not served by this build (%s)" % err.strip()[-200:])
        self.assertTrue(out.strip(), "no report (exit %d): %s" % (rc, err.strip()[-2000:]))
        r = json.loads(out)
        self.assertEqual(r["errors_by_status"], {}, r["first_error"])
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(r["errors"], 0)
        # Every action looked up a seeded one (--mix-hit 100): the misses are the evicted.
        self.assertGreater(r["misses_evicted"], 0, "nothing was evicted: the test tests nothing")
        self.assertEqual(r["misses"], r["misses_evicted"])
        self.assertGreater(r["hits"], 0)
        self.assertAlmostEqual(r["hit_rate"], r["hits"] / (r["hits"] + r["misses"]), places=3)
        ops = r["ops"]
        self.assertEqual(ops["GetActionResult"]["errors"], 0)
        self.assertGreater(ops["GetActionResult"]["expected"], 0)
        # After a miss the client runs the action and uploads: FindMissingBlobs of its
        # outputs, Action and Command, what is missing, then UpdateActionResult.
        for name in ("FindMissingBlobs", "UpdateActionResult"):
            self.assertGreater(ops.get(name, {}).get("ok", 0), 0, (name, list(ops)))
        self.assertGreater(ops["BatchReadBlobs"]["ok"], 0, "hits read their outputs")
        self.server.wait_quiet(extra=QUIET_ACTIVE)
        self.assertEqual(self.server.metric("ringcas_bs_uploads"),
                         self.server.metric("ringcas_bs_uploads_parked"))

    def test_text_report_gives_the_evicted_and_the_hit_rate(self):
        rc, out, err = bench(self.server.address, "--no-histogram", *self.ARGS)
        if rc != 0 and any(s in err + out for s in NOT_SERVED):
            self.skipTest("mix: not served by this build (%s)" % err.strip()[-200:])
        self.assertEqual(rc, 0, out + err)
        line = [x for x in out.splitlines() if x.startswith("actions: ")]
        self.assertEqual(len(line), 1, out)
        m = re.search(r"hits (\d+), misses (\d+) \(seeded actions the server evicted: (\d+)\), "
                      r"hit rate ([0-9.]+)%", line[0])
        self.assertIsNotNone(m, line[0])
        hits, misses, evicted = int(m.group(1)), int(m.group(2)), int(m.group(3))
        self.assertGreater(evicted, 0, line[0])
        self.assertEqual(misses, evicted, line[0])
        self.assertAlmostEqual(float(m.group(4)), 100.0 * hits / (hits + misses), delta=0.06)
        self.assertNotIn("errors by status", out)
        self.server.wait_quiet(extra=QUIET_ACTIVE)


class BenchRefusalsTest(harness.ServerTestCase):
    """A server whose message memory is at its minimum (16 MiB a core) cannot hold the answers
    of 16 batch reads of 4 MB at once: it refuses blobs with RESOURCE_EXHAUSTED in their own
    responses (the call itself is OK), and the report shows the server's reason."""

    server_args = ("--message-memory", "16MiB")

    def test_batch_read_refusals_report_the_servers_message(self):
        rc, out, err = bench(self.server.address, "--workload", "batch-read", "--compress",
                             "--size", "500KiB", "--batch", "8", "--concurrency", "16",
                             "--duration", "1s", "--json")
        if rc != 0 and any(s in err + out for s in NOT_SERVED):
            self.skipTest("batch-read: not served by this build (%s)" % err.strip()[-200:])
        self.assertEqual(rc, 1, out + err)
        r = json.loads(out)
        self.assertGreater(r["errors_by_status"].get("grpc RESOURCE_EXHAUSTED", 0), 0, out)
        first = r["first_error"]
        self.assertTrue(first.startswith("BatchReadBlobs: RESOURCE_EXHAUSTED 8: "), first)
        self.assertIn("--message-memory", first)
        self.assertIn("retry", first)
        self.server.wait_quiet(extra=QUIET)


if __name__ == "__main__":
    unittest.main(verbosity=2)
