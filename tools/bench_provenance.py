"""What provenance costs: bytes per bundle, the model-signing check, attesting, and auditing.

    python tools/bench_provenance.py

Measured side by side in one run, on the demo's digits CNN (trained once, cached like the tests):
the attestation's size per publisher key type, `package`'s provenance steps (snapshot + model-signing
verification, and attest = re-hash inputs + build + sign) next to a whole `package` run, and an
audit of many bundles with and without `--require-provenance`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.bench_common import best_of

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    from edge_sdk.fleet.audit import audit_paths
    from edge_sdk.fleet.provenance_policy import ProvenancePolicy
    from edge_sdk.format.strict_json import canonical_bytes
    from edge_sdk.host.model_signature import ModelSignatureOptions
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.host.provenance import prepare_sources
    from edge_sdk.keys import TrustStore, generate_key
    from edge_sdk.profiles import load_profile
    from tests import models
    from tests.provenance_kit import model_signing_keypair, sign_model

    work = Path(tempfile.mkdtemp(prefix="bench-provenance-"))
    try:
        model = work / "digits.keras"
        shutil.copyfile(models.digits_cnn(), model)
        evaluation = models.digits_npz(work, split="test")
        key, pub = model_signing_keypair(work)
        sig = sign_model(model, key, work / "digits.sig")
        check = ModelSignatureOptions(sig, pub)
        profile = load_profile("x86_64")

        print("| publisher key | bundle (digits CNN, dynamic) | attestation in it | share |")
        print("|---|---:|---:|---:|")
        results = {}
        for alg in ("ed25519", "ecdsa-p256", "ed25519+mldsa65"):
            signer = generate_key("signing", alg)
            options = PackageOptions(name="digits", version=1, quantize="dynamic",
                                     evaluation=evaluation, model_signature=check)  # fmt: skip
            start = time.perf_counter()
            result = package_model(model, work / f"{alg}.edgepkg", profile, options, [signer])
            results[alg] = (result, time.perf_counter() - start, signer)
            size = len(canonical_bytes(result.bundle.manifest.reports["provenance"]))
            print(f"| {alg} | {result.size:,} B | {size:,} B | {size / result.size:.1%} |")

        result, _, signer = results["ed25519"]
        # The first run also imports TensorFlow; the others show what a package run costs.
        package_s = min(t for _, t, _ in list(results.values())[1:])
        options = PackageOptions(name="digits", version=1, quantize="dynamic",
                                 evaluation=evaluation, model_signature=check)  # fmt: skip

        def prepare_only() -> None:
            with prepare_sources(model, options, [signer]):
                pass

        def prepare_unsigned() -> None:
            with prepare_sources(model, PackageOptions(name="d", version=1, evaluation=evaluation),
                                 [signer]):  # fmt: skip
                pass

        with prepare_sources(model, options, [signer]) as sources:
            attest_s = best_of(lambda: sources.attest(result.bundle.manifest), 20)
        verify_s = best_of(prepare_only, 5)
        hash_s = best_of(prepare_unsigned, 5)
        print()
        print(f"model {model.stat().st_size:,} B, evaluation data {evaluation.stat().st_size:,} B")
        print("| step | ms | share of one `package` run |")
        print("|---|---:|---:|")
        print(f"| whole `package` (convert, gate, seal) | {package_s * 1000:.0f} | 100% |")
        python = [sys.executable, "-c"]
        bare = best_of(lambda: subprocess.run([*python, "pass"], check=True), 3)
        loaded = best_of(lambda: subprocess.run([*python, "import model_signing"], check=True), 3)
        importing = loaded - bare
        print(f"| importing model-signing (once per run) | {importing * 1000:.0f} | "
              f"{importing / package_s:.1%} |")  # fmt: skip
        print(f"| hash inputs (no signature) | {hash_s * 1000:.1f} | {hash_s / package_s:.2%} |")
        print(
            f"| snapshot + model-signing verify + hash | {verify_s * 1000:.1f} | {verify_s / package_s:.2%} |"
        )
        print(
            f"| attest (re-hash, statement, Ed25519 sign) | {attest_s * 1000:.1f} | {attest_s / package_s:.2%} |"
        )

        fleet = work / "fleet"
        fleet.mkdir()
        for i in range(200):
            shutil.copyfile(result.path, fleet / f"{i}.edgepkg")
        trust = TrustStore.from_keys([signer.public])
        plain = best_of(lambda: audit_paths([fleet], trust), 3)
        with_provenance = best_of(
            lambda: audit_paths([fleet], trust, provenance=ProvenancePolicy()), 3
        )
        print()
        print("| audit of 200 bundles | ms | per bundle | × plain |")
        print("|---|---:|---:|---:|")
        print(f"| plain | {plain * 1000:.0f} | {plain / 200 * 1e6:.0f} µs | 1.00 |")
        print(f"| --require-provenance | {with_provenance * 1000:.0f} | "
              f"{with_provenance / 200 * 1e6:.0f} µs | {with_provenance / plain:.2f} |")  # fmt: skip
        print(f"\n(best of N runs; python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
