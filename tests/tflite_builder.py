"""Build small .tflite flatbuffers from scratch, for tests that need a shape TensorFlow won't make.

A converter never writes a custom op next to a sparse tensor, an op version from the future, or a
metadata buffer stored past the end of the flatbuffer; real runtimes and the parser still have to
meet such files. This writer uses only the ``flatbuffers`` runtime and the field ids of the
public schema (``tensorflow/compiler/mlir/lite/schema/schema.fbs``); it mirrors, in the other
direction, what :mod:`edge_sdk.format.compat` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import flatbuffers

CUSTOM = 32
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
DTYPES = {
    "float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "string": 5, "bool": 6,
    "int16": 7, "complex64": 8, "int8": 9, "float64": 10, "bfloat16": 18,
}  # fmt: skip


@dataclass
class OpCode:
    builtin: int
    version: int = 1
    custom: str | None = None
    # Write only the byte-wide field, as converters before TF 2.5 did (builtin_code stays 0).
    legacy: bool = False


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    buffer: int = 0
    shape_signature: tuple[int, ...] | None = None
    scale: Sequence[float] = ()
    zero_point: Sequence[int] = ()
    sparse: bool = False


@dataclass
class Op:
    opcode: int
    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    #: A custom op's options, as the runtime's kernel (or delegate) reads them.
    custom_options: bytes = b""


@dataclass
class Buffer:
    data: bytes = b""
    # For buffers kept outside the flatbuffer (models over 2 GB): absolute file offset and size.
    offset: int = 0
    size: int = 0


@dataclass
class Spec:
    opcodes: list[OpCode] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    buffers: list[Buffer] = field(default_factory=lambda: [Buffer()])
    metadata: dict[str, int] = field(default_factory=dict)
    extra_subgraphs: int = 0
    # False writes a model whose subgraph vector is empty (no runnable graph at all).
    main_subgraph: bool = True
    schema_version: int = 3
    file_identifier: bytes = b"TFL3"
    trailer: bytes = b""


def _vector(b: flatbuffers.Builder, kind: str, values: Sequence[object]) -> int:
    size = {"i32": 4, "i64": 8, "f32": 4, "u8": 1, "off": 4}[kind]
    b.StartVector(size, len(values), size)
    prepend = {
        "i32": b.PrependInt32, "i64": b.PrependInt64, "f32": b.PrependFloat32,
        "u8": b.PrependUint8, "off": b.PrependUOffsetTRelative,
    }[kind]  # fmt: skip
    for value in reversed(values):
        prepend(value)
    return int(b.EndVector())


def _tensor(b: flatbuffers.Builder, t: Tensor) -> int:
    name = b.CreateString(t.name)
    shape = _vector(b, "i32", t.shape)
    signature = _vector(b, "i32", t.shape_signature) if t.shape_signature is not None else None
    quant = None
    if t.scale or t.zero_point:
        scale = _vector(b, "f32", list(t.scale))
        zero = _vector(b, "i64", list(t.zero_point))
        b.StartObject(7)
        b.PrependUOffsetTRelativeSlot(2, scale, 0)
        b.PrependUOffsetTRelativeSlot(3, zero, 0)
        quant = b.EndObject()
    sparsity = None
    if t.sparse:
        order = _vector(b, "i32", list(range(len(t.shape))))
        b.StartObject(3)
        b.PrependUOffsetTRelativeSlot(0, order, 0)
        sparsity = b.EndObject()
    b.StartObject(8)
    b.PrependUOffsetTRelativeSlot(0, shape, 0)
    b.PrependUint8Slot(1, DTYPES[t.dtype], 0)
    b.PrependUint32Slot(2, t.buffer, 0)
    b.PrependUOffsetTRelativeSlot(3, name, 0)
    if quant is not None:
        b.PrependUOffsetTRelativeSlot(4, quant, 0)
    if sparsity is not None:
        b.PrependUOffsetTRelativeSlot(6, sparsity, 0)
    if signature is not None:
        b.PrependUOffsetTRelativeSlot(7, signature, 0)
    return int(b.EndObject())


def _subgraph(b: flatbuffers.Builder, spec: Spec, empty: bool = False) -> int:
    tensors = [] if empty else [_tensor(b, t) for t in spec.tensors]
    ops = []
    for op in [] if empty else spec.ops:
        ins, outs = _vector(b, "i32", op.inputs), _vector(b, "i32", op.outputs)
        options = _vector(b, "u8", list(op.custom_options)) if op.custom_options else None
        b.StartObject(7)
        b.PrependUint32Slot(0, op.opcode, 0)
        b.PrependUOffsetTRelativeSlot(1, ins, 0)
        b.PrependUOffsetTRelativeSlot(2, outs, 0)
        if options is not None:
            b.PrependUOffsetTRelativeSlot(5, options, 0)
        ops.append(b.EndObject())
    tensor_vec, op_vec = _vector(b, "off", tensors), _vector(b, "off", ops)
    ins = _vector(b, "i32", [] if empty else spec.inputs)
    outs = _vector(b, "i32", [] if empty else spec.outputs)
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tensor_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, ins, 0)
    b.PrependUOffsetTRelativeSlot(2, outs, 0)
    b.PrependUOffsetTRelativeSlot(3, op_vec, 0)
    return int(b.EndObject())


def build(spec: Spec) -> bytes:
    """Serialize ``spec`` as a .tflite flatbuffer (plus ``spec.trailer`` appended)."""
    b = flatbuffers.Builder(1024)
    codes = []
    for code in spec.opcodes:
        custom = b.CreateString(code.custom) if code.custom is not None else None
        b.StartObject(4)
        # The byte-wide legacy field saturates at 127; the int32 field carries the real code.
        b.PrependInt8Slot(0, min(code.builtin, PLACEHOLDER_FOR_GREATER_OP_CODES), 0)
        if custom is not None:
            b.PrependUOffsetTRelativeSlot(1, custom, 0)
        b.PrependInt32Slot(2, code.version, 1)
        if not code.legacy:
            b.PrependInt32Slot(3, code.builtin, 0)
        codes.append(b.EndObject())
    subgraphs = [_subgraph(b, spec)] if spec.main_subgraph else []
    subgraphs += [_subgraph(b, spec, empty=True) for _ in range(spec.extra_subgraphs)]
    buffers = []
    for buf in spec.buffers:
        data = _vector(b, "u8", list(buf.data)) if buf.data else None
        b.StartObject(3)
        if data is not None:
            b.PrependUOffsetTRelativeSlot(0, data, 0)
        b.PrependUint64Slot(1, buf.offset, 0)
        b.PrependUint64Slot(2, buf.size, 0)
        buffers.append(b.EndObject())
    metadata = []
    for name, index in spec.metadata.items():
        text = b.CreateString(name)
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, text, 0)
        b.PrependUint32Slot(1, index, 0)
        metadata.append(b.EndObject())
    code_vec, sub_vec = _vector(b, "off", codes), _vector(b, "off", subgraphs)
    buf_vec, meta_vec = _vector(b, "off", buffers), _vector(b, "off", metadata)
    description = b.CreateString("edge-sdk test model")
    b.StartObject(8)
    b.PrependUint32Slot(0, spec.schema_version, 0)
    b.PrependUOffsetTRelativeSlot(1, code_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, sub_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, description, 0)
    b.PrependUOffsetTRelativeSlot(4, buf_vec, 0)
    b.PrependUOffsetTRelativeSlot(6, meta_vec, 0)
    b.Finish(b.EndObject(), file_identifier=spec.file_identifier)
    return bytes(b.Output()) + spec.trailer


def op_only_model(builtin: int, version: int, custom: str | None = None) -> bytes:
    """A model that lists one operator code and runs nothing.

    The interpreter resolves every operator code while it builds, before any node is prepared,
    so loading this model answers exactly one question: does the runtime register this op at
    this version (or this custom op)?
    """
    return build(Spec(opcodes=[OpCode(builtin, version, custom)]))
