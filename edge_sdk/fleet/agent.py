"""The device agent: pull releases from a TUF repository, verify them twice, install atomically.

One poll:

1. refresh TUF metadata with ``tuf.ngclient`` (root chain, timestamp, snapshot, targets), using
   its own metadata cache under ``STATE_DIR/tuf`` and the size caps of an ``UpdaterConfig``;
   the trust anchor is the ``root.json`` shipped with the device image;
2. per bundle name, pick the newest target this device may take (its group, hardware ids and
   profile; releases it rejected before are skipped);
3. when the target says the release's devices take their content key from a key slip, look up
   this device's own slip, ``slips/NAME/VERSION/KEYID.edgeslip``: ngclient walks the succinct
   delegation to the one hashed bin the path falls in and downloads that bin only. No slip (the
   device was revoked, or not issued one yet) is a :class:`~edge_sdk.errors.KeySlipError`
   outcome, before a byte of the payload is fetched;
4. download it (ngclient checks length and SHA-256 against the signed metadata), then verify it
   *again* as a bundle: its own signatures against the device's pinned trust store, expiry,
   hardware ids, that its manifest is what the TUF metadata announced, and the anti-rollback
   state the runtime keeps — TUF proves the repository published it, the bundle signature
   proves the model's publisher signed it; a device needs both;
5. install it with :func:`edge_sdk.fleet.deploy.deploy` into the usual ``releases/`` + ``current``
   layout (atomic switch), with its slip beside it (``releases/VERSION-DIGEST16.edgeslip``,
   where :func:`edge_sdk.load` looks), optionally run a health check that switches back on
   failure.

Every step is a record in the device's hash-chained audit log (``STATE_DIR/audit.log``):
``agent-check``, ``agent-download``, ``agent-install``, ``agent-reject``, ``agent-rollback``.
Network failures are retried with exponential backoff and full jitter, then raised as
:class:`~edge_sdk.errors.TransportError`; nothing is switched unless a release passed every
check, so the previous release stays current through outages and attacks alike. Hostile data
(rollback, freeze, bad signatures, swapped or endless bytes) raises the matching
:class:`~edge_sdk.errors.VerificationError` and is never retried.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import re
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from edge_sdk.errors import (
    BundleFormatError,
    DeployError,
    EdgeSDKError,
    ExpiredError,
    HostDependencyError,
    IntegrityError,
    KeySlipError,
    PayloadTooLargeError,
    RollbackError,
    SignatureError,
    StateError,
    TransportError,
    UsageError,
    VerificationError,
    install_hint,
)
from edge_sdk.keys import PrivateKey, load_private_key

if TYPE_CHECKING:
    # tuf builds its __all__ from __name__ lookups, which mypy cannot read: hence the ignores.
    from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]
    from tuf.ngclient import Updater, UpdaterConfig  # type: ignore[attr-defined]

    from edge_sdk.format.verify import Verification
    from edge_sdk.keys import PrivateKey, TrustStore

    from .transports import RetryPolicy

log = logging.getLogger(__name__)

OutcomeStatus = Literal["installed", "up-to-date", "rejected", "rolled-back", "failed", "skipped"]
T = TypeVar("T")

#: Refuse targets the signed metadata says are larger than this, before downloading anything.
DEFAULT_MAX_TARGET_BYTES = 1024**3
#: How many rejected releases the agent remembers so it does not fetch them again.
MAX_REMEMBERED = 256

#: What a remembered verdict is about: the bytes themselves (their SHA-256), or what one target's
#: metadata says about them (its path and the hash of its fields).
Verdict = Literal["bytes", "metadata"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class _SlipRefused(Exception):
    """Carries the error that refused a release's key slip (of whatever type: a bad signature
    stays a SignatureError) out of the bundle check, so the agent knows the slip, not the
    release, is at fault."""

    def __init__(self, error: EdgeSDKError) -> None:
        super().__init__(error.message)
        self.error = error


# -- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A release the repository offers this device (from the verified TUF targets metadata)."""

    path: str
    name: str
    version: int
    digest: str
    sha256: str
    length: int
    groups: tuple[str, ...]
    hardware_ids: tuple[str, ...]
    profile: str
    #: The content key comes from this device's key slip, published beside the release.
    slips: bool = False

    @property
    def release_file(self) -> str:
        """The file name the release gets under ``releases/`` (as :mod:`edge_sdk.fleet.deploy` names it)."""
        return f"{self.version}-{self.digest[:16]}.edgepkg"

    @property
    def metadata_key(self) -> str:
        """What a verdict about this target's metadata is remembered by: its path and fields."""
        values = dataclasses.astuple(self)
        # Without slips, the key is what it was before releases could have them.
        fields = json.dumps(values if self.slips else values[:-1], separators=(",", ":")).encode()
        return f"metadata:{self.path}:{hashlib.sha256(fields).hexdigest()}"


@dataclass(frozen=True)
class Outcome:
    """What one poll did about one bundle name.

    ``installed``: the release is now current. ``up-to-date``: nothing to do. ``rejected``: the
    release failed verification (remembered; not fetched again). ``rolled-back``: it was
    installed, its health check failed and ``current`` went back. ``failed``: a transient or
    local problem (retried next poll). ``skipped``: the only candidates were rejected before.
    """

    name: str
    status: OutcomeStatus
    version: int | None = None
    digest: str | None = None
    previous: str | None = None
    reason: str | None = None
    error: EdgeSDKError | None = None


@dataclass(frozen=True)
class PollResult:
    """One poll: per-name outcomes, the HTTP cost, and the poll-level error if refresh failed."""

    outcomes: tuple[Outcome, ...] = ()
    requests: int = 0
    bytes: int = 0
    attempts: int = 1
    elapsed: float = 0.0
    error: EdgeSDKError | None = None

    @property
    def changed(self) -> bool:
        """True when a release was installed (or installed and rolled back)."""
        return any(o.status in ("installed", "rolled-back") for o in self.outcomes)

    @property
    def errors(self) -> tuple[EdgeSDKError, ...]:
        """Every error of this poll, poll-level first."""
        found = [self.error] if self.error is not None else []
        return tuple(found + [o.error for o in self.outcomes if o.error is not None])

    def raise_for_errors(self) -> None:
        """Raise the first error of this poll, if any (after everything else was handled)."""
        if self.errors:
            raise self.errors[0]


# -- python-tuf glue ------------------------------------------------------------------------------


