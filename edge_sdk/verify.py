"""Verifying and opening bundles, always in the order shared/DESIGN.md fixes.

size caps → strict parse → signatures against pinned trust → expiry / target → ciphertext hash →
key unwrap → AEAD decrypt → plaintext hash. Nothing later in the chain runs before everything
earlier has passed, and the plaintext only ever lives in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .bundle import DEFAULT_LIMITS, Bundle, Limits, read_bundle
from .encryption import decrypt_payload, unwrap_content_key
from .errors import DecryptionError, ExpiredError, IntegrityError, TargetMismatchError, excerpt
from .hashing import PipelinedSHA256
from .keys import PrivateKey, TrustStore
from .manifest import Manifest
from .memory import Buffer, Releaser, freeze, writable_bytes
from .signing import verify_signatures

EXPIRY_WARNING = timedelta(days=14)


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify_bundle`: only ever built for a bundle that passed."""

    manifest: Manifest
    digest: str
    format_version: int
    signers: tuple[str, ...]
    unknown_signers: tuple[str, ...]
    recipients: tuple[str, ...]
    warnings: tuple[str, ...]


def check_target(
    manifest: Manifest, *, profile: str | None = None, hardware_ids: Sequence[str] = ()
) -> None:
    """Refuse a bundle built for another profile, or for hardware ids this device does not have.

    Raises:
        TargetMismatchError: naming the bundle's target and what this device is.
    """
    if profile is not None and manifest.target.profile != profile:
        raise TargetMismatchError(
            f"bundle {manifest.name} v{manifest.version} targets profile "
            f"{excerpt(manifest.target.profile)}, this device runs {excerpt(profile)}"
        )
    wanted = set(manifest.target.hardware_ids)
    if wanted and hardware_ids and not wanted & set(hardware_ids):
        raise TargetMismatchError(
            f"bundle {manifest.name} v{manifest.version} is for hardware "
            f"{', '.join(sorted(wanted))}; this device is {', '.join(hardware_ids)}"
        )


def verify_bundle(
    bundle: Bundle,
    trust: TrustStore,
    *,
    now: datetime | None = None,
    check_payload_hash: bool = True,
) -> Verification:
    """Everything an auditor can check without a device key.

    Raises:
        SignatureError, RevokedKeyError: the signatures do not satisfy the trust store.
        ExpiredError: the bundle's expiry has passed.
        IntegrityError: the stored payload does not match the signed digest.
    """
    report = verify_signatures(bundle.manifest_bytes, bundle.signatures, trust)
    manifest = bundle.manifest
    now = now or datetime.now(timezone.utc)
    warnings: list[str] = []
    expires = manifest.expires_at
    if expires is not None:
        if now >= expires:
            raise ExpiredError(
                f"bundle {manifest.name} v{manifest.version} expired at {manifest.expires}"
            )
        if expires - now < EXPIRY_WARNING:
            warnings.append(f"expires soon ({manifest.expires})")
    if not manifest.payload.encrypted:
        warnings.append("payload is not encrypted (signed-only bundle)")
    if report.unknown:
        warnings.append(
            f"signatures from keys not in the trust store: {', '.join(k[:16] for k in report.unknown)}"
        )
    if check_payload_hash:
        check_digest(
            bundle.payload,
            manifest.payload.sha256,
            manifest.payload.size,
            "payload",
            precomputed=bundle.payload_sha256,
        )
    return Verification(
        manifest=manifest,
        digest=bundle.digest,
        format_version=bundle.format_version,
        signers=report.valid,
        unknown_signers=report.unknown,
        recipients=tuple(r.key_id for r in bundle.recipients),
        warnings=tuple(warnings),
    )


