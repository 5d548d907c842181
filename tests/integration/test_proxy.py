"""ringcas behind TLS and basic auth, as docs/operations.md ("Security") tells operators to run
it: deploy/nginx/ringcas.conf, run by Debian's nginx as it is (only its paths under
/etc/nginx/ringcas/, its listen port and its upstream port replaced), in front of the real
server, with a CA and a server certificate made by openssl for the test, and real clients:

- Bazel 4.2.3 over grpcs:// (build, clean --expunge, build: all remote cache hits; then the
  read-only identity: all hits too) and over https:// with the credentials in the URL (the
  same);
- grpcio with TLS credentials and basic-auth metadata: a 50 MiB ByteStream Write and Read that
  nginx streams (no temp file, its worker's memory stays small), a cancelled Read and a Write
  past its deadline that leave nothing in flight in the server;
- the read-only identity: reads work, every write is refused by nginx and stores nothing;
  no credentials or wrong ones: 401 / UNAUTHENTICATED;
- curl PUT and GET of a 100 MiB blob, Content-Length over HTTP/2 and chunked over HTTP/1.1;
- gRPC calls and HTTP requests in turn on nginx's kept-alive upstream connections."""

import base64
import glob
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

import harness
import reapi

CONF = os.path.join(harness.ROOT, "deploy", "nginx", "ringcas.conf")
USERS = {"ci": "ci-secret", "dev": "dev-secret"}  # ci writes; dev only reads
BUILD = r'''
genrule(name = "small", outs = ["small.txt"], cmd = "echo hello ringcas > $@")
genrule(name = "big", outs = ["big.bin"],
        cmd = "head -c 5242880 /dev/zero | tr '\\0' 'p' > $@")
genrule(name = "empty", outs = ["empty.txt"], cmd = "touch $@")
genrule(name = "dep", srcs = [":small"], outs = ["dep.txt"], cmd = "cat $< $< > $@")
'''
TARGETS = ["//:small", "//:big", "//:empty", "//:dep"]
MIB = 1 << 20
# nginx's worker peaks near 9 MiB in this test; one that held a 50 or 100 MiB body would pass
# this.
WORKER_PEAK_KIB_MAX = 48 << 10


def basic(user):
    return "Basic " + base64.b64encode(("%s:%s" % (user, USERS[user])).encode()).decode()


def run(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True, timeout=60, **kw)


def make_certificates(d):
    """A CA and a server certificate for localhost and 127.0.0.1 signed by it, as
    docs/operations.md shows."""
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        "/CN=ringcas test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=d)


def make_htpasswd(d):
    def line(user):
        h = run("openssl", "passwd", "-apr1", USERS[user]).stdout.decode().strip()
        return "%s:%s\n" % (user, h)
    with open(os.path.join(d, "writers.htpasswd"), "w") as f:
        f.write(line("ci"))
    with open(os.path.join(d, "readers.htpasswd"), "w") as f:
        f.write(line("ci") + line("dev"))


