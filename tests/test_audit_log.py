"""The device audit log: a hash chain that names the first edited, deleted, inserted or moved record."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from edge_sdk.device.audit_log import AuditLog, log_files, read_log, verify_log
from edge_sdk.errors import AuditLogError


def _write(path: Path, n: int, **kw: int) -> AuditLog:
    log = AuditLog(path, **kw)
    for i in range(n):
        log.append("load", name="digits", version=i, result="ok")
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_intact_chain(tmp_path: Path) -> None:
    _write(tmp_path / "audit.log", 10)
    report = verify_log(tmp_path / "audit.log")
    assert [r["seq"] for r in report.records] == list(range(1, 11))
    assert report.records[0]["prev"] == "0" * 64


def test_edited_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 10)
    lines = _lines(path)
    lines[4] = lines[4].replace('"result":"ok"', '"result":"OK"')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditLogError, match=r"audit.log:5 \(seq 5\): record seq 5 was edited"):
        verify_log(path)


def test_deleted_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 10)
    lines = _lines(path)
    del lines[6]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditLogError, match=r"records seq 7..7 were deleted"):
        verify_log(path)


def test_inserted_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 10)
    lines = _lines(path)
    forged = json.loads(lines[2])
    forged["event"] = "load"
    forged["name"] = "evil"
    lines.insert(3, json.dumps(forged, sort_keys=True, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditLogError, match=r"audit.log:4 \(seq 3\).*inserted or reordered"):
        verify_log(path)


def test_reordered_records_are_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 10)
    lines = _lines(path)
    lines[3], lines[4] = lines[4], lines[3]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        AuditLogError, match=r"audit.log:4 \(seq 5\): record seq 5 comes before seq 4: reordered"
    ):
        verify_log(path)


def test_garbage_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 3)
    with path.open("a") as handle:
        handle.write("not json\n")
    report = read_log(log_files(path))
    assert not report.ok and report.problem is not None and report.problem.line == 4


def test_rotation_keeps_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 40, max_bytes=1500)
    files = log_files(path)
    assert len(files) > 2 and files[-1] == path
    report = verify_log(path)
    assert [r["seq"] for r in report.records][-5:] == [36, 37, 38, 39, 40]
    first_current = json.loads(_lines(path)[0])
    previous_last = _lines(files[-2])[-1]
    import hashlib

    assert first_current["prev"] == hashlib.sha256(previous_last.encode()).hexdigest()


def test_a_mangled_tail_is_kept_reported_and_extended(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = _write(path, 2)
    with path.open("a") as handle:
        handle.write("{broken\n")
    record = log.append("load")  # never refused: availability comes first
    assert record["seq"] == 4 and _lines(path)[2] == "{broken"
    with pytest.raises(AuditLogError, match=r"audit.log:3 .*unreadable.*resumes after it at seq 3"):
        verify_log(path)


def test_records_are_bounded(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    record = log.append("reject", reason="r" * 10_000_000, nested=[[["x" * 9999] * 99] * 99],
                        big=10**400, many={str(i): i for i in range(1000)})  # fmt: skip
    assert record["reason"].endswith("[cut: 10,000,000 characters]")
    assert len(_lines(tmp_path / "audit.log")[0]) <= 16 * 1024
    assert verify_log(tmp_path / "audit.log").records[0]["event"] == "reject"


def _append_many(args: tuple[str, int]) -> None:
    path, worker = args
    log = AuditLog(Path(path))
    for i in range(25):
        log.append("load", worker=worker, i=i)


def test_concurrent_appenders_produce_one_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_many, [(str(path), w) for w in range(4)])
    report = verify_log(path)
    assert len(report.records) == 100
    assert [r["seq"] for r in report.records] == list(range(1, 101))


def test_deleting_the_oldest_records_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write(path, 10)
    path.write_text("\n".join(_lines(path)[6:]) + "\n")
    with pytest.raises(AuditLogError, match=r"records seq 1..6 were deleted from the start"):
        verify_log(path)


def test_unwritable_log_is_a_typed_error(tmp_path: Path) -> None:
    (tmp_path / "audit.log").mkdir()  # a directory where the file should be
    with pytest.raises(AuditLogError, match="cannot write audit log"):
        AuditLog(tmp_path / "audit.log").append("load")