def check_digest(
    data: Buffer, sha256: str, size: int, what: str, *, precomputed: str | None = None
) -> None:
    """Compare size and SHA-256 of ``data`` with the signed values.

    Raises:
        IntegrityError: naming ``what``.
    """
    if len(data) != size:
        raise IntegrityError(f"{what} is {len(data)} bytes, the signed manifest says {size}")
    actual = precomputed or hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise IntegrityError(f"{what} SHA-256 mismatch: signed {sha256[:16]}…, got {actual[:16]}…")


def decrypt_model(bundle: Bundle, device_key: PrivateKey | None, *, consume: bool = False) -> bytes:
    """Unwrap, decrypt and check the model bytes of a bundle that :func:`verify_bundle` passed.

    The model is decrypted (or decompressed) straight into the ``bytes`` object the interpreter
    will take, and hashed by a worker thread while later chunks are still being decrypted. With
    ``consume`` the bundle's ciphertext buffer is released behind the decryption cursor (the
    bundle must not be used afterwards).

    Raises:
        DecryptionError: no device key for an encrypted bundle, not a recipient, AEAD failure.
        IntegrityError: the plaintext does not match the signed model digest.
    """
    manifest = bundle.manifest
    payload = manifest.payload
    digest: str | None = None
    stored: Buffer = bundle.payload
    if payload.encrypted:
        if device_key is None:
            raise DecryptionError(
                f"bundle {manifest.name} v{manifest.version} is encrypted; a device key is needed",
                hint="pass --device-key",
            )
        key = unwrap_content_key(bundle.recipients, bundle.manifest_digest, device_key)
        stored_size = (
            payload.compressed_size if payload.compressed_size is not None else manifest.model.size
        )
        args = (
            payload.encryption,
            key,
            bytes.fromhex(payload.content_id),
            payload.chunk_size,
            stored_size,
        )
        if payload.compression == "none":
            obj, view = writable_bytes(stored_size)
            hasher = PipelinedSHA256(stored_size)
            releaser = Releaser(bundle.payload) if consume else None
            try:
                decrypt_payload(
                    bundle.payload,
                    *args,
                    on_chunk=hasher.update,
                    out=view,
                    on_consumed=releaser.consumed if releaser is not None else None,
                )
            finally:
                hasher.wait()  # the worker may still be reading `view`; never free it under it
            digest = hasher.hexdigest()
            plain = freeze(obj, view)
        else:
            stored = decrypt_payload(bundle.payload, *args)
    if payload.compression != "none":
        from .compression import decompress

        # Hash each piece as it is decompressed, as the uncompressed path hashes while it
        # decrypts: a serial hash after decompression would add a full pass to every load.
        hasher = PipelinedSHA256(manifest.model.size)
        try:
            plain = decompress(stored, payload.compression, manifest.model.size, hasher.update)
        finally:
            hasher.wait()  # as above: no freed buffer may still be queued for hashing
        digest = hasher.hexdigest()
    elif not payload.encrypted:
        plain, digest = bytes(stored), bundle.payload_sha256
    check_digest(
        plain, manifest.model.sha256, manifest.model.size, "decrypted model", precomputed=digest
    )
    return plain


@dataclass(frozen=True)
class OpenedBundle:
    """A verified bundle and its model bytes (in memory only)."""

    verification: Verification
    model_bytes: bytes


def open_bundle(
    source: str | os.PathLike[str] | bytes,
    trust: TrustStore,
    device_key: PrivateKey | None,
    *,
    now: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
    profile: str | None = None,
    hardware_ids: Sequence[str] = (),
) -> OpenedBundle:
    """Read, verify, decrypt and check a bundle; the model bytes never touch disk.

    Peak memory stays near one model size: the model is decrypted straight into its final
    ``bytes``, and the ciphertext's pages are released as decryption moves past them.
    """
    bundle = read_bundle(source, limits, trust=trust)
    verification = verify_bundle(bundle, trust, now=now)
    check_target(bundle.manifest, profile=profile, hardware_ids=hardware_ids)
    return OpenedBundle(verification, decrypt_model(bundle, device_key, consume=True))
