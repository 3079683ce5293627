# shellcheck shell=bash
# Shared by tools/env_device_*.sh and tools/test_portability.sh (sourced, not run).
#
# Every device environment lives under .cache/portability/ (gitignored) and is built once: a stamp
# file holds the hash of what it was built from (the script, pyproject.toml), so a warm run only
# reinstalls edge-sdk itself, which changes with every commit. The stamp is written last, so an
# interrupted build is never mistaken for a finished one. `rm -rf .cache/portability` forces a
# cold rebuild.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORTABILITY="$REPO/.cache/portability"
mkdir -p "$PORTABILITY"

# Run a command as root (CI and this machine are root; elsewhere sudo).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# A python with pip for host-side work (building the edge-sdk wheel, pip --target installs for
# another platform): the dev venv when tools/test.sh has made it, else the system python.
host_python() {
  if [ -x "$REPO/.venv/bin/python" ]; then echo "$REPO/.venv/bin/python"; else command -v python3; fi
}

# The hash of the given files plus extra strings: what an environment was built from.
inputs_hash() {
  { for f in "$@"; do if [ -f "$f" ]; then sha256sum "$f"; else echo "$f"; fi; done; } |
    sha256sum | cut -c1-16
}

stamp_matches() { # DIR HASH
  [ -f "$1/.stamp" ] && [ "$(cat "$1/.stamp")" = "$2" ]
}

# Build edge-sdk's wheel from the working tree into DIR (emptied first); print its path.
# Built once per call so every environment tests the same bytes the user would install.
build_wheel() { # DIR
  rm -rf "$1" && mkdir -p "$1"
  "$(host_python)" -m pip wheel --quiet --no-deps --disable-pip-version-check -w "$1" "$REPO" \
    >/dev/null 2>"$1/build.log" || { cat "$1/build.log" >&2; return 1; }
  ls "$1"/*.whl
}

log() { echo "[portability] $*" >&2; }

# Run a command with its output kept in LOG; show the log only when the command fails.
# (pip is chatty, and this machine's pip configuration adds warnings about absent local indexes.)
quietly() { # LOG CMD...
  local out=$1
  shift
  "$@" >"$out" 2>&1 || { log "failed: $*"; tail -n 40 "$out" >&2; return 1; }
}
