# Shell helpers the benchmark scripts share (perf/run.sh, perf/http.sh, ...). Source it from a
# script run at the repository root:  . perf/lib.sh
#
# Servers started through these helpers are remembered and stopped by perf_cleanup (installed
# as the EXIT trap by perf_init). Every helper is POSIX sh.

PERF_BIN=${RINGCAS_BIN:-build/release/src/ringcas}
PERF_PIDS=""
work=""

# Creates the scratch folder $work and installs the cleanup trap.
perf_init() {
    work=$(mktemp -d /tmp/ringcas-perf.XXXXXX)
    chmod 755 "$work"
    trap perf_cleanup EXIT
    trap 'exit 130' INT TERM
}

perf_cleanup() {
    # `|| true`: scripts run under set -e, and a tracked process may have exited already.
    for p in $PERF_PIDS; do
        kill "$p" 2>/dev/null || true
    done
    for p in $PERF_PIDS; do
        wait "$p" 2>/dev/null || true
    done
    PERF_PIDS=""
    # PERF_KEEP=1 keeps the scratch folder (servers' logs, JSON reports) for a post-mortem.
    if [ -n "$work" ] && [ "${PERF_KEEP:-0}" != 1 ]; then
        rm -rf "$work"
    elif [ -n "$work" ]; then
        echo "perf: kept $work" >&2
    fi
}

# Remembers a background process so perf_cleanup stops it.
perf_track() { PERF_PIDS="$PERF_PIDS $1"; }

# Stops one process started by the helpers and forgets it.
perf_stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    PERF_PIDS=$(echo "$PERF_PIDS" | tr ' ' '\n' | grep -vx "$1" | tr '\n' ' ')
}

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls URL until it answers (10 s at most); fails otherwise.
wait_http() {
    for _ in $(seq 200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.05
    done
    echo "perf: $1 never answered" >&2
    return 1
}

# ringcas_start NAME DIR ARGS...: `ringcas serve` on a free port with data in DIR; sets
# NAME_pid and NAME_port. Its log is $work/NAME.log.
ringcas_start() {
    _name=$1
    _dir=$2
    shift 2
    _port=$(free_port)
    mkdir -p "$_dir"
    "$PERF_BIN" serve --listen "127.0.0.1:$_port" --dir "$_dir" --log-level warn "$@" \
        >"$work/$_name.out" 2>"$work/$_name.log" &
    _pid=$!
    perf_track "$_pid"
    eval "${_name}_pid=$_pid ${_name}_port=$_port"
    wait_http "http://127.0.0.1:$_port/readyz"
}

# nginx_start: nginx-light with 2 workers serving $work/www (sendfile) and WebDAV PUT under
# /dav/; sets nginx_pid and nginx_port.
nginx_start() {
    mkdir -p "$work/www/dav" "$work/nginx-tmp"
    # nginx's workers drop to an unprivileged user when started as root.
    chmod 755 "$work/www"
    chmod 777 "$work/www/dav" "$work/nginx-tmp"
    nginx_port=$(free_port)
    cat >"$work/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx-tmp;
    proxy_temp_path $work/nginx-tmp;
    fastcgi_temp_path $work/nginx-tmp;
    uwsgi_temp_path $work/nginx-tmp;
    scgi_temp_path $work/nginx-tmp;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/www;
        location /dav/ {
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
            client_body_buffer_size 1m;
        }
    }
}
EOF
    nginx -c "$work/nginx.conf" -p "$work" &
    nginx_pid=$!
    perf_track "$nginx_pid"
    wait_http "http://127.0.0.1:$nginx_port/"
}

# nghttpd_start DOCROOT CORES: nghttp2's HTTP/2 server, cleartext; sets nghttpd_pid/_port.
nghttpd_start() {
    nghttpd_port=$(free_port)
    nghttpd -n "$2" --no-tls -d "$1" "$nghttpd_port" >/dev/null 2>&1 &
    nghttpd_pid=$!
    perf_track "$nghttpd_pid"
    for _ in $(seq 100); do
        curl -s --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$nghttpd_port/" && return 0
        sleep 0.05
    done
}

