#!/usr/bin/python3
"""Writes the seed inputs of the fuzz targets' corpora (tests/fuzz/corpus/<target>/seed-*).
Seeds are built from the same definitions the servers and clients use (the descriptor set
for protobuf messages, h2raw for HTTP/2 frames). Run from the repository root after a build;
fuzzing adds its own finds beside the seeds (minimized with -merge=1 before committing)."""

import hashlib
import os
import struct
import sys

import zstandard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import h2raw  # noqa: E402
import reapi  # noqa: E402

H = reapi.EMPTY_SHA256
H2 = "a" * 64


def out(target, name, data):
    d = os.path.join(ROOT, "tests", "fuzz", "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def frames_seeds():
    g = h2raw.grpc_message
    out("grpc_frame", "one", b"\x00" + g(b"hello"))
    out("grpc_frame", "several", b"\x03" + g(b"") + g(b"abc") + g(b"x" * 300))
    out("grpc_frame", "split", b"\x01" + g(b"0123456789")[:7])
    out("grpc_frame", "oversize", b"\x05" + b"\x00\x00\x01\x00\x01")
    out("grpc_frame", "compressed", b"\x02" + b"\x01\x00\x00\x00\x01x")


def proto_seeds():
    wr = reapi.cls("google.bytestream.WriteRequest")
    name = "inst/uploads/u1/blobs/%s/5" % H2
    out("proto_decode", "write", b"\x03" + wr(resource_name=name, write_offset=0,
                                              finish_write=True, data=b"hello").SerializeToString())
    out("proto_decode", "write-tail", b"\x01" + wr(write_offset=5, data=b"x" * 100).SerializeToString())
    out("proto_decode", "write-unknown", b"\x02" + b"\x20\x01\x29" + b"\x00" * 8 + b"\x52\x01z")
    rr = reapi.cls("google.bytestream.ReadRequest")
    out("proto_decode", "read", b"\x00" + rr(resource_name="compressed-blobs/zstd/%s/5" % H2,
                                             read_offset=2, read_limit=0).SerializeToString())
    d = reapi.msg("Digest", hash=H2, size_bytes=5)
    out("proto_decode", "find", b"\x00" + reapi.msg("FindMissingBlobsRequest", instance_name="i",
                                                    blob_digests=[d, d]).SerializeToString())
    req = reapi.msg("BatchUpdateBlobsRequest")
    r = req.requests.add()
    r.digest.CopyFrom(d)
    r.data = b"hello"
    r.compressor = 1
    out("proto_decode", "batch-update", b"\x00" + req.SerializeToString())
    ar = reapi.msg("ActionResult", exit_code=1)
    f = ar.output_files.add()
    f.path = "out"
    f.digest.CopyFrom(d)
    od = ar.output_directories.add()
    od.path = "dir"
    od.tree_digest.CopyFrom(d)
    ar.stdout_digest.CopyFrom(d)
    out("proto_decode", "action-result", b"\x00" + ar.SerializeToString())
    out("ac_sniff", "action-result", b"\x00" + ar.SerializeToString())
    out("ac_sniff", "action-result-bytes", b"\x02" + ar.SerializeToString() + b"\x0a\x00")
    upd = reapi.msg("UpdateActionResultRequest", instance_name="x")
    upd.action_digest.CopyFrom(d)
    upd.action_result.CopyFrom(ar)
    out("proto_decode", "update-ac", b"\x00" + upd.SerializeToString())
    tree = reapi.msg("Tree")
    tree.root.files.add(name="a", digest=d)
    tree.root.directories.add(name="sub", digest=d)
    tree.children.add().files.add(name="b", digest=d)
    out("proto_decode", "tree", b"\x00" + tree.SerializeToString())
    out("ac_sniff", "tree", b"\x01" + tree.SerializeToString())
    out("ac_sniff", "opaque", b"\x03" + b"ccache\x00\x01 some opaque value")
    out("proto_decode", "resource", b"\x00" + ("a/b/blobs/%s/123" % H).encode())
    out("proto_decode", "resource-up", b"\x00" + ("uploads/x/compressed-blobs/zstd/%s/1/m" % H).encode())
    out("proto_decode", "timeout", b"\x00" + b"99999999H")


def h2_seeds():
    c = h2raw.Conn.frame
    settings = c(h2raw.SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 20))
    ack = c(h2raw.SETTINGS, h2raw.ACK, 0)

    def req(stream, path, body, end=True, extra=()):
        hs = h2raw.hpack(h2raw.grpc_headers(path, extra=extra))
        return c(h2raw.HEADERS, h2raw.END_HEADERS, stream, hs) + \
            (c(h2raw.DATA, h2raw.END_STREAM if end else 0, stream, body) if body is not None else b"")

    health = "/grpc.health.v1.Health/Check"
    g = h2raw.grpc_message
    out("h2_session", "health", b"\x00" + settings + ack + req(1, health, g(b"")))
    msg = g(b"\x0a\x03abc")
    split = settings + c(h2raw.HEADERS, h2raw.END_HEADERS, 1, h2raw.hpack(h2raw.grpc_headers(health)))
    for i in range(0, len(msg), 3):
        split += c(h2raw.DATA, 0, 1, msg[i:i + 3])
    split += c(h2raw.DATA, h2raw.END_STREAM, 1, b"")
    out("h2_session", "split", b"\x01" + split)
    out("h2_session", "two-msgs", b"\x02" + settings + req(1, health, g(b"") + g(b"")))
    caps = "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"
    out("h2_session", "caps", b"\x03" + settings + req(1, caps, g(b"\x0a\x01x")) + req(3, health, g(b"")))
    out("h2_session", "unknown", b"\x00" + settings + req(1, "/x.Y/Z", g(b"")))
    wr = reapi.cls("google.bytestream.WriteRequest")
    w1 = wr(resource_name="uploads/u/blobs/%s/10" % H2, write_offset=0, data=b"01234").SerializeToString()
    w2 = wr(write_offset=5, finish_write=True, data=b"56789").SerializeToString()
    out("h2_session", "write", b"\x04" + settings + req(1, "/google.bytestream.ByteStream/Write", g(w1) + g(w2)))
    rr = reapi.cls("google.bytestream.ReadRequest")
    read = rr(resource_name="blobs/%s/0" % H).SerializeToString()
    out("h2_session", "read", b"\x05" + settings + req(1, "/google.bytestream.ByteStream/Read", g(read)))
    out("h2_session", "reset", b"\x06" + settings + req(1, health, None) +
        c(h2raw.RST_STREAM, 0, 1, struct.pack(">I", 8)) + req(3, health, g(b"")))
    out("h2_session", "control", b"\x07" + settings + c(h2raw.PING, 0, 0, b"12345678") +
        c(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000)) +
        c(h2raw.PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10") + req(1, health, g(b"")) +
        c(h2raw.GOAWAY, 0, 0, struct.pack(">II", 1, 0)))
    hs = h2raw.hpack(h2raw.grpc_headers(health))
    cont = settings + c(h2raw.HEADERS, 0, 1, hs[:5]) + c(h2raw.CONTINUATION, 0, 1, hs[5:10]) + \
        c(h2raw.CONTINUATION, h2raw.END_HEADERS, 1, hs[10:]) + c(h2raw.DATA, h2raw.END_STREAM, 1, g(b""))
    out("h2_session", "continuation", b"\x08" + cont)
    out("h2_session", "bad-frames", b"\x09" + settings + c(h2raw.DATA, 0, 0, b"x") +
        c(h2raw.WINDOW_UPDATE, 0, 1, b"\x00\x00\x00\x00") + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01")
    # RFC 9113 checks nghttp2 leaves to the server (src/rpc/h2.c scan_frames, on_begin_frame):
    # PRIORITY on stream 0 and depending on itself, CONTINUATION past the limit, a reused id.
    out("h2_session", "priority-checks", b"\x0d" + settings + req(1, health, None) +
        c(h2raw.PRIORITY, 0, 1, struct.pack(">IB", 1, 16)) + req(3, health, g(b"")) +
        c(h2raw.PRIORITY, 0, 0, struct.pack(">IB", 1, 16)))
    flood = settings + c(h2raw.HEADERS, 0, 1, hs[:5])
    for i in range(5, 15):
        flood += c(h2raw.CONTINUATION, 0, 1, hs[i:i + 1])
    out("h2_session", "continuation-flood", b"\x0e" + flood)
    out("h2_session", "reused-id", b"\x0f" + settings + req(3, health, g(b"")) +
        req(1, health, g(b"")))
    out("h2_session", "timeout", b"\x0a" + settings + req(1, health, None, extra=[("grpc-timeout", "1m")]))
    out("h2_session", "ctype", b"\x0b" + settings + req(1, health, g(b""), extra=[("content-type", "text/plain")]))
    big = [("x-big%d" % i, "v" * 4000) for i in range(5)]
    out("h2_session", "big-headers", b"\x0c" + settings + req(1, health, g(b""), extra=big))
    # The CAS and action cache calls, so the fuzzer starts from each service's decoder.
    cas = "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
    ac = "/build.bazel.remote.execution.v2.ActionCache/"
    hello = hashlib.sha256(b"hello").hexdigest()
    dh = reapi.msg("Digest", hash=hello, size_bytes=5)
    d2 = reapi.msg("Digest", hash=H2, size_bytes=3)
    find = reapi.msg("FindMissingBlobsRequest", instance_name="i", blob_digests=[dh, d2])
    upd = reapi.msg("BatchUpdateBlobsRequest", instance_name="i")
    upd.requests.add(digest=dh, data=b"hello")
    rd = reapi.msg("BatchReadBlobsRequest", digests=[dh, d2], acceptable_compressors=[0, 1])
    out("h2_session", "cas-batches", b"\x0d" + settings +
        req(1, cas + "FindMissingBlobs", g(find.SerializeToString())) +
        req(3, cas + "BatchUpdateBlobs", g(upd.SerializeToString())) +
        req(5, cas + "BatchReadBlobs", g(rd.SerializeToString())) +
        req(7, cas + "FindMissingBlobs", g(find.SerializeToString())))
    tree = reapi.msg("GetTreeRequest", instance_name="i", root_digest=dh, page_size=10)
    out("h2_session", "get-tree", b"\x0e" + settings + req(1, cas + "GetTree", g(tree.SerializeToString())))
    ar = reapi.msg("ActionResult", exit_code=0)
    ar.output_files.add(path="out", digest=dh)
    ar.output_directories.add(path="dir", tree_digest=d2)
    ar.stdout_digest.CopyFrom(dh)
    put = reapi.msg("UpdateActionResultRequest", instance_name="i", action_digest=d2, action_result=ar)
    get = reapi.msg("GetActionResultRequest", instance_name="i", action_digest=d2)
    out("h2_session", "ac", b"\x0f" + settings + req(1, cas + "BatchUpdateBlobs", g(upd.SerializeToString())) +
        req(3, ac + "UpdateActionResult", g(put.SerializeToString())) +
        req(5, ac + "GetActionResult", g(get.SerializeToString())))
    # A result whose Tree is stored: GetActionResult reads it through the Tree scan.
    t = reapi.msg("Tree")
    t.root.files.add(name="top").digest.CopyFrom(dh)
    for i in range(3):
        t.children.add().files.add(name="f%d" % i).digest.CopyFrom(dh)
    tb = t.SerializeToString()
    dt = reapi.msg("Digest", hash=hashlib.sha256(tb).hexdigest(), size_bytes=len(tb))
    tupd = reapi.msg("BatchUpdateBlobsRequest", instance_name="i")
    tupd.requests.add(digest=dh, data=b"hello")
    tupd.requests.add(digest=dt, data=tb)
    tar = reapi.msg("ActionResult", exit_code=0)
    tar.output_directories.add(path="dir", tree_digest=dt)
    tput = reapi.msg("UpdateActionResultRequest", instance_name="i", action_digest=d2,
                     action_result=tar)
    # 64-byte writes with the server's loop run between them, and PINGs to wait for the
    # blobs and the result to be stored before the lookup, and for the lookup's check before
    # the connection's end cancels it.
    pings = b"".join(c(h2raw.PING, 0, 0, b"%08d" % i) for i in range(150))
    out("h2_session", "ac-tree", b"\x00" + settings +
        req(1, cas + "BatchUpdateBlobs", g(tupd.SerializeToString())) + pings +
        req(3, ac + "UpdateActionResult", g(tput.SerializeToString())) + pings +
        req(5, ac + "GetActionResult", g(get.SerializeToString())) + pings)
    qws = reapi.cls("google.bytestream.QueryWriteStatusRequest")(
        resource_name="uploads/u/blobs/%s/10" % H2).SerializeToString()
    wz = wr(resource_name="uploads/u2/compressed-blobs/zstd/%s/5" % hello, write_offset=0,
            finish_write=True, data=zstandard.ZstdCompressor().compress(b"hello")).SerializeToString()
    rz = rr(resource_name="compressed-blobs/zstd/%s/5" % hello).SerializeToString()
    out("h2_session", "write-zstd", b"\x10" + settings +
        req(1, "/google.bytestream.ByteStream/Write", g(w1)) +
        req(3, "/google.bytestream.ByteStream/QueryWriteStatus", g(qws)) +
        req(5, "/google.bytestream.ByteStream/Write", g(wz)) +
        req(7, "/google.bytestream.ByteStream/Read", g(rz)))


def h1_seeds():
    hello = hashlib.sha256(b"hello").hexdigest()
    d = reapi.msg("Digest", hash=hello, size_bytes=5)
    ar = reapi.msg("ActionResult", exit_code=0)
    ar.output_files.add(path="out", digest=d)
    ar.stdout_digest.CopyFrom(d)
    arb = ar.SerializeToString()
    missing = reapi.msg("ActionResult")
    missing.output_files.add(path="gone", digest=reapi.msg("Digest", hash=H2, size_bytes=3))
    mb = missing.SerializeToString()

    def put(path, body, extra=""):
        return ("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n"
                % (path, len(body), extra)).encode() + body

    def get(path, method="GET", extra=""):
        return ("%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (method, path, extra)).encode()

    out("h1_session", "cas", b"\x00" + put("/cas/" + hello, b"hello") + get("/cas/" + hello) +
        get("/cas/" + hello, "HEAD") + get("/cas/" + H2))
    out("h1_session", "cas-bad-hash", b"\x01" + put("/i/cas/" + H2, b"hello") + get("/i/cas/" + H2))
    out("h1_session", "ac", b"\x02" + put("/cas/" + hello, b"hello") + put("/ac/" + H2, arb) +
        get("/ac/" + H2) + get("/ac/" + H2, "HEAD") + put("/i/ac/" + H2, mb) + get("/i/ac/" + H2))
    out("h1_session", "ac-opaque", b"\x03" + put("/ccache/ac/" + H, b"\x01\x02opaque") +
        get("/ccache/ac/" + H, extra="Accept-Encoding: zstd\r\n"))
    chunked = ("PUT /key/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: t\r\n\r\n").encode()
    out("h1_session", "chunked", b"\x04" + chunked + get("/key/a") + get("/key/b"))
    out("h1_session", "status", b"\x05" + get("/metrics") + get("/healthz") + get("/readyz") +
        get("/healthz", "POST") + b"GET /cas/zz HTTP/1.0\r\n\r\n")
    out("h1_session", "continue", b"\x06" + put("/cas/" + hello, b"hello",
                                                 "Expect: 100-continue\r\n") +
        get("/cas/" + hello, extra="Range: bytes=1-2\r\nConnection: close\r\n"))
    out("h1_session", "garbage", b"\x07" + b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    # A result whose output directory is a Tree: GET /ac/ reads the Tree through the scan.
    tree = reapi.msg("Tree")
    for i in range(3):
        tree.children.add().files.add(name="f%d" % i).digest.CopyFrom(d)
    tree.root.files.add(name="top").digest.CopyFrom(d)
    tb = tree.SerializeToString()
    th = hashlib.sha256(tb).hexdigest()
    tr = reapi.msg("ActionResult")
    od = tr.output_directories.add(path="dir")
    od.tree_digest.hash, od.tree_digest.size_bytes = th, len(tb)
    out("h1_session", "ac-tree", b"\x08" + put("/cas/" + hello, b"hello") + put("/cas/" + th, tb) +
        put("/ac/" + H2, tr.SerializeToString()) + get("/ac/" + H2))


def tree_seeds():
    def file_node(name, data):
        f = reapi.msg("FileNode")
        f.name = name
        f.digest.CopyFrom(reapi.msg("Digest", hash=hashlib.sha256(data).hexdigest(),
                                    size_bytes=len(data)))
        return f

    tree = reapi.msg("Tree")
    tree.root.files.extend([file_node("a", b"a"), file_node("b", b"bb")])
    sub = tree.root.directories.add(name="sub")
    sub.digest.hash, sub.digest.size_bytes = H2, 9
    for i in range(3):
        tree.children.add().files.extend([file_node("f%d" % i, b"x" * i)])
    tb = tree.SerializeToString()
    out("tree_scan", "tree", b"\x00\x00" + tb)
    out("tree_scan", "tree-bytewise", b"\x01\x00" + tb)
    out("tree_scan", "tree-cut-7", b"\x07\x00" + tb)
    out("tree_scan", "tree-dir-max", b"\x03\x20" + tb)
    # A root given twice (protobuf-c merges the two), unknown fields of every wire type, an
    # empty Tree and an empty root.
    r2 = reapi.msg("Directory", files=[file_node("c", b"c")]).SerializeToString()
    twice = tb + b"\x0a" + bytes([len(r2)]) + r2
    out("tree_scan", "root-twice", b"\x05\x00" + twice)
    unknown = b"\x18\x96\x01" + b"\x21" + b"\x00" * 8 + b"\x2a\x03abc" + b"\x35" + b"\x00" * 4
    out("tree_scan", "unknown-fields", b"\x02\x00" + unknown + tb)
    out("tree_scan", "empty", b"\x00\x00")
    out("tree_scan", "empty-root", b"\x00\x00\x0a\x00")
    # Refused framings: a group, field 0, a root of wire type 0, a length past the end.
    out("tree_scan", "group", b"\x00\x00\x0b\x0c")
    out("tree_scan", "field-0", b"\x00\x00\x02\x00")
    out("tree_scan", "root-varint", b"\x00\x00\x08\x01")
    out("tree_scan", "past-end", b"\x04\x00\x12\x7f\x0a")
    # Edge encodings both accept or both refuse (the review's list): a key longer than it
    # needs, field 0 in a 2-byte key, a 5-byte length, a tag of 2^31 and more, varints of 10
    # and 11 bytes, a length of INT_MAX, a root twice and then a bad one.
    edges = {
        "long-key": b"\x8a\x00\x00",
        "field-0-long-key": b"\x80\x00\x00",
        "length-5-bytes": b"\x0a\x80\x80\x80\x80\x00",
        "tag-2-31": b"\xf8\xff\xff\xff\x0f\x00",
        "varint-10": b"\x18" + b"\x80" * 9 + b"\x01",
        "varint-11": b"\x18" + b"\x80" * 10 + b"\x01",
        "length-int-max": b"\x1a\xff\xff\xff\xff\x07",
        "roots-then-bad": b"\x0a\x00\x0a\x00\x0a\x01\xff",
    }
    for i, (name, data) in enumerate(sorted(edges.items())):
        out("tree_scan", name, bytes([i % 5 + 1, 0]) + data)
    # Little memory (byte 1 sets the fuzz target's limit): the Tree above, cut in 3-byte pieces.
    out("tree_scan", "tree-little-memory", b"\x03\x01" + tb)


def recover_seeds():
    """Structured inputs of fuzz_recover (its header lists the operations): segments a writer
    builds, then damaged as a crash, a misdirected write or an older or buggy writer would.
    The target writes the seeds of segments the engine itself wrote (FUZZ_RECOVER_SEEDS)."""
    flags = 0x0E  # structured, mapped reads, zstd and mid-blob reads, fsck

    def blob(f, n, seed, key=0):
        return bytes([0, f]) + struct.pack("<H", n) + bytes([seed, key])

    cas, ac, v1, raw, big, text, older, defer = 0, 1, 2, 4, 8, 16, 32, 64
    seal, hole, footer_lie, torn_seal, trailer_lie = 1, 2, 4, 8, 16
    mixed = blob(cas | text, 10000, 1) + blob(cas | raw, 5000, 2) + blob(ac | text, 3000, 3, 7)
    seeds = {
        "sealed-then-open": mixed + bytes([2, seal]) + blob(cas | big, 20000, 4),
        "version-1": blob(v1 | text, 9000, 5) + blob(v1 | ac, 100, 6, 1) + bytes([2, seal])
        + blob(v1 | raw, 4096, 7),
        "span": blob(cas | defer, 12000, 8) + bytes([2, seal]) + bytes([1]),
        "span-hole": blob(cas | defer, 12000, 9) + bytes([2, seal | hole, 2, seal]) + bytes([1]),
        "footer-lie": mixed + bytes([2, seal | footer_lie, 1, 4, 3]),
        "trailer-lie": mixed + bytes([2, seal | trailer_lie, 24, 8]),
        "torn-seal": mixed + bytes([2, seal | torn_seal]),
        "misdirected": blob(cas | raw, 4096, 10) + blob(cas | raw, 4096, 11) + bytes([4, 0, 2, 0]),
        "ref-past-end": blob(cas | raw, 8192, 12) + bytes([8, 4, 1, 100]),
        "ref-other-segment": blob(cas, 8192, 13) + bytes([8, 3, 0, 1]),
        "size-edit": blob(cas | text, 9000, 14) + bytes([8, 0, 0, 200]),
        "torn-tail": mixed + bytes([6]) + struct.pack("<H", 300),
        "damaged-then-valid": mixed + bytes([5, 1, 100, 0, 0x40, 0]),
        "header-zeroed": mixed + bytes([7, 1, 1]),
        "ac-replaced": blob(ac, 500, 15, 9) + blob(ac | text, 700, 16, 9) + bytes([2, seal])
        + blob(ac | older, 900, 17, 9),
        "duplicate": mixed + bytes([4, 3, 0, 1]),
        "chunk-wrong-size": bytes([3, 0, 1, 2]) + struct.pack("<H", 4096) + bytes([8]) + b"x" * 32
        + blob(cas, 3000, 18),
        "garbage-after": mixed + bytes([9, 200, 0x55]),
    }
    for name, ops in sorted(seeds.items()):
        out("recover", name, bytes([flags, 0]) + ops)


if __name__ == "__main__":
    frames_seeds()
    proto_seeds()
    h2_seeds()
    h1_seeds()
    tree_seeds()
    recover_seeds()
