"""``edge-sdk doctor``: is this board ready to run bundles? Each check says how to fix itself."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EdgeSDKError


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (``flags`` on x86, ``Features`` on ARM)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def fast_aead(flags: set[str]) -> str:
    """The AEAD this CPU runs fastest: AES-GCM needs AES instructions, else ChaCha20-Poly1305."""
    return "aes-256-gcm" if "aes" in flags else "chacha20-poly1305"


def run_checks(
    *, profile: str | None, device_key: Path | None, state_dir: Path | None
) -> list[Check]:
    """Run every check and return them in display order (never raises for a failed check)."""
    from .runtime import discover_backend
    from .state import default_state_dir

    checks = [
        Check(
            "python",
            "ok" if sys.version_info >= (3, 10) else "fail",
            platform.python_version(),
            None if sys.version_info >= (3, 10) else "install Python ≥ 3.10",
        ),
        Check("architecture", "ok", platform.machine()),
    ]
    prof = None
    if profile:
        from .profiles import load_profile

        try:
            prof = load_profile(profile)
            ok = prof.architecture == platform.machine()
            checks.append(
                Check(
                    "profile",
                    "ok" if ok else "warn",
                    f"{prof.name} ({prof.architecture})",
                    None
                    if ok
                    else f"this machine is {platform.machine()}; is {prof.name} the right profile?",
                )
            )
        except EdgeSDKError as exc:
            checks.append(Check("profile", "fail", exc.message, "edge-sdk profiles list"))
    try:
        backend = discover_backend()
        checks.append(
            Check("runtime", "ok", f"{backend.package} {backend.version} ({backend.name})")
        )
        if prof is not None and backend.package != prof.runtime.package:
            checks.append(
                Check(
                    "runtime matches profile",
                    "warn",
                    f"profile expects {prof.runtime.package} {prof.runtime.version}",
                    f"pip install {prof.runtime.package}=={prof.runtime.version}",
                )
            )
    except EdgeSDKError as exc:
        backend = None
        checks.append(Check("runtime", "fail", exc.message, exc.hint))
    numpy_version = _version("numpy") or "missing"
    tflite_rt = _version("tflite-runtime")
    if (
        tflite_rt
        and tflite_rt.startswith("2.")
        and int(tflite_rt.split(".")[1]) <= 14
        and numpy_version.startswith("2")
    ):
        checks.append(
            Check(
                "numpy",
                "fail",
                f"numpy {numpy_version} with tflite-runtime {tflite_rt}",
                "pip install 'numpy<2' (tflite-runtime ≤ 2.14 is built against numpy 1.x)",
            )
        )
    else:
        checks.append(Check("numpy", "ok", numpy_version))
    flags = cpu_flags()
    best = fast_aead(flags)
    detail = (
        f"AES instructions {'present' if 'aes' in flags else 'absent'}; fastest AEAD here: {best}"
    )
    if prof is not None and prof.aead != best:
        checks.append(Check("crypto", "warn", detail, f"package with --aead {best} for this board"))
    else:
        checks.append(Check("crypto", "ok", detail))
    if prof is not None and backend is not None:
        for spec in prof.delegates:
            if spec.builtin:
                checks.append(Check(f"delegate {spec.name}", "ok", "built into the runtime"))
                continue
            try:
                backend.load_delegate(
                    spec.library, {k: str(v) for k, v in dict(spec.options).items()}
                )
                checks.append(Check(f"delegate {spec.name}", "ok", f"{spec.library} loads"))
            except (ValueError, OSError, RuntimeError) as exc:
                checks.append(
                    Check(
                        f"delegate {spec.name}",
                        "fail" if spec.required else "warn",
                        f"{spec.library}: {str(exc).splitlines()[0][:120]}",
                        f"install the vendor package that provides {spec.library}",
                    )
                )
    directory = state_dir or default_state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        writable = os.access(directory, os.W_OK)
        checks.append(
            Check(
                "state dir",
                "ok" if writable else "fail",
                str(directory),
                None if writable else f"make {directory} writable or pass --state-dir",
            )
        )
    except OSError as exc:
        checks.append(
            Check("state dir", "fail", f"{directory}: {exc.strerror}", "pass --state-dir")
        )
    if device_key is not None:
        try:
            mode = stat.S_IMODE(device_key.stat().st_mode)
            ok = not mode & 0o077
            checks.append(
                Check(
                    "device key",
                    "ok" if ok else "fail",
                    f"{device_key} mode {mode:04o}",
                    None if ok else f"chmod 600 {device_key}",
                )
            )
        except OSError as exc:
            checks.append(
                Check(
                    "device key",
                    "fail",
                    f"{device_key}: {exc.strerror}",
                    "pass the right --device-key",
                )
            )
    return checks
