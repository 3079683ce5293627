"""HOST ONLY: judging a converted model: float parity with the source, the accuracy gate.

TensorFlow is imported inside the functions that need it (extra ``host``), never at module level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edge_sdk.errors import (
    ConversionError,
    DataError,
    EdgeSDKError,
    excerpt,
)

from .datasets import Dataset
from .source_model import SourceModel
from .tensorflow_import import native_output_captured

#: Float parity: the largest difference between the float TFLite model and the source model, as
#: a fraction of the output's scale (its largest magnitude on the same inputs).
PARITY_RTOL = 1e-3
#: For an output that is all zeros (no scale to compare with): the largest absolute difference.
PARITY_ATOL = 1e-6
DEFAULT_MAX_ACCURACY_DROP = 1.0  # percentage points, classification
DEFAULT_MAX_OUTPUT_ERROR = 0.05  # relative RMS error of quantized vs float outputs
DEFAULT_MIN_COSINE = 0.99


# -- running TFLite on the host --------------------------------------------------------------------


def run_tflite(
    model_bytes: bytes, feeds: Mapping[str, np.ndarray], batch: int = 64
) -> dict[str, np.ndarray]:
    """Run a TFLite model over a dataset in batches, float in / float out, outputs by name."""
    from edge_sdk.device.runtime import Model

    with native_output_captured():
        model = Model(model_bytes)
    try:
        n = len(next(iter(feeds.values())))
        fixed = sorted({t.shape[0] for t in model.inputs if t.shape and t.shape[0] > 1})
        if fixed:
            # A first dimension fixed above 1 takes exactly that many rows per run.
            batch = fixed[0]
            if n % batch:
                raise DataError(
                    f"the model takes its inputs {batch} rows at a time; the data has {n} rows"
                )
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, n, batch):
            part = {k: v[start : start + batch] for k, v in feeds.items()}
            out = model.predict(part if len(part) > 1 else next(iter(part.values())))
            named = out if isinstance(out, dict) else {model.outputs[0].name: out}
            for name, value in named.items():
                chunks.setdefault(name, []).append(np.asarray(value, dtype=np.float32))
        return {k: np.concatenate(v) for k, v in chunks.items()}
    finally:
        model.close()


def _align(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Pair outputs by name when the names agree, else by order."""
    if set(reference) == set(candidate):
        return [(k, reference[k], candidate[k]) for k in reference]
    if len(reference) != len(candidate):
        raise ConversionError(
            f"the converted model has {len(candidate)} outputs, the source has {len(reference)}"
        )
    return [(k, reference[k], v) for k, v in zip(reference, candidate.values(), strict=True)]


def _format_advice(source: SourceModel) -> str:
    if source.format == "savedmodel":
        return "try packaging the model's .keras file instead of the SavedModel"
    if source.format == "h5":
        return "try saving the model as .keras (model.save('model.keras')) and packaging that"
    return "report it with the model; edge-sdk will not seal a model whose numbers changed"


