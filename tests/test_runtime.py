"""The device runtime on a real LiteRT interpreter: parity, I/O handling, delegates, state, logs."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.device.audit_log import verify_log
from edge_sdk.device.runtime import Model, ModelPool, discover_backend
from edge_sdk.errors import (
    BackendError,
    DelegateError,
    InferenceInputError,
    RollbackError,
    SignatureError,
    TargetMismatchError,
)
from edge_sdk.format.bundle import read_bundle
from edge_sdk.host.packaging import PackageOptions, package_model
from edge_sdk.profiles import load_profile

from . import models
from .conftest import REPO, CliResult, KeySet

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, keyset: KeySet) -> dict[str, Path]:
    """Real bundles for this machine's profile, built once."""
    tmp = tmp_path_factory.mktemp("bundles")
    calib = models.digits_npz(tmp, split="train", with_labels=False)
    evald = models.digits_npz(tmp, split="test")
    out: dict[str, Path] = {}
    for key, source, options in [
        ("f32", models.digits_cnn(), {"quantize": "none"}),
        ("int8", models.digits_cnn(), {"quantize": "int8", "calibration": calib, "evaluation": evald}),
        ("int8io", models.digits_cnn(), {"quantize": "int8", "io_dtype": "int8", "calibration": calib,
                                          "evaluation": evald}),
        ("multi", models.multi_io(), {"quantize": "none"}),
        ("f32v2", models.digits_cnn(), {"quantize": "none", "version": 2}),
    ]:  # fmt: skip
        options.setdefault("version", 1)
        path = tmp / f"{key}.edgepkg"
        package_model(source, path, load_profile("x86_64"), PackageOptions(name=key.removesuffix("v2"), **options),
                      [keyset.signer], [keyset.device.public])  # fmt: skip
        out[key] = path
    return out


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def _load(path: Path, keyset: KeySet, state: Path, **kw: Any) -> Model:
    kw.setdefault("profile", "x86_64")
    return edge_sdk.load(
        path, trust=keyset.trust(), device_key=keyset.device, state_dir=state, **kw
    )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    _, _, x, y = models.digits_data()
    return x, y


def test_float32_parity_with_keras(bundles: dict[str, Path], keyset: KeySet, state: Path) -> None:
    import keras

    x, _ = _digits()
    expected = np.asarray(keras.saving.load_model(models.digits_cnn())(x, training=False))
    with _load(bundles["f32"], keyset, state) as model:
        got = model.predict(x)
    assert np.max(np.abs(got - expected)) <= 1e-5


@pytest.mark.parametrize("variant", ["int8", "int8io"])
def test_int8_accuracy_within_gate(
    bundles: dict[str, Path], keyset: KeySet, state: Path, variant: str
) -> None:
    x, y = _digits()
    manifest = read_bundle(bundles[variant]).manifest
    gate = manifest.reports["accuracy"]
    with _load(bundles[variant], keyset, state) as model:
        probs = model.predict(x)  # floats in, floats out, even for int8 I/O
    accuracy = float(np.mean(np.argmax(probs, axis=1) == y)) * 100
    assert probs.dtype == np.float32
    assert abs(accuracy - gate["quantized_accuracy"]) < 1e-3  # the report rounds to 3 places
    assert gate["float_accuracy"] - accuracy <= 1.0


def test_raw_integer_io(bundles: dict[str, Path], keyset: KeySet, state: Path) -> None:
    x, _ = _digits()
    with _load(bundles["int8io"], keyset, state) as model:
        spec = model.inputs[0]
        assert spec.dtype == np.int8 and spec.quantized
        q = np.clip(np.round(x[:4] / spec.scale) + spec.zero_point, -128, 127).astype(np.int8)
        raw = model.predict(q, raw=True)
        assert raw.dtype == np.int8
        out = model.outputs[0]
        np.testing.assert_allclose((raw.astype(np.float32) - out.zero_point) * out.scale, model.predict(x[:4]),
                                   atol=1e-6)  # fmt: skip
        with pytest.raises(InferenceInputError, match="expects int8, got float32"):
            model.predict(x[:4], raw=True)


