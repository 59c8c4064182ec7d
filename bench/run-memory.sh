#!/usr/bin/env bash
# Memory per idle client connection: the gateway (`canary serve`, bench/canary.toml, one
# worker) beside an nginx proxy peer (one worker), same upstreams, same run, loopback only.
#
# For each target: RSS idle, then with N keep-alive client connections open and idle (each
# served one request, x-user-id varied), then a few seconds after they all closed, then with N
# open again (whether the memory kept after the close is reused or grows). RSS is
# VmRSS from /proc (nginx: master + workers). Only the proxy's own processes are measured; the
# upstream connections each proxy keeps are printed beside it.
#
#   bench/run-memory.sh                # N = 10,000
#   N=2000 bench/run-memory.sh
#
# Environment: N (connections, default 10000), BASE_PORT (18080: upstreams +1/+2, nginx +11,
# gateway +15, as run.sh and run-canary.sh), CANARY_BIN (default target/release/canary, or
# $CARGO_TARGET_DIR/release/canary), BENCH_DIR (../shared/bench), SETTLE (seconds waited
# after the close, default 5), RESPONSE_KB (0: each request gets the upstreams' 7-byte answer;
# else a body of that many KB, served by the upstreams as /big), PROXY_CPUS / UPSTREAM_CPUS (1) / CLIENT_CPUS (0), CANARY_WRAPPER
# (a profiler to run the gateway under, e.g. "heaptrack -o /tmp/gw"; its RSS is then not the
# gateway's alone).
set -Eeuo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
N=${N:-10000}
base=${BASE_PORT:-18080}
stable_port=$((base + 1)) canary_port=$((base + 2)) nginx_port=$((base + 11)) gateway_port=$((base + 15))
settle=${SETTLE:-5}
response_kb=${RESPONSE_KB:-0}
proxy_cpus=${PROXY_CPUS-1} upstream_cpus=${UPSTREAM_CPUS-1} client_cpus=${CLIENT_CPUS-0}
nginx_bin=${NGINX_BIN:-/usr/sbin/nginx}
default_bin=$root/target/release/canary
[[ -n ${CARGO_TARGET_DIR:-} ]] && default_bin=$CARGO_TARGET_DIR/release/canary
canary_bin=${CANARY_BIN:-$default_bin}

die() { echo "run-memory.sh: $*" >&2; exit 2; }
log() { echo "[memory] $*" >&2; }

[[ $N =~ ^[0-9]+$ ]] && (( N >= 1 && N <= 30000 )) || die "N must be 1..30000"
[[ $response_kb =~ ^[0-9]+$ ]] && (( response_kb <= 1024 )) || die "RESPONSE_KB must be 0..1024"
[[ $settle =~ ^[0-9]+$ ]] && (( settle <= 120 )) || die "SETTLE must be 0..120 seconds"
[[ -x $nginx_bin ]] || die "missing $nginx_bin (apt-get install nginx-light)"
[[ -x $canary_bin ]] || die "missing $canary_bin (cargo build --release -p canary)"
command -v python3 >/dev/null || die "missing python3"
command -v curl >/dev/null || die "missing curl"
[[ $(nproc) -ge 2 ]] || { proxy_cpus='' upstream_cpus='' client_cpus=''; }
command -v taskset >/dev/null || { proxy_cpus='' upstream_cpus='' client_cpus=''; }

# Descriptors: the client holds N sockets; the gateway takes for client connections half of
# what its limit leaves after a reserve of a quarter (32..1024), see crates/gateway/src/limits.rs,
# and sheds the longest idle connection beyond that, so it needs 2N + reserve.
need=$(( 2 * N + 1024 ))
ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
have=$(ulimit -n)
if (( have < need )); then
    reserve=$(( have / 4 < 32 ? 32 : have / 4 > 1024 ? 1024 : have / 4 ))
    die "N=$N needs 'ulimit -n' >= $need (the gateway holds at most (limit - reserve) / 2 client
connections), but the hard limit is $(ulimit -Hn): raise it (as root: ulimit -Hn $need), or run
with N=$(( (have - reserve) / 2 )) or less"
fi

