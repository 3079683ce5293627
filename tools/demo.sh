#!/usr/bin/env bash
# The main job end to end, from a clean clone: Keras .h5 → signed, encrypted bundle for a
# Raspberry Pi 4 → verified by an auditor → deployed to a device directory → inference.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  $PY -m venv .venv 2>/dev/null || { $PY -m pip install -q --user virtualenv && $PY -m virtualenv -q .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip 'setuptools>=77'
.venv/bin/python -m pip install -q -e '.[host,device,deploy]' scikit-learn
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2
W=demo-work
rm -rf "$W" && mkdir -p "$W"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# A publisher key, a device key, and a trained model (digits CNN, saved as legacy .h5).
step edge-sdk keys generate --kind signing --out "$W/publisher"
step edge-sdk keys generate --kind device --out "$W/device"
step python tools/demo_model.py "$W"

# Package for a Raspberry Pi 4: dynamic-range quantization, accuracy gate on held-out digits,
# compatibility check against the Pi's runtime, ChaCha20-Poly1305 (no AES instructions on a Pi 4).
step edge-sdk package "$W/digits.h5" --profile rpi4 --sign-key "$W/publisher.key" \
  --recipient "$W/device.pub" --name digits --version 1 --eval "$W/eval.npz" -o "$W/digits-rpi4.edgepkg"
step edge-sdk inspect "$W/digits-rpi4.edgepkg"
step edge-sdk verify "$W/digits-rpi4.edgepkg" --trust "$W/publisher.pub"

# This machine is not a Pi, so for the device half package for it (full int8), deploy the bundle
# into a local device directory, and run it from there with the device key.
step edge-sdk package "$W/digits.h5" --profile x86_64 --quantize int8 --calibration "$W/calibration.npz" \
  --eval "$W/eval.npz" --sign-key "$W/publisher.key" --recipient "$W/device.pub" --name digits \
  --version 1 -o "$W/digits-x86_64.edgepkg"
mkdir -p "$W/board"   # the board's model directory (an SD card, a mounted board, or ssh://…)
step edge-sdk deploy "$W/digits-x86_64.edgepkg" --target "$W/board"
step edge-sdk run "$W/board/digits/current" --trust "$W/publisher.pub" --device-key "$W/device.key" \
  --profile x86_64 --state-dir "$W/board-state" --input "$W/sample.npy"
echo
echo "The labels of sample.npy are printed by demo_model.py above; compare them with argmax."
