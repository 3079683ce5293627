"""Manifest signatures: DSSE pre-authentication encoding, signing, and threshold verification.

What is signed is ``PAE(PAYLOAD_TYPE, manifest_bytes)`` as defined by DSSE v1::

    "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with LEN the ASCII decimal byte length. Binding the payload type means a signature over a manifest
can never be replayed as a signature over any other kind of document.

Which keys and algorithms are acceptable comes only from the :class:`~edge_sdk.keys.TrustStore`:
the ``alg`` written next to a signature is informational and must agree with the trusted key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge_sdk.errors import RevokedKeyError, SignatureError, excerpt
from edge_sdk.keys import PrivateKey, TrustStore

PAYLOAD_TYPE = "application/vnd.edge-sdk.manifest+json;version=1"
MAX_SIGNATURE_BYTES = 8192


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


@dataclass(frozen=True)
class SignatureEntry:
    """One signature over the manifest, as stored in the bundle envelope."""

    key_id: str
    alg: str
    signature: bytes


def sign_manifest(
    manifest_bytes: bytes, signers: Sequence[PrivateKey], *, payload_type: str = PAYLOAD_TYPE
) -> tuple[SignatureEntry, ...]:
    """Sign the manifest bytes with every signer (distinct keys only).

    ``payload_type`` names the kind of document (a key slip has its own, so a signature over one
    kind can never stand for the other).
    """
    if not signers:
        raise SignatureError("at least one signing key is required")
    ids = [s.key_id for s in signers]
    if len(set(ids)) != len(ids):
        raise SignatureError("the same signing key was given twice")
    message = pae(payload_type, manifest_bytes)
    return tuple(SignatureEntry(s.key_id, s.alg, s.sign(message)) for s in signers)


@dataclass(frozen=True)
class SignatureReport:
    """Who validly signed, and which signatures came from keys the trust store does not know."""

    valid: tuple[str, ...]
    unknown: tuple[str, ...]
    threshold: int


def verify_signatures(
    manifest_bytes: bytes,
    signatures: Sequence[SignatureEntry],
    trust: TrustStore,
    *,
    payload_type: str = PAYLOAD_TYPE,
    what: str = "the bundle",
) -> SignatureReport:
    """Check the signatures against the trust store and its threshold.

    A signature naming a trusted key id must verify with that key: a forged one is an error, not
    something to skip. A signature by a revoked key rejects the bundle even if others suffice,
    because a revoked key may be in an attacker's hands.

    Raises:
        RevokedKeyError: a signature names a revoked key.
        SignatureError: a signature is invalid, or fewer than ``threshold`` trusted keys signed.
    """
    if not signatures:
        raise SignatureError(f"{what} carries no signature")
    message = pae(payload_type, manifest_bytes)
    # The bundle's messages stay as they were; another document names itself in them.
    on = "" if what == "the bundle" else f" on {what}"
    valid: list[str] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for entry in signatures:
        if entry.key_id in seen:
            raise SignatureError(f"key {entry.key_id[:16]} signed twice")
        seen.add(entry.key_id)
        if entry.key_id in trust.revoked:
            raise RevokedKeyError(f"signed by revoked key {entry.key_id}{on}")
        key = trust.keys.get(entry.key_id)
        if key is None:
            unknown.append(entry.key_id)
            continue
        if entry.alg != key.alg:
            raise SignatureError(
                f"signature by key {entry.key_id[:16]} claims algorithm {excerpt(entry.alg)} "
                f"but the trusted key is {key.alg}"
            )
        if not key.verify(message, entry.signature):
            raise SignatureError(f"invalid signature by key {entry.key_id} ({key.alg}){on}")
        valid.append(entry.key_id)
    if len(valid) < trust.threshold:
        detail = f"; untrusted signer(s): {', '.join(k[:16] for k in unknown)}" if unknown else ""
        raise SignatureError(
            f"{len(valid)} valid signature(s) from trusted keys{on}, {trust.threshold} "
            f"required{detail}"
        )
    return SignatureReport(tuple(valid), tuple(unknown), trust.threshold)