run=$(mktemp -d "${TMPDIR:-/tmp}/memory-bench.XXXXXX")
chmod 755 "$run"   # nginx workers may run as an unprivileged user
pids=()
stop_all() {   # TERM what we started (an nginx master stops its workers), KILL after 5 s
    local pid _
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
cleanup() { local rc=$?; trap - EXIT; stop_all; rm -rf -- "$run"; exit "$rc"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pinned() { local cpus=$1; shift; if [[ -n $cpus ]]; then taskset -c "$cpus" "$@"; else "$@"; fi; }
launch() {   # LOG CPUS CMD... : in the background; records its PID
    local logf=$1 cpus=$2; shift 2
    ( exec > "$logf" 2>&1; if [[ -n $cpus ]]; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi ) &
    pids+=($!)
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_ready() {   # NAME PORT PID LOG
    local _
    for _ in $(seq 100); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H 'x-user-id: probe' "http://127.0.0.1:$2/") == 200 ]] \
            && return 0
        kill -0 "$3" 2>/dev/null || { cat "$4" >&2; die "$1 exited during start-up"; }
        sleep 0.1
    done
    cat "$4" >&2; die "$1 did not answer on port $2"
}

start_nginx() {   # NAME CPUS TEMPLATE PORT KEY=VALUE... ; worker_connections and keep-alive raised,
    local name=$1 cpus=$2 tmpl=$3 port=$4 d=$run/$1 kv args=(); shift 4   # and /big (RESPONSE_KB) served
    mkdir -p "$d/tmp"
    head -c "$(( response_kb * 1024 ))" /dev/zero | tr '\0' x >"$d/big"
    for kv in DIR="$d" HOST=127.0.0.1 PORT="$port" "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" -e "s/worker_connections [0-9]*;/worker_connections $(( N + 1024 ));/" \
        -e "s/keepalive_timeout [0-9]*s;/keepalive_timeout 600s;/" \
        -e "s|^\( *\)location / {|\1location = /big { alias $d/big; }\n&|" "$tmpl" >"$d/nginx.conf"
    ! grep -n '@[A-Z_]*@' "$d/nginx.conf" >&2 || die "unrendered placeholder in $d/nginx.conf"
    "$nginx_bin" -q -t -p "$d" -e "$d/error.log" -c "$d/nginx.conf" || die "bad nginx config for $name"
    launch "$d/stdout.log" "$cpus" "$nginx_bin" -p "$d" -e "$d/error.log" -c "$d/nginx.conf" -g 'daemon off;'
    wait_ready "$name" "$port" "${pids[-1]}" "$d/error.log"
}

start_gateway() {   # bench/canary.toml with run.sh's ports and timeouts longer than the run
    sed -e "s/127.0.0.1:18081/127.0.0.1:$stable_port/" -e "s/127.0.0.1:18082/127.0.0.1:$canary_port/" \
        -e "s/127.0.0.1:18095/127.0.0.1:$gateway_port/" \
        -e 's/^\[gateway\]$/[gateway]\nidle_timeout = "1h"\nheader_read_timeout = "5m"/' \
        "$root/bench/canary.toml" >"$run/canary.toml"
    grep -q '^idle_timeout = "1h"' "$run/canary.toml" || die "could not set the gateway's timeouts"
    # shellcheck disable=SC2086  # CANARY_WRAPPER is a command line, e.g. "heaptrack -o /tmp/gw"
    launch "$run/canary.log" "$proxy_cpus" ${CANARY_WRAPPER:-} "$canary_bin" serve --config "$run/canary.toml" --log warn
    wait_ready gateway "$gateway_port" "${pids[-1]}" "$run/canary.log"
    gateway_pid=${pids[-1]}
    if [[ -n ${CANARY_WRAPPER:-} ]]; then   # measure and stop the gateway, not its wrapper
        gateway_pid=$(ss -Htlnp "sport = :$gateway_port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
        [[ -n $gateway_pid ]] || die "cannot find the gateway's PID under $CANARY_WRAPPER"
        pids=("$gateway_pid" "${pids[@]}")
    fi
}

rss_kb() {   # PID : VmRSS of it and its children (nginx workers), in kB
    local total=0 p kb
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
        kb=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null || true)
        total=$(( total + ${kb:-0} ))
    done
    echo "$total"
}
upstream_conns() {   # PID : connections it (or its workers) holds to the two upstreams
    local owners
    owners=$(echo "$1" $(ps -o pid= --ppid "$1" 2>/dev/null || true) | tr -s ' ' '|')
    ss -Htnp state established "( dport = :$stable_port or dport = :$canary_port )" 2>/dev/null \
        | grep -cE "pid=($owners)," || true
}

