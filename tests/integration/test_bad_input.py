"""Bad input loses nothing (docs/testing.md has the whole matrix of entry points and kinds of
bad input, and names the test for each): the cases no other file covered.

- A gRPC client that vanishes (TCP close, no RST_STREAM, no GOAWAY) with a call of every
  method open on its connection, some mid-request and some mid-response.
- An HTTP/1.1 client that vanishes mid-response on the routes whose answers are built, not
  streamed from a blob: a checked /ac/ result gathered from several pieces, and /metrics.
- A full disk under every write entry point (HTTP PUT of /cas/, /ac/ and a plain key;
  BatchUpdateBlobs, UpdateActionResult, ByteStream.Write; zstd bodies and entries too), on a
  tmpfs of the server's own.
- Every kind of bad zstd stream through every entry point that takes zstd: cut short, a
  wrong Frame_Content_Size, bytes after the frame, a bomb past the named size, skippable
  frames that decode to nothing.

Each asserts the exact status and message, that nothing became visible and nothing stored
before was lost (it reads back byte for byte), that the server's gauges return to zero, and
that the server goes on serving.
"""

import hashlib
import os
import shutil
import socket
import struct
import tempfile
import unittest
import uuid

import grpc
import zstandard

import h2raw
import harness
import reapi
from http1 import Raw, request
from test_diskroom import namespace_prefix, unshare_command

GAUGES = ("h2_streams", "grpc_calls", "grpc_segs", "grpc_slices", "grpc_pins", "pb_mem_bytes",
          "bs_readers", "blob_readers")
UPLOADS = ("bs_uploads", "bs_uploads_parked", "blob_uploads")
SC = grpc.StatusCode
RE = "/build.bazel.remote.execution.v2."
MIB = 1 << 20


def sha(data):
    return hashlib.sha256(data).hexdigest()


def digest(data):
    return reapi.msg("Digest", hash=sha(data), size_bytes=len(data))


def write_reqs(name, data, chunk=64 << 10, finish=True):
    """ByteStream WriteRequests for <data> under resource <name>."""
    reqs = []
    for pos in range(0, max(len(data), 1), chunk):
        r = reapi.msg("google.bytestream.WriteRequest", write_offset=pos,
                      data=data[pos:pos + chunk],
                      finish_write=finish and pos + chunk >= len(data))
        if pos == 0:
            r.resource_name = name
        reqs.append(r)
    return reqs


def read_blob(client, data):
    req = reapi.msg("google.bytestream.ReadRequest",
                    resource_name="blobs/%s/%d" % (sha(data), len(data)))
    return b"".join(r.data for r in client.Read(req, timeout=60))


def missing(client, blobs):
    req = reapi.msg("FindMissingBlobsRequest", blob_digests=[digest(b) for b in blobs])
    return [d.hash for d in client.FindMissingBlobs(req, timeout=30).missing_blob_digests]


def batch_update(client, blobs):
    req = reapi.msg("BatchUpdateBlobsRequest")
    for b in blobs:
        r = req.requests.add()
        r.digest.CopyFrom(digest(b))
        r.data = b
    return [(r.status.code, r.status.message)
            for r in client.BatchUpdateBlobs(req, timeout=30).responses]


def wait_zero(server, names, timeout=20.0):
    """Waits until the gauges <names> (ringcas_ omitted) are zero on every core, while the
    test's own connections stay open."""
    def left():
        samples = harness.parse_metrics(server.metrics_text())
        return {n: sum(v for m, _, v in samples if m == "ringcas_" + n) for n in names}
    harness.wait_for(lambda: not any(left().values()), timeout=timeout,
                     what="gauges to return to zero")


def unavailable(server):
    """{route: gRPC calls that ended UNAVAILABLE}."""
    out = {}
    for n, labels, v in harness.parse_metrics(server.metrics_text()):
        if n == "ringcas_requests_total" and labels.get("status") == "14" and v:
            out[labels["route"]] = out.get(labels["route"], 0) + int(v)
    return out


def http(port, method, path, body=None, headers=()):
    """One request on its own connection: (status, body)."""
    hs = list(headers)
    if body is not None:
        hs.append("Content-Length: %d" % len(body))
    with Raw(port) as c:
        c.send(request(method, path, headers=hs) + (body or b""))
        r = c.read_response()
        return r.status, r.body


def action_result(files=(), tree=None):
    ar = reapi.msg("ActionResult", exit_code=0)
    for i, f in enumerate(files):
        ar.output_files.add(path="out%d" % i, digest=digest(f))
    if tree is not None:
        ar.output_directories.add(path="dir").tree_digest.CopyFrom(digest(tree))
    return ar


