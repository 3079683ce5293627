"""DEVICE: generative models (LiteRT-LM ``.litertlm``) from signed, encrypted bundles.

:func:`load_llm` runs every check of docs/FORMAT.md in its order, exactly as :func:`edge_sdk.load`
does (the same policy, audit log and anti-rollback state), but decrypts into sealed memory
(:mod:`edge_sdk.device.sealed_memory`) instead of a ``bytes``: LiteRT-LM opens models by path
only, and a ``bytes`` would be a second copy of a model of gigabytes.

Facts about litert-lm-api 0.18 that shape how the engine is opened (measured, not guessed):

- It picks the file format from the path's *extension*, so ``/proc/self/fd/N`` is refused as
  "Unsupported or unknown file format". The engine is given ``model-<random>.litertlm``, a
  symlink to ``/proc/self/fd/N`` in a fresh private (0700, random name) directory, removed as
  soon as the engine is built. The link holds no model byte; opened by any other process it
  would name that process's own descriptor. The name is new every load: LiteRT-LM remembers
  what it read of a model by path.
- By default it writes an XNNPACK weight cache (the model's weights, repacked: plaintext) beside
  the model path, named ``<model>_<mtime>_<size>.xnnpack_cache``, and maps it. Here that name is
  a symlink to a memfd: the saved cache decrypted (:mod:`edge_sdk.device.weight_cache`), or an
  empty one the engine packs into, sealed and saved encrypted afterwards. Only where the private
  directory is on a memory filesystem (tmpfs: ``$XDG_RUNTIME_DIR`` or ``/dev/shm``), so that a
  LiteRT-LM naming its cache otherwise writes it to RAM; elsewhere the engine gets
  ``cache_dir=":nocache"``. The cache matters: without it XNNPACK packs the weights into the
  process's heap, beside the model's own pages (tools/bench_llm.py: 2-2.7x the peak RSS).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import functools
import importlib
import inspect
import itertools
import logging
import math
import operator
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from edge_sdk.errors import (
    AuditLogError,
    BackendError,
    EdgeSDKError,
    InferenceInputError,
    UsageError,
    excerpt,
    install_hint,
)
from edge_sdk.format.bundle import DEFAULT_LIMITS, Bundle, Limits
from edge_sdk.format.litertlm import LLM_RUNTIME
from edge_sdk.format.manifest import Manifest
from edge_sdk.format.verify import Policy, open_verified, require_kind
from edge_sdk.keys import PrivateKey, TrustStore, load_private_key
from edge_sdk.profiles import DeviceProfile, load_profile

from .audit_log import AuditLog
from .sealed_memory import SealedMemory
from .state import VersionState, default_state_dir
from .weight_cache import WeightCacheStore

log = logging.getLogger(__name__)

#: Generated tokens per call unless the caller says otherwise.
DEFAULT_MAX_TOKENS = 256
#: The largest LLM a device accepts without a profile (a profile's RAM lowers it).
MAX_LLM_BYTES = 16 * 1024**3
#: Tell LiteRT-LM not to write its XNNPACK weight cache (repacked plaintext weights) to disk.
NO_CACHE = ":nocache"
#: Where the packed weights are kept between starts: encrypted in the state directory, or nowhere.
WEIGHT_CACHE_MODES = ("encrypted", "memory")

# -- what a caller may pass ---------------------------------------------------------------------
# LiteRT-LM hands these to C as 32-bit ints and floats without checking them: a seed or a token
# count past 2**31 wraps silently (max_tokens=10**12 generated one token), a NaN temperature
# generates nothing, a lone surrogate raises UnicodeEncodeError, a NUL ends the text its tokenizer
# sees. Every one is checked here, in the public API, and the CLI calls the same checks.

#: The longest prompt (characters) accepted: a bound on the work done before the context check.
MAX_PROMPT_CHARS = 1 << 20
#: The most tokens one call may generate (and the most ids :meth:`LanguageModel.detokenize` takes).
MAX_OUTPUT_TOKENS = 1 << 20
#: Above this temperature sampling is uniform noise; a larger value is a mistake, not a choice.
MAX_TEMPERATURE = 100.0
#: top_k of the sampler when ``temperature`` > 0 and the caller does not choose one.
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
_INT32_MAX = 2**31 - 1
#: The most engine threads accepted (each is an OS thread; no board has more cores).
MAX_THREADS = 1024


def _integer(option: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(
            f"{option} must be an integer from {low} to {high}, got {excerpt(value)}",
            hint=f"pass {option} as a whole number in that range",
        )
    return value


def _real(option: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    number = (
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    )
    if (
        number is None
        or not math.isfinite(number)
        or not (low < number if low_open else low <= number)
        or number > high
    ):
        bound = f"{'above' if low_open else 'from'} {low:g} {'up ' if low_open else ''}to {high:g}"
        raise UsageError(
            f"{option} must be a finite number {bound}, got {excerpt(value)}",
            hint=f"pass {option} as a number in that range (not nan or inf)",
        )
    return number


def check_sampling(
    *,
    max_tokens: object = DEFAULT_MAX_TOKENS,
    temperature: object = 0.0,
    seed: object = 0,
    top_k: object = None,
    top_p: object = None,
) -> None:
    """Refuse generation options LiteRT-LM would misread (see above).

    Raises:
        UsageError: ``max_tokens`` not 1..:data:`MAX_OUTPUT_TOKENS`, ``temperature`` not a
            finite 0..:data:`MAX_TEMPERATURE`, ``seed`` not 0..2**31-1, ``top_k`` not
            1..:data:`MAX_OUTPUT_TOKENS`, ``top_p`` not in (0, 1].
    """
    _integer("max_tokens", max_tokens, 1, MAX_OUTPUT_TOKENS)
    _real("temperature", temperature, 0.0, MAX_TEMPERATURE)
    _integer("seed", seed, 0, _INT32_MAX)
    if top_k is not None:
        _integer("top_k", top_k, 1, MAX_OUTPUT_TOKENS)
    if top_p is not None:
        _real("top_p", top_p, 0.0, 1.0, low_open=True)


def check_prompt(text: object, what: str = "prompt") -> str:
    """``text`` if the engine can take it as it is: a ``str`` of at most
    :data:`MAX_PROMPT_CHARS` characters that encodes as UTF-8 and holds no NUL.

    Raises:
        InferenceInputError: another type, too long, a lone surrogate (undecodable bytes from a
            command line or a file read with ``surrogateescape``), or a NUL character.
    """
    if not isinstance(text, str):
        raise InferenceInputError(f"the {what} must be a str, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise InferenceInputError(
            f"the {what} is {len(text):,} characters, more than the {MAX_PROMPT_CHARS:,} accepted",
            hint="shorten it: a model's context holds far fewer tokens than that",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InferenceInputError(
            f"the {what} is not valid text: character {exc.start} is "
            f"{excerpt(text[exc.start : exc.start + 1])}, which has no UTF-8 form (a lone "
            "surrogate: bytes that were not UTF-8, kept undecoded)",
            hint="give the prompt as UTF-8 text (check the terminal's or the file's encoding)",
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        raise InferenceInputError(
            f"the {what} holds a NUL character (at {nul}): LiteRT-LM's tokenizer would end the "
            "text there",
            hint="remove the NUL characters",
        )
    return text


def import_litert_lm() -> Any:
    """The ``litert_lm`` module, or a typed error saying how to install it."""
    try:
        litert_lm = importlib.import_module("litert_lm")
    except ImportError:
        raise BackendError(
            "running LLM bundles needs litert-lm-api, which is not installed",
            hint=install_hint("llm"),
        ) from None
    return litert_lm


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


#: Filesystems whose files live in memory only (statfs magic numbers would need ctypes; the
#: mount table names them).
_MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


def _filesystem_by_device(path: str) -> str | None:
    """The type of the mount ``path``'s file is on, found by its device number in
    /proc/self/mountinfo: the kernel's answer, whatever is stacked over what (a mount over a
    parent hides an earlier one under it, which a longest-prefix match of mount points misses).
    None if it cannot be told."""
    try:
        dev = os.stat(path).st_dev
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as info:
            lines = info.read(1 << 20).splitlines()
    except OSError:
        return None
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    found = None
    for line in lines:
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if sep and len(fields) > 2 and fields[2] == wanted and tail.split():
            found = tail.split()[0]  # the last mount of this device is the one in effect
    return found


def filesystem_of(path: str, mounts_text: str | None = None) -> str | None:
    """The type of the filesystem ``path`` is on, from the longest matching mount point (the
    last one mounted there, when several are stacked) of ``/proc/self/mounts`` (or
    ``mounts_text``)."""
    if mounts_text is None:
        by_device = _filesystem_by_device(path)
        if by_device is not None:
            return by_device
        try:
            with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
                mounts_text = mounts.read(1 << 20)
        except OSError:
            return None
    table = [line.split() for line in mounts_text.splitlines()]
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for fields in table:
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        # >=: a mount over the same point comes later in the table and is the one in effect.
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fields[2])
    return best[1] if best is not None else None


def memory_dir() -> str | None:
    """A directory on a memory filesystem where this process may create files, or None."""
    for candidate in (os.environ.get("XDG_RUNTIME_DIR"), "/dev/shm"):  # noqa: S108
        if (
            candidate
            and os.path.isdir(candidate)
            and os.access(candidate, os.W_OK | os.X_OK)
            and _private_enough(candidate)
            and filesystem_of(candidate) in _MEMORY_FILESYSTEMS
        ):
            return candidate
    return None


#: The engine's private directories: ``edge-sdk-llm-<pid>-<random>``.
_PRIVATE_PREFIX = "edge-sdk-llm-"
_PRIVATE_NAME = re.compile(re.escape(_PRIVATE_PREFIX) + r"([1-9][0-9]{0,9})-[A-Za-z0-9_]{1,32}")


#: A private directory younger than this is never removed as stale: its process may live in
#: another PID namespace (a container sharing /dev/shm), where its id means nothing here.
STALE_AFTER_SECONDS = 15 * 60


def remove_stale_dirs(directory: str, now: float | None = None) -> list[str]:
    """Remove the private directories that processes of this user left behind when they died
    while building an engine (SIGKILL, the OOM killer). They hold symlinks only (the weight
    cache is a memory file, which dies with its process), unless a LiteRT-LM that names its
    cache otherwise wrote one there: the weights in plaintext, in RAM until reboot. A directory
    counts as left behind when its name carries a process id that no longer exists and it is
    older than :data:`STALE_AFTER_SECONDS`; one of a live process, another user's, or anything
    but a plain directory is left alone. The names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _PRIVATE_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            if (time.time() if now is None else now) - st.st_mtime < STALE_AFTER_SECONDS:
                continue  # perhaps a live process of another PID namespace, mid-build
            os.kill(int(match.group(1)), 0)
            continue  # alive (or reused by a live process): not ours to judge
        except ProcessLookupError:
            pass
        except (OSError, OverflowError):
            continue  # PermissionError: a live process of another user
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.name)
    return removed


