"""Availability: no file that fails verification, and no power cut, may stop the next genuine load.

The attack from review: an unsigned bundle whose manifest holds a huge malformed value made the
error message huge, the rejection became one huge audit record, the log's tail reader could not
parse it, and every later load of a genuine bundle failed. These tests replay that attack (and its
relatives) against a real bundle and a real LiteRT interpreter, then load the genuine bundle.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

import edge_sdk
from edge_sdk.device.audit_log import MAX_RECORD_BYTES, AuditLog, log_files, read_log, verify_log
from edge_sdk.errors import MAX_MESSAGE_CHARS, AuditLogError, EdgeSDKError
from edge_sdk.host.packaging import PackageOptions, package_model
from edge_sdk.profiles import load_profile

from .bundle_parts import split_bundle
from .conftest import REPO, CliResult, KeySet

MODEL = REPO / "tests" / "vectors" / "model.tflite"


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory, keyset: KeySet) -> Path:
    path = tmp_path_factory.mktemp("genuine") / "digits.edgepkg"
    package_model(MODEL, path, load_profile("x86_64"), PackageOptions(name="digits", version=3),
                  [keyset.signer], [keyset.device.public])  # fmt: skip
    return path


def _load(source: Path | bytes, keyset: KeySet, state: Path) -> Any:
    return edge_sdk.load(source, trust=keyset.trust(), device_key=keyset.device,
                         state_dir=state, profile="x86_64")  # fmt: skip


def _with_manifest(raw: bytes, edit: Any) -> bytes:
    """The bundle with an edited (and therefore unsigned) manifest, serialized compactly."""
    parts = split_bundle(raw)
    manifest = json.loads(parts.manifest)
    edit(manifest)
    parts.manifest = json.dumps(manifest, separators=(",", ":")).encode()
    return parts.join()


def _hostile_variants(raw: bytes) -> dict[str, bytes]:
    big = "x" * 200_000
    return {
        "huge name": _with_manifest(raw, lambda m: m.update(name=big)),
        "huge list as version": _with_manifest(raw, lambda m: m.update(version=[7] * 40_000)),
        "huge nested value": _with_manifest(raw, lambda m: m.update(version=[[[big[:50_000]]]])),
        "many long unknown fields": _with_manifest(
            raw, lambda m: m.update({f"{i:06d}" + "k" * 2000: 1 for i in range(60)})
        ),
        "control characters": _with_manifest(raw, lambda m: m.update(name="\x1b]0;pwn\x07\n" * 5000)),
        "huge alg in the envelope": _with_envelope(raw, lambda e: e["signatures"][0].update(alg="a" * 500_000)),
        "huge key id": _with_envelope(raw, lambda e: e["signatures"][0].update(keyid="f" * 300_000)),
    }  # fmt: skip


def _with_envelope(raw: bytes, edit: Any) -> bytes:
    parts = split_bundle(raw)
    edit(parts.envelope)
    return parts.join()


def test_hostile_files_cannot_stop_the_next_genuine_load(genuine: Path, keyset: KeySet,
                                                          tmp_path: Path) -> None:  # fmt: skip
    state = tmp_path / "state"
    raw = genuine.read_bytes()
    _load(genuine, keyset, state).close()
    for label, hostile in _hostile_variants(raw).items():
        with pytest.raises(EdgeSDKError) as caught:
            _load(hostile, keyset, state)
        assert len(caught.value.message) <= MAX_MESSAGE_CHARS + 60, label
        assert "\x1b" not in caught.value.message and "\n" not in caught.value.message, label
        # The rejection is recorded, bounded, and the genuine bundle still loads afterwards.
        with _load(genuine, keyset, state) as model:
            assert model.manifest.name == "digits", label
    log = state / "audit.log"
    report = verify_log(log)
    events = [r["event"] for r in report.records]
    assert events.count("reject") == 7 and events.count("load") == 8
    assert max(len(line) for line in log.read_bytes().split(b"\n")) <= MAX_RECORD_BYTES


def test_cut_messages_say_they_were_cut(genuine: Path, keyset: KeySet, tmp_path: Path) -> None:
    hostile = _hostile_variants(genuine.read_bytes())["huge name"]
    with pytest.raises(EdgeSDKError, match=r"200,000 characters, cut"):
        _load(hostile, keyset, tmp_path / "state")


def test_a_huge_record_left_by_an_older_release_does_not_block(genuine: Path, keyset: KeySet,
                                                                tmp_path: Path) -> None:  # fmt: skip
    # What the unbounded release wrote: a valid record of several MiB as the log's last line.
    state = tmp_path / "state"
    _load(genuine, keyset, state).close()
    log = AuditLog(state / "audit.log")
    last = json.loads((state / "audit.log").read_bytes().splitlines()[-1])
    import hashlib

    prev = hashlib.sha256((state / "audit.log").read_bytes().splitlines()[-1]).hexdigest()
    record = {"seq": last["seq"] + 1, "prev": prev, "event": "reject", "reason": "y" * 3_000_000}
    with open(state / "audit.log", "ab") as handle:
        handle.write(json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    _load(genuine, keyset, state).close()
    records = read_log(log_files(log.path)).records
    assert records[-1]["event"] == "load"


def _torn(path: Path, rng: random.Random, mode: str) -> None:
    """Simulate a power cut during the last append: write done, fdatasync not."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    last = data[start:]
    if mode == "cut":  # only part of the line reached the disk
        data = data[: start + rng.randrange(1, len(last) - 1)]
    elif mode == "zeros":  # the size grew but the block was never written
        data = data[:start] + b"\0" * len(last)
    else:  # "zero tail": a partial line followed by zeros
        keep = rng.randrange(1, len(last) - 1)
        data = data[: start + keep] + b"\0" * (len(last) - keep)
    path.write_bytes(data)


