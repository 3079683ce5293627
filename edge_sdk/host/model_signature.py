"""HOST ONLY: verify a source model's OpenSSF model-signing signature before it is converted.

Training pipelines sign the models they publish with ``model-signing`` (a Sigstore bundle over a
DSSE in-toto statement that lists every file of the model with its SHA-256). ``edge-sdk package``
checks that signature with the ``model-signing`` library itself — key-based (``--model-signer
KEY.pub``, works offline) or Sigstore keyless (``--model-signer-identity`` and
``--model-signer-issuer``; needs Sigstore's trust root from the network, or
``--sigstore-trust-config``) — and refuses to convert a model that does not verify.

``model-signing`` is imported only inside :func:`verify_model_signature` (extra ``provenance``;
it also needs pyOpenSSL, which it does not declare). Every failure becomes a
:class:`~edge_sdk.errors.ModelSignatureError` naming what was wrong: a missing signature, a
signature by another signer, a model that does not match it (changed, extra or missing files), or
a malformed signature file.
"""

from __future__ import annotations

import ast
import base64
import binascii
import contextlib
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sdk.errors import HostDependencyError, ModelSignatureError, UsageError, unreadable_file
from edge_sdk.files import read_capped
from edge_sdk.format.attestation import signer_key_id

#: model-signing's predicate for signatures made by releases ≥ 1.0.
PREDICATE_V1 = "https://model_signing/signature/v1.0"
#: Signature files are JSON Sigstore bundles of a few KiB (more for sharded models).
MAX_SIGNATURE_FILE_BYTES = 16 * 1024 * 1024


def _excerpt(text: str, limit: int = 300) -> str:
    """A bounded excerpt with control characters escaped (library messages quote file names)."""
    cut = text if len(text) <= limit else text[: limit - 1] + "…"
    return cut.encode("unicode_escape").decode("ascii").replace("\\u2026", "…")


@dataclass(frozen=True)
class ModelSignatureOptions:
    """How ``package`` checks the source model: the signature file and who must have signed it.

    Raises:
        UsageError: an inconsistent combination (identity without issuer, key and identity…).
        ModelSignatureError: a signer is pinned but no signature was given (a missing signature).
    """

    signature: Path | None = None
    signer_key: Path | None = None
    identity: str | None = None
    issuer: str | None = None
    trust_config: Path | None = None

    def __post_init__(self) -> None:
        keyless = self.identity is not None or self.issuer is not None
        if keyless and (self.identity is None or self.issuer is None):
            raise UsageError("--model-signer-identity and --model-signer-issuer go together")
        if keyless and self.signer_key is not None:
            raise UsageError(
                "give either --model-signer KEY.pub or --model-signer-identity/--model-signer-issuer"
            )
        if self.trust_config is not None and not keyless:
            raise UsageError("--sigstore-trust-config is for keyless (identity/issuer) signatures")
        if self.signature is None and (keyless or self.signer_key is not None):
            raise ModelSignatureError(
                "no model signature given: the model's signer is pinned but --model-signature "
                "is missing, so the model cannot be shown to come from that signer",
                hint="pass --model-signature FILE (the model_signing output, e.g. model.sig)",
            )
        if self.signature is not None and not (keyless or self.signer_key is not None):
            raise UsageError(
                "--model-signature needs the expected signer: --model-signer KEY.pub, or "
                "--model-signer-identity and --model-signer-issuer (Sigstore keyless)"
            )

    @property
    def requested(self) -> bool:
        """Whether a signature is to be verified at all."""
        return self.signature is not None

    @property
    def method(self) -> str:
        return "key" if self.signer_key is not None else "sigstore"


@dataclass(frozen=True)
class VerifiedModelSignature:
    """What model-signing verified about the source model (only built after it verified)."""

    method: str
    #: The key id (SHA-256 of the public key's DER) for ``key``; the certificate identity else.
    signer: str
    issuer: str | None
    model_name: str
    #: model-signing's subject digest: SHA-256 over the per-file digests, in its resource order.
    root_digest: str
    signature_sha256: str
    #: The model's files the signature lists (``"."`` for a single-file model).
    covered: frozenset[str]

    def annotation(self) -> dict[str, str]:
        """The facts as they go into the attestation (``annotations.modelSigning``)."""
        out = {
            "verified": "true",
            "method": self.method,
            "signer": self.signer,
            "modelName": self.model_name,
            "rootDigest": self.root_digest,
            "signatureSha256": self.signature_sha256,
            "predicateType": PREDICATE_V1,
        }
        if self.issuer is not None:
            out["issuer"] = self.issuer
        return out


