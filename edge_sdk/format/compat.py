"""Read a .tflite model without TensorFlow, and decide whether a given runtime can run it.

Imported on the device, so it must never import tensorflow (nor a LiteRT runtime): the flatbuffer
is read here with a small bounds-checked reader written from the public schema,
``tensorflow/compiler/mlir/lite/schema/schema.fbs`` (field ids are noted where they are used).
Every malformed, truncated or foreign input raises :class:`~edge_sdk.errors.ModelInputError`;
nothing from :mod:`struct` or an ``IndexError`` escapes.

The compatibility verdict compares each operator's (code, version) with the first TensorFlow
release that runs it (``runtime_version.cc``, see :mod:`edge_sdk.format.op_versions`), and the runtime
package's version with the TensorFlow release it corresponds to (:func:`tflite_release`).
An op or version the table does not know is a problem, never silently fine.
"""

from __future__ import annotations

import math
import re
import struct
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from edge_sdk.errors import CompatibilityError, ManifestError, ModelInputError, excerpt

from .manifest import QUANT_DTYPES, TensorSpec
from .op_versions import (
    AI_EDGE_LITERT,
    BUILTIN_OPERATORS,
    MIN_RUNTIME,
    SCHEMA_VERSION,
    TENSORFLOW_GAPS,
    UNREGISTERED,
)

__all__ = [
    "CompatReport",
    "OpProblem",
    "OpUsage",
    "RuntimeSupport",
    "TFLiteInfo",
    "check_compatibility",
    "read_tflite",
    "runtime_support",
    "tflite_release",
]

FILE_IDENTIFIER = b"TFL3"
#: Cap on flatbuffer tables visited while reading one model. Real models stay far below (the
#: flatbuffers verifier the C++ runtime uses stops at 1,000,000 tables; we may visit a buffer
#: table once per tensor that uses it); a hostile file with millions of tiny tables pointing at
#: one another would otherwise keep a device busy for minutes.
MAX_TABLE_READS = 4_000_000
CUSTOM_CODE = 32
MIN_RUNTIME_KEY = "min_runtime_version"

#: ``enum TensorType : byte`` in schema.fbs, as numpy-style names.
TENSOR_TYPES: dict[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
    19: "int2", 20: "uint4", 21: "float8_e4m3fn", 22: "float8_e5m2",
}  # fmt: skip

# Problem kinds, as stored in reports.
TOO_NEW = "too-new"
UNRELEASED = "unreleased"
UNKNOWN_OP = "unknown-op"
UNKNOWN_VERSION = "unknown-version"
NOT_REGISTERED = "not-registered"
CUSTOM_OP = "custom-op"
FLEX_OP = "flex-op"
MODEL_METADATA = "model-metadata"

_Release = tuple[int, int, int]
# "" in the upstream table means "not in any release yet": newer than every real release.
_UNRELEASED: _Release = (10**9, 0, 0)
_RELEASE = re.compile(r"(\d{1,4})\.(\d{1,4})(?:\.(\d{1,4}))?")


def _parse_release(text: str) -> _Release | None:
    """``"2.14.0"``, ``"2.14"``, ``"2.14.0rc1"`` or ``"2.21.0.post1"`` -> (2, 14, 0); else None."""
    match = _RELEASE.match(text.strip())
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def _table_release(text: str) -> _Release:
    """A release written in edge-sdk's own tables; a bad one is a bug here, not the user's."""
    release = _parse_release(text)
    if release is None:
        raise CompatibilityError(
            f"edge-sdk's runtime tables hold a malformed release {excerpt(text)}"
        )
    return release


def _release_text(release: _Release) -> str:
    return "unreleased" if release >= _UNRELEASED else ".".join(map(str, release))


# -- the flatbuffer reader -------------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: the bytes break the flatbuffer structure; turned into ModelInputError."""


