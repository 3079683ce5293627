"""Build attestations without TensorFlow: in-toto interop, binding to the bundle, hostile input.

Bundles here are packaged from the committed ready-made .tflite (no conversion), so every test is
fast; tests/test_model_signing.py covers real Keras conversions.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import BundleFormatError, ProvenanceError
from edge_sdk.format.attestation import (
    check_signatures,
    dsse_keyid,
    read_attestation,
    sign_statement,
    verified_attestation,
)
from edge_sdk.format.bundle import bundle_to_bytes, read_bundle, save_bundle
from edge_sdk.format.manifest import Manifest, Target
from edge_sdk.format.strict_json import canonical_bytes
from edge_sdk.format.verify import open_bundle
from edge_sdk.host.provenance import path_sha256
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey

from .conftest import REPO, KeySet
from .provenance_kit import VECTOR_MODEL, in_toto_keys, in_toto_verify, package_tflite

VECTORS = Path(__file__).parent / "vectors"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory, keyset: KeySet) -> dict[str, Path]:
    """The vector model packaged by each kind of publisher key (signed-only and encrypted)."""
    tmp = tmp_path_factory.mktemp("attested")
    out = {}
    for kind in ("signer", "ecdsa", "hybrid"):
        out[kind] = package_tflite(tmp / f"{kind}.edgepkg", [getattr(keyset, kind)]).path
    return out


def _reseal(
    keyset: KeySet, manifest: Manifest, envelope: Any, signer: PrivateKey | None = None
) -> bytes:
    """A bundle of the vector model whose manifest carries ``envelope``, properly signed by the
    publisher — so only the attestation checks stand between it and acceptance."""
    reports = {k: v for k, v in manifest.reports.items() if k != "provenance"}
    if envelope is not None:
        reports["provenance"] = envelope
    bundle = seal_bundle(
        VECTOR_MODEL.read_bytes(), name=manifest.name, version=manifest.version,
        target=manifest.target, signers=[signer or keyset.signer], reports=reports,
        compression=manifest.payload.compression,
    )  # fmt: skip
    return bundle_to_bytes(bundle)


def _statement(path: Path) -> dict[str, Any]:
    attestation = read_attestation(read_bundle(path).manifest)
    assert attestation is not None
    return json.loads(attestation.statement_bytes)


# -- standard tooling ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["signer", "ecdsa", "hybrid"])
def test_exported_attestation_verifies_with_in_toto(
    packaged: dict[str, Path], keyset: KeySet, kind: str, cli: Any, tmp_path: Path
) -> None:
    key = getattr(keyset, kind)
    out = tmp_path / "m.intoto.json"
    result = cli("attest", packaged[kind], "-o", out, "--trust", _pub(tmp_path, key))
    assert result.code == 0, result.err
    statement = in_toto_verify(out.read_bytes(), key.public)
    manifest = read_bundle(packaged[kind]).manifest
    assert statement["subject"][0]["digest"]["sha256"] == manifest.model.sha256
    assert (
        statement["subject"][0]["digest"]["sha256"]
        == hashlib.sha256(VECTOR_MODEL.read_bytes()).hexdigest()
    )
    assert statement["subject"][1]["digest"]["sha256"] == manifest.payload.sha256
    # The exported envelope is exactly the one the signed manifest holds.
    assert json.loads(out.read_bytes()) == manifest.reports["provenance"]
    bare = cli("attest", packaged[kind], "--statement")
    assert json.loads(bare.out) == statement


def test_hybrid_attestation_needs_both_halves_in_in_toto(
    packaged: dict[str, Path], keyset: KeySet
) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    raw = read_bundle(packaged["hybrid"]).manifest.reports["provenance"]
    ed, ml = in_toto_keys(keyset.hybrid.public)
    assert ml.scheme == "ml-dsa-65/1"
    envelope = Envelope.from_dict(json.loads(json.dumps(raw)))
    assert set(envelope.verify([ed, ml], 2)) == {ed.keyid, ml.keyid}
    # Dropping the ML-DSA signature leaves a classical-only envelope: threshold 2 refuses it.
    only_ed = json.loads(json.dumps(raw))
    only_ed["signatures"] = [s for s in only_ed["signatures"] if s["keyid"] == ed.keyid]
    with pytest.raises(VerificationError):
        Envelope.from_dict(only_ed).verify([ed, ml], 2)


def test_in_toto_refuses_an_altered_statement(packaged: dict[str, Path], keyset: KeySet) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    raw = json.loads(json.dumps(read_bundle(packaged["signer"]).manifest.reports["provenance"]))
    statement = json.loads(base64.b64decode(raw["payload"]))
    statement["predicate"]["buildDefinition"]["externalParameters"]["quantization"] = "none"
    raw["payload"] = base64.b64encode(canonical_bytes(statement)).decode()
    with pytest.raises(VerificationError):
        Envelope.from_dict(raw).verify(in_toto_keys(keyset.signer.public), 1)


def test_dsse_keyids_are_securesystemslib_default_keyids(keyset: KeySet) -> None:
    from securesystemslib.signer import SSlibKey

    for key in (keyset.signer, keyset.ecdsa, keyset.hybrid):
        for component in key.public.components:
            assert dsse_keyid(component) == SSlibKey.from_crypto(component).keyid


def test_directory_digest_matches_the_documented_shell_pipeline(tmp_path: Path) -> None:
    tree = tmp_path / "images"
    (tree / "b" / "c").mkdir(parents=True)
    for rel, data in {"a.png": b"1", "b/z.png": b"22", "b/c/é n.png": b"333", "B.png": b""}.items():
        (tree / rel).write_bytes(data)
    shell = subprocess.run(
        "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum",
        shell=True, cwd=tree, capture_output=True, text=True, check=True,
    ).stdout.split()[0]  # fmt: skip
    assert path_sha256(tree) == shell
    assert path_sha256(tree / "a.png") == hashlib.sha256(b"1").hexdigest()


# -- binding and signatures -------------------------------------------------------------------------


def test_attestation_is_bound_to_its_bundle(packaged: dict[str, Path], keyset: KeySet) -> None:
    trust = keyset.trust()
    manifest = read_bundle(packaged["signer"]).manifest
    attestation = verified_attestation(manifest, trust)
    facts = attestation.provenance
    assert (facts.bundle_name, facts.bundle_version, facts.profile) == ("m", 1, "x86_64")
    assert facts.source.name == "model.tflite" and facts.source.signature == {}
    assert facts.tool("edgepkg") == version("edgepkg")
    assert check_signatures(attestation, trust) == (keyset.signer.key_id,)
    # Another trust store (the ECDSA key alone) does not accept it.
    with pytest.raises(ProvenanceError, match="signed by 0 trusted key"):
        check_signatures(attestation, keyset.trust(keyset.ecdsa))


def test_replayed_attestation_from_another_bundle_is_refused(
    tmp_path: Path, keyset: KeySet
) -> None:
    """Same model, same name and version, but another bundle: the payload subject differs."""
    first = package_tflite(tmp_path / "a.edgepkg", [keyset.signer]).bundle.manifest
    second = package_tflite(tmp_path / "b.edgepkg", [keyset.signer]).bundle.manifest
    assert first.model.sha256 == second.model.sha256
    replayed = _reseal(keyset, second, first.reports["provenance"])
    with pytest.raises(ProvenanceError, match="copied from another bundle"):
        read_attestation(read_bundle(replayed).manifest)


def test_attestation_about_another_model_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    manifest = package_tflite(tmp_path / "a.edgepkg", [keyset.signer]).bundle.manifest
    statement = _statement(tmp_path / "a.edgepkg")
    statement["subject"][0]["digest"]["sha256"] = "ab" * 32
    forged = sign_statement(statement, [keyset.signer])  # even signed by the publisher
    with pytest.raises(ProvenanceError, match="is about model abababababababab"):
        read_attestation(read_bundle(_reseal(keyset, manifest, forged)).manifest)


def test_attestation_for_another_release_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    manifest = package_tflite(tmp_path / "a.edgepkg", [keyset.signer]).bundle.manifest
    statement = _statement(tmp_path / "a.edgepkg")
    statement["predicate"]["buildDefinition"]["externalParameters"]["bundle"]["version"] = 2
    forged = sign_statement(statement, [keyset.signer])
    with pytest.raises(ProvenanceError, match="not for this bundle, m v1"):
        read_attestation(read_bundle(_reseal(keyset, manifest, forged)).manifest)


def test_forged_and_partial_signatures(tmp_path: Path, keyset: KeySet) -> None:
    manifest = package_tflite(tmp_path / "h.edgepkg", [keyset.hybrid]).bundle.manifest
    attestation = read_attestation(manifest)
    assert attestation is not None
    trust = keyset.trust(keyset.hybrid)
    assert check_signatures(attestation, trust) == (keyset.hybrid.key_id,)
    (ed_id, ed_sig), (ml_id, ml_sig) = attestation.signatures
    forged = dataclasses.replace(attestation, signatures=((ed_id, bytes(64)), (ml_id, ml_sig)))
    with pytest.raises(ProvenanceError, match="does not verify"):
        check_signatures(forged, trust)
    # Only the Ed25519 half: a hybrid publisher does not count.
    half = dataclasses.replace(attestation, signatures=((ed_id, ed_sig),))
    with pytest.raises(ProvenanceError, match="signed by 0 trusted key"):
        check_signatures(half, trust)
    # A revoked publisher's signature does not count either.
    revoked = keyset.trust(keyset.hybrid, keyset.signer, revoked=(keyset.hybrid.key_id,))
    with pytest.raises(ProvenanceError, match="signed by 0 trusted key"):
        check_signatures(attestation, revoked)


# -- hostile attestations: bounded, typed ---------------------------------------------------------


def _hostile_cases(good: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    payload = json.loads(base64.b64decode(good["payload"]))

    def with_payload(body: bytes) -> dict[str, Any]:
        return {**good, "payload": base64.b64encode(body).decode()}

    deep: Any = {}
    for _ in range(40):
        deep = {"x": deep}
    return {
        "not an object": ("attestation", "envelope must be an object"),
        "huge statement": (with_payload(b" " * 100_000), "over the limit"),
        "not base64": ({**good, "payload": "***"}, "not valid base64"),
        "not json": (with_payload(b"\xff{"), "malformed JSON in attestation statement"),
        "deep": (with_payload(canonical_bytes(deep)), "nested deeper than 32"),
        "wrong payload type": ({**good, "payloadType": "text/plain"}, "payloadType 'text/plain'"),
        "extra field": ({**good, "x": 1}, "unknown field"),
        "not a statement": (with_payload(b"[1, 2]"), "statement must be an object"),
        "wrong predicate": (
            with_payload(canonical_bytes({**payload, "predicateType": "https://x/y"})),
            "not SLSA Provenance v1",
        ),
        "no subject": (with_payload(canonical_bytes({**payload, "subject": []})), "2 subjects"),
        "bad digest": (
            with_payload(
                canonical_bytes({**payload, "subject": [{"digest": {"sha256": "zz"}}] * 2})
            ),
            "64 lowercase hex",
        ),
        "many signatures": (
            {**good, "signatures": [{"keyid": "0" * 64, "sig": ""}] * 40},
            "at most 32",
        ),
        "control characters": (
            with_payload(canonical_bytes({**payload, "_type": "\x1b[2J" * 40})),
            "is not an in-toto Statement",
        ),
    }


def test_hostile_attestations_are_typed_and_bounded(
    tmp_path: Path, keyset: KeySet, cli: Any, key_files: dict[str, Path]
) -> None:
    manifest = package_tflite(tmp_path / "good.edgepkg", [keyset.signer]).bundle.manifest
    good = json.loads(json.dumps(manifest.reports["provenance"]))
    for name, (envelope, message) in _hostile_cases(good).items():
        path = tmp_path / "hostile.edgepkg"
        path.write_bytes(_reseal(keyset, manifest, envelope))
        with pytest.raises(ProvenanceError, match=message) as caught:
            read_attestation(read_bundle(path).manifest)
        assert len(caught.value.message) < 400, name
        assert "\x1b" not in caught.value.message, name
        exported = cli("attest", path)
        assert exported.code == 28 and "error:" in exported.err, name
        shown = cli("inspect", path)
        assert shown.code == 0 and "INVALID" in shown.out, name
        audited = cli("audit", path, "--trust", key_files["signer.pub"], "--require-provenance",
                      "--format", "json")  # fmt: skip
        row = audited.json()["rows"][0]
        assert audited.code == 1 and row["kind"] == "provenance", name
        # A device does not read attestations: the bundle still opens.
        assert open_bundle(path, keyset.trust(), None).model_bytes == VECTOR_MODEL.read_bytes()


def test_attestation_too_large_for_the_manifest_is_a_format_error(
    tmp_path: Path, keyset: KeySet, cli: Any
) -> None:
    manifest = package_tflite(tmp_path / "good.edgepkg", [keyset.signer]).bundle.manifest
    huge = {**manifest.reports["provenance"], "payload": "A" * 300_000}
    path = tmp_path / "huge.edgepkg"
    path.write_bytes(_reseal(keyset, manifest, huge))
    with pytest.raises(BundleFormatError, match="manifest length"):
        read_bundle(path)
    assert cli("attest", path).code == 10


# -- older bundles ----------------------------------------------------------------------------------


def test_committed_vectors_have_no_attestation_and_that_is_defined(
    cli: Any, tmp_path: Path
) -> None:
    for path in sorted(VECTORS.glob("*.edgepkg")):
        assert read_attestation(read_bundle(path).manifest) is None
        assert cli("inspect", path).out.count("none (no build attestation)") == 1
        assert cli("attest", path).code == 28
    audited = cli("audit", VECTORS / "v1-ed25519-signed-only.edgepkg", "--trust",
                  VECTORS / "keys" / "signer-ed25519.pub", "--require-provenance", "--format", "json")  # fmt: skip
    row = audited.json()["rows"][0]
    assert row["kind"] == "provenance" and "carries no build attestation" in row["reason"]
    plain = cli("audit", VECTORS / "v1-ed25519-signed-only.edgepkg", "--trust",
                VECTORS / "keys" / "signer-ed25519.pub", "--format", "json")  # fmt: skip
    assert plain.json()["rows"][0]["status"] != "error"


def test_attestation_survives_recipients_add(tmp_path: Path, keyset: KeySet) -> None:
    from edge_sdk.host.sealing import add_recipients

    bundle = seal_bundle(
        VECTOR_MODEL.read_bytes(), name="m", version=1, target=Target("x86_64"),
        signers=[keyset.signer], recipients=[keyset.device.public],
        attest=lambda m: sign_statement(_minimal_statement(m), [keyset.signer]),
    )  # fmt: skip
    grown = add_recipients(bundle, keyset.device, [keyset.device2.public])
    save_bundle(grown, tmp_path / "g.edgepkg")
    reread = verified_attestation(read_bundle(tmp_path / "g.edgepkg").manifest, keyset.trust())
    assert reread.provenance.source.name == "m.keras"  # recipients are outside the manifest


def _minimal_statement(manifest: Manifest) -> dict[str, Any]:
    """The smallest statement edge-sdk accepts, to show seal_bundle's hook on its own."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {"name": "m.tflite", "digest": {"sha256": manifest.model.sha256}},
            {"name": "m-1.payload", "digest": {"sha256": manifest.payload.sha256}},
        ],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "urn:edge-sdk:package:v1",
                "externalParameters": {
                    "bundle": {"name": "m", "version": 1, "profile": "x86_64"},
                    "quantization": "none",
                },
                "resolvedDependencies": [
                    {"name": "m.keras", "digest": {"sha256": "00" * 32},
                     "annotations": {"role": "source-model"}}
                ],
            },
            "runDetails": {
                "builder": {"id": "urn:edge-sdk:builder:package"},
                "metadata": {"invocationId": manifest.payload.content_id},
            },
        },
    }  # fmt: skip


