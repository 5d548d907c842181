#!/bin/sh
# The benchmark suite in one command: starts ringcas and each anchor on 127.0.0.1 and runs
# every benchmark of the earlier issues side by side, then rewrites perf/RESULTS.md with the
# measured figures and their ratios (every number in it comes from this run):
#
#   limits     iperf3 (loopback), SHA-256 and zstd on the uploaded bytes (perf/cpu_raw),
#              fio with io_uring (the disk)
#   HTTP/1.1   perf/http.sh (wrk, beside nginx: GET 1 KiB/64 KiB/4 MiB, WebDAV PUT), and the
#              same loads from ringcas bench
#   gRPC       perf/grpc.sh (ByteStream.Read 1 KiB with h2load -c64 -m16 beside nghttpd
#              serving the same bytes; one 256 MiB stream beside iperf3's one stream;
#              FindMissingBlobs), the same loads from ringcas bench, and compressed-blobs
#              reads of a blob stored compressed with the server's profile and the engine's
#              counters (no recompression)
#   uploads    64 MiB build-output-like and random blobs: MB per server CPU-second beside
#              raw SHA-256 + zstd / raw SHA-256 of the same bytes on one core
#   build mix  peak rate (closed loop), then open loop at 50 % of it: p99 of small blobs
#              (full run: also 10 % of peak, and 50 % with hits only, to locate the tail)
#   memory     resident bytes per indexed blob with 10M blobs (1M with --quick)
#   ring       perf/ring.sh (the linked-timeout cost); engine: perf/blob_bench.sh (full only)
#   choices    perf/uring_micro (fixed files, linked timeouts, provided and registered buffers,
#              O_DIRECT reads, per op) and ring_pingpong --stream (SEND_ZC against sendmsg)
#   scaling    --cores LIST: perf/scaling.sh, server core counts (counts above this
#              machine's CPUs are listed as not run); a 16-CPU run is in perf/SCALING.md
#   profiles   perf record of the server under the loads that decide the targets
#
# usage: perf/run.sh [--quick] [--cores 1,2,...] [--out FILE] [--no-build]
#   --quick: shorter runs, one round, 1M blobs for memory, no engine suite (< 5 minutes)
#   env: RINGCAS_BIN (the binary, default build/release/src/ringcas), PERF_KEEP=1 (keep the
#   scratch folder), PERF_ONLY="sections" (run only those; for debugging the suite)
set -u
cd "$(dirname "$0")/.."
COMMAND="perf/run.sh${*:+ $*}"
# Before RESULTS.md is rewritten (that alone would mark the tree dirty).
COMMIT=$(git describe --always --dirty 2>/dev/null)
QUICK=0
CORES_LIST=""
OUT=perf/RESULTS.md
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1; shift ;;
    --cores) CORES_LIST=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "usage: $0 [--quick] [--cores 1,2,4,8,16] [--out FILE] [--no-build]" >&2; exit 2 ;;
    esac
done
NCPU=$(nproc)
[ -n "$CORES_LIST" ] || CORES_LIST=$( [ "$NCPU" -ge 2 ] && echo "1,2" || echo "1")
if [ "$QUICK" = 1 ]; then
    S=3; ROUNDS=1; MEM_BLOBS=1000000; PROF_S=2; MIX_ACTIONS=500
else
    S=10; ROUNDS=3; MEM_BLOBS=10000000; PROF_S=5; MIX_ACTIONS=2000
fi

# Figures the targets table reads; a section that cannot run leaves them at 0 or "-".
H2_N=0 H2_R=0 BS1K=0 BIG=0 IPERF_1S=0 SHAZ_BUILD=0 SHA_RANDOM=0 UP_build=0 UPR_build=- UP_random=0
UPR_random=- HALF=0 MIX_P99=- PEAK=0 PER_BLOB=- BLOBS=0 PEAK_BLOB=- Z_RATIO=- ZSHARE=- BSHARE=-
d_st=-
say() { echo "run.sh: $*" >&2; }
# Problems seen during the run (failed requests, a server that died) go into RESULTS.md too.
note() {
    say "$*"
    [ -n "${work:-}" ] && echo "- $*" >>"$work/notes"
}

if [ "$BUILD" = 1 ]; then
    ./scripts/deps.sh perf || exit 1
    cmake --preset release >/dev/null || exit 1
    cmake --build build/release -j"$NCPU" --target ringcas cpu_raw ring_pingpong uring_micro blob_bench \
        >/dev/null || exit 1
fi
for t in nginx nghttpd h2load wrk iperf3 fio curl; do
    command -v $t >/dev/null || { echo "missing $t: ./scripts/deps.sh perf" >&2; exit 1; }
done

. perf/lib.sh
perf_init
T0=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# Free room where the stores live: a store's budget follows its disk (docs/storage.md), so a
# nearly full disk makes the stores evict during the run and changes what is measured.
free_gib() { df -P -k "$1" | awk 'NR == 2 { printf "%.1f GiB free of %.0f GiB", $4 / 1048576, $2 / 1048576 }'; }
ROOM_START=$(free_gib /tmp)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
MD="$work/md"
mkdir -p "$MD"
# Targets: one line per target, "name|anchor|ringcas|ratio|goal|met|note", in order.
TARGETS="$work/targets"
: >"$TARGETS"
target() { echo "$1|$2|$3|$4|$5|$6|$7" >>"$TARGETS"; }
# met RATIO GOAL [le]: "met" when RATIO >= GOAL (or <= with le).
met() {
    awk -v r="$1" -v g="$2" -v le="${3:-}" 'BEGIN {
        if (r == "-" || r == "") { print "not measured"; exit }
        if (le != "") print (r + 0 <= g + 0) ? "**met**" : "missed"; else print (r + 0 >= g + 0) ? "**met**" : "missed" }'
}
RC="$PERF_BIN"
BENCH_BASE="--timeout 60s --no-histogram --json"

# Why a bench run failed: its errors by status and first error, or its last stderr line.
bench_why() {
    jget "$1" '"%s, first: %s" % (r["errors_by_status"], r["first_error"])' 2>/dev/null ||
        tail -1 "$1.err" 2>/dev/null
}

# rc_check SECTION: when the main server died during SECTION, records it (exit status, the end
# of its log) and starts a fresh one so the next sections still run.
rc_check() {
    kill -0 "$rc_pid" 2>/dev/null && return 0
    wait "$rc_pid" 2>/dev/null
    _st=$?
    _sig=""
    [ "$_st" -gt 128 ] && _sig=" (signal $((_st - 128)))"
    note "the server died during **$1**: exit status $_st$_sig; log: $(tail -3 "$work/rc.log" | tr '\n' ' ')"
    cp "$work/rc.log" "$work/rc-died-$1.log" 2>/dev/null
    ringcas_start rc "$work/rc-after-$1" --cores 2 --max-size 16GiB
}

