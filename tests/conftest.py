"""Shared fixtures: real keys, real bundles, and a way to run the real CLI in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from edge_sdk.format.bundle import bundle_to_bytes
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, TrustStore, generate_key, save_keypair

REPO = Path(__file__).resolve().parent.parent

# Property tests: a quick default locally, thousands of cases in CI (HYPOTHESIS_PROFILE=ci).
settings.register_profile("ci", max_examples=3000, deadline=None)
settings.register_profile("dev", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@dataclass
class KeySet:
    signer: PrivateKey
    signer2: PrivateKey
    ecdsa: PrivateKey
    hybrid: PrivateKey
    device: PrivateKey
    device2: PrivateKey
    device_pq: PrivateKey

    def trust(
        self, *keys: PrivateKey, threshold: int = 1, revoked: tuple[str, ...] = ()
    ) -> TrustStore:
        chosen = keys or (self.signer,)
        return TrustStore.from_keys(
            [k.public for k in chosen], threshold=threshold, revoked=revoked
        )


@pytest.fixture(scope="session")
def keyset() -> KeySet:
    return KeySet(
        signer=generate_key("signing", "ed25519"),
        signer2=generate_key("signing", "ed25519"),
        ecdsa=generate_key("signing", "ecdsa-p256"),
        hybrid=generate_key("signing", "ed25519+mldsa65"),
        device=generate_key("device", "x25519"),
        device2=generate_key("device", "x25519"),
        device_pq=generate_key("device", "mlkem768-x25519"),
    )


def make_bundle_bytes(
    keyset: KeySet,
    model: bytes = b"\x00TFL3" + bytes(range(256)) * 40,
    *,
    signers: tuple[PrivateKey, ...] | None = None,
    recipients: tuple[PrivateKey, ...] | None = None,
    **kwargs: Any,
) -> bytes:
    """A real sealed bundle as bytes (encrypted for keyset.device unless told otherwise)."""
    kwargs.setdefault("name", "digits")
    kwargs.setdefault("version", 1)
    kwargs.setdefault("target", Target("x86_64"))
    kwargs.setdefault("chunk_size", 4096)
    bundle = seal_bundle(
        model,
        signers=list(signers or (keyset.signer,)),
        recipients=[k.public for k in (recipients if recipients is not None else (keyset.device,))],
        **kwargs,
    )
    return bundle_to_bytes(bundle)


# -- the CLI ----------------------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run ``edge-sdk ARGS`` in-process through the real entry point and capture its output."""
    from edge_sdk.cli import main

    monkeypatch.setenv("COLUMNS", "200")  # keep rich from wrapping key ids in tables

    def run(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def key_files(tmp_path: Path, keyset: KeySet) -> dict[str, Path]:
    """The keyset written to disk as .key/.pub pairs."""
    paths: dict[str, Path] = {}
    for name in ("signer", "signer2", "ecdsa", "hybrid", "device", "device2", "device_pq"):
        key_path, pub_path = save_keypair(getattr(keyset, name), tmp_path / name)
        paths[name] = key_path
        paths[name + ".pub"] = pub_path
    return paths


@pytest.fixture
def no_tensorflow_check() -> Callable[[str], None]:
    """Run a snippet in a fresh interpreter and assert it never imports tensorflow."""
    import subprocess

    def check(code: str) -> None:
        snippet = (
            code
            + "\nimport sys\nassert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        )
        subprocess.run([sys.executable, "-c", snippet], check=True, cwd=REPO)

    return check


# -- key-holding hardware (tests/hardware.py): one SoftHSM2 and one swtpm per session ---------------


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from .hardware import SoftHsm

    hsm = SoftHsm.start(tmp_path_factory.mktemp("softhsm"))
    yield hsm
    hsm.stop()


@pytest.fixture(scope="session")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from .hardware import SwTpm

    with SwTpm.start(tmp_path_factory.mktemp("swtpm")) as tpm:
        yield tpm


# -- a generative model (tests/llm_fixture.py): built once, cached on disk across sessions ------------


@pytest.fixture(scope="session")
def tiny_llm() -> Any:
    """A tiny random-weight decoder as a ``.litertlm`` (a ``tests.llm_fixture.LlmModel``)."""
    from .llm_fixture import build_llm

    return build_llm()


# -- what users install ------------------------------------------------------------------------------


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f]


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """Wheel and sdist built from the tracked files only (as a fresh clone would build them)."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    for rel in tracked_files():
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    out = tmp / "out"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(out),
                    str(src)], check=True, capture_output=True)  # fmt: skip
    (wheel,) = out.glob("edgepkg-*.whl")
    (sdist,) = out.glob("edgepkg-*.tar.gz")
    return Dist(wheel, sdist)
