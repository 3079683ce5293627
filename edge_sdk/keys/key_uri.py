"""Key references: naming a private key that lives in a PKCS#11 token or a TPM, not in a file.

Wherever a private key file is accepted (``--sign-key``, ``--device-key``,
``edge_sdk.load(device_key=…)``, the agent, ``doctor``) a reference is accepted too:

* ``pkcs11:token=edge;object=device?module-path=/usr/lib/…/libsofthsm2.so&pin-source=file:/etc/edge-sdk/pin``
  — an RFC 7512 PKCS#11 URI. Path attributes (``;``-separated) select the token and the object;
  query attributes (``&``-separated) say which module to load and where the PIN comes from.
* ``tpm2:handle=0x81010002`` or ``tpm2:file=/etc/edge-sdk/device.tss`` — a TPM 2.0 key, either
  persistent at a handle or a TSS2 PRIVATE KEY file (the TPM-wrapped blob tpm2-openssl and
  tpm2-tss-engine write, useless without that TPM). Query attributes: ``tcti=`` (how to reach the
  TPM; default ``$TPM2TOOLS_TCTI``, else ``device:/dev/tpmrm0``) and ``pin-source=`` (the key's
  authorization value, if it has one).

The PIN never travels in the reference: ``pin-value`` is refused (it would land in shell history,
``ps`` output and logs). It comes from ``pin-source=file:/path`` (a file readable by its owner
only), ``pin-source=env:NAME``, or, for PKCS#11 only, ``$EDGE_SDK_PKCS11_PIN``. A TPM key gets no
implicit PIN from the environment: a wrong authorization value counts towards the TPM's
dictionary-attack lockout, so it is only ever sent when the reference asks for it.

This module only parses; nothing here loads a PKCS#11 module or talks to a TPM. Neither python-
pkcs11 nor PyKCS11 parses RFC 7512 URIs, so the small, strict parser lives here.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, unquote_to_bytes

from edge_sdk.errors import KeyFileError, KeyReferenceError, TokenPinError, unreadable_file
from edge_sdk.files import open_regular

PKCS11_PIN_ENV = "EDGE_SDK_PKCS11_PIN"
PKCS11_MODULE_ENV = "EDGE_SDK_PKCS11_MODULE"
TCTI_ENVS = ("TPM2TOOLS_TCTI", "TCTI")
DEFAULT_TCTI = "device:/dev/tpmrm0"
MAX_REFERENCE_CHARS = 4096
MAX_PIN_BYTES = 256

#: RFC 7512 path attributes this SDK can match on. ``id`` is bytes; the rest are text.
PKCS11_PATH_ATTRS = frozenset({
    "token", "manufacturer", "serial", "model", "library-manufacturer", "library-description",
    "library-version", "object", "type", "id", "slot-description", "slot-manufacturer", "slot-id",
})  # fmt: skip
PKCS11_QUERY_ATTRS = frozenset({"pin-source", "pin-value", "module-name", "module-path"})
PKCS11_TYPES = frozenset({"public", "private", "cert", "secret-key", "data"})
#: Persistent object handles of the owner and platform hierarchies (TPM 2.0 Part 2, 2.3.1).
TPM2_PERSISTENT = range(0x81000000, 0x82000000)

_ATTR_NAME = re.compile(r"[A-Za-z0-9_-]+")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _masked(item: str, always: bool) -> str:
    """``name=value`` with the value masked when it may be secret: every query value, and any
    attribute whose name, percent-decoded, speaks of a PIN (``pin%2Dvalue`` is ``pin-value``)."""
    name, eq, _value = item.partition("=")
    if eq and (always or "pin" in unquote(name).lower()):
        return f"{name}=***"
    return item


def _without_secrets(text: str) -> str:
    before, fragment_mark, _fragment = text.partition("#")
    path, query_mark, query = before.partition("?")
    cleaned = ";".join(_masked(item, False) for item in path.split(";"))
    if query_mark:
        cleaned += "?" + "&".join(_masked(item, True) for item in query.split("&"))
    return cleaned + (fragment_mark + "***" if fragment_mark else "")


def _excerpt(text: str, limit: int = 160) -> str:
    """A bounded, escaped, PIN-free rendering of a reference for messages: no query value (a
    ``pin-value``, however encoded, is one) and no PIN-named path attribute is ever shown."""
    cleaned = _without_secrets(text)
    shown = cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"
    return repr(shown)


def redact(reference: str) -> str:
    """A reference for display: bounded, escaped, any ``pin-value`` masked."""
    return _excerpt(reference)[1:-1]


def is_key_reference(value: str | os.PathLike[str]) -> bool:
    """True when ``value`` names a key in a token or TPM rather than a key file."""
    text = value if isinstance(value, str) else os.fspath(value)
    return text.startswith(("pkcs11:", "tpm2:"))


class Secret:
    """A PIN or authorization value. Its ``repr`` and ``str`` never show it; it cannot be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself, for the one call that hands it to the token."""
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class PinSource:
    """Where a PIN comes from: a file, an environment variable, or nowhere."""

    kind: Literal["file", "env", "none"]
    where: str = ""

    def describe(self) -> str:
        """Where the PIN comes from, in words (never the PIN)."""
        if self.kind == "file":
            return f"file {self.where}"
        if self.kind == "env":
            return f"environment variable {self.where}"
        return "no PIN"

    def read(self) -> Secret | None:
        """The PIN, or None when there is no source.

        Raises:
            TokenPinError: the variable is unset or empty, or the file is empty.
            KeyFileError: the PIN file is missing, unreadable, or readable by group or others.
        """
        if self.kind == "none":
            return None
        if self.kind == "env":
            value = os.environ.get(self.where)
            if not value:
                raise TokenPinError(
                    f"the PIN environment variable {self.where} is not set or empty",
                    hint=f"export {self.where} in the service's environment, or use pin-source=file:PATH",
                )
            return Secret(value)
        return Secret(_read_pin_file(Path(self.where)))


def _read_pin_file(path: Path) -> str:
    try:
        # A FIFO planted at the name is refused, not waited on; a symlink is not followed.
        handle = open_regular(path, follow_symlinks=False)
    except OSError as exc:
        raise unreadable_file(KeyFileError, "PIN file", path, exc) from None
    with handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if os.name == "posix" and mode & 0o077:
            raise KeyFileError(
                f"PIN file {path} has unsafe permissions {mode:04o} (group/others can read it)",
                hint=f"chmod 600 {path}",
            )
        raw = handle.read(MAX_PIN_BYTES + 1)
    if len(raw) > MAX_PIN_BYTES:
        raise KeyFileError(f"PIN file {path} is longer than {MAX_PIN_BYTES} bytes")
    # One trailing newline is what `echo PIN > file` writes; it is not part of the PIN.
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raise TokenPinError(f"PIN file {path} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"PIN file {path} is not UTF-8 text") from None


def _pin_source(value: str, reference: str) -> PinSource:
    if value.startswith("env:"):
        name = value[4:]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise KeyReferenceError(
                f"pin-source env:{name[:64]!r} is not a valid environment variable name "
                f"in {_excerpt(reference)}"
            )
        return PinSource("env", name)
    if value.startswith("file://"):
        value = value[len("file://") :]
        if not value.startswith("/"):
            raise KeyReferenceError(
                f"pin-source file URI must name a local absolute path in {_excerpt(reference)}"
            )
    elif value.startswith("file:"):
        value = value[len("file:") :]
    elif value.startswith("|"):
        raise KeyReferenceError(
            f"pin-source commands (|…) are not supported in {_excerpt(reference)}",
            hint="use pin-source=file:/path or pin-source=env:NAME",
        )
    if not value:
        raise KeyReferenceError(f"empty pin-source in {_excerpt(reference)}")
    return PinSource("file", value)


def _split_attrs(part: str, sep: str, where: str, reference: str) -> list[tuple[str, bytes]]:
    attrs: list[tuple[str, bytes]] = []
    if not part:
        return attrs
    for item in part.split(sep):
        name, eq, raw = item.partition("=")
        if not eq or not _ATTR_NAME.fullmatch(name):
            raise KeyReferenceError(  # the attribute's name only: its value may be a PIN
                f"malformed {where} attribute {name[:64]!r} in {_excerpt(reference)}",
                hint="attributes are name=value; percent-encode ';', '?', '&', '%' in values",
            )
        if _PCT.search(raw):
            raise KeyReferenceError(
                f"bad percent-encoding in attribute {name} of {_excerpt(reference)}"
            )
        attrs.append((name.lower(), unquote_to_bytes(raw)))
    return attrs


def _check_text(reference: str, scheme: str) -> str:
    if len(reference) > MAX_REFERENCE_CHARS:
        raise KeyReferenceError(
            f"{scheme} reference is longer than {MAX_REFERENCE_CHARS} characters"
        )
    if any(not 0x21 <= ord(c) <= 0x7E for c in reference):
        raise KeyReferenceError(
            f"{scheme} reference {_excerpt(reference)} contains spaces, control or non-ASCII "
            "characters",
            hint="percent-encode them (a space is %20)",
        )
    return reference[len(scheme) + 1 :]


def _text(value: bytes, name: str, reference: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyReferenceError(f"attribute {name} is not UTF-8 in {_excerpt(reference)}") from None


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 PKCS#11 URI (no PIN value: see :class:`PinSource`)."""

    #: Path attributes with decoded text values (``id`` is kept as bytes in :attr:`id`).
    path: tuple[tuple[str, str], ...]
    id: bytes | None
    module_path: str | None
    module_name: str | None
    pin: PinSource
    #: Vendor-specific attributes (path or query); they parse, but a key is never selected by one.
    vendor: tuple[tuple[str, str], ...] = ()
    text: str = field(default="", repr=False)

    def get(self, name: str) -> str | None:
        """A path attribute's decoded value, or None."""
        return next((v for k, v in self.path if k == name), None)

    def display(self) -> str:
        """The URI as written, bounded and escaped, for messages and reports."""
        return _excerpt(self.text)[1:-1]

    @classmethod
    def parse(cls, reference: str) -> Pkcs11Uri:
        """Parse strictly: known attributes once each, valid percent-encoding, no ``pin-value``.

        Raises:
            KeyReferenceError: any deviation, with the (PIN-free) reference in the message.
        """
        if not reference.startswith("pkcs11:"):
            raise KeyReferenceError(f"{_excerpt(reference)} is not a pkcs11: URI")
        body = _check_text(reference, "pkcs11")
        path_part, _, query_part = body.partition("?")
        if "#" in body:
            raise KeyReferenceError(f"a pkcs11: URI has no fragment: {_excerpt(reference)}")
        path: list[tuple[str, str]] = []
        vendor: list[tuple[str, str]] = []
        key_id: bytes | None = None
        seen: set[str] = set()
        for name, value in _split_attrs(path_part, ";", "path", reference):
            if name in seen:
                raise KeyReferenceError(
                    f"path attribute {name} appears twice in {_excerpt(reference)}"
                )
            seen.add(name)
            if name == "id":
                key_id = value
                continue
            text = _text(value, name, reference)
            if name not in PKCS11_PATH_ATTRS:
                vendor.append((name, text))
                continue
            if name == "type" and text not in PKCS11_TYPES:
                raise KeyReferenceError(
                    f"type={text[:32]!r} in {_excerpt(reference)} is not one of "
                    + ", ".join(sorted(PKCS11_TYPES))
                )
            if name == "slot-id" and not re.fullmatch(r"[0-9]{1,20}", text):
                raise KeyReferenceError(
                    f"slot-id must be a decimal number in {_excerpt(reference)}"
                )
            path.append((name, text))
        query: dict[str, str] = {}
        for name, value in _split_attrs(query_part, "&", "query", reference):
            text = _text(value, name, reference)
            if name not in PKCS11_QUERY_ATTRS:
                vendor.append((name, text))
                continue
            if name in query:
                raise KeyReferenceError(
                    f"query attribute {name} appears twice in {_excerpt(reference)}"
                )
            query[name] = text
        if "pin-value" in query:
            raise KeyReferenceError(
                "the reference carries its PIN (pin-value): it would end up in shell history, "
                "process listings and logs",
                hint=f"use pin-source=file:/path (mode 0600) or set {PKCS11_PIN_ENV}",
            )
        if "module-path" in query and "module-name" in query:
            raise KeyReferenceError(
                f"give module-path or module-name, not both, in {_excerpt(reference)}"
            )
        module_path = query.get("module-path")
        if module_path is not None and not module_path.startswith("/"):
            raise KeyReferenceError(
                f"module-path must be an absolute path in {_excerpt(reference)}"
            )
        module_name = query.get("module-name")
        if module_name is not None and not re.fullmatch(r"[A-Za-z0-9._+-]{1,128}", module_name):
            raise KeyReferenceError(
                f"module-name must be a bare library name in {_excerpt(reference)}"
            )
        if "pin-source" in query:
            pin = _pin_source(query["pin-source"], reference)
        elif os.environ.get(PKCS11_PIN_ENV):
            pin = PinSource("env", PKCS11_PIN_ENV)
        else:
            pin = PinSource("none")
        return cls(tuple(path), key_id, module_path, module_name, pin, tuple(vendor), reference)


