"""Opening a bundle in one pass (docs/FORMAT.md, "Checks, in order"), and what a restart writes.

The device reads the payload once and runs steps 6–10 together: the payload SHA-256 and the model
SHA-256 on two worker threads beside the AEAD. These tests hold it to the sequential contract: the
error is the earliest failing step's, nothing reaches the interpreter before every step passed,
zstd never parses a stream the publisher did not sign — and a restart of a version the device
already accepted writes no state and waits for no sync.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.device import audit_log, runtime
from edge_sdk.errors import DecryptionError, IntegrityError
from edge_sdk.format.bundle import Bundle, save_bundle
from edge_sdk.format.compression import compress
from edge_sdk.format.encryption import encrypt_payload, new_content_key, wrap_content_key
from edge_sdk.format.manifest import PayloadInfo, Target
from edge_sdk.format.signing import sign_manifest
from edge_sdk.format.verify import READ_PIECE, RING_PIECES
from edge_sdk.host.sealing import MIN_COMPRESSION_SAVING, seal_bundle

from .conftest import KeySet
from .tflite_builder import Buffer, Op, OpCode, Spec, Tensor, build

WIDTH = 1_500_000  # floats: a 6 MB constant, several times the read ring


def add_model(constant: np.ndarray) -> bytes:
    """A real one-op LiteRT model, y = x + constant, whose size is the constant's."""
    shape = (1, constant.size)
    return build(
        Spec(
            opcodes=[OpCode(0)],  # ADD
            tensors=[Tensor("x", shape), Tensor("c", shape, buffer=1), Tensor("y", shape)],
            ops=[Op(0, (0, 1), (2,))],
            inputs=(0,),
            outputs=(2,),
            buffers=[Buffer(), Buffer(constant.astype(np.float32).tobytes())],
        )
    )


@pytest.fixture(scope="module")
def constant() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(WIDTH).astype(np.float32)


@pytest.fixture(scope="module")
def model(constant: np.ndarray) -> bytes:
    data = add_model(constant)
    assert len(data) > (RING_PIECES + 1) * READ_PIECE  # the ring of read buffers is reused
    return data


def _seal(model: bytes, keyset: KeySet, **kw: Any) -> Bundle:
    kw.setdefault("version", 1)
    kw.setdefault("chunk_size", 1 << 20)
    return seal_bundle(model, name="add", target=Target("x86_64"), signers=[keyset.signer],
                       recipients=[keyset.device.public], **kw)  # fmt: skip


def _resigned(bundle: Bundle, keyset: KeySet, payload: bytes, **changes: Any) -> Bundle:
    """``bundle`` with another payload whose digest (and ``changes``) the trusted key re-signs."""
    info = dataclasses.replace(bundle.manifest.payload, sha256=hashlib.sha256(payload).hexdigest(),
                               size=len(payload), **changes)  # fmt: skip
    manifest = dataclasses.replace(bundle.manifest, payload=info)
    raw = manifest.to_bytes()
    key = _content_key(bundle, keyset)
    return Bundle(1, manifest, raw, sign_manifest(raw, [keyset.signer]),
                  wrap_content_key(key, hashlib.sha256(raw).digest(), [keyset.device.public]),
                  payload)  # fmt: skip


def _content_key(bundle: Bundle, keyset: KeySet) -> bytes:
    from edge_sdk.format.encryption import unwrap_content_key

    return unwrap_content_key(bundle.recipients, bundle.manifest_digest, keyset.device)


