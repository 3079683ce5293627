"""HOST: build everything the device suite (``tests/device``) needs, so a board needs no TensorFlow.

``python tools/make_device_fixtures.py OUTDIR [--keras-model digits.keras]`` writes into OUTDIR:

- ``bundles/*.edgepkg``: the digits CNN packaged with :func:`edge_sdk.host.packaging.package_model` for
  the x86_64 and rpi4 profiles (ai-edge-litert) and the rpi4-tflite214 profile (tflite-runtime
  2.14), in float32, dynamic and int8; plus, per runtime, the bundles the security tests need
  (versions 1 and 2, a re-sealed version 2, one payload byte flipped, truncated, expired);
- ``keys/``: the trusted signer's public key, the device key, and a second signer and device key
  that must be refused;
- ``inputs.npy`` / ``labels.npy``: the held-out digits;
- ``expected.npz``: Keras's float outputs (``keras``) and, per bundle, what this host computes from
  the bundle's own model bytes: with this host's ai-edge-litert (``host-litert:<bundle>``), and
  with the bundle's own runtime (``host:<bundle>``) — for the tflite-runtime bundles that needs
  ``--tflite-runtime-python``, a python with edge-sdk and tflite-runtime 2.14 installed (the x86
  device environment of ``tools/env_device_tflite214.sh``); without it ``host:`` falls back to
  ai-edge-litert and ``fixtures.json`` says so;
- ``zoo/``: every model of :mod:`tools.model_zoo` packaged for the rpi4 (ai-edge-litert) and
  rpi4-tflite214 (tflite-runtime 2.14) profiles, with its inputs (``<case>-inputs.npz``, a batch
  of :data:`ZOO_BATCH`) and Keras's outputs on them (``<case>-keras.npz``, run one sample at a
  time), for the suite's batch 1 / N / 0 tests;
- ``fixtures.json``: the manifest the suite's conftest reads (paths, profiles, quantization, which
  runtime computed each reference, host versions).

Importable too: ``tests/device/conftest.py`` calls :func:`make_fixtures` when the suite runs in the
main (host) test session.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make ``tools`` and ``edge_sdk`` importable
    sys.path.insert(0, str(REPO))

from edge_sdk.device.runtime import Model  # noqa: E402
from edge_sdk.format.bundle import save_bundle  # noqa: E402
from edge_sdk.format.verify import open_bundle  # noqa: E402
from edge_sdk.host.packaging import PackageOptions, package_model  # noqa: E402
from edge_sdk.host.sealing import seal_bundle  # noqa: E402
from edge_sdk.keys import PrivateKey, generate_key, save_keypair  # noqa: E402
from edge_sdk.profiles import load_profile  # noqa: E402
from tools import model_zoo  # noqa: E402
from tools.demo_model import digits_data, train_digits_cnn  # noqa: E402

FIXTURES_FORMAT = 1
MANIFEST_NAME = "fixtures.json"


@dataclass(frozen=True)
class Variant:
    """One bundle the parity tests run: a profile and a quantization mode."""

    key: str
    profile: str
    quantize: str


# What each runtime family runs. The rpi4 profiles are aarch64 boards: on any other machine the
# suite passes their hardware ids explicitly, which exercises the target check for real.
VARIANTS = (
    Variant("x86_64-float32", "x86_64", "none"),
    Variant("x86_64-int8", "x86_64", "int8"),
    Variant("rpi4-float32", "rpi4", "none"),
    Variant("rpi4-dynamic", "rpi4", "dynamic"),
    Variant("rpi4-int8", "rpi4", "int8"),
    Variant("rpi4-tflite214-float32", "rpi4-tflite214", "none"),
    Variant("rpi4-tflite214-dynamic", "rpi4-tflite214", "dynamic"),
    Variant("rpi4-tflite214-int8", "rpi4-tflite214", "int8"),
)

# Per runtime package: the profile whose bundles the security tests use, and the float32 variant
# they are re-sealed from (re-sealing changes the digest without another conversion).
SECURITY_PROFILES = {
    "ai-edge-litert": ("rpi4", "rpi4-float32"),
    "tflite-runtime": ("rpi4-tflite214", "rpi4-tflite214-float32"),
}
SECURITY_NAME = "digits-security"

# The model zoo per runtime family: the profile its bundles are built for.
ZOO_PROFILES = {"ai-edge-litert": "rpi4", "tflite-runtime": "rpi4-tflite214"}
ZOO_BATCH = 5


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _write_keys(out: Path) -> dict[str, str]:
    """The trusted signer and device key, and an untrusted signer and a stranger's device key."""
    keys = out / "keys"
    keys.mkdir()
    made: dict[str, PrivateKey] = {
        "signer": generate_key("signing"),
        "device": generate_key("device"),
        "other-signer": generate_key("signing"),
        "other-device": generate_key("device"),
    }
    for name, key in made.items():
        save_keypair(key, keys / name)
    return {
        "trust": "keys/signer.pub",
        "device_key": "keys/device.key",
        "untrusted_trust": "keys/other-signer.pub",
        "other_device_key": "keys/other-device.key",
    }


