"""edge-sdk: take a trained Keras model to a fleet of edge boards, safely.

``import edge_sdk`` is light: it loads neither numpy, TensorFlow nor a LiteRT runtime. The device
API (:func:`load`, :class:`Model`, :class:`ModelPool`, and :class:`Interpreter`, the LiteRT
interpreter interface over a bundle) is imported on first use from :mod:`edge_sdk.device.runtime` and
:mod:`edge_sdk.device.interpreter`; generative models (:func:`load_llm`) from
:mod:`edge_sdk.device.llm`; host-side conversion lives in :mod:`edge_sdk.host.convert` and
:mod:`edge_sdk.host.packaging`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EdgeSDKError

__version__ = "0.2.0"

if TYPE_CHECKING:
    from .device.interpreter import Interpreter
    from .device.llm import LanguageModel, load_llm
    from .device.runtime import Model, ModelPool, load

_LAZY = {"load", "Model", "ModelPool"}


def __getattr__(name: str) -> Any:
    # PEP 562: the runtime (and numpy with it) is imported only when the device API is used.
    if name in _LAZY:
        from .device import runtime

        return getattr(runtime, name)
    if name in ("load_llm", "LanguageModel"):
        from .device import llm

        return getattr(llm, name)
    if name == "Interpreter":
        from .device.interpreter import Interpreter

        return Interpreter
    raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")


__all__ = [
    "EdgeSDKError", "Interpreter", "LanguageModel", "Model", "ModelPool", "__version__", "load",
    "load_llm",
]  # fmt: skip
