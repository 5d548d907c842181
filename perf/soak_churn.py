#!/usr/bin/python3
"""perf/soak.sh's churn: the traffic `ringcas bench --workload mix` does not make, at a modest
rate, until a deadline. Three threads:

  http   short-lived HTTP/1.1 connections (curl, a new one each): PUT and GET of /cas and /ac,
         HEAD of missing keys; raw sockets that PUT half a body and close, or read the head
         of a large GET and close
  grpc   grpcio on fresh and long-lived channels: FindMissingBlobs of missing keys, reads
         cancelled mid-stream, reads and writes whose deadline expires, writes cancelled
         mid-stream, resumable uploads left parked or resumed (QueryWriteStatus, then Write
         at committed_size)
  vanish raw HTTP/2 (tests/integration/h2raw.py): a ByteStream.Write that sends part of its
         message, or whole messages without finish_write, then closes the socket

Every outcome is counted by kind; the counts go to OUTDIR/churn.json (rewritten every 10 s
and at the end). An outcome that is not one the kind expects is also logged to stderr.

usage: soak_churn.py PORT SECONDS OUTDIR"""

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import grpc  # noqa: E402

import h2raw  # noqa: E402
import reapi  # noqa: E402

PORT = int(sys.argv[1])
END = time.time() + float(sys.argv[2])
OUTDIR = sys.argv[3]
ADDR = "127.0.0.1:%d" % PORT
BASE = "http://%s" % ADDR
lock = threading.Lock()
counts = {}
# An ActionResult with exit_code 1 and no outputs: served as long as it is stored.
AC_BODY = b"\x20\x01"


def note(kind, outcome, expected=True):
    with lock:
        k = counts.setdefault(kind, {})
        k[outcome] = k.get(outcome, 0) + 1
    if not expected:
        print("churn: %s: unexpected %s" % (kind, outcome), file=sys.stderr, flush=True)


def dump():
    with lock:
        data = json.dumps(counts, indent=1, sort_keys=True)
    tmp = os.path.join(OUTDIR, "churn.json.tmp")
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, os.path.join(OUTDIR, "churn.json"))


def blob(size):
    data = os.urandom(size)
    return data, hashlib.sha256(data).hexdigest()


def missing_hash():
    return os.urandom(32).hex()


def curl(*args):
    """Runs curl (one connection); returns the HTTP code as text ('000' for none)."""
    try:
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                            "--max-time", "30"] + list(args),
                           capture_output=True, timeout=60)
        return r.stdout.decode() or "rc%d" % r.returncode
    except subprocess.TimeoutExpired:
        return "timeout"


