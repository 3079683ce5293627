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

from edge_sdk.errors import KeySlipMismatchError, SignatureError
from edge_sdk.format.bundle import read_bundle
from edge_sdk.format.manifest import Manifest
from edge_sdk.format.verify import Policy, open_bundle, open_verified
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


@pytest.mark.parametrize("name", sorted(EXPECTED.get("slips", {})))
def test_slip_vector_still_opens_its_bundle(name: str, keys: Path) -> None:
    """A committed key slip opens its committed bundle for its device, and nothing else."""
    expected = EXPECTED["slips"][name]
    raw = (VECTORS / f"{name}.edgeslip").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == expected["file_sha256"], "slip vector changed"
    trust = TrustStore.from_keys(
        [load_public_key(p) for p in keys.glob("signer-*.pub")], threshold=len(expected["signers"])
    )
    device = load_private_key(keys / f"{expected['device_key']}.key")
    bundle = VECTORS / f"{expected['bundle']}.edgepkg"
    later = datetime(2040, 1, 1, tzinfo=timezone.utc)
    assert device.key_id not in {r.key_id for r in read_bundle(bundle).recipients}
    policy = Policy(trust, now=later, device_key=device, key_slip=raw)
    assert open_verified(bundle, policy).model_bytes == MODEL
    other = VECTORS / "v1-ecdsa-x25519-chacha20-zstd.edgepkg"  # another bundle, same trust
    any_one = TrustStore.from_keys([load_public_key(p) for p in keys.glob("signer-*.pub")])
    with pytest.raises(KeySlipMismatchError, match="not for this bundle"):
        open_verified(other, Policy(any_one, now=later, device_key=device, key_slip=raw))


def test_slip_vector_opens_by_the_document_alone(keys: Path) -> None:
    """docs/FORMAT.md "Key slips", step by step with cryptography, without edge_sdk's reader."""
    import base64
    import struct

    from cryptography.hazmat.primitives import hpke, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from edge_sdk.format.encryption import decrypt_payload

    raw = (VECTORS / "v1-ed25519-x25519-aes256gcm.slip-x25519.edgeslip").read_bytes()
    bundle = read_bundle(VECTORS / "v1-ed25519-x25519-aes256gcm.edgepkg")
    assert raw[:8] == b"EDGESLP\n" and struct.unpack(">HH", raw[8:12]) == (1, 0)
    (b_len,) = struct.unpack(">H", raw[12:14])
    body = raw[14 : 14 + b_len]
    (s_len,) = struct.unpack(">H", raw[14 + b_len : 16 + b_len])
    envelope = json.loads(raw[16 + b_len :])
    assert 16 + b_len + s_len == len(raw) and envelope["recipients"] == []
    (sig,) = envelope["signatures"]
    kind = b"application/vnd.edge-sdk.key-slip+json;version=1"
    pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)
    signer_der = base64.b64decode(
        b"".join((keys / "signer-ed25519.pub").read_bytes().splitlines()[1:-1])
    )
    assert hashlib.sha256(signer_der).hexdigest() == sig["keyid"]
    signer = serialization.load_der_public_key(signer_der)
    assert isinstance(signer, ed25519.Ed25519PublicKey)
    signer.verify(base64.b64decode(sig["sig"]), pae)  # raises if it does not verify
    fields = json.loads(body)
    digest = hashlib.sha256(bundle.manifest_bytes).digest()
    assert fields["bundle"] == digest.hex() and fields["kem"] == "x25519"
    device = serialization.load_pem_private_key(
        (keys / "device-slip-x25519.key").read_bytes(), None
    )
    info = b"edge-sdk/v1/cek" + digest + bytes.fromhex(fields["keyid"])
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    cek = suite.decrypt(base64.b64decode(fields["enc"]), device, info=info)  # type: ignore[arg-type]
    payload = bundle.manifest.payload
    model = decrypt_payload(bundle.payload, payload.encryption, bytes(cek),
                            bytes.fromhex(payload.content_id), payload.chunk_size,
                            bundle.manifest.model.size)  # fmt: skip
    assert bytes(model) == MODEL