# bench_wait_window ERRFILE PID: returns once ringcas bench (pid PID, its stderr in ERRFILE)
# says its load starts (after its seeding; its warm-up starts 20 ms later), or once it exited,
# or after 60 s.
bench_wait_window() {
    for _ in $(seq 6000); do
        grep -q " for .* s after a " "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.01
    done
    return 1
}

# CPU clock ticks (user + system) of a process and its children (nginx's workers).
cpu_ticks() {
    _t=0
    for _p in $1 $(pgrep -P "$1"); do
        _v=$(awk '{ print $14 + $15 }' "/proc/$_p/stat" 2>/dev/null || echo 0)
        _t=$((_t + _v))
    done
    echo "$_t"
}

# Seconds of CPU between two cpu_ticks readings.
ticks_to_s() { awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", (b - a) / hz }'; }

# Resident memory of a process in KiB (VmRSS), and its peak (VmHWM).
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# The median of the numbers on stdin (one per line or space-separated).
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# ratio A B: A / B with two decimals ("-" when B is 0 or missing).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

# jget FILE EXPR: evaluates a Python expression over the JSON object r read from FILE.
jget() { /usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# The machine in one line.
machine_desc() {
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
    fs=$(df -T /var/tmp | awk 'NR == 2 { print $2 " on " $1 }')
    echo "$(nproc) vCPU $cpu, $mem, Linux $(uname -r), $fs"
}

# perf_top PID SECONDS FILE: records PID's on-CPU samples for SECONDS with perf and writes the
# 12 hottest symbols by self time to FILE (samples in a library without symbols are summed as
# one line per library), the share of each library to FILE.dso and every sampled symbol to
# FILE.all; writes a note instead when perf cannot record.
perf_top() {
    if ! command -v perf >/dev/null; then
        echo "(perf not installed)" | tee "$3.all" "$3.dso" >"$3"
        return 0
    fi
    perf record -q -p "$1" -o "$work/perf.data" -- sleep "$2" >/dev/null 2>&1 || {
        echo "(perf record failed: perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid))" |
            tee "$3.all" "$3.dso" >"$3"
        return 0
    }
    perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' >"$3.all"
    rm -f "$work/perf.data"
    /usr/bin/python3 - "$3" <<'PY'
import collections, re, sys
out = sys.argv[1]
sym = collections.Counter()
dso = collections.Counter()
for line in open(out + ".all"):
    m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$", line)
    if not m:
        continue
    pct, lib, name = float(m.group(1)), m.group(2).strip("[]"), m.group(4)
    name = re.sub(r"(\s+-)+$", "", name)
    dso[lib] += pct
    key = "(%s, no symbols)" % lib if name.startswith("0x") else "%s  [%s]" % (name, lib)
    sym[key] += pct
with open(out, "w") as f:
    for k, v in sym.most_common(12):
        f.write("%6.2f%%  %s\n" % (v, k))
with open(out + ".dso", "w") as f:
    for k, v in dso.most_common():
        f.write("%6.2f%%  %s\n" % (v, k))
PY
}

# metric_sum PORT NAME: the sum over cores of a ringcas counter from GET /metrics.
metric_sum() {
    curl -s "http://127.0.0.1:$1/metrics" |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $2 } END { printf "%.0f\n", s }'
}

# h2load_sum FILE: "req/s succeeded data-bytes seconds" of an h2load run.
h2load_sum() {
    /usr/bin/python3 - "$1" <<'PY'
import re, sys
try:
    t = open(sys.argv[1]).read()
    m = re.search(r"finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", t)
    s = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    ok = re.search(r"requests: .* (\d+) succeeded", t).group(1)
    data = re.search(r"\((\d+)\) data", t).group(1)
    print(m.group(3), ok, data, s)
except (AttributeError, OSError, ValueError):
    print(0, 0, 0, 1)  # h2load did not finish: the server went away
PY
}
