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
import re
import sys
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_sdk.errors import (
    AccuracyGateError,
    CompatibilityError,
    ConversionError,
    DataError,
    EdgeSDKError,
    HostDependencyError,
    ModelInputError,
    UsageError,
    excerpt,
    install_hint,
)

if TYPE_CHECKING:
    from .pruning import PruneOptions

QUANTIZATIONS = ("none", "dynamic", "float16", "int8", "int16x8")
NEEDS_CALIBRATION = ("int8", "int16x8")
PARITY_SAMPLES = 16
#: Float parity: the largest difference between the float TFLite model and the source model, as
#: a fraction of the output's scale (its largest magnitude on the same inputs).
PARITY_RTOL = 1e-3
#: For an output that is all zeros (no scale to compare with): the largest absolute difference.
PARITY_ATOL = 1e-6
#: Synthetic parity inputs for dimensions the model leaves open (documented in the README):
#: height and width of an image input (rank 4), and any other open dimension.
DEFAULT_IMAGE_SIZE = 224
DEFAULT_DIMENSION = 32
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
    #: Each input's numpy dtype name (``float32``, ``int32`` for token ids, ``uint8``, ``bool``).
    input_dtypes: tuple[str, ...] = ()
    #: For integer inputs, the half-open range of valid values (token ids below the vocabulary
    #: size of the Embedding that reads them); ``None`` where nothing says.
    input_ranges: tuple[tuple[int, int] | None, ...] = ()

    def dtype(self, index: int) -> np.dtype[Any]:
        """The numpy dtype input ``index`` takes (float32 when unknown)."""
        return np.dtype(self.input_dtypes[index] if index < len(self.input_dtypes) else "float32")


#: What Keras says when a class the file names is not registered, and when a Lambda is refused.
_UNKNOWN_CLASS = re.compile(
    r"Could not (?:locate|interpret) (?:class|function|layer)\w* '([^']{1,100})'"
)
_LAMBDA = re.compile(r"`?Lambda`? layer")


def _keras_load_error(path: Path, fmt: str, exc: BaseException) -> ModelInputError:
    """A message that says what Keras could not do and what to do about it."""
    text = " ".join(str(exc).split())
    unknown = sorted(set(_UNKNOWN_CLASS.findall(text)))
    if unknown:
        names = ", ".join(excerpt(n) for n in unknown[:8])
        return ModelInputError(
            f"cannot load {path}: it uses custom classes Keras does not know here: {names} "
            f"(Keras: {excerpt(text[text.find('Could not') :], 200)})",
            hint="make the classes importable and name them: --custom-objects "
            "my_layers:ScaleShift (module:Class, repeatable), or --import my_layers for a module "
            "that registers them with @keras.saving.register_keras_serializable()",
        )
    if _LAMBDA.search(text) and ("safe_mode" in text or "unsafe" in text):
        return ModelInputError(
            f"cannot load {path}: it contains a Lambda layer, whose function is stored as Python "
            "bytecode; loading it would run code from the file, so edge-sdk refuses it (Keras's "
            "safe mode stays on)",
            hint="replace the Lambda with a small layer class (subclass keras.layers.Layer, "
            "decorate it with @keras.saving.register_keras_serializable()), save again, and "
            "package with --import my_layers (or --custom-objects my_layers:MyLayer)",
        )
    if fmt == "h5":
        return ModelInputError(
            f"cannot load {path}: Keras cannot rebuild this model from its legacy .h5 file "
            f"({excerpt(text, 300)})",
            hint="Keras 3 cannot reload every model it saved as .h5 (MobileNetV3 for one); save it "
            "with model.save('model.keras') and package the .keras file",
        )
    return ModelInputError(f"cannot load {path} as a Keras model: {excerpt(text, 300)}")


def _import_module(spec: str) -> Any:
    """``spec`` is a module name (``my_layers``, ``pkg.layers``) or a ``.py`` file path."""
    import importlib
    import importlib.util

    try:
        if spec.endswith(".py"):
            file = Path(spec)
            if not file.is_file():
                raise UsageError(f"--import / --custom-objects: {excerpt(spec)} is not a file")
            module_spec = importlib.util.spec_from_file_location(file.stem, file)
            if module_spec is None or module_spec.loader is None:
                raise UsageError(f"cannot import {excerpt(spec)} as a Python module")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[file.stem] = module
            module_spec.loader.exec_module(module)
            return module
        # A console script's sys.path lacks the working directory, where a user's layers module
        # usually is; a module name is looked up there too.
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())
        return importlib.import_module(spec)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module may raise anything on import
        raise UsageError(
            f"cannot import {excerpt(spec)}: {type(exc).__name__}: {excerpt(str(exc), 200)}",
            hint="give a module importable from the current directory or the Python path, or a "
            ".py file",
        ) from None


