"""The packed weights of an LLM, kept encrypted between starts (edge_sdk.device.weight_cache).

XNNPACK repacks a model's weights for the CPU as LiteRT-LM builds the engine; plain LiteRT-LM
keeps them in plaintext beside the model. ``load_llm`` saves them encrypted in the device's
state directory and decrypts them into sealed memory on later starts. These tests run the real
engine on the fixture model: the tokens must equal plain LiteRT-LM's from every kind of start,
the plaintext packed weights must be nowhere on disk, and no cache that does not open is ever
given to the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import time
from pathlib import Path
from typing import Any

import pytest

import edge_sdk
from edge_sdk.device.weight_cache import HEADER_SIZE, MAGIC

from .conftest import CliResult, KeySet
from .llm_fixture import engine, greedy_ids

TOKENS = 16


@pytest.fixture(scope="module")
def plain_ids(tiny_llm: Any) -> list[int]:
    eng = engine(tiny_llm.path, tiny_llm.max_num_tokens)
    try:
        return greedy_ids(eng, tiny_llm.prompt, TOKENS)
    finally:
        eng.close()


@pytest.fixture
def bundle(tmp_path: Path, tiny_llm: Any, key_files: dict[str, Path], cli: Any) -> Path:
    out = tmp_path / "tiny.edgepkg"
    result: CliResult = cli("package", tiny_llm.path, "--profile", "x86_64", "--name",
                                   "tiny", "--version", "3", "--sign-key", key_files["signer"],
                                   "--recipient", key_files["device.pub"], "-o", out)  # fmt: skip
    assert result.code == 0, result.err
    return out


def _open(bundle: Path, keyset: KeySet, state: Path, **options: Any) -> Any:
    return edge_sdk.load_llm(bundle, trust=keyset.trust(), device_key=keyset.device,
                             state_dir=state, profile="x86_64", **options)  # fmt: skip


def _ids(model: Any, prompt: str) -> list[int]:
    ids: list[int] = model.tokenize(model.generate(prompt, max_tokens=TOKENS))
    return ids


def _cache_file(state: Path) -> Path:
    (found,) = (state / "weight-cache").glob("*.wcache")
    return found


def _files(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


def test_the_packed_weights_are_saved_encrypted_and_the_next_start_uses_them(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int]
) -> None:
    state = tmp_path / "state"
    with _open(bundle, keyset, state) as first:
        assert first.weight_cache.startswith("memfd (packed this start; saved encrypted")
        assert first.weight_cache_problem is None
        assert _ids(first, tiny_llm.prompt) == plain_ids
    saved = _cache_file(state)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "weight-cache").stat().st_mode) == 0o700
    assert saved.read_bytes()[:16] == MAGIC
    with _open(bundle, keyset, state) as second:
        assert second.weight_cache.startswith("encrypted on disk")
        assert second.describe()["weight_cache"] == second.weight_cache
        assert _ids(second, tiny_llm.prompt) == plain_ids
        # The packed weights as the engine maps them: none of their bytes is on disk.
        memory = second._cache_memory
        packed = os.pread(memory.fd, memory.size, 0)
    assert len(packed) > 100_000
    windows = [
        packed[at : at + 48] for at in range(len(packed) // 8, len(packed), len(packed) // 8)
    ]
    windows = [w for w in windows if len(set(w)) > 16]  # weights, not padding
    assert len(windows) >= 4
    for path in _files(tmp_path):
        data = path.read_bytes()
        assert not [w for w in windows if w in data], f"packed weights in plaintext: {path}"


def _saved_cache(bundle: Path, keyset: KeySet, state: Path) -> Path:
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
    return _cache_file(state)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("flip a byte of the packed weights", "failed authentication"),
        ("flip a byte of the header's salt", "does not open with this device's key"),
        ("flip a byte of the key check", "does not open with this device's key"),
        ("cut the file short", "cut short"),
        ("declare 2**60 bytes", "declares"),
        ("declare 16 MiB chunks", "declares"),
        ("not a cache at all", "not a weight cache"),
        ("another device's cache of the same bundle", "does not open with this device's key"),
        ("a symlink to another file", "cannot open"),
        ("a FIFO", "not a weight cache"),
    ],
)
def test_a_cache_that_does_not_open_is_never_used_and_is_rebuilt(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int],
    damage: str, reason: str,
) -> None:  # fmt: skip
    state = tmp_path / "state"
    saved = _saved_cache(bundle, keyset, state)
    if damage == "flip a byte of the packed weights":
        _flip(saved, saved.stat().st_size // 2)
    elif damage == "flip a byte of the header's salt":
        _flip(saved, 40)
    elif damage == "flip a byte of the key check":
        _flip(saved, HEADER_SIZE - 1)
    elif damage == "declare 16 MiB chunks":
        data = bytearray(saved.read_bytes())
        data[56:60] = struct.pack(">I", 16 << 20)
        saved.write_bytes(bytes(data))
    elif damage == "cut the file short":
        os.truncate(saved, saved.stat().st_size - 100)
    elif damage == "declare 2**60 bytes":
        data = bytearray(saved.read_bytes())
        data[48:56] = struct.pack(">Q", 2**60)
        saved.write_bytes(bytes(data))
    elif damage == "not a cache at all":
        saved.write_bytes(b"\0" * (HEADER_SIZE + 10))
    elif damage == "another device's cache of the same bundle":
        # The same content key (the same bundle), another device's secret: a peer of a fleet
        # release cannot forge this device's cache.
        other = _saved_cache(bundle, keyset, tmp_path / "other")
        shutil.copyfile(other, saved)
    elif damage == "a symlink to another file":
        target = tmp_path / "elsewhere.wcache"
        shutil.copyfile(saved, target)
        saved.unlink()
        saved.symlink_to(target)
    elif damage == "a FIFO":
        saved.unlink()
        os.mkfifo(saved)  # a blocking open would hang the load
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache_problem is not None and reason in model.weight_cache_problem
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
        assert _ids(model, tiny_llm.prompt) == plain_ids
    # The device's audit log says so too, not only a warning on stderr.
    record = json.loads((state / "audit.log").read_text().splitlines()[-1])
    assert record["event"] == "load" and reason in record["weight_cache_problem"]
    # It was replaced by a good one: the next start uses it.
    assert not _cache_file(state).is_symlink()
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("encrypted on disk"), model.describe()
        assert model.weight_cache_problem is None
        assert _ids(model, tiny_llm.prompt) == plain_ids


def test_a_cache_directory_other_users_can_write_is_not_used(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int]
) -> None:
    state = tmp_path / "state"
    _saved_cache(bundle, keyset, state)
    os.chmod(state / "weight-cache", 0o777)
    with _open(bundle, keyset, state) as model:
        assert "open to other users" in (model.weight_cache_problem or "")
        assert _ids(model, tiny_llm.prompt) == plain_ids


def test_memory_mode_stores_nothing_and_a_bad_mode_is_refused(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int],
    cli: Any, key_files: dict[str, Path],
) -> None:  # fmt: skip
    state = tmp_path / "state"
    with _open(bundle, keyset, state, weight_cache="memory") as model:
        assert model.weight_cache == "memfd (packed this start)"
        assert _ids(model, tiny_llm.prompt) == plain_ids
    assert not (state / "weight-cache").exists()
    with pytest.raises(edge_sdk.errors.UsageError, match="weight_cache must be one of"):
        _open(bundle, keyset, state, weight_cache="disk")
    common = ("--trust", key_files["signer.pub"], "--device-key", key_files["device"],
              "--state-dir", state, "--profile", "x86_64")  # fmt: skip
    bad = cli("run", bundle, "--prompt", "hi", "--weight-cache", "plain", *common)
    assert bad.code == 2 and "--weight-cache must be" in bad.err
    ran = cli("run", bundle, "--prompt", tiny_llm.prompt, "--max-tokens", 4, "--json", *common)
    assert ran.code == 0, ran.err
    assert ran.json()["weight_cache"].startswith("memfd (packed this start; saved encrypted")
    again = cli("run", bundle, "--prompt", tiny_llm.prompt, "--max-tokens", 4, "--json", *common)
    assert again.json()["weight_cache"].startswith("encrypted on disk")
    assert again.json()["text"] == ran.json()["text"]


def test_a_new_version_replaces_the_cache_of_the_old_one(
    bundle: Path, keyset: KeySet, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    saved = _saved_cache(bundle, keyset, state)
    name_id = saved.name.split("-")[0]
    older = saved.with_name(f"{name_id}-{'0' * 32}.wcache")  # another model of the same name
    unrelated = saved.with_name(f"{'1' * 16}-{'0' * 32}.wcache")  # another bundle name
    shutil.copyfile(saved, older)
    shutil.copyfile(saved, unrelated)
    saved.unlink()
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
    assert saved.exists() and not older.exists() and unrelated.exists()


def test_another_release_of_the_same_model_replaces_the_cache_quietly(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int],
    cli: Any, key_files: dict[str, Path],
) -> None:  # fmt: skip
    """v4 of the same model has another content key: v3's cache cannot open for it, which is no
    sign of tampering (the new-user walkthrough saw a 'tampered' warning on every upgrade)."""
    state = tmp_path / "state"
    saved = _saved_cache(bundle, keyset, state)
    v4 = tmp_path / "tiny-v4.edgepkg"
    made = cli("package", tiny_llm.path, "--profile", "x86_64", "--name", "tiny", "--version", "4",
               "--sign-key", key_files["signer"], "--recipient", key_files["device.pub"], "-o", v4)  # fmt: skip
    assert made.code == 0, made.err
    with _open(v4, keyset, state) as model:
        assert model.weight_cache_problem is None
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
        assert _ids(model, tiny_llm.prompt) == plain_ids
    assert _cache_file(state) == saved  # the same model: the same file, now v4's
    with _open(v4, keyset, state) as model:
        assert model.weight_cache.startswith("encrypted on disk")


def test_what_is_planted_in_the_cache_directory_never_fails_a_load(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int]
) -> None:
    """A directory where the cache goes, a symlink or an empty file as the secret, a partial
    save nobody writes: the model loads and generates what plain LiteRT-LM does, every time."""
    import fcntl

    state = tmp_path / "state"
    saved = _saved_cache(bundle, keyset, state)
    cache_dir = state / "weight-cache"
    saved.unlink()
    saved.mkdir()  # the cache's own name, taken by a directory
    for _ in range(2):
        with _open(bundle, keyset, state) as model:
            assert "not a weight cache" in (model.weight_cache_problem or "")
            assert _ids(model, tiny_llm.prompt) == plain_ids
    saved.rmdir()
    secret = cache_dir / "secret"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"s" * 32)
    secret.unlink()
    secret.symlink_to(target)  # a secret must be this device's own file
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
        assert _ids(model, tiny_llm.prompt) == plain_ids
    assert not secret.is_symlink() and secret.stat().st_size == 32 and target.exists()
    secret.write_bytes(b"")  # a secret cut short (a kill between create and write)
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("encrypted on disk")  # the new secret keys it
    # Partial saves: one whose writer died goes on the next save, one being written stays.
    dead = cache_dir / ".partial-dead"
    dead.write_bytes(b"x" * 1000)
    live = cache_dir / ".partial-live"
    live.write_bytes(b"y")
    fresh = cache_dir / ".partial-fresh"  # made a moment ago: perhaps not locked yet
    fresh.write_bytes(b"z")
    hour_ago = time.time() - 3600
    for old in (dead, live):
        os.utime(old, (hour_ago, hour_ago))
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        _cache_file(state).unlink()
        with _open(bundle, keyset, state) as model:
            assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
        assert not dead.exists() and live.exists() and fresh.exists()
    finally:
        os.close(holder)


def test_the_packed_weights_are_sealed_once_the_engine_is_built(
    bundle: Path, keyset: KeySet, tmp_path: Path
) -> None:
    """The memory file the engine packs into stayed writable: another process of the user (or a
    fork) rewrote the live model's weights, and those were saved and authenticated. It is sealed
    against writes and resizing once the engine is built, before it is saved."""
    import errno
    import fcntl

    with _open(bundle, keyset, tmp_path / "state") as model:
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
        packed = [int(n) for n in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{n}")
                  and os.readlink(f"/proc/self/fd/{n}").startswith("/memfd:edge-sdk-weight-cache")]  # fmt: skip
        assert packed  # the engine's own descriptors of it
        for fd in packed:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
            assert seals & (fcntl.F_SEAL_WRITE | 0x0010)  # F_SEAL_WRITE or F_SEAL_FUTURE_WRITE
            with pytest.raises(OSError) as refused:
                os.pwrite(fd, b"x", 0)
            assert refused.value.errno == errno.EPERM
            with pytest.raises(OSError):
                os.ftruncate(fd, 0)
        # The engine's mappings were made before the seal (mprotect could make them writable):
        # a child forked now has none of them.
        inode = str(os.fstat(packed[0]).st_ino)
        mine = [line for line in Path("/proc/self/maps").read_text().splitlines()
                if line.split()[4:5] == [inode]]  # fmt: skip
        assert mine
        child = os.fork()
        if child == 0:  # pragma: no cover (the child)
            theirs = [line for line in Path("/proc/self/maps").read_text().splitlines()
                      if line.split()[4:5] == [inode]]  # fmt: skip
            os._exit(0 if not theirs else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a forked child maps the packed weights"


def test_a_cache_the_engine_does_not_map_is_said_and_removed(
    bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A cache that opens (authenticated) but that XNNPACK refuses (another build of it under
    the same version string): the engine packs into the heap instead. That is said, not hidden
    behind 'encrypted on disk', and the cache is removed so the next start packs a new one."""
    from edge_sdk.device import weight_cache
    from edge_sdk.device.sealed_memory import SealedMemory

    state = tmp_path / "state"
    _saved_cache(bundle, keyset, state)
    real_open = weight_cache.WeightCacheStore.open

    def refused_by_xnnpack(self: Any) -> Any:
        genuine = real_open(self)
        packed = bytearray(os.pread(genuine.fd, genuine.size, 0))
        genuine.close()
        packed[8:64] = b"\xff" * 56  # XNNPACK's own header, spoiled
        other = SealedMemory(len(packed))
        view = other.allocate(len(packed))
        view[:] = packed
        view.release()
        other.seal()
        return other

    monkeypatch.setattr(weight_cache.WeightCacheStore, "open", refused_by_xnnpack)
    with _open(bundle, keyset, state) as model:
        assert "did not map" in (model.weight_cache_problem or ""), model.describe()
        assert model.weight_cache == "heap (packed this start)"
        assert _ids(model, tiny_llm.prompt) == plain_ids
    assert not list((state / "weight-cache").glob("*.wcache"))
    monkeypatch.undo()
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")


