"""Keys: key objects and files, key references, PKCS#11 tokens, TPMs.

The names most code needs are here: ``from edge_sdk.keys import TrustStore, load_private_key``.
:mod:`~edge_sdk.keys.key_types` holds the key objects and new keys, :mod:`~edge_sdk.keys.key_files`
reads key files and references, :mod:`~edge_sdk.keys.trust` the trust store; the hardware backends
(:mod:`~edge_sdk.keys.pkcs11`, :mod:`~edge_sdk.keys.tpm`) build on ``key_types`` alone and are
imported only when a ``pkcs11:`` or ``tpm2:`` reference is opened.

May import: base (errors, files, profiles, native_output) only.
"""

from __future__ import annotations

from .key_files import (
    check_private_permissions,
    holds_private_key,
    load_private_key,
    load_public_key,
    open_key_reference,
)
from .key_types import (
    DEVICE_ALGS,
    PASSPHRASE_ENV,
    SIGNING_ALGS,
    HardwareKey,
    KeyKind,
    PrivateKey,
    PublicKey,
    generate_key,
    save_keypair,
    write_key_file,
    xwing_expand,
)
from .trust import TrustStore

__all__ = [
    "DEVICE_ALGS",
    "PASSPHRASE_ENV",
    "SIGNING_ALGS",
    "HardwareKey",
    "KeyKind",
    "PrivateKey",
    "PublicKey",
    "TrustStore",
    "check_private_permissions",
    "generate_key",
    "holds_private_key",
    "load_private_key",
    "load_public_key",
    "open_key_reference",
    "save_keypair",
    "write_key_file",
    "xwing_expand",
]