def custom_objects(specs: Sequence[str] = (), imports: Sequence[str] = ()) -> dict[str, Any]:
    """Import the modules of ``--import`` and resolve ``--custom-objects module:Class`` specs.

    Returns:
        The objects by the names a saved model may use for them (the class name and, for a
        registered class, its registered name), for ``keras.saving.load_model``.

    Raises:
        UsageError: a spec without ``:``, a module that will not import, a missing attribute.
    """
    for spec in imports:
        _import_module(spec)
    objects: dict[str, Any] = {}
    for spec in specs:
        module_name, _, attribute = spec.rpartition(":")
        if not module_name or not attribute:
            raise UsageError(
                f"--custom-objects takes module:Class (e.g. my_layers:ScaleShift), got {excerpt(spec)}"
            )
        module = _import_module(module_name)
        try:
            obj = getattr(module, attribute)
        except AttributeError:
            raise UsageError(
                f"{excerpt(module_name)} has no attribute {excerpt(attribute)}"
            ) from None
        objects[attribute] = obj
        objects[getattr(obj, "__name__", attribute)] = obj
        try:
            import keras

            objects[keras.saving.get_registered_name(obj)] = obj
        except (ImportError, TypeError, AttributeError):
            pass
    return objects


def load_source_model(
    path: Path, fmt: str | None = None, *, objects: Mapping[str, Any] | None = None
) -> SourceModel:
    """Load a Keras (.keras/.h5) model or a SavedModel for conversion.

    Args:
        objects: custom classes by name (see :func:`custom_objects`).

    Raises:
        ModelInputError: the file is not a loadable model (truncated, not a model HDF5, unknown
            custom classes, a Lambda layer, …), with what to do about it.
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
                model = keras.saving.load_model(
                    str(path), custom_objects=dict(objects or {}), compile=False, safe_mode=True
                )
        except Exception as exc:  # noqa: BLE001 - Keras raises anything from ValueError to OSError
            raise _keras_load_error(path, fmt, exc) from None
        return keras_source(model, fmt)
    if fmt == "savedmodel":
        try:
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelInputError(
                f"cannot load SavedModel {path}: {excerpt(str(exc).splitlines()[0], 300)}"
            ) from None
        _, kwargs = fn.structured_input_signature
        input_names = tuple(sorted(kwargs))
        input_shapes = tuple(tuple(kwargs[n].shape) for n in input_names)
        output_names = tuple(sorted(fn.structured_outputs))
        dtypes = tuple(np.dtype(kwargs[n].dtype.as_numpy_dtype).name for n in input_names)

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
            input_dtypes=dtypes,
            input_ranges=tuple(_default_range(np.dtype(d), None) for d in dtypes),
        )
    raise ModelInputError(f"{path}: format {fmt!r} cannot be converted (it is already TFLite?)")


def _default_range(dtype: np.dtype[Any], vocabulary: int | None) -> tuple[int, int] | None:
    """Valid values of an integer input: below the vocabulary when known; all of uint8/int8
    (pixels); else 0 and 1, which any index-like input accepts."""
    if dtype.kind not in "iu":
        return None
    if vocabulary is not None:
        return (0, vocabulary)
    if dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return (int(info.min), int(info.max) + 1)
    return (0, 2)


_VOCABULARY_LAYERS = {"Embedding": "input_dim", "CategoryEncoding": "num_tokens"}


def _vocabulary(model: Any, tensor: Any = None) -> int | None:
    """The smallest vocabulary of the Embedding / CategoryEncoding layers that read ``tensor``
    directly (any of the model's, when ``tensor`` is None): ids below it are valid."""
    sizes: list[int] = []
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []) or [])
        attribute = _VOCABULARY_LAYERS.get(type(layer).__name__)
        value = getattr(layer, attribute, None) if attribute else None
        if not isinstance(value, int):
            continue
        nodes = getattr(layer, "_inbound_nodes", None) or []
        reads = any(t is tensor for node in nodes for t in getattr(node, "input_tensors", []) or [])
        if tensor is None or reads:
            sizes.append(value)
    return min(sizes) if sizes else None


