#!/usr/bin/env bash
# aarch64 device installs on an x86_64 Debian 12 machine, under qemu user-mode emulation:
#
#   .cache/portability/aarch64/python-litert     ai-edge-litert (edge-sdk[device]) + pytest
#   .cache/portability/aarch64/python-tflite214  tflite-runtime 2.14.0, numpy<2, edge-sdk + pytest
#
#   bash tools/env_device_aarch64.sh     # prints both launchers, one per line
#
# Each launcher runs Debian bookworm's own arm64 CPython 3.11 (the python of Raspberry Pi OS
# bookworm) under qemu-aarch64, emulating a Cortex-A72 (the Raspberry Pi 4's core: NEON, no
# dot-product or i8mm, so XNNPACK picks the kernels a Pi 4 runs). Nothing is installed as arm64
# on the host and no binfmt handler is registered:
#
# - qemu: qemu 7.2 (Debian 12's own qemu-user) crashes when ai-edge-litert >= 2.2 builds an
#   interpreter; qemu 10 from bookworm-backports works, so that is what is installed.
# - the python: `apt-get download` fetches the arm64 .debs (after `dpkg --add-architecture arm64`,
#   which only teaches apt the architecture) and `dpkg -x` unpacks them into a private root that
#   `qemu-aarch64 -L` uses as the emulated filesystem prefix.
# - the packages: the host's pip installs aarch64 wheels into a target directory with
#   `--platform manylinux*_aarch64 --python-version 3.11 --only-binary=:all:`; the launcher puts
#   it on PYTHONPATH. edge-sdk is installed from the working tree's wheel on every call.
#
# Cached under .cache/portability/aarch64; `rm -rf` it to rebuild from scratch.
set -euo pipefail
# shellcheck source=tools/portability_lib.sh
source "$(dirname "$0")/portability_lib.sh"

DIR="$PORTABILITY/aarch64"
ROOTFS="$DIR/rootfs"
QEMU_CPU=cortex-a72
mkdir -p "$DIR"

# Debian bookworm arm64 packages: CPython 3.11 and the shared libraries its stdlib modules and the
# wheels' native code link against (libstdc++ for LiteRT, libffi for ctypes, libssl for hashlib…).
DEBS=(
  python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
  libc6 libgcc-s1 libstdc++6 gcc-12-base libexpat1 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5
  libuuid1 libcrypt1 libsqlite3-0 libncursesw6 libtinfo6 libreadline8
)
DEBS_ALL=(media-types) # architecture "all": /etc/mime.types for the mimetypes module

# pip only accepts the exact platform tags it is given; list every manylinux level the root's
# glibc (2.36) can run.
PLATFORMS=(--platform manylinux2014_aarch64)
for minor in $(seq 17 36); do PLATFORMS+=(--platform "manylinux_2_${minor}_aarch64"); done
PIP_TARGET_ARGS=(
  --only-binary=:all: "${PLATFORMS[@]}" --python-version 3.11 --implementation cp
  --abi cp311 --abi abi3 --abi none --no-warn-conflicts --disable-pip-version-check
)

# -- qemu 10 (see need_qemu_aarch64_10 in portability_lib.sh) ---------------------------------
need_qemu_aarch64_10

# -- the arm64 CPython root ---------------------------------------------------------------------
root_hash=$(inputs_hash "$0")
if ! stamp_matches "$ROOTFS" "$root_hash"; then
  log "assembling an arm64 CPython root from Debian packages"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    as_root dpkg --add-architecture arm64
  fi
  apt-cache show libc6:arm64 >/dev/null 2>&1 || as_root apt-get update -qq
  rm -rf "$DIR/debs" "$ROOTFS" && mkdir -p "$DIR/debs" "$ROOTFS"
  # As root, apt's download sandbox user (_apt) cannot write here; download as the caller.
  (cd "$DIR/debs" && quietly "$DIR/apt-download.log" apt-get download \
    -o APT::Sandbox::User="$(id -un)" "${DEBS[@]/%/:arm64}" "${DEBS_ALL[@]}")
  for deb in "$DIR"/debs/*.deb; do dpkg -x "$deb" "$ROOTFS"; done
  echo "$root_hash" >"$ROOTFS/.stamp"
fi

# -- site directories ----------------------------------------------------------------------------
write_launcher() { # NAME SITE
  cat >"$DIR/python-$1" <<EOF
#!/bin/sh
# aarch64 CPython 3.11 (Debian bookworm arm64) under qemu-aarch64 -cpu $QEMU_CPU, packages from $2
# (written by tools/env_device_aarch64.sh)
PYTHONPATH="$2\${PYTHONPATH:+:\$PYTHONPATH}" exec qemu-aarch64 -cpu $QEMU_CPU -L "$ROOTFS" \\
  "$ROOTFS/usr/bin/python3.11" "\$@"
EOF
  chmod +x "$DIR/python-$1"
}

wheel=$(build_wheel "$DIR/wheel")
pip=("$(host_python)" -m pip)
site_hash=$(inputs_hash "$0" "$REPO/pyproject.toml")
for flavour in litert tflite214; do
  site="$DIR/site-$flavour"
  if [ "$flavour" = litert ]; then
    wanted=("${wheel}[device]" pytest)
  else
    wanted=("$wheel" "tflite-runtime==2.14.0" "numpy<2" pytest)
  fi
  if ! stamp_matches "$site" "$site_hash"; then
    log "installing aarch64 wheels into $site"
    rm -rf "$site"
    quietly "$DIR/pip-$flavour.log" "${pip[@]}" install --target "$site" "${PIP_TARGET_ARGS[@]}" \
      "${wanted[@]}"
    echo "$site_hash" >"$site/.stamp"
  fi
  # --upgrade makes pip replace the edge_sdk package already in the target directory.
  quietly "$DIR/pip-$flavour-edge-sdk.log" "${pip[@]}" install --target "$site" \
    "${PIP_TARGET_ARGS[@]}" --no-deps --upgrade "$wheel"
  write_launcher "$flavour" "$site"
done

# A quick look through each launcher: the right machine, runtime and numpy, and no TensorFlow.
"$DIR/python-litert" -c '
import importlib.metadata as md, importlib.util, platform, sys
assert platform.machine() == "aarch64", platform.machine()
assert not importlib.util.find_spec("tensorflow"), "tensorflow is installed"
from ai_edge_litert.interpreter import Interpreter
print("aarch64 python", platform.python_version(), "ai-edge-litert", md.version("ai-edge-litert"), "numpy", md.version("numpy"), file=sys.stderr)'
"$DIR/python-tflite214" -c '
import importlib.metadata as md, importlib.util, platform, sys
assert platform.machine() == "aarch64", platform.machine()
assert not importlib.util.find_spec("tensorflow") and not importlib.util.find_spec("ai_edge_litert")
from tflite_runtime.interpreter import Interpreter
print("aarch64 python", platform.python_version(), "tflite-runtime", md.version("tflite-runtime"), "numpy", md.version("numpy"), file=sys.stderr)'
echo "$DIR/python-litert"
echo "$DIR/python-tflite214"
