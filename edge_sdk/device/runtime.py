"""The device runtime: verified bundles in, numpy in, numpy out — without TensorFlow.

:func:`load` runs the full check order of shared/DESIGN.md (see :mod:`edge_sdk.format.verify`), keeps the
decrypted model in memory only, and builds one LiteRT interpreter from the bytes with the threads
and delegates of the board's profile. :class:`Model` is a thin, thread-safe path over
``interpreter.invoke()``: tensor indices and quantization parameters are looked up once at load.

Backends are tried in order ``ai_edge_litert`` → ``tflite_runtime`` → ``tensorflow.lite`` (the last
with a warning: it is heavy and not meant for boards); ``EDGE_SDK_BACKEND`` or a profile can pin one.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import os
import platform
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk.errors import (
    AuditLogError,
    BackendError,
    CompatibilityError,
    DelegateError,
    EdgeSDKError,
    InferenceInputError,
    TargetMismatchError,
    UsageError,
    excerpt,
    install_hint,
)
from edge_sdk.format.bundle import DEFAULT_LIMITS, Bundle, Limits
from edge_sdk.format.compat import read_tflite, tflite_release
from edge_sdk.format.key_slip import read_key_slip, slip_path_beside
from edge_sdk.format.manifest import Manifest
from edge_sdk.format.verify import Policy, RuntimeRelease, open_verified, require_kind
from edge_sdk.keys import PrivateKey, TrustStore, load_private_key
from edge_sdk.profiles import load_profile

from .audit_log import AuditLog
from .litert_interface import InterpreterView, backend_message
from .sealed_memory import SealedMemory, unavailable_reason
from .state import VersionState, default_state_dir

log = logging.getLogger("edge_sdk")

BACKEND_ENV = "EDGE_SDK_BACKEND"
BACKEND_ORDER = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_PACKAGES = {
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
}
_ALIASES = {"ai-edge-litert": "ai_edge_litert", "litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime",
            "tf": "tensorflow", "tensorflow-cpu": "tensorflow"}  # fmt: skip


@dataclass(frozen=True)
class Backend:
    """A LiteRT Python runtime: its module name, package version and entry points."""

    name: str
    version: str
    interpreter_cls: Any = field(repr=False)
    load_delegate: Any = field(repr=False)
    op_resolver: Any = field(repr=False)

    @property
    def package(self) -> str:
        return _PACKAGES[self.name]


def _import_backend(name: str) -> Backend:
    if name == "ai_edge_litert":
        mod = importlib.import_module("ai_edge_litert.interpreter")
    elif name == "tflite_runtime":
        mod = importlib.import_module("tflite_runtime.interpreter")
    elif name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        mod = tf.lite
        log.warning("using tensorflow.lite as the runtime: heavy, meant for hosts, not boards")
    else:
        raise BackendError(
            f"unknown backend {name!r}", hint=f"choose one of {', '.join(BACKEND_ORDER)}"
        )
    interpreter = mod.Interpreter
    load_delegate = mod.experimental.load_delegate if name == "tensorflow" else mod.load_delegate
    resolver = mod.experimental.OpResolverType if name == "tensorflow" else mod.OpResolverType
    # The package's own __version__ where it has one: importlib.metadata costs ~25 ms to import
    # and a few ms per lookup (it scans every installed distribution), on every fresh start.
    version = getattr(importlib.import_module(name), "__version__", None)
    if not isinstance(version, str) or not version:
        from importlib import metadata

        try:
            version = metadata.version(_PACKAGES[name])
        except metadata.PackageNotFoundError:
            version = metadata.version("tensorflow-cpu") if name == "tensorflow" else "unknown"
    return Backend(name, version, interpreter, load_delegate, resolver)


def discover_backend(preferred: str | None = None) -> Backend:
    """The first importable backend, or exactly ``preferred`` / ``$EDGE_SDK_BACKEND`` when set.

    Raises:
        BackendError: the requested backend is missing, or none is installed.
    """
    wanted = preferred or os.environ.get(BACKEND_ENV) or None
    if wanted:
        wanted = _ALIASES.get(wanted, wanted)
        try:
            return _import_backend(wanted)
        except ImportError as exc:
            raise BackendError(
                f"backend {wanted} is not installed ({exc})",
                hint=f"pip install {_PACKAGES.get(wanted, wanted)}",
            ) from None
    problems = []
    for name in BACKEND_ORDER:
        try:
            return _import_backend(name)
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
    raise BackendError(
        "no LiteRT runtime is installed (" + "; ".join(problems) + ")",
        hint=install_hint("device") + " (or pip install tflite-runtime)",
    )


@dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor as the interpreter sees it.

    ``shape`` is the model's *signature*: ``-1`` marks a dimension the model lets the caller
    choose (a dynamic batch, or the height and width of a fully convolutional backbone); any
    other number is fixed by the model and is never resized.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    @property
    def batched(self) -> bool:
        """Whether dimension 0 is a batch axis: dynamic (``-1``) or fixed at one sample."""
        return bool(self.shape) and self.shape[0] in (-1, 1)


@dataclass(frozen=True)
class DelegateReport:
    """What happened to one entry of the profile's delegate chain."""

    name: str
    applied: bool
    reason: str = ""


def _tensor_info(detail: Mapping[str, Any]) -> TensorInfo:
    scale, zero = detail.get("quantization", (0.0, 0))
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return TensorInfo(
        name=str(detail["name"]),
        index=int(detail["index"]),
        shape=tuple(int(d) for d in shape),
        dtype=np.dtype(detail["dtype"]),
        scale=float(scale),
        zero_point=int(zero),
    )