def test_a_process_that_loaded_a_model_is_not_dumpable(
    bundle: Path, key_files: dict[str, Path], tmp_path: Path
) -> None:
    """A core dump wrote the plaintext model and packed weights to disk, and while dumpable any
    process of the same user could open /proc/<pid>/fd/N of the memfd read-write before it was
    sealed. A load makes the process non-dumpable first."""
    import subprocess
    import sys

    code = (
        "import ctypes, resource, edge_sdk\n"
        "from edge_sdk.device.runtime import as_trust\n"
        "from edge_sdk.format.verify import open_bundle\n"
        "from edge_sdk.keys import load_private_key\n"
        "libc = ctypes.CDLL(None)\n"
        "print(libc.prctl(3, 0, 0, 0, 0))\n"  # PR_GET_DUMPABLE
        # What `edge-sdk verify --device-key` and the fleet agent run: it decrypts too.
        f"open_bundle({str(bundle)!r}, as_trust({str(key_files['signer.pub'])!r}), "
        f"load_private_key({str(key_files['device'])!r}, kind='device'))\n"
        "print(libc.prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE)[1],"
        " open('/proc/self/coredump_filter').read().strip())\n"
        f"m = edge_sdk.load_llm({str(bundle)!r}, trust={str(key_files['signer.pub'])!r}, "
        f"device_key={str(key_files['device'])!r}, state_dir={str(tmp_path / 's')!r}, "
        "profile='x86_64')\n"
        "print(libc.prctl(3, 0, 0, 0, 0))\n"
        "m.close()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["1", "0", "0", "00000000", "0"]


def test_a_passing_error_reading_the_secret_keeps_it(
    bundle: Path, keyset: KeySet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors (EMFILE) while the secret is opened: the secret was taken for a bad
    one and replaced, and every cache of every model made under it was lost (second review)."""
    import errno

    from edge_sdk.device import weight_cache

    state = tmp_path / "state"
    _saved_cache(bundle, keyset, state)
    secret = state / "weight-cache" / "secret"
    before = secret.read_bytes()
    real_open = os.open

    def out_of_descriptors(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("/secret"):
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(weight_cache.os, "open", out_of_descriptors)
    with _open(bundle, keyset, state) as model:
        assert "cannot read" in (model.weight_cache_problem or "")
    monkeypatch.undo()
    assert secret.read_bytes() == before
    with _open(bundle, keyset, state) as model:
        assert model.weight_cache.startswith("encrypted on disk")
