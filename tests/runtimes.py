"""Real, older LiteRT runtimes for tests: created once, cached, reused.

Tests that need to know what an *old* runtime really does (not what a table says it does) run the
model in a separate interpreter that has that runtime installed. The virtualenv is built on first
use under ``.cache/`` at the repository root and reused afterwards; set
``EDGE_SDK_TFLITE214_PYTHON`` to a python executable that already has ``tflite-runtime==2.14.0``
(and ``numpy<2``, which that wheel was built against) to skip the build entirely.

The probe scripts receive the model on stdin, so the bytes never need a temp file.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TFLITE214_ENV = "EDGE_SDK_TFLITE214_PYTHON"
TFLITE214_VENV = REPO / ".cache" / "venv-tflite214"
TFLITE214_REQUIREMENTS = ("tflite-runtime==2.14.0", "numpy<2")

# The tflite-runtime 2.14 wheels on PyPI stop at CPython 3.11; prefer that interpreter for the
# venv even when the tests themselves run on a newer python.
_BASE_PYTHONS = ("python3.11", "python3.10", "python3.9")

# Loads the model from stdin and reports, as one JSON line, whether the interpreter could be
# built and allocated, and the error text if not. Works for tflite_runtime and ai_edge_litert.
_PROBE = r"""
import json, sys
module = sys.argv[1]
if module == "tflite_runtime":
    from tflite_runtime.interpreter import Interpreter
else:
    from ai_edge_litert.interpreter import Interpreter
data = sys.stdin.buffer.read()
try:
    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
except Exception as exc:  # the runtime raises ValueError/RuntimeError; report either
    print(json.dumps({"ok": False, "error": str(exc)}))
else:
    print(json.dumps({"ok": True, "error": ""}))
"""


class RuntimeUnavailable(RuntimeError):
    """The requested runtime cannot be provided on this machine."""


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _has_tflite214(python: Path) -> bool:
    check = "import tflite_runtime, numpy; assert tflite_runtime.__version__.startswith('2.14')"
    return (
        python.exists()
        and subprocess.run([str(python), "-c", check], capture_output=True, check=False).returncode
        == 0
    )


def tflite214_python() -> str:
    """A python executable with ``tflite-runtime==2.14.0`` importable, building its venv once.

    Raises:
        RuntimeUnavailable: no suitable base python, or the install failed (the pip output is
            in the message).
    """
    override = os.environ.get(TFLITE214_ENV)
    if override:
        if not _has_tflite214(Path(override)):
            raise RuntimeUnavailable(f"{TFLITE214_ENV}={override} lacks tflite_runtime 2.14")
        return override
    python = _venv_python(TFLITE214_VENV)
    if _has_tflite214(python):
        return str(python)
    base = next((found for name in _BASE_PYTHONS if (found := shutil.which(name))), None)
    if base is None:
        raise RuntimeUnavailable("no python3.9-3.11 found to build the tflite-runtime 2.14 venv")
    # Build beside the final location and rename, so an interrupted build is never mistaken
    # for a finished one by the next run.
    staging = TFLITE214_VENV.with_name(TFLITE214_VENV.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    steps = (
        [base, "-m", "venv", str(staging)],
        [
            str(_venv_python(staging)), "-m", "pip", "install", "--quiet",
            "--disable-pip-version-check", *TFLITE214_REQUIREMENTS,
        ],
    )  # fmt: skip
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeUnavailable(f"{' '.join(step)} failed:\n{done.stdout}\n{done.stderr}")
    shutil.rmtree(TFLITE214_VENV, ignore_errors=True)
    staging.rename(TFLITE214_VENV)
    if not _has_tflite214(python):
        raise RuntimeUnavailable(f"{python} was built but cannot import tflite_runtime 2.14")
    return str(python)


def load_with(python: str, module: str, model: bytes) -> tuple[bool, str]:
    """Build and allocate ``model`` with ``module``'s Interpreter in another python.

    Args:
        python: the interpreter to run (e.g. :func:`tflite214_python`, or ``sys.executable``).
        module: ``"tflite_runtime"`` or ``"ai_edge_litert"``.
        model: the .tflite bytes, passed on stdin.

    Returns:
        ``(loaded, error_text)``; ``error_text`` is empty when the model loaded.
    """
    done = subprocess.run(
        [python, "-c", _PROBE, module], input=model, capture_output=True, check=False, timeout=120
    )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        # A crash (not an exception) in the runtime is a refusal too, but say what happened.
        return False, f"exit {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
    result = json.loads(lines[-1])
    return bool(result["ok"]), str(result["error"])


# Builds (without allocating) one interpreter per model and reports which builds succeeded:
# with one-op models from tests/tflite_builder.py that is "which op versions are registered".
_BATCH_PROBE = r"""
import base64, json, sys
module = sys.argv[1]
if module == "tflite_runtime":
    from tflite_runtime.interpreter import Interpreter
else:
    from ai_edge_litert.interpreter import Interpreter
results = []
for encoded in json.load(sys.stdin):
    try:
        Interpreter(model_content=base64.b64decode(encoded))
    except Exception:
        results.append(False)
    else:
        results.append(True)
print(json.dumps(results))
"""


def builds_with(python: str, module: str, models: list[bytes]) -> list[bool]:
    """For each model, whether ``module``'s Interpreter can be *built* from it (one subprocess)."""
    payload = json.dumps([base64.b64encode(model).decode() for model in models]).encode()
    done = subprocess.run(
        [python, "-c", _BATCH_PROBE, module],
        input=payload, capture_output=True, check=False, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeUnavailable(f"probe failed: {done.stderr.decode(errors='replace')[-2000:]}")
    results = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return [bool(ok) for ok in results]


def current_python() -> str:
    """The python running the tests (it has ai-edge-litert installed)."""
    return sys.executable
