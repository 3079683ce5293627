"""Shapes of published models that once failed (issue 24): each gives right numbers or a typed
refusal that says what to do, never a traceback.

Every model is built here in code (Keras layers, ``keras.applications`` with ``weights=None``, or a
hand-built flatbuffer for a custom op no converter writes); nothing downloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import ModelInputError
from edge_sdk.host.packaging import PackageOptions, package_model
from edge_sdk.profiles import load_profile

from .conftest import CliResult, KeySet

pytestmark = pytest.mark.host


def _package(source: Path, out: Path, keyset: KeySet, **options: Any) -> Any:
    options.setdefault("quantize", "none")
    return package_model(source, out, load_profile("x86_64"), PackageOptions(name="m", version=1, **options),
                         [keyset.signer], [keyset.device.public])  # fmt: skip


# -- inputs no device runtime can feed ---------------------------------------------------------------


def _string_keras(path: Path) -> Path:
    import keras

    keras.utils.set_random_seed(3)
    text = keras.Input((1,), dtype="string", name="text")
    ids = keras.layers.Hashing(num_bins=16)(text)
    h = keras.layers.Flatten()(keras.layers.Embedding(16, 4)(ids))
    keras.Model(text, keras.layers.Dense(2, name="out")(h)).save(path)
    return path


def _string_savedmodel(path: Path) -> Path:
    import tensorflow as tf

    class Lengths(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: Any) -> Any:
            return {"length": tf.cast(tf.strings.length(text), tf.float32)}

    module = Lengths()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_string_inputs_are_refused_with_what_to_do(
    tmp_path: Path, keyset: KeySet, cli: Any, key_files: dict[str, Path]
) -> None:
    """A Keras model (and a SavedModel) taking strings: a typed refusal naming the input, where
    Keras models used to end in numpy's raw TypeError ("data type 'string' not understood")."""
    keras_file = _string_keras(tmp_path / "text.keras")
    for source in (keras_file, _string_savedmodel(tmp_path / "text-savedmodel")):
        with pytest.raises(ModelInputError, match="input 'text' takes strings") as caught:
            _package(source, tmp_path / "x.edgepkg", keyset)
        assert "token ids" in (caught.value.hint or "")
    result: CliResult = cli("package", keras_file, "--profile", "x86_64", "--sign-key", key_files["signer"],
                            "--name", "t", "--version", "1", "-o", tmp_path / "t.edgepkg")  # fmt: skip
    assert result.code == 60, result.err
    assert "takes strings" in result.err and "Traceback" not in result.err


def test_other_non_numeric_inputs_are_refused(tmp_path: Path, keyset: KeySet) -> None:
    """The same for an input type numpy has no name for (bfloat16)."""
    import keras

    x = keras.Input((4,), dtype="bfloat16", name="half")
    y = keras.layers.Dense(2, name="out")(keras.ops.cast(x, "float32"))
    keras.Model(x, y).save(tmp_path / "b.keras")
    with pytest.raises(ModelInputError, match="input 'half' takes 'bfloat16' values") as caught:
        _package(tmp_path / "b.keras", tmp_path / "x.edgepkg", keyset)
    assert "float32" in (caught.value.hint or "")