def _private_enough(directory: str) -> bool:
    """Whether no other user can rename what this process creates in ``directory``: owned by
    this user or root, and writable by others only when sticky (as /dev/shm). An inherited
    $XDG_RUNTIME_DIR of another user (sudo -E) would let its owner swap the engine's link."""
    st = os.stat(directory)
    owner_ok = st.st_uid in (os.geteuid(), 0)
    shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return owner_ok and (not shared or bool(st.st_mode & stat.S_ISVTX))


_NOT_UTF8 = (
    "the model generated bytes that are not UTF-8 text (litert-lm-api cannot return them); "
    "generate fewer or more tokens, or ask the model's publisher"
)


def _model_context(litert_lm: Any, path: str) -> int | None:
    """The model's own context length (tokens), as LiteRT-LM reads it, or None if unknown."""
    info_type = getattr(litert_lm, "ModelInfo", None)
    if info_type is None:
        return None
    try:
        with info_type(path) as info:
            tokens = int(info.max_context_tokens)
    except (OSError, RuntimeError, TypeError, ValueError, AttributeError):
        return None
    return tokens if tokens > 0 else None


#: fcntl.F_SEAL_FUTURE_WRITE (Linux 5.1; Python's fcntl names it from 3.12 on).
_F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)


_MADV_DONTFORK = 10


