"""Property: mutate a valid bundle anywhere, and only EdgeSDKError subclasses ever escape.

Also: a mutation that still opens must give back exactly the original model (no silent corruption).
CI runs this with HYPOTHESIS_PROFILE=ci (3,000 examples per test; profiles in conftest.py);
locally the default is 300.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_sdk.errors import EdgeSDKError
from edge_sdk.format.bundle import bundle_to_bytes, read_bundle
from edge_sdk.format.manifest import Target
from edge_sdk.format.verify import open_bundle
from edge_sdk.host.sealing import seal_bundle
from edge_sdk.keys import TrustStore, generate_key

MODEL = os.urandom(9000)
SIGNER = generate_key("signing", "ed25519")
HYBRID = generate_key("signing", "ed25519+mldsa65")
DEVICE = generate_key("device", "x25519")
TRUST = TrustStore.from_keys([SIGNER.public, HYBRID.public])


def _bundle(**kw: object) -> bytes:
    return bundle_to_bytes(
        seal_bundle(
            MODEL,
            name="fuzz",
            version=3,
            target=Target("x86_64"),
            signers=[SIGNER],
            recipients=[DEVICE.public],
            chunk_size=4096,
            **kw,  # type: ignore[arg-type]
        )
    )


VALID = {
    "encrypted": _bundle(),
    "compressed": _bundle(compression="zstd", min_compression_saving=0.0),  # random: saves ~0
}
HEADER_END = {name: len(raw) - len(MODEL) - 200 for name, raw in VALID.items()}


def _check(raw: bytes) -> None:
    try:
        opened = open_bundle(raw, TRUST, DEVICE)
    except EdgeSDKError:
        return
    assert opened.model_bytes == MODEL


mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.floats(min_value=0, max_value=1, allow_nan=False),
    st.integers(min_value=0, max_value=255),
    st.booleans(),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(sorted(VALID)), mutations=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_bundles_only_raise_edge_sdk_errors(
    which: str, mutations: list[tuple[str, float, int, bool]]
) -> None:
    raw = bytearray(VALID[which])
    for op, where, value, in_header in mutations:
        span = HEADER_END[which] if in_header else len(raw)
        pos = min(int(where * span), max(len(raw) - 1, 0))
        if not raw:
            break
        if op == "flip":
            raw[pos] ^= 1 << (value % 8)
        elif op == "set":
            raw[pos] = value
        elif op == "insert":
            raw[pos:pos] = bytes([value])
        elif op == "delete":
            del raw[pos]
        else:
            del raw[pos:]
    _check(bytes(raw))


@given(garbage=st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_edge_sdk_errors(garbage: bytes) -> None:
    _check(b"EDGEPKG\n\x00\x01\x00\x00" + garbage)
    _check(garbage)


def test_the_compressed_variant_keeps_zstd() -> None:
    """Random bytes do not shrink, so the packager's threshold would store them uncompressed;
    the fuzzed variant keeps zstd on purpose, so the decompressor is fuzzed too."""
    assert read_bundle(VALID["compressed"]).manifest.payload.compression == "zstd"
    assert read_bundle(VALID["encrypted"]).manifest.payload.compression == "none"