def read_signature_file(path: Path) -> bytes:
    """The signature file's bytes, size-capped before reading.

    Raises:
        ModelSignatureError: missing, unreadable or oversized (a missing signature is refused).
    """
    try:
        data = read_capped(path, MAX_SIGNATURE_FILE_BYTES)
    except FileNotFoundError:
        raise ModelSignatureError(
            f"model signature {path} does not exist: refusing to convert an unsigned model",
            hint="sign it with model_signing, or point --model-signature at its signature",
        ) from None
    except OSError as exc:
        raise unreadable_file(ModelSignatureError, "model signature", path, exc) from None
    if len(data) > MAX_SIGNATURE_FILE_BYTES:
        raise ModelSignatureError(
            f"model signature {path} is over {MAX_SIGNATURE_FILE_BYTES} bytes; not a signature"
        )
    return data


def _statement(signature: bytes, where: Path) -> Mapping[str, Any]:
    """The in-toto statement inside a (verified) signature file: the Sigstore bundle's DSSE payload."""
    try:
        bundle = json.loads(signature)
        payload = base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True)
        statement = json.loads(payload)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ModelSignatureError(
            f"model signature {where} verified but its statement cannot be read"
        ) from None
    if not isinstance(statement, dict):
        raise ModelSignatureError(f"model signature {where} holds no in-toto statement")
    return statement


def _covered(statement: Mapping[str, Any], where: Path) -> tuple[str, str, frozenset[str]]:
    """(model name, root digest, files covered) from a model-signing v1.0 statement."""
    try:
        if statement["predicateType"] != PREDICATE_V1:
            raise ModelSignatureError(
                f"model signature {where} uses predicate "
                f"{_excerpt(str(statement['predicateType']), 80)}; edge-sdk reads {PREDICATE_V1}",
                hint="re-sign the model with model_signing ≥ 1.0",
            )
        subject = statement["subject"][0]
        name, root = str(subject["name"]), str(subject["digest"]["sha256"])
        method = statement["predicate"]["serialization"]["method"]
        names = [str(r["name"]) for r in statement["predicate"]["resources"]]
    except (KeyError, IndexError, TypeError):
        raise ModelSignatureError(f"model signature {where} has an unexpected statement") from None
    # Shard serialization names pieces "path:start:end"; files serialization names files.
    files = frozenset(n.rsplit(":", 2)[0] if method == "shards" else n for n in names)
    return name[:256], root[:128], files


#: A Sigstore client trust config is a JSON document of a few KiB.
MAX_TRUST_CONFIG_BYTES = 1 << 20


def _trust_config_copy(path: Path, into: Path) -> Path:
    """A private copy of the user's ``--sigstore-trust-config`` for the library to read: ours is
    read size-capped from a regular file (the library would wait on a FIFO, or read /dev/zero,
    forever), and nobody can change the copy between our check and its read."""
    try:
        data = read_capped(path, MAX_TRUST_CONFIG_BYTES)
    except OSError as exc:
        raise unreadable_file(UsageError, "Sigstore trust config", path, exc) from None
    copy = into / "trust_config.json"
    copy.write_bytes(data)
    return copy


