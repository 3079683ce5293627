"""Keys on disk: formats, permissions, passphrases, key ids, trust stores."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from edge_sdk.errors import KeyFileError, TrustStoreError
from edge_sdk.keys import (
    DEVICE_ALGS,
    SIGNING_ALGS,
    TrustStore,
    generate_key,
    load_private_key,
    load_public_key,
    save_keypair,
)


@pytest.mark.parametrize(
    ("kind", "alg"), [("signing", a) for a in SIGNING_ALGS] + [("device", a) for a in DEVICE_ALGS]
)
def test_roundtrip_and_modes(tmp_path: Path, kind: str, alg: str) -> None:
    key = generate_key(kind, alg)  # type: ignore[arg-type]
    key_path, pub_path = save_keypair(key, tmp_path / "k")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub_path.stat().st_mode) == 0o644
    # kind= as callers pass it: a P-256 file is a signing key unless a device key is asked for.
    loaded = load_private_key(key_path, kind=kind)  # type: ignore[arg-type]
    assert loaded.key_id == key.key_id and loaded.alg == alg and loaded.kind == kind
    assert load_public_key(pub_path, kind=kind).key_id == key.key_id  # type: ignore[arg-type]
    assert b"PRIVATE KEY" not in pub_path.read_bytes()
    assert key.key_id not in repr(key) or "components" not in repr(key)


def test_key_id_matches_openssl(tmp_path: Path) -> None:
    key = generate_key("signing", "ecdsa-p256")
    _, pub = save_keypair(key, tmp_path / "k")
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(pub), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    import hashlib

    assert hashlib.sha256(der).hexdigest() == key.key_id


def test_private_repr_hides_material() -> None:
    key = generate_key("signing")
    assert "Ed25519PrivateKey" not in repr(key)


def test_loose_permissions_refused(tmp_path: Path) -> None:
    key_path, _ = save_keypair(generate_key("device"), tmp_path / "d")
    os.chmod(key_path, 0o644)
    with pytest.raises(KeyFileError, match="unsafe permissions 0644") as info:
        load_private_key(key_path)
    assert info.value.hint == f"chmod 600 {key_path}"


def test_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key("signing", "ed25519+mldsa65")
    key_path, _ = save_keypair(key, tmp_path / "s", passphrase=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in key_path.read_bytes()
    monkeypatch.delenv("EDGE_SDK_KEY_PASSPHRASE", raising=False)
    with pytest.raises(KeyFileError, match="encrypted and no passphrase"):
        load_private_key(key_path)
    with pytest.raises(KeyFileError, match="passphrase is wrong"):
        load_private_key(key_path, passphrase=b"wrong")
    monkeypatch.setenv("EDGE_SDK_KEY_PASSPHRASE", "correct horse")
    assert load_private_key(key_path).key_id == key.key_id


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    save_keypair(generate_key("signing"), tmp_path / "s")
    with pytest.raises(KeyFileError, match="already exists"):
        save_keypair(generate_key("signing"), tmp_path / "s")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no PEM block"),
        (b"hello", "no PEM block"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "malformed"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate, not a private key",
        ),
    ],
)
def test_malformed_private_keys(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=message):
        load_private_key(path)


def test_wrong_kind(tmp_path: Path) -> None:
    key_path, pub_path = save_keypair(generate_key("device"), tmp_path / "d")
    with pytest.raises(KeyFileError, match="is a device key, but a signing key is needed"):
        load_private_key(key_path, kind="signing")
    with pytest.raises(KeyFileError, match="is a device key, but a signing key is needed"):
        load_public_key(pub_path, kind="signing")


def test_unsupported_key_type(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = tmp_path / "rsa.pub"
    path.write_bytes(pem)
    with pytest.raises(KeyFileError, match="unsupported key type RSAPublicKey"):
        load_public_key(path)


def test_missing_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_private_key(tmp_path / "nope.key")


def test_trust_directory(tmp_path: Path) -> None:
    a, b, c = (generate_key("signing") for _ in range(3))
    for name, key in zip("abc", (a, b, c), strict=True):
        save_keypair(key, tmp_path / name)
    (tmp_path / "trust.toml").write_text(f'threshold = 2\nrevoked = ["{c.key_id}"]\n')
    store = TrustStore.load([tmp_path])
    assert set(store.keys) == {a.key_id, b.key_id, c.key_id}
    assert store.threshold == 2 and store.revoked == {c.key_id}
    assert TrustStore.load([tmp_path], threshold=1).threshold == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("threshold = 'two'", "threshold must be an integer"),
        ("revoked = ['abc']", "full 64-hex-digit key ids"),
        ("threshold = 5", "exceeds the 1 unrevoked"),
        ("trheshold = 1", "unknown setting"),
        ("threshold = = 1", "not valid TOML"),
    ],
)
def test_bad_trust_config(tmp_path: Path, config: str, message: str) -> None:
    save_keypair(generate_key("signing"), tmp_path / "a")
    (tmp_path / "trust.toml").write_text(config)
    with pytest.raises(TrustStoreError, match=message):
        TrustStore.load([tmp_path])


def test_empty_trust_store(tmp_path: Path) -> None:
    with pytest.raises(TrustStoreError, match="no signing keys"):
        TrustStore.load([tmp_path])
    with pytest.raises(TrustStoreError, match="does not exist"):
        TrustStore.load([tmp_path / "missing"])


def test_device_key_in_trust_store_refused(tmp_path: Path) -> None:
    _, pub = save_keypair(generate_key("device"), tmp_path / "d")
    with pytest.raises(KeyFileError, match="signing key is needed"):
        TrustStore.load([pub])
