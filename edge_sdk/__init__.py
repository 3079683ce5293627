"""edge-sdk: take a trained Keras model to a fleet of edge boards, safely.

The public surface is small and imports nothing heavy: ``import edge_sdk`` loads neither
TensorFlow nor a LiteRT runtime. Host-side conversion lives in :mod:`edge_sdk.convert` and the
device runtime in :mod:`edge_sdk.runtime`; both import their heavy dependencies lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EdgeSDKError

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .runtime import Model


def load(source: Any, **kwargs: Any) -> Model:
    """Verify, decrypt in memory and load a bundle; see :func:`edge_sdk.runtime.load`."""
    from .runtime import load as _load

    return _load(source, **kwargs)


__all__ = ["EdgeSDKError", "__version__", "load"]
