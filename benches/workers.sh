#!/bin/bash
# One benchmark run with the server's and the load tool's async workers set:
#   benches/workers.sh BIN fsync|buffered SERVER_WORKERS TOOL_WORKERS [eventbus bench flags...]
# e.g. benches/workers.sh target/release/eventbus buffered 1 2 --phases publish,consume
# Prints eventbus bench's JSON line. The server gets a temp data dir and
# ports on 127.0.0.1 and is stopped by PID. Its workers are set with
# `worker-threads` (EVENTBUS_WORKER_THREADS) and, for builds before that key,
# tokio's TOKIO_WORKER_THREADS; the load tool's with TOKIO_WORKER_THREADS.
set -u
BIN=$1; MODE=$2; SERVER_WORKERS=$3; TOOL_WORKERS=$4; shift 4
d=$(mktemp -d); port=$((40000 + RANDOM % 20000)); mport=$((port + 1))
EVENTBUS_WORKER_THREADS=$SERVER_WORKERS TOKIO_WORKER_THREADS=$SERVER_WORKERS \
  "$BIN" serve --data-dir "$d" --listen 127.0.0.1:$port --metrics-listen 127.0.0.1:$mport \
  --durability "$MODE" >/dev/null 2>&1 &
pid=$!; sleep 1.5
label=$([ "$MODE" = fsync ] && echo fsync || echo os)
# shellcheck disable=SC2086
TOKIO_WORKER_THREADS=$TOOL_WORKERS "$BIN" bench --server http://127.0.0.1:$port --mode "$label" \
  --server-pid $pid "$@" 2>/dev/null
kill $pid; wait $pid 2>/dev/null; rm -rf "$d"
