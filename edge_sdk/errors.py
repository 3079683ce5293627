"""The one exception tree of edge-sdk.

Every failure a user, a bad file or an attacker can cause is an :class:`EdgeSDKError`
subclass. Errors are grouped by *cause* so a caller can tell "this data is hostile"
(:class:`VerificationError`) from "this file is not what I expected" (:class:`BundleFormatError`)
from "the network is flaky" (:class:`TransportError`) with one ``except``.

Library code raises; only the CLI prints and exits, using :attr:`EdgeSDKError.exit_code`.
The exit codes are part of the public contract and are listed in the README.
"""

from __future__ import annotations

import re
import reprlib
import unicodedata
from typing import TypeVar

from edge_sdk.files import NotARegularFile

#: The longest message (and hint) an error carries. Messages go to terminals, JSON output and
#: the device's audit log; a value copied from a hostile file must not make any of them large.
MAX_MESSAGE_CHARS = 1000

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2
# What is escaped, by Unicode category: controls (Cc: C0, C1, DEL), format characters (Cf:
# bidirectional overrides and isolates, U+061C, zero-width spaces and joiners, U+FEFF, tag
# characters — they reorder or hide what a reader sees), private use (Co), lone surrogates (Cs:
# undecodable bytes in a file name), unassigned code points (Cn: a newer terminal may give them a
# meaning) and the line/paragraph separators (Zl, Zp: a faked new line in a log). Nothing from a
# file may move the cursor, start an escape sequence or show other text than it holds.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})
# Printable characters that show nothing or draw over their neighbour, escaped too: the Hangul
# fillers and the braille blank (a key id padded with them looks like another), the combining
# grapheme joiner, Khmer's inherent vowels, variation selectors, and the combining overlays
# (strokes and slashes through the character before them).
_INVISIBLE = re.compile(
    "[\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\ufe00-\ufe0f"
    "\U000e0100-\U000e01ef\u0334-\u0338\u20d2\u20d3\u20d8-\u20da\u20e5\u20e6"
    "\u20ea\u20eb]"
)


def _escape_char(char: str) -> str:
    if _INVISIBLE.match(char) is None and (
        char.isprintable() or unicodedata.category(char) not in _ESCAPED_CATEGORIES
    ):
        return char  # printable, or a space separator (Zs) other than U+0020
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def escape_text(text: str) -> str:
    """``text`` with control and invisible format characters written as escapes (safe for
    terminals and logs)."""
    if text.isprintable() and _INVISIBLE.search(text) is None:  # the common case, in C
        return text
    return "".join(map(_escape_char, text))


def excerpt(value: object, limit: int = 80) -> str:
    """A bounded, escaped, quoted rendering of a value that came from untrusted input.

    Strings are cut to ``limit`` characters and marked when cut; other values are rendered by a
    :class:`reprlib.Repr` with small limits, so even a deeply nested or huge value costs little.
    """
    if isinstance(value, str):
        # repr() escapes every non-printable character (C0, C1, DEL, line separators).
        shown = repr(value[:limit])
        return shown + (f"… ({len(value):,} characters, cut)" if len(value) > limit else "")
    shown = escape_text(_REPR.repr(value))
    return shown if len(shown) <= limit else shown[:limit] + "… (cut)"


def install_hint(extra: str) -> str:
    """How to add an optional part of edge-sdk. Never ``pip install edge-sdk``: that PyPI name
    belongs to an unrelated project; ours installs from its wheel (or a checkout)."""
    return (
        f'install edge-sdk with its "{extra}" extra: pip install '
        f'"/path/to/edgepkg-VERSION-py3-none-any.whl[{extra}]" (or ".[{extra}]" in a checkout; '
        "README: Install)"
    )


_E = TypeVar("_E", bound="EdgeSDKError")

#: What to do about a path that names a FIFO, a device, a socket or a directory.
NOT_A_FILE_HINT = (
    "name the file itself: a FIFO, a device such as /dev/zero, or a socket is never read from"
)


