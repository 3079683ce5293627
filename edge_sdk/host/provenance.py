"""HOST ONLY: how ``edge-sdk package`` knows, and attests, what a bundle was made from.

Two promises, kept here so that packaging only calls in:

* **The model converted is the model that was signed.** With ``--model-signature``, the source
  model is copied into a private directory (mode 0700, only the files it consists of), the copy is
  verified with model-signing (:mod:`edge_sdk.host.model_signature`), every file of the copy must be
  listed by the signature, and the *copy* is what gets converted — so nobody who can write the
  original path can swap the bytes between verification and conversion.
* **The attestation describes what was used.** Every input (model, calibration, evaluation and
  training data) is hashed before conversion; inputs read in place are hashed again when the
  bundle is sealed, and a change in between refuses the build instead of attesting digests that
  were not what the converter read.

:meth:`Sources.attest` builds the in-toto Statement (SLSA Provenance v1) from the finished
manifest and signs it with the bundle's signers; :func:`edge_sdk.host.sealing.seal_bundle` puts the
envelope into the manifest's ``reports`` before the manifest is signed. The format is documented in
docs/PROVENANCE.md; the reader and verifier are in :mod:`edge_sdk.format.attestation`.

Directory digests (a SavedModel, a directory of images) are the SHA-256 of the ``sha256sum`` lines
of its regular files in byte order of their relative paths, i.e. of
``cd DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import (
    DataError,
    ModelInputError,
    ModelSignatureError,
    ProvenanceError,
    unreadable_file,
)
from edge_sdk.files import open_regular
from edge_sdk.format.attestation import (
    BUILD_TYPE,
    BUILDER_ID,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    sign_statement,
)
from edge_sdk.format.manifest import Manifest, format_time
from edge_sdk.keys import PrivateKey

from .datasets import DATA_HINT
from .quality_gate import DEFAULT_MAX_ACCURACY_DROP, DEFAULT_MAX_OUTPUT_ERROR, DEFAULT_MIN_COSINE
from .source_model import MODEL_HINT

if TYPE_CHECKING:
    from .model_signature import ModelSignatureOptions, VerifiedModelSignature
    from .package_options import PackageOptions

_PIECE = 1024 * 1024
#: Modules whose versions the attestation records when the build loaded them.
_TOOLS = (
    ("tensorflow", "tensorflow"),
    ("keras", "keras"),
    ("tf_keras", "tf-keras"),
    ("ai_edge_litert", "ai-edge-litert"),
    ("tflite_runtime", "tflite-runtime"),
    ("numpy", "numpy"),
)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        while piece := handle.read(_PIECE):
            digest.update(piece)
    return digest.hexdigest()


def _tree_files(root: Path, error: Callable[[str], Exception]) -> list[str]:
    """Relative POSIX paths of every regular file under ``root``, in byte order.

    Symlinks and special files are refused: a digest must pin what the converter reads, and a
    link could point anywhere (and be changed later).
    """
    found: list[str] = []
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            full = Path(top) / name
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise error(f"{full} is a symlink or special file; refusing to pin its contents")
            if "\n" in name or "\\" in name:
                raise error(f"{full!r}: file names with newlines or backslashes are not supported")
        found.extend((Path(top) / f).relative_to(root).as_posix() for f in files)
    return sorted(found, key=lambda p: p.encode("utf-8", "surrogateescape"))


def path_sha256(
    path: Path, error: type[ModelInputError | DataError] = ModelInputError, what: str = "model file"
) -> str:
    """SHA-256 of a file, or the directory digest described in the module docstring.

    Only regular files are read (:func:`edge_sdk.files.open_regular`): a FIFO would block the
    build forever and ``/dev/zero`` never ends, so either is refused, named, before a byte is read.

    Raises:
        ModelInputError, DataError (``error``): missing, not a regular file, or unreadable.
    """
    try:
        if not path.is_dir():
            return _file_sha256(path)
        lines = b"".join(
            f"{_file_sha256(path / rel)}  ".encode()
            + rel.encode("utf-8", "surrogateescape")
            + b"\n"
            for rel in _tree_files(path, error)
        )
        return hashlib.sha256(lines).hexdigest()
    except OSError as exc:
        hint = MODEL_HINT if error is ModelInputError else DATA_HINT
        raise unreadable_file(error, what, path, exc, hint=hint) from None


@dataclass(frozen=True)
class Input:
    """One input of the build as the attestation names it."""

    role: str
    name: str
    sha256: str
    #: Where it is read from, and whether that is a private snapshot (then it cannot change).
    path: Path
    snapshot: bool = False
    signature: VerifiedModelSignature | None = None

    def descriptor(self) -> dict[str, Any]:
        annotations: dict[str, Any] = {"role": self.role}
        if self.signature is not None:
            annotations["modelSigning"] = self.signature.annotation()
        return {"name": self.name, "digest": {"sha256": self.sha256}, "annotations": annotations}


def _tool_descriptors(converter: str | None) -> list[dict[str, Any]]:
    from importlib.metadata import PackageNotFoundError, version

    def dist_version(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    tools: list[tuple[str, str | None]] = [("edgepkg", dist_version("edgepkg"))]
    for module, dist in _TOOLS:
        loaded = sys.modules.get(module)
        if loaded is not None:
            tools.append((dist, getattr(loaded, "__version__", None) or dist_version(dist)))
    out = []
    for name, ver in tools:
        entry: dict[str, Any] = {"name": name, "annotations": {"role": "tool"}}
        if ver:
            entry["uri"] = f"pkg:pypi/{name}@{ver}"
            entry["annotations"]["version"] = str(ver)
        out.append(entry)
    if converter:
        words = converter.split()
        entry = {"name": "converter", "annotations": {"role": "converter", "version": converter}}
        if len(words) == 2:
            entry["uri"] = f"pkg:pypi/{words[0]}@{words[1]}"
        out.append(entry)
    return out


@dataclass
class Sources:
    """The inputs of one ``package`` run, checked and hashed; see the module docstring."""

    model_path: Path
    inputs: list[Input]
    options: PackageOptions
    signers: Sequence[PrivateKey]
    started: datetime

    @property
    def source(self) -> Input:
        return self.inputs[0]

    def recheck(self) -> None:
        """Refuse when an input read in place changed since it was hashed.

        Raises:
            ProvenanceError: naming the input.
        """
        for item in self.inputs:
            if item.snapshot:
                continue
            model = item.role == "source-model"
            error = ModelInputError if model else DataError
            if path_sha256(item.path, error, "model file" if model else "data file") != item.sha256:
                raise ProvenanceError(
                    f"{item.path} changed while it was being packaged; the attestation would "
                    "not describe what was converted",
                    hint="package again once nothing is writing it",
                )

    def statement(self, manifest: Manifest) -> dict[str, Any]:
        """The in-toto Statement (SLSA Provenance v1) describing how ``manifest``'s model was built."""
        reports = manifest.reports
        conversion: Mapping[str, Any] = reports.get("conversion") or {}
        pruning: Mapping[str, Any] | None = reports.get("pruning")
        options = self.options
        converter = conversion.get("converter")
        external: dict[str, Any] = {
            "bundle": {
                "name": manifest.name,
                "version": manifest.version,
                "profile": manifest.target.profile,
            },
            "source": {"name": self.source.name, "format": str(conversion.get("source_format"))},
            "quantization": str(conversion.get("quantization", "as converted")),
            # The budgets the gate applied (None in the options: convert's defaults).
            "accuracyBudget": {
                "maxAccuracyDrop": _budget(options.max_accuracy_drop, DEFAULT_MAX_ACCURACY_DROP),
                "maxOutputError": _budget(options.max_output_error, DEFAULT_MAX_OUTPUT_ERROR),
                "minOutputCosine": _budget(options.min_output_cosine, DEFAULT_MIN_COSINE),
            },
        }
        if conversion.get("io_dtype"):
            external["ioDtype"] = conversion["io_dtype"]
        if options.prune is not None:
            external["prune"] = options.prune
        signature = self.source.signature
        if signature is not None:
            external["modelSignature"] = {"method": signature.method, "signer": signature.signer}
            if signature.issuer is not None:
                external["modelSignature"]["issuer"] = signature.issuer
        internal: dict[str, Any] = {
            "target": {
                "runtime": manifest.target.runtime,
                "runtimeVersion": manifest.target.runtime_version,
                "hardwareIds": list(manifest.target.hardware_ids),
            },
            "conversion": {
                k: v
                for k, v in (
                    ("sourceFormat", conversion.get("source_format")),
                    ("converter", converter),
                    ("quantization", conversion.get("quantization")),
                    ("ioDtype", conversion.get("io_dtype")),
                )
                if v is not None
            },
        }
        if reports.get("accuracy") is not None:
            internal["accuracyGate"] = reports["accuracy"]
        if pruning is not None:
            internal["pruning"] = {
                k: pruning[k] for k in ("sparsity", "mode", "prunable_weights") if k in pruning
            }
        return {
            "_type": STATEMENT_TYPE,
            "subject": [
                {"name": f"{manifest.name}.tflite", "digest": {"sha256": manifest.model.sha256}},
                {
                    "name": f"{manifest.name}-{manifest.version}.payload",
                    "digest": {"sha256": manifest.payload.sha256},
                },
            ],
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": external,
                    "internalParameters": internal,
                    "resolvedDependencies": [
                        *(i.descriptor() for i in self.inputs),
                        *_tool_descriptors(str(converter) if converter else None),
                    ],
                },
                "runDetails": {
                    "builder": {
                        "id": BUILDER_ID,
                        "version": {"python": platform.python_version()},
                    },
                    "metadata": {
                        "invocationId": manifest.payload.content_id,
                        "startedOn": format_time(self.started),
                        "finishedOn": format_time(datetime.now(timezone.utc)),
                    },
                },
            },
        }

    def attest(self, manifest: Manifest) -> dict[str, Any]:
        """The signed DSSE envelope for ``manifest`` (what :func:`seal_bundle` stores).

        Raises:
            ProvenanceError: an input changed during the build.
        """
        self.recheck()
        return sign_statement(self.statement(manifest), self.signers)


