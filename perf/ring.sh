#!/bin/sh
# The ring's cost on small messages: 64-byte ping-pong over the ring (1 and 2 cores, with and
# without linked timeouts) beside blocking sockets, in one run. Prints a Markdown table.
#   perf/ring.sh [--seconds S] [--conns 1,2,16]
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh build
cmake --preset release >/dev/null
cmake --build build/release -j"$(nproc)" --target ring_pingpong >/dev/null
echo "ring_pingpong on $(uname -n), $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%d)"
exec ./build/release/perf/ring_pingpong "$@"
