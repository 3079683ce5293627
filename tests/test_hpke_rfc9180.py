"""HPKE with the DH step in a token (edge_sdk.format.hpke_delegated) against RFC 9180's own test vectors.

The vectors are RFC 9180 Appendix A's base-mode setups for DHKEM(X25519) and DHKEM(P-256) with
HKDF-SHA256 (AES-128-GCM and ChaCha20Poly1305 are the AEADs the RFC publishes for them), copied
from the RFC text: the recipient's private key, the sender's encapsulated key, every intermediate
of the key schedule, and the first ciphertext. For P-256 the recipient key is also imported into
SoftHSM so the DH step runs in a real token. AES-256-GCM (what bundles use) is cross-checked
against cryptography's own HPKE.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge_sdk.format import hpke_delegated as hd
from edge_sdk.keys import PrivateKey, generate_key, load_private_key

RFC9180_BASE = [
    {
        "suite": "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM",
        "info": "4f6465206f6e2061204772656369616e2055726e",
        "skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
        "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
        "enc": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
        "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
        "key_schedule_context": (
            "00725611c9d98c07c03f60095cd32d400d8347d45ed67097bbad50fc56da742d"
            "07cb6cffde367bb0565ba28bb02c90744a20f5ef37f30523526106f637abb054"
            "49"
        ),
        "secret": "12fff91991e93b48de37e7daddb52981084bd8aa64289c3788471d9a9712f397",
        "key": "4531685d41d65f03dc48f6b8302c05b0",
        "base_nonce": "56d890e5accaaf011cff4b7d",
        "exporter_secret": "45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8",
        "pt": "4265617574792069732074727574682c20747275746820626561757479",
        "aad": "436f756e742d30",
        "ct": (
            "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
            "6d8770ac83d07bea87e13c512a"
        ),
    },
    {
        "suite": "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305",
        "info": "4f6465206f6e2061204772656369616e2055726e",
        "skRm": "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
        "pkRm": "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
        "enc": "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
        "shared_secret": "0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7",
        "key_schedule_context": (
            "00431df6cd95e11ff49d7013563baf7f11588c75a6611ee2a4404a49306ae4cf"
            "c5b69c5718a60cc5876c358d3f7fc31ddb598503f67be58ea1e798c0bb19eb97"
            "96"
        ),
        "secret": "5b9cd775e64b437a2335cf499361b2e0d5e444d5cb41a8a53336d8fe402282c6",
        "key": "ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91",
        "base_nonce": "5c4d98150661b848853b547f",
        "exporter_secret": "a3b010d4994890e2c6968a36f64470d3c824c8f5029942feb11e7a74b2921922",
        "pt": "4265617574792069732074727574682c20747275746820626561757479",
        "aad": "436f756e742d30",
        "ct": (
            "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db"
            "21993c62ce81883d2dd1b51a28"
        ),
    },
    {
        "suite": "DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM",
        "info": "4f6465206f6e2061204772656369616e2055726e",
        "skRm": "f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2",
        "pkRm": (
            "04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a"
            "826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72e"
            "a0"
        ),
        "enc": (
            "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325a"
            "c98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18"
            "c4"
        ),
        "shared_secret": "c0d26aeab536609a572b07695d933b589dcf363ff9d93c93adea537aeabb8cb8",
        "key_schedule_context": (
            "00b88d4e6d91759e65e87c470e8b9141113e9ad5f0c8ceefc1e088c82e698050"
            "0798e486f9c9c09c9b5c753ac72d6005de254c607d1b534ed11d493ae1c1d9ac"
            "85"
        ),
        "secret": "2eb7b6bf138f6b5aff857414a058a3f1750054a9ba1f72c2cf0684a6f20b10e1",
        "key": "868c066ef58aae6dc589b6cfdd18f97e",
        "base_nonce": "4e0bc5018beba4bf004cca59",
        "exporter_secret": "14ad94af484a7ad3ef40e9f3be99ecc6fa9036df9d4920548424df127ee0d99f",
        "pt": "4265617574792069732074727574682c20747275746820626561757479",
        "aad": "436f756e742d30",
        "ct": (
            "5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f"
            "9076ac232e3ab2523f39513434"
        ),
    },
    {
        "suite": "DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305",
        "info": "4f6465206f6e2061204772656369616e2055726e",
        "skRm": "a4d1c55836aa30f9b3fbb6ac98d338c877c2867dd3a77396d13f68d3ab150d3b",
        "pkRm": (
            "04a697bffde9405c992883c5c439d6cc358170b51af72812333b015621dc0f40"
            "bad9bb726f68a5c013806a790ec716ab8669f84f6b694596c2987cf35baba2a0"
            "06"
        ),
        "enc": (
            "04c07836a0206e04e31d8ae99bfd549380b072a1b1b82e563c935c095827824f"
            "c1559eac6fb9e3c70cd3193968994e7fe9781aa103f5b50e934b5b2f387e3812"
            "91"
        ),
        "shared_secret": "806520f82ef0b03c823b7fc524b6b55a088f566b9751b89551c170f4113bd850",
        "key_schedule_context": (
            "00b738cd703db7b4106e93b4621e9a19c89c838e55964240e5d3f331aaf8b0d5"
            "8b2e986ea1c671b61cf45eec134dac0bae58ec6f63e790b1400b47c33038b026"
            "9c"
        ),
        "secret": "fe891101629aa355aad68eff3cc5170d057eca0c7573f6575e91f9783e1d4506",
        "key": "a8f45490a92a3b04d1dbf6cf2c3939ad8bfc9bfcb97c04bffe116730c9dfe3fc",
        "base_nonce": "726b4390ed2209809f58c693",
        "exporter_secret": "4f9bd9b3a8db7d7c3a5b9d44fdc1f6e37d5d77689ade5ec44a7242016e6aa205",
        "pt": "4265617574792069732074727574682c20747275746820626561757479",
        "aad": "436f756e742d30",
        "ct": (
            "6469c41c5c81d3aa85432531ecf6460ec945bde1eb428cb2fedf7a29f5a685b4"
            "ccb0d057f03ea2952a27bb458b"
        ),
    },
]


def _h(v: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(v[name])


def _kem(v: dict[str, Any]) -> hd.DhKem:
    return hd.DHKEM_P256 if "P-256" in v["suite"] else hd.DHKEM_X25519


def _aead(v: dict[str, Any]) -> int:
    return hd.AEAD_AES_128_GCM if "AES-128-GCM" in v["suite"] else hd.AEAD_CHACHA20_POLY1305


def _software_dh(v: dict[str, Any]) -> hd.DiffieHellman:
    sk = _h(v, "skRm")
    if _kem(v) is hd.DHKEM_P256:
        private = ec.derive_private_key(int.from_bytes(sk, "big"), ec.SECP256R1())
        return lambda pk: private.exchange(
            ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pk)
        )
    xkey = x25519.X25519PrivateKey.from_private_bytes(sk)
    return lambda pk: xkey.exchange(x25519.X25519PublicKey.from_public_bytes(pk))


@pytest.mark.parametrize("v", RFC9180_BASE, ids=[v["suite"] for v in RFC9180_BASE])
def test_rfc9180_base_vectors(v: dict[str, Any]) -> None:
    kem, aead = _kem(v), _aead(v)
    shared = hd.decap(kem, _h(v, "enc"), _software_dh(v), _h(v, "pkRm"))
    assert shared.hex() == v["shared_secret"]
    schedule = hd.key_schedule_base(kem, aead, shared, _h(v, "info"))
    assert schedule.key_schedule_context.hex() == v["key_schedule_context"]
    assert schedule.secret.hex() == v["secret"]
    assert schedule.key.hex() == v["key"]
    assert schedule.base_nonce.hex() == v["base_nonce"]
    assert schedule.exporter_secret.hex() == v["exporter_secret"]
    opened = hd.open_base(
        kem, aead, _h(v, "enc"), _h(v, "ct"), info=_h(v, "info"), aad=_h(v, "aad"),
        dh=_software_dh(v), pk_rm=_h(v, "pkRm"),
    )  # fmt: skip
    assert opened.hex() == v["pt"]


def _import_into_token(softhsm: Any, label: str, v: dict[str, Any]) -> PrivateKey:
    """Put the vector's recipient key into SoftHSM (sensitive, never extractable) and open it."""
    import pkcs11
    from pkcs11 import Attribute as A

    params = bytes.fromhex("06082a8648ce3d030107")
    point = _h(v, "pkRm")
    lib = pkcs11.lib(softhsm.module)
    with lib.get_token(token_label="spare").open(rw=True, user_pin=softhsm.pin) as session:
        if not list(session.get_objects({A.LABEL: label})):
            common = {A.TOKEN: True, A.LABEL: label, A.ID: label.encode(),
                      A.KEY_TYPE: pkcs11.KeyType.EC, A.EC_PARAMS: params}  # fmt: skip
            session.create_object({**common, A.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
                                   A.VALUE: _h(v, "skRm"), A.SENSITIVE: True,
                                   A.EXTRACTABLE: False, A.DERIVE: True, A.PRIVATE: True})  # fmt: skip
            session.create_object({**common, A.CLASS: pkcs11.ObjectClass.PUBLIC_KEY,
                                   A.EC_POINT: b"\x04\x41" + point, A.DERIVE: True})  # fmt: skip
    return load_private_key(softhsm.uri(label, "spare"), kind="device")


