"""HTTP/2 and gRPC on the real server, with grpcio, nghttp and a raw frame client: Health and
Capabilities, gRPC framing and errors, and every limit (streams, header bytes, message size,
rapid resets, CONTINUATION floods, idle connections, drain). Every scenario ends with the
server's stream, call and memory counters back to zero."""

import hashlib
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
import unittest
import uuid

import grpc

import h2raw
import harness
import reapi

GAUGES = ("h2_streams", "grpc_calls", "grpc_segs", "grpc_slices", "grpc_pins", "pb_mem_bytes",
          "bs_readers", "bs_uploads")
BATCH_UPDATE = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"
HEALTH = "/grpc.health.v1.Health/Check"
# HealthCheckResponse{status: SERVING}, framed: what a successful Check sends back.
SERVING = h2raw.grpc_message(b"\x08\x01")


class H2Case(harness.ServerTestCase):
    def setUp(self):
        self.client = reapi.Client(self.server.address)

    def tearDown(self):
        self.client.close()
        self.server.wait_quiet(extra=GAUGES + ("h2_conns",))

    def check(self, service=""):
        return self.client.Check(reapi.msg("grpc.health.v1.HealthCheckRequest", service=service),
                                 timeout=10)

    def code_of(self, fn, *args, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        return cm.exception.code(), cm.exception.details()


class Services(H2Case):
    def test_health_serving_for_the_server_and_each_service(self):
        for name in ("", "grpc.health.v1.Health", "google.bytestream.ByteStream",
                     "build.bazel.remote.execution.v2.ContentAddressableStorage",
                     "build.bazel.remote.execution.v2.ActionCache",
                     "build.bazel.remote.execution.v2.Capabilities"):
            self.assertEqual(self.check(name).status, 1, name)
        code, _ = self.code_of(self.check, "no.such.Service")
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)

    def test_capabilities(self):
        caps = self.client.GetCapabilities(reapi.msg("GetCapabilitiesRequest", instance_name="a/b"),
                                           timeout=10)
        cc = caps.cache_capabilities
        self.assertEqual(list(cc.digest_functions), [1])          # SHA256
        self.assertEqual(list(cc.supported_compressors), [1])     # ZSTD
        self.assertEqual(list(cc.supported_batch_update_compressors), [1])
        self.assertEqual(cc.max_batch_total_size_bytes, 4 << 20)
        self.assertTrue(cc.action_cache_update_capabilities.update_enabled)
        self.assertEqual((caps.low_api_version.major, caps.low_api_version.minor), (2, 0))
        self.assertEqual((caps.high_api_version.major, caps.high_api_version.minor), (2, 3))
        self.assertFalse(caps.HasField("execution_capabilities"))

    def test_capabilities_name_the_largest_blob_the_store_takes(self):
        # REAPI 2.3's max_cas_blob_size_bytes: 0 would say "no limit", where an upload past
        # a quarter of --max-size is refused at its start.
        with harness.Server(args=("--max-size", "4GiB"), cores=1) as srv:
            c = reapi.Client(srv.address)
            try:
                caps = c.GetCapabilities(reapi.msg("GetCapabilitiesRequest"), timeout=10)
                limit = caps.cache_capabilities.max_cas_blob_size_bytes
                self.assertEqual(limit, 1 << 30)
                codes = []
                for size in (limit + 1, limit):
                    name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), "ab" * 32, size)
                    req = reapi.msg("google.bytestream.WriteRequest", resource_name=name,
                                    data=b"x", finish_write=True)
                    with self.assertRaises(grpc.RpcError) as cm:
                        c.Write(iter([req]), timeout=10)
                    codes.append((cm.exception.code(), "larger than this store takes" in
                                  cm.exception.details()))
                # Past the limit: refused at its start (INVALID_ARGUMENT, as REAPI names it for
                # max_cas_blob_size_bytes); at the limit, taken, and then a size mismatch.
                self.assertEqual(codes, [(grpc.StatusCode.INVALID_ARGUMENT, True),
                                         (grpc.StatusCode.INVALID_ARGUMENT, False)])
            finally:
                c.close()

    def test_metrics_count_calls_by_route_and_status(self):
        before = self.server.metric("ringcas_requests_total", route="grpc.health.v1.Health/Check",
                                    status="0")
        for _ in range(3):
            self.check()
        after = self.server.metric("ringcas_requests_total", route="grpc.health.v1.Health/Check",
                                   status="0")
        self.assertEqual(after - before, 3)


