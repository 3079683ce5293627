"""Provenance policy: which attested histories a security team accepts (``audit --policy FILE``).

A policy is a TOML file; every setting is optional and narrows what passes::

    require_model_signature = true            # the source model's signature was verified
    model_signers = ["keys/training.pub", "1e38…<64 hex>"]   # model-signing keys (file or key id)
    sigstore_identities = [{identity = "ml@example.com", issuer = "https://accounts.example.com"}]
    converters = ["tensorflow 2.21.*"]        # shell-style patterns, any may match
    tensorflow_versions = ["2.21.*"]
    edge_sdk_versions = ["0.*"]
    quantizations = ["int8", "dynamic"]
    require_data = ["evaluation-data"]        # inputs the build must have used (and attested)

    [gate]
    require_labels = true                     # accuracy measured on labelled evaluation data
    max_drop_points = 1.0
    min_accuracy = 95.0
    max_relative_rmse = 0.05
    min_cosine = 0.99
    min_samples = 200

Unknown settings are refused, so a typo cannot silently weaken a policy. Key files are resolved
relative to the policy file. A policy only ever reads an attestation that
:func:`edge_sdk.format.attestation.verified_attestation` accepted.
"""

from __future__ import annotations

import fnmatch
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sdk.errors import KeyFileError, ProvenancePolicyError, UsageError
from edge_sdk.files import read_capped
from edge_sdk.format.attestation import ROLES, Provenance, signer_key_id

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_LISTS = ("converters", "tensorflow_versions", "edge_sdk_versions", "quantizations")
_GATE_NUMBERS = (
    "max_drop_points",
    "min_accuracy",
    "max_relative_rmse",
    "min_cosine",
    "min_samples",
)
_TOP = {
    "require_model_signature", "model_signers", "sigstore_identities", "require_data", "gate",
    *_LISTS,
}  # fmt: skip


@dataclass(frozen=True)
class GatePolicy:
    """Minimum accuracy-gate results."""

    require_labels: bool = False
    max_drop_points: float | None = None
    min_accuracy: float | None = None
    max_relative_rmse: float | None = None
    min_cosine: float | None = None
    min_samples: float | None = None


