"""Large writable buffers without paying for a zero-fill first.

``bytearray(n)`` memsets all ``n`` bytes before a single one is used (36 ms per 100 MB here, on
one core, before any real work starts). An anonymous ``mmap`` is zero-on-demand: its pages are
faulted in by whoever writes them first — the file read or the decryption that fills the buffer
anyway — while the hashing worker runs on the other core. It is ordinary process memory, never a
file on disk.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import sys
from typing import Any, Union

MMAP_THRESHOLD = 1024 * 1024

#: Anything edge-sdk reads bytes from: bundle files in memory, decrypted models.
Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]  # noqa: UP007 - a runtime alias on 3.10


def alloc_buffer(size: int) -> bytearray | mmap.mmap:
    """A writable buffer of ``size`` bytes; callers slice it through ``memoryview``."""
    if size < MMAP_THRESHOLD:
        return bytearray(size)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        # 2 MiB pages where the kernel allows them (THP in "madvise" mode): a 100 MB buffer
        # takes ~50 page faults instead of ~25,000.
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer


def writable_bytes(size: int) -> tuple[bytes, memoryview]:
    """A new ``bytes`` object of ``size`` bytes and a writable view of its storage.

    The interpreter only accepts ``bytes``, and copying a decrypted model from a scratch buffer
    into one costs a full pass plus page faults (42 ms per 100 MB here). CPython's C API allows a
    bytes object made by ``PyBytes_FromStringAndSize(NULL, n)`` to be filled in place before it is
    shared; this does exactly that through ``ctypes.pythonapi``. The caller must finish writing
    before the object is used as bytes by anything (hashing it, passing it on). On other Python
    implementations it falls back to a scratch buffer and one copy (see :func:`freeze`).
    """
    import ctypes
    import sys

    if sys.implementation.name != "cpython" or size < MMAP_THRESHOLD:
        scratch = bytearray(size)
        return b"", memoryview(scratch)
    new, as_string = _bytes_api()
    obj = new(None, size)
    address = as_string(obj)
    _advise_huge_pages(address, size)
    storage = (ctypes.c_char * size).from_address(address)
    # A from_address array does not own its memory; tie the bytes object's lifetime to it (and
    # so to every view of it) so no view can outlive the storage it points into.
    storage._edge_sdk_owner = obj  # type: ignore[attr-defined]
    view = memoryview(storage).cast("B")
    return obj, view


@functools.cache
def _bytes_api() -> tuple[Any, Any]:
    """``PyBytes_FromStringAndSize`` and ``PyBytes_AsString`` as prototypes of our own.

    Setting ``restype``/``argtypes`` on ``ctypes.pythonapi``'s attributes would change them for
    every other user of ``ctypes.pythonapi`` in the process (and race them across threads).
    """
    import ctypes

    api = ctypes.pythonapi
    new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)(
        ("PyBytes_FromStringAndSize", api)
    )
    as_string = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object)(("PyBytes_AsString", api))
    return new, as_string


def _advise_huge_pages(address: int, size: int) -> None:
    """Ask for transparent huge pages on the 2 MiB-aligned part of ``[address, address+size)``.

    Best effort: where the kernel or libc says no, ordinary pages are used.
    """
    import ctypes

    huge = 2 * 1024 * 1024
    start = -(-address // huge) * huge
    end = (address + size) // huge * huge
    if end <= start or not hasattr(mmap, "MADV_HUGEPAGE"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    libc.madvise(start, end - start, mmap.MADV_HUGEPAGE)


#: Linux's madvise(2) advice that faults pages in, writable, without changing their contents
#: (Linux 5.14 and later; older kernels refuse it, and nothing is populated in advance).
MADV_POPULATE_WRITE = 23


def populate(obj: bytes) -> None:
    """Fault in the pages of a buffer from :func:`writable_bytes` ahead of the thread filling it.

    A new buffer's pages are allocated and zeroed by the kernel when first written — ~1 ms per MB
    here, paid by whoever writes first. Run on another core while the caller reads, hashes and
    decrypts, this takes that cost off the caller's path. The contents are never changed (pages
    already written are left as they are), so it may race the writer. Best effort: a kernel
    without ``MADV_POPULATE_WRITE`` or a buffer that is not a :func:`writable_bytes` object
    gets nothing done.
    """
    import ctypes
    import sys

    if sys.platform != "linux" or len(obj) < MMAP_THRESHOLD:
        return
    address = _bytes_api()[1](obj)
    start = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE
    end = (address + len(obj)) // mmap.PAGESIZE * mmap.PAGESIZE
    if end > start:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.madvise(start, end - start, MADV_POPULATE_WRITE)


def freeze(obj: bytes, view: memoryview) -> bytes:
    """The filled bytes from :func:`writable_bytes` (copying only on the fallback path)."""
    result = obj if len(obj) == len(view) else bytes(view)
    view.release()
    return result


def wipe(view: memoryview) -> None:
    """Overwrite a writable buffer with zeros (plaintext of a bundle that was refused).

    Nothing of a refused bundle is ever handed out; wiping what was decrypted before the refusal
    keeps it from lingering in freed heap memory either.
    """
    zeros = bytes(min(len(view), 1 << 20))
    for at in range(0, len(view), len(zeros) or 1):
        end = min(at + len(zeros), len(view))
        view[at:end] = zeros[: end - at]


_PR_SET_DUMPABLE = 4


@functools.cache
def keep_out_of_dumps() -> bool:
    """Keep this process's memory out of core dumps and away from other processes of its user,
    once, before a model is decrypted: a core dump would write the plaintext model (and an LLM's
    packed weights) to disk, and while dumpable, any process of the same user can open
    ``/proc/<pid>/fd/N`` of a memory file read-write and change a model between its hash and its
    seal.

    Three settings, as each covers what the others miss: ``prctl(PR_SET_DUMPABLE, 0)`` (no
    ptrace, no ``/proc/<pid>/fd`` or ``mem`` for other processes but root); ``RLIMIT_CORE`` 0
    (a core handler such as systemd-coredump, which the kernel still calls for a non-dumpable
    process where ``fs.suid_dumpable`` is 2, skips the dump); ``coredump_filter`` 0 (no mapping
    is dumped even so). Whether the first took effect (False off Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import resource

    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError), open("/proc/self/coredump_filter", "w") as f:
        f.write("0")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
