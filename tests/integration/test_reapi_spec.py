"""REAPI v2 conformance details on the real server, with grpcio: what remote_execution.proto
and google.bytestream say a storage server MUST do, where test_reapi.py does not already pin
it (docs/grpc.md states the choices the specs leave open). Every scenario ends with the
server's calls, pieces, readers and uploads back to zero (ReapiCase.tearDown)."""

import os
import unittest

import zstandard

import reapi
from test_reapi import ReapiCase, blob_name, digest, write_reqs


def unzstd_strict(data):
    """Decodes <data> as a complete zstd stream the way strict decoders do (the zstd CLI,
    one-shot ZSTD_decompress): at least one whole frame, every frame finished."""
    out = bytearray()
    rest = data
    if not rest:
        raise ValueError("no zstd frame at all")
    while rest:
        d = zstandard.ZstdDecompressor().decompressobj()
        out += d.decompress(rest)
        if not d.eof:
            raise ValueError("zstd frame cut short")
        rest = d.unused_data
    return bytes(out)


class CompressedNothing(ReapiCase):
    """A compressed answer that carries no blob bytes (the empty blob, or a compressed read
    that starts at the end) is still a valid zstd stream: one empty frame. Zero bytes are not
    a zstd stream: `zstd -d` says "unexpected end of file", ZSTD_decompress fails."""

    def test_batch_read_of_the_empty_blob_with_zstd_accepted(self):
        req = reapi.msg("BatchReadBlobsRequest", digests=[digest(b"")], acceptable_compressors=[1])
        r = self.c.BatchReadBlobs(req, timeout=30).responses[0]
        self.assertEqual(r.status.code, 0)
        if r.compressor == 1:
            self.assertEqual(unzstd_strict(r.data), b"")
        else:
            self.assertEqual((r.compressor, r.data), (0, b""))

    def test_compressed_read_of_the_empty_blob(self):
        req = reapi.msg("google.bytestream.ReadRequest",
                        resource_name=blob_name(b"", compressed=True))
        out = b"".join(r.data for r in self.c.Read(req, timeout=30))
        self.assertEqual(unzstd_strict(out), b"")

    def test_compressed_read_from_the_end_of_a_blob(self):
        data = os.urandom(5000)
        self.write(data)
        req = reapi.msg("google.bytestream.ReadRequest",
                        resource_name=blob_name(data, compressed=True), read_offset=len(data))
        out = b"".join(r.data for r in self.c.Read(req, timeout=30))
        self.assertEqual(unzstd_strict(out), b"")
        # Any other offset still gives the blob's frames from there.
        req.read_offset = 4000
        out = b"".join(r.data for r in self.c.Read(req, timeout=30))
        self.assertEqual(unzstd_strict(out), data[4000:])


class WriteOfPresentBlob(ReapiCase):
    """REAPI: an upload whose blob is already complete "will terminate immediately without
    error", committed_size the size (identity) or -1 (compressed), "regardless of how much data
    was transmitted by the client": also when the Write resumes at an offset this server holds
    no upload for (it was parked on another core, or expired)."""

    def test_resumed_write_of_a_present_blob_ends_early(self):
        data = os.urandom(200_000)
        self.write(data)
        name = blob_name(data, upload="elsewhere")
        reqs = write_reqs(name, data[50_000:], offset=50_000)
        self.assertEqual(self.c.Write(iter(reqs), timeout=30).committed_size, len(data))
        body = zstandard.ZstdCompressor().compress(data)
        zname = blob_name(data, compressed=True, upload="elsewhere-z")
        reqs = write_reqs(zname, body[1000:], offset=1000)
        self.assertEqual(self.c.Write(iter(reqs), timeout=30).committed_size, -1)

    def test_resumed_write_of_an_absent_blob_is_still_refused(self):
        data = os.urandom(100_000)
        name = blob_name(data, upload="nothing-parked")
        code, details = self.code(self.c.Write, iter(write_reqs(name, data[10:], offset=10)))
        self.assertEqual(code.name, "INVALID_ARGUMENT")
        self.assertIn("write_offset", details)
        self.assertEqual(len(self.missing([data])), 1)


