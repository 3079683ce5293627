"""Install bundles on targets atomically, keep a few releases, roll back, report status.

Layout on a target root (the only files this module writes)::

    <root>/<name>/releases/<version>-<digest[:16]>.edgepkg   one file per release
    <root>/<name>/releases/<version>-<digest[:16]>.edgeslip  the device's key slip, if it has one
    <root>/<name>/current -> releases/<file>                 relative symlink, switched atomically

``<digest>`` is the bundle's identity (SHA-256 of its signed manifest). A deploy:

1. reads the local bundle (:func:`prepare_bundle`); its name must be a plain file name;
2. removes stale temp files a previous interrupted deploy left behind;
3. skips the upload when the release file is already there with the same SHA-256 (computed on
   the target), else streams the local file (never held whole in memory) to
   ``releases/.<file>.partial-<sha256 of the file>``, fsyncs it, and compares the target's
   SHA-256 of it with the local file's. An interrupted upload leaves that partial behind, named
   by the hash of what it is part of: the next deploy of the same file checks that the partial's
   SHA-256 equals that of the file's first bytes of its length and sends only the rest (a
   partial that differs, is longer, or is not a regular file is removed and the upload starts
   over; partials of other files are stale temps). The whole file's hash is compared before it
   is renamed into place, always;
4. optionally runs a verification command on the target (``edge-sdk verify``) on that file;
5. renames it into place, then switches ``current``: a new symlink under a temp name renamed
   over the old one (rename(2) is atomic, so readers see the old or the new release, never
   none), then ``sync``;
6. optionally runs a health check; if it fails, ``current`` goes back to what it was;
7. prunes old releases, keeping ``keep`` and never the current or the previous one.

When a switch happened is the modification time of the ``current`` symlink itself (a new link is
created for every switch); no separate state file can disagree with the link.

Concurrent deploys of the *same* bundle name to the *same* target are not supported: the second
one's stale-file cleanup may remove the first one's upload in flight (the first then fails
cleanly, ``current`` intact).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import re
import secrets
import shlex
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from edge_sdk.errors import (
    DeployError,
    EdgeSDKError,
    KeySlipMismatchError,
    TransportError,
    UsageError,
    VerificationError,
    excerpt,
)
from edge_sdk.format.bundle import (
    DEFAULT_LIMITS,
    MAGIC,
    Bundle,
    header_needs,
    open_parts,
    read_bundle,
    read_header,
)
from edge_sdk.format.key_slip import (
    SLIP_SUFFIX,
    check_slip_signatures,
    parse_key_slip,
    read_key_slip,
)
from edge_sdk.format.manifest import Manifest
from edge_sdk.format.strict_json import loads_strict
from edge_sdk.format.verify import Policy, check_bundle, check_payload, check_payload_stream
from edge_sdk.keys import TrustStore

from .inventory import Device
from .transports import (
    Entry,
    Failure,
    RetryPolicy,
    Session,
    SshOptions,
    Target,
    parse_target,
    with_session,
)

RELEASES = "releases"
CURRENT = "current"
DEFAULT_VERIFY_COMMAND = "edge-sdk verify {file} --trust {trust}"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RELEASE = re.compile(r"(\d{1,19})-([0-9a-f]{16})\.edgepkg")  # versions go up to 2**63 - 1
_PREAMBLE = struct.Struct(">8sHHI")  # magic, format version, flags, manifest length
#: Extra free space wanted beyond the bundle's size before uploading (directory blocks, slack).
_SPACE_MARGIN = 64 * 1024

DeployStatus = Literal["ok", "unchanged", "failed", "skipped"]
Phase = Literal[
    "queued", "connecting", "checking", "uploading", "verifying", "switching",
    "health-check", "pruning", "retrying", "done",
]  # fmt: skip


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedBundle:
    """A local bundle read once, ready to be sent to any number of targets."""

    path: Path
    name: str
    version: int
    digest: str
    sha256: str
    size: int
    profile: str
    encrypted: bool
    recipients: frozenset[str]
    #: The publisher trust this bundle was verified against; what is current on a target is
    #: checked against it too before its version may refuse this one (None: nothing is).
    trust: TrustStore | None = field(default=None, repr=False, compare=False)

    @property
    def release_file(self) -> str:
        """The file name this release has on every target."""
        return f"{self.version}-{self.digest[:16]}.edgepkg"

    @property
    def data(self) -> bytes:
        """The whole file, read now (deploys stream it instead; this is for small consumers)."""
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read bundle {self.path}: {exc.strerror}") from None

    def check_slip(self, slip: bytes) -> None:
        """Refuse, before any upload, a key slip that does not belong to this release.

        Raises:
            KeySlipError: not a well-formed slip.
            SignatureError, RevokedKeyError: with a publisher trust store, the slip's signatures
                do not satisfy it (the board would refuse it the same way).
            KeySlipMismatchError: a slip for another bundle.
        """
        parsed = parse_key_slip(slip)
        if self.trust is not None:
            check_slip_signatures(parsed, self.trust)
        if parsed.bundle_digest != self.digest:
            raise KeySlipMismatchError(
                f"key slip is for {parsed.describe()}, not for {self.name} v{self.version} "
                f"({self.digest[:16]}…)",
                hint="issue this release's slips (edge-sdk slips issue) and deploy those",
            )


def prepare_bundle(
    path: str | os.PathLike[str], *, trust: TrustStore | None = None
) -> PreparedBundle:
    """Read a bundle for deployment: its payload always matches the signed digest, and with
    ``trust`` its signatures are verified here first.

    Raises:
        BundleFormatError: not a readable bundle.
        SignatureError, ExpiredError, IntegrityError: ``trust`` given and verification failed.
        DeployError: the bundle's name is not safe to use as a file name on a target.
    """
    path = Path(path)
    # Streamed, in bounded memory: a multi-GB bundle is never read whole (the header is parsed
    # alone, then the payload and the file are hashed piece by piece).
    with open_parts(path, trust=trust) as (bundle, payload):
        if trust is not None:
            check_bundle(bundle, Policy(trust, check_payload_hash=False))
        # Without a trust store nothing says who signed it, but a damaged or altered payload is
        # still caught here rather than at the board's next load.
        check_payload_stream(bundle, payload)
    file_sha256, size = _hash_file(path)
    return _prepared(path, bundle, file_sha256, size, trust)


def prepare_bundle_bytes(
    data: bytes, path: str | os.PathLike[str], *, trust: TrustStore | None = None
) -> PreparedBundle:
    """:func:`prepare_bundle` for bytes already read and checked (the agent's download): the
    release is bound to *these* bytes by their SHA-256. Deploy streams ``path``, and the target
    hashes what it received before the rename, so a file swapped in at ``path`` after the check
    is refused (remote digest mismatch), never installed.

    Raises:
        As :func:`prepare_bundle`.
    """
    path = Path(path)
    bundle = read_bundle(data)
    if trust is not None:
        check_bundle(bundle, Policy(trust))
    else:
        check_payload(bundle)
    return _prepared(path, bundle, hashlib.sha256(data).hexdigest(), len(data), trust)


def _prepared(
    path: Path, bundle: Bundle, sha256: str, size: int, trust: TrustStore | None
) -> PreparedBundle:
    manifest = bundle.manifest
    _check_name(manifest.name)
    return PreparedBundle(
        path=path,
        name=manifest.name,
        version=manifest.version,
        digest=bundle.digest,
        sha256=sha256,
        size=size,
        profile=manifest.target.profile,
        encrypted=manifest.payload.encrypted,
        recipients=frozenset(r.key_id for r in bundle.recipients),
        trust=trust,
    )


#: Bytes read from the local bundle per piece when it is hashed or sent.
_PIECE = 1024 * 1024


def _hash_file(path: Path, length: int | None = None) -> tuple[str, int]:
    """SHA-256 and size of ``path`` (of its first ``length`` bytes), read piece by piece."""
    digest = hashlib.sha256()
    done = 0
    try:
        with path.open("rb") as handle:
            while length is None or done < length:
                want = _PIECE if length is None else min(_PIECE, length - done)
                piece = handle.read(want)
                if not piece:
                    break
                digest.update(piece)
                done += len(piece)
    except OSError as exc:
        raise UsageError(f"cannot read bundle {path}: {exc.strerror}") from None
    if length is not None and done != length:
        raise DeployError(f"bundle {path} changed while it was deployed (it is shorter now)")
    return digest.hexdigest(), done


def resume_name(bundle: PreparedBundle) -> str:
    """The partial upload's name in ``releases/``: tied to the exact bytes it is part of."""
    return f".{bundle.release_file}.partial-{bundle.sha256}"


def _check_name(name: str) -> str:
    # The manifest already restricts names, but a name becomes a directory on every board, so
    # check again here rather than trust a rule enforced in another module.
    if not _NAME.fullmatch(name) or ".." in name:
        raise DeployError(f"refusing bundle name {excerpt(name)}: not a safe directory name")
    return name


@dataclass(frozen=True)
class DeployOptions:
    """What a deploy does on each target, besides installing the bundle.

    Attributes:
        keep: releases to keep per bundle name (the current and previous ones are always kept).
        verify_remote: path of a trust store *on the target*; when set, ``verify_command`` runs
            there on the uploaded file before anything is switched.
        verify_command: shell template; ``{file}``, ``{trust}``, ``{name}``, ``{version}`` are
            replaced by shell-quoted values (write literal braces as ``{{`` and ``}}``).
        health_check: shell template run on the target after the switch; placeholders
            ``{name}``, ``{version}``, ``{file}`` (the release), ``{current}`` (the link),
            ``{root}``. A nonzero exit or a timeout switches ``current`` back.
        health_timeout: seconds the health check may take.
        verify_timeout: seconds the verification command may take.
        allow_downgrade: allow installing a lower version than the current one.
        retry: retries for transient (network) failures.
    """

    keep: int = 3
    verify_remote: str | None = None
    verify_command: str = DEFAULT_VERIFY_COMMAND
    health_check: str | None = None
    health_timeout: float = 30.0
    verify_timeout: float = 120.0
    allow_downgrade: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise UsageError(f"keep must be at least 1, got {self.keep}")
        if self.health_timeout <= 0 or self.verify_timeout <= 0:
            raise UsageError("timeouts must be positive")
        _template(self.verify_command, "verify command", file="f", trust="t", name="n", version="1")
        if self.health_check is not None:
            _template(
                self.health_check, "health check",
                name="n", version="1", file="f", current="c", root="r",
            )  # fmt: skip


def _template(template: str, what: str, **values: str) -> str:
    """Fill a command template with shell-quoted values."""
    try:
        return template.format(**{k: shlex.quote(v) for k, v in values.items()})
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"{what} {excerpt(template)} has an invalid placeholder ({exc})",
            hint=f"placeholders: {', '.join('{' + k + '}' for k in values)}; "
            "write literal braces as {{ and }}",
        ) from None


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployResult:
    """What happened on one target.

    ``status``: ``ok`` (``current`` now points at the release; ``uploaded`` tells whether bytes
    were sent), ``unchanged`` (it already did; nothing was written), ``failed`` (``reason`` and
    ``error`` say why; ``rolled_back`` tells whether a failed health check switched ``current``
    back), or ``skipped`` (a fleet rollout stopped before reaching this device).
    """

    target: str
    status: DeployStatus
    name: str
    version: int
    digest: str
    file: str
    device: str | None = None
    uploaded: bool = False
    previous: str | None = None
    rolled_back: bool = False
    pruned: tuple[str, ...] = ()
    reason: str | None = None
    error: EdgeSDKError | None = None
    elapsed: float = 0.0
    attempts: int = 0
    #: Bundle bytes sent in this deploy (all attempts); less than the size when it resumed.
    bytes_sent: int = 0
    #: Where the last upload started: the length of a partial a previous transfer left (0: none).
    resumed_from: int = 0


