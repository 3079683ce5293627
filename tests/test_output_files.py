"""Every file edge-sdk writes at a name the user gave replaces what is there, never follows it.

In a shared output directory another user can plant ``out.json -> ~victim/.bashrc`` before the
command runs; a write that follows the link overwrites the victim's file. Each writer below runs
through the real CLI (or the real library call) with such a link planted at its output name:
afterwards the link's target is untouched and the name holds our file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk.errors import KeyFileError
from edge_sdk.files import atomic_write
from edge_sdk.keys import generate_key, save_keypair

from .conftest import REPO, KeySet, make_bundle_bytes
from .provenance_kit import package_tflite

VICTIM = b"the victim's file\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(VICTIM)
    return path


def _plant(at: Path, victim: Path) -> Path:
    at.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(victim, at)
    return at


def _replaced(at: Path, victim: Path) -> None:
    assert victim.read_bytes() == VICTIM, "the write followed the planted symlink"
    assert not at.is_symlink() and at.is_file()


def test_attest_output_replaces_a_planted_symlink(
    cli: Any, keyset: KeySet, victim: Path, tmp_path: Path
) -> None:
    bundle = package_tflite(tmp_path / "m.edgepkg", [keyset.signer]).path
    out = _plant(tmp_path / "shared" / "m.intoto.json", victim)
    result = cli("attest", bundle, "-o", out)
    assert result.code == 0, result.err
    _replaced(out, victim)
    assert out.read_bytes().startswith(b"{")


def test_run_output_replaces_a_planted_symlink(
    cli: Any, keyset: KeySet, key_files: dict[str, Path], victim: Path, tmp_path: Path
) -> None:
    path = tmp_path / "b.edgepkg"
    path.write_bytes(
        make_bundle_bytes(keyset, model=(REPO / "tests/vectors/model.tflite").read_bytes())
    )
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    common = ["--trust", key_files["signer.pub"], "--device-key", key_files["device"], "--input",
              tmp_path / "x.npy", "--state-dir", tmp_path / "s"]  # fmt: skip
    for name in ("y.npz", "y"):  # numpy's naming: a name without .npz gets it appended
        out = _plant(tmp_path / "shared" / "y.npz", victim)
        result = cli("run", path, *common, "-o", tmp_path / "shared" / name)
        assert result.code == 0, result.err
        _replaced(out, victim)
        assert list(np.load(out)) and f"saved to {out}" in result.out
        out.unlink()


def test_init_replaces_planted_project_files(cli: Any, victim: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    planted = [_plant(project / n, victim) for n in ("edge-sdk.toml", "publisher.pub")]
    result = cli("init", project, "--key-dir", tmp_path / "keys", "--force")
    assert result.code == 0, result.err
    for path in planted:
        _replaced(path, victim)


def test_key_files_never_follow_a_planted_symlink(victim: Path, tmp_path: Path) -> None:
    key = generate_key("device")
    planted = _plant(tmp_path / "out" / "board.key", victim)
    with pytest.raises(KeyFileError, match="already exists"):
        save_keypair(key, tmp_path / "out" / "board")
    assert victim.read_bytes() == VICTIM and planted.is_symlink()
    save_keypair(key, tmp_path / "out" / "board", overwrite=True)  # --force: replace the link
    _replaced(planted, victim)
    assert planted.stat().st_mode & 0o777 == 0o600


def test_exclusive_write_refuses_an_existing_name(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a", b"one", replace=False)
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "a", b"two", replace=False)
    assert (tmp_path / "a").read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temp file left behind
