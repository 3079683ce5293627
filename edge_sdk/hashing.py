"""SHA-256 that runs beside the caller: hashing one piece while the next is read or decrypted.

hashlib releases the GIL for large updates, so on a multi-core board a single worker thread hashes
piece *i* while the caller reads or decrypts piece *i+1*. Pieces are hashed in submission order
(one worker, FIFO), so the digest is exactly SHA-256 of the concatenation.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor

# Below this a thread costs more than it saves.
PIPELINE_THRESHOLD = 4 * 1024 * 1024


class PipelinedSHA256:
    """``update`` queues a piece; ``hexdigest`` waits for all of them. Pieces must stay unchanged
    until ``hexdigest`` returns (callers pass slices of buffers they no longer write to)."""

    def __init__(self, expected_size: int) -> None:
        self._hash = hashlib.sha256()
        self._pool = (
            ThreadPoolExecutor(max_workers=1) if expected_size >= PIPELINE_THRESHOLD else None
        )
        self._pending: Future[None] | None = None

    def update(self, piece: bytes | bytearray | memoryview) -> None:
        if self._pool is None:
            self._hash.update(piece)
            return
        self._pending = self._pool.submit(self._hash.update, piece)

    def hexdigest(self) -> str:
        if self._pool is not None:
            if self._pending is not None:
                self._pending.result()
            self._pool.shutdown(wait=True)
            self._pool = None
        return self._hash.hexdigest()
