"""The device's tamper-evident audit log: one JSON line per verify, load or rejection.

Each record carries a sequence number and ``prev``, the SHA-256 of the previous line, so editing,
deleting, inserting or reordering a record breaks the chain at a point :func:`read_log` names.
Appends hold an exclusive ``flock`` and write one line with ``O_APPEND``, so concurrent processes
interleave whole records and never fork the chain. When the file passes ``max_bytes`` it is
rotated (``audit.log`` → ``audit.log.1`` → …) and the new file's first record links to the old
file's last, so the chain spans files.

Durability (docs/AUDIT.md, "Durability") is chosen per record. A record that precedes a change —
a rejection, or the load that makes the device accept a new version — is synced (``fdatasync``)
before :meth:`AuditLog.append` returns: on a power cut nothing acknowledged is lost. A record that
changes nothing — a restart or reload of a version the device already accepted — is written (every
reader sees it at once, and it survives the process) and synced by a *group commit*: one
background thread syncs every file that had such records since its last pass, at once and again
at exit, off the caller's path to its first result. A power cut in that window (milliseconds)
loses those records only; the chain stays verifiable, a torn last line being recovered as below.

Availability comes first: nothing written into the log, and nothing found in it, may stop the next
genuine load. So every record is bounded (fields are cut, and say so, before anything from a file
reaches the log), the tail is found by reading backwards however long the last line is, and a tail
that is not a record never blocks an append:

* a **torn write** — the last line has no newline, as after a power cut between ``write`` and
  ``fdatasync``, or ends in the zeros some filesystems leave — is terminated and followed by a
  ``resumed`` record marked ``torn`` that links to the fragment's hash (the evidence stays, covered
  by the chain). :func:`read_log` reports it as a recovered interruption, not as an edit;
* an **unreadable complete line** (an edit, or corruption) gets the same ``resumed`` record without
  the mark; :func:`read_log` reports it as a break, and the device keeps working.

``edge-sdk audit log PATH --repair`` runs the same recovery by hand. What a hash chain does not
prove: whoever controls the device can rewrite the whole tail consistently, and a change to the
*last* record has no successor to expose it — ship records off the device (docs/AUDIT.md).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from edge_sdk.errors import AuditLogError, unreadable_file
from edge_sdk.files import locked, open_dir, open_regular

log = logging.getLogger(__name__)

GENESIS = "0" * 64
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
KEEP_ROTATED = 5
#: Bounds on what one record may hold, whatever the caller passed (values may come from files).
MAX_FIELD_CHARS = 512
MAX_ITEMS = 32
MAX_RECORD_BYTES = 16 * 1024
#: A line longer than this is not parsed (our own records are far shorter); it is hashed.
MAX_PARSE_BYTES = 1024 * 1024
RESUMED = "resumed"
_BLOCK = 64 * 1024


def _line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _bound(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` with strings, lists and nesting cut to fixed bounds."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**30 else _bound(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        if len(value) <= MAX_FIELD_CHARS:
            return value
        return value[:MAX_FIELD_CHARS] + f"… [cut: {len(value):,} characters]"
    if depth >= 3:
        return "… [cut: nested too deeply]"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k)[:64]: _bound(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["…"] = f"[cut: {len(items):,} entries]"
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        seq = list(value)
        out_list = [_bound(v, depth + 1) for v in seq[:MAX_ITEMS]]
        if len(seq) > MAX_ITEMS:
            out_list.append(f"… [cut: {len(seq):,} items]")
        return out_list
    return _bound(str(value), depth)


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class _Line:
    """The last line of a file: where it starts, its hash, and what it holds if it is a record."""

    start: int
    length: int
    sha256: str
    terminated: bool
    seq: int | None


def _parse(line: bytes) -> dict[str, Any] | None:
    """The record a line holds, or None when it is not one (junk, torn, edited)."""
    if len(line) > MAX_PARSE_BYTES:
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError too; deep nesting is not a record
        return None
    if not isinstance(record, dict):
        return None
    seq, prev = record.get("seq"), record.get("prev")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 or not isinstance(prev, str):
        return None
    return record


def _line_ending_at(handle: BinaryIO, end: int, terminated: bool) -> _Line:
    """The line that ends at offset ``end`` (its newline excluded), found by reading backwards."""
    content_end = end - 1 if terminated else end
    start, pos = 0, content_end
    while pos > 0:
        step = min(_BLOCK, pos)
        handle.seek(pos - step)
        block = handle.read(step)
        cut = block.rfind(b"\n")
        if cut >= 0:
            start = pos - step + cut + 1
            break
        pos -= step
    length = content_end - start
    digest = hashlib.sha256()
    handle.seek(start)
    remaining, head = length, b""
    while remaining:
        piece = handle.read(min(1 << 20, remaining))
        if not piece:
            break
        if not head:
            head = piece[: MAX_PARSE_BYTES + 1]
        digest.update(piece)
        remaining -= len(piece)
    record = _parse(head) if length <= MAX_PARSE_BYTES else None
    return _Line(start, length, digest.hexdigest(), terminated, record["seq"] if record else None)


def _last_lines(path: Path, want: int = 8) -> list[_Line]:
    """Up to ``want`` last lines of ``path``, newest first (empty when the file is missing/empty)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115  (closed below; read backwards in blocks)
    except FileNotFoundError:
        return []
    with handle:
        end = handle.seek(0, os.SEEK_END)
        if end == 0:
            return []
        handle.seek(end - 1)
        terminated = handle.read(1) == b"\n"
        lines = [_line_ending_at(handle, end, terminated)]
        while len(lines) < want and lines[-1].start > 0:
            lines.append(_line_ending_at(handle, lines[-1].start, True))
        return lines


