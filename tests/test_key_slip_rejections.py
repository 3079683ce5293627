"""Every way a slip can be wrong, through edge_sdk.load on one device: typed error, exit code, and
no trace left — the next genuine load on the same state dir (real LiteRT) still runs.

The state dir matters: a device keeps its highest seen version there (anti-rollback). A slip
naming a newer release must not raise that mark before the slip has been accepted, or one
rejected slip would lock the device out of the release it is meant to run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edge_sdk
from edge_sdk.errors import EdgeSDKError, KeySlipError, KeySlipMismatchError, SignatureError
from edge_sdk.fleet.key_slips import content_key_of
from edge_sdk.format.bundle import Bundle, save_bundle
from edge_sdk.format.key_slip import MAX_SLIP_BYTES, make_key_slip
from edge_sdk.format.manifest import Target
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import PrivateKey, save_keypair

from .conftest import REPO, KeySet

MODEL = (REPO / "tests" / "vectors" / "model.tflite").read_bytes()
TARGET = Target("x86_64", "ai-edge-litert", "2.3.0", ("x86_64",))


def _seal(keyset: KeySet, version: int, name: str = "digits") -> Bundle:
    return seal_bundle(MODEL, name=name, version=version, target=TARGET, signers=[keyset.signer],
                       recipients=[keyset.device2.public], chunk_size=4096)  # fmt: skip


def _slip(
    bundle: Bundle,
    keyset: KeySet,
    device: PrivateKey | None = None,
    signer: PrivateKey | None = None,
) -> bytes:
    """A slip the escrow key can make: for ``device`` (default: ours), signed by ``signer``."""
    key = content_key_of(bundle, keyset.device2)
    return make_key_slip(bundle, key, (device or keyset.device).public, [signer or keyset.signer])


def test_each_bad_slip_is_refused_typed_and_the_next_genuine_load_runs(
    tmp_path: Path, keyset: KeySet
) -> None:
    v2 = _seal(keyset, 2)
    bundle_path = tmp_path / "digits.edgepkg"
    save_bundle(v2, bundle_path)
    genuine = _slip(v2, keyset)
    bad: list[tuple[str, bytes, type[EdgeSDKError], int]] = [
        ("another bundle", _slip(_seal(keyset, 2, name="other"), keyset), KeySlipMismatchError, 32),
        ("another device", _slip(v2, keyset, device=keyset.device_pq), KeySlipMismatchError, 32),
        ("an old release", _slip(_seal(keyset, 1), keyset), KeySlipMismatchError, 32),
        ("a newer release", _slip(_seal(keyset, 3), keyset), KeySlipMismatchError, 32),
        ("a non-publisher key", _slip(v2, keyset, signer=keyset.signer2), SignatureError, 21),
        ("truncated", genuine[: len(genuine) // 2], KeySlipError, 31),
        ("oversized", genuine + bytes(MAX_SLIP_BYTES), KeySlipError, 31),
        ("garbled", bytes(b ^ 0x5A for b in genuine), KeySlipError, 31),
        ("empty", b"", KeySlipError, 31),
    ]
    key_path, _ = save_keypair(keyset.device, tmp_path / "device")
    trust_path = save_keypair(keyset.signer, tmp_path / "signer")[1]
    common = {"trust": trust_path, "device_key": key_path, "allow_target_mismatch": True,
              "state_dir": tmp_path / "state"}  # fmt: skip
    x = np.ones((1, 4), np.float32)
    with edge_sdk.load(bundle_path, slip=genuine, **common) as model:  # type: ignore[arg-type]
        expected = np.asarray(model.predict(x))
    for what, raw, error, code in bad:
        with pytest.raises(error) as err:
            edge_sdk.load(bundle_path, slip=raw, **common)  # type: ignore[arg-type]
        assert err.value.exit_code == code, what
        assert "slip" in err.value.message, (what, err.value.message)
        # Nothing the rejected slip carried stuck: the genuine slip opens the same release.
        with edge_sdk.load(bundle_path, slip=genuine, **common) as model:  # type: ignore[arg-type]
            assert np.allclose(model.predict(x), expected), what