def http_loop(tmp):
    path = os.path.join(tmp, "body")
    while time.time() < END:
        step = random.random()
        if step < 0.35:
            size = random.choice([100, 4000, 60000, 700000, 3 << 20])
            data, h = blob(size)
            with open(path, "wb") as f:
                f.write(data)
            code = curl("-X", "PUT", "--data-binary", "@" + path, "%s/cas/%s" % (BASE, h))
            note("http PUT /cas", code, code in ("200", "201", "204"))
            code = curl("%s/cas/%s" % (BASE, h))
            note("http GET /cas (just put)", code, code == "200")
        elif step < 0.5:
            h = missing_hash()
            with open(path, "wb") as f:
                f.write(AC_BODY)
            code = curl("-X", "PUT", "--data-binary", "@" + path, "%s/soak/ac/%s" % (BASE, h))
            note("http PUT /ac", code, code in ("200", "201", "204"))
            code = curl("%s/soak/ac/%s" % (BASE, h))
            note("http GET /ac (just put)", code, code == "200")
        elif step < 0.7:
            code = curl("-I", "%s/cas/%s" % (BASE, missing_hash()))
            note("http HEAD /cas missing", code, code == "404")
            code = curl("%s/ac/%s" % (BASE, missing_hash()))
            note("http GET /ac missing", code, code == "404")
        elif step < 0.85:
            # A client that vanishes mid-upload: half the body, then close.
            size = random.choice([200000, 2 << 20])
            data, h = blob(size)
            try:
                s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
                s.sendall(("PUT /cas/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" %
                           (h, size)).encode() + data[:size // 2])
                time.sleep(random.random() * 0.2)
                s.close()
                note("http PUT half, close", "closed")
            except OSError as e:
                note("http PUT half, close", type(e).__name__, False)
        else:
            # A reader that vanishes: PUT a large blob, GET it, read the head, close.
            data, h = blob(4 << 20)
            with open(path, "wb") as f:
                f.write(data)
            curl("-X", "PUT", "--data-binary", "@" + path, "%s/cas/%s" % (BASE, h))
            try:
                s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
                s.sendall(("GET /cas/%s HTTP/1.1\r\nHost: x\r\n\r\n" % h).encode())
                head = s.recv(4096)
                s.close()
                note("http GET, close after head", head[:12].decode(errors="replace"),
                     head.startswith(b"HTTP/1.1 200"))
            except OSError as e:
                note("http GET, close after head", type(e).__name__, False)
        time.sleep(0.3)


def write_requests(resource, data, chunk, offset=0, finish=True, stall=0.0):
    pos = offset
    first = True
    while pos < len(data):
        piece = data[pos:pos + chunk]
        last = pos + len(piece) >= len(data)
        kw = {"write_offset": pos, "data": piece, "finish_write": finish and last}
        if first:
            kw["resource_name"] = resource
            first = False
        yield reapi.msg("google.bytestream.WriteRequest", **kw)
        pos += len(piece)
        if stall:
            time.sleep(stall)


def code_of(e):
    return e.code().name if isinstance(e, grpc.RpcError) else type(e).__name__


def grpc_step(client, big):
    step = random.random()
    if step < 0.2:
        req = reapi.msg("FindMissingBlobsRequest")
        for _ in range(random.randint(1, 50)):
            d = req.blob_digests.add()
            d.hash = missing_hash()
            d.size_bytes = random.randint(1, 1 << 20)
        try:
            r = client.FindMissingBlobs(req, timeout=30)
            ok = len(r.missing_blob_digests) == len(req.blob_digests)
            note("grpc FindMissing missing", "OK" if ok else "OK-wrong", ok)
        except grpc.RpcError as e:
            note("grpc FindMissing missing", code_of(e), False)
    elif step < 0.35:
        # Read cancelled after its first message.
        h, size = big
        call = client.Read(reapi.msg("google.bytestream.ReadRequest",
                                     resource_name="blobs/%s/%d" % (h, size)), timeout=30)
        try:
            next(call)
            call.cancel()
            note("grpc Read cancelled", "cancelled")
        except grpc.RpcError as e:
            note("grpc Read cancelled", code_of(e), e.code() == grpc.StatusCode.NOT_FOUND)
        except StopIteration:
            note("grpc Read cancelled", "ended", False)
    elif step < 0.45:
        # Read whose deadline expires while the client reads slowly.
        h, size = big
        call = client.Read(reapi.msg("google.bytestream.ReadRequest",
                                     resource_name="blobs/%s/%d" % (h, size)), timeout=0.3)
        try:
            for _ in call:
                time.sleep(0.1)
            note("grpc Read deadline", "OK")
        except grpc.RpcError as e:
            note("grpc Read deadline", code_of(e),
                 e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND))
    elif step < 0.6:
        # Write cancelled mid-stream.
        data, h = blob(1 << 20)
        res = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), h, len(data))
        fut = client.Write.future(write_requests(res, data, 64 << 10, stall=0.05), timeout=30)
        time.sleep(0.2)
        fut.cancel()
        try:
            fut.result()
            note("grpc Write cancelled", "OK")
        except grpc.FutureCancelledError:
            note("grpc Write cancelled", "cancelled")
        except grpc.RpcError as e:
            note("grpc Write cancelled", code_of(e), e.code() == grpc.StatusCode.CANCELLED)
    elif step < 0.7:
        # Write whose deadline expires between messages.
        data, h = blob(512 << 10)
        res = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), h, len(data))
        try:
            client.Write(write_requests(res, data, 128 << 10, stall=0.4), timeout=0.5)
            note("grpc Write deadline", "OK", False)
        except grpc.RpcError as e:
            note("grpc Write deadline", code_of(e),
                 e.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    else:
        # Resumable upload: half, no finish_write; then resume it, or leave it parked.
        data, h = blob(random.choice([300 << 10, 2 << 20]))
        res = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), h, len(data))
        half = len(data) // 2
        try:
            r = client.Write(write_requests(res, data[:half], 64 << 10, finish=False),
                             timeout=30)
            note("grpc Write half (parked)", "OK %s" % ("=" if r.committed_size == half else
                                                        "!="), r.committed_size == half)
        except grpc.RpcError as e:
            note("grpc Write half (parked)", code_of(e), False)
            return
        if random.random() < 0.5:
            return  # left parked: the server drops it after 60 s
        try:
            q = client.QueryWriteStatus(reapi.msg("google.bytestream.QueryWriteStatusRequest",
                                                  resource_name=res), timeout=30)
            r = client.Write(write_requests(res, data, 64 << 10, offset=q.committed_size),
                             timeout=30)
            ok = r.committed_size == len(data)
            note("grpc Write resumed", "OK" if ok else "OK-size %d" % r.committed_size, ok)
        except grpc.RpcError as e:
            note("grpc Write resumed", code_of(e), False)


