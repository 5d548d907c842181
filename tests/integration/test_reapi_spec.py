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


if __name__ == "__main__":
    unittest.main()
