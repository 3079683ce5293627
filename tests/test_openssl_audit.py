"""An auditor verifies bundles with the openssl command line and docs/FORMAT.md alone.

The script is taken verbatim from docs/FORMAT.md, so the document cannot drift from reality, and
it runs against real bundles with the real ``openssl`` on this machine. Which OpenSSL that is
decides what the hybrid (Ed25519 + ML-DSA-65) tests can show: ML-DSA needs OpenSSL >= 3.5. With
an older one the script must refuse a hybrid key cleanly (exit 2, naming the version) and still
refuse every downgrade; with 3.5 or later it must verify both halves. Test ids carry the version.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.errors import BundleFormatError, SignatureError
from edge_sdk.format.bundle import read_bundle
from edge_sdk.format.verify import open_bundle
from edge_sdk.keys import PrivateKey, PublicKey, generate_key

from .bundle_parts import split_bundle
from .conftest import REPO, KeySet, make_bundle_bytes

SCRIPT = re.search(
    r"<!-- openssl-verify:begin -->\n```bash\n(.*?)```\n<!-- openssl-verify:end -->",
    (REPO / "docs" / "FORMAT.md").read_text(),
    re.DOTALL,
)
assert SCRIPT, "docs/FORMAT.md lost its openssl-verify block"
VECTORS = REPO / "tests" / "vectors"

assert shutil.which("openssl"), "openssl is needed (installed by .ci/run)"
OPENSSL = subprocess.run(
    ["openssl", "version"], capture_output=True, text=True, check=True
).stdout.strip()
HAS_MLDSA = (
    "ML-DSA-65"
    in subprocess.run(
        ["openssl", "list", "-signature-algorithms"], capture_output=True, text=True, check=True
    ).stdout
)
#: Shown in test ids, so every report says which OpenSSL the hybrid tests ran against.
OPENSSL_ID = OPENSSL.split(" (")[0].replace(" ", "-")


class Audit:
    """One run of the documented script, with what it printed and what it left behind."""

    def __init__(self, tmp_path: Path, raw: bytes, pub: PublicKey | Path) -> None:
        self.cwd = tmp_path / "cwd"
        self.tmp = tmp_path / "tmp"
        for folder in (self.cwd, self.tmp):
            folder.mkdir(exist_ok=True)
        bundle = tmp_path / "bundle.edgepkg"
        bundle.write_bytes(raw)
        if isinstance(pub, Path):
            pub_path = pub
        else:
            pub_path = tmp_path / "publisher.pub"
            pub_path.write_bytes(pub.to_pem())
        assert SCRIPT is not None
        done = subprocess.run(
            ["bash", "-c", SCRIPT.group(1)],
            cwd=self.cwd,
            env={"BUNDLE": str(bundle), "PUBKEY": str(pub_path), "PATH": "/usr/bin:/bin",
                 "TMPDIR": str(self.tmp)},
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        self.code = done.returncode
        self.out = done.stdout + done.stderr
        self.left = sorted(p.name for p in [*self.cwd.iterdir(), *self.tmp.iterdir()])

    @property
    def verified(self) -> bool:
        return "Verified" in self.out  # openssl's own success line, whatever the algorithm


def audit(tmp_path: Path, raw: bytes, pub: PublicKey | Path) -> Audit:
    run = Audit(tmp_path, raw, pub)
    assert run.left == [], f"the script left files behind: {run.left}"
    return run


def assert_refused(run: Audit, message: str) -> None:
    assert run.code == 1, run.out
    assert not run.verified, run.out
    assert "payload sha256 OK" not in run.out
    assert message in run.out, run.out


def _resign(raw: bytes, signer: PrivateKey) -> bytes:
    """The same bundle with its signatures replaced by one from ``signer``."""
    from edge_sdk.format.signing import PAYLOAD_TYPE, pae

    parts = split_bundle(raw)
    sig = signer.sign(pae(PAYLOAD_TYPE, parts.manifest))
    parts.envelope["signatures"] = [
        {"alg": signer.alg, "keyid": signer.key_id, "sig": base64.b64encode(sig).decode()}
    ]
    return parts.join()


# -- what verifies --------------------------------------------------------------------------------


@pytest.mark.parametrize("signer_name", ["signer", "ecdsa"])
@pytest.mark.parametrize("encrypted", [True, False])
def test_openssl_verifies_a_good_bundle(
    tmp_path: Path, keyset: KeySet, signer_name: str, encrypted: bool
) -> None:
    signer = getattr(keyset, signer_name)
    raw = make_bundle_bytes(
        keyset, signers=(signer, keyset.signer2), recipients=(keyset.device,) if encrypted else ()
    )
    run = audit(tmp_path, raw, signer.public)
    assert run.code == 0, run.out
    assert run.verified
    assert f"OK: signed by {signer.alg} key {signer.key_id}" in run.out
    assert "payload sha256 OK" in run.out


@pytest.mark.parametrize(
    ("vector", "signer"),
    [
        ("v1-ed25519-signed-only", "signer-ed25519"),
        ("v1-ed25519-x25519-aes256gcm", "signer-ed25519"),
        ("v1-ecdsa-x25519-chacha20-zstd", "signer-ecdsa"),
        ("v1-hybrid-mlkem-aes256gcm-2signers", "signer-ed25519"),
        ("v1-ed25519-signed-only-zstd", "signer-ed25519"),
        ("v1-ecdsa-xwing-aes256gcm", "signer-ecdsa"),
    ],
)
def test_openssl_verifies_the_committed_vectors(tmp_path: Path, vector: str, signer: str) -> None:
    raw = (VECTORS / f"{vector}.edgepkg").read_bytes()
    run = audit(tmp_path, raw, VECTORS / "keys" / f"{signer}.pub")
    assert run.code == 0, run.out
    assert run.verified and "payload sha256 OK" in run.out


@pytest.mark.parametrize("openssl", [OPENSSL_ID])
def test_hybrid_signature_needs_both_halves_and_openssl_3_5(
    tmp_path: Path, keyset: KeySet, openssl: str
) -> None:
    raw = make_bundle_bytes(keyset, signers=(keyset.hybrid,))
    run = audit(tmp_path, raw, keyset.hybrid.public)
    if HAS_MLDSA:
        assert run.code == 0, run.out
        assert run.out.count("Verified") == 2  # the Ed25519 half and the ML-DSA-65 half
        assert "payload sha256 OK" in run.out
    else:
        assert run.code == 2, run.out
        assert "ML-DSA-65 needs OpenSSL >= 3.5" in run.out and openssl.split("-")[1] in run.out
        assert not run.verified
        assert "payload sha256 OK" not in run.out


@pytest.mark.parametrize("openssl", [OPENSSL_ID])
def test_hybrid_with_a_forged_post_quantum_half_is_refused(
    tmp_path: Path, keyset: KeySet, openssl: str
) -> None:
    """A valid Ed25519 half and garbage for ML-DSA: never accepted, whatever the OpenSSL."""
    parts = split_bundle(make_bundle_bytes(keyset, signers=(keyset.hybrid,)))
    sig = bytearray(base64.b64decode(parts.envelope["signatures"][0]["sig"]))
    sig[100] ^= 1
    parts.envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    run = audit(tmp_path, parts.join(), keyset.hybrid.public)
    assert run.code != 0 and "payload sha256 OK" not in run.out, run.out
    if HAS_MLDSA:
        assert "Signature Verification Failure" in run.out
    else:
        assert run.code == 2


# -- downgrades and relabelling: the trusted key decides the algorithm ------------------------------


@pytest.mark.parametrize("openssl", [OPENSSL_ID])
def test_downgraded_hybrid_signature_is_refused(
    tmp_path: Path, keyset: KeySet, openssl: str
) -> None:
    """The review's attack: the Ed25519 half of a hybrid signature, relabelled `ed25519`.

    The previous script chose the check from this label and verified the Ed25519 half against
    the first block of the hybrid key file: "Verified". The reader refuses it too.
    """
    parts = split_bundle(make_bundle_bytes(keyset, signers=(keyset.hybrid,)))
    entry = parts.envelope["signatures"][0]
    entry["sig"] = base64.b64encode(base64.b64decode(entry["sig"])[:64]).decode()
    entry["alg"] = "ed25519"
    raw = parts.join()
    run = audit(tmp_path, raw, keyset.hybrid.public)
    assert_refused(run, "claims ed25519, the trusted key is ed25519+mldsa65")
    with pytest.raises(SignatureError, match="claims algorithm"):
        read_bundle(raw, trust=keyset.trust(keyset.hybrid))


def test_hybrid_label_with_only_the_ed25519_half_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    parts = split_bundle(make_bundle_bytes(keyset, signers=(keyset.hybrid,)))
    entry = parts.envelope["signatures"][0]
    entry["sig"] = base64.b64encode(base64.b64decode(entry["sig"])[:64]).decode()
    run = audit(tmp_path, parts.join(), keyset.hybrid.public)
    assert run.code != 0 and not run.verified, run.out
    if HAS_MLDSA:
        assert "64 + 3309 bytes" in run.out
    with pytest.raises(SignatureError, match="invalid signature"):
        read_bundle(parts.join(), trust=keyset.trust(keyset.hybrid))


@pytest.mark.parametrize(
    ("signer_name", "label"),
    [("signer", "ecdsa-p256"), ("ecdsa", "ed25519"), ("signer", "ed25519+mldsa65")],
)
def test_relabelled_signature_is_refused(
    tmp_path: Path, keyset: KeySet, signer_name: str, label: str
) -> None:
    signer = getattr(keyset, signer_name)
    parts = split_bundle(make_bundle_bytes(keyset, signers=(signer,)))
    parts.envelope["signatures"][0]["alg"] = label
    run = audit(tmp_path, parts.join(), signer.public)
    assert_refused(run, f"claims {label}, the trusted key is {signer.alg}")


def test_a_key_with_two_signatures_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    parts = split_bundle(make_bundle_bytes(keyset))
    parts.envelope["signatures"] = parts.envelope["signatures"] * 2
    run = audit(tmp_path, parts.join(), keyset.signer.public)
    assert run.code == 1 and not run.verified, run.out


# -- structure: flags, envelope, payload offset ------------------------------------------------------


def test_openssl_rejects_a_tampered_manifest(tmp_path: Path, keyset: KeySet) -> None:
    parts = split_bundle(make_bundle_bytes(keyset))
    parts.manifest = parts.manifest.replace(b'"version":1', b'"version":9')
    run = audit(tmp_path, parts.join(), keyset.signer.public)
    assert run.code != 0
    assert "Signature Verification Failure" in run.out


def test_openssl_rejects_a_tampered_payload(tmp_path: Path, keyset: KeySet) -> None:
    raw = bytearray(make_bundle_bytes(keyset))
    raw[-5] ^= 0xFF
    run = audit(tmp_path, bytes(raw), keyset.signer.public)
    assert run.code == 1 and "payload sha256 OK" not in run.out
    assert "payload SHA-256" in run.out


def test_openssl_finds_no_signature_from_another_key(tmp_path: Path, keyset: KeySet) -> None:
    run = audit(tmp_path, make_bundle_bytes(keyset), keyset.signer2.public)
    assert_refused(run, f"no signature by key {keyset.signer2.key_id}")


def test_nonzero_flags_are_refused(tmp_path: Path, keyset: KeySet) -> None:
    parts = split_bundle(make_bundle_bytes(keyset))
    parts.flags = 1
    assert_refused(audit(tmp_path, parts.join(), keyset.signer.public), "header flags are not 0")


def test_unknown_version_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    parts = split_bundle(make_bundle_bytes(keyset))
    parts.version = 2
    assert_refused(audit(tmp_path, parts.join(), keyset.signer.public), "format version 2")


def _insert(raw: bytes, at: int, junk: bytes) -> bytes:
    return raw[:at] + junk + raw[at:]


def test_junk_before_the_payload_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    """The previous script took the last P bytes with `tail -c`, so junk between the payload
    length and the payload went unnoticed: "Verified" and "payload sha256 OK". The reader
    refuses the file (the lengths no longer add up)."""
    raw = make_bundle_bytes(keyset)
    parts = split_bundle(raw)
    at = (
        16
        + len(parts.manifest)
        + 4
        + len(json.dumps(parts.envelope, separators=(",", ":"), sort_keys=True))
        + 8
    )
    assert raw[at:] == parts.payload
    hostile = _insert(raw, at, b"JUNK" * 4)
    assert_refused(
        audit(tmp_path, hostile, keyset.signer.public), "does not end where the file ends"
    )
    with pytest.raises(BundleFormatError, match="trailing data"):
        read_bundle(hostile)


def test_junk_inside_the_envelope_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    """Junk appended to the envelope, its length adjusted: signatures and payload still check
    out, so only the envelope's shape can tell (the reader and the script both look)."""
    raw = make_bundle_bytes(keyset)
    parts = split_bundle(raw)
    parts.envelope_raw = (
        json.dumps(parts.envelope, separators=(",", ":"), sort_keys=True).encode() + b"   "
    )
    hostile = parts.join()
    assert_refused(audit(tmp_path, hostile, keyset.signer.public), "envelope is not canonical")
    with pytest.raises(BundleFormatError, match="not in canonical form|malformed JSON"):
        read_bundle(hostile)


