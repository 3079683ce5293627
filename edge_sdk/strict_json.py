"""Strict JSON parsing and canonical JSON bytes for everything that is signed or parsed from a bundle.

Python's ``json`` accepts duplicate keys (last one wins), ``NaN``/``Infinity``, numbers too large
for a float, integers of thousands of digits and lone surrogates in strings, and it nests as deep
as the stack allows. Each is a way for two parsers to disagree about what a signed document says,
or for a hostile file to raise something other than a clean format error, so the bundle reader
refuses all of them.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import BundleFormatError, excerpt

MAX_DEPTH = 32
#: Longest integer literal accepted. Sizes and versions need at most 19 digits; Python's own
#: limit (4,300 digits) raises a ValueError of its own, and huge integers overflow floats later.
MAX_INT_DIGITS = 24

# The name of the document being parsed, for error messages from the hooks below. Parsing is
# synchronous and the hooks cannot take arguments, so a one-slot list is the simplest carrier.
_WHAT = ["document"]


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BundleFormatError(f"malformed JSON in {_WHAT[0]}: duplicate key {excerpt(key)}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise BundleFormatError(f"malformed JSON in {_WHAT[0]}: {name} is not allowed")


def _parse_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > MAX_INT_DIGITS:
        raise BundleFormatError(
            f"malformed JSON in {_WHAT[0]}: an integer has {len(digits)} digits"
        )
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BundleFormatError(f"malformed JSON in {_WHAT[0]}: number {text[:40]} is out of range")
    return value


def _check_tree(value: Any, limit: int) -> None:
    """Reject nesting deeper than ``limit`` and strings that are not valid Unicode text.

    JSON escapes can spell lone surrogates (``"\\ud800"``), which Python accepts as ``str`` but
    which cannot be encoded or printed; they would surface later as a UnicodeEncodeError.
    Walked level by level, so a flat document costs little.
    """
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise BundleFormatError(
                f"malformed JSON in {_WHAT[0]}: nested deeper than {limit} levels"
            )
        deeper: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children: list[Any] = [*item.keys(), *item.values()]
            elif isinstance(item, list):
                children = item
            else:
                children = [item]
            for child in children:
                if isinstance(child, (dict, list)) and child is not item:
                    deeper.append(child)
                elif isinstance(child, str):
                    try:
                        child.encode("utf-8")
                    except UnicodeEncodeError:
                        raise BundleFormatError(
                            f"malformed JSON in {_WHAT[0]}: a string holds an unpaired surrogate"
                        ) from None
        level = deeper


def loads_strict(data: bytes, what: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON strictly (see the module docstring for what is refused).

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
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except json.JSONDecodeError as exc:
        raise BundleFormatError(
            f"malformed JSON in {what}: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BundleFormatError(f"malformed JSON in {what}: nested too deeply") from None
    except ValueError as exc:  # a number the int/float constructors refuse
        raise BundleFormatError(f"malformed JSON in {what}: {str(exc)[:120]}") from None
    _check_tree(value, max_depth)
    return value


def canonical_bytes(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")