def test_batch_resize_happens_once_per_shape(
    bundles: dict[str, Path], keyset: KeySet, state: Path
) -> None:
    x, _ = _digits()
    with _load(bundles["f32"], keyset, state) as model:
        calls = {"n": 0}
        interp = model._interpreter
        original = interp.resize_tensor_input

        def counting(*args: Any, **kw: Any) -> Any:
            calls["n"] += 1
            return original(*args, **kw)

        interp.resize_tensor_input = counting
        single = [model.predict(x[i : i + 1]) for i in range(3)]
        batch = [model.predict(x[:3]) for _ in range(3)]
        assert calls["n"] == 1  # batch 1 is the allocated shape; batch 3 resizes once
        np.testing.assert_allclose(np.concatenate(single), batch[0], atol=1e-6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            np.ones((2, 9, 8, 1), np.float32),
            r"input 'image' expects shape \[-1, 8, 8, 1\].*got \[2, 9, 8, 1\]",
        ),
        (np.ones((8, 8, 1), np.float32), r"expects shape .* got \[8, 8, 1\]"),
        (np.array([["a"]]), "input 'image' expects shape"),
        (np.full((1, 8, 8, 1), "x"), "expects float32, got <U1"),
        ({"nope": np.ones((1, 8, 8, 1))}, r"missing \['image'\], unknown \['nope'\]"),
    ],
)
def test_input_mistakes_name_the_tensor(bundles: dict[str, Path], keyset: KeySet, state: Path, bad: Any,
                                        message: str) -> None:  # fmt: skip
    with (
        _load(bundles["f32"], keyset, state) as model,
        pytest.raises(InferenceInputError, match=message),
    ):
        model.predict(bad)


def test_multi_io_by_name(bundles: dict[str, Path], keyset: KeySet, state: Path) -> None:
    import keras

    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal((5, 6)).astype(np.float32),
        rng.standard_normal((5, 4)).astype(np.float32),
    )
    expected = keras.saving.load_model(models.multi_io())([a, b], training=False)
    with _load(bundles["multi"], keyset, state) as model:
        assert [t.name for t in model.inputs] == ["sensor_a", "sensor_b"]
        out = model.predict({"sensor_b": b, "sensor_a": a})
        assert list(out) == ["label", "score"]
        np.testing.assert_allclose(out["label"], np.asarray(expected[0]), atol=1e-5)
        np.testing.assert_allclose(out["score"], np.asarray(expected[1]), atol=1e-5)
        in_order = model.predict([a, b])
        np.testing.assert_allclose(in_order["score"], out["score"])
        with pytest.raises(InferenceInputError, match="the model takes 2 inputs"):
            model.predict(a)


def test_predict_from_many_threads(bundles: dict[str, Path], keyset: KeySet, state: Path) -> None:
    x, _ = _digits()
    with _load(bundles["f32"], keyset, state) as model:
        expected = [model.predict(x[i : i + 1 + i % 3]) for i in range(40)]
        results: dict[int, np.ndarray] = {}

        def work(i: int) -> None:
            results[i] = model.predict(x[i : i + 1 + i % 3])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(40):
            np.testing.assert_allclose(results[i], expected[i], atol=1e-6)


def test_model_pool(bundles: dict[str, Path], keyset: KeySet, state: Path) -> None:
    x, _ = _digits()
    model = _load(bundles["f32"], keyset, state)
    pool = ModelPool(model, workers=2)
    outputs: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda i=i: outputs.append(pool.predict(x[i : i + 8])))
        for i in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outputs) == 10 and all(o.shape == (8, 10) for o in outputs)
    pool.close()
    # The pool closes the interpreters it made, not the model its caller gave it.
    assert not model.closed and model.predict(x[:2]).shape == (2, 10)
    model.close()


def test_model_reports_backend_and_delegates(
    bundles: dict[str, Path], keyset: KeySet, state: Path
) -> None:
    with _load(bundles["f32"], keyset, state, threads=2) as model:
        info = model.describe()
    assert info["backend"]["name"] == "ai_edge_litert" and info["backend"]["version"]
    assert info["threads"] == 2
    assert info["delegates"][0]["name"] == "xnnpack" and info["delegates"][0]["applied"]
    assert model.manifest is not None and model.manifest.name == "f32"


def _profile_with_delegate(tmp: Path, required: bool) -> Path:
    base = load_profile("x86_64")
    assert base.path is not None
    text = Path(base.path).read_text().replace('name = "x86_64"', 'name = "x86_64"')
    text += (
        '\n[[delegates]]\nname = "npu"\nlibrary = "/nonexistent/libvendor_delegate.so"\n'
        f"required = {'true' if required else 'false'}\n"
    )
    directory = tmp / ("required" if required else "optional")
    directory.mkdir()
    path = directory / "x86_64.toml"
    path.write_text(text)
    return path


