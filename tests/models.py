"""Real Keras models built (and trained) in code, cached on disk so a test session builds each once.

The digits CNN is trained on scikit-learn's bundled ``load_digits`` (8×8 grey images, 10 classes),
so accuracy numbers are real. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .conftest import REPO

CACHE = Path(os.environ.get("EDGE_SDK_TEST_CACHE", REPO / ".cache" / "test-models"))
CACHE_VERSION = "v1"


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of load_digits as float32 NHWC in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def _cached(name: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE / f"{CACHE_VERSION}-{name}"


def digits_cnn() -> Path:
    """A small CNN trained on digits (≈97% test accuracy), saved as .keras."""
    path = _cached("digits.keras")
    if path.exists():
        return path
    _tf()
    import keras

    keras.utils.set_random_seed(0)
    x_train, y_train, _, _ = digits_data()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    tmp = path.with_suffix(".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def digits_h5() -> Path:
    """The same CNN saved in the legacy HDF5 format by Keras 3."""
    path = _cached("digits.h5")
    if not path.exists():
        import keras

        model = keras.saving.load_model(digits_cnn())
        tmp = path.with_suffix(".tmp.h5")
        model.save(tmp)
        os.replace(tmp, path)
    return path


def digits_savedmodel() -> Path:
    """The same CNN exported as a TF SavedModel directory."""
    path = _cached("digits-savedmodel")
    if not path.exists():
        import keras

        model = keras.saving.load_model(digits_cnn())
        tmp = path.with_name(path.name + ".tmp")
        model.export(str(tmp), verbose=False)
        os.replace(tmp, path)
    return path


def multi_io() -> Path:
    """Two named inputs, two named outputs (a classifier head and a regression head)."""
    path = _cached("multi-io.keras")
    if path.exists():
        return path
    _tf()
    import keras

    keras.utils.set_random_seed(1)
    a = keras.Input((6,), name="sensor_a")
    b = keras.Input((4,), name="sensor_b")
    h = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()([a, b]))
    cls = keras.layers.Dense(3, activation="softmax", name="label")(h)
    reg = keras.layers.Dense(1, name="score")(h)
    model = keras.Model([a, b], [cls, reg])
    tmp = path.with_suffix(".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def digits_npz(tmp: Path, *, split: str = "test", with_labels: bool = True) -> Path:
    """Digits inputs (and labels) as the .npz that --calibration / --eval take."""
    x_train, y_train, x_test, y_test = digits_data()
    x, y = (x_train[:300], y_train[:300]) if split == "train" else (x_test, y_test)
    path = tmp / f"digits-{split}{'-labels' if with_labels else ''}.npz"
    if with_labels:
        np.savez(path, x=x, y=y)
    else:
        np.savez(path, x=x)
    return path
