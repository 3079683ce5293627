"""Strict JSON parsing and canonical JSON bytes for everything that is signed or parsed from a bundle.

Python's ``json`` accepts duplicate keys (last one wins), ``NaN``/``Infinity`` and arbitrarily deep
nesting. Each is a way for two parsers to disagree about what a signed document says, so the bundle
reader refuses all three.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import BundleFormatError

MAX_DEPTH = 32


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BundleFormatError(f"malformed JSON in {_WHAT[0]}: duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BundleFormatError(f"malformed JSON in {_WHAT[0]}: {name} is not allowed")


# The name of the document being parsed, for error messages from the hooks above. Parsing is
# synchronous and the hooks cannot take arguments, so a one-slot list is the simplest carrier.
_WHAT = ["document"]


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, walked level by level over containers only (cheap for flat documents)."""
    level = [value]
    depth = 0
    while level and depth <= limit:
        depth += 1
        deeper: list[Any] = []
        for item in level:
            children = (
                item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
            )
            deeper.extend(c for c in children if isinstance(c, (dict, list)))
        level = deeper
    return depth


def loads_strict(data: bytes, what: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON, rejecting duplicate keys, NaN/Infinity and nesting deeper than max_depth.

    Raises:
        BundleFormatError: naming ``what`` and the problem.
    """
    _WHAT[0] = what
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleFormatError(f"malformed JSON in {what}: not UTF-8 ({exc.reason})") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise BundleFormatError(
            f"malformed JSON in {what}: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BundleFormatError(f"malformed JSON in {what}: nested too deeply") from None
    if _depth(value, max_depth) > max_depth:
        raise BundleFormatError(f"malformed JSON in {what}: nested deeper than {max_depth} levels")
    return value


def canonical_bytes(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")
