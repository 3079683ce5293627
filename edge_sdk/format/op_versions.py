"""Data for :mod:`edge_sdk.format.compat`: builtin operator names and op-version minimum runtimes.

Two tables, kept as plain literals so the device side reads them without TensorFlow:

``BUILTIN_OPERATORS``
    The ``BuiltinOperator`` enum of the TFLite flatbuffer schema,
    ``tensorflow/compiler/mlir/lite/schema/schema.fbs`` as shipped with TensorFlow 2.21.0
    (codes 0-209, checked against the generated schema module of the ``tensorflow`` 2.21.0 and
    ``ai-edge-litert`` 2.3.0 wheels, which agree).

``MIN_RUNTIME``
    The ``op_version_map`` of ``FindMinimumRuntimeVersionForOp`` in
    ``tensorflow/compiler/mlir/lite/tools/versioning/runtime_version.cc`` (it lived in
    ``tensorflow/lite/tools/versioning/runtime_version.cc`` before TF 2.16), read from
    tensorflow/tensorflow at commit ``03f49db5a23ec2b22a59f3f3d72e5744469ea30b`` (master after the
    2.21 release: it already lists 2.22.0 and 2.23.0 entries, which no released TensorFlow has).
    For each op, item ``i`` of the tuple is the first TensorFlow release whose TFLite runtime
    runs version ``i + 1`` of the op; ``None`` marks a version the map does not list (BROADCAST_TO
    version 1 was rolled back upstream). An empty string would mean "not released yet"; the
    upstream file uses one while a new op version waits for its release, so the code that reads
    this table must treat ``""`` as newer than every release.

To refresh: regenerate ``BUILTIN_OPERATORS`` from the schema's enum and re-read the map; keep the
commit above in step. ``tests/test_compat.py`` probes real runtimes against this table.
"""

from __future__ import annotations

#: TFLite schema version this module describes (``Model.version``; the runtime only accepts 3).
SCHEMA_VERSION = 3

