"""HOST: ``edge-sdk package`` end to end — model file → checked, signed, encrypted bundle.

A ``.tflite`` input is sealed as it is (after the same compatibility check); Keras and SavedModel
inputs go through :mod:`edge_sdk.host.convert` first. TensorFlow is imported only on that path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import (
    CompatibilityError,
    EdgeSDKError,
    ModelInputError,
    UsageError,
    unreadable_file,
)
from edge_sdk.files import open_regular
from edge_sdk.format.bundle import Bundle, save_bundle
from edge_sdk.format.manifest import Manifest, Target, TensorSpec
from edge_sdk.keys import PrivateKey, PublicKey
from edge_sdk.profiles import DeviceProfile

if TYPE_CHECKING:
    from .pruning import PruneOptions

from .package_options import PackageOptions

__all__ = ["PackageOptions", "PackageResult", "package_model"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PackageResult:
    """What was built, for the summary the CLI prints."""

    path: Path
    bundle: Bundle
    size: int
    model_size: int
    quantization: str
    source_format: str
    reports: dict[str, Any] = field(repr=False)
    notes: tuple[str, ...] = ()


def _edgetpu_step(model_bytes: bytes, profile: DeviceProfile, notes: list[str]) -> bytes:
    """Compile for the Edge TPU when the compiler is present; otherwise say what that means."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        notes.append(
            "edgetpu_compiler is not installed (it runs only on x86-64 Debian/Ubuntu): the bundle "
            f"holds a plain int8 model, which {profile.name} runs on the CPU fallback, not the Edge TPU"
        )
        return model_bytes
    import tempfile

    # The compiler only takes files; this is the host side with the publisher's own model, so a
    # private temp dir is acceptable (plaintext never touches a device's disk).
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.tflite"
        src.write_bytes(model_bytes)
        run = subprocess.run(
            [compiler, "-s", "-o", tmp, str(src)], capture_output=True, text=True, check=False
        )
        out = Path(tmp) / "model_edgetpu.tflite"
        if run.returncode != 0 or not out.exists():
            raise CompatibilityError(
                f"edgetpu_compiler failed: {(run.stderr or run.stdout).strip()[-400:]}"
            )
        notes.append("compiled for the Edge TPU by edgetpu_compiler")
        return out.read_bytes()


def _readable_by_devices(bundle: Bundle) -> None:
    """Refuse to write a bundle the readers would refuse (a model with more inputs or outputs
    than a manifest may list, a manifest over its cap): found here, not on every board."""
    from edge_sdk.errors import BundleFormatError
    from edge_sdk.format.bundle import bundle_to_bytes, read_bundle

    try:
        read_bundle(bundle_to_bytes(bundle))
    except BundleFormatError as exc:
        raise ModelInputError(
            f"edge-sdk cannot carry this model in a bundle devices accept: {exc.message}",
            hint="see docs/FORMAT.md for the limits a reader enforces",
        ) from None