@dataclass(frozen=True)
class ProvenancePolicy:
    """What an attested history must show; built only from a valid policy file."""

    #: The policy file ("" for the bare ``--require-provenance`` check).
    source: str = ""
    require_model_signature: bool = False
    model_signers: frozenset[str] = frozenset()
    sigstore_identities: frozenset[tuple[str, str]] = frozenset()
    converters: tuple[str, ...] = ()
    tensorflow_versions: tuple[str, ...] = ()
    edge_sdk_versions: tuple[str, ...] = ()
    quantizations: tuple[str, ...] = ()
    require_data: tuple[str, ...] = ()
    gate: GatePolicy = field(default_factory=GatePolicy)

    @classmethod
    def load(cls, path: Path) -> ProvenancePolicy:
        """Read a policy file.

        Raises:
            UsageError: unreadable, not TOML, unknown or mistyped settings.
            KeyFileError: a listed model signer key cannot be loaded.
        """
        try:
            data = tomllib.loads(read_capped(path, 1 << 20).decode("utf-8"))
        except FileNotFoundError:
            raise UsageError(f"policy file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read policy file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"policy file {path} is not valid TOML: {exc}") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> ProvenancePolicy:
        """Build from parsed TOML; ``path`` names the file in messages and anchors key paths."""

        def bad(problem: str) -> UsageError:
            return UsageError(f"policy {path}: {problem}")

        unknown = set(data) - _TOP
        if unknown:
            raise bad(f"unknown setting(s) {', '.join(sorted(unknown))}")

        def strings(name: str) -> tuple[str, ...]:
            value = data.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad(f"{name} must be a list of strings")
            return tuple(value)

        signers = set()
        for entry in strings("model_signers"):
            if _HEX64.fullmatch(entry):
                signers.add(entry)
            else:
                key = Path(entry) if Path(entry).is_absolute() else path.parent / entry
                try:
                    signers.add(signer_key_id(key))
                except KeyFileError as exc:
                    raise KeyFileError(f"policy {path}: {exc.message}", hint=exc.hint) from None
        identities = set()
        raw_ids = data.get("sigstore_identities", [])
        if not isinstance(raw_ids, list):
            raise bad("sigstore_identities must be a list of {identity, issuer} tables")
        for entry in raw_ids:
            if (
                not isinstance(entry, dict)
                or set(entry) != {"identity", "issuer"}
                or not all(isinstance(v, str) for v in entry.values())
            ):
                raise bad("each sigstore_identities entry needs exactly identity and issuer")
            identities.add((entry["identity"], entry["issuer"]))
        required = data.get("require_model_signature", bool(signers or identities))
        if not isinstance(required, bool):
            raise bad("require_model_signature must be true or false")
        for role in strings("require_data"):
            if role not in ROLES or role in ("tool", "converter", "source-model"):
                raise bad(
                    f"require_data: {role!r} is not calibration-data, evaluation-data or "
                    "training-data"
                )
        return cls(
            source=str(path),
            require_model_signature=required,
            model_signers=frozenset(signers),
            sigstore_identities=frozenset(identities),
            converters=strings("converters"),
            tensorflow_versions=strings("tensorflow_versions"),
            edge_sdk_versions=strings("edge_sdk_versions"),
            quantizations=strings("quantizations"),
            require_data=strings("require_data"),
            gate=_gate(data.get("gate", {}), bad),
        )

    def violations(self, facts: Provenance) -> list[str]:
        """Every way ``facts`` falls short of this policy (empty when it passes)."""
        out: list[str] = []
        signature = facts.source.signature
        if signature.get("verified") != "true":
            if self.require_model_signature:
                out.append("the source model's signature was not verified at packaging")
        elif self.model_signers or self.sigstore_identities:
            signer, issuer = signature.get("signer", ""), signature.get("issuer", "")
            if signature.get("method") == "key":
                if signer not in self.model_signers:
                    out.append(f"model signer key {signer[:16]} is not an allowed signer")
            elif (signer, issuer) not in self.sigstore_identities:
                out.append(
                    f"model signer {signer[:80]!r} from {issuer[:80]!r} is not an allowed "
                    "Sigstore identity"
                )
        self._match(out, "converter", facts.converter, self.converters)
        self._match(out, "TensorFlow", facts.tool("tensorflow"), self.tensorflow_versions)
        self._match(out, "edge-sdk", facts.tool("edgepkg"), self.edge_sdk_versions)
        self._match(out, "quantization", facts.quantization, self.quantizations)
        for role in self.require_data:
            if facts.data(role) is None:
                out.append(f"the build used no {role.replace('-', ' ')}")
        out.extend(self._gate_violations(facts))
        return out

    @staticmethod
    def _match(out: list[str], what: str, value: str | None, patterns: tuple[str, ...]) -> None:
        if patterns and not any(fnmatch.fnmatchcase(value or "", p) for p in patterns):
            shown = repr(value[:80]) if value else "none recorded"
            out.append(f"{what} {shown} is not allowed (allowed: {', '.join(patterns)})")

    def _gate_violations(self, facts: Provenance) -> list[str]:
        policy, gate = self.gate, facts.gate
        wanted = [n for n in _GATE_NUMBERS if getattr(policy, n) is not None]
        if not (wanted or policy.require_labels):
            return []
        if gate is None or not gate.passed:
            return ["no passed accuracy gate is attested"]
        out = []
        if policy.require_labels and gate.metric != "accuracy":
            out.append(f"the gate measured {gate.metric[:40]!r}, not accuracy on labelled data")
        limits = (
            ("accuracy drop", gate.drop_points, policy.max_drop_points, "max", " points"),
            ("quantized accuracy", gate.quantized_accuracy, policy.min_accuracy, "min", "%"),
            ("relative RMS error", gate.relative_rmse, policy.max_relative_rmse, "max", ""),
            ("cosine similarity", gate.cosine, policy.min_cosine, "min", ""),
            ("evaluation samples", gate.samples, policy.min_samples, "min", ""),
        )
        for what, actual, bound, kind, unit in limits:
            if bound is None:
                continue
            if actual is None:
                out.append(f"the gate did not measure {what} (policy: {kind} {bound:g}{unit})")
            elif (actual > bound) if kind == "max" else (actual < bound):
                word = "above the maximum" if kind == "max" else "below the minimum"
                out.append(f"{what} {actual:g}{unit} is {word} of {bound:g}{unit}")
        return out

    def check(self, facts: Provenance) -> None:
        """Raises:
        ProvenancePolicyError: listing every violation.
        """
        problems = self.violations(facts)
        if problems:
            raise ProvenancePolicyError(
                f"provenance does not meet policy {Path(self.source).name or 'policy'}: "
                + "; ".join(problems)
            )


def _gate(raw: Any, bad: Any) -> GatePolicy:
    if not isinstance(raw, dict):
        raise bad("[gate] must be a table")
    unknown = set(raw) - {"require_labels", *_GATE_NUMBERS}
    if unknown:
        raise bad(f"unknown gate setting(s) {', '.join(sorted(unknown))}")
    numbers: dict[str, float] = {}
    for name in _GATE_NUMBERS:
        if name in raw:
            value = raw[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise bad(f"gate.{name} must be a number")
            numbers[name] = float(value)
    labels = raw.get("require_labels", False)
    if not isinstance(labels, bool):
        raise bad("gate.require_labels must be true or false")
    return GatePolicy(require_labels=labels, **numbers)
