"""Keys in hardware: content-key unwrap per device key location, signing per signing key location.

``python tools/bench.py keys`` starts a SoftHSM2 token and a swtpm (tests/hardware.py, as the tests
do), then times, side by side in one run:

* unwrap of one recipient entry (what a device does once per bundle load) with a file key
  (X25519 and P-256), a P-256 key in SoftHSM (PKCS#11) and a P-256 key in the swtpm — persistent
  handle and TSS2 key file;
* signing one manifest (what a publisher does once per bundle) with file keys and with keys inside
  SoftHSM (ECDSA P-256, Ed25519).

Each figure is the median of ``--runs`` calls through the SDK's public path (so a token figure
includes finding the token, a session and the login, which the SDK does per operation).
Needs the Debian packages softhsm2, swtpm, swtpm-tools, tpm2-tools and the hsm and tpm extras.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.bench_common import table  # noqa: E402


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm: module loaded, pages touched
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def keys_suite(runs: int = 50) -> None:
    from edge_sdk.format.encryption import unwrap_content_key, wrap_content_key
    from edge_sdk.format.signing import sign_manifest
    from edge_sdk.keys import generate_key, load_private_key
    from edge_sdk.keys.key_uri import Pkcs11Uri, Tpm2Reference
    from edge_sdk.keys.pkcs11 import generate_pkcs11_key
    from edge_sdk.keys.tpm import generate_tpm_key
    from tests.hardware import SoftHsm, SwTpm

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hsm = SoftHsm.start(tmp / "hsm")
        with SwTpm.start(tmp / "tpm") as tpm:
            device_uri = hsm.uri("bench-device")
            generate_pkcs11_key(Pkcs11Uri.parse(device_uri), kind="device", alg="p256",
                                out=tmp / "pkcs11")  # fmt: skip
            handle_ref = f"tpm2:handle=0x81010002?tcti={tpm.tcti}"
            file_ref = f"tpm2:file={tmp / 'device.tss'}?tcti={tpm.tcti}"
            generate_tpm_key(Tpm2Reference.parse(handle_ref), out=tmp / "tpm-handle")
            generate_tpm_key(Tpm2Reference.parse(file_ref), out=tmp / "tpm-file")
            devices = [
                ("file key, X25519", generate_key("device", "x25519")),
                ("file key, P-256", generate_key("device", "p256")),
                ("SoftHSM2 (PKCS#11), P-256", load_private_key(device_uri, kind="device")),
                ("swtpm, persistent handle, P-256", load_private_key(handle_ref, kind="device")),
                ("swtpm, TSS2 key file, P-256", load_private_key(file_ref, kind="device")),
            ]
            digest = hashlib.sha256(b"manifest").digest()
            rows = []
            baseline = None
            for label, key in devices:
                cek = os.urandom(32)
                entries = wrap_content_key(cek, digest, [key.public])
                assert unwrap_content_key(entries, digest, key) == cek
                ms = _median_ms(lambda e=entries, k=key: unwrap_content_key(e, digest, k), runs)
                baseline = baseline or ms
                rows.append([label, f"{ms:.3f}", f"{ms / baseline:.0f}×"])
            table(f"Content-key unwrap, one recipient entry (median of {runs})",
                  ["device key", "ms", "÷ file X25519"], rows)  # fmt: skip

            signers = [
                ("file key, Ed25519", generate_key("signing", "ed25519")),
                ("file key, ECDSA P-256", generate_key("signing", "ecdsa-p256")),
            ]
            for alg in ("ecdsa-p256", "ed25519"):
                uri = hsm.uri(f"bench-{alg}")
                generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="signing", alg=alg,
                                    out=tmp / f"sign-{alg}")  # fmt: skip
                name = "ECDSA P-256" if alg == "ecdsa-p256" else "Ed25519"
                signers.append(
                    (f"SoftHSM2 (PKCS#11), {name}", load_private_key(uri, kind="signing"))
                )
            manifest = os.urandom(2048)
            rows = []
            baseline = None
            for label, key in signers:
                ms = _median_ms(lambda k=key: sign_manifest(manifest, [k]), runs)
                baseline = baseline or ms
                rows.append([label, f"{ms:.3f}", f"{ms / baseline:.0f}×"])
            table(f"Signing a 2 KiB manifest (median of {runs})",
                  ["signing key", "ms", "÷ file Ed25519"], rows)  # fmt: skip
        hsm.stop()


if __name__ == "__main__":
    keys_suite()
