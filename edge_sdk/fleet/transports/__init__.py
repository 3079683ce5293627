"""Deploy targets: a small set of filesystem primitives, implemented once per transport.

A :class:`Target` names a place bundles go to (a local directory, a board over SSH). Connecting
to it gives a :class:`Session` whose primitive operations — list, stat, upload to a temp file
with fsync, SHA-256 of a file *on the target*, rename, symlink, read link, remove, run a
command — are all :mod:`edge_sdk.fleet.deploy` needs to install releases atomically. The deploy logic
is written once against these primitives (:mod:`~edge_sdk.fleet.transports.base`); each transport
(:mod:`~edge_sdk.fleet.transports.local`, :mod:`~edge_sdk.fleet.transports.ssh`) only moves bytes
and names, and :func:`parse_target` picks one from a URI.

Errors are translated in one place per transport (:meth:`Target.explain`): raw ``OSError`` or
``asyncssh`` exceptions never escape, and each translation says whether retrying can help
(network trouble) or not (authentication, host key, permissions, full disk).

Every path a session takes is *relative to the target root* and checked with
:func:`check_relpath`, so nothing a caller passes can climb out of the root.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edge_sdk.errors import UsageError

from .base import (
    CommandResult,
    Entry,
    EntryKind,
    Failure,
    RetryPolicy,
    Session,
    SshOptions,
    Target,
    UploadProgress,
    check_relpath,
    with_session,
)

__all__ = [
    "CommandResult",
    "Entry",
    "EntryKind",
    "Failure",
    "RetryPolicy",
    "Session",
    "SshOptions",
    "Target",
    "UploadProgress",
    "check_relpath",
    "parse_target",
    "with_session",
]


def parse_target(uri: str, *, ssh: SshOptions | None = None, label: str | None = None) -> Target:
    """Build a target from ``/path``, ``file:///path``, a relative path, or ``ssh://user@host[:port]/path``.

    Raises:
        UsageError: an unknown scheme, a password in the URI, a missing or relative path.
    """
    if "://" not in uri:
        from .local import LocalTarget

        return LocalTarget(str(Path(uri).expanduser().absolute()), label=label)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"file:// target {uri!r} must be local (file:///path)")
        from .local import LocalTarget

        return LocalTarget(unquote(parts.path) or "/", label=label)
    if scheme == "ssh":
        if parts.password is not None:
            raise UsageError(
                f"target {parts.hostname}: passwords in target URIs are not supported",
                hint="use key-based authentication (--identity, or an SSH agent)",
            )
        if not parts.hostname:
            raise UsageError(f"ssh target {uri!r} has no host")
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise UsageError(
                f"ssh target {uri!r} needs an absolute root directory, e.g. ssh://pi@board/srv/models"
            )
        try:
            uri_port = parts.port
        except ValueError:
            raise UsageError(f"ssh target {uri!r} has an invalid port") from None
        options = ssh or SshOptions()
        if options.port is not None and uri_port is not None and options.port != uri_port:
            raise UsageError(
                f"ssh target {uri!r}: port {uri_port} in the URI contradicts port {options.port}"
            )
        from .ssh import SshTarget

        return SshTarget(
            host=parts.hostname,
            port=options.port or uri_port or 22,
            user=options.user or (unquote(parts.username) if parts.username else None),
            root=posixpath.normpath(path),
            options=options,
            label=label,
        )
    raise UsageError(
        f"unsupported target {uri!r}",
        hint="use a directory, file:///path or ssh://user@host[:port]/path",
    )


__all__ = [
    "CommandResult",
    "Entry",
    "Failure",
    "RetryPolicy",
    "Session",
    "SshOptions",
    "Target",
    "TransportError",
    "parse_target",
    "with_session",
]
