"""Models nobody here wrote: right numbers or a clear refusal (issue 14).

Every case of ``tools/model_zoo.py`` goes through package → load → predict at batch 1, N and 0 on
ai-edge-litert and is compared with Keras (run one sample at a time) and with the raw LiteRT
interpreter driven sample by sample on the bundle's own bytes. The portability stage runs the same
corpus on tflite-runtime 2.14 and aarch64 (``tests/device``). Then the refusals: each message says
what is wrong and what to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.device.runtime import Model
from edge_sdk.errors import (
    AccuracyGateError,
    BackendError,
    ConversionError,
    DataError,
    InferenceInputError,
    ModelInputError,
    UsageError,
)
from edge_sdk.format.verify import open_bundle
from edge_sdk.host.packaging import PackageOptions, package_model
from edge_sdk.profiles import load_profile
from tools import model_zoo

from . import models
from .conftest import REPO, CliResult, KeySet

pytestmark = pytest.mark.host

N = 5
# Float32 bundles against Keras, as a fraction of each output's scale (measured: under 6e-7).
FLOAT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, keyset: KeySet) -> dict[str, Path]:
    """Every corpus model packaged once for this machine's profile."""
    out = tmp_path_factory.mktemp("zoo")
    bundles: dict[str, Path] = {}
    for case in model_zoo.CASES:
        source = model_zoo.build(case, models.CACHE)
        path = out / f"{case.key}.edgepkg"
        options = {"quantize": "none", **case.options}
        package_model(source, path, load_profile("x86_64"), PackageOptions(name=case.key, version=1, **options),
                      [keyset.signer], [keyset.device.public])  # fmt: skip
        bundles[case.key] = path
    return bundles


def _keras_model(case: model_zoo.ZooCase) -> Any:
    import keras

    return keras.saving.load_model(
        model_zoo.build(case, models.CACHE), custom_objects={"ScaleShift": model_zoo.ScaleShift}
    )


def _load(path: Path, keyset: KeySet, tmp_path: Path) -> Model:
    return edge_sdk.load(path, trust=keyset.trust(), device_key=keyset.device,
                         state_dir=tmp_path / "state", profile="x86_64")  # fmt: skip


def _named(model: Model, result: Any) -> dict[str, np.ndarray]:
    return result if isinstance(result, dict) else {model.outputs[0].name: result}


def _feed(x: dict[str, np.ndarray]) -> Any:
    return x if len(x) > 1 else next(iter(x.values()))


