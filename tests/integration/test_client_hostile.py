"""`ringcas get` against a hostile or broken gRPC server: a fake HTTP/2 server on raw sockets
that answers ByteStream.Read with whatever a scenario says (lying sizes and lengths, bad
framing, missing trailers, GOAWAY, a close mid-read, silence, a hostile grpc-message).

Each scenario checks what a user sees: the exit status (docs/cli.md), one line on stderr
that names the cause, no output file left behind (neither FILE nor its temporary), and no
hang (every run has a timeout). Under ASan any report fails the run (non-zero exit with the
report on stderr, which the checks below show).
"""

import hashlib
import os
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import zstandard

import h2raw
from h2raw import DATA, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, SETTINGS, ACK

import harness

EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_TIMEOUT, EXIT_UNAVAILABLE, EXIT_INTEGRITY = 1, 3, 4, 5, 6

BLOB = b"ringcas hostile server test blob\n" * 1000
BLOB_DIGEST = "%s/%d" % (hashlib.sha256(BLOB).hexdigest(), len(BLOB))


def read_response(data):
    """A ReadResponse message with <data> in field 10 (bytes)."""
    n = len(data)
    varint = b""
    while True:
        b = n & 0x7f
        n >>= 7
        varint += bytes([b | (0x80 if n else 0)])
        if not n:
            break
    return b"\x52" + varint + data  # field 10, wire type 2


def frame(ftype, flags, stream, payload=b""):
    return h2raw.Conn.frame(ftype, flags, stream, payload)


def response_headers(stream, end_stream=False, extra=()):
    block = h2raw.hpack([(":status", "200"), ("content-type", "application/grpc")] +
                        list(extra))
    return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block)


def trailers(stream, status=0, message=None):
    h = [("grpc-status", str(status))]
    if message is not None:
        h.append(("grpc-message", message))
    return frame(HEADERS, END_HEADERS | END_STREAM, stream, h2raw.hpack(h))


def data(stream, payload, end_stream=False):
    out = b""
    while True:
        piece, payload = payload[:16384], payload[16384:]
        out += frame(DATA, END_STREAM if end_stream and not payload else 0, stream, piece)
        if not payload:
            return out


class FakeServer(harness.Listener):
    """Accepts HTTP/2 connections; on each request's end calls answer(sock, stream) and then
    keeps reading (acknowledging SETTINGS and PINGs) until the client closes, or closes the
    connection itself when answer returns False."""

    def __init__(self, answer):
        self.answer = answer
        self.errors = []
        super().__init__()

    def on_conn(self, c):
        threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_exact(c, n, buf):
        while len(buf) < n:
            chunk = c.recv(65536)
            if not chunk:
                raise ConnectionError("client closed")
            buf += chunk
        return buf

    def _serve(self, c):
        try:
            c.settimeout(30)
            buf = self._read_exact(c, len(h2raw.PREFACE), b"")
            if not buf.startswith(h2raw.PREFACE):
                return
            buf = buf[len(h2raw.PREFACE):]
            c.sendall(frame(SETTINGS, 0, 0))
            keep = True
            while True:
                buf = self._read_exact(c, 9, buf)
                n = int.from_bytes(buf[:3], "big")
                buf = self._read_exact(c, 9 + n, buf)
                ftype, flags = buf[3], buf[4]
                stream = int.from_bytes(buf[5:9], "big") & 0x7fffffff
                payload = buf[9:9 + n]
                buf = buf[9 + n:]
                if ftype == SETTINGS and not flags & ACK:
                    c.sendall(frame(SETTINGS, ACK, 0))
                elif ftype == PING and not flags & ACK:
                    c.sendall(frame(PING, ACK, 0, payload))
                elif ftype in (DATA, HEADERS) and flags & END_STREAM and keep:
                    keep = self.answer(c, stream) is not False
                    if not keep:
                        return
        except (OSError, ConnectionError):
            pass
        except Exception as e:  # pragma: no cover - a bug in the fake itself
            self.errors.append(e)
        finally:
            try:
                c.close()
            except OSError:
                pass


