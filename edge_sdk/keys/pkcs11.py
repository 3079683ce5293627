"""Keys in PKCS#11 tokens and HSMs, through python-pkcs11 (the ``hsm`` extra).

Why python-pkcs11 and not PyKCS11: it ships type stubs (``mypy --strict`` checks our calls), maps
every ``CKR_*`` return value to its own exception class (so wrong PIN, removed token and missing
object are told apart without parsing messages), and wraps keys as objects with ``sign`` and
``derive_key``. Both cannot share a process (each calls ``C_Initialize`` on the same module).

How the token is used, and why:

* **A session per operation.** Each ``sign`` or ``dh`` finds the token, opens a session, logs in,
  finds the key, runs one mechanism and closes the session (which logs out). No handle outlives
  a call, so a token that was pulled and put back works again, a swapped token or key is noticed
  (the public key is compared with the one seen at open), and nothing needs closing.
* **One lock per process around every call into a module.** python-pkcs11 initializes modules
  with ``C_Initialize(NULL)``, which per PKCS#11 §5.4 promises the module that the application
  never calls it from two threads at once; login state is also shared by all sessions of a
  process. Serializing is what that promise requires.
* **Fork.** PKCS#11 modules must be re-initialized in a child process; the module is
  re-initialized the first time a forked child uses it.
* **The PIN** is read from its source for each login, handed to ``C_Login`` and dropped. It is
  never stored on an object, and messages only ever say *where* it came from.
* **Keys must stay in the token.** A private key that is not ``CKA_SENSITIVE`` or is
  ``CKA_EXTRACTABLE`` is refused (:class:`~edge_sdk.errors.TokenKeyTypeError`): its value could be
  read out, which is what putting it in a token was meant to prevent. A device key must allow
  ``CKA_DERIVE``, a signing key ``CKA_SIGN``.
* **Mechanisms:** P-256 keys sign with ``CKM_ECDSA`` over a SHA-256 computed here (SoftHSM has no
  ``CKM_ECDSA_SHA256``) and the raw ``r‖s`` becomes the DER signature the format specifies; every
  signature is verified with the public key before it is returned. Ed25519 signs with
  ``CKM_EDDSA``. The DH step is ``CKM_ECDH1_DERIVE`` with ``CKD_NULL``: the derived secret is a
  session object, read and destroyed at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sdk.errors import (
    EdgeSDKError,
    HostDependencyError,
    KeyFileError,
    KeyReferenceError,
    TokenError,
    TokenKeyNotFoundError,
    TokenKeyTypeError,
    TokenLockedError,
    TokenNotFoundError,
    TokenPinError,
    TokenRemovedError,
    install_hint,
)
from edge_sdk.files import ForkSafeLock

from .key_types import KeyKind, PrivateKey, PublicKey
from .key_uri import PKCS11_MODULE_ENV, PKCS11_PIN_ENV, Pkcs11Uri, Secret
from .native_isolation import load_isolated

#: DER of the EC_PARAMS values this module accepts (RFC 5480 OIDs, or PKCS#11 3.0 curve names).
_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), bytes.fromhex("130c") + b"edwards25519")

#: Where ``module-name=NAME`` is looked for (p11-kit's directories, then the library dirs).
_TRIPLET = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(
    platform.machine(), "x86_64-linux-gnu"
)
MODULE_DIRS = (
    f"/usr/lib/{_TRIPLET}/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/local/lib/pkcs11",
    f"/usr/lib/{_TRIPLET}",
    "/usr/lib",
)

_LOCK = ForkSafeLock(reentrant=True)
_LIBRARIES: dict[str, tuple[int, Any]] = {}


def _import_pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise HostDependencyError(
            "a pkcs11: key needs the python-pkcs11 package, which is not installed",
            hint=install_hint("hsm"),
        ) from None
    return pkcs11


def _label(value: Any) -> str:
    """A label or description read from a token, bounded and escaped for messages."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = text.rstrip(" \x00")
    return repr(text[:64] + ("…" if len(text) > 64 else ""))


