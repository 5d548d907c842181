#!/bin/sh
# HTTP/1.1 beside nginx in one run, on the same machine and cores: wrk GET of 1 KiB, 64 KiB
# and 4 MiB blobs (ringcas GET /cas/<sha256>, nginx the same bytes as static files), and PUT
# of 64 KiB and 4 MiB bodies (ringcas PUT /cas/<sha256>: SHA-256 verified, zstd, committed
# with --sync=group; nginx WebDAV PUT: written to a file, no hashing, no fsync). Each cell is
# the median of --runs runs, servers alternating. Prints a Markdown table.
#   perf/http.sh [--seconds S] [--runs N] [--conns C] [--sync group|none|always]
set -eu
cd "$(dirname "$0")/.."
seconds=10
runs=3
conns=64
sync=group
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --sync) sync=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds S] [--runs N] [--conns C] [--sync MODE]" >&2; exit 2 ;;
    esac
done
./scripts/deps.sh perf
cmake --preset release >/dev/null
cmake --build build/release -j"$(nproc)" --target ringcas >/dev/null

. perf/lib.sh
perf_init
nginx_start
ringcas_start ringcas "$work/data" --cores 2 --max-size 8GiB --sync "$sync"

# The same random bytes for both servers.
for spec in 1k:1024 64k:65536 4m:4194304; do
    name=${spec%%:*}
    bytes=${spec#*:}
    head -c "$bytes" /dev/urandom >"$work/www/$name"
    chmod 644 "$work/www/$name"
    hash=$(sha256sum "$work/www/$name" | cut -d' ' -f1)
    echo "$hash" >"$work/$name.hash"
    code=$(curl -s -o /dev/null -w '%{http_code}' -T "$work/www/$name" \
        "http://127.0.0.1:$ringcas_port/cas/$hash")
    [ "$code" = 201 ] || { echo "upload of $name to ringcas: $code" >&2; exit 1; }
done

# run PID ARGS... -> "req/s server-CPU-µs-per-request" for one wrk run.
run() {
    pid=$1
    shift
    t0=$(cpu_ticks "$pid")
    wrk -t2 -c"$conns" -d"${seconds}s" "$@" >"$work/wrk.out" 2>&1
    t1=$(cpu_ticks "$pid")
    if grep -q "unexpected status\|Non-2xx" "$work/wrk.out"; then
        cat "$work/wrk.out" >&2
        exit 1
    fi
    awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '/requests in/ { n = $1 }
        /^Requests\/sec:/ { r = $2 } END { printf "%s %.1f\n", r, t / hz * 1e6 / n }' \
        "$work/wrk.out"
}
run_get() { run "$1" "$2"; }
run_put() { PUT_MODE=$3 PUT_SIZE=$4 run "$1" -s perf/wrk_put.lua "$2"; }

echo "perf/http.sh on $(uname -n), $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%d)," \
    "wrk -t2 -c$conns ${seconds}s x $runs, ringcas --cores 2 --sync $sync, nginx 2 workers," \
    "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| load | nginx req/s | ringcas req/s | nginx MB/s | ringcas MB/s | ringcas / nginx |" \
    "nginx CPU µs/req | ringcas CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|"
row() { # LABEL BYTES FILE_NGINX FILE_RINGCAS (lines "req/s cpu-µs")
    n=$(cut -d' ' -f1 "$3" | median)
    r=$(cut -d' ' -f1 "$4" | median)
    nc=$(cut -d' ' -f2 "$3" | median)
    rc=$(cut -d' ' -f2 "$4" | median)
    awk -v l="$1" -v b="$2" -v n="$n" -v r="$r" -v nc="$nc" -v rc="$rc" 'BEGIN {
        printf "| %s | %.0f | %.0f | %.1f | %.1f | %.2f | %.1f | %.1f |\n", l, n, r,
            n * b / 1e6, r * b / 1e6, r / n, nc, rc }'
}

for spec in 1k:1024 64k:65536 4m:4194304; do
    name=${spec%%:*}
    bytes=${spec#*:}
    hash=$(cat "$work/$name.hash")
    : >"$work/n.txt"
    : >"$work/r.txt"
    for _ in $(seq "$runs"); do
        run_get "$nginx_pid" "http://127.0.0.1:$nginx_port/$name" >>"$work/n.txt"
        run_get "$ringcas_pid" "http://127.0.0.1:$ringcas_port/cas/$hash" >>"$work/r.txt"
    done
    row "GET $name" "$bytes" "$work/n.txt" "$work/r.txt"
done

for spec in 64k:65536 4m:4194304; do
    name=${spec%%:*}
    bytes=${spec#*:}
    : >"$work/n.txt"
    : >"$work/r.txt"
    for _ in $(seq "$runs"); do
        run_put "$nginx_pid" "http://127.0.0.1:$nginx_port" dav "$bytes" >>"$work/n.txt"
        run_put "$ringcas_pid" "http://127.0.0.1:$ringcas_port" cas "$bytes" >>"$work/r.txt"
    done
    row "PUT $name" "$bytes" "$work/n.txt" "$work/r.txt"
done