def _raw_per_sample(model_bytes: bytes, x: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    """What a careful LiteRT user gets: the raw interpreter, one sample per invoke, no resizing
    of anything the model fixed (a -1 batch is resized to 1)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    signature = interpreter.get_signature_runner()
    outputs = []
    n = len(next(iter(x.values())))
    for i in range(n):
        result = signature(**{name: value[i : i + 1] for name, value in x.items()})
        outputs.append([np.asarray(result[k]) for k in sorted(result)])
    return outputs


@pytest.mark.parametrize("key", [case.key for case in model_zoo.CASES])
def test_zoo_case_batch_1_n_and_0(
    key: str, zoo: dict[str, Path], keyset: KeySet, tmp_path: Path
) -> None:
    """Batch 1, then N, then an empty batch, then 2 more. A stateful model's samples are one
    stream: the batches are consecutive chunks of it, and the empty one must leave its state
    alone (it used to run a hidden zero sample, and every later answer was off)."""
    case = model_zoo.BY_KEY[key]
    keras_model = _keras_model(case)
    model_bytes = open_bundle(zoo[key], keyset.trust(), keyset.device).model_bytes
    x = case.inputs(N + 2)
    expected = model_zoo.keras_outputs(case, keras_model, x)
    raw = _raw_per_sample(model_bytes, x)
    # (start, stop) of each batch: from sample 0 each time, or onward through the stream.
    chunks = (
        [(0, 1), (1, N), (N, N), (N, N + 2)] if case.stateful else [(0, 1), (0, N), (0, 0), (0, 2)]
    )
    with _load(zoo[key], keyset, tmp_path) as model:
        assert [t.name for t in model.outputs] == list(expected)  # the author's output names
        assert model.stateful == case.stateful
        for start, stop in chunks:
            got = _named(model, model.predict(_feed({k: v[start:stop] for k, v in x.items()})))
            for name, value in got.items():
                ref = expected[name][start:stop]
                assert value.shape == ref.shape and value.dtype == np.float32, (name, start, stop)
                scale = float(np.max(np.abs(expected[name]))) or 1.0
                assert float(np.max(np.abs(value - ref), initial=0.0)) <= FLOAT_TOLERANCE * scale, (
                    name, start, stop)  # fmt: skip
            if stop > start:
                # Identical to the raw interpreter run sample by sample (signature outputs sorted
                # by name: output_0, output_1, … in the converter's order).
                by_raw = [np.concatenate([sample[j] for sample in raw[start:stop]])
                          for j in range(len(got))]  # fmt: skip
                for value, reference in zip(got.values(), by_raw, strict=True):
                    np.testing.assert_array_equal(value, reference)


def _count_invokes(model: Model) -> list[int]:
    """Count the runs of ``model``'s own interpreter (the one whose state predict advances)."""
    calls: list[int] = []
    interp = model._interpreter
    original = interp.invoke
    interp.invoke = lambda: calls.append(1) or original()
    return calls


def test_an_empty_batch_never_runs_the_models_interpreter(
    zoo: dict[str, Path], keyset: KeySet, tmp_path: Path
) -> None:
    """Shapes from the output signatures (the wake-word model), or, where the output size follows
    the input (the 'valid' FCN), from a scratch interpreter: never a run on the model's own."""
    with _load(zoo["streaming-wake-word"], keyset, tmp_path) as model:
        calls = _count_invokes(model)
        assert model.predict(np.zeros((0, 3, 10), np.float32)).shape == (0, 1)
        assert calls == []
        model.predict(np.zeros((2, 3, 10), np.float32))
        assert len(calls) == 2  # the stream's two chunks, one run each
    with _load(zoo["valid-fcn"], keyset, tmp_path) as model:
        calls = _count_invokes(model)
        for size, out in (((30, 40), (0, 11, 16, 2)), ((20, 24), (0, 6, 8, 2))):
            assert model.predict(np.zeros((0, *size, 3), np.float32)).shape == out
        assert calls == []
        assert model.predict(np.ones((1, 30, 40, 3), np.float32)).shape == (1, 11, 16, 2)
        assert len(calls) == 1


def test_stateful_model_state_and_workers(
    zoo: dict[str, Path], keyset: KeySet, tmp_path: Path
) -> None:
    """State lives in the interpreter's resource variables: reset_all_variables (LiteRT's, for
    variable tensors) leaves it, a clone starts fresh, and a pool of several is refused."""
    from edge_sdk.device.runtime import ModelPool

    case = model_zoo.BY_KEY["streaming-wake-word"]
    x = case.inputs(3)["features"]
    expected = model_zoo.keras_outputs(case, _keras_model(case), {"features": x})["wake"]
    with _load(zoo["streaming-wake-word"], keyset, tmp_path) as model:
        first = model.predict(x[:1])
        np.testing.assert_allclose(first, expected[:1], atol=1e-6)
        view = model.interpreter
        view.allocate_tensors()
        index = view.get_input_details()[0]["index"]
        out = view.get_output_details()[0]["index"]
        for sample in x[:2]:
            view.set_tensor(index, sample[None])
            view.invoke()
        np.testing.assert_allclose(view.get_tensor(out), expected[1:2], atol=1e-6)
        view.reset_all_variables()  # as documented: the GRU's state is not a variable tensor
        view.set_tensor(index, x[2:3])
        view.invoke()
        np.testing.assert_allclose(view.get_tensor(out), expected[2:3], atol=1e-6)
        with model.clone() as fresh:
            np.testing.assert_allclose(fresh.predict(x[:1]), expected[:1], atol=1e-6)
        with pytest.raises(UsageError, match="keeps state between runs cannot be spread") as caught:
            ModelPool(model, workers=2)
        assert "model.clone()" in (caught.value.hint or "")
        np.testing.assert_allclose(model.predict(x[1:3]), expected[1:3], atol=1e-6)


def test_fixed_batch_is_never_resized(zoo: dict[str, Path], keyset: KeySet, tmp_path: Path) -> None:
    """The BlazeFace-like detector declares [1, 32, 32, 3]: a batch of 7 runs sample by sample
    and gives [7, 256, 16] (resizing the batch would fold it into [1, 1792, 16])."""
    case = model_zoo.BY_KEY["detector"]
    x = case.inputs(7)["image"]
    with _load(zoo["detector"], keyset, tmp_path) as model:
        assert model.inputs[0].shape == (1, 32, 32, 3)
        resizes: list[Any] = []
        interp = model._interpreter
        original = interp.resize_tensor_input
        interp.resize_tensor_input = lambda *a, **k: resizes.append(a) or original(*a, **k)
        out = model.predict(x)
        assert resizes == []
        assert out["boxes"].shape == (7, 256, 16) and out["heatmap"].shape == (7, 32, 32, 1)
        np.testing.assert_array_equal(out["boxes"][3:4], model.predict(x[3:4])["boxes"])
        with pytest.raises(
            InferenceInputError, match=r"expects shape \[1, 32, 32, 3\] \(batch may vary\)"
        ):
            model.predict(np.zeros((2, 16, 16, 3), np.float32))


def test_folding_model_runs_per_sample(
    zoo: dict[str, Path], keyset: KeySet, tmp_path: Path
) -> None:
    """A model that says -1 but reshapes to [1, -1, 8]: its batched outputs come back folded,
    which the runtime notices; the batch is rerun sample by sample, never returned folded."""
    case = model_zoo.BY_KEY["folding-head"]
    x = case.inputs(4)["image"]
    with _load(zoo["folding-head"], keyset, tmp_path) as model:
        assert model.inputs[0].shape[0] == -1
        out = model.predict(x)
        assert out.shape == (4, 64, 8)
        np.testing.assert_array_equal(out[2:3], model.predict(x[2:3]))


def test_open_dimensions_allocate_at_the_first_real_input(
    zoo: dict[str, Path], keyset: KeySet, tmp_path: Path
) -> None:
    """MobileNetV2 with (None, None, 3): not allocated at load (1x1 fails in XNNPACK), then any
    size the model accepts; the 'valid' FCN gets a typed error when the input is too small."""
    rng = np.random.default_rng(3)
    with _load(zoo["mobilenetv2-backbone"], keyset, tmp_path) as model:
        assert model.inputs[0].shape == (-1, -1, -1, 3)
        assert set(model._primary.current.values()) == {()}
        assert model.predict(rng.random((2, 128, 160, 3), np.float32)).shape == (2, 1280)
        assert model.predict(rng.random((1, 64, 64, 3), np.float32)).shape == (1, 1280)
        assert model.predict(np.zeros((0, 64, 64, 3), np.float32)).shape == (0, 1280)
    with _load(zoo["valid-fcn"], keyset, tmp_path) as model:
        assert model.predict(rng.random((3, 30, 40, 3), np.float32)).shape == (3, 11, 16, 2)
        assert model.predict(np.zeros((0, 30, 40, 3), np.float32)).shape == (0, 11, 16, 2)
        with pytest.raises(
            BackendError, match=r"cannot run on input shape\(s\) 'image': \[1, 4, 4, 3\]"
        ):
            model.predict(rng.random((1, 4, 4, 3), np.float32))
        with pytest.raises(InferenceInputError, match="only the number of samples may be 0"):
            model.predict(np.zeros((1, 0, 40, 3), np.float32))
        assert model.predict(rng.random((1, 20, 24, 3), np.float32)).shape == (1, 6, 8, 2)


def test_dynamic_spatial_packaging_sizes(tmp_path: Path, keyset: KeySet) -> None:
    """Parity inputs for open dimensions: the documented default (224), --input-shape, and a
    typed error (no TensorFlow traceback) when that size is too small for 'valid' padding."""
    source = model_zoo.build(model_zoo.BY_KEY["valid-fcn"], models.CACHE)
    result = _package(source, tmp_path / "a.edgepkg", keyset)
    assert result.reports["conversion"]["parity"]["input_shapes"] == {"image": [16, 224, 224, 3]}
    with pytest.raises(
        DataError, match=r"cannot run on inputs of shape \{'image': \[16, 4, 4, 3\]\}"
    ) as caught:
        _package(source, tmp_path / "b.edgepkg", keyset, input_shapes=("image=1x4x4x3",))
    assert "--input-shape" in (caught.value.hint or "") and "Traceback" not in caught.value.message
    for bad, message in [("image=1x96x96", "give every dimension"), ("nope=1x9x9x3", "no input 'nope'"),
                         ("image=1x9x9x4", "has shape \\?x\\?x\\?x3")]:  # fmt: skip
        with pytest.raises(UsageError, match=message):
            _package(source, tmp_path / "c.edgepkg", keyset, input_shapes=(bad,))


def _package(source: Path, out: Path, keyset: KeySet, **options: Any) -> Any:
    options.setdefault("quantize", "none")
    return package_model(source, out, load_profile("x86_64"), PackageOptions(name="zoo", version=1, **options),
                         [keyset.signer], [keyset.device.public])  # fmt: skip


# -- integer inputs ---------------------------------------------------------------------------------


def test_token_ids_through_parity_calibration_and_gate(tmp_path: Path, keyset: KeySet) -> None:
    """int32 token ids: synthetic parity ids within the Embedding's vocabulary, int8 calibration
    and the gate on ids, and data that cannot be ids refused."""
    case = model_zoo.BY_KEY["token-gru"]
    source = model_zoo.build(case, models.CACHE)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, model_zoo.VOCABULARY, (200, 16))
    labels = np.argmax(
        model_zoo.keras_outputs(case, _keras_model(case), {"tokens": tokens})["intent"], 1
    )
    np.savez(tmp_path / "calib.npz", tokens=tokens[:150].astype(np.float64))  # whole-number floats
    np.savez(tmp_path / "eval.npz", tokens=tokens[150:], y=labels[150:])
    result = _package(source, tmp_path / "q.edgepkg", keyset, quantize="int8",
                      calibration=tmp_path / "calib.npz", evaluation=tmp_path / "eval.npz",
                      max_accuracy_drop=50.0)  # fmt: skip
    gate = result.reports["accuracy"]
    assert gate["metric"] == "accuracy" and gate["passed"] and gate["samples"] == 50
    with _load(tmp_path / "q.edgepkg", keyset, tmp_path) as model:
        assert model.inputs[0].dtype == np.int32
        assert model.predict(tokens[:3]).shape == (3, 4)
        with pytest.raises(InferenceInputError, match="expects int32, got float32"):
            model.predict(tokens[:3].astype(np.float32))
        with pytest.raises(InferenceInputError, match="outside int32's range"):
            model.predict(np.full((1, 16), 2**40))
    synthetic = _package(source, tmp_path / "s.edgepkg", keyset, quantize="dynamic")
    assert "tokens: int32 uniform in [0, 50)" in synthetic.reports["conversion"]["parity"]["inputs"]
    np.savez(tmp_path / "frac.npz", tokens=tokens[:10] + 0.5)
    np.savez(tmp_path / "oov.npz", tokens=tokens[:10] + model_zoo.VOCABULARY)
    with pytest.raises(DataError, match="got fractional values"):
        _package(
            source,
            tmp_path / "x.edgepkg",
            keyset,
            calibration=tmp_path / "frac.npz",
            quantize="int8",
        )
    with pytest.raises(DataError, match=r"takes int32 values in \[0, 50\)"):
        _package(
            source,
            tmp_path / "x.edgepkg",
            keyset,
            calibration=tmp_path / "oov.npz",
            quantize="int8",
        )
    with pytest.raises(DataError, match="--io-dtype int8 quantizes float inputs"):
        _package(source, tmp_path / "x.edgepkg", keyset, calibration=tmp_path / "calib.npz",
                 quantize="int8", io_dtype="int8")  # fmt: skip


