"""HOST ONLY: magnitude pruning of Keras 3 models, post-training or with fine-tuning, and the
search for the highest sparsity that stays within the accuracy gate.

tensorflow-model-optimization does not support Keras 3, so this is a small implementation of the
same idea (Zhu & Gupta, "To prune, or not to prune", 2017): per layer, the smallest-magnitude
weights of each kernel are set to zero; with training data the sparsity rises along a polynomial
schedule while the model is fine-tuned, and the masks are re-applied after every batch so a pruned
weight never comes back. The result is a plain Keras model (no wrapper layers): zeros in ordinary
kernels.

Why zeros help at all: LiteRT executes the dense kernels either way, so pruning buys no speed on
a board, but a zero-heavy model compresses very well, and the bundle's payload is zstd-compressed
before encryption. (The converter's ``EXPERIMENTAL_SPARSITY`` encoding is deliberately not used:
on TF 2.21 it makes the zstd payload larger than the dense zeros do, and ai-edge-litert 2.3's
default XNNPACK delegate refuses sparse int8 and dynamic-range models — see
``tools/bench_pruning.py``.)

TensorFlow and Keras are imported inside the functions that need them, never at module level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_sdk.errors import AccuracyGateError, DataError, ModelInputError, UsageError

from .datasets import Dataset, load_dataset
from .quality_gate import accuracy_gate, class_labels
from .source_model import SourceModel, keras_source
from .tensorflow_import import import_tensorflow
from .tflite_converter import NEEDS_CALIBRATION, make_converter, run_converter

Progress = Callable[[str], None]

__all__ = [
    "AUTO",
    "LayerSparsity",
    "PruneOptions",
    "PruneReport",
    "PrunedSource",
    "auto_prune",
    "check_sparsity",
    "keras_source",
    "load_training_data",
    "magnitude_mask",
    "parse_sparsity",
    "polynomial_sparsity",
    "prunable_weights",
    "prune_for_conversion",
    "prune_model",
    "quantizing_converter",
    "sparsity_gate",
    "weight_sparsity",
]

AUTO = "auto"
#: Layer classes whose kernels are pruned (by class name; subclasses count). Biases, BatchNorm,
#: embeddings and everything else are left alone: they are small and pruning them hurts accuracy
#: far more than it saves bytes.
PRUNABLE_LAYERS: Mapping[str, tuple[str, ...]] = {
    "Dense": ("kernel",),
    "Conv2D": ("kernel",),
    "DepthwiseConv2D": ("kernel",),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel"),
}
#: The sparsities ``auto`` chooses from: 5% steps up to 95%.
AUTO_STEP = 0.05
AUTO_MAX = 0.95
DEFAULT_EPOCHS = 8
DEFAULT_BATCH_SIZE = 32
DEFAULT_LEARNING_RATE = 1e-3
#: The schedule reaches the target sparsity after this fraction of the fine-tuning steps; the rest
#: lets the surviving weights recover at the final sparsity.
RAMP_FRACTION = 0.6
#: How many times during the ramp the masks are recomputed from the weights' magnitudes.
MASK_UPDATES = 16
SCHEDULE_POWER = 3


# -- options and reports ------------------------------------------------------------------------------


def parse_sparsity(text: str) -> float | Literal["auto"]:
    """``"auto"``, ``"0.8"`` or ``"80%"`` → ``"auto"`` or a fraction in [0, 1).

    Raises:
        UsageError: anything else, or a fraction outside [0, 1).
    """
    value = text.strip().lower()
    if value == AUTO:
        return "auto"
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise UsageError(
            f"--prune takes a sparsity such as 0.8 or 80%, or 'auto'; got {text!r}"
        ) from None
    return check_sparsity(number)


def check_sparsity(sparsity: float) -> float:
    """Return ``sparsity`` as a float if it is a fraction in [0, 1).

    Raises:
        UsageError: not a number, not finite, or outside [0, 1) (1.0 would zero whole layers).
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise UsageError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    if not (math.isfinite(sparsity) and 0 <= sparsity < 1):
        raise UsageError(
            f"sparsity must be in [0, 1) (the fraction of each kernel set to zero), got {sparsity}"
        )
    return float(sparsity)


