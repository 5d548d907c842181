"""HTTP/1.1 on the shared port against the real server: the operations endpoints (/metrics,
/healthz, /readyz), keep-alive, pipelining, request framing and the bad-input cases that do
not need the store (malformed heads, oversize heads, slow senders, drain)."""

import http.client
import os
import hashlib
import shutil
import signal
import socket
import time
import unittest

import harness
import reapi
from http1 import Raw, chunked, request


class OpsEndpoints(harness.ServerTestCase):
    def get(self, path, method="GET"):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            conn.request(method, path)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def tearDown(self):
        self.server.wait_quiet()

    def test_healthz_and_readyz(self):
        status, headers, body = self.get("/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertEqual(headers["Content-Type"], "text/plain; charset=utf-8")
        self.assertIn("GMT", headers["Date"])
        status, _, body = self.get("/readyz")
        self.assertEqual((status, body), (200, b"ready\n"))

    def test_head_has_length_but_no_body(self):
        with Raw(self.server.port) as c:
            c.send(request("HEAD", "/healthz") + request("GET", "/healthz"))
            r = c.read_response(head_request=True)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("content-length"), "3")
            self.assertEqual(r.body, b"")
            # The next response starts right after the head: nothing was sent for HEAD.
            self.assertEqual(c.read_response().body, b"ok\n")

    def test_metrics_render_every_core_and_route(self):
        for _ in range(3):
            self.get("/healthz")
        text = self.server.metrics_text()
        samples = harness.parse_metrics(text)
        cores = {l.get("core") for n, l, _ in samples if n == "ringcas_conns"}
        self.assertEqual(cores, {"0", "1"})
        ok = sum(v for n, l, v in samples if n == "ringcas_requests_total" and
                 l.get("route") == "GET /healthz" and l.get("status") == "200")
        self.assertGreaterEqual(ok, 3)
        self.assertIn("# TYPE ringcas_request_duration_seconds histogram", text)
        self.assertIn('ringcas_request_duration_seconds_bucket{core=', text)
        # The metrics request itself is in flight while it renders.
        self.assertGreaterEqual(self.server.metric("ringcas_requests_in_flight",
                                                   route="GET /metrics"), 1)
        status, headers, _ = self.get("/metrics")
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")

    def test_metrics_count_415_and_499_under_their_own_status(self):
        with Raw(self.server.port) as c:
            c.send(request("PUT", "/k", headers=["Content-Encoding: gzip"], body=b"x"))
            self.assertEqual(c.read_response().status, 415)
        with Raw(self.server.port) as c:  # the client goes away in the middle of the body
            c.send(request("GET", "/healthz", headers=["Content-Length: 50"]) + b"x" * 10)
            c.sock.shutdown(socket.SHUT_WR)
            self.assertTrue(c.is_closed())
        harness.wait_for(lambda: self.server.metric("ringcas_requests_total", route="GET /healthz",
                                                    status="499") >= 1, what="a 499")
        self.assertGreaterEqual(self.server.metric("ringcas_requests_total", route="other",
                                                   status="415"), 1)
        # Neither lands in the slot of statuses without one of their own.
        for route in ("other", "GET /healthz"):
            self.assertEqual(self.server.metric("ringcas_requests_total", route=route,
                                                status="other"), 0)

    def test_a_download_cut_short_counts_with_the_status_it_was_sent(self):
        """docs/http.md "Metrics": 499 is for a client gone before the status line; an
        abandoned download's 200 went out, and counts as 200 (as nginx logs it)."""
        body = os.urandom(8 << 20)
        digest = hashlib.sha256(body).hexdigest()
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        conn.request("PUT", "/cas/" + digest, body=body)
        self.assertEqual(conn.getresponse().status, 201)
        conn.close()
        ok = self.server.metric("ringcas_requests_total", route="GET /cas", status="200")
        with Raw(self.server.port) as c:
            c.send(request("GET", "/cas/" + digest))
            self.assertTrue(c.sock.recv(4096).startswith(b"HTTP/1.1 200 "))
        harness.wait_for(lambda: self.server.metric("ringcas_requests_total", route="GET /cas",
                                                    status="200") == ok + 1,
                         what="the abandoned download counted")
        self.assertEqual(self.server.metric("ringcas_requests_total", route="GET /cas",
                                            status="499"), 0)

    def test_methods_and_statuses(self):
        with Raw(self.server.port) as c:
            c.send(request("PUT", "/metrics", body=b"x"))
            r = c.read_response()
            self.assertEqual(r.status, 405)
            self.assertEqual(r.header("allow"), "GET, HEAD")
            c.send(request("BREW", "/healthz"))
            self.assertEqual(c.read_response().status, 501)
            c.send(request("DELETE", "/cas/" + "0" * 64))
            r = c.read_response()
            self.assertEqual(r.status, 405)
            self.assertEqual(r.header("allow"), "GET, HEAD, PUT")
            c.send(request("GET", "/bazel/cas/123"))
            self.assertEqual(c.read_response().status, 400)
            # All of them kept the connection open.
            c.send(request("GET", "/healthz"))
            self.assertEqual(c.read_response().status, 200)
        self.assertGreaterEqual(self.server.metric("ringcas_requests_total", route="other",
                                                   status="405"), 2)

    def test_keep_alive_and_pipelining_keep_order(self):
        with Raw(self.server.port) as c:
            paths = ["/healthz", "/readyz", "/nope/cas/1", "/healthz"] * 25
            c.send(b"".join(request("GET", p) for p in paths))
            want = {"/healthz": (200, b"ok\n"), "/readyz": (200, b"ready\n"),
                    "/nope/cas/1": (400, None)}
            for p in paths:
                r = c.read_response()
                status, body = want[p]
                self.assertEqual(r.status, status, p)
                if body is not None:
                    self.assertEqual(r.body, body)
            # Still open for more.
            c.send(request("GET", "/healthz"))
            self.assertEqual(c.read_response().status, 200)

    def test_pipelined_requests_cut_anywhere(self):
        data = b"".join(request("GET", p) for p in ("/healthz", "/readyz", "/healthz"))
        for cut in range(1, len(data), 7):
            with Raw(self.server.port) as c:
                c.send(data[:cut])
                time.sleep(0.001)
                c.send(data[cut:])
                bodies = [c.read_response().body for _ in range(3)]
                self.assertEqual(bodies, [b"ok\n", b"ready\n", b"ok\n"], cut)

    def test_head_byte_by_byte(self):
        data = request("GET", "/readyz", headers=["X-Long: " + "v" * 300])
        with Raw(self.server.port) as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                c.send(data[i:i + 1])
            self.assertEqual(c.read_response().body, b"ready\n")

    def test_http_1_0_closes_unless_keep_alive(self):
        with Raw(self.server.port) as c:
            c.send(request("GET", "/healthz", version="HTTP/1.0", host=False))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("connection"), "close")
            self.assertTrue(c.is_closed())
        with Raw(self.server.port) as c:
            c.send(request("GET", "/healthz", headers=["Connection: keep-alive"],
                           version="HTTP/1.0"))
            r = c.read_response()
            self.assertEqual(r.header("connection"), "keep-alive")
            c.send(request("GET", "/readyz", headers=["Connection: keep-alive"],
                           version="HTTP/1.0"))
            self.assertEqual(c.read_response().status, 200)

    def test_connection_close_is_honoured(self):
        with Raw(self.server.port) as c:
            c.send(request("GET", "/healthz", headers=["Connection: close"]) +
                   request("GET", "/healthz"))
            r = c.read_response()
            self.assertEqual(r.header("connection"), "close")
            self.assertTrue(c.is_closed())
            self.assertEqual(c.buf, b"")  # the pipelined request was not answered

    def test_small_bodies_are_discarded_and_the_connection_kept(self):
        with Raw(self.server.port) as c:
            c.send(request("GET", "/healthz", body=b"x" * 1000))
            self.assertEqual(c.read_response().status, 200)
            body = os.urandom(5000)
            c.send(request("PUT", "/healthz", headers=["Transfer-Encoding: chunked"],
                           body=chunked(body, [1, 2, 3, 1000])))
            self.assertEqual(c.read_response().status, 405)
            c.send(request("GET", "/readyz"))
            self.assertEqual(c.read_response().status, 200)

    def test_large_refused_body_is_answered_and_closed(self):
        with Raw(self.server.port) as c:
            c.send(request("PUT", "/healthz", headers=["Content-Length: 100000000"]))
            r = c.read_response()
            self.assertEqual(r.status, 405)
            self.assertEqual(r.header("connection"), "close")
            # Lingering close: what the client still sends is read and dropped, then EOF.
            c.send(b"x" * 100000)
            self.assertTrue(c.is_closed())
        with Raw(self.server.port) as c:
            c.send(request("PUT", "/healthz", headers=["Transfer-Encoding: chunked"]))
            c.send(b"%x\r\n" % (1 << 20) + b"y" * (1 << 20))
            r = c.read_response()
            self.assertEqual(r.status, 405)
            self.assertEqual(r.header("connection"), "close")
            self.assertTrue(c.is_closed())

    def test_expect_continue_on_a_refused_request_gets_the_final_status(self):
        with Raw(self.server.port) as c:
            c.send(request("PUT", "/metrics", headers=["Content-Length: 10",
                                                       "Expect: 100-continue"]))
            r = c.read_response()
            self.assertEqual(r.status, 405)  # no 100 Continue first
            self.assertEqual(r.header("connection"), "close")
            self.assertTrue(c.is_closed())