def test_mixed_dtypes_inputs(zoo: dict[str, Path], keyset: KeySet, tmp_path: Path) -> None:
    """uint8 pixels, int32 ids and a bool flag: each fed and checked in its own dtype."""
    from edge_sdk.format.bundle import read_bundle

    parity = read_bundle(zoo["mixed-dtypes"]).manifest.reports["conversion"]["parity"]
    assert "pixels: uint8 uniform in [0, 256)" in parity["inputs"]
    assert (
        "ids: int32 uniform in [0, 10)" in parity["inputs"]
        and "flag: random booleans" in parity["inputs"]
    )
    x = model_zoo.BY_KEY["mixed-dtypes"].inputs(3)
    with _load(zoo["mixed-dtypes"], keyset, tmp_path) as model:
        assert {t.name: str(t.dtype) for t in model.inputs} == {
            "pixels": "uint8",
            "ids": "int32",
            "flag": "bool",
        }
        base = model.predict(x)
        # Narrower or wider integer dtypes that cast without loss are accepted.
        np.testing.assert_array_equal(model.predict({**x, "ids": x["ids"].astype(np.int64)}), base)
        with pytest.raises(
            InferenceInputError, match="input 'pixels' expects uint8, got int64 values in"
        ):
            model.predict({**x, "pixels": x["pixels"].astype(np.int64) - 300})
        with pytest.raises(InferenceInputError, match="input 'flag' expects bool, got int64"):
            model.predict({**x, "flag": x["flag"].astype(np.int64)})


