"""The trust store: the signing keys a verifier accepts, the revoked ones, and the threshold."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_sdk.errors import TrustStoreError
from edge_sdk.files import read_capped

from .key_files import holds_private_key, load_public_key
from .key_types import PublicKey

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found]


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
                if holds_private_key(path):
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
        data = tomllib.loads(read_capped(path, 1 << 20).decode("utf-8"))
    except OSError as exc:
        raise TrustStoreError(f"cannot read {path}: {exc.strerror}") from None
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