def _require_tuf() -> None:
    try:
        import tuf.ngclient  # noqa: F401
    except ImportError:
        raise HostDependencyError(
            "the update agent needs python-tuf", hint=install_hint("tuf")
        ) from None


#: Requests :attr:`_Traffic.log` remembers (the newest).
TRAFFIC_LOG = 256


@dataclass
class _Traffic:
    """HTTP requests made and body bytes received (as sent: compressed, if they were), the last
    URL asked for, and the newest requests as ``[url, body bytes]`` (a poll's files, one by one)."""

    requests: int = 0
    bytes: int = 0
    last_url: str | None = None
    log: collections.deque[list[Any]] = field(
        default_factory=lambda: collections.deque(maxlen=TRAFFIC_LOG)
    )


#: A resumable target download in ``downloads/``: named by the target's signed SHA-256.
_PARTIAL = re.compile(r"[0-9a-f]{64}\.edgepkg\.partial")
#: Bytes per read: an endless response is cut at most one read past its size limit.
_READ = 64 * 1024


def _make_fetcher(timeout: float, user_agent: str, traffic: _Traffic) -> Any:
    """An ngclient fetcher over urllib3 that accounts into ``traffic``.

    Our own rather than ngclient's ``Urllib3Fetcher`` for three reasons: urllib3 does no silent
    retries (the agent retries with backoff and jitter, and says so in the audit log); a body
    abandoned half-way — ngclient stops reading past a size limit — closes its connection
    instead of returning it to the pool with the rest of the body pending; and every request and
    byte is counted. Proxies come from the usual environment variables, as in ngclient.
    """
    import urllib.request

    import urllib3
    from tuf.api import exceptions as tx
    from tuf.ngclient import FetcherInterface  # type: ignore[attr-defined]

    # Metadata may come gzip-compressed (a snapshot listing 1,024 slip bins shrinks about 4×);
    # urllib3 decodes it in bounded steps, and ngclient's size caps apply to the decoded bytes.
    headers = {"User-Agent": user_agent, "Accept-Encoding": "gzip"}
    retries = urllib3.Retry(total=5, connect=0, read=0, status=0, other=0, redirect=5)
    limits = urllib3.Timeout(connect=timeout, read=timeout)

    class CountingFetcher(FetcherInterface):
        def __init__(self) -> None:
            self._pools: dict[str | None, urllib3.PoolManager] = {}

        def _pool(self, url: str) -> urllib3.PoolManager:
            scheme, _, rest = url.partition("://")
            host = rest.split("/", 1)[0].rsplit(":", 1)[0]
            proxy = urllib.request.getproxies().get(scheme)
            if proxy and urllib.request.proxy_bypass(host):
                proxy = None
            if proxy not in self._pools:
                self._pools[proxy] = (
                    urllib3.ProxyManager(proxy, headers=headers)
                    if proxy
                    else urllib3.PoolManager(headers=headers)
                )
            return self._pools[proxy]

        def _fetch(self, url: str) -> Iterator[bytes]:
            response, record = self._open(url)
            return self._chunks(url, response, record)

        def _open(
            self, url: str, extra: dict[str, str] | None = None
        ) -> tuple[urllib3.BaseHTTPResponse, list[Any]]:
            traffic.requests += 1
            traffic.last_url = url
            record: list[Any] = [url, 0]
            traffic.log.append(record)
            try:
                response = self._pool(url).request(
                    "GET", url, preload_content=False, retries=retries, timeout=limits,
                    headers={**headers, **(extra or {})},
                )  # fmt: skip
            except urllib3.exceptions.MaxRetryError as exc:
                reason = exc.reason
                if isinstance(reason, urllib3.exceptions.TimeoutError) and not isinstance(
                    reason, urllib3.exceptions.NewConnectionError
                ):
                    raise tx.SlowRetrievalError(f"{url}: {reason}") from exc
                raise tx.DownloadError(f"{url}: {reason}") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise tx.DownloadError(f"{url}: {exc}") from exc
            if response.status >= 400:
                response.drain_conn()
                response.release_conn()
                raise tx.DownloadHTTPError(f"HTTP {response.status} for {url}", response.status)
            return response, record

        #: Set by the agent just before a target download: the ``.partial`` file to resume into.
        resume: Path | None = None

        @contextlib.contextmanager
        def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
            """ngclient's download, resumable: with :attr:`resume` set, the body goes to that
            file, and a file left there by an interrupted download is continued with an HTTP
            Range request. ngclient verifies the whole file's length and hashes on what this
            yields, always; the partial is removed when that fails, and kept only when the
            transfer itself failed (a network error)."""
            partial, self.resume = self.resume, None
            if partial is None:
                with super().download_file(url, max_length) as plain:
                    yield plain
                return
            with _open_partial(partial) as handle:
                try:
                    self._resume_into(handle, url, max_length)
                except tx.DownloadError as exc:
                    if isinstance(exc, (tx.DownloadLengthMismatchError, tx.DownloadHTTPError)):
                        partial.unlink(missing_ok=True)  # refused: never resumed from again
                    raise
                handle.seek(0)
                try:
                    yield handle
                finally:
                    # Verified and copied into place, or refused by ngclient: either way done.
                    partial.unlink(missing_ok=True)

        def _resume_into(self, handle: IO[bytes], url: str, max_length: int) -> None:
            have = handle.seek(0, os.SEEK_END)
            if have > max_length:
                handle.truncate(0)
                have = 0
            if have == max_length:
                return  # complete already: ngclient's hash check decides
            # identity: a Range of a gzip-encoded body would count the encoded bytes.
            extra = {"Range": f"bytes={have}-", "Accept-Encoding": "identity"} if have else {}
            response, record = self._open(url, extra)
            if have and response.status == 206:
                wanted = f"bytes {have}-{max_length - 1}/{max_length}"
                got = response.headers.get("Content-Range", "")
                if got != wanted:
                    response.close()
                    raise tx.DownloadLengthMismatchError(
                        f"{url}: wrong Range reply: asked for bytes {have}- of {max_length}, "
                        f"the server sent Content-Range {got[:80]!r}"
                    )
            elif response.status != 200:
                response.close()
                raise tx.DownloadHTTPError(
                    f"HTTP {response.status} for {url} (asked for bytes {have}-)", response.status
                )
            elif have:
                handle.truncate(0)  # the server ignores Range: the whole body follows
                handle.seek(0)
                have = 0
            received = have
            for chunk in self._chunks(url, response, record):
                received += len(chunk)
                if received > max_length:
                    raise tx.DownloadLengthMismatchError(
                        f"Downloaded {received} bytes exceeding the maximum allowed length of "
                        f"{max_length}"
                    )
                handle.write(chunk)
            handle.flush()

        @staticmethod
        def _chunks(
            url: str, response: urllib3.BaseHTTPResponse, record: list[Any]
        ) -> Iterator[bytes]:
            complete = False
            # Decoded here, not by urllib3 (which leaves chunked gzip responses encoded): in
            # steps of at most _READ output bytes, so a small "gzip bomb" never becomes a large
            # buffer, and ngclient's size cap, counted on what is yielded, stops it.
            encoding = response.headers.get("Content-Encoding", "").strip().lower()
            if encoding not in ("", "identity", "gzip"):
                response.close()
                raise tx.DownloadError(f"{url}: unsupported Content-Encoding {encoding[:40]!r}")
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
            try:
                for raw in response.stream(_READ, decode_content=False):
                    traffic.bytes += len(raw)  # as sent: what the download cost
                    record[1] += len(raw)
                    if inflate is None:
                        yield raw
                        continue
                    data = raw
                    while data:
                        out = inflate.decompress(data, _READ)
                        data = inflate.unconsumed_tail
                        if out:
                            yield out
                if inflate is not None and not inflate.eof:
                    raise tx.DownloadError(f"{url}: the gzip stream is cut short")
                complete = True
            except zlib.error as exc:
                raise tx.DownloadError(f"{url}: the gzip stream is damaged: {exc}") from None
            except urllib3.exceptions.TimeoutError as exc:
                raise tx.SlowRetrievalError(f"{url}: {exc}") from exc
            except urllib3.exceptions.HTTPError as exc:
                raise tx.DownloadError(f"{url}: {exc}") from exc
            finally:
                if complete:
                    response.release_conn()
                else:
                    response.close()  # never pool a connection with part of a body pending

    return CountingFetcher()


