"""REAPI v2 conformance details on the real server, with grpcio: what remote_execution.proto
and google.bytestream say a storage server MUST do, where test_reapi.py does not already pin
it (docs/grpc.md states the choices the specs leave open). Every scenario ends with the
server's calls, pieces, readers and uploads back to zero (ReapiCase.tearDown)."""

import os
import unittest

import zstandard

from test_reapi import ReapiCase, blob_name, write_reqs


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