class ResourceNameRefusals(ReapiCase):
    """REAPI 2.3 resource names may carry a digest-function segment, which "MUST be omitted"
    for SHA-256 (and the other functions a hash's length tells apart), and a compressor
    "other than identity". The refusals say what is wrong: a sha256 segment was "digest
    function not supported", as if SHA-256 were not served, and compressed-blobs/identity an
    "unknown compressor"."""

    def refusal(self, name, write=False):
        if write:
            code, details = self.code(self.c.Write, iter(write_reqs(name, b"abc")))
        else:
            code, details = self.code(
                self.c.Read, reapi.msg("google.bytestream.ReadRequest", resource_name=name))
        self.assertEqual(code.name, "INVALID_ARGUMENT", (name, details))
        return details

    def test_a_sha256_segment_is_told_to_go_and_others_are_not_served(self):
        d = digest(b"abc")
        tail = "%s/%d" % (d.hash, d.size_bytes)
        omit = "resource name: digest function segment sha256 must be omitted: SHA-256 is " \
               "named by omission ({hash}/{size})"
        for name in ("blobs/sha256/" + tail, "i/compressed-blobs/zstd/sha256/" + tail):
            self.assertEqual(self.refusal(name), omit)
        for name in ("uploads/u/blobs/sha256/" + tail,
                     "i/uploads/u/compressed-blobs/zstd/sha256/" + tail):
            self.assertEqual(self.refusal(name, write=True), omit)
        for fn in ("blake3", "sha256tree", "sha1"):
            self.assertEqual(self.refusal("blobs/%s/%s" % (fn, tail)),
                             "resource name: digest function not supported (only SHA-256, "
                             "named by omission)")
        self.assertEqual(self.refusal("compressed-blobs/identity/" + tail),
                         "resource name: compressor identity has no compressed-blobs form "
                         "(name the blob blobs/...)")
        # Named by omission, the same blob is served.
        self.assertEqual(self.c.Write(iter(write_reqs("uploads/u/blobs/" + tail, b"abc")),
                                      timeout=30).committed_size, 3)
        self.assertEqual(self.read(b"abc"), b"abc")


def write_req(name=None, offset=0, data=b"", finish=False):
    r = reapi.msg("google.bytestream.WriteRequest", write_offset=offset, data=data,
                  finish_write=finish)
    if name:
        r.resource_name = name
    return r


