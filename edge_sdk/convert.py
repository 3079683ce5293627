"""HOST ONLY: Keras / SavedModel → TFLite, quantization, parity check, accuracy gate.

TensorFlow is imported inside the functions that need it (extra ``host``), never at module level,
so importing this module costs nothing on a board. Every conversion is checked against the source
model: a converter path can succeed and still produce a model with the wrong weights, so the
float-converted model's outputs are compared with the source's on sample inputs, and a mismatch
fails the build.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import (
    AccuracyGateError,
    CompatibilityError,
    ConversionError,
    DataError,
    HostDependencyError,
    ModelInputError,
    install_hint,
)

if TYPE_CHECKING:
    from .pruning import PruneOptions

QUANTIZATIONS = ("none", "dynamic", "float16", "int8", "int16x8")
NEEDS_CALIBRATION = ("int8", "int16x8")
PARITY_SAMPLES = 16
PARITY_RTOL = 1e-3
PARITY_ATOL = 1e-4
DEFAULT_MAX_ACCURACY_DROP = 1.0  # percentage points, classification
DEFAULT_MAX_OUTPUT_ERROR = 0.05  # relative RMS error of quantized vs float outputs
DEFAULT_MIN_COSINE = 0.99
MAX_CALIBRATION_SAMPLES = 500

Progress = Callable[[str], None]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PICKLE_STARTS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def import_tensorflow() -> Any:
    """Import TensorFlow (host extra), or explain how to get it."""
    _quiet_tensorflow()
    try:
        # TensorFlow's import logs CUDA probing through absl straight to fd 2, past
        # TF_CPP_MIN_LOG_LEVEL; on a CPU-only host that is noise.
        with native_output_captured():
            import tensorflow as tf
    except ImportError:
        raise HostDependencyError(
            "converting Keras models needs TensorFlow, which is not installed",
            hint=install_hint("host"),
        ) from None
    return tf


# -- input formats ------------------------------------------------------------------------------


def detect_model_format(path: Path) -> str:
    """Tell a model file's format from its content: ``tflite``, ``keras``, ``h5`` or ``savedmodel``.

    Raises:
        ModelInputError: not a model we can read, with what was expected. Pickles are refused
            outright: loading one executes arbitrary code.
    """
    expected = "expected a .keras file, a Keras .h5 file, a SavedModel directory or a .tflite file"
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise ModelInputError(
            f"{path} is a directory but not a SavedModel (no saved_model.pb); {expected}"
        )
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        raise ModelInputError(f"model file {path} does not exist") from None
    except OSError as exc:
        raise ModelInputError(f"cannot read model file {path}: {exc.strerror}") from None
    if head[:2] in _PICKLE_STARTS or path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelInputError(
            f"{path} is a pickle; refusing to load it because unpickling executes arbitrary code",
            hint="save the model with model.save('model.keras') and package that",
        )
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(_HDF5_MAGIC):
        return "h5"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile:
            raise ModelInputError(
                f"{path} is a corrupt or truncated zip file; {expected}"
            ) from None
        if "config.json" in names:
            return "keras"
        raise ModelInputError(f"{path} is a zip file but not a Keras 3 .keras archive; {expected}")
    if not head:
        raise ModelInputError(f"{path} is empty; {expected}")
    raise ModelInputError(f"{path} is not a recognised model format; {expected}")


@dataclass
class SourceModel:
    """A loaded source model: how to convert it and how to run it for comparisons."""

    format: str
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int | None, ...], ...]
    output_names: tuple[str, ...]
    make_converter: Callable[[], Any] = field(repr=False)
    predict: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = field(repr=False)
    #: The loaded Keras model (None for a SavedModel): what ``--prune`` works on.
    keras_model: Any = field(default=None, repr=False)


def load_source_model(path: Path, fmt: str | None = None) -> SourceModel:
    """Load a Keras (.keras/.h5) model or a SavedModel for conversion.

    Raises:
        ModelInputError: the file is not a loadable model (truncated, not a model HDF5, …).
        HostDependencyError: TensorFlow is missing.
    """
    fmt = fmt or detect_model_format(path)
    tf = import_tensorflow()
    if fmt in ("keras", "h5"):
        import keras

        if fmt == "h5":
            _check_h5_is_model(path)
        try:
            with native_output_captured():  # CUDA probing chatter on CPU-only hosts
                model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises anything from ValueError to OSError
            raise ModelInputError(
                f"cannot load {path} as a Keras model: {str(exc).splitlines()[0][:300]}"
            ) from None
        return keras_source(model, fmt)
    if fmt == "savedmodel":
        try:
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelInputError(
                f"cannot load SavedModel {path}: {str(exc).splitlines()[0][:300]}"
            ) from None
        _, kwargs = fn.structured_input_signature
        input_names = tuple(sorted(kwargs))
        input_shapes = tuple(tuple(kwargs[n].shape) for n in input_names)
        output_names = tuple(sorted(fn.structured_outputs))

        def run_saved(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = fn(**{k: tf.constant(v) for k, v in feeds.items()})
            return {k: np.asarray(v) for k, v in result.items()}

        return SourceModel(
            fmt,
            input_names,
            input_shapes,
            output_names,
            lambda: tf.lite.TFLiteConverter.from_saved_model(str(path)),
            run_saved,
        )
    raise ModelInputError(f"{path}: format {fmt!r} cannot be converted (it is already TFLite?)")


def keras_source(model: Any, fmt: str = "keras") -> SourceModel:
    """A :class:`SourceModel` for an in-memory Keras model.

    The converter and the reference predictions are closures over *this* model, so a transformed
    (e.g. pruned) model is converted and parity-checked as itself, never as the file it came from.
    """
    tf = import_tensorflow()
    input_names = tuple(t.name for t in model.inputs)
    input_shapes = tuple(tuple(t.shape) for t in model.inputs)
    output_names = _keras_output_names(model)

    def run_keras(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [feeds[name] for name in input_names]
        result = model(args[0] if len(args) == 1 else args, training=False)
        values = result if isinstance(result, (list, tuple)) else [result]
        return {name: np.asarray(v) for name, v in zip(output_names, values, strict=True)}

    return SourceModel(
        fmt,
        input_names,
        input_shapes,
        output_names,
        lambda: tf.lite.TFLiteConverter.from_keras_model(model),
        run_keras,
        model,
    )


def _keras_output_names(model: Any) -> tuple[str, ...]:
    """The names the model's author gave its outputs (functional: output_names; Sequential: the
    layer that produces each output), falling back to ``output_<i>``."""
    names = list(getattr(model, "output_names", None) or [])
    if len(names) == len(model.outputs):
        return tuple(str(n) for n in names)
    found = []
    for i, tensor in enumerate(model.outputs):
        history = getattr(tensor, "_keras_history", None)
        operation = getattr(history, "operation", None)
        found.append(str(getattr(operation, "name", None) or f"output_{i}"))
    return tuple(found)


def _check_h5_is_model(path: Path) -> None:
    try:
        import h5py
    except ImportError:
        return  # keras will report it
    try:
        with h5py.File(path, "r") as handle:
            if "model_config" not in handle.attrs:
                raise ModelInputError(
                    f"{path} is an HDF5 file but holds no Keras model (no model_config); "
                    "weights-only files cannot be packaged",
                    hint="save the whole model: model.save('model.h5') or model.save('model.keras')",
                )
    except OSError as exc:
        raise ModelInputError(f"{path} is a corrupt or truncated HDF5 file ({exc})") from None


# -- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """Model inputs by name (first axis = samples) and optional labels."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def head(self, n: int) -> dict[str, np.ndarray]:
        return {k: v[:n] for k, v in self.inputs.items()}


