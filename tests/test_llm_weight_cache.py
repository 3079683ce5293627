"""The packed weights of an LLM, kept encrypted between starts (edge_sdk.device.weight_cache).

XNNPACK repacks a model's weights for the CPU as LiteRT-LM builds the engine; plain LiteRT-LM
keeps them in plaintext beside the model. ``load_llm`` saves them encrypted in the device's
state directory and decrypts them into sealed memory on later starts. These tests run the real
engine on the fixture model: the tokens must equal plain LiteRT-LM's from every kind of start,
the plaintext packed weights must be nowhere on disk, and no cache that does not open is ever
given to the engine.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

import edge_sdk
from edge_sdk.device.weight_cache import HEADER_SIZE, MAGIC

from .conftest import CliResult, KeySet
from .llm_fixture import engine, greedy_ids

TOKENS = 16


@pytest.fixture(scope="module")
def plain_ids(tiny_llm: Any) -> list[int]:
    eng = engine(tiny_llm.path, tiny_llm.max_num_tokens)
    try:
        return greedy_ids(eng, tiny_llm.prompt, TOKENS)
    finally:
        eng.close()


@pytest.fixture
def bundle(tmp_path: Path, tiny_llm: Any, key_files: dict[str, Path], cli: Any) -> Path:
    out = tmp_path / "tiny.edgepkg"
    result: CliResult = cli("package", tiny_llm.path, "--profile", "x86_64", "--name",
                                   "tiny", "--version", "3", "--sign-key", key_files["signer"],
                                   "--recipient", key_files["device.pub"], "-o", out)  # fmt: skip
    assert result.code == 0, result.err
    return out


def _open(bundle: Path, keyset: KeySet, state: Path, **options: Any) -> Any:
    return edge_sdk.load_llm(bundle, trust=keyset.trust(), device_key=keyset.device,
                             state_dir=state, profile="x86_64", **options)  # fmt: skip


def _ids(model: Any, prompt: str) -> list[int]:
    ids: list[int] = model.tokenize(model.generate(prompt, max_tokens=TOKENS))
    return ids


def _cache_file(state: Path) -> Path:
    (found,) = (state / "weight-cache").glob("*.wcache")
    return found


def _files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


def test_the_packed_weights_are_saved_encrypted_and_the_next_start_uses_them(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int]
) -> None:
    state = tmp_path / "state"
    with _open(bundle, keyset, state) as first:
        assert first.weight_cache.startswith("memfd (packed this start; saved encrypted")
        assert first.weight_cache_problem is None
        assert _ids(first, tiny_llm.prompt) == plain_ids
    saved = _cache_file(state)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "weight-cache").stat().st_mode) == 0o700
    assert saved.read_bytes()[:16] == MAGIC
    with _open(bundle, keyset, state) as second:
        assert second.weight_cache.startswith("encrypted on disk")
        assert second.describe()["weight_cache"] == second.weight_cache
        assert _ids(second, tiny_llm.prompt) == plain_ids
        # The packed weights as the engine maps them: none of their bytes is on disk.
        memory = second._cache_memory
        packed = os.pread(memory.fd, memory.size, 0)
    assert len(packed) > 100_000
    windows = [
        packed[at : at + 48] for at in range(len(packed) // 8, len(packed), len(packed) // 8)
    ]
    windows = [w for w in windows if len(set(w)) > 16]  # weights, not padding
    assert len(windows) >= 4
    for path in _files(tmp_path):
        data = path.read_bytes()
        assert not [w for w in windows if w in data], f"packed weights in plaintext: {path}"


def _saved_cache(bundle: Path, keyset: KeySet, state: Path) -> Path:
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
    return _cache_file(state)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("flip a byte of the packed weights", "failed authentication"),
        ("flip a byte of the header's salt", "failed authentication"),
        ("cut the file short", "cut short"),
        ("declare 2**60 bytes", "declares"),
        ("not a cache at all", "not a weight cache"),
        ("another device's cache of the same bundle", "failed authentication"),
        ("a symlink to another file", "cannot open"),
    ],
)
def test_a_cache_that_does_not_open_is_never_used_and_is_rebuilt(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int],
    damage: str, reason: str,
) -> None:  # fmt: skip
    state = tmp_path / "state"
    saved = _saved_cache(bundle, keyset, state)
    if damage == "flip a byte of the packed weights":
        _flip(saved, saved.stat().st_size // 2)
    elif damage == "flip a byte of the header's salt":
        _flip(saved, 20)
    elif damage == "cut the file short":
        os.truncate(saved, saved.stat().st_size - 100)
    elif damage == "declare 2**60 bytes":
        data = bytearray(saved.read_bytes())
        data[32:40] = struct.pack(">Q", 2**60)
        saved.write_bytes(bytes(data))
    elif damage == "not a cache at all":
        saved.write_bytes(b"\0" * (HEADER_SIZE + 10))
    elif damage == "another device's cache of the same bundle":
        # The same content key (the same bundle), another device's secret: a peer of a fleet
        # release cannot forge this device's cache.
        other = _saved_cache(bundle, keyset, tmp_path / "other")
        shutil.copyfile(other, saved)
    elif damage == "a symlink to another file":
        target = tmp_path / "elsewhere.wcache"
        shutil.copyfile(saved, target)
        saved.unlink()
        saved.symlink_to(target)
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache_problem is not None and reason in model.weight_cache_problem
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
        assert _ids(model, tiny_llm.prompt) == plain_ids
    # It was replaced by a good one: the next start uses it.
    assert not _cache_file(state).is_symlink()
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("encrypted on disk"), model.describe()
        assert model.weight_cache_problem is None
        assert _ids(model, tiny_llm.prompt) == plain_ids


def test_a_cache_directory_other_users_can_write_is_not_used(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int]
) -> None:
    state = tmp_path / "state"
    _saved_cache(bundle, keyset, state)
    os.chmod(state / "weight-cache", 0o777)
    with _open(bundle, keyset, state) as model:
        assert "open to other users" in (model.weight_cache_problem or "")
        assert _ids(model, tiny_llm.prompt) == plain_ids


def test_memory_mode_stores_nothing_and_a_bad_mode_is_refused(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int],
    cli: Any, key_files: dict[str, Path],
) -> None:  # fmt: skip
    state = tmp_path / "state"
    with _open(bundle, keyset, state, weight_cache="memory") as model:
        assert model.weight_cache == "memfd (packed this start)"
        assert _ids(model, tiny_llm.prompt) == plain_ids
    assert not (state / "weight-cache").exists()
    with pytest.raises(edge_sdk.errors.UsageError, match="weight_cache must be one of"):
        _open(bundle, keyset, state, weight_cache="disk")
    common = ("--trust", key_files["signer.pub"], "--device-key", key_files["device"],
              "--state-dir", state, "--profile", "x86_64")  # fmt: skip
    bad = cli("run", bundle, "--prompt", "hi", "--weight-cache", "plain", *common)
    assert bad.code == 2 and "--weight-cache must be" in bad.err
    ran = cli("run", bundle, "--prompt", tiny_llm.prompt, "--max-tokens", 4, "--json", *common)
    assert ran.code == 0, ran.err
    assert ran.json()["weight_cache"].startswith("memfd (packed this start; saved encrypted")
    again = cli("run", bundle, "--prompt", tiny_llm.prompt, "--max-tokens", 4, "--json", *common)
    assert again.json()["weight_cache"].startswith("encrypted on disk")
    assert again.json()["text"] == ran.json()["text"]


def test_a_new_version_replaces_the_cache_of_the_old_one(
    bundle: Path, keyset: KeySet, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    saved = _saved_cache(bundle, keyset, state)
    name_id = saved.name.split("-")[0]
    older = saved.with_name(f"{name_id}-{'0' * 32}.wcache")  # another model of the same name
    unrelated = saved.with_name(f"{'1' * 16}-{'0' * 32}.wcache")  # another bundle name
    shutil.copyfile(saved, older)
    shutil.copyfile(saved, unrelated)
    saved.unlink()
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
    assert saved.exists() and not older.exists() and unrelated.exists()
