"""REAPI, ByteStream and Health clients for the integration tests, with Debian's python3-grpcio
and python3-protobuf: the message classes come from the descriptor set the build generates
from proto/ (protoc-c --descriptor_set_out; $RC_PROTO_DESC, else build/*/gen/ringcas.desc), and
calls go through grpc's generic channel methods, so no generated stubs are needed."""

import hashlib
import os

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import harness

RE = "build.bazel.remote.execution.v2."
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def _desc_path():
    path = os.environ.get("RC_PROTO_DESC")
    if path:
        return path
    for preset in ("asan", "debug", "dev", "release", "clang"):
        cand = os.path.join(harness.ROOT, "build", preset, "gen", "ringcas.desc")
        if os.path.exists(cand):
            return cand
    raise RuntimeError("ringcas.desc not found: set RC_PROTO_DESC or build ringcas")


def _load():
    fds = descriptor_pb2.FileDescriptorSet()
    with open(_desc_path(), "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    factory = message_factory.MessageFactory(pool)
    classes = {}
    for fd in fds.file:
        fdesc = pool.FindFileByName(fd.name)
        for name in _message_names(fdesc.message_types_by_name.values()):
            classes[name] = factory.GetPrototype(pool.FindMessageTypeByName(name))
    return pool, classes


def _message_names(descs):
    for d in descs:
        yield d.full_name
        yield from _message_names(d.nested_types)


POOL, MSG = _load()


def msg(name, **kw):
    """A new message by full name ('build.bazel.remote.execution.v2.Digest') or short name
    within REAPI ('Digest'), with fields set from keywords."""
    cls = MSG.get(name) or MSG.get(RE + name)
    if cls is None:
        raise KeyError(name)
    return cls(**kw)


def cls(name):
    return MSG.get(name) or MSG[RE + name]


class Client:
    """Every method ringcas serves, on one channel."""

    METHODS = {
        # name: (path, request, response, kind)
        "Check": ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest",
                  "grpc.health.v1.HealthCheckResponse", "uu"),
        "GetCapabilities": ("/" + RE + "Capabilities/GetCapabilities", "GetCapabilitiesRequest",
                            "ServerCapabilities", "uu"),
        "FindMissingBlobs": ("/" + RE + "ContentAddressableStorage/FindMissingBlobs",
                             "FindMissingBlobsRequest", "FindMissingBlobsResponse", "uu"),
        "BatchUpdateBlobs": ("/" + RE + "ContentAddressableStorage/BatchUpdateBlobs",
                             "BatchUpdateBlobsRequest", "BatchUpdateBlobsResponse", "uu"),
        "BatchReadBlobs": ("/" + RE + "ContentAddressableStorage/BatchReadBlobs",
                           "BatchReadBlobsRequest", "BatchReadBlobsResponse", "uu"),
        "GetTree": ("/" + RE + "ContentAddressableStorage/GetTree", "GetTreeRequest",
                    "GetTreeResponse", "us"),
        "GetActionResult": ("/" + RE + "ActionCache/GetActionResult", "GetActionResultRequest",
                            "ActionResult", "uu"),
        "UpdateActionResult": ("/" + RE + "ActionCache/UpdateActionResult",
                               "UpdateActionResultRequest", "ActionResult", "uu"),
        "Read": ("/google.bytestream.ByteStream/Read", "google.bytestream.ReadRequest",
                 "google.bytestream.ReadResponse", "us"),
        "Write": ("/google.bytestream.ByteStream/Write", "google.bytestream.WriteRequest",
                  "google.bytestream.WriteResponse", "su"),
        "QueryWriteStatus": ("/google.bytestream.ByteStream/QueryWriteStatus",
                             "google.bytestream.QueryWriteStatusRequest",
                             "google.bytestream.QueryWriteStatusResponse", "uu"),
    }

    def __init__(self, address, options=None, credentials=None):
        """A plain channel, or a TLS one with <credentials> (grpc.ssl_channel_credentials)."""
        opts = [("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20)] + list(options or [])
        if credentials:
            self.channel = grpc.secure_channel(address, credentials, options=opts)
        else:
            self.channel = grpc.insecure_channel(address, options=opts)
        for name, (path, req, resp, kind) in self.METHODS.items():
            factory = {"uu": self.channel.unary_unary, "us": self.channel.unary_stream,
                       "su": self.channel.stream_unary}[kind]
            setattr(self, name, factory(path, request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=cls(resp).FromString))

    def raw(self, path, kind="uu"):
        """A method by path with bytes in and out (for malformed requests, unknown methods)."""
        factory = {"uu": self.channel.unary_unary, "us": self.channel.unary_stream,
                   "su": self.channel.stream_unary}[kind]
        return factory(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)

    def close(self):
        self.channel.close()


def two_level_dir(top, below, names=("f1", "f2")):
    """A root Directory holding a file <names[0]> (the bytes <top>) and a directory "leaf"
    holding a file <names[1]> (the bytes <below>): returns (root, leaf, root's bytes, leaf's
    bytes)."""
    def dig(data):
        return msg("Digest", hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    leaf = msg("Directory")
    leaf.files.add(name=names[1], digest=dig(below))
    lb = leaf.SerializeToString()
    root = msg("Directory")
    root.files.add(name=names[0], digest=dig(top))
    root.directories.add(name="leaf", digest=dig(lb))
    return root, leaf, root.SerializeToString(), lb


def put_blob(address, data):
    """Stores <data> with BatchUpdateBlobs on its own channel; returns its Digest (raises
    AssertionError when the server's per-blob status is not OK)."""
    client = Client(address)
    try:
        req = msg("BatchUpdateBlobsRequest")
        r = req.requests.add()
        r.digest.hash = hashlib.sha256(data).hexdigest()
        r.digest.size_bytes = len(data)
        r.data = data
        status = client.BatchUpdateBlobs(req, timeout=20).responses[0].status
        if status.code != 0:
            raise AssertionError("BatchUpdateBlobs: %d %s" % (status.code, status.message))
    finally:
        client.close()
    return r.digest
