#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs what it needs, then lint, types and tests.
#   bash tools/test.sh            # everything
#   bash tools/test.sh -k deploy  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools the tests use for real: OpenSSH's sshd (deploy tests), openssl (auditor test),
# nginx (the TUF repository server), SoftHSM2 and a software TPM with tpm2-tools (keys held in
# hardware); libtss2-dev and pkg-config build tpm2-pytss (the 'tpm' extra) where no wheel fits.
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v swtpm >/dev/null 2>&1 || need+=(swtpm)
command -v swtpm_ioctl >/dev/null 2>&1 || need+=(swtpm-tools)
command -v tpm2_dictionarylockout >/dev/null 2>&1 || need+=(tpm2-tools)
[ -e /usr/include/tss2/tss2_esys.h ] || need+=(libtss2-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  # Debian's python3 may lack the venv module (python3-venv); virtualenv from pip works everywhere.
  $PY -m venv .venv 2>/dev/null || { $PY -m pip install -q --user virtualenv && $PY -m virtualenv -q .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[host,device,deploy,tuf,hsm,tpm,provenance,llm,dev]'
# The generated LLM test model (tests/llm_fixture.py) is built with litert-torch in an environment
# of its own: its dependencies cannot be installed beside the provenance extra's (xdsl pins
# typing-extensions<4.13, sigstore-models needs >=4.14.1). Nothing of it reaches the test process.
if [ ! -x .cache/llm-build/bin/python ]; then
  $PY -m venv .cache/llm-build 2>/dev/null || $PY -m virtualenv -q .cache/llm-build
fi
.cache/llm-build/bin/python -m pip install -q --upgrade pip
.cache/llm-build/bin/python -m pip install -q -e '.[llm-build]'

.venv/bin/ruff check edge_sdk tests tools
.venv/bin/ruff format --check edge_sdk tests tools
.venv/bin/mypy
.venv/bin/python -m pytest "$@"

# Second stage, "portability": the device suite in device-only installs (x86_64 ai-edge-litert,
# x86_64 tflite-runtime 2.14, aarch64 under qemu: Debian 12's Python 3.11 with both, Debian 13's
# Python 3.13 with ai-edge-litert); writes its table to .cache/portability/PORTABILITY.md, never
# to a tracked file (.ci/run checks that the working tree is unchanged afterwards).
bash tools/test_portability.sh
