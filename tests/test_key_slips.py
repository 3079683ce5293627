"""Key slips: one payload per release, a small signed slip per device (docs/FORMAT.md, "Key slips").

One test per way a slip can be wrong — another device's, another bundle's, an older release's,
signed by a key the device does not trust, tampered, oversized, malformed — each asserting the
specific error; and real loads (real LiteRT) with the slip given or found beside the bundle.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import struct
from pathlib import Path

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import (
    DecryptionError,
    EdgeSDKError,
    IntegrityError,
    KeySlipError,
    KeySlipMismatchError,
    RevokedKeyError,
    SignatureError,
    UsageError,
)
from edge_sdk.fleet.key_slips import content_key_of, slip_name, write_key_slips
from edge_sdk.format.bundle import Bundle, bundle_to_bytes, envelope_bytes, read_bundle, save_bundle
from edge_sdk.format.encryption import RecipientEntry, wrap_content_key
from edge_sdk.format.key_slip import (
    MAX_SLIP_BYTES,
    SLIP_PAYLOAD_TYPE,
    make_key_slip,
    parse_key_slip,
    read_key_slip,
    slip_body,
    slip_bytes,
    slip_path_beside,
)
from edge_sdk.format.manifest import Target
from edge_sdk.format.signing import PAYLOAD_TYPE, SignatureEntry, pae, sign_manifest
from edge_sdk.format.verify import Policy, open_verified
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, generate_key, save_keypair

from .conftest import REPO, KeySet

MODEL = (REPO / "tests" / "vectors" / "model.tflite").read_bytes()
TARGET = Target("x86_64", "ai-edge-litert", "2.3.0", ("x86_64",))


def _seal(keyset: KeySet, version: int = 1, escrow: PrivateKey | None = None) -> Bundle:
    """A release sealed for one in-bundle recipient (the escrow key), as for a large fleet."""
    return seal_bundle(MODEL, name="digits", version=version, target=TARGET,
                       signers=[keyset.signer], recipients=[(escrow or keyset.device2).public],
                       chunk_size=4096)  # fmt: skip


@pytest.fixture(scope="module")
def release(keyset: KeySet) -> Bundle:
    return read_bundle(bundle_to_bytes(_seal(keyset)))


@pytest.fixture(scope="module")
def slip(release: Bundle, keyset: KeySet) -> bytes:
    key = content_key_of(release, keyset.device2)
    return make_key_slip(release, key, keyset.device.public, [keyset.signer])


def _open(bundle: Bundle | bytes, keyset: KeySet, slip: bytes | None, **kw: object) -> bytes:
    raw = bundle if isinstance(bundle, bytes) else bundle_to_bytes(bundle)
    policy = Policy(kw.pop("trust", keyset.trust()), device_key=kw.pop("device_key", keyset.device),  # type: ignore[arg-type]
                    key_slip=slip)  # fmt: skip
    return open_verified(raw, policy).model_bytes


def _resign(body: bytes, signer: PrivateKey, payload_type: str = SLIP_PAYLOAD_TYPE) -> bytes:
    sig = SignatureEntry(signer.key_id, signer.alg, signer.sign(pae(payload_type, body)))
    return slip_bytes(body, (sig,))


def test_a_device_that_is_not_a_recipient_opens_the_release_with_its_slip(
    release: Bundle, slip: bytes, keyset: KeySet
) -> None:
    assert keyset.device.key_id not in {r.key_id for r in release.recipients}
    with pytest.raises(DecryptionError, match="is not a recipient"):
        _open(release, keyset, None)
    assert _open(release, keyset, slip) == MODEL


def test_a_slip_is_under_one_kilobyte_and_parses_to_what_it_names(
    release: Bundle, slip: bytes, keyset: KeySet
) -> None:
    assert len(slip) <= 1024, len(slip)
    parsed = parse_key_slip(slip)
    assert parsed.bundle_digest == release.digest
    assert (parsed.name, parsed.version) == ("digits", 1)
    assert parsed.content_id == release.manifest.payload.content_id
    assert parsed.entry.key_id == keyset.device.key_id and parsed.entry.kem == "x25519"


def test_p256_and_xwing_device_keys_get_slips_too(release: Bundle, keyset: KeySet) -> None:
    key = content_key_of(release, keyset.device2)
    p256 = generate_key("device", "p256")
    for device in (p256, keyset.device_pq):
        raw = make_key_slip(release, key, device.public, [keyset.signer])
        assert _open(release, keyset, raw, device_key=device) == MODEL
    assert len(make_key_slip(release, key, p256.public, [keyset.signer])) <= 1024


def test_another_devices_slip_is_refused_naming_both_keys(release: Bundle, keyset: KeySet) -> None:
    other = make_key_slip(release, content_key_of(release, keyset.device2), keyset.device_pq.public,
                          [keyset.signer])  # fmt: skip
    with pytest.raises(
        KeySlipMismatchError, match=f"for device key {keyset.device_pq.key_id[:16]}"
    ) as err:
        _open(release, keyset, other)
    assert keyset.device.key_id[:16] in err.value.message and err.value.exit_code == 32


def test_the_slip_of_an_older_release_is_refused_as_such(
    release: Bundle, slip: bytes, keyset: KeySet
) -> None:
    newer = _seal(keyset, version=2)
    with pytest.raises(
        KeySlipMismatchError,
        match=r"digits v1 .*\(an older release\), not for this bundle, digits v2",
    ):
        _open(newer, keyset, slip)


def test_a_slip_signed_by_a_key_the_device_does_not_trust_is_refused(
    release: Bundle, keyset: KeySet
) -> None:
    key = content_key_of(release, keyset.device2)
    forged = make_key_slip(release, key, keyset.device.public, [keyset.signer2])
    with pytest.raises(SignatureError, match="0 valid signature.* on the key slip"):
        _open(release, keyset, forged)


def test_a_slip_signed_by_a_revoked_key_is_refused(release: Bundle, keyset: KeySet) -> None:
    key = content_key_of(release, keyset.device2)
    raw = make_key_slip(release, key, keyset.device.public, [keyset.signer, keyset.signer2])
    trust = keyset.trust(keyset.signer, revoked=(keyset.signer2.key_id,))
    with pytest.raises(RevokedKeyError, match="on the key slip"):
        _open(release, keyset, raw, trust=trust)


def test_a_manifest_signature_does_not_verify_as_a_slip_signature(
    slip: bytes, release: Bundle, keyset: KeySet
) -> None:
    body = parse_key_slip(slip).body
    with pytest.raises(SignatureError, match="invalid signature by key .* on the key slip"):
        _open(release, keyset, _resign(body, keyset.signer, PAYLOAD_TYPE))


def test_a_slip_wrapping_another_key_for_this_bundle_does_not_open_it(
    release: Bundle, keyset: KeySet
) -> None:
    # Signed by the publisher and naming this bundle and device, but wrapping a key of its own:
    # the payload's chunks do not authenticate under it.
    (entry,) = wrap_content_key(bytes(32), release.manifest_digest, [keyset.device.public])
    raw = _resign(slip_body(release, entry), keyset.signer)
    with pytest.raises(DecryptionError, match="failed authentication"):
        _open(release, keyset, raw)


def test_every_flipped_bit_of_a_slip_is_refused(
    release: Bundle, slip: bytes, keyset: KeySet
) -> None:
    raw = bundle_to_bytes(release)
    for at in range(len(slip)):
        bad = bytearray(slip)
        bad[at] ^= 0x04
        with pytest.raises(EdgeSDKError) as err:
            _open(raw, keyset, bytes(bad))
        assert isinstance(err.value, (KeySlipError, SignatureError, DecryptionError)), (
            at,
            err.value,
        )


def test_step_6_is_judged_before_a_bad_slip(release: Bundle, keyset: KeySet) -> None:
    raw = bytearray(bundle_to_bytes(release))
    raw[-20] ^= 1
    with pytest.raises(IntegrityError, match="payload SHA-256"):
        _open(bytes(raw), keyset, b"not a slip")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s[:10], "shorter than its header"),
        (lambda s: b"EDGEPKG\n" + s[8:], "bad magic"),
        (lambda s: s[:8] + struct.pack(">H", 2) + s[10:], "version 2 is not supported"),
        (lambda s: s[:10] + struct.pack(">H", 1) + s[12:], "flags are 1"),
        (lambda s: s + b"\n", "does not end where"),
        (lambda s: s[:-1], "does not end where"),
        (lambda s: s[:12] + struct.pack(">H", 60000) + s[14:], "does not fit"),
        (lambda s: s + bytes(MAX_SLIP_BYTES), "over the 16384-byte cap"),
    ],
)
def test_a_malformed_frame_is_refused_before_any_json_is_parsed(
    slip: bytes, mutate: object, message: str
) -> None:
    with pytest.raises(KeySlipError, match=message) as err:
        parse_key_slip(mutate(slip))  # type: ignore[operator]
    assert err.value.exit_code == 31


def _body_variant(slip: bytes, keyset: KeySet, edit: object) -> bytes:
    body = json.loads(parse_key_slip(slip).body)
    return _resign(edit(body), keyset.signer)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: json.dumps(b).encode(), "not canonical"),
        (
            lambda b: json.dumps({**b, "extra": 1}, sort_keys=True, separators=(",", ":")).encode(),
            "more values than",
        ),
        (
            lambda b: json.dumps(
                {**{k: v for k, v in b.items() if k != "name"}, "nom": b["name"]},
                sort_keys=True,
                separators=(",", ":"),
            ).encode(),
            "exactly",
        ),
        (
            lambda b: json.dumps(
                {**b, "schema": True}, sort_keys=True, separators=(",", ":")
            ).encode(),
            "schema must be the integer 1",
        ),
        (
            lambda b: json.dumps(
                {**b, "version": 1.0}, sort_keys=True, separators=(",", ":")
            ).encode(),
            "version must be an integer",
        ),
        (
            lambda b: json.dumps(
                {**b, "keyid": b["keyid"].upper()}, sort_keys=True, separators=(",", ":")
            ).encode(),
            "keyid must match",
        ),
        (
            lambda b: json.dumps(
                {**b, "enc": b["enc"].rstrip("=")}, sort_keys=True, separators=(",", ":")
            ).encode(),
            "enc is not valid base64",
        ),
        (lambda b: b'{"a":' * 40 + b"1" + b"}" * 40, "more values than|nested too deeply"),
    ],
)
def test_a_signed_but_malformed_body_is_refused(
    slip: bytes, release: Bundle, keyset: KeySet, edit: object, message: str
) -> None:
    with pytest.raises(KeySlipError, match=message):
        _open(release, keyset, _body_variant(slip, keyset, edit))


def test_a_slip_contradicting_the_bundle_it_names_is_refused(
    slip: bytes, release: Bundle, keyset: KeySet
) -> None:
    def edit(b: dict[str, object]) -> bytes:
        return json.dumps({**b, "version": 7}, sort_keys=True, separators=(",", ":")).encode()

    with pytest.raises(KeySlipError, match="but not its name, version or content id"):
        _open(release, keyset, _body_variant(slip, keyset, edit))


def test_slip_signatures_are_an_envelope_without_recipients(slip: bytes) -> None:
    parsed = parse_key_slip(slip)
    body_len = len(parsed.body)
    assert slip[16 + body_len :].startswith(b'{"recipients":[],"signatures":[{"alg":"ed25519",')
    with pytest.raises(KeySlipError, match="key slip signatures: malformed JSON"):
        parse_key_slip(slip[: 14 + body_len] + struct.pack(">H", 0))  # no envelope at all
    # A recipient smuggled into the slip's envelope, and more signatures than a slip may carry.
    env = envelope_bytes(parsed.signatures, (RecipientEntry("0" * 64, "x25519", b"x"),))
    smuggled = slip[: 14 + body_len] + struct.pack(">H", len(env)) + env
    with pytest.raises(KeySlipError, match="key slip signatures: .*at most"):
        parse_key_slip(smuggled)
    five = tuple(SignatureEntry(f"{i:064x}", "ed25519", b"s") for i in range(5))
    with pytest.raises(KeySlipError, match="key slip signatures: .*at most"):
        parse_key_slip(slip_bytes(parsed.body, five))


def test_read_key_slip_reads_a_bounded_prefix_of_a_regular_file(tmp_path: Path) -> None:
    big = tmp_path / "big.edgeslip"
    big.write_bytes(bytes(10 * MAX_SLIP_BYTES))
    assert len(read_key_slip(big)) == MAX_SLIP_BYTES + 1
    with pytest.raises(KeySlipError, match="does not exist"):
        read_key_slip(tmp_path / "missing.edgeslip")
    with pytest.raises(KeySlipError, match="not a regular file"):
        read_key_slip(tmp_path)


def test_content_key_of_refuses_an_escrow_entry_someone_replaced(
    release: Bundle, keyset: KeySet
) -> None:
    (swapped,) = wrap_content_key(bytes(32), release.manifest_digest, [keyset.device2.public])
    with pytest.raises(DecryptionError, match="does not open this bundle's payload"):
        content_key_of(release.with_recipients((swapped,)), keyset.device2)


def test_revoked_device_cannot_open_the_next_release(
    tmp_path: Path, release: Bundle, slip: bytes, keyset: KeySet
) -> None:
    """v1 went to both devices; v2 is issued without the revoked one: nothing it holds opens v2."""
    revoked, kept = keyset.device, keyset.device_pq
    v2 = _seal(keyset, version=2)
    report = write_key_slips(tmp_path / "v2", v2, content_key_of(v2, keyset.device2),
                             [revoked.public, kept.public], [keyset.signer],
                             exclude=[revoked.key_id])  # fmt: skip
    assert report.count == 1 and report.excluded == (revoked.key_id,)
    assert not (tmp_path / "v2" / slip_name(revoked.key_id)).exists()
    kept_slip = (tmp_path / "v2" / slip_name(kept.key_id)).read_bytes()
    assert _open(v2, keyset, kept_slip, device_key=kept) == MODEL
    # Its old slip, no slip, and the kept device's slip: each refused, with its own error.
    with pytest.raises(KeySlipMismatchError, match="an older release"):
        _open(v2, keyset, slip, device_key=revoked)
    with pytest.raises(DecryptionError, match="is not a recipient"):
        _open(v2, keyset, None, device_key=revoked)
    with pytest.raises(KeySlipMismatchError, match="for device key"):
        _open(v2, keyset, kept_slip, device_key=revoked)
    # The v1 key does not open v2 either: every seal draws a fresh content key.
    assert content_key_of(v2, keyset.device2) != content_key_of(release, keyset.device2)


def test_write_key_slips_refuses_an_existing_directory_and_repeated_devices(
    tmp_path: Path, release: Bundle, keyset: KeySet
) -> None:
    key = content_key_of(release, keyset.device2)
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="exists"):
        write_key_slips(tmp_path / "out", release, key, [keyset.device.public], [keyset.signer])
    with pytest.raises(UsageError, match="listed twice"):
        write_key_slips(tmp_path / "new", release, key, [keyset.device.public] * 2,
                        [keyset.signer])  # fmt: skip
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging directory left behind
    # A signer that did not sign the bundle: every device would refuse its slips after the
    # release was published, so none is written.
    with pytest.raises(UsageError, match="did not sign bundle") as caught:
        write_key_slips(tmp_path / "other", release, key, [keyset.device.public], [keyset.signer2])
    assert "signed by " + keyset.signer.key_id[:16] in caught.value.message
    assert not (tmp_path / "other").exists()


def test_load_with_a_slip_runs_the_model_on_real_litert(
    tmp_path: Path, release: Bundle, slip: bytes, keyset: KeySet
) -> None:
    bundle_path = tmp_path / "digits.edgepkg"
    save_bundle(release, bundle_path)
    (tmp_path / "mine.edgeslip").write_bytes(slip)
    key_path, _ = save_keypair(keyset.device, tmp_path / "device")
    trust_path = save_keypair(keyset.signer, tmp_path / "signer")[1]
    common = {"trust": trust_path, "device_key": key_path, "allow_target_mismatch": True}
    with edge_sdk.load(bundle_path, slip=tmp_path / "mine.edgeslip", state_dir=tmp_path / "s1",
                       **common) as model:  # type: ignore[arg-type]  # fmt: skip
        out = model.predict(np.ones((1, 4), np.float32))
    assert np.asarray(out).shape == (1, 3)
    # Without slip=: the slip beside the bundle, by name.
    with pytest.raises(DecryptionError, match="is not a recipient"):
        edge_sdk.load(bundle_path, state_dir=tmp_path / "s2", **common)  # type: ignore[arg-type]
    slip_path_beside(bundle_path).write_bytes(slip)
    assert slip_path_beside(bundle_path) == tmp_path / "digits.edgeslip"
    with edge_sdk.load(bundle_path, state_dir=tmp_path / "s3", **common) as model:  # type: ignore[arg-type]
        assert np.allclose(model.predict(np.ones((1, 4), np.float32)), out)
    # As bytes, and refused (typed, audited) when it belongs to another device.
    other = make_key_slip(release, content_key_of(release, keyset.device2),
                          keyset.device_pq.public, [keyset.signer])  # fmt: skip
    with pytest.raises(KeySlipMismatchError):
        edge_sdk.load(bundle_path, slip=other, state_dir=tmp_path / "s4", **common)  # type: ignore[arg-type]
    log = (tmp_path / "s4" / "audit.log").read_text()
    assert '"error":"key-slip-mismatch"' in log


def test_a_slip_through_the_deploy_current_link_is_found_beside_its_release(
    tmp_path: Path, release: Bundle, slip: bytes
) -> None:
    releases = tmp_path / "digits" / "releases"
    releases.mkdir(parents=True)
    name = f"1-{release.digest[:16]}"
    save_bundle(release, releases / f"{name}.edgepkg")
    (tmp_path / "digits" / "current").symlink_to(f"releases/{name}.edgepkg")
    assert slip_path_beside(tmp_path / "digits" / "current") == releases / f"{name}.edgeslip"


def test_sign_manifest_still_signs_manifests_by_default(keyset: KeySet) -> None:
    (entry,) = sign_manifest(b"{}", [keyset.signer])
    assert keyset.signer.public.verify(pae(PAYLOAD_TYPE, b"{}"), entry.signature)
    assert not keyset.signer.public.verify(pae(SLIP_PAYLOAD_TYPE, b"{}"), entry.signature)


def test_entries_keep_their_base64(slip: bytes) -> None:
    body = json.loads(parse_key_slip(slip).body)
    assert base64.b64decode(body["enc"]) == parse_key_slip(slip).entry.enc
    assert dataclasses.is_dataclass(parse_key_slip(slip))


def test_the_cli_issues_slips_and_a_device_runs_the_release_with_its_own(
    tmp_path: Path, keyset: KeySet, cli: object, key_files: dict[str, Path]
) -> None:
    """`edge-sdk slips issue` for a directory of device keys, one revoked; `run --slip` opens it."""
    run = cli  # type: ignore[assignment]
    bundle_path = tmp_path / "digits.edgepkg"
    save_bundle(_seal(keyset), bundle_path)  # escrow: keyset.device2
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name in ("device", "device_pq"):
        (fleet / f"{name}.pub").write_bytes(key_files[f"{name}.pub"].read_bytes())
    result = run("slips", "issue", bundle_path, "--opener", key_files["device2"],  # type: ignore[operator]
                 "--signing-key", key_files["signer"], "--devices", fleet, "--out", tmp_path / "v1",
                 "--exclude", key_files["device_pq.pub"], "--json")  # fmt: skip
    assert result.code == 0, result.err
    report = result.json()
    assert report["slips"] == 1 and report["excluded"] == [keyset.device_pq.key_id]
    assert report["largest"] <= 1024
    mine = tmp_path / "v1" / slip_name(keyset.device.key_id)
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    common = ("--trust", key_files["signer.pub"], "--input", tmp_path / "x.npy",
              "--allow-target-mismatch", "--state-dir", tmp_path / "state")  # fmt: skip
    ok = run("run", bundle_path, "--device-key", key_files["device"], "--slip", mine, *common)  # type: ignore[operator]
    assert ok.code == 0, ok.err
    # The revoked device has no slip; the other's is refused with its documented exit code.
    refused = run("run", bundle_path, "--device-key", key_files["device_pq"], "--slip", mine,  # type: ignore[operator]
                  *common)  # fmt: skip
    assert refused.code == KeySlipMismatchError.exit_code and "for device key" in refused.err
    verified = run("verify", bundle_path, "--trust", key_files["signer.pub"], "--device-key",  # type: ignore[operator]
                   key_files["device"], "--slip", mine, "--json")  # fmt: skip
    assert verified.code == 0 and verified.json()["decrypted"] is True, verified.err
    again = run("slips", "issue", bundle_path, "--opener", key_files["device2"],  # type: ignore[operator]
                "--signing-key", key_files["signer"], "--devices", fleet, "--out", tmp_path / "v1")  # fmt: skip
    assert again.code == 2 and "exists" in again.err
