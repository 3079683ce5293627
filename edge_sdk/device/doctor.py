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

from edge_sdk.errors import EdgeSDKError, install_hint


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


@dataclass(frozen=True)
class Storage:
    """The block device a file lives on, and whether it can be pulled out of the board."""

    device: str | None
    removable: bool
    reason: str


def storage_of(path: Path, sysfs: Path = Path("/sys")) -> Storage:
    """Which block device holds ``path`` and whether it is removable.

    Removable means: the kernel's ``removable`` flag, an SD card (``device/type`` is ``SD``; the
    kernel marks a Pi's SD slot as fixed), or a USB-attached disk. Device-mapper devices (LUKS,
    LVM) are followed to the disks under them. ``device`` is None when the file is on no block
    device (tmpfs, overlay, network file systems).
    """
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return Storage(None, False, "cannot stat the file")
    node = sysfs / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    try:
        resolved = node.resolve(strict=True)
    except OSError:
        return Storage(None, False, "not on a block device")
    return _classify(resolved, depth=0)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _classify(node: Path, depth: int) -> Storage:
    disk = node.parent if (node / "partition").exists() else node
    name = disk.name
    slaves = sorted((disk / "slaves").glob("*")) if (disk / "slaves").is_dir() else []
    if slaves and depth < 4:
        for slave in slaves:
            under = _classify(slave.resolve(), depth + 1)
            if under.removable:
                return Storage(name, True, f"{name} sits on {under.device}: {under.reason}")
        return Storage(name, False, f"{name} sits on fixed storage")
    if _read(disk / "removable") == "1":
        return Storage(name, True, f"{name} is removable media")
    if _read(disk / "device" / "type") == "SD":
        return Storage(name, True, f"{name} is an SD card")
    if "usb" in disk.parts or any(p.startswith("usb") for p in disk.parts):
        return Storage(name, True, f"{name} is a USB disk")
    return Storage(name, False, f"{name} is fixed storage")


def device_key_check(device_key: str | Path, sysfs: Path = Path("/sys")) -> Check:
    """Where the device key lives (file, PKCS#11 token, TPM) and whether it is usable there."""
    from edge_sdk.keys.key_uri import is_key_reference, redact

    if is_key_reference(device_key):
        return _hardware_key_check(str(device_key))
    path = Path(device_key)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        return Check("device key", "fail", f"{path}: {exc.strerror}", "pass the right --device-key")
    if mode & 0o077:
        return Check("device key", "fail", f"file {path} mode {mode:04o}", f"chmod 600 {path}")
    where = storage_of(path, sysfs)
    if where.removable:
        return Check(
            "device key",
            "warn",
            f"file {path} mode {mode:04o} on removable storage ({where.reason}): whoever takes "
            "the card or stick has the key and every model sent to this board",
            "keep the device key in the TPM or secure element (docs/KEYS.md)",
        )
    on = f"on {where.device}" if where.device else f"({where.reason})"
    detail = f"file {redact(str(path))} mode {mode:04o} {on}"
    return Check("device key", "ok", detail, None)


