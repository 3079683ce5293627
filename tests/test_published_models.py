"""Shapes of published models that once failed (issue 24): each gives right numbers or a typed
refusal that says what to do, never a traceback.

Every model is built here in code (Keras layers, ``keras.applications`` with ``weights=None``, or a
hand-built flatbuffer for a custom op no converter writes); nothing downloads.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
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


# -- custom ops a delegate provides --------------------------------------------------------------------


def _custom_op_tflite(op: str, rng: np.random.Generator) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A MediaPipe-style 2x upsampling by a transposed convolution, as the custom op ``op``
    (options: padding SAME, stride 2x2), with its weights and bias."""
    from .tflite_builder import CUSTOM, Buffer, Op, OpCode, Spec, Tensor, build

    weights = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)  # out, kh, kw, in
    bias = rng.standard_normal(3).astype(np.float32)
    spec = Spec(
        opcodes=[OpCode(CUSTOM, 1, op)],
        tensors=[Tensor("image", (1, 4, 4, 2), buffer=1), Tensor("w", (3, 2, 2, 2), buffer=2),
                 Tensor("b", (3,), buffer=3), Tensor("up", (1, 8, 8, 3), buffer=4)],
        ops=[Op(0, (0, 1, 2), (3,), custom_options=struct.pack("<iii", 1, 2, 2))],
        inputs=(0,), outputs=(3,),
        buffers=[Buffer(), Buffer(), Buffer(weights.tobytes()), Buffer(bias.tobytes()), Buffer()],
    )  # fmt: skip
    return build(spec), weights, bias


def test_a_custom_op_xnnpack_provides_packages_and_runs(tmp_path: Path, keyset: KeySet) -> None:
    """Convolution2DTransposeBias (MediaPipe's segmentation and face models): XNNPACK runs it, so
    a profile with XNNPACK takes the .tflite (it was refused) and the numbers are the op's."""
    import edge_sdk

    rng = np.random.default_rng(4)
    model_bytes, weights, bias = _custom_op_tflite("Convolution2DTransposeBias", rng)
    (tmp_path / "up.tflite").write_bytes(model_bytes)
    _package(tmp_path / "up.tflite", tmp_path / "up.edgepkg", keyset, quantize=None)
    x = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
    # Each input pixel writes one 2x2 block (stride 2, kernel 2): out = W[:, ky, kx, :] @ x + b.
    expected = np.einsum("oyxi,nhwi->nhywxo", weights, x).reshape(3, 8, 8, 3) + bias
    with edge_sdk.load(tmp_path / "up.edgepkg", trust=keyset.trust(), device_key=keyset.device,
                       state_dir=tmp_path / "state", profile="x86_64") as model:  # fmt: skip
        np.testing.assert_allclose(model.predict(x), expected, atol=1e-5)
    # Without the delegate the runtime has no kernel: said so, by name.
    from edge_sdk.format.compat import check_compatibility, read_tflite

    report = check_compatibility(read_tflite(model_bytes), "ai-edge-litert", "2.3.0")
    assert not report.ok and "without the xnnpack delegate" in report.summary()


def test_a_tflite_custom_op_refusal_does_not_say_reconvert(tmp_path: Path, keyset: KeySet) -> None:
    """A .tflite has no Keras model to re-convert: the hint says what provides custom ops."""
    from edge_sdk.errors import CompatibilityError

    model_bytes, _, _ = _custom_op_tflite("MyVendorUpsample", np.random.default_rng(5))
    (tmp_path / "v.tflite").write_bytes(model_bytes)
    with pytest.raises(
        CompatibilityError, match="custom op MyVendorUpsample is not provided"
    ) as caught:
        _package(tmp_path / "v.tflite", tmp_path / "v.edgepkg", keyset, quantize=None)
    hint = caught.value.hint or ""
    assert "re-convert" not in hint and "delegate chain provides them" in hint
    assert "Convolution2DTransposeBias" in hint


# -- inputs the runtime would cast silently -------------------------------------------------------------


def test_integer_frames_into_a_float_input_are_refused() -> None:
    """uint8 camera frames fed to a float input (MobileNet-style, [-1, 1]) used to be cast as
    0-255 and run; raw LiteRT refuses the dtype, and so does predict, saying how to scale."""
    from edge_sdk.device.runtime import Model
    from edge_sdk.errors import InferenceInputError

    from .tflite_builder import Buffer, Op, OpCode, Spec, Tensor, build

    reshape = 22
    spec = Spec(
        opcodes=[OpCode(reshape)],
        tensors=[Tensor("image", (1, 2, 2, 3), buffer=1), Tensor("shape", (2,), "int32", buffer=2),
                 Tensor("flat", (1, 12), buffer=3)],
        ops=[Op(0, (0, 1), (2,))], inputs=(0,), outputs=(2,),
        buffers=[Buffer(), Buffer(), Buffer(np.array([1, 12], np.int32).tobytes()), Buffer()],
    )  # fmt: skip
    frame = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3) * 20
    with Model(build(spec)) as model:
        for integers in (frame, frame.astype(np.int64)):
            with pytest.raises(
                InferenceInputError, match="expects float32, got .*not cast"
            ) as caught:
                model.predict(integers)
            assert "/ 127.5 - 1" in (caught.value.hint or "")
        scaled = frame.astype(np.float32) / 127.5 - 1
        np.testing.assert_array_equal(model.predict(scaled), scaled.reshape(1, 12))
        assert model.predict(scaled.astype(np.float16)).dtype == np.float32  # floats still cast


