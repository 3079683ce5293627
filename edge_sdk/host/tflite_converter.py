"""HOST ONLY: TFLiteConverter set up for a quantization mode, run, its failures explained.

TensorFlow is imported inside the functions that need it (extra ``host``), never at module level.
"""

from __future__ import annotations

import io
import re
from typing import Any

from edge_sdk.errors import (
    ConversionError,
    excerpt,
)

from .datasets import MAX_CALIBRATION_SAMPLES, Dataset
from .source_model import SourceModel
from .tensorflow_import import import_tensorflow, native_output_captured

NEEDS_CALIBRATION = ("int8", "int16x8")


def make_converter(
    source: SourceModel,
    quantize: str,
    io_dtype: str,
    calibration: Dataset | None,
    per_channel_dense: bool,
) -> Any:
    tf = import_tensorflow()
    conv = source.make_converter()
    if quantize == "none":
        return conv
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if quantize in NEEDS_CALIBRATION:
        assert calibration is not None
        samples = min(len(calibration), MAX_CALIBRATION_SAMPLES)

        def representative() -> Any:
            for i in range(samples):
                sample = {
                    n: calibration.inputs[n][i : i + 1].astype(source.dtype(j))
                    for j, n in enumerate(source.input_names)
                }
                # By name for several inputs: the converter's input order is not the model's
                # (a list in Keras order calibrated 'sensor_a' with 'sensor_b' data).
                yield sample if len(sample) > 1 else list(sample.values())

        conv.representative_dataset = representative
        if quantize == "int8":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io_dtype == "int8":
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
        else:
            conv.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
    if not per_channel_dense:
        # Older runtimes (tflite-runtime 2.14) lack the FULLY_CONNECTED versions that per-channel
        # dense quantization produces; per-tensor keeps the op at a version they know.
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return conv


#: Converter errors that mean "this needs TensorFlow ops TFLite has no builtin for" (Flex).
_FLEX_MARKERS = ("SELECT_TF_OPS", "Select TF ops", "TensorList", "lower_tensor_list_ops",
                 "neither a custom op nor a flex op", "ops are not supported")  # fmt: skip
#: A TensorFlow op in the converter's text: ops are CamelCase (tf.BitwiseAnd); lowercase names
#: there are dtypes and attributes (tf.float32, tf.resource, tf.entry_function), not ops.
_TF_OP = re.compile(r"'?tf\.([A-Z][A-Za-z0-9_]{0,59})'?")
_RECURRENT = ("LSTM", "GRU", "SimpleRNN", "RNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")


def _rolled_recurrent_layers(model: Any) -> list[str]:
    """Recurrent layers that are not unrolled (each becomes a TensorList while-loop)."""
    found: list[str] = []
    stack = list(getattr(model, "layers", []) or [])
    while stack:
        layer = stack.pop(0)
        inner = [getattr(layer, a, None) for a in ("forward_layer", "backward_layer", "layer")]
        stack.extend(x for x in inner if x is not None)
        stack.extend(getattr(layer, "layers", []) or [])
        if type(layer).__name__ in _RECURRENT and not getattr(layer, "unroll", False):
            found.append(f"{type(layer).__name__} {excerpt(str(getattr(layer, 'name', '?')), 40)}")
    return list(dict.fromkeys(found))


def run_converter(conv: Any, what: str, source: SourceModel | None = None) -> bytes:
    captured = io.StringIO()
    try:
        with native_output_captured() as captured:
            return bytes(conv.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
        text = f"{exc}\n{captured.getvalue()}"
        if any(marker in text for marker in _FLEX_MARKERS):
            raise flex_error(what, text, source) from None
        message = (str(exc).strip() or captured.getvalue().strip()).splitlines()
        odd = _odd_tensor_names(source) if source is not None else []
        raise ConversionError(
            f"TFLite conversion ({what}) failed: {excerpt((message or [type(exc).__name__])[-1], 400)}",
            hint=(
                f"the model has tensor names the converter may not take ({', '.join(odd[:4])}): "
                "rename them with letters, digits and '_' only (keras.Input(..., name=...))"
                if odd
                else None
            ),
        ) from None


#: Names TFLite signatures carry safely; ':' (TensorFlow's tensor suffix) and spaces break them.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-/]+")


def _odd_tensor_names(source: SourceModel) -> list[str]:
    return [excerpt(n, 60) for n in (*source.input_names, *source.output_names)
            if not _PLAIN_NAME.fullmatch(n)]  # fmt: skip


def flex_error(what: str, text: str, source: SourceModel | None) -> ConversionError:
    ops = sorted(set(_TF_OP.findall(text)))[:8]
    rolled = _rolled_recurrent_layers(source.keras_model) if source is not None else []
    because = (
        f" ({', '.join(rolled[:6])}: a recurrent layer becomes a TensorList loop)" if rolled else ""
    )
    listed = f" (tf.{', tf.'.join(ops)})" if ops else ""
    return ConversionError(
        f"TFLite conversion ({what}) needs TensorFlow ops that have no TFLite builtin{listed}"
        f"{because}. The converter suggests SELECT_TF_OPS (Flex ops), but neither device runtime "
        "(ai-edge-litert, tflite-runtime) ships the Flex delegate, so that model could not run "
        "on a board",
        hint=(
            "build the recurrent layers with unroll=True and a fixed sequence length "
            "(keras.Input((steps, features)), keras.layers.LSTM(units, unroll=True)): unrolled, "
            "they convert to builtin ops"
            if rolled
            else "replace the layers that use those ops with ones TFLite has builtins for"
        ),
    )