@dataclass(frozen=True)
class PruneOptions:
    """What ``edge-sdk package --prune … [--train FILE --epochs N]`` asks for.

    ``epochs=None`` means :data:`DEFAULT_EPOCHS` when ``train`` is given, else none.
    """

    sparsity: float | Literal["auto"]
    train: Path | None = None
    epochs: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, str):
            if self.sparsity != AUTO:
                raise UsageError(
                    f"sparsity must be a number in [0, 1) or 'auto', got {self.sparsity!r}"
                )
        else:
            check_sparsity(self.sparsity)
        _check_training_options(
            self.train is not None, self.epochs, self.batch_size, self.learning_rate
        )

    @property
    def fine_tune_epochs(self) -> int:
        if self.train is None:
            return 0
        return DEFAULT_EPOCHS if self.epochs is None else self.epochs


def _check_training_options(
    has_data: bool, epochs: int | None, batch_size: int, learning_rate: float
) -> None:
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int)):
        raise UsageError(f"--epochs must be an integer, got {epochs!r}")
    if epochs is not None and epochs < 0:
        raise UsageError(f"--epochs must be 0 or more, got {epochs}")
    if epochs and not has_data:
        raise UsageError(
            "--epochs needs training data to fine-tune on", hint="add --train FILE.npz (x and y)"
        )
    if has_data and epochs == 0:
        raise UsageError("--train needs at least one epoch of fine-tuning (--epochs N, N ≥ 1)")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise UsageError(f"learning rate must be a positive number, got {learning_rate}")


@dataclass(frozen=True)
class LayerSparsity:
    """How many of one kernel's weights are zero."""

    layer: str
    weight: str
    size: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "weight": self.weight,
            "size": self.size,
            "zeros": self.zeros,
            "sparsity": round(self.sparsity, 4),
        }


@dataclass(frozen=True)
class PruneReport:
    """What pruning did, for the signed manifest's ``reports["pruning"]``.

    Attributes:
        target: the sparsity asked for (or, for ``auto``, the one the search chose).
        mode: ``"fixed"`` or ``"auto"``.
        layers: per-kernel zero counts of the returned model, measured, not assumed.
        fine_tune: how the model was fine-tuned, or ``None`` for post-training pruning.
        search: for ``auto``, every sparsity tried with the gate's verdict, in the order tried.
    """

    target: float
    mode: str
    layers: tuple[LayerSparsity, ...]
    fine_tune: Mapping[str, Any] | None = None
    search: tuple[Mapping[str, Any], ...] = ()

    @property
    def prunable_weights(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """Zeros over all prunable kernels (large layers weigh more, as they do in bytes)."""
        return self.zeros / self.prunable_weights if self.prunable_weights else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "magnitude",
            "mode": self.mode,
            "target_sparsity": round(self.target, 4),
            "sparsity": round(self.sparsity, 4),
            "zeros": self.zeros,
            "prunable_weights": self.prunable_weights,
            "fine_tune": dict(self.fine_tune) if self.fine_tune is not None else None,
            "layers": [layer.to_dict() for layer in self.layers],
            "search": [dict(step) for step in self.search],
        }


# -- which weights, and how sparse they are -------------------------------------------------------


