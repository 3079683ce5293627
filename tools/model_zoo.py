"""A corpus of Keras models shaped like the ones people publish, built in code (nothing downloads).

Each :class:`ZooCase` is one kind of model edge-sdk must either run right or refuse clearly: a
fixed-batch CNN, a token-id sequence model, a backbone with open height and width, a model with
several inputs and outputs, a custom layer class, an unrolled LSTM, detection-style heads (fixed
batch, and a "dynamic" batch that a hard-coded reshape folds), inputs of several dtypes, and a
fully convolutional model whose output size follows its input, and a stateful streaming model (a
wake-word detector that keeps its recurrent state between runs). The tests (``tests/test_model_zoo.py``)
and the device fixtures (``tools/make_device_fixtures.py``) both use it, so the corpus runs on
ai-edge-litert in the main suite and on tflite-runtime 2.14 (and aarch64) in the portability stage.

Weights are random (seeded): the corpus checks that numbers survive conversion and the runtime,
not what a model has learned.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def _scale_shift_class() -> Any:
    keras = _keras()

    class ScaleShift(keras.layers.Layer):  # type: ignore[misc, name-defined]
        """A custom layer, deliberately *not* registered: loading needs --custom-objects."""

        def build(self, input_shape: Any) -> None:
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="random_normal")
            self.shift = self.add_weight(shape=(input_shape[-1],), initializer="random_normal")

        def call(self, x: Any) -> Any:
            return x * (1.0 + self.scale) + self.shift

    ScaleShift.__module__ = __name__
    ScaleShift.__qualname__ = "ScaleShift"
    return ScaleShift


_SCALE_SHIFT: Any = None


def __getattr__(name: str) -> Any:
    # ``tools.model_zoo:ScaleShift`` for --custom-objects, without importing Keras at import time.
    global _SCALE_SHIFT  # noqa: PLW0603 - one class object per process, made on first use
    if name == "ScaleShift":
        if _SCALE_SHIFT is None:
            _SCALE_SHIFT = _scale_shift_class()
        return _SCALE_SHIFT
    raise AttributeError(name)


@dataclass(frozen=True)
class ZooCase:
    """One corpus model: how to build it, what inputs it takes, how to package it."""

    key: str
    build: Callable[[], Any] = field(repr=False)
    #: One sample per input (numpy, without the batch axis), given a generator.
    sample: Callable[[np.random.Generator], dict[str, np.ndarray]] = field(repr=False)
    #: package options beyond the defaults (quantize, input_shapes, custom_objects …).
    options: dict[str, Any] = field(default_factory=dict)
    #: Whether the model declares batch 1 (it is run sample by sample).
    fixed_batch: bool = False
    #: Whether the model keeps state between runs: samples are consecutive steps of one stream,
    #: so each output depends on every sample before it (compare whole streams, in order).
    stateful: bool = False
    note: str = ""

    def inputs(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """``n`` samples per input (``n`` may be 0)."""
        rng = np.random.default_rng(seed)
        samples = [self.sample(rng) for _ in range(max(n, 1))]
        return {name: np.stack([s[name] for s in samples])[:n] for name in samples[0]}


def _uniform(shape: tuple[int, ...]) -> Callable[[np.random.Generator], np.ndarray]:
    return lambda rng: rng.random(shape).astype(np.float32)


def fixed_batch_cnn() -> Any:
    keras = _keras()
    keras.utils.set_random_seed(11)
    x = keras.Input((32, 32, 3), batch_size=1, name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(8, 3, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(x, keras.layers.Dense(5, activation="softmax", name="probs")(h))


VOCABULARY = 50


def token_gru() -> Any:
    keras = _keras()
    keras.utils.set_random_seed(12)
    tokens = keras.Input((16,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCABULARY, 8)(tokens)
    h = keras.layers.GRU(12, unroll=True)(h)
    return keras.Model(tokens, keras.layers.Dense(4, activation="softmax", name="intent")(h))


def mobilenet_backbone() -> Any:
    keras = _keras()
    keras.utils.set_random_seed(13)
    image = keras.Input((None, None, 3), name="image")
    return keras.applications.MobileNetV2(
        input_tensor=image, include_top=False, pooling="avg", weights=None, alpha=0.35
    )


def valid_fcn() -> Any:
    """Fully convolutional, 'valid' padding: output size follows the input; tiny inputs fail."""
    keras = _keras()
    keras.utils.set_random_seed(14)
    x = keras.Input((None, None, 3), name="image")
    h = keras.layers.Conv2D(8, 5, activation="relu")(x)
    h = keras.layers.MaxPooling2D()(h)
    return keras.Model(x, keras.layers.Conv2D(2, 3, name="mask")(h))


def multi_io() -> Any:
    keras = _keras()
    keras.utils.set_random_seed(1)
    a = keras.Input((6,), name="sensor_a")
    b = keras.Input((4,), name="sensor_b")
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([a, b]))
    cls = keras.layers.Dense(3, activation="softmax", name="label")(h)
    reg = keras.layers.Dense(1, name="score")(h)
    return keras.Model([a, b], [cls, reg])


def custom_layer() -> Any:
    keras = _keras()
    keras.utils.set_random_seed(15)
    x = keras.Input((8,), name="features")
    h = __getattr__("ScaleShift")(name="scale_shift")(keras.layers.Dense(8)(x))
    return keras.Model(x, keras.layers.Dense(2, name="out")(h))


def unrolled_lstm() -> Any:
    keras = _keras()
    keras.utils.set_random_seed(16)
    x = keras.Input((12, 4), name="series")
    h = keras.layers.LSTM(16, unroll=True)(x)
    return keras.Model(x, keras.layers.Dense(3, name="forecast")(h))


def rolled_lstm() -> Any:
    """The same LSTM left rolled: converts only with Flex ops, which no device runtime has."""
    keras = _keras()
    keras.utils.set_random_seed(16)
    x = keras.Input((12, 4), name="series")
    h = keras.layers.LSTM(16)(x)
    return keras.Model(x, keras.layers.Dense(3, name="forecast")(h))


def detector() -> Any:
    """BlazeFace-like: batch fixed at 1, anchor boxes reshaped to [1, -1, 16] (the reshape
    hard-codes one sample), anchor scores, and a heatmap resized back to the input size."""
    keras = _keras()
    keras.utils.set_random_seed(17)
    x = keras.Input((32, 32, 3), batch_size=1, name="image")
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    boxes = keras.ops.reshape(keras.layers.Conv2D(16, 1)(h), (1, -1, 16))
    scores = keras.ops.reshape(keras.layers.Conv2D(1, 1)(h), (1, -1, 1))
    heat = keras.layers.Resizing(32, 32, interpolation="bilinear")(keras.layers.Conv2D(1, 1)(h))
    return keras.Model(
        x,
        [
            keras.layers.Identity(name="boxes")(boxes),
            keras.layers.Activation("sigmoid", name="scores")(scores),
            keras.layers.Activation("sigmoid", name="heatmap")(heat),
        ],
    )


def folding_head() -> Any:
    """Declares a dynamic batch but reshapes to [1, -1, 8]: batched runs fold samples together,
    so the runtime must notice and run it sample by sample."""
    keras = _keras()
    keras.utils.set_random_seed(18)
    x = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same")(x)
    return keras.Model(x, keras.layers.Identity(name="anchors")(keras.ops.reshape(h, (1, -1, 8))))


WAKE_FRAMES, WAKE_FEATURES = 3, 10


def streaming_wake_word() -> Any:
    """microWakeWord-like: one chunk of feature frames per run, batch fixed at 1, and a stateful
    GRU that carries its state from chunk to chunk (resource variables in the .tflite)."""
    keras = _keras()
    keras.utils.set_random_seed(21)
    x = keras.Input((WAKE_FRAMES, WAKE_FEATURES), batch_size=1, name="features")
    h = keras.layers.GRU(8, stateful=True, unroll=True)(x)
    return keras.Model(x, keras.layers.Dense(1, activation="sigmoid", name="wake")(h))


def reset_states(model: Any) -> None:
    """Put a Keras model's stateful layers back to their initial state."""
    stack = list(getattr(model, "layers", []) or [])
    while stack:
        layer = stack.pop()
        stack.extend(getattr(layer, "layers", []) or [])
        if getattr(layer, "stateful", False) and hasattr(layer, "reset_state"):
            layer.reset_state()


