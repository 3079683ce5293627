"""The generated LiteRT-LM model (tests/llm_fixture.py) loads and decodes with litert-lm-api itself.

These tests pin the fixture the LLM bundle tests stand on: if they fail, a failure there says
nothing about edge-sdk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .llm_fixture import SPECIAL_IDS, build_llm, engine, greedy_ids, greedy_pieces

MAX_TOKENS = 24


def test_the_fixture_is_a_litertlm_file_cached_on_disk(tiny_llm: Any) -> None:
    assert tiny_llm.path.read_bytes()[:8] == b"LITERTLM"
    assert 0 < tiny_llm.size < 4_000_000
    again = build_llm(tiny_llm.spec)
    assert again.cached
    assert again.path == tiny_llm.path


def test_greedy_decoding_is_deterministic(tiny_llm: Any) -> None:
    first = engine(tiny_llm.path, tiny_llm.max_num_tokens)
    ids = greedy_ids(first, tiny_llm.prompt, MAX_TOKENS)
    assert greedy_ids(first, tiny_llm.prompt, MAX_TOKENS) == ids  # a second session
    first.close()
    second = engine(tiny_llm.path, tiny_llm.max_num_tokens)  # a fresh engine
    assert greedy_ids(second, tiny_llm.prompt, MAX_TOKENS) == ids
    # Specials are never generated, so a run lasts exactly MAX_TOKENS steps ...
    assert len(ids) == MAX_TOKENS
    assert not set(ids) & set(SPECIAL_IDS)
    assert all(0 <= i < tiny_llm.vocab_size for i in ids)
    # ... and is not one token repeated (a comparison of two runs would then prove little).
    assert len(set(ids)) > 3
    # The prompt is read: another prompt generates other tokens.
    assert greedy_ids(second, "simple is better than complex", MAX_TOKENS) != ids
    second.close()


def test_each_streamed_piece_is_one_generated_token(tiny_llm: Any) -> None:
    eng = engine(tiny_llm.path, tiny_llm.max_num_tokens)
    pieces = greedy_pieces(eng, tiny_llm.prompt, MAX_TOKENS)
    ids = greedy_ids(eng, tiny_llm.prompt, MAX_TOKENS)
    assert len(pieces) == len(ids)
    assert [eng.tokenize(p) for p in pieces] == [[i] for i in ids]
    eng.close()


def test_the_build_is_reproducible(tiny_llm: Any, tmp_path: Path) -> None:
    # A cache miss elsewhere (CI, another board's tests) must make the very same file, so a
    # digest or signature over it means the same thing everywhere.
    fresh = build_llm(tiny_llm.spec, cache=tmp_path)
    assert not fresh.cached
    assert fresh.path.read_bytes() == tiny_llm.path.read_bytes()
