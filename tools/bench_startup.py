"""Start-up to the first result, plain LiteRT against edge-sdk: ``python tools/bench.py startup``.

What a user waits for is a fresh process's first result. Both sides run in fresh processes with
their bytecode cached and their imports done before the clock starts, one interpreter thread:

* **plain** — read the ``.tflite``, ``Interpreter(model_content=…)``, allocate, first ``invoke``;
* **secure** — ``edge_sdk.load(bundle, trust=…, device_key=…, state_dir=…)`` with paths, as the
  README's quickstart writes it, and the first ``predict``; the state directory already holds
  this version (a restart, not a first install).

Models: ``keras.applications.MobileNetV2(weights=None)`` at 224×224 (nothing can be downloaded),
float32 and int8 (full-integer, float I/O), each packaged for the x86_64 profile with its
defaults, once per AEAD, and once more with zstd kept whatever it saves (to show what
decompression costs where a bundle keeps it). Runs of all variants are interleaved, in a new random
order each round, and every figure is a median; ratios are taken within the run.

Tables:

1. fresh process → first result, this machine (SHA-NI, AES-NI, VAES);
2. the same on a board without SHA/AES instructions, emulated by masking the CPU capabilities
   OpenSSL sees (``OPENSSL_ia32cap``), with the ChaCha20 suite the rpi4 profile uses — and which
   libraries honour the mask (measured, not assumed);
3. in-process reload (what ``ModelWatcher`` does) against a plain build, with the budget
   plain build + model size ÷ 1.5 GB/s + 3 ms;
4. import cost, ``python -c "import edge_sdk; edge_sdk.load"`` cold, next to what plain pays.

``--baseline PATH`` adds a column measured with another checkout's ``edge_sdk`` (e.g. the commit
before a change) on the same bundles, side by side in the same run.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.bench_common import table  # noqa: E402

#: CPU capabilities a Cortex-A72 (Raspberry Pi 4) lacks, cleared for OpenSSL's x86 code paths.
#: Word 1 is CPUID.1 (EDX low, ECX high): PCLMULQDQ (ECX 1), AES-NI (ECX 25), AVX (ECX 28).
#: Word 2 is CPUID.7.0 (EBX low, ECX high): AVX2 (EBX 5), AVX512F/DQ/IFMA/BW/VL (EBX 16, 17, 21,
#: 30, 31), SHA (EBX 29), VAES and VPCLMULQDQ (ECX 9, 10). What is left is SSE2–SSE4 and SSSE3:
#: 128-bit SIMD without AES, SHA or carry-less multiply, as the A72's NEON without its crypto
#: extensions (which BCM2711 does not have).
NO_CRYPTO_EXTENSIONS = "~0x1200000200000000:~0x00000600E0230020"
IA32CAP_ENV = "OPENSSL_ia32cap"

_CHILD = r"""
import json, os, sys, time
from pathlib import Path
spec = json.loads(sys.argv[1])
def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import numpy as np
import ai_edge_litert.interpreter as litert  # both sides: the runtime is imported before the clock
if spec["kind"] != "plain":
    import edge_sdk
    edge_sdk.load  # the device API (edge_sdk.device.runtime and what it imports)
if spec["kind"] == "open":
    from edge_sdk.keys import TrustStore, load_private_key
    from edge_sdk.format.verify import open_bundle
x = np.random.default_rng(0).random(spec["shape"], dtype=np.float32)
before = rss("VmRSS:")
start = time.perf_counter()
steps = {}
if spec["kind"] == "plain":
    with open(spec["model"], "rb") as handle:
        data = handle.read()
    steps["read"] = time.perf_counter()
    interp = litert.Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    steps["build"] = time.perf_counter()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    steps["invoke"] = time.perf_counter()
elif spec["kind"] == "secure":
    model = edge_sdk.load(spec["bundle"], trust=spec["trust"], device_key=spec["key"],
                          state_dir=spec["state"], profile="x86_64", threads=1)
    y = model.predict(x)
