"""Bazel against the real server: Debian's bazel-bootstrap 4.2.3, offline, builds a workspace
of genrules (a 5 MiB output, an empty one, a dependent action) with --remote_cache=grpc://…,
throws its output base away (clean --expunge), and builds again: every cacheable action must
be a remote cache hit and the outputs must be byte-identical. Bazel runs in batch mode with
a private output root, so nothing outlives the test."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness

BUILD = r'''
genrule(name = "small", outs = ["small.txt"], cmd = "echo hello ringcas > $@")
genrule(name = "big", outs = ["big.bin"],
        cmd = "head -c 5242880 /dev/zero | tr '\\0' 'r' > $@")
genrule(name = "empty", outs = ["empty.txt"], cmd = "touch $@")
genrule(name = "dep", srcs = [":small"], outs = ["dep.txt"], cmd = "cat $< $< > $@")
genrule(name = "medium", outs = ["medium.bin"],
        cmd = "for i in $$(seq 1 20000); do echo line $$i; done > $@")
'''
TARGETS = ["//:small", "//:big", "//:empty", "//:dep", "//:medium"]


@unittest.skipUnless(shutil.which("bazel"), "bazel (bazel-bootstrap) not installed")
class Bazel(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringcas-bazel-")
        self.ws = os.path.join(self.tmp, "ws")
        os.makedirs(self.ws)
        with open(os.path.join(self.ws, "WORKSPACE"), "w") as f:
            f.write("")
        with open(os.path.join(self.ws, "BUILD"), "w") as f:
            f.write(BUILD)
        self.root = os.path.join(self.tmp, "root")

    def tearDown(self):
        subprocess.run(["chmod", "-R", "u+w", self.tmp], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def bazel(self, *args):
        cmd = ["bazel", "--batch", "--output_user_root=" + self.root,
               "--host_jvm_args=-Xmx512m"] + list(args)
        r = subprocess.run(cmd, cwd=self.ws, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, HOME=self.tmp))
        self.assertEqual(r.returncode, 0, "bazel %s failed:\n%s" % (args[0], r.stderr[-4000:]))
        return r.stderr

    def outputs(self):
        out = {}
        for name in ("small.txt", "big.bin", "empty.txt", "dep.txt", "medium.bin"):
            with open(os.path.join(self.ws, "bazel-bin", name), "rb") as f:
                out[name] = f.read()
        return out

    def test_second_build_is_all_remote_cache_hits(self):
        with harness.Server() as srv:
            flags = ["--remote_cache=grpc://" + srv.address, "--remote_instance_name=ci",
                     "--remote_timeout=120", "--spawn_strategy=local", "--color=no",
                     "--noshow_progress"]
            first = self.bazel("build", *flags, *TARGETS)
            built = self.outputs()
            self.assertEqual(len(built["big.bin"]), 5 << 20)
            self.assertEqual(built["empty.txt"], b"")
            self.assertNotIn("remote cache hit", first)
            self.bazel("clean", "--expunge")
            second = self.bazel("build", *flags, *TARGETS)
            if os.environ.get("RC_VERBOSE"):
                print(second)
            m = re.search(r"(\d+) processes?: (.*)", second)
            self.assertIsNotNone(m, second[-2000:])
            self.assertIn("%d remote cache hit" % len(TARGETS), m.group(2), second[-2000:])
            self.assertNotIn("linux-sandbox", m.group(2))
            self.assertNotIn(" local", m.group(2))
            self.assertEqual(self.outputs(), built)
            srv.wait_quiet(extra=("h2_streams", "grpc_calls", "grpc_segs", "grpc_slices",
                                  "grpc_pins", "bs_readers", "bs_uploads", "h2_conns"))


if __name__ == "__main__":
    unittest.main()
