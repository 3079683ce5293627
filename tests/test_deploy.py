"""Deploying bundles to local directories and to real sshd "boards", with faults injected.

Every SSH test talks to a real OpenSSH server (tests/sshd.py) on 127.0.0.1; the "boards" are
directories on this machine, so the tests can look at what a deploy left behind. Disk-full and
read-only cases use real mounts (tmpfs, read-only bind mounts) and need root, like CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from edge_sdk.errors import (
    DeployError,
    EdgeSDKError,
    KeyFileError,
    SignatureError,
    TransportError,
    UsageError,
)
from edge_sdk.fleet.deploy import (
    DeployOptions,
    ProgressEvent,
    deploy,
    deploy_async,
    deploy_fleet,
    prepare_bundle,
    rollback,
    status,
)
from edge_sdk.fleet.inventory import Device, load_inventory, parse_inventory
from edge_sdk.fleet.transports import RetryPolicy, SshOptions, parse_target
from edge_sdk.format.bundle import read_bundle, save_bundle
from edge_sdk.format.manifest import Target
from edge_sdk.format.verify import verify_bundle
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, TrustStore, generate_key, save_keypair

from .sshd import DropProxy, KeyPair, SshServer, free_port, make_keypair, sshd_available

ONCE = RetryPolicy(attempts=1)
QUICK = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
IS_ROOT = os.geteuid() == 0


# -- fixtures -----------------------------------------------------------------------------------


@dataclass
class Lab:
    """Two sshd "boards", the keys to reach them, and a signing key for bundles."""

    workdir: Path
    client: KeyPair
    stranger: KeyPair
    servers: list[SshServer]
    known_hosts: Path
    signer: PrivateKey
    trust: Path

    def ssh(self, **changes: object) -> SshOptions:
        base = SshOptions(
            identity=self.client.private,
            known_hosts=self.known_hosts,
            use_agent=False,
            connect_timeout=5,
            command_timeout=30,
        )
        return replace(base, **changes)  # type: ignore[arg-type]

    def devices(self, base: Path, count: int, **fields: object) -> list[Device]:
        """``count`` simulated boards with their own root under ``base``, across both sshd."""
        out = []
        for i in range(count):
            root = base / f"ssh-{i}"
            root.mkdir(parents=True)
            uri = self.servers[i % len(self.servers)].uri(root)
            out.append(Device(f"ssh-{i}", uri, ssh=self.ssh(), **fields))  # type: ignore[arg-type]
        return out


@pytest.fixture(scope="session")
def signer() -> PrivateKey:
    return generate_key("signing")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, signer: PrivateKey) -> Iterator[Lab]:
    reason = sshd_available()
    if reason:
        # tools/test.sh installs openssh-server; a missing sshd is a broken setup, not a skip.
        pytest.fail(reason)
    work = tmp_path_factory.mktemp("ssh-lab")
    client = make_keypair(work / "client_ed25519")
    stranger = make_keypair(work / "stranger_ed25519")
    servers: list[SshServer] = []
    try:
        for i in range(2):
            servers.append(SshServer.start(work / f"sshd{i}", authorized=[client.public]))
        known_hosts = work / "known_hosts"
        for server in servers:
            server.write_known_hosts(known_hosts)
        _, trust = save_keypair(signer, work / "publisher")
        yield Lab(work, client, stranger, servers, known_hosts, signer, trust)
    finally:
        for server in servers:
            server.stop()


BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path, signer: PrivateKey) -> BundleFactory:
    """Seal a real bundle of random model bytes: make_bundle(version, size=..., name=...)."""
    out = tmp_path / "bundles"
    out.mkdir()

    def make(
        version: int,
        *,
        size: int = 40_000,
        name: str = "demo",
        profile: str = "rpi4",
        recipients: tuple[PrivateKey, ...] = (),
        signers: tuple[PrivateKey, ...] | None = None,
    ) -> Path:
        bundle = seal_bundle(
            os.urandom(size),
            name=name,
            version=version,
            target=Target(profile),
            signers=list(signers or (signer,)),
            recipients=[r.public for r in recipients],
        )
        path = out / f"{name}-{version}-{os.urandom(3).hex()}.edgepkg"
        save_bundle(bundle, path)
        return path

    return make


@pytest.fixture
def board(tmp_path: Path) -> Callable[[str], Path]:
    """A fresh, empty target root directory."""

    def make(name: str = "board") -> Path:
        root = tmp_path / name
        root.mkdir()
        return root

    return make


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def current_of(root: Path, name: str = "demo") -> Path:
    """The release file ``current`` resolves to, after checking the link is ours (relative)."""
    link = root / name / "current"
    assert link.is_symlink()
    text = os.readlink(link)
    assert text.startswith("releases/") and "/" not in text[len("releases/") :]
    return link.resolve(strict=True)


def leftovers(root: Path, name: str = "demo") -> list[str]:
    """Temp files a deploy may leave when interrupted."""
    found = [p.name for p in (root / name / "releases").glob(".*")]
    return found + [p.name for p in (root / name).glob(".current.tmp-*")]


def releases(root: Path, name: str = "demo") -> list[str]:
    return sorted(
        p.name for p in (root / name / "releases").iterdir() if not p.name.startswith(".")
    )


# -- local directory targets --------------------------------------------------------------------


def test_local_deploy_layout_and_atomic_install(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("sdcard")
    path = make_bundle(7)
    prepared = prepare_bundle(path)
    events: list[ProgressEvent] = []
    result = deploy(path, str(root), progress=events.append)

    assert result.status == "ok" and result.uploaded
    assert (result.name, result.version, result.digest) == ("demo", 7, prepared.digest)
    assert result.file == f"7-{prepared.digest[:16]}.edgepkg"
    installed = current_of(root)
    assert installed.name == result.file
    assert sha(installed) == sha(path)
    read_bundle(installed)  # a complete bundle, not a prefix
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    assert leftovers(root) == []
    phases = [e.phase for e in events]
    assert phases[0] == "connecting" and phases[-1] == "done"
    assert "uploading" in phases and "switching" in phases
    assert max(e.sent for e in events if e.phase == "uploading") == prepared.size

    # file:// URIs name the same place.
    again = deploy(path, root.as_uri())
    assert again.status == "unchanged" and not again.uploaded


def test_root_must_exist_and_bundle_names_are_checked(
    make_bundle: BundleFactory, tmp_path: Path
) -> None:
    with pytest.raises(DeployError, match="does not exist"):
        deploy(make_bundle(1), str(tmp_path / "typo"))
    assert not (tmp_path / "typo").exists()
    # The manifest allows "a..b"; as a directory name on a board it is refused all the same.
    with pytest.raises(DeployError, match="not a safe directory name"):
        prepare_bundle(make_bundle(1, name="a..b"))


def test_prepare_with_trust_verifies_before_anything_moves(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    other = generate_key("signing")
    path = make_bundle(1, signers=(other,))
    with pytest.raises(SignatureError):
        prepare_bundle(path, trust=TrustStore.from_keys([generate_key("signing").public]))
    prepared = prepare_bundle(path, trust=TrustStore.from_keys([other.public]))
    assert deploy(prepared, str(board("b"))).status == "ok"


def test_idempotent_and_corrupted_release_is_replaced(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("b")
    path = make_bundle(1)
    deploy(path, str(root))
    installed = current_of(root)
    inode = installed.stat().st_ino
    result = deploy(path, str(root))
    assert result.status == "unchanged" and not result.uploaded
    assert installed.stat().st_ino == inode  # not rewritten

    # Bit rot (or tampering) in the stored release: same name, different bytes → sent again.
    data = bytearray(installed.read_bytes())
    data[-1] ^= 0x01
    installed.write_bytes(bytes(data))
    repaired = deploy(path, str(root))
    assert repaired.status == "ok" and repaired.uploaded
    assert sha(current_of(root)) == sha(path)


def test_keep_k_prunes_but_never_current_or_previous(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("b")
    paths = [make_bundle(v) for v in range(1, 6)]
    for path in paths:
        deploy(path, str(root))
    files = [prepare_bundle(p).release_file for p in paths]
    assert releases(root) == sorted(files[2:])  # default keep=3

    one = DeployOptions(keep=1)
    result = deploy(make_bundle(6), str(root), one)
    # keep=1 still keeps the previous release, the one rollback goes back to.
    assert releases(root) == sorted([files[4], result.file])
    assert set(result.pruned) == {files[2], files[3]}

    # After a rollback to v5, deploying v7 must keep v5 (previous) and v6 (what rollback from
    # v7 would pick) even with keep=1.
    rollback("demo", str(root))
    assert current_of(root).name == files[4]
    v7 = deploy(make_bundle(7), str(root), one)
    assert releases(root) == sorted([files[4], result.file, v7.file])


def test_stale_temp_files_are_cleaned(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("b")
    deploy(make_bundle(1), str(root))
    (root / "demo" / "releases" / ".2-0123456789abcdef.edgepkg.partial-deadbeef").write_bytes(b"x")
    (root / "demo" / ".current.tmp-cafe").symlink_to("releases/nothing")
    deploy(make_bundle(2), str(root))
    assert leftovers(root) == []


def test_downgrade_refused_unless_allowed(
    make_bundle: BundleFactory, board: Callable[[str], Path], signer: PrivateKey
) -> None:
    # The current release's version refuses an older one only when it verifies against the
    # publisher trust (tests/test_deploy_verified.py has the planted-file attacks).
    trust = TrustStore.from_keys([signer.public])
    root = board("b")
    deploy(prepare_bundle(make_bundle(5), trust=trust), str(root))
    old = prepare_bundle(make_bundle(4), trust=trust)
    with pytest.raises(DeployError, match=r"refusing to replace demo v5 with older v4"):
        deploy(old, str(root))
    assert current_of(root).name.startswith("5-")
    assert deploy(old, str(root), DeployOptions(allow_downgrade=True)).status == "ok"
    assert current_of(root).name.startswith("4-")


def test_rollback_and_status_local(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("b")
    files = [deploy(make_bundle(v), str(root)).file for v in (1, 2, 3)]
    other = deploy(make_bundle(9, name="other-model"), str(root))
    (root / "lost+found").mkdir()  # not ours: ignored by status

    listed = {s.name: s for s in status(str(root))}
    assert set(listed) == {"demo", "other-model"}
    demo = listed["demo"]
    assert (demo.version, demo.file, demo.problem) == (3, files[2], None)
    assert demo.digest == prepare_bundle(current_of(root)).digest
    assert demo.releases == tuple(files)
    assert demo.switched_at is not None and abs(demo.switched_at.timestamp() - time.time()) < 60
    assert listed["other-model"].file == other.file

    before = demo.switched_at
    time.sleep(0.02)
    back = rollback("demo", str(root))
    assert (back.from_file, back.to_file, back.version) == (files[2], files[1], 2)
    after = {s.name: s for s in status(str(root))}["demo"]
    assert after.version == 2 and after.switched_at is not None and after.switched_at > before
    rollback("demo", str(root))
    with pytest.raises(DeployError, match="no release older"):
        rollback("demo", str(root))
    assert rollback("demo", str(root), to_version=3).to_file == files[2]
    with pytest.raises(DeployError, match="v8 is not on the target"):
        rollback("demo", str(root), to_version=8)
    with pytest.raises(DeployError, match="no current release"):
        rollback("never-deployed", str(root))


def test_health_check_failure_switches_back(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("b")
    v1 = deploy(make_bundle(1), str(root))
    failing = DeployOptions(health_check="test -L {current} && test -f {file} && exit 3")
    with pytest.raises(
        DeployError, match=r"health check failed \(exit status 3\); rolled back to 1-"
    ):
        deploy(make_bundle(2), str(root), failing)
    assert current_of(root).name == v1.file

    slow = DeployOptions(health_check="sleep 10", health_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DeployError, match="health check failed \\(timed out\\)"):
        deploy(make_bundle(3), str(root), slow)
    assert time.monotonic() - started < 5
    assert current_of(root).name == v1.file

    fresh = board("fresh")
    with pytest.raises(DeployError, match="no previous release, so current was removed"):
        deploy(make_bundle(1), str(fresh), failing)
    assert not (fresh / "demo" / "current").exists()

    ok = DeployOptions(health_check='test "$(readlink {current})" = releases/$(basename {file})')
    assert deploy(make_bundle(4), str(root), ok).status == "ok"


def test_options_are_validated() -> None:
    with pytest.raises(UsageError, match="keep must be at least 1"):
        DeployOptions(keep=0)
    with pytest.raises(UsageError, match="invalid placeholder"):
        DeployOptions(health_check="curl {url}")
    with pytest.raises(UsageError, match="passwords in target URIs"):
        parse_target("ssh://pi:hunter2@board/srv")
    with pytest.raises(UsageError, match="absolute root"):
        parse_target("ssh://pi@board")
    with pytest.raises(UsageError, match="unsupported target"):
        parse_target("ftp://board/srv")
    with pytest.raises(UsageError, match="contradicts"):
        parse_target("ssh://pi@board:2222/srv", ssh=SshOptions(port=22))


# -- SSH targets --------------------------------------------------------------------------------


def test_ssh_deploy_idempotent_rollback_status(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("pi")
    uri = lab.servers[0].uri(root)
    ssh = lab.ssh()
    v1, v2 = make_bundle(1, size=300_000), make_bundle(2, size=300_000)
    first = deploy(v1, uri, ssh=ssh)
    assert first.status == "ok" and first.uploaded and first.previous is None
    second = deploy(v2, uri, ssh=ssh)
    assert second.status == "ok" and second.previous == first.file
    assert sha(current_of(root)) == sha(v2)
    again = deploy(v2, uri, DeployOptions(retry=ONCE), ssh=ssh)
    assert again.status == "unchanged" and not again.uploaded
    assert leftovers(root) == []

    state = status(uri, ssh=ssh)
    assert [(s.name, s.version, s.file) for s in state] == [("demo", 2, second.file)]
    assert state[0].digest == prepare_bundle(v2).digest
    back = rollback("demo", uri, ssh=ssh)
    assert back.to_file == first.file and current_of(root).name == first.file
    # Going forward again switches without uploading.
    forward = deploy(v2, uri, ssh=ssh)
    assert forward.status == "ok" and not forward.uploaded


def test_ssh_verify_remote_runs_a_real_verifier_on_the_board(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path], tmp_path: Path
) -> None:
    """The verification command runs over SSH, on the uploaded temp file, before the switch."""
    root = board("pi")
    uri = lab.servers[1].uri(root)
    script = tmp_path / "verify_on_board.py"
    script.write_text(
        "import sys\n"
        "from edge_sdk.format.bundle import read_bundle\n"
        "from edge_sdk.errors import EdgeSDKError\n"
        "from edge_sdk.keys import TrustStore\n"
        "from edge_sdk.format.verify import verify_bundle\n"
        "assert '.partial-' in sys.argv[1], sys.argv[1]\n"
        "try:\n"
        "    verify_bundle(read_bundle(sys.argv[1]), TrustStore.load([sys.argv[2]]))\n"
        "except EdgeSDKError as exc:\n"
        "    sys.exit(f'verification failed: {exc.message}')\n"
    )
    command = f"{sys.executable} {script} {{file}} {{trust}}"
    good = DeployOptions(verify_remote=str(lab.trust), verify_command=command)
    v1 = deploy(make_bundle(1), uri, good, ssh=lab.ssh())
    assert v1.status == "ok"

    wrong_trust = tmp_path / "wrong.pub"
    wrong_trust.write_bytes(generate_key("signing").public.to_pem())
    bad = replace(good, verify_remote=str(wrong_trust))
    v2 = make_bundle(2)
    with pytest.raises(
        DeployError, match=r"remote verification of 2-.* failed .*verification failed"
    ):
        deploy(v2, uri, bad, ssh=lab.ssh())
    assert current_of(root).name == v1.file
    assert releases(root) == [v1.file]  # rejected upload never renamed into place
    assert leftovers(root) == []

    failing_tool = replace(good, verify_command="false {file} {trust}")
    with pytest.raises(DeployError, match="remote verification"):
        deploy(v2, uri, failing_tool, ssh=lab.ssh())
    assert current_of(root).name == v1.file


def test_ssh_health_check_rolls_back(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("pi")
    uri = lab.servers[0].uri(root)
    v1 = deploy(make_bundle(1), uri, ssh=lab.ssh())
    options = DeployOptions(health_check="echo model {name} v{version} broken >&2; exit 1")
    with pytest.raises(
        DeployError, match=r"health check failed \(exit status 1: model demo v2 broken\)"
    ):
        deploy(make_bundle(2), uri, options, ssh=lab.ssh())
    assert current_of(root).name == v1.file


def test_host_key_mismatch_is_refused(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path], tmp_path: Path
) -> None:
    root = board("pi")
    a, b = lab.servers
    # Server A's key recorded under server B's address: B now looks like an impostor.
    known = tmp_path / "known_hosts"
    known.write_text(f"[{b.host}]:{b.port} {' '.join(a.host_key.public.split()[:2])}\n")
    for trusting in (False, True):  # trust-on-first-use never overrides a recorded key
        with pytest.raises(TransportError, match="host key mismatch") as info:
            deploy(
                make_bundle(1),
                b.uri(root),
                DeployOptions(retry=QUICK),
                ssh=lab.ssh(known_hosts=known, accept_new_host_keys=trusting),
            )
        assert f"127.0.0.1:{b.port}" in info.value.message
        assert "gave up" not in info.value.message  # refused at once, never retried
        assert info.value.hint and "ssh-keygen -R" in info.value.hint
    assert list(root.iterdir()) == []


def test_unknown_host_refused_unless_trust_on_first_use(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path], tmp_path: Path
) -> None:
    root = board("pi")
    server = lab.servers[0]
    known = tmp_path / "ssh" / "known_hosts"
    with pytest.raises(TransportError, match="unknown host key"):
        deploy(make_bundle(1), server.uri(root), ssh=lab.ssh(known_hosts=known))
    assert not known.exists()
    result = deploy(
        make_bundle(1), server.uri(root), ssh=lab.ssh(known_hosts=known, accept_new_host_keys=True)
    )
    assert result.status == "ok"
    assert known.read_text().strip() == server.known_hosts_line
    assert oct(known.stat().st_mode & 0o777) == "0o600"
    # Recorded now: plain strict checking accepts it, and it is not recorded twice.
    deploy(
        make_bundle(2), server.uri(root), ssh=lab.ssh(known_hosts=known, accept_new_host_keys=True)
    )
    deploy(make_bundle(3), server.uri(root), ssh=lab.ssh(known_hosts=known))
    assert len(known.read_text().splitlines()) == 1


def test_auth_failure_is_not_retried(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    root = board("pi")
    device = Device(
        "cam-auth", lab.servers[0].uri(root), ssh=lab.ssh(identity=lab.stranger.private)
    )
    slow_retries = DeployOptions(retry=RetryPolicy(attempts=3, base_delay=5, max_delay=5))
    fleet = deploy_fleet(make_bundle(1), [device], slow_retries)
    (result,) = fleet.results
    assert result.status == "failed" and result.attempts == 1 and result.elapsed < 4
    assert isinstance(result.error, TransportError)
    assert result.reason is not None
    assert result.reason.startswith("cam-auth (ssh://root@127.0.0.1:")
    assert "authentication failed" in result.reason and "stranger_ed25519" in result.reason
    with pytest.raises(TransportError, match="identity file .* does not exist"):
        deploy(make_bundle(1), lab.servers[0].uri(root), ssh=lab.ssh(identity=root / "nope"))


def test_unreachable_host_is_retried_then_reported(make_bundle: BundleFactory, lab: Lab) -> None:
    port = free_port()  # nothing listens there
    device = Device("cam-off", f"ssh://root@127.0.0.1:{port}/srv/models", ssh=lab.ssh())
    fleet = deploy_fleet(make_bundle(1), [device], DeployOptions(retry=QUICK))
    (result,) = fleet.results
    assert result.status == "failed" and result.attempts == 2
    assert isinstance(result.error, TransportError)
    assert "unreachable" in (result.reason or "") and "gave up after 2 attempts" in (
        result.reason or ""
    )
    with pytest.raises(
        TransportError, match=r"unreachable while connecting: \[127.0.0.1\]:\d+: Connection refused"
    ):
        deploy(make_bundle(1), device.target, DeployOptions(retry=ONCE), ssh=lab.ssh())


def test_remote_digest_mismatch_is_caught(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    """Flip a byte of the upload on the board after it is written, before it is checked."""
    root = board("pi")
    v1 = deploy(make_bundle(1), lab.servers[0].uri(root), ssh=lab.ssh())
    v2 = make_bundle(2, size=200_000)
    size = prepare_bundle(v2).size

    def tamper(event: ProgressEvent) -> None:
        if event.phase == "uploading" and event.sent == size:
            (partial,) = (root / "demo" / "releases").glob(".*.partial-*")
            data = bytearray(partial.read_bytes())
            data[size // 2] ^= 0xFF
            partial.write_bytes(bytes(data))

    with pytest.raises(DeployError, match=r"remote digest mismatch for 2-.*current unchanged"):
        deploy(v2, lab.servers[0].uri(root), ssh=lab.ssh(), progress=tamper)
    assert current_of(root).name == v1.file
    assert leftovers(root) == [] and releases(root) == [v1.file]


# -- permissions and full disks (real mounts) ----------------------------------------------------


@contextlib.contextmanager
def mounted(*args: str, target: Path) -> Iterator[Path]:
    if not IS_ROOT:
        pytest.skip("mounting a test filesystem needs root")
    target.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", *args, str(target)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@contextlib.contextmanager
def read_only(source: Path, target: Path) -> Iterator[Path]:
    with mounted("--bind", str(source), target=target):
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if remount.returncode != 0:
            pytest.skip(f"cannot remount read-only: {remount.stderr.strip()}")
        yield target


def _targets(lab: Lab, root: Path) -> list[tuple[str, SshOptions | None]]:
    return [(str(root), None), (lab.servers[0].uri(root), lab.ssh())]


def test_read_only_root_is_permission_denied(
    lab: Lab, make_bundle: BundleFactory, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    with read_only(source, tmp_path / "ro") as root:
        for uri, ssh in _targets(lab, root):
            with pytest.raises(
                TransportError, match=r"permission denied \(read-only file system\)"
            ) as info:
                deploy(make_bundle(1), uri, DeployOptions(retry=QUICK), ssh=ssh)
            assert "creating directory" in info.value.message and str(root) in info.value.message
            assert "gave up" not in info.value.message  # not treated as transient


def test_immutable_directory_is_permission_denied(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    """EPERM even for root (chattr +i): OpenSSH reports it as SFTP "permission denied"."""
    if not IS_ROOT:
        pytest.skip("chattr +i needs root")
    root = board("pi")
    deploy(make_bundle(1), str(root))
    frozen = root / "demo" / "releases"
    if subprocess.run(["chattr", "+i", str(frozen)], capture_output=True, check=False).returncode:
        pytest.skip("this filesystem does not support immutable directories")
    try:
        for uri, ssh in _targets(lab, root):
            with pytest.raises(TransportError, match="permission denied") as info:
                deploy(make_bundle(2), uri, DeployOptions(retry=QUICK), ssh=ssh)
            assert "writing" in info.value.message
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)
    assert current_of(root).name.startswith("1-")


def test_disk_full_is_refused_before_uploading(
    lab: Lab, make_bundle: BundleFactory, tmp_path: Path
) -> None:
    with mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", target=tmp_path / "small") as root:
        big = make_bundle(1, size=1_500_000)
        for uri, ssh in _targets(lab, root):
            with pytest.raises(TransportError, match=r"disk full: 15\d{5} bytes needed"):
                deploy(big, uri, ssh=ssh)
        assert leftovers(root) == []


def test_disk_full_during_upload_is_a_real_enospc(
    lab: Lab, make_bundle: BundleFactory, tmp_path: Path
) -> None:
    """The disk fills up (another writer) while the upload runs: a real ENOSPC mid-write."""
    with mounted("-t", "tmpfs", "-o", "size=3m", "tmpfs", target=tmp_path / "small") as root:
        for uri, ssh in _targets(lab, root):
            v1 = deploy(make_bundle(1, size=10_000), uri, ssh=ssh)
            filler = root / "filler"

            def fill(event: ProgressEvent, filler: Path = filler) -> None:
                if (
                    event.phase == "uploading"
                    and 0 < event.sent < event.total
                    and not filler.exists()
                ):
                    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
                        while True:  # until ENOSPC
                            handle.write(b"\0" * 65536)

            big = make_bundle(2, size=1_800_000)  # two 1 MiB chunks: the filler runs in between
            with pytest.raises(TransportError, match="disk full") as info:
                deploy(big, uri, DeployOptions(retry=QUICK), ssh=ssh, progress=fill)
            assert "writing" in info.value.message and "gave up" not in info.value.message
            assert current_of(root).name == v1.file
            assert leftovers(root) == []  # the partial upload was removed
            filler.unlink()
            assert deploy(big, uri, ssh=ssh).status == "ok"
            assert sha(current_of(root)) == sha(big)
            subprocess.run(["rm", "-rf", str(root / "demo")], check=True)


# -- fleets and inventories ------------------------------------------------------------------------


def root_of(device: Device) -> Path:
    """The directory a test device's target URI points at (all "boards" are local dirs)."""
    return Path(urlsplit(device.target).path if "://" in device.target else device.target)


