#!/bin/bash
# A/B of two eventbus release binaries on the same workload, alternating, without peers.
# Usage: MODE=fsync|buffered BASE=path/to/eventbus NEW=path/to/eventbus benches/ab-binaries.sh
# Each run: `serve` on a fresh temp data dir and free ports on 127.0.0.1, then
# `bench` (100k events, 5 s latency phase, no idempotency keys), stopped by PID.
# Prints: label publish/s consume/s p50_us p99_us. Used in BENCHMARKS.md (issue 12).
set -u
run() {  # $1 bin, $2 label
  d=$(mktemp -d); port=$((40000 + RANDOM % 20000)); mport=$((port+1))
  "$1" serve --data-dir "$d" --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:$mport --durability ${MODE:-buffered} >/dev/null 2>&1 &
  pid=$!; sleep 1.5
  out=$("$1" bench --server http://127.0.0.1:$port --messages 100000 --latency-secs 5 --no-idempotency --mode $( [ "${MODE:-buffered}" = fsync ] && echo fsync || echo os) 2>/dev/null)
  kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
  echo "$2 $(echo $out | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print(j["pub_msgs_s"], j["consume_msgs_s"], j["lat_p50_us"], j["lat_p99_us"])')"
}
echo "label publish/s consume/s p50_us p99_us"
for _ in 1 2; do
  run "${BASE:?set BASE}" base
  run "${NEW:?set NEW}" new
done