def _mappings_of(fd: int) -> list[tuple[int, int]]:
    """The (start, end) addresses at which this process maps the memory file ``fd``."""
    inode = str(os.fstat(fd).st_ino)
    found = []
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) >= 6 and fields[4] == inode and fields[5].startswith("/memfd:"):
                start, end = fields[0].split("-")
                found.append((int(start, 16), int(end, 16)))
    return found


def _keep_mappings_from_children(fd: int) -> None:
    """MADV_DONTFORK every mapping of ``fd`` (made by native code, so not through Python's mmap).

    Raises:
        OSError: the kernel refused one.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for start, end in _mappings_of(fd):
        if libc.madvise(start, end - start, _MADV_DONTFORK) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))


def _is_mapped(fd: int) -> bool:
    """Whether this process maps the memory file ``fd`` (by inode, in /proc/self/maps)."""
    try:
        return bool(_mappings_of(fd))
    except OSError:
        return True  # cannot tell: do not discard a cache for that


def _open_descriptors() -> set[int]:
    """The file descriptors this process has open now (not the one listing them used)."""
    try:
        listed = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return set()
    still = set()
    for fd in listed:
        with contextlib.suppress(OSError):
            os.fstat(fd)
            still.add(fd)
    return still


def _close_on_exec(descriptors: Iterable[int]) -> None:
    """Mark ``descriptors`` close-on-exec. LiteRT-LM opens the model (through its path: a new
    descriptor of the memfd) and its weight cache without O_CLOEXEC, so a program the caller
    runs with os.system or fork+exec would inherit the plaintext model and packed weights."""
    for fd in descriptors:
        with contextlib.suppress(OSError):
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            if not flags & fcntl.FD_CLOEXEC:
                fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)


def _keywords(function: Any) -> frozenset[str]:
    """The keyword parameters a function takes."""
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = inspect.signature(function).parameters
    return frozenset(n for n, p in params.items() if p.kind in kinds and n != "self")


class LanguageModel:
    """A verified LLM in sealed memory, run by LiteRT-LM's own engine. Build it with :func:`load_llm`.

    Attributes:
        manifest: the verified manifest.
        threads: the engine's CPU threads (profile, caller or usable cores).
        memory: ``"memfd (sealed)"``: where the decrypted model lives.
        context: the tokens a prompt and its reply share (None if LiteRT-LM does not say).
        weight_cache: where the packed weights came from this start (``describe()`` too).
    """

    def __init__(
        self, memory: SealedMemory, manifest: Manifest, threads: int, max_num_tokens: int | None,
        cache: WeightCacheStore | None = None,
    ) -> None:  # fmt: skip
        litert_lm = import_litert_lm()
        # LiteRT-LM logs every section it does not use, and more, on stderr (from its own
        # threads, while generating too): only its errors are kept. A caller who wants the rest
        # calls litert_lm.set_min_log_severity after load_llm.
        litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
        self.manifest = manifest
        self.threads = threads
        self.memory = "memfd (sealed)"
        self._sealed = memory
        self._litert_lm = litert_lm
        # A fresh 0700 directory with a random name (mkdtemp), never a predictable path, on a
        # memory filesystem. It holds two symlinks: the model (to its sealed memfd) and the
        # XNNPACK weight cache (the weights repacked for this CPU: plaintext), to a second
        # memfd that is either the cache this device saved encrypted on an earlier start,
        # decrypted and sealed, or an empty one the engine packs the weights into (then saved,
        # encrypted, for the next start). The engine maps the cache, so the packed weights live
        # once, in memory; the directory is removed as soon as the engine is built. Without a
        # memory filesystem no cache is used at all (LiteRT-LM would write one itself beside the
        # model if its name for it changed): XNNPACK then packs the weights into the process's
        # own memory, a second model-sized copy (measured: 2.6x the RSS).
        shm = memory_dir()
        if shm is not None:
            remove_stale_dirs(shm)
        private = tempfile.mkdtemp(prefix=f"{_PRIVATE_PREFIX}{os.getpid()}-", dir=shm)
        self._cache_memory: SealedMemory | None = None
        self.weight_cache = "none"
        #: Why the saved weight cache was not used or not saved this start (None: no problem).
        self.weight_cache_problem: str | None = None
        dir_fd = building = -1
        try:
            # The engine is given the directory through a descriptor held here
            # (/proc/self/fd/N/...), never by its name: a rename of the directory by anyone
            # cannot redirect it to another model.
            dir_fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            # A new name every load: LiteRT-LM remembers what it read of a model by path (a
            # second engine on the same path, in one process, took the first one's mtime).
            self._model_name = f"model-{secrets.token_hex(8)}.litertlm"
            os.symlink(memory.path, self._model_name, dir_fd=dir_fd)
            held = f"/proc/self/fd/{dir_fd}"
            if shm is not None:
                building = self._place_weight_cache(memory, dir_fd, cache)
            before = _open_descriptors()
            try:
                self._engine = litert_lm.Engine(
                    f"{held}/{self._model_name}",
                    backend=litert_lm.Backend.CPU(thread_count=threads),
                    max_num_tokens=max_num_tokens,
                    cache_dir=held if shm is not None else NO_CACHE,
                )
                # The context the engine runs with: the smaller of what was asked and what the
                # model's KV cache holds (a larger max_num_tokens does not grow it).
                self._model_context = _model_context(litert_lm, f"{held}/{self._model_name}")
            finally:
                _close_on_exec(_open_descriptors() - before)
            known = [n for n in (max_num_tokens, self._model_context) if n is not None]
            self.context: int | None = min(known) if known else None
            if shm is not None:
                self._check_cache_used(dir_fd, cache)
            if building >= 0:
                self._finish_packing(cache, building)
        except OSError as exc:
            self._abandon()
            raise BackendError(
                f"cannot prepare the engine's private directory: {exc.strerror}"
            ) from None
        except (RuntimeError, TypeError, ValueError) as exc:
            self._abandon()
            raise BackendError(
                f"litert-lm-api cannot build an engine for {manifest.name} v{manifest.version}: "
                f"{_first_line(exc)}"
            ) from None
        finally:
            for fd in (dir_fd, building):
                if fd >= 0:
                    os.close(fd)
            shutil.rmtree(private, ignore_errors=True)
        try:
            self._bos: int | None = self._engine.bos_token_id
        except (RuntimeError, TypeError, ValueError):
            self._bos = None
        self._closed = False
        # LiteRT-LM runs one session or conversation of an engine at a time: a second one open
        # beside it hung (two streams) or crashed the process (two chats, SIGABRT/SIGSEGV), and
        # closing the engine under a live one left native code running. So the one that is
        # open is kept here, a second is refused, and close() closes it before the engine.
        self._lock = threading.Lock()
        self._live: Any = None  # the open session (a stream) or a chat's conversation
        # The chat that holds the conversation, weakly: a chat dropped without close() ends
        # its conversation as it is collected, and the model is free again.
        self._live_chat: weakref.ref[Chat] | None = None
        # Held around every call into a session or conversation: close() from another thread
        # cancels the call in flight, then waits here before it deletes them (deleting a
        # conversation under a running send_message_async crashed the process).
        self._native = threading.RLock()
        # A model still open when the interpreter exits (a stream left half-read) is closed
        # first, in order: LiteRT-LM's threads hung the exit with a session left running.
        self._at_exit = functools.partial(_close_if_alive, weakref.ref(self))
        atexit.register(self._at_exit)

    # -- the weight cache ----------------------------------------------------------------------

    #: The name LiteRT-LM 0.18 gives the weight cache of a model (from its name, mtime and size)
    #: and looks for in ``cache_dir``.
    _CACHE_NAME = "{model}_{mtime}_{size}.xnnpack_cache"

    def _place_weight_cache(
        self, memory: SealedMemory, dir_fd: int, cache: WeightCacheStore | None
    ) -> int:
        """Put the weight cache's symlink beside the model: to the saved cache, decrypted into
        sealed memory, or to a new empty memfd for the engine to fill (its descriptor, else -1)."""
        # The model's mtime is set to the middle of a second first: LiteRT-LM names the cache
        # by ceil(mtime) - 1 seconds (measured: a whole second T named T - 1, T + 1 us named
        # T), this code by the floor; they agree on any mtime that is not a whole second.
        middle = int(time.time()) * 1_000_000_000 + 500_000_000
        os.utime(memory.fd, ns=(middle, middle))
        st = os.fstat(memory.fd)
        self._cache_name = self._CACHE_NAME.format(model=self._model_name,
                                                   mtime=st.st_mtime_ns // 10**9, size=st.st_size)  # fmt: skip
        if cache is not None:
            try:
                self._cache_memory = cache.open()
            except EdgeSDKError as exc:
                log.warning("weight cache not used, the weights are packed again: %s", exc.message)
                self._problem(f"the saved cache was refused: {exc.message}")
            if cache.replaced_release:
                log.info("the saved weight cache is another release's; packing for this one")
            if self._cache_memory is not None:
                os.symlink(self._cache_memory.path, self._cache_name, dir_fd=dir_fd)
                self.weight_cache = f"encrypted on disk ({cache.path.name}), opened into memfd"
                return -1
        building = os.memfd_create("edge-sdk-weight-cache", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.symlink(f"/proc/self/fd/{building}", self._cache_name, dir_fd=dir_fd)
        self.weight_cache = "memfd (packed this start)"
        return building

    def _check_cache_used(self, dir_fd: int, cache: WeightCacheStore | None) -> None:
        """Say so when the engine did not use the weight cache it was given: it wrote one of its
        own (a LiteRT-LM that names it otherwise; in the private memory directory, removed
        next), or it refused the saved one (XNNPACK then packs into the heap, and the saved
        cache is removed so that the next start packs a new one)."""
        others = set(os.listdir(dir_fd)) - {self._model_name, self._cache_name}
        if others:
            log.warning("LiteRT-LM did not use the weight cache it was given, %s (it wrote %s); "
                        "the weights are packed on every start", self._cache_name,
                        ", ".join(sorted(others)))  # fmt: skip
            self.weight_cache = "memory (unlinked; this litert-lm-api names its cache otherwise)"
        elif self._cache_memory is not None and not _is_mapped(self._cache_memory.fd):
            why = "LiteRT-LM did not map the saved weight cache (XNNPACK refused it)"
            log.warning("%s; it is removed and packed again next start", why)
            self.weight_cache = "heap (packed this start)"
            self._problem(why)
            self._close_cache()
            if cache is not None:
                cache.discard()

    def _finish_packing(self, cache: WeightCacheStore | None, building: int) -> None:
        """Seal the memory file the engine packed the weights into, then save it encrypted.

        The engine's own mappings of it were made while it was writable, so F_SEAL_WRITE is
        EBUSY and F_SEAL_FUTURE_WRITE is what holds: no write, no new writable mapping, no
        resize. A mapping made before that seal could still be mprotect()ed writable, so the
        engine's are kept out of forked children (MADV_DONTFORK: a child forked after the load
        rewrote the live weights through its copy), and no other process can reach them (the
        process is non-dumpable, edge_sdk.format.memory.keep_out_of_dumps)."""
        if self.weight_cache.startswith("memory"):
            return  # the engine did not fill ours
        bits = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        try:
            try:
                fcntl.fcntl(building, fcntl.F_ADD_SEALS, bits | fcntl.F_SEAL_WRITE)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                fcntl.fcntl(building, fcntl.F_ADD_SEALS, bits | _F_SEAL_FUTURE_WRITE)
                _keep_mappings_from_children(building)
        except OSError as exc:
            why = f"the packed weights could not be sealed ({exc.strerror})"
            log.warning("%s; not saved", why)
            self._problem(why)
            return
        if cache is None:
            return
        try:
            written = cache.save(building)
        except EdgeSDKError as exc:
            log.warning("the packed weights were not saved: %s", exc.message)
            self._problem(f"not saved: {exc.message}")
            return
        self.weight_cache = f"memfd (packed this start; saved encrypted, {written:,} bytes)"

    def _problem(self, why: str) -> None:
        self.weight_cache_problem = "; ".join(filter(None, (self.weight_cache_problem, why)))

    def _abandon(self) -> None:
        """Release what a failed build holds: the engine, if it was built, and the cache."""
        engine = getattr(self, "_engine", None)
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close()
        self._close_cache()

    def _close_cache(self) -> None:
        if self._cache_memory is not None:
            self._cache_memory.close()
            self._cache_memory = None

    def __repr__(self) -> str:
        return (
            f"<edge_sdk.LanguageModel {self.manifest.name} v{self.manifest.version} on "
            f"{LLM_RUNTIME}, {self.threads} threads, {self.memory}>"
        )

    # -- generation ----------------------------------------------------------------------------

    def _session(
        self, prompt: str, max_tokens: int, temperature: float, seed: int, template: bool,
        top_k: int | None, top_p: float | None, *, checked: bool = False,
    ) -> Any:  # fmt: skip
        """A new engine session, registered as the live one (release it with :meth:`_end`)."""
        if not checked:
            self._check_generation(prompt, max_tokens, temperature, seed, top_k, top_p)
        sampler = self._sampler(temperature, seed, top_k, top_p)
        with self._lock:
            self._check_idle()
            try:
                session = self._engine.create_session(
                    apply_prompt_template=template, sampler_config=sampler,
                    max_output_tokens=max_tokens,
                )  # fmt: skip
            except RuntimeError as exc:
                raise BackendError(f"cannot start generating: {_first_line(exc)}") from None
            self._live = session
            return session

    def _end(self, live: Any) -> None:
        """Close ``live`` (a session) if it is still the open one."""
        if self._release(live):
            live.close()

    def _release(self, live: Any) -> bool:
        """Forget ``live`` (a session or conversation) if it is still the open one: whether it
        was (else close() has taken it already)."""
        with self._lock:
            if self._live is not live:
                return False
            self._live, self._live_chat = None, None
            return True

    def _check_idle(self) -> None:
        """Refuse a second session or chat while one is open (called holding the lock)."""
        self._check_open()
        if self._live is not None:
            what = "chat" if self._live_chat is not None else "stream"
            raise UsageError(
                f"a {what} of this model is still open; LiteRT-LM runs one at a time",
                hint=f"finish or close the {what} first (a with block, or .close())",
            )

    def _check_generation(
        self, prompt: str, max_tokens: int, temperature: float, seed: int, top_k: int | None,
        top_p: float | None,
    ) -> None:  # fmt: skip
        self._check_open()
        check_sampling(max_tokens=max_tokens, temperature=temperature, seed=seed, top_k=top_k,
                       top_p=top_p)  # fmt: skip
        self.check_fits(prompt)

    def _sampler(
        self, temperature: float, seed: int, top_k: int | None = None, top_p: float | None = None
    ) -> Any:
        lm = self._litert_lm
        # top_k=1 is greedy decoding: the sampler keeps only the arg-max token.
        if temperature == 0:
            return lm.SamplerConfig(top_k=1, top_p=1.0, temperature=1.0, seed=seed)
        return lm.SamplerConfig(
            top_k=DEFAULT_TOP_K if top_k is None else top_k,
            top_p=DEFAULT_TOP_P if top_p is None else top_p,
            temperature=float(temperature),
            seed=seed,
        )

    def prompt_tokens(self, prompt: str) -> int:
        """How many tokens ``prompt`` fills in the context, as a bare prompt (its start token
        included; a chat template adds its own)."""
        return len(self.tokenize(prompt)) + (1 if self._bos is not None else 0)

    def check_fits(self, prompt: str, what: str = "prompt") -> None:
        """Refuse a prompt that cannot fit the context before the engine is asked.

        Raises:
            InferenceInputError: the prompt is not valid text, or fills the whole context
                (LiteRT-LM needs at least one free position to generate).
        """
        check_prompt(prompt, what)
        if self.context is None:
            return  # not known (an older litert-lm-api): the engine refuses it, BackendError
        used = self.prompt_tokens(prompt)
        if used >= self.context:
            raise InferenceInputError(
                f"the {what} is {used} tokens, and the model's context holds {self.context} "
                "(prompt and reply together)",
                hint="shorten the prompt"
                + (
                    f", or load the model with a larger max_num_tokens (up to {self._model_context})"
                    if self._model_context is not None and self._model_context > self.context
                    else ""
                ),
            )

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = 0.0,
        seed: int = 0,
        template: bool = False,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> Iterator[str]:
        """The text of the generated tokens as they are decoded (greedy unless ``temperature``).

        ``template`` applies the model's own prompt template (chat models carry one); ``top_k``
        and ``top_p`` shape sampling when ``temperature`` > 0 (defaults 40 and 0.95).

        Raises:
            UsageError: a generation option out of range (:func:`check_sampling`).
            InferenceInputError: the prompt is not valid text or does not fit the context.
            BackendError: the engine failed.
        """
        # Checked now, not at the first next(): a bad call fails where it is made.
        self._check_generation(prompt, max_tokens, temperature, seed, top_k, top_p)
        return self._stream(prompt, max_tokens, temperature, seed, template, top_k, top_p)

    def _stream(
        self, prompt: str, max_tokens: int, temperature: float, seed: int, template: bool,
        top_k: int | None, top_p: float | None,
    ) -> Iterator[str]:  # fmt: skip
        session = self._session(prompt, max_tokens, temperature, seed, template, top_k, top_p,
                                checked=True)  # fmt: skip
        try:
            with self._native:
                session.run_prefill([prompt])
                responses = iter(session.run_decode_async())
            while True:
                with self._native:
                    if self._live is not session:  # the model was closed: its session with it
                        raise UsageError("this model was closed while the stream was read")
                    response = next(responses, None)
                if response is None:
                    return
                yield from response.texts
        except RuntimeError as exc:
            raise BackendError(f"generation failed: {_first_line(exc)}") from None
        except UnicodeDecodeError:
            raise BackendError(_NOT_UTF8) from None
        finally:
            self._end(session)

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = 0.0,
        seed: int = 0,
        template: bool = False,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> str:
        """The whole generated text for ``prompt`` (greedy unless ``temperature`` > 0); the
        options and errors are those of :meth:`stream`."""
        session = self._session(prompt, max_tokens, temperature, seed, template, top_k, top_p)
        try:
            with self._native:
                if self._live is not session:
                    raise UsageError("this model was closed before generating")
                session.run_prefill([prompt])
                texts: list[str] = session.run_decode().texts
        except RuntimeError as exc:
            raise BackendError(f"generation failed: {_first_line(exc)}") from None
        except UnicodeDecodeError:
            raise BackendError(_NOT_UTF8) from None
        finally:
            self._end(session)
        return texts[0] if texts else ""

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` by the model's own tokenizer.

        Raises:
            InferenceInputError: ``text`` is not valid text (:func:`check_prompt`).
            BackendError: the tokenizer failed.
        """
        self._check_open()
        check_prompt(text, "text")
        try:
            ids: list[int] = self._engine.tokenize(text)
        except RuntimeError as exc:
            raise BackendError(f"cannot tokenize: {_first_line(exc)}") from None
        return ids

    def detokenize(self, ids: Iterable[int]) -> str:
        """The text of token ids by the model's own tokenizer.

        Raises:
            InferenceInputError: not a sequence of ints, an id outside the model's vocabulary,
                or ids whose bytes are not UTF-8 text (a character cut between ids).
        """
        self._check_open()
        if isinstance(ids, (str, bytes, bytearray)) or not isinstance(ids, Iterable):
            raise InferenceInputError(f"token ids must be a sequence of ints, got {excerpt(ids)}")
        given = list(itertools.islice(ids, MAX_OUTPUT_TOKENS + 1))
        if len(given) > MAX_OUTPUT_TOKENS:
            raise InferenceInputError(f"more than the {MAX_OUTPUT_TOKENS:,} token ids accepted")
        values: list[int] = []
        for i, token in enumerate(given):
            # LiteRT-LM passes ids as 32-bit ints: 2**32 would silently become 0. numpy
            # integers are integers (operator.index); floats and bools are not ids.
            try:
                value = operator.index(token) if not isinstance(token, bool) else -1
            except TypeError:
                value = -1
            if not 0 <= value <= _INT32_MAX:
                raise InferenceInputError(
                    f"token id {i} is {excerpt(token)}, not an integer from 0 to {_INT32_MAX}"
                )
            values.append(value)
        try:
            text: str = self._engine.detokenize(values)
        except RuntimeError:
            raise InferenceInputError(
                "the token ids are not all in the model's vocabulary (LiteRT-LM's log names "
                "the first one out of range)",
                hint="pass ids the model's tokenizer produced (tokenize, or generated ones)",
            ) from None
        except UnicodeDecodeError:
            raise InferenceInputError(
                "the token ids decode to bytes that are not UTF-8 text (a character cut "
                "between ids)",
                hint="detokenize whole characters: include the ids around these",
            ) from None
        return text

    def conversation(self, **options: Any) -> Any:
        """A LiteRT-LM ``Conversation`` (multi-turn chat with the model's template); options as
        ``litert_lm.Engine.create_conversation``, checked first.

        Raises:
            UsageError: an option ``create_conversation`` does not take, or a ``sampler_config``
                or ``max_output_tokens`` out of range.
            BackendError: the engine cannot start the conversation.
        """
        self._check_open()
        accepted = _keywords(self._engine.create_conversation)
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise UsageError(
                f"conversation() takes no option {', '.join(excerpt(u, 40) for u in unknown[:5])}",
                hint=f"it takes {', '.join(sorted(accepted))}",
            )
        if options.get("max_output_tokens") is not None:
            _integer("max_output_tokens", options["max_output_tokens"], 1, MAX_OUTPUT_TOKENS)
        if "system_message" in options and options["system_message"] is not None:
            check_prompt(options["system_message"], "system message")
        sampler = options.get("sampler_config")
        if sampler is not None:
            if not isinstance(sampler, self._litert_lm.SamplerConfig):
                raise UsageError(
                    f"sampler_config must be a litert_lm.SamplerConfig, got {type(sampler).__name__}"
                )
            check_sampling(temperature=1.0 if sampler.temperature is None else sampler.temperature,
                           seed=0 if sampler.seed is None else sampler.seed, top_k=sampler.top_k,
                           top_p=sampler.top_p)  # fmt: skip
        try:
            return self._engine.create_conversation(**options)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"conversation(): {_first_line(exc)}") from None
        except RuntimeError as exc:
            raise BackendError(f"cannot start a conversation: {_first_line(exc)}") from None

    def chat(
        self, *, max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float = 0.0, seed: int = 0,
        top_k: int | None = None, top_p: float | None = None,
    ) -> Chat:  # fmt: skip
        """A multi-turn chat: each :meth:`Chat.reply` sees the turns before it, wrapped in the
        model's own chat template (LiteRT-LM's ``Conversation``). Close it before the model.

        Raises:
            UsageError: a generation option out of range (:func:`check_sampling`).
        """
        self._check_open()
        check_sampling(max_tokens=max_tokens, temperature=temperature, seed=seed, top_k=top_k,
                       top_p=top_p)  # fmt: skip
        with self._lock:
            self._check_idle()
            try:
                conversation = self._engine.create_conversation(
                    sampler_config=self._sampler(temperature, seed, top_k, top_p),
                    max_output_tokens=max_tokens,
                )
            except RuntimeError as exc:
                raise BackendError(f"cannot start a conversation: {_first_line(exc)}") from None
            chat = Chat(conversation, self.check_fits, self._release, self._native)
            self._live, self._live_chat = conversation, weakref.ref(chat)
            return chat

    # -- lifetime ------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("this model is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the engine and release the sealed memory (its pages go back to the kernel)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            live, self._live = self._live, None
            chat = self._live_chat() if self._live_chat is not None else None
            self._live_chat = None
        atexit.unregister(self._at_exit)
        if live is not None:
            # Stop a decode in flight in another thread, then wait for it to leave native code.
            with contextlib.suppress(Exception):
                live.cancel_process()
        with self._native:
            if chat is not None:
                chat.close()  # marks it closed, then closes its conversation
            elif live is not None:
                live.close()  # a session or conversation before the engine that runs it
            self._engine.close()
            self._sealed.close()
            self._close_cache()

    def __enter__(self) -> LanguageModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.manifest.name,
            "version": self.manifest.version,
            "format": self.manifest.model.format,
            "size": self.manifest.model.size,
            "runtime": LLM_RUNTIME,
            "threads": self.threads,
            "memory": self.memory,
            "weight_cache": self.weight_cache,
            "weight_cache_problem": self.weight_cache_problem,
            "context": self.context,
        }


