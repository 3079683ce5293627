"""Pruning + compression table: what magnitude pruning and the zstd payload buy, measured.

    python tools/bench_pruning.py            # ≈ 5-8 minutes on 2 cores
    python tools/bench_pruning.py --quick    # digits CNN only, ≈ 1 minute

Models, both trained here on scikit-learn's digits (nothing is downloaded):

* the demo's digits CNN (8×8×1);
* ``keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)``, trained
  for a few epochs on the digits scaled up to 32×32×3 (BatchNorm momentum lowered to 0.9 so the
  moving statistics settle within the few hundred steps this gets).

Every variant is converted the way ``edge-sdk package`` converts (``convert.make_converter``), pruned
with :func:`edge_sdk.host.pruning.prune_for_conversion` (``--prune auto`` with ``--train``: the highest
sparsity whose int8 model stays within the default budget of 1 accuracy point against the
*unpruned* float model on the held-out digits), sealed with ``seal_bundle`` for one device key
and written with ``save_bundle``. Load time is ``edge_sdk.load`` on the bundle file (verify,
unwrap, decrypt, decompress, build the interpreter), latency is ``Model.predict`` on one image;
both best of N. Decompression is timed on its own. A second table shows what the converter's
``EXPERIMENTAL_SPARSITY`` encoding does to the same pruned models.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tools.bench_common import best_of, table  # noqa: E402
from tools.bench_quant import upscale  # noqa: E402
from tools.demo_model import digits_data, train_digits_cnn  # noqa: E402

MOBILENET_SIZE = 32
LEVEL = 10  # the shipped profiles' compression_level


@dataclass
class Case:
    """One benchmark model with its data."""

    label: str
    model: Any
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    epochs: int  # fine-tuning epochs per auto-prune candidate
    repeat: int  # best of N for load times


def digits_case() -> Case:
    x_train, y_train, x_test, y_test = digits_data()
    return Case("digits CNN", train_digits_cnn(), x_train, y_train, x_test, y_test, 8, 30)


def mobilenet_case(epochs: int = 8) -> Case:
    import keras

    x_train, y_train, x_test, y_test = digits_data()
    x_train, x_test = upscale(x_train, MOBILENET_SIZE), upscale(x_test, MOBILENET_SIZE)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(MOBILENET_SIZE, MOBILENET_SIZE, 3), classes=10
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    label = f"MobileNetV2 {MOBILENET_SIZE}×{MOBILENET_SIZE}×3"
    return Case(label, model, x_train, y_train, x_test, y_test, 3, 10)


def accuracy(model_bytes: bytes, case: Case) -> float:
    from edge_sdk.host.quality_gate import run_tflite

    out = next(iter(run_tflite(model_bytes, {"input": case.x_test}).values()))
    return float(np.mean(np.argmax(out, axis=1) == case.y_test)) * 100


def seal(model_bytes: bytes, path: Path, compression: str, keys: dict[str, Any]) -> int:
    from edge_sdk.format.bundle import save_bundle
    from edge_sdk.format.manifest import Target
    from edge_sdk.host.packaging import io_specs
    from edge_sdk.host.sealing import seal_bundle

    inputs, outputs = io_specs(model_bytes)
    bundle = seal_bundle(
        model_bytes,
        name=path.stem,
        version=1,
        target=Target("x86_64"),
        signers=[keys["signer"]],
        recipients=[keys["device"].public],
        inputs=inputs,
        outputs=outputs,
        compression=compression,
        compression_level=LEVEL if compression != "none" else None,
        # This table measures what zstd costs and saves, so it keeps zstd even where `package`
        # would store the payload uncompressed (it saves less than MIN_COMPRESSION_SAVING).
        min_compression_saving=0.0,
    )
    return save_bundle(bundle, path)


def load_ms(
    paths: dict[str, Path], keys: dict[str, Any], state: Path, repeat: int
) -> dict[str, float]:
    """Best-of-``repeat`` ``edge_sdk.load`` time per bundle, the bundles taking turns so that
    drift on a shared machine (and the audit log's fsync) hits all of them alike."""
    import edge_sdk

    def once(path: Path) -> float:
        start = time.perf_counter()
        edge_sdk.load(
            path,
            trust=keys["trust"],
            device_key=keys["device"],
            state_dir=state,
            allow_target_mismatch=True,
        ).close()
        return (time.perf_counter() - start) * 1000

    for path in paths.values():
        once(path)  # warm the page cache and the runtime's lazy imports
    best = dict.fromkeys(paths, float("inf"))
    for _ in range(repeat):
        for key, path in paths.items():
            best[key] = min(best[key], once(path))
    return best


def latency_ms(path: Path, keys: dict[str, Any], state: Path, x: np.ndarray) -> float:
    import edge_sdk

    with edge_sdk.load(
        path, trust=keys["trust"], device_key=keys["device"], state_dir=state,
        allow_target_mismatch=True,
    ) as model:  # fmt: skip
        sample = x[:1]
        for _ in range(5):
            model.predict(sample)
        return best_of(lambda: model.predict(sample), 50) * 1000


def decompress_ms(model_bytes: bytes, repeat: int) -> float:
    from edge_sdk.format.compression import compress, decompress

    packed = compress(model_bytes, "zstd", LEVEL)
    return best_of(lambda: decompress(packed, "zstd", len(model_bytes)), repeat) * 1000


def run_case(case: Case, tmp: Path, keys: dict[str, Any], progress: Callable[[str], None]) -> Any:
    from edge_sdk.host.datasets import Dataset
    from edge_sdk.host.pruning import (
        PruneOptions,
        keras_source,
        prune_for_conversion,
        quantizing_converter,
    )
    from edge_sdk.host.tflite_converter import run_converter

    name = case.model.inputs[0].name
    calib = Dataset({name: case.x_train[:300]}, None, "calibration")
    evaluation = Dataset({name: case.x_test}, case.y_test, "held-out digits")
    train = tmp / f"{case.label.split()[0]}-train.npz"
    np.savez(train, x=case.x_train, y=case.y_train)
    to_int8 = quantizing_converter("int8", calibration=calib)

    start = time.perf_counter()
    pruned = prune_for_conversion(
        case.model,
        PruneOptions("auto", train=train, epochs=case.epochs),
        quantize="int8",
        calibration=calib,
        evaluation=evaluation,
        max_accuracy_drop=1.0,
        max_output_error=0.05,
        progress=progress,
    )
    search_s = time.perf_counter() - start
    sparsity = pruned.report.sparsity
    variants = {
        "float32": (pruned.reference_float, 0.0),
        f"float32 + pruned {pruned.report.target:.0%}": (
            run_converter(keras_source(pruned.model).make_converter(), "float32"),
            sparsity,
        ),
        "int8": (to_int8(case.model), 0.0),
        f"int8 + pruned {pruned.report.target:.0%}": (to_int8(pruned.model), sparsity),
    }
    state = tmp / "state"
    rows: list[list[str]] = []
    base_bundle = 0
    goal = None
    for name, (model_bytes, zeros) in variants.items():
        acc = accuracy(model_bytes, case)
        decompress = decompress_ms(model_bytes, case.repeat)
        paths, sizes = {}, {}
        for compression in ("none", "zstd"):
            paths[compression] = tmp / f"{case.label.split()[0]}-{len(rows)}-{compression}.edgepkg"
            sizes[compression] = seal(model_bytes, paths[compression], compression, keys)
        base_bundle = base_bundle or sizes["none"]
        loads = load_ms(paths, keys, state, case.repeat)
        for compression, path in paths.items():
            size = sizes[compression]
            latency = latency_ms(path, keys, state, case.x_test)
            zstd = compression == "zstd"
            rows.append([
                name + (" + zstd" if zstd else ""), f"{zeros:.1%}", f"{acc:.2f}%",
                f"{len(model_bytes) / 1024:,.1f} KiB", f"{size / 1024:,.1f} KiB",
                f"{size / base_bundle:.3f}", f"{loads[compression]:.2f}",
                f"{loads['zstd'] - loads['none']:+.2f} (decompress {decompress:.2f})" if zstd else "",
                f"{latency:.4g}",
            ])  # fmt: skip
            if zstd and name.startswith("int8 + pruned"):
                goal = size / base_bundle
    table(
        f"Pruning + zstd: {case.label} (auto-prune {search_s:.0f} s, "
        f"{len(pruned.report.search)} candidates, {case.epochs} fine-tune epochs each; "
        f"load and latency best of {case.repeat} / 50, ms)",
        ["variant", "sparsity", "accuracy", ".tflite", "bundle", "× float32 bundle",
         "load ms", "load Δ vs uncompressed (decompression alone)", "latency ms"],
        rows,
    )  # fmt: skip
    print(
        "\nauto-prune search: "
        + ", ".join(
            f"{s['sparsity']:.0%} {'pass' if s['passed'] else 'fail'} "
            f"({s.get('quantized_accuracy', '?')}%)"
            for s in pruned.report.search
        )
    )
    if goal is not None:
        print(f"int8 + pruned + zstd bundle ÷ float32 uncompressed bundle = {goal:.3f}")
    return pruned, variants, calib


def sparse_encoding_rows(case: Case, pruned: Any, calib: Any) -> list[list[str]]:
    """The converter's EXPERIMENTAL_SPARSITY encoding vs dense zeros, on the same pruned model."""
    import tensorflow as tf

    from edge_sdk.errors import BackendError
    from edge_sdk.format.compat import read_tflite
    from edge_sdk.format.compression import compress
    from edge_sdk.host.pruning import keras_source
    from edge_sdk.host.tensorflow_import import native_output_captured
    from edge_sdk.host.tflite_converter import make_converter, run_converter

    source = keras_source(pruned.model)
    rows = []
    for quantize in ("none", "int8"):
        outputs = {}
        for encoding in ("dense", "sparse"):
            conv = (
                source.make_converter()
                if quantize == "none"
                else make_converter(source, "int8", "float32", calib, True)
            )
            if encoding == "sparse":
                conv.optimizations = [*conv.optimizations, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
            model_bytes = run_converter(conv, f"{quantize} {encoding}")
            try:
                with native_output_captured():
                    accuracy(model_bytes, case)
                default_ok = "yes"
            except BackendError as exc:
                reason = re.search(r"failed to (delegate|prepare) \w+", exc.message)
                default_ok = "no: " + (reason[0] if reason else exc.message[:60])
            outputs[encoding] = _run_plain(model_bytes, case.x_test)
            same = (
                "—"
                if encoding == "dense"
                else (
                    "identical" if np.array_equal(outputs["dense"], outputs[encoding]) else "differ"
                )
            )
            rows.append([
                case.label, "float32" if quantize == "none" else "int8", encoding,
                str(read_tflite(model_bytes).sparse_tensors), f"{len(model_bytes) / 1024:,.1f} KiB",
                f"{len(compress(model_bytes, 'zstd', LEVEL)) / 1024:,.1f} KiB", default_ok, same,
            ])  # fmt: skip
    return rows


def _run_plain(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Outputs from ai-edge-litert's builtin kernels only (no XNNPACK), in batches of 64."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=model_bytes,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for start in range(0, len(x), 64):
        part = x[start : start + 64]
        interpreter.resize_tensor_input(inp["index"], part.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], part)
        interpreter.invoke()
        results.append(np.array(interpreter.get_tensor(out["index"])))
    return np.concatenate(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the digits CNN only")
    args = parser.parse_args()
    from edge_sdk.keys import TrustStore, generate_key

    signer, device = generate_key("signing"), generate_key("device")
    keys = {"signer": signer, "device": device, "trust": TrustStore.from_keys([signer.public])}
    started = time.perf_counter()

    def progress(step: str) -> None:
        if step.startswith("auto"):
            print(f"  [{time.perf_counter() - started:5.0f} s] {step}", file=sys.stderr, flush=True)

    import tensorflow as tf

    print(f"TensorFlow {tf.__version__}, zstd level {LEVEL}, {os.cpu_count()} CPUs")
    sparse_rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cases: list[Callable[[], Case]] = [digits_case]
        if not args.quick:
            cases.append(mobilenet_case)
        for make in cases:
            case = make()
            print(
                f"  [{time.perf_counter() - started:5.0f} s] {case.label} trained", file=sys.stderr
            )
            pruned, _, calib = run_case(case, tmp, keys, progress)
            sparse_rows += sparse_encoding_rows(case, pruned, calib)
    table(
        "Converter sparsity encoding (tf.lite.Optimize.EXPERIMENTAL_SPARSITY) on the pruned models",
        ["model", "weights", "encoding", "sparse tensors", ".tflite", "zstd", "runs on LiteRT default (XNNPACK)",
         "outputs without XNNPACK vs dense"],
        sparse_rows,
    )  # fmt: skip
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