class Errors(H2Case):
    def test_unknown_method_is_unimplemented(self):
        code, _ = self.code_of(self.client.raw("/no.Such/Method"), b"", timeout=10)
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)
        code, _ = self.code_of(self.client.raw("/grpc.health.v1.Health/Watch"), b"", timeout=10)
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)

    def test_undecodable_message_is_invalid_argument(self):
        code, details = self.code_of(self.client.raw(HEALTH), b"\xff\xff\xff", timeout=10)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("undecodable", details)

    def test_each_unary_request_that_does_not_decode_is_named_invalid_argument(self):
        # Each service decodes its request through one path (rpc_call_unpack); the answer
        # names the request type, and the bytes never reach the service.
        v2 = "/build.bazel.remote.execution.v2."
        methods = {
            HEALTH: "HealthCheckRequest",
            v2 + "Capabilities/GetCapabilities": "GetCapabilitiesRequest",
            BATCH_UPDATE: "BatchUpdateBlobsRequest",
            v2 + "ContentAddressableStorage/BatchReadBlobs": "BatchReadBlobsRequest",
            v2 + "ContentAddressableStorage/GetTree": "GetTreeRequest",
            v2 + "ActionCache/GetActionResult": "GetActionResultRequest",
            v2 + "ActionCache/UpdateActionResult": "UpdateActionResultRequest",
            "/google.bytestream.ByteStream/QueryWriteStatus": "QueryWriteStatusRequest",
        }
        for path, what in methods.items():
            if path.endswith("/GetTree"):
                stream = self.client.raw(path, "us")
                call = lambda: list(stream(b"\xff\xff\xff", timeout=10))
            else:
                call = lambda: self.client.raw(path)(b"\xff\xff\xff", timeout=10)
            code, details = self.code_of(call)
            self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, path)
            self.assertEqual(details, "undecodable " + what, path)

    def test_unary_needs_exactly_one_message(self):
        two = self.client.raw(HEALTH, "su")
        code, _ = self.code_of(two, iter([b"", b""]), timeout=10)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        code, _ = self.code_of(two, iter([]), timeout=10)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)

    def test_message_over_the_limit_is_resource_exhausted(self):
        big = b"\x0a" + b"\x80\x80\x80\x03" + b"x" * (5 << 20)  # service = 6 MiB string
        before = self.server.metric("ringcas_grpc_oversize_total")
        code, _ = self.code_of(self.client.raw(HEALTH), big, timeout=30)
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(self.server.metric("ringcas_grpc_oversize_total") - before, 1)
        # A message just under the limit is taken (and is a fine, if odd, service name).
        ok = b"\x0a" + b"\x80\x80\x80\x02" + b"x" * (4 << 20)
        code, _ = self.code_of(self.client.raw(HEALTH), ok, timeout=30)
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)

    def test_compressed_messages_are_refused(self):
        code, details = self.code_of(self.client.Check,
                                     reapi.msg("grpc.health.v1.HealthCheckRequest", service="x" * 100),
                                     timeout=10, compression=grpc.Compression.Gzip)
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)
        self.assertIn("grpc-encoding", details)

    def nghttp(self, *args):
        self.assertTrue(shutil.which("nghttp"), "install Debian's nghttp2-client (scripts/deps.sh test)")
        body = os.path.join(self.server.dir, "body")
        with open(body, "wb") as f:
            f.write(h2raw.grpc_message(b""))
        r = subprocess.run(["nghttp", "-nv", "-d", body] + list(args) +
                           ["http://%s%s" % (self.server.address, HEALTH)],
                           capture_output=True, text=True, timeout=30)
        return r.stdout

    def test_content_type_must_be_grpc(self):
        out = self.nghttp("-H", "content-type: text/plain")
        self.assertIn(":status: 415", out)
        out = self.nghttp("-H", "content-type: application/grpc+proto", "-H", "te: trailers")
        self.assertIn(":status: 200", out)
        self.assertIn("grpc-status: 0", out)

    def test_http_routes_are_http1_only(self):
        # An HTTP/2 connection carries gRPC only (docs/http.md): a cache GET there is a gRPC
        # call with the wrong method, and an h2c upgrade request is answered in HTTP/1.1.
        url = "%s/metrics" % self.server.url
        r = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "--http2-prior-knowledge",
                            url], capture_output=True, text=True, timeout=30)
        self.assertRegex(r.stdout, r"^HTTP/2 405", r.stdout)
        self.assertIn("grpc-status: 12", r.stdout)
        r = subprocess.run(["curl", "-s", "-D", "-", "--http2", url], capture_output=True,
                           text=True, timeout=30)
        self.assertRegex(r.stdout, r"^HTTP/1.1 200", r.stdout[:300])
        self.assertIn("\nringcas_conns{", r.stdout)

    def test_unsupported_encoding_names_the_accepted_ones(self):
        # gRPC compression.md: the UNIMPLEMENTED of an unknown grpc-encoding carries
        # grpc-accept-encoding.
        out = self.nghttp("-H", "content-type: application/grpc", "-H", "grpc-encoding: gzip")
        self.assertIn("grpc-status: 12", out)
        self.assertIn("grpc-accept-encoding: identity", out)
        # grpcio asked to compress (it does only when asked) gets it, and does not fall back.
        channel = grpc.insecure_channel(self.server.address, compression=grpc.Compression.Gzip)
        try:
            check = channel.unary_unary(HEALTH)
            with self.assertRaises(grpc.RpcError) as cm:
                check(b"", timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            self.assertEqual(cm.exception.details(), "grpc-encoding not supported (identity only)")
        finally:
            channel.close()

    def test_header_list_over_the_limit_is_431_resource_exhausted(self):
        # RFC 9113 §10.5.1: HTTP 431, with a gRPC status that says which limit (trailers-only).
        out = self.nghttp("-H", "content-type: application/grpc",
                          "-H", "x-big: " + "v" * 8000, "-H", "x-big2: " + "w" * 9000)
        out = "\n".join(line for line in out.splitlines() if "x-big" not in line)
        self.assertIn(":status: 431", out)
        self.assertIn("grpc-status: 8", out)  # RESOURCE_EXHAUSTED
        self.assertIn("SETTINGS_MAX_HEADER_LIST_SIZE", out)
        out = self.nghttp("-H", "content-type: application/grpc", "-H", "x-big: " + "v" * 15000)
        self.assertIn("grpc-status: 0", out)  # under the limit

    def test_malformed_grpc_timeout_and_zero_timeout(self):
        out = self.nghttp("-H", "content-type: application/grpc", "-H", "grpc-timeout: 10x")
        self.assertIn("grpc-status: 3", out)
        out = self.nghttp("-H", "content-type: application/grpc", "-H", "grpc-timeout: 0m")
        self.assertIn("grpc-status: 4", out)
        # PROTOCOL-HTTP2.md: "positive integer as ASCII string of at most 8 digits".
        out = self.nghttp("-H", "content-type: application/grpc", "-H",
                          "grpc-timeout: 100000000m")
        self.assertIn("grpc-status: 3", out)
        # Trailers-only: the status comes in the one HEADERS frame, no DATA.
        self.assertNotIn("recv DATA", out)


class Framing(H2Case):
    def raw_check(self, pieces, flags_last=h2raw.END_STREAM):
        c = h2raw.Conn(self.server.port, window=1 << 20)
        try:
            c.headers(1, h2raw.grpc_headers(HEALTH))
            for i, p in enumerate(pieces):
                c.data(1, p, end_stream=(i == len(pieces) - 1))
            got = b""
            for f in c.frames_until(lambda f: f[2] == 1 and f[1] & h2raw.END_STREAM):
                if f[0] == h2raw.DATA and f[2] == 1:
                    got += f[3]
            return got
        finally:
            c.close()

    def test_message_split_byte_by_byte_across_frames(self):
        msg = h2raw.grpc_message(b"")
        self.assertEqual(self.raw_check([msg[i:i + 1] for i in range(len(msg))]), SERVING)
        msg = h2raw.grpc_message(b"\x0a\x15grpc.health.v1.Health")
        self.assertEqual(self.raw_check([msg[:3], msg[3:11], msg[11:], b""]), SERVING)

    def test_two_messages_in_one_frame_is_an_error_for_unary(self):
        got = self.raw_check([h2raw.grpc_message(b"") * 2])
        self.assertEqual(got, b"")  # trailers-only INVALID_ARGUMENT: no DATA

    def test_truncated_message_at_end_of_stream(self):
        got = self.raw_check([h2raw.grpc_message(b"\x0a\x01x")[:6]])
        self.assertEqual(got, b"")

    def test_many_calls_on_one_connection_share_sends(self):
        c = h2raw.Conn(self.server.port, window=1 << 24)
        try:
            for i in range(100):
                c.headers(2 * i + 1, h2raw.grpc_headers(HEALTH))
                c.data(2 * i + 1, h2raw.grpc_message(b""), end_stream=True)
            done = set()
            body = {}
            while len(done) < 100:
                f = c.read_frame(20)
                self.assertIsNotNone(f)
                if f[0] == h2raw.DATA:
                    body[f[2]] = body.get(f[2], b"") + f[3]
                if f[0] == h2raw.HEADERS and f[1] & h2raw.END_STREAM:
                    done.add(f[2])
            self.assertEqual(len(done), 100)
            self.assertTrue(all(b == SERVING for b in body.values()) and len(body) == 100)
        finally:
            c.close()

    def test_200_concurrent_calls(self):
        errors = []
        clients = [reapi.Client(self.server.address) for _ in range(4)]

        def worker(cl, n):
            try:
                futs = [cl.Check.future(reapi.msg("grpc.health.v1.HealthCheckRequest"), timeout=30)
                        for _ in range(n)]
                for f in futs:
                    if f.result().status != 1:
                        errors.append("not serving")
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(cl, 50)) for cl in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for cl in clients:
            cl.close()
        self.assertEqual(errors, [])


    def test_rfc7540_priorities_are_off_and_priority_frames_are_harmless(self):
        # RFC 9218 §2.1: the server says it ignores RFC 7540 priorities (nghttp2 then keeps
        # no closed streams for the dependency tree); PRIORITY frames, on finished streams
        # and in HEADERS, change nothing.
        c = h2raw.Conn(self.server.port, window=1 << 24)
        try:
            frames = c.frames_until(lambda f: f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK)
            settings = frames[-1][3]
            values = {int.from_bytes(settings[i:i + 2], "big"):
                      int.from_bytes(settings[i + 2:i + 6], "big") for i in range(0, len(settings), 6)}
            self.assertEqual(values.get(9), 1)  # SETTINGS_NO_RFC7540_PRIORITIES
            done = set()
            for i in range(20):
                sid = 2 * i + 1
                if i > 0:
                    # Depend on the stream before, which has finished: exclusive, weight 200.
                    c.send_frame(h2raw.PRIORITY, 0, sid, struct.pack(">IB", (sid - 2) | 1 << 31, 200))
                c.headers(sid, h2raw.grpc_headers(HEALTH))
                c.data(sid, h2raw.grpc_message(b""), end_stream=True)
                frames = c.frames_until(lambda f: f[0] == h2raw.HEADERS and f[1] & h2raw.END_STREAM)
                self.assertFalse([f for f in frames if f[0] in (h2raw.RST_STREAM, h2raw.GOAWAY)])
                done.add(frames[-1][2])
            self.assertEqual(done, {2 * i + 1 for i in range(20)})
        finally:
            c.close()


