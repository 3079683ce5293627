"""Device runtime overheads, measured side by side: ``python tools/bench.py runtime``.

On MobileNetV2 (weights=None, 96×96) in float32 and int8:

* ``Model.predict`` vs a raw ``set_tensor`` / ``invoke`` / ``get_tensor`` loop on an interpreter
  built the same way (goal ≤ 1.03);
* full secure load (read, verify, decrypt, checks, interpreter) vs building an interpreter from a
  plain ``.tflite`` file (goal ≤ 2.0);
* peak RSS growth during a secure load, relative to the model size (goal ≤ 2.0);
* throughput of a ``ModelPool`` with 2 workers vs 1, driven by 2 threads;
* ``import edge_sdk`` and ``edge-sdk --help`` wall time next to a bare ``python -c pass``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.bench_common import best_of, table  # noqa: E402
from tools.bench_quant import upscale  # noqa: E402
from tools.demo_model import digits_data  # noqa: E402

_RSS_CHILD = r"""
import json, sys
from pathlib import Path
import ai_edge_litert.interpreter  # imported before measuring: code is not the model's memory
import edge_sdk
from edge_sdk import keys, profiles  # same reason
from edge_sdk.device import audit_log, runtime, state
from edge_sdk.format import bundle, encryption, verify
def rss(field):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
bundle, trust, key, state, plain = sys.argv[1:6]
before = rss('VmRSS:')
if plain != "-":  # the interpreter's own cost: build from a plain file, no SDK
    interp = ai_edge_litert.interpreter.Interpreter(model_content=Path(plain).read_bytes(), num_threads=1)
    interp.allocate_tensors()
else:
    model = edge_sdk.load(bundle, trust=trust, device_key=key, state_dir=state, profile="x86_64", threads=1)
