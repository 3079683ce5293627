"""Fleet inventories: which boards exist, how to reach them, and what they run.

An inventory is a TOML file, validated strictly (unknown keys, wrong types, duplicate names and
bad URIs are all errors naming the device and the field)::

    [defaults]                      # optional; applies to every device
    profile = "rpi4"
    [defaults.ssh]
    identity = "keys/deploy_ed25519"
    known_hosts = "known_hosts"

    [[device]]
    name = "cam-01"                               # required, unique
    target = "ssh://pi@10.0.0.21/srv/edge"        # required: ssh://, file:// or a directory
    profile = "rpi4"                              # optional (else defaults.profile)
    public_key = "keys/cam-01.pub"                # optional device public key
    groups = ["kitchen", "canary"]                # optional
    [device.ssh]                                  # optional; merged over [defaults.ssh]
    port = 2222

Relative paths (``public_key``, ``ssh.identity``, ``ssh.known_hosts``, a directory ``target``)
are relative to the inventory file, so an inventory and its keys can move together; ``~`` is
expanded.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edge_sdk.errors import KeyFileError, UsageError, unreadable_file
from edge_sdk.files import read_capped
from edge_sdk.keys import PublicKey, load_public_key

from .transports import SshOptions, Target, parse_target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DEVICE_KEYS = {"name", "target", "profile", "public_key", "groups", "ssh"}
_DEFAULT_KEYS = {"profile", "ssh"}
_SSH_KEYS = {
    "identity",
    "known_hosts",
    "port",
    "user",
    "accept_new_host_keys",
    "use_agent",
    "connect_timeout",
    "command_timeout",
}


@dataclass(frozen=True)
class Device:
    """One board of the fleet."""

    name: str
    target: str
    profile: str | None = None
    public_key: PublicKey | None = None
    public_key_path: Path | None = None
    groups: tuple[str, ...] = ()
    ssh: SshOptions = field(default_factory=SshOptions)

    def open_target(self) -> Target:
        """The deploy target of this device (no connection is made yet)."""
        return parse_target(self.target, ssh=self.ssh, label=self.name)


@dataclass(frozen=True)
class Inventory:
    """A validated inventory: devices in file order."""

    path: Path | None
    devices: tuple[Device, ...]

    def device(self, name: str) -> Device:
        """The device called ``name``.

        Raises:
            UsageError: no such device.
        """
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise UsageError(f"inventory {self.path}: no device named {name!r}")

    @property
    def groups(self) -> tuple[str, ...]:
        """Every group name used, sorted."""
        return tuple(sorted({g for d in self.devices for g in d.groups}))

    def select(self, names: Iterable[str] = (), groups: Iterable[str] = ()) -> tuple[Device, ...]:
        """Devices named in ``names`` or belonging to any of ``groups``; all when both are empty.

        Order follows the inventory file (canaries are taken from the front).

        Raises:
            UsageError: an unknown device name or group.
        """
        names, groups = list(names), list(groups)
        if not names and not groups:
            return self.devices
        known = {d.name for d in self.devices}
        unknown_names = [n for n in names if n not in known]
        if unknown_names:
            raise UsageError(f"inventory {self.path}: no device named {', '.join(unknown_names)}")
        unknown_groups = [g for g in groups if g not in self.groups]
        if unknown_groups:
            raise UsageError(f"inventory {self.path}: no group named {', '.join(unknown_groups)}")
        chosen = [d for d in self.devices if d.name in names or set(d.groups) & set(groups)]
        return tuple(chosen)


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Read and validate an inventory TOML file.

    Raises:
        UsageError: missing file, invalid TOML, or any schema violation (naming device and field).
        KeyFileError: a device's public key cannot be loaded or is not a device key.
    """
    path = Path(path)
    try:
        text = read_capped(path, 1 << 20).decode("utf-8")
    except OSError as exc:
        raise unreadable_file(UsageError, "inventory", path, exc) from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read inventory {path}: {exc}") from None
    return parse_inventory(text, base_dir=path.parent, source=path)