def _signature_tensors(
    interpreter: Any, manifest: Manifest | None
) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Inputs and outputs in the model's signature order, named as the publisher named them.

    The converter orders the interpreter's tensors arbitrarily (a Keras model's second input may
    come first) and names outputs ``StatefulPartitionedCall:1``. A single signature def restores
    the source model's order and input names; the manifest, when it lists the same number of
    tensors, restores the output names the packager recorded.
    """
    inputs = {d["index"]: _tensor_info(d) for d in interpreter.get_input_details()}
    outputs = {d["index"]: _tensor_info(d) for d in interpreter.get_output_details()}
    signatures = _full_signatures(interpreter)
    ordered_in, ordered_out = list(inputs.values()), list(outputs.values())
    if len(signatures) == 1:
        sig = next(iter(signatures.values()))
        sig_in, sig_out = dict(sig.get("inputs", {})), dict(sig.get("outputs", {}))
        if set(sig_in.values()) == set(inputs) and set(sig_out.values()) == set(outputs):
            ordered_in = [replace(inputs[i], name=n) for n, i in sig_in.items()]
            ordered_out = [replace(outputs[i], name=n) for n, i in sig_out.items()]
            numbered = [re.fullmatch(r"output_(\d+)", t.name) for t in ordered_out]
            if all(numbered):
                # The converter's output_<k> follow the source model's output order, but the
                # signature sorts them as text (output_10 before output_2).
                ordered_out.sort(key=lambda t: int(t.name.rsplit("_", 1)[1]))
    if manifest is not None:
        signed = [s.name for s in manifest.model.inputs]
        by_name = {t.name: t for t in ordered_in}
        if sorted(signed) == sorted(by_name) and len(signed) == len(ordered_in):
            # The order the packager recorded (the source model's): a list given to predict
            # follows it. Matched by name, never by position: the signature sorts inputs by name.
            ordered_in = [by_name[n] for n in signed]
        elif len(signed) == len(ordered_in):
            ordered_in = [replace(t, name=n) for t, n in zip(ordered_in, signed, strict=True)]
        if len(manifest.model.outputs) == len(ordered_out):
            ordered_out = [
                replace(t, name=s.name)
                for t, s in zip(ordered_out, manifest.model.outputs, strict=True)
            ]
    return tuple(ordered_in), tuple(ordered_out)


def _build_delegates(
    backend: Backend, chain: Sequence[Any], strict: bool
) -> tuple[list[Any], list[DelegateReport], bool]:
    """Load the external delegates of a profile's chain in order; report what fell back and why.

    Returns the loaded delegates, the report, and whether the builtin XNNPACK delegate is wanted.
    """
    loaded: list[Any] = []
    reports: list[DelegateReport] = []
    xnnpack = not chain  # no chain at all: the runtime's defaults, which include XNNPACK
    for spec in chain:
        name = str(getattr(spec, "name", "delegate"))
        if getattr(spec, "builtin", False) or name == "xnnpack":
            xnnpack = True
            continue
        library = getattr(spec, "library", None)
        options = dict(getattr(spec, "options", {}) or {})
        try:
            # dlopen first: the runtimes' Delegate objects raise again from __del__ when their
            # own load fails, which would turn a clean fallback into noise on stderr.
            ctypes.CDLL(library)
            loaded.append(backend.load_delegate(library, {k: str(v) for k, v in options.items()}))
            reports.append(DelegateReport(name, True))
        except (ValueError, OSError, RuntimeError) as exc:
            reason = f"{library} could not be loaded: {str(exc).splitlines()[0][:200]}"
            if strict or getattr(spec, "required", False):
                raise DelegateError(f"delegate {name} failed: {reason}") from None
            log.warning("delegate %s fell back to the next in the chain: %s", name, reason)
            reports.append(DelegateReport(name, False, reason))
    return loaded, reports, xnnpack


def _quote(text: str) -> str:
    """A tensor or signature name for a message: it comes from the model file (bounded, escaped)."""
    return excerpt(text)


#: Models from this size on are decrypted into sealed memory; smaller ones into a ``bytes``.
#: Sealed memory's pages are the kernel's 4 KiB shmem pages, allocated and mapped one by one,
#: where a fresh ``bytes`` gets huge pages faulted in on another core meanwhile
#: (edge_sdk.format.memory): measured here, ~0.5 ms per MB more to a first result (13.9 MB
#: MobileNetV2: 47 against 40 ms). Under this size the model costs little RAM and the bytes
#: path is what the start-up benchmark holds to; from it on, the model stays out of the Python
#: heap in a file no code in the process can change once sealed (the seals refuse writes and
#: writable mappings to everyone, native code included) and LiteRT maps it read-only.
SEALED_MIN_BYTES = 64 * 1024 * 1024


def _build_interpreter(
    backend: Backend,
    model_bytes: bytes | SealedMemory,
    threads: int | None,
    delegate_chain: Sequence[Any],
    strict_delegates: bool,
) -> tuple[Any, tuple[DelegateReport, ...]]:
    """A raw LiteRT interpreter over ``model_bytes`` (or the sealed memory holding the model,
    which LiteRT maps by path: no copy) with the profile's threads and delegates (tensors not
    allocated yet), and what the delegate chain did."""
    if isinstance(model_bytes, SealedMemory):
        source: dict[str, Any] = {"model_path": model_bytes.path}
    elif isinstance(model_bytes, bytes):
        source = {"model_content": model_bytes}
    else:
        # Interpreter(model_content=bytearray) raises a TypeError whose text dumps the model.
        raise UsageError("model bytes must be bytes")
    delegates, reports, xnnpack = _build_delegates(backend, delegate_chain, strict_delegates)
    if xnnpack:
        reports.insert(0, DelegateReport("xnnpack", True, "builtin default delegate"))
    resolver = backend.op_resolver
    try:
        interpreter = backend.interpreter_cls(
            **source,
            num_threads=threads,
            experimental_delegates=delegates or None,
            experimental_op_resolver_type=(
                resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            ),
        )
    except (ValueError, RuntimeError) as exc:
        raise BackendError(
            f"{backend.package} {backend.version} cannot build this model: {backend_message(exc)}"
        ) from None
    return interpreter, tuple(reports)


class _Graph:
    """One runnable signature of a model: its tensors and how to run one invocation of it.

    The primary graph (subgraph 0) is driven through the interpreter directly, resizing an input
    only when its shape changes; another signature of a multi-signature model goes through its
    LiteRT ``SignatureRunner``. Either way :meth:`Model._run` has checked every shape first, so
    only dimensions the model leaves open (``-1``) ever change.
    """

    def __init__(
        self,
        key: str | None,
        inputs: tuple[TensorInfo, ...],
        outputs: tuple[TensorInfo, ...],
        runner: Any = None,
        allocated: Mapping[int, tuple[int, ...]] | None = None,
        *,
        batchable: bool = True,
    ) -> None:
        self.key = key
        self.inputs = inputs
        self.outputs = outputs
        self.by_name = {t.name: t for t in inputs}
        self.runner = runner
        # Input index → shape the interpreter is allocated for; () = unknown / not allocated.
        self.current: dict[int, tuple[int, ...]] = {t.index: () for t in inputs}
        self.current.update(allocated or {})
        # Cleared when a batched run returns outputs that do not follow the batch (a reshape
        # that hard-codes one sample): from then on batches run sample by sample. False from
        # the start for a model that keeps state between runs (see Model.stateful).
        self.batchable = batchable
        # Input shapes without the batch axis → output shapes and dtypes without it, for empty
        # batches (from the outputs' signatures, or one run of a scratch interpreter).
        self.sample_outputs: dict[tuple[tuple[int, ...], ...], list[tuple[Any, ...]]] = {}


class Model:
    """A loaded model: ``predict`` numpy in, numpy out. Build it with :func:`load`.

    Attributes:
        inputs / outputs: the interpreter's tensors (names, shapes, dtypes, quantization).
        manifest: the verified manifest (``None`` for models built from raw bytes on the host).
        backend: the runtime and its version.
        delegates: what the profile's delegate chain did (applied, or fell back and why).
        threads: the interpreter's thread count.
        threads_reason: why that count (a profile, the caller, or the cores available).
        signatures: the model's signature keys (a model converted from Keras has one).
        stateful: whether the model keeps state between runs (it assigns resource variables:
            a Keras stateful RNN, a streaming wake-word model). Each run then advances that
            state, so a batch runs as consecutive samples, in order, and nothing runs unasked.
    """

    threads_reason: str = ""

    def __init__(
        self,
        model_bytes: bytes | SealedMemory,
        *,
        manifest: Manifest | None = None,
        backend: Backend | None = None,
        threads: int | None = None,
        delegate_chain: Sequence[Any] = (),
        strict_delegates: bool = False,
        _stateful: bool | None = None,
    ) -> None:
        if not isinstance(model_bytes, (bytes, SealedMemory)):
            # Interpreter(model_content=bytearray) raises a TypeError whose text dumps the model.
            raise UsageError("model bytes must be bytes")
        self.backend = backend or discover_backend()
        self.manifest = manifest
        self.threads = threads
        #: Where the model's bytes live: ``memfd (sealed)`` (mapped by LiteRT, one copy) or
        #: ``bytes`` (a Python object LiteRT reads, where sealed memory does not exist).
        self.memory = "memfd (sealed)" if isinstance(model_bytes, SealedMemory) else "bytes"
        # Clones and scratch interpreters share it; the memory file is released when the last
        # of them lets go of it (SealedMemory closes itself when collected).
        self._model_bytes: bytes | SealedMemory = model_bytes
        self._delegate_chain = tuple(delegate_chain)
        self._strict = strict_delegates
        # The strict reader first, before LiteRT sees a byte: a file it refuses (a buffer whose
        # offset + size wraps past 2^64 passed LiteRT's own bounds check and read the memory
        # before the model) never reaches the interpreter. Clones reuse the verdict.
        self.stateful = _keeps_state(model_bytes) if _stateful is None else _stateful
        self._interpreter, self.delegates = _build_interpreter(
            self.backend, model_bytes, threads, self._delegate_chain, strict_delegates
        )
        self.inputs, self.outputs = _signature_tensors(self._interpreter, manifest)
        signatures = _full_signatures(self._interpreter)
        self.signatures: tuple[str, ...] = tuple(signatures)
        allocated: dict[int, tuple[int, ...]] = {}
        # A model that leaves a dimension other than the batch open (a fully convolutional
        # backbone's height and width) is allocated at the first real input's shape, in
        # predict: allocating at the placeholder 1x1 fails in XNNPACK, or in a 'valid' conv.
        if not any(-1 in t.shape[1:] for t in self.inputs):
            try:
                self._interpreter.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise BackendError(
                    f"{self.backend.package} {self.backend.version} cannot build this model: "
                    f"{backend_message(exc)}"
                ) from None
            allocated = {
                int(d["index"]): tuple(int(v) for v in d["shape"])
                for d in self._interpreter.get_input_details()
            }
        primary_key = next(iter(signatures)) if len(signatures) == 1 else None
        self._graphs: dict[str | None, _Graph] = {
            primary_key: _Graph(primary_key, self.inputs, self.outputs, None, allocated,
                                batchable=not self.stateful)
        }  # fmt: skip
        self._primary = self._graphs[primary_key]
        self._interpreter_view: InterpreterView | None = None
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        name = f"{self.manifest.name} v{self.manifest.version}" if self.manifest else "model"
        return (
            f"<edge_sdk.Model {name} on {self.backend.package} {self.backend.version}, "
            f"{self.threads} threads, {self.memory}, inputs {[t.name for t in self.inputs]}>"
        )

    # -- inference -----------------------------------------------------------------------------

    def _coerce(self, spec: TensorInfo, value: Any, raw: bool) -> np.ndarray:
        """``value`` as an array of ``spec``'s dtype and a shape the model accepts, or a typed
        refusal: every fixed dimension must match; only ``-1`` dimensions (and the batch of a
        model fixed at one sample, which :meth:`_run` feeds one sample at a time) may vary."""
        name = _quote(spec.name)
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InferenceInputError(f"input {name}: cannot make an array ({exc})") from None
        batch_free = spec.batched  # dynamic batch, or one sample per run
        if array.ndim != len(spec.shape) or any(
            want not in (-1, got)
            for i, (want, got) in enumerate(zip(spec.shape, array.shape, strict=False))
            if i > 0 or not batch_free
        ):
            notes = ["batch may vary"] if batch_free else []
            notes += ["-1: any size"] if -1 in spec.shape[1:] else []
            raise InferenceInputError(
                f"input {name} expects shape {list(spec.shape)}"
                + (f" ({', '.join(notes)})" if notes else "")
                + f", got {list(array.shape)}"
            )
        if any(got == 0 for got in array.shape[1:]):
            raise InferenceInputError(
                f"input {name} has shape {list(array.shape)}: only the number of samples may be 0"
            )
        if spec.dtype.kind in "SUO":
            raise InferenceInputError(
                f"input {name} is a string tensor: predict takes numeric and boolean arrays",
                hint="feed strings through model.interpreter (set_tensor with an array of bytes)",
            )
        if array.dtype.kind in "SUOV":
            raise InferenceInputError(f"input {name} expects {spec.dtype}, got {array.dtype}")
        if raw or not spec.quantized:
            return _cast(name, array, spec.dtype, raw)
        if array.dtype.kind not in "f":
            raise InferenceInputError(
                f"input {name} is quantized {spec.dtype} (scale {spec.scale:.6g}, zero point "
                f"{spec.zero_point}) and takes real-valued floats, got {array.dtype}",
                hint=f"pass floats, or the quantized {spec.dtype} values as they are with raw=True",
            )
        if array.size and not np.isfinite(array).all():
            raise InferenceInputError(
                f"input {name} holds NaN or infinite values, which a quantized input cannot represent"
            )
        info = np.iinfo(spec.dtype)
        quantized = np.round(array.astype(np.float32) / spec.scale) + spec.zero_point
        result: np.ndarray = np.clip(quantized, info.min, info.max).astype(spec.dtype)
        return result

    def _arrange(self, graph: _Graph, x: Any) -> list[tuple[TensorInfo, Any]]:
        inputs = graph.inputs
        if isinstance(x, Mapping):
            unknown = set(x) - set(graph.by_name)
            missing = set(graph.by_name) - set(x)
            if unknown or missing:
                raise InferenceInputError(
                    f"inputs by name: missing {sorted(missing)[:16]}, unknown "
                    f"{excerpt(sorted(map(str, unknown)))}; "
                    f"the model takes {[t.name for t in inputs]}"
                )
            return [(graph.by_name[name], value) for name, value in x.items()]
        if isinstance(x, (list, tuple)) and len(inputs) > 1:
            if len(x) != len(inputs):
                raise InferenceInputError(f"the model takes {len(inputs)} inputs, got {len(x)}")
            return list(zip(inputs, x, strict=True))
        if len(inputs) != 1:
            raise InferenceInputError(
                f"the model takes {len(inputs)} inputs; pass a dict by name: "
                f"{[t.name for t in inputs]}",
                hint="edge-sdk run: pass an .npz file with one array per input name",
            )
        return [(inputs[0], x)]

    def _graph(self, signature: str | None) -> _Graph:
        if signature is None:
            if len(self.signatures) > 1:
                raise InferenceInputError(
                    f"this model has {len(self.signatures)} signatures "
                    f"({', '.join(_quote(s) for s in self.signatures[:16])}): pass signature=NAME (edge-sdk run "
                    "--signature NAME)"
                )
            return self._primary
        if signature in self._graphs:
            return self._graphs[signature]
        if signature not in self.signatures:
            raise InferenceInputError(
                f"no signature {_quote(str(signature))}; the model has "
                f"{', '.join(_quote(s) for s in self.signatures[:16]) or 'none'}"
            )
        with self._lock:
            self._check_open()
            runner = self._interpreter.get_signature_runner(signature)
            inputs = tuple(
                replace(_tensor_info(d), name=str(n)) for n, d in runner.get_input_details().items()
            )
            outputs = tuple(
                replace(_tensor_info(d), name=str(n))
                for n, d in runner.get_output_details().items()
            )
            graph = self._graphs.setdefault(
                signature,
                _Graph(signature, inputs, outputs, runner, batchable=not self.stateful),
            )
        return graph

    def tensors(
        self, signature: str | None = None
    ) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
        """The inputs and outputs of one signature (default: the model's only one).

        Raises:
            InferenceInputError: no such signature, or none named for a model with several.
        """
        graph = self._graph(signature)
        return graph.inputs, graph.outputs

    def predict(self, x: Any, *, raw: bool = False, signature: str | None = None) -> Any:
        """Run the model.

        A batch of N samples gives outputs of N rows, also for a model fixed at one sample per
        run (``[1, 128, 128, 3]``), which is then run sample by sample: a dimension the model
        fixed is never resized. An empty batch (0 samples) gives empty outputs of the right
        shape and dtype and never runs this model's interpreter (so a stateful model's state
        stays as it was); the shapes come from the outputs' signatures, or, where those leave a
        dimension open, from one zero sample run on a scratch interpreter that is then dropped.
        Every input of a batch holds the same number of samples (a runtime would otherwise
        broadcast one input over another's rows). A :attr:`stateful` model runs a batch as
        consecutive samples, in order.

        Args:
            x: an array for a single-input model; a dict by input name (or a list in order) for
                several inputs. Quantized inputs take floats unless ``raw``; integer inputs
                (token ids) take integers of a dtype that casts without loss.
            raw: feed and return the quantized integers as they are.
            signature: which signature to run, for a model that has several.

        Returns:
            An array for a single-output model, else a dict by output name.

        Raises:
            InferenceInputError: wrong name, shape, dtype or value range, naming the tensor; or
                outputs that cannot be stacked into a batch.
            BackendError: the interpreter failed.
        """
        graph = self._graph(signature)
        feeds = [(spec, self._coerce(spec, value, raw)) for spec, value in self._arrange(graph, x)]
        results = self._run(graph, feeds)
        out = {
            spec.name: value
            if raw or not spec.quantized
            else (value.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
            for spec, value in zip(graph.outputs, results, strict=True)
        }
        return next(iter(out.values())) if len(out) == 1 else out

    def _run(self, graph: _Graph, feeds: list[tuple[TensorInfo, np.ndarray]]) -> list[np.ndarray]:
        """Outputs for a batch: in one run, sample by sample, or none at all (empty batch)."""
        batched = [(s, a) for s, a in feeds if s.batched]
        sizes = {int(a.shape[0]) for _, a in batched}
        if 0 in sizes:
            if len(sizes) > 1:
                raise InferenceInputError(
                    "an empty batch needs every batched input empty; got sample counts "
                    + ", ".join(f"{_quote(s.name)}: {a.shape[0]}" for s, a in batched[:16])
                )
            return self._empty(graph, feeds)
        if len(sizes) > 1:
            # Keras refuses this too ("data cardinality is ambiguous"); a runtime would broadcast
            # or fold the shorter input into the other's samples and return numbers for neither.
            raise InferenceInputError(
                "every input needs the same number of samples; got "
                + ", ".join(f"{_quote(s.name)}: {a.shape[0]}" for s, a in batched[:16]),
                hint="for a model whose first dimension is not a batch, use model.interpreter",
            )
        one_at_a_time = [s for s, a in batched if s.shape[0] == 1 and a.shape[0] != 1]
        n = next(iter(sizes)) if len(sizes) == 1 else None
        if one_at_a_time or (not graph.batchable and n is not None and n > 1):
            if n is None:
                raise InferenceInputError(
                    f"input {_quote(one_at_a_time[0].name)} takes one sample per run, so every "
                    "batched input needs the same number of samples; got "
                    + ", ".join(f"{_quote(s.name)}: {a.shape[0]}" for s, a in batched[:16])
                )
            return self._per_sample(graph, feeds, n)
        results = self._invoke(graph, feeds)
        if n is not None and n > 1 and any(r.ndim == 0 or r.shape[0] != n for r in results):
            # The outputs did not follow the batch: the model hard-codes one sample somewhere
            # (a reshape to [1, -1, 16]) although its input says -1. Numbers from such a run are
            # folded into the wrong shape, never returned; every batch goes per sample instead.
            graph.batchable = False
            log.warning(
                "the model's outputs do not follow a batch of %d (it hard-codes one sample); "
                "running batches sample by sample",
                n,
            )
            return self._per_sample(graph, feeds, n)
        return results

    def _per_sample(
        self, graph: _Graph, feeds: list[tuple[TensorInfo, np.ndarray]], n: int
    ) -> list[np.ndarray]:
        parts: list[list[np.ndarray]] = [[] for _ in graph.outputs]
        for i in range(n):
            sample = [(s, a[i : i + 1] if s.batched else a) for s, a in feeds]
            results = self._invoke(graph, sample)
            if i == 0:
                self._check_batch_axis(graph, results, f"a batch of {n}")
            for part, result in zip(parts, results, strict=True):
                part.append(result)
        return [np.concatenate(part) for part in parts]

    def _empty(self, graph: _Graph, feeds: list[tuple[TensorInfo, np.ndarray]]) -> list[np.ndarray]:
        key = tuple(a.shape[1:] if s.batched else a.shape for s, a in feeds)
        known = graph.sample_outputs.get(key)
        if known is None:
            known = _declared_sample_outputs(graph.outputs) or self._learn_sample_outputs(
                graph, feeds
            )
            graph.sample_outputs[key] = known
        return [np.empty((0, *shape), dtype) for shape, dtype in known]

    def _learn_sample_outputs(
        self, graph: _Graph, feeds: list[tuple[TensorInfo, np.ndarray]]
    ) -> list[tuple[tuple[int, ...], np.dtype[Any]]]:
        """Output shapes (without the batch axis) for one sample of ``feeds``' size, from one
        zero sample run on a scratch interpreter.

        Never on this model's interpreter: a run there would advance a stateful model's state
        (a wake-word model fed an empty chunk answered wrongly from then on), and zero samples
        never reach any interpreter (XNNPACK cannot reshape to 0, and some runtimes crash on
        the next run after trying).
        """
        sample = [(s, np.zeros((1, *a.shape[1:]), a.dtype) if s.batched else a) for s, a in feeds]
        with self._lock:
            self._check_open()
            bytes_ = self._model_bytes
        scratch = Model(bytes_, manifest=self.manifest, backend=self.backend, threads=1,
                        delegate_chain=self._delegate_chain, strict_delegates=self._strict)  # fmt: skip
        try:
            scratch_graph = scratch._graph(graph.key)
            results = scratch._invoke(scratch_graph, sample)
        finally:
            scratch.close()
        self._check_batch_axis(graph, results, "an empty batch")
        return [(tuple(r.shape[1:]), r.dtype) for r in results]

    @staticmethod
    def _check_batch_axis(graph: _Graph, results: Sequence[np.ndarray], what: str) -> None:
        for spec, result in zip(graph.outputs, results, strict=True):
            if result.ndim == 0 or result.shape[0] != 1:
                raise InferenceInputError(
                    f"output {_quote(spec.name)} has shape {list(result.shape)} for one sample: "
                    f"it has no batch axis, so {what} has no defined result",
                    hint="call predict with one sample at a time",
                )

    def _check_open(self) -> None:
        if self._closed:  # checked under the lock: close() may run in another thread
            raise UsageError("this model was closed")

    def _invoke(
        self, graph: _Graph, feeds: list[tuple[TensorInfo, np.ndarray]]
    ) -> list[np.ndarray]:
        """One run of the interpreter on inputs whose shapes :meth:`_coerce` accepted."""
        with self._lock:
            self._check_open()
            resized: list[tuple[TensorInfo, np.ndarray]] = []
            try:
                if graph.runner is not None:
                    result = graph.runner(**{s.name: a for s, a in feeds})
                    return [np.asarray(result[o.name]) for o in graph.outputs]
                interp = self._interpreter
                resized = [(s, a) for s, a in feeds if graph.current[s.index] != a.shape]
                if resized:
                    # Resize once per new shape, not per call; all inputs before one allocate,
                    # since ops joining several inputs cannot be prepared with mixed sizes.
                    # strict: the runtime itself refuses to touch a dimension the model fixed.
                    for spec, array in resized:
                        interp.resize_tensor_input(spec.index, array.shape, strict=True)
                        graph.current[spec.index] = ()  # unknown until allocation succeeds
                    interp.allocate_tensors()
                    for spec, array in resized:
                        graph.current[spec.index] = array.shape
                for spec, array in feeds:
                    interp.set_tensor(spec.index, array)
                interp.invoke()
                return [interp.get_tensor(spec.index) for spec in graph.outputs]
            except (ValueError, RuntimeError) as exc:
                if resized:
                    shapes = ", ".join(f"{_quote(s.name)}: {list(a.shape)}" for s, a in resized[:8])
                    raise BackendError(
                        f"the model cannot run on input shape(s) {shapes}: {backend_message(exc)}",
                        hint="give inputs of a size the model accepts (a model with 'valid' "
                        "convolutions or pooling needs a minimum height and width)",
                    ) from None
                raise BackendError(f"inference failed: {backend_message(exc)}") from None

    @property
    def interpreter(self) -> InterpreterView:
        """This model as a LiteRT ``Interpreter`` (``get_input_details``, ``set_tensor``,
        ``invoke``, ``get_tensor``, ``get_signature_runner`` …) for code written against LiteRT.

        Built on first use over the same verified, in-memory model bytes, with its own tensors,
        so interpreter-style calls and :meth:`predict` never disturb each other.
        See :class:`edge_sdk.device.litert_interface.InterpreterView`.
        """
        with self._lock:
            self._check_open()
            if self._interpreter_view is None:
                raw, _ = _build_interpreter(
                    self.backend, self._model_bytes, self.threads, self._delegate_chain,
                    self._strict,
                )  # fmt: skip
                self._interpreter_view = InterpreterView(raw, self)
            return self._interpreter_view

    def clone(self) -> Model:
        """Another interpreter over the same model bytes (for parallel workers); a
        :attr:`stateful` model's clone starts from the initial state."""
        return Model(
            self._model_bytes,
            manifest=self.manifest,
            backend=self.backend,
            threads=self.threads,
            delegate_chain=self._delegate_chain,
            strict_delegates=self._strict,
            _stateful=self.stateful,
        )

    def close(self) -> None:
        """Drop the interpreter(s) and the model bytes."""
        with self._lock:
            self._closed = True
            self._interpreter = None
            self._graphs = {}
            self._model_bytes = b""
            view, self._interpreter_view = self._interpreter_view, None
        if view is not None:
            view.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: backend, threads, delegates and tensors."""

        def tensor(t: TensorInfo) -> dict[str, Any]:
            out: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)}
            if t.quantized:
                out["quantization"] = {"scale": t.scale, "zero_point": t.zero_point}
            return out

        return {
            "backend": {
                "name": self.backend.name,
                "package": self.backend.package,
                "version": self.backend.version,
            },
            "threads": self.threads,
            "memory": self.memory,
            "delegates": [
                {"name": d.name, "applied": d.applied, "reason": d.reason} for d in self.delegates
            ],
            "inputs": [tensor(t) for t in self.inputs],
            "outputs": [tensor(t) for t in self.outputs],
            **({"signatures": list(self.signatures)} if len(self.signatures) > 1 else {}),
        }


def _cast(name: str, array: np.ndarray, dtype: np.dtype[Any], raw: bool) -> np.ndarray:
    """``array`` as ``dtype`` when that loses nothing: same kind, and integers within range."""
    if array.dtype == dtype:
        return array
    if dtype.kind == "f" and array.dtype.kind in "iub":
        # Integers into a float input: pixels 0-255 cast as they are, into a model that wants
        # [-1, 1] or [0, 1], give wrong numbers without a word (raw LiteRT refuses the dtype).
        # Only the caller knows the model's scaling.
        raise InferenceInputError(
            f"input {name} expects {dtype}, got {array.dtype}: integers are not cast into a "
            "float input, since how the model scales them (0-255, [0, 1], [-1, 1]) is not "
            "known here",
            hint=f"scale as the model expects and pass {dtype}: e.g. "
            f"x.astype(np.{dtype}) / 127.5 - 1 for [-1, 1], / 255 for [0, 1]",
        )
    integers = array.dtype.kind in "iu" and dtype.kind in "iu"  # range-checked below
    if (
        not (integers or np.can_cast(array.dtype, dtype, "same_kind"))
        or array.dtype.kind not in "biuf"
    ):
        raise InferenceInputError(
            f"input {name} expects {dtype}, got {array.dtype}"
            + (" (pass raw=False to feed floats to a quantized model)" if raw else "")
        )
    if dtype.kind == "f" and array.size and not np.can_cast(array.dtype, dtype):
        # A narrowing cast (float32 into a float16 input) turns large values into infinities,
        # and the model into NaN outputs: refused, as integers out of range are.
        finite = np.abs(array[np.isfinite(array)]) if array.dtype.kind == "f" else np.abs(array)
        largest = float(finite.max()) if finite.size else 0.0
        if largest > float(np.finfo(dtype).max):
            raise InferenceInputError(
                f"input {name} expects {dtype}, whose largest value is "
                f"{float(np.finfo(dtype).max):g}; got values up to {largest:g}, which would "
                "become infinite"
            )
    if array.dtype.kind in "iu" and dtype.kind in "iu" and not np.can_cast(array.dtype, dtype):
        info = np.iinfo(dtype)
        if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
            raise InferenceInputError(
                f"input {name} expects {dtype}, got {array.dtype} values in "
                f"[{int(array.min())}, {int(array.max())}], outside {dtype}'s range"
            )
    return array.astype(dtype)


def _declared_sample_outputs(
    outputs: Sequence[TensorInfo],
) -> list[tuple[tuple[int, ...], np.dtype[Any]]] | None:
    """Each output's shape without the batch axis and its dtype, when the outputs' signatures
    fix every dimension but the batch (else None: the size follows the input)."""
    if not all(t.shape and t.shape[0] in (-1, 1) and min(t.shape[1:], default=0) >= 0
               for t in outputs):  # fmt: skip
        return None
    return [(t.shape[1:], t.dtype) for t in outputs]


#: Operators that write state a later run reads (resource variables); LiteRT keeps it per
#: interpreter, across invocations.
_STATE_OPS = frozenset({"ASSIGN_VARIABLE"})


def _keeps_state(model_bytes: bytes | SealedMemory) -> bool:
    if isinstance(model_bytes, SealedMemory):
        with model_bytes.readonly() as view:
            return _keeps_state_in(view)
    return _keeps_state_in(model_bytes)


def _keeps_state_in(model_bytes: bytes | memoryview) -> bool:
    """Whether the model assigns variables that persist between runs (a stateful model).

    Raises:
        ModelInputError: the strict reader refuses the file; no runtime may be given it.
    """
    return any(op.name in _STATE_OPS for op in read_tflite(model_bytes).ops)


def _full_signatures(interpreter: Any) -> dict[str, Any]:
    get_signatures = getattr(interpreter, "_get_full_signature_list", None)
    signatures = get_signatures() if get_signatures is not None else None
    return dict(signatures or {})


class ModelPool:
    """Several interpreters over one model, for throughput from several threads.

    ``predict`` takes a free interpreter (blocking until one is free), so N threads calling it
    keep N interpreters busy; LiteRT releases the GIL inside ``invoke``. The model given is
    the first worker and stays its caller's: :meth:`close` closes only the interpreters the pool
    made.

    Raises:
        UsageError: ``workers`` below 1, or several workers for a :attr:`Model.stateful` model
            (each interpreter would hold its own state, and a stream spread over them would get
            numbers from none).
    """

    def __init__(self, model: Model, workers: int) -> None:
        if workers < 1:
            raise UsageError("workers must be at least 1")
        if workers > 1 and model.stateful:
            raise UsageError(
                f"a model that keeps state between runs cannot be spread over {workers} "
                "interpreters: each would hold its own state, and consecutive inputs would meet "
                "different states",
                hint="use one Model (it is thread-safe), or one Model per independent stream "
                "(model.clone() starts from the initial state)",
            )
        self._clones = [model.clone() for _ in range(workers - 1)]
        self._models = [model, *self._clones]
        self._free = list(self._models)
        self._cond = threading.Condition()

    def predict(self, x: Any, *, raw: bool = False, signature: str | None = None) -> Any:
        """Like :meth:`Model.predict`, on whichever interpreter is free."""
        with self._cond:
            while not self._free:
                self._cond.wait()
            model = self._free.pop()
        try:
            return model.predict(x, raw=raw, signature=signature)
        finally:
            with self._cond:
                self._free.append(model)
                self._cond.notify()

    def close(self) -> None:
        """Close the interpreters the pool made; the model it was given stays open."""
        for model in self._clones:
            model.close()


def runtime_release(backend: Backend) -> RuntimeRelease:
    """The TFLite release ``backend`` corresponds to, for :func:`edge_sdk.format.verify.check_runtime`.

    Raises:
        TargetMismatchError: the backend's version cannot be judged.
    """
    try:
        return RuntimeRelease(
            backend.package, backend.version, tflite_release(backend.package, backend.version)
        )
    except CompatibilityError as exc:
        raise TargetMismatchError(
            f"cannot judge {backend.package} {backend.version}: {exc.message}"
        ) from None


def check_backend(manifest: Manifest, backend: Backend) -> None:
    """Refuse, before decrypting, a bundle whose model needs a newer LiteRT than ``backend``.

    Raises:
        TargetMismatchError: naming the model's need and what this device has.
    """
    from edge_sdk.format.verify import check_runtime

    check_runtime(manifest, runtime_release(backend))


def detect_hardware_ids() -> tuple[str, ...]:
    """Ids this board answers to: device-tree ``compatible`` strings and model, plus the arch."""
    ids: list[str] = []
    for path in ("/proc/device-tree/compatible", "/sys/firmware/devicetree/base/compatible"):
        try:
            ids.extend(
                p.decode(errors="replace") for p in Path(path).read_bytes().split(b"\0") if p
            )
            break
        except OSError:
            continue
    ids.append(platform.machine())
    return tuple(dict.fromkeys(ids))


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    getter = getattr(os, "sched_getaffinity", None)
    return len(getter(0)) if getter is not None else (os.cpu_count() or 1)


def choose_profile(
    profile: Any, target_profile: str, hardware_ids: Sequence[str]
) -> tuple[Any, str]:
    """The profile whose threads and delegates apply, and why.

    A profile given by the caller wins. Without one, the bundle's own target profile applies when
    this board answers to one of its hardware ids (it is the board the bundle was built for);
    otherwise none does, and the caller falls back to the cores available.
    """
    from edge_sdk.profiles import load_profile

    if profile is not None:
        return profile, f"profile {profile.name}"
    try:
        target = load_profile(target_profile)
    except EdgeSDKError:
        return (
            None,
            f"no profile given, and the bundle's profile {target_profile!r} is not known here",
        )
    matched = sorted(set(target.hardware_ids) & set(hardware_ids))
    if matched:
        return target, f"profile {target.name}: the bundle's target, and this board is {matched[0]}"
    if not target.hardware_ids:
        return (
            None,
            f"no profile given, and the bundle's profile {target.name} names no hardware ids",
        )
    return None, f"no profile given, and this board is not a {target.name}"


def layout_path(source: str | os.PathLike[str]) -> Path:
    """``source`` with its directories resolved and its last component kept as it is.

    The deploy layout gives meaning to directory names (``<name>/current``,
    ``<name>/releases/…``), so they must be judged on the real directories: ``current``,
    ``./current``, ``../digits/current`` or a path through a symlinked root all name
    ``<root>/digits``. The last component is not followed: ``current`` is judged as the link the
    layout put there, not by wherever it points.
    """
    path = Path(source)
    try:
        parent = os.path.realpath(path.parent, strict=True)
    except (OSError, RuntimeError):
        # A missing or looping directory: the open fails and says so; judge the spelling as given.
        parent = os.path.abspath(path.parent)
    return Path(parent) / path.name


def expected_name_from_path(source: str | os.PathLike[str] | bytes) -> str | None:
    """The bundle name the deploy layout implies for ``source``, if it is inside one.

    ``<root>/<name>/current`` (a symlink) and ``<root>/<name>/releases/<version>-<digest>.edgepkg``
    are the paths ``edge-sdk deploy`` and the agent write; a bundle found there must carry that
    name, or anyone able to swap ``current`` could substitute any release the publisher ever
    signed under another name and step around that name's anti-rollback counter. The name comes
    from the resolved directories (:func:`layout_path`), however the path is spelled.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    path = layout_path(source)
    # A plain file planted as `current` is judged like the link it replaced: the name of the
    # directory it sits in, which the deploy layout fixes, not the name the bundle claims.
    if path.name == "current" and (path.is_symlink() or (path.parent / "releases").is_dir()):
        return path.parent.name or None
    if path.parent.name == "releases" and re.fullmatch(
        r"\d{1,19}-[0-9a-f]{16}\.edgepkg", path.name
    ):
        return path.parent.parent.name or None
    return None


def as_trust(trust: Any) -> TrustStore:
    if isinstance(trust, TrustStore):
        return trust
    if isinstance(trust, (str, os.PathLike)):
        return TrustStore.load([trust])
    if isinstance(trust, Sequence):
        return TrustStore.load(list(trust))
    raise UsageError("trust must be a TrustStore, a path, or a list of paths")


def key_slip_for(
    source: str | os.PathLike[str] | bytes,
    slip: bytes | str | os.PathLike[str] | None,
    key: PrivateKey | None,
) -> bytes | None:
    """The slip's bytes: the one given, else the one beside the bundle file if it exists."""
    if isinstance(slip, (bytes, bytearray, memoryview)):
        return bytes(slip)
    if slip is not None:
        return read_key_slip(slip)
    if key is None or isinstance(source, (bytes, bytearray, memoryview)):
        return None
    beside = slip_path_beside(source)
    return read_key_slip(beside) if beside.is_file() else None


def load(
    source: str | os.PathLike[str] | bytes,
    *,
    trust: TrustStore | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    device_key: PrivateKey | str | os.PathLike[str] | None = None,
    slip: bytes | str | os.PathLike[str] | None = None,
    profile: Any = None,
    state_dir: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    backend: str | None = None,
    strict_delegates: bool = False,
    expected_name: str | None = None,
    require_encryption: bool | None = None,
    allow_target_mismatch: bool = False,
    hardware_ids: Sequence[str] | None = None,
    now: datetime | None = None,
) -> Model:
    """Verify, decrypt in memory, check anti-rollback state, and build the interpreter.

    Args:
        source: a bundle path or the bundle's bytes.
        trust: the pinned trust store (or a path / paths to load one from).
        device_key: this device's key (object or path); needed for encrypted bundles.
        slip: this device's key slip for the bundle (a path, or the slip's bytes): the content
            key comes from it instead of the bundle's recipient entries. Without it, a slip
            beside the bundle file (``model.edgepkg`` → ``model.edgeslip``, found through the
            ``current`` link) is used when there is one. A slip for another bundle or device is
            refused (:class:`~edge_sdk.errors.KeySlipMismatchError`), as is one the trust store
            does not sign.
        profile: a DeviceProfile or profile name; threads and delegates come from it, and a
            bundle built for another profile is refused unless ``allow_target_mismatch``.
            Without it, the bundle's target profile applies if this board is one of its hardware
            ids; else the interpreter gets one thread per usable core (``model.threads_reason``
            says which).
        state_dir: where the highest accepted version per bundle name is kept (default: the
            user's state dir, or /var/lib/edge-sdk for root).
        threads: override the profile's thread count.
        backend: pin a backend (``ai_edge_litert``, ``tflite_runtime``, ``tensorflow``).
        strict_delegates: a delegate that fails to load is an error instead of a fallback.
        expected_name: the bundle name this caller wants; another name is refused. Taken from the
            path when it is inside the deploy layout (``<root>/<name>/current``); pass it when
            you load from anywhere else that someone else can write.
        require_encryption: refuse signed-only bundles (default: when a device key is given).
        allow_target_mismatch: testing only: skip the profile, hardware id and runtime checks.
        hardware_ids: this device's ids (default: detected from the device tree and arch).

    Raises:
        EdgeSDKError: every failure, typed by cause (see :mod:`edge_sdk.errors`).
    """
    store = as_trust(trust)
    key = (
        device_key
        if isinstance(device_key, PrivateKey) or device_key is None
        else load_private_key(device_key, kind="device")
    )
    prof = load_profile(profile) if isinstance(profile, str) else profile
    state = VersionState(Path(state_dir) if state_dir else default_state_dir())
    audit = AuditLog(state.directory / "audit.log")
    ids = tuple(hardware_ids) if hardware_ids is not None else detect_hardware_ids()
    where = source if isinstance(source, (str, os.PathLike)) else "<bytes>"
    parsed: dict[str, Any] = {}  # what is known of the bundle so far, for the audit record
    limits = Limits.for_model_size(prof.max_model_bytes) if prof is not None else DEFAULT_LIMITS
    wanted_name = expected_name if expected_name is not None else expected_name_from_path(source)
    slip_bytes = key_slip_for(source, slip, key)

    def known(header: Bundle) -> None:
        parsed.update(name=header.manifest.name, version=header.manifest.version,
                      digest=header.digest)  # fmt: skip
        require_kind(header, "tflite", "edge_sdk.load")

    memory: SealedMemory | None = None
    try:
        runtime = discover_backend(backend)
        check_device = not allow_target_mismatch
        policy = Policy(
            store,
            now=now,
            expected_name=wanted_name,
            require_encryption=key is not None
            if require_encryption is None
            else require_encryption,
            profile=prof.name if prof is not None and check_device else None,
            runtime_package=prof.runtime.package if prof is not None and check_device else None,
            hardware_ids=ids if check_device else (),
            runtime=runtime_release(runtime) if check_device else None,
            state=state,
            device_key=key,
            key_slip=slip_bytes,
        )
        # Every check of docs/FORMAT.md, in its order, in one place: the header and its
        # signatures before a byte of the payload is read, the device policy (anti-rollback
        # included) before any key is unwrapped, the payload and model hashes beside the AEAD.
        # Into sealed memory where the kernel has it: LiteRT then maps the model by path (one
        # copy in RAM, its pages shared by every interpreter of it, never writable once the
        # checks passed); into a bytes elsewhere. The checks and their order are the same.
        if unavailable_reason() is None:
            memory = SealedMemory(limits.max_model_bytes, min_bytes=SEALED_MIN_BYTES)
        opened = open_verified(source, policy, limits, on_header=known, sink=memory)
        if memory is not None and memory.holds_model:
            memory.seal()
        elif memory is not None:
            memory = None  # declined: a small model, in a bytes
        manifest, verification = opened.verification.manifest, opened.verification
        chosen, reason = choose_profile(prof, manifest.target.profile, ids)
        if threads is not None:
            count, reason = threads, "threads given by the caller"
        elif chosen is not None and prof is None:
            # Found by hardware id, not chosen by the caller: a profile names a class of boards,
            # so never more threads than this one can run at once.
            count = min(chosen.threads, usable_cores())
            if count < chosen.threads:
                reason += f" (its {chosen.threads} threads capped at the {count} usable cores)"
        elif chosen is not None:
            count = chosen.threads
        else:
            count, reason = usable_cores(), f"{usable_cores()} usable cores ({reason})"
        model = Model(
            memory if memory is not None else opened.model_bytes,
            manifest=manifest,
            backend=runtime,
            threads=count,
            delegate_chain=chosen.delegates if chosen is not None else (),
            strict_delegates=strict_delegates,
        )
        del opened
        model.threads_reason = reason
    except EdgeSDKError as exc:
        if memory is not None:
            memory.close()  # wipes a model that was refused (no model of it is returned)
        try:
            audit.append("reject", source=str(where), **parsed, result="rejected", reason=exc.message,
                         error=exc.kind)  # fmt: skip
        except AuditLogError as log_error:
            # The rejection is what the caller must see; the log failure is said alongside it.
            log.error("could not record the rejection in the audit log: %s", log_error.message)
        raise
    try:
        # Logged before the version counter moves: a load the device cannot account for is
        # refused (and leaves the counter where it was). A version already accepted moves
        # nothing, so its record is written now and synced by the audit log's group commit,
        # off the path to the first result (docs/AUDIT.md, "Durability").
        accepted = state.is_recorded(manifest.name, manifest.version, verification.digest)
        audit.append("load", durable=not accepted, source=str(where), **parsed,
                     signers=list(verification.signers), result="ok",
                     backend=f"{model.backend.package} {model.backend.version}")  # fmt: skip
    except EdgeSDKError:
        model.close()
        raise
    try:
        if not accepted:
            state.record(manifest.name, manifest.version, verification.digest)
    except EdgeSDKError as exc:
        model.close()
        # The "ok" record above must not be the log's last word on a load that was refused.
        with contextlib.suppress(EdgeSDKError):
            audit.append("reject", source=str(where), **parsed, result="rejected", reason=exc.message,
                         error=exc.kind, stage="recording the accepted version")  # fmt: skip
        raise
    return model
