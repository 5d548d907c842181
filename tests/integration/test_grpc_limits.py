#!/usr/bin/env python3
"""The gRPC limits must not blame the client for the server's shortage: a message whose memory
--message-memory refused is RESOURCE_EXHAUSTED (retried), not malformed or missing; a stream
waiting behind others for the connection's window is not a stalled reader."""
import hashlib
import http.client
import os
import socket
import struct
import time
import unittest

import grpc

import h2raw
import harness
import reapi

BATCH_UPDATE = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"
LIMIT = 16 << 20


def big_directory(n):
    d = reapi.msg("Directory")
    for i in range(n):
        f = d.files.add()
        f.name = "file%07d" % i
        f.digest.hash = hashlib.sha256(b"%d" % i).hexdigest()
        f.digest.size_bytes = i + 1
    return d


class MemoryRefusalStatus(harness.ServerTestCase):
    """A stored message that cannot be unpacked because --message-memory is taken must be
    RESOURCE_EXHAUSTED (retryable), not a malformed request or a cache miss."""
    server_args = ("--message-memory", "16MiB")
    server_cores = 1

    def fill(self, c, headroom):
        """Holds partial unary messages until pb_mem is LIMIT - headroom."""
        sid = 1
        while True:
            used = int(self.server.metric("ringcas_pb_mem_bytes"))
            want = int(LIMIT - headroom - used)
            if want < 70000:
                return used
            n = min(want, 4 << 20)
            c.headers(sid, h2raw.grpc_headers(BATCH_UPDATE))
            c.data_flow(sid, b"\x00" + struct.pack(">I", n) + b"\x0a" * (n - 1))
            harness.wait_for(lambda: self.server.metric("ringcas_pb_mem_bytes") >= used + n - 1,
                             timeout=20, what="the partial message to be held")
            sid += 2

    def test_get_tree_root_refused_for_memory(self):
        client = reapi.Client(self.server.address)
        d = big_directory(12000)
        data = d.SerializeToString()
        req = reapi.msg("BatchUpdateBlobsRequest")
        r = req.requests.add()
        r.digest.hash = hashlib.sha256(data).hexdigest()
        r.digest.size_bytes = len(data)
        r.data = data
        self.assertEqual(client.BatchUpdateBlobs(req, timeout=20).responses[0].status.code, 0)
        c = h2raw.Conn(self.server.port, window=1 << 24)
        try:
            self.fill(c, len(data) * 2)
            with self.assertRaises(grpc.RpcError) as cm:
                list(client.GetTree(reapi.msg("GetTreeRequest", root_digest=r.digest),
                                    timeout=20))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        finally:
            c.close()
            client.close()

    def test_get_tree_child_refused_for_memory(self):
        client = reapi.Client(self.server.address)
        child = big_directory(12000).SerializeToString()
        root = reapi.msg("Directory")
        n = root.directories.add()
        n.name = "sub"
        n.digest.hash = hashlib.sha256(child).hexdigest()
        n.digest.size_bytes = len(child)
        rootb = root.SerializeToString()
        req = reapi.msg("BatchUpdateBlobsRequest")
        for data in (child, rootb):
            r = req.requests.add()
            r.digest.hash = hashlib.sha256(data).hexdigest()
            r.digest.size_bytes = len(data)
            r.data = data
        self.assertEqual([x.status.code for x in
                          client.BatchUpdateBlobs(req, timeout=20).responses], [0, 0])
        c = h2raw.Conn(self.server.port, window=1 << 24)
        try:
            self.fill(c, len(child) // 2)
            try:
                pages = list(client.GetTree(reapi.msg("GetTreeRequest", root_digest=r.digest),
                                            timeout=20))
                got = sum(len(p.directories) for p in pages)
                self.fail("GetTree answered OK with %d of 2 directories" % got)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        finally:
            c.close()
            client.close()

    def test_get_action_result_refused_for_memory(self):
        client = reapi.Client(self.server.address)
        ar = reapi.msg("ActionResult")
        for i in range(12000):
            f = ar.output_files.add()
            f.path = "out/file%07d" % i
            f.digest.hash = hashlib.sha256(b"%d" % i).hexdigest()
            f.digest.size_bytes = i + 1
        action = reapi.msg("Digest", hash=hashlib.sha256(b"action").hexdigest(), size_bytes=6)
        client.UpdateActionResult(reapi.msg("UpdateActionResultRequest", action_digest=action,
                                            action_result=ar), timeout=20)
        size = len(ar.SerializeToString())
        c = h2raw.Conn(self.server.port, window=1 << 24)
        try:
            self.fill(c, size * 2)
            with self.assertRaises(grpc.RpcError) as cm:
                client.GetActionResult(reapi.msg("GetActionResultRequest",
                                                 action_digest=action), timeout=20)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        finally:
            c.close()
            client.close()


class SlowLinkReader(harness.ServerTestCase):
    """A client that reads steadily, but whose link (its connection window) is slower than the
    server: every stream of the connection must be served, none reset as a stalled reader."""
    server_args = ("--write-timeout", "1s")
    server_cores = 1

    def put(self, data):
        return reapi.put_blob(self.server.address, data)

    def test_two_reads_on_a_slow_link(self):
        d = self.put(os.urandom(3 << 20))
        stalls = self.server.metric("ringcas_grpc_send_stalls_total")
        # Stream windows large; the connection window (65535) reopens as data is read, at
        # about 1.3 MB/s: a slow link, but a client that reads all the time.
        c = h2raw.Conn(self.server.port, settings=((4, 16 << 20),))
        try:
            read = reapi.msg("google.bytestream.ReadRequest",
                             resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))
            for sid in (1, 3):
                c.headers(sid, h2raw.grpc_headers("/google.bytestream.ByteStream/Read"))
                c.data(sid, h2raw.grpc_message(read.SerializeToString()), end_stream=True)
            got = {1: 0, 3: 0}
            ended = set()
            resets = {}
            pending = 0
            start = time.monotonic()
            while len(ended) + len(resets) < 2 and time.monotonic() - start < 30:
                f = c.read_frame(10)
                self.assertIsNotNone(f)
                if f[0] == h2raw.RST_STREAM:
                    resets[f[2]] = (h2raw.rst_code(f), got[f[2]], time.monotonic() - start)
                if f[0] == h2raw.DATA and f[2] in got:
                    got[f[2]] += len(f[3])
                    pending += len(f[3])
                    if pending >= 32768:
                        time.sleep(0.025)
                        c.send_frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", pending))
                        pending = 0
                if f[0] == h2raw.HEADERS and f[1] & h2raw.END_STREAM:
                    ended.add(f[2])
            self.assertEqual(resets, {})
            self.assertEqual(ended, {1, 3})
        finally:
            c.close()
        self.assertEqual(self.server.metric("ringcas_grpc_send_stalls_total"), stalls)



