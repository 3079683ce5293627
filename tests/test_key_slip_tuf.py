"""Key slips through the TUF repository: one release for a fleet, each device's slip in a hashed
bin (TAP 15), real agents pulling from a real nginx (tools/tuf_server.py), real LiteRT running the
installed release. What each agent downloaded is read from nginx's access log: the top-level
metadata, exactly one bin, its own slip and the payload — never another device's slip."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import DecryptionError, KeySlipError, KeySlipMismatchError, SignatureError
from edge_sdk.fleet import tuf_repo
from edge_sdk.fleet.agent import Agent
from edge_sdk.fleet.key_slips import content_key_of, issue_key_slips
from edge_sdk.format.bundle import read_bundle, save_bundle
from edge_sdk.format.key_slip import make_key_slip
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, generate_key, save_keypair
from tools.tuf_server import RepoServer

from .conftest import CliResult
from .test_tuf import MODEL, QUICK, Lab, make_lab, server  # noqa: F401  (the nginx fixture)

X = np.ones((1, 4), np.float32)


class Fleet:
    """A lab whose releases are sealed once, for an escrow key, with a slip per device."""

    def __init__(self, lab: Lab, size: int) -> None:
        self.lab = lab
        self.escrow = generate_key("device")
        self.devices = [generate_key("device") for _ in range(size)]

    def seal(self, version: int) -> Path:
        path = self.lab.tmp / "bundles" / f"digits-{version}.edgepkg"
        path.parent.mkdir(exist_ok=True)
        sealed = seal_bundle(MODEL, name="digits", version=version, target=Target("x86_64"),
                             signers=[self.lab.publisher], recipients=[self.escrow.public])  # fmt: skip
        save_bundle(sealed, path)
        return path

    def slips(self, bundle: Path, devices: list[PrivateKey]) -> dict[str, bytes]:
        sealed = read_bundle(bundle)
        key = content_key_of(sealed, self.escrow)
        return {d.key_id: raw for d, raw in
                issue_key_slips(sealed, key, [d.public for d in devices], [self.lab.publisher])}  # fmt: skip

    def release(self, version: int, revoked: tuple[int, ...] = ()) -> tuple[Path, dict[str, bytes]]:
        bundle = self.seal(version)
        slips = self.slips(bundle, [d for i, d in enumerate(self.devices) if i not in revoked])
        tuf_repo.publish([bundle], self.lab.repo, slips=slips)
        return bundle, slips

    def agent(self, index: int) -> Agent:
        return self.lab.agent(f"dev{index}", device_key=self.devices[index])

    def run(self, index: int) -> np.ndarray:
        """Load what the agent installed, as the board would: the slip beside ``current``."""
        device = self.lab.tmp / f"dev{index}"
        key_path, _ = save_keypair(self.devices[index], device / "key", overwrite=True)
        with edge_sdk.load(device / "install" / "digits" / "current", trust=self.lab.trust,
                           device_key=key_path, state_dir=device / "load-state",
                           allow_target_mismatch=True) as model:  # fmt: skip
            return np.asarray(model.predict(X))


def downloads(srv: RepoServer, since: int) -> list[tuple[str, int]]:
    """(file name under the repository, body bytes) of every 200 response since ``since``."""
    return [(r.uri.split("/fleet/", 1)[1], r.body_bytes) for r in srv.requests(since)
            if r.status == 200]  # fmt: skip


def plant(lab: Lab, key_id: str, version: int, data: bytes, *, bins_key: Any = None) -> None:
    """An attacker holding the online keys (bins, targets, snapshot, timestamp — a compromised
    repository server) lists ``data`` as this device's slip, with consistent metadata around it."""
    from tuf.api.metadata import Metadata, TargetFile  # type: ignore[attr-defined]

    layout = tuf_repo._Layout(lab.repo, None)
    repository = tuf_repo._open(layout, tuf_repo.ONLINE_ROLES)
    path = tuf_repo.slip_target_path("digits", version, key_id)
    sha = hashlib.sha256(data).hexdigest()
    stored = lab.repo / "targets" / path.rsplit("/", 1)[0] / f"{sha}.{path.rsplit('/', 1)[1]}"
    stored.write_bytes(data)
    with repository.edit_targets() as targets:
        entries = tuf_repo._read_bins(layout, targets)
        entries[path] = TargetFile(len(data), {"sha256": sha}, path)
        signer = tuf_repo._bins_signer(layout, targets)
        tuf_repo._write_bins(layout, targets, entries, signer, tuf_repo._now() + timedelta(days=1))
        if bins_key is not None:  # the bins re-signed by a key targets does not delegate to
            for bin_file in lab.metadata.glob(f"{targets.version + 1}.bin-*.json"):
                md = Metadata.from_bytes(bin_file.read_bytes())
                md.sign(bins_key)
                bin_file.write_bytes(md.to_bytes())
            targets.delegations = Metadata.from_bytes(
                (lab.metadata / f"{targets.version}.targets.json").read_bytes()
            ).signed.delegations
    repository.do_snapshot()
    repository.do_timestamp()


