"""Keys that never leave hardware, end to end against a real SoftHSM2 token and a real swtpm.

Device side: a bundle packaged for a key that exists only inside the (software) TPM, or only
inside a PKCS#11 token, loads on that device and nowhere else. Publisher side: a bundle signed
inside the HSM verifies with the unchanged verifier. And every way it can go wrong — wrong PIN,
missing token, missing object, wrong key type, token pulled between calls, TPM lockout, TPM gone
— is a typed error with its exit code, leaves nothing half-written, and never shows the PIN.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import edge_sdk
from edge_sdk.device.doctor import storage_of
from edge_sdk.errors import (
    DecryptionError,
    KeyFileError,
    TokenKeyNotFoundError,
    TokenKeyTypeError,
    TokenLockedError,
    TokenNotFoundError,
    TokenPinError,
    TokenRemovedError,
)
from edge_sdk.format.bundle import bundle_to_bytes, read_bundle
from edge_sdk.format.encryption import unwrap_content_key, wrap_content_key
from edge_sdk.format.manifest import Target
from edge_sdk.format.signing import PAYLOAD_TYPE, pae
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import (
    PrivateKey,
    PublicKey,
    TrustStore,
    generate_key,
    load_private_key,
    load_public_key,
)

from .conftest import REPO, CliResult
from .hardware import USER_PIN, SwTpm
from .test_tuf import lab, server  # noqa: F401 - the TUF lab's fixtures, for the agent test

MODEL = (REPO / "tests" / "vectors" / "model.tflite").read_bytes()
Cli = Callable[..., CliResult]


def _seal(signer: PrivateKey, recipients: list[PublicKey]) -> bytes:
    bundle = seal_bundle(MODEL, name="digits", version=1, target=Target("x86_64"),
                         signers=[signer], recipients=recipients, chunk_size=4096)  # fmt: skip
    return bundle_to_bytes(bundle)


def _load(raw: bytes, trust: PrivateKey | PublicKey, device_key: Any, tmp: Path) -> Any:
    public = trust.public if isinstance(trust, PrivateKey) else trust
    return edge_sdk.load(raw, trust=TrustStore.from_keys([public]), device_key=device_key,
                         state_dir=tmp / "state", allow_target_mismatch=True)  # fmt: skip


def _no_pin(*texts: str) -> None:
    for text in texts:
        assert USER_PIN not in text


# -- TPM-held device keys -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tpm_key(swtpm: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A device key made inside the swtpm by the CLI; only its .pub exists outside."""
    from edge_sdk.cli import main

    out = tmp_path_factory.mktemp("tpmkey") / "board"
    ref = f"tpm2:handle=0x81010002?tcti={swtpm.tcti}"
    with pytest.raises(SystemExit) as done:
        main(["keys", "generate", "--kind", "device", "--tpm2", ref, "--out", str(out)])
    assert done.value.code in (0, None)
    assert sorted(p.name for p in out.parent.iterdir()) == ["board.pub"]
    return ref, out.with_name("board.pub")


def test_bundle_for_a_tpm_key_loads_there_and_nowhere_else(
    tpm_key: tuple[str, Path], tmp_path: Path
) -> None:
    ref, pub_file = tpm_key
    device_pub = load_public_key(pub_file, kind="device")
    assert device_pub.alg == "p256"
    signer = generate_key("signing")
    raw = _seal(signer, [device_pub])
    assert [r.kem for r in read_bundle(raw).recipients] == ["p256"]
    with _load(raw, signer, ref, tmp_path) as model:
        y = model.predict(np.zeros(model.inputs[0].shape[1:], np.float32)[None])
        assert np.all(np.isfinite(y))
    with pytest.raises(DecryptionError, match="is not a recipient"):
        _load(raw, signer, generate_key("device", "p256"), tmp_path / "other")
    # The same public key as a file key elsewhere cannot exist: the private half never left.
    key = load_private_key(ref, kind="device")
    assert key.location == "tpm2" and key.components == () and key.key_id == device_pub.key_id
    with pytest.raises(KeyFileError, match="cannot be exported"):
        key.to_pem()