class WriteFraming(H2Case):
    """ByteStream.Write calls whose gRPC framing goes wrong after their upload began: each ends
    with its error and its upload is aborted (bs_uploads back to zero in tearDown, nothing
    stored); a WriteRequest after finish_write is INVALID_ARGUMENT."""

    WRITE = "/google.bytestream.ByteStream/Write"
    ROUTE = "google.bytestream.ByteStream/Write"

    def setUp(self):
        super().setUp()
        self.data = os.urandom(1000)
        self.hash = hashlib.sha256(self.data).hexdigest()
        self.name = "uploads/%s/blobs/%s/1000" % (uuid.uuid4(), self.hash)

    def request(self, offset, data, finish=False, name=False):
        r = reapi.msg("google.bytestream.WriteRequest", write_offset=offset, data=data,
                      finish_write=finish)
        if name:
            r.resource_name = self.name
        return h2raw.grpc_message(r.SerializeToString())

    def statuses(self):
        return {s: self.server.metric("ringcas_requests_total", route=self.ROUTE, status=s)
                for s in ("0", "3", "8", "13")}

    def write_raw(self, body):
        """Sends <body> as the Write's DATA, ending the stream; returns the status counted."""
        before = self.statuses()
        c = h2raw.Conn(self.server.port, window=1 << 22)
        try:
            c.headers(1, h2raw.grpc_headers(self.WRITE))
            c.data(1, body, end_stream=True)
            c.frames_until(lambda f: f[2] == 1 and f[1] & h2raw.END_STREAM)
        finally:
            c.close()
        after = self.statuses()
        moved = [s for s in after if after[s] != before[s]]
        self.assertEqual(len(moved), 1, (before, after))
        return moved[0]

    def assert_missing(self):
        req = reapi.msg("FindMissingBlobsRequest")
        req.blob_digests.add(hash=self.hash, size_bytes=1000)
        self.assertEqual(len(self.client.FindMissingBlobs(req, timeout=10).missing_blob_digests), 1)

    def test_message_cut_short_at_the_end_of_the_stream(self):
        rest = self.request(500, self.data[500:], finish=True)
        status = self.write_raw(self.request(0, self.data[:500], name=True) + rest[:100])
        self.assertEqual(status, "3")  # INVALID_ARGUMENT: the request ended inside a message
        self.assert_missing()

    def test_compressed_message_after_the_first(self):
        rest = bytearray(self.request(500, self.data[500:], finish=True))
        rest[0] = 1  # the compressed flag, with no grpc-encoding
        status = self.write_raw(self.request(0, self.data[:500], name=True) + bytes(rest))
        self.assertEqual(status, "13")
        self.assert_missing()

    def test_oversize_message_after_the_first(self):
        header = b"\x00" + struct.pack(">I", (4 << 20) + (64 << 10) + 1)
        status = self.write_raw(self.request(0, self.data[:500], name=True) + header + b"x" * 100)
        self.assertEqual(status, "8")  # RESOURCE_EXHAUSTED
        self.assert_missing()

    def test_request_after_finish_write(self):
        body = (self.request(0, self.data, finish=True, name=True) +
                self.request(1000, b"zz"))
        status = self.write_raw(body)
        self.assertEqual(status, "3")  # INVALID_ARGUMENT, not INTERNAL
        # The commit had begun: the blob is stored.
        def stored():
            req = reapi.msg("FindMissingBlobsRequest")
            req.blob_digests.add(hash=self.hash, size_bytes=1000)
            return not self.client.FindMissingBlobs(req, timeout=10).missing_blob_digests
        harness.wait_for(stored, what="the committed blob")


class ClientSettings(H2Case):
    """Settings a client changes while the server sends (RFC 9113 §6.5.2, §6.9.2)."""

    def read_request(self, data):
        d = reapi.put_blob(self.server.address, data)
        r = reapi.msg("google.bytestream.ReadRequest",
                      resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))
        return h2raw.grpc_message(r.SerializeToString())

    @staticmethod
    def read_data(frames):
        """The blob bytes in stream 1's DATA frames (ReadResponse messages)."""
        body = b"".join(f[3] for f in frames if f[0] == h2raw.DATA and f[2] == 1)
        out = b""
        while body:
            n = int.from_bytes(body[1:5], "big")
            out += reapi.msg("google.bytestream.ReadResponse").FromString(body[5:5 + n]).data
            body = body[5 + n:]
        return out

    def test_initial_window_set_to_zero_mid_stream_and_back_resumes_the_answer(self):
        # SETTINGS_INITIAL_WINDOW_SIZE changes every open stream's window by the difference,
        # down to below zero (§6.9.2); sends stop, and go on once it is positive again.
        data = os.urandom(1 << 20)
        c = h2raw.Conn(self.server.port, window=32 << 20)
        try:
            c.headers(1, h2raw.grpc_headers("/google.bytestream.ByteStream/Read"))
            c.data(1, self.read_request(data), end_stream=True)
            frames = []
            while sum(len(f[3]) for f in frames if f[0] == h2raw.DATA) < 65535:
                frames.append(c.read_frame())  # the default stream window, all sent
            c.send_frame(h2raw.SETTINGS, 0, 0, struct.pack(">HI", 4, 0))  # window: -65535
            c.send_frame(h2raw.WINDOW_UPDATE, 0, 1, struct.pack(">I", 65535))  # 0: still shut
            c.send_frame(h2raw.SETTINGS, 0, 0, struct.pack(">HI", 4, 2 << 20))  # 2 MiB
            frames += c.frames_until(lambda f: f[2] == 1 and f[1] & h2raw.END_STREAM, timeout=20)
            self.assertFalse([f for f in frames if f[0] in (h2raw.RST_STREAM, h2raw.GOAWAY)])
            self.assertEqual(self.read_data(frames), data)
        finally:
            c.close()

    def test_max_frame_size_bounds_data_frames_both_ways(self):
        # 16384 (the minimum) is kept to; 16 MiB - 1 (the maximum) is capped at our 64 KiB.
        data = os.urandom(1 << 20)
        request = self.read_request(data)
        for max_frame, largest in ((16384, 16384), ((1 << 24) - 1, 64 << 10)):
            c = h2raw.Conn(self.server.port, settings=((5, max_frame), (4, 16 << 20)),
                           window=32 << 20)
            try:
                c.headers(1, h2raw.grpc_headers("/google.bytestream.ByteStream/Read"))
                c.data(1, request, end_stream=True)
                frames = c.frames_until(lambda f: f[2] == 1 and f[1] & h2raw.END_STREAM,
                                        timeout=20)
                sizes = [len(f[3]) for f in frames if f[0] == h2raw.DATA]
                self.assertEqual(max(sizes), largest)
                self.assertEqual(self.read_data(frames), data)
            finally:
                c.close()

    def test_window_update_past_2_31_minus_1_is_a_flow_control_error(self):
        # §6.9.1: on a stream, a stream error; on the connection, a connection error.
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, h2raw.grpc_headers(HEALTH))
            c.send_frame(h2raw.WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7fffffff))
            self.assertEqual(c.first_error(), (h2raw.RST_STREAM, 1, h2raw.FLOW_CONTROL_ERROR))
            c.headers(3, h2raw.grpc_headers(HEALTH))  # the connection lives on
            c.data(3, h2raw.grpc_message(b""), end_stream=True)
            frames = c.frames_until(lambda f: f[2] == 3 and f[1] & h2raw.END_STREAM)
            self.assertEqual([f[3] for f in frames if f[0] == h2raw.DATA], [SERVING])
            c.send_frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7fffffff))
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY)
            self.assertEqual(h2raw.goaway_code(frames[-1]), h2raw.FLOW_CONTROL_ERROR)
        finally:
            c.close()


class RequestHeaders(H2Case):
    """Request headers real clients vary, on the raw client (gRPC over HTTP/2, RFC 9113 §8.2)."""

    def health(self, headers):
        """Stream 1 with <headers> and an empty Check request: its frames up to its end."""
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, headers)
            c.data(1, h2raw.grpc_message(b""), end_stream=True)
            return c.frames_until(lambda f: f[2] == 1 and (f[1] & h2raw.END_STREAM or
                                                           f[0] == h2raw.RST_STREAM))
        finally:
            c.close()

    def test_what_clients_send_differently_is_served(self):
        base = [h for h in h2raw.grpc_headers(HEALTH) if h[0] != "te"]  # no te, no user-agent
        variants = [
            [], [("te", "trailers"), ("user-agent", "grpc-python/1.51.1")],
            [("x-trace-bin", "AAEC")], [("x-trace-bin", "AAE=")], [("x-trace-bin", "AAE")],
            [("x-trace-bin", "!not base64!")],  # -bin values are not decoded
            [("m%d" % i, "v") for i in range(400)],  # 400 metadata entries, 14 KiB counted
        ] + [[("grpc-timeout", t)] for t in
             ("1H", "1M", "10S", "10000m", "10000000u", "99999999n", "99999999S", "00000010S")]
        for extra in variants:
            frames = self.health(base + extra)
            self.assertEqual([f[3] for f in frames if f[0] == h2raw.DATA], [SERVING], extra[:2])
        for ct in ("application/grpc+proto", "application/grpc;charset=utf-8"):
            frames = self.health(h2raw.grpc_headers(HEALTH, content_type=ct))
            self.assertEqual([f[3] for f in frames if f[0] == h2raw.DATA], [SERVING], ct)

    def test_upper_case_header_names_reset_the_stream_only(self):
        # RFC 9113 §8.2.1: a malformed request, a stream error PROTOCOL_ERROR.
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, h2raw.grpc_headers(HEALTH, extra=[("X-Upper", "1")]))
            c.data(1, h2raw.grpc_message(b""), end_stream=True)
            c.headers(3, h2raw.grpc_headers(HEALTH))
            c.data(3, h2raw.grpc_message(b""), end_stream=True)
            frames = c.frames_until(lambda f: f[2] == 3 and f[1] & h2raw.END_STREAM)
            self.assertEqual([(f[2], h2raw.rst_code(f)) for f in frames
                              if f[0] == h2raw.RST_STREAM], [(1, h2raw.PROTOCOL_ERROR)])
            self.assertEqual([f[3] for f in frames if f[0] == h2raw.DATA], [SERVING])
        finally:
            c.close()