class UnaryRequestsWaitingForTheirEnd(harness.ServerTestCase):
    """A unary request is handed to its method with the end of the stream. Requests whose
    client sends the message and never ends the stream must cost message memory (bounded by
    --message-memory), not the receive buffers they arrived in: 64 KiB each for a few bytes,
    which 512 such streams took from the core (128 here), and it answered no one."""
    server_args = ("--recv-buffers", "128")
    server_cores = 1

    def test_messages_waiting_for_end_stream_hold_no_receive_buffer(self):
        find = "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"
        req = h2raw.grpc_message(b"\x0a\x08instance")
        conns = [h2raw.Conn(self.server.port) for _ in range(4)]
        try:
            for c in conns:
                for sid in range(1, 257, 2):
                    # Each request in its own segment, read into its own buffer.
                    c.send_raw(c.frame(h2raw.HEADERS, h2raw.END_HEADERS, sid,
                                       h2raw.hpack(h2raw.grpc_headers(find))) +
                               c.frame(h2raw.DATA, 0, sid, req))
                    time.sleep(0.002)
            harness.wait_for(lambda: self.server.metric("ringcas_grpc_calls") == 512,
                             timeout=20, what="512 calls waiting for their end")
            self.assertLessEqual(self.server.metric("ringcas_bufs_out"), 8)
            # Others are served meanwhile.
            client = reapi.Client(self.server.address)
            try:
                resp = client.FindMissingBlobs(reapi.msg("FindMissingBlobsRequest"), timeout=5)
                self.assertEqual(len(resp.missing_blob_digests), 0)
            finally:
                client.close()
            # The requests were kept: ending the streams answers every one.
            c = conns[0]
            for sid in range(1, 257, 2):
                c.send_frame(h2raw.DATA, h2raw.END_STREAM, sid)
            ended, answered = set(), set()
            while len(ended) < 128:
                f = c.read_frame(10)
                self.assertIsNotNone(f)
                if f[0] == h2raw.DATA and f[3]:
                    answered.add(f[2])  # a FindMissingBlobsResponse (trailers follow)
                if f[0] == h2raw.HEADERS and f[1] & h2raw.END_STREAM:
                    ended.add(f[2])
            self.assertEqual(ended, set(range(1, 257, 2)))
            self.assertEqual(answered, ended)
        finally:
            for c in conns:
                c.close()
        self.server.wait_quiet(extra=("grpc_calls",))