# -- several signatures ----------------------------------------------------------------------------


def _two_signature_tflite(tmp_path: Path) -> bytes:
    import tensorflow as tf

    class Calculator(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def double(self, x: Any) -> Any:
            return {"doubled": x * 2.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                      tf.TensorSpec([None, 3], tf.float32, name="y")])  # fmt: skip
        def add(self, x: Any, y: Any) -> Any:
            return {"sum": x + y}

    module = Calculator()
    tf.saved_model.save(
        module, str(tmp_path / "calc"), signatures={"double": module.double, "add": module.add}
    )
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(tmp_path / "calc"), signature_keys=["double", "add"]
    )
    return bytes(converter.convert())


def test_several_signatures(
    tmp_path: Path, keyset: KeySet, cli: Any, key_files: dict[str, Path]
) -> None:
    (tmp_path / "calc.tflite").write_bytes(_two_signature_tflite(tmp_path))
    _package(tmp_path / "calc.tflite", tmp_path / "calc.edgepkg", keyset, quantize=None)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with _load(tmp_path / "calc.edgepkg", keyset, tmp_path) as model:
        assert set(model.signatures) == {"double", "add"}
        with pytest.raises(InferenceInputError, match="has 2 signatures .* pass signature=NAME"):
            model.predict(x)
        np.testing.assert_array_equal(model.predict(x, signature="double"), x * 2)
        np.testing.assert_array_equal(model.predict({"x": x, "y": x}, signature="add"), x + x)
        assert model.predict(x[:0], signature="double").shape == (0, 3)
        with pytest.raises(InferenceInputError, match="no signature 'nope'"):
            model.predict(x, signature="nope")
        runner = model.interpreter.get_signature_runner("add")
        np.testing.assert_array_equal(runner(x=x, y=x)["sum"], x + x)
    np.savez(tmp_path / "x.npz", x=x)
    common = ["--trust", key_files["signer.pub"], "--device-key", key_files["device"], "--state-dir",
              tmp_path / "state", "--profile", "x86_64", "--input", tmp_path / "x.npz"]  # fmt: skip
    refused = cli("run", tmp_path / "calc.edgepkg", *common)
    assert refused.code == 72 and "--signature NAME" in refused.err
    ran = cli("run", tmp_path / "calc.edgepkg", *common, "--signature", "double", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["results"]["doubled"]["shape"] == [2, 3]


# -- refusals that say what to do -------------------------------------------------------------------


def test_rolled_lstm_is_refused_with_the_unroll_advice(tmp_path: Path, keyset: KeySet) -> None:
    source = tmp_path / "lstm.keras"
    model_zoo.rolled_lstm().save(source)
    with pytest.raises(
        ConversionError, match=r"no TFLite builtin .*LSTM .*neither device runtime"
    ) as caught:
        _package(source, tmp_path / "x.edgepkg", keyset)
    assert "unroll=True" in (caught.value.hint or "")
    # ... and the advice works: the unrolled twin packages and matches Keras (test_zoo_case).


def test_custom_layer_needs_and_takes_custom_objects(
    tmp_path: Path, cli: Any, key_files: dict[str, Path]
) -> None:
    source = model_zoo.build(model_zoo.BY_KEY["custom-layer"], models.CACHE)
    common = ["--profile", "x86_64", "--sign-key", key_files["signer"], "--name", "c", "--version", "1",
              "--quantize", "none"]  # fmt: skip
    refused: CliResult = cli("package", source, *common, "-o", tmp_path / "a.edgepkg")
    assert refused.code == 60, refused.err
    assert "custom classes Keras does not know here: 'ScaleShift'" in refused.err
    assert (
        "Could not locate class 'ScaleShift'" in refused.err and "--custom-objects" in refused.err
    )
    ok = cli(
        "package",
        source,
        *common,
        "-o",
        tmp_path / "b.edgepkg",
        "--custom-objects",
        "tools.model_zoo:ScaleShift",
    )
    assert ok.code == 0, ok.err
    # --import a .py file that registers the class under its own name.
    (tmp_path / "zoo_layers.py").write_text(
        "import keras\nfrom tools.model_zoo import ScaleShift\n"
        "keras.saving.get_custom_objects()['ScaleShift'] = ScaleShift\n"
    )
    imported = cli(
        "package",
        source,
        *common,
        "-o",
        tmp_path / "c.edgepkg",
        "--import",
        tmp_path / "zoo_layers.py",
    )
    assert imported.code == 0, imported.err
    bad = cli(
        "package",
        source,
        *common,
        "-o",
        tmp_path / "d.edgepkg",
        "--custom-objects",
        "no_such_module:X",
    )
    assert bad.code == 2 and "cannot import 'no_such_module'" in bad.err


def test_lambda_layer_is_refused_with_why(tmp_path: Path, keyset: KeySet) -> None:
    import keras

    x = keras.Input((4,))
    keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)).save(
        tmp_path / "l.keras"
    )
    with pytest.raises(
        ModelInputError, match="Lambda layer, whose function is stored as Python bytecode"
    ) as caught:
        _package(tmp_path / "l.keras", tmp_path / "x.edgepkg", keyset)
    assert "safe_mode" not in caught.value.diagnostics()
    assert "replace the Lambda with a small layer class" in (caught.value.hint or "")