@pytest.fixture
def lab(tmp_path: Path, server: RepoServer) -> Lab:  # noqa: F811
    return make_lab(tmp_path, server)


def test_each_agent_pulls_only_its_own_slip_and_a_revoked_device_gets_nothing(
    lab: Lab,
    server: RepoServer,  # noqa: F811
) -> None:
    fleet = Fleet(lab, 20)
    bundle, slips = fleet.release(1, revoked=(19,))
    assert len(slips) == 19
    status = tuf_repo.status(lab.repo)
    (published,) = status.targets
    assert published.slips
    bins = sorted(p.name for p in lab.metadata.glob("*.bin-*.json"))
    assert len(bins) == 2 ** tuf_repo.bin_bits(19) == 8

    for index in (0, 7, 13):
        mark = server.mark()
        result = fleet.agent(index).poll()
        assert [o.status for o in result.outcomes] == ["installed"], result.outcomes
        files = downloads(server, mark)
        names = [name for name, _ in files]
        metadata = [n for n in names if n.startswith("metadata/")]
        assert sorted(re.sub(r"^metadata/([0-9]+\.)?", "", n) for n in metadata if ".bin-" not in n) == [
            "snapshot.json", "targets.json", "timestamp.json"]  # fmt: skip
        # Exactly one bin, the one this device's slip path hashes to.
        path = tuf_repo.slip_target_path("digits", 1, fleet.devices[index].key_id)
        (bin_file,) = [n for n in metadata if ".bin-" in n]
        role = bin_file.split(".", 1)[1].removesuffix(".json")
        from tuf.api.metadata import Metadata, Targets  # type: ignore[attr-defined]

        top = Metadata[Targets].from_file(str(lab.metadata / "2.targets.json"))
        delegations = top.signed.delegations
        assert delegations is not None and delegations.succinct_roles is not None
        assert delegations.succinct_roles.get_role_for_target(path) == role
        # Its own slip, and no other device's.
        slip_files = [n for n in names if n.startswith("targets/slips/")]
        assert len(slip_files) == 1 and slip_files[0].endswith(f".{path.rsplit('/', 1)[1]}")
        assert sum(1 for n in names if n.startswith("targets/digits/")) == 1
        meta_bytes = sum(b for n, b in files if n.startswith("metadata/"))
        assert meta_bytes < 8 * 1024  # top-level roles + one bin of ~1 slip
        if server.kind == "nginx":  # JSON is sent gzip-compressed, and inflated by the agent
            assert meta_bytes < sum((lab.repo / n).stat().st_size for n in metadata)
        installed = lab.tmp / f"dev{index}" / "install" / "digits" / "releases"
        (beside,) = installed.glob("*.edgeslip")
        assert beside.read_bytes() == slips[fleet.devices[index].key_id]
        assert fleet.run(index).shape == (1, 3)

    # The revoked device: a typed refusal, and the payload is never fetched.
    mark = server.mark()
    result = fleet.agent(19).poll()
    (outcome,) = result.outcomes
    assert outcome.status == "rejected" and isinstance(outcome.error, KeySlipError)
    assert "no key slip for this device" in (outcome.reason or "")
    assert not any(n.startswith("targets/digits/") for n, _ in downloads(server, mark))
    assert lab.current("dev19") is None
    with pytest.raises(KeySlipError, match="no key slip"):
        result.raise_for_errors()
    # Nothing it could get opens the release: not the bundle, not another device's slip.
    key_path, _ = save_keypair(fleet.devices[19], lab.tmp / "dev19" / "key")
    with pytest.raises(DecryptionError):
        edge_sdk.load(bundle, trust=lab.trust, device_key=key_path,
                      state_dir=lab.tmp / "dev19" / "s", allow_target_mismatch=True)  # fmt: skip
    with pytest.raises(KeySlipMismatchError):
        edge_sdk.load(bundle, trust=lab.trust, device_key=key_path, slip=slips[fleet.devices[0].key_id],
                      state_dir=lab.tmp / "dev19" / "s", allow_target_mismatch=True)  # fmt: skip

    # The next release: the bins hold its slips only, every device moves on, a poll with
    # nothing new fetches no bin and no slip.
    fleet.release(2, revoked=(19,))
    assert fleet.agent(0).poll().outcomes[0].status == "installed"
    mark = server.mark()
    assert fleet.agent(0).poll().outcomes[0].status == "up-to-date"
    assert [n for n, _ in downloads(server, mark)] == ["metadata/timestamp.json"]
    layout = tuf_repo._Layout(lab.repo, None)
    targets = tuf_repo._make_repository(layout, tuf_repo._read_policy(layout)).targets()
    listed = tuf_repo._read_bins(layout, targets)
    assert len(listed) == 19 and all("/2/" in p for p in listed)
    # Slip files: v1's stay while the previous bins name them, and go one release later.
    slip_dirs = lab.repo / "targets" / "slips" / "digits"
    assert sorted(p.name for p in slip_dirs.iterdir()) == ["1", "2"]
    fleet.release(3, revoked=(19,))
    assert sorted(p.name for p in slip_dirs.iterdir()) == ["2", "3"]
    assert fleet.agent(0).poll().outcomes[0].status == "installed"