def _input_vocabulary(model: Any, tensor: Any) -> int | None:
    """For an integer input: the vocabulary of the layer reading it; failing that, of any
    embedding in the model unless the input is 8-bit (pixels)."""
    direct = _vocabulary(model, tensor)
    if direct is not None:
        return direct
    dtype = np.dtype(str(getattr(tensor, "dtype", "float32")))
    return None if dtype.itemsize == 1 else _vocabulary(model)


def keras_source(model: Any, fmt: str = "keras") -> SourceModel:
    """A :class:`SourceModel` for an in-memory Keras model.

    The converter and the reference predictions are closures over *this* model, so a transformed
    (e.g. pruned) model is converted and parity-checked as itself, never as the file it came from.
    """
    tf = import_tensorflow()
    input_names = tuple(t.name for t in model.inputs)
    input_shapes = tuple(tuple(t.shape) for t in model.inputs)
    input_dtypes = tuple(np.dtype(str(getattr(t, "dtype", "float32"))).name for t in model.inputs)
    output_names = _keras_output_names(model)

    # A model built for one sample per call (keras.Input(..., batch_size=1)) is run sample by
    # sample, as the device runtime runs it: its graph may hard-code that one sample.
    one_at_a_time = any(shape and shape[0] == 1 for shape in input_shapes)
    # Only a first dimension that is a batch (open, or one sample) may be split into samples.
    batched = all(shape and shape[0] in (None, -1, 1) for shape in input_shapes)

    def run_once(args: list[np.ndarray]) -> list[np.ndarray]:
        result = model(args[0] if len(args) == 1 else args, training=False)
        if isinstance(result, Mapping):  # outputs by key, in the order output_names has them
            return [np.asarray(result[name]) for name in output_names]
        values = result if isinstance(result, (list, tuple)) else [result]
        return [np.asarray(v) for v in values]

    def run_keras(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [feeds[name] for name in input_names]
        n = len(args[0]) if args and np.ndim(args[0]) else 1
        values = None if one_at_a_time and n != 1 else run_once(args)
        folded = batched and n > 1 and any(v.ndim == 0 or len(v) != n for v in values or ())
        if values is None or folded:
            # Outputs that do not follow the batch (a reshape hard-coding one sample folds a
            # batch together): per sample, as the device runtime runs such a model.
            runs = [run_once([a[i : i + 1] for a in args]) for i in range(n)]
            values = [np.concatenate(parts) for parts in zip(*runs, strict=True)]
        return dict(zip(output_names, values, strict=True))

    return SourceModel(
        fmt,
        input_names,
        input_shapes,
        output_names,
        lambda: tf.lite.TFLiteConverter.from_keras_model(model),
        run_keras,
        model,
        input_dtypes,
        tuple(
            _default_range(
                np.dtype(d), _input_vocabulary(model, t) if np.dtype(d).kind in "iu" else None
            )
            for d, t in zip(input_dtypes, model.inputs, strict=True)
        ),
    )


def _keras_output_names(model: Any) -> tuple[str, ...]:
    """The names the model's author gave its outputs, in the order of ``model.outputs``: the keys
    of a model that returns a dict (which TFLite's signature uses too), else output_names
    (functional) or the layer that produces each output (Sequential), else ``output_<i>``."""
    try:
        structure = model.output
    except (AttributeError, ValueError):  # a Sequential model never called has none
        structure = None
    if isinstance(structure, Mapping) and len(structure) == len(model.outputs):
        key_of = {id(tensor): str(key) for key, tensor in structure.items()}
        if all(id(tensor) in key_of for tensor in model.outputs):
            return tuple(key_of[id(tensor)] for tensor in model.outputs)
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
    """Model inputs by name (first axis = samples) and optional labels.

    ``labels`` are the labels of the first (or only) output (``y`` in a ``.npz``);
    ``output_labels`` holds per-output labels by output name, for models with several outputs.
    """

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    output_labels: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def head(self, n: int) -> dict[str, np.ndarray]:
        return {k: v[:n] for k, v in self.inputs.items()}

    def labels_for(self, output: str, index: int) -> np.ndarray | None:
        """The labels of one output: by its name, else ``y`` for the first output."""
        if output in self.output_labels:
            return self.output_labels[output]
        return self.labels if index == 0 else None


def load_dataset(
    path: Path,
    input_names: Sequence[str],
    input_shapes: Sequence[Sequence[int | None]],
    output_names: Sequence[str] = (),
) -> Dataset:
    """Load calibration / evaluation data.

    Accepted: a ``.npy`` array (single-input models); a ``.npz`` with ``x`` (single input) or one
    array per input name, and optional labels: ``y`` for the first (or only) output, or one array
    per output name; a directory of images, resized to the model's input size and scaled to
    [0, 1].

    Raises:
        DataError: unreadable file, or arrays that do not fit the model's inputs.
    """
    if path.is_dir():
        return _load_images(path, input_names, input_shapes)
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"data file {path} does not exist") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"cannot read data file {path} as .npy/.npz: {excerpt(str(exc), 200)}"
        ) from None
    labels = None
    by_output: dict[str, np.ndarray] = {}
    if isinstance(loaded, np.ndarray):
        if len(input_names) != 1:
            raise DataError(
                f"{path}: a .npy holds one array but the model has inputs {list(input_names)}; use .npz"
            )
        inputs = {input_names[0]: loaded}
    else:
        try:
            with loaded:
                keys = set(loaded.files)
                labels = (
                    loaded["y"] if "y" in keys else loaded["labels"] if "labels" in keys else None
                )
                if set(input_names) <= keys:
                    inputs = {n: loaded[n] for n in input_names}
                elif len(input_names) == 1 and ({"x", "inputs"} & keys):
                    inputs = {input_names[0]: loaded["x" if "x" in keys else "inputs"]}
                else:
                    raise DataError(
                        f"{path}: expected arrays named 'x' (single input) or {list(input_names)}, "
                        f"found {excerpt(sorted(keys))}",
                        hint="see the README: one array per input name, plus 'y' or one array "
                        "of labels per output name",
                    )
                by_output = {n: loaded[n] for n in output_names if n in keys and n not in inputs}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"cannot read data file {path}: {excerpt(str(exc), 200)}") from None
    for (name, array), shape in zip(inputs.items(), input_shapes, strict=True):
        _check_array(path, name, array, shape)
    counts = {len(a) for a in inputs.values()}
    if len(counts) != 1:
        raise DataError(f"{path}: inputs have different sample counts {sorted(counts)}")
    count = counts.pop()
    given = [("'y'", labels), *((f"output {n!r}", a) for n, a in by_output.items())]
    for what, label_array in given:
        if label_array is not None and (label_array.ndim == 0 or len(label_array) != count):
            shown = len(label_array) if label_array.ndim else 0
            raise DataError(f"{path}: {shown} labels for {count} samples ({what})")
    return Dataset(inputs, labels, str(path), by_output)


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


