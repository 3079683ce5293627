"""HPKE base-mode open (RFC 9180) whose Diffie-Hellman step runs somewhere else: in a token.

A device key that lives in a PKCS#11 token or a TPM can do one thing with its private half: the
DH step (``C_DeriveKey`` with ``CKM_ECDH1_DERIVE``, ``TPM2_ECDH_ZGen``). Everything after it —
DHKEM's ExtractAndExpand, the key schedule and the AEAD — needs no secret the token keeps, so it
runs here, in software. ``cryptography``'s HPKE cannot take an external DH, so the RFC's
functions are written out below, exactly as RFC 9180 §4 and §5.1 define them, over
``cryptography``'s HMAC (HKDF-Extract is HMAC by definition, RFC 5869 §2.2), HKDFExpand,
AES-GCM and ChaCha20-Poly1305: no primitive of our own. The RFC's published test vectors run
against this module (tests/test_hpke_rfc9180.py), and it is cross-checked against
``cryptography``'s own HPKE for every suite the bundle format uses.

Only what a recipient needs exists here: base mode (no PSK, no sender authentication),
single-shot open (sequence number 0), DHKEM over P-256 or X25519 with HKDF-SHA256.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_VERSION_LABEL = b"HPKE-v1"
_MODE_BASE = 0x00
KDF_HKDF_SHA256 = 0x0001
_NH = 32  # HKDF-SHA256 output size


@dataclass(frozen=True)
class DhKem:
    """A DHKEM with HKDF-SHA256 (RFC 9180 §7.1): its id and encoded sizes."""

    kem_id: int
    name: str
    n_enc: int  # size of the encapsulated key (= a serialized public key)
    n_dh: int  # size of the DH output

    @property
    def suite_id(self) -> bytes:
        return b"KEM" + struct.pack(">H", self.kem_id)


DHKEM_P256 = DhKem(0x0010, "DHKEM(P-256, HKDF-SHA256)", 65, 32)
DHKEM_X25519 = DhKem(0x0020, "DHKEM(X25519, HKDF-SHA256)", 32, 32)

AEAD_AES_128_GCM = 0x0001
AEAD_AES_256_GCM = 0x0002
AEAD_CHACHA20_POLY1305 = 0x0003
_AEADS: dict[int, tuple[type[AESGCM] | type[ChaCha20Poly1305], int]] = {
    AEAD_AES_128_GCM: (AESGCM, 16),
    AEAD_AES_256_GCM: (AESGCM, 32),
    AEAD_CHACHA20_POLY1305: (ChaCha20Poly1305, 32),
}
_NN = 12  # nonce size of all three AEADs

#: The DH step: given the sender's validated, serialized ephemeral public key, return DH(skR, pkE).
DiffieHellman = Callable[[bytes], bytes]


def hpke_suite_id(kem: DhKem, aead_id: int) -> bytes:
    """``"HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)``."""
    return b"HPKE" + struct.pack(">HHH", kem.kem_id, KDF_HKDF_SHA256, aead_id)


def _extract(salt: bytes, ikm: bytes) -> bytes:
    # HKDF-Extract(salt, IKM) = HMAC-Hash(salt, IKM); an empty salt means Nh zero bytes.
    mac = hmac.HMAC(salt or bytes(_NH), hashes.SHA256())
    mac.update(ikm)
    return mac.finalize()


def labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    """RFC 9180 §4: ``Extract(salt, "HPKE-v1" || suite_id || label || ikm)``."""
    return _extract(salt, _VERSION_LABEL + suite_id + label + ikm)


def labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    """RFC 9180 §4: ``Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L)``."""
    labeled_info = struct.pack(">H", length) + _VERSION_LABEL + suite_id + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled_info).derive(prk)