def test_legacy_in_bundle_recipients_then_slips(lab: Lab) -> None:
    fleet = Fleet(lab, 2)
    device = fleet.devices[0]
    lab.publish(1, recipient=device)  # an old-style release: the device is an in-bundle recipient
    agent = fleet.agent(0)
    assert agent.poll().outcomes[0].status == "installed"
    assert not list((lab.tmp / "dev0" / "install" / "digits" / "releases").glob("*.edgeslip"))
    assert fleet.run(0).shape == (1, 3)
    fleet.release(2)
    assert agent.poll().outcomes[0].status == "installed"
    assert len(list((lab.tmp / "dev0" / "install" / "digits" / "releases").glob("*.edgeslip"))) == 1
    assert fleet.run(0).shape == (1, 3)


HOSTILE: dict[str, Callable[[Fleet, Path], bytes]] = {
    "another-device": lambda fleet, bundle: fleet.slips(bundle, [fleet.devices[1]])[
        fleet.devices[1].key_id
    ],
    "garbage": lambda fleet, bundle: b"EDGESLP\n" + os.urandom(200),
    "foreign-signer": lambda fleet, bundle: make_key_slip(
        read_bundle(bundle),
        content_key_of(read_bundle(bundle), fleet.escrow),
        fleet.devices[0].public,
        [generate_key("signing")],
    ),
}


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("another-device", KeySlipMismatchError),
        ("garbage", KeySlipError),
        ("foreign-signer", SignatureError),
    ],
)
def test_a_hostile_slip_in_a_bin_is_refused_and_the_genuine_one_installs(
    lab: Lab, kind: str, error: type[Exception]
) -> None:
    fleet = Fleet(lab, 3)
    bundle, slips = fleet.release(1)
    mine = fleet.devices[0].key_id
    plant(lab, mine, 1, HOSTILE[kind](fleet, bundle))
    agent = fleet.agent(0)
    (outcome,) = agent.poll().outcomes
    assert outcome.status == "rejected" and type(outcome.error) is error, outcome
    assert lab.current("dev0") is None
    assert not list((lab.tmp / "dev0" / "install").glob("digits/releases/*"))
    # The repository is repaired: the same release, with the genuine slip, installs (the bad
    # slip was not held against the bundle's bytes).
    plant(lab, mine, 1, slips[mine])
    assert agent.poll().outcomes[0].status == "installed"
    assert fleet.run(0).shape == (1, 3)


