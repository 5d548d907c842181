"""kill -9 under load: a writer uploads blobs (ByteStream and batches, identity and zstd)
and records each acknowledgement; the server is killed with SIGKILL at random points and
restarted on the same data folder, RINGCAS_CRASH_CYCLES times (20 by default). After every
restart every acknowledged blob must be present, and reads must return exactly its bytes
(those of the last cycle and a sample of older ones each time; all of them at the end)."""

import hashlib
import os
import random
import threading
import time
import unittest
import uuid

import grpc
import zstandard

import harness
import reapi

CYCLES = int(os.environ.get("RINGCAS_CRASH_CYCLES", "20"))


def digest(data):
    return reapi.msg("Digest", hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


class Writer(threading.Thread):
    """Uploads until the server dies; <acked> holds what the server acknowledged."""

    def __init__(self, address, rng):
        super().__init__(daemon=True)
        self.client = reapi.Client(address)
        self.rng = rng
        self.acked = []
        self.stop = False

    def upload_stream(self, data, compressed):
        body = zstandard.ZstdCompressor().compress(data) if compressed else data
        d = digest(data)
        kind = "compressed-blobs/zstd" if compressed else "blobs"
        name = "uploads/%s/%s/%s/%d" % (uuid.uuid4(), kind, d.hash, d.size_bytes)
        reqs = []
        for off in range(0, max(len(body), 1), 65536):
            r = reapi.msg("google.bytestream.WriteRequest", write_offset=off,
                          data=body[off:off + 65536], finish_write=off + 65536 >= len(body))
            if off == 0:
                r.resource_name = name
            reqs.append(r)
        self.client.Write(iter(reqs), timeout=20)

    def upload_batch(self, blobs):
        req = reapi.msg("BatchUpdateBlobsRequest")
        for b in blobs:
            r = req.requests.add()
            r.digest.CopyFrom(digest(b))
            r.data = b
        resp = self.client.BatchUpdateBlobs(req, timeout=20)
        return [b for b, r in zip(blobs, resp.responses) if r.status.code == 0]

    def run(self):
        try:
            while not self.stop:
                if self.rng.random() < 0.3:
                    blobs = [os.urandom(self.rng.randint(1, 20000)) for _ in range(8)]
                    self.acked.extend(self.upload_batch(blobs))
                else:
                    size = self.rng.choice([1000, 70000, 300000, 600000])
                    data = os.urandom(size // 2) + b"\x00" * (size - size // 2)
                    self.upload_stream(data, self.rng.random() < 0.3)
                    self.acked.append(data)
        except grpc.RpcError:
            pass  # the server went away mid-call: that upload was not acknowledged
        finally:
            self.client.close()


def kill_cycles(srv, rng, cycles, after_restart):
    """<cycles> rounds of: a Writer uploads to the running <srv> for 0.2-0.9 s, the server is
    killed (SIGKILL) and started again on its port, then after_restart(round_acked, acked)
    checks. Returns every blob acknowledged in all rounds."""
    acked = []
    for _ in range(cycles):
        w = Writer(srv.address, rng)
        w.start()
        time.sleep(rng.uniform(0.2, 0.9))
        srv.kill()
        w.stop = True
        w.join(30)
        srv.start(srv.port)
        acked.extend(w.acked)
        after_restart(w.acked, acked)
    return acked


def missing(address, blobs):
    """The digests of <blobs> that the server at <address> reports missing."""
    c = reapi.Client(address)
    try:
        out = []
        for i in range(0, len(blobs), 500):
            req = reapi.msg("FindMissingBlobsRequest",
                            blob_digests=[digest(b) for b in blobs[i:i + 500]])
            out += list(c.FindMissingBlobs(req, timeout=60).missing_blob_digests)
        return out
    finally:
        c.close()


class KillNine(unittest.TestCase):
    def verify(self, srv, blobs):
        """Every blob of <blobs> is present; returns a client for the reads that follow."""
        self.assertEqual(missing(srv.address, blobs), [], "acknowledged blobs lost after kill -9")
        return reapi.Client(srv.address)

    def read_back(self, c, blobs):
        for b in blobs:
            d = digest(b)
            req = reapi.msg("google.bytestream.ReadRequest",
                            resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))
            got = b"".join(r.data for r in c.Read(req, timeout=60))
            self.assertEqual(hashlib.sha256(got).hexdigest(), d.hash, "corrupt read")

    def test_acknowledged_blobs_survive_sigkill(self):
        rng = random.Random(int(os.environ.get("RINGCAS_CRASH_SEED", "0")) or None)
        srv = harness.Server(cores=2)
        srv.start()
        try:
            def check(round_acked, acked):
                c = self.verify(srv, acked)
                try:
                    self.read_back(c, round_acked + rng.sample(acked, min(len(acked), 20)))
                finally:
                    c.close()
            acked = kill_cycles(srv, rng, CYCLES, check)
            c = self.verify(srv, acked)
            try:
                self.read_back(c, acked)
            finally:
                c.close()
            self.assertGreater(len(acked), CYCLES)
            if os.environ.get("RC_VERBOSE"):
                print("%d cycles, %d acknowledged blobs, %.1f MB" %
                      (CYCLES, len(acked), sum(map(len, acked)) / 1e6))
            srv.stop()
        finally:
            srv.cleanup()


if __name__ == "__main__":
    unittest.main()
