"""Deploy never writes or deletes outside the target root, however ``releases/`` is swapped.

A local user who can write inside the root swaps ``<name>/releases`` for a symlink to a
directory of their own right after deploy checked it (issue 20, finding 3). Local targets (and
the agent's install, which is one) act through directory descriptors opened with O_NOFOLLOW, so
no check can go stale; over SFTP every mutating call re-checks its path with lstat first.
"""

# ruff: noqa: F811  (pytest fixtures imported from test_deploy are parameters here)

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import EdgeSDKError, TransportError
from edge_sdk.fleet.deploy import DeployOptions, deploy, prepare_bundle
from edge_sdk.fleet.transports import Session, parse_target
from edge_sdk.fleet.transports.base import Target

from .test_deploy import BundleFactory, board, lab, make_bundle, signer  # noqa: F401

_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically, as an attacker's loop would."""
    if _LIBC.renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


def outside_dir(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A directory of the attacker's, holding files a followed prune or cleanup would delete."""
    outside = tmp_path / "outside"
    outside.mkdir()
    bait = {
        "1-0123456789abcdef.edgepkg": b"an old release's name",
        ".2-0123456789abcdef.edgepkg.partial-cafe": b"a stale temp's name",
    }
    for name, data in bait.items():
        (outside / name).write_bytes(data)
    return outside, bait


def untouched(outside: Path, bait: dict[str, bytes]) -> bool:
    return {p.name: p.read_bytes() for p in outside.iterdir()} == bait


def test_swapping_releases_for_a_symlink_never_reaches_outside_the_root(
    make_bundle: BundleFactory, board: Callable[[str], Path], tmp_path: Path
) -> None:
    root = board("b")
    outside, bait = outside_dir(tmp_path)
    bundles = [prepare_bundle(make_bundle(v, size=2_000)) for v in range(1, 9)]
    deploy(bundles[0], str(root))
    releases = root / "demo" / "releases"
    evil = root / "demo" / "evil"
    evil.symlink_to(outside)
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        while not stop.is_set():
            exchange(releases, evil)
            exchange(releases, evil)
            swaps[0] += 2

    thread = threading.Thread(target=swapper)
    thread.start()
    outcomes: dict[str, int] = {}
    try:
        options = DeployOptions(keep=1, allow_downgrade=True)
        for i in range(400):
            try:
                result = deploy(bundles[i % len(bundles)], str(root), options)
                outcomes[result.status] = outcomes.get(result.status, 0) + 1
            except EdgeSDKError as exc:  # typed, never a raw OSError
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            if swaps[0] >= 4000 and i >= 200:
                break
    finally:
        stop.set()
        thread.join()
    assert swaps[0] >= 2000, swaps
    assert untouched(outside, bait), sorted(p.name for p in outside.iterdir())
    assert releases.is_dir() and not releases.is_symlink()
    assert sum(outcomes.values()) >= 200, outcomes
    # And with the attacker gone, deploys work as before.
    assert deploy(bundles[-1], str(root), DeployOptions(allow_downgrade=True)).status in (
        "ok",
        "unchanged",
    )
    assert untouched(outside, bait)


class _SwapAfterCheck(Target):
    """A target whose session swaps ``releases/`` for a symlink right after deploy listed it:
    the moment an attacker watching with inotify would pick, made deterministic."""

    def __init__(self, inner: Target, releases: Path, evil: Path) -> None:
        super().__init__(inner.uri, inner.root, None)
        self.inner, self.releases, self.evil = inner, releases, evil

    async def connect(self) -> Session:
        session = await self.inner.connect()
        listdir = session.listdir
        releases, evil = self.releases, self.evil

        async def listdir_then_swap(rel: str) -> Any:
            entries = await listdir(rel)
            if rel.endswith("/releases") and not releases.is_symlink():
                exchange(releases, evil)
            return entries

        session.listdir = listdir_then_swap  # type: ignore[method-assign]
        return session

    def raw_errors(self) -> tuple[type[BaseException], ...]:
        return self.inner.raw_errors()

    async def explain(self, exc: BaseException, session: Session | None) -> Any:
        return await self.inner.explain(exc, session)


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_a_symlink_swapped_in_after_the_check_is_refused(
    transport: str, lab: Any, make_bundle: BundleFactory, board: Callable[[str], Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    root = board("b")
    outside, bait = outside_dir(tmp_path)
    uri = str(root) if transport == "local" else lab.servers[0].uri(root)
    ssh = lab.ssh() if transport == "ssh" else None
    deploy(make_bundle(1), uri, DeployOptions(keep=1), ssh=ssh)
    releases = root / "demo" / "releases"
    evil = root / "demo" / "evil"
    evil.symlink_to(outside)
    target = _SwapAfterCheck(parse_target(uri, ssh=ssh), releases, evil)
    with pytest.raises(TransportError, match="symlink|not a directory"):
        deploy(make_bundle(2), target, DeployOptions(keep=1, retry=_once()))
    assert untouched(outside, bait), sorted(p.name for p in outside.iterdir())


def _once() -> Any:
    from edge_sdk.fleet.transports import RetryPolicy

    return RetryPolicy(attempts=1)
