#!/usr/bin/env bash
# CPU per request of the gateway, nginx and HAProxy loaded at the same time, so that the
# machine's ups and downs fall on all of them alike. On a shared box back-to-back runs of one
# build swing by ±15 %; loaded side by side, the per-round ratios hold within about 2 %.
#
#   bench/run-side-by-side.sh                        # target/release/canary
#   bench/run-side-by-side.sh /tmp/old/canary ...    # also other canary binaries
#
# Every proxy (the peers with ../shared/bench's configs, one worker each) and both upstreams run
# on CPU 1, every load generator on CPU 0, as in ../shared/bench/run.sh. Each round loads all
# targets at once for ROUND_SECONDS (default 8) with one `wrk -t1 -c$CONNS` each (default 32;
# random x-user-id of 10,000), after a one-second warm-up, and reads each proxy's utime+stime.
# ROUNDS (default 6). Loopback only, ports BASE_PORT+41.. (default 18080). Stops what it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
base=${BASE_PORT:-18080}
rounds=${ROUNDS:-6} seconds=${ROUND_SECONDS:-8} conns=${CONNS:-32}
stable=$((base + 41)) canary=$((base + 42)) nginx_port=$((base + 43)) haproxy_port=$((base + 44))
binaries=("${@:-$root/target/release/canary}")
for tool in nginx haproxy wrk taskset curl; do
    command -v "$tool" >/dev/null || { echo "run-side-by-side.sh: needs $tool" >&2; exit 2; }
done
dir=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"' EXIT

render() {  # template output KEY=VALUE...
    local tmpl=$1 out=$2 kv args=()
    shift 2
    for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${args[@]}" "$tmpl" >"$out"
    ! grep -n '@[A-Z_]*@' "$out" >&2 || { echo "run-side-by-side.sh: unrendered placeholder in $out" >&2; exit 2; }
}
start() {  # name command... (on CPU 1)
    local name=$1
    shift
    taskset -c 1 "$@" >"$dir/$name.log" 2>&1 &
    pids+=($!)
}
for version in stable canary; do
    port=$stable
    [ "$version" = canary ] && port=$canary
    mkdir -p "$dir/$version/tmp"
    render "$bench/conf/upstream.nginx.conf.tmpl" "$dir/$version/nginx.conf" WORKERS=1 DIR="$dir/$version" \
        HOST=127.0.0.1 PORT="$port" NAME="$version"
    start "$version" nginx -p "$dir/$version" -e "$dir/$version/error.log" -c "$dir/$version/nginx.conf" -g 'daemon off;'
done

names=() ports=() targets=()
mkdir -p "$dir/nginx/tmp" "$dir/haproxy"
render "$bench/conf/proxy.nginx.conf.tmpl" "$dir/nginx/nginx.conf" WORKERS=1 DIR="$dir/nginx" HOST=127.0.0.1 \
    STABLE_PORT="$stable" CANARY_PORT="$canary" CANARY_PCT=10 PORT="$nginx_port"
# One process, so its CPU is the proxy's alone.
start nginx nginx -p "$dir/nginx" -e "$dir/nginx/error.log" -c "$dir/nginx/nginx.conf" \
    -g 'daemon off; master_process off;'
names+=(nginx) ports+=("$nginx_port") targets+=("${pids[-1]}")
render "$bench/conf/haproxy.cfg.tmpl" "$dir/haproxy/haproxy.cfg" THREADS=1 HOST=127.0.0.1 PORT="$haproxy_port" \
    LB_PORT=$((base + 45)) STABLE_PORT="$stable" CANARY_PORT="$canary" CANARY_BP=1000 STABLE_WEIGHT=9 CANARY_WEIGHT=1
start haproxy haproxy -f "$dir/haproxy/haproxy.cfg" -db
names+=(haproxy) ports+=("$haproxy_port") targets+=("${pids[-1]}")
for i in "${!binaries[@]}"; do
    port=$((base + 50 + i))
    mkdir -p "$dir/canary$i"
    sed -e "s/127.0.0.1:18081/127.0.0.1:$stable/; s/127.0.0.1:18082/127.0.0.1:$canary/; s/127.0.0.1:18095/127.0.0.1:$port/" \
        "$root/bench/canary.toml" >"$dir/canary$i/canary.toml"
    start "canary$i" "${binaries[$i]}" serve --config "$dir/canary$i/canary.toml" --log warn
    names+=("canary$i") ports+=("$port") targets+=("${pids[-1]}")
done

cat >"$dir/load.lua" <<'EOF'
request = function() return wrk.format("GET", "/", {["x-user-id"] = "u" .. math.random(10000)}) end
EOF
for i in "${!names[@]}"; do
    for _ in $(seq 100); do
        curl -fsS -o /dev/null -H "x-user-id: probe" "http://127.0.0.1:${ports[$i]}/" 2>/dev/null && break
        sleep 0.1
    done
done

ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
load() {  # seconds output-prefix: every target at once, one wrk each
    local loaders=() i
    for i in "${!names[@]}"; do
        taskset -c 0 wrk -t1 -c"$conns" -d"$1"s -s "$dir/load.lua" "http://127.0.0.1:${ports[$i]}/" >"$2$i" &
        loaders+=($!)
    done
    wait "${loaders[@]}"
}
hz=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
    load 1 "$dir/warm"
    before=()
    for i in "${!names[@]}"; do before+=("$(ticks "${targets[$i]}")"); done
    load "$seconds" "$dir/run"
    for i in "${!names[@]}"; do
        awk -v r="$round" -v n="${names[$i]}" -v t=$(($(ticks "${targets[$i]}") - before[i])) -v hz="$hz" '
            /requests in/ { req = $1 } /Non-2xx|Socket errors/ { bad = 1 }
            END { printf "%s %s %d %.3f %d\n", r, n, req, t * 1e6 / hz / req, bad }' "$dir/run$i"
    done
done >"$dir/rounds"

echo "side by side: $rounds rounds x ${seconds}s, wrk -t1 -c$conns per target, all targets at once; proxies and upstreams on CPU 1"
printf '%-10s %10s %14s %8s   %s\n' target "req/round" "cpu us/req" "÷ nginx" "÷ nginx per round"
for i in "${!names[@]}"; do
    label=""
    [[ ${names[$i]} == canary* ]] && label=${binaries[${names[$i]#canary}]}
    awk -v n="${names[$i]}" -v b="$label" '
        $2 == "nginx" { base[$1] = $4 }
        $2 == n { k++; req[k] = $3; cpu[k] = $4; round[k] = $1; if ($5) bad = 1 }
        function median(a, m,   i, j, t) {
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
        }
        END {
            list = ""
            for (i = 1; i <= k; i++) { ratio[i] = cpu[i] / base[round[i]]; list = list sprintf(" %.3f", ratio[i]) }
            printf "%-10s %10d %14.2f %8.3f  %s%s%s\n", n, median(req, k), median(cpu, k), median(ratio, k), list,
                bad ? "  (errors!)" : "", n ~ /^canary/ ? "  " b : ""
        }' "$dir/rounds"
done