@dataclass(frozen=True)
class ProgressEvent:
    """Reported to a progress callback as a deploy advances (for progress bars; no I/O here).

    ``sent``/``total`` are upload bytes; ``message`` explains a ``retrying`` event; ``result``
    comes with ``done``.
    """

    target: str
    device: str | None
    phase: Phase
    sent: int = 0
    total: int = 0
    result: DeployResult | None = None
    message: str | None = None


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class RollbackResult:
    """``current`` of ``name`` on ``target`` moved from ``from_file`` to ``to_file``."""

    target: str
    name: str
    from_file: str
    to_file: str
    version: int


@dataclass(frozen=True)
class ReleaseStatus:
    """One bundle name on a target.

    ``version``, ``digest`` (full, read from the release's signed manifest) and ``file`` describe
    what ``current`` points to; they are None when nothing is current. ``switched_at`` is the
    mtime of the ``current`` symlink. ``problem`` explains a ``current`` that is dangling, foreign
    or unreadable.
    """

    name: str
    version: int | None
    digest: str | None
    file: str | None
    switched_at: datetime | None
    releases: tuple[str, ...]
    problem: str | None = None
    #: ``version`` and ``digest`` come from a header that verified against the trust given.
    verified: bool = False


@dataclass(frozen=True)
class FleetResult:
    """Per-device results in device order; ``stopped`` when ``max_failures`` was exceeded."""

    results: tuple[DeployResult, ...]
    stopped: bool

    def count(self, status: DeployStatus) -> int:
        """How many devices ended with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        """True when no device failed and none was skipped."""
        return not self.stopped and all(r.status in ("ok", "unchanged") for r in self.results)


# -- release bookkeeping --------------------------------------------------------------------------


def _release_key(name: str, mtime: float) -> tuple[int, float, str]:
    match = _RELEASE.fullmatch(name)
    if match is None:  # callers only pass names the pattern listed; keep it a typed error anyway
        raise DeployError(f"{excerpt(name)} is not a release file name")
    return int(match.group(1)), mtime, name


def _release_of(link: str | None) -> str | None:
    """The release file a ``current`` link names, if it has the shape this module writes."""
    if link is None or not link.startswith(f"{RELEASES}/"):
        return None
    file = link[len(RELEASES) + 1 :]
    return file if _RELEASE.fullmatch(file) else None


def _is_stale_temp(name: str) -> bool:
    return name.startswith(".") and (".partial-" in name or name.startswith(".current.tmp-"))


async def _releases(session: Session, name: str) -> dict[str, float]:
    """Release files of ``name`` on the target, with their mtimes."""
    entries = await session.listdir(f"{name}/{RELEASES}")
    return {e.name: e.mtime for e in entries if e.kind == "file" and _RELEASE.fullmatch(e.name)}


def _ordered(releases: Mapping[str, float]) -> list[str]:
    return sorted(releases, key=lambda f: _release_key(f, releases[f]))


def _previous_in_order(releases: Mapping[str, float], current: str, mtime: float) -> str | None:
    key = _release_key(current, mtime)
    older = [f for f in releases if _release_key(f, releases[f]) < key]
    return max(older, key=lambda f: _release_key(f, releases[f])) if older else None


async def _check_root(session: Session) -> None:
    root = await session.stat("")
    if root is None or root.kind not in ("dir", "link"):
        raise DeployError(
            f"{session.target.label}: target root {session.target.root} does not exist "
            "or is not a directory",
            hint="create it on the target first (deploy never creates the root itself)",
        )


async def _check_layout(session: Session, name: str) -> list[Entry]:
    """Refuse a ``<name>`` or ``<name>/releases`` that is anything but a real directory.

    Everything below the root is ours to write, rename and prune; a symlink planted there would
    turn those writes into writes outside the root (``releases -> /etc``). ``current`` is the one
    symlink of the layout, and it is only ever replaced, never followed for writing.
    """
    label = session.target.label
    top = await session.stat(name)
    if top is None:
        return []
    if top.kind != "dir":
        raise DeployError(
            f"{label}: {session.abspath(name)} is a {top.kind}, not a directory; refusing to "
            "write through it",
            hint="remove it on the target (deploy creates a real directory per bundle name)",
        )
    listing = await session.listdir(name)
    releases = next((e for e in listing if e.name == RELEASES), None)
    if releases is not None and releases.kind != "dir":
        raise DeployError(
            f"{label}: {session.abspath(f'{name}/{RELEASES}')} is a {releases.kind}, not a "
            "directory; refusing to write through it",
            hint="remove it on the target (deploy creates a real releases/ directory)",
        )
    return listing


async def _switch(session: Session, name: str, file: str) -> None:
    await session.switch_symlink(
        f"{name}/{CURRENT}", f"{RELEASES}/{file}", f".current.tmp-{secrets.token_hex(6)}"
    )
    await session.sync()


async def _prune(
    session: Session,
    name: str,
    releases: Mapping[str, float],
    current: str,
    keep: int,
    previous: str | None,
    trust: TrustStore | None = None,
) -> tuple[str, ...]:
    """Remove all but the newest ``keep`` releases, sparing current and previous ones.

    ``previous`` is what ``current`` pointed to before this deploy; the release rollback()
    would pick (the next older one by version) is spared too. With ``trust``, only releases
    that verify are ordered (a file name can claim any version: planted files named as the
    newest must not get genuine ones pruned); the others are left alone.
    """
    if trust is not None and len(releases) > keep:
        releases = {f: m for f, m in releases.items()
                    if f in (current, previous) or await _verifies(session, name, f, trust)}  # fmt: skip
    ordered = _ordered(releases)
    protected = set(ordered[-keep:]) | {current, previous}
    if current in releases:
        protected.add(_previous_in_order(releases, current, releases[current]))
    doomed = [f for f in ordered if f not in protected]
    for file in doomed:
        await session.remove(f"{name}/{RELEASES}/{file}")
        await session.remove(f"{name}/{RELEASES}/{_slip_file(file)}")  # if it had one
    return tuple(doomed)


def _slip_file(release_file: str) -> str:
    """The key slip beside a release: ``<version>-<digest>.edgeslip``, where load() looks."""
    return release_file.removesuffix(".edgepkg") + SLIP_SUFFIX


async def _put_slip(session: Session, rel_dir: str, file: str, slip: bytes) -> None:
    """Upload the device's slip beside its release (temp name, then rename), unless it is there."""
    target = f"{rel_dir}/{_slip_file(file)}"
    digest = hashlib.sha256(slip).hexdigest()
    existing = await session.stat(target)
    if (
        existing is not None
        and existing.kind == "file"
        and existing.size == len(slip)
        and await session.sha256(target) == digest
    ):
        return
    temp_name = f".{_slip_file(file)}.partial-{secrets.token_hex(6)}"
    temp = await session.upload(memoryview(slip), rel_dir, temp_name, None)
    if await session.sha256(temp) != digest:
        raise DeployError(f"{session.target.label}: remote digest mismatch for the key slip")
    await session.rename(temp, target)
    session.untrack_temp(temp)