def _snapshot(model: Path, into: Path, exclude: Path | None) -> Path:
    """Copy the model (a file, or a directory's regular files) into the private ``into``."""
    target = into / (model.name or "model")
    try:
        if not model.is_dir():
            _copy_regular(model, target)
            return target
        target.mkdir(mode=0o700)
        skip = exclude.resolve() if exclude is not None else None
        for rel in _tree_files(model, ModelInputError):
            if skip is not None and (model / rel).resolve() == skip:
                continue  # a signature stored inside the model directory is not part of it
            (target / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _copy_regular(model / rel, target / rel)
    except OSError as exc:
        raise unreadable_file(ModelInputError, "model file", model, exc, hint=MODEL_HINT) from None
    return target


def _copy_regular(source: Path, target: Path) -> None:
    """Copy a regular file (``shutil.copyfile`` refuses a FIFO but copies /dev/zero forever)."""
    with open_regular(source) as reader, open(target, "xb") as writer:
        shutil.copyfileobj(reader, writer, _PIECE)


def _check_coverage(copy: Path, verified: VerifiedModelSignature, model: Path) -> None:
    """Every file the converter may read must be one the signature lists.

    model-signing already refuses extra files, except under the signature's own ``ignore_paths``
    (``.git`` by default); such files would reach the converter unsigned, so they are refused.
    """
    present = {"."} if copy.is_file() else set(_tree_files(copy, ModelInputError))
    unsigned = sorted(present - verified.covered)
    if unsigned:
        shown = ", ".join(repr(p)[:80] for p in unsigned[:5])
        raise ModelSignatureError(
            f"{model} holds {len(unsigned)} file(s) its signature does not cover: {shown}"
            + (" …" if len(unsigned) > 5 else ""),
            hint="remove them, or sign the model without --ignore-paths for them",
        )


@contextlib.contextmanager
def prepare_sources(
    model_path: Path,
    options: PackageOptions,
    signers: Sequence[PrivateKey],
    progress: Callable[[str], None] = lambda _step: None,
) -> Iterator[Sources]:
    """Verify and hash the inputs of a ``package`` run; yields what to convert and how to attest.

    Raises:
        ModelSignatureError, KeyFileError, HostDependencyError: the source model's signature.
        ModelInputError, DataError: an input cannot be read or hashed.
    """
    started = datetime.now(timezone.utc)
    check: ModelSignatureOptions | None = options.model_signature
    with contextlib.ExitStack() as stack:
        if check is not None and check.requested:
            from .model_signature import verify_model_signature

            assert check.signature is not None
            progress("verify")
            private = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-sdk-src-")))
            # The copy keeps the model's own name (model-signing signs it as modelName) and the
            # signature gets a fixed one: each in its own folder, so no model name can collide.
            (private / "model").mkdir(mode=0o700)
            (private / "signature").mkdir(mode=0o700)
            copy = _snapshot(model_path, private / "model", check.signature)
            signature = private / "signature" / "model.sig"
            from .model_signature import read_signature_file

            signature.write_bytes(read_signature_file(check.signature))
            verified = verify_model_signature(copy, signature, check, shown_as=str(check.signature))
            _check_coverage(copy, verified, model_path)
            source = Input("source-model", model_path.name, path_sha256(copy), copy, True, verified)
        else:
            source = Input("source-model", model_path.name, path_sha256(model_path), model_path)
        inputs = [source]
        for role, path in (
            ("calibration-data", options.calibration),
            ("evaluation-data", options.evaluation),
            ("training-data", options.train),
        ):
            if path is not None:
                digest = path_sha256(path, DataError, "data file")
                inputs.append(Input(role, path.name, digest, path))
        yield Sources(source.path, inputs, options, signers, started)


def _budget(given: float | None, default: float) -> float:
    return default if given is None else given
