"""A process forked while another thread is inside a token call can still use its keys.

Prefork servers fork workers from a process whose other threads may be mid-way through a
PKCS#11 or TPM operation. Those operations hold a module lock; a child inherits it held by a
thread it does not have and, without a fork handler, its first key operation waits forever.
The children here run against the real SoftHSM2 token and the real swtpm.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_sdk.format.encryption import unwrap_content_key, wrap_content_key
from edge_sdk.keys import load_private_key

from .conftest import REPO

HANG = 60.0  # seconds: hang detection only; a healthy child answers in well under a second


def _child_exit_code(operation: Callable[[], None]) -> int:
    """Fork; the child runs ``operation`` and exits 0 if it returned. A child still running
    after HANG seconds is killed and reported as hung (-1)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            operation()
            code = 0
        except BaseException:  # noqa: BLE001 - the parent sees the exit code; say why
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -1


@contextmanager
def _held_by_another_thread(lock: Any) -> Iterator[None]:
    """``lock`` held by a live thread, as it is while that thread is inside a token call."""
    taken, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            leave.wait()

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        leave.set()
        thread.join()


def _unwrap_check(ref: str, public: Any) -> Callable[[], None]:
    """A fresh key operation: open the key by reference and unwrap a content key with it."""
    digest = hashlib.sha256(b"model").digest()
    cek = os.urandom(32)
    entry = wrap_content_key(cek, digest, [public])

    def check() -> None:
        assert unwrap_content_key(entry, digest, load_private_key(ref, kind="device")) == cek

    return check


def test_a_child_forked_during_a_pkcs11_call_uses_the_token(softhsm: Any, tmp_path: Path) -> None:
    from edge_sdk.keys import pkcs11
    from edge_sdk.keys.key_uri import Pkcs11Uri

    uri = softhsm.uri("forked")
    made = pkcs11.generate_pkcs11_key(
        Pkcs11Uri.parse(uri), kind="device", alg="p256", out=tmp_path / "forked"
    )
    check = _unwrap_check(uri, made.public)
    check()  # the parent has the module initialized, as a prefork server would
    with _held_by_another_thread(pkcs11._LOCK):
        assert _child_exit_code(check) == 0, "the forked child hung on the PKCS#11 lock"
    check()  # the parent still works


def test_a_child_forked_during_a_tpm_call_uses_the_tpm(swtpm: Any, tmp_path: Path) -> None:
    from edge_sdk.keys import tpm
    from edge_sdk.keys.key_uri import Tpm2Reference

    ref = f"tpm2:file={tmp_path / 'forked.tss'}?tcti={swtpm.tcti}"
    made = tpm.generate_tpm_key(Tpm2Reference.parse(ref), out=tmp_path / "forked")
    check = _unwrap_check(ref, made.public)
    check()
    with _held_by_another_thread(tpm._LOCK):
        assert _child_exit_code(check) == 0, "the forked child hung on the TPM lock"
    check()


def test_a_known_hosts_update_after_a_fork_is_not_blocked(tmp_path: Path) -> None:
    from edge_sdk.fleet.transports import ssh

    def take() -> None:
        with ssh._KNOWN_HOSTS_LOCK:
            pass

    with _held_by_another_thread(ssh._KNOWN_HOSTS_LOCK):
        assert _child_exit_code(take) == 0, "the forked child hung on the known_hosts lock"


def test_no_module_level_thread_lock_lacks_a_fork_handler() -> None:
    # The class, not the instances: a lock made at import time is shared by every thread and
    # inherited by every child, so it must be a ForkSafeLock (or have its own fork handler).
    plain = re.compile(r"^\w+(?:: [^=]+)? = threading\.(?:Lock|RLock|Condition|Semaphore)\(", re.M)
    offenders = []
    for path in sorted((REPO / "edge_sdk").rglob("*.py")):
        text = path.read_text()
        if "register_at_fork" not in text:
            offenders += [f"{path.relative_to(REPO)}: {m}" for m in plain.findall(text)]
    assert not offenders
