#!/bin/bash
# Quota isolation (issue 13): the p99 of a well-behaved publisher with and
# without a flooding neighbour, and with the neighbour unlimited.
#
# Usage: EVENTBUS=path/to/release/eventbus benches/quota-isolation.sh [RUNS]
#
# Each scenario starts `serve` with two API-key principals ("good", "noisy")
# on a fresh temp data dir and free ports on 127.0.0.1 (fsync durability, the
# default), runs `eventbus bench --phases latency` as "good" at 2,000 events/s
# for 20 s (publish to delivery latency, no coordinated omission), and stops
# the server by PID. The neighbour is a second `eventbus bench --phases flood`
# process as "noisy": 4 connections x 8 publishes x 100 events in flight,
# ignoring RetryInfo. Scenarios, in turn, RUNS times (default 2):
#   alone       no neighbour; quotas on
#   flood       the neighbour over its 5,000 events/s quota
#   flood-nice  the same, the neighbour at nice 19: what the server does,
#               without the flooding client's own CPU on these 2 shared cores
#   unlimited   the same flood with no quotas configured
# Prints one line per run: scenario p50_us p99_us p999_us received/sent
# flood_accepted flood_refused. Used in BENCHMARKS.md ("Quotas").
set -euo pipefail
BIN=${EVENTBUS:?set EVENTBUS to a release eventbus binary}
RUNS=${1:-2}
GOOD=good-$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
NOISY=noisy-$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # $1 scenario
  local dir port mport quota pid fpid=  out fout
  dir=$(mktemp -d); port=$(free_port); mport=$(free_port)
  quota=5000; [ "$1" = unlimited ] && quota=0
  cat >"$dir/eventbus.toml" <<EOF
data-dir = "$dir/data"
listen = "127.0.0.1:$port"
metrics-listen = "127.0.0.1:$mport"
[[auth.api-keys]]
principal = "good"
sha256 = "$(sha "$GOOD")"
grants = ["admin:>"]
[[auth.api-keys]]
principal = "noisy"
sha256 = "$(sha "$NOISY")"
grants = ["publish:>"]
[auth.quotas]
publish-events-per-second = $quota
EOF
  "$BIN" serve --config "$dir/eventbus.toml" >"$dir/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  if [ "$1" != alone ]; then
    nice=0; [ "$1" = flood-nice ] && nice=19
    nice -n $nice "$BIN" bench --server "http://127.0.0.1:$port" --api-key "$NOISY" \
      --phases flood --latency-secs 21 >"$dir/flood.json" 2>"$dir/flood.err" &
    fpid=$!
    sleep 0.5
  fi
  out=$("$BIN" bench --server "http://127.0.0.1:$port" --api-key "$GOOD" \
    --phases latency --rate 2000 --latency-secs 20 2>"$dir/bench.err") || {
    cat "$dir/bench.err" "$dir/server.log" >&2; kill "$pid"; exit 1; }
  fout='{}'
  if [ -n "$fpid" ]; then wait "$fpid" || true; fout=$(cat "$dir/flood.json"); fi
  kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$dir"
  echo "$1 $(printf '%s\n%s\n' "$out" "$fout" | python3 -c 'import json,sys; j=json.loads(sys.stdin.readline()); f=json.loads(sys.stdin.readline()); print(j["lat_p50_us"], j["lat_p99_us"], j["lat_p999_us"], "%d/%d" % (j["lat_received"], j["lat_sent"]), f.get("flood_accepted", "-"), f.get("flood_refused", "-"))')"
}

echo "scenario p50_us p99_us p999_us received/sent flood_accepted flood_refused"
for _ in $(seq "$RUNS"); do
  run alone
  run flood
  run flood-nice
  run unlimited
done