# -- deploying to one target ----------------------------------------------------------------------


@dataclass
class _Attempt:
    """What earlier attempts of one deploy did, so a retry after a dropped link stays correct."""

    previous: str | None = None
    previous_known: bool = False
    switched: bool = False
    rolled_back: bool = False
    uploaded: bool = False
    sent: int = 0
    resumed_from: int = 0


async def _resume_point(
    session: Session, bundle: PreparedBundle, temp: str, entry: Entry | None
) -> int:
    """How many leading bytes of an earlier partial upload can be kept (0: start over).

    The partial is kept only if it is a regular file no longer than the bundle whose SHA-256
    equals that of the local file's first bytes of the same length; anything else (a corrupted
    or truncated-and-rewritten partial, a symlink planted under its name) is removed, never used.
    """
    if entry is None:
        return 0
    if entry.kind == "file" and 0 < entry.size <= bundle.size:
        local, _ = await asyncio.to_thread(_hash_file, bundle.path, entry.size)
        if await session.sha256(temp) == local:
            return entry.size
    await session.remove(temp)
    return 0


async def _install(
    session: Session,
    bundle: PreparedBundle,
    options: DeployOptions,
    state: _Attempt,
    emit: Callable[[Phase, int], None],
    slip: bytes | None = None,
) -> DeployResult:
    label = session.target.label
    name = _check_name(bundle.name)
    file = bundle.release_file
    rel_dir = f"{name}/{RELEASES}"
    rel_file = f"{rel_dir}/{file}"
    emit("checking", 0)
    top_entries = await _check_layout(session, name)
    # Round trips are what an unchanged redeploy costs on a slow link, so the listing of the
    # releases directory is read once and reused (sizes, temps, pruning).
    entries = await session.listdir(rel_dir)
    if not entries:
        await _check_root(session)
        await session.makedirs(rel_dir)
    sizes: dict[str, int] = {}
    releases: dict[str, float] = {}
    partial_name = resume_name(bundle)
    partial: Entry | None = None
    for entry in entries:
        if entry.name == partial_name:
            partial = entry  # what an interrupted upload of these exact bytes left: resume it
        elif _is_stale_temp(entry.name):
            await session.remove(f"{rel_dir}/{entry.name}")
        elif entry.kind == "file" and _RELEASE.fullmatch(entry.name):
            releases[entry.name], sizes[entry.name] = entry.mtime, entry.size
    for entry in top_entries:
        if _is_stale_temp(entry.name):
            await session.remove(f"{name}/{entry.name}")
    current = _release_of(await session.readlink(f"{name}/{CURRENT}"))
    if current is not None and current not in releases:
        # A dangling link (or one planted to name a release that is not there): nothing current
        # to protect, and trusting its name would let a fake version block every later deploy.
        current = None
    if not state.previous_known:
        state.previous, state.previous_known = current, True

    if current and current != file and not options.allow_downgrade:
        # Only a current release that verifies may refuse this one: a planted file claiming
        # version 2**63-1 must not block every genuine deploy (it is replaced instead).
        current_version = await _current_version(session, name, current, bundle.trust)
        if current_version is not None and current_version > bundle.version:
            raise DeployError(
                f"{label}: refusing to replace {name} v{current_version} with older "
                f"v{bundle.version}",
                hint="use rollback, or allow downgrades explicitly (--allow-downgrade; in Python, "
                "DeployOptions(allow_downgrade=True))",
            )

    # Same name is not enough: per-device bundles share a manifest (and so a file name) but
    # differ in their recipients, and a stored file may have rotted. Compare the bytes.
    present = sizes.get(file) == bundle.size and await session.sha256(rel_file) == bundle.sha256
    if slip is not None:
        # Beside the release before `current` can name it: a board never sees its release
        # without the slip that opens it.
        await _put_slip(session, rel_dir, file, slip)
    if present and current == file and not state.switched:
        pruned = await _prune(
            session, name, releases, file, options.keep, state.previous, bundle.trust
        )
        return _result(session, bundle, "unchanged", pruned=pruned)

    candidate = rel_file
    if not present:
        free = await session.free_space(rel_dir)
        if free is not None and free < bundle.size + _SPACE_MARGIN:
            raise TransportError(
                f"{label}: disk full: {bundle.size} bytes needed for {file}, "
                f"{free} free on {session.abspath(rel_dir)}"
            )
        temp = f"{rel_dir}/{partial_name}"
        start = await _resume_point(session, bundle, temp, partial)
        state.resumed_from = start
        emit("uploading", start)

        at = [start]

        def sent_to(position: int) -> None:
            state.sent += position - at[0]
            at[0] = position
            emit("uploading", position)

        try:
            await session.upload_from(bundle.path, temp, start, bundle.size, sent_to)
        except session.target.raw_errors() as exc:
            # Kept for a resume only when the link failed; a full disk or a refused write must
            # not leave a partial taking the board's space (explained before the removal, which
            # would otherwise be the step the error names).
            failure = await session.target.explain(exc, session)
            if failure.transient:
                raise
            with contextlib.suppress(*session.target.raw_errors(), EdgeSDKError):
                await session.remove(temp)
            raise failure.error from None
        remote = await session.sha256(temp)
        if remote != bundle.sha256:
            # Never resumed from again: the next deploy starts over.
            await session.remove(temp)
            raise DeployError(
                f"{label}: remote digest mismatch for {file}: sent {bundle.sha256[:16]}…, "
                f"the target holds {remote[:16]}… (upload removed, current unchanged)"
            )
        # Complete and checked: from here a failure (remote verification, the rename) removes
        # it like any temp; only an unfinished transfer is kept to be resumed.
        session.track_temp(temp)
        candidate = temp

    if options.verify_remote is not None:
        emit("verifying", bundle.size)
        command = _template(
            options.verify_command, "verify command",
            file=session.abspath(candidate), trust=options.verify_remote,
            name=name, version=str(bundle.version),
        )  # fmt: skip
        outcome = await session.run(command, options.verify_timeout)
        if not outcome.ok:
            raise DeployError(
                f"{label}: remote verification of {file} failed ({outcome.summary()}); "
                f"current left at {current or 'nothing'}",
                hint="is edge-sdk installed on the target? (or set verify_command)"
                if outcome.exit_status == 127
                else None,
            )

    if candidate != rel_file:
        await session.rename(candidate, rel_file)
        session.untrack_temp(candidate)
        state.uploaded = True

    if current != file:
        emit("switching", bundle.size)
        # Set before the switch: if the link drops after the server renamed but before we hear
        # back, the retry must still run the health check rather than report "unchanged".
        state.switched = True
        await _switch(session, name, file)

    if options.health_check is not None:
        emit("health-check", bundle.size)
        command = _template(
            options.health_check, "health check",
            name=name, version=str(bundle.version), file=session.abspath(rel_file),
            current=session.abspath(f"{name}/{CURRENT}"), root=session.target.root,
        )  # fmt: skip
        outcome = await session.run(command, options.health_timeout)
        if not outcome.ok:
            if state.previous and state.previous != file:
                await _switch(session, name, state.previous)
                back = f"rolled back to {state.previous}"
            else:
                await session.remove(f"{name}/{CURRENT}")
                await session.sync()
                back = "no previous release, so current was removed"
            state.rolled_back = True
            raise DeployError(f"{label}: health check failed ({outcome.summary()}); {back}")

    emit("pruning", bundle.size)
    releases.setdefault(file, time.time())  # just installed: the newest of its version
    pruned = await _prune(session, name, releases, file, options.keep, state.previous, bundle.trust)
    return _result(session, bundle, "ok", previous=state.previous, pruned=pruned)


