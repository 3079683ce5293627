"""Strict JSON parsing and canonical JSON bytes for everything that is signed or parsed from a bundle.

Python's ``json`` accepts duplicate keys (last one wins), ``NaN``/``Infinity``, numbers too large
for a float, integers of thousands of digits and lone surrogates in strings, and it nests as deep
as the stack allows. Each is a way for two parsers to disagree about what a signed document says,
or for a hostile file to raise something other than a clean format error, so the bundle reader
refuses all of them.

Parsing also costs memory out of proportion to the text: every ``{}`` (three bytes with its comma)
becomes a Python dict of about 70 bytes, so 8 MiB of them took 230 MiB and a second — before any
signature was checked. A caller that knows how many values a well-formed document can hold passes
``max_values``, and a text that could hold more is refused by counting bytes, before it is parsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from edge_sdk.errors import BundleFormatError, excerpt

#: Deepest nesting accepted: the top-level value is at depth 1, and each array or object adds one
#: level for the values inside it (``[[1]]`` has depth 2; the ``1`` adds nothing).
MAX_DEPTH = 32
#: Longest integer literal accepted. Sizes and versions need at most 19 digits; Python's own
#: limit (4,300 digits) raises a ValueError of its own, and huge integers overflow floats later.
MAX_INT_DIGITS = 24


def value_bound(data: bytes) -> int:
    """An upper bound on the number of JSON values in ``data``, found without parsing it.

    Every value but the top-level one follows a ``[`` (first array element), a ``,`` (a later
    element or member) or a ``{`` (first member), so the values number at most one more than
    those bytes — counted anywhere, strings included, which only ever over-counts.
    """
    return 1 + data.count(b"[") + data.count(b"{") + data.count(b",")


def _hooks(
    what: str,
) -> tuple[
    Callable[[list[tuple[str, Any]]], dict[str, Any]],
    Callable[[str], Any],
    Callable[[str], int],
    Callable[[str], float],
]:
    """The parser hooks that refuse what strict parsing refuses, naming ``what`` in errors."""

    def reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise BundleFormatError(f"malformed JSON in {what}: duplicate key {excerpt(key)}")
            result[key] = value
        return result

    def reject_constant(name: str) -> Any:
        raise BundleFormatError(f"malformed JSON in {what}: {name} is not allowed")

    def parse_int(text: str) -> int:
        digits = text.lstrip("-")
        if len(digits) > MAX_INT_DIGITS:
            raise BundleFormatError(
                f"malformed JSON in {what}: an integer has {len(digits)} digits "
                f"(at most {MAX_INT_DIGITS})"
            )
        return int(text)

    def parse_float(text: str) -> float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise BundleFormatError(
                f"malformed JSON in {what}: number {excerpt(text, 40)} is out of range"
            )
        return value

    return reject_duplicates, reject_constant, parse_int, parse_float


def _check_tree(value: Any, limit: int, what: str) -> None:
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
            raise BundleFormatError(f"malformed JSON in {what}: nested deeper than {limit} levels")
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
                            f"malformed JSON in {what}: a string holds an unpaired surrogate"
                        ) from None
        level = deeper


def loads_strict(
    data: bytes, what: str, *, max_depth: int = MAX_DEPTH, max_values: int | None = None
) -> Any:
    """Parse UTF-8 JSON strictly (see the module docstring for what is refused).

    Args:
        data: the JSON text.
        what: the document's name, for error messages.
        max_depth: the deepest nesting accepted (see :data:`MAX_DEPTH`).
        max_values: when given, a text that could hold more values than this (by
            :func:`value_bound`) is refused before it is parsed.

    Raises:
        BundleFormatError: naming ``what`` and the problem.
    """
    if max_values is not None and value_bound(data) > max_values:
        raise BundleFormatError(
            f"malformed JSON in {what}: more values than a well-formed {what} can hold "
            f"(at most {max_values})"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleFormatError(f"malformed JSON in {what}: not UTF-8 ({exc.reason})") from None
    try:
        pairs, constant, integer, number = _hooks(what)
        value = json.loads(
            text,
            object_pairs_hook=pairs,
            parse_constant=constant,
            parse_int=integer,
            parse_float=number,
        )
    except json.JSONDecodeError as exc:
        raise BundleFormatError(
            f"malformed JSON in {what}: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BundleFormatError(f"malformed JSON in {what}: nested too deeply") from None
    except ValueError as exc:  # a number the int/float constructors refuse
        raise BundleFormatError(f"malformed JSON in {what}: {excerpt(str(exc), 120)}") from None
    _check_tree(value, max_depth, what)
    return value


def canonical_bytes(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, ASCII only, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")