def _hardware_key_check(reference: str) -> Check:
    """Open a token/TPM key and run one DH in it against a software DH (a self-test)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from edge_sdk.keys import open_key_reference

    try:
        key = open_key_reference(reference, kind="device")
    except EdgeSDKError as exc:
        return Check("device key", "fail", exc.message, exc.hint or "see docs/KEYS.md")
    assert key.hardware is not None
    info = key.hardware.describe()
    where = (
        f"PKCS#11 token {info.get('token', '?')!r} object {info.get('object', '?')!r}"
        if key.location == "pkcs11"
        else f"TPM {info.get('key', '?')} via {info.get('tcti', '?')}"
    )
    detail = f"{where}: {key.alg}, key id {key.public.short_id}"
    if info.get("no_da") == "no" and info.get("authorization") == "no PIN":
        # A wrong (or missing) authorization value counts towards the TPM's lockout.
        return Check("device key", "warn", detail + "; DH self-test skipped",
                     "the key is DA-protected: add pin-source= to the reference")  # fmt: skip
    try:
        if key.alg == "p256":
            probe = ec.generate_private_key(ec.SECP256R1())
            point = probe.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
            ok = key.hardware.dh(point) == probe.exchange(ec.ECDH(), key.public.components[0])
            if not ok:
                return Check("device key", "fail", detail + "; DH self-test gave a wrong result",
                             "the token or TPM is faulty")  # fmt: skip
            detail += "; DH self-test ok"
    except EdgeSDKError as exc:
        return Check("device key", "fail", f"{detail}; {exc.message}", exc.hint)
    finally:
        key.close()
    return Check("device key", "ok", detail)


def state_dir_check(directory: Path) -> Check:
    """Writable, and private: whoever can write the state directory can reset the anti-rollback
    counters and rewrite the audit log."""
    st = directory.stat()
    if not os.access(directory, os.W_OK):
        return Check(
            "state dir", "fail", str(directory), f"make {directory} writable or pass --state-dir"
        )
    mode = stat.S_IMODE(st.st_mode)
    problems = []
    if mode & 0o077:
        problems.append(f"mode {mode:04o} lets group/others in")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        problems.append(f"owned by uid {st.st_uid}, not this user")
    if directory.is_symlink():
        problems.append("it is a symlink")
    if problems:
        return Check(
            "state dir",
            "warn",
            f"{directory}: {'; '.join(problems)} (whoever can write it can reset anti-rollback)",
            f"chown $(id -u) {directory} && chmod 700 {directory}",
        )
    return Check("state dir", "ok", f"{directory} (private)")


def _threads_check(prof: Any) -> Check:
    """How many interpreter threads a load here would use, and why (see runtime.load)."""
    from .runtime import detect_hardware_ids, usable_cores

    if prof is not None:
        return Check("threads", "ok", f"{prof.threads} (profile {prof.name})")
    ids = set(detect_hardware_ids())
    from edge_sdk.profiles import list_profiles

    matching = [p.name for p in list_profiles() if set(p.hardware_ids) & ids]
    cores = usable_cores()
    if matching:
        detail = (
            f"bundles built for {', '.join(matching)} use that profile's threads on this board "
            f"(at most the {cores} usable cores); others get {cores}"
        )
    else:
        detail = f"{cores}: the usable cores (no built-in profile names this board's hardware ids)"
    return Check("threads", "ok", detail)


def _llm_checks() -> list[Check]:
    """Where a decrypted LLM would live (sealed memory or nowhere) and whether LiteRT-LM is here.

    LLM bundles open only from sealed memory: a runtime that opens files by path would otherwise
    need the plaintext on disk, which edge-sdk never writes.
    """
    from .sealed_memory import unavailable_reason

    reason = unavailable_reason()
    checks = [
        Check(
            "sealed memory",
            "ok",
            "memfd with seals: LLM bundles and .tflite models of 64 MiB or more decrypt "
            "into it, LiteRT and LiteRT-LM map it (never on disk)",
        )
        if reason is None
        else Check(
            "sealed memory",
            "warn",
            f"unavailable: {reason}",
            "LLM bundles need Linux ≥ 3.17 memfd sealing; .tflite bundles open from a "
            "bytes in process memory instead",
        )
    ]
    lm = _version("litert-lm-api")
    checks.append(
        Check("llm runtime", "ok", f"litert-lm-api {lm}")
        if lm
        else Check(
            "llm runtime",
            "ok",
            f"litert-lm-api not installed (needed only for LLM bundles: {install_hint('llm')})",
        )
    )
    return checks


def run_checks(
    *, profile: str | None, device_key: str | Path | None, state_dir: Path | None
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
        from edge_sdk.profiles import load_profile

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
    checks.extend(_llm_checks())
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
    checks.append(_threads_check(prof))
    directory = state_dir or default_state_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        checks.append(state_dir_check(directory))
    except OSError as exc:
        checks.append(
            Check("state dir", "fail", f"{directory}: {exc.strerror}", "pass --state-dir")
        )
    if device_key is not None:
        checks.append(device_key_check(device_key))
    return checks