def _fleet(lab: Lab, board: Callable[[str], Path], n_ssh: int, n_local: int) -> list[Device]:
    devices = lab.devices(board("fleet"), n_ssh, profile="rpi4")
    for i in range(n_local):
        devices.append(Device(f"local-{i}", str(board(f"local-{i}")), profile="rpi4"))
    return devices


def test_fleet_parallel_canary_and_progress(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    devices = _fleet(lab, board, 4, 2)
    bundle = make_bundle(3, size=200_000)
    events: list[ProgressEvent] = []
    options = DeployOptions(health_check="test -f {current}")
    fleet = deploy_fleet(bundle, devices, options, parallel=3, canary=1, progress=events.append)
    assert fleet.ok and not fleet.stopped and fleet.count("ok") == 6
    assert [r.device for r in fleet.results] == [d.name for d in devices]
    for device, result in zip(devices, fleet.results, strict=True):
        assert result.uploaded and result.elapsed > 0 and result.attempts == 1
        assert sha(current_of(root_of(device))) == sha(bundle)
    done = [e for e in events if e.phase == "done"]
    assert sorted(e.device or "" for e in done) == sorted(d.name for d in devices)
    # The canary finished before any other device started connecting.
    first_done = next(i for i, e in enumerate(events) if e.phase == "done")
    others = [
        i for i, e in enumerate(events) if e.phase == "connecting" and e.device != devices[0].name
    ]
    assert events[first_done].device == devices[0].name and min(others) > first_done

    again = deploy_fleet(bundle, devices, parallel=6)
    assert again.count("unchanged") == 6


def test_fleet_stops_after_too_many_failures(
    lab: Lab, make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    good = _fleet(lab, board, 2, 2)
    dead = [
        Device(f"dead-{i}", f"ssh://root@127.0.0.1:{free_port()}/srv", ssh=lab.ssh())
        for i in range(2)
    ]
    options = DeployOptions(retry=ONCE)
    bundle = make_bundle(1)

    # A failing canary stops everything else.
    fleet = deploy_fleet(bundle, [dead[0], *good], options, canary=1)
    assert fleet.stopped and not fleet.ok
    assert [r.status for r in fleet.results] == ["failed"] + ["skipped"] * 4
    assert all("rollout stopped after 1 failure" in (r.reason or "") for r in fleet.results[1:])

    # max_failures=1: the second failure stops the rollout; what succeeded stays deployed.
    order = [good[0], dead[0], dead[1], good[1], good[2]]
    fleet = deploy_fleet(bundle, order, options, parallel=1, max_failures=1)
    assert [r.status for r in fleet.results] == ["ok", "failed", "failed", "skipped", "skipped"]
    assert fleet.stopped
    assert sha(current_of(root_of(good[0]))) == sha(bundle)
    assert not (root_of(good[1]) / "demo").exists()

    # One failure within budget: everyone else is deployed.
    fleet = deploy_fleet(bundle, [dead[0], *good], options, max_failures=1, parallel=4)
    assert not fleet.stopped and fleet.count("failed") == 1
    assert fleet.count("unchanged") + fleet.count("ok") == 4


def test_fleet_preflight_profile_and_device_keys(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    alice, bob = generate_key("device"), generate_key("device")
    devices = [
        Device("alice", str(board("alice")), profile="rpi4", public_key=alice.public),
        Device("bob", str(board("bob")), profile="rpi4", public_key=bob.public),
        Device("jetson", str(board("jetson")), profile="jetson-orin"),
    ]
    for_alice = make_bundle(1, recipients=(alice,))
    fleet = deploy_fleet(for_alice, devices, max_failures=5)
    ok, not_for_bob, wrong_profile = fleet.results
    assert ok.status == "ok"
    assert not_for_bob.status == "failed" and "not encrypted for device bob's key" in (
        not_for_bob.reason or ""
    )
    assert wrong_profile.status == "failed" and "targets profile 'rpi4'" in (
        wrong_profile.reason or ""
    )
    assert not (board("unused") / "x").exists()
    assert not (Path(devices[1].target) / "demo").exists()  # nothing was sent

    # Per-device bundles: each device gets its own.
    per_device = {"alice": for_alice, "bob": make_bundle(1, recipients=(bob,))}
    fleet = deploy_fleet(per_device, devices[:2])
    assert [r.status for r in fleet.results] == ["unchanged", "ok"]
    with pytest.raises(UsageError, match="no bundle given for device"):
        deploy_fleet(per_device, devices)


def test_inventory_schema(lab: Lab, tmp_path: Path, make_bundle: BundleFactory) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    save_keypair(generate_key("device"), keys / "cam-1")
    a, b = lab.servers
    (tmp_path / "boards" / "a").mkdir(parents=True)
    (tmp_path / "boards" / "b").mkdir(parents=True)
    (tmp_path / "local").mkdir()
    text = f"""
[defaults]
profile = "rpi4"
[defaults.ssh]
identity = "{lab.client.private}"
known_hosts = "{lab.known_hosts}"
use_agent = false
connect_timeout = 5

[[device]]
name = "cam-1"
target = "ssh://root@127.0.0.1/{tmp_path}/boards/a"
public_key = "keys/cam-1.pub"
groups = ["kitchen", "canary"]
[device.ssh]
port = {a.port}

[[device]]
name = "cam-2"
target = "ssh://root@127.0.0.1:{b.port}{tmp_path}/boards/b"
groups = ["kitchen"]

[[device]]
name = "shelf"
target = "local"
profile = "x86"
"""
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    inventory = load_inventory(path)
    cam1, cam2, shelf = inventory.devices
    assert cam1.public_key is not None and cam1.public_key_path == keys / "cam-1.pub"
    assert (
        cam1.ssh.port == a.port
        and cam1.ssh.identity == lab.client.private
        and cam1.profile == "rpi4"
    )
    assert shelf.target == str(tmp_path / "local") and shelf.profile == "x86"
    assert inventory.groups == ("canary", "kitchen")
    assert inventory.select(groups=["kitchen"]) == (cam1, cam2)
    assert inventory.select(names=["shelf"], groups=["canary"]) == (cam1, shelf)
    with pytest.raises(UsageError, match="no group named attic"):
        inventory.select(groups=["attic"])
    fleet = deploy_fleet(make_bundle(1), inventory.select(groups=["kitchen"]))
    assert fleet.ok, [r.reason for r in fleet.results]


@pytest.mark.parametrize(
    ("snippet", "error", "message"),
    [
        ('name = "a"\ntarget = "/x"\nprot = 1', UsageError, "unknown field.*prot"),
        ('name = "../a"\ntarget = "/x"', UsageError, "needs a name"),
        ('name = "a"', UsageError, "target must be"),
        ('name = "a"\ntarget = "ssh://u:pw@h/x"', UsageError, "passwords"),
        (
            'name = "a"\ntarget = "ssh://h/x"\n[device.ssh]\nport = 70000',
            UsageError,
            "port must be",
        ),
        (
            'name = "a"\ntarget = "ssh://h:22/x"\n[device.ssh]\nport = 2222',
            UsageError,
            "contradicts",
        ),
        (
            'name = "a"\ntarget = "ssh://h/x"\n[device.ssh]\naccept_new_host_keys = "yes"',
            UsageError,
            "true or false",
        ),
        ('name = "a"\ntarget = "/x"\n[device.ssh]\nport = 22', UsageError, "non-SSH target"),
        ('name = "a"\ntarget = "/x"\ngroups = "g"', UsageError, "groups must be a list"),
        (
            'name = "a"\ntarget = "/x"\npublic_key = "missing.pub"',
            KeyFileError,
            "device 'a'.*does not exist",
        ),
        (
            'name = "a"\ntarget = "/x"\n[[device]]\nname = "a"\ntarget = "/y"',
            UsageError,
            "used twice",
        ),
    ],
)
def test_inventory_rejects(
    tmp_path: Path, snippet: str, error: type[EdgeSDKError], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse_inventory(f"[[device]]\n{snippet}\n", base_dir=tmp_path, source=tmp_path / "f.toml")


def test_inventory_rejects_signing_key_and_empty(tmp_path: Path) -> None:
    save_keypair(generate_key("signing"), tmp_path / "pub")
    with pytest.raises(KeyFileError, match="device key is needed"):
        parse_inventory(
            '[[device]]\nname = "a"\ntarget = "/x"\npublic_key = "pub.pub"\n', base_dir=tmp_path
        )
    with pytest.raises(UsageError, match="lists no devices"):
        parse_inventory("", base_dir=tmp_path)
    with pytest.raises(UsageError, match="not valid TOML"):
        parse_inventory("[[device]\n", base_dir=tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        load_inventory(tmp_path / "none.toml")


# -- fault injection ------------------------------------------------------------------------------


def test_dropped_connections_never_leave_a_broken_current(
    lab: Lab,
    make_bundle: BundleFactory,
    board: Callable[[str], Path],
    signer: PrivateKey,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Cut the SSH connection after N random bytes, 50 times, anywhere in a deploy.

    After every cut, ``current`` must resolve to a complete release that verifies — the old one
    or the new one — and a deploy over a sound connection must then finish the job.
    """
    runs = int(os.environ.get("EDGE_SDK_FAULT_RUNS", "50"))
    seed = int(os.environ.get("EDGE_SDK_FAULT_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    root = board("flaky")
    server = lab.servers[0]
    trust = TrustStore.from_keys([signer.public])
    once = DeployOptions(retry=ONCE)
    direct = server.uri(root)
    bundles = [prepare_bundle(make_bundle(v, size=120_000)) for v in range(runs + 1)]

    async def scenario() -> dict[str, int]:
        outcomes = {"ok": 0, "failed": 0}
        async with DropProxy(server.port) as proxy:
            proxied = f"ssh://root@127.0.0.1:{proxy.port}{root}"
            via_proxy = lab.ssh(
                known_hosts=server.write_known_hosts(tmp_path / "kh", port=proxy.port)
            )
            await deploy_async(bundles[0], proxied, once, ssh=via_proxy)
            await asyncio.sleep(0.05)
            full = proxy.last_total  # bytes of one complete deploy session, both directions
            assert full > bundles[0].size
            for i in range(1, runs + 1):
                old, new = bundles[i - 1], bundles[i]
                # Half the cuts anywhere (mostly the upload, the bulk of the bytes), half in
                # the last few kilobytes, where hashing, renames, the switch and sync happen.
                low = 1 if i % 2 else max(1, full - 12_000)
                proxy.limit = rng.randint(low, full)
                proxy.abort = rng.random() < 0.5
                where = f"run {i}, cut after {proxy.limit} of {full} bytes, seed {seed}"
                failure: EdgeSDKError | None = None
                try:
                    # The bound only turns a hang (the bug this test hunts) into a failure.
                    await asyncio.wait_for(deploy_async(new, proxied, once, ssh=via_proxy), 60)
                except (TransportError, DeployError) as exc:  # anything else fails the test
                    failure = exc
                outcomes["failed" if failure else "ok"] += 1
                assert failure is None or f"127.0.0.1:{proxy.port}" in failure.message, where
                installed = current_of(root)
                assert sha(installed) in (old.sha256, new.sha256), where
                verify_bundle(read_bundle(installed), trust)
                healed = await deploy_async(new, direct, once, ssh=lab.ssh())
                assert healed.status in ("ok", "unchanged"), where
                assert sha(current_of(root)) == new.sha256, where
        return outcomes

    caplog.set_level(logging.DEBUG, logger="asyncio")
    outcomes = asyncio.run(scenario())
    gc.collect()  # tasks nobody awaited report their exceptions when they are collected
    # Most cuts land inside the upload and fail; a cut after the last byte lets a deploy finish.
    assert outcomes["failed"] >= runs // 3, outcomes
    noise = [
        r.getMessage()[:80]
        for r in caplog.records
        if r.name == "asyncio" and r.levelno >= logging.WARNING
    ]
    assert noise == [], noise  # no "socket.send() raised", no "Task exception was never retrieved"
    time.sleep(0.1)  # let sessions the proxy cut finish dying on the server side
    assert deploy(bundles[-1].path, direct, ssh=lab.ssh()).status == "unchanged"
    assert leftovers(root) == []
    assert len(releases(root)) == 3


# -- the CLI over the same real targets ------------------------------------------------------------


def test_cli_deploy_status_rollback_local(make_bundle: BundleFactory, board: Callable[[str], Path],
                                          cli: Any) -> None:  # fmt: skip
    root = board("cli-local")
    v1, v2 = make_bundle(1), make_bundle(2)
    first = cli("deploy", v1, "--target", root, "--json")
    assert first.code == 0, first.err
    assert first.json()["results"][0]["status"] == "ok"
    assert cli("deploy", v2, "--target", root).code == 0
    again = cli("deploy", v2, "--target", root, "--json").json()
    assert again["results"][0]["status"] == "unchanged" and again["results"][0]["uploaded"] is False
    state = cli("status", "--target", root, "--json").json()
    assert state["releases"][0]["name"] == "demo" and state["releases"][0]["version"] == 2
    back = cli("rollback", "demo", "--target", root, "--json")
    assert back.code == 0 and back.json()["results"][0]["version"] == 1
    assert sha(current_of(root)) == sha(v1)
    both = cli("deploy", v1, "--target", root, "--inventory", root / "x.toml")
    assert both.code == 2 and "--target or --inventory, not both" in both.err


def test_cli_deploy_fleet_over_ssh(
    lab: Lab, make_bundle: BundleFactory, tmp_path: Path, cli: Any
) -> None:
    devices = []
    for i in range(3):
        root = tmp_path / f"dev{i}"
        root.mkdir()
        key = generate_key("device")
        save_keypair(key, tmp_path / f"dev{i}")
        devices.append((f"dev{i}", lab.servers[i % 2].uri(root), root))
    lines = [
        "[defaults.ssh]",
        f'identity = "{lab.client.private}"',
        f'known_hosts = "{lab.known_hosts}"',
        "use_agent = false",
    ]
    for name, uri, _ in devices:
        lines += ["[[device]]", f'name = "{name}"', f'target = "{uri}"', f'public_key = "{name}.pub"',
                  f'groups = ["{"canary" if name == "dev0" else "rest"}"]']  # fmt: skip
    lines += ["[[device]]", 'name = "offline"', f'target = "ssh://root@127.0.0.1:{free_port()}/srv"',
              'groups = ["rest"]']  # fmt: skip
    inventory = tmp_path / "fleet.toml"
    inventory.write_text("\n".join(lines) + "\n")
    bundle = make_bundle(1)
    ok = cli("deploy", bundle, "--inventory", inventory, "--group", "canary", "--json")
    assert ok.code == 0, ok.err
    assert [r["device"] for r in ok.json()["results"]] == ["dev0"]
    fleet = cli("deploy", bundle, "--inventory", inventory, "--retries", "1", "--json")
    data = fleet.json()
    assert fleet.code == 80 and data["ok"] is False
    by_device = {r["device"]: r for r in data["results"]}
    assert by_device["dev0"]["status"] == "unchanged"
    assert by_device["dev1"]["status"] == by_device["dev2"]["status"] == "ok"
    assert (
        by_device["offline"]["status"] == "failed" and by_device["offline"]["error"] == "transport"
    )
    for _, _, root in devices:
        assert sha(current_of(root)) == sha(bundle)
    status = cli("status", "--inventory", inventory, "--device", "dev1", "--json")
    assert status.code == 0 and status.json()["releases"][0]["version"] == 1


def test_cli_package_for_an_inventory_group(
    lab: Lab, tmp_path: Path, cli: Any, key_files: dict[str, Path]
) -> None:
    keys = [generate_key("device") for _ in range(3)]
    lines = []
    for i, key in enumerate(keys):
        save_keypair(key, tmp_path / f"d{i}")
        lines += ["[[device]]", f'name = "d{i}"', f'target = "{tmp_path / f"root{i}"}"', f'public_key = "d{i}.pub"',
                  f'groups = ["{"lab" if i < 2 else "field"}"]']  # fmt: skip
    (tmp_path / "fleet.toml").write_text("\n".join(lines) + "\n")
    model = tmp_path / "model.tflite"
    model.write_bytes((Path(__file__).parent / "vectors" / "model.tflite").read_bytes())
    out = tmp_path / "m.edgepkg"
    made = cli("package", model, "--profile", "x86_64", "--sign-key", key_files["signer"], "--name", "m",
               "--version", "1", "--inventory", tmp_path / "fleet.toml", "--group", "lab", "-o", out,
               "--json")  # fmt: skip
    assert made.code == 0, made.err
    assert set(made.json()["recipients"]) == {keys[0].key_id, keys[1].key_id}  # d2 is not in "lab"


def test_cli_audit_over_ssh_and_inventory(
    lab: Lab, make_bundle: BundleFactory, tmp_path: Path, cli: Any
) -> None:
    """Audit what boards hold, over the deploy transport: tampered releases and unreachable boards show."""
    root = tmp_path / "audited"
    root.mkdir()
    uri = lab.servers[0].uri(root)
    v1, v2 = make_bundle(1), make_bundle(2)
    for bundle in (v1, v2):
        assert cli("deploy", bundle, "--target", uri, "--identity", lab.client.private, "--known-hosts",
                   lab.known_hosts).code == 0  # fmt: skip
    old = next((root / "demo" / "releases").glob("1-*.edgepkg"))
    raw = bytearray(old.read_bytes())
    raw[-10] ^= 0xFF
    old.write_bytes(bytes(raw))  # someone changed a kept release on the board
    ssh = ["--identity", lab.client.private, "--known-hosts", lab.known_hosts]
    result = cli("audit", "--target", uri, *ssh, "--trust", lab.trust, "--json")
    rows = {Path(r["path"]).name.split("-")[0]: r for r in result.json()["rows"]}
    assert result.code == 1
    assert (
        rows["2"]["status"] == "warning" and rows["2"]["current"] is True
    )  # signed-only: a warning
    assert rows["2"]["reason"] == "payload is not encrypted (signed-only bundle)"
    assert rows["1"]["status"] == "error" and "payload SHA-256 mismatch" in rows["1"]["reason"]
    inventory = tmp_path / "fleet.toml"
    inventory.write_text(
        f'[defaults.ssh]\nidentity = "{lab.client.private}"\nknown_hosts = "{lab.known_hosts}"\n'
        f'use_agent = false\nconnect_timeout = 3\n[[device]]\nname = "board"\ntarget = "{uri}"\n'
        f'[[device]]\nname = "gone"\ntarget = "ssh://root@127.0.0.1:{free_port()}/srv"\n'
    )
    fleet = cli("audit", "--inventory", inventory, "--trust", lab.trust, "--json").json()
    by_device = {}
    for row in fleet["rows"]:
        by_device.setdefault(row["device"].split(" ")[0], []).append(row)
    assert len(by_device["board"]) == 2
    assert by_device["gone"][0]["status"] == "error" and by_device["gone"][0]["kind"] == "transport"


def test_versions_up_to_the_manifest_limit(
    make_bundle: BundleFactory, board: Callable[[str], Path]
) -> None:
    """Versions beyond 15 digits once switched `current` and then crashed pruning (review finding)."""
    root = board("bigver")
    small, big = make_bundle(7), make_bundle(2**63 - 1)
    deploy(small, str(root))
    result = deploy(big, str(root))
    assert result.status == "ok" and sha(current_of(root)) == sha(big)
    [state] = status(str(root))
    assert state.version == 2**63 - 1 and state.problem is None
    assert rollback("demo", str(root)).version == 7


# -- hostile layouts: symlinks planted below the target root ------------------------------------


def _plant(root: Path, outside: Path, where: str) -> None:
    """A symlink at ``root/demo`` or ``root/demo/releases`` pointing outside the root."""
    outside.mkdir(exist_ok=True)
    (outside / "precious.txt").write_text("do not touch")
    if where == "name":
        (root / "demo").symlink_to(outside, target_is_directory=True)
    else:
        (root / "demo").mkdir()
        (root / "demo" / "releases").symlink_to(outside, target_is_directory=True)


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]
    assert (outside / "precious.txt").read_text() == "do not touch"


@pytest.mark.parametrize("where", ["name", "releases"])
def test_local_deploy_refuses_symlinks_below_the_root(make_bundle: BundleFactory, board: Callable[[str], Path],
                                                      tmp_path: Path, where: str) -> None:  # fmt: skip
    root = board(f"sym-{where}")
    outside = tmp_path / f"outside-{where}"
    _plant(root, outside, where)
    with pytest.raises(DeployError, match="not a directory; refusing to write through it"):
        deploy(make_bundle(1), str(root), DeployOptions(retry=ONCE))
    _untouched(outside)
    with pytest.raises(DeployError, match="refusing to write through it"):
        rollback("demo", str(root), retry=ONCE)


@pytest.mark.parametrize("where", ["name", "releases"])
def test_ssh_deploy_refuses_symlinks_below_the_root(lab: Lab, make_bundle: BundleFactory, tmp_path: Path,
                                                    where: str) -> None:  # fmt: skip
    root = tmp_path / f"ssh-sym-{where}"
    root.mkdir()
    outside = tmp_path / f"ssh-outside-{where}"
    _plant(root, outside, where)
    if where == "releases":
        # The review's case: a non-empty releases/ used to skip the directory checks entirely.
        (outside / "1-0000000000000000.edgepkg").write_bytes(b"x")
    target = parse_target(lab.servers[0].uri(root), ssh=lab.ssh())
    with pytest.raises(DeployError, match="refusing to write through it"):
        deploy(make_bundle(2), target, DeployOptions(retry=ONCE))
    assert not (root / "demo" / "current").exists()
    assert (outside / "precious.txt").read_text() == "do not touch"
    assert len(list(outside.iterdir())) == (2 if where == "releases" else 1)


# -- audits read headers and signatures first, and stream payloads ------------------------------


def _sparse_hostile(raw: bytes, path: Path, payload: int) -> None:
    """A file with a real bundle's header, edited (so unsigned) to claim a huge payload, and a
    sparse tail of that size: what a compromised board or a planted file looks like."""
    import json as _json
    import struct

    from .bundle_parts import split_bundle

    parts = split_bundle(raw)
    manifest = _json.loads(parts.manifest)
    manifest["payload"]["size"] = payload
    if (
        not manifest["payload"].get("encrypted", True)
        or manifest["payload"].get("encryption") == "none"
    ):
        manifest["model"]["size"] = payload  # a plain payload is the model itself
    m = _json.dumps(manifest, separators=(",", ":")).encode()
    env = _json.dumps(parts.envelope, separators=(",", ":")).encode()
    header = (b"EDGEPKG\n" + struct.pack(">HHI", 1, 0, len(m)) + m + struct.pack(">I", len(env)) + env
              + struct.pack(">Q", payload))  # fmt: skip
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(len(header) + payload)


def test_audit_reads_signatures_before_payloads(
    lab: Lab, make_bundle: BundleFactory, tmp_path: Path
) -> None:
    import json as _json

    root = tmp_path / "audit-board"
    root.mkdir()
    uri = lab.servers[0].uri(root)
    target = parse_target(uri, ssh=lab.ssh())
    for version in (1, 2):
        deploy(make_bundle(version), target, DeployOptions(retry=ONCE))
    releases = root / "demo" / "releases"
    _sparse_hostile(make_bundle(9).read_bytes(), releases / "9-0123456789abcdef.edgepkg", 1 << 30)
    local = tmp_path / "local-audit"
    local.mkdir()
    _sparse_hostile(make_bundle(9).read_bytes(), local / "huge.edgepkg", 3 << 30)
    for where in (["--target", uri, "--identity", str(lab.client.private), "--known-hosts",
                   str(lab.known_hosts)], [str(local)]):  # fmt: skip
        # VmHWM is this process image's own peak (ru_maxrss would carry the forking parent's
        # over exec, and pytest with TensorFlow loaded is large).
        code = ("import sys\nfrom edge_sdk.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
                "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
                "    sys.stderr.write(hwm)\n")  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", code, "audit", *where, "--trust", str(lab.trust), "--json"],
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        output = proc.stdout
        peak_kib = int(proc.stderr.rsplit("VmHWM:", 1)[1].split()[0])
        assert proc.returncode == 1, proc.stderr  # the hostile row fails the audit
        assert peak_kib < 300 * 1024, f"audit peaked at {peak_kib // 1024} MiB"
        report = _json.loads(output)
        rows = {Path(r["path"]).name: r for r in report["rows"]}
        hostile = rows["9-0123456789abcdef.edgepkg" if "--target" in where else "huge.edgepkg"]
        assert hostile["status"] == "error" and hostile["kind"] == "signature", hostile
        assert hostile["name"] == "demo" and hostile["version"] == 9  # what the header claimed
        if "--target" in where:
            good = [r for r in report["rows"] if r["status"] in ("ok", "warning")]
            assert sorted(r["version"] for r in good) == [1, 2]
            assert [r["version"] for r in good if r["current"]] == [2]


def test_connection_noise_after_a_drop_is_not_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_sdk.fleet.transports import with_session

    caplog.set_level(logging.DEBUG, logger="asyncio")

    async def operation(session: Any) -> None:
        async def reader(exc: BaseException) -> None:
            raise exc

        # What asyncssh leaves behind when a link drops: reader tasks that failed, never awaited.
        for exc in (
            ConnectionResetError("peer gone"),
            BrokenPipeError("pipe"),
            ValueError("a real bug"),
        ):
            asyncio.ensure_future(reader(exc))  # noqa: RUF006  (unreferenced on purpose)
        await asyncio.sleep(0.01)
        logging.getLogger("asyncio").warning("socket.send() raised exception.")

    asyncio.run(with_session(parse_target(str(tmp_path)), operation, ONCE))
    gc.collect()
    shown = [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and r.levelno >= logging.WARNING
    ]
    # Connection errors are quiet; anything else still reaches asyncio's handler.
    assert len(shown) == 1 and "never retrieved" in shown[0], shown
    assert any("ValueError" in str(r.exc_info) for r in caplog.records if r.name == "asyncio")


def test_a_dangling_current_with_a_huge_version_cannot_block_deploys(make_bundle: BundleFactory,
                                                                     board: Callable[[str], Path]) -> None:  # fmt: skip
    root = board("dangling")
    (root / "demo" / "releases").mkdir(parents=True)
    (root / "demo" / "current").symlink_to("releases/9223372036854775807-0000000000000000.edgepkg")
    result = deploy(make_bundle(3), str(root), DeployOptions(retry=ONCE))
    assert result.status == "ok" and os.readlink(root / "demo" / "current").startswith(
        "releases/3-"
    )
