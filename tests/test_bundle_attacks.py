"""One test per way a bundle can be broken or attacked, each asserting the specific error."""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from edge_sdk.errors import (
    BundleFormatError,
    DecryptionError,
    ExpiredError,
    IntegrityError,
    ManifestError,
    RevokedKeyError,
    SignatureError,
    TrustStoreError,
    UnsupportedVersionError,
)
from edge_sdk.format.bundle import Limits, read_bundle
from edge_sdk.format.encryption import TAG_SIZE, decrypt_payload, unwrap_content_key
from edge_sdk.format.signing import PAYLOAD_TYPE, pae
from edge_sdk.format.verify import decrypt_model, open_bundle, verify_bundle
from edge_sdk.keys import PublicKey, generate_key

from .bundle_parts import split_bundle
from .conftest import KeySet, make_bundle_bytes

MODEL = os.urandom(20_000)


@pytest.fixture(scope="module")
def good(keyset: KeySet) -> bytes:
    return make_bundle_bytes(keyset, MODEL)


def _open(raw: bytes, keyset: KeySet, **kw: object) -> bytes:
    trust = kw.pop("trust", keyset.trust())
    key = kw.pop("device_key", keyset.device)
    return open_bundle(raw, trust, key, **kw).model_bytes  # type: ignore[arg-type]


def test_good_bundle_opens(good: bytes, keyset: KeySet) -> None:
    assert _open(good, keyset) == MODEL


def test_flipped_bit_in_payload(good: bytes, keyset: KeySet) -> None:
    raw = bytearray(good)
    raw[-100] ^= 0x01
    with pytest.raises(IntegrityError, match="payload SHA-256 mismatch"):
        _open(bytes(raw), keyset)