def test_torn_writes_are_told_from_edits_and_recovered(genuine: Path, keyset: KeySet, tmp_path: Path,
                                                       cli: Any) -> None:  # fmt: skip
    rng = random.Random(13)
    recovered = 0
    for trial in range(20):
        state = tmp_path / f"state{trial}"
        for _ in range(3):
            _load(genuine, keyset, state).close()
        log = state / "audit.log"
        _torn(log, rng, ("cut", "zeros", "zero tail")[trial % 3])
        before: CliResult = cli("audit", "log", log, "--verify")
        assert before.code == 0, before.err  # a torn tail is not an edit
        assert "interrupted write" in before.out + before.err
        with _load(genuine, keyset, state) as model:  # the next genuine load works
            assert model.manifest.version == 3
        report = verify_log(log)
        assert any("was recovered" in note for note in report.notes)
        assert [r["event"] for r in report.records][-2:] == ["resumed", "load"]
        assert report.records[-2]["torn"] is True
        recovered += 1
    assert recovered == 20


def test_an_edited_tail_is_reported_and_the_device_keeps_working(
    genuine: Path, keyset: KeySet, tmp_path: Path, cli: Any
) -> None:
    state = tmp_path / "state"
    for _ in range(2):
        _load(genuine, keyset, state).close()
    log = state / "audit.log"
    with open(log, "ab") as handle:
        handle.write(b'{"this is": "not a record"}\n')
    with _load(genuine, keyset, state) as model:
        assert model.manifest.name == "digits"
    with pytest.raises(AuditLogError, match="unreadable.*chain resumes after it at seq 3"):
        verify_log(log)
    result = cli("audit", "log", log, "--verify")
    assert result.code == AuditLogError.exit_code
    # The evidence stays in the file, covered by the chain that continues after it.
    assert b'{"this is": "not a record"}' in log.read_bytes()


