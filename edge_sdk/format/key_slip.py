"""Key slips: the content key of one bundle, wrapped for one device, signed by the publisher.

In-bundle recipient entries cost every device every other device's entry (209 B each, capped at
4,096 per bundle). A key slip is the same HPKE entry taken out of the envelope into a small file
of its own, so a release is encrypted once and each device downloads only its own slip
(docs/FORMAT.md, "Key slips"). Out of the bundle, nothing binds an entry to its bundle but HPKE's
``info`` — which a device can only test by trying to open it — so a slip also carries, signed,
which bundle (manifest digest, name, version, content id) and which device key it is for: a
device tells "a slip for last week's release" or "a slip for the board next door" from "a forged
slip" by a typed error, before any key is unwrapped.

The wrapped key is byte for byte an in-bundle recipient entry (same HPKE suite and ``info``), so
:func:`edge_sdk.encryption.unwrap_content_key` opens it, with a key held in a token too.

Every slip read is bounded: the file is at most :data:`MAX_SLIP_BYTES`, and its two JSON parts
are refused by length and value count before they are parsed.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sdk.errors import (
    BundleFormatError,
    KeySlipError,
    KeySlipMismatchError,
    UsageError,
    excerpt,
    unreadable_file,
)
from edge_sdk.files import open_regular
from edge_sdk.keys import PrivateKey, PublicKey, TrustStore

from .bundle import ALG_NAME, Bundle, Limits, envelope_bytes, parse_envelope
from .encryption import RecipientEntry, wrap_content_key
from .signing import SignatureEntry, sign_manifest, verify_signatures
from .strict_json import canonical_bytes, loads_strict

SLIP_MAGIC = b"EDGESLP\n"
SLIP_VERSION = 1
#: DSSE payload type of a slip body: a signature over a manifest never verifies as one over a slip.
SLIP_PAYLOAD_TYPE = "application/vnd.edge-sdk.key-slip+json;version=1"
#: The file name suffix of a slip (``model.edgepkg`` → ``model.edgeslip`` beside it).
SLIP_SUFFIX = ".edgeslip"
#: The largest slip file read. An X25519 or P-256 slip signed with Ed25519 or P-256 is about
#: 600 bytes; the cap leaves room for an X-Wing entry (1,168 B) and two hybrid signatures.
MAX_SLIP_BYTES = 16384
#: Signatures a slip may carry (the bundle allows 16; a slip is signed by the same few keys).
MAX_SLIP_SIGNATURES = 4
#: The wrapped key: as for an in-bundle recipient entry.
MAX_SLIP_ENC_BYTES = 4096
_FRAME = struct.Struct(">8sHHH")
_U16 = struct.Struct(">H")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
#: As the manifest's ``name`` (docs/FORMAT.md, "The manifest").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BODY_FIELDS = {"schema", "bundle", "name", "version", "content_id", "keyid", "kem", "enc"}
_SLIP_LIMITS = Limits(max_signatures=MAX_SLIP_SIGNATURES, max_recipients=0)
#: A well-formed body holds exactly one object of eight scalars.
_BODY_VALUES = 1 + len(_BODY_FIELDS)


@dataclass(frozen=True)
class KeySlip:
    """A parsed key slip (not yet verified: see :func:`verify_key_slip`)."""

    bundle_digest: str
    name: str
    version: int
    content_id: str
    entry: RecipientEntry
    body: bytes
    signatures: tuple[SignatureEntry, ...]

    def describe(self) -> str:
        """Which bundle and device the slip names, for messages (every field was validated)."""
        return (
            f"{self.name} v{self.version} (bundle {self.bundle_digest[:16]}…) "
            f"for device key {self.entry.key_id[:16]}"
        )


def slip_body(bundle: Bundle, entry: RecipientEntry) -> bytes:
    """The canonical JSON body of the slip carrying ``entry`` for ``bundle``."""
    manifest = bundle.manifest
    return canonical_bytes(
        {
            "schema": 1,
            "bundle": bundle.digest,
            "name": manifest.name,
            "version": manifest.version,
            "content_id": manifest.payload.content_id,
            "keyid": entry.key_id,
            "kem": entry.kem,
            "enc": base64.b64encode(entry.enc).decode("ascii"),
        }
    )


def slip_bytes(body: bytes, signatures: tuple[SignatureEntry, ...]) -> bytes:
    """Frame a body and its signatures as a slip file."""
    env = envelope_bytes(signatures, ())
    return b"".join(
        [_FRAME.pack(SLIP_MAGIC, SLIP_VERSION, 0, len(body)), body, _U16.pack(len(env)), env]
    )


def make_key_slip(
    bundle: Bundle, content_key: bytes, device: PublicKey, signers: Sequence[PrivateKey]
) -> bytes:
    """Wrap ``content_key`` for ``device`` and sign the slip with every signer.

    Raises:
        UsageError: ``device`` is not a device key.
        SignatureError: no signer, or the same signer twice.
        KeySlipError: the slip would exceed :data:`MAX_SLIP_BYTES`.
    """
    if device.kind != "device":
        raise UsageError(f"key {device.key_id[:16]} is not a device public key")
    (entry,) = wrap_content_key(content_key, bundle.manifest_digest, [device])
    body = slip_body(bundle, entry)
    raw = slip_bytes(body, sign_manifest(body, signers, payload_type=SLIP_PAYLOAD_TYPE))
    if len(raw) > MAX_SLIP_BYTES:
        raise KeySlipError(
            f"the key slip for device key {device.key_id[:16]} would be {len(raw)} bytes, "
            f"over the {MAX_SLIP_BYTES}-byte cap",
            hint=f"sign slips with at most {MAX_SLIP_SIGNATURES} keys",
        )
    return raw


def _decode_enc(value: Any) -> bytes:
    """Canonical, padded base64 (RFC 4648 §4) of 1 to MAX_SLIP_ENC_BYTES bytes, as in the envelope."""
    if not isinstance(value, str) or not 0 < len(value) <= 4 * -(-MAX_SLIP_ENC_BYTES // 3):
        raise KeySlipError(f"key slip enc must be base64 of 1 to {MAX_SLIP_ENC_BYTES} bytes")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KeySlipError("key slip enc is not valid base64") from None
    if not 0 < len(decoded) <= MAX_SLIP_ENC_BYTES:
        raise KeySlipError(f"key slip enc must be base64 of 1 to {MAX_SLIP_ENC_BYTES} bytes")
    if base64.b64encode(decoded).decode("ascii") != value:
        raise KeySlipError("key slip enc is not canonical base64")
    return decoded


def _field(body: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = body[name]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise KeySlipError(f"key slip {name} must match {pattern.pattern}, got {excerpt(value)}")
    return value


def parse_key_slip(raw: bytes | bytearray | memoryview) -> KeySlip:
    """Structurally validate a slip: size, frame, canonical JSON, fields. No cryptography.

    Raises:
        KeySlipError: naming what is wrong.
    """
    data = bytes(raw[: MAX_SLIP_BYTES + 1])
    if len(data) > MAX_SLIP_BYTES:
        raise KeySlipError(f"key slip is over the {MAX_SLIP_BYTES}-byte cap")
    if len(data) < _FRAME.size:
        raise KeySlipError(f"not a key slip: {len(data)} bytes is shorter than its header")
    magic, version, flags, body_len = _FRAME.unpack_from(data)
    if magic != SLIP_MAGIC:
        raise KeySlipError("not a key slip: bad magic", hint=f"a slip file ends in {SLIP_SUFFIX}")
    if version != SLIP_VERSION:
        raise KeySlipError(f"key slip version {version} is not supported (this reader knows 1)",
                           hint="upgrade edge-sdk")  # fmt: skip
    if flags != 0:
        raise KeySlipError(f"key slip flags are {flags}, not 0")
    at = _FRAME.size
    if body_len == 0 or at + body_len + _U16.size > len(data):
        raise KeySlipError(
            f"key slip body length {body_len} does not fit the {len(data)}-byte file"
        )
    body = data[at : at + body_len]
    at += body_len
    (env_len,) = _U16.unpack_from(data, at)
    at += _U16.size
    if at + env_len != len(data):
        raise KeySlipError(
            f"key slip signatures length {env_len} does not end where the {len(data)}-byte file ends"
        )
    try:
        signatures, _ = parse_envelope(data[at:], _SLIP_LIMITS)
    except BundleFormatError as exc:
        raise KeySlipError(f"key slip signatures: {exc.message}") from None
    if not body.isascii():
        raise KeySlipError("key slip body is not ASCII (canonical JSON escapes everything else)")
    try:
        value = loads_strict(body, "key slip", max_values=_BODY_VALUES)
    except BundleFormatError as exc:
        raise KeySlipError(exc.message) from None
    if not isinstance(value, dict) or set(value) != _BODY_FIELDS:
        raise KeySlipError(
            f"key slip body must be an object of exactly: {', '.join(sorted(_BODY_FIELDS))}"
        )
    schema, version_no = value["schema"], value["version"]
    if type(schema) is not int or schema != 1:
        raise KeySlipError(f"key slip schema must be the integer 1, got {excerpt(schema)}")
    if type(version_no) is not int or not 0 <= version_no < 2**63:
        raise KeySlipError(
            f"key slip version must be an integer 0 … 2^63-1, got {excerpt(version_no)}"
        )
    entry = RecipientEntry(
        _field(value, "keyid", _HEX64), _field(value, "kem", ALG_NAME), _decode_enc(value["enc"])
    )
    slip = KeySlip(
        bundle_digest=_field(value, "bundle", _HEX64),
        name=_field(value, "name", _NAME),
        version=version_no,
        content_id=_field(value, "content_id", _HEX32),
        entry=entry,
        body=body,
        signatures=signatures,
    )
    # Only one spelling of a slip: the body is signed as stored, and canonical besides, so
    # nobody can make two files of one slip.
    if canonical_bytes(value) != body:
        raise KeySlipError("key slip body is not canonical JSON")
    return slip


def check_slip_signatures(slip: KeySlip, trust: TrustStore) -> None:
    """Step 3 of a slip's checks: its signatures against the pinned trust store (the same one as
    the bundle's). A slip signed by a key that is not a trusted publisher is refused here, as a
    :class:`~edge_sdk.errors.SignatureError` (exit 21) wherever it is checked — load, run,
    verify, deploy, the agent.

    Raises:
        SignatureError, RevokedKeyError: the signatures do not satisfy the trust store.
    """
    verify_signatures(slip.body, slip.signatures, trust, payload_type=SLIP_PAYLOAD_TYPE,
                      what="the key slip")  # fmt: skip


def verify_key_slip(
    raw: bytes | bytearray | memoryview, bundle: Bundle, trust: TrustStore, device_key: PrivateKey
) -> RecipientEntry:
    """Check a slip for ``bundle`` and ``device_key``; return its recipient entry to unwrap.

    The order (docs/FORMAT.md, "Key slips"): size and frame, strict parse, signatures against the
    same pinned trust store as the bundle's, then what it is for — this bundle, then this device
    key and its algorithm. The HPKE unwrap that follows is the caller's (step 7).

    Raises:
        KeySlipError: malformed or oversized.
        SignatureError, RevokedKeyError: the slip's signatures do not satisfy the trust store.
        KeySlipMismatchError: a genuine slip for another bundle (an older release) or device.
    """
    slip = parse_key_slip(raw)
    check_slip_signatures(slip, trust)
    manifest = bundle.manifest
    if slip.bundle_digest != bundle.digest:
        older = (
            " (an older release)"
            if slip.name == manifest.name and slip.version < manifest.version
            else ""
        )
        raise KeySlipMismatchError(
            f"key slip is for {slip.describe()}{older}, not for this bundle, "
            f"{manifest.name} v{manifest.version} ({bundle.digest[:16]}…)",
            hint="fetch this release's slip (it is published beside the bundle)",
        )
    if (slip.name, slip.version, slip.content_id) != (
        manifest.name,
        manifest.version,
        manifest.payload.content_id,
    ):
        # The digest matched, so a publisher key signed a slip that contradicts the bundle.
        raise KeySlipError(
            f"key slip names bundle {bundle.digest[:16]}… but not its name, version or content id"
        )
    if slip.entry.key_id != device_key.key_id:
        raise KeySlipMismatchError(
            f"key slip is for device key {slip.entry.key_id[:16]}, this device's key is "
            f"{device_key.key_id[:16]}",
            hint="each device needs its own slip",
        )
    if slip.entry.kem != device_key.alg:
        raise KeySlipMismatchError(
            f"key slip for key {slip.entry.key_id[:16]} is {excerpt(slip.entry.kem)}, "
            f"but the device key is {device_key.alg}"
        )
    return slip.entry


def slip_path_beside(bundle_path: str | os.PathLike[str]) -> Path:
    """Where a bundle's slip sits: beside the file the path resolves to, suffix ``.edgeslip``.

    ``current`` in the deploy layout is a link to ``releases/<version>-<digest>.edgepkg``; its
    slip is ``releases/<version>-<digest>.edgeslip``. (If ``current`` moves meanwhile, the slip
    read names another bundle and is refused as a mismatch: it is bound to the bundle digest.)
    """
    try:
        return Path(os.path.realpath(bundle_path)).with_suffix(SLIP_SUFFIX)
    except ValueError:  # a NUL byte: no file can have that name
        raise UsageError(f"bundle path {excerpt(str(bundle_path))} contains a NUL byte") from None


def read_key_slip(path: str | os.PathLike[str]) -> bytes:
    """Read at most :data:`MAX_SLIP_BYTES` + 1 bytes of a regular file (the parser judges them).

    Raises:
        KeySlipError: missing, not a regular file, or unreadable.
    """
    try:
        with open_regular(path) as handle:  # a FIFO or /dev/zero is refused, not waited on
            return handle.read(MAX_SLIP_BYTES + 1)
    except OSError as exc:
        hint = "give the .edgeslip file 'edge-sdk slips issue' wrote"
        raise unreadable_file(KeySlipError, "key slip", path, exc, hint=hint) from None
    except ValueError:  # a NUL byte: no file can have that name
        raise KeySlipError(f"cannot read key slip {excerpt(str(path))}: bad path") from None
