#!/bin/bash
# CPU time of each server thread (by name) during one benchmark run:
#   benches/thread-cpu.sh BIN fsync|buffered [eventbus bench flags...]
# e.g. benches/thread-cpu.sh target/release/eventbus fsync --phases publish --no-idempotency
# Prints the bench's rates and CPU per event, then user and system CPU in
# seconds per thread name (tokio's workers are "eventbus"; the storage
# engine's are eventbus-writer, eventbus-syncer and rocksdb:*), read from
# /proc/PID/task/*/stat before and after. The server gets a temp data dir
# and ports on 127.0.0.1, and is stopped by PID.
set -u
BIN=$1; MODE=$2; shift 2
d=$(mktemp -d); port=$((40000 + RANDOM % 20000)); mport=$((port + 1))
"$BIN" serve --data-dir "$d" --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:$mport \
  --durability "$MODE" >/dev/null 2>&1 &
pid=$!; sleep 1.5
hz=$(getconf CLK_TCK)
# Sums utime and stime (fields 14 and 15) per thread name.
snapshot() {
  for t in /proc/$pid/task/*; do
    echo "$(tr ' ' _ < "$t/comm") $(cut -d')' -f2 "$t/stat" | awk '{print $12, $13}')"
  done | awk '{u[$1]+=$2; s[$1]+=$3} END {for (k in u) print k, u[k], s[k]}' | sort
}
before=$(snapshot)
label=$([ "$MODE" = fsync ] && echo fsync || echo os)
"$BIN" bench --server http://127.0.0.1:$port --mode "$label" --server-pid $pid "$@" 2>/dev/null |
  python3 -c 'import json,sys; j=json.loads(sys.stdin.read()); print({k: v for k, v in j.items() if k.endswith(("msgs_s", "cpu_us"))})'
after=$(snapshot)
join <(echo "$before") <(echo "$after") | awk -v hz="$hz" '{
  u = ($4 - $2) / hz; s = ($5 - $3) / hz
  if (u + s > 0) printf "%-18s user %.2f s  system %.2f s\n", $1, u, s }'
kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