class VanishedGrpcClient(harness.ServerTestCase):
    """One core, so every call of the vanished connection is on the core whose gauges the
    test reads, and a new connection finds what the old one left."""

    server_cores = 1

    def test_a_client_gone_with_every_method_open_releases_every_call(self):
        c = reapi.Client(self.server.address)
        try:
            big = os.urandom(6 * MIB)
            c.Write(iter(write_reqs("uploads/%s/blobs/%s/%d" % (uuid.uuid4(), sha(big), len(big)),
                                    big, chunk=MIB)), timeout=60)
            mid = os.urandom(3 * MIB)
            files = [os.urandom(1000 + i) for i in range(64)]
            self.assertEqual(batch_update(c, [mid] + files), [(0, "")] * 65)
            # A wide tree: GetTree answers pages, the action result's check walks it.
            root = reapi.msg("Directory")
            leaves = []
            for i, f in enumerate(files):
                d = reapi.msg("Directory")
                d.files.add(name="f%d" % i, digest=digest(f))
                leaves.append(d.SerializeToString())
                root.directories.add(name="d%03d" % i, digest=digest(leaves[-1]))
            rb = root.SerializeToString()
            self.assertEqual(batch_update(c, [rb] + leaves), [(0, "")] * 65)
            tree = reapi.msg("Tree", root=root)
            for lb in leaves:
                tree.children.add().ParseFromString(lb)
            tb = tree.SerializeToString()
            self.assertEqual(batch_update(c, [tb]), [(0, "")])
            action = os.urandom(32)
            ar = action_result(files=files[:8], tree=tb)
            c.UpdateActionResult(reapi.msg("UpdateActionResultRequest", action_digest=digest(action),
                                           action_result=ar), timeout=30)
            cancels = self.server.metric("ringcas_grpc_cancels_total")
            self.assertEqual(unavailable(self.server), {})

            # The vanishing client: stream windows of one byte, so each answer's HEADERS and
            # the first byte of its DATA go out and the rest waits: mid-response.
            v = h2raw.Conn(self.server.port, settings=((4, 1),))
            ended = {
                1: ("/google.bytestream.ByteStream/Read",
                    reapi.msg("google.bytestream.ReadRequest",
                              resource_name="blobs/%s/%d" % (sha(big), len(big)))),
                3: (RE + "ContentAddressableStorage/GetTree",
                    reapi.msg("GetTreeRequest", root_digest=digest(rb), page_size=8)),
                5: (RE + "ContentAddressableStorage/BatchReadBlobs",
                    reapi.msg("BatchReadBlobsRequest", digests=[digest(mid)])),
                7: (RE + "ActionCache/GetActionResult",
                    reapi.msg("GetActionResultRequest", action_digest=digest(action))),
                9: (RE + "ContentAddressableStorage/FindMissingBlobs",
                    reapi.msg("FindMissingBlobsRequest",
                              blob_digests=[digest(b"%d" % i) for i in range(1000)])),
                11: (RE + "Capabilities/GetCapabilities", reapi.msg("GetCapabilitiesRequest")),
                13: ("/grpc.health.v1.Health/Check", reapi.msg("grpc.health.v1.HealthCheckRequest")),
            }
            for sid, (path, req) in ended.items():
                v.headers(sid, h2raw.grpc_headers(path))
                v.data(sid, h2raw.grpc_message(req.SerializeToString()), end_stream=True)
            # Mid-request: a batch and an upload cut inside their first message, an action
            # result whose message came whole but whose stream never ended.
            lost_batch, lost_upload = os.urandom(MIB), os.urandom(MIB)
            breq = reapi.msg("BatchUpdateBlobsRequest")
            item = breq.requests.add()
            item.digest.CopyFrom(digest(lost_batch))
            item.data = lost_batch
            wreq = write_reqs("uploads/%s/blobs/%s/%d" % (uuid.uuid4(), sha(lost_upload),
                                                          len(lost_upload)), lost_upload,
                              chunk=MIB)[0]
            lost_action = os.urandom(32)
            ureq = reapi.msg("UpdateActionResultRequest", action_digest=digest(lost_action),
                             action_result=action_result(files=files[:1]))
            for sid, path, payload in (
                    (15, RE + "ContentAddressableStorage/BatchUpdateBlobs",
                     h2raw.grpc_message(breq.SerializeToString())[:300 << 10]),
                    (17, "/google.bytestream.ByteStream/Write",
                     h2raw.grpc_message(wreq.SerializeToString())[:300 << 10]),
                    (19, RE + "ActionCache/UpdateActionResult",
                     h2raw.grpc_message(ureq.SerializeToString()))):
                v.headers(sid, h2raw.grpc_headers(path))
                v.data_flow(sid, payload)
            # Every answer has begun (HEADERS on each ended stream) and the server holds every
            # call: 7 blocked answers, 3 requests waiting for bytes.
            began = set()
            v.frames_until(lambda f: (f[0] == h2raw.HEADERS and began.add(f[2])) or
                           began >= set(ended), timeout=30)
            self.assertEqual(began, set(ended))
            harness.wait_for(lambda: self.server.metric("ringcas_grpc_calls") == 10,
                             what="ten calls open")
            self.assertGreater(self.server.metric("ringcas_pb_mem_bytes"), 0)
            v.sock.close()  # vanish: no RST_STREAM, no GOAWAY, no END_STREAM

            wait_zero(self.server, GAUGES)
            harness.wait_for(lambda: self.server.metric("ringcas_h2_conns") == 1,
                             what="the vanished connection to close")
            # The calls still working when the client left (the Read sending, the three
            # requests being received) are cancelled and count as UNAVAILABLE; the others had
            # their status when their answers were queued.
            self.assertEqual(self.server.metric("ringcas_grpc_cancels_total") - cancels, 4)
            self.assertEqual(unavailable(self.server), {
                "google.bytestream.ByteStream/Read": 1, "google.bytestream.ByteStream/Write": 1,
                RE[1:] + "ContentAddressableStorage/BatchUpdateBlobs": 1,
                RE[1:] + "ActionCache/UpdateActionResult": 1})
            # The upload cut mid-message is kept for resumption, as after any dropped
            # connection (docs/grpc.md), at what it had taken; it is not a blob.
            self.assertEqual(self.server.metric("ringcas_bs_uploads_parked"), 1)
            st = c.QueryWriteStatus(reapi.msg("google.bytestream.QueryWriteStatusRequest",
                                              resource_name=wreq.resource_name), timeout=30)
            self.assertFalse(st.complete)
            self.assertLess(st.committed_size, 300 << 10)
            # Nothing of the cut requests became visible; everything stored before is whole.
            self.assertEqual(missing(c, [lost_batch, lost_upload]),
                             [sha(lost_batch), sha(lost_upload)])
            with self.assertRaises(grpc.RpcError) as cm:
                c.GetActionResult(reapi.msg("GetActionResultRequest",
                                            action_digest=digest(lost_action)), timeout=30)
            self.assertEqual((cm.exception.code(), cm.exception.details()),
                             (SC.NOT_FOUND, "no action result for this action"))
            self.assertEqual(read_blob(c, big), big)
            got = c.BatchReadBlobs(reapi.msg("BatchReadBlobsRequest", digests=[digest(mid)]),
                                   timeout=30).responses
            self.assertEqual((got[0].status.code, got[0].data), (0, mid))
            self.assertEqual(c.GetActionResult(reapi.msg("GetActionResultRequest",
                                                         action_digest=digest(action)),
                                               timeout=30), ar)
            pages = list(c.GetTree(reapi.msg("GetTreeRequest", root_digest=digest(rb)), timeout=30))
            self.assertEqual([d.SerializeToString() for p in pages for d in p.directories],
                             [rb] + leaves)
        finally:
            c.close()
        self.server.wait_quiet(extra=GAUGES + ("h2_conns",))
        # The parked upload is aborted by the drain at tearDownClass (exit status 0).


