#!/bin/sh
# How read throughput scales with the server's cores: for each count N of --cores, starts
# `ringcas serve --cores N` pinned to CPUs 0..N-1 and `ringcas bench` pinned to the CPUs left
# (one thread per CPU), and runs the read workloads against it. When N leaves fewer than
# --min-client CPUs, the load generator shares all CPUs with the server instead, and the row
# says so. Besides requests/s it reports what the server spent (its CPU time from /proc, and
# its loops' busy time from ringcas_busy_seconds_total), so that a row whose server was not
# saturated shows it, and the server's CPU per request shows contention between cores directly.
#
# Needs only the ringcas binary, a POSIX sh and python3 or curl (for /metrics); taskset, or
# python3 for the pinning. Prints a markdown table; --json-dir keeps bench's reports.
#
# usage: perf/scaling.sh [--cores 1,2,4,8,16] [--seconds S] [--min-client N] [--dir D]
#                        [--json-dir D] [--workloads "bs-read:1KiB http-get:1KiB ..."]
#   env: RINGCAS_BIN (default build/release/src/ringcas)
set -u
cd "$(dirname "$0")/.."
RC=${RINGCAS_BIN:-build/release/src/ringcas}
CORES_LIST=1,2
S=5
MIN_CLIENT=4
BASE=/var/tmp/ringcas-scaling
JSON_DIR=""
WORKLOADS="bs-read:1KiB http-get:1KiB bs-read:256KiB"
# Every run keeps the same load: HTTP/1.1 connections, HTTP/2 connections and streams on each.
HTTP_CONNS=384
GRPC_CONNS=128
GRPC_STREAMS=16
while [ $# -gt 0 ]; do
    case "$1" in
    --cores) CORES_LIST=$2; shift 2 ;;
    --seconds) S=$2; shift 2 ;;
    --min-client) MIN_CLIENT=$2; shift 2 ;;
    --dir) BASE=$2; shift 2 ;;
    --json-dir) JSON_DIR=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    *) echo "usage: $0 [--cores LIST] [--seconds S] [--min-client N] [--dir D] [--json-dir D] [--workloads W]" >&2
       exit 2 ;;
    esac
done
. perf/lib.sh
NCPU=$(nproc)
TICK=$(getconf CLK_TCK)
PY=$(command -v python3 || true)
mkdir -p "$BASE"
work=$(mktemp -d "$BASE/run.XXXXXX")
[ -n "$JSON_DIR" ] || JSON_DIR=$work
mkdir -p "$JSON_DIR"
srv=""
cleanup() {
    [ -z "$srv" ] || { kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null; }
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pin CPULIST CMD...: becomes CMD on those CPUs (a range like 0-3); run it with & so that $!
# is CMD's own pid.
pin() {
    _c=$1
    shift
    if command -v taskset >/dev/null 2>&1; then
        exec taskset -c "$_c" "$@"
    else
        exec "$PY" -c 'import os, sys
lo, _, hi = sys.argv[1].partition("-")
os.sched_setaffinity(0, range(int(lo), int(hi or lo) + 1))
os.execvp(sys.argv[2], sys.argv[2:])' "$_c" "$@"
    fi
}

metrics() { # PORT: the server's /metrics
    if [ -n "$PY" ]; then
        "$PY" -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1]).read().decode())' "$1"
    else
        curl -s "http://127.0.0.1:$1/metrics"
    fi
}

sample() { # FILE: wall time, the server's and bench's CPU ticks, each core's ringcas_busy_seconds_total
    {
        echo "wall $(date +%s.%N)"
        echo "srv $(cpu_ticks "$srv")"
        echo "cli $(cpu_ticks "$bpid")"
        metrics "$port" | sed -n 's/^ringcas_busy_seconds_total{core="\([0-9]*\)"} /core \1 /p' | sort -n -k2
    } >"$1"
}

