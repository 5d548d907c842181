"""Bazel against the real server: Debian's bazel-bootstrap 4.2.3, offline, builds a workspace
of genrules (a 5 MiB output, an empty one, a dependent action) with --remote_cache=grpc://…,
throws its output base away (clean --expunge), and builds again: every cacheable action must
be a remote cache hit and the outputs must be byte-identical. Then, over --remote_cache=http://…,
a cache entry whose output blob is gone must be a miss that Bazel runs again; and a tree
artifact of 50,000 files (a Tree blob over 4 MiB) must be a hit too; and with
--remote_download_minimal across a server restart, an output never downloaded must be fetched
when an action that reads it runs. Bazel runs in
batch mode with a private output root, so nothing outlives the test."""

import hashlib
import http.client
import http.server
import os
import re
import shutil
import subprocess
import tempfile
import threading
import unittest

import harness
import reapi

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
# Reads big.bin: run locally, it needs the blob; with --remote_download_minimal it was never
# downloaded, so Bazel fetches it then.
BIGSUM = ('genrule(name = "bigsum", srcs = [":big"], outs = ["bigsum.txt"], '
          'cmd = "sha256sum < $< > $@")\n')
BIG = 5 << 20


class LosingProxy:
    """An HTTP/1.1 proxy between Bazel and the server that forwards every request and records
    (method, path, status), except a PUT of a /cas/ blob of <lose> bytes: it reads the body,
    answers 200 and forwards nothing. The server then holds the ActionResult that names the
    blob but not the blob, as when eviction took it; nothing in the server is touched."""

    def __init__(self, upstream_port, lose):
        self.log, self.lock, self.lose = [], threading.Lock(), lose
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def body(self):
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    data = b""
                    while True:
                        n = int(self.rfile.readline().split(b";")[0], 16)
                        data += self.rfile.read(n)
                        self.rfile.readline()
                        if n == 0:
                            return data
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def forward(self):
                body = self.body() if self.command == "PUT" else None
                lost = self.command == "PUT" and "/cas/" in self.path and len(body) == proxy.lose
                if lost:
                    status, headers, data = 200, [], b""
                else:
                    if not hasattr(self, "up"):
                        self.up = http.client.HTTPConnection("127.0.0.1", upstream_port,
                                                             timeout=120)
                    for retry in (False, True):  # once more on a kept-alive one closed
                        try:
                            self.up.request(self.command, self.path, body=body)
                            r = self.up.getresponse()
                            status, data = r.status, r.read()
                            break
                        except (http.client.HTTPException, ConnectionError):
                            self.up.close()
                            if retry:
                                raise
                    headers = [(k, v) for k, v in r.getheaders()
                               if k.lower() in ("content-length", "content-type")]
                with proxy.lock:
                    proxy.log.append((self.command, self.path, "lost" if lost else status))
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                if not any(k.lower() == "content-length" for k, _ in headers):
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = forward

            def finish(self):
                super().finish()
                if hasattr(self, "up"):
                    self.up.close()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.httpd.server_address[1]

    def requests(self, *statuses):
        with self.lock:
            return [(m, p, s) for m, p, s in self.log if not statuses or s in statuses]


