"""Negative conformance vectors: every file in tests/vectors/invalid/ is refused with its kind.

Each vector (made by tools/make_invalid_vectors.py, one defect each) names in index.json the trust
store, device key and time a reader is given, and the error kind it MUST report
(docs/FORMAT.md, "Error kinds"). Our reader must report exactly that kind, through the same
`open_bundle` every device uses — never another kind, never a raw exception, never success.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import EdgeSDKError
from edge_sdk.format.manifest import parse_time
from edge_sdk.format.verify import open_bundle
from edge_sdk.keys import PrivateKey, TrustStore, load_private_key, load_public_key

VECTORS = Path(__file__).parent / "vectors"
INVALID = VECTORS / "invalid"
INDEX = json.loads((INVALID / "index.json").read_text())
KINDS = {"format", "unsupported", "manifest", "too-large", "signature", "revoked", "expired",
         "integrity", "decryption"}  # fmt: skip


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed keys, private ones at 0600 (git does not keep file modes)."""
    copy = tmp_path_factory.mktemp("conformance-keys")
    for path in (VECTORS / "keys").iterdir():
        shutil.copy(path, copy / path.name)
        (copy / path.name).chmod(0o600 if path.suffix == ".key" else 0o644)
    return copy


def _inputs(entry: dict[str, Any], keys: Path) -> tuple[TrustStore, PrivateKey | None, datetime]:
    trusted = [load_public_key(keys / f"{name}.pub") for name in entry["trust"]]
    revoked = [load_public_key(keys / f"{name}.pub").key_id for name in entry["revoked"]]
    trust = TrustStore.from_keys(trusted, revoked=revoked, threshold=entry["threshold"])
    device = load_private_key(keys / f"{entry['device_key']}.key") if entry["device_key"] else None
    return trust, device, parse_time(entry["now"])


@pytest.mark.parametrize("entry", INDEX["vectors"], ids=[e["file"] for e in INDEX["vectors"]])
def test_invalid_vector_is_refused_with_its_kind(entry: dict[str, Any], keys: Path) -> None:
    path = INVALID / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], "vector file changed"
    trust, device, now = _inputs(entry, keys)
    with pytest.raises(EdgeSDKError) as caught:
        open_bundle(path, trust, device, now=now)
    assert caught.value.kind == entry["kind"], (
        f"{entry['file']} ({entry['description']}): expected {entry['kind']}, "
        f"got {caught.value.kind}: {caught.value.message}"
    )


def test_the_index_is_complete_and_well_formed() -> None:
    files = {p.name for p in INVALID.glob("*.edgepkg")}
    listed = [e["file"] for e in INDEX["vectors"]]
    assert sorted(listed) == sorted(files) and len(set(listed)) == len(listed)
    for entry in INDEX["vectors"]:
        assert entry["kind"] in KINDS, entry
        assert set(entry) == {"file", "kind", "description", "trust", "threshold", "revoked",
                              "device_key", "now", "sha256"}  # fmt: skip
        assert entry["description"]
    # Every kind a reader can report before the interpreter has at least one vector.
    assert {e["kind"] for e in INDEX["vectors"]} == KINDS


def test_the_expiry_vector_opens_one_second_earlier(keys: Path) -> None:
    """The instant is the boundary: refused at `expires`, accepted the second before."""
    (entry,) = [e for e in INDEX["vectors"] if e["file"] == "expired-at-the-instant.edgepkg"]
    trust, device, now = _inputs(entry, keys)
    opened = open_bundle(INVALID / entry["file"], trust, device, now=now - timedelta(seconds=1))
    assert opened.verification.manifest.expires == entry["now"]
    assert opened.model_bytes == (VECTORS / "model.tflite").read_bytes()


def test_only_the_defect_differs_for_policy_vectors(keys: Path) -> None:
    """Vectors refused by the trust inputs alone open under other inputs: the file is sound."""
    for name, trust_names in (("signature-below-threshold", ["signer-ed25519"]),
                              ("signature-revoked", ["signer-ed25519", "signer-ecdsa"])):  # fmt: skip
        (entry,) = [e for e in INDEX["vectors"] if e["file"] == f"{name}.edgepkg"]
        _, device, now = _inputs(entry, keys)
        trust = TrustStore.from_keys([load_public_key(keys / f"{n}.pub") for n in trust_names])
        assert open_bundle(INVALID / entry["file"], trust, device, now=now).model_bytes
    assert datetime(2030, 1, 1, tzinfo=timezone.utc) == parse_time(INDEX["vectors"][0]["now"])
