"""The signed manifest: what a bundle holds, for whom, and until when.

A :class:`Manifest` that exists is valid: every field is checked on construction, and
:meth:`Manifest.from_dict` rejects unknown fields (except inside ``reports``, which is free-form by
design so later tools can add reports without a format change). :meth:`Manifest.to_bytes` gives
the canonical JSON bytes that are signed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from edge_sdk.errors import ManifestError, excerpt

from .strict_json import canonical_bytes

SCHEMA = 1
#: ``litertlm`` (a LiteRT-LM generative model) since 0.3; readers before it refuse such bundles
#: with a ManifestError naming the field, and every ``tflite`` bundle is unchanged.
MODEL_FORMATS = ("tflite", "litertlm")
ENCRYPTIONS = ("aes-256-gcm", "chacha20-poly1305", "none")
COMPRESSIONS = ("none", "zstd")
QUANT_DTYPES = (
    "float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool", "string",
    "float64", "uint16", "uint32", "uint64", "complex64", "complex128", "int4",
)  # fmt: skip

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_HWID = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._,/+-]{0,127}")
MAX_VERSION = 2**63 - 1
MAX_TENSORS = 256
MAX_RANK = 8


def _fail(where: str, problem: str) -> ManifestError:
    return ManifestError(f"manifest field {where}: {problem}")


def _expect_keys(
    where: str, data: Mapping[str, Any], required: set[str], optional: set[str]
) -> None:
    if not isinstance(data, Mapping):
        raise _fail(where, "must be an object")
    missing = required - set(data)
    if missing:
        raise _fail(where, f"missing {', '.join(sorted(missing))}")
    unknown = set(data) - required - optional
    if unknown:
        names = ", ".join(excerpt(k, 40) for k in sorted(map(str, unknown))[:8])
        raise _fail(where, f"unknown field(s) {names}")


def _int(where: str, value: Any, low: int = 0, high: int = MAX_VERSION) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(where, f"must be an integer in [{low}, {high}], got {excerpt(value)}")
    return value


def _str(
    where: str, value: Any, pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] = ()
) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"must be a string, got {type(value).__name__}")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(where, f"malformed value {excerpt(value)}")
    if choices and value not in choices:
        raise _fail(where, f"{excerpt(value)} is not one of {', '.join(choices)}")
    return value


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with second precision, the only time form a manifest holds."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse the manifest's time form back into an aware datetime."""
    if not _TIME.fullmatch(text):
        raise ValueError(f"not a manifest time: {excerpt(text)}")
    # fromisoformat is ~10x faster than strptime; on 3.10 it does not take "Z", hence the swap.
    return datetime.fromisoformat(text[:-1] + "+00:00")


def _time(where: str, value: Any) -> str:
    text = _str(where, value, _TIME)
    try:
        parse_time(text)
    except ValueError:
        raise _fail(where, f"not a valid date/time {excerpt(text)}") from None
    return text


