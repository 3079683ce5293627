"""DEVICE: LiteRT-LM's weight cache, kept encrypted in the device's state directory.

As LiteRT-LM builds an engine, XNNPACK repacks the model's weights for this CPU (a 1 GB model:
~3 s on one core here), and plain LiteRT-LM keeps the result in a file beside the model, mapped
on every later start: the weights, in plaintext, on disk. A sealed bundle must never leave that,
so without this module every start repacks. Here the packed weights are written once, encrypted,
and every later start decrypts them into sealed memory, where the engine maps them.

- **Where.** ``<state dir>/weight-cache/<name id>-<model id>.wcache`` (0600, in a 0700
  directory; the name id is 16 hex digits of SHA-256 of the bundle name, the model id the first
  32 of the model's SHA-256), beside the device's ``secret``. One per bundle name: the cache of a
  new version replaces the old one. It takes about the model's size on disk, written once per
  release.
- **Key.** HKDF-SHA256 of the bundle's content key (only a holder of the device key has it) and
  a random 32-byte secret kept beside the caches (0600), bound to the model's digest, the runtime
  (litert-lm-api's version, the CPU), and the file's own header. A copy of the disk without the
  device key cannot read a cache; another device holding the same content key (a fleet release)
  cannot forge one without this device's secret. The secret is as safe as the state directory
  itself, like the anti-rollback state: whoever can read and write that directory as the
  device's user can forge a cache (and reset the version floor).
- **Format.** A 16-byte magic, the release (16 bytes of the bundle's digest), a random 16-byte
  salt, the plaintext size (u64) and chunk size (u32, always 1 MiB); a 16-byte key check
  (derived with the key, so a header not made here is refused before any memory is given to
  it); then the chunks of docs/FORMAT.md's payload encryption (AES-256-GCM, content id = salt).
- **Bad caches.** The cache of another release of the same model (its content key differs) is
  replaced without a fuss. One that does not open — its key check fails (another device's, or a
  replaced secret), tampered, cut short by a crash, made by another runtime — is never given to
  the engine: it is named in a warning, and the weights are packed again and saved over it.
  Nothing planted in the directory makes a load fail; at worst the weights are packed every
  start. Saving is not durable on purpose (no fsync of a gigabyte on an SD card): a cache cut by
  power loss fails authentication and is rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import hmac
import importlib.metadata
import logging
import os
import platform
import secrets
import stat
import struct
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_sdk.errors import EdgeSDKError, WeightCacheError
from edge_sdk.format.encryption import (
    TAG_SIZE,
    PayloadDecryptor,
    PayloadEncryptor,
    ciphertext_size,
)
from edge_sdk.format.memory import alloc_buffer, wipe

from .sealed_memory import SealedMemory

log = logging.getLogger(__name__)

MAGIC = b"edge-sdk/wcache1"
_HEADER = struct.Struct(">16s16s16sQI")  # magic, release, salt, plaintext size, chunk size
_CHECK_SIZE = 16
#: Bytes before the first chunk: the header and the key check.
HEADER_SIZE = _HEADER.size + _CHECK_SIZE
CHUNK_SIZE = 1024 * 1024
_AEAD = "aes-256-gcm"
_KEY_LABEL = b"edge-sdk/v1/weight-cache"
_SECRET_NAME = "secret"  # noqa: S105 (a file name, not a password)
_SECRET_SIZE = 32
_SUFFIX = ".wcache"
#: Errors opening the secret that say it is not this device's own file (else it is kept).
_NOT_OURS = (errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENXIO, errno.EOPNOTSUPP)
#: A partial save younger than this is never removed (its writer may not have locked it yet).
_PARTIAL_GRACE_SECONDS = 60
#: Chunks read and opened per system call.
_BATCH = 8


@functools.cache
def runtime_identity() -> str:
    """What the packed weights depend on besides the model: the runtime's version and the CPU
    (XNNPACK packs for the instruction sets it finds)."""
    try:
        version = importlib.metadata.version("litert-lm-api")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    cpu = ""
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info,
    ):
        wanted = ("flags", "features", "model name", "cpu part", "cpu implementer")
        seen = {
            line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
            for line in info.read(1 << 20).splitlines()
            if ":" in line and line.split(":", 1)[0].strip().lower() in wanted
        }
        cpu = hashlib.sha256(repr(sorted(seen.items())).encode()).hexdigest()[:16]
    return f"litert-lm-api {version}; {platform.machine()}; cpu {cpu}"


class WeightCacheStore:
    """The encrypted weight cache of one verified model, in ``directory``.

    ``content_key`` is the bundle's (None for a bundle that is not encrypted: the secret alone
    keys the cache); ``max_bytes`` bounds what a cache may declare.
    """

    def __init__(
        self, directory: Path, name: str, model_sha256: str, content_key: bytes | None,
        max_bytes: int, release: str = "",
    ) -> None:  # fmt: skip
        self.directory = directory
        self._name_id = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        self._model = bytes.fromhex(model_sha256)
        self._content_key = content_key or b""
        self.max_bytes = max_bytes
        # The bundle's digest: another release of the same model has another content key, so
        # its cache cannot open here, and that is no sign of tampering.
        self._release = hashlib.sha256(release.encode()).digest()[:16]
        self.path = directory / f"{self._name_id}-{model_sha256[:32]}{_SUFFIX}"
        #: Set by :meth:`open` when it found (and will replace) another release's cache.
        self.replaced_release = False

    # -- the key -------------------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        """The cache directory, made 0700 if missing; refused unless a plain directory of this
        user that no one else can write to."""
        with contextlib.suppress(FileExistsError):
            self.directory.mkdir(mode=0o700, parents=True)
        st = os.lstat(self.directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise WeightCacheError(f"{self.directory} is not a directory of this user")
        if st.st_mode & 0o077:
            raise WeightCacheError(
                f"{self.directory} is open to other users (mode {st.st_mode & 0o777:o})"
            )

    def _secret(self) -> bytes:
        """This device's cache secret, made on first use. It appears whole or not at all (written
        aside, then linked into place); one that is not a private 32-byte file of this user is
        replaced, which only makes the caches made under it unusable (they are rebuilt).

        Raises:
            WeightCacheError: the directory refuses the secret.
        """
        path = self.directory / _SECRET_NAME
        for _ in range(2):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except FileNotFoundError:
                self._make_secret(path)
                continue
            except OSError as exc:
                if exc.errno not in _NOT_OURS:  # EMFILE, ENOMEM, EIO...: the secret may be fine
                    raise WeightCacheError(f"cannot read {path}: {exc.strerror}") from None
                self._replace_secret(path, exc.strerror or str(exc))  # a symlink, another's
                continue
            try:
                st = os.fstat(fd)
                good = stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
                secret = os.read(fd, _SECRET_SIZE + 1) if good and not st.st_mode & 0o077 else b""
            finally:
                os.close(fd)
            if len(secret) == _SECRET_SIZE:
                return secret
            self._replace_secret(path, "not a private 32-byte file of this user")
        raise WeightCacheError(f"cannot keep a weight-cache secret in {self.directory}")

    def _make_secret(self, path: Path) -> None:
        aside = self.directory / f".secret-{secrets.token_hex(8)}"
        try:
            made = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o600)  # fmt: skip
            try:
                os.write(made, secrets.token_bytes(_SECRET_SIZE))
                os.fsync(made)
            finally:
                os.close(made)
            with contextlib.suppress(FileExistsError):  # another process made one first
                os.link(aside, path, follow_symlinks=False)
        except OSError as exc:
            raise WeightCacheError(f"cannot make the weight-cache secret: {exc.strerror}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(aside)

    def _replace_secret(self, path: Path, why: str) -> None:
        log.warning("replacing the weight-cache secret %s (%s): caches are rebuilt", path, why)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                raise WeightCacheError(f"{path} is a directory; remove it to keep caches")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        except OSError as exc:
            raise WeightCacheError(f"cannot replace {path}: {exc.strerror}") from None
        self._make_secret(path)

    def _key(self, header: bytes, secret: bytes) -> tuple[bytes, bytes]:
        """The AEAD key of a cache with this header, and its key check."""
        info = b"\0".join((_KEY_LABEL, self._model, runtime_identity().encode(), header))
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32 + _CHECK_SIZE, salt=None, info=info)
        derived = hkdf.derive(self._content_key + secret)
        return derived[:32], derived[32:]

    # -- reading -------------------------------------------------------------------------------

    def open(self) -> SealedMemory | None:
        """The packed weights in sealed memory, or None when there is no cache yet.

        Raises:
            WeightCacheError: the directory or secret cannot be used, or a cache is there but
                does not open (it is removed, and nothing of it is kept).
        """
        self._prepare_directory()
        secret = self._secret()
        try:
            # Non-blocking: a FIFO planted here must not block the open (it is refused below).
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise WeightCacheError(f"cannot open {self.path.name}: {exc.strerror}") from None
        memory: SealedMemory | None = None
        try:
            st = os.fstat(fd)
            header = os.pread(fd, HEADER_SIZE, 0) if stat.S_ISREG(st.st_mode) else b""
            if len(header) != HEADER_SIZE:
                raise WeightCacheError(f"{self.path.name} is not a weight cache")
            magic, release, salt, size, chunk = _HEADER.unpack(header[: _HEADER.size])
            if magic != MAGIC:
                raise WeightCacheError(f"{self.path.name} is not a weight cache (magic)")
            if release != self._release:
                self.replaced_release = True
                return None  # another release's: packed again, and saved over it
            if not 0 < size <= self.max_bytes or chunk != CHUNK_SIZE:
                raise WeightCacheError(f"{self.path.name} declares {size} bytes in {chunk}-byte "
                                       f"chunks (at most {self.max_bytes} bytes)")  # fmt: skip
            if st.st_size != HEADER_SIZE + ciphertext_size(size, chunk):
                raise WeightCacheError(f"{self.path.name} is {st.st_size} bytes, not what its "
                                       "header declares (cut short?)")  # fmt: skip
            key, check = self._key(header[: _HEADER.size], secret)
            if not hmac.compare_digest(check, header[_HEADER.size :]):
                raise WeightCacheError(
                    f"{self.path.name} does not open with this device's key (another device's "
                    "cache, or this device's weight-cache secret was replaced)"
                )
            opener = PayloadDecryptor(_AEAD, key, salt, chunk, size)
            memory = SealedMemory(self.max_bytes)
            target = memory.allocate(size)
            assert target is not None  # min_bytes is 0
            piece = memoryview(alloc_buffer(opener.sealed_chunk * _BATCH))
            at = HEADER_SIZE
            while opener.index < opener.chunks:
                want = min(len(piece), st.st_size - at)
                got = os.preadv(fd, [piece[:want]], at)
                if got != want:
                    raise WeightCacheError(f"{self.path.name} changed while it was read")
                opener.open_into(piece[:got], target)
                at += got
            target.release()
            memory.seal()
            return memory
        except (EdgeSDKError, OSError) as exc:
            if memory is not None:
                memory.close()  # wipes what was decrypted
            self.discard()  # the directory and secret were good: this file is what failed
            if isinstance(exc, WeightCacheError):
                raise
            why = exc.message if isinstance(exc, EdgeSDKError) else exc.strerror
            raise WeightCacheError(f"{self.path.name}: {why}") from None
        finally:
            os.close(fd)

    # -- writing -------------------------------------------------------------------------------

    def save(self, fd: int) -> int:
        """Encrypt the packed weights the engine wrote into ``fd`` (a memory file) over this
        model's cache, and remove the caches of other versions of the same name. The bytes
        written.

        Raises:
            WeightCacheError: nothing worth saving, or the disk refused it (nothing is left).
        """
        self._prepare_directory()
        secret = self._secret()
        size = os.fstat(fd).st_size
        if not 0 < size <= self.max_bytes:
            raise WeightCacheError(f"the engine wrote {size} bytes of packed weights; not saved")
        salt = secrets.token_bytes(16)
        header = _HEADER.pack(MAGIC, self._release, salt, size, CHUNK_SIZE)
        key, check = self._key(header, secret)
        sealer = PayloadEncryptor(_AEAD, key, salt, CHUNK_SIZE, size)
        self._remove_dead_partials()
        partial = self.directory / f".partial-{secrets.token_hex(8)}"
        plain = memoryview(alloc_buffer(CHUNK_SIZE))
        sealed = memoryview(alloc_buffer(CHUNK_SIZE + TAG_SIZE))
        out = -1
        try:
            out = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                          | os.O_CLOEXEC, 0o600)  # fmt: skip
            # Held while it is written: a partial nobody holds is one whose writer died
            # (whatever its process id means in this PID namespace).
            fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(out, header + check)
            for at in range(0, size, CHUNK_SIZE):
                want = min(CHUNK_SIZE, size - at)
                if os.preadv(fd, [plain[:want]], at) != want:
                    raise WeightCacheError("the packed weights changed while they were saved")
                done = sealer.seal_into(plain[:want], sealed)
                written = 0
                while written < done:
                    written += os.write(out, sealed[written:done])
            os.replace(partial, self.path)
        except OSError as exc:
            raise WeightCacheError(f"cannot save the weight cache: {exc.strerror}") from None
        finally:
            wipe(plain)  # the last chunk of packed weights read
            if out >= 0:
                os.close(out)
            with contextlib.suppress(OSError):
                os.unlink(partial)
        for other in self.directory.glob(f"{self._name_id}-*{_SUFFIX}"):
            if other != self.path:
                with contextlib.suppress(OSError):
                    other.unlink()  # an older version's cache
        return HEADER_SIZE + ciphertext_size(size, CHUNK_SIZE)

    def _remove_dead_partials(self) -> None:
        """Remove the partial saves whose writer died (encrypted, but as large as the cache):
        those no process holds a lock on."""
        for entry in self.directory.glob(".partial-*"):
            try:
                held = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                with contextlib.suppress(OSError):
                    entry.unlink()  # a symlink or something else planted: only the name goes
                continue
            try:
                # A partial is locked just after it is made: a recent one may not be yet.
                if time.time() - os.fstat(held).st_mtime < _PARTIAL_GRACE_SECONDS:
                    continue
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # being written
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
            finally:
                os.close(held)

    def discard(self) -> None:
        """Remove this model's cache (one that did not open); what cannot be removed (a
        directory planted there) stays, and is refused again next time."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