@pytest.mark.parametrize(
    "v", [v for v in RFC9180_BASE if "P-256" in v["suite"]], ids=["aes128gcm", "chacha20"]
)
def test_rfc9180_p256_vectors_with_the_dh_step_in_softhsm(softhsm: Any, v: dict[str, Any]) -> None:
    key = _import_into_token(softhsm, "rfc9180-" + v["key"][:8], v)
    assert key.location == "pkcs11" and key.components == ()
    assert key.public.raw_public_bytes() == _h(v, "pkRm")
    assert key.hardware is not None
    shared = hd.decap(hd.DHKEM_P256, _h(v, "enc"), key.hardware.dh, _h(v, "pkRm"))
    assert shared.hex() == v["shared_secret"]
    opened = hd.open_base(
        hd.DHKEM_P256, _aead(v), _h(v, "enc"), _h(v, "ct"), info=_h(v, "info"),
        aad=_h(v, "aad"), dh=key.hardware.dh, pk_rm=_h(v, "pkRm"),
    )  # fmt: skip
    assert opened.hex() == v["pt"]


@pytest.mark.parametrize(
    ("alg", "kem", "hpke_kem"),
    [("p256", hd.DHKEM_P256, hpke.KEM.P256), ("x25519", hd.DHKEM_X25519, hpke.KEM.X25519)],
)
def test_agrees_with_cryptography_hpke_for_aes256gcm(
    alg: str, kem: hd.DhKem, hpke_kem: Any
) -> None:
    key = generate_key("device", alg)
    suite = hpke.Suite(hpke_kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    private = key.components[0]

    def dh(peer: bytes) -> bytes:
        if alg == "p256":
            return bytes(private.exchange(
                ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer)
            ))  # fmt: skip
        return bytes(private.exchange(x25519.X25519PublicKey.from_public_bytes(peer)))

    for info in (b"", b"edge-sdk/v1/cek" + bytes(64)):
        sealed = suite.encrypt(b"content key " * 3, key.public.hpke_public(), info=info)
        opened = hd.open_base(
            kem, hd.AEAD_AES_256_GCM, sealed[: kem.n_enc], sealed[kem.n_enc :], info=info,
            dh=dh, pk_rm=key.public.raw_public_bytes(),
        )  # fmt: skip
        assert opened == b"content key " * 3
    with pytest.raises(InvalidTag):
        hd.open_base(kem, hd.AEAD_AES_256_GCM, sealed[: kem.n_enc], sealed[kem.n_enc :],
                     info=b"other", dh=dh, pk_rm=key.public.raw_public_bytes())  # fmt: skip


