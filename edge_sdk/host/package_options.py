"""What ``edge-sdk package`` can be told: one frozen record, shared by packaging and provenance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .model_signature import ModelSignatureOptions


@dataclass(frozen=True)
class PackageOptions:
    """Everything ``edge-sdk package`` can be told. ``None`` means "the profile's default"."""

    name: str
    version: int
    quantize: str | None = None
    io_dtype: str | None = None
    aead: str | None = None
    compress: int | None = None
    calibration: Path | None = None
    evaluation: Path | None = None
    #: Gate budgets; ``None``: the defaults of :mod:`edge_sdk.host.convert`.
    max_accuracy_drop: float | None = None
    max_output_error: float | None = None
    min_output_cosine: float | None = None
    #: ``NAME=1x96x96x3``: synthetic parity input shapes for inputs with open dimensions.
    input_shapes: tuple[str, ...] = ()
    #: ``module:Class`` custom layer classes, and modules to import first (Keras inputs only).
    custom_objects: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()
    expires: datetime | None = None
    chunk_size: int = 1024 * 1024
    #: Magnitude pruning before conversion: a sparsity in [0, 1) or "auto" (see edge_sdk.host.pruning).
    prune: float | Literal["auto"] | None = None
    train: Path | None = None
    epochs: int | None = None
    #: Verify the source model's model-signing signature first (see edge_sdk.host.model_signature).
    model_signature: ModelSignatureOptions | None = None
