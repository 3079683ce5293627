#!/usr/bin/env bash
# aarch64 device install with Debian 13 (trixie)'s CPython 3.13 — the Python of Raspberry Pi OS
# on trixie — under qemu user-mode emulation, on an x86_64 machine:
#
#   .cache/portability/aarch64-trixie/python-litert   ai-edge-litert (edge-sdk[device]) + pytest
#
#   bash tools/env_device_aarch64_trixie.sh   # line 1: the launcher; line 2: why there is no
#                                             # tflite-runtime 2.14 environment ("unavailable: …")
#
# Like tools/env_device_aarch64.sh (bookworm, CPython 3.11), with these differences:
#
# - the packages: trixie's arm64 .debs come from Debian's archive through an APT configuration
#   private to .cache/portability/aarch64-trixie/apt (its own sources, lists, dpkg status and
#   download directory; none of the machine's APT configuration is read or changed, so no
#   `dpkg --add-architecture`, no system `apt-get update`). apt resolves the dependency closure of
#   python3.13 and libstdc++6 against an empty dpkg status, checks each suite's InRelease signature
#   against /usr/share/keyrings/debian-archive-keyring.gpg (Signed-By) and every .deb's SHA256
#   against the signed Packages index; the InRelease signatures are checked once more here with
#   gpgv, and the script stops unless they are good. `dpkg -x` unpacks the .debs into a private
#   root; debs.txt lists what went in (package, version, SHA256).
# - the root: trixie's packages ship everything under /usr (merged /usr); base-files, which
#   provides the /bin, /lib and /sbin links on a real system, is not needed otherwise, so the links
#   are made here (the ELF interpreter is /lib/ld-linux-aarch64.so.1).
# - tflite-runtime 2.14 cannot be installed on CPython 3.13: PyPI has no tflite-runtime release
#   with a cp313 aarch64 wheel, and none with an sdist to build from (2.14.0 has wheels up to
#   cp311). Rather than assume it, every run asks pip: the script fails if pip finds one (then
#   that environment should be added) or fails for another reason, and otherwise prints the
#   reason as line 2 for the portability table.
#
# qemu-aarch64 >= 10 as for the bookworm environment (need_qemu_aarch64_10 in portability_lib.sh),
# emulating a Cortex-A72 (the Raspberry Pi 4's core; trixie runs on the Pi 4 and Pi 5).
# Cached under .cache/portability/aarch64-trixie; `rm -rf` it to rebuild from scratch.
set -euo pipefail
# shellcheck source=tools/portability_lib.sh
source "$(dirname "$0")/portability_lib.sh"

DIR="$PORTABILITY/aarch64-trixie"
ROOTFS="$DIR/rootfs"
APTDIR="$DIR/apt"
QEMU_CPU=cortex-a72
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p "$DIR"

# What to fetch: apt adds the dependency closure (glibc, libssl3t64, libffi8, tzdata, …).
# libstdc++6 is not a dependency of python3.13 but the LiteRT and numpy wheels link against it.
DEBS=(python3.13 libstdc++6)

# The manylinux levels trixie's glibc (2.41) can run, and CPython 3.13's tags.
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 17 41); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done
PIP_TAGS=(
  --only-binary=:all: "${PLATFORMS[@]}" --python-version 3.13 --implementation cp
  --abi cp313 --abi abi3 --abi none --disable-pip-version-check
)
PIP_TARGET_ARGS=("${PIP_TAGS[@]}" --no-warn-conflicts)

need_qemu_aarch64_10

# -- trixie's arm64 CPython root ------------------------------------------------------------------
# apt run with this configuration only: APT_CONFIG replaces /etc/apt/apt.conf, and Dir::Etc::parts
# points at an empty directory so that no /etc/apt/apt.conf.d hook of the machine runs either.
apt_private() {
  APT_CONFIG="$APTDIR/apt.conf" DEBIAN_FRONTEND=noninteractive apt-get "$@"
}

