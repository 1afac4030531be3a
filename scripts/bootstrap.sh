#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and test eventbus:
#   - clang + libclang-dev: RocksDB's bindgen needs libclang
#   - ccache:               caches the RocksDB C++ build across Cargo fingerprint changes
#   - Node.js + npm:        for buf (contract lint and `buf curl`), if missing
#   - buf:                  npm package @bufbuild/buf, into .tools/ (not global)
# protoc needs nothing: it is vendored through the protoc-bin-vendored crate.
# Idempotent and quiet when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

BOOTSTRAP_NAME=bootstrap
. scripts/lib.sh

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v ccache >/dev/null 2>&1 || missing+=(ccache)
apt_install_missing

BUF_VERSION=1.75.0
if [ ! -x .tools/node_modules/.bin/buf ] || ! .tools/node_modules/.bin/buf --version 2>/dev/null | grep -q "^$BUF_VERSION"; then
  echo "bootstrap: installing buf $BUF_VERSION into .tools/" >&2
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools "@bufbuild/buf@$BUF_VERSION" >/dev/null
fi
