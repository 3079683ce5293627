"""The deploy target primitives every transport implements: Target, Session, entries, retries.

See :mod:`edge_sdk.fleet.transports` for what they are for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge_sdk.errors import EdgeSDKError, UsageError

EntryKind = Literal["file", "dir", "link", "other"]
#: Called with the number of bytes of the upload written so far.
UploadProgress = Callable[[int], None]

T = TypeVar("T")

log = logging.getLogger("edge_sdk")


@dataclass(frozen=True)
class Entry:
    """One directory entry on a target (never followed: a symlink is reported as ``link``)."""

    name: str
    kind: EntryKind
    size: int
    mtime: float


@dataclass(frozen=True)
class CommandResult:
    """What a command run on the target did."""

    command: str
    exit_status: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the command finished in time with exit status 0."""
        return not self.timed_out and self.exit_status == 0

    def summary(self, limit: int = 300) -> str:
        """A one-line account for error messages: exit status and the tail of the output."""
        head = "timed out" if self.timed_out else f"exit status {self.exit_status}"
        text = (self.stderr.strip() or self.stdout.strip()).replace("\n", " | ")
        if len(text) > limit:
            text = "…" + text[-limit:]
        return f"{head}: {text}" if text else head


@dataclass(frozen=True)
class SshOptions:
    """How to reach a board over SSH. Passwords are deliberately not an option.

    Attributes:
        user: login name; overrides the URI's ``user@`` part.
        port: overrides the URI's port (default 22).
        identity: private key file; the SSH agent is tried as well unless ``use_agent`` is off.
        known_hosts: known_hosts file to check host keys against (default ``~/.ssh/known_hosts``).
        accept_new_host_keys: trust a host that has *no* entry yet and record its key
            (trust on first use). A host whose recorded key differs is always refused.
        use_agent: also offer the keys of the agent at ``$SSH_AUTH_SOCK``.
        connect_timeout: seconds for TCP connect plus SSH handshake and login.
        command_timeout: seconds any single remote command (hash, sync) may take.
        keepalive_interval: seconds between keepalives, so a dead link is noticed mid-upload.
    """

    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_keys: bool = False
    use_agent: bool = True
    connect_timeout: float = 15.0
    command_timeout: float = 300.0
    keepalive_interval: float = 15.0


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and full jitter, for transient failures only.

    Attempt ``n`` (0-based) waits a random time in ``[0, min(max_delay, base_delay * 2**n)]``
    before the next one: jitter keeps a fleet that lost its network at once from reconnecting
    in lockstep.
    """

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise UsageError(f"retry attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise UsageError("retry delays must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


@dataclass(frozen=True)
class Failure:
    """A translated failure: the typed error to raise and whether another attempt may help."""

    error: EdgeSDKError
    transient: bool


def check_relpath(rel: str) -> str:
    """Refuse a relative path that is absolute, empty, or climbs out of the target root."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UsageError(f"unsafe path {rel!r} inside a deploy target")
    return rel