def _result(
    session: Session,
    bundle: PreparedBundle,
    status: DeployStatus,
    *,
    previous: str | None = None,
    pruned: tuple[str, ...] = (),
) -> DeployResult:
    return DeployResult(
        target=session.target.label,
        status=status,
        name=bundle.name,
        version=bundle.version,
        digest=bundle.digest,
        file=bundle.release_file,
        previous=previous,
        pruned=pruned,
    )


async def _deploy_target(
    target: Target,
    bundle: PreparedBundle,
    options: DeployOptions,
    progress: ProgressCallback | None,
    device: str | None,
    slip: bytes | None = None,
) -> DeployResult:
    """Deploy to one target; failures become a ``failed`` result, never an exception."""
    started = time.monotonic()

    def emit(
        phase: Phase, sent: int, result: DeployResult | None = None, message: str | None = None
    ) -> None:
        if progress is not None:
            event = ProgressEvent(target.label, device, phase, sent, bundle.size, result, message)
            progress(event)

    state = _Attempt()
    attempts = 1

    def retrying(failure: Failure, delay: float) -> None:
        nonlocal attempts
        attempts += 1
        emit("retrying", 0, message=f"{failure.error.message}; retrying in {delay:.1f} s")

    async def attempt(session: Session) -> DeployResult:
        return await _install(session, bundle, options, state, emit, slip)

    emit("connecting", 0)
    try:
        result = await with_session(target, attempt, options.retry, on_retry=retrying)
        result = replace(result, uploaded=state.uploaded, bytes_sent=state.sent,
                         resumed_from=state.resumed_from)  # fmt: skip
    except EdgeSDKError as exc:
        result = DeployResult(
            target=target.label,
            status="failed",
            name=bundle.name,
            version=bundle.version,
            digest=bundle.digest,
            file=bundle.release_file,
            uploaded=state.uploaded,
            previous=state.previous,
            rolled_back=state.rolled_back,
            bytes_sent=state.sent,
            resumed_from=state.resumed_from,
            reason=exc.message,
            error=exc,
        )
    result = replace(result, device=device, elapsed=time.monotonic() - started, attempts=attempts)
    emit("done", bundle.size if result.status != "failed" else 0, result)
    return result


