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
import unittest
import urllib.error
import urllib.request
import uuid

import grpc

import harness
import reapi
from test_crash import digest, kill_cycles, missing

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
        acked = kill_cycles(srv, rng, 6, lambda round_acked, acked: self.assertEqual(
            self.missing(acked), [], "acknowledged blobs lost after kill -9"))
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
        return missing(self.server.address, blobs)

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


class Ext4ErrorsRemountReadOnly(unittest.TestCase):
    """ext4 mounted errors=remount-ro (Debian's default for its root file system) meets a
    file system error: the kernel takes writes away under the running server. Uploads are
    refused with a word that says so, reads go on, and /readyz turns 503. (That it comes back
    when the volume is writable again is tests/unit/blob/test_writer.c's: an ext4 that
    went read-only after an error is not remounted read-write while mounted.)"""

    def setUp(self):
        if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
            self.skipTest("mounting a loop device needs root and /dev/loop-control")
        self.root = tempfile.mkdtemp(prefix="ringcas-ext4-")
        self.addCleanup(shutil.rmtree, self.root, ignore_errors=True)
        image = os.path.join(self.root, "image")
        self.mount = os.path.join(self.root, "mnt")
        os.mkdir(self.mount)
        with open(image, "wb") as f:
            f.truncate(512 * MIB)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True, capture_output=True,
                       timeout=120)
        r = subprocess.run(["mount", "-o", "loop,errors=remount-ro", "-t", "ext4", image,
                            self.mount], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.skipTest("this machine cannot loop-mount ext4: %s" % r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", self.mount], timeout=120)
        dev = os.path.basename(subprocess.run(["findmnt", "-n", "-o", "SOURCE", self.mount],
                                              capture_output=True, text=True).stdout.strip())
        self.trigger = "/sys/fs/ext4/%s/trigger_fs_error" % dev
        if not os.path.exists(self.trigger):
            self.skipTest("this kernel has no %s" % self.trigger)

    def test_uploads_are_refused_with_a_reason_and_reads_go_on(self):
        server = harness.Server(cores=1, data_dir=os.path.join(self.mount, "data"))
        server.start()
        self.addCleanup(server.cleanup)
        before = os.urandom(100000)
        url = "%s/cas/%s" % (server.url, hashlib.sha256(before).hexdigest())
        self.assertEqual(http_put(url, before)[0], 201)
        self.assertEqual(server.metric("ringcas_store_read_only"), 0)
        with open(self.trigger, "w") as f:
            f.write("ringcas test")
        data = os.urandom(100000)
        status, body = http_put("%s/cas/%s" % (server.url, hashlib.sha256(data).hexdigest()),
                                data)
        self.assertEqual(status, 503, body)
        self.assertIn(b"read-only", body)
        c = reapi.Client(server.address)
        try:
            d = digest(data)
            req = reapi.msg("google.bytestream.WriteRequest", write_offset=0, data=data,
                            finish_write=True, resource_name="uploads/%s/blobs/%s/%d"
                            % (uuid.uuid4(), d.hash, d.size_bytes))
            with self.assertRaises(grpc.RpcError) as e:
                c.Write(iter([req]), timeout=30)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertIn("read-only", e.exception.details())
        finally:
            c.close()
        self.assertEqual(http_get(url), (200, before))
        self.assertEqual(http_get(server.url + "/readyz"), (503, b"data folder read-only\n"))
        self.assertEqual(server.metric("ringcas_store_read_only"), 1)
        server.stop()
        with open(server.log_path) as f:
            log = f.read()
        self.assertEqual(log.count("is read-only (mounted so, or remounted read-only"), 1, log)


def http_put(url, data):
    req = urllib.request.Request(url, data=data, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


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