# fmt: off
#: Builtin operator code -> name, from ``enum BuiltinOperator : int32`` in schema.fbs.
BUILTIN_OPERATORS: dict[int, str] = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 2: "CONCATENATION", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE", 6: "DEQUANTIZE", 7: "EMBEDDING_LOOKUP", 8: "FLOOR", 9: "FULLY_CONNECTED",
    10: "HASHTABLE_LOOKUP", 11: "L2_NORMALIZATION", 12: "L2_POOL_2D",
    13: "LOCAL_RESPONSE_NORMALIZATION", 14: "LOGISTIC", 15: "LSH_PROJECTION", 16: "LSTM",
    17: "MAX_POOL_2D", 18: "MUL", 19: "RELU", 20: "RELU_N1_TO_1", 21: "RELU6", 22: "RESHAPE",
    23: "RESIZE_BILINEAR", 24: "RNN", 25: "SOFTMAX", 26: "SPACE_TO_DEPTH", 27: "SVDF", 28: "TANH",
    29: "CONCAT_EMBEDDINGS", 30: "SKIP_GRAM", 31: "CALL", 32: "CUSTOM",
    33: "EMBEDDING_LOOKUP_SPARSE", 34: "PAD", 35: "UNIDIRECTIONAL_SEQUENCE_RNN", 36: "GATHER",
    37: "BATCH_TO_SPACE_ND", 38: "SPACE_TO_BATCH_ND", 39: "TRANSPOSE", 40: "MEAN", 41: "SUB",
    42: "DIV", 43: "SQUEEZE", 44: "UNIDIRECTIONAL_SEQUENCE_LSTM", 45: "STRIDED_SLICE",
    46: "BIDIRECTIONAL_SEQUENCE_RNN", 47: "EXP", 48: "TOPK_V2", 49: "SPLIT", 50: "LOG_SOFTMAX",
    51: "DELEGATE", 52: "BIDIRECTIONAL_SEQUENCE_LSTM", 53: "CAST", 54: "PRELU", 55: "MAXIMUM",
    56: "ARG_MAX", 57: "MINIMUM", 58: "LESS", 59: "NEG", 60: "PADV2", 61: "GREATER",
    62: "GREATER_EQUAL", 63: "LESS_EQUAL", 64: "SELECT", 65: "SLICE", 66: "SIN",
    67: "TRANSPOSE_CONV", 68: "SPARSE_TO_DENSE", 69: "TILE", 70: "EXPAND_DIMS", 71: "EQUAL",
    72: "NOT_EQUAL", 73: "LOG", 74: "SUM", 75: "SQRT", 76: "RSQRT", 77: "SHAPE", 78: "POW",
    79: "ARG_MIN", 80: "FAKE_QUANT", 81: "REDUCE_PROD", 82: "REDUCE_MAX", 83: "PACK",
    84: "LOGICAL_OR", 85: "ONE_HOT", 86: "LOGICAL_AND", 87: "LOGICAL_NOT", 88: "UNPACK",
    89: "REDUCE_MIN", 90: "FLOOR_DIV", 91: "REDUCE_ANY", 92: "SQUARE", 93: "ZEROS_LIKE",
    94: "FILL", 95: "FLOOR_MOD", 96: "RANGE", 97: "RESIZE_NEAREST_NEIGHBOR", 98: "LEAKY_RELU",
    99: "SQUARED_DIFFERENCE", 100: "MIRROR_PAD", 101: "ABS", 102: "SPLIT_V", 103: "UNIQUE",
    104: "CEIL", 105: "REVERSE_V2", 106: "ADD_N", 107: "GATHER_ND", 108: "COS", 109: "WHERE",
    110: "RANK", 111: "ELU", 112: "REVERSE_SEQUENCE", 113: "MATRIX_DIAG", 114: "QUANTIZE",
    115: "MATRIX_SET_DIAG", 116: "ROUND", 117: "HARD_SWISH", 118: "IF", 119: "WHILE",
    120: "NON_MAX_SUPPRESSION_V4", 121: "NON_MAX_SUPPRESSION_V5", 122: "SCATTER_ND",
    123: "SELECT_V2", 124: "DENSIFY", 125: "SEGMENT_SUM", 126: "BATCH_MATMUL",
    127: "PLACEHOLDER_FOR_GREATER_OP_CODES", 128: "CUMSUM", 129: "CALL_ONCE", 130: "BROADCAST_TO",
    131: "RFFT2D", 132: "CONV_3D", 133: "IMAG", 134: "REAL", 135: "COMPLEX_ABS", 136: "HASHTABLE",
    137: "HASHTABLE_FIND", 138: "HASHTABLE_IMPORT", 139: "HASHTABLE_SIZE", 140: "REDUCE_ALL",
    141: "CONV_3D_TRANSPOSE", 142: "VAR_HANDLE", 143: "READ_VARIABLE", 144: "ASSIGN_VARIABLE",
    145: "BROADCAST_ARGS", 146: "RANDOM_STANDARD_NORMAL", 147: "BUCKETIZE", 148: "RANDOM_UNIFORM",
    149: "MULTINOMIAL", 150: "GELU", 151: "DYNAMIC_UPDATE_SLICE", 152: "RELU_0_TO_1",
    153: "UNSORTED_SEGMENT_PROD", 154: "UNSORTED_SEGMENT_MAX", 155: "UNSORTED_SEGMENT_SUM",
    156: "ATAN2", 157: "UNSORTED_SEGMENT_MIN", 158: "SIGN", 159: "BITCAST", 160: "BITWISE_XOR",
    161: "RIGHT_SHIFT", 162: "STABLEHLO_LOGISTIC", 163: "STABLEHLO_ADD", 164: "STABLEHLO_DIVIDE",
    165: "STABLEHLO_MULTIPLY", 166: "STABLEHLO_MAXIMUM", 167: "STABLEHLO_RESHAPE",
    168: "STABLEHLO_CLAMP", 169: "STABLEHLO_CONCATENATE", 170: "STABLEHLO_BROADCAST_IN_DIM",
    171: "STABLEHLO_CONVOLUTION", 172: "STABLEHLO_SLICE", 173: "STABLEHLO_CUSTOM_CALL",
    174: "STABLEHLO_REDUCE", 175: "STABLEHLO_ABS", 176: "STABLEHLO_AND", 177: "STABLEHLO_COSINE",
    178: "STABLEHLO_EXPONENTIAL", 179: "STABLEHLO_FLOOR", 180: "STABLEHLO_LOG",
    181: "STABLEHLO_MINIMUM", 182: "STABLEHLO_NEGATE", 183: "STABLEHLO_OR", 184: "STABLEHLO_POWER",
    185: "STABLEHLO_REMAINDER", 186: "STABLEHLO_RSQRT", 187: "STABLEHLO_SELECT",
    188: "STABLEHLO_SUBTRACT", 189: "STABLEHLO_TANH", 190: "STABLEHLO_SCATTER",
    191: "STABLEHLO_COMPARE", 192: "STABLEHLO_CONVERT", 193: "STABLEHLO_DYNAMIC_SLICE",
    194: "STABLEHLO_DYNAMIC_UPDATE_SLICE", 195: "STABLEHLO_PAD", 196: "STABLEHLO_IOTA",
    197: "STABLEHLO_DOT_GENERAL", 198: "STABLEHLO_REDUCE_WINDOW", 199: "STABLEHLO_SORT",
    200: "STABLEHLO_WHILE", 201: "STABLEHLO_GATHER", 202: "STABLEHLO_TRANSPOSE", 203: "DILATE",
    204: "STABLEHLO_RNG_BIT_GENERATOR", 205: "REDUCE_WINDOW", 206: "STABLEHLO_COMPOSITE",
    207: "STABLEHLO_SHIFT_LEFT", 208: "STABLEHLO_CBRT", 209: "STABLEHLO_CASE",
}