class WriteStreamRules(ReapiCase):
    """google.bytestream's rules for one Write stream: resource_name "must be set on the first
    WriteRequest"; "if it is set on subsequent calls, it must match the value of the first
    request"; the first write_offset "must be equal to the committed_size that a call to
    QueryWriteStatus() would return", and a request may carry finish_write alone."""

    def test_a_resource_name_that_changes_within_the_stream_is_refused(self):
        data = os.urandom(100_000)
        name, other = blob_name(data, upload="a"), blob_name(data, upload="b")
        reqs = [write_req(name, 0, data[:50_000]), write_req(other, 50_000, data[50_000:], True)]
        code, details = self.code(self.c.Write, iter(reqs))
        self.assertEqual(code.name, "INVALID_ARGUMENT")
        self.assertIn("resource_name", details)
        self.assertEqual(len(self.missing([data])), 1)
        # The same name repeated is fine.
        reqs = [write_req(name, 0, data[:50_000]), write_req(name, 50_000, data[50_000:], True)]
        self.assertEqual(self.c.Write(iter(reqs), timeout=30).committed_size, len(data))
        self.assertEqual(self.missing([data]), [])

    def test_a_finish_alone_at_the_committed_size_completes_a_parked_upload(self):
        """A client that sent every byte but lost the answer to its finish_write asks
        QueryWriteStatus (committed_size = all, complete false) and resumes there with
        finish_write and no data: the blob is stored. Identity and zstd alike; a zstd
        upload's offsets count compressed bytes (docs/grpc.md)."""
        q = lambda n: reapi.msg("google.bytestream.QueryWriteStatusRequest", resource_name=n)
        for compressed in (False, True):
            data = os.urandom(200_000)
            body = zstandard.ZstdCompressor().compress(data) if compressed else data
            name = blob_name(data, compressed=compressed, upload="all-sent")
            sent = write_reqs(name, body, finish=False)
            self.assertEqual(self.c.Write(iter(sent), timeout=30).committed_size, len(body))
            st = self.c.QueryWriteStatus(q(name), timeout=30)
            self.assertEqual((st.committed_size, st.complete), (len(body), False))
            done = self.c.Write(iter([write_req(name, len(body), b"", True)]), timeout=30)
            self.assertEqual(done.committed_size, len(body))
            st = self.c.QueryWriteStatus(q(name), timeout=30)
            self.assertEqual((st.committed_size, st.complete), (len(data), True))
            self.assertEqual(self.missing([data]), [])
            self.assertEqual(self.read(data), data)

    def test_parked_uploads_are_kept_per_uuid_and_encoding(self):
        """A uuid may be reused for other blobs (REAPI: "Clients MAY reuse the same uuid"), and
        an identity and a zstd upload of one blob are different resources: QueryWriteStatus
        answers each for its own name only."""
        q = lambda n: reapi.msg("google.bytestream.QueryWriteStatusRequest", resource_name=n)
        a, b = os.urandom(100_000), os.urandom(100_000)
        for data, n in ((a, 10_000), (b, 20_000)):
            name = blob_name(data, upload="same")
            self.c.Write(iter(write_reqs(name, data[:n], finish=False)), timeout=30)
        self.assertEqual(self.c.QueryWriteStatus(q(blob_name(a, upload="same")),
                                                 timeout=30).committed_size, 10_000)
        self.assertEqual(self.c.QueryWriteStatus(q(blob_name(b, upload="same")),
                                                 timeout=30).committed_size, 20_000)
        for other in (blob_name(a, upload="another"),
                      blob_name(a, compressed=True, upload="same")):
            self.assertEqual(self.code(self.c.QueryWriteStatus, q(other))[0].name, "NOT_FOUND")
        for data, n in ((a, 10_000), (b, 20_000)):
            rest = write_reqs(blob_name(data, upload="same"), data[n:], offset=n)
            self.assertEqual(self.c.Write(iter(rest), timeout=30).committed_size, len(data))
        self.assertEqual(self.missing([a, b]), [])


class WrongOffset(ReapiCase):
    """google.bytestream: a first write_offset other than the committed_size QueryWriteStatus
    returns "will cause an error", and the committed_size values QueryWriteStatus returns for
    a resource "will be non-decreasing". A resumption at a wrong offset is refused, saying the
    committed size, and the parked upload stays, to be resumed where it is: it was dropped,
    QueryWriteStatus then said NOT_FOUND, and the client's bytes were lost to a bad request."""

    def test_a_resumption_at_a_wrong_offset_keeps_the_parked_upload(self):
        q = lambda n: reapi.msg("google.bytestream.QueryWriteStatusRequest", resource_name=n)
        for compressed in (False, True):
            data = os.urandom(200_000)
            body = zstandard.ZstdCompressor().compress(data) if compressed else data
            name = blob_name(data, compressed=compressed, upload="wrong-offset")
            sent = write_reqs(name, body[:60_000], finish=False)
            self.assertEqual(self.c.Write(iter(sent), timeout=30).committed_size, 60_000)
            for off in (30_000, 90_000):
                code, details = self.code(self.c.Write, iter(write_reqs(name, body[off:],
                                                                        offset=off)))
                self.assertEqual(code.name, "INVALID_ARGUMENT", details)
                self.assertIn("write_offset %d" % off, details)
                self.assertIn("committed size 60000", details)
                st = self.c.QueryWriteStatus(q(name), timeout=30)
                self.assertEqual((st.committed_size, st.complete), (60_000, False), off)
            rest = write_reqs(name, body[60_000:], offset=60_000)
            self.assertEqual(self.c.Write(iter(rest), timeout=30).committed_size, len(body))
            self.assertEqual(self.missing([data]), [])
            self.assertEqual(self.read(data), data)


