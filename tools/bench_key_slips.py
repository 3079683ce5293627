"""Benchmark: publishing one release to N devices with key slips, against in-bundle recipients.

For each fleet size it writes N device public keys (X25519) as ``.pub`` files, then times what
``edge-sdk slips issue`` does — read the bundle, unwrap its content key with the escrow key, load
the N keys, and write one signed slip per device into a new directory — and reports what one
device downloads beyond the payload: its slip, against the envelope of a bundle that lists every
device (possible only up to 4,096). The payload is encrypted once whatever N is, so the time per
device should stay flat (linear growth).

    .venv/bin/python tools/bench_key_slips.py [--devices 1000 10000 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_sdk.fleet.key_slips import content_key_of, load_device_keys, write_key_slips
from edge_sdk.format.bundle import bundle_to_bytes, read_bundle, save_bundle
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import generate_key
from tools.bench import table

MODEL = os.urandom(4 * 1024 * 1024)  # the payload size does not enter the slip cost
TARGET = Target("x86_64", "ai-edge-litert", "2.3.0", ("x86_64",))


def _write_fleet(directory: Path, count: int) -> float:
    """``count`` device key pairs; the public halves as .pub files. Returns the seconds taken."""
    start = time.perf_counter()
    directory.mkdir()
    for i in range(count):
        key = generate_key("device", "x25519")
        (directory / f"dev-{i:06d}.pub").write_bytes(key.public.to_pem())
    return time.perf_counter() - start


def _du(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args()
    signer = generate_key("signing", "ed25519")
    escrow = generate_key("device", "x25519")
    work = Path(tempfile.mkdtemp(prefix="bench-slips-"))
    rows, detail = [], []
    try:
        bundle_path = work / "release.edgepkg"
        seal_start = time.perf_counter()
        save_bundle(seal_bundle(MODEL, name="fleet", version=1, target=TARGET, signers=[signer],
                                recipients=[escrow.public]), bundle_path)  # fmt: skip
        seal_seconds = time.perf_counter() - seal_start
        # What a device downloads beyond the payload when every device is an in-bundle recipient.
        capped = [generate_key("device", "x25519").public for _ in range(4096)]
        full = seal_bundle(b"\0" * 1024, name="fleet", version=1, target=TARGET,
                           signers=[signer], recipients=capped)  # fmt: skip
        full_overhead = len(bundle_to_bytes(full)) - full.manifest.payload.size
        for count in args.devices:
            fleet = work / f"fleet-{count}"
            keygen = _write_fleet(fleet, count)
            out = work / f"slips-{count}"
            start = time.perf_counter()
            bundle = read_bundle(bundle_path)
            key = content_key_of(bundle, escrow)
            devices = load_device_keys([fleet])
            loaded = time.perf_counter()
            report = write_key_slips(out, bundle, key, devices, [signer])
            done = time.perf_counter()
            total = done - start
            rows.append([
                f"{count:,}", f"{total:.1f} s", f"{total / count * 1e6:.0f} µs",
                f"{loaded - start:.1f} s", f"{done - loaded:.1f} s",
                f"{report.largest} B", f"{report.total_bytes / 1e6:.1f} MB",
                f"{_du(out) / 1e6:.0f} MB",
            ])  # fmt: skip
            detail.append(f"{count:,} device keys generated and written in {keygen:.1f} s (setup)")
            shutil.rmtree(fleet)
            shutil.rmtree(out)
        table(
            "Publishing one release with key slips (X25519 devices, Ed25519 publisher, one core)",
            ["devices", "publish", "per device", "load keys", "issue + write", "slip (device "
             "download)", "slips, bytes", "slips, on disk"],
            rows,
        )  # fmt: skip
        print()
        print(f"* payload encrypted once: sealing the 4 MiB release took {seal_seconds:.2f} s, "
              "whatever the fleet size")  # fmt: skip
        print(f"* in-bundle recipients instead: {full_overhead:,} B of header per download at "
              f"the 4,096-device cap (every device's entry)")  # fmt: skip
        for line in detail:
            print(f"* {line}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