class Limits(H2Case):
    def test_max_concurrent_streams_is_advertised_and_enforced(self):
        # Before the client acknowledges SETTINGS, a stream past the limit is refused alone.
        c = h2raw.Conn(self.server.port, ack=False)
        try:
            frames = c.frames_until(lambda f: f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK)
            settings = frames[-1][3]
            values = {int.from_bytes(settings[i:i + 2], "big"):
                      int.from_bytes(settings[i + 2:i + 6], "big") for i in range(0, len(settings), 6)}
            self.assertEqual(values.get(3), 128)  # SETTINGS_MAX_CONCURRENT_STREAMS
            for i in range(129):
                c.headers(2 * i + 1, h2raw.grpc_headers(HEALTH))
            frames = c.frames_until(lambda f: f[0] == h2raw.RST_STREAM)
            rst = [f for f in frames if f[0] == h2raw.RST_STREAM]
            self.assertEqual([(f[2], h2raw.rst_code(f)) for f in rst],
                             [(2 * 128 + 1, h2raw.REFUSED_STREAM)])
        finally:
            c.close()
        # After it, exceeding the limit is a connection error (nghttp2: GOAWAY PROTOCOL_ERROR).
        c = h2raw.Conn(self.server.port)
        try:
            c.frames_until(lambda f: f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK)
            for i in range(129):
                c.headers(2 * i + 1, h2raw.grpc_headers(HEALTH))
            frames = c.frames_until(lambda f: f[0] in (h2raw.GOAWAY, h2raw.RST_STREAM))
            self.assertTrue(frames and frames[-1][0] in (h2raw.GOAWAY, h2raw.RST_STREAM))
        finally:
            c.close()

    def test_header_list_over_the_limit_is_answered(self):
        # A trailers-only answer (HTTP 431, test_header_list_over_the_limit_is_431_resource_
        # exhausted), not a RST_STREAM with an error: the client learns which limit it hit.
        before = self.server.metric("ringcas_h2_header_overflows_total")
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, h2raw.grpc_headers(HEALTH, extra=[("x-big", "v" * 8000), ("x-big2", "w" * 9000)]))
            frames = c.frames_until(lambda f: f[0] in (h2raw.HEADERS, h2raw.RST_STREAM) and f[2] == 1)
            self.assertEqual(frames[-1][0], h2raw.HEADERS)
            self.assertTrue(frames[-1][1] & h2raw.END_STREAM)
            # The client had not ended its side: the server asks it to stop (RFC 9113 §8.1).
            frames = c.frames_until(lambda f: f[0] == h2raw.RST_STREAM and f[2] == 1)
            self.assertEqual(h2raw.rst_code(frames[-1]), h2raw.NO_ERROR)
            # The connection lives on.
            c.headers(3, h2raw.grpc_headers(HEALTH))
            c.data(3, h2raw.grpc_message(b""), end_stream=True)
            frames = c.frames_until(lambda f: f[0] == h2raw.DATA and f[2] == 3)
            self.assertEqual(frames[-1][3], SERVING)
        finally:
            c.close()
        self.assertEqual(self.server.metric("ringcas_h2_header_overflows_total") - before, 1)

    def test_trailers_have_a_header_list_limit_of_their_own(self):
        # SETTINGS_MAX_HEADER_LIST_SIZE bounds each field section (RFC 9113 §6.5.2): 10 KiB of
        # request headers and 10 KiB of trailers are served; trailers over 16 KiB alone are not.
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, h2raw.grpc_headers(HEALTH, extra=[("x-pad", "a" * 10000)]))
            c.data(1, h2raw.grpc_message(b""))
            c.headers(1, [("x-trailer", "b" * 10000)], end_stream=True)
            frames = c.frames_until(lambda f: f[2] == 1 and (f[1] & h2raw.END_STREAM or
                                                             f[0] == h2raw.RST_STREAM))
            self.assertEqual([f[0] for f in frames if f[0] == h2raw.RST_STREAM], [])
            self.assertEqual([f[3] for f in frames if f[0] == h2raw.DATA], [SERVING])
            c.headers(3, h2raw.grpc_headers(HEALTH))
            c.data(3, h2raw.grpc_message(b""))
            c.headers(3, [("x-trailer", "b" * 17000)], end_stream=True)
            self.assertEqual(c.first_error()[:2], (h2raw.RST_STREAM, 3))
        finally:
            c.close()

    def test_rapid_reset_gets_goaway(self):
        c = h2raw.Conn(self.server.port)
        try:
            batch = b""
            for i in range(3000):
                s = 2 * i + 1
                batch += c.frame(h2raw.HEADERS, h2raw.END_HEADERS, s,
                                 h2raw.hpack(h2raw.grpc_headers(HEALTH)))
                batch += c.frame(h2raw.RST_STREAM, 0, s, struct.pack(">I", h2raw.CANCEL))
            try:
                c.send_raw(batch)
            except OSError:
                pass
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=20)
            goaway = [f for f in frames if f[0] == h2raw.GOAWAY]
            self.assertTrue(goaway, "no GOAWAY after 3000 rapid resets")
            # The code that says "abusive", as for the other floods (nghttp2's own limiter
            # says INTERNAL_ERROR).
            self.assertEqual(h2raw.goaway_code(goaway[0]), h2raw.ENHANCE_YOUR_CALM)
        finally:
            c.close()

    def test_continuation_flood_gets_goaway(self):
        c = h2raw.Conn(self.server.port)
        try:
            # A header block dribbled out one byte per CONTINUATION frame: nghttp2 allows 8.
            block = h2raw.hpack(h2raw.grpc_headers(HEALTH))
            flood = c.frame(h2raw.HEADERS, 0, 1, block[:4])
            for i in range(4, len(block)):
                flood += c.frame(h2raw.CONTINUATION, 0, 1, block[i:i + 1])
            try:
                c.send_raw(flood)
            except OSError:
                pass
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=20)
            goaway = [f for f in frames if f[0] == h2raw.GOAWAY]
            # RFC 9113 §5.4.1: a GOAWAY before the close (nghttp2 alone just closes).
            self.assertTrue(goaway, "closed without a GOAWAY")
            self.assertEqual(h2raw.goaway_code(goaway[0]), h2raw.ENHANCE_YOUR_CALM)
        finally:
            c.close()

    def continuation_block(self, c, sid, count, end_headers):
        """A request's header block in a HEADERS frame and <count> CONTINUATION frames."""
        block = h2raw.hpack(h2raw.grpc_headers(HEALTH))
        out = c.frame(h2raw.HEADERS, 0, sid, block[:len(block) - count])
        for i in range(count):
            last = i == count - 1
            out += c.frame(h2raw.CONTINUATION, h2raw.END_HEADERS if last and end_headers else 0,
                           sid, block[len(block) - count + i:len(block) - count + i + 1])
        return out

    def test_continuations_up_to_the_limit_are_served(self):
        c = h2raw.Conn(self.server.port)
        try:
            c.send_raw(self.continuation_block(c, 1, 8, True))
            c.data(1, h2raw.grpc_message(b""), end_stream=True)
            frames = c.frames_until(lambda f: f[0] in (h2raw.DATA, h2raw.GOAWAY))
            self.assertEqual(frames[-1][0], h2raw.DATA)
            self.assertEqual(frames[-1][3], SERVING)
        finally:
            c.close()

    def test_continuation_past_the_limit_gets_goaway_in_an_ignored_block(self):
        # A header block nghttp2 ignores is counted too: here a stream refused because it is
        # past the stream limit before the client acknowledged the settings.
        c = h2raw.Conn(self.server.port, ack=False)
        try:
            c.frames_until(lambda f: f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK)
            for i in range(128):
                c.headers(2 * i + 1, h2raw.grpc_headers(HEALTH))
            c.send_raw(self.continuation_block(c, 257, 9, True))
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=20)
            goaway = [f for f in frames if f[0] == h2raw.GOAWAY]
            self.assertTrue(goaway, "closed without a GOAWAY")
            self.assertEqual(h2raw.goaway_code(goaway[0]), h2raw.ENHANCE_YOUR_CALM)
        finally:
            c.close()

    def test_invalid_frames_past_the_budget_get_goaway(self):
        c = h2raw.Conn(self.server.port)
        try:
            # WINDOW_UPDATE with a zero increment on an idle... stream is a PROTOCOL_ERROR
            # stream error; each one is an invalid frame ("glitch").
            batch = b""
            for i in range(1500):
                s = 2 * i + 1
                batch += c.frame(h2raw.HEADERS, h2raw.END_HEADERS, s,
                                 h2raw.hpack(h2raw.grpc_headers(HEALTH)))
                batch += c.frame(h2raw.WINDOW_UPDATE, 0, s, struct.pack(">I", 0))
            try:
                c.send_raw(batch)
            except OSError:
                pass
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=20)
            self.assertTrue(any(f[0] == h2raw.GOAWAY for f in frames) or c.closed)
        finally:
            c.close()
        self.assertGreater(self.server.metric("ringcas_h2_glitches_total"), 0)


