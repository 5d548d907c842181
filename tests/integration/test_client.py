"""The client CLI (ringcas put, get, stat) against the real `ringcas serve`.

- stat prints the capabilities and a summary of the counters;
- bad input gives one clear line and its exit status (docs/cli.md);
- a server that stops answering (SIGSTOP, or a socket that accepts and never replies) makes
  put, get and stat fail after --timeout instead of hanging;
- `put -` reads the blob from stdin (a pipe), stdin given twice is a usage error;
- put/get round trips of 0 B, 1 B and 64 MiB, identity and --compress, byte for byte; a reader
  that goes away mid-download cancels the server's reads (its gauges return to zero).

The round trips need the ByteStream/CAS services. While the server in this build answers them
with UNAVAILABLE ("storage engine not available in this build"), those tests are skipped with
that reason; everything else runs.
"""

import hashlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import harness

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/0"
EXIT_USAGE, EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_UNAVAILABLE = 2, 3, 4, 5

# Gauges of the server that must be back to zero after every scenario.
QUIET = ("grpc_calls", "h2_streams", "bs_readers", "bs_uploads", "grpc_pins")


def run(args, server=None, timeout=120, stdout=subprocess.PIPE, env=None, stdin_data=None,
        prefix=()):
    """Runs `ringcas ARGS` (with --server of <server> first when given, <stdin_data> bytes
    piped to its stdin when given, under the wrapper command <prefix>); returns the
    CompletedProcess with stdout as bytes and stderr as text, and the seconds it took."""
    cmd = list(prefix) + [harness.binary()] + list(args[:1])
    if server is not None:
        cmd += ["--server", server]
    cmd += list(args[1:])
    start = time.monotonic()
    p = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout,
                       env=dict(os.environ, **(env or {})), input=stdin_data)
    p.stderr = p.stderr.decode(errors="replace")
    return p, time.monotonic() - start


def digest(data):
    return "%s/%d" % (hashlib.sha256(data).hexdigest(), len(data))


def digest_file(path):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
            size += len(b)
    return "%s/%d" % (h.hexdigest(), size)


def write_blob(directory, name, size, seed):
    """A file of <size> bytes, half compressible text and half random-looking bytes."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        text = (b"ringcas stores build-cache blobs %d\n" % seed) * 64
        left = size
        block = 0
        while left > 0:
            if block % 2 == 0:
                chunk = text
            else:
                chunk = hashlib.sha512(b"%d-%d" % (seed, block)).digest() * 32
            chunk = chunk[:left]
            f.write(chunk)
            left -= len(chunk)
            block += 1
    return path


class SilentPeer(harness.Listener):
    """A socket that accepts connections and never reads or answers (a hung server)."""


class Http1Peer(harness.Listener):
    """A server of HTTP/1.1 only (another service on the port, a proxy without h2c): answers
    the first bytes of each connection with 400 and closes, after reading what the client
    still sends (<linger>, as nginx does) or at once (the client's bytes not read: a reset)."""

    def __init__(self, linger):
        self.linger = linger
        super().__init__()

    def on_conn(self, c):
        threading.Thread(target=self._answer, args=(c,), daemon=True).start()

    def _answer(self, c):
        try:
            c.settimeout(5)
            c.recv(65536)
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                      b"Connection: close\r\n\r\n")
            if self.linger:
                c.shutdown(socket.SHUT_WR)
                while c.recv(65536):
                    pass
            c.close()
        except OSError:
            pass


class ClientTestCase(harness.ServerTestCase):
    server_cores = 2

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringcas-client-")

    def tearDown(self):
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)
        if self.server.proc:
            self.server.wait_quiet(timeout=20, extra=QUIET)

    def cli(self, *args, **kw):
        return run(args, server=self.server.address, **kw)