def load_dataset(
    path: Path, input_names: Sequence[str], input_shapes: Sequence[Sequence[int | None]]
) -> Dataset:
    """Load calibration / evaluation data.

    Accepted: a ``.npy`` array (single-input models); a ``.npz`` with ``x`` (or one array per
    input name) and optional ``y``; a directory of images, resized to the model's input size and
    scaled to [0, 1].

    Raises:
        DataError: unreadable file, or arrays that do not fit the model's inputs.
    """
    if path.is_dir():
        return _load_images(path, input_names, input_shapes)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read data file {path} as .npy/.npz: {str(exc)[:200]}") from None
    labels = None
    if isinstance(loaded, np.ndarray):
        if len(input_names) != 1:
            raise DataError(
                f"{path}: a .npy holds one array but the model has inputs {list(input_names)}; use .npz"
            )
        inputs = {input_names[0]: loaded}
    else:
        with loaded:
            keys = set(loaded.files)
            labels = loaded["y"] if "y" in keys else loaded["labels"] if "labels" in keys else None
            if set(input_names) <= keys:
                inputs = {n: loaded[n] for n in input_names}
            elif len(input_names) == 1 and ({"x", "inputs"} & keys):
                inputs = {input_names[0]: loaded["x" if "x" in keys else "inputs"]}
            else:
                raise DataError(
                    f"{path}: expected arrays named 'x' (single input) or {list(input_names)}, found {sorted(keys)}"
                )
    for (name, array), shape in zip(inputs.items(), input_shapes, strict=True):
        _check_array(path, name, array, shape)
    counts = {len(a) for a in inputs.values()}
    if len(counts) != 1:
        raise DataError(f"{path}: inputs have different sample counts {sorted(counts)}")
    if labels is not None and len(labels) != counts.pop():
        raise DataError(
            f"{path}: {len(labels)} labels for {len(next(iter(inputs.values())))} samples"
        )
    return Dataset(inputs, labels, str(path))