def test_trailing_junk_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    hostile = make_bundle_bytes(keyset) + b"\0"
    assert_refused(
        audit(tmp_path, hostile, keyset.signer.public), "does not end where the file ends"
    )


def test_noncanonical_base64_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    parts = split_bundle(make_bundle_bytes(keyset))
    sig = parts.envelope["signatures"][0]["sig"]
    assert sig.endswith("==") and sig[-3] in "AQgw"
    parts.envelope["signatures"][0]["sig"] = sig[:-3] + chr(ord(sig[-3]) + 1) + "=="
    assert_refused(audit(tmp_path, parts.join(), keyset.signer.public), "envelope is not canonical")


def test_an_envelope_of_8_mib_of_empty_objects_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    parts = split_bundle(make_bundle_bytes(keyset))
    parts.envelope_raw = b'{"recipients":[' + b",".join([b"{}"] * 2_700_000) + b'],"signatures":[]}'
    assert_refused(audit(tmp_path, parts.join(), keyset.signer.public), "envelope is not canonical")


def test_a_payload_length_over_the_cap_is_refused(tmp_path: Path, keyset: KeySet) -> None:
    raw = make_bundle_bytes(keyset)
    parts = split_bundle(raw)
    at = len(raw) - len(parts.payload) - 8
    hostile = raw[:at] + struct.pack(">Q", 2**64 - 1) + raw[at + 8 :]
    assert_refused(audit(tmp_path, hostile, keyset.signer.public), "over 4 GiB")


