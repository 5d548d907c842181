"""GET and HEAD of <prefix>/ac/<hash> over HTTP answer an ActionResult only when every blob it
references is in the CAS, as gRPC's GetActionResult does (docs/http.md, "Action results"):
output files, stdout and stderr, Tree blobs and the files in them, root Directories walked.
Values that are not ActionResults (ccache's files) are served as stored. Every scenario ends
with the server's connections, readers and message memory back to zero."""

import hashlib
import os
import unittest

import harness
import reapi
from http1 import Raw, request

GAUGES = ("blob_readers", "bs_readers", "pb_mem_bytes")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def digest(data):
    return reapi.msg("Digest", hash=sha(data), size_bytes=len(data))


class HttpActionCache(harness.ServerTestCase):
    server_args = ("--max-size", "1GiB")

    def tearDown(self):
        self.server.wait_quiet(extra=GAUGES)

    def call(self, method, path, body=b"", headers=()):
        headers = list(headers)
        if method == "PUT" and not body:
            headers.append("Content-Length: 0")
        with Raw(self.server.port) as c:
            c.send(request(method, path, headers=headers, body=body))
            return c.read_response(head_request=method == "HEAD")

    def put_cas(self, *blobs):
        for b in blobs:
            self.assertIn(self.call("PUT", "/cas/" + sha(b), b).status, (200, 201))

    def put_ac(self, value, prefix="/bazel"):
        key = sha(os.urandom(16))
        self.assertEqual(self.call("PUT", "%s/ac/%s" % (prefix, key), value).status, 201)
        return "%s/ac/%s" % (prefix, key)

    def status(self, path, value=None):
        """GET's status (its body must be <value> on 200); HEAD must agree."""
        get = self.call("GET", path)
        head = self.call("HEAD", path)
        self.assertEqual(head.status, get.status, path)
        if get.status == 200:
            self.assertEqual(get.body, value)
            self.assertEqual(head.header("content-length"), str(len(value)))
        return get.status

    def result(self, files=(), tree=None, root_dir=None, stdout=None, paths=None):
        ar = reapi.msg("ActionResult", exit_code=0)
        for i, f in enumerate(files):
            ar.output_files.add(path=paths[i] if paths else "out%d" % i, digest=digest(f))
        if tree is not None:
            ar.output_directories.add(path="dir").tree_digest.CopyFrom(digest(tree))
        if root_dir is not None:
            ar.output_directories.add(path="rdir").root_directory_digest.CopyFrom(
                digest(root_dir))
        if stdout is not None:
            ar.stdout_digest.CopyFrom(digest(stdout))
        return ar.SerializeToString()

    def test_complete_result_is_served_as_stored(self):
        out, log = os.urandom(1000), b"stdout of the action"
        self.put_cas(out, log)
        value = self.result(files=[out], stdout=log)
        path = self.put_ac(value)
        self.assertEqual(self.status(path, value), 200)
        self.assertEqual(self.status(path.replace("/bazel/", "/other/"), value), 404)

    def test_missing_output_file_is_404_until_uploaded(self):
        present, absent = os.urandom(100), os.urandom(100)
        self.put_cas(present)
        value = self.result(files=[present, absent])
        path = self.put_ac(value)
        r = self.call("GET", path)
        self.assertEqual(r.status, 404)
        self.assertIn(b"outputs are not in the CAS", r.body)
        self.assertEqual(self.call("HEAD", path).status, 404)
        self.put_cas(absent)
        self.assertEqual(self.status(path, value), 200)

    def test_missing_stdout_is_404(self):
        out, log = os.urandom(100), os.urandom(50)
        self.put_cas(out)
        value = self.result(files=[out], stdout=log)
        path = self.put_ac(value, prefix="")
        self.assertEqual(self.status(path), 404)
        self.put_cas(log)
        self.assertEqual(self.status(path, value), 200)

    def test_tree_outputs_are_checked_file_by_file(self):
        f1, f2 = os.urandom(500), os.urandom(600)
        tree = reapi.msg("Tree")
        tree.root.files.add(name="a", digest=digest(f1))
        sub = tree.children.add()
        sub.files.add(name="b", digest=digest(f2))
        tree.root.directories.add(name="sub", digest=digest(sub.SerializeToString()))
        tb = tree.SerializeToString()
        value = self.result(tree=tb)
        path = self.put_ac(value, prefix="/a/b")
        self.assertEqual(self.status(path), 404)  # no Tree blob
        self.put_cas(tb, f1)
        self.assertEqual(self.status(path), 404)  # f2, inside the Tree, missing
        self.put_cas(f2)
        self.assertEqual(self.status(path, value), 200)

    def test_a_tree_naming_a_directory_it_does_not_hold_is_404(self):
        """gRPC's answer (test_reapi.py): a Tree whose root names a folder it does not hold
        cannot be rebuilt by the client, and was served 200 with every file present."""
        f1 = os.urandom(100)
        sub = reapi.msg("Directory")
        sub.files.add(name="b", digest=digest(f1))
        tree = reapi.msg("Tree")
        tree.root.directories.add(name="sub", digest=digest(sub.SerializeToString()))
        short = tree.SerializeToString()
        tree.children.add().CopyFrom(sub)
        whole = tree.SerializeToString()
        self.put_cas(f1, short, whole)
        self.assertEqual(self.status(self.put_ac(self.result(tree=short))), 404)
        value = self.result(tree=whole)
        self.assertEqual(self.status(self.put_ac(value), value), 200)

    def test_root_directory_outputs_are_walked(self):
        f1, f2 = os.urandom(50), os.urandom(60)
        _, _, rb, lb = reapi.two_level_dir(f1, f2)
        value = self.result(root_dir=rb)
        path = self.put_ac(value)
        self.put_cas(rb, f1, f2)
        self.assertEqual(self.status(path), 404)  # leaf missing
        self.put_cas(lb)
        self.assertEqual(self.status(path, value), 200)

    def test_opaque_values_are_served_as_stored(self):
        # ccache's entries (layout=bazel) begin with its magic "cC"; text; empty; one that is
        # larger than a chunk (read in several pieces).
        big = b"cCrS" + os.urandom(700_000)
        for value in (b"cCrS\x00\x01entry", b"result one", b"", big, os.urandom(3000)):
            path = self.put_ac(value)
            with self.subTest(value=value[:8]):
                self.assertEqual(self.status(path, value), 200)

    def test_a_result_in_several_pieces_is_gathered_and_checked(self):
        out, absent = os.urandom(100), os.urandom(100)
        self.put_cas(out)
        paths = ["bazel-out/k8-fastbuild/bin/pkg/generated/file_%05d.o" % i for i in range(4000)]
        value = self.result(files=[out] * 4000, paths=paths)
        self.assertGreater(len(value), 300_000)  # past the engine's 256 KiB chunk
        path = self.put_ac(value)
        self.assertEqual(self.status(path, value), 200)
        value2 = self.result(files=[out] * 3999 + [absent], paths=paths)
        path2 = self.put_ac(value2)
        self.assertEqual(self.status(path2), 404)

    def test_a_result_too_large_to_check_is_404(self):
        ar = reapi.msg("ActionResult", exit_code=0, stdout_raw=os.urandom(5 << 20))
        path = self.put_ac(ar.SerializeToString())
        self.assertEqual(self.status(path), 404)

    def reads(self):
        return self.server.metric("ringcas_blob_reads_total")

    def test_a_missing_directory_ends_the_walk(self):
        # The first missing directory decides: the 200 present ones after it are not read.
        kids = []
        for i in range(200):
            d = reapi.msg("Directory")
            d.files.add(name="f%d" % i, digest=digest(b""))
            kids.append(d.SerializeToString())
        self.put_cas(*kids)
        root = reapi.msg("Directory")
        root.directories.add(name="gone", digest=digest(os.urandom(40)))
        for i, k in enumerate(kids):
            root.directories.add(name="d%d" % i, digest=digest(k))
        rb = root.SerializeToString()
        self.put_cas(rb)
        path = self.put_ac(self.result(root_dir=rb))
        before = self.reads()
        self.assertEqual(self.call("GET", path).status, 404)
        self.assertLess(self.reads() - before, 10)

    def test_a_missing_output_file_decides_before_any_tree_is_read(self):
        kids = []
        for i in range(100):
            d = reapi.msg("Directory")
            d.files.add(name="f%d" % i, digest=digest(b""))
            kids.append(d.SerializeToString())
        self.put_cas(*kids)
        root = reapi.msg("Directory")
        for i, k in enumerate(kids):
            root.directories.add(name="d%d" % i, digest=digest(k))
        rb = root.SerializeToString()
        self.put_cas(rb)
        path = self.put_ac(self.result(files=[os.urandom(50)], root_dir=rb))
        before = self.reads()
        self.assertEqual(self.call("GET", path).status, 404)
        self.assertLess(self.reads() - before, 5)  # the value itself, no directory

    def test_what_one_check_reads_is_bounded_in_all(self):
        # One 4 MiB Tree named by 20 output directories: 80 MiB to read for one GET. The check
        # stops at its budget (64 MiB) and calls the result incomplete rather than read on.
        tree = reapi.msg("Tree")
        for i in range(3800):
            tree.root.directories.add(name="%04d" % i + "x" * 1000, digest=digest(b""))
        tree.children.add()  # the empty Directory they name: a Tree holds what it names
        tb = tree.SerializeToString()
        self.assertGreater(len(tb), 4_000_000)
        self.put_cas(tb)
        ar = reapi.msg("ActionResult", exit_code=0)
        for i in range(20):
            ar.output_directories.add(path="dir%d" % i).tree_digest.CopyFrom(digest(tb))
        value = ar.SerializeToString()
        path = self.put_ac(value)
        before = self.reads()
        self.assertEqual(self.status(path), 404)
        self.assertLessEqual(self.reads() - before, 2 * 18)  # GET and HEAD: 17 Trees, the value
        # Under the budget the same Tree is read and the result served.
        del ar.output_directories[10:]
        value = ar.SerializeToString()
        self.assertEqual(self.status(self.put_ac(value), value), 200)

    def test_zstd_accepted_still_gets_the_checked_identity_bytes(self):
        out = os.urandom(100)
        self.put_cas(out)
        value = self.result(files=[out])
        path = self.put_ac(value)
        r = self.call("GET", path, headers=["Accept-Encoding: zstd"])
        self.assertEqual((r.status, r.header("content-encoding"), r.body), (200, None, value))

    def test_result_written_over_grpc_is_checked_over_http(self):
        out = os.urandom(200)
        c = reapi.Client(self.server.address)
        try:
            action = os.urandom(32)
            req = reapi.msg("UpdateActionResultRequest", instance_name="ci")
            req.action_digest.CopyFrom(digest(action))
            req.action_result.ParseFromString(self.result(files=[out]))
            c.UpdateActionResult(req, timeout=30)
        finally:
            c.close()
        path = "/ci/ac/" + sha(action)
        self.assertEqual(self.status(path), 404)
        self.put_cas(out)
        self.assertEqual(self.status(path, self.result(files=[out])), 200)


class HttpShardActionCache(harness.ServerTestCase):
    """--no-ac-check: results are served as stored, whatever their outputs (a shard behind a
    frontend that checks completeness across every shard, bb-storage's completenessChecking)."""

    server_args = ("--max-size", "1GiB", "--no-ac-check")
    tearDown = HttpActionCache.tearDown
    call = HttpActionCache.call
    put_ac = HttpActionCache.put_ac
    status = HttpActionCache.status
    result = HttpActionCache.result

    def test_a_result_missing_its_outputs_is_served(self):
        absent, log, tree = os.urandom(100), os.urandom(50), os.urandom(70)
        value = self.result(files=[absent], stdout=log, tree=tree)
        path = self.put_ac(value)
        self.assertEqual(self.status(path, value), 200)
        self.assertEqual(self.status(path.replace("/bazel/", "/other/"), value), 404)

    def test_a_result_too_large_to_check_is_served(self):
        value = reapi.msg("ActionResult", exit_code=0,
                          stdout_raw=os.urandom(5 << 20)).SerializeToString()
        path = self.put_ac(value)
        self.assertEqual(self.status(path, value), 200)


if __name__ == "__main__":
    unittest.main()
