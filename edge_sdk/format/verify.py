"""Verifying and opening bundles, always in the order docs/FORMAT.md fixes.

size caps → strict parse → signatures against pinned trust → expiry → expected name → encryption
required → target profile / hardware id → runtime → anti-rollback → ciphertext hash → key unwrap →
AEAD decrypt → decompression → plaintext hash. Nothing later in the chain runs before everything
earlier has passed, with one exception that changes neither what is refused nor which error says
so: the two hashes, the key unwrap and the AEAD run together, in one pass over the payload, and
the first of them to fail *in this order* is reported (:func:`open_payload`; docs/FORMAT.md,
"Steps 6–10 in one pass"). The plaintext only ever lives in memory.

That order is one function, :func:`check_bundle`, and every caller — ``edge_sdk.load``, the
``verify`` command, the update agent, audits, deploys — goes through it with a :class:`Policy` that
says which device checks apply. A new caller chooses checks by what it puts in the policy; it
cannot skip a step by forgetting to call it.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Protocol

from edge_sdk.errors import (
    DecryptionError,
    EdgeSDKError,
    ExpiredError,
    IntegrityError,
    ModelKindError,
    TargetMismatchError,
    UsageError,
    VerificationError,
    escape_text,
    excerpt,
)
from edge_sdk.keys import PrivateKey, TrustStore

from .bundle import DEFAULT_LIMITS, Bundle, Limits, PayloadReader, open_parts
from .encryption import PayloadDecryptor, unwrap_content_key
from .hashing import MODEL_WORKER, PAYLOAD_WORKER, PipelinedSHA256
from .key_slip import verify_key_slip
from .litertlm import LLM_RUNTIME
from .manifest import Manifest
from .memory import (
    Buffer,
    alloc_buffer,
    freeze,
    keep_out_of_dumps,
    populate,
    wipe,
    writable_bytes,
)
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
    """What the anti-rollback check needs of a device's state (:class:`edge_sdk.device.state.VersionState`)."""

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
        check_payload_hash: check the stored payload against the signed SHA-256 (step 6, which
            runs beside decryption and is judged before it).
        key_slip: this device's key slip (the file's bytes, unparsed): step 7 takes the content
            key from it, after checking it against ``trust``, this bundle and ``device_key``,
            instead of from the bundle's recipient entries.
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
    key_slip: bytes | None = None


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
    if manifest.model.format == "litertlm":
        # LiteRT-LM's engine runs it, whatever .tflite runtime the profile names; TFLite op
        # versions (check_runtime) do not apply. Its loader checks that the engine is installed.
        if policy.runtime_package is not None and manifest.target.runtime != LLM_RUNTIME:
            raise TargetMismatchError(
                f"{what} holds a LiteRT-LM model but names runtime "
                f"{escape_text(manifest.target.runtime[:40])}, not {LLM_RUNTIME}"
            )
    else:
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


def decrypt_model(
    bundle: Bundle,
    device_key: PrivateKey | None,
    *,
    key_slip: bytes | None = None,
    trust: TrustStore | None = None,
) -> bytes:
    """Unwrap, decrypt and check the model bytes of a bundle that :func:`verify_bundle` passed.

    Steps 7–10 of docs/FORMAT.md over a payload already in memory (step 6 was the caller's).
    A device opens bundles with :func:`open_verified`, which reads the payload once and runs
    steps 6–10 together.

    Raises:
        UsageError: the bundle was read for an audit (its payload was hashed, not kept).
        DecryptionError: no device key for an encrypted bundle, not a recipient, AEAD failure.
        IntegrityError: the plaintext does not match the signed model digest.
    """
    if bundle.streamed:
        raise UsageError("this bundle was read for an audit: its payload was hashed, not kept")
    data = memoryview(bundle.payload).cast("B")
    return open_payload(bundle, PayloadReader(len(data), data=data), device_key,
                        check_payload_hash=False, key_slip=key_slip, trust=trust)  # fmt: skip


#: Plaintext bytes per piece when a payload is read from a file (a piece is whole chunks).
READ_PIECE = 1024 * 1024
#: Read buffers when the payload hash runs on a worker: it works on one while the next is read.
RING_PIECES = 2


class ModelSink(Protocol):
    """Where :func:`open_payload` writes a model instead of a new ``bytes`` (sealed memory)."""

    def allocate(self, size: int) -> memoryview | None:
        """A writable buffer of exactly ``size`` bytes, or ``None`` to take a ``bytes`` as
        without a sink (a model too small to be worth it); called at most once."""
        ...


