"""A strict, bounded reader of a LiteRT-LM (``.litertlm``) file's header, without LiteRT-LM.

The packager reads it to refuse a file that is not LiteRT-LM before sealing it, and to list its
sections in the signed manifest's ``reports.litertlm``. The layout (litert-lm-builder 0.18,
``litertlm_core.py`` and ``litertlm_header_schema``): bytes 0–7 ``LITERTLM``; three little-endian
uint32 (major, minor, patch); at byte 24 a uint64, the end of the header; from byte 32 to that end
a FlatBuffer ``LiteRTLMMetaData`` { system_metadata, section_metadata { objects: [SectionObject {
items, begin_offset: uint64, end_offset: uint64, data_type: uint8 }] } }. Every offset is checked
against the buffer before it is followed, and every count is capped.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import Any

from edge_sdk.errors import ModelInputError

MAGIC = b"LITERTLM"
#: The package that runs LiteRT-LM models on a device: a bundle's ``target.runtime`` for one.
LLM_RUNTIME = "litert-lm-api"
HEADER_BEGIN = 32
#: A header is a small table of sections; anything larger is not a LiteRT-LM file we accept.
MAX_HEADER_BYTES = 1024 * 1024
MAX_SECTIONS = 256
SUPPORTED_MAJOR = (1,)
#: AnySectionDataType of litertlm_header_schema.fbs.
SECTION_TYPES = {
    0: "none", 1: "generic_binary", 2: "deprecated", 3: "tflite_model", 4: "sp_tokenizer",
    5: "llm_metadata", 6: "hf_tokenizer_zlib", 7: "tflite_weights", 8: "embedding_metadata",
    9: "executor_metadata", 10: "tts_metadata", 11: "asr_metadata",
}  # fmt: skip


@dataclass(frozen=True)
class LitertlmSection:
    kind: str
    begin: int
    end: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "begin": self.begin, "end": self.end}


@dataclass(frozen=True)
class LitertlmInfo:
    """What the header says: its version and the sections of the file."""

    version: str
    size: int
    sections: tuple[LitertlmSection, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "size": self.size,
            "sections": [s.to_dict() for s in self.sections],
        }


def is_litertlm(prefix: bytes) -> bool:
    """Whether ``prefix`` (a file's first bytes) starts like a LiteRT-LM file."""
    return prefix[:8] == MAGIC


def _bad(problem: str) -> ModelInputError:
    return ModelInputError(
        f"not a valid LiteRT-LM file: {problem}",
        hint="build it with litert-lm-builder; edge-sdk seals .litertlm files as they are",
    )


class _Flat:
    """Bounds-checked FlatBuffer access over the header bytes only."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def u(self, fmt: str, pos: int) -> Any:
        size = struct.calcsize(fmt)
        if pos < 0 or pos + size > len(self.data):
            raise _bad(f"header offset {pos} is outside its {len(self.data)} bytes")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def field(self, table: int, slot: int) -> int | None:
        """Absolute position of a table's field, or None when absent."""
        vtable = table - self.u("i", table)
        vsize = self.u("H", vtable)
        if vsize < 4 or vsize % 2:
            raise _bad("malformed vtable in the header")
        entry = 4 + 2 * slot
        if entry + 2 > vsize:
            return None
        offset = self.u("H", vtable + entry)
        return table + offset if offset else None

    def ref(self, table: int, slot: int) -> int | None:
        at = self.field(table, slot)
        return None if at is None else at + self.u("I", at)


def read_litertlm(data: bytes | memoryview, file_size: int | None = None) -> LitertlmInfo:
    """Parse the header at the start of ``data`` (at least the header's bytes; more is fine).

    Raises:
        ModelInputError: bad magic, unsupported major version, or a header that is malformed,
            oversized, or names sections that are empty, overlap each other, or lie outside
            the file or inside the header.
    """
    size = len(data) if file_size is None else file_size
    head = bytes(data[:HEADER_BEGIN])
    if not is_litertlm(head):
        raise _bad("it does not start with LITERTLM")
    if len(head) < HEADER_BEGIN:
        raise _bad(f"the file ends at byte {len(head)}, inside its {HEADER_BEGIN}-byte preamble")
    major, minor, patch = struct.unpack_from("<III", head, 8)
    if major not in SUPPORTED_MAJOR:
        raise _bad(f"format version {major}.{minor}.{patch} (this release reads major 1)")
    (end,) = struct.unpack_from("<Q", head, 24)
    if not HEADER_BEGIN + 8 <= end <= min(size, HEADER_BEGIN + MAX_HEADER_BYTES):
        raise _bad(f"header end {end} is outside 40..{min(size, HEADER_BEGIN + MAX_HEADER_BYTES)}")
    if len(data) < end:
        raise _bad("the file is cut inside its header")
    flat = _Flat(bytes(data[HEADER_BEGIN:end]))
    root = flat.u("I", 0)
    section_metadata = flat.ref(root, 1)
    if section_metadata is None:
        raise _bad("the header lists no sections")
    vector = flat.ref(section_metadata, 0)
    if vector is None:
        raise _bad("the header lists no sections")
    count = flat.u("I", vector)
    if not 0 < count <= MAX_SECTIONS:
        raise _bad(f"{count} sections (1 to {MAX_SECTIONS} accepted)")
    sections = []
    for i in range(count):
        at = vector + 4 + 4 * i
        table = at + flat.u("I", at)
        begin_at, end_at, type_at = (flat.field(table, s) for s in (1, 2, 3))
        begin = flat.u("Q", begin_at) if begin_at is not None else 0
        stop = flat.u("Q", end_at) if end_at is not None else 0
        code = flat.u("B", type_at) if type_at is not None else 0
        if code not in SECTION_TYPES:
            raise _bad(f"section {i} has unknown data type {code}")
        if not end <= begin <= stop <= size:
            raise _bad(f"section {i} spans {begin}..{stop}, outside the file's {end}..{size}")
        if begin == stop:
            raise _bad(f"section {i} ({SECTION_TYPES[code]}) is empty ({begin}..{stop})")
        sections.append(LitertlmSection(SECTION_TYPES[code], begin, stop))
    # The engine maps each section as its own buffer: two that share bytes would be one set of
    # bytes read two ways (weights as a tokenizer), which it refuses only later, generically.
    ordered = sorted(sections, key=lambda s: s.begin)
    for before, after in itertools.pairwise(ordered):
        if after.begin < before.end:
            raise _bad(
                f"sections overlap: {before.kind} {before.begin}..{before.end} and "
                f"{after.kind} {after.begin}..{after.end}"
            )
    return LitertlmInfo(f"{major}.{minor}.{patch}", size, tuple(sections))
