"""HOST ONLY: calibration and evaluation data, and synthetic inputs when there is none.

TensorFlow is imported inside the functions that need it (extra ``host``), never at module level.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edge_sdk.errors import (
    DataError,
    UsageError,
    excerpt,
    unreadable_file,
)
from edge_sdk.files import open_regular

from .source_model import SourceModel, default_range
from .tensorflow_import import import_tensorflow

PARITY_SAMPLES = 16
#: Synthetic parity inputs for dimensions the model leaves open (documented in the README):
#: height and width of an image input (rank 4), and any other open dimension.
DEFAULT_IMAGE_SIZE = 224
DEFAULT_DIMENSION = 32
MAX_CALIBRATION_SAMPLES = 500
#: What a data path may name, for the refusal of anything else (a FIFO, /dev/zero, a socket).
DATA_HINT = "give a .npy or .npz file (or, for --calibration, a directory of images)"


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
        handle = open_regular(path)  # a FIFO or /dev/zero is refused, not waited on or read
    except OSError as exc:
        raise unreadable_file(DataError, "data file", path, exc, hint=DATA_HINT) from None
    with handle:  # a .npz's members are read lazily from it, below
        return _load_arrays(handle, path, input_names, input_shapes, output_names)


def _load_arrays(
    handle: BinaryIO,
    path: Path,
    input_names: Sequence[str],
    input_shapes: Sequence[Sequence[int | None]],
    output_names: Sequence[str],
) -> Dataset:
    try:
        loaded = np.load(handle, allow_pickle=False)
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
            with open_regular(file) as handle:
                data = handle.read()
        except OSError as exc:
            raise unreadable_file(DataError, "image", file, exc, hint=DATA_HINT) from None
        try:
            image = tf.io.decode_image(data, channels=channels or 3, expand_animations=False)
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
    return known or default_range(source.dtype(index), None) or (0, 2)


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
