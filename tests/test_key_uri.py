"""pkcs11: and tpm2: key references: RFC 7512's own examples parse; everything else is strict."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from edge_sdk.errors import KeyFileError, KeyReferenceError, TokenPinError
from edge_sdk.keys.key_uri import (
    PKCS11_PIN_ENV,
    PinSource,
    Pkcs11Uri,
    Secret,
    Tpm2Reference,
    is_key_reference,
    parse_key_reference,
)

# RFC 7512 §3.3, in order (the pin-value example is the one this SDK refuses; see below).
RFC7512_EXAMPLES = [
    "pkcs11:",
    "pkcs11:object=my-pubkey;type=public",
    "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
    "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
    "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial="
    "?pin-source=file:/etc/token_pin",
    "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
    "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
    "pkcs11:slot-description=Sun%20Metaslot",
    "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;"
    "library-version=1.23",
    "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;"
    "id=%01%02%03%Ba%dd%Ca%fe%04%05%06",
    "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
    "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;"
    "type=cert",
    "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a"
    "?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
]


@pytest.mark.parametrize("text", RFC7512_EXAMPLES)
def test_rfc7512_examples_parse(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PKCS11_PIN_ENV, raising=False)
    uri = Pkcs11Uri.parse(text)
    assert uri.text == text
    assert is_key_reference(text)


def test_rfc7512_values_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PKCS11_PIN_ENV, raising=False)
    uri = Pkcs11Uri.parse(RFC7512_EXAMPLES[3])
    assert uri.get("token") == "The Software PKCS#11 Softtoken"
    assert uri.get("manufacturer") == "Snake Oil, Inc."
    assert uri.get("serial") == ""
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    assert uri.pin == PinSource("file", "/etc/token_pin")
    assert Pkcs11Uri.parse(RFC7512_EXAMPLES[8]).get("token") == "My token% created by Joe"
    assert Pkcs11Uri.parse(RFC7512_EXAMPLES[9]).get("token") == "A name with a substring %;"
    assert Pkcs11Uri.parse(RFC7512_EXAMPLES[10]).get("token") == "Name with a small A with acute: á"
    vendor = Pkcs11Uri.parse(RFC7512_EXAMPLES[11]).vendor
    assert vendor == (("vendor-aaa", "value-a"), ("vendor-bbb", "value-b"))
    assert Pkcs11Uri.parse(RFC7512_EXAMPLES[4]).module_name == "mypkcs11"
    assert Pkcs11Uri.parse(RFC7512_EXAMPLES[5]).module_path == "/mnt/libmypkcs11.so.1"
    assert Pkcs11Uri.parse(RFC7512_EXAMPLES[0]).pin == PinSource("none")


def test_a_pin_in_the_uri_is_refused_without_repeating_it() -> None:
    text = "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin"
    with pytest.raises(KeyReferenceError, match="carries its PIN") as caught:
        Pkcs11Uri.parse(text)
    assert "the-pin" not in caught.value.diagnostics()
    # Even when another error comes first, the excerpt in the message masks the value.
    with pytest.raises(KeyReferenceError) as caught:
        Pkcs11Uri.parse("pkcs11:token=a;token=b?pin-value=s3cret")
    assert "s3cret" not in caught.value.diagnostics() and "pin-value=***" in caught.value.message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("pkcs11:token=a;token=b", "appears twice"),
        ("pkcs11:object=a%2", "bad percent-encoding"),
        ("pkcs11:object=a%zz", "bad percent-encoding"),
        ("pkcs11:object=my key", "spaces, control or non-ASCII"),
        ("pkcs11:object=a\x1b[31m", "spaces, control or non-ASCII"),
        ("pkcs11:object", "malformed path attribute"),
        ("pkcs11:type=secret", "is not one of"),
        ("pkcs11:slot-id=zero", "decimal number"),
        ("pkcs11:object=a?module-path=relative.so", "absolute path"),
        ("pkcs11:object=a?module-path=/a.so&module-name=b", "not both"),
        ("pkcs11:object=a?module-name=../evil", "bare library name"),
        ("pkcs11:object=a?pin-source=|/bin/cat%20pin", "not supported"),
        ("pkcs11:object=a?pin-source=env:1BAD", "not a valid environment variable"),
        ("pkcs11:object=a?pin-source=file://host/pin", "local absolute path"),
        ("pkcs11:object=a?pin-source=file:/p&pin-source=env:X", "appears twice"),
        ("pkcs11:object=a#frag", "no fragment"),
        ("pkcs11:object=" + "a" * 5000, "longer than"),
        ("tpm2:handle=0x01000000", "not a persistent handle"),
        ("tpm2:handle=zz", "not a persistent handle"),
        ("tpm2:file=relative.tss", "absolute path"),
        ("tpm2:handle=0x81000001;file=/a", "exactly one"),
        ("tpm2:", "exactly one"),
        ("tpm2:handle=0x81000001?pin-value=x", "unknown or repeated"),
        ("tpm2x:handle=1", "neither a pkcs11: URI nor a tpm2: reference"),
    ],
)
def test_malformed_references_are_refused(text: str, match: str) -> None:
    with pytest.raises(KeyReferenceError, match=match) as caught:
        parse_key_reference(text)
    assert caught.value.exit_code == 42
    assert "\x1b" not in caught.value.message  # control characters are escaped
    assert len(caught.value.message) < 600  # bounded, however long the reference


def test_tpm2_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TCTI", raising=False)
    monkeypatch.delenv("TPM2TOOLS_TCTI", raising=False)
    ref = Tpm2Reference.parse("tpm2:handle=0x81010002")
    assert (ref.handle, ref.file, ref.tcti, ref.pin) == (
        0x81010002, None, "device:/dev/tpmrm0", PinSource("none"),
    )  # fmt: skip
    monkeypatch.setenv("TPM2TOOLS_TCTI", "swtpm:port=2321")
    assert Tpm2Reference.parse("tpm2:file=/etc/d.tss").tcti == "swtpm:port=2321"
    ref = Tpm2Reference.parse(
        "tpm2:file=/etc/edge%20sdk/d.tss?tcti=swtpm:host=127.0.0.1,port=9&pin-source=env:AUTH"
    )
    assert ref.file == "/etc/edge sdk/d.tss" and ref.tcti == "swtpm:host=127.0.0.1,port=9"
    assert ref.pin == PinSource("env", "AUTH")
    # A PKCS#11 PIN in the environment is never sent to a TPM (wrong values count to lockout).
    monkeypatch.setenv(PKCS11_PIN_ENV, "1234")
    assert Tpm2Reference.parse("tpm2:handle=0x81010002").pin == PinSource("none")
    assert Pkcs11Uri.parse("pkcs11:object=x").pin == PinSource("env", PKCS11_PIN_ENV)


def test_pin_files(tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text("12 34\n")
    pin.chmod(0o640)
    with pytest.raises(KeyFileError, match="unsafe permissions 0640"):
        PinSource("file", str(pin)).read()
    pin.chmod(0o600)
    secret = PinSource("file", str(pin)).read()
    assert secret is not None and secret.reveal() == "12 34"  # one newline stripped, nothing else
    pin.write_text("")
    with pytest.raises(TokenPinError, match="is empty"):
        PinSource("file", str(pin)).read()
    with pytest.raises(KeyFileError, match="does not exist"):
        PinSource("file", str(tmp_path / "none")).read()
    link = tmp_path / "link"
    pin.write_text("1")
    link.symlink_to(pin)
    with pytest.raises(KeyFileError, match="PIN file .*link is a symlink, not a regular file"):
        PinSource("file", str(link)).read()  # never follows a symlink someone else planted


def test_pin_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_PIN", "987654")
    secret = PinSource("env", "EDGE_TEST_PIN").read()
    assert secret is not None and secret.reveal() == "987654"
    monkeypatch.delenv("EDGE_TEST_PIN")
    with pytest.raises(TokenPinError, match="EDGE_TEST_PIN is not set"):
        PinSource("env", "EDGE_TEST_PIN").read()


def test_a_secret_never_shows_itself() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret} {[secret]} { ({'pin': secret}) }"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