def test_unreloadable_h5_suggests_keras(tmp_path: Path, keyset: KeySet) -> None:
    import keras

    keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, classes=3).save(
        tmp_path / "m.h5"
    )
    with pytest.raises(
        ModelInputError, match="cannot rebuild this model from its legacy .h5"
    ) as caught:
        _package(tmp_path / "m.h5", tmp_path / "x.edgepkg", keyset)
    assert "model.save('model.keras')" in (caught.value.hint or "")


def test_tflite_input_refuses_conversion_options(
    tmp_path: Path, cli: Any, key_files: dict[str, Path]
) -> None:
    (tmp_path / "m.tflite").write_bytes(_two_signature_tflite(tmp_path))
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3), np.float32))
    result = cli("package", tmp_path / "m.tflite", "--profile", "x86_64", "--sign-key", key_files["signer"],
                 "--name", "t", "--version", "1", "-o", tmp_path / "t.edgepkg", "--quantize", "int8",
                 "--calibration", tmp_path / "d.npz", "--eval", tmp_path / "d.npz")  # fmt: skip
    assert result.code == 2
    assert "--quantize, --calibration, --eval cannot apply" in result.err
    assert not (tmp_path / "t.edgepkg").exists()


def test_parity_failure_on_synthetic_inputs_says_so(keyset: KeySet) -> None:
    """The message says the inputs were made up and how far off relative to the output scale,
    and never suggests .keras to a .keras user."""
    import keras
    import tensorflow as tf

    from edge_sdk.host.datasets import describe_synthetic, synthetic_inputs
    from edge_sdk.host.quality_gate import check_parity
    from edge_sdk.host.source_model import load_source_model
    from edge_sdk.host.tflite_converter import run_converter

    source = load_source_model(models.digits_cnn())
    broken = keras.models.clone_model(keras.saving.load_model(models.digits_cnn()))
    float_bytes = run_converter(tf.lite.TFLiteConverter.from_keras_model(broken), "float32")
    described = describe_synthetic(source)
    with pytest.raises(
        ConversionError, match=r"max error .* is .* of the output scale .* on synthetic"
    ) as caught:
        check_parity(source, float_bytes, synthetic_inputs(source), described)
    hint = caught.value.hint or ""
    assert "the inputs were made up" in hint and "--calibration or --eval" in hint
    assert "instead of" not in hint and "save it" not in hint.lower()


