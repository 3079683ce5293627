#!/usr/bin/env bash
# The main job end to end, from a clean clone, as the README's quickstart: a Keras .h5 → a signed,
# encrypted bundle for a Raspberry Pi 4 → verified as an auditor would → deployed to a board
# directory → inference on this machine, ending with a one-line verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  $PY -m venv .venv 2>/dev/null || { $PY -m pip install -q --user virtualenv && $PY -m virtualenv -q .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[host,device,deploy]' scikit-learn
W=$PWD/demo-work
rm -rf "$W" && mkdir -p "$W/home"
# A private HOME and state directory: the demo's keys and anti-rollback state stay in demo-work/.
export PATH="$PWD/.venv/bin:$PATH" HOME="$W/home" EDGE_SDK_STATE_DIR="$W/state"
unset XDG_CONFIG_HOME XDG_STATE_HOME EDGE_SDK_CONFIG
cd "$W"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# A trained model and data: a digits CNN saved as legacy .h5, held-out images and labels.
step python ../tools/demo_model.py .

# One-time setup: the board's key (made on the board in real life), then the project's publisher
# key and edge-sdk.toml naming the board as recipient and the board directory as deploy target.
step edge-sdk keys generate --kind device --out pi-0042
step edge-sdk init --recipient pi-0042.pub --target board

# The mission's command line: dynamic-range quantization, accuracy gate on held-out digits, the
# Pi's runtime checked, ChaCha20-Poly1305 (no AES instructions on a Pi 4), encrypted for pi-0042.
step edge-sdk package digits.h5 --profile rpi4 --eval eval.npz
step edge-sdk inspect digits.rpi4.edgepkg
step edge-sdk verify digits.rpi4.edgepkg --trust publisher.pub

# This machine is not a Pi, so the device half runs a bundle packaged for it (full int8).
step edge-sdk package digits.h5 --profile x86_64 --quantize int8 --calibration calibration.npz --eval eval.npz
mkdir -p board   # the board's model directory (an SD card, a mounted board, or ssh://…)
step edge-sdk deploy digits.x86_64.edgepkg
step edge-sdk run board/digits/current --trust publisher.pub --device-key pi-0042.key \
  --input sample.npy --output predictions.npz
python - <<'PY'
import numpy as np

predicted = np.load("predictions.npz")["probs"].argmax(axis=1)
labels = np.load("sample_labels.npy")
print(f"\n{int((predicted == labels).sum())}/{len(labels)} predictions match the labels")
PY