def parse_input_shapes(specs: Sequence[str], source: SourceModel) -> dict[str, tuple[int, ...]]:
    """``--input-shape NAME=1x96x96x3`` (NAME may be left out for a single-input model).

    Returns:
        Full shapes (batch first) by input name.

    Raises:
        UsageError: an unknown input, a malformed shape, or one that changes a fixed dimension.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, text = spec.rpartition("=")
        if not sep:
            if len(source.input_names) != 1:
                raise UsageError(
                    f"--input-shape {excerpt(spec)}: the model has inputs "
                    f"{list(source.input_names)}; write NAME=1x96x96x3"
                )
            name = source.input_names[0]
        if name not in source.input_names:
            raise UsageError(
                f"--input-shape: the model has no input {excerpt(name)}; it takes "
                f"{list(source.input_names)}"
            )
        model_shape = source.input_shapes[source.input_names.index(name)]
        try:
            dims = tuple(int(d) for d in text.lower().split("x"))
        except ValueError:
            dims = ()
        if (
            len(dims) != len(model_shape)
            or any(d <= 0 for d in dims)
            or any(
                want not in (None, -1, got)
                for want, got in zip(model_shape[1:], dims[1:], strict=False)
            )
        ):
            shown = "x".join("?" if d in (None, -1) else str(d) for d in model_shape)
            raise UsageError(
                f"--input-shape {excerpt(spec)}: input {name!r} has shape {shown} (? = any size); "
                "give every dimension as a positive number, batch first, e.g. 1x96x96x3"
            )
        shapes[name] = dims
    return shapes


def sample_shapes(
    source: SourceModel, overrides: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Each input's shape for one synthetic sample (without the batch axis).

    A dimension the model leaves open takes the ``--input-shape`` value, else a documented
    default: :data:`DEFAULT_IMAGE_SIZE` for the height and width of an image input (rank 4),
    3 channels, :data:`DEFAULT_DIMENSION` for any other.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in zip(source.input_names, source.input_shapes, strict=True):
        if overrides and name in overrides:
            shapes[name] = tuple(overrides[name][1:])
            continue
        dims = []
        for axis, dim in enumerate(shape[1:], start=1):
            if dim is not None and dim >= 0:
                dims.append(int(dim))
            elif len(shape) == 4:
                dims.append(DEFAULT_IMAGE_SIZE if axis in (1, 2) else 3)
            else:
                dims.append(DEFAULT_DIMENSION)
        shapes[name] = tuple(dims)
    return shapes


def synthetic_inputs(
    source: SourceModel,
    n: int = PARITY_SAMPLES,
    seed: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded random inputs, only ever used for the float parity check, never for calibration.

    Each input gets its own dtype: floats from a standard normal, integers (token ids) uniform in
    the input's valid range, booleans at random.
    """
    rng = np.random.default_rng(seed)
    per_sample = sample_shapes(source, shapes)
    feeds: dict[str, np.ndarray] = {}
    for i, name in enumerate(source.input_names):
        first = source.input_shapes[i][0] if source.input_shapes[i] else None
        # A first dimension fixed above 1 is not a batch (rows the model needs together).
        rows = first if first is not None and first > 1 else n
        shape, dtype = (rows, *per_sample[name]), source.dtype(i)
        if dtype.kind == "b":
            feeds[name] = rng.random(shape) < 0.5
        elif dtype.kind in "iu":
            low, high = _input_range(source, i)
            feeds[name] = rng.integers(low, high, shape).astype(dtype)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _input_range(source: SourceModel, index: int) -> tuple[int, int]:
    known = source.input_ranges[index] if index < len(source.input_ranges) else None
    return known or _default_range(source.dtype(index), None) or (0, 2)