def test_flipped_bit_in_manifest_value(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    parts.manifest = parts.manifest.replace(b'"name":"digits"', b'"name":"digitr"')
    with pytest.raises(SignatureError, match="invalid signature by key"):
        _open(parts.join(), keyset)


@pytest.mark.parametrize("offset", range(0, 400, 7))
def test_flipped_bit_anywhere_in_manifest(good: bytes, keyset: KeySet, offset: int) -> None:
    parts = split_bundle(good)
    manifest = bytearray(parts.manifest)
    manifest[offset % len(manifest)] ^= 0x04
    parts.manifest = bytes(manifest)
    with pytest.raises((SignatureError, BundleFormatError)):
        _open(parts.join(), keyset)


def test_flipped_bit_in_signature(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    sig = bytearray(base64.b64decode(parts.envelope["signatures"][0]["sig"]))
    sig[10] ^= 0x80
    parts.envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError, match=f"invalid signature by key {keyset.signer.key_id}"):
        _open(parts.join(), keyset)


def test_signature_stripped(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    parts.envelope["signatures"] = []
    with pytest.raises(SignatureError, match="carries no signature"):
        _open(parts.join(), keyset)


def test_signature_truncated(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    sig = base64.b64decode(parts.envelope["signatures"][0]["sig"])
    parts.envelope["signatures"][0]["sig"] = base64.b64encode(sig[:40]).decode()
    with pytest.raises(SignatureError, match="invalid signature"):
        _open(parts.join(), keyset)


def test_signature_copied_from_another_bundle(good: bytes, keyset: KeySet) -> None:
    other = split_bundle(make_bundle_bytes(keyset, MODEL, version=2))
    parts = split_bundle(good)
    parts.envelope["signatures"] = other.envelope["signatures"]
    with pytest.raises(SignatureError, match="invalid signature"):
        _open(parts.join(), keyset)


def test_untrusted_key_claiming_trusted_key_id(good: bytes, keyset: KeySet) -> None:
    attacker = generate_key("signing", "ed25519")
    parts = split_bundle(good)
    forged = attacker.sign(pae(PAYLOAD_TYPE, parts.manifest))
    parts.envelope["signatures"] = [
        {"keyid": keyset.signer.key_id, "alg": "ed25519", "sig": base64.b64encode(forged).decode()}
    ]
    with pytest.raises(SignatureError, match=f"invalid signature by key {keyset.signer.key_id}"):
        _open(parts.join(), keyset)


def test_signed_only_by_untrusted_key(keyset: KeySet) -> None:
    raw = make_bundle_bytes(keyset, MODEL, signers=(keyset.signer2,))
    with pytest.raises(SignatureError, match="0 valid signature.*untrusted signer"):
        _open(raw, keyset)


def test_revoked_key(good: bytes, keyset: KeySet) -> None:
    trust = keyset.trust(keyset.signer, keyset.signer2, revoked=(keyset.signer.key_id,))
    with pytest.raises(RevokedKeyError, match=f"revoked key {keyset.signer.key_id}"):
        _open(good, keyset, trust=trust)


def test_revoked_key_rejects_even_when_threshold_met(keyset: KeySet) -> None:
    raw = make_bundle_bytes(keyset, MODEL, signers=(keyset.signer, keyset.signer2))
    trust = keyset.trust(keyset.signer, keyset.signer2, revoked=(keyset.signer2.key_id,))
    with pytest.raises(RevokedKeyError):
        _open(raw, keyset, trust=trust)


def test_below_threshold(good: bytes, keyset: KeySet) -> None:
    trust = keyset.trust(keyset.signer, keyset.signer2, threshold=2)
    with pytest.raises(SignatureError, match="1 valid signature.*2 required"):
        _open(good, keyset, trust=trust)


def test_threshold_met_by_two_algorithms(keyset: KeySet) -> None:
    raw = make_bundle_bytes(keyset, MODEL, signers=(keyset.ecdsa, keyset.hybrid))
    trust = keyset.trust(keyset.ecdsa, keyset.hybrid, threshold=2)
    assert _open(raw, keyset, trust=trust) == MODEL


def test_hybrid_needs_both_halves(keyset: KeySet) -> None:
    raw = make_bundle_bytes(keyset, MODEL, signers=(keyset.hybrid,))
    parts = split_bundle(raw)
    sig = bytearray(base64.b64decode(parts.envelope["signatures"][0]["sig"]))
    sig[200] ^= 0x01  # inside the ML-DSA half; the Ed25519 half stays valid
    parts.envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError, match="ed25519\\+mldsa65"):
        _open(parts.join(), keyset, trust=keyset.trust(keyset.hybrid))


def test_algorithm_in_header_cannot_override_trust(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    parts.envelope["signatures"][0]["alg"] = "none"
    with pytest.raises(SignatureError, match="claims algorithm 'none'"):
        _open(parts.join(), keyset)


def test_wrong_device_key(good: bytes, keyset: KeySet) -> None:
    with pytest.raises(
        DecryptionError, match=f"device key {keyset.device2.key_id[:16]} is not a recipient"
    ):
        _open(good, keyset, device_key=keyset.device2)


def test_recipient_entry_moved_from_another_bundle(good: bytes, keyset: KeySet) -> None:
    other = split_bundle(make_bundle_bytes(keyset, MODEL, version=2))
    parts = split_bundle(good)
    parts.envelope["recipients"] = other.envelope["recipients"]
    with pytest.raises(DecryptionError, match="belongs to another bundle"):
        _open(parts.join(), keyset)


def test_recipient_entry_relabelled_for_another_key(keyset: KeySet) -> None:
    raw = make_bundle_bytes(keyset, MODEL, recipients=(keyset.device2,))
    parts = split_bundle(raw)
    parts.envelope["recipients"][0]["keyid"] = keyset.device.key_id
    with pytest.raises(DecryptionError, match="cannot unwrap"):
        _open(parts.join(), keyset)


def test_encrypted_bundle_without_device_key(good: bytes, keyset: KeySet) -> None:
    with pytest.raises(DecryptionError, match="a device key is needed"):
        _open(good, keyset, device_key=None)


def test_truncated_at_many_offsets(good: bytes, keyset: KeySet) -> None:
    offsets = sorted(
        {*range(0, 64), *range(64, len(good), max(1, len(good) // 200)), len(good) - 1}
    )
    for cut in offsets:
        with pytest.raises(BundleFormatError):
            read_bundle(good[:cut])


def test_trailing_bytes(good: bytes) -> None:
    with pytest.raises(BundleFormatError, match="trailing data"):
        read_bundle(good + b"x")


def _chunks(parts_payload: bytes, chunk: int) -> list[bytes]:
    size = chunk + TAG_SIZE
    return [parts_payload[i : i + size] for i in range(0, len(parts_payload), size)]


def test_chunks_reordered_are_caught_by_hash_and_by_aead(good: bytes, keyset: KeySet) -> None:
    bundle = read_bundle(good)
    chunks = _chunks(bytes(bundle.payload), bundle.manifest.payload.chunk_size)
    assert len(chunks) >= 3
    swapped = chunks[1] + chunks[0] + b"".join(chunks[2:])
    parts = split_bundle(good)
    parts.payload = swapped
    with pytest.raises(IntegrityError):
        _open(parts.join(), keyset)
    # Below the signed hash, the AEAD itself refuses: index and last-chunk flag are bound.
    key = unwrap_content_key(bundle.recipients, bundle.manifest_digest, keyset.device)
    p = bundle.manifest.payload
    with pytest.raises(DecryptionError, match="chunk 0 of"):
        decrypt_payload(
            swapped, p.encryption, key, bytes.fromhex(p.content_id), p.chunk_size, len(MODEL)
        )


def test_last_chunk_dropped_fails_in_aead(good: bytes, keyset: KeySet) -> None:
    bundle = read_bundle(good)
    p = bundle.manifest.payload
    chunks = _chunks(bytes(bundle.payload), p.chunk_size)
    key = unwrap_content_key(bundle.recipients, bundle.manifest_digest, keyset.device)
    dropped = b"".join(chunks[:-1])
    short = len(MODEL) - (len(chunks[-1]) - TAG_SIZE)  # an attacker also rewrites the size
    with pytest.raises(DecryptionError, match="failed authentication"):
        decrypt_payload(
            dropped, p.encryption, key, bytes.fromhex(p.content_id), p.chunk_size, short
        )


def test_expired(keyset: KeySet) -> None:
    past = datetime.now(timezone.utc) - timedelta(days=10)
    raw = make_bundle_bytes(keyset, MODEL, created=past - timedelta(days=1), expires=past)
    with pytest.raises(ExpiredError, match="expired at"):
        _open(raw, keyset)


def test_expiring_soon_is_a_warning(keyset: KeySet) -> None:
    soon = datetime.now(timezone.utc) + timedelta(days=2)
    raw = make_bundle_bytes(keyset, MODEL, expires=soon)
    result = verify_bundle(read_bundle(raw), keyset.trust())
    assert any("expires soon" in w for w in result.warnings)


def test_unknown_format_version(good: bytes) -> None:
    parts = split_bundle(good)
    parts.version = 2
    with pytest.raises(UnsupportedVersionError, match="format version 2"):
        read_bundle(parts.join())


def test_unknown_flags(good: bytes) -> None:
    parts = split_bundle(good)
    parts.flags = 1
    with pytest.raises(UnsupportedVersionError, match="flags"):
        read_bundle(parts.join())


def test_unknown_payload_algorithm(good: bytes) -> None:
    parts = split_bundle(good)
    parts.manifest = parts.manifest.replace(b'"aes-256-gcm"', b'"aes-128-ocb"')
    with pytest.raises(ManifestError, match="payload.encryption"):
        read_bundle(parts.join())


def test_unknown_recipient_algorithm(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    parts.envelope["recipients"][0]["kem"] = "rsa-oaep"
    with pytest.raises(DecryptionError, match="rsa-oaep"):
        _open(parts.join(), keyset)


def test_unknown_manifest_field(good: bytes) -> None:
    parts = split_bundle(good)
    manifest = json.loads(parts.manifest)
    manifest["debug"] = True
    parts.manifest = json.dumps(manifest).encode()
    with pytest.raises(ManifestError, match="unknown field.*debug"):
        read_bundle(parts.join())


def test_oversized_manifest_length(good: bytes) -> None:
    raw = bytearray(good)
    raw[12:16] = (2**31).to_bytes(4, "big")
    with pytest.raises(BundleFormatError, match="manifest length .* exceeds"):
        read_bundle(bytes(raw))


def test_oversized_payload_length(good: bytes) -> None:
    with pytest.raises(BundleFormatError, match="payload length .* exceeds"):
        read_bundle(good, Limits(max_payload_bytes=1000))


def test_too_many_signatures(good: bytes) -> None:
    parts = split_bundle(good)
    one = parts.envelope["signatures"][0]
    parts.envelope["signatures"] = [dict(one, keyid=f"{i:064x}") for i in range(17)]
    with pytest.raises(BundleFormatError, match="at most 16"):
        read_bundle(parts.join())


def test_too_many_recipients(good: bytes) -> None:
    parts = split_bundle(good)
    one = parts.envelope["recipients"][0]
    parts.envelope["recipients"] = [dict(one, keyid=f"{i:064x}") for i in range(11)]
    with pytest.raises(BundleFormatError, match="at most 10"):
        read_bundle(parts.join(), Limits(max_recipients=10))


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b'{"name":"a","name":"b"}', "duplicate key 'name'"),
        (b'{"version":NaN}', "NaN is not allowed"),
        (b"[" * 5000 + b"]" * 5000, "nested"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than 32"),
        (b"{not json", "malformed JSON in manifest"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "must be a JSON object"),
    ],
)
def test_malformed_manifest_json(good: bytes, manifest: bytes, message: str) -> None:
    parts = split_bundle(good)
    parts.manifest = manifest
    with pytest.raises(BundleFormatError, match=message):
        read_bundle(parts.join())


def test_duplicate_key_in_envelope(good: bytes) -> None:
    parts = split_bundle(good)
    parts.envelope_raw = b'{"recipients":[],"recipients":[],"signatures":[]}'
    with pytest.raises(BundleFormatError, match="duplicate key 'recipients'"):
        read_bundle(parts.join())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"EDGEPKG",
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"PK\x03\x04" + bytes(100),
        os.urandom(4096),
    ],
)
def test_not_a_bundle(data: bytes) -> None:
    with pytest.raises(BundleFormatError, match="not an edge-sdk bundle"):
        read_bundle(data)


def test_missing_file_is_a_usage_error(tmp_path: os.PathLike[str]) -> None:
    # A typo is not a corrupt bundle: scripts alerting on exit 10 must not fire on it.
    from edge_sdk.errors import UsageError

    with pytest.raises(UsageError, match="does not exist") as caught:
        read_bundle(os.path.join(tmp_path, "nope.edgepkg"))
    assert caught.value.exit_code == 2
    with pytest.raises(UsageError, match="is a directory"):
        read_bundle(tmp_path)


def test_plaintext_hash_is_checked_after_decryption(keyset: KeySet) -> None:
    """A publisher bug or a forged manifest claiming another model digest is caught after AEAD."""
    from edge_sdk.format.manifest import Target
    from edge_sdk.host.sealing import seal_bundle

    bundle = seal_bundle(
        MODEL,
        name="m",
        version=1,
        target=Target("x86_64"),
        signers=[keyset.signer],
        recipients=[keyset.device.public],
        chunk_size=4096,
    )
    # Re-seal a manifest that lies about the model digest, signed by the trusted key.
    import dataclasses

    from edge_sdk.format.bundle import Bundle
    from edge_sdk.format.encryption import wrap_content_key
    from edge_sdk.format.signing import sign_manifest

    lying = dataclasses.replace(
        bundle.manifest, model=dataclasses.replace(bundle.manifest.model, sha256="0" * 64)
    )
    mbytes = lying.to_bytes()
    import hashlib

    key = unwrap_content_key(bundle.recipients, bundle.manifest_digest, keyset.device)
    forged = Bundle(
        1,
        lying,
        mbytes,
        sign_manifest(mbytes, [keyset.signer]),
        wrap_content_key(key, hashlib.sha256(mbytes).digest(), [keyset.device.public]),
        bundle.payload,
    )
    verify_bundle(forged, keyset.trust())
    with pytest.raises(IntegrityError, match="decrypted model SHA-256 mismatch"):
        decrypt_model(forged, keyset.device)


def test_signed_only_bundle_is_marked(keyset: KeySet) -> None:
    raw = make_bundle_bytes(keyset, MODEL, recipients=())
    result = verify_bundle(read_bundle(raw), keyset.trust())
    assert result.manifest.payload.encryption == "none"
    assert any("not encrypted" in w for w in result.warnings)
    assert _open(raw, keyset, device_key=None) == MODEL


def test_unencrypted_bundle_with_recipients_is_malformed(keyset: KeySet) -> None:
    enc = split_bundle(make_bundle_bytes(keyset, MODEL))
    parts = split_bundle(make_bundle_bytes(keyset, MODEL, recipients=()))
    parts.envelope["recipients"] = enc.envelope["recipients"]
    with pytest.raises(BundleFormatError, match="must not list recipients"):
        read_bundle(parts.join())


def test_trust_store_threshold_above_keys(keyset: KeySet) -> None:
    with pytest.raises(TrustStoreError, match="exceeds"):
        keyset.trust(keyset.signer, threshold=2)


def test_signing_key_given_as_device_key(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    parts.envelope["recipients"][0]["keyid"] = keyset.signer.key_id  # an entry that names it
    with pytest.raises(DecryptionError, match="but the device key is ed25519"):
        _open(parts.join(), keyset, device_key=keyset.signer)


def test_post_quantum_recipient_and_hybrid_signature(keyset: KeySet) -> None:
    raw = make_bundle_bytes(
        keyset,
        MODEL,
        signers=(keyset.hybrid,),
        recipients=(keyset.device_pq,),
        aead="chacha20-poly1305",
    )
    assert (
        _open(raw, keyset, trust=keyset.trust(keyset.hybrid), device_key=keyset.device_pq) == MODEL
    )


def test_key_ids_are_sha256_of_spki(keyset: KeySet) -> None:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    pub: PublicKey = keyset.signer.public
    der = pub.components[0].public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pub.key_id == hashlib.sha256(der).hexdigest()