def verify_model_signature(
    model: Path, signature: Path, options: ModelSignatureOptions, *, shown_as: str | None = None
) -> VerifiedModelSignature:
    """Verify ``model`` (a file or directory) against ``signature`` with the model-signing library.

    ``shown_as`` names the signature in messages when ``signature`` is a private copy of the
    user's file.

    Raises:
        HostDependencyError: model-signing (extra ``provenance``) is not installed.
        KeyFileError: the pinned signer key is unusable.
        ModelSignatureError: the signature is missing, malformed, by another signer, or the model
            does not match it.
    """
    data = read_signature_file(signature)
    key_id = signer_key_id(options.signer_key) if options.signer_key is not None else None
    try:
        import model_signing
    except ImportError as exc:
        raise HostDependencyError(
            f"verifying model signatures needs model-signing and pyOpenSSL ({exc.name} is missing)",
            hint="pip install 'edgepkg[provenance]'",
        ) from None
    what = f"{model.name} (signature {shown_as or signature.name})"
    chatter = io.StringIO()
    with contextlib.ExitStack() as stack:
        trust_config = None
        if options.trust_config is not None:
            private = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-sdk-tc-")))
            trust_config = _trust_config_copy(options.trust_config, private)
        try:
            config = model_signing.verifying.Config()  # type: ignore[no-untyped-call]
            if options.signer_key is not None:
                config.use_elliptic_key_verifier(public_key=options.signer_key)
            else:
                assert options.identity is not None and options.issuer is not None
                config.use_sigstore_verifier(
                    identity=options.identity, oidc_issuer=options.issuer, trust_config=trust_config
                )
            # The library prints warnings (e.g. about old signature formats) to stdout.
            with contextlib.redirect_stdout(chatter):
                config.verify(model, signature)
        except Exception as exc:  # noqa: BLE001 - the library raises many unrelated types
            raise _explain(exc, what, key_id, options, model.name) from None
    statement = _statement(data, signature)
    name, root, covered = _covered(statement, signature)
    return VerifiedModelSignature(
        method=options.method,
        signer=key_id if key_id is not None else str(options.identity),
        issuer=options.issuer,
        model_name=name,
        root_digest=root,
        signature_sha256=hashlib.sha256(data).hexdigest(),
        covered=covered,
    )


def _mismatch(text: str, model_name: str) -> str:
    """model-signing's diff as the files that differ, by name (never the library's reprs).

    The library's message is ``Signature mismatch: `` and the ``str`` of a list of strings that
    embed digest reprs. Matching quotes in that text failed whenever a digest's bytes held both
    quote characters (Python then escapes the quotes around the file name too), so the list is
    read back as the Python literal it is and each entry is matched on its own.
    """
    body = text[len("Signature mismatch: ") :]
    try:
        entries = ast.literal_eval(body) if len(body) <= 1_000_000 else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        entries = None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return "its files do not match the signed digests"
    changed: list[str] = []
    parts: list[str] = []
    for entry in entries:
        found = re.match(r"Hash mismatch for '(.*?)': Expected ", entry, re.DOTALL)
        if found:
            changed.append(model_name if found.group(1) == "." else found.group(1))
            continue
        for kind, label in (("Extra files found", "files not in the signature"),
                            ("Missing files", "signed files missing")):  # fmt: skip
            found = re.match(rf"{kind} in model '.*?': (.*)", entry, re.DOTALL)
            if found:
                parts.append(f"{label}: {found.group(1)}")
    if changed:
        parts.insert(0, f"{', '.join(changed)} changed since it was signed")
    return _excerpt("; ".join(parts)) if parts else "its files do not match the signed digests"


def _explain(
    exc: Exception, what: str, key_id: str | None, options: ModelSignatureOptions, model_name: str
) -> ModelSignatureError:
    """Turn whatever model-signing raised into one typed error that says what was wrong."""
    text = str(exc) or type(exc).__name__
    module = type(exc).__module__.split(".")[0]
    signer = f"key {key_id[:16]}" if key_id else f"{options.identity} ({options.issuer})"
    if text.startswith("Key mismatch") or type(exc).__name__ == "InvalidSignature":
        return ModelSignatureError(
            f"{what} was not signed by the expected signer, {signer}",
            hint="check --model-signer: the signature was made with another key",
        )
    if text.startswith("Signature mismatch"):
        return ModelSignatureError(
            f"{what} does not match its signature: {_mismatch(text, model_name)}",
            hint="the model was modified after it was signed; get the signed model again",
        )
    if module == "sigstore":
        return ModelSignatureError(
            f"Sigstore keyless verification of {what} failed: {_excerpt(text)}",
            hint="keyless verification needs Sigstore's trust root (network access to its TUF "
            "repository) or --sigstore-trust-config FILE; the signer must be "
            f"{options.identity} from {options.issuer}",
        )
    return ModelSignatureError(
        f"cannot verify {what}: malformed or unsupported signature "
        f"({type(exc).__name__}: {_excerpt(text, 200)})",
        hint="the file must be a model_signing signature (a Sigstore bundle) of this model",
    )
