"""From a model signed with OpenSSF model-signing to an attested bundle, and the audit policy.

Real components throughout: model-signing signs and verifies (key-based, offline, a fresh P-256
key), TensorFlow converts, in-toto's libraries verify the exported attestation, and the audit
policy decides over real bundles on disk and on a deploy target.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk.errors import ModelSignatureError, ProvenanceError, UsageError
from edge_sdk.format.attestation import read_attestation
from edge_sdk.format.bundle import read_bundle
from edge_sdk.format.verify import open_bundle
from edge_sdk.host.model_signature import ModelSignatureOptions, _mismatch, verify_model_signature
from edge_sdk.host.provenance import path_sha256

from . import models
from .conftest import KeySet
from .provenance_kit import (
    VECTOR_MODEL,
    in_toto_verify,
    model_signing_keypair,
    package_tflite,
    sign_model,
)

pytestmark = pytest.mark.host  # the signed model is a trained Keras model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _openssl_key_id(pub: Path) -> str:
    """The model signer's key id as a reviewer computes it with openssl."""
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(pub), "-outform", "DER"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained Keras model signed by a training key, another key, and the data files."""
    tmp = tmp_path_factory.mktemp("signed-model")
    model = tmp / "digits.keras"
    shutil.copyfile(models.digits_cnn(), model)
    key, pub = model_signing_keypair(tmp, "training")
    _, other = model_signing_keypair(tmp, "other")
    return {
        "dir": tmp,
        "model": model,
        "key": key,
        "pub": pub,
        "other.pub": other,
        "sig": sign_model(model, key, tmp / "digits.sig"),
        "calib": models.digits_npz(tmp, split="train", with_labels=False),
        "eval": models.digits_npz(tmp, split="test"),
    }


@pytest.fixture(scope="module")
def bundle(work: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`edge-sdk package` of the signed model, through the CLI, once for the module."""
    from edge_sdk.cli import main
    from edge_sdk.keys import generate_key, save_keypair

    tmp = tmp_path_factory.mktemp("bundle")
    publisher = generate_key("signing", "ecdsa-p256")
    key, pub = save_keypair(publisher, tmp / "publisher")
    out = tmp / "digits.edgepkg"
    args = [str(work["model"]), "--profile", "x86_64", "--sign-key", str(key), "--name", "digits",
            "--version", "3", "--quantize", "dynamic", "--calibration", str(work["calib"]),
            "--eval", str(work["eval"]), "--model-signature", str(work["sig"]),
            "--model-signer", str(work["pub"]), "-o", str(out), "--json"]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main(["package", *args])
    assert done.value.code in (0, None)
    return {"path": out, "publisher": publisher, "pub": pub}


# -- packaging a signed model ------------------------------------------------------------------------