def test_repair_command_recovers_a_torn_tail(genuine: Path, keyset: KeySet, tmp_path: Path,
                                             cli: Any) -> None:  # fmt: skip
    state = tmp_path / "state"
    _load(genuine, keyset, state).close()
    log = state / "audit.log"
    _torn(log, random.Random(1), "cut")
    result = cli("audit", "log", log, "--repair")
    assert result.code == 0 and "interrupted write" in result.out
    assert verify_log(log).records[-1]["event"] == "resumed"
    again = cli("audit", "log", log, "--repair")
    assert again.code == 0 and "nothing to repair" in again.out


def test_an_empty_rotated_file_does_not_hide_deleted_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(10):
        log.append("load", i=i)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[4:]))  # delete the head of a never-rotated log …
    (tmp_path / "audit.log.1").write_bytes(b"")  # … and pretend it was rotated away
    with pytest.raises(AuditLogError, match="empty"):
        verify_log(path)


# -- found by an adversarial review ---------------------------------------------------------------


def test_a_fifo_planted_as_a_release_is_refused_not_waited_on(genuine: Path, keyset: KeySet,
                                                               tmp_path: Path) -> None:  # fmt: skip
    import os

    from edge_sdk.errors import BundleFormatError

    releases = tmp_path / "models" / "digits" / "releases"
    releases.mkdir(parents=True)
    fifo = releases / "1-bbbbbbbbbbbbbbbb.edgepkg"
    os.mkfifo(fifo)
    (tmp_path / "models" / "digits" / "current").symlink_to("releases/" + fifo.name)
    with pytest.raises(BundleFormatError, match="not a regular file"):
        _load(tmp_path / "models" / "digits" / "current", keyset, tmp_path / "state")
    from edge_sdk.fleet.audit import audit_paths

    rows = audit_paths([tmp_path / "models"], keyset.trust())
    assert [r.kind for r in rows] == ["format"]


def test_a_plain_file_planted_as_current_is_held_to_the_layouts_name(
    keyset: KeySet, tmp_path: Path
) -> None:
    folder = tmp_path / "models" / "digits"
    (folder / "releases").mkdir(parents=True)
    other = tmp_path / "beta.edgepkg"
    package_model(MODEL, other, load_profile("x86_64"), PackageOptions(name="digits-beta", version=1),
                  [keyset.signer], [keyset.device.public])  # fmt: skip
    (folder / "current").write_bytes(other.read_bytes())  # a file, not the layout's symlink
    from edge_sdk.errors import TargetMismatchError

    with pytest.raises(TargetMismatchError, match="'digits' was expected"):
        _load(folder / "current", keyset, tmp_path / "state")


@pytest.mark.parametrize("which", ["audit.log", "versions.json"])
def test_deeply_nested_json_in_the_state_is_typed(which: str, genuine: Path, keyset: KeySet,
                                                  tmp_path: Path, cli: Any) -> None:  # fmt: skip
    from edge_sdk.errors import StateError

    state = tmp_path / "state"
    _load(genuine, keyset, state).close()
    with open(state / which, "a" if which == "audit.log" else "w") as handle:
        handle.write("[" * 100_000 + "\n")
    if which == "audit.log":
        with _load(genuine, keyset, state) as model:  # recovered, never a RecursionError
            assert model.manifest.name == "digits"
        result = cli("audit", "log", state / "audit.log", "--verify")
        assert result.code == AuditLogError.exit_code and "Traceback" not in result.err
    else:
        with pytest.raises(StateError, match="unreadable or corrupt"):
            _load(genuine, keyset, state)


def test_a_refused_recording_is_logged_as_a_rejection(
    genuine: Path, keyset: KeySet, tmp_path: Path
) -> None:
    from edge_sdk.errors import StateError

    state = tmp_path / "state"
    state.mkdir()
    (state / ".versions.lock").mkdir()  # recording the accepted version will fail
    with pytest.raises(StateError):
        _load(genuine, keyset, state)
    events = [r["event"] for r in verify_log(state / "audit.log").records]
    assert events == ["load", "reject"]  # the "ok" is not the log's last word