def test_missing_delegate_falls_back_with_reason(bundles: dict[str, Path], keyset: KeySet, state: Path,
                                                 tmp_path: Path) -> None:  # fmt: skip
    profile = _profile_with_delegate(tmp_path, required=False)
    with _load(bundles["f32"], keyset, state, profile=load_profile(str(profile))) as model:
        npu = next(d for d in model.delegates if d.name == "npu")
        assert not npu.applied and "libvendor_delegate.so could not be loaded" in npu.reason
        assert model.predict(_digits()[0][:2]).shape == (2, 10)  # still runs, on the CPU
    with pytest.raises(DelegateError, match="delegate npu failed"):
        _load(
            bundles["f32"], keyset, state, profile=load_profile(str(profile)), strict_delegates=True
        )


def test_required_delegate_is_an_error(bundles: dict[str, Path], keyset: KeySet, state: Path,
                                       tmp_path: Path) -> None:  # fmt: skip
    profile = _profile_with_delegate(tmp_path, required=True)
    with pytest.raises(DelegateError, match="libvendor_delegate.so"):
        _load(bundles["f32"], keyset, state, profile=load_profile(str(profile)))


def test_target_mismatch(bundles: dict[str, Path], keyset: KeySet, state: Path) -> None:
    with pytest.raises(
        TargetMismatchError, match="targets profile 'x86_64', this device runs 'rpi4'"
    ):
        _load(bundles["f32"], keyset, state, profile="rpi4")
    with pytest.raises(
        TargetMismatchError, match="for hardware x86_64; this device is raspberrypi"
    ):
        _load(bundles["f32"], keyset, state, hardware_ids=["raspberrypi,4-model-b"])
    _load(bundles["f32"], keyset, state, profile="rpi4", allow_target_mismatch=True).close()


def test_anti_rollback(bundles: dict[str, Path], keyset: KeySet, state: Path) -> None:
    _load(bundles["f32v2"], keyset, state).close()
    with pytest.raises(RollbackError, match="f32 v1 is older than v2"):
        _load(bundles["f32"], keyset, state)
    _load(bundles["f32v2"], keyset, state).close()  # the same release again is fine
    saved = json.loads((state / "versions.json").read_text())
    assert saved["f32"]["version"] == 2


def test_same_version_different_content_refused(
    tmp_path: Path, keyset: KeySet, state: Path
) -> None:
    from .conftest import make_bundle_bytes

    a, b = (tmp_path / "a.edgepkg", tmp_path / "b.edgepkg")
    model = models.digits_cnn()
    for path, quantize in ((a, "none"), (b, "dynamic")):
        package_model(model, path, load_profile("x86_64"), PackageOptions(name="same", version=5, quantize=quantize),
                      [keyset.signer], [keyset.device.public])  # fmt: skip
    _load(a, keyset, state).close()
    with pytest.raises(RollbackError, match="same v5 differs from the v5") as refused:
        _load(b, keyset, state)
    assert "higher --version" in (refused.value.hint or "")
    assert make_bundle_bytes  # the helper stays importable for other tests


def test_state_not_updated_on_failure(
    bundles: dict[str, Path], keyset: KeySet, state: Path
) -> None:
    with pytest.raises(SignatureError):
        edge_sdk.load(bundles["f32v2"], trust=keyset.trust(keyset.signer2), device_key=keyset.device,
                      state_dir=state)  # fmt: skip
    assert not (state / "versions.json").exists()


def _concurrent_loader(args: tuple[str, str, str, str, str]) -> str:
    bundle, trust, key, state, _ = args
    try:
        edge_sdk.load(
            bundle, trust=trust, device_key=key, state_dir=state, profile="x86_64"
        ).close()
        return "ok"
    except RollbackError:
        return "rollback"


def test_concurrent_loaders_keep_state_and_log_valid(bundles: dict[str, Path], key_files: dict[str, Path],
                                                     state: Path) -> None:  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    jobs = [(str(bundles["f32" if i % 2 else "f32v2"]), str(key_files["signer.pub"]), str(key_files["device"]),
             str(state), str(i)) for i in range(12)]  # fmt: skip
    with ctx.Pool(4) as pool:
        results = pool.map(_concurrent_loader, jobs)
    assert "ok" in results
    saved = json.loads((state / "versions.json").read_text())
    assert saved["f32"]["version"] == 2  # every v2 load succeeded: a v1 write must never win
    records = verify_log(state / "audit.log").records
    # One record per attempt — plus, for a v1 load that passed its checks while a v2 load was
    # being recorded, the rejection that follows its "ok" when recording v1 is refused.
    late = [r for r in records if r.get("stage") == "recording the accepted version"]
    assert len(records) == 12 + len(late)
    assert results.count("rollback") == sum(r["event"] == "reject" for r in records)


