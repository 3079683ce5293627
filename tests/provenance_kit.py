"""Shared by the provenance tests: real model-signing keys and signatures, in-toto verification."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge_sdk.host.model_signature import ModelSignatureOptions
from edge_sdk.host.packaging import PackageOptions, PackageResult, package_model
from edge_sdk.keys import PrivateKey, PublicKey
from edge_sdk.profiles import load_profile

VECTOR_MODEL = Path(__file__).parent / "vectors" / "model.tflite"


def model_signing_keypair(directory: Path, name: str = "training") -> tuple[Path, Path]:
    """A fresh P-256 key pair as model_signing takes it: PKCS#8 PEM (0600) and SPKI PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def sign_model(model: Path, private_key: Path, signature: Path, **hashing: Any) -> Path:
    """Sign a model file or directory with the real model-signing library (key-based, offline)."""
    import model_signing

    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
    if hashing:
        config.set_hashing_config(model_signing.hashing.Config().use_file_serialization(**hashing))
    config.sign(model, signature)
    return signature


def package_tflite(
    out: Path,
    signers: list[PrivateKey],
    *,
    model: Path = VECTOR_MODEL,
    check: ModelSignatureOptions | None = None,
    **options: Any,
) -> PackageResult:
    """``package`` a ready .tflite (no TensorFlow needed), with its attestation."""
    options.setdefault("name", "m")
    options.setdefault("version", 1)
    return package_model(
        model,
        out,
        load_profile("x86_64"),
        PackageOptions(model_signature=check, **options),
        signers,
    )


def in_toto_keys(public: PublicKey) -> list[Any]:
    """securesystemslib keys built from the PEM blocks of an edge-sdk .pub file, as a reviewer
    would: no key id is passed, so the envelope's keyids must be the library's default ones."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    blocks = re.findall(
        rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----\n", public.to_pem(), re.S
    )
    return [SSlibKey.from_crypto(load_pem_public_key(b)) for b in blocks]


def in_toto_verify(envelope_json: bytes, public: PublicKey) -> dict[str, Any]:
    """Verify an exported envelope with in-toto's own classes; return the statement.

    Every component of the key must have signed (threshold = number of PEM blocks), and the
    statement and its SLSA Provenance v1 predicate must parse strictly into in-toto-attestation's
    protobuf types.
    """
    from google.protobuf import json_format
    from in_toto.models.metadata import Envelope, Metadata
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    envelope = Metadata.from_dict(json.loads(envelope_json))
    assert isinstance(envelope, Envelope)
    keys = in_toto_keys(public)
    accepted = envelope.verify(keys, len(keys))
    assert set(accepted) == {k.keyid for k in keys}
    statement = json_format.Parse(envelope.payload, statement_pb2.Statement())
    Statement.copy_from_pb(statement).validate()
    data: dict[str, Any] = json.loads(envelope.payload)
    json_format.ParseDict(data["predicate"], provenance_pb2.Provenance())
    return data
