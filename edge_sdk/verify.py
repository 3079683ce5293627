"""Verifying and opening bundles, always in the order docs/FORMAT.md fixes.

size caps → strict parse → signatures against pinned trust → expiry → expected name → encryption
required → target profile / hardware id → runtime → anti-rollback → ciphertext hash → key unwrap →
AEAD decrypt → plaintext hash. Nothing later in the chain runs before everything earlier has
passed, and the plaintext only ever lives in memory.

That order is one function, :func:`check_bundle`, and every caller — ``edge_sdk.load``, the
``verify`` command, the update agent, audits, deploys — goes through it with a :class:`Policy` that
says which device checks apply. A new caller chooses checks by what it puts in the policy; it
cannot skip a step by forgetting to call it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol

from .bundle import DEFAULT_LIMITS, Bundle, Limits, read_bundle
from .encryption import decrypt_payload, unwrap_content_key
from .errors import (
    DecryptionError,
    ExpiredError,
    IntegrityError,
    TargetMismatchError,
    UsageError,
    VerificationError,
    escape_text,
    excerpt,
)
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


class RollbackState(Protocol):
    """What the anti-rollback check needs of a device's state (:class:`edge_sdk.state.VersionState`)."""

    def check(self, name: str, version: int, digest: str) -> None: ...


@dataclass(frozen=True)
class RuntimeRelease:
    """The LiteRT runtime this device runs, and the TFLite release it corresponds to."""

    package: str
    version: str
    tflite_release: str


@dataclass(frozen=True)
class Policy:
    """Which checks :func:`check_bundle` applies beyond those every reader applies.

    Every reader checks structure, signatures against ``trust`` (threshold, revocation) and expiry.
    The other fields switch on device checks; each is off when left at its default.

    Attributes:
        trust: the pinned trust store; it alone decides which keys and algorithms are accepted.
        now: the time expiry is judged at (default: the system clock).
        expected_name: the bundle name the caller asked for; another signed name is refused (the
            anti-rollback counter is per name, so a substituted name would bypass it).
        require_encryption: refuse signed-only bundles (a device with a device key wants this).
        profile: the device profile name the bundle must target.
        runtime_package: the runtime package the device's profile names.
        hardware_ids: this device's ids; a bundle for other hardware is refused.
        runtime: the runtime actually installed; a model needing a newer TFLite is refused.
        state: the anti-rollback state (older versions, or the same version with other bytes,
            are refused).
        device_key: open the payload: unwrap, decrypt, check the model hash.
        check_payload_hash: check the stored payload against the signed SHA-256 before opening.
    """

    trust: TrustStore
    now: datetime | None = None
    expected_name: str | None = None
    require_encryption: bool = False
    profile: str | None = None
    runtime_package: str | None = None
    hardware_ids: tuple[str, ...] = field(default=())
    runtime: RuntimeRelease | None = None
    state: RollbackState | None = None
    device_key: PrivateKey | None = None
    check_payload_hash: bool = True


def check_bundle(bundle: Bundle, policy: Policy) -> Verification:
    """Every check before the content key is unwrapped, in the order of docs/FORMAT.md.

    Raises:
        SignatureError, RevokedKeyError: the signatures do not satisfy the trust store.
        ExpiredError: the bundle's expiry has passed.
        TargetMismatchError: another name, profile, hardware id or runtime than this device's.
        VerificationError: a signed-only bundle where encryption is required.
        RollbackError: older than (or conflicting with) a version this device accepted.
        IntegrityError: the stored payload does not match its signed digest.
    """
    verification = verify_bundle(bundle, policy.trust, now=policy.now, check_payload_hash=False)
    manifest = bundle.manifest
    what = f"bundle {manifest.name} v{manifest.version}"
    if policy.expected_name is not None and manifest.name != policy.expected_name:
        raise TargetMismatchError(
            f"{what} was loaded where {excerpt(policy.expected_name)} was expected",
            hint="a bundle signed under another name cannot stand in for this one; deploy the "
            "right bundle to this name's directory",
        )
    if policy.require_encryption and not manifest.payload.encrypted:
        raise VerificationError(
            f"{what} is signed only (not encrypted) and this device requires encrypted bundles",
            hint="package it with --recipient for this device's key, or load with "
            "require_encryption=False (CLI: --allow-unencrypted) if that is intended",
        )
    check_target(manifest, profile=policy.profile, hardware_ids=policy.hardware_ids)
    if policy.runtime_package is not None and manifest.target.runtime != policy.runtime_package:
        raise TargetMismatchError(
            f"{what} was checked for {manifest.target.runtime} {manifest.target.runtime_version}, "
            f"profile {policy.profile or '?'} runs {policy.runtime_package}"
        )
    if policy.runtime is not None:
        check_runtime(manifest, policy.runtime)
    if policy.state is not None:
        policy.state.check(manifest.name, manifest.version, verification.digest)
    if policy.check_payload_hash:
        check_payload(bundle)
    return verification


