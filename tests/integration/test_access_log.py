"""The access log (--access-log, docs/operations.md "Access log"): one JSON line per finished
request, HTTP/1.1 and gRPC, from the real server to a real file; logrotate's rename and SIGUSR1;
standard output for containers; a path that cannot be written stops the start with a clear
line; SIGUSR1 without the log no longer ends the server."""

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

import grpc

import harness
import reapi


def sha(data):
    return hashlib.sha256(data).hexdigest()


def curl(*args, data=None):
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"] + list(args),
                       input=data, capture_output=True, timeout=30, check=False)
    return int(p.stdout)


def read_lines(path):
    with open(path, encoding="ascii") as f:
        text = f.read()
    assert text == "" or text.endswith("\n"), "a cut line: %r" % text[-200:]
    return [json.loads(line) for line in text.splitlines()]


class AccessLog(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="rc_access_")
        self.path = os.path.join(self.tmp, "access.log")
        self.server = harness.Server(args=("--max-size", "256MiB", "--access-log", self.path))
        self.server.start()
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.addCleanup(self.server.cleanup)

    def stop_and_read(self):
        self.assertEqual(self.server.stop(), 0)  # the last lines are written before exit
        return read_lines(self.path)

    def test_http_and_grpc_requests_each_get_a_line(self):
        url = self.server.url
        data = b"logged blob"
        self.assertEqual(curl("-X", "PUT", "--data-binary", "@-", url + "/cas/" + sha(data),
                              data=data), 201)
        self.assertEqual(curl(url + "/bazel/ac/" + "ab" * 32), 404)
        self.assertEqual(curl(url + "/a%22b%0A"), 404)  # a client's bytes, escaped
        client = reapi.Client("127.0.0.1:%d" % self.server.port)
        try:
            req = reapi.msg("GetActionResultRequest", instance_name="team")
            req.action_digest.hash = "cd" * 32
            req.action_digest.size_bytes = 142
            with self.assertRaises(grpc.RpcError) as ctx:
                client.GetActionResult(req, timeout=10)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.NOT_FOUND)
            name = "blobs/%s/%d" % (sha(data), len(data))
            got = b"".join(r.data for r in client.Read(
                reapi.msg("google.bytestream.ReadRequest", resource_name=name), timeout=10))
            self.assertEqual(got, data)
        finally:
            client.close()
        lines = self.stop_and_read()
        self.assertEqual(len(lines), 5, lines)
        for line in lines:
            self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertRegex(line["peer"], r"^127\.0\.0\.1:\d+$")
            self.assertIn(line["core"], (0, 1))
            self.assertGreaterEqual(line["duration_us"], 0)
        by_route = {line["route"]: line for line in lines}
        put = by_route["PUT /cas"]
        self.assertEqual((put["proto"], put["target"], put["status"], put["bytes_in"]),
                         ("http", "/cas/" + sha(data), 201, len(data)))
        self.assertEqual((by_route["GET /ac"]["target"], by_route["GET /ac"]["status"]),
                         ("/bazel/ac/" + "ab" * 32, 404))
        self.assertEqual(by_route["GET /key"]["target"], "/a%22b%0A")
        ac = by_route["build.bazel.remote.execution.v2.ActionCache/GetActionResult"]
        self.assertEqual((ac["proto"], ac["target"], ac["status"], ac["grpc_status"]),
                         ("grpc", "team/ac/%s/142" % ("cd" * 32), 5, "NOT_FOUND"))
        self.assertIn("message", ac)
        read = by_route["google.bytestream.ByteStream/Read"]
        self.assertEqual((read["target"], read["status"], read["grpc_status"]),
                         (name, 0, "OK"))
        self.assertNotIn("message", read)
        self.assertGreaterEqual(read["bytes_out"], len(data))

    def test_a_client_that_leaves_mid_body_is_named(self):
        # 499, logged once the connection is closed: its peer was read while it was open.
        with socket.create_connection(("127.0.0.1", self.server.port)) as s:
            s.sendall(b"PUT /k/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
            harness.wait_for(lambda: self.server.metric("ringcas_requests_in_flight",
                                                        route="PUT /key") == 1,
                             what="the PUT under way")
            local = "127.0.0.1:%d" % s.getsockname()[1]
        harness.wait_for(lambda: self.server.metric("ringcas_requests_total", route="PUT /key",
                                                    status="499") == 1,
                         what="the PUT ended")
        lines = [line for line in self.stop_and_read() if line["route"] == "PUT /key"]
        self.assertEqual([(line["peer"], line["status"], line["bytes_in"]) for line in lines],
                         [(local, 499, 3)])

    def test_logrotate_renames_then_sigusr1_opens_the_path_again(self):
        url = self.server.url
        self.assertEqual(curl(url + "/healthz"), 200)
        harness.wait_for(lambda: os.path.getsize(self.path) > 0, what="the first line written")
        os.rename(self.path, self.path + ".1")
        self.server.proc.send_signal(signal.SIGUSR1)
        harness.wait_for(lambda: os.path.exists(self.path), what="the path opened again")
        self.assertEqual(curl(url + "/readyz"), 200)
        lines = self.stop_and_read()
        old = read_lines(self.path + ".1")
        self.assertEqual([line["target"] for line in old], ["/healthz"])
        self.assertEqual([line["target"] for line in lines], ["/readyz"])

    def test_lines_are_counted_in_metrics(self):
        for _ in range(3):
            self.assertEqual(curl(self.server.url + "/healthz"), 200)
        harness.wait_for(lambda: self.server.metric("ringcas_access_log_lines_total") >= 3,
                         what="three lines counted")
        self.assertEqual(self.server.metric("ringcas_access_log_dropped_lines_total"), 0)
        lines = self.stop_and_read()
        self.assertEqual([line["route"] for line in lines].count("GET /healthz"), 3)
        self.assertGreaterEqual([line["route"] for line in lines].count("GET /metrics"), 2)


class WallClockStep(unittest.TestCase):
    @unittest.skipUnless(os.environ.get("WALLSKEW_LIB"), "needs the wallskew library (ctest sets it)")
    def test_lines_are_written_within_the_flush_period_after_the_clock_stepped_back(self):
        # The writer thread slept until "the wall clock now + 100 ms": after a step back of
        # the clock (NTP correcting a node that booted fast) it slept that much longer, and
        # the lines of a quiet server stayed unwritten (an hour's step, an hour). wallskew
        # puts the server's reading of the wall clock an hour ahead of the kernel's.
        tmp = tempfile.mkdtemp(prefix="rc_access_")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        path = os.path.join(tmp, "access.log")
        server = harness.Server(args=("--access-log", path), env=harness.wall_clock_ahead_env(3600))
        server.start()
        self.addCleanup(server.cleanup)
        self.assertEqual(curl(server.url + "/healthz"), 200)
        harness.wait_for(lambda: os.path.getsize(path) > 0, what="the line written")
        self.assertEqual([line["target"] for line in read_lines(path)], ["/healthz"])


class StandardOutput(unittest.TestCase):
    def test_dash_writes_the_lines_to_standard_output(self):
        server = harness.Server(args=("--access-log", "-"))
        server.start()
        try:
            self.assertEqual(curl(server.url + "/healthz"), 200)
            line = json.loads(server.proc.stdout.readline())  # after "listening on"
            self.assertEqual((line["route"], line["status"]), ("GET /healthz", 200))
        finally:
            server.cleanup()


class Refused(unittest.TestCase):
    def test_a_path_that_cannot_be_opened_stops_the_start(self):
        tmp = tempfile.mkdtemp(prefix="rc_access_")
        try:
            p = subprocess.run([harness.binary(), "serve", "--listen", "127.0.0.1:0", "--dir",
                                os.path.join(tmp, "data"), "--access-log",
                                os.path.join(tmp, "missing", "access.log")],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("ringcas serve: --access-log %s: cannot open it for appending: "
                          "not found" % os.path.join(tmp, "missing", "access.log"), p.stderr)
            self.assertEqual(p.stdout, "")  # never listened
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class SignalWithoutLog(harness.ServerTestCase):
    def test_sigusr1_without_an_access_log_does_not_end_the_server(self):
        # Its default action ended the process at once: an operator's `kill -USR1` (sent to
        # every server by a logrotate rule written for the access log) lost the cores' work.
        self.server.proc.send_signal(signal.SIGUSR1)
        self.assertEqual(curl(self.server.url + "/healthz"), 200)
        self.assertIsNone(self.server.proc.poll())


if __name__ == "__main__":
    unittest.main()