@contextlib.contextmanager
def _open_partial(path: Path) -> Iterator[IO[bytes]]:
    """A target's ``.partial`` download, created or reopened, never through a symlink."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        # A symlink (ELOOP) or worse planted under its name: removed, never followed.
        with contextlib.suppress(IsADirectoryError):
            path.unlink(missing_ok=True)
        fd = os.open(path, flags | os.O_EXCL, 0o600)
    with os.fdopen(fd, "r+b") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateError(f"{path} is not a regular file")
        yield handle


def translate_tuf_error(exc: BaseException, doing: str, url: str | None = None) -> EdgeSDKError:
    """Map a python-tuf exception onto edge-sdk's tree, saying what failed in words.

    ``RepositoryError`` (hostile or stale data) becomes a :class:`VerificationError` subclass;
    ``DownloadError`` (the network) a :class:`TransportError` — except a download longer than
    allowed, which is the endless-data attack and becomes :class:`IntegrityError`.
    """
    from tuf.api import exceptions as tx

    text = str(exc).strip() or type(exc).__name__
    where = f" (last request: {url})" if url and url not in text else ""
    if isinstance(exc, tx.ExpiredMetadataError):
        return ExpiredError(
            f"{doing}: {text}{where}",
            hint="the repository serves stale metadata: a freeze attack, or its refresh job stopped",
        )
    if isinstance(exc, tx.EqualVersionNumberError):
        return RollbackError(f"{doing}: the server replayed a metadata version already seen{where}")
    if isinstance(exc, tx.BadVersionNumberError):
        return RollbackError(
            f"{doing}: {text}{where}",
            hint="the server offers older metadata than this device already trusts",
        )
    if isinstance(exc, tx.UnsignedMetadataError):
        return SignatureError(f"{doing}: {text}{where}")
    if isinstance(exc, tx.LengthOrHashMismatchError):
        return IntegrityError(f"{doing}: {text}{where}")
    if isinstance(exc, tx.DownloadLengthMismatchError):
        return IntegrityError(
            f"{doing}: the server sent more than allowed: {text}{where}",
            hint="endless-data attack, or a size cap (UpdaterConfig) below the real file size",
        )
    if isinstance(exc, tx.DownloadHTTPError):
        return TransportError(f"{doing}: HTTP {exc.status_code}{where}")
    if isinstance(exc, tx.SlowRetrievalError):
        return TransportError(f"{doing}: the server is too slow: {text}{where}")
    if isinstance(exc, tx.DownloadError):
        return TransportError(f"{doing}: cannot download: {text}{where}")
    if isinstance(exc, tx.RepositoryError):
        return VerificationError(f"{doing}: {text}{where}")
    if isinstance(exc, OSError):
        return StateError(f"{doing}: {exc.strerror or exc}")
    return VerificationError(f"{doing}: {type(exc).__name__}: {text}{where}")


def _tuf_errors() -> tuple[type[BaseException], ...]:
    from tuf.api import exceptions as tx

    return (tx.RepositoryError, tx.DownloadError, OSError)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _strings(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


def candidate_of(target: TargetFile) -> Candidate | None:
    """The release a TUF target describes, or None when it is not an edge-sdk bundle target."""
    custom = target.custom
    if not isinstance(custom, dict):
        return None
    name, version, digest = custom.get("name"), _int(custom.get("version")), custom.get("digest")
    groups, hardware = _strings(custom.get("groups", [])), _strings(custom.get("hardware_ids", []))
    sha256 = target.hashes.get("sha256")
    profile = custom.get("profile", "")
    if (
        not isinstance(name, str)
        or not _NAME.fullmatch(name)
        or version is None
        or not isinstance(digest, str)
        or not _HEX64.fullmatch(digest)
        or not isinstance(sha256, str)
        or not _HEX64.fullmatch(sha256)
        or groups is None
        or hardware is None
        or not isinstance(profile, str)
    ):
        return None
    return Candidate(
        target.path, name, version, digest, sha256, target.length, groups, hardware, profile,
        custom.get("slips") is True,
    )  # fmt: skip


# -- the agent ------------------------------------------------------------------------------------


@dataclass
class _Memory:
    """Releases this device rejected, kept in ``STATE_DIR/agent.json``.

    A verdict about bytes (bad signature, damaged payload, an older version than accepted) is
    keyed by their SHA-256: the same bytes fail the same way under any metadata. A verdict about
    metadata (a target announcing another version or digest than its bytes carry, a length over
    the limit, a version clash) is keyed by the target's path and the hash of its fields: those
    bytes listed honestly elsewhere, or the repaired target, are judged afresh.
    """

    path: Path
    rejected: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> _Memory:
        try:
            data = json.loads(path.read_bytes())
            rejected = data.get("rejected") if isinstance(data, dict) else None
            rejected = rejected if isinstance(rejected, dict) else {}
        except FileNotFoundError:
            rejected = {}
        except (OSError, ValueError, RecursionError) as exc:
            log.warning("ignoring unreadable agent state %s: %s", path, str(exc)[:200])
            rejected = {}
        # Entries without "about" predate the split between bytes and metadata verdicts; some may
        # be a metadata verdict held against genuine bytes, so they are dropped (and the release
        # judged again, once).
        return cls(path, {k: v for k, v in rejected.items()
                          if isinstance(v, dict) and v.get("about") in ("bytes", "metadata")})  # fmt: skip

    def verdict(self, candidate: Candidate) -> dict[str, Any] | None:
        """The remembered rejection that applies to ``candidate``, if any."""
        return self.rejected.get(candidate.sha256) or self.rejected.get(candidate.metadata_key)

    def remember(self, candidate: Candidate, reason: str, about: Verdict) -> None:
        from edge_sdk.files import atomic_write

        key = candidate.sha256 if about == "bytes" else candidate.metadata_key
        self.rejected[key] = {
            "about": about,
            "name": candidate.name,
            "version": candidate.version,
            "reason": reason,
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        while len(self.rejected) > MAX_REMEMBERED:
            self.rejected.pop(next(iter(self.rejected)))
        data = json.dumps({"rejected": self.rejected}, indent=1, sort_keys=True).encode()
        atomic_write(self.path, data, 0o600)


class Agent:
    """Polls one TUF repository for one device; see the module docstring.

    Args:
        repo_url: base URL of the repository (``…/metadata/`` and ``…/targets/`` below it).
        root_json: the trusted root metadata shipped with the device (path or bytes). Later root
            versions are fetched and verified through the chain, and cached.
        state_dir: the device state directory (TUF cache, audit log, anti-rollback state).
        install_dir: the deploy root (``<name>/releases/…`` and ``<name>/current``); created.
        trust: the pinned bundle trust store (or path(s) to load one from).
        group: this device's rollout group; it takes releases published to every device and to
            this group only.
        hardware_ids: this device's ids (default: detected); releases for other hardware are
            ignored.
        profile: this board's profile (name or DeviceProfile): releases built for another
            profile are ignored, and a release whose model needs a newer runtime than the one
            installed here is refused before ``current`` moves.
        device_key: this device's key (object, file, ``pkcs11:`` or ``tpm2:`` reference). When
            set, every release is opened in
            memory (key unwrap, decryption, model hash) before it is installed, so ``current``
            never names a release this device cannot open, and signed-only releases are refused
            unless ``allow_unencrypted``.
        allow_unencrypted: accept signed-only releases although a device key is set.
        health_check: shell command template run after the switch (see
            :class:`edge_sdk.fleet.deploy.DeployOptions`); failure switches ``current`` back.
        health_timeout: seconds the health check may take.
        keep: releases kept per name.
        config: ngclient ``UpdaterConfig`` (metadata size caps, root rotations…).
        max_target_bytes: refuse larger targets before downloading.
        retry: retries with backoff and jitter for network failures.
        timeout: socket timeout in seconds (connect, and between received bytes).
    """

    def __init__(
        self,
        repo_url: str,
        root_json: str | os.PathLike[str] | bytes,
        state_dir: str | os.PathLike[str],
        install_dir: str | os.PathLike[str],
        trust: TrustStore | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        group: str | None = None,
        hardware_ids: Sequence[str] | None = None,
        profile: str | Any = None,
        device_key: PrivateKey | str | os.PathLike[str] | None = None,
        allow_unencrypted: bool = False,
        health_check: str | None = None,
        health_timeout: float = 30.0,
        keep: int = 3,
        config: UpdaterConfig | None = None,
        max_target_bytes: int = DEFAULT_MAX_TARGET_BYTES,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        from edge_sdk.keys import PrivateKey, TrustStore

        from .deploy import DeployOptions
        from .transports import RetryPolicy

        _require_tuf()
        from tuf.ngclient import UpdaterConfig  # type: ignore[attr-defined]

        if not repo_url.startswith(("http://", "https://")):
            raise UsageError(f"repository URL {repo_url!r} must start with http:// or https://")
        self.repo_url = repo_url.rstrip("/")
        if isinstance(root_json, bytes):
            self._root = root_json
        else:
            try:
                self._root = Path(root_json).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read trusted root {root_json}: {exc.strerror}") from None
        self.state_dir = Path(state_dir)
        self.install_dir = Path(install_dir).absolute()
        if isinstance(trust, TrustStore):
            self.trust = trust
        else:
            paths = [trust] if isinstance(trust, (str, os.PathLike)) else list(trust)
            self.trust = TrustStore.load(paths)
        self.group = group
        if hardware_ids is None:
            from edge_sdk.device.runtime import detect_hardware_ids

            hardware_ids = detect_hardware_ids()
        self.hardware_ids = tuple(hardware_ids)
        if isinstance(profile, str):
            from edge_sdk.profiles import load_profile

            profile = load_profile(profile)
        self.device_profile = profile
        self.profile: str | None = profile.name if profile is not None else None
        self.device_key: PrivateKey | None = (
            device_key
            if device_key is None or isinstance(device_key, PrivateKey)
            else load_private_key(device_key, kind="device")
        )
        self.allow_unencrypted = allow_unencrypted
        self._not_for_us: dict[str, tuple[Candidate, str]] = {}
        self.deploy_options = DeployOptions(
            keep=keep,
            health_check=health_check,
            health_timeout=health_timeout,
            retry=RetryPolicy(attempts=1),
        )
        self.config = config or UpdaterConfig()
        self.max_target_bytes = max_target_bytes
        self.retry = retry or RetryPolicy(attempts=3, base_delay=1.0, max_delay=30.0)
        self.timeout = timeout
        self._fetcher: Any = None
        self.traffic = _Traffic()
        try:
            for sub in ("tuf", "downloads"):
                (self.state_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
                # ngclient writes by path here (and follows a symlink planted at a target's
                # name): nobody else may write in these directories, whoever created them.
                _make_private(self.state_dir / sub)
            self.install_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create agent directories: {exc.strerror}") from None
        from edge_sdk.device.audit_log import AuditLog

        self.audit = AuditLog(self.state_dir / "audit.log")

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _single_instance(self) -> Iterator[None]:
        """ngclient supports one updater per cache directory: refuse a second concurrent poll."""
        path = self.state_dir / ".agent.lock"
        try:  # never through a symlink someone planted in the state directory
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot open the agent lock {path}: {exc.strerror}",
                hint="it must be a regular file (not a symlink) in the agent's state directory",
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(
                    f"another agent is polling with state directory {self.state_dir}"
                ) from None
            yield
        finally:
            os.close(fd)

    def _fetcher_now(self) -> Any:
        if self._fetcher is None:
            from edge_sdk import __version__

            ua = f"edge-sdk-agent/{__version__}"
            if self.config.app_user_agent:
                ua = f"{self.config.app_user_agent} {ua}"
            self._fetcher = _make_fetcher(self.timeout, ua, self.traffic)
        return self._fetcher

    def _with_retries(self, doing: str, operation: Callable[[], T]) -> tuple[T, int]:
        """Run ``operation``, retrying TransportError with backoff and full jitter."""
        attempt = 0
        while True:
            try:
                return operation(), attempt + 1
            except _tuf_errors() as exc:
                error = translate_tuf_error(exc, doing, self.traffic.last_url)
            # Raised outside the except block: the tuf exception and its traceback (which holds
            # the aborted download and its connection) are released here, not kept by ``error``.
            if not isinstance(error, TransportError) or attempt + 1 >= self.retry.attempts:
                raise error
            log.info("%s; retrying", error.message)
            time.sleep(self.retry.delay(attempt))
            attempt += 1

    def _updater(self) -> Updater:
        from tuf.ngclient import Updater  # type: ignore[attr-defined]

        try:
            return Updater(
                metadata_dir=str(self.state_dir / "tuf"),
                metadata_base_url=f"{self.repo_url}/metadata/",
                target_dir=str(self.state_dir / "downloads"),
                target_base_url=f"{self.repo_url}/targets/",
                fetcher=self._fetcher_now(),
                config=self.config,
                bootstrap=self._root,
            )
        except _tuf_errors() as exc:
            error = translate_tuf_error(exc, "loading the trusted root metadata")
        raise error

    def _offered(self, updater: Updater) -> dict[str, list[Candidate]]:
        """Releases in the verified targets metadata this device may take, newest first."""
        from tuf.api.metadata import Metadata, Targets  # type: ignore[attr-defined]

        # ngclient has no listing call: its verified cache copy gives the paths, and each path is
        # looked up again through the updater, so only trusted target info is used.
        cached = self.state_dir / "tuf" / "targets.json"
        try:
            paths = list(Metadata[Targets].from_bytes(cached.read_bytes()).signed.targets)
        except _tuf_errors() as exc:
            raise StateError(f"cannot read the verified targets metadata {cached}: {exc}") from None
        offered: dict[str, list[Candidate]] = {}
        self._not_for_us = {}
        for path in paths:
            info = updater.get_targetinfo(path)
            candidate = candidate_of(info) if info is not None else None
            if candidate is None:
                continue
            why_not = self._why_not(candidate)
            if why_not:
                newest = self._not_for_us.get(candidate.name)
                if newest is None or candidate.version > newest[0].version:
                    self._not_for_us[candidate.name] = (candidate, why_not)
                continue
            offered.setdefault(candidate.name, []).append(candidate)
        for releases in offered.values():
            releases.sort(key=lambda c: (c.version, c.path), reverse=True)
        return offered

    def _why_not(self, candidate: Candidate) -> str:
        """Why a release is not for this device ("" when it is), for the poll's report."""
        if candidate.groups and self.group not in candidate.groups:
            return f"for group(s) {', '.join(candidate.groups)}; this device is in {self.group or 'none'}"
        if candidate.hardware_ids and not set(candidate.hardware_ids) & set(self.hardware_ids):
            return (f"built for hardware {', '.join(candidate.hardware_ids)}; this device is "
                    f"{', '.join(self.hardware_ids)}")  # fmt: skip
        if self.profile is not None and candidate.profile != self.profile:
            return f"built for profile {candidate.profile}; this device runs {self.profile}"
        return ""

    def _installed(self) -> dict[str, Any]:
        from .deploy import status

        # Verified against the bundle trust: a planted `current` claiming a huge version has no
        # version here, so it cannot make every genuine release look old (it is replaced).
        return {s.name: s for s in status(str(self.install_dir), trust=self.trust)}

    def _clean_downloads(self, keep: str | None = None) -> None:
        """Remove what earlier polls left in ``downloads/``, except resumable partials (named
        by a target's hash; ``keep`` given, all but that one's)."""
        for leftover in (self.state_dir / "downloads").iterdir():
            name = leftover.name
            if _PARTIAL.fullmatch(name) and (keep is None or name == keep):
                continue
            with contextlib.suppress(OSError):
                leftover.unlink()

    def _event(self, event: str, candidate: Candidate | None = None, **fields: Any) -> None:
        if candidate is not None:
            fields = {
                "name": candidate.name,
                "version": candidate.version,
                "digest": candidate.digest,
                "target": candidate.path,
                **fields,
            }
        self.audit.append(event, source=self.repo_url, **fields)

    # -- one poll ---------------------------------------------------------------------------

    def poll(self) -> PollResult:
        """Refresh metadata and install what is new; see the module docstring.

        Per-release problems are outcomes in the result (call :meth:`PollResult.raise_for_errors`
        to raise them); a failed metadata refresh raises.

        Raises:
            TransportError: the repository stayed unreachable through the retries.
            VerificationError: the metadata is hostile or stale (rollback, freeze, signature,
                integrity); nothing was installed.
            StateError: another agent runs on this state directory, or it is unusable.
        """
        started = time.monotonic()
        with self._single_instance():
            self._clean_downloads()
            base = (self.traffic.requests, self.traffic.bytes)

            def cost() -> dict[str, int]:
                return {
                    "requests": self.traffic.requests - base[0],
                    "bytes": self.traffic.bytes - base[1],
                }

            def refreshed() -> Updater:
                # A fresh Updater per attempt: ngclient refreshes once per instance.
                updater = self._updater()
                updater.refresh()
                return updater

            try:
                updater, attempts = self._with_retries(
                    f"refreshing metadata from {self.repo_url}", refreshed
                )
                offered = self._offered(updater)
                installed = self._installed()
            except EdgeSDKError as exc:
                spent = cost()
                self._event("agent-check", result="failed", error=exc.kind, reason=exc.message,
                            requests=spent["requests"], bytes=spent["bytes"])  # fmt: skip
                raise
            memory = _Memory.load(self.state_dir / "agent.json")
            outcomes = [
                self._update(updater, name, offered[name], installed.get(name), memory)
                for name in sorted(offered)
            ]
            # Releases the repository offers to others only: said, so an empty poll explains itself.
            outcomes += [
                Outcome(name, "skipped", c.version, c.digest, reason=f"not for this device: {why}")
                for name, (c, why) in sorted(self._not_for_us.items()) if name not in offered
            ]  # fmt: skip
            summary = ",".join(f"{o.name}:{o.status}" for o in outcomes) or "nothing offered"
            spent = cost()
            self._event("agent-check", result="ok", outcomes=summary,
                        requests=spent["requests"], bytes=spent["bytes"])  # fmt: skip
        return PollResult(
            tuple(outcomes), spent["requests"], spent["bytes"], attempts,
            time.monotonic() - started, None,
        )  # fmt: skip

    def _update(
        self,
        updater: Updater,
        name: str,
        releases: list[Candidate],
        current: Any,
        memory: _Memory,
    ) -> Outcome:
        current_version = current.version if current is not None else None
        current_digest = current.digest if current is not None else None
        if current_version is not None:
            same = [c for c in releases if c.version == current_version]
            clash = [c for c in same if c.digest != current_digest and memory.verdict(c) is None]
            if clash and not any(c.digest == current_digest for c in same):
                other = clash[0]
                error: EdgeSDKError = RollbackError(
                    f"{other.path}: the repository offers {name} v{other.version} with digest "
                    f"{other.digest[:16]}, but v{current_version} installed here has "
                    f"{str(current_digest)[:16]}"
                )
                return self._reject(other, error, memory, about="metadata")
        newer = [c for c in releases if current_version is None or c.version > current_version]
        if not newer:
            return Outcome(name, "up-to-date", current_version, current_digest)
        chosen = next((c for c in newer if memory.verdict(c) is None), None)
        if chosen is None:
            newest = newer[0]
            return Outcome(
                name, "skipped", newest.version, newest.digest,
                reason=f"rejected earlier: {(memory.verdict(newest) or {}).get('reason')}",
            )  # fmt: skip
        previous = current.file if current is not None else None
        slip: bytes | None = None
        if chosen.slips and self.device_key is not None:
            try:
                slip = self._fetch_slip(updater, chosen)
            except (KeySlipError, VerificationError) as exc:
                # No slip for this device (revoked), or a bad one: nothing of the release is
                # fetched. Not remembered, so a slip published later is found at the next poll.
                self._event("agent-reject", chosen, stage="slip", error=exc.kind,
                            reason=exc.message)  # fmt: skip
                return Outcome(name, "rejected", chosen.version, chosen.digest, previous,
                               exc.message, exc)  # fmt: skip
            except EdgeSDKError as exc:
                self._event("agent-download", chosen, result="failed", stage="slip",
                            error=exc.kind, reason=exc.message)  # fmt: skip
                return Outcome(name, "failed", chosen.version, chosen.digest, previous,
                               exc.message, exc)  # fmt: skip
        try:
            path, data = self._download(updater, chosen)
        except PayloadTooLargeError as exc:
            # The signed length said so, before a byte was fetched: a verdict about the metadata.
            return self._reject(chosen, exc, memory, previous, about="metadata")
        except VerificationError as exc:
            # The served bytes do not match the signed metadata. Not remembered: it is the
            # server's copy that is wrong, and a repaired server must be trusted again.
            self._event("agent-reject", chosen, stage="download", error=exc.kind,
                        reason=exc.message)  # fmt: skip
            return Outcome(name, "rejected", chosen.version, chosen.digest, previous,
                           exc.message, exc)  # fmt: skip
        except EdgeSDKError as exc:
            self._event("agent-download", chosen, result="failed", error=exc.kind,
                        reason=exc.message)  # fmt: skip
            return Outcome(name, "failed", chosen.version, chosen.digest, previous,
                           exc.message, exc)  # fmt: skip
        try:
            try:
                verified = self._verify(data, chosen, slip)
            except _SlipRefused as refused:
                # The slip is at fault, not the release: judged again with the next slip. Its
                # error keeps its own type (a slip signed by an untrusted key is a
                # SignatureError, exit 21, as for `edge-sdk run`), only the verdict differs.
                bad = refused.error
                self._event("agent-reject", chosen, stage="slip", error=bad.kind,
                            reason=bad.message)  # fmt: skip
                return Outcome(name, "rejected", chosen.version, chosen.digest, previous,
                               bad.message, bad)  # fmt: skip
            except (VerificationError, BundleFormatError) as exc:
                return self._reject(chosen, exc, memory, previous, about="bytes")
            except EdgeSDKError as exc:
                # This device's problem (no runtime, its key's token unavailable…), not the
                # release's: not remembered, so it is tried again at the next poll.
                self._event("agent-verify", chosen, result="failed", error=exc.kind,
                            reason=exc.message)  # fmt: skip
                return Outcome(name, "failed", chosen.version, chosen.digest, previous,
                               exc.message, exc)  # fmt: skip
            if (verified.manifest.version, verified.digest) != (chosen.version, chosen.digest):
                # The bytes are genuine; what the target says about them is not. Remembered
                # by the target, so the same bytes listed honestly are still installed.
                mismatch = IntegrityError(
                    f"{chosen.path}: the TUF metadata announces {chosen.name} "
                    f"v{chosen.version} ({chosen.digest[:16]}), the bundle is "
                    f"{verified.manifest.name} v{verified.manifest.version} "
                    f"({verified.digest[:16]})"
                )
                return self._reject(chosen, mismatch, memory, previous, about="metadata")
            return self._install(path, data, chosen, previous, memory, slip)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    def _download(self, updater: Updater, candidate: Candidate) -> tuple[Path, bytes]:
        if candidate.length > self.max_target_bytes:
            raise PayloadTooLargeError(
                f"{candidate.path} is {candidate.length} bytes, over this agent's "
                f"{self.max_target_bytes}-byte limit"
            )
        info = updater.get_targetinfo(candidate.path)
        if info is None:  # pragma: no cover - it was listed a moment ago by the same updater
            raise VerificationError(f"{candidate.path} vanished from the verified metadata")
        # Named by the signed hash only: nothing from the bundle or the server becomes a path.
        path = self.state_dir / "downloads" / f"{candidate.sha256}.edgepkg"
        bytes_before = self.traffic.bytes

        # An interrupted download of this exact target is continued (HTTP Range); a partial of
        # any other target is removed, never used.
        partial = path.with_name(f"{candidate.sha256}.edgepkg.partial")
        self._clean_downloads(keep=partial.name)

        def fetch() -> str:
            cached = updater.find_cached_target(info, str(path))
            if cached:
                return cached
            from tuf.api import exceptions as tx

            fetcher = self._fetcher_now()
            resumed = partial.exists()
            try:
                fetcher.resume = partial
                try:
                    return updater.download_target(info, str(path))
                except tx.LengthOrHashMismatchError:
                    if not resumed:
                        raise
                # The kept bytes were not the target's (the partial is gone now): once more
                # from the first byte, so a corrupted partial costs a download, not the release.
                fetcher.resume = partial
                return updater.download_target(info, str(path))
            finally:
                fetcher.resume = None

        _, attempts = self._with_retries(f"downloading {candidate.path}", fetch)
        data = _read_download(path, candidate)
        received = self.traffic.bytes - bytes_before
        self._event("agent-download", candidate, result="ok", bytes=received, attempts=attempts,
                    sha256=candidate.sha256)  # fmt: skip
        return path, data

    def _fetch_slip(self, updater: Updater, candidate: Candidate) -> bytes:
        """This device's key slip for ``candidate``, through the hashed bins (one bin fetched).

        Raises:
            KeySlipError: the repository has no slip for this device key, or announces one
                larger than a slip can be.
            VerificationError: the bin's metadata is hostile (signature, rollback, expiry).
            TransportError: the network, through the retries.
        """
        from edge_sdk.format.key_slip import MAX_SLIP_BYTES, read_key_slip

        from .tuf_repo import slip_target_path

        assert self.device_key is not None
        key_id = self.device_key.key_id
        target = slip_target_path(candidate.name, candidate.version, key_id)
        info, _ = self._with_retries(
            f"looking up the key slip {target}", lambda: updater.get_targetinfo(target)
        )
        if info is None:
            raise KeySlipError(
                f"{candidate.name} v{candidate.version} has no key slip for this device (key "
                f"{key_id[:16]}): the device was revoked, or its slip is not published yet",
                hint="the installed release stays current; a slip published for this device "
                "is picked up at the next poll",
            )
        if info.length > MAX_SLIP_BYTES:
            raise KeySlipError(
                f"{target} is announced as {info.length} bytes, over the {MAX_SLIP_BYTES}-byte "
                "slip cap"
            )
        sha256 = str(info.hashes.get("sha256", "x"))
        path = (
            self.state_dir
            / "downloads"
            / (f"{sha256}.edgeslip" if _HEX64.fullmatch(sha256) else "slip.edgeslip")
        )
        self._with_retries(f"downloading {target}",
                           lambda: updater.download_target(info, str(path)))  # fmt: skip
        try:
            raw = read_key_slip(path)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        # Bound again to the signed hash: read by name after ngclient checked it, the file
        # could have been swapped by whoever writes in the downloads directory.
        if len(raw) != info.length or hashlib.sha256(raw).hexdigest() != sha256:
            raise VerificationError(
                f"{target}: the downloaded slip is no longer the one TUF verified (replaced "
                "after the download)",
                hint="someone else can write in the agent's state directory: make it private",
            )
        return raw

    def _verify(self, data: bytes, candidate: Candidate, slip: bytes | None = None) -> Verification:
        """The bundle's own checks, on top of TUF's, through the one check order of
        :func:`edge_sdk.format.verify.check_bundle`: signatures, expiry, the name TUF announced,
        encryption, target, runtime, anti-rollback, payload hash — and, with a device key, the
        in-memory open a later load will do."""
        from edge_sdk.device.state import VersionState
        from edge_sdk.format.verify import Policy, open_verified

        prof = self.device_profile
        runtime = None
        if prof is not None:
            from edge_sdk.device.runtime import discover_backend, runtime_release

            runtime = runtime_release(discover_backend())
        policy = Policy(
            self.trust,
            expected_name=candidate.name,
            require_encryption=self.device_key is not None and not self.allow_unencrypted,
            profile=self.profile,
            runtime_package=prof.runtime.package if prof is not None else None,
            hardware_ids=self.hardware_ids,
            runtime=runtime,
            state=VersionState(self.state_dir),
            device_key=self.device_key,
            key_slip=slip,
        )

        def check_slip(header: Any) -> None:
            # The slip first, on its own, once the header's signatures passed: whatever is wrong
            # with it (a forged signature too) is not held against the release's bytes — the
            # same bundle opens with a genuine slip. The error is carried out unchanged, so a
            # fault has the same type and exit code here as in load, run and verify.
            from edge_sdk.format.key_slip import verify_key_slip

            assert slip is not None and self.device_key is not None
            try:
                verify_key_slip(slip, header, self.trust, self.device_key)
            except EdgeSDKError as exc:
                raise _SlipRefused(exc) from None

        on_header = check_slip if slip is not None and self.device_key is not None else None
        opened = open_verified(
            data, policy, decrypt=self.device_key is not None, on_header=on_header
        )
        return opened.verification

    def _reject(
        self,
        candidate: Candidate,
        error: EdgeSDKError,
        memory: _Memory,
        previous: str | None = None,
        *,
        about: Verdict,
    ) -> Outcome:
        # Remembered (never fetched again) only when the verdict is about the release itself —
        # its bytes, or its target's metadata (``about`` says which, and so what it is keyed by).
        # A wrong device key, a clock running ahead, a runtime too old or a policy of this device
        # can all be fixed here; the same release must then be tried again.
        intrinsic = isinstance(error, (BundleFormatError, SignatureError, IntegrityError, RollbackError,
                                       PayloadTooLargeError))  # fmt: skip
        if intrinsic:
            memory.remember(candidate, error.message, about)
        self._event("agent-reject", candidate, stage="verify", error=error.kind, reason=error.message,
                    sha256=candidate.sha256, remembered=intrinsic, about=about)  # fmt: skip
        return Outcome(candidate.name, "rejected", candidate.version, candidate.digest, previous,
                       error.message, error)  # fmt: skip

    def _install(
        self,
        path: Path,
        data: bytes,
        candidate: Candidate,
        previous: str | None,
        memory: _Memory,
        slip: bytes | None = None,
    ) -> Outcome:
        from .deploy import deploy, prepare_bundle_bytes

        name = candidate.name
        try:
            # With the trust, deploy judges what is current by its verified version only. The
            # bytes verified above are the bytes installed: the path is not read again.
            prepared = prepare_bundle_bytes(data, path, trust=self.trust)
            result = deploy(prepared, str(self.install_dir), self.deploy_options, slip=slip)
        except DeployError as exc:
            now = self._installed().get(name)
            if (
                self.deploy_options.health_check is not None
                and now is not None
                and candidate.release_file in now.releases
                and now.file != candidate.release_file
            ):
                memory.remember(candidate, exc.message, "bytes")  # these bytes failed here
                self._event("agent-rollback", candidate, current=now.file, error=exc.kind,
                            reason=exc.message)  # fmt: skip
                return Outcome(name, "rolled-back", candidate.version, candidate.digest, previous,
                               exc.message, exc)  # fmt: skip
            self._event("agent-install", candidate, result="failed", error=exc.kind,
                        reason=exc.message)  # fmt: skip
            return Outcome(name, "failed", candidate.version, candidate.digest, previous,
                           exc.message, exc)  # fmt: skip
        except EdgeSDKError as exc:
            self._event("agent-install", candidate, result="failed", error=exc.kind,
                        reason=exc.message)  # fmt: skip
            return Outcome(name, "failed", candidate.version, candidate.digest, previous,
                           exc.message, exc)  # fmt: skip
        status: OutcomeStatus = "installed" if result.status == "ok" else "up-to-date"
        self._event("agent-install", candidate, result=result.status, previous=previous,
                    file=result.file)  # fmt: skip
        return Outcome(name, status, candidate.version, candidate.digest, previous)

    # -- polling forever --------------------------------------------------------------------

    def run(
        self,
        interval: float,
        *,
        stop: threading.Event | None = None,
        on_poll: Callable[[PollResult], None] | None = None,
        max_polls: int | None = None,
    ) -> PollResult:
        """Poll every ``interval`` seconds (±10 % jitter) until ``stop`` is set.

        Failures never end the loop: they are recorded, passed to ``on_poll`` and retried at the
        next poll. Returns the last poll's result.
        """
        if interval <= 0:
            raise UsageError(f"interval must be positive, got {interval}")
        stop = stop or threading.Event()
        polls = 0
        last = PollResult()
        while not stop.is_set():
            started = time.monotonic()
            try:
                last = self.poll()
            except EdgeSDKError as exc:
                last = PollResult(error=exc, elapsed=time.monotonic() - started)
                log.warning("poll failed: %s", exc.message)
            if on_poll is not None:
                on_poll(last)
            polls += 1
            if max_polls is not None and polls >= max_polls:
                break
            # Jitter keeps a fleet that booted (or lost its network) together from polling in step.
            stop.wait(interval * random.uniform(0.9, 1.1))
        return last


