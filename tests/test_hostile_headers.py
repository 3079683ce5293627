"""Findings from review, kept as regressions: hostile headers, huge sizes, failures mid-decryption.

Each crafted manifest is *re-signed by the trusted key*, so these reach every check a publisher
bug or a stolen key could reach — not only the ones an unsigned file reaches.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_sdk.errors import (
    BundleFormatError,
    DecryptionError,
    EdgeSDKError,
    ManifestError,
    PayloadTooLargeError,
    SignatureError,
)
from edge_sdk.format.bundle import Bundle, Limits, bundle_to_bytes, read_bundle
from edge_sdk.format.encryption import unwrap_content_key, wrap_content_key
from edge_sdk.format.manifest import Target
from edge_sdk.format.signing import sign_manifest
from edge_sdk.format.verify import open_bundle
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import TrustStore, generate_key

from .bundle_parts import split_bundle
from .conftest import KeySet, make_bundle_bytes

SIGNER = generate_key("signing")
DEVICE = generate_key("device")
TRUST = TrustStore.from_keys([SIGNER.public])


def _resigned(raw: bytes, edit: Any) -> bytes:
    """Apply ``edit`` to the manifest JSON, then re-sign it and re-wrap the key for it."""
    parts = split_bundle(raw)
    manifest = json.loads(parts.manifest)
    edit(manifest)
    text = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    bundle = read_bundle(raw)
    key = unwrap_content_key(bundle.recipients, bundle.manifest_digest, DEVICE)
    parts.manifest = text
    parts.envelope["signatures"] = [
        {
            "keyid": s.key_id,
            "alg": s.alg,
            "sig": __import__("base64").b64encode(s.signature).decode(),
        }
        for s in sign_manifest(text, [SIGNER])
    ]
    parts.envelope["recipients"] = [
        {"keyid": r.key_id, "kem": r.kem, "enc": __import__("base64").b64encode(r.enc).decode()}
        for r in wrap_content_key(key, hashlib.sha256(text).digest(), [DEVICE.public])
    ]
    return parts.join()


BASE = bundle_to_bytes(
    seal_bundle(
        os.urandom(5000), name="h", version=1, target=Target("x86_64"), signers=[SIGNER],
        recipients=[DEVICE.public], chunk_size=4096,
        inputs=(), outputs=(),
    )
)  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda m: m["model"]["inputs"].append({"name": 1, "shape": [1], "dtype": "float32"}), ManifestError,
         "tensor name"),
        (lambda m: m["model"]["inputs"].append({"name": "x", "shape": [1], "dtype": "float32",
                                                "quantization": {"scale": True, "zero_point": 0}}),
         ManifestError, "scale"),
        (lambda m: m["model"]["inputs"].append({"name": "\udc80", "shape": [1], "dtype": "float32"}),
         BundleFormatError, "surrogate"),
        (lambda m: m.update(version=10**30), BundleFormatError, "digits"),
        (lambda m: m["model"].update(size=2**45), ManifestError, "payload.size"),
        (lambda m: m["payload"].update(size=m["payload"]["size"] + 16), ManifestError, "payload.size"),
        (lambda m: m.update(name=["x"]), ManifestError, "name"),
        (lambda m: m.update({"\x1b[2Jfake": 1}), ManifestError, "unknown field"),
    ],
)  # fmt: skip
def test_hostile_signed_headers_are_format_errors(edit: Any, error: type, message: str) -> None:
    raw = _resigned(BASE, edit)
    with pytest.raises(error, match=message):
        open_bundle(raw, TRUST, DEVICE, limits=Limits.for_model_size(1 << 30))


def test_device_size_limits(keyset: KeySet) -> None:
    raw = make_bundle_bytes(keyset, os.urandom(50_000), chunk_size=4096)
    with pytest.raises(PayloadTooLargeError, match="payload length .* exceeds"):
        read_bundle(raw, Limits.for_model_size(10_000))
    with pytest.raises(PayloadTooLargeError, match="over this device's limit of 49999"):
        read_bundle(raw, Limits(max_model_bytes=49_999))


def test_float_literals_that_overflow_are_refused() -> None:
    parts = split_bundle(BASE)
    parts.manifest = parts.manifest.replace(b'"version":1', b'"version":1e999')
    with pytest.raises(BundleFormatError, match="out of range"):
        read_bundle(parts.join())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
PATHS = [("name",), ("version",), ("created",), ("expires",), ("target", "profile"), ("target", "hardware_ids"),
         ("model", "size"), ("model", "sha256"), ("model", "inputs"), ("model", "outputs"), ("payload", "size"),
         ("payload", "chunk_size"), ("payload", "content_id"), ("payload", "encryption"), ("payload", "compression"),
         ("reports",), ("schema",)]  # fmt: skip


@given(path=st.sampled_from(PATHS), value=json_values)
def test_any_signed_field_value_only_raises_edge_sdk_errors(
    path: tuple[str, ...], value: Any
) -> None:
    """Structure-aware fuzz: any JSON value in any manifest field, properly signed."""

    def edit(manifest: dict[str, Any]) -> None:
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    raw = _resigned(BASE, edit)
    try:
        opened = open_bundle(raw, TRUST, DEVICE, limits=Limits.for_model_size(1 << 24))
    except EdgeSDKError:
        return
    assert len(opened.model_bytes) == 5000


def test_signature_is_checked_before_the_payload_is_read(tmp_path: Any, keyset: KeySet) -> None:
    """An unsigned multi-megabyte file is refused from its header, without reading the payload."""
    raw = make_bundle_bytes(keyset, os.urandom(6 * 1024 * 1024), chunk_size=1 << 20)
    path = tmp_path / "big.edgepkg"
    path.write_bytes(raw)
    with pytest.raises(SignatureError):
        read_bundle(path, trust=TrustStore.from_keys([keyset.signer2.public]))


def test_failure_in_the_last_chunk_of_a_large_model(tmp_path: Any, keyset: KeySet) -> None:
    """A large bundle (the threaded-hash, in-place decryption path) that fails at its last chunk
    raises a typed error — the hashing thread must never read freed memory (a review finding)."""
    model = os.urandom(24 * 1024 * 1024)
    bundle = seal_bundle(model, name="big", version=1, target=Target("x86_64"), signers=[keyset.signer],
                         recipients=[keyset.device.public], chunk_size=1 << 20)  # fmt: skip
    payload = bytearray(bundle.payload)
    payload[-5] ^= 0x01  # last chunk's tag
    # Re-sign so the payload digest matches: only the AEAD can now catch it.
    import dataclasses

    from edge_sdk.format.manifest import PayloadInfo

    info: PayloadInfo = dataclasses.replace(
        bundle.manifest.payload, sha256=hashlib.sha256(payload).hexdigest()
    )
    manifest = dataclasses.replace(bundle.manifest, payload=info)
    mbytes = manifest.to_bytes()
    key = unwrap_content_key(bundle.recipients, bundle.manifest_digest, keyset.device)
    forged = Bundle(1, manifest, mbytes, sign_manifest(mbytes, [keyset.signer]),
                    wrap_content_key(key, hashlib.sha256(mbytes).digest(), [keyset.device.public]),
                    bytes(payload))  # fmt: skip
    path = tmp_path / "big.edgepkg"
    path.write_bytes(bundle_to_bytes(forged))
    for _ in range(3):
        with pytest.raises(DecryptionError, match="chunk 23 of 24 failed authentication"):
            open_bundle(path, keyset.trust(), keyset.device)
    good = tmp_path / "good.edgepkg"
    good.write_bytes(bundle_to_bytes(bundle))
    assert open_bundle(good, keyset.trust(), keyset.device).model_bytes == model
