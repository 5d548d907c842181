"""A data folder written by an older ringcas, opened by this one: an upgrade in place (a
StatefulSet's rolling update keeps the volume).

tests/data/v1-store holds two folders the build before format version 2 wrote (commit records
of version 1, 16-byte chunk refs; tests/data/v1-store/README.md): `clean`, stopped with SIGTERM,
and `killed`, killed with SIGKILL in the middle of a ByteStream upload. Each test copies one to a
temporary folder and checks what docs/format.md "Versioning" promises: every blob reads back
byte-identical (identity and zstd, gRPC and HTTP), every ActionResult is found complete, every
HTTP value is there, fsck passes, new uploads work, a refresh copy of an old blob is written as
version 2 and still reads, eviction takes the old segments, and a restart reads it all again.
"""

import os
import shutil
import struct
import subprocess
import tempfile
import unittest

import grpc
import zstandard

import harness
import reapi
import v1store

FIXTURE = os.path.join(harness.ROOT, "tests", "data", "v1-store")
RCRD = 0x44524352


def commit_records(folder):
    """(version, kind, size, hash hex) of every commit record in the folder's segment files,
    found by walking each file's records from offset 4096 (docs/format.md "Grammar")."""
    out = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".rcs"):
            continue
        with open(os.path.join(folder, name), "rb") as f:
            b = f.read()
        off = 4096
        while off + 32 <= len(b):
            magic, typ, ver, _, _, plen = struct.unpack_from("<IBBBBI", b, off)
            if magic != RCRD:
                break
            if typ == 2:
                kind = b[off + 32]
                size = struct.unpack_from("<Q", b, off + 40)[0]
                out.append((ver, kind, size, b[off + 56:off + 88].hex()))
            off = (off + 32 + plen + 7) & ~7
    return out


def fsck(folder):
    p = subprocess.run([harness.binary(), "fsck", "--dir", folder], capture_output=True,
                       text=True, timeout=120)
    return p.returncode, p.stdout + p.stderr


