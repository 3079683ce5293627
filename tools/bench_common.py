"""What every benchmark suite shares: the timer and the markdown table. It imports no suite, so
the harness (tools/bench.py) and the suites (tools/bench_*.py) never import each other in a circle.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """Minimum wall time of ``repeat`` calls: the least noisy estimate on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()
