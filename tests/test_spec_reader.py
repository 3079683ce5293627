"""A second reader, written from docs/FORMAT.md alone, opens every committed vector.

It imports nothing from edge_sdk: only the primitives the document names (Ed25519, ECDSA P-256,
ML-DSA-65, X25519, ML-KEM-768, SHA-256, SHA3-256, SHAKE256, HMAC, AES-256-GCM, ChaCha20-Poly1305,
zstd), and it builds HPKE (RFC 9180 base mode, single shot) and X-Wing from them by hand. If the
document left something to guess — a suite id, the X-Wing combiner, the chunk AAD, a key encoding
— this reader would fail to open the vectors that our own reader opens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

VECTORS = Path(__file__).parent / "vectors"
EXPECTED = json.loads((VECTORS / "expected.json").read_text())
KEYS = VECTORS / "keys"

# docs/FORMAT.md, "Keys and key ids" and the key file table.
ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")
X25519_SPKI = bytes.fromhex("302a300506032b656e032100")
MLKEM768_SPKI = bytes.fromhex("308204b2300b0609608648016503040402038204a100")
XWING_SPKI = bytes.fromhex("308204d4300d060b2b0601040183e62d81c87a038204c100")
XWING_PKCS8 = bytes.fromhex("3034020100300d060b2b0601040183e62d81c87a0420")


def pem_ders(path: Path) -> list[bytes]:
    text = path.read_text()
    return [
        base64.b64decode("".join(body.split()))
        for body in re.findall(r"-----BEGIN [A-Z ]+-----(.*?)-----END", text, re.S)
    ]


# -- HPKE (RFC 9180) and X-Wing, from primitives ----------------------------------------------------


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hkdf_extract(salt, b"HPKE-v1" + suite + label + ikm)


def labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite + label + info, length)


def dhkem_x25519_decap(enc: bytes, sk: x25519.X25519PrivateKey) -> bytes:
    suite = b"KEM" + struct.pack(">H", 0x0020)
    dh = sk.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    pk_r = sk.public_key().public_bytes_raw()
    prk = labeled_extract(suite, b"", b"eae_prk", dh)
    return labeled_expand(suite, prk, b"shared_secret", enc + pk_r, 32)


def xwing_decap(ct: bytes, sk_m: mlkem.MLKEM768PrivateKey, sk_x: x25519.X25519PrivateKey) -> bytes:
    ct_m, ct_x = ct[:1088], ct[1088:]
    ss_m = sk_m.decapsulate(ct_m)
    ss_x = sk_x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = sk_x.public_key().public_bytes_raw()
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + b"\\.//^\\").digest()


def hpke_open(kem_id: int, shared_secret: bytes, info: bytes, ct: bytes) -> bytes:
    suite = b"HPKE" + struct.pack(">HHH", kem_id, 0x0001, 0x0002)
    context = (
        b"\x00"
        + labeled_extract(suite, b"", b"psk_id_hash", b"")
        + labeled_extract(suite, b"", b"info_hash", info)
    )
    secret = labeled_extract(suite, shared_secret, b"secret", b"")
    key = labeled_expand(suite, secret, b"key", context, 32)
    nonce = labeled_expand(suite, secret, b"base_nonce", context, 12)
    return AESGCM(key).decrypt(nonce, ct, b"")


# -- keys -------------------------------------------------------------------------------------------


def signing_key(path: Path) -> tuple[str, str, list[Any]]:
    """(alg, key id, components) of a signing .pub file."""
    ders = pem_ders(path)
    keys = [serialization.load_der_public_key(d) for d in ders]
    if len(ders) == 1 and ders[0].startswith(ED25519_SPKI):
        alg = "ed25519"
    elif len(ders) == 1 and isinstance(keys[0], ec.EllipticCurvePublicKey):
        alg = "ecdsa-p256"
    else:
        assert isinstance(keys[0], ed25519.Ed25519PublicKey)
        assert isinstance(keys[1], mldsa.MLDSA65PublicKey) and len(keys) == 2
        alg = "ed25519+mldsa65"
    spki = [
        k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for k in keys
    ]
    return alg, hashlib.sha256(b"".join(spki)).hexdigest(), keys


def device_key(path: Path) -> tuple[str, str, Any]:
    """(kem, key id, private parts) of a device .key file, in either X-Wing file form."""
    ders = pem_ders(path)
    if len(ders) == 1 and ders[0].startswith(XWING_PKCS8):
        shake = hashlib.shake_256(ders[0][len(XWING_PKCS8) :]).digest(96)
        parts: list[Any] = [
            mlkem.MLKEM768PrivateKey.from_seed_bytes(shake[:64]),
            x25519.X25519PrivateKey.from_private_bytes(shake[64:]),
        ]
    else:
        parts = [serialization.load_der_private_key(d, password=None) for d in ders]
    if len(parts) == 1:
        pk = parts[0].public_key().public_bytes_raw()
        return "x25519", hashlib.sha256(X25519_SPKI + pk).hexdigest(), parts
    pk_m, pk_x = (p.public_key().public_bytes_raw() for p in parts)
    key_id = hashlib.sha256(MLKEM768_SPKI + pk_m + X25519_SPKI + pk_x).hexdigest()
    return "mlkem768-x25519", key_id, parts


# -- the reader -------------------------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def open_vector(raw: bytes, trusted: list[Path], devices: list[Path]) -> bytes:
    assert raw[:8] == b"EDGEPKG\n"
    version, flags, m_len = struct.unpack(">HHI", raw[8:16])
    assert (version, flags) == (1, 0) and m_len <= 262_144
    manifest_bytes = raw[16 : 16 + m_len]
    (e_len,) = struct.unpack(">I", raw[16 + m_len : 20 + m_len])
    assert e_len <= 8 * 1024 * 1024
    envelope_bytes = raw[20 + m_len : 20 + m_len + e_len]
    (p_len,) = struct.unpack(">Q", raw[20 + m_len + e_len : 28 + m_len + e_len])
    assert 28 + m_len + e_len + p_len == len(raw)
    payload = raw[28 + m_len + e_len :]

    envelope = json.loads(envelope_bytes)
    assert canonical(envelope) == envelope_bytes  # the envelope is canonical
    for entry in envelope["signatures"] + envelope["recipients"]:
        for key in ("sig", "enc"):
            if key in entry:
                assert base64.b64encode(base64.b64decode(entry[key])).decode() == entry[key]
    manifest = json.loads(manifest_bytes)
    pay, model = manifest["payload"], manifest["model"]
    assert pay["size"] == p_len

    # Signatures: trust decides the algorithm; every trusted key must have signed here.
    kind = b"application/vnd.edge-sdk.manifest+json;version=1"
    message = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(manifest_bytes), manifest_bytes)
    entries = {e["keyid"]: e for e in envelope["signatures"]}
    for path in trusted:
        alg, key_id, keys = signing_key(path)
        entry = entries[key_id]
        assert entry["alg"] == alg
        sig = base64.b64decode(entry["sig"])
        if alg == "ed25519":
            keys[0].verify(sig, message)
        elif alg == "ecdsa-p256":
            keys[0].verify(sig, message, ec.ECDSA(hashes.SHA256()))
        else:
            keys[0].verify(sig[:64], message)
            keys[1].verify(sig[64:], message)

    assert hashlib.sha256(payload).hexdigest() == pay["sha256"]
    stored_size = pay.get("compressed_size", model["size"])
    if pay["encryption"] == "none":
        stored = payload
    else:
        cek = None
        info_head = b"edge-sdk/v1/cek" + hashlib.sha256(manifest_bytes).digest()
        for path in devices:
            kem, key_id, parts = device_key(path)
            mine = [r for r in envelope["recipients"] if r["keyid"] == key_id]
            if not mine:
                continue
            assert mine[0]["kem"] == kem
            blob = base64.b64decode(mine[0]["enc"])
            info = info_head + bytes.fromhex(key_id)
            if kem == "x25519":
                cek = hpke_open(0x0020, dhkem_x25519_decap(blob[:32], parts[0]), info, blob[32:])
            else:
                cek = hpke_open(0x647A, xwing_decap(blob[:1120], *parts), info, blob[1120:])
            break
        assert cek is not None and len(cek) == 32, "no device key among the recipients"
        aead = AESGCM(cek) if pay["encryption"] == "aes-256-gcm" else ChaCha20Poly1305(cek)
        chunk, content_id = pay["chunk_size"], bytes.fromhex(pay["content_id"])
        n = max(1, -(-stored_size // chunk))
        assert p_len == stored_size + 16 * n
        pieces = []
        for i in range(n):
            size = min(chunk, stored_size - i * chunk)
            sealed = payload[i * (chunk + 16) : i * (chunk + 16) + size + 16]
            aad = b"edge-sdk/v1/chunk" + content_id + struct.pack(">QB", i, i == n - 1)
            pieces.append(aead.decrypt(struct.pack(">IQ", 0, i), sealed, aad))
        stored = b"".join(pieces)
    assert len(stored) == stored_size
    if pay["compression"] == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=True)
        plain = reader.read(model["size"] + 1)
        assert len(plain) == model["size"]
    else:
        plain = stored
    assert hashlib.sha256(plain).hexdigest() == model["sha256"] and len(plain) == model["size"]
    return plain


@pytest.fixture(scope="module")
def signer_files() -> dict[str, Path]:
    return {signing_key(p)[1]: p for p in KEYS.glob("signer-*.pub")}


@pytest.mark.parametrize("name", sorted(EXPECTED["bundles"]))
def test_the_spec_reader_opens_every_vector(name: str, signer_files: dict[str, Path]) -> None:
    expected = EXPECTED["bundles"][name]
    raw = (VECTORS / f"{name}.edgepkg").read_bytes()
    trusted = [signer_files[k] for k in expected["signers"]]
    devices = sorted(KEYS.glob("device-*.key"))
    recipient_files = [p for p in devices if device_key(p)[1] in expected["recipients"]]
    assert len(recipient_files) == len(expected["recipients"]), "a recipient key id is unknown"
    for device in recipient_files or [None]:
        plain = open_vector(raw, trusted, [device] if device else [])
        assert plain == (VECTORS / "model.tflite").read_bytes()


def test_the_key_ids_of_the_spec_match_expected() -> None:
    """Key ids computed from the document's SPKI prefixes are the ones the vectors name."""
    ids = {device_key(p)[1] for p in KEYS.glob("device-*.key")}
    ids |= {signing_key(p)[1] for p in KEYS.glob("signer-*.pub")}
    named = {k for b in EXPECTED["bundles"].values() for k in b["signers"] + b["recipients"]}
    assert named <= ids
    xwing_pub = pem_ders(KEYS / "device-xwing.pub")[0]
    assert xwing_pub.startswith(XWING_SPKI) and len(xwing_pub) == len(XWING_SPKI) + 1216
