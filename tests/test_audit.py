"""Bulk audits over trees of good and bad bundles, and the CLI's formats and exit codes."""

from __future__ import annotations

import base64
import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.fleet.audit import audit_paths, find_bundles, summarize
from edge_sdk.format.bundle import read_bundle
from edge_sdk.keys import TrustStore

from .bundle_parts import split_bundle
from .conftest import KeySet, make_bundle_bytes


def _tree(root: Path, keyset: KeySet) -> dict[str, Path]:
    """A device-like tree: good, tampered, unsigned, untrusted, revoked, expired, expiring, 2-of-2."""
    now = datetime.now(timezone.utc)
    files: dict[str, bytes] = {
        "good": make_bundle_bytes(keyset, name="good"),
        "untrusted": make_bundle_bytes(keyset, name="untrusted", signers=(keyset.ecdsa,)),
        "revoked": make_bundle_bytes(keyset, name="revoked", signers=(keyset.hybrid,)),
        "expired": make_bundle_bytes(
            keyset, name="expired", created=now - timedelta(days=9), expires=now - timedelta(days=1)
        ),
        "expiring": make_bundle_bytes(keyset, name="expiring", expires=now + timedelta(days=3)),
        "plain": make_bundle_bytes(keyset, name="plain", recipients=()),
        "two-signers": make_bundle_bytes(
            keyset, name="two", signers=(keyset.signer, keyset.signer2)
        ),
    }
    tampered = bytearray(make_bundle_bytes(keyset, name="tampered"))
    tampered[-3] ^= 0x10
    files["tampered"] = bytes(tampered)
    unsigned = split_bundle(make_bundle_bytes(keyset, name="unsigned"))
    unsigned.envelope["signatures"] = []
    files["unsigned"] = unsigned.join()
    forged = split_bundle(make_bundle_bytes(keyset, name="forged"))
    forged.envelope["signatures"][0]["sig"] = base64.b64encode(bytes(64)).decode()
    files["forged"] = forged.join()
    files["not-a-bundle"] = b"PK\x03\x04 this is a zip"
    paths = {}
    for name, data in files.items():
        release = root / "board-1" / name / "releases" / f"1-{name}.edgepkg"
        release.parent.mkdir(parents=True)
        release.write_bytes(data)
        (release.parent.parent / "current").symlink_to(f"releases/{release.name}")
        paths[name] = release
    return paths


@pytest.fixture
def tree(tmp_path: Path, keyset: KeySet) -> dict[str, Path]:
    return _tree(tmp_path / "fleet", keyset)


@pytest.fixture
def trust(keyset: KeySet) -> TrustStore:
    return TrustStore.from_keys([keyset.signer.public, keyset.signer2.public, keyset.hybrid.public],
                                revoked=[keyset.hybrid.key_id])  # fmt: skip


EXPECTED = {
    "good": ("ok", ""),
    "two-signers": ("ok", ""),
    "expiring": ("warning", "expires within 30 days"),
    "plain": ("warning", "not encrypted"),
    "untrusted": ("error", "0 valid signature"),
    "revoked": ("error", "revoked key"),
    "expired": ("error", "expired at"),
    "tampered": ("error", "payload SHA-256 mismatch"),
    "unsigned": ("error", "carries no signature"),
    "forged": ("error", "invalid signature by key"),
    "not-a-bundle": ("error", "not an edge-sdk bundle"),
}


def test_each_bundle_gets_the_right_status(tree: dict[str, Path], trust: TrustStore) -> None:
    rows = {
        Path(r.path).parent.parent.name: r for r in audit_paths([tree["good"].parents[3]], trust)
    }
    assert set(rows) == set(EXPECTED)
    for name, (status, reason) in EXPECTED.items():
        assert rows[name].status == status, (name, rows[name])
        assert reason in rows[name].reason, (name, rows[name].reason)
        assert rows[name].current  # every release here is what its device runs
    assert rows["good"].signers and rows["good"].digest and rows["good"].version == 1
    assert summarize(list(rows.values())) == {"total": 11, "ok": 2, "warning": 2, "error": 7}


def test_threshold_two_of_two(tree: dict[str, Path], keyset: KeySet) -> None:
    strict = TrustStore.from_keys([keyset.signer.public, keyset.signer2.public], threshold=2)
    rows = {
        Path(r.path).parent.parent.name: r for r in audit_paths([tree["good"].parents[3]], strict)
    }
    assert rows["two-signers"].status == "ok"
    assert rows["good"].status == "error" and "2 required" in rows["good"].reason


def test_symlinks_are_not_counted_twice(tree: dict[str, Path]) -> None:
    found = list(find_bundles([tree["good"].parents[3]]))
    assert len(found) == len(EXPECTED) and all(not p.is_symlink() for p in found)


def test_cli_formats_and_exit_codes(tree: dict[str, Path], cli: Any, key_files: dict[str, Path], keyset: KeySet,
                                    tmp_path: Path) -> None:  # fmt: skip
    root = tree["good"].parents[3]
    trust_dir = tmp_path / "trust"
    trust_dir.mkdir()
    for name in ("signer", "signer2", "hybrid"):
        (trust_dir / f"{name}.pub").write_bytes(key_files[f"{name}.pub"].read_bytes())
    (trust_dir / "trust.toml").write_text(f'revoked = ["{keyset.hybrid.key_id}"]\n')
    table = cli("audit", root, "--trust", trust_dir)
    assert table.code == 1 and "11 bundle(s): 2 ok, 2 warning, 7 error" in table.out
    as_json = cli("audit", root, "--trust", trust_dir, "--json")
    data = as_json.json()
    assert as_json.code == 1 and data["ok"] is False and data["summary"]["error"] == 7
    as_csv = cli("audit", root, "--trust", trust_dir, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert len(rows) == 11 and {r["status"] for r in rows} == {"ok", "warning", "error"}
    only_good = cli("audit", tree["good"], tree["two-signers"], "--trust", trust_dir)
    assert only_good.code == 0
    warn = cli("audit", tree["plain"], "--trust", trust_dir, "--fail-on", "warning")
    assert warn.code == 1
    assert cli("audit", tree["plain"], "--trust", trust_dir).code == 0
    missing = cli("audit", root / "nope", "--trust", trust_dir)
    assert missing.code == 2 and "does not exist" in missing.err


def test_cli_audit_log(tmp_path: Path, cli: Any) -> None:
    from edge_sdk.device.audit_log import AuditLog

    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(5):
        log.append("load", name="digits", version=i, result="ok")
    good = cli("audit", "log", path, "--verify", "--json")
    assert good.code == 0 and good.json()["ok"] and len(good.json()["records"]) == 5
    lines = path.read_text().splitlines()
    del lines[2]
    path.write_text("\n".join(lines) + "\n")
    broken = cli("audit", "log", path, "--verify")
    assert broken.code == 90 and "records seq 3..3 were deleted" in broken.err
    assert cli("audit", "log", tmp_path / "none.log").code == 2


def test_audit_never_decrypts(
    tree: dict[str, Path], trust: TrustStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_sdk.format import verify

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("an audit must never decrypt")

    monkeypatch.setattr(verify, "decrypt_model", forbidden)
    rows = audit_paths([tree["good"]], trust)
    assert rows[0].status == "ok" and read_bundle(tree["good"]).manifest.payload.encrypted