def test_signed_keras_model_is_packaged_and_attested(
    bundle: dict[str, Any], work: dict[str, Path], cli: Any, tmp_path: Path
) -> None:
    import tensorflow as tf

    exported = tmp_path / "digits.intoto.json"
    result = cli("attest", bundle["path"], "-o", exported, "--trust", bundle["pub"])
    assert result.code == 0, result.err
    statement = in_toto_verify(exported.read_bytes(), bundle["publisher"].public)
    model_bytes = open_bundle(bundle["path"], _trust(bundle), None).model_bytes
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()

    build = statement["predicate"]["buildDefinition"]
    deps = {d["annotations"]["role"] + ":" + d["name"]: d for d in build["resolvedDependencies"]}
    source = deps["source-model:digits.keras"]
    assert source["digest"]["sha256"] == _sha256(work["model"])
    signed = source["annotations"]["modelSigning"]
    assert signed["verified"] == "true" and signed["method"] == "key"
    assert signed["signer"] == _openssl_key_id(work["pub"])
    assert signed["signatureSha256"] == _sha256(work["sig"])
    signature_statement = json.loads(
        base64.b64decode(json.loads(work["sig"].read_text())["dsseEnvelope"]["payload"])
    )
    assert signed["rootDigest"] == signature_statement["subject"][0]["digest"]["sha256"]
    assert deps[f"calibration-data:{work['calib'].name}"]["digest"]["sha256"] == _sha256(
        work["calib"]
    )
    assert deps[f"evaluation-data:{work['eval'].name}"]["digest"]["sha256"] == _sha256(work["eval"])
    assert deps["tool:tensorflow"]["annotations"]["version"] == tf.__version__
    assert deps["converter:converter"]["annotations"]["version"] == f"tensorflow {tf.__version__}"
    assert deps["tool:edgepkg"]["uri"] == f"pkg:pypi/edgepkg@{version('edgepkg')}"
    assert build["externalParameters"]["quantization"] == "dynamic"
    assert build["externalParameters"]["bundle"] == {
        "name": "digits",
        "version": 3,
        "profile": "x86_64",
    }
    manifest = read_bundle(bundle["path"]).manifest
    gate = build["internalParameters"]["accuracyGate"]
    assert gate == manifest.reports["accuracy"] and gate["metric"] == "accuracy" and gate["passed"]
    # inspect shows the same facts, and the package summary did too.
    shown = cli("inspect", bundle["path"])
    assert f"model-signing signature by key {signed['signer'][:16]} verified" in shown.out
    assert "evaluation-data" in shown.out and f"converter tensorflow {tf.__version__}" in shown.out


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("tampered", 27, "does not match its signature: digits.keras changed since it was signed"),
        ("wrong signer", 27, "was not signed by the expected signer"),
        ("no signature given", 27, "no model signature given"),
        ("signature file missing", 27, "does not exist: refusing to convert an unsigned model"),
        ("not a signature", 27, "malformed or unsupported signature"),
        ("signature without signer", 2, "needs the expected signer"),
    ],
)
def test_unverified_models_are_refused_before_conversion(
    work: dict[str, Path], cli: Any, key_files: dict[str, Path], tmp_path: Path,
    case: str, code: int, message: str,
) -> None:  # fmt: skip
    model, sig, signer = work["model"], work["sig"], work["pub"]
    if case == "tampered":
        model = tmp_path / "digits.keras"
        data = bytearray(work["model"].read_bytes())
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
    elif case == "wrong signer":
        signer = work["other.pub"]
    elif case == "signature file missing":
        sig = tmp_path / "nowhere.sig"
    elif case == "not a signature":
        sig = tmp_path / "garbage.sig"
        sig.write_text('{"mediaType": "x"}')
    flags: list[Any] = {
        "no signature given": ["--model-signer", signer],
        "signature without signer": ["--model-signature", sig],
    }.get(case, ["--model-signature", sig, "--model-signer", signer])
    out = tmp_path / "b.edgepkg"
    result = cli("package", model, "--profile", "x86_64", "--sign-key", key_files["signer"],
                 "--name", "digits", "--version", "1", "-o", out, *flags)  # fmt: skip
    assert result.code == code, result.err
    assert message in result.err
    if case in ("tampered", "wrong signer", "not a signature"):
        assert f"(signature {sig})" in result.err  # the user's file, not a private copy
    assert "digest_value" not in result.err  # no Python reprs of the library's objects
    assert not out.exists()


def test_refusals_are_typed_in_the_library(
    work: dict[str, Path], keyset: KeySet, tmp_path: Path
) -> None:
    with pytest.raises(ModelSignatureError, match="not signed by the expected signer"):
        package_tflite(tmp_path / "x.edgepkg", [keyset.signer], model=work["model"],
                       check=ModelSignatureOptions(work["sig"], work["other.pub"]))  # fmt: skip
    with pytest.raises(ModelSignatureError, match="no model signature given"):
        ModelSignatureOptions(signer_key=work["pub"])
    with pytest.raises(UsageError, match="go together"):
        ModelSignatureOptions(work["sig"], identity="ml@example.com")


