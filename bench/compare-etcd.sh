#!/usr/bin/env bash
# corekv vs real etcd under the same load, over etcd's v3 gRPC API, on this machine.
#
# Each run starts a fresh etcd (empty temp data dir) alone on the machine, drives it
# with `corekv-bench put --protocol etcd-grpc ...`, stops it, then does the same with
# a fresh corekv; runs alternate etcd/corekv so that drifts in machine load hit both.
# Both sides are durable: etcd fsyncs every commit, corekv acknowledges a write after
# its fsync (no unsafe flag is passed to either). At the end it prints the medians
# (ops/s, p50, p99, server and client CPU seconds per 100k puts) and corekv/etcd ratios.
#
# Usage: bench/compare-etcd.sh [--runs N] [--duration D] [-- extra corekv-bench flags]
#   environment: COREKV (default target/release/corekv), ETCD (default etcd),
#   BENCH (default: corekv-bench next to COREKV), CLIENTS (100), CONNECTIONS (10),
#   THREADS (2), KEY_SIZE (8), VALUE_SIZE (256), TMPDIR (where the data dirs go: keep it
#   on the disk under test, not tmpfs).
# Build first: cargo build --release -p corekv-net -p corekv-bench
#
# Servers are killed on exit, whatever the exit (trap).
set -euo pipefail

cd "$(dirname "$0")/.."

COREKV=${COREKV:-target/release/corekv}
ETCD=${ETCD:-etcd}
BENCH=${BENCH:-$(dirname "$COREKV")/corekv-bench}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CLIENTS=${CLIENTS:-100}
CONNECTIONS=${CONNECTIONS:-10}
THREADS=${THREADS:-2}
KEY_SIZE=${KEY_SIZE:-8}
VALUE_SIZE=${VALUE_SIZE:-256}
# Away from the default 2379/2380 (and corekv's 2378), so a server already running on
# the machine is neither hit nor in the way.
ETCD_CLIENT_PORT=22379
ETCD_PEER_PORT=22380
COREKV_CLIENT_PORT=23379
COREKV_BINARY_PORT=23378
COREKV_PEER_PORT=23380
START_TIMEOUT_S=30

EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --runs=*) RUNS=${1#*=}; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

for binary in "$COREKV" "$BENCH"; do
    if [[ ! -x $binary ]]; then
        echo "no $binary: build with cargo build --release -p corekv-net -p corekv-bench" >&2
        exit 1
    fi
done
if ! command -v "$ETCD" > /dev/null; then
    echo "no etcd at $ETCD (set ETCD=/path/to/etcd)" >&2
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare-etcd.XXXXXX")
SERVER_PID=
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2> /dev/null || true
        wait "$SERVER_PID" 2> /dev/null || true
        SERVER_PID=
    fi
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts one server (etcd or corekv) with a fresh data dir in the background.
start_server() {
    local kind=$1 run=$2
    local dir=$WORK/$kind-$run
    mkdir -p "$dir"
    case $kind in
    etcd)
        "$ETCD" --name bench --data-dir "$dir/data" \
            --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
            --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
            --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
            --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
            --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" \
            > "$dir/log" 2>&1 &
        ;;
    corekv)
        "$COREKV" --name bench --data-dir "$dir/data" \
            --listen-client-urls "http://127.0.0.1:$COREKV_CLIENT_PORT" \
            --advertise-client-urls "http://127.0.0.1:$COREKV_CLIENT_PORT" \
            --listen-binary-urls "127.0.0.1:$COREKV_BINARY_PORT" \
            --listen-peer-urls "http://127.0.0.1:$COREKV_PEER_PORT" \
            --initial-advertise-peer-urls "http://127.0.0.1:$COREKV_PEER_PORT" \
            --initial-cluster "bench=http://127.0.0.1:$COREKV_PEER_PORT" \
            > "$dir/log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
}

port_of() { [[ $1 == etcd ]] && echo $ETCD_CLIENT_PORT || echo $COREKV_CLIENT_PORT; }

# Waits until the server answers a gRPC read.
wait_ready() {
    local kind=$1 port
    port=$(port_of "$kind")
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$SERVER_PID" 2> /dev/null; then
            echo "$kind exited at start-up; its log:" >&2
            tail -20 "$WORK"/"$kind"-*/log >&2
            exit 1
        fi
        if "$BENCH" get --protocol etcd-grpc --endpoints "127.0.0.1:$port" --no-prefill \
            --total 1 --json 2> /dev/null | grep -q '"errors":0'; then
            return 0
        fi
        sleep 0.2
    done
    echo "$kind did not answer on 127.0.0.1:$port within ${START_TIMEOUT_S}s" >&2
    exit 1
}

# One field of a JSON line (numbers only).
field() { sed -n "s/.*\"$2\":\([-0-9.e]*\).*/\1/p" <<< "$1"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A RESULTS
echo "machine: $(nproc) cores; $(uptime | sed 's/.*load average/load average/')"
echo "load: put --clients $CLIENTS --connections $CONNECTIONS --threads $THREADS --key-size $KEY_SIZE --value-size $VALUE_SIZE --duration $DURATION ${EXTRA[*]}"
for run in $(seq 1 "$RUNS"); do
    for kind in etcd corekv; do
        start_server "$kind" "$run"
        wait_ready "$kind"
        if ! line=$("$BENCH" put --protocol etcd-grpc --endpoints "127.0.0.1:$(port_of "$kind")" \
            --clients "$CLIENTS" --connections "$CONNECTIONS" --threads "$THREADS" \
            --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" --duration "$DURATION" \
            --server-pid "$SERVER_PID" --json "${EXTRA[@]}" 2> "$WORK/bench.err"); then
            echo "run $run $kind: corekv-bench failed: $(cat "$WORK/bench.err") $line" >&2
            exit 1
        fi
        stop_server
        echo "run $run $kind: $line"
        for name in ops_per_sec p50_us p99_us server_cpu_seconds_per_100k_ops client_cpu_seconds_per_100k_ops errors; do
            RESULTS[$kind,$name]+="$(field "$line" "$name") "
        done
    done
done

med() { tr ' ' '\n' <<< "${RESULTS[$1,$2]}" | grep . | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }

echo
echo "medians of $RUNS runs (fresh server each run, durable puts):"
printf '%-8s %12s %10s %10s %22s %22s %8s\n' server "ops/s" "p50 ms" "p99 ms" "server CPU s/100k puts" "client CPU s/100k puts" errors
for kind in etcd corekv; do
    printf '%-8s %12.0f %10.2f %10.2f %22.3f %22.3f %8s\n' "$kind" \
        "$(med "$kind" ops_per_sec)" \
        "$(awk -v v="$(med "$kind" p50_us)" 'BEGIN { print v / 1000 }')" \
        "$(awk -v v="$(med "$kind" p99_us)" 'BEGIN { print v / 1000 }')" \
        "$(med "$kind" server_cpu_seconds_per_100k_ops)" \
        "$(med "$kind" client_cpu_seconds_per_100k_ops)" \
        "$(med "$kind" errors)"
done
echo "corekv/etcd: throughput $(ratio "$(med corekv ops_per_sec)" "$(med etcd ops_per_sec)")x," \
    "p99 $(ratio "$(med corekv p99_us)" "$(med etcd p99_us)")x," \
    "server CPU per put $(ratio "$(med corekv server_cpu_seconds_per_100k_ops)" "$(med etcd server_cpu_seconds_per_100k_ops)")x"
