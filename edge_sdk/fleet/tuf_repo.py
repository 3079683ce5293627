"""Publish bundles through a TUF repository (host side), built on python-tuf.

A fleet pulls updates instead of being pushed to: devices poll a static HTTP(S) repository whose
metadata follows The Update Framework, so a compromised mirror, CDN or network can neither feed
them old releases (rollback), withhold new ones forever (freeze), nor swap bytes (integrity).
Metadata is built with ``tuf.api.metadata`` through the ``tuf.repository.Repository`` helpers;
devices verify it with ``tuf.ngclient`` (:mod:`edge_sdk.fleet.agent`).

Layout of a repository directory ``DIR`` (only ``metadata/`` and ``targets/`` are served)::

    DIR/metadata/N.root.json        every root version, forever (clients walk the chain)
    DIR/metadata/root.json          the newest root, to ship in device images
    DIR/metadata/timestamp.json     the only file that changes in place: cache it briefly
    DIR/metadata/N.snapshot.json    consistent snapshots: versioned, immutable, cache forever
    DIR/metadata/N.targets.json
    DIR/targets/NAME/SHA256.VERSION-DIGEST16.edgepkg   hash-prefixed, immutable
    DIR/keys/                       online keys (targets, snapshot, timestamp), 0700 / 0600
    DIR/repo.json                   expiry policy (not secret)
    DIR/root-keys/                  root keys by default: move them offline after init

Each bundle becomes the target ``NAME/VERSION-DIGEST16.edgepkg`` whose ``custom`` field carries
``name``, ``version``, ``digest`` (SHA-256 of the signed manifest), ``hardware_ids``, ``profile``
and ``groups`` (empty: every device; else only agents in one of those groups); ``slips: true``
when its devices take the content key from a key slip.

Key slips (one per device, :mod:`edge_sdk.format.key_slip`) are targets too, at
``slips/NAME/VERSION/DEVICE_KEY_ID.edgeslip``, but not in the top-level targets metadata, which
every device downloads: targets delegates them to hashed bins (TAP 15 succinct delegation,
``bin-000`` … ``bin-3ff``), and a device looking up its own slip downloads the one bin its path
hashes to. The number of bins follows the number of slips (:func:`bin_bits`); the bins are signed
by an online key of their own (``DIR/keys/bins-KEYID16.key``), created at the first publish
with slips::

    DIR/metadata/N.bin-XYZ.json     one bin: the slips whose path hashes to XYZ (compact JSON)
    DIR/targets/slips/NAME/VERSION/SHA256.KEYID.edgeslip

Keys are edge-sdk signing keys (Ed25519, PKCS#8 PEM, written 0600 by :mod:`edge_sdk.keys`; an
encrypted root key is opened with the passphrase given or ``EDGE_SDK_KEY_PASSPHRASE``) wrapped in
securesystemslib ``CryptoSigner`` objects. Nothing here logs or returns private key material.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import (
    EdgeSDKError,
    HostDependencyError,
    KeyFileError,
    KeySlipError,
    KeySlipMismatchError,
    SignatureError,
    StateError,
    UsageError,
    excerpt,
    install_hint,
)

if TYPE_CHECKING:
    # securesystemslib and tuf build __all__ dynamically, which mypy cannot read: hence the ignores.
    from securesystemslib.signer import Signer  # type: ignore[attr-defined]
    from tuf.api.metadata import Metadata, MetaFile, TargetFile, Targets  # type: ignore[attr-defined]

    from edge_sdk.keys import TrustStore

    from .deploy import PreparedBundle

ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
DEFAULT_EXPIRY: Mapping[str, timedelta] = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
#: Old snapshot/targets versions kept so a client that read an older timestamp moments before a
#: publish can still fetch what it points to.
KEEP_METADATA_VERSIONS = 10
#: Root expiring sooner than this is reported by :func:`status` and :func:`refresh`.
ROOT_EXPIRY_WARNING = timedelta(days=30)

_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSIONED = re.compile(r"([1-9][0-9]{0,9})\.(root|snapshot|targets|bin-[0-9a-f]{1,4})\.json")
_POLICY_FORMAT = 1

#: Where key slips live among the targets, and the prefix of their bins' role names.
SLIPS_DIR = "slips"
BIN_PREFIX = "bin"
#: Versions of each bin kept (the newest, and the one a client mid-update may still fetch).
KEEP_BIN_VERSIONS = 2
#: Compact JSON bytes of one bin in snapshot metadata (``"bin-3ff.json":{"version":12},``) and
#: of one slip in its bin (path, length, SHA-256): what :func:`bin_bits` balances.
_SNAPSHOT_ENTRY_BYTES = 30
_BIN_ENTRY_BYTES = 190
_KEY_ID = re.compile(r"[0-9a-f]{64}")


def _tuf() -> None:
    """Fail with a clear message when python-tuf is missing (it is an optional extra)."""
    try:
        import securesystemslib.signer  # noqa: F401
        import tuf.api.metadata  # noqa: F401
    except ImportError:
        raise HostDependencyError(
            "TUF repositories need python-tuf", hint=install_hint("tuf")
        ) from None


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleStatus:
    """One top-level role: its current version, expiry, threshold and keys.

    ``keys_available`` counts the role's keys whose private halves were found (online key
    directory, or the root key directory when it was given and present).
    """

    name: str
    version: int
    expires: datetime
    threshold: int
    keyids: tuple[str, ...]
    keys_available: int

    def expires_within(self, delta: timedelta, now: datetime | None = None) -> bool:
        """True when the role expires within ``delta`` of ``now``."""
        return self.expires - (now or _now()) < delta


@dataclass(frozen=True)
class PublishedTarget:
    """A bundle as the repository lists it."""

    path: str
    name: str
    version: int
    digest: str
    length: int
    sha256: str
    profile: str
    hardware_ids: tuple[str, ...]
    groups: tuple[str, ...]
    #: Devices take the content key from their key slip (``slips/NAME/VERSION/KEYID.edgeslip``).
    slips: bool = False

    def to_custom(self) -> dict[str, Any]:
        """The ``custom`` field of the TUF target."""
        custom: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "profile": self.profile,
            "hardware_ids": list(self.hardware_ids),
            "groups": list(self.groups),
        }
        if self.slips:
            custom["slips"] = True
        return custom


@dataclass(frozen=True)
class RepoStatus:
    """Roles, versions, expiries and targets of a repository."""

    directory: Path
    consistent_snapshot: bool
    roles: tuple[RoleStatus, ...]
    targets: tuple[PublishedTarget, ...]
    warnings: tuple[str, ...]

    def role(self, name: str) -> RoleStatus:
        """The status of one role."""
        return next(r for r in self.roles if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``--json``)."""
        return {
            "directory": str(self.directory),
            "consistent_snapshot": self.consistent_snapshot,
            "roles": [
                {
                    "name": r.name,
                    "version": r.version,
                    "expires": r.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "threshold": r.threshold,
                    "keyids": list(r.keyids),
                    "keys_available": r.keys_available,
                }
                for r in self.roles
            ],
            "targets": [
                {"path": t.path, "length": t.length, **t.to_custom()} for t in self.targets
            ],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` added, and the role versions it wrote."""

    published: tuple[PublishedTarget, ...]
    versions: Mapping[str, int]
    #: Key slips published with this release, and the bins all the repository's slips are in.
    slips: int = 0
    bins: int = 0


@dataclass(frozen=True)
class RefreshResult:
    """Roles :func:`refresh` re-signed (name → new version), and warnings (e.g. root expiring)."""

    resigned: Mapping[str, int]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class KeyChange:
    """What :func:`rotate_key` or :func:`set_threshold` changed; key ids are TUF key ids."""

    role: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    threshold: int
    versions: Mapping[str, int]


# -- the directory --------------------------------------------------------------------------------


class _Layout:
    """Paths inside a repository directory."""

    def __init__(self, directory: str | os.PathLike[str], root_keys: str | os.PathLike[str] | None):
        self.dir = Path(directory)
        self.metadata = self.dir / "metadata"
        self.targets = self.dir / "targets"
        self.keys = self.dir / "keys"
        self.policy = self.dir / "repo.json"
        self.root_keys = Path(root_keys) if root_keys is not None else self.dir / "root-keys"
        self._lock = self.dir / ".repo.lock"

    def check(self) -> None:
        if not (self.metadata / "1.root.json").is_file() or not self.policy.is_file():
            raise UsageError(
                f"{self.dir} is not an edge-sdk TUF repository",
                hint="create one with 'edge-sdk repo init DIR'",
            )

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time (a publish and the refresh cron job must not interleave)."""
        from edge_sdk.files import locked

        with locked(self._lock):
            yield

    def versions(self, role: str) -> list[int]:
        """Versions of ``role`` present as ``N.role.json``, ascending."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.metadata):
                match = _VERSIONED.fullmatch(entry.name)
                if match and match.group(2) == role:
                    found.append(int(match.group(1)))
        return sorted(found)

    def all_versions(self) -> dict[str, list[int]]:
        """Every role present as ``N.role.json`` → its versions, ascending (one directory scan)."""
        found: dict[str, list[int]] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.metadata):
                match = _VERSIONED.fullmatch(entry.name)
                if match:
                    found.setdefault(match.group(2), []).append(int(match.group(1)))
        return {role: sorted(v) for role, v in found.items()}

    def current(self, role: str) -> Path | None:
        """The file holding the newest version of ``role``, if any."""
        if role == "timestamp":
            path = self.metadata / "timestamp.json"
            return path if path.exists() else None
        versions = self.versions(role)
        return self.metadata / f"{versions[-1]}.{role}.json" if versions else None


def _read_policy(layout: _Layout) -> dict[str, timedelta]:
    try:
        data = json.loads(layout.policy.read_text(encoding="utf-8"))
        if data.get("format") != _POLICY_FORMAT:
            raise StateError(f"{layout.policy}: unknown format {excerpt(data.get('format'))}")
        seconds = data["expiry_seconds"]
        return {role: timedelta(seconds=int(seconds[role])) for role in ROLES}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"repository policy {layout.policy} is unreadable: {exc}") from None


def _write(path: Path, data: bytes) -> None:
    from edge_sdk.files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, 0o644)


# -- keys ----------------------------------------------------------------------------------------


def _signer_of(key_path: Path, passphrase: bytes | None) -> Signer:
    from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

    from edge_sdk.keys import load_private_key

    key = load_private_key(key_path, passphrase=passphrase, kind="signing")
    if key.alg not in ("ed25519", "ecdsa-p256"):
        raise KeyFileError(
            f"{key_path}: TUF roles need an ed25519 or ecdsa-p256 key, not {key.alg}"
        )
    private = key.components[0]
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def _new_signer(directory: Path, role: str, passphrase: bytes | None) -> Signer:
    """Generate an Ed25519 key for ``role`` and save it (``ROLE-KEYID16.key`` 0600, ``.pub``)."""
    from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

    from edge_sdk.keys import generate_key, save_keypair

    key = generate_key("signing", "ed25519")
    private = key.components[0]
    public = SSlibKey.from_crypto(private.public_key())
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    save_keypair(key, directory / f"{role}-{public.keyid[:16]}", passphrase=passphrase)
    return CryptoSigner(private, public)


def _key_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.key")) if directory.is_dir() else []


def _find_signers(
    directory: Path, keyids: Sequence[str], passphrase: bytes | None
) -> dict[str, Signer]:
    """The signers in ``directory`` whose TUF key ids are in ``keyids``."""
    wanted = set(keyids)
    found: dict[str, Signer] = {}
    for path in _key_files(directory):
        signer = _signer_of(path, passphrase)
        keyid = signer.public_key.keyid
        if keyid in wanted:
            found[keyid] = signer
    return found


def _retire(directory: Path, keyid: str) -> None:
    """Move a replaced key out of use (into ``retired/``), for its owner to destroy or archive."""
    for path in _key_files(directory):
        if path.name.endswith(f"-{keyid[:16]}.key"):
            from edge_sdk.files import open_dir

            # One descriptor each for the keys directory and retired/ (never a symlink): the
            # renames land in the directories checked, whatever their paths turn into.
            dir_fd = open_dir(directory)
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir("retired", 0o700, dir_fd=dir_fd)
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                retired_fd = os.open("retired", flags, dir_fd=dir_fd)
                try:
                    for part in (path.name, path.with_suffix(".pub").name):
                        with contextlib.suppress(FileNotFoundError):
                            os.rename(part, part, src_dir_fd=dir_fd, dst_dir_fd=retired_fd)
                finally:
                    os.close(retired_fd)
            finally:
                os.close(dir_fd)


# -- the python-tuf Repository over the directory ------------------------------------------------


def _make_repository(layout: _Layout, expiry: Mapping[str, timedelta]) -> Any:
    """A ``tuf.repository.Repository`` storing metadata as static files (defined lazily)."""
    from tuf.api.metadata import (  # type: ignore[attr-defined]
        Metadata,
        MetaFile,
        Root,
        Snapshot,
        Targets,
        Timestamp,
    )
    from tuf.repository import Repository  # type: ignore[attr-defined]

    initial = {"root": Root, "targets": Targets, "snapshot": Snapshot, "timestamp": Timestamp}

    class FileRepository(Repository):
        """Reads the newest version of each role from ``metadata/``; writes a new version on close.

        ``close`` bumps the version, sets the expiry from the policy, signs with every signer
        loaded for the role, verifies the result against the (new) root before writing, and
        writes the file atomically. Writes happen in dependency order (root, targets, snapshot,
        timestamp), so a client never sees a timestamp that names a snapshot not written yet.
        """

        def __init__(self) -> None:
            self.signers: dict[str, list[Signer]] = {}
            self.written: dict[str, int] = {}

        def open(self, role: str) -> Metadata[Any]:
            path = layout.current(role)
            if path is None:
                md: Metadata[Any] = Metadata(initial[role]())
                md.signed.version = 0  # close() bumps it to 1
                return md
            return Metadata.from_bytes(path.read_bytes())

        def close(self, role: str, md: Metadata[Any]) -> None:
            md.signed.version += 1
            md.signed.expires = _now() + expiry[role]
            signers = self.signers.get(role) or []
            if not signers:
                raise KeyFileError(
                    f"no {role} key available to sign {role} v{md.signed.version}",
                    hint=f"root keys live in {layout.root_keys} unless --root-keys says otherwise"
                    if role == "root"
                    else f"online keys live in {layout.keys}",
                )
            md.signatures.clear()
            for signer in signers:
                md.sign(signer, append=True)
            self._check_signed(role, md)
            # Compact JSON for what devices download on every update (the snapshot lists every
            # slip bin); root stays indented, for the people who ship and review it.
            data = md.to_bytes() if role == "root" else _compact(md)
            version = md.signed.version
            if role == "timestamp":
                _write(layout.metadata / "timestamp.json", data)
            else:
                _write(layout.metadata / f"{version}.{role}.json", data)
                if role == "root":
                    _write(layout.metadata / "root.json", data)
            self.written[role] = version

        def _check_signed(self, role: str, md: Metadata[Any]) -> None:
            """Refuse to write metadata that clients would reject for its signatures."""
            if role == "root":
                new_root = md.signed
                previous = None
                if new_root.version > 1:
                    old = Metadata[Root].from_bytes(
                        (layout.metadata / f"{new_root.version - 1}.root.json").read_bytes()
                    )
                    previous = old.signed
                result = new_root.get_root_verification_result(
                    previous, md.signed_bytes, md.signatures
                )
                if not result.verified:
                    first, second = result.first, result.second
                    raise SignatureError(
                        f"root v{new_root.version} would carry {len(first.signed)} of the "
                        f"{first.threshold} signatures root v{new_root.version - 1 or 1} requires "
                        f"and {len(second.signed)} of its own {second.threshold}",
                        hint=f"put enough current root keys in {layout.root_keys}",
                    )
                return
            result = self.root().get_verification_result(role, md.signed_bytes, md.signatures)
            if not result.verified:
                raise SignatureError(
                    f"{role} v{md.signed.version} would carry {len(result.signed)} of the "
                    f"{result.threshold} signatures root requires",
                    hint=f"online keys live in {layout.keys}",
                )

        @property
        def targets_infos(self) -> dict[str, MetaFile]:
            """targets.json and every slip bin the newest targets delegates to, as on disk."""
            versions = layout.all_versions()
            infos = {"targets.json": MetaFile(versions.get("targets", [1])[-1])}
            if "targets" in versions:
                for role in _bin_names(self.open("targets").signed):
                    if role in versions:
                        infos[f"{role}.json"] = MetaFile(versions[role][-1])
            return infos

        def do_snapshot(self, force: bool = False) -> tuple[bool, dict[str, MetaFile]]:
            """As python-tuf's, and bins no longer delegated to leave the snapshot too (its
            version is bumped when they do): after the bin count changes, the old bins' names
            must not stay in the metadata every device downloads."""
            from tuf.api.exceptions import UnsignedMetadataError

            infos = self.targets_infos
            current = self.open("snapshot")
            try:
                self.root().verify_delegate("snapshot", current.signed_bytes, current.signatures)
            except UnsignedMetadataError:
                force = True
            old = current.signed.meta
            for name, meta in infos.items():
                if name in old and meta.version < old[name].version:
                    raise StateError(f"{name} v{meta.version} is older than the snapshot's "
                                     f"v{old[name].version}: the metadata directory was edited")  # fmt: skip
            if not force and {k: v.version for k, v in old.items()} == {
                k: v.version for k, v in infos.items()
            }:
                return False, {}
            with self.edit_snapshot() as snapshot:
                snapshot.meta = dict(infos)
            return True, {}

        @property
        def snapshot_info(self) -> MetaFile:
            versions = layout.versions("snapshot")
            return MetaFile(versions[-1] if versions else 1)

    return FileRepository()


def _open(
    layout: _Layout,
    roles: Sequence[str],
    *,
    root_passphrase: bytes | None = None,
) -> Any:
    """A repository with signers loaded for ``roles`` (root keys only when asked for)."""
    _tuf()
    layout.check()
    repository = _make_repository(layout, _read_policy(layout))
    root = repository.root()
    for role in roles:
        keyids = root.roles[role].keyids
        directory = layout.root_keys if role == "root" else layout.keys
        found = _find_signers(directory, keyids, root_passphrase if role == "root" else None)
        repository.signers[role] = [found[k] for k in keyids if k in found]
    return repository


def _prune_metadata(layout: _Layout) -> None:
    for role, versions in layout.all_versions().items():
        if role == "root":
            continue
        keep = KEEP_BIN_VERSIONS if role.startswith(f"{BIN_PREFIX}-") else KEEP_METADATA_VERSIONS
        for version in versions[:-keep]:
            with contextlib.suppress(FileNotFoundError):
                (layout.metadata / f"{version}.{role}.json").unlink()


def _compact(md: Metadata[Any]) -> bytes:
    from tuf.api.serialization.json import JSONSerializer

    data: bytes = md.to_bytes(JSONSerializer(compact=True))
    return data


# -- key slips in hashed bins ---------------------------------------------------------------------


def slip_target_path(name: str, version: int, key_id: str) -> str:
    """The TUF target path of a device's key slip for one release (what its agent looks up)."""
    from edge_sdk.format.key_slip import SLIP_SUFFIX

    return f"{SLIPS_DIR}/{name}/{version}/{key_id}{SLIP_SUFFIX}"


def bin_bits(slips: int) -> int:
    """How many hash bits name a slip's bin (``2**bits`` bins) for ``slips`` slips.

    Per release a device downloads the snapshot, which lists every bin, and its own bin, which
    holds its share of the slips: ``S·bins + E·slips/bins`` bytes, smallest at
    ``bins = sqrt(slips·E/S)`` (about 800 bins for 100,000 slips, so 1,024). Rounded to a power
    of two, 2 … 65,536 bins.
    """
    best = math.sqrt(max(slips, 1) * _BIN_ENTRY_BYTES / _SNAPSHOT_ENTRY_BYTES)
    return min(16, max(1, round(math.log2(best))))


def _bin_names(targets: Targets) -> list[str]:
    delegations = targets.delegations
    if delegations is None or delegations.succinct_roles is None:
        return []
    return list(delegations.succinct_roles.get_roles())


def _read_bins(layout: _Layout, targets: Targets) -> dict[str, TargetFile]:
    """Every slip target listed in the bins the current targets metadata delegates to."""
    from tuf.api.metadata import Metadata, Targets  # type: ignore[attr-defined]

    versions = layout.all_versions()
    found: dict[str, TargetFile] = {}
    for role in _bin_names(targets):
        if role in versions:
            path = layout.metadata / f"{versions[role][-1]}.{role}.json"
            found.update(Metadata[Targets].from_bytes(path.read_bytes()).signed.targets)
    return found


def _bins_signer(layout: _Layout, targets: Targets) -> Signer:
    """The online key that signs the bins: the one delegated to, or a new one on first use."""
    delegations = targets.delegations
    if delegations is not None and delegations.succinct_roles is not None:
        keyids = delegations.succinct_roles.keyids
        found = _find_signers(layout.keys, keyids, None)
        if not found:
            raise KeyFileError(
                f"no key for the slip bins (key {', '.join(k[:16] for k in keyids)}) in {layout.keys}",
                hint="the bins' key is an online key, kept with the targets key",
            )
        return next(iter(found.values()))
    return _new_signer(layout.keys, "bins", None)


def _write_bins(
    layout: _Layout,
    targets: Targets,
    entries: Mapping[str, TargetFile],
    signer: Signer,
    expires: datetime,
) -> int:
    """Delegate ``entries`` to ``2**bin_bits`` bins and write every bin, signed; returns the count.

    Each bin's version is the version the targets metadata being edited will get: it grows with
    every write, even across a change of the bin count that reuses a name.
    """
    from tuf.api.metadata import (  # type: ignore[attr-defined]
        Delegations,
        Metadata,
        SuccinctRoles,
        Targets,
    )

    key = signer.public_key
    succinct = SuccinctRoles([key.keyid], 1, bin_bits(len(entries)), BIN_PREFIX)
    targets.delegations = Delegations({key.keyid: key}, roles=None, succinct_roles=succinct)
    bins: dict[str, dict[str, TargetFile]] = {role: {} for role in succinct.get_roles()}
    for path, target in entries.items():
        bins[succinct.get_role_for_target(path)][path] = target
    version = targets.version + 1
    for role, files in bins.items():
        md = Metadata(Targets(version=version, expires=expires, targets=files))
        md.sign(signer)
        _write(layout.metadata / f"{version}.{role}.json", _compact(md))
    return len(bins)


def read_slip_dir(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """The slips of a directory written by ``edge-sdk slips issue`` (``KEYID.edgeslip``), by key id.

    Raises:
        UsageError: not a directory.
        KeySlipError: a slip file is unreadable, or named after another key than it is for.
    """
    from edge_sdk.format.key_slip import SLIP_SUFFIX, read_key_slip

    path = Path(directory)
    if not path.is_dir():
        raise UsageError(f"slip directory {path} does not exist",
                         hint="write one with 'edge-sdk slips issue --out DIR'")  # fmt: skip
    return {
        entry.name.removesuffix(SLIP_SUFFIX): read_key_slip(entry)
        for entry in sorted(path.iterdir())
        if entry.name.endswith(SLIP_SUFFIX)
    }


def _check_slips(bundle: PreparedBundle, slips: Mapping[str, bytes]) -> None:
    """Each slip is well formed, for this bundle, and filed under the key id it wraps for."""
    from edge_sdk.format.key_slip import parse_key_slip

    for key_id, raw in slips.items():
        if not _KEY_ID.fullmatch(key_id):
            raise KeySlipError(f"key slip name {excerpt(key_id)} is not a device key id",
                               hint="slips are named KEYID.edgeslip (64 hex digits)")  # fmt: skip
        bundle.check_slip(raw)
        parsed = parse_key_slip(raw)
        if parsed.entry.key_id != key_id:
            raise KeySlipMismatchError(
                f"the slip filed as {key_id[:16]} is for device key {parsed.entry.key_id[:16]}",
                hint="publish the directory 'edge-sdk slips issue' wrote, unchanged",
            )


def _store_slips(
    layout: _Layout, bundle: PreparedBundle, slips: Mapping[str, bytes]
) -> dict[str, TargetFile]:
    """Write each slip under ``targets/`` (hash-prefixed, as consistent snapshots need) and
    return its target entry.

    One file per device, so no fsync each (100,000 of them would take minutes): the names are
    content hashes, a file of the wrong size from a crash is rewritten on the next publish, and
    the bins naming them are written (and fsynced) only after every slip.
    """
    import hashlib

    from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

    directory = layout.targets / SLIPS_DIR / bundle.name / str(bundle.version)
    directory.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    entries: dict[str, TargetFile] = {}
    for key_id, raw in slips.items():
        sha256 = hashlib.sha256(raw).hexdigest()
        path = slip_target_path(bundle.name, bundle.version, key_id)
        stored = directory / f"{sha256}.{path.rsplit('/', 1)[1]}"
        with contextlib.suppress(FileNotFoundError):
            if stored.lstat().st_size == len(raw) and stored.is_file():
                entries[path] = TargetFile(len(raw), {"sha256": sha256}, path)
                continue
            stored.unlink()
        fd = os.open(stored, flags, 0o644)
        try:
            os.write(fd, raw)
        finally:
            os.close(fd)
        entries[path] = TargetFile(len(raw), {"sha256": sha256}, path)
    return entries


def _slip_release(path: str) -> tuple[str, int] | None:
    """``(name, version)`` of a slip target path, or None for anything else."""
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != SLIPS_DIR or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def _guard(action: str) -> Any:
    """Turn python-tuf's ValueError/RepositoryError while editing into typed errors."""

    @contextlib.contextmanager
    def run() -> Iterator[None]:
        from tuf.api.exceptions import RepositoryError

        try:
            yield
        except EdgeSDKError:
            raise
        except RepositoryError as exc:
            raise StateError(f"{action}: the repository metadata is inconsistent: {exc}") from None
        except OSError as exc:
            raise StateError(f"{action}: {exc.strerror or exc}") from None

    return run()


# -- public operations ----------------------------------------------------------------------------


def init_repo(
    directory: str | os.PathLike[str],
    *,
    root_keys: str | os.PathLike[str] | None = None,
    keys: Mapping[str, int] | None = None,
    thresholds: Mapping[str, int] | None = None,
    expiry: Mapping[str, timedelta] | None = None,
    root_passphrase: bytes | None = None,
) -> RepoStatus:
    """Create a repository: keys for every role, root v1, and empty targets/snapshot/timestamp.

    Args:
        directory: the repository directory (created; must not hold a repository already).
        root_keys: where root keys are written (default ``DIR/root-keys``); keep them offline
            afterwards and pass the directory to :func:`rotate_key`/:func:`set_threshold`.
        keys: keys to generate per role (default 1 each); must be ≥ the role's threshold.
        thresholds: signatures required per role (default 1 each).
        expiry: metadata lifetime per role (default: root 365 d, targets 90 d, snapshot 7 d,
            timestamp 1 d). Devices refuse expired metadata, so :func:`refresh` must run well
            within the timestamp lifetime (e.g. hourly from cron).
        root_passphrase: encrypt the root key files with this passphrase.

    Raises:
        UsageError: the directory already holds a repository, or bad role names / counts.
        KeyFileError: a key file cannot be written.
    """
    _tuf()
    layout = _Layout(directory, root_keys)
    for mapping in (keys or {}, thresholds or {}, expiry or {}):
        unknown = set(mapping) - set(ROLES)
        if unknown:
            raise UsageError(
                f"unknown role(s) {', '.join(sorted(unknown))}; roles: {', '.join(ROLES)}"
            )
    policy = {**DEFAULT_EXPIRY, **(expiry or {})}
    if any(v.total_seconds() <= 0 for v in policy.values()):
        raise UsageError("expiry periods must be positive")
    counts = {role: (keys or {}).get(role, 1) for role in ROLES}
    limits = {role: (thresholds or {}).get(role, 1) for role in ROLES}
    for role in ROLES:
        if limits[role] < 1 or counts[role] < limits[role]:
            raise UsageError(
                f"{role}: {counts[role]} key(s) cannot meet threshold {limits[role]}",
                hint="thresholds must be ≥ 1 and ≤ the number of keys",
            )
    if layout.metadata.exists() and any(layout.metadata.iterdir()):
        raise UsageError(f"{layout.metadata} already holds metadata; refusing to overwrite it")
    layout.dir.mkdir(parents=True, exist_ok=True)
    with layout.locked():
        for path in (layout.metadata, layout.targets):
            path.mkdir(parents=True, exist_ok=True)
        _write(
            layout.policy,
            json.dumps(
                {
                    "format": _POLICY_FORMAT,
                    "expiry_seconds": {r: int(policy[r].total_seconds()) for r in ROLES},
                },
                indent=1,
            ).encode(),
        )
        repository = _make_repository(layout, policy)
        with _guard("init"):
            with repository.edit_root() as root:
                root.consistent_snapshot = True
                for role in ROLES:
                    directory_for = layout.root_keys if role == "root" else layout.keys
                    passphrase = root_passphrase if role == "root" else None
                    signers = [
                        _new_signer(directory_for, role, passphrase) for _ in range(counts[role])
                    ]
                    repository.signers[role] = signers
                    for signer in signers:
                        root.add_key(signer.public_key, role)
                    root.roles[role].threshold = limits[role]
            with repository.edit_targets():
                pass
            repository.do_snapshot(force=True)
            repository.do_timestamp(force=True)
    return status(layout.dir, root_keys=layout.root_keys)


def publish(
    bundles: Sequence[str | os.PathLike[str]],
    repo: str | os.PathLike[str],
    group: str | None = None,
    *,
    trust: TrustStore | None = None,
    keep: int | None = None,
    slips: Mapping[str, bytes] | None = None,
    keep_slips: int = 1,
) -> PublishResult:
    """Add bundles as targets and sign new targets, snapshot and timestamp metadata.

    Each bundle's file is written under ``targets/`` (hash-prefixed) before any metadata names
    it. Publishing a bundle again widens its groups (``group=None`` makes it available to every
    device, e.g. to promote a canary release).

    Args:
        bundles: bundle files.
        repo: the repository directory.
        group: make the bundles available only to agents of this group (e.g. ``canary``).
        trust: when given, each bundle's signatures are verified against it before publishing.
        keep: list only the newest ``keep`` versions of each bundle name in the targets
            metadata, which every device downloads on each update (older files stay under
            ``targets/`` for clients in the middle of an update).
        slips: key slips for the (single) bundle, by device key id: each becomes the target
            ``slips/NAME/VERSION/KEYID.edgeslip`` in the hashed bins, and the bundle's target
            says ``slips: true``, so agents fetch their own slip and no other. A device without
            a slip gets nothing it can open (revocation: leave it out of the next release).
        keep_slips: the bins keep the slips of the newest ``keep_slips`` versions of the name
            (older releases' slips leave the bins; a device keeps the slip it installed).

    Raises:
        UsageError: bad group name, or another bundle with the same name and version is
            already published (bump the version); slips with more than one bundle.
        KeySlipError, KeySlipMismatchError: a slip is malformed, for another bundle, or filed
            under another device's key id.
        BundleFormatError, SignatureError…: unreadable bundle, or it fails ``trust``.
        KeyFileError, SignatureError: the online keys are missing.
    """
    from .deploy import prepare_bundle

    if not bundles:
        raise UsageError("nothing to publish")
    if keep is not None and keep < 1:
        raise UsageError(f"keep must be at least 1, got {keep}")
    if group is not None and not _GROUP.fullmatch(group):
        raise UsageError(f"group {excerpt(group)} must be 1-64 letters, digits, '.', '_' or '-'")
    if keep_slips < 1:
        raise UsageError(f"keep_slips must be at least 1, got {keep_slips}")
    layout = _Layout(repo, None)
    prepared = [prepare_bundle(b, trust=trust) for b in bundles]
    if slips is not None:
        if len(prepared) != 1:
            raise UsageError("key slips are published with one bundle at a time")
        if not prepared[0].encrypted:
            raise UsageError(f"{prepared[0].path} is signed only: it has no content key for slips")
        if not slips:
            raise UsageError("no key slips to publish", hint="check the slip directory")
        _check_slips(prepared[0], slips)
    published: list[PublishedTarget] = []
    bins = 0
    with layout.locked():
        repository = _open(layout, ONLINE_ROLES)
        from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

        with _guard("publish"), repository.edit_targets() as targets:
            listed = {path: _published(tf) for path, tf in targets.targets.items()}
            for bundle in prepared:
                path = f"{bundle.name}/{bundle.release_file}"
                for other in listed.values():
                    if (
                        other.name == bundle.name
                        and other.version == bundle.version
                        and other.digest != bundle.digest
                    ):
                        raise UsageError(
                            f"{bundle.name} v{bundle.version} is already published with digest "
                            f"{other.digest[:16]}; refusing a different bundle with that version",
                            hint="seal the new model with a higher version",
                        )
                groups: tuple[str, ...] = () if group is None else (group,)
                before = listed.get(path)
                if before is not None:
                    groups = () if not before.groups or not groups else (*before.groups, *groups)
                entry = PublishedTarget(
                    path=path,
                    name=bundle.name,
                    version=bundle.version,
                    digest=bundle.digest,
                    length=bundle.size,
                    sha256=bundle.sha256,
                    profile=bundle.profile,
                    hardware_ids=_hardware_ids(bundle.data),
                    groups=tuple(sorted(set(groups))),
                    slips=slips is not None or (before is not None and before.slips),
                )
                stored = layout.targets / bundle.name / f"{bundle.sha256}.{bundle.release_file}"
                if not (stored.is_file() and stored.stat().st_size == bundle.size):
                    _write(stored, bundle.data)
                targets.targets[path] = TargetFile(
                    bundle.size,
                    {"sha256": bundle.sha256},
                    path,
                    unrecognized_fields={"custom": entry.to_custom()},
                )
                listed[path] = entry
                published.append(entry)
            if keep is not None:
                for name in {b.name for b in prepared}:
                    versions = sorted({t.version for t in listed.values() if t.name == name})
                    for path, entry in list(listed.items()):
                        if entry.name == name and entry.version < versions[-keep:][0]:
                            del targets.targets[path]
            if slips is not None:
                bins = _publish_slips(layout, targets, prepared[0], slips, keep_slips)
        with _guard("publish"):
            repository.do_snapshot()
            repository.do_timestamp()
        _prune_metadata(layout)
    return PublishResult(
        tuple(published), dict(repository.written), len(slips) if slips else 0, bins
    )


def _publish_slips(
    layout: _Layout,
    targets: Targets,
    bundle: PreparedBundle,
    slips: Mapping[str, bytes],
    keep_slips: int,
) -> int:
    """Store the slips and rewrite every bin: the slips already there for releases still listed
    (the newest ``keep_slips`` versions of this name), plus this release's."""
    signer = _bins_signer(layout, targets)
    live = {(p.name, p.version) for p in map(_published, targets.targets.values())}
    before = _read_bins(layout, targets)
    entries = {path: target for path, target in before.items() if _slip_release(path) in live}
    entries.update(_store_slips(layout, bundle, slips))
    versions = sorted(
        {r[1] for r in map(_slip_release, entries) if r is not None and r[0] == bundle.name}
    )
    dropped = {(bundle.name, v) for v in versions[:-keep_slips]}
    entries = {p: t for p, t in entries.items() if _slip_release(p) not in dropped}
    count = _write_bins(layout, targets, entries, signer, _now() + _read_policy(layout)["targets"])
    # Slip files no bin names any more go, except those the previous bins name: a device that
    # read the previous timestamp a moment ago may still be fetching one.
    _prune_slip_files(layout, {r for r in map(_slip_release, [*before, *entries]) if r})
    return count


def _prune_slip_files(layout: _Layout, wanted: set[tuple[str, int]]) -> None:
    import shutil

    root = layout.targets / SLIPS_DIR
    for name_dir in root.iterdir() if root.is_dir() else ():
        for version_dir in name_dir.iterdir() if name_dir.is_dir() else ():
            if version_dir.name.isdigit() and (name_dir.name, int(version_dir.name)) not in wanted:
                shutil.rmtree(version_dir, ignore_errors=True)


def _hardware_ids(data: bytes) -> tuple[str, ...]:
    from edge_sdk.format.bundle import read_bundle

    return tuple(read_bundle(data).manifest.target.hardware_ids)


def _published(target: Any) -> PublishedTarget:
    """A TUF TargetFile written by :func:`publish`, read back (for status and conflict checks)."""
    custom = target.custom if isinstance(target.custom, dict) else {}
    return PublishedTarget(
        path=target.path,
        name=str(custom.get("name", "")),
        version=int(custom.get("version", 0)),
        digest=str(custom.get("digest", "")),
        length=int(target.length),
        sha256=str(target.hashes.get("sha256", "")),
        profile=str(custom.get("profile", "")),
        hardware_ids=tuple(str(h) for h in custom.get("hardware_ids", ())),
        groups=tuple(str(g) for g in custom.get("groups", ())),
        slips=custom.get("slips") is True,
    )


def refresh(
    repo: str | os.PathLike[str],
    *,
    margin: Mapping[str, timedelta] | None = None,
    force: bool = False,
) -> RefreshResult:
    """Re-sign the online roles that expire soon (run from cron, well within the timestamp's life).

    A role is re-signed when less than ``margin[role]`` (default: half of its lifetime) is left.
    Re-signing targets also bumps snapshot, and snapshot bumps timestamp, as TUF requires.

    Raises:
        KeyFileError, SignatureError: the online keys are missing.
    """
    layout = _Layout(repo, None)
    with layout.locked():
        repository = _open(layout, ONLINE_ROLES)
        policy = _read_policy(layout)
        now = _now()
        due = set()
        for role in ONLINE_ROLES:
            left = (margin or {}).get(role, policy[role] / 2)
            expires = repository.open(role).signed.expires
            if force or expires - now < left:
                due.add(role)
        bins_expire = _bins_expiry(layout, repository.open("targets").signed)
        if bins_expire is not None and bins_expire - now < (margin or {}).get(
            "targets", policy["targets"] / 2
        ):
            due.add("targets")  # the bins are re-signed with the targets that delegates to them
        with _guard("refresh"):
            if "targets" in due:
                with repository.edit_targets() as targets:
                    if _bin_names(targets):
                        _write_bins(layout, targets, _read_bins(layout, targets),
                                    _bins_signer(layout, targets), now + policy["targets"])  # fmt: skip
            repository.do_snapshot(force="snapshot" in due)
            repository.do_timestamp(force="timestamp" in due)
        _prune_metadata(layout)
        root = repository.root()
    warnings = []
    if root.expires - now < ROOT_EXPIRY_WARNING:
        warnings.append(
            f"root v{root.version} expires {root.expires:%Y-%m-%d}: re-sign it with the offline "
            "root keys (edge-sdk repo rotate-key root, or a threshold change)"
        )
    return RefreshResult(dict(repository.written), tuple(warnings))


def _bins_expiry(layout: _Layout, targets: Targets) -> datetime | None:
    """When the slip bins expire (all are written together: the first one says), if any."""
    from tuf.api.metadata import Metadata, Targets  # type: ignore[attr-defined]

    names = _bin_names(targets)
    versions = layout.versions(names[0]) if names else []
    if not versions:
        return None
    path = layout.metadata / f"{versions[-1]}.{names[0]}.json"
    expires: datetime = Metadata[Targets].from_bytes(path.read_bytes()).signed.expires
    return expires


def _resign_chain(repository: Any, role: str) -> None:
    """After root changed ``role``'s keys or threshold, sign ``role`` anew and what depends on it."""
    if role == "targets":
        with repository.edit_targets():
            pass
    if role in ("targets", "snapshot"):
        repository.do_snapshot(force=True)
    if role != "root":
        repository.do_timestamp(force=True)


def rotate_key(
    repo: str | os.PathLike[str],
    role: str,
    *,
    old_key: str | None = None,
    root_keys: str | os.PathLike[str] | None = None,
    root_passphrase: bytes | None = None,
) -> KeyChange:
    """Replace one key of ``role`` with a new one; the replaced key stops being trusted.

    A new root version lists the new key and drops the old one. It is signed by the current root
    keys *and*, when ``role`` is root, by the new key too: clients accept a root only when it
    meets both the previous root's threshold and its own. For an online role the role is then
    re-signed with the new key (and snapshot/timestamp after it). The replaced key file moves to
    ``retired/`` next to it.

    Args:
        role: root, targets, snapshot or timestamp.
        old_key: TUF key id (or a unique prefix) of the key to replace; optional when the role
            has a single key.
        root_keys: the (offline) root key directory; default ``DIR/root-keys``.
        root_passphrase: passphrase of encrypted root key files (else ``EDGE_SDK_KEY_PASSPHRASE``).

    Raises:
        UsageError: unknown role, ambiguous or unknown ``old_key``.
        KeyFileError, SignatureError: not enough root keys to sign the new root.
    """
    if role not in ROLES:
        raise UsageError(f"unknown role {excerpt(role)}; roles: {', '.join(ROLES)}")
    layout = _Layout(repo, root_keys)
    with layout.locked():
        repository = _open(layout, ROLES, root_passphrase=root_passphrase)
        current = list(repository.root().roles[role].keyids)
        matches = [k for k in current if old_key is None or k.startswith(old_key)]
        if len(matches) != 1:
            raise UsageError(
                f"{role} has keys {', '.join(k[:16] for k in current)}; "
                + (
                    "name the one to replace"
                    if old_key is None
                    else f"{excerpt(old_key)} matches {len(matches)}"
                )
            )
        replaced = matches[0]
        directory = layout.root_keys if role == "root" else layout.keys
        new = _new_signer(directory, role, root_passphrase if role == "root" else None)
        if role == "root":
            # The old root keys sign this one last root version, to vouch for their successor.
            repository.signers["root"] = [*repository.signers["root"], new]
        with _guard("rotate"):
            with repository.edit_root() as root:
                root.revoke_key(replaced, role)
                root.add_key(new.public_key, role)
            repository.signers[role] = [
                s for s in repository.signers[role] if s.public_key.keyid != replaced
            ]
            if role != "root":
                repository.signers[role].append(new)
            _resign_chain(repository, role)
        _retire(directory, replaced)
        threshold = repository.root().roles[role].threshold
    return KeyChange(
        role, (new.public_key.keyid,), (replaced,), threshold, dict(repository.written)
    )


def set_threshold(
    repo: str | os.PathLike[str],
    role: str,
    threshold: int,
    *,
    root_keys: str | os.PathLike[str] | None = None,
    root_passphrase: bytes | None = None,
) -> KeyChange:
    """Change how many signatures ``role`` needs, generating keys if it has fewer than that.

    Raises:
        UsageError: unknown role or threshold < 1.
        KeyFileError, SignatureError: not enough root keys to sign the new root.
    """
    if role not in ROLES:
        raise UsageError(f"unknown role {excerpt(role)}; roles: {', '.join(ROLES)}")
    if threshold < 1:
        raise UsageError(f"threshold must be at least 1, got {threshold}")
    layout = _Layout(repo, root_keys)
    with layout.locked():
        repository = _open(layout, ROLES, root_passphrase=root_passphrase)
        current = repository.root().roles[role].keyids
        directory = layout.root_keys if role == "root" else layout.keys
        passphrase = root_passphrase if role == "root" else None
        added = [_new_signer(directory, role, passphrase) for _ in range(threshold - len(current))]
        repository.signers[role] = [*repository.signers[role], *added]
        with _guard("set threshold"):
            with repository.edit_root() as root:
                for signer in added:
                    root.add_key(signer.public_key, role)
                root.roles[role].threshold = threshold
            _resign_chain(repository, role)
    return KeyChange(
        role, tuple(s.public_key.keyid for s in added), (), threshold, dict(repository.written)
    )


def status(
    repo: str | os.PathLike[str], *, root_keys: str | os.PathLike[str] | None = None
) -> RepoStatus:
    """Roles (version, expiry, threshold, keys), targets and warnings of a repository.

    Raises:
        UsageError: not a repository.
    """
    _tuf()
    layout = _Layout(repo, root_keys)
    layout.check()
    policy = _read_policy(layout)
    repository = _make_repository(layout, policy)
    now = _now()
    with _guard("status"):
        root = repository.root()
        roles = []
        warnings = []
        for role in ROLES:
            keyids = tuple(root.roles[role].keyids)
            directory = layout.root_keys if role == "root" else layout.keys
            available = _available(directory, keyids)
            signed = root if role == "root" else repository.open(role).signed
            roles.append(
                RoleStatus(role, signed.version, signed.expires, root.roles[role].threshold,
                           keyids, available)
            )  # fmt: skip
            if signed.expires <= now:
                warnings.append(f"{role} v{signed.version} has expired: devices refuse updates")
            elif role != "root" and signed.expires - now < policy[role] / 2:
                warnings.append(f"{role} expires {signed.expires:%Y-%m-%d %H:%M}Z: run refresh")
            elif role == "root" and signed.expires - now < ROOT_EXPIRY_WARNING:
                warnings.append(f"root expires {signed.expires:%Y-%m-%d}: re-sign it offline")
            if role != "root" and available < root.roles[role].threshold:
                warnings.append(
                    f"only {available} of {root.roles[role].threshold} {role} keys found"
                )
        targets = tuple(
            sorted(
                (_published(t) for t in repository.targets().targets.values()),
                key=lambda t: (t.name, t.version, t.path),
            )
        )
    return RepoStatus(
        layout.dir, bool(root.consistent_snapshot), tuple(roles), targets, tuple(warnings)
    )


def _available(directory: Path, keyids: Sequence[str]) -> int:
    """How many of ``keyids`` have a ``ROLE-KEYID16.key`` file (names only; nothing decrypted)."""
    names = {p.name.rsplit("-", 1)[-1].removesuffix(".key") for p in _key_files(directory)}
    return sum(1 for k in keyids if k[:16] in names)


def root_metadata(repo: str | os.PathLike[str]) -> bytes:
    """The newest root metadata, to ship in device images as the agent's trust anchor."""
    layout = _Layout(repo, None)
    layout.check()
    path = layout.current("root")
    assert path is not None
    return path.read_bytes()


__all__ = [
    "DEFAULT_EXPIRY",
    "ONLINE_ROLES",
    "ROLES",
    "SLIPS_DIR",
    "KeyChange",
    "PublishResult",
    "PublishedTarget",
    "RefreshResult",
    "RepoStatus",
    "RoleStatus",
    "bin_bits",
    "init_repo",
    "publish",
    "read_slip_dir",
    "refresh",
    "root_metadata",
    "rotate_key",
    "set_threshold",
    "slip_target_path",
    "status",
]
