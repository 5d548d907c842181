"""The ringcas binary as an operator meets it: flags and their environment twins, start-up
failures that name their cause and fix, and a clean drain on SIGTERM."""

import hashlib
import http.client
import os
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import harness


def tmpdir(tc):
    """A data folder removed when test case <tc> ends (a server preallocates its segments)."""
    d = tempfile.mkdtemp(prefix="ringcas-serve-")
    tc.addCleanup(shutil.rmtree, d, ignore_errors=True)
    return d


def run(args, env=None, timeout=30):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([harness.binary()] + args, capture_output=True, text=True, env=e,
                          timeout=timeout)


class CommandLine(unittest.TestCase):
    def test_version_and_help(self):
        r = run(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^ringcas \d+\.\d+\.\d+")
        r = run(["--help"])
        self.assertEqual(r.returncode, 0)
        self.assertIn("serve", r.stdout)
        r = run(["serve", "--help"])
        self.assertEqual(r.returncode, 0)
        for flag, env in (("--listen", "RINGCAS_LISTEN"), ("--dir", "RINGCAS_DIR"),
                          ("--max-size", "RINGCAS_MAX_SIZE"), ("--read-timeout", "RINGCAS_READ_TIMEOUT"),
                          ("--write-timeout", "RINGCAS_WRITE_TIMEOUT"), ("--cores", "RINGCAS_CORES"),
                          ("--drain-timeout", "RINGCAS_DRAIN_TIMEOUT")):
            self.assertIn(flag, r.stdout)
            self.assertIn(env, r.stdout)

    def test_every_command_prints_its_help_the_same_way(self):
        client = ["--server", "--instance", "--timeout", "--deadline"]
        client_end = ("\nExit status: 0 ok, 1 failure, 2 usage, 3 not found, 4 timed out, 5 server\n"
                      "unavailable, 6 data does not match its digest (docs/cli.md).\n")
        cases = {
            "serve": ("usage: ringcas serve [FLAGS]\n\nflags:\n",
                      ["--listen", "--dir", "--cores", "--max-size", "--sync", "--read-timeout",
                       "--write-timeout", "--drain-timeout", "--recv-buffers",
                       "--recv-buffer-size", "--log-level", "--segment-size", "--chunk-size",
                       "--zstd-level", "--read-ahead", "--[no-]direct-io", "--[no-]map-reads",
                       "--[no-]ac-check", "--message-memory", "--max-connections", "--max-uploads",
                       "--read-memory", "--zstd-memory", "--access-log"],
                      ""),
            "put": ("usage: ringcas put [FLAGS] FILE...\n\nA FILE of - is standard input, copied "
                    "to an unnamed file in $TMPDIR\n(default /tmp) first; give it once.\n\n"
                    "flags:\n",
                    client + ["--[no-]compress", "--[no-]force", "--batch-max"], client_end),
            "get": ("usage: ringcas get [FLAGS] HASH/SIZE [-o FILE]\n\nflags:\n",
                    client + ["--[no-]compress", "--output"], client_end),
            "stat": ("usage: ringcas stat [FLAGS]\n\nflags:\n", client, client_end),
            "fsck": ("usage: ringcas fsck --dir DIR\n\nChecks every record's checksums and every "
                     "blob's digest; exits 1 on corruption, 2 when it cannot run.\n\nflags:\n",
                     ["--dir"], ""),
        }
        for cmd, (head, flags, end) in cases.items():
            r = run([cmd, "--help"])
            self.assertEqual((r.returncode, r.stderr), (0, ""), cmd)
            self.assertNotRegex(r.stdout, r"(?m) $", "%s: a line ends in a space" % cmd)
            self.assertTrue(r.stdout.startswith(head), (cmd, r.stdout))
            self.assertTrue(r.stdout.endswith(end), (cmd, r.stdout))
            lines = r.stdout[len(head):len(r.stdout) - len(end)].splitlines()
            self.assertEqual([l.split()[0] for l in lines], flags + ["--help"], cmd)
            # --help asks, it sets nothing: no default, no environment twin.
            self.assertEqual(lines[-1].split(), ["--help", "show", "this", "help"], cmd)
            for line in lines[:-1]:
                self.assertRegex(line, r" \[RINGCAS_[A-Z_]+\]$", cmd)
        r = run(["bench", "--help"])
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertIn("\n  --[no-]histogram ", r.stdout)
        self.assertIn("\n  --help ", r.stdout.split("\n  --[no-]histogram ")[1])
        self.assertTrue(r.stdout.endswith(" window, 2 usage, 5 server unavailable.\n"))

    def test_help_shows_each_flag_default(self):
        r = run(["serve", "--help"], env={"RINGCAS_MAX_SIZE": "5G", "RINGCAS_DIRECT_IO": "0"})
        self.assertEqual(r.returncode, 0)
        lines = {l.split()[0]: l for l in r.stdout.splitlines() if l.startswith("  --")}
        # Defaults, whatever the environment or the command line set.
        for flag, default in (("--listen", "127.0.0.1:8980"), ("--dir", "./ringcas-data"),
                              ("--max-size", "10GiB"), ("--read-timeout", "1m"),
                              ("--write-timeout", "30s"), ("--recv-buffer-size", "64KiB"),
                              ("--chunk-size", "256KiB"), ("--cores", "0"),
                              ("--[no-]direct-io", "on"), ("--[no-]map-reads", "on")):
            self.assertIn("(default %s) [" % default, lines[flag], flag)
        r = run(["get", "--help"])
        lines = {l.split()[0]: l for l in r.stdout.splitlines() if l.startswith("  --")}
        self.assertIn("(default off) [RINGCAS_COMPRESS]", lines["--[no-]compress"])
        self.assertIn("REAPI instance name [RINGCAS_INSTANCE]", lines["--instance"])  # empty: none shown
        self.assertIn("(default 30s) [RINGCAS_TIMEOUT]", lines["--timeout"])

    def test_help_has_no_environment_twin(self):
        # A RINGCAS_HELP left in the environment does not turn a command into its help.
        r = run(["fsck", "--dir", "/nonexistent/ringcas"], env={"RINGCAS_HELP": "1"})
        self.assertEqual(r.returncode, 2, r.stdout)
        self.assertNotIn("usage:", r.stdout)
        self.assertIn("cannot open the folder", r.stdout)

    def test_help_with_a_bad_flag_is_a_usage_error(self):
        for cmd in ("serve", "put", "get", "stat", "bench", "fsck"):
            for args, named in ((["--help", "--bogus"], "--bogus"),
                                (["--bogus", "--help"], "--bogus"), (["--help=maybe"], "--help")):
                r = run([cmd] + args)
                self.assertEqual((r.returncode, r.stdout), (2, ""), (cmd, args))
                self.assertIn(named, r.stderr)
                # Each error line names the subcommand, as docs/cli.md says.
                self.assertTrue(r.stderr.startswith("ringcas %s: " % cmd), (cmd, r.stderr))
        r = run(["stat", "--help", "extra"])
        self.assertEqual((r.returncode, r.stdout), (2, ""))
        r = run(["get", "--help", "a", "b"])  # get takes up to two arguments, then --help wins
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("usage: ringcas get "))

    def test_bad_flags_are_named(self):
        r = run(["serve", "--no-such-flag"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--no-such-flag", r.stderr)
        r = run(["serve", "--max-size", "lots"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--max-size lots", r.stderr)
        r = run(["serve", "--listen", "nowhere"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("HOST:PORT", r.stderr)
        self.assertTrue(r.stderr.startswith("ringcas serve: --listen nowhere: "), r.stderr)
        r = run(["serve", "--log-level", "loud"])
        self.assertEqual(r.returncode, 2)
        self.assertTrue(r.stderr.startswith("ringcas serve: --log-level loud: "), r.stderr)
        r = run(["frobnicate"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command", r.stderr)

    def test_a_folder_without_dir_names_the_flag(self):
        # "ringcas fsck ./data" (and serve) said only "unexpected argument ./data".
        d = tmpdir(self)
        for cmd in ("fsck", "serve"):
            r = run([cmd, d])
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertEqual(r.stderr, "ringcas %s: unexpected argument %s: did you mean --dir "
                             "%s? (see --help)\n" % (cmd, d, d))
        self.assertEqual(os.listdir(d), [])
        r = run(["stat", "extra"])  # no folder to name: the plain line
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr, "ringcas stat: unexpected argument extra\n")

    def test_an_empty_dir_is_a_usage_error(self):
        # "--dir $DATA" with DATA unset, an empty RINGCAS_DIR: "cannot use data folder : not
        # found" (exit status 1) and "fsck : cannot open the folder: not found". Refused
        # before the port is looked at: serve without --listen binds nothing here.
        cwd = tmpdir(self)
        for cmd, line in (("serve", "ringcas serve: --dir is empty: name the data folder, e.g. "
                           "--dir ./ringcas-data\n"),
                          ("fsck", "ringcas fsck: --dir is empty: name the data folder to "
                           "check\n")):
            r = subprocess.run([harness.binary(), cmd, "--listen", "127.0.0.1:0", "--dir", ""]
                               if cmd == "serve" else [harness.binary(), cmd, "--dir", ""],
                               capture_output=True, text=True, timeout=30, cwd=cwd)
            self.assertEqual((r.returncode, r.stderr), (2, line))
            r = subprocess.run([harness.binary(), cmd], capture_output=True, text=True,
                               timeout=30, cwd=cwd, env=dict(os.environ, RINGCAS_DIR=""))
            self.assertEqual((r.returncode, r.stderr),
                             (2, line + "ringcas %s: set from the environment: RINGCAS_DIR=\n"
                              % cmd))
        self.assertEqual(os.listdir(cwd), [])

    def test_a_value_refused_after_parsing_names_the_variable_that_set_it(self):
        # A StatefulSet sets flags through env: an error that named only the flag sent its
        # reader looking for a command-line flag that is not there.
        d = tmpdir(self)
        r = run(["serve", "--dir", d, "--max-size", "1GiB"],
                env={"RINGCAS_CHUNK_SIZE": "3KiB", "RINGCAS_MAX_SIZE": "5G"})
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr, "ringcas serve: --chunk-size 3072: expected a power of two, "
                         "4KiB to 1MiB\nringcas serve: set from the environment: "
                         "RINGCAS_CHUNK_SIZE=3KiB\n")
        r = run(["serve", "--dir", d, "--sync", "sometimes"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertNotIn("environment", r.stderr)

    def test_a_host_name_to_listen_on_is_a_usage_error(self):
        # A name (ringcas-0.ringcas, the machine's host name) is not resolved: it failed at
        # the bind, exit status 1, "cannot listen on myhost:8980: invalid argument".
        for listen in ("myhost:8980", "ringcas-0.ringcas:8980", "RINGCAS_LISTEN"):
            env = None
            if listen == "RINGCAS_LISTEN":
                env, listen = "myhost:8980", None
            r = harness.run_serve(*(("--listen", listen) if listen else ()))
            if env:
                r = subprocess.run([harness.binary(), "serve", "--dir", "/dev/null/refused"],
                                   capture_output=True, text=True, timeout=30,
                                   env=dict(os.environ, RINGCAS_LISTEN=env))
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertEqual(r.stderr, "ringcas serve: --listen %s: HOST must be an IP address "
                             "(0.0.0.0:8980, [::]:8980) or localhost; names are not resolved\n"
                             % (listen or env) + ("ringcas serve: set from the environment: "
                                                  "RINGCAS_LISTEN=%s\n" % env if env else ""))
        # The forms it takes: IPv4, IPv6 in brackets, localhost (tests bind them elsewhere).
        for listen in ("0.0.0.0:0", "[::1]:0", "localhost:0"):
            r = harness.run_serve("--listen", listen, "--sync", "bogus")
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("--sync bogus", r.stderr)  # refused after the address passed

    def test_a_url_to_listen_on_names_the_scheme(self):
        # A client's URL copied into --listen was refused as a name that is not resolved.
        for listen in ("http://127.0.0.1:8980", "grpc://0.0.0.0:8980/"):
            r = harness.run_serve("--listen", listen)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertEqual(r.stderr, "ringcas serve: --listen %s: expected HOST:PORT without "
                             "a scheme (http://, grpc://: the port serves both), e.g. "
                             "127.0.0.1:8980\n" % listen)

    def test_a_negated_flag_with_a_value_is_named(self):
        # --[no-]direct-io exists: "unknown flag --no-direct-io" would send the user looking
        # for a flag that is there.
        r = harness.run_serve("--no-direct-io=1")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(r.stderr, "ringcas serve: --no-direct-io takes no value: use "
                                   "--direct-io=false (or --no-direct-io alone)\n")
        r = harness.run_serve("--no-listen=x")  # not a boolean: no --no- form at all
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("unknown flag --no-listen", r.stderr)

    def test_make_run_passes_a_folder_with_a_space_whole(self):
        """The README's `make run DIR=...`: the Makefile's command line, as sh splits it."""
        # Not the flags of a make this test runs under (make test's recursive steps pass
        # "w", which wraps the command in "Entering directory" lines).
        env = {k: v for k, v in os.environ.items()
               if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        r = subprocess.run(["make", "-s", "-n", "-o", "release", "run", "DIR=/srv/ring cas",
                            "LISTEN=127.0.0.1:0"], cwd=harness.ROOT, capture_output=True,
                           text=True, timeout=60, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        args = shlex.split(r.stdout.strip().splitlines()[-1])
        self.assertEqual(args[args.index("--dir") + 1], "/srv/ring cas", r.stdout)
        self.assertEqual(args[args.index("--listen") + 1], "127.0.0.1:0", r.stdout)

    def test_a_store_too_small_for_its_segments_is_a_usage_error(self):
        d = tmpdir(self)
        r = run(["serve", "--listen", "127.0.0.1:0", "--dir", d, "--cores", "2",
                 "--max-size", "4MiB"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertTrue(r.stderr.startswith("ringcas serve: --max-size 4194304 is below 4 "
                                            "segments of "), r.stderr)
        # The segment size was not given: the hint names every flag that lowers it.
        for flag in ("--cores", "--segment-size", "--chunk-size"):
            self.assertIn(flag, r.stderr)
        self.assertEqual(os.listdir(d), [])
        # Refused before the folder is made.
        nested = os.path.join(d, "not", "made")
        r = run(["serve", "--listen", "127.0.0.1:0", "--dir", nested, "--cores", "2",
                 "--max-size", "4MiB"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(os.listdir(d), [])
        r = run(["serve", "--listen", "127.0.0.1:0", "--dir", d, "--chunk-size", "3000"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("ringcas serve: --chunk-size 3000: expected a power of two", r.stderr)
        # 4 GiB + 4 KiB is no 4 KiB chunk size (the engine's field is 32 bits).
        r = run(["serve", "--listen", "127.0.0.1:0", "--dir", d, "--chunk-size", "4294971392"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("ringcas serve: --chunk-size 4294971392: expected a power of two",
                      r.stderr)

    def test_a_max_size_without_a_unit_says_it_is_bytes(self):
        # `--max-size 10` meant as 10 GiB was refused as "below 4 segments of 1048576 bytes",
        # which did not say that a count without a unit is bytes.
        d = os.path.join(tmpdir(self), "data")
        for args, env in ((["--max-size", "10"], None), ([], {"RINGCAS_MAX_SIZE": "500"})):
            r = run(["serve", "--listen", "127.0.0.1:0", "--dir", d, "--cores", "1"] + args,
                    env=env)
            self.assertEqual(r.returncode, 2, r.stderr)
            n = args[1] if args else env["RINGCAS_MAX_SIZE"]
            self.assertIn("ringcas serve: --max-size %s is %s bytes: a size without a unit is "
                          "bytes; write --max-size %sG for %s GiB\n" % (n, n, n, n), r.stderr)
            self.assertFalse(os.path.exists(d))
        # A size with its unit, too small for other reasons, gets no word of units.
        r = run(["serve", "--listen", "127.0.0.1:0", "--dir", d, "--cores", "2",
                 "--max-size", "4MiB"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertNotIn("without a unit", r.stderr)

    def test_zstd_level_out_of_range_is_refused(self):
        """--zstd-level takes zstd's regular levels, 1 to 22 (docs/storage.md). It used to take
        any count without a word: zstd clamped 30 to 22, took 0 as its default level 3, and a
        count past 2^31 reached the engine as some other level (2^64 - 1 as -1)."""
        for value in ("0", "23", "30", "4294967297", "18446744073709551615"):
            r = harness.run_serve("--zstd-level", value)
            self.assertEqual(r.returncode, 2, (value, r.stderr))
            self.assertIn("ringcas serve: --zstd-level: 1 to 22", r.stderr)
        r = run(["serve", "--listen", "127.0.0.1:1", "--dir", "/dev/null/ringcas-refused"],
                env={"RINGCAS_ZSTD_LEVEL": "23"})
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--zstd-level: 1 to 22", r.stderr)
        # Both ends of the range start, and store and serve a compressible blob.
        body = b"".join(b"line %d of a build log\n" % i for i in range(40000))
        digest = hashlib.sha256(body).hexdigest()
        for level in ("1", "22"):
            with harness.Server(args=("--zstd-level", level), cores=1) as srv:
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                conn.request("PUT", "/cas/" + digest, body=body)
                self.assertEqual(conn.getresponse().status, 201, level)
                conn.close()
                self.assertEqual(cas_get(srv.port, digest), (200, body), level)

    def test_environment_twin_sets_the_listen_address(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        d = tmpdir(self)
        env = dict(os.environ, RINGCAS_LISTEN="127.0.0.1:%d" % port, RINGCAS_DIR=d)
        p = subprocess.Popen([harness.binary(), "serve"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env)
        try:
            line = p.stdout.readline().decode()
            self.assertIn("127.0.0.1:%d" % port, line)
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=30), 0)
            p.stdout.close()

    def test_port_in_use_is_reported(self):
        # A port held by a socket without SO_REUSEPORT must fail with a clear line.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            r = run(["serve", "--listen", "127.0.0.1:%d" % s.getsockname()[1],
                     "--dir", tmpdir(self)])
            self.assertEqual(r.returncode, 1)
            self.assertIn("address already in use", r.stderr)

    def test_a_port_freed_within_two_seconds_is_waited_for(self):
        # After a crash the kernel frees the dead server's port only once it has torn its
        # rings down; a supervisor's immediate restart on the same port must not fail then.
        s, port = held_port()
        p, err = serve_waiting_for(port, tmpdir(self))
        try:
            s.close()
            line = p.stdout.readline()
            self.assertEqual(line.strip(), "ringcas listening on 127.0.0.1:%d" % port, err)
        finally:
            s.close()
            p.send_signal(signal.SIGTERM)
            _, rest = p.communicate(timeout=30)
            err += rest
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("is in use; waiting for it to be freed", err)

    def test_port_of_another_reuseport_server_is_refused(self):
        # The kernel lets a SO_REUSEPORT socket of the same user join another process's
        # SO_REUSEPORT listeners, and would then split the connections between the two
        # servers. A second server on a port taken that way must fail, not share it.
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 0))
            s.listen()
            r = run(["serve", "--listen", "127.0.0.1:%d" % s.getsockname()[1],
                     "--dir", tmpdir(self)])
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("address already in use", r.stderr)
            self.assertIn("another server uses the port", r.stderr)
        # Two ringcas servers: the second one started on the first one's port is refused,
        # and the first one still answers alone.
        with harness.Server(cores=2) as srv:
            r = run(["serve", "--listen", "127.0.0.1:%d" % srv.port, "--dir", tmpdir(self)])
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("address already in use", r.stderr)
            for _ in range(8):  # fresh connections, each answered by the first server
                self.assertIn("ringcas_", srv.metrics_text())


    def test_a_port_in_use_leaves_the_data_folder_untouched(self):
        # Opening the store recovers it (seconds with millions of blobs) and seals and
        # rewrites the segments a server left active: a start that fails on its port must
        # fail before any of that.
        d = tmpdir(self)
        with harness.Server(cores=2, data_dir=d) as srv:
            body = b"left by an earlier run\n" * 500
            digest = hashlib.sha256(body).hexdigest()
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("PUT", "/cas/" + digest, body=body)
            self.assertEqual(conn.getresponse().status, 201)
            conn.close()

        def snapshot():
            out = {}
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
                out[name] = (len(data), hashlib.sha256(data).hexdigest())
            return out
        before = snapshot()
        self.assertTrue(any(n.startswith("seg-") for n in before), before)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            r = run(["serve", "--listen", "127.0.0.1:%d" % s.getsockname()[1], "--dir", d,
                     "--cores", "2"])
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("address already in use", r.stderr)
        self.assertEqual(snapshot(), before)

    def test_an_address_of_no_interface_names_the_fix(self):
        # 192.0.2.1 is TEST-NET-1 (RFC 5737): no interface has it. The line said "address not
        # available" and no more, which does not tell a user that the address is the fault.
        d = os.path.join(tmpdir(self), "data")
        r = run(["serve", "--listen", "192.0.2.1:8980", "--dir", d])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ringcas serve: cannot listen on 192.0.2.1:8980: address not available "
                      "(no network interface of this machine has that address; --listen "
                      "0.0.0.0:PORT listens on all of them, 127.0.0.1:PORT on this machine "
                      "only)\n", r.stderr)
        self.assertFalse(os.path.exists(d))  # refused before the folder is made

    def test_a_privileged_port_names_the_fix(self):
        # A user who tries port 80 or 443 as themselves read "permission denied" and
        # looked at the data folder's permissions.
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            if int(f.read()) <= 1:
                self.skipTest("every port may be bound by anyone here")
        prefix = ()
        if os.geteuid() == 0:
            prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                      "--inh-caps=-all", "--bounding-set=-all")
            probe = subprocess.run(list(prefix) + [harness.binary(), "--version"],
                                   capture_output=True, text=True, timeout=30)
            if probe.returncode != 0:
                self.skipTest("the binary cannot run as nobody here: %s" % probe.stderr)
        d = os.path.join(tmpdir(self), "data")
        os.chmod(os.path.dirname(d), 0o777)
        r = subprocess.run(list(prefix) + [harness.binary(), "serve", "--listen", "127.0.0.1:1",
                                           "--dir", d],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ringcas serve: cannot listen on 127.0.0.1:1: permission denied (a port "
                      "below 1024 needs root or CAP_NET_BIND_SERVICE; pick --listen with a port "
                      "of 1024 or more)\n", r.stderr)
        self.assertFalse(os.path.exists(d))

@unittest.skipUnless(os.environ.get("DENY_BIN"), "needs the deny helper (ctest sets it)")
class NoIoUring(unittest.TestCase):
    def check(self, err, needle):
        r = subprocess.run([os.environ["DENY_BIN"], "io_uring", err, harness.binary(), "serve",
                            "--listen", "127.0.0.1:0", "--dir", tmpdir(self)],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = [l for l in r.stderr.splitlines() if l.startswith("ringcas serve:")]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertIn(needle, lines[0])
        self.assertIn("fix:", lines[0])
        self.assertEqual(r.stdout, "")

    def test_seccomp_eperm(self):
        self.check("EPERM", "seccomp")

    def test_old_kernel_enosys(self):
        self.check("ENOSYS", "Linux 6.1")

    def test_rejected_flags_einval(self):
        self.check("EINVAL", "Linux 6.1")


class ClosedStandardFiles(unittest.TestCase):
    """A server started with its standard output and error closed (`1>&- 2>&-`, as some
    init scripts and `nohup` lines do): the first files and sockets it opened took
    descriptors 1 and 2, so every log line was written into them (the ring's descriptor or the
    listening socket here; a segment file or a client's connection as easily)."""

    def test_closed_standard_descriptors_are_dev_null(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        d = tmpdir(self)
        # exec so that the server itself is the process whose descriptors are closed.
        p = subprocess.Popen(["/bin/sh", "-c", 'exec "$0" serve --listen 127.0.0.1:%d --dir '
                              '"$1" --cores 1 --log-level debug 1>&- 2>&-' % port,
                              harness.binary(), d], stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    self.assertIsNone(p.poll(), "the server exited: %s" % p.returncode)
                    self.assertLess(time.monotonic(), deadline, "the server never listened")
                    time.sleep(0.05)
            for fd in (1, 2):
                self.assertEqual(os.readlink("/proc/%d/fd/%d" % (p.pid, fd)), "/dev/null")
            # Log lines at debug level go to descriptor 2 for each request; the server and
            # its answers are whole.
            blob = os.urandom(300000)
            digest = hashlib.sha256(blob).hexdigest()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("PUT", "/cas/" + digest, body=blob)
            r = conn.getresponse()
            r.read()
            conn.close()
            self.assertEqual(r.status, 201)
            for _ in range(3):
                self.assertEqual(cas_get(port, digest), (200, blob))
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=30), 0)


def held_port():
    """A listening socket on a free port of 127.0.0.1 and that port: a port in use, which a
    server starting on it waits for (close the socket to free it)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s, s.getsockname()[1]


def serve_waiting_for(port, data_dir):
    """`ringcas serve` started on <port>, held by held_port(), once it says it waits for the
    port (not after a fixed time: a slow start on a busy machine would find it free already):
    (the process, what it wrote on stderr so far)."""
    p = subprocess.Popen([harness.binary(), "serve", "--listen", "127.0.0.1:%d" % port,
                          "--dir", data_dir], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    err = ""
    for line in p.stderr:
        err += line
        if "is in use; waiting for it to be freed" in line:
            break
    return p, err


def cas_get(port, digest):
    """GET /cas/<digest>: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/cas/" + digest)
        got = conn.getresponse()
        return got.status, got.read()
    finally:
        conn.close()


def cas_get_whole(port, digest, timeout):
    """GET /cas/<digest> of a blob whose body may be cut: (status, the bytes that came,
    whether the body came whole, the client's address). A client that waits <timeout> s for
    an answer the server never gives fails the test."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/cas/" + digest)
        local = conn.sock.getsockname()
        got = conn.getresponse()
        try:
            return got.status, got.read(), True, local
        except http.client.IncompleteRead as e:
            return got.status, e.partial, False, local
        except ConnectionError:
            return got.status, b"", False, local
    finally:
        conn.close()


def cpu_cgroup(tc, quota_us, period_us=100000):
    """A new cgroup whose CPU limit is <quota_us> per <period_us> (v2 cpu.max, or v1's
    cpu.cfs_quota_us), removed when test case <tc> ends. Returns its cgroup.procs file, which a
    child writes its pid into; skips <tc> when this machine cannot make one (not root, no cpu
    controller, a read-only cgroupfs)."""
    mounts = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, point, fstype, opts = line.split()[:4]
            if fstype == "cgroup2" and "v2" not in mounts:
                mounts["v2"] = point
            if fstype == "cgroup" and "cpu" in opts.split(",") and "v1" not in mounts:
                mounts["v1"] = point
    why = []
    for kind in ("v2", "v1"):
        base = mounts.get(kind)
        if not base:
            continue
        d = os.path.join(base, "ringcas-test-%d" % os.getpid())
        try:
            if kind == "v2":
                with open(os.path.join(base, "cgroup.controllers")) as f:
                    if "cpu" not in f.read().split():
                        why.append("v2 without the cpu controller")
                        continue
                with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
                    f.write("+cpu")
            os.mkdir(d)
            tc.addCleanup(os.rmdir, d)
            if kind == "v2":
                with open(os.path.join(d, "cpu.max"), "w") as f:
                    f.write("%d %d" % (quota_us, period_us))
            else:
                with open(os.path.join(d, "cpu.cfs_period_us"), "w") as f:
                    f.write(str(period_us))
                with open(os.path.join(d, "cpu.cfs_quota_us"), "w") as f:
                    f.write(str(quota_us))
            return os.path.join(d, "cgroup.procs")
        except OSError as e:
            why.append("%s: %s" % (kind, e))
    tc.skipTest("cannot make a cgroup with a CPU limit here: %s" % ("; ".join(why) or "no cgroupfs"))


class DataFolder(unittest.TestCase):
    """One process per data folder: a second server would recover, seal and delete the
    first one's active segments (an acknowledged upload lost at the next restart)."""

    def test_a_second_server_and_fsck_are_refused_a_live_folder(self):
        with harness.Server(cores=1) as srv:
            r = run(["serve", "--listen", "127.0.0.1:0", "--dir", srv.dir, "--cores", "1"])
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("data folder %s is in use by another ringcas process" % srv.dir,
                          r.stderr)
            r = run(["fsck", "--dir", srv.dir])
            self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
            self.assertIn("in use by another ringcas process", r.stdout + r.stderr)
            # The first server lost nothing: its active segments are still its own.
            body = b"kept" * 1000
            digest = hashlib.sha256(body).hexdigest()
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("PUT", "/cas/" + digest, body=body)
            self.assertEqual(conn.getresponse().status, 201)
            conn.close()
            srv.stop()
            srv.start()
            self.assertEqual(cas_get(srv.port, digest), (200, body))
            srv.stop()
            r = run(["fsck", "--dir", srv.dir])  # a stopped server's folder
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class OpenFiles(unittest.TestCase):
    """Each segment and connection takes a descriptor; under a low soft limit (systemd's
    default is 1024) the server raises it to the hard limit, or its uploads would fail once
    the segments outnumber it."""

    def test_the_soft_limit_is_raised_and_many_segments_open(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1024:
            self.skipTest("hard open files limit %d" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))  # the server inherits it
        try:
            srv = harness.Server(cores=1, args=("--segment-size", "1MiB", "--max-size", "1GiB"))
            srv.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            with open("/proc/%d/limits" % srv.proc.pid) as f:
                line = next(l for l in f if l.startswith("Max open files"))
            self.assertEqual(line.split()[3], line.split()[4], line)  # soft == hard
            # 80 blobs of 1 MiB: a segment each, more than 64 descriptors.
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            blobs = [os.urandom(1 << 20) for _ in range(80)]
            for b in blobs:
                conn.request("PUT", "/cas/" + hashlib.sha256(b).hexdigest(), body=b)
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 201)
            conn.close()
            for b in blobs[::10]:
                self.assertEqual(cas_get(srv.port, hashlib.sha256(b).hexdigest()), (200, b))
        finally:
            srv.stop()
            srv.cleanup()


class NoAtime(unittest.TestCase):
    """Reads of a segment do not update its atime (O_NOATIME): under relatime the first read
    after each write would write the inode back, and every read pays touch_atime's check."""

    def segment_atimes(self, d):
        return {n: os.stat(os.path.join(d, n)).st_atime_ns
                for n in os.listdir(d) if n.endswith(".rcs")}

    def test_reads_leave_segment_atimes_alone(self):
        srv = harness.Server(cores=1)
        srv.start()
        try:
            body = os.urandom(1024)  # small: read by the ring, not through the mapping
            digest = hashlib.sha256(body).hexdigest()
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("PUT", "/cas/" + digest, body=body)
            self.assertEqual(conn.getresponse().status, 201)
            conn.close()
            before = self.segment_atimes(srv.dir)
            self.assertTrue(before)
            for _ in range(3):
                self.assertEqual(cas_get(srv.port, digest), (200, body))
            srv.stop()
            srv.start()  # recovery reads every segment
            self.assertEqual(cas_get(srv.port, digest), (200, body))
            after = self.segment_atimes(srv.dir)  # the restart may have begun a segment
            self.assertEqual({n: after.get(n) for n in before}, before)
            # The file system does update atimes on reads (not a noatime mount), so the
            # check above could fail.
            name = sorted(before)[0]
            st = os.stat(os.path.join(srv.dir, name))
            os.utime(os.path.join(srv.dir, name), ns=(st.st_mtime_ns - 10**9, st.st_mtime_ns))
            with open(os.path.join(srv.dir, name), "rb") as f:
                f.read(4096)
            if os.stat(os.path.join(srv.dir, name)).st_atime_ns == st.st_mtime_ns - 10**9:
                self.skipTest("this file system does not update atimes on reads")
        finally:
            srv.stop()
            srv.cleanup()


class DataFolderCreation(unittest.TestCase):
    def test_missing_parents_are_created(self):
        d = os.path.join(tmpdir(self), "a", "b", "c")
        with harness.Server(cores=1, data_dir=d) as srv:
            self.assertTrue(os.path.isdir(d))
            srv.stop()
        self.assertTrue(any(n.startswith("seg-") for n in os.listdir(d)))

    def test_a_file_in_the_path_is_named(self):
        parent = tmpdir(self)
        with open(os.path.join(parent, "file"), "w"):
            pass
        d = os.path.join(parent, "file", "data")
        r = run(["serve", "--listen", "127.0.0.1:0", "--dir", d, "--cores", "1"])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ringcas serve: cannot use data folder %s: " % d, r.stderr)


class UnwritableDataFolder(unittest.TestCase):
    """A folder the server may not write to is refused at start. It used to start, answer
    /readyz 200, and fail every upload with 500 (the first segment could not be created)."""

    def serve(self, d, prefix=()):
        return subprocess.run(list(prefix) + [harness.binary(), "serve", "--listen",
                                              "127.0.0.1:0", "--dir", d, "--cores", "1"],
                              capture_output=True, text=True, timeout=30)

    def check_refused(self, r, d, why):
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("ringcas serve: cannot use data folder %s: %s" % (d, why), r.stderr)
        self.assertIn("the server writes its segments there", r.stderr)
        self.assertNotIn("listening", r.stdout)
        self.assertEqual(os.listdir(d), [])

    def test_a_folder_without_write_permission_is_refused(self):
        d = tmpdir(self)
        os.chmod(d, 0o555)
        prefix = ()
        if os.geteuid() == 0:
            # Root passes permission bits: run as nobody, who may read the folder only.
            prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
            probe = subprocess.run(list(prefix) + [harness.binary(), "--version"],
                                   capture_output=True, text=True, timeout=30)
            if probe.returncode != 0:
                self.skipTest("the binary cannot run as nobody here: %s" % probe.stderr)
        self.check_refused(self.serve(d, prefix), d, "permission denied")

    def test_segments_another_user_wrote_are_named_with_the_fix(self):
        # A folder a server running as root wrote (`make run` as root, an image without
        # USER), then started as the image's user, in a folder it may write: the segment left
        # active cannot be reopened to be sealed. The refusal named only "permission denied".
        if os.geteuid() != 0:
            self.skipTest("needs root, to write as one user and start as another")
        d = tmpdir(self)
        with harness.Server(cores=1, data_dir=d) as srv:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            body = b"written by root"
            conn.request("PUT", "/cas/" + hashlib.sha256(body).hexdigest(), body=body)
            self.assertEqual(conn.getresponse().status, 201)
            conn.close()
            srv.stop()
        (seg,) = [n for n in os.listdir(d) if n.startswith("seg-")]
        os.chmod(d, 0o777)
        nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        r = self.serve(d, nobody)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("%s/%s: permission denied" % (d, seg), r.stderr)
        self.assertIn("uid 65534, must own the segment files, e.g. chown -R 65534 %s" % d,
                      r.stderr)
        self.assertNotIn("listening", r.stdout)

    def test_an_immutable_folder_is_refused_also_for_root(self):
        if os.geteuid() != 0:
            self.skipTest("chattr +i needs root")
        d = tmpdir(self)
        r = subprocess.run(["chattr", "+i", d], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("this file system has no immutable flag: %s" % r.stderr)
        self.addCleanup(subprocess.run, ["chattr", "-i", d])
        self.check_refused(self.serve(d), d, "operation not permitted")


class Fsck(unittest.TestCase):
    """fsck on a stopped server's folder: a clean SIGTERM leaves the active segments unsealed
    (the next start seals them), which is no torn tail; bytes after the last record are."""

    def put(self, srv, body):
        """Stores <body>; a 507 (the store over budget while its evictor catches up: "retry
        later", docs/storage.md "Full") is retried as clients do. Under TSan the evictor of a
        32 MiB store fell behind 1.5 MB uploads sent back to back."""
        digest = hashlib.sha256(body).hexdigest()
        deadline = time.monotonic() + 30
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            conn.request("PUT", "/cas/" + digest, body=body)
            status = conn.getresponse().status
            conn.close()
            if status != 507 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(status, 201)
        return digest

    def fsck(self, d, status):
        r = run(["fsck", "--dir", d])
        self.assertEqual(r.returncode, status, r.stdout + r.stderr)
        self.assertEqual(r.stderr, "")
        return r.stdout

    def test_a_clean_stop_leaves_active_segments_not_torn_tails(self):
        with harness.Server(cores=2) as srv:
            body = b"fsck" * 1000
            digest = self.put(srv, body)
            srv.stop()
            out = self.fsck(srv.dir, 0)
            self.assertRegex(out, r": ok: 2 segments \(0 sealed, 2 active, \d+ bytes\), ")
            self.assertIn(" 1 blobs ok, ", out)
            self.assertTrue(out.endswith(" 0 torn tails\n"), out)
            # A crash's torn write: bytes after the last record of the segment holding it.
            segs = sorted(n for n in os.listdir(srv.dir) if n.startswith("seg-"))
            written = [n for n in segs if os.path.getsize(os.path.join(srv.dir, n)) > 4096]
            self.assertEqual(len(written), 1, segs)
            with open(os.path.join(srv.dir, written[0]), "r+b") as f:
                f.seek(-16, os.SEEK_END)
                f.write(b"\xde\xad\xbe\xef" * 4)
            out = self.fsck(srv.dir, 0)  # a torn tail is no corruption: recovery cuts it
            self.assertIn(": ok: 2 segments (0 sealed, 1 active, ", out)
            self.assertIn("torn tail", out.splitlines()[0])
            self.assertTrue(out.endswith(" 1 blobs ok, 0 corrupt records, 0 bad blobs, "
                                         "0 bad segments, 1 torn tails\n"), out)
            srv.start()
            self.assertEqual(cas_get(srv.port, digest), (200, body))
            srv.stop()
            # Recovery sealed the torn segment at its last record and deleted the one
            # without records; the restarted server's own are active again.
            out = self.fsck(srv.dir, 0)
            self.assertTrue(out.endswith(" 0 torn tails\n"), out)
            self.assertRegex(out, r"\(1 sealed, \d+ active, ")

    def test_eviction_is_no_corruption_and_a_lost_segment_is(self):
        """Ordinary eviction takes the oldest segment while a blob committed in the next one
        has its first chunks there: the server answers 404 for it, and fsck counts it as
        evicted (before, it said "a chunk is missing or corrupt" and exited 1 on a healthy
        store). A segment missing from inside the present range is still damage."""
        args = ("--max-size", "32MiB", "--segment-size", "2MiB")
        with harness.Server(args=args, cores=1) as srv:
            rnd = random.Random(5000)
            for _ in range(40):  # 1.5 MB each: most of them span two segments
                self.put(srv, rnd.randbytes(1500000))
            evicted = "ringcas_store_evicted_segments_total"
            deadline = time.monotonic() + 10
            while srv.metric(evicted) == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertGreater(srv.metric(evicted), 0)
            srv.stop()
            out = self.fsck(srv.dir, 0)
            self.assertIn(": ok: ", out)
            self.assertIn(" 0 bad blobs, ", out)
            m = re.search(r" (\d+) evicted blobs, ", out)
            self.assertIsNotNone(m, out)
            self.assertGreaterEqual(int(m.group(1)), 1, out)
            segs = sorted(n for n in os.listdir(srv.dir)
                          if n.startswith("seg-") and n.endswith(".rcs"))
            self.assertGreater(len(segs), 3, segs)
            os.unlink(os.path.join(srv.dir, segs[1]))  # older ones are there: a hole
            out = self.fsck(srv.dir, 1)
            self.assertIn("a chunk is missing or corrupt", out)
            self.assertIn(": CORRUPT: ", out)


class LostSegment(unittest.TestCase):
    """A blob whose chunks span three segments, the middle one set aside at restart (its
    header damaged): before, every GET answered 200 and closed at the hole, HEAD said 200,
    and a re-upload ended as "already present", so no client could repair it."""

    def request(self, srv, method, digest, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        try:
            conn.request(method, "/cas/" + digest, body=body)
            got = conn.getresponse()
            return got.status, got.read()
        finally:
            conn.close()

    def test_a_blob_with_a_hole_is_missing_and_can_be_stored_again(self):
        body = random.Random(7).randbytes(2000000)
        digest = hashlib.sha256(body).hexdigest()
        with harness.Server(args=("--segment-size", "1MiB"), cores=1) as srv:
            self.assertEqual(self.request(srv, "PUT", digest, body)[0], 201)
            srv.stop()
            segs = sorted(n for n in os.listdir(srv.dir)
                          if n.startswith("seg-") and n.endswith(".rcs")
                          and os.path.getsize(os.path.join(srv.dir, n)) > 4096)
            self.assertEqual(len(segs), 3, segs)  # 3 chunks of 256 KiB fit a 1 MiB segment
            with open(os.path.join(srv.dir, segs[1]), "r+b") as f:
                f.seek(20)  # the seq field of the header: recovery sets the file aside
                b = f.read(1)
                f.seek(20)
                f.write(bytes([b[0] ^ 1]))
            srv.start()
            self.assertTrue(os.path.exists(os.path.join(srv.dir, segs[1] + ".bad")))
            self.assertEqual(self.request(srv, "HEAD", digest)[0], 404)
            self.assertEqual(cas_get(srv.port, digest)[0], 404)
            self.assertEqual(self.request(srv, "PUT", digest, body)[0], 201)
            self.assertEqual(cas_get(srv.port, digest), (200, body))


class MisplacedChunks(unittest.TestCase):
    """Two chunk records of a blob swapped in its segment file (a misdirected write), each
    still a valid record with its own checksums: before, every read served the blob with its
    chunks in the wrong order as a complete success, HTTP 200 and gRPC OK. A commit record's
    refs now hold each chunk record's payload_sum: the blob is found corrupt and dropped, and
    no read completes with the wrong bytes; what a client did get is a prefix of the blob."""

    CHUNK = 256 << 10  # the default chunk size

    @staticmethod
    def records(data):
        """(offset, type, length with padding) of the records of a segment file's bytes."""
        out = []
        off = 4096
        while off + 32 <= len(data):
            magic, kind, plen = struct.unpack_from("<IB3xI", data, off)
            if magic != 0x44524352:  # "RCRD": zeros after the last record
                break
            size = (32 + plen + 7) & ~7
            out.append((off, kind, size))
            off += size
        return out

    def swap_middle_chunks(self, folder):
        """Swaps chunk records 1 and 2 of every blob of four chunks; returns how many."""
        swapped = 0
        for name in sorted(os.listdir(folder)):
            if not (name.startswith("seg-") and name.endswith(".rcs")):
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = bytearray(f.read())
            chunks = []
            for off, kind, size in self.records(data):
                if kind == 1:
                    chunks.append((off, size))
                    continue
                if kind == 2 and len(chunks) == 4:
                    (a, la), (b, lb) = chunks[1], chunks[2]
                    self.assertEqual(la, lb)  # random bytes: stored raw, equally long
                    data[a:a + la], data[b:b + lb] = data[b:b + lb], data[a:a + la]
                    swapped += 1
                chunks = []
            with open(path, "r+b") as f:
                f.write(data)
        return swapped

    def http_get(self, port, digest):
        """GET /cas/<digest>: (status, the bytes that came, whether the body came whole)."""
        status, got, whole, self.local = cas_get_whole(port, digest, 30)
        return status, got, whole

    def test_swapped_chunks_are_never_served_as_the_blob(self):
        import grpc  # pylint: disable=import-outside-toplevel
        import reapi  # pylint: disable=import-outside-toplevel

        rnd = random.Random(11)
        blobs = [rnd.randbytes(4 * self.CHUNK) for _ in range(3)]
        digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        with harness.Server(cores=1) as srv:
            for body, digest in zip(blobs, digests):
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                conn.request("PUT", "/cas/" + digest, body=body)
                self.assertEqual(conn.getresponse().status, 201)
                conn.close()
            srv.stop()
            self.assertEqual(self.swap_middle_chunks(srv.dir), 3)
            srv.start()

            # HTTP: a 404, or a 200 whose body is cut before its length; never the swapped blob.
            status, got, whole = self.http_get(srv.port, digests[0])
            self.assertFalse(status == 200 and whole, "the swapped blob was served whole")
            self.assertIn(status, (200, 404))
            self.assertTrue(blobs[0].startswith(got), "bytes that are not the blob's were sent")
            if status == 200:
                # The warning names the client, not a descriptor number nobody can look up.
                line = "http: %s:%d: response cut short" % self.local[:2]
                harness.wait_for(lambda: line in srv.log_tail(400), what=line)
            self.assertEqual(self.http_get(srv.port, digests[0])[0], 404, "dropped as corrupt")

            client = reapi.Client(srv.address)
            try:
                # ByteStream.Read: an error status, not OK.
                name = "blobs/%s/%d" % (digests[1], len(blobs[1]))
                req = reapi.msg("google.bytestream.ReadRequest", resource_name=name)
                got = b""
                with self.assertRaises(grpc.RpcError):
                    for r in client.Read(req, timeout=30):
                        got += r.data
                self.assertTrue(blobs[1].startswith(got), "bytes that are not the blob's came")
                with self.assertRaises(grpc.RpcError) as cm:
                    list(client.Read(req, timeout=30))
                self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

                # BatchReadBlobs: the blob's own status is not OK and carries no data.
                d = reapi.msg("Digest", hash=digests[2], size_bytes=len(blobs[2]))
                req = reapi.msg("BatchReadBlobsRequest", digests=[d])
                try:
                    resp = client.BatchReadBlobs(req, timeout=30).responses
                    self.assertEqual(len(resp), 1)
                    self.assertNotEqual(resp[0].status.code, 0, "served as OK")
                    self.assertEqual(resp[0].data, b"")
                except grpc.RpcError as e:
                    self.assertNotEqual(e.code(), grpc.StatusCode.OK)
                resp = client.BatchReadBlobs(req, timeout=30).responses
                self.assertEqual(resp[0].status.code, grpc.StatusCode.NOT_FOUND.value[0])
            finally:
                client.close()
            self.assertEqual(srv.metric("ringcas_store_dropped_corrupt_total"), 3)


class CutCommitRecord(unittest.TestCase):
    """A segment file cut inside a blob's commit record under a running server (a volume
    shrunk under it, a file truncated by hand), the record's header whole: the read of the
    commit record comes back short of the length the header names. Before, the reader read it
    again at that length, got the same short read, and so on without end: a GET and a
    ByteStream.Read waited until their clients gave up, each holding a disk read of its core.
    Now the read fails at once as corrupt: the blob is dropped (NOT_FOUND, 404) and its next
    upload stores it again."""

    @staticmethod
    def cut_commit(folder, digest):
        """Cuts the segment file that holds <digest>'s commit record 8 bytes past the record's
        32-byte header; returns True when it found it."""
        needle = bytes.fromhex(digest)
        for name in sorted(os.listdir(folder)):
            if not (name.startswith("seg-") and name.endswith(".rcs")):
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = f.read()
            at = data.find(needle)
            if at < 0:
                continue
            # The hash is in the commit record's payload: its header is the last "RCRD" of
            # kind 2 (commit) before it, on 8 bytes.
            off = at & ~7
            while off >= 0:
                magic, kind = struct.unpack_from("<IB", data, off)
                if magic == 0x44524352 and kind == 2:
                    os.truncate(path, off + 32 + 8)
                    return True
                off -= 8
        return False

    def put(self, port, digest, body):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("PUT", "/cas/" + digest, body=body)
        self.assertEqual(conn.getresponse().status, 201)
        conn.close()

    def get(self, port, digest):
        """GET /cas/<digest>: (status, the bytes that came, whether the body came whole). A
        client that waits 10 s for an answer the server never gives fails the test."""
        return cas_get_whole(port, digest, 10)[:3]

    def test_reads_of_a_blob_whose_commit_record_was_cut_fail_as_corrupt(self):
        import grpc  # pylint: disable=import-outside-toplevel
        import reapi  # pylint: disable=import-outside-toplevel

        rnd = random.Random(12)
        # Four 256 KiB chunks: the commit record is read alone, by the ring.
        blobs = [rnd.randbytes(1 << 20) for _ in range(2)]
        digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        with harness.Server(cores=1, args=["--max-size", "256M"]) as srv:
            # HTTP: the blob last written, its commit record cut.
            self.put(srv.port, digests[0], blobs[0])
            self.assertTrue(self.cut_commit(srv.dir, digests[0]))
            status, got, whole = self.get(srv.port, digests[0])
            self.assertFalse(status == 200 and whole, "a blob with no whole commit was served")
            self.assertIn(status, (200, 404))
            if status == 200:
                self.assertTrue(blobs[0].startswith(got), "bytes that are not the blob's came")
            self.assertEqual(self.get(srv.port, digests[0])[0], 404, "dropped as corrupt")
            # Stored again, past the cut, it reads whole.
            self.put(srv.port, digests[0], blobs[0])
            self.assertEqual(self.get(srv.port, digests[0]), (200, blobs[0], True))

            # ByteStream.Read: NOT_FOUND at once, not the client's deadline.
            self.put(srv.port, digests[1], blobs[1])
            self.assertTrue(self.cut_commit(srv.dir, digests[1]))
            client = reapi.Client(srv.address)
            try:
                name = "blobs/%s/%d" % (digests[1], len(blobs[1]))
                req = reapi.msg("google.bytestream.ReadRequest", resource_name=name)
                with self.assertRaises(grpc.RpcError) as cm:
                    list(client.Read(req, timeout=10))
                self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
                self.assertIn("corrupt", cm.exception.details())
            finally:
                client.close()
            self.assertEqual(srv.metric("ringcas_store_dropped_corrupt_total"), 2)
            srv.wait_quiet(extra=("blob_readers", "blob_io_in_flight"))


class RecoveryLog(unittest.TestCase):
    """The start-up line after recovery counts records and the keys they leave: an action
    result replaced once is two records and one entry (the ringcas_store_blobs gauge's
    figure), so a user comparing the two is not left wondering which blobs went missing."""

    def put(self, srv, path, body):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("PUT", path, body=body)
        self.assertIn(conn.getresponse().status, (200, 201))
        conn.close()

    def test_records_and_keys_are_told_apart(self):
        with harness.Server(cores=1) as srv:
            body = b"recovered" * 100
            self.put(srv, "/cas/" + hashlib.sha256(body).hexdigest(), body)
            key = "/ac/" + hashlib.sha256(b"an action").hexdigest()
            self.put(srv, key, b"first result")
            self.put(srv, key, b"second result")
            srv.restart()
            lines = [ln for ln in srv.log_tail(400).splitlines() if " recovered " in ln]
            self.assertTrue(lines, srv.log_tail())
            self.assertRegex(lines[-1], r"recovered 3 commit records from \d+ segments in .*: "
                                        r"2 blobs and action results$")
            self.assertEqual(srv.metric("ringcas_store_blobs"), 2)


class LogThreads(unittest.TestCase):
    """docs/operations.md "Logs": each line names its thread as `main` or `coreN`."""

    def test_lines_name_their_thread_as_documented(self):
        with harness.Server(cores=1, args=("--log-level", "debug")) as srv:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(b"NOT A REQUEST\r\n\r\n")
                self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 400 "))
            harness.wait_for(lambda: "ringcas[core0] debug: " in srv.log_tail(),
                             what="a debug line of core 0")
            threads = set(re.findall(r"^\S+ ringcas\[([^\]]*)\] ", srv.log_tail(), re.M))
            self.assertLessEqual(threads, {"main", "core0", "evictor"})
            self.assertIn("main", threads)


class CpuLimit(unittest.TestCase):
    """A container's CPU limit is a cgroup quota, not a CPU set: without --cores the server
    starts as many cores as the limit pays for, not one per CPU it may run on, and does not
    pin them to the first CPUs of the machine."""

    def threads(self, pid):
        """{tid: name} of <pid>'s threads; an io_uring worker carries its core's name for a
        moment after it starts, and may be gone by the time its name is read."""
        names = {}
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                    names[tid] = f.read().strip()
            except FileNotFoundError:
                pass
        return names

    def cpus_of(self, path):
        with open(path) as f:
            return [l.split()[1] for l in f if l.startswith("Cpus_allowed_list")][0]

    def test_default_cores_follow_the_cgroup_cpu_limit(self):
        if len(os.sched_getaffinity(0)) < 2:
            self.skipTest("one CPU: the limit and the CPU count give the same core count")
        procs = cpu_cgroup(self, 50000)  # half a CPU
        d = tmpdir(self)
        # The shell moves itself into the cgroup, then becomes the server (same pid).
        p = subprocess.Popen(["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, harness.binary(),
                              "serve", "--listen", "127.0.0.1:0", "--dir", d],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            listening = p.stdout.readline()
            names = self.threads(p.pid)
            cores = [tid for tid, name in names.items() if name.startswith("ringcas-c")]
            process = self.cpus_of("/proc/%d/status" % p.pid)
            mine = self.cpus_of("/proc/%d/task/%s/status" % (p.pid, cores[0])) if cores else None
        finally:
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("listening on", listening, err)
        self.assertEqual(len({names[t] for t in cores}), 1, "%s\n%s" % (names, err))
        self.assertEqual(mine, process)  # not pinned to one CPU
        self.assertIn("--cores not given: 1, for a cgroup CPU limit of 0.500 CPUs", err)
        self.assertIn("1 cores, not pinned", err)

    def test_more_cores_than_cpus_is_warned_about(self):
        n = len(os.sched_getaffinity(0))
        with harness.Server(cores=n + 1) as srv:
            self.assertIn("--cores %d is more than the %d CPUs this process may run on"
                          % (n + 1, n), srv.log_tail())
            # Not "a CPU of its own": two of them share one.
            self.assertIn("%d cores, pinned to %d CPUs, up to 2 on each" % (n + 1, n),
                          srv.log_tail())
        with harness.Server(cores=n) as srv:
            self.assertNotIn("--cores", srv.log_tail())

    def test_a_core_per_allowed_cpu_is_pinned(self):
        n = len(os.sched_getaffinity(0))
        with harness.Server(cores=n) as srv:
            names = self.threads(srv.proc.pid)
            pinned = {}
            for tid, name in names.items():
                if not name.startswith("ringcas-c"):
                    continue
                try:
                    cpus = self.cpus_of("/proc/%d/task/%s/status" % (srv.proc.pid, tid))
                except FileNotFoundError:
                    continue
                if cpus.isdigit():  # not a worker that shares the name for a moment
                    pinned[name] = cpus
            # Every core on one CPU of its own.
            self.assertEqual(len(pinned), n, names)
            self.assertEqual(len(set(pinned.values())), n, pinned)
            self.assertIn("%d cores, each pinned to a CPU of its own" % n, srv.log_tail())


class BlobOverTheLimit(unittest.TestCase):
    """A blob larger than the store takes (a quarter of --max-size) on an empty store: the
    answer names the blob's size and the limit, not "store full" (which reads as "evict or
    retry later"), over HTTP (the status body), gRPC (grpc-message) and the CLI; the status
    codes are 413 and INVALID_ARGUMENT (REAPI's max_cas_blob_size_bytes)."""

    LIMIT = 16 << 20  # --max-size 64MiB / 4
    SIZE = LIMIT + 4096

    def test_the_answer_names_the_limit(self):
        want = ("blob of %d bytes is larger than this store takes (a quarter of --max-size: "
                "%d bytes)" % (self.SIZE, self.LIMIT))
        with harness.Server(args=("--max-size", "64MiB", "--segment-size", "2MiB"),
                            cores=1) as srv:
            body = b"z" * self.SIZE
            digest = hashlib.sha256(body).hexdigest()
            # HTTP: refused from its Content-Length, before the body is read.
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(("PUT /cas/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                           % (digest, self.SIZE)).encode())
                got = b""
                while b"\r\n\r\n" not in got or not got.endswith(b"\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            head, _, text = got.decode().partition("\r\n\r\n")
            self.assertTrue(head.startswith("HTTP/1.1 413 "), head)
            self.assertEqual(text.strip(), want)
            # gRPC (ByteStream.Write, through the CLI): grpc-message, INVALID_ARGUMENT.
            d = tmpdir(self)
            path = os.path.join(d, "big")
            with open(path, "wb") as f:
                f.write(body)
            r = subprocess.run([harness.binary(), "put", "--server", srv.address, path],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertEqual(r.stderr, "ringcas put: %s: %s [INVALID_ARGUMENT]\n" % (path, want))
            # The store took nothing, and a blob at the limit still goes in.
            self.assertEqual(cas_get(srv.port, digest)[0], 404)
            with open(path, "wb") as f:
                f.write(b"y" * self.LIMIT)
            r = subprocess.run([harness.binary(), "put", "--server", srv.address, path],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)

class Lifecycle(unittest.TestCase):
    def test_sigterm_with_idle_connections_exits_zero(self):
        with harness.Server(cores=2) as srv:
            socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
            time.sleep(0.2)
            start = time.monotonic()
            srv.stop()
            self.assertLess(time.monotonic() - start, 10)
            for s in socks:
                s.close()

    def test_sigint_also_drains(self):
        srv = harness.Server(cores=1).start()
        try:
            srv.proc.send_signal(signal.SIGINT)
            srv.wait_exit(30)
        finally:
            srv.cleanup()


    def test_sigterm_during_start_up_stops_cleanly(self):
        # Kubernetes may send SIGTERM while a pod still starts: waiting for its port or
        # recovering a large store (seconds with millions of blobs). Its default action
        # killed the process then (status 143, no log line); it must stop as a drain does,
        # exit 0, and say why, without opening its listeners. The wait for a port in use is
        # the start-up step the test can hold the server in; recovery comes after it, under
        # the same signal mask.
        s, port = held_port()
        d = tmpdir(self)
        p, err = serve_waiting_for(port, d)
        try:
            p.send_signal(signal.SIGTERM)
            s.close()  # the wait ends, the store is opened, then the signal is seen
            out, rest = p.communicate(timeout=30)
            err += rest
        finally:
            s.close()
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("SIGTERM (signal 15) during start-up: stopping before serving", err)
        self.assertEqual(out, "", "no listener was opened")
        # The folder is left as a clean stop leaves it: the next start serves from it.
        with harness.Server(cores=1, data_dir=d) as srv:
            self.assertIn("ringcas_", srv.metrics_text())

    def test_scrapes_while_the_cores_start_are_answered(self):
        # A fixed port accepts as soon as the first core listens: a Kubernetes probe or a
        # Prometheus scrape may come while later cores are still being set up, and the first
        # cores render every core's counters. Each scrape must be whole (a core not started yet
        # counts zero) and the server must stop cleanly: under ThreadSanitizer (CONTRIBUTING.md)
        # an unordered read of a core's entry while it is published is a report, and exit 66.
        # The window is a few milliseconds wide: several starts of 8 cores, 4 scrapers each.
        for _ in range(3):
            port = harness.pick_port()
            if not port:
                self.skipTest("no port range below the ephemeral one")
            answered = []
            stop = [False]

            def scrape():
                while not stop[0]:
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                        conn.request("GET", "/metrics")
                        resp = conn.getresponse()
                        body = resp.read().decode()
                        conn.close()
                    except OSError:
                        time.sleep(0.001)  # not listening yet
                        continue
                    try:
                        whole = any(n == "ringcas_conns" for n, _, _ in harness.parse_metrics(body))
                    except AssertionError:
                        whole = False
                    answered.append((resp.status, whole))

            threads = [threading.Thread(target=scrape) for _ in range(4)]
            for t in threads:
                t.start()
            srv = harness.Server(cores=8)
            stopped = False
            try:
                srv.start(port)
                time.sleep(0.5)
                stop[0] = True
                for t in threads:
                    t.join(60)
                srv.stop()
                stopped = True
            finally:
                stop[0] = True
                srv.cleanup(keep_log=not stopped)
            self.assertTrue(answered)
            self.assertEqual(set(answered), {(200, True)})

    def test_a_second_signal_ends_the_drain_at_once(self):
        # A drain waits up to --drain-timeout for requests under way. Ctrl-C pressed again, or
        # a supervisor that will not wait, must not have to wait too: the second signal was
        # ignored (left pending while the main thread joined the cores), and the server sat
        # out the whole timeout.
        self.second_signal_ends_the_drain()

    @unittest.skipUnless(os.environ.get("WALLSKEW_LIB"), "needs the wallskew library (ctest sets it)")
    def test_a_second_signal_ends_the_drain_after_the_wall_clock_stepped_back(self):
        # The main thread joined the cores with waits until "the wall clock now + 100 ms": a
        # step back of the clock (NTP correcting a node that booted fast) made the wait that
        # step longer, and the second signal went unseen until the drain timed out.
        # wallskew puts the server's reading of the wall clock an hour ahead of the kernel's.
        self.second_signal_ends_the_drain(harness.wall_clock_ahead_env(3600))

    def second_signal_ends_the_drain(self, env=None):
        srv = harness.Server(cores=2, args=["--drain-timeout", "120s"], env=env).start()
        try:
            body = os.urandom(4096)
            sock = socket.create_connection(("127.0.0.1", srv.port))
            sock.sendall(("PUT /cas/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                          % (hashlib.sha256(body).hexdigest(), 1 << 20)).encode() + body)
            harness.wait_for(lambda: srv.metric("ringcas_blob_uploads") == 1, timeout=10,
                             what="the upload to be under way")
            srv.proc.send_signal(signal.SIGINT)
            harness.wait_for(lambda: "SIGINT (signal 2): draining" in srv.log_tail(),
                             timeout=10, what="the drain to begin")
            time.sleep(0.5)
            self.assertIsNone(srv.proc.poll(), "the drain waits for the upload under way")
            start = time.monotonic()
            srv.proc.send_signal(signal.SIGINT)
            srv.wait_exit(20)
            self.assertLess(time.monotonic() - start, 10)
            self.assertIn("signal 2 during the drain: closing the connections left now",
                          srv.log_tail())
            sock.settimeout(10)
            try:
                self.assertEqual(sock.recv(1), b"")  # closed, the upload dropped
            except ConnectionResetError:
                pass
            sock.close()
        finally:
            srv.cleanup()

    def test_sighup_also_drains(self):
        # The terminal closing sends SIGHUP: a drain like SIGTERM's, not a kill (status 129).
        srv = harness.Server(cores=2).start()
        try:
            sock = socket.create_connection(("127.0.0.1", srv.port))
            srv.proc.send_signal(signal.SIGHUP)
            srv.wait_exit(30)
            self.assertEqual(sock.recv(1), b"")  # the idle connection was closed
            sock.close()
            self.assertIn("SIGHUP (signal 1): draining", srv.log_tail())
        finally:
            srv.cleanup()

if __name__ == "__main__":
    unittest.main(verbosity=2)
