"""Signing and device keys: generate, save, load, key ids, and the trust store.

Key files are standard PEM: private keys are PKCS#8 (optionally passphrase-encrypted), public keys
are SubjectPublicKeyInfo. A hybrid signing key (Ed25519 + ML-DSA-65) is two PEM blocks in one file,
in that order, so each half stays readable by ``openssl``. A hybrid device key (ML-KEM-768 +
X25519, used as the X-Wing KEM) is written in X-Wing's own encoding — a PKCS#8 key holding the
32-byte X-Wing seed and an SPKI holding the 1216-byte public key, under id-XWing — which X-Wing
libraries import; files from earlier releases, two PEM blocks (ML-KEM-768 then X25519), still load.

A key id is the SHA-256 (hex) of the public key's SubjectPublicKeyInfo DER; for a hybrid key, of
the two component SPKI DER encodings concatenated in the order above (whatever the file's form),
so ``cat a.der b.der | sha256sum`` reproduces it.

A P-256 key can sign (``ecdsa-p256``) or receive content keys (``p256``, DHKEM(P-256)): its SPKI is
the same either way, so the caller says which it wants (``kind=``); without one it is a signing
key, as it always was.

A private key need not be a file: :func:`load_private_key` also takes a ``pkcs11:`` URI or a
``tpm2:`` reference (:mod:`edge_sdk.keys.key_uri`) and returns a :class:`PrivateKey` whose private half
stays in the token (:class:`HardwareKey`); it signs and does the DH step there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, x25519

from edge_sdk.errors import KeyFileError, TrustStoreError

from .key_uri import is_key_reference

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found]

KeyKind = Literal["signing", "device"]

SIGNING_ALGS = ("ed25519", "ecdsa-p256", "ed25519+mldsa65")
DEVICE_ALGS = ("x25519", "mlkem768-x25519", "p256")
PASSPHRASE_ENV = "EDGE_SDK_KEY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)

# -- X-Wing (draft-connolly-cfrg-xwing-kem-06 and later) key encodings ----------------------------
# id-XWing is 1.3.6.1.4.1.62253.25722; the key bytes follow these fixed DER prefixes unwrapped.
_XWING_PRIVATE_DER = bytes.fromhex("3034020100300d060b2b0601040183e62d81c87a0420")
_XWING_PUBLIC_DER = bytes.fromhex("308204d4300d060b2b0601040183e62d81c87a038204c100")
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


def _der_of(block: bytes) -> bytes | None:
    """The DER inside one PEM block, or None when its body is not base64."""
    body = b"".join(block.splitlines()[1:-1])
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None


def _xwing_public(blocks: list[tuple[str, bytes]]) -> tuple[Any, ...] | None:
    """The two components of an X-Wing SPKI file, or None when the file is not one."""
    der = _der_of(blocks[0][1]) if len(blocks) == 1 else None
    if der is None or not der.startswith(_XWING_PUBLIC_DER):
        return None
    raw = der[len(_XWING_PUBLIC_DER) :]
    if len(raw) != XWING_PUBLIC_BYTES:
        raise KeyFileError("malformed X-Wing public key (it is not 1216 bytes)")
    try:
        return (
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]),
            x25519.X25519PublicKey.from_public_bytes(raw[1184:]),
        )
    except ValueError:
        raise KeyFileError("malformed X-Wing public key") from None


def _xwing_seed(blocks: list[tuple[str, bytes]]) -> bytes | None:
    """The seed of an X-Wing PKCS#8 file, or None when the file is not one."""
    der = _der_of(blocks[0][1]) if len(blocks) == 1 and blocks[0][0] == "PRIVATE KEY" else None
    if der is None or not der.startswith(_XWING_PRIVATE_DER):
        return None
    seed = der[len(_XWING_PRIVATE_DER) :]
    if len(seed) != XWING_SEED_BYTES:
        raise KeyFileError("malformed X-Wing private key (the seed is not 32 bytes)")
    return seed


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
            return _to_pem("PUBLIC KEY", _XWING_PUBLIC_DER + raw)
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
            return _to_pem("PRIVATE KEY", _XWING_PRIVATE_DER + self.seed)
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


