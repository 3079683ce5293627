"""Writing files where someone else may write too: exclusive temp files, atomic replace, locks.

Deploy targets, output directories and state directories can be shared with other users. There a
predictable temp name opened without ``O_EXCL`` and ``O_NOFOLLOW`` lets a local user plant a
symlink and make us overwrite a file of their choosing, and a killed writer leaves its temp file
behind. Every file edge-sdk writes goes through :func:`atomic_write` (or :func:`replacing` when
it streams), which avoids both. The directory is resolved once: it is opened first, and the
temp file, its rename and its cleanup all act on that descriptor (``dir_fd=``), so swapping a
path component for a symlink mid-write cannot move the write elsewhere; the renamed file is
checked by identity (``st_dev``/``st_ino``) to be the one we wrote. The locks are file locks
between processes and :class:`ForkSafeLock`, a thread lock a forked child gets back unheld.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import secrets
import stat
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _no_follow() -> int:
    return getattr(os, "O_NOFOLLOW", 0)


#: Opening the directory a file is written in: resolved once, here; everything after acts on
#: the descriptor, so no later step can land in another directory.
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


class FileSwapped(OSError):
    """A file we created was replaced under its name by someone else who can write in its
    directory, between our write and the rename (or the rename put someone else's file in
    place). Nothing of theirs was trusted; ``strerror`` says what happened."""


def _trusted_link(link: Path) -> bool:
    """Whether symlink ``link`` can only have been put there by root or by us: owned by one of
    them, in a directory owned by one of them that nobody else can write (or sticky, like /tmp,
    where others cannot replace what is not theirs). /tmp -> /private/tmp on macOS, or a state
    directory linked to a data partition, are; a link another user could have swapped in is not.
    """
    trusted = {0, os.geteuid()}
    try:
        info, parent = os.lstat(link), os.stat(link.parent)
    except OSError:
        return False
    others_write = parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX
    return (
        stat.S_ISLNK(info.st_mode)
        and info.st_uid in trusted
        and parent.st_uid in trusted
        and not others_write
    )


def open_dir(directory: Path) -> int:
    """A descriptor of ``directory``, to create, rename and unlink in it with ``dir_fd=``.

    ``directory`` itself is not followed if it is a symlink, unless only root or we could have
    put that link there (:func:`_trusted_link`): someone who can write in its parent could
    otherwise swap it for a link to a directory of their choosing just before we open it.

    Raises:
        OSError: ``directory`` cannot be opened; ``ELOOP`` for a symlink someone else could
            have planted (``strerror`` says so).
    """
    try:
        return os.open(directory, _DIR_FLAGS | _no_follow())
    except OSError as exc:
        # Linux says ENOTDIR for O_DIRECTORY | O_NOFOLLOW on a link to a directory, BSDs ELOOP.
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not os.path.islink(directory):
            raise
    if not _trusted_link(directory):
        raise OSError(
            errno.ELOOP,
            "the directory is a symlink another user could have put there (refusing to follow "
            "it; name the real directory)",
            str(directory),
        )
    return os.open(directory, _DIR_FLAGS)


def identity(info: os.stat_result) -> tuple[int, int]:
    """What names one file whatever it is called: ``(st_dev, st_ino)``."""
    return info.st_dev, info.st_ino


def is_same_file(dir_fd: int, name: str, expected: tuple[int, int]) -> bool:
    """Whether ``name`` in ``dir_fd`` is (still) the file ``expected`` identifies (no follow)."""
    try:
        return identity(os.stat(name, dir_fd=dir_fd, follow_symlinks=False)) == expected
    except OSError:
        return False


def _swapped(path: Path, what: str) -> FileSwapped:
    return FileSwapped(
        errno.EAGAIN, f"{what} was replaced by another writer in its directory", str(path)
    )


def create_exclusive(dir_fd: int, name: str, mode: int = 0o600) -> tuple[int, str]:
    """An exclusive, unpredictable temp file for ``name`` in ``dir_fd``: ``(fd, temp name)``.

    ``O_CREAT | O_EXCL | O_NOFOLLOW`` with a random name: in a directory someone else can write,
    a predictable name opened without these flags lets them point it (by symlink) at a file of
    their choosing and have us overwrite it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _no_follow() | getattr(os, "O_CLOEXEC", 0)
    for _ in range(16):
        tmp = f".{name}.tmp-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, flags, mode, dir_fd=dir_fd)
        except FileExistsError:  # pragma: no cover - 64 random bits colliding
            continue
        return fd, tmp
    raise FileExistsError(f"no free temp name beside {name}")  # pragma: no cover


