"""The ``.edgepkg`` container: writing, and a strict reader that checks sizes before parsing.

Layout of format version 1 (all integers big-endian; see docs/FORMAT.md)::

    offset  size  field
    0       8     magic  b"EDGEPKG\\n"
    8       2     format version (1)
    10      2     flags (0; any other value is rejected)
    12      4     M = manifest length
    16      M     manifest: canonical JSON, the exact bytes that are signed
    16+M    4     E = envelope length
    20+M    E     envelope: JSON {"signatures": [...], "recipients": [...]}
    20+M+E  8     P = payload length
    28+M+E  P     payload (ciphertext chunks, or the plain model when unencrypted)
    end            nothing may follow

Every length is checked against :class:`Limits` and against the real file size before anything is
allocated or parsed, so a hostile header cannot make the reader allocate gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from edge_sdk.errors import (
    NOT_A_FILE_HINT,
    BundleFormatError,
    ManifestError,
    PayloadTooLargeError,
    UnsupportedVersionError,
    UsageError,
    excerpt,
)
from edge_sdk.files import NotARegularFile, open_regular, replacing
from edge_sdk.keys import TrustStore

from .encryption import RecipientEntry
from .hashing import PipelinedSHA256
from .manifest import Manifest
from .memory import Buffer, alloc_buffer
from .signing import MAX_SIGNATURE_BYTES, SignatureEntry, verify_signatures
from .strict_json import canonical_bytes, loads_strict

MAGIC = b"EDGEPKG\n"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_PREAMBLE = struct.Struct(">8sHHI")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: What a signature ``alg`` or a recipient ``kem`` may spell (docs/FORMAT.md, "The envelope").
ALG_NAME = re.compile(r"[a-z0-9][a-z0-9+._-]{0,63}")
MAX_RECIPIENT_ENC_BYTES = 4096
_READ_PIECE = 1024 * 1024
_SMALL_FILE = 4 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Every size cap the reader enforces, in one place (callers may tighten them)."""

    max_manifest_bytes: int = 256 * 1024
    max_envelope_bytes: int = 8 * 1024 * 1024
    max_signatures: int = 16
    max_recipients: int = 4096
    max_payload_bytes: int = 4 * 1024**3
    #: The largest plaintext model accepted (a profile's ``max_model_bytes`` tightens it).
    max_model_bytes: int = 4 * 1024**3

    @classmethod
    def for_model_size(cls, max_model_bytes: int) -> Limits:
        """Caps for a device that accepts models up to ``max_model_bytes``."""
        # The payload is the model plus one 16-byte tag per 4 KiB chunk at worst.
        overhead = 16 * (max_model_bytes // 4096 + 1)
        return cls(max_payload_bytes=max_model_bytes + overhead, max_model_bytes=max_model_bytes)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Bundle:
    """A parsed (not yet verified) bundle. ``payload`` is the stored ciphertext or plain model."""

    format_version: int
    manifest: Manifest
    manifest_bytes: bytes
    signatures: tuple[SignatureEntry, ...]
    recipients: tuple[RecipientEntry, ...]
    payload: Buffer
    #: SHA-256 of ``payload`` when the reader computed it while reading (saves a second pass).
    payload_sha256: str | None = None
    #: The payload was hashed as it streamed past and not kept (audits): ``payload`` is empty
    #: and ``payload_sha256`` is the digest of the ``manifest.payload.size`` bytes that were read.
    streamed: bool = False

    @cached_property
    def manifest_digest(self) -> bytes:
        """SHA-256 of the manifest bytes: binds recipient entries to this bundle."""
        return hashlib.sha256(self.manifest_bytes).digest()

    @property
    def digest(self) -> str:
        """The bundle's identity: SHA-256 (hex) of the signed manifest."""
        return self.manifest_digest.hex()

    def with_recipients(self, recipients: tuple[RecipientEntry, ...]) -> Bundle:
        """The same signed bundle with another recipient list."""
        return Bundle(
            self.format_version,
            self.manifest,
            self.manifest_bytes,
            self.signatures,
            recipients,
            self.payload,
            self.payload_sha256,
            self.streamed,
        )


def envelope_bytes(
    signatures: tuple[SignatureEntry, ...], recipients: tuple[RecipientEntry, ...]
) -> bytes:
    """Canonical JSON of the unsigned envelope."""
    return canonical_bytes(
        {
            "signatures": [
                {"keyid": s.key_id, "alg": s.alg, "sig": base64.b64encode(s.signature).decode()}
                for s in signatures
            ],
            "recipients": [
                {"keyid": r.key_id, "kem": r.kem, "enc": base64.b64encode(r.enc).decode()}
                for r in recipients
            ],
        }
    )


def write_bundle(bundle: Bundle, out: BinaryIO) -> int:
    """Serialize ``bundle`` to a binary stream; returns the number of bytes written."""
    env = envelope_bytes(bundle.signatures, bundle.recipients)
    parts = [
        _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(bundle.manifest_bytes)),
        bundle.manifest_bytes,
        _U32.pack(len(env)),
        env,
        _U64.pack(len(bundle.payload)),
    ]
    written = 0
    for part in parts:
        out.write(part)
        written += len(part)
    out.write(bundle.payload)
    return written + len(bundle.payload)