class _Reader:
    """Bounds-checked access to flatbuffer primitives; every read names what it was reading."""

    __slots__ = ("buf", "size", "tables_left")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.buf = memoryview(data).cast("B")
        self.size = len(self.buf)
        self.tables_left = MAX_TABLE_READS

    def need(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise _Malformed(f"{what} lies outside the file (offset {pos}, {length} bytes)")

    def unpack(self, fmt: str, pos: int, what: str) -> Any:
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def table(self, pos: int, what: str) -> _Table:
        return _Table(self, pos, what)


class _Table:
    """One flatbuffer table; field ids are the ordinal of the field in schema.fbs."""

    __slots__ = ("pos", "reader", "table_size", "vt_size", "vtable", "what")

    def __init__(self, reader: _Reader, pos: int, what: str) -> None:
        reader.tables_left -= 1
        if reader.tables_left < 0:
            raise _Malformed(f"more than {MAX_TABLE_READS} table reads: refusing to go on")
        # A table starts with a signed offset back to its vtable: u16 vtable size, u16 table
        # size, then one u16 per field (0 = absent, else the field's offset inside the table).
        vtable = pos - reader.unpack("<i", pos, what)
        self.vt_size: int = reader.unpack("<H", vtable, f"{what} vtable")
        self.table_size: int = reader.unpack("<H", vtable + 2, f"{what} vtable")
        if self.vt_size < 4 or self.vt_size % 2 or self.table_size < 4:
            raise _Malformed(f"{what} has a malformed vtable")
        reader.need(vtable, self.vt_size, f"{what} vtable")
        reader.need(pos, self.table_size, what)
        self.reader, self.pos, self.vtable, self.what = reader, pos, vtable, what

    def _field(self, field_id: int, width: int) -> int | None:
        slot = 4 + 2 * field_id
        if slot + 2 > self.vt_size:
            return None  # written by an older schema that did not have this field
        offset: int = self.reader.unpack("<H", self.vtable + slot, self.what)
        if offset == 0:
            return None
        if offset + width > self.table_size:
            raise _Malformed(f"{self.what} field {field_id} overruns its table")
        return self.pos + offset

    def has(self, field_id: int) -> bool:
        return self._field(field_id, 4) is not None

    def scalar(self, field_id: int, fmt: str, default: Any) -> Any:
        pos = self._field(field_id, struct.calcsize(fmt))
        return default if pos is None else self.reader.unpack(fmt, pos, self.what)

    def _target(self, field_id: int) -> int | None:
        pos = self._field(field_id, 4)
        if pos is None:
            return None
        relative: int = self.reader.unpack("<I", pos, self.what)
        if relative == 0:
            raise _Malformed(f"{self.what} field {field_id} points at itself")
        return pos + relative

    def vector(self, field_id: int, width: int, what: str) -> tuple[int, int] | None:
        """(start of the elements, count) of a vector field, checked to fit in the file."""
        target = self._target(field_id)
        if target is None:
            return None
        count: int = self.reader.unpack("<I", target, what)
        self.reader.need(target + 4, count * width, what)
        return target + 4, count

    def numbers(self, field_id: int, fmt: str, what: str) -> tuple[Any, ...] | None:
        found = self.vector(field_id, struct.calcsize(fmt), what)
        if found is None:
            return None
        start, count = found
        return struct.unpack_from(f"<{count}{fmt}", self.reader.buf, start)

    def raw(self, field_id: int, what: str) -> memoryview | None:
        found = self.vector(field_id, 1, what)
        return None if found is None else self.reader.buf[found[0] : found[0] + found[1]]

    def string(self, field_id: int, what: str) -> str | None:
        data = self.raw(field_id, what)
        if data is None:
            return None
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} is not UTF-8") from None

    def table(self, field_id: int, what: str) -> _Table | None:
        target = self._target(field_id)
        return None if target is None else self.reader.table(target, what)

    def tables(self, field_id: int, what: str) -> _Tables:
        found = self.vector(field_id, 4, what)
        return _Tables(self.reader, *(found or (0, 0)), what)


class _Tables:
    """A vector of tables, read on access: a hostile count costs no memory up front."""

    __slots__ = ("count", "reader", "start", "what")

    def __init__(self, reader: _Reader, start: int, count: int, what: str) -> None:
        self.reader, self.start, self.count, self.what = reader, start, count, what

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> _Table:
        if not 0 <= index < self.count:
            raise _Malformed(f"{self.what} {index} is not one of {self.count}")
        slot = self.start + 4 * index
        target = slot + self.reader.unpack("<I", slot, self.what)
        return self.reader.table(target, f"{self.what}[{index}]")

    def __iter__(self) -> Iterator[_Table]:
        return (self[index] for index in range(self.count))