class StreamRules(H2Case):
    """RFC 9113 rules nghttp2 does not check with RFC 7540 priorities off and no closed
    streams kept: PRIORITY frames (§5.3.1, §6.3) and increasing stream ids (§5.1.1)."""

    def serve(self, c, sid):
        c.headers(sid, h2raw.grpc_headers(HEALTH))
        c.data(sid, h2raw.grpc_message(b""), end_stream=True)
        frames = c.frames_until(lambda f: f[0] in (h2raw.GOAWAY, h2raw.RST_STREAM) or
                                (f[0] == h2raw.HEADERS and f[1] & h2raw.END_STREAM and f[2] == sid))
        self.assertEqual(frames[-1][:3], (h2raw.HEADERS, h2raw.END_HEADERS | h2raw.END_STREAM, sid))
        self.assertIn((h2raw.DATA, 0, sid, SERVING), frames)

    def goaway_code(self, c):
        frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY)
        goaway = [f for f in frames if f[0] == h2raw.GOAWAY]
        self.assertTrue(goaway, "closed without a GOAWAY")
        # Then the server closes.
        self.assertEqual(c.frames_until(lambda f: False), [])
        return h2raw.goaway_code(goaway[0])

    def test_priority_on_stream_0_is_a_connection_error(self):
        c = h2raw.Conn(self.server.port)
        try:
            self.serve(c, 1)
            c.send_frame(h2raw.PRIORITY, 0, 0, struct.pack(">IB", 1, 16))
            self.assertEqual(self.goaway_code(c), h2raw.PROTOCOL_ERROR)
        finally:
            c.close()

    def test_stream_depending_on_itself_is_a_stream_error(self):
        c = h2raw.Conn(self.server.port)
        try:
            # An open stream, then a finished one: each reset PROTOCOL_ERROR, the connection
            # lives.
            c.headers(1, h2raw.grpc_headers(HEALTH))
            c.send_frame(h2raw.PRIORITY, 0, 1, struct.pack(">IB", 1, 16))
            self.assertEqual(c.first_error(), (h2raw.RST_STREAM, 1, h2raw.PROTOCOL_ERROR))
            self.serve(c, 3)
            c.send_frame(h2raw.PRIORITY, 0, 3, struct.pack(">IB", 3 | 1 << 31, 16))
            self.assertEqual(c.first_error(), (h2raw.RST_STREAM, 3, h2raw.PROTOCOL_ERROR))
            # Valid ones, split across sends byte by byte, change nothing.
            for b in c.frame(h2raw.PRIORITY, 0, 9, struct.pack(">IB", 1, 200)):
                c.send_raw(bytes([b]))
            self.serve(c, 11)
        finally:
            c.close()
        self.assertGreaterEqual(self.server.metric("ringcas_h2_glitches_total"), 2)

    def test_idle_stream_depending_on_itself_is_a_connection_error(self):
        # RST_STREAM must not name an idle stream (RFC 9113 §5.1): the connection ends.
        c = h2raw.Conn(self.server.port)
        try:
            self.serve(c, 1)
            c.send_frame(h2raw.PRIORITY, 0, 5, struct.pack(">IB", 5, 16))
            self.assertEqual(self.goaway_code(c), h2raw.PROTOCOL_ERROR)
        finally:
            c.close()

    def test_reused_stream_id_is_a_connection_error(self):
        c = h2raw.Conn(self.server.port)
        try:
            self.serve(c, 1)
            self.serve(c, 3)
            c.headers(1, h2raw.grpc_headers(HEALTH))
            self.assertEqual(self.goaway_code(c), h2raw.PROTOCOL_ERROR)
        finally:
            c.close()

    def test_lower_unused_stream_id_is_a_connection_error(self):
        c = h2raw.Conn(self.server.port)
        try:
            self.serve(c, 7)
            c.headers(5, h2raw.grpc_headers(HEALTH), end_stream=True)
            self.assertEqual(self.goaway_code(c), h2raw.PROTOCOL_ERROR)
        finally:
            c.close()

    def test_trailers_that_cross_our_reset_are_ignored(self):
        # RFC 9113 §5.1: after sending RST_STREAM, frames the client sent before it read it
        # are ignored. The trailers of a request answered early (its RST NO_ERROR) and of a
        # malformed one (RST PROTOCOL_ERROR) leave the connection and its calls alone; a second
        # HEADERS on such a stream did not cross anything and ends the connection.
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, h2raw.grpc_headers("/no.such.Service/Method"))
            self.assertEqual(c.first_error(), (h2raw.RST_STREAM, 1, h2raw.NO_ERROR))
            c.headers(3, h2raw.grpc_headers(HEALTH, extra=[("X-Upper", "1")]))
            self.assertEqual(c.first_error(), (h2raw.RST_STREAM, 3, h2raw.PROTOCOL_ERROR))
            c.data(1, h2raw.grpc_message(b""))
            c.headers(1, [("x-trailer", "1")], end_stream=True)
            c.headers(3, [("x-trailer", "1")], end_stream=True)
            self.serve(c, 5)
            c.headers(1, [("x-trailer", "1")], end_stream=True)
            self.assertEqual(self.goaway_code(c), h2raw.PROTOCOL_ERROR)
        finally:
            c.close()

    def test_trailers_on_an_open_stream_are_no_reuse(self):
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, h2raw.grpc_headers(HEALTH))
            c.headers(3, h2raw.grpc_headers(HEALTH))
            c.data(1, h2raw.grpc_message(b""))
            c.headers(1, [("x-trailer", "1")], end_stream=True)
            frames = c.frames_until(lambda f: f[0] in (h2raw.GOAWAY, h2raw.RST_STREAM) or
                                    (f[0] == h2raw.HEADERS and f[1] & h2raw.END_STREAM))
            self.assertEqual(frames[-1][:3], (h2raw.HEADERS, h2raw.END_HEADERS | h2raw.END_STREAM, 1))
            c.data(3, h2raw.grpc_message(b""), end_stream=True)
            frames = c.frames_until(lambda f: f[0] in (h2raw.GOAWAY, h2raw.RST_STREAM) or
                                    (f[0] == h2raw.HEADERS and f[1] & h2raw.END_STREAM))
            self.assertEqual(frames[-1][:3], (h2raw.HEADERS, h2raw.END_HEADERS | h2raw.END_STREAM, 3))
        finally:
            c.close()