def mixed_dtypes() -> Any:
    """uint8 pixels, int32 ids and a bool flag in one model."""
    keras = _keras()
    keras.utils.set_random_seed(19)
    pixels = keras.Input((8, 8, 1), dtype="uint8", name="pixels")
    ids = keras.Input((4,), dtype="int32", name="ids")
    flag = keras.Input((1,), dtype="bool", name="flag")
    p = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(pixels))
    e = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(ids))
    f = keras.ops.cast(flag, "float32")
    h = keras.layers.Concatenate()([p, e, f])
    return keras.Model([pixels, ids, flag], keras.layers.Dense(3, name="out")(h))


CASES: tuple[ZooCase, ...] = (
    ZooCase("fixed-batch-cnn", fixed_batch_cnn, lambda r: {"image": r.random((32, 32, 3), np.float32)},
            fixed_batch=True),
    ZooCase("token-gru", token_gru,
            lambda r: {"tokens": r.integers(0, VOCABULARY, 16).astype(np.int32)},
            {"quantize": "dynamic"}, note="integer input; dynamic-range quantized"),
    ZooCase("mobilenetv2-backbone", mobilenet_backbone,
            lambda r: {"image": r.random((96, 96, 3), np.float32)},
            {"input_shapes": ("1x96x96x3",)}, note="open height and width"),
    ZooCase("valid-fcn", valid_fcn, lambda r: {"image": r.random((20, 24, 3), np.float32)},
            {"input_shapes": ("image=1x20x24x3",)}, note="output size follows the input"),
    ZooCase("multi-io", multi_io, lambda r: {"sensor_a": r.standard_normal(6).astype(np.float32),
                                             "sensor_b": r.standard_normal(4).astype(np.float32)}),
    ZooCase("custom-layer", custom_layer, lambda r: {"features": r.standard_normal(8).astype(np.float32)},
            {"custom_objects": ("tools.model_zoo:ScaleShift",)}),
    ZooCase("unrolled-lstm", unrolled_lstm,
            lambda r: {"series": r.standard_normal((12, 4)).astype(np.float32)}),
    ZooCase("detector", detector, lambda r: {"image": r.random((32, 32, 3), np.float32)},
            fixed_batch=True, note="BlazeFace-like heads and a resized heatmap"),
    ZooCase("folding-head", folding_head, lambda r: {"image": r.random((8, 8, 3), np.float32)},
            note="dynamic batch, hard-coded one-sample reshape"),
    ZooCase("mixed-dtypes", mixed_dtypes, lambda r: {
        "pixels": r.integers(0, 256, (8, 8, 1)).astype(np.uint8),
        "ids": r.integers(0, 10, 4).astype(np.int32),
        "flag": r.random(1) < 0.5}),
    ZooCase("streaming-wake-word", streaming_wake_word,
            lambda r: {"features": r.standard_normal((WAKE_FRAMES, WAKE_FEATURES)).astype(np.float32)},
            fixed_batch=True, stateful=True, note="stateful GRU: state carried between runs"),
)  # fmt: skip

BY_KEY = {case.key: case for case in CASES}


def build(case: ZooCase, directory: Path) -> Path:
    """The case's model saved as ``.keras`` in ``directory`` (reused when already there)."""
    path = directory / f"zoo-{case.key}.keras"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.keras")
        case.build().save(tmp)
        os.replace(tmp, path)
    return path


def keras_outputs(case: ZooCase, model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the Keras model computes, one sample at a time (batched runs of the fixed-batch and
    folding models would fold samples together), as arrays by output name. A stateful model
    starts from its initial state and takes the samples as one stream, in order."""
    reset_states(model)
    names = [getattr(t, "name", None) for t in model.inputs]
    n = len(next(iter(feeds.values())))
    outputs: list[list[np.ndarray]] = []
    for i in range(n):
        args = [feeds[name][i : i + 1] for name in names]
        result = model(args[0] if len(args) == 1 else args, training=False)
        values = result if isinstance(result, (list, tuple)) else [result]
        outputs.append([np.asarray(v) for v in values])
    output_names = list(getattr(model, "output_names", None) or [])
    return {name: np.concatenate([o[j] for o in outputs]) for j, name in enumerate(output_names)}
