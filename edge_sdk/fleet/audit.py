"""Fleet-wide signature audits: find every bundle, check each without any device key, one row each.

An audit reads and hashes; it never decrypts. Each bundle gets a status:

* ``ok`` — structure, signatures and threshold against the trust store, revocation, expiry,
  format version and payload hash all pass;
* ``warning`` — it passes, but expires within the warning window, is not encrypted, or also
  carries signatures from keys the trust store does not know;
* ``error`` — anything fails; ``reason`` says what, ``kind`` is the error's short name.

With a provenance policy (``--require-provenance``, ``--policy FILE``) each bundle must also carry
a build attestation that is bound to it and signed by the trusted publisher, and its attested
history must meet the policy (:mod:`edge_sdk.fleet.provenance_policy`); otherwise the row is an
``error`` of kind ``provenance`` or ``policy``.

Rows also say whether the file is the release a device's ``current`` link points at (the layout
``edge-sdk deploy`` writes: ``<root>/<name>/releases/…`` with ``<root>/<name>/current``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import EdgeSDKError, UsageError, escape_text
from edge_sdk.format.bundle import Bundle, StreamedRead, read_bundle, stream_file
from edge_sdk.format.verify import Policy, check_bundle
from edge_sdk.keys import TrustStore

if TYPE_CHECKING:
    from .provenance_policy import ProvenancePolicy

BUNDLE_SUFFIX = ".edgepkg"
STATUSES = ("ok", "warning", "error")


@dataclass(frozen=True)
class AuditRow:
    """The verdict on one bundle file."""

    device: str
    path: str
    status: str
    reason: str = ""
    kind: str = ""
    name: str | None = None
    version: int | None = None
    digest: str | None = None
    signers: tuple[str, ...] = ()
    expires: str | None = None
    format_version: int | None = None
    current: bool = False
    #: With a provenance policy: "verified" (and "meets POLICY"), or "rejected"; else empty.
    provenance: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["signers"] = list(self.signers)
        return out


def find_bundles(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every ``.edgepkg`` file under ``paths`` (files as given, directories recursively, sorted).

    Release files are reached through ``releases/`` directories; ``current`` links are not listed
    twice (they are reported through :attr:`AuditRow.current`).
    """
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            yield path
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    candidate = Path(root) / name
                    if name.endswith(BUNDLE_SUFFIX) and not candidate.is_symlink():
                        yield candidate
        else:
            raise UsageError(f"audit path {path} does not exist")


def _is_current(path: Path) -> bool:
    """True when ``path`` is what ``<name>/current`` points at in the deploy layout."""
    from edge_sdk.device.runtime import layout_path

    path = layout_path(path)  # `releases/x` or `x` from inside releases/ name the same file
    if path.parent.name != "releases":
        return False
    link = path.parent.parent / "current"
    try:
        return link.is_symlink() and link.resolve() == path.resolve()
    except OSError:
        return False


def audit_bundle(
    source: Path | bytes | Bundle,
    trust: TrustStore,
    *,
    device: str = "local",
    label: str | None = None,
    now: datetime | None = None,
    warn_within: timedelta = timedelta(days=30),
    current: bool = False,
    provenance: ProvenancePolicy | None = None,
) -> AuditRow:
    """Check one bundle (file or bytes) the way an auditor can: no device key, no decryption.

    With ``provenance``, the bundle's build attestation must verify and meet that policy.
    """
    where = label or str(source if isinstance(source, Path) else "<bytes>")
    reader: StreamedRead | None = None
    try:
        # Header and signatures before the payload; a file's payload is hashed as it streams
        # past, never held whole (a hostile 3 GiB file costs one piece of memory).
        if isinstance(source, Bundle):
            bundle = source
        elif isinstance(source, Path):
            reader = StreamedRead(trust=trust)
            bundle = stream_file(source, reader)
        else:
            bundle = read_bundle(source, trust=trust)
    except EdgeSDKError as exc:
        parsed = reader.parsed if reader is not None else None
        return _error_row(device, where, exc, parsed, current)
    manifest = bundle.manifest
    base = {
        "device": device,
        "path": where,
        "name": manifest.name,
        "version": manifest.version,
        "digest": bundle.digest,
        "signers": tuple(s.key_id for s in bundle.signatures),
        "expires": manifest.expires,
        "format_version": bundle.format_version,
        "current": current,
    }
    try:
        result = check_bundle(bundle, Policy(trust, now=now))
    except EdgeSDKError as exc:
        return AuditRow(status="error", reason=exc.message, kind=exc.kind, **base)  # type: ignore[arg-type]
    verdict = ""
    if provenance is not None:
        from edge_sdk.format.attestation import verified_attestation

        try:
            provenance.check(verified_attestation(manifest, trust).provenance)
        except EdgeSDKError as exc:
            return AuditRow(status="error", reason=exc.message, kind=exc.kind,
                            provenance="rejected", **base)  # type: ignore[arg-type]  # fmt: skip
        policy = Path(provenance.source).name if provenance.source else ""
        verdict = f"verified, meets {policy}" if policy else "verified"
    now = now or datetime.now(timezone.utc)
    warnings = [w for w in result.warnings if not w.startswith("expires soon")]
    expires = manifest.expires_at
    if expires is not None and expires - now < warn_within:
        warnings.insert(0, f"expires within {warn_within.days} days ({manifest.expires})")
    status = "warning" if warnings else "ok"
    return AuditRow(status=status, reason="; ".join(warnings), provenance=verdict, **base)  # type: ignore[arg-type]