def commit_temp(
    dir_fd: int, tmp: str, name: str, ours: tuple[int, int], *, replace: bool = True
) -> None:
    """Rename (or, without ``replace``, link) temp file ``tmp`` to ``name``, both in ``dir_fd``,
    only if ``tmp`` still is the file ``ours`` identifies, and check afterwards that ``name`` is.

    rename(2) takes names, not descriptors, so someone who can write in the directory could swap
    another file in under ``tmp`` after we wrote and checked ours. The identity is compared
    before the rename (the usual case is refused with nothing changed) and after it (a swap
    inside that last window is caught: ``name`` is then not ours and we say so instead of
    reporting success). Either way :class:`FileSwapped` is raised; what they swapped in is
    never reported as written by us.

    Raises:
        FileSwapped: ``tmp`` or, after the rename, ``name`` is not our file.
        FileExistsError: ``replace=False`` and ``name`` exists.
    """
    if not is_same_file(dir_fd, tmp, ours):
        raise _swapped(Path(tmp), "the temp file")
    if replace:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    else:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        unlink_if_same(dir_fd, tmp, ours)
    if not is_same_file(dir_fd, name, ours):
        raise _swapped(Path(name), "the file just written")


def unlink_if_same(dir_fd: int, name: str, ours: tuple[int, int]) -> None:
    """Remove ``name`` from ``dir_fd`` if it is our file (cleanup never removes theirs on
    purpose; a swap inside this check-then-unlink only removes a file in a directory they can
    write anyway)."""
    if is_same_file(dir_fd, name, ours):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


