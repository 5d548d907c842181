"""Eviction under a small --max-size on the real server, with grpcio and HTTP/1.1: a cache hit
keeps every blob it names for at least a quarter of the budget of writes after it, however many
there are; every read and existence check refreshes what it touches (FindMissingBlobs,
BatchReadBlobs, ByteStream Read and QueryWriteStatus, HTTP GET and HEAD of /cas/ and /ac/, AC
hits down to the files in output trees), so a hot set outlives the budget written many times
over, also across a restart; an AC entry whose outputs were evicted is a miss on every path.
docs/storage.md ("What survives how much writing after a hit"). Every scenario ends with the
server's refreshes, readers and uploads back to zero."""

import hashlib
import os
import threading
import time
import unittest

import grpc

import harness
import reapi
from http1 import Raw, request

MiB = 1 << 20
MAX = 64 * MiB
ARGS = ("--max-size", "64MiB", "--segment-size", "2MiB")
GAUGES = ("blob_refreshes_open", "blob_readers", "blob_uploads", "bs_readers", "grpc_calls")
SC = grpc.StatusCode


def sha(data):
    return hashlib.sha256(data).hexdigest()


def digest(data):
    return reapi.msg("Digest", hash=sha(data), size_bytes=len(data))


class Clients:
    """What the tests ask of the server (self.c, self.server)."""

    def setUp(self):
        self.server = harness.Server(args=ARGS, cores=self.CORES)
        self.server.start()
        self.c = reapi.Client(self.server.address)

    def tearDown(self):
        self.c.close()
        try:
            self.server.wait_quiet(extra=GAUGES)
            self.server.stop()
        finally:
            self.server.cleanup()

    def put(self, blobs):
        for i in range(0, len(blobs), 64):
            req = reapi.msg("BatchUpdateBlobsRequest")
            for b in blobs[i:i + 64]:
                r = req.requests.add()
                r.digest.CopyFrom(digest(b))
                r.data = b
            codes = [r.status.code for r in self.c.BatchUpdateBlobs(req, timeout=60).responses]
            self.assertEqual(codes, [0] * len(codes))

    def fill(self, nbytes):
        """Writes <nbytes> of incompressible blobs that nothing reads again."""
        for _ in range(nbytes // MiB):
            self.put([os.urandom(MiB)])

    def missing(self, blobs):
        req = reapi.msg("FindMissingBlobsRequest")
        for b in blobs:
            req.blob_digests.add().CopyFrom(digest(b))
        return len(self.c.FindMissingBlobs(req, timeout=60).missing_blob_digests)

    def update(self, action, ar):
        req = reapi.msg("UpdateActionResultRequest")
        req.action_digest.CopyFrom(digest(action))
        req.action_result.CopyFrom(ar)
        self.c.UpdateActionResult(req, timeout=30)

    def get(self, action):
        """GetActionResult: (status code, details)."""
        req = reapi.msg("GetActionResultRequest")
        req.action_digest.CopyFrom(digest(action))
        try:
            self.c.GetActionResult(req, timeout=30)
            return SC.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()

    def http(self, method, path, body=b""):
        headers = ["Content-Length: %d" % len(body)] if method == "PUT" else []
        with Raw(self.server.port) as conn:
            conn.send(request(method, path, headers=headers, body=body))
            return conn.read_response(head_request=method == "HEAD")

    def settled(self, timeout=10.0):
        harness.wait_for(lambda: self.server.metric("ringcas_blob_refreshes_open") == 0 or None,
                         timeout=timeout, what="refreshes to finish")

    @staticmethod
    def result(files=(), tree=None, root=None, stdout=None):
        ar = reapi.msg("ActionResult")
        for i, f in enumerate(files):
            ar.output_files.add(path="out/%d" % i, digest=digest(f))
        if tree is not None:
            ar.output_directories.add(path="tree").tree_digest.CopyFrom(digest(tree))
        if root is not None:
            ar.output_directories.add(path="root").root_directory_digest.CopyFrom(digest(root))
        if stdout is not None:
            ar.stdout_digest.CopyFrom(digest(stdout))
        return ar


class Eviction(Clients, unittest.TestCase):
    CORES = 2

    # -- a hit keeps what it names --

    def test_a_hit_keeps_every_output_for_a_quarter_of_the_budget(self):
        """100 outputs in the oldest part of the log: the hit refreshes every one, so a
        quarter of the budget written after it leaves the result whole. Before, 16 refreshes
        ran per core and the others were dropped: half the outputs were gone after 7 MiB."""
        outs = [os.urandom(32 << 10) for _ in range(100)]
        self.put(outs)
        action = os.urandom(32)
        self.update(action, self.result(files=outs))
        self.fill(50 * MiB)
        self.assertEqual(self.get(action)[0], SC.OK)
        self.settled()
        self.assertGreaterEqual(self.server.metric("ringcas_blob_refreshes_total"), 100)
        self.fill(MAX // 4)
        self.assertEqual(self.missing(outs), 0)
        self.assertEqual(self.get(action)[0], SC.OK)
        self.assertEqual(self.server.metric("ringcas_blob_refreshes_dropped_total"), 0)

    def test_blobs_found_present_outlive_the_result_written_after_them(self):
        """Bazel's upload: FindMissingBlobs finds 100 cold outputs present, skips their upload
        and writes the result; a quarter of the budget later the result is still a hit."""
        outs = [os.urandom(32 << 10) for _ in range(100)]
        self.put(outs)
        self.fill(50 * MiB)
        self.assertEqual(self.missing(outs), 0)
        action = os.urandom(32)
        self.update(action, self.result(files=outs))
        self.settled()
        self.fill(MAX // 4)
        self.assertEqual(self.get(action)[0], SC.OK)

    # -- every path refreshes --

    def test_a_hot_set_touched_through_every_path_outlives_the_budget_written_thrice(self):
        """A few blobs per path, touched after every 2 MiB written while the budget is written
        three times over: all survive, also a restart; untouched ones are evicted. Before,
        HEAD /cas/ did not refresh and its blobs went after one budget."""
        paths = ["fmb", "batch_read", "bs_read", "query_write_status", "get_cas", "head_cas",
                 "get_key", "head_key", "ac_files", "ac_tree", "ac_root", "get_ac", "head_ac"]
        hot = {p: [os.urandom(5000 + i) for i in range(4)] for p in paths}
        cold = [os.urandom(5000) for _ in range(4)]
        self.put([b for p in paths if "key" not in p for b in hot[p]] + cold)
        for p in ("get_key", "head_key"):
            for i, b in enumerate(hot[p]):
                self.assertIn(self.http("PUT", "/%s/%d" % (p, i), b).status, (200, 201))
        tree = reapi.msg("Tree")
        for i, b in enumerate(hot["ac_tree"]):
            tree.root.files.add(name="f%d" % i, digest=digest(b))
        root = reapi.msg("Directory")
        for i, b in enumerate(hot["ac_root"]):
            root.files.add(name="f%d" % i, digest=digest(b))
        hot["ac_tree"].append(tree.SerializeToString())
        hot["ac_root"].append(root.SerializeToString())
        self.put([hot["ac_tree"][-1], hot["ac_root"][-1]])
        actions = {p: os.urandom(32) for p in ("ac_files", "ac_tree", "ac_root")}
        self.update(actions["ac_files"], self.result(files=hot["ac_files"]))
        self.update(actions["ac_tree"], self.result(tree=hot["ac_tree"][-1]))
        self.update(actions["ac_root"], self.result(root=hot["ac_root"][-1]))
        http_ac = {p: sha(os.urandom(32)) for p in ("get_ac", "head_ac")}
        for p, h in http_ac.items():
            body = self.result(files=hot[p]).SerializeToString()
            self.assertIn(self.http("PUT", "/ac/" + h, body).status, (200, 201))

        def touch():
            self.assertEqual(self.missing(hot["fmb"]), 0)
            req = reapi.msg("BatchReadBlobsRequest")
            for b in hot["batch_read"]:
                req.digests.add().CopyFrom(digest(b))
            got = self.c.BatchReadBlobs(req, timeout=60).responses
            self.assertEqual([r.status.code for r in got], [0] * 4)
            for b in hot["bs_read"]:
                d = digest(b)
                req = reapi.msg("google.bytestream.ReadRequest",
                                resource_name="blobs/%s/%d" % (d.hash, d.size_bytes))
                self.assertEqual(b"".join(r.data for r in self.c.Read(req, timeout=30)), b)
            for b in hot["query_write_status"]:
                d = digest(b)
                name = "uploads/%s/blobs/%s/%d" % ("2b9c6d1e-0f3a-4c5b-8d7e-9a1b2c3d4e5f",
                                                   d.hash, d.size_bytes)
                req = reapi.msg("google.bytestream.QueryWriteStatusRequest", resource_name=name)
                self.assertTrue(self.c.QueryWriteStatus(req, timeout=30).complete)
            for method, p in (("GET", "get_cas"), ("HEAD", "head_cas")):
                for b in hot[p]:
                    self.assertEqual(self.http(method, "/cas/" + sha(b)).status, 200, p)
            for method, p in (("GET", "get_key"), ("HEAD", "head_key")):
                for i in range(len(hot[p])):
                    self.assertEqual(self.http(method, "/%s/%d" % (p, i)).status, 200, p)
            for p, action in actions.items():
                self.assertEqual(self.get(action), (SC.OK, ""), p)
            for method, p in (("GET", "get_ac"), ("HEAD", "head_ac")):
                self.assertEqual(self.http(method, "/ac/" + http_ac[p]).status, 200, p)

        for _ in range(3 * MAX // (2 * MiB)):
            touch()
            self.settled()  # the copies race the next uploads (docs/storage.md, "The limit")
            self.fill(2 * MiB)
        touch()
        self.settled()
        self.assertEqual(self.missing(cold), len(cold))
        self.assertGreater(self.server.metric("ringcas_store_evicted_segments_total"), 60)
        self.assertGreaterEqual(self.server.metric("ringcas_store_evicted_blobs_total"),
                                2 * MAX // MiB)
        self.assertLessEqual(self.server.metric("ringcas_store_disk_bytes"), MAX)
        self.c.close()
        self.server.wait_quiet(extra=GAUGES)
        self.server.restart()
        self.c = reapi.Client(self.server.address)
        touch()
        self.assertEqual(self.missing(cold), len(cold))
        self.assertLessEqual(self.server.metric("ringcas_store_disk_bytes"), MAX)

    # -- a result whose outputs were evicted is a miss --

    def test_a_result_whose_outputs_were_evicted_is_a_miss_on_every_path(self):
        """Each result names one blob that eviction took (an output file, a file in a Tree,
        stdout, a file under a root Directory) and fresh others: gRPC NOT_FOUND, HTTP 404 on
        GET and HEAD, saying the outputs are missing (the result itself is there)."""
        gone = {k: os.urandom(4000) for k in ("file", "tree", "stdout", "root")}
        self.put(list(gone.values()))
        self.fill(40 * MiB)
        fresh = os.urandom(3000)
        tree = reapi.msg("Tree")
        tree.root.files.add(name="fresh", digest=digest(fresh))
        tree.root.files.add(name="gone", digest=digest(gone["tree"]))
        root = reapi.msg("Directory")
        root.files.add(name="fresh", digest=digest(fresh))
        root.files.add(name="gone", digest=digest(gone["root"]))
        tb, rb = tree.SerializeToString(), root.SerializeToString()
        self.put([fresh, tb, rb])
        results = {
            "file": self.result(files=[fresh, gone["file"]]),
            "tree": self.result(files=[fresh], tree=tb),
            "stdout": self.result(files=[fresh], stdout=gone["stdout"]),
            "root": self.result(root=rb),
        }
        actions = {k: os.urandom(32) for k in results}
        keys = {k: sha(os.urandom(32)) for k in results}
        for k, ar in results.items():
            self.update(actions[k], ar)
            self.assertIn(self.http("PUT", "/ac/" + keys[k], ar.SerializeToString()).status,
                          (200, 201))
        for k in results:
            self.assertEqual(self.get(actions[k])[0], SC.OK, k)
        # Only the fresh blobs are read from now on; the old ones go.
        for _ in range(30):
            self.fill(MiB)
            self.assertEqual(self.missing([fresh, tb, rb]), 0)
        self.assertEqual(self.missing(list(gone.values())), len(gone))
        for k in results:
            code, details = self.get(actions[k])
            self.assertEqual(code, SC.NOT_FOUND, k)
            self.assertIn("outputs", details)
            resp = self.http("GET", "/ac/" + keys[k])
            self.assertEqual(resp.status, 404, k)
            self.assertIn(b"outputs", resp.body)
            self.assertEqual(self.http("HEAD", "/ac/" + keys[k]).status, 404, k)


class HitAtTheTail(Clients, unittest.TestCase):
    """A hit on outputs at the very tail of the log while other clients write: every key the
    hit queues pins its segment, so the copy reads it even after eviction took the segment
    (docs/storage.md, "What survives how much writing after a hit")."""

    CORES = 1
    OUTS = 300
    WRITERS = 2

    def test_a_hit_on_outputs_at_the_tail_keeps_them_all_while_others_write(self):
        """300 outputs of 32 KiB (about 2.4 MiB stored) are the oldest data of a store about
        2.5 MiB short of eviction; two other clients start to upload 1 MiB blobs in a loop as
        the hit comes. Every output survives the 16 MiB they write in all. Before, 52 to 208
        of the 300 were lost: their segments were evicted while their keys waited for a
        copy."""
        outs = [os.urandom(8 << 10) * 4 for _ in range(self.OUTS)]  # compress about 4:1
        self.put(outs)
        action = os.urandom(32)
        self.update(action, self.result(files=outs))
        self.fill(57 * MiB)
        self.assertEqual(self.server.metric("ringcas_store_evicted_segments_total"), 0)
        written = [0] * self.WRITERS
        stop = threading.Event()
        go = threading.Barrier(self.WRITERS + 1, timeout=60)
        errors = []

        def writer(i):
            c = reapi.Client(self.server.address)
            try:
                go.wait()
                while not stop.is_set():
                    b = os.urandom(MiB)
                    req = reapi.msg("BatchUpdateBlobsRequest")
                    r = req.requests.add()
                    r.digest.CopyFrom(digest(b))
                    r.data = b
                    c.BatchUpdateBlobs(req, timeout=60)
                    written[i] += 1
            except Exception as e:  # reported by the test's thread
                errors.append(e)
            finally:
                c.close()

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(self.WRITERS)]
        for t in threads:
            t.start()
        worst = 0
        try:
            go.wait()
            self.assertEqual(self.get(action)[0], SC.OK)
            # While the copies wait behind the writes, eviction takes the outputs' segments:
            # they must still be found (where their copies read them), not missing for the
            # moment between the eviction and the copy.
            start = time.monotonic()
            while sum(written) < 16 and time.monotonic() - start < 120:
                worst = max(worst, self.missing(outs))
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])
        self.assertGreaterEqual(sum(written), 16)
        self.assertEqual(worst, 0, "outputs missing for a moment after an OK hit")
        self.settled(timeout=60)
        self.assertGreater(self.server.metric("ringcas_store_evicted_segments_total"), 0)
        self.assertEqual(self.missing(outs), 0, "outputs lost after an OK hit")
        self.assertEqual(self.get(action)[0], SC.OK)
        self.assertEqual(self.server.metric("ringcas_blob_refreshes_unpinned_total"), 0)
        # The copies ended: their pins, and the evicted files they held, are gone.
        self.assertEqual(self.server.metric("ringcas_store_pinned_segments"), 0)
        self.assertEqual(self.server.metric("ringcas_store_held_bytes"), 0)


class SmallerBudgetAtStart(unittest.TestCase):
    """A restart with a --max-size below what the store holds evicts at once, before serving,
    and says so in the log: a typo (90M for 90G) empties a cache, and before, nothing but a
    counter in /metrics told the operator who had changed the flag."""

    def test_the_eviction_at_start_is_logged(self):
        blobs = [os.urandom(256 << 10) for _ in range(40)]  # 10 MiB, incompressible
        args = ["--segment-size", "1MiB"]
        with harness.Server(args=args + ["--max-size", "64MiB"], cores=1) as srv:
            for b in blobs:
                reapi.put_blob(srv.address, b)
            srv.stop()
            srv.args = args + ["--max-size", "6MiB"]
            srv.start()
            segments = srv.metric("ringcas_store_evicted_segments_total")
            evicted = srv.metric("ringcas_store_evicted_blobs_total")
            self.assertGreater(segments, 0)
            self.assertGreater(evicted, 0)
            with open(srv.log_path) as f:
                log = f.read()
            line = [l for l in log.splitlines() if "over its limit of 5 MiB" in l]
            self.assertEqual(len(line), 1, log)
            self.assertIn(" warn: the store held ", line[0])
            self.assertIn("evicted its %d oldest segments with %d of its 40 blobs" %
                          (segments, evicted), line[0])
            srv.stop()


if __name__ == "__main__":
    unittest.main()