def _reseal(
    source: Path,
    out: Path,
    signer: PrivateKey,
    device: PrivateKey,
    *,
    version: int,
    created: datetime | None = None,
    expires: datetime | None = None,
) -> None:
    """Seal the model of ``source`` again under :data:`SECURITY_NAME` (same target and tensors)."""
    opened = open_bundle(source, _trust(signer), device)
    manifest = opened.verification.manifest
    profile = load_profile(manifest.target.profile)
    bundle = seal_bundle(
        opened.model_bytes,
        name=SECURITY_NAME,
        version=version,
        target=manifest.target,
        signers=[signer],
        recipients=[device.public],
        aead=manifest.payload.encryption,
        inputs=manifest.model.inputs,
        outputs=manifest.model.outputs,
        created=created,
        expires=expires,
        reports=manifest.reports,
        compression=manifest.payload.compression,
        compression_level=profile.compression_level or None,
    )
    save_bundle(bundle, out)


# Runs in the python given as --tflite-runtime-python: the device runtime's own code path
# (edge_sdk.device.runtime.Model: same resize, delegates and threads as on the board), model on stdin.
_REFERENCE_RUN = """
import importlib.metadata, sys, numpy as np
from edge_sdk.device.runtime import Model, discover_backend
backend = discover_backend(sys.argv[1])
with Model(sys.stdin.buffer.read(), backend=backend, threads=int(sys.argv[3])) as model:
    out = np.asarray(model.predict(np.load(sys.argv[2], allow_pickle=False)))
np.savez(sys.stdout.buffer, out=out, version=np.array(backend.version), machine=np.array(
    __import__("platform").machine()))
"""