# bench OUT ARGS...: ringcas bench with JSON into OUT (stderr into OUT.err); 0 on success.
bench() {
    _out=$1
    shift
    "$RC" bench $BENCH_BASE "$@" >"$_out" 2>"$_out.err"
    _rc=$?
    if [ $_rc -ne 0 ]; then
        note "\`ringcas bench $*\` exited $_rc: $(bench_why "$_out")"
    fi
    return $_rc
}

# bench_cpu PID WARMUP_S DURATION_S OUT ARGS...: runs ringcas bench in the background and
# reads PID's CPU ticks at the start and the end of its measured window; prints the server's
# CPU seconds inside the window.
bench_cpu() {
    _pid=$1; _warm=$2; _dur=$3; _out=$4
    shift 4
    "$RC" bench $BENCH_BASE --warmup "${_warm}s" --duration "${_dur}s" "$@" >"$_out" 2>"$_out.err" &
    _b=$!
    bench_wait_window "$_out.err" $_b || true
    sleep "$_warm"
    sleep 0.02
    _t0=$(cpu_ticks "$_pid")
    sleep "$_dur"
    _t1=$(cpu_ticks "$_pid")
    wait $_b || note "\`ringcas bench $*\` exited $?: $(bench_why "$_out")"
    ticks_to_s "$_t0" "$_t1"
}

# Blobs for the HTTP and gRPC comparisons: the same bytes for every server.
mkdir -p "$work/www" "$work/blobs"
make_blob() { # NAME BYTES random|build
    if [ "$3" = random ]; then
        head -c "$2" /dev/urandom >"$work/blobs/$1"
    else
        find /usr/lib/x86_64-linux-gnu /usr/include -type f -size +0 2>/dev/null | sort |
            xargs cat 2>/dev/null | head -c "$2" >"$work/blobs/$1"
    fi
    sha256sum "$work/blobs/$1" | cut -d' ' -f1 >"$work/blobs/$1.sha"
}
# put_blob PORT NAME: uploads blob NAME to ringcas over HTTP (the CAS is shared with gRPC).
put_blob() {
    _code=$(curl -s -o /dev/null -w '%{http_code}' -T "$work/blobs/$2" \
        "http://127.0.0.1:$1/cas/$(cat "$work/blobs/$2.sha")")
    case "$_code" in 200 | 201) return 0 ;; esac
    say "upload of $2: HTTP $_code"
    return 1
}
# read_body NAME OUT [compressed]: the framed gRPC ReadRequest for blob NAME.
read_body() {
    /usr/bin/python3 - "$(cat "$work/blobs/$1.sha")" "$(stat -c %s "$work/blobs/$1")" "$2" "${3:-}" <<'PY'
import struct, sys
h, size, out, comp = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
name = ("compressed-blobs/zstd/%s/%d" if comp else "blobs/%s/%d") % (h, size)
def varint(v):
    b = b""
    while v >= 0x80:
        b += bytes([v & 0x7F | 0x80]); v >>= 7
    return b + bytes([v])
msg = b"\x0a" + varint(len(name)) + name.encode()
open(out, "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)
PY
}
GRPC_H="-H content-type:application/grpc -H te:trailers"
GRPC_READ=/google.bytestream.ByteStream/Read

# ---- limits ----

limits() {
    say "limits: iperf3, SHA-256 and zstd, fio"
    iport=$(free_port)
    iperf3 -s -p "$iport" >/dev/null 2>&1 &
    ipid=$!
    perf_track $ipid
    sleep 0.3
    IPERF1=$(iperf3 -c 127.0.0.1 -p "$iport" -t "$S" -J |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8)')
    IPERF2=$(iperf3 -c 127.0.0.1 -p "$iport" -t "$S" -P 2 -J |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8)')
    perf_stop $ipid
    build/release/perf/cpu_raw 80 >"$work/cpu_raw.txt"
    kv() { sed -n "s/.*corpus=$1 .* $2=\([^ ]*\).*/\1/p" "$work/cpu_raw.txt"; }
    SHA_BUILD=$(kv build sha256_mbps); ZSTD_BUILD=$(kv build zstd_mbps)
    SHAZ_BUILD=$(kv build sha256_zstd_mbps); STORED_BUILD=$(kv build stored_ratio)
    SHA_RANDOM=$(kv random sha256_mbps); ZSTD_RANDOM=$(kv random zstd_mbps)
    SHAZ_RANDOM=$(kv random sha256_zstd_mbps)
    fdir=/var/tmp/ringcas-perf-fio
    mkdir -p "$fdir"
    fio_one() { # NAME ARGS...: prints "MB/s IOPS p99-µs"
        _n=$1
        shift
        fio --name="$_n" --directory="$fdir" --ioengine=io_uring --size=1g --runtime="$S" \
            --time_based --output-format=json "$@" 2>/dev/null |
            /usr/bin/python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
d = j["write"] if j["write"]["io_bytes"] else j["read"]
p = d.get("clat_ns", {}).get("percentile", {}).get("99.000000", 0)
print("%.0f %.0f %.0f" % (d["bw_bytes"] / 1e6, d["iops"], p / 1e3))'
    }
    FIO_SW=$(fio_one seqwrite --rw=write --bs=1m --iodepth=8 --direct=1)
    FIO_SR=$(fio_one seqread --rw=read --bs=1m --iodepth=8 --direct=1)
    FIO_RR=$(fio_one randread --rw=randread --bs=4k --iodepth=32 --direct=1)
    FIO_FS=$(fio_one fsync4k --rw=write --bs=4k --iodepth=1 --fdatasync=1)
    rm -rf "$fdir"
    {
        echo "## Limits of this machine"
        echo
        echo "| what | figure |"
        echo "|---|---|"
        awk -v a="$IPERF1" -v b="$IPERF2" 'BEGIN {
            printf "| iperf3 loopback, one stream | %.2f GB/s (%.1f Gbit/s) |\n", a / 1e9, a * 8 / 1e9
            printf "| iperf3 loopback, two streams | %.2f GB/s |\n", b / 1e9 }'
        echo "| SHA-256 (OpenSSL EVP), build-output bytes / random bytes, one core | $SHA_BUILD / $SHA_RANDOM MB/s |"
        echo "| zstd -1 in 256 KiB chunks, build-output / random | $ZSTD_BUILD / $ZSTD_RANDOM MB/s (stored/raw $STORED_BUILD / 1.000) |"
        echo "| SHA-256 + zstd -1 (the ingest CPU limit), build-output / random | $SHAZ_BUILD / $SHAZ_RANDOM MB/s per core |"
        set -- $FIO_SW; echo "| fio io_uring, sequential write 1 MiB, O_DIRECT, QD8 | $1 MB/s |"
        set -- $FIO_SR; echo "| fio io_uring, sequential read 1 MiB, O_DIRECT, QD8 | $1 MB/s |"
        set -- $FIO_RR; echo "| fio io_uring, random read 4 KiB, O_DIRECT, QD32 | $2 IOPS, p99 $3 µs |"
        set -- $FIO_FS; echo "| fio io_uring, 4 KiB write + fdatasync, QD1 | $2 commits/s, p99 $3 µs |"
        echo
        echo "The bytes: \`perf/cpu_raw 80\` fills the same 80 MiB pool \`ringcas bench --data build|random\`"
        echo "cuts its 64 MiB uploads from (files under /usr/lib/x86_64-linux-gnu and /usr/include; xorshift)."
        echo
    } >"$MD/10-limits.md"
}

