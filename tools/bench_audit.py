"""Audit throughput: ``python tools/bench.py audit``.

1,000 small signed and encrypted bundles in a directory tree; ``audit_paths`` over them vs the raw
cost of reading and SHA-256-hashing the same files (goal ≤ 1.5×), side by side, best of 5.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.bench_common import best_of, table  # noqa: E402

COUNT = 1000
MODEL_BYTES = 64 * 1024


def audit_suite() -> None:
    from edge_sdk.fleet.audit import audit_paths
    from edge_sdk.format.bundle import bundle_to_bytes
    from edge_sdk.format.manifest import Target
    from edge_sdk.host.sealing import seal_bundle
    from edge_sdk.keys import TrustStore, generate_key

    signer, device = generate_key("signing"), generate_key("device")
    trust = TrustStore.from_keys([signer.public])
    with tempfile.TemporaryDirectory() as tmp_dir:
        root = Path(tmp_dir)
        for i in range(COUNT):
            raw = bundle_to_bytes(seal_bundle(os.urandom(MODEL_BYTES), name=f"m{i % 50}", version=i,
                                              target=Target("x86_64"), signers=[signer],
                                              recipients=[device.public]))  # fmt: skip
            path = root / f"board-{i // 50}" / f"m{i % 50}" / "releases" / f"{i}.edgepkg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
        files = sorted(root.rglob("*.edgepkg"))

        def raw_read_hash() -> None:
            for path in files:
                hashlib.sha256(path.read_bytes()).hexdigest()

        def audit() -> None:
            rows = audit_paths([root], trust)
            assert all(r.status == "ok" for r in rows) and len(rows) == COUNT

        raw_s, audit_s = best_of(raw_read_hash), best_of(audit)
        total_mb = sum(p.stat().st_size for p in files) / 1e6
    table(
        f"Audit: {COUNT:,} bundles of {MODEL_BYTES // 1024} KiB ({total_mb:.0f} MB), best of 5",
        ["read + SHA-256 only", "edge-sdk audit", "audit ÷ raw", "bundles / s"],
        [
            [
                f"{raw_s * 1000:.0f} ms",
                f"{audit_s * 1000:.0f} ms",
                f"{audit_s / raw_s:.2f}",
                f"{COUNT / audit_s:,.0f}",
            ]
        ],
    )


if __name__ == "__main__":
    audit_suite()
