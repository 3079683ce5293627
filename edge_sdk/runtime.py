"""The device runtime: verified bundles in, numpy in, numpy out — without TensorFlow.

:func:`load` runs the full check order of shared/DESIGN.md (see :mod:`edge_sdk.verify`), keeps the
decrypted model in memory only, and builds one LiteRT interpreter from the bytes with the threads
and delegates of the board's profile. :class:`Model` is a thin, thread-safe path over
``interpreter.invoke()``: tensor indices and quantization parameters are looked up once at load.

Backends are tried in order ``ai_edge_litert`` → ``tflite_runtime`` → ``tensorflow.lite`` (the last
with a warning: it is heavy and not meant for boards); ``EDGE_SDK_BACKEND`` or a profile can pin one.
"""

from __future__ import annotations

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

from .audit_log import AuditLog
from .bundle import DEFAULT_LIMITS, Bundle, Limits
from .compat import tflite_release  # every load judges its runtime: imported with the runtime
from .errors import (
    AuditLogError,
    BackendError,
    CompatibilityError,
    DelegateError,
    EdgeSDKError,
    InferenceInputError,
    TargetMismatchError,
    UsageError,
    install_hint,
)
from .keys import PrivateKey, TrustStore, load_private_key
from .manifest import Manifest
from .profiles import load_profile
from .state import VersionState, default_state_dir
from .verify import Policy, RuntimeRelease, open_verified

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
    """An input or output tensor as the interpreter sees it."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


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
    get_signatures = getattr(interpreter, "_get_full_signature_list", None)
    signatures = get_signatures() if get_signatures is not None else {}
    ordered_in, ordered_out = list(inputs.values()), list(outputs.values())
    if len(signatures) == 1:
        sig = next(iter(signatures.values()))
        sig_in, sig_out = dict(sig.get("inputs", {})), dict(sig.get("outputs", {}))
        if set(sig_in.values()) == set(inputs) and set(sig_out.values()) == set(outputs):
            ordered_in = [replace(inputs[i], name=n) for n, i in sig_in.items()]
            ordered_out = [replace(outputs[i], name=n) for n, i in sig_out.items()]
    if manifest is not None:
        if len(manifest.model.inputs) == len(ordered_in):
            ordered_in = [
                replace(t, name=s.name)
                for t, s in zip(ordered_in, manifest.model.inputs, strict=True)
            ]
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


class Model:
    """A loaded model: ``predict`` numpy in, numpy out. Build it with :func:`load`.

    Attributes:
        inputs / outputs: the interpreter's tensors (names, shapes, dtypes, quantization).
        manifest: the verified manifest (``None`` for models built from raw bytes on the host).
        backend: the runtime and its version.
        delegates: what the profile's delegate chain did (applied, or fell back and why).
        threads: the interpreter's thread count.
        threads_reason: why that count (a profile, the caller, or the cores available).
    """

    threads_reason: str = ""

    def __init__(
        self,
        model_bytes: bytes,
        *,
        manifest: Manifest | None = None,
        backend: Backend | None = None,
        threads: int | None = None,
        delegate_chain: Sequence[Any] = (),
        strict_delegates: bool = False,
    ) -> None:
        if not isinstance(model_bytes, bytes):
            # Interpreter(model_content=bytearray) raises a TypeError whose text dumps the model.
            raise UsageError("model bytes must be bytes")
        self.backend = backend or discover_backend()
        self.manifest = manifest
        self.threads = threads
        self._model_bytes = model_bytes
        self._delegate_chain = tuple(delegate_chain)
        self._strict = strict_delegates
        delegates, reports, xnnpack = _build_delegates(
            self.backend, delegate_chain, strict_delegates
        )
        if xnnpack:
            reports.insert(0, DelegateReport("xnnpack", True, "builtin default delegate"))
        self.delegates: tuple[DelegateReport, ...] = tuple(reports)
        resolver = self.backend.op_resolver
        try:
            self._interpreter = self.backend.interpreter_cls(
                model_content=model_bytes,
                num_threads=threads,
                experimental_delegates=delegates or None,
                experimental_op_resolver_type=(
                    resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                ),
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise BackendError(
                f"{self.backend.package} {self.backend.version} cannot build this model: {first}"
            ) from None
        self.inputs, self.outputs = _signature_tensors(self._interpreter, manifest)
        self._by_name = {t.name: t for t in self.inputs}
        self._current_shapes = {
            int(d["index"]): tuple(int(v) for v in d["shape"])
            for d in self._interpreter.get_input_details()
        }
        self._lock = threading.Lock()
        self._closed = False

    # -- inference -----------------------------------------------------------------------------

    def _coerce(self, spec: TensorInfo, value: Any, raw: bool) -> np.ndarray:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InferenceInputError(
                f"input {spec.name!r}: cannot make an array ({exc})"
            ) from None
        if array.ndim != len(spec.shape) or any(
            want not in (-1, got)
            for want, got in zip(spec.shape[1:], array.shape[1:], strict=False)
        ):
            raise InferenceInputError(
                f"input {spec.name!r} expects shape {list(spec.shape)} (batch may vary), "
                f"got {list(array.shape)}"
            )
        if raw or not spec.quantized:
            if array.dtype == spec.dtype:
                return array
            if (
                not np.can_cast(array.dtype, spec.dtype, "same_kind")
                or array.dtype.kind not in "biuf"
            ):
                raise InferenceInputError(
                    f"input {spec.name!r} expects {spec.dtype}, got {array.dtype}"
                    + (" (pass raw=False to feed floats to a quantized model)" if raw else "")
                )
            return array.astype(spec.dtype)
        if array.dtype.kind not in "biuf":
            raise InferenceInputError(f"input {spec.name!r} expects numbers, got {array.dtype}")
        info = np.iinfo(spec.dtype)
        quantized = np.round(array.astype(np.float32) / spec.scale) + spec.zero_point
        result: np.ndarray = np.clip(quantized, info.min, info.max).astype(spec.dtype)
        return result

    def _arrange(self, x: Any) -> list[tuple[TensorInfo, Any]]:
        if isinstance(x, Mapping):
            unknown = set(x) - set(self._by_name)
            missing = set(self._by_name) - set(x)
            if unknown or missing:
                raise InferenceInputError(
                    f"inputs by name: missing {sorted(missing)}, unknown {sorted(unknown)}; "
                    f"the model takes {[t.name for t in self.inputs]}"
                )
            return [(self._by_name[name], value) for name, value in x.items()]
        if isinstance(x, (list, tuple)) and len(self.inputs) > 1:
            if len(x) != len(self.inputs):
                raise InferenceInputError(
                    f"the model takes {len(self.inputs)} inputs, got {len(x)}"
                )
            return list(zip(self.inputs, x, strict=True))
        if len(self.inputs) != 1:
            raise InferenceInputError(
                f"the model takes {len(self.inputs)} inputs; pass a dict by name: "
                f"{[t.name for t in self.inputs]}"
            )
        return [(self.inputs[0], x)]

    def predict(self, x: Any, *, raw: bool = False) -> Any:
        """Run the model.

        Args:
            x: an array for a single-input model; a dict by input name (or a list in order) for
                several inputs. Quantized inputs take floats unless ``raw``.
            raw: feed and return the quantized integers as they are.

        Returns:
            An array for a single-output model, else a dict by output name.

        Raises:
            InferenceInputError: wrong name, shape or dtype, naming the tensor.
            BackendError: the interpreter failed.
        """
        feeds = [(spec, self._coerce(spec, value, raw)) for spec, value in self._arrange(x)]
        with self._lock:
            if self._closed:  # checked under the lock: close() may run in another thread
                raise UsageError("this model was closed")
            interp = self._interpreter
            try:
                resized = [(s, a) for s, a in feeds if self._current_shapes[s.index] != a.shape]
                if resized:
                    # Resize once per new batch shape, not per call; all inputs before one allocate,
                    # since ops joining several inputs cannot be prepared with mixed batch sizes.
                    for spec, array in resized:
                        interp.resize_tensor_input(spec.index, array.shape, strict=False)
                        self._current_shapes[spec.index] = ()  # unknown until allocation succeeds
                    interp.allocate_tensors()
                    for spec, array in resized:
                        self._current_shapes[spec.index] = array.shape
                for spec, array in feeds:
                    interp.set_tensor(spec.index, array)
                interp.invoke()
                results = [(spec, interp.get_tensor(spec.index)) for spec in self.outputs]
            except (ValueError, RuntimeError) as exc:
                raise BackendError(f"inference failed: {str(exc).splitlines()[0][:300]}") from None
        out = {
            spec.name: value
            if raw or not spec.quantized
            else (value.astype(np.float32) - spec.zero_point) * np.float32(spec.scale)
            for spec, value in results
        }
        return next(iter(out.values())) if len(out) == 1 else out

    def clone(self) -> Model:
        """Another interpreter over the same model bytes (for parallel workers)."""
        return Model(
            self._model_bytes,
            manifest=self.manifest,
            backend=self.backend,
            threads=self.threads,
            delegate_chain=self._delegate_chain,
            strict_delegates=self._strict,
        )

    def close(self) -> None:
        """Drop the interpreter and the model bytes."""
        with self._lock:
            self._closed = True
            self._interpreter = None
            self._model_bytes = b""

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
            "delegates": [
                {"name": d.name, "applied": d.applied, "reason": d.reason} for d in self.delegates
            ],
            "inputs": [tensor(t) for t in self.inputs],
            "outputs": [tensor(t) for t in self.outputs],
        }


class ModelPool:
    """Several interpreters over one model, for throughput from several threads.

    ``predict`` takes a free interpreter (blocking until one is free), so N threads calling it
    keep N interpreters busy; LiteRT releases the GIL inside ``invoke``.
    """

    def __init__(self, model: Model, workers: int) -> None:
        if workers < 1:
            raise UsageError("workers must be at least 1")
        self._models = [model] + [model.clone() for _ in range(workers - 1)]
        self._free = list(self._models)
        self._cond = threading.Condition()

    def predict(self, x: Any, *, raw: bool = False) -> Any:
        """Like :meth:`Model.predict`, on whichever interpreter is free."""
        with self._cond:
            while not self._free:
                self._cond.wait()
            model = self._free.pop()
        try:
            return model.predict(x, raw=raw)
        finally:
            with self._cond:
                self._free.append(model)
                self._cond.notify()

    def close(self) -> None:
        for model in self._models:
            model.close()


def runtime_release(backend: Backend) -> RuntimeRelease:
    """The TFLite release ``backend`` corresponds to, for :func:`edge_sdk.verify.check_runtime`.

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
    from .verify import check_runtime

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
    from .profiles import load_profile

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