# ---- HTTP/1.1 ----

http_wrk() {
    say "HTTP/1.1: perf/http.sh (wrk) beside nginx"
    perf/http.sh --seconds "$S" --runs "$ROUNDS" >"$work/http.txt" 2>"$work/http.err" ||
        say "perf/http.sh failed: $(tail -3 "$work/http.err")"
    row() { grep "^| $1 |" "$work/http.txt" | head -1; }
    col() { row "$1" | awk -F'|' -v c="$2" '{ gsub(/ /, "", $c); print $c }'; }
    WRK_GET1K_N=$(col "GET 1k" 3); WRK_GET1K_R=$(col "GET 1k" 4)
    WRK_GET4M_N=$(col "GET 4m" 5); WRK_GET4M_R=$(col "GET 4m" 6)
    WRK_PUT64K_N=$(col "PUT 64k" 5); WRK_PUT64K_R=$(col "PUT 64k" 6)
    {
        echo "## HTTP/1.1 beside nginx"
        echo
        echo "### wrk (\`perf/http.sh --seconds $S --runs $ROUNDS\`)"
        echo
        echo "wrk \`-t2 -c64\` on the same 2 CPUs as both servers; ringcas \`--cores 2 --sync group\`"
        echo "(\`GET /cas/<sha256>\`; \`PUT /cas/<sha256>\` verified, compressed, group-committed);"
        echo "nginx-light, 2 workers, the same bytes as static files (\`sendfile on\`) and WebDAV \`PUT\`."
        echo "Random bytes. Medians of the rounds; CPU µs/req is the server's own CPU per request."
        echo
        sed -n '/^| load/,$p' "$work/http.txt"
        echo
    } >"$MD/20-http.md"
}

