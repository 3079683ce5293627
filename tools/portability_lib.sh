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

# -- qemu-user >= 10, shared by the aarch64 environments (env_device_aarch64*.sh) ----------------
# Debian 12's own qemu-user (7.2) crashes when ai-edge-litert >= 2.2 builds an interpreter; qemu 10
# from bookworm-backports works. On bookworm this adds the APT source
# /etc/apt/sources.list.d/bookworm-backports.sources (when no source names bookworm-backports) and
# installs qemu-user from it without recommends, so qemu-user-binfmt registers no kernel handlers.
qemu_major() {
  command -v qemu-aarch64 >/dev/null 2>&1 || { echo 0; return; }
  qemu-aarch64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -n1
}

need_qemu_aarch64_10() {
  [ "$(qemu_major)" -ge 10 ] && return 0
  log "installing qemu-user (>= 10) from bookworm-backports"
  local codename release=()
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ "$codename" = bookworm ] &&
    ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    as_root tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  fi
  as_root apt-get update -qq
  [ "$codename" = bookworm ] && release=(-t bookworm-backports)
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${release[@]}" qemu-user >/dev/null
  [ "$(qemu_major)" -ge 10 ] || { log "qemu-aarch64 $(qemu_major).x is too old (need 10)"; return 1; }
}
