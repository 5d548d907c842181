#!/bin/sh
# gRPC benchmarks (issue 4), each beside its anchor in the same run:
#   1. ByteStream.Read of a 1 KiB blob with h2load (gRPC-framed ReadRequest posted with -d)
#      beside nghttpd serving the same 1 KiB as a static file;
#   2. ByteStream.Read of a 256 MiB random blob on one stream beside iperf3's single stream;
#   3. FindMissingBlobs with 1000 digests per call (500 present), digests/s.
# h2load counts any HTTP 200 as a success, so the DATA bytes it reports are checked against
# the exact bytes every successful call returns.
#
# usage: perf/grpc.sh [--seconds N] [--cores N]   (RINGCAS_BIN: default build/release)
#   N1K / NFIND: requests of the 1 KiB and FindMissingBlobs runs (fixed counts, so the DATA
#   bytes h2load reports can be checked exactly); ROUNDS: alternations of each comparison
#   (medians reported); --seconds is iperf3's run.
# needs: nghttp2-client (h2load), nghttp2-server (nghttpd), iperf3, python3-grpcio
set -eu
cd "$(dirname "$0")/.."
SECONDS_RUN=10
CORES=2
N1K=${N1K:-400000}
ROUNDS=${ROUNDS:-3}
NFIND=${NFIND:-20000}
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --cores) CORES=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--cores N]" >&2; exit 2 ;;
    esac
done
. perf/lib.sh
[ -x "$PERF_BIN" ] || { echo "build the release binary first: make release" >&2; exit 1; }
for t in h2load nghttpd iperf3; do
    command -v $t >/dev/null || { echo "missing $t: ./scripts/deps.sh perf" >&2; exit 1; }
done
perf_init
TMP=$work

ringcas_start ringcas "$TMP/data" --cores "$CORES"
PORT=$ringcas_port
RPID=$ringcas_pid
/usr/bin/python3 perf/grpc_bodies.py 127.0.0.1:$PORT "$TMP/bodies"
read E1K E256M EFIND <"$TMP/bodies/expect"

mkdir -p "$TMP/docroot" && cp "$TMP/bodies/blob1k" "$TMP/docroot/blob1k"
nghttpd_start "$TMP/docroot" "$CORES"
NPORT=$nghttpd_port
NPID=$nghttpd_pid

GRPC="-H content-type:application/grpc -H te:trailers"
# h2load's summary as "req/s succeeded data-bytes seconds" (perf/lib.sh).
summary() { h2load_sum "$1"; }

run_h2load() { # name, output file, h2load args...
    name=$1; out=$2; shift 2
    h2load "$@" >"$out" 2>&1 || { cat "$out"; exit 1; }
}

# CPU time (user + system) a process has used, in microseconds: robust to a busy machine
# where req/s is not.
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000000 / hz}' "/proc/$1/stat"; }

# CPU time (user + system) of this shell's finished children (h2load) in microseconds, from
# FILE, where the `times` builtin's second line ("0m1.20s 0m0.80s") was written. `times` must
# run in this shell: a command substitution's subshell has no finished children.
times_us() {
    sed -n 2p "$1" | awk '{ split($1, u, "m"); split($2, s, "m");
        printf "%.0f", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 1000000 }'
}

check() { # data-bytes calls bytes-per-call what
    [ "$1" = "$(( $2 * $3 ))" ] || { echo "BYTES MISMATCH ($4): $1 data bytes for $2 calls of $3" >&2; exit 1; }
}

# The machine may be shared: each comparison alternates its two sides ROUNDS times and
# reports the medians (and every round, so the spread shows).
echo "== 1 KiB reads, h2load -n $N1K -c64 -m16 -t2, $ROUNDS rounds"
NS=""; RS=""; NC=""; RC=""; NH=""; RH=""
per_req() { echo "$1 $2 $N1K" | awk '{printf "%.2f", ($2-$1)/$3}'; }
for i in $(seq 1 "$ROUNDS"); do
    times >"$TMP/times"; c0=$(cpu_us $NPID); h0=$(times_us "$TMP/times")
    run_h2load nghttpd "$TMP/n.txt" -n "$N1K" -c64 -m16 -t2 http://127.0.0.1:$NPORT/blob1k
    times >"$TMP/times"; c1=$(cpu_us $NPID); h1=$(times_us "$TMP/times")
    NC="$NC $(per_req "$c0" "$c1")"; NH="$NH $(per_req "$h0" "$h1")"
    times >"$TMP/times"; c0=$(cpu_us $RPID); h0=$(times_us "$TMP/times")
    run_h2load ringcas "$TMP/r.txt" -n "$N1K" -c64 -m16 -t2 $GRPC \
        -d "$TMP/bodies/read1k.body" http://127.0.0.1:$PORT/google.bytestream.ByteStream/Read
    times >"$TMP/times"; c1=$(cpu_us $RPID); h1=$(times_us "$TMP/times")
    RC="$RC $(per_req "$c0" "$c1")"; RH="$RH $(per_req "$h0" "$h1")"
    set -- $(summary "$TMP/n.txt"); NS="$NS $1"
    set -- $(summary "$TMP/r.txt"); RS="$RS $1"; check "$3" "$2" "$E1K" "1 KiB read"
    [ "$2" = "$N1K" ] || { echo "only $2 of $N1K reads succeeded" >&2; exit 1; }
