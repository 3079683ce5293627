"""Build attestations inside bundles: an in-toto Statement with an SLSA Provenance v1 predicate.

Where it lives: ``manifest.reports["provenance"]`` holds a standard DSSE envelope
(``payloadType`` ``application/vnd.in-toto+json``). The manifest is what the bundle signature
covers, so inside a bundle the attestation is as well protected as the model digest itself; and
because ``reports`` is the manifest's documented extension point, readers that predate
attestations (and every device) accept such bundles unchanged — no format or schema version moves.

How it is bound: the statement's subjects are the plaintext ``.tflite`` digest (``model.sha256``)
and the stored payload digest (``payload.sha256``), its parameters name the bundle's name, version
and profile, and its ``invocationId`` is the manifest's ``payload.content_id`` — random per bundle,
so even two signed-only bundles of the same model (whose payloads are the same bytes) differ.
:func:`read_attestation` refuses an attestation whose subjects or parameters disagree with the
manifest it sits in, so one bundle's attestation cannot be replayed in another.

What signs it: every bundle signer also signs the envelope, over the same DSSE PAE code the
manifest uses, with ``keyid`` set to securesystemslib's default key id so that in-toto's Python
tooling verifies it given only the publisher's PEM key. A hybrid Ed25519+ML-DSA-65 key signs
twice, once per half: Ed25519 over PAE (what every DSSE verifier understands) and ML-DSA-65 in
securesystemslib's ``ml-dsa-65/1`` scheme (over ``"tuf" ‖ 0x01 ‖ SHA-512(PAE)``); edge-sdk accepts
a hybrid signer only when both verify. See docs/PROVENANCE.md.

This module reads and checks; it needs no TensorFlow and no model-signing (the audit uses it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa

from edge_sdk.errors import BundleFormatError, KeyFileError, ProvenanceError
from edge_sdk.files import read_capped
from edge_sdk.keys import PrivateKey, PublicKey, TrustStore

from .manifest import Manifest
from .signing import pae
from .strict_json import canonical_bytes, loads_strict

REPORT_KEY = "provenance"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:edge-sdk:package:v1"
BUILDER_ID = "urn:edge-sdk:builder:package"
#: The roles ``resolvedDependencies`` entries carry in ``annotations.role``.
ROLES = (
    "source-model",
    "calibration-data",
    "evaluation-data",
    "training-data",
    "tool",
    "converter",
)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MLDSA_PREFIX = b"tuf\x01"  # securesystemslib's ml-dsa-65/1 scheme (TAP 21), version 1


@dataclass(frozen=True)
class AttestationLimits:
    """Caps on what is parsed from an attestation (the manifest's 256 KiB cap comes first)."""

    max_envelope_bytes: int = 96 * 1024
    max_statement_bytes: int = 64 * 1024
    max_signatures: int = 32
    max_subjects: int = 4
    max_dependencies: int = 64
    max_text: int = 512


DEFAULT_LIMITS = AttestationLimits()


def _fail(problem: str) -> ProvenanceError:
    return ProvenanceError(f"attestation {problem}")


def _excerpt(value: Any) -> str:
    """A bounded, escaped excerpt of a value read from a file, for messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- keys and signatures ---------------------------------------------------------------------------


def _component_scheme(component: Any) -> tuple[str, str, str]:
    """securesystemslib's (keytype, scheme, public value) for one public key component."""
    if isinstance(component, ed25519.Ed25519PublicKey):
        raw = component.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519", "ed25519", raw.hex()
    pem = component.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    if isinstance(component, ec.EllipticCurvePublicKey) and isinstance(
        component.curve, ec.SECP256R1
    ):
        return "ecdsa", "ecdsa-sha2-nistp256", pem
    if isinstance(component, mldsa.MLDSA65PublicKey):
        return "ml-dsa", "ml-dsa-65/1", pem
    raise KeyFileError(f"cannot sign attestations with a {type(component).__name__}")


def dsse_keyid(component: Any) -> str:
    """The ``keyid`` a DSSE signature by this public key component carries.

    It is securesystemslib's default key id — SHA-256 of the OLPC canonical JSON
    ``{"keytype":…,"keyval":{"public":…},"scheme":…}`` — so ``SSlibKey.from_crypto(public_key)``
    finds the signature without being told an id. The values hold no ``"`` or ``\\``, so canonical
    JSON is this literal template.
    """
    keytype, scheme, public = _component_scheme(component)
    text = f'{{"keytype":"{keytype}","keyval":{{"public":"{public}"}},"scheme":"{scheme}"}}'
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _signed_message(component: Any, message: bytes) -> bytes:
    if isinstance(component, (mldsa.MLDSA65PrivateKey, mldsa.MLDSA65PublicKey)):
        return _MLDSA_PREFIX + hashlib.sha512(message).digest()
    return message


def _verify_component(component: Any, signature: bytes, message: bytes) -> bool:
    data = _signed_message(component, message)
    try:
        if isinstance(component, ec.EllipticCurvePublicKey):
            component.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            component.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_statement(statement: Mapping[str, Any], signers: Sequence[PrivateKey]) -> dict[str, Any]:
    """The DSSE envelope of ``statement`` (canonical JSON), signed by every signer.

    A hybrid signer contributes one signature per half (see the module docstring).
    """
    if not signers:
        raise ProvenanceError("an attestation needs at least one signing key")
    body = canonical_bytes(statement)
    message = pae(PAYLOAD_TYPE, body)
    signatures: list[tuple[Any, bytes]] = []
    for signer in signers:
        if signer.kind != "signing":
            raise KeyFileError(f"key {signer.public.short_id} is a device key, not a signing key")
        halves = signer.public.components
        # Only PrivateKey.sign is used, so keys held in a token or TPM sign attestations too. A
        # hybrid signature is Ed25519 ‖ ML-DSA-65 over one message: each half is taken from a
        # signature over the message that half's scheme signs.
        if signer.alg == "ed25519+mldsa65":
            signatures.append((halves[0], signer.sign(message)[:64]))
            signatures.append((halves[1], signer.sign(_signed_message(halves[1], message))[64:]))
        else:
            signatures.append((halves[0], signer.sign(message)))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [
            {"keyid": dsse_keyid(public), "sig": base64.b64encode(sig).decode("ascii")}
            for public, sig in signatures
        ],
    }


