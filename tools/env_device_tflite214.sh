#!/usr/bin/env bash
# The older-runtime device install on x86_64: tflite-runtime 2.14.0 (the last release on PyPI,
# what many deployed boards run) with `numpy<2`, which its wheels were built against, edge-sdk
# without extras, and pytest. No ai-edge-litert, no TensorFlow.
#
#   bash tools/env_device_tflite214.sh     # prints the venv's python on its last line
#
# tflite-runtime 2.14 ships wheels for CPython 3.8-3.11 only, so the venv uses python3.11 (or
# 3.10/3.9); $PYTHON overrides. Cached under .cache/portability/x86_64-tflite214.
set -euo pipefail
# shellcheck source=tools/portability_lib.sh
source "$(dirname "$0")/portability_lib.sh"

ENV="$PORTABILITY/x86_64-tflite214"
BASE=${PYTHON:-$(command -v python3.11 || command -v python3.10 || command -v python3.9 || true)}
[ -n "$BASE" ] || { log "no python3.9-3.11 for tflite-runtime 2.14 (set PYTHON)"; exit 1; }
hash=$(inputs_hash "$0" "$REPO/pyproject.toml" "$("$BASE" --version 2>&1)")

if ! stamp_matches "$ENV" "$hash" || [ ! -x "$ENV/bin/python" ]; then
  log "building $ENV"
  rm -rf "$ENV"  # built in place (a venv records its path); the stamp, written last, marks it done
  "$BASE" -m venv "$ENV" 2>/dev/null ||
    { "$BASE" -m pip install -q --user virtualenv && "$BASE" -m virtualenv -q "$ENV"; }
  quietly "$ENV/pip.log" "$ENV/bin/python" -m pip install --disable-pip-version-check \
    "$REPO" "tflite-runtime==2.14.0" "numpy<2" pytest
  echo "$hash" >"$ENV/.stamp"
fi
wheel=$(build_wheel "$PORTABILITY/wheel-tflite214")
quietly "$ENV/pip-edge-sdk.log" "$ENV/bin/python" -m pip install --disable-pip-version-check \
  --no-deps --force-reinstall "$wheel"

"$ENV/bin/python" - <<'PY'
import importlib.metadata as md, importlib.util, sys
present = [m for m in ("tensorflow", "ai_edge_litert", "keras", "sklearn") if importlib.util.find_spec(m)]
if present:
    sys.exit(f"the tflite-runtime venv must not have {present}")
if md.version("tflite-runtime") != "2.14.0":
    sys.exit(f"expected tflite-runtime 2.14.0, found {md.version('tflite-runtime')}")
PY
echo "$ENV/bin/python"
