"""Test harness for integration tests: runs the real `ringcas serve` on a free 127.0.0.1 port
with a temporary data folder, and reads its counters from GET /metrics.

Use Debian's /usr/bin/python3 (it has grpcio, protobuf and zstandard). The binary comes from
$RINGCAS_BIN (ctest sets it), else build/asan, build/debug or build/release.
"""

import http.client
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import socket
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary():
    path = os.environ.get("RINGCAS_BIN")
    if path:
        return path
    for preset in ("asan", "debug", "dev", "release"):
        cand = os.path.join(ROOT, "build", preset, "src", "ringcas")
        if os.path.exists(cand):
            return cand
    raise RuntimeError("ringcas binary not found: set RINGCAS_BIN or build it")


def run_serve(*args):
    """`ringcas serve` with <args> expected to be refused before it binds or opens anything
    (a flag out of range): the finished process, stderr as text. The folder lies under
    /dev/null, so a binary that wrongly accepts the flag fails at once instead of creating
    it (tests run as root) and serving until the timeout."""
    return subprocess.run([binary(), "serve", "--listen", "127.0.0.1:1", "--dir",
                           "/dev/null/ringcas-refused"] + list(args),
                          capture_output=True, text=True, timeout=30)


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value; returns it, or raises after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Parses Prometheus text into a list of (name, labels dict, value)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise AssertionError("bad metrics line: %r" % line)
        labels = dict(_LABEL.findall(m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


class PortInUse(AssertionError):
    pass


def pick_port():
    """A random port below the kernel's ephemeral range (which autobind and outgoing
    connections draw from), or 0 when that range leaves no room below it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return random.randrange(10000, low) if low > 12000 else 0


def wall_clock_ahead_env(seconds):
    """The environment that starts a server whose reading of the wall clock runs <seconds>
    ahead of the kernel's (tests/integration/wallskew.c, WALLSKEW_LIB from ctest): a wait
    until a wall-clock time the server computed then lasts <seconds> more, as after a step
    back of the clock. The sanitizers' runtimes are told the preloaded library comes first."""
    return {"LD_PRELOAD": os.environ["WALLSKEW_LIB"], "RC_WALL_SKEW_S": str(seconds),
            "ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1:exitcode=66:verify_asan_link_order=0"}


class Server:
    """One ringcas process. Use as a context manager, or call start()/stop()."""

    def __init__(self, args=(), cores=2, data_dir=None, env=None, prefix=()):
        self.args = list(args)
        self.prefix = list(prefix)  # runs the server under a command (which must exec it)
        self.cores = cores
        self.own_dir = data_dir is None
        self.dir = data_dir or tempfile.mkdtemp(prefix="ringcas-test-")
        self.env = dict(os.environ, **(env or {}))
        # Leaks are checked by the sanitizer at exit; a failure must show in the exit status.
        self.env.setdefault("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1:exitcode=66")
        self.proc = None
        self.port = None
        self.log_path = os.path.join(tempfile.gettempdir(), "ringcas-%d-%d.log" % (os.getpid(), id(self)))
        self.log = None

    # -- lifecycle --

    def start(self, port=0):
        """Starts on <port>, else on the port of the last start, else on a free port outside
        the kernel's ephemeral range: a test that restarts its server on the same port must
        not find it taken by another test's server or by a client's connection meanwhile."""
        port = port or self.port
        if port:
            return self._start(port)
        for _ in range(50):
            try:
                return self._start(pick_port())
            except PortInUse:
                continue
        raise AssertionError("no free port for the server\n%s" % self.log_tail())

    def _start(self, port):
        self.log = open(self.log_path, "ab")
        cmd = self.prefix + [binary(), "serve", "--listen", "127.0.0.1:%d" % port,
               "--dir", self.dir, "--cores", str(self.cores)] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=self.env)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"ringcas listening on ([0-9.]+):(\d+)", line)
        if not m:
            self.proc.wait(timeout=10)
            self.proc.stdout.close()
            rc, self.proc = self.proc.returncode, None
            self.log.close()
            tail = self.log_tail()
            if port and "cannot listen on 127.0.0.1:%d: address already in use" % port in tail:
                raise PortInUse("port %d in use\n%s" % (port, tail))
            raise AssertionError("server did not start (exit %s): %s\n%s" % (rc, line, tail))
        self.port = int(m.group(2))
        return self

    def stop(self, timeout=60):
        """SIGTERM, then expects exit status 0 (a clean drain, no sanitizer report)."""
        if not self.proc:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop within %ss\n%s" % (timeout, self.log_tail()))
        self.proc.stdout.close()
        self.proc = None
        self.log.close()
        if rc != 0:
            raise AssertionError("server exited %d\n%s" % (rc, self.log_tail()))
        return rc

    def wait_exit(self, timeout=30):
        """After a signal the test sent itself: waits for the exit and expects status 0."""
        rc = self.proc.wait(timeout=timeout)
        self.proc.stdout.close()
        self.proc = None
        self.log.close()
        if rc != 0:
            raise AssertionError("server exited %d\n%s" % (rc, self.log_tail()))

    def kill(self):
        """SIGKILL: no drain, no flush (crash tests)."""
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc = None
        self.log.close()

    def restart(self):
        self.stop()
        return self.start(self.port)

    def cleanup(self, keep_log=False):
        """Kills a running server, removes its data folder (if ours) and, unless a failure
        wants it kept for reading, its log."""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.proc = None
        if self.log and not self.log.closed:
            self.log.close()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if keep_log:
            sys.stderr.write("ringcas server log kept: %s\n" % self.log_path)
        else:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.proc and exc_type is None:
                self.stop()
        except BaseException:
            self.cleanup(keep_log=True)
            raise
        self.cleanup(keep_log=exc_type is not None)
        return False

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""

    # -- addresses --

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    # -- counters --

    def metrics_text(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read().decode()
            if resp.status != 200:
                raise AssertionError("GET /metrics: %d %s" % (resp.status, body[:200]))
            return body
        finally:
            conn.close()

    def metric(self, name, **labels):
        """Sum of every sample of <name> whose labels include <labels>. A name the server
        does not declare (no # TYPE line for it or its histogram family) is an error, so a
        renamed metric cannot turn an assertion into one that holds whatever happens."""
        text = self.metrics_text()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        if not re.search(r"^# TYPE (%s|%s) " % (re.escape(name), re.escape(family)), text, re.M):
            raise AssertionError("the server exports no metric named %s" % name)
        total = 0.0
        for n, l, v in parse_metrics(text):
            if n == name and all(l.get(k) == str(v2) for k, v2 in labels.items()):
                total += v
        return total

    def wait_quiet(self, timeout=10.0, extra=()):
        """Waits until nothing is in flight: connections (beside the one reading /metrics),
        receive buffers, ops beyond one accept per core, and the gauges named in <extra>."""
        def quiet():
            samples = parse_metrics(self.metrics_text())
            def total(name):
                return sum(v for n, _, v in samples if n == name)
            state = {
                "conns": total("ringcas_conns"),
                "bufs_out": total("ringcas_bufs_out"),
                "ops_in_flight": total("ringcas_ops_in_flight"),
            }
            for name in extra:
                state[name] = total("ringcas_" + name)
            # The /metrics connection itself: one conn, its receive armed (one op).
            ok = (state["conns"] <= 1 and state["bufs_out"] <= 1 and
                  state["ops_in_flight"] <= self.cores + 2 and
                  all(state[n] == 0 for n in extra))
            seen[0] = state
            return ok or None
        seen = [None]
        try:
            return wait_for(quiet, timeout=timeout, what="server to become quiet")
        except AssertionError as e:
            raise AssertionError("%s; gauges: %r" % (e, seen[0])) from None


def needs(tool, package):
    """A class decorator for tests of a client that scripts/deps.sh installs: where `tool` is
    not on PATH the class fails, naming the Debian package, instead of being skipped, so a
    green run cannot hide a missing install step."""
    def wrap(cls):
        set_up = cls.setUpClass.__func__

        def checked(c):
            if not shutil.which(tool):
                raise AssertionError("%s not found: install Debian's %s (scripts/deps.sh test)"
                                     % (tool, package))
            set_up(c)
        cls.setUpClass = classmethod(checked)
        return cls
    return wrap


class ServerTestCase(unittest.TestCase):
    """A test case with one server for the whole class (args in server_args)."""

    server_args = ()
    server_cores = 2

    @classmethod
    def setUpClass(cls):
        cls.server = Server(args=cls.server_args, cores=cls.server_cores)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()


class Listener:
    """A fake server for client tests: listens on 127.0.0.1, and a thread accepts connections
    and hands each to on_conn(sock), which keeps it by default (a peer that never answers).
    close() stops accepting and closes every connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.address = "127.0.0.1:%d" % self.port
        self.conns = []
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.sock.settimeout(0.1)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(c)
            self.on_conn(c)

    def on_conn(self, c):
        """Called on the accepting thread for each new connection."""

    def close(self):
        self.stop = True
        self.thread.join()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()
