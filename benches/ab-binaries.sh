#!/bin/bash
# A/B of two eventbus release binaries on the same workload, alternating, without peers.
# Usage: MODE=fsync|buffered BASE=path/to/eventbus NEW=path/to/eventbus benches/ab-binaries.sh
# Each run is benches/one-run.sh (a fresh server on a temp data dir, stopped
# by PID) with 100k events, a 5 s latency phase and no idempotency keys.
# Prints: label publish/s consume/s p50_us p99_us. Used in BENCHMARKS.md (issue 12).
set -u
here=$(dirname "$0")
run() {  # $1 bin, $2 label
  out=$("$here/one-run.sh" "$1" "${MODE:-buffered}" --messages 100000 --latency-secs 5 --no-idempotency 2>/dev/null)
  echo "$2 $(echo "$out" | python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print(j["pub_msgs_s"], j["consume_msgs_s"], j["lat_p50_us"], j["lat_p99_us"])')"
}
echo "label publish/s consume/s p50_us p99_us"
for _ in 1 2; do
  run "${BASE:?set BASE}" base
  run "${NEW:?set NEW}" new
done
