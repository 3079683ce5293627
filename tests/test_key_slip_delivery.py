"""Key slips delivered with the bundle: deploy puts each device's slip beside its release, on
local directories and on real sshd "boards", where ``load`` (real LiteRT) finds it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import KeySlipMismatchError
from edge_sdk.fleet.deploy import DeployOptions, deploy, deploy_fleet
from edge_sdk.fleet.inventory import Device
from edge_sdk.fleet.key_slips import content_key_of, write_key_slips
from edge_sdk.format.bundle import read_bundle, save_bundle
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, generate_key, save_keypair

from .conftest import REPO
from .test_deploy import Lab, lab, signer  # noqa: F401  (fixtures: two real sshd boards)

MODEL = (REPO / "tests" / "vectors" / "model.tflite").read_bytes()
X = np.ones((1, 4), np.float32)


def _release(tmp: Path, publisher: PrivateKey, escrow: PrivateKey, version: int) -> Path:
    path = tmp / f"digits-{version}.edgepkg"
    save_bundle(seal_bundle(MODEL, name="digits", version=version, target=Target("x86_64"),
                            signers=[publisher], recipients=[escrow.public]), path)  # fmt: skip
    return path


def _slips(tmp: Path, bundle: Path, escrow: PrivateKey, devices: list[PrivateKey],
           publisher: PrivateKey, tag: str) -> Path:  # fmt: skip
    sealed = read_bundle(bundle)
    out = tmp / f"slips-{tag}"
    write_key_slips(out, sealed, content_key_of(sealed, escrow), [d.public for d in devices],
                    [publisher])  # fmt: skip
    return out


def test_a_local_deploy_puts_the_slip_beside_the_release_and_load_finds_it(
    tmp_path: Path,
    signer: PrivateKey,  # noqa: F811
) -> None:
    escrow, device = generate_key("device"), generate_key("device")
    key_path, _ = save_keypair(device, tmp_path / "device")
    trust = save_keypair(signer, tmp_path / "publisher")[1]
    board = tmp_path / "board"
    board.mkdir()
    v1 = _release(tmp_path, signer, escrow, 1)
    slips = _slips(tmp_path, v1, escrow, [device], signer, "v1")
    mine = slips / f"{device.key_id}.edgeslip"
    result = deploy(v1, str(board), DeployOptions(keep=1), slip=mine)
    beside = board / "digits" / "releases" / result.file.replace(".edgepkg", ".edgeslip")
    assert beside.read_bytes() == mine.read_bytes()
    with edge_sdk.load(board / "digits" / "current", trust=trust, device_key=key_path,
                       state_dir=tmp_path / "state", allow_target_mismatch=True) as model:  # fmt: skip
        assert np.asarray(model.predict(X)).shape == (1, 3)
    # The v1 slip is refused for v2 before anything is sent; v2 with its own slip replaces v1,
    # and pruning v1 takes its slip along.
    v2 = _release(tmp_path, signer, escrow, 2)
    with pytest.raises(KeySlipMismatchError, match="not for digits v2"):
        deploy(v2, str(board), DeployOptions(keep=1), slip=mine)
    assert sorted(p.name for p in (board / "digits" / "releases").iterdir()) == sorted(
        [result.file, beside.name]
    )
    slips2 = _slips(tmp_path, v2, escrow, [device], signer, "v2")
    second = deploy(
        v2, str(board), DeployOptions(keep=1), slip=slips2 / f"{device.key_id}.edgeslip"
    )
    names = sorted(p.name for p in (board / "digits" / "releases").iterdir())
    assert second.file in names and second.file.replace(".edgepkg", ".edgeslip") in names
    assert result.file in names  # the previous release is kept for rollback, with its slip
    with edge_sdk.load(board / "digits" / "current", trust=trust, device_key=key_path,
                       state_dir=tmp_path / "state", allow_target_mismatch=True) as model:  # fmt: skip
        assert model.manifest.version == 2


def test_a_fleet_deploy_over_ssh_gives_each_board_its_own_slip(
    tmp_path: Path,
    lab: Lab,  # noqa: F811
) -> None:
    escrow = generate_key("device")
    keys = [generate_key("device") for _ in range(3)]
    v1 = _release(tmp_path, lab.signer, escrow, 1)
    slips = _slips(tmp_path, v1, escrow, keys[:2], lab.signer, "v1")  # the third is revoked
    boards = lab.devices(tmp_path / "boards", 3)
    devices = [Device(b.name, b.target, ssh=b.ssh, public_key=k.public)
               for b, k in zip(boards, keys, strict=True)]  # fmt: skip
    fleet = deploy_fleet(v1, devices, DeployOptions(), parallel=3, max_failures=3, slips=slips)
    status = {r.device: r for r in fleet.results}
    assert [status[d.name].status for d in devices] == ["ok", "ok", "failed"]
    assert "has no key slip" in (status["ssh-2"].reason or "")
    for board, key in zip(devices[:2], keys[:2], strict=True):
        root = tmp_path / "boards" / board.name
        releases = root / "digits" / "releases"
        slip = releases / status[board.name].file.replace(".edgepkg", ".edgeslip")
        assert slip.read_bytes() == (slips / f"{key.key_id}.edgeslip").read_bytes()
        key_path, _ = save_keypair(key, tmp_path / board.name)
        with edge_sdk.load(root / "digits" / "current", trust=lab.trust, device_key=key_path,
                           state_dir=tmp_path / f"state-{board.name}",
                           allow_target_mismatch=True) as model:  # fmt: skip
            assert np.asarray(model.predict(X)).shape == (1, 3)
    assert not os.path.exists(tmp_path / "boards" / "ssh-2" / "digits")  # refused before sending
