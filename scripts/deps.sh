#!/bin/sh
# Installs what ringcas needs to build, test and benchmark on Debian 12.
# Idempotent: installs only the packages that are missing, so `make run` can call it every time.
set -eu

BUILD="cmake make gcc clang clang-format clang-tidy libclang-rt-14-dev pkg-config
liburing-dev libzstd-dev libprotobuf-c-dev protobuf-c-compiler libxxhash-dev
libcriterion-dev libnghttp2-dev libssl-dev"
TEST="python3 python3-grpcio python3-protobuf python3-zstandard python3-yaml python3-pyflakes curl ccache
nghttp2-client bazel-bootstrap gradle procps psmisc prometheus xfsprogs btrfs-progs
nginx-light libnetty-tcnative-jni openssl"
PERF="nghttp2-server nghttp2-client wrk iperf3 fio linux-perf liburcu-dev libck-dev"

case "${1:-build}" in
build) want="$BUILD" ;;
test) want="$BUILD $TEST" ;;
perf) want="$BUILD $TEST $PERF" ;;
*) echo "usage: $0 [build|test|perf]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "deps: installing$missing" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
# nginx would start a service on port 80 on install; perf/ and tests/integration/test_proxy.py
# start their own instances.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