def save_bundle(bundle: Bundle, path: str | os.PathLike[str]) -> int:
    """Write atomically: a temp file beside ``path``, fsynced, then renamed over it (see
    :func:`edge_sdk.files.replacing`: one directory descriptor, an identity-checked rename)."""
    target = Path(path)
    try:
        with replacing(target, 0o644) as handle:
            size = write_bundle(bundle, handle)
    except OSError as exc:
        raise BundleFormatError(f"cannot write bundle {target}: {exc.strerror or exc}") from None
    return size


def bundle_to_bytes(bundle: Bundle) -> bytes:
    """Serialize to bytes (tests, and transports that send from memory)."""
    buf = io.BytesIO()
    write_bundle(bundle, buf)
    return buf.getvalue()


# -- reading -----------------------------------------------------------------------------------


class _Source:
    """Sequential reads from bytes or a file, with the total size known up front."""

    def __init__(
        self,
        data: bytes | bytearray | memoryview | None,
        handle: io.BufferedReader | None,
        size: int,
    ):
        self._view = memoryview(data) if data is not None else None
        self._handle = handle
        self.size = size
        self.pos = 0
        self.digest: str | None = None

    def take(self, n: int, what: str, *, hash_it: bool = False) -> memoryview:
        if n > self.size - self.pos:
            raise BundleFormatError(
                f"truncated bundle: {what} needs {n} bytes at offset {self.pos}, "
                f"only {self.size - self.pos} remain"
            )
        start, self.pos = self.pos, self.pos + n
        if self._view is not None:
            return self._view[start : self.pos]
        assert self._handle is not None
        buf = memoryview(alloc_buffer(n))
        hasher = PipelinedSHA256(n) if hash_it else None
        try:
            for at in range(0, max(n, 1), _READ_PIECE):
                piece = buf[at : at + _READ_PIECE]
                if self._handle.readinto(piece) != len(piece):
                    raise BundleFormatError(
                        f"truncated bundle: short read of {what} at offset {start + at}"
                    )
                if hasher is not None:
                    hasher.update(piece)  # hashed by a worker while the next piece is read
        finally:
            if hasher is not None:
                hasher.wait()
        self.digest = hasher.hexdigest() if hasher is not None else None
        return buf


