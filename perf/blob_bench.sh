#!/bin/sh
# Storage engine benchmarks (src/blob): builds the release preset and prints the rows of
# perf/RESULTS.md's storage table. Not a test. Usage: perf/blob_bench.sh [DIR] [REPEATS]
# DIR is a scratch folder on the disk to measure (default /var/tmp/ringcas-bench; it is
# emptied between runs). Each ingest figure is the median of REPEATS runs (default 5): the
# machines are shared and noisy, and the raw SHA-256 + zstd cost is measured in the same run,
# blob by blob, interleaved with the ingest, so each ratio compares like with like.
set -eu
cd "$(dirname "$0")/.."
dir=${1:-/var/tmp/ringcas-bench}
reps=${2:-5}
cmake --preset release >/dev/null
cmake --build build/release -j"$(nproc)" --target blob_bench index_libs >/dev/null
bin=build/release/perf/blob_bench
mkdir -p "$dir"
fresh() { rm -rf "$dir"/seg-* "$dir"/*.bad; }

field() { # FILE KEY: the values of KEY=..., one per line, sorted
    sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$1" | sort -n
}

median() { # FILE KEY
    n=$(field "$1" "$2" | wc -l)
    field "$1" "$2" | sed -n "$(( (n + 1) / 2 ))p"
}

median_ingest() { # CORES BLOBS CORPUS DIRECT CHUNK_KIB LEVEL STREAMS
    out=$(mktemp)
    for i in $(seq "$reps"); do
        fresh
        "$bin" ingest "$dir" "$1" "$2" 64 "$3" "$4" "$5" "$6" "$7" 2>/dev/null >>"$out"
    done
    printf 'cores=%s corpus=%s direct=%s chunk_kib=%s level=%s: ingest_mbps_per_core=%s raw_mbps=%s ratio=%s stored_ratio=%s sha_mbps=%s sha_ratio=%s cpu_ratio=%s (medians of %s core-runs)\n' \
        "$1" "$3" "$4" "$5" "$6" "$(median "$out" ingest_mbps)" "$(median "$out" raw_mbps)" \
        "$(median "$out" ratio)" "$(median "$out" stored_ratio)" "$(median "$out" sha_mbps)" \
        "$(median "$out" sha_ratio)" "$(median "$out" cpu_ratio)" "$(wc -l <"$out")"
    rm -f "$out"
}

echo "## ingest, 64 MiB blobs, --sync=group, 256 KiB chunks, zstd -1"
for corpus in build random; do
    median_ingest 1 4 "$corpus" 1 256 1 1
    median_ingest 2 4 "$corpus" 1 256 1 1
done
echo "## O_DIRECT vs buffered segment writes (1 core, random data: the disk shows most)"
median_ingest 1 4 random 1 256 1 1
median_ingest 1 4 random 0 256 1 1
echo "## chunk size and zstd level (1 core, build corpus)"
for chunk in 64 256 1024; do
    for level in 1 3; do
        median_ingest 1 4 build 1 "$chunk" "$level" 1
    done
done
echo "## commits of 1-4 KiB blobs, one core"
for conc in 1 16 64 256; do
    fresh
    "$bin" commits "$dir" 5 "$conc" group 2>/dev/null
done
fresh
"$bin" commits "$dir" 5 64 always 2>/dev/null
echo "## restart"
for n in 1000000 10000000; do
    fresh
    "$bin" restart "$dir" "$n" 2>/dev/null
    "$bin" restart "$dir" "$n" reuse 2>/dev/null
    sync
    if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
        printf 'cold: '
        "$bin" restart "$dir" "$n" reuse 2>/dev/null
    fi
done
fresh
echo "## index memory per entry, candidate tables"
for n in 1000000 4000000; do
    build/release/perf/index_libs "$n"
done