# -- the key file and the working files ------------------------------------------------------------


def test_key_ids_match_the_reader_for_every_key_kind(tmp_path: Path, keyset: KeySet) -> None:
    """The script's key id is the reader's, hybrid keys included (both PEM blocks)."""
    for signer in (keyset.signer, keyset.ecdsa, keyset.hybrid):
        where = tmp_path / signer.alg
        where.mkdir()
        run = audit(
            where, make_bundle_bytes(keyset, signers=(signer, keyset.signer2)), signer.public
        )
        assert "no signature by key" not in run.out, run.out
        if signer is not keyset.hybrid or HAS_MLDSA:
            assert f"OK: signed by {signer.alg} key {signer.key_id}" in run.out, run.out
        else:
            assert run.code == 2, run.out  # found its entry, then stopped at ML-DSA


def test_a_second_run_with_another_key_reads_no_stale_files(tmp_path: Path, keyset: KeySet) -> None:
    """The previous script wrote keyblock1, keyblock2 … into the current directory, so a run with
    a one-block key after a run with a hybrid key read the stale second block."""
    raw = make_bundle_bytes(keyset, signers=(keyset.hybrid, keyset.signer))
    first = audit(tmp_path, raw, keyset.hybrid.public)
    assert "ed25519+mldsa65" in first.out
    second = audit(tmp_path, raw, keyset.signer.public)  # same cwd, same TMPDIR
    assert second.code == 0, second.out
    assert f"OK: signed by ed25519 key {keyset.signer.key_id}" in second.out