@harness.needs("bazel", "bazel-bootstrap")
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

    def processes(self, stderr):
        """The counts of Bazel's summary line: "6 processes: 4 remote cache hit, 1 internal,
        1 local." gives "4 remote cache hit, 1 internal, 1 local."."""
        m = re.search(r"(\d+) processes?: (.*)", stderr)
        self.assertIsNotNone(m, stderr[-2000:])
        if os.environ.get("RC_VERBOSE"):
            print(m.group(0))
        return m.group(2)

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
            procs = self.processes(second)
            self.assertIn("%d remote cache hit" % len(TARGETS), procs, second[-2000:])
            self.assertNotIn("linux-sandbox", procs)
            self.assertNotIn(" local", procs)
            self.assertEqual(self.outputs(), built)
            srv.wait_quiet(extra=("h2_streams", "grpc_calls", "grpc_segs", "grpc_slices",
                                  "grpc_pins", "bs_readers", "bs_uploads", "h2_conns"))

    def test_http_hit_whose_output_is_gone_is_run_again(self):
        """--remote_cache=http://, through a LosingProxy that never lets big.bin's 5 MiB blob
        reach the server: the server holds every ActionResult, big's included, but not that
        blob, as when eviction took it. Its GET /ac/ must be 404 (the server checks that a
        result's outputs are present, docs/http.md), so Bazel runs big again:

        - after clean --expunge, a plain build: 4 remote cache hits, big run locally with the
          right bytes, and the lost blob never asked for;
        - after clean --expunge, with --remote_download_minimal, //:bigsum, which reads
          big.bin: big and bigsum run locally and the build succeeds.

        Against a server that served the result unchecked (7df698a, before a5f1549) Bazel
        4.2.3 takes big's GET /ac/ 200 as a hit. In the plain build it then fetches the blob,
        gets 404 and quietly runs big locally: same summary line, caught here only by that
        GET /cas/ 404. With --remote_download_minimal it downloads nothing, so bigsum's
        input is fetched when bigsum runs, and the build fails: "Failed to fetch file with
        hash '…' because it does not exist remotely. --remote_download_outputs=minimal does
        not work if your remote cache evicts files during builds"."""
        with open(os.path.join(self.ws, "BUILD"), "a") as f:
            f.write('genrule(name = "bigsum", srcs = [":big"], outs = ["bigsum.txt"], '
                    'cmd = "wc -c < $< > $@")\n')
        with harness.Server() as srv:
            with LosingProxy(srv.port, BIG) as proxy:
                flags = ["--remote_cache=" + proxy.url, "--remote_timeout=120",
                         "--spawn_strategy=local", "--color=no", "--noshow_progress"]
                first = self.bazel("build", *flags, *TARGETS)
                built = self.outputs()
                self.assertEqual(built["big.bin"], b"r" * BIG)
                self.assertNotIn("remote cache hit", first)
                lost = proxy.requests("lost")
                self.assertEqual(len(lost), 1, proxy.requests())
                results = [p for m, p, s in proxy.requests(201) if m == "PUT" and "/ac/" in p]
                self.assertEqual(len(results), len(TARGETS), proxy.requests())
                answers = []
                for path in results:
                    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
                    conn.request("GET", path)
                    r = conn.getresponse()
                    answers.append((r.status, r.read()))
                    conn.close()
                self.assertEqual(sorted(s for s, _ in answers),
                                 [200] * (len(TARGETS) - 1) + [404])
                self.assertIn(b"outputs are not in the CAS", max(answers)[1])

                def again(*args):
                    self.bazel("clean", "--expunge")
                    seen = len(proxy.requests())
                    out = self.bazel("build", *flags, *args)
                    reqs = proxy.requests()[seen:]
                    if os.environ.get("RC_VERBOSE"):
                        print("\n".join("%s %s %s" % r for r in reqs))
                    self.assertEqual([r for r in reqs if "/cas/" in r[1] and r[2] == 404], [],
                                     "a hit was served whose output is gone")
                    self.assertIn(("PUT", lost[0][1], "lost"), reqs)  # run and uploaded again
                    return self.processes(out), out[-2000:]

                procs, tail = again(*TARGETS)
                self.assertIn("%d remote cache hit" % (len(TARGETS) - 1), procs, tail)
                self.assertRegex(procs, r"\b1 (local|linux-sandbox)\b", tail)
                self.assertEqual(self.outputs(), built)

                procs, tail = again("--remote_download_minimal", "//:bigsum")
                self.assertNotIn("remote cache hit", procs, tail)
                self.assertRegex(procs, r"\b2 (local|linux-sandbox)\b", tail)
                with open(os.path.join(self.ws, "bazel-bin", "bigsum.txt"), "rb") as f:
                    self.assertEqual(f.read().strip(), str(BIG).encode())
            srv.wait_quiet(extra=("blob_readers", "bs_readers", "pb_mem_bytes"))

    def test_minimal_across_a_restart_fetches_an_output_it_never_downloaded(self):
        """--remote_cache=grpc:// with --remote_download_minimal, across a server restart on
        the same data folder and port and a clean --expunge: //:big and //:bigsum (which
        reads big.bin) are both remote cache hits and big.bin is never downloaded; then
        bigsum's command changes, so it runs locally and Bazel fetches the 5 MiB input it
        never had from the restarted server. The sum must be big's, and no read after the
        restart may be NOT_FOUND: what the server acknowledged before its drain, results and
        blobs, is what it serves after it (docs/grpc.md, "Bazel")."""
        with open(os.path.join(self.ws, "BUILD"), "a") as f:
            f.write(BIGSUM)
        want = hashlib.sha256(b"r" * BIG).hexdigest().encode()
        with harness.Server() as srv:
            flags = ["--remote_cache=grpc://" + srv.address, "--remote_timeout=120",
                     "--remote_download_minimal", "--spawn_strategy=local", "--color=no",
                     "--noshow_progress"]
            first = self.bazel("build", *flags, "//:bigsum")
            self.assertRegex(self.processes(first), r"\b2 (local|linux-sandbox)\b")
            srv.restart()
            self.bazel("clean", "--expunge")
            second = self.bazel("build", *flags, "//:bigsum")
            procs = self.processes(second)
            self.assertIn("2 remote cache hit", procs, second[-2000:])
            self.assertNotIn(" local", procs)
            self.assertFalse(os.path.exists(os.path.join(self.ws, "bazel-bin", "big.bin")))
            with open(os.path.join(self.ws, "BUILD")) as f:
                build = f.read()
            with open(os.path.join(self.ws, "BUILD"), "w") as f:
                f.write(build.replace("sha256sum < $< > $@", "sha256sum < $< > $@; true"))
            third = self.bazel("build", *flags, "//:bigsum")
            procs = self.processes(third)
            self.assertIn("1 remote cache hit", procs, third[-2000:])
            self.assertRegex(procs, r"\b1 (local|linux-sandbox)\b", third[-2000:])
            with open(os.path.join(self.ws, "bazel-bin", "bigsum.txt"), "rb") as f:
                self.assertEqual(f.read().split()[0], want)
            read = "google.bytestream.ByteStream/Read"
            self.assertGreaterEqual(srv.metric("ringcas_requests_total", route=read, status=0), 1)
            self.assertEqual(srv.metric("ringcas_requests_total", route=read, status=5), 0)
            srv.wait_quiet(extra=("blob_readers", "bs_readers", "pb_mem_bytes"))

    def test_large_tree_artifact_is_a_remote_cache_hit(self):
        """A tree artifact (ctx.actions.declare_directory) of 50,000 files in 250 folders:
        Bazel uploads its Tree, a blob of about 5 MB naming every file, and the check behind a
        hit reads all of it (docs/grpc.md, "ActionCache"). A check that read a Tree only up to
        4 MiB (before d467330) called it missing, and the action ran again on every build."""
        with open(os.path.join(self.ws, "tree.bzl"), "w") as f:
            f.write(TREE_RULE)
        with open(os.path.join(self.ws, "BUILD"), "w") as f:
            f.write('load(":tree.bzl", "tree")\ntree(name = "many")\n')
        with harness.Server() as srv:
            flags = ["--remote_cache=grpc://" + srv.address, "--remote_timeout=120",
                     "--spawn_strategy=local", "--color=no", "--noshow_progress"]
            first = self.bazel("build", *flags, "//:many")
            self.assertNotIn("remote cache hit", first)
            built = self.tree_files()
            self.assertEqual(len(built), 50000)
            # Every folder's names differ, so its Directory does: Bazel's Tree holds 251
            # distinct Directories whatever it deduplicates, and is over 4 MiB.
            self.assertGreater(self.tree_size_at_least(), 4 << 20)
            self.bazel("clean", "--expunge")
            second = self.bazel("build", *flags, "//:many")
            procs = self.processes(second)
            self.assertIn("1 remote cache hit", procs, second[-2000:])
            self.assertNotIn(" local", procs)
            self.assertEqual(self.tree_files(), built)
            srv.wait_quiet(extra=("blob_readers", "bs_readers", "pb_mem_bytes"))

    def tree_size_at_least(self):
        """The bytes of the distinct Directory messages of bazel-bin/many, as REAPI builds
        them (files sorted by name, digests of their contents): a lower bound on the size of
        the Tree Bazel uploads, which holds each distinct Directory at least once."""
        top = os.path.join(self.ws, "bazel-bin", "many")
        dirs = set()
        for d, _, files in os.walk(top):
            msg = reapi.msg("Directory")
            for name in sorted(files):
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
                node = msg.files.add(name=name)
                node.digest.hash = hashlib.sha256(data).hexdigest()
                node.digest.size_bytes = len(data)
            dirs.add(msg.SerializeToString())
        return sum(len(b) for b in dirs)

    def tree_files(self):
        top = os.path.join(self.ws, "bazel-bin", "many")
        out = {}
        for d, _, files in os.walk(top):
            for name in files:
                with open(os.path.join(d, name), "rb") as f:
                    out[os.path.relpath(os.path.join(d, name), top)] = f.read()
        return out


TREE_RULE = r'''
def _tree(ctx):
    out = ctx.actions.declare_directory(ctx.attr.name)
    ctx.actions.run_shell(
        outputs = [out],
        arguments = [out.path],
        command = """
for d in $(seq 1 250); do
  mkdir -p "$1/folder-$d"
  for f in $(seq 1 200); do echo "content $((f % 100))" > "$1/folder-$d/output-$d-$f.txt"; done
done
""",
    )
    return [DefaultInfo(files = depset([out]))]

tree = rule(implementation = _tree)
'''

if __name__ == "__main__":
    unittest.main()
