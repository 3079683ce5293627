"""SHA-256 that runs beside the caller: hashing one piece while the next is read or decrypted.

hashlib releases the GIL for large updates, so on a multi-core board a single worker thread hashes
piece *i* while the caller reads or decrypts piece *i+1*. Pieces are hashed in submission order
(one worker, FIFO), so the digest is exactly SHA-256 of the concatenation.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor

# Below this, handing pieces to another thread costs more than it saves.
PIPELINE_THRESHOLD = 4 * 1024 * 1024

_worker: list[ThreadPoolExecutor] = []
_worker_lock = threading.Lock()


def _shared_worker() -> ThreadPoolExecutor:
    """One hashing thread for the process, started on first use (starting a thread per load
    costs about a millisecond, as much as hashing 2 MB). Its single FIFO queue keeps every
    hasher's pieces in order even when several loads share it."""
    with _worker_lock:
        if not _worker:
            _worker.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-sdk-hash"))
        return _worker[0]


class PipelinedSHA256:
    """``update`` queues a piece; ``hexdigest`` waits for all of them. Pieces must stay unchanged
    until ``hexdigest`` returns (callers pass slices of buffers they no longer write to)."""

    def __init__(self, expected_size: int) -> None:
        self._hash = hashlib.sha256()
        self._pool = _shared_worker() if expected_size >= PIPELINE_THRESHOLD else None
        self._pending: Future[None] | None = None

    def update(self, piece: bytes | bytearray | memoryview) -> None:
        if self._pool is None:
            self._hash.update(piece)
            return
        self._pending = self._pool.submit(self._hash.update, piece)

    def wait(self) -> None:
        """Block until every queued piece is hashed. Callers must call this (in a ``finally``)
        before the buffers they queued can be freed — also when they stop early on an error."""
        if self._pending is not None:
            self._pending.result()  # FIFO: the last piece done means every piece is done
            self._pending = None

    def hexdigest(self) -> str:
        self.wait()
        return self._hash.hexdigest()