def grpc_loop():
    long_client = reapi.Client(ADDR)
    data, h = blob(8 << 20)
    big = (h, len(data))
    reapi.put_blob(ADDR, b"x")  # the channel works
    while time.time() < END:
        fresh = random.random() < 0.3
        client = reapi.Client(ADDR) if fresh else long_client
        try:
            # The large blob may have been evicted: upload it again now and then.
            if random.random() < 0.1:
                try:
                    client.Write(write_requests("uploads/%s/blobs/%s/%d" % (uuid.uuid4(), h,
                                                                           len(data)),
                                                data, 1 << 20), timeout=60)
                    note("grpc Write big", "OK")
                except grpc.RpcError as e:
                    note("grpc Write big", code_of(e), False)
            grpc_step(client, big)
        finally:
            if fresh:
                client.close()
        time.sleep(0.2)
    long_client.close()


def vanish_loop():
    path = "/google.bytestream.ByteStream/Write"
    while time.time() < END:
        data, h = blob(random.choice([100 << 10, 1 << 20]))
        res = "uploads/%s/blobs/%s/%d" % (uuid.uuid4(), h, len(data))
        whole = random.random() < 0.5
        try:
            c = h2raw.Conn(PORT, timeout=10)
            c.headers(1, h2raw.grpc_headers(path))
            if whole:
                # Whole messages, no finish_write: the upload is parked when the socket goes.
                m = reapi.msg("google.bytestream.WriteRequest", resource_name=res,
                              write_offset=0, data=data[:40000]).SerializeToString()
                c.data(1, h2raw.grpc_message(m))
                kind = "h2 Write whole message, close"
            else:
                m = reapi.msg("google.bytestream.WriteRequest", resource_name=res,
                              write_offset=0, data=data).SerializeToString()
                c.data(1, h2raw.grpc_message(m)[:random.randint(100, 60000)])
                kind = "h2 Write part message, close"
            time.sleep(random.random() * 0.3)
            c.sock.close()
            note(kind, "closed")
        except OSError as e:
            note("h2 Write vanish", type(e).__name__, False)
        time.sleep(0.5)


def runner(fn, *args):
    def run():
        while time.time() < END:
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - count it and go on
                note("churn %s crashed" % fn.__name__, "%s: %s" % (type(e).__name__, e), False)
                time.sleep(1)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def main():
    with tempfile.TemporaryDirectory() as tmp:
        threads = [runner(http_loop, tmp), runner(grpc_loop), runner(vanish_loop)]
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=10)
            dump()
    dump()


if __name__ == "__main__":
    main()