def _field(obj: dict[str, Any], keys: set[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise BundleFormatError(f"envelope {where} must be an object")
    if set(obj) != keys:
        raise BundleFormatError(
            f"envelope {where} must have exactly the fields {', '.join(sorted(keys))}"
        )


def _b64decode(value: Any, where: str, limit: int) -> bytes:
    """Decode standard, padded base64 (RFC 4648 §4) of 1 to ``limit`` bytes, canonical only.

    Only one spelling of each byte string is accepted: ``validate=True`` refuses characters
    outside the alphabet and bad padding, and re-encoding refuses the rest — non-zero padding
    bits (``CY==`` for ``CQ==``) would otherwise give one signature many envelopes.
    """
    if not isinstance(value, str) or not 0 < len(value) <= 4 * -(-limit // 3):
        raise BundleFormatError(f"envelope {where} must be a base64 string of 1 to {limit} bytes")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleFormatError(f"envelope {where} is not valid base64") from None
    if len(decoded) > limit:  # the text-length test above lets up to two more bytes through
        raise BundleFormatError(f"envelope {where} must be a base64 string of 1 to {limit} bytes")
    if base64.b64encode(decoded).decode("ascii") != value:
        raise BundleFormatError(f"envelope {where} is not canonical base64 (non-zero padding bits)")
    return decoded


def _key_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise BundleFormatError(f"envelope {where} keyid must be 64 lowercase hex digits")
    return value


def _alg_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not ALG_NAME.fullmatch(value):
        raise BundleFormatError(
            f"envelope {where} must be an algorithm name: 1 to 64 of a-z 0-9 + . _ - "
            "(starting with a letter or digit)"
        )
    return value


def envelope_value_limit(limits: Limits) -> int:
    """The most JSON values (by :func:`~edge_sdk.format.strict_json.value_bound`) an envelope can hold.

    A well-formed envelope spends four of the bytes ``{ [ ,`` on its frame and at most four on
    each entry (its braces' ``{``, the commas between its three fields and the one before it),
    and no string in it may contain one (base64, hex and algorithm names cannot).
    """
    return 4 + 4 * (limits.max_signatures + limits.max_recipients)


def parse_envelope(
    raw: bytes, limits: Limits
) -> tuple[tuple[SignatureEntry, ...], tuple[RecipientEntry, ...]]:
    """Parse and structurally validate the envelope (no cryptography happens here).

    The envelope is not signed, so anything that lets one envelope be spelled several ways would
    make a bundle's bytes malleable. It must therefore be exactly the canonical JSON that
    :func:`envelope_bytes` writes, with canonical base64, and with no key id listed twice among
    the signatures or among the recipients. Its parse cost is bounded before parsing (see
    :func:`envelope_value_limit`).
    """
    if not raw.isascii():
        # Canonical JSON is ASCII; refusing other bytes first also keeps one non-ASCII character
        # from making Python hold the whole decoded envelope at four bytes per character.
        raise BundleFormatError("envelope is not ASCII (canonical JSON escapes everything else)")
    env = loads_strict(raw, "envelope", max_values=envelope_value_limit(limits))
    _field(env, {"signatures", "recipients"}, "")
    sigs, recs = env["signatures"], env["recipients"]
    if not isinstance(sigs, list) or len(sigs) > limits.max_signatures:
        raise BundleFormatError(
            f"envelope signatures must be a list of at most {limits.max_signatures}"
        )
    if not isinstance(recs, list) or len(recs) > limits.max_recipients:
        raise BundleFormatError(
            f"envelope recipients must be a list of at most {limits.max_recipients}"
        )
    signatures = []
    for i, s in enumerate(sigs):
        _field(s, {"keyid", "alg", "sig"}, f"signature {i}")
        signatures.append(
            SignatureEntry(
                _key_id(s["keyid"], f"signature {i}"),
                _alg_name(s["alg"], f"signature {i} alg"),
                _b64decode(s["sig"], f"signature {i} sig", MAX_SIGNATURE_BYTES),
            )
        )
    recipients = []
    for i, r in enumerate(recs):
        _field(r, {"keyid", "kem", "enc"}, f"recipient {i}")
        recipients.append(
            RecipientEntry(
                _key_id(r["keyid"], f"recipient {i}"),
                _alg_name(r["kem"], f"recipient {i} kem"),
                _b64decode(r["enc"], f"recipient {i} enc", MAX_RECIPIENT_ENC_BYTES),
            )
        )
    if len({s.key_id for s in signatures}) != len(signatures):
        raise BundleFormatError("envelope lists two signatures by the same key")
    if len({r.key_id for r in recipients}) != len(recipients):
        raise BundleFormatError("envelope lists the same recipient key twice")
    # The parsed value holds exactly the fields and (canonical) strings envelope_bytes would
    # write, so re-serialising it is the canonical test, without a second copy of every string.
    if canonical_bytes(env) != raw:
        raise BundleFormatError(
            "envelope is not in canonical form (key order, whitespace or escapes differ from "
            "canonical JSON)"
        )
    return tuple(signatures), tuple(recipients)


def _read(
    src: _Source, limits: Limits, trust: TrustStore | None = None, *, keep_payload: bool = True
) -> Bundle:
    if src.size < _PREAMBLE.size:
        raise BundleFormatError(
            f"not an edge-sdk bundle: {src.size} bytes is shorter than the {_PREAMBLE.size}-byte header"
        )
    magic, version, flags, m_len = _PREAMBLE.unpack(src.take(_PREAMBLE.size, "header"))
    if magic != MAGIC:
        raise BundleFormatError("not an edge-sdk bundle (bad magic bytes)")
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersionError(
            f"bundle format version {version} is not supported (this release reads "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))})",
            hint="upgrade edge-sdk",
        )
    if flags != 0:
        raise UnsupportedVersionError(f"bundle header flags {flags:#06x} are not supported")
    if m_len > limits.max_manifest_bytes:
        raise BundleFormatError(
            f"manifest length {m_len} exceeds the limit of {limits.max_manifest_bytes} bytes"
        )
    manifest_bytes = bytes(src.take(m_len, "manifest"))
    (e_len,) = _U32.unpack(src.take(4, "envelope length"))
    if e_len > limits.max_envelope_bytes:
        raise BundleFormatError(
            f"envelope length {e_len} exceeds the limit of {limits.max_envelope_bytes} bytes"
        )
    env_raw = bytes(src.take(e_len, "envelope"))
    (p_len,) = _U64.unpack(src.take(8, "payload length"))
    if p_len > limits.max_payload_bytes:
        raise PayloadTooLargeError(
            f"payload length {p_len} exceeds the limit of {limits.max_payload_bytes} bytes"
        )
    if p_len != src.size - src.pos:
        problem = "truncated" if p_len > src.size - src.pos else "has trailing data"
        raise BundleFormatError(
            f"bundle {problem}: header declares a {p_len}-byte payload, "
            f"{src.size - src.pos} bytes follow"
        )
    try:
        signatures, recipients = parse_envelope(env_raw, limits)
        manifest = Manifest.from_dict(_manifest_object(manifest_bytes))
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError) as exc:
        # A last line: every field is type-checked on purpose, but nothing a hostile header
        # spells may escape as anything but a format error.
        raise ManifestError(
            f"malformed bundle header: {type(exc).__name__}: {str(exc)[:120]}"
        ) from None
    if manifest.model.size > limits.max_model_bytes:
        raise PayloadTooLargeError(
            f"model is {manifest.model.size} bytes, over this device's limit of {limits.max_model_bytes}"
        )
    if manifest.payload.size != p_len:
        raise BundleFormatError(
            f"payload is {p_len} bytes but the manifest declares {manifest.payload.size}"
        )
    if not manifest.payload.encrypted and recipients:
        raise BundleFormatError("an unencrypted bundle must not list recipients")
    if manifest.payload.encrypted and not recipients:
        raise BundleFormatError("an encrypted bundle must list at least one recipient")
    if trust is not None:
        # Before a payload-sized allocation: an unsigned file must not cost the device its RAM.
        verify_signatures(manifest_bytes, signatures, trust)
    if not keep_payload:
        return Bundle(version, manifest, manifest_bytes, signatures, recipients, memoryview(b""),
                      None, streamed=True)  # fmt: skip
    payload = src.take(p_len, "payload", hash_it=True)
    return Bundle(version, manifest, manifest_bytes, signatures, recipients, payload, src.digest)