def _as_target(target: str | Target, ssh: SshOptions | None) -> Target:
    return target if isinstance(target, Target) else parse_target(target, ssh=ssh)


def _as_bundle(bundle: str | os.PathLike[str] | PreparedBundle) -> PreparedBundle:
    return bundle if isinstance(bundle, PreparedBundle) else prepare_bundle(bundle)


def _as_slip(bundle: PreparedBundle, slip: bytes | str | os.PathLike[str] | None) -> bytes | None:
    if slip is None:
        return None
    raw = bytes(slip) if isinstance(slip, (bytes, bytearray)) else read_key_slip(slip)
    bundle.check_slip(raw)
    return raw


async def deploy_async(
    bundle: str | os.PathLike[str] | PreparedBundle,
    target: str | Target,
    options: DeployOptions | None = None,
    *,
    ssh: SshOptions | None = None,
    progress: ProgressCallback | None = None,
    slip: bytes | str | os.PathLike[str] | None = None,
) -> DeployResult:
    """Async form of :func:`deploy`."""
    prepared = _as_bundle(bundle)
    slip_bytes = _as_slip(prepared, slip)
    result = await _deploy_target(
        _as_target(target, ssh), prepared, options or DeployOptions(), progress, None, slip_bytes
    )
    if result.error is not None:
        raise result.error
    return result


