"""The content of tests/data/v1-store (a data folder written by a ringcas from before format
version 2), and the script that wrote it.

Every blob and value is made from a fixed seed, so the test that opens the fixture
(test_upgrade.py) knows each byte it must read back without storing a copy. Run as a script with
$RINGCAS_BIN and $RC_PROTO_DESC naming an older build to write the fixture again:

    RINGCAS_BIN=.../ringcas RC_PROTO_DESC=.../ringcas.desc /usr/bin/python3 v1store.py OUT

writes OUT/clean (stopped with SIGTERM) and OUT/killed (the same content, then SIGKILL in the
middle of a ByteStream upload: an unsealed active segment whose tail holds chunks no commit
names). tests/data/v1-store/README.md says which build wrote the committed copy.
"""

import hashlib
import http.client
import os
import random
import shutil
import sys
import threading
import time
import uuid

import zstandard

import harness
import reapi

# The flags the fixture was written with: one core, so one log; 4 KiB chunks and 64 KiB
# segments, so blobs of tens of KiB have many chunks and some span segments.
SERVE_ARGS = ["--max-size", "1MiB", "--segment-size", "64KiB", "--chunk-size", "4KiB"]
CORES = 1


def _random(seed, n):
    return random.Random(seed).randbytes(n)


def _text(seed, n):
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"ringcas", b"segment", b"chunk", b"\n"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


# name: (bytes, how it was uploaded). "batch": BatchUpdateBlobs identity; "batch-zstd":
# BatchUpdateBlobs with compressor ZSTD; "bs": ByteStream Write identity; "bs-zstd": ByteStream
# Write of compressed-blobs/zstd; "http": PUT /cas/ identity; "http-zstd": PUT /cas/ with
# Content-Encoding: zstd.
BLOBS = {
    "small-text": (_text(1, 1000), "batch"),
    "small-random": (_random(2, 3000), "batch"),
    "empty": (b"", "batch"),
    "small-text-batch-zstd": (_text(3, 5000), "batch-zstd"),
    "multi-random-bs": (_random(4, 40000), "bs"),
    "span-random-bs": (_random(5, 100000), "bs"),
    "multi-text-bs": (_text(6, 150000), "bs"),
    "multi-text-bs-zstd": (_text(7, 80000), "bs-zstd"),
    "multi-random-bs-zstd": (_random(8, 20000), "bs-zstd"),
    "multi-random-http": (_random(9, 30000), "http"),
    "multi-text-http-zstd": (_text(10, 50000), "http-zstd"),
    "small-text-http": (_text(11, 200), "http"),
}


def sha(data):
    return hashlib.sha256(data).hexdigest()


def digest(data):
    return reapi.msg("Digest", hash=sha(data), size_bytes=len(data))


def _tree():
    """A Tree of one directory holding small-text as a.txt, and the digest of its root."""
    root = reapi.msg("Directory")
    f = root.files.add()
    f.name = "a.txt"
    f.digest.CopyFrom(digest(BLOBS["small-text"][0]))
    tree = reapi.msg("Tree")
    tree.root.CopyFrom(root)
    return tree.SerializeToString(deterministic=True)


TREE = _tree()


def action_result():
    """The ActionResult stored over gRPC: two output files, one output directory (TREE), a
    stdout blob."""
    r = reapi.msg("ActionResult", exit_code=0)
    for path, name in (("out/a.txt", "small-random"), ("out/big", "span-random-bs")):
        f = r.output_files.add()
        f.path = path
        f.digest.CopyFrom(digest(BLOBS[name][0]))
    d = r.output_directories.add()
    d.path = "out/dir"
    d.tree_digest.CopyFrom(digest(TREE))
    r.stdout_digest.CopyFrom(digest(BLOBS["small-text-http"][0]))
    return r


# gRPC ActionCache entries: (instance_name, action digest).
GRPC_AC = [("", digest(b"upgrade action 1")), ("team/x", digest(b"upgrade action 2"))]
# HTTP /ac/ entries, plain values (not ActionResults): path -> body.
HTTP_AC = {
    "/ac/" + sha(b"http ac 1"): b"a plain value stored under /ac/\n",
    "/bazel/ac/" + sha(b"http ac 2"): _random(12, 2500),
}
# Plain HTTP keys (neither /cas/ nor /ac/).
HTTP_PLAIN = {"/some/plain/key": _text(13, 9000)}

