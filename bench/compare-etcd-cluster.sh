#!/usr/bin/env bash
# A three-member corekv cluster vs a three-member real etcd cluster, both on this one
# machine over loopback, under the same load, over etcd's v3 gRPC API; and, with
# --failover N, how long each takes to accept writes again after kill -9 of its leader.
#
# Throughput (--runs N, default 3): each run starts a fresh three-member etcd cluster
# (empty temp data dirs, free loopback ports, --initial-cluster), waits until every
# member names the same leader, drives the leader's client URL with
#   corekv-bench put --protocol etcd-grpc --clients 100 --connections 10 ...
# and tears the cluster down; then the same with a fresh three-member corekv cluster;
# then (unless BINARY=0) once more with a fresh corekv cluster driven over corekv's
# binary protocol on the leader (same clients and connections, one request in flight
# per client), reported separately. Runs alternate so that drifts in machine load hit
# every side. Server CPU is the sum of the three members' (and the leader's alone).
# Prints the medians and corekv/etcd ratios.
#
# Failover (--failover N): N trials per system, alternating; each starts a fresh cluster
# and runs corekv-failover, which writes continuously to all three members (100 clients
# over 10 connections), kills the leader with SIGKILL and measures from the kill to the
# first acknowledged put sent after it to a survivor. Prints the median and the max.
#
# Both systems run with election timeout 1000 ms and heartbeat 100 ms (the defaults of
# both), durable (etcd fsyncs every commit; corekv acknowledges after fsync).
#
# Usage: bench/compare-etcd-cluster.sh [--runs N] [--duration D] [--failover N]
#        [-- extra flags for corekv-bench, and for corekv-failover with --runs 0]
#   environment: COREKV (default target/release/corekv), ETCD (etcd), ETCDCTL (etcdctl),
#   BENCH and FAILOVER (corekv-bench and corekv-failover next to COREKV), CLIENTS (100),
#   CONNECTIONS (10), THREADS (2), KEY_SIZE (8), VALUE_SIZE (256), COREKV_CORES (1:
#   executors per corekv member), ETCD_GOMAXPROCS (empty: Go's default, every core),
#   BINARY (1: also the binary-protocol run), WARMUP (failover: load before the kill, 2s),
#   SYSTEMS (failover: "etcd corekv"), LOGS (a dir to keep every member's log in),
#   TMPDIR (where the data dirs go: keep it on the disk under test, not tmpfs).
# Build first: cargo build --release -p corekv-net -p corekv-bench
#
# Every member started is killed on exit, whatever the exit (trap).
set -euo pipefail

cd "$(dirname "$0")/.."

COREKV=${COREKV:-target/release/corekv}
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}
BENCH=${BENCH:-$(dirname "$COREKV")/corekv-bench}
FAILOVER_BIN=${FAILOVER:-$(dirname "$COREKV")/corekv-failover}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
FAILOVER_TRIALS=${FAILOVER_TRIALS:-0}
CLIENTS=${CLIENTS:-100}
CONNECTIONS=${CONNECTIONS:-10}
THREADS=${THREADS:-2}
KEY_SIZE=${KEY_SIZE:-8}
VALUE_SIZE=${VALUE_SIZE:-256}
COREKV_CORES=${COREKV_CORES:-1}
ETCD_GOMAXPROCS=${ETCD_GOMAXPROCS:-}
BINARY=${BINARY:-1}
WARMUP=${WARMUP:-2s}
SYSTEMS=${SYSTEMS:-etcd corekv}
LOGS=${LOGS:-}
ELECTION_TIMEOUT_MS=1000
HEARTBEAT_INTERVAL_MS=100
MEMBERS=3
START_TIMEOUT_S=30

EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --runs=*) RUNS=${1#*=}; shift ;;
    --duration) DURATION=$2; shift 2 ;;
    --duration=*) DURATION=${1#*=}; shift ;;
    --failover) FAILOVER_TRIALS=$2; shift 2 ;;
    --failover=*) FAILOVER_TRIALS=${1#*=}; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

needed=("$COREKV" "$BENCH")
((FAILOVER_TRIALS > 0)) && needed+=("$FAILOVER_BIN")
for binary in "${needed[@]}"; do
    if [[ ! -x $binary ]]; then
        echo "no $binary: build with cargo build --release -p corekv-net -p corekv-bench" >&2
        exit 1
    fi
done
for tool in "$ETCD" "$ETCDCTL"; do
    if ! command -v "$tool" > /dev/null; then
        echo "no $tool (apt-get install etcd-server etcd-client, or set ETCD/ETCDCTL)" >&2
        exit 1
    fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/compare-etcd-cluster.XXXXXX")
PIDS=()        # the running cluster's members, in member order
CLIENT_EPS=()  # their client addresses (host:port), same order
BINARY_EPS=()  # corekv: their binary-protocol addresses, same order
TAKEN_PORTS=" " # ports handed out for the cluster being started
PORT=
CLUSTER_DIR=   # the running cluster's data dirs and logs
CHILD=         # the corekv-bench or corekv-failover running, if any

stop_cluster() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2> /dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        { wait "$pid"; } 2> /dev/null || true # no "Killed" line for the killed leader
    done
    PIDS=()
    if [[ -n $LOGS && -n $CLUSTER_DIR ]]; then
        mkdir -p "$LOGS/$(basename "$CLUSTER_DIR")"
        cp "$CLUSTER_DIR"/*.log "$LOGS/$(basename "$CLUSTER_DIR")/" 2> /dev/null || true
    fi
    CLUSTER_DIR=
}
cleanup() {
    if [[ -n $CHILD ]]; then
        kill "$CHILD" 2> /dev/null || true
        wait "$CHILD" 2> /dev/null || true
    fi
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sets PORT to a loopback TCP port that no socket uses and this script has not handed
# out yet (called directly, not in a subshell, so that it can record what it hands
# out), below the kernel's ephemeral range (so that no outgoing connection takes it
# before the member binds it) and away from etcd's 2379/2380 and corekv's 2378.
EPHEMERAL_LOW=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || echo 32768)
PORT_LOW=10000
free_port() {
    local port used
    used=" $(ss -Htan 2> /dev/null | awk '{ n = split($4, a, ":"); print a[n] }' | tr '\n' ' ') "
    while true; do
        port=$((PORT_LOW + RANDOM % (EPHEMERAL_LOW - PORT_LOW)))
        if [[ $used != *" $port "* && $TAKEN_PORTS != *" $port "* ]]; then
            TAKEN_PORTS+="$port "
            PORT=$port
            return
        fi
    done
}

# Starts a fresh three-member cluster of `kind` (etcd or corekv) in the background:
# fills PIDS, CLIENT_EPS and BINARY_EPS.
start_cluster() {
    local kind=$1 tag=$2 i
    local dir=$WORK/$tag
    CLUSTER_DIR=$dir
    local peer_ports=() client_ports=() binary_ports=() initial=""
    TAKEN_PORTS=" "
    for ((i = 1; i <= MEMBERS; i++)); do
        free_port
        peer_ports+=("$PORT")
        free_port
        client_ports+=("$PORT")
        free_port
        binary_ports+=("$PORT")
        initial+="${initial:+,}m$i=http://127.0.0.1:${peer_ports[i - 1]}"
    done
    CLIENT_EPS=()
    BINARY_EPS=()
    for ((i = 1; i <= MEMBERS; i++)); do
        local peer=http://127.0.0.1:${peer_ports[i - 1]}
        local client=http://127.0.0.1:${client_ports[i - 1]}
        local common=(--name "m$i" --data-dir "$dir/m$i"
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer"
            --listen-client-urls "$client" --advertise-client-urls "$client"
            --initial-cluster "$initial" --initial-cluster-token "bench-$kind-$tag"
            --initial-cluster-state new
            --election-timeout "$ELECTION_TIMEOUT_MS" --heartbeat-interval "$HEARTBEAT_INTERVAL_MS")
        mkdir -p "$dir"
        case $kind in
        etcd)
            if [[ -n $ETCD_GOMAXPROCS ]]; then
                GOMAXPROCS=$ETCD_GOMAXPROCS "$ETCD" "${common[@]}" > "$dir/m$i.log" 2>&1 &
            else
                "$ETCD" "${common[@]}" > "$dir/m$i.log" 2>&1 &
            fi
            ;;
        corekv)
            "$COREKV" "${common[@]}" --cores "$COREKV_CORES" \
                --listen-binary-urls "127.0.0.1:${binary_ports[i - 1]}" > "$dir/m$i.log" 2>&1 &
            ;;
        esac
        PIDS+=($!)
        CLIENT_EPS+=("127.0.0.1:${client_ports[i - 1]}")
        BINARY_EPS+=("127.0.0.1:${binary_ports[i - 1]}")
    done
}

# "member_id leader_id" as one member sees them, or nothing if it does not answer.
member_status() {
    local json
    json=$("$ETCDCTL" --endpoints "$1" --dial-timeout 1s --command-timeout 1s \
        endpoint status -w json 2> /dev/null) || return 0
    sed -n 's/.*"member_id":\([0-9]*\).*"leader":\([0-9]*\).*/\1 \2/p' <<< "$json"
}

