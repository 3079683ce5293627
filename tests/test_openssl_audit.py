"""An auditor verifies bundles with the openssl command line and docs/FORMAT.md alone.

The script is taken verbatim from docs/FORMAT.md, so the document cannot drift from reality.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.keys import PrivateKey, save_keypair

from .conftest import REPO, KeySet, make_bundle_bytes, split_bundle

SCRIPT = re.search(
    r"<!-- openssl-verify:begin -->\n```bash\n(.*?)```\n<!-- openssl-verify:end -->",
    (REPO / "docs" / "FORMAT.md").read_text(),
    re.DOTALL,
)
assert SCRIPT, "docs/FORMAT.md lost its openssl-verify block"


def _audit(
    tmp_path: Path, raw: bytes, signer: PrivateKey, pub: Path | None = None
) -> subprocess.CompletedProcess[str]:
    assert shutil.which("openssl"), "openssl is needed (installed by .ci/run)"
    bundle = tmp_path / "b.edgepkg"
    bundle.write_bytes(raw)
    if pub is None:
        _, pub = save_keypair(signer, tmp_path / "publisher", overwrite=True)
    assert SCRIPT is not None
    return subprocess.run(
        ["bash", "-c", SCRIPT.group(1)],
        cwd=tmp_path,
        env={"BUNDLE": str(bundle), "PUBKEY": str(pub), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("signer_name", ["signer", "ecdsa"])
@pytest.mark.parametrize("encrypted", [True, False])
def test_openssl_verifies_a_good_bundle(
    tmp_path: Path, keyset: KeySet, signer_name: str, encrypted: bool
) -> None:
    signer = getattr(keyset, signer_name)
    raw = make_bundle_bytes(
        keyset, signers=(signer, keyset.signer2), recipients=(keyset.device,) if encrypted else ()
    )
    result = _audit(tmp_path, raw, signer)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verified" in result.stdout  # openssl's own success line
    assert "payload sha256 OK" in result.stdout


def test_openssl_rejects_a_tampered_manifest(tmp_path: Path, keyset: KeySet) -> None:
    parts = split_bundle(make_bundle_bytes(keyset))
    parts.manifest = parts.manifest.replace(b'"version":1', b'"version":9')
    result = _audit(tmp_path, parts.join(), keyset.signer)
    assert result.returncode != 0
    assert "Signature Verification Failure" in result.stdout + result.stderr


def test_openssl_rejects_a_tampered_payload(tmp_path: Path, keyset: KeySet) -> None:
    raw = bytearray(make_bundle_bytes(keyset))
    raw[-5] ^= 0xFF
    result = _audit(tmp_path, bytes(raw), keyset.signer)
    assert result.returncode != 0
    assert "payload sha256 OK" not in result.stdout


def test_openssl_finds_no_signature_from_another_key(tmp_path: Path, keyset: KeySet) -> None:
    result = _audit(tmp_path, make_bundle_bytes(keyset), keyset.signer2)
    assert result.returncode != 0


def test_script_computes_hybrid_key_ids(tmp_path: Path, keyset: KeySet) -> None:
    """OpenSSL 3.0 cannot parse ML-DSA keys, but the key id step only base64-decodes PEM blocks."""
    assert SCRIPT is not None
    _, pub = save_keypair(keyset.hybrid, tmp_path / "hybrid")
    keyid_step = "# 3." + SCRIPT.group(1).split("# 3.")[1].split("ENTRY=")[0]
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + keyid_step + 'echo "$KEYID"'], cwd=tmp_path,
                          env={"PUBKEY": str(pub), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.strip().splitlines()[-1] == keyset.hybrid.key_id


@pytest.mark.parametrize("alg", ["ecdsa-p256", "ed25519"])
def test_openssl_verifies_a_bundle_signed_inside_an_hsm(
    tmp_path: Path, keyset: KeySet, softhsm: Any, alg: str
) -> None:
    """A key generated in SoftHSM signs; the auditor's script checks it with the .pub alone."""
    from edge_sdk.key_uri import Pkcs11Uri
    from edge_sdk.keys import load_private_key
    from edge_sdk.pkcs11 import generate_pkcs11_key

    uri = softhsm.uri(f"audit-{alg}")
    made = generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="signing", alg=alg, out=tmp_path / "hsm")
    signer = load_private_key(uri, kind="signing")
    assert signer.location == "pkcs11"
    raw = make_bundle_bytes(keyset, signers=(signer, keyset.signer2))
    result = _audit(tmp_path, raw, signer, pub=made.public_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verified" in result.stdout and "payload sha256 OK" in result.stdout