def unreadable_file(
    error: type[_E], what: str, path: object, exc: OSError, *, hint: str | None = None
) -> _E:
    """The typed error for a user-given file that could not be opened or read.

    ``{what} {path} does not exist``; ``{what} {path} is a FIFO, not a regular file`` (what
    :func:`edge_sdk.files.open_regular` found, with ``hint`` or :data:`NOT_A_FILE_HINT`) or ``is
    a directory, not a regular file``; otherwise ``cannot read {what} {path}: {reason}``.
    """
    if isinstance(exc, FileNotFoundError):
        return error(f"{what} {path} does not exist")
    if isinstance(exc, NotARegularFile):
        return error(f"{what} {path} is {exc.strerror}", hint=hint or NOT_A_FILE_HINT)
    if isinstance(exc, IsADirectoryError):
        return error(f"{what} {path} is a directory, not a regular file", hint=hint)
    return error(f"cannot read {what} {path}: {exc.strerror or exc}")


def _bounded(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS] + f"… [message cut: {len(text):,} characters]"


class EdgeSDKError(Exception):
    """Base of every error edge-sdk raises on purpose.

    The message and hint are bounded (:data:`MAX_MESSAGE_CHARS`) whatever they were built from.
    """

    exit_code = 1
    #: Short machine-readable name, used by ``--json`` output.
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        message = _bounded(message)
        super().__init__(message)
        self.message = message
        self.hint = _bounded(hint) if hint is not None else None

    def diagnostics(self) -> str:
        """The message plus the hint on how to fix it, as the CLI prints it."""
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(EdgeSDKError):
    """The command line or API call was inconsistent (missing option, bad combination)."""

    exit_code = 2
    kind = "usage"


# -- the bundle file ------------------------------------------------------------------------------


class BundleFormatError(EdgeSDKError):
    """The file is not a well-formed bundle: bad magic, truncated, oversized, malformed JSON."""

    exit_code = 10
    kind = "format"


class UnsupportedVersionError(BundleFormatError):
    """The bundle declares a format version or algorithm this release does not know."""

    exit_code = 11
    kind = "unsupported"


class ManifestError(BundleFormatError):
    """The manifest is well-formed JSON but breaks the schema (missing, unknown or bad fields)."""

    exit_code = 12
    kind = "manifest"


# -- hostile or stale data --------------------------------------------------------------------------


class VerificationError(EdgeSDKError):
    """The bundle is well-formed but must not be trusted."""

    exit_code = 20
    kind = "verification"


class SignatureError(VerificationError):
    """A signature is invalid, missing, from an unknown key, or below the threshold."""

    exit_code = 21
    kind = "signature"


class RevokedKeyError(SignatureError):
    """The bundle is signed by a key the trust store lists as revoked."""

    exit_code = 22
    kind = "revoked"


class ExpiredError(VerificationError):
    """The bundle's expiry date has passed."""

    exit_code = 23
    kind = "expired"


class IntegrityError(VerificationError):
    """A hash or size recorded in the signed manifest does not match the bytes."""

    exit_code = 24
    kind = "integrity"


class RollbackError(VerificationError):
    """The bundle's version is older than (or conflicts with) one this device already accepted."""

    exit_code = 25
    kind = "rollback"


class TargetMismatchError(VerificationError):
    """The bundle was built for another profile, runtime or hardware id."""

    exit_code = 26
    kind = "target"


class ModelSignatureError(VerificationError):
    """The source model's model-signing signature is missing, invalid, by another signer, or does not cover it."""

    exit_code = 27
    kind = "model-signature"


class ProvenanceError(VerificationError):
    """A bundle's build attestation is missing, malformed, oversized, unsigned or about another bundle."""

    exit_code = 28
    kind = "provenance"


class ProvenancePolicyError(ProvenanceError):
    """A bundle's attested history does not meet the audit's provenance policy."""

    exit_code = 29
    kind = "policy"


class DecryptionError(VerificationError):
    """The payload cannot be opened: not a recipient, wrong device key, or AEAD failure."""

    exit_code = 30
    kind = "decryption"


class KeySlipError(DecryptionError):
    """A device's key slip is malformed, oversized, missing, unreadable or contradicts its bundle."""

    exit_code = 31
    kind = "key-slip"


class KeySlipMismatchError(KeySlipError):
    """A genuine key slip for another bundle (an old release) or another device key."""

    exit_code = 32
    kind = "key-slip-mismatch"


class PayloadTooLargeError(BundleFormatError):
    """A decompressed or decrypted size exceeds the declared or configured limit."""

    exit_code = 13
    kind = "too-large"


# -- keys and trust ------------------------------------------------------------------------------------


class KeyFileError(EdgeSDKError):
    """A key file is missing, malformed, of the wrong kind, or has unsafe permissions."""

    exit_code = 40
    kind = "key"


class TrustStoreError(EdgeSDKError):
    """The trust store is missing, empty or malformed."""

    exit_code = 41
    kind = "trust"


