"""Key, PIN and configuration files are bounded before they are read, and must be regular files.

A FIFO planted at a PIN file's or key file's name blocked the reader forever (its ``open`` and
``read`` wait for a writer that never comes); a huge ``tpm2:file=`` was read whole before its
16 KiB cap. Each reader runs in a forked child, so a hang is detected (and killed) instead of
freezing the suite, and so the memory limit of the huge-file case binds that child only.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import EdgeSDKError

from .test_fork_locks import _child_exit_code

REFUSED = 3  # the child's exit code when the reader raised the typed error we expect


def _refused(call: Callable[[], Any], match: str) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except EdgeSDKError as exc:
            if match in exc.message:
                os._exit(REFUSED)
            raise
        raise AssertionError("the reader accepted it")

    return run


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "planted"
    os.mkfifo(path, 0o600)
    return path


def _readers(fifo: Path, softhsm: Any) -> dict[str, Callable[[], Any]]:
    from edge_sdk.fleet.inventory import load_inventory
    from edge_sdk.fleet.provenance_policy import ProvenancePolicy
    from edge_sdk.host.config import load_config
    from edge_sdk.host.model_signature import read_signature_file
    from edge_sdk.keys import load_private_key, load_public_key
    from edge_sdk.keys.key_uri import Pkcs11Uri
    from edge_sdk.profiles import load_profile

    uri = f"pkcs11:token=edge;object=x?module-path={softhsm.module}&pin-source=file:{fifo}"
    return {
        "pin-source=file:": Pkcs11Uri.parse(uri).pin.read,
        "private key file": lambda: load_private_key(fifo, kind="device"),
        "public key file": lambda: load_public_key(fifo, kind="device"),
        "edge-sdk.toml": lambda: load_config(fifo),
        "inventory": lambda: load_inventory(fifo),
        "provenance policy": lambda: ProvenancePolicy.load(fifo),
        "profile file": lambda: load_profile(str(fifo)),
        "model signature": lambda: read_signature_file(fifo),
    }


@pytest.mark.parametrize(
    "reader",
    ["pin-source=file:", "private key file", "public key file", "edge-sdk.toml", "inventory",
     "provenance policy", "profile file", "model signature"],
)  # fmt: skip
def test_a_fifo_at_a_small_files_name_is_refused_not_waited_on(
    reader: str, fifo: Path, softhsm: Any
) -> None:
    call = _readers(fifo, softhsm)[reader]
    assert _child_exit_code(_refused(call, "not a regular file")) == REFUSED


def test_a_huge_tpm_key_file_is_refused_without_reading_it(swtpm: Any, tmp_path: Path) -> None:
    from edge_sdk.keys import load_private_key

    huge = tmp_path / "huge.tss"
    with open(huge, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GiB that costs no disk
    ref = f"tpm2:file={huge}?tcti={swtpm.tcti}"

    def bounded() -> None:
        # 256 MiB more address space than the child has now: reading the file whole cannot fit.
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), resource.RLIM_INFINITY))
        _refused(lambda: load_private_key(ref, kind="device"), "larger than 16,384 bytes")()

    assert _child_exit_code(bounded) == REFUSED


def test_read_capped_reads_at_most_one_byte_past_the_cap(tmp_path: Path, fifo: Path) -> None:
    from edge_sdk.files import FileTooLarge, NotARegularFile, read_capped

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_capped(path, 10) == b"x" * 10
    with pytest.raises(FileTooLarge, match="larger than 9 bytes"):
        read_capped(path, 9)
    with pytest.raises(NotARegularFile):
        read_capped(fifo, 10)
    os.symlink(path, tmp_path / "link")
    with pytest.raises(OSError):
        read_capped(tmp_path / "link", 10, follow_symlinks=False)