# The upload the killed store was in the middle of: never committed.
TORN = _random(14, 60000)
# Committed (killed store only) while that upload was open.
AFTER_TORN = _text(15, 700)


def write_reqs(name, body, chunk=16 << 10, finish=True):
    reqs = []
    for pos in range(0, max(len(body), 1), chunk):
        r = reapi.msg("google.bytestream.WriteRequest", write_offset=pos,
                      data=body[pos:pos + chunk], finish_write=finish and pos + chunk >= len(body))
        if pos == 0:
            r.resource_name = name
        reqs.append(r)
    return reqs


def http_req(port, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def fill(server):
    """Stores every blob and entry above through the protocol each names."""
    c = reapi.Client(server.address)
    try:
        zc = zstandard.ZstdCompressor()
        batch = reapi.msg("BatchUpdateBlobsRequest")
        for data, how in list(BLOBS.values()) + [(TREE, "batch")]:
            if how in ("batch", "batch-zstd"):
                r = batch.requests.add()
                r.digest.CopyFrom(digest(data))
                r.data = zc.compress(data) if how == "batch-zstd" else data
                r.compressor = 1 if how == "batch-zstd" else 0
        for resp in c.BatchUpdateBlobs(batch, timeout=30).responses:
            assert resp.status.code == 0, resp
        for data, how in BLOBS.values():
            if how in ("bs", "bs-zstd"):
                z = how == "bs-zstd"
                name = "uploads/%s/%s/%s/%d" % (uuid.uuid4(),
                                               "compressed-blobs/zstd" if z else "blobs",
                                               sha(data), len(data))
                body = zc.compress(data) if z else data
                got = c.Write(iter(write_reqs(name, body)), timeout=30).committed_size
                assert got == len(body) or got == -1, got
            elif how in ("http", "http-zstd"):
                z = how == "http-zstd"
                status, _ = http_req(server.port, "PUT", "/cas/" + sha(data),
                                 zc.compress(data) if z else data,
                                 {"Content-Encoding": "zstd"} if z else {})
                assert status in (200, 201), status
        for instance, d in GRPC_AC:
            req = reapi.msg("UpdateActionResultRequest", instance_name=instance)
            req.action_digest.CopyFrom(d)
            req.action_result.CopyFrom(action_result())
            c.UpdateActionResult(req, timeout=30)
        for path, body in list(HTTP_AC.items()) + list(HTTP_PLAIN.items()):
            status, _ = http_req(server.port, "PUT", path, body)
            assert status in (200, 201), (path, status)
    finally:
        c.close()


def _torn_upload(server):
    """Starts a ByteStream upload of TORN, sends all but its last message and kills the server
    while the call is open: its chunks are on disk, no commit names them."""
    c = reapi.Client(server.address)
    # Seven of its eight messages (56 KiB): more than the active segment holds (44 KiB are
    # free), so it is sealed with chunks no commit names, and the next one is begun.
    reqs = write_reqs("uploads/%s/blobs/%s/%d" % (uuid.uuid4(), sha(TORN), len(TORN)), TORN,
                      chunk=8 << 10)[:-1]
    sent = threading.Event()
    killed = threading.Event()

    def stream():
        yield from reqs
        sent.set()
        killed.wait(30)

    t = threading.Thread(target=lambda: _call_ignoring_errors(c.Write, stream()), daemon=True)
    t.start()
    assert sent.wait(30)
    # The server has the messages once it stops taking them; a second lets them reach the disk.
    time.sleep(2)
    # A small blob committed meanwhile writes the upload's chunks held for the new segment
    # before its own commit: the unsealed active segment holds orphan chunks, then a commit.
    assert reapi.put_blob(server.address, AFTER_TORN).size_bytes == len(AFTER_TORN)
    time.sleep(1)
    server.kill()
    killed.set()
    t.join(30)
    c.close()


def _call_ignoring_errors(fn, arg):
    try:
        fn(arg, timeout=30)
    except Exception:  # the server was killed: UNAVAILABLE
        pass


def main(out):
    for name in ("clean", "killed"):
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        s = harness.Server(args=SERVE_ARGS, cores=CORES, data_dir=d)
        s.start()
        try:
            fill(s)
            if name == "clean":
                s.stop()
            else:
                _torn_upload(s)
        finally:
            s.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