else:  # the SDK alone: read, verify, decrypt, check (no interpreter), for its peak memory
    opened = open_bundle(spec["bundle"], TrustStore.load([spec["trust"]]), load_private_key(spec["key"]))
    y = np.frombuffer(opened.model_bytes[:64], np.uint8)
elapsed = time.perf_counter() - start
marks = [start, *steps.values()]
steps = {name: (marks[i + 1] - marks[i]) * 1000 for i, name in enumerate(steps)}
print(json.dumps({"ms": elapsed * 1000, "growth": rss("VmHWM:") - before, "sum": float(y.sum()),
                  "steps": steps}))
"""

_RELOAD_CHILD = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
import ai_edge_litert.interpreter as litert
import edge_sdk
kwargs = dict(trust=spec["trust"], device_key=spec["key"], state_dir=spec["state"], profile="x86_64",
              threads=1)
model = edge_sdk.load(spec["bundle"], **kwargs)  # serving: the first load is not a reload
plain, reload = [], []
for _ in range(spec["runs"]):
    start = time.perf_counter()
    with open(spec["model"], "rb") as handle:
        interp = litert.Interpreter(model_content=handle.read(), num_threads=1)
    interp.allocate_tensors()
    plain.append(time.perf_counter() - start)
    del interp
    start = time.perf_counter()
    new = edge_sdk.load(spec["bundle"], **kwargs)
    reload.append(time.perf_counter() - start)
    model.close()
    model = new
print(json.dumps({"plain": plain, "reload": reload}))
"""

_PROBE_CHILD = r"""
import hashlib, json, os, ssl, time
from cryptography.hazmat.backends.openssl import backend
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
data = os.urandom(32 * 1024 * 1024)
def rate(fn):
    best = min(_timed(fn) for _ in range(5))
    return len(data) / best / 1e6
def _timed(fn):
    start = time.perf_counter(); fn(); return time.perf_counter() - start
def chunked(cipher):
    nonce = bytes(12)
    def run():
        for at in range(0, len(data), 1 << 20):
            cipher.encrypt(nonce, data[at:at + (1 << 20)], b"")
    return run
print(json.dumps({
    "hashlib": [ssl.OPENSSL_VERSION, rate(lambda: hashlib.sha256(data).digest())],
    "aes": [backend.openssl_version_text(), rate(chunked(AESGCM(bytes(32))))],
    "chacha": [backend.openssl_version_text(), rate(chunked(ChaCha20Poly1305(bytes(32))))],
}))
"""

_PROFILE_CHILD = r"""
import functools, hashlib, json, sys, time
spec = json.loads(sys.argv[1])
import numpy as np
import ai_edge_litert.interpreter
import edge_sdk
from edge_sdk.device import audit_log, runtime
from edge_sdk.format import verify
spent = {}
def timed(owner, name, label):
    real = getattr(owner, name)
    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + (time.perf_counter() - start) * 1000
    setattr(owner, name, wrapper)
for owner, name, label in [
    (runtime, "as_trust", "keys, profile"), (runtime, "load_private_key", "keys, profile"),
    (runtime, "load_profile", "keys, profile"), (runtime, "open_verified", "open"),
    (verify, "open_payload", "payload pass"), (runtime, "Model", "interpreter"),
    (audit_log.AuditLog, "append", "audit record"),
]:
    timed(owner, name, label)
x = np.random.default_rng(0).random(spec["shape"], dtype=np.float32)
with open(spec["model"], "rb") as handle:
    data = handle.read()  # the same model, for the floor: one SHA-256 pass over it
start = time.perf_counter()
model = edge_sdk.load(spec["bundle"], trust=spec["trust"], device_key=spec["key"],
                      state_dir=spec["state"], profile="x86_64", threads=1)
loaded = time.perf_counter()
model.predict(x)
spent["total"] = (time.perf_counter() - start) * 1000
spent["first predict"] = (time.perf_counter() - loaded) * 1000
start = time.perf_counter()
hashlib.sha256(data).digest()
spent["one SHA-256 pass (floor)"] = (time.perf_counter() - start) * 1000
print(json.dumps(spent))
"""


