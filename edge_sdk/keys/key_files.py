"""Loading keys: PEM files (permissions checked, passphrases, old encodings) and key references.

A private key need not be a file: :func:`load_private_key` also takes a ``pkcs11:`` URI or a
``tpm2:`` reference (:mod:`edge_sdk.keys.key_uri`) and returns a :class:`PrivateKey` whose private half
stays in the token (:class:`~edge_sdk.keys.key_types.HardwareKey`); it signs and does the DH step
there. X-Wing device keys from earlier releases, two PEM blocks (ML-KEM-768 then X25519), still load.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from edge_sdk.errors import KeyFileError, unreadable_file
from edge_sdk.files import read_capped

from .key_types import (
    PASSPHRASE_ENV,
    XWING_PRIVATE_DER,
    XWING_PUBLIC_BYTES,
    XWING_PUBLIC_DER,
    XWING_SEED_BYTES,
    KeyKind,
    PrivateKey,
    PublicKey,
    xwing_expand,
)
from .key_uri import is_key_reference

#: A key file is a few PEM blocks (an ML-DSA hybrid private key is ~10 KiB): 1 MiB is plenty.
MAX_KEY_FILE_BYTES = 1 << 20
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


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
    if der is None or not der.startswith(XWING_PUBLIC_DER):
        return None
    raw = der[len(XWING_PUBLIC_DER) :]
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
    if der is None or not der.startswith(XWING_PRIVATE_DER):
        return None
    seed = der[len(XWING_PRIVATE_DER) :]
    if len(seed) != XWING_SEED_BYTES:
        raise KeyFileError("malformed X-Wing private key (the seed is not 32 bytes)")
    return seed


def _pem_blocks(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    blocks = [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise KeyFileError(f"{path} is not a PEM key file (no PEM block found)")
    return blocks


def _read(path: Path) -> bytes:
    try:
        return read_capped(path, MAX_KEY_FILE_BYTES)
    except OSError as exc:  # a FIFO or /dev/zero is refused by name, never waited on or read
        hint = "give a PEM key file (edge-sdk keys generate writes one)"
        raise unreadable_file(KeyFileError, "key file", path, exc, hint=hint) from None


def holds_private_key(path: Path) -> bool:
    """Whether the PEM file at ``path`` holds a private key (raises KeyFileError if unreadable)."""
    return any("PRIVATE" in label for label, _ in _pem_blocks(path, _read(path)))


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
