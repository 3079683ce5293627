"""The project configuration ``edge-sdk.toml`` and the one-time setup that writes it.

``edge-sdk init`` creates the publisher's signing key in the user's configuration directory (never
inside the project, so it is not committed by accident) and a small ``edge-sdk.toml`` in the
project that names it, plus the devices to encrypt for and where to deploy. After that the
mission's command line works as typed::

    edge-sdk package model.h5 --profile rpi4

The file is found like git finds its repository: in the current directory or the nearest parent,
or at ``$EDGE_SDK_CONFIG``. Relative paths in it are relative to the file. Unknown keys are errors,
so a typo never silently changes what is signed or for whom.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib  # type: ignore[import-not-found]

from edge_sdk.errors import UsageError, excerpt
from edge_sdk.files import atomic_write, read_capped

CONFIG_NAME = "edge-sdk.toml"
CONFIG_ENV = "EDGE_SDK_CONFIG"
_SECTIONS: dict[str, set[str]] = {
    "package": {"signing_key", "recipients", "inventory", "groups", "profile", "output_dir"},
    "deploy": {"target", "inventory", "groups"},
}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def user_config_dir() -> Path:
    """``$XDG_CONFIG_HOME/edge-sdk`` (default ``~/.config/edge-sdk``): where keys go by default."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "edge-sdk"


@dataclass(frozen=True)
class ProjectConfig:
    """What ``edge-sdk.toml`` says; every path is absolute."""

    path: Path
    signing_key: Path | None = None
    recipients: tuple[Path, ...] = ()
    inventory: Path | None = None
    groups: tuple[str, ...] = ()
    profile: str | None = None
    output_dir: Path | None = None
    deploy_target: str | None = None
    deploy_inventory: Path | None = None
    deploy_groups: tuple[str, ...] = field(default=())

    @property
    def signing_public(self) -> Path | None:
        """The public half of the signing key (``KEY.pub`` beside ``KEY.key``), if present."""
        if self.signing_key is None:
            return None
        public = self.signing_key.with_suffix(".pub")
        return public if public.is_file() else None


def _fail(path: Path, problem: str) -> UsageError:
    return UsageError(
        f"{path}: {problem}", hint="fix the file, or run 'edge-sdk init --force' to rewrite it"
    )