@dataclass(frozen=True)
class Variant:
    """One bundle to open, and the plain ``.tflite`` it holds."""

    model: str  # "float32" or "int8"
    aead: str
    stored: str  # how the payload is stored: "as packaged (…)" or "zstd kept"
    bundle: Path
    plain: Path
    size: int
    compression: str


@dataclass(frozen=True)
class Fixtures:
    variants: tuple[Variant, ...]
    trust: Path
    key: Path
    state: Path


def _package(work: Path) -> Fixtures:
    """MobileNetV2 224×224, float32 and int8, packaged as ``edge-sdk package`` does (cached)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from edge_sdk.format.bundle import read_bundle, save_bundle
    from edge_sdk.format.verify import open_bundle
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.host.sealing import seal_bundle
    from edge_sdk.keys import TrustStore, generate_key, load_private_key, save_keypair
    from edge_sdk.profiles import load_profile
    from tools.bench_quant import upscale
    from tools.demo_model import digits_data

    if not (work / "signer.pub").exists():
        save_keypair(generate_key("signing"), work / "signer")
        save_keypair(generate_key("device"), work / "device")
    signer = load_private_key(work / "signer.key")
    device = load_private_key(work / "device.key")
    trust = TrustStore.load([work / "signer.pub"])
    sources = {"float32": work / "float32.tflite", "int8": work / "int8.tflite"}
    if not all(p.exists() for p in sources.values()):
        keras.utils.set_random_seed(0)
        net = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        # float32: exactly what `edge-sdk package model.keras --profile x86_64` converts.
        net.save(work / "mobilenetv2.keras")
        package_model(work / "mobilenetv2.keras", work / "convert.edgepkg", load_profile("x86_64"),
                      PackageOptions(name="convert", version=1), [signer], [device.public])  # fmt: skip
        float_bytes = open_bundle(work / "convert.edgepkg", trust, device).model_bytes
        sources["float32"].write_bytes(float_bytes)
        # int8: full-integer with float I/O (the x86_64 profile's io_dtype). Converted here, not by
        # `package --quantize int8`: an untrained network's int8 outputs fail package's accuracy
        # gate, and the gate is not what this measures; the ops and the size are the same.
        calib = upscale(digits_data()[0][:32], 224)
        converter = tf.lite.TFLiteConverter.from_keras_model(net)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        sources["int8"].write_bytes(converter.convert())
    variants = []
    for model, source in sources.items():
        for aead in ("aes-256-gcm", "chacha20-poly1305"):
            tag = f"{model}-{aead.split('-')[0]}"
            packaged = work / f"{tag}.edgepkg"
            if not packaged.exists():
                # The profile's defaults (compression level, chunk size); the AEAD set per row.
                package_model(source, packaged, load_profile("x86_64"),
                              PackageOptions(name=f"mnv2-{tag}", version=1, aead=aead),
                              [signer], [device.public])  # fmt: skip
            kept = work / f"{tag}-zstd.edgepkg"
            manifest = read_bundle(packaged).manifest
            if not kept.exists():
                save_bundle(
                    seal_bundle(source.read_bytes(), name=f"mnv2-{tag}-zstd", version=1,
                                target=manifest.target, signers=[signer], recipients=[device.public],
                                aead=aead, inputs=manifest.model.inputs, outputs=manifest.model.outputs,
                                reports=manifest.reports, compression="zstd", compression_level=10,
                                **_force_compression()),
                    kept,
                )  # fmt: skip
            size = source.stat().st_size
            stored = manifest.payload.compression
            variants.append(Variant(model, aead, f"as packaged ({stored})", packaged, source,
                                    size, stored))  # fmt: skip
            variants.append(Variant(model, aead, "zstd kept", kept, source, size, "zstd"))
    del np
    return Fixtures(tuple(variants), work / "signer.pub", work / "device.key", work / "state")


def _force_compression() -> dict[str, Any]:
    """``seal_bundle`` keeps zstd whatever it saves (older checkouts always did)."""
    import inspect

    from edge_sdk.host.sealing import seal_bundle

    params = inspect.signature(seal_bundle).parameters
    return {"min_compression_saving": 0.0} if "min_compression_saving" in params else {}


def _env(sdk: Path, mask: str | None) -> dict[str, str]:
    # Bytecode cached, as on a device: the first (untimed) run writes it, whatever this shell says.
    dropped = (IA32CAP_ENV, "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PYTHONPATH"] = str(sdk)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if mask is not None:
        env[IA32CAP_ENV] = mask
    return env


def _child(code: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), check=False,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {run.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def _spec(kind: str, variant: Variant, fx: Fixtures) -> dict[str, Any]:
    return {"kind": kind, "model": str(variant.plain), "bundle": str(variant.bundle),
            "trust": str(fx.trust), "key": str(fx.key), "state": str(fx.state),
            "shape": [1, 224, 224, 3]}  # fmt: skip


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fresh_process_table(
    fx: Fixtures,
    variants: Sequence[Variant],
    rounds: int,
    *,
    mask: str | None,
    baseline: Path | None,
    title: str,
) -> None:
    """Plain and secure start-ups in fresh processes; medians and paired ratios.

    Each round runs every variant once, in a new random order, as a group of back-to-back runs —
    plain, secure and (with ``baseline``) the other checkout's secure, themselves in random order.
    A ratio is taken within a group, so drift in the machine's load between groups cancels; the
    table gives the median of those ratios beside the median times.
    """
    env = _env(REPO, mask)
    base_env = _env(baseline, mask) if baseline is not None else None
    kinds = ["plain", "secure"] + (["baseline"] if base_env is not None else [])
    envs = {"plain": env, "secure": env, "baseline": base_env or env}

    def run(kind: str, variant: Variant) -> float:
        spec = _spec("plain" if kind == "plain" else "secure", variant, fx)
        return float(_child(_CHILD, spec, envs[kind])["ms"])

    # A first, untimed round: bytecode compiled and cached, files in the page cache, and every
    # version recorded in the state directory (these are restarts, not first installs).
    for variant in variants:
        for kind in kinds:
            run(kind, variant)
    times: dict[tuple[str, Path], list[float]] = {}
    ratios: dict[tuple[str, Path], list[float]] = {}
    order = list(variants)
    for _ in range(rounds):
        random.shuffle(order)
        for variant in order:
            group = random.sample(kinds, len(kinds))
            measured = {kind: run(kind, variant) for kind in group}
            for kind, ms in measured.items():
                times.setdefault((kind, variant.bundle), []).append(ms)
                ratios.setdefault((kind, variant.bundle), []).append(ms / measured["plain"])
    peaks = {}
    for variant in variants:  # peak memory of the SDK's own work (no interpreter), 3 runs
        growth = [_child(_CHILD, _spec("open", variant, fx), env)["growth"] for _ in range(3)]
        peaks[variant.bundle] = min(growth) / variant.size
    header = ["model", "AEAD", "payload", "plain → first result", "secure → first result",
              "secure ÷ plain", "goal", "SDK peak RSS ÷ model"]  # fmt: skip
    if baseline is not None:
        header[6:6] = ["before: secure", "before ÷ plain"]
    rows = []
    for variant in variants:
        plain = _median(times[("plain", variant.bundle)])
        secure = _median(times[("secure", variant.bundle)])
        goal = 1.3 if variant.model == "int8" else 1.4
        row = [f"{variant.model}, {variant.size / 1e6:.1f} MB", variant.aead, variant.stored,
               f"{plain:.1f} ms", f"{secure:.1f} ms",
               f"{_median(ratios[('secure', variant.bundle)]):.2f}×", f"≤ {goal}×",
               f"{peaks[variant.bundle]:.2f}"]  # fmt: skip
        if baseline is not None:
            before = _median(times[("baseline", variant.bundle)])
            row[6:6] = [f"{before:.1f} ms", f"{_median(ratios[('baseline', variant.bundle)]):.2f}×"]
        rows.append(row)
    table(f"{title} (medians of {rounds} rounds; ratios paired within a round)", header, rows)


def profile_table(fx: Fixtures, variants: Sequence[Variant], rounds: int, mask: str | None) -> None:
    """Where a secure start-up's time goes, beside the plain start-up's steps (fresh processes,
    timers around load()'s steps and plain's, interleaved)."""
    rows = []
    env = _env(REPO, mask)
    for variant in variants:
        secure, plain = [], []
        for _ in range(rounds):
            secure.append(_child(_PROFILE_CHILD, _spec("secure", variant, fx), env))
            plain.append(_child(_CHILD, _spec("plain", variant, fx), env)["steps"])
        s = {k: _median([r.get(k, 0.0) for r in secure]) for k in secure[0]}
        p = {k: _median([r[k] for r in plain]) for k in plain[0]}
        fixed = ("open", "interpreter", "first predict", "keys, profile", "audit record")
        other = s["total"] - sum(s[k] for k in fixed)
        plain_total = sum(p.values())
        rows.append([
            f"{variant.model}, {variant.aead}", f"{plain_total:.1f} / {s['total']:.1f}",
            f"{p['read']:.1f} / {s['open']:.1f} ({s['payload pass']:.1f})",
            f"{s['one SHA-256 pass (floor)']:.1f}",
            f"{p['build']:.1f} / {s['interpreter']:.1f}", f"{p['invoke']:.1f} / {s['first predict']:.1f}",
            f"{s['keys, profile']:.1f}", f"{s['audit record']:.1f}", f"{other:.1f}",
            f"{s['total'] - plain_total:+.1f}",
        ])  # fmt: skip
    where = " (SHA/AES instructions masked)" if mask else ""
    table(
        f"Where the time goes{where}: ms, plain / secure, median of {rounds} fresh processes each",
        ["model, AEAD (as packaged)", "to first result", "read / open_verified (payload pass)",
         "one SHA-256 pass of the model", "interpreter build", "first invoke",
         "trust, key, profile files", "audit record", "other", "secure − plain"],
        rows,
    )  # fmt: skip


def reload_table(fx: Fixtures, variants: Sequence[Variant], runs: int) -> None:
    """In-process reloads, as ``ModelWatcher`` does them, against a plain build in the same process."""
    rows = []
    for variant in variants:
        spec = {**_spec("reload", variant, fx), "runs": runs}
        result = _child(_RELOAD_CHILD, spec, _env(REPO, None))
        plain = _median(result["plain"]) * 1000
        reload = _median(result["reload"]) * 1000
        budget = plain + variant.size / 1.5e9 * 1000 + 3
        rows.append([f"{variant.model}, {variant.size / 1e6:.1f} MB", variant.aead, variant.stored,
                     f"{plain:.1f} ms", f"{reload:.1f} ms", f"{budget:.1f} ms",
                     f"{reload / budget:.2f}"])  # fmt: skip
    table(
        f"In-process reload (median of {runs}, interleaved with plain builds)",
        ["model", "AEAD", "payload", "plain build (read, Interpreter, allocate)", "edge_sdk.load",
         "budget: plain + size ÷ 1.5 GB/s + 3 ms", "load ÷ budget (goal ≤ 1)"],
        rows,
    )  # fmt: skip


def import_table(rounds: int, baseline: Path | None = None) -> None:
    """Cold imports in fresh processes (bytecode cached), interleaved, median wall time.

    "secure" is everything a secure start-up imports before its first load; with ``baseline``,
    the same for the other checkout, whose ``load()`` imported part of it lazily (counted here).
    """
    both = "import edge_sdk; edge_sdk.load; import ai_edge_litert.interpreter"
    commands = {
        "python -c pass": ("pass", REPO),
        "plain: import ai_edge_litert.interpreter": ("import ai_edge_litert.interpreter", REPO),
        "import edge_sdk; edge_sdk.load": ("import edge_sdk; edge_sdk.load", REPO),
        "secure: both": (both, REPO),
    }
    if baseline is not None:
        lazy = (
            "; import importlib.metadata; from edge_sdk import audit_log, compat, profiles, state"
        )
        commands["before: secure"] = (both + lazy, baseline)
    times: dict[str, list[float]] = {name: [] for name in commands}
    timer = "import time, subprocess, sys; s = time.perf_counter(); subprocess.run([sys.executable, '-c', sys.argv[1]], check=True); print((time.perf_counter() - s) * 1000)"  # noqa: E501
    jobs = list(commands.items())
    for round_ in range(rounds + 1):
        random.shuffle(jobs)
        for name, (code, sdk) in jobs:
            run = subprocess.run([sys.executable, "-c", timer, code], capture_output=True, text=True,
                                 env=_env(sdk, None), check=True, cwd=tempfile.gettempdir())  # fmt: skip
            if round_:  # the first round compiles and caches bytecode
                times[name].append(float(run.stdout.strip().splitlines()[-1]))
    med = {name: _median(values) for name, values in times.items()}
    plain = med["plain: import ai_edge_litert.interpreter"]
    extra = [f"{med['before: secure'] - plain:+.0f}"] if baseline is not None else []
    table(
        f"Import cost, fresh process (median of {rounds}, wall ms)",
        [*commands, "secure − plain", *(["before − plain"] if baseline is not None else [])],
        [[f"{med[n]:.0f}" for n in commands] + [f"{med['secure: both'] - plain:+.0f}", *extra]],
    )  # fmt: skip


def mask_probe_table(mask: str) -> None:
    """Which libraries' crypto slows down under the mask: the evidence it is honoured."""
    native = _child(_PROBE_CHILD, {}, _env(REPO, None))
    masked = _child(_PROBE_CHILD, {}, _env(REPO, mask))
    names = {"hashlib": "hashlib SHA-256", "aes": "cryptography AES-256-GCM",
             "chacha": "cryptography ChaCha20-Poly1305"}  # fmt: skip
    rows = []
    for key, label in names.items():
        (library, fast), (_, slow) = native[key], masked[key]
        rows.append([label, library, f"{fast:,.0f}", f"{slow:,.0f}", f"{slow / fast:.2f}",
                     "yes" if slow < 0.8 * fast else "no"])  # fmt: skip
    table(
        f"{IA32CAP_ENV}={mask}: does each library see it? (MB/s, best of 5, 32 MB)",
        ["operation", "OpenSSL it runs on", "native", "masked", "masked ÷ native", "honoured"],
        rows,
    )  # fmt: skip


