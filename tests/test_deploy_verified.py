"""What is current on a target orders releases only when it verifies (issue 20, finding 2).

A planted, unsigned bundle claiming version 2**63-1 (or a genuine release of another name moved
under this one) must not make every genuine deploy "older", nor make the agent report
up-to-date forever: it is reported and replaced, never trusted.
"""

# ruff: noqa: F811  (pytest fixtures imported from test_deploy are parameters here)

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_sdk.fleet.deploy import DeployOptions, deploy, prepare_bundle, rollback, status
from edge_sdk.keys import PrivateKey, TrustStore

from .bundle_parts import split_bundle
from .test_deploy import BundleFactory, board, make_bundle, signer  # noqa: F401  (fixtures)

TOP = 2**63 - 1


def plant(
    root: Path, genuine: Path, *, version: int = TOP, name: str = "demo", current: bool = True
) -> str:
    """An unsigned copy of ``genuine`` claiming ``version``, made ``current`` of ``name``: what
    a local user who can write inside the root leaves there. Its file name matches its manifest."""
    parts = split_bundle(genuine.read_bytes())
    manifest = json.loads(parts.manifest)
    manifest["version"] = version
    parts.manifest = json.dumps(manifest, separators=(",", ":")).encode()
    file = f"{version}-{hashlib.sha256(parts.manifest).hexdigest()[:16]}.edgepkg"
    releases = root / name / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    (releases / file).write_bytes(parts.join())
    if current:
        link = root / name / "current"
        link.unlink(missing_ok=True)
        link.symlink_to(f"releases/{file}")
    return file


def test_a_planted_current_does_not_block_a_genuine_deploy(
    make_bundle: BundleFactory,
    board: Callable[[str], Path],
    signer: PrivateKey,
) -> None:
    trust = TrustStore.from_keys([signer.public])
    root = board("b")
    deploy(prepare_bundle(make_bundle(1), trust=trust), str(root))
    plant(root, make_bundle(1))
    result = deploy(prepare_bundle(make_bundle(2), trust=trust), str(root))
    assert result.status == "ok"
    assert os.readlink(root / "demo" / "current").startswith("releases/2-")


def test_a_genuine_release_of_another_name_does_not_order_this_one(
    make_bundle: BundleFactory,
    board: Callable[[str], Path],
    signer: PrivateKey,
) -> None:
    trust = TrustStore.from_keys([signer.public])
    root = board("b")
    deploy(prepare_bundle(make_bundle(9, name="other"), trust=trust), str(root))
    (release,) = (root / "other" / "releases").iterdir()
    (root / "demo" / "releases").mkdir(parents=True)
    release.rename(root / "demo" / "releases" / release.name)
    (root / "demo" / "current").symlink_to(f"releases/{release.name}")
    assert deploy(prepare_bundle(make_bundle(2), trust=trust), str(root)).status == "ok"


def test_status_reports_an_unverifiable_current_without_its_claimed_version(
    make_bundle: BundleFactory,
    board: Callable[[str], Path],
    signer: PrivateKey,
) -> None:
    trust = TrustStore.from_keys([signer.public])
    root = board("b")
    deploy(make_bundle(1), str(root))
    plant(root, make_bundle(1))
    (row,) = status(str(root), trust=trust)
    assert (row.version, row.digest, row.verified) == (None, None, False)
    assert row.problem is not None and "does not verify" in row.problem
    (unchecked,) = status(str(root))  # without trust: the claim, marked as such
    assert (unchecked.version, unchecked.verified) == (TOP, False)
    deploy(prepare_bundle(make_bundle(3), trust=trust), str(root))
    (fixed,) = status(str(root), trust=trust)
    assert (fixed.version, fixed.verified, fixed.problem) == (3, True, None)


def test_cli_status_marks_unverified_versions(
    make_bundle: BundleFactory, board: Callable[[str], Path], tmp_path: Path, cli: Any,
    signer: PrivateKey,
) -> None:  # fmt: skip
    from edge_sdk.keys import save_keypair

    root = board("b")
    deploy(make_bundle(1), str(root))
    plant(root, make_bundle(1))
    _, pub = save_keypair(signer, tmp_path / "publisher")
    checked = cli("status", "--target", root, "--trust", pub, "--json")
    assert checked.code == 0, checked.err
    (row,) = checked.json()["releases"]
    assert row["version"] is None and "does not verify" in row["problem"]


def test_planted_files_named_as_the_newest_do_not_get_genuine_releases_pruned(
    make_bundle: BundleFactory, board: Callable[[str], Path], signer: PrivateKey
) -> None:
    trust = TrustStore.from_keys([signer.public])
    root = board("b")
    keep3 = DeployOptions(keep=3)
    deployed = [
        deploy(prepare_bundle(make_bundle(v), trust=trust), str(root), keep3) for v in (1, 2, 3)
    ]
    planted = {plant(root, make_bundle(1), version=TOP - i, current=False) for i in range(2)}
    deploy(prepare_bundle(make_bundle(4), trust=trust), str(root), keep3)
    left = {p.name for p in (root / "demo" / "releases").iterdir()}
    assert deployed[1].file in left and deployed[2].file in left  # the newest 3 genuine kept
    assert deployed[0].file not in left  # and the oldest pruned, as without the planted files
    assert planted <= left  # not ours to judge: left alone, never counted


def test_rollback_goes_to_the_previous_release_that_verifies(
    make_bundle: BundleFactory, board: Callable[[str], Path], signer: PrivateKey
) -> None:
    trust = TrustStore.from_keys([signer.public])
    root = board("b")
    first = deploy(prepare_bundle(make_bundle(1), trust=trust), str(root))
    deploy(prepare_bundle(make_bundle(2), trust=trust), str(root))
    # Unsigned, and uploaded after the genuine v1:
    plant(root, make_bundle(5), version=1, current=False)
    result = rollback("demo", str(root), trust=trust)
    assert result.to_file == first.file
