"""Real Keras models built (and trained) in code, cached on disk so a test session builds each once.

The digits CNN is trained on scikit-learn's bundled ``load_digits`` (8×8 grey images, 10 classes),
so accuracy numbers are real. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tools.demo_model import digits_data, train_digits_cnn

from .conftest import REPO

CACHE = Path(os.environ.get("EDGE_SDK_TEST_CACHE", REPO / ".cache" / "test-models"))
CACHE_VERSION = "v2"


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


__all__ = ["digits_data"]


def _cached(name: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE / f"{CACHE_VERSION}-{name}"


def digits_cnn() -> Path:
    """The demo's CNN trained on digits (≈97% test accuracy), saved as .keras."""
    path = _cached("digits.keras")
    if not path.exists():
        tmp = path.with_suffix(".tmp.keras")
        train_digits_cnn().save(tmp)
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
    from tools import model_zoo

    model = model_zoo.multi_io()  # the zoo's multi-I/O model, saved for the bundle tests
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
