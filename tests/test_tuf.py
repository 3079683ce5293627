"""Publishing through a TUF repository served by a real nginx, and device agents pulling from it.

Every test gets its own repository, its own nginx on 127.0.0.1 (tools/tuf_server.py; a Python
http.server only when nginx is not installed, announced in the test output) and its own devices
(state and install directories). Attacks are played as an attacker would: by changing what the
server serves — replayed, frozen, swapped, endless or forged files — and each must be refused
with its typed error while the previous release stays current.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.device.audit_log import read_log, verify_log
from edge_sdk.device.watch import ModelWatcher
from edge_sdk.errors import (
    DecryptionError,
    ExpiredError,
    IntegrityError,
    KeyFileError,
    RollbackError,
    SignatureError,
    StateError,
    TargetMismatchError,
    TransportError,
    UsageError,
    VerificationError,
)
from edge_sdk.fleet import tuf_repo
from edge_sdk.fleet.agent import Agent, PollResult, run_agent, translate_tuf_error
from edge_sdk.fleet.transports import RetryPolicy
from edge_sdk.format.bundle import save_bundle
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, TrustStore, generate_key, load_private_key
from tools.bench_tuf import run_fleet
from tools.tuf_server import RepoServer

from .bundle_parts import split_bundle
from .conftest import REPO
from .tflite_builder import Buffer, Op, OpCode, Spec, Tensor, build

QUICK = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)
MODEL = (REPO / "tests" / "vectors" / "model.tflite").read_bytes()
ONES = np.ones((1, 4), np.float32)


def add_model(constant: float) -> bytes:
    """A real one-op LiteRT model: y = x + constant (so each release answers differently)."""
    const = np.full((1, 4), constant, np.float32).tobytes()
    return build(
        Spec(
            opcodes=[OpCode(0)],  # ADD
            tensors=[Tensor("x", (1, 4)), Tensor("c", (1, 4), buffer=1), Tensor("y", (1, 4))],
            ops=[Op(0, (0, 1), (2,))],
            inputs=(0,),
            outputs=(2,),
            buffers=[Buffer(), Buffer(const)],
        )
    )


# -- the lab: a repository, an nginx serving it, devices ----------------------------------------


@dataclass
class Lab:
    tmp: Path
    server: RepoServer
    repo: Path
    url: str
    publisher: PrivateKey
    device: PrivateKey
    made: dict[tuple[str, int], Path] = field(default_factory=dict)

    @property
    def trust(self) -> TrustStore:
        return TrustStore.from_keys([self.publisher.public])

    @property
    def metadata(self) -> Path:
        return self.repo / "metadata"

    def bundle(
        self,
        version: int,
        *,
        name: str = "digits",
        model: bytes = MODEL,
        signer: PrivateKey | None = None,
        recipient: PrivateKey | None = None,
        hardware_ids: tuple[str, ...] = (),
    ) -> Path:
        sealed = seal_bundle(
            model,
            name=name,
            version=version,
            target=Target("x86_64", hardware_ids=hardware_ids),
            signers=[signer or self.publisher],
            recipients=[(recipient or self.device).public],
        )
        path = self.tmp / "bundles" / f"{name}-{version}-{len(self.made)}.edgepkg"
        path.parent.mkdir(exist_ok=True)
        save_bundle(sealed, path)
        self.made[(name, version)] = path
        return path

    def publish(self, *versions: int, group: str | None = None, **kw: Any) -> None:
        tuf_repo.publish([self.bundle(v, **kw) for v in versions], self.repo, group)

    def agent(self, device: str = "dev0", **kw: Any) -> Agent:
        kw.setdefault("retry", QUICK)
        kw.setdefault("hardware_ids", ("x86_64",))
        return Agent(
            self.url, self.metadata / "1.root.json", self.tmp / device / "state",
            self.tmp / device / "install", self.trust, **kw,
        )  # fmt: skip

    def current(self, device: str = "dev0", name: str = "digits") -> str | None:
        link = self.tmp / device / "install" / name / "current"
        return os.readlink(link) if link.is_symlink() else None

    def releases(self, device: str = "dev0", name: str = "digits") -> list[str]:
        return sorted(os.listdir(self.tmp / device / "install" / name / "releases"))

    def events(self, device: str = "dev0") -> list[dict[str, Any]]:
        log = self.tmp / device / "state" / "audit.log"
        assert verify_log(log).ok
        return list(read_log([log]).records)

    def version_of(self, role: str) -> int:
        return tuf_repo.status(self.repo).role(role).version

    def target_file(self, version: int, name: str = "digits") -> Path:
        (match,) = (self.repo / "targets" / name).glob(f"*.{version}-*.edgepkg")
        return match


def release(version: int) -> str:
    return f"releases/{version}-"


def _announce(request: pytest.FixtureRequest, text: str) -> None:
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(text, yellow=True)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RepoServer]:
    # EDGE_SDK_TUF_SERVER=python runs the suite against the fallback server on purpose.
    srv = RepoServer.start(
        tmp_path / "server", prefer_nginx=os.environ.get("EDGE_SDK_TUF_SERVER") != "python"
    )
    if srv.kind != "nginx":
        _announce(request, f"nginx not found: serving with the fallback {srv.kind}")
    try:
        yield srv
    finally:
        srv.stop()


def make_lab(tmp_path: Path, server: RepoServer, **init: Any) -> Lab:
    repo = tmp_path / "repo"
    tuf_repo.init_repo(repo, **init)
    url = server.add("fleet", repo)
    return Lab(tmp_path, server, repo, url, generate_key("signing"), generate_key("device"))


@pytest.fixture
def lab(tmp_path: Path, server: RepoServer) -> Lab:
    return make_lab(tmp_path, server)


def forge(
    lab: Lab,
    targets_keys: list[Path],
    *,
    version: int = 99,
    data: bytes | None = None,
) -> None:
    """An attacker who holds the online snapshot and timestamp keys (a compromised server) and
    ``targets_keys`` adds a release signed by those targets keys, with consistent snapshot and
    timestamp metadata around it."""
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata, TargetFile

    def signer(path: Path) -> CryptoSigner:
        return CryptoSigner(load_private_key(path).components[0])

    data = data if data is not None else lab.bundle(version).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256(split_bundle(data).manifest).hexdigest()
    published = tuf_repo.PublishedTarget(
        f"digits/{version}-evil.edgepkg", "digits", version, digest, len(data), sha, "x86_64", (), (),
    )  # fmt: skip
    (lab.repo / "targets" / "digits" / f"{sha}.{version}-evil.edgepkg").write_bytes(data)
    meta = lab.metadata
    tv = max(int(p.name.split(".")[0]) for p in meta.glob("*.targets.json"))
    targets = Metadata.from_file(str(meta / f"{tv}.targets.json"))
    targets.signed.targets[published.path] = TargetFile(
        len(data), {"sha256": sha}, published.path, {"custom": published.to_custom()}
    )
    targets.signed.version = tv + 1
    targets.signatures.clear()
    for key in targets_keys:
        targets.sign(signer(key), append=True)
    (meta / f"{tv + 1}.targets.json").write_bytes(targets.to_bytes())
    sv = max(int(p.name.split(".")[0]) for p in meta.glob("*.snapshot.json"))
    snapshot = Metadata.from_file(str(meta / f"{sv}.snapshot.json"))
    snapshot.signed.meta["targets.json"].version = tv + 1
    snapshot.signed.version = sv + 1
    snapshot.sign(signer(next((lab.repo / "keys").glob("snapshot-*.key"))))
    (meta / f"{sv + 1}.snapshot.json").write_bytes(snapshot.to_bytes())
    timestamp = Metadata.from_file(str(meta / "timestamp.json"))
    timestamp.signed.snapshot_meta.version = sv + 1
    timestamp.signed.version += 1
    timestamp.sign(signer(next((lab.repo / "keys").glob("timestamp-*.key"))))
    (meta / "timestamp.json").write_bytes(timestamp.to_bytes())


# -- publish, install, upgrade ------------------------------------------------------------------


def test_publish_install_upgrade_through_nginx(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent()
    first = agent.poll()
    assert [(o.name, o.status, o.version) for o in first.outcomes] == [("digits", "installed", 1)]
    assert lab.current().startswith(release(1))

    mark = lab.server.mark()
    idle = agent.poll()
    assert [o.status for o in idle.outcomes] == ["up-to-date"]
    # A poll that finds nothing new costs two small requests: the next root (404) and timestamp.
    time.sleep(0.05)
    served = lab.server.requests(mark)
    assert [(r.status, r.uri.rsplit("/", 1)[-1]) for r in served] == [
        (404, "2.root.json"), (200, "timestamp.json"),
    ]  # fmt: skip
    assert idle.requests == 2

    lab.publish(2)
    upgraded = agent.poll()
    assert [(o.status, o.version) for o in upgraded.outcomes] == [("installed", 2)]
    assert upgraded.outcomes[0].previous is not None
    assert upgraded.outcomes[0].previous.startswith("1-")
    assert lab.current().startswith(release(2))
    events = [e["event"] for e in lab.events()]
    assert events.count("agent-install") == 2 and events.count("agent-download") == 2
    assert events.count("agent-check") == 3
    # Nothing left behind: the download was handed to deploy and removed.
    assert not any((lab.tmp / "dev0" / "state" / "downloads").iterdir())


def test_run_agent_once_and_interval(lab: Lab) -> None:
    lab.publish(1)
    result = run_agent(
        lab.url, lab.metadata / "root.json", lab.tmp / "d" / "state", lab.tmp / "d" / "install",
        lab.trust, hardware_ids=("x86_64",), retry=QUICK,
    )  # fmt: skip
    assert [o.status for o in result.outcomes] == ["installed"]
    seen: list[PollResult] = []
    stop = threading.Event()

    def record(poll: PollResult) -> None:
        seen.append(poll)
        if len(seen) == 1:
            lab.publish(2)  # published between two polls of a running agent
        if len(seen) == 2:
            stop.set()

    last = run_agent(
        lab.url, lab.metadata / "root.json", lab.tmp / "d" / "state", lab.tmp / "d" / "install",
        lab.trust, hardware_ids=("x86_64",), retry=QUICK, interval=0.05, stop=stop, on_poll=record,
    )  # fmt: skip
    assert [o.status for o in seen[0].outcomes] == ["up-to-date"]
    assert [(o.status, o.version) for o in last.outcomes] == [("installed", 2)]


def test_groups_hardware_ids_and_promotion(lab: Lab) -> None:
    lab.publish(1)
    lab.publish(2, group="canary")
    lab.publish(1, name="vision", hardware_ids=("rpi5",))
    everyone, canary = lab.agent("dev0"), lab.agent("dev1", group="canary")
    polled = everyone.poll().outcomes
    assert [(o.name, o.version) for o in polled if o.status != "skipped"] == [("digits", 1)]
    # What the repository offers to other boards is said, so an empty poll explains itself.
    (vision,) = [o for o in polled if o.status == "skipped"]
    assert vision.name == "vision" and "built for hardware rpi5; this device is x86_64" in (
        vision.reason or ""
    )
    assert [(o.name, o.version) for o in canary.poll().outcomes if o.status != "skipped"] == [
        ("digits", 2)
    ]
    rpi = lab.agent("dev2", hardware_ids=("rpi5", "aarch64"))
    assert {(o.name, o.version) for o in rpi.poll().outcomes} == {("digits", 1), ("vision", 1)}
    # Promote the canary release to everyone: publishing the same bundle without a group.
    tuf_repo.publish([lab.made[("digits", 2)]], lab.repo)
    assert next((o.status, o.version) for o in everyone.poll().outcomes) == ("installed", 2)
    assert next(o.status for o in canary.poll().outcomes) == "up-to-date"
    listed = {t.version: t.groups for t in tuf_repo.status(lab.repo).targets if t.name == "digits"}
    assert listed == {1: (), 2: ()}


def test_publish_refuses_a_second_bundle_with_the_same_version(lab: Lab) -> None:
    lab.publish(1)
    with pytest.raises(UsageError, match="already published"):
        lab.publish(1)
    with pytest.raises(UsageError, match="group"):
        tuf_repo.publish([lab.made[("digits", 1)]], lab.repo, "no spaces")
    other = TrustStore.from_keys([generate_key("signing").public])
    stranger_signed = lab.bundle(2)
    with pytest.raises(SignatureError):  # publishing can check the publisher's signature too
        tuf_repo.publish([stranger_signed], lab.repo, trust=other)


def test_publish_keep_limits_the_targets_metadata(lab: Lab) -> None:
    for version in (1, 2, 3):
        tuf_repo.publish([lab.bundle(version)], lab.repo, keep=2)
    assert [t.version for t in tuf_repo.status(lab.repo).targets] == [2, 3]
    assert len(list((lab.repo / "targets" / "digits").iterdir())) == 3  # files stay for laggards


# -- attacks: each refused with its typed error, the previous release still current --------------


def test_replayed_timestamp_is_a_rollback(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent()
    agent.poll()
    old = (lab.metadata / "timestamp.json").read_bytes()
    lab.publish(2)
    agent.poll()
    (lab.metadata / "timestamp.json").write_bytes(old)
    with pytest.raises(RollbackError, match="timestamp version"):
        agent.poll()
    assert lab.current().startswith(release(2))
    failed = [e for e in lab.events() if e["event"] == "agent-check" and e["result"] == "failed"]
    assert failed and failed[-1]["error"] == "rollback"


def test_replayed_snapshot_is_a_rollback(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent()
    agent.poll()
    lab.publish(2)
    newest = lab.version_of("snapshot")
    shutil.copy(
        lab.metadata / f"{newest - 1}.snapshot.json", lab.metadata / f"{newest}.snapshot.json"
    )
    with pytest.raises(RollbackError, match="snapshot version"):
        agent.poll()
    assert lab.current().startswith(release(1))


def test_frozen_metadata_expires(tmp_path: Path, server: RepoServer) -> None:
    lab = make_lab(tmp_path, server, expiry={"timestamp": timedelta(seconds=4)})
    lab.publish(1)
    agent = lab.agent()
    agent.poll()
    # The attacker freezes the view: keeps serving this metadata while the real repository moves on.
    frozen = tmp_path / "frozen"
    shutil.copytree(lab.metadata, frozen / "metadata")
    (frozen / "targets").symlink_to(lab.repo / "targets")
    lab.publish(2)
    server.add("fleet", frozen)
    assert [o.status for o in agent.poll().outcomes] == ["up-to-date"]  # undetectable until…
    expires = json.loads((frozen / "metadata" / "timestamp.json").read_text())["signed"]["expires"]
    moment = datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    time.sleep(max(0.0, (moment - datetime.now(timezone.utc)).total_seconds()) + 0.2)
    with pytest.raises(ExpiredError, match="timestamp.json is expired"):
        agent.poll()
    assert lab.current().startswith(release(1))


@pytest.mark.parametrize("swap", ["same-size", "truncated", "endless"])
def test_swapped_target_bytes_are_refused(lab: Lab, swap: str) -> None:
    lab.publish(1)
    agent = lab.agent()
    agent.poll()
    lab.publish(2)
    served = lab.target_file(2)
    data = served.read_bytes()
    forged = {
        "same-size": data[:-1] + bytes([data[-1] ^ 1]),
        "truncated": data[: len(data) // 2],
        "endless": data + os.urandom(4 * 1024 * 1024),
    }[swap]
    served.write_bytes(forged)
    result = agent.poll()
    (outcome,) = result.outcomes
    assert outcome.status == "rejected"
    assert isinstance(outcome.error, IntegrityError)
    assert "digits/2-" in outcome.error.message
    # ngclient stops reading one 64 KiB read past the signed length, not at the server's 4 MiB.
    assert result.bytes < len(data) + 128 * 1024 + 10_000
    assert lab.current().startswith(release(1))
    assert lab.releases() == [lab.current().removeprefix("releases/")]  # no partial release
    with pytest.raises(IntegrityError):
        result.raise_for_errors()
    # TUF rejections are not remembered as bad releases: a repaired server is trusted again.
    served.write_bytes(data)
    assert [o.status for o in agent.poll().outcomes] == ["installed"]


@pytest.mark.parametrize("role", ["timestamp", "snapshot"])
def test_endless_metadata_is_cut_at_the_configured_limit(lab: Lab, role: str) -> None:
    from tuf.ngclient import UpdaterConfig

    lab.publish(1)
    config = UpdaterConfig(timestamp_max_length=4096, snapshot_max_length=16384)
    agent = lab.agent(config=config)
    agent.poll()
    lab.publish(2)
    name = (
        "timestamp.json" if role == "timestamp" else f"{lab.version_of('snapshot')}.snapshot.json"
    )
    with open(lab.metadata / name, "ab") as out:
        out.write(b" " * (8 * 1024 * 1024))
    with pytest.raises(IntegrityError, match="more than allowed"):
        agent.poll()
    assert lab.current().startswith(release(1))
    assert agent.traffic.bytes < 64 * 1024 * 8  # never the 8 MiB


def test_release_signed_by_a_rotated_targets_key_is_refused(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent()
    agent.poll()
    change = tuf_repo.rotate_key(lab.repo, "targets")
    lab.publish(2)
    assert [o.version for o in agent.poll().outcomes] == [2]  # the rotation reached the device
    retired = lab.repo / "keys" / "retired" / f"targets-{change.removed[0][:16]}.key"
    assert retired.exists() and stat.S_IMODE(retired.stat().st_mode) == 0o600
    forge(lab, [retired])
    with pytest.raises(SignatureError, match="targets"):
        agent.poll()
    assert lab.current().startswith(release(2))


def test_targets_threshold_raised_one_signature_is_not_enough(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent()
    agent.poll()
    change = tuf_repo.set_threshold(lab.repo, "targets", 2)
    assert change.threshold == 2 and len(change.added) == 1
    lab.publish(2)
    assert [o.version for o in agent.poll().outcomes] == [2]
    both_keys = sorted((lab.repo / "keys").glob("targets-*.key"))
    forge(lab, both_keys[:1])
    with pytest.raises(SignatureError, match="targets"):
        agent.poll()
    assert lab.current().startswith(release(2))
    # Control: the same forgery with both keys is accepted, so one missing signature was the reason.
    forge(lab, both_keys, version=100)
    assert [(o.status, o.version) for o in agent.poll().outcomes] == [("installed", 100)]


def test_bundle_that_passes_tuf_but_not_the_device_trust_store(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent()
    agent.poll()
    lab.publish(2, signer=generate_key("signing"))  # published properly, signed by a stranger
    result = agent.poll()
    (outcome,) = result.outcomes
    assert outcome.status == "rejected" and isinstance(outcome.error, SignatureError)
    assert lab.current().startswith(release(1))
    rejects = [e for e in lab.events() if e["event"] == "agent-reject"]
    assert rejects[-1]["version"] == 2 and rejects[-1]["error"] == "signature"
    # Remembered: the next polls do not download it again.
    again = agent.poll()
    assert [o.status for o in again.outcomes] == ["skipped"] and again.requests == 2
    lab.publish(3)
    assert [(o.status, o.version) for o in agent.poll().outcomes] == [("installed", 3)]


def test_key_rotations_and_root_threshold_reach_agents(lab: Lab) -> None:
    lab.publish(1)
    agents = [lab.agent(f"dev{i}") for i in range(3)]
    for agent in agents:
        agent.poll()
    tuf_repo.rotate_key(lab.repo, "root")
    tuf_repo.set_threshold(lab.repo, "root", 2)
    tuf_repo.rotate_key(lab.repo, "timestamp")
    tuf_repo.rotate_key(lab.repo, "snapshot")
    status = tuf_repo.status(lab.repo)
    assert status.role("root").version == 5 and status.role("root").threshold == 2
    lab.publish(2)
    for i, agent in enumerate(agents):
        assert [o.version for o in agent.poll().outcomes] == [2]
        history = sorted(os.listdir(lab.tmp / f"dev{i}" / "state" / "tuf" / "root_history"))
        assert history == [f"{v}.root.json" for v in range(1, 6)]
    # A root signed by only one of the two root keys now required is refused on the host already.
    keys = sorted((lab.repo / "root-keys").glob("root-*.key"))
    keys[0].rename(keys[0].with_suffix(".offline"))
    with pytest.raises(SignatureError, match="root v6"):
        tuf_repo.rotate_key(lab.repo, "targets")
    assert tuf_repo.status(lab.repo).role("root").version == 5


def test_server_down_is_a_transport_error_and_nothing_changes(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent()
    agent.poll()
    lab.publish(2)
    lab.server.stop()
    started = time.monotonic()
    with pytest.raises(TransportError, match="Connection refused") as caught:
        agent.poll()
    assert time.monotonic() - started < 10
    assert "timestamp.json" in caught.value.message or "root.json" in caught.value.message
    assert lab.current().startswith(release(1))
    assert lab.events()[-1]["event"] == "agent-check" and lab.events()[-1]["error"] == "transport"
    lab.server.restart()
    assert [(o.status, o.version) for o in agent.poll().outcomes] == [("installed", 2)]


def test_failed_health_check_rolls_back_and_is_not_retried(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent(health_check="test {version} -ne 2")
    agent.poll()
    lab.publish(2)
    (outcome,) = agent.poll().outcomes
    assert outcome.status == "rolled-back" and "health check failed" in (outcome.reason or "")
    assert lab.current().startswith(release(1))
    assert [e["event"] for e in lab.events()].count("agent-rollback") == 1
    assert [o.status for o in agent.poll().outcomes] == ["skipped"]
    lab.publish(3)
    assert [(o.status, o.version) for o in agent.poll().outcomes] == [("installed", 3)]


def test_second_agent_on_the_same_state_dir_is_refused(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent()
    with agent._single_instance(), pytest.raises(StateError, match="another agent"):
        lab.agent().poll()


def test_tuf_errors_map_onto_the_edge_sdk_tree() -> None:
    from tuf.api import exceptions as tx

    cases = {
        tx.ExpiredMetadataError("timestamp.json is expired"): ExpiredError,
        tx.BadVersionNumberError("New timestamp version 1 must be >= 2"): RollbackError,
        tx.EqualVersionNumberError(): RollbackError,
        tx.UnsignedMetadataError("targets was signed by 0/1 keys"): SignatureError,
        tx.LengthOrHashMismatchError("hash mismatch"): IntegrityError,
        tx.DownloadLengthMismatchError("Downloaded 9 bytes exceeding 8"): IntegrityError,
        tx.DownloadHTTPError("HTTP error", 503): TransportError,
        tx.SlowRetrievalError(): TransportError,
        tx.DownloadError("Failed to download"): TransportError,
        tx.RepositoryError("Role x was delegated but is not part of snapshot"): VerificationError,
    }
    for exc, kind in cases.items():
        error = translate_tuf_error(exc, "refreshing metadata", "http://h/metadata/t.json")
        assert type(error) is kind, (exc, error)
        assert error.message.startswith("refreshing metadata: ")
        assert "http://h/metadata/t.json" in error.message or kind is RollbackError


# -- the repository itself ----------------------------------------------------------------------


def test_repository_layout_keys_status_and_refresh(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    offline = tmp_path / "usb" / "root-keys"
    status = tuf_repo.init_repo(
        repo, root_keys=offline, keys={"root": 2}, thresholds={"root": 2},
        root_passphrase=b"correct horse",
    )  # fmt: skip
    assert [r.name for r in status.roles] == ["root", "targets", "snapshot", "timestamp"]
    assert status.role("root").threshold == 2 and status.role("root").keys_available == 2
    assert status.consistent_snapshot and not status.warnings
    for directory in (repo / "keys", offline):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        for key in directory.glob("*.key"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert all(b"ENCRYPTED" in k.read_bytes() for k in offline.glob("*.key"))
    assert not list((repo / "keys").glob("root-*"))  # root keys only where they were asked to go
    assert sorted(p.name for p in (repo / "metadata").iterdir()) == [
        "1.root.json", "1.snapshot.json", "1.targets.json", "root.json", "timestamp.json",
    ]  # fmt: skip
    with pytest.raises(UsageError, match="already holds"):
        tuf_repo.init_repo(repo)

    # Cron: nothing is due right after init; a margin longer than the timestamp's life re-signs
    # just the timestamp; force re-signs every online role in dependency order.
    assert tuf_repo.refresh(repo).resigned == {}
    assert tuf_repo.refresh(repo, margin={"timestamp": timedelta(days=2)}).resigned == {
        "timestamp": 2
    }
    assert tuf_repo.refresh(repo, force=True).resigned == {
        "targets": 2,
        "snapshot": 2,
        "timestamp": 3,
    }
    # Root operations need the offline keys (and their passphrase).
    with pytest.raises(KeyFileError, match="no root key"):
        tuf_repo.rotate_key(repo, "targets", root_keys=tmp_path / "nowhere")
    change = tuf_repo.rotate_key(
        repo, "targets", root_keys=offline, root_passphrase=b"correct horse"
    )
    assert change.versions["root"] == 2 and change.versions["targets"] == 3
    with pytest.raises(UsageError, match="name the one"):
        tuf_repo.rotate_key(repo, "root", root_keys=offline, root_passphrase=b"correct horse")
    status = tuf_repo.status(repo, root_keys=offline)
    as_json = status.to_dict()
    assert as_json["roles"][1]["version"] == 3 and as_json["targets"] == []
    text = json.dumps(as_json)
    assert "PRIVATE" not in text and "correct horse" not in text


def test_expiring_roles_are_reported(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    tuf_repo.init_repo(repo, expiry={"snapshot": timedelta(seconds=1), "root": timedelta(days=10)})
    time.sleep(1.1)
    warnings = " ".join(tuf_repo.status(repo).warnings)
    assert "snapshot" in warnings and "expired" in warnings and "root expires" in warnings
    result = tuf_repo.refresh(repo)
    assert set(result.resigned) == {"snapshot", "timestamp"} and result.warnings


# -- a running application follows the releases -------------------------------------------------


def test_watcher_swaps_models_between_predictions(lab: Lab) -> None:
    lab.publish(1, name="add", model=add_model(1.0))
    agent = lab.agent()
    agent.poll()
    state = lab.tmp / "app-state"
    load = {"trust": lab.trust, "device_key": lab.device, "state_dir": state}
    link = lab.tmp / "dev0" / "install" / "add" / "current"
    with ModelWatcher(link, load) as watcher:
        assert float(watcher.predict(ONES)[0, 0]) == 2.0
        first = watcher.model
        lab.publish(2, name="add", model=add_model(2.0))
        agent.poll()
        assert float(watcher.predict(ONES)[0, 0]) == 3.0
        assert watcher.swaps == 1 and watcher.model.manifest is not None
        assert watcher.model.manifest.version == 2
        assert first._interpreter is None  # the old model was closed after the swap
        # A release this device cannot open (encrypted for another device) keeps the old model.
        lab.publish(3, name="add", model=add_model(3.0), recipient=generate_key("device"))
        agent.poll()
        assert lab.current(name="add").startswith(release(3))
        assert float(watcher.predict(ONES)[0, 0]) == 3.0
        assert isinstance(watcher.last_error, DecryptionError) and watcher.swaps == 1
        assert watcher.release.startswith(release(2))
    records = read_log([state / "audit.log"]).records
    assert [r["event"] for r in records] == ["load", "load", "reject"]


def test_background_watcher_never_interrupts_concurrent_predictions(lab: Lab) -> None:
    lab.publish(1, name="add", model=add_model(1.0))
    agent = lab.agent()
    agent.poll()
    load = {"trust": lab.trust, "device_key": lab.device, "state_dir": lab.tmp / "app"}
    link = lab.tmp / "dev0" / "install" / "add" / "current"
    swapped = threading.Event()
    outputs: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()
    with ModelWatcher(link, load, poll_interval=0.02, on_swap=lambda _m: swapped.set()) as watcher:

        def serve() -> None:
            try:
                while not done.is_set():
                    outputs.append(float(watcher.predict(ONES)[0, 0]))
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        workers = [threading.Thread(target=serve) for _ in range(4)]
        for worker in workers:
            worker.start()
        lab.publish(2, name="add", model=add_model(2.0))
        agent.poll()
        assert swapped.wait(10)
        time.sleep(0.05)
        done.set()
        for worker in workers:
            worker.join()
    assert not errors
    assert set(outputs) == {2.0, 3.0} and outputs[-1] == 3.0


# -- many devices --------------------------------------------------------------------------------


def test_many_concurrent_agents_converge(tmp_path: Path, server: RepoServer) -> None:
    figures = run_fleet(server, tmp_path / "fleet", agents=24, workers=12)
    assert figures["idle"].requests_per_agent == (2, 2)
    assert figures["update"].requests_per_agent == (5, 5)
    assert figures["update"].converged == 24 and figures["idle"].failures == 0


def test_importing_edge_sdk_does_not_import_tuf() -> None:
    code = (
        "import edge_sdk, edge_sdk.fleet.agent, edge_sdk.fleet.tuf_repo, edge_sdk.device.watch, sys; "
        "assert not any(m.split('.')[0] in ('tuf', 'securesystemslib') for m in sys.modules), 'tuf'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# -- availability: a hostile target must not stop the next genuine release -----------------------


def test_a_hostile_target_cannot_brick_the_agent(lab: Lab) -> None:
    """The review's TUF variant: a target published with only the repository's online keys,
    whose (unsigned) manifest holds a huge malformed value. Before the fix its rejection became
    an audit record the log could not read back, and the agent never installed the fix."""
    import json as _json

    lab.publish(1)
    agent = lab.agent()
    assert [o.status for o in agent.poll().outcomes] == ["installed"]
    parts = split_bundle(lab.bundle(5).read_bytes())
    manifest = _json.loads(parts.manifest)
    manifest["name"] = "\x1b[2J" + "x" * 200_000
    parts.manifest = _json.dumps(manifest, separators=(",", ":")).encode()
    targets_key = next((lab.repo / "keys").glob("targets-*.key"))
    forge(lab, [targets_key], version=5, data=parts.join())
    hostile = agent.poll()
    assert [o.status for o in hostile.outcomes] == ["rejected"]
    assert len(hostile.outcomes[0].reason or "") <= 1100
    # The publisher's fix arrives through the same repository and is installed.
    lab.publish(6)
    fixed = agent.poll()
    assert [(o.status, o.version) for o in fixed.outcomes] == [("installed", 6)]
    assert lab.current().startswith(release(6))
    events = lab.events()  # verifies the chain
    assert [e["event"] for e in events].count("agent-reject") == 1
    assert max(len(_json.dumps(e)) for e in events) < 16 * 1024
    # And the device loads it.
    link = lab.tmp / "dev0" / "install" / "digits" / "current"
    model = edge_sdk.load(
        link, trust=lab.trust, device_key=lab.device, state_dir=lab.tmp / "dev0" / "state"
    )
    assert model.manifest.version == 6
    model.close()


def test_watcher_follows_current_when_it_moves_during_start_up(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process sharing the state dir accepts v2 while this watcher opens the v1 that
    ``current`` named a moment earlier: the watcher must serve v2, not crash with RollbackError."""
    import edge_sdk.device.runtime as runtime

    lab.publish(1, name="add", model=add_model(1.0))
    agent = lab.agent()
    agent.poll()
    state = lab.tmp / "shared-state"
    link = lab.tmp / "dev0" / "install" / "add" / "current"
    real_load = runtime.load
    moved = threading.Event()

    def racing_load(source: Any, **kw: Any) -> Any:
        if not moved.is_set():  # the other process wins the race during our first load
            moved.set()
            lab.publish(2, name="add", model=add_model(2.0))
            agent.poll()
            real_load(link, **kw).close()  # ... and accepts v2 in the shared state dir
        return real_load(source, **kw)

    monkeypatch.setattr(runtime, "load", racing_load)
    load = {"trust": lab.trust, "device_key": lab.device, "state_dir": state}
    with ModelWatcher(link, load) as watcher:
        assert float(watcher.predict(ONES)[0, 0]) == 3.0
        assert watcher.release.startswith(release(2))