class Hostile(unittest.TestCase):
    timeout = "3s"

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringcas-hostile-")
        self.out = os.path.join(self.tmp, "out.bin")
        self.fakes = []

    def tearDown(self):
        for f in self.fakes:
            f.close()
            self.assertEqual(f.errors, [])
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)

    def fake(self, answer):
        f = FakeServer(answer)
        self.fakes.append(f)
        return f

    def get(self, answer, *extra, digest=BLOB_DIGEST, output=True, timeout=60, stop=None):
        """Runs `ringcas get` against a fake server answering with <answer>; returns
        (exit status, stderr, output bytes or None when no file is there)."""
        f = self.fake(answer)
        cmd = [harness.binary(), "get", "--server", f.address, "--timeout", self.timeout,
               digest] + list(extra)
        if output:
            cmd += ["-o", self.out]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if stop:
            stop(p)
        out, err = p.communicate(timeout=timeout)
        err = err.decode(errors="replace")
        self.assertNotIn("AddressSanitizer", err)
        self.assertNotIn("runtime error", err)
        if not output:
            return p.returncode, err, out
        left = sorted(os.listdir(self.tmp))
        body = None
        if os.path.exists(self.out):
            with open(self.out, "rb") as fh:
                body = fh.read()
        return p.returncode, err, body, left

    def assert_fails(self, answer, status, words, *extra, **kw):
        rc, err, body, left = self.get(answer, *extra, **kw)
        self.assertEqual(rc, status, err)
        self.assertIn(words, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIsNone(body)
        self.assertEqual(left, [], "nothing may be left beside the output")
        return err

    # ---- sanity: the fake serves a correct answer ----

    def test_correct_answer_is_written(self):
        def answer(c, s):
            c.sendall(response_headers(s) + data(s, h2raw.grpc_message(read_response(BLOB))) +
                      trailers(s))
        rc, err, body, left = self.get(answer)
        self.assertEqual(rc, 0, err)
        self.assertEqual(body, BLOB)
        self.assertEqual(left, ["out.bin"])

    # ---- lying content ----

    def test_wrong_bytes_of_the_right_size(self):
        bad = bytes([BLOB[0] ^ 1]) + BLOB[1:]

        def answer(c, s):
            c.sendall(response_headers(s) + data(s, h2raw.grpc_message(read_response(bad))) +
                      trailers(s))
        self.assert_fails(answer, EXIT_INTEGRITY, "do not hash to the digest")

    def test_fewer_bytes(self):
        def answer(c, s):
            c.sendall(response_headers(s) +
                      data(s, h2raw.grpc_message(read_response(BLOB[:-1]))) + trailers(s))
        self.assert_fails(answer, EXIT_INTEGRITY, "fewer bytes")

    def test_more_bytes(self):
        def answer(c, s):
            c.sendall(response_headers(s) +
                      data(s, h2raw.grpc_message(read_response(BLOB + b"x"))) + trailers(s))
        self.assert_fails(answer, EXIT_INTEGRITY, "more bytes")

    def test_zstd_of_the_wrong_bytes(self):
        z = zstandard.ZstdCompressor().compress(b"y" * len(BLOB))

        def answer(c, s):
            c.sendall(response_headers(s) + data(s, h2raw.grpc_message(read_response(z))) +
                      trailers(s))
        self.assert_fails(answer, EXIT_INTEGRITY, "do not hash to the digest", "--compress")

    def test_zstd_cut_short(self):
        z = zstandard.ZstdCompressor().compress(BLOB)

        def answer(c, s):
            c.sendall(response_headers(s) +
                      data(s, h2raw.grpc_message(read_response(z[:-4]))) + trailers(s))
        self.assert_fails(answer, EXIT_INTEGRITY, "", "--compress")

    def test_zstd_garbage(self):
        def answer(c, s):
            c.sendall(response_headers(s) +
                      data(s, h2raw.grpc_message(read_response(b"not zstd at all"))) +
                      trailers(s))
        self.assert_fails(answer, EXIT_INTEGRITY, "corrupt zstd", "--compress")

    def test_zstd_correct_then_more(self):
        z = zstandard.ZstdCompressor().compress(BLOB)
        z2 = zstandard.ZstdCompressor().compress(b"extra")

        def answer(c, s):
            c.sendall(response_headers(s) +
                      data(s, h2raw.grpc_message(read_response(z + z2))) + trailers(s))
        self.assert_fails(answer, EXIT_INTEGRITY, "more bytes", "--compress")

    # ---- broken gRPC framing ----

    def test_message_over_the_limit(self):
        def answer(c, s):
            c.sendall(response_headers(s) + data(s, b"\x00\x7f\xff\xff\xff" + b"\x52") +
                      trailers(s))
        self.assert_fails(answer, EXIT_FAILURE, "over the size limit")

    def test_length_prefix_longer_than_the_message(self):
        msg = read_response(BLOB)

        def answer(c, s):
            c.sendall(response_headers(s) + data(s, b"\x00" + struct.pack(">I", len(msg) + 10) +
                                                 msg) + trailers(s))
        self.assert_fails(answer, EXIT_FAILURE, "inside a message")

    def test_length_prefix_shorter_than_the_message(self):
        msg = read_response(BLOB)

        def answer(c, s):
            c.sendall(response_headers(s) + data(s, b"\x00" + struct.pack(">I", 100) + msg) +
                      trailers(s))
        rc, err, body, left = self.get(answer)
        self.assertIn(rc, (EXIT_FAILURE, EXIT_INTEGRITY), err)
        self.assertIsNone(body)
        self.assertEqual(left, [])

    def test_compressed_flag_without_grpc_encoding(self):
        def answer(c, s):
            m = read_response(BLOB)
            c.sendall(response_headers(s) + data(s, b"\x01" + struct.pack(">I", len(m)) + m) +
                      trailers(s))
        self.assert_fails(answer, EXIT_FAILURE, "malformed gRPC framing")

    def test_missing_grpc_status(self):
        def answer(c, s):
            c.sendall(response_headers(s) + data(s, h2raw.grpc_message(read_response(BLOB)),
                                                 end_stream=True))
        self.assert_fails(answer, EXIT_FAILURE, "without grpc-status")

    def test_data_after_trailers(self):
        def answer(c, s):
            c.sendall(response_headers(s) + data(s, h2raw.grpc_message(read_response(BLOB))) +
                      trailers(s) + data(s, b"more"))
        rc, err, body, left = self.get(answer)
        # The call was complete and verified when its trailers came: what follows is the
        # server's problem, not the blob's.
        self.assertEqual(rc, 0, err)
        self.assertEqual(body, BLOB)

    def test_not_found_trailers_only(self):
        def answer(c, s):
            c.sendall(frame(HEADERS, END_HEADERS | END_STREAM, s, h2raw.hpack(
                [(":status", "200"), ("content-type", "application/grpc"),
                 ("grpc-status", "5"), ("grpc-message", "blob not found")])))
        self.assert_fails(answer, EXIT_NOT_FOUND, "blob not found [NOT_FOUND]")

    # ---- the connection goes away ----

    def test_goaway_mid_call_then_close(self):
        half = h2raw.grpc_message(read_response(BLOB))[:len(BLOB) // 2]

        def answer(c, s):
            c.sendall(response_headers(s) + data(s, half) +
                      frame(GOAWAY, 0, 0, struct.pack(">II", s, 0)))
            time.sleep(0.2)
            return False
        self.assert_fails(answer, EXIT_UNAVAILABLE, "")

    def test_server_vanishes_mid_read(self):
        half = h2raw.grpc_message(read_response(BLOB))[:len(BLOB) // 2]

        def answer(c, s):
            c.sendall(response_headers(s) + data(s, half))
            return False
        self.assert_fails(answer, EXIT_UNAVAILABLE, "connection failed")

    def test_server_that_never_answers_times_out(self):
        start = time.monotonic()
        self.assert_fails(lambda c, s: None, EXIT_TIMEOUT, "no progress")
        self.assertLess(time.monotonic() - start, 30)

    def test_deadline_fires_on_a_trickle(self):
        def answer(c, s):
            # One byte a second keeps --timeout from firing; --deadline must.
            c.sendall(response_headers(s))
            m = h2raw.grpc_message(read_response(BLOB))
            for i in range(20):
                try:
                    c.sendall(data(s, m[i:i + 1]))
                except OSError:
                    return False
                time.sleep(0.5)
        self.assert_fails(answer, EXIT_TIMEOUT, "deadline", "--deadline", "2s")

    # ---- what the server says is printed as one line ----

    def test_grpc_message_is_one_printable_line(self):
        def answer(c, s):
            c.sendall(frame(HEADERS, END_HEADERS | END_STREAM, s, h2raw.hpack(
                [(":status", "200"), ("content-type", "application/grpc"),
                 ("grpc-status", "13"),
                 ("grpc-message", "first%0Aringcas get: fake line%1B[31mred%07")])))
        err = self.assert_fails(answer, EXIT_FAILURE, "first")
        self.assertNotIn("\x1b", err)
        self.assertNotIn("\x07", err)


class Interrupted(unittest.TestCase):
    """A get into a file that is interrupted (Ctrl-C, kill) leaves nothing behind."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringcas-hostile-")
        self.out = os.path.join(self.tmp, "out.bin")

    def tearDown(self):
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)

    def interrupt(self, sig):
        f = FakeServer(lambda c, s: c.sendall(response_headers(s)))  # then silence
        try:
            p = subprocess.Popen([harness.binary(), "get", "--server", f.address, BLOB_DIGEST,
                                  "-o", self.out], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            harness.wait_for(lambda: os.listdir(self.tmp), what="the temporary file")
            time.sleep(0.3)
            p.send_signal(sig)
            _, err = p.communicate(timeout=30)
            err = err.decode(errors="replace")
            self.assertEqual(p.returncode, -sig, err)
            self.assertNotIn("AddressSanitizer", err)
            self.assertEqual(os.listdir(self.tmp), [])
        finally:
            f.close()

    def test_sigint(self):
        import signal
        self.interrupt(signal.SIGINT)

    def test_sigterm(self):
        import signal
        self.interrupt(signal.SIGTERM)

    def test_sighup(self):
        import signal
        self.interrupt(signal.SIGHUP)

    def test_an_ignored_sighup_stays_ignored(self):
        # nohup ringcas get ... -o FILE: a closed terminal must not end the download.
        import signal
        f = FakeServer(lambda c, s: c.sendall(response_headers(s)))  # then silence
        try:
            p = subprocess.Popen([harness.binary(), "get", "--server", f.address, BLOB_DIGEST,
                                  "-o", self.out], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE,
                                 preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
            harness.wait_for(lambda: os.listdir(self.tmp), what="the temporary file")
            time.sleep(0.3)
            p.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            self.assertIsNone(p.poll())
            self.assertEqual(len(os.listdir(self.tmp)), 1)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=30)
            self.assertEqual(p.returncode, -signal.SIGINT, err)
            self.assertEqual(os.listdir(self.tmp), [])
        finally:
            f.close()


class ChangingFiles(unittest.TestCase):
    """`ringcas put` of a file that another process changes while put reads it."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringcas-hostile-")

    def tearDown(self):
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)

    def test_file_truncated_while_it_is_hashed(self):
        # A sparse 64 GiB file takes put tens of seconds to hash; it is cut to nothing as
        # soon as put has it open. Through an mmap that was a SIGBUS (the process died).
        path = os.path.join(self.tmp, "big.log")
        with open(path, "wb") as f:
            f.truncate(64 << 30)
        silent = FakeServer(lambda c, s: None)
        try:
            p = subprocess.Popen([harness.binary(), "put", "--server", silent.address,
                                  "--timeout", "2s", path],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)

            def has_it_open():
                fds = "/proc/%d/fd" % p.pid
                try:
                    return any(os.readlink(os.path.join(fds, n)) == path
                               for n in os.listdir(fds))
                except OSError:
                    return False
            harness.wait_for(has_it_open, timeout=30, interval=0.001, what="put opens the file")
            os.truncate(path, 0)
            out, err = p.communicate(timeout=120)
        finally:
            silent.close()
        err = err.decode(errors="replace")
        self.assertNotIn("AddressSanitizer", err)
        self.assertEqual(p.returncode, EXIT_INTEGRITY, err)
        self.assertIn("big.log: file got shorter while it was hashed", err)
        self.assertEqual(out, b"")


class OutputsThatAreNotFiles(unittest.TestCase):
    """`get -o PATH` where PATH is a device or a FIFO: written in place, never replaced (a
    rename over /dev/null, as root, made it a regular file holding the blob)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ringcas-hostile-")

        def answer(c, s):
            c.sendall(response_headers(s) +
                      data(s, h2raw.grpc_message(read_response(BLOB))) + trailers(s))
        self.fake = FakeServer(answer)

    def tearDown(self):
        self.fake.close()
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)

    def get(self, path):
        p = subprocess.run([harness.binary(), "get", "--server", self.fake.address,
                            BLOB_DIGEST, "-o", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        return p.returncode, p.stderr.decode(errors="replace")

    def test_a_copy_of_dev_null_stays_a_device(self):
        import stat
        # Not /dev/null itself: a client without the fix, run as root, would replace it.
        node = os.path.join(self.tmp, "null")
        try:
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            self.skipTest("mknod needs CAP_MKNOD")
        rc, err = self.get(node)
        self.assertEqual(rc, 0, err)
        self.assertTrue(stat.S_ISCHR(os.lstat(node).st_mode), "the device node was replaced")
        self.assertEqual(os.listdir(self.tmp), ["null"])

    def test_a_fifo_gets_the_bytes(self):
        import stat
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        got = []

        def reader():
            # O_NONBLOCK: a client that never opens the FIFO must not hang the test.
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
            deadline = time.monotonic() + 30
            opened = False
            try:
                while time.monotonic() < deadline:
                    try:
                        b = os.read(fd, 65536)
                    except BlockingIOError:
                        opened = True
                        time.sleep(0.01)
                        continue
                    if b:
                        got.append(b)
                        opened = True
                    elif opened and got:
                        return  # the writer closed
                    else:
                        time.sleep(0.01)
            finally:
                os.close(fd)
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        rc, err = self.get(fifo)
        t.join(40)
        self.assertEqual(rc, 0, err)
        self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced")
        self.assertEqual(b"".join(got), BLOB)
        self.assertEqual(os.listdir(self.tmp), ["fifo"])


if __name__ == "__main__":
    unittest.main()
