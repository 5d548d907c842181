#!/usr/bin/env python3
"""Review proofs: memory refusals reported with the wrong status, and streams reset by the
write-stall check while their client reads."""
import hashlib
import os
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
            used = self.fill(c, len(data) * 2)
            print("pb_mem used", used, "directory", len(data))
            with self.assertRaises(grpc.RpcError) as cm:
                list(client.GetTree(reapi.msg("GetTreeRequest", root_digest=r.digest),
                                    timeout=20))
            print("GetTree:", cm.exception.code(), cm.exception.details())
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
            used = self.fill(c, size * 2)
            print("pb_mem used", used, "action result", size)
            with self.assertRaises(grpc.RpcError) as cm:
                client.GetActionResult(reapi.msg("GetActionResultRequest",
                                                 action_digest=action), timeout=20)
            print("GetActionResult:", cm.exception.code(), cm.exception.details())
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        finally:
            c.close()
            client.close()


if __name__ == "__main__":
    unittest.main()
