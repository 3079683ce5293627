#!/usr/bin/env bash
# The x86_64 device install: `pip install '<repo>[device]' pytest` in a fresh venv, and nothing
# else — no TensorFlow, no scikit-learn. This is the proof that the device side runs without TF.
#
#   bash tools/env_device_x86_64.sh     # prints the venv's python on its last line
#
# Cached under .cache/portability/x86_64-litert; rebuilt when this script or pyproject.toml changes;
# edge-sdk itself is reinstalled from the working tree on every call.
set -euo pipefail
# shellcheck source=tools/portability_lib.sh
source "$(dirname "$0")/portability_lib.sh"

ENV="$PORTABILITY/x86_64-litert"
BASE=${PYTHON:-python3}
hash=$(inputs_hash "$0" "$REPO/pyproject.toml" "$("$BASE" --version 2>&1)")

if ! stamp_matches "$ENV" "$hash" || [ ! -x "$ENV/bin/python" ]; then
  log "building $ENV"
  # A venv records its own path in its scripts, so it is built in place; the stamp, written
  # last, is what marks it finished.
  rm -rf "$ENV"
  # Debian's python3 may lack the venv module (python3-venv); virtualenv from pip works everywhere.
  "$BASE" -m venv "$ENV" 2>/dev/null ||
    { "$BASE" -m pip install -q --user virtualenv && "$BASE" -m virtualenv -q "$ENV"; }
  quietly "$ENV/pip.log" "$ENV/bin/python" -m pip install --disable-pip-version-check \
    "${REPO}[device]" pytest
  echo "$hash" >"$ENV/.stamp"
fi
wheel=$(build_wheel "$PORTABILITY/wheel-x86_64")
quietly "$ENV/pip-edge-sdk.log" "$ENV/bin/python" -m pip install --disable-pip-version-check --no-deps \
  --force-reinstall "$wheel"

# The claim this environment exists to prove: TensorFlow is not even installed here.
"$ENV/bin/python" - <<'EOF'
import importlib.util, sys
present = [m for m in ("tensorflow", "keras", "tf_keras", "sklearn") if importlib.util.find_spec(m)]
sys.exit(f"the device venv must not have {present}" if present else 0)
EOF
echo "$ENV/bin/python"