def _close_if_alive(ref: weakref.ref[LanguageModel]) -> None:
    model = ref()
    if model is not None:
        model.close()


class Chat:
    """A conversation with a :class:`LanguageModel` (see :meth:`LanguageModel.chat`)."""

    def __init__(
        self, conversation: Any, check_fits: Callable[[str, str], None],
        ended: Callable[[Any], object] = lambda _conversation: None,
        native: Any = None,
    ) -> None:  # fmt: skip
        self._conversation = conversation
        self._native = native if native is not None else threading.RLock()
        self._check_fits = check_fits
        self._closed = False
        # Ends the conversation and tells the model it no longer holds the engine: once, from
        # close() or as a chat nobody closed is collected (the finalizer holds no ref to self).
        self._finish = weakref.finalize(self, _end_conversation, conversation, self._native, ended)

    def reply(self, message: str) -> Iterator[str]:
        """The reply's text as it is decoded; the turn is remembered for the next reply.

        Raises:
            InferenceInputError: the message is not valid text or alone fills the context, or
                the conversation has filled it (LiteRT-LM then answers nothing, or refuses the
                prefill): a new chat starts empty.
        """
        if self._closed:
            raise UsageError("this chat is closed", hint="start a new one with model.chat()")
        # Checked now, not at the first next(): a bad message fails where it is sent.
        self._check_fits(message, "message")
        return self._reply(message)

    def _reply(self, message: str) -> Iterator[str]:
        produced = 0
        try:
            with self._native:
                if self._closed:
                    raise UsageError("this chat was closed before its reply was read")
                chunks = iter(self._conversation.send_message_async(message))
            while True:
                with self._native:
                    if self._closed:  # closed (or its model closed) while the reply was read
                        raise UsageError("this chat was closed while its reply was read")
                    chunk = next(chunks, None)
                if chunk is None:
                    break
                for content in getattr(chunk, "contents", ()) or ():
                    text = getattr(content, "text", None)
                    if isinstance(text, str):
                        produced += 1
                        yield text
        except RuntimeError as exc:
            text = _first_line(exc)
            if "exceeds available state entries" in text or "context" in text.lower():
                raise self._full(text) from None
            raise BackendError(f"generation failed: {text}") from None
        except UnicodeDecodeError:
            raise BackendError(_NOT_UTF8) from None
        if produced == 0:
            raise self._full("the model answered nothing")

    def _full(self, detail: str) -> EdgeSDKError:
        with self._native:  # token_count reads the conversation: not once it is deleted
            if self._closed:
                return UsageError("this chat was closed while its reply was read")
            used = getattr(self._conversation, "token_count", None)
        tokens = f" ({used} tokens)" if isinstance(used, int) else ""
        return InferenceInputError(
            f"this conversation has filled the model's context{tokens}: {detail}",
            hint="start a new chat (prompts and replies share the context), or ask for "
            "shorter replies (--max-tokens, max_tokens=)",
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._finish()

    def __enter__(self) -> Chat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end_conversation(conversation: Any, native: Any, ended: Callable[[Any], object]) -> None:
    with native:  # never under a reply another thread is reading
        conversation.close()
    ended(conversation)


def _check_header(memory: SealedMemory) -> None:
    """The decrypted model's LiteRT-LM header, read strictly (it names sections inside the file).

    Raises:
        ModelInputError: not a LiteRT-LM file this engine can map.
    """
    from edge_sdk.format.litertlm import HEADER_BEGIN, MAX_HEADER_BYTES, read_litertlm

    head = os.pread(memory.fd, min(memory.size, HEADER_BEGIN + MAX_HEADER_BYTES), 0)
    read_litertlm(head, file_size=memory.size)


def load_llm(
    source: str | os.PathLike[str] | bytes,
    *,
    trust: TrustStore | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    device_key: PrivateKey | str | os.PathLike[str] | None = None,
    slip: bytes | str | os.PathLike[str] | None = None,
    profile: DeviceProfile | str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    max_num_tokens: int | None = None,
    expected_name: str | None = None,
    require_encryption: bool | None = None,
    allow_target_mismatch: bool = False,
    hardware_ids: Sequence[str] | None = None,
    now: datetime | None = None,
    weight_cache: str = "encrypted",
) -> LanguageModel:
    """Verify an LLM bundle, decrypt it into sealed memory, and start LiteRT-LM on it.

    The arguments mean what they mean for :func:`edge_sdk.load` (a key ``slip`` included);
    ``max_num_tokens`` is the
    engine's context (prompt plus generated tokens; default: the model's own).

    ``weight_cache="encrypted"`` (the default) keeps the weights XNNPACK packs for this CPU in
    the state directory, encrypted for this device (:mod:`edge_sdk.device.weight_cache`), so
    that later starts skip packing them; ``"memory"`` packs them on every start and stores
    nothing.

    Raises:
        ModelKindError: the bundle holds a .tflite model (before any key is unwrapped).
        SealedMemoryError: no memfd on this system, or the kernel refused the memory.
        BackendError: litert-lm-api is missing or cannot run the model.
        EdgeSDKError: every check of docs/FORMAT.md, typed by cause, as for ``load``.
    """
    from .runtime import (
        as_trust,
        choose_profile,
        detect_hardware_ids,
        expected_name_from_path,
        key_slip_for,
        usable_cores,
    )

    import_litert_lm()  # a missing extra is said before any work is done
    if weight_cache not in WEIGHT_CACHE_MODES:
        raise UsageError(
            f"weight_cache must be one of {', '.join(WEIGHT_CACHE_MODES)}, "
            f"not {excerpt(weight_cache, 40)}"
        )
    # A thread count is a number of OS threads the engine starts: bounded by what a board has.
    for option, value, high in (("threads", threads, MAX_THREADS),
                                ("max_num_tokens", max_num_tokens, MAX_OUTPUT_TOKENS)):  # fmt: skip
        if value is not None:
            _integer(option, value, 1, high)
    store = as_trust(trust)
    key = (
        device_key
        if isinstance(device_key, PrivateKey) or device_key is None
        else load_private_key(device_key, kind="device")
    )
    prof = load_profile(profile) if isinstance(profile, str) else profile
    state = VersionState(Path(state_dir) if state_dir else default_state_dir())
    audit = AuditLog(state.directory / "audit.log")
    ids = tuple(hardware_ids) if hardware_ids is not None else detect_hardware_ids()
    where = source if isinstance(source, (str, os.PathLike)) else "<bytes>"
    parsed: dict[str, Any] = {}
    # A profile's max_model_bytes is set for its .tflite models; an LLM is bounded by the RAM.
    cap = min(MAX_LLM_BYTES, prof.memory_mb * 1024 * 1024) if prof is not None else MAX_LLM_BYTES
    limits = Limits.for_model_size(cap) if prof is not None else DEFAULT_LIMITS
    wanted_name = expected_name if expected_name is not None else expected_name_from_path(source)
    slip_bytes = key_slip_for(source, slip, key)

    def header_checks(header: Bundle) -> None:
        parsed.update(name=header.manifest.name, version=header.manifest.version,
                      digest=header.digest)  # fmt: skip
        require_kind(header, "litertlm", "load_llm")

    memory: SealedMemory | None = None
    try:
        check_device = not allow_target_mismatch
        policy = Policy(
            store,
            now=now,
            expected_name=wanted_name,
            require_encryption=key is not None
            if require_encryption is None
            else require_encryption,
            profile=prof.name if prof is not None and check_device else None,
            runtime_package=LLM_RUNTIME if check_device else None,
            hardware_ids=ids if check_device else (),
            state=state,
            device_key=key,
            key_slip=slip_bytes,
        )
        memory = SealedMemory(limits.max_model_bytes)
        # The same checks, in the same order, as every other open; the model goes to the memfd,
        # which is sealed only once all of them have passed.
        content_keys: list[bytes] = []
        opened = open_verified(source, policy, limits, on_header=header_checks, sink=memory,
                               on_content_key=content_keys.append)  # fmt: skip
        manifest, verification = opened.verification.manifest, opened.verification
        memory.seal()
        # Signed is not well formed: LiteRT-LM aborts the whole process on a file its loader
        # cannot map (a cut section), so the header the packager read is read again here.
        _check_header(memory)
        chosen, _reason = choose_profile(prof, manifest.target.profile, ids)
        if threads is not None:
            count = threads
        elif chosen is not None:
            count = min(chosen.threads, usable_cores())
        else:
            count = usable_cores()
        cache = (
            WeightCacheStore(state.directory / "weight-cache", manifest.name,
                             manifest.model.sha256, content_keys[0] if content_keys else None,
                             max_bytes=min(2 * manifest.model.size + (64 << 20), MAX_LLM_BYTES),
                             release=verification.digest)
            if weight_cache == "encrypted"
            else None
        )  # fmt: skip
        model = LanguageModel(memory, manifest, count, max_num_tokens, cache)
    except EdgeSDKError as exc:
        if memory is not None:
            memory.close()  # wipes it when it was never sealed
        try:
            audit.append("reject", source=str(where), **parsed, result="rejected", reason=exc.message,
                         error=exc.kind)  # fmt: skip
        except AuditLogError as log_error:
            log.error("could not record the rejection in the audit log: %s", log_error.message)
        raise
    try:
        accepted = state.is_recorded(manifest.name, manifest.version, verification.digest)
        audit.append("load", durable=not accepted, source=str(where), **parsed,
                     signers=list(verification.signers), result="ok",
                     backend=LLM_RUNTIME, memory=model.memory, weight_cache=model.weight_cache,
                     weight_cache_problem=model.weight_cache_problem)  # fmt: skip
        if not accepted:
            state.record(manifest.name, manifest.version, verification.digest)
    except EdgeSDKError as exc:
        model.close()
        with contextlib.suppress(EdgeSDKError):
            audit.append("reject", source=str(where), **parsed, result="rejected", reason=exc.message,
                         error=exc.kind, stage="recording the accepted version")  # fmt: skip
        raise
    return model