def io_specs(
    model_bytes: bytes, output_names: Sequence[str] = (), input_names: Sequence[str] = ()
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The model's inputs and outputs as the runtime will present them.

    Output names from the source model replace the converter's generic ``output_0`` names, so
    ``predict`` returns the names the model's author chose. Inputs follow the source model's own
    order when it is known (``input_names``): TFLite's signature lists them sorted by name, and a
    list passed to ``predict`` must mean what it meant to the model's author. The manifest
    records that order; the runtime arranges its tensors by it.
    """
    from edge_sdk.device.runtime import Model, TensorInfo

    def spec(t: TensorInfo, name: str | None = None) -> TensorSpec:
        quantized = t.quantized
        return TensorSpec(
            name or t.name,
            t.shape,
            str(t.dtype),
            t.scale if quantized else None,
            t.zero_point if quantized else None,
        )

    with Model(model_bytes) as model:
        own = [t.name for t in model.outputs]
        names: Sequence[str | None] = (
            # Already the author's names (a Keras model returning a dict: its signature uses the
            # keys): kept as they are, whatever order each side lists them in.
            own
            if sorted(output_names) == sorted(own)
            else output_names
            if len(output_names) == len(own)
            else [None] * len(own)
        )
        ins = list(model.inputs)
        by_name = {t.name: t for t in ins}
        if sorted(input_names) == sorted(by_name) and len(input_names) == len(ins):
            ins = [by_name[n] for n in input_names]
        return (
            tuple(spec(t) for t in ins),
            tuple(spec(t, n) for t, n in zip(model.outputs, names, strict=True)),
        )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


#: Options that only mean something while converting a Keras model or SavedModel.
_CONVERSION_OPTIONS = (
    ("quantize", "--quantize"), ("io_dtype", "--io-dtype"), ("calibration", "--calibration"),
    ("evaluation", "--eval"), ("max_accuracy_drop", "--max-accuracy-drop"),
    ("max_output_error", "--max-output-error"), ("min_output_cosine", "--min-output-cosine"),
    ("input_shapes", "--input-shape"), ("custom_objects", "--custom-objects"),
    ("imports", "--import"), ("train", "--train"), ("epochs", "--epochs"),
)  # fmt: skip


def _refuse_conversion_options(model_path: Path, options: PackageOptions) -> None:
    """A .tflite is sealed as it is: options that would change or judge a conversion cannot
    apply, and ignoring them would let the user believe they did."""
    given = [flag for attribute, flag in _CONVERSION_OPTIONS if getattr(options, attribute)
             not in (None, ())]  # fmt: skip
    if given and model_path.suffix.lower() == ".litertlm":
        raise UsageError(
            f"{model_path} is a LiteRT-LM model and is sealed as it is: {', '.join(given)} "
            "cannot apply (they act on a conversion from Keras)",
            hint="drop those options; quantize a language model when it is converted "
            "(litert-torch's quantize=, e.g. dynamic_int8) and build the .litertlm from that",
        )
    if given:
        raise UsageError(
            f"{model_path} is already TFLite and is sealed as it is: {', '.join(given)} "
            f"cannot apply (they act on a conversion from Keras)",
            hint="drop those options, or package the Keras model (.keras, .h5) or SavedModel to "
            "quantize and gate it",
        )


def package_model(
    model_path: Path,
    output: Path,
    profile: DeviceProfile,
    options: PackageOptions,
    signers: Sequence[PrivateKey],
    recipients: Sequence[PublicKey] = (),
    progress: Progress = lambda _step: None,
) -> PackageResult:
    """Convert (if needed), check, seal and write one bundle, with its build attestation.

    Raises:
        EdgeSDKError: typed by cause — model, data, conversion, accuracy, compatibility, keys,
            the source model's signature (ModelSignatureError), provenance.
    """
    # Provenance (edge_sdk/host/provenance.py): the inputs are verified and hashed first — a signed
    # model is converted from a private verified copy — and the conversion is attested at sealing.
    from .provenance import prepare_sources

    with prepare_sources(model_path, options, signers, progress) as sources:
        try:
            return _package_model(
                sources.model_path, output, profile, options, signers, recipients, progress,
                sources.attest,
            )  # fmt: skip
        except EdgeSDKError as exc:
            private = str(sources.model_path)
            if sources.model_path != model_path and private in exc.message:
                # A message about the private verified copy names the model the user gave.
                exc.message = exc.message.replace(private, str(model_path))
                exc.args = (exc.message,)
            raise


def builtin_delegates(profile: DeviceProfile) -> tuple[str, ...]:
    """The builtin delegates the device runtime applies for ``profile`` (no chain: XNNPACK, the
    runtime's default, as :mod:`edge_sdk.device.runtime` builds it)."""
    if not profile.delegates:
        return ("xnnpack",)
    return tuple(str(d.name) for d in profile.delegates if d.builtin)


def _refuse_oversized(size: int, profile: DeviceProfile) -> None:
    if size > profile.max_model_bytes:
        raise CompatibilityError(
            f"model is {size} bytes, over {profile.name}'s limit of {profile.max_model_bytes}",
            hint="use a profile for a board with more memory, or a user profile with a higher "
            "max_model_bytes (--profile path/to/board.toml; see 'edge-sdk profiles show NAME')",
        )


def _tflite_compat_hint(compat: Any) -> str:
    """What to do about a .tflite the profile's runtime cannot run: a custom op needs a runtime
    or delegate that provides it (re-converting would not remove it); other ops a newer runtime."""
    from edge_sdk.format.compat import CUSTOM_OP, DELEGATE_CUSTOM_OPS, FLEX_OP

    custom = [p for p in compat.problems if p.kind in (CUSTOM_OP, FLEX_OP)]
    if custom:
        provided = ", ".join(f"{d}: {', '.join(ops)}" for d, ops in DELEGATE_CUSTOM_OPS.items())
        return (
            "the model's publisher compiled in custom ops this runtime has no kernel for; use a "
            "profile whose runtime or delegate chain provides them (builtin delegates provide "
            f"{provided}), or a build of the model without them"
        )
    return "re-convert the source model with an older TensorFlow, or target a profile whose runtime is newer"


def _package_model(
    model_path: Path,
    output: Path,
    profile: DeviceProfile,
    options: PackageOptions,
    signers: Sequence[PrivateKey],
    recipients: Sequence[PublicKey],
    progress: Progress,
    attest: Callable[[Manifest], Mapping[str, Any]],
) -> PackageResult:
    from edge_sdk.format.compat import check_compatibility, read_tflite

    from .convert import convert_model
    from .quality_gate import (
        DEFAULT_MAX_ACCURACY_DROP,
        DEFAULT_MAX_OUTPUT_ERROR,
        DEFAULT_MIN_COSINE,
    )
    from .sealing import seal_bundle
    from .source_model import detect_model_format

    if _is_litertlm(model_path):
        return _package_litertlm(model_path, output, profile, options, signers, recipients,
                                 progress, attest)  # fmt: skip
    fmt = detect_model_format(model_path)
    quantize = options.quantize or profile.quantization
    notes: list[str] = []
    prune: PruneOptions | None = None
    if options.prune is not None:
        from .pruning import PruneOptions

        prune = PruneOptions(options.prune, train=options.train, epochs=options.epochs)
    elif options.train is not None or options.epochs is not None:
        raise UsageError("--train and --epochs fine-tune a pruned model; add --prune SPARSITY|auto")
    if fmt == "tflite" and prune is not None:
        raise UsageError(
            f"{model_path} is already TFLite: --prune needs the Keras model (.keras or .h5)"
        )
    if fmt == "tflite":
        _refuse_conversion_options(model_path, options)
        progress("load")
        model_bytes = _read_tflite_file(model_path, profile)
        info = read_tflite(model_bytes)
        compat = check_compatibility(info, profile.runtime.package, profile.runtime.version,
                                     delegates=builtin_delegates(profile))  # fmt: skip
        if not compat.ok:
            raise CompatibilityError(compat.summary(), hint=_tflite_compat_hint(compat))
        reports: dict[str, Any] = {
            "conversion": {
                "source_format": "tflite",
                "quantization": "as converted",
                "size": len(model_bytes),
            },
            "compatibility": compat.to_dict(),
        }
        quantization = "as converted"
        output_names: tuple[str, ...] = ()
        input_names: tuple[str, ...] = ()
    else:
        result = convert_model(
            model_path,
            quantize=quantize,
            runtime=profile.runtime.package,
            runtime_version=profile.runtime.version,
            io_dtype=options.io_dtype or (profile.io_dtype if quantize == "int8" else "float32"),
            calibration=options.calibration,
            evaluation=options.evaluation,
            max_accuracy_drop=_or(options.max_accuracy_drop, DEFAULT_MAX_ACCURACY_DROP),
            max_output_error=_or(options.max_output_error, DEFAULT_MAX_OUTPUT_ERROR),
            min_output_cosine=_or(options.min_output_cosine, DEFAULT_MIN_COSINE),
            input_shapes=options.input_shapes,
            custom_object_specs=options.custom_objects,
            imports=options.imports,
            prune=prune,
            progress=progress,
        )
        model_bytes, reports, quantization = result.model_bytes, result.reports, result.quantization
        notes.extend(result.notes)
        output_names, input_names = result.output_names, result.input_names
    # Before Edge TPU compilation: the compiled model's custom op only runs with the TPU delegate.
    inputs, outputs = io_specs(model_bytes, output_names, input_names)
    if profile.edgetpu:
        if quantization != "int8":
            notes.append(
                f"{profile.name} runs {quantization} models on the CPU only; the Edge TPU needs int8"
            )
        else:
            model_bytes = _edgetpu_step(model_bytes, profile, notes)
    _refuse_oversized(len(model_bytes), profile)
    level = profile.compression_level if options.compress is None else options.compress
    progress("seal")
    bundle = seal_bundle(
        model_bytes,
        name=options.name,
        version=options.version,
        target=Target(
            profile.name, profile.runtime.package, profile.runtime.version, profile.hardware_ids
        ),
        signers=signers,
        recipients=recipients,
        aead=options.aead or profile.aead,
        inputs=inputs,
        outputs=outputs,
        expires=options.expires,
        reports={**reports, "notes": notes} if notes else reports,
        chunk_size=options.chunk_size,
        compression="zstd" if level else "none",
        compression_level=level or None,
        attest=attest,
    )
    if not output.parent.exists():
        raise ModelInputError(f"output directory {output.parent} does not exist")
    _readable_by_devices(bundle)
    size = save_bundle(bundle, output)
    return PackageResult(
        output, bundle, size, len(model_bytes), quantization, fmt, reports, tuple(notes)
    )


def _read_tflite_file(model_path: Path, profile: DeviceProfile) -> bytes:
    """The file's bytes, its size checked against the profile before they are read into memory."""
    from .source_model import MODEL_HINT

    try:
        with open_regular(model_path) as handle:
            _refuse_oversized(os.fstat(handle.fileno()).st_size, profile)
            return handle.read(profile.max_model_bytes + 1)
    except OSError as exc:
        raise unreadable_file(ModelInputError, "model file", model_path, exc,
                              hint=MODEL_HINT) from None  # fmt: skip


def _is_litertlm(path: Path) -> bool:
    from edge_sdk.format.litertlm import is_litertlm

    # By name too: a file called .litertlm that is not one is refused as a bad LiteRT-LM file
    # (its header reader says what is wrong), not as "an unknown model format".
    try:
        with open_regular(path) as handle:
            return path.suffix == ".litertlm" or is_litertlm(handle.read(8))
    except OSError:
        return False  # detect_model_format says what is wrong with it


def _read_litertlm_file(model_path: Path, profile: DeviceProfile) -> bytes:
    """The file's bytes, after its size is checked against the profile's RAM (and the largest
    LLM a device opens): a file too large for the board is refused before a byte is read, and
    the read is bounded by that size, so a file growing meanwhile cannot make it larger."""
    from edge_sdk.device.llm import MAX_LLM_BYTES

    from .source_model import MODEL_HINT

    limit = min(profile.memory_mb * 1024 * 1024, MAX_LLM_BYTES)
    try:
        with open_regular(model_path) as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise CompatibilityError(
                    f"model is {size} bytes, more than {profile.name} can open "
                    f"({limit} bytes: {profile.memory_mb} MiB of RAM)",
                    hint="build a smaller (or more quantized) model, or target a profile with more RAM",
                )
            data = handle.read(size + 1)
    except OSError as exc:
        raise unreadable_file(ModelInputError, "model file", model_path, exc,
                              hint=MODEL_HINT) from None  # fmt: skip
    if len(data) != size:
        raise ModelInputError(
            f"{model_path} changed while it was read ({size} bytes, then {len(data)})",
            hint="package a file nothing is writing to",
        )
    return data


def _package_litertlm(
    model_path: Path,
    output: Path,
    profile: DeviceProfile,
    options: PackageOptions,
    signers: Sequence[PrivateKey],
    recipients: Sequence[PublicKey],
    progress: Progress,
    attest: Callable[[Manifest], Mapping[str, Any]],
) -> PackageResult:
    """Seal a LiteRT-LM ``.litertlm`` as it is: header read strictly, sections in the manifest.

    Stored uncompressed whatever the profile says: quantized LLM weights save little under zstd,
    and a compressed payload needs a second model-sized buffer on the device (the stream, then
    the model), while an uncompressed one is decrypted straight into sealed memory (peak ≈ 1×).
    """
    from edge_sdk.format.litertlm import LLM_RUNTIME, read_litertlm

    from .sealing import seal_bundle

    _refuse_conversion_options(model_path, options)
    if options.prune is not None:
        raise UsageError(f"{model_path} is a LiteRT-LM model: --prune needs a Keras model")
    progress("load")
    model_bytes = _read_litertlm_file(model_path, profile)
    info = read_litertlm(model_bytes)
    try:
        from importlib.metadata import version

        runtime_version = version(LLM_RUNTIME)
    except ImportError:  # PackageNotFoundError is an ImportError
        runtime_version = ""
    reports: dict[str, Any] = {
        "conversion": {"source_format": "litertlm", "quantization": "as built",
                       "size": len(model_bytes)},
        "litertlm": info.to_dict(),
    }  # fmt: skip
    progress("seal")
    bundle = seal_bundle(
        model_bytes,
        name=options.name,
        version=options.version,
        target=Target(profile.name, LLM_RUNTIME, runtime_version, profile.hardware_ids),
        signers=signers,
        recipients=recipients,
        aead=options.aead or profile.aead,
        expires=options.expires,
        reports=reports,
        chunk_size=options.chunk_size,
        compression="none",
        attest=attest,
        model_format="litertlm",
    )
    if not output.parent.exists():
        raise ModelInputError(f"output directory {output.parent} does not exist")
    _readable_by_devices(bundle)
    size = save_bundle(bundle, output)
    return PackageResult(
        output, bundle, size, len(model_bytes), "as built", "litertlm", reports, ()
    )
