"""The key objects: public and private keys (file-held or in hardware), their PEM encodings, new keys.

Key files are standard PEM: private keys are PKCS#8 (optionally passphrase-encrypted), public keys
are SubjectPublicKeyInfo. A hybrid signing key (Ed25519 + ML-DSA-65) is two PEM blocks in one file,
in that order, so each half stays readable by ``openssl``. A hybrid device key (ML-KEM-768 +
X25519, used as the X-Wing KEM) is written in X-Wing's own encoding — a PKCS#8 key holding the
32-byte X-Wing seed and an SPKI holding the 1216-byte public key, under id-XWing — which X-Wing
libraries import.

A key id is the SHA-256 (hex) of the public key's SubjectPublicKeyInfo DER; for a hybrid key, of
the two component SPKI DER encodings concatenated in the order above (whatever the file's form),
so ``cat a.der b.der | sha256sum`` reproduces it.

A P-256 key can sign (``ecdsa-p256``) or receive content keys (``p256``, DHKEM(P-256)): its SPKI is
the same either way, so the caller says which it wants (``kind=``); without one it is a signing
key, as it always was. Reading key files and key references is :mod:`edge_sdk.keys.key_files`;
the hardware backends (:mod:`edge_sdk.keys.pkcs11`, :mod:`edge_sdk.keys.tpm`) build on this module
alone, so it imports none of them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, x25519

from edge_sdk.errors import KeyFileError
from edge_sdk.files import atomic_write

KeyKind = Literal["signing", "device"]

SIGNING_ALGS = ("ed25519", "ecdsa-p256", "ed25519+mldsa65")
DEVICE_ALGS = ("x25519", "mlkem768-x25519", "p256")
PASSPHRASE_ENV = "EDGE_SDK_KEY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret


# -- X-Wing (draft-connolly-cfrg-xwing-kem-06 and later) key encodings ----------------------------
# id-XWing is 1.3.6.1.4.1.62253.25722; the key bytes follow these fixed DER prefixes unwrapped.
XWING_PRIVATE_DER = bytes.fromhex("3034020100300d060b2b0601040183e62d81c87a0420")
XWING_PUBLIC_DER = bytes.fromhex("308204d4300d060b2b0601040183e62d81c87a038204c100")
XWING_SEED_BYTES = 32
XWING_PUBLIC_BYTES = 1184 + 32  # pk_M || pk_X


def xwing_expand(seed: bytes) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    """X-Wing's expandDecapsulationKey: SHAKE256(seed) gives ML-KEM-768's d‖z and the X25519 key."""
    shake = hashes.Hash(hashes.SHAKE256(96))
    shake.update(seed)
    expanded = shake.finalize()
    return (
        mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]),
        x25519.X25519PrivateKey.from_private_bytes(expanded[64:]),
    )


def _to_pem(label: str, der: bytes) -> bytes:
    text = base64.b64encode(der)
    lines = b"\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label.encode(), lines, label.encode())


def _alg_of(components: Sequence[Any], kind: KeyKind | None = None) -> tuple[KeyKind, str]:
    """Name the algorithm of a key from the types of its components, in file order.

    A P-256 key is a signing key unless ``kind`` says it is a device key.
    """
    types = tuple(type(c) for c in components)

    def match(*expected: type) -> bool:
        return len(types) == len(expected) and all(
            issubclass(t, e) for t, e in zip(types, expected, strict=True)
        )

    if match(ed25519.Ed25519PrivateKey) or match(ed25519.Ed25519PublicKey):
        return "signing", "ed25519"
    if (match(ec.EllipticCurvePrivateKey) or match(ec.EllipticCurvePublicKey)) and isinstance(
        components[0].curve, ec.SECP256R1
    ):
        return ("device", "p256") if kind == "device" else ("signing", "ecdsa-p256")
    if match(ed25519.Ed25519PrivateKey, mldsa.MLDSA65PrivateKey) or match(
        ed25519.Ed25519PublicKey, mldsa.MLDSA65PublicKey
    ):
        return "signing", "ed25519+mldsa65"
    if match(x25519.X25519PrivateKey) or match(x25519.X25519PublicKey):
        return "device", "x25519"
    if match(mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey) or match(
        mlkem.MLKEM768PublicKey, x25519.X25519PublicKey
    ):
        return "device", "mlkem768-x25519"
    names = " + ".join(t.__name__ for t in types)
    raise KeyFileError(
        f"unsupported key type {names}",
        hint=f"signing keys: {', '.join(SIGNING_ALGS)}; device keys: {', '.join(DEVICE_ALGS)}",
    )


@dataclass(frozen=True)
class PublicKey:
    """A signing or device public key with its algorithm and key id."""

    kind: KeyKind
    alg: str
    components: tuple[Any, ...] = field(repr=False)
    key_id: str

    @classmethod
    def from_components(cls, components: Sequence[Any], kind: KeyKind | None = None) -> PublicKey:
        """Build from cryptography public key objects, in file order (``kind`` for P-256)."""
        kind, alg = _alg_of(components, kind)
        ders = [
            c.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            for c in components
        ]
        return cls(kind, alg, tuple(components), hashlib.sha256(b"".join(ders)).hexdigest())

    @property
    def short_id(self) -> str:
        """The first 16 hex digits of the key id, for display only (always compare in full)."""
        return self.key_id[:16]

    def to_pem(self) -> bytes:
        """The public key file contents (one PEM block per component; X-Wing SPKI for X-Wing)."""
        if self.alg == "mlkem768-x25519":
            raw = b"".join(c.public_bytes_raw() for c in self.components)
            return _to_pem("PUBLIC KEY", XWING_PUBLIC_DER + raw)
        return b"".join(
            c.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            for c in self.components
        )

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when ``signature`` is valid over ``message`` for this signing key.

        For the hybrid ed25519+mldsa65 the signature is the 64-byte Ed25519 signature followed by
        the ML-DSA-65 signature, and both must verify.
        """
        if self.kind != "signing":
            raise KeyFileError(f"key {self.short_id} is a {self.kind} key, not a signing key")
        try:
            if self.alg == "ed25519":
                self.components[0].verify(signature, message)
            elif self.alg == "ecdsa-p256":
                self.components[0].verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                if len(signature) <= 64:
                    return False
                self.components[0].verify(signature[:64], message)
                self.components[1].verify(signature[64:], message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def hpke_public(self) -> Any:
        """The object HPKE encrypts to (device keys only)."""
        if self.kind != "device":
            raise KeyFileError(f"key {self.short_id} is a {self.kind} key, not a device key")
        if self.alg in ("x25519", "p256"):
            return self.components[0]
        return hpke.MLKEM768X25519PublicKey(self.components[0], self.components[1])

    def raw_public_bytes(self) -> bytes:
        """RFC 9180 SerializePublicKey: X25519's 32 bytes, or P-256's uncompressed point."""
        if self.alg == "x25519":
            return bytes(
                self.components[0].public_bytes(
                    serialization.Encoding.Raw, serialization.PublicFormat.Raw
                )
            )
        if self.alg in ("p256", "ecdsa-p256"):
            return bytes(
                self.components[0].public_bytes(
                    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
                )
            )
        raise KeyFileError(f"key {self.short_id} ({self.alg}) has no single raw public encoding")


class HardwareKey(Protocol):
    """The private half of a key that never leaves a PKCS#11 token or a TPM.

    Implementations (:mod:`edge_sdk.keys.pkcs11`, :mod:`edge_sdk.keys.tpm`) open a session per operation,
    serialize operations per process, reopen after ``fork``, and map every token failure to a
    :class:`~edge_sdk.errors.TokenError` subclass. They never hold the PIN in anything printable.
    """

    #: ``"pkcs11"`` or ``"tpm2"``.
    location: str

    def display(self) -> str:
        """The reference, bounded and escaped, without any PIN."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` in the format :meth:`PublicKey.verify` expects."""
        ...

    def dh(self, peer_public: bytes) -> bytes:
        """DH(sk, peer) inside the token: P-256's x coordinate, or X25519's 32 bytes."""
        ...

    def describe(self) -> dict[str, str]:
        """Where the key lives and its protective attributes, for ``keys show`` and ``doctor``."""
        ...

    def close(self) -> None:
        """Release whatever the key holds (idempotent)."""
        ...


@dataclass(frozen=True)
class PrivateKey:
    """A signing or device private key. Never printed: its repr shows only the key id."""

    public: PublicKey
    components: tuple[Any, ...] = field(repr=False)
    #: Set when the private half lives in a token or TPM (``components`` is then empty).
    hardware: HardwareKey | None = field(default=None, repr=False, compare=False)

    @property
    def location(self) -> str:
        """``"file"``, ``"pkcs11"`` or ``"tpm2"``: where the private half lives."""
        return "file" if self.hardware is None else self.hardware.location

    def close(self) -> None:
        """Release a token or TPM key's resources (nothing to do for a file key)."""
        if self.hardware is not None:
            self.hardware.close()

    #: The 32-byte X-Wing seed the components were expanded from (X-Wing device keys only).
    seed: bytes | None = field(default=None, repr=False)

    @property
    def kind(self) -> KeyKind:
        return self.public.kind

    @property
    def alg(self) -> str:
        return self.public.alg

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (signing keys only); see :meth:`PublicKey.verify` for the hybrid form."""
        if self.kind != "signing":
            raise KeyFileError(f"key {self.public.short_id} is a device key, not a signing key")
        if self.hardware is not None:
            return self.hardware.sign(message)
        if self.alg == "ed25519":
            return bytes(self.components[0].sign(message))
        if self.alg == "ecdsa-p256":
            return bytes(self.components[0].sign(message, ec.ECDSA(hashes.SHA256())))
        return bytes(self.components[0].sign(message)) + bytes(self.components[1].sign(message))

    def hpke_private(self) -> Any:
        """The object HPKE decrypts with (device keys only)."""
        if self.kind != "device":
            raise KeyFileError(f"key {self.public.short_id} is a signing key, not a device key")
        if self.hardware is not None:
            raise KeyFileError(
                f"key {self.public.short_id} lives in a {self.hardware.location} token; "
                "its private half cannot be handed to software HPKE"
            )
        if self.alg in ("x25519", "p256"):
            return self.components[0]
        return hpke.MLKEM768X25519PrivateKey(self.components[0], self.components[1])

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with the best available scheme when a passphrase is given.

        An X-Wing key is written as its seed under id-XWing; with a passphrase, as its two
        expanded components (PKCS#8 encryption of the seed form is not available here).
        """
        if self.hardware is not None:
            raise KeyFileError(
                f"key {self.public.short_id} lives in a {self.hardware.location} token and "
                "cannot be exported"
            )
        if self.seed is not None and not passphrase:
            return _to_pem("PRIVATE KEY", XWING_PRIVATE_DER + self.seed)
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return b"".join(
            c.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
            for c in self.components
        )


def generate_key(kind: KeyKind, alg: str | None = None) -> PrivateKey:
    """Generate a fresh key. Default algorithms: ed25519 (signing), x25519 (device)."""
    if kind == "signing":
        alg = alg or "ed25519"
        if alg == "ed25519":
            parts: list[Any] = [ed25519.Ed25519PrivateKey.generate()]
        elif alg == "ecdsa-p256":
            parts = [ec.generate_private_key(ec.SECP256R1())]
        elif alg == "ed25519+mldsa65":
            parts = [ed25519.Ed25519PrivateKey.generate(), mldsa.MLDSA65PrivateKey.generate()]
        else:
            raise KeyFileError(
                f"unknown signing algorithm {alg!r}",
                hint=f"choose one of {', '.join(SIGNING_ALGS)}",
            )
    elif kind == "device":
        alg = alg or "x25519"
        if alg == "x25519":
            parts = [x25519.X25519PrivateKey.generate()]
        elif alg == "p256":
            parts = [ec.generate_private_key(ec.SECP256R1())]
        elif alg == "mlkem768-x25519":
            seed = os.urandom(XWING_SEED_BYTES)
            parts = list(xwing_expand(seed))
            public = PublicKey.from_components([p.public_key() for p in parts])
            return PrivateKey(public, tuple(parts), seed=seed)
        else:
            raise KeyFileError(
                f"unknown device key algorithm {alg!r}",
                hint=f"choose one of {', '.join(DEVICE_ALGS)}",
            )
    else:
        raise KeyFileError(f"unknown key kind {kind!r}", hint="use 'signing' or 'device'")
    public = PublicKey.from_components([p.public_key() for p in parts], kind)
    return PrivateKey(public, tuple(parts))


def write_key_file(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write a key file with exactly ``mode`` through :func:`edge_sdk.files.atomic_write`: a
    symlink planted at ``path`` is never followed (with ``overwrite`` it is replaced)."""
    try:
        atomic_write(path, data, mode, replace=overwrite, exact_mode=True)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists", hint="choose another --out or pass --force"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None


def save_keypair(
    key: PrivateKey, out: Path, *, passphrase: bytes | None = None, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``OUT.key`` (PKCS#8 PEM, mode 0600) and ``OUT.pub`` (SPKI PEM, 0644)."""
    key_path, pub_path = out.with_name(out.name + ".key"), out.with_name(out.name + ".pub")
    if not overwrite:
        for existing in (key_path, pub_path):
            if existing.exists():
                raise KeyFileError(
                    f"{existing} already exists", hint="choose another --out or pass --force"
                )
    write_key_file(key_path, key.to_pem(passphrase), 0o600, overwrite=overwrite)
    write_key_file(pub_path, key.public.to_pem(), 0o644, overwrite=overwrite)
    return key_path, pub_path
