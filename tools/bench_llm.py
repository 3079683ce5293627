"""LLM bundles (issue 22): LiteRT-LM on the plain ``.litertlm`` against the sealed-memory path.

    python tools/bench_llm.py [--layers 4 --dim 256 --ff 1024 --tokens 64 --repeat 3]

The model is generated in code (tests/llm_fixture.py, cached on disk). Each side runs in a fresh
process, the sides interleaved ``--repeat`` times; per side the best run counts (least TTFT, most
tokens/s, least peak RSS: the least noisy estimate on a shared machine). Sides:

- ``plain``: ``litert_lm.Engine`` on the file, as a user of LiteRT-LM alone would run it.
- ``plain-nocache``: the same with ``cache_dir=":nocache"``: LiteRT-LM without the weight cache
  it writes beside the model by default (repacked plaintext weights, which the sealed path must
  never write), so TTFT includes repacking the weights, as it does for the sealed path.
- ``sealed``: ``edge_sdk.load_llm`` on a signed bundle encrypted for one device key: verify,
  decrypt into sealed memory, decrypt the weight cache it saved encrypted on an earlier run into
  sealed memory too, then the engine.
- ``sealed-nocache``: the same with ``weight_cache="memory"``: nothing kept between starts, so
  the engine packs the weights again (into a memfd).

TTFT is from just before the engine is created (the runtimes, and edge_sdk, are imported before
the clock) to the first streamed token; decode tokens/s counts the tokens after the first. Peak RSS is
the child's VmHWM, which counts the memfd's pages once they are mapped (RssShmem). Both sides must
generate the same tokens, or the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.llm_fixture import LlmSpec, build_llm  # noqa: E402
from tools.bench_common import table  # noqa: E402

_CHILD = r"""
import json, os, sys, time
from pathlib import Path
import litert_lm  # imported before the clock on every side
litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
side, path, prompt, tokens, ctx = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if side.startswith('sealed'):
    import edge_sdk, edge_sdk.device.llm  # the library, like litert_lm, before the clock
def hwm():
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
before = hwm()
start = time.perf_counter()
if side in ('plain', 'plain-nocache'):
    model_path = path
elif side.startswith('sealed'):
    bundle, trust, key, state = path.split(os.pathsep)
    model = edge_sdk.load_llm(bundle, trust=trust, device_key=key, state_dir=state,
                              allow_target_mismatch=True, threads=1, max_num_tokens=ctx,
                              weight_cache='memory' if side == 'sealed-nocache' else 'encrypted')
    if side == 'sealed' and not model.weight_cache.startswith('encrypted on disk'):
        raise SystemExit(f'the saved weight cache was not used: {model.describe()}')
elif side != 'plain-nocache':
    raise SystemExit(f'unknown side {side}')
stamps, pieces = [], []
if side.startswith('sealed'):
    for piece in model.stream(prompt, max_tokens=tokens):
        stamps.append(time.perf_counter())
        pieces.append(piece)
    ids = model.tokenize(''.join(pieces))
    model.close()
else:
    cache = {'cache_dir': ':nocache'} if side != 'plain' else {}
    eng = litert_lm.Engine(path if side == 'plain-nocache' else model_path,
                           backend=litert_lm.Backend.CPU(thread_count=1), max_num_tokens=ctx, **cache)
    session = eng.create_session(apply_prompt_template=False,
        sampler_config=litert_lm.SamplerConfig(top_k=1, top_p=1.0, temperature=1.0, seed=0),
        max_output_tokens=tokens)
    session.run_prefill([prompt])
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


def _sealed_bundle(model: Path, work: Path) -> str:
    """The model packaged as the README says (signed, encrypted for one device key); the child's
    ``path`` argument: bundle, trust, device key and state dir joined by ``os.pathsep``."""
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.keys import generate_key, save_keypair
    from edge_sdk.profiles import load_profile

    signer, device = generate_key("signing", "ed25519"), generate_key("device", "x25519")
    _, trust = save_keypair(signer, work / "publisher")
    key, _ = save_keypair(device, work / "device")
    bundle = work / "model.edgepkg"
    package_model(model, bundle, load_profile("x86_64"), PackageOptions(name="bench", version=1),
                  [signer], [device.public])  # fmt: skip
    (work / "state").mkdir()
    return os.pathsep.join(str(p) for p in (bundle, trust, key, work / "state"))


def run_side(side: str, path: Path | str, prompt: str, tokens: int, ctx: int) -> dict[str, object]:
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
    parser.add_argument("--quantize", default="none",
                        help="litert-torch quantization: none, dynamic_int8, dynamic_int4_block32")  # fmt: skip
    args = parser.parse_args()

    spec = LlmSpec(
        num_layers=args.layers,
        embedding_dim=args.dim,
        intermediate_size=args.ff,
        kv_cache_max_len=args.context,
        prefill_seq_len=min(64, args.context // 2),
        quantize=args.quantize,
    )
    model = build_llm(spec)
    built = "cached" if model.cached else "built now"
    print(
        f"model: {model.size / 1e6:.1f} MB, {args.layers} layers, dim {args.dim}, ff {args.ff}, "
        f"vocab {model.vocab_size}, quantize {args.quantize}; build {model.build_seconds:.1f} s ({built})"
    )

    work = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    sealed = _sealed_bundle(model.path, work)
    sides = ["plain", "plain-nocache", "sealed", "sealed-nocache"]
    runs: dict[str, list[dict[str, object]]] = {s: [] for s in sides}
    # A first plain run writes LiteRT-LM's weight cache beside the file; the timed plain runs
    # then load it, as a user of LiteRT-LM alone gets from the second start on.
    run_side("plain", model.path, model.prompt, 2, args.context)
    run_side("sealed-first", sealed, model.prompt, 2, args.context)  # saves its weight cache
    for _ in range(args.repeat):
        for side in sides:
            source = sealed if side.startswith("sealed") else str(model.path)
            runs[side].append(run_side(side, source, model.prompt, args.tokens, args.context))
    shutil.rmtree(work, ignore_errors=True)

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
