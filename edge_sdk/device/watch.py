"""Pick up new releases in a running application, without restarting it.

:class:`ModelWatcher` serves predictions from the release a ``current`` symlink points to (the
layout :mod:`edge_sdk.fleet.deploy` and :mod:`edge_sdk.fleet.agent` maintain). When the link changes, the new
release is loaded — verified, decrypted and built exactly as :func:`edge_sdk.load` does — and
swapped in *between* predictions: a call that started on the old model finishes on it, the next
one uses the new model, and the old model is closed once no call uses it any more. If the new
release fails to load, the old model keeps serving and the reason is kept in
:attr:`ModelWatcher.last_error` (and, like every load, in the device's audit log).

Checking costs one ``readlink`` per prediction (``poll_interval=None``), or nothing at all on the
prediction path when a background thread polls the link every ``poll_interval`` seconds (and also
does the loading, so no prediction waits for a load).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from edge_sdk.errors import EdgeSDKError, RollbackError, UsageError

if TYPE_CHECKING:
    from .runtime import Model

log = logging.getLogger(__name__)


class _Slot:
    """A loaded model and how many predictions are running on it."""

    def __init__(self, model: Model, link: str) -> None:
        self.model = model
        self.link = link
        self.busy = 0
        self.retired = False


class ModelWatcher:
    """A model that follows a ``current`` symlink.

    Args:
        current_link: the ``<root>/<name>/current`` symlink.
        load_kwargs: keyword arguments of :func:`edge_sdk.load` (``trust``, ``device_key``,
            ``profile``, ``state_dir``…).
        poll_interval: seconds between background checks; ``None`` checks on every predict.
        on_swap: called with the new model after each swap (from the thread that loaded it).
        on_error: called with the error when a new release fails to load.
        retry_after: seconds before a release that failed to load is tried again (a full disk
            or a busy state directory can pass; the link itself need not change).

    Raises:
        UsageError: ``current_link`` is not a symlink.
        EdgeSDKError: the current release fails to load (nothing to serve).
    """

    def __init__(
        self,
        current_link: str | os.PathLike[str],
        load_kwargs: Mapping[str, Any],
        *,
        poll_interval: float | None = None,
        on_swap: Callable[[Model], None] | None = None,
        on_error: Callable[[EdgeSDKError], None] | None = None,
        retry_after: float = 30.0,
    ) -> None:
        from .runtime import layout_path

        # Resolved once: a relative `current` (or one through a symlinked root) names the real
        # <root>/<name> directory, so the name below is never "" and the link is read where it is
        # even if the working directory changes later.
        self.current_link = layout_path(current_link)
        # The layout is <root>/<name>/current: only a bundle signed under <name> may serve here.
        self.load_kwargs = {"expected_name": self.current_link.parent.name, **load_kwargs}
        self.on_swap = on_swap
        self.on_error = on_error
        self.swaps = 0
        self.last_error: EdgeSDKError | None = None
        self._cond = threading.Condition()
        self._loading = threading.Lock()
        self._failed_link: str | None = None
        self._failed_at = 0.0
        self.retry_after = retry_after
        self._slot = self._first_slot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if poll_interval is not None:
            if poll_interval <= 0:
                raise UsageError(f"poll_interval must be positive, got {poll_interval}")
            self._thread = threading.Thread(
                target=self._poll_forever, args=(poll_interval,), name="edge-sdk-watch", daemon=True
            )
            self._thread.start()

    # -- the link ---------------------------------------------------------------------------------

    def _first_slot(self, attempts: int = 5) -> _Slot:
        """Load what ``current`` names, following it if it moves on while we load.

        Another process sharing the state directory may accept the next release between our
        readlink and our load; the release we opened is then older than the accepted one and is
        refused (RollbackError). That is not a failure to serve: read the link again and load
        what it names now.
        """
        for attempt in range(attempts):
            link = self._readlink()
            if link is None:
                raise UsageError(f"{self.current_link} is not a symlink to a release")
            try:
                return _Slot(self._load(link), link)
            except RollbackError:
                if self._readlink() == link or attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _readlink(self) -> str | None:
        try:
            return os.readlink(self.current_link)
        except OSError:
            return None

    def _load(self, link: str) -> Model:
        from edge_sdk import load

        # A relative link target is relative to the link's directory, as the kernel resolves it.
        return load(self.current_link.parent / link, **self.load_kwargs)

    def check(self) -> bool:
        """Swap to the release ``current`` points to now, if it changed; True when swapped.

        A release that failed to load is tried again after ``retry_after`` seconds, or at once
        when the link changes.
        """
        link = self._readlink()
        if link is None or link == self._slot.link:
            return False
        if link == self._failed_link and time.monotonic() - self._failed_at < self.retry_after:
            return False
        if not self._loading.acquire(blocking=False):
            return False  # another thread is loading it; keep serving the old model meanwhile
        try:
            if link == self._slot.link:
                return False
            try:
                model = self._load(link)
            except EdgeSDKError as exc:
                self._failed_link, self._failed_at = link, time.monotonic()
                self.last_error = exc
                log.warning("keeping %s: %s failed to load: %s", self._slot.link, link, exc.message)
                if self.on_error is not None:
                    self.on_error(exc)
                return False
            self._swap(_Slot(model, link))
        finally:
            self._loading.release()
        if self.on_swap is not None:
            self.on_swap(model)
        return True

    def _swap(self, new: _Slot) -> None:
        with self._cond:
            old, self._slot = self._slot, new
            self._failed_link = None
            self.swaps += 1
            old.retired = True
            if old.busy == 0:
                old.model.close()

    def _poll_forever(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception:  # a watcher thread must never die silently
                log.exception("release watcher check failed")

    # -- serving ----------------------------------------------------------------------------------

    @property
    def model(self) -> Model:
        """The model serving now. Prefer :meth:`predict`: a model held across a swap is closed."""
        if self._thread is None:
            self.check()
        return self._slot.model

    @property
    def release(self) -> str:
        """The ``current`` link target the serving model was loaded from."""
        return self._slot.link

    def predict(self, x: Any, *, raw: bool = False) -> Any:
        """:meth:`Model.predict` on the newest release that loaded (checked before the call)."""
        if self._thread is None:
            self.check()
        with self._cond:
            slot = self._slot
            slot.busy += 1
        try:
            return slot.model.predict(x, raw=raw)
        finally:
            with self._cond:
                slot.busy -= 1
                if slot.retired and slot.busy == 0:
                    slot.model.close()

    def close(self) -> None:
        """Stop the background thread and close the model."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            self._slot.retired = True
            if self._slot.busy == 0:
                self._slot.model.close()

    def __enter__(self) -> ModelWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["ModelWatcher"]
