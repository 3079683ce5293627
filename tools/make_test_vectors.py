"""Add format test vectors to tests/vectors/ — only on purpose, and never rewriting one.

The vectors are bundles sealed with fixed keys (committed too) around a small real model. Every
future release must still open them (tests/test_vectors.py), so a format change that breaks old
bundles fails CI. Sealing is randomised (content keys, HPKE ephemerals, ECDSA nonces), so a vector
once committed is never regenerated: this script writes only the keys and vectors that do not
exist yet, and keeps the entries of expected.json it finds.

    python tools/make_test_vectors.py            # adds what is missing to tests/vectors/

Key slips for some of those bundles (``<bundle>.slip-<device>.edgeslip``) are made the same way.

The negative (invalid) vectors are made from these by tools/make_invalid_vectors.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_sdk.fleet.key_slips import content_key_of  # noqa: E402
from edge_sdk.format.bundle import read_bundle, save_bundle  # noqa: E402
from edge_sdk.format.key_slip import make_key_slip  # noqa: E402
from edge_sdk.format.manifest import Target  # noqa: E402
from edge_sdk.host.sealing import seal_bundle  # noqa: E402
from edge_sdk.keys import generate_key, load_private_key, save_keypair  # noqa: E402

OUT = REPO / "tests" / "vectors"
CREATED = datetime(2026, 11, 28, tzinfo=timezone.utc)
KEYS = {
    "signer-ed25519": ("signing", "ed25519"),
    "signer-ecdsa": ("signing", "ecdsa-p256"),
    "signer-hybrid": ("signing", "ed25519+mldsa65"),
    "device-x25519": ("device", "x25519"),
    "device-mlkem": ("device", "mlkem768-x25519"),  # two PEM blocks: written by release 1.0
    "device-xwing": ("device", "mlkem768-x25519"),  # X-Wing seed and SPKI (id-XWing)
    "device-slip-x25519": ("device", "x25519"),  # a device reached only by key slips
}
VECTORS = {
    "v1-ed25519-signed-only": {"signers": ["signer-ed25519"], "recipients": []},
    "v1-ed25519-x25519-aes256gcm": {"signers": ["signer-ed25519"], "recipients": ["device-x25519"]},
    "v1-ecdsa-x25519-chacha20-zstd": {
        "signers": ["signer-ecdsa"], "recipients": ["device-x25519"], "aead": "chacha20-poly1305",
        "compression": "zstd",
    },
    "v1-hybrid-mlkem-aes256gcm-2signers": {
        "signers": ["signer-hybrid", "signer-ed25519"], "recipients": ["device-mlkem", "device-x25519"],
    },
    # The payload of a signed-only compressed bundle is the zstd stream itself.
    "v1-ed25519-signed-only-zstd": {"signers": ["signer-ed25519"], "recipients": [], "compression": "zstd"},
    # A device key in the X-Wing seed encoding.
    "v1-ecdsa-xwing-aes256gcm": {"signers": ["signer-ecdsa"], "recipients": ["device-xwing"]},
}  # fmt: skip
#: Key slips (docs/FORMAT.md, "Key slips") for committed bundles: the content key comes from the
#: bundle's entry for ``opener`` and is wrapped for ``device``, which is not an in-bundle recipient.
SLIPS = {
    "v1-ed25519-x25519-aes256gcm.slip-x25519": {
        "bundle": "v1-ed25519-x25519-aes256gcm", "opener": "device-x25519",
        "device": "device-slip-x25519", "signers": ["signer-ed25519"],
    },
    "v1-hybrid-mlkem-aes256gcm-2signers.slip-xwing": {
        "bundle": "v1-hybrid-mlkem-aes256gcm-2signers", "opener": "device-x25519",
        "device": "device-xwing", "signers": ["signer-hybrid", "signer-ed25519"],
    },
}  # fmt: skip


def _model() -> bytes:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3, name="y")])
    return bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def main() -> None:
    keys_dir = OUT / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name, (kind, alg) in KEYS.items():
        if not (keys_dir / f"{name}.key").exists():
            save_keypair(generate_key(kind, alg), keys_dir / name)  # type: ignore[arg-type]
    for path in keys_dir.glob("*.key"):
        path.chmod(0o600)  # git keeps no file modes; these are public test keys
    keys = {name: load_private_key(keys_dir / f"{name}.key") for name in KEYS}
    model_path = OUT / "model.tflite"
    if not model_path.exists():
        model_path.write_bytes(_model())
    model = model_path.read_bytes()
    index = OUT / "expected.json"
    expected = json.loads(index.read_text()) if index.exists() else {"bundles": {}}
    expected["model_sha256"] = hashlib.sha256(model).hexdigest()
    written = []
    for name, spec in VECTORS.items():
        if (OUT / f"{name}.edgepkg").exists():
            continue  # a committed vector is never rewritten
        written.append(name)
        bundle = seal_bundle(
            model, name="vector", version=1, target=Target("x86_64", "ai-edge-litert", "2.3.0", ("x86_64",)),
            signers=[keys[s] for s in spec["signers"]],  # type: ignore[attr-defined]
            recipients=[keys[r].public for r in spec["recipients"]],  # type: ignore[attr-defined]
            aead=str(spec.get("aead", "aes-256-gcm")), compression=str(spec.get("compression", "none")),
            created=CREATED, chunk_size=4096,
        )  # fmt: skip
        save_bundle(bundle, OUT / f"{name}.edgepkg")
        expected["bundles"][name] = {  # type: ignore[index]
            "digest": bundle.digest,
            "signers": [keys[s].key_id for s in spec["signers"]],  # type: ignore[attr-defined]
            "recipients": [keys[r].key_id for r in spec["recipients"]],  # type: ignore[attr-defined]
            "file_sha256": hashlib.sha256((OUT / f"{name}.edgepkg").read_bytes()).hexdigest(),
        }
    slips = expected.setdefault("slips", {})
    for name, spec in SLIPS.items():
        path = OUT / f"{name}.edgeslip"
        if path.exists():
            continue  # as for the bundles: never rewritten
        written.append(name)
        bundle = read_bundle(OUT / f"{spec['bundle']}.edgepkg")
        key = content_key_of(bundle, keys[spec["opener"]])
        path.write_bytes(
            make_key_slip(
                bundle, key, keys[spec["device"]].public, [keys[s] for s in spec["signers"]]
            )
        )
        slips[name] = {
            "bundle": spec["bundle"],
            "device_key": spec["device"],
            "signers": [keys[s].key_id for s in spec["signers"]],
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    index.write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {len(written)} new vector(s) to {OUT}: {', '.join(written) or 'none'}")


if __name__ == "__main__":
    main()
