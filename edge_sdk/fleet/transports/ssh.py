"""A board reached over SSH: SFTP moves the bytes, plain POSIX shell commands do the rest.

The board needs only an SSH server with SFTP and a POSIX shell with ``sha256sum`` (or
``openssl``) and ``sync``; edge-sdk need not be installed there. ``asyncssh`` is imported
inside functions so ``import edge_sdk`` stays fast and works on boards without it.

Host keys are always checked against a known_hosts file. ``accept_new_host_keys`` trusts a host
that has no entry at all (and records its key); a host whose recorded key differs is refused
whatever the options say, because that is exactly what an attacker in the middle looks like.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import posixpath
import re
import shlex
import socket
import stat
from pathlib import Path
from typing import Any

from edge_sdk.errors import HostDependencyError, TransportError, install_hint, unreadable_file
from edge_sdk.files import ForkSafeLock, read_capped

from .base import (
    CommandResult,
    Entry,
    EntryKind,
    Failure,
    Session,
    SshOptions,
    Target,
    UploadProgress,
    check_relpath,
    source_pieces,
)

#: Bytes handed to one SFTP write call; asyncssh splits it into parallel requests.
CHUNK = 1024 * 1024
#: Below this many free bytes a failed write is reported as a full disk.
_NEARLY_FULL = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_IDENTITY = re.compile(r"[0-9]+:[0-9]+")
#: Caps on what is read of the SSH files a user names: a known_hosts for a large fleet, a key.
MAX_KNOWN_HOSTS_BYTES = 64 << 20
MAX_IDENTITY_BYTES = 1 << 20
#: Guards appending to known_hosts when many connections trust new hosts at once.
_KNOWN_HOSTS_LOCK = ForkSafeLock()
_ST_RDONLY = 1  # SSH_FXE_STATVFS_ST_RDONLY in OpenSSH's statvfs extension
_UNREACHABLE = {
    errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT, errno.EHOSTDOWN,
    None,  # asyncio's "Multiple exceptions" when every address of a host failed
}  # fmt: skip


def _kind(mode: int | None) -> EntryKind:
    if mode is None:
        return "other"
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "other"


def _entry(name: str, attrs: Any) -> Entry:
    return Entry(name, _kind(attrs.permissions), attrs.size or 0, float(attrs.mtime or 0))


class SshSession(Session):
    """Primitive operations over one SSH connection and its SFTP channel."""

    def __init__(self, target: SshTarget, conn: Any, sftp: Any) -> None:
        super().__init__(target)
        self.conn = conn
        self.sftp = sftp
        self.options = target.options
        # Directories whose entries changed: `sync DIR...` flushes just these. A bare `sync`
        # flushes every filesystem on the board and can take seconds behind unrelated writes.
        self._dirty: set[str] = set()
        # Our uploads, by temp name: the file identity ("dev:ino") their digest was computed
        # on, once hashed. A rename of one is checked to have put that file in place.
        self._uploads: dict[str, str | None] = {}

    def _touch(self, rel: str) -> str:
        path = self.abspath(rel)
        self._dirty.add(posixpath.dirname(path))
        return path

    async def listdir(self, rel: str) -> list[Entry]:
        import asyncssh

        path = self.abspath(rel)
        self._step(f"listing {path}")
        try:
            names = await self.sftp.readdir(path)
        except asyncssh.SFTPNoSuchFile:
            return []
        return [_entry(n.filename, n.attrs) for n in names if n.filename not in (".", "..")]

    async def stat(self, rel: str) -> Entry | None:
        import asyncssh

        path = self.abspath(rel)
        self._step(f"checking {path}")
        try:
            attrs = await self.sftp.lstat(path)
        except asyncssh.SFTPNoSuchFile:
            return None
        return _entry(posixpath.basename(path), attrs)

    async def makedirs(self, rel: str) -> None:
        import asyncssh

        # asyncssh's makedirs walks down from "/" with a mkdir per component; on a slow link
        # that is a dozen round trips per deploy. Here the usual case (it exists) is one lstat.
        if (await self.stat(rel)) is not None:
            await self._require_dir(rel)
            return
        parts = check_relpath(rel).split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if (await self.stat(sub)) is None:
                path = self._touch(sub)
                self._step(f"creating directory {path}", posixpath.dirname(path))
                try:
                    await self.sftp.mkdir(path, asyncssh.SFTPAttrs(permissions=0o755))
                except asyncssh.SFTPFailure:
                    if (await self.stat(sub)) is None:  # not a lost race with another deploy
                        self._step(f"creating directory {path}", posixpath.dirname(path))
                        raise
            await self._require_dir(sub)

    async def _guard(self, rel: str) -> None:
        """lstat every directory between the root and ``rel``, right before a call that writes.

        SFTP has no openat: the server resolves the whole path on every call, so a symlink
        swapped in for ``releases/`` after an earlier check would be followed. Each mutating
        call re-checks its own path first and refuses when a component is no longer a real
        directory. (The window left is one round trip; docs and README say so.)
        """
        parts = check_relpath(rel).split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            await self._require_dir("/".join(parts[:depth]))

    async def _require_dir(self, rel: str) -> None:
        entry = await self.stat(rel)
        if entry is None or entry.kind != "dir":
            what = "missing" if entry is None else f"a {entry.kind}"
            raise TransportError(
                self.target.fail(
                    "not a directory", self,
                    f"{self.abspath(rel)} is {what}, not a directory; refusing to write through it",
                ),
                hint="someone changed the target's layout during the deploy: check who can "
                "write inside the target root, remove what is in the way, and deploy again",
            )  # fmt: skip

    async def upload(
        self, data: memoryview, rel_dir: str, temp_name: str, progress: UploadProgress | None
    ) -> str:
        import asyncssh

        rel = f"{rel_dir}/{temp_name}"
        path = self._touch(rel)
        await self._guard(rel)
        self._step(f"writing {path}", posixpath.dirname(path))
        self.track_temp(rel)
        self._uploads[rel] = None
        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        handle = await self.sftp.open(
            path, flags, asyncssh.SFTPAttrs(permissions=0o644), encoding=None
        )
        try:
            for offset in range(0, len(data), CHUNK):
                chunk = data[offset : offset + CHUNK]
                await handle.write(bytes(chunk), offset)
                if progress:
                    progress(offset + len(chunk))
            self._step(f"syncing {path}", posixpath.dirname(path))
            # Without fsync@openssh.com, the `sync` after the switch covers it, and the digest
            # check reads back what the server holds either way.
            with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                await handle.fsync()
        finally:
            await handle.close()
        return rel

    async def upload_from(
        self, source: Path, rel: str, start: int, size: int, progress: UploadProgress | None
    ) -> None:
        import asyncssh

        path = self._touch(rel)
        await self._guard(rel)
        self._step(f"writing {path}", posixpath.dirname(path))
        # A resumed partial was checked by the caller (a regular file, by lstat, of ``start``
        # bytes with the right hash); the whole file's hash is compared before it is renamed.
        fresh = asyncssh.FXF_CREAT | asyncssh.FXF_EXCL if start == 0 else 0
        flags = asyncssh.FXF_WRITE | fresh
        handle = await self.sftp.open(
            path, flags, asyncssh.SFTPAttrs(permissions=0o644), encoding=None
        )
        try:
            if start:
                # Cut back anything written after the partial was checked.
                await handle.truncate(start)
            for offset, piece in source_pieces(source, start, size):
                await handle.write(piece, offset)
                if progress:
                    progress(offset + len(piece))
            self._step(f"syncing {path}", posixpath.dirname(path))
            with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                await handle.fsync()
        finally:
            await handle.close()
        # Ours, as upload()'s: its digest and identity come from one descriptor, and rename()
        # puts it in place only as that same file.
        self._uploads[rel] = None

    async def sha256(self, rel: str) -> str:
        path = shlex.quote(self.abspath(rel))
        self._step(f"hashing {self.abspath(rel)}")
        upload = rel in self._uploads
        if upload:
            # Our upload: opened once (fd 3), and both its identity and its digest are taken
            # from that descriptor (/dev/fd/3 reopens the same file, not the name), so the
            # digest belongs to the file rename() later checks it put in place.
            source, ident = "/dev/fd/3", "stat -L -c %d:%i /dev/fd/3 && "
            prefix = f"exec 3< {path} && "
        else:
            source, ident, prefix = path, "", ""
        # openssl uses the CPU's SHA instructions (several times faster than coreutils'
        # sha256sum on boards that have them); sha256sum (coreutils, busybox) is the fallback.
        result = await self._exec(
            f"{prefix}{ident}{{ openssl dgst -sha256 -r {source} 2>/dev/null || "
            f"sha256sum -- {source}; }}",
            self.options.command_timeout,
        )
        words = result.stdout.split()
        if upload and words and _IDENTITY.fullmatch(words[0]):
            self._uploads[rel] = words.pop(0)
        elif upload:
            words = []  # no identity, no digest to trust
        if not result.ok or not words or not _HEX64.fullmatch(words[0].lower()):
            raise TransportError(
                self.target.fail("cannot compute SHA-256 on the target", self, result.summary()),
                hint="the board needs openssl or sha256sum (coreutils/busybox) and stat",
            )
        return words[0].lower()

    async def _check_renamed(self, src_rel: str, dst_rel: str) -> None:
        """After renaming our hashed upload: ``dst_rel`` must be the very file hashed.

        SFTP renames by name, so a file swapped in under the temp name after the digest was
        taken would be renamed instead; one ``stat`` says whether that happened, and it is
        refused rather than reported as installed.
        """
        expected = self._uploads.pop(src_rel, None)
        if expected is None:
            return
        dst = self.abspath(dst_rel)
        result = await self._exec(
            f"stat -c %d:%i -- {shlex.quote(dst)}", self.options.command_timeout
        )
        if not result.ok or result.stdout.strip() != expected:
            # Not ours: it must not stay under the release name (best effort; whoever swapped
            # it can write there anyway, and the next deploy replaces what is left).
            with contextlib.suppress(Exception):
                await self.remove(dst_rel)
            raise TransportError(
                self.target.fail(
                    "file replaced", self,
                    f"{dst} is not the file uploaded and hashed (someone swapped another file "
                    "in under its temp name); refusing to install it",
                ),
                hint="someone else writes inside the target root: check who can, and deploy again",
            )  # fmt: skip

    async def rename(self, src_rel: str, dst_rel: str) -> None:
        import asyncssh

        src, dst = self._touch(src_rel), self._touch(dst_rel)
        await self._guard(src_rel)
        # The usual rename stays in one directory: its path was just checked.
        if posixpath.dirname(dst_rel) != posixpath.dirname(src_rel):
            await self._guard(dst_rel)
        self._step(f"renaming {src} to {dst}", posixpath.dirname(dst))
        try:
            await self.sftp.posix_rename(src, dst)
        except asyncssh.SFTPOpUnsupported:
            # Plain SFTP rename refuses to replace; mv does rename(2), which does. -T: a plain
            # `mv` moves *into* a directory dst names — through a symlink planted at dst, out
            # of the root. An mv without -T fails the rename rather than do that.
            result = await self._exec(
                f"mv -f -T -- {shlex.quote(src)} {shlex.quote(dst)}", self.options.command_timeout
            )
            if not result.ok:
                raise TransportError(
                    self.target.fail("rename failed", self, result.summary())
                ) from None
        await self._check_renamed(src_rel, dst_rel)

    async def symlink(self, link_text: str, rel: str) -> None:
        path = self._touch(rel)
        await self._guard(rel)
        self._step(f"creating symlink {path}", posixpath.dirname(path))
        await self.sftp.symlink(link_text, path)

    async def readlink(self, rel: str) -> str | None:
        import asyncssh

        path = self.abspath(rel)
        self._step(f"reading link {path}")
        try:
            attrs = await self.sftp.lstat(path)
        except asyncssh.SFTPNoSuchFile:
            return None
        if _kind(attrs.permissions) != "link":
            return None
        text: str = await self.sftp.readlink(path)
        return text

    async def remove(self, rel: str) -> None:
        import asyncssh

        path = self._touch(rel)
        self._uploads.pop(rel, None)
        await self._guard(rel)
        self._step(f"removing {path}", posixpath.dirname(path))
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await self.sftp.remove(path)

    async def read(self, rel: str, offset: int, length: int) -> bytes:
        path = self.abspath(rel)
        self._step(f"reading {path}")
        async with self.sftp.open(path, "rb") as handle:
            data: bytes = await handle.read(length, offset)
        return data

    async def free_space(self, rel: str) -> int | None:
        import asyncssh

        path = self.abspath(rel)
        self._step(f"checking free space on {path}")
        try:
            vfs = await self.sftp.statvfs(path)
        except asyncssh.SFTPOpUnsupported:
            return None
        return int(vfs.bavail * vfs.frsize)

    async def sync(self) -> None:
        if not self._dirty:
            return
        dirs = " ".join(shlex.quote(d) for d in sorted(self._dirty))
        self._step(f"syncing {dirs}")
        # `sync FILE...` (coreutils ≥ 8.24, busybox ≥ 1.31) fsyncs just those; older ones only
        # know the global `sync`.
        result = await self._exec(
            f"sync -- {dirs} 2>/dev/null || sync", self.options.command_timeout
        )
        self._dirty.clear()
        if not result.ok:
            raise TransportError(self.target.fail("sync failed", self, result.summary()))

    async def run(self, command: str, timeout: float) -> CommandResult:
        self._step(f"running {command!r}")
        return await self._exec(command, timeout)

    async def _exec(self, command: str, timeout: float) -> CommandResult:
        import asyncssh

        try:
            proc = await self.conn.run(
                command, check=False, timeout=timeout, stdin=asyncssh.DEVNULL
            )
        except asyncssh.TimeoutError:
            return CommandResult(command, None, "", "", timed_out=True)
        if proc.exit_status is None and proc.exit_signal is None:
            # The channel closed without an exit status: the link dropped mid-command. Raise it
            # as the transient connection loss it is, not as a failed command.
            raise asyncssh.ConnectionLost("connection closed before the command finished")
        out = proc.stdout if isinstance(proc.stdout, str) else ""
        err = proc.stderr if isinstance(proc.stderr, str) else ""
        if proc.exit_signal:
            err = f"{err}\nkilled by signal {proc.exit_signal[0]}".strip()
        return CommandResult(
            command, proc.exit_status if proc.exit_signal is None else None, out, err
        )

    async def _close(self) -> None:
        self.sftp.exit()
        self.conn.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.conn.wait_closed(), 5)


class SshTarget(Target):
    """``ssh://user@host[:port]/root`` with key-based auth and checked host keys."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str | None,
        root: str,
        options: SshOptions,
        label: str | None = None,
    ) -> None:
        shown = f"[{host}]" if ":" in host else host
        super().__init__(f"ssh://{user + '@' if user else ''}{shown}:{port}{root}", root, label)
        self.host = host
        self.port = port
        self.user = user
        self.options = options

    @property
    def known_hosts_path(self) -> Path:
        """The known_hosts file host keys are checked against (and recorded in, if allowed)."""
        return (self.options.known_hosts or Path("~/.ssh/known_hosts")).expanduser()

    @property
    def host_pattern(self) -> str:
        """How OpenSSH writes this host in known_hosts."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def _known_hosts_text(self) -> str:
        path = self.known_hosts_path
        try:
            # Capped, and a FIFO or a device is refused, not waited on or read forever.
            return read_capped(path, MAX_KNOWN_HOSTS_BYTES).decode("utf-8")
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise unreadable_file(TransportError, f"{self.label}: known_hosts", path, exc) from None
        except UnicodeDecodeError:
            raise TransportError(f"{self.label}: known_hosts {path} is not UTF-8 text") from None

    def _has_host_entry(self, text: str) -> bool:
        import asyncssh

        keys, ca_keys, *_ = asyncssh.import_known_hosts(text).match(
            self.host, self.host, self.port if self.port != 22 else None
        )
        return bool(keys or ca_keys)

    async def _open(self, known_hosts_text: str) -> Any:
        import asyncssh

        identity = self.options.identity
        return await asyncio.wait_for(
            asyncssh.connect(
                self.host,
                self.port,
                username=self.user or (),
                known_hosts=asyncssh.import_known_hosts(known_hosts_text),
                client_keys=[str(identity.expanduser())] if identity else (),
                agent_path=() if self.options.use_agent else None,
                password_auth=False,  # never prompt, never send a password
                kbdint_auth=False,
                connect_timeout=self.options.connect_timeout,
                login_timeout=self.options.connect_timeout,
                keepalive_interval=self.options.keepalive_interval,
                keepalive_count_max=3,
            ),
            # asyncssh's own timeouts cover each phase; this bounds the whole thing.
            self.options.connect_timeout * 2,
        )

    def _check_identity(self) -> None:
        import asyncssh

        identity = self.options.identity
        if identity is None:
            return
        path = identity.expanduser()
        try:
            # Read by us first: a FIFO or a device is refused, not waited on or read forever.
            asyncssh.import_private_key(read_capped(path, MAX_IDENTITY_BYTES))
        except OSError as exc:
            what = f"{self.label}: identity file"
            raise unreadable_file(TransportError, what, path, exc) from None
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            raise TransportError(
                f"{self.label}: cannot load identity file {path}: {exc}",
                hint="passphrase-protected keys must be loaded into an SSH agent",
            ) from None

    def _asyncssh(self) -> Any:
        try:
            import asyncssh
        except ImportError:
            raise HostDependencyError(
                f"{self.label}: SSH targets need asyncssh, which is not installed",
                hint=install_hint("deploy"),
            ) from None
        return asyncssh

    async def connect(self) -> Session:
        asyncssh = self._asyncssh()

        self._check_identity()
        text = self._known_hosts_text()
        try:
            conn = await self._open(text)
        except asyncssh.HostKeyNotVerifiable:
            if not self.options.accept_new_host_keys or self._has_host_entry(text):
                raise
            conn = await self._trust_on_first_use(text)
        try:
            sftp = await conn.start_sftp_client()
        except BaseException:
            conn.close()
            raise
        return SshSession(self, conn, sftp)

    async def _trust_on_first_use(self, text: str) -> Any:
        """Fetch the unknown host's key, connect trusting only it, then record it."""
        import asyncssh

        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(self.host, self.port), self.options.connect_timeout
        )
        if key is None:  # pragma: no cover - only with GSS key exchange, which we never enable
            raise TransportError(f"{self.label}: the server presented no host key")
        key_text = " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])
        line = f"{self.host_pattern} {key_text}\n"
        conn = await self._open(text + ("\n" if text and not text.endswith("\n") else "") + line)
        # Record only after the server proved it holds the key (asyncssh checks that during the
        # handshake), and only if nobody recorded this host meanwhile.
        self._append_known_host(line)
        return conn

    def _append_known_host(self, line: str) -> None:
        path = self.known_hosts_path
        with _KNOWN_HOSTS_LOCK:
            if self._has_host_entry(self._known_hosts_text()):
                return
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(line)

    def raw_errors(self) -> tuple[type[BaseException], ...]:
        asyncssh = self._asyncssh()
        return (asyncssh.Error, OSError, asyncio.TimeoutError)

    async def explain(self, exc: BaseException, session: Session | None) -> Failure:
        import asyncssh

        def failure(what: str, detail: str, *, transient: bool, hint: str | None = None) -> Failure:
            return Failure(TransportError(self.fail(what, session, detail), hint=hint), transient)

        who = f"{self.user or 'the default user'}@{self.host_pattern}"
        if isinstance(exc, asyncssh.PermissionDenied):
            identity = self.options.identity
            tried = [f"identity {identity}" if identity else "default keys"]
            if self.options.use_agent:
                tried.append("the SSH agent")
            return failure(
                "authentication failed",
                f"{who} refused the key(s) offered ({' and '.join(tried)})",
                transient=False,
                hint="check the identity file and the board's authorized_keys",
            )
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            if self._has_host_entry(self._known_hosts_text()):
                return failure(
                    "host key mismatch",
                    f"the key offered by {self.host_pattern} is not the one recorded in "
                    f"{self.known_hosts_path} (possible man-in-the-middle, or the board was "
                    "reinstalled)",
                    transient=False,
                    hint="if the board really changed, remove its old key: "
                    f"ssh-keygen -R '{self.host_pattern}' -f {self.known_hosts_path}",
                )
            return failure(
                "unknown host key",
                f"{self.host_pattern} is not in {self.known_hosts_path}",
                transient=False,
                hint="add it (ssh-keyscan) or opt in to trust on first use (accept_new_host_keys)",
            )
        if isinstance(exc, asyncssh.SFTPError):
            return await self._explain_sftp(exc, session, failure)
        if isinstance(exc, asyncssh.DisconnectError):
            return failure("connection lost", exc.reason or type(exc).__name__, transient=True)
        if isinstance(exc, asyncssh.ChannelOpenError):
            return failure("cannot open an SSH channel", exc.reason, transient=True)
        if isinstance(exc, asyncio.TimeoutError):
            if session is None:
                return failure(
                    "unreachable",
                    f"no SSH connection to {self.host_pattern} within "
                    f"{self.options.connect_timeout:g} s",
                    transient=True,
                )
            return failure("timed out", "the board stopped answering", transient=True)
        if isinstance(exc, socket.gaierror):
            return failure(
                "unreachable",
                f"cannot resolve host {self.host!r}: {exc.strerror}",
                transient=exc.errno == socket.EAI_AGAIN,
            )
        if isinstance(exc, OSError):
            # asyncio puts "Connect call failed (addr)" in strerror; the errno says it better.
            reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            if session is None and exc.errno in _UNREACHABLE:
                return failure("unreachable", f"{self.host_pattern}: {reason}", transient=True)
            return failure("connection lost", reason, transient=True)
        if isinstance(exc, asyncssh.Error):
            return failure("SSH error", exc.reason, transient=False)
        return failure("unexpected error", str(exc), transient=False)  # pragma: no cover

    async def _explain_sftp(self, exc: Any, session: Session | None, failure: Any) -> Failure:
        import asyncssh

        result: Failure
        if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection)):
            result = failure("connection lost", exc.reason, transient=True)
        elif isinstance(exc, asyncssh.SFTPPermissionDenied):
            result = failure("permission denied", exc.reason, transient=False)
        elif isinstance(exc, (asyncssh.SFTPNoSpaceOnFilesystem, asyncssh.SFTPQuotaExceeded)):
            result = failure("disk full", exc.reason, transient=False)
        elif isinstance(exc, asyncssh.SFTPNoSuchFile):
            result = failure("no such file or directory", exc.reason, transient=False)
        else:
            # OpenSSH's sftp-server speaks protocol 3, which reports ENOSPC and EROFS alike as
            # a bare "Failure". Ask the board what is wrong with the directory instead.
            what = await self._diagnose(session)
            result = failure(
                what or "remote filesystem error", f"sftp: {exc.reason}", transient=False
            )
        return result

    async def _diagnose(self, session: Session | None) -> str | None:
        if not isinstance(session, SshSession) or not session.doing_dir:
            return None
        directory = session.doing_dir
        try:
            vfs = await asyncio.wait_for(session.sftp.statvfs(directory), 10)
            if vfs.flags & _ST_RDONLY:
                return "permission denied (read-only file system)"
            if vfs.bavail * vfs.frsize < _NEARLY_FULL:
                return f"disk full ({vfs.bavail * vfs.frsize} bytes free)"
            probe = await asyncio.wait_for(
                session.conn.run(f"test -w {shlex.quote(directory)}", check=False), 10
            )
            if probe.exit_status != 0:
                return f"permission denied ({directory} is not writable)"
        except Exception:  # noqa: BLE001 - a diagnosis is best effort; the caller reports the original
            return None
        return None