def _manifest_object(raw: bytes) -> dict[str, Any]:
    value = loads_strict(raw, "manifest")
    if not isinstance(value, dict):
        raise BundleFormatError("manifest must be a JSON object")
    return value


def open_bundle_file(path: Path) -> io.BufferedReader:
    """Open a bundle file for reading, refusing anything but a regular file.

    :func:`edge_sdk.files.open_regular` judges it before a byte is read: a FIFO or a device node
    planted where a release should be would otherwise block the reader (and a model watcher's
    thread) forever, or never end.

    Raises:
        UsageError: the file does not exist or is a directory.
        BundleFormatError: it is not a regular file (the message says what it is), or cannot be
            read.
    """
    try:
        return open_regular(path)
    except ValueError:  # a NUL byte: no file can have that name
        raise UsageError(f"bundle path {excerpt(str(path))} contains a NUL byte") from None
    except FileNotFoundError:
        raise UsageError(f"bundle {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a bundle") from None
    except NotARegularFile as exc:
        raise BundleFormatError(f"{path} is {exc.strerror}", hint=NOT_A_FILE_HINT) from None
    except OSError as exc:
        raise BundleFormatError(f"cannot read bundle {path}: {exc.strerror}") from None


def read_bundle(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    *,
    trust: TrustStore | None = None,
) -> Bundle:
    """Read and structurally validate a bundle from a path or from bytes.

    With ``trust``, the signatures are checked as soon as the header is parsed, before the payload
    is read into memory; the full verification is still :func:`edge_sdk.format.verify.verify_bundle`.

    Raises:
        BundleFormatError: not a bundle, truncated, oversized, malformed (subclasses narrow it).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read(_Source(source, None, len(source)), limits, trust)
    path = Path(source)
    with open_bundle_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= _SMALL_FILE:
            # One read instead of one per section; the size check happens before the read.
            data = handle.read(size)
            return _read(_Source(data, None, len(data)), limits, trust)
        return _read(_Source(None, handle, size), limits, trust)


# -- reading the header first and the payload piece by piece (devices) ------------------------------

#: The first read of a bundle file: the whole header of almost every bundle, in one system call.
_HEADER_READ = 64 * 1024


class PayloadReader:
    """The payload of a bundle whose header has been parsed and checked, read once, in order.

    From memory, :meth:`read` hands out views of the caller's bytes (no copy); from a file, it
    reads into the caller's buffer, so the payload is never held in two places.
    """

    def __init__(
        self,
        size: int,
        *,
        data: memoryview | None = None,
        handle: io.FileIO | io.BufferedReader | None = None,
    ) -> None:
        self.size = size
        self.pos = 0
        self._data = data
        self._handle = handle

    @property
    def in_memory(self) -> bool:
        """True when :meth:`read` returns views of a bundle held in memory."""
        return self._data is not None

    def read(self, n: int, into: memoryview | None = None) -> memoryview:
        """The next ``n`` payload bytes: a view of the bundle in memory, or read from the file
        into ``into[:n]`` (required for a file).

        Raises:
            BundleFormatError: the payload ends early (a file truncated while it is read).
        """
        if n > self.size - self.pos:
            raise BundleFormatError(
                f"truncated bundle: {n} payload bytes asked for at {self.pos} of {self.size}"
            )
        start, self.pos = self.pos, self.pos + n
        if self._data is not None:
            return self._data[start : self.pos]
        if self._handle is None or into is None or len(into) < n:
            raise UsageError("reading a payload from a file needs a buffer of the piece's size")
        view, got = into[:n], 0
        while got < n:
            try:
                count = self._handle.readinto(view[got:])
            except OSError as exc:
                raise BundleFormatError(
                    f"cannot read the bundle's payload: {exc.strerror}"
                ) from None
            if not count:
                raise BundleFormatError(
                    f"truncated bundle: the payload ended after {start + got} of {self.size} "
                    "bytes (the file changed while it was read)"
                )
            got += count
        return view


@contextlib.contextmanager
def open_parts(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    limits: Limits = DEFAULT_LIMITS,
    *,
    trust: TrustStore | None,
) -> Iterator[tuple[Bundle, PayloadReader]]:
    """Steps 1–3 of docs/FORMAT.md from the header alone; the payload is left for the caller.

    ``trust=None`` parses the header without judging its signatures (a deploy without a trust
    store still checks the payload against the manifest).

    Yields the parsed header — a ``streamed`` :class:`Bundle` with no payload and no payload
    digest, whose signatures satisfied ``trust`` — and a :class:`PayloadReader` at the payload.
    Only the header is read before the signatures are checked, so an unsigned file costs the
    device neither its RAM nor a read of its payload.

    Raises:
        BundleFormatError, SignatureError: as :func:`read_bundle` with ``trust``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = memoryview(source).cast("B")
        header = _read(_Source(data, None, len(data)), limits, trust, keep_payload=False)
        start = header_needs(data, limits)  # parsed: the lengths are exact
        yield header, PayloadReader(header.manifest.payload.size, data=data[start:])
        return
    path = Path(source)
    # Refuses a FIFO or device node before a byte is read (it would block the reader forever).
    with open_bundle_file(path) as handle:
        fd = handle.fileno()
        try:
            size = os.fstat(fd).st_size
            prefix = os.pread(fd, min(size, _HEADER_READ), 0)
            while (need := min(header_needs(prefix, limits), size)) > len(prefix):
                more = os.pread(fd, need - len(prefix), len(prefix))
                if not more:
                    break
                prefix += more
        except OSError as exc:
            raise BundleFormatError(f"cannot read bundle {path}: {exc.strerror}") from None
        if len(prefix) < min(header_needs(prefix, limits), size):
            raise BundleFormatError(
                f"truncated bundle: {path} ended after {len(prefix)} of {size} bytes "
                "(the file changed while it was read)"
            )
        header = _read(_Source(prefix, None, size), limits, trust, keep_payload=False)
        start = header_needs(prefix, limits)
        try:
            handle.seek(start)
        except OSError as exc:
            raise BundleFormatError(f"cannot read bundle {path}: {exc.strerror}") from None
        with contextlib.suppress(OSError, AttributeError):
            # Read once, front to back: ask for read-ahead, which a cold start from flash needs.
            os.posix_fadvise(fd, start, 0, os.POSIX_FADV_SEQUENTIAL)
        yield header, PayloadReader(header.manifest.payload.size, handle=handle)