# -- the gate --------------------------------------------------------------------------------------


def test_gate_checks_every_output(tmp_path: Path, keyset: KeySet) -> None:
    """Per-output labels by output name: accuracy for the class head, output error for the
    score; a budget that fails reports the output that failed."""
    case = model_zoo.BY_KEY["multi-io"]
    source = model_zoo.build(case, models.CACHE)
    x = case.inputs(120, seed=9)
    labels = np.argmax(model_zoo.keras_outputs(case, _keras_model(case), x)["label"], axis=1)
    np.savez(tmp_path / "eval.npz", **x, label=labels)
    data = {
        "quantize": "int8",
        "calibration": tmp_path / "eval.npz",
        "evaluation": tmp_path / "eval.npz",
    }
    result = _package(source, tmp_path / "m.edgepkg", keyset, **data, min_output_cosine=0.9)
    gate = result.reports["accuracy"]
    assert gate["outputs"]["label"]["metric"] == "accuracy"
    assert gate["outputs"]["score"]["metric"] == "output-error"
    assert gate["outputs"]["score"]["budget_cosine"] == 0.9 and gate["passed"]
    with pytest.raises(
        AccuracyGateError, match=r"on output 'score' changes outputs too much.*minimum 0\.9999999"
    ) as caught:
        _package(source, tmp_path / "n.edgepkg", keyset, **data, max_output_error=1e-9,
                 min_output_cosine=0.9999999)  # fmt: skip
    assert "'label'" not in caught.value.message  # the class head stayed within its budget


# -- edge-sdk run -----------------------------------------------------------------------------------