@dataclass(frozen=True)
class Tpm2Reference:
    """A TPM 2.0 key: a persistent ``handle`` or a TSS2 PRIVATE KEY ``file``."""

    handle: int | None
    file: str | None
    tcti: str
    pin: PinSource
    text: str = field(default="", repr=False)

    def display(self) -> str:
        """The reference as written, bounded and escaped, for messages and reports."""
        return _excerpt(self.text)[1:-1]

    @classmethod
    def parse(cls, reference: str) -> Tpm2Reference:
        """Parse ``tpm2:handle=0x81…`` or ``tpm2:file=/abs/path`` with optional query.

        Raises:
            KeyReferenceError: anything else.
        """
        if not reference.startswith("tpm2:"):
            raise KeyReferenceError(f"{_excerpt(reference)} is not a tpm2: reference")
        body = _check_text(reference, "tpm2")
        path_part, _, query_part = body.partition("?")
        attrs = _split_attrs(path_part, ";", "path", reference)
        if len(attrs) != 1 or attrs[0][0] not in ("handle", "file"):
            raise KeyReferenceError(
                f"{_excerpt(reference)} must name exactly one of handle=0x81… or file=/path",
                hint="e.g. tpm2:handle=0x81010002 or tpm2:file=/etc/edge-sdk/device.tss",
            )
        name, raw = attrs[0]
        value = _text(raw, name, reference)
        handle: int | None = None
        path: str | None = None
        if name == "handle":
            try:
                handle = int(value, 16) if value.lower().startswith("0x") else int(value)
            except ValueError:
                handle = -1
            if handle not in TPM2_PERSISTENT:
                raise KeyReferenceError(
                    f"handle {value[:24]!r} in {_excerpt(reference)} is not a persistent handle "
                    "(0x81000000–0x81FFFFFF)"
                )
        else:
            if not value.startswith("/"):
                raise KeyReferenceError(f"file= must be an absolute path in {_excerpt(reference)}")
            path = value
        query: dict[str, str] = {}
        for qname, qraw in _split_attrs(query_part, "&", "query", reference):
            if qname not in ("tcti", "pin-source") or qname in query:
                raise KeyReferenceError(
                    f"unknown or repeated attribute {qname} in {_excerpt(reference)}",
                    hint="a tpm2: reference takes tcti= and pin-source=",
                )
            query[qname] = _text(qraw, qname, reference)
        tcti = query.get("tcti") or next(
            (os.environ[e] for e in TCTI_ENVS if os.environ.get(e)), DEFAULT_TCTI
        )
        pin = (
            _pin_source(query["pin-source"], reference)
            if "pin-source" in query
            else PinSource("none")
        )
        return cls(handle, path, tcti, pin, reference)


KeyReference = Pkcs11Uri | Tpm2Reference


def parse_key_reference(reference: str) -> KeyReference:
    """Parse a ``pkcs11:`` or ``tpm2:`` reference.

    Raises:
        KeyReferenceError: malformed, or neither scheme.
    """
    if reference.startswith("pkcs11:"):
        return Pkcs11Uri.parse(reference)
    if reference.startswith("tpm2:"):
        return Tpm2Reference.parse(reference)
    raise KeyReferenceError(f"{_excerpt(reference)} is neither a pkcs11: URI nor a tpm2: reference")
