"""Real build tools against ringcas's HTTP/1.1 cache API: Bazel's HTTP remote cache (Debian's
bazel-bootstrap 4.2.3, offline) and ccache's HTTP remote storage (Debian's ccache 4.7), with
the default layout and with layout=bazel."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness

BUILD = r'''
genrule(name = "small", outs = ["small.txt"], cmd = "echo hello > $@")
genrule(name = "big", outs = ["big.bin"],
        cmd = "head -c 5242880 /dev/zero | tr '\\0' 'x' > $@")
genrule(name = "empty", outs = ["empty.txt"], cmd = "touch $@")
genrule(name = "dep", srcs = [":small", ":empty"], outs = ["dep.txt"],
        cmd = "cat $(location :small) $(location :small) > $@")
'''


@unittest.skipUnless(shutil.which("bazel"), "needs Debian's bazel-bootstrap")
class BazelHttpCache(harness.ServerTestCase):
    server_args = ("--max-size", "1GiB")

    def bazel(self, root, ws, *args):
        cmd = ["bazel", "--batch", "--output_user_root=" + root] + list(args)
        r = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, HOME=root))
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        return r.stderr

    def test_rebuild_after_clean_is_all_remote_cache_hits(self):
        tmp = tempfile.mkdtemp(prefix="ringcas-bazel-")
        try:
            ws = os.path.join(tmp, "ws")
            os.makedirs(ws)
            open(os.path.join(ws, "WORKSPACE"), "w").close()
            with open(os.path.join(ws, "BUILD"), "w") as f:
                f.write(BUILD)
            root = os.path.join(tmp, "root")
            flags = ["--remote_cache=%s/bazel" % self.server.url, "--spawn_strategy=local",
                     "--noshow_progress"]
            out = self.bazel(root, ws, "build", *flags, "//...")
            self.assertIn("4 linux-sandbox" if "linux-sandbox" in out else "4 local", out)
            self.bazel(root, ws, "clean", "--expunge")
            out = self.bazel(root, ws, "build", *flags, "//...")
            m = re.search(r"(\d+) processes: (.*)", out)
            self.assertIsNotNone(m, out)
            self.assertIn("4 remote cache hit", m.group(2), out)
            self.assertNotIn("local", m.group(2), out)
            with open(os.path.join(ws, "bazel-bin", "big.bin"), "rb") as f:
                self.assertEqual(f.read(), b"x" * 5242880)
            self.assertEqual(os.path.getsize(os.path.join(ws, "bazel-bin", "empty.txt")), 0)
            # The action cache entries live under the "bazel" instance.
            self.assertGreaterEqual(self.server.metric("ringcas_requests_total",
                                                       route="GET /ac", status="200"), 4)
            self.assertGreaterEqual(self.server.metric("ringcas_requests_total",
                                                       route="GET /cas", status="200"), 3)
            self.server.wait_quiet(extra=("blob_uploads", "blob_readers"))
        finally:
            subprocess.run(["chmod", "-R", "u+w", tmp])
            shutil.rmtree(tmp, ignore_errors=True)


@unittest.skipUnless(shutil.which("ccache") and shutil.which("gcc"), "needs ccache and gcc")
class CcacheRemote(harness.ServerTestCase):
    server_args = ("--max-size", "1GiB")

    def compile_twice(self, storage, source):
        tmp = tempfile.mkdtemp(prefix="ringcas-ccache-")
        try:
            src = os.path.join(tmp, "a.c")
            with open(src, "w") as f:
                f.write(source)
            env = dict(os.environ, CCACHE_DIR=os.path.join(tmp, "cache"),
                       CCACHE_REMOTE_STORAGE=storage, CCACHE_REMOTE_ONLY="1")
            env.pop("CCACHE_DISABLE", None)
            for i in range(2):
                r = subprocess.run(["ccache", "gcc", "-c", src, "-o",
                                    os.path.join(tmp, "a%d.o" % i)],
                                   env=env, capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(tmp, "a0.o"), "rb") as a, open(os.path.join(tmp, "a1.o"),
                                                                    "rb") as b:
                self.assertEqual(a.read(), b.read())
            r = subprocess.run(["ccache", "-s", "-v"], env=env, capture_output=True, text=True,
                               timeout=30)
            remote = r.stdout.split("Remote storage:")[1]
            self.assertRegex(remote, r"Hits:\s+1\s*/\s*2", r.stdout)
            self.assertRegex(remote, r"Misses:\s+1\s*/\s*2", r.stdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_default_layout_second_compile_is_a_remote_hit(self):
        self.compile_twice(self.server.url + "/ccache", "int f(int x) { return x * 42; }\n")
        self.assertGreaterEqual(self.server.metric("ringcas_requests_total", route="GET /key",
                                                   status="200"), 1)
        self.server.wait_quiet(extra=("blob_uploads", "blob_readers"))

    def test_bazel_layout_second_compile_is_a_remote_hit(self):
        self.compile_twice(self.server.url + "/ccache|layout=bazel",
                           "int g(int x) { return x * 43; }\n")
        self.assertGreaterEqual(self.server.metric("ringcas_requests_total", route="GET /ac",
                                                   status="200"), 1)
        self.server.wait_quiet(extra=("blob_uploads", "blob_readers"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
