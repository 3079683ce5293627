"""HOST ONLY: the source model: which format a file is, loading it (Keras, SavedModel), its inputs.

TensorFlow is imported inside the functions that need it (extra ``host``), never at module level.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import weakref
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from edge_sdk.errors import (
    ModelInputError,
    UsageError,
    excerpt,
    unreadable_file,
)
from edge_sdk.files import open_regular

from .tensorflow_import import import_tensorflow, native_output_captured

#: What a model path may name, for the refusal of anything else (a FIFO, /dev/zero, a socket).
MODEL_HINT = "give the model file (.keras, .h5, .tflite, .litertlm) or a SavedModel directory"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_PICKLE_STARTS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth")


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
        # A FIFO or /dev/zero is refused here, not waited on or read forever.
        with open_regular(path) as handle:
            head = handle.read(16)
            names = _zip_names(handle, path, expected) if head.startswith(b"PK\x03\x04") else None
    except OSError as exc:
        raise unreadable_file(ModelInputError, "model file", path, exc, hint=MODEL_HINT) from None
    if head[:2] in _PICKLE_STARTS or path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelInputError(
            f"{path} is a pickle; refusing to load it because unpickling executes arbitrary code",
            hint="save the model with model.save('model.keras') and package that",
        )
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(_HDF5_MAGIC):
        return "h5"
    if names is not None:
        if "config.json" in names:
            return "keras"
        raise ModelInputError(f"{path} is a zip file but not a Keras 3 .keras archive; {expected}")
    if not head:
        raise ModelInputError(f"{path} is empty; {expected}")
    raise ModelInputError(f"{path} is not a recognised model format; {expected}")


def _zip_names(handle: BinaryIO, path: Path, expected: str) -> set[str]:
    try:
        with zipfile.ZipFile(handle) as archive:
            return set(archive.namelist())
    except zipfile.BadZipFile:
        raise ModelInputError(f"{path} is a corrupt or truncated zip file; {expected}") from None


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
        input_names, input_shapes, output_names, dtypes, fn = _saved_model_signature(tf, path)

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
            input_ranges=tuple(default_range(np.dtype(d), None) for d in dtypes),
        )
    raise ModelInputError(f"{path}: format {fmt!r} cannot be converted (it is already TFLite?)")


def input_dtype(name: str, dtype: Any) -> np.dtype[Any]:
    """The numpy dtype of a source model's input (a Keras dtype name or a ``tf.DType``).

    Raises:
        ModelInputError: an input of a type the device side cannot feed (strings, bfloat16,
            complex, resource handles): predict, the parity check and the runtimes take numbers
            and booleans.
    """
    text = str(getattr(dtype, "name", dtype))
    try:
        result: np.dtype[Any] | None = np.dtype(text)
    except TypeError:  # 'string', 'bfloat16', 'resource' …: no numpy dtype of that name
        result = None
    if result is not None and result.kind in "biuf":
        return result
    if text in ("string", "str", "object"):
        raise ModelInputError(
            f"the model's input {excerpt(name)} takes strings; edge-sdk packages models whose "
            "inputs are numbers or booleans, and the device runtimes run no string ops",
            hint="keep the text preprocessing (TextVectorization, StringLookup, Hashing) in your "
            "application and package the model from the layer after it, taking int32 token ids "
            "(keras.Input((length,), dtype='int32'))",
        )
    raise ModelInputError(
        f"the model's input {excerpt(name)} takes {excerpt(text, 40)} values; edge-sdk packages "
        "models whose inputs are numbers (float16/32/64, integers) or booleans",
        hint="take float32 (or an integer type) at the input and cast inside the model "
        "(keras.ops.cast)",
    )


_REEXPORT = (
    "re-export it with one serving signature of fixed-rank tensors: from Keras 3, "
    "model.export('dir'); from tf_keras (Keras 2), tf.saved_model.save(model, 'dir') after "
    "loading it there; or save the Keras model as .keras (or .h5) and package that"
)


def _saved_model_signature(
    tf: Any, path: Path
) -> tuple[
    tuple[str, ...], tuple[tuple[int | None, ...], ...], tuple[str, ...], tuple[str, ...], Any
]:
    """Input names, shapes, output names, input dtypes and the function of a SavedModel's
    ``serving_default`` signature.

    Raises:
        ModelInputError: TensorFlow cannot load it (truncated, missing variables, objects this
            TensorFlow or Keras cannot revive, as Keras 2 exports can be), it has no serving
            signature, or an input of unknown rank or a non-numeric type.
    """
    try:
        with native_output_captured():
            loaded = tf.saved_model.load(str(path))
        fn = loaded.signatures["serving_default"]
        _, kwargs = fn.structured_input_signature
        outputs = fn.structured_outputs
    except KeyError:
        raise ModelInputError(
            f"cannot load SavedModel {path}: it has no 'serving_default' signature",
            hint=_REEXPORT,
        ) from None
    except Exception as exc:  # noqa: BLE001 - TF's loader raises OSError, OpError, AttributeError …
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelInputError(
            f"cannot load SavedModel {path}: {type(exc).__name__}: {excerpt(first, 300)}",
            hint=_REEXPORT,
        ) from None
    input_names = tuple(sorted(kwargs))
    shapes = []
    for name in input_names:
        shape = getattr(kwargs[name], "shape", None)
        if shape is None or shape.rank is None:
            raise ModelInputError(
                f"SavedModel {path}: input {excerpt(name)} has no fixed rank (shape unknown), so "
                "no conversion or parity input can be built for it",
                hint=_REEXPORT,
            )
        shapes.append(tuple(shape.as_list()))
    dtypes = tuple(input_dtype(n, kwargs[n].dtype).name for n in input_names)
    output_names = tuple(sorted(outputs)) if isinstance(outputs, Mapping) else ("output_0",)
    return input_names, tuple(shapes), output_names, dtypes, fn


def default_range(dtype: np.dtype[Any], vocabulary: int | None) -> tuple[int, int] | None:
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
    input_dtypes = tuple(
        input_dtype(name, getattr(t, "dtype", "float32")).name
        for name, t in zip(input_names, model.inputs, strict=True)
    )
    output_names = _keras_output_names(model)

    # A model built for one sample per call (keras.Input(..., batch_size=1)) is run sample by
    # sample, as the device runtime runs it: its graph may hard-code that one sample.
    one_at_a_time = any(shape and shape[0] == 1 for shape in input_shapes)
    # Only a first dimension that is a batch (open, or one sample) may be split into samples.
    batched = all(shape and shape[0] in (None, -1, 1) for shape in input_shapes)

    # A model whose inputs are a dict (keras-hub backbones) is called with a dict: Keras refuses
    # a list for it. Keys may differ from the tensors' names, so map through the tensors.
    structure = getattr(model, "input", None)
    keyed = (
        {key: input_names.index(t.name) for key, t in structure.items()}
        if isinstance(structure, Mapping)
        and all(getattr(t, "name", None) in input_names for t in structure.values())
        else None
    )

    def run_once(args: list[np.ndarray]) -> list[np.ndarray]:
        if keyed is not None:
            result = model({key: args[i] for key, i in keyed.items()}, training=False)
        else:
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
            default_range(
                np.dtype(d), _input_vocabulary(model, t) if np.dtype(d).kind in "iu" else None
            )
            for d, t in zip(input_dtypes, model.inputs, strict=True)
        ),
    )


def exported_source(source: SourceModel) -> SourceModel | None:
    """The same Keras model, converted through a SavedModel it exports, or None where there is
    no Keras model to export or it cannot be exported.

    TFLite's Keras path fails on some models that its SavedModel path converts (keras-hub
    backbones: "'NoneType' object is not callable"), so a failed Keras conversion is retried
    this way. The reference predictions stay the Keras model's own, so parity still judges the
    result against Keras. The export lives in a private temporary directory (the source model,
    never a decrypted one) removed when the returned source is garbage-collected or at exit.
    """
    model = source.keras_model
    export = getattr(model, "export", None)
    if model is None or export is None:
        return None
    tf = import_tensorflow()
    directory = tempfile.mkdtemp(prefix="edge-sdk-export-")
    try:
        with native_output_captured():
            export(os.path.join(directory, "saved_model"), format="tf_saved_model", verbose=False)
    except Exception:  # noqa: BLE001 - Keras' exporter raises many types; the caller's error stands
        shutil.rmtree(directory, ignore_errors=True)
        return None
    saved = os.path.join(directory, "saved_model")
    routed = replace(source, make_converter=lambda: tf.lite.TFLiteConverter.from_saved_model(saved))
    weakref.finalize(routed, shutil.rmtree, directory, True)
    return routed


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