done
N_RPS=$(echo $NS | median); R_RPS=$(echo $RS | median)
echo "rounds nghttpd:$NS"
echo "rounds ringcas:$RS"
printf "nghttpd static 1 KiB      %10.0f req/s (median)\n" "$N_RPS"
printf "ringcas ByteStream.Read   %10.0f req/s (median)   %sx nghttpd\n" "$R_RPS" "$(ratio "$R_RPS" "$N_RPS")"
echo "bytes check: ok ($N1K calls x $E1K B each round)"
echo "server CPU µs per request, nghttpd:$NC (median $(echo $NC | median)); ringcas:$RC (median $(echo $RC | median))"
# Both servers share the 2 CPUs with h2load, whose own cost per call differs: a gRPC call is
# a POST with a DATA frame out and a trailer HEADERS frame back where a static GET is neither.
echo "h2load CPU µs per request, against nghttpd:$NH (median $(echo $NH | median)); against ringcas:$RH (median $(echo $RH | median))"

echo "== 256 MiB read, one stream, beside iperf3 (one stream), $ROUNDS rounds"
IS=""; BS=""
for i in $(seq 1 "$ROUNDS"); do
    IPORT=$(free_port)
    iperf3 -s -p $IPORT -1 >/dev/null 2>&1 &
    perf_track $!
    sleep 0.3
    I=$(iperf3 -c 127.0.0.1 -p $IPORT -t "$SECONDS_RUN" -J | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8)')
    IS="$IS $I"
    run_h2load ringcas "$TMP/big.txt" -n 4 -c1 -m1 -t1 $GRPC -d "$TMP/bodies/read256m.body" \
        http://127.0.0.1:$PORT/google.bytestream.ByteStream/Read
    set -- $(summary "$TMP/big.txt"); check "$3" "$2" "$E256M" "256 MiB read"
    [ "$2" = 4 ] || { echo "only $2 of 4 large reads succeeded" >&2; exit 1; }
    BS="$BS $(echo "$3 $4" | awk '{print $1/$2}')"
done
IPERF=$(echo $IS | median); BIG_BPS=$(echo $BS | median)
echo "rounds iperf3 GB/s:$(for x in $IS; do echo $x | awk '{printf " %.2f", $1/1e9}'; done)"
echo "rounds ringcas GB/s:$(for x in $BS; do echo $x | awk '{printf " %.2f", $1/1e9}'; done)"
printf "iperf3 loopback, 1 stream %10.2f GB/s (median)\n" "$(echo "$IPERF" | awk '{print $1/1e9}')"
printf "ringcas Read 256 MiB      %10.2f GB/s (median)   %sx iperf3\n" "$(echo "$BIG_BPS" | awk '{print $1/1e9}')" "$(ratio "$BIG_BPS" "$IPERF")"
echo "bytes check: ok (4 calls x $E256M B each round)"

echo "== FindMissingBlobs, 1000 digests per call, h2load -n $NFIND -c8 -m8 -t2"
run_h2load ringcas "$TMP/f.txt" -n "$NFIND" -c8 -m8 -t2 $GRPC \
    -d "$TMP/bodies/find1000.body" \
    http://127.0.0.1:$PORT/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs
set -- $(summary "$TMP/f.txt"); F_RPS=$1; F_OK=$2; F_DATA=$3
check "$F_DATA" "$F_OK" "$EFIND" "FindMissingBlobs"
printf "ringcas FindMissingBlobs  %10.0f calls/s = %.2f M digests/s\n" "$F_RPS" \
    "$(echo "$F_RPS" | awk '{print $1*1000/1e6}')"
echo "bytes check: ok ($F_OK calls x $EFIND B)"