print(json.dumps({"before": before, "peak": rss('VmHWM:')}))
"""


def _bundles(tmp: Path) -> dict[str, tuple[Path, Path, int]]:
    """MobileNetV2 bundles (f32, int8) and the plain .tflite next to each, with keys on disk."""
    import keras

    from edge_sdk.format.verify import open_bundle
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.keys import generate_key, save_keypair
    from edge_sdk.profiles import load_profile

    keras.utils.set_random_seed(0)
    model_path = tmp / "mobilenetv2.keras"
    keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10).save(
        model_path
    )
    x_train, *_ = digits_data()
    np.savez(tmp / "calib.npz", x=upscale(x_train[:200]))
    signer, device = generate_key("signing"), generate_key("device")
    save_keypair(signer, tmp / "signer")
    save_keypair(device, tmp / "device")
    out = {}
    for mode in ("none", "int8"):
        bundle = tmp / f"{mode}.edgepkg"
        package_model(
            model_path, bundle, load_profile("x86_64"),
            PackageOptions(name=f"mnv2-{mode}", version=1, quantize=mode, compress=0,
                           calibration=tmp / "calib.npz" if mode == "int8" else None),
            [signer], [device.public],
        )  # fmt: skip
        plain = open_bundle(bundle, _trust(tmp), device).model_bytes
        (tmp / f"{mode}.tflite").write_bytes(plain)
        out["float32" if mode == "none" else "int8"] = (bundle, tmp / f"{mode}.tflite", len(plain))
    return out


def _trust(tmp: Path) -> object:
    from edge_sdk.keys import TrustStore

    return TrustStore.load([tmp / "signer.pub"])


def _raw_interpreter(path: Path, threads: int) -> object:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=path.read_bytes(), num_threads=threads)
    interp.allocate_tensors()
    return interp


def _median_ms(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def runtime_suite() -> None:
    import edge_sdk
    from edge_sdk.device.runtime import ModelPool
    from edge_sdk.host.tensorflow_import import native_output_captured

    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp_dir, native_output_captured():
        tmp = Path(tmp_dir)
        bundles = _bundles(tmp)
        key = tmp / "device.key"
        x = upscale(digits_data()[2][:1])
        for label, (bundle, plain, size) in bundles.items():
            state = tmp / f"state-{label}"

            def secure_load(b: Path = bundle, s: Path = state) -> object:
                return edge_sdk.load(b, trust=tmp / "signer.pub", device_key=key, state_dir=s, profile="x86_64",
                                     threads=1)  # fmt: skip

            def raw_load(p: Path = plain) -> object:
                return _raw_interpreter(p, 1)

            load_secure, load_raw = best_of(secure_load, 7), best_of(raw_load, 7)
            model = secure_load()
            interp = raw_load()
            idx_in = interp.get_input_details()[0]["index"]  # type: ignore[attr-defined]
            idx_out = interp.get_output_details()[0]["index"]  # type: ignore[attr-defined]
            spec = model.inputs[0]  # type: ignore[attr-defined]
            raw_x = x if not spec.quantized else np.clip(np.round(x / spec.scale) + spec.zero_point, -128, 127).astype(
                spec.dtype)  # fmt: skip

            raw_invoke, sdk_predict = _callers(interp, idx_in, idx_out, raw_x, model, x)
            for fn in (raw_invoke, sdk_predict):
                for _ in range(20):
                    fn()  # type: ignore[operator]
            raw_ms, sdk_ms = [], []
            for _ in range(10):  # interleaved blocks, so drift hits both sides alike
                raw_ms.append(_median_ms(raw_invoke, 30))
                sdk_ms.append(_median_ms(sdk_predict, 30))
            growth = {}
            for kind, plain_arg in (("secure", "-"), ("raw", str(plain))):
                child = subprocess.run(
                    [sys.executable, "-c", _RSS_CHILD, str(bundle), str(tmp / "signer.pub"), str(key),
                     str(tmp / f"rss-{label}-{kind}"), plain_arg],
                    capture_output=True, text=True, check=True, cwd=REPO,
                )  # fmt: skip
                rss = json.loads(child.stdout.strip().splitlines()[-1])
                growth[kind] = rss["peak"] - rss["before"]
            pool_ratio = _pool_scaling(model, x, ModelPool)
            rows.append([
                label, f"{size / 1e6:.2f} MB", f"{np.median(raw_ms):.3f}", f"{np.median(sdk_ms):.3f}",
                f"{np.median(sdk_ms) / np.median(raw_ms):.3f}", f"{load_raw * 1000:.1f}",
                f"{load_secure * 1000:.1f}", f"{load_secure / load_raw:.2f}",
                f"{growth['raw'] / size:.2f}", f"{growth['secure'] / size:.2f}",
                f"{(growth['secure'] - growth['raw']) / size:.2f}", f"{pool_ratio:.2f}",
            ])  # fmt: skip
    table(
        "Runtime overhead: MobileNetV2 96×96, ai-edge-litert, 1 thread",
        ["model", "size", "raw invoke ms", "predict ms", "predict ÷ raw", "plain load ms", "secure load ms",
         "secure ÷ plain", "RSS growth ÷ model: plain load", "secure load", "SDK's share",
         "2 workers ÷ 1 (throughput)"],
        rows,
    )  # fmt: skip
    _startup_table()


def _callers(interp: object, idx_in: int, idx_out: int, raw_x: np.ndarray, model: object,
             x: np.ndarray) -> tuple[object, object]:  # fmt: skip
    """A raw set/invoke/get loop and the SDK's predict, over the same input."""

    def raw_invoke() -> object:
        interp.set_tensor(idx_in, raw_x)  # type: ignore[attr-defined]
        interp.invoke()  # type: ignore[attr-defined]
        return interp.get_tensor(idx_out)  # type: ignore[attr-defined]

    def sdk_predict() -> object:
        return model.predict(x)  # type: ignore[attr-defined]

    return raw_invoke, sdk_predict


def _pool_scaling(model: object, x: np.ndarray, pool_cls: type) -> float:
    """Throughput with 2 workers over 1, two client threads, same number of predictions."""

    def throughput(workers: int) -> float:
        pool = pool_cls(model.clone(), workers)  # type: ignore[attr-defined]
        calls = 200

        def client() -> None:
            for _ in range(calls // 2):
                pool.predict(x)

        threads = [threading.Thread(target=client) for _ in range(2)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        pool.close()
        return calls / elapsed

    one = max(throughput(1) for _ in range(3))
    two = max(throughput(2) for _ in range(3))
    return two / one


def _startup_table() -> None:
    def run(*cmd: str) -> float:
        return best_of(
            lambda: subprocess.run(list(cmd), check=True, capture_output=True, cwd=REPO), 7
        )

    bare = run(sys.executable, "-c", "pass")
    imp = run(sys.executable, "-c", "import edge_sdk")
    cli = run(sys.executable, "-m", "edge_sdk", "--help")
    tf = run(sys.executable, "-c", "import tensorflow")
    table(
        "Start-up (best of 7, wall ms)",
        ["python -c pass", "import edge_sdk", "edge-sdk --help", "for scale: import tensorflow"],
        [[f"{bare * 1000:.0f}", f"{imp * 1000:.0f} (+{(imp - bare) * 1000:.0f})",
          f"{cli * 1000:.0f} (+{(cli - bare) * 1000:.0f})", f"{tf * 1000:.0f}"]],
    )  # fmt: skip


if __name__ == "__main__":
    runtime_suite()
