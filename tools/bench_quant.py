"""Quantization table: size, latency (ai-edge-litert, 1 and 2 threads) and accuracy per mode.

    python tools/bench.py quant

Models: the digits CNN (trained on scikit-learn's digits; accuracy is real) and
``keras.applications.MobileNetV2(weights=None)`` at 96×96 (untrained: nothing can be downloaded
here, and a few epochs on 2 cores do not train it, so its quality column is the relative RMS error
of each mode's outputs against the float model's on held-out digits scaled up to 96×96×3; the
training digits, scaled the same way, calibrate int8). Every mode goes through the same
``convert_model`` path ``edge-sdk package`` uses.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.bench_common import table  # noqa: E402
from tools.demo_model import digits_data, train_digits_cnn  # noqa: E402

MODES = ("none", "dynamic", "float16", "int8")


def upscale(x: np.ndarray, size: int = 96) -> np.ndarray:
    """8×8×1 digits → size×size×3, nearest-neighbour, for an ImageNet-shaped network."""
    factor = size // x.shape[1]
    big = np.kron(x[..., 0], np.ones((factor, factor), np.float32))
    return np.repeat(big[..., None], 3, axis=-1).astype(np.float32)


def build_models(tmp: Path) -> dict[str, tuple[Path, Path, Path]]:
    """(model, calibration.npz, evaluation.npz) per benchmark model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    x_train, _, x_test, y_test = digits_data()
    digits = tmp / "digits.keras"
    train_digits_cnn().save(digits)
    np.savez(tmp / "digits-calib.npz", x=x_train[:300])
    np.savez(tmp / "digits-eval.npz", x=x_test, y=y_test)
    keras.utils.set_random_seed(0)
    mobilenet = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    mobile = tmp / "mobilenetv2.keras"
    mobilenet.save(mobile)
    np.savez(tmp / "mobile-calib.npz", x=upscale(x_train[:200]))
    np.savez(tmp / "mobile-eval.npz", x=upscale(x_test[:200]))
    return {
        "digits CNN": (digits, tmp / "digits-calib.npz", tmp / "digits-eval.npz"),
        "MobileNetV2 96×96": (mobile, tmp / "mobile-calib.npz", tmp / "mobile-eval.npz"),
    }


def latency_ms(model_bytes: bytes, x: np.ndarray, threads: int, runs: int = 60) -> float:
    """Median single-image latency of Model.predict."""
    from edge_sdk.device.runtime import Model
    from edge_sdk.host.tensorflow_import import native_output_captured

    with native_output_captured():
        model = Model(model_bytes, threads=threads)
    sample = x[:1]
    for _ in range(5):
        model.predict(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict(sample)
        times.append(time.perf_counter() - start)
    model.close()
    return float(np.median(times) * 1000)


def quant_suite() -> None:
    from edge_sdk.host.convert import convert_model
    from edge_sdk.host.quality_gate import run_tflite

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for label, (path, calib, evald) in build_models(tmp).items():
            rows: list[list[str]] = []
            float_size = float_lat1 = 0.0
            float_out: dict[str, Any] = {}
            with np.load(evald) as loaded:
                x_eval = loaded["x"]
                labels = loaded["y"] if "y" in loaded.files else None
            for mode in MODES:
                result = convert_model(
                    path, quantize=mode, runtime="ai-edge-litert", runtime_version="2.3.0",
                    calibration=calib if mode == "int8" else None, evaluation=evald,
                    max_accuracy_drop=100.0, max_output_error=100.0,
                )  # fmt: skip
                out = next(
                    iter(
                        run_tflite(result.model_bytes, {next(iter(_inputs(path))): x_eval}).values()
                    )
                )
                if mode == "none":
                    float_size, float_out = len(result.model_bytes), {"y": out}
                if labels is not None:
                    quality = f"{float(np.mean(np.argmax(out, 1) == labels)) * 100:.2f}% accuracy"
                else:
                    ref = float_out["y"].astype(np.float64)
                    rel = float(np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref**2)))
                    quality = f"{rel:.4f} relative RMS error vs float"
                lat1 = latency_ms(result.model_bytes, x_eval, 1)
                lat2 = latency_ms(result.model_bytes, x_eval, 2)
                float_lat1 = float_lat1 or lat1
                rows.append([
                    mode if mode != "none" else "float32", f"{len(result.model_bytes) / 1024:,.1f} KiB",
                    f"{len(result.model_bytes) / float_size:.2f}", f"{lat1:.4g}", f"{lat2:.4g}",
                    f"{lat1 / float_lat1:.2f}", quality,
                ])  # fmt: skip
            table(
                f"Quantization: {label} (ai-edge-litert, batch 1, median ms)",
                [
                    "mode",
                    "size",
                    "size ÷ float",
                    "1 thread",
                    "2 threads",
                    "latency ÷ float (1 thr)",
                    "quality",
                ],
                rows,
            )


def _inputs(path: Path) -> list[str]:
    from edge_sdk.host.source_model import load_source_model

    return list(load_source_model(path).input_names)


if __name__ == "__main__":
    quant_suite()