class Deadlines(harness.ServerTestCase):
    """grpc-timeout deadlines share one timer per core: calls waiting with a deadline (Bazel
    sends one with every call) take no op of the core's table, which 128 streams on each of
    128 connections would otherwise fill."""
    server_cores = 1

    def test_calls_with_deadlines_take_no_ops_and_still_expire(self):
        conns = [h2raw.Conn(self.server.port) for _ in range(4)]
        try:
            base = self.server.metric("ringcas_ops_in_flight")
            # 400 calls whose request never ends, 300 s deadlines, and 4 with 1 s ones.
            for c in conns:
                for sid in range(1, 201, 2):
                    c.headers(sid, h2raw.grpc_headers(BATCH_UPDATE, timeout="300S"))
            short = conns[0]
            for sid in range(201, 209, 2):
                short.headers(sid, h2raw.grpc_headers(BATCH_UPDATE, timeout="1S"))
            harness.wait_for(lambda: self.server.metric("ringcas_grpc_calls") == 404,
                             timeout=10, what="404 calls")
            self.assertLess(self.server.metric("ringcas_ops_in_flight") - base, 20)
            before = self.server.metric("ringcas_grpc_deadlines_total")
            start = time.monotonic()
            ended = set()
            for f in short.keepalive_frames(10, done=lambda: len(ended) == 4):
                if f[2] in range(201, 209, 2) and f[1] & h2raw.END_STREAM:
                    ended.add(f[2])
            self.assertEqual(ended, set(range(201, 209, 2)))
            self.assertLess(time.monotonic() - start, 3)
            self.assertEqual(self.server.metric("ringcas_grpc_deadlines_total") - before, 4)
            self.assertEqual(self.server.metric("ringcas_grpc_calls"), 400)
        finally:
            for c in conns:
                c.close()
        self.server.wait_quiet(extra=("grpc_calls",))

    def test_deadlines_of_reads_whose_send_is_blocked(self):
        # 64 Reads of a large blob on one connection with open windows, and a client that
        # does not read: the core's send fills, nghttp2 holds a sized DATA frame it could
        # not add to it, and every deadline fires meanwhile. A cancel drops the messages
        # nothing of which was sent; the held frame's bytes must stay, or its retry asks for
        # bytes no longer queued (the server aborted on an assertion, h2.c send_data).
        blob = os.urandom(64 << 20)
        digest = hashlib.sha256(blob).hexdigest()
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        conn.request("PUT", "/cas/" + digest, body=blob)
        self.assertEqual(conn.getresponse().status, 201)
        conn.close()
        name = ("blobs/%s/%d" % (digest, len(blob))).encode()
        req = h2raw.grpc_message(b"\x0a" + bytes([len(name)]) + name)
        read = "/google.bytestream.ByteStream/Read"
        before = self.server.metric("ringcas_grpc_deadlines_total")
        for round_ in range(8):  # the old server aborted in about half of the rounds
            c = h2raw.Conn(self.server.port, settings=[(4, 0x7fffffff)], window=0x7fffffff - 65535)
            try:
                for i in range(64):
                    c.headers(2 * i + 1, h2raw.grpc_headers(read, timeout="%dm" % (1500 + i)))
                    c.data(2 * i + 1, req, end_stream=True)

                def drain(seconds):  # bytes only: what the frames say is not checked
                    stop = time.monotonic() + seconds
                    while time.monotonic() < stop:
                        c.sock.settimeout(0.05)
                        try:
                            if not c.sock.recv(1 << 20):
                                return
                        except socket.timeout:
                            pass

                # Not read: the socket fills and the reads queue their pieces. Then read for a
                # while, so that sends complete and each fill finds more than it can take, and
                # stop: the last send waits, a frame held beside it, when the deadlines fire.
                time.sleep(0.6)
                drain(0.4)
                time.sleep(1.3)
                drain(2)
            finally:
                c.close()
            self.assertIsNone(self.server.proc.poll(), "round %d: %s" % (round_,
                                                                         self.server.log_tail()))
            self.assertIn("ringcas_", self.server.metrics_text())
        self.assertGreaterEqual(self.server.metric("ringcas_grpc_deadlines_total") - before, 64)
        self.server.wait_quiet(extra=("grpc_calls", "grpc_segs", "bs_readers"))


if __name__ == "__main__":
    unittest.main()