def deploy(
    bundle: str | os.PathLike[str] | PreparedBundle,
    target: str | Target,
    options: DeployOptions | None = None,
    *,
    ssh: SshOptions | None = None,
    progress: ProgressCallback | None = None,
    slip: bytes | str | os.PathLike[str] | None = None,
) -> DeployResult:
    """Install a bundle on one target and make it ``current`` (see the module docstring).

    Args:
        bundle: a bundle file, or one read already with :func:`prepare_bundle`.
        target: a directory, ``file:///path`` or ``ssh://user@host[:port]/path``.
        options: keep, remote verification, health check, retries.
        ssh: how to connect when ``target`` is an ``ssh://`` URI.
        progress: called with a :class:`ProgressEvent` at each phase and upload chunk.
        slip: the target device's key slip for this bundle (bytes or a path); it is placed
            beside the release (``releases/<version>-<digest>.edgeslip``), where ``load`` and
            the agent find it. A slip for another bundle is refused before anything is sent.

    Returns:
        A result with status ``ok`` or ``unchanged``.

    Raises:
        TransportError: unreachable, authentication, host key, permission, disk full.
        DeployError: digest mismatch, remote verification or health check failed (after
            rolling back), downgrade refused, target root missing.
        UsageError, BundleFormatError: bad arguments or an unreadable bundle.
    """
    return asyncio.run(deploy_async(bundle, target, options, ssh=ssh, progress=progress, slip=slip))


# -- rollback and status --------------------------------------------------------------------------


async def rollback_async(
    name: str,
    target: str | Target,
    *,
    to_version: int | None = None,
    ssh: SshOptions | None = None,
    retry: RetryPolicy | None = None,
    trust: TrustStore | None = None,
) -> RollbackResult:
    """Async form of :func:`rollback`."""
    name = _check_name(name)
    resolved = _as_target(target, ssh)

    async def operation(session: Session) -> RollbackResult:
        await _check_root(session)
        await _check_layout(session, name)
        current = _release_of(await session.readlink(f"{name}/{CURRENT}"))
        if current is None:
            raise DeployError(f"{resolved.label}: {name} has no current release to roll back from")
        releases = await _releases(session, name)
        if trust is not None:
            # Rolled back to by verified version only: a planted file named just below current
            # must not become current (it would not load, and the old release would be lost).
            releases = {f: m for f, m in releases.items()
                        if f == current or await _verifies(session, name, f, trust)}  # fmt: skip
        if to_version is not None:
            matches = [f for f in _ordered(releases) if _release_key(f, 0)[0] == to_version]
            if not matches:
                raise DeployError(f"{resolved.label}: {name} v{to_version} is not on the target")
            chosen: str | None = matches[-1]
        else:
            mtime = releases.get(current, float("inf"))
            chosen = _previous_in_order(releases, current, mtime)
        if chosen is None:
            raise DeployError(
                f"{resolved.label}: {name} has no release older than {current} to roll back to"
            )
        if chosen != current:
            await _switch(session, name, chosen)
        return RollbackResult(resolved.label, name, current, chosen, _release_key(chosen, 0)[0])

    return await with_session(resolved, operation, retry or RetryPolicy())


def rollback(
    name: str,
    target: str | Target,
    *,
    to_version: int | None = None,
    ssh: SshOptions | None = None,
    retry: RetryPolicy | None = None,
    trust: TrustStore | None = None,
) -> RollbackResult:
    """Switch ``current`` of bundle ``name`` to the previous release present on the target.

    "Previous" is by version order (ties by upload time), or the newest file of ``to_version``.
    With ``trust``, only releases whose header verifies (signatures, name, file name) count.

    Raises:
        DeployError: nothing current, or no older release (or not ``to_version``) on the target.
        TransportError: the target cannot be reached or written.
    """
    return asyncio.run(
        rollback_async(name, target, to_version=to_version, ssh=ssh, retry=retry, trust=trust)
    )


async def _current_version(
    session: Session, name: str, current: str, trust: TrustStore | None
) -> int | None:
    """The version of the current release, when its header verifies against ``trust`` and it is
    the release of ``name`` its file name says; None otherwise (then nothing blocks replacing
    it: an unverifiable version must never order releases)."""
    if trust is None:
        return None
    try:
        manifest, _ = await _verified_manifest(session, name, current, trust)
    except EdgeSDKError:
        return None
    return manifest.version


async def _verifies(session: Session, name: str, file: str, trust: TrustStore) -> bool:
    """True when release ``file`` of ``name`` verifies (see :func:`_verified_manifest`)."""
    try:
        await _verified_manifest(session, name, file, trust)
    except EdgeSDKError:
        return False
    return True


async def _verified_manifest(
    session: Session, name: str, file: str, trust: TrustStore
) -> tuple[Manifest, str]:
    """The manifest and digest of release ``file`` of ``name``, from a header whose signatures
    satisfy ``trust``, signed under ``name`` and stored under the file name its version and
    digest give.

    Raises:
        BundleFormatError, SignatureError, RevokedKeyError: the header does not verify.
        DeployError: unreadable, or another name or file name than the layout says.
    """
    rel = f"{name}/{RELEASES}/{file}"
    entry = await session.stat(rel)
    if entry is None or entry.kind != "file":
        raise DeployError("the release file is missing or not a regular file")
    prefix = b""
    while len(prefix) < (need := header_needs(prefix)) <= entry.size:
        more = await session.read(rel, len(prefix), need - len(prefix))
        if not more:
            break
        prefix += more
    bundle = read_header(prefix, entry.size, trust=trust)  # bounded by the header limits
    manifest = bundle.manifest
    if manifest.name != name:
        raise DeployError(f"it is signed as {excerpt(manifest.name)}, not {name}")
    if file != f"{manifest.version}-{bundle.digest[:16]}.edgepkg":
        raise DeployError("its file name does not match its signed version and digest")
    return manifest, bundle.digest