TABLES = ("fresh", "profile", "probe", "masked", "reload", "imports")


def startup_suite(
    rounds: int = 15,
    work: Path | None = None,
    baseline: Path | None = None,
    tables: Sequence[str] = TABLES,
) -> None:
    """The tables named in ``tables``; ``work`` keeps the models and bundles between runs."""
    from edge_sdk.host.tensorflow_import import native_output_captured

    with tempfile.TemporaryDirectory() as tmp:
        where = work or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        with native_output_captured():
            fx = _package(where)
        native = list(fx.variants)
        if "fresh" in tables:
            fresh_process_table(fx, native, rounds, mask=None, baseline=baseline,
                                title="Fresh process → first result, MobileNetV2 224×224, 1 thread")  # fmt: skip
        defaults = [v for v in native if v.stored != "zstd kept"]
        if "profile" in tables:
            profile_table(fx, defaults, rounds, None)
        if "probe" in tables:
            mask_probe_table(NO_CRYPTO_EXTENSIONS)
        if "masked" in tables:
            chacha = [v for v in fx.variants if v.aead == "chacha20-poly1305"]
            fresh_process_table(fx, chacha, rounds, mask=NO_CRYPTO_EXTENSIONS, baseline=baseline,
                                title="The same without SHA/AES instructions (OpenSSL masked), "
                                "ChaCha20-Poly1305 as on the rpi4 profile")  # fmt: skip
        if "masked" in tables and "profile" in tables:
            profile_table(fx, [v for v in chacha if v.stored != "zstd kept"], rounds,
                          NO_CRYPTO_EXTENSIONS)  # fmt: skip
        if "reload" in tables:
            reload_table(fx, native, 3 * rounds)
        if "imports" in tables:
            import_table(rounds, baseline)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--work", type=Path, help="keep models and bundles here between runs")
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    parser.add_argument("--tables", default=",".join(TABLES), help=f"some of {','.join(TABLES)}")
    args = parser.parse_args()
    startup_suite(args.rounds, args.work, args.baseline, args.tables.split(","))
