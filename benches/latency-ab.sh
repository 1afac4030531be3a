#!/bin/bash
# benches/latency-ab.sh MODE PAIRS SECS BIN_A BIN_B: two builds alternating on the
# latency phase (10k/s, no idempotency keys), each on a fresh server; prints
# label p50 p99 p999 max server_cpu_us_per_event hot_reads rocksdb_reads
MODE=$1; PAIRS=$2; SECS=$3; A=$4; B=$5
label=$([ "$MODE" = fsync ] && echo fsync || echo os)
run() {
  BIN=$1; d=$(mktemp -d); port=$((40000 + RANDOM % 20000)); mport=$((port + 1))
  "$BIN" serve --data-dir "$d" --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:$mport --durability "$MODE" >/dev/null 2>&1 &
  pid=$!; sleep 1.5
  c0=$(awk '{print $14+$15}' /proc/$pid/stat)
  j=$("$BIN" bench --server http://127.0.0.1:$port --mode $label --phases latency --latency-secs $SECS --no-idempotency 2>/dev/null)
  c1=$(awk '{print $14+$15}' /proc/$pid/stat)
  m=$(curl -s http://127.0.0.1:$mport/metrics)
  hot=$(echo "$m" | awk -F' ' '/^eventbus_subscription_reads_total\{from="hot_tail"\}/{print $2}')
  cold=$(echo "$m" | awk -F' ' '/^eventbus_subscription_reads_total\{from="rocksdb"\}/{print $2}')
  kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
  echo "$j" | python3 -c "import json,sys; j=json.loads(sys.stdin.read()); n=j['lat_received']; print('$2', j['lat_p50_us'], j['lat_p99_us'], j['lat_p999_us'], j['lat_max_us'], round(($c1-$c0)*10000/n,2), '${hot:-0}', '${cold:-0}')"
}
for _ in $(seq $PAIRS); do run "$A" A; run "$B" B; done