class Nginx:
    """nginx with deploy/nginx/ringcas.conf in its own prefix under <d>, one worker."""

    def __init__(self, d, upstream_port):
        self.d, self.upstream_port = d, upstream_port
        self.tmp = os.path.join(d, "tmp")
        self.proc = None
        self.port = None

    def write_conf(self, port):
        with open(CONF) as f:
            conf = f.read()
        for old, new in (("/etc/nginx/ringcas/", self.d + "/"),
                         ("listen 443 ssl", "listen 127.0.0.1:%d ssl" % port),
                         ("server 127.0.0.1:8980;", "server 127.0.0.1:%d;" % self.upstream_port)):
            assert old in conf, "deploy/nginx/ringcas.conf has no %r" % old
            conf = conf.replace(old, new)
        with open(os.path.join(self.d, "ringcas.conf"), "w") as f:
            f.write(conf)
        temps = "".join("    %s_temp_path %s/%s;\n" % (k, self.tmp, k)
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(os.path.join(self.d, "nginx.conf"), "w") as f:
            f.write("daemon off;\nworker_processes 1;\npid %s/nginx.pid;\n"
                    "error_log %s/error.log info;\nevents { worker_connections 1024; }\n"
                    "http {\n    access_log %s/access.log;\n%s    include %s/ringcas.conf;\n}\n"
                    % (self.d, self.d, self.d, temps, self.d))

    def start(self):
        os.makedirs(self.tmp, exist_ok=True)
        for _ in range(20):
            port = harness.pick_port() or 18443
            self.write_conf(port)
            self.log = open(os.path.join(self.d, "nginx.out"), "ab")
            self.proc = subprocess.Popen(["nginx", "-p", self.d, "-c",
                                          os.path.join(self.d, "nginx.conf")],
                                         stdout=self.log, stderr=self.log)
            if harness.wait_for(lambda: self.proc.poll() is not None or self.accepts(port),
                                timeout=20, what="nginx to listen") and self.proc.poll() is None:
                self.port = port
                return self
            self.log.close()  # the port was taken: another one
        raise AssertionError("nginx did not start:\n%s" % self.errors())

    def accepts(self, port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: closes its upstream connections
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()

    def errors(self):
        out = []
        for name in ("nginx.out", "error.log"):
            try:
                with open(os.path.join(self.d, name), errors="replace") as f:
                    out.append(f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    def access_log(self):
        with open(os.path.join(self.d, "access.log"), errors="replace") as f:
            return f.read()

    def worker_peak_kib(self):
        """VmHWM of the one worker: the most memory it ever held."""
        with open("/proc/%d/status" % self.worker()) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def worker(self):
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            return int(f.read().split()[0])

    def temp_files(self, worker):
        """The files under the temp folders that <worker> holds open. nginx unlinks a
        temp file as soon as it has opened it, so the folders themselves always look empty."""
        out = []
        fds = "/proc/%d/fd" % worker
        for fd in os.listdir(fds):
            try:
                target = os.readlink(os.path.join(fds, fd))
            except OSError:
                continue  # closed meanwhile
            if target.startswith(self.tmp + "/"):
                out.append(target)
        return out


class TempWatch:
    """Polls nginx's worker while a transfer runs: a body it buffered to disk would show as an
    open file in its temp folders (client_body_temp_path for requests, proxy_temp_path for
    responses)."""

    def __init__(self, nginx):
        self.nginx, self.seen, self.stop = nginx, set(), False
        self.polls = 0

    def __enter__(self):
        self.worker = self.nginx.worker()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()
        return self

    def poll(self):
        while not self.stop:
            self.seen.update(self.nginx.temp_files(self.worker))
            self.polls += 1
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()


@harness.needs("bazel", "bazel-bootstrap")
@harness.needs("nginx", "nginx-light")
class Proxy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.d = tempfile.mkdtemp(prefix="ringcas-proxy-")
        os.chmod(cls.d, 0o755)  # nginx's workers (nobody) read the htpasswd files per request
        make_certificates(cls.d)
        make_htpasswd(cls.d)
        cls.ca = os.path.join(cls.d, "ca.pem")
        # One core: an upload parked by a dropped connection lives on the core that received
        # it, and nginx's next connection must find it.
        cls.server = harness.Server(args=("--max-size", "1GiB"), cores=1)
        cls.server.start()
        cls.nginx = Nginx(cls.d, cls.server.port)
        try:
            cls.nginx.start()
        except BaseException:
            cls.server.cleanup()
            raise
        cls.addr = "localhost:%d" % cls.nginx.port
        cls.url = "https://" + cls.addr
        with open(cls.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        cls.grpc = reapi.Client(cls.addr, credentials=creds)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.grpc.close()
            cls.nginx.stop()
            cls.server.wait_quiet()
            cls.server.stop()
        except BaseException:
            print(cls.nginx.errors())
            cls.server.cleanup(keep_log=True)
            raise
        cls.server.cleanup()
        subprocess.run(["chmod", "-R", "u+w", cls.d], check=False)  # Bazel's read-only files
        shutil.rmtree(cls.d, ignore_errors=True)

    # -- helpers --

    def md(self, user):
        return [("authorization", basic(user))] if user else []

    def settled(self):
        """Nothing under way in the server but nginx's idle kept-alive connections."""
        names = ("h2_streams", "grpc_calls", "bs_readers", "blob_readers", "blob_uploads",
                 "pb_mem_bytes")

        seen = [None]

        def quiet():
            samples = harness.parse_metrics(self.server.metrics_text())
            seen[0] = {n: sum(v for m, _, v in samples if m == "ringcas_" + n) for n in names}
            return all(v == 0 for v in seen[0].values()) or None
        try:
            harness.wait_for(quiet, timeout=10, what="the server's calls to end")
        except AssertionError as e:
            raise AssertionError("%s; gauges: %r" % (e, seen[0])) from None

    def curl(self, *args, user=None):
        cmd = ["curl", "-sS", "--cacert", self.ca, "-o", "/dev/null", "-w", "%{http_code}"]
        if user:
            cmd += ["-u", "%s:%s" % (user, USERS[user])]
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return int(r.stdout)

    def write_requests(self, data, name, chunk=MIB, finish=True):
        digest = hashlib.sha256(data).hexdigest()
        for off in range(0, len(data), chunk):
            yield reapi.msg("google.bytestream.WriteRequest",
                            resource_name=("uploads/%s/blobs/%s/%d" % (name, digest, len(data))
                                           if off == 0 else ""),
                            write_offset=off, data=data[off:off + chunk],
                            finish_write=finish and off + chunk >= len(data))

    def read(self, digest, size, user="ci"):
        req = reapi.msg("google.bytestream.ReadRequest",
                        resource_name="blobs/%s/%d" % (digest, size))
        return b"".join(r.data for r in self.grpc.Read(req, metadata=self.md(user), timeout=60))

    def code(self, fn, *args, **kw):
        try:
            fn(*args, **kw)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    # -- tests --

    def test_grpc_50mib_write_and_read_stream_through_the_proxy(self):
        data = os.urandom(50 * MIB)
        digest = hashlib.sha256(data).hexdigest()
        with TempWatch(self.nginx) as watch:
            resp = self.grpc.Write(self.write_requests(data, "w50"), metadata=self.md("ci"),
                                   timeout=120)
            self.assertEqual(resp.committed_size, len(data))
            self.assertEqual(self.read(digest, len(data), user="dev"), data)
        self.assertGreater(watch.polls, 10)  # the watch ran during the transfers
        self.assertEqual(watch.seen, set())
        self.assertLess(self.nginx.worker_peak_kib(), WORKER_PEAK_KIB_MAX)
        self.settled()

        # A Read the client cancels after its first message: nginx resets the upstream
        # stream, and the server lets its reader go.
        req = reapi.msg("google.bytestream.ReadRequest",
                        resource_name="blobs/%s/%d" % (digest, len(data)))
        it = self.grpc.Read(req, metadata=self.md("dev"), timeout=60)
        self.assertGreater(len(next(it).data), 0)
        it.cancel()
        self.assertEqual(self.code(lambda: list(it)), grpc.StatusCode.CANCELLED)
        self.settled()

        # A Write whose client gives up in the middle (its deadline, or a cancel: either way
        # it resets its stream): nginx, which cannot reset one stream of its own upstream
        # connection, closes that connection. The server then parks the upload as for any
        # connection that dropped (docs/grpc.md, "Resumable uploads"), and the client
        # resumes it through the proxy. (Straight to the server, the reset aborts the upload
        # instead.) The client gives up once the server has the upload: a deadline of 1.5 s
        # ran out, in one clean-clone make test, before the first 1 MiB had come through
        # nginx, and there was then no upload to park.
        late = os.urandom(4 * MIB)
        late_digest = hashlib.sha256(late).hexdigest()

        name = "uploads/late/blobs/%s/%d" % (late_digest, len(late))
        gave_up = threading.Event()

        def stalled():
            yield reapi.msg("google.bytestream.WriteRequest", resource_name=name,
                            write_offset=0, data=late[:MIB])
            gave_up.wait(60)
        call = self.grpc.Write.future(stalled(), metadata=self.md("ci"), timeout=60)
        try:
            harness.wait_for(lambda: self.server.metric("ringcas_bs_uploads") >= 1 or None,
                             timeout=30, what="the upload to reach the server")
            call.cancel()
        finally:
            gave_up.set()
        self.assertTrue(call.cancelled())

        def parked():
            # NOT_FOUND until nginx has closed the upstream connection.
            try:
                return self.grpc.QueryWriteStatus(
                    reapi.msg("google.bytestream.QueryWriteStatusRequest", resource_name=name),
                    metadata=self.md("ci"), timeout=20)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.NOT_FOUND)
                return None
        status = harness.wait_for(parked, what="the upload to be parked")
        self.assertFalse(status.complete)
        done = status.committed_size
        self.assertTrue(0 < done <= MIB, done)
        rest = [reapi.msg("google.bytestream.WriteRequest", resource_name=name,
                          write_offset=done, data=late[done:], finish_write=True)]
        resp = self.grpc.Write(iter(rest), metadata=self.md("ci"), timeout=60)
        self.assertEqual(resp.committed_size, len(late))
        self.assertEqual(self.read(late_digest, len(late), user="dev"), late)
        self.settled()

    def test_read_only_identity_reads_and_cannot_write(self):
        stored = os.urandom(1000)
        digest = reapi.msg("Digest", hash=hashlib.sha256(stored).hexdigest(),
                           size_bytes=len(stored))
        req = reapi.msg("BatchUpdateBlobsRequest")
        req.requests.add(digest=digest, data=stored)
        self.assertEqual(self.grpc.BatchUpdateBlobs(req, metadata=self.md("ci"),
                                                    timeout=20).responses[0].status.code, 0)
        dev = self.md("dev")

        # Reads: each reaches the server (its own answer, not nginx's 401).
        self.assertEqual(self.read(digest.hash, len(stored), user="dev"), stored)
        caps = self.grpc.GetCapabilities(reapi.msg("GetCapabilitiesRequest"), metadata=dev,
                                         timeout=20)
        self.assertEqual(caps.cache_capabilities.max_batch_total_size_bytes, 4 * MIB)
        health = self.grpc.Check(reapi.msg("grpc.health.v1.HealthCheckRequest"), metadata=dev,
                                 timeout=20)
        self.assertEqual(health.status, 1)  # SERVING
        missing = self.grpc.FindMissingBlobs(reapi.msg("FindMissingBlobsRequest",
                                                       blob_digests=[digest]),
                                             metadata=dev, timeout=20)
        self.assertEqual(list(missing.missing_blob_digests), [])
        batch = self.grpc.BatchReadBlobs(reapi.msg("BatchReadBlobsRequest", digests=[digest]),
                                         metadata=dev, timeout=20)
        self.assertEqual(batch.responses[0].data, stored)
        absent = reapi.msg("Digest", hash="ab" * 32, size_bytes=10)
        self.assertEqual(self.code(self.grpc.GetActionResult,
                                   reapi.msg("GetActionResultRequest", action_digest=absent),
                                   metadata=dev, timeout=20), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(self.code(lambda: list(self.grpc.GetTree(
            reapi.msg("GetTreeRequest", root_digest=absent), metadata=dev, timeout=20))),
            grpc.StatusCode.NOT_FOUND)
        cas = "%s/cas/%s" % (self.url, digest.hash)
        self.assertEqual(self.curl(cas, user="dev"), 200)
        self.assertEqual(self.curl("-I", cas, user="dev"), 200)

        # Writes of new data: refused by nginx.
        new = os.urandom(2000)
        nd = reapi.msg("Digest", hash=hashlib.sha256(new).hexdigest(), size_bytes=len(new))
        key = reapi.msg("Digest", hash=hashlib.sha256(b"action").hexdigest(), size_bytes=6)
        unauth = grpc.StatusCode.UNAUTHENTICATED
        self.assertEqual(self.code(self.grpc.Write, self.write_requests(new, "dev"),
                                   metadata=dev, timeout=20), unauth)
        upd = reapi.msg("BatchUpdateBlobsRequest")
        upd.requests.add(digest=nd, data=new)
        self.assertEqual(self.code(self.grpc.BatchUpdateBlobs, upd, metadata=dev, timeout=20),
                         unauth)
        result = reapi.msg("ActionResult", exit_code=0)
        result.output_files.add(path="out", digest=digest)
        self.assertEqual(self.code(self.grpc.UpdateActionResult,
                                   reapi.msg("UpdateActionResultRequest", action_digest=key,
                                             action_result=result),
                                   metadata=dev, timeout=20), unauth)
        self.assertEqual(self.code(self.grpc.QueryWriteStatus,
                                   reapi.msg("google.bytestream.QueryWriteStatusRequest",
                                             resource_name="uploads/dev/blobs/%s/%d"
                                             % (nd.hash, nd.size_bytes)),
                                   metadata=dev, timeout=20), unauth)
        # nginx matches locations on the normalized path but passes the one sent: a read
        # method's path that names a write method before its dot-segments is routed as a
        # read by nginx and is no method to the server.
        raw = self.grpc.raw("/google.bytestream.ByteStream/Write/../Read")
        self.assertEqual(self.code(raw, b"", metadata=dev, timeout=20),
                         grpc.StatusCode.UNIMPLEMENTED)
        body = os.path.join(self.d, "dev-body")
        with open(body, "wb") as f:
            f.write(new)
        self.assertEqual(self.curl("-T", body, "%s/cas/%s" % (self.url, nd.hash), user="dev"),
                         401)
        ac = "%s/ac/%s" % (self.url, key.hash)
        self.assertEqual(self.curl("-T", body, ac, user="dev"), 401)
        self.assertEqual(self.curl("-T", body, "%s/plain/key" % self.url, user="dev"), 401)
        self.assertEqual(self.curl("-X", "POST", "--data-binary", "@" + body, ac, user="dev"), 401)

        # ... and nothing was stored.
        missing = self.grpc.FindMissingBlobs(reapi.msg("FindMissingBlobsRequest",
                                                       blob_digests=[nd]),
                                             metadata=self.md("ci"), timeout=20)
        self.assertEqual(list(missing.missing_blob_digests), [nd])
        self.assertEqual(self.curl(ac, user="ci"), 404)
        self.assertEqual(self.curl("%s/plain/key" % self.url, user="ci"), 404)
        self.assertEqual(self.code(self.grpc.GetActionResult,
                                   reapi.msg("GetActionResultRequest", action_digest=key),
                                   metadata=self.md("ci"), timeout=20), grpc.StatusCode.NOT_FOUND)

        # No credentials, or a wrong password: 401 / UNAUTHENTICATED, reads included.
        self.assertEqual(self.curl(cas), 401)
        self.assertEqual(self.curl("-u", "dev:wrong", cas), 401)
        self.assertEqual(self.code(self.grpc.GetCapabilities,
                                   reapi.msg("GetCapabilitiesRequest"), timeout=20), unauth)
        self.assertEqual(self.code(self.grpc.GetCapabilities,
                                   reapi.msg("GetCapabilitiesRequest"),
                                   metadata=[("authorization", "Basic ZGV2Ondyb25n")],
                                   timeout=20), unauth)
        # The credentials stop at nginx: ringcas checks none, and logs none.
        self.settled()

    def test_curl_100mib_put_and_get(self):
        path = os.path.join(self.d, "blob100")
        with open(path, "wb") as f:
            for _ in range(100):
                f.write(os.urandom(MIB))
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        url = "%s/cas/%s" % (self.url, digest)
        got = os.path.join(self.d, "got100")
        with TempWatch(self.nginx) as watch:
            # HTTP/2 to nginx (curl's choice over TLS), HTTP/1.1 with Content-Length behind.
            self.assertEqual(self.curl("-T", path, url, user="ci"), 201)
            r = subprocess.run(["curl", "-sS", "--cacert", self.ca, "-u", "dev:dev-secret",
                                "-o", got, "-w", "%{http_code}", url],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.stdout, "200", r.stderr)
            # HTTP/1.1 chunked from curl's stdin: chunked behind nginx too.
            with open(path, "rb") as f:
                chunked = subprocess.run(
                    ["curl", "-sS", "--http1.1", "--cacert", self.ca, "-u", "ci:ci-secret",
                     "-T", "-", "-o", "/dev/null", "-w", "%{http_code}",
                     "%s/bazel/ac/%s" % (self.url, "cd" * 32)],
                    stdin=f, capture_output=True, text=True, timeout=120)
            self.assertEqual(chunked.stdout, "413", chunked.stderr)  # over the AC's 64 MiB
            fresh = os.urandom(20 * MIB)
            chunked = subprocess.run(
                ["curl", "-sS", "--http1.1", "--cacert", self.ca, "-u", "ci:ci-secret",
                 "-T", "-", "-o", "/dev/null", "-w", "%{http_code}",
                 "%s/cas/%s" % (self.url, hashlib.sha256(fresh).hexdigest())],
                input=fresh, capture_output=True, timeout=120)
            self.assertEqual(chunked.stdout, b"201", chunked.stderr)
        with open(got, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest)
        self.assertGreater(watch.polls, 10)  # the watch ran during the transfers
        self.assertEqual(watch.seen, set())
        self.assertLess(self.nginx.worker_peak_kib(), WORKER_PEAK_KIB_MAX)
        self.settled()

    def test_grpc_and_http_in_turn_on_kept_alive_upstream_connections(self):
        """nginx keeps idle upstream connections per upstream block; one that proxy_pass
        left speaking HTTP/1.1, handed to grpc_pass, fails the call with 502
        ("no connection data found for keepalive http2 connection"), which gRPC clients see
        as UNAVAILABLE, and one that grpc_pass left, handed to proxy_pass, fails the request
        (curl gets no answer). The config keeps the two apart: with one upstream block for
        both, this test fails at its first request."""
        blob = os.urandom(100)
        reapi_digest = hashlib.sha256(blob).hexdigest()
        req = reapi.msg("BatchUpdateBlobsRequest")
        req.requests.add(digest=reapi.msg("Digest", hash=reapi_digest, size_bytes=100), data=blob)
        self.grpc.BatchUpdateBlobs(req, metadata=self.md("ci"), timeout=20)
        for _ in range(5):
            self.assertEqual(self.curl("%s/cas/%s" % (self.url, reapi_digest), user="dev"), 200)
            self.assertEqual(self.read(reapi_digest, 100, user="dev"), blob)

    def test_bazel_over_grpcs_and_https(self):
        ws = os.path.join(self.d, "ws")
        os.makedirs(ws)
        open(os.path.join(ws, "WORKSPACE"), "w").close()
        with open(os.path.join(ws, "BUILD"), "w") as f:
            f.write(BUILD)
        root = os.path.join(self.d, "bazel-root")
        startup = ["--batch", "--output_user_root=" + root, "--host_jvm_args=-Xmx512m"]
        # Debian's Bazel has no ALPN in its netty but for netty-tcnative, whose library it
        # loads only under the name netty_tcnative (docs/operations.md, "Security").
        found = glob.glob("/usr/lib/*/jni/libnetty-tcnative.so")
        if not found:
            raise AssertionError("libnetty-tcnative.so not found: install Debian's "
                                 "libnetty-tcnative-jni (scripts/deps.sh test)")
        jni = os.path.join(self.d, "jni")
        os.makedirs(jni)
        shutil.copy(found[0], os.path.join(jni, "libnetty_tcnative.so"))
        startup.append("--host_jvm_args=-Djava.library.path=" + jni)
        # Bazel 4.2.3's HTTP cache trusts only the JVM's trust store, not --tls_certificate.
        store = os.path.join(self.d, "trust.p12")
        run("keytool", "-importcert", "-noprompt", "-alias", "ringcas-test-ca", "-file",
            self.ca, "-keystore", store, "-storetype", "PKCS12", "-storepass", "changeit")
        startup += ["--host_jvm_args=-Djavax.net.ssl.trustStore=" + store,
                    "--host_jvm_args=-Djavax.net.ssl.trustStorePassword=changeit"]

        def bazel(*args):
            r = subprocess.run(["bazel"] + startup + list(args), cwd=ws, capture_output=True,
                               text=True, timeout=300, env=dict(os.environ, HOME=self.d))
            self.assertEqual(r.returncode, 0, "bazel %s:\n%s" % (args[0], r.stderr[-4000:]))
            return r.stderr

        def outputs():
            out = {}
            for t in TARGETS:
                name = {"small": "small.txt", "big": "big.bin", "empty": "empty.txt",
                        "dep": "dep.txt"}[t[3:]]
                with open(os.path.join(ws, "bazel-bin", name), "rb") as f:
                    out[name] = f.read()
            return out

        common = ["--remote_timeout=120", "--spawn_strategy=local", "--color=no",
                  "--noshow_progress"]
        grpcs = ["--remote_cache=grpcs://" + self.addr, "--tls_certificate=" + self.ca,
                 "--remote_header=authorization=" + basic("ci")] + common
        https = ["--remote_cache=https://ci:%s@%s/bazel" % (USERS["ci"], self.addr)] + common
        for flags, what in ((grpcs, "grpcs"), (https, "https")):
            before = self.nginx.access_log()
            first = bazel("build", *flags, *TARGETS)
            self.assertNotIn("remote cache hit", first)
            self.assertNotIn("errors during bulk transfer", first)
            built = outputs()
            self.assertEqual(built["big.bin"], b"p" * (5 * MIB))
            bazel("clean", "--expunge")
            second = bazel("build", *flags, *TARGETS)
            self.assertIn("%d processes: %d remote cache hit, 1 internal."
                          % (len(TARGETS) + 1, len(TARGETS)), second, "%s:\n%s"
                          % (what, second[-2000:]))
            self.assertEqual(outputs(), built)
            log = self.nginx.access_log()[len(before):]
            want = ("\"POST /build.bazel.remote.execution.v2.ActionCache/UpdateActionResult"
                    if what == "grpcs" else "\"PUT /bazel/ac/")
            self.assertIn(want, log)
            self.assertNotIn(" - - ", log)  # every request authenticated as ci
            if what == "grpcs":
                bazel("clean", "--expunge")
                # A developer's machine with the read-only identity: every hit is served by
                # the read methods alone, and nothing is refused.
                before = self.nginx.access_log()
                dev = ["--remote_cache=grpcs://" + self.addr, "--tls_certificate=" + self.ca,
                       "--remote_header=authorization=" + basic("dev"),
                       "--noremote_upload_local_results"] + common
                third = bazel("build", *dev, *TARGETS)
                self.assertIn("%d processes: %d remote cache hit, 1 internal."
                              % (len(TARGETS) + 1, len(TARGETS)), third, third[-2000:])
                self.assertEqual(outputs(), built)
                log = self.nginx.access_log()[len(before):]
                self.assertIn(" - dev [", log)
                self.assertNotIn("\" 401 ", log)
                bazel("clean", "--expunge")
        self.settled()


if __name__ == "__main__":
    unittest.main()
