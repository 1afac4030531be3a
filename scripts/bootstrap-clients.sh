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

BOOTSTRAP_NAME=bootstrap-clients
. scripts/lib.sh

# --- Debian packages --------------------------------------------------------
# Go and its gRPC stack come only from Debian (bookworm): Go 1.19, grpc-go
# 1.33, protobuf-go 1.28. golang-github-golang-protobuf-1-5-dev must be named:
# with the 1.3 API the client compiles but panics at runtime.
GO_PKGS=(golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
  golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev)
missing=()
for p in "${GO_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
need_python_venv
apt_install_missing

# --- Python -----------------------------------------------------------------
pinned_venv .tools/py sdk/python/requirements-tools.txt

# --- TypeScript -------------------------------------------------------------
# `npm ci` installs exactly package-lock.json; package.json pins exact
# versions, so `npm ls` fails whenever node_modules does not match them.
if [ ! -d sdk/typescript/node_modules ] || ! npm ls --prefix sdk/typescript >/dev/null 2>&1; then
  echo "bootstrap-clients: npm ci in sdk/typescript" >&2
  npm_ci sdk/typescript
fi
