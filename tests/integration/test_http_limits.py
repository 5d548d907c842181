"""What a hostile or broken HTTP/1.1 client can hold on the server, and for how long: input
sent while its response waits, slow request heads, slow upload bodies, zstd windows
(docs/http.md "Limits" and "Timeouts")."""

import hashlib
import http.client
import os
import socket
import time
import unittest

import harness
import zstandard
from http1 import Raw, request

BIG = 16 << 20  # more than the kernel's socket buffers take: an unread GET of it stalls


def put(port, path, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("PUT", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def stalled_get(port, path):
    """A connection whose GET of a large blob the client does not read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request("GET", path))
    return sock


class ReadAhead(harness.ServerTestCase):
    """Input that arrives while a response waits does not stay in the core's receive buffers."""

    # A small pool, so that a few dozen connections would take it all.
    server_args = ("--recv-buffers", "64", "--write-timeout", "60s")
    server_cores = 1

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.blob = os.urandom(BIG)
        cls.path = "/cas/" + hashlib.sha256(cls.blob).hexdigest()
        assert put(cls.server.port, cls.path, cls.blob) == 201

    def test_input_behind_a_stalled_response_leaves_the_pool(self):
        # Each connection sends a few bytes three times while its download waits: before,
        # each took a receive buffer per send (3 x 40 > 64) and the core stopped receiving.
        socks = [stalled_get(self.server.port, self.path) for _ in range(40)]
        try:
            time.sleep(0.5)
            for _ in range(3):
                for s in socks:
                    s.sendall(request("GET", "/healthz"))
                time.sleep(0.2)
            with Raw(self.server.port, timeout=5) as raw:
                raw.send(request("GET", "/healthz"))
                self.assertEqual(raw.read_response().status, 200)
            self.assertLessEqual(self.server.metric("ringcas_bufs_out"), 2)
            self.assertEqual(self.server.metric("ringcas_enobufs_total"), 0)
        finally:
            for s in socks:
                s.close()
        self.server.wait_quiet(extra=("blob_readers",))

    def test_pipelined_requests_behind_a_stalled_response_are_answered(self):
        # The copied input is served as it was sent, a head cut across sends included.
        with Raw(self.server.port, timeout=30) as raw:
            raw.send(request("GET", self.path))
            time.sleep(0.3)
            raw.send(request("GET", "/healthz"))
            time.sleep(0.1)
            raw.send(b"GET /healthz HTTP/1.1\r\nHo")
            time.sleep(0.1)
            raw.send(b"st: x\r\n\r\n" + request("GET", "/nope/key"))
            time.sleep(0.2)
            resp = raw.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, self.blob)
            self.assertEqual([raw.read_response().status for _ in range(3)], [200, 200, 404])
        self.server.wait_quiet(extra=("blob_readers",))


def trickle(raw, data, gap, seconds):
    """Sends <data> a byte every <gap> seconds for up to <seconds>; returns how long the
    server let it go on (it stops at the server's close)."""
    t0 = time.monotonic()
    for b in data:
        if time.monotonic() - t0 > seconds:
            break
        try:
            raw.send(bytes([b]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if raw.is_closed(timeout=gap):
            break
    return time.monotonic() - t0


class SlowClients(harness.ServerTestCase):
    """A client that sends, but too slowly, is closed even though each receive is in time."""

    server_args = ("--read-timeout", "2s")
    server_cores = 1

    def test_slow_head_is_closed(self):
        # A byte every half second keeps each receive within the 2 s read timeout; the head
        # must still be complete within a read timeout of its start.
        timeouts = self.server.metric("ringcas_read_timeouts_total")
        with Raw(self.server.port) as raw:
            raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
            took = trickle(raw, b"a" * 100, 0.5, 12)
            self.assertLess(took, 8, "a head sent a byte at a time was not cut off")
        self.assertGreater(self.server.metric("ringcas_read_timeouts_total"), timeouts)
        self.server.wait_quiet()

    def test_slow_upload_is_closed_and_frees_its_slot(self):
        # 1 MiB announced, a byte every half second: under 1 KiB/s over each read timeout.
        body = os.urandom(1 << 20)
        path = "/cas/" + hashlib.sha256(body).hexdigest()
        with Raw(self.server.port) as raw:
            raw.send(request("PUT", path, headers=["Content-Length: %d" % len(body)]))
            self.assertEqual(self.server.metric("ringcas_blob_uploads"), 1)
            took = trickle(raw, body, 0.5, 12)
            self.assertLess(took, 8, "a body sent a byte at a time was not cut off")
        self.server.wait_quiet(extra=("blob_uploads",))
        self.assertEqual(self.server.metric("ringcas_requests_total", status="408"), 1)

    def test_upload_with_pauses_at_a_fair_rate_is_stored(self):
        body = os.urandom(64 << 10)
        path = "/cas/" + hashlib.sha256(body).hexdigest()
        with Raw(self.server.port) as raw:
            raw.send(request("PUT", path, body=body)[:-len(body)])
            for i in range(0, len(body), 16 << 10):
                raw.send(body[i:i + (16 << 10)])
                time.sleep(1.5)
            self.assertEqual(raw.read_response().status, 201)
        self.server.wait_quiet(extra=("blob_uploads",))



def zstd_wide_window(data, window_log):
    """A zstd frame of <data> whose header asks the decoder for a 2^window_log window (no
    content size, so the decoder cannot size it down)."""
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=window_log,
                                                            write_content_size=False)
    cctx = zstandard.ZstdCompressor(compression_params=params)
    co = cctx.compressobj()
    return co.compress(data[:len(data) // 2]) + co.compress(data[len(data) // 2:]) + co.flush()


class ZstdWindows(harness.ServerTestCase):
    """A zstd upload's decoder holds the window its frame declares, up to 128 MiB for a few
    bytes of input: the core's zstd memory (256 MiB) bounds them, and an upload past it is
    refused 503 (retry), not left to take the server's memory."""
    server_cores = 1

    def test_a_window_past_the_cores_zstd_memory_is_refused(self):
        # Three blobs: uploads of one blob would wait for each other, not decode at once.
        datas = [os.urandom(1000) * 100 for _ in range(3)]
        frames = [zstd_wide_window(data, 27) for data in datas]
        refused = self.server.metric("ringcas_blob_zstd_refused_total")
        held = []
        try:
            # Three uploads of 128 MiB windows, the frames not finished: one fits.
            statuses = []
            for data, frame in zip(datas, frames):
                raw = Raw(self.server.port)
                held.append(raw)
                raw.send(request("PUT", "/cas/" + hashlib.sha256(data).hexdigest(), headers=(
                    "Content-Encoding: zstd", "Content-Length: %d" % len(frame))) + frame[:-4])
                time.sleep(0.3)
            harness.wait_for(
                lambda: self.server.metric("ringcas_blob_zstd_refused_total") > refused,
                timeout=10, what="a window to be refused")
            self.assertLessEqual(self.server.metric("ringcas_blob_zstd_bytes"), 256 << 20)
            for raw, frame in zip(held, frames):
                try:
                    raw.send(frame[-4:])
                except OSError:
                    pass  # refused: the server may have closed already
                statuses.append(raw.read_response().status)
            self.assertIn(503, statuses)
            self.assertIn(201, statuses)
        finally:
            for raw in held:
                raw.close()
        self.server.wait_quiet(extra=("blob_uploads",))
        self.assertLess(self.server.metric("ringcas_blob_zstd_bytes"), 64 << 20)



class EngineLimits(harness.ServerTestCase):
    """--max-uploads and --zstd-memory set the engine's per-core bounds (docs/operations.md
    "Memory"): an operator sizing a container lowers them, and what is past them is refused
    503 (retry) rather than taking memory."""
    server_args = ("--max-uploads", "2", "--zstd-memory", "16MiB")
    server_cores = 1

    def test_uploads_past_max_uploads_are_refused(self):
        bodies = [os.urandom(4096) for _ in range(2)]  # two blobs: one would wait for itself
        held = []
        try:
            for body in bodies:  # two uploads open, their bodies not finished
                raw = Raw(self.server.port)
                held.append(raw)
                raw.send(request("PUT", "/cas/" + hashlib.sha256(body).hexdigest(),
                                 headers=("Content-Length: %d" % len(body),)) + body[:100])
            harness.wait_for(lambda: self.server.metric("ringcas_blob_uploads") == 2,
                             timeout=10, what="two uploads open")
            other = os.urandom(4096)
            self.assertEqual(put(self.server.port, "/cas/" + hashlib.sha256(other).hexdigest(),
                                 other), 503)
            for raw, body in zip(held, bodies):
                raw.send(body[100:])
                self.assertEqual(raw.read_response().status, 201)
        finally:
            for raw in held:
                raw.close()
        self.server.wait_quiet(extra=("blob_uploads",))
        other = os.urandom(4096)
        self.assertEqual(put(self.server.port, "/cas/" + hashlib.sha256(other).hexdigest(),
                             other), 201)

    def test_a_window_past_zstd_memory_is_refused(self):
        data = os.urandom(1000) * 100
        path = "/cas/" + hashlib.sha256(data).hexdigest()
        headers = {"Content-Encoding": "zstd"}
        refused = self.server.metric("ringcas_blob_zstd_refused_total")
        wide = zstd_wide_window(data, 25)  # a 32 MiB window, past 16 MiB
        self.assertEqual(put(self.server.port, path, wide, headers), 503)
        self.assertEqual(self.server.metric("ringcas_blob_zstd_refused_total"), refused + 1)
        narrow = zstd_wide_window(data, 20)  # 1 MiB
        self.assertEqual(put(self.server.port, path, narrow, headers), 201)
        self.server.wait_quiet(extra=("blob_uploads",))

    def test_bad_values_are_named(self):
        for flag, value, said in (("--max-uploads", "0", "--max-uploads: 1 to 65536"),
                                  ("--read-memory", "1MiB", "--read-memory: at least 16MiB"),
                                  ("--zstd-memory", "1MiB", "--zstd-memory: at least 16MiB"),
                                  # The engine used to refuse it as "read-ahead 0": the value
                                  # it was handed in place of one out of range.
                                  ("--read-ahead", "9", "--read-ahead: 1 to 8"),
                                  ("--read-ahead", "0", "--read-ahead: 1 to 8")):
            proc = harness.run_serve(flag, value)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assertIn(said, proc.stderr)


class HeldConnections:
    """A server's connection table filled by the test (mixed into a ServerTestCase)."""
    server_args = ("--max-connections", "8")
    server_cores = 1

    def hold(self, count):
        """<count> connections the server has accepted and counts (each answered once)."""
        # No /metrics before: its connection might still be open when the others come.
        held = [socket.create_connection(("127.0.0.1", self.server.port)) for _ in range(count)]
        for s in held:
            s.sendall(request("GET", "/healthz"))
            self.assertIn(b"200", s.recv(4096))
        return held

    def release(self, held):
        for s in held:
            s.close()
        def closed():
            try:  # refused too while the server has not seen the closes yet
                return self.server.metric("ringcas_conns") <= 1
            except ConnectionError:
                return False
        harness.wait_for(closed, timeout=10, what="the held connections to close")

    def ask(self, raw):
        """Sends <raw> on a new connection; returns what comes back until the server closes."""
        extra = socket.create_connection(("127.0.0.1", self.server.port))
        extra.settimeout(10)
        got = b""
        try:
            extra.sendall(raw)
            while True:
                part = extra.recv(65536)
                if not part:
                    return got
                got += part
        except ConnectionResetError:
            return got
        finally:
            extra.close()


class Connections(HeldConnections, harness.ServerTestCase):
    """--max-connections bounds a core's connections: each holds an op of the core's table,
    and a flood of idle ones would otherwise take the ops busy connections need. Past it a
    few probe slots answer /healthz, /readyz and /metrics only, so that a liveness probe does
    not restart a pod for being busy (docs/operations.md "Connections")."""

    def test_requests_past_the_limit_are_refused(self):
        held = self.hold(8)
        try:
            key = "/cas/" + hashlib.sha256(b"past").hexdigest()
            got = self.ask(request("PUT", key, body=b"past"))
            self.assertTrue(got.startswith(b"HTTP/1.1 503 "), got)
            self.assertIn(b"--max-connections", got)
            self.assertIn(b"Connection: close", got)
            # An HTTP/2 client (Bazel, a frontend) is closed as before: no probe speaks it.
            self.assertEqual(self.ask(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), b"")
        finally:
            self.release(held)
        self.assertGreaterEqual(self.server.metric("ringcas_conns_rejected_total"), 2)
        self.assertEqual(put(self.server.port, key, b"past"), 201)

    def test_the_limit_is_checked_at_startup(self):
        proc = harness.run_serve("--max-connections", "5000")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--max-connections: 1 to 4096", proc.stderr)


class ConnectionsProbes(HeldConnections, harness.ServerTestCase):
    """The probe slots, on a server of their own: a connection the test before used to read
    /metrics may still count on the server when this one fills the table."""

    def test_probes_and_scrapes_are_answered_at_the_limit(self):
        # A kubelet's liveness probe (deploy/k8s/ringcas.yaml: /healthz, 3 failures) met a
        # closed connection here, and restarted a pod whose clients held its connections.
        held = self.hold(8)
        try:
            # More probes than the slots, one after the other: each frees its slot.
            for _ in range(40):
                got = self.ask(request("GET", "/healthz"))
                self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got)
            self.assertTrue(self.ask(request("GET", "/readyz")).startswith(b"HTTP/1.1 200 "))
            got = self.ask(request("GET", "/metrics"))
            self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got[:200])
            self.assertIn(b"ringcas_conns_rejected_total", got)
        finally:
            self.release(held)


if __name__ == "__main__":
    unittest.main()