@pytest.mark.parametrize("kind", ["device", "private"])
def test_a_key_file_that_is_no_signing_public_key_is_refused(
    tmp_path: Path, keyset: KeySet, kind: str
) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        keyset.device.public.to_pem() if kind == "device" else keyset.signer.to_pem()
    )
    run = audit(tmp_path, make_bundle_bytes(keyset), key_file)
    assert run.code == 1 and not run.verified, run.out
    assert "not a signing public key" in run.out or "not a public key file" in run.out


def test_what_the_script_accepts_the_reader_accepts(tmp_path: Path, keyset: KeySet) -> None:
    """For the bundles above that the script passes, the reader agrees (same trust, one key)."""
    raw = make_bundle_bytes(keyset, signers=(keyset.ecdsa,))
    assert audit(tmp_path, raw, keyset.ecdsa.public).code == 0
    assert open_bundle(raw, keyset.trust(keyset.ecdsa), keyset.device).model_bytes


def test_the_script_runs_under_a_fresh_key(tmp_path: Path, keyset: KeySet) -> None:
    """A key never seen before, saved the way `edge-sdk keys generate` saves it."""
    from edge_sdk.keys import save_keypair

    fresh = generate_key("signing", "ecdsa-p256")
    _, pub = save_keypair(fresh, tmp_path / "fresh")
    raw = _resign(make_bundle_bytes(keyset), fresh)
    run = audit(tmp_path, raw, pub)
    assert run.code == 0, run.out
    assert os.stat(pub).st_size > 0


