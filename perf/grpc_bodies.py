#!/usr/bin/python3
"""Helper of perf/grpc.sh: uploads the benchmark's blobs to a running ringcas and writes the
gRPC-framed request bodies h2load posts.

usage: grpc_bodies.py HOST:PORT OUTDIR
  OUTDIR/blob1k            the 1 KiB blob (nghttpd serves this file)
  OUTDIR/read1k.body       ReadRequest for it, framed
  OUTDIR/read256m.body     ReadRequest for a 256 MiB random blob, framed
  OUTDIR/find1000.body     FindMissingBlobsRequest of 1000 digests (500 present), framed
  OUTDIR/expect            expected response DATA bytes per call: read1k read256m find1000
"""

import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import reapi  # noqa: E402


def framed(msg):
    b = msg.SerializeToString()
    return b"\x00" + struct.pack(">I", len(b)) + b


def digest(data):
    return reapi.msg("Digest", hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def write(c, data, name):
    d = digest(data)
    res = "uploads/%s/blobs/%s/%d" % (name, d.hash, d.size_bytes)

    def reqs():
        for off in range(0, len(data), 1 << 20):
            r = reapi.msg("google.bytestream.WriteRequest", write_offset=off,
                          data=data[off:off + (1 << 20)], finish_write=off + (1 << 20) >= len(data))
            if off == 0:
                r.resource_name = res
            yield r
    c.Write(reqs(), timeout=600)
    return d


def read_req(d):
    return reapi.msg("google.bytestream.ReadRequest",
                     resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))


def main():
    address, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    c = reapi.Client(address)
    small = os.urandom(1024)
    with open(os.path.join(out, "blob1k"), "wb") as f:
        f.write(small)
    d1 = write(c, small, "perf-1k")
    big = os.urandom(256 << 20)
    d2 = write(c, big, "perf-256m")
    present = [os.urandom(64) for _ in range(500)]
    req = reapi.msg("BatchUpdateBlobsRequest")
    for b in present:
        r = req.requests.add()
        r.digest.CopyFrom(digest(b))
        r.data = b
    c.BatchUpdateBlobs(req, timeout=60)
    digests = [digest(b) for b in present] + [digest(os.urandom(64)) for _ in range(500)]
    find = reapi.msg("FindMissingBlobsRequest", blob_digests=digests)
    for name, msg in (("read1k.body", read_req(d1)), ("read256m.body", read_req(d2)),
                      ("find1000.body", find)):
        with open(os.path.join(out, name), "wb") as f:
            f.write(framed(msg))
    # Response DATA per call: the framed messages the server sends back.
    read1k = 5 + 1 + 2 + 1024
    resp = c.FindMissingBlobs(find, timeout=60)
    assert len(resp.missing_blob_digests) == 500
    find_bytes = 5 + len(resp.SerializeToString())
    # One message per piece the engine hands out: random chunks are stored raw, and an
    # identity read hands out each 128 KiB raw block in place (docs/storage.md).
    pieces = -(-(256 << 20) // (128 << 10))
    read256m = (256 << 20) + pieces * (5 + 1 + 3)
    with open(os.path.join(out, "expect"), "w") as f:
        f.write("%d %d %d\n" % (read1k, read256m, find_bytes))
    c.close()


if __name__ == "__main__":
    main()
