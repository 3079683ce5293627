"""A file swapped in under a deploy's temp name is never installed (issue 20, after finding 3).

A local user who can write in ``<name>/releases`` waits for deploy's upload to be hashed, then
renames a file of their own over the temp name: a rename by name would move *their* file into
place and report it installed. Local targets hash the upload through the descriptor it was
written with and rename only that same file (st_dev/st_ino, before and after); over SSH the
digest and the identity come from one remote descriptor and a stat after the rename checks
that the release is that file. The agent verifies and installs the bytes it read once.
"""

# ruff: noqa: F811  (pytest fixtures imported from test_deploy are parameters here)

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import EdgeSDKError, TransportError
from edge_sdk.fleet.deploy import DeployOptions, deploy, prepare_bundle
from edge_sdk.fleet.transports import RetryPolicy, Session, parse_target
from edge_sdk.fleet.transports.base import Target

from .test_deploy import BundleFactory, board, current_of, lab, make_bundle, signer  # noqa: F401

THEIRS = b"not a bundle the publisher signed"


def plant_over(releases: Path, name: str, source: Path) -> None:
    """Rename a copy of ``source`` over ``releases/name``, as the attacker's loop does."""
    planted = releases / f"planted-{name}"
    with contextlib.suppress(FileExistsError):
        os.link(source, planted)
    os.replace(planted, releases / name)


class _SwapAfterHash(Target):
    """A target whose session swaps a file in under the upload's temp name right after the
    digest of the upload was taken: the moment an attacker would pick, made deterministic."""

    def __init__(self, inner: Target, releases: Path, theirs: Path) -> None:
        super().__init__(inner.uri, inner.root, None)
        self.inner, self.releases, self.theirs = inner, releases, theirs

    async def connect(self) -> Session:
        session = await self.inner.connect()
        sha256 = session.sha256

        async def sha256_then_swap(rel: str) -> str:
            digest = await sha256(rel)
            if ".partial-" in rel:
                plant_over(self.releases, rel.rsplit("/", 1)[1], self.theirs)
            return digest

        session.sha256 = sha256_then_swap  # type: ignore[method-assign]
        return session

    def raw_errors(self) -> tuple[type[BaseException], ...]:
        return self.inner.raw_errors()

    async def explain(self, exc: BaseException, session: Session | None) -> Any:
        return await self.inner.explain(exc, session)


@pytest.mark.parametrize("transport", ["local", "ssh"])
def test_a_file_swapped_in_after_the_digest_is_refused(
    transport: str, lab: Any, make_bundle: BundleFactory, board: Callable[[str], Path],
    tmp_path: Path,
) -> None:  # fmt: skip
    root = board("b")
    uri = str(root) if transport == "local" else lab.servers[0].uri(root)
    ssh = lab.ssh() if transport == "ssh" else None
    v1 = deploy(make_bundle(1), uri, ssh=ssh)
    theirs = tmp_path / "theirs"
    theirs.write_bytes(THEIRS)
    releases = root / "demo" / "releases"
    v2 = prepare_bundle(make_bundle(2))
    target = _SwapAfterHash(parse_target(uri, ssh=ssh), releases, theirs)
    with pytest.raises(TransportError, match="replaced"):
        deploy(v2, target, DeployOptions(retry=RetryPolicy(attempts=1)))
    assert current_of(root).name == v1.file  # never switched to what they planted
    assert not (releases / v2.release_file).exists()  # and it is not left under the name
    # The next deploy, unhindered, installs the genuine release.
    assert deploy(v2, uri, ssh=ssh).status == "ok"
    assert current_of(root).read_bytes() == v2.data