class BatchDuplicates(ReapiCase):
    """REAPI: BatchUpdateBlobs "is equivalent to calling a Bytestream Write request on each
    individual blob, in parallel. The requests may succeed or fail independently": one digest
    named several times, some with the wrong bytes, gets one answer per entry, in order, and
    the blob is stored by the good ones."""

    def test_each_entry_of_a_repeated_digest_is_answered_alone(self):
        b = os.urandom(500)
        req = reapi.msg("BatchUpdateBlobsRequest")
        # The wrong entries are of another size: identity data whose size is not the one
        # named is refused whether or not the blob is present by then (a same-size entry
        # after a good one may find it stored, and is answered OK without hashing).
        for data in (b"wrong", b, b, b + b"x"):
            r = req.requests.add()
            r.digest.CopyFrom(digest(b))
            r.data = data
        resp = self.c.BatchUpdateBlobs(req, timeout=30).responses
        self.assertEqual([(r.digest.hash, r.status.code) for r in resp],
                         [(digest(b).hash, c) for c in (3, 0, 0, 3)])
        self.assertEqual(self.missing([b]), [])
        req = reapi.msg("BatchReadBlobsRequest", digests=[digest(b), digest(b)])
        self.assertEqual([(r.status.code, r.data) for r in
                          self.c.BatchReadBlobs(req, timeout=30).responses], [(0, b), (0, b)])


class BatchFraming(ReapiCase):
    """max_batch_total_size_bytes (4 MiB) counts blob bytes; a request message may be 4 MiB +
    64 KiB, room for the framing of about 800 entries (docs/grpc.md). A batch at the limit in
    a few blobs is taken; the same bytes in 1024 blobs are a larger message, refused whole
    before any of it is stored."""

    def batch(self, blobs):
        req = reapi.msg("BatchUpdateBlobsRequest")
        for b in blobs:
            r = req.requests.add()
            r.digest.CopyFrom(digest(b))
            r.data = b
        return req

    def test_the_batch_limit_in_blob_bytes_and_the_message_limit(self):
        caps = self.c.GetCapabilities(reapi.msg("GetCapabilitiesRequest"), timeout=30)
        limit = caps.cache_capabilities.max_batch_total_size_bytes
        self.assertEqual(limit, 4 << 20)
        few = [os.urandom(limit // 4) for _ in range(4)]
        req = self.batch(few)
        self.assertGreater(req.ByteSize(), limit)
        resp = self.c.BatchUpdateBlobs(req, timeout=60).responses
        self.assertEqual([r.status.code for r in resp], [0] * 4)
        many = [os.urandom(4096) for _ in range(limit // 4096)]
        req = self.batch(many)
        self.assertEqual(req.ByteSize(), 4_273_152)
        code, details = self.code(self.c.BatchUpdateBlobs, req)
        self.assertEqual(code.name, "RESOURCE_EXHAUSTED")
        self.assertIn("4 MiB + 64 KiB", details)
        self.assertEqual(len(self.missing(many[:10])), 10)
        # The same bytes in batches whose encoded size is within 4 MiB are taken.
        for half in (many[:512], many[512:]):
            resp = self.c.BatchUpdateBlobs(self.batch(half), timeout=60).responses
            self.assertEqual({r.status.code for r in resp}, {0})
        self.assertEqual(self.missing(many), [])


if __name__ == "__main__":
    unittest.main()
