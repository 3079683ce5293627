"""The model zoo on a device install: batch 1, N and 0 on this runtime, against Keras's numbers.

The bundles, inputs and Keras outputs come from the fixtures (``tools/make_device_fixtures.py``,
``tools/model_zoo.py``); nothing here imports TensorFlow. On tflite-runtime 2.14 this is where a
fixed-batch model once crashed the process when its batch was resized, and an empty batch broke
the next run of a dynamic-range model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import InferenceInputError

if TYPE_CHECKING:
    from edge_sdk.device.runtime import Backend, Model

    from .conftest import BundleLoader, DeviceFixtures, Report, ZooFixture

# Float32 bundles against Keras, relative to each output's scale (measured: under 6e-7 on
# x86_64 for both runtimes); dynamic-range quantization may round differently per CPU.
TOLERANCE = {"float32": 1e-5, "dynamic": 1e-3}
ZOO_KEYS = (
    "custom-layer", "detector", "fixed-batch-cnn", "folding-head", "mixed-dtypes",
    "mobilenetv2-backbone", "multi-io", "token-gru", "unrolled-lstm", "valid-fcn",
)  # fmt: skip


def _case(device_fixtures: DeviceFixtures, backend: Backend, key: str) -> ZooFixture:
    found = {case.key: case for case in device_fixtures.zoo(backend.package)}
    if key not in found:
        pytest.skip(f"no model-zoo bundle {key} for {backend.package} in these fixtures")
    return found[key]


def _predict(model: Model, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = model.predict(x if len(x) > 1 else next(iter(x.values())))
    return out if isinstance(out, dict) else {model.outputs[0].name: out}


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_model_zoo_batches(
    key: str,
    device_fixtures: DeviceFixtures,
    backend: Backend,
    load_bundle: BundleLoader,
    report: Report,
) -> None:
    case = _case(device_fixtures, backend, key)
    n = len(next(iter(case.inputs.values())))
    worst = 0.0
    with load_bundle(case.path, case.profile) as model:
        for size in (1, n, 0, 2):  # 2 after 0: the interpreter is still usable
            got = _predict(model, {k: v[:size] for k, v in case.inputs.items()})
            assert list(got) == list(case.keras)
            for name, value in got.items():
                expected = case.keras[name][:size]
                assert value.shape == expected.shape, (name, size)
                assert value.dtype == np.float32
                if size:
                    scale = float(np.max(np.abs(case.keras[name]))) or 1.0
                    error = float(np.max(np.abs(value - expected))) / scale
                    worst = max(worst, error)
                    assert error <= TOLERANCE[case.mode], (name, size, error)
    report.record(event="zoo", case=key, mode=case.mode, batch=n, max_relative_error_vs_keras=worst)


def test_interpreter_interface(
    device_fixtures: DeviceFixtures, backend: Backend, load_bundle: BundleLoader
) -> None:
    """LiteRT-style code on edge_sdk.Interpreter; the resizes that crash or fold are refused."""
    case = _case(device_fixtures, backend, "detector")
    target, _ = load_bundle.target(case.profile)
    arguments: dict[str, Any] = {"device_key": device_fixtures.device_key,
                                 "state_dir": load_bundle.state_dir, **target}  # fmt: skip
    with edge_sdk.Interpreter(
        case.path, trust=device_fixtures.trust, num_threads=1, **arguments
    ) as interpreter:
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        with pytest.raises(InferenceInputError, match="dimension 0 is fixed at 1"):
            interpreter.resize_tensor_input(detail["index"], [4, 32, 32, 3])
        with pytest.raises(InferenceInputError, match="cannot run zero samples"):
            interpreter.resize_tensor_input(detail["index"], [0, 32, 32, 3])
        outputs = {}
        for i in range(2):
            interpreter.set_tensor(detail["index"], case.inputs["image"][i : i + 1])
            interpreter.invoke()
            for out in interpreter.get_output_details():
                outputs.setdefault(out["shape"].tolist()[-1], []).append(
                    interpreter.get_tensor(out["index"])
                )
    boxes = np.concatenate(outputs[16])
    expected = case.keras["boxes"][:2]
    assert boxes.shape == expected.shape
    assert float(np.max(np.abs(boxes - expected))) <= 1e-5 * (float(np.max(np.abs(expected))) or 1)