def describe_synthetic(source: SourceModel) -> str:
    """What :func:`synthetic_inputs` feeds, for reports and messages."""
    parts = []
    for i, name in enumerate(source.input_names):
        dtype = source.dtype(i)
        if dtype.kind == "b":
            parts.append(f"{name}: random booleans")
        elif dtype.kind in "iu":
            low, high = _input_range(source, i)
            parts.append(f"{name}: {dtype} uniform in [{low}, {high})")
        else:
            parts.append(f"{name}: seeded standard normal")
    return "synthetic (" + "; ".join(parts) + ")"


def as_model_inputs(
    source: SourceModel, feeds: Mapping[str, np.ndarray], what: str
) -> dict[str, np.ndarray]:
    """Data arrays cast to each input's own dtype; integer inputs need whole numbers in range.

    Raises:
        DataError: fractional or out-of-range values for an integer input.
    """
    cast: dict[str, np.ndarray] = {}
    for i, name in enumerate(source.input_names):
        array, dtype = np.asarray(feeds[name]), source.dtype(i)
        if dtype.kind in "iu" and array.dtype.kind in "fiu" and array.size:
            known = source.input_ranges[i] if i < len(source.input_ranges) else None
            info = np.iinfo(dtype)
            low, high = known or (int(info.min), int(info.max) + 1)
            if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (np.mod(array, 1) == 0)):
                raise DataError(f"{what}: input {name!r} takes {dtype} ids, got fractional values")
            if float(array.min()) < low or float(array.max()) >= high:
                raise DataError(
                    f"{what}: input {name!r} takes {dtype} values in [{low}, {high}) (the "
                    f"vocabulary of the layer that reads it), got {array.min()}..{array.max()}"
                )
        cast[name] = array.astype(dtype, copy=False)
    return cast


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
                sample = {
                    n: calibration.inputs[n][i : i + 1].astype(source.dtype(j))
                    for j, n in enumerate(source.input_names)
                }
                # By name for several inputs: the converter's input order is not the model's
                # (a list in Keras order calibrated 'sensor_a' with 'sensor_b' data).
                yield sample if len(sample) > 1 else list(sample.values())

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


#: Converter errors that mean "this needs TensorFlow ops TFLite has no builtin for" (Flex).
_FLEX_MARKERS = ("SELECT_TF_OPS", "Select TF ops", "TensorList", "lower_tensor_list_ops",
                 "neither a custom op nor a flex op", "ops are not supported")  # fmt: skip
#: A TensorFlow op in the converter's text: ops are CamelCase (tf.BitwiseAnd); lowercase names
#: there are dtypes and attributes (tf.float32, tf.resource, tf.entry_function), not ops.
_TF_OP = re.compile(r"'?tf\.([A-Z][A-Za-z0-9_]{0,59})'?")
_RECURRENT = ("LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")


