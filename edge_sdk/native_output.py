"""Keep the LiteRT runtime's one informational line out of the command line's output.

ai-edge-litert and tflite-runtime print ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``
straight to file descriptor 2 when an interpreter is built, and offer no switch to turn it off
(a C++ logger with no Python binding). The commands wrap interpreter builds in
:func:`quiet_runtime_info`: file descriptor 2 goes to an anonymous in-memory file for the moment,
then everything written there is replayed to the real stderr except the known informational lines
— a genuine native warning or error still reaches the user. Only the CLI uses this; a library
caller's process keeps its descriptors untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

#: Lines the runtimes print on every interpreter build that tell a user nothing.
RUNTIME_INFO = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


def _anonymous_file() -> int:
    if hasattr(os, "memfd_create"):
        return int(os.memfd_create("edge-sdk-stderr"))
    import tempfile

    return os.dup(tempfile.TemporaryFile().fileno())


@contextlib.contextmanager
def quiet_runtime_info(drop: tuple[bytes, ...] = RUNTIME_INFO) -> Iterator[None]:
    """Replay what native code writes to stderr inside the block, minus the ``drop`` lines."""
    sys.stderr.flush()
    try:
        sink = _anonymous_file()
        saved = os.dup(2)
    except OSError:  # no descriptors to spare: leave the output as it is
        yield
        return
    os.dup2(sink, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.lseek(sink, 0, os.SEEK_SET)
        captured = b""
        while chunk := os.read(sink, 1 << 16):
            captured += chunk
        os.close(sink)
        kept = [line for line in captured.splitlines(keepends=True) if line.rstrip() not in drop]
        if kept:
            os.write(2, b"".join(kept))