def expected_name_from_path(source: str | os.PathLike[str] | bytes) -> str | None:
    """The bundle name the deploy layout implies for ``source``, if it is inside one.

    ``<root>/<name>/current`` (a symlink) and ``<root>/<name>/releases/<version>-<digest>.edgepkg``
    are the paths ``edge-sdk deploy`` and the agent write; a bundle found there must carry that
    name, or anyone able to swap ``current`` could substitute any release the publisher ever
    signed under another name and step around that name's anti-rollback counter.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    path = Path(source)
    if path.name == "current" and path.is_symlink():
        return path.parent.name or None
    if path.parent.name == "releases" and re.fullmatch(
        r"\d{1,19}-[0-9a-f]{16}\.edgepkg", path.name
    ):
        return path.parent.parent.name or None
    return None


def _as_trust(trust: Any) -> TrustStore:
    if isinstance(trust, TrustStore):
        return trust
    if isinstance(trust, (str, os.PathLike)):
        return TrustStore.load([trust])
    if isinstance(trust, Sequence):
        return TrustStore.load(list(trust))
    raise UsageError("trust must be a TrustStore, a path, or a list of paths")


def load(
    source: str | os.PathLike[str] | bytes,
    *,
    trust: TrustStore | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    device_key: PrivateKey | str | os.PathLike[str] | None = None,
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
    store = _as_trust(trust)
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

    def known(header: Bundle) -> None:
        parsed.update(name=header.manifest.name, version=header.manifest.version,
                      digest=header.digest)  # fmt: skip

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
        )
        # Every check of docs/FORMAT.md, in its order, in one place: the header and its
        # signatures before a byte of the payload is read, the device policy (anti-rollback
        # included) before any key is unwrapped, the payload and model hashes beside the AEAD.
        opened = open_verified(source, policy, limits, on_header=known)
        manifest, verification = opened.verification.manifest, opened.verification
        chosen, reason = choose_profile(prof, manifest.target.profile, ids)
        if threads is not None:
            count, reason = threads, "threads given by the caller"
        elif chosen is not None:
            count = chosen.threads
        else:
            count, reason = usable_cores(), f"{usable_cores()} usable cores ({reason})"
        model = Model(
            opened.model_bytes,
            manifest=manifest,
            backend=runtime,
            threads=count,
            delegate_chain=chosen.delegates if chosen is not None else (),
            strict_delegates=strict_delegates,
        )
        del opened
        model.threads_reason = reason
    except EdgeSDKError as exc:
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
        if not accepted:
            state.record(manifest.name, manifest.version, verification.digest)
    except EdgeSDKError:
        model.close()
        raise
    return model