def _check_array(path: Path, name: str, array: np.ndarray, shape: Sequence[int | None]) -> None:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: input {name!r} must be numeric, got {array.dtype}")
    if array.ndim != len(shape) or any(
        want not in (None, -1, got) for want, got in zip(shape[1:], array.shape[1:], strict=False)
    ):
        raise DataError(
            f"{path}: input {name!r} has shape {list(array.shape)}, the model expects "
            f"{[d if d is not None else -1 for d in shape]}"
        )
    if len(array) == 0:
        raise DataError(f"{path}: input {name!r} has no samples")


def _load_images(
    path: Path, input_names: Sequence[str], input_shapes: Sequence[Sequence[int | None]]
) -> Dataset:
    if len(input_names) != 1 or len(input_shapes[0]) != 4:
        raise DataError(f"{path}: an image directory needs a model with one NHWC image input")
    _, height, width, channels = input_shapes[0]
    tf = import_tensorflow()
    files = sorted(
        p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif")
    )
    if not files:
        raise DataError(f"{path}: no .png/.jpg/.bmp/.gif images found")
    images = []
    for file in files[:MAX_CALIBRATION_SAMPLES]:
        try:
            image = tf.io.decode_image(
                file.read_bytes(), channels=channels or 3, expand_animations=False
            )
        except (tf.errors.InvalidArgumentError, ValueError) as exc:
            raise DataError(
                f"cannot decode image {file}: {str(exc).splitlines()[0][:200]}"
            ) from None
        image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (height, width))
        images.append(np.asarray(image, dtype=np.float32))
    return Dataset({input_names[0]: np.stack(images)}, None, str(path))


def synthetic_inputs(
    source: SourceModel, n: int = PARITY_SAMPLES, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded random inputs, only ever used for the float parity check, never for calibration."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal((n, *[d or 1 for d in shape[1:]])).astype(np.float32)
        for name, shape in zip(source.input_names, source.input_shapes, strict=True)
    }


# -- running TFLite on the host --------------------------------------------------------------------


def run_tflite(
    model_bytes: bytes, feeds: Mapping[str, np.ndarray], batch: int = 64
) -> dict[str, np.ndarray]:
    """Run a TFLite model over a dataset in batches, float in / float out, outputs by name."""
    from .runtime import Model

    with native_output_captured():
        model = Model(model_bytes)
    try:
        n = len(next(iter(feeds.values())))
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


def _converter(
    source: SourceModel,
    quantize: str,
    io_dtype: str,
    calibration: Dataset | None,
    per_channel_dense: bool,
) -> Any:
    tf = import_tensorflow()
    conv = source.make_converter()
    if quantize == "none":
        return conv
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if quantize in NEEDS_CALIBRATION:
        assert calibration is not None
        samples = min(len(calibration), MAX_CALIBRATION_SAMPLES)

        def representative() -> Any:
            for i in range(samples):
                yield [
                    calibration.inputs[n][i : i + 1].astype(np.float32) for n in source.input_names
                ]

        conv.representative_dataset = representative
        if quantize == "int8":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io_dtype == "int8":
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
        else:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
    if not per_channel_dense:
        # Older runtimes (tflite-runtime 2.14) lack the FULLY_CONNECTED versions that per-channel
        # dense quantization produces; per-tensor keeps the op at a version they know.
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return conv


