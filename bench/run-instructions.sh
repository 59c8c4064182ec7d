#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: the gateway against the
# nginx peer of ../shared/bench (same split_clients config), same upstreams, same load.
# Instruction counts do not move with a busy machine the way CPU time does, so two builds can
# be compared on a shared box. Kernel work (the sockets) is not counted: it is about the same
# for every proxy that makes one upstream request per client request.
#
#   bench/run-instructions.sh                       # target/release/canary and nginx
#   bench/run-instructions.sh /tmp/old/canary ...   # also other canary binaries
#
# Each target: 3 s of warm-up, counters zeroed, 10 s of wrk -t1 -c16 (random x-user-id of
# 10,000), counters dumped. Loopback only; ports BASE_PORT+31.. (default 18080). Needs
# valgrind, nginx and wrk. Stops only what it started. KEEP_PROFILES=<dir> keeps the callgrind
# files there (`callgrind_annotate <dir>/canary0.cg.*` shows where the instructions go).
# CALLGRIND_ARGS adds callgrind options: "--cache-sim=yes --branch-sim=yes" also counts cache
# misses and mispredicted branches per request, which instruction counts alone do not show.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
base=${BASE_PORT:-18080}
stable=$((base + 31)) canary=$((base + 32)) proxy=$((base + 33)) gateway=$((base + 34))
binaries=("${@:-$root/target/release/canary}")
for tool in valgrind callgrind_control nginx wrk; do
    command -v "$tool" >/dev/null || { echo "run-instructions.sh: needs $tool" >&2; exit 2; }
done
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"' EXIT
mkdir -p "$dir/tmp"

cat >"$dir/upstreams.conf" <<EOF
worker_processes 1; daemon off; pid $dir/upstreams.pid; error_log $dir/upstreams.log;
events { worker_connections 4096; }
http {
    access_log off;
    server { listen 127.0.0.1:$stable; keepalive_requests 10000000; location / { return 200 "stable\n"; } }
    server { listen 127.0.0.1:$canary; keepalive_requests 10000000; location / { return 200 "canary\n"; } }
}
EOF
nginx -c "$dir/upstreams.conf" -p "$dir" &
pids+=($!)
cat >"$dir/load.lua" <<'EOF'
request = function() return wrk.format("GET", "/", {["x-user-id"] = "u" .. math.random(10000)}) end
EOF

# Counts the instructions of process $1 (callgrind, writing $2.*) while it serves port $3.
count() {
    local pid=$1 out=$2 port=$3 requests
    for _ in $(seq 100); do
        curl -fsS -o /dev/null -H "x-user-id: probe" "http://127.0.0.1:$port/" 2>/dev/null && break
        sleep 0.2
    done
    wrk -t1 -c16 -d3s -s "$dir/load.lua" "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    requests=$(wrk -t1 -c16 -d10s -s "$dir/load.lua" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 1
    awk -v r="$requests" '
        /^events:/ { for (i = 2; i <= NF; i++) name[i] = $i; n = NF }
        /^totals:/ { for (i = 2; i <= NF; i++) t[i] += $i }
        END {
            printf "%9d requests  %7.0f instructions per request", r, t[2] / r
            for (i = 3; i <= n; i++) printf "  %s %.0f", name[i], t[i] / r
            printf "\n"
        }' "$out".*
}

sed -e "s|@WORKERS@|1|; s|@DIR@|$dir|g; s|@HOST@|127.0.0.1|g; s|@STABLE_PORT@|$stable|; s|@CANARY_PORT@|$canary|" \
    -e "s|@CANARY_PCT@|10|; s|@PORT@|$proxy|" "$bench/conf/proxy.nginx.conf.tmpl" >"$dir/proxy.conf"
valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --callgrind-out-file="$dir/nginx.cg" \
    nginx -c "$dir/proxy.conf" -p "$dir" -g "daemon off; master_process off;" >"$dir/nginx.log" 2>&1 &
pids+=($!)
printf '%-40s ' nginx
count "${pids[-1]}" "$dir/nginx.cg" "$proxy"
kill "${pids[-1]}"

sed -e "s/127.0.0.1:18081/127.0.0.1:$stable/; s/127.0.0.1:18082/127.0.0.1:$canary/; s/127.0.0.1:18095/127.0.0.1:$gateway/" \
    "$root/bench/canary.toml" >"$dir/canary.toml"
for i in "${!binaries[@]}"; do
    valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --callgrind-out-file="$dir/canary$i.cg" \
        "${binaries[$i]}" serve --config "$dir/canary.toml" --log warn >"$dir/canary$i.log" 2>&1 &
    pids+=($!)
    printf '%-40s ' "${binaries[$i]}"
    count "${pids[-1]}" "$dir/canary$i.cg" "$gateway"
    kill "${pids[-1]}"
    wait "${pids[-1]}" 2>/dev/null || true
done
if [ -n "${KEEP_PROFILES:-}" ]; then
    mkdir -p "$KEEP_PROFILES"
    cp "$dir"/*.cg.* "$KEEP_PROFILES"/
fi