def _error_row(
    device: str, where: str, exc: EdgeSDKError, parsed: Bundle | None, current: bool
) -> AuditRow:
    """A row for a bundle refused before it was fully read (with what its header said, if any)."""
    if parsed is None:
        return AuditRow(device, where, "error", exc.message, exc.kind, current=current)
    m = parsed.manifest
    return AuditRow(device, where, "error", exc.message, exc.kind, m.name, m.version, parsed.digest,
                    tuple(s.key_id for s in parsed.signatures), m.expires, parsed.format_version,
                    current)  # fmt: skip


def audit_paths(
    paths: Sequence[str | os.PathLike[str]],
    trust: TrustStore,
    *,
    now: datetime | None = None,
    warn_within: timedelta = timedelta(days=30),
    progress: Callable[[int], None] = lambda _n: None,
    provenance: ProvenancePolicy | None = None,
) -> list[AuditRow]:
    """Audit every bundle under local ``paths``; ``progress`` is told how many are done."""
    rows = []
    for count, path in enumerate(find_bundles(paths), start=1):
        rows.append(
            audit_bundle(path, trust, now=now, warn_within=warn_within, current=_is_current(path),
                         provenance=provenance)
        )  # fmt: skip
        progress(count)
    return rows


def summarize(rows: Sequence[AuditRow]) -> dict[str, int]:
    """Counts by status, plus the total."""
    counts = {status: 0 for status in STATUSES}
    for row in rows:
        counts[row.status] += 1
    return {"total": len(rows), **counts}


def failed(rows: Sequence[AuditRow], fail_on: str) -> bool:
    """Whether the audit fails at the chosen level (``error``, or ``warning`` for stricter)."""
    if fail_on not in ("error", "warning"):
        raise UsageError(f"--fail-on must be 'error' or 'warning', not {fail_on!r}")
    bad = {"error"} if fail_on == "error" else {"error", "warning"}
    return any(row.status in bad for row in rows)


def to_csv(rows: Sequence[AuditRow]) -> str:
    """The rows as CSV with a header (signers joined by spaces)."""
    buffer = io.StringIO()
    fields = list(AuditRow.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        data = row.to_dict()
        data["signers"] = " ".join(row.signers)
        writer.writerow({key: _csv_cell(value) for key, value in data.items()})
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    """A CSV cell that can neither drive a terminal nor run as a spreadsheet formula: control
    characters escaped, and a leading ``= + - @`` (or tab/CR) quoted."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = escape_text(str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def audit_targets(
    targets: Sequence[Any],
    trust: TrustStore,
    *,
    now: datetime | None = None,
    warn_within: timedelta = timedelta(days=30),
    progress: Callable[[int], None] = lambda _n: None,
    provenance: ProvenancePolicy | None = None,
) -> list[AuditRow]:
    """Audit every release on deploy targets (directories or ``ssh://``), reusing the deploy
    transport: ``<root>/<name>/releases/*.edgepkg``, with ``current`` read from the link.

    A target that cannot be reached becomes one ``error`` row naming it; the others go on.
    """
    import asyncio

    from .transports import RetryPolicy, with_session

    rows: list[AuditRow] = []
    for target in targets:

        async def scan(session: Any, target: Any = target) -> list[AuditRow]:
            found: list[AuditRow] = []
            for entry in sorted(await session.listdir(""), key=lambda e: e.name):
                releases = f"{entry.name}/releases"
                if entry.kind != "dir" or await session.stat(releases) is None:
                    continue
                current = await session.readlink(f"{entry.name}/current")
                for item in sorted(await session.listdir(releases), key=lambda e: e.name):
                    if item.kind != "file" or not item.name.endswith(BUNDLE_SUFFIX):
                        continue
                    rel = f"{releases}/{item.name}"
                    reader = StreamedRead(item.size, trust=trust)
                    try:
                        while (wanted := reader.request()) is not None:
                            reader.feed(await session.read(rel, *wanted))
                        source = reader.result()
                    except EdgeSDKError as exc:
                        found.append(_error_row(target.label, rel, exc, reader.parsed,
                                                current == f"releases/{item.name}"))  # fmt: skip
                        continue
                    found.append(
                        audit_bundle(
                            source, trust, device=target.label, label=rel, now=now,
                            warn_within=warn_within, current=current == f"releases/{item.name}",
                            provenance=provenance,
                        )
                    )  # fmt: skip
            return found

        try:
            rows.extend(asyncio.run(with_session(target, scan, RetryPolicy())))
        except EdgeSDKError as exc:
            rows.append(AuditRow(target.label, target.uri, "error", exc.message, exc.kind))
        progress(len(rows))
    return rows
