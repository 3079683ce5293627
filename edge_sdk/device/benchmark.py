"""On-board measurements for ``edge-sdk bench``: load time and latency percentiles per thread count."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.keys import PrivateKey

from .runtime import Model, load


def sample_inputs(model: Model, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs that fit the model (floats for float or dequantized inputs)."""
    rng = np.random.default_rng(seed)
    return {
        t.name: rng.standard_normal((batch, *[d if d > 0 else 1 for d in t.shape[1:]])).astype(
            np.float32
        )
        for t in model.inputs
    }


def latency_ms(model: Model, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> list[float]:
    """Wall time of ``runs`` predict calls in milliseconds, after ``warmup`` untimed ones."""
    x: Any = feeds if len(feeds) > 1 else next(iter(feeds.values()))
    for _ in range(warmup):
        model.predict(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.predict(x)
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench_bundle(
    bundle: Path,
    *,
    trust: Sequence[str | os.PathLike[str]],
    device_key: PrivateKey | None,
    profile: str | None,
    state_dir: Path | None,
    threads: Sequence[int],
    runs: int,
    warmup: int,
    allow_target_mismatch: bool = False,
) -> dict[str, Any]:
    """Load the bundle once per thread count and time inference; returns a JSON-ready report."""
    configs = []
    load_ms = 0.0
    info: dict[str, Any] = {}
    for count in threads:
        start = time.perf_counter()
        model = load(
            bundle,
            trust=list(trust),
            device_key=device_key,
            profile=profile,
            state_dir=state_dir,
            threads=count,
            allow_target_mismatch=allow_target_mismatch,
        )
        load_ms = load_ms or (time.perf_counter() - start) * 1000
        with model:
            times = latency_ms(model, sample_inputs(model), runs, warmup)
            info = {
                "name": model.manifest.name if model.manifest else "",
                "version": model.manifest.version if model.manifest else 0,
                "backend": f"{model.backend.package} {model.backend.version}",
                "delegates": [d.name for d in model.delegates if d.applied],
            }
        p50, p90, p99 = np.percentile(times, [50, 90, 99])
        configs.append(
            {
                "threads": count,
                "runs": runs,
                "p50_ms": float(p50),
                "p90_ms": float(p90),
                "p99_ms": float(p99),
                "mean_ms": float(np.mean(times)),
            }
        )
    return {**info, "load_ms": load_ms, "configs": configs}