path=/
(( response_kb == 0 )) || path=/big
declare -A IDLE=() HELD=() AFTER=() AGAIN=() UPS=()
HELD_KB=0
hold_all() {   # NAME PID PORT : opens N connections, samples RSS into HELD_KB, closes them
    local name=$1 pid=$2 port=$3 line client_pid
    coproc CLIENT { pinned "$client_cpus" python3 "$root/bench/hold-connections.py" --port "$port" \
        --connections "$N" --path "$path" --timeout 120; }
    client_pid=$CLIENT_PID
    read -r -t 150 line <&"${CLIENT[0]}" || true
    [[ $line == "holding $N" ]] || { wait "$client_pid" || true; die "$name: the client could not open $N connections"; }
    sleep 2
    HELD_KB=$(rss_kb "$pid") UPS[$name]=$(upstream_conns "$pid")
    log "$name: $N connections idle, RSS $(( HELD_KB / 1024 )) MB, ${UPS[$name]} upstream connections"
    echo >&"${CLIENT[1]}"
    read -r -t 60 line <&"${CLIENT[0]}" || true
    wait "$client_pid" || true
    [[ $line == "closed $N server_closed=0" ]] \
        || die "$name: ${line:-no answer from the client}: the server closed connections during the measurement"
}
measure() {   # NAME PID PORT : idle, N open, closed; then N again (is the memory kept reused?)
    local name=$1 pid=$2 port=$3
    sleep 1
    IDLE[$name]=$(rss_kb "$pid")
    hold_all "$name" "$pid" "$port"
    HELD[$name]=$HELD_KB
    sleep "$settle"
    AFTER[$name]=$(rss_kb "$pid")
    hold_all "$name" "$pid" "$port"
    AGAIN[$name]=$HELD_KB
}

for p in "$stable_port" "$canary_port" "$nginx_port" "$gateway_port"; do
    port_busy "$p" && die "port $p is already in use by something this script did not start (try BASE_PORT=...)"
done
log "run dir $run; N=$N; ulimit -n $(ulimit -n)"
start_nginx stable "$upstream_cpus" "$bench/conf/upstream.nginx.conf.tmpl" "$stable_port" NAME=stable
start_nginx canary "$upstream_cpus" "$bench/conf/upstream.nginx.conf.tmpl" "$canary_port" NAME=canary
start_nginx nginx "$proxy_cpus" "$bench/conf/proxy.nginx.conf.tmpl" "$nginx_port" WORKERS=1 \
    STABLE_PORT="$stable_port" CANARY_PORT="$canary_port" CANARY_PCT=10
nginx_pid=${pids[-1]}
start_gateway

measure nginx "$nginx_pid" "$nginx_port"
measure canary "$gateway_pid" "$gateway_port"

echo
echo "memory per idle client connection: $(date -u +%Y-%m-%dT%H:%M:%SZ), N=$N keep-alive connections," \
    "one request each (GET $path, response body $(( response_kb ? response_kb * 1024 : 7 )) bytes), one worker; $("$nginx_bin" -v 2>&1 | sed 's/.*version: //'), $("$canary_bin" --version 2>/dev/null || echo canary)"
printf '%-8s %9s %11s %12s %15s %13s %15s\n' target "idle MB" "with N MB" "per-conn KB" "after close MB" "N again MB" \
    "upstream conns"
for t in nginx canary; do
    awk -v t="$t" -v i="${IDLE[$t]}" -v h="${HELD[$t]}" -v a="${AFTER[$t]}" -v g="${AGAIN[$t]}" -v n="$N" \
        -v u="${UPS[$t]}" 'BEGIN{
        printf "%-8s %9.1f %11.1f %12.1f %15.1f %13.1f %15d\n", t, i/1024, h/1024, (h-i)/n, a/1024, g/1024, u }'
done
