#!/usr/bin/env bash
# Installs what `cargo xtask deny` needs to check the dependencies offline
# (advisories, bans, licenses, sources; config in deny.toml):
#   - cargo-deny, pinned (cargo install --locked: about 8 minutes on 2 cores,
#     once)
#   - the RustSec advisory database: a clone of the offline snapshot
#     ../shared/advisory-db/advisory-db.bundle (or $EVENTBUS_ADVISORY_DB)
#     where deny.toml's db-path looks for it, cloned again whenever the
#     snapshot changes. CI cannot fetch the live database.
# Idempotent and quiet when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

BOOTSTRAP_NAME=bootstrap-deny
. scripts/lib.sh

CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "$BOOTSTRAP_NAME: installing cargo-deny $CARGO_DENY_VERSION (cargo install, a few minutes)" >&2
  cargo install --quiet --locked --version "$CARGO_DENY_VERSION" cargo-deny
fi

bundle=${EVENTBUS_ADVISORY_DB:-../shared/advisory-db/advisory-db.bundle}
if [ ! -f "$bundle" ]; then
  echo "$BOOTSTRAP_NAME: no advisory database snapshot at $bundle: put a git bundle of" \
    "rustsec/advisory-db there, or point EVENTBUS_ADVISORY_DB at one" >&2
  exit 1
fi
# cargo-deny keeps each database in <db-path>/<name derived from its URL>;
# for the default URL (deny.toml's db-urls) that name is this one.
db=$HOME/.cache/advisory-dbs/advisory-db-3157b0e258782691
want=$(git bundle list-heads "$bundle" | awk 'NR == 1 { print $1 }')
have=$(git -C "$db" rev-parse HEAD 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "$BOOTSTRAP_NAME: cloning the advisory database snapshot $want into $db" >&2
  rm -rf "$db"
  mkdir -p "$(dirname "$db")"
  git clone -q "$bundle" "$db"
fi
