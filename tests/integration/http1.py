"""Raw HTTP/1.1 over a socket, for the tests that need exact bytes on the wire: pipelining,
chunked bodies, 100-continue, malformed requests, slow senders."""

import socket
import time


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> list of values
        self.body = body

    def header(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v else None

    def __repr__(self):
        return "<Response %d %s, %d body bytes>" % (self.status, self.reason, len(self.body))


class Raw:
    """One TCP connection; send bytes, read responses one at a time."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def _read_until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, head_request=False):
        """Reads one response (interim 1xx responses are returned like any other)."""
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, code, reason = (lines[0].split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        status = int(code)
        body = b""
        if status >= 200 and not head_request and status not in (204, 304):
            if "chunked" in (headers.get("transfer-encoding") or [""])[0].lower():
                body = self._read_chunked()
            elif "content-length" in headers:
                body = self._read_exact(int(headers["content-length"][0]))
        return Response(status, reason, headers, body)

    def _read_chunked(self):
        body = b""
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")  # no trailers from ringcas
                return body
            body += self._read_exact(size)
            assert self._read_exact(2) == b"\r\n"

    def is_closed(self, timeout=5.0):
        """True when the server closes the connection (EOF or reset) within <timeout>."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False


def request(method, path, headers=(), body=b"", version="HTTP/1.1", host=True):
    """Builds a request's bytes; Content-Length is added when a body is given."""
    lines = ["%s %s %s" % (method, path, version)]
    if host:
        lines.append("Host: 127.0.0.1")
    names = [h.split(":")[0].lower() for h in headers]
    lines += list(headers)
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return data + (body.encode() if isinstance(body, str) else body)


def chunked(data, sizes):
    """Encodes <data> in chunks of the given sizes (the rest in one chunk), then 0 CRLF CRLF."""
    out = b""
    i = 0
    for n in sizes:
        part = data[i:i + n]
        if not part:
            break
        out += b"%x\r\n" % len(part) + part + b"\r\n"
        i += n
    if i < len(data):
        out += b"%x\r\n" % (len(data) - i) + data[i:] + b"\r\n"
    return out + b"0\r\n\r\n"
