"""A raw HTTP/2 client for tests of the server's limits: it writes frames byte by byte as a
misbehaving client would (floods, resets, oversized headers) and reads back frame types and
error codes. Header blocks are encoded as HPACK literals without indexing (RFC 7541 §6.2.2),
which every decoder accepts; responses' header blocks are not decoded (grpcio and nghttp
check those), but DATA payloads and RST_STREAM/GOAWAY codes are."""

import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, \
    STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, \
    CONNECT_ERROR, ENHANCE_YOUR_CALM = range(12)


def _int(value, prefix_bits, first=0):
    """HPACK integer (RFC 7541 §5.1)."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack(headers):
    out = b""
    for name, value in headers:
        name = name.encode() if isinstance(name, str) else name
        value = value.encode() if isinstance(value, str) else value
        out += b"\x00" + _int(len(name), 7) + name + _int(len(value), 7) + value
    return out


def grpc_headers(path, extra=(), timeout=None, content_type="application/grpc"):
    h = [(":method", "POST"), (":scheme", "http"), (":path", path),
         (":authority", "localhost"), ("content-type", content_type), ("te", "trailers")]
    if timeout:
        h.append(("grpc-timeout", timeout))
    return h + list(extra)


def grpc_message(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


class Conn:
    def __init__(self, port, settings=(), window=None, timeout=10.0, ack=True):
        self.ack = ack
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False
        # The peer's flow-control windows, for data_flow (RFC 9113 §6.9).
        self.conn_window = 65535
        self.initial_window = 65535
        self.windows = {}
        self.seen = []  # frames data_flow read while it waited for a window
        payload = b"".join(struct.pack(">HI", k, v) for k, v in settings)
        self.send_raw(PREFACE + self.frame(SETTINGS, 0, 0, payload))
        if window:
            self.send_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", window))

    @staticmethod
    def frame(ftype, flags, stream, payload=b""):
        return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
            struct.pack(">I", stream) + payload

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, ftype, flags, stream, payload=b""):
        self.send_raw(self.frame(ftype, flags, stream, payload))

    def headers(self, stream, headers, end_stream=False, max_frame=16384):
        """HEADERS, and CONTINUATION frames when the block is over <max_frame> bytes."""
        block = hpack(headers)
        first, rest = block[:max_frame], block[max_frame:]
        flags = (END_STREAM if end_stream else 0) | (0 if rest else END_HEADERS)
        out = self.frame(HEADERS, flags, stream, first)
        while rest:
            piece, rest = rest[:max_frame], rest[max_frame:]
            out += self.frame(CONTINUATION, 0 if rest else END_HEADERS, stream, piece)
        self.send_raw(out)

    def data(self, stream, payload, end_stream=False, max_frame=16384):
        """DATA frames of at most <max_frame> bytes (the default SETTINGS_MAX_FRAME_SIZE)."""
        out = b""
        while True:
            piece, payload = payload[:max_frame], payload[max_frame:]
            last = not payload
            out += self.frame(DATA, END_STREAM if (end_stream and last) else 0, stream, piece)
            if last:
                break
        self.send_raw(out)

    def _track_window(self, ftype, flags, stream, payload):
        if ftype == WINDOW_UPDATE and len(payload) == 4:
            inc = int.from_bytes(payload, "big") & 0x7fffffff
            if stream == 0:
                self.conn_window += inc
            else:
                self.windows[stream] = self.windows.get(stream, self.initial_window) + inc
        elif ftype == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                if key == 4:  # SETTINGS_INITIAL_WINDOW_SIZE applies to open streams too
                    for s in self.windows:
                        self.windows[s] += value - self.initial_window
                    self.initial_window = value

    def data_flow(self, stream, payload, end_stream=False, timeout=20.0):
        """DATA frames within the peer's windows, as a well-behaved client sends them: waits
        for WINDOW_UPDATE where a window is spent. Frames read meanwhile go to self.seen."""
        deadline = time.monotonic() + timeout
        while True:
            window = min(self.conn_window, self.windows.get(stream, self.initial_window))
            n = min(len(payload), max(window, 0), 16384)
            if n > 0 or not payload:
                piece, payload = payload[:n], payload[n:]
                self.conn_window -= n
                self.windows[stream] = self.windows.get(stream, self.initial_window) - n
                self.send_frame(DATA, END_STREAM if end_stream and not payload else 0, stream,
                                piece)
                if not payload:
                    return
                continue
            f = self.read_frame(max(0.01, deadline - time.monotonic()))
            if f is None:
                raise ConnectionError("the peer closed while data waited for a window")
            self.seen.append(f)

    def keepalive_frames(self, seconds, done=lambda: False):
        """Sends a PING every 0.3 s for up to <seconds>, as a client's keepalive does, and
        yields the frames read meanwhile; stops early once done() holds or the peer closed."""
        start = time.monotonic()
        while time.monotonic() - start < seconds and not done() and not self.closed:
            self.send_frame(PING, 0, 0, b"keepaliv")
            end = time.monotonic() + 0.3
            while time.monotonic() < end and not self.closed:
                try:
                    f = self.read_frame(max(0.01, end - time.monotonic()))
                except TimeoutError:
                    break
                if f:
                    yield f

    def rst(self, stream, code=CANCEL):
        self.send_frame(RST_STREAM, 0, stream, struct.pack(">I", code))

    def read_frame(self, timeout=10.0):
        """The next frame as (type, flags, stream, payload), or None once the peer closed.
        SETTINGS and PINGs are acknowledged on the way."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    stream = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                    payload = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    self._track_window(ftype, flags, stream, payload)
                    try:
                        if ftype == SETTINGS and not flags & ACK and self.ack:
                            self.send_frame(SETTINGS, ACK, 0)
                        if ftype == PING and not flags & ACK:
                            self.send_frame(PING, ACK, 0, payload)
                    except OSError:
                        pass  # the peer is closing; what it sent is still read
                    return ftype, flags, stream, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame within %.1fs" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                return None
            self.buf += chunk

    def frames_until(self, pred, timeout=10.0):
        """Reads frames until pred(frame) holds (returns the frames read) or the peer closes."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            f = self.read_frame(max(0.01, deadline - time.monotonic()))
            if f is None:
                return seen
            seen.append(f)
            if pred(f):
                return seen

    def first_error(self, timeout=10.0):
        """(type, stream, error code) of the next RST_STREAM or GOAWAY; None if the peer
        closed first."""
        frames = self.frames_until(lambda f: f[0] in (RST_STREAM, GOAWAY), timeout)
        if not frames or frames[-1][0] not in (RST_STREAM, GOAWAY):
            return None
        f = frames[-1]
        return f[0], f[2], rst_code(f) if f[0] == RST_STREAM else goaway_code(f)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def rst_code(frame):
    return int.from_bytes(frame[3][:4], "big")


def goaway_code(frame):
    return int.from_bytes(frame[3][4:8], "big")