class Idle(harness.ServerTestCase):
    server_args = ("--read-timeout", "1s")

    def tearDown(self):
        self.server.wait_quiet(extra=GAUGES + ("h2_conns",))

    def test_idle_connection_is_closed(self):
        c = h2raw.Conn(self.server.port)
        try:
            start = time.monotonic()
            c.frames_until(lambda f: False, timeout=10)
            self.assertTrue(c.closed)
            self.assertLess(time.monotonic() - start, 5)
        finally:
            c.close()

    def test_an_idle_connection_gets_goaway_and_a_request_crossing_it_is_served(self):
        """RFC 9113 §6.8: a GOAWAY before the close. The idle connection was closed without
        one, so a request sent just as it closed was reset with it (grpcio: UNAVAILABLE
        "Socket closed"), served or not for all its client could tell."""
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, h2raw.grpc_headers(HEALTH))
            c.data(1, h2raw.grpc_message(b""), end_stream=True)
            c.frames_until(lambda f: f[2] == 1 and f[1] & h2raw.END_STREAM)
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=10)
            self.assertTrue(frames and frames[-1][0] == h2raw.GOAWAY, frames)
            self.assertEqual(h2raw.goaway_code(frames[-1]), h2raw.NO_ERROR)
            self.assertEqual(goaway_last(frames[-1]), 2**31 - 1)
            # Sent before the client read the GOAWAY (and the PING behind it).
            c.headers(3, h2raw.grpc_headers(HEALTH))
            c.data(3, h2raw.grpc_message(b""), end_stream=True)
            # Until the close: the answer and the final GOAWAY come in either order.
            frames = c.frames_until(lambda f: False, timeout=10)
            self.assertTrue(c.closed)
            self.assertEqual([goaway_last(f) for f in frames if f[0] == h2raw.GOAWAY], [3])
            self.assertEqual([f[3] for f in frames if f[0] == h2raw.DATA and f[2] == 3],
                             [SERVING])
        finally:
            c.close()

    def test_an_idle_client_that_answers_nothing_is_closed_at_the_next_timeout(self):
        c = h2raw.Conn(self.server.port)
        try:
            self.assertEqual(goaways_unanswered(c, 2, timeout=10), [2**31 - 1, 0])
            c.sock.settimeout(10)
            while c.sock.recv(1 << 16):
                pass
        finally:
            c.close()

    def test_open_stream_waiting_for_the_client_does_not_keep_it_open(self):
        c = h2raw.Conn(self.server.port)
        try:
            c.headers(1, h2raw.grpc_headers(HEALTH))  # the request never ends
            c.frames_until(lambda f: False, timeout=10)
            self.assertTrue(c.closed)
        finally:
            c.close()

    def test_active_connection_is_not_closed(self):
        client = reapi.Client(self.server.address)
        try:
            for _ in range(8):
                client.Check(reapi.msg("grpc.health.v1.HealthCheckRequest"), timeout=5)
                time.sleep(0.3)
        finally:
            client.close()

    def write_message(self, name, offset, data, finish=False):
        r = reapi.msg("google.bytestream.WriteRequest", write_offset=offset, data=data,
                      finish_write=finish)
        if offset == 0:
            r.resource_name = name
        return h2raw.grpc_message(r.SerializeToString())

    def upload_name(self, data):
        return "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), hashlib.sha256(data).hexdigest(),
                                           len(data))

    def stream_end(self, c, timeout):
        """Reads frames for <timeout> s: True once stream 1 ended."""
        try:
            frames = c.frames_until(lambda f: f[2] == 1 and f[1] & h2raw.END_STREAM,
                                    timeout=timeout)
        except TimeoutError:
            return False
        return any(f[2] == 1 and f[1] & h2raw.END_STREAM for f in frames)

    def stall_counts(self, route):
        """The stalled-request counter and <route>'s DEADLINE_EXCEEDED answers now."""
        return (self.server.metric("ringcas_grpc_stalls_total"),
                self.server.metric("ringcas_requests_total", route=route, status="4"))

    def assert_stalls(self, route, before, n):
        """<n> more of each since stall_counts gave <before>: every stall ended its call."""
        now = self.stall_counts(route)
        self.assertEqual((now[0] - before[0], now[1] - before[1]), (n, n))

    def test_pings_keep_the_connection_but_not_a_stalled_upload(self):
        data = os.urandom(1000)
        route = "google.bytestream.ByteStream/Write"
        before = self.stall_counts(route)
        c = h2raw.Conn(self.server.port, window=1 << 20)
        try:
            c.headers(1, h2raw.grpc_headers("/google.bytestream.ByteStream/Write"))
            c.data(1, self.write_message(self.upload_name(data), 0, data[:500]))
            start = time.monotonic()
            ended = None
            # Keepalive PINGs every 0.3 s (a gRPC client's keepalive does the same).
            while ended is None and time.monotonic() - start < 8:
                c.send_frame(h2raw.PING, 0, 0, b"keepaliv")
                if self.stream_end(c, 0.3):
                    ended = time.monotonic() - start
            self.assertIsNotNone(ended, "the stalled upload was kept")
            self.assertGreaterEqual(ended, 0.9)
            self.assertFalse(c.closed)  # the connection itself is alive
        finally:
            c.close()
        self.assert_stalls(route, before, 1)

    def test_pings_keep_the_connection_but_not_a_stalled_unary_request(self):
        """A unary request the client stops sending holds a stream and, halfway through its
        message, that message's memory: it ends like a stalled upload."""
        route = BATCH_UPDATE[1:]
        before = self.stall_counts(route)
        c = h2raw.Conn(self.server.port, window=1 << 20)
        try:
            # Stream 1: 5000 bytes of a 100000-byte message. Stream 3: a whole message, but
            # the request never ends (no END_STREAM).
            c.headers(1, h2raw.grpc_headers(BATCH_UPDATE))
            c.data(1, b"\x00" + struct.pack(">I", 100000) + b"\x0a" * 5000)
            c.headers(3, h2raw.grpc_headers(BATCH_UPDATE))
            c.data(3, h2raw.grpc_message(b""))
            harness.wait_for(lambda: self.server.metric("ringcas_pb_mem_bytes") >= 5000,
                             timeout=10, what="the partial message to be held")
            start = time.monotonic()
            ended = set()
            for f in c.keepalive_frames(8, done=lambda: len(ended) == 2):
                if f[2] in (1, 3) and f[1] & h2raw.END_STREAM:
                    ended.add(f[2])
            self.assertEqual(ended, {1, 3})
            self.assertFalse(c.closed)  # the connection itself is alive
        finally:
            c.close()
        self.assert_stalls(route, before, 2)
        self.assertGreaterEqual(time.monotonic() - start, 0.9)

    def test_a_slow_upload_that_keeps_sending_completes(self):
        """About 3 KiB/s: slow, but above the 1 KiB/s a request must bring."""
        data = os.urandom(8000)
        name = self.upload_name(data)
        c = h2raw.Conn(self.server.port, window=1 << 20)
        try:
            c.headers(1, h2raw.grpc_headers("/google.bytestream.ByteStream/Write"))
            for i in range(8):  # 2.4 s in all, longer than --read-timeout, 0.3 s per piece
                piece = data[i * 1000:(i + 1) * 1000]
                c.data(1, self.write_message(name, i * 1000, piece, finish=i == 7),
                       end_stream=i == 7)
                if i < 7:
                    self.assertFalse(self.stream_end(c, 0.3), "ended after %d pieces" % (i + 1))
            self.assertTrue(self.stream_end(c, 10))
        finally:
            c.close()
        client = reapi.Client(self.server.address)
        try:
            req = reapi.msg("FindMissingBlobsRequest")
            req.blob_digests.add(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
            self.assertEqual(len(client.FindMissingBlobs(req, timeout=10).missing_blob_digests), 0)
        finally:
            client.close()

    def test_an_upload_trickled_a_byte_at_a_time_ends(self):
        """A Write whose client sends a byte every 0.2 s: each byte comes well within
        --read-timeout (1 s), so neither the connection nor the call is ever silent that long,
        yet 5 bytes a second is no upload. Below 1 KiB/s over a read timeout it ends as a
        stalled request (DEADLINE_EXCEEDED) and its upload is released. Before, it held the
        upload (a slot of --max-uploads, its buffers) for as long as the client trickled, as
        HTTP/1.1 bodies did before their own floor: the chaos proxy's trickling connections
        kept ByteStream uploads open until the client's deadline."""
        data = os.urandom(4000)
        route = "google.bytestream.ByteStream/Write"
        before = self.stall_counts(route)
        msg = self.write_message(self.upload_name(data), 0, data, finish=True)
        c = h2raw.Conn(self.server.port, window=1 << 20)
        try:
            c.headers(1, h2raw.grpc_headers("/" + route))
            c.data(1, msg[:1000])  # the upload begins
            harness.wait_for(lambda: self.server.metric("ringcas_bs_uploads") >= 1,
                             timeout=10, what="the upload under way")
            start = time.monotonic()
            ended = None
            for i in range(1000, len(msg)):
                if time.monotonic() - start > 8:
                    break
                c.data(1, msg[i:i + 1])
                if self.stream_end(c, 0.2):
                    ended = time.monotonic() - start
                    break
            self.assertIsNotNone(ended, "the trickled upload was kept")
            self.assertGreaterEqual(ended, 0.9)
            self.assertFalse(c.closed)  # the connection itself is alive
        finally:
            c.close()
        self.assert_stalls(route, before, 1)
        harness.wait_for(lambda: self.server.metric("ringcas_bs_uploads") == 0, timeout=10,
                         what="the upload released")


class MessageMemory(harness.ServerTestCase):
    """--message-memory bounds what gRPC messages hold on a core, requests being received and
    answers waiting to be sent: a client that opens many streams and sends most of a large
    message on each, or asks for large answers it does not read, cannot take the server's
    memory; past the bound calls are RESOURCE_EXHAUSTED (clients retry them)."""
    server_args = ("--message-memory", "16MiB")
    server_cores = 1  # the attacker's and the real client's connections share the core

    def tearDown(self):
        self.server.wait_quiet(extra=GAUGES)

    def batch(self, data):
        req = reapi.msg("BatchUpdateBlobsRequest")
        r = req.requests.add()
        r.digest.hash = hashlib.sha256(data).hexdigest()
        r.digest.size_bytes = len(data)
        r.data = data
        return req

    def test_partial_requests_are_bounded_and_released(self):
        refused = self.server.metric("ringcas_pb_mem_refused_total")
        c = h2raw.Conn(self.server.port, window=1 << 20)
        client = reapi.Client(self.server.address)
        try:
            # Three streams, each 3.5 MiB into a 4 MiB message: 12 of the 16 MiB.
            for sid in (1, 3, 5):
                c.headers(sid, h2raw.grpc_headers(BATCH_UPDATE))
                c.data_flow(sid, b"\x00" + struct.pack(">I", 4 << 20) + b"\x0a" * (7 << 19))
            harness.wait_for(lambda: self.server.metric("ringcas_pb_mem_bytes") >= 12 << 20,
                             timeout=20, what="the partial messages to be held")
            # A real client's 3 MiB batch (and its decoded copy) would pass the bound.
            data = os.urandom(3 << 20)
            with self.assertRaises(grpc.RpcError) as cm:
                client.BatchUpdateBlobs(self.batch(data), timeout=20)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("message memory (--message-memory) is taken", cm.exception.details())
            self.assertGreaterEqual(self.server.metric("ringcas_pb_mem_refused_total") - refused, 1)
            # Small requests still pass, and a reset stream gives its memory back.
            resp = client.BatchUpdateBlobs(self.batch(os.urandom(1000)), timeout=20)
            self.assertEqual(resp.responses[0].status.code, 0)
            c.rst(1)
            harness.wait_for(lambda: self.server.metric("ringcas_pb_mem_bytes") < 9 << 20,
                             timeout=10, what="the reset stream's memory to come back")
            resp = client.BatchUpdateBlobs(self.batch(data), timeout=20)
            self.assertEqual(resp.responses[0].status.code, 0)
        finally:
            client.close()
            c.close()

    def test_unread_answers_are_bounded(self):
        data = os.urandom(3 << 20)
        client = reapi.Client(self.server.address)
        try:
            self.assertEqual(
                client.BatchUpdateBlobs(self.batch(data), timeout=20).responses[0].status.code, 0)
            d = reapi.msg("Digest", hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
            refused = self.server.metric("ringcas_pb_mem_refused_total")
            # A client that asks for 3 MiB answers on 16 streams and reads none of them.
            c = h2raw.Conn(self.server.port, settings=((4, 0),))
            try:
                req = reapi.msg("BatchReadBlobsRequest")
                req.digests.add().CopyFrom(d)
                for sid in range(1, 33, 2):
                    c.headers(sid, h2raw.grpc_headers(
                        "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
                        "BatchReadBlobs"))
                    c.data(sid, h2raw.grpc_message(req.SerializeToString()), end_stream=True)
                harness.wait_for(
                    lambda: self.server.metric("ringcas_pb_mem_refused_total") > refused,
                    timeout=20, what="answers to be refused over the bound")
                self.assertLessEqual(self.server.metric("ringcas_pb_mem_bytes"), 16 << 20)
                # A real client's read meanwhile is served whole, or refused retryably (the
                # whole call or the blob): whether its 6 MiB fit depends on what the other
                # answers hold at that moment.
                try:
                    rs = client.BatchReadBlobs(reapi.msg("BatchReadBlobsRequest", digests=[d]),
                                               timeout=20).responses
                    self.assertIn(rs[0].status.code,
                                  (0, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]))
                    if rs[0].status.code == 0:
                        self.assertEqual(rs[0].data, data)
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            finally:
                c.close()
            # Once that client is gone, the answer goes out whole.
            harness.wait_for(lambda: self.server.metric("ringcas_pb_mem_bytes") < 1 << 20,
                             timeout=10, what="the unread answers' memory to come back")
            rs = client.BatchReadBlobs(reapi.msg("BatchReadBlobsRequest", digests=[d]),
                                       timeout=20).responses
            self.assertEqual(rs[0].status.code, 0)
            self.assertEqual(rs[0].data, data)
        finally:
            client.close()

    def test_the_bound_is_checked_at_startup(self):
        proc = harness.run_serve("--message-memory", "8MiB")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("--message-memory: at least 16MiB", proc.stderr)


class SlowReaderCase(harness.ServerTestCase):
    """What the slow-reader tests share (no tests of its own)."""

    def tearDown(self):
        self.server.wait_quiet(extra=GAUGES + ("h2_conns",))

    def put(self, data):
        return reapi.put_blob(self.server.address, data)


class SlowReader(SlowReaderCase):
    """A client that stops reading keeps its connection alive with PINGs and its responses
    queued behind a closed flow-control window: each such stream is reset after
    --write-timeout, which frees what its response held."""
    server_args = ("--write-timeout", "1s")

    def pinged_frames(self, c, streams, seconds):
        """PINGs every 0.3 s for up to <seconds>; returns {stream: RST_STREAM code}."""
        resets = {}
        for f in c.keepalive_frames(seconds, done=lambda: len(resets) == len(streams)):
            if f[0] == h2raw.RST_STREAM and f[2] in streams:
                resets[f[2]] = h2raw.rst_code(f)
        return resets

    def test_responses_behind_a_closed_window_are_dropped(self):
        small = self.put(os.urandom(300000))
        large = self.put(os.urandom(3 << 20))
        stalls = self.server.metric("ringcas_grpc_send_stalls_total")
        cancels = self.server.metric("ringcas_grpc_cancels_total")
        read_cancelled = self.server.metric("ringcas_requests_total", status="1",
                                            route="google.bytestream.ByteStream/Read")
        c = h2raw.Conn(self.server.port, settings=((4, 0),))  # our stream windows: 0 bytes
        try:
            for sid, d in ((1, small), (3, large)):
                req = reapi.msg("BatchReadBlobsRequest")
                req.digests.add().CopyFrom(d)
                c.headers(sid, h2raw.grpc_headers(
                    "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs"))
                c.data(sid, h2raw.grpc_message(req.SerializeToString()), end_stream=True)
            read = reapi.msg("google.bytestream.ReadRequest",
                             resource_name="blobs/%s/%d" % (large.hash, large.size_bytes))
            c.headers(5, h2raw.grpc_headers("/google.bytestream.ByteStream/Read"))
            c.data(5, h2raw.grpc_message(read.SerializeToString()), end_stream=True)
            harness.wait_for(lambda: self.server.metric("ringcas_pb_mem_bytes") > 3 << 20,
                             timeout=10, what="the batch answers to be queued")
            start = time.monotonic()
            resets = self.pinged_frames(c, (1, 3, 5), 10)
            self.assertEqual(resets, {1: h2raw.CANCEL, 3: h2raw.CANCEL, 5: h2raw.CANCEL})
            self.assertGreaterEqual(time.monotonic() - start, 0.5)
            self.assertFalse(c.closed)  # the connection itself stays
            harness.wait_for(lambda: self.server.metric("ringcas_pb_mem_bytes") < 1 << 20,
                             timeout=10, what="the answers' memory to come back")
        finally:
            c.close()
        self.assertEqual(self.server.metric("ringcas_grpc_send_stalls_total") - stalls, 3)
        # Ended by the server, not counted as client resets: the Read, still sending, as
        # CANCELLED; the batch answers had their status (OK) when they were queued.
        self.assertEqual(self.server.metric("ringcas_grpc_cancels_total"), cancels)
        self.assertEqual(self.server.metric("ringcas_requests_total", status="1",
                                            route="google.bytestream.ByteStream/Read") -
                         read_cancelled, 1)

    def test_a_window_opened_a_trickle_at_a_time_is_a_stalled_reader(self):
        # 100 bytes of window every 0.3 s, PINGs between: the response moves, but below
        # 1 KiB/s over --write-timeout, and holds its queued answer meanwhile.
        d = self.put(os.urandom(1 << 20))
        stalls = self.server.metric("ringcas_grpc_send_stalls_total")
        c = h2raw.Conn(self.server.port, settings=((4, 0),))
        try:
            read = reapi.msg("google.bytestream.ReadRequest",
                             resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))
            c.headers(1, h2raw.grpc_headers("/google.bytestream.ByteStream/Read"))
            c.data(1, h2raw.grpc_message(read.SerializeToString()), end_stream=True)
            got, reset = 0, None
            start = time.monotonic()
            while reset is None and time.monotonic() - start < 10:
                c.send_frame(h2raw.WINDOW_UPDATE, 0, 1, struct.pack(">I", 100))
                for f in c.keepalive_frames(0.3):
                    if f[0] == h2raw.DATA and f[2] == 1:
                        got += len(f[3])
                    if f[0] == h2raw.RST_STREAM and f[2] == 1:
                        reset = h2raw.rst_code(f)
            self.assertEqual(reset, h2raw.CANCEL)
            self.assertGreater(got, 0)  # it was moving
            self.assertFalse(c.closed)
        finally:
            c.close()
        self.assertEqual(self.server.metric("ringcas_grpc_send_stalls_total") - stalls, 1)