def check_parity(
    source: SourceModel,
    float_bytes: bytes,
    feeds: dict[str, np.ndarray],
    synthetic: str | None = None,
) -> dict[str, Any]:
    """Compare the float TFLite model with the source model on ``feeds``.

    The error is measured relative to each output's scale (its largest magnitude on the same
    inputs), so a model with outputs in the hundreds is judged as fairly as one with
    probabilities. ``synthetic`` describes the inputs when they were made up (no data given).

    Raises:
        DataError: the source model cannot run on inputs of these shapes.
        ConversionError: the converted model cannot run them, or disagrees.
    """
    shapes = {name: list(array.shape) for name, array in feeds.items()}
    made_up = f"on {synthetic}" if synthetic else "on the data given"
    try:
        with native_output_captured():
            expected = source.predict(feeds)
    except Exception as exc:  # noqa: BLE001 - TensorFlow raises InvalidArgumentError, ValueError, …
        raise DataError(
            f"the source model cannot run on inputs of shape {shapes} {made_up}: "
            f"{excerpt(' '.join(str(exc).split()), 300)}",
            hint=(
                "give a size the model accepts with --input-shape NAME=1xHxWxC (a model with "
                "'valid' convolutions or pooling needs a minimum size), or pass --calibration "
                "or --eval data"
                if synthetic
                else "check the data's shapes and value ranges against the model's inputs"
            ),
        ) from None
    try:
        actual = run_tflite(float_bytes, feeds)
    except EdgeSDKError as exc:
        raise ConversionError(
            f"the float TFLite model cannot run on inputs of shape {shapes} that the source model "
            f"accepts: {exc.message}"
        ) from None
    outputs: dict[str, dict[str, float]] = {}
    for name, ref, got in _align(expected, actual):
        if ref.shape != got.shape:
            raise ConversionError(
                f"output {name}: converted shape {got.shape} differs from source {ref.shape}"
            )
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        finite = np.isfinite(ref64)
        same_nonfinite = np.array_equal(finite, np.isfinite(got64)) and np.array_equal(
            ref64[~finite], got64[~finite]
        )
        err = float(np.max(np.abs(ref64[finite] - got64[finite]))) if finite.any() else 0.0
        scale = float(np.max(np.abs(ref64[finite]))) if finite.any() else 0.0
        relative = err / scale if scale > 0 else (0.0 if err <= PARITY_ATOL else float("inf"))
        outputs[name] = {"max_abs_error": err, "output_scale": scale, "relative_error": relative}
        if not same_nonfinite or relative > PARITY_RTOL:
            measured = (
                f"max error {err:.3g} is {relative:.2g} of the output scale {scale:.3g} "
                f"(limit {PARITY_RTOL:g})"
                if same_nonfinite
                else "NaN or infinite values differ"
            )
            raise ConversionError(
                f"the float TFLite model disagrees with the source model on output {name!r}: "
                f"{measured}, {made_up}",
                hint=(
                    "the inputs were made up; if the model expects another range (0-255 pixels, "
                    "say), pass real inputs with --calibration or --eval and the check runs on "
                    "those. If it fails on real data too: " + _format_advice(source)
                    if synthetic
                    else _format_advice(source)
                ),
            )
    return {
        "samples": len(next(iter(feeds.values()))),
        "input_shapes": shapes,
        "max_abs_error": max((o["max_abs_error"] for o in outputs.values()), default=0.0),
        "max_relative_error": max((o["relative_error"] for o in outputs.values()), default=0.0),
        "outputs": outputs,
        "rtol": PARITY_RTOL,
        "atol": PARITY_ATOL,
        "passed": True,
    }


def class_labels(
    outputs: np.ndarray, labels: np.ndarray, name: str
) -> tuple[np.ndarray | None, str]:
    """The labels as class indices this output can be scored against, or None and why not.

    Accepted: class indices of shape (N,) or (N, 1), as integers or integer-valued floats; one-hot
    (or probability) rows of shape (N, C); and 0/1 labels for a single sigmoid output (N, 1).

    Raises:
        DataError: labels that are class indices but name a class the output does not have.
    """
    n = outputs.shape[0] if outputs.ndim else 0
    if labels.shape[0] != n:
        return None, f"{labels.shape[0]} labels for {n} outputs"
    classes = outputs.shape[1] if outputs.ndim == 2 else 1
    if labels.ndim == 2 and labels.shape[1] == classes and classes > 1:
        labels = labels.argmax(axis=1)  # one-hot or probability rows
    elif labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or outputs.ndim not in (1, 2) or labels.dtype.kind not in "biuf":
        return (
            None,
            f"labels of shape {list(labels.shape)} do not match output shape {list(outputs.shape)}",
        )
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            return None, "the labels are not class indices (they are not whole numbers)"
        labels = labels.astype(np.int64)
    labels = labels.astype(np.int64)
    top = 2 if classes == 1 else classes  # a single sigmoid output scores classes 0 and 1
    if labels.size and (labels.min() < 0 or labels.max() >= top):
        raise DataError(
            f"labels for output {excerpt(name)} range {int(labels.min())}..{int(labels.max())}, "
            f"but the output has {top} classes (0..{top - 1})",
            hint="check that y holds class indices (or one-hot rows) for this model",
        )
    return labels, ""