def run_agent(
    repo_url: str,
    root_json: str | os.PathLike[str] | bytes,
    state_dir: str | os.PathLike[str],
    install_dir: str | os.PathLike[str],
    trust: TrustStore | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    group: str | None = None,
    hardware_ids: Sequence[str] | None = None,
    *,
    interval: float | None = None,
    stop: threading.Event | None = None,
    on_poll: Callable[[PollResult], None] | None = None,
    **options: Any,
) -> PollResult:
    """Poll once (``interval=None``) or forever; see :class:`Agent` for the options.

    Once: returns the poll's result, or raises its first error (after handling every bundle
    name). Forever: returns the last result when ``stop`` is set; errors go to ``on_poll``.

    Raises:
        TransportError, VerificationError, DeployError, StateError: once mode only.
    """
    agent = Agent(
        repo_url, root_json, state_dir, install_dir, trust,
        group=group, hardware_ids=hardware_ids, **options,
    )  # fmt: skip
    if interval is None:
        result = agent.poll()
        result.raise_for_errors()
        return result
    return agent.run(interval, stop=stop, on_poll=on_poll)


__all__ = [
    "DEFAULT_MAX_TARGET_BYTES",
    "Agent",
    "Candidate",
    "Outcome",
    "PollResult",
    "candidate_of",
    "run_agent",
    "translate_tuf_error",
]


