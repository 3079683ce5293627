"""The benchmark harness: ``python tools/bench.py [SUITE ...]`` prints markdown tables.

Suites: ``crypto`` (verify + decrypt throughput and peak memory on a 100 MB payload),
``quant`` (size / latency / accuracy per quantization mode), ``runtime`` (SDK overhead vs raw
LiteRT, secure load vs plain load, import time, workers), ``audit`` (1,000 bundles vs raw read +
hash), ``deploy`` (tools/bench_deploy.py), ``keys`` (tools/bench_keys.py: unwrap and signing with
keys in SoftHSM2 and a swtpm against file keys), ``startup`` (tools/bench_startup.py: a fresh
process to its first result, plain LiteRT against edge-sdk, per model and cipher suite, also with
the CPU's SHA/AES instructions hidden from OpenSSL; in-process reloads; import cost).
Every figure that is a claim is a ratio measured side by side in one run, because this machine is
shared and absolute times drift. The README's tables were made with the commands it names.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tools.bench_common import best_of, table  # noqa: E402

# -- crypto: verify + decrypt throughput, peak RSS ---------------------------------------------------

_RSS_CHILD = r"""
import json, sys, resource
from pathlib import Path
from edge_sdk.keys import TrustStore, load_private_key, load_public_key
from edge_sdk.format.verify import open_bundle
def rss(field):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
bundle, signer_pub, device_key = sys.argv[1:4]
trust = TrustStore.from_keys([load_public_key(signer_pub)])
key = load_private_key(device_key)
before = rss('VmRSS:')
opened = open_bundle(bundle, trust, key)
print(json.dumps({"before": before, "peak": rss('VmHWM:'), "size": len(opened.model_bytes)}))
"""


def crypto_suite(size_mb: int = 100) -> None:
    from edge_sdk.format.bundle import read_bundle, save_bundle
    from edge_sdk.format.manifest import Target
    from edge_sdk.format.verify import decrypt_model, open_bundle, verify_bundle
    from edge_sdk.host.sealing import seal_bundle
    from edge_sdk.keys import TrustStore, generate_key, save_keypair

    signer, device = generate_key("signing"), generate_key("device")
    trust = TrustStore.from_keys([signer.public])
    model = os.urandom(size_mb * 1_000_000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _, pub = save_keypair(signer, Path(tmp) / "signer")
        key_path, _ = save_keypair(device, Path(tmp) / "device")
        for aead in ("aes-256-gcm", "chacha20-poly1305"):
            path = Path(tmp) / f"{aead}.edgepkg"
            save_bundle(
                seal_bundle(
                    model,
                    name="bench",
                    version=1,
                    target=Target("x86_64"),
                    signers=[signer],
                    recipients=[device.public],
                    aead=aead,
                ),
                path,
            )
            read_s = best_of(lambda p=path: p.read_bytes())  # type: ignore[misc]
            verify_s = best_of(lambda p=path: verify_bundle(read_bundle(p), trust))  # type: ignore[misc]
            open_s = best_of(lambda p=path: open_bundle(p, trust, device))  # type: ignore[misc]
            bundle = read_bundle(path)
            decrypt_s = best_of(lambda b=bundle: decrypt_model(b, device))  # type: ignore[misc]
            child = subprocess.run(
                [sys.executable, "-c", _RSS_CHILD, str(path), str(pub), str(key_path)],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            )
            rss = json.loads(child.stdout)
            growth = (rss["peak"] - rss["before"]) / len(model)
            mb = len(model) / 1e6
            rows.append(
                [
                    aead,
                    f"{mb / read_s:,.0f}",
                    f"{mb / verify_s:,.0f}",
                    f"{mb / decrypt_s:,.0f}",
                    f"{mb / open_s:,.0f}",
                    f"{open_s / read_s:.2f}",
                    f"{growth:.2f}",
                ]
            )
    table(
        f"Verify + decrypt, {size_mb} MB payload (MB/s; best of 5)",
        [
            "AEAD",
            "read file",
            "verify (auditor)",
            "unwrap+decrypt+hash",
            "full open",
            "open ÷ read",
            "peak RSS growth ÷ payload",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "suites",
        nargs="*",
        default=["crypto"],
        help="crypto, quant, runtime, audit, deploy, keys, startup, all",
    )
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=15, help="startup: interleaved rounds")
    parser.add_argument("--work", type=Path, help="startup: keep its models and bundles here")
    args = parser.parse_args()
    suites = (
        ["crypto", "quant", "runtime", "audit", "deploy"] if "all" in args.suites else args.suites
    )
    print(f"edge-sdk benchmarks on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    for suite in suites:
        if suite == "crypto":
            crypto_suite(args.size_mb)
        elif suite == "quant":
            from tools.bench_quant import quant_suite

            quant_suite()
        elif suite == "runtime":
            from tools.bench_runtime import runtime_suite

            runtime_suite()
        elif suite == "audit":
            from tools.bench_audit import audit_suite

            audit_suite()
        elif suite == "deploy":
            subprocess.run([sys.executable, str(REPO / "tools" / "bench_deploy.py")], check=True)
        elif suite == "keys":
            from tools.bench_keys import keys_suite

            keys_suite()
        elif suite == "startup":
            from tools.bench_startup import startup_suite

            startup_suite(args.rounds, args.work)
        else:
            parser.error(f"unknown suite {suite!r}")


if __name__ == "__main__":
    main()
