"""Writing files where someone else may write too: exclusive temp files, atomic replace, locks.

Deploy targets, output directories and state directories can be shared with other users. There a
predictable temp name opened without ``O_EXCL`` and ``O_NOFOLLOW`` lets a local user plant a
symlink and make us overwrite a file of their choosing, and a killed writer leaves its temp file
behind. Every file edge-sdk writes goes through :func:`atomic_write` (or :func:`temp_beside` when
it streams), which avoids both. The locks are file locks between processes and
:class:`ForkSafeLock`, a thread lock a forked child gets back unheld.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path


def _no_follow() -> int:
    return getattr(os, "O_NOFOLLOW", 0)


def temp_beside(path: Path, mode: int = 0o600) -> tuple[int, Path]:
    """An exclusive, unpredictable temp file in ``path``'s directory: ``(fd, temp path)``.

    ``O_CREAT | O_EXCL | O_NOFOLLOW`` with a random name: in a directory someone else can write,
    a predictable name opened without these flags lets them point it (by symlink) at a file of
    their choosing and have us overwrite it.
    """
    for _ in range(16):
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _no_follow(), mode)
        except FileExistsError:  # pragma: no cover - 64 random bits colliding
            continue
        return fd, tmp
    raise FileExistsError(f"no free temp name beside {path}")  # pragma: no cover


def remove_stale_temps(path: Path) -> None:
    """Remove temp files a killed writer of ``path`` left behind (call it under the writers'
    lock, so no live writer's temp can be among them)."""
    with contextlib.suppress(OSError):
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            with contextlib.suppress(OSError):
                stale.unlink()


def atomic_write(
    path: Path, data: bytes, mode: int = 0o644, *, replace: bool = True, exact_mode: bool = False
) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix.

    The data goes to an exclusive random temp file beside ``path`` (see :func:`temp_beside`),
    is fsynced, and is renamed over ``path``; then the directory is fsynced. A symlink planted
    at ``path`` is replaced, never followed. With ``replace=False`` an existing ``path`` (a
    symlink too) is left alone and :class:`FileExistsError` raised: the temp file is linked to
    the name, which fails rather than overwrite. ``exact_mode`` sets ``mode`` whatever the
    umask (private keys); otherwise the umask applies, as for any new file.

    Raises:
        FileExistsError: ``replace=False`` and ``path`` exists.
        OSError: the directory cannot be written.
    """
    fd, tmp = temp_beside(path, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if exact_mode:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path, follow_symlinks=False)
            tmp.unlink()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (created if needed)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _no_follow(), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            # Unlock before closing: a child forked while the lock was held shares this open
            # file (and so the lock); only LOCK_UN releases it for both, a close does not.
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class ForkSafeLock:
    """A process-wide thread lock that a forked child gets fresh (unheld).

    When one thread forks while another holds a module's lock mid-call (a PKCS#11 or TPM
    operation, a known_hosts update), the child inherits the lock held by a thread it does not
    have: nothing ever releases it and the child's first call hangs. What these locks guard is
    opened per call or re-initialized per process (a token session, an ESAPI context), so a fresh
    lock is all the child needs. Use it as a context manager, like :class:`threading.Lock`.
    """

    def __init__(self, *, reentrant: bool = False) -> None:
        self._reentrant = reentrant
        self._lock = self._new()
        _FORK_SAFE_LOCKS.add(self)

    def _new(self) -> threading.Lock | threading.RLock:
        return threading.RLock() if self._reentrant else threading.Lock()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        self._lock = self._new()


_FORK_SAFE_LOCKS: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for lock in list(_FORK_SAFE_LOCKS):
        lock._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks_in_child)


class NotARegularFile(OSError):
    """What :func:`read_capped` raises for a FIFO, device, socket or directory."""


class FileTooLarge(OSError):
    """What :func:`read_capped` raises for a file over its cap."""


def read_capped(path: Path, cap: int, *, follow_symlinks: bool = True) -> bytes:
    """A small file's bytes (a key, a PIN, a config), refusing what is not one.

    The file is opened non-blocking (a FIFO would otherwise block the open forever), must be a
    regular file (``fstat``), and at most ``cap + 1`` bytes are read, so a huge file costs no
    memory. Both refusals are :class:`OSError` subclasses whose ``strerror`` says why, so an
    ``except OSError`` that reports ``exc.strerror`` reports them too.

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError, OSError: as ``open`` does.
        NotARegularFile: a FIFO, device or socket (or a symlink, with ``follow_symlinks=False``).
        FileTooLarge: more than ``cap`` bytes.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= _no_follow()
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
        chunks, left = [], cap + 1
        while left > 0:
            piece = os.read(fd, min(left, 1 << 16))
            if not piece:
                break
            chunks.append(piece)
            left -= len(piece)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > cap:
        raise FileTooLarge(errno.EFBIG, f"larger than {cap:,} bytes", str(path))
    return data
