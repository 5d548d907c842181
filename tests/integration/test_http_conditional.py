"""Conditional requests on the HTTP/1.1 cache routes against the real server (docs/http.md,
"Conditional requests"): a CAS blob's ETag per representation, If-None-Match (304 for GET and
HEAD, the create-only PUT), If-Match, the RFC 9110 §13.2.2 order, conditions a 404 does not
evaluate, malformed lists, and the date conditions that are ignored. With curl and raw
sockets. Every scenario ends with the server's connections, uploads and readers back to zero."""

import hashlib
import os
import subprocess
import tempfile
import unittest

import zstandard

import harness
import reapi
from http1 import Raw, request

EMPTY = hashlib.sha256(b"").hexdigest()
QUIET = ("blob_uploads", "blob_readers", "upload_waiters", "read_waiters")


def sha(data):
    return hashlib.sha256(data).hexdigest()


def compressible(n, seed=0):
    line = b"".join(b"cond_%d_%d: .quad %d\n" % (seed, i, i * 3) for i in range(64))
    return (line * (n // len(line) + 1))[:n]


class Conditional(harness.ServerTestCase):
    server_args = ("--max-size", "1GiB")

    def tearDown(self):
        self.server.wait_quiet(extra=QUIET)

    def call(self, method, path, body=None, headers=()):
        """One request on its own connection; the response (HEAD: no content read)."""
        headers = list(headers)
        if method == "PUT" and not body:
            headers.append("Content-Length: 0")
        with Raw(self.server.port) as c:
            c.send(request(method, path, headers=headers, body=body or b""))
            return c.read_response(head_request=method == "HEAD")

    def curl(self, *args):
        """curl's status line and fields (lower-case) and body."""
        with tempfile.TemporaryDirectory() as d:
            fields = os.path.join(d, "fields")
            out = subprocess.run(["curl", "-s", "-S", "-D", fields, "-o", "-", "--max-time", "60",
                                  *args], capture_output=True, timeout=90)
            self.assertEqual(out.returncode, 0, out.stderr)
            with open(fields, "rb") as f:
                return f.read().decode("latin-1").lower(), out.stdout

    def put_blob(self, data):
        h = sha(data)
        self.assertIn(self.call("PUT", "/cas/" + h, data).status, (200, 201))
        return h

    def key(self, prefix="/gradle/cond-"):
        return prefix + os.urandom(8).hex()

    # ---- validators ----

    def test_a_cas_blob_has_one_strong_etag_per_representation(self):
        # Identity bytes and the stored zstd frames are two representations at one URL: two
        # strong ETags (RFC 9110 §8.8.3), the hash and the hash with ".zst".
        data = compressible(300000, 1)
        h = sha(data)
        r = self.call("PUT", "/cas/" + h, data)
        self.assertEqual((r.status, r.header("etag")), (201, '"%s"' % h))
        r = self.call("PUT", "/cas/" + h, data)  # present: the same representation
        self.assertEqual((r.status, r.header("etag")), (200, '"%s"' % h))
        for method in ("GET", "HEAD"):
            for path in ("/cas/" + h, "/x/cas/" + h.upper()):
                r = self.call(method, path)
                self.assertEqual((r.status, r.header("etag")), (200, '"%s"' % h), (method, path))
                r = self.call(method, path, headers=["Accept-Encoding: zstd"])
                self.assertEqual(r.header("content-encoding"), "zstd")
                self.assertEqual((r.status, r.header("etag")), (200, '"%s.zst"' % h),
                                 (method, path))
        # The empty blob is always identity (zero bytes are no zstd stream): so is its tag.
        r = self.call("GET", "/cas/" + EMPTY, headers=["Accept-Encoding: zstd"])
        self.assertEqual((r.status, r.header("etag")), (200, '"%s"' % EMPTY))
        # curl sees the same fields.
        head, body = self.curl(self.server.url + "/cas/" + h)
        self.assertEqual(body, data)
        self.assertRegex(head, r'(?m)^etag: "%s"\r$' % h)

    def test_a_zstd_put_and_values_that_change_get_no_etag(self):
        data = compressible(100000, 2)
        h = sha(data)
        frames = zstandard.ZstdCompressor().compress(data)
        r = self.call("PUT", "/cas/" + h, frames, headers=["Content-Encoding: zstd"])
        # What was sent is not the identity representation a GET now returns.
        self.assertEqual((r.status, r.header("etag")), (201, None))
        # A plain key and an /ac/ entry change under their name: no validator.
        path, ac = self.key(), "/ccache/ac/" + sha(os.urandom(8))
        for p in (path, ac):
            self.assertEqual(self.call("PUT", p, b"cCvalue").status, 201)
            for method in ("GET", "HEAD"):
                r = self.call(method, p)
                self.assertEqual((r.status, r.header("etag")), (200, None), (method, p))
        # Refusals and misses carry none either.
        r = self.call("GET", "/cas/" + sha(b"absent"))
        self.assertEqual((r.status, r.header("etag")), (404, None))
        r = self.call("PUT", "/cas/" + sha(b"other"), b"not it")
        self.assertEqual((r.status, r.header("etag")), (400, None))

    # ---- If-None-Match on reads ----

    def test_if_none_match_that_names_the_representation_is_304(self):
        data = compressible(200000, 3)
        h = self.put_blob(data)
        path = "/cas/" + h
        for method in ("GET", "HEAD"):
            for tag, accept, status in (('"%s"' % h, None, 304),
                                        ('W/"%s"' % h, None, 304),  # weak comparison
                                        ('"x", "%s"' % h, None, 304),
                                        ("*", None, 304),
                                        ('"%s.zst"' % h, None, 200),  # the other one
                                        ('"%s.zst"' % h, "zstd", 304),
                                        ('"%s"' % h, "zstd", 200),
                                        ('"%s"' % h.upper(), None, 200),
                                        ('"x"', None, 200)):
                extra = ["If-None-Match: " + tag]
                if accept:
                    extra.append("Accept-Encoding: " + accept)
                what = (method, tag, accept)
                with Raw(self.server.port) as c:
                    # Then a plain GET on the same connection: the 304 had no content and the
                    # connection goes on.
                    c.send(request(method, path, headers=extra) + request("GET", path))
                    r = c.read_response(head_request=method == "HEAD")
                    after = c.read_response()
                self.assertEqual(r.status, status, what)
                self.assertEqual((after.status, after.body), (200, data), what)
                want = '"%s.zst"' % h if accept else '"%s"' % h
                self.assertEqual(r.header("etag"), want, what)
                self.assertEqual(r.header("vary"), "Accept-Encoding", what)
                if status == 304:
                    # What a cache needs to freshen its copy, and nothing it would take for
                    # content: no body, no length of another representation, no no-cache
                    # (the 200 says none).
                    self.assertEqual(r.body, b"", what)
                    self.assertIsNone(r.header("content-length"), what)
                    self.assertIsNone(r.header("cache-control"), what)
        # Through curl: -H If-None-Match gets 304 and an empty body.
        head, body = self.curl("-H", 'If-None-Match: "%s"' % h, self.server.url + path)
        self.assertTrue(head.startswith("http/1.1 304 "), head)
        self.assertEqual(body, b"")
        self.assertRegex(head, r'(?m)^etag: "%s"\r$' % h)

    def test_if_none_match_star_on_values_without_a_tag(self):
        path, ac = self.key(), "/ccache/ac/" + sha(os.urandom(8))
        for p in (path, ac):
            self.assertEqual(self.call("PUT", p, b"cCvalue").status, 201)
            for method in ("GET", "HEAD"):
                r = self.call(method, p, headers=["If-None-Match: *"])
                self.assertEqual((r.status, r.body, r.header("etag")), (304, b"", None), p)
                # The 200 would say no-cache: so does the 304.
                self.assertEqual(r.header("cache-control"), "no-cache", p)
                # No tag can name a value that has none.
                r = self.call(method, p, headers=['If-None-Match: "anything"'])
                self.assertEqual(r.status, 200, p)

    def test_conditions_are_not_evaluated_where_the_answer_is_not_2xx(self):
        # RFC 9110 §13.2.1: a miss stays a miss, whatever the condition says.
        for p in ("/cas/" + sha(b"missing"), self.key(), "/x/ac/" + sha(b"missing")):
            for method in ("GET", "HEAD"):
                for cond in ("If-None-Match: *", "If-Match: *", 'If-Match: "x"'):
                    self.assertEqual(self.call(method, p, headers=[cond]).status, 404,
                                     (p, method, cond))
        # An action result whose outputs are not in the CAS is a miss, not a 304.
        ar = reapi.msg("ActionResult", exit_code=0)
        gone = os.urandom(64)
        ar.output_files.add(path="out", digest=reapi.msg("Digest", hash=sha(gone),
                                                         size_bytes=len(gone)))
        path = "/bazel/ac/" + sha(os.urandom(8))
        self.assertEqual(self.call("PUT", path, ar.SerializeToString()).status, 201)
        for method in ("GET", "HEAD"):
            self.assertEqual(self.call(method, path, headers=["If-None-Match: *"]).status, 404)
        self.put_blob(gone)
        for method in ("GET", "HEAD"):
            self.assertEqual(self.call(method, path, headers=["If-None-Match: *"]).status, 304)

    # ---- If-Match on reads ----

    def test_if_match_uses_the_strong_comparison_and_comes_first(self):
        data = compressible(50000, 4)
        h = self.put_blob(data)
        path = "/cas/" + h
        for tag, status in (('"%s"' % h, 200), ("*", 200), ('"a", "%s"' % h, 200),
                            ('W/"%s"' % h, 412), ('"%s.zst"' % h, 412), ('"x"', 412)):
            r = self.call("GET", path, headers=["If-Match: " + tag])
            self.assertEqual(r.status, status, tag)
            self.assertEqual(r.body, data if status == 200 else b"precondition failed\n", tag)
            if status == 412:
                self.assertIsNone(r.header("etag"), tag)
            self.assertEqual(self.call("HEAD", path, headers=["If-Match: " + tag]).status,
                             status, tag)
        # §13.2.2: If-Match first; If-None-Match only after it passed.
        both = ['If-Match: "x"', 'If-None-Match: "%s"' % h]
        self.assertEqual(self.call("GET", path, headers=both).status, 412)
        both = ['If-Match: "%s"' % h, 'If-None-Match: "%s"' % h]
        self.assertEqual(self.call("GET", path, headers=both).status, 304)
        # Repeated fields are one list.
        r = self.call("GET", path, headers=['If-Match: "a"', 'If-Match: "%s"' % h])
        self.assertEqual(r.status, 200)
        # A value without a tag: only "*" matches it.
        key = self.key()
        self.assertEqual(self.call("PUT", key, b"v").status, 201)
        self.assertEqual(self.call("GET", key, headers=["If-Match: *"]).status, 200)
        self.assertEqual(self.call("GET", key, headers=['If-Match: "v"']).status, 412)

    # ---- PUT ----

    def test_put_if_none_match_star_is_a_create_only_write(self):
        for path in (self.key(), "/ccache/ac/" + sha(os.urandom(8)), "/ac/" + sha(os.urandom(8))):
            r = self.call("PUT", path, b"first", headers=["If-None-Match: *"])
            self.assertEqual(r.status, 201, path)
            with Raw(self.server.port) as c:
                # Refused before its body: a small one is read and dropped and the connection
                # goes on; the value stays the first.
                c.send(request("PUT", path, headers=["If-None-Match: *"], body=b"second") +
                       request("GET", path))
                r = c.read_response()
                get = c.read_response()
            self.assertEqual((r.status, r.body), (412, b"precondition failed\n"), path)
            self.assertEqual((get.status, get.body), (200, b"first"), path)
            # Without the condition the newest write wins, as before.
            self.assertEqual(self.call("PUT", path, b"third").status, 200, path)
            self.assertEqual(self.call("GET", path).body, b"third", path)

    def begin_put(self, path, body, *extra):
        """A PUT whose head and first half of <body> are sent, once the server began its
        upload (the engine's gauge says so): the connection, to send the rest on."""
        before = self.server.metric("ringcas_blob_uploads")
        c = Raw(self.server.port)
        c.send(request("PUT", path, headers=["Content-Length: %d" % len(body), *extra]) +
               body[:len(body) // 2])
        harness.wait_for(lambda: self.server.metric("ringcas_blob_uploads") > before or None,
                         what="the upload to begin")
        return c

    def test_overlapping_create_only_puts_store_once(self):
        # Two create-only PUTs of one key whose bodies overlap: one is 201, the other 412,
        # and the value is the winner's. The second waits (its body unread) until the first
        # ended; before, both passed the check at their begin and both were 201.
        for path in (self.key(), "/bazel/ac/" + sha(os.urandom(8))):
            first, second = os.urandom(100000), os.urandom(100000)
            waits = self.server.metric("ringcas_upload_waits_total")
            a = self.begin_put(path, first, "If-None-Match: *")
            with a, Raw(self.server.port) as b:
                b.send(request("PUT", path, headers=["If-None-Match: *"], body=second))
                harness.wait_for(
                    lambda: self.server.metric("ringcas_upload_waits_total") > waits or None,
                    what="the second PUT to wait")
                a.send(first[len(first) // 2:])
                self.assertEqual(a.read_response().status, 201, path)
                r = b.read_response()
                self.assertEqual((r.status, r.body), (412, b"precondition failed\n"), path)
            get = self.call("GET", path)
            self.assertEqual((get.status, get.body), (200, first), path)

    def test_a_create_only_put_loses_to_a_plain_put_that_lands_first(self):
        # The key is stored while the create-only PUT's body arrives: its commit is refused
        # (412) before its record is written, so the value is the plain PUT's, after a
        # restart too (recovery keeps an action cache entry's newest record: a refused one
        # in the log would come back).
        paths = (self.key(), "/bazel/ac/" + sha(os.urandom(8)))
        values = {}
        for path in paths:
            late, plain = os.urandom(50000), os.urandom(40000)
            with self.begin_put(path, late, "If-None-Match: *") as a:
                self.assertEqual(self.call("PUT", path, plain).status, 201, path)
                a.send(late[len(late) // 2:])
                r = a.read_response()
                self.assertEqual((r.status, r.body), (412, b"precondition failed\n"), path)
            self.assertEqual(self.call("GET", path).body, plain, path)
            values[path] = plain
        self.server.restart()
        for path in paths:
            get = self.call("GET", path)
            self.assertEqual((get.status, get.body), (200, values[path]), path)

    def test_create_only_put_of_a_present_blob_needs_no_body(self):
        data = os.urandom(1 << 20)
        h = sha(data)
        r = self.call("PUT", "/cas/" + h, data, headers=["If-None-Match: *"])
        self.assertEqual((r.status, r.header("etag")), (201, '"%s"' % h))
        with Raw(self.server.port) as c:
            # A client that waits for 100 Continue gets the 412 at once and sends nothing.
            c.send(request("PUT", "/cas/" + h, headers=[
                "If-None-Match: *", "Expect: 100-continue", "Content-Length: %d" % len(data)]))
            r = c.read_response()
            self.assertEqual(r.status, 412)
            self.assertTrue(c.is_closed())
        # A tag of either representation names the blob; a weak one too (weak comparison).
        for tag in ('"%s"' % h, '"%s.zst"' % h, 'W/"%s"' % h):
            r = self.call("PUT", "/cas/" + h, data, headers=["If-None-Match: " + tag])
            self.assertEqual(r.status, 412, tag)
        self.assertEqual(self.call("PUT", "/cas/" + h, data,
                                   headers=['If-None-Match: "x"']).status, 200)
        # Through curl.
        out = subprocess.run(["curl", "-s", "-S", "-o", "/dev/null", "-w", "%{http_code}",
                              "-T", "-", "-H", "If-None-Match: *", self.server.url + "/cas/" + h],
                             input=data, capture_output=True, timeout=60)
        self.assertEqual(out.stdout, b"412")

    def test_put_if_match_needs_the_entry(self):
        # Absent: If-Match fails (nothing matches no representation), and nothing is stored.
        path = self.key()
        for tag in ("*", '"x"'):
            self.assertEqual(self.call("PUT", path, b"v", headers=["If-Match: " + tag]).status,
                             412, tag)
        self.assertEqual(self.call("GET", path).status, 404)
        data = compressible(20000, 5)
        h = sha(data)
        for tag in ("*", '"%s"' % h):
            r = self.call("PUT", "/cas/" + h, data, headers=["If-Match: " + tag])
            self.assertEqual(r.status, 412, tag)
        self.assertEqual(self.call("GET", "/cas/" + h).status, 404)
        # Present: "*" matches; a plain key has no tag for another to match.
        self.assertEqual(self.call("PUT", path, b"one").status, 201)
        self.assertEqual(self.call("PUT", path, b"two", headers=["If-Match: *"]).status, 200)
        self.assertEqual(self.call("PUT", path, b"three", headers=['If-Match: "two"']).status,
                         412)
        self.assertEqual(self.call("GET", path).body, b"two")
        self.put_blob(data)
        for tag, status in (("*", 200), ('"%s"' % h, 200), ('"%s.zst"' % h, 200),
                            ('W/"%s"' % h, 412), ('"x"', 412)):
            r = self.call("PUT", "/cas/" + h, data, headers=["If-Match: " + tag])
            self.assertEqual(r.status, status, tag)

    # ---- what is not a condition the server can use ----

    def test_malformed_lists_are_400(self):
        path = self.key()
        for field in ("If-Match: abc", 'If-Match: "open', "If-None-Match: W/x",
                      'If-None-Match: "a" "b"', "If-None-Match: *x"):
            for method in ("GET", "PUT"):
                with Raw(self.server.port) as c:
                    c.send(request(method, path, headers=[field],
                                   body=b"v" if method == "PUT" else b""))
                    r = c.read_response()
                    self.assertEqual(r.status, 400, (method, field))
                    self.assertIn(b"malformed If-", r.body, (method, field))
                    self.assertTrue(c.is_closed(), (method, field))
        self.assertEqual(self.call("GET", path).status, 404)  # nothing stored
        # A comma inside a tag is the tag's.
        data = b"commas"
        h = self.put_blob(data)
        r = self.call("GET", "/cas/" + h, headers=['If-None-Match: "a,b", "%s"' % h])
        self.assertEqual(r.status, 304)

    def test_date_conditions_are_ignored(self):
        # There is no Last-Modified (RFC 9110 §13.1.3, §13.1.4: ignored without a date).
        data = compressible(10000, 6)
        h = self.put_blob(data)
        future = "Sun, 06 Nov 2094 08:49:37 GMT"
        past = "Sun, 06 Nov 1994 08:49:37 GMT"
        r = self.call("GET", "/cas/" + h, headers=["If-Modified-Since: " + future])
        self.assertEqual((r.status, r.body), (200, data))
        r = self.call("GET", "/cas/" + h, headers=["If-Unmodified-Since: " + past])
        self.assertEqual((r.status, r.body), (200, data))
        path = self.key()
        r = self.call("PUT", path, b"v", headers=["If-Unmodified-Since: " + past])
        self.assertEqual(r.status, 201)
        self.assertIsNone(self.call("GET", path).header("last-modified"))

    def test_304_and_412_are_counted_with_their_own_status(self):
        h = self.put_blob(b"counted")

        def count(status):
            return self.server.metric("ringcas_requests_total", protocol="http",
                                      route="GET /cas", status=status)

        before = (count("304"), count("412"))
        self.assertEqual(self.call("GET", "/cas/" + h,
                                   headers=['If-None-Match: "%s"' % h]).status, 304)
        self.assertEqual(self.call("GET", "/cas/" + h, headers=['If-Match: "x"']).status, 412)
        self.assertEqual((count("304"), count("412")), (before[0] + 1, before[1] + 1))


if __name__ == "__main__":
    unittest.main(verbosity=2)