def test_signed_model_is_converted_from_the_verified_copy(
    tmp_path: Path, keyset: KeySet, work: dict[str, Path]
) -> None:
    """Whoever can write the model's path cannot swap it between verification and conversion."""
    model = tmp_path / "model.tflite"
    shutil.copyfile(VECTOR_MODEL, model)
    sig = sign_model(model, work["key"], tmp_path / "model.sig")
    original = model.read_bytes()
    swapped = []

    def swap(step: str) -> None:
        if step == "load" and not swapped:
            model.write_bytes(b"TFL3 a different model")  # after verification, before reading
            swapped.append(step)

    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.profiles import load_profile

    options = PackageOptions(name="m", version=1,
                             model_signature=ModelSignatureOptions(sig, work["pub"]))  # fmt: skip
    result = package_model(model, tmp_path / "m.edgepkg", load_profile("x86_64"), options,
                           [keyset.signer], progress=swap)  # fmt: skip
    assert swapped == ["load"]
    opened = open_bundle(result.path, keyset.trust(), None).model_bytes
    assert opened == original
    attestation = read_attestation(result.bundle.manifest)
    assert attestation is not None
    assert attestation.provenance.source.sha256 == hashlib.sha256(original).hexdigest()


def test_input_changed_during_packaging_is_refused(
    tmp_path: Path, keyset: KeySet, work: dict[str, Path]
) -> None:
    data = tmp_path / "eval.npz"
    shutil.copyfile(work["eval"], data)

    def rewrite(step: str) -> None:
        if step == "load":  # still valid data, other bytes (a .tflite input takes no --eval)
            with np.load(work["eval"]) as loaded:
                np.savez(data, x=loaded["x"][::-1], y=loaded["y"][::-1])

    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.profiles import load_profile

    out = tmp_path / "m.edgepkg"
    with pytest.raises(ProvenanceError, match="changed while it was being packaged"):
        package_model(work["model"], out, load_profile("x86_64"),
                      PackageOptions(name="m", version=1, quantize="none", evaluation=data),
                      [keyset.signer], progress=rewrite)  # fmt: skip
    assert not out.exists()


# -- a model that is a directory ----------------------------------------------------------------------