class CompressedWrongDigest(harness.ServerTestCase):
    """zstd uploads over gRPC are verified after decompression, as HTTP's are
    (test_http_cache.py): a valid zstd stream of other bytes, of the named size or not, is
    INVALID_ARGUMENT naming the mismatch, and leaves nothing visible."""

    def test_valid_zstd_of_other_bytes_stores_nothing(self):
        c = reapi.Client(self.server.address)
        try:
            real, other, longer = os.urandom(5000), os.urandom(5000), os.urandom(5001)
            cz = zstandard.ZstdCompressor()
            req = reapi.msg("BatchUpdateBlobsRequest")
            for data in (other, longer, real):
                r = req.requests.add(compressor=1)
                r.digest.CopyFrom(digest(real))
                r.data = cz.compress(data)
            resp = c.BatchUpdateBlobs(req, timeout=30).responses
            self.assertEqual([(r.status.code, r.status.message) for r in resp], [
                (SC.INVALID_ARGUMENT.value[0], "digest mismatch: the data does not hash to its name"),
                (SC.INVALID_ARGUMENT.value[0], "size mismatch: the data is not the named size"),
                (0, "")])
            # The last one stored it: a wrong stream for a present blob ends early and harms it
            # not; for an absent one it is refused.
            fresh = os.urandom(5000)
            got = []
            for name_of, body in ((real, other), (fresh, other), (fresh, longer)):
                name = "uploads/%s/compressed-blobs/zstd/%s/%d" % (uuid.uuid4(), sha(name_of),
                                                                  len(name_of))
                try:
                    got.append(c.Write(iter(write_reqs(name, cz.compress(body))),
                                       timeout=30).committed_size)
                except grpc.RpcError as e:
                    got.append((e.code(), e.details()))
            self.assertEqual(got, [-1, (SC.INVALID_ARGUMENT, "commit: digest mismatch: the data "
                                        "does not hash to its name"),
                                   (SC.INVALID_ARGUMENT, "upload: size mismatch: the data is "
                                    "not the named size")])
            self.assertEqual(missing(c, [real, fresh, other, longer]),
                             [sha(fresh), sha(other), sha(longer)])
            self.assertEqual(read_blob(c, real), real)
        finally:
            c.close()
        self.server.wait_quiet(extra=GAUGES + UPLOADS + ("h2_conns",))