def _re_encrypted(bundle: Bundle, keyset: KeySet, plaintext: bytes) -> Bundle:
    """What anyone can build: the signed manifest, a content key of their own wrapped for the
    device's public key (recipients are not signed), and ``plaintext`` sealed under it. The
    AEAD authenticates it; only the signed digests can refuse it."""
    info: PayloadInfo = bundle.manifest.payload
    key = new_content_key()
    payload = encrypt_payload(plaintext, info.encryption, key, bytes.fromhex(info.content_id),
                              info.chunk_size)  # fmt: skip
    recipients = wrap_content_key(key, bundle.manifest_digest, [keyset.device.public])
    return Bundle(1, bundle.manifest, bundle.manifest_bytes, bundle.signatures, recipients,
                  bytes(payload))  # fmt: skip


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many interpreters :func:`edge_sdk.load` built: none may exist for a refused bundle."""
    count: list[int] = []

    class Counted(runtime.Model):
        def __init__(self, model_bytes: bytes, **kw: Any) -> None:
            count.append(len(model_bytes))
            super().__init__(model_bytes, **kw)

    monkeypatch.setattr(runtime, "Model", Counted)
    return count


def _load(path: Path, keyset: KeySet, state: Path, **kw: Any) -> runtime.Model:
    return edge_sdk.load(path, trust=keyset.trust(), device_key=kw.pop("device_key", keyset.device),
                         state_dir=state, profile="x86_64", **kw)  # fmt: skip


def _refused(path: Path, keyset: KeySet, state: Path, error: type[Exception], match: str,
             built: list[int], **kw: Any) -> None:  # fmt: skip
    with pytest.raises(error, match=match):
        _load(path, keyset, state, **kw)
    assert built == [], "an interpreter was built from a refused bundle"
    record = audit_log.verify_log(state / "audit.log").records[-1]
    assert record["event"] == "reject" and record["name"] == "add"


def _answer(model: runtime.Model, constant: np.ndarray) -> None:
    y = model.predict(np.ones((1, constant.size), np.float32))
    np.testing.assert_array_equal(y, constant[None, :] + 1)


# -- the check order holds, however the steps overlap ----------------------------------------------


def _flipped(bundle: Bundle, at: int, bits: int) -> Bundle:
    """``bundle`` with bits of one stored payload byte flipped (the signature left as it was)."""
    payload = bytearray(bundle.payload)
    payload[at] ^= bits
    return dataclasses.replace(bundle, payload=bytes(payload))


def test_a_flipped_payload_byte_is_integrity_although_the_aead_fails_too(
    model: bytes, keyset: KeySet, tmp_path: Path, built: list[int]
) -> None:
    """Steps 6 and 8 both fail; step 6 comes first, so the device says *integrity*."""
    path = tmp_path / "flipped.edgepkg"
    save_bundle(_flipped(_seal(model, keyset), len(model) // 2, 0x01), path)
    _refused(path, keyset, tmp_path / "state", IntegrityError, "payload SHA-256 mismatch", built)


def test_a_tampered_chunk_re_signed_is_refused_by_the_aead(
    model: bytes, keyset: KeySet, tmp_path: Path, built: list[int]
) -> None:
    bundle = _seal(model, keyset)
    payload = bytearray(bundle.payload)
    payload[3 * ((1 << 20) + 16) + 100] ^= 0x01  # inside chunk 3
    path = tmp_path / "chunk.edgepkg"
    save_bundle(_resigned(bundle, keyset, bytes(payload)), path)
    _refused(path, keyset, tmp_path / "state", DecryptionError, "chunk 3 of 6 failed", built)


def test_the_payload_hash_is_checked_when_everything_else_passes(
    model: bytes, keyset: KeySet, tmp_path: Path, built: list[int]
) -> None:
    """The genuine model re-encrypted under someone else's key: the AEAD and the model hash pass,
    the signed payload digest does not — and the device refuses it, as an auditor would."""
    path = tmp_path / "re-encrypted.edgepkg"
    save_bundle(_re_encrypted(_seal(model, keyset), keyset, model), path)
    _refused(path, keyset, tmp_path / "state", IntegrityError, "payload SHA-256 mismatch", built)


def test_not_a_recipient_of_a_tampered_payload_is_integrity(
    model: bytes, keyset: KeySet, tmp_path: Path, built: list[int]
) -> None:
    """Step 7 fails at once, but the payload is still read and hashed: step 6 is reported."""
    bundle = _seal(model, keyset)
    path = tmp_path / "both.edgepkg"
    save_bundle(_flipped(bundle, -1, 0x80), path)
    _refused(path, keyset, tmp_path / "state", IntegrityError, "payload SHA-256 mismatch", built,
             device_key=keyset.device2)  # fmt: skip
    save_bundle(bundle, path)  # intact: now step 7 is the first to fail
    _refused(path, keyset, tmp_path / "state", DecryptionError, "not a recipient", built,
             device_key=keyset.device2)  # fmt: skip


def _sparse(constant: np.ndarray) -> np.ndarray:
    """Seven weights in eight zeroed, as pruning leaves them: zstd saves most of the bytes."""
    return np.where(np.arange(constant.size) % 8 == 0, constant, 0).astype(np.float32)


def test_zstd_never_parses_a_stream_the_publisher_did_not_sign(
    constant: np.ndarray, keyset: KeySet, tmp_path: Path, built: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Decryption overlaps the payload hash, decompression does not: an attacker's own stream
    (here a bomb) is decrypted under their key, then refused before zstd sees a byte of it."""
    from edge_sdk.format import compression

    sparse = add_model(_sparse(constant))
    genuine = _seal(sparse, keyset, compression="zstd")
    stored = genuine.manifest.payload.compressed_size
    assert stored is not None
    bomb = compress(bytes(64 << 20), "zstd")
    skippable = struct.pack("<II", 0x184D2A50, stored - len(bomb) - 8)  # pad to the signed size
    stream = bomb + skippable + bytes(stored - len(bomb) - 8)
    calls: list[int] = []
    real = compression.decompress_into

    def watched(data: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(len(data))
        real(data, *args, **kwargs)

    monkeypatch.setattr(compression, "decompress_into", watched)
    path = tmp_path / "bomb.edgepkg"
    save_bundle(_re_encrypted(genuine, keyset, stream), path)
    _refused(path, keyset, tmp_path / "state", IntegrityError, "payload SHA-256 mismatch", built)
    assert calls == [], "zstd parsed an unsigned stream"
    save_bundle(genuine, path)
    with _load(path, keyset, tmp_path / "state") as opened:
        assert calls == [stored] and built == [len(sparse)]
        _answer(opened, _sparse(constant))


# -- compression only where it pays ----------------------------------------------------------------


def test_compression_is_kept_only_where_it_pays(
    model: bytes, constant: np.ndarray, keyset: KeySet, tmp_path: Path
) -> None:
    """Random weights save nothing: stored uncompressed (and said so); zeros keep zstd. Both open."""
    dense = _seal(model, keyset, compression="zstd", compression_level=10)
    report = dense.manifest.reports["compression"]
    assert (
        dense.manifest.payload.compression == "none"
        and dense.manifest.payload.compressed_size is None
    )
    assert report["stored"] == "none" and report["saving"] < MIN_COMPRESSION_SAVING
    sparse_constant = _sparse(constant)
    sparse = _seal(add_model(sparse_constant), keyset, compression="zstd", version=2)
    assert sparse.manifest.payload.compression == "zstd"
    assert sparse.manifest.reports["compression"]["saving"] >= MIN_COMPRESSION_SAVING
    for bundle, expected in ((dense, constant), (sparse, sparse_constant)):
        path = tmp_path / f"v{bundle.manifest.version}.edgepkg"
        save_bundle(bundle, path)
        with _load(path, keyset, tmp_path / "state") as opened:
            _answer(opened, expected)


def test_in_memory_and_file_sources_open_alike(
    model: bytes, keyset: KeySet, tmp_path: Path
) -> None:
    """Views of the caller's bytes, or a ring of read buffers: the same model, for every AEAD and
    chunk size (small chunks make a piece of many chunks)."""
    from edge_sdk.format.bundle import bundle_to_bytes
    from edge_sdk.format.verify import open_bundle

    for aead in ("aes-256-gcm", "chacha20-poly1305"):
        for chunk in (4096, 1 << 20):
            raw = bundle_to_bytes(_seal(model, keyset, aead=aead, chunk_size=chunk))
            path = tmp_path / f"{aead}-{chunk}.edgepkg"
            path.write_bytes(raw)
            for source in (raw, path):
                assert open_bundle(source, keyset.trust(), keyset.device).model_bytes == model


# -- a restart writes nothing that changes nothing -------------------------------------------------


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync / fdatasync, with the thread that made it (the real calls still happen)."""
    seen: list[tuple[str, str]] = []

    def counted(name: str, real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            seen.append((name, threading.current_thread().name))
            real(fd)

        return call

    monkeypatch.setattr(os, "fsync", counted("fsync", os.fsync))
    monkeypatch.setattr(os, "fdatasync", counted("fdatasync", os.fdatasync))
    return seen


def test_a_restart_writes_no_state_and_waits_for_no_sync(
    model: bytes, constant: np.ndarray, keyset: KeySet, tmp_path: Path,
    syncs: list[tuple[str, str]],
) -> None:  # fmt: skip
    state = tmp_path / "state"
    path = tmp_path / "add.edgepkg"
    save_bundle(_seal(model, keyset), path)
    caller = threading.current_thread().name

    # A first install: the audit record is synced, then the state is written and synced.
    syncs.clear()
    _load(path, keyset, state).close()
    mine = [name for name, thread in syncs if thread == caller]
    assert mine[0] == "fdatasync" and mine.count("fsync") >= 2, syncs
    versions = state / "versions.json"
    before = (versions.stat().st_ino, versions.stat().st_mtime_ns, versions.read_bytes())

    # A restart of that version: no state write, and nothing synced on the caller's path.
    audit_log.sync_pending()
    syncs.clear()
    with _load(path, keyset, state) as restarted:
        assert [s for s in syncs if s[1] == caller] == []
        _answer(restarted, constant)
    after = (versions.stat().st_ino, versions.stat().st_mtime_ns, versions.read_bytes())
    assert after == before
    assert not list(state.glob(".versions.json.tmp-*"))
    records = audit_log.verify_log(state / "audit.log").records
    assert [r["event"] for r in records] == ["load", "load"]  # written before load() returned
    audit_log.sync_pending()
    assert ("fdatasync", "edge-sdk-audit-sync") in syncs  # and synced off the caller's path

    # A rejection is evidence: synced before load() returns.
    syncs.clear()
    with pytest.raises(DecryptionError):
        _load(path, keyset, state, device_key=keyset.device2)
    assert ("fdatasync", caller) in syncs


def test_populating_a_buffer_never_changes_it() -> None:
    """The hash worker faults the model's pages in while the decryption writes them: it must
    leave every byte as it finds it, written or not."""
    from edge_sdk.format.memory import freeze, populate, writable_bytes

    data = os.urandom(3 << 20)
    obj, view = writable_bytes(len(data))
    view[: len(data) // 2] = data[: len(data) // 2]
    populate(obj)
    view[len(data) // 2 :] = data[len(data) // 2 :]
    populate(obj)
    assert freeze(obj, view) == data


# -- found by an adversarial review of the one-pass open --------------------------------------------


@pytest.mark.parametrize("memory", ["memfd (sealed)", "bytes"])
def test_a_refused_decompressed_model_is_wiped_and_its_digest_not_quoted(
    constant: np.ndarray, keyset: KeySet, tmp_path: Path, built: list[int],
    monkeypatch: pytest.MonkeyPatch, memory: str,
) -> None:  # fmt: skip
    """A signed zstd payload that decompresses to other bytes than the signed model (a publisher
    mistake, or a stolen signing key): refused at step 10, its plaintext overwritten, and nothing
    derived from it — not even a digest prefix — in the error or the audit log. In sealed memory
    and, where there is none, in a bytes."""
    from edge_sdk.device import sealed_memory
    from edge_sdk.format import verify

    sparse = add_model(_sparse(constant))
    genuine = _seal(sparse, keyset, compression="zstd")
    lie = dataclasses.replace(genuine.manifest.model, sha256="ab" * 32)
    manifest = dataclasses.replace(genuine.manifest, model=lie)
    raw = manifest.to_bytes()
    key = _content_key(genuine, keyset)
    forged = Bundle(1, manifest, raw, sign_manifest(raw, [keyset.signer]),
                    wrap_content_key(key, hashlib.sha256(raw).digest(), [keyset.device.public]),
                    genuine.payload)  # fmt: skip
    buffers: list[memoryview] = []
    real = verify.writable_bytes

    def kept(size: int) -> tuple[bytes, memoryview]:
        obj, view = real(size)
        buffers.append(view)
        return obj, view

    monkeypatch.setattr(verify, "writable_bytes", kept)
    wiped: list[bool] = []
    real_wipe = sealed_memory.wipe

    def checked_wipe(view: memoryview) -> None:
        real_wipe(view)
        wiped.append(len(view) == len(sparse) and not any(view))

    monkeypatch.setattr(sealed_memory, "wipe", checked_wipe)
    if memory == "bytes":
        monkeypatch.setattr(runtime, "unavailable_reason", lambda: "not here (test)")
    else:
        monkeypatch.setattr(runtime, "SEALED_MIN_BYTES", 0)  # this small model into sealed memory
    path = tmp_path / "lie.edgepkg"
    save_bundle(forged, path)
    actual = hashlib.sha256(sparse).hexdigest()
    with pytest.raises(IntegrityError, match="decrypted model SHA-256 mismatch") as caught:
        _load(path, keyset, tmp_path / "state")
    assert built == []
    assert actual[:8] not in str(caught.value)
    assert actual[:8] not in (tmp_path / "state" / "audit.log").read_text()
    if memory == "bytes":
        assert buffers and all(not any(view) for view in buffers), "refused plaintext left"
        assert wiped == []
    else:
        assert wiped == [True], "refused plaintext left in sealed memory"


def test_a_forked_child_loads_after_its_parent(
    model: bytes, constant: np.ndarray, keyset: KeySet, tmp_path: Path
) -> None:
    """Prefork servers load in the parent, then fork workers that load again: the child must not
    inherit hashing workers whose threads it does not have (its first load would hang)."""
    import signal
    import time

    path = tmp_path / "add.edgepkg"
    save_bundle(_seal(model, keyset), path)
    _load(path, keyset, tmp_path / "state").close()  # starts the shared hashing threads
    pid = os.fork()
    if pid == 0:  # the child: load and answer, or exit non-zero
        code = 1
        try:
            with _load(path, keyset, tmp_path / "state") as again:
                _answer(again, constant)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's load() hung")


def test_a_lock_held_across_a_fork_is_released_by_its_holder(tmp_path: Path) -> None:
    """A child forked while an audit append holds the lock shares the lock's open file: leaving
    the lock must release it for both, or the child blocks every later writer while it lives."""
    import fcntl
    import signal

    from edge_sdk.files import locked

    lock = tmp_path / "audit.lock"
    with locked(lock):
        pid = os.fork()
        if pid == 0:
            import time

            time.sleep(30)
            os._exit(0)
    try:
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
        finally:
            os.close(fd)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_file_cut_while_its_header_is_read_is_a_format_error(
    model: bytes, keyset: KeySet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle rewritten in place (``cp`` over it) while a device opens it: the reads come back
    short of the size ``fstat`` gave. That is a truncated file, said as such and logged."""
    from edge_sdk.errors import BundleFormatError
    from edge_sdk.format import bundle as bundle_module

    path = tmp_path / "add.edgepkg"
    save_bundle(_seal(model, keyset), path)
    real = os.pread

    def shrinking(fd: int, n: int, offset: int) -> bytes:
        return real(fd, min(n, max(0, 40 - offset)), offset)  # the file now ends at byte 40

    monkeypatch.setattr(bundle_module.os, "pread", shrinking)
    with pytest.raises(BundleFormatError, match="changed while it was read"):
        _load(path, keyset, tmp_path / "state")
    assert audit_log.verify_log(tmp_path / "state" / "audit.log").records[-1]["event"] == "reject"


def test_a_path_with_a_nul_byte_is_a_usage_error(keyset: KeySet, tmp_path: Path) -> None:
    from edge_sdk.errors import UsageError

    with pytest.raises(UsageError, match="NUL byte"):
        _load(Path(str(tmp_path / "add") + "\0.edgepkg"), keyset, tmp_path / "state")


def test_loading_leaves_ctypes_pythonapi_as_it_was(model: bytes, keyset: KeySet,
                                                   tmp_path: Path) -> None:  # fmt: skip
    """Other code in the process uses ``ctypes.pythonapi`` too; its prototypes are not ours."""
    import ctypes

    as_string = ctypes.pythonapi.PyBytes_AsString
    saved = (as_string.restype, as_string.argtypes)
    as_string.restype, as_string.argtypes = ctypes.c_char_p, None  # as another library set it
    try:
        path = tmp_path / "add.edgepkg"
        save_bundle(_seal(model, keyset), path)
        _load(path, keyset, tmp_path / "state").close()
        assert (as_string.restype, as_string.argtypes) == (ctypes.c_char_p, None)
        assert as_string(ctypes.py_object(b"hello")) == b"hello"
    finally:
        as_string.restype, as_string.argtypes = saved


# -- where the decrypted model lives ---------------------------------------------------------------


def test_a_tflite_model_runs_from_sealed_memory_and_from_bytes_where_there_is_none(
    model: bytes, constant: np.ndarray, keyset: KeySet, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """With memfd sealing, load() decrypts into a sealed memory file that LiteRT maps by path
    (read-only, shared: no second copy), and clones share it; without, the bytes path gives the
    same answers. Each says which it is, in repr and describe()."""
    import fcntl
    import os

    from edge_sdk.device.sealed_memory import SealedMemory

    path = tmp_path / "add.edgepkg"
    save_bundle(_seal(model, keyset), path)
    # A model this small goes to a bytes by default (faster to a first result; runtime.py).
    with _load(path, keyset, tmp_path / "state") as opened:
        assert len(model) < runtime.SEALED_MIN_BYTES and opened.memory == "bytes"
        _answer(opened, constant)
    monkeypatch.setattr(runtime, "SEALED_MIN_BYTES", 0)
    with _load(path, keyset, tmp_path / "state") as opened:
        assert opened.memory == "memfd (sealed)" and "memfd (sealed)" in repr(opened)
        assert opened.describe()["memory"] == "memfd (sealed)"
        memory = opened._model_bytes
        assert isinstance(memory, SealedMemory) and len(memory) == len(model)
        wanted = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        assert fcntl.fcntl(memory.fd, fcntl.F_GET_SEALS) & wanted == wanted
        with pytest.raises(OSError):
            os.pwrite(memory.fd, b"x", 0)
        maps = Path("/proc/self/maps").read_text()
        # LiteRT mapped the memory file itself, read-only and shared (no private copy of it).
        assert any(
            "/memfd:edge-sdk-model" in line and " r--s " in line for line in maps.splitlines()
        )
        _answer(opened, constant)
        with opened.clone() as twin:
            assert twin._model_bytes is memory
            _answer(twin, constant)
        _answer(opened, constant)  # the clone's close left the shared memory alone
    monkeypatch.setattr(runtime, "unavailable_reason", lambda: "no memfd here (test)")
    with _load(path, keyset, tmp_path / "state") as opened:
        assert opened.memory == "bytes" and isinstance(opened._model_bytes, bytes)
        _answer(opened, constant)


def _written_memory(payload: bytes) -> Any:
    from edge_sdk.device.sealed_memory import SealedMemory

    memory = SealedMemory()
    memory.allocate(len(payload))[:] = payload
    return memory


def test_a_page_still_referenced_is_not_sealed_and_is_wiped() -> None:
    """F_SEAL_WRITE is EBUSY while a pipe still holds one of the file's pages (here after a
    splice). F_SEAL_FUTURE_WRITE would seal around it and leave that reference — or a writable
    mapping elsewhere — able to write; so the model is refused, its plaintext zeroed, and a
    fresh memory file seals as usual."""
    from edge_sdk.errors import SealedMemoryError

    payload = os.urandom(3 * 4096)
    memory = _written_memory(payload)
    reader, writer = os.pipe()
    try:
        assert os.splice(memory.fd, writer, 4096, offset_src=0) == 4096
        fd = os.dup(memory.fd)
        with pytest.raises(SealedMemoryError, match="EBUSY"):
            memory.seal()
        assert memory.fd == -1 and not memory.sealed
        assert os.pread(fd, len(payload), 0) == bytes(len(payload))
        os.close(fd)
    finally:
        os.close(reader)
        os.close(writer)
    fresh = _written_memory(payload)
    with fresh:
        fresh.seal()
        assert fresh.write_seal == "F_SEAL_WRITE"


def test_a_child_forked_while_the_model_is_written_inherits_no_mapping_of_it() -> None:
    """A fork between allocate and seal (a pre-fork server, multiprocessing's fork) must not
    hand the child a writable mapping: it could rewrite the model after the checks."""
    payload = os.urandom(4 * 4096)
    memory = _written_memory(payload)
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: does it map the model?
        os.close(go_w)
        maps = Path("/proc/self/maps").read_text()
        mapped = "/memfd:edge-sdk-model" in maps
        os.read(go_r, 1)  # alive while the parent seals
        os._exit(3 if mapped else 0)
    os.close(go_r)
    try:
        with memory:
            memory.seal()
            assert memory.write_seal == "F_SEAL_WRITE"
            with open(memory.path, "rb") as reopened:
                assert reopened.read() == payload
    finally:
        os.write(go_w, b"x")
        os.close(go_w)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child inherited the model's mapping"


def test_a_child_forked_while_the_model_is_written_cannot_write_through_its_descriptor() -> None:
    """The descriptor is inherited across fork (close-on-exec acts on exec only), and pwrite
    through it needs no mapping: a child wrote 1e6 into a verified model after its hash was
    taken (hostile review). The child's copies of an unsealed memory file are closed at fork."""
    import errno

    payload = os.urandom(4 * 4096)
    memory = _written_memory(payload)
    pid = os.fork()
    if pid == 0:  # any descriptor of it: ours, or the one Python's mmap dups for itself
        code = 0
        for name in os.listdir("/proc/self/fd"):
            try:
                if "memfd:edge-sdk-model" in os.readlink(f"/proc/self/fd/{name}"):
                    os.pwrite(int(name), b"EVIL!", 0)
                    code = 3
            except OSError as exc:
                code = code or (0 if exc.errno in (errno.EBADF, errno.ENOENT) else 4)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could write the model"
    with memory:
        memory.seal()
        with open(memory.path, "rb") as reopened:
            assert reopened.read() == payload


def test_a_model_left_mapped_writable_is_not_sealed_and_is_wiped() -> None:
    """A writable mapping that is not ours (here a second one of the same file) would let the
    model change after the checks: sealing is refused, and the plaintext is zeroed."""
    import mmap

    from edge_sdk.errors import SealedMemoryError

    payload = os.urandom(2 * 4096)
    memory = _written_memory(payload)
    stray = mmap.mmap(memory.fd, len(payload), flags=mmap.MAP_SHARED,
                      prot=mmap.PROT_READ | mmap.PROT_WRITE)  # fmt: skip
    try:
        fd = os.dup(memory.fd)
        with pytest.raises(SealedMemoryError, match="still mapped writable"):
            memory.seal()
        assert memory.fd == -1 and not memory.sealed
        assert os.pread(fd, len(payload), 0) == bytes(len(payload))
        assert stray[:] == bytes(len(payload))
        os.close(fd)
    finally:
        stray.close()
