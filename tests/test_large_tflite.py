"""A .tflite past 2 GiB, end to end as a user runs it: package, deploy, load from sealed memory.

The model is the converter's own layout for big models (weights after the FlatBuffer, at u64
offsets), with the weights moved past 2³¹ (tests/large_tflite.py says how and why), so every
size, offset and chunk count on the way is past what 32 bits hold. Stored uncompressed (as a real
model's random-looking weights would be), the bundle is 2 GiB of ciphertext that deploy copies
and load decrypts; the answers are checked against Keras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.device import runtime
from edge_sdk.errors import CompatibilityError
from edge_sdk.format.compat import read_tflite

from .conftest import KeySet
from .large_tflite import dense_model, external_buffers, relocate_buffers

GAP = 2**31 + 64 * 1024  # the weights start past 2 GiB


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    from .large_tflite import convert_with_buffer_offsets

    keras_model = dense_model()
    data = convert_with_buffer_offsets(keras_model)
    path = tmp_path_factory.mktemp("large") / "big.tflite"
    size = relocate_buffers(data, path, GAP)
    assert size == path.stat().st_size > 2**31
    x = np.random.default_rng(7).normal(size=(3, 256)).astype(np.float32)
    return path, x, np.asarray(keras_model(x))


def test_a_tflite_past_2_gib_packages_deploys_and_predicts_from_sealed_memory(
    big_model: tuple[Path, np.ndarray, np.ndarray], cli: Any, key_files: dict[str, Path],
    keyset: KeySet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    path, x, expected = big_model
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    assert all(offset > 2**31 for _, offset, _ in external_buffers(head))

    bundle = tmp_path / "big.edgepkg"
    result = cli("package", path, "--profile", "x86_64", "--name", "big", "--version", "1",
                 "--compress", "0", "--sign-key", key_files["signer"],
                 "--recipient", key_files["device.pub"], "-o", bundle)  # fmt: skip
    assert result.code == 0, result.err
    assert bundle.stat().st_size > path.stat().st_size  # stored as it is: ciphertext + tags
    board = tmp_path / "board"
    board.mkdir()
    result = cli("deploy", bundle, "--target", board, "--trust", key_files["signer.pub"])
    assert result.code == 0, result.err
    installed = board / "big" / "current"

    with edge_sdk.load(installed, trust=keyset.trust(), device_key=keyset.device,
                       state_dir=tmp_path / "state", profile="x86_64") as model:  # fmt: skip
        assert model.memory == "memfd (sealed)"
        assert model.manifest is not None and model.manifest.model.size == path.stat().st_size
        maps = Path("/proc/self/maps").read_text()
        assert any("/memfd:edge-sdk-model" in line and " r--s " in line
                   for line in maps.splitlines())  # fmt: skip
        got = model.predict(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert np.abs(got).max() > 0.1  # answers that the weights decide

    # Where the kernel has no sealed memory, the bytes path gives the same answers.
    monkeypatch.setattr(runtime, "unavailable_reason", lambda: "no memfd here (test)")
    with edge_sdk.load(installed, trust=keyset.trust(), device_key=keyset.device,
                       state_dir=tmp_path / "state", profile="x86_64") as model:  # fmt: skip
        assert model.memory == "bytes"
        np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5, atol=1e-5)


def test_the_reader_finds_weights_past_2_gib_and_refuses_a_buffer_past_the_end(
    big_model: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    path, _, _ = big_model
    data = path.read_bytes()
    info = read_tflite(data)
    assert info.weight_dtypes == {"float32": 6}
    assert [t.shape for t in info.inputs] == [(-1, 256)]
    with pytest.raises(edge_sdk.errors.ModelInputError, match="malformed TFLite model"):
        read_tflite(memoryview(data)[: len(data) - 1024])  # the last buffer runs past the end


def test_a_model_over_the_profile_limit_is_refused_before_it_is_read(
    big_model: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path, keyset: KeySet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from edge_sdk.host.package_options import PackageOptions
    from edge_sdk.host.packaging import package_model
    from edge_sdk.profiles import load_profile

    path, _, _ = big_model
    read: list[Path] = []
    real = Path.read_bytes

    def watched(self: Path) -> bytes:
        read.append(self)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", watched)
    with pytest.raises(CompatibilityError, match=r"over rpi5's limit of 536870912") as refused:
        package_model(path, tmp_path / "out.edgepkg", load_profile("rpi5"),
                      PackageOptions(name="big", version=1), [keyset.signer],
                      [keyset.device.public])  # fmt: skip
    assert "max_model_bytes" in (refused.value.hint or "")
    assert path not in read


def _wrapping(offset: int, size: int, n: int = 1024, data: bytes = b"") -> bytes:
    """ADD(x, c) whose constant ``c`` lies at ``offset``: past 2^64 - size, offset + size wraps."""
    from .tflite_builder import Buffer, Op, OpCode, Spec, Tensor, build

    spec = Spec(opcodes=[OpCode(0)], ops=[Op(0, (0, 1), (2,))], inputs=(0,), outputs=(2,),
                tensors=[Tensor("x", (n,)), Tensor("c", (n,), buffer=1), Tensor("y", (n,))],
                buffers=[Buffer(), Buffer(data=data, offset=offset, size=size)])  # fmt: skip
    return build(spec) + bytes(64)


@pytest.mark.parametrize(
    ("offset", "size"),
    [(2**64 - 4096, 4096), (2**64 - 2**44, 2**44 + 16), (2**63, 4096), (64, 2**63)],
    ids=["reads-before-the-model", "wraps-to-a-crash", "past-the-end", "enormous"],
)
def test_a_buffer_offset_that_wraps_never_reaches_litert(
    offset: int, size: int, keyset: KeySet, tmp_path: Path
) -> None:
    """LiteRT's own bounds check overflows on offset + size past 2^64: it read the 4 KiB before
    the model (heap strings came out of predict) or died with SIGSEGV. The strict reader refuses
    such a file before any interpreter is built — from a signed bundle and from bytes alike —
    and the next genuine load works."""
    from edge_sdk.device.runtime import Model
    from edge_sdk.errors import ModelInputError

    from .conftest import make_bundle_bytes

    hostile = _wrapping(offset, size)
    with pytest.raises(ModelInputError, match="malformed TFLite model"):
        Model(hostile)
    path = tmp_path / "wrap.edgepkg"
    path.write_bytes(make_bundle_bytes(keyset, hostile))
    with pytest.raises(ModelInputError, match="malformed TFLite model"):
        edge_sdk.load(path, trust=keyset.trust(), device_key=keyset.device,
                      state_dir=tmp_path / "state", allow_target_mismatch=True)  # fmt: skip
    genuine = _wrapping(0, 0, data=bytes(4 * 1024))  # the same graph, its constant (0) inline
    path.write_bytes(make_bundle_bytes(keyset, genuine, version=2))
    with edge_sdk.load(path, trust=keyset.trust(), device_key=keyset.device,
                       state_dir=tmp_path / "state", allow_target_mismatch=True) as model:  # fmt: skip
        x = np.arange(1024, dtype=np.float32)
        assert np.array_equal(model.predict(x), x)


def test_many_metadata_names_on_one_buffer_copy_it_once() -> None:
    """A small file naming one large buffer under many metadata names cost names x size bytes
    (8 MiB file, 300 names: 2.4 GB); each buffer is copied once now."""
    from .tflite_builder import Buffer, Op, OpCode, Spec, Tensor, build

    spec = Spec(opcodes=[OpCode(0)], ops=[Op(0, (0, 1), (2,))], inputs=(0,), outputs=(2,),
                tensors=[Tensor("x", (4,)), Tensor("c", (4,)), Tensor("y", (4,))],
                buffers=[Buffer(), Buffer(data=bytes(1 << 20))],
                metadata={f"m{i}": 1 for i in range(300)})  # fmt: skip
    info = read_tflite(build(spec))
    assert len(info.metadata) == 300
    assert len({id(value) for value in info.metadata.values()}) == 1


@pytest.mark.parametrize("written", ["input", "output"])
def test_a_constant_the_caller_or_an_operator_writes_is_refused(written: str) -> None:
    """An input (or an operator's output) placed on a buffer that holds model bytes: LiteRT
    wrote the caller's input into the verified model itself — shared by clones, weights for the
    next request — or crashed on the read-only mapping of sealed memory (hostile review)."""
    from edge_sdk.device.runtime import Model
    from edge_sdk.errors import ModelInputError

    from .tflite_builder import Buffer, Op, OpCode, Spec, Tensor, build

    weights = Buffer(data=bytes(16))
    on = {"input": 0, "output": 2}[written]
    tensors = [Tensor(name, (4,), buffer=1 if i == on else (2 if i == 1 else 0))
               for i, name in enumerate(("x", "c", "y"))]  # fmt: skip
    spec = Spec(opcodes=[OpCode(0)], ops=[Op(0, (0, 1), (2,))], inputs=(0,), outputs=(2,),
                tensors=tensors, buffers=[Buffer(), weights, Buffer(data=bytes(16))])  # fmt: skip
    data = build(spec)
    with pytest.raises(ModelInputError, match="is a constant"):
        read_tflite(data)
    with pytest.raises(ModelInputError, match="is a constant"):
        Model(data)
