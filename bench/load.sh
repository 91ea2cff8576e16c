#!/usr/bin/env bash
# Load run against a release build of the server on loopback, with wrk (Debian package `wrk`).
#
#   bash bench/load.sh [SECONDS_PER_CASE] [CONNECTIONS]
#
# Each case POSTs one AdmissionReview over HTTPS with keep-alive, as the apiserver does.
# The machine is shared and has 2 cores (wrk takes one): compare the cases of one run with each
# other, not with figures from another run. Prints requests/s, latency percentiles and the
# server's peak resident memory.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-8}
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }

cargo build --release -q --bin divert-webhook
tmp=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
target/release/divert-webhook serve --self-signed --write-ca "$tmp/ca.pem" \
  --addr "127.0.0.1:$port" --metrics-addr "127.0.0.1:$((port + 1))" --log-format json 2>"$tmp/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$((port + 1))/readyz" >/dev/null && break
  sleep 0.1
done

run() { # name endpoint fixture
  cat >"$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$3", "rb"); wrk.body = f:read("*a"); f:close()
LUA
  printf '%-34s ' "$1"
  wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$tmp/post.lua" \
    "https://127.0.0.1:$port/$2?timeout=10s" |
    awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF}
         END {printf "%10s req/s   p50 %8s   p99 %8s   non-2xx %s\n", rps, p50, p99, (bad == "" ? 0 : bad)}'
}

run "pod /mutate (kind not handled)" mutate tests/fixtures/pod-create.json
run "namespace /mutate (patched)" mutate tests/fixtures/namespace-create.json
run "namespace /validate (denied)" validate tests/fixtures/namespace-mesh-conflict.json
run "virtualservice /mutate (patched)" mutate tests/fixtures/virtualservice-divert.json
run "virtualservice /validate (allowed)" validate tests/fixtures/virtualservice-divert.json
run "ingress /validate (allowed)" validate tests/fixtures/ingress-header.json
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
echo "reviews logged: $(wc -l <"$tmp/server.log")"