def test_device_and_cli_paths_import_no_provenance_tooling(packaged: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "from edge_sdk.format.verify import open_bundle\n"
        "from edge_sdk.keys import TrustStore, load_public_key\n"
        "from edge_sdk.cli import main\n"
        f"try:\n    main(['inspect', {str(packaged['signer'])!r}])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('model_signing', 'in_toto', 'in_toto_attestation', 'sigstore', 'tensorflow', 'OpenSSL')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)


def _pub(tmp_path: Path, key: PrivateKey) -> Path:
    path = tmp_path / f"{key.key_id[:8]}.pub"
    path.write_bytes(key.public.to_pem())
    return path


def test_package_and_inspect_report_provenance_as_json(
    tmp_path: Path, cli: Any, key_files: dict[str, Path]
) -> None:
    out = tmp_path / "m.edgepkg"
    common = ["package", VECTOR_MODEL, "--profile", "x86_64", "--sign-key", key_files["signer"],
              "--name", "m", "--version", "4", "-o", out, "--json"]  # fmt: skip
    # A .tflite input is sealed as it is: data to evaluate it with cannot apply (issue 14).
    refused = cli(*common, "--eval", VECTOR_MODEL)
    assert refused.code == 2 and "--eval cannot apply" in refused.out and not out.exists()
    packaged = cli(*common)
    assert packaged.code == 0, packaged.err
    summary = packaged.json()["provenance"]
    assert summary["valid"] and summary["source"]["model_signature"] is None
    assert summary["source"]["sha256"] == hashlib.sha256(VECTOR_MODEL.read_bytes()).hexdigest()
    assert summary["data"] == []  # data files are attested for conversions (test_model_signing)
    inspected = cli("inspect", out, "--json").json()["provenance"]
    assert inspected == summary