def reference_outputs(
    python: str, backend: str, model_bytes: bytes, inputs: Path, threads: int
) -> tuple[np.ndarray, dict[str, str]]:
    """Outputs of ``model_bytes`` on ``inputs`` computed by ``backend`` in another python.

    Returns:
        The outputs, and which runtime (package, version, machine) computed them.
    """
    done = subprocess.run(
        [python, "-c", _REFERENCE_RUN, backend, str(inputs), str(threads)],
        input=model_bytes, capture_output=True, check=False, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{python} could not run the reference: {done.stderr.decode()[-2000:]}")
    with np.load(io.BytesIO(done.stdout), allow_pickle=False) as saved:
        runtime = {
            "package": backend.replace("_", "-"),
            "version": str(saved["version"]),
            "machine": str(saved["machine"]),
        }
        return saved["out"], runtime


def _trust(signer: PrivateKey) -> Any:
    from edge_sdk.keys import TrustStore

    return TrustStore.from_keys([signer.public])


def _security_bundles(
    out: Path, bundles: dict[str, Any], signer: PrivateKey, device: PrivateKey
) -> dict[str, Any]:
    """Rollback pairs and the bad-input variants, per runtime package."""
    table: dict[str, Any] = {}
    for runtime, (profile, source_key) in SECURITY_PROFILES.items():
        source = out / bundles[source_key]["file"]
        prefix = f"bundles/security-{profile}"
        files = {
            "v1": f"{prefix}-v1.edgepkg",
            "v2": f"{prefix}-v2.edgepkg",
            "v2_resealed": f"{prefix}-v2-resealed.edgepkg",
            "expired": f"{prefix}-expired.edgepkg",
            "tampered": f"{prefix}-tampered.edgepkg",
            "truncated": f"{prefix}-truncated.edgepkg",
        }
        for label, version in (("v1", 1), ("v2", 2), ("v2_resealed", 2)):
            _reseal(source, out / files[label], signer, device, version=version)
        # Created and expired in the past: seal_bundle only requires expires > created.
        _reseal(
            source, out / files["expired"], signer, device, version=3,
            created=datetime(2020, 1, 1, tzinfo=timezone.utc),
            expires=datetime(2021, 1, 1, tzinfo=timezone.utc),
        )  # fmt: skip
        # From v2, the version the suite accepts last: a tampered payload must then fail its hash,
        # not the anti-rollback check (which comes first).
        raw = bytearray((out / files["v2"]).read_bytes())
        raw[-1] ^= (
            0x01  # the last byte is always payload (ciphertext): the signed hash must catch it
        )
        (out / files["tampered"]).write_bytes(bytes(raw))
        (out / files["truncated"]).write_bytes(bytes(raw[: len(raw) // 2]))
        table[runtime] = {"profile": profile, "name": SECURITY_NAME, "files": files}
    return table


def _zoo(
    out: Path,
    signer: PrivateKey,
    device: PrivateKey,
    progress: Callable[[str], None],
    models: Path | None = None,
) -> dict[str, Any]:
    """The model zoo's bundles, inputs and Keras outputs (see the module docstring)."""
    import keras

    (out / "zoo").mkdir()
    table: dict[str, Any] = {}
    for case in model_zoo.CASES:
        progress(f"model zoo: {case.key}")
        source = model_zoo.build(case, models or out / "data")
        options = {"quantize": "none", **case.options}
        files: dict[str, dict[str, str]] = {}
        for runtime, profile in ZOO_PROFILES.items():
            relative = f"zoo/{case.key}-{profile}.edgepkg"
            package_model(
                source, out / relative, load_profile(profile),
                PackageOptions(name=f"zoo-{case.key}", version=1, **options), [signer], [device.public],
            )  # fmt: skip
            files[runtime] = {"file": relative, "profile": profile}
        x = case.inputs(ZOO_BATCH)
        model = keras.saving.load_model(source, custom_objects={"ScaleShift": model_zoo.ScaleShift})
        np.savez(out / f"zoo/{case.key}-inputs.npz", **x)  # type: ignore[arg-type]
        np.savez(out / f"zoo/{case.key}-keras.npz", **model_zoo.keras_outputs(case, model, x))  # type: ignore[arg-type]
        table[case.key] = {
            "bundles": files,
            "inputs": f"zoo/{case.key}-inputs.npz",
            "keras": f"zoo/{case.key}-keras.npz",
            "mode": "dynamic" if options.get("quantize") == "dynamic" else "float32",
            "fixed_batch": case.fixed_batch,
            "note": case.note,
        }
    return table


def make_fixtures(
    out: Path,
    keras_model: Path | None = None,
    progress: Callable[[str], None] = print,
    tflite_runtime_python: str | None = None,
    zoo_models: Path | None = None,
) -> Path:
    """Write the device suite's fixtures into ``out`` (which must be empty or absent).

    Args:
        out: the fixtures directory.
        keras_model: a trained digits CNN (``.keras``); trained afresh (≈10 s) when not given.
        progress: where to report each step.
        tflite_runtime_python: a python with edge-sdk and tflite-runtime, to compute the
            tflite-runtime bundles' reference outputs with their own runtime.
        zoo_models: where the model zoo's .keras files are kept (built there when missing);
            default: the fixtures' data directory.

    Returns:
        The path of ``fixtures.json``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: fixtures are only written into a fresh directory")
    import keras

    (out / "bundles").mkdir()
    (out / "data").mkdir()
    keys = _write_keys(out)
    from edge_sdk.keys import load_private_key

    signer = load_private_key(out / "keys/signer.key")
    device = load_private_key(out / keys["device_key"])

    if keras_model is None:
        progress("training the digits CNN")
        keras_model = out / "data" / "digits.keras"
        train_digits_cnn().save(keras_model)
    x_train, _, x_test, y_test = digits_data()
    calibration, evaluation = out / "data/calibration.npz", out / "data/eval.npz"
    np.savez(calibration, x=x_train[:300])
    np.savez(evaluation, x=x_test, y=y_test)
    np.save(out / "inputs.npy", x_test)
    np.save(out / "labels.npy", y_test)
    expected: dict[str, np.ndarray] = {
        "keras": np.asarray(keras.saving.load_model(keras_model)(x_test, training=False))
    }

    bundles: dict[str, Any] = {}
    for variant in VARIANTS:
        progress(f"packaging {variant.key}")
        profile = load_profile(variant.profile)
        path = out / "bundles" / f"{variant.key}.edgepkg"
        result = package_model(
            keras_model,
            path,
            profile,
            PackageOptions(
                name=f"digits-{variant.key}",
                version=1,
                quantize=variant.quantize,
                calibration=calibration if variant.quantize == "int8" else None,
                evaluation=evaluation,
            ),
            [signer],
            [device.public],
        )
        # The host's references, from the bundle's own model bytes with the profile's thread
        # count: this machine's ai-edge-litert always, and the bundle's own runtime when it is
        # another one and a python that has it was given. A device must reproduce the latter.
        model_bytes = open_bundle(path, _trust(signer), device).model_bytes
        with Model(model_bytes, threads=profile.threads) as model:
            litert = np.asarray(model.predict(x_test))
            reference = {
                "package": model.backend.package,
                "version": model.backend.version,
                "machine": platform.machine(),
            }
        expected[f"host-litert:{variant.key}"] = expected[f"host:{variant.key}"] = litert
        if profile.runtime.package == "tflite-runtime" and tflite_runtime_python:
            expected[f"host:{variant.key}"], reference = reference_outputs(
                tflite_runtime_python, "tflite_runtime", model_bytes, out / "inputs.npy",
                profile.threads,
            )  # fmt: skip
        bundles[variant.key] = {
            "file": f"bundles/{variant.key}.edgepkg",
            "profile": variant.profile,
            "runtime": profile.runtime.package,
            "runtime_version": profile.runtime.version,
            "quantization": result.quantization,
            "mode": "float32" if result.quantization == "none" else result.quantization,
            "reference": reference,
            "name": f"digits-{variant.key}",
            "accuracy": result.reports.get("accuracy"),
            "notes": list(result.notes),
        }
    progress("sealing the security variants")
    security = _security_bundles(out, bundles, signer, device)
    zoo = _zoo(out, signer, device, progress, zoo_models)
    np.savez(out / "expected.npz", **expected)  # type: ignore[arg-type]  # numpy's stub

    manifest = {
        "format": FIXTURES_FORMAT,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            **{p: _version(p) for p in ("tensorflow", "keras", "ai-edge-litert", "numpy")},
        },
        "keras_model_sha256": hashlib.sha256(keras_model.read_bytes()).hexdigest(),
        "keys": keys,
        "inputs": "inputs.npy",
        "labels": "labels.npy",
        "expected": "expected.npz",
        "bundles": bundles,
        "security": security,
        "zoo": zoo,
    }
    path = out / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="fixtures directory (created; must be empty)")
    parser.add_argument("--keras-model", type=Path, help="a trained digits CNN (.keras)")
    parser.add_argument(
        "--tflite-runtime-python",
        help="a python with edge-sdk and tflite-runtime: computes the tflite-runtime references",
    )
    args = parser.parse_args(argv)
    path = make_fixtures(
        args.outdir, args.keras_model, tflite_runtime_python=args.tflite_runtime_python
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