def resolve_module(uri: Pkcs11Uri, search: tuple[str, ...] = MODULE_DIRS) -> str:
    """The PKCS#11 module to load: ``module-path``, ``module-name``, or ``$EDGE_SDK_PKCS11_MODULE``.

    Raises:
        KeyReferenceError: no module named anywhere.
        TokenNotFoundError: the named module does not exist.
    """
    if uri.module_path:
        path = uri.module_path
    elif uri.module_name:
        name = uri.module_name
        candidates = [Path(d) / f for d in search for f in (name, f"{name}.so", f"lib{name}.so")]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise TokenNotFoundError(
                f"PKCS#11 module {name!r} not found in {', '.join(search)}",
                hint="install the token's PKCS#11 module, or give module-path=/abs/path.so",
            )
        path = str(found)
    elif os.environ.get(PKCS11_MODULE_ENV):
        path = os.environ[PKCS11_MODULE_ENV]
    else:
        raise KeyReferenceError(
            f"{uri.display()} names no PKCS#11 module",
            hint=f"add ?module-path=/path/to/module.so, or set {PKCS11_MODULE_ENV}",
        )
    if not os.path.isfile(path):
        raise TokenNotFoundError(
            f"PKCS#11 module {path} does not exist",
            hint="install the token's PKCS#11 module (e.g. apt-get install softhsm2)",
        )
    return path


def _library(path: str) -> Any:
    """The initialized module, re-initialized once in a forked child. Call with ``_LOCK`` held."""
    pkcs11 = _import_pkcs11()
    entry = _LIBRARIES.get(path)
    if entry is not None and entry[0] == os.getpid():
        return entry[1]
    try:
        if entry is not None:
            lib = entry[1]
            lib.reinitialize()  # a child inherits the parent's state; PKCS#11 wants a fresh init
        else:
            # Before python-pkcs11 dlopens it: see edge_sdk.keys.native_isolation (TensorFlow).
            load_isolated("libcrypto.so.3", path)
            lib = pkcs11.lib(path)
    except pkcs11.PKCS11Error as exc:
        raise TokenNotFoundError(
            f"cannot load PKCS#11 module {path}: {type(exc).__name__} {str(exc)[:160]}"
        ) from None
    _LIBRARIES[path] = (os.getpid(), lib)
    return lib


def _translate(exc: Exception, doing: str, opened: bool, pin_from: str) -> EdgeSDKError:
    """Map a python-pkcs11 exception to a typed error (never carrying the PIN)."""
    name = type(exc).__name__
    if name in ("PinIncorrect", "PinInvalid", "PinLenRange"):
        return TokenPinError(
            f"{doing}: the token rejected the PIN from {pin_from} ({name})",
            hint="check the PIN; repeated wrong PINs lock most tokens",
        )
    if name == "PinExpired":
        return TokenPinError(f"{doing}: the token's user PIN has expired", hint="change it first")
    if name in ("UserNotLoggedIn", "UserPinNotInitialized"):
        return TokenPinError(
            f"{doing}: the token needs a PIN and none was given ({name})",
            hint=f"add pin-source=file:/path to the URI or set {PKCS11_PIN_ENV}",
        )
    if name == "PinLocked":
        return TokenLockedError(
            f"{doing}: the token's user PIN is locked",
            hint="unlock it with the security officer PIN (e.g. pkcs11-tool --init-pin --login-type so)",
        )
    if name in (
        "TokenNotPresent", "DeviceRemoved", "SessionHandleInvalid", "SessionClosed",
        "ObjectHandleInvalid", "KeyHandleInvalid", "TokenNotRecognised", "DeviceError",
        "GeneralError", "NoSuchToken", "SlotIDInvalid", "DeviceMemory",
    ):  # fmt: skip
        if opened:
            return TokenRemovedError(
                f"{doing}: the token went away since the key was opened ({name})",
                hint="reinsert the token (or restart its service) and retry",
            )
        return TokenNotFoundError(f"{doing}: the token is not available ({name})")
    if name in (
        "MechanismInvalid", "MechanismParamInvalid", "KeyTypeInconsistent",
        "KeyFunctionNotPermitted", "FunctionNotSupported", "KeySizeRange",
    ):  # fmt: skip
        return TokenKeyTypeError(f"{doing}: the token refused the operation for this key ({name})")
    return TokenError(f"{doing} failed: {name} {str(exc)[:120]}")