def fcs_patched(frame, size):
    """<frame> (one zstd frame with a declared content size) with the Frame_Content_Size field
    (RFC 8878 §3.1.1.1.4) rewritten to <size>, of the field's own width; everything else, the
    content checksum included, as it was."""
    fhd = frame[4]
    flag, single, did = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    assert flag or single, "no content size"
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[did]
    width = (1, 2, 4, 8)[flag]
    return frame[:at] + (size - (256 if width == 2 else 0)).to_bytes(width, "little") + \
        frame[at + width:]


SKIPPABLE = b"\x50\x2a\x4d\x18" + (64 << 10).to_bytes(4, "little") + b"\0" * (64 << 10)


class CompressedBadStreams(harness.ServerTestCase):
    """The zstd column of the matrix, through each entry point that takes zstd (a
    BatchUpdateBlobs entry, a compressed-blobs ByteStream.Write, an HTTP PUT with
    Content-Encoding: zstd to /cas/ and /ac/): bytes that are not zstd, a frame cut short
    (inside a block, in its header, in its checksum), a Frame_Content_Size that is not what
    the frame holds (one more, one less), a valid frame followed by bytes that are not zstd, a
    frame that decodes past the named size (a bomb), and skippable frames that decode to
    nothing, a few bytes or a flood. Each is refused with the documented status and a message
    that names the fault; nothing becomes visible, the /ac/ value stored before is intact,
    every gauge returns to zero, and the same blob uploaded correctly afterwards through the
    same entry point is stored whole. A client gone mid-way through a zstd body leaves
    nothing either."""

    server_args = ("--max-size", "1GiB")
    server_cores = 1

    MALFORMED = "malformed zstd stream (corrupt, or its last frame cut short)"
    SIZE = "size mismatch: the data is not the named size"

    def bad_streams(self, data):
        """{case: (body, where gRPC's Write finds the fault, gRPC message)}."""
        good = zstandard.ZstdCompressor(write_checksum=True).compress(data)
        bomb = zstandard.ZstdCompressor().compress(data + b"\0" * (8 * MIB))
        return {
            "not zstd at all": (b"not zstd at all", "upload", self.MALFORMED),
            "cut in a block": (good[:len(good) // 2], "commit", self.MALFORMED),
            "cut in the header": (good[:6], "commit", self.MALFORMED),
            "cut in the checksum": (good[:-1], "commit", self.MALFORMED),
            "content size one more": (fcs_patched(good, len(data) + 1), "upload", self.MALFORMED),
            "content size one less": (fcs_patched(good, len(data) - 1), "upload", self.MALFORMED),
            "bytes after the frame": (good + b"junk", "upload", self.MALFORMED),
            "decodes past the size": (bomb, "upload", self.SIZE),
            "skippable frames only": (SKIPPABLE, "commit", self.SIZE),
        }

    def test_every_bad_zstd_stream_is_named_and_stores_nothing(self):
        self.maxDiff = None
        srv = self.server
        c = reapi.Client(srv.address)
        try:
            # One blob per entry point, so each one's correct upload at the end is its own.
            blobs = {k: (os.urandom(1000) * 300)[:300000] for k in ("batch", "write", "http")}
            before = os.urandom(3000)
            ac_key = "/i/ac/" + sha(b"zstd action")
            self.assertEqual(http(srv.port, "PUT", ac_key, before)[0], 201)
            got, want = {}, {}
            for case, (body, where, said) in self.bad_streams(blobs["batch"]).items():
                req = reapi.msg("BatchUpdateBlobsRequest")
                req.requests.add(digest=digest(blobs["batch"]), data=body, compressor=1)
                r = c.BatchUpdateBlobs(req, timeout=30).responses[0]
                got["batch", case] = (r.status.code, r.status.message)
                want["batch", case] = (SC.INVALID_ARGUMENT.value[0], said)
            for case, (body, where, said) in self.bad_streams(blobs["write"]).items():
                d = blobs["write"]
                name = "uploads/%s/compressed-blobs/zstd/%s/%d" % (uuid.uuid4(), sha(d), len(d))
                try:
                    got["write", case] = c.Write(iter(write_reqs(name, body)),
                                                 timeout=30).committed_size
                except grpc.RpcError as e:
                    got["write", case] = (e.code(), e.details())
                want["write", case] = (SC.INVALID_ARGUMENT, where + ": " + said)
            for case, (body, where, said) in self.bad_streams(blobs["http"]).items():
                zstd = ["Content-Encoding: zstd"]
                got["cas", case] = http(srv.port, "PUT", "/cas/" + sha(blobs["http"]), body,
                                        headers=zstd)
                want["cas", case] = (400, b"malformed zstd body\n" if said == self.MALFORMED
                                     else b"digest mismatch: body does not hash to the name\n")
                if said == self.MALFORMED:  # the others are values an /ac/ entry may hold
                    got["ac", case] = http(srv.port, "PUT", ac_key, body, headers=zstd)
                    want["ac", case] = (400, b"malformed zstd body\n")
            # A compressed Write of skippable frames past twice the size plus 1 MiB ends as
            # they arrive, not when its client stops sending.
            d = blobs["write"]
            name = "uploads/%s/compressed-blobs/zstd/%s/%d" % (uuid.uuid4(), sha(d), len(d))
            flood = (reapi.msg("google.bytestream.WriteRequest", resource_name=name if i == 0
                               else "", write_offset=i * len(SKIPPABLE), data=SKIPPABLE)
                     for i in range(200 * MIB // len(SKIPPABLE)))
            try:
                got["write", "a flood of skippable frames"] = c.Write(flood, timeout=60)
            except grpc.RpcError as e:
                got["write", "a flood of skippable frames"] = (e.code(), e.details())
            want["write", "a flood of skippable frames"] = (SC.INVALID_ARGUMENT,
                                                            "upload: " + self.SIZE)
            self.assertEqual(got, want)
            # A client gone mid-way through a zstd body: closed, or reset.
            body = zstandard.ZstdCompressor().compress(blobs["http"])
            for reset in (False, True):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(request("PUT", "/cas/" + sha(blobs["http"]), headers=[
                    "Content-Encoding: zstd", "Content-Length: %d" % len(body)]) +
                    body[:len(body) // 2])
                harness.wait_for(lambda: srv.metric("ringcas_blob_uploads") == 1,
                                 what="the upload under way")
                s.close()
            # Nothing became visible; the /ac/ value is the one stored before.
            wait_zero(srv, GAUGES + UPLOADS)
            self.assertEqual(missing(c, list(blobs.values())),
                             [sha(b) for b in blobs.values()])
            self.assertEqual(http(srv.port, "GET", "/cas/" + sha(blobs["http"]))[0], 404)
            self.assertEqual(http(srv.port, "GET", ac_key), (200, before))
            # The same blobs, uploaded correctly through the same entry points.
            cz = zstandard.ZstdCompressor(write_checksum=True)
            req = reapi.msg("BatchUpdateBlobsRequest")
            req.requests.add(digest=digest(blobs["batch"]), data=cz.compress(blobs["batch"]),
                             compressor=1)
            self.assertEqual(c.BatchUpdateBlobs(req, timeout=30).responses[0].status.code, 0)
            d = blobs["write"]
            name = "uploads/%s/compressed-blobs/zstd/%s/%d" % (uuid.uuid4(), sha(d), len(d))
            z = cz.compress(d)
            self.assertEqual(c.Write(iter(write_reqs(name, z)), timeout=30).committed_size,
                             len(z))
            self.assertEqual(http(srv.port, "PUT", "/cas/" + sha(blobs["http"]),
                                  cz.compress(blobs["http"]),
                                  headers=["Content-Encoding: zstd"]), (201, b""))
            self.assertEqual(missing(c, list(blobs.values())), [])
            for b in blobs.values():
                self.assertEqual(read_blob(c, b), b)
        finally:
            c.close()
        srv.wait_quiet(extra=GAUGES + UPLOADS + ("h2_conns",))


class MalformedFields(harness.ServerTestCase):
    """Each CAS method's refusal of a malformed field names the field, as ActionCache's and
    GetTree's do: batch entries said a bare "invalid argument" (or "not supported"), and a
    digest function other than SHA-256 was "not supported" or "FindMissingBlobsRequest: not
    supported". QueryWriteStatus's malformed names are refused before any lookup."""

    def test_refusals_name_the_field_at_fault(self):
        c = reapi.Client(self.server.address)
        try:
            stored = os.urandom(3000)
            self.assertEqual(batch_update(c, [stored]), [(0, "")])
            malformed = "digest: malformed (a hash of 64 hex digits and a size of 0 or more)"
            sha1 = "digest: not supported (SHA-256 only: 64 hex digits)"
            bad = [reapi.msg("Digest", hash="nothex", size_bytes=1),
                   reapi.msg("Digest", hash=sha(stored), size_bytes=-1),
                   reapi.msg("Digest", hash="ab" * 20, size_bytes=1),  # SHA-1's length
                   digest(stored)]
            req = reapi.msg("BatchReadBlobsRequest", digests=bad)
            self.assertEqual([(r.status.code, r.status.message, r.data)
                              for r in c.BatchReadBlobs(req, timeout=30).responses],
                             [(3, malformed, b""), (3, malformed, b""), (3, sha1, b""),
                              (0, "", stored)])
            req = reapi.msg("BatchUpdateBlobsRequest")
            for d in bad[:3]:
                req.requests.add(digest=d, data=b"x")
            req.requests.add(digest=digest(b"y"), data=b"y", compressor=2)  # DEFLATE
            self.assertEqual([(r.status.code, r.status.message)
                              for r in c.BatchUpdateBlobs(req, timeout=30).responses],
                             [(3, malformed), (3, malformed), (3, sha1),
                              (3, "compressor: not supported (IDENTITY or ZSTD)")])
            for method in ("FindMissingBlobs", "BatchUpdateBlobs", "BatchReadBlobs"):
                with self.assertRaises(grpc.RpcError) as cm:
                    getattr(c, method)(reapi.msg(method + "Request", digest_function=2),
                                       timeout=30)  # SHA1
                self.assertEqual((cm.exception.code(), cm.exception.details()),
                                 (SC.INVALID_ARGUMENT, "digest_function: not supported"), method)
            h = "ab" * 32
            for name, said in (
                    ("", "resource name: empty segment or too many segments"),
                    ("blobs/%s/1" % h, "resource name: expected uploads/{uuid}/"),
                    ("uploads/u/blobs/nothex/1", "resource name: malformed hash"),
                    ("uploads/u/blobs/%s/-1" % h, "resource name: malformed size"),
                    ("uploads/u/compressed-blobs/brotli/%s/1" % h,
                     "resource name: compressor not supported (only zstd)")):
                with self.assertRaises(grpc.RpcError) as cm:
                    c.QueryWriteStatus(reapi.msg("google.bytestream.QueryWriteStatusRequest",
                                                 resource_name=name), timeout=30)
                self.assertEqual((cm.exception.code(), cm.exception.details()),
                                 (SC.INVALID_ARGUMENT, said), name)
            # Nothing was stored, and what was is whole.
            self.assertEqual(missing(c, [b"x", b"y"]), [sha(b"x"), sha(b"y")])
            self.assertEqual(read_blob(c, stored), stored)
        finally:
            c.close()
        self.server.wait_quiet(extra=GAUGES + UPLOADS + ("h2_conns",))


class VanishedHttpClient(harness.ServerTestCase):
    """Answers built in the server's memory rather than streamed from a blob: an /ac/ value
    that decodes as an ActionResult larger than a chunk is gathered into the core's message
    memory and checked before a byte is sent; /metrics is rendered whole; a large plain value
    is streamed with the engine's reader open. A client that goes while the answer is built,
    or after reading a little of it (close, or reset), must leave nothing held."""

    server_cores = 1

    def test_a_client_gone_mid_response_of_a_built_answer_releases_it(self):
        srv = self.server
        out = os.urandom(2000)
        self.assertEqual(http(srv.port, "PUT", "/cas/" + sha(out), out)[0], 201)
        ar = reapi.msg("ActionResult", exit_code=0, stdout_raw=os.urandom(3 * MIB))
        ar.output_files.add(path="out", digest=digest(out))
        value = ar.SerializeToString()
        key = "/i/ac/" + sha(b"action")
        self.assertEqual(http(srv.port, "PUT", key, value)[0], 201)
        plain = os.urandom(8 * MIB)
        self.assertEqual(http(srv.port, "PUT", "/plain/big", plain)[0], 201)
        # Gone at once (while the answer is gathered and checked, or rendered) or after its
        # first KiB; with a FIN or a reset.
        for path in (key, "/metrics", "/plain/big"):
            for wait, reset in ((False, False), (False, True), (True, False), (True, True)):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.sendall(request("GET", path))
                if wait:
                    self.assertTrue(s.recv(1024).startswith(b"HTTP/1.1 200 OK\r\n"), path)
                s.close()
        srv.wait_quiet(extra=GAUGES + ("blob_bufs", "blob_io_in_flight"))
        self.assertEqual(srv.metric("ringcas_pb_mem_bytes"), 0)
        # What was stored is whole, and the server serves.
        self.assertEqual(http(srv.port, "GET", key), (200, value))
        self.assertEqual(http(srv.port, "GET", "/plain/big"), (200, plain))
        self.assertEqual(http(srv.port, "GET", "/healthz"), (200, b"ok\n"))
        srv.wait_quiet(extra=GAUGES)


class FullDisk(unittest.TestCase):
    """The server on a 128 MiB tmpfs of its own (test_diskroom.py's mount namespace) that
    another file fills to the last byte. The store holds one small blob and one action
    result, in its active segment (eviction deletes only sealed ones), so once the budget has
    followed the disk nothing can be evicted to make room: every upload is refused, retryably,
    by every entry point; what was stored stays readable; uploads work again as soon as the
    disk has room. The budget counts the active segment's reserved, unwritten tail as the
    store's (under 1 MiB here) and keeps 1/64 of the volume for other writers (2 MiB of
    128): with the disk full, that leaves the store less than it holds. (On a 32 MiB volume
    the tail outweighs the 512 KiB kept back, and small uploads go into it.)"""

    @classmethod
    def setUpClass(cls):
        if not shutil.which("unshare"):
            raise AssertionError("unshare (util-linux) is missing")
        cls.ns = unshare_command()

    def setUp(self):
        if self.ns is None:
            self.skipTest("this machine allows no mount namespace with a tmpfs")
        self.mount = tempfile.mkdtemp(prefix="ringcas-tmpfs-")
        self.server = harness.Server(
            args=["--max-size", "1GiB", "--segment-size", "1MiB"], cores=1,
            data_dir=os.path.join(self.mount, "data"),
            prefix=namespace_prefix(self.ns, self.mount, 128))
        self.server.start()

    def tearDown(self):
        failed = bool(self._outcome.result.failures or self._outcome.result.errors)
        try:
            if self.server.proc:
                self.server.stop()
        finally:
            self.server.cleanup(keep_log=failed)
            os.rmdir(self.mount)

    def fill(self):
        """Fills the server's file system with another file, to the last byte; returns its
        path as this process sees it."""
        path = "/proc/%d/root%s/filler" % (self.server.proc.pid, self.mount)
        with open(path, "wb", buffering=0) as f:
            try:
                for _ in range(160):
                    f.write(b"\0" * MIB)
            except OSError:
                pass
            try:
                for _ in range(1024):
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        return path

    def uploads(self, c, tag):
        """One upload through every write entry point, each of a value never stored before:
        {entry point: (status, message)} and the values, by entry point."""
        srv = self.server
        vals = {k: os.urandom(1000) + tag for k in
                ("cas", "ac", "plain", "batch", "update", "write", "cas z", "batch z", "write z")}
        z = zstandard.ZstdCompressor().compress
        got = {}
        got["PUT /cas/"] = http(srv.port, "PUT", "/cas/" + sha(vals["cas"]), vals["cas"])
        got["PUT /cas/ zstd"] = http(srv.port, "PUT", "/cas/" + sha(vals["cas z"]),
                                     z(vals["cas z"]), headers=["Content-Encoding: zstd"])
        got["PUT /ac/"] = http(srv.port, "PUT", "/i/ac/" + sha(tag), vals["ac"])
        got["PUT plain"] = http(srv.port, "PUT", "/plain/" + sha(tag), vals["plain"])
        got["BatchUpdateBlobs"] = batch_update(c, [vals["batch"]])[0]
        req = reapi.msg("BatchUpdateBlobsRequest")
        req.requests.add(digest=digest(vals["batch z"]), data=z(vals["batch z"]), compressor=1)
        r = c.BatchUpdateBlobs(req, timeout=30).responses[0]
        got["BatchUpdateBlobs zstd"] = (r.status.code, r.status.message)
        req = reapi.msg("UpdateActionResultRequest", action_digest=digest(tag),
                        action_result=reapi.msg("ActionResult", exit_code=7))
        try:
            c.UpdateActionResult(req, timeout=30)
            got["UpdateActionResult"] = (0, "")
        except grpc.RpcError as e:
            got["UpdateActionResult"] = (e.code().value[0], e.details())
        name = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), sha(vals["write"]), len(vals["write"]))
        try:
            c.Write(iter(write_reqs(name, vals["write"])), timeout=30)
            got["ByteStream.Write"] = (0, "")
        except grpc.RpcError as e:
            got["ByteStream.Write"] = (e.code().value[0], e.details())
        d = vals["write z"]
        name = "uploads/%s/compressed-blobs/zstd/%s/%d" % (uuid.uuid4(), sha(d), len(d))
        try:
            c.Write(iter(write_reqs(name, z(d))), timeout=30)
            got["ByteStream.Write zstd"] = (0, "")
        except grpc.RpcError as e:
            got["ByteStream.Write zstd"] = (e.code().value[0], e.details())
        return got, vals

    def test_every_upload_is_refused_while_the_disk_is_full_and_nothing_is_lost(self):
        self.maxDiff = None
        srv = self.server
        c = reapi.Client(srv.address)
        try:
            kept = os.urandom(5000)
            self.assertEqual(http(srv.port, "PUT", "/cas/" + sha(kept), kept)[0], 201)
            action = os.urandom(32)
            kept_ar = action_result(files=[kept])
            c.UpdateActionResult(reapi.msg("UpdateActionResultRequest",
                                           action_digest=digest(action), action_result=kept_ar),
                                 timeout=30)
            filler = self.fill()
            harness.wait_for(lambda: srv.metric("ringcas_store_budget_bytes") <
                             srv.metric("ringcas_store_disk_bytes"), timeout=20,
                             what="the budget to follow the full disk")
            full = srv.metric("ringcas_blob_full_total")
            store_full = ("store full: no room in the size budget now (eviction catching up, "
                          "the disk full, or uploads in flight near --max-size), retry later")
            got, vals = self.uploads(c, b"full")
            self.assertEqual(got, {
                "PUT /cas/": (507, b"the store is full now, retry later\n"),
                "PUT /cas/ zstd": (507, b"the store is full now, retry later\n"),
                "PUT /ac/": (507, b"the store is full now, retry later\n"),
                "PUT plain": (507, b"the store is full now, retry later\n"),
                "BatchUpdateBlobs": (SC.RESOURCE_EXHAUSTED.value[0], store_full),
                "BatchUpdateBlobs zstd": (SC.RESOURCE_EXHAUSTED.value[0], store_full),
                "UpdateActionResult": (SC.RESOURCE_EXHAUSTED.value[0],
                                       "UpdateActionResult: " + store_full),
                "ByteStream.Write": (SC.RESOURCE_EXHAUSTED.value[0], "upload: " + store_full),
                "ByteStream.Write zstd": (SC.RESOURCE_EXHAUSTED.value[0],
                                          "upload: " + store_full)})
            self.assertGreaterEqual(srv.metric("ringcas_blob_full_total") - full, 9)
            # Nothing of them is visible; what was stored before is whole and still a hit.
            blobs = [vals[k] for k in ("batch", "write", "cas", "cas z", "batch z", "write z")]
            self.assertEqual(missing(c, blobs), [sha(b) for b in blobs])
            self.assertEqual(http(srv.port, "GET", "/i/ac/" + sha(b"full"))[0], 404)
            self.assertEqual(http(srv.port, "GET", "/plain/" + sha(b"full"))[0], 404)
            self.assertEqual(http(srv.port, "GET", "/cas/" + sha(kept)), (200, kept))
            self.assertEqual(c.GetActionResult(reapi.msg("GetActionResultRequest",
                                                         action_digest=digest(action)),
                                               timeout=30), kept_ar)
            self.assertEqual(http(srv.port, "GET", "/readyz"), (200, b"ready\n"))
            wait_zero(srv, GAUGES + UPLOADS)
            # Room again: the budget comes back (to the 128 MiB disk's) at the evictor's next
            # look, and every entry point stores what it is given.
            os.unlink(filler)
            harness.wait_for(lambda: srv.metric("ringcas_store_budget_bytes") > 16 * MIB,
                             timeout=20, what="the budget to come back")
            got, vals = self.uploads(c, b"room")
            self.assertEqual(got, {"PUT /cas/": (201, b""), "PUT /ac/": (201, b""),
                                   "PUT plain": (201, b""), "BatchUpdateBlobs": (0, ""),
                                   "UpdateActionResult": (0, ""), "ByteStream.Write": (0, ""),
                                   "PUT /cas/ zstd": (201, b""), "BatchUpdateBlobs zstd": (0, ""),
                                   "ByteStream.Write zstd": (0, "")})
            blobs = [vals[k] for k in ("batch", "write", "cas", "cas z", "batch z", "write z")]
            self.assertEqual(missing(c, blobs + [kept]), [])
            self.assertEqual(http(srv.port, "GET", "/plain/" + sha(b"room")), (200, vals["plain"]))
            self.assertEqual(http(srv.port, "GET", "/cas/" + sha(kept)), (200, kept))
        finally:
            c.close()
        srv.wait_quiet(extra=GAUGES + UPLOADS + ("h2_conns",))
        self.assertEqual(srv.metric("ringcas_blob_segments_abandoned_total"), 0)


if __name__ == "__main__":
    unittest.main()
