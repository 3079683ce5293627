"""The LiteRT ``Interpreter`` interface over an interpreter a :class:`~edge_sdk.Model` built.

:class:`InterpreterView` is what :attr:`edge_sdk.Model.interpreter` returns, and the base of
:class:`edge_sdk.Interpreter` (:mod:`edge_sdk.device.interpreter`), which opens its own bundle.
The interface stays as LiteRT's (``allocate_tensors``, ``get_input_details``, ``set_tensor``,
``invoke``, ``get_tensor``, ``tensor``, ``resize_tensor_input``, ``get_signature_runner`` …); where
it differs it refuses what LiteRT would let go wrong, with a typed error:

- ``resize_tensor_input`` never changes a dimension the model fixed (a fixed-batch model resized
  to 7 returns outputs folded into the wrong shape, and tflite-runtime 2.14 can crash in the
  resize) and never resizes to zero (XNNPACK fails, and a dynamic-range model's next run can
  crash): :class:`~edge_sdk.errors.InferenceInputError`, the interpreter stays usable;
- the runtime's ``ValueError`` / ``RuntimeError`` become :class:`~edge_sdk.errors.InferenceInputError`
  (a tensor the caller got wrong) or :class:`~edge_sdk.errors.BackendError` (the interpreter
  failed), with bounded messages.

It knows the model that owns it only through :class:`ModelOwner`, so the runtime can build views
without this module importing the runtime. Nothing here imports TensorFlow: it is on the device path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_sdk.errors import BackendError, InferenceInputError, UsageError, excerpt

if TYPE_CHECKING:
    from edge_sdk.format.manifest import Manifest


class ModelOwner(Protocol):
    """What a view needs of the model that built its interpreter (an :class:`edge_sdk.Model`)."""

    @property
    def manifest(self) -> Manifest | None: ...

    @property
    def backend(self) -> Any: ...

    @property
    def delegates(self) -> tuple[Any, ...]: ...

    def close(self) -> None: ...


#: LiteRT's error reporter appends each message to the last with nothing between them
#: ("...failed to reshape runtimeNode number 1 (TfLiteXNNPackDelegate) failed to prepare.").
_JOINED = re.compile(r"(?<=\S)(?=Node number \d)")


def backend_message(exc: BaseException, limit: int = 300) -> str:
    """The first line of a LiteRT error, its run-together messages separated."""
    text = str(exc).strip()
    text = _JOINED.sub(lambda m: " " if text[m.start() - 1] in ".;:," else "; ", text)
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _shape_problem(
    name: str, signature: Sequence[int], size: Sequence[int], what: str
) -> str | None:
    """Why ``size`` is not a shape the model allows for a tensor of ``signature``, or None."""
    if len(size) != len(signature):
        return f"{what} {excerpt(name)} has rank {len(signature)}, got shape {list(size)}"
    if any(int(d) <= 0 for d in size):
        return (
            f"{what} {excerpt(name)}: shape {list(size)} has an empty or negative dimension; the "
            "interpreter cannot run zero samples (skip invoke for an empty batch)"
        )
    fixed = [i for i, (want, got) in enumerate(zip(signature, size, strict=True))
             if want != -1 and want != int(got)]  # fmt: skip
    if fixed:
        return (
            f"{what} {excerpt(name)}: dimension {fixed[0]} is fixed at {signature[fixed[0]]} by the model "
            f"(signature {list(signature)}), got {list(size)}; resizing a fixed dimension gives "
            "wrong outputs (run one sample at a time, or use Model.predict, which does)"
        )
    return None


class InterpreterView:
    """A LiteRT interpreter built from verified, in-memory model bytes, with LiteRT's interface.

    Attributes:
        manifest, backend, delegates: as on :class:`edge_sdk.Model`.
    """

    def __init__(self, raw: Any, model: ModelOwner, *, owns_model: bool = False) -> None:
        self._raw: Any = raw
        self._model = model
        self._owns_model = owns_model
        self.manifest: Manifest | None = model.manifest
        self.backend: Any = model.backend
        self.delegates: tuple[Any, ...] = model.delegates

    # -- helpers ---------------------------------------------------------------------------------

    def _live(self) -> Any:
        if self._raw is None:
            raise UsageError("this interpreter was closed")
        return self._raw

    def _input_detail(self, input_index: int) -> Mapping[str, Any]:
        for detail in self._live().get_input_details():
            if int(detail["index"]) == int(input_index):
                return detail  # type: ignore[no-any-return]
        raise InferenceInputError(f"tensor {input_index} is not an input of this model")

    # -- the LiteRT Interpreter interface ----------------------------------------------------------

    def allocate_tensors(self) -> None:
        """Allocate tensors for the current input shapes (LiteRT ``allocate_tensors``)."""
        try:
            self._live().allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BackendError(
                f"cannot allocate tensors: {backend_message(exc)}",
                hint="a model whose input has -1 dimensions needs resize_tensor_input to the real "
                "input shape first",
            ) from None

    def invoke(self) -> None:
        """Run the model on the inputs set (LiteRT ``invoke``)."""
        try:
            self._live().invoke()
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"inference failed: {backend_message(exc)}") from None

    def get_input_details(self) -> list[dict[str, Any]]:
        """The input tensors' details, exactly as LiteRT reports them."""
        return list(self._live().get_input_details())

    def get_output_details(self) -> list[dict[str, Any]]:
        """The output tensors' details, exactly as LiteRT reports them."""
        return list(self._live().get_output_details())

    def get_tensor_details(self, subgraph_index: int = 0) -> list[dict[str, Any]]:
        """Every named tensor's details (LiteRT ``get_tensor_details``)."""
        raw = self._live()
        try:
            if subgraph_index == 0:
                return list(raw.get_tensor_details())
            return list(raw.get_tensor_details(subgraph_index))
        except (ValueError, TypeError) as exc:
            raise InferenceInputError(
                f"no subgraph {subgraph_index}: {backend_message(exc)}"
            ) from None

    def set_tensor(self, tensor_index: int, value: Any) -> None:
        """Copy ``value`` into an input tensor; dtype and shape must match the allocated tensor."""
        try:
            self._live().set_tensor(tensor_index, value)
        except (ValueError, TypeError) as exc:
            raise InferenceInputError(
                f"cannot set tensor {tensor_index}: {backend_message(exc)}"
            ) from None

    def get_tensor(self, tensor_index: int, subgraph_index: int = 0) -> np.ndarray:
        """A copy of a tensor's value (LiteRT ``get_tensor``)."""
        raw = self._live()
        try:
            if subgraph_index == 0:
                return np.asarray(raw.get_tensor(tensor_index))
            return np.asarray(raw.get_tensor(tensor_index, subgraph_index))
        except (ValueError, TypeError) as exc:
            raise InferenceInputError(
                f"cannot get tensor {tensor_index}: {backend_message(exc)}"
            ) from None

    def tensor(self, tensor_index: int) -> Callable[[], np.ndarray]:
        """A function giving a numpy view of a tensor's buffer (LiteRT ``tensor``; do not hold
        the view across ``allocate_tensors`` or ``invoke``)."""
        return self._live().tensor(tensor_index)  # type: ignore[no-any-return]

    def resize_tensor_input(
        self, input_index: int, tensor_size: Sequence[int] | np.ndarray, strict: bool = False
    ) -> None:
        """Resize an input before ``allocate_tensors``; only dimensions the model leaves open
        (``-1`` in ``shape_signature``) may change, and none may be zero.

        Raises:
            InferenceInputError: a fixed dimension, an empty dimension, or a wrong rank.
        """
        detail = self._input_detail(input_index)
        signature = detail.get("shape_signature")
        signature = signature if signature is not None and len(signature) else detail["shape"]
        size = [int(d) for d in np.asarray(tensor_size).reshape(-1)]
        problem = _shape_problem(str(detail["name"]), [int(d) for d in signature], size, "input")
        if problem:
            raise InferenceInputError(problem)
        try:
            self._live().resize_tensor_input(input_index, size, strict=True)
        except (ValueError, RuntimeError) as exc:
            raise InferenceInputError(
                f"cannot resize input {input_index}: {backend_message(exc)}"
            ) from None

    def get_signature_list(self) -> dict[str, dict[str, list[str]]]:
        """The signatures with their input and output names (LiteRT ``get_signature_list``)."""
        return dict(self._live().get_signature_list())

    def get_signature_runner(self, signature_key: str | None = None) -> SignatureRunner:
        """A callable running one signature by input names (LiteRT ``get_signature_runner``)."""
        try:
            runner = self._live().get_signature_runner(signature_key)
        except (ValueError, KeyError) as exc:
            raise InferenceInputError(f"no such signature: {backend_message(exc)}") from None
        return SignatureRunner(runner)

    def reset_all_variables(self) -> None:
        """Zero the model's variable tensors (LiteRT ``reset_all_variables``).

        Only tensors the flatbuffer marks as variables (the state of SVDF or of a fused LSTM)
        are reset. A model that keeps its state in resource variables (a Keras stateful layer:
        ``VAR_HANDLE`` / ``ASSIGN_VARIABLE`` ops) keeps it; for a fresh state build another
        interpreter (``Model.clone()``, or load the bundle again).
        """
        self._live().reset_all_variables()

    # -- beyond LiteRT: lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """Drop the interpreter (and, when this object loaded the bundle, the model bytes)."""
        self._raw = None
        if self._owns_model:
            self._model.close()

    def __enter__(self) -> InterpreterView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SignatureRunner:
    """LiteRT's ``SignatureRunner`` with the shape checks of :class:`InterpreterView`: a call with a
    fixed dimension changed or an empty batch is refused before the runtime resizes anything."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner

    def __call__(self, **inputs: Any) -> dict[str, np.ndarray]:
        """Run the signature on inputs by name; returns outputs by name."""
        details = self._runner.get_input_details()
        unknown = set(inputs) - set(details)
        if unknown or len(inputs) != len(details):
            raise InferenceInputError(
                f"the signature takes {sorted(details)}, got {sorted(map(str, inputs))[:16]}"
            )
        for name, value in inputs.items():
            detail = details[name]
            signature = detail.get("shape_signature")
            signature = signature if signature is not None and len(signature) else detail["shape"]
            problem = _shape_problem(name, [int(d) for d in signature], np.shape(value), "input")
            if problem:
                raise InferenceInputError(problem)
        try:
            return dict(self._runner(**inputs))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise BackendError(f"signature run failed: {backend_message(exc)}") from None

    def get_input_details(self) -> dict[str, dict[str, Any]]:
        """Input details by signature name (LiteRT ``SignatureRunner.get_input_details``)."""
        return dict(self._runner.get_input_details())

    def get_output_details(self) -> dict[str, dict[str, Any]]:
        """Output details by signature name (LiteRT ``SignatureRunner.get_output_details``)."""
        return dict(self._runner.get_output_details())