# -- SavedModels from elsewhere ---------------------------------------------------------------------------


def test_a_keras2_savedmodel_packages_and_a_signature_tf_cannot_describe_is_refused(
    tmp_path: Path, keyset: KeySet
) -> None:
    """A tf_keras (Keras 2) SavedModel with dict outputs, as basic-pitch ships, packages with
    parity; a signature input of unknown rank (which ended in TensorFlow's raw ValueError) and a
    SavedModel TF cannot load are typed refusals with the re-export advice."""
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(5)
    audio = tf_keras.Input((16, 4), name="audio")
    h = tf_keras.layers.Conv1D(4, 3, padding="same", activation="relu")(audio)
    model = tf_keras.Model(audio, {"note": tf_keras.layers.Dense(2, activation="sigmoid", name="note")(h),
                                   "onset": tf_keras.layers.Dense(1, name="onset")(h)})  # fmt: skip
    model.save(tmp_path / "keras2")
    result = _package(tmp_path / "keras2", tmp_path / "k.edgepkg", keyset)
    parity = result.reports["conversion"]["parity"]
    assert parity["passed"] and set(parity["outputs"]) == {"note", "onset"}

    class AnyRank(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            return {"y": x * 2.0}

    module = AnyRank()
    tf.saved_model.save(
        module, str(tmp_path / "anyrank"), signatures={"serving_default": module.serve}
    )
    with pytest.raises(ModelInputError, match="input 'x' has no fixed rank") as caught:
        _package(tmp_path / "anyrank", tmp_path / "a.edgepkg", keyset)
    assert "model.export" in (caught.value.hint or "")
    (tmp_path / "anyrank" / "saved_model.pb").write_bytes(b"\x08\x01junk")
    with pytest.raises(ModelInputError, match="cannot load SavedModel") as caught:
        _package(tmp_path / "anyrank", tmp_path / "b.edgepkg", keyset)
    assert "re-export" in (caught.value.hint or "")


def test_a_keras_model_the_keras_converter_fails_converts_through_its_export(
    tmp_path: Path, keyset: KeySet
) -> None:
    """A .keras model with dict inputs keyed by their names (as keras-hub backbones take them)
    fails TFLite's Keras path ("'NoneType' object is not callable"; it was refused): it converts
    through a SavedModel export, says so, and runs with Keras's numbers."""
    import keras

    import edge_sdk

    keras.utils.set_random_seed(6)
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    mask = keras.Input((None,), dtype="int32", name="padding_mask")
    h = keras.layers.Embedding(50, 8)(ids) * keras.ops.expand_dims(
        keras.ops.cast(mask, "float32"), -1
    )
    out = keras.layers.Dense(3, name="logits")(h)
    keras.Model({"token_ids": ids, "padding_mask": mask}, out).save(tmp_path / "backbone.keras")
    shapes = ("token_ids=4x16", "padding_mask=4x16")
    result = _package(
        tmp_path / "backbone.keras", tmp_path / "b.edgepkg", keyset, input_shapes=shapes
    )
    # The Keras path's own message varies with what ran before in the process; the route does not.
    assert any("through a SavedModel export" in n and "Keras conversion failed" in n
               for n in result.notes), result.notes  # fmt: skip
    assert result.reports["conversion"]["parity"]["passed"]

    rng = np.random.default_rng(7)
    feeds = {"token_ids": rng.integers(0, 50, (4, 16)).astype(np.int32),
             "padding_mask": rng.integers(0, 2, (4, 16)).astype(np.int32)}  # fmt: skip
    expected = keras.models.load_model(tmp_path / "backbone.keras")(feeds)
    with edge_sdk.load(tmp_path / "b.edgepkg", trust=keyset.trust(), device_key=keyset.device,
                       state_dir=tmp_path / "state", profile="x86_64") as model:  # fmt: skip
        np.testing.assert_allclose(model.predict(feeds), np.asarray(expected), atol=1e-5)


def test_backend_messages_keep_litert_s_messages_apart(tmp_path: Path, keyset: KeySet) -> None:
    """LiteRT's error reporter runs its messages together ("...reshape runtimeNode number 1"):
    a backend refusal shows them apart, and names what the model could not take."""
    import keras

    import edge_sdk
    from edge_sdk.errors import BackendError

    a, b = keras.Input((None, 4), name="a"), keras.Input((None, 4), name="b")
    keras.Model([a, b], keras.layers.Add()([a, b])).save(tmp_path / "add.keras")
    _package(
        tmp_path / "add.keras",
        tmp_path / "add.edgepkg",
        keyset,
        input_shapes=("a=1x3x4", "b=1x3x4"),
    )
    feeds = {"a": np.ones((1, 3, 4), np.float32), "b": np.ones((1, 5, 4), np.float32)}
    with edge_sdk.load(tmp_path / "add.edgepkg", trust=keyset.trust(), device_key=keyset.device,
                       state_dir=tmp_path / "state", profile="x86_64") as model:  # fmt: skip
        with pytest.raises(BackendError) as caught:
            model.predict(feeds)
        np.testing.assert_array_equal(
            model.predict({"a": feeds["a"], "b": feeds["a"]}), 2 * feeds["a"]
        )
    message = str(caught.value)
    assert "Node number" in message and not re.search(r"[A-Za-z)]Node number", message), message
