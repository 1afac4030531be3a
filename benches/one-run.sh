#!/bin/bash
# One benchmark run on a fresh server, printing eventbus bench's JSON line,
# then the server's WAL sync figures (fsync mode):
#   benches/one-run.sh BIN fsync|buffered [eventbus bench flags...]
# e.g. benches/one-run.sh target/release/eventbus fsync --phases publish
# The server gets a temp data dir and ports on 127.0.0.1, and is stopped by
# PID. PERF=file records the server with perf for PERF_SECS (4) seconds,
# starting PERF_DELAY (1) seconds into the run, with frame-pointer call graphs
# (PERF_CG="--call-graph dwarf,16384" for DWARF ones).
set -u
BIN=$1; MODE=$2; shift 2
d=$(mktemp -d); port=$((40000 + RANDOM % 20000)); mport=$((port + 1))
"$BIN" serve --data-dir "$d" --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:$mport \
  --durability "$MODE" >/dev/null 2>&1 &
pid=$!; sleep 1.5
label=$([ "$MODE" = fsync ] && echo fsync || echo os)
# An older build may not know --server-pid.
if "$BIN" bench --help | grep -q server-pid; then sp="--server-pid $pid"; else sp=""; fi
if [ -n "${PERF:-}" ]; then
  (sleep "${PERF_DELAY:-1}"; perf record -F 999 ${PERF_CG:--g} -p $pid -o "$PERF" -- sleep "${PERF_SECS:-4}" >/dev/null 2>&1) &
fi
# CPU time stolen by the hypervisor during the run (this machine is a VM
# whose speed drifts; a run with much steal is not comparable).
steal() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print $9, t}' /proc/stat; }
read -r s0 t0 < <(steal)
# shellcheck disable=SC2086
"$BIN" bench --server http://127.0.0.1:$port --mode "$label" $sp "$@" 2>/dev/null
read -r s1 t1 < <(steal)
awk -v s=$((s1 - s0)) -v t=$((t1 - t0)) 'BEGIN { printf "steal %.1f%%\n", 100 * s / t }' >&2
curl -s "http://127.0.0.1:$mport/metrics" | awk '
  /^eventbus_wal_sync_seconds_count/ {n=$2} /^eventbus_wal_sync_seconds_sum/ {s=$2}
  /^eventbus_wal_sync_events_sum/ {e=$2}
  END { if (n > 0) printf "wal syncs=%d events_per_sync=%.1f mean_sync_ms=%.3f\n", n, e/n, 1000*s/n }' >&2
kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