def _walk(layers: Sequence[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for layer in layers:
        name = f"{prefix}{layer.name}"
        inner = getattr(layer, "layers", None)
        if inner:  # a nested Model / Sequential: prune what is inside it
            yield from _walk(inner, f"{name}/")
        else:
            yield name, layer


def prunable_weights(model: Any) -> list[tuple[str, str, Any]]:
    """The kernels pruning touches, as ``(layer path, attribute, variable)``, in layer order.

    Raises:
        ModelInputError: a prunable layer holds an already-quantized (non-float) kernel.
    """
    found = []
    for name, layer in _walk(model.layers):
        classes = {cls.__name__ for cls in type(layer).__mro__}
        for cls_name, attributes in PRUNABLE_LAYERS.items():
            if cls_name not in classes:
                continue
            for attribute in attributes:
                variable = getattr(layer, attribute, None)
                if variable is None:
                    continue
                if "float" not in str(variable.dtype):
                    raise ModelInputError(
                        f"layer {name} holds a {variable.dtype} {attribute}: it is already "
                        "quantized in Keras and cannot be pruned",
                        hint="prune the float model; edge-sdk quantizes during conversion",
                    )
                found.append((name, attribute, variable))
            break
    return found


def weight_sparsity(model: Any) -> tuple[LayerSparsity, ...]:
    """Measure the zeros in every prunable kernel of ``model``."""
    return tuple(
        LayerSparsity(name, attribute, int(np.size(v)), int(np.size(v) - _nonzero(v)))
        for name, attribute, v in prunable_weights(model)
    )


def _nonzero(variable: Any) -> int:
    return int(np.count_nonzero(np.asarray(variable)))


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 mask that zeroes exactly ``round(sparsity * size)`` of the smallest-magnitude weights.

    Ties are broken by position (a stable sort), so the count is exact even for a kernel full of
    equal values, and the same weights give the same mask.
    """
    count = round(sparsity * weights.size)
    mask = np.ones(weights.size, dtype=weights.dtype)
    if count:
        order = np.argsort(np.abs(weights).ravel(), kind="stable")
        mask[order[:count]] = 0
    return mask.reshape(weights.shape)


def polynomial_sparsity(
    step: int, final: float, *, end_step: int, initial: float = 0.0, power: int = SCHEDULE_POWER
) -> float:
    """Sparsity at ``step`` of the gradual schedule: fast at first, flattening out at ``final``.

    ``s(t) = final + (initial - final) * (1 - t / end_step) ** power``, held at ``final`` after
    ``end_step`` (the polynomial decay schedule of Zhu & Gupta).
    """
    if end_step <= 0 or step >= end_step:
        return final
    progress = max(step, 0) / end_step
    return final + (initial - final) * (1 - progress) ** power


# -- pruning ------------------------------------------------------------------------------------------


def _clone(model: Any) -> Any:
    import_tensorflow()
    import keras

    try:
        clone = keras.models.clone_model(model)
    except Exception as exc:  # noqa: BLE001 - Keras raises anything for a model it cannot clone
        raise ModelInputError(
            f"cannot copy the model to prune it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "subclassed models need get_config/from_config"
        ) from None
    clone.set_weights(model.get_weights())
    return clone


def _apply_masks(weights: Sequence[tuple[str, str, Any]], masks: Sequence[np.ndarray]) -> None:
    for (_, _, variable), mask in zip(weights, masks, strict=True):
        variable.assign(np.asarray(variable) * mask)


def _masks_at(weights: Sequence[tuple[str, str, Any]], sparsity: float) -> list[np.ndarray]:
    return [magnitude_mask(np.asarray(v), sparsity) for _, _, v in weights]


def prune_model(
    model: Any,
    sparsity: float,
    *,
    train: Dataset | None = None,
    epochs: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    progress: Progress = lambda _step: None,
) -> tuple[Any, PruneReport]:
    """Prune every Dense / Conv2D / DepthwiseConv2D / SeparableConv2D kernel to ``sparsity``.

    Without ``train`` the smallest-magnitude weights of each kernel are zeroed at once. With it,
    the model is fine-tuned for ``epochs`` (default :data:`DEFAULT_EPOCHS`) while the sparsity
    rises along :func:`polynomial_sparsity`; the masks are re-applied after every batch. Either
    way each kernel ends with exactly ``round(sparsity * size)`` zeros (more if it already had
    them). The input model is not modified; fine-tuning seeds Keras' global random state with
    ``seed`` so a build is repeatable.

    Args:
        model: a Keras 3 model (functional or Sequential; subclassed ones need get_config).
        sparsity: the fraction of each kernel to zero, in [0, 1).
        train: inputs by name and labels (integer classes, one-hot, or regression targets).

    Returns:
        The pruned model (a plain Keras model of the same architecture) and its report.

    Raises:
        UsageError: sparsity outside [0, 1), or inconsistent training options.
        DataError: training data without labels, or labels that do not fit the model's output.
        ModelInputError: nothing in the model can be pruned, or it cannot be copied.
    """
    sparsity = check_sparsity(sparsity)
    _check_training_options(train is not None, epochs, batch_size, learning_rate)
    if not prunable_weights(model):
        raise ModelInputError(
            "the model has no Dense, Conv2D, DepthwiseConv2D or SeparableConv2D kernels to prune"
        )
    pruned = _clone(model)
    weights = prunable_weights(pruned)
    fine_tune: dict[str, Any] | None = None
    if train is not None:
        n_epochs = DEFAULT_EPOCHS if epochs is None else epochs
        fine_tune = _fine_tune(
            pruned, weights, sparsity, train, n_epochs, batch_size, learning_rate, seed, progress
        )
    # Post-training, and once more after fine-tuning: the final masks come from the final weights,
    # so the count of zeros is exact whatever the optimizer did in the last batch.
    _apply_masks(weights, _masks_at(weights, sparsity))
    return pruned, PruneReport(sparsity, "fixed", weight_sparsity(pruned), fine_tune)


def load_training_data(path: Path, model: Any) -> Dataset:
    """Load ``--train`` data (.npz with ``x`` and ``y``, or one array per input and ``y``).

    Raises:
        DataError: unreadable, shaped unlike the model's inputs, or without labels.
    """
    data = load_dataset(
        path, [t.name for t in model.inputs], [tuple(t.shape) for t in model.inputs]
    )
    if data.labels is None:
        raise DataError(
            f"{path}: training data needs labels (an array named 'y') to fine-tune on",
            hint="save it with numpy.savez(path, x=inputs, y=labels)",
        )
    return data


def _training_setup(model: Any, train: Dataset) -> tuple[list[np.ndarray], np.ndarray, Any]:
    """Inputs in model order, labels, and the loss that fits them."""
    import keras

    names = [t.name for t in model.inputs]
    missing = [n for n in names if n not in train.inputs]
    if missing:
        raise DataError(
            f"{train.source}: training data has no array for input(s) {missing}; "
            f"it has {sorted(train.inputs)}"
        )
    if train.labels is None:
        raise DataError(
            f"{train.source}: training data needs labels (an array named 'y') to fine-tune on"
        )
    if len(model.outputs) != 1:
        raise DataError(
            f"fine-tuning needs a model with one output; this one has {len(model.outputs)}",
            hint="prune without --train (post-training), or use --prune auto with --eval data",
        )
    xs = [np.asarray(train.inputs[n], dtype=np.float32) for n in names]
    labels = np.asarray(train.labels)
    if any(len(x) != len(labels) for x in xs):
        raise DataError(
            f"{train.source}: {len(labels)} labels for {sorted({len(x) for x in xs})} samples"
        )
    sample = np.asarray(model([x[:64] for x in xs] if len(xs) > 1 else xs[0][:64], training=False))
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{train.source}: labels must be numeric, got {labels.dtype}")
    probabilities = bool(
        sample.ndim == 2
        and np.all(sample >= 0)
        and np.all(sample <= 1)
        and np.allclose(sample.sum(axis=1), 1, atol=1e-3)
    )
    # Judged against the output's shape for every label (the sample holds only 64 rows).
    shape_only = np.broadcast_to(
        np.zeros((1, *sample.shape[1:]), sample.dtype), (len(labels), *sample.shape[1:])
    )
    classes, _ = class_labels(shape_only, labels, str(train.source))
    if classes is not None and sample.ndim == 2 and sample.shape[1] > 1:
        return (
            xs,
            classes,
            keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities),
        )
    if labels.shape[1:] != sample.shape[1:]:
        raise DataError(
            f"{train.source}: labels of shape {list(labels.shape)} do not fit the model's output "
            f"shape {[-1, *sample.shape[1:]]} (use integer class ids, one-hot rows or targets)"
        )
    labels = labels.astype(np.float32)
    one_hot = labels.ndim == 2 and bool(np.all((labels == 0) | (labels == 1)))
    if one_hot and labels.shape[1] > 1 and np.all(labels.sum(axis=1) == 1):
        return xs, labels, keras.losses.CategoricalCrossentropy(from_logits=not probabilities)
    return xs, labels, keras.losses.MeanSquaredError()


def _fine_tune(
    model: Any,
    weights: Sequence[tuple[str, str, Any]],
    sparsity: float,
    train: Dataset,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    progress: Progress,
) -> dict[str, Any]:
    import_tensorflow()
    import keras

    xs, labels, loss = _training_setup(model, train)
    keras.utils.set_random_seed(seed)
    steps = epochs * math.ceil(len(labels) / batch_size)
    end_step = max(1, int(steps * RAMP_FRACTION))
    every = max(1, end_step // MASK_UPDATES)
    initial = [np.ones(np.shape(v), dtype=np.float32) for _, _, v in weights]

    class ApplyMasks(keras.callbacks.Callback):  # type: ignore[misc]  # keras is untyped
        """Raise the sparsity along the schedule; keep pruned weights at zero after each batch."""

        def __init__(self) -> None:
            super().__init__()
            self.step = 0
            self.masks = initial
            self.tensors = [keras.ops.convert_to_tensor(m) for m in initial]

        def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
            self.step += 1
            if self.step % every == 0 and self.step <= end_step + every:
                target = polynomial_sparsity(self.step, sparsity, end_step=end_step)
                self.masks = _masks_at(weights, target)
                self.tensors = [keras.ops.convert_to_tensor(m) for m in self.masks]
            for (_, _, variable), mask in zip(weights, self.tensors, strict=True):
                variable.assign(keras.ops.multiply(variable, mask))

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            loss_value = (logs or {}).get("loss")
            shown = f", loss {loss_value:.4f}" if loss_value is not None else ""
            progress(f"fine-tune epoch {epoch + 1}/{epochs}{shown}")

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    callback = ApplyMasks()
    model.fit(
        xs if len(xs) > 1 else xs[0],
        labels,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[callback],
    )
    # Measured before the final re-mask in prune_model: shows the callback kept the masks on.
    trained = weight_sparsity(model)
    zeros, size = sum(t.zeros for t in trained), sum(t.size for t in trained)
    return {
        "data": train.source,
        "samples": len(labels),
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "optimizer": "adam",
        "loss": type(loss).__name__,
        "schedule": {
            "kind": "polynomial",
            "power": SCHEDULE_POWER,
            "end_step": end_step,
            "steps": callback.step,
            "mask_update_every": every,
        },
        "seed": seed,
        "sparsity_after_training": round(zeros / size, 4) if size else 0.0,
    }


# -- auto: the highest sparsity within the accuracy gate --------------------------------------------


Gate = Callable[[Any], Mapping[str, Any]]


def auto_prune(
    model: Any,
    gate: Gate,
    *,
    step: float = AUTO_STEP,
    maximum: float = AUTO_MAX,
    train: Dataset | None = None,
    epochs: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    seed: int = 0,
    progress: Progress = lambda _step: None,
) -> tuple[Any, PruneReport]:
    """The highest sparsity on the grid ``step, 2·step, … ≤ maximum`` whose model passes ``gate``.

    A binary search: accuracy falls (close to) monotonically with sparsity, so ~log2(grid)
    candidates are pruned (and fine-tuned, with ``train``), each from the original weights.
    Whenever the answer is below ``maximum``, the next grid step up was tried and failed; the
    report's ``search`` lists every verdict. If even the lowest step fails, the model comes back
    unpruned (sparsity 0) and the usual quantization gate decides the rest.

    Args:
        gate: candidate Keras model → an :func:`edge_sdk.host.convert.accuracy_gate` report (the
            ``passed`` key decides); see :func:`sparsity_gate`.

    Raises:
        UsageError: a step or maximum outside (0, 1).
        plus whatever :func:`prune_model` raises.
    """
    if not (0 < step < 1 and 0 < maximum < 1):
        raise UsageError(f"auto pruning needs 0 < step, maximum < 1 (got {step}, {maximum})")
    grid = [round(step * i, 6) for i in range(1, int(maximum / step + 1e-9) + 1)]
    found: tuple[Any, PruneReport] | None = None
    search: list[dict[str, Any]] = []
    low, high = -1, len(grid)  # grid[low] passed (-1: unpruned), grid[high] failed (len: none)
    while high - low > 1:
        middle = (low + high) // 2
        sparsity = grid[middle]
        progress(f"auto: try sparsity {sparsity:.0%}")
        candidate, report = prune_model(
            model,
            sparsity,
            train=train,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            progress=progress,
        )
        verdict = dict(gate(candidate))
        search.append({"sparsity": sparsity, **_verdict_summary(verdict)})
        if verdict.get("passed"):
            low, found = middle, (candidate, report)
        else:
            high = middle
    if found is None:
        unpruned = _clone(model)
        return unpruned, PruneReport(0.0, "auto", weight_sparsity(unpruned), None, tuple(search))
    chosen, report = found
    return chosen, PruneReport(
        report.target, "auto", report.layers, report.fine_tune, tuple(search)
    )


def _verdict_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The gate's verdict and measurements, without what every step shares (data, budgets)."""
    return {
        k: v
        for k, v in report.items()
        if k not in ("data", "samples") and not k.startswith("budget")
    }


# -- the packaging pipeline's side ------------------------------------------------------------------


def quantizing_converter(
    quantize: str, io_dtype: str = "float32", calibration: Dataset | None = None
) -> Callable[[Any], bytes]:
    """Keras model → .tflite bytes, quantized as ``convert_model`` quantizes (per-channel dense).

    Raises:
        DataError: int8 / int16x8 without calibration data.
        ConversionError: the converter failed.
    """
    if quantize in NEEDS_CALIBRATION and calibration is None:
        raise DataError(f"--quantize {quantize} needs calibration data (--calibration FILE)")

    def convert(model: Any) -> bytes:
        source = keras_source(model)
        if quantize == "none":
            return run_converter(source.make_converter(), "float32")
        return run_converter(
            make_converter(source, quantize, io_dtype, calibration, True), quantize
        )

    return convert


def sparsity_gate(
    reference: bytes,
    data: Dataset,
    convert: Callable[[Any], bytes],
    *,
    max_accuracy_drop: float,
    max_output_error: float,
) -> Gate:
    """A gate for :func:`auto_prune`: convert a candidate, compare it with the *unpruned* float
    model ``reference`` by :func:`edge_sdk.host.convert.accuracy_gate` — so the budget covers pruning
    and quantization together, as packaging's gate does."""

    def gate(candidate: Any) -> Mapping[str, Any]:
        return accuracy_gate(
            reference,
            convert(candidate),
            data,
            max_accuracy_drop=max_accuracy_drop,
            max_output_error=max_output_error,
        )

    return gate


@dataclass(frozen=True)
class PrunedSource:
    """The pruned model, ready for ``convert_model`` to carry on with.

    Attributes:
        source: converter and reference predictions of the *pruned* model.
        model: the pruned Keras model.
        report: ``reports["pruning"]`` for the manifest (``report.to_dict()``).
        reference_float: the *unpruned* model as float .tflite: the accuracy gate must compare
            the final model with this, not with the pruned float model, or pruning's loss
            would go unchecked.
    """

    source: SourceModel
    model: Any = field(repr=False)
    report: PruneReport
    reference_float: bytes = field(repr=False)


def prune_for_conversion(
    model: Any,
    options: PruneOptions,
    *,
    fmt: str = "keras",
    quantize: str,
    io_dtype: str = "float32",
    calibration: Dataset | None = None,
    evaluation: Dataset | None = None,
    max_accuracy_drop: float,
    max_output_error: float,
    progress: Progress = lambda _step: None,
) -> PrunedSource:
    """The packaging pipeline's pruning step, called right after ``load_source_model``.

    A fixed sparsity prunes (and fine-tunes, with ``options.train``); ``auto`` searches for the
    highest sparsity whose model, quantized with ``quantize``, stays within the budget against
    the unpruned float model on ``evaluation`` (else ``calibration``, else the training data).

    Raises:
        UsageError, DataError, ModelInputError: see :func:`prune_model`.
        AccuracyGateError: ``auto`` with nothing to evaluate on.
        ConversionError: a candidate would not convert.
    """
    train = load_training_data(options.train, model) if options.train is not None else None
    epochs = options.fine_tune_epochs if train is not None else None
    progress("prune")
    reference = run_converter(keras_source(model, fmt).make_converter(), "float32")
    if isinstance(options.sparsity, str):  # "auto", checked by PruneOptions
        data = evaluation or calibration or train
        if data is None:
            raise AccuracyGateError(
                "--prune auto needs data to judge accuracy by",
                hint="give --eval (inputs and labels), --calibration or --train",
            )
        gate = sparsity_gate(
            reference,
            data,
            quantizing_converter(quantize, io_dtype, calibration),
            max_accuracy_drop=max_accuracy_drop,
            max_output_error=max_output_error,
        )
        pruned, report = auto_prune(
            model,
            gate,
            train=train,
            epochs=epochs,
            batch_size=options.batch_size,
            learning_rate=options.learning_rate,
            seed=options.seed,
            progress=progress,
        )
    else:
        pruned, report = prune_model(
            model,
            options.sparsity,
            train=train,
            epochs=epochs,
            batch_size=options.batch_size,
            learning_rate=options.learning_rate,
            seed=options.seed,
            progress=progress,
        )
    return PrunedSource(keras_source(pruned, fmt), pruned, report, reference)