async def _read_manifest(session: Session, rel: str) -> tuple[Manifest, str]:
    """The signed manifest and digest of a release file on the target, from its header only."""
    head = await session.read(rel, 0, _PREAMBLE.size)
    if len(head) < _PREAMBLE.size:
        raise DeployError("truncated bundle header")
    magic, _version, _flags, length = _PREAMBLE.unpack(head)
    if magic != MAGIC or length > DEFAULT_LIMITS.max_manifest_bytes:
        raise DeployError("not an edge-sdk bundle")
    raw = await session.read(rel, _PREAMBLE.size, length)
    if len(raw) != length:
        raise DeployError("truncated manifest")
    value = loads_strict(raw, "manifest")
    if not isinstance(value, dict):
        raise DeployError("manifest is not a JSON object")
    return Manifest.from_dict(value), hashlib.sha256(raw).hexdigest()


async def _status_of(session: Session, name: str, trust: TrustStore | None) -> ReleaseStatus:
    releases = await _releases(session, name)
    link = await session.readlink(f"{name}/{CURRENT}")
    ordered = tuple(_ordered(releases))
    if link is None:
        return ReleaseStatus(name, None, None, None, None, ordered)
    entry = await session.stat(f"{name}/{CURRENT}")
    switched = datetime.fromtimestamp(entry.mtime, timezone.utc) if entry else None
    file = _release_of(link)

    def broken(problem: str) -> ReleaseStatus:
        return ReleaseStatus(name, None, None, file, switched, ordered, problem)

    if file is None:
        return broken(f"current points to {excerpt(link)}")
    if file not in releases:
        return broken("current release file is missing")
    if trust is not None:
        try:
            manifest, digest = await _verified_manifest(session, name, file, trust)
        except EdgeSDKError as exc:
            # Reported, never trusted: nothing here may order releases (deploy replaces it).
            return broken(f"does not verify: {exc.message}")
        return ReleaseStatus(name, manifest.version, digest, file, switched, ordered, None, True)
    try:
        manifest, digest = await _read_manifest(session, f"{name}/{RELEASES}/{file}")
    except EdgeSDKError as exc:
        return broken(f"unreadable: {exc.message}")
    problem = None
    if manifest.name != name or not file.startswith(f"{manifest.version}-{digest[:16]}"):
        problem = "release file name does not match its manifest"
    return ReleaseStatus(name, manifest.version, digest, file, switched, ordered, problem)


async def status_async(
    target: str | Target,
    *,
    ssh: SshOptions | None = None,
    retry: RetryPolicy | None = None,
    trust: TrustStore | None = None,
) -> list[ReleaseStatus]:
    """Async form of :func:`status`."""
    resolved = _as_target(target, ssh)

    async def operation(session: Session) -> list[ReleaseStatus]:
        await _check_root(session)
        out = []
        for entry in sorted(await session.listdir(""), key=lambda e: e.name):
            if entry.kind != "dir" or not _NAME.fullmatch(entry.name) or ".." in entry.name:
                continue
            if not await session.stat(f"{entry.name}/{CURRENT}") and not await session.stat(
                f"{entry.name}/{RELEASES}"
            ):
                continue  # not a directory this module manages
            out.append(await _status_of(session, entry.name, trust))
        return out

    return await with_session(resolved, operation, retry or RetryPolicy())


def status(
    target: str | Target,
    *,
    ssh: SshOptions | None = None,
    retry: RetryPolicy | None = None,
    trust: TrustStore | None = None,
) -> list[ReleaseStatus]:
    """For every bundle name under the target root: what is current, since when, what is kept.

    With ``trust``, the current release's header is verified (signatures, its name, its file
    name) and ``version``/``digest`` come only from a release that passed (``verified``); one
    that does not is reported in ``problem`` with no version. Without it, they are what the
    release's manifest claims, unverified.

    Raises:
        DeployError: the target root does not exist.
        TransportError: the target cannot be reached.
    """
    return asyncio.run(status_async(target, ssh=ssh, retry=retry, trust=trust))


# -- fleets ---------------------------------------------------------------------------------------


BundleArg = str | os.PathLike[str] | PreparedBundle


def _preflight(device: Device, bundle: PreparedBundle, slip: bytes | None = None) -> str | None:
    """Why this bundle cannot work on this device, found before connecting; None if fine."""
    if device.profile is not None and device.profile != bundle.profile:
        return (
            f"{bundle.name} v{bundle.version} targets profile {excerpt(bundle.profile)}, "
            f"device {device.name} runs {excerpt(device.profile)}"
        )
    key = device.public_key
    if slip is not None:
        bundle.check_slip(slip)  # its typed error (a bad signature: 21) is the device's result
    elif key is not None and bundle.encrypted and key.key_id not in bundle.recipients:
        return (
            f"{bundle.name} v{bundle.version} is not encrypted for device {device.name}'s "
            f"key {key.key_id[:16]}, and it has no key slip"
        )
    return None


def _fleet_slip(slips: Path | None, device: Device) -> bytes | None:
    """The device's slip in a slip directory (``<key id>.edgeslip``), if there is one."""
    if slips is None or device.public_key is None:
        return None
    path = slips / f"{device.public_key.key_id}{SLIP_SUFFIX}"
    return read_key_slip(path) if path.is_file() else None


