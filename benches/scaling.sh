#!/bin/bash
# The scaling curves (BENCHMARKS.md, "Scaling"): publish and consume+ack
# throughput, and the server's CPU per event, with one workload flag varied
# at a time from the defaults (4 partitions, 4 connections/members, depth
# 64, 256 B, no idempotency keys, fsync). Each row is ROUNDS runs of
# benches/one-run.sh (a fresh server on a temp data dir), medians printed;
# with several binaries the rounds alternate between them, so every build
# meets the same drift.
#   benches/scaling.sh ROUNDS BIN [BIN...]
# e.g. benches/scaling.sh 3 /tmp/eb-before target/release/eventbus
set -u
here=$(dirname "$0")
rounds=$1; shift
rows=(
  "--partitions 1" "--partitions 2" "--partitions 4" "--partitions 8"
  "--publishers 1" "--publishers 2" "--publishers 4" "--publishers 8"
  "--payload 64" "--payload 1024" "--payload 16384"
)
echo "row | binary | publish/s | consume+ack/s | server µs/event publish | consume | runs (publish; consume)"
for row in "${rows[@]}"; do
  declare -A pub=() con=() spub=() scon=()
  for _ in $(seq 1 "$rounds"); do
    for bin in "$@"; do
      # shellcheck disable=SC2086
      line=$("$here/one-run.sh" "$bin" fsync --phases publish,consume --latency-secs 0 \
        --no-idempotency --messages 100000 $row 2>/dev/null | head -1)
      read -r p c sp sc < <(echo "$line" | python3 -c 'import json,sys
j=json.loads(sys.stdin.readline())
print(j.get("pub_msgs_s",0), j.get("consume_msgs_s",0), j.get("pub_server_cpu_us",0), j.get("consume_server_cpu_us",0))')
      pub[$bin]+="$p "; con[$bin]+="$c "; spub[$bin]+="$sp "; scon[$bin]+="$sc "
    done
  done
  for bin in "$@"; do
    python3 - "$row" "$bin" "${pub[$bin]}" "${con[$bin]}" "${spub[$bin]}" "${scon[$bin]}" <<'PY'
import statistics as s, sys
row, binary, *cols = sys.argv[1:]
p, c, sp, sc = ([float(x) for x in col.split()] for col in cols)
k = lambda xs: " ".join(f"{x/1000:.1f}k" for xs_ in [xs] for x in xs_)
print(f"{row} | {binary} | {s.median(p):,.0f} | {s.median(c):,.0f} | {s.median(sp):.2f} | {s.median(sc):.2f} | {k(p)}; {k(c)}")
PY
  done
  unset pub con spub scon
done
