"""The provenance policy file: what it accepts, what it refuses, and how it reads attested facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_sdk.errors import KeyFileError, ProvenancePolicyError, UsageError
from edge_sdk.fleet.provenance_policy import ProvenancePolicy
from edge_sdk.format.attestation import Gate, Material, Provenance

from .provenance_kit import model_signing_keypair


def _facts(**changes: object) -> Provenance:
    base: dict[str, object] = {
        "model_sha256": "aa" * 32,
        "payload_sha256": "bb" * 32,
        "bundle_name": "digits",
        "bundle_version": 1,
        "profile": "rpi4",
        "source": Material("source-model", "digits.keras", "cc" * 32),
        "materials": (
            Material("tool", "tensorflow", version="2.21.0"),
            Material("tool", "edgepkg", version="0.1.0"),
            Material("evaluation-data", "eval.npz", "dd" * 32),
        ),
        "converter": "tensorflow 2.21.0",
        "quantization": "int8",
        "sparsity": None,
        "gate": Gate("accuracy", True, 397, 0.25, 98.0, 97.75),
        "builder_id": "urn:edge-sdk:builder:package",
        "started_on": "",
        "finished_on": "",
    }
    base.update(changes)
    return Provenance(**base)  # type: ignore[arg-type]


def _load(tmp_path: Path, text: str) -> ProvenancePolicy:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return ProvenancePolicy.load(path)


def test_an_empty_policy_accepts_any_verified_history(tmp_path: Path) -> None:
    policy = _load(tmp_path, "")
    assert policy.violations(_facts()) == []
    policy.check(_facts())


def test_sigstore_identities_match_identity_and_issuer(tmp_path: Path) -> None:
    policy = _load(tmp_path, 'sigstore_identities = [{identity = "ml@example.com", '
                             'issuer = "https://accounts.example.com"}]\n')  # fmt: skip
    signed = {"verified": "true", "method": "sigstore", "signer": "ml@example.com",
              "issuer": "https://accounts.example.com"}  # fmt: skip
    good = _facts(source=Material("source-model", "m", "cc" * 32, signature=signed))
    assert policy.violations(good) == []
    other_issuer = {**signed, "issuer": "https://evil.example.com"}
    bad = _facts(source=Material("source-model", "m", "cc" * 32, signature=other_issuer))
    assert "is not an allowed Sigstore identity" in policy.violations(bad)[0]
    unsigned = policy.violations(_facts())
    assert unsigned == ["the source model's signature was not verified at packaging"]


def test_model_signers_from_key_files_and_ids(tmp_path: Path) -> None:
    _, pub = model_signing_keypair(tmp_path, "training")
    from edge_sdk.host.model_signature import signer_key_id

    key_id = signer_key_id(pub)
    for entry in ("training.pub", key_id):
        policy = _load(tmp_path, f'model_signers = ["{entry}"]\n')
        assert policy.model_signers == {key_id} and policy.require_model_signature
        signed = {"verified": "true", "method": "key", "signer": key_id}
        assert (
            policy.violations(
                _facts(source=Material("source-model", "m", "c" * 64, signature=signed))
            )
            == []
        )
    with pytest.raises(KeyFileError, match="does not exist"):
        _load(tmp_path, 'model_signers = ["missing.pub"]\n')


def test_gate_requirements(tmp_path: Path) -> None:
    policy = _load(
        tmp_path, "[gate]\nrequire_labels = true\nmin_cosine = 0.99\nmin_samples = 500\n"
    )
    problems = policy.violations(_facts())
    assert problems == [
        "the gate did not measure cosine similarity (policy: min 0.99)",
        "evaluation samples 397 is below the minimum of 500",
    ]
    output_error = Gate("output-error", True, 64, relative_rmse=0.01, cosine=0.999)
    assert "not accuracy on labelled data" in policy.violations(_facts(gate=output_error))[0]
    assert policy.violations(_facts(gate=None)) == ["no passed accuracy gate is attested"]
    with pytest.raises(ProvenancePolicyError, match="does not meet policy policy.toml: the gate"):
        policy.check(_facts())


def test_patterns_and_missing_facts(tmp_path: Path) -> None:
    policy = _load(tmp_path, 'converters = ["tensorflow 2.21.*"]\nedge_sdk_versions = ["0.1.*"]\n')
    assert policy.violations(_facts()) == []
    assert policy.violations(_facts(converter=None)) == [
        "converter none recorded is not allowed (allowed: tensorflow 2.21.*)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_accuracy_drop = 1\n", "unknown setting(s) max_accuracy_drop"),
        ('converters = "tensorflow"\n', "converters must be a list of strings"),
        ("require_model_signature = 1\n", "must be true or false"),
        ('require_data = ["tool"]\n', "is not calibration-data"),
        ('sigstore_identities = [{identity = "a"}]\n', "exactly identity and issuer"),
        ("[gate]\nmin_accuracy = true\n", "gate.min_accuracy must be a number"),
        ("[gate]\nmin_acuracy = 90\n", "unknown gate setting(s) min_acuracy"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_malformed_policies_are_usage_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, text)


def test_missing_policy_file_on_the_command_line(
    cli: object, tmp_path: Path, key_files: dict[str, Path]
) -> None:
    result = cli(
        "audit", tmp_path, "--trust", key_files["signer.pub"], "--policy", tmp_path / "nope.toml"
    )  # type: ignore[operator]
    assert result.code == 2 and "policy file" in result.err and "does not exist" in result.err