def test_tpm_key_through_the_cli(
    cli: Cli, tpm_key: tuple[str, Path], tmp_path: Path, swtpm: Any
) -> None:
    ref, pub_file = tpm_key
    signer = generate_key("signing")
    bundle = tmp_path / "b.edgepkg"
    bundle.write_bytes(_seal(signer, [load_public_key(pub_file, kind="device")]))
    (tmp_path / "s.pub").write_bytes(signer.public.to_pem())
    done = cli("verify", bundle, "--trust", tmp_path / "s.pub", "--device-key", ref, "--json")
    assert done.code == 0, done.err
    shown = cli("keys", "show", ref, "--json")
    assert shown.code == 0 and shown.json()["alg"] == "p256"
    assert (
        shown.json()["fixed_tpm"] == "yes" and shown.json()["key"] == "persistent handle 0x81010002"
    )
    doctor = cli("doctor", "--device-key", ref, "--state-dir", tmp_path / "st", "--json")
    check = next(c for c in doctor.json()["checks"] if c["name"] == "device key")
    assert check["status"] == "ok" and "TPM persistent handle" in check["detail"]
    assert "DH self-test ok" in check["detail"]
    taken = cli("keys", "generate", "--kind", "device", "--tpm2", ref, "--out", tmp_path / "x")
    assert taken.code == 40 and "already in use" in taken.err
    assert not (tmp_path / "x.pub").exists()


def test_tpm_key_file_form(swtpm: Any, tmp_path: Path) -> None:
    ref = f"tpm2:file={tmp_path / 'device.tss'}?tcti={swtpm.tcti}"
    from edge_sdk.keys.key_uri import Tpm2Reference
    from edge_sdk.keys.tpm import generate_tpm_key

    made = generate_tpm_key(Tpm2Reference.parse(ref), out=tmp_path / "dev")
    assert (tmp_path / "device.tss").read_bytes().startswith(b"-----BEGIN TSS2 PRIVATE KEY-----")
    assert oct((tmp_path / "device.tss").stat().st_mode & 0o777) == "0o600"
    signer = generate_key("signing")
    raw = _seal(signer, [made.public])
    with _load(raw, signer, ref, tmp_path) as model:
        assert model.manifest.name == "digits"


def test_tpm_wrong_auth_and_the_lockout_trap(tmp_path: Path) -> None:
    """A fresh swtpm with default DA settings: the 4th wrong value locks out even the right one."""
    from edge_sdk.keys.key_uri import Tpm2Reference
    from edge_sdk.keys.tpm import generate_tpm_key

    with SwTpm.start(tmp_path / "tpm", relax_lockout=False) as tpm:
        for name, value in (("right", "correct horse"), ("wrong", "battery staple")):
            (tmp_path / name).write_text(value)
            (tmp_path / name).chmod(0o600)
        base = f"tpm2:handle=0x81010005?tcti={tpm.tcti}"
        right, wrong = (f"{base}&pin-source=file:{tmp_path / n}" for n in ("right", "wrong"))
        made = generate_tpm_key(Tpm2Reference.parse(right), out=tmp_path / "dev")
        assert load_private_key(right).key_id == made.public.key_id
        key = load_private_key(base, kind="device")  # reading the public part needs no auth
        cek, digest = os.urandom(32), hashlib.sha256(b"m").digest()
        entries = wrap_content_key(cek, digest, [made.public])
        with pytest.raises(TokenPinError, match="rejected the key's authorization value"):
            unwrap_content_key(entries, digest, key)  # no auth given: counts as a failure
        wrong_key = load_private_key(wrong)
        for _ in range(2):
            with pytest.raises(TokenPinError):
                unwrap_content_key(entries, digest, wrong_key)
        with pytest.raises(TokenLockedError, match="dictionary-attack lockout") as locked:
            unwrap_content_key(entries, digest, load_private_key(right))
        assert locked.value.exit_code == 47 and "clear-lockout" in (locked.value.hint or "")
        tpm.tools("tpm2_dictionarylockout", "--clear-lockout")
        assert unwrap_content_key(entries, digest, load_private_key(right)) == cek
        # A TPM that goes away between calls is a typed error too.
        opened = load_private_key(right)
        tpm.stop()
        with pytest.raises(TokenRemovedError, match="went away"):
            unwrap_content_key(entries, digest, opened)
        with pytest.raises(TokenNotFoundError, match="cannot reach the TPM"):
            load_private_key(right)


