"""A local directory as a deploy target (a mounted SD card, an NFS share, a test fixture).

Blocking filesystem calls run in worker threads so many local targets can be deployed in
parallel from one event loop, like SSH targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import signal
import stat
from pathlib import Path

from edge_sdk.errors import TransportError

from .base import (
    CommandResult,
    Entry,
    EntryKind,
    Failure,
    Session,
    Target,
    UploadProgress,
)

#: Bytes written per worker-thread call; progress is reported after each.
CHUNK = 1024 * 1024


def _kind(mode: int) -> EntryKind:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    return "other"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalSession(Session):
    """Primitive operations on a local directory tree."""

    def __init__(self, target: LocalTarget) -> None:
        super().__init__(target)
        # Directories whose entries changed since the last sync(); fsyncing just these is far
        # cheaper than os.sync(), which flushes every filesystem on the host.
        self._dirty: set[str] = set()

    def _touch(self, rel: str) -> str:
        path = self.abspath(rel)
        self._dirty.add(os.path.dirname(path))
        return path

    async def listdir(self, rel: str) -> list[Entry]:
        self._step(f"listing {self.abspath(rel)}")
        return await asyncio.to_thread(self._listdir, self.abspath(rel))

    @staticmethod
    def _listdir(path: str) -> list[Entry]:
        try:
            with os.scandir(path) as it:
                out = []
                for item in it:
                    st = item.stat(follow_symlinks=False)
                    out.append(Entry(item.name, _kind(st.st_mode), st.st_size, st.st_mtime))
                return out
        except FileNotFoundError:
            return []

    async def stat(self, rel: str) -> Entry | None:
        path = self.abspath(rel)
        self._step(f"checking {path}")
        try:
            st = await asyncio.to_thread(os.lstat, path)
        except FileNotFoundError:
            return None
        return Entry(os.path.basename(path), _kind(st.st_mode), st.st_size, st.st_mtime)

    async def makedirs(self, rel: str) -> None:
        path = self.abspath(rel)
        self._step(f"creating directory {path}", os.path.dirname(path))
        await asyncio.to_thread(os.makedirs, path, 0o755, True)

    async def upload(
        self, data: memoryview, rel_dir: str, temp_name: str, progress: UploadProgress | None
    ) -> str:
        rel = f"{rel_dir}/{temp_name}"
        path = self._touch(rel)
        self._step(f"writing {path}", os.path.dirname(path))
        self.track_temp(rel)
        fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for offset in range(0, len(data), CHUNK):
                chunk = data[offset : offset + CHUNK]
                await asyncio.to_thread(_write_all, fd, chunk)
                if progress:
                    progress(offset + len(chunk))
            self._step(f"syncing {path}", os.path.dirname(path))
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        return rel

    async def sha256(self, rel: str) -> str:
        path = self.abspath(rel)
        self._step(f"hashing {path}")
        return await asyncio.to_thread(_hash_file, path)

    async def rename(self, src_rel: str, dst_rel: str) -> None:
        src, dst = self._touch(src_rel), self._touch(dst_rel)
        self._step(f"renaming {src} to {dst}", os.path.dirname(dst))
        await asyncio.to_thread(os.rename, src, dst)

    async def symlink(self, link_text: str, rel: str) -> None:
        path = self._touch(rel)
        self._step(f"creating symlink {path}", os.path.dirname(path))
        await asyncio.to_thread(os.symlink, link_text, path)

    async def readlink(self, rel: str) -> str | None:
        path = self.abspath(rel)
        self._step(f"reading link {path}")
        try:
            return await asyncio.to_thread(os.readlink, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # exists but is not a symlink
                return None
            raise

    async def remove(self, rel: str) -> None:
        path = self._touch(rel)
        self._step(f"removing {path}", os.path.dirname(path))
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, path)

    async def read(self, rel: str, offset: int, length: int) -> bytes:
        path = self.abspath(rel)
        self._step(f"reading {path}")
        return await asyncio.to_thread(_read_range, path, offset, length)

    async def free_space(self, rel: str) -> int | None:
        path = self.abspath(rel)
        self._step(f"checking free space on {path}")
        st = await asyncio.to_thread(os.statvfs, path)
        return st.f_bavail * st.f_frsize

    async def sync(self) -> None:
        self._step("syncing directories")
        dirty, self._dirty = sorted(self._dirty), set()
        for path in dirty:
            with contextlib.suppress(FileNotFoundError):  # removed since
                await asyncio.to_thread(_fsync_dir, path)

    async def run(self, command: str, timeout: float) -> CommandResult:
        self._step(f"running {command!r}")
        proc = await asyncio.create_subprocess_shell(
            command,
            cwd=self.target.root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # so a timeout can kill the whole process group
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return CommandResult(command, None, "", "", timed_out=True)
        return CommandResult(
            command,
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
        )

    async def _close(self) -> None:
        return None


def _write_all(fd: int, chunk: memoryview) -> None:
    while chunk:
        written = os.write(fd, chunk)
        chunk = chunk[written:]


def _hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


# errno → (what failed, transient?). Local failures are never transient: retrying a full disk
# or a read-only mount cannot help.
_ERRNO_WHAT = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied (operation not permitted)",
    errno.EROFS: "permission denied (read-only file system)",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EEXIST: "file exists",
}


class LocalTarget(Target):
    """A directory on this machine."""

    def __init__(self, root: str, *, label: str | None = None) -> None:
        super().__init__(Path(root).as_uri() if os.path.isabs(root) else root, root, label)

    async def connect(self) -> Session:
        return LocalSession(self)

    def raw_errors(self) -> tuple[type[BaseException], ...]:
        return (OSError,)

    async def explain(self, exc: BaseException, session: Session | None) -> Failure:
        if isinstance(exc, OSError):
            what = _ERRNO_WHAT.get(exc.errno or 0, "filesystem error")
            detail = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            return Failure(TransportError(self.fail(what, session, detail)), transient=False)
        return Failure(  # pragma: no cover - raw_errors() only lists OSError
            TransportError(self.fail("unexpected error", session, str(exc))), transient=False
        )