class Session(ABC):
    """An open connection to a target. All paths are relative to the target root.

    ``doing`` names the operation in progress, so a translated error can say what failed.
    Temp files registered with :meth:`track_temp` are removed on :meth:`close` unless
    :meth:`untrack_temp` was called: a failed deploy does not leave partial files behind when
    the target is still reachable (and the next deploy removes them when it was not).
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self.doing = "connecting"
        #: Directory the current operation writes to, for diagnosing a failure (disk full...).
        self.doing_dir = ""
        self._temps: set[str] = set()

    def _step(self, doing: str, directory: str = "") -> None:
        self.doing = doing
        self.doing_dir = directory

    def abspath(self, rel: str) -> str:
        """The absolute path of ``rel`` (``""`` is the root itself) on the target."""
        if rel == "":
            return self.target.root
        return posixpath.join(self.target.root, check_relpath(rel))

    def track_temp(self, rel: str) -> None:
        """Remember a temp file to remove if the session ends before it is renamed."""
        self._temps.add(rel)

    def untrack_temp(self, rel: str) -> None:
        """Forget a temp file: it was renamed into place."""
        self._temps.discard(rel)

    async def close(self) -> None:
        """Remove tracked temp files (best effort) and close the connection."""
        for rel in sorted(self._temps):
            # Best effort: the connection may be the thing that failed, and cleanup must not
            # mask the real error (the next deploy removes what is left).
            with contextlib.suppress(Exception):
                await self.remove(rel)
        self._temps.clear()
        await self._close()

    async def switch_symlink(self, link_rel: str, link_text: str, temp_name: str) -> None:
        """Point ``link_rel`` at ``link_text`` atomically: new link under a temp name, rename.

        rename(2) replaces the old link in one step, so a reader sees either the old or the new
        target, never a missing ``current``.
        """
        temp_rel = posixpath.join(posixpath.dirname(link_rel), temp_name)
        self.track_temp(temp_rel)
        await self.symlink(link_text, temp_rel)
        await self.rename(temp_rel, link_rel)
        self.untrack_temp(temp_rel)

    # -- primitives every transport implements ---------------------------------------------------

    @abstractmethod
    async def listdir(self, rel: str) -> list[Entry]:
        """Entries of a directory (``rel`` may be ``""`` for the root); [] if it is missing."""

    @abstractmethod
    async def stat(self, rel: str) -> Entry | None:
        """lstat ``rel``; None if it does not exist."""

    @abstractmethod
    async def makedirs(self, rel: str) -> None:
        """Create a directory and its parents inside the root; existing ones are fine."""

    @abstractmethod
    async def upload(
        self, data: memoryview, rel_dir: str, temp_name: str, progress: UploadProgress | None
    ) -> str:
        """Write ``data`` to ``rel_dir/temp_name`` (must not exist), fsync it, return its path.

        The temp file is tracked (see :meth:`track_temp`) before the first byte is written.
        """

    async def upload_from(
        self, source: Path, rel: str, start: int, size: int, progress: UploadProgress | None
    ) -> None:
        """Write bytes ``[start, size)`` of the local file ``source`` into ``rel`` at the same
        offsets, streaming (never the whole file in memory), and fsync it.

        ``start`` 0 creates ``rel`` (it must not exist); otherwise ``rel`` is an earlier partial
        of ``start`` bytes that the caller checked, and is extended. ``rel`` is not tracked as a
        temp: an interrupted transfer leaves it for the next one to resume. ``progress`` gets the
        absolute position after each piece.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot stream a file")

    @abstractmethod
    async def sha256(self, rel: str) -> str:
        """SHA-256 (hex) of a file, computed on the target itself."""

    @abstractmethod
    async def rename(self, src_rel: str, dst_rel: str) -> None:
        """rename(2): atomically replace ``dst_rel`` (a file or symlink) with ``src_rel``."""

    @abstractmethod
    async def symlink(self, link_text: str, rel: str) -> None:
        """Create a symlink at ``rel`` whose content is ``link_text`` (not resolved)."""

    @abstractmethod
    async def readlink(self, rel: str) -> str | None:
        """The content of symlink ``rel``; None if it does not exist or is not a symlink."""

    @abstractmethod
    async def remove(self, rel: str) -> None:
        """Remove a file or symlink; a missing one is fine."""

    @abstractmethod
    async def read(self, rel: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of a file from ``offset``."""

    @abstractmethod
    async def free_space(self, rel: str) -> int | None:
        """Bytes available to us on the filesystem holding ``rel``; None if unknown."""

    @abstractmethod
    async def sync(self) -> None:
        """Flush renames and links to stable storage (a board may lose power any time)."""

    @abstractmethod
    async def run(self, command: str, timeout: float) -> CommandResult:
        """Run a POSIX shell command on the target; a nonzero exit is a result, not an error."""

    @abstractmethod
    async def _close(self) -> None:
        """Close the underlying connection."""


#: Bytes read from a local file per piece when a file is streamed to a target.
SOURCE_PIECE = 1024 * 1024


def source_pieces(source: Path, start: int, size: int) -> Iterator[tuple[int, bytes]]:
    """Bytes ``[start, size)`` of a local file as ``(offset, piece)``, one piece in memory.

    Raises:
        UsageError: the file cannot be read, or ends before ``size`` (it changed meanwhile).
    """
    try:
        with source.open("rb") as handle:
            handle.seek(start)
            at = start
            while at < size:
                piece = handle.read(min(SOURCE_PIECE, size - at))
                if not piece:
                    raise UsageError(
                        f"bundle {source} ended after {at} of {size} bytes "
                        "(it changed while it was deployed)"
                    )
                yield at, piece
                at += len(piece)
    except OSError as exc:
        raise UsageError(f"cannot read bundle {source}: {exc.strerror}") from None


class Target(ABC):
    """Where bundles are installed: a root directory reached through one transport."""

    def __init__(self, uri: str, root: str, label: str | None) -> None:
        self.uri = uri
        self.root = root
        #: How messages name this target: the device name and where it is.
        self.label = f"{label} ({uri})" if label else uri

    @abstractmethod
    async def connect(self) -> Session:
        """Open a session. Raw errors propagate; :meth:`explain` translates them."""

    @abstractmethod
    def raw_errors(self) -> tuple[type[BaseException], ...]:
        """The low-level exception types :meth:`explain` knows how to translate."""

    @abstractmethod
    async def explain(self, exc: BaseException, session: Session | None) -> Failure:
        """Translate a raw exception into a typed error naming this target and the step.

        ``session`` is None when connecting failed; when given and still alive, it may be used
        to diagnose (for instance, is the disk full or the directory read-only).
        """

    def fail(self, what: str, session: Session | None, detail: str = "") -> str:
        """Build the standard message: target, what failed, while doing what, details."""
        doing = session.doing if session else "connecting"
        text = f"{self.label}: {what} while {doing}"
        return f"{text}: {detail}" if detail else text


async def with_session(
    target: Target,
    operation: Callable[[Session], Awaitable[T]],
    retry: RetryPolicy,
    *,
    on_retry: Callable[[Failure, float], None] | None = None,
) -> T:
    """Run ``operation`` in a fresh session, retrying transient failures with backoff.

    The operation must be safe to run again from the start (every deploy step is). Typed
    :class:`EdgeSDKError` raised by the operation itself are never retried. ``on_retry`` is
    told about each transient failure and the delay before the next attempt.

    Raises:
        TransportError, DeployError: the translated failure of the last attempt.
    """
    raw = target.raw_errors()
    _quiet_connection_noise(raw)
    for attempt in range(retry.attempts):
        session: Session | None = None
        try:
            session = await target.connect()
            return await operation(session)
        except EdgeSDKError:
            raise
        except raw as exc:
            failure = await target.explain(exc, session)
        finally:
            if session is not None:
                with contextlib.suppress(*raw):  # the connection is already gone
                    await session.close()
        if not failure.transient or attempt + 1 == retry.attempts:
            error = failure.error
            if failure.transient and retry.attempts > 1:
                error = type(error)(
                    f"{error.message} (gave up after {retry.attempts} attempts)", hint=error.hint
                )
            raise error
        delay = retry.delay(attempt)
        if on_retry is not None:
            on_retry(failure, delay)
        await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises


class _DropNoise(logging.Filter):
    """asyncio's own warning when a peer vanished mid-write: the transport's error says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("socket.send() raised exception")


_NOISE_FILTER = _DropNoise()


def _quiet_connection_noise(raw: tuple[type[BaseException], ...]) -> None:
    """Keep a dropped connection from printing asyncio tracebacks a retry already handled.

    A link that drops leaves asyncssh's reader tasks failing with nobody awaiting them; asyncio
    would print "Task exception was never retrieved" with the whole traceback when they are
    collected, and "socket.send() raised exception" for each write after the drop — even when
    the next attempt succeeds. Connection errors of this transport go to the debug log instead;
    anything else still reaches asyncio's default handler.
    """
    asyncio_log = logging.getLogger("asyncio")
    if _NOISE_FILTER not in asyncio_log.filters:
        asyncio_log.addFilter(_NOISE_FILTER)
    loop = asyncio.get_running_loop()
    if getattr(loop.get_exception_handler(), "_edge_sdk", False):
        return

    def handler(event_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (*raw, ConnectionError, EOFError)):
            log.debug("ignored after a dropped connection: %s: %s", type(exc).__name__, exc)
            return
        event_loop.default_exception_handler(context)

    handler._edge_sdk = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)