http_bench() {
    say "HTTP/1.1: ringcas bench beside nginx"
    for spec in 1k:1024 64k:65536 4m:4194304; do
        name=${spec%%:*}; bytes=${spec#*:}
        make_blob "h$name" "$bytes" random
        cp "$work/blobs/h$name" "$work/www/h$name"
        chmod 644 "$work/www/h$name"
    done
    {
        echo "### ringcas bench as the load generator"
        echo
        echo "\`ringcas bench --threads 2 --concurrency 32\` (64 keep-alive connections), ${S} s after 1 s"
        echo "of warm-up; nginx: \`--path /h1k\` etc. (static) and \`--path /dav\` (WebDAV PUT, 16 files per"
        echo "slot overwritten in turn); ringcas: \`/cas/<sha256>\` (seeded blobs; PUT of new blobs)."
        echo
        echo "| load | nginx req/s | ringcas req/s | nginx MB/s | ringcas MB/s | ringcas / nginx | nginx p99 | ringcas p99 | nginx CPU µs/req | ringcas CPU µs/req | errors n/r |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|"
    } >"$MD/21-http-bench.md"
    hb_row() { # LABEL NGINX_JSON NGINX_CPU RINGCAS_JSON RINGCAS_CPU
        /usr/bin/python3 - "$@" >>"$MD/21-http-bench.md" <<'PY'
import json, sys
l, nf, nc, rf, rc = sys.argv[1:6]
try:
    n, r = json.load(open(nf)), json.load(open(rf))
except (OSError, ValueError):
    print("| %s | failed (see the problems above) | | | | | | | | | |" % l)
    sys.exit(0)
def cpu(j, c):
    return float(c) * 1e6 / j["requests"] if j["requests"] else 0
print("| %s | %.0f | %.0f | %.1f | %.1f | %.2f | %.2f ms | %.2f ms | %.1f | %.1f | %d/%d |" % (
    l, n["requests_per_s"], r["requests_per_s"], n["mb_per_s"], r["mb_per_s"],
    r["requests_per_s"] / n["requests_per_s"] if n["requests_per_s"] else 0,
    n["latency_ns"]["p99"] / 1e6, r["latency_ns"]["p99"] / 1e6, cpu(n, nc), cpu(r, rc),
    n["errors"], r["errors"]))
PY
    }
    common="--threads 2 --concurrency 32 --blobs 64"
    for spec in 1k:1024 64k:65536 4m:4194304; do
        name=${spec%%:*}; bytes=${spec#*:}
        nc=$(bench_cpu "$nginx_pid" 1 "$S" "$work/hb-n-$name.json" --server "127.0.0.1:$nginx_port" \
            --workload http-get --path "/h$name" --size "$bytes" $common)
        rc=$(bench_cpu "$rc_pid" 1 "$S" "$work/hb-r-$name.json" --server "127.0.0.1:$rc_port" \
            --workload http-get --size "$bytes" $common)
        hb_row "GET $name" "$work/hb-n-$name.json" "$nc" "$work/hb-r-$name.json" "$rc"
    done
    for spec in 64k:65536 4m:4194304; do
        name=${spec%%:*}; bytes=${spec#*:}
        nc=$(bench_cpu "$nginx_pid" 1 "$S" "$work/hp-n-$name.json" --server "127.0.0.1:$nginx_port" \
            --workload http-put --path /dav --size "$bytes" $common)
        rc=$(bench_cpu "$rc_pid" 1 "$S" "$work/hp-r-$name.json" --server "127.0.0.1:$rc_port" \
            --workload http-put --size "$bytes" $common)
        hb_row "PUT $name" "$work/hp-n-$name.json" "$nc" "$work/hp-r-$name.json" "$rc"
    done
    BGET1K=$(ratio "$(jget "$work/hb-r-1k.json" 'r["requests_per_s"]')" "$(jget "$work/hb-n-1k.json" 'r["requests_per_s"]')")
    BGET4M=$(ratio "$(jget "$work/hb-r-4m.json" 'r["mb_per_s"]')" "$(jget "$work/hb-n-4m.json" 'r["mb_per_s"]')")
    BPUT64K=$(ratio "$(jget "$work/hp-r-64k.json" 'r["mb_per_s"]')" "$(jget "$work/hp-n-64k.json" 'r["mb_per_s"]')")
    echo >>"$MD/21-http-bench.md"
}

# ---- gRPC ----

grpc_script() {
    say "gRPC: perf/grpc.sh (h2load beside nghttpd, one 256 MiB stream beside iperf3)"
    n1k=$([ "$QUICK" = 1 ] && echo 200000 || echo 400000)
    nfind=$([ "$QUICK" = 1 ] && echo 5000 || echo 20000)
    N1K=$n1k NFIND=$nfind ROUNDS=$ROUNDS perf/grpc.sh --seconds "$S" --cores 2 >"$work/grpc.txt" \
        2>"$work/grpc.err" || note "perf/grpc.sh failed: $(tail -3 "$work/grpc.err" | tr '\n' ' ')"
    val() { sed -n "s/^$1 *\([0-9.]*\) .*/\1/p" "$work/grpc.txt" | head -1; }
    H2_N=$(val "nghttpd static 1 KiB"); H2_R=$(val "ringcas ByteStream.Read")
    IPERF_GBS=$(val "iperf3 loopback, 1 stream"); BIG_GBS=$(val "ringcas Read 256 MiB")
    FIND_H2=$(val "ringcas FindMissingBlobs")
    : "${H2_N:=0}" "${H2_R:=0}" "${IPERF_GBS:=0}" "${BIG_GBS:=0}" "${FIND_H2:=0}"
    IPERF_1S=$(awk -v v="$IPERF_GBS" 'BEGIN { print v * 1e9 }')
    BIG=$(awk -v v="$BIG_GBS" 'BEGIN { print v * 1e9 }')
    {
        echo "## gRPC beside nghttpd and iperf3"
        echo
        echo "### perf/grpc.sh (\`N1K=$n1k NFIND=$nfind ROUNDS=$ROUNDS perf/grpc.sh --seconds $S --cores 2\`)"
        echo
        echo "ByteStream.Read of 1 KiB with h2load \`-c64 -m16 -t2\` posting a gRPC-framed ReadRequest, beside"
        echo "nghttpd (\`-n 2\`) serving the same 1 KiB as a static file (ringcas adds a trailer HEADERS"
        echo "frame and a protobuf message per call); one 256 MiB random blob read on one stream"
        echo "(h2load \`-n4 -c1 -m1\`) beside iperf3's one stream; FindMissingBlobs of 1000 digests. Each"
        echo "comparison alternates its two sides; h2load's DATA bytes are checked against every call."
        echo
        echo '```'
        cat "$work/grpc.txt"
        echo '```'
        echo
    } >"$MD/30-grpc.md"
}

grpc_bench() {
    say "gRPC: ringcas bench as the load generator (1 KiB, 256 MiB, FindMissingBlobs)"
    bench "$work/gb1k.json" --server "127.0.0.1:$rc_port" --workload bs-read --size 1KiB \
        --blobs 1024 --threads 2 --conns 4 --concurrency 256 --duration "${S}s" --warmup 1s
    bench "$work/gb256.json" --server "127.0.0.1:$rc_port" --workload bs-read --size 256MiB \
        --blobs 1 --threads 1 --conns 1 --concurrency 1 --duration "${S}s" --warmup 1s
    bench "$work/find.json" --server "127.0.0.1:$rc_port" --workload find-missing --batch 1000 \
        --blobs 1000 --threads 2 --conns 2 --concurrency 8 --duration "${S}s" --warmup 1s
    BS1K=$(jget "$work/gb1k.json" 'r["requests_per_s"]' 2>/dev/null || echo 0)
    {
        echo "### ringcas bench as the load generator"
        echo
        echo "Against the suite's server (\`--cores 2\`), ${S} s after 1 s of warm-up, closed loop."
        echo
        echo "| load | req/s | MB/s | p50 | p99 | p99.9 | max | errors |"
        echo "|---|---|---|---|---|---|---|---|"
    } >>"$MD/30-grpc.md"
    for spec in "gb1k:Read 1 KiB, 2 threads × 4 connections, 512 in flight" \
        "gb256:Read 256 MiB, one at a time" "find:FindMissingBlobs 1000 digests (half present), 16 in flight"; do
        f=${spec%%:*}; label=${spec#*:}
        jget "$work/$f.json" '"| %s | %.0f | %.1f | %.2f ms | %.2f ms | %.2f ms | %.2f ms | %d |" % ("'"$label"'", r["requests_per_s"], r["mb_per_s"], r["latency_ns"]["p50"] / 1e6, r["latency_ns"]["p99"] / 1e6, r["latency_ns"]["p999"] / 1e6, r["latency_ns"]["max"] / 1e6, r["errors"])' \
            >>"$MD/30-grpc.md" 2>/dev/null || echo "| $label | failed | | | | | | |" >>"$MD/30-grpc.md"
    done
    echo >>"$MD/30-grpc.md"
}

grpc_compressed() {
    say "gRPC: compressed-blobs reads of a blob stored compressed (server profile, counters)"
    make_blob b256 268435456 build
    put_blob "$rc_port" b256 || return
    read_body b256 "$work/readz.body" compressed
    read_body b256 "$work/readb.body"
    h2load -n 4 -c1 -m1 -t1 $GRPC_H -d "$work/readb.body" \
        "http://127.0.0.1:$rc_port$GRPC_READ" >"$work/rb.txt" 2>&1
    set -- $(h2load_sum "$work/rb.txt"); IDENT_OK=$2; IDENT_BPS=$(awk -v s="$4" -v n="$2" 'BEGIN { printf "%.0f", n * 268435456 / s }')
    m0_in=$(metric_sum "$rc_port" ringcas_blob_bytes_in_total)
    m0_st=$(metric_sum "$rc_port" ringcas_blob_bytes_stored_total)
    m0_rd=$(metric_sum "$rc_port" ringcas_blob_read_bytes_total)
    h2load -n 4 -c1 -m1 -t1 $GRPC_H -d "$work/readz.body" \
        "http://127.0.0.1:$rc_port$GRPC_READ" >"$work/rz.txt" 2>&1
    set -- $(h2load_sum "$work/rz.txt"); Z_OK=$2; Z_WIRE=$(awk -v d="$3" -v s="$4" 'BEGIN { printf "%.0f", d / s }')
    Z_BPS=$(awk -v s="$4" -v n="$2" 'BEGIN { printf "%.0f", n * 268435456 / s }')
    Z_RATIO=$(awk -v d="$3" -v n="$2" 'BEGIN { if (n) printf "%.3f", d / n / 268435456; else print "-" }')
    Z_DATA=$3
    d_in=$(($(metric_sum "$rc_port" ringcas_blob_bytes_in_total) - m0_in))
    d_st=$(($(metric_sum "$rc_port" ringcas_blob_bytes_stored_total) - m0_st))
    d_rd=$(($(metric_sum "$rc_port" ringcas_blob_read_bytes_total) - m0_rd))
    # The server's profile while it serves compressed reads, and while it serves identity ones.
    ( h2load -D "$((PROF_S + 1))" -c1 -m1 -t1 $GRPC_H -d "$work/readz.body" \
        "http://127.0.0.1:$rc_port$GRPC_READ" >/dev/null 2>&1 ) &
    hp=$!
    sleep 0.5
    perf_top "$rc_pid" "$PROF_S" "$work/prof-readz.txt"
    wait $hp
    ZSHARE=$(awk '/libzstd/ { s += $1 } END { printf "%.2f", s + 0 }' "$work/prof-readz.txt.dso")
    ( h2load -D "$((PROF_S + 1))" -c1 -m1 -t1 $GRPC_H -d "$work/readb.body" \
        "http://127.0.0.1:$rc_port$GRPC_READ" >/dev/null 2>&1 ) &
    hp=$!
    sleep 0.5
    perf_top "$rc_pid" "$PROF_S" "$work/prof-readb.txt"
    wait $hp
    BSHARE=$(awk '/libzstd/ { s += $1 } END { printf "%.2f", s + 0 }' "$work/prof-readb.txt.dso")
    {
        echo "### compressed-blobs reads of a blob stored compressed"
        echo
        echo "256 MiB of build-output bytes (files under /usr/lib/x86_64-linux-gnu and /usr/include),"
        echo "uploaded once (stored as zstd frames); h2load \`-n4 -c1 -m1\` (one stream)."
        echo
        echo "| read | calls OK | blob bytes/s | wire bytes / blob bytes |"
        echo "|---|---|---|---|"
        echo "| \`blobs/…\` (identity: the server decompresses) | $IDENT_OK/4 | $(awk -v v="$IDENT_BPS" 'BEGIN { printf "%.2f GB/s", v / 1e9 }') | 1.000 |"
        echo "| \`compressed-blobs/zstd/…\` (stored frames as they are) | $Z_OK/4 | $(awk -v v="$Z_BPS" 'BEGIN { printf "%.2f GB/s", v / 1e9 }') ($(awk -v v="$Z_WIRE" 'BEGIN { printf "%.2f GB/s", v / 1e9 }') on the wire) | $Z_RATIO |"
        echo
        echo "No recompression: during the compressed reads the engine's counters moved by bytes_in +$d_in,"
        echo "bytes_stored +$d_st (nothing compressed or written) and read_bytes +$d_rd (h2load received $Z_DATA"
        echo "DATA bytes); in the server's profile (\`perf record\`, ${PROF_S} s) libzstd took **$ZSHARE %** of the"
        echo "samples, against $BSHARE % while it served the same blob as identity bytes. Hottest symbols:"
        echo
        echo '```'
        cat "$work/prof-readz.txt"
        echo '```'
        echo
        echo "The same blob read as identity bytes (the server decompresses each chunk):"
        echo
        echo '```'
        cat "$work/prof-readb.txt"
        echo '```'
        echo
    } >>"$MD/30-grpc.md"
}

# ---- uploads ----

uploads() {
    say "uploads: 64 MiB blobs, MB per server CPU-second beside the raw cost"
    {
        echo "## Uploads of 64 MiB blobs"
        echo
        echo "ringcas bench \`bs-write --size 64MiB --threads 1 --concurrency 2\` (a new blob per request:"
        echo "SHA-256 verified, zstd -1 per 256 KiB chunk, O_DIRECT, group commit), ${S} s; the server's CPU"
        echo "time is read from /proc at the start and the end of the measured window. Per core ="
        echo "blob bytes per server CPU-second, beside the raw cost of the same bytes on one core."
        echo
        echo "| data | MB/s (wall) | errors | server CPU s | MB per server CPU-s | raw cost, one core CPU-s | ratio | p50 / p99 |"
        echo "|---|---|---|---|---|---|---|---|"
    } >"$MD/40-uploads.md"
    for data in build random; do
        c=$(bench_cpu "$rc_pid" 1 "$S" "$work/up-$data.json" --server "127.0.0.1:$rc_port" \
            --workload bs-write --size 64MiB --data "$data" --threads 1 --conns 1 --concurrency 2)
        mb=$(jget "$work/up-$data.json" 'r["bytes"] / 1e6' 2>/dev/null || echo 0)
        wall=$(jget "$work/up-$data.json" 'r["mb_per_s"]' 2>/dev/null || echo 0)
        lat=$(jget "$work/up-$data.json" '"%.0f / %.0f ms" % (r["latency_ns"]["p50"] / 1e6, r["latency_ns"]["p99"] / 1e6)' 2>/dev/null || echo -)
        errs=$(jget "$work/up-$data.json" 'r["errors"]' 2>/dev/null || echo -)
        per=$(awk -v m="$mb" -v c="$c" 'BEGIN { if (c > 0) printf "%.0f", m / c; else print 0 }')
        if [ "$data" = build ]; then raw=$SHAZ_BUILD; what="SHA-256 + zstd"; else raw=$SHA_RANDOM; what="SHA-256"; fi
        r=$(ratio "$per" "$raw")
        echo "| $data | $(printf %.0f "$wall") | $errs | $c | $per | $raw MB/s ($what) | $r | $lat |" >>"$MD/40-uploads.md"
        eval "UP_$data=\$per UPR_$data=\$r"
    done
    echo >>"$MD/40-uploads.md"
}

# ---- build mix ----

mix() {
    say "build mix: peak, then open loop at 50 %"
    m="--server 127.0.0.1:$rc_port --workload mix --data build --mix-actions $MIX_ACTIONS --threads 2 --conns 2"
    bench "$work/mix-peak.json" $m --concurrency 32 --duration "${S}s" --warmup 1s
    PEAK=$(jget "$work/mix-peak.json" 'r["arrivals_per_s"]' 2>/dev/null || echo 0)
    HALF=$(awk -v p="$PEAK" 'BEGIN { printf "%.0f", p / 2 }')
    [ "$HALF" -ge 2 ] || HALF=2
    bench "$work/mix-half.json" $m --concurrency 128 --rate "$HALF" --duration "$((S * 2))s" --warmup 2s
    MIX_P99=$(jget "$work/mix-half.json" '"%.2f" % (r["small_latency_ns"]["p99"] / 1e6)' 2>/dev/null || echo -)
    # Where the tail comes from (full run): a lighter load, and the same load without writes.
    extra=""
    if [ "$QUICK" = 0 ]; then
        tenth=$(awk -v p="$PEAK" 'BEGIN { v = p / 10; printf "%.0f", v < 2 ? 2 : v }')
        bench "$work/mix-tenth.json" $m --concurrency 128 --rate "$tenth" --duration "${S}s" --warmup 2s
        bench "$work/mix-hits.json" $m --mix-hit 100 --concurrency 128 --rate "$HALF" \
            --duration "${S}s" --warmup 2s
        extra="$work/mix-tenth.json $work/mix-hits.json"
    fi
    /usr/bin/python3 - "$work/mix-peak.json" "$work/mix-half.json" "$PEAK" $extra >"$MD/50-mix.md" <<'PY'
import json, sys
print("## Build mix")
print()
try:
    peak, half, rate = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
except (OSError, ValueError):
    print("Failed: see the problems above.")
    print()
    sys.exit(0)
print("`ringcas bench --workload mix --data build` (docs/bench.md: sizes from the files under /usr/lib")
print("and /usr/include, 80 % action-cache hits, FindMissingBlobs before uploads, blobs up to 64 KiB in")
print("batch calls), 2 threads. Peak: closed loop, 2 × 32 actions in flight. Then open loop at half")
print("the peak rate, latency from each action's due time (no coordinated omission).")
print()
print("| run | actions/s | late arrivals | errors | small-blob requests | p50 | p99 | p99.9 | max |")
print("|---|---|---|---|---|---|---|---|---|")
runs = [("peak (closed loop)", peak), ("50 %% of peak (open loop, %.0f/s)" % (rate / 2), half)]
if len(sys.argv) > 5:
    try:
        runs.append(("10 %% of peak (open loop, %.0f/s)" % (rate / 10), json.load(open(sys.argv[4]))))
        runs.append(("50 % of peak, hits only: no writes (open loop)", json.load(open(sys.argv[5]))))
    except (OSError, ValueError):
        pass
for name, r in runs:
    s = r["small_latency_ns"]
    print("| %s | %.0f | %d | %d | %d | %.2f ms | %.2f ms | %.2f ms | %.2f ms |" % (
        name, r["arrivals_per_s"], r["arrivals_late"], r["errors"], s["count"], s["p50"] / 1e6,
        s["p99"] / 1e6, s["p999"] / 1e6, s["max"] / 1e6))
print()
for name, r in runs[1:]:
    print("Per request kind, %s:" % name)
    print()
    print("| request | ok/s | MB/s | p50 | p99 | p99.9 | max |")
    print("|---|---|---|---|---|---|---|")
    for k, o in r["ops"].items():
        l = o["latency_ns"]
        print("| %s | %.0f | %.1f | %.2f ms | %.2f ms | %.2f ms | %.2f ms |" % (
            k, o["requests_per_s"], o["mb_per_s"], l["p50"] / 1e6, l["p99"] / 1e6,
            l["p999"] / 1e6, l["max"] / 1e6))
    print()
PY
}

# ---- memory ----

memory() {
    say "memory: $MEM_BLOBS indexed blobs"
    mdir=/var/tmp/ringcas-perf-mem
    rm -rf "$mdir" "$mdir-empty"
    mkdir -p "$mdir" "$mdir-empty"
    build/release/perf/blob_bench restart "$mdir" "$MEM_BLOBS" >"$work/mem.txt" 2>/dev/null
    ringcas_start mem0 "$mdir-empty" --cores 2 --max-size 64GiB
    sleep 0.5
    E_RSS=$(rss_kb "$mem0_pid")
    perf_stop "$mem0_pid"
    t0=$(date +%s.%N)
    ringcas_start mem1 "$mdir" --cores 2 --max-size 64GiB
    t1=$(date +%s.%N)
    sleep 0.5
    F_RSS=$(rss_kb "$mem1_pid"); F_HWM=$(hwm_kb "$mem1_pid")
    BLOBS=$(curl -s "http://127.0.0.1:$mem1_port/metrics" | awk '/^ringcas_store_blobs/ { s += $2 } END { print s + 0 }')
    # Fewer than were written: the store evicted (its budget follows the disk's free room).
    MEM_NOTE=""
    [ "$BLOBS" -lt "$MEM_BLOBS" ] &&
        MEM_NOTE="only $BLOBS of $MEM_BLOBS blobs indexed: the store evicted ($(free_gib "$mdir") at the time; docs/storage.md \"The budget follows the disk\")"
    perf_stop "$mem1_pid"
    rm -rf "$mdir" "$mdir-empty"
    PER_BLOB=$(awk -v e="$E_RSS" -v f="$F_RSS" -v n="$BLOBS" 'BEGIN { if (n) printf "%.1f", (f - e) * 1024 / n; else print "-" }')
    PEAK_BLOB=$(awk -v e="$E_RSS" -v f="$F_HWM" -v n="$BLOBS" 'BEGIN { if (n) printf "%.1f", (f - e) * 1024 / n; else print "-" }')
    {
        echo "## Resident memory per indexed blob"
        echo
        echo "\`blob_bench restart\` writes $MEM_BLOBS small blobs as sealed segments; \`ringcas serve --cores 2\` opens"
        echo "them (start to ready: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f s", b - a }')); VmRSS after start, minus an empty server's."
        echo
        echo "| blobs indexed | empty server RSS | RSS | bytes per blob | peak (VmHWM) bytes per blob during recovery |"
        echo "|---|---|---|---|---|"
        echo "| $BLOBS | $E_RSS KiB | $F_RSS KiB | $PER_BLOB | $PEAK_BLOB |"
        echo
        echo "Engine view (\`blob_bench restart\`, same blobs): $(grep '^restart blobs' "$work/mem.txt" | tail -1)"
        echo
        [ -n "$MEM_NOTE" ] && { echo "Not measured: $MEM_NOTE."; echo; }
    } >"$MD/60-memory.md"
}

# ---- ring and engine ----

ring() {
    say "ring: perf/ring.sh (linked-timeout cost)"
    secs=$([ "$QUICK" = 1 ] && echo 2 || echo 3)
    perf/ring.sh --seconds "$secs" --conns 1,2,16 >"$work/ring.txt" 2>/dev/null
    {
        echo "## The ring on small messages: linked-timeout cost"
        echo
        echo "\`perf/ring.sh --seconds $secs --conns 1,2,16\` (64-byte ping-pong; clients on the same CPUs)."
        echo
        grep '^|' "$work/ring.txt"
        echo
    } >"$MD/70-ring.md"
}

# What each io_uring choice costs (fixed files, linked timeouts, provided and registered
# buffers, O_DIRECT reads) and zero-copy sends against plain ones on loopback.
choices() {
    say "choices: uring_micro (per-op costs), ring_pingpong --stream (SEND_ZC)"
    ops=$([ "$QUICK" = 1 ] && echo 20000 || echo 100000)
    secs=$([ "$QUICK" = 1 ] && echo 1 || echo 3)
    build/release/perf/uring_micro --ops "$ops" --file "$work/uring_micro.dat" \
        >"$work/micro.txt" 2>&1 || note "uring_micro failed: $(tail -1 "$work/micro.txt")"
    rm -f "$work/uring_micro.dat"
    build/release/perf/ring_pingpong --stream --seconds "$secs" >"$work/zc.txt" 2>&1 ||
        note "ring_pingpong --stream failed: $(tail -1 "$work/zc.txt")"
    {
        echo "## io_uring choices: what each costs per operation"
        echo
        echo "\`build/release/perf/uring_micro --ops $ops\` (one thread, one ring with a core's flags;"
        echo "medians of 5). Registered buffers, fixed files and provided-buffer receives have no server"
        echo "flag, so they are measured here, op by op."
        echo
        grep '^|' "$work/micro.txt"
        echo
        echo "\`build/release/perf/ring_pingpong --stream --seconds $secs\` (one core; SEND_ZC for sends of"
        echo "64 KiB and more against plain sendmsg, 64 MiB transfers on loopback)."
        echo
        grep '^|' "$work/zc.txt"
        echo
    } >"$MD/72-choices.md"
}

engine() {
    [ "$QUICK" = 1 ] && return
    say "engine: perf/blob_bench.sh (ingest vs raw, O_DIRECT, chunk size, zstd level, commits)"
    perf/blob_bench.sh /var/tmp/ringcas-perf-engine 3 >"$work/engine.txt" 2>&1
    rm -rf /var/tmp/ringcas-perf-engine
    {
        echo "## Storage engine (\`perf/blob_bench.sh /var/tmp/ringcas-perf-engine 3\`)"
        echo
        echo "The engine alone (no network): ingest beside the raw SHA-256 + zstd cost in the same thread,"
        echo "O_DIRECT versus buffered segment writes, chunk size and zstd level, commits per second by"
        echo "concurrency, restart time and index memory; medians of 3."
        echo
        echo '```'
        cat "$work/engine.txt"
        echo '```'
        echo
    } >"$MD/75-engine.md"
}

# ---- scaling ----

scaling() {
    say "scaling: server cores $CORES_LIST"
    {
        echo "## Scaling with server cores (\`perf/scaling.sh --cores $CORES_LIST --seconds $S\`)"
        echo
        echo "\`ringcas serve --cores N\` on CPUs 0..N-1, ringcas bench on the CPUs left (or sharing all of"
        echo "them when fewer than 4 are left), the same connections for every N. A 16-CPU machine's run,"
        echo "with the server's CPU per request by core count: perf/SCALING.md."
        echo
        RINGCAS_BIN=$RC perf/scaling.sh --cores "$CORES_LIST" --seconds "$S" \
            --workloads "bs-read:1KiB http-get:1KiB" 2>&1
        echo
    } >"$MD/80-scaling.md"
}

# ---- profiles ----

profile_load() { # NAME TITLE BENCH-ARGS...: the server's hottest symbols under a load
    _n=$1; _t=$2
    shift 2
    "$RC" bench --no-histogram --server "127.0.0.1:$rc_port" --warmup 1s \
        --duration "$((PROF_S + 1))s" "$@" >/dev/null 2>"$work/prof-$_n.err" &
    _b=$!
    # Past the seeding and the warm-up: record the load itself.
    bench_wait_window "$work/prof-$_n.err" $_b || true
    sleep 1.2
    perf_top "$rc_pid" "$PROF_S" "$work/prof-$_n.txt"
    wait $_b
    {
        echo "### $_t"
        echo
        echo '```'
        cat "$work/prof-$_n.txt"
        echo '```'
        echo
    } >>"$MD/90-profiles.md"
}

profiles() {
    say "profiles: perf record of the server"
    {
        echo "## Profiles of the server"
        echo
        echo "\`perf record -p <ringcas>\` for ${PROF_S} s under each load (ringcas bench, 2 threads), self"
        echo "time by symbol, hottest first; Debian's libzstd, libcrypto and libxxhash carry no symbols, so"
        echo "their samples are summed per library. docs/performance.md reads them."
        echo
    } >"$MD/90-profiles.md"
    profile_load get1k "HTTP GET 1 KiB (64 connections)" --workload http-get --size 1KiB \
        --threads 2 --concurrency 32
    profile_load get4m "HTTP GET 4 MiB (64 connections)" --workload http-get --size 4MiB \
        --blobs 16 --threads 2 --concurrency 32
    profile_load put64k "HTTP PUT 64 KiB (64 connections)" --workload http-put --size 64KiB \
        --threads 2 --concurrency 32
    profile_load read1k "gRPC ByteStream.Read 1 KiB (2 × 4 connections, 512 in flight)" \
        --workload bs-read --size 1KiB --threads 2 --conns 4 --concurrency 256
    profile_load uprandom "ByteStream.Write of 64 MiB random blobs" --workload bs-write \
        --size 64MiB --data random --threads 1 --concurrency 2
    profile_load upbuild "ByteStream.Write of 64 MiB build-output blobs" --workload bs-write \
        --size 64MiB --data build --threads 1 --concurrency 2
    [ "$HALF" -gt 0 ] && profile_load mix "Build mix at 50 % of peak ($HALF actions/s, open loop)" \
        --workload mix --data build --mix-actions "$MIX_ACTIONS" --threads 2 --conns 2 \
        --concurrency 128 --rate "$HALF"
}

# ---- the run ----

# PERF_ONLY="grpc_bench uploads" runs only those sections (debugging the suite).
only() { [ -z "${PERF_ONLY:-}" ] || echo " $PERF_ONLY " | grep -q " $1 "; }
only limits && limits
only http_wrk && http_wrk
only grpc_script && grpc_script
nginx_start
ringcas_start rc "$work/rc" --cores 2 --max-size 16GiB
only http_bench && http_bench
rc_check http_bench
perf_stop "$nginx_pid"
GRPC_OK=1
if ! "$RC" bench $BENCH_BASE --server "127.0.0.1:$rc_port" --workload bs-write --duration 300ms \
    --warmup 0s --concurrency 1 >/dev/null 2>"$work/probe.err"; then
    GRPC_OK=0
    say "the server does not serve ByteStream: gRPC, upload and mix sections skipped ($(tail -1 "$work/probe.err"))"
fi
if [ "$GRPC_OK" = 1 ]; then
    only grpc_bench && grpc_bench
    rc_check grpc_bench
    only grpc_compressed && grpc_compressed
    rc_check grpc_compressed
    only uploads && uploads
    rc_check uploads
    only mix && mix
    rc_check mix
else
    {
        echo "## gRPC, uploads and the build mix"
        echo
        echo "Not run: this build's server does not serve the REAPI storage services yet"
        echo "($(tail -1 "$work/probe.err"))."
        echo
    } >"$MD/30-grpc.md"
fi
only profiles && profiles
rc_check profiles
perf_stop "$rc_pid"
only memory && memory
only ring && ring
only choices && choices
only engine && engine
only scaling && scaling

# ---- targets and the file ----

mk() { [ -n "${1:-}" ] && echo "$1" || echo "-"; }
t_get1k=$(ratio "${WRK_GET1K_R:-0}" "${WRK_GET1K_N:-0}")
target "HTTP/1.1 GET 1 KiB, 64 conns, req/s (wrk)" "nginx $(mk "${WRK_GET1K_N:-}")" "$(mk "${WRK_GET1K_R:-}")" "$t_get1k" "≥ 1.5" "$(met "$t_get1k" 1.5)" "ringcas bench: ${BGET1K:--}×"
t_get4m=$(ratio "${WRK_GET4M_R:-0}" "${WRK_GET4M_N:-0}")
target "HTTP/1.1 GET 4 MiB, MB/s (wrk)" "nginx $(mk "${WRK_GET4M_N:-}")" "$(mk "${WRK_GET4M_R:-}")" "$t_get4m" "≥ 1.0" "$(met "$t_get4m" 1.0)" "ringcas bench: ${BGET4M:--}×"
t_put=$(ratio "${WRK_PUT64K_R:-0}" "${WRK_PUT64K_N:-0}")
target "HTTP/1.1 PUT 64 KiB, MB/s (wrk; verified, compressed, group commit)" "nginx WebDAV $(mk "${WRK_PUT64K_N:-}")" "$(mk "${WRK_PUT64K_R:-}")" "$t_put" "≥ 1.0" "$(met "$t_put" 1.0)" "ringcas bench: ${BPUT64K:--}×"
if [ "$GRPC_OK" = 1 ]; then
    t_1k=$(ratio "$H2_R" "$H2_N")
    target "gRPC ByteStream.Read 1 KiB, h2load -c64 -m16, req/s (perf/grpc.sh)" "nghttpd $(printf %.0f "$H2_N")" "$(printf %.0f "$H2_R")" "$t_1k" "≥ 1.0" "$(met "$t_1k" 1.0)" "ringcas bench: $(printf %.0f "$BS1K") req/s"
    t_256=$(ratio "$BIG" "$IPERF_1S")
    target "ByteStream.Read 256 MiB random, one stream (perf/grpc.sh)" "iperf3 $(awk -v v="$IPERF_1S" 'BEGIN { printf "%.2f GB/s", v / 1e9 }')" "$(awk -v v="$BIG" 'BEGIN { printf "%.2f GB/s", v / 1e9 }')" "$t_256" "≥ 0.7" "$(met "$t_256" 0.7)" ""
    zc=$(met "${ZSHARE:--}" 0.5 le)
    target "compressed-blobs read of a blob stored compressed: no recompression" "-" "libzstd ${ZSHARE:-?} % of server samples (identity read: ${BSHARE:-?} %)" "-" "≈ 0 %" "$zc" "wire/blob bytes ${Z_RATIO:--}, bytes stored +${d_st:-?}"
    target "upload 64 MiB build-output blobs, MB per server CPU-s" "SHA-256+zstd $SHAZ_BUILD MB/s" "$UP_build" "$UPR_build" "≥ 0.8" "$(met "$UPR_build" 0.8)" ""
    target "upload 64 MiB random blobs, MB per server CPU-s" "SHA-256 $SHA_RANDOM MB/s" "$UP_random" "$UPR_random" "≥ 0.8" "$(met "$UPR_random" 0.8)" ""
    target "build mix at 50 % of peak ($HALF actions/s): p99 of blobs < 64 KiB" "-" "$MIX_P99 ms" "-" "< 2 ms" "$(met "$MIX_P99" 2 le)" "peak $(printf %.0f "$PEAK") actions/s"
else
    target "gRPC, uploads, build mix" "-" "-" "-" "-" "not measured" "server without the storage services"
fi
target "resident memory with $BLOBS indexed blobs, bytes/blob" "-" "$PER_BLOB" "-" "≤ 64" "$(met "$PER_BLOB" 64 le)" "peak during recovery $PEAK_BLOB${MEM_NOTE:+; $MEM_NOTE}"
target "scaling 1 → 16 cores on reads" "-" "-" "-" "≥ 12×" "not measured here" "$NCPU CPUs here; on 16 CPUs (perf/SCALING.md) 1 → 8 cores gave 8.0× (HTTP GET 1 KiB), 16 needs a second machine for the load generator"

T1=$(date +%s)
{
    echo "# Benchmark results"
    echo
    echo "Generated by \`$COMMAND\` on $DATE in $((T1 - T0)) s, on $(machine_desc)."
    echo "Load average at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Disk under /tmp and /var/tmp (the stores): at the start $ROOM_START, at the end $(free_gib /tmp)."
    echo "Commit: $COMMIT. Every number below was measured in"
    echo "this run, side by side with its anchor; the machine is shared and noisy, so compare figures"
    echo "within a table. This file is rewritten by each run: the analyses (causes of the gaps,"
    echo "what to tune) are in [docs/performance.md](../docs/performance.md)."
    echo
    echo "## Targets (issue 6)"
    echo
    echo "| target | anchor | ringcas | ratio | goal | result | note |"
    echo "|---|---|---|---|---|---|---|"
    awk -F'|' '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7 }' "$TARGETS"
    echo
    if [ -s "$work/notes" ]; then
        echo "## Problems seen in this run"
        echo
        cat "$work/notes"
        echo
    fi
    for f in "$MD"/*.md; do
        cat "$f"
    done
    echo "## Where the choices are measured"
    echo
    echo "The linked-timeout cost: the ring section (perf/ring.sh) and uring_micro; registered"
    echo "buffers, fixed files, provided-buffer receives and O_DIRECT reads: uring_micro; SEND_ZC:"
    echo "ring_pingpong --stream; O_DIRECT versus buffered segment writes, chunk size and zstd level:"
    echo "the engine suite (full run only). What each measurement decided is in docs/performance.md."
} >"$OUT"
say "wrote $OUT in $((T1 - T0)) s"
