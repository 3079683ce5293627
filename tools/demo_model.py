"""Build the demo's (and the tests') digits model: a small CNN trained on scikit-learn's digits.

``python tools/demo_model.py OUTDIR`` writes ``digits.h5`` (legacy Keras HDF5, what most users
have), ``calibration.npz`` (300 training images), ``eval.npz`` (held-out images and labels) and
``sample.npy`` (8 held-out images, labels in ``sample_labels.npy``). Nothing is downloaded: the
data ships inside scikit-learn.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np


def digits_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of load_digits as float32 NHWC in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train_digits_cnn(epochs: int = 12) -> Any:
    """A two-conv CNN, ~97% accurate on the held-out digits."""
    from edge_sdk.host.tensorflow_import import import_tensorflow

    import_tensorflow()  # imported the quiet way: no CUDA probing chatter on CPU-only hosts
    import keras

    keras.utils.set_random_seed(0)
    x_train, y_train, _, _ = digits_data()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            # Named, not numbered: Keras numbers unnamed layers per process, so the same model
            # built after another would carry other names into pruning reports and manifests.
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2d"),
            keras.layers.MaxPooling2D(name="max_pooling2d"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2d_1"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense"),
            keras.layers.Dense(10, activation="softmax", name="probs"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    return model


def write_demo(out: Path) -> None:
    """The model and data files the README's demo packages."""
    out.mkdir(parents=True, exist_ok=True)
    import logging

    from edge_sdk.host.tensorflow_import import native_output_captured

    x_train, _, x_test, y_test = digits_data()
    # Saving as legacy .h5 on purpose (what most users have): Keras's warning about it, and the
    # CUDA probing TensorFlow prints when training starts on a CPU-only host, are noise here.
    logging.getLogger("absl").setLevel(logging.ERROR)
    with native_output_captured():
        train_digits_cnn().save(out / "digits.h5")
    np.savez(out / "calibration.npz", x=x_train[:300])
    np.savez(out / "eval.npz", x=x_test, y=y_test)
    np.save(out / "sample.npy", x_test[:8])
    np.save(out / "sample_labels.npy", y_test[:8])
    print(
        f"wrote {out}/digits.h5, calibration.npz, eval.npz, sample.npy "
        f"(labels {y_test[:8].tolist()} in sample_labels.npy)"
    )


if __name__ == "__main__":
    write_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-work"))
