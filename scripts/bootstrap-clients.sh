#!/usr/bin/env bash
# Installs the toolchains of the generated clients (sdk/python, sdk/typescript,
# sdk/go), for `cargo xtask gen-clients | check | test-clients`:
#   - Python: python3 + venv (apt-get when missing), then a venv in .tools/py
#             with the exact pins of sdk/python/requirements-tools.txt (PyPI)
#   - TypeScript: `npm ci` in sdk/typescript (pins in its package-lock.json)
#   - Go: Debian's Go 1.19, protoc-gen-go, protoc-gen-go-grpc and the grpc-go /
#         protobuf sources under /usr/share/gocode (apt-get; no module downloads)
# Run scripts/bootstrap.sh first (node, npm, buf). Idempotent, and quiet when
# everything is present: each step checks what is installed before installing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap-clients: need root (or sudo) to run: $*" >&2; exit 1; fi
}

# --- Debian packages --------------------------------------------------------
# Go and its gRPC stack come only from Debian (bookworm): Go 1.19, grpc-go
# 1.33, protobuf-go 1.28. golang-github-golang-protobuf-1-5-dev must be named:
# with the 1.3 API the client compiles but panics at runtime.
GO_PKGS=(golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
  golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev)
missing=()
for p in "${GO_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "bootstrap-clients: please install: ${missing[*]}" >&2; exit 1
  fi
  echo "bootstrap-clients: installing ${missing[*]} with apt-get" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- Python -----------------------------------------------------------------
# The venv is rebuilt when the pins change (their hash is stored in the venv).
PY_REQ=sdk/python/requirements-tools.txt
py_stamp=.tools/py/.requirements.sha256
want=$(sha256sum "$PY_REQ" | cut -d' ' -f1)
if [ ! -x .tools/py/bin/python ] || ! .tools/py/bin/python -c '' 2>/dev/null \
  || [ "$(cat "$py_stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap-clients: creating the Python venv .tools/py from $PY_REQ" >&2
  rm -rf .tools/py
  python3 -m venv .tools/py
  .tools/py/bin/python -m pip install --quiet --disable-pip-version-check \
    --no-input -r "$PY_REQ"
  echo "$want" >"$py_stamp"
fi

# --- TypeScript -------------------------------------------------------------
# `npm ci` installs exactly package-lock.json; package.json pins exact
# versions, so `npm ls` fails whenever node_modules does not match them.
if [ ! -d sdk/typescript/node_modules ] || ! npm ls --prefix sdk/typescript >/dev/null 2>&1; then
  echo "bootstrap-clients: npm ci in sdk/typescript" >&2
  npm ci --silent --no-audit --no-fund --prefix sdk/typescript >/dev/null 2>&1 \
    || npm ci --no-audit --no-fund --prefix sdk/typescript
fi