async def deploy_fleet_async(
    bundles: BundleArg | Mapping[str, BundleArg],
    devices: Sequence[Device],
    options: DeployOptions | None = None,
    *,
    parallel: int = 8,
    canary: int = 0,
    max_failures: int = 0,
    progress: ProgressCallback | None = None,
    slips: str | os.PathLike[str] | None = None,
) -> FleetResult:
    """Async form of :func:`deploy_fleet`."""
    options = options or DeployOptions()
    if parallel < 1 or canary < 0 or max_failures < 0:
        raise UsageError("parallel must be ≥ 1; canary and max_failures must be ≥ 0")
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise UsageError("a device is listed twice")
    plan = _plan_bundles(bundles, devices)
    targets = {d.name: d.open_target() for d in devices}

    results: dict[str, DeployResult] = {}
    failures = 0
    stopped = False
    gate = asyncio.Semaphore(parallel)

    async def one(device: Device) -> None:
        nonlocal failures, stopped
        bundle = plan[device.name]
        target = targets[device.name]
        async with gate:
            if stopped:
                results[device.name] = _skipped(target, bundle, device, failures)
                return
            refused: EdgeSDKError | None = None
            try:
                slip = _fleet_slip(Path(slips) if slips is not None else None, device)
                problem = _preflight(device, bundle, slip)
            except EdgeSDKError as exc:
                slip, problem, refused = (
                    None,
                    f"device {device.name}'s key slip: {exc.message}",
                    exc,
                )
            if problem is not None:
                # A slip the board would refuse keeps the board's error type and exit code.
                error = (
                    type(refused)(f"{target.label}: {problem}", hint=refused.hint)
                    if isinstance(refused, VerificationError)
                    else DeployError(f"{target.label}: {problem}")
                )
                result = _skipped(target, bundle, device, 0)
                result = replace(result, status="failed", reason=error.message, error=error)
                if progress is not None:
                    progress(
                        ProgressEvent(target.label, device.name, "done", 0, bundle.size, result)
                    )
            else:
                result = await _deploy_target(target, bundle, options, progress, device.name, slip)
        results[device.name] = result
        if result.status == "failed":
            failures += 1
            if failures > max_failures:
                stopped = True

    if progress is not None:
        for device in devices:
            target = targets[device.name]
            progress(ProgressEvent(target.label, device.name, "queued", 0, plan[device.name].size))
    waves = [devices[:canary], devices[canary:]] if canary else [devices]
    for wave in waves:
        if stopped:
            for device in wave:
                target = targets[device.name]
                results[device.name] = _skipped(target, plan[device.name], device, failures)
            continue
        await asyncio.gather(*(one(d) for d in wave))
    return FleetResult(tuple(results[d.name] for d in devices), stopped)


def _skipped(target: Target, bundle: PreparedBundle, device: Device, failures: int) -> DeployResult:
    return DeployResult(
        target=target.label,
        status="skipped",
        name=bundle.name,
        version=bundle.version,
        digest=bundle.digest,
        file=bundle.release_file,
        device=device.name,
        reason=f"rollout stopped after {failures} failure(s)" if failures else None,
    )


def _plan_bundles(
    bundles: BundleArg | Mapping[str, BundleArg], devices: Sequence[Device]
) -> dict[str, PreparedBundle]:
    """Which prepared bundle each device gets; each file is read once."""
    cache: dict[Path, PreparedBundle] = {}

    def prepared(arg: BundleArg) -> PreparedBundle:
        if isinstance(arg, PreparedBundle):
            return arg
        key = Path(arg).absolute()
        if key not in cache:
            cache[key] = prepare_bundle(key)
        return cache[key]

    if isinstance(bundles, Mapping):
        missing = [d.name for d in devices if d.name not in bundles]
        if missing:
            raise UsageError(f"no bundle given for device(s) {', '.join(missing)}")
        return {d.name: prepared(bundles[d.name]) for d in devices}
    single = prepared(bundles)
    return {d.name: single for d in devices}


def deploy_fleet(
    bundles: BundleArg | Mapping[str, BundleArg],
    devices: Sequence[Device],
    options: DeployOptions | None = None,
    *,
    parallel: int = 8,
    canary: int = 0,
    max_failures: int = 0,
    progress: ProgressCallback | None = None,
    slips: str | os.PathLike[str] | None = None,
) -> FleetResult:
    """Deploy to many devices: bounded parallelism, canaries first, stop on too many failures.

    Args:
        bundles: one bundle for every device, or a mapping device name → bundle (per-device
            encrypted bundles).
        devices: in rollout order (canaries are the first ``canary`` devices).
        options: per-target behaviour (keep, verification, health check, retries).
        parallel: devices deployed at once.
        canary: deploy to this many devices first (health check included) and continue with
            the rest only if failures stayed within ``max_failures``.
        max_failures: the rollout stops starting new devices once more devices than this have
            failed; devices not reached are reported ``skipped``. Successful deploys stay.
        progress: called with :class:`ProgressEvent` (queued, each phase, upload bytes, done).
        slips: a directory of key slips for the bundle (``edge-sdk slips issue``): each device
            with a ``public_key`` gets ``<key id>.edgeslip`` beside its release.

    Returns:
        A :class:`FleetResult`. Per-device failures are results, not exceptions.

    Raises:
        UsageError, BundleFormatError: bad arguments, a missing or unreadable bundle.
    """

    async def main() -> FleetResult:
        # Local targets do their file I/O in worker threads: give each parallel deploy one.
        loop = asyncio.get_running_loop()
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=max(4, min(parallel, 32)))
        )
        return await deploy_fleet_async(
            bundles, devices, options,
            parallel=parallel, canary=canary, max_failures=max_failures, progress=progress,
            slips=slips,
        )  # fmt: skip

    return asyncio.run(main())


__all__ = [
    "DEFAULT_VERIFY_COMMAND",
    "DeployOptions",
    "DeployResult",
    "FleetResult",
    "PreparedBundle",
    "ProgressCallback",
    "ProgressEvent",
    "ReleaseStatus",
    "RetryPolicy",
    "RollbackResult",
    "SshOptions",
    "deploy",
    "deploy_async",
    "deploy_fleet",
    "deploy_fleet_async",
    "prepare_bundle",
    "rollback",
    "rollback_async",
    "status",
    "status_async",
]