@dataclass(frozen=True)
class TensorSpec:
    """An input or output tensor as the model declares it (batch dimension may be -1)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not 0 < len(self.name) <= 256:
            raise _fail("tensor name", "must be a non-empty string of at most 256 characters")
        where = f"tensor {excerpt(self.name)}"
        if not isinstance(self.shape, tuple) or len(self.shape) > MAX_RANK:
            raise _fail(where, f"shape must have at most {MAX_RANK} dimensions")
        for dim in self.shape:
            _int(f"{where} shape", dim, -1, 2**31 - 1)
        _str(f"{where} dtype", self.dtype, choices=QUANT_DTYPES)
        if (self.scale is None) != (self.zero_point is None):
            raise _fail(where, "scale and zero_point go together")
        if self.scale is not None and (
            not isinstance(self.scale, float) or not self.scale > 0 or self.scale == float("inf")
        ):
            raise _fail(where, f"scale must be a positive finite number, got {excerpt(self.scale)}")
        if self.zero_point is not None:
            _int(f"{where} zero_point", self.zero_point, -(2**31), 2**31 - 1)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.scale is not None:
            out["quantization"] = {"scale": self.scale, "zero_point": self.zero_point}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        _expect_keys("tensor", data, {"name", "shape", "dtype"}, {"quantization"})
        shape = data["shape"]
        if not isinstance(shape, list):
            raise _fail("tensor shape", "must be a list")
        quant = data.get("quantization")
        scale = zero = None
        if quant is not None:
            _expect_keys("tensor quantization", quant, {"scale", "zero_point"}, set())
            raw = quant["scale"]
            # Integers are accepted as scales (JSON does not tell 1 from 1.0); bools are not.
            scale = float(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
            zero = quant["zero_point"]
        return cls(data["name"], tuple(shape), data["dtype"], scale, zero)


def _tensors(where: str, value: Any) -> tuple[TensorSpec, ...]:
    if not isinstance(value, list) or len(value) > MAX_TENSORS:
        raise _fail(where, f"must be a list of at most {MAX_TENSORS} tensors")
    return tuple(TensorSpec.from_dict(t) for t in value)


@dataclass(frozen=True)
class ModelInfo:
    """The plaintext model: its format, digest, size and I/O signature."""

    sha256: str
    size: int
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    format: str = "tflite"

    def __post_init__(self) -> None:
        _str("model.format", self.format, choices=MODEL_FORMATS)
        _str("model.sha256", self.sha256, _HEX64)
        _int("model.size", self.size, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "sha256": self.sha256,
            "size": self.size,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        _expect_keys("model", data, {"format", "sha256", "size", "inputs", "outputs"}, set())
        return cls(
            sha256=data["sha256"],
            size=data["size"],
            inputs=_tensors("model.inputs", data["inputs"]),
            outputs=_tensors("model.outputs", data["outputs"]),
            format=data["format"],
        )


@dataclass(frozen=True)
class PayloadInfo:
    """How the model bytes are stored in the bundle: compression, encryption, chunking, digest.

    ``content_id`` is a random per-bundle value bound into every chunk's associated data.
    ``compressed_size`` is the size after compression and before encryption (equal to the model
    size when ``compression`` is ``none``).
    """

    encryption: str
    sha256: str
    size: int
    chunk_size: int
    content_id: str
    compression: str = "none"
    compressed_size: int | None = None

    def __post_init__(self) -> None:
        _str("payload.encryption", self.encryption, choices=ENCRYPTIONS)
        _str("payload.compression", self.compression, choices=COMPRESSIONS)
        _str("payload.sha256", self.sha256, _HEX64)
        _str("payload.content_id", self.content_id, _HEX32)
        _int("payload.size", self.size, 0)
        _int("payload.chunk_size", self.chunk_size, 4096, 64 * 1024 * 1024)
        if self.compressed_size is not None:
            _int("payload.compressed_size", self.compressed_size, 0)
        if (self.compression == "none") != (self.compressed_size is None):
            raise _fail("payload.compressed_size", "present exactly when compression is not none")

    @property
    def encrypted(self) -> bool:
        return self.encryption != "none"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "encryption": self.encryption,
            "compression": self.compression,
            "sha256": self.sha256,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "content_id": self.content_id,
        }
        if self.compressed_size is not None:
            out["compressed_size"] = self.compressed_size
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PayloadInfo:
        _expect_keys(
            "payload",
            data,
            {"encryption", "compression", "sha256", "size", "chunk_size", "content_id"},
            {"compressed_size"},
        )
        return cls(
            encryption=data["encryption"],
            sha256=data["sha256"],
            size=data["size"],
            chunk_size=data["chunk_size"],
            content_id=data["content_id"],
            compression=data["compression"],
            compressed_size=data.get("compressed_size"),
        )


@dataclass(frozen=True)
class Target:
    """Which boards the bundle is for: the profile, its runtime, and accepted hardware ids."""

    profile: str
    runtime: str = "ai-edge-litert"
    runtime_version: str = ""
    hardware_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _str("target.profile", self.profile, _NAME)
        _str("target.runtime", self.runtime, _NAME)
        if not isinstance(self.runtime_version, str) or len(self.runtime_version) > 32:
            raise _fail("target.runtime_version", "must be a short string")
        if not isinstance(self.hardware_ids, tuple) or len(self.hardware_ids) > 64:
            raise _fail("target.hardware_ids", "must be a list of at most 64 ids")
        for hwid in self.hardware_ids:
            _str("target.hardware_ids", hwid, _HWID)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "hardware_ids": list(self.hardware_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Target:
        _expect_keys(
            "target", data, {"profile", "runtime", "runtime_version", "hardware_ids"}, set()
        )
        ids = data["hardware_ids"]
        if not isinstance(ids, list):
            raise _fail("target.hardware_ids", "must be a list")
        return cls(data["profile"], data["runtime"], data["runtime_version"], tuple(ids))


@dataclass(frozen=True)
class Manifest:
    """Everything the publisher signs about one release of one model."""

    name: str
    version: int
    created: str
    target: Target
    model: ModelInfo
    payload: PayloadInfo
    expires: str | None = None
    reports: Mapping[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if type(self.schema) is not int or self.schema != SCHEMA:  # not true, not 1.0
            raise _fail(
                "schema",
                f"unsupported manifest schema {excerpt(self.schema)} (this release reads {SCHEMA})",
            )
        _str("name", self.name, _NAME)
        _int("version", self.version, 0)
        _time("created", self.created)
        if self.expires is not None:
            _time("expires", self.expires)
            if parse_time(self.expires) <= parse_time(self.created):
                raise _fail("expires", "must be later than created")
        if not isinstance(self.reports, Mapping) or not all(
            isinstance(k, str) for k in self.reports
        ):
            raise _fail("reports", "must be an object")
        if (
            self.payload.encryption == "none"
            and self.payload.compression == "none"
            and (self.payload.sha256 != self.model.sha256 or self.payload.size != self.model.size)
        ):
            raise _fail("payload", "a plain payload must have the model's digest and size")
        stored = (
            self.payload.compressed_size
            if self.payload.compressed_size is not None
            else self.model.size
        )
        if self.payload.encrypted:
            chunks = max(1, -(-stored // self.payload.chunk_size))
            expected = stored + 16 * chunks  # one 16-byte AEAD tag per chunk (docs/FORMAT.md)
        else:
            expected = stored
        if self.payload.size != expected:
            raise _fail(
                "payload.size",
                f"{self.payload.size} does not fit a {stored}-byte {self.payload.encryption} payload "
                f"(expected {expected})",
            )

    @property
    def expires_at(self) -> datetime | None:
        return parse_time(self.expires) if self.expires else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": self.schema,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "target": self.target.to_dict(),
            "model": self.model.to_dict(),
            "payload": self.payload.to_dict(),
            "reports": dict(self.reports),
        }
        if self.expires is not None:
            out["expires"] = self.expires
        return out

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes that are stored and signed."""
        return canonical_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        _expect_keys(
            "manifest",
            data,
            {"schema", "name", "version", "created", "target", "model", "payload", "reports"},
            {"expires"},
        )
        if type(data["schema"]) is not int or data["schema"] != SCHEMA:  # not true, not 1.0
            raise _fail(
                "schema",
                f"unsupported manifest schema {excerpt(data['schema'])} (this release reads {SCHEMA})",
            )
        return cls(
            name=data["name"],
            version=data["version"],
            created=data["created"],
            target=Target.from_dict(data["target"]),
            model=ModelInfo.from_dict(data["model"]),
            payload=PayloadInfo.from_dict(data["payload"]),
            expires=data.get("expires"),
            reports=data["reports"],
        )
