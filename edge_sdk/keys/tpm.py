"""Device keys in a TPM 2.0, through tpm2-pytss (the ``tpm`` extra).

Debian's tpm2-pkcs11 has no ``CKM_ECDH1_DERIVE``, so a TPM-held device key is used through the
TPM's own command, ``TPM2_ECDH_ZGen``: the TPM multiplies the sender's ephemeral point by the
private scalar that never leaves it and returns the shared point; its x coordinate is DHKEM's
DH output. A key is named by a ``tpm2:`` reference (:mod:`edge_sdk.keys.key_uri`):

* ``tpm2:handle=0x81010002`` — a persistent key (``tpm2_evictcontrol``), the fast form;
* ``tpm2:file=/etc/edge-sdk/device.tss`` — a TSS2 PRIVATE KEY file (tpm2-openssl / tpm2-tss-engine
  format): the private part is encrypted by this TPM's storage key, so the file is worthless on
  any other machine. It is loaded under the standard owner storage key, re-created each time.

As with PKCS#11 (:mod:`edge_sdk.keys.pkcs11`): one ESAPI context per operation (closed after it, so a
TPM that went away is noticed and no transient object or session slot leaks — swtpm and many
firmware TPMs have only three), one lock per process, the authorization value re-read from its
source for each command. A key is accepted only if it is an ECC P-256 key that is ``fixedTPM``
(cannot be duplicated out of this TPM), not ``restricted`` and has ``decrypt`` set (what
``ECDH_ZGen`` needs).

**Dictionary-attack lockout.** A key created with an authorization value is DA-protected: after
the TPM's ``maxTries`` wrong values (3 on swtpm) the TPM refuses *every* DA-protected key, the
right value included, until the lockout recovery time passes or the owner runs
``tpm2_dictionarylockout --clear-lockout``. That state is reported as
:class:`~edge_sdk.errors.TokenLockedError`. Keys without an authorization value are created
``noDA``, so a mistaken PIN can never lock them (or anything else) out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sdk.errors import (
    EdgeSDKError,
    HostDependencyError,
    KeyFileError,
    TokenError,
    TokenKeyNotFoundError,
    TokenKeyTypeError,
    TokenLockedError,
    TokenNotFoundError,
    TokenPinError,
    TokenRemovedError,
    install_hint,
)
from edge_sdk.files import ForkSafeLock, read_capped

from .key_types import KeyKind, PrivateKey, PublicKey
from .key_uri import Secret, Tpm2Reference
from .native_isolation import load_isolated

_LOCK = ForkSafeLock()
MAX_KEY_FILE_BYTES = 16 * 1024
_TCTI_LAYER = 0xA0000
_LAYER_MASK = 0xFF0000


def _import_tpm() -> Any:
    # The TSS C libraries print every TPM error response to stderr unless told otherwise; the
    # typed error raised below already says what failed.
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    # Before tpm2-pytss loads it: see edge_sdk.keys.native_isolation (TensorFlow's BoringSSL).
    load_isolated("libcrypto.so.3", "libtss2-esys.so.0")
    try:
        import tpm2_pytss
    except ImportError:
        raise HostDependencyError(
            "a tpm2: key needs the tpm2-pytss package, which is not installed",
            hint=install_hint("tpm") + " (it builds against libtss2-dev)",
        ) from None
    return tpm2_pytss


def _translate(exc: BaseException, doing: str, opened: bool, ref: Tpm2Reference) -> EdgeSDKError:
    """Map a TSS2 exception to a typed error."""
    rc = int(getattr(exc, "rc", 0))
    error = int(getattr(exc, "error", rc))
    text = str(exc)[:160]
    if rc & _LAYER_MASK == _TCTI_LAYER:
        if opened:
            return TokenRemovedError(
                f"{doing}: the TPM at {ref.tcti!r} went away since the key was opened ({text})",
                hint="is the TPM (or its resource manager) still running?",
            )
        return TokenNotFoundError(
            f"{doing}: cannot reach the TPM at {ref.tcti!r} ({text})",
            hint="check tcti= in the reference or $TPM2TOOLS_TCTI (default device:/dev/tpmrm0)",
        )
    if error == 0x921:  # TPM_RC_LOCKOUT
        return TokenLockedError(
            f"{doing}: the TPM is in dictionary-attack lockout (too many wrong authorization "
            "values); it refuses every DA-protected key until the lockout ends",
            hint="wait for the recovery time, or as the owner: tpm2_dictionarylockout --clear-lockout",
        )
    if error in (0x08E, 0x0A2):  # TPM_RC_AUTH_FAIL, TPM_RC_BAD_AUTH
        return TokenPinError(
            f"{doing}: the TPM rejected the key's authorization value from {ref.pin.describe()} "
            "(each wrong value counts towards the TPM's lockout)",
            hint="fix pin-source; do not retry blindly",
        )
    if error in (0x08B, 0x084, 0x09B):  # TPM_RC_HANDLE, TPM_RC_VALUE (no object), TPM_RC_INTEGRITY
        return TokenKeyNotFoundError(
            f"{doing}: the TPM holds no usable key at {ref.display()} ({text})"
        )
    if error in (0x082, 0x092, 0x0A6, 0x09C):  # ATTRIBUTES, SCHEME, CURVE, KEY
        return TokenKeyTypeError(f"{doing}: the TPM refused the operation for this key ({text})")
    return TokenError(f"{doing} failed: {text}")


def _tss_errors() -> tuple[type[BaseException], ...]:
    tpm2 = _import_tpm()
    return (tpm2.TSS2_Exception,)


class TpmKey:
    """The private half of a device key in a TPM 2.0 (see the module docstring)."""

    location = "tpm2"

    def __init__(self, ref: Tpm2Reference, kind: KeyKind | None) -> None:
        if kind == "signing":
            raise TokenKeyTypeError(
                f"{ref.display()}: TPM keys are used as device keys here, not for signing",
                hint="sign with a file key or a PKCS#11 HSM key",
            )
        self._ref = ref
        self._opened = False
        self._expected_id: str | None = None
        self.public: PublicKey | None = None
        self.attributes: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<TpmKey {self.display()}>"

    def display(self) -> str:
        return self._ref.display()

    def _auth(self) -> Secret | None:
        return self._ref.pin.read()

    @contextlib.contextmanager
    def _context(self, doing: str) -> Iterator[tuple[Any, Any]]:
        """An ESAPI context with the key loaded; everything is flushed and closed afterwards."""
        tpm2 = _import_tpm()
        errors = _tss_errors()
        with _LOCK:
            ectx = None
            handle = None
            transient = False
            try:
                ectx = tpm2.ESAPI(self._ref.tcti)
                auth = self._auth()
                if self._ref.handle is not None:
                    handle = ectx.tr_from_tpmpublic(self._ref.handle)
                else:
                    handle = self._load_file(ectx, auth, doing)
                    transient = True
                if auth is not None:
                    ectx.tr_set_auth(handle, auth.reveal())
                del auth
                yield ectx, handle
            except EdgeSDKError:
                raise
            except errors as exc:
                raise _translate(exc, doing, self._opened, self._ref) from None
            finally:
                if ectx is not None:
                    with contextlib.suppress(*errors):
                        if handle is not None:
                            (ectx.flush_context if transient else ectx.tr_close)(handle)
                    ectx.close()

    def _load_file(self, ectx: Any, auth: Secret | None, doing: str) -> Any:
        from tpm2_pytss.tsskey import TSSPrivKey

        assert self._ref.file is not None
        path = Path(self._ref.file)
        try:
            data = read_capped(path, MAX_KEY_FILE_BYTES)
        except FileNotFoundError:
            raise TokenKeyNotFoundError(f"{doing}: TPM key file {path} does not exist") from None
        except OSError as exc:
            raise KeyFileError(f"cannot read TPM key file {path}: {exc.strerror}") from None
        if len(data) > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"TPM key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
        try:
            blob = TSSPrivKey.from_pem(data)
        except Exception as exc:  # noqa: BLE001 - its ASN.1 parser raises anything on bad input
            raise KeyFileError(
                f"{path} is not a TSS2 PRIVATE KEY file ({type(exc).__name__})"
            ) from None
        if not blob.empty_auth and auth is None:
            raise TokenPinError(
                f"{doing}: TPM key file {path} needs an authorization value and none was given",
                hint="add ?pin-source=file:/path to the reference",
            )
        return blob.load(ectx, password=auth.reveal() if auth is not None else None)

    def _read_public(self, ectx: Any, handle: Any, doing: str) -> PublicKey:
        tpm2 = _import_tpm()
        from cryptography.hazmat.primitives.asymmetric import ec

        public, _, _ = ectx.read_public(handle)
        area = public.publicArea
        attrs = area.objectAttributes
        A = tpm2.TPMA_OBJECT
        if (
            area.type != tpm2.TPM2_ALG.ECC
            or area.parameters.eccDetail.curveID != tpm2.TPM2_ECC.NIST_P256
        ):
            raise TokenKeyTypeError(
                f"{doing}: {self._ref.display()} is not an ECC P-256 key (a device key must be)"
            )
        flags = {
            "fixed_tpm": bool(attrs & A.FIXEDTPM),
            "sensitive_data_origin": bool(attrs & A.SENSITIVEDATAORIGIN),
            "decrypt": bool(attrs & A.DECRYPT),
            "restricted": bool(attrs & A.RESTRICTED),
            "sign": bool(attrs & A.SIGN_ENCRYPT),
            "no_da": bool(attrs & A.NODA),
        }
        if not flags["fixed_tpm"]:
            raise TokenKeyTypeError(
                f"{doing}: {self._ref.display()} is not fixedTPM: it can be duplicated out of this TPM",
                hint="create the key with fixedtpm|fixedparent (see docs/KEYS.md)",
            )
        if not flags["decrypt"] or flags["restricted"]:
            raise TokenKeyTypeError(
                f"{doing}: {self._ref.display()} cannot do ECDH (needs decrypt, not restricted)"
            )
        x = int.from_bytes(bytes(area.unique.ecc.x), "big")
        y = int.from_bytes(bytes(area.unique.ecc.y), "big")
        try:
            component = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except ValueError:
            raise TokenKeyTypeError(f"{doing}: the TPM returned an invalid public point") from None
        self.attributes = {k: "yes" if v else "no" for k, v in flags.items()}
        return PublicKey.from_components([component], "device")

    def open(self) -> PublicKey:
        """Reach the TPM, load the key, check its type and attributes, remember its key id."""
        with self._context("opening the TPM key") as (ectx, handle):
            public = self._read_public(ectx, handle, "opening the TPM key")
        self._opened = True
        self._expected_id = public.key_id
        self.public = public
        return public

    def sign(self, message: bytes) -> bytes:
        raise TokenKeyTypeError(f"{self._ref.display()} is a device key; it does not sign")

    def dh(self, peer_public: bytes) -> bytes:
        tpm2 = _import_tpm()
        doing = "unwrapping with the TPM key"
        if len(peer_public) != 65 or peer_public[0] != 0x04:
            raise TokenError(f"{doing}: expected an uncompressed P-256 point")
        point = tpm2.TPM2B_ECC_POINT(tpm2.TPMS_ECC_POINT(x=peer_public[1:33], y=peer_public[33:65]))
        with self._context(doing) as (ectx, handle):
            public = self._read_public(ectx, handle, doing)
            if public.key_id != self._expected_id:
                raise TokenRemovedError(
                    f"{doing}: the key at {self._ref.display()} changed since it was opened"
                )
            # Keep the result object alive while reading it: a chained expression returned a
            # wrong byte with some tpm2-pytss versions (the C buffer was freed underneath).
            result = ectx.ecdh_zgen(handle, point)
            x = bytes(result.point.x)
            del result
        return x.rjust(32, b"\x00")

    def describe(self) -> dict[str, str]:
        where = (
            f"persistent handle {self._ref.handle:#010x}"
            if self._ref.handle is not None
            else f"TSS2 key file {self._ref.file}"
        )
        return {
            "location": "tpm2",
            "reference": self.display(),
            "key": where,
            "tcti": self._ref.tcti,
            "authorization": self._ref.pin.describe(),
            **self.attributes,
        }

    def close(self) -> None:
        """Nothing stays open between operations; kept for the :class:`HardwareKey` protocol."""


def open_tpm_key(ref: Tpm2Reference, *, kind: KeyKind | None = None) -> PrivateKey:
    """Open the TPM key a ``tpm2:`` reference names, as a device :class:`PrivateKey`.

    Raises:
        TokenError: its subclasses say what was wrong (TPM unreachable, lockout, wrong
            authorization, no key at that handle, wrong type or attributes).
        HostDependencyError: tpm2-pytss is not installed.
    """
    key = TpmKey(ref, kind)
    public = key.open()
    return PrivateKey(public, (), key)


@dataclass(frozen=True)
class GeneratedTpmKey:
    """A key made inside the TPM by :func:`generate_tpm_key`."""

    public: PublicKey
    public_file: Path
    where: str


def _templates(tpm2: Any, with_auth: bool) -> tuple[Any, Any]:
    A = tpm2.TPMA_OBJECT
    base = A.FIXEDTPM | A.FIXEDPARENT | A.SENSITIVEDATAORIGIN | A.USERWITHAUTH
    key = tpm2.TPM2B_PUBLIC.parse(
        "ecc256:ecdh", objectAttributes=base | A.DECRYPT | (0 if with_auth else A.NODA)
    )
    srk = tpm2.TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb", objectAttributes=base | A.RESTRICTED | A.DECRYPT | A.NODA
    )
    return key, srk


def generate_tpm_key(ref: Tpm2Reference, *, out: Path, overwrite: bool = False) -> GeneratedTpmKey:
    """Create a P-256 ECDH device key inside the TPM; write only ``OUT.pub`` (and the TSS2 key file).

    ``tpm2:handle=H``: the key is made persistent at ``H`` (which must be free).
    ``tpm2:file=PATH``: the TPM-wrapped key is written to ``PATH`` (which must not exist).
    With ``pin-source`` the key gets that authorization value (and DA protection); without, it
    is ``noDA``. If anything fails after the key exists, it is removed again.

    Raises:
        KeyFileError: ``OUT.pub`` or the key file exists, or cannot be written.
        TokenError: subclasses as for :func:`open_tpm_key` (and a taken handle).
    """
    from .key_types import write_key_file

    tpm2 = _import_tpm()
    errors = _tss_errors()
    pub_path = out.with_name(out.name + ".pub")
    for path in (pub_path, Path(ref.file) if ref.file else None):
        if path is not None and path.exists() and not overwrite:
            raise KeyFileError(f"{path} already exists", hint="choose another path or pass --force")
    auth = ref.pin.read()
    key_template, srk_template = _templates(tpm2, auth is not None)
    sensitive = tpm2.TPM2B_SENSITIVE_CREATE()
    if auth is not None:
        sensitive.sensitive.userAuth = auth.reveal()
    del auth
    doing = "generating the TPM key"
    with _LOCK:
        ectx = None
        try:
            ectx = tpm2.ESAPI(ref.tcti)
            if ref.handle is not None:
                with contextlib.suppress(*errors):
                    taken = ectx.tr_from_tpmpublic(ref.handle)
                    ectx.tr_close(taken)
                    raise KeyFileError(
                        f"TPM persistent handle {ref.handle:#010x} is already in use",
                        hint=f"choose another handle, or as the owner: tpm2_evictcontrol -C o -c {ref.handle:#010x}",
                    )
                srk, _, _, _, _ = ectx.create_primary(
                    tpm2.TPM2B_SENSITIVE_CREATE(), srk_template, tpm2.ESYS_TR.OWNER
                )
                try:
                    private, public, _, _, _ = ectx.create(srk, sensitive, key_template)
                    loaded = ectx.load(srk, private, public)
                finally:
                    ectx.flush_context(srk)
                try:
                    persistent = ectx.evict_control(tpm2.ESYS_TR.OWNER, loaded, ref.handle)
                finally:
                    ectx.flush_context(loaded)
                ectx.tr_close(persistent)
                where = f"persistent handle {ref.handle:#010x}"
            else:
                from tpm2_pytss.tsskey import TSSPrivKey

                assert ref.file is not None
                blob = TSSPrivKey.create(
                    ectx, key_template.publicArea,
                    password=bytes(sensitive.sensitive.userAuth) or None,
                )  # fmt: skip
                write_key_file(Path(ref.file), blob.to_pem(), 0o600, overwrite=overwrite)
                where = f"TSS2 key file {ref.file}"
        except EdgeSDKError:
            raise
        except errors as exc:
            raise _translate(exc, doing, False, ref) from None
        finally:
            if ectx is not None:
                ectx.close()
    try:
        key = open_tpm_key(ref, kind="device")
        write_key_file(pub_path, key.public.to_pem(), 0o644, overwrite=overwrite)
    except BaseException:
        _remove_generated(ref)
        raise
    return GeneratedTpmKey(key.public, pub_path, where)


def _remove_generated(ref: Tpm2Reference) -> None:
    """Undo :func:`generate_tpm_key` (best effort: the first error is what the caller sees)."""
    if ref.file is not None:
        Path(ref.file).unlink(missing_ok=True)
        return
    tpm2 = _import_tpm()
    with _LOCK, contextlib.suppress(*_tss_errors()), tpm2.ESAPI(ref.tcti) as ectx:
        handle = ectx.tr_from_tpmpublic(ref.handle)
        ectx.evict_control(tpm2.ESYS_TR.OWNER, handle, ref.handle)
