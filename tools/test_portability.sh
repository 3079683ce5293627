#!/usr/bin/env bash
# Second test stage, "portability": the device suite (tests/device) on real device installs.
#
#   bash tools/test_portability.sh        # after tools/test.sh has made .venv
#
# 1. builds or refreshes the device environments (cached under .cache/portability):
#      x86_64  + ai-edge-litert   pip install '.[device]' pytest, no TensorFlow  (env_device_x86_64.sh)
#      x86_64  + tflite-runtime   2.14.0 with numpy<2, edge-sdk without extras    (env_device_tflite214.sh)
#      aarch64 + both runtimes    Debian 12's arm64 CPython 3.11 under qemu-aarch64 10 (env_device_aarch64.sh)
#      aarch64 + ai-edge-litert   Debian 13's arm64 CPython 3.13, likewise  (env_device_aarch64_trixie.sh);
#                                 tflite-runtime 2.14 has no build for Python 3.13: that environment
#                                 cannot exist, its build script says why, and the table shows it
# 2. makes the fixtures on the host with .venv's TensorFlow (tools/make_device_fixtures.py);
#    the tflite-runtime references are computed in the x86_64 tflite-runtime environment, so
#    "bit-exact" means "the same as this runtime version on x86_64";
# 3. runs the device suite in each environment, with EDGE_SDK_BACKEND pinning the runtime;
# 4. writes the table (arch x runtime x quantization mode, from this run) to
#    .cache/portability/PORTABILITY.md and prints it. It never writes to the working tree:
#    docs/PORTABILITY.md is a copy of that file from the last full run, committed by hand
#    (cp .cache/portability/PORTABILITY.md docs/).
# Exits non-zero when any environment failed to build or any device test failed. An environment
# that cannot exist (its build script prints "unavailable: REASON" instead of a python) is not a
# failure; the table shows it with the reason.
set -euo pipefail
# shellcheck source=tools/portability_lib.sh
source "$(dirname "$0")/portability_lib.sh"
cd "$REPO"

started=$(date +%s)
RUN="$PORTABILITY/run"
rm -rf "$RUN" && mkdir -p "$RUN"
[ -x .venv/bin/python ] || { log ".venv is missing: run tools/test.sh first"; exit 1; }

# -- 1. environments ------------------------------------------------------------------------------
# name  build-script  which line of its output is the python  EDGE_SDK_BACKEND
ENVS=(
  "x86_64-litert       env_device_x86_64.sh    1 ai_edge_litert"
  "x86_64-tflite214    env_device_tflite214.sh 1 tflite_runtime"
  "aarch64-litert      env_device_aarch64.sh   1 ai_edge_litert"
  "aarch64-tflite214   env_device_aarch64.sh   2 tflite_runtime"
  "aarch64-trixie-litert     env_device_aarch64_trixie.sh 1 ai_edge_litert"
  "aarch64-trixie-tflite214  env_device_aarch64_trixie.sh 2 tflite_runtime"
)
declare -A PYTHONS=() BUILT=()
for spec in "${ENVS[@]}"; do
  read -r name script line _backend <<<"$spec"
  mkdir -p "$RUN/$name"
  if [ -z "${BUILT[$script]:-}" ]; then
    t0=$(date +%s)
    log "environment: tools/$script"
    if bash "tools/$script" >"$RUN/$script.out" 2>"$RUN/$script.err"; then
      BUILT[$script]=ok
    else
      BUILT[$script]=failed
      log "tools/$script failed:"
      tail -n 30 "$RUN/$script.err" >&2
    fi
    echo "$(($(date +%s) - t0))" >"$RUN/$script.seconds"
  fi
  if [ "${BUILT[$script]}" = ok ]; then
    PYTHONS[$name]=$(sed -n "${line}p" "$RUN/$script.out")
  fi
  cp "$RUN/$script.seconds" "$RUN/$name/build.seconds"
done

# -- 2. fixtures ----------------------------------------------------------------------------------
log "fixtures: tools/make_device_fixtures.py"
t0=$(date +%s)
reference=()
[ -n "${PYTHONS[x86_64-tflite214]:-}" ] && reference=(--tflite-runtime-python "${PYTHONS[x86_64-tflite214]}")
if ! quietly "$RUN/fixtures.log" .venv/bin/python tools/make_device_fixtures.py "$RUN/fixtures" \
  "${reference[@]}"; then
  exit 1 # nothing below can run without them
fi
echo "$(($(date +%s) - t0))" >"$RUN/fixtures.seconds"

# -- 3. the device suite in each environment ------------------------------------------------------
status=0
for spec in "${ENVS[@]}"; do
  read -r name _script _line backend <<<"$spec"
  python=${PYTHONS[$name]:-}
  if [[ "$python" == unavailable:* ]]; then
    log "device suite: $name cannot exist: ${python#unavailable: }"
    echo "${python#unavailable: }" >"$RUN/$name/unavailable"
    continue
  fi
  if [ -z "$python" ]; then
    echo "environment build failed" >"$RUN/$name/skipped"
    status=1
    continue
  fi
  log "device suite: $name"
  t0=$(date +%s)
  # From the run directory, with -P and importlib mode, so the installed edge-sdk is imported,
  # never the working tree's; --confcutdir keeps tests/conftest.py (dev extras) out.
  if (cd "$RUN/$name" && EDGE_SDK_BACKEND=$backend EDGE_SDK_DEVICE_FIXTURES="$RUN/fixtures" \
    EDGE_SDK_DEVICE_REPORT="$RUN/$name/report.jsonl" "$python" -P -m pytest "$REPO/tests/device" \
    --rootdir "$REPO" --confcutdir "$REPO/tests/device" --import-mode importlib \
    -p no:cacheprovider -q --junitxml "$RUN/$name/junit.xml" >"$RUN/$name/pytest.log" 2>&1); then
    tail -n 1 "$RUN/$name/pytest.log" >&2
  else
    status=1
    tail -n 40 "$RUN/$name/pytest.log" >&2
  fi
  echo "$(($(date +%s) - t0))" >"$RUN/$name/run.seconds"
done

# -- 4. the table ---------------------------------------------------------------------------------
echo "$(($(date +%s) - started))" >"$RUN/total.seconds"
log "table: .cache/portability/PORTABILITY.md (docs/PORTABILITY.md is the committed copy)"
.venv/bin/python tools/portability_table.py "$RUN" "$PORTABILITY/PORTABILITY.md" || status=1
exit $status