def _rolled_recurrent_layers(model: Any) -> list[str]:
    """Recurrent layers that are not unrolled (each becomes a TensorList while-loop)."""
    found: list[str] = []
    stack = list(getattr(model, "layers", []) or [])
    while stack:
        layer = stack.pop(0)
        inner = [getattr(layer, a, None) for a in ("forward_layer", "backward_layer", "layer")]
        stack.extend(x for x in inner if x is not None)
        stack.extend(getattr(layer, "layers", []) or [])
        if type(layer).__name__ in _RECURRENT and not getattr(layer, "unroll", False):
            found.append(f"{type(layer).__name__} {excerpt(str(getattr(layer, 'name', '?')), 40)}")
    return list(dict.fromkeys(found))


def _convert(conv: Any, what: str, source: SourceModel | None = None) -> bytes:
    captured = io.StringIO()
    try:
        with native_output_captured() as captured:
            return bytes(conv.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
        text = f"{exc}\n{captured.getvalue()}"
        if any(marker in text for marker in _FLEX_MARKERS):
            raise _flex_error(what, text, source) from None
        message = (str(exc).strip() or captured.getvalue().strip()).splitlines()
        odd = _odd_tensor_names(source) if source is not None else []
        raise ConversionError(
            f"TFLite conversion ({what}) failed: {excerpt((message or [type(exc).__name__])[-1], 400)}",
            hint=(
                f"the model has tensor names the converter may not take ({', '.join(odd[:4])}): "
                "rename them with letters, digits and '_' only (keras.Input(..., name=...))"
                if odd
                else None
            ),
        ) from None


#: Names TFLite signatures carry safely; ':' (TensorFlow's tensor suffix) and spaces break them.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")


def _odd_tensor_names(source: SourceModel) -> list[str]:
    return [excerpt(n, 60) for n in (*source.input_names, *source.output_names)
            if not _PLAIN_NAME.fullmatch(n)]  # fmt: skip


def _flex_error(what: str, text: str, source: SourceModel | None) -> ConversionError:
    ops = sorted(set(_TF_OP.findall(text)))[:8]
    rolled = _rolled_recurrent_layers(source.keras_model) if source is not None else []
    because = (
        f" ({', '.join(rolled[:6])}: a recurrent layer becomes a TensorList loop)" if rolled else ""
    )
    listed = f" (tf.{', tf.'.join(ops)})" if ops else ""
    return ConversionError(
        f"TFLite conversion ({what}) needs TensorFlow ops that have no TFLite builtin{listed}"
        f"{because}. The converter suggests SELECT_TF_OPS (Flex ops), but neither device runtime "
        "(ai-edge-litert, tflite-runtime) ships the Flex delegate, so that model could not run "
        "on a board",
        hint=(
            "build the recurrent layers with unroll=True and a fixed sequence length "
            "(keras.Input((steps, features)), keras.layers.LSTM(units, unroll=True)): unrolled, "
            "they convert to builtin ops"
            if rolled
            else "replace the layers that use those ops with ones TFLite has builtins for"
        ),
    )


def _format_advice(source: SourceModel) -> str:
    if source.format == "savedmodel":
        return "try packaging the model's .keras file instead of the SavedModel"
    if source.format == "h5":
        return "try saving the model as .keras (model.save('model.keras')) and packaging that"
    return "report it with the model; edge-sdk will not seal a model whose numbers changed"


def _parity(
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
    float_bytes = _convert(source.make_converter(), "float32", source)
    # Real inputs when there are any (a model fed 0-255 pixels is judged on pixels); otherwise
    # inputs made up in each input's own dtype and range, at the --input-shape or default size.
    real = calib or evald
    synthetic = None if real is not None else describe_synthetic(source)
    fixed_rows = [d[0] for d in source.input_shapes if d and d[0] is not None and d[0] > 1]
    head = fixed_rows[0] if fixed_rows else PARITY_SAMPLES  # rows a fixed first dimension takes
    feeds = real.head(head) if real is not None else synthetic_inputs(source, shapes=shapes)
    parity = _parity(source, float_bytes, feeds, synthetic)
    parity["inputs"] = real.source if real is not None else synthetic
    notes: list[str] = []
    if quantize == "none":
        model_bytes = float_bytes
    else:
        progress("calibrate" if quantize in NEEDS_CALIBRATION else "quantize")
        model_bytes = _convert(
            _converter(source, quantize, io_dtype, calib, True), quantize, source
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
        adapted = _convert(
            _converter(source, quantize, io_dtype, calib, False), f"{quantize}, per-tensor dense",
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