def _release_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def check_runtime(manifest: Manifest, runtime: RuntimeRelease) -> None:
    """Refuse a model that needs a newer LiteRT than the installed runtime.

    Packaging recorded in the signed manifest the first TFLite release that runs every op version
    the model uses (``reports.compatibility.required_release``). Without that record, only the
    runtime package the bundle was checked for is accepted.

    Raises:
        TargetMismatchError: naming the model's need and what this device has.
    """
    compat = manifest.reports.get("compatibility")
    needed = compat.get("required_release") if isinstance(compat, dict) else None
    what = f"bundle {manifest.name} v{manifest.version}"
    if not isinstance(needed, str) or not needed:
        if runtime.package != manifest.target.runtime:
            raise TargetMismatchError(
                f"{what} was checked for {manifest.target.runtime}, this device runs {runtime.package}",
                hint=f"install {manifest.target.runtime}, or pin it with EDGE_SDK_BACKEND",
            )
        return
    if _release_tuple(runtime.tflite_release) < _release_tuple(needed):
        raise TargetMismatchError(
            f"{what} needs TFLite {escape_text(needed[:20])} or newer; this device runs {runtime.package} "
            f"{runtime.version} (TFLite {runtime.tflite_release})",
            hint=f"re-package for a profile with {runtime.package} {runtime.version}, or upgrade the runtime",
        )


def check_target(
    manifest: Manifest, *, profile: str | None = None, hardware_ids: Sequence[str] = ()
) -> None:
    """Refuse a bundle built for another profile, or for hardware ids this device does not have.

    Raises:
        TargetMismatchError: naming the bundle's target and what this device is.
    """
    try_here = (
        "load it on the board it was built for, or re-package it for this one (--profile); to try "
        "it on another machine, pass allow_target_mismatch=True (CLI: --allow-target-mismatch), "
        "which skips only this check"
    )
    if profile is not None and manifest.target.profile != profile:
        raise TargetMismatchError(
            f"bundle {manifest.name} v{manifest.version} targets profile "
            f"{excerpt(manifest.target.profile)}, this device runs {excerpt(profile)}",
            hint=try_here,
        )
    wanted = set(manifest.target.hardware_ids)
    if wanted and hardware_ids and not wanted & set(hardware_ids):
        raise TargetMismatchError(
            f"bundle {manifest.name} v{manifest.version} is for hardware "
            f"{', '.join(sorted(wanted))}; this device is {', '.join(hardware_ids)}",
            hint=try_here,
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
        check_payload(bundle)
    return Verification(
        manifest=manifest,
        digest=bundle.digest,
        format_version=bundle.format_version,
        signers=report.valid,
        unknown_signers=report.unknown,
        recipients=tuple(r.key_id for r in bundle.recipients),
        warnings=tuple(warnings),
    )


def check_payload(bundle: Bundle) -> None:
    """The stored payload against its signed size and SHA-256 (kept, or hashed as it streamed).

    Raises:
        IntegrityError: the payload differs from what the manifest signs.
    """
    signed = bundle.manifest.payload
    if bundle.streamed:
        # Streamed: the reader hashed exactly signed.size bytes (the header said so, and the
        # file size matched); only the digest is left to compare.
        if bundle.payload_sha256 != signed.sha256:
            raise IntegrityError(
                f"payload SHA-256 mismatch: signed {signed.sha256[:16]}…, "
                f"got {str(bundle.payload_sha256)[:16]}…"
            )
        return
    check_digest(bundle.payload, signed.sha256, signed.size, "payload",
                 precomputed=bundle.payload_sha256)  # fmt: skip


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
    if bundle.streamed:
        raise UsageError("this bundle was read for an audit: its payload was hashed, not kept")
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


def open_verified(
    source: str | os.PathLike[str] | bytes,
    policy: Policy,
    limits: Limits = DEFAULT_LIMITS,
    *,
    decrypt: bool = True,
) -> OpenedBundle:
    """Read, check (:func:`check_bundle`) and, with ``decrypt``, open a bundle in memory.

    The model bytes never touch disk; peak memory stays near one model size: the model is
    decrypted straight into its final ``bytes``, and the ciphertext's pages are released as
    decryption moves past them. Without ``decrypt``, ``model_bytes`` is empty.

    Raises:
        DecryptionError: decrypting an encrypted bundle without the policy's device key, or as
            a device that is not a recipient.
    """
    bundle = read_bundle(source, limits, trust=policy.trust)
    verification = check_bundle(bundle, policy)
    if not decrypt:
        return OpenedBundle(verification, b"")
    return OpenedBundle(verification, decrypt_model(bundle, policy.device_key, consume=True))


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
    """Read, verify, decrypt and check a bundle: :func:`open_verified` with a small policy."""
    policy = Policy(trust, now=now, profile=profile, hardware_ids=tuple(hardware_ids),
                    device_key=device_key)  # fmt: skip
    return open_verified(source, policy, limits)