def test_audit_log_records_loads_and_rejections(
    bundles: dict[str, Path], keyset: KeySet, state: Path
) -> None:
    _load(bundles["f32v2"], keyset, state).close()
    with pytest.raises(RollbackError):
        _load(bundles["f32"], keyset, state)
    records = verify_log(state / "audit.log").records
    assert [r["event"] for r in records] == ["load", "reject"]
    assert records[0]["version"] == 2 and records[0]["signers"] == [keyset.signer.key_id]
    assert records[1]["error"] == "rollback" and "older than v2" in records[1]["reason"]


def test_closed_model(bundles: dict[str, Path], keyset: KeySet, state: Path) -> None:
    model = _load(bundles["f32"], keyset, state)
    model.close()
    with pytest.raises(edge_sdk.EdgeSDKError, match="closed"):
        model.predict(np.zeros((1, 8, 8, 1), np.float32))


def test_unknown_backend() -> None:
    with pytest.raises(BackendError, match="unknown backend"):
        discover_backend("onnx")
    with pytest.raises(BackendError, match="tflite_runtime is not installed"):
        discover_backend("tflite_runtime")


def test_device_path_never_imports_tensorflow(bundles: dict[str, Path], key_files: dict[str, Path],
                                              tmp_path: Path) -> None:  # fmt: skip
    code = f"""
import sys, numpy as np, edge_sdk
m = edge_sdk.load({str(bundles["f32"])!r}, trust={str(key_files["signer.pub"])!r},
                  device_key={str(key_files["device"])!r}, state_dir={str(tmp_path)!r}, profile="x86_64")
assert m.predict(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 10)
bad = [name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')]
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)


def test_plaintext_never_touches_disk(
    bundles: dict[str, Path], key_files: dict[str, Path], tmp_path: Path
) -> None:
    """Load and predict in a child whose cwd, HOME and TMPDIR are empty directories we then scan."""
    from edge_sdk.format.verify import open_bundle
    from edge_sdk.keys import TrustStore, load_private_key, load_public_key

    plaintext = open_bundle(bundles["int8"], TrustStore.from_keys([load_public_key(key_files["signer.pub"])]),
                            load_private_key(key_files["device"])).model_bytes  # fmt: skip
    watched = {name: tmp_path / name for name in ("cwd", "home", "tmp", "state")}
    for directory in watched.values():
        directory.mkdir()
    code = f"""
import numpy as np, edge_sdk
m = edge_sdk.load({str(bundles["int8"])!r}, trust={str(key_files["signer.pub"])!r},
                  device_key={str(key_files["device"])!r}, state_dir={str(watched["state"])!r}, profile="x86_64")
