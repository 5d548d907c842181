"""Real build tools against ringcas's HTTP/1.1 cache API: Bazel's HTTP remote cache (Debian's
bazel-bootstrap 4.2.3, offline), ccache's HTTP remote storage (Debian's ccache 4.7), with
the default layout and with layout=bazel, and Gradle's HTTP build cache (Debian's gradle
4.4.1)."""

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


@harness.needs("bazel", "bazel-bootstrap")
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


@harness.needs("ccache", "ccache")
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


GRADLE_SETTINGS = """
rootProject.name = 'ringcas-gradle'
buildCache {
    local(DirectoryBuildCache) { enabled = false }
    remote(HttpBuildCache) {
        url = '%s/gradle/'
        push = true
    }
}
"""

# Two cacheable tasks: a 5 MiB file, and a folder with an empty file beside a small one.
GRADLE_BUILD = """
task big {
    def out = file("$buildDir/big.bin")
    inputs.property("size", 5242880)
    outputs.file(out)
    outputs.cacheIf { true }
    doLast { out.bytes = ("x" * 5242880).bytes }
}
task tree {
    def out = file("$buildDir/tree")
    inputs.property("v", 1)
    outputs.dir(out)
    outputs.cacheIf { true }
    doLast {
        new File(out, "empty.txt").text = ""
        new File(out, "small.txt").text = "hello\\n"
    }
}
"""


@harness.needs("gradle", "gradle")
class GradleHttpCache(harness.ServerTestCase):
    server_args = ("--max-size", "1GiB")

    def gradle(self, tmp, proj):
        # Not --offline: Gradle turns its remote cache off with it. The build needs nothing
        # from the network; its user home is a fresh folder, and no daemon outlives the test.
        env = dict(os.environ, GRADLE_USER_HOME=os.path.join(tmp, "home"), HOME=tmp)
        r = subprocess.run(["gradle", "--no-daemon", "--build-cache", "--console=plain",
                            "big", "tree"], cwd=proj, env=env, capture_output=True, text=True,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        # Gradle turns a cache that fails off for the rest of the build, with a warning.
        self.assertNotRegex(r.stdout + r.stderr, r"(?i)could not (load|store)|disabled", r.stdout)
        return r.stdout

    def test_second_build_after_clean_takes_every_task_from_the_cache(self):
        tmp = tempfile.mkdtemp(prefix="ringcas-gradle-")
        try:
            proj = os.path.join(tmp, "proj")
            os.makedirs(proj)
            with open(os.path.join(proj, "settings.gradle"), "w") as f:
                f.write(GRADLE_SETTINGS % self.server.url)
            with open(os.path.join(proj, "build.gradle"), "w") as f:
                f.write(GRADLE_BUILD)
            out = self.gradle(tmp, proj)
            self.assertRegex(out, r"2 actionable tasks: 2 executed", out)
            self.assertGreaterEqual(self.server.metric("ringcas_requests_total", route="PUT /key",
                                                       status="201"), 2)
            shutil.rmtree(os.path.join(proj, "build"))
            shutil.rmtree(os.path.join(proj, ".gradle"))
            out = self.gradle(tmp, proj)
            self.assertRegex(out, r":big FROM-CACHE", out)
            self.assertRegex(out, r":tree FROM-CACHE", out)
            self.assertRegex(out, r"2 actionable tasks: 2 from cache", out)
            with open(os.path.join(proj, "build", "big.bin"), "rb") as f:
                self.assertEqual(f.read(), b"x" * 5242880)
            tree = os.path.join(proj, "build", "tree")
            self.assertEqual(os.path.getsize(os.path.join(tree, "empty.txt")), 0)
            with open(os.path.join(tree, "small.txt"), "rb") as f:
                self.assertEqual(f.read(), b"hello\n")
            self.assertGreaterEqual(self.server.metric("ringcas_requests_total", route="GET /key",
                                                       status="200"), 2)
            self.server.wait_quiet(extra=("blob_uploads", "blob_readers"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