# -- what the model says about itself --------------------------------------------------------------


@dataclass(frozen=True)
class OpUsage:
    """One operator code of the model: which op, which version, how many nodes use it.

    ``count`` may be 0: the runtime resolves every listed operator code while it builds the
    interpreter, used or not, so an unused code still has to be supported.
    """

    name: str
    version: int
    count: int
    code: int

    @property
    def custom(self) -> bool:
        return self.code == CUSTOM_CODE

    @property
    def known(self) -> bool:
        """Whether the code is a builtin this release of edge-sdk has a name for (or custom)."""
        return self.custom or self.code in BUILTIN_OPERATORS

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "count": self.count,
            "custom": self.custom,
        }


@dataclass(frozen=True)
class TFLiteInfo:
    """What :func:`read_tflite` found in a .tflite flatbuffer.

    ``inputs``/``outputs`` describe the main subgraph (subgraph 0), as the interpreter exposes
    them. ``weight_dtypes`` counts constant tensors (tensors with a non-empty buffer) by dtype
    across all subgraphs, e.g. ``{"int8": 1, "float32": 6}`` for a dynamic-range model.
    """

    schema_version: int
    ops: tuple[OpUsage, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: Mapping[str, bytes]
    min_runtime_version: str | None
    sparse_tensors: int
    weight_dtypes: Mapping[str, int]
    subgraphs: int
    description: str | None = None

    @property
    def custom_ops(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.ops if op.custom)

    def op_version(self, name: str) -> int | None:
        """The highest version of builtin op ``name`` in the model, or None if absent."""
        versions = [op.version for op in self.ops if op.name == name and not op.custom]
        return max(versions) if versions else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (metadata values are reported by size, not content)."""
        return {
            "schema_version": self.schema_version,
            "ops": [op.to_dict() for op in self.ops],
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "metadata": {name: len(value) for name, value in self.metadata.items()},
            "min_runtime_version": self.min_runtime_version,
            "sparse_tensors": self.sparse_tensors,
            "weight_dtypes": dict(self.weight_dtypes),
            "subgraphs": self.subgraphs,
        }


def read_tflite(data: bytes | bytearray | memoryview) -> TFLiteInfo:
    """Parse a .tflite flatbuffer: operators and versions, I/O tensors, metadata, weights.

    Args:
        data: the whole model file. It is read in place, not copied.

    Returns:
        The :class:`TFLiteInfo` of the model.

    Raises:
        ModelInputError: the bytes are not a TFLite model, are truncated or malformed, or
            declare a schema version other than 3 (the only one runtimes load).
    """
    try:
        view = memoryview(data).cast("B")
    except TypeError:  # not a buffer at all, or not a contiguous one
        raise ModelInputError(f"a TFLite model must be bytes, not {type(data).__name__}") from None
    head = bytes(view[:8])
    if len(head) < 8:
        raise ModelInputError(f"not a TFLite model: only {len(head)} bytes")
    if head[4:8] != FILE_IDENTIFIER:
        raise ModelInputError(
            f"not a TFLite model: file identifier is {head[4:8]!r}, expected {excerpt(FILE_IDENTIFIER)}"
        )
    try:
        return _parse(_Reader(view))
    except _Malformed as exc:
        raise ModelInputError(f"malformed TFLite model: {exc}") from None
    except ManifestError as exc:
        # An I/O tensor the manifest cannot describe (rank > 8, name too long...).
        raise ModelInputError(f"unsupported TFLite model: {exc.message}") from None
    except (struct.error, IndexError, ValueError, OverflowError, TypeError, MemoryError) as exc:
        # Belt and braces: the reader checks bounds before every read, so reaching this is a bug
        # in the reader, but a hostile file must still only ever produce ModelInputError.
        raise ModelInputError(f"malformed TFLite model: {type(exc).__name__}: {exc}") from None


def _parse(reader: _Reader) -> TFLiteInfo:
    model = reader.table(reader.unpack("<I", 0, "root offset"), "model")
    # table Model: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4,
    # metadata_buffer 5, metadata 6, signature_defs 7.
    schema_version: int = model.scalar(0, "<I", 0)
    if schema_version != SCHEMA_VERSION:
        raise ModelInputError(
            f"TFLite schema version {schema_version} is not supported: runtimes load version "
            f"{SCHEMA_VERSION} only"
        )
    buffers = model.tables(4, "buffer")
    codes = [_operator_code(table) for table in model.tables(1, "operator code")]
    subgraphs = model.tables(2, "subgraph")
    if not subgraphs:
        raise _Malformed("the model has no subgraph")

    uses: Counter[int] = Counter()
    sparse = 0
    weights: Counter[str] = Counter()
    main_tensors = _Tables(reader, 0, 0, "tensor")
    for number, subgraph in enumerate(subgraphs):
        # table SubGraph: tensors 0, inputs 1, outputs 2, operators 3, name 4.
        written: list[int] = list(subgraph.numbers(1, "i", f"subgraph {number} inputs") or ())
        for op in subgraph.tables(3, f"subgraph {number} operator"):
            index: int = op.scalar(0, "<I", 0)  # table Operator: opcode_index 0
            if index >= len(codes):
                raise _Malformed(f"an operator of subgraph {number} uses operator code {index}, "
                                 f"but the model lists {len(codes)}")  # fmt: skip
            uses[index] += 1
            # table Operator: inputs 1, outputs 2 (tensor indices; -1 is an omitted optional).
            written.extend(op.numbers(2, "i", f"subgraph {number} operator outputs") or ())
        tensors = subgraph.tables(0, f"subgraph {number} tensor")
        constant: set[int] = set()
        for position, tensor in enumerate(tensors):
            # table Tensor: shape 0, type 1, buffer 2, name 3, quantization 4, is_variable 5,
            # sparsity 6, shape_signature 7.
            sparse += tensor.has(6)
            buffer_index: int = tensor.scalar(2, "<I", 0)
            if buffer_index >= len(buffers):
                raise _Malformed(f"a tensor of subgraph {number} uses buffer {buffer_index}, "
                                 f"but the model has {len(buffers)}")  # fmt: skip
            # Buffer 0 is the conventional empty buffer: activations and inputs point at it.
            if buffer_index and _buffer_bytes(reader, buffers[buffer_index], buffer_index):
                weights[_dtype_name(tensor.scalar(1, "<b", 0))] += 1
                constant.add(position)
        # A tensor the caller or an operator writes must not hold model bytes: LiteRT would
        # write into the model itself (the caller's input became weights, shared by clones, or
        # crashed on a read-only mapping of it).
        for index in written:
            if index in constant:
                raise _Malformed(f"tensor {index} of subgraph {number} is a constant (it has "
                                 "data in the model) but is written as an input or an "
                                 "operator's output")  # fmt: skip
        if number == 0:
            main_tensors = tensors

    main = subgraphs[0]
    inputs = _io_specs(main, 1, main_tensors, "input")
    outputs = _io_specs(main, 2, main_tensors, "output")
    metadata = _metadata(reader, model, buffers)
    return TFLiteInfo(
        schema_version=schema_version,
        ops=_usages(codes, uses),
        inputs=inputs,
        outputs=outputs,
        metadata=MappingProxyType(metadata),
        min_runtime_version=_min_runtime(metadata.get(MIN_RUNTIME_KEY)),
        sparse_tensors=sparse,
        weight_dtypes=MappingProxyType(dict(sorted(weights.items()))),
        subgraphs=len(subgraphs),
        description=model.string(3, "model description"),
    )


def _operator_code(table: _Table) -> tuple[str, int, int]:
    # table OperatorCode: deprecated_builtin_code 0 (byte), custom_code 1, version 2 (int, default
    # 1), builtin_code 3 (int). Writers fill both codes; the byte-wide one saturates at 127
    # (PLACEHOLDER_FOR_GREATER_OP_CODES) and old writers leave builtin_code at 0, so schema.fbs
    # says to take the larger of the two.
    code = max(table.scalar(0, "<b", 0), table.scalar(3, "<i", 0))
    version: int = table.scalar(2, "<i", 1)
    if code < 0:
        raise _Malformed(f"operator code {code} is negative")
    if version < 1:
        raise _Malformed(f"operator version {version} is not positive")
    if code == CUSTOM_CODE:
        name = table.string(1, "custom operator name")
        if not name:
            raise _Malformed("a custom operator has no name")
        return name, version, code
    return BUILTIN_OPERATORS.get(code, f"BUILTIN_{code}"), version, code


def _usages(codes: list[tuple[str, int, int]], uses: Counter[int]) -> tuple[OpUsage, ...]:
    # Several operator-code entries may name the same (op, version); report each pair once.
    merged: Counter[tuple[str, int, int]] = Counter()
    for index, key in enumerate(codes):
        merged[key] += uses[index]
    return tuple(
        OpUsage(name, version, count, code)
        for (name, version, code), count in sorted(merged.items(), key=lambda item: item[0][:2])
    )


def _buffer_bytes(reader: _Reader, buffer: _Table, index: int) -> memoryview:
    # table Buffer: data 0 ([ubyte]), offset 1 (ulong), size 2 (ulong). Models over 2 GB keep
    # the bytes after the flatbuffer and record an absolute offset (> 1) and size instead.
    data = buffer.raw(0, f"buffer {index}")
    if data is not None and len(data):
        return data
    offset: int = buffer.scalar(1, "<Q", 0)
    size: int = buffer.scalar(2, "<Q", 0)
    if offset > 1:
        reader.need(offset, size, f"buffer {index}")
        return reader.buf[offset : offset + size]
    return reader.buf[0:0]


def _dtype_name(code: int) -> str:
    return TENSOR_TYPES.get(code, f"type{code}")


def _io_specs(
    subgraph: _Table, field_id: int, tensors: _Tables, kind: str
) -> tuple[TensorSpec, ...]:
    indices = subgraph.numbers(field_id, "i", f"main subgraph {kind}s") or ()
    specs = []
    for index in indices:
        if not 0 <= index < len(tensors):
            raise _Malformed(f"main subgraph {kind} {index} is not one of {len(tensors)} tensors")
        specs.append(_tensor_spec(tensors[index], kind))
    return tuple(specs)


def _tensor_spec(tensor: _Table, kind: str) -> TensorSpec:
    name = tensor.string(3, f"{kind} tensor name") or ""
    shape = tensor.numbers(0, "i", f"{kind} tensor {excerpt(name)} shape") or ()
    # shape_signature keeps -1 where the converter left a dimension dynamic (the batch, usually);
    # shape holds the 1 the interpreter allocates by default.
    signature = tensor.numbers(7, "i", f"{kind} tensor {excerpt(name)} shape signature")
    if signature is not None and len(signature) == len(shape):
        shape = signature
    elif signature:
        raise _Malformed(
            f"{kind} tensor {excerpt(name)}: shape signature rank differs from its shape"
        )
    dtype = _dtype_name(tensor.scalar(1, "<b", 0))
    if dtype not in QUANT_DTYPES:
        raise ModelInputError(
            f"{kind} tensor {excerpt(name)} has type {dtype}, which edge-sdk can't feed"
        )
    scale, zero_point = _per_tensor_quantization(tensor, name, kind)
    return TensorSpec(name, tuple(shape), dtype, scale, zero_point)


def _per_tensor_quantization(
    tensor: _Table, name: str, kind: str
) -> tuple[float | None, int | None]:
    # table QuantizationParameters: min 0, max 1, scale 2 ([float]), zero_point 3 ([long]).
    params = tensor.table(4, f"{kind} tensor {excerpt(name)} quantization")
    if params is None:
        return None, None
    scales = params.numbers(2, "f", f"{kind} tensor {excerpt(name)} scales") or ()
    zeros = params.numbers(3, "q", f"{kind} tensor {excerpt(name)} zero points") or ()
    if len(scales) != 1:
        return None, None  # float tensor, or per-channel: not a single (scale, zero_point)
    scale, zero = float(scales[0]), int(zeros[0]) if zeros else 0
    if scale == 0.0 and zero == 0:
        return None, None  # what the interpreter reports for "not quantized"
    if not (math.isfinite(scale) and scale > 0) or not -(2**31) <= zero < 2**31:
        raise _Malformed(
            f"{kind} tensor {excerpt(name)} has quantization {excerpt(scale)}, zero point {zero}"
        )
    return scale, zero


def _metadata(reader: _Reader, model: _Table, buffers: _Tables) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    copies: dict[int, bytes] = {}
    for entry in model.tables(6, "metadata"):
        # table Metadata: name 0, buffer 1 (index into Model.buffers).
        name = entry.string(0, "metadata name")
        index: int = entry.scalar(1, "<I", 0)
        if name is None:
            raise _Malformed("a metadata entry has no name")
        if index >= len(buffers):
            raise _Malformed(f"metadata {excerpt(name)} uses buffer {index} of {len(buffers)}")
        if name not in found:
            # Once per buffer: many names on one large buffer must not copy it many times.
            if index not in copies:
                copies[index] = bytes(_buffer_bytes(reader, buffers[index], index))
            found[name] = copies[index]
    return found


def _min_runtime(value: bytes | None) -> str | None:
    if value is None:
        return None
    # The converter reserves a 16-byte buffer and writes the version at its start, NUL-padded.
    text = value.rstrip(b"\x00")
    if not text:
        return None
    if not re.fullmatch(rb"\d{1,4}(\.\d{1,4}){1,3}", text):
        raise _Malformed(f"metadata {MIN_RUNTIME_KEY} is not a version: {excerpt(text)}")
    return text.decode("ascii")


# -- runtimes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeSupport:
    """Which op versions a runtime package release runs, in terms of the op-version table.

    It runs every (op, version) that ``runtime_version.cc`` dates at or before ``tflite_release``
    except those in ``gaps`` (measured exceptions, see :mod:`edge_sdk.format.op_versions`).
    """

    runtime: str
    runtime_version: str
    tflite_release: str
    gaps: frozenset[tuple[str, int]] = frozenset()


_TFLITE_RUNTIME = ("tflite-runtime",)
_TENSORFLOW = ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tensorflow-macos")
_AI_EDGE_LITERT = ("ai-edge-litert",)
KNOWN_RUNTIMES = _TFLITE_RUNTIME + _TENSORFLOW + _AI_EDGE_LITERT


def runtime_support(runtime: str, runtime_version: str) -> RuntimeSupport:
    """Map a runtime package and its version to the op versions it runs.

    ``tflite-runtime`` X.Y.Z and ``tensorflow`` X.Y.Z are the TFLite of TensorFlow X.Y.Z;
    ``ai-edge-litert`` wheels are cut from TensorFlow master, so they map through the measured
    table :data:`edge_sdk.format.op_versions.AI_EDGE_LITERT`.

    Raises:
        CompatibilityError: the runtime is unknown, or its version cannot be parsed or predates
            every version edge-sdk knows how to judge.
    """
    name = runtime.strip().lower().replace("_", "-")
    release = _parse_release(runtime_version)
    if name not in KNOWN_RUNTIMES:
        raise CompatibilityError(
            f"cannot judge compatibility with unknown runtime {excerpt(runtime)}",
            hint=f"known runtimes: {', '.join(KNOWN_RUNTIMES)}",
        )
    if release is None:
        raise CompatibilityError(f"cannot parse {runtime} version {excerpt(runtime_version)}")
    if name in _AI_EDGE_LITERT:
        rows = [row for row in AI_EDGE_LITERT if _table_release(row[0]) <= release]
        if not rows:
            raise CompatibilityError(
                f"ai-edge-litert {runtime_version} predates every version edge-sdk has measured",
                hint=f"use ai-edge-litert {AI_EDGE_LITERT[0][0]} or newer",
            )
        _, tf_release, gaps = rows[-1]
        return RuntimeSupport(name, runtime_version, tf_release, gaps | UNREGISTERED)
    if release < (2, 0, 0) and name in _TFLITE_RUNTIME:
        raise CompatibilityError(f"tflite-runtime {runtime_version} predates 2.0: too old to judge")
    gaps = TENSORFLOW_GAPS.get(release[:2], frozenset()) if name in _TENSORFLOW else frozenset()
    return RuntimeSupport(name, runtime_version, _release_text(release), gaps | UNREGISTERED)


#: Custom ops a builtin delegate provides, by delegate, with the first TFLite release whose
#: delegate has them. LiteRT builds a model whose custom op no kernel resolves, and the delegate
#: claims the node (XNNPACK: MediaPipe's transposed convolution, pooling with argmax and
#: unpooling, float32 with constant weights); without the delegate the model fails to prepare.
DELEGATE_CUSTOM_OPS: dict[str, dict[str, str]] = {
    "xnnpack": {
        "Convolution2DTransposeBias": "2.4.0",
        "MaxPoolingWithArgmax2D": "2.4.0",
        "MaxUnpooling2D": "2.4.0",
    },
}


def delegate_custom_ops(delegates: Iterable[str], tflite_release: str) -> frozenset[str]:
    """The custom ops the builtin ``delegates`` (e.g. ``["xnnpack"]``) provide at ``tflite_release``."""
    have = _table_release(tflite_release)
    return frozenset(
        op
        for delegate in delegates
        for op, since in DELEGATE_CUSTOM_OPS.get(delegate, {}).items()
        if _table_release(since) <= have
    )


def tflite_release(runtime: str, runtime_version: str) -> str:
    """The TensorFlow (Lite) release a runtime package version corresponds to, e.g. ``"2.14.0"``.

    Raises:
        CompatibilityError: as :func:`runtime_support`.
    """
    return runtime_support(runtime, runtime_version).tflite_release


# -- the verdict -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpProblem:
    """One reason the model may not load on the runtime.

    ``needs`` is the first TensorFlow release that runs the op version, ``"unreleased"``,
    or ``""`` when nothing is known (unknown op or version, custom op).
    """

    op: str
    version: int | None
    needs: str
    kind: str

    def describe(self, runtime: str = "the runtime") -> str:
        """One sentence, naming the op, its version and what it needs."""
        what = f"{self.op} v{self.version}"
        if self.kind == TOO_NEW:
            return f"{what} needs TFLite {self.needs} or newer; {runtime} is older"
        if self.kind == UNRELEASED:
            return f"{what} is newer than every TensorFlow release; {runtime} cannot run it"
        if self.kind == UNKNOWN_OP:
            return f"{what} is an operator unknown to the op-version table"
        if self.kind == UNKNOWN_VERSION:
            return f"{what}: this version is unknown to the op-version table"
        if self.kind == NOT_REGISTERED:
            return f"{what} is dated TFLite {self.needs}, but {runtime} does not register it"
        if self.kind == FLEX_OP:
            return f"custom op {self.op} needs the TensorFlow select-ops (Flex) delegate"
        if self.kind == CUSTOM_OP:
            by = [d for d, ops in DELEGATE_CUSTOM_OPS.items() if self.op in ops]
            return f"custom op {self.op} is not provided by {runtime}" + (
                f" without the {by[0]} delegate" if by else ""
            )
        return f"the model's {MIN_RUNTIME_KEY} asks for TFLite {self.needs}; {runtime} is older"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "version": self.version, "needs": self.needs, "kind": self.kind}


@dataclass(frozen=True)
class CompatReport:
    """The verdict of :func:`check_compatibility`; ``ok`` exactly when there are no problems."""

    ok: bool
    runtime: str
    runtime_version: str
    tflite_release: str
    problems: tuple[OpProblem, ...]
    required_release: str | None = None

    def __post_init__(self) -> None:
        if self.ok == bool(self.problems):
            raise ValueError("CompatReport.ok must be true exactly when there are no problems")

    @property
    def target(self) -> str:
        return f"{self.runtime} {self.runtime_version}"

    def summary(self) -> str:
        """Human text: one line when compatible, one line per problem otherwise."""
        head = f"{self.target} (TFLite {self.tflite_release})"
        if self.ok:
            if not self.required_release:
                return f"compatible with {head}"
            return f"compatible with {head}; the model needs TFLite {self.required_release}"
        lines = [f"not compatible with {head}:"]
        lines += [f"  - {problem.describe(self.target)}" for problem in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for a manifest's ``reports``."""
        return {
            "ok": self.ok,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "tflite_release": self.tflite_release,
            "required_release": self.required_release,
            "problems": [problem.to_dict() for problem in self.problems],
        }

    def raise_for_problems(self) -> None:
        """Raise :class:`CompatibilityError` naming every problem; do nothing when ``ok``."""
        if self.ok:
            return
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        raise CompatibilityError(
            f"model cannot run on {self.target}: {first.describe(self.target)}{more}\n"
            + self.summary(),
            hint=_hint(self),
        )


def _hint(report: CompatReport) -> str:
    dense = [p for p in report.problems if p.op == "FULLY_CONNECTED" and (p.version or 0) >= 12]
    if dense:
        # TF >= 2.17 quantizes Dense weights per channel (FULLY_CONNECTED v12+); the per-tensor
        # form is version 9 and runs on TFLite 2.3+ (tests/test_compat.py proves it on 2.14).
        return (
            "for a dynamic-range model, convert with "
            "converter._experimental_disable_per_channel_quantization_for_dense_layers = True, "
            "or target a newer runtime"
        )
    return "convert with an older TensorFlow, or target a profile whose runtime is newer"


def check_compatibility(
    info: TFLiteInfo,
    runtime: str,
    runtime_version: str,
    *,
    allow_custom_ops: Iterable[str] = (),
    delegates: Iterable[str] = (),
) -> CompatReport:
    """Decide whether ``runtime`` at ``runtime_version`` can load the model ``info`` describes.

    Every operator code is checked (the interpreter resolves them all at load time, used or
    not) and so is the model's ``min_runtime_version`` metadata when it asks for more than the
    ops explain.

    Args:
        info: from :func:`read_tflite`.
        runtime: ``"ai-edge-litert"``, ``"tflite-runtime"`` or ``"tensorflow"``.
        runtime_version: the package version, e.g. ``"2.14.0"``.
        allow_custom_ops: custom op names the target provides (a delegate or a resolver that
            registers them); any other custom op is a problem.
        delegates: the builtin delegates the target applies (``"xnnpack"``); the custom ops
            they provide (:data:`DELEGATE_CUSTOM_OPS`) are allowed too.

    Returns:
        A :class:`CompatReport`; call :meth:`CompatReport.raise_for_problems` to enforce it.

    Raises:
        CompatibilityError: the runtime or its version is unknown (see :func:`runtime_support`).
    """
    support = runtime_support(runtime, runtime_version)
    have = _table_release(support.tflite_release)
    allowed = frozenset(allow_custom_ops) | delegate_custom_ops(delegates, support.tflite_release)
    problems: list[OpProblem] = []
    required: _Release | None = None
    for op in info.ops:
        problem, needs = _judge(op, have, support.gaps, allowed)
        if needs is not None and (required is None or needs > required):
            required = needs
        if problem is not None:
            problems.append(problem)
    declared = _parse_release(info.min_runtime_version or "")
    if declared is not None and declared > have and (required is None or declared > required):
        problems.append(OpProblem(MIN_RUNTIME_KEY, None, _release_text(declared), MODEL_METADATA))
    return CompatReport(
        ok=not problems,
        runtime=support.runtime,
        runtime_version=runtime_version,
        tflite_release=support.tflite_release,
        problems=tuple(problems),
        required_release=None if required is None else _release_text(required),
    )


def _judge(
    op: OpUsage, have: _Release, gaps: frozenset[tuple[str, int]], allowed: frozenset[str]
) -> tuple[OpProblem | None, _Release | None]:
    """(the problem, if any; the release the op version needs, if the table knows it)."""
    if op.custom:
        if op.name in allowed:
            return None, None
        kind = FLEX_OP if op.name.startswith("Flex") else CUSTOM_OP
        return OpProblem(op.name, op.version, "", kind), None
    if not op.known or op.name not in MIN_RUNTIME:
        return OpProblem(op.name, op.version, "", UNKNOWN_OP), None
    dates = MIN_RUNTIME[op.name]
    date = dates[op.version - 1] if op.version <= len(dates) else None
    if date is None:
        return OpProblem(op.name, op.version, "", UNKNOWN_VERSION), None
    needs = _UNRELEASED if date == "" else _table_release(date)
    if needs > have:
        kind = UNRELEASED if needs >= _UNRELEASED else TOO_NEW
        return OpProblem(op.name, op.version, _release_text(needs), kind), needs
    if (op.name, op.version) in gaps:
        return OpProblem(op.name, op.version, _release_text(needs), NOT_REGISTERED), needs
    return None, needs
