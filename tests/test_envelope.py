"""The unsigned envelope: one spelling per content, bounded parse cost, no ambiguous entries.

Nothing in the envelope is signed, so every way to write the same signatures and recipients
differently is a way to change a bundle's bytes (and its file hash) without a key, and every byte
of it is parsed before any signature is checked. These tests tamper with real sealed bundles.
"""

from __future__ import annotations

import base64
import json
import tracemalloc

import pytest

from edge_sdk.errors import BundleFormatError, DecryptionError, SignatureError
from edge_sdk.format.bundle import (
    DEFAULT_LIMITS,
    envelope_bytes,
    envelope_value_limit,
    parse_envelope,
    read_bundle,
)
from edge_sdk.format.encryption import RecipientEntry
from edge_sdk.format.signing import SignatureEntry
from edge_sdk.format.strict_json import value_bound
from edge_sdk.format.verify import open_bundle

from .bundle_parts import split_bundle
from .conftest import KeySet, make_bundle_bytes


@pytest.fixture(scope="module")
def good(keyset: KeySet) -> bytes:
    return make_bundle_bytes(keyset, signers=(keyset.signer, keyset.signer2))


def _with_envelope(raw: bytes, envelope: bytes) -> bytes:
    parts = split_bundle(raw)
    parts.envelope_raw = envelope
    return parts.join()