def test_tpm2_tools_provisioning_from_the_guide(swtpm: Any, tmp_path: Path) -> None:
    """The x86 / Pi provisioning commands of docs/KEYS.md, run verbatim against the swtpm."""
    import subprocess

    script = re.search(
        r"<!-- tpm2-provision:begin -->\n```bash\n(.*?)```\n<!-- tpm2-provision:end -->",
        (REPO / "docs" / "KEYS.md").read_text(),
        re.DOTALL,
    )
    assert script, "docs/KEYS.md lost its tpm2-provision block"
    env = {**os.environ, "TPM2TOOLS_TCTI": swtpm.tcti, "TSS2_LOG": "all+NONE",
           "HANDLE": "0x81010007"}  # fmt: skip
    done = subprocess.run(["bash", "-c", script.group(1)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    public = load_public_key(tmp_path / "device.pub", kind="device")
    key = load_private_key(f"tpm2:handle=0x81010007?tcti={swtpm.tcti}", kind="device")
    assert key.key_id == public.key_id
    signer = generate_key("signing")
    with _load(_seal(signer, [public]), signer, key, tmp_path) as model:
        assert model.manifest.version == 1


# -- PKCS#11: device keys and signing keys in SoftHSM2 ----------------------------------------------


def _generate(cli: Cli, uri: str, kind: str, alg: str, out: Path) -> CliResult:
    done = cli("keys", "generate", "--kind", kind, "--alg", alg, "--pkcs11", uri, "--out", out,
               "--json")  # fmt: skip
    return done


def test_pkcs11_device_key_end_to_end(cli: Cli, softhsm: Any, tmp_path: Path) -> None:
    uri = softhsm.uri("board-1")
    done = _generate(cli, uri, "device", "p256", tmp_path / "board")
    assert done.code == 0, done.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board.pub"]  # no private key file
    info = done.json()
    assert info["alg"] == "p256" and info["location"] == "PKCS#11 token 'edge'"
    signer = generate_key("signing")
    public = load_public_key(tmp_path / "board.pub", kind="device")
    raw = _seal(signer, [public])
    with _load(raw, signer, uri, tmp_path) as model:
        assert model.manifest.name == "digits"
    shown = cli("keys", "show", uri, "--json").json()
    assert shown["key_id"] == public.key_id
    assert (shown["sensitive"], shown["extractable"], shown["never_extractable"]) == (
        "yes",
        "no",
        "yes",
    )
    doctor = cli("doctor", "--device-key", uri, "--state-dir", tmp_path / "st", "--json").json()
    check = next(c for c in doctor["checks"] if c["name"] == "device key")
    assert check["status"] == "ok" and "PKCS#11 token 'edge'" in check["detail"]
    _no_pin(done.out, done.err, str(shown), str(doctor))


@pytest.fixture(scope="module")
def hsm_signers(softhsm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """ECDSA P-256 and Ed25519 signing keys generated inside SoftHSM (their .pub files beside)."""
    from edge_sdk.keys.key_uri import Pkcs11Uri
    from edge_sdk.keys.pkcs11 import generate_pkcs11_key

    where = tmp_path_factory.mktemp("hsm-signers")
    made = {}
    for alg in ("ecdsa-p256", "ed25519"):
        uri = softhsm.uri(f"publisher-{alg}")
        generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="signing", alg=alg, out=where / alg)
        made[alg] = (uri, where / f"{alg}.pub")
    return made


@pytest.mark.parametrize("alg", ["ecdsa-p256", "ed25519"])
def test_hsm_signed_bundle_verifies_like_a_file_signed_one(
    cli: Cli, hsm_signers: dict[str, Any], alg: str, tmp_path: Path
) -> None:
    uri, pub = hsm_signers[alg]
    out = tmp_path / "b.edgepkg"
    done = cli("package", REPO / "tests" / "vectors" / "model.tflite", "--profile", "x86_64",
               "--sign-key", uri, "--name", "digits", "--version", "3", "--out", out, "--json")  # fmt: skip
    assert done.code == 0, done.err
    verified = cli("verify", out, "--trust", pub, "--json")
    assert verified.code == 0, verified.err
    entry = read_bundle(out).signatures[0]
    assert entry.alg == alg and entry.key_id == load_public_key(pub).key_id
    if alg == "ecdsa-p256":
        decode_dss_signature(entry.signature)  # DER, as openssl dgst -sha256 -sign writes it
    else:
        assert len(entry.signature) == 64
    _no_pin(done.out, done.err)


def test_hsm_signing_alongside_a_file_key(hsm_signers: dict[str, Any]) -> None:
    """Threshold 2 across an HSM key and a file key: both signatures verify."""
    uri, pub = hsm_signers["ecdsa-p256"]
    hsm_key, file_key = load_private_key(uri, kind="signing"), generate_key("signing")
    bundle = seal_bundle(MODEL, name="digits", version=1, target=Target("x86_64"),
                         signers=[hsm_key, file_key])  # fmt: skip
    trust = TrustStore.from_keys([load_public_key(pub), file_key.public], threshold=2)
    assert len(edge_sdk.format.verify.verify_bundle(bundle, trust).signers) == 2


def test_wrong_pin_is_typed_and_never_echoed(
    cli: Cli, softhsm: Any, hsm_signers: dict[str, Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad-pin"
    bad.write_text("0000-" + USER_PIN[::-1])
    bad.chmod(0o600)
    uri = softhsm.uri("publisher-ecdsa-p256", pin_source=f"file:{bad}")
    out = tmp_path / "b.edgepkg"
    done = cli("package", REPO / "tests" / "vectors" / "model.tflite", "--profile", "x86_64",
               "--sign-key", uri, "--name", "digits", "--version", "1", "--out", out)  # fmt: skip
    assert done.code == 46 and "rejected the PIN" in done.err
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
    assert USER_PIN[::-1] not in done.err + done.out
    gen = _generate(
        cli, uri.replace("publisher-ecdsa-p256", "new-key"), "device", "p256", tmp_path / "n"
    )
    assert gen.code == 46 and not (tmp_path / "n.pub").exists()
    no_pin = cli("keys", "generate", "--kind", "device", "--pkcs11",
                 softhsm.uri("new-key", pin_source=""), "--out", tmp_path / "n")  # fmt: skip
    assert no_pin.code == 46 and "needs a PIN" in no_pin.err
    with pytest.raises(TokenPinError) as caught:
        load_private_key(uri, kind="signing")
    assert "bad-pin" in caught.value.message  # says where the PIN came from, not what it was


def test_pin_from_the_environment(softhsm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_SDK_PKCS11_PIN", USER_PIN)
    key = load_private_key(softhsm.uri("publisher-ed25519", pin_source=""), kind="signing")
    assert len(key.sign(b"x")) == 64
    monkeypatch.setenv("BOARD_PIN", USER_PIN)
    key = load_private_key(softhsm.uri("publisher-ed25519", pin_source="env:BOARD_PIN"))
    assert key.kind == "signing"


@pytest.mark.usefixtures("hsm_signers")
def test_missing_token_object_and_wrong_type(cli: Cli, softhsm: Any, tmp_path: Path) -> None:
    cases = [
        (softhsm.uri("publisher-ed25519", token="no-such-token"), 44, TokenNotFoundError),
        (softhsm.uri("no-such-key"), 48, TokenKeyNotFoundError),
        (softhsm.uri("publisher-ecdsa-p256"), 49, TokenKeyTypeError),  # signing key as device key
        (softhsm.uri("x").replace("/usr/lib/softhsm/libsofthsm2.so", "/nonexistent.so"), 44,
         TokenNotFoundError),
    ]  # fmt: skip
    for uri, code, error in cases:
        with pytest.raises(error):
            load_private_key(uri, kind="device")
        bundle = tmp_path / "b.edgepkg"
        signer = generate_key("signing")
        bundle.write_bytes(_seal(signer, [generate_key("device", "p256").public]))
        (tmp_path / "s.pub").write_bytes(signer.public.to_pem())
        done = cli("verify", bundle, "--trust", tmp_path / "s.pub", "--device-key", uri)
        assert done.code == code, (uri, done.err)
        _no_pin(done.err, done.out)


def test_keys_that_can_leave_the_token_are_refused(softhsm: Any) -> None:
    import pkcs11
    from pkcs11 import Attribute as A

    lib = pkcs11.lib(softhsm.module)
    with lib.get_token(token_label="spare").open(rw=True, user_pin=softhsm.pin) as session:
        params = session.create_domain_parameters(
            pkcs11.KeyType.EC, {A.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")}, local=True
        )
        params.generate_keypair(
            store=True, label="leaky", id=b"leaky",
            private_template={A.SENSITIVE: False, A.EXTRACTABLE: True, A.DERIVE: True},
            public_template={A.DERIVE: True},
        )  # fmt: skip
    with pytest.raises(TokenKeyTypeError, match="can leave the token") as caught:
        load_private_key(softhsm.uri("leaky", "spare"), kind="device")
    assert caught.value.exit_code == 49


def test_token_pulled_between_calls(
    softhsm: Any, hsm_signers: dict[str, Any], tmp_path: Path
) -> None:
    uri, _ = hsm_signers["ecdsa-p256"]
    key = load_private_key(uri, kind="signing")
    out = tmp_path / "b.edgepkg"
    from edge_sdk.format.bundle import save_bundle

    def seal_and_save() -> None:
        save_bundle(
            seal_bundle(MODEL, name="d", version=1, target=Target("x86_64"), signers=[key]), out
        )

    with softhsm.pulled("edge"):
        with pytest.raises(TokenRemovedError, match="went away") as caught:
            seal_and_save()
        assert caught.value.exit_code == 45
        assert not out.exists()  # nothing half-written
        with pytest.raises(TokenNotFoundError):
            load_private_key(uri, kind="signing")  # a fresh open: not found, not "removed"
    # Put back: the same key object works again (a session per operation holds nothing stale).
    message = pae(PAYLOAD_TYPE, b"m")
    assert load_public_key(hsm_signers["ecdsa-p256"][1]).verify(message, key.sign(message))


def test_a_key_swapped_under_the_same_label_is_noticed(softhsm: Any, tmp_path: Path) -> None:
    import pkcs11
    from pkcs11 import Attribute as A

    from edge_sdk.keys.key_uri import Pkcs11Uri
    from edge_sdk.keys.pkcs11 import generate_pkcs11_key

    uri = softhsm.uri("swapped")
    generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="device", alg="p256", out=tmp_path / "a")
    key = load_private_key(uri, kind="device")
    lib = pkcs11.lib(softhsm.module)
    with lib.get_token(token_label="edge").open(rw=True, user_pin=softhsm.pin) as session:
        for obj in session.get_objects({A.LABEL: "swapped"}):
            obj.destroy()
    generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="device", alg="p256", out=tmp_path / "b")
    entries = wrap_content_key(os.urandom(32), bytes(32), [key.public])
    with pytest.raises(TokenRemovedError, match="changed since it was opened"):
        unwrap_content_key(entries, bytes(32), key)


def test_generate_refuses_to_overwrite_and_leaves_nothing(
    cli: Cli, softhsm: Any, tmp_path: Path
) -> None:
    uri = softhsm.uri("once")
    assert _generate(cli, uri, "device", "p256", tmp_path / "one").code == 0
    again = _generate(cli, uri, "device", "p256", tmp_path / "two")
    assert again.code == 40 and "already holds" in again.json()["message"]
    assert not (tmp_path / "two.pub").exists()
    (tmp_path / "three.pub").write_text("keep me")
    taken = _generate(cli, softhsm.uri("other"), "device", "p256", tmp_path / "three")
    assert taken.code == 40 and (tmp_path / "three.pub").read_text() == "keep me"
    import pkcs11
    from pkcs11 import Attribute as A

    with pkcs11.lib(softhsm.module).get_token(token_label="edge").open(user_pin=softhsm.pin) as s:
        assert not list(s.get_objects({A.LABEL: "other"}))  # nothing generated for it
    unsupported = _generate(cli, softhsm.uri("x"), "device", "x25519", tmp_path / "x")
    assert unsupported.code == 42 and not (tmp_path / "x.pub").exists()


def test_concurrent_use_and_fork(softhsm: Any, tmp_path: Path) -> None:
    from edge_sdk.keys.key_uri import Pkcs11Uri
    from edge_sdk.keys.pkcs11 import generate_pkcs11_key

    uri = softhsm.uri("shared")
    made = generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="device", alg="p256", out=tmp_path / "s")
    key = load_private_key(uri, kind="device")
    digest = hashlib.sha256(b"m").digest()
    ceks = [os.urandom(32) for _ in range(8)]
    entries = [wrap_content_key(c, digest, [made.public]) for c in ceks]
    results: list[bytes | BaseException] = [b""] * 8

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = unwrap_content_key(entries[i], digest, key)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ceks
    # A forked child re-initializes the module and uses the same key object.
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_unwrap, args=(queue, entries[0], digest, key))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and queue.get(timeout=5) == ceks[0]
    assert unwrap_content_key(entries[1], digest, key) == ceks[1]  # the parent still works


def _child_unwrap(queue: Any, entries: Any, digest: bytes, key: PrivateKey) -> None:
    queue.put(unwrap_content_key(entries, digest, key))


def test_no_pin_in_reprs_or_errors(softhsm: Any, hsm_signers: dict[str, Any]) -> None:
    uri, _ = hsm_signers["ed25519"]
    key = load_private_key(uri, kind="signing")
    assert key.hardware is not None
    texts = [
        repr(key),
        str(key),
        repr(key.hardware),
        str(key.hardware.describe()),
        repr(vars(key.hardware)),
    ]
    _no_pin(*texts)
    from edge_sdk.errors import KeyReferenceError

    with pytest.raises(KeyReferenceError) as caught:
        load_private_key(uri.replace("pin-source=file:", "pin-value=" + USER_PIN + "&x="))
    _no_pin(str(caught.value), repr(caught.value), caught.value.diagnostics())


# -- doctor on file keys: where does the key live? -----------------------------------------------------


def _fake_block(
    root: Path, dev: tuple[int, int], disk: str, files: dict[str, str], usb: bool = False
) -> None:
    bus = root / "devices" / ("pci0/usb1/1-1/host0" if usb else "platform/mmc") / "block" / disk
    (bus / "device").mkdir(parents=True)
    for name, value in files.items():
        (bus / name).write_text(value)
    (root / "dev" / "block").mkdir(parents=True, exist_ok=True)
    (root / "dev" / "block" / f"{dev[0]}:{dev[1]}").symlink_to(bus)


def test_storage_classification(tmp_path: Path) -> None:
    key = tmp_path / "device.key"
    key.write_text("x")
    st = os.stat(key).st_dev
    dev = (os.major(st), os.minor(st))
    for name, files, usb, removable in (
        ("sd", {"removable": "0", "device/type": "SD"}, False, True),
        ("usb", {"removable": "0"}, True, True),
        ("flag", {"removable": "1"}, False, True),
        ("emmc", {"removable": "0", "device/type": "MMC"}, False, False),
    ):
        sysfs = tmp_path / f"sys-{name}"
        _fake_block(sysfs, dev, "mmcblk0", files, usb)
        where = storage_of(key, sysfs)
        assert where.removable is removable, (name, where)
        assert where.device == "mmcblk0"
    assert storage_of(key, tmp_path / "no-sysfs").device is None


# -- the agent: installs only what this device's token key can open ------------------------------------


def test_agent_with_a_device_key_in_a_token(softhsm: Any, tmp_path: Path, lab: Any) -> None:  # noqa: F811
    """tests/test_tuf.py's lab: a real TUF repository behind a real nginx."""
    from edge_sdk.keys.key_uri import Pkcs11Uri
    from edge_sdk.keys.pkcs11 import generate_pkcs11_key

    uri = softhsm.uri("agent-board")
    generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="device", alg="p256", out=tmp_path / "board")
    board = load_private_key(uri, kind="device")
    lab.publish(1, recipient=board)
    agent = lab.agent(device_key=uri)
    assert [(o.status, o.version) for o in agent.poll().outcomes] == [("installed", 1)]
    lab.publish(2)  # encrypted for another device only
    (outcome,) = agent.poll().outcomes
    assert outcome.status == "rejected" and isinstance(outcome.error, DecryptionError)
    assert lab.current().startswith("releases/1-")
    lab.publish(3, recipient=board)
    with softhsm.pulled("edge"):
        (outcome,) = agent.poll().outcomes
    assert outcome.status == "failed" and isinstance(outcome.error, TokenRemovedError)
    assert lab.current().startswith("releases/1-")  # nothing switched, and not remembered:
    assert [(o.status, o.version) for o in agent.poll().outcomes] == [("installed", 3)]


def test_file_keys_never_import_the_token_libraries(tmp_path: Path) -> None:
    """A board without the hsm/tpm extras imports edge_sdk and opens file-key bundles."""
    import subprocess
    import sys

    signer, device = generate_key("signing"), generate_key("device", "p256")
    (tmp_path / "b.edgepkg").write_bytes(_seal(signer, [device.public]))
    from edge_sdk.keys import save_keypair

    save_keypair(device, tmp_path / "device")
    (tmp_path / "s.pub").write_bytes(signer.public.to_pem())
    bundle, device_key, pub = (str(tmp_path / n) for n in ("b.edgepkg", "device.key", "s.pub"))
    code = (
        "import sys, edge_sdk\n"
        "from edge_sdk.keys import TrustStore, load_private_key, load_public_key\n"
        "from edge_sdk.format.bundle import read_bundle\n"
        "from edge_sdk.format.verify import decrypt_model\n"
        f"key = load_private_key({device_key!r}, kind='device')\n"
        f"trust = TrustStore.from_keys([load_public_key({pub!r})])\n"
        f"assert len(decrypt_model(read_bundle({bundle!r}, trust=trust), key)) > 0\n"
        "heavy = ('pkcs11', 'tpm2_pytss', 'edge_sdk.keys.pkcs11', 'edge_sdk.keys.tpm')\n"
        "loaded = sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO)