# -- model-signing keys -----------------------------------------------------------------------------

_MODEL_SIGNER_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def signer_key_id(path: Path) -> str:
    """The key id of a model-signing public key: SHA-256 of its DER SubjectPublicKeyInfo.

    ``openssl pkey -pubin -in KEY.pub -outform DER | sha256sum`` gives the same value.

    Raises:
        KeyFileError: missing, not a PEM public key, or not an elliptic-curve key model-signing
            can verify with (P-256, P-384, P-521).
    """
    try:
        data = read_capped(path, 1 << 20)
    except FileNotFoundError:
        raise KeyFileError(f"model signer key {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read model signer key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"model signer key {path} is not a PEM public key",
            hint="pass the .pub half of the key the model was signed with",
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _MODEL_SIGNER_CURVES:
        raise KeyFileError(
            f"model signer key {path} is a {type(key).__name__}; model-signing keys are "
            "elliptic-curve P-256, P-384 or P-521"
        )
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


# -- reading ---------------------------------------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(f"{where} must be an object")
    return value


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise _fail(f"{where} must be a list of at most {limit} entries")
    return value


def _text(value: Any, where: str, limits: AttestationLimits, *, optional: bool = False) -> str:
    if value is None and optional:
        return ""
    if not isinstance(value, str) or len(value) > limits.max_text:
        raise _fail(f"{where} must be a string of at most {limits.max_text} characters")
    return value


def _hex64(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise _fail(f"{where} must be 64 lowercase hex digits, got {_excerpt(value)}")
    return value


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"{where} must be a number, got {_excerpt(value)}")
    return float(value)


@dataclass(frozen=True)
class Material:
    """One input the build consumed: the source model, a data set, or a tool."""

    role: str
    name: str
    sha256: str | None = None
    version: str | None = None
    uri: str | None = None
    #: For the source model: what model-signing verified (``method``, ``signer``, …), else empty.
    signature: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Gate:
    """The accuracy gate's outcome as attested."""

    metric: str
    passed: bool
    samples: int | None = None
    drop_points: float | None = None
    float_accuracy: float | None = None
    quantized_accuracy: float | None = None
    relative_rmse: float | None = None
    cosine: float | None = None


@dataclass(frozen=True)
class Provenance:
    """The facts a policy decides on, read from an attestation already bound to its manifest."""

    model_sha256: str
    payload_sha256: str
    bundle_name: str
    bundle_version: int
    profile: str
    source: Material
    materials: tuple[Material, ...]
    converter: str | None
    quantization: str
    sparsity: float | None
    gate: Gate | None
    builder_id: str
    started_on: str
    finished_on: str

    def tool(self, name: str) -> str | None:
        """The version of a tool the build used (``tensorflow``, ``edgepkg``…), if recorded."""
        for material in self.materials:
            if material.role == "tool" and material.name == name:
                return material.version
        return None

    def data(self, role: str) -> Material | None:
        """The data set with this role (``calibration-data``…), if the build used one."""
        return next((m for m in self.materials if m.role == role), None)


@dataclass(frozen=True)
class Attestation:
    """A bundle's attestation, structurally valid and bound to the manifest it was read from.

    ``signatures`` are not checked yet: :func:`check_signatures` does that against a trust store.
    """

    envelope: Mapping[str, Any]
    statement_bytes: bytes
    statement: Mapping[str, Any]
    signatures: tuple[tuple[str, bytes], ...]
    provenance: Provenance


def _material(entry: Any, where: str, limits: AttestationLimits) -> Material:
    entry = _obj(entry, where)
    annotations = _obj(entry.get("annotations", {}), f"{where}.annotations")
    role = _text(annotations.get("role"), f"{where}.annotations.role", limits)
    digest = _obj(entry.get("digest", {}), f"{where}.digest")
    sha256 = _hex64(digest["sha256"], f"{where}.digest.sha256") if "sha256" in digest else None
    signature: dict[str, str] = {}
    if "modelSigning" in annotations:
        raw = _obj(annotations["modelSigning"], f"{where}.annotations.modelSigning")
        if len(raw) > 16:
            raise _fail(f"{where}.annotations.modelSigning has too many fields")
        signature = {
            str(k)[:64]: _text(v, f"{where}.annotations.modelSigning[{_excerpt(k)}]", limits)
            for k, v in raw.items()
        }
    return Material(
        role=role,
        name=_text(entry.get("name", ""), f"{where}.name", limits),
        sha256=sha256,
        version=_text(
            annotations.get("version"), f"{where}.annotations.version", limits, optional=True
        )
        or None,
        uri=_text(entry.get("uri"), f"{where}.uri", limits, optional=True) or None,
        signature=signature,
    )


def _gate(value: Any, limits: AttestationLimits) -> Gate | None:
    if value is None:
        return None
    gate = _obj(value, "accuracyGate")
    passed = gate.get("passed")
    if not isinstance(passed, bool):
        raise _fail("accuracyGate.passed must be true or false")
    samples = gate.get("samples")
    if samples is not None and (
        isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples < 2**63
    ):
        raise _fail(f"accuracyGate.samples must be a count, got {_excerpt(samples)}")
    return Gate(
        metric=_text(gate.get("metric"), "accuracyGate.metric", limits),
        passed=passed,
        samples=samples,
        drop_points=_number(gate.get("drop_points"), "accuracyGate.drop_points"),
        float_accuracy=_number(gate.get("float_accuracy"), "accuracyGate.float_accuracy"),
        quantized_accuracy=_number(
            gate.get("quantized_accuracy"), "accuracyGate.quantized_accuracy"
        ),
        relative_rmse=_number(gate.get("relative_rmse"), "accuracyGate.relative_rmse"),
        cosine=_number(gate.get("cosine"), "accuracyGate.cosine"),
    )


def _subject_digest(subjects: list[Any], index: int, limits: AttestationLimits) -> str:
    entry = _obj(subjects[index], f"subject[{index}]")
    _text(entry.get("name", ""), f"subject[{index}].name", limits)
    digest = _obj(entry.get("digest"), f"subject[{index}].digest")
    return _hex64(digest.get("sha256"), f"subject[{index}].digest.sha256")


def _provenance(
    statement: Mapping[str, Any], manifest: Manifest, limits: AttestationLimits
) -> Provenance:
    """Read the facts and check that they describe ``manifest`` (the anti-replay binding)."""
    if statement.get("_type") != STATEMENT_TYPE:
        raise _fail(f"is not an in-toto Statement v1 (_type {_excerpt(statement.get('_type'))})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise _fail(
            f"predicate is not SLSA Provenance v1 ({_excerpt(statement.get('predicateType'))})"
        )
    subjects = _list(statement.get("subject"), "subject", limits.max_subjects)
    if len(subjects) != 2:
        raise _fail(f"must have 2 subjects (the model and the payload), has {len(subjects)}")
    model_digest = _subject_digest(subjects, 0, limits)
    payload_digest = _subject_digest(subjects, 1, limits)
    if model_digest != manifest.model.sha256:
        raise _fail(
            f"is about model {model_digest[:16]}…, but this bundle holds model "
            f"{manifest.model.sha256[:16]}… (an attestation copied from another bundle?)"
        )
    if payload_digest != manifest.payload.sha256:
        raise _fail(
            f"names payload {payload_digest[:16]}…, but this bundle's payload is "
            f"{manifest.payload.sha256[:16]}… (an attestation copied from another bundle)"
        )
    predicate = _obj(statement.get("predicate"), "predicate")
    build = _obj(predicate.get("buildDefinition"), "buildDefinition")
    if build.get("buildType") != BUILD_TYPE:
        raise _fail(f"buildType {_excerpt(build.get('buildType'))} is not {BUILD_TYPE}")
    external = _obj(build.get("externalParameters"), "externalParameters")
    internal = _obj(build.get("internalParameters", {}), "internalParameters")
    bundle = _obj(external.get("bundle"), "externalParameters.bundle")
    name = _text(bundle.get("name"), "externalParameters.bundle.name", limits)
    version = bundle.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _fail(
            f"externalParameters.bundle.version must be an integer, got {_excerpt(version)}"
        )
    profile = _text(bundle.get("profile"), "externalParameters.bundle.profile", limits)
    if (name, version, profile) != (manifest.name, manifest.version, manifest.target.profile):
        raise _fail(
            f"is for {_excerpt(name)} v{_excerpt(version)} ({_excerpt(profile)}), not for this "
            f"bundle, {manifest.name} v{manifest.version} ({manifest.target.profile})"
        )
    deps = _list(build.get("resolvedDependencies"), "resolvedDependencies", limits.max_dependencies)
    materials = tuple(
        _material(d, f"resolvedDependencies[{i}]", limits) for i, d in enumerate(deps)
    )
    sources = [m for m in materials if m.role == "source-model"]
    if len(sources) != 1 or sources[0].sha256 is None:
        raise _fail("must name exactly one source model with a sha256 digest")
    conversion = _obj(internal.get("conversion", {}), "internalParameters.conversion")
    pruning = internal.get("pruning")
    sparsity = (
        _number(_obj(pruning, "internalParameters.pruning").get("sparsity"), "pruning.sparsity")
        if pruning is not None
        else None
    )
    run = _obj(predicate.get("runDetails"), "runDetails")
    builder = _obj(run.get("builder"), "runDetails.builder")
    metadata = _obj(run.get("metadata"), "runDetails.metadata")
    invocation = metadata.get("invocationId")
    if invocation != manifest.payload.content_id:
        # content_id is random per bundle and signed: two bundles of the same model (a signed-only
        # payload is the same bytes every time) still have different ones.
        raise _fail(
            f"was made for the bundle with content id {_excerpt(invocation)}, not this one "
            f"({manifest.payload.content_id}): an attestation copied from another bundle"
        )
    return Provenance(
        model_sha256=model_digest,
        payload_sha256=payload_digest,
        bundle_name=name,
        bundle_version=manifest.version,
        profile=profile,
        source=sources[0],
        materials=tuple(m for m in materials if m.role != "source-model"),
        converter=_text(conversion.get("converter"), "conversion.converter", limits, optional=True)
        or None,
        quantization=_text(external.get("quantization"), "externalParameters.quantization", limits),
        sparsity=sparsity,
        gate=_gate(internal.get("accuracyGate"), limits),
        builder_id=_text(builder.get("id"), "runDetails.builder.id", limits),
        started_on=_text(metadata.get("startedOn"), "startedOn", limits, optional=True),
        finished_on=_text(metadata.get("finishedOn"), "finishedOn", limits, optional=True),
    )


def _b64(value: Any, where: str, limit: int) -> bytes:
    if not isinstance(value, str) or len(value) > limit * 4 // 3 + 4:
        raise _fail(f"{where} must be a base64 string of at most {limit} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"{where} is not valid base64") from None


def read_attestation(
    manifest: Manifest, limits: AttestationLimits = DEFAULT_LIMITS
) -> Attestation | None:
    """The attestation in ``manifest.reports``, checked for shape, size and binding; ``None``
    when the bundle carries none. Signatures are not checked here (see :func:`check_signatures`).

    Raises:
        ProvenanceError: malformed, oversized, not in-toto/SLSA, or about another bundle.
    """
    raw = manifest.reports.get(REPORT_KEY)
    if raw is None:
        return None
    envelope = _obj(raw, "envelope")
    size = len(canonical_bytes(envelope))
    if size > limits.max_envelope_bytes:
        raise _fail(f"envelope is {size} bytes, over the limit of {limits.max_envelope_bytes}")
    unknown = set(envelope) - {"payloadType", "payload", "signatures"}
    if unknown:
        raise _fail(f"envelope has unknown field(s) {_excerpt(sorted(map(str, unknown)))}")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise _fail(f"payloadType {_excerpt(envelope.get('payloadType'))} is not {PAYLOAD_TYPE}")
    body = _b64(envelope.get("payload"), "payload", limits.max_statement_bytes)
    if len(body) > limits.max_statement_bytes:
        raise _fail(
            f"statement is {len(body)} bytes, over the limit of {limits.max_statement_bytes}"
        )
    signatures = []
    for i, entry in enumerate(
        _list(envelope.get("signatures"), "signatures", limits.max_signatures)
    ):
        item = _obj(entry, f"signatures[{i}]")
        if set(item) - {"keyid", "sig"}:
            raise _fail(f"signatures[{i}] has unknown fields")
        keyid = _hex64(item.get("keyid"), f"signatures[{i}].keyid")
        signatures.append((keyid, _b64(item.get("sig"), f"signatures[{i}].sig", 8192)))
    try:
        statement = loads_strict(body, "attestation statement")
    except BundleFormatError as exc:
        raise ProvenanceError(exc.message) from None
    statement = _obj(statement, "statement")
    return Attestation(
        envelope, body, statement, tuple(signatures), _provenance(statement, manifest, limits)
    )


def check_signatures(attestation: Attestation, trust: TrustStore) -> tuple[str, ...]:
    """The trusted keys that signed the attestation; at least the trust store's threshold.

    A trusted key counts only when every component signed (both halves of a hybrid key). A
    signature naming a trusted component that does not verify rejects the attestation, as a
    forged manifest signature rejects a bundle; signatures by keys not in the store are ignored.

    Raises:
        ProvenanceError: a forged signature, or fewer trusted signers than the threshold.
    """
    message = pae(PAYLOAD_TYPE, attestation.statement_bytes)
    owners: dict[str, tuple[PublicKey, Any]] = {}
    for key in trust.keys.values():
        if key.key_id in trust.revoked:
            continue
        for component in key.components:
            owners[dsse_keyid(component)] = (key, component)
    verified: dict[str, set[str]] = {}
    for keyid, signature in attestation.signatures:
        owner = owners.get(keyid)
        if owner is None:
            continue
        key, component = owner
        if not _verify_component(component, signature, message):
            raise ProvenanceError(
                f"attestation signature {keyid[:16]} by trusted key {key.short_id} does not verify",
                hint="the attestation was altered after signing",
            )
        verified.setdefault(key.key_id, set()).add(keyid)
    signed = tuple(
        key_id
        for key_id, ids in verified.items()
        if ids == {dsse_keyid(c) for c in trust.keys[key_id].components}
    )
    if len(signed) < trust.threshold:
        raise ProvenanceError(
            f"attestation is signed by {len(signed)} trusted key(s), {trust.threshold} required",
            hint="it must be signed by the bundle's publisher (edge-sdk package does this)",
        )
    return signed


def verified_attestation(manifest: Manifest, trust: TrustStore) -> Attestation:
    """The attestation of a bundle whose manifest signature already verified, with its own
    signatures checked against the same trust store.

    Raises:
        ProvenanceError: none present, malformed, about another bundle, or not signed by trust.
    """
    attestation = read_attestation(manifest)
    if attestation is None:
        raise ProvenanceError(
            f"bundle {manifest.name} v{manifest.version} carries no build attestation",
            hint="re-package it with an edge-sdk that attests (every `edge-sdk package` does)",
        )
    check_signatures(attestation, trust)
    return attestation