@pytest.fixture
def _fine_thread_switching() -> Iterator[None]:
    # More interleavings per second between deploys and the swapper; the outcome asserted
    # does not depend on it.
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("_fine_thread_switching")
@pytest.mark.parametrize(("transport", "deploys"), [("local", 300), ("ssh", 60)])
def test_a_swapper_racing_every_upload_never_gets_its_file_installed(
    transport: str, deploys: int, lab: Any, make_bundle: BundleFactory,
    board: Callable[[str], Path], tmp_path: Path,
) -> None:  # fmt: skip
    root = board("b")
    uri = str(root) if transport == "local" else lab.servers[0].uri(root)
    ssh = lab.ssh() if transport == "ssh" else None
    bundles = [prepare_bundle(make_bundle(v, size=20_000)) for v in range(1, 7)]
    deploy(bundles[0], uri, ssh=ssh)
    theirs = tmp_path / "theirs"
    theirs.write_bytes(THEIRS)
    releases = root / "demo" / "releases"
    stop = threading.Event()
    tries = [0]

    def swapper() -> None:
        while not stop.is_set():
            for name in os.listdir(releases):
                if ".partial-" in name:
                    with contextlib.suppress(OSError):  # gone meanwhile: try the next one
                        plant_over(releases, name, theirs)
            tries[0] += 1

    thread = threading.Thread(target=swapper)
    thread.start()
    outcomes: dict[str, int] = {}
    installed_wrong: list[str] = []
    try:
        options = DeployOptions(keep=1, allow_downgrade=True, retry=RetryPolicy(attempts=1))
        i = 0
        # At least `deploys` deploys, and on until the swapper has tried a thousand times.
        while (i < deploys or tries[0] < 1000) and thread.is_alive():
            bundle = bundles[i % len(bundles)]
            i += 1
            try:
                result = deploy(bundle, uri, options, ssh=ssh)
            except EdgeSDKError as exc:  # typed, never a raw OSError
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
                continue
            outcomes[result.status] = outcomes.get(result.status, 0) + 1
            # The swapper only ever touches temp names: what deploy says it installed is there.
            if (releases / bundle.release_file).read_bytes() != bundle.data:
                installed_wrong.append(bundle.release_file)
    finally:
        stop.set()
        thread.join()
    assert installed_wrong == [], outcomes
    assert tries[0] >= 1000, tries
    assert sum(outcomes.values()) == i >= deploys
    # With the attacker gone, deploys work as before.
    assert deploy(bundles[-1], uri, DeployOptions(allow_downgrade=True), ssh=ssh).status in (
        "ok", "unchanged",
    )  # fmt: skip
    assert current_of(root).read_bytes() == bundles[-1].data


class _NoPosixRename(Target):
    """An SSH target whose SFTP server lacks posix-rename@openssh.com (the mv fallback)."""

    def __init__(self, inner: Target) -> None:
        super().__init__(inner.uri, inner.root, None)
        self.inner = inner

    async def connect(self) -> Session:
        import asyncssh

        session = await self.inner.connect()

        async def unsupported(*_: object) -> None:
            raise asyncssh.SFTPOpUnsupported("posix-rename not supported")

        session.sftp.posix_rename = unsupported  # type: ignore[attr-defined]
        return session

    def raw_errors(self) -> tuple[type[BaseException], ...]:
        return self.inner.raw_errors()

    async def explain(self, exc: BaseException, session: Session | None) -> Any:
        return await self.inner.explain(exc, session)


def test_the_mv_fallback_never_moves_into_a_directory_a_planted_link_names(
    lab: Any, make_bundle: BundleFactory, board: Callable[[str], Path], tmp_path: Path
) -> None:
    """Sibling: without posix-rename the switch of `current` ran `mv -f tmp current`; with
    `current` a symlink to a directory outside the root, mv moved our link *into* it."""
    root = board("b")
    outside = tmp_path / "outside"
    outside.mkdir()
    uri = lab.servers[0].uri(root)
    target = _NoPosixRename(parse_target(uri, ssh=lab.ssh()))
    v1 = deploy(make_bundle(1), target)
    assert current_of(root).name == v1.file  # the fallback works
    current = root / "demo" / "current"
    current.unlink()
    current.symlink_to(outside)  # planted by someone who can write in demo/
    v2 = deploy(make_bundle(2), target)
    assert sorted(os.listdir(outside)) == []
    assert current_of(root).name == v2.file
