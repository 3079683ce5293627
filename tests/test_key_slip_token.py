"""Key slips for P-256 device keys held in a PKCS#11 token (real SoftHSM2), through the TUF
repository served by a real nginx: a mixed fleet (X25519 key files, P-256 keys in a token) gets
one release with one command; each token device's agent pulls only its own slip, the HPKE
unwrap's Diffie-Hellman happens inside the token, and the installed release runs — through the
API and through ``edge-sdk run`` — with nothing but the ``pkcs11:`` URI as the device key."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import DecryptionError, KeySlipMismatchError, TokenRemovedError
from edge_sdk.fleet import tuf_repo
from edge_sdk.format.bundle import read_bundle, save_bundle
from edge_sdk.format.key_slip import parse_key_slip
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import generate_key, load_private_key, load_public_key, save_keypair
from edge_sdk.keys.key_uri import Pkcs11Uri
from edge_sdk.keys.pkcs11 import generate_pkcs11_key
from tools.tuf_server import RepoServer

from .conftest import CliResult
from .test_key_slip_tuf import downloads
from .test_tuf import MODEL, Lab, make_lab, server  # noqa: F401  (the nginx fixture)

X = np.ones((1, 4), np.float32)


@pytest.fixture
def lab(tmp_path: Path, server: RepoServer) -> Lab:  # noqa: F811
    return make_lab(tmp_path, server)


def test_token_devices_in_a_mixed_fleet_pull_their_own_slip_and_run_the_release(
    lab: Lab,
    server: RepoServer,  # noqa: F811
    softhsm: Any,
    cli: Callable[..., CliResult],
) -> None:
    # The publisher's view of the fleet: public keys only, three X25519 files and two P-256
    # keys generated inside the token (never extractable; only their .pub leaves it).
    keys = lab.tmp / "fleet-keys"
    keys.mkdir()
    files = [generate_key("device", "x25519") for _ in range(3)]
    for i, device in enumerate(files):
        save_keypair(device, keys / f"file{i}")
        (keys / f"file{i}.key").unlink()
    # Labels unique to this test: the session's SoftHSM token is shared with other tests.
    tag = lab.tmp.name[-12:].replace("_", "-")
    uris = [softhsm.uri(f"slip-{tag}-{i}") for i in range(2)]
    for i, uri in enumerate(uris):
        generate_pkcs11_key(Pkcs11Uri.parse(uri), kind="device", alg="p256", out=keys / f"tok{i}")
    tokens = [load_public_key(keys / f"tok{i}.pub", kind="device") for i in range(2)]
    assert [t.alg for t in tokens] == ["p256", "p256"]

    escrow = generate_key("device")
    escrow_key, _ = save_keypair(escrow, lab.tmp / "escrow")
    signer, trust = save_keypair(lab.publisher, lab.tmp / "publisher")
    bundle = lab.tmp / "digits-1.edgepkg"
    sealed = seal_bundle(MODEL, name="digits", version=1, target=Target("x86_64"),
                         signers=[lab.publisher], recipients=[escrow.public])  # fmt: skip
    save_bundle(sealed, bundle)
    published = cli("repo", "publish", bundle, "--repo", lab.repo, "--trust", trust,
                    "--devices", keys, "--opener", escrow_key, "--signing-key", signer,
                    "--json")  # fmt: skip
    assert published.code == 0, published.err
    assert published.json()["slips"] == 5

    digest = read_bundle(bundle).digest
    for index, uri in enumerate(uris):
        device = f"tok{index}"
        mark = server.mark()
        result = lab.agent(device, device_key=uri).poll()
        assert [o.status for o in result.outcomes] == ["installed"], result.outcomes
        names = [name for name, _ in downloads(server, mark)]
        own = tuf_repo.slip_target_path("digits", 1, tokens[index].key_id).rsplit("/", 1)[1]
        (slip_file,) = [n for n in names if n.startswith("targets/slips/")]
        assert slip_file.endswith(f".{own}")
        assert len([n for n in names if re.search(r"\.bin-[0-9a-f]+\.json$", n)]) == 1

        releases = lab.tmp / device / "install" / "digits" / "releases"
        (beside,) = releases.glob("*.edgeslip")
        slip = parse_key_slip(beside.read_bytes())
        assert (slip.entry.kem, slip.entry.key_id, slip.bundle_digest) == (
            "p256",
            tokens[index].key_id,
            digest,
        )
        current = lab.tmp / device / "install" / "digits" / "current"
        with edge_sdk.load(current, trust=lab.trust, device_key=uri,
                           state_dir=lab.tmp / device / "load-state",
                           allow_target_mismatch=True) as model:  # fmt: skip
            assert np.asarray(model.predict(X)).shape == (1, 3)

    # A file-key device of the same release installs and runs as before.
    assert lab.agent("file0", device_key=files[0]).poll().outcomes[0].status == "installed"

    # `edge-sdk run` on the board, the token URI as the key, the slip found beside `current`.
    np.save(lab.tmp / "x.npy", X)
    ran = cli("run", lab.tmp / "tok0" / "install" / "digits" / "current", "--trust", trust,
              "--device-key", uris[0], "-i", lab.tmp / "x.npy", "--state-dir",
              lab.tmp / "tok0" / "cli-state", "--allow-target-mismatch", "--json")  # fmt: skip
    assert ran.code == 0, ran.err
    assert "4711-edge-test-pin" not in ran.out + ran.err

    # The other token device's slip is refused by key id before the token is asked anything;
    # without a slip the token key is not a recipient of the bundle.
    other = next((lab.tmp / "tok1" / "install" / "digits" / "releases").glob("*.edgeslip"))
    key0 = load_private_key(uris[0], kind="device")
    with pytest.raises(KeySlipMismatchError, match="key slip is for device key"):
        edge_sdk.load(bundle, trust=lab.trust, device_key=key0, slip=other.read_bytes(),
                      state_dir=lab.tmp / "tok0" / "s2", allow_target_mismatch=True)  # fmt: skip
    with pytest.raises(DecryptionError, match="not a recipient"):
        edge_sdk.load(bundle, trust=lab.trust, device_key=key0,
                      state_dir=lab.tmp / "tok0" / "s3", allow_target_mismatch=True)  # fmt: skip

    # The unwrap needs the token: the key object holds no private key, and with the token
    # pulled the genuine slip cannot be opened (the ECDH is the token's), a typed error.
    assert key0.hardware is not None
    with softhsm.pulled("edge"), pytest.raises(TokenRemovedError):
        edge_sdk.load(lab.tmp / "tok0" / "install" / "digits" / "current", trust=lab.trust,
                      device_key=key0, state_dir=lab.tmp / "tok0" / "s4",
                      allow_target_mismatch=True)  # fmt: skip