def _predicted(outputs: np.ndarray) -> np.ndarray:
    if outputs.ndim == 2 and outputs.shape[1] > 1:
        return np.asarray(outputs.argmax(axis=1))
    return (outputs.reshape(len(outputs)) >= 0.5).astype(np.int64)  # one sigmoid probability


def _output_gate(
    f: np.ndarray,
    q: np.ndarray,
    labels: np.ndarray | None,
    max_accuracy_drop: float,
    max_output_error: float,
    min_cosine: float,
    name: str = "output",
) -> dict[str, Any]:
    """The gate's verdict on one output: accuracy with class labels, else output error."""
    classes, why_not = class_labels(f, labels, name) if labels is not None else (None, "")
    if classes is not None:
        acc_f = float(np.mean(_predicted(f) == classes)) * 100
        acc_q = float(np.mean(_predicted(q) == classes)) * 100
        drop = acc_f - acc_q
        return {
            "metric": "accuracy",
            "float_accuracy": round(acc_f, 3),
            "quantized_accuracy": round(acc_q, 3),
            "drop_points": round(drop, 3),
            "budget_points": max_accuracy_drop,
            "passed": bool(drop <= max_accuracy_drop),
        }
    ignored = {"labels_ignored": why_not} if why_not else {}
    f64, q64 = f.astype(np.float64).ravel(), q.astype(np.float64).ravel()
    rmse = float(np.sqrt(np.mean((f64 - q64) ** 2))) if f64.size else 0.0
    # Relative to the outputs' own magnitude: robust when they barely vary (an untrained
    # softmax), where normalising by their spread would divide by almost nothing.
    rel = rmse / (float(np.sqrt(np.mean(f64**2))) + 1e-12) if f64.size else 0.0
    norms = float(np.linalg.norm(f64) * np.linalg.norm(q64))
    cosine = float(np.dot(f64, q64) / norms) if norms else (1.0 if rmse == 0 else 0.0)
    return {
        "metric": "output-error",
        "relative_rmse": round(rel, 5),
        "cosine": round(cosine, 6),
        "budget_relative_rmse": max_output_error,
        "budget_cosine": min_cosine,
        "passed": bool(rel <= max_output_error and cosine >= min_cosine),
        **ignored,
    }


def accuracy_gate(
    float_bytes: bytes,
    quant_bytes: bytes,
    data: Dataset,
    *,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    max_output_error: float = DEFAULT_MAX_OUTPUT_ERROR,
    min_cosine: float = DEFAULT_MIN_COSINE,
    output_names: Sequence[str] = (),
) -> dict[str, Any]:
    """Evaluate float and quantized models on ``data``; the report says whether the budget held.

    Every output is judged: an output with integer class labels (``y`` for the first output, or
    an array named after the output) and a 2-D shape by accuracy in percentage points, any other
    by the relative RMS error and cosine similarity of quantized against float outputs. The
    report's top level repeats the first failing output's figures (else the first output's);
    ``outputs`` has each output's.

    Args:
        output_names: the source model's output names in order, to match per-output labels.
    """
    f_out = run_tflite(float_bytes, data.inputs)
    q_out = run_tflite(quant_bytes, data.inputs)
    pairs = _align(f_out, q_out)
    names = list(output_names) if len(output_names) == len(pairs) else [n for n, _, _ in pairs]
    per_output = {
        name: _output_gate(
            f, q, data.labels_for(name, i), max_accuracy_drop, max_output_error, min_cosine, name
        )
        for i, (name, (_, f, q)) in enumerate(zip(names, pairs, strict=True))
    }
    failing = [v for v in per_output.values() if not v["passed"]]
    headline = failing[0] if failing else next(iter(per_output.values()))
    report: dict[str, Any] = {"data": data.source, "samples": len(data), **headline}
    report["passed"] = not failing
    if len(per_output) > 1:
        report["outputs"] = per_output
    return report
