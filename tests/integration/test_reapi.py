"""The REAPI storage services and ByteStream on the real server, with grpcio: every method,
every error code the services promise (docs/grpc.md), compressed reads and writes,
resumable uploads, deadlines, cancellation mid-read and mid-write, 200 concurrent calls.
Every scenario ends with the server's calls, pieces, readers and uploads back to zero."""

import hashlib
import io
import http.client
import os
import threading
import time
import unittest
import uuid

import grpc
import zstandard

import h2raw
import harness
import reapi

GAUGES = ("h2_streams", "grpc_calls", "grpc_segs", "grpc_slices", "grpc_pins", "pb_mem_bytes",
          "bs_readers", "bs_uploads")
SC = grpc.StatusCode


def digest(data):
    return reapi.msg("Digest", hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def blob_name(data, instance="", compressed=False, upload=None):
    d = digest(data)
    parts = [instance] if instance else []
    if upload:
        parts += ["uploads", upload]
    parts += ["compressed-blobs", "zstd"] if compressed else ["blobs"]
    parts += [d.hash, str(d.size_bytes)]
    return "/".join(parts)


def unzstd(data):
    """Decompresses a zstd stream of any number of frames."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return reader.read()


def write_reqs(name, data, chunk=64 << 10, offset=0, finish=True):
    reqs = []
    pos = 0
    while True:
        piece = data[pos:pos + chunk]
        last = pos + chunk >= len(data)
        r = reapi.msg("google.bytestream.WriteRequest", write_offset=offset + pos, data=piece,
                      finish_write=finish and last)
        if pos == 0:
            r.resource_name = name
        reqs.append(r)
        pos += chunk
        if last:
            return reqs


def wait_zero(server, names, timeout=10.0):
    """Waits until the gauges <names> (ringcas_ prefix omitted) are zero on every core, while
    connections may stay open."""
    def zero():
        samples = harness.parse_metrics(server.metrics_text())
        left = {n: sum(v for m, _, v in samples if m == "ringcas_" + n) for n in names}
        return all(v == 0 for v in left.values()) or None
    harness.wait_for(zero, timeout=timeout, what="gauges %s to return to zero" % (names,))


class ReapiCase(harness.ServerTestCase):
    def setUp(self):
        self.c = reapi.Client(self.server.address)

    def tearDown(self):
        self.c.close()
        self.server.wait_quiet(extra=GAUGES + ("h2_conns",))

    def code(self, fn, *args, **kw):
        kw.setdefault("timeout", 30)
        with self.assertRaises(grpc.RpcError) as cm:
            r = fn(*args, **kw)
            if hasattr(r, "__iter__") and not isinstance(r, (bytes, str)):
                list(r)
        return cm.exception.code(), cm.exception.details()

    def write(self, data, compressed=False, instance="", chunk=64 << 10):
        body = zstandard.ZstdCompressor().compress(data) if compressed else data
        name = blob_name(data, instance, compressed, upload=str(uuid.uuid4()))
        return self.c.Write(iter(write_reqs(name, body, chunk)), timeout=60).committed_size

    def read(self, data, compressed=False, offset=0, limit=0, instance=""):
        name = blob_name(data, instance, compressed)
        req = reapi.msg("google.bytestream.ReadRequest", resource_name=name, read_offset=offset,
                        read_limit=limit)
        out = b"".join(r.data for r in self.c.Read(req, timeout=60))
        return unzstd(out) if compressed else out

    def missing(self, blobs, instance=""):
        req = reapi.msg("FindMissingBlobsRequest", instance_name=instance,
                        blob_digests=[digest(b) for b in blobs])
        resp = self.c.FindMissingBlobs(req, timeout=30)
        return [(d.hash, d.size_bytes) for d in resp.missing_blob_digests]

    def batch_update(self, blobs, zstd=False):
        req = reapi.msg("BatchUpdateBlobsRequest")
        for b in blobs:
            r = req.requests.add()
            r.digest.CopyFrom(digest(b))
            r.data = zstandard.ZstdCompressor().compress(b) if zstd else b
            r.compressor = 1 if zstd else 0
        return self.c.BatchUpdateBlobs(req, timeout=30).responses


class Cas(ReapiCase):
    def test_find_missing_is_exact_and_knows_the_empty_blob(self):
        a, b = os.urandom(100), os.urandom(200)
        self.assertEqual(self.missing([b"", a, b]), [(digest(a).hash, 100), (digest(b).hash, 200)])
        self.write(a)
        self.assertEqual(self.missing([b"", a, b]), [(digest(b).hash, 200)])
        # The size is part of the key.
        req = reapi.msg("FindMissingBlobsRequest",
                        blob_digests=[reapi.msg("Digest", hash=digest(a).hash, size_bytes=101)])
        self.assertEqual(len(self.c.FindMissingBlobs(req, timeout=30).missing_blob_digests), 1)

    def test_find_missing_refuses_malformed_digests(self):
        for d in (reapi.msg("Digest", hash="zz" * 32, size_bytes=1),
                  reapi.msg("Digest", hash="ab", size_bytes=1),
                  reapi.msg("Digest", hash=reapi.EMPTY_SHA256, size_bytes=-1)):
            req = reapi.msg("FindMissingBlobsRequest", blob_digests=[d])
            code, _ = self.code(self.c.FindMissingBlobs, req)
            self.assertEqual(code, SC.INVALID_ARGUMENT)
        req = reapi.msg("FindMissingBlobsRequest", digest_function=9)  # BLAKE3
        self.assertEqual(self.code(self.c.FindMissingBlobs, req)[0], SC.INVALID_ARGUMENT)

    def test_find_missing_with_a_thousand_digests(self):
        blobs = [os.urandom(32) for _ in range(1000)]
        self.batch_update(blobs[:500])
        missing = self.missing(blobs)
        self.assertEqual(len(missing), 500)
        self.assertEqual(set(missing), {(digest(b).hash, 32) for b in blobs[500:]})

    def test_batch_update_answers_per_blob(self):
        good, zstd_one = os.urandom(1000), b"z" * 5000
        req = reapi.msg("BatchUpdateBlobsRequest")
        for data, d, comp in ((good, digest(good), 0),
                              (b"liar", digest(b"lies"), 0),
                              (zstandard.ZstdCompressor().compress(zstd_one), digest(zstd_one), 1),
                              (b"x", reapi.msg("Digest", hash="nothex", size_bytes=1), 0),
                              (b"y", digest(b"y"), 2)):  # DEFLATE: not supported
            r = req.requests.add()
            r.digest.CopyFrom(d)
            r.data = data
            r.compressor = comp
        resp = self.c.BatchUpdateBlobs(req, timeout=30).responses
        self.assertEqual([r.status.code for r in resp], [0, 3, 0, 3, 3])
        self.assertIn("digest", resp[1].status.message)
        self.assertEqual(self.missing([good, zstd_one, b"liar", b"lies"]),
                         [(digest(b"liar").hash, 4), (digest(b"lies").hash, 4)])
        # Present blobs are fine to upload again.
        self.assertEqual([r.status.code for r in self.batch_update([good, b""])], [0, 0])
        # Data of another length than the digest names is a size mismatch, whatever the
        # size named: a huge one was "store full" (RESOURCE_EXHAUSTED, which clients retry).
        req = reapi.msg("BatchUpdateBlobsRequest")
        for size in (2 ** 62, 999, 1001):
            r = req.requests.add()
            r.digest.hash = digest(good).hash
            r.digest.size_bytes = size
            r.data = good
        resp = self.c.BatchUpdateBlobs(req, timeout=30).responses
        self.assertEqual([r.status.code for r in resp], [3, 3, 3])
        self.assertEqual({r.status.message for r in resp},
                         {"size mismatch: the data is not the named size"})

    def test_batch_read_per_blob_and_zstd(self):
        a, b = os.urandom(3000), b"compressible " * 1000
        self.batch_update([a, b])
        req = reapi.msg("BatchReadBlobsRequest", digests=[digest(a), digest(b"nope"), digest(b),
                                                          digest(b"")])
        resp = self.c.BatchReadBlobs(req, timeout=30).responses
        self.assertEqual([r.status.code for r in resp], [0, 5, 0, 0])
        self.assertEqual(resp[0].data, a)
        self.assertEqual(resp[2].data, b)
        self.assertEqual(resp[3].data, b"")
        req.acceptable_compressors.append(1)
        resp = self.c.BatchReadBlobs(req, timeout=30).responses
        self.assertEqual(resp[2].compressor, 1)
        self.assertEqual(unzstd(resp[2].data), b)
        self.assertEqual(unzstd(resp[0].data), a)

    def test_batch_answers_echo_each_digest_in_order(self):
        # Empty batches answer OK with no responses.
        self.assertEqual(list(self.batch_update([])), [])
        resp = self.c.BatchReadBlobs(reapi.msg("BatchReadBlobsRequest"), timeout=30).responses
        self.assertEqual(list(resp), [])
        blobs = [os.urandom(100 + i) for i in range(5)]
        req = reapi.msg("BatchUpdateBlobsRequest")
        for i, b in enumerate(blobs):
            r = req.requests.add()
            r.digest.CopyFrom(digest(b))
            r.data = b if i != 2 else b"wrong"
        resp = self.c.BatchUpdateBlobs(req, timeout=30).responses
        self.assertEqual([(r.digest.hash, r.digest.size_bytes) for r in resp],
                         [(d.digest.hash, d.digest.size_bytes) for d in req.requests])
        self.assertEqual([(r.status.code, r.status.message == "") for r in resp],
                         [(0, True), (0, True), (3, False), (0, True), (0, True)])
        digests = [digest(b) for b in blobs]
        req = reapi.msg("BatchReadBlobsRequest", digests=digests, acceptable_compressors=[1])
        resp = self.c.BatchReadBlobs(req, timeout=30).responses
        self.assertEqual([(r.digest.hash, r.digest.size_bytes) for r in resp],
                         [(d.hash, d.size_bytes) for d in digests])
        self.assertEqual([(r.status.code, r.status.message == "", r.compressor) for r in resp],
                         [(0, True, 1), (0, True, 1), (5, False, 0), (0, True, 1), (0, True, 1)])
        self.assertEqual(resp[2].data, b"")
        self.assertEqual([unzstd(r.data) for i, r in enumerate(resp) if i != 2],
                         [b for i, b in enumerate(blobs) if i != 2])

    def test_batch_read_of_4_mib_with_zstd_accepted_answers_identity(self):
        """A random blob at the batch limit has a zstd form a few hundred bytes larger
        (raw-block frames): accepting zstd must not cost the blob. It was INVALID_ARGUMENT "size
        mismatch: the data is not the named size"; now its identity bytes, compressor
        IDENTITY, while a compressible blob in the same batch still comes as zstd."""
        big, text = os.urandom((4 << 20) - 100), b"compressible " * 7 + b"x" * 9  # 100 bytes
        self.write(big)
        self.batch_update([text])
        req = reapi.msg("BatchReadBlobsRequest", digests=[digest(big), digest(text)],
                        acceptable_compressors=[1])
        resp = self.c.BatchReadBlobs(req, timeout=30).responses
        self.assertEqual([(r.status.code, r.status.message) for r in resp], [(0, ""), (0, "")])
        self.assertEqual((resp[0].compressor, len(resp[0].data)), (0, len(big)))
        self.assertEqual(resp[0].data, big)
        self.assertEqual((resp[1].compressor, unzstd(resp[1].data)), (1, text))
        wait_zero(self.server, GAUGES)

    def test_batch_read_over_the_limit(self):
        LIMIT = "digests exceed the 4 MiB batch limit: invalid argument"
        big = reapi.msg("Digest", hash="ab" * 32, size_bytes=3 << 20)
        req = reapi.msg("BatchReadBlobsRequest", digests=[big, big])
        self.assertEqual(self.code(self.c.BatchReadBlobs, req),
                         (SC.INVALID_ARGUMENT, LIMIT))
        # Sizes whose sum wraps past 2^64 to a few bytes are over the limit too: they were
        # taken, and answered NOT_FOUND blob by blob.
        huge = reapi.msg("Digest", hash="ab" * 32, size_bytes=(1 << 63) - 1)
        req = reapi.msg("BatchReadBlobsRequest",
                        digests=[huge, huge, reapi.msg("Digest", hash="cd" * 32, size_bytes=2)])
        self.assertEqual(self.code(self.c.BatchReadBlobs, req),
                         (SC.INVALID_ARGUMENT, LIMIT))


class ByteStream(ReapiCase):
    def test_write_then_read_small_and_large(self):
        for size in (0, 1, 1000, 300_000, 5 << 20):
            data = os.urandom(size)
            self.assertEqual(self.write(data), size)
            self.assertEqual(self.read(data), data)

    def test_compressed_write_and_reads_both_ways(self):
        data = (b"build output " * 40000) + os.urandom(70000)
        self.assertEqual(self.write(data, compressed=True),
                         len(zstandard.ZstdCompressor().compress(data)))
        self.assertEqual(self.read(data), data)
        self.assertEqual(self.read(data, compressed=True), data)
        self.assertEqual(self.read(data, compressed=True, offset=300_001), data[300_001:])
        other = os.urandom(100_000)
        self.write(other)
        self.assertEqual(self.read(other, compressed=True), other)

    def test_read_offset_and_limit(self):
        data = os.urandom(600_000)
        self.write(data)
        self.assertEqual(self.read(data, offset=1000), data[1000:])
        self.assertEqual(self.read(data, offset=1000, limit=10), data[1000:1010])
        self.assertEqual(self.read(data, offset=299_990, limit=300_000), data[299_990:599_990])
        self.assertEqual(self.read(data, offset=600_000), b"")
        for off, lim in ((600_001, 0), (-1, 0), (0, -1)):
            req = reapi.msg("google.bytestream.ReadRequest", resource_name=blob_name(data),
                            read_offset=off, read_limit=lim)
            self.assertEqual(self.code(self.c.Read, req)[0], SC.OUT_OF_RANGE, (off, lim))
        req = reapi.msg("google.bytestream.ReadRequest",
                        resource_name=blob_name(data, compressed=True), read_limit=5)
        self.assertEqual(self.code(self.c.Read, req)[0], SC.INVALID_ARGUMENT)

    def test_reads_at_every_piece_boundary_are_exact(self):
        # Random chunks go out a 128 KiB raw block per message, several messages per send,
        # read ahead: every offset near a block or chunk boundary gives the exact bytes.
        data = os.urandom((1 << 20) + 5000)
        self.write(data)
        for k in range(0, 10):
            for d in (-1, 0, 1):
                off = k * (128 << 10) + d
                if off < 0 or off > len(data):
                    continue
                self.assertEqual(self.read(data, offset=off), data[off:], off)
                self.assertEqual(self.read(data, offset=off, limit=200_000),
                                 data[off:off + 200_000], off)
                self.assertEqual(self.read(data, compressed=True, offset=off), data[off:], off)
        wait_zero(self.server, GAUGES)

    def test_read_errors(self):
        req = reapi.msg("google.bytestream.ReadRequest", resource_name=blob_name(b"never stored"))
        self.assertEqual(self.code(self.c.Read, req)[0], SC.NOT_FOUND)
        for name in ("blobs/xyz/1", "blobs/%s" % reapi.EMPTY_SHA256, "nothing",
                     "blobs/sha1/%s/0" % ("a" * 40), "compressed-blobs/brotli/%s/0" % reapi.EMPTY_SHA256,
                     "uploads/u/blobs/%s/0" % reapi.EMPTY_SHA256):
            req = reapi.msg("google.bytestream.ReadRequest", resource_name=name)
            self.assertEqual(self.code(self.c.Read, req)[0], SC.INVALID_ARGUMENT, name)

    def test_write_of_a_present_blob_ends_early(self):
        data = os.urandom(200_000)
        self.write(data)
        name = blob_name(data, upload="u1")
        self.assertEqual(self.c.Write(iter(write_reqs(name, data)), timeout=30).committed_size,
                         len(data))
        zname = blob_name(data, compressed=True, upload="u2")
        body = zstandard.ZstdCompressor().compress(data)
        self.assertEqual(self.c.Write(iter(write_reqs(zname, body)), timeout=30).committed_size, -1)

    def test_write_errors_leave_nothing_visible(self):
        data = os.urandom(50_000)
        name = blob_name(b"something else" + data, upload="u")
        self.assertEqual(self.code(self.c.Write, iter(write_reqs(name, data)))[0],
                         SC.INVALID_ARGUMENT)  # size mismatch
        name = blob_name(data, upload="u")
        wrong = bytearray(data)
        wrong[100] ^= 1
        code, details = self.code(self.c.Write, iter(write_reqs(name, bytes(wrong))))
        self.assertEqual(code, SC.INVALID_ARGUMENT)
        self.assertIn("digest", details)
        self.assertEqual(len(self.missing([data])), 1)
        # Malformed names, offsets that do not follow, no resource name at all.
        for bad in ("blobs/%s/%d" % (digest(data).hash, len(data)),
                    "uploads/u/blobs/nothex/1", "uploads//blobs/%s/1" % digest(data).hash):
            self.assertEqual(self.code(self.c.Write, iter(write_reqs(bad, data)))[0],
                             SC.INVALID_ARGUMENT, bad)
        reqs = write_reqs(name, data, chunk=10_000)
        reqs[2].write_offset += 1
        self.assertEqual(self.code(self.c.Write, iter(reqs))[0], SC.INVALID_ARGUMENT)
        reqs = write_reqs(name, data)
        reqs[0].resource_name = ""
        self.assertEqual(self.code(self.c.Write, iter(reqs))[0], SC.INVALID_ARGUMENT)
        bad_zstd = blob_name(data, compressed=True, upload="z")
        self.assertEqual(self.code(self.c.Write, iter(write_reqs(bad_zstd, b"not zstd at all")))[0],
                         SC.INVALID_ARGUMENT)
        self.assertEqual(len(self.missing([data])), 1)

    def test_resumable_upload(self):
        data = os.urandom(400_000)
        name = blob_name(data, upload=str(uuid.uuid4()))
        first = write_reqs(name, data[:150_000], chunk=50_000, finish=False)
        self.assertEqual(self.c.Write(iter(first), timeout=30).committed_size, 150_000)
        q = reapi.msg("google.bytestream.QueryWriteStatusRequest", resource_name=name)
        st = self.c.QueryWriteStatus(q, timeout=30)
        self.assertEqual((st.committed_size, st.complete), (150_000, False))
        self.assertEqual(self.server.metric("ringcas_bs_uploads_parked"), 1)
        rest = write_reqs(name, data[150_000:], offset=150_000)
        self.assertEqual(self.c.Write(iter(rest), timeout=30).committed_size, len(data))
        st = self.c.QueryWriteStatus(q, timeout=30)
        self.assertEqual((st.committed_size, st.complete), (len(data), True))
        self.assertEqual(self.read(data), data)
        # Unknown uploads, and a resume at the wrong offset.
        q2 = reapi.msg("google.bytestream.QueryWriteStatusRequest",
                       resource_name=blob_name(b"unknown", upload="x"))
        self.assertEqual(self.code(self.c.QueryWriteStatus, q2)[0], SC.NOT_FOUND)
        other = os.urandom(100_000)
        oname = blob_name(other, upload="y")
        self.c.Write(iter(write_reqs(oname, other[:40_000], finish=False)), timeout=30)
        bad = write_reqs(oname, other[50_000:], offset=50_000)
        self.assertEqual(self.code(self.c.Write, iter(bad))[0], SC.INVALID_ARGUMENT)
        # The parked upload stays (test_reapi_spec.py WrongOffset) and resumes at its size.
        self.assertEqual(self.server.metric("ringcas_bs_uploads_parked"), 1)
        rest = write_reqs(oname, other[40_000:], offset=40_000)
        self.assertEqual(self.c.Write(iter(rest), timeout=30).committed_size, len(other))
        self.assertEqual(self.server.metric("ringcas_bs_uploads_parked"), 0)

    def test_malformed_write_request_bytes(self):
        raw = self.c.raw("/google.bytestream.ByteStream/Write", "su")
        self.assertEqual(self.code(raw, iter([b"\x0a\xff\xff"]))[0], SC.INVALID_ARGUMENT)
        self.assertEqual(self.code(raw, iter([b"\x52\x01a\x52\x01b"]))[0], SC.INVALID_ARGUMENT)
        self.assertEqual(self.code(raw, iter([]))[0], SC.INVALID_ARGUMENT)


class ActionCache(ReapiCase):
    def result_with(self, files=(), tree=None, root_dir=None, stdout=None):
        ar = reapi.msg("ActionResult", exit_code=0)
        for i, f in enumerate(files):
            ar.output_files.add(path="out%d" % i, digest=digest(f))
        if tree is not None:
            od = ar.output_directories.add(path="dir")
            od.tree_digest.CopyFrom(digest(tree))
        if root_dir is not None:
            od = ar.output_directories.add(path="rdir")
            od.root_directory_digest.CopyFrom(digest(root_dir))
        if stdout is not None:
            ar.stdout_digest.CopyFrom(digest(stdout))
        return ar

    def update(self, action, ar, instance="", timeout=30):
        req = reapi.msg("UpdateActionResultRequest", instance_name=instance)
        req.action_digest.CopyFrom(digest(action))
        req.action_result.CopyFrom(ar)
        return self.c.UpdateActionResult(req, timeout=timeout)

    def get(self, action, instance="", timeout=30):
        req = reapi.msg("GetActionResultRequest", instance_name=instance)
        req.action_digest.CopyFrom(digest(action))
        return self.c.GetActionResult(req, timeout=timeout)

    def test_update_and_get_scoped_by_instance(self):
        out, log = os.urandom(1000), b"stdout text"
        self.batch_update([out, log])
        ar = self.result_with(files=[out], stdout=log)
        action = os.urandom(32)
        self.assertEqual(self.update(action, ar, instance="team-a"), ar)
        self.assertEqual(self.get(action, instance="team-a"), ar)
        code, _ = self.code(self.get, action, instance="team-b")
        self.assertEqual(code, SC.NOT_FOUND)
        code, _ = self.code(self.get, action)
        self.assertEqual(code, SC.NOT_FOUND)
        # The newest write wins.
        ar2 = self.result_with(files=[out])
        ar2.exit_code = 3
        self.update(action, ar2, instance="team-a")
        self.assertEqual(self.get(action, instance="team-a").exit_code, 3)

    def test_a_long_instance_name_is_named_in_the_error(self):
        """An instance name over 4096 bytes is INVALID_ARGUMENT "name too long" (docs/grpc.md),
        and the message names instance_name: it used to say "action_digest: name too long",
        sending the reader to a digest that is fine."""
        action, long_name = os.urandom(32), "x" * 4097
        code, details = self.code(self.get, action, instance=long_name)
        self.assertEqual(code, SC.INVALID_ARGUMENT)
        self.assertEqual(details, "instance_name: name too long")
        code, details = self.code(self.update, action, self.result_with(), instance=long_name)
        self.assertEqual(code, SC.INVALID_ARGUMENT)
        self.assertEqual(details, "instance_name: name too long")
        # 4096 bytes is a name like any other.
        self.assertEqual(self.code(self.get, action, instance="x" * 4096)[0], SC.NOT_FOUND)
        # A digest function other than SHA-256 is named as such, not as the digest.
        req = reapi.msg("GetActionResultRequest", digest_function=2)  # SHA1
        req.action_digest.CopyFrom(digest(action))
        code, details = self.code(self.c.GetActionResult, req)
        self.assertEqual(code, SC.INVALID_ARGUMENT)
        self.assertTrue(details.startswith("digest_function: "), details)

    def test_an_instance_name_with_a_nul_byte_is_refused(self):
        """protobuf-c hands strings over NUL-terminated: an instance name "team-a\0x" was
        keyed as "team-a", so a client naming it wrote and read team-a's results. It is
        INVALID_ARGUMENT now, for both methods, and stores nothing (docs/grpc.md)."""
        out = os.urandom(100)
        self.batch_update([out])
        action, ar = os.urandom(32), self.result_with(files=[out])
        code, details = self.code(self.update, action, ar, instance="team-a\0x")
        self.assertEqual(code, SC.INVALID_ARGUMENT)
        self.assertEqual(details, "instance_name: holds a NUL byte")
        self.assertEqual(self.code(self.get, action, instance="team-a")[0], SC.NOT_FOUND)
        self.update(action, ar, instance="team-a")
        code, details = self.code(self.get, action, instance="team-a\0x")
        self.assertEqual(code, SC.INVALID_ARGUMENT)
        self.assertEqual(details, "instance_name: holds a NUL byte")
        self.assertEqual(self.get(action, instance="team-a"), ar)

    def test_result_with_a_missing_output_is_not_found(self):
        present, absent = os.urandom(100), os.urandom(100)
        self.batch_update([present])
        action = os.urandom(32)
        self.update(action, self.result_with(files=[present, absent]))
        code, details = self.code(self.get, action)
        self.assertEqual(code, SC.NOT_FOUND)
        self.assertIn("outputs", details)
        self.batch_update([absent])
        self.assertEqual(len(self.get(action).output_files), 2)

    def test_a_file_without_a_digest_is_not_found(self):
        # REAPI requires an OutputFile's digest (an empty file names the empty blob): a
        # result with a file that names none cannot be restored, and is a miss, in
        # output_files as in a Tree's Directory.
        present = os.urandom(100)
        self.batch_update([present])
        ar = self.result_with(files=[present])
        ar.output_files.add(path="nodigest")
        action = os.urandom(32)
        self.update(action, ar)
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)
        tree = reapi.msg("Tree")
        tree.root.files.add(name="a", digest=digest(present))
        tree.root.files.add(name="b")
        tb = tree.SerializeToString()
        self.batch_update([tb])
        action = os.urandom(32)
        self.update(action, self.result_with(tree=tb))
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)

    def test_tree_outputs_are_checked_file_by_file(self):
        f1, f2 = os.urandom(500), os.urandom(600)
        tree = reapi.msg("Tree")
        tree.root.files.add(name="a", digest=digest(f1))
        sub = tree.children.add()
        sub.files.add(name="b", digest=digest(f2))
        tree.root.directories.add(name="sub", digest=digest(sub.SerializeToString()))
        tb = tree.SerializeToString()
        action = os.urandom(32)
        self.update(action, self.result_with(tree=tb))
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)  # no Tree blob
        self.batch_update([tb, f1])
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)  # f2 missing
        self.batch_update([f2])
        self.assertEqual(self.get(action).output_directories[0].path, "dir")

    def test_a_tree_naming_a_directory_it_does_not_hold_is_not_found(self):
        """The client rebuilds an output directory from its Tree alone, looking each
        DirectoryNode's digest up among the Tree's Directories (REAPI Tree.children: "the
        directories referred to by the root and, recursively, all its children"). A Tree whose
        root names a folder it does not hold, or names one by a malformed digest, was a hit
        with every file present: the client could not rebuild the folder."""
        f1 = os.urandom(100)
        self.batch_update([f1])
        sub = reapi.msg("Directory")
        sub.files.add(name="b", digest=digest(f1))
        tree = reapi.msg("Tree")
        tree.root.files.add(name="a", digest=digest(f1))
        tree.root.directories.add(name="sub", digest=digest(sub.SerializeToString()))
        short = tree.SerializeToString()  # names sub, holds no child
        tree.children.add().CopyFrom(sub)
        whole = tree.SerializeToString()
        tree.root.directories.add(name="bad").digest.hash = "zz"
        bad = tree.SerializeToString()
        extra = reapi.msg("Tree")
        extra.CopyFrom(reapi.cls("Tree").FromString(whole))
        extra.children.add().files.add(name="c", digest=digest(f1))  # named by no one: fine
        self.batch_update([short, whole, bad, extra.SerializeToString()])
        for tb, hit in ((short, False), (whole, True), (bad, False),
                        (extra.SerializeToString(), True)):
            action = os.urandom(32)
            self.update(action, self.result_with(tree=tb))
            if hit:
                self.assertEqual(self.get(action).output_directories[0].path, "dir")
            else:
                self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)

    def test_a_directory_given_both_ways_is_checked_both_ways(self):
        """An OutputDirectory may give its Tree and its root Directory's digest (REAPI 2.3),
        and a client may read either. Only the Tree was checked: with the Tree and its files
        present and the root Directory's blob absent the result was a hit, and the Directory
        blobs behind it were never refreshed."""
        f1, f2 = os.urandom(100), os.urandom(200)
        root, leaf, rb, lb = reapi.two_level_dir(f1, f2, names=("a", "b"))
        tree = reapi.msg("Tree", root=root)
        tree.children.add().CopyFrom(leaf)
        tb = tree.SerializeToString()
        ar = reapi.msg("ActionResult")
        od = ar.output_directories.add(path="dir")
        od.tree_digest.CopyFrom(digest(tb))
        od.root_directory_digest.CopyFrom(digest(rb))
        action = os.urandom(32)
        self.update(action, ar)
        self.batch_update([f1, f2, tb])
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)  # no root Directory
        self.batch_update([rb])
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)  # no leaf Directory
        self.batch_update([lb])
        self.assertEqual(self.get(action), ar)

    def test_a_result_over_4_mib_written_over_http_is_not_found(self):
        """HTTP's PUT /ac/ stores values over 4 MiB (opaque ones, for ccache and the like).
        GetActionResult of one is a miss, as HTTP's GET is (404): it was INVALID_ARGUMENT "size
        mismatch: the data is not the named size", an error about an argument the client got
        right."""
        action = os.urandom(32)
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        conn.request("PUT", "/ac/" + digest(action).hash, body=os.urandom(5 << 20))
        self.assertEqual(conn.getresponse().status, 201)
        conn.close()
        code, details = self.code(self.get, action)
        self.assertEqual(code, SC.NOT_FOUND)
        self.assertIn("over 4 MiB", details)

    def test_a_tree_over_4_mib_is_checked_file_by_file(self):
        """A Tree blob is read piece by piece, one Directory at a time: an output directory of
        36,000 files (a 6 MB Tree, as Bazel uploads for a large tree artifact) is a hit when
        every file is present. The check read each Tree whole, up to 4 MiB, and called a
        larger one missing: such an action was never a hit."""
        blobs = [b"file %d" % i for i in range(100)]
        self.batch_update(blobs)
        tree = reapi.msg("Tree")
        tree.root.files.add(name="top", digest=digest(blobs[0]))
        for i in range(400):
            d = tree.children.add()
            for j in range(90):
                d.files.add(name="%03d-%02d-" % (i, j) + "n" * 90, digest=digest(blobs[j]))
        last = tree.children.add()
        absent = os.urandom(64)
        last.files.add(name="absent", digest=digest(absent))
        tb = tree.SerializeToString()
        self.assertGreater(len(tb), 6_000_000)
        self.write(tb)
        action = os.urandom(32)
        self.update(action, self.result_with(tree=tb))
        # The last Directory names a blob that is not there.
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)
        self.batch_update([absent])
        self.assertEqual(self.get(action).output_directories[0].path, "dir")
        # HTTP's GET /ac/ runs the same check.
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        conn.request("GET", "/ac/" + digest(action).hash)
        r = conn.getresponse()
        self.assertEqual((r.status, r.read()), (200, self.result_with(tree=tb).SerializeToString()))
        conn.close()
        # Deadlines that end the check while the Tree is read close the read and free its
        # memory.
        for ms in range(1, 30, 2):
            try:
                self.get(action, timeout=ms / 1000)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), SC.DEADLINE_EXCEEDED)
        wait_zero(self.server, GAUGES)
        # A file missing in the first child: the check keeps a Tree's keys 4096 at a time and
        # the first batch with a missing file ends the read, so the miss costs a small part of
        # the Tree (it read all 6 MB before the batches).
        early = reapi.msg("Tree")
        early.CopyFrom(tree)
        early.children[0].files[0].digest.CopyFrom(digest(os.urandom(64)))
        eb = early.SerializeToString()
        self.write(eb)
        action = os.urandom(32)
        self.update(action, self.result_with(tree=eb))
        before = self.server.metric("ringcas_blob_read_bytes_total")
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)
        read = self.server.metric("ringcas_blob_read_bytes_total") - before
        self.assertLess(read, len(eb) // 3, "read %d of a %d-byte Tree" % (read, len(eb)))
        # One Directory over 4 MiB is more than the check reads (docs/grpc.md).
        wide = reapi.msg("Tree")
        for j in range(25000):
            wide.root.files.add(name="%05d-" % j + "w" * 90, digest=digest(blobs[j % 100]))
        wb = wide.SerializeToString()
        self.assertGreater(len(wb), 4 << 20)
        self.write(wb)
        action = os.urandom(32)
        self.update(action, self.result_with(tree=wb))
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)

    def test_root_directory_outputs_are_walked(self):
        f1, f2 = os.urandom(50), os.urandom(60)
        _, _, rb, lb = reapi.two_level_dir(f1, f2)
        action = os.urandom(32)
        self.update(action, self.result_with(root_dir=rb))
        self.batch_update([rb, f1, f2])
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)  # leaf missing
        self.batch_update([lb])
        self.get(action)

    def test_root_directory_subtree_that_cannot_be_read_is_not_found(self):
        """A directory under a root Directory output that the client cannot read back makes
        the result incomplete, as a Tree's undecodable Directory does: the walk used to skip
        a child that is present but no Directory, or is named by a malformed digest, and the
        result was a hit whose outputs could not be laid out."""
        f1 = os.urandom(50)
        self.batch_update([f1])
        junk = b"\x0a\xff\xff"  # present in the CAS, but no Directory
        self.batch_update([junk])
        root = reapi.msg("Directory")
        root.files.add(name="f1", digest=digest(f1))
        root.directories.add(name="junk", digest=digest(junk))
        rb = root.SerializeToString()
        self.batch_update([rb])
        action = os.urandom(32)
        self.update(action, self.result_with(root_dir=rb))
        self.assertEqual(self.code(self.get, action)[0], SC.NOT_FOUND)
        root2 = reapi.msg("Directory")
        root2.files.add(name="f1", digest=digest(f1))
        root2.directories.add(name="bad", digest=reapi.msg("Digest", hash="short", size_bytes=3))
        r2b = root2.SerializeToString()
        self.batch_update([r2b])
        action2 = os.urandom(32)
        self.update(action2, self.result_with(root_dir=r2b))
        self.assertEqual(self.code(self.get, action2)[0], SC.NOT_FOUND)
        # Still a hit once every directory under the root reads back.
        ok = reapi.msg("Directory")
        ok.files.add(name="f1", digest=digest(f1))
        okb = ok.SerializeToString()
        self.batch_update([okb])
        action3 = os.urandom(32)
        self.update(action3, self.result_with(root_dir=okb))
        self.get(action3)

    def test_bad_requests(self):
        req = reapi.msg("UpdateActionResultRequest")
        req.action_digest.CopyFrom(digest(b"x"))
        self.assertEqual(self.code(self.c.UpdateActionResult, req)[0], SC.INVALID_ARGUMENT)
        req = reapi.msg("GetActionResultRequest")
        req.action_digest.hash = "short"
        self.assertEqual(self.code(self.c.GetActionResult, req)[0], SC.INVALID_ARGUMENT)

    def test_bad_updates_name_the_field(self):
        """Each refusal of UpdateActionResult names the field at fault, as GetActionResult's
        do (docs/grpc.md): it used to say "UpdateActionResult: invalid argument" for all."""
        def update_error(**fields):
            req = reapi.msg("UpdateActionResultRequest", **fields)
            code, details = self.code(self.c.UpdateActionResult, req)
            self.assertEqual(code, SC.INVALID_ARGUMENT, details)
            return details

        action, ar = digest(os.urandom(32)), self.result_with()
        self.assertEqual(update_error(action_result=ar), "action_digest: invalid argument")
        short = reapi.msg("Digest", hash="short", size_bytes=32)
        self.assertEqual(update_error(action_digest=short, action_result=ar),
                         "action_digest: invalid argument")
        negative = reapi.msg("Digest", hash=action.hash, size_bytes=-1)
        self.assertEqual(update_error(action_digest=negative, action_result=ar),
                         "action_digest: invalid argument")
        self.assertEqual(update_error(action_digest=action), "action_result: invalid argument")
        self.assertEqual(update_error(action_digest=action, action_result=ar, digest_function=2),
                         "digest_function: not supported")  # SHA1
        big = reapi.msg("ActionResult", stdout_raw=b"x" * ((4 << 20) + 1))
        self.assertEqual(update_error(action_digest=action, action_result=big),
                         "action_result: larger than 4 MiB")
        # None of them stored anything: the action has no result.
        code, _ = self.code(self.c.GetActionResult,
                            reapi.msg("GetActionResultRequest", action_digest=action))
        self.assertEqual(code, SC.NOT_FOUND)


class ShardActionCache(ActionCache):
    """--no-ac-check: a shard behind a frontend that checks completeness across every shard
    (bb-storage's completenessChecking over sharded backends) holds results whose outputs are
    on other shards; it answers them as stored. The other ActionCache tests run here too,
    except those that expect the check."""

    server_args = ("--no-ac-check",)

    def test_result_with_a_missing_output_is_not_found(self):
        absent, tree, log = os.urandom(100), os.urandom(300), os.urandom(40)
        action = os.urandom(32)
        ar = self.result_with(files=[absent], tree=tree, stdout=log)
        self.update(action, ar)
        self.assertEqual(self.get(action), ar, "served with none of its outputs here")
        self.assertEqual(self.missing([absent, tree, log]),
                         [(digest(b).hash, len(b)) for b in (absent, tree, log)])

    def test_tree_outputs_are_checked_file_by_file(self):
        pass  # the check is off

    def test_a_file_without_a_digest_is_not_found(self):
        pass  # the check is off: the frontend's to make

    def test_a_tree_over_4_mib_is_checked_file_by_file(self):
        pass  # the check is off

    def test_a_tree_naming_a_directory_it_does_not_hold_is_not_found(self):
        pass  # the check is off

    def test_a_directory_given_both_ways_is_checked_both_ways(self):
        pass  # the check is off

    def test_root_directory_outputs_are_walked(self):
        pass  # the check is off

    def test_root_directory_subtree_that_cannot_be_read_is_not_found(self):
        pass  # the check is off


class Tree(ReapiCase):
    def test_get_tree_pages_breadth_first(self):
        leaves = []
        for i in range(5):
            d = reapi.msg("Directory")
            d.files.add(name="f%d" % i, digest=digest(b"%d" % i))
            leaves.append(d.SerializeToString())
        mid = reapi.msg("Directory")
        for i, lb in enumerate(leaves):
            mid.directories.add(name="l%d" % i, digest=digest(lb))
        mb = mid.SerializeToString()
        root = reapi.msg("Directory")
        root.directories.add(name="m", digest=digest(mb))
        root.directories.add(name="m2", digest=digest(mb))  # the same directory twice
        root.directories.add(name="gone", digest=digest(b"missing dir"))
        rb = root.SerializeToString()
        self.batch_update([rb, mb] + leaves)
        req = reapi.msg("GetTreeRequest", root_digest=digest(rb), page_size=2)
        pages = list(self.c.GetTree(req, timeout=30))
        dirs = [d.SerializeToString() for p in pages for d in p.directories]
        self.assertEqual(dirs, [rb, mb] + leaves)
        self.assertEqual([len(p.directories) for p in pages], [2, 2, 2, 1])
        # Tokens are breadth-first positions of the next directory returned (the missing
        # directory, position 2, has one too).
        self.assertEqual([p.next_page_token for p in pages], ["3", "5", "7", ""])
        req.page_token = "5"
        again = [d.SerializeToString() for p in self.c.GetTree(req, timeout=30) for d in p.directories]
        self.assertEqual(again, leaves[2:])
        req = reapi.msg("GetTreeRequest", root_digest=digest(b"no such root"))
        self.assertEqual(self.code(self.c.GetTree, req)[0], SC.NOT_FOUND)
        req = reapi.msg("GetTreeRequest", root_digest=digest(rb), page_token="x")
        self.assertEqual(self.code(self.c.GetTree, req)[0], SC.INVALID_ARGUMENT)

    def test_a_root_over_4_mib_is_named(self):
        """A root Directory over 4 MiB cannot go out in a GetTreeResponse: RESOURCE_EXHAUSTED
        naming root_digest (gRPC's own code for a message over the limit). It was
        INVALID_ARGUMENT "GetTree: size mismatch: the data is not the named size"."""
        root = reapi.msg("Directory")
        for j in range(25000):
            root.files.add(name="%05d-" % j + "w" * 90, digest=digest(b"%d" % j))
        rb = root.SerializeToString()
        self.assertGreater(len(rb), 4 << 20)
        self.write(rb)
        req = reapi.msg("GetTreeRequest", root_digest=digest(rb))
        code, details = self.code(self.c.GetTree, req)
        self.assertEqual(code, SC.RESOURCE_EXHAUSTED, details)
        self.assertTrue(details.startswith("root_digest: "), details)

    def wide_tree(self, width, children, per_call):
        """Uploads a root of <width> directories, each naming <children> distinct missing
        directories (<per_call> per BatchUpdateBlobs); returns the root's bytes and theirs."""
        mids = []
        for i in range(width):
            d = reapi.msg("Directory")
            for j in range(children):
                d.directories.add(name="l%d" % j, digest=digest(b"missing %d %d" % (i, j)))
            mids.append(d.SerializeToString())
        root = reapi.msg("Directory")
        for i, mb in enumerate(mids):
            root.directories.add(name="m%d" % i, digest=digest(mb))
        for i in range(0, len(mids), per_call):
            self.batch_update(mids[i:i + per_call])
        self.batch_update([root.SerializeToString()])
        return root.SerializeToString(), mids

    def test_get_tree_of_a_wide_tree_returns_every_directory(self):
        # 500 directories under the root, each naming 200 distinct missing ones: the walk's
        # queue (100,001 per call) fills before a page does, so calls end on a full queue.
        rb, mids = self.wide_tree(500, 200, per_call=100)
        got, token, calls = [], "", 0
        while True:
            calls += 1
            self.assertLess(calls, 50, "no progress")
            req = reapi.msg("GetTreeRequest", root_digest=digest(rb), page_token=token)
            pages = list(self.c.GetTree(req, timeout=60))
            got += [d.SerializeToString() for p in pages for d in p.directories]
            token = pages[-1].next_page_token if pages else ""
            if not token:
                break
        self.assertEqual(len(got), 501)
        self.assertEqual(sorted(got), sorted([rb] + mids))

    def test_get_tree_of_a_level_wider_than_a_call_goes_on_to_the_end(self):
        # Six directories of 40,000 missing children each (240,007 positions). A call queues
        # the positions up to 100,000 past its token and visits them; a call resumed past the
        # six found only missing directories there. It used to end RESOURCE_EXHAUSTED "tree
        # too wide" when its queue filled before it could return one directory (a call
        # resumed at the third of three such directories), and the client could not go on:
        # a level of more than 100,000 directories could not be paged through.
        rb, mids = self.wide_tree(6, 40000, per_call=1)
        calls, token = [], ""
        while True:
            self.assertLess(len(calls), 10, "no progress")
            req = reapi.msg("GetTreeRequest", root_digest=digest(rb), page_token=token)
            pages = list(self.c.GetTree(req, timeout=120))
            calls.append(([d.SerializeToString() for p in pages for d in p.directories],
                          [p.next_page_token for p in pages]))
            token = pages[-1].next_page_token
            if not token:
                break
        # Pages of about 2 MiB: one directory of 3 MB each after the first.
        self.assertEqual(calls, [([rb] + mids, ["2", "3", "4", "5", "6", "100001"]),
                                 ([], ["200002"]), ([], [""])])
        # Resumed at the third of three directories of 40,000 (the call that failed).
        rb, mids = self.wide_tree(3, 40000, per_call=1)
        req = reapi.msg("GetTreeRequest", root_digest=digest(rb), page_token="3")
        pages = list(self.c.GetTree(req, timeout=120))
        self.assertEqual([d.SerializeToString() for p in pages for d in p.directories], mids[2:])
        self.assertEqual(pages[-1].next_page_token, "100004")

    def test_get_tree_last_page_has_no_token_and_a_token_past_the_end_is_empty(self):
        sub = reapi.msg("Directory").SerializeToString()  # the empty Directory: the empty blob
        root = reapi.msg("Directory")
        root.directories.add(name="sub", digest=digest(sub))
        rb = root.SerializeToString()
        self.batch_update([rb])
        # Pages that end exactly at the end of the tree: the last one says so (no token).
        req = reapi.msg("GetTreeRequest", root_digest=digest(rb), page_size=1)
        pages = list(self.c.GetTree(req, timeout=30))
        self.assertEqual([p.next_page_token for p in pages], ["1", ""])
        self.assertEqual([d.SerializeToString() for p in pages for d in p.directories], [rb, sub])
        # A token at or past the end (a client that kept an old token) is one empty page.
        for token in ("2", "3", "1000"):
            req = reapi.msg("GetTreeRequest", root_digest=digest(rb), page_token=token)
            pages = list(self.c.GetTree(req, timeout=30))
            self.assertEqual([(len(p.directories), p.next_page_token) for p in pages], [(0, "")])
        req = reapi.msg("GetTreeRequest", root_digest=digest(sub), page_token="1")
        pages = list(self.c.GetTree(req, timeout=30))
        self.assertEqual([(len(p.directories), p.next_page_token) for p in pages], [(0, "")])
        # The server is still serving.
        self.assertEqual(len(list(self.c.GetTree(reapi.msg("GetTreeRequest", root_digest=digest(rb)),
                                                 timeout=30))[0].directories), 2)

    def test_a_malformed_request_names_the_field_at_fault(self):
        """GetTree's INVALID_ARGUMENT names the field, as ActionCache's do: every one used to
        say "GetTree: invalid argument", a bad page_token as a bad root digest."""
        rb = reapi.msg("Directory").SerializeToString()
        for kw, said in ((dict(root_digest=digest(rb), page_token="abc"), "page_token: "),
                         (dict(root_digest=digest(rb), page_token="-1"), "page_token: "),
                         (dict(root_digest=reapi.msg("Digest", hash="ab", size_bytes=1)),
                          "root_digest: "),
                         (dict(root_digest=digest(rb), digest_function=2), "digest_function: ")):
            req = reapi.msg("GetTreeRequest", **kw)
            code, details = self.code(self.c.GetTree, req)
            self.assertEqual(code, SC.INVALID_ARGUMENT, kw)
            self.assertTrue(details.startswith(said), (kw, details))


class Cancellation(ReapiCase):
    def test_deadline_mid_write_aborts_the_upload(self):
        data = os.urandom(300_000)
        name = blob_name(data, upload="slow")
        before = self.server.metric("ringcas_grpc_deadlines_total")

        def slow():
            yield write_reqs(name, data, finish=False)[0]
            time.sleep(1.5)
            yield from write_reqs(name, data)[1:]

        code, _ = self.code(self.c.Write, slow(), timeout=0.5)
        self.assertEqual(code, SC.DEADLINE_EXCEEDED)
        harness.wait_for(lambda: self.server.metric("ringcas_grpc_deadlines_total") > before or
                         self.server.metric("ringcas_grpc_cancels_total") > 0, what="the deadline")
        wait_zero(self.server, GAUGES + ("bs_uploads_parked",))
        self.assertEqual(len(self.missing([data])), 1)

    def test_cancel_mid_read_stops_the_reader(self):
        data = os.urandom(24 << 20)
        self.write(data, chunk=1 << 20)
        req = reapi.msg("google.bytestream.ReadRequest", resource_name=blob_name(data))
        call = self.c.Read(req, timeout=60)
        first = next(call)
        self.assertGreater(len(first.data), 0)
        call.cancel()
        harness.wait_for(lambda: self.server.metric("ringcas_grpc_cancels_total") > 0, what="cancel")
        wait_zero(self.server, GAUGES)

    def test_cancel_mid_write_leaves_nothing(self):
        data = os.urandom(2 << 20)
        name = blob_name(data, upload="cancelled")
        gate = threading.Event()

        def gen():
            reqs = write_reqs(name, data, chunk=256 << 10)
            yield from reqs[:3]
            gate.set()
            time.sleep(30)
            yield from reqs[3:]

        fut = self.c.Write.future(gen(), timeout=60)
        gate.wait(10)
        time.sleep(0.3)
        fut.cancel()
        wait_zero(self.server, GAUGES + ("bs_uploads_parked",))
        self.assertEqual(len(self.missing([data])), 1)

    def test_two_hundred_concurrent_calls(self):
        blobs = [os.urandom(1000 + i) for i in range(50)]
        self.batch_update(blobs)
        futures = []
        for i in range(200):
            b = blobs[i % 50]
            if i % 4 == 0:
                futures.append((self.c.FindMissingBlobs.future(
                    reapi.msg("FindMissingBlobsRequest", blob_digests=[digest(b)]), timeout=60), None))
            elif i % 4 == 1:
                futures.append((self.c.BatchReadBlobs.future(
                    reapi.msg("BatchReadBlobsRequest", digests=[digest(b)]), timeout=60), b))
            elif i % 4 == 2:
                futures.append((self.c.Check.future(
                    reapi.msg("grpc.health.v1.HealthCheckRequest"), timeout=60), None))
            else:
                name = blob_name(b, upload=str(i))
                futures.append((self.c.Write.future(iter(write_reqs(name, b)), timeout=60), None))
        for f, expect in futures:
            r = f.result()
            if expect is not None:
                self.assertEqual(r.responses[0].data, expect)


class DroppedConnection(harness.ServerTestCase):
    """One core, so a new connection finds what the old one left on its core."""

    server_cores = 1

    def test_a_dropped_upload_is_parked_and_resumed(self):
        data = os.urandom(100_000)
        name = blob_name(data, upload="dropped")
        first = write_reqs(name, data[:30_000], finish=False)[0]
        c = h2raw.Conn(self.server.port, window=1 << 20)
        try:
            c.headers(1, h2raw.grpc_headers("/google.bytestream.ByteStream/Write"))
            c.data(1, h2raw.grpc_message(first.SerializeToString()))
            harness.wait_for(lambda: self.server.metric("ringcas_bs_uploads") == 1,
                             what="the upload to begin")
        finally:
            c.close()  # no RST_STREAM, no END_STREAM: the client vanished
        harness.wait_for(lambda: self.server.metric("ringcas_bs_uploads_parked") == 1,
                         what="the upload to be parked")
        client = reapi.Client(self.server.address)
        try:
            q = reapi.msg("google.bytestream.QueryWriteStatusRequest", resource_name=name)
            self.assertEqual(client.QueryWriteStatus(q, timeout=30).committed_size, 30_000)
            rest = write_reqs(name, data[30_000:], offset=30_000)
            self.assertEqual(client.Write(iter(rest), timeout=30).committed_size, len(data))
            req = reapi.msg("google.bytestream.ReadRequest", resource_name=blob_name(data))
            self.assertEqual(b"".join(r.data for r in client.Read(req, timeout=30)), data)
            # Park another one and leave it: the drain at tearDownClass must abort it cleanly
            # (exit status 0, no leak) before the engine quiesces.
            other = os.urandom(10_000)
            oname = blob_name(other, upload="left")
            client.Write(iter(write_reqs(oname, other[:5000], finish=False)), timeout=30)
            self.assertEqual(self.server.metric("ringcas_bs_uploads_parked"), 1)
        finally:
            client.close()


class WaitOnOneConnection(harness.ServerTestCase):
    """A Write waiting for another upload of its blob holds its first message, and the bytes
    its client sends after it, in receive buffers. When the core's buffers run low, a
    connection whose calls hold input stops receiving until the engine takes it; but what a
    waiting Write holds waits for the other upload, which may be on the same connection (one
    client uploading a blob twice, or many clients behind one HTTP/2 proxy). Before, the
    connection stopped, the upload waited for could not receive its next byte, and the two
    waited for each other: forever with --read-timeout 0 (else for a read timeout, when the
    Write gave up waiting), every other stream of the connection with them. Now a Write stops
    waiting once the buffers run low, and uploads its own copy."""

    server_cores = 1
    server_args = ("--read-timeout", "0", "--recv-buffers", "64", "--recv-buffer-size", "16KiB")

    @staticmethod
    def message(data, offset, finish, name=None):
        r = reapi.msg("google.bytestream.WriteRequest", write_offset=offset, data=data,
                      finish_write=finish)
        if name:
            r.resource_name = name
        return h2raw.grpc_message(r.SerializeToString())

    def stored_and_the_rest_parked(self, data, what):
        """The blob reads back whole, and the uploads left (cut off with their connection)
        are parked ones: <what> says which."""
        client = reapi.Client(self.server.address)
        try:
            req = reapi.msg("google.bytestream.ReadRequest", resource_name=blob_name(data))
            self.assertEqual(b"".join(r.data for r in client.Read(req, timeout=30)), data)
        finally:
            client.close()
        harness.wait_for(lambda: self.server.metric("ringcas_bs_uploads")
                         == self.server.metric("ringcas_bs_uploads_parked"), what=what)

    def test_an_upload_waited_for_on_the_same_connection_goes_on(self):
        write = "/google.bytestream.ByteStream/Write"
        data = os.urandom(1_000_000)
        c = h2raw.Conn(self.server.port, window=1 << 22)
        try:
            c.frames_until(lambda f: f[0] == 4 and not f[1] & 1, timeout=10)  # its SETTINGS
            waited = self.server.metric("ringcas_blob_uploads_waiting_total")
            c.headers(1, h2raw.grpc_headers(write))
            c.data_flow(1, self.message(data[:20_000], 0, False, blob_name(data, upload="a")))
            harness.wait_for(lambda: self.server.metric("ringcas_bs_uploads") == 1,
                             what="the first upload to begin")
            c.headers(3, h2raw.grpc_headers(write))
            c.data_flow(3, self.message(data[:20_000], 0, False, blob_name(data, upload="b")))
            harness.wait_for(lambda: self.server.metric(
                "ringcas_blob_uploads_waiting_total") > waited, what="the second one waiting")
            # The waiting Write's client sends on, up to its stream's window: held as well,
            # and more than three quarters of the core's 64 receive buffers.
            for off in range(20_000, 950_000, 10_000):
                c.send_frame(h2raw.DATA, 0, 3, self.message(data[off:off + 10_000], off, False))
            # The first upload's rest, on the same connection: it must get there and commit.
            c.data_flow(1, self.message(data[20_000:], 20_000, True), end_stream=True,
                        timeout=30)
            ends = [f for f in c.seen if f[0] == h2raw.HEADERS and f[1] & 1 and f[2] == 1]
            if not ends:
                ends = c.frames_until(lambda f: f[0] == h2raw.HEADERS and f[1] & 1 and f[2] == 1,
                                      timeout=30)
            self.assertTrue(ends, "the first upload was never answered")
        finally:
            c.close()
        # The second one, cut off with its connection, is parked (the blob is there now).
        self.stored_and_the_rest_parked(data, "no upload left but a parked one")



class WaitersOnOneConnection(harness.ServerTestCase):
    """Each Write waiting for another upload of its blob holds what its client sends, up to its
    stream's window (1 MiB), unconsumed: the connection's window (8 MiB) as well. nghttp2
    reopens that window only once half of it was consumed, so five waiting Writes on one
    connection (many clients behind one HTTP/2 proxy uploading the same output) left too
    little of it for the upload they waited for, on the same connection, to reopen it: the
    upload stopped, and the waiting ones with it, forever with --read-timeout 0 (else for a
    read timeout, after which each uploaded its own copy), every other upload of the
    connection with them. Now at most three Writes of a connection wait; the others upload
    their own copies."""

    server_cores = 1
    server_args = ("--read-timeout", "0")

    message = staticmethod(WaitOnOneConnection.message)
    stored_and_the_rest_parked = WaitOnOneConnection.stored_and_the_rest_parked

    def test_an_upload_waited_for_by_many_on_its_connection_goes_on(self):
        write = "/google.bytestream.ByteStream/Write"
        data = os.urandom(8 << 20)
        c = h2raw.Conn(self.server.port)
        try:
            c.frames_until(lambda f: f[0] == 4 and not f[1] & 1, timeout=10)  # its SETTINGS
            c.headers(1, h2raw.grpc_headers(write))
            c.data_flow(1, self.message(data[:20_000], 0, False, blob_name(data, upload="a")))
            harness.wait_for(lambda: self.server.metric("ringcas_bs_uploads") == 1,
                             what="the first upload to begin")
            waited = self.server.metric("ringcas_blob_uploads_waiting_total")
            for i, sid in enumerate(range(3, 13, 2)):
                c.headers(sid, h2raw.grpc_headers(write))
                c.data_flow(sid, self.message(data[:20_000], 0, False,
                                              blob_name(data, upload="w%d" % i)))
                harness.wait_for(lambda: self.server.metric("ringcas_blob_uploads_waiting_total")
                                 + self.server.metric("ringcas_bs_uploads") > waited + 1 + i,
                                 what="Write %d to wait or begin" % i)
                # Its client sends on, up to its stream's window.
                off = 20_000
                while off < 1_000_000:
                    c.data_flow(sid, self.message(data[off:off + 60_000], off, False))
                    off += 60_000
            # The first upload's rest, on the same connection: it must get there and commit.
            off = 20_000
            while off < len(data):
                piece = data[off:off + (1 << 20)]
                c.data_flow(1, self.message(piece, off, off + len(piece) == len(data)),
                            end_stream=off + len(piece) == len(data), timeout=30)
                off += len(piece)
            # It is answered, and the three that waited end as for a present blob.
            ended = set()

            def note(f):
                if f[0] == h2raw.HEADERS and f[1] & h2raw.END_STREAM:
                    ended.add(f[2])
                return {1, 3, 5, 7} <= ended

            for f in c.seen:
                note(f)
            if not {1, 3, 5, 7} <= ended:
                c.frames_until(note, timeout=30)
            self.assertLessEqual({1, 3, 5, 7}, ended)
        finally:
            c.close()
        # The two that did not wait, cut off with their connection, are parked.
        self.stored_and_the_rest_parked(data, "no upload left but parked ones")


class ParkedDecoders(unittest.TestCase):
    """A parked zstd upload keeps its decoder, whose window a few bytes of frame header
    declare; parked ones hold at most half of the core's --zstd-memory, so uploads whose
    clients left cannot keep live ones from decoding (the oldest parked ones go first)."""

    def test_parked_windows_leave_room_for_live_uploads(self):
        with harness.Server(args=("--zstd-memory", "64MiB"), cores=1) as srv:
            c = reapi.Client(srv.address)
            try:
                # Four uploads of nothing but a frame header declaring a 16 MiB window
                # (Window_Descriptor exponent 24 - 10), each left unfinished: parked.
                header = b"\x28\xb5\x2f\xfd" + bytes([0, (24 - 10) << 3])
                for i in range(4):
                    name = blob_name(os.urandom(1 << 20), compressed=True,
                                     upload=str(uuid.uuid4()))
                    c.Write(iter(write_reqs(name, header, finish=False)), timeout=30)
                parked = srv.metric("ringcas_bs_uploads_parked")
                self.assertGreaterEqual(parked, 1)
                self.assertLessEqual(srv.metric("ringcas_blob_zstd_bytes"), 40 << 20)
                # A live upload with a 16 MiB window of its own still decodes.
                data = os.urandom(1 << 20)
                params = zstandard.ZstdCompressionParameters(window_log=24,
                                                             write_content_size=False)
                cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()
                frames = cobj.compress(data) + cobj.flush()  # streamed: the window stays
                self.assertEqual(zstandard.get_frame_parameters(frames).window_size, 1 << 24)
                name = blob_name(data, compressed=True, upload=str(uuid.uuid4()))
                c.Write(iter(write_reqs(name, frames)), timeout=30)
                self.assertEqual(self.missing(c, data), [])
            finally:
                c.close()

    def missing(self, c, data):
        req = reapi.msg("FindMissingBlobsRequest", blob_digests=[digest(data)])
        return list(c.FindMissingBlobs(req, timeout=30).missing_blob_digests)


class ParkedBound(unittest.TestCase):
    """What clients that leave their uploads behind can hold, over a long run (perf/SOAK.md):
    at most 64 parked uploads per core, the oldest dropped first, and none past 60 s. A
    server whose clients keep leaving (Bazel killed mid-build, CI runners that vanish) would
    otherwise keep their chunk buffers and engine uploads for its whole life."""

    PARKED_MAX = 64
    EXTRA = 6

    def query(self, c, name):
        q = reapi.msg("google.bytestream.QueryWriteStatusRequest", resource_name=name)
        try:
            st = c.QueryWriteStatus(q, timeout=30)
            return st.committed_size
        except grpc.RpcError as e:
            self.assertEqual(e.code(), SC.NOT_FOUND)
            return None

    def test_parked_uploads_are_capped_per_core_and_expire(self):
        with harness.Server(cores=1) as srv:
            c = reapi.Client(srv.address)
            try:
                half = 100 << 10
                names = []
                for _ in range(self.PARKED_MAX + self.EXTRA):
                    data = os.urandom(2 * half)
                    name = blob_name(data, upload=str(uuid.uuid4()))
                    # Half the blob and no finish_write: answered OK, then parked.
                    r = c.Write(iter(write_reqs(name, data[:half], finish=False)), timeout=30)
                    self.assertEqual(r.committed_size, half)
                    names.append(name)
                self.assertEqual(srv.metric("ringcas_bs_uploads_parked"), self.PARKED_MAX)
                self.assertEqual(srv.metric("ringcas_bs_uploads"), self.PARKED_MAX)
                self.assertEqual(srv.metric("ringcas_blob_uploads"), self.PARKED_MAX)
                # The oldest went first; the rest can still be resumed.
                for name in names[:self.EXTRA]:
                    self.assertIsNone(self.query(c, name), name)
                for name in names[self.EXTRA:]:
                    self.assertEqual(self.query(c, name), half, name)
                # 60 s after they were parked (swept every 5 s) none is left, nor what it held.
                harness.wait_for(lambda: srv.metric("ringcas_bs_uploads_parked") == 0,
                                 timeout=90, interval=1, what="the parked uploads to expire")
                wait_zero(srv, ("bs_uploads", "blob_uploads", "blob_bufs"))
                self.assertIsNone(self.query(c, names[-1]))
            finally:
                c.close()
            srv.wait_quiet(extra=GAUGES)


class Full(unittest.TestCase):
    def test_a_blob_over_the_limit_is_invalid_argument(self):
        """Larger than the store takes (a quarter of --max-size, the max_cas_blob_size_bytes
        advertised), on an empty store: the message names the sizes, not "store full"
        (docs/grpc.md), and the code is INVALID_ARGUMENT, as REAPI's max_cas_blob_size_bytes
        says. It was RESOURCE_EXHAUSTED, which Bazel retries (--remote_retries) though no
        retry can succeed."""
        with harness.Server(args=("--max-size", "8MiB"), cores=1) as srv:
            c = reapi.Client(srv.address)
            try:
                caps = c.GetCapabilities(reapi.msg("GetCapabilitiesRequest"), timeout=30)
                self.assertEqual(caps.cache_capabilities.max_cas_blob_size_bytes, 2 << 20)
                data = os.urandom(16 << 20)
                name = blob_name(data, upload="big")
                with self.assertRaises(grpc.RpcError) as cm:
                    c.Write(iter(write_reqs(name, data)), timeout=60)
                self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT)
                self.assertEqual(cm.exception.details(),
                                 "blob of 16777216 bytes is larger than this store takes "
                                 "(a quarter of --max-size: 2097152 bytes)")
                # A batch entry over the limit fails alone, with the same code.
                big, small = os.urandom((2 << 20) + 1), os.urandom(100)
                req = reapi.msg("BatchUpdateBlobsRequest")
                for b in (big, small):
                    r = req.requests.add()
                    r.digest.CopyFrom(digest(b))
                    r.data = b
                resp = c.BatchUpdateBlobs(req, timeout=60).responses
                self.assertEqual([(r.status.code, r.status.message) for r in resp],
                                 [(SC.INVALID_ARGUMENT.value[0],
                                   "blob larger than this store takes (a quarter of --max-size "
                                   "or of the volume)"), (0, "")])
            finally:
                c.close()
            srv.wait_quiet(extra=GAUGES)


class ConnectionSpread(unittest.TestCase):
    """A connection lives on one core, and the kernel places new ones by a hash of their
    addresses; the server hands a new connection to the core with the fewest, so a client with
    a few connections gets every core (docs/operations.md "Threads and cores")."""

    def per_core_conns(self, srv):
        counts = {}
        for name, labels, value in harness.parse_metrics(srv.metrics_text()):
            if name == "ringcas_conns":
                counts[labels["core"]] = value
        return counts

    def test_four_grpc_channels_are_spread_over_both_cores(self):
        # Hashing alone keeps 4 connections (and the one reading /metrics) within one of each
        # other on 2 cores 5 times in 8: ten rounds in a row, about once in a hundred runs.
        with harness.Server(cores=2) as srv:
            address = "127.0.0.1:%d" % srv.port
            for round_ in range(10):
                # A pool of its own per channel: grpcio shares one connection otherwise.
                clients = [reapi.Client(address, options=[("grpc.use_local_subchannel_pool", 1)])
                           for _ in range(4)]
                try:
                    for c in clients:
                        c.GetCapabilities(reapi.msg("GetCapabilitiesRequest"), timeout=10)
                    counts = self.per_core_conns(srv)
                    self.assertEqual(sorted(counts), ["0", "1"])
                    self.assertEqual(sum(counts.values()), 5, counts)  # and the /metrics one
                    self.assertLessEqual(abs(counts["0"] - counts["1"]), 1,
                                         "round %d: %r" % (round_, counts))
                finally:
                    for c in clients:
                        c.close()
                srv.wait_quiet()
            self.assertGreater(srv.metric("ringcas_conns_handed_over_total"), 0)


if __name__ == "__main__":
    unittest.main()