def _noncanonical(b64: str) -> str:
    """The same bytes with non-zero padding bits: the last character before '=' moved up by one."""
    assert b64.endswith("=")
    body = b64.rstrip("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bumped = body[:-1] + alphabet[alphabet.index(body[-1]) + 1]
    assert base64.b64decode(bumped + "=" * (len(b64) - len(body))) == base64.b64decode(b64)
    return bumped + "=" * (len(b64) - len(body))


def test_the_example_from_the_review_decodes_alike() -> None:
    """`CY==` and `CQ==` are both accepted by a lenient decoder: the malleability in question."""
    assert base64.b64decode("CY==") == base64.b64decode("CQ==") == b"\t"
    assert _noncanonical("CQ==") == "CR=="


@pytest.mark.parametrize("field", ["signatures", "recipients"])
def test_noncanonical_base64_is_refused(good: bytes, keyset: KeySet, field: str) -> None:
    parts = split_bundle(good)
    entry = parts.envelope[field][0]
    key = "sig" if field == "signatures" else "enc"
    # Pick an entry whose encoding ends in padding, so there are padding bits to set.
    assert entry[key].endswith("="), "the sealed value happens to need no padding"
    entry[key] = _noncanonical(entry[key])
    tampered = parts.join()
    with pytest.raises(BundleFormatError, match="not canonical base64"):
        read_bundle(tampered)
    # The lenient decoding would have opened it: the bytes decode to the very same value.
    assert base64.b64decode(entry[key]) == base64.b64decode(
        split_bundle(good).envelope[field][0][key]
    )


@pytest.mark.parametrize(
    ("spell", "message"),
    [
        (lambda v: v.rstrip("="), "not valid base64"),  # padding dropped
        (
            lambda v: v.replace("+", "-").replace("/", "_") + "-_",
            "not valid base64",
        ),  # URL alphabet
        (lambda v: v[:20] + "\n" + v[20:], "not valid base64"),  # line break
        (lambda v: "", "1 to 8192 bytes"),
    ],
    ids=["unpadded", "urlsafe", "newline", "empty"],
)
def test_other_base64_spellings_are_refused(good: bytes, spell, message: str) -> None:  # type: ignore[no-untyped-def]
    parts = split_bundle(good)
    parts.envelope["signatures"][0]["sig"] = spell(parts.envelope["signatures"][0]["sig"])
    with pytest.raises(BundleFormatError, match=message):
        read_bundle(parts.join())


@pytest.mark.parametrize(
    "envelope",
    [
        lambda e: json.dumps(e, sort_keys=True),  # spaces after separators
        lambda e: json.dumps(e, separators=(",", ":")),  # unsorted keys (recipients last)
        lambda e: json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n",
        lambda e: json.dumps(e, sort_keys=True, separators=(",", ":")).replace("a", "\\u0061", 1),
    ],
    ids=["whitespace", "key-order", "trailing-newline", "escaped-letter"],
)
def test_noncanonical_json_is_refused(good: bytes, envelope) -> None:  # type: ignore[no-untyped-def]
    parts = split_bundle(good)
    if list(parts.envelope) == sorted(parts.envelope):
        parts.envelope = {
            "signatures": parts.envelope["signatures"],
            "recipients": parts.envelope["recipients"],
        }
    raw = envelope(parts.envelope).encode()
    assert json.loads(raw) == split_bundle(good).envelope  # same content, other spelling
    with pytest.raises(BundleFormatError, match="not in canonical form"):
        read_bundle(_with_envelope(good, raw))


def test_the_writer_is_canonical(good: bytes) -> None:
    """What envelope_bytes writes is exactly what the reader accepts back."""
    bundle = read_bundle(good)
    again = _with_envelope(good, envelope_bytes(bundle.signatures, bundle.recipients))
    assert again == good


def test_two_signatures_by_one_key_are_malformed(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    first = parts.envelope["signatures"][0]
    parts.envelope["signatures"] = [first, dict(first)]
    raw = parts.join()
    with pytest.raises(BundleFormatError, match="two signatures by the same key"):
        read_bundle(raw)  # refused by the parse, with or without a trust store
    with pytest.raises(BundleFormatError):
        read_bundle(raw, trust=keyset.trust())


def test_two_recipient_entries_for_one_key_are_malformed(good: bytes) -> None:
    parts = split_bundle(good)
    parts.envelope["recipients"] = parts.envelope["recipients"] * 2
    with pytest.raises(BundleFormatError, match="same recipient key twice"):
        read_bundle(parts.join())


@pytest.mark.parametrize("alg", ["Ed25519", "ed 25519", "", "a" * 65, "-ed25519", "ed25519\u00e9"])
def test_algorithm_names_have_one_grammar(good: bytes, alg: str) -> None:
    parts = split_bundle(good)
    parts.envelope["signatures"][1]["alg"] = alg
    with pytest.raises(BundleFormatError, match="must be an algorithm name|not ASCII"):
        read_bundle(parts.join())


def test_unknown_algorithm_names_of_untrusted_signers_are_ignored(
    good: bytes, keyset: KeySet
) -> None:
    """A well-spelled name this release does not know is fine where no trusted key is named."""
    parts = split_bundle(good)
    parts.envelope["signatures"][1]["alg"] = "slh-dsa-sha2-128s"
    bundle = read_bundle(parts.join(), trust=keyset.trust(keyset.signer))
    assert bundle.signatures[1].alg == "slh-dsa-sha2-128s"


def test_envelope_that_is_not_ascii_is_refused(good: bytes) -> None:
    env = envelope_bytes(read_bundle(good).signatures, read_bundle(good).recipients)
    with pytest.raises(BundleFormatError, match="not ASCII"):
        read_bundle(_with_envelope(good, env[:-2] + "\u00a0".encode() + env[-2:]))


def test_encrypted_bundle_without_recipients_is_malformed(good: bytes, keyset: KeySet) -> None:
    parts = split_bundle(good)
    parts.envelope["recipients"] = []
    with pytest.raises(BundleFormatError, match="at least one recipient"):
        read_bundle(parts.join(), trust=keyset.trust())


def test_8_mib_of_empty_objects_is_refused_before_parsing(good: bytes, keyset: KeySet) -> None:
    """The review's amplification: 8 MiB of `{}` cost 230 MiB and a second before signatures."""
    body = b",".join([b"{}"] * (8 * 1024 * 1024 // 3 - 20))
    hostile = b'{"recipients":[' + body + b'],"signatures":[]}'
    assert len(hostile) <= DEFAULT_LIMITS.max_envelope_bytes
    raw = _with_envelope(good, hostile)
    tracemalloc.start()
    try:
        with pytest.raises(BundleFormatError, match="more values than a well-formed envelope"):
            read_bundle(raw, trust=keyset.trust())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Python objects allocated while reading: the envelope's own copy, no parse tree.
    assert peak < 2 * len(hostile), f"{peak / 2**20:.1f} MiB allocated"


def test_the_fullest_wellformed_envelope_fits_the_value_bound() -> None:
    """The bound never refuses what the format allows: 16 signatures and 4096 recipients."""
    sigs = tuple(SignatureEntry(f"{i:064x}", "ed25519+mldsa65", bytes(8192)) for i in range(16))
    recs = tuple(RecipientEntry(f"{i:064x}", "mlkem768-x25519", bytes(1)) for i in range(4096))
    raw = envelope_bytes(sigs, recs)
    assert value_bound(raw) <= envelope_value_limit(DEFAULT_LIMITS)
    assert parse_envelope(raw, DEFAULT_LIMITS) == (sigs, recs)
    # One more entry of either kind is over a list cap, so the bound is as tight as it can be.
    assert value_bound(raw) + 4 > envelope_value_limit(DEFAULT_LIMITS)


def test_parse_refusals_are_the_same_whatever_the_trust(good: bytes, keyset: KeySet) -> None:
    """A malformed envelope is a format error before the signature check, never a signature one."""
    parts = split_bundle(good)
    parts.envelope["signatures"][0]["sig"] = _noncanonical(parts.envelope["signatures"][0]["sig"])
    raw = parts.join()
    for trust in (None, keyset.trust(keyset.ecdsa)):
        with pytest.raises(BundleFormatError) as caught:
            read_bundle(raw, trust=trust)
        assert not isinstance(caught.value, SignatureError)


def test_canonical_bundles_still_open(good: bytes, keyset: KeySet) -> None:
    opened = open_bundle(good, keyset.trust(), keyset.device)
    assert opened.model_bytes.startswith(b"\x00TFL3")
    with pytest.raises(DecryptionError):
        open_bundle(good, keyset.trust(), keyset.device2)


def test_entries_for_other_devices_may_name_kems_this_release_does_not_know(
    good: bytes, keyset: KeySet
) -> None:
    """A newer writer may add recipient kinds: an entry for another key id is never opened."""
    parts = split_bundle(good)
    parts.envelope["recipients"].append(
        {"enc": base64.b64encode(bytes(97)).decode(), "kem": "dhkem-p384", "keyid": "ab" * 32}
    )
    opened = open_bundle(parts.join(), keyset.trust(), keyset.device)
    assert opened.model_bytes.startswith(b"\x00TFL3")
    assert "ab" * 32 in opened.verification.recipients