def _write_new(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError:
        raise KeyFileError(
            f"{path} already exists", hint="choose another --out or pass --force"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)  # O_CREAT's mode is masked by umask; fix it explicitly
        handle.write(data)


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
    _write_new(key_path, key.to_pem(passphrase), 0o600, overwrite=overwrite)
    _write_new(pub_path, key.public.to_pem(), 0o644, overwrite=overwrite)
    return key_path, pub_path


def _pem_blocks(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    blocks = [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise KeyFileError(f"{path} is not a PEM key file (no PEM block found)")
    return blocks


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"key file {path} is a directory") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None


def check_private_permissions(path: Path) -> None:
    """Refuse a private key readable or writable by group or others, as OpenSSH does."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"private key {path} has unsafe permissions {mode:04o} (group/others can access it)",
            hint=f"chmod 600 {path}",
        )


def load_private_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None, kind: KeyKind | None = None
) -> PrivateKey:
    """Load a private key file, checking its permissions first — or open a token or TPM key.

    ``path`` may be a ``pkcs11:`` URI or a ``tpm2:`` reference (:mod:`edge_sdk.keys.key_uri`): the key
    is then opened where it lives and never leaves it. The passphrase (files only) defaults to the
    ``EDGE_SDK_KEY_PASSPHRASE`` environment variable.

    Raises:
        KeyFileError: missing, unreadable, loose permissions, wrong passphrase, wrong kind.
        KeyReferenceError, TokenError: a reference that is malformed or cannot be opened (its
            subclasses say why: no token, wrong PIN, no such object, wrong key type…).
        HostDependencyError: a reference needs the ``hsm`` or ``tpm`` extra, which is missing.
    """
    if is_key_reference(path):
        return open_key_reference(os.fspath(path), kind=kind)
    path = Path(path)
    data = _read(path)
    blocks = _pem_blocks(path, data)
    public_only = [
        label for label, _ in blocks if label not in ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")
    ]
    if public_only:  # said before the permission check: a .pub's mode is not the problem
        raise KeyFileError(
            f"{path} holds a {public_only[0].lower()}, not a private key",
            hint="pass the .key file, not the .pub file",
        )
    check_private_permissions(path)
    if passphrase is None and os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV].encode()
    seed = _xwing_seed(blocks)
    if seed is not None:
        parts: list[Any] = list(xwing_expand(seed))
        key = PrivateKey(
            PublicKey.from_components([p.public_key() for p in parts]), tuple(parts), seed=seed
        )
        _check_kind(path, key.kind, kind)
        return key
    parts = []
    for label, block in blocks:
        try:
            parts.append(
                serialization.load_pem_private_key(
                    block, password=passphrase if label.startswith("ENCRYPTED") else None
                )
            )
        except TypeError:
            raise KeyFileError(
                f"private key {path} is encrypted and no passphrase was given",
                hint=f"set {PASSPHRASE_ENV} or answer the prompt",
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(
                f"cannot load private key {path}: malformed, or the passphrase is wrong"
            ) from None
    public = PublicKey.from_components([p.public_key() for p in parts], kind)
    key = PrivateKey(public, tuple(parts))
    _check_kind(path, key.kind, kind)
    return key


def open_key_reference(
    reference: str, *, kind: KeyKind | None = None, public_only: bool = False
) -> PrivateKey:
    """Open a ``pkcs11:`` or ``tpm2:`` key (the one entry point for hardware-held keys).

    ``public_only`` reads the public half without logging in when no PIN is configured (for
    ``keys show``); the returned key can then neither sign nor unwrap.
    """
    from .key_uri import Pkcs11Uri, parse_key_reference

    parsed = parse_key_reference(reference)
    if isinstance(parsed, Pkcs11Uri):
        from .pkcs11 import open_pkcs11_key

        return open_pkcs11_key(parsed, kind=kind, public_only=public_only)
    from .tpm import open_tpm_key

    return open_tpm_key(parsed, kind=kind)


def load_public_key(path: str | os.PathLike[str], *, kind: KeyKind | None = None) -> PublicKey:
    """Load a public key file (``.pub``); a private key file is accepted and its public half used.

    A ``pkcs11:`` or ``tpm2:`` reference gives the public half of that token's key.
    """
    if is_key_reference(path):
        opened = open_key_reference(os.fspath(path), kind=kind, public_only=True)
        opened.close()
        return opened.public
    path = Path(path)
    data = _read(path)
    blocks = _pem_blocks(path, data)
    if any("PRIVATE" in label for label, _ in blocks):
        return load_private_key(path, kind=kind).public
    xwing = _xwing_public(blocks)
    if xwing is not None:
        key = PublicKey.from_components(xwing)
        _check_kind(path, key.kind, kind)
        return key
    parts: list[Any] = []
    for label, block in blocks:
        if label != "PUBLIC KEY":
            raise KeyFileError(f"{path} holds a {label.lower()}, not a public key")
        try:
            parts.append(serialization.load_pem_public_key(block))
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(f"cannot load public key {path}: malformed") from None
    key = PublicKey.from_components(parts, kind)
    _check_kind(path, key.kind, kind)
    return key


def _check_kind(path: Path, actual: KeyKind, wanted: KeyKind | None) -> None:
    if wanted and actual != wanted:
        raise KeyFileError(f"{path} is a {actual} key, but a {wanted} key is needed here")


@dataclass(frozen=True)
class TrustStore:
    """The signing keys a verifier accepts, the ones it no longer accepts, and how many must sign.

    Built from a ``.pub`` file, or a directory of ``.pub`` files with an optional ``trust.toml``::

        threshold = 2
        revoked = ["<full key id>", ...]
    """

    keys: dict[str, PublicKey]
    revoked: frozenset[str] = frozenset()
    threshold: int = 1

    def __post_init__(self) -> None:
        if not self.keys:
            raise TrustStoreError("the trust store holds no signing keys")
        if self.threshold < 1:
            raise TrustStoreError(f"trust threshold must be at least 1, got {self.threshold}")
        if any(k.kind != "signing" for k in self.keys.values()):
            raise TrustStoreError("the trust store may hold only signing public keys")
        active = len(set(self.keys) - self.revoked)
        if self.threshold > active:
            raise TrustStoreError(
                f"trust threshold {self.threshold} exceeds the {active} unrevoked key(s) in the store"
            )

    @classmethod
    def from_keys(
        cls, keys: Iterable[PublicKey], *, revoked: Iterable[str] = (), threshold: int = 1
    ) -> TrustStore:
        """Build from public key objects."""
        return cls({k.key_id: k for k in keys}, frozenset(revoked), threshold)

    @classmethod
    def load(
        cls, paths: Sequence[str | os.PathLike[str]], *, threshold: int | None = None
    ) -> TrustStore:
        """Load from ``.pub`` files and/or directories (``--trust`` may be given several times)."""
        if not paths:
            raise TrustStoreError("no trust store given", hint="pass --trust PUBKEY or --trust DIR")
        keys: list[PublicKey] = []
        revoked: set[str] = set()
        configured: int | None = None
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                pubs = sorted(path.glob("*.pub"))
                keys.extend(load_public_key(p, kind="signing") for p in pubs)
                config = path / "trust.toml"
                if config.exists():
                    t, r = _load_trust_config(config)
                    configured = t if t is not None else configured
                    revoked |= r
            elif path.exists():
                if any("PRIVATE" in label for label, _ in _pem_blocks(path, _read(path))):
                    # A trust store names public keys; a private key here means a signing key
                    # was copied where verifiers (devices, auditors) can read it.
                    raise TrustStoreError(
                        f"{path} is a private key; a trust store holds public keys only",
                        hint="pass the publisher's public key (e.g. "
                        f"{path.with_suffix('.pub')}, if that is its public half); a private key "
                        "stays with its owner — the publisher, or the device it was made for",
                    )
                keys.append(load_public_key(path, kind="signing"))
            else:
                raise TrustStoreError(f"trust path {path} does not exist")
        return cls.from_keys(keys, revoked=revoked, threshold=threshold or configured or 1)


def _load_trust_config(path: Path) -> tuple[int | None, set[str]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TrustStoreError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"threshold", "revoked"}
    if unknown:
        raise TrustStoreError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    threshold = data.get("threshold")
    if threshold is not None and (not isinstance(threshold, int) or isinstance(threshold, bool)):
        raise TrustStoreError(f"{path}: threshold must be an integer")
    revoked = data.get("revoked", [])
    if not isinstance(revoked, list) or not all(
        isinstance(r, str) and re.fullmatch(r"[0-9a-f]{64}", r) for r in revoked
    ):
        raise TrustStoreError(f"{path}: revoked must be a list of full 64-hex-digit key ids")
    return threshold, set(revoked)