def deserialize_public_key(kem: DhKem, enc: bytes) -> bytes:
    """Validate the sender's encapsulated key and return it in serialized form.

    P-256: an uncompressed SEC1 point that lies on the curve (``cryptography`` checks it; RFC 9180
    §7.1.4 requires this validation). X25519: any 32 bytes.

    Raises:
        ValueError: wrong size, not uncompressed, or not a point on the curve.
    """
    if len(enc) != kem.n_enc:
        raise ValueError(f"{kem.name} encapsulated key must be {kem.n_enc} bytes, got {len(enc)}")
    if kem is DHKEM_P256:
        if enc[0] != 0x04:
            raise ValueError("P-256 encapsulated key must be an uncompressed point")
        point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc)
        return point.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return bytes(enc)


def decap(kem: DhKem, enc: bytes, dh: DiffieHellman, pk_rm: bytes) -> bytes:
    """DHKEM Decap (RFC 9180 §4.1) with the DH step delegated; returns the shared secret."""
    pk_e = deserialize_public_key(kem, enc)
    dh_out = dh(pk_e)
    if len(dh_out) != kem.n_dh:
        raise ValueError(f"the DH step returned {len(dh_out)} bytes, expected {kem.n_dh}")
    if kem is DHKEM_X25519 and not any(dh_out):
        raise ValueError("X25519 shared secret is all zero (small-order point)")
    kem_context = pk_e + pk_rm
    eae_prk = labeled_extract(kem.suite_id, b"", b"eae_prk", dh_out)
    return labeled_expand(kem.suite_id, eae_prk, b"shared_secret", kem_context, _NH)


@dataclass(frozen=True)
class KeySchedule:
    """The base-mode key schedule's outputs (RFC 9180 §5.1)."""

    key_schedule_context: bytes
    secret: bytes
    key: bytes
    base_nonce: bytes
    exporter_secret: bytes


def key_schedule_base(kem: DhKem, aead_id: int, shared_secret: bytes, info: bytes) -> KeySchedule:
    """KeySchedule(mode_base, shared_secret, info, psk="", psk_id="")."""
    try:
        _, n_k = _AEADS[aead_id]
    except KeyError:
        raise ValueError(f"unsupported HPKE AEAD id {aead_id:#06x}") from None
    suite = hpke_suite_id(kem, aead_id)
    psk_id_hash = labeled_extract(suite, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(suite, b"", b"info_hash", info)
    context = bytes([_MODE_BASE]) + psk_id_hash + info_hash
    secret = labeled_extract(suite, shared_secret, b"secret", b"")
    return KeySchedule(
        key_schedule_context=context,
        secret=secret,
        key=labeled_expand(suite, secret, b"key", context, n_k),
        base_nonce=labeled_expand(suite, secret, b"base_nonce", context, _NN),
        exporter_secret=labeled_expand(suite, secret, b"exp", context, _NH),
    )


def open_base(
    kem: DhKem,
    aead_id: int,
    enc: bytes,
    ciphertext: bytes,
    *,
    info: bytes,
    aad: bytes = b"",
    dh: DiffieHellman,
    pk_rm: bytes,
) -> bytes:
    """Single-shot base-mode open: Decap, KeySchedule, then the AEAD at sequence number 0.

    Args:
        enc: the encapsulated key (``kem.n_enc`` bytes).
        ciphertext: the AEAD ciphertext with its tag.
        dh: runs DH(skR, pkE) where skR lives (a token); gets the validated serialized pkE.
        pk_rm: the recipient's serialized public key (uncompressed point / 32 raw bytes).

    Raises:
        ValueError: a malformed encapsulated key.
        cryptography.exceptions.InvalidTag: the ciphertext does not open (wrong key or info).
    """
    shared_secret = decap(kem, enc, dh, pk_rm)
    schedule = key_schedule_base(kem, aead_id, shared_secret, info)
    cipher_cls, _ = _AEADS[aead_id]
    # Sequence number 0: the nonce is base_nonce XOR I2OSP(0, Nn) = base_nonce.
    return cipher_cls(schedule.key).decrypt(schedule.base_nonce, ciphertext, aad)