def parse_inventory(text: str, *, base_dir: Path, source: Path | None = None) -> Inventory:
    """Validate inventory TOML text; relative paths are taken relative to ``base_dir``."""
    where = f"inventory {source}" if source else "inventory"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where} is not valid TOML: {exc}") from None
    _only(data, {"defaults", "device"}, where)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{where}: [defaults] must be a table")
    _only(defaults, _DEFAULT_KEYS, f"{where}: [defaults]")
    default_profile = _opt_str(defaults, "profile", f"{where}: [defaults]")
    default_ssh = _ssh_options(
        defaults.get("ssh", {}), SshOptions(), base_dir, f"{where}: [defaults.ssh]"
    )
    raw_devices = data.get("device", [])
    if not isinstance(raw_devices, list) or not raw_devices:
        raise UsageError(f"{where} lists no devices", hint="add [[device]] tables")
    devices: list[Device] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_devices, 1):
        dev = _device(
            raw, index, where=where, base_dir=base_dir,
            default_profile=default_profile, default_ssh=default_ssh,
        )  # fmt: skip
        if dev.name in seen:
            raise UsageError(f"{where}: device name {dev.name!r} is used twice")
        seen.add(dev.name)
        devices.append(dev)
    return Inventory(source, tuple(devices))


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise UsageError(
            f"{where}: unknown field(s) {', '.join(unknown)}",
            hint=f"allowed: {', '.join(sorted(allowed))}",
        )


def _opt_str(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise UsageError(f"{where}: {key} must be a non-empty string")
    return value


def _path(value: Any, key: str, base_dir: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where}: {key} must be a non-empty path string")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _ssh_options(raw: Any, base: SshOptions, base_dir: Path, where: str) -> SshOptions:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: ssh must be a table")
    _only(raw, _SSH_KEYS, where)
    changes: dict[str, Any] = {}
    for key in ("identity", "known_hosts"):
        if key in raw:
            changes[key] = _path(raw[key], key, base_dir, where)
    if "user" in raw:
        changes["user"] = _opt_str(raw, "user", where)
    if "port" in raw:
        port = raw["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise UsageError(f"{where}: port must be an integer between 1 and 65535")
        changes["port"] = port
    for key in ("accept_new_host_keys", "use_agent"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise UsageError(f"{where}: {key} must be true or false")
            changes[key] = raw[key]
    for key in ("connect_timeout", "command_timeout"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UsageError(f"{where}: {key} must be a positive number of seconds")
            changes[key] = float(value)
    return replace(base, **changes)


def _device(
    raw: Any,
    index: int,
    *,
    where: str,
    base_dir: Path,
    default_profile: str | None,
    default_ssh: SshOptions,
) -> Device:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: device #{index} must be a table")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"{where}: device #{index} needs a name of letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit)"
        )
    here = f"{where}: device {name!r}"
    _only(raw, _DEVICE_KEYS, here)
    target = raw.get("target")
    if not isinstance(target, str) or not target:
        raise UsageError(f"{here}: target must be a URI (ssh://user@host/path) or a directory")
    profile = _opt_str(raw, "profile", here) or default_profile
    groups = raw.get("groups", [])
    if not isinstance(groups, list) or not all(
        isinstance(g, str) and _NAME.fullmatch(g) for g in groups
    ):
        raise UsageError(f"{here}: groups must be a list of names")
    if len(set(groups)) != len(groups):
        raise UsageError(f"{here}: groups lists a group twice")
    ssh = _ssh_options(raw.get("ssh", {}), default_ssh, base_dir, f"{here}: ssh")
    is_ssh = target.lower().startswith("ssh://")
    if "://" not in target:
        target = str(_path(target, "target", base_dir, here))
    if not is_ssh and "ssh" in raw:
        raise UsageError(f"{here}: ssh options given for a non-SSH target {target!r}")
    try:
        parse_target(target, ssh=ssh, label=name)
    except UsageError as exc:
        raise UsageError(f"{here}: {exc.message}", hint=exc.hint) from None
    public_key = None
    key_path = None
    if "public_key" in raw:
        key_path = _path(raw["public_key"], "public_key", base_dir, here)
        try:
            public_key = load_public_key(key_path, kind="device")
        except KeyFileError as exc:
            raise KeyFileError(f"{here}: {exc.message}", hint=exc.hint) from None
    return Device(
        name=name,
        target=target,
        profile=profile,
        public_key=public_key,
        public_key_path=key_path,
        groups=tuple(groups),
        ssh=ssh,
    )