class BadInput(harness.ServerTestCase):
    server_args = ("--read-timeout", "1s")

    def tearDown(self):
        self.server.wait_quiet()

    def expect_error(self, data, status):
        with Raw(self.server.port) as c:
            c.send(data)
            r = c.read_response()
            self.assertEqual(r.status, status, data[:80])
            self.assertEqual(r.header("connection"), "close")
            self.assertTrue(c.is_closed())
            return r

    def test_malformed_request_lines(self):
        for data in (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
                     b"GET / HTTP/1.1\nHost: a\r\n\r\n",
                     b"GET /healthz HTTP/1.1\nHost: a\n\n",  # never a CRLFCRLF: no waiting
                     b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
                     b"GET / HTTP/1.1\r\n\r\n",  # no Host
                     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS hello
                     b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n",
                     b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",  # RFC 9112 §3.2
                     b"GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n",
                     b"GET http://u@h/healthz HTTP/1.1\r\nHost: h\r\n\r\n"):  # userinfo
            self.expect_error(data, 400)
        self.expect_error(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505)
        self.expect_error(b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                          501)
        self.expect_error(request("GET", "/" + "a" * 5000), 414)
        # A target longer than the whole head's limit is still a target too long.
        self.expect_error(request("GET", "/" + "a" * 20000), 414)
        self.assertGreaterEqual(self.server.metric("ringcas_requests_total", route="other",
                                                   status="400"), 11)

    def test_a_refused_head_request_gets_no_content(self):
        # A response to HEAD has no content (RFC 9110 §9.3.2), refusals included: a malformed
        # head's refusal of a HEAD request said Content-Length and then sent its text, bytes a
        # client (or a proxy in front) reads as the start of a next response.
        for data, status in ((b"HEAD /healthz HTTP/1.1\r\nHost : a\r\n\r\n", 400),
                             (b"HEAD /healthz HTTP/1.1\nHost: a\n\n", 400),
                             (b"HEAD /healthz HTTP/1.1\r\n\r\n", 400),  # no Host
                             (b"HEAD /healthz HTTP/2.0\r\nHost: a\r\n\r\n", 505),
                             (request("HEAD", "/" + "a" * 5000), 414),
                             (request("HEAD", "/healthz", headers=["X: " + "b" * 20000]), 431)):
            with Raw(self.server.port) as c:
                c.send(data)
                r = c.read_response(head_request=True)
                self.assertEqual(r.status, status, data[:40])
                self.assertEqual(r.header("connection"), "close")
                self.assertGreater(int(r.header("content-length")), 0)  # as its GET's
                self.assertTrue(c.is_closed())
                self.assertEqual(c.buf, b"", data[:40])
            # The same refusal of a GET says what was wrong.
            with Raw(self.server.port) as c:
                c.send(data.replace(b"HEAD", b"GET", 1))
                r = c.read_response()
                self.assertEqual(r.status, status)
                self.assertEqual(len(r.body), int(r.header("content-length")))

    def test_a_final_coding_other_than_chunked_is_400(self):
        # RFC 9112 §6.3: when chunked is not the final transfer coding the body's length
        # cannot be found, and the server must answer 400 and close; these were 501. A coding
        # before a final chunked is one ringcas does not implement: 501 (§6.1). Either way the
        # connection closes and nothing after the head is read as a request.
        for te, status, said in (
                ("chunked, identity", 400, b"chunked is not the final transfer coding\n"),
                ("gzip", 400, b"chunked is not the final transfer coding\n"),
                ("chunked\r\nTransfer-Encoding: gzip", 400,
                 b"chunked is not the final transfer coding\n"),
                ("chunked,", 400, b"chunked is not the final transfer coding\n"),
                ("gzip, chunked", 501, b"unsupported Transfer-Encoding\n"),
                ("chunked\r\nTransfer-Encoding: chunked", 501,
                 b"unsupported Transfer-Encoding\n")):
            with Raw(self.server.port) as c:
                c.send(request("PUT", "/k/te", headers=["Transfer-Encoding: " + te]) +
                       b"0\r\n\r\n" + request("GET", "/healthz"))
                r = c.read_response()
                self.assertEqual((r.status, r.body), (status, said), te)
                self.assertEqual(r.header("connection"), "close", te)
                self.assertTrue(c.is_closed(), te)
                self.assertEqual(c.buf, b"", te)

    def test_oversize_head_gets_431_and_close(self):
        r = self.expect_error(request("GET", "/healthz", headers=["X-Big: " + "b" * 20000]), 431)
        self.assertIn(b"too large", r.body)
        self.expect_error(request("GET", "/healthz",
                                  headers=["X-%d: v" % i for i in range(100)]), 431)
        # A head that never ends is cut at the limit as well.
        with Raw(self.server.port) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"z" * 17000)
            self.assertEqual(c.read_response().status, 431)
            self.assertTrue(c.is_closed())

    def test_slow_sender_is_closed_by_the_read_timeout(self):
        before = self.server.metric("ringcas_read_timeouts_total")
        with Raw(self.server.port) as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHo")
            start = time.monotonic()
            self.assertTrue(c.is_closed(timeout=10))
            self.assertGreater(time.monotonic() - start, 0.5)
        with Raw(self.server.port) as c:  # a body that stops coming
            c.send(request("PUT", "/healthz", headers=["Content-Length: 100"]) + b"x" * 10)
            self.assertTrue(c.is_closed(timeout=10))
        harness.wait_for(lambda: self.server.metric("ringcas_read_timeouts_total") >= before + 2,
                         what="two read timeouts")

    def test_a_connection_handed_to_another_core_keeps_its_read_timeout(self):
        # A core that accepts a connection while it has more than another hands it over
        # (docs/operations.md "Threads and cores"); the adopting core must arm the same
        # deadlines. Connections are opened one at a time, each idle, until the counters say
        # the last one was handed over; /metrics is read on one kept connection, so no other
        # accept happens in between.
        mc = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)

        def counters():
            mc.request("GET", "/metrics")
            samples = harness.parse_metrics(mc.getresponse().read().decode())
            return tuple(sum(v for n, _, v in samples if n == name)
                         for name in ("ringcas_conns_accepted_total",
                                      "ringcas_conns_handed_over_total",
                                      "ringcas_read_timeouts_total"))

        held = []
        try:
            accepted, handed, timeouts = counters()
            adopted = None
            for _ in range(32):  # a hand-over is a coin toss per connection
                held.append(Raw(self.server.port))
                harness.wait_for(lambda: counters()[0] > accepted, what="the accept")
                accepted, now_handed, _ = counters()
                if now_handed > handed:
                    adopted = held[-1]
                    break
            self.assertIsNotNone(adopted, "no connection of 32 was handed over")
            adopted.send(b"GET /healthz HTTP/1.1\r\nHo")  # a head that stops coming
            start = time.monotonic()
            self.assertTrue(adopted.is_closed(timeout=10))
            self.assertGreater(time.monotonic() - start, 0.5)
            mc.close()
            harness.wait_for(lambda: self.server.metric("ringcas_read_timeouts_total")
                             >= timeouts + len(held), what="a read timeout per connection")
        finally:
            mc.close()
            for c in held:
                c.close()

    def test_peer_closing_mid_head_or_body(self):
        with Raw(self.server.port) as c:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
            c.sock.shutdown(socket.SHUT_WR)
            self.assertTrue(c.is_closed())
            self.assertEqual(c.buf, b"")
        with Raw(self.server.port) as c:
            c.send(request("GET", "/healthz", headers=["Content-Length: 50"]) + b"x" * 10)
            c.sock.shutdown(socket.SHUT_WR)
            self.assertTrue(c.is_closed())
            self.assertEqual(c.buf, b"")

    def test_request_then_half_close_is_answered(self):
        with Raw(self.server.port) as c:
            c.send(request("GET", "/healthz") + request("GET", "/readyz"))
            c.sock.shutdown(socket.SHUT_WR)
            self.assertEqual(c.read_response().body, b"ok\n")
            self.assertEqual(c.read_response().body, b"ready\n")
            self.assertTrue(c.is_closed())


