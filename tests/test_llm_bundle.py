"""LLM bundles end to end: a .litertlm packaged by the CLI, opened by ``load_llm`` from sealed
memory, generating exactly what plain LiteRT-LM generates from the plain file.

The model is the generated one of tests/llm_fixture.py (a litert-torch decoder, a SentencePiece
tokenizer, packed by litert-lm-builder); litert-lm-api is the real engine throughout.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import edge_sdk
from edge_sdk.device.llm import filesystem_of
from edge_sdk.errors import (
    DecryptionError,
    IntegrityError,
    ModelInputError,
    ModelKindError,
    RollbackError,
    SignatureError,
)
from edge_sdk.format.litertlm import read_litertlm

from .conftest import CliResult, KeySet, make_bundle_bytes
from .llm_fixture import engine, greedy_ids

TOKENS = 16
PROMPT_2 = "simple is better than complex"


@pytest.fixture(scope="module")
def plain_ids(tiny_llm: Any) -> dict[str, list[int]]:
    """What plain LiteRT-LM generates greedily from the plain file, per prompt."""
    eng = engine(tiny_llm.path, tiny_llm.max_num_tokens)
    try:
        return {p: greedy_ids(eng, p, TOKENS) for p in (tiny_llm.prompt, PROMPT_2)}
    finally:
        eng.close()


@pytest.fixture
def llm_bundle(tmp_path: Path, tiny_llm: Any, cli: Any, key_files: dict[str, Path]) -> Path:
    """The fixture model packaged the way the README says, for this machine's profile."""
    out = tmp_path / "tiny.edgepkg"
    result: CliResult = cli("package", tiny_llm.path, "--profile", "x86_64", "--name", "tiny",
                            "--version", "3", "--sign-key", key_files["signer"],
                            "--recipient", key_files["device.pub"], "-o", out)  # fmt: skip
    assert result.code == 0, result.err
    assert "LiteRT-LM" in result.out and "→ tflite" not in result.out
    assert "FAILED" not in result.out and "accuracy" not in result.out
    return out


def _open(bundle: Path, keyset: KeySet, state: Path, **options: Any) -> Any:
    options.setdefault("profile", "x86_64")
    return edge_sdk.load_llm(bundle, trust=keyset.trust(), device_key=keyset.device,
                             state_dir=state, **options)  # fmt: skip


def _ids(model: Any, prompt: str) -> list[int]:
    ids: list[int] = model.tokenize(model.generate(prompt, max_tokens=TOKENS))
    return ids


def test_sealed_bundle_generates_what_plain_litert_lm_generates(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, plain_ids: dict[str, list[int]]
) -> None:
    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        assert "memfd (sealed)" in repr(model) and model.describe()["memory"] == "memfd (sealed)"
        for prompt, expected in plain_ids.items():
            assert len(expected) == TOKENS and len(set(expected)) > 3  # a run that can differ
            assert _ids(model, prompt) == expected
        # Streaming yields the same tokens, one piece per token.
        pieces = list(model.stream(tiny_llm.prompt, max_tokens=TOKENS))
        assert [model.tokenize(p) for p in pieces] == [[i] for i in plain_ids[tiny_llm.prompt]]
    assert model.closed
    with pytest.raises(edge_sdk.errors.UsageError, match="closed"):
        model.generate("x")


