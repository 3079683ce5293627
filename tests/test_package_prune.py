"""``edge-sdk package --prune``: pruning inside the packaging pipeline, gated against the unpruned
model, recorded in the signed manifest and shown by ``inspect``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import AccuracyGateError, UsageError
from edge_sdk.format.bundle import read_bundle
from edge_sdk.host.packaging import PackageOptions, package_model
from edge_sdk.profiles import load_profile

from . import models
from .conftest import CliResult, KeySet

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("data")
    return {
        "calib": models.digits_npz(tmp, split="train", with_labels=False),
        "train": models.digits_npz(tmp, split="train"),
        "eval": models.digits_npz(tmp, split="test"),
    }


def test_cli_package_prune_auto_and_inspect(
    tmp_path: Path, cli: Any, key_files: dict[str, Path], data: dict[str, Path]
) -> None:
    out = tmp_path / "pruned.edgepkg"
    result: CliResult = cli(
        "package", models.digits_h5(), "--profile", "x86_64", "--sign-key", key_files["signer"],
        "--recipient", key_files["device.pub"], "--name", "digits", "--version", "1",
        "--quantize", "int8", "--calibration", data["calib"], "--eval", data["eval"],
        "--prune", "auto", "--train", data["train"], "--epochs", "4", "-o", out, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    reports = result.json()["reports"]
    pruning = reports["pruning"]
    assert pruning["mode"] == "auto" and pruning["sparsity"] >= 0.5
    # The gate compared the final model with the *unpruned* float model.
    assert reports["accuracy"]["passed"] and reports["accuracy"]["drop_points"] <= 1.0
    manifest = read_bundle(out).manifest
    assert manifest.reports["pruning"] == pruning
    assert manifest.payload.compressed_size < 0.6 * manifest.model.size
    shown = cli("inspect", out)
    assert f"{pruning['sparsity']:.1%} of" in shown.out and "auto, fine-tuned 4 epochs" in shown.out
    assert "zstd:" in shown.out
    assert cli("inspect", out, "--json").json()["sparsity"] == pruning["sparsity"]


def test_the_gate_counts_pruning_loss(
    tmp_path: Path, keyset: KeySet, data: dict[str, Path]
) -> None:
    with pytest.raises(AccuracyGateError, match=r"pruning to 90% \+ int8 quantization drops"):
        package_model(
            models.digits_cnn(), tmp_path / "b.edgepkg", load_profile("x86_64"),
            PackageOptions("digits", 1, quantize="int8", calibration=data["calib"],
                           evaluation=data["eval"], prune=0.9),
            [keyset.signer],
        )  # fmt: skip


def test_prune_option_misuse(tmp_path: Path, keyset: KeySet, data: dict[str, Path]) -> None:
    def package(model: Path, **options: Any) -> None:
        package_model(
            model, tmp_path / "b.edgepkg", load_profile("x86_64"),
            PackageOptions("digits", 1, quantize="none", **options), [keyset.signer],
        )  # fmt: skip

    with pytest.raises(UsageError, match="add --prune"):
        package(models.digits_cnn(), train=data["train"])
    with pytest.raises(UsageError, match="sparsity must be"):
        package(models.digits_cnn(), prune=1.0)
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    with pytest.raises(UsageError, match="already TFLite"):
        package(tflite, prune=0.5)