class FolderRemoved(unittest.TestCase):
    def test_readyz_is_503_once_the_data_folder_is_removed(self):
        # rm -rf of the data folder under a running server: what is open stays readable, but
        # no segment can be made and a restart starts empty, so the node says it is unready
        # (/readyz and the gRPC health check) for an orchestrator to replace it.
        srv = harness.Server(cores=1).start()
        try:
            blob = os.urandom(5000)
            digest = hashlib.sha256(blob).hexdigest()
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("PUT", "/cas/" + digest, body=blob)
            r = conn.getresponse()
            r.read()
            self.assertEqual(r.status, 201)
            conn.request("GET", "/readyz")
            r = conn.getresponse()
            self.assertEqual((r.status, r.read()), (200, b"ready\n"))
            shutil.rmtree(srv.dir)

            def unready():
                conn.request("GET", "/readyz")
                r = conn.getresponse()
                body = r.read()
                return (r.status, body) if r.status != 200 else None
            self.assertEqual(harness.wait_for(unready, timeout=15, what="/readyz 503"),
                             (503, b"data folder removed\n"))
            client = reapi.Client(srv.address)
            try:
                resp = client.Check(reapi.msg("grpc.health.v1.HealthCheckRequest"), timeout=10)
                self.assertEqual(resp.status, 2)  # NOT_SERVING
            finally:
                client.close()
            conn.request("GET", "/cas/" + digest)
            r = conn.getresponse()
            self.assertEqual((r.status, r.read()), (200, blob))  # what is open stays readable
            conn.close()
            self.assertIn("data folder %s was removed" % srv.dir, srv.log_tail())
        finally:
            srv.stop()
            srv.cleanup()


