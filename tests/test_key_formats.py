"""Key file formats an outside implementer can read: X-Wing device keys in X-Wing's own encoding.

The ML-KEM-768+X25519 device key is the X-Wing KEM (draft-connolly-cfrg-xwing-kem-06 and later).
Its files now hold the standard X-Wing forms — the 32-byte seed in PKCS#8 and the 1216-byte public
key in SPKI, under id-XWing — so X-Wing libraries can import them. Files written by earlier
releases (two PEM blocks: ML-KEM-768, then X25519) keep loading with the same key id, so every
bundle sealed for them still opens.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_sdk.errors import KeyFileError
from edge_sdk.keys import (
    PrivateKey,
    PublicKey,
    generate_key,
    load_private_key,
    load_public_key,
    save_keypair,
    xwing_expand,
)

VECTORS = Path(__file__).parent / "vectors"

# The example key pair of the X-Wing draft's "Example of use in X.509" appendix: seed 00 01 … 1f.
DRAFT_PRIVATE_PEM = b"""-----BEGIN PRIVATE KEY-----
MDQCAQAwDQYLKwYBBAGD5i2ByHoEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZ
GhscHR4f
-----END PRIVATE KEY-----
"""
#: SHA-256 of the DER of the draft's example public key (its SubjectPublicKeyInfo, 1240 bytes).
DRAFT_PUBLIC_SPKI_SHA256 = "11f463e56a32c42e69011a2c34e0487090b71b07be7356a91f5b9452ca3c0695"


def _der(pem: bytes) -> bytes:
    done = subprocess.run(
        ["openssl", "base64", "-d"], input=b"".join(pem.splitlines(True)[1:-1]),
        capture_output=True, check=True,
    )  # fmt: skip
    return done.stdout


def _from_seed(seed: bytes) -> PrivateKey:
    parts = xwing_expand(seed)
    return PrivateKey(PublicKey.from_components([p.public_key() for p in parts]), parts, seed=seed)


def test_the_drafts_example_key_is_written_and_read_exactly(tmp_path: Path) -> None:
    key = _from_seed(bytes(range(32)))
    assert key.to_pem() == DRAFT_PRIVATE_PEM
    assert hashlib.sha256(_der(key.public.to_pem())).hexdigest() == DRAFT_PUBLIC_SPKI_SHA256
    path = tmp_path / "draft.key"
    path.write_bytes(DRAFT_PRIVATE_PEM)
    path.chmod(0o600)
    loaded = load_private_key(path, kind="device")
    assert loaded.alg == "mlkem768-x25519" and loaded.seed == bytes(range(32))
    assert loaded.key_id == key.key_id


def test_new_device_keys_are_x_wing_files_openssl_can_parse(tmp_path: Path) -> None:
    key = generate_key("device", "mlkem768-x25519")
    key_path, pub_path = save_keypair(key, tmp_path / "dev")
    for path, size in ((key_path, 54), (pub_path, 1240)):
        assert path.read_bytes().count(b"-----BEGIN") == 1
        parsed = subprocess.run(
            ["openssl", "asn1parse", "-in", str(path)], capture_output=True, text=True, check=True
        ).stdout
        assert "1.3.6.1.4.1.62253.25722" in parsed  # id-XWing
        assert len(_der(path.read_bytes())) == size
    assert load_private_key(key_path).key_id == key.key_id == load_public_key(pub_path).key_id


def test_key_id_is_over_the_two_component_spkis(tmp_path: Path) -> None:
    """The same definition for both file forms: SHA-256(SPKI(ML-KEM-768) || SPKI(X25519))."""
    key = generate_key("device", "mlkem768-x25519")
    prefix_m = bytes.fromhex("308204b2300b0609608648016503040402038204a100")
    prefix_x = bytes.fromhex("302a300506032b656e032100")
    m, x = (c.public_key().public_bytes_raw() for c in key.components)
    assert hashlib.sha256(prefix_m + m + prefix_x + x).hexdigest() == key.key_id
    raw = _der(key.public.to_pem())[-1216:]
    assert raw == m + x


def test_keys_from_earlier_releases_still_load(tmp_path: Path) -> None:
    """The committed vector key is the old two-block form; its id is bound into sealed bundles."""
    expected = json.loads((VECTORS / "expected.json").read_text())
    recipients = expected["bundles"]["v1-hybrid-mlkem-aes256gcm-2signers"]["recipients"]
    for name in ("device-mlkem.key", "device-mlkem.pub"):
        shutil.copy(VECTORS / "keys" / name, tmp_path / name)
    (tmp_path / "device-mlkem.key").chmod(0o600)
    assert (tmp_path / "device-mlkem.key").read_bytes().count(b"-----BEGIN") == 2
    old = load_private_key(tmp_path / "device-mlkem.key")
    assert old.seed is None and old.key_id in recipients
    assert load_public_key(tmp_path / "device-mlkem.pub").key_id == old.key_id
    # Its public half is now written as an X-Wing SPKI, with the same key id.
    (tmp_path / "rewritten.pub").write_bytes(old.public.to_pem())
    assert load_public_key(tmp_path / "rewritten.pub").key_id == old.key_id
    # And its private half, re-saved, stays in the two-block form (there is no seed to write).
    assert old.to_pem().count(b"-----BEGIN PRIVATE KEY-----") == 2


def test_a_passphrase_protected_x_wing_key_round_trips(tmp_path: Path) -> None:
    key = generate_key("device", "mlkem768-x25519")
    key_path, _ = save_keypair(key, tmp_path / "dev", passphrase=b"correct horse")
    assert key_path.read_bytes().count(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") == 2
    assert load_private_key(key_path, passphrase=b"correct horse").key_id == key.key_id


@pytest.mark.parametrize(
    ("which", "der", "message"),
    [
        ("key", "3034020100300d060b2b0601040183e62d81c87a0420" + "00" * 31, "seed is not 32 bytes"),
        ("pub", "308204d4300d060b2b0601040183e62d81c87a038204c100" + "00" * 1215, "not 1216 bytes"),
        (
            "pub",
            "308204d4300d060b2b0601040183e62d81c87a038204c100" + "ff" * 1216,
            "malformed X-Wing",
        ),
    ],
)
def test_malformed_x_wing_files_are_key_errors(
    tmp_path: Path, which: str, der: str, message: str
) -> None:
    import base64

    label = "PRIVATE KEY" if which == "key" else "PUBLIC KEY"
    path = tmp_path / f"bad.{which}"
    body = base64.encodebytes(bytes.fromhex(der)).decode()
    path.write_text(f"-----BEGIN {label}-----\n{body}-----END {label}-----\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message):
        (load_private_key if which == "key" else load_public_key)(path)