def test_the_decrypted_model_is_in_sealed_memory_and_never_on_disk(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tiny_llm.path.read_bytes()
    info = read_litertlm(plain)
    weights = next(s for s in info.sections if s.kind == "tflite_model")
    # 64 bytes from the middle of the weights: a copy of the model anywhere would contain them.
    needle = plain[(weights.begin + weights.end) // 2 :][:64]
    assert plain.count(needle) == 1
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime_dir))
    import litert_lm

    # Plain LiteRT-LM writes an XNNPACK weight cache (repacked plaintext weights) beside the
    # model path, as it builds the engine: list what is beside the path the engine was given.
    beside: list[list[str]] = []
    used: list[str] = []
    real_engine = litert_lm.Engine

    def engine_watched(path: str, *args: Any, **kwargs: Any) -> Any:
        built = real_engine(path, *args, **kwargs)
        beside.append(sorted(os.listdir(os.path.dirname(path))))
        used.append(os.path.realpath(os.path.dirname(path)))  # the held directory, by name
        return built

    monkeypatch.setattr(litert_lm, "Engine", engine_watched)
    watched = [tmp_path, Path(tempfile.gettempdir()), Path("/dev/shm"), Path.cwd()]
    before = {p for d in watched for p in _files(d)}
    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        sealed = model._sealed
        seals = fcntl.fcntl(sealed.fd, fcntl.F_GET_SEALS)
        wanted = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        assert seals & wanted == wanted
        with pytest.raises(OSError) as refused:  # the kernel itself refuses a write now
            os.pwrite(sealed.fd, b"x", 0)
        assert refused.value.errno == errno.EPERM
        assert os.pread(sealed.fd, 64, (weights.begin + weights.end) // 2) == needle
        assert os.readlink(f"/proc/self/fd/{sealed.fd}").startswith("/memfd:")
        model.generate(tiny_llm.prompt, max_tokens=4)
        # Beside the engine's path were its symlink and (in memory) the weight cache; that
        # directory was on a memory filesystem (the disk-backed XDG_RUNTIME_DIR was passed
        # over) and is gone now.
        (model_name,) = [n for n in beside[0] if n.endswith(".litertlm")]
        assert [n for n in beside[0] if n != model_name] == [n for n in beside[0]
                if n.startswith(model_name + "_") and n.endswith(".xnnpack_cache")]  # fmt: skip
        assert model.weight_cache.startswith("memfd (packed this start; saved encrypted")
        assert filesystem_of(used[0]) in ("tmpfs", "ramfs") and not os.path.exists(used[0])
        assert not list(runtime_dir.iterdir())
        new = {p for d in watched for p in _files(d)} - before
        holding = [p for p in new if _contains(p, needle)]
        assert not holding, f"plaintext model bytes on disk: {holding}"
        # No weight cache (plaintext, repacked) beside any path LiteRT-LM saw.
        assert not [p for p in new if p.name.endswith(".xnnpack_cache")]
    assert sealed.fd < 0  # released on close


def _files(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for root, dirs, files in os.walk(directory, onerror=lambda e: None):
        dirs[:] = [d for d in dirs if d not in (".venv", ".git", "test-models", "llm-build")]
        for name in files:
            yield Path(root, name)


def _contains(path: Path, needle: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return needle in handle.read(64 << 20)
    except OSError:
        return False


def test_every_refusal_comes_before_the_engine_and_a_genuine_load_follows(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    plain_ids: dict[str, list[int]], tiny_llm: Any,
) -> None:  # fmt: skip
    """Tampered payload, another device's key, an untrusted signer, a .tflite bundle, an older
    release: each is its typed error, the engine is never built, and the same state dir then
    opens the genuine bundle."""
    import litert_lm

    built: list[str] = []
    real_engine = litert_lm.Engine

    def recording(path: str, *args: Any, **kwargs: Any) -> Any:
        built.append(path)
        return real_engine(path, *args, **kwargs)

    monkeypatch.setattr(litert_lm, "Engine", recording)
    state = tmp_path / "state"
    data = llm_bundle.read_bytes()
    tampered = tmp_path / "tampered.edgepkg"
    tampered.write_bytes(data[:-100] + bytes([data[-100] ^ 1]) + data[-99:])
    cases: list[tuple[Any, type[Exception], dict[str, Any]]] = [
        (tampered, IntegrityError, {}),
        (llm_bundle, DecryptionError, {"device_key": keyset.device2}),
        (llm_bundle, SignatureError, {"trust": keyset.trust(keyset.signer2)}),
        (make_bundle_bytes(keyset, name="tiny"), ModelKindError, {}),
    ]
    for source, error, options in cases:
        kwargs = {"trust": keyset.trust(), "device_key": keyset.device, "state_dir": state,
                  "profile": "x86_64", **options}  # fmt: skip
        with pytest.raises(error):
            edge_sdk.load_llm(source, **kwargs)
        assert built == [], f"{error.__name__}: the engine was built before the refusal"
    # A .litertlm bundle given to the .tflite loader says which loader runs it.
    with pytest.raises(ModelKindError) as caught:
        edge_sdk.load(llm_bundle, trust=keyset.trust(), device_key=keyset.device, state_dir=state,
                      profile="x86_64")  # fmt: skip
    assert "load_llm" in (caught.value.hint or "")
    assert "run --prompt" in (caught.value.hint or "")  # run itself takes LLM bundles
    with _open(llm_bundle, keyset, state) as model:
        assert _ids(model, tiny_llm.prompt) == plain_ids[tiny_llm.prompt]
    assert len(built) == 1
    # Anti-rollback applies: v3 was accepted, so a v2 of the same name is refused.
    older = tmp_path / "older.edgepkg"
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.profiles import load_profile

    package_model(tiny_llm.path, older, load_profile("x86_64"), PackageOptions(name="tiny", version=2),
                  [keyset.signer], [keyset.device.public])  # fmt: skip
    with pytest.raises(RollbackError):
        _open(older, keyset, state)
    assert len(built) == 1
    import json

    records = [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]
    assert [r["event"] for r in records].count("reject") == 6
    assert [r.get("memory") for r in records if r["event"] == "load"] == ["memfd (sealed)"]


def test_the_cli_generates_and_chats(
    llm_bundle: Path, cli: Any, key_files: dict[str, Path], tmp_path: Path, tiny_llm: Any,
    plain_ids: dict[str, list[int]], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    common = ("--trust", key_files["signer.pub"], "--device-key", key_files["device"],
              "--state-dir", tmp_path / "state", "--profile", "x86_64")  # fmt: skip
    eng = engine(tiny_llm.path, tiny_llm.max_num_tokens)
    try:
        expected = eng.detokenize(plain_ids[tiny_llm.prompt])
    finally:
        eng.close()
    result = cli("run", llm_bundle, "--prompt", tiny_llm.prompt, "--max-tokens", TOKENS, *common)
    assert result.code == 0, result.err
    assert result.out.strip() == expected.strip()
    result = cli("run", llm_bundle, "--prompt", tiny_llm.prompt, "--max-tokens", TOKENS, "--json",
                 *common)  # fmt: skip
    assert result.code == 0 and result.json()["text"].strip() == expected.strip()
    assert result.json()["memory"] == "memfd (sealed)"
    # Neither or both of --input and --prompt is a usage error.
    assert cli("run", llm_bundle, *common).code == 2  # UsageError
    # chat: one prompt per line of stdin, replies streamed, ends at end of input.
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{tiny_llm.prompt}\n{PROMPT_2}\n"))
    result = cli("chat", llm_bundle, "--max-tokens", 8, *common)
    assert result.code == 0, result.err
    replies = [line for line in result.out.splitlines() if line.strip()]
    assert len(replies) == 2 and all(replies)


def test_hostile_litertlm_headers_are_refused_when_packaging(
    tiny_llm: Any, tmp_path: Path, keyset: KeySet
) -> None:
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.profiles import load_profile

    plain = tiny_llm.path.read_bytes()
    header_end = int.from_bytes(plain[24:32], "little")
    import struct

    cases = {
        "cut in the header": plain[: header_end - 8],
        "magic only": plain[:8],
        "not LiteRT-LM": b"LITERTLX" + plain[8:],
        "major version 2": plain[:8] + struct.pack("<I", 2) + plain[12:],
        "header end past the file": plain[:24] + struct.pack("<Q", len(plain) + 1) + plain[32:],
        "header end inside the preamble": plain[:24] + struct.pack("<Q", 8) + plain[32:],
        "garbled header": plain[:32] + bytes(b ^ 0x5A for b in plain[32:header_end]) + plain[header_end:],
        "sections past the end": plain[: len(plain) // 2],
    }  # fmt: skip
    for what, data in cases.items():
        path = tmp_path / "bad.litertlm"
        path.write_bytes(data)
        with pytest.raises(ModelInputError, match="LiteRT-LM"):
            package_model(path, tmp_path / "bad.edgepkg", load_profile("x86_64"),
                          PackageOptions(name="bad", version=1), [keyset.signer],
                          [keyset.device.public])  # fmt: skip
        assert not (tmp_path / "bad.edgepkg").exists(), what


def _with_sections(plain: bytes, spans: dict[int, tuple[int, int]]) -> bytes:
    """``plain`` with section ``i``'s begin/end offsets rewritten in its header."""
    info = read_litertlm(plain)
    data = bytearray(plain)
    header_end = int.from_bytes(plain[24:32], "little")
    for i, (begin, end) in spans.items():
        old = info.sections[i]
        # Each offset is a little-endian uint64 in the header; the fixture's are distinct.
        for was, now in ((old.begin, begin), (old.end, end)):
            at = bytes(data[:header_end]).index(was.to_bytes(8, "little"), 32)
            data[at : at + 8] = now.to_bytes(8, "little")
    return bytes(data)


def test_litertlm_sections_that_overlap_or_are_empty_are_refused_when_packaging(
    tiny_llm: Any, tmp_path: Path, keyset: KeySet
) -> None:
    """The engine refuses such a file only when it opens it, on the board, with a generic error:
    the packager names the sections."""
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.profiles import load_profile

    plain = tiny_llm.path.read_bytes()
    header_end = int.from_bytes(plain[24:32], "little")
    [meta, tokenizer, weights] = read_litertlm(plain).sections
    cases = {
        "overlap a": ("sections overlap", {1: (tokenizer.begin, weights.begin + 10)}),
        "overlap b": ("sections overlap", {0: (meta.begin, tokenizer.begin + 1)}),
        "empty": ("is empty", {0: (meta.begin, meta.begin)}),
        "past the end": ("outside the file", {2: (weights.begin, len(plain) + 1)}),
        "in the header": ("outside the file", {0: (header_end - 8, meta.end)}),
    }
    for what, (message, spans) in cases.items():
        path = tmp_path / "bad.litertlm"
        path.write_bytes(_with_sections(plain, spans))
        with pytest.raises(ModelInputError, match=message) as caught:
            package_model(path, tmp_path / "bad.edgepkg", load_profile("x86_64"),
                          PackageOptions(name="bad", version=1), [keyset.signer],
                          [keyset.device.public])  # fmt: skip
        assert caught.value.exit_code == 60 and "litert-lm-builder" in (caught.value.hint or "")
        assert not (tmp_path / "bad.edgepkg").exists(), what


def test_a_litertlm_too_large_for_the_board_is_refused_before_it_is_read(
    tiny_llm: Any, tmp_path: Path, keyset: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size is checked from the open file first: a model larger than the profile's RAM is
    refused without reading it into the packager's memory."""
    from edge_sdk.device import llm
    from edge_sdk.errors import CompatibilityError
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.profiles import load_profile

    # The fixture is small and profiles have at least 64 MiB: the device's LLM cap stands in.
    monkeypatch.setattr(llm, "MAX_LLM_BYTES", tiny_llm.size - 1)
    # Reading the whole file, or parsing it, before the size check fails the test.
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read_bytes({self})"))
    monkeypatch.setattr("edge_sdk.format.litertlm.read_litertlm", lambda *a: pytest.fail("read"))
    with pytest.raises(CompatibilityError, match="more than x86_64 can open"):
        package_model(tiny_llm.path, tmp_path / "big.edgepkg", load_profile("x86_64"),
                      PackageOptions(name="big", version=1), [keyset.signer],
                      [keyset.device.public])  # fmt: skip


def test_doctor_says_where_llm_bundles_open(cli: Any) -> None:
    result = cli("doctor", "--json")
    checks = {c["name"]: c for c in result.json()["checks"]}
    assert (
        checks["sealed memory"]["status"] == "ok" and "memfd" in checks["sealed memory"]["detail"]
    )
    assert checks["llm runtime"]["detail"].startswith("litert-lm-api 0.18")


def test_an_llm_bundle_deploys_and_runs_from_the_layout(
    llm_bundle: Path, cli: Any, key_files: dict[str, Path], tmp_path: Path, keyset: KeySet,
    tiny_llm: Any, plain_ids: dict[str, list[int]],
) -> None:  # fmt: skip
    """deploy checks an LLM bundle like any other (the profile's .tflite runtime does not apply
    to it) and the board opens ``<root>/tiny/current`` from sealed memory."""
    board = tmp_path / "board"
    board.mkdir()
    result = cli("deploy", llm_bundle, "--target", board, "--trust", key_files["signer.pub"])
    assert result.code == 0, result.err
    with _open(board / "tiny" / "current", keyset, tmp_path / "state") as model:
        assert _ids(model, tiny_llm.prompt) == plain_ids[tiny_llm.prompt]
    # A device policy of a .tflite profile (as the TUF agent applies) accepts it too.
    from edge_sdk.format.bundle import read_bundle
    from edge_sdk.format.verify import Policy, check_bundle

    check_bundle(read_bundle(llm_bundle), Policy(keyset.trust(), profile="x86_64",
                 runtime_package="ai-edge-litert"))  # fmt: skip


def test_without_a_memory_filesystem_no_weight_cache_is_written(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, monkeypatch: pytest.MonkeyPatch,
    plain_ids: dict[str, list[int]],
) -> None:  # fmt: skip
    import litert_lm

    from edge_sdk.device import llm

    calls: list[tuple[str, list[str], Any]] = []
    real_engine = litert_lm.Engine

    def engine_watched(path: str, *args: Any, **kwargs: Any) -> Any:
        built = real_engine(path, *args, **kwargs)
        calls.append((path, sorted(os.listdir(os.path.dirname(path))), kwargs.get("cache_dir")))
        return built

    monkeypatch.setattr(litert_lm, "Engine", engine_watched)
    monkeypatch.setattr(llm, "memory_dir", lambda: None)
    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        assert model.weight_cache == "none"
        assert _ids(model, tiny_llm.prompt) == plain_ids[tiny_llm.prompt]
    [(path, listing, cache)] = calls
    assert cache == ":nocache" and len(listing) == 1 and listing[0].endswith(".litertlm")
    assert not os.path.exists(os.path.dirname(path))


def test_a_chat_that_fills_the_context_says_so(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any, cli: Any,
    key_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """LiteRT-LM answers nothing (or refuses the prefill) once a conversation fills the context:
    a typed error that says so (InferenceInputError, 72: it was exit 70, "the backend failed"),
    never a silent empty reply. At a terminal, `edge-sdk chat` starts a new chat instead of
    ending."""
    from edge_sdk.errors import InferenceInputError

    replies: list[str] = []

    def talk(chat: Any) -> None:
        for _ in range(tiny_llm.max_num_tokens):  # far more turns than the context holds
            replies.append("".join(chat.reply(tiny_llm.prompt)))

    with (
        _open(llm_bundle, keyset, tmp_path / "state") as model,
        model.chat(max_tokens=40) as chat,
        pytest.raises(InferenceInputError, match="filled the model's context") as caught,
    ):
        talk(chat)
    assert replies and all(replies)  # every reply before the error had text
    assert "new chat" in (caught.value.hint or "") and "max_num_tokens" not in caught.value.hint
    import io
    import sys

    common = ("--max-tokens", 40, "--trust", key_files["signer.pub"], "--device-key",
              key_files["device"], "--state-dir", tmp_path / "state", "--profile", "x86_64")  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{tiny_llm.prompt}\n" * 20))
    result = cli("chat", llm_bundle, *common)
    assert result.code == 72 and "filled the model's context" in result.err
    assert "weight cache: " in result.err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    turns = len(replies) + 2  # more than one conversation holds
    monkeypatch.setattr(sys, "stdin", Terminal(f"{tiny_llm.prompt}\n" * turns))
    result = cli("chat", llm_bundle, *common)
    assert result.code == 0, result.err
    assert "filled the model's context" in result.err and "started a new chat" in result.err
    assert len([line for line in result.out.splitlines() if line.strip()]) == turns  # all answered


def test_conversion_options_on_a_litertlm_say_how_language_models_are_quantized(
    tiny_llm: Any, cli: Any, key_files: dict[str, Path], tmp_path: Path
) -> None:
    result = cli("package", tiny_llm.path, "--profile", "x86_64", "--quantize", "int8",
                 "--sign-key", key_files["signer"], "-o", tmp_path / "x.edgepkg")  # fmt: skip
    assert result.code == 2 and "is a LiteRT-LM model" in result.err
    assert "litert-torch" in result.err and "already TFLite" not in result.err


def test_a_disk_mounted_over_the_memory_filesystem_is_seen_as_disk() -> None:
    """/proc/self/mounts lists a mount stacked on a mount point after the one it hides: the
    first entry for /dev/shm said tmpfs while an ext4 bind mount was in effect (new-user
    walkthrough, in a mount namespace)."""
    table = "tmpfs /dev/shm tmpfs rw 0 0\n/dev/sda1 /dev/shm ext4 rw 0 0\nproc /proc proc rw 0 0\n"
    assert filesystem_of("/dev/shm", table) == "ext4"
    assert (
        filesystem_of("/dev/shm/x", "tmpfs /dev/shm tmpfs rw 0 0\n/dev/sda1 / ext4 rw 0 0\n")
        == "tmpfs"
    )
    # On this machine, by device number (the kernel's answer, whatever is stacked): /dev/shm
    # is a memory filesystem, /proc is proc.
    assert filesystem_of("/dev/shm") in ("tmpfs", "ramfs")
    assert filesystem_of("/proc/self") == "proc"


def test_a_signed_but_truncated_litertlm_is_refused_on_the_device(
    tiny_llm: Any, keyset: KeySet, tmp_path: Path
) -> None:
    """The packager refuses a cut .litertlm, but a publisher's tool might not: the device reads
    the header again before the engine (LiteRT-LM aborts the whole process on a cut section)."""
    from edge_sdk.format.bundle import save_bundle
    from edge_sdk.format.manifest import Target
    from edge_sdk.host.sealing import seal_bundle

    cut = tiny_llm.path.read_bytes()[:16384]
    bundle = seal_bundle(cut, name="cut", version=1, target=Target("x86_64", "litert-lm-api"),
                         signers=[keyset.signer], recipients=[keyset.device.public],
                         model_format="litertlm", compression="none")  # fmt: skip
    save_bundle(bundle, tmp_path / "cut.edgepkg")
    with pytest.raises(ModelInputError, match="LiteRT-LM"):
        _open(tmp_path / "cut.edgepkg", keyset, tmp_path / "state")


def test_a_runtime_dir_another_user_could_rename_in_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_sdk.device import llm

    shared = Path("/dev/shm") / f"edge-sdk-test-{os.getpid()}"
    shared.mkdir()
    try:
        shared.chmod(0o777)  # writable by all, not sticky: anyone may rename in it
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
        assert llm.memory_dir() == "/dev/shm"  # passed over for the sticky /dev/shm
        shared.chmod(0o700)
        assert llm.memory_dir() == str(shared)
    finally:
        shared.rmdir()


def test_hostile_generation_inputs_are_typed_errors(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any
) -> None:
    """What a caller can pass that LiteRT-LM misreads or raises on: each is a typed error with
    the value named, and the model generates as before afterwards."""
    import litert_lm

    from edge_sdk.errors import InferenceInputError, UsageError

    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        assert model.context == tiny_llm.max_num_tokens == model.describe()["context"]
        # Prompts: a lone surrogate (undecodable argv bytes) raised UnicodeEncodeError; a NUL
        # ended the text the tokenizer saw (tokenize("beautiful\0better") was [37]).
        for call in (model.generate, model.stream, model.tokenize):
            with pytest.raises(InferenceInputError, match="lone surrogate"):
                list(call("beautiful \udcff"))  # type: ignore[operator]
            with pytest.raises(InferenceInputError, match="NUL"):
                list(call("beautiful\0better"))  # type: ignore[operator]
        with pytest.raises(InferenceInputError, match="must be a str"):
            model.generate(b"beautiful")  # type: ignore[arg-type]
        # A prompt longer than the context is refused up front, naming both lengths (the
        # engine's own refusal was a generic "run_prefill failed").
        with pytest.raises(InferenceInputError, match=r"is 201 tokens, .* context holds 128"):
            model.generate("beautiful " * 200)
        with model.chat(max_tokens=4) as chat, pytest.raises(InferenceInputError, match="128"):
            list(chat.reply("beautiful " * 200))
        # Token ids: out of the vocabulary raised RuntimeError; 2**40 silently became "<pad>".
        for ids in ([-1], [tiny_llm.vocab_size], [2**40], [1.5], [True], "abc", 5):
            with pytest.raises(InferenceInputError, match="token id"):
                model.detokenize(ids)  # type: ignore[arg-type]
        assert model.detokenize(model.tokenize(tiny_llm.prompt)).strip() == tiny_llm.prompt
        import numpy as np

        ids = model.tokenize(tiny_llm.prompt)
        assert model.detokenize(np.array(ids)) == model.detokenize(tuple(ids))  # numpy ints are ids
        # Sampling options: NaN generated nothing, max_tokens=10**12 wrapped to one token.
        bad: list[dict[str, Any]] = [
            {"max_tokens": 0}, {"max_tokens": 10**12}, {"max_tokens": True}, {"max_tokens": 2.0},
            {"temperature": float("nan")}, {"temperature": float("inf")}, {"temperature": -1},
            {"temperature": 1e9}, {"seed": -1}, {"seed": 2**40}, {"top_k": 0},
            {"top_p": 0.0}, {"top_p": 1.5}, {"top_p": float("nan")}, {"temperature": "hot"},
        ]  # fmt: skip
        for options in bad:
            [(option, _)] = options.items()
            for call in (model.generate, model.stream):
                with pytest.raises(UsageError, match=option):
                    list(call(tiny_llm.prompt, **options))
            with pytest.raises(UsageError, match=option):
                model.chat(**options)
        # conversation(): an unknown option was a TypeError, a bad sampler reached C.
        with pytest.raises(UsageError, match="no option 'bogus'") as caught:
            model.conversation(bogus=1)
        assert "sampler_config" in (caught.value.hint or "")
        for field, value in (("temperature", float("nan")), ("seed", 2**40)):
            sampler = litert_lm.SamplerConfig(top_k=5, top_p=0.9, temperature=1.0, seed=0)
            setattr(sampler, field, value)  # (its own __post_init__ checks top_k and top_p)
            with pytest.raises(UsageError, match=field):
                model.conversation(sampler_config=sampler)
        with pytest.raises(UsageError, match="SamplerConfig"):
            model.conversation(sampler_config={"top_k": 1})
        with pytest.raises(UsageError, match="max_output_tokens"):
            model.conversation(max_output_tokens=-5)
        model.conversation(max_output_tokens=4).close()
        # Checked where the call is made, not at the first next() of the iterator.
        with pytest.raises(UsageError, match="max_tokens"):
            model.stream(tiny_llm.prompt, max_tokens=0)
        with model.chat(max_tokens=4) as chat, pytest.raises(InferenceInputError, match="NUL"):
            chat.reply("a\0b")
        # A closed chat said "generation failed: Conversation is closed." (a BackendError).
        chat = model.chat(max_tokens=4)
        chat.close()
        with pytest.raises(UsageError, match="chat is closed"):
            chat.reply(tiny_llm.prompt)
        # Still the same model: a sampled run with chosen top_k/top_p generates text.
        assert model.generate(tiny_llm.prompt, max_tokens=4, temperature=0.7, top_k=5, top_p=0.9)


def test_an_absurd_thread_count_is_refused(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path
) -> None:
    """Each engine thread is an OS thread: threads=10**6 was accepted (the cap was 2**20)."""
    from edge_sdk.errors import UsageError

    for threads in (0, 5000, 10**6, True):
        with pytest.raises(UsageError, match="threads must be an integer from 1 to 1024"):
            _open(llm_bundle, keyset, tmp_path / "state", threads=threads)


def test_hostile_prompts_on_the_command_line_are_refused_before_loading(
    cli: Any, key_files: dict[str, Path], tmp_path: Path
) -> None:
    """``run --prompt $'\\xff'`` (bytes that are not UTF-8 reach Python as lone surrogates) was
    a UnicodeEncodeError traceback; out-of-range options reached the engine. Refused before the
    bundle is read (it does not even exist here)."""
    import subprocess
    import sys

    absent = tmp_path / "absent.edgepkg"
    common = ("--trust", key_files["signer.pub"], "--state-dir", tmp_path / "state")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "edge_sdk", "run", os.fsencode(absent), "--prompt", b"\xff",
         *(os.fsencode(a) for a in common)],
        capture_output=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 72, done.stderr
    assert b"lone surrogate" in done.stderr and b"Traceback" not in done.stderr
    for options in (("--temperature", "nan"), ("--max-tokens", "0"), ("--top-p", "2"),
                    ("--seed", "-1"), ("--max-tokens", str(10**12))):  # fmt: skip
        result = cli("run", absent, "--prompt", "hi", *options, *common)
        assert result.code == 2 and f"{options[0]} must be" in result.err, result.err
    assert cli("run", absent, "--prompt", "a\0b", *common).code == 72
    assert not (tmp_path / "state").exists()


def test_chat_input_that_is_not_text_is_a_typed_error(
    llm_bundle: Path, cli: Any, key_files: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import io
    import sys

    common = ("--trust", key_files["signer.pub"], "--device-key", key_files["device"],
              "--state-dir", tmp_path / "state", "--profile", "x86_64")  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"beautiful \xff\n")))
    result = cli("chat", llm_bundle, *common)
    assert result.code == 72 and "not text" in result.err and "Traceback" not in result.err
    monkeypatch.setattr(sys, "stdin", io.StringIO("beautiful " * 200 + "\n"))
    result = cli("chat", llm_bundle, *common)
    assert result.code == 72 and "context holds 128" in result.err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    # At a terminal, a prompt that does not fit is said, and the chat goes on.
    monkeypatch.setattr(sys, "stdin", Terminal("beautiful " * 200 + "\nbeautiful is\n"))
    result = cli("chat", llm_bundle, "--max-tokens", 4, *common)
    assert result.code == 0, result.err
    assert "context holds 128" in result.err and len(result.out.split()) == 4


def test_a_load_killed_mid_build_leaves_no_weights_for_long(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A process killed while its engine is built (SIGKILL, the OOM killer) leaves its private
    directory on the memory filesystem (with a weight cache in it, plaintext, if a LiteRT-LM
    named its cache otherwise). The next load removes what dead processes of this user left
    more than 15 minutes ago, and nothing else: a younger one may be a live process of another
    PID namespace (a container sharing /dev/shm)."""
    import subprocess

    from edge_sdk.device import llm

    real = llm.memory_dir()
    assert real is not None, "this test needs a memory filesystem (/dev/shm)"
    shm = Path(tempfile.mkdtemp(dir=real))  # a private one: the weight cache stays in RAM
    monkeypatch.setattr(llm, "memory_dir", lambda: str(shm))
    child = subprocess.Popen(["true"])  # a process id that has exited
    child.wait()
    left = shm / f"edge-sdk-llm-{child.pid}-abc123"
    left.mkdir()
    (left / "model.litertlm_1_2.xnnpack_cache").write_bytes(b"plaintext weights")
    alive = shm / f"edge-sdk-llm-{os.getpid()}-def456"
    alive.mkdir()
    elsewhere = tmp_path / "not-ours"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    link = shm / f"edge-sdk-llm-{child.pid}-link01"
    link.symlink_to(elsewhere)
    young = shm / f"edge-sdk-llm-{child.pid}-young1"  # dead here; maybe alive in a container
    young.mkdir()
    old = time.time() - 16 * 60
    for made in (left, alive):
        os.utime(made, (old, old))
    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        assert model.weight_cache.startswith("memfd (packed this start")
    assert not left.exists()
    assert alive.is_dir() and link.is_symlink() and (elsewhere / "keep").exists()
    assert sorted(p.name for p in shm.iterdir()) == sorted([alive.name, link.name, young.name])
    shutil.rmtree(shm)


def test_one_stream_or_chat_at_a_time_and_close_ends_them_first(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any,
) -> None:  # fmt: skip
    """LiteRT-LM runs one session or conversation of an engine at a time: two open chats
    aborted the process at exit (SIGABRT) or crashed it on close (SIGSEGV), two interleaved
    streams hung it, and a stream went on decoding after close(). A second one is now a
    UsageError, close() ends the open one before the engine, and reading on after it is a
    UsageError too."""
    from edge_sdk.errors import UsageError

    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        first = model.stream(tiny_llm.prompt, max_tokens=TOKENS)
        assert next(first)
        with pytest.raises(UsageError, match="stream of this model is still open"):
            next(model.stream(tiny_llm.prompt, max_tokens=TOKENS))
        with pytest.raises(UsageError, match="still open"):
            model.chat()
        with pytest.raises(UsageError, match="still open"):
            model.generate(tiny_llm.prompt, max_tokens=2)
        rest = list(first)  # finishing the stream frees the engine
        assert rest
        chat = model.chat()
        with pytest.raises(UsageError, match="chat of this model is still open"):
            model.chat()
        chat.close()
        assert model.generate(tiny_llm.prompt, max_tokens=TOKENS)  # free again
        running = model.stream(tiny_llm.prompt, max_tokens=TOKENS)
        assert next(running)

    assert model.closed
    with pytest.raises(UsageError, match="closed while the stream was read"):
        list(running)
    # A chat left open when its model closes is closed with it.
    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        talking = model.chat()
        reply = talking.reply("Hello")
    with pytest.raises(UsageError):
        list(reply)
    with pytest.raises(UsageError, match="chat is closed"):
        talking.reply("again")


def test_a_chat_dropped_without_close_frees_the_model(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any,
) -> None:  # fmt: skip
    """A chat nobody closed held the engine until model.close(): every later generate was a
    UsageError. Its conversation now ends as the chat is collected."""
    import gc

    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        chat = model.chat()
        assert "".join(chat.reply("Hello"))
        with pytest.raises(edge_sdk.errors.UsageError, match="chat of this model is still open"):
            model.generate(tiny_llm.prompt, max_tokens=2)
        del chat
        gc.collect()
        assert model.generate(tiny_llm.prompt, max_tokens=TOKENS)
        again = model.chat()  # and a new chat starts
        assert "".join(again.reply("Hello"))


def test_a_program_run_from_the_process_inherits_no_model_descriptor(
    llm_bundle: Path, keyset: KeySet, tmp_path: Path, tiny_llm: Any,
) -> None:  # fmt: skip
    """LiteRT-LM opens the model (a new descriptor of the memfd) and its weight cache without
    O_CLOEXEC: a program started with os.system (fork+exec, every descriptor inherited) could
    read the plaintext model and the packed weights. load_llm marks them close-on-exec."""
    import subprocess
    import sys

    lister = (
        "import os\nfor n in os.listdir('/proc/self/fd'):\n"
        "    try: print(os.readlink('/proc/self/fd/' + n))\n    except OSError: pass\n"
    )
    with _open(llm_bundle, keyset, tmp_path / "state") as model:
        assert model.generate(tiny_llm.prompt, max_tokens=4)
        mine = [os.readlink(f"/proc/self/fd/{n}") for n in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{n}")]  # fmt: skip
        assert any(m.startswith("/memfd:") for m in mine)  # the model is open here
        child = subprocess.run([sys.executable, "-c", lister], close_fds=False,
                               capture_output=True, text=True, check=True)  # fmt: skip
    seen = child.stdout.splitlines()
    assert seen  # the lister ran and saw its own descriptors
    leaked = [n for n in seen if n.startswith("/memfd:") or "xnnpack_cache" in n]
    assert not leaked, f"inherited by a child program: {leaked}"


def test_a_stream_left_half_read_does_not_hang_the_exit(
    llm_bundle: Path, key_files: dict[str, Path], tmp_path: Path, tiny_llm: Any,
) -> None:  # fmt: skip
    """A script that ends with a model open and a stream half read: the model is closed at
    exit, session first (LiteRT-LM's threads hung the exit with a session left running)."""
    import subprocess
    import sys

    code = (
        "import edge_sdk\n"
        f"m = edge_sdk.load_llm({str(llm_bundle)!r}, trust={str(key_files['signer.pub'])!r}, "
        f"device_key={str(key_files['device'])!r}, state_dir={str(tmp_path / 's')!r}, "
        "profile='x86_64')\n"
        f"s = m.stream({tiny_llm.prompt!r}, max_tokens=16)\n"
        "print(next(s), flush=True)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()


def test_closing_the_model_from_another_thread_mid_reply_never_crashes(
    llm_bundle: Path, key_files: dict[str, Path], tmp_path: Path, tiny_llm: Any,
) -> None:  # fmt: skip
    """close() from another thread while a chat reply or generate() is inside the engine
    deleted the conversation under it: SIGSEGV in 16 of 16 runs (hostile review). close() now
    cancels the call in flight and waits for it to leave native code. Whatever the timing, the
    reader finishes or gets a typed error, and the process exits cleanly."""
    import subprocess
    import sys

    code = (
        "import threading, time, edge_sdk\n"
        "from edge_sdk.errors import EdgeSDKError\n"
        f"args = dict(trust={str(key_files['signer.pub'])!r}, "
        f"device_key={str(key_files['device'])!r}, profile='x86_64')\n"
        "for i, delay in enumerate([0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008] * 2):\n"
        f"    m = edge_sdk.load_llm({str(llm_bundle)!r}, state_dir={str(tmp_path)!r} + f'/s{{i}}', **args)\n"
        "    def read():\n"
        "        try:\n"
        "            if i % 2:\n"
        f"                m.generate({tiny_llm.prompt!r}, max_tokens=64)\n"
        "            else:\n"
        f"                ''.join(m.chat(max_tokens=64).reply({tiny_llm.prompt!r}))\n"
        "        except EdgeSDKError:\n"
        "            pass\n"
        "    t = threading.Thread(target=read); t.start(); time.sleep(delay); m.close(); t.join()\n"
        "print('done', flush=True)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("done")
