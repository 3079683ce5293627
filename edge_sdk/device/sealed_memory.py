"""Decrypted models in sealed anonymous memory, for runtimes that only open files by path.

LiteRT-LM (and LiteRT's ``model_path=``) open a model by path and map it. Writing plaintext to
a file for them would break the first rule of edge-sdk (decrypted models never touch disk); a
Python ``bytes`` cannot be handed to them at all. A Linux memory file (``memfd_create``) can: it
lives in RAM only, has no name in any filesystem, and ``/proc/self/fd/N`` opens it like a file.

:class:`SealedMemory` is written once, through one shared mapping, by the open pipeline
(:func:`edge_sdk.format.verify.open_payload` takes it as its ``sink``). Only after every check of
docs/FORMAT.md has passed does :meth:`SealedMemory.seal` drop that mapping and add the seals
``F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL``: from then on nobody — not this
process, not the runtime, not a library holding the descriptor — can change a byte or the size,
and the seals themselves cannot be removed. The runtime then maps the same pages read-only: one
copy of the model in RAM.

Memory is reserved up front with ``posix_fallocate``: a memory file that cannot get its pages
later (a memory cgroup or tmpfs limit) would kill the process with SIGBUS in the middle of
decryption, while a refused reservation is a typed error before a byte is decrypted.

Wiping: a refused model is zeroed through the writable mapping before the file is closed. A
sealed one cannot be written by design (that is what the write seal means); closing its last
descriptor and mapping returns its pages to the kernel, which zero-fills every page before it
hands it to anyone again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import mmap
import os
import sys
import time
import weakref
from collections.abc import Iterator

from edge_sdk.errors import SealedMemoryError
from edge_sdk.format.memory import wipe

#: The largest model a memory file is made for (the bundle reader's own caps are lower by default).
MAX_SEALED_BYTES = 64 * 1024**3
#: The seals added once every check has passed (see the module docstring).
SEALS = ("F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE", "F_SEAL_SEAL")
_NAME = "edge-sdk-model"


#: Tries of F_ADD_SEALS after EBUSY, and the pause between them (the kernel waits ~75 ms itself).
_SEAL_ATTEMPTS = 4
_SEAL_RETRY_SECONDS = 0.05


#: Memory files being written (not sealed yet): a forked child drops them (see _drop_in_child).
_WRITING: weakref.WeakSet[SealedMemory] = weakref.WeakSet()


def _drop_in_child() -> None:
    """In a child forked while a model is being written: close that memory file's descriptor.
    The writable mapping is not inherited (MADV_DONTFORK), but the descriptor is (close-on-exec
    acts on exec only), and pwrite through it needs no mapping: a child could change the model
    after its hash was taken, before the parent seals it."""
    writing = list(_WRITING)
    if not writing:
        return
    # Every descriptor of those files: ours, and the one Python's mmap object dups for itself.
    files = {(st.st_dev, st.st_ino) for m in writing for st in _fstat(m._fd)}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if any((st.st_dev, st.st_ino) in files for st in _fstat(fd)):
                with contextlib.suppress(OSError):
                    os.close(fd)
    for memory in writing:
        memory._fd, memory._view, memory._map = -1, None, None


def _fstat(fd: int) -> list[os.stat_result]:
    try:
        return [os.fstat(fd)]
    except OSError:
        return []


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_in_child)


def _seal_bits() -> int:
    bits = 0
    for name in SEALS:
        bits |= getattr(fcntl, name)
    return bits


@functools.cache
def unavailable_reason() -> str | None:
    """Why sealed memory cannot be used here, or ``None`` when it can (for ``doctor``).

    Beyond the Python and the platform, the kernel is asked once, on a one-byte memory file:
    a seccomp filter, an emulator (qemu-user) or an old kernel can refuse memfd or its seals,
    and that must be known before a model is decrypted, not after.
    """
    if not sys.platform.startswith("linux"):
        return f"memfd_create is Linux-only (this is {sys.platform})"
    if not hasattr(os, "memfd_create") or not hasattr(os, "MFD_ALLOW_SEALING"):
        return "this Python has no os.memfd_create with sealing"
    if not all(hasattr(fcntl, name) for name in (*SEALS, "F_ADD_SEALS", "F_GET_SEALS")):
        return "this Python's fcntl module has no file-sealing constants"
    if not os.path.isdir("/proc/self/fd"):
        return "/proc is not mounted, so a memory file cannot be opened by path"
    try:
        fd = os.memfd_create(_NAME + "-probe", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as exc:
        return f"the kernel refuses memfd_create ({os.strerror(exc.errno or 0)})"
    try:
        os.write(fd, b"\0")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _seal_bits())
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _seal_bits() != _seal_bits():
            return "the kernel does not keep a memory file's seals"
        with open(f"/proc/self/fd/{fd}", "rb") as reopened:
            if reopened.read(2) != b"\0":
                return "a memory file does not read back through /proc/self/fd"
    except OSError as exc:
        return f"the kernel refuses to seal a memory file ({os.strerror(exc.errno or 0)})"
    finally:
        os.close(fd)
    return None


class SealedMemory:
    """One model's bytes in a Linux memory file: written once, sealed, then opened by path.

    Use it as the ``sink`` of :func:`edge_sdk.format.verify.open_payload`, then :meth:`seal`, then
    hand :attr:`path` to the runtime; :meth:`close` (or ``with``) releases it.

    Raises:
        SealedMemoryError: memfd is unavailable here, the size is out of bounds, the kernel
            refuses the memory or the seals.
    """

    def __init__(self, max_bytes: int = MAX_SEALED_BYTES, *, min_bytes: int = 0) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise SealedMemoryError(
                f"sealed memory is unavailable: {reason}",
                hint="LLM bundles need Linux with /proc (kernel 3.17+) memfd sealing; .tflite "
                "bundles load from a bytes with edge_sdk.load where it is missing",
            )
        self.max_bytes = min(max_bytes, MAX_SEALED_BYTES)
        #: Models smaller than this are declined (:meth:`allocate` returns ``None``): see
        #: :data:`edge_sdk.device.runtime.SEALED_MIN_BYTES` for why small ones go to a bytes.
        self.min_bytes = min_bytes
        self.size = 0
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._sealed = False
        #: The write seal the kernel took (always ``F_SEAL_WRITE``); empty until sealed.
        self.write_seal = ""

    # -- writing -------------------------------------------------------------------------------

    def allocate(self, size: int) -> memoryview | None:
        """A writable view of a new memory file of ``size`` bytes (called once, by the pipeline),
        or ``None`` for a model under :attr:`min_bytes`, which is then not held here."""
        if self._fd >= 0:
            raise SealedMemoryError("this sealed memory already holds a model")
        if size < self.min_bytes:
            return None
        if not 0 < size <= self.max_bytes:
            raise SealedMemoryError(
                f"a {size}-byte model does not fit sealed memory (1 to {self.max_bytes} bytes)"
            )
        flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
        try:
            self._fd = os.memfd_create(_NAME, flags)
        except OSError as exc:
            raise SealedMemoryError(f"memfd_create failed: {os.strerror(exc.errno or 0)}") from None
        _WRITING.add(self)  # from its first moment: a fork during fallocate is a fork too
        try:
            os.ftruncate(self._fd, size)
            os.posix_fallocate(self._fd, 0, size)
            self._map = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED,
                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)  # fmt: skip
            # A child forked while the model is written must not inherit a writable mapping of
            # it: it could write through it after the checks, and F_SEAL_WRITE would be EBUSY.
            self._map.madvise(mmap.MADV_DONTFORK)
        except OSError as exc:
            self.close()
            hint = (
                "free memory, raise the memory limit, or use a board with more RAM"
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG)
                else None
            )
            raise SealedMemoryError(
                f"cannot reserve {size} bytes of sealed memory: {os.strerror(exc.errno or 0)}",
                hint=hint,
            ) from None
        self.size = size
        self._view = memoryview(self._map)
        return self._view

    def seal(self) -> str:
        """Drop the writable mapping and seal the file against writes and resizing; its path.

        Call only once every check has passed. ``F_SEAL_WRITE`` needs that no writable shared
        mapping is left, so every view handed out by :meth:`allocate` must have been released.
        """
        if self._fd < 0 or self._map is None:
            raise SealedMemoryError("nothing to seal: no model was written to sealed memory")
        if self._view is not None:
            self._view.release()
            self._view = None
        try:
            self._map.close()
        except BufferError:
            raise SealedMemoryError(
                "a view of the decrypted model is still in use; it cannot be sealed"
            ) from None
        self._map = None
        try:
            self.write_seal = self._add_seals()
            _WRITING.discard(self)
        except SealedMemoryError:
            self._wipe_unsealed()
            self.close()
            raise
        self._sealed = True
        return self.path

    def _add_seals(self) -> str:
        """Add the seals (the write seal is always ``F_SEAL_WRITE``); its name.

        ``F_SEAL_WRITE`` is refused with EBUSY while the kernel counts a reference to one of the
        file's pages beyond its mappings' own: a writable mapping (ours is closed by now, and a
        forked child never inherits it: ``MADV_DONTFORK``), a page pinned for I/O or held by a
        pipe after ``splice``, or one that compaction or another core's LRU batch holds for a
        moment. The kernel already waits a little; a few more tries cover the passing cases.
        What stays is refused: ``F_SEAL_FUTURE_WRITE`` would seal around it, but leaves every
        existing mapping and pin able to write — in this process or another — which is exactly
        what the seal must rule out.
        """
        for attempt in range(_SEAL_ATTEMPTS):
            try:
                fcntl.fcntl(self._fd, fcntl.F_ADD_SEALS, _seal_bits())
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise SealedMemoryError(
                        f"the kernel refused to seal the model: {os.strerror(exc.errno or 0)}"
                    ) from None
                if attempt == _SEAL_ATTEMPTS - 1:
                    raise SealedMemoryError(
                        "the kernel refused to seal the model: a page of it is still mapped "
                        "writable or referenced (EBUSY)",
                        hint="nothing else in this process may map, splice or do direct I/O "
                        "on the model's memory file before it is sealed; load it again",
                    ) from None
                time.sleep(_SEAL_RETRY_SECONDS)
        if fcntl.fcntl(self._fd, fcntl.F_GET_SEALS) & _seal_bits() != _seal_bits():
            raise SealedMemoryError("the model's memory file is not sealed after F_ADD_SEALS")
        return "F_SEAL_WRITE"

    def _wipe_unsealed(self) -> None:
        """Zero a model that could not be sealed (it is still writable through its descriptor)."""
        zeros = bytes(1024 * 1024)
        with contextlib.suppress(OSError):
            for offset in range(0, self.size, len(zeros)):
                os.pwrite(self._fd, zeros[: self.size - offset], offset)

    # -- using ---------------------------------------------------------------------------------

    @property
    def holds_model(self) -> bool:
        """Whether a model was written here (not declined as too small)."""
        return self._fd >= 0

    @property
    def sealed(self) -> bool:
        return self._sealed

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def path(self) -> str:
        """``/proc/self/fd/N``: the sealed model, for a runtime that opens files by path."""
        if not self._sealed:
            raise SealedMemoryError("the model is not sealed yet; it must not reach the runtime")
        return f"/proc/self/fd/{self._fd}"

    @contextlib.contextmanager
    def readonly(self) -> Iterator[memoryview]:
        """A read-only view of the sealed model, for parsing it in place (no copy)."""
        if not self._sealed:
            raise SealedMemoryError("the model is not sealed yet; it must not be read")
        mapping = mmap.mmap(self._fd, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        view = memoryview(mapping)
        try:
            yield view
        finally:
            # A parser may still hold a slice of it; the mapping then goes with the last one.
            with contextlib.suppress(BufferError):
                view.release()
                mapping.close()

    def close(self) -> None:
        """Wipe (if still writable) and release the memory file. Idempotent."""
        _WRITING.discard(self)
        if self._view is not None:
            wipe(self._view)  # never sealed: a refused (or abandoned) model
            self._view.release()
            self._view = None
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still exists; it keeps the mapping
                self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._sealed = False

    def __len__(self) -> int:
        return self.size

    def __enter__(self) -> SealedMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            self.close()

    def __repr__(self) -> str:
        state = "sealed" if self._sealed else "open" if self._fd >= 0 else "closed"
        return f"<SealedMemory {self.size} bytes, memfd {state}>"