def open_payload(
    header: Bundle,
    source: PayloadReader,
    device_key: PrivateKey | None,
    *,
    check_payload_hash: bool = True,
    sink: ModelSink | None = None,
    key_slip: bytes | None = None,
    trust: TrustStore | None = None,
    on_content_key: Callable[[bytes], None] | None = None,
) -> bytes:
    """Steps 6–10 of docs/FORMAT.md in one pass over the payload; the model only if all pass.

    ``header`` is a bundle that passed steps 1–5 (its payload, if any, is not used: ``source``
    is). The payload is read once, in pieces of whole chunks, through one or two small buffers.
    Each piece is hashed (step 6), then authenticated and decrypted (steps 7–8) straight into the
    model's final ``bytes``, whose SHA-256 (step 10) a worker thread computes on another core
    meanwhile. A zstd stream is decompressed (step 9) only once steps 6–8 have passed — it is
    then exactly the stream the publisher signed — with the model hash beside it.

    Whatever fails, the error raised is the one of the earliest step that fails, as if the steps
    had run one after the other (docs/FORMAT.md, "Checks, in order"): a failure in steps 7–8
    stops decryption, and the rest of the payload is still read and hashed so that step 6 can be
    judged first. Nothing is returned before every step has passed, and buffers decrypted into
    are wiped when the bundle is refused.

    With a ``sink``, the model is written into the buffer ``sink.allocate`` gives (sealed memory
    for runtimes that open a path, :mod:`edge_sdk.device.sealed_memory`) instead of a new
    ``bytes``, and ``b""`` is returned once every step has passed; on a refusal that buffer is
    wiped like the others. No view of it is kept after return. A sink that declines the size
    (``allocate`` returns ``None``) gets the ``bytes`` path, and the model is returned.

    ``on_content_key`` is given the unwrapped content key of an encrypted payload once every
    step has passed (a device derives the key of its local weight cache from it).

    Raises:
        IntegrityError: step 6 or step 10 (and a corrupt or short zstd stream, step 9).
        DecryptionError: steps 7–8 (no device key, not a recipient, a chunk that fails).
        PayloadTooLargeError: the zstd stream decompresses to more than ``model.size``.
        BundleFormatError: the file is cut short while it is read.
    """
    manifest = header.manifest
    payload = manifest.payload
    if source.size != payload.size:
        raise IntegrityError(f"payload is {source.size} bytes, expected {payload.size}")
    # Before any plaintext exists: every path that opens a model (load, load_llm, verify
    # --device-key, the fleet agent) keeps it out of core dumps and away from other processes.
    keep_out_of_dumps()
    compressed = payload.compression != "none"
    stored_size = payload.compressed_size if compressed and payload.compressed_size is not None \
        else manifest.model.size  # fmt: skip
    # Encrypted and uncompressed: the payload is hashed here, as it is read (no buffer to wait
    # for), and the model on a worker at the same time. Otherwise only one hash runs at a time —
    # the model's comes after decompression — so the payload's runs on a worker, beside reading.
    inline = payload.encrypted and not compressed
    payload_hash = (
        PipelinedSHA256(payload.size, None if inline else PAYLOAD_WORKER)
        if check_payload_hash
        else None
    )
    model_hash = PipelinedSHA256(manifest.model.size, MODEL_WORKER)
    refusal: EdgeSDKError | None = None  # the first failure of steps 7–8, raised after step 6
    model_obj, model_view = b"", memoryview(b"")
    stream: memoryview | None = None  # the stored plaintext: a zstd stream
    decrypted: list[memoryview] = []  # buffers holding decrypted bytes: wiped on a refusal

    sunk = False  # the model went into the sink's buffer
    decryptor: PayloadDecryptor | None = None

    def allocate(size: int) -> tuple[bytes, memoryview]:
        nonlocal sunk
        view = sink.allocate(size) if sink is not None else None
        sunk = view is not None
        return (b"", view) if view is not None else writable_bytes(size)

    try:
        if not payload.encrypted and not compressed:
            # The payload is the model (the consistency rules make their digests equal): read it
            # straight into the model's bytes, and hash it once.
            model_obj, model_view = allocate(payload.size)
            _read_all(source, model_hash, into=model_view)
            payload_hash = model_hash if check_payload_hash else None
        elif not payload.encrypted:
            stream = _read_all(source, payload_hash)
        else:
            decryptor, refusal = _decryptor(header, device_key, stored_size, key_slip, trust)
            if compressed:
                stream = memoryview(alloc_buffer(stored_size))
                target = stream
            else:
                model_obj, model_view = allocate(stored_size)
                target = model_view
                if payload_hash is not None and not sunk:
                    # This thread reads and hashes the payload, the longer of the two paths; the
                    # model hash's worker is idle until the first chunk is decrypted, so it
                    # faults the model's pages in meanwhile, ahead of the decryption.
                    model_hash.run_first(functools.partial(populate, model_obj))
            decrypted.append(target)
            sealed = decryptor.sealed_chunk if decryptor is not None else READ_PIECE
            done = 0  # plaintext bytes decrypted and queued for the model hash
            for piece in _pieces(source, sealed * max(1, READ_PIECE // sealed), payload_hash):
                if refusal is not None or decryptor is None:
                    if payload_hash is None:
                        break  # no step 6 to judge first
                    continue  # keep reading: step 6 decides first
                try:
                    decryptor.open_into(piece, target)
                except (DecryptionError, IntegrityError) as exc:
                    refusal = exc
                    continue
                if not compressed:
                    end = min(decryptor.index * decryptor.chunk_size, stored_size)
                    model_hash.update(target[done:end])
                    done = end
            if refusal is None and decryptor is not None and decryptor.index != decryptor.chunks:
                refusal = IntegrityError(
                    f"payload ends after chunk {decryptor.index} of {decryptor.chunks}"
                )
        if payload_hash is not None:  # step 6
            actual = payload_hash.hexdigest()
            if actual != payload.sha256:
                raise IntegrityError(
                    f"payload SHA-256 mismatch: signed {payload.sha256[:16]}…, got {actual[:16]}…"
                )
        if refusal is not None:  # steps 7–8
            raise refusal
        if stream is not None:  # step 9, on the signed stream only
            from .compression import decompress_into

            model_obj, model_view = allocate(manifest.model.size)
            decrypted.append(model_view)
            decompress_into(stream, payload.compression, model_view, model_hash.update)
        _check_model(manifest, len(model_view), model_hash.hexdigest())  # step 10
        if on_content_key is not None and decryptor is not None:
            on_content_key(decryptor.content_key)
        if sunk:
            # The sink's owner seals its buffer next, which needs every view of it released.
            model_view.release()
            decrypted.clear()
            return b""
        return freeze(model_obj, model_view)
    except BaseException:
        for hasher in (payload_hash, model_hash):
            if hasher is not None:
                hasher.wait()  # never wipe a buffer a worker is still reading
        for buffer in decrypted:
            wipe(buffer)
        raise
    finally:
        model_hash.wait()
        if payload_hash is not None:
            payload_hash.wait()


def _check_model(manifest: Manifest, size: int, sha256: str) -> None:
    """Step 10: the model's size and SHA-256 against the signed ``model``."""
    if size != manifest.model.size:
        raise IntegrityError(
            f"decrypted model is {size} bytes, the signed manifest says {manifest.model.size}"
        )
    if sha256 != manifest.model.sha256:
        # Not the digest that was found: nothing derived from a refused plaintext leaves.
        raise IntegrityError(
            f"decrypted model SHA-256 mismatch: it does not match the signed "
            f"{manifest.model.sha256[:16]}…"
        )


def _decryptor(
    header: Bundle,
    device_key: PrivateKey | None,
    stored_size: int,
    key_slip: bytes | None = None,
    trust: TrustStore | None = None,
) -> tuple[PayloadDecryptor | None, EdgeSDKError | None]:
    """Step 7: the content key, as a decryptor for the payload, or the reason there is none.

    With a key slip the wrapped key comes from the slip, once the slip is checked (its own
    signatures against ``trust``, then that it names this bundle and this device key); else from
    the bundle's recipient entries.
    """
    manifest = header.manifest
    payload = manifest.payload
    if device_key is None:
        return None, DecryptionError(
            f"bundle {manifest.name} v{manifest.version} is encrypted; a device key is needed",
            hint="pass --device-key",
        )
    try:
        recipients = header.recipients
        if key_slip is not None:
            if trust is None:
                raise UsageError("a key slip is checked against a trust store; none was given")
            recipients = (verify_key_slip(key_slip, header, trust, device_key),)
        key = unwrap_content_key(recipients, header.manifest_digest, device_key)
        decryptor = PayloadDecryptor(
            payload.encryption, key, bytes.fromhex(payload.content_id), payload.chunk_size,
            stored_size,
        )  # fmt: skip
    except EdgeSDKError as exc:
        return None, exc
    return decryptor, None


def _read_all(
    source: PayloadReader, hasher: PipelinedSHA256 | None, into: memoryview | None = None
) -> memoryview:
    """The whole payload, hashed piece by piece as it is read: a view of a bundle in memory, or
    read into ``into`` (copied there from memory) or into a new buffer."""
    size = source.size
    if source.in_memory and into is None:
        whole = source.read(size)
        for at in range(0, size, READ_PIECE):
            if hasher is not None:
                hasher.update(whole[at : at + READ_PIECE])
        return whole
    target = into if into is not None else memoryview(alloc_buffer(size))
    for at in range(0, size, READ_PIECE):
        piece = target[at : min(at + READ_PIECE, size)]
        view = source.read(len(piece), piece)
        if source.in_memory:
            piece[:] = view
        if hasher is not None:
            hasher.update(piece)
    return target


def _pieces(
    source: PayloadReader, piece: int, hasher: PipelinedSHA256 | None
) -> Iterator[memoryview]:
    """The payload in pieces of ``piece`` bytes, each queued for ``hasher`` as it is read.

    From a file, pieces are read into one buffer, reused once the caller is done with a piece —
    or, when ``hasher`` runs on a worker, into a ring of :data:`RING_PIECES` buffers, one being
    reused only once the worker is done with it. The ciphertext never needs a payload-sized buffer.
    """
    size = source.size
    count = max(1, -(-size // piece))
    if source.in_memory:
        for k in range(count):
            view = source.read(min(piece, size - k * piece))
            if hasher is not None:
                hasher.update(view)
            yield view
        return
    slots = min(count, RING_PIECES if hasher is not None and hasher.pipelined else 1)
    ring = memoryview(alloc_buffer(min(size, slots * piece)))
    busy: list[Future[None] | None] = [None] * slots
    for k in range(count):
        slot = k % slots
        pending = busy[slot]
        if pending is not None:
            pending.result()  # the hash worker has finished with this buffer
        at = slot * piece
        view = source.read(min(piece, size - k * piece), ring[at : at + piece])
        busy[slot] = hasher.update(view) if hasher is not None else None
        yield view


def check_payload_stream(header: Bundle, source: PayloadReader) -> None:
    """Step 6 alone, reading the payload through a ring of small buffers (nothing is kept).

    Raises:
        IntegrityError: the payload differs from what the manifest signs.
    """
    signed = header.manifest.payload
    hasher = PipelinedSHA256(source.size, PAYLOAD_WORKER)
    try:
        for _ in _pieces(source, READ_PIECE, hasher):
            pass
    finally:
        hasher.wait()
    actual = hasher.hexdigest()
    if source.size != signed.size or actual != signed.sha256:
        raise IntegrityError(
            f"payload SHA-256 mismatch: signed {signed.sha256[:16]}…, got {actual[:16]}…"
        )


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
    on_header: Callable[[Bundle], None] | None = None,
    sink: ModelSink | None = None,
    on_content_key: Callable[[bytes], None] | None = None,
) -> OpenedBundle:
    """Read, check (:func:`check_bundle`) and, with ``decrypt``, open a bundle in memory.

    This is every step of docs/FORMAT.md's "Checks, in order": 1–3 on the header alone, before
    a byte of the payload is read (:func:`edge_sdk.format.bundle.open_parts`); 3–5 in
    :func:`check_bundle`; 6–10 in one pass over the payload (:func:`open_payload`). The model
    bytes never touch disk, and memory stays near one model size: the model is decrypted
    straight into its final ``bytes``, and the ciphertext passes through a few small buffers.
    Without ``decrypt``, only step 6 follows and ``model_bytes`` is empty.

    ``on_header`` sees the parsed header once its signatures are checked (a device's audit
    record names the bundle even when a later step refuses it).

    With a ``sink`` the model goes into the sink's buffer (see :func:`open_payload`) and
    ``model_bytes`` is empty. ``on_content_key`` is as for :func:`open_payload`.

    Raises:
        EdgeSDKError: the first check that fails, typed by its kind.
    """
    with open_parts(source, limits, trust=policy.trust) as (header, payload):
        if on_header is not None:
            on_header(header)
        # The payload is not in memory yet: step 6 runs below, as the payload is read.
        verification = check_bundle(header, replace(policy, check_payload_hash=False))
        if not decrypt:
            if policy.check_payload_hash:
                check_payload_stream(header, payload)
            return OpenedBundle(verification, b"")
        model = open_payload(header, payload, policy.device_key,
                             check_payload_hash=policy.check_payload_hash, sink=sink,
                             key_slip=policy.key_slip, trust=policy.trust,
                             on_content_key=on_content_key)  # fmt: skip
    return OpenedBundle(verification, model)


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


def require_kind(header: Bundle, kind: str, loader: str) -> None:
    """Refuse a bundle holding another kind of model, before any key is unwrapped."""
    found = header.manifest.model.format
    if found != kind:
        other = (
            "edge_sdk.load (CLI: edge-sdk run --input)"
            if found == "tflite"
            else "edge_sdk.load_llm (CLI: edge-sdk run --prompt, or edge-sdk chat)"
        )
        raise ModelKindError(
            f"bundle {header.manifest.name} v{header.manifest.version} holds a {found} model; "
            f"{loader} runs {kind} models",
            hint=f"open it with {other}",
        )
