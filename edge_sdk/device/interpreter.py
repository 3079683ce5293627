"""The LiteRT ``Interpreter`` interface over a verified bundle: a one-line migration for code that
already drives an interpreter (detection post-processing, camera pipelines).

Before::

    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path="detector.tflite", num_threads=2)

After::

    from edge_sdk import Interpreter
    interpreter = Interpreter("detector.edgepkg", trust="signer.pub", device_key="device.key",
                              num_threads=2)

Everything after that line (``allocate_tensors``, ``get_input_details``, ``set_tensor``,
``invoke``, ``get_tensor``, ``tensor``, ``resize_tensor_input``, ``get_signature_runner`` …) stays
as it was. The bundle goes through every check of :func:`edge_sdk.load` and the model is
decrypted in memory only; the object wraps the real LiteRT interpreter built from those bytes.

Where it differs from LiteRT it refuses what LiteRT would let go wrong, with a typed error:

- ``resize_tensor_input`` never changes a dimension the model fixed (a fixed-batch model resized
  to 7 returns outputs folded into the wrong shape, and tflite-runtime 2.14 can crash in the
  resize) and never resizes to zero (XNNPACK fails, and a dynamic-range model's next run can
  crash): :class:`~edge_sdk.errors.InferenceInputError`, the interpreter stays usable;
- the runtime's ``ValueError`` / ``RuntimeError`` become :class:`~edge_sdk.errors.InferenceInputError`
  (a tensor the caller got wrong) or :class:`~edge_sdk.errors.BackendError` (the interpreter
  failed), with bounded messages.

Nothing here imports TensorFlow: it is on the device path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import UsageError

from .litert_interface import InterpreterView, SignatureRunner
from .runtime import load

if TYPE_CHECKING:
    from edge_sdk.keys import PrivateKey, TrustStore

__all__ = ["Interpreter", "InterpreterView", "SignatureRunner"]


class Interpreter(InterpreterView):
    """A verified, decrypted-in-memory model with the LiteRT ``Interpreter`` interface.

    Args:
        bundle: the ``.edgepkg`` path or bytes (LiteRT's ``model_path=`` / ``model_content=``
            are accepted too, so migrated code keeps its call).
        trust: the pinned trust store (or a path / paths), as for :func:`edge_sdk.load`.
        device_key: this device's key (object or path), for encrypted bundles.
        num_threads: interpreter threads (LiteRT's name; default: the profile's).
        **load_options: anything else :func:`edge_sdk.load` takes (``profile``, ``state_dir``,
            ``backend``, ``strict_delegates``, ``hardware_ids`` …).

    Attributes:
        manifest, backend, delegates: as on :class:`edge_sdk.Model`.

    Raises:
        EdgeSDKError: every refusal of :func:`edge_sdk.load`, typed by cause.
    """

    def __init__(
        self,
        bundle: str | os.PathLike[str] | bytes | None = None,
        *,
        trust: TrustStore | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        device_key: PrivateKey | str | os.PathLike[str] | None = None,
        num_threads: int | None = None,
        model_path: str | os.PathLike[str] | None = None,
        model_content: bytes | None = None,
        **load_options: Any,
    ) -> None:
        # LiteRT's own keywords, so migrated code can keep its call and only add trust=.
        given = [b for b in (bundle, model_path, model_content) if b is not None]
        if len(given) != 1:
            raise UsageError(
                "give the bundle once: Interpreter(bundle) or LiteRT's model_path= / model_content="
            )
        bundle = given[0]

        model = load(bundle, trust=trust, device_key=device_key, threads=num_threads,
                     **load_options)  # fmt: skip
        # The loaded model's own interpreter: one copy of the tensors (and of XNNPACK's packed
        # weights) per bundle. The Model is private to this object, so nothing else drives it.
        super().__init__(model._interpreter, model, owns_model=True)