class KeyReferenceError(KeyFileError):
    """A key reference (``pkcs11:`` URI or ``tpm2:`` reference) is malformed or incomplete."""

    exit_code = 42
    kind = "key-reference"


class TokenError(KeyFileError):
    """A key held in a PKCS#11 token or a TPM cannot be used (a cause not listed below)."""

    exit_code = 43
    kind = "token"


class TokenNotFoundError(TokenError):
    """No token matches the reference: module missing, token absent, TPM unreachable."""

    exit_code = 44
    kind = "token-not-found"


class TokenRemovedError(TokenError):
    """The token or TPM went away (or its key changed) after the key was opened."""

    exit_code = 45
    kind = "token-removed"


class TokenPinError(TokenError):
    """The token's PIN (or the TPM key's authorization value) is wrong or missing."""

    exit_code = 46
    kind = "token-pin"


class TokenLockedError(TokenError):
    """The token's PIN is locked, or the TPM is in dictionary-attack lockout."""

    exit_code = 47
    kind = "token-locked"


class TokenKeyNotFoundError(TokenError):
    """The token holds no key object matching the reference (or more than one)."""

    exit_code = 48
    kind = "token-key-not-found"


class TokenKeyTypeError(TokenError):
    """The token's key has the wrong type, curve or usage, or attributes that let it leave the token."""

    exit_code = 49
    kind = "token-key-type"


# -- host side: profiles, models, conversion --------------------------------------------------------------


class ProfileError(EdgeSDKError):
    """A device profile is unknown or invalid."""

    exit_code = 50
    kind = "profile"


class ModelInputError(EdgeSDKError):
    """The model file is not a supported, loadable model."""

    exit_code = 60
    kind = "model"


class ConversionError(EdgeSDKError):
    """TFLite conversion failed or produced a model that disagrees with the source model."""

    exit_code = 61
    kind = "conversion"


class AccuracyGateError(EdgeSDKError):
    """The quantized model lost more accuracy than the budget allows."""

    exit_code = 62
    kind = "accuracy"


class CompatibilityError(EdgeSDKError):
    """The model uses ops or op versions the target runtime cannot run."""

    exit_code = 63
    kind = "compatibility"


class DataError(EdgeSDKError):
    """Calibration, evaluation or inference input data is missing or malformed."""

    exit_code = 64
    kind = "data"


class HostDependencyError(EdgeSDKError):
    """A host-side feature needs an optional dependency that is not installed."""

    exit_code = 65
    kind = "dependency"


# -- device side: runtime ------------------------------------------------------------------------------


class BackendError(EdgeSDKError):
    """No usable LiteRT backend, or the backend failed to build or run the model."""

    exit_code = 70
    kind = "backend"


class DelegateError(BackendError):
    """A delegate failed to load and strict delegates were requested."""

    exit_code = 71
    kind = "delegate"


class SealedMemoryError(BackendError):
    """A decrypted model cannot be placed in sealed memory (no memfd, sealing refused, too big)."""

    exit_code = 74
    kind = "sealed-memory"


class ModelKindError(BackendError):
    """The bundle holds another kind of model than the loader runs (a .tflite given to
    ``load_llm``, a .litertlm given to ``load``)."""

    exit_code = 75
    kind = "model-kind"


class InferenceInputError(EdgeSDKError):
    """An input given to predict() has the wrong name, shape or dtype; a prompt that is not
    text or does not fit the context; token ids outside the vocabulary."""

    exit_code = 72
    kind = "input"


class StateError(EdgeSDKError):
    """The device state directory is unusable or corrupt."""

    exit_code = 73
    kind = "state"


class WeightCacheError(StateError):
    """An LLM's encrypted weight cache cannot be used (tampered, cut short, another runtime's,
    or a cache directory other users can write to). A load never fails for it: the weights are
    packed again, and the reason is logged and shown by ``describe()``."""

    exit_code = 76
    kind = "weight-cache"


# -- deploy and audit ---------------------------------------------------------------------------------


class TransportError(EdgeSDKError):
    """A deploy target could not be reached or written (network, auth, disk)."""

    exit_code = 80
    kind = "transport"


class DeployError(EdgeSDKError):
    """A deploy, rollback or status operation failed on a target."""

    exit_code = 81
    kind = "deploy"


class AuditLogError(VerificationError):
    """The device audit log's hash chain is broken."""

    exit_code = 90
    kind = "audit-log"