def test_a_slip_signed_by_a_key_that_is_not_a_publisher_is_exit_21_everywhere(
    lab: Lab, cli: Callable[..., CliResult]
) -> None:
    """One fault, one error: the agent, `edge-sdk run`, `edge-sdk verify`, load() and deploy all
    refuse a slip signed by an untrusted key as a SignatureError (exit 21). The agent used to
    re-type it as a KeySlipError (exit 31) while `run` said 21."""
    fleet = Fleet(lab, 2)
    bundle, _ = fleet.release(1)
    device = fleet.devices[0]
    forged = HOSTILE["foreign-signer"](fleet, bundle)
    plant(lab, device.key_id, 1, forged)
    key, _ = save_keypair(device, lab.tmp / "dev0-key")
    _, trust = save_keypair(lab.publisher, lab.tmp / "publisher")

    agent = cli("agent", "--repo", lab.url, "--root", lab.metadata / "1.root.json",
                "--state-dir", lab.tmp / "dev0" / "state", "--install-dir",
                lab.tmp / "dev0" / "install", "--trust", trust, "--device-key", key,
                "--hardware-id", "x86_64", "--once")  # fmt: skip
    assert agent.code == SignatureError.exit_code == 21, agent.err
    assert "key slip" in agent.err
    assert lab.current("dev0") is None

    slip = lab.tmp / "forged.edgeslip"
    slip.write_bytes(forged)
    np.save(lab.tmp / "x.npy", X)
    ran = cli("run", bundle, "--trust", trust, "--device-key", key, "--slip", slip,
              "-i", lab.tmp / "x.npy", "--state-dir", lab.tmp / "run-state",
              "--allow-target-mismatch")  # fmt: skip
    assert ran.code == agent.code, ran.err
    checked = cli("verify", bundle, "--trust", trust, "--device-key", key, "--slip", slip)
    assert checked.code == agent.code, checked.err

    with pytest.raises(SignatureError, match="the key slip"):
        edge_sdk.load(bundle, trust=lab.trust, device_key=key, slip=forged,
                      state_dir=lab.tmp / "load-state", allow_target_mismatch=True)  # fmt: skip
    # deploy refuses it before anything is sent (the board would refuse it the same way), to one
    # target and in a fleet deploy, where it is that device's result.
    from edge_sdk.fleet.deploy import deploy, deploy_fleet, prepare_bundle
    from edge_sdk.fleet.inventory import Device

    board = lab.tmp / "board"
    board.mkdir()
    prepared = prepare_bundle(bundle, trust=lab.trust)
    with pytest.raises(SignatureError, match="the key slip"):
        deploy(prepared, str(board), slip=forged)
    slips = lab.tmp / "slips"
    slips.mkdir()
    (slips / f"{device.key_id}.edgeslip").write_bytes(forged)
    (result,) = deploy_fleet(prepared, [Device("dev0", str(board), public_key=device.public)],
                             slips=slips).results  # fmt: skip
    assert result.status == "failed" and type(result.error) is SignatureError, result
    assert not list(board.rglob("*.edgepkg"))


def test_publish_refuses_slips_that_do_not_belong(lab: Lab) -> None:
    fleet = Fleet(lab, 2)
    v1 = fleet.seal(1)
    v2 = fleet.seal(2)
    slips = fleet.slips(v1, fleet.devices)
    with pytest.raises(KeySlipMismatchError, match="not for digits v2"):
        tuf_repo.publish([v2], lab.repo, slips=slips)
    a, b = (d.key_id for d in fleet.devices)
    with pytest.raises(KeySlipMismatchError, match="filed as"):
        tuf_repo.publish([v1], lab.repo, slips={a: slips[b]})
    with pytest.raises(KeySlipError, match="not a device key id"):
        tuf_repo.publish([v1], lab.repo, slips={"../../etc": slips[a]})
    assert tuf_repo.status(lab.repo).targets == ()  # nothing was published


