"""The deploy layout's directory names are judged on the real directories, however a path is spelled.

``<root>/<name>/current`` and ``<root>/<name>/releases/<v>-<d>.edgepkg`` may only hold a bundle
signed under ``<name>``. A relative spelling (``current``, ``./current``, ``releases/x``,
``../digits/current``) or a path through a symlinked root must be held to the same name as the
absolute one (issue 20, finding 1).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk import errors
from edge_sdk.device.runtime import expected_name_from_path
from edge_sdk.errors import TargetMismatchError
from edge_sdk.fleet.deploy import deploy
from edge_sdk.host.packaging import PackageOptions, package_model
from edge_sdk.profiles import load_profile

from .conftest import REPO, KeySet

MODEL = REPO / "tests" / "vectors" / "model.tflite"


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, keyset: KeySet) -> Path:
    """``<root>/digits`` whose ``current`` is a genuine release signed as ``digits-beta``."""
    base = tmp_path_factory.mktemp("layout")
    beta = base / "beta.edgepkg"
    package_model(MODEL, beta, load_profile("x86_64"), PackageOptions(name="digits-beta", version=1),
                  [keyset.signer], [keyset.device.public])  # fmt: skip
    root = base / "models"
    root.mkdir()
    deploy(beta, str(root))
    # What a user who can write inside the root does: move the other name's release under digits.
    (root / "digits").mkdir()
    (root / "digits-beta").rename(root / "digits" / "sub")
    (root / "digits" / "releases").mkdir()
    release = next((root / "digits" / "sub" / "releases").iterdir())
    release.rename(root / "digits" / "releases" / release.name)
    (root / "digits" / "current").symlink_to(f"releases/{release.name}")
    (base / "alias").symlink_to(root)  # a symlinked root
    (base / "elsewhere").mkdir()
    return root / "digits"


@pytest.fixture
def cwd(planted: Path) -> Iterator[Path]:
    before = Path.cwd()
    os.chdir(planted)
    try:
        yield planted
    finally:
        os.chdir(before)


def _spellings(folder: Path) -> list[str]:
    release = next((folder / "releases").iterdir()).name
    alias = folder.parent.parent / "alias" / "digits"
    return [
        "current",
        "./current",
        f"releases/{release}",
        f"./releases/{release}",
        "../digits/current",
        f"../digits/releases/{release}",
        f"{alias}/current",
        f"{alias}/releases/{release}",
        f"{folder}/current",
    ]


def test_every_spelling_implies_the_directorys_name(cwd: Path) -> None:
    for spelling in _spellings(cwd):
        assert expected_name_from_path(spelling) == "digits", spelling


def test_every_spelling_refuses_a_release_signed_under_another_name(
    cwd: Path, keyset: KeySet, tmp_path: Path
) -> None:
    for spelling in _spellings(cwd):
        with pytest.raises(TargetMismatchError, match="'digits' was expected"):
            edge_sdk.load(spelling, trust=keyset.trust(), device_key=keyset.device,
                          state_dir=tmp_path / "state", profile="x86_64")  # fmt: skip


def test_run_current_from_inside_the_name_directory_is_refused(
    cwd: Path, key_files: dict[str, Path], tmp_path: Path, cli: Any
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    result = cli("run", "current", "--trust", key_files["signer.pub"], "--device-key",
                 key_files["device"], "--input", tmp_path / "x.npy", "--state-dir", tmp_path / "s")  # fmt: skip
    assert result.code == errors.TargetMismatchError.exit_code, result.err
    assert "'digits' was expected" in result.err


def test_a_relative_watch_is_held_to_the_directorys_name(
    cwd: Path, keyset: KeySet, tmp_path: Path
) -> None:
    from edge_sdk.device.watch import ModelWatcher

    with pytest.raises(TargetMismatchError, match="'digits' was expected"):
        ModelWatcher("current", {"trust": keyset.trust(), "device_key": keyset.device,
                                 "state_dir": tmp_path / "state", "profile": "x86_64"})  # fmt: skip