m.predict(np.zeros((1, 8, 8, 1), np.float32))
"""
    env = {**os.environ, "HOME": str(watched["home"]), "TMPDIR": str(watched["tmp"])}
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=watched["cwd"], env=env, capture_output=True
    )
    written = [p for d in watched.values() for p in d.rglob("*") if p.is_file()]
    assert {p.name for p in written} <= {
        "versions.json",
        "audit.log",
        ".versions.lock",
        ".audit.log.lock",
    }
    needle = plaintext[1000:1064]  # a slice from inside the model (the weights region)
    for path in written:
        assert needle not in path.read_bytes(), f"model bytes found in {path}"


def test_cli_run_and_bench(
    bundles: dict[str, Path], cli: Any, key_files: dict[str, Path], tmp_path: Path
) -> None:
    x, y = _digits()
    np.save(tmp_path / "x.npy", x[:16])
    common = ["--trust", key_files["signer.pub"], "--device-key", key_files["device"], "--state-dir",
              tmp_path / "state", "--profile", "x86_64"]  # fmt: skip
    result: CliResult = cli("run", bundles["int8"], "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz",
                            *common, "--json")  # fmt: skip
    assert result.code == 0, result.err
    argmax = result.json()["results"]["probs"]["argmax"]
    assert float(np.mean(np.array(argmax) == y[:16])) > 0.8
    with np.load(tmp_path / "y.npz") as saved:
        assert saved["probs"].shape == (16, 10)
    bench = cli("bench", bundles["int8"], *common, "--threads", "1,2", "--runs", "5", "--json")
    assert bench.code == 0, bench.err
    configs = bench.json()["configs"]
    assert [c["threads"] for c in configs] == [1, 2] and all(c["p50_ms"] > 0 for c in configs)
    bad = cli("run", bundles["int8"], "--input", tmp_path / "missing.npy", *common)
    assert bad.code == 64 and "does not exist" in bad.err
    doctor = cli("doctor", "--profile", "x86_64", "--state-dir", tmp_path / "state", "--json")
    assert doctor.code == 0 and {c["name"] for c in doctor.json()["checks"]} >= {
        "runtime",
        "crypto",
        "numpy",
    }


def test_rollback_is_refused_before_any_decryption(
    bundles: dict[str, Path], keyset: KeySet, state: Path
) -> None:
    """The version counter is checked before the content key is unwrapped (docs/FORMAT.md order)."""
    _load(bundles["f32v2"], keyset, state).close()
    with pytest.raises(RollbackError):
        edge_sdk.load(bundles["f32"], trust=keyset.trust(), device_key=keyset.device2, state_dir=state,
                      profile="x86_64")  # fmt: skip
    record = verify_log(state / "audit.log").records[-1]
    assert record["event"] == "reject" and record["name"] == "f32" and record["version"] == 1


def test_backend_too_old_for_the_model_is_refused_before_decryption(
    tmp_path: Path, keyset: KeySet
) -> None:
    """A dynamic-range model needs FULLY_CONNECTED v12 (TFLite 2.17): tflite-runtime 2.14 is refused."""
    from edge_sdk.device.runtime import Backend, check_backend

    path = tmp_path / "dyn.edgepkg"
    package_model(models.digits_cnn(), path, load_profile("rpi4"), PackageOptions(name="dyn", version=1,
                  quantize="dynamic"), [keyset.signer], [keyset.device.public])  # fmt: skip
    manifest = read_bundle(path).manifest
    assert manifest.reports["compatibility"]["required_release"] == "2.17.0"
    old = Backend("tflite_runtime", "2.14.0", None, None, None)
    with pytest.raises(
        TargetMismatchError,
        match=r"needs TFLite 2.17.0 or newer; this device runs tflite-runtime 2.14.0",
    ):
        check_backend(manifest, old)
    check_backend(manifest, discover_backend())  # ai-edge-litert 2.3 is new enough


def test_corrupt_state_file_is_a_typed_error(
    bundles: dict[str, Path], keyset: KeySet, state: Path
) -> None:
    state.mkdir(parents=True)
    (state / "versions.json").write_text('{"f32": "not an entry"}')
    with pytest.raises(edge_sdk.EdgeSDKError, match="anti-rollback state for 'f32' is corrupt"):
        _load(bundles["f32"], keyset, state)


def test_failed_resize_does_not_poison_the_shape_cache(bundles: dict[str, Path], keyset: KeySet,
                                                       state: Path) -> None:  # fmt: skip
    rng = np.random.default_rng(0)
    a, b = (
        rng.standard_normal((5, 6)).astype(np.float32),
        rng.standard_normal((5, 4)).astype(np.float32),
    )
    with _load(bundles["multi"], keyset, state) as model:
        # Mixed sample counts are refused before the interpreter is touched (a failed resize
        # and its recovery are tested on the 'valid' FCN in test_model_zoo.py); the same
        # mistake twice stays typed, and the model stays usable.
        for _ in range(2):
            with pytest.raises(InferenceInputError, match="same number of samples"):
                model.predict({"sensor_a": a, "sensor_b": b[:3]})
        assert model.predict({"sensor_a": a, "sensor_b": b})["label"].shape == (5, 3)


def test_cli_run_bad_inputs(
    bundles: dict[str, Path], cli: Any, key_files: dict[str, Path], tmp_path: Path
) -> None:
    common = ["--trust", key_files["signer.pub"], "--device-key", key_files["device"], "--state-dir",
              tmp_path / "state", "--profile", "x86_64"]  # fmt: skip
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8, 1), np.float32))
    for name in ("objects.npz", "corrupt.npz"):
        result = cli("run", bundles["f32"], "--input", tmp_path / name, *common)
        assert result.code == 64 and "cannot read" in result.err and "Traceback" not in result.err
    missing_dir = cli(
        "run",
        bundles["f32"],
        "--input",
        tmp_path / "x.npy",
        "-o",
        tmp_path / "no" / "y.npz",
        *common,
    )
    assert missing_dir.code == 64 and "cannot write outputs" in missing_dir.err


# -- found by an outside review with models of shapes outside the zoo -------------------------------


def test_inputs_with_different_sample_counts_are_refused_not_broadcast() -> None:
    """y = zulu + alpha, both (N, 4): a runtime broadcasts one alpha row over two zulu rows and
    returns numbers for neither; Keras refuses. So does predict, whichever way the inputs come."""
    from .tflite_builder import Op, OpCode, Spec, Tensor, build

    spec = Spec(
        opcodes=[OpCode(0)],  # ADD
        tensors=[
            Tensor("zulu", (1, 4), shape_signature=(-1, 4)),
            Tensor("alpha", (1, 4), shape_signature=(-1, 4)),
            Tensor("y", (1, 4), shape_signature=(-1, 4)),
        ],
        ops=[Op(0, (0, 1), (2,))],
        inputs=(0, 1),
        outputs=(2,),
    )
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((1, 4), np.float32)
    with Model(build(spec)) as model:
        for given in ([a, b], {"zulu": a, "alpha": b}, [b, a]):
            with pytest.raises(InferenceInputError, match="same number of samples"):
                model.predict(given)
        np.testing.assert_array_equal(model.predict([a, a + 1]), 2 * a + 1)  # still usable


def test_a_narrowing_float_cast_that_overflows_is_refused() -> None:
    """float32 1e6 into a float16 input would become inf and every output NaN."""
    from edge_sdk.device.runtime import _cast

    with pytest.raises(InferenceInputError, match="largest value is 65504"):
        _cast("'x'", np.array([[1.0, 1e6]], np.float32), np.dtype(np.float16), False)
    with pytest.raises(InferenceInputError, match="integers are not cast into a float input"):
        _cast("'x'", np.array([[70000]], np.int32), np.dtype(np.float16), False)
    fine = _cast("'x'", np.array([[1.5, -6e4, np.nan]], np.float32), np.dtype(np.float16), False)
    assert fine.dtype == np.float16 and fine[0, 1] == np.float16(-6e4)


def test_a_keras_model_returning_a_dict_is_packaged_under_its_keys(
    keyset: KeySet, state: Path, tmp_path: Path
) -> None:
    """Outputs by key, as the model returns them (not the layers' names), each matching Keras."""
    import keras

    keras.utils.set_random_seed(3)
    x = keras.Input((12,), name="sensor")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    model = keras.Model(x, {
        "zeta_score": keras.layers.Dense(1, name="reg_layer")(h),
        "alpha_probs": keras.layers.Dense(3, activation="softmax", name="probs_layer")(h),
    })  # fmt: skip
    source = tmp_path / "dict.keras"
    model.save(source)
    out = tmp_path / "dict.edgepkg"
    package_model(source, out, load_profile("x86_64"),
                  PackageOptions(name="dict", version=1, quantize="none"),
                  [keyset.signer], [keyset.device.public])  # fmt: skip
    sample = np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32)
    expected = model(sample, training=False)
    with _load(out, keyset, state) as loaded:
        got = loaded.predict(sample)
        assert sorted(got) == ["alpha_probs", "zeta_score"]
        for key in got:
            np.testing.assert_allclose(got[key], np.asarray(expected[key]), atol=1e-5)