class Upgrade(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringcas-upgrade-")
        self.server = None

    def tearDown(self):
        if self.server:
            self.server.cleanup(keep_log=self._outcome.success is False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def open(self, name, cores=2):
        """A copy of the fixture folder <name>, served by this build with the flags it was
        written with (two cores, where it was written by one: the core count may change across
        an upgrade)."""
        d = os.path.join(self.tmp, name)
        shutil.copytree(os.path.join(FIXTURE, name), d)
        self.assertTrue(all(v == 1 for v, *_ in commit_records(d)),
                        "the fixture holds version-1 commit records only")
        self.server = harness.Server(args=v1store.SERVE_ARGS, cores=cores, data_dir=d)
        self.server.start()
        return d

    # -- what the old build stored, read back --

    def blobs(self, name):
        out = {k: v for k, (v, _) in v1store.BLOBS.items()}
        out["tree"] = v1store.TREE
        if name == "killed":
            out["after-torn"] = v1store.AFTER_TORN
        return out

    def check_all(self, name, complete=True):
        """Every blob, result and value the old build stored, by every way of reading it. With
        <complete> false (after eviction may have taken some), what is missing must be missing
        on every path, and what is served must still be the stored bytes."""
        s = self.server
        blobs = self.blobs(name)
        c = reapi.Client(s.address)
        try:
            req = reapi.msg("FindMissingBlobsRequest",
                            blob_digests=[v1store.digest(b) for b in blobs.values()])
            missing = {d.hash for d in c.FindMissingBlobs(req, timeout=30).missing_blob_digests}
            if complete:
                self.assertEqual(missing, set())
            # The upload the killed server was in the middle of never became visible.
            req = reapi.msg("FindMissingBlobsRequest", blob_digests=[v1store.digest(v1store.TORN)])
            self.assertEqual(len(c.FindMissingBlobs(req, timeout=30).missing_blob_digests), 1)

            req = reapi.msg("BatchReadBlobsRequest",
                            digests=[v1store.digest(b) for b in blobs.values()])
            got = {r.digest.hash: (r.status.code, r.data)
                   for r in c.BatchReadBlobs(req, timeout=30).responses}
            for key, data in blobs.items():
                # Eviction goes on between calls: a blob listed present may be gone next.
                gone = v1store.sha(data) in missing or not complete
                ok = [(0, data), (5, b"")] if gone else [(0, data)]
                self.assertIn(got[v1store.sha(data)], ok, key)

            dz = zstandard.ZstdDecompressor()
            for key, data in blobs.items():
                if not data:
                    continue
                gone = v1store.sha(data) in missing or not complete
                for compressed in (False, True):
                    rn = "%s/%s/%d" % ("compressed-blobs/zstd" if compressed else "blobs",
                                       v1store.sha(data), len(data))
                    r = reapi.msg("google.bytestream.ReadRequest", resource_name=rn)
                    try:
                        out = b"".join(m.data for m in c.Read(r, timeout=30))
                    except grpc.RpcError as e:
                        self.assertTrue(gone, "%s: %s" % (key, e))
                        self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND, key)
                        continue
                    if compressed:
                        out = dz.stream_reader(out, read_across_frames=True).read()
                    self.assertEqual(out, data, "%s compressed=%s" % (key, compressed))
                for headers in ({}, {"Accept-Encoding": "zstd"}):
                    status, body = v1store.http_req(s.port, "GET", "/cas/" + v1store.sha(data),
                                                    headers=headers)
                    self.assertIn(status, (200, 404) if gone else (200,), key)
                    if status == 200 and headers:
                        body = dz.stream_reader(body, read_across_frames=True).read()
                    if status == 200:
                        self.assertEqual(body, data, "%s %s" % (key, headers))

            for instance, d in v1store.GRPC_AC:
                req = reapi.msg("GetActionResultRequest", instance_name=instance)
                req.action_digest.CopyFrom(d)
                try:
                    self.assertEqual(c.GetActionResult(req, timeout=30), v1store.action_result(),
                                     instance)
                except grpc.RpcError as e:
                    self.assertFalse(complete, "%r: %s" % (instance, e))
                    self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND, instance)
        finally:
            c.close()
        for path, body in list(v1store.HTTP_AC.items()) + list(v1store.HTTP_PLAIN.items()):
            got = v1store.http_req(s.port, "GET", path)
            if complete or got[0] != 404:
                self.assertEqual(got, (200, body), path)

    def check_new_upload(self, data):
        d = reapi.put_blob(self.server.address, data)
        self.assertEqual(v1store.http_req(self.server.port, "GET", "/cas/" + d.hash), (200, data))

    def fsck_ok(self, folder):
        rc, out = fsck(folder)
        self.assertEqual(rc, 0, out)
        self.assertIn(": ok:", out)
        self.assertIn(" 0 bad blobs, 0 bad segments", out)
        return out

    def test_clean(self):
        self.upgrade("clean")

    def test_killed(self):
        self.upgrade("killed")

    def upgrade(self, name):
        d = self.open(name)
        self.check_all(name)
        with open(self.server.log_path, "rb") as f:
            log = f.read().decode(errors="replace")
        for word in ("corrupt", ".bad", "error", "warn"):
            self.assertNotIn(word, log)

        # New uploads, committed as version 2 beside the old records; and a restart.
        fresh = os.urandom(30000)
        self.check_new_upload(fresh)
        self.server.stop()
        self.fsck_ok(d)
        self.server.start()
        self.check_all(name)

        # A refresh copy of an old blob. Fill the store until its oldest segment lies in the
        # part a quarter-budget more would evict (the cold part, docs/storage.md), asking after
        # each upload for the oldest blob: the first ask after it turned cold copies it to the
        # head of the log (FindMissingBlobs refreshes what it finds cold).
        small = v1store.BLOBS["small-random"][0]
        c = reapi.Client(self.server.address)
        try:
            for _ in range(100):
                reapi.put_blob(self.server.address, os.urandom(8000))
                req = reapi.msg("FindMissingBlobsRequest", blob_digests=[v1store.digest(small)])
                self.assertEqual(list(c.FindMissingBlobs(req, timeout=30).missing_blob_digests),
                                 [])
                if self.server.metric("ringcas_blob_refreshes_total") > 0:
                    break
        finally:
            c.close()
        harness.wait_for(lambda: self.server.metric("ringcas_blob_refreshes_open") == 0 or None,
                         timeout=30, what="refreshes to finish")
        self.assertGreater(self.server.metric("ringcas_blob_refreshes_total"), 0)
        self.server.stop()
        v2 = {(k, size, h) for v, k, size, h in commit_records(d) if v == 2}
        self.assertIn((1, len(small), v1store.sha(small)), v2,
                      "the refresh copy of a version-1 blob is a version-2 commit")
        self.assertIn((1, len(fresh), v1store.sha(fresh)), v2)
        self.fsck_ok(d)

        # A restart after all that: the copy reads, and whatever else is served (eviction may
        # have begun) is the stored bytes.
        self.server.start()
        self.assertEqual(v1store.http_req(self.server.port, "GET", "/cas/" + v1store.sha(small)),
                         (200, small))
        self.check_all(name, complete=False)
        self.check_new_upload(fresh)

        # Eviction of the old segments: write 1.4 MB past --max-size (1 MiB); every segment the
        # old build wrote goes, and what it held is answered missing.
        olds = set(os.listdir(os.path.join(FIXTURE, name)))
        written = [os.urandom(60000) for _ in range(24)]
        for data in written:
            reapi.put_blob(self.server.address, data)
        harness.wait_for(lambda: not olds & set(os.listdir(d)) or None, timeout=30,
                         what="the segments the old build wrote to be evicted")
        self.check_new_upload(written[-1])
        self.check_all(name, complete=False)
        self.server.stop()
        now = [f for f in os.listdir(d) if f.endswith(".rcs")]
        self.assertLessEqual(sum(os.path.getsize(os.path.join(d, f)) for f in now), 1 << 20)
        self.fsck_ok(d)
        self.server.start()
        self.check_new_upload(written[-1])
        self.server.stop()


if __name__ == "__main__":
    unittest.main()