@contextlib.contextmanager
def replacing(
    path: Path, mode: int = 0o644, *, replace: bool = True, exact_mode: bool = False
) -> Iterator[BinaryIO]:
    """Stream a new file that becomes ``path`` when the ``with`` block ends without an error.

    Everything happens in the one directory opened at the start (see :func:`open_dir`): the
    exclusive random temp file (:func:`create_exclusive`), its fsync, the checked rename
    (:func:`commit_temp`) and the directory's fsync. A symlink planted at ``path`` is replaced,
    never followed. With ``replace=False`` an existing ``path`` (a symlink too) is left alone and
    :class:`FileExistsError` raised. ``exact_mode`` sets ``mode`` whatever the umask (private
    keys); otherwise the umask applies, as for any new file. On an error the temp file is
    removed.

    Raises:
        FileExistsError: ``replace=False`` and ``path`` exists.
        FileSwapped: another writer in the directory replaced our file before it was in place.
        OSError: the directory cannot be written.
    """
    dir_fd = open_dir(path.parent)
    try:
        fd, tmp = create_exclusive(dir_fd, path.name, mode)
        ours = identity(os.fstat(fd))
        try:
            with os.fdopen(fd, "wb") as handle:
                if exact_mode:
                    os.fchmod(handle.fileno(), mode)
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            commit_temp(dir_fd, tmp, path.name, ours, replace=replace)
        except BaseException:
            unlink_if_same(dir_fd, tmp, ours)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temps(path: Path) -> None:
    """Remove temp files a killed writer of ``path`` left behind (call it under the writers'
    lock, so no live writer's temp can be among them)."""
    prefix = f".{path.name}.tmp-"
    with contextlib.suppress(OSError):
        dir_fd = open_dir(path.parent)
        try:
            for stale in os.listdir(dir_fd):
                if stale.startswith(prefix):
                    with contextlib.suppress(OSError):
                        os.unlink(stale, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write(
    path: Path, data: bytes, mode: int = 0o644, *, replace: bool = True, exact_mode: bool = False
) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix.

    See :func:`replacing`: one directory descriptor for the temp file, the checked rename and
    the fsyncs; a symlink planted at ``path`` is replaced, never followed; ``replace=False``
    never replaces an existing ``path``.

    Raises:
        FileExistsError: ``replace=False`` and ``path`` exists.
        FileSwapped: another writer in the directory replaced our file before it was in place.
        OSError: the directory cannot be written.
    """
    with replacing(path, mode, replace=replace, exact_mode=exact_mode) as handle:
        handle.write(data)


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


#: How a file that is not a regular one is named in messages ("x.litertlm is a FIFO, not a
#: regular file"), by ``stat`` type test.
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symlink"),
)


def file_kind(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words: ``a regular file``, ``a FIFO``,
    ``a character device``, ``a block device``, ``a socket``, ``a directory``, ``a symlink``."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "a special file")


class NotARegularFile(OSError):
    """What :func:`open_regular` (and :func:`read_capped`) raise for a FIFO, device, socket or
    (with ``follow_symlinks=False``) symlink; ``strerror`` says which, e.g. ``a FIFO, not a
    regular file``."""


class FileTooLarge(OSError):
    """What :func:`read_capped` raises for a file over its cap."""


def _refuse_special(path: str | os.PathLike[str], mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", os.fspath(path))
    if not stat.S_ISREG(mode):
        raise NotARegularFile(
            errno.EINVAL, f"{file_kind(mode)}, not a regular file", os.fspath(path)
        )


def open_regular(
    path: str | os.PathLike[str], *, follow_symlinks: bool = True
) -> io.BufferedReader:
    """Open a user-given file for reading, refusing anything but a regular file.

    A FIFO blocks ``open`` until a writer comes (forever, if none does), and ``/dev/zero`` or
    ``/dev/urandom`` never reach the end of file; a socket cannot be opened at all. So the path is
    judged twice: by ``stat`` before it is opened (a device node is never opened: opening some,
    a watchdog or a tape, does something), and by ``fstat`` of what was opened, non-blocking, so
    a FIFO swapped in between is refused too instead of blocking the open. The returned file is
    blocking again, as any ``open(path, "rb")`` is.

    Raises:
        FileNotFoundError, PermissionError, OSError: as ``open`` does.
        IsADirectoryError: a directory.
        NotARegularFile: a FIFO, device or socket (or a symlink, with ``follow_symlinks=False``);
            ``strerror`` says which.
    """
    _refuse_special(path, os.stat(path, follow_symlinks=follow_symlinks).st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= _no_follow()
    fd = os.open(path, flags)
    try:
        _refuse_special(path, os.fstat(fd).st_mode)
        os.set_blocking(fd, True)
        return io.open(fd, "rb")  # noqa: UP020  (typed as a BufferedReader, unlike os.fdopen)
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: Path, cap: int, *, follow_symlinks: bool = True) -> bytes:
    """A small file's bytes (a key, a PIN, a config), refusing what is not one.

    The file is opened by :func:`open_regular` (a FIFO or a device is refused, never waited on
    or read forever), and at most ``cap + 1`` bytes are read, so a huge file costs no memory.
    Both refusals are :class:`OSError` subclasses whose ``strerror`` says why, so an
    ``except OSError`` that reports ``exc.strerror`` reports them too.

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError, OSError: as ``open`` does.
        NotARegularFile: a FIFO, device or socket (or a symlink, with ``follow_symlinks=False``).
        FileTooLarge: more than ``cap`` bytes.
    """
    with open_regular(path, follow_symlinks=follow_symlinks) as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise FileTooLarge(errno.EFBIG, f"larger than {cap:,} bytes", str(path))
    return data