def test_run_prints_argmax_only_for_class_probabilities(
    zoo: dict[str, Path], cli: Any, key_files: dict[str, Path], tmp_path: Path
) -> None:
    case = model_zoo.BY_KEY["multi-io"]
    np.savez(tmp_path / "x.npz", **case.inputs(4))
    common = ["--trust", key_files["signer.pub"], "--device-key", key_files["device"], "--state-dir",
              tmp_path / "state", "--profile", "x86_64"]  # fmt: skip
    result = cli("run", zoo["multi-io"], "--input", tmp_path / "x.npz", *common, "--json")
    assert result.code == 0, result.err
    results = result.json()["results"]
    assert len(results["label"]["argmax"]) == 4  # softmax rows: a predicted class each
    assert "argmax" not in results["score"]  # a (N, 1) score has no class
    text = cli("run", zoo["multi-io"], "--input", tmp_path / "x.npz", *common)
    assert text.out.count("argmax") == 1


# -- the LiteRT interpreter interface ----------------------------------------------------------------


def classify(interpreter: Any, images: np.ndarray) -> np.ndarray:
    """Code written against the LiteRT interpreter, as its documentation shows it; not modified
    for edge-sdk."""
    input_details = interpreter.get_input_details()
    output_details = interpreter.get_output_details()
    interpreter.resize_tensor_input(input_details[0]["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_details[0]["index"], images)
    interpreter.invoke()
    return np.asarray(interpreter.get_tensor(output_details[0]["index"]))


def detect(interpreter: Any, frame: np.ndarray) -> list[np.ndarray]:
    """A camera loop's step on a fixed-batch detector: zero-copy input, outputs by detail."""
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.tensor(index)()[0] = frame
    interpreter.invoke()
    return [
        np.asarray(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()
    ]


def test_interpreter_runs_unmodified_litert_code(zoo: dict[str, Path], key_files: dict[str, Path], keyset: KeySet,
                                                  tmp_path: Path) -> None:  # fmt: skip
    from ai_edge_litert.interpreter import Interpreter as LiteRTInterpreter

    images, _ = models.digits_data()[2:]
    digits = tmp_path / "digits.edgepkg"
    _package(models.digits_cnn(), digits, keyset)
    plain = LiteRTInterpreter(
        model_content=open_bundle(digits, keyset.trust(), keyset.device).model_bytes
    )
    ours = edge_sdk.Interpreter(digits, trust=key_files["signer.pub"], device_key=key_files["device"],
                                num_threads=2, state_dir=tmp_path / "state", profile="x86_64")  # fmt: skip
    assert ours.manifest is not None and ours.manifest.name == "zoo"
    np.testing.assert_array_equal(classify(ours, images[:9]), classify(plain, images[:9]))
    np.testing.assert_array_equal(classify(ours, images[:1]), classify(plain, images[:1]))
    runner_ours, runner_plain = ours.get_signature_runner(), plain.get_signature_runner()
    np.testing.assert_array_equal(
        runner_ours(image=images[:4])["output_0"], runner_plain(image=images[:4])["output_0"]
    )

    frame = model_zoo.BY_KEY["detector"].inputs(1)["image"][0]
    detector_bytes = open_bundle(zoo["detector"], keyset.trust(), keyset.device).model_bytes
    with Model(detector_bytes) as model:
        view = model.interpreter
        for got, want in zip(detect(view, frame), detect(LiteRTInterpreter(model_content=detector_bytes), frame),
                             strict=True):  # fmt: skip
            np.testing.assert_array_equal(got, want)
        # Where LiteRT would go wrong, a typed refusal, and the interpreter stays usable.
        index = view.get_input_details()[0]["index"]
        with pytest.raises(InferenceInputError, match="dimension 0 is fixed at 1 by the model"):
            view.resize_tensor_input(index, [7, 32, 32, 3])
        with pytest.raises(InferenceInputError, match="cannot run zero samples"):
            view.resize_tensor_input(index, [0, 32, 32, 3])
        with pytest.raises(InferenceInputError, match="cannot set tensor"):
            view.set_tensor(index, np.zeros((1, 32, 32, 3), np.float64))
        assert sorted(o.shape for o in detect(view, frame)) == [
            (1, 32, 32, 1),
            (1, 256, 1),
            (1, 256, 16),
        ]
        # predict and the interpreter view have their own tensors.
        assert model.predict(np.stack([frame] * 3))["output_0"].shape == (3, 256, 16)
    with pytest.raises(UsageError, match="closed"):
        view.invoke()
    ours.close()
    with pytest.raises(UsageError, match="closed"):
        ours.get_input_details()


def test_interpreter_is_on_the_device_path(
    zoo: dict[str, Path], key_files: dict[str, Path], tmp_path: Path
) -> None:
    """edge_sdk.Interpreter loads and runs a bundle without TensorFlow in sys.modules."""
    code = f"""
import sys, numpy as np, edge_sdk
interp = edge_sdk.Interpreter({str(zoo["fixed-batch-cnn"])!r}, trust={str(key_files["signer.pub"])!r},
                              device_key={str(key_files["device"])!r}, state_dir={str(tmp_path)!r},
                              profile="x86_64", num_threads=1)
interp.allocate_tensors()
detail = interp.get_input_details()[0]
interp.set_tensor(detail["index"], np.zeros(detail["shape"], np.float32))
interp.invoke()
print(interp.get_tensor(interp.get_output_details()[0]["index"]).shape)
bad = [n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')]
assert not bad, bad
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1].replace("(", "[").replace(")", "]")) == [
        1,
        5,
    ]


def test_quantized_input_refuses_integers_without_raw(keyset: KeySet, tmp_path: Path) -> None:
    """A uint8/int8 quantized input given integers: are they pixels or quantized values? The
    runtime refuses to guess (it used to quantize pixel values as if real)."""
    from edge_sdk.host.datasets import load_dataset
    from edge_sdk.host.source_model import keras_source
    from edge_sdk.host.tflite_converter import make_converter, run_converter

    calib = load_dataset(
        models.digits_npz(tmp_path, split="train", with_labels=False), ["image"], [(None, 8, 8, 1)]
    )
    import keras

    source = keras_source(keras.saving.load_model(models.digits_cnn()))
    int8io = run_converter(make_converter(source, "int8", "int8", calib, True), "int8")
    with Model(int8io) as model:
        q = np.zeros((2, 8, 8, 1), np.int8)
        with pytest.raises(
            InferenceInputError, match=r"is quantized int8 .* takes real-valued floats"
        ) as caught:
            model.predict(q)
        assert "raw=True" in (caught.value.hint or "")
        assert model.predict(q, raw=True).dtype == np.int8
        with pytest.raises(InferenceInputError, match="NaN or infinite"):
            model.predict(np.full((1, 8, 8, 1), np.nan, np.float32))


def test_string_input_is_refused_by_predict_and_run_by_the_interpreter() -> None:
    """A string tensor (no converter here makes one; a hand-built flatbuffer does)."""
    from .tflite_builder import Buffer, Op, OpCode, Spec, Tensor, build

    reshape = 22
    spec = Spec(
        opcodes=[OpCode(reshape)],
        tensors=[Tensor("text", (1, 2), "string", buffer=1), Tensor("shape", (2,), "int32", buffer=2),
                 Tensor("out", (1, 2), "string", buffer=3)],
        ops=[Op(0, (0, 1), (2,))], inputs=(0,), outputs=(2,),
        buffers=[Buffer(), Buffer(), Buffer(np.array([1, 2], np.int32).tobytes()), Buffer()],
    )  # fmt: skip
    with Model(build(spec)) as model:
        with pytest.raises(InferenceInputError, match="input 'text' is a string tensor"):
            model.predict(np.array([["a", "b"]]))
        interpreter = model.interpreter
        interpreter.allocate_tensors()
        interpreter.set_tensor(0, np.array([[b"a", b"bc"]]))
        interpreter.invoke()
        assert interpreter.get_tensor(2).tolist() == [[b"a", b"bc"]]


def test_a_fixed_first_dimension_other_than_one_is_not_a_batch(
    tmp_path: Path, keyset: KeySet
) -> None:
    """[4, 3]: four rows the model needs together (keras.Input(batch_size=4)). Exactly that
    shape runs; no other count is split, stacked or resized into it."""
    import keras

    keras.utils.set_random_seed(20)
    x_in = keras.Input((3,), batch_size=4, name="rows")
    pooled = keras.ops.sum(keras.layers.Dense(2)(x_in), axis=0, keepdims=True)  # mixes the rows
    model = keras.Model(x_in, keras.layers.Identity(name="pooled")(pooled))
    model.save(tmp_path / "rows.keras")
    _package(tmp_path / "rows.keras", tmp_path / "rows.edgepkg", keyset)
    rows = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    with _load(tmp_path / "rows.edgepkg", keyset, tmp_path) as loaded:
        assert loaded.inputs[0].shape == (4, 3)
        np.testing.assert_allclose(loaded.predict(rows), np.asarray(model(rows)), atol=1e-5)
        for count in (0, 3, 8):
            with pytest.raises(InferenceInputError, match=r"expects shape \[4, 3\], got"):
                loaded.predict(rows[:1].repeat(count, axis=0))
