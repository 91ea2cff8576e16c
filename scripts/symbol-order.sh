#!/usr/bin/env bash
# Regenerates link/symbol-order.txt: the functions the server runs, for the linker to lay out
# together at the start of the binary's code (build.rs passes the file to lld).
#
# Why: the kernel maps a binary's code 64 KiB at a time around each page fault (fault-around),
# so code that runs, scattered among 11 MB of code that does not, kept 7 MiB of the binary
# resident; packed together, 2-3 MiB (BENCHMARKS.md, "Memory: the allocator and the order of
# the code").
#
# How: builds the release binary, serves every body of the load kit (../shared/perf/bodies) to
# /mutate and /validate under valgrind's callgrind, scrapes /metrics, stops it, and lists every
# function of the binary that ran, the most instructions first.
#
# When: symbol names carry hashes of the compiler version and of each crate's version, so the
# file goes stale when Cargo.lock or the toolchain changes (build.rs then warns on release
# builds) and new functions are missing from it. Nothing breaks when it is stale: the binary
# is only larger in memory. Needs valgrind, oha and curl.
#
#   bash scripts/symbol-order.sh            # regenerate
#   bash scripts/symbol-order.sh --check    # how much of the file the release binary has
set -euo pipefail
cd "$(dirname "$0")/.."
order=link/symbol-order.txt
binary=target/release/divert-webhook
bodies=${BODIES:-../shared/perf/bodies}

stamp() {
  # What the names in the file depend on; build.rs computes the same (FNV-1a of Cargo.lock).
  echo "# rustc: $(rustc -V)"
  python3 -c 'import sys
h = 0xcbf29ce484222325
for b in open("Cargo.lock", "rb").read():
    h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
print("# Cargo.lock: %016x" % h)'
}

symbols() { nm "$1" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u; }

if [ "${1:-}" = --check ]; then
  [ -x "$binary" ] || { echo "build it first: cargo build --release" >&2; exit 1; }
  listed=$(grep -vc '^#' "$order")
  found=$(grep -v '^#' "$order" | sort -u | comm -12 - <(symbols "$binary") | wc -l)
  echo "$found of $listed functions of $order are in $binary"
  if [ "$(stamp)" != "$(grep '^# \(rustc\|Cargo.lock\):' "$order")" ]; then
    echo "the file was made with another compiler or Cargo.lock: regenerate it" >&2
    exit 1
  fi
  exit 0
fi

for tool in valgrind oha nm curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
[ -d "$bodies" ] || { echo "no bodies at $bodies (set BODIES=)" >&2; exit 1; }
cargo build --release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/callgrind.out" \
  "$binary" serve --self-signed --addr 127.0.0.1:18643 --metrics-addr 127.0.0.1:18645 2>"$work/server.log" &
server=$!
for _ in $(seq 120); do
  curl -sf http://127.0.0.1:18645/readyz >/dev/null && break
  sleep 0.5
done
for body in "$bodies"/*.json; do
  for endpoint in mutate validate; do
    oha --no-tui --insecure --http-version 1.1 -m POST -H 'Content-Type: application/json' -D "$body" \
      -c 4 -n 20 "https://127.0.0.1:18643/$endpoint?timeout=10s" >/dev/null
  done
done
# HTTP/2 too (ALPN h2), as some clients speak it.
curl -sfk --http2 -H 'Content-Type: application/json' --data-binary "@$(ls "$bodies"/*.json | head -1)" \
  https://127.0.0.1:18643/mutate >/dev/null
curl -sf http://127.0.0.1:18645/metrics >/dev/null
curl -sf -H 'Accept: application/openmetrics-text' http://127.0.0.1:18645/metrics >/dev/null
kill -TERM "$server"; sleep 1; kill -TERM "$server"
wait "$server" || true
grep -q '"review"\|review endpoint' "$work/server.log" || { echo "no review was served; see the log:" >&2; cat "$work/server.log" >&2; exit 1; }

symbols "$binary" > "$work/symbols"
{
  echo "# The functions the server runs, the most instructions first: lld lays them out first"
  echo "# in the binary's code (build.rs). Made by scripts/symbol-order.sh on $(date -u +%F); regenerate"
  echo "# it with that script when build.rs says it is stale."
  stamp
  python3 - "$work/callgrind.out" "$work/symbols" <<'PY'
import re, sys
callgrind, symbols = sys.argv[1:3]
names, cost, current, skip = {}, {}, None, False
for line in open(callgrind, errors="replace"):
    if skip:  # the line after calls= is the call's inclusive cost
        skip = False
        continue
    m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
    if m:
        kind, ident, name = m.groups()
        if name:
            names[ident] = name
        if kind == "fn":
            current = ident
    elif line.startswith("calls="):
        skip = True
    elif current is not None and line[:1] in "0123456789+-*":
        fields = line.split()
        if len(fields) >= 2:
            cost[current] = cost.get(current, 0) + int(fields[1])
ours = set(open(symbols).read().split())
# A name can have more than one id (one per object it was seen in): its largest cost counts.
best = {}
for ident, name in names.items():
    if name in ours and cost.get(ident):
        best[name] = max(best.get(name, 0), cost[ident])
print("\n".join(sorted(best, key=lambda name: -best[name])))
PY
} > "$order"
echo "$(grep -vc '^#' "$order") functions written to $order"
