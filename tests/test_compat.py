"""edge_sdk.format.compat against real models, real converters and real runtimes.

The models come from real TensorFlow conversions (float32, dynamic-range, float16, full int8) of a
tiny Keras model, plus hand-built flatbuffers for the shapes a converter never writes. The
verdicts are checked against what real interpreters do: the ai-edge-litert in this venv and
tflite-runtime 2.14.0 in a venv of its own (tests/runtimes.py).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sdk.errors import CompatibilityError, ModelInputError
from edge_sdk.format import compat
from edge_sdk.format.compat import (
    CUSTOM_OP,
    FLEX_OP,
    MODEL_METADATA,
    NOT_REGISTERED,
    TOO_NEW,
    UNKNOWN_OP,
    UNKNOWN_VERSION,
    UNRELEASED,
    check_compatibility,
    read_tflite,
    runtime_support,
    tflite_release,
)
from edge_sdk.format.op_versions import BUILTIN_OPERATORS, MIN_RUNTIME

from . import runtimes
from .tflite_builder import CUSTOM, Buffer, Op, OpCode, Spec, Tensor, build, op_only_model

CODES = {name: code for code, name in BUILTIN_OPERATORS.items()}
VARIANTS = ("float32", "dynamic", "float16", "int8", "dynamic_per_tensor")
# The attribute of tf.lite.TFLiteConverter (TF 2.21, tensorflow/lite/python/lite.py) that makes
# dynamic-range quantization of Dense layers per-tensor again.
DENSE_PER_TENSOR = "_experimental_disable_per_channel_quantization_for_dense_layers"


# -- real models, converted once per session -------------------------------------------------------


@dataclass(frozen=True)
class Converted:
    models: dict[str, bytes]
    sample: np.ndarray[Any, np.dtype[np.float32]]


@pytest.fixture(scope="session")
def converted() -> Converted:
    """A tiny CNN (Conv2D, DepthwiseConv2D, Dense x2) converted five ways with real TensorFlow."""
    tf = pytest.importorskip("tensorflow")
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((8, 8, 1), name="image")
    x = tf.keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = tf.keras.layers.DepthwiseConv2D(3)(x)
    x = tf.keras.layers.Flatten()(x)
    # 64 x 16 = 1024 weights: the smallest Dense that dynamic-range quantization still quantizes.
    x = tf.keras.layers.Dense(16, activation="relu")(x)
    outputs = tf.keras.layers.Dense(3, activation="softmax", name="probs")(x)
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    sample = rng.random((4, 8, 8, 1), dtype=np.float32)

    def convert(variant: str) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if variant != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if variant == "int8":
            converter.representative_dataset = lambda: ([s[None]] for s in sample)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if variant == "dynamic_per_tensor":
            assert hasattr(converter, DENSE_PER_TENSOR)  # fail loudly if TF renames it
            setattr(converter, DENSE_PER_TENSOR, True)
        return bytes(converter.convert())

    return Converted({variant: convert(variant) for variant in VARIANTS}, sample)


@pytest.fixture(scope="session")
def tflite214() -> str:
    try:
        return runtimes.tflite214_python()
    except runtimes.RuntimeUnavailable as exc:
        pytest.skip(f"tflite-runtime 2.14 unavailable: {exc}")


def _litert_details(model: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    return interpreter.get_input_details(), interpreter.get_output_details()


# -- what read_tflite reports for real conversions -------------------------------------------------


@pytest.mark.host
@pytest.mark.parametrize("variant", VARIANTS)
def test_io_specs_match_the_litert_interpreter(converted: Converted, variant: str) -> None:
    model = converted.models[variant]
    info = read_tflite(model)
    for specs, details in zip((info.inputs, info.outputs), _litert_details(model), strict=True):
        assert len(specs) == len(details)
        for spec, detail in zip(specs, details, strict=True):
            assert spec.name == detail["name"]
            assert spec.shape == tuple(int(d) for d in detail["shape_signature"])
            assert spec.dtype == np.dtype(detail["dtype"]).name
            scale, zero_point = detail["quantization"]
            if scale == 0.0:
                assert (spec.scale, spec.zero_point) == (None, None)
            else:
                assert (spec.scale, spec.zero_point) == (scale, zero_point)
    # Keras leaves the batch dimension dynamic; the signature must keep it so.
    assert info.inputs[0].shape == (-1, 8, 8, 1)
    assert info.outputs[0].shape == (-1, 3)


@pytest.mark.host
def test_ops_versions_and_weights_of_each_variant(converted: Converted) -> None:
    infos = {variant: read_tflite(model) for variant, model in converted.models.items()}
    for info in infos.values():
        assert info.schema_version == 3
        assert info.subgraphs == 1
        assert info.sparse_tensors == 0
        assert info.custom_ops == ()
        names = {op.name for op in info.ops}
        assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= names
        assert next(op for op in info.ops if op.name == "FULLY_CONNECTED").count == 2

    assert infos["float32"].op_version("FULLY_CONNECTED") == 1
    assert "int8" not in infos["float32"].weight_dtypes
    # TF 2.21 quantizes Dense weights per channel: FULLY_CONNECTED v12 (dated 2.17.0).
    assert infos["dynamic"].op_version("FULLY_CONNECTED") == 12
    assert infos["dynamic"].weight_dtypes["int8"] == 1  # the one Dense with >= 1024 weights
    # Per-tensor dynamic-range Dense is the older hybrid FULLY_CONNECTED v9 (dated 2.3.0).
    assert infos["dynamic_per_tensor"].op_version("FULLY_CONNECTED") == 9
    assert infos["float16"].op_version("DEQUANTIZE") is not None
    assert set(infos["float16"].weight_dtypes) == {"float16", "int32"}
    int8 = infos["int8"]
    assert int8.inputs[0].dtype == int8.outputs[0].dtype == "int8"
    assert int8.inputs[0].scale is not None
    assert "float32" not in int8.weight_dtypes
    assert int8.weight_dtypes["int8"] == 4


@pytest.mark.host
@pytest.mark.parametrize("variant", VARIANTS)
def test_table_agrees_with_the_converters_min_runtime_version(
    converted: Converted, variant: str
) -> None:
    """TF writes min_runtime_version from its own copy of runtime_version.cc: ours must agree."""
    info = read_tflite(converted.models[variant])
    assert info.min_runtime_version is not None
    report = check_compatibility(info, "tensorflow", "2.21.0")
    assert report.ok, report.summary()
    assert report.required_release == info.min_runtime_version


# -- the verdict against real runtimes -------------------------------------------------------------


@pytest.mark.host
@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_verdict_matches_real_tflite_runtime_214(
    converted: Converted, tflite214: str, variant: str
) -> None:
    model = converted.models[variant]
    report = check_compatibility(read_tflite(model), "tflite-runtime", "2.14.0")
    loaded, error = runtimes.load_with(tflite214, "tflite_runtime", model)
    assert report.ok == loaded, f"{report.summary()}\nruntime said: {error}"
    if variant == "dynamic":
        assert not loaded
        assert "FULLY_CONNECTED' version '12'" in error
        assert [(p.op, p.version, p.needs, p.kind) for p in report.problems] == [
            ("FULLY_CONNECTED", 12, "2.17.0", TOO_NEW)
        ]
    else:
        assert loaded, error


@pytest.mark.host
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_loads_and_passes_on_this_ai_edge_litert(
    converted: Converted, variant: str
) -> None:
    model = converted.models[variant]
    report = check_compatibility(
        read_tflite(model), "ai-edge-litert", installed_version("ai-edge-litert")
    )
    loaded, error = runtimes.load_with(runtimes.current_python(), "ai_edge_litert", model)
    assert loaded, error
    assert report.ok, report.summary()


@pytest.mark.host
def test_per_tensor_dense_is_the_fix_for_old_runtimes(converted: Converted) -> None:
    report = check_compatibility(read_tflite(converted.models["dynamic"]), "tflite-runtime", "2.14")
    with pytest.raises(
        CompatibilityError, match=r"FULLY_CONNECTED v12 needs TFLite 2\.17\.0"
    ) as caught:
        report.raise_for_problems()
    assert "tflite-runtime 2.14" in caught.value.message
    assert DENSE_PER_TENSOR in (caught.value.hint or "")
    fixed = check_compatibility(
        read_tflite(converted.models["dynamic_per_tensor"]), "tflite-runtime", "2.14"
    )
    fixed.raise_for_problems()  # no exception
    assert fixed.required_release == "2.3.0"


def _table_probe(python: str, module: str) -> tuple[set[tuple[str, int]], list[tuple[str, int]]]:
    pairs = [
        (name, number + 1)
        for name, dates in MIN_RUNTIME.items()
        for number, date in enumerate(dates)
        if date is not None
    ]
    built = runtimes.builds_with(python, module, [op_only_model(CODES[n], v) for n, v in pairs])
    return {pair for pair, ok in zip(pairs, built, strict=True) if ok}, pairs


def _table_says(
    runtime: str, runtime_version: str, pairs: list[tuple[str, int]]
) -> set[tuple[str, int]]:
    runs = set()
    for name, number in pairs:
        info = read_tflite(op_only_model(CODES[name], number))
        if check_compatibility(info, runtime, runtime_version).ok:
            runs.add((name, number))
    return runs


@pytest.mark.slow
def test_whole_table_matches_tflite_runtime_214_registrations(tflite214: str) -> None:
    """Every dated op version, one model each: the table must predict exactly what 2.14 builds."""
    registered, pairs = _table_probe(tflite214, "tflite_runtime")
    predicted = _table_says("tflite-runtime", "2.14.0", pairs)
    assert predicted == registered, {
        "table says yes, runtime no": sorted(predicted - registered),
        "table says no, runtime yes": sorted(registered - predicted),
    }
    assert ("TRANSPOSE", 7) not in registered  # dated 2.14.4, later than 2.14.0
    assert ("FULLY_CONNECTED", 11) not in registered
    assert ("FULLY_CONNECTED", 10) in registered


@pytest.mark.slow
def test_whole_table_matches_this_ai_edge_litert_registrations() -> None:
    registered, pairs = _table_probe(runtimes.current_python(), "ai_edge_litert")
    predicted = _table_says("ai-edge-litert", installed_version("ai-edge-litert"), pairs)
    assert predicted == registered, {
        "table says yes, runtime no": sorted(predicted - registered),
        "table says no, runtime yes": sorted(registered - predicted),
    }


# -- hand-built models: what converters rarely write -----------------------------------------------


def _rich_spec() -> Spec:
    """One of everything: legacy and extended op codes, a custom op, quantized I/O, a sparse
    weight, metadata (one kept past the end of the flatbuffer), a second subgraph."""
    trailer = b"EXTERNAL-METADATA"
    return Spec(
        opcodes=[
            OpCode(CODES["FULLY_CONNECTED"], 9, legacy=True),
            OpCode(CODES["GELU"], 2),  # code 150 > 127: only the int32 field can hold it
            OpCode(CUSTOM, 1, "MyPostProcess"),
            OpCode(CODES["FULLY_CONNECTED"], 9),  # duplicate entry of the first
        ],
        tensors=[
            Tensor("in", (1, 4), "int8", shape_signature=(-1, 4), scale=[0.5], zero_point=[-3]),
            Tensor("w", (4, 4), "int8", buffer=1, scale=[0.1, 0.2, 0.3, 0.4], zero_point=[0] * 4),
            Tensor("hidden", (1, 4), "float32"),
            Tensor("sparse_w", (4, 4), "float32", buffer=2, sparse=True),
            Tensor("out", (1, 4), "uint8", scale=[0.25], zero_point=[128]),
        ],
        ops=[Op(0, (0, 1), (2,)), Op(1, (2,), (2,)), Op(2, (2, 3), (4,)), Op(3, (2, 1), (2,))],
        inputs=(0,),
        outputs=(4,),
        buffers=[
            Buffer(),
            Buffer(bytes(16)),
            Buffer(bytes(64)),
            Buffer(b"2.3.0" + bytes(11)),
            Buffer(b"labels"),
            Buffer(offset=1 << 40, size=len(trailer)),  # patched below once the size is known
        ],
        metadata={"min_runtime_version": 3, "labels": 4, "external": 5},
        extra_subgraphs=1,
        trailer=trailer,
    )


def _rich_model() -> bytes:
    spec = _rich_spec()
    probe = build(spec)  # the external buffer's offset is the flatbuffer's own size
    spec.buffers[5] = Buffer(offset=len(probe) - len(spec.trailer), size=len(spec.trailer))
    model = build(spec)
    assert len(model) == len(probe)  # the offset is a fixed-width field: the layout is unchanged
    return model


RICH = _rich_model()


def test_reads_every_field_of_a_hand_built_model() -> None:
    info = read_tflite(RICH)
    assert [(op.name, op.version, op.count, op.custom) for op in info.ops] == [
        ("FULLY_CONNECTED", 9, 2, False),
        ("GELU", 2, 1, False),
        ("MyPostProcess", 1, 1, True),
    ]
    assert info.custom_ops == ("MyPostProcess",)
    (inp,) = info.inputs
    assert (inp.name, inp.shape, inp.dtype, inp.scale, inp.zero_point) == (
        "in",
        (-1, 4),
        "int8",
        0.5,
        -3,
    )
    (out,) = info.outputs
    assert (out.shape, out.dtype, out.scale, out.zero_point) == ((1, 4), "uint8", 0.25, 128)
    assert info.sparse_tensors == 1
    assert dict(info.weight_dtypes) == {"float32": 1, "int8": 1}
    assert info.min_runtime_version == "2.3.0"
    assert info.metadata["labels"] == b"labels"
    assert info.metadata["external"] == b"EXTERNAL-METADATA"
    assert info.subgraphs == 2
    assert info.description == "edge-sdk test model"
    json.dumps(info.to_dict())  # JSON-ready


def test_custom_ops_are_problems_unless_allowed() -> None:
    info = read_tflite(RICH)
    report = check_compatibility(info, "ai-edge-litert", "2.3.0")
    assert [(p.op, p.kind) for p in report.problems] == [("MyPostProcess", CUSTOM_OP)]
    assert check_compatibility(
        info, "ai-edge-litert", "2.3.0", allow_custom_ops=["MyPostProcess"]
    ).ok
    flex = read_tflite(build(Spec(opcodes=[OpCode(CUSTOM, 1, "FlexRFFT")])))
    (problem,) = check_compatibility(flex, "tensorflow", "2.21").problems
    assert problem.kind == FLEX_OP
    assert "Flex" in problem.describe()


def test_unknown_ops_and_versions_are_problems_not_silently_ok() -> None:
    spec = Spec(
        opcodes=[
            OpCode(CODES["FULLY_CONNECTED"], 99),
            OpCode(500, 1),  # a code from a schema newer than ours
            OpCode(CODES["BROADCAST_TO"], 1),  # rolled back upstream: no date at all
        ]
    )
    report = check_compatibility(read_tflite(build(spec)), "ai-edge-litert", "2.3.0")
    assert sorted((p.op, p.version, p.kind) for p in report.problems) == [
        ("BROADCAST_TO", 1, UNKNOWN_VERSION),
        ("BUILTIN_500", 1, UNKNOWN_OP),
        ("FULLY_CONNECTED", 99, UNKNOWN_VERSION),
    ]
    assert not report.ok


def test_an_unused_operator_code_still_counts() -> None:
    """The interpreter resolves every listed code at build time, used by a node or not."""
    info = read_tflite(op_only_model(CODES["FULLY_CONNECTED"], 12))
    assert info.ops[0].count == 0
    assert not check_compatibility(info, "tflite-runtime", "2.14.0").ok


def test_unreleased_table_entry_needs_more_than_any_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Upstream marks an op version dated for a release not yet cut with "".
    monkeypatch.setitem(MIN_RUNTIME, "GELU", ("2.9.0", "2.9.0", ""))
    info = read_tflite(op_only_model(CODES["GELU"], 3))
    (problem,) = check_compatibility(info, "tensorflow", "99.0").problems
    assert (problem.kind, problem.needs) == (UNRELEASED, "unreleased")


def test_op_dated_after_a_release_is_too_new_for_it() -> None:
    info = read_tflite(op_only_model(CODES["TRANSPOSE"], 8))
    (problem,) = check_compatibility(info, "tensorflow", "2.21.0").problems
    assert (problem.kind, problem.needs) == (TOO_NEW, "2.22.0")
    # Dated 2.21.0 on master, but missing from the 2.21.0 release: a measured gap.
    gap = read_tflite(op_only_model(CODES["QUANTIZE"], 5))
    (problem,) = check_compatibility(gap, "tensorflow", "2.21.0").problems
    assert (problem.kind, problem.needs) == (NOT_REGISTERED, "2.21.0")


def test_min_runtime_metadata_beyond_what_the_ops_explain_is_a_problem() -> None:
    spec = Spec(
        opcodes=[OpCode(CODES["ADD"], 1)],
        buffers=[Buffer(), Buffer(b"2.30.0" + bytes(10))],
        metadata={"min_runtime_version": 1},
    )
    report = check_compatibility(read_tflite(build(spec)), "tflite-runtime", "2.14.0")
    assert [(p.op, p.needs, p.kind) for p in report.problems] == [
        ("min_runtime_version", "2.30.0", MODEL_METADATA)
    ]
    assert "2.30.0" in report.summary()


def test_report_serializes_and_reads_like_prose() -> None:
    info = read_tflite(op_only_model(CODES["FULLY_CONNECTED"], 12))
    bad = check_compatibility(info, "tflite_runtime", "2.14.0")
    data = json.loads(json.dumps(bad.to_dict()))
    assert data == {
        "ok": False,
        "runtime": "tflite-runtime",
        "runtime_version": "2.14.0",
        "tflite_release": "2.14.0",
        "required_release": "2.17.0",
        "problems": [{"op": "FULLY_CONNECTED", "version": 12, "needs": "2.17.0", "kind": TOO_NEW}],
    }
    assert bad.summary().startswith("not compatible with tflite-runtime 2.14.0")
    good = check_compatibility(info, "ai-edge-litert", "1.0.1")
    assert good.ok
    assert "compatible with ai-edge-litert 1.0.1" in good.summary()
    good.raise_for_problems()


@pytest.mark.parametrize(
    ("runtime", "runtime_version", "release"),
    [
        ("tflite-runtime", "2.14.0", "2.14.0"),
        ("tflite_runtime", "2.13", "2.13.0"),
        ("tensorflow", "2.21.0", "2.21.0"),
        ("tensorflow-cpu", "2.16.1", "2.16.1"),
        ("ai-edge-litert", "1.0.1", "2.18.0"),
        ("ai-edge-litert", "1.1.2", "2.19.0"),
        ("ai-edge-litert", "1.4.0", "2.19.0"),
        ("ai-edge-litert", "2.0.3", "2.20.0"),
        ("ai-edge-litert", "2.1.0", "2.21.0"),
        ("ai_edge_litert", "2.3.0", "2.23.0"),
        ("ai-edge-litert", "3.0.0", "2.23.0"),  # newer than measured: the newest row
    ],
)
def test_runtime_to_tflite_release(runtime: str, runtime_version: str, release: str) -> None:
    assert tflite_release(runtime, runtime_version) == release


def test_runtime_gaps_come_from_measurements() -> None:
    assert ("TRANSPOSE", 7) in runtime_support("ai-edge-litert", "1.1.2").gaps
    assert ("TRANSPOSE", 7) not in runtime_support("ai-edge-litert", "1.2.0").gaps
    assert ("STABLEHLO_CBRT", 1) in runtime_support("tflite-runtime", "2.14.0").gaps


@pytest.mark.parametrize(
    ("runtime", "runtime_version", "message"),
    [
        ("onnxruntime", "1.20", "unknown runtime"),
        ("tflite-runtime", "banana", "cannot parse"),
        ("ai-edge-litert", "1.0.0", "predates every version"),
        ("tflite-runtime", "1.15.0", "predates 2.0"),
    ],
)
def test_runtimes_it_cannot_judge_raise(runtime: str, runtime_version: str, message: str) -> None:
    with pytest.raises(CompatibilityError, match=message):
        tflite_release(runtime, runtime_version)


# -- malformed input: always ModelInputError -------------------------------------------------------


def _retyped_input(dtype: str) -> bytes:
    spec = _rich_spec()
    spec.tensors[0] = Tensor(
        "in", (1,) * 9 if dtype == "rank9" else (1, 4), "int8" if dtype == "rank9" else dtype
    )
    spec.buffers[5] = Buffer()
    return build(spec)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "only 0 bytes"),
        (b"\x00" * 7, "only 7 bytes"),
        (b"\x10\x00\x00\x00ONNX" + bytes(64), "file identifier is b'ONNX'"),
        (build(Spec(schema_version=2)), "schema version 2"),
        (build(Spec(opcodes=[OpCode(CUSTOM, 1, "")])), "custom operator has no name"),
        (build(Spec(opcodes=[OpCode(CODES["ADD"], 0)])), "version 0 is not positive"),
        (build(Spec(ops=[Op(3)])), "uses operator code 3"),
        (build(Spec(inputs=(5,))), "input 5 is not one of 0 tensors"),
        (build(Spec(tensors=[Tensor("t", (1,), buffer=7)])), "uses buffer 7"),
        (build(Spec(metadata={"m": 9})), "metadata 'm' uses buffer 9"),
        (
            build(Spec(buffers=[Buffer(), Buffer(b"x1.0")], metadata={"min_runtime_version": 1})),
            "not a version",
        ),
        (
            build(Spec(buffers=[Buffer(), Buffer(offset=10**6, size=4)], metadata={"m": 1})),
            "outside the file",
        ),
        (_retyped_input("bfloat16"), "type bfloat16"),
        (_retyped_input("rank9"), "at most 8 dimensions"),
        (RICH[: len(RICH) // 2], "outside the file"),
    ],
)
def test_malformed_models_raise_model_input_error(data: bytes, message: str) -> None:
    with pytest.raises(ModelInputError, match=message):
        read_tflite(data)


def test_no_subgraph_and_wrong_types_are_rejected() -> None:
    assert read_tflite(build(Spec())).subgraphs == 1
    with pytest.raises(ModelInputError, match="no subgraph"):
        read_tflite(build(Spec(main_subgraph=False)))
    with pytest.raises(ModelInputError, match="must be bytes"):
        read_tflite("model.tflite")  # type: ignore[arg-type]
    with pytest.raises(ModelInputError, match="must be bytes"):
        read_tflite(memoryview(bytearray(RICH))[::2])


def test_a_flood_of_tables_is_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_tflite(memoryview(RICH)).subgraphs == 2  # zero-copy input works
    monkeypatch.setattr(compat, "MAX_TABLE_READS", 5)
    with pytest.raises(ModelInputError, match="more than 5 table reads"):
        read_tflite(RICH)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    mutations=st.lists(
        st.tuples(st.integers(0, len(RICH) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    cut=st.one_of(st.none(), st.integers(0, len(RICH))),
)
def test_fuzz_only_model_input_error_escapes(
    mutations: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(RICH)
    for position, value in mutations:
        data[position] = value
    if cut is not None:
        del data[cut:]
    try:
        info = read_tflite(bytes(data))
    except ModelInputError as exc:
        message = exc.message  # a message a person can read, not an empty wrapper
    else:
        # Whatever parsed must be usable downstream without surprises.
        message = json.dumps(
            [info.to_dict(), check_compatibility(info, "ai-edge-litert", "2.3.0").to_dict()]
        )
    assert message


@pytest.mark.host
def test_fuzz_a_real_converted_model(converted: Converted) -> None:
    original = converted.models["dynamic"]
    rng = np.random.default_rng(1234)
    for _ in range(300):
        data = bytearray(original)
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 6))):
            data[position] = int(rng.integers(0, 256))
        with contextlib.suppress(ModelInputError):
            read_tflite(bytes(data))


def test_compat_never_imports_tensorflow_or_a_runtime() -> None:
    code = (
        "import sys\n"
        "from edge_sdk.format.compat import read_tflite, check_compatibility\n"
        f"info = read_tflite({RICH!r})\n"
        "check_compatibility(info, 'tflite-runtime', '2.14.0')\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'ai_edge_litert', 'tflite_runtime')]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_module_exports_are_documented() -> None:
    for name in compat.__all__:
        assert getattr(compat, name).__doc__, name
