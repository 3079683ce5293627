"""Files edge-sdk writes land in the directory that was opened, and are the bytes it wrote.

Two races a local user who can write near an output file could run (issue 20, after finding 3):
swap the output's directory for a symlink between the checks and the rename (the write would
land in a directory of theirs), or swap another file in under the temp name after it was
written (their bytes would be renamed into place and reported as ours). ``edge_sdk.files``
opens the directory once (never through a symlink someone else could have planted) and renames
by identity. Each test runs the attack thousands of times and asserts it never succeeds; none
depends on winning or losing a race.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_sdk.files import FileSwapped, atomic_write, replacing

from .test_deploy_race import exchange

NOBODY = 65534


@pytest.fixture(autouse=True)
def _fine_thread_switching() -> Iterator[None]:
    # More interleavings per second between the writer and the swapper thread; the outcome
    # asserted does not depend on it.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


def race(attack: Callable[[], None], write: Callable[[int], None], *, rounds: int) -> int:
    """Run ``attack`` in a loop on a thread while ``write(i)`` runs at least ``rounds`` times
    and the attack at least ``rounds`` times; returns how many writes raised OSError."""
    stop = threading.Event()
    attacks = [0]

    def loop() -> None:
        while not stop.is_set():
            # The names come and go under the attacker's feet: a lost step is just a retry.
            with contextlib.suppress(OSError):
                attack()
            attacks[0] += 1

    thread = threading.Thread(target=loop)
    thread.start()
    refused = i = 0
    try:
        while (i < rounds or attacks[0] < rounds) and thread.is_alive():
            try:
                write(i)
            except OSError:
                refused += 1
            i += 1
    finally:
        stop.set()
        thread.join()
    assert attacks[0] >= rounds, attacks
    return refused


def shared_dir(tmp_path: Path) -> Path:
    """A directory everyone can write (not sticky), as a careless shared folder is."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    return shared


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("planting another user's symlink needs root (lchown)")


def test_the_output_directory_swapped_for_a_symlink_never_receives_the_write(
    tmp_path: Path,
) -> None:
    needs_root()
    shared = shared_dir(tmp_path)
    out = shared / "out"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = shared / "evil"
    evil.symlink_to(outside)
    os.lchown(evil, NOBODY, NOBODY)  # another user's link

    def attack() -> None:
        exchange(out, evil)  # out is now their symlink...
        exchange(out, evil)  # ...and back

    refused = race(attack, lambda i: atomic_write(out / "state.json", b"%d" % i), rounds=2000)
    assert sorted(os.listdir(outside)) == []
    assert not out.is_symlink()
    assert refused > 0 or (out / "state.json").exists()
    atomic_write(out / "state.json", b"after")  # with the attacker gone, writes work
    assert (out / "state.json").read_bytes() == b"after"
    assert [p.name for p in out.iterdir()] == ["state.json"]  # no temp left behind


def test_a_file_swapped_in_under_the_temp_name_is_never_reported_written(tmp_path: Path) -> None:
    shared = shared_dir(tmp_path)
    target = shared / "state.json"
    theirs = tmp_path / "theirs"
    theirs.write_bytes(b"THEIRS")
    ours = [b""]
    wrong: list[bytes] = []

    def attack() -> None:
        for name in os.listdir(shared):
            if name.startswith(".state.json.tmp-"):
                planted = shared / f"planted-{name}"
                with contextlib.suppress(FileExistsError):
                    os.link(theirs, planted)
                os.replace(planted, shared / name)

    def write(i: int) -> None:
        ours[0] = b"ours %d" % i
        atomic_write(target, ours[0])
        # The attacker only touches temp names: what atomic_write said it wrote is there.
        if target.read_bytes() != ours[0]:
            wrong.append(target.read_bytes())

    race(attack, write, rounds=2000)
    assert wrong == []
    for name in os.listdir(shared):
        # Left behind at most: the attacker's own files under names they put there.
        assert name == "state.json" or (shared / name).read_bytes() == b"THEIRS"


def test_a_swapped_temp_is_refused_with_nothing_renamed(tmp_path: Path) -> None:
    """The swap made at the worst moment (after our last write, before the rename), on purpose."""
    shared = shared_dir(tmp_path)
    target = shared / "model.edgepkg"
    target.write_bytes(b"previous")
    planted: list[str] = []

    def write_then_swap() -> None:
        with replacing(target) as handle:
            handle.write(b"ours")
            planted.extend(n for n in os.listdir(shared) if n.startswith(".model.edgepkg.tmp-"))
            (shared / "planted").write_bytes(b"THEIRS")
            os.replace(shared / "planted", shared / planted[0])

    with pytest.raises(FileSwapped, match="replaced by another writer") as caught:
        write_then_swap()
    (tmp,) = planted
    assert isinstance(caught.value, OSError)  # so every caller's `except OSError` types it
    assert target.read_bytes() == b"previous"
    assert (shared / tmp).read_bytes() == b"THEIRS"  # theirs is neither renamed nor deleted


def test_a_symlinked_directory_is_followed_only_if_nobody_else_could_have_planted_it(
    tmp_path: Path,
) -> None:
    needs_root()
    real = tmp_path / "real"
    real.mkdir()
    private = tmp_path / "private"
    private.mkdir(mode=0o755)
    (private / "data").symlink_to(real)  # root's link in root's 0755 directory: the operator's
    atomic_write(private / "data" / "a", b"a")
    assert (real / "a").read_bytes() == b"a"

    shared = shared_dir(tmp_path)
    (shared / "data").symlink_to(real)  # in a directory everyone can write: anyone's
    with pytest.raises(OSError, match="symlink another user") as caught:
        atomic_write(shared / "data" / "b", b"b")
    assert caught.value.errno == errno.ELOOP
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: others cannot replace root's link
    (sticky / "data").symlink_to(real)
    atomic_write(sticky / "data" / "c", b"c")
    assert (real / "c").read_bytes() == b"c"
    os.lchown(sticky / "data", NOBODY, NOBODY)  # but a link another user owns is theirs
    with pytest.raises(OSError, match="symlink another user"):
        atomic_write(sticky / "data" / "d", b"d")
    assert not (real / "b").exists() and not (real / "d").exists()
