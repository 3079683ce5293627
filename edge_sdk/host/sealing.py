"""Sealing: model bytes → signed manifest → per-device encrypted bundle (host side).

The order matters: compress and encrypt first (the manifest records the ciphertext digest), then
build and sign the manifest, then wrap the content key for each recipient with the manifest digest
bound into HPKE's ``info``.

Compression only where it pays. Every load of a zstd payload pays a decompression pass (13.9 MB of
MobileNetV2 float32: ~10 ms on an x86 core, several times that on a Cortex-A72) that cannot start
before the payload's digest has been checked, while the bytes it saves are only read once per
load and sent once per deploy. Trained float32 weights and quantized models save 8–13 % with zstd;
pruned models save about half or more. So the packager measures the saving and keeps zstd only when it
saves at least :data:`MIN_COMPRESSION_SAVING` of the model's bytes; below that the payload is
stored uncompressed (``payload.compression`` says which, and ``reports.compression`` records the
measurement and the decision, signed with the rest of the manifest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from edge_sdk.errors import UsageError
from edge_sdk.format.bundle import Bundle
from edge_sdk.format.compression import DEFAULT_LEVEL, compress
from edge_sdk.format.encryption import (
    DEFAULT_CHUNK_SIZE,
    encrypt_payload,
    new_content_key,
    unwrap_content_key,
    wrap_content_key,
)
from edge_sdk.format.manifest import (
    ENCRYPTIONS,
    Manifest,
    ModelInfo,
    PayloadInfo,
    Target,
    TensorSpec,
    format_time,
)
from edge_sdk.format.signing import sign_manifest
from edge_sdk.keys import PrivateKey, PublicKey

#: zstd is kept only when it saves at least this share of the model's bytes (see the docstring).
MIN_COMPRESSION_SAVING = 0.20


def seal_bundle(
    model_bytes: bytes,
    *,
    name: str,
    version: int,
    target: Target,
    signers: Sequence[PrivateKey],
    recipients: Sequence[PublicKey] = (),
    aead: str = "aes-256-gcm",
    inputs: Sequence[TensorSpec] = (),
    outputs: Sequence[TensorSpec] = (),
    expires: datetime | None = None,
    created: datetime | None = None,
    reports: Mapping[str, Any] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    compression: str = "none",
    compression_level: int | None = None,
    min_compression_saving: float = MIN_COMPRESSION_SAVING,
    attest: Callable[[Manifest], Mapping[str, Any]] | None = None,
    model_format: str = "tflite",
) -> Bundle:
    """Build a signed bundle; encrypted for ``recipients`` when any are given, else signed-only.

    ``compression`` is a request: the payload is stored compressed only when that saves at least
    ``min_compression_saving`` of the model's bytes (0 keeps it whatever it saves, even nothing).
    ``attest`` builds the signed build attestation from the finished manifest; it is stored as
    ``reports["provenance"]`` (docs/FORMAT.md), so the bundle signature covers it too.
    ``model_format`` is the manifest's ``model.format``: ``tflite``, or ``litertlm`` for a
    LiteRT-LM generative model.

    Raises:
        UsageError: inconsistent options (e.g. an unknown AEAD).
        SignatureError, KeyFileError: bad signing keys.
        ManifestError: a field is invalid (name, version, expiry, tensors…).
    """
    if aead not in ENCRYPTIONS or aead == "none":
        raise UsageError(f"unknown AEAD {aead!r}; choose aes-256-gcm or chacha20-poly1305")
    if any(r.kind != "device" for r in recipients):
        raise UsageError("recipients must be device public keys")
    created = created or datetime.now(timezone.utc)
    model = ModelInfo(
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        size=len(model_bytes),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        format=model_format,
    )
    stored: bytes | bytearray = model_bytes
    compressed_size = None
    reports = dict(reports or {})
    if compression != "none":
        packed = compress(
            model_bytes, compression, *([compression_level] if compression_level else [])
        )
        saving = 1 - len(packed) / len(model_bytes) if model_bytes else 0.0
        kept = min_compression_saving <= 0 or saving >= min_compression_saving
        reports.setdefault("compression", {
            "method": compression, "level": compression_level or DEFAULT_LEVEL,
            "saving": round(saving, 4), "min_saving": min_compression_saving,
            "stored": compression if kept else "none",
        })  # fmt: skip
        if kept:
            stored, compressed_size = packed, len(packed)
        else:
            compression = "none"
    content_id = os.urandom(16)
    key = new_content_key() if recipients else b""
    if recipients:
        stored = encrypt_payload(stored, aead, key, content_id, chunk_size)
    payload = PayloadInfo(
        encryption=aead if recipients else "none",
        sha256=hashlib.sha256(stored).hexdigest(),
        size=len(stored),
        chunk_size=chunk_size,
        content_id=content_id.hex(),
        compression=compression,
        compressed_size=compressed_size,
    )
    manifest = Manifest(
        name=name,
        version=version,
        created=format_time(created),
        expires=format_time(expires) if expires else None,
        target=target,
        model=model,
        payload=payload,
        reports=reports,
    )
    if attest is not None:
        reports = {**manifest.reports, "provenance": dict(attest(manifest))}
        manifest = dataclasses.replace(manifest, reports=reports)
    manifest_bytes = manifest.to_bytes()
    signatures = sign_manifest(manifest_bytes, signers)
    digest = hashlib.sha256(manifest_bytes).digest()
    wrapped = wrap_content_key(key, digest, recipients) if recipients else ()
    return Bundle(1, manifest, manifest_bytes, signatures, wrapped, stored)


def add_recipients(bundle: Bundle, opener: PrivateKey, new: Sequence[PublicKey]) -> Bundle:
    """Give more devices access to a sealed bundle without re-signing it.

    ``opener`` is a device key that is already a recipient (e.g. the publisher's own escrow key):
    it unwraps the content key, which is then wrapped for each new device.

    Raises:
        UsageError: the bundle is not encrypted.
        DecryptionError: ``opener`` is not a recipient.
    """
    if not bundle.manifest.payload.encrypted:
        raise UsageError("a signed-only bundle has no recipients to add to")
    key = unwrap_content_key(bundle.recipients, bundle.manifest_digest, opener)
    known = {r.key_id for r in bundle.recipients}
    fresh = [k for k in new if k.key_id not in known]
    return bundle.with_recipients(
        bundle.recipients + wrap_content_key(key, bundle.manifest_digest, fresh)
    )
