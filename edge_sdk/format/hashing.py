"""SHA-256 that runs beside the caller: hashing one piece while the next is read or decrypted.

hashlib releases the GIL for large updates, so a worker thread hashes piece *i* while the caller
reads or decrypts piece *i+1*. Pieces are hashed in submission order (each hasher uses one worker,
FIFO), so the digest is exactly SHA-256 of the concatenation.

Opening an encrypted bundle computes two digests — the stored payload's and the model's — that
do not depend on each other. The caller hashes the payload itself as it reads (``worker=None``)
and queues the plaintext for :data:`MODEL_WORKER`: the two passes run on two cores, and the caller
never waits for the worker before the end (a hand-off that must be waited for costs a thread
wake-up, which on a busy board is a scheduler delay). Where only one digest is being computed at
a time (a zstd payload: the model's is computed while decompressing), the payload's runs on
:data:`PAYLOAD_WORKER`, beside the reading.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

# Below this, handing pieces to another thread costs more than it saves (a hand-off is ~20 µs,
# hashing 1 MiB ~0.5 ms with SHA instructions and ~3 ms without).
PIPELINE_THRESHOLD = 1024 * 1024
#: The worker that hashes stored payloads (the ciphertext), and the one that hashes models.
PAYLOAD_WORKER, MODEL_WORKER = 0, 1

_workers: dict[int, ThreadPoolExecutor] = {}
_workers_lock = threading.Lock()


def _forget_workers_in_child() -> None:
    # A forked child has none of the parent's threads, but would inherit executors that believe
    # they have one: work queued to them would never run, and the child's first load would hang.
    _workers.clear()
    _workers_lock.release()


if hasattr(os, "register_at_fork"):
    # The lock is held across the fork, so the child never inherits it held by a thread it lacks.
    os.register_at_fork(
        before=_workers_lock.acquire,
        after_in_parent=_workers_lock.release,
        after_in_child=_forget_workers_in_child,
    )


def _shared_worker(slot: int) -> ThreadPoolExecutor:
    """One hashing thread per slot for the process, started on first use (a thread per load would
    cost its start-up on every load). A single FIFO queue per slot keeps every hasher's pieces in
    order even when several loads share it."""
    with _workers_lock:
        worker = _workers.get(slot)
        if worker is None:
            worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"edge-sdk-hash{slot}")
            _workers[slot] = worker
        return worker


class PipelinedSHA256:
    """``update`` queues a piece; ``hexdigest`` waits for all of them. Pieces must stay unchanged
    until ``hexdigest`` returns, or until the future ``update`` returned for them is done (callers
    pass slices of buffers they no longer write to)."""

    def __init__(self, expected_size: int, worker: int | None = PAYLOAD_WORKER) -> None:
        self._hash = hashlib.sha256()
        self._pool = (
            _shared_worker(worker)
            if worker is not None and expected_size >= PIPELINE_THRESHOLD
            else None
        )
        self._pending: Future[None] | None = None

    @property
    def pipelined(self) -> bool:
        """True when pieces are hashed on a worker (they must stay unchanged until then)."""
        return self._pool is not None

    def run_first(self, task: Callable[[], object]) -> None:
        """Run ``task`` on this hasher's worker before the pieces queued after it (nothing is run
        when pieces are hashed inline: there is no other core's time to use)."""
        if self._pool is not None:
            self._pool.submit(task)

    def update(self, piece: bytes | bytearray | memoryview) -> Future[None] | None:
        """Hash ``piece`` (later, on the worker, for large inputs).

        Returns:
            The future of this piece when it was queued (done: the piece may be reused), or
            None when it was hashed before returning.
        """
        if self._pool is None:
            self._hash.update(piece)
            return None
        self._pending = self._pool.submit(self._hash.update, piece)
        return self._pending

    def wait(self) -> None:
        """Block until every queued piece is hashed. Callers must call this (in a ``finally``)
        before the buffers they queued can be freed — also when they stop early on an error."""
        if self._pending is not None:
            self._pending.result()  # FIFO: the last piece done means every piece is done
            self._pending = None

    def hexdigest(self) -> str:
        self.wait()
        return self._hash.hexdigest()