def _read_download(path: Path, candidate: Candidate) -> bytes:
    """The downloaded target's bytes, read once through one descriptor and bound again to the
    signed SHA-256 and length.

    ngclient checks the download and then leaves it at ``path``; whoever can write in the
    downloads directory could swap another file in under that name before the agent reads it.
    Everything after this (the bundle's own checks, the install) uses these bytes, never the
    path, so what was checked is what is installed.

    Raises:
        VerificationError: the file is not the target TUF checked (not remembered: the
            repository's release is not at fault).
        StateError: the downloads directory cannot be read.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOENT):
            raise StateError(f"cannot read the download {path}: {exc.strerror}") from None
        fd = -1
    chunks: list[bytes] = []
    if fd >= 0:
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                left = candidate.length + 1  # one byte more tells a longer file
                while left > 0 and (piece := os.read(fd, min(left, 1 << 20))):
                    chunks.append(piece)
                    left -= len(piece)
        finally:
            os.close(fd)
    data = b"".join(chunks)
    if len(data) != candidate.length or hashlib.sha256(data).hexdigest() != candidate.sha256:
        raise VerificationError(
            f"{candidate.path}: the downloaded file in {path.parent} is no longer the target "
            "TUF verified (replaced after the download)",
            hint="someone else can write in the agent's state directory: make it private (0700)",
        )
    return data


def _make_private(directory: Path) -> None:
    """Make ``directory`` (a real directory of ours, not a symlink) mode 0700.

    Raises:
        StateError: it is a symlink, not a directory, or another user's.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise StateError(
                f"{directory} belongs to another user",
                hint="give the agent a state directory of its own",
            )
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