# Waits until every member answers and names the same leader; prints the leader's
# index in PIDS / CLIENT_EPS.
wait_leader() {
    local kind=$1 deadline=$((SECONDS + START_TIMEOUT_S)) i
    while ((SECONDS < deadline)); do
        for ((i = 0; i < MEMBERS; i++)); do
            if ! kill -0 "${PIDS[i]}" 2> /dev/null; then
                echo "$kind member m$((i + 1)) exited at start-up; its log:" >&2
                tail -20 "$CLUSTER_DIR/m$((i + 1)).log" >&2
                exit 1
            fi
        done
        local ids=() leaders=() status
        for ((i = 0; i < MEMBERS; i++)); do
            status=$(member_status "${CLIENT_EPS[i]}")
            ids+=("${status% *}")
            leaders+=("${status#* }")
        done
        local leader=${leaders[0]}
        if [[ -n $leader && $leader != 0 ]]; then
            local agreed=1
            for ((i = 0; i < MEMBERS; i++)); do
                [[ ${leaders[i]} == "$leader" ]] || agreed=0
            done
            if ((agreed)); then
                for ((i = 0; i < MEMBERS; i++)); do
                    if [[ ${ids[i]} == "$leader" ]]; then
                        echo "$i"
                        return 0
                    fi
                done
            fi
        fi
        sleep 0.2
    done
    echo "$kind: no agreed leader within ${START_TIMEOUT_S}s (${CLIENT_EPS[*]})" >&2
    exit 1
}

# utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat,
# counted after the command name's closing parenthesis).
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
TICKS_PER_SECOND=$(getconf CLK_TCK)

# Runs a command in the background, stdout to $1 and stderr to $2, and waits for it:
# bash runs a trap only once the foreground command ends, but interrupts a wait, so an
# interrupt stops the run at once (cleanup kills CHILD). Returns the command's status.
run_child() {
    local out=$1 err=$2 status=0
    shift 2
    "$@" > "$out" 2> "$err" &
    CHILD=$!
    wait "$CHILD" || status=$?
    CHILD=
    return "$status"
}

