"""Committed format-v1 bundles (tests/vectors/) must open in every future release.

They were sealed once by tools/make_test_vectors.py with the committed keys; regenerating them is
a deliberate act that comes with a format version bump.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from edge_sdk.errors import SignatureError
from edge_sdk.format.bundle import read_bundle
from edge_sdk.format.manifest import Manifest
from edge_sdk.format.verify import open_bundle
from edge_sdk.keys import TrustStore, load_private_key, load_public_key

VECTORS = Path(__file__).parent / "vectors"
EXPECTED = json.loads((VECTORS / "expected.json").read_text())
MODEL = (VECTORS / "model.tflite").read_bytes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed keys, with private keys at 0600 (git does not keep file modes)."""
    copy = tmp_path_factory.mktemp("vector-keys")
    for path in (VECTORS / "keys").iterdir():
        shutil.copy(path, copy / path.name)
        (copy / path.name).chmod(0o600 if path.suffix == ".key" else 0o644)
    return copy


@pytest.mark.parametrize("name", sorted(EXPECTED["bundles"]))
def test_vector_still_opens(name: str, keys: Path) -> None:
    expected = EXPECTED["bundles"][name]
    path = VECTORS / f"{name}.edgepkg"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == expected["file_sha256"], (
        "vector file changed"
    )
    bundle = read_bundle(path)
    assert bundle.format_version == 1
    assert bundle.digest == expected["digest"]
    assert [s.key_id for s in bundle.signatures] == expected["signers"]
    trust = TrustStore.from_keys(
        [load_public_key(p) for p in keys.glob("signer-*.pub")], threshold=len(expected["signers"])
    )
    later = datetime(2040, 1, 1, tzinfo=timezone.utc)  # no expiry: vectors stay valid forever
    device_keys = [load_private_key(path) for path in sorted(keys.glob("device-*.key"))]
    openers = [k for k in device_keys if k.key_id in expected["recipients"]] or [None]
    for key in openers:
        assert open_bundle(path, trust, key, now=later).model_bytes == MODEL
    assert hashlib.sha256(MODEL).hexdigest() == EXPECTED["model_sha256"]


def test_manifest_bytes_are_canonical() -> None:
    """The stored manifest is exactly what Manifest.to_bytes() writes (golden bytes)."""
    for name in EXPECTED["bundles"]:
        bundle = read_bundle(VECTORS / f"{name}.edgepkg")
        assert (
            Manifest.from_dict(json.loads(bundle.manifest_bytes)).to_bytes()
            == bundle.manifest_bytes
        )


def test_vectors_refuse_the_wrong_trust(keys: Path) -> None:
    only_ecdsa = TrustStore.from_keys([load_public_key(keys / "signer-ecdsa.pub")])
    with pytest.raises(SignatureError, match="0 valid signature"):
        open_bundle(VECTORS / "v1-ed25519-signed-only.edgepkg", only_ecdsa, None)
