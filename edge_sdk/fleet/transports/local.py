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
import posixpath
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

from edge_sdk.errors import TransportError
from edge_sdk.files import FileSwapped, identity, is_same_file

from .base import (
    CommandResult,
    Entry,
    EntryKind,
    Failure,
    Session,
    Target,
    UploadProgress,
    check_relpath,
    source_pieces,
)

#: What a refused rename of a swapped upload says.
_SWAPPED = "our upload was replaced under its name by another file (refusing to install it)"

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


#: Opening a directory below the root: never through a symlink (ELOOP), never a non-directory.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Opening a file below the root: never through a symlink at its own name either.
_FILE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class LocalSession(Session):
    """Primitive operations on a local directory tree, through directory file descriptors.

    A local user who can write inside the root could swap ``releases/`` for a symlink between
    a check and the call that trusted it. So no call here takes a path below the root: every
    operation walks down from the root's descriptor one component at a time with
    ``O_NOFOLLOW | O_DIRECTORY`` and acts on the last name with ``dir_fd=`` (openat, renameat,
    unlinkat, symlinkat, readlinkat). A symlink anywhere on the way fails that operation
    (ELOOP / ENOTDIR, a typed TransportError); there is no earlier check to go stale.
    """

    def __init__(self, target: LocalTarget) -> None:
        super().__init__(target)
        self._root_fd: int | None = None
        # Directories (relative to the root) whose entries changed since the last sync();
        # fsyncing just these is far cheaper than os.sync(), which flushes every filesystem.
        self._dirty: set[str] = set()
        # Files this session uploaded, by their temp name, with the descriptor they were
        # written through: hashed through it and renamed only while the name is still that
        # file (see _rename), so a file swapped in under the temp name is never installed.
        self._held: dict[str, int] = {}

    # -- walking below the root ------------------------------------------------------------

    def _root(self) -> int:
        # The root itself is the operator's choice (it may be a symlink, e.g. a mount point):
        # it is followed once, on first use, and everything below is reached through this
        # descriptor. Opened lazily so a missing root is the deploy's own "create it" error.
        if self._root_fd is None:
            self._root_fd = os.open(self.target.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root_fd

    @contextlib.contextmanager
    def _dir(self, rel_dir: str) -> Iterator[int]:
        """A descriptor of directory ``rel_dir`` (``""``: the root), opened without following
        any symlink below the root; closed on exit."""
        fd = os.dup(self._root())
        try:
            for part in check_relpath(rel_dir).split("/") if rel_dir else ():
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _parent(self, rel: str) -> Iterator[tuple[int, str]]:
        """The descriptor of ``rel``'s directory and ``rel``'s last name in it."""
        head, _, name = check_relpath(rel).rpartition("/")
        with self._dir(head) as fd:
            yield fd, name

    def _touch(self, rel: str) -> str:
        self._dirty.add(posixpath.dirname(rel))
        return self.abspath(rel)

    # -- primitives ------------------------------------------------------------------------

    async def listdir(self, rel: str) -> list[Entry]:
        self._step(f"listing {self.abspath(rel)}")
        return await asyncio.to_thread(self._listdir, rel)

    def _listdir(self, rel: str) -> list[Entry]:
        try:
            with self._dir(rel) as fd, os.scandir(fd) as it:
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
            st = await asyncio.to_thread(self._lstat, rel)
        except FileNotFoundError:
            return None
        return Entry(os.path.basename(path), _kind(st.st_mode), st.st_size, st.st_mtime)

    def _lstat(self, rel: str) -> os.stat_result:
        if rel == "":
            return os.lstat(self.target.root)
        with self._parent(rel) as (fd, name):
            return os.stat(name, dir_fd=fd, follow_symlinks=False)

    async def makedirs(self, rel: str) -> None:
        path = self.abspath(rel)
        self._step(f"creating directory {path}", os.path.dirname(path))
        await asyncio.to_thread(self._makedirs, rel)

    def _makedirs(self, rel: str) -> None:
        fd = os.dup(self._root())
        try:
            for part in check_relpath(rel).split("/"):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)  # what exists must be a real dir
                os.close(fd)
                fd = child
        finally:
            os.close(fd)

    async def upload(
        self, data: memoryview, rel_dir: str, temp_name: str, progress: UploadProgress | None
    ) -> str:
        rel = f"{rel_dir}/{temp_name}"
        path = self._touch(rel)
        self._step(f"writing {path}", os.path.dirname(path))
        self.track_temp(rel)
        fd = await asyncio.to_thread(self._create, rel)
        self._held[rel] = fd  # closed when renamed, removed, or with the session
        for offset in range(0, len(data), CHUNK):
            chunk = data[offset : offset + CHUNK]
            await asyncio.to_thread(_write_all, fd, chunk)
            if progress:
                progress(offset + len(chunk))
        self._step(f"syncing {path}", os.path.dirname(path))
        await asyncio.to_thread(os.fsync, fd)
        return rel

    async def upload_from(
        self, source: Path, rel: str, start: int, size: int, progress: UploadProgress | None
    ) -> None:
        path = self._touch(rel)
        self._step(f"writing {path}", os.path.dirname(path))
        fd = await asyncio.to_thread(self._create if start == 0 else self._reopen, rel, start)
        try:
            for offset, piece in source_pieces(source, start, size):
                await asyncio.to_thread(_write_all, fd, memoryview(piece))
                if progress:
                    progress(offset + len(piece))
            self._step(f"syncing {path}", os.path.dirname(path))
            await asyncio.to_thread(os.fsync, fd)
        except BaseException:
            os.close(fd)
            raise
        # Held, as upload()'s: hashed through this descriptor and renamed only while the name
        # still holds this same file (a file swapped in under it after the digest is refused).
        self._release(rel)
        self._held[rel] = fd

    def _reopen(self, rel: str, start: int) -> int:
        """An earlier partial, positioned at its end: a regular file of ``start`` bytes, never
        followed through a symlink (O_NOFOLLOW) and cut back if it grew since it was checked."""
        with self._parent(rel) as (dir_fd, name):
            fd = os.open(name, os.O_RDWR | _FILE_FLAGS, dir_fd=dir_fd)  # read back: the digest
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TransportError(f"{self.abspath(rel)} is not a regular file")
            os.ftruncate(fd, start)
            os.lseek(fd, start, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create(self, rel: str, start: int = 0) -> int:
        with self._parent(rel) as (dir_fd, name):
            # O_RDWR: the digest is read back through this same descriptor.
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _FILE_FLAGS
            return os.open(name, flags, 0o644, dir_fd=dir_fd)

    def _release(self, rel: str) -> None:
        fd = self._held.pop(rel, None)
        if fd is not None:
            os.close(fd)

    async def sha256(self, rel: str) -> str:
        self._step(f"hashing {self.abspath(rel)}")
        return await asyncio.to_thread(self._hash_file, rel)

    def _open_file(self, rel: str) -> int:
        with self._parent(rel) as (dir_fd, name):
            return os.open(name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)

    def _hash_file(self, rel: str) -> str:
        digest = hashlib.sha256()
        held = self._held.get(rel)
        if held is not None:
            # Our upload: hashed through the descriptor it was written with, not by its name.
            offset = 0
            while block := os.pread(held, 1024 * 1024, offset):
                digest.update(block)
                offset += len(block)
            return digest.hexdigest()
        with open(self._open_file(rel), "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
        return digest.hexdigest()

    async def rename(self, src_rel: str, dst_rel: str) -> None:
        src, dst = self._touch(src_rel), self._touch(dst_rel)
        self._step(f"renaming {src} to {dst}", os.path.dirname(dst))
        await asyncio.to_thread(self._rename, src_rel, dst_rel)

    def _rename(self, src_rel: str, dst_rel: str) -> None:
        held = self._held.get(src_rel)
        with self._parent(src_rel) as (src_fd, src), self._parent(dst_rel) as (dst_fd, dst):
            if held is None:
                os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                return
            # rename(2) takes names: someone who can write in releases/ may have swapped
            # another file in under our temp name after it was hashed. Only our own file is
            # renamed, and the name is checked to hold it afterwards (a swap in between is
            # refused, not reported as installed).
            ours = identity(os.fstat(held))
            if not is_same_file(src_fd, src, ours):
                raise FileSwapped(errno.EAGAIN, _SWAPPED, self.abspath(src_rel))
            os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            if not is_same_file(dst_fd, dst, ours):
                raise FileSwapped(errno.EAGAIN, _SWAPPED, self.abspath(dst_rel))
        self._release(src_rel)

    async def symlink(self, link_text: str, rel: str) -> None:
        path = self._touch(rel)
        self._step(f"creating symlink {path}", os.path.dirname(path))
        await asyncio.to_thread(self._symlink, link_text, rel)

    def _symlink(self, link_text: str, rel: str) -> None:
        with self._parent(rel) as (fd, name):
            os.symlink(link_text, name, dir_fd=fd)

    async def readlink(self, rel: str) -> str | None:
        path = self.abspath(rel)
        self._step(f"reading link {path}")
        try:
            return await asyncio.to_thread(self._readlink, rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # exists but is not a symlink
                return None
            raise

    def _readlink(self, rel: str) -> str:
        with self._parent(rel) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    async def remove(self, rel: str) -> None:
        path = self._touch(rel)
        self._step(f"removing {path}", os.path.dirname(path))
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._unlink, rel)

    def _unlink(self, rel: str) -> None:
        held = self._held.get(rel)
        with self._parent(rel) as (fd, name):
            if held is not None:
                # Cleaning up our upload: never delete a file someone swapped in for it.
                ours = identity(os.fstat(held))
                self._release(rel)
                if not is_same_file(fd, name, ours):
                    return
            os.unlink(name, dir_fd=fd)

    async def read(self, rel: str, offset: int, length: int) -> bytes:
        self._step(f"reading {self.abspath(rel)}")
        return await asyncio.to_thread(self._read_range, rel, offset, length)

    def _read_range(self, rel: str, offset: int, length: int) -> bytes:
        with open(self._open_file(rel), "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    async def free_space(self, rel: str) -> int | None:
        self._step(f"checking free space on {self.abspath(rel)}")
        return await asyncio.to_thread(self._free_space, rel)

    def _free_space(self, rel: str) -> int:
        with self._dir(rel) as fd:
            st = os.fstatvfs(fd)
        return st.f_bavail * st.f_frsize

    async def sync(self) -> None:
        self._step("syncing directories")
        dirty, self._dirty = sorted(self._dirty), set()
        for rel in dirty:
            with contextlib.suppress(FileNotFoundError):  # removed since
                await asyncio.to_thread(self._fsync_dir, rel)

    def _fsync_dir(self, rel: str) -> None:
        with self._dir(rel) as fd:
            os.fsync(fd)

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
        for rel in list(self._held):
            self._release(rel)
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None


def _write_all(fd: int, chunk: memoryview) -> None:
    while chunk:
        written = os.write(fd, chunk)
        chunk = chunk[written:]


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
    errno.ELOOP: "a symlink is in the way inside the target root (refusing to follow it)",
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
        if isinstance(exc, FileSwapped):
            return Failure(
                TransportError(
                    self.fail("file replaced", session, f"{exc.strerror}: {exc.filename}"),
                    hint="someone else writes inside the target root: check who can, and deploy "
                    "again",
                ),
                transient=False,
            )
        if isinstance(exc, OSError):
            what = _ERRNO_WHAT.get(exc.errno or 0, "filesystem error")
            detail = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            return Failure(TransportError(self.fail(what, session, detail)), transient=False)
        return Failure(  # pragma: no cover - raw_errors() only lists OSError
            TransportError(self.fail("unexpected error", session, str(exc))), transient=False
        )