fetch_trixie_debs() {
  rm -rf "$APTDIR" && mkdir -p "$APTDIR"/{etc/apt.conf.d,etc/preferences.d,etc/trusted.gpg.d} \
    "$APTDIR"/{etc/sources.list.d,lists/partial,archives/partial,cache}
  : >"$APTDIR/status"
  cat >"$APTDIR/etc/sources.list.d/trixie.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie trixie-updates
Components: main
Signed-By: $KEYRING

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: trixie-security
Components: main
Signed-By: $KEYRING
EOF
  # As root, apt downloads as its sandbox user _apt, which cannot write here: download as the
  # caller instead.
  cat >"$APTDIR/apt.conf" <<EOF
Dir::Etc "$APTDIR/etc";
Dir::Etc::main "/dev/null";
Dir::Etc::parts "$APTDIR/etc/apt.conf.d";
Dir::Etc::sourcelist "/dev/null";
Dir::Etc::sourceparts "$APTDIR/etc/sources.list.d";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts "$APTDIR/etc/preferences.d";
Dir::Etc::trusted "/dev/null";
Dir::Etc::trustedparts "$APTDIR/etc/trusted.gpg.d";
Dir::State "$APTDIR";
Dir::State::lists "$APTDIR/lists";
Dir::State::status "$APTDIR/status";
Dir::Cache "$APTDIR/cache";
Dir::Cache::archives "$APTDIR/archives";
Dir::Log "$APTDIR";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
APT::Sandbox::User "$(id -un)";
Acquire::Languages "none";
EOF
  log "fetching Debian trixie's arm64 package lists (apt, private configuration in $APTDIR)"
  quietly "$DIR/apt-update.log" apt_private update
  # apt already refused anything unsigned; this states which keys signed what, for the log.
  local release out
  : >"$DIR/gpgv.log"
  for release in "$APTDIR"/lists/*_InRelease; do
    out=$(gpgv --keyring "$KEYRING" "$release" 2>&1) ||
      { log "bad signature on $release:"; echo "$out" >&2; return 1; }
    echo "$release: $out" >>"$DIR/gpgv.log"
    log "  $(basename "$release"): good signatures by" \
      "$(echo "$out" | sed -n 's/^gpgv: Good signature from "\(.*\)".*/\1/p' | paste -sd';')"
  done
  log "downloading ${DEBS[*]} and their dependency closure (arm64, verified against Packages)"
  quietly "$DIR/apt-download.log" apt_private install --download-only -y "${DEBS[@]}"
  ls "$APTDIR"/archives/*.deb >/dev/null
}

root_hash=$(inputs_hash "$0")
if ! stamp_matches "$ROOTFS" "$root_hash"; then
  [ -f "$KEYRING" ] || { log "$KEYRING is missing: apt-get install debian-archive-keyring"; exit 1; }
  fetch_trixie_debs
  log "assembling an arm64 CPython 3.13 root from $(ls "$APTDIR"/archives/*.deb | wc -l) packages"
  rm -rf "$ROOTFS" && mkdir -p "$ROOTFS"
  : >"$DIR/debs.txt"
  for deb in "$APTDIR"/archives/*.deb; do
    dpkg -x "$deb" "$ROOTFS"
    echo "$(dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}' "$deb")" \
      "$(sha256sum "$deb" | cut -c1-64)" >>"$DIR/debs.txt"
  done
  for link in bin lib sbin; do [ -e "$ROOTFS/$link" ] || ln -s "usr/$link" "$ROOTFS/$link"; done
  echo "$root_hash" >"$ROOTFS/.stamp"
fi

# -- site directory ------------------------------------------------------------------------------
wheel=$(build_wheel "$DIR/wheel")
pip=("$(host_python)" -m pip)
site="$DIR/site-litert"
site_hash=$(inputs_hash "$0" "$REPO/pyproject.toml")
if ! stamp_matches "$site" "$site_hash"; then
  log "installing aarch64 cp313 wheels into $site"
  rm -rf "$site"
  quietly "$DIR/pip-litert.log" "${pip[@]}" install --target "$site" "${PIP_TARGET_ARGS[@]}" \
    "${wheel}[device]" pytest
  echo "$site_hash" >"$site/.stamp"
fi
# --upgrade makes pip replace the edge_sdk package already in the target directory.
quietly "$DIR/pip-litert-edge-sdk.log" "${pip[@]}" install --target "$site" \
  "${PIP_TARGET_ARGS[@]}" --no-deps --upgrade "$wheel"
cat >"$DIR/python-litert" <<EOF
#!/bin/sh
# aarch64 CPython 3.13 (Debian trixie arm64) under qemu-aarch64 -cpu $QEMU_CPU, packages from $site
# (written by tools/env_device_aarch64_trixie.sh)
PYTHONPATH="$site\${PYTHONPATH:+:\$PYTHONPATH}" exec qemu-aarch64 -cpu $QEMU_CPU -L "$ROOTFS" \\
  "$ROOTFS/usr/bin/python3.13" "\$@"
EOF
chmod +x "$DIR/python-litert"

"$DIR/python-litert" -c '
import importlib.metadata as md, importlib.util, platform, sys
assert platform.machine() == "aarch64", platform.machine()
assert sys.version_info[:2] == (3, 13), sys.version
assert not importlib.util.find_spec("tensorflow"), "tensorflow is installed"
assert not importlib.util.find_spec("tflite_runtime"), "tflite_runtime is installed"
from ai_edge_litert.interpreter import Interpreter
print("aarch64 python", platform.python_version(), platform.libc_ver(), "ai-edge-litert",
      md.version("ai-edge-litert"), "numpy", md.version("numpy"), file=sys.stderr)'

# -- tflite-runtime 2.14 on CPython 3.13: asked of pip, not assumed -----------------------------
probe="$DIR/tflite-runtime-probe"
rm -rf "$probe" && mkdir -p "$probe"
for kind in wheel sdist; do
  if [ "$kind" = wheel ]; then
    args=("${PIP_TAGS[@]}")
  else
    args=(--no-binary=:all: --disable-pip-version-check)
  fi
  if "${pip[@]}" download --no-deps -d "$probe" "${args[@]}" tflite-runtime >"$probe/$kind.log" 2>&1; then
    log "pip found a tflite-runtime $kind for CPython 3.13 on aarch64 ($(ls "$probe")):" \
      "add an aarch64-trixie tflite-runtime environment instead of reporting it unavailable"
    exit 1
  fi
  grep -q "No matching distribution found for tflite-runtime" "$probe/$kind.log" ||
    { log "pip failed to look up tflite-runtime:"; tail -n 20 "$probe/$kind.log" >&2; exit 1; }
done
echo "$DIR/python-litert"
echo "unavailable: no release of tflite-runtime on PyPI has a CPython 3.13 aarch64 wheel or an" \
  "sdist (pip: 'No matching distribution found'; 2.14.0's wheels stop at cp311), so it cannot" \
  "be installed on trixie's Python 3.13"