def test_the_flex_refusal_names_ops_not_dtypes() -> None:
    from edge_sdk.host.tflite_converter import flex_error

    text = ("'tf.BitwiseAnd' op is neither a custom op nor a flex op; tf.entry_function "
            "tf.float32 tf.int32 tf.resource; Select TF ops")  # fmt: skip
    message = flex_error("float32", text, None).message
    assert "(tf.BitwiseAnd)" in message
    assert "tf.float32" not in message and "tf.resource" not in message


def test_a_failed_conversion_points_at_odd_tensor_names() -> None:
    from types import SimpleNamespace

    from edge_sdk.errors import ConversionError
    from edge_sdk.host.tflite_converter import run_converter

    class Broken:
        def convert(self) -> bytes:
            raise TypeError("'NoneType' object is not callable")

    source: Any = SimpleNamespace(input_names=("in put:0", "ok"), output_names=("y",))
    with pytest.raises(ConversionError) as caught:
        run_converter(Broken(), "float32", source)
    assert "'NoneType' object is not callable" in caught.value.message
    assert caught.value.hint is not None and "in put:0" in caught.value.hint
    with pytest.raises(ConversionError) as plain:
        run_converter(
            Broken(), "float32", SimpleNamespace(input_names=("ok",), output_names=("y",))
        )
    assert plain.value.hint is None