def test_hostile_encapsulated_keys_are_refused() -> None:
    v = RFC9180_BASE[2]  # P-256
    enc = bytearray(_h(v, "enc"))
    enc[-1] ^= 1  # no longer on the curve
    with pytest.raises(ValueError):
        hd.decap(hd.DHKEM_P256, bytes(enc), _software_dh(v), _h(v, "pkRm"))
    point = ec.generate_private_key(ec.SECP256R1()).public_key()
    compressed = point.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    with pytest.raises(ValueError, match="must be 65 bytes"):
        hd.decap(hd.DHKEM_P256, compressed, _software_dh(v), _h(v, "pkRm"))
    with pytest.raises(ValueError, match="uncompressed"):
        hd.decap(hd.DHKEM_P256, b"\x02" + bytes(64), _software_dh(v), _h(v, "pkRm"))
    x = RFC9180_BASE[0]
    with pytest.raises(ValueError):  # cryptography refuses the small-order point itself
        hd.decap(hd.DHKEM_X25519, bytes(32), _software_dh(x), _h(x, "pkRm"))
    with pytest.raises(ValueError, match="all zero"):  # and so does the delegated path
        hd.decap(hd.DHKEM_X25519, bytes(32), lambda _pk: bytes(32), _h(x, "pkRm"))