# Starts the server on CPUs 0..N-1; sets srv (pid) and port.
serve() {
    _n=$1
    rm -rf "$work/data"
    mkdir -p "$work/data"
    pin "0-$((_n - 1))" "$RC" serve --listen 127.0.0.1:0 --dir "$work/data" --cores "$_n" \
        --max-size 8GiB --log-level warn >"$work/srv.out" 2>"$work/srv.log" &
    srv=$!
    port=""
    for _ in $(seq 500); do
        port=$(sed -n 's/^ringcas listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/srv.out")
        [ -n "$port" ] && return 0
        kill -0 "$srv" 2>/dev/null || break
        sleep 0.02
    done
    echo "scaling: the server with --cores $_n did not start:" >&2
    cat "$work/srv.log" >&2
    exit 1
}

stop() {
    kill "$srv" 2>/dev/null
    wait "$srv" 2>/dev/null
    srv=""
}

jget() { # FILE KEY: a top-level number of a bench JSON report
    sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p" "$1" | head -n 1
}

echo "| server cores | client CPUs | workload | req/s | MB/s | × 1 core | server CPU time (CPUs) | loops busy, all / least–most busy core | server µs CPU per request | client CPU time (CPUs) | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for wl in $WORKLOADS; do
    name=${wl%%:*}
    size=${wl#*:}
    base=""
    for n in $(echo "$CORES_LIST" | tr ',' ' '); do
        if [ "$n" -gt "$NCPU" ]; then
            echo "| $n | - | $name $size | not run: $NCPU CPUs here | | | | | | | |"
            continue
        fi
        if [ $((NCPU - n)) -ge "$MIN_CLIENT" ]; then
            ccpus="$n-$((NCPU - 1))"
            threads=$((NCPU - n))
            cdesc="$threads ($ccpus)"
        else
            ccpus="0-$((NCPU - 1))"
            threads=$((NCPU / 2 > MIN_CLIENT ? NCPU / 2 : MIN_CLIENT))
            cdesc="$threads threads sharing all $NCPU"
        fi
        # The same connections and requests in flight for every N, spread over the threads.
        case $name in
        http-*) extra="--concurrency $(((HTTP_CONNS + threads - 1) / threads))" ;;
        *) c=$(((GRPC_CONNS + threads - 1) / threads))
           extra="--conns $c --concurrency $((c * GRPC_STREAMS))" ;;
        esac
        serve "$n"
        json="$JSON_DIR/scaling-$name-$size-$n.json"
        # shellcheck disable=SC2086 # $extra is a list of flags
        pin "$ccpus" "$RC" bench --server "127.0.0.1:$port" --workload "$name" --size "$size" \
            --blobs 1024 --threads "$threads" $extra --duration "${S}s" --warmup 1s --json \
            >"$json" 2>"$work/bench.err" &
        bpid=$!
        # The load starts when bench says so, after its seeding; the server's and the
        # client's CPU are sampled inside the measured window, after the warm-up.
        bench_wait_window "$work/bench.err" $bpid || true
        sleep 1.05
        sample "$work/s0"
        sleep "$(awk -v s="$S" 'BEGIN { print (s > 1 ? s - 0.5 : s / 2) }')"
        sample "$work/s1"
        wait $bpid
        stop
        rps=$(jget "$json" requests_per_s)
        mbs=$(jget "$json" mb_per_s)
        errs=$(jget "$json" errors)
        [ -n "$rps" ] || { rps=0; mbs=0; errs="bench failed: $(tail -n 1 "$work/bench.err")"; }
        [ -n "$base" ] || base=$rps
        paste "$work/s0" "$work/s1" | awk -v n="$n" -v c="$cdesc" -v w="$name $size" -v r="$rps" \
            -v m="$mbs" -v b="$base" -v tick="$TICK" -v e="$errs" '
            $1 == "wall" { s = $4 - $2 }
            $1 == "srv" { srv = $4 - $2 }
            $1 == "cli" { cli = $4 - $2 }
            $1 == "core" { d = $6 - $3; tot += d; if (lo == "" || d < lo) lo = d; if (d > hi) hi = d }
            END {
                cpu = srv / tick / s; ccpu = cli / tick / s
                printf "| %s | %s | %s | %.0f | %.1f | %.2f | %.2f | %.2f / %.2f–%.2f | %.2f | %.2f | %s |\n",
                    n, c, w, r, m, (b > 0 ? r / b : 0), cpu, tot / s, lo / s, hi / s,
                    (r > 0 ? cpu * 1e6 / r : 0), ccpu, e
            }'
    done
done
