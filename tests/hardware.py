"""Real key-holding hardware for tests and benchmarks: a SoftHSM2 token and a software TPM.

Both are the real programs (Debian ``softhsm2``, ``swtpm``, ``swtpm-tools``, ``tpm2-tools``),
started here, once per test session (fixtures ``softhsm`` and ``swtpm`` in tests/conftest.py)::

    with SoftHsm.start(tmp / "hsm") as hsm:
        uri = hsm.uri("device")      # pkcs11:token=edge;object=device?module-path=…&pin-source=file:…
    with SwTpm.start(tmp / "tpm") as tpm:
        ref = f"tpm2:handle=0x81010002?tcti={tpm.tcti}"

SoftHSM is configured through ``SOFTHSM2_CONF``, which the module reads when it is first
initialized in a process: :meth:`SoftHsm.start` sets it for the whole process (one SoftHSM per
process). Its tokens are files; :meth:`SoftHsm.pulled` moves one away and back, which is what
pulling a USB token out looks like to a running program. The TPM is swtpm on two loopback ports
with its dictionary-attack parameters relaxed (a test that wants the lockout starts its own).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .sshd import free_port, stop_process

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "4711-edge-test-pin"  # distinctive, so a test can search output for it
SO_PIN = "so-pin-0815"


def hardware_missing() -> str | None:
    """None when SoftHSM2 and swtpm can run here, else what to install (for a clear failure)."""
    wanted = {
        SOFTHSM_MODULE: "softhsm2",
        "softhsm2-util": "softhsm2",
        "swtpm": "swtpm",
        "swtpm_ioctl": "swtpm-tools",
        "tpm2_dictionarylockout": "tpm2-tools",
    }
    missing = sorted(
        {pkg for tool, pkg in wanted.items() if not (shutil.which(tool) or os.path.exists(tool))}
    )
    return f"apt-get install -y {' '.join(missing)} (tools/test.sh does)" if missing else None


@dataclass
class SoftHsm:
    """A SoftHSM2 token directory with initialized tokens, configured for this process."""

    workdir: Path
    tokens: tuple[str, ...]
    pin_file: Path
    module: str = SOFTHSM_MODULE
    pin: str = USER_PIN
    _saved_conf: str | None = field(default=None, repr=False)

    @classmethod
    def start(cls, workdir: Path, tokens: tuple[str, ...] = ("edge", "spare")) -> SoftHsm:
        missing = hardware_missing()
        assert missing is None, f"SoftHSM2/swtpm not installed: {missing}"
        (workdir / "tokens").mkdir(parents=True, exist_ok=True)
        conf = workdir / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {workdir / 'tokens'}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n"
        )
        saved = os.environ.get("SOFTHSM2_CONF")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        for label in tokens:
            subprocess.run(
                ["softhsm2-util", "--init-token", "--free", "--label", label,
                 "--so-pin", SO_PIN, "--pin", USER_PIN],
                check=True, capture_output=True, env={**os.environ},
            )  # fmt: skip
        pin_file = workdir / "pin"
        pin_file.write_text(USER_PIN + "\n")
        pin_file.chmod(0o600)
        return cls(workdir, tokens, pin_file, _saved_conf=saved)

    def uri(self, obj: str, token: str = "edge", *, pin_source: str | None = None) -> str:
        """A pkcs11: URI for an object in one of the tokens, with the PIN from the PIN file."""
        pin = pin_source if pin_source is not None else f"file:{self.pin_file}"
        query = f"module-path={self.module}" + (f"&pin-source={pin}" if pin else "")
        return f"pkcs11:token={token};object={obj}?{query}"

    def token_dir(self, label: str) -> Path:
        """The directory SoftHSM keeps a token's objects in."""
        for candidate in (self.workdir / "tokens").iterdir():
            info = candidate / "token.object"
            if info.exists() and label.encode() in info.read_bytes():
                return candidate
        raise LookupError(label)

    @contextlib.contextmanager
    def pulled(self, label: str) -> Iterator[None]:
        """The token is gone (its files moved away) inside the block, back afterwards."""
        where = self.token_dir(label)
        away = self.workdir / f"pulled-{where.name}"
        where.rename(away)
        try:
            yield
        finally:
            away.rename(where)

    def stop(self) -> None:
        if self._saved_conf is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = self._saved_conf


def _free_port_pair() -> int:
    """A port P on 127.0.0.1 such that P and P+1 were both free a moment ago."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


@dataclass
class SwTpm:
    """A running swtpm (TPM 2.0) on loopback TCP; ``tcti`` is how to reach it."""

    workdir: Path
    port: int
    ctrl_port: int
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    @classmethod
    def start(cls, workdir: Path, *, relax_lockout: bool = True, timeout: float = 10.0) -> SwTpm:
        missing = hardware_missing()
        assert missing is None, f"SoftHSM2/swtpm not installed: {missing}"
        workdir.mkdir(parents=True, exist_ok=True)
        port = _free_port_pair()
        ctrl = port + 1  # the swtpm TCTI expects the control channel on the next port
        log = open(workdir / "swtpm.log", "wb")  # noqa: SIM115 - owned by the process
        process = subprocess.Popen(
            ["swtpm", "socket", "--tpm2",
             "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
             "--tpmstate", f"dir={workdir}", "--flags", "not-need-init,startup-clear"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        tpm = cls(workdir, port, ctrl, process)
        try:
            tpm._wait_ready(timeout)
            if relax_lockout:
                tpm.tools("tpm2_dictionarylockout", "--setup-parameters",
                          "--max-tries=4294967295", "--recovery-time=0",
                          "--lockout-recovery-time=0")  # fmt: skip
        except BaseException:
            tpm.stop()
            raise
        return tpm

    def _wait_ready(self, timeout: float) -> None:
        # Ready means answering a TPM command (a bare TCP connect can win the race with swtpm).
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"swtpm exited: {(self.workdir / 'swtpm.log').read_text()}")
            done = self.tools("tpm2_getrandom", "--hex", "8", check=False)
            if done.returncode == 0:
                return
            last = done.stderr
            time.sleep(0.05)
        raise RuntimeError(f"swtpm did not answer on port {self.port}: {last}")

    def tools(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a tpm2-tools command against this TPM."""
        return subprocess.run(
            list(argv), env={**os.environ, "TPM2TOOLS_TCTI": self.tcti, "TSS2_LOG": "all+NONE"},
            capture_output=True, text=True, check=check,
        )  # fmt: skip

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> SwTpm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