class _GroupCommit:
    """One thread that syncs audit records written without waiting, many at a time.

    :meth:`submit` takes an open descriptor of a log file that was just written; the thread syncs
    each file once per pass, however many records were written to it meanwhile (descriptors, not
    paths: a file rotated in between is still the one synced), then closes the descriptors.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[int] = []
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, fd: int) -> None:
        with self._cond:
            self._queue.append(fd)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="edge-sdk-audit-sync", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch, self._queue, self._busy = self._queue, [], True
            synced: set[tuple[int, int]] = set()
            for fd in batch:
                try:
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) not in synced:
                        (getattr(os, "fdatasync", None) or os.fsync)(fd)
                        synced.add((st.st_dev, st.st_ino))
                except OSError as exc:  # nobody waits for this record: say so, keep going
                    log.warning("could not sync the audit log: %s", exc.strerror or exc)
                finally:
                    os.close(fd)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def flush(self) -> None:
        """Wait until every record submitted so far is synced."""
        with self._cond:
            while self._queue or self._busy:
                self._cond.wait()

    def _after_fork(self) -> None:
        # The child has no sync thread; the descriptors it inherited are the parent's to sync.
        self._cond = threading.Condition()
        self._queue, self._busy, self._thread = [], False, None


_group_commit = _GroupCommit()
atexit.register(_group_commit.flush)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_group_commit._after_fork)


def sync_pending() -> None:
    """Wait until every record appended with ``durable=False`` so far is on storage."""
    _group_commit.flush()


@dataclass(frozen=True)
class Repair:
    """What :meth:`AuditLog.repair` found at the tail and did about it."""

    action: str  # "none", "terminated" or "resumed"
    detail: str = ""


class AuditLog:
    """Appends hash-chained records to ``path`` (creating its directory)."""

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = path.with_name(f".{path.name}.lock")

    # -- the tail ----------------------------------------------------------------------------

    def _tail(self) -> tuple[int, str, _Line | None, Path]:
        """The last record's seq, the hash the next record links to, the unreadable last line
        (if any, newest first) and the file it is in."""
        for candidate in (self.path, self.path.with_name(self.path.name + ".1")):
            lines = _last_lines(candidate, 1)  # the common case: the last line is a record
            if not lines:
                continue
            last = lines[0]
            if last.seq is not None:
                return last.seq, last.sha256, None, candidate
            lines = _last_lines(candidate)
            seq = next((line.seq for line in lines[1:] if line.seq is not None), 0)
            return seq, last.sha256, last, candidate
        return 0, GENESIS, None, self.path

    def _write(self, data: bytes, *, durable: bool = True) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            os.write(fd, data)
            if not durable:
                _group_commit.submit(fd)  # it syncs and closes the descriptor
                fd = -1
            else:
                # fdatasync: the data and the size, not the timestamps (docs/AUDIT.md: Durability).
                (getattr(os, "fdatasync", None) or os.fsync)(fd)
        finally:
            if fd >= 0:
                os.close(fd)

    def _record(self, seq: int, prev: str, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {
            **{
                k: _bound(v) for k, v in fields.items() if k not in ("seq", "prev", "event", "time")
            },
            "seq": seq,
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "event": event,
            "prev": prev,
        }
        fixed = ("seq", "time", "event", "prev")
        while len(_encode(record)) > MAX_RECORD_BYTES:
            # Drop the largest caller field until the record fits; say what was dropped.
            name = max((k for k in record if k not in fixed and not k.endswith("_cut")),
                       key=lambda k: len(_encode({k: record[k]})))  # fmt: skip
            record[f"{name}_cut"] = f"[cut: {len(_encode({name: record.pop(name)})):,} bytes]"
        return record

    def _recover(self) -> tuple[int, str, Repair]:
        """Make the tail a record again (see the module docstring); called under the lock."""
        seq, prev, bad, where = self._tail()
        if bad is None:
            return seq, prev, Repair("none")
        torn = not bad.terminated
        if torn and where == self.path:
            self._write(b"\n")  # the fragment becomes a line of its own, kept as evidence
        what = "an interrupted write" if torn else "an unreadable record"
        detail = (
            f"{what} of {bad.length:,} bytes at the end of {where.name} (sha256 {bad.sha256[:16]}…)"
        )
        resumed = self._record(
            seq + 1, bad.sha256, RESUMED,
            {"torn": torn, "unreadable_bytes": bad.length, "unreadable_sha256": bad.sha256},
        )  # fmt: skip
        self._write(_encode(resumed) + b"\n")
        return resumed["seq"], _line_hash(_encode(resumed)), Repair("resumed", detail)

    def _rotate(self) -> None:
        # Renames through one descriptor of the log's directory: each one acts on the directory
        # the lock was taken in, whatever happens to the path's components meanwhile.
        name = self.path.name
        dir_fd = open_dir(self.path.parent)
        try:
            for i in range(KEEP_ROTATED - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(
                        f"{name}.{i}", f"{name}.{i + 1}", src_dir_fd=dir_fd, dst_dir_fd=dir_fd
                    )
            os.rename(name, f"{name}.1", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def _locked(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return locked(self._lock)

    def append(self, event: str, *, durable: bool = True, **fields: Any) -> dict[str, Any]:
        """Append one record (bounded, whatever ``fields`` hold) and return it.

        With ``durable`` (the default) the record is on storage when this returns; without it,
        the record is written now and synced by the group commit (see the module docstring) —
        for records that change nothing, such as a reload of a version already accepted.
        A tail that is not a record is recovered first, never refused: see the module docstring.

        Raises:
            AuditLogError: the operating system refused the write (permissions, full disk).
        """
        try:
            with self._locked():
                seq, prev, _ = self._recover()
                if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
                    self._rotate()
                record = self._record(seq + 1, prev, event, fields)
                self._write(_encode(record) + b"\n", durable=durable)
        except OSError as exc:
            raise AuditLogError(
                f"cannot write audit log {self.path}: {exc.strerror or exc}"
            ) from None
        return record

    def repair(self) -> Repair:
        """Recover a torn or unreadable tail now (what the next append would do).

        Raises:
            AuditLogError: the log cannot be written.
        """
        try:
            with self._locked():
                return self._recover()[2]
        except OSError as exc:
            raise AuditLogError(
                f"cannot repair audit log {self.path}: {exc.strerror or exc}"
            ) from None


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
    """Records read, the first problem (None when the chain is intact) and recovered faults."""

    records: tuple[dict[str, Any], ...]
    problem: LogProblem | None
    #: Interrupted writes the chain recovered from (or that the next append will recover).
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.problem is None


def _split(data: bytes) -> tuple[list[bytes], bool]:
    """Lines of a file and whether its last line is complete (ends in a newline)."""
    if not data:
        return [], True
    lines = data.split(b"\n")
    if lines[-1] == b"":
        return lines[:-1], True
    return lines, False


def _read_files(paths: Sequence[Path]) -> list[tuple[Path, list[bytes], bool]]:
    files = []
    for path in paths:
        try:
            with open_regular(path) as handle:  # a FIFO or /dev/zero is refused, not waited on
                data = handle.read()
        except OSError as exc:
            hint = "give the device's audit.log (or its rotated audit.log.1)"
            raise unreadable_file(AuditLogError, "audit log", path, exc, hint=hint) from None
        files.append((path, *_split(data)))
    return files


def read_log(paths: Sequence[Path]) -> LogReport:
    """Read and check the chain across ``paths`` (oldest first), stopping at the first break.

    Edits are named at the edited record (its hash no longer matches its successor's link);
    deletions, insertions and reorderings at the first record whose sequence number is off.
    An interrupted write that was recovered (or is the very last line) is a note, not a break.
    """
    files = _read_files(paths)
    everywhere: set[int] = set()
    for _, lines, _ in files:
        for line in lines:
            record = _parse(line)
            if record is not None:
                everywhere.add(record["seq"])
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    prev_hash: str | None = None
    prev_seq: int | None = None
    prev_where: tuple[str, int, int | None] | None = None
    pending: tuple[str, int] | None = None  # an unreadable line awaiting its `resumed` record

    def report(where: tuple[str, int], seq: int | None, problem: str) -> LogReport:
        return LogReport(tuple(records), LogProblem(*where, seq, problem), tuple(notes))

    full_history = len(files) > KEEP_ROTATED  # pruning only happens once every slot is full
    for index, (path, lines, complete) in enumerate(files):
        if not lines and index < len(files) - 1:
            return report(
                (str(path), 0), None, "a rotated log file is empty: its records were deleted"
            )
        for number, line in enumerate(lines, start=1):
            where = (str(path), number)
            record = _parse(line)
            if record is None:
                if pending is not None:
                    return report(
                        pending, None, "record is not valid JSON or lacks seq/prev: edited"
                    )
                last_line = index == len(files) - 1 and number == len(lines)
                torn = last_line and not complete
                if torn:
                    notes.append(f"{where[0]}:{number}: the last record was cut by an interrupted "
                                 "write (power loss); the next append recovers it")  # fmt: skip
                    break
                if last_line:
                    return report(where, None, "record is not valid JSON or lacks seq/prev: edited")
                pending = where
                prev_hash, prev_where = _line_hash(line), (*where, None)
                continue
            seq, link = record["seq"], record["prev"]
            if pending is not None:
                if record.get("event") != RESUMED or link != prev_hash:
                    return report(
                        pending, None, "record is not valid JSON or lacks seq/prev: edited"
                    )
                if record.get("torn") is True:
                    notes.append(f"{pending[0]}:{pending[1]}: an interrupted write "
                                 f"({record.get('unreadable_bytes')} bytes) was recovered at seq {seq}")  # fmt: skip
                else:
                    return report(
                        pending, None,
                        f"record is unreadable (edited or corrupted); the chain resumes after it at seq {seq}",
                    )  # fmt: skip
                pending = None
            if prev_seq is not None and seq != prev_seq + 1:
                if seq > prev_seq + 1 and prev_seq + 1 in everywhere:
                    problem = f"record seq {seq} comes before seq {prev_seq + 1}: reordered"
                elif seq > prev_seq + 1:
                    problem = f"records seq {prev_seq + 1}..{seq - 1} were deleted before this one"
                else:
                    problem = f"record seq {seq} is out of order after seq {prev_seq}: inserted or reordered"
                return report(where, seq, problem)
            if prev_hash is not None and link != prev_hash:
                assert prev_where is not None
                return LogReport(
                    tuple(records),
                    LogProblem(prev_where[0], prev_where[1], prev_where[2],
                               f"record seq {prev_seq} was edited: its hash no longer matches the link in seq {seq}"),
                    tuple(notes),
                )  # fmt: skip
            if prev_hash is None and seq == 1 and link != GENESIS:
                return report(where, seq, "the first record does not start the chain: edited")
            if prev_hash is None and seq != 1 and not full_history:
                # Only a log whose oldest rotated files were pruned may start mid-chain, and pruning
                # happens only once every rotation slot is in use.
                return report(
                    where, seq, f"records seq 1..{seq - 1} were deleted from the start of the log"
                )
            records.append(record)
            prev_hash, prev_seq, prev_where = _line_hash(line), seq, (*where, seq)
    return LogReport(tuple(records), None, tuple(notes))


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