@contextlib.contextmanager
def native_output_captured() -> Iterator[io.StringIO]:
    """Capture what TensorFlow's C++ side and Keras print, so ``package`` output stays readable.

    The converter and the interpreter write progress chatter straight to file descriptors 1 and 2
    (``fully_quantize: 0 …``, ``INFO: Created … XNNPACK``); only a descriptor-level redirect
    catches that. The captured text is kept so a failure can quote it.
    """
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    text = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text):
                yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text.write(sink.read().decode(errors="replace"))


def _convert(conv: Any, what: str) -> bytes:
    captured = io.StringIO()
    try:
        with native_output_captured() as captured:
            return bytes(conv.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
        message = (str(exc).strip() or captured.getvalue().strip()).splitlines()
        raise ConversionError(
            f"TFLite conversion ({what}) failed: {(message or [type(exc).__name__])[-1][:400]}"
        ) from None


def _parity(
    source: SourceModel, float_bytes: bytes, feeds: dict[str, np.ndarray]
) -> dict[str, Any]:
    expected = source.predict(feeds)
    actual = run_tflite(float_bytes, feeds)
    worst = 0.0
    for name, ref, got in _align(expected, actual):
        if ref.shape != got.shape:
            raise ConversionError(
                f"output {name}: converted shape {got.shape} differs from source {ref.shape}"
            )
        err = float(np.max(np.abs(ref.astype(np.float64) - got))) if ref.size else 0.0
        worst = max(worst, err)
        if not np.allclose(got, ref, rtol=PARITY_RTOL, atol=PARITY_ATOL):
            raise ConversionError(
                f"the float TFLite model disagrees with the source model on output {name} "
                f"(max abs error {err:.3g}); the converter produced a broken model",
                hint="report this; try another input format (e.g. .keras instead of SavedModel)",
            )
    return {
        "samples": len(next(iter(feeds.values()))),
        "max_abs_error": worst,
        "rtol": PARITY_RTOL,
        "atol": PARITY_ATOL,
        "passed": True,
    }


def _is_classification(outputs: np.ndarray, labels: np.ndarray) -> bool:
    return (
        outputs.ndim == 2
        and outputs.shape[1] > 1
        and labels.ndim == 1
        and labels.dtype.kind in "iu"
    )


def accuracy_gate(
    float_bytes: bytes,
    quant_bytes: bytes,
    data: Dataset,
    *,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    max_output_error: float = DEFAULT_MAX_OUTPUT_ERROR,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> dict[str, Any]:
    """Evaluate float and quantized models on ``data``; the report says whether the budget held.

    With integer class labels (and a 2-D first output) it compares accuracy in percentage points;
    otherwise it compares quantized with float outputs: relative RMS error and cosine similarity.
    """
    f_out = run_tflite(float_bytes, data.inputs)
    q_out = run_tflite(quant_bytes, data.inputs)
    pairs = _align(f_out, q_out)
    first_f = pairs[0][1]
    report: dict[str, Any] = {"data": data.source, "samples": len(data)}
    if data.labels is not None and _is_classification(first_f, data.labels):
        acc_f = float(np.mean(np.argmax(first_f, axis=1) == data.labels)) * 100
        acc_q = float(np.mean(np.argmax(pairs[0][2], axis=1) == data.labels)) * 100
        drop = acc_f - acc_q
        report.update(
            metric="accuracy",
            float_accuracy=round(acc_f, 3),
            quantized_accuracy=round(acc_q, 3),
            drop_points=round(drop, 3),
            budget_points=max_accuracy_drop,
            passed=bool(drop <= max_accuracy_drop),
        )
        return report
    worst_rel, worst_cos = 0.0, 1.0
    for _, f, q in pairs:
        f64, q64 = f.astype(np.float64).ravel(), q.astype(np.float64).ravel()
        rmse = float(np.sqrt(np.mean((f64 - q64) ** 2)))
        # Relative to the outputs' own magnitude: robust when they barely vary (an untrained
        # softmax), where normalising by their spread would divide by almost nothing.
        rel = rmse / (float(np.sqrt(np.mean(f64**2))) + 1e-12)
        denom = float(np.linalg.norm(f64) * np.linalg.norm(q64)) or 1e-12
        worst_rel = max(worst_rel, rel)
        worst_cos = min(worst_cos, float(np.dot(f64, q64) / denom))
    report.update(
        metric="output-error",
        relative_rmse=round(worst_rel, 5),
        cosine=round(worst_cos, 6),
        budget_relative_rmse=max_output_error,
        budget_cosine=min_cosine,
        passed=bool(worst_rel <= max_output_error and worst_cos >= min_cosine),
    )
    return report


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
    prune: PruneOptions | None = None,
    progress: Progress = lambda _step: None,
) -> ConversionResult:
    """Convert, quantize, check parity, gate accuracy and check runtime compatibility.

    With ``prune`` the Keras model is pruned (and fine-tuned) first, and the accuracy gate
    compares the final model with the *unpruned* float model, so the budget covers both.

    Raises:
        ModelInputError, DataError: bad model or data.
        ConversionError: the converter failed or produced a model that disagrees with the source.
        AccuracyGateError: the quantized model lost more than the budget.
        CompatibilityError: the target runtime cannot run the result, even after adaptation.
    """
    from .compat import check_compatibility, read_tflite

    if quantize not in QUANTIZATIONS:
        raise DataError(
            f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}"
        )
    if io_dtype not in ("float32", "int8"):
        raise DataError(f"--io-dtype must be float32 or int8, not {io_dtype!r}")
    if io_dtype == "int8" and quantize != "int8":
        raise DataError("--io-dtype int8 needs --quantize int8")
    progress("load")
    source = load_source_model(path)
    calib = (
        load_dataset(calibration, source.input_names, source.input_shapes) if calibration else None
    )
    evald = (
        load_dataset(evaluation, source.input_names, source.input_shapes) if evaluation else None
    )
    if quantize in NEEDS_CALIBRATION and calib is None:
        raise DataError(
            f"--quantize {quantize} needs calibration data (--calibration FILE); "
            "edge-sdk never calibrates on random data",
            hint="pass a .npy/.npz of a few hundred real inputs, or a directory of images",
        )
    reference: bytes | None = None  # the unpruned float model, when pruning
    pruning: dict[str, Any] | None = None
    if prune is not None:
        from .pruning import prune_for_conversion

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
    float_bytes = _convert(source.make_converter(), "float32")
    real = calib or evald
    feeds = real.head(PARITY_SAMPLES) if real is not None else synthetic_inputs(source)
    parity = _parity(source, float_bytes, {k: v.astype(np.float32) for k, v in feeds.items()})
    parity["inputs"] = real.source if real is not None else "synthetic (seeded normal)"
    notes: list[str] = []
    if quantize == "none":
        model_bytes = float_bytes
    else:
        progress("calibrate" if quantize in NEEDS_CALIBRATION else "quantize")
        model_bytes = _convert(_converter(source, quantize, io_dtype, calib, True), quantize)
    progress("check")
    info = read_tflite(model_bytes)
    compat = check_compatibility(info, runtime, runtime_version)
    if not compat.ok and quantize in ("dynamic", "int8", "int16x8"):
        adapted = _convert(
            _converter(source, quantize, io_dtype, calib, False), f"{quantize}, per-tensor dense"
        )
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
        if data is None:
            data = Dataset(synthetic_inputs(source, 64, seed=1), None, "synthetic (seeded normal)")
        gate = accuracy_gate(
            reference or float_bytes,
            model_bytes,
            data,
            max_accuracy_drop=max_accuracy_drop,
            max_output_error=max_output_error,
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
        model_bytes, float_bytes, quantize, io_dtype, reports, tuple(notes), source.output_names
    )


def _gate_message(what: str, gate: Mapping[str, Any]) -> str:
    if gate.get("metric") == "accuracy":
        return (
            f"{what} drops accuracy by {gate['drop_points']:.2f} points "
            f"({gate['float_accuracy']:.2f}% → {gate['quantized_accuracy']:.2f}%), "
            f"budget {gate['budget_points']} points"
        )
    return (
        f"{what} changes outputs too much: relative RMS error "
        f"{gate['relative_rmse']:.4f} (budget {gate['budget_relative_rmse']}), cosine "
        f"{gate['cosine']:.4f} (minimum {gate['budget_cosine']})"
    )