@dataclass(frozen=True)
class _Found:
    """What one session found: the token's label and the key's objects and attributes."""

    token_label: str
    private: Any
    public_key: PublicKey
    attributes: dict[str, str]


class Pkcs11Key:
    """The private half of a key in a PKCS#11 token (see the module docstring for how it is used).

    Built by :func:`open_pkcs11_key`; never printed with anything secret (there is nothing secret
    on it: the PIN is re-read from its source for each operation).
    """

    location = "pkcs11"

    def __init__(self, uri: Pkcs11Uri, module: str, kind: KeyKind | None) -> None:
        self._uri = uri
        self._module = module
        self._kind = kind
        self._expected_id: str | None = None
        self._opened = False
        self.public: PublicKey | None = None
        self.attributes: dict[str, str] = {}
        self.token_label = ""

    def __repr__(self) -> str:
        return f"<Pkcs11Key {self.display()}>"

    def display(self) -> str:
        return self._uri.display()

    # -- token plumbing ---------------------------------------------------------------------------

    def _find_token(self, lib: Any) -> tuple[Any, Any]:
        uri = self._uri
        wanted_slot = uri.get("slot-id")
        for name, value, actual in (
            ("library-manufacturer", uri.get("library-manufacturer"), lib.manufacturer_id),
            ("library-description", uri.get("library-description"), lib.library_description),
        ):
            if value is not None and value != actual.rstrip():
                raise TokenNotFoundError(
                    f"module {self._module} is not the one the URI names ({name} is {_label(actual)})"
                )
        matches = []
        for slot in lib.get_slots(token_present=True):
            token = slot.get_token()
            checks = (
                ("slot-id", str(slot.slot_id)),
                ("slot-description", slot.slot_description.rstrip()),
                ("slot-manufacturer", slot.manufacturer_id.rstrip()),
                ("token", token.label.rstrip()),
                ("manufacturer", token.manufacturer_id.rstrip()),
                ("model", token.model.rstrip()),
                ("serial", token.serial.decode("ascii", "replace").rstrip()),
            )
            if all(uri.get(k) is None or uri.get(k) == v for k, v in checks):
                matches.append((slot, token))
        if wanted_slot is None and len(matches) > 1:
            labels = ", ".join(_label(t.label) for _, t in matches[:8])
            raise KeyReferenceError(
                f"{uri.display()} matches {len(matches)} tokens ({labels})",
                hint="add token=LABEL or serial=… to the URI",
            )
        if not matches:
            error = TokenRemovedError if self._opened else TokenNotFoundError
            raise error(
                f"no token matching {uri.display()} is present in {self._module}",
                hint="check token= (softhsm2-util --show-slots, p11tool --list-tokens)",
            )
        return matches[0]

    @contextlib.contextmanager
    def _session(self, doing: str, *, login: bool = True, rw: bool = False) -> Iterator[Any]:
        pkcs11 = _import_pkcs11()
        pin_from = self._uri.pin.describe()
        with _LOCK:
            with self._typed(pkcs11, doing, pin_from):
                lib = _library(self._module)
                _slot, token = self._find_token(lib)
                pin: Secret | None = self._uri.pin.read() if login else None
                needs_login = bool(token.flags & pkcs11.TokenFlag.LOGIN_REQUIRED)
                if login and pin is None and needs_login:
                    raise TokenPinError(
                        f"{doing}: token {_label(token.label)} needs a PIN and none was given",
                        hint=f"add pin-source=file:/path to the URI or set {PKCS11_PIN_ENV}",
                    )
                session = token.open(rw=rw, user_pin=pin.reveal() if pin is not None else None)
                del pin
            try:
                with self._typed(pkcs11, doing, pin_from):
                    self.token_label = token.label.rstrip()
                    yield session
            finally:
                with contextlib.suppress(pkcs11.PKCS11Error):
                    session.close()

    @contextlib.contextmanager
    def _typed(self, pkcs11: Any, doing: str, pin_from: str) -> Iterator[None]:
        """Token errors as typed errors; a token that went away is looked up afresh next time."""
        try:
            yield
        except (TokenRemovedError, TokenNotFoundError):
            self._reset()
            raise
        except EdgeSDKError:
            raise
        except pkcs11.PKCS11Error as exc:
            raise self._failed(exc, doing, pin_from) from None

    def _failed(self, exc: Exception, doing: str, pin_from: str) -> EdgeSDKError:
        error = _translate(exc, doing, self._opened, pin_from)
        if isinstance(error, (TokenRemovedError, TokenNotFoundError)):
            self._reset()
        return error

    def _reset(self) -> None:
        """After a token vanished, re-initialize the module at next use so it rescans its slots
        (SoftHSM, for one, keeps a stale slot until then). Safe: no session outlives a call."""
        entry = _LIBRARIES.get(self._module)
        if entry is not None:
            _LIBRARIES[self._module] = (-1, entry[1])

    def _find(self, session: Any, doing: str, *, private: bool) -> _Found:
        pkcs11 = _import_pkcs11()
        A, OC = pkcs11.Attribute, pkcs11.ObjectClass
        uri = self._uri
        if uri.vendor:
            raise KeyReferenceError(
                f"{uri.display()} has vendor attribute(s) "
                f"{', '.join(k for k, _ in uri.vendor)} this SDK cannot match on"
            )
        kind_of = uri.get("type")
        if kind_of not in (None, "private", "public"):
            raise KeyReferenceError(f"{uri.display()}: type={kind_of} is not a key pair object")
        if private and kind_of == "public":
            raise KeyReferenceError(
                f"{uri.display()} names a public key (type=public); a private key is needed here",
                hint="drop type=public or use type=private",
            )
        attrs: dict[Any, Any] = {}
        if uri.get("object") is not None:
            attrs[A.LABEL] = uri.get("object")
        if uri.id is not None:
            attrs[A.ID] = uri.id
        if not attrs:
            raise KeyReferenceError(
                f"{uri.display()} names no object", hint="add object=LABEL and/or id=%01…"
            )
        priv = None
        if private:
            found = list(session.get_objects({**attrs, A.CLASS: OC.PRIVATE_KEY}))
            if len(found) != 1:
                raise TokenKeyNotFoundError(
                    f"{doing}: {len(found)} private keys match {uri.display()} in token "
                    f"{_label(session.token.label)}",
                    hint="check object=/id= (p11tool --list-privkeys --login, pkcs11-tool -O)"
                    if not found
                    else "add id=… to pick one",
                )
            priv = found[0]
            attrs[A.ID] = priv[A.ID]
        publics = list(session.get_objects({**attrs, A.CLASS: OC.PUBLIC_KEY}))
        if len(publics) != 1:
            raise TokenKeyNotFoundError(
                f"{doing}: {len(publics)} public keys match {uri.display()} in token "
                f"{_label(session.token.label)} (the public half is needed for the key id)",
                hint="store the public key object beside the private key, with the same id",
            )
        public_key = self._public_key(publics[0], doing)
        details = {
            "token": session.token.label.rstrip(),
            "object": str(publics[0][A.LABEL]),
            "id": bytes(publics[0][A.ID]).hex(),
        }
        if priv is not None:
            details.update(self._check_private(priv, public_key, doing))
        return _Found(session.token.label.rstrip(), priv, public_key, details)

    def _public_key(self, obj: Any, doing: str) -> PublicKey:
        pkcs11 = _import_pkcs11()
        from cryptography.hazmat.primitives.asymmetric import ed25519
        from cryptography.hazmat.primitives.serialization import load_der_public_key

        A, KT = pkcs11.Attribute, pkcs11.KeyType
        key_type = obj[A.KEY_TYPE]
        params = bytes(obj[A.EC_PARAMS]) if key_type in (KT.EC, KT.EC_EDWARDS) else b""
        if key_type == KT.EC and params == _P256_PARAMS:
            from pkcs11.util.ec import encode_ec_public_key

            component: Any = load_der_public_key(encode_ec_public_key(obj))
            kind: KeyKind | None = self._kind or self._usage_of(obj)
        elif key_type == KT.EC_EDWARDS and params in _ED25519_PARAMS:
            point = bytes(obj[A.EC_POINT])
            # CKA_EC_POINT is a DER OCTET STRING (04 20 …) or, in some tokens, the raw 32 bytes.
            raw = point[2:] if len(point) == 34 and point[:2] == b"\x04\x20" else point
            component = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            kind = "signing"
        else:
            curve = params.hex() if params else "-"
            raise TokenKeyTypeError(
                f"{doing}: {self._uri.display()} is a {getattr(key_type, 'name', key_type)} key "
                f"(EC_PARAMS {curve[:40]}); supported: P-256 (signing or device), Ed25519 (signing)",
            )
        public = PublicKey.from_components([component], kind)
        if self._kind is not None and public.kind != self._kind:
            raise TokenKeyTypeError(
                f"{doing}: {self._uri.display()} is a {public.kind} key ({public.alg}), "
                f"but a {self._kind} key is needed here"
            )
        return public

    @staticmethod
    def _usage_of(public_obj: Any) -> KeyKind:
        """A P-256 key's kind when the caller did not say: a derive-only key is a device key."""
        pkcs11 = _import_pkcs11()
        A = pkcs11.Attribute
        flags = {}
        for attr in (A.DERIVE, A.VERIFY):
            try:
                flags[attr] = bool(public_obj[attr])
            except pkcs11.PKCS11Error:
                flags[attr] = False
        return "device" if flags[A.DERIVE] and not flags[A.VERIFY] else "signing"

    def _check_private(self, priv: Any, public: PublicKey, doing: str) -> dict[str, str]:
        pkcs11 = _import_pkcs11()
        A = pkcs11.Attribute
        values = {}
        for name, attr in (
            ("sensitive", A.SENSITIVE), ("extractable", A.EXTRACTABLE),
            ("always_sensitive", A.ALWAYS_SENSITIVE), ("never_extractable", A.NEVER_EXTRACTABLE),
            ("local", A.LOCAL), ("sign", A.SIGN), ("derive", A.DERIVE),
        ):  # fmt: skip
            try:
                values[name] = bool(priv[attr])
            except pkcs11.PKCS11Error:
                values[name] = False
        if not values["sensitive"] or values["extractable"]:
            raise TokenKeyTypeError(
                f"{doing}: private key {self._uri.display()} can leave the token "
                f"(CKA_SENSITIVE={values['sensitive']}, CKA_EXTRACTABLE={values['extractable']})",
                hint="generate a new key inside the token: edge-sdk keys generate --pkcs11 URI",
            )
        usage = "derive" if public.kind == "device" else "sign"
        if not values[usage]:
            raise TokenKeyTypeError(
                f"{doing}: private key {self._uri.display()} does not allow CKA_{usage.upper()}, "
                f"which a {public.kind} key needs"
            )
        return {k: "yes" if v else "no" for k, v in values.items()}

    # -- open, sign, dh ---------------------------------------------------------------------------

    def open(self, *, public_only: bool) -> PublicKey:
        """Find the token and the key, check it, and remember its key id."""
        has_pin = self._uri.pin.kind != "none"
        login = not public_only or has_pin
        with self._session("opening the key", login=login) as session:
            found = self._find(session, "opening the key", private=login)
        self._opened = True
        self._expected_id = found.public_key.key_id
        self.public = found.public_key
        self.attributes = found.attributes
        return found.public_key

    @contextlib.contextmanager
    def _operate(self, doing: str) -> Iterator[tuple[Any, _Found]]:
        with self._session(doing) as session:
            found = self._find(session, doing, private=True)
            if found.public_key.key_id != self._expected_id:
                raise TokenRemovedError(
                    f"{doing}: the key at {self._uri.display()} changed since it was opened "
                    f"(key id {str(self._expected_id)[:16]}, now {found.public_key.key_id[:16]})"
                )
            yield session, found

    def sign(self, message: bytes) -> bytes:
        pkcs11 = _import_pkcs11()
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        with self._operate("signing with the token key") as (_, found):
            if found.public_key.alg == "ecdsa-p256":
                raw = found.private.sign(
                    hashlib.sha256(message).digest(), mechanism=pkcs11.Mechanism.ECDSA
                )
                if len(raw) != 64:
                    raise TokenError(f"the token returned a {len(raw)}-byte ECDSA signature")
                signature = encode_dss_signature(
                    int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
                )
            else:
                signature = bytes(found.private.sign(message, mechanism=pkcs11.Mechanism.EDDSA))
        # A token fault must not put a bad signature into a bundle.
        if not found.public_key.verify(message, signature):
            raise TokenError("the token produced a signature that does not verify")
        return signature

    def dh(self, peer_public: bytes) -> bytes:
        pkcs11 = _import_pkcs11()
        A = pkcs11.Attribute
        with self._operate("unwrapping with the token key") as (_, found):
            secret = found.private.derive_key(
                pkcs11.KeyType.GENERIC_SECRET,
                256,
                mechanism=pkcs11.Mechanism.ECDH1_DERIVE,
                mechanism_param=(pkcs11.KDF.NULL, None, peer_public),
                template={A.SENSITIVE: False, A.EXTRACTABLE: True, A.TOKEN: False},
            )
            try:
                value = bytes(secret[A.VALUE])
            finally:
                secret.destroy()
        return value

    def describe(self) -> dict[str, str]:
        return {
            "location": "pkcs11",
            "reference": self.display(),
            "module": self._module,
            "pin": self._uri.pin.describe(),
            **self.attributes,
        }

    def close(self) -> None:
        """Nothing stays open between operations; kept for the :class:`HardwareKey` protocol."""


