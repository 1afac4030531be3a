# Shared steps of the bootstrap scripts (sourced, not run). Each script sets
# BOOTSTRAP_NAME (its name in messages) before sourcing this file. Every step
# checks what is installed first, so a script is quiet and fast when nothing
# is missing.

# Runs a command as root: directly when root, else through sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "$BOOTSTRAP_NAME: need root (or sudo) to run: $*" >&2; exit 1; fi
}

# Adds python3 and its venv module to the array `missing` when absent.
need_python_venv() {
  if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
  elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
}

# Installs the Debian packages named in the array `missing`, if any, with
# apt-get (without recommends); asks the user where there is no apt-get.
apt_install_missing() {
  [ ${#missing[@]} -gt 0 ] || return 0
  if ! command -v apt-get >/dev/null; then
    echo "$BOOTSTRAP_NAME: please install: ${missing[*]}" >&2; exit 1
  fi
  echo "$BOOTSTRAP_NAME: installing ${missing[*]} with apt-get" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# pinned_venv DIR REQUIREMENTS: a venv in DIR with exactly the pins of
# REQUIREMENTS, rebuilt when the pins change (their hash is stored in DIR).
pinned_venv() {
  local dir=$1 req=$2 stamp want
  stamp=$dir/.requirements.sha256
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -c '' 2>/dev/null \
    || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "$BOOTSTRAP_NAME: creating the Python venv $dir from $req" >&2
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
    echo "$want" >"$stamp"
  fi
}

# npm_ci PREFIX: `npm ci` of PREFIX's package-lock.json, quiet unless it fails
# (then once more, showing npm's output).
npm_ci() {
  npm ci --silent --no-audit --no-fund --prefix "$1" >/dev/null 2>&1 \
    || npm ci --no-audit --no-fund --prefix "$1"
}
