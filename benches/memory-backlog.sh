#!/bin/bash
# Memory with a 1M-event backlog and a subscriber that never acks
# (BENCHMARKS.md): server RSS after publishing 1M events, then again after
# a subscriber that never acks has been attached for 15 s.
#   benches/memory-backlog.sh BIN [EVENTS]
set -u
BIN=$1; N=${2:-1000000}
d=$(mktemp -d); port=$((40000 + RANDOM % 20000))
"$BIN" serve --data-dir "$d" --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:0 \
  --durability buffered >/dev/null 2>&1 &
pid=$!; sleep 1.5
addr=http://127.0.0.1:$port
"$BIN" bench --server $addr --messages "$N" --phases publish --no-idempotency \
  --latency-secs 0 --phase-timeout 300 >/dev/null 2>&1
rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' /proc/$pid/status; }
before=$(rss)
topic=$("$BIN" --server $addr topic list 2>/dev/null | awk 'NR > 1 && $1 ~ /bench/ {print $1; exit}')
"$BIN" --server $addr subscribe "$topic" bench >/dev/null 2>&1 &
sub=$!; sleep 15
after=$(rss)
echo "backlog $N events on $topic: server RSS ${before} MiB before, ${after} MiB with a never-acking subscriber for 15 s"
"$BIN" --server $addr sub describe "$topic" bench 2>/dev/null | grep -iE "backlog|in.flight" || true
kill $sub 2>/dev/null; kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