@pytest.mark.parametrize("openssl", [OPENSSL_ID])
def test_the_hybrid_key_halves_are_pem_files_openssl_reads(
    tmp_path: Path, keyset: KeySet, openssl: str
) -> None:
    """The previous instructions verified against bare base64 blocks, which `openssl pkeyutl`
    cannot read. The script's key step writes each half as a PEM file: the Ed25519 half loads in
    any OpenSSL, the ML-DSA-65 half parses everywhere and loads where ML-DSA exists (3.5+)."""
    assert SCRIPT is not None
    key_step = SCRIPT.group(1).split("# 4.")[0]
    checks = """
openssl pkey -pubin -in "$WORK/key1.pem" -noout
openssl asn1parse -in "$WORK/key2.pem" > "$WORK/asn1"
grep -q 2.16.840.1.101.3.4.3.18 "$WORK/asn1" || grep -qi ML-DSA-65 "$WORK/asn1"
if openssl pkey -pubin -in "$WORK/key2.pem" -noout 2>/dev/null; then echo mldsa-loads; fi
echo "$ALG $KEYID"
"""
    bundle = tmp_path / "b.edgepkg"
    bundle.write_bytes(make_bundle_bytes(keyset, signers=(keyset.hybrid,)))
    pub = tmp_path / "hybrid.pub"
    pub.write_bytes(keyset.hybrid.public.to_pem())
    done = subprocess.run(
        ["bash", "-c", key_step + checks], cwd=tmp_path, capture_output=True, text=True,
        env={"BUNDLE": str(bundle), "PUBKEY": str(pub), "PATH": "/usr/bin:/bin"}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ed25519+mldsa65 {keyset.hybrid.key_id}" in done.stdout
    assert ("mldsa-loads" in done.stdout) == HAS_MLDSA


@pytest.mark.parametrize("alg", ["ecdsa-p256", "ed25519"])
def test_openssl_verifies_a_bundle_signed_inside_an_hsm(
    tmp_path: Path, keyset: KeySet, softhsm: Any, alg: str
) -> None:
    """A key generated in SoftHSM signs; the auditor's script checks it with the .pub alone."""
    from edge_sdk.keys import load_private_key
    from edge_sdk.keys.key_uri import Pkcs11Uri
    from edge_sdk.keys.pkcs11 import generate_pkcs11_key

    uri = softhsm.uri(f"audit-{alg}")
    made = generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="signing", alg=alg, out=tmp_path / "hsm")
    signer = load_private_key(uri, kind="signing")
    assert signer.location == "pkcs11"
    raw = make_bundle_bytes(keyset, signers=(signer, keyset.signer2))
    run = audit(tmp_path, raw, made.public_file)
    assert run.code == 0 and run.verified and "payload sha256 OK" in run.out, run.out
