"""The store on the file systems a production node runs on: XFS and btrfs besides the ext4 (or
whatever /tmp is) every other test uses. Each gets a loop-mounted image of its own, made with
Debian's mkfs, and the real server on it:

- kill -9 under load, as test_crash.py: every acknowledged blob is present and reads back
  exactly after each restart (O_DIRECT writes into fallocate'd segments, fdatasync, the
  directory's fsync, and the records' recovery, on each file system's own rules);
- a store written far past its --max-size: eviction keeps the segment files on disk inside
  the budget (a sealed segment gives back its unwritten reserve, IORING_OP_FTRUNCATE), the
  newest blobs read back, and `ringcas fsck` finds every record sound after a clean stop.

Mounting a loop device needs root and a /dev/loop-control; where this machine has neither,
the tests skip (a machine limit, as the tmpfs tests in test_diskroom.py)."""

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
import reapi
from test_crash import Writer, digest

MIB = 1 << 20
IMAGE = 3 << 30  # sparse: only what the tests write takes room in /tmp


class OnFileSystem:
    """Mixin: setUpClass mounts a fresh <FS> image on a temporary folder; tearDownClass
    unmounts it and removes the image."""

    FS = None
    MKFS = None  # the mkfs command line, without the image

    @classmethod
    def setUpClass(cls):
        if not shutil.which(cls.MKFS[0]):
            raise AssertionError("%s not found: install Debian's %s (scripts/deps.sh test)"
                                 % (cls.MKFS[0], cls.PACKAGE))
        cls.root = tempfile.mkdtemp(prefix="ringcas-%s-" % cls.FS)
        cls.image = os.path.join(cls.root, "image")
        cls.mount = os.path.join(cls.root, "mnt")
        os.mkdir(cls.mount)
        cls.mounted = False
        with open(cls.image, "wb") as f:
            f.truncate(IMAGE)
        subprocess.run(cls.MKFS + [cls.image], check=True, capture_output=True, timeout=120)
        if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
            return
        r = subprocess.run(["mount", "-o", "loop", "-t", cls.FS, cls.image, cls.mount],
                           capture_output=True, text=True, timeout=60)
        cls.mounted = r.returncode == 0
        cls.mount_error = r.stderr.strip()

    @classmethod
    def tearDownClass(cls):
        if cls.mounted:
            subprocess.run(["umount", cls.mount], check=True, timeout=120)
        shutil.rmtree(cls.root, ignore_errors=True)

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("mounting a loop device needs root")
        if not self.mounted:
            self.skipTest("this machine cannot loop-mount %s: %s"
                          % (self.FS, getattr(self, "mount_error", "no /dev/loop-control")))
        self.dir = tempfile.mkdtemp(prefix="data-", dir=self.mount)
        self.server = None

    def tearDown(self):
        failed = self._outcome.result.failures or self._outcome.result.errors
        if self.server:
            self.server.cleanup(keep_log=bool(failed))
        shutil.rmtree(self.dir, ignore_errors=True)

    def serve(self, *args):
        self.server = harness.Server(args=args, cores=2, data_dir=self.dir)
        self.server.start()
        return self.server

    def test_acknowledged_blobs_survive_sigkill(self):
        rng = random.Random(int(os.environ.get("RINGCAS_CRASH_SEED", "0")) or None)
        srv = self.serve()
        acked = []
        for _ in range(6):
            w = Writer(srv.address, rng)
            w.start()
            time.sleep(rng.uniform(0.3, 0.9))
            srv.kill()
            w.stop = True
            w.join(30)
            srv.start(srv.port)
            acked.extend(w.acked)
            self.assertEqual(self.missing(acked), [], "acknowledged blobs lost after kill -9")
        self.assertGreater(len(acked), 6)
        c = reapi.Client(srv.address)
        try:
            for b in acked:
                d = digest(b)
                req = reapi.msg("google.bytestream.ReadRequest",
                                resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))
                got = b"".join(r.data for r in c.Read(req, timeout=60))
                self.assertEqual(hashlib.sha256(got).hexdigest(), d.hash, "corrupt read")
        finally:
            c.close()
        srv.stop()

    def missing(self, blobs):
        c = reapi.Client(self.server.address)
        try:
            out = []
            for i in range(0, len(blobs), 500):
                req = reapi.msg("FindMissingBlobsRequest",
                                blob_digests=[digest(b) for b in blobs[i:i + 500]])
                out += list(c.FindMissingBlobs(req, timeout=60).missing_blob_digests)
            return out
        finally:
            c.close()

    def segment_bytes(self):
        """Blocks the segment files take on disk, in bytes (st_blocks, not their length)."""
        total = 0
        for name in os.listdir(self.dir):
            if name.startswith("seg-"):
                total += os.stat(os.path.join(self.dir, name)).st_blocks * 512
        return total

    def test_eviction_keeps_the_files_inside_the_budget(self):
        budget = 64 * MIB
        srv = self.serve("--max-size", "64MiB")
        rng = random.Random(7)
        blobs = []
        c = reapi.Client(srv.address)
        try:
            for _ in range(160):  # 160 MiB written into a 64 MiB store
                data = rng.randbytes(MIB // 2) + bytes(MIB // 2)
                req = reapi.msg("BatchUpdateBlobsRequest")
                r = req.requests.add()
                r.digest.CopyFrom(digest(data))
                r.data = data
                resp = c.BatchUpdateBlobs(req, timeout=60)
                self.assertEqual(resp.responses[0].status.code, 0, resp.responses[0].status)
                blobs.append(data)
        finally:
            c.close()
        self.assertGreater(srv.metric("ringcas_store_evicted_segments_total"), 0)
        # The evictor runs on seals and every 5 s; btrfs frees an unlinked file's blocks at
        # its next commit. What stays is what the store keeps.
        harness.wait_for(lambda: self.segment_bytes() <= budget, timeout=40,
                         what="segment files inside the budget (%d bytes)" % budget)
        self.assertEqual(self.missing(blobs[-8:]), [])
        srv.stop()
        r = subprocess.run([harness.binary(), "fsck", "--dir", self.dir], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class Xfs(OnFileSystem, unittest.TestCase):
    FS = "xfs"
    PACKAGE = "xfsprogs"
    MKFS = ["mkfs.xfs", "-q", "-f"]


class Btrfs(OnFileSystem, unittest.TestCase):
    FS = "btrfs"
    PACKAGE = "btrfs-progs"
    MKFS = ["mkfs.btrfs", "-q", "-f"]


if __name__ == "__main__":
    unittest.main(verbosity=2)
