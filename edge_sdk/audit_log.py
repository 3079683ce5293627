"""The device's tamper-evident audit log: one JSON line per verify, load or rejection.

Each record carries a sequence number and ``prev``, the SHA-256 of the previous record's line, so
editing, deleting, inserting or reordering a record breaks the chain at a point
:func:`verify_log` names. Appends hold an exclusive ``flock`` and write one line with ``O_APPEND``
followed by ``fsync``, so concurrent processes interleave whole records and never fork the chain.
When the file passes ``max_bytes`` it is rotated (``audit.log`` → ``audit.log.1`` → …) and the new
file's first record links to the old file's last, so the chain spans files.

What a hash chain does not prove: whoever controls the device can rewrite the whole tail
consistently, and a change to the *last* record has no successor to expose it. Shipping records (or
their hashes) off the device regularly, or signing checkpoints, closes that gap — see docs/AUDIT.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import AuditLogError
from .state import locked

GENESIS = "0" * 64
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
KEEP_ROTATED = 5


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _last_line(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end == 0:
                return None
            back = min(end, 1 << 16)
            handle.seek(end - back)
            tail = handle.read(back).rstrip(b"\n")
    except FileNotFoundError:
        return None
    return tail.rsplit(b"\n", 1)[-1]


class AuditLog:
    """Appends hash-chained records to ``path`` (creating its directory)."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = path.with_name(f".{path.name}.lock")

    def _tail(self) -> tuple[int, str]:
        """The last record's sequence number and hash, looking into the rotated file if needed."""
        for candidate in (self.path, self.path.with_name(self.path.name + ".1")):
            line = _last_line(candidate)
            if line is not None:
                try:
                    seq = int(json.loads(line)["seq"])
                except (ValueError, KeyError, TypeError):
                    raise AuditLogError(
                        f"audit log {candidate} ends with a malformed record; refusing to extend it",
                        hint="inspect it with 'edge-sdk audit log --verify'",
                    ) from None
                return seq, _line_hash(line)
        return 0, GENESIS

    def _rotate(self) -> None:
        for i in range(KEEP_ROTATED - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record and return it.

        Raises:
            AuditLogError: the log cannot be written (or its tail is not a record).
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with locked(self._lock):
                if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
                    self._rotate()
                seq, prev = self._tail()
                record = {
                    "seq": seq + 1,
                    "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    "event": event,
                    **fields,
                    "prev": prev,
                }
                line = (
                    json.dumps(record, sort_keys=True, separators=(",", ":"), default=str).encode()
                    + b"\n"
                )
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise AuditLogError(
                f"cannot write audit log {self.path}: {exc.strerror or exc}"
            ) from None
        return record


def log_files(path: Path) -> list[Path]:
    """The log and its rotated predecessors, oldest first."""
    rotated = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    return [*rotated, path] if path.exists() else rotated


@dataclass(frozen=True)
class LogProblem:
    """The first place the chain breaks."""

    file: str
    line: int
    seq: int | None
    problem: str


@dataclass(frozen=True)
class LogReport:
    """Records read, and the first problem (None when the chain is intact)."""

    records: tuple[dict[str, Any], ...]
    problem: LogProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def _all_seqs(paths: Sequence[Path]) -> set[int]:
    """Every sequence number present anywhere (to tell a reordering from a deletion)."""
    seqs: set[int] = set()
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                seqs.add(int(json.loads(line)["seq"]))
            except (ValueError, KeyError, TypeError):
                continue
    return seqs


def read_log(paths: Sequence[Path]) -> LogReport:
    """Read and check the chain across ``paths`` (oldest first), stopping at the first break.

    Edits are named at the edited record (its hash no longer matches its successor's link);
    deletions, insertions and reorderings at the first record whose sequence number is off.
    """
    records: list[dict[str, Any]] = []
    everywhere = _all_seqs(paths)
    prev_hash: str | None = None
    prev_seq: int | None = None
    prev_where: tuple[str, int, int | None] | None = None
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            raise AuditLogError(f"cannot read audit log {path}: {exc.strerror}") from None
        for number, line in enumerate(lines, start=1):
            where = (str(path), number)
            try:
                record = json.loads(line)
                seq = int(record["seq"])
                link = str(record["prev"])
            except (ValueError, KeyError, TypeError):
                return LogReport(
                    tuple(records),
                    LogProblem(*where, None, "record is not valid JSON or lacks seq/prev: edited"),
                )
            if prev_seq is not None and seq != prev_seq + 1:
                if seq > prev_seq + 1 and prev_seq + 1 in everywhere:
                    problem = f"record seq {seq} comes before seq {prev_seq + 1}: reordered"
                elif seq > prev_seq + 1:
                    problem = f"records seq {prev_seq + 1}..{seq - 1} were deleted before this one"
                else:
                    problem = f"record seq {seq} is out of order after seq {prev_seq}: inserted or reordered"
                return LogReport(tuple(records), LogProblem(*where, seq, problem))
            if prev_hash is not None and link != prev_hash:
                assert prev_where is not None
                return LogReport(
                    tuple(records),
                    LogProblem(
                        prev_where[0],
                        prev_where[1],
                        prev_where[2],
                        f"record seq {prev_seq} was edited: its hash no longer matches the link in seq {seq}",
                    ),
                )
            if prev_hash is None and seq == 1 and link != GENESIS:
                problem = "the first record does not start the chain: edited"
                return LogReport(tuple(records), LogProblem(*where, seq, problem))
            if prev_hash is None and seq != 1 and len(paths) == 1:
                # Only a log whose oldest rotated files were pruned may start mid-chain; a single,
                # never-rotated file that does has lost its head.
                problem = f"records seq 1..{seq - 1} were deleted from the start of the log"
                return LogReport(tuple(records), LogProblem(*where, seq, problem))
            records.append(record)
            prev_hash, prev_seq, prev_where = _line_hash(line), seq, (str(path), number, seq)
    return LogReport(tuple(records), None)


def verify_log(path: Path) -> LogReport:
    """Check the chain of ``path`` and its rotated files; raise on the first break.

    Raises:
        AuditLogError: naming the file, line and sequence number of the first broken record.
    """
    report = read_log(log_files(path))
    if report.problem is not None:
        p = report.problem
        raise AuditLogError(f"audit log broken at {p.file}:{p.line} (seq {p.seq}): {p.problem}")
    return report