def test_one_cli_command_publishes_the_release_for_the_fleet(
    lab: Lab, cli: Callable[..., CliResult]
) -> None:
    fleet = Fleet(lab, 4)
    keys = lab.tmp / "fleet-keys"
    keys.mkdir()
    for i, device in enumerate(fleet.devices):
        save_keypair(device, keys / f"dev{i}")
    for path in keys.glob("*.key"):
        path.unlink()  # the publisher has the devices' public keys only
    escrow, _ = save_keypair(fleet.escrow, lab.tmp / "escrow")
    signer, trust = save_keypair(lab.publisher, lab.tmp / "publisher")
    bundle = fleet.seal(1)
    result = cli("repo", "publish", bundle, "--repo", lab.repo, "--trust", trust,
                 "--devices", keys, "--opener", escrow, "--signing-key", signer,
                 "--exclude", keys / "dev3.pub", "--json")  # fmt: skip
    assert result.code == 0, result.err
    assert result.json()["slips"] == 3
    assert fleet.agent(1).poll().outcomes[0].status == "installed"
    assert fleet.agent(3).poll().outcomes[0].status == "rejected"
    bad = cli("repo", "publish", bundle, "--repo", lab.repo, "--trust", trust, "--devices", keys)
    assert bad.code == 2 and "--opener" in bad.err


def test_gzip_metadata_is_decoded_in_bounded_steps_and_a_bomb_is_cut(lab: Lab) -> None:
    """Metadata may arrive gzip-compressed (nginx compresses JSON): it is inflated a step at a
    time, so a tiny response that inflates to gigabytes is cut at ngclient's size cap."""
    import gzip
    import http.server
    import threading

    from edge_sdk.errors import IntegrityError

    bomb = gzip.compress(b" " * (64 * 1024 * 1024), 9)  # 64 MiB of JSON whitespace, ~64 KiB sent
    real = lab.metadata

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[1]
            if name == "timestamp.json":
                body, encoded = bomb, True
            elif (real / name).is_file():
                body, encoded = gzip.compress((real / name).read_bytes()), True
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            if encoded:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        agent = Agent(f"http://127.0.0.1:{httpd.server_port}", real / "1.root.json",
                      lab.tmp / "bomb" / "state", lab.tmp / "bomb" / "install", lab.trust,
                      hardware_ids=("x86_64",), retry=QUICK)  # fmt: skip
        with pytest.raises(IntegrityError, match="more than allowed"):
            agent.poll()
        assert agent.traffic.bytes < len(bomb) + 16 * 1024  # counted as sent, never inflated
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_bin_signed_by_a_key_targets_does_not_delegate_to_is_refused(lab: Lab) -> None:
    from securesystemslib.signer import CryptoSigner

    fleet = Fleet(lab, 3)
    _, slips = fleet.release(1)
    mine = fleet.devices[0].key_id
    plant(lab, mine, 1, slips[mine], bins_key=CryptoSigner(generate_key("signing").components[0]))
    agent = fleet.agent(0)
    (outcome,) = agent.poll().outcomes
    assert outcome.status == "rejected" and isinstance(outcome.error, SignatureError), outcome
    assert lab.current("dev0") is None
    plant(lab, mine, 1, slips[mine])
    assert agent.poll().outcomes[0].status == "installed"


def test_refresh_re_signs_the_bins(lab: Lab) -> None:
    fleet = Fleet(lab, 3)
    fleet.release(1)
    old = sorted(p.name for p in lab.metadata.glob("*.bin-*.json"))
    result = tuf_repo.refresh(lab.repo, margin={"targets": timedelta(days=365)})
    assert "targets" in result.resigned  # the bins expire with targets: re-signed together
    new = sorted(p.name for p in lab.metadata.glob(f"{result.resigned['targets']}.bin-*.json"))
    assert len(new) == len(old) and new != old
    assert fleet.agent(0).poll().outcomes[0].status == "installed"