class SlowMovingReader(SlowReaderCase):
    """A reader slow enough that its answer takes longer than --write-timeout, but whose
    window moves well above the 1 KiB/s floor all along, is served to the end. Its own
    server, with a --write-timeout of 2 s against the 0.6 s the client waits between
    windows: with SlowReader's 1 s, a client paused 0.4 s more by a loaded machine (a
    clean-clone `make test` beside two other builds, load 9) was reset."""
    server_args = ("--write-timeout", "2s")

    def test_a_slow_reader_whose_window_moves_is_served(self):
        data = os.urandom(200000)
        d = self.put(data)
        stalls = self.server.metric("ringcas_grpc_send_stalls_total")
        c = h2raw.Conn(self.server.port, settings=((4, 40000),))
        try:
            read = reapi.msg("google.bytestream.ReadRequest",
                             resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))
            c.headers(1, h2raw.grpc_headers("/google.bytestream.ByteStream/Read"))
            c.data(1, h2raw.grpc_message(read.SerializeToString()), end_stream=True)
            got = 0
            start = time.monotonic()
            # A DATA frame of at most 16 KiB every 0.6 s: about 7 s in all, longer than
            # --write-timeout.
            while time.monotonic() - start < 20:
                f = c.read_frame(10)
                self.assertIsNotNone(f)
                self.assertNotEqual(f[0], h2raw.RST_STREAM)
                if f[0] == h2raw.DATA and f[2] == 1:
                    got += len(f[3])
                    time.sleep(0.6)
                    c.send_frame(h2raw.WINDOW_UPDATE, 0, 1, struct.pack(">I", len(f[3])))
                    c.send_frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", len(f[3])))
                if f[0] == h2raw.HEADERS and f[2] == 1 and f[1] & h2raw.END_STREAM:
                    break
            self.assertGreater(got, len(data))  # the blob and its message framing
            self.assertGreater(time.monotonic() - start, 2.5)
        finally:
            c.close()
        self.assertEqual(self.server.metric("ringcas_grpc_send_stalls_total") - stalls, 0)


