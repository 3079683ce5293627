"""Anti-rollback state and file writes where someone else may write too."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_sdk.device.state import VersionState
from edge_sdk.errors import RollbackError, StateError
from edge_sdk.files import atomic_write
from edge_sdk.format.bundle import read_bundle, save_bundle

from .conftest import KeySet, make_bundle_bytes

DIGEST = "a" * 64


@pytest.mark.parametrize("entry", [{}, 0, [], "", {"version": "9"}, {"version": True, "digest": DIGEST},
                                   {"version": 3}, False, None])  # fmt: skip
def test_odd_state_entries_fail_closed(tmp_path: Path, entry: object) -> None:
    state = VersionState(tmp_path)
    (tmp_path / "versions.json").write_text(json.dumps({"digits": entry}))
    # Only a missing entry means "never seen"; anything malformed must not re-arm rollbacks.
    with pytest.raises(StateError, match="anti-rollback state for 'digits' is corrupt"):
        state.check("digits", 1, DIGEST)


def test_missing_entry_is_never_seen(tmp_path: Path) -> None:
    state = VersionState(tmp_path)
    (tmp_path / "versions.json").write_text(json.dumps({"other": {"version": 9, "digest": DIGEST}}))
    state.check("digits", 1, DIGEST)
    state.record("digits", 1, DIGEST)
    with pytest.raises(RollbackError):
        state.check("digits", 0, DIGEST)


def test_recording_the_same_version_writes_nothing(tmp_path: Path) -> None:
    state = VersionState(tmp_path)
    state.record("digits", 4, DIGEST)
    before = os.stat(tmp_path / "versions.json")
    state.record("digits", 4, DIGEST)
    after = os.stat(tmp_path / "versions.json")
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    state = VersionState(tmp_path)
    for stale in (".versions.json.tmp-1234", ".versions.json.tmp-deadbeefdeadbeef"):
        (tmp_path / stale).write_text("{half")
    state.record("digits", 1, DIGEST)
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name) == []


def test_atomic_write_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "versions.json"
    # The old temp names were predictable: plant links on every name a pid could produce.
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (tmp_path / f".versions.json.tmp-{pid}").symlink_to(victim)
    atomic_write(target, b"{}")
    assert victim.read_text() == "precious" and target.read_bytes() == b"{}"
    assert all(p.is_symlink() for p in tmp_path.glob(".versions.json.tmp-*"))


def test_save_bundle_uses_an_unpredictable_exclusive_temp(tmp_path: Path, keyset: KeySet) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "out.edgepkg"
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (tmp_path / f".out.edgepkg.tmp-{pid}").symlink_to(victim)
    save_bundle(read_bundle(make_bundle_bytes(keyset)), out)
    assert victim.read_text() == "precious"
    assert read_bundle(out).manifest.name == "digits"


def test_doctor_wants_a_private_state_directory(tmp_path: Path) -> None:
    from edge_sdk.device.doctor import state_dir_check

    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert state_dir_check(private).status == "ok"
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    check = state_dir_check(shared)
    assert (
        check.status == "warn" and "0755" in check.detail and check.fix and "chmod 700" in check.fix
    )
    link = tmp_path / "link"
    link.symlink_to(private)
    assert "symlink" in state_dir_check(link).detail


def test_load_picks_threads_and_says_why(keyset: KeySet, tmp_path: Path) -> None:
    import edge_sdk
    from edge_sdk.device.runtime import usable_cores

    model = (Path(__file__).parent / "vectors" / "model.tflite").read_bytes()
    raw = make_bundle_bytes(keyset, model=model, recipients=())
    common = {"trust": keyset.trust(), "state_dir": tmp_path / "s", "hardware_ids": ["x86_64"]}
    with edge_sdk.load(raw, **common) as auto:
        # The bundle targets x86_64 and this board says it is one: that profile, capped at the cores.
        assert auto.threads == min(4, usable_cores()) and "profile x86_64" in auto.threads_reason
    with edge_sdk.load(raw, **{**common, "hardware_ids": ["some,other-board"]}) as other:
        assert other.threads == usable_cores() and "usable cores" in other.threads_reason
    with edge_sdk.load(raw, threads=3, **common) as given:
        assert given.threads == 3 and "caller" in given.threads_reason