def _path(base: Path, config: Path, key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(config, f"{key} must be a path (a non-empty string)")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _strings(config: Path, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(config, f"{key} must be a list of strings")
    return tuple(value)


def load_config(path: Path) -> ProjectConfig:
    """Read and check one ``edge-sdk.toml``.

    Raises:
        UsageError: the file is unreadable, not TOML, or has unknown or mistyped keys.
    """
    try:
        data = tomllib.loads(read_capped(path, 1 << 20).decode("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid TOML ({excerpt(str(exc), 120)})") from None
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise _fail(path, f"unknown section(s) {', '.join(sorted(map(excerpt, unknown)))}")
    base = path.parent.absolute()
    values: dict[str, Any] = {}
    for section, allowed in _SECTIONS.items():
        table = data.get(section, {})
        if not isinstance(table, Mapping):
            raise _fail(path, f"[{section}] must be a table")
        extra = set(table) - allowed
        if extra:
            raise _fail(
                path, f"unknown key(s) in [{section}]: {', '.join(sorted(map(excerpt, extra)))}"
            )
        for key, value in table.items():
            where = f"{section}.{key}"
            if key in ("signing_key", "inventory", "output_dir"):
                values[f"{section}_{key}"] = _path(base, path, where, value)
            elif key == "recipients":
                values["package_recipients"] = tuple(
                    _path(base, path, where, v) for v in _strings(path, where, value)
                )
            elif key == "groups":
                values[f"{section}_groups"] = _strings(path, where, value)
            else:  # profile, target
                if not isinstance(value, str) or not value:
                    raise _fail(path, f"{where} must be a non-empty string")
                # A directory target is relative to this file, like every other path in it.
                local = key == "target" and "://" not in value
                values[f"{section}_{key}"] = (
                    str(_path(base, path, where, value)) if local else value
                )
    return ProjectConfig(
        path=path.absolute(),
        signing_key=values.get("package_signing_key"),
        recipients=values.get("package_recipients", ()),
        inventory=values.get("package_inventory"),
        groups=values.get("package_groups", ()),
        profile=values.get("package_profile"),
        output_dir=values.get("package_output_dir"),
        deploy_target=values.get("deploy_target"),
        deploy_inventory=values.get("deploy_inventory"),
        deploy_groups=values.get("deploy_groups", ()),
    )


def find_config(start: Path | None = None) -> ProjectConfig | None:
    """The project configuration in effect: ``$EDGE_SDK_CONFIG``, else the nearest
    ``edge-sdk.toml`` in ``start`` (default: the current directory) or its parents."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return load_config(Path(explicit))
    here = (start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / CONFIG_NAME
        if candidate.is_file():
            return load_config(candidate)
    return None


def default_version(now: datetime | None = None) -> int:
    """The UTC build time as ``YYYYMMDDhhmmss``: grows with every build, so anti-rollback holds.

    Two builds in the same second get the same version; a device that accepted one refuses the
    other (same version, other contents) rather than take it silently.
    """
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return int(moment.strftime("%Y%m%d%H%M%S"))


def default_name(model: Path) -> str:
    """A bundle name from the model's file (or SavedModel directory) name."""
    stem = model.name if model.is_dir() else model.stem
    name = _NAME_CHARS.sub("-", stem).strip(".-_")[:64]
    return name or "model"


def default_output(model: Path, profile: str, output_dir: Path | None) -> Path:
    """``<stem>.<profile>.edgepkg`` beside the model, or in the configured output directory."""
    return (output_dir or model.absolute().parent) / f"{default_name(model)}.{profile}.edgepkg"


_TEMPLATE = """\
# edge-sdk project configuration, written by 'edge-sdk init'. Relative paths are relative to
# this file. Every key is optional; command-line options override them.

[package]
# The publisher's signing key (0600, kept outside the project so it is never committed).
signing_key = {signing_key}
# Device public keys to encrypt every bundle for (without any, bundles are signed only):
{recipients}
# ... or the devices of a fleet inventory (optionally only some groups):
{inventory}
{groups}
# Default device profile, and where bundles go (default: beside the model):
{profile}
# output_dir = "dist"

[deploy]
# Where 'edge-sdk deploy BUNDLE' installs when no --target/--inventory is given:
{target}
# inventory = "fleet.toml"
# groups = ["canary"]
"""


def _line(key: str, value: str | list[str] | None, example: str) -> str:
    if value is None or value == []:
        return f"# {key} = {example}"
    if isinstance(value, list):
        return f"{key} = [" + ", ".join(_toml_string(v) for v in value) + "]"
    return f"{key} = {_toml_string(value)}"


@dataclass(frozen=True)
class InitResult:
    """What :func:`init_project` wrote."""

    config: Path
    signing_key: Path
    public_key: Path
    project_public_key: Path
    key_id: str
    created_key: bool


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def init_project(
    directory: Path,
    *,
    key_dir: Path | None = None,
    key_name: str | None = None,
    alg: str | None = None,
    force: bool = False,
    recipients: list[str] | None = None,
    inventory: str | None = None,
    groups: list[str] | None = None,
    profile: str | None = None,
    target: str | None = None,
) -> InitResult:
    """Create the publisher key (unless it exists) and ``edge-sdk.toml`` in ``directory``.

    The key goes to ``key_dir`` (default: :func:`user_config_dir` ``/keys``), named after the
    project directory; its public half is also copied beside the config as ``publisher.pub`` — the
    file devices and auditors trust.

    Raises:
        UsageError: a config exists already (without ``force``), or a path is unusable.
        KeyFileError: the key cannot be written.
    """
    from edge_sdk.keys import (
        generate_key,
        load_private_key,
        load_public_key,
        save_keypair,
    )

    directory = directory.absolute()
    config = directory / CONFIG_NAME
    for recipient in recipients or []:  # a typo here would silently leave bundles unencrypted
        load_public_key(_path(directory, config, "recipients", recipient), kind="device")
    if config.exists() and not force:
        raise UsageError(
            f"{config} exists already", hint="edit it, or pass --force to write a new one"
        )
    keys = (key_dir or user_config_dir() / "keys").absolute()
    # Named after the project's directory *and* its location: two projects both called "app"
    # must never share a signing key by accident (boards trusting one would trust the other).
    where = hashlib.sha256(str(directory).encode()).hexdigest()[:8]
    stem = key_name or f"{default_name(directory)}-{where}-publisher"
    key_path = keys / f"{stem}.key"
    try:
        keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {keys} or {directory}: {exc.strerror}") from None
    if key_path.exists():
        # Re-running init must never replace a key bundles were already signed with.
        key = load_private_key(key_path, kind="signing")
        created = False
        public = key_path.with_suffix(".pub")
        if not public.exists():
            atomic_write(public, key.public.to_pem())
    else:
        key = generate_key("signing", alg)
        key_path, public = save_keypair(key, keys / stem)
        created = True
    project_public = directory / "publisher.pub"
    try:
        atomic_write(project_public, public.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot write {project_public}: {exc.strerror}") from None
    home = Path.home()
    shown = f"~/{key_path.relative_to(home)}" if key_path.is_relative_to(home) else str(key_path)
    text = _TEMPLATE.format(
        signing_key=_toml_string(shown),  # ~ keeps the file usable by teammates and CI
        recipients=_line("recipients", recipients, '["keys/pi-0042.pub"]'),
        inventory=_line("inventory", inventory, '"fleet.toml"'),
        groups=_line("groups", groups, '["kitchen"]'),
        profile=_line("profile", profile, '"rpi4"'),
        target=_line("target", target, '"ssh://pi@pi-0042.local/opt/models"'),
    )
    try:
        atomic_write(config, text.encode("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot write {config}: {exc.strerror}") from None
    load_config(config)  # what was written must read back
    return InitResult(config, key_path, public, project_public, key.key_id, created)
