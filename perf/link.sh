#!/bin/sh
# A link of real speed on one machine: a veth pair into a network namespace, shaped in both
# directions with tc's token bucket (tbf), so that a client in the namespace reaches a server
# on this side over RATE (loopback moves gigabytes a second with no queue a real network
# has: what waits in a socket's buffer there drains in microseconds). Root only.
#
#   perf/link.sh up [RATE]   creates namespace rclink, 10.77.0.1 here, 10.77.0.2 there
#                            (RATE: tc's units, default 1gbit); prints the server address
#   perf/link.sh run CMD...  runs CMD in the namespace (a client: ringcas bench, iperf3 -c)
#   perf/link.sh down        removes both
#
# A server for it listens on 10.77.0.1 (`ringcas serve --listen 10.77.0.1:PORT`); the client
# runs under `perf/link.sh run`. Used for the small-answer order measurement in
# docs/performance.md ("The build mix's tail"): iperf3 over a 1gbit link gave 956 Mbit/s.
set -eu
NS=rclink
HERE=10.77.0.1
THERE=10.77.0.2

case "${1:-}" in
up)
    rate=${2:-1gbit}
    [ "$(id -u)" = 0 ] || { echo "perf/link.sh: needs root (ip netns, tc)" >&2; exit 1; }
    ip netns add $NS
    ip link add rclink0 type veth peer name rclink1
    ip link set rclink1 netns $NS
    ip addr add $HERE/24 dev rclink0
    ip link set rclink0 up
    ip netns exec $NS ip addr add $THERE/24 dev rclink1
    ip netns exec $NS ip link set rclink1 up
    ip netns exec $NS ip link set lo up
    tc qdisc replace dev rclink0 root tbf rate "$rate" burst 128kb latency 20ms
    ip netns exec $NS tc qdisc replace dev rclink1 root tbf rate "$rate" burst 128kb latency 20ms
    echo "$HERE"
    ;;
run)
    shift
    exec ip netns exec $NS "$@"
    ;;
down)
    ip link del rclink0 2>/dev/null || true
    ip netns del $NS 2>/dev/null || true
    ;;
*)
    echo "usage: perf/link.sh up [RATE] | run CMD... | down" >&2
    exit 2
    ;;
esac
