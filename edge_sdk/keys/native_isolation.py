"""Loading a token's native libraries so they keep their own OpenSSL.

TensorFlow loads its bundled BoringSSL with ``RTLD_GLOBAL``. A library loaded after it that calls
OpenSSL through lazily bound symbols — libtss2-esys (tpm2-pytss) and SoftHSM2's PKCS#11 module
both do — then lands in BoringSSL with OpenSSL's structures and crashes the process (a segfault,
reproduced in this repository's test suite, which imports TensorFlow in the same process). A
board rarely imports TensorFlow, but a host that packages and opens token keys does, and so may a
board that falls back to ``tensorflow.lite``.

Loading such a library first with ``RTLD_DEEPBIND | RTLD_NOW`` binds every symbol to its own
dependencies immediately; whoever ``dlopen``\\s it later (cffi, python-pkcs11) gets that copy.
"""

from __future__ import annotations

import contextlib
import os

_DONE: set[str] = set()


def load_isolated(*names: str) -> None:
    """``dlopen`` each library (a soname or a path) with RTLD_DEEPBIND, once; missing ones are skipped."""
    flag = getattr(os, "RTLD_DEEPBIND", None)
    if flag is None:  # not glibc: nothing to isolate from
        return
    import ctypes

    for name in names:
        if name in _DONE:
            continue
        with contextlib.suppress(OSError):
            ctypes.CDLL(name, mode=os.RTLD_NOW | flag)
        _DONE.add(name)
