"""HOST ONLY: Keras / SavedModel → TFLite, quantization, parity check, accuracy gate, in one call.

:func:`convert_model` runs the steps; each lives in its own module: the source model
(:mod:`~edge_sdk.host.source_model`), its data (:mod:`~edge_sdk.host.datasets`), pruning
(:mod:`~edge_sdk.host.pruning`), the converter (:mod:`~edge_sdk.host.tflite_converter`) and the
judgement of the result (:mod:`~edge_sdk.host.quality_gate`). TensorFlow is imported inside the
functions that need it (extra ``host``), never at module level, so importing this module costs
nothing on a board. Every conversion is checked against the source model: a converter path can
succeed and still produce a model with the wrong weights, so the float-converted model's outputs
are compared with the source's on sample inputs, and a mismatch fails the build.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_sdk.errors import (
    AccuracyGateError,
    CompatibilityError,
    ConversionError,
    DataError,
    ModelInputError,
    UsageError,
    excerpt,
)

from .datasets import (
    PARITY_SAMPLES,
    Dataset,
    as_model_inputs,
    describe_synthetic,
    load_dataset,
    parse_input_shapes,
    synthetic_inputs,
)
from .pruning import Progress, PruneOptions, prune_for_conversion
from .quality_gate import (
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_MAX_OUTPUT_ERROR,
    DEFAULT_MIN_COSINE,
    accuracy_gate,
    check_parity,
)
from .source_model import custom_objects, exported_source, load_source_model
from .tensorflow_import import import_tensorflow
from .tflite_converter import NEEDS_CALIBRATION, make_converter, run_converter

QUANTIZATIONS = ("none", "dynamic", "float16", "int8", "int16x8")


# -- conversion ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversionResult:
    """The converted model and everything the manifest should record about how it was made."""

    model_bytes: bytes
    float_bytes: bytes
    quantization: str
    io_dtype: str
    reports: dict[str, Any]
    notes: tuple[str, ...]
    output_names: tuple[str, ...] = ()
    #: The source model's input names in its own order (what a list passed to predict follows).
    input_names: tuple[str, ...] = ()


def convert_model(
    path: Path,
    *,
    quantize: str,
    runtime: str,
    runtime_version: str,
    io_dtype: str = "float32",
    calibration: Path | None = None,
    evaluation: Path | None = None,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    max_output_error: float = DEFAULT_MAX_OUTPUT_ERROR,
    min_output_cosine: float = DEFAULT_MIN_COSINE,
    input_shapes: Sequence[str] = (),
    custom_object_specs: Sequence[str] = (),
    imports: Sequence[str] = (),
    prune: PruneOptions | None = None,
    progress: Progress = lambda _step: None,
) -> ConversionResult:
    """Convert, quantize, check parity, gate accuracy and check runtime compatibility.

    With ``prune`` the Keras model is pruned (and fine-tuned) first, and the accuracy gate
    compares the final model with the *unpruned* float model, so the budget covers both.

    Args:
        input_shapes: ``NAME=1x96x96x3`` specs: the shape of synthetic parity inputs for inputs
            whose dimensions the model leaves open (calibration / evaluation data wins).
        custom_object_specs: ``module:Class`` specs of custom layer classes the model uses.
        imports: modules (or ``.py`` files) to import first, e.g. ones that register classes.

    Raises:
        UsageError: a malformed --input-shape / --custom-objects / --import.
        ModelInputError, DataError: bad model or data.
        ConversionError: the converter failed or produced a model that disagrees with the source.
        AccuracyGateError: the quantized model lost more than the budget.
        CompatibilityError: the target runtime cannot run the result, even after adaptation.
    """
    from edge_sdk.format.compat import check_compatibility, read_tflite

    if quantize not in QUANTIZATIONS:
        raise UsageError(
            f"unknown quantization {excerpt(quantize)}; choose one of {', '.join(QUANTIZATIONS)}"
        )
    if io_dtype not in ("float32", "int8"):
        raise UsageError(f"--io-dtype must be float32 or int8, not {excerpt(io_dtype)}")
    if io_dtype == "int8" and quantize != "int8":
        raise UsageError("--io-dtype int8 needs --quantize int8")
    if quantize in NEEDS_CALIBRATION and calibration is None:
        # Said before the model is loaded: the command line alone shows it.
        raise DataError(
            f"--quantize {quantize} needs calibration data (--calibration FILE); "
            "edge-sdk never calibrates on random data",
            hint="pass a .npy/.npz of a few hundred real inputs, or a directory of images",
        )
    progress("load")
    # TensorFlow first, quietly: a user module given to --import usually imports keras, and
    # would otherwise pull TensorFlow in with its start-up chatter on the terminal.
    import_tensorflow()
    objects = custom_objects(custom_object_specs, imports)
    source = load_source_model(path, objects=objects)
    shapes = parse_input_shapes(input_shapes, source)
    if io_dtype == "int8" and any(
        source.dtype(i).kind != "f" for i in range(len(source.input_names))
    ):
        raise DataError(
            "--io-dtype int8 quantizes float inputs, but this model also takes "
            + ", ".join(
                f"{n!r} ({source.dtype(i)})"
                for i, n in enumerate(source.input_names)
                if source.dtype(i).kind != "f"
            ),
            hint="leave --io-dtype at float32: integer inputs are passed as they are",
        )

    def dataset(file: Path) -> Dataset:
        data = load_dataset(file, source.input_names, source.input_shapes, source.output_names)
        return replace(data, inputs=as_model_inputs(source, data.inputs, str(file)))

    calib = dataset(calibration) if calibration else None
    evald = dataset(evaluation) if evaluation else None
    reference: bytes | None = None  # the unpruned float model, when pruning
    pruning: dict[str, Any] | None = None
    if prune is not None:
        if source.keras_model is None:
            raise ModelInputError(
                f"{path}: --prune needs a Keras model (.keras or .h5); a SavedModel's weights "
                "cannot be pruned"
            )
        pruned = prune_for_conversion(
            source.keras_model,
            prune,
            fmt=source.format,
            quantize=quantize,
            io_dtype=io_dtype,
            calibration=calib,
            evaluation=evald,
            max_accuracy_drop=max_accuracy_drop,
            max_output_error=max_output_error,
            progress=progress,
        )
        source, reference, pruning = pruned.source, pruned.reference_float, pruned.report.to_dict()
    progress("convert")
    routed_note: str | None = None
    try:
        float_bytes = run_converter(source.make_converter(), "float32", source)
    except ConversionError as keras_failure:
        # TFLite's Keras path fails on models its SavedModel path converts (keras-hub): retry
        # through an export; when that fails too, the Keras path's own error is the one to read.
        routed = exported_source(source)
        if routed is None:
            raise
        try:
            float_bytes = run_converter(routed.make_converter(), "float32", routed)
        except ConversionError:
            raise keras_failure from None
        source = routed
        routed_note = (
            "converted through a SavedModel export of the Keras model: the direct Keras "
            f"conversion failed ({excerpt(keras_failure.message, 160)}); parity is checked "
            "against the Keras model"
        )
    # Real inputs when there are any (a model fed 0-255 pixels is judged on pixels); otherwise
    # inputs made up in each input's own dtype and range, at the --input-shape or default size.
    real = calib or evald
    synthetic = None if real is not None else describe_synthetic(source)
    fixed_rows = [d[0] for d in source.input_shapes if d and d[0] is not None and d[0] > 1]
    head = fixed_rows[0] if fixed_rows else PARITY_SAMPLES  # rows a fixed first dimension takes
    feeds = real.head(head) if real is not None else synthetic_inputs(source, shapes=shapes)
    parity = check_parity(source, float_bytes, feeds, synthetic)
    parity["inputs"] = real.source if real is not None else synthetic
    notes: list[str] = [routed_note] if routed_note else []
    if quantize == "none":
        model_bytes = float_bytes
    else:
        progress("calibrate" if quantize in NEEDS_CALIBRATION else "quantize")
        model_bytes = run_converter(
            make_converter(source, quantize, io_dtype, calib, True), quantize, source
        )
    if quantize != "none" and len(model_bytes) >= len(float_bytes):
        # TensorFlow leaves tensors under 1,024 elements (and some ops) in float: a small model
        # may come out unchanged. Say so rather than claim a quantization that did not happen.
        notes.append(
            f"{quantize} quantization changed nothing of size here ({len(model_bytes):,} bytes, "
            f"float {len(float_bytes):,}): TensorFlow keeps small tensors in float; the bundle "
            "runs the float model"
        )
    progress("check")
    info = read_tflite(model_bytes)
    compat = check_compatibility(info, runtime, runtime_version)
    if not compat.ok and quantize in ("dynamic", "int8", "int16x8"):
        adapted = run_converter(
            make_converter(source, quantize, io_dtype, calib, False), f"{quantize}, per-tensor dense",
            source,
        )  # fmt: skip
        adapted_compat = check_compatibility(read_tflite(adapted), runtime, runtime_version)
        if adapted_compat.ok:
            notes.append(
                f"adapted for {runtime} {runtime_version}: per-channel quantization of dense layers "
                f"disabled ({compat.summary()})"
            )
            model_bytes, compat = adapted, adapted_compat
    if not compat.ok:
        raise CompatibilityError(
            compat.summary(), hint="choose another --quantize, or a newer runtime in the profile"
        )
    gate: dict[str, Any] = {"passed": True, "metric": "none (float32 model)"}
    if quantize != "none" or reference is not None:
        progress("evaluate")
        data = evald or calib
        # Never a silent stand-in for the user's data: the report names the data, and so does a note.
        if evald is None and calib is not None:
            notes.append(
                "the accuracy gate compared the quantized model with the float one on the "
                "calibration data (no --eval given); pass --eval DATA.npz with labels (y) to "
                "measure accuracy on held-out data"
            )
        if data is None:
            data = Dataset(
                synthetic_inputs(source, 64, seed=1, shapes=shapes),
                None,
                describe_synthetic(source),
            )
            notes.append(
                "the accuracy gate ran on 64 synthetic inputs, not on your data (no --eval or "
                "--calibration given); pass --eval DATA.npz (x, y) to check the quantized model "
                "on real data"
            )
        gate = accuracy_gate(
            reference or float_bytes,
            model_bytes,
            data,
            max_accuracy_drop=max_accuracy_drop,
            max_output_error=max_output_error,
            min_cosine=min_output_cosine,
            output_names=source.output_names,
        )
        per_output = gate.get("outputs") or {
            source.output_names[0] if source.output_names else "output": gate
        }
        for out_name, verdict in per_output.items():
            if verdict.get("labels_ignored"):
                notes.append(
                    f"labels for output {excerpt(out_name)} were not used ({verdict['labels_ignored']}); "
                    "the gate compared outputs instead of measuring accuracy"
                )
        if not gate["passed"]:
            what = f"{quantize} quantization" if quantize != "none" else ""
            if pruning is not None:
                what = " + ".join(filter(None, [f"pruning to {pruning['sparsity']:.0%}", what]))
            raise AccuracyGateError(
                _gate_message(what, gate),
                hint="raise the budget, or try a milder --quantize"
                + (", a lower --prune, --prune auto, or --train to fine-tune" if pruning else ""),
            )
    tf = import_tensorflow()
    reports = {
        "conversion": {
            "source_format": source.format,
            "converter": f"tensorflow {tf.__version__}",
            "quantization": quantize,
            "io_dtype": io_dtype,
            "float_size": len(float_bytes),
            "size": len(model_bytes),
            "parity": parity,
            "notes": notes,
        },
        "accuracy": gate,
        "compatibility": compat.to_dict(),
    }
    if pruning is not None:
        reports["pruning"] = pruning
    return ConversionResult(
        model_bytes, float_bytes, quantize, io_dtype, reports, tuple(notes), source.output_names,
        source.input_names,
    )  # fmt: skip


def _gate_message(what: str, gate: Mapping[str, Any]) -> str:
    """Every failing output with its figures against the budget."""
    outputs = gate.get("outputs") or {"": gate}
    parts = []
    for name, result in outputs.items():
        if result.get("passed", True) and len(outputs) > 1:
            continue
        if result.get("metric") == "accuracy":
            text = (
                f"drops accuracy by {result['drop_points']:.2f} points "
                f"({result['float_accuracy']:.2f}% → {result['quantized_accuracy']:.2f}%), "
                f"budget {result['budget_points']} points"
            )
        else:
            text = (
                f"changes outputs too much: relative RMS error "
                f"{result['relative_rmse']:.4f} (budget {result['budget_relative_rmse']}), cosine "
                f"{result['cosine']:.4f} (minimum {result['budget_cosine']})"
            )
        parts.append(f"on output {name!r} {text}" if len(outputs) > 1 else text)
    return f"{what or 'the model'} " + "; ".join(parts)
