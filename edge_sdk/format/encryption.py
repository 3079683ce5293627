"""Payload encryption: chunked AEAD under a fresh content key, wrapped per device with HPKE.

* The payload is cut into ``chunk_size`` plaintext chunks; chunk ``i`` is sealed with nonce
  ``i`` (96-bit big-endian; the key is fresh per bundle, so a counter never repeats) and associated
  data ``"edge-sdk/v1/chunk" || content_id || u64 i || u8 last``. Reordering, dropping, truncating
  or splicing chunks therefore fails authentication.
* The 32-byte content key is wrapped for each recipient with HPKE base mode (RFC 9180):
  KEM DHKEM(X25519), DHKEM(P-256) or ML-KEM-768+X25519, KDF HKDF-SHA256, AEAD AES-256-GCM, and
  ``info = "edge-sdk/v1/cek" || SHA-256(manifest) || key id`` so a recipient entry cannot be moved
  to another bundle or another key. Recipients live outside the signed manifest, so adding one
  never requires re-signing.
* A device key held in a token (PKCS#11 or TPM) opens its entry with the DH step inside the token
  and the rest of HPKE in software (:mod:`edge_sdk.format.hpke_delegated`); the bytes are the same HPKE,
  so the publisher cannot tell, and need not know, where a device keeps its key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from edge_sdk.errors import DecryptionError, IntegrityError, UnsupportedVersionError, excerpt
from edge_sdk.keys import PrivateKey, PublicKey

from .hpke_delegated import AEAD_AES_256_GCM, DHKEM_P256, DHKEM_X25519, open_base
from .memory import Buffer, alloc_buffer

TAG_SIZE = 16
KEY_SIZE = 32
DEFAULT_CHUNK_SIZE = 1024 * 1024
CHUNK_AAD_LABEL = b"edge-sdk/v1/chunk"
CEK_INFO_LABEL = b"edge-sdk/v1/cek"

_KEMS = {
    "x25519": hpke.KEM.X25519,
    "mlkem768-x25519": hpke.KEM.MLKEM768_X25519,
    # getattr: a board with an older cryptography still imports this module and opens the other
    # kinds; a p256 entry is then refused by _suite (token-held keys use hpke_delegated anyway).
    "p256": getattr(hpke.KEM, "P256", None),
}
#: The DHKEMs a token-held key can open (its DH step runs in the token).
_DELEGATED_KEMS = {"x25519": DHKEM_X25519, "p256": DHKEM_P256}


def _aead(name: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if name == "aes-256-gcm":
        return AESGCM(key)
    if name == "chacha20-poly1305":
        return ChaCha20Poly1305(key)
    raise UnsupportedVersionError(f"unknown payload encryption {excerpt(name)}")


def chunk_count(plain_size: int, chunk_size: int) -> int:
    """Number of chunks for a payload (an empty payload still has one, empty, chunk)."""
    return max(1, -(-plain_size // chunk_size))


def ciphertext_size(plain_size: int, chunk_size: int) -> int:
    """Exact ciphertext size: the plaintext plus one tag per chunk."""
    return plain_size + TAG_SIZE * chunk_count(plain_size, chunk_size)


def _nonce(index: int) -> bytes:
    return struct.pack(">IQ", 0, index)


def _aad(content_id: bytes, index: int, last: bool) -> bytes:
    return CHUNK_AAD_LABEL + content_id + struct.pack(">QB", index, 1 if last else 0)


def encrypt_payload(
    plaintext: Buffer, aead: str, key: bytes, content_id: bytes, chunk_size: int
) -> bytearray:
    """Encrypt into one buffer of exactly :func:`ciphertext_size` bytes."""
    src = memoryview(plaintext)
    sealer = PayloadEncryptor(aead, key, content_id, chunk_size, len(src))
    out = bytearray(ciphertext_size(len(src), chunk_size))
    dst = memoryview(out)
    for i in range(sealer.chunks):
        sealer.seal_into(src[i * chunk_size : (i + 1) * chunk_size],
                         dst[i * sealer.sealed_chunk :])  # fmt: skip
    return out


class PayloadEncryptor:
    """Seals the chunks of one payload in order, one at a time (the inverse of
    :class:`PayloadDecryptor`): a payload of gigabytes never needs a second buffer of its size."""

    def __init__(
        self, aead: str, key: bytes, content_id: bytes, chunk_size: int, plain_size: int
    ) -> None:
        self._cipher = _aead(aead, key)
        self._content_id = content_id
        self.chunk_size = chunk_size
        self.chunks = chunk_count(plain_size, chunk_size)
        self.index = 0  # the next chunk to seal

    @property
    def sealed_chunk(self) -> int:
        """Bytes of one stored chunk: plaintext and tag (the last may be shorter)."""
        return self.chunk_size + TAG_SIZE

    def seal_into(self, chunk: memoryview, out: memoryview) -> int:
        """Seal the next chunk (``chunk_size`` bytes, the last one fewer) at the start of
        ``out``; the bytes written."""
        i = self.index
        if i >= self.chunks or len(chunk) > self.chunk_size:
            raise ValueError(f"chunk {i} of {self.chunks} does not fit this payload")
        written = len(chunk) + TAG_SIZE
        self._cipher.encrypt_into(_nonce(i), chunk, _aad(self._content_id, i, i == self.chunks - 1),
                                  out[:written])  # fmt: skip
        self.index += 1
        return written


class PayloadDecryptor:
    """Opens the chunks of one payload in order, a few at a time, as they are read.

    The pipelined open (:func:`edge_sdk.format.verify.open_payload`) hands it whole chunks as they
    arrive from the file; :func:`decrypt_payload` hands it the whole payload at once.
    """

    def __init__(
        self, aead: str, key: bytes, content_id: bytes, chunk_size: int, plain_size: int
    ) -> None:
        self._cipher = _aead(aead, key)
        self._content_id = content_id
        #: The unwrapped key (a device derives its weight-cache key from it; never logged).
        self.content_key = key
        self.chunk_size = chunk_size
        self.plain_size = plain_size
        self.chunks = chunk_count(plain_size, chunk_size)
        self.index = 0  # the next chunk to open

    @property
    def sealed_chunk(self) -> int:
        """Bytes of one stored chunk: plaintext and tag (the last may be shorter)."""
        return self.chunk_size + TAG_SIZE

    def open_into(self, sealed: memoryview, out: memoryview) -> None:
        """Authenticate and decrypt the next whole chunks, ``sealed``, into ``out`` (the
        plaintext buffer of ``plain_size`` bytes, at the chunks' own offsets).

        Raises:
            IntegrityError: ``sealed`` does not end on a chunk boundary of this payload.
            DecryptionError: a chunk fails authentication (tampered, reordered, dropped, spliced).
        """
        at = 0
        while at < len(sealed):  # an empty payload is one chunk too: its 16-byte tag
            i = self.index
            if i >= self.chunks:
                raise IntegrityError(f"payload has more than its {self.chunks} chunks")
            size = min(self.chunk_size, self.plain_size - i * self.chunk_size)
            if len(sealed) - at < size + TAG_SIZE:
                raise IntegrityError(f"payload chunk {i} of {self.chunks} is cut short")
            try:
                self._cipher.decrypt_into(
                    _nonce(i),
                    sealed[at : at + size + TAG_SIZE],
                    _aad(self._content_id, i, i == self.chunks - 1),
                    out[i * self.chunk_size : i * self.chunk_size + size],
                )
            except InvalidTag:
                raise DecryptionError(
                    f"payload chunk {i} of {self.chunks} failed authentication "
                    "(tampered, reordered or truncated)"
                ) from None
            self.index += 1
            at += size + TAG_SIZE


def decrypt_payload(
    ciphertext: Buffer,
    aead: str,
    key: bytes,
    content_id: bytes,
    chunk_size: int,
    plain_size: int,
    out: memoryview | None = None,
) -> Buffer:
    """Decrypt a whole payload into one buffer of ``plain_size`` bytes, chunk by chunk, in memory.

    ``out``, when given, is the destination (``plain_size`` bytes) and is returned; otherwise a
    buffer is allocated.

    Raises:
        IntegrityError: the ciphertext length does not fit the declared plaintext size.
        DecryptionError: a chunk fails authentication (tampered, reordered, dropped, spliced).
    """
    src = memoryview(ciphertext)
    if len(src) != ciphertext_size(plain_size, chunk_size):
        raise IntegrityError(
            f"payload is {len(src)} bytes, expected {ciphertext_size(plain_size, chunk_size)}"
        )
    target: Buffer = out if out is not None else alloc_buffer(plain_size)
    dst = memoryview(target)
    if len(dst) != plain_size:
        raise IntegrityError(f"output buffer is {len(dst)} bytes, expected {plain_size}")
    PayloadDecryptor(aead, key, content_id, chunk_size, plain_size).open_into(src, dst)
    return target


def new_content_key() -> bytes:
    """A fresh random 256-bit content key."""
    return os.urandom(KEY_SIZE)


@dataclass(frozen=True)
class RecipientEntry:
    """The content key wrapped for one device key, as stored in the bundle envelope."""

    key_id: str
    kem: str
    enc: bytes


def _suite(kem: str) -> Any:
    algorithm = _KEMS.get(kem)
    if algorithm is None:
        hint = "upgrade cryptography" if kem in _KEMS else "upgrade edge-sdk"
        raise UnsupportedVersionError(f"unknown recipient key algorithm {excerpt(kem)}", hint=hint)
    return hpke.Suite(algorithm, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _info(manifest_digest: bytes, key_id: str) -> bytes:
    return CEK_INFO_LABEL + manifest_digest + bytes.fromhex(key_id)


def wrap_content_key(
    key: bytes, manifest_digest: bytes, recipients: Sequence[PublicKey]
) -> tuple[RecipientEntry, ...]:
    """Wrap the content key for every recipient device key."""
    ids = [r.key_id for r in recipients]
    if len(set(ids)) != len(ids):
        raise DecryptionError("the same recipient key was given twice")
    return tuple(
        RecipientEntry(
            r.key_id,
            r.alg,
            bytes(
                _suite(r.alg).encrypt(key, r.hpke_public(), info=_info(manifest_digest, r.key_id))
            ),
        )
        for r in recipients
    )


def unwrap_content_key(
    recipients: Sequence[RecipientEntry], manifest_digest: bytes, device_key: PrivateKey
) -> bytes:
    """Find this device's entry and unwrap the content key.

    Raises:
        DecryptionError: the device is not a recipient, or the entry does not open with its key
            (wrong key, or an entry moved from another bundle).
    """
    entry = next((r for r in recipients if r.key_id == device_key.key_id), None)
    if entry is None:
        listed = ", ".join(r.key_id[:16] for r in recipients) or "none"
        raise DecryptionError(
            f"device key {device_key.key_id[:16]} is not a recipient of this bundle "
            f"(recipients: {listed})"
        )
    if entry.kem != device_key.alg:
        raise DecryptionError(
            f"recipient entry for key {entry.key_id[:16]} is {excerpt(entry.kem)}, "
            f"but the device key is {device_key.alg}"
        )
    info = _info(manifest_digest, entry.key_id)
    try:
        if device_key.hardware is not None:
            key = _open_in_token(entry, device_key, info)
        else:
            key = _suite(entry.kem).decrypt(entry.enc, device_key.hpke_private(), info=info)
    except (InvalidTag, ValueError):
        raise DecryptionError(
            f"cannot unwrap the content key for device key {entry.key_id[:16]}: "
            "wrong device key, or the recipient entry belongs to another bundle"
        ) from None
    if len(key) != KEY_SIZE:
        raise DecryptionError(f"unwrapped content key has {len(key)} bytes, expected {KEY_SIZE}")
    return bytes(key)


def _open_in_token(entry: RecipientEntry, device_key: PrivateKey, info: bytes) -> bytes:
    """HPKE base-mode open with DH(skR, pkE) computed by the token holding skR."""
    hardware = device_key.hardware
    assert hardware is not None
    kem = _DELEGATED_KEMS.get(entry.kem)
    if kem is None:
        raise UnsupportedVersionError(
            f"recipient kind {entry.kem!r} cannot be opened by a key held in a token"
        )
    # The entry is enc || ciphertext, as cryptography's single-shot HPKE writes it.
    if len(entry.enc) <= kem.n_enc:
        raise DecryptionError(f"recipient entry for key {entry.key_id[:16]} is truncated")
    return open_base(
        kem,
        AEAD_AES_256_GCM,
        entry.enc[: kem.n_enc],
        entry.enc[kem.n_enc :],
        info=info,
        dh=hardware.dh,
        pk_rm=device_key.public.raw_public_bytes(),
    )
