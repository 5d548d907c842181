#!/bin/sh
# A long soak under churn: does anything drift (memory, descriptors, gauges, errors, stalls)?
#
# Starts `ringcas serve --cores 2` on a free port with a small --max-size (so eviction and
# refresh copies run all the time) in a fresh folder, then for --minutes runs, concurrently:
#   - `ringcas bench --workload mix --data build`, open loop at --rate, in slices of
#     --slice minutes (each slice's errors and latencies are its own report: sliceNN.json);
#   - perf/soak_churn.py: short-lived HTTP/1.1 connections (curl), gRPC calls cancelled and
#     out of deadline, resumable uploads parked or resumed, clients that vanish mid-upload or
#     mid-download, HEAD and FindMissingBlobs of missing keys;
#   - every --interval seconds a sample (perf/soak_stat.py): VmRSS, VmHWM, RssAnon, threads,
#     open descriptors and the /metrics gauges and counters (samples.tsv, samples.jsonl).
# The load runs under `nice -n 10`. At the end it stops the load, waits for the server to be
# idle, samples again, sends SIGTERM (exit status, drain log), restarts on the same folder and
# times start to ready, then prints the summary (summary.txt).
#
# usage: perf/soak.sh [--minutes M] [--slice MIN] [--rate N] [--max-size SIZE]
#                     [--interval S] [--warmup S] [--out DIR]
#   env: RINGCAS_BIN (default build/release/src/ringcas)
set -u
cd "$(dirname "$0")/.." || exit 1
RC=${RINGCAS_BIN:-build/release/src/ringcas}
PY=/usr/bin/python3
MINUTES=60
SLICE=5
RATE=20
MAX_SIZE=256MiB
INTERVAL=30
WARMUP=300
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
    --minutes) MINUTES=$2; shift 2 ;;
    --slice) SLICE=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --max-size) MAX_SIZE=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--minutes M] [--slice MIN] [--rate N] [--max-size SIZE] [--interval S] [--warmup S] [--out DIR]" >&2
       exit 2 ;;
    esac
done
# free_port, wait_http
# shellcheck source=perf/lib.sh
. perf/lib.sh
if [ -z "$OUT" ]; then
    mkdir -p /var/tmp/ringcas-soak
    OUT=$(mktemp -d /var/tmp/ringcas-soak/run.XXXXXX)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA=$OUT/data
srv=""
loadpids=""
cleanup() {
    for p in $loadpids $srv; do kill "$p" 2>/dev/null; done
    for p in $loadpids $srv; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "soak: $(date -u +%H:%M:%S) $*" | tee -a "$OUT/soak.log" >&2; }

# serve: starts the server on $port with data in $DATA; sets srv.
serve() {
    "$RC" serve --cores 2 --listen "127.0.0.1:$port" --dir "$DATA" --max-size "$MAX_SIZE" \
        --log-level info >>"$OUT/server.out" 2>>"$OUT/server.log" &
    srv=$!
}

# Wall-clock seconds, and the time between two of them (no interpreter to start in between).
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

sample() { "$PY" perf/soak_stat.py sample "$srv" "$port" "$OUT" "$1" || log "sample $1 failed"; }

port=$(free_port)
printf '{"minutes": %s, "slice_min": %s, "rate": %s, "max_size": "%s", "warmup_s": %s, "port": %s}\n' \
    "$MINUTES" "$SLICE" "$RATE" "$MAX_SIZE" "$WARMUP" "$port" >"$OUT/meta.json"
log "out $OUT; server 127.0.0.1:$port --cores 2 --max-size $MAX_SIZE; $MINUTES min, mix at $RATE/s"
serve
wait_http "http://127.0.0.1:$port/readyz" || exit 1
sample start

total=$((MINUTES * 60))
end=$(($(date +%s) + total))

# The mix, in slices: each slice is a fresh bench (it seeds its own earlier builds first).
# Blobs stay under a quarter of --max-size (the largest one a store takes).
(
    i=0
    while [ "$(date +%s)" -lt "$end" ]; do
        left=$((end - $(date +%s)))
        d=$((SLICE * 60))
        [ "$left" -lt "$d" ] && d=$left
        [ "$d" -lt 20 ] && break
        n=$(printf %02d $i)
        nice -n 10 "$RC" bench --server "127.0.0.1:$port" --workload mix --data build \
            --rate "$RATE" --duration "${d}s" --warmup 5s --concurrency 64 --threads 1 \
            --mix-actions 500 --mix-max-size 32MiB --timeout 30s --json \
            >"$OUT/slice$n.json" 2>"$OUT/slice$n.err"
        echo $? >"$OUT/slice$n.rc"
        i=$((i + 1))
    done
) &
loadpids="$loadpids $!"
bench_loop=$!

nice -n 10 "$PY" perf/soak_churn.py "$port" "$total" "$OUT" 2>"$OUT/churn.log" &
loadpids="$loadpids $!"
churn=$!

while [ "$(date +%s)" -lt "$end" ]; do
    sleep "$INTERVAL"
    kill -0 "$srv" 2>/dev/null || { log "the server died"; break; }
    sample load
done

log "load over; waiting for the bench and the churn"
wait "$bench_loop" 2>/dev/null
wait "$churn" 2>/dev/null
loadpids=""
# Parked uploads are dropped after 60 s; idle means nothing in flight and the gauges still.
log "waiting for the server to be idle"
"$PY" perf/soak_stat.py idle "$port" 180 || log "NOT IDLE after 180 s"
sample idle

t0=$(now)
kill -TERM "$srv"
wait "$srv"
rc=$?
t1=$(now)
{
    echo "SIGTERM: exit status $rc after $(since "$t0" "$t1") s"
    echo "drain log:"
    tail -n 8 "$OUT/server.log" | sed 's/^/    /'
    echo "warnings and errors over the run (by message, numbers masked):"
    grep -E ' (warn|error): ' "$OUT/server.log" | sed -E 's/^[^ ]+ //; s/[0-9]+/N/g' |
        sort | uniq -c | sort -rn | head -20 | sed 's/^/    /'
} >"$OUT/stop.txt"
srv=""

du_bytes=$(du -sb "$DATA" | cut -f1)
segs=$(find "$DATA" -type f | wc -l)
t0=$(now)
serve
wait_http "http://127.0.0.1:$port/readyz"
t1=$(now)
blobs=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^ringcas_store_blobs/ {s += $2} END {print s}')
echo "restart on the same folder ($du_bytes bytes in $segs files, $blobs blobs): ready after $(since "$t0" "$t1") s (polled every 50 ms)" >"$OUT/restart.txt"
kill -TERM "$srv"
wait "$srv"
echo "  and its SIGTERM: exit status $?" >>"$OUT/restart.txt"
srv=""

"$PY" perf/soak_stat.py summary "$OUT" | tee "$OUT/summary.txt"