def open_pkcs11_key(
    uri: Pkcs11Uri, *, kind: KeyKind | None = None, public_only: bool = False
) -> PrivateKey:
    """Open the key a PKCS#11 URI names, as a :class:`~edge_sdk.keys.key_files.PrivateKey`.

    Logs in (unless ``public_only`` and no PIN is configured), finds exactly one private key and
    its public key, checks curve, usage and that the key cannot leave the token.

    Raises:
        TokenError: its subclasses say what was wrong (no token, PIN, no key, wrong type…).
        KeyReferenceError: the URI is incomplete (no module, no object, ambiguous).
        HostDependencyError: python-pkcs11 is not installed.
    """
    key = Pkcs11Key(uri, resolve_module(uri), kind)
    public = key.open(public_only=public_only)
    return PrivateKey(public, (), key)


@dataclass(frozen=True)
class GeneratedKey:
    """A key made inside a token by :func:`generate_pkcs11_key`."""

    public: PublicKey
    public_file: Path
    token: str
    object: str
    id: str
    details: dict[str, str] = field(default_factory=dict)


def generate_pkcs11_key(
    uri: Pkcs11Uri, *, kind: KeyKind, alg: str | None, out: Path, overwrite: bool = False
) -> GeneratedKey:
    """Generate a key pair inside the token (sensitive, never extractable); write only ``OUT.pub``.

    The URI's ``object=`` becomes the label; ``id=`` is used when given, else 16 random bytes.
    Nothing is left half-done: an existing object with that label or id, or an existing
    ``OUT.pub``, is refused before anything is generated, and the new objects are destroyed if
    the public key file cannot be written.

    Raises:
        KeyReferenceError: no object= in the URI, or an unsupported algorithm for the token.
        TokenError: subclasses as for :func:`open_pkcs11_key`.
        KeyFileError: ``OUT.pub`` exists (without ``overwrite``) or cannot be written.
    """
    from .key_types import write_key_file

    pkcs11 = _import_pkcs11()
    A, KT, M = pkcs11.Attribute, pkcs11.KeyType, pkcs11.Mechanism
    label = uri.get("object")
    if not label:
        raise KeyReferenceError(
            f"{uri.display()} has no object=LABEL to give the new key",
            hint="e.g. pkcs11:token=edge;object=device?module-path=…",
        )
    if uri.get("type") not in (None, "private"):
        raise KeyReferenceError(
            f"{uri.display()}: a generated key pair is addressed as type=private"
        )
    alg = alg or ("p256" if kind == "device" else "ecdsa-p256")
    supported = {"device": ("p256",), "signing": ("ecdsa-p256", "ed25519")}[kind]
    if alg not in supported:
        raise KeyReferenceError(
            f"a {kind} key in a PKCS#11 token can be {', '.join(supported)}, not {alg!r}",
            hint="X25519 and ML-KEM/ML-DSA keys are not generated in tokens by this SDK",
        )
    pub_path = out.with_name(out.name + ".pub")
    if pub_path.exists() and not overwrite:
        raise KeyFileError(
            f"{pub_path} already exists", hint="choose another --out or pass --force"
        )
    key_id = uri.id if uri.id is not None else secrets.token_bytes(16)
    key = Pkcs11Key(uri, resolve_module(uri), kind)
    usage = A.DERIVE if kind == "device" else A.SIGN
    private_template = {
        A.TOKEN: True, A.PRIVATE: True, A.SENSITIVE: True, A.EXTRACTABLE: False,
        A.SIGN: usage == A.SIGN, A.DERIVE: usage == A.DERIVE, A.DECRYPT: False,
        A.UNWRAP: False,
    }  # fmt: skip
    public_template = {
        A.TOKEN: True, A.PRIVATE: False, A.VERIFY: usage == A.SIGN,
        A.DERIVE: usage == A.DERIVE, A.ENCRYPT: False, A.WRAP: False,
    }  # fmt: skip
    with key._session("generating the key", rw=True) as session:
        for attrs in ({A.LABEL: label}, {A.ID: key_id}):
            existing = list(session.get_objects(attrs))
            if existing:
                raise KeyFileError(
                    f"token {_label(session.token.label)} already holds "
                    f"{len(existing)} object(s) with that {'label' if A.LABEL in attrs else 'id'}",
                    hint="choose another object= (or id=), or delete the old key first",
                )
        mechanisms = session.token.slot.get_mechanisms()
        if alg == "ed25519":
            if M.EC_EDWARDS_KEY_PAIR_GEN not in mechanisms:
                raise TokenKeyTypeError("this token cannot generate Ed25519 keys; use ecdsa-p256")
            params = session.create_domain_parameters(
                KT.EC_EDWARDS, {A.EC_PARAMS: _ED25519_PARAMS[0]}, local=True
            )
            mechanism = M.EC_EDWARDS_KEY_PAIR_GEN
        else:
            params = session.create_domain_parameters(
                KT.EC, {A.EC_PARAMS: _P256_PARAMS}, local=True
            )
            mechanism = M.EC_KEY_PAIR_GEN
        pub, priv = params.generate_keypair(
            id=key_id, label=label, store=True, mechanism=mechanism,
            public_template=public_template, private_template=private_template,
        )  # fmt: skip
        try:
            found = key._find(session, "checking the new key", private=True)
            write_key_file(pub_path, found.public_key.to_pem(), 0o644, overwrite=overwrite)
        except BaseException:
            for obj in (priv, pub):
                with contextlib.suppress(pkcs11.PKCS11Error):
                    obj.destroy()
            raise
    return GeneratedKey(
        found.public_key, pub_path, found.token_label, label, key_id.hex(), found.attributes
    )