# -- reading a bundle without keeping its payload (audits) ------------------------------------------

#: Bytes of payload read and hashed per request when a payload is streamed.
STREAM_PIECE = 1024 * 1024


def header_needs(prefix: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> int:
    """How many leading bytes hold the whole header, judged from the length fields in ``prefix``.

    Call it with what was read so far and read up to the answer until it stops growing. Lengths
    above the limits are clamped (the parse then refuses them), so a hostile header can never
    make a reader fetch more than the limits allow.
    """
    if len(prefix) < _PREAMBLE.size:
        return _PREAMBLE.size
    m_len: int = min(_U32.unpack_from(prefix, 12)[0], limits.max_manifest_bytes + 1)
    at = _PREAMBLE.size + m_len
    if len(prefix) < at + 4:
        return at + 4
    e_len: int = min(_U32.unpack_from(prefix, at)[0], limits.max_envelope_bytes + 1)
    return at + 4 + e_len + 8


def read_header(
    prefix: bytes, total_size: int, limits: Limits = DEFAULT_LIMITS, *, trust: TrustStore
) -> Bundle:
    """Parse and check a bundle's header (signatures included) from its leading bytes.

    ``prefix`` must hold :func:`header_needs` bytes of a file of ``total_size`` bytes. The result
    is ``streamed``: it has no payload; :func:`stream_payload_digest` completes it.

    Raises:
        BundleFormatError, SignatureError: as :func:`read_bundle` with ``trust``.
    """
    return _read(_Source(prefix, None, total_size), limits, trust, keep_payload=False)


def with_payload_digest(bundle: Bundle, sha256: str) -> Bundle:
    """A streamed bundle with the SHA-256 of the payload bytes that were read."""
    return Bundle(bundle.format_version, bundle.manifest, bundle.manifest_bytes, bundle.signatures,
                  bundle.recipients, bundle.payload, sha256, streamed=True)  # fmt: skip


class StreamedRead:
    """A sans-I/O reader of one bundle for audits: ask :meth:`request` what to read, :meth:`feed`
    it the bytes, until :meth:`request` says ``None``; :meth:`result` is the checked header with
    the payload's digest. The header (and its signatures) is checked before a single payload byte
    is asked for, and memory stays at one piece whatever size the file claims. The same object
    serves a local file and a file on an SSH target.
    """

    def __init__(
        self, size: int | None = None, limits: Limits = DEFAULT_LIMITS, *, trust: TrustStore
    ) -> None:
        #: The file's size; set it before the first :meth:`request` if not known at creation.
        self.size = size
        self.limits, self.trust = limits, trust
        self._prefix = b""
        #: The parsed header, once complete, whether or not its signatures then verify.
        self.parsed: Bundle | None = None
        self._header: Bundle | None = None
        self._digest = hashlib.sha256()
        self._offset = self._remaining = 0

    def request(self) -> tuple[int, int] | None:
        """The next ``(offset, length)`` to read, or None when done.

        Raises:
            BundleFormatError, SignatureError: the header, once complete, is refused.
        """
        if self.size is None:
            raise UsageError("StreamedRead needs the file's size before the first request")
        if self._header is None:
            need = min(header_needs(self._prefix, self.limits), self.size)
            if need > len(self._prefix):
                return len(self._prefix), need - len(self._prefix)
            header = _read(_Source(self._prefix, None, self.size), self.limits, keep_payload=False)
            self.parsed = header  # known before the signatures are judged, for reports
            verify_signatures(header.manifest_bytes, header.signatures, self.trust)
            self._header = header
            self._offset = header_needs(self._prefix, self.limits)  # parsed: lengths are exact
            self._remaining = self._header.manifest.payload.size
        if self._remaining:
            return self._offset, min(STREAM_PIECE, self._remaining)
        return None

    def feed(self, data: bytes) -> None:
        """The bytes read for the last request (fewer means the file ended early)."""
        if not data:
            raise BundleFormatError(
                f"truncated bundle: the file ended at offset {self._offset or len(self._prefix)}"
            )
        if self._header is None:
            self._prefix += data
            return
        data = data[: self._remaining]
        self._digest.update(data)
        self._offset += len(data)
        self._remaining -= len(data)

    def result(self) -> Bundle:
        """The streamed bundle (call after :meth:`request` returned None)."""
        if self._header is None or self._remaining:
            raise BundleFormatError("bundle read was not finished")
        return with_payload_digest(self._header, self._digest.hexdigest())


def stream_file(path: str | os.PathLike[str], reader: StreamedRead) -> Bundle:
    """Drive ``reader`` over a local file; the bundle read for an audit (payload hashed, not kept).

    Raises:
        BundleFormatError, SignatureError: as :func:`read_bundle` with a trust store (the
        reader's ``parsed`` header is kept when it was complete).
    """
    with open_bundle_file(Path(path)) as handle:
        reader.size = os.fstat(handle.fileno()).st_size
        while (wanted := reader.request()) is not None:
            reader.feed(os.pread(handle.fileno(), wanted[1], wanted[0]))
    return reader.result()
