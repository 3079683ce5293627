"""An interrupted deploy resumes instead of starting over, over real sshd and into a directory.

The partial upload is named by the SHA-256 of the file it is part of; it is extended only when
its hash equals that of the local file's first bytes of its length, and the whole file's hash
is compared before it is renamed into place. Bundles are a few MB (several 1 MiB pieces): the
multi-GB case is tools/bench_transfers.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_sdk.errors import DeployError, TransportError
from edge_sdk.fleet.deploy import (
    DeployOptions,
    PreparedBundle,
    ProgressEvent,
    deploy,
    deploy_async,
    prepare_bundle,
    resume_name,
)
from edge_sdk.fleet.transports import RetryPolicy, SshOptions
from edge_sdk.format.bundle import read_bundle, save_bundle
from edge_sdk.format.manifest import Target
from edge_sdk.format.verify import verify_bundle
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, TrustStore, generate_key

from .sshd import DropProxy, KeyPair, SshServer, make_keypair, sshd_available

ONCE = DeployOptions(retry=RetryPolicy(attempts=1))
SIZE = 3 * 1024 * 1024 + 12_345  # four 1 MiB pieces, the last one short


@dataclass
class Board:
    server: SshServer
    client: KeyPair
    known_hosts: Path

    def ssh(self, known_hosts: Path | None = None) -> SshOptions:
        return SshOptions(identity=self.client.private, known_hosts=known_hosts or self.known_hosts,
                          use_agent=False, connect_timeout=5, command_timeout=30)  # fmt: skip


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    reason = sshd_available()
    if reason:
        pytest.fail(reason)  # tools/test.sh installs openssh-server: missing is a broken setup
    work = tmp_path_factory.mktemp("resume-sshd")
    client = make_keypair(work / "client_ed25519")
    server = SshServer.start(work / "sshd", authorized=[client.public])
    try:
        yield Board(server, client, server.write_known_hosts(work / "known_hosts"))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def signer() -> PrivateKey:
    return generate_key("signing")


def _bundle(tmp_path: Path, signer: PrivateKey, version: int = 1) -> PreparedBundle:
    device = generate_key("device")
    sealed = seal_bundle(os.urandom(SIZE), name="demo", version=version, target=Target("rpi4"),
                         signers=[signer], recipients=[device.public])  # fmt: skip
    path = tmp_path / f"demo-{version}-{os.urandom(3).hex()}.edgepkg"
    save_bundle(sealed, path)
    return prepare_bundle(path, trust=TrustStore.from_keys([signer.public]))


class Interrupted(Exception):
    """The deploying process stops mid-transfer (Ctrl-C, a laptop lid, a killed job)."""


def _stop_after(position: int) -> object:
    def progress(event: ProgressEvent) -> None:
        if event.phase == "uploading" and event.sent >= position:
            raise Interrupted(event.sent)

    return progress


def _partial(root: Path, bundle: PreparedBundle) -> Path:
    return root / "demo" / "releases" / resume_name(bundle)


def _installed(root: Path) -> Path:
    return (root / "demo" / "current").resolve()


def _assert_genuine(root: Path, bundle: PreparedBundle, signer: PrivateKey) -> None:
    installed = _installed(root)
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == bundle.sha256
    assert installed.read_bytes() == bundle.path.read_bytes()
    verify_bundle(read_bundle(installed), TrustStore.from_keys([signer.public]))
    assert [p.name for p in (root / "demo" / "releases").glob(".*")] == []


def _targets(board: Board, root: Path) -> list[tuple[str, SshOptions | None]]:
    ssh_root = root / "ssh"
    dir_root = root / "dir"
    ssh_root.mkdir()
    dir_root.mkdir()
    return [(board.server.uri(ssh_root), board.ssh()), (str(dir_root), None)]


def _root(uri: str) -> Path:
    return Path("/" + uri.split("/", 3)[3]) if uri.startswith("ssh://") else Path(uri)


def test_an_interrupted_upload_resumes_where_it_stopped(
    board: Board, signer: PrivateKey, tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path, signer)
    for uri, ssh in _targets(board, tmp_path):
        root = _root(uri)
        with pytest.raises(Interrupted):
            deploy(bundle, uri, ONCE, ssh=ssh, progress=_stop_after(2 * 1024 * 1024))
        kept = _partial(root, bundle).stat().st_size
        assert 0 < kept < bundle.size
        assert not (root / "demo" / "current").exists()
        result = deploy(bundle, uri, ONCE, ssh=ssh)
        assert result.status == "ok", result.reason
        assert result.resumed_from == kept
        assert result.bytes_sent == bundle.size - kept < bundle.size
        _assert_genuine(root, bundle, signer)


def test_a_connection_cut_midway_resumes_on_the_retry_and_on_the_next_deploy(
    board: Board, signer: PrivateKey, tmp_path: Path
) -> None:
    """A real cut (TCP reset mid-SFTP): the retry in the same deploy resumes; so does the next
    deploy when the first gave up."""
    bundle = _bundle(tmp_path, signer)
    root = tmp_path / "ssh"
    root.mkdir()

    async def scenario() -> tuple[int, int, int]:
        async with DropProxy(board.server.port) as proxy:
            uri = f"ssh://root@127.0.0.1:{proxy.port}{root}"
            ssh = board.ssh(board.server.write_known_hosts(tmp_path / "kh", port=proxy.port))
            proxy.limit = bundle.size // 2
            with pytest.raises(TransportError, match="connection lost while writing"):
                await deploy_async(bundle, uri, ONCE, ssh=ssh)
            kept = _partial(root, bundle).stat().st_size
            proxy.limit = None
            # A sound link now: two attempts allowed, the first one resumes.
            again = await deploy_async(bundle, uri, DeployOptions(), ssh=ssh)
            assert again.status == "ok", again.reason
            return kept, again.resumed_from, again.bytes_sent

    kept, resumed_from, sent = asyncio.run(scenario())
    assert 0 < kept < bundle.size
    # sshd may still be writing what reached it when the client gave up, so the partial can
    # grow after it was measured: the resume starts from what it holds by then, never less.
    assert kept <= resumed_from < bundle.size
    assert sent == bundle.size - resumed_from
    _assert_genuine(root, bundle, signer)


@pytest.mark.parametrize("damage", ["flip", "longer", "other-bundle", "symlink"])
def test_a_partial_that_is_not_a_prefix_of_the_file_is_discarded(
    board: Board, signer: PrivateKey, tmp_path: Path, damage: str
) -> None:
    bundle = _bundle(tmp_path, signer)
    other = _bundle(tmp_path, signer, version=1)  # same release name format, other bytes
    for uri, ssh in _targets(board, tmp_path):
        root = _root(uri)
        with pytest.raises(Interrupted):
            deploy(bundle, uri, ONCE, ssh=ssh, progress=_stop_after(1024 * 1024))
        partial = _partial(root, bundle)
        decoy = tmp_path / f"decoy-{root.name}"
        decoy.write_bytes(b"not yours")
        if damage == "flip":
            raw = bytearray(partial.read_bytes())
            raw[len(raw) // 2] ^= 0x40
            partial.write_bytes(bytes(raw))
        elif damage == "longer":
            partial.write_bytes(bundle.path.read_bytes() + b"trailing")
        elif damage == "other-bundle":
            partial.write_bytes(other.path.read_bytes()[: 1024 * 1024])
        else:
            partial.unlink()
            partial.symlink_to(decoy)
        result = deploy(bundle, uri, ONCE, ssh=ssh)
        assert result.status == "ok", result.reason
        assert result.resumed_from == 0
        assert result.bytes_sent == bundle.size
        _assert_genuine(root, bundle, signer)
        assert decoy.read_bytes() == b"not yours"  # a planted link is never written through


def test_a_truncated_partial_resumes_from_its_new_length(
    board: Board, signer: PrivateKey, tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path, signer)
    for uri, ssh in _targets(board, tmp_path):
        root = _root(uri)
        with pytest.raises(Interrupted):
            deploy(bundle, uri, ONCE, ssh=ssh, progress=_stop_after(2 * 1024 * 1024))
        partial = _partial(root, bundle)
        os.truncate(partial, 777_777)
        result = deploy(bundle, uri, ONCE, ssh=ssh)
        assert (result.status, result.resumed_from) == ("ok", 777_777)
        assert result.bytes_sent == bundle.size - 777_777
        _assert_genuine(root, bundle, signer)


def test_a_partial_of_another_file_is_a_stale_temp(
    board: Board, signer: PrivateKey, tmp_path: Path
) -> None:
    """Per-device bundles share a release name; a partial named by another file's hash is
    removed, never extended, and the genuine deploy sends everything."""
    bundle = _bundle(tmp_path, signer)
    for uri, ssh in _targets(board, tmp_path):
        root = _root(uri)
        releases = root / "demo" / "releases"
        releases.mkdir(parents=True)
        foreign = releases / f".{bundle.release_file}.partial-{'ab' * 32}"
        foreign.write_bytes(bundle.path.read_bytes()[:1000])
        result = deploy(bundle, uri, ONCE, ssh=ssh)
        assert (result.status, result.resumed_from, result.bytes_sent) == ("ok", 0, bundle.size)
        assert not foreign.exists()
        _assert_genuine(root, bundle, signer)


def test_a_bundle_changed_after_prepare_is_refused_and_its_partial_removed(
    board: Board, signer: PrivateKey, tmp_path: Path
) -> None:
    """The file is streamed at upload time: bytes changed since prepare_bundle fail the whole-file
    hash before the rename (typed), and the next genuine deploy starts over cleanly."""
    bundle = _bundle(tmp_path, signer)
    genuine = bundle.path.read_bytes()
    for uri, ssh in _targets(board, tmp_path):
        root = _root(uri)
        raw = bytearray(genuine)
        raw[-5] ^= 1
        bundle.path.write_bytes(bytes(raw))
        with pytest.raises(DeployError, match="digest mismatch"):
            deploy(bundle, uri, ONCE, ssh=ssh)
        assert not _partial(root, bundle).exists()
        assert not (root / "demo" / "current").exists()
        bundle.path.write_bytes(genuine)
        assert deploy(bundle, uri, ONCE, ssh=ssh).status == "ok"
        _assert_genuine(root, bundle, signer)
