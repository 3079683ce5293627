"""What reaches an operator's terminal or spreadsheet from files they did not write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import KeySet, make_bundle_bytes

HOSTILE_NAMES = [
    "evil\x1b]0;owned\x07",
    "csi\x9b31m",
    "line\nbreak",
    "sep\u2028x",
    "=cmd|calc",
    "gpj.\u202eexe",
]
RAW = ("\x1b", "\x9b", "\x07", "\u2028", "\u202e")


@pytest.fixture
def hostile_dir(tmp_path: Path, keyset: KeySet) -> Path:
    folder = tmp_path / "bundles"
    folder.mkdir()
    good = make_bundle_bytes(keyset)
    for name in HOSTILE_NAMES:
        (folder / f"{name}.edgepkg").write_bytes(good)
    return folder


def _clean(text: str) -> None:
    for raw in RAW:
        assert raw not in text, repr(raw)


def test_audit_table_escapes_file_names(
    hostile_dir: Path, key_files: dict[str, Path], cli: Any
) -> None:
    result = cli("audit", hostile_dir, "--trust", key_files["signer.pub"])
    assert result.code == 0, result.err
    _clean(result.out + result.err)
    assert "\\x1b]0;owned\\x07" in result.out and "\\x9b31m" in result.out
    assert "line\\x0abreak" in result.out


def test_audit_csv_escapes_controls_and_formulas(hostile_dir: Path, key_files: dict[str, Path],
                                                cli: Any) -> None:  # fmt: skip
    result = cli("audit", hostile_dir, "--trust", key_files["signer.pub"], "--format", "csv")
    assert result.code == 0, result.err
    _clean(result.out)
    rows = result.out.splitlines()
    assert len(rows) == 1 + len(HOSTILE_NAMES)  # no row was split by an embedded newline
    assert all(not cell.startswith("=") for row in rows for cell in row.split(","))


@pytest.mark.parametrize(
    "pruning",
    [{"sparsity": "lots"}, {"sparsity": 0.5, "prunable_weights": [1]}, [1, 2], "x" * 10_000,
     {"sparsity": 0.5, "prunable_weights": 10, "fine_tune": "yes"}, {"sparsity": 1e308, "prunable_weights": 1e308}],
)  # fmt: skip
def test_inspect_survives_crafted_reports(
    pruning: object, keyset: KeySet, tmp_path: Path, cli: Any
) -> None:
    path = tmp_path / "crafted.edgepkg"
    path.write_bytes(
        make_bundle_bytes(
            keyset, reports={"pruning": pruning, "big": {f"k{i}": i for i in range(500)}}
        )
    )
    result = cli("inspect", path)
    assert result.code == 0, result.err
    assert "500 fields: " in result.out  # a long report is summarised, not cut mid-token
    assert cli("inspect", path, "--json").code == 0


def test_safe_escapes_every_invisible_and_reordering_character() -> None:
    """Every Cc, Cf, Co, Cs, Zl and Zp character is written out (U+061C, U+FEFF and U+200B were
    shown raw: a model's reply or a file name could hide or reorder text with them); printable
    text, non-ASCII letters and emoji stay as they are; newlines survive only when asked for."""
    import sys
    import unicodedata

    from edge_sdk.cli._common import safe
    from edge_sdk.errors import _INVISIBLE as INVISIBLE

    # Printable but blank, or drawn over the character before: a key id padded with Hangul
    # fillers looked like another (hostile review).
    assert safe("key 6ab8\u3164\u3164 signed") == "key 6ab8\\u3164\\u3164 signed"
    assert safe("a\u0336b\u2800c\ufe0f") == "a\\u0336b\\u2800c\\ufe0f"

    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        shown = safe(char)
        if category in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp", "Cn"):
            assert shown.startswith("\\") and shown.isascii() and shown.isprintable(), hex(code)
        elif INVISIBLE.match(char):
            assert shown.startswith("\\") and shown.isascii(), hex(code)
        elif category not in ("Zs",):
            assert shown == char, hex(code)
    assert safe("\u061cA\ufeffB\u200bC\u2066D\U000e0041") == (
        "\\u061cA\\ufeffB\\u200bC\\u2066D\\U000e0041"
    )
    assert safe("déjà vu 日本 🙂\u00a0x") == "déjà vu 日本 🙂\u00a0x"
    assert safe("a\nb\u2029c", keep_newlines=True) == "a\nb\\u2029c"
