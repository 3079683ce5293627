"""A bundle file taken apart and put back together, for tamper tests and the invalid vectors.

Plain byte slicing by docs/FORMAT.md's layout, no validation: the point is to build files the
reader must refuse. No pytest here, so ``tools/make_invalid_vectors.py`` can use it too.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any


@dataclass
class Parts:
    """A bundle taken apart; ``join`` writes the envelope canonically unless ``envelope_raw``."""

    version: int
    flags: int
    manifest: bytes
    envelope: dict[str, Any]
    payload: bytes
    envelope_raw: bytes | None = None  # set to store envelope bytes verbatim

    @classmethod
    def of(cls, raw: bytes) -> Parts:
        version, flags, m_len = struct.unpack(">HHI", raw[8:16])
        at = 16 + m_len
        (e_len,) = struct.unpack(">I", raw[at : at + 4])
        envelope = json.loads(raw[at + 4 : at + 4 + e_len])
        return cls(version, flags, raw[16:at], envelope, raw[at + 4 + e_len + 8 :])

    def envelope_bytes(self) -> bytes:
        if self.envelope_raw is not None:
            return self.envelope_raw
        return json.dumps(self.envelope, sort_keys=True, separators=(",", ":")).encode()

    def join(self) -> bytes:
        env = self.envelope_bytes()
        return (
            b"EDGEPKG\n"
            + struct.pack(">HHI", self.version, self.flags, len(self.manifest))
            + self.manifest
            + struct.pack(">I", len(env))
            + env
            + struct.pack(">Q", len(self.payload))
            + self.payload
        )


def split_bundle(raw: bytes) -> Parts:
    return Parts.of(raw)
