"""A .tflite past 2 GiB with the layout TFLite's converter writes for big models, made in seconds.

The converter keeps a model over 2 GiB out of the FlatBuffer (whose 32-bit offsets stop there):
each weight buffer goes after it, and ``Buffer.offset``/``Buffer.size`` (u64, from the start of the
file) say where. It switches by itself past 2 GiB (a 2.4 GB model of four 12,288² Dense layers:
80 s and 19.9 GB peak RSS to convert here), and ``_experimental_use_buffer_offset`` asks for the
same layout for a small model. :func:`relocate_buffers` then moves those buffers past a gap of
zeros, patching each offset in place, so the file is the converter's own layout with the weights
past 2³¹: what a reader, the bundle format and LiteRT meet in a real multi-GB model, from a model
that converts in seconds. The gap is written as a hole (a sparse file), so it costs no disk.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

#: Buffer table fields (schema.fbs): data 0, offset 1, size 2 — vtable slots 4, 6, 8.
_OFFSET_SLOT = 6


def convert_with_buffer_offsets(model: Any) -> bytes:
    """``model`` (Keras) converted as the converter writes models past 2 GiB."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter._experimental_use_buffer_offset = True
    return bytes(converter.convert())


def external_buffers(data: bytes) -> list[tuple[int, int, int]]:
    """(position of the offset field, offset, size) of every buffer stored after the FlatBuffer."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(data, 0)
    found = []
    for index in range(root.BuffersLength()):
        buffer = root.Buffers(index)
        if buffer.Offset() > 1:
            slot = buffer._tab.Offset(_OFFSET_SLOT)
            found.append((buffer._tab.Pos + slot, buffer.Offset(), buffer.Size()))
    return found


def relocate_buffers(data: bytes, path: Path, gap: int) -> int:
    """Write ``data`` to ``path`` with its external buffers ``gap`` bytes later; the file size."""
    buffers = external_buffers(data)
    if not buffers:
        raise ValueError("the model keeps its weights inside the FlatBuffer")
    start = min(offset for _, offset, _ in buffers)
    if gap % 16:
        raise ValueError("the gap must keep the converter's 16-byte alignment")
    head = bytearray(data[:start])
    for position, offset, _ in buffers:
        struct.pack_into("<Q", head, position, offset + gap)
    with open(path, "wb") as out:
        out.write(head)
        out.seek(start + gap)  # a hole: zeros that take no disk
        out.write(data[start:])
    return start + gap + len(data) - start


def dense_model(units: int = 256, layers: int = 3, seed: int = 0) -> Any:
    """A Keras MLP with weights large enough to matter and outputs that tell them apart."""
    import keras

    inputs = keras.Input((units,), name="features")
    x = inputs
    rng = np.random.default_rng(seed)
    for i in range(layers):
        dense = keras.layers.Dense(units, activation="tanh" if i < layers - 1 else None)
        x = dense(x)
        dense.set_weights([rng.normal(0, 1 / np.sqrt(units), (units, units)).astype(np.float32),
                           rng.normal(0, 0.1, units).astype(np.float32)])  # fmt: skip
    return keras.Model(inputs, x)
