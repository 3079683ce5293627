"""A tiny generative model built in code as a LiteRT-LM ``.litertlm`` file; nothing is downloaded.

The model is a decoder-only transformer with random weights (fixed seed) written with
litert-torch's generative layers and converted with its own converter into a ``.tflite`` holding a
``prefill_N`` and a ``decode`` signature over an external KV cache; its tokenizer is a
SentencePiece *word* model trained here on the Zen of Python (the text of the stdlib's ``this``
module); litert-lm-builder packs the two with the LLM metadata (start token, stop token, context
length) into one ``.litertlm`` that litert-lm-api loads and runs.

Every piece of the vocabulary is one whole word, so the text a greedy run returns tokenizes back
to exactly the ids that were generated (``greedy_ids`` relies on it: litert-lm-api returns text,
not ids). The lm head's bias keeps the special ids (pad, unk, bos, eos) from ever being generated,
so a run always lasts ``max_tokens`` steps and never emits an unprintable token.

The build runs in a child process (``python -m tests.llm_fixture OUT_DIR SPEC_JSON``) so neither
torch nor litert-torch is imported into the process that uses the model. That child runs in its
own environment: litert-torch's dependencies cannot be installed beside the ``provenance`` extra
(xdsl pins typing-extensions<4.13, sigstore-models needs >=4.14.1), so tools/test.sh makes
``.cache/llm-build`` with the ``llm-build`` extra (``EDGE_SDK_LLM_BUILD_PYTHON`` names another
interpreter; without either, this one is used). The model is cached on disk
under a key made of this file's source, the spec and the builders' versions: a second test
session reuses the files (``EDGE_SDK_TEST_CACHE``, default ``.cache/test-models/llm/``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("EDGE_SDK_TEST_CACHE", REPO / ".cache" / "test-models")) / "llm"

# The packages whose versions change what the build writes (part of the cache key).
BUILD_PACKAGES = ("torch", "litert-torch", "litert-lm-builder", "sentencepiece")
# SentencePiece ids of the special tokens, fixed so the LLM metadata can name them.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
# A prompt made of vocabulary words (all lower-case, no punctuation: see _corpus()).
PROMPT = "beautiful is better than ugly"


@dataclass(frozen=True)
class LlmSpec:
    """The shape of the generated model. TINY is the test fixture; tools/bench_llm.py scales it."""

    num_layers: int = 2
    embedding_dim: int = 64
    num_heads: int = 4
    num_query_groups: int = 2
    intermediate_size: int = 128
    # The KV cache length is the context: prompt + generated tokens must fit in it.
    kv_cache_max_len: int = 128
    prefill_seq_len: int = 32
    seed: int = 0
    # litert-torch's quantization: "none" (float32 weights), "dynamic_int8",
    # "dynamic_int4_block32", ... (what boards run: packing int weights costs XNNPACK more).
    quantize: str = "none"


TINY = LlmSpec()


@dataclass(frozen=True)
class LlmModel:
    """A built model. ``path`` is the ``.litertlm`` to hand to ``litert_lm.Engine``."""

    path: Path
    tokenizer: Path  # the SentencePiece model packed into ``path``, for tests that tokenize
    spec: LlmSpec
    vocab_size: int
    size: int  # bytes of ``path``
    build_seconds: float  # of the build that made the cached files (not of a cache hit)
    cached: bool  # True if this call found the files on disk
    prompt: str = PROMPT

    @property
    def max_num_tokens(self) -> int:
        return self.spec.kv_cache_max_len


def build_python() -> str:
    """The interpreter that has the build packages (see the module docstring)."""
    named = os.environ.get("EDGE_SDK_LLM_BUILD_PYTHON")
    if named:
        return named
    venv = REPO / ".cache" / "llm-build" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _build_versions(python: str) -> str:
    """``name==version`` of each build package in ``python``'s environment."""
    query = (
        "from importlib import metadata\n"
        f"for n in {BUILD_PACKAGES!r}: print(f'{{n}}=={{metadata.version(n)}}')"
    )
    done = subprocess.run([python, "-c", query], check=True, capture_output=True, text=True)
    return done.stdout


def cache_key(spec: LlmSpec) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
    h.update(_build_versions(build_python()).encode())
    return h.hexdigest()[:16]


