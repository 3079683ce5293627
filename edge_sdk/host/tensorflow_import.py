"""HOST ONLY: importing TensorFlow quietly, and keeping its native output off the terminal.

TensorFlow is imported inside the functions that need it (extra ``host``), never at module level.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Any

from edge_sdk.errors import (
    HostDependencyError,
    install_hint,
)


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def import_tensorflow() -> Any:
    """Import TensorFlow (host extra), or explain how to get it."""
    _quiet_tensorflow()
    try:
        # TensorFlow's import logs CUDA probing through absl straight to fd 2, past
        # TF_CPP_MIN_LOG_LEVEL; on a CPU-only host that is noise.
        with native_output_captured():
            import tensorflow as tf
    except ImportError:
        raise HostDependencyError(
            "converting Keras models needs TensorFlow, which is not installed",
            hint=install_hint("host"),
        ) from None
    return tf


@contextlib.contextmanager
def native_output_captured() -> Iterator[io.StringIO]:
    """Capture what TensorFlow's C++ side and Keras print, so ``package`` output stays readable.

    The converter and the interpreter write progress chatter straight to file descriptors 1 and 2
    (``fully_quantize: 0 …``, ``INFO: Created … XNNPACK``); only a descriptor-level redirect
    catches that. The captured text is kept so a failure can quote it.
    """
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    text = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(text):
                yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            text.write(sink.read().decode(errors="replace"))