#: op name -> (min TF release for version 1, for version 2, ...), from runtime_version.cc.
MIN_RUNTIME: dict[str, tuple[str | None, ...]] = {
    "AVERAGE_POOL_2D": ("1.5.0", "1.14.0", "2.3.0"),
    "BATCH_MATMUL": ("2.3.0", "2.3.0", "2.4.0", "2.5.0"),
    "BROADCAST_TO": (None, "2.5.0", "2.5.0"),
    "CONV_2D": ("1.5.0", "1.14.0", "1.14.0", "2.3.0", "2.4.0", "2.9.0", "2.11.0", "2.15.0"),
    "DEPTHWISE_CONV_2D": ("1.5.0", "1.12.0", "1.14.0", "2.2.0", "2.3.0", "2.3.0", "2.11.0"),
    "ADD": ("1.5.0", "1.14.0", "2.4.0", "2.6.0", "2.13.0", "2.23.0"),
    "ADD_N": ("1.14.0",),
    "SPACE_TO_BATCH_ND": ("1.6.0", "1.14.0", "2.3.0", "2.12.0"),
    "SUB": ("1.6.0", "1.14.0", "2.3.0", "2.4.0", "2.4.0"),
    "DENSIFY": ("2.2.0",),
    "DIV": ("1.6.0", "2.3.0"),
    "BATCH_TO_SPACE_ND": ("1.6.0", "1.14.0", "2.3.0", "2.12.0"),
    "CAST": ("1.5.0", "2.7.0", "2.8.0", "2.9.0", "2.12.0", "2.15.0", "2.17.0", "2.21.0"),
    "CONCATENATION": ("1.5.0", "1.14.0", "2.3.0", "2.14.0", "2.21.0"),
    "DEPTH_TO_SPACE": ("2.1.0", "2.5.0"),
    "EMBEDDING_LOOKUP": ("1.13.0", "1.14.0", "1.14.0", "2.18.0", "2.21.0"),
    "EMBEDDING_LOOKUP_SPARSE": ("1.5.0",),
    "FAKE_QUANT": ("1.5.0", "1.10.0"),
    "FULLY_CONNECTED": (
        "1.5.0", "1.10.0", "1.14.0", "1.14.0", "2.0.0", "2.1.0", "2.3.0", "2.3.0",
        "2.3.0", "2.11.0", "2.15.0", "2.17.0", "2.18.0", "2.21.0",
    ),
    "GATHER": ("1.6.0", "1.14.0", "1.15.0", "2.4.0", "2.5.0", "2.13.0", "2.15.0"),
    "GATHER_ND": ("1.14.0", "2.3.0", "2.5.0", "2.13.0", "2.16.0"),
    "HASHTABLE_LOOKUP": ("1.5.0",),
    "SVDF": ("1.5.0", "1.14.0", "2.2.0", "2.3.0"),
    "L2_NORMALIZATION": ("1.5.0", "1.14.0"),
    "L2_POOL_2D": ("1.5.0",),
    "LOCAL_RESPONSE_NORMALIZATION": ("1.5.0",),
    "MAX_POOL_2D": ("1.5.0", "1.14.0", "2.3.0"),
    "MAXIMUM": ("1.14.0", "1.14.0", "2.3.0", "2.3.0"),
    "MINIMUM": ("1.14.0", "1.14.0", "2.3.0", "2.3.0"),
    "MUL": ("1.5.0", "1.14.0", "1.15.0", "2.3.0", "2.6.0", "2.11.0", "2.13.0", "2.23.0"),
    "NON_MAX_SUPPRESSION_V4": ("2.1.0",),
    "NON_MAX_SUPPRESSION_V5": ("2.1.0",),
    "PAD": ("1.5.0", "1.14.0", "2.4.0", "2.6.0", "2.20.0"),
    "TILE": ("1.10.1", "2.2.0", "2.8.0"),
    "PADV2": ("1.9.0", "1.14.0", "2.4.0", "2.6.0", "2.20.0"),
    "RESHAPE": ("1.5.0",),
    "SOFTMAX": ("1.5.0", "1.14.0", "2.3.0"),
    "SPACE_TO_DEPTH": ("1.5.0", "1.14.0"),
    "TRANSPOSE": ("1.6.0", "1.14.0", "1.15.0", "2.3.0", "2.4.0", "2.12.0", "2.14.4", "2.22.0"),
    "LSTM": ("1.7.0", "1.10.0", "1.14.0", "2.3.0"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ("1.13.1", "1.14.0", "2.3.0", "2.12.0"),
    "BIDIRECTIONAL_SEQUENCE_LSTM": ("1.14.0", "1.14.0", "1.14.0"),
    "BIDIRECTIONAL_SEQUENCE_RNN": ("1.14.0", "1.14.0", "2.3.0"),
    "MEAN": ("1.6.0", "1.14.0", "2.4.0"),
    "SUM": ("1.10.0", "1.15.0"),
    "REDUCE_MAX": ("1.11.0", "1.14.0", "2.5.0"),
    "REDUCE_MIN": ("1.11.0", "1.14.0", "2.5.0"),
    "REDUCE_PROD": ("1.11.0", "2.6.0"),
    "REDUCE_ANY": ("1.11.0",),
    "RELU6": ("1.5.0", "1.14.0", "2.5.0"),
    "RESIZE_BILINEAR": ("1.7.0", "1.14.0", "2.2.0", "2.5.0"),
    "RESIZE_NEAREST_NEIGHBOR": ("1.13.1", "1.14.0", "2.3.0", "2.4.0"),
    "RNN": ("1.5.0", "1.14.0", "2.3.0"),
    "SKIP_GRAM": ("1.5.0",),
    "SQUEEZE": ("1.6.0", "2.5.0"),
    "SPLIT": ("1.5.0", "1.14.0", "1.14.0", "2.3.0"),
    "SPLIT_V": ("1.13.1", "2.3.0"),
    "STRIDED_SLICE": ("1.6.0", "1.14.0", "2.1.0", "2.2.0", "2.5.0", "2.6.0", "2.14.0", "2.14.0"),
    "TOPK_V2": ("1.7.0", "1.14.0", "2.13.0"),
    "ARG_MAX": ("1.9.0", "1.14.0", "2.9.0"),
    "ARG_MIN": ("1.9.0", "1.14.0", "2.9.0"),
    "TRANSPOSE_CONV": ("1.9.0", "2.2.0", "2.3.0", "2.13.0", "2.15.0"),
    "SPARSE_TO_DENSE": ("1.9.0", "1.14.0", "1.15.0"),
    "EXPAND_DIMS": ("1.10.0",),
    "PACK": ("1.11.0", "1.14.0", "2.3.0", "2.13.0"),
    "SHAPE": ("1.10.0",),
    "SLICE": ("1.14.0", "1.14.0", "1.14.0", "2.4.0", "2.5.0", "2.14.0", "2.21.0"),
    "TANH": ("1.14.0", "1.14.0", "2.3.0"),
    "ONE_HOT": ("1.11.0",),
    "UNPACK": ("1.11.0", "1.14.0", "2.2.0", "2.3.0", "2.22.0"),
    "LEAKY_RELU": ("1.13.1", "2.3.0"),
    "LOGISTIC": ("1.14.0", "1.14.0", "2.3.0"),
    "LOG_SOFTMAX": ("1.14.0", "1.14.0"),
    "LSH_PROJECTION": ("1.5.0",),
    "SQUARED_DIFFERENCE": ("1.13.1", "2.5.0"),
    "MIRROR_PAD": ("1.13.1", "2.3.0", "2.12.0"),
    "UNIQUE": ("1.14.0",),
    "UNIDIRECTIONAL_SEQUENCE_RNN": ("1.14.0", "1.14.0", "2.3.0"),
    "WHERE": ("1.14.0", "2.8.0"),
    "DEQUANTIZE": ("1.13.1", "1.14.0", "1.15.0", "2.2.0", "2.7.0", "2.18.0", "2.21.0", "2.22.0"),
    "REVERSE_SEQUENCE": ("1.14.0",),
    "EQUAL": ("1.14.0", "1.14.0", "2.3.0", "2.13.0", "2.21.0"),
    "NOT_EQUAL": ("1.14.0", "1.14.0", "2.3.0", "2.21.0"),
    "GREATER": ("1.14.0", "1.14.0"),
    "GREATER_EQUAL": ("1.14.0", "1.14.0", "2.13.0"),
    "LESS": ("1.14.0", "1.14.0", "2.13.0"),
    "LESS_EQUAL": ("1.14.0", "1.14.0"),
    "SCATTER_ND": ("2.1.0",),
    "SEGMENT_SUM": ("2.2.0",),
    "SELECT": ("1.14.0", "1.14.0", "2.12.0", "2.12.0"),
    "SELECT_V2": ("2.2.0", "2.12.0"),
    "IF": ("1.15.0",),
    "FLOOR_DIV": ("1.14.0", "1.14.0", "2.13.0"),
    "FLOOR": ("1.9.0",),
    "CEIL": ("1.14.0",),
    "MATRIX_DIAG": ("1.14.0",),
    "MATRIX_SET_DIAG": ("1.14.0",),
    "ELU": ("1.14.0",),
    "QUANTIZE": ("1.14.0", "1.15.0", "2.7.0", "2.21.0", "2.21.0", "2.21.0"),
    "ROUND": ("1.14.0",),
    "RELU": ("1.5.0", "2.1.0", "2.5.0"),
    "RELU_N1_TO_1": ("1.5.0",),
    "RELU_0_TO_1": ("2.10.0",),
    "PRELU": ("1.8.0",),
    "EXP": ("1.7.0", "2.12.0"),
    "COS": ("1.14.0",),
    "NEG": ("1.9.0",),
    "POW": ("1.10.0",),
    "LOGICAL_OR": ("1.11.0",),
    "LOGICAL_AND": ("1.11.0",),
    "LOGICAL_NOT": ("1.11.0",),
    "FLOOR_MOD": ("1.13.0", "2.13.0"),
    "RANGE": ("1.13.0", "2.14.0"),
    "SIN": ("1.9.0",),
    "LOG": ("1.14.0", "2.15.0"),
    "SQRT": ("1.10.0", "2.21.0"),
    "RSQRT": ("1.10.0", "2.5.0", "2.15.0"),
    "SQUARE": ("1.12.0",),
    "ZEROS_LIKE": ("1.12.0",),
    "ABS": ("1.13.0", "2.4.0", "2.5.0", "2.6.0", "2.12.0"),
    "HARD_SWISH": ("1.15.0",),
    "FILL": ("1.13.0", "2.3.0", "2.5.0", "2.12.0"),
    "REVERSE_V2": ("1.14.0", "2.2.0", "2.5.0"),
    "RANK": ("1.14.0",),
    "WHILE": ("1.15.0",),
    "CUMSUM": ("2.4.0",),
    "CALL_ONCE": ("2.5.0",),
    "RFFT2D": ("2.5.0",),
    "CONV_3D": ("2.5.0",),
    "IMAG": ("2.5.0",),
    "REAL": ("2.5.0",),
    "COMPLEX_ABS": ("2.5.0",),
    "HASHTABLE": ("2.5.0",),
    "HASHTABLE_FIND": ("2.5.0",),
    "HASHTABLE_IMPORT": ("2.5.0",),
    "HASHTABLE_SIZE": ("2.5.0",),
    "REDUCE_ALL": ("2.6.0",),
    "CONV_3D_TRANSPOSE": ("2.6.0",),
    "VAR_HANDLE": ("2.6.0",),
    "READ_VARIABLE": ("2.6.0",),
    "ASSIGN_VARIABLE": ("2.6.0",),
    "BROADCAST_ARGS": ("2.6.0",),
    "RANDOM_STANDARD_NORMAL": ("2.8.0",),
    "BUCKETIZE": ("2.8.0",),
    "RANDOM_UNIFORM": ("2.8.0",),
    "MULTINOMIAL": ("2.8.0",),
    "GELU": ("2.9.0", "2.9.0"),
    "DYNAMIC_UPDATE_SLICE": ("2.9.0", "2.17.0", "2.19.0", "2.20.0", "2.21.0", "2.22.0"),
    "UNSORTED_SEGMENT_PROD": ("2.10.0",),
    "UNSORTED_SEGMENT_MAX": ("2.10.0",),
    "UNSORTED_SEGMENT_MIN": ("2.11.0",),
    "UNSORTED_SEGMENT_SUM": ("2.10.0",),
    "ATAN2": ("2.10.0",),
    "SIGN": ("2.11.0", "2.12.0"),
    "BITCAST": ("2.13.0",),
    "BITWISE_XOR": ("2.13.0",),
    "RIGHT_SHIFT": ("2.13.0",),
    "STABLEHLO_SCATTER": ("2.15.0",),
    "DILATE": ("2.15.0",),
    "STABLEHLO_RNG_BIT_GENERATOR": ("2.15.0",),
    "REDUCE_WINDOW": ("2.15.0",),
    "STABLEHLO_GATHER": ("2.16.0",),
    "STABLEHLO_ADD": ("2.16.0",),
    "STABLEHLO_MULTIPLY": ("2.16.0",),
    "STABLEHLO_REDUCE_WINDOW": ("2.16.0",),
    "STABLEHLO_MAXIMUM": ("2.16.0",),
    "STABLEHLO_MINIMUM": ("2.16.0",),
    "STABLEHLO_PAD": ("2.16.0",),
    "STABLEHLO_COMPOSITE": ("2.17.0",),
    "STABLEHLO_AND": ("2.17.0",),
    "STABLEHLO_SHIFT_LEFT": ("2.17.0",),
    "STABLEHLO_CBRT": ("2.17.0",),
    "STABLEHLO_CASE": ("2.17.0",),
}
# fmt: on

#: Op versions that ``runtime_version.cc`` dates but that no stock ``BuiltinOpResolver`` we probed
#: registers (tflite-runtime 2.14.0, tensorflow 2.21.0, ai-edge-litert 1.0.1 to 2.3.0): a model
#: using one of these needs a custom resolver whatever the runtime's version.
UNREGISTERED: frozenset[tuple[str, int]] = frozenset({("STABLEHLO_CBRT", 1)})

#: Op versions a *released* TensorFlow's own interpreter lacks although the table dates them at or
#: before that release (they were dated on master after the release branch was cut). Measured by
#: loading one-op models in ``tf.lite.Interpreter`` of tensorflow-cpu 2.21.0.
TENSORFLOW_GAPS: dict[tuple[int, int], frozenset[tuple[str, int]]] = {
    (2, 21): frozenset({("QUANTIZE", 5), ("QUANTIZE", 6)}),
}

#: ai-edge-litert is built from TensorFlow's master branch (its repository pulls TensorFlow in as
#: a submodule tracking master), not from a release branch, so each wheel sits *between* two
#: TensorFlow releases. Rows: (first ai-edge-litert version the row applies to, the newest
#: TF release whose every dated op version the wheel registers apart from ``gaps``, gaps).
#: Measured, not guessed: for each version, every (op, version) of MIN_RUNTIME was put in a
#: one-op model and loaded with that wheel's Interpreter (ai-edge-litert 1.0.1, 1.1.0, 1.1.2,
#: 1.2.0, 1.3.0, 1.4.0, 2.0.2, 2.0.3, 2.1.0, 2.1.6, 2.2.0, 2.3.0 on CPython 3.11, x86_64). Versions
#: between two probed ones take the older row; versions past the last row take the last row.
#: "2.23.0" is the newest date in MIN_RUNTIME, so it means "everything the table knows" (the
#: wheels also register newer op versions the table does not list). ai-edge-litert 1.0.0 could
#: not build an interpreter from bytes at all, so it has no row.
AI_EDGE_LITERT: tuple[tuple[str, str, frozenset[tuple[str, int]]], ...] = (
    (
        "1.0.1",
        "2.18.0",
        frozenset(
            {
                ("TRANSPOSE", 7),
                ("CAST", 7),
                ("STABLEHLO_AND", 1),
                ("STABLEHLO_SHIFT_LEFT", 1),
                ("STABLEHLO_CASE", 1),
            }
        ),
    ),
    ("1.1.0", "2.19.0", frozenset({("TRANSPOSE", 7)})),
    # 1.2.0 adds TRANSPOSE v7; 1.3.0 and 1.4.0 add DYNAMIC_UPDATE_SLICE v4 but not PAD v5 (2.20).
    ("1.2.0", "2.19.0", frozenset()),
    ("2.0.2", "2.20.0", frozenset()),
    (
        "2.1.0",
        "2.21.0",
        frozenset(
            {
                ("CONCATENATION", 5),
                ("EMBEDDING_LOOKUP", 5),
                ("QUANTIZE", 5),
                ("QUANTIZE", 6),
                ("DYNAMIC_UPDATE_SLICE", 5),
            }
        ),
    ),
    ("2.1.6", "2.23.0", frozenset()),
)
