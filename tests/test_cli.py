"""The CLI as a user meets it: keys, inspect, verify, recipients; errors as messages and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_sdk import errors
from edge_sdk.format.bundle import read_bundle

from .conftest import REPO, KeySet, make_bundle_bytes


@pytest.fixture
def bundle(tmp_path: Path, keyset: KeySet) -> Path:
    path = tmp_path / "b.edgepkg"
    path.write_bytes(make_bundle_bytes(keyset))
    return path


def test_keys_generate_and_show(tmp_path: Path, cli: Any) -> None:
    made = cli(
        "keys",
        "generate",
        "--kind",
        "signing",
        "--alg",
        "ed25519+mldsa65",
        "--out",
        tmp_path / "pub",
        "--json",
    )
    assert made.code == 0, made.err
    info = made.json()
    assert info["alg"] == "ed25519+mldsa65" and len(info["key_id"]) == 64
    assert (tmp_path / "pub.key").stat().st_mode & 0o777 == 0o600
    shown = cli("keys", "show", tmp_path / "pub.pub", "--json").json()
    assert shown["key_id"] == info["key_id"]
    table = cli("keys", "show", tmp_path / "pub.key")
    assert info["key_id"] in table.out and "PRIVATE" not in table.out


def test_keys_generate_with_passphrase_env(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_PASS", "s3cret phrase")
    assert (
        cli(
            "keys",
            "generate",
            "--kind",
            "device",
            "--out",
            tmp_path / "d",
            "--passphrase-env",
            "MY_PASS",
        ).code
        == 0
    )
    assert b"ENCRYPTED" in (tmp_path / "d.key").read_bytes()
    monkeypatch.delenv("EDGE_SDK_KEY_PASSPHRASE", raising=False)
    missing = cli("keys", "show", tmp_path / "d.key")
    assert missing.code == 40 and "no passphrase" in missing.err
    monkeypatch.setenv("EDGE_SDK_KEY_PASSPHRASE", "s3cret phrase")
    assert cli("keys", "show", tmp_path / "d.key").code == 0
    empty = cli("keys", "generate", "--out", tmp_path / "e", "--passphrase-env", "NOT_SET_ANYWHERE")
    assert empty.code == 2 and "NOT_SET_ANYWHERE" in empty.err


def test_keys_bad_choices(tmp_path: Path, cli: Any) -> None:
    assert cli("keys", "generate", "--kind", "nope", "--out", tmp_path / "x").code == 2
    bad_alg = cli("keys", "generate", "--alg", "rsa", "--out", tmp_path / "x")
    assert bad_alg.code == 40 and "ed25519" in bad_alg.err


def test_inspect_needs_no_key(bundle: Path, cli: Any, keyset: KeySet) -> None:
    result = cli("inspect", bundle, "--json")
    assert result.code == 0
    data = result.json()
    assert data["signatures"][0]["key_id"] == keyset.signer.key_id
    assert data["recipients"][0]["key_id"] == keyset.device.key_id
    assert data["encrypted"] is True and data["sizes"]["model"] == 10245
    human = cli("inspect", bundle)
    assert "aes-256-gcm" in human.out and keyset.signer.key_id[:16] in human.out


def test_inspect_marks_unencrypted(tmp_path: Path, cli: Any, keyset: KeySet) -> None:
    path = tmp_path / "plain.edgepkg"
    path.write_bytes(make_bundle_bytes(keyset, recipients=()))
    assert "NOT ENCRYPTED" in cli("inspect", path).out


def test_verify_auditor_and_device(bundle: Path, cli: Any, key_files: dict[str, Path]) -> None:
    auditor = cli("verify", bundle, "--trust", key_files["signer.pub"], "--json")
    assert auditor.code == 0 and auditor.json()["decrypted"] is False
    device = cli(
        "verify", bundle, "--trust", key_files["signer.pub"], "--device-key", key_files["device"]
    )
    assert device.code == 0 and "decryption, model hash" in device.out


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("untrusted", 21, "0 valid signature"),
        ("wrong device", 30, "is not a recipient"),
        ("tampered", 24, "payload SHA-256 mismatch"),
        ("not a bundle", 10, "not an edge-sdk bundle"),
        ("missing", 2, "does not exist"),
        ("loose key", 40, "unsafe permissions"),
        ("threshold", 41, "exceeds"),
    ],
)
def test_verify_failures(tmp_path: Path, bundle: Path, cli: Any, key_files: dict[str, Path], case: str, code: int,
                         message: str) -> None:  # fmt: skip
    args: list[Any] = ["verify", bundle, "--trust", key_files["signer.pub"]]
    if case == "untrusted":
        args[3] = key_files["signer2.pub"]
    elif case == "wrong device":
        args += ["--device-key", key_files["device2"]]
    elif case == "tampered":
        raw = bytearray(bundle.read_bytes())
        raw[-1] ^= 1
        bundle.write_bytes(bytes(raw))
    elif case == "not a bundle":
        bundle.write_bytes(b"hello world, not a bundle at all")
    elif case == "missing":
        args[1] = tmp_path / "nope.edgepkg"
    elif case == "loose key":
        os.chmod(key_files["device"], 0o644)
        args += ["--device-key", key_files["device"]]
    elif case == "threshold":
        args += ["--threshold", "2"]
    result = cli(*args)
    assert result.code == code, result.err
    assert message in result.err and "Traceback" not in result.err
    as_json = cli(*args, "--json")
    assert (
        as_json.code == code
        and as_json.json()["ok"] is False
        and message in as_json.json()["message"]
    )


def test_recipients_add(bundle: Path, cli: Any, key_files: dict[str, Path], keyset: KeySet) -> None:
    before = read_bundle(bundle)
    result = cli("recipients", "add", bundle, "--device-key", key_files["device"], "--recipient",
                 key_files["device_pq.pub"])  # fmt: skip
    assert result.code == 0, result.err
    after = read_bundle(bundle)
    assert after.manifest_bytes == before.manifest_bytes  # not re-signed
    assert after.signatures == before.signatures
    assert [r.key_id for r in after.recipients] == [keyset.device.key_id, keyset.device_pq.key_id]
    opened = cli(
        "verify", bundle, "--trust", key_files["signer.pub"], "--device-key", key_files["device_pq"]
    )
    assert opened.code == 0, opened.err
    outsider = cli("recipients", "add", bundle, "--device-key", key_files["device2"], "--recipient",
                   key_files["device2.pub"])  # fmt: skip
    assert outsider.code == 30


def test_every_error_class_has_a_distinct_documented_exit_code() -> None:
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.EdgeSDKError)
    ]
    codes = {c.exit_code for c in classes}
    assert len(codes) == len(classes), "two error classes share an exit code"
    readme = (REPO / "README.md").read_text()
    for cls in classes:
        assert f"| {cls.exit_code} | `{cls.__name__}` |" in readme, f"{cls.__name__} not documented"


def test_help_imports_nothing_heavy() -> None:
    code = "import sys, time; t=time.perf_counter(); from edge_sdk.cli import main\n" \
           "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n" \
           "heavy=[m for m in ('tensorflow','keras','ai_edge_litert','numpy','rich.table') if m in sys.modules]\n" \
           "assert not heavy, heavy"  # fmt: skip
    # How fast it is lives in the benchmark (tools/bench.py runtime); this asserts what it loads.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)


def test_python_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge_sdk", "--help"], capture_output=True, text=True, check=True
    )
    assert "package" in done.stdout and "verify" in done.stdout


def test_profiles_list_and_show(cli: Any) -> None:
    listed = cli("profiles", "list", "--json")
    assert listed.code == 0
    names = {p["name"] for p in listed.json()}
    assert {"rpi4", "rpi5", "jetson-orin-nano", "coral-usb", "imx8mp", "x86_64"} <= names
    table = cli("profiles", "list")
    assert "Cortex-A72" in table.out and "chacha20-poly1305" in table.out
    shown = cli("profiles", "show", "coral-usb", "--json").json()
    assert shown["quantization"] == "int8" and shown["edgetpu"] is True
    unknown = cli("profiles", "show", "pi-zero")
    assert unknown.code == 50 and "rpi4" in unknown.err


def test_control_characters_from_a_bundle_never_reach_the_terminal(
    tmp_path: Path, cli: Any, keyset: KeySet
) -> None:
    import json as _json

    from .bundle_parts import split_bundle

    parts = split_bundle(make_bundle_bytes(keyset))
    manifest = _json.loads(parts.manifest)
    manifest["\x1b[2J\x1b[32mOK signed by a trusted key\x1b[0m"] = 1
    parts.manifest = _json.dumps(manifest).encode()
    path = tmp_path / "evil.edgepkg"
    path.write_bytes(parts.join())
    result = cli("inspect", path)
    assert result.code == 12 and "\x1b" not in result.err and "\\x1b" in result.err


# -- first-run polish -----------------------------------------------------------------------------


def test_version_and_help(cli: Any) -> None:
    from edge_sdk import __version__

    assert cli("--version").out == f"edge-sdk {__version__}\n"
    audit = cli("audit", "--help").out
    assert (
        "--trust" in audit and "--format" in audit and "audit log FILE" in audit
    )  # not hidden on `scan`
    package = cli("package", "--help").out
    assert "--sign-key TEXT" in package and "--calibration PATH" in package and "<" not in package


def test_a_private_key_is_not_a_trust_store(
    bundle: Path, key_files: dict[str, Path], cli: Any
) -> None:
    result = cli("verify", bundle, "--trust", key_files["signer"])
    assert result.code == errors.TrustStoreError.exit_code
    assert "is a private key; a trust store holds public keys only" in result.err


@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_a_public_key_as_signing_key_says_so(mode: int, tmp_path: Path, key_files: dict[str, Path],
                                             cli: Any) -> None:  # fmt: skip
    pub = key_files["signer.pub"]
    pub.chmod(mode)
    model = REPO / "tests" / "vectors" / "model.tflite"
    result = cli(
        "package", model, "--profile", "x86_64", "--sign-key", pub, "-o", tmp_path / "x.edgepkg"
    )
    assert result.code == errors.KeyFileError.exit_code and "not a private key" in result.err, (
        result.err
    )
    assert "permissions" not in result.err


def test_run_refuses_a_text_file_as_input(bundle: Path, key_files: dict[str, Path], tmp_path: Path,
                                          cli: Any) -> None:  # fmt: skip
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    result = cli("run", bundle, "--trust", key_files["signer.pub"], "--device-key", key_files["device"],
                 "--input", notes)  # fmt: skip
    assert result.code == errors.DataError.exit_code
    assert "is not a numpy array file (.npy or .npz)" in result.err and "pickle" not in result.err


def test_run_with_the_wrong_expected_name(key_files: dict[str, Path], keyset: KeySet, tmp_path: Path,
                                          cli: Any) -> None:  # fmt: skip
    import numpy as np

    model = (REPO / "tests" / "vectors" / "model.tflite").read_bytes()
    path = tmp_path / "b.edgepkg"
    path.write_bytes(make_bundle_bytes(keyset, model=model))
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    common = ["--trust", key_files["signer.pub"], "--device-key", key_files["device"], "--input",
              tmp_path / "x.npy", "--state-dir", tmp_path / "s"]  # fmt: skip
    wrong = cli("run", path, *common, "--name", "digits-beta")
    assert (
        wrong.code == errors.TargetMismatchError.exit_code
        and "'digits-beta' was expected" in wrong.err
    )
    assert cli("run", path, *common, "--name", "digits").code == 0
