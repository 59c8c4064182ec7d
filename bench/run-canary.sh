#!/usr/bin/env bash
# Starts the gateway with bench/canary.toml pinned to the proxy core (CPU 1), runs
# ../shared/bench/run.sh with it as the extra target "canary", and stops it again.
# Arguments go to run.sh, e.g. `bench/run-canary.sh --wait-quiet 60 --out results/x`.
# BASE_PORT moves every port as run.sh does (gateway on BASE_PORT+15, its admin API on
# BASE_PORT+17); CANARY_BIN picks the binary (default target/release/canary). At the end it
# prints the share of upstream exchanges that found a pooled connection, from /metrics.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_DIR:-$root/../shared/bench}
base=${BASE_PORT:-18080}
port=$((base + 15))
admin=127.0.0.1:$((base + 17))
dir=$(mktemp -d)
sed -e "s/127.0.0.1:18081/127.0.0.1:$((base + 1))/" -e "s/127.0.0.1:18082/127.0.0.1:$((base + 2))/" \
    -e "s/127.0.0.1:18095/127.0.0.1:$port/" -e "s/^listen = \"127.0.0.1:0\"/listen = \"$admin\"/" \
    "$root/bench/canary.toml" >"$dir/canary.toml"
taskset -c "${PROXY_CPUS:-1}" "${CANARY_BIN:-$root/target/release/canary}" serve --config "$dir/canary.toml" \
    --log warn >"$dir/log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
    grep -q "listening service" "$dir/log" && break
    sleep 0.1
done
grep "listening service" "$dir/log"
BASE_PORT=$base "$bench/run.sh" --extra "canary=127.0.0.1:$port" "$@"
# Reuse over the whole run (warm-up, verification and load): pooled / (pooled + new).
curl -fsS "http://$admin/metrics" | awk '
    /^canary_upstream_connections_total/ { n = $NF; if ($0 ~ /connection="pooled"/) p += n; else f += n }
    END { if (p + f > 0) printf "canary upstream connection reuse: %.3f%% (%d pooled, %d new)\n", 100 * p / (p + f), p, f }'
