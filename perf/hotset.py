#!/usr/bin/python3
"""The hot-set reproducer of docs/grpc.md ("A store too small for the build") and
docs/storage.md ("Traced"): a store of --max-size 48MiB on 2 cores (default segments, 3 MiB),
RESULTS action results of one 3 MiB incompressible output each, looked up from 4 connections
ROUNDS times with no other client (GetActionResult, which refreshes the cold outputs it names).
Counts, per run: outputs lost (FindMissingBlobs after the last round, once the copies ended),
misses (NOT_FOUND answers), segments evicted, copies, and the most the files on disk
(disk_bytes + held_bytes, sampled after each round) held, in MiB.

  RINGCAS_BIN=build/asan/src/ringcas RC_PROTO_DESC=build/asan/gen/ringcas.desc \\
      /usr/bin/python3 perf/hotset.py RESULTS RUNS [ROUNDS]

Run from the repository root; uses tests/integration's harness and client."""

import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import grpc  # noqa: E402

import harness  # noqa: E402
import reapi  # noqa: E402
from test_evict import digest  # noqa: E402

MiB = 1 << 20
CONNS = 4


def run(results, rounds):
    server = harness.Server(args=("--max-size", "48MiB"), cores=2)
    server.start()
    clients = [reapi.Client(server.address) for _ in range(CONNS)]
    try:
        outs = [os.urandom(3 * MiB) for _ in range(results)]
        actions = [os.urandom(32) for _ in range(results)]
        c = clients[0]
        for o, a in zip(outs, actions):
            req = reapi.msg("BatchUpdateBlobsRequest")
            r = req.requests.add()
            r.digest.CopyFrom(digest(o))
            r.data = o
            codes = [x.status.code for x in c.BatchUpdateBlobs(req, timeout=60).responses]
            assert codes == [0], codes
            ar = reapi.msg("ActionResult")
            ar.output_files.add(path="out", digest=digest(o))
            req = reapi.msg("UpdateActionResultRequest")
            req.action_digest.CopyFrom(digest(a))
            req.action_result.CopyFrom(ar)
            c.UpdateActionResult(req, timeout=30)
        misses = [0] * CONNS
        files_max = 0

        def lookups(i):
            for k in range(results):
                a = actions[(k + i * results // CONNS) % results]
                req = reapi.msg("GetActionResultRequest")
                req.action_digest.CopyFrom(digest(a))
                try:
                    clients[i].GetActionResult(req, timeout=30)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.NOT_FOUND, e
                    misses[i] += 1

        for _ in range(rounds):
            ts = [threading.Thread(target=lookups, args=(i,)) for i in range(CONNS)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            files = (server.metric("ringcas_store_disk_bytes") +
                     server.metric("ringcas_store_held_bytes"))
            files_max = max(files_max, files)
        harness.wait_for(lambda: server.metric("ringcas_blob_refreshes_open") == 0 or None,
                         timeout=60, what="refreshes to finish")
        req = reapi.msg("FindMissingBlobsRequest")
        for o in outs:
            req.blob_digests.add().CopyFrom(digest(o))
        lost = len(c.FindMissingBlobs(req, timeout=60).missing_blob_digests)
        return {
            "lost": lost,
            "misses": sum(misses),
            "evicted": int(server.metric("ringcas_store_evicted_segments_total")),
            "copies": int(server.metric("ringcas_blob_refreshes_total")),
            "files_max_mib": round(files_max / MiB, 1),
        }
    finally:
        for cl in clients:
            cl.close()
        server.stop()
        server.cleanup()


def main():
    results, runs = int(sys.argv[1]), int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    for n in range(runs):
        print("results=%d run=%d %s" % (results, n, run(results, rounds)), flush=True)


if __name__ == "__main__":
    main()
