"""What a hostile, unsigned header costs a device before any signature is checked.

Everything the reader does before the signature check — the size caps, the strict JSON parse of
the envelope and the manifest, the schema checks — runs on bytes anyone can write. This tool
builds the most expensive headers it knows (each within the reader's size caps) around a real
signed manifest, opens each in a fresh process with a trust store that does not hold the signer,
and reports the peak RSS above the process's baseline (Linux: VmHWM after a reset) and the wall time of ``read_bundle``.

    python tools/bench_hostile_header.py            # one line per hostile header

Figures are for this machine only; compare runs made side by side (before/after a change).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ENVELOPE_CAP = 8 * 1024 * 1024
MANIFEST_CAP = 256 * 1024


def _fill(prefix: bytes, item: bytes, suffix: bytes, cap: int) -> bytes:
    """``prefix item,item,…,item suffix`` as large as fits in ``cap`` bytes."""
    room = cap - len(prefix) - len(suffix)
    count = max(1, (room + 1) // (len(item) + 1))
    return prefix + b",".join([item] * count) + suffix


def hostile_envelopes() -> dict[str, bytes]:
    """Envelopes at the size cap whose parse is as expensive as we know how to make it."""
    return {
        "envelope of {} (8 MiB)": _fill(b'{"recipients":[', b"{}", b'],"signatures":[]}', ENVELOPE_CAP),
        "envelope of [] (8 MiB)": _fill(b'{"recipients":[', b"[]", b'],"signatures":[]}', ENVELOPE_CAP),
        'envelope of "" (8 MiB)': _fill(b'{"recipients":[', b'""', b'],"signatures":[]}', ENVELOPE_CAP),
        "envelope of 0 (8 MiB)": _fill(b'{"recipients":[', b"0", b'],"signatures":[]}', ENVELOPE_CAP),
        "envelope of 1.5 (8 MiB)": _fill(b'{"recipients":[', b"1.5", b'],"signatures":[]}', ENVELOPE_CAP),
        "envelope nested [[[ (8 MiB)": b"[" * ENVELOPE_CAP,
        "envelope, one 8 MiB string + emoji": b'{"recipients":[],"signatures":["'
        + b"A" * (ENVELOPE_CAP - 64) + "\U0001f600".encode() + b'"]}',
        "envelope, 4096 X-Wing recipients (7 MB)": _valid_recipients(),
    }  # fmt: skip


def _valid_recipients() -> bytes:
    # 4096 ML-KEM-768+X25519 entries (1,168-byte enc): the largest envelope a real fleet makes.
    entry = {"enc": "A" * 1560, "keyid": "0" * 64, "kem": "mlkem768-x25519"}
    recs = [dict(entry, keyid=f"{i:064x}") for i in range(4096)]
    raw = json.dumps({"recipients": recs, "signatures": []}, separators=(",", ":"), sort_keys=True)
    return raw.encode()


def hostile_manifests(manifest: dict[str, object]) -> dict[str, bytes]:
    """Manifests at the size cap whose ``reports`` make the parse as expensive as possible."""
    base = json.dumps(dict(manifest, reports={"x": []}), separators=(",", ":"), sort_keys=True)
    head, tail = base.encode().split(b'"x":[]', 1)
    return {
        "manifest reports of {} (256 KiB)": _fill(head + b'"x":[', b"{}", b"]" + tail, MANIFEST_CAP),
        'manifest reports of "" (256 KiB)': _fill(head + b'"x":[', b'""', b"]" + tail, MANIFEST_CAP),
    }  # fmt: skip


def _bundle(manifest: bytes, envelope: bytes, payload: bytes) -> bytes:
    return (
        b"EDGEPKG\n"
        + struct.pack(">HHI", 1, 0, len(manifest))
        + manifest
        + struct.pack(">I", len(envelope))
        + envelope
        + struct.pack(">Q", len(payload))
        + payload
    )


_CHILD = r"""
import sys, time
from pathlib import Path
from edge_sdk.format.bundle import read_bundle
from edge_sdk.errors import EdgeSDKError
from edge_sdk.keys import TrustStore, generate_key

def rss_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))

raw = Path(sys.argv[1]).read_bytes()
trust = TrustStore.from_keys([generate_key("signing").public])
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the peak-RSS mark: measure read_bundle alone
base = rss_kib("VmRSS:")
start = time.perf_counter()
try:
    read_bundle(raw, trust=trust)
    outcome = "accepted?!"
except EdgeSDKError as exc:
    outcome = f"{type(exc).__name__}: {exc.message[:70]}"
elapsed = time.perf_counter() - start
peak = rss_kib("VmHWM:")
print(f"{(peak - base) / 1024:8.1f} MiB {elapsed * 1000:8.1f} ms  {outcome}")
"""


def main() -> None:
    from edge_sdk.format.bundle import bundle_to_bytes
    from edge_sdk.format.manifest import Target
    from edge_sdk.host.sealing import seal_bundle
    from edge_sdk.keys import generate_key

    key = generate_key("signing")
    good = seal_bundle(b"\0TFL3" * 100, name="m", version=1, target=Target("x86_64"), signers=[key])
    raw = bundle_to_bytes(good)
    (m_len,) = struct.unpack(">I", raw[12:16])
    manifest = raw[16 : 16 + m_len]
    payload = bytes(good.payload)
    cases = {name: _bundle(manifest, env, payload) for name, env in hostile_envelopes().items()}
    env = raw[20 + m_len : 20 + m_len + struct.unpack(">I", raw[16 + m_len : 20 + m_len])[0]]
    for name, man in hostile_manifests(json.loads(manifest)).items():
        cases[name] = _bundle(man, env, payload)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"edge-sdk-bench-{os.getpid()}.edgepkg"
    try:
        for name, data in cases.items():
            work.write_bytes(data)
            done = subprocess.run(
                [sys.executable, "-c", _CHILD, str(work)],
                capture_output=True,
                text=True,
                check=False,
                cwd=REPO,
            )
            line = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
            print(f"{name:42s} {line}")
    finally:
        work.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
