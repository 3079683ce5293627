"""Anti-rollback state: the highest accepted version of each bundle name on this device.

The state file is rewritten atomically (temp file, fsync, rename, fsync of the directory) under an
exclusive ``flock``, so concurrent loaders never corrupt it and a crash leaves the old or the new
state, never half of one.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edge_sdk.errors import RollbackError, StateError, excerpt
from edge_sdk.files import atomic_write, locked, remove_stale_temps

STATE_ENV = "EDGE_SDK_STATE_DIR"


def default_state_dir() -> Path:
    """``$EDGE_SDK_STATE_DIR``, else /var/lib/edge-sdk for root, else the XDG state dir."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/edge-sdk")
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "edge-sdk"


class VersionState:
    """The ``versions.json`` file in a state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(
                f"cannot create state directory {directory}: {exc.strerror}",
                hint=f"set {STATE_ENV} or pass --state-dir to a writable directory",
            ) from None
        self.path = directory / "versions.json"
        self._lock = directory / ".versions.lock"

    def read(self) -> dict[str, Any]:
        """The accepted versions by bundle name."""
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            raise StateError(
                f"state file {self.path} is unreadable or corrupt: {excerpt(str(exc), 120)}",
                hint="restore versions.json from a backup; deleting it re-arms rollback attacks",
            ) from None
        if not isinstance(data, dict):
            raise StateError(f"state file {self.path} is corrupt: not an object")
        return data

    def check(self, name: str, version: int, digest: str) -> None:
        """Refuse an older version, or the same version with different contents.

        Raises:
            RollbackError: naming the bundle, its version and the accepted one.
        """
        state = self.read()
        if name in state:
            _check(state[name], name, version, digest)

    def is_recorded(self, name: str, version: int, digest: str) -> bool:
        """True when exactly this version and digest are the accepted ones for ``name``."""
        entry = self.read().get(name)
        return (
            isinstance(entry, dict)
            and entry.get("version") == version
            and entry.get("digest") == digest
        )

    def record(self, name: str, version: int, digest: str) -> None:
        """Remember ``version`` as accepted (re-checked under the lock against a racing loader).

        A version already recorded with the same digest writes nothing: reloading what the device
        runs costs no disk write and no fsync.
        """
        if self.is_recorded(name, version, digest):
            return
        try:
            with locked(self._lock):
                remove_stale_temps(self.path)
                state = self.read()
                if name in state:
                    _check(state[name], name, version, digest)
                state[name] = {
                    "version": version,
                    "digest": digest,
                    "accepted": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
                atomic_write(self.path, json.dumps(state, indent=1, sort_keys=True).encode(), 0o600)
        except OSError as exc:
            raise StateError(f"cannot update state file {self.path}: {exc.strerror}") from None


def _check(entry: Any, name: str, version: int, digest: str) -> None:
    # Called only for a name that has an entry: a missing name is "never seen"; an entry that
    # is not well formed ({}, 0, [], null) fails closed rather than re-arm rollbacks.
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("version"), int)
        or isinstance(entry.get("version"), bool)
        or not isinstance(entry.get("digest"), str)
    ):
        raise StateError(
            f"anti-rollback state for {excerpt(name)} is corrupt: {excerpt(entry)}",
            hint="restore versions.json from a backup; deleting it re-arms rollback attacks",
        )
    accepted = int(entry["version"])
    if version < accepted:
        raise RollbackError(
            f"bundle {name} v{version} is older than v{accepted}, which this device already accepted"
        )
    if version == accepted and entry.get("digest") != digest:
        raise RollbackError(
            f"bundle {name} v{version} differs from the v{accepted} this device already accepted "
            f"(digest {digest[:16]} vs {str(entry.get('digest'))[:16]})",
            hint="every build of a name needs a new version: package it again with a higher "
            "--version (or without --version: the build time is used)",
        )