class Stat(ClientTestCase):
    server_args = ("--max-size", "1GiB")

    def test_stat_prints_capabilities_and_counters(self):
        p, _ = self.cli("stat", "--timeout", "10s")
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("server: %s" % self.server.address, out)
        self.assertIn("api versions: 2.0 to 2.3", out)
        self.assertIn("digest functions: SHA256", out)
        self.assertIn("compressors (ByteStream): ZSTD", out)
        self.assertIn("max batch size: 4194304 bytes", out)
        # A quarter of the server's --max-size, as GetCapabilities says.
        self.assertIn("max blob size: 268435456 bytes", out)
        self.assertIn("counters (GET /metrics, summed over cores):", out)
        self.assertRegex(out, r"connections accepted +[1-9]")
        self.assertRegex(out, r"requests finished +[1-9]")

    def test_stat_with_an_instance_name(self):
        p, _ = self.cli("stat", "--instance", "team/a")
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_environment_twins(self):
        p, _ = run(["stat"], env={"RINGCAS_SERVER": self.server.address, "RINGCAS_TIMEOUT": "5s"})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("server: %s" % self.server.address, p.stdout.decode())


class BadInput(ClientTestCase):
    def assert_fails(self, p, status, *fragments):
        self.assertEqual(p.returncode, status, p.stderr)
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        for f in fragments:
            self.assertIn(f, lines[0])

    def test_malformed_digests(self):
        for bad in ("abc", "abc/12", EMPTY.split("/")[0], EMPTY.split("/")[0] + "/x",
                    EMPTY.split("/")[0] + "/-1", "zz" + EMPTY[2:]):
            p, _ = self.cli("get", bad)
            self.assert_fails(p, EXIT_USAGE, "ringcas get:", bad)

    def test_missing_file_and_directory(self):
        p, _ = self.cli("put", os.path.join(self.tmp, "nope"))
        self.assert_fails(p, EXIT_USAGE, "nope", "no such file")
        p, _ = self.cli("put", self.tmp)
        self.assert_fails(p, EXIT_USAGE, "is a directory")

    def test_output_in_a_missing_folder(self):
        # Not "not found", which reads like a blob the server lacks (exit status 3).
        out = os.path.join(self.tmp, "nodir", "x")
        p, _ = self.cli("get", EMPTY, "-o", out)
        self.assert_fails(p, EXIT_USAGE, "ringcas get: cannot write %s: no such folder" % out)
        with open(os.path.join(self.tmp, "file"), "w"):
            pass
        out = os.path.join(self.tmp, "file", "x")
        p, _ = self.cli("get", EMPTY, "-o", out)
        self.assert_fails(p, EXIT_USAGE, "cannot write %s: a part of the path is not a folder" % out)
        # A folder that is there but takes no new files (proc refuses them with ENOENT).
        p, _ = self.cli("get", EMPTY, "-o", "/proc/version")
        self.assert_fails(p, EXIT_USAGE, "cannot write /proc/version: no new file can be made "
                                         "in that folder")

    def test_output_through_a_symlink_keeps_the_link_and_the_mode(self):
        # Written through the link, as a shell's > or curl -o do; renamed over, the link
        # became the file and its target kept the old bytes. An existing file keeps its mode.
        target = os.path.join(self.tmp, "target")
        with open(target, "wb") as f:
            f.write(b"old bytes")
        os.chmod(target, 0o640)
        link = os.path.join(self.tmp, "link")
        os.symlink("target", link)
        p, _ = self.cli("get", EMPTY, "-o", link)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.islink(link))
        self.assertEqual(os.readlink(link), "target")
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"")
        self.assertEqual(os.stat(target).st_mode & 0o7777, 0o640)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["link", "target"])

    def test_output_that_is_a_folder(self):
        # Refused before the download (it used to fail only at the rename after it, exit 1).
        for out in (self.tmp, self.tmp + "/"):
            p, _ = self.cli("get", EMPTY, "-o", out)
            self.assert_fails(p, EXIT_USAGE, "ringcas get: cannot write %s: is a directory" % out)
        p, _ = self.cli("get", EMPTY, "-o", "")
        self.assert_fails(p, EXIT_USAGE, "ringcas get: cannot write : an empty file name")
        self.assertEqual(os.listdir(self.tmp), [])

    def test_usage_errors(self):
        p, _ = self.cli("get")
        self.assert_fails(p, EXIT_USAGE, "expected one HASH/SIZE")
        p, _ = self.cli("put")
        self.assert_fails(p, EXIT_USAGE, "no FILE")
        p, _ = self.cli("stat", "--timeout", "soon")
        self.assert_fails(p, EXIT_USAGE, "--timeout")
        p, _ = self.cli("stat", "--bogus")
        self.assert_fails(p, EXIT_USAGE, "unknown flag --bogus")
        p, _ = self.cli("stat", "--instance", "a/blobs/b")
        self.assert_fails(p, EXIT_USAGE, "--instance")
        p, _ = run(["stat", "--server", "no-port"])
        self.assert_fails(p, EXIT_USAGE, "HOST:PORT")

    def test_a_url_as_server_names_the_scheme(self):
        # Bazel's --remote_cache=grpc://HOST:PORT copied into --server was refused with
        # "expected HOST:PORT" alone, which a URL with a port seems to be.
        for url in ("grpc://127.0.0.1:8980", "http://127.0.0.1:8980/bazel"):
            for cmd in (["stat"], ["get", EMPTY], ["put", __file__]):
                p, _ = run(cmd, server=url)
                self.assert_fails(p, EXIT_USAGE, "ringcas %s: bad server address '%s': expected "
                                  "HOST:PORT without a scheme (grpc://, http://), e.g. "
                                  "127.0.0.1:8980" % (cmd[0], url))
        p, _ = run(["stat"], server="no-port")  # not a URL: no word of schemes
        self.assert_fails(p, EXIT_USAGE, "bad server address 'no-port': expected HOST:PORT")
        self.assertNotIn("scheme", p.stderr)

    def test_a_server_of_http1_only_is_named(self):
        # --server naming another service's port, or a proxy that speaks HTTP/1.1 only: the
        # line said "connection closed" or "connection reset by peer", depending on timing.
        for linger in (True, False):
            peer = Http1Peer(linger)
            try:
                for args in (["get", EMPTY], ["put", "--force", __file__], ["stat"]):
                    p, _ = run(args[:1] + ["--timeout", "5s"] + args[1:], server=peer.address)
                    self.assertEqual(p.returncode, 1, p.stderr)
                    self.assertIn("the server answered in HTTP/1.x, not HTTP/2 (gRPC): name "
                                  "the HOST:PORT of a ringcas or other REAPI server",
                                  p.stderr.splitlines()[0])
                    if args[0] == "stat":  # /metrics is HTTP/1.1: its status is named
                        self.assertIn("ringcas stat: GET /metrics: HTTP status 400",
                                      p.stderr)
            finally:
                peer.close()

    def test_unreachable_server(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        for args in (["get", EMPTY], ["stat"], ["put", __file__]):
            p, took = run(args, server="127.0.0.1:%d" % port)
            self.assert_fails(p, EXIT_UNAVAILABLE, "127.0.0.1:%d" % port)
            self.assertLess(took, 10)
            # Nothing on stdout: a script reading it gets no half report.
            self.assertEqual(p.stdout, b"", args)
        p, _ = run(["stat"], server="name.invalid:8980")
        self.assert_fails(p, EXIT_UNAVAILABLE, "name.invalid")


class Timeouts(ClientTestCase):
    """Nothing waits forever: every scenario fails after --timeout (1 s here)."""

    def assert_timed_out(self, p, took, what):
        self.assertEqual(p.returncode, EXIT_TIMEOUT, "%s: %s" % (what, p.stderr))
        self.assertIn("ringcas", p.stderr)
        self.assertGreaterEqual(took, 0.9, what)
        self.assertLess(took, 8, what)

    def test_socket_that_never_answers(self):
        peer = SilentPeer()
        try:
            path = write_blob(self.tmp, "blob", 3 << 20, 1)
            addr = "127.0.0.1:%d" % peer.port
            for args in (["put", path], ["put", "--force", "--compress", path], ["get", EMPTY],
                         ["get", "--compress", EMPTY], ["stat"]):
                p, took = run(args[:1] + ["--timeout", "1s"] + args[1:], server=addr)
                self.assert_timed_out(p, took, args)
        finally:
            peer.close()

    def test_stopped_server(self):
        path = write_blob(self.tmp, "blob", 3 << 20, 2)
        os.kill(self.server.proc.pid, signal.SIGSTOP)
        try:
            # (put asks FindMissingBlobs first; Write to a peer that never answers is covered
            # above: a Write whose connection drops is parked by a ringcas server for
            # resumption, which is not what this test is about.)
            for args in (["put", path], ["get", EMPTY], ["get", "--compress", EMPTY], ["stat"]):
                p, took = self.cli(args[0], "--timeout", "1s", *args[1:])
                self.assert_timed_out(p, took, args)
        finally:
            os.kill(self.server.proc.pid, signal.SIGCONT)
        # The server sees the abandoned connections and lets go of everything.
        self.server.wait_quiet(timeout=20, extra=QUIET)

    def test_deadline_bounds_a_whole_call(self):
        peer = SilentPeer()
        try:
            addr = "127.0.0.1:%d" % peer.port
            p, took = run(["get", "--timeout", "30s", "--deadline", "700ms", EMPTY], server=addr)
            self.assertEqual(p.returncode, EXIT_TIMEOUT, p.stderr)
            self.assertIn("deadline", p.stderr)
            self.assertLess(took, 8)
        finally:
            peer.close()


class NameWithSeveralAddresses(ClientTestCase):
    """A name that resolves to ::1 first and then 127.0.0.1, as `localhost` does on a stock
    Debian /etc/hosts, while the server listens on 127.0.0.1 only: the client tries each
    address in turn, so put, get, stat and bench reach the server. The name comes from a
    hosts file bind-mounted over /etc/hosts in a private mount namespace (unshare -m) around
    the client alone; the test is skipped where that is not permitted."""

    NAME = "ringcas-dual-stack.test"

    @classmethod
    def setUpClass(cls):
        cls.hosts_dir = tempfile.mkdtemp(prefix="ringcas-hosts-")
        cls.hosts = os.path.join(cls.hosts_dir, "hosts")
        with open(cls.hosts, "w") as f:
            f.write("::1 %s\n127.0.0.1 %s\n" % (cls.NAME, cls.NAME))
        cls.prefix = ("unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                      cls.hosts)
        try:
            p = subprocess.run(list(cls.prefix) + ["getent", "ahosts", cls.NAME],
                               capture_output=True, text=True, timeout=30)
        except OSError as e:
            p = None
            why = str(e)
        if p is None or p.returncode != 0:
            why = p.stderr.strip() if p is not None else why
            os.unlink(cls.hosts)
            os.rmdir(cls.hosts_dir)
            raise unittest.SkipTest("cannot bind-mount a hosts file under unshare -m: " + why)
        # The premise: getaddrinfo gives ::1 before 127.0.0.1.
        first = p.stdout.split()[0]
        if first != "::1":
            raise AssertionError("getaddrinfo gave %s first:\n%s" % (first, p.stdout))
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        os.unlink(cls.hosts)
        os.rmdir(cls.hosts_dir)

    def dual(self, args, port=None):
        server = "%s:%d" % (self.NAME, port or self.server.port)
        p, _ = run(args, server=server, prefix=self.prefix)
        return p

    def test_stat_put_get_reach_the_second_address(self):
        p = self.dual(["stat"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("server: %s:%d" % (self.NAME, self.server.port), p.stdout.decode())
        path = write_blob(self.tmp, "blob", 100 << 10, 7)
        p = self.dual(["put", path])
        ok, why = p.returncode == 0, p.stderr
        if not ok and "not available in this build" in why:
            self.skipTest("ByteStream/CAS not served by this build: " + why.strip())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode(), digest_file(path) + "\n")
        out = os.path.join(self.tmp, "out")
        p = self.dual(["get", digest_file(path), "-o", out])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(digest_file(out), digest_file(path))

    def test_bench_reaches_the_second_address(self):
        p = self.dual(["bench", "--duration", "1s", "--warmup", "100ms", "--threads", "1",
                       "--conns", "2", "--concurrency", "4", "--size", "4KiB", "--blobs", "8",
                       "--timeout", "20s"])
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_every_address_refused_names_the_last_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now, on either address
        p = self.dual(["stat"], port=port)
        self.assertEqual(p.returncode, EXIT_UNAVAILABLE, p.stderr)
        self.assertIn("connection refused", p.stderr)
        self.assertIn("%s:%d" % (self.NAME, port), p.stderr)


def storage_available(server):
    """True when the server serves ByteStream/CAS (FindMissingBlobs answers)."""
    p, _ = run(["put", __file__], server=server.address, timeout=60)
    if p.returncode == 0:
        return True, ""
    return False, p.stderr.strip()


class RoundTrips(ClientTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ok, why = storage_available(cls.server)
        if not ok:
            cls.tearDownClass()
            raise unittest.SkipTest("ByteStream/CAS not served by this build: " + why)

    def round_trip(self, size, compress, seed):
        path = write_blob(self.tmp, "in-%d" % size, size, seed)
        want = digest_file(path)
        flags = ["--compress"] if compress else []
        # ByteStream.Write, then (for small files) BatchUpdateBlobs as well.
        for batch in (["--batch-max", "0"], ["--batch-max", "256KiB"]):
            p, _ = self.cli("put", "--force", *batch, *flags, path)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.decode(), want + "\n")
        out = os.path.join(self.tmp, "out-%d" % size)
        p, _ = self.cli("get", *flags, want, "-o", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(digest_file(out), want)
        # To stdout as well (the default), through a pipe.
        p, _ = self.cli("get", *flags, want)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(digest(p.stdout), want)

    def test_empty_blob(self):
        self.round_trip(0, False, 1)
        self.round_trip(0, True, 1)

    def test_one_byte(self):
        self.round_trip(1, False, 2)
        self.round_trip(1, True, 3)

    def test_64_mib_identity(self):
        self.round_trip(64 << 20, False, 4)

    def test_64_mib_compressed(self):
        self.round_trip(64 << 20, True, 5)

    def test_compressed_and_identity_read_the_same_blob(self):
        path = write_blob(self.tmp, "mixed", (1 << 20) + 7, 6)
        want = digest_file(path)
        p, _ = self.cli("put", "--compress", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        p, _ = self.cli("get", want)
        self.assertEqual(digest(p.stdout), want)

    def test_put_many_files_prints_each_in_order(self):
        paths = [write_blob(self.tmp, "f%d" % i, 1000 * i + 1, 10 + i) for i in range(5)]
        paths.append(paths[0])  # the same file twice
        p, _ = self.cli("put", *paths)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().splitlines(), [digest_file(x) for x in paths])
        # Again: FindMissingBlobs says they are all there; --force uploads anyway.
        for extra in ([], ["--force"], ["--force", "--compress"]):
            p, _ = self.cli("put", *extra, *paths)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.decode().splitlines(), [digest_file(x) for x in paths])

    def test_put_reads_stdin(self):
        # `-` is standard input (as `get -o -` is stdout): piped bytes, small (batched) and
        # large (streamed), identity and compressed, come back byte for byte.
        text = b"ringcas reads blobs from a pipe\n" * 100
        for data in (b"x", text, os.urandom(300 << 10) + text, os.urandom(5 << 20)):
            for flags in ([], ["--compress"], ["--force", "--batch-max", "0"]):
                p, _ = self.cli("put", *flags, "-", stdin_data=data)
                self.assertEqual(p.returncode, 0, p.stderr)
                want = digest(data)
                self.assertEqual(p.stdout.decode(), want + "\n")
                p, _ = self.cli("get", want)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertTrue(p.stdout == data, "%s came back different" % want)
        # Stdin among files keeps its place in the output.
        path = write_blob(self.tmp, "beside-stdin", 1000, 40)
        p, _ = self.cli("put", path, "-", path, stdin_data=text)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode().splitlines(),
                         [digest_file(path), digest(text), digest_file(path)])

    def test_put_empty_stdin_is_the_empty_blob(self):
        p, _ = self.cli("put", "-", stdin_data=b"")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode(), EMPTY + "\n")
        p, _ = self.cli("get", EMPTY)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"")

    def test_put_stdin_twice_is_a_usage_error(self):
        p, _ = self.cli("put", "-", "-", stdin_data=b"once")
        self.assertEqual(p.returncode, EXIT_USAGE, p.stderr)
        self.assertIn("stdin (-) can be given once", p.stderr)
        self.assertEqual(p.stdout, b"")
        # Where stdin cannot be copied, the other files are still uploaded.
        path = write_blob(self.tmp, "beside-bad-tmpdir", 100, 41)
        p, _ = self.cli("put", "-", path, stdin_data=b"lost",
                        env={"TMPDIR": os.path.join(self.tmp, "missing")})
        self.assertEqual(p.returncode, EXIT_USAGE, p.stderr)
        self.assertIn("ringcas put: -: cannot create a temporary file in ", p.stderr)
        self.assertEqual(p.stdout.decode(), digest_file(path) + "\n")

    @unittest.skipUnless(os.environ.get("DENY_BIN"), "needs the deny helper (ctest sets it)")
    def test_put_stdin_where_o_tmpfile_is_missing(self):
        # A file system without O_TMPFILE answers EOPNOTSUPP: stdin is copied to a named
        # file, unlinked at once. Any other error is reported (it would repeat there).
        tmpdir = tempfile.mkdtemp(prefix="ringcas-tmpdir-")
        self.addCleanup(os.rmdir, tmpdir)
        data = os.urandom(300 << 10)
        deny = [os.environ["DENY_BIN"], "tmpfile"]
        p, _ = self.cli("put", "-", stdin_data=data, env={"TMPDIR": tmpdir},
                        prefix=deny + ["EOPNOTSUPP"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.decode(), digest(data) + "\n")
        self.assertEqual(os.listdir(tmpdir), [], "the named copy is unlinked")
        p, _ = self.cli("get", digest(data))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(p.stdout == data, "the blob came back different")
        p, _ = self.cli("put", "-", stdin_data=b"refused", env={"TMPDIR": tmpdir},
                        prefix=deny + ["EPERM"])
        self.assertEqual(p.returncode, EXIT_USAGE, p.stderr)
        self.assertIn("cannot create a temporary file in %s ($TMPDIR): " % tmpdir, p.stderr)

    def test_not_found(self):
        missing = digest(b"never stored %f" % time.time())
        out = os.path.join(self.tmp, "out")
        p, _ = self.cli("get", missing, "-o", out)
        self.assertEqual(p.returncode, EXIT_NOT_FOUND, p.stderr)
        self.assertIn("NOT_FOUND", p.stderr)
        self.assertFalse(os.listdir(self.tmp), "a failed get leaves no file behind")

    def test_instance_names_share_the_cas(self):
        path = write_blob(self.tmp, "inst", 5000, 20)
        want = digest_file(path)
        p, _ = self.cli("put", "--instance", "team/a", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        p, _ = self.cli("get", "--instance", "team/b", want)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(digest(p.stdout), want)

    def test_reader_that_goes_away_cancels_the_servers_reads(self):
        path = write_blob(self.tmp, "big", 64 << 20, 30)
        want = digest_file(path)
        p, _ = self.cli("put", path)
        self.assertEqual(p.returncode, 0, p.stderr)
        cancels = self.server.metric("ringcas_grpc_cancels_total")
        for flags in ([], ["--compress"]):
            cmd = [harness.binary(), "get", "--server", self.server.address] + flags + [want]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            first = proc.stdout.read(256 << 10)
            self.assertEqual(len(first), 256 << 10)
            proc.stdout.close()  # the reader goes away mid-download
            rc = proc.wait(timeout=30)
            err = proc.stderr.read().decode()
            proc.stderr.close()
            self.assertEqual(rc, 1, err)
            self.assertIn("writing the output: broken pipe", err)
            # The reset reached the server: it cancelled the call and its pending reads.
            harness.wait_for(lambda: self.server.metric("ringcas_grpc_cancels_total") > cancels,
                             timeout=10, what="the server to count the cancel")
            cancels = self.server.metric("ringcas_grpc_cancels_total")
            self.server.wait_quiet(timeout=20, extra=QUIET)


if __name__ == "__main__":
    unittest.main(verbosity=2)