# One field of a JSON line (numbers only).
field() { sed -n "s/.*\"$2\":\([-0-9.e]*\).*/\1/p" <<< "$1"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A RESULTS

# One throughput run of `side` (etcd, corekv or corekv-binary) on a fresh cluster.
throughput_run() {
    local side=$1 run=$2 kind=${1%-binary} leader
    start_cluster "$kind" "$side-run$run"
    leader=$(wait_leader "$kind")
    local protocol=(--protocol etcd-grpc --endpoints "${CLIENT_EPS[leader]}" --threads "$THREADS")
    if [[ $side == corekv-binary ]]; then
        protocol=(--protocol binary --endpoints "${BINARY_EPS[leader]}" --cores 1)
    fi
    local pids
    pids=$(IFS=,; echo "${PIDS[*]}")
    local leader_before line
    leader_before=$(cpu_ticks "${PIDS[leader]}")
    if ! run_child "$WORK/bench.out" "$WORK/bench.err" "$BENCH" put "${protocol[@]}" \
        --clients "$CLIENTS" --connections "$CONNECTIONS" \
        --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" --duration "$DURATION" \
        --server-pid "$pids" --json "${EXTRA[@]}"; then
        echo "run $run $side: corekv-bench failed: $(cat "$WORK/bench.err" "$WORK/bench.out")" >&2
        exit 1
    fi
    line=$(cat "$WORK/bench.out")
    local leader_after
    leader_after=$(cpu_ticks "${PIDS[leader]}")
    stop_cluster
    local ops leader_cpu
    ops=$(field "$line" ops)
    leader_cpu=$(awk -v t=$((leader_after - leader_before)) -v hz="$TICKS_PER_SECOND" -v ops="$ops" \
        'BEGIN { if (ops > 0) printf "%.3f", t / hz * 100000 / ops; else print 0 }')
    echo "run $run $side (leader m$((leader + 1))): $line"
    for name in ops_per_sec p50_us p99_us server_cpu_seconds_per_100k_ops client_cpu_seconds_per_100k_ops errors; do
        RESULTS[$side,$name]+="$(field "$line" "$name") "
    done
    RESULTS[$side,leader_cpu]+="$leader_cpu "
}

# One failover trial of `kind` on a fresh cluster.
failover_trial() {
    local kind=$1 trial=$2 line
    start_cluster "$kind" "$kind-failover$trial"
    wait_leader "$kind" > /dev/null
    local endpoints pids
    endpoints=$(IFS=,; echo "${CLIENT_EPS[*]}")
    pids=$(IFS=,; echo "${PIDS[*]}")
    if ! run_child "$WORK/failover.out" "$WORK/failover.err" "$FAILOVER_BIN" \
        --endpoints "$endpoints" --pids "$pids" \
        --clients "$CLIENTS" --connections "$CONNECTIONS" --threads "$THREADS" \
        --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" --warmup "$WARMUP" \
        --json "${EXTRA[@]}"; then
        echo "trial $trial $kind: corekv-failover failed: $(cat "$WORK/failover.err" "$WORK/failover.out")" >&2
        exit 1
    fi
    line=$(cat "$WORK/failover.out")
    stop_cluster
    echo "trial $trial $kind: $line"
    RESULTS[$kind,failover_ms]+="$(field "$line" failover_ms) "
    RESULTS[$kind,load_resumed_ms]+="$(field "$line" load_resumed_ms) "
}

med() { tr ' ' '\n' <<< "${RESULTS[$1,$2]:-}" | grep . | median; }
max() { tr ' ' '\n' <<< "${RESULTS[$1,$2]:-}" | grep . | sort -g | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }

echo "machine: $(nproc) cores; $(uptime | sed 's/.*load average/load average/')"
echo "members: corekv --cores $COREKV_CORES; etcd GOMAXPROCS=${ETCD_GOMAXPROCS:-default ($(nproc))};" \
    "--election-timeout $ELECTION_TIMEOUT_MS --heartbeat-interval $HEARTBEAT_INTERVAL_MS"
sides=(etcd corekv)
((BINARY)) && sides+=(corekv-binary)
if ((RUNS > 0)); then
    echo "load: put --clients $CLIENTS --connections $CONNECTIONS --key-size $KEY_SIZE" \
        "--value-size $VALUE_SIZE --duration $DURATION (etcd-grpc: --threads $THREADS) ${EXTRA[*]}"
    for run in $(seq 1 "$RUNS"); do
        for side in "${sides[@]}"; do
            throughput_run "$side" "$run"
        done
    done
    echo
    echo "medians of $RUNS runs (fresh three-member cluster each run, load on the leader, durable puts):"
    printf '%-14s %10s %8s %8s %16s %16s %16s %7s\n' side "ops/s" "p50 ms" "p99 ms" \
        "cluster CPU s" "leader CPU s" "client CPU s" errors
    printf '%-14s %10s %8s %8s %16s %16s %16s %7s\n' "" "" "" "" \
        "per 100k puts" "per 100k puts" "per 100k puts" ""
    for side in "${sides[@]}"; do
        printf '%-14s %10.0f %8.2f %8.2f %16.3f %16.3f %16.3f %7s\n' "$side" \
            "$(med "$side" ops_per_sec)" \
            "$(awk -v v="$(med "$side" p50_us)" 'BEGIN { print v / 1000 }')" \
            "$(awk -v v="$(med "$side" p99_us)" 'BEGIN { print v / 1000 }')" \
            "$(med "$side" server_cpu_seconds_per_100k_ops)" \
            "$(med "$side" leader_cpu)" \
            "$(med "$side" client_cpu_seconds_per_100k_ops)" \
            "$(med "$side" errors)"
    done
    echo "corekv/etcd over gRPC: throughput $(ratio "$(med corekv ops_per_sec)" "$(med etcd ops_per_sec)")x," \
        "p99 $(ratio "$(med corekv p99_us)" "$(med etcd p99_us)")x," \
        "cluster CPU per put $(ratio "$(med corekv server_cpu_seconds_per_100k_ops)" "$(med etcd server_cpu_seconds_per_100k_ops)")x"
    if ((BINARY)); then
        echo "corekv binary protocol/etcd gRPC: throughput" \
            "$(ratio "$(med corekv-binary ops_per_sec)" "$(med etcd ops_per_sec)")x"
    fi
fi

if ((FAILOVER_TRIALS > 0)); then
    echo
    echo "failover: $FAILOVER_TRIALS trials per system, kill -9 of the leader after $WARMUP of" \
        "load on all members (--clients $CLIENTS --connections $CONNECTIONS)"
    for trial in $(seq 1 "$FAILOVER_TRIALS"); do
        for kind in $SYSTEMS; do
            failover_trial "$kind" "$trial"
        done
    done
    echo
    echo "kill -9 of the leader to the first acknowledged put sent afterwards (any client;"
    echo "load resumed: the first among the load's own puts, which never time out client-side):"
    printf '%-8s %10s %10s  %-40s %s\n' system "median ms" "max ms" "trials (ms)" "load resumed (ms)"
    for kind in $SYSTEMS; do
        printf '%-8s %10.0f %10.0f  %-40s %s\n' "$kind" "$(med "$kind" failover_ms)" \
            "$(max "$kind" failover_ms)" "${RESULTS[$kind,failover_ms]}" "${RESULTS[$kind,load_resumed_ms]}"
    done
fi