def test_tampered_model_names_the_changed_file_wherever_the_flip_lands(
    work: dict[str, Path], tmp_path: Path
) -> None:
    """Every flip position gives the same message: the changed file's name, never digest reprs.

    The digest of a changed file is arbitrary bytes; when its repr held both quote characters,
    the old message fell back to quoting the library's diff. 128 positions spread over the file
    make (with the literal cases below) a test that cannot pass by luck.
    """
    genuine = work["model"].read_bytes()
    check = ModelSignatureOptions(work["sig"], work["pub"])
    model = tmp_path / "digits.keras"
    for position in range(0, len(genuine), max(1, len(genuine) // 128)):
        data = bytearray(genuine)
        data[position] ^= 0x01
        model.write_bytes(bytes(data))
        with pytest.raises(ModelSignatureError) as caught:
            verify_model_signature(model, work["sig"], check)
        message = str(caught.value)
        assert "digits.keras changed since it was signed" in message, (position, message)
        assert "\\x" not in message and "Expected" not in message, (position, message)


@pytest.mark.parametrize(
    "digest",
    ["b'\\x00'", 'b"\'"', "b'\\''", "b'\"'", 'b"\'\\"\'"', "Digest(b'\"\\'')"],
)
def test_mismatch_reads_the_library_diff_whatever_its_digests_hold(digest: str) -> None:
    """The library's message is the str() of a list; quotes inside digests must not matter."""
    diffs = [
        "Extra files found in model 'm': a.bin, b'q.bin",
        "Missing files in model 'm': gone.bin",
        f"Hash mismatch for 'w.bin': Expected '{digest}', Actual '{digest[::-1]}'",
        f"Hash mismatch for '.': Expected '{digest}', Actual 'x'",
    ]
    text = f"Signature mismatch: {diffs}"
    assert _mismatch(text, "digits.keras") == (
        "w.bin, digits.keras changed since it was signed; files not in the signature: "
        "a.bin, b'q.bin; signed files missing: gone.bin"
    )
    # Not the library's shape: a fixed sentence, never the unverified text.
    assert (
        _mismatch("Signature mismatch: [1, 2]", "m") == "its files do not match the signed digests"
    )
    assert _mismatch("Signature mismatch: ('", "m") == "its files do not match the signed digests"


def test_directory_model_extra_and_ignored_files_are_refused(
    tmp_path: Path, keyset: KeySet, work: dict[str, Path]
) -> None:
    model = tmp_path / "model"
    (model / "variables").mkdir(parents=True)
    (model / "model.tflite").write_bytes(VECTOR_MODEL.read_bytes())
    (model / "variables" / "w.bin").write_bytes(b"weights")
    (model / ".git").mkdir()
    (model / ".git" / "config").write_text("[core]\n")
    sig = sign_model(model, work["key"], model / "model.sig")  # inside; ignores .git by default
    check = ModelSignatureOptions(sig, work["pub"])
    # .git is excluded by the signature's own ignore_paths: it would reach the converter unsigned.
    with pytest.raises(
        ModelSignatureError, match=r"1 file\(s\) its signature does not cover: '.git/config'"
    ):
        package_tflite(tmp_path / "a.edgepkg", [keyset.signer], model=model, check=check)
    shutil.rmtree(model / ".git")
    (model / "variables" / "extra.bin").write_bytes(b"planted")
    with pytest.raises(
        ModelSignatureError, match="files not in the signature: variables/extra.bin"
    ):
        package_tflite(tmp_path / "b.edgepkg", [keyset.signer], model=model, check=check)
    (model / "variables" / "extra.bin").unlink()
    (model / "variables" / "w.bin").write_bytes(b"weightz")
    with pytest.raises(ModelSignatureError, match="variables/w.bin changed since it was signed"):
        package_tflite(tmp_path / "c.edgepkg", [keyset.signer], model=model, check=check)


def test_signed_savedmodel_directory_is_packaged(
    tmp_path: Path, keyset: KeySet, work: dict[str, Path]
) -> None:
    """A SavedModel signed as a directory, with its signature stored inside it."""
    model = tmp_path / "digits-savedmodel"
    shutil.copytree(models.digits_savedmodel(), model)
    sig = sign_model(model, work["key"], model / "model.sig")
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.profiles import load_profile

    options = PackageOptions(name="digits", version=1, quantize="none",
                             model_signature=ModelSignatureOptions(sig, work["pub"]))  # fmt: skip
    result = package_model(model, tmp_path / "d.edgepkg", load_profile("x86_64"), options,
                           [keyset.signer])  # fmt: skip
    attestation = read_attestation(result.bundle.manifest)
    assert attestation is not None
    source = attestation.provenance.source
    unsigned_copy = tmp_path / "copy"
    shutil.copytree(model, unsigned_copy, ignore=shutil.ignore_patterns("model.sig"))
    assert source.name == "digits-savedmodel" and source.sha256 == path_sha256(unsigned_copy)
    assert source.signature["modelName"] == "digits-savedmodel"


# -- Sigstore keyless (what can be checked offline) ---------------------------------------------------


def test_keyless_options_and_offline_trust_config(
    tmp_path: Path, work: dict[str, Path], cli: Any, key_files: dict[str, Path]
) -> None:
    """A keyless check runs model-signing's Sigstore verifier; a key-based signature fails it."""
    import sigstore

    store = Path(sigstore.__file__).parent / "_store" / "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev"
    config = tmp_path / "trust_config.json"
    config.write_text(json.dumps({
        "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
        "trustedRoot": json.loads((store / "trusted_root.json").read_text()),
        "signingConfig": json.loads((store / "signing_config.v0.2.json").read_text()),
    }))  # fmt: skip
    base = ["package", work["model"], "--profile", "x86_64", "--sign-key", key_files["signer"],
            "--name", "d", "--version", "1", "-o", tmp_path / "k.edgepkg"]  # fmt: skip
    keyless = cli(*base, "--model-signature", work["sig"], "--model-signer-identity",
                  "ml@example.com", "--model-signer-issuer", "https://accounts.google.com",
                  "--sigstore-trust-config", config)  # fmt: skip
    assert keyless.code == 27 and "error:" in keyless.err
    half = cli(*base, "--model-signature", work["sig"], "--model-signer-identity", "ml@example.com")
    assert half.code == 2 and "go together" in half.err
    both = cli(*base, "--model-signature", work["sig"], "--model-signer", work["pub"],
               "--model-signer-identity", "a", "--model-signer-issuer", "b")  # fmt: skip
    assert both.code == 2
    assert not (tmp_path / "k.edgepkg").exists()


# -- audit by provenance ---------------------------------------------------------------------------------


def _trust(bundle: dict[str, Any]) -> Any:
    from edge_sdk.keys import TrustStore

    return TrustStore.from_keys([bundle["publisher"].public])


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_audit_policy_accepts_and_rejects_as_configured(
    bundle: dict[str, Any], work: dict[str, Path], cli: Any, tmp_path: Path
) -> None:
    import tensorflow as tf

    shutil.copyfile(work["pub"], tmp_path / "training.pub")
    major_minor = ".".join(tf.__version__.split(".")[:2])
    accept = _policy(
        tmp_path,
        f"""
model_signers = ["training.pub"]
converters = ["tensorflow {major_minor}.*"]
tensorflow_versions = ["{major_minor}.*"]
edge_sdk_versions = ["0.*"]
quantizations = ["dynamic", "int8"]
require_data = ["evaluation-data", "calibration-data"]
[gate]
require_labels = true
max_drop_points = 1.0
min_accuracy = 90
min_samples = 300
""",
    )
    trust = ["--trust", bundle["pub"]]
    ok = cli("audit", bundle["path"], *trust, "--policy", accept, "--format", "json")
    row = ok.json()["rows"][0]
    assert ok.code == 0 and row["provenance"] == "verified, meets policy.toml", row
    table = cli("audit", bundle["path"], *trust, "--policy", accept)
    assert "verified, meets policy.toml" in table.out and "provenance" in table.out

    rejections = {
        f'model_signers = ["{_openssl_key_id(work["other.pub"])}"]': "is not an allowed signer",
        'sigstore_identities = [{identity = "ml@example.com", issuer = "https://x"}]':
            "is not an allowed signer",
        'converters = ["tensorflow 2.20.*"]': "converter 'tensorflow",
        'quantizations = ["int8"]': "quantization 'dynamic' is not allowed",
        'require_data = ["training-data"]': "the build used no training data",
        "[gate]\nmin_accuracy = 99.99": "is below the minimum of 99.99%",
        "[gate]\nmax_drop_points = -1": "is above the maximum",
    }  # fmt: skip
    for setting, reason in rejections.items():
        policy = _policy(tmp_path, setting + "\n")
        denied = cli("audit", bundle["path"], *trust, "--policy", policy, "--format", "csv")
        rows = list(csv.DictReader(io.StringIO(denied.out)))
        assert denied.code == 1, setting
        assert rows[0]["kind"] == "policy" and rows[0]["provenance"] == "rejected", setting
        assert reason in rows[0]["reason"], (setting, rows[0]["reason"])


def test_audit_policy_fleet_wide_on_a_deploy_target(
    bundle: dict[str, Any], cli: Any, tmp_path: Path, keyset: KeySet
) -> None:
    board = tmp_path / "board"
    board.mkdir()
    assert cli("deploy", bundle["path"], "--target", board).code == 0
    unsigned_source = package_tflite(
        tmp_path / "plain.edgepkg", [bundle["publisher"]], name="plain"
    )
    assert cli("deploy", unsigned_source.path, "--target", board).code == 0
    inventory = tmp_path / "fleet.toml"
    inventory.write_text(f'[[device]]\nname = "cam-01"\ntarget = "{board}"\n')
    policy = _policy(tmp_path, "require_model_signature = true\n")
    for where in (["--target", board], ["--inventory", inventory]):
        result = cli("audit", *where, "--trust", bundle["pub"], "--policy", policy, "--json")
        rows = {r["name"]: r for r in result.json()["rows"]}
        assert result.code == 1
        digits = rows["digits"]  # signed-only, hence a warning, but its history meets policy
        assert digits["status"] == "warning" and digits["current"] and digits["device"] != "local"
        assert digits["provenance"] == "verified, meets policy.toml"
        assert rows["plain"]["kind"] == "policy"
        assert "signature was not verified at packaging" in rows["plain"]["reason"]
