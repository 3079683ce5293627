"""A PIN written into a key reference is never echoed, however the reference spells it.

``pin-value`` is refused, and messages quote the reference with its PIN masked. The mask used to
match the literal text ``pin-value=`` only: ``pin%2Dvalue=SECRET`` (the same attribute, percent-
encoded) was quoted whole in the "malformed attribute" error. Now no query value is ever
shown, and a path attribute named like a PIN is masked after percent-decoding.
"""

from __future__ import annotations

from typing import Any

import pytest

from edge_sdk.errors import KeyReferenceError
from edge_sdk.keys.key_uri import parse_key_reference

SECRET = "S3cr3tPin4711"

SPELLINGS = [
    f"pkcs11:object=a?module-path=/x.so&pin%2Dvalue={SECRET}",
    f"pkcs11:object=a?module-path=/x.so&pin%2dvalue={SECRET}",
    f"pkcs11:object=a?module-path=/x.so&%70in-value={SECRET}",
    f"pkcs11:object=a?module-path=/x.so&PIN-VALUE={SECRET}",
    f"pkcs11:object=a?pin-value={SECRET}&module-path=relative.so",
    f"pkcs11:object=a?pin-value={SECRET}%ZZ",
    f"pkcs11:object=a?module-path=relative.so&x-pin={SECRET}",
    f"pkcs11:object=a;pin%2Dvalue={SECRET}",
    f"pkcs11:object=a;pin-value={SECRET};token=%ZZ",
    f"pkcs11:object=a?pin-source=|{SECRET}",
    f"pkcs11:object=a?module-path=/x.so&pin-value={SECRET}#frag",
    f"tpm2:handle=0x81000001?pin%2Dvalue={SECRET}",
    f"tpm2:handle=0x01000000?pin-value={SECRET}",
]


@pytest.mark.parametrize("reference", SPELLINGS)
def test_a_pin_in_a_malformed_reference_is_never_quoted(reference: str) -> None:
    with pytest.raises(KeyReferenceError) as caught:
        parse_key_reference(reference)
    assert SECRET not in caught.value.diagnostics()


@pytest.mark.parametrize("reference", SPELLINGS[:3])
def test_the_cli_never_prints_it_either(reference: str, cli: Any) -> None:
    result = cli("keys", "show", reference)
    assert result.code == KeyReferenceError.exit_code
    assert SECRET not in result.out + result.err
    as_json = cli("keys", "show", reference, "--json")
    assert as_json.code == KeyReferenceError.exit_code and SECRET not in as_json.out + as_json.err
