#!/bin/bash
# Slow group commits during the latency phase, after a publish phase:
#   benches/latency-stalls.sh BIN [SECONDS] [publish-phase flags...]
# e.g. benches/latency-stalls.sh target/release/eventbus 35 --messages 200000
# Runs `eventbus bench --phases publish` with the flags, then, against the
# same server, `--phases latency` for SECONDS (default 35), and prints the
# latency percentiles and how many group commits, Publish calls and first
# deliveries (publish to delivery, in the server) of the latency phase alone
# took over 5, 10 and 25 ms (from the server's histograms, read before and
# after it). Buffered mode; the server gets a
# temp data dir and ports on 127.0.0.1, and is stopped by PID.
set -u
BIN=$1; SECS=${2:-35}; shift 2 || shift $#
d=$(mktemp -d); port=$((40000 + RANDOM % 20000)); mport=$((port + 1))
"$BIN" serve --data-dir "$d" --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:$mport \
  --durability buffered >/dev/null 2>&1 &
pid=$!; sleep 1.5
"$BIN" bench --server http://127.0.0.1:$port --mode os --phases publish "$@" >/dev/null 2>&1
before=$(curl -s "http://127.0.0.1:$mport/metrics")
"$BIN" bench --server http://127.0.0.1:$port --mode os --phases latency --latency-secs "$SECS" 2>/dev/null |
  python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print("latency us: p50", j["lat_p50_us"], "p99", j["lat_p99_us"], "p99.9", j["lat_p999_us"], "max", j["lat_max_us"])'
after=$(curl -s "http://127.0.0.1:$mport/metrics")
kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
python3 - "$before" "$after" <<'PY'
import sys
def buckets(text, name):
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            out[le] = float(line.split()[-1])
    return out
for name in ("eventbus_commit_duration_seconds", "eventbus_publish_duration_seconds",
             "eventbus_delivery_latency_seconds"):
    a, b = buckets(sys.argv[1], name), buckets(sys.argv[2], name)
    d = {le: b[le] - a.get(le, 0) for le in b}
    total = d["+Inf"]
    over = ", ".join(f"> {float(le) * 1000:g} ms: {total - d[le]:.0f}" for le in ("0.005", "0.01", "0.025"))
    print(f"{name}: {total:.0f} in the latency phase; {over}")
PY