def test_watcher_and_load_refuse_another_name_in_the_layout(lab: Lab) -> None:
    """Anyone who can swap ``current`` must not substitute a release signed under another name
    (it would bypass that name's anti-rollback counter)."""
    lab.publish(1, name="add", model=add_model(1.0))
    lab.agent().poll()
    other = lab.bundle(9, name="add-beta", model=add_model(5.0))
    folder = lab.tmp / "dev0" / "install" / "add"
    planted = folder / "releases" / "9-0123456789abcdef.edgepkg"
    planted.write_bytes(other.read_bytes())
    (folder / "current").unlink()
    (folder / "current").symlink_to("releases/9-0123456789abcdef.edgepkg")
    load = {"trust": lab.trust, "device_key": lab.device, "state_dir": lab.tmp / "s"}
    with pytest.raises(
        TargetMismatchError, match="add-beta v9 was loaded where 'add' was expected"
    ):
        edge_sdk.load(folder / "current", **load)
    with pytest.raises(TargetMismatchError, match="where 'add' was expected"):
        ModelWatcher(folder / "current", load)
    # Outside the layout the caller says what it expects.
    with pytest.raises(TargetMismatchError):
        edge_sdk.load(other, expected_name="add", **load)
    edge_sdk.load(other, **load).close()


def test_agent_with_device_key_and_profile_checks_before_switching(lab: Lab) -> None:
    lab.publish(1)
    agent = lab.agent(device_key=lab.device, profile="x86_64")
    assert [o.status for o in agent.poll().outcomes] == ["installed"]
    # Encrypted for another device: refused before current moves.
    lab.publish(2, recipient=generate_key("device"))
    result = agent.poll()
    assert [o.status for o in result.outcomes] == ["rejected"]
    assert "not a recipient" in (result.outcomes[0].reason or "") or "recipient" in (
        result.outcomes[0].reason or ""
    )
    assert lab.current().startswith(release(1))