def build_llm(spec: LlmSpec = TINY, cache: Path | None = None) -> LlmModel:
    """The model for ``spec``, from the disk cache or built now (in a child process)."""
    root = cache if cache is not None else CACHE
    out = root / f"{cache_key(spec)}"
    cached = (out / "build.json").exists()
    if not cached:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
        try:
            subprocess.run(
                [build_python(), "-m", "tests.llm_fixture", str(tmp), _spec_json(spec)],
                cwd=REPO,
                check=True,
                # The converter's progress lines are noise unless the build fails.
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except subprocess.CalledProcessError as e:
            tail = e.stdout.decode(errors="replace")[-4000:]
            raise RuntimeError(f"building the LLM fixture failed:\n{tail}") from None
        try:
            os.replace(tmp, out)
        except OSError:
            # Another session finished the same build first; its files are identical.
            shutil.rmtree(tmp, ignore_errors=True)
    info = json.loads((out / "build.json").read_text())
    path = out / "model.litertlm"
    return LlmModel(
        path=path,
        tokenizer=out / "tokenizer.model",
        spec=spec,
        vocab_size=info["vocab_size"],
        size=path.stat().st_size,
        build_seconds=info["build_seconds"],
        cached=cached,
    )


def _spec_json(spec: LlmSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)


# -- running it with litert-lm-api directly -----------------------------------------------------


def engine(path: str | os.PathLike[str], max_num_tokens: int, threads: int = 1) -> Any:
    """A CPU ``litert_lm.Engine`` for a model path (the plain file or a ``/proc/self/fd/N``)."""
    import litert_lm

    return litert_lm.Engine(
        os.fspath(path),
        backend=litert_lm.Backend.CPU(thread_count=threads),
        max_num_tokens=max_num_tokens,
    )


def greedy_session(eng: Any, max_tokens: int) -> Any:
    """A raw session (no prompt template) that decodes greedily for exactly ``max_tokens``."""
    import litert_lm

    # top_k=1 is greedy: the sampler keeps only the arg-max logit, so temperature/seed do not matter.
    return eng.create_session(
        apply_prompt_template=False,
        sampler_config=litert_lm.SamplerConfig(top_k=1, top_p=1.0, temperature=1.0, seed=0),
        max_output_tokens=max_tokens,
    )


def greedy_pieces(eng: Any, prompt: str, max_tokens: int) -> list[str]:
    """The text of each generated token, streamed one decode step at a time."""
    session = greedy_session(eng, max_tokens)
    try:
        session.run_prefill([prompt])
        return [chunk for r in session.run_decode_async() for chunk in r.texts]
    finally:
        # A session left open when its engine closes makes LiteRT-LM log errors at exit.
        session.close()


def greedy_ids(eng: Any, prompt: str, max_tokens: int) -> list[int]:
    """The token ids of a greedy run (exact: every vocabulary piece is one whole word)."""
    session = greedy_session(eng, max_tokens)
    try:
        session.run_prefill([prompt])
        text = session.run_decode().texts[0]
    finally:
        session.close()
    ids: list[int] = eng.tokenize(text)
    return ids


# -- the build (runs in the child process) ------------------------------------------------------


def _corpus() -> list[str]:
    """The Zen of Python, lower-cased, punctuation dropped: text that ships with every Python."""
    import codecs

    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen
        import this
    text = codecs.decode(this.s, "rot13")
    lines = []
    for line in text.splitlines()[2:]:  # skip the title line and the blank line after it
        words = "".join(c if c.isalpha() or c.isspace() else " " for c in line.lower()).split()
        if words:
            lines.append(" ".join(words))
    return lines


def _train_tokenizer(workdir: Path) -> Path:
    import sentencepiece as spm

    lines = _corpus()
    words = {w for line in lines for w in line.split()}
    model = io.BytesIO()
    # From an iterator into memory: a trainer given file names stores them in the model, which
    # would make the bytes depend on the (temporary) build directory.
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        # A word model: one piece per word, so detokenize/tokenize round-trips ids exactly.
        model_type="word",
        vocab_size=len(words) + len(SPECIAL_IDS),
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path = workdir / "tokenizer.model"
    path.write_bytes(model.getvalue())
    return path


def _fixed_system_metadata(spec: LlmSpec) -> None:
    """Make litert-lm-builder write the same bytes for the same spec.

    It stamps every file with a random uuid4 and the wall-clock time; a fixture whose bytes
    differ per build would give its sealed bundles different digests on every cache miss.
    """
    import uuid

    from litert_lm_builder import litertlm_builder as builder

    def fixed(system_metadata: list[Any]) -> list[Any]:
        kept = [m for m in system_metadata if m.key not in ("uuid", "creation_timestamp")]
        name = f"edge-sdk-test-llm:{_spec_json(spec)}"
        return [
            *kept,
            builder.Metadata(
                key="uuid",
                value=str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                dtype=builder.DType.STRING,
            ),
            builder.Metadata(
                key="creation_timestamp",
                value="2026-01-01T00:00:00+00:00",
                dtype=builder.DType.STRING,
            ),
        ]

    builder.populate_system_metadata = fixed


def _build(out: Path, spec: LlmSpec) -> None:
    started = time.perf_counter()
    import sentencepiece as spm
    import torch
    from litert_torch.generative.layers import kv_cache
    from litert_torch.generative.layers import model_config as cfg
    from litert_torch.generative.utilities import converter, export_config, model_builder
    from litert_torch.generative.utilities.litertlm_builder import build_litertlm

    work = out / "work"
    work.mkdir()
    tokenizer = _train_tokenizer(work)
    vocab_size = spm.SentencePieceProcessor(model_file=str(tokenizer)).get_piece_size()

    torch.manual_seed(spec.seed)
    norm = cfg.NormalizationConfig(type=cfg.NormalizationType.RMS_NORM)
    block = cfg.TransformerBlockConfig(
        attn_config=cfg.AttentionConfig(
            num_heads=spec.num_heads,
            head_dim=spec.embedding_dim // spec.num_heads,
            num_query_groups=spec.num_query_groups,
            rotary_base=10000,
            rotary_percentage=1.0,
        ),
        ff_config=cfg.FeedForwardConfig(
            type=cfg.FeedForwardType.GATED,
            activation=cfg.ActivationConfig(cfg.ActivationType.SILU),
            intermediate_size=spec.intermediate_size,
        ),
        pre_attention_norm_config=norm,
        post_attention_norm_config=norm,
    )
    config = cfg.ModelConfig(
        vocab_size=vocab_size,
        num_layers=spec.num_layers,
        max_seq_len=spec.kv_cache_max_len,
        embedding_dim=spec.embedding_dim,
        block_configs=block,
        final_norm_config=norm,
        # A tied head makes a random model repeat its last token forever; a separate one varies.
        lm_head_share_weight_with_embedding=False,
        lm_head_use_bias=True,
    )
    model = model_builder.DecoderOnlyModel(config, mask_cache_size=spec.kv_cache_max_len).eval()
    with torch.no_grad():
        model.lm_head.bias.zero_()
        # Never generate a special token (-1e4 stays finite in the runtime's fp16 activations).
        model.lm_head.bias[list(SPECIAL_IDS)] = -1e4
    tflite = converter.convert_to_tflite(
        model,
        str(work),
        "model",
        prefill_seq_len=spec.prefill_seq_len,
        kv_cache_max_len=spec.kv_cache_max_len,
        quantize=spec.quantize,
        config=config,
        # LiteRT-LM reads the context length from dimension 2 of the K cache, so it needs the
        # transposed layout ([B, N, T, H]); the default [B, T, N, H] makes it see 'N' tokens.
        export_config=export_config.ExportConfig(kvcache_layout=kv_cache.KV_LAYOUT_TRANSPOSED),
    )
    _fixed_system_metadata(spec)
    build_litertlm(
        tflite_model_path=tflite,
        workdir=str(work),
        output_path=str(work),
        context_length=spec.kv_cache_max_len,
        tokenizer_model_path=str(tokenizer),
        start_token_id=BOS_ID,
        stop_token_ids=[EOS_ID],
    )
    os.replace(work / (Path(tflite).stem + ".litertlm"), out / "model.litertlm")
    os.replace(tokenizer, out / "tokenizer.model")
    shutil.rmtree(work)
    info = {
        "vocab_size": vocab_size,
        "build_seconds": round(time.perf_counter() - started, 2),
        "spec": dataclasses.asdict(spec),
        "versions": {name: metadata.version(name) for name in BUILD_PACKAGES},
    }
    (out / "build.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    _build(Path(sys.argv[1]), LlmSpec(**json.loads(sys.argv[2])))
