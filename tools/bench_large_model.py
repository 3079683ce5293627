"""Opening a multi-GB .tflite: edge_sdk.load from sealed memory against plain LiteRT and the floor.

``python tools/bench_large_model.py [--sizes-gb 1,3] [--rounds 3]`` prints a markdown table.
For each size, a real converter-written model in TFLite's big-model layout (weights after the
FlatBuffer at u64 offsets; tests/large_tflite.py) is padded to the size with its weights at the
end, packaged for the ``x86_64`` profile, encrypted for one device key and stored uncompressed
(as random-looking real weights would be). Each side runs in a fresh process, the sides in a new
random order each round, medians of ``--rounds``:

* ``read + SHA-256``: one read of the plaintext file and one SHA-256 pass over it (the floor
  any verified open pays);
* ``plain``: ``Interpreter(model_path=…)`` on the plaintext file, allocate, one invoke. LiteRT
  maps the file and reads only the pages its first invoke touches: here the padding is never
  read, so this row is the runtime's own cost, not a model's (a real model's first invoke reads
  every weight);
* ``plain-read``: ``Interpreter(model_content=…)`` on one read of the plaintext file;
* ``sealed``: ``edge_sdk.load`` of the bundle (every check, decrypt into sealed memory) and one
  ``predict``;
* ``bytes``: the same load with sealed memory switched off (the path where there is no memfd).

Peak RSS is the child's ``VmHWM``; throughput is the model's size over the wall time to a result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_CHILD = r"""
import hashlib, json, sys, time
spec = json.loads(sys.argv[1])
import numpy as np
x = np.zeros((1, 256), dtype=np.float32) + 0.5
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
kind = spec["kind"]
if kind.startswith("plain"):
    from ai_edge_litert.interpreter import Interpreter
elif kind in ("sealed", "bytes"):
    import edge_sdk
    from edge_sdk.device import runtime
    if kind == "bytes":
        runtime.unavailable_reason = lambda: "switched off by the benchmark"
base = hwm()
start = time.perf_counter()
if kind == "floor":
    digest = hashlib.sha256()
    with open(spec["model"], "rb", buffering=0) as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    out = digest.hexdigest()
elif kind in ("plain", "plain-read"):
    if kind == "plain":
        it = Interpreter(model_path=spec["model"], num_threads=1)
    else:
        with open(spec["model"], "rb") as f:
            it = Interpreter(model_content=f.read(), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    out = float(it.get_tensor(it.get_output_details()[0]["index"]).sum())
else:
    model = edge_sdk.load(spec["bundle"], trust=spec["trust"], device_key=spec["key"],
                          state_dir=spec["state"], profile="x86_64", threads=1)
    assert model.memory == ("bytes" if kind == "bytes" else "memfd (sealed)"), model.memory
    out = float(np.asarray(model.predict(x)).sum())
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak": hwm(), "base": base, "out": out}))
"""


def _build(work: Path, size: int) -> dict[str, str]:
    from edge_sdk.host.package_options import PackageOptions
    from edge_sdk.host.packaging import package_model
    from edge_sdk.keys import generate_key, save_keypair
    from edge_sdk.profiles import load_profile
    from tests.large_tflite import (
        convert_with_buffer_offsets,
        dense_model,
        external_buffers,
        relocate_buffers,
    )

    model = work / f"model-{size}.tflite"
    bundle = work / f"model-{size}.edgepkg"
    signer, device = generate_key("signing"), generate_key("device")
    save_keypair(signer, work / "signer", overwrite=True)
    save_keypair(device, work / "device", overwrite=True)
    data = convert_with_buffer_offsets(dense_model())
    start = min(offset for _, offset, _ in external_buffers(data))
    gap = (size - len(data)) // 16 * 16
    relocate_buffers(data, model, gap)
    # The gap as data, not a hole: a real model's bytes are read from disk, not from nothing.
    with open(model, "r+b") as out:
        block = os.urandom(1 << 20)
        out.seek(start)
        written = 0
        while written < gap:
            written += out.write(block[: gap - written])
    profile = load_profile("x86_64")
    package_model(model, bundle, profile, PackageOptions(name=f"big{size}", version=1, compress=0),
                  [signer], [device.public])  # fmt: skip
    return {"model": str(model), "bundle": str(bundle), "trust": str(work / "signer.pub"),
            "key": str(work / "device.key")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-gb", default="1,3")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-sdk-bench-large-"))
    work.mkdir(parents=True, exist_ok=True)
    kinds = ["floor", "plain", "plain-read", "sealed", "bytes"]
    rows = []
    for size_gb in [float(s) for s in args.sizes_gb.split(",")]:
        size = int(size_gb * 1e9)
        files = _build(work, size)
        results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for round_ in range(args.rounds):
            order = kinds[:]
            random.Random(round_).shuffle(order)
            for kind in order:
                state = Path(tempfile.mkdtemp(prefix="state-", dir=work))  # a first load each time
                spec = {**files, "kind": kind, "state": str(state)}
                run = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)],
                                     capture_output=True, text=True, check=False)  # fmt: skip
                if run.returncode != 0:
                    raise SystemExit(f"{kind} failed: {run.stderr[-2000:]}")
                results[kind].append(json.loads(run.stdout.strip().splitlines()[-1]))
        outs = {k: results[k][0]["out"] for k in kinds[1:]}
        if len({round(v, 3) for v in outs.values()}) != 1:
            raise SystemExit(f"the sides disagree: {outs}")
        floor = statistics.median(r["seconds"] for r in results["floor"])
        for kind in kinds:
            seconds = statistics.median(r["seconds"] for r in results[kind])
            peak = statistics.median(r["peak"] for r in results[kind])
            rows.append([f"{size / 1e9:.0f} GB", kind, f"{seconds:.2f}", f"{size / seconds / 1e9:.2f}",
                         f"{seconds / floor:.2f}×", f"{peak / 1e6:,.0f}", f"{peak / size:.2f}"])  # fmt: skip
        for name in ("model", "bundle"):
            os.unlink(files[name])
    print(
        "| model | side | seconds to a result | GB/s | ÷ read + SHA-256 | peak RSS (MB) | peak ÷ model |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
