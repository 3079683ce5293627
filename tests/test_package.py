"""Host packaging with real TensorFlow: every input format, every quantization, the gate, compat."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk.errors import (
    AccuracyGateError,
    CompatibilityError,
    ConversionError,
    DataError,
    ModelInputError,
)
from edge_sdk.format.bundle import read_bundle
from edge_sdk.format.verify import open_bundle
from edge_sdk.host.datasets import load_dataset
from edge_sdk.host.packaging import PackageOptions, package_model
from edge_sdk.host.source_model import detect_model_format
from edge_sdk.profiles import load_profile

from . import models
from .conftest import CliResult, KeySet

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("data")
    return {
        "calib": models.digits_npz(tmp, split="train", with_labels=False),
        "eval": models.digits_npz(tmp, split="test"),
    }


def _package(
    model: Path, out: Path, keyset: KeySet, profile: str = "x86_64", **options: Any
) -> tuple[Any, bytes]:
    options.setdefault("name", "digits")
    options.setdefault("version", 1)
    result = package_model(
        model,
        out,
        load_profile(profile),
        PackageOptions(**options),
        [keyset.signer],
        [keyset.device.public],
    )
    opened = open_bundle(out, keyset.trust(), keyset.device)
    return result, opened.model_bytes


def _keras_probs(model_path: Path, x: np.ndarray) -> np.ndarray:
    import keras

    return np.asarray(keras.saving.load_model(model_path)(x, training=False))


# -- input formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["keras", "h5", "savedmodel"])
def test_every_input_format_converts_and_matches_keras(
    tmp_path: Path, keyset: KeySet, fmt: str
) -> None:
    source = {
        "keras": models.digits_cnn,
        "h5": models.digits_h5,
        "savedmodel": models.digits_savedmodel,
    }[fmt]()
    assert detect_model_format(source) == fmt
    result, model_bytes = _package(source, tmp_path / "b.edgepkg", keyset, quantize="none")
    conversion = result.reports["conversion"]
    assert conversion["source_format"] == fmt
    assert conversion["parity"]["passed"] and conversion["parity"]["max_abs_error"] < 1e-4
    from edge_sdk.host.quality_gate import run_tflite

    _, _, x_test, _ = models.digits_data()
    got = next(iter(run_tflite(model_bytes, {"image": x_test[:50]}).values()))
    np.testing.assert_allclose(got, _keras_probs(models.digits_cnn(), x_test[:50]), atol=1e-5)


def test_h5_written_by_keras2_tf_keras(tmp_path: Path, keyset: KeySet) -> None:
    """Files from Keras 2 (tf_keras) are still what many users have."""
    import subprocess
    import sys

    path = tmp_path / "keras2.h5"
    script = (
        "import os, sys; os.environ['TF_USE_LEGACY_KERAS']='1'; os.environ['TF_CPP_MIN_LOG_LEVEL']='2'\n"
        "import tf_keras as k\n"
        "m = k.Sequential([k.layers.Dense(8, activation='relu', input_shape=(4,)), k.layers.Dense(3)])\n"
        "m.save(sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, capture_output=True)
    assert detect_model_format(path) == "h5"
    result, _ = _package(path, tmp_path / "b.edgepkg", keyset, quantize="dynamic")
    assert result.source_format == "h5"
    assert result.reports["accuracy"]["passed"]


def test_tflite_input_is_sealed_as_is(tmp_path: Path, keyset: KeySet) -> None:
    first, model_bytes = _package(
        models.digits_cnn(), tmp_path / "a.edgepkg", keyset, quantize="none"
    )
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(model_bytes)
    result, again = _package(tflite, tmp_path / "b.edgepkg", keyset)
    assert again == model_bytes
    assert result.reports["conversion"]["source_format"] == "tflite"
    assert first.bundle.manifest.model.inputs == result.bundle.manifest.model.inputs


# -- quantization ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "dynamic", "float16", "int8", "int16x8"])
def test_every_quantization_mode(
    tmp_path: Path, keyset: KeySet, data: dict[str, Path], mode: str
) -> None:
    result, model_bytes = _package(
        models.digits_cnn(), tmp_path / "b.edgepkg", keyset, quantize=mode,
        calibration=data["calib"], evaluation=data["eval"],
    )  # fmt: skip
    gate = result.reports["accuracy"]
    conv = result.reports["conversion"]
    assert conv["quantization"] == mode
    if mode == "none":
        assert conv["size"] == conv["float_size"]
        return
    assert gate["metric"] == "accuracy" and gate["passed"]
    assert gate["drop_points"] <= 1.0 and gate["float_accuracy"] > 90
    from edge_sdk.format.compat import read_tflite

    weights = read_tflite(model_bytes).weight_dtypes
    expected = {"dynamic": "int8", "float16": "float16", "int8": "int8", "int16x8": "int8"}[mode]
    assert expected in weights, weights


def test_int8_io(tmp_path: Path, keyset: KeySet, data: dict[str, Path]) -> None:
    result, _ = _package(
        models.digits_cnn(), tmp_path / "b.edgepkg", keyset, quantize="int8", io_dtype="int8",
        calibration=data["calib"], evaluation=data["eval"],
    )  # fmt: skip
    spec = result.bundle.manifest.model.inputs[0]
    assert spec.dtype == "int8" and spec.scale is not None and spec.zero_point is not None
    assert result.reports["accuracy"]["passed"]


def test_int8_without_calibration_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    with pytest.raises(DataError, match="needs calibration data.*never calibrates on random data"):
        _package(models.digits_cnn(), tmp_path / "b.edgepkg", keyset, quantize="int8")
    assert not (tmp_path / "b.edgepkg").exists()


def test_gate_fails_with_bad_calibration(
    tmp_path: Path, keyset: KeySet, data: dict[str, Path]
) -> None:
    """Calibrating on data 100× too small clips real activations: the gate must catch it."""
    with np.load(data["calib"]) as loaded:
        np.savez(tmp_path / "tiny.npz", x=loaded["x"] * 0.01)
    with pytest.raises(
        AccuracyGateError, match=r"int8 quantization drops accuracy by .* points .* budget 1.0"
    ):
        _package(
            models.digits_cnn(), tmp_path / "b.edgepkg", keyset, quantize="int8",
            calibration=tmp_path / "tiny.npz", evaluation=data["eval"],
        )  # fmt: skip
    assert not (tmp_path / "b.edgepkg").exists()


def test_gate_without_labels_uses_output_error(
    tmp_path: Path, keyset: KeySet, data: dict[str, Path]
) -> None:
    result, _ = _package(
        models.digits_cnn(),
        tmp_path / "b.edgepkg",
        keyset,
        quantize="int8",
        calibration=data["calib"],
    )
    gate = result.reports["accuracy"]
    assert gate["metric"] == "output-error" and gate["passed"] and gate["cosine"] > 0.99
    assert any("on the calibration data (no --eval given)" in n for n in result.notes)
    with pytest.raises(AccuracyGateError, match="relative RMS error"):
        _package(
            models.digits_cnn(), tmp_path / "c.edgepkg", keyset, quantize="int8",
            calibration=data["calib"], max_output_error=1e-6,
        )  # fmt: skip


def test_a_gate_on_made_up_inputs_says_so(tmp_path: Path, keyset: KeySet) -> None:
    result, _ = _package(models.digits_cnn(), tmp_path / "b.edgepkg", keyset, quantize="dynamic")
    assert "synthetic" in result.reports["accuracy"]["data"]
    assert any("64 synthetic inputs, not on your data" in n for n in result.notes)


def test_unknown_quantization_is_a_usage_error(
    tmp_path: Path, cli: Any, key_files: dict[str, Path]
) -> None:
    bad = cli("package", models.digits_cnn(), "--profile", "x86_64", "--quantize", "int4",
              "--sign-key", key_files["signer"], "-o", tmp_path / "x.edgepkg")  # fmt: skip
    assert bad.code == 2 and "unknown quantization 'int4'" in bad.err


def test_report_is_in_the_signed_manifest(
    tmp_path: Path, keyset: KeySet, data: dict[str, Path]
) -> None:
    _package(
        models.digits_cnn(),
        tmp_path / "b.edgepkg",
        keyset,
        quantize="dynamic",
        evaluation=data["eval"],
    )
    reports = read_bundle(tmp_path / "b.edgepkg").manifest.reports
    assert set(reports) >= {"conversion", "accuracy", "compatibility"}
    assert reports["compatibility"]["ok"] is True
    assert reports["accuracy"]["samples"] == 397


# -- runtime compatibility --------------------------------------------------------------------------


def test_adapts_dense_quantization_for_tflite_runtime_214(
    tmp_path: Path, keyset: KeySet, data: dict[str, Path]
) -> None:
    result, model_bytes = _package(
        models.digits_cnn(), tmp_path / "b.edgepkg", keyset, profile="rpi4-tflite214",
        quantize="dynamic", evaluation=data["eval"],
    )  # fmt: skip
    assert any("per-channel quantization of dense layers disabled" in n for n in result.notes)
    from edge_sdk.format.compat import read_tflite

    assert read_tflite(model_bytes).op_version("FULLY_CONNECTED") < 12
    assert result.reports["compatibility"]["ok"]
    # The real tflite-runtime 2.14 loads it (tests/runtimes.py runs it in its own venv).
    from .runtimes import load_with, tflite214_python

    ok, error = load_with(tflite214_python(), "tflite_runtime", model_bytes)
    assert ok, error


def test_refuses_a_tflite_the_old_runtime_cannot_run(
    tmp_path: Path, keyset: KeySet, data: dict[str, Path]
) -> None:
    _, model_bytes = _package(
        models.digits_cnn(), tmp_path / "a.edgepkg", keyset, quantize="dynamic"
    )
    tflite = tmp_path / "dynamic.tflite"
    tflite.write_bytes(model_bytes)
    with pytest.raises(
        CompatibilityError, match="FULLY_CONNECTED v12 needs TFLite 2.17.0.*tflite-runtime 2.14.0"
    ):
        _package(tflite, tmp_path / "b.edgepkg", keyset, profile="rpi4-tflite214")
    from .runtimes import load_with, tflite214_python

    ok, error = load_with(tflite214_python(), "tflite_runtime", model_bytes)
    assert not ok and "FULLY_CONNECTED" in error


def test_model_size_limit(tmp_path: Path, keyset: KeySet) -> None:
    profile_dir = tmp_path / "profiles"
    profile_dir.mkdir()
    text = (Path(load_profile("x86_64").path or "")).read_text()
    (profile_dir / "tiny.toml").write_text(
        text.replace('name = "x86_64"', 'name = "tiny"').replace(
            text.split("max_model_bytes = ")[1].split("\n")[0], "1000"
        )
    )
    with pytest.raises(CompatibilityError, match="over tiny's limit of 1000"):
        _package(models.digits_cnn(), tmp_path / "b.edgepkg", keyset, profile=str(profile_dir / "tiny.toml"),
                 quantize="none")  # fmt: skip


# -- multi-input / multi-output ---------------------------------------------------------------------


def test_multi_io_keeps_names_and_order(tmp_path: Path, keyset: KeySet) -> None:
    result, _ = _package(
        models.multi_io(), tmp_path / "b.edgepkg", keyset, quantize="none", name="multi"
    )
    manifest = result.bundle.manifest
    assert [t.name for t in manifest.model.inputs] == ["sensor_a", "sensor_b"]
    assert [t.name for t in manifest.model.outputs] == ["label", "score"]
    assert [t.shape for t in manifest.model.outputs] == [(-1, 3), (-1, 1)]


# -- bad inputs ---------------------------------------------------------------------------------------


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    pkl = tmp / "model.pkl"
    pkl.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    disguised = tmp / "model.h5x"
    disguised.write_bytes(pickle.dumps([1]))
    truncated_keras = tmp / "truncated.keras"
    truncated_keras.write_bytes(models.digits_cnn().read_bytes()[:2000])
    truncated_h5 = tmp / "truncated.h5"
    truncated_h5.write_bytes(models.digits_h5().read_bytes()[:3000])
    zip_not_keras = tmp / "other.keras"
    with zipfile.ZipFile(zip_not_keras, "w") as archive:
        archive.writestr("hello.txt", "hi")
    import h5py

    weights_only = tmp / "weights.h5"
    with h5py.File(weights_only, "w") as handle:
        handle.create_dataset("dense/kernel", data=np.ones((2, 2)))
    not_saved = tmp / "somedir"
    not_saved.mkdir()
    (not_saved / "readme.txt").write_text("x")
    empty = tmp / "empty.keras"
    empty.write_bytes(b"")
    junk = tmp / "junk.bin"
    junk.write_bytes(os.urandom(512))
    return {
        "pickle": (pkl, "pickle; refusing to load it because unpickling executes arbitrary code"),
        "pickle in disguise": (disguised, "pickle"),
        "truncated .keras": (truncated_keras, "corrupt or truncated zip"),
        "truncated .h5": (truncated_h5, "corrupt or truncated HDF5|cannot load"),
        "zip, not keras": (zip_not_keras, "not a Keras 3 .keras archive"),
        "weights-only hdf5": (weights_only, "holds no Keras model"),
        "directory, not SavedModel": (not_saved, "not a SavedModel"),
        "empty file": (empty, "is empty"),
        "random bytes": (junk, "not a recognised model format"),
        "missing": (tmp / "nope.h5", "does not exist"),
    }


@pytest.mark.parametrize(
    "case",
    ["pickle", "pickle in disguise", "truncated .keras", "truncated .h5", "zip, not keras",
     "weights-only hdf5", "directory, not SavedModel", "empty file", "random bytes", "missing"],
)  # fmt: skip
def test_bad_model_inputs(tmp_path: Path, keyset: KeySet, case: str) -> None:
    path, message = _bad_inputs(tmp_path)[case]
    with pytest.raises(ModelInputError, match=message):
        _package(path, tmp_path / "b.edgepkg", keyset)
    assert not (tmp_path / "b.edgepkg").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"z": np.ones((3, 8, 8, 1))}, "expected arrays named 'x'"),
        ({"x": np.ones((3, 9, 9, 1))}, "has shape \\[3, 9, 9, 1\\], the model expects"),
        ({"x": np.array(["a", "b"])}, "must be numeric"),
        ({"x": np.ones((3, 8, 8, 1)), "y": np.ones(2)}, "2 labels for 3 samples"),
    ],
)
def test_bad_data_files(tmp_path: Path, content: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **content)
    with pytest.raises(DataError, match=message):
        load_dataset(path, ["image"], [(None, 8, 8, 1)])


def test_pickled_npy_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(path, ["image"], [(None, 8, 8, 1)])


def test_image_directory_calibration(tmp_path: Path) -> None:
    import tensorflow as tf

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        png = tf.io.encode_png(tf.cast(tf.random.uniform((16, 16, 1)) * 255, tf.uint8))
        (images / f"{i}.png").write_bytes(png.numpy())
    dataset = load_dataset(images, ["image"], [(None, 8, 8, 1)])
    assert dataset.inputs["image"].shape == (3, 8, 8, 1)
    assert (
        float(dataset.inputs["image"].min()) >= 0.0 and float(dataset.inputs["image"].max()) <= 1.0
    )


# -- the CLI ------------------------------------------------------------------------------------------


def test_cli_package_json(
    tmp_path: Path, cli: Any, key_files: dict[str, Path], data: dict[str, Path]
) -> None:
    out = tmp_path / "d.edgepkg"
    result: CliResult = cli(
        "package", models.digits_h5(), "--profile", "rpi4", "--sign-key", key_files["signer"],
        "--recipient", key_files["device.pub"], "--name", "digits", "--version", "3",
        "--eval", data["eval"], "-o", out, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["quantization"] == "dynamic" and summary["profile"] == "rpi4"
    assert summary["encryption"] == "chacha20-poly1305"  # the Pi 4 has no AES instructions
    assert summary["reports"]["accuracy"]["passed"]
    inspected = cli("inspect", out, "--json").json()
    assert inspected["manifest"]["target"]["hardware_ids"] == [
        "raspberrypi,4-model-b",
        "brcm,bcm2711",
    ]
    verified = cli(
        "verify",
        out,
        "--trust",
        key_files["signer.pub"],
        "--device-key",
        key_files["device"],
        "--json",
    )
    assert verified.code == 0 and verified.json()["decrypted"] is True


def test_cli_package_errors_have_exit_codes(
    tmp_path: Path, cli: Any, key_files: dict[str, Path]
) -> None:
    pkl = tmp_path / "m.pkl"
    pkl.write_bytes(pickle.dumps(1))
    common = [
        "--profile",
        "x86_64",
        "--sign-key",
        key_files["signer"],
        "--name",
        "m",
        "--version",
        "1",
    ]
    bad = cli("package", pkl, *common, "-o", tmp_path / "x.edgepkg")
    assert bad.code == 60 and "pickle" in bad.err and "Traceback" not in bad.err
    int8 = cli(
        "package", models.digits_cnn(), *common, "--quantize", "int8", "-o", tmp_path / "y.edgepkg"
    )
    assert int8.code == 64 and "calibration" in int8.err
    profile = cli(
        "package",
        models.digits_cnn(),
        *common[2:],
        "--profile",
        "nope",
        "-o",
        tmp_path / "z.edgepkg",
    )
    assert profile.code == 50 and "rpi4" in profile.err  # lists the available profiles
    as_json = cli("package", pkl, *common, "-o", tmp_path / "x.edgepkg", "--json")
    assert json.loads(as_json.out)["error"] == "model"


def test_conversion_parity_failure_is_caught(tmp_path: Path, keyset: KeySet) -> None:
    """A converter path that silently drops weights must fail the build (the check is real)."""
    import keras

    from edge_sdk.host.datasets import synthetic_inputs
    from edge_sdk.host.quality_gate import check_parity
    from edge_sdk.host.source_model import load_source_model
    from edge_sdk.host.tflite_converter import run_converter

    source = load_source_model(models.digits_cnn())
    broken = keras.models.clone_model(
        keras.saving.load_model(models.digits_cnn())
    )  # fresh random weights
    import tensorflow as tf

    float_bytes = run_converter(tf.lite.TFLiteConverter.from_keras_model(broken), "float32")
    with pytest.raises(ConversionError, match="disagrees with the source model"):
        check_parity(source, float_bytes, synthetic_inputs(source))


def test_help_does_not_import_tensorflow(no_tensorflow_check: Any) -> None:
    no_tensorflow_check(
        "import sys\nfrom edge_sdk.cli import main\n"
        "try:\n    main(['package', '--help'])\nexcept SystemExit:\n    pass\n"
    )


# -- labels the way users write them ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["one-hot", "column", "float"])
def test_labels_in_common_forms_are_scored_as_accuracy(
    form: str, tmp_path: Path, keyset: KeySet
) -> None:
    _, _, x, y = models.digits_data()
    labels = {
        "one-hot": np.eye(10, dtype=np.float32)[y],
        "column": y[:, None],
        "float": y.astype(np.float32),
    }[form]
    np.savez(tmp_path / "eval.npz", x=x, y=labels)
    result, _ = _package(models.digits_cnn(), tmp_path / "b.edgepkg", keyset, quantize="dynamic",
                         evaluation=tmp_path / "eval.npz")  # fmt: skip
    gate = result.reports["accuracy"]
    assert gate["metric"] == "accuracy" and gate["float_accuracy"] > 90, gate


def test_labels_outside_the_classes_are_refused(tmp_path: Path, keyset: KeySet) -> None:
    _, _, x, y = models.digits_data()
    np.savez(tmp_path / "eval.npz", x=x, y=y + 7)
    with pytest.raises(DataError, match=r"range 7\.\.16, but the output has 10 classes"):
        _package(models.digits_cnn(), tmp_path / "b.edgepkg", keyset, quantize="dynamic",
                 evaluation=tmp_path / "eval.npz")  # fmt: skip


def test_unusable_labels_are_said_and_a_sigmoid_gets_accuracy(
    tmp_path: Path, keyset: KeySet
) -> None:
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="p")(inputs))
    model.layers[-1].set_weights(
        [np.array([[4.0], [0], [0], [0]], np.float32), np.zeros(1, np.float32)]
    )
    model.save(tmp_path / "binary.keras")
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    result, _ = _package(tmp_path / "binary.keras", tmp_path / "b.edgepkg", keyset, quantize="dynamic",
                         evaluation=tmp_path / "eval.npz")  # fmt: skip
    gate = result.reports["accuracy"]
    assert gate["metric"] == "accuracy" and gate["float_accuracy"] > 95, gate
    # Dense(4 -> 1) has 4 weights: TensorFlow leaves it in float, and the result says so.
    assert any("changed nothing of size" in n for n in result.notes), result.notes
    np.savez(tmp_path / "regression.npz", x=x, y=x[:, 0] * 0.37)  # targets, not classes
    result, _ = _package(tmp_path / "binary.keras", tmp_path / "c.edgepkg", keyset, quantize="dynamic",
                         evaluation=tmp_path / "regression.npz")  # fmt: skip
    assert result.reports["accuracy"]["metric"] == "output-error"
    assert any("were not used (the labels are not class indices" in n for n in result.notes), (
        result.notes
    )


def test_a_list_of_inputs_follows_the_source_models_order(tmp_path: Path, keyset: KeySet) -> None:
    """TFLite's signature sorts inputs by name; a list must still mean what it meant in Keras
    (same-shape inputs would otherwise be swapped silently)."""
    import keras

    import edge_sdk

    zeta, alpha = keras.Input((3,), name="zeta"), keras.Input((3,), name="alpha")
    joined = keras.layers.Concatenate()([keras.layers.Rescaling(10.0)(zeta), alpha])
    model = keras.Model([zeta, alpha], keras.layers.Dense(2, name="score")(joined))
    model.save(tmp_path / "swap.keras")
    _package(tmp_path / "swap.keras", tmp_path / "swap.edgepkg", keyset, quantize="none")
    rng = np.random.default_rng(0)
    xz, xa = rng.random((4, 3), np.float32), rng.random((4, 3), np.float32)
    want = np.asarray(model([xz, xa]))
    with edge_sdk.load(tmp_path / "swap.edgepkg", trust=keyset.trust(), device_key=keyset.device,
                       state_dir=tmp_path / "s", allow_target_mismatch=True) as loaded:  # fmt: skip
        assert [t.name for t in loaded.inputs] == ["zeta", "alpha"]
        np.testing.assert_allclose(loaded.predict([xz, xa]), want, atol=1e-5)
        np.testing.assert_allclose(loaded.predict({"alpha": xa, "zeta": xz}), want, atol=1e-5)


def test_more_than_ten_outputs_keep_their_order(tmp_path: Path, keyset: KeySet) -> None:
    """The converter names outputs output_0 … output_11; the signature sorts them as text."""
    import keras

    import edge_sdk

    inputs = keras.Input((4,), name="x")
    heads = [keras.layers.Dense(1, name=f"head{i:02d}")(inputs) for i in range(12)]
    model = keras.Model(inputs, heads)
    model.save(tmp_path / "heads.keras")
    _package(tmp_path / "heads.keras", tmp_path / "heads.edgepkg", keyset, quantize="none")
    x = np.random.default_rng(1).random((3, 4), np.float32)
    want = [np.asarray(v) for v in model(x)]
    with edge_sdk.load(tmp_path / "heads.edgepkg", trust=keyset.trust(), device_key=keyset.device,
                       state_dir=tmp_path / "s", allow_target_mismatch=True) as loaded:  # fmt: skip
        got = loaded.predict(x)
        assert list(got) == [f"head{i:02d}" for i in range(12)]
        for i, name in enumerate(got):
            np.testing.assert_allclose(got[name], want[i], atol=1e-5)


def test_a_model_no_reader_accepts_is_not_written(tmp_path: Path, keyset: KeySet) -> None:
    import keras

    inputs = [keras.Input((1,), name=f"in{i:03d}") for i in range(300)]
    model = keras.Model(inputs, keras.layers.Concatenate()(inputs))
    model.save(tmp_path / "wide.keras")
    with pytest.raises(ModelInputError, match="cannot carry this model.*at most 256"):
        _package(tmp_path / "wide.keras", tmp_path / "wide.edgepkg", keyset, quantize="none")
    assert not (tmp_path / "wide.edgepkg").exists()