class Drain(unittest.TestCase):
    def test_readyz_is_503_while_draining_and_the_request_completes(self):
        srv = harness.Server(cores=1).start()
        try:
            with Raw(srv.port) as idle, Raw(srv.port) as busy:
                idle.send(request("GET", "/healthz"))
                self.assertEqual(idle.read_response().status, 200)
                # A request under way when SIGTERM arrives: its head is half sent.
                busy.send(b"GET /readyz HTTP/1.1\r\nHost: a\r\n")
                time.sleep(0.2)
                srv.proc.send_signal(signal.SIGTERM)
                # The idle keep-alive connection is closed at once.
                self.assertTrue(idle.is_closed())
                busy.send(b"\r\n")
                r = busy.read_response()
                self.assertEqual(r.status, 503)
                self.assertEqual(r.body, b"draining\n")
                self.assertEqual(r.header("connection"), "close")
                self.assertTrue(busy.is_closed())
            srv.wait_exit(30)
        finally:
            srv.cleanup()

    def test_new_connections_are_refused_and_pipelined_requests_dropped(self):
        """What a load balancer sees of a drain (docs/operations.md): the listener closes at
        once, so new connections (readiness probes included) are refused; a request under
        way finishes with Connection: close, and what is pipelined behind it is not served."""
        srv = harness.Server(cores=1, args=["--drain-timeout", "30s"]).start()
        try:
            with Raw(srv.port) as busy:
                busy.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
                time.sleep(0.2)
                srv.proc.send_signal(signal.SIGTERM)

                def refused():
                    try:
                        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                        return False
                    except ConnectionResetError:
                        # Its handshake raced with the listener's close: the kernel resets
                        # what was still in the accept queue. The next one is refused.
                        return False
                    except ConnectionRefusedError:
                        return True
                harness.wait_for(refused, what="the listener closed")
                busy.send(b"\r\n" + request("GET", "/readyz"))
                r = busy.read_response()
                self.assertEqual((r.status, r.body), (200, b"ok\n"))
                self.assertEqual(r.header("connection"), "close")
                self.assertTrue(busy.is_closed())
                self.assertEqual(busy.buf, b"", "the pipelined /readyz is not answered")
            srv.wait_exit(30)
        finally:
            srv.cleanup()


if __name__ == "__main__":
    unittest.main(verbosity=2)
