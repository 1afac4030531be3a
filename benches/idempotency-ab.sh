#!/bin/bash
# What the SDK's default idempotency keys cost: per build, one publish run with
# keys and one with --no-idempotency, back to back; builds take turns.
#   benches/idempotency-ab.sh ROUNDS fsync|buffered BIN...
# Prints per run: label, events/s, server and load-tool CPU per event, steal.
# The figure to read is keys/none within each pair (the machine drifts).
set -u
cd "$(dirname "$0")/.."
R=$1; MODE=$2; shift 2
err=$(mktemp)
run() { label=$1; bin=$2; shift 2
  out=$(benches/one-run.sh "$bin" "$MODE" --phases publish --latency-secs 0 --messages 200000 "$@" 2>"$err")
  echo "$label $(echo "$out" | python3 -c 'import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(j["pub_msgs_s"], j.get("pub_server_cpu_us"), j.get("pub_client_cpu_us"))') $(grep steal "$err")"
}
for _ in $(seq "$R"); do
  for b in "$@"; do
    run "$(basename "$b") keys" "$b"
    run "$(basename "$b") none" "$b" --no-idempotency
  done
done
rm -f "$err"