class Drain(unittest.TestCase):
    def test_sigterm_sends_goaway_and_finishes_calls(self):
        srv = harness.Server(cores=1)
        srv.start()
        try:
            c = h2raw.Conn(srv.port)
            c.headers(1, h2raw.grpc_headers(HEALTH))
            c.frames_until(lambda f: f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK)
            srv.proc.send_signal(signal.SIGTERM)
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=20)
            goaway = [f for f in frames if f[0] == h2raw.GOAWAY]
            self.assertTrue(goaway)
            self.assertEqual(h2raw.goaway_code(goaway[0]), h2raw.NO_ERROR)
            self.assertEqual(goaway_last(goaway[0]), 2**31 - 1)  # the notice, then ...
            # ... once the PING it came with is acknowledged (read_frame does), the final one.
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=20)
            self.assertEqual(frames[-1][0], h2raw.GOAWAY)
            self.assertEqual(h2raw.goaway_code(frames[-1]), h2raw.NO_ERROR)
            self.assertEqual(goaway_last(frames[-1]), 1)
            # The call started before the GOAWAY still completes (and says the server is
            # draining: NOT_SERVING).
            c.data(1, h2raw.grpc_message(b""), end_stream=True)
            frames = c.frames_until(lambda f: f[0] == h2raw.DATA and f[2] == 1)
            self.assertEqual(frames[-1][3], h2raw.grpc_message(b"\x08\x02"))
            c.frames_until(lambda f: False, timeout=20)
            self.assertTrue(c.closed)
            srv.wait_exit(30)
        finally:
            srv.cleanup()

    def test_a_request_that_crossed_the_goaway_is_served(self):
        """A client's request and the server's GOAWAY cross on the wire: the request was sent
        before the client read the GOAWAY. gRPC's graceful GOAWAY (a first one naming stream
        2^31-1, with a PING; the final one after its ACK) serves it. Before, the only GOAWAY
        named the last stream already begun: this one was dropped unanswered (grpcio:
        UNAVAILABLE "GOAWAY received"), or the connection closed with its bytes unread and
        reset ("Socket closed"), which a client cannot tell from a call that was served."""
        srv = harness.Server(cores=1)
        srv.start()
        try:
            c = h2raw.Conn(srv.port)
            c.frames_until(lambda f: f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK)
            srv.proc.send_signal(signal.SIGTERM)
            frames = c.frames_until(lambda f: f[0] == h2raw.GOAWAY, timeout=20)
            self.assertEqual(frames[-1][0], h2raw.GOAWAY)
            # Sent as if before the GOAWAY arrived; the PING behind the GOAWAY is not read (nor
            # acknowledged) yet, as a client that had not read the GOAWAY has not read it.
            c.headers(1, h2raw.grpc_headers(HEALTH))
            c.data(1, h2raw.grpc_message(b""), end_stream=True)
            # Until the close: the answer and the final GOAWAY come in either order.
            frames = c.frames_until(lambda f: False, timeout=20)
            self.assertTrue(c.closed)
            goaways = [goaway_last(f) for f in frames if f[0] == h2raw.GOAWAY]
            self.assertEqual(goaways, [1])  # the final GOAWAY names it: it was served
            data = [f[3] for f in frames if f[0] == h2raw.DATA and f[2] == 1]
            self.assertEqual(data, [h2raw.grpc_message(b"\x08\x02")])  # NOT_SERVING: draining
            c.close()
            srv.wait_exit(30)
        finally:
            srv.cleanup()

    def test_a_client_that_does_not_answer_the_ping_still_gets_the_final_goaway(self):
        srv = harness.Server(cores=1)
        srv.start()
        try:
            c = h2raw.Conn(srv.port)
            c.headers(1, h2raw.grpc_headers(HEALTH))
            c.frames_until(lambda f: f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK)
            srv.proc.send_signal(signal.SIGTERM)
            self.assertEqual(goaways_unanswered(c, 2, timeout=20), [2**31 - 1, 1])
            c.data(1, h2raw.grpc_message(b""), end_stream=True)
            frames = c.frames_until(lambda f: f[2] == 1 and f[1] & h2raw.END_STREAM, timeout=20)
            self.assertEqual([f[3] for f in frames if f[0] == h2raw.DATA and f[2] == 1],
                             [h2raw.grpc_message(b"\x08\x02")])
            c.frames_until(lambda f: False, timeout=20)
            self.assertTrue(c.closed)
            c.close()
            srv.wait_exit(30)
        finally:
            srv.cleanup()

    def test_a_drain_after_an_idle_goaway_sends_the_final_one_without_waiting(self):
        # The idle connection's final GOAWAY waits for the next read timeout (60 s by default);
        # a drain that begins meanwhile waits at most 1 s for the PING's ACK, as for any other.
        srv = harness.Server(args=("--read-timeout", "5s"), cores=1)
        srv.start()
        try:
            c = h2raw.Conn(srv.port)
            self.assertEqual(goaways_unanswered(c, 1, timeout=10), [2**31 - 1])
            srv.proc.send_signal(signal.SIGTERM)
            # The final GOAWAY comes from the drain's 1 s wait, not the next read timeout (5 s).
            self.assertEqual(goaways_unanswered(c, 1, timeout=3.5), [0])
            c.close()
            srv.wait_exit(30)
        finally:
            srv.cleanup()


def goaway_last(frame):
    return int.from_bytes(frame[3][:4], "big") & 0x7fffffff


def goaways_unanswered(c, count, timeout):
    """Reads <c>'s socket as a client that answers nothing (no PING ACK) would, until <count>
    GOAWAY frames came, the peer closed, or <timeout>; returns their last_stream_ids."""
    buf = b""
    deadline = time.monotonic() + timeout
    goaways = []
    while len(goaways) < count and time.monotonic() < deadline:
        c.sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = c.sock.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            if buf[3] == h2raw.GOAWAY:
                goaways.append(int.from_bytes(buf[9:13], "big") & 0x7fffffff)
            buf = buf[9 + n:]
    return goaways


if __name__ == "__main__":
    unittest.main()
