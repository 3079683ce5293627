"""``edge-sdk keys``: generate and show signing and device keys (files, PKCS#11 tokens, TPMs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_sdk.errors import UsageError

from ._common import JsonOpt, app, kv, print_json

keys_app = typer.Typer(help="Generate and show signing and device keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _render(title: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    kv(title, [(k.replace("_", " "), str(v)) for k, v in result.items() if v is not None])


@keys_app.command("generate")
def keys_generate(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Writes OUT.key (0600) and OUT.pub; only OUT.pub for a token key."
        ),
    ],
    kind: Annotated[str, typer.Option(help="signing | device")] = "signing",
    alg: Annotated[
        str | None,
        typer.Option(
            help="signing: ed25519 | ecdsa-p256 | ed25519+mldsa65; "
            "device: x25519 | mlkem768-x25519 | p256"
        ),
    ] = None,
    pkcs11: Annotated[
        str | None,
        typer.Option(
            "--pkcs11",
            help="Create the key inside this PKCS#11 token (URI with object=; see docs/KEYS.md).",
        ),
    ] = None,
    tpm2: Annotated[
        str | None,
        typer.Option(
            "--tpm2", help="Create a device key inside the TPM (tpm2:handle=0x81… or tpm2:file=…)."
        ),
    ] = None,
    passphrase_env: Annotated[
        str | None,
        typer.Option(help="Encrypt the private key with the passphrase in this env var."),
    ] = None,
    prompt_passphrase: Annotated[
        bool, typer.Option("--prompt-passphrase", help="Ask for a passphrase to encrypt the key.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate a signing key (for publishers) or a device key (for boards)."""
    from edge_sdk.keys import generate_key, save_keypair

    if kind not in ("signing", "device"):
        raise UsageError(f"--kind must be 'signing' or 'device', not {kind!r}")
    if pkcs11 is not None or tpm2 is not None:
        if pkcs11 is not None and tpm2 is not None:
            raise UsageError("give --pkcs11 or --tpm2, not both")
        if passphrase_env or prompt_passphrase:
            raise UsageError("a key inside a token has no passphrase (the token's PIN guards it)")
        _generate_in_token(out, kind, alg, pkcs11, tpm2, force, as_json)
        return
    passphrase: bytes | None = None
    if passphrase_env:
        value = os.environ.get(passphrase_env)
        if not value:
            raise UsageError(f"environment variable {passphrase_env} is empty or not set")
        passphrase = value.encode()
    elif prompt_passphrase:
        passphrase = typer.prompt("Passphrase", hide_input=True, confirmation_prompt=True).encode()
    key = generate_key(kind, alg)  # type: ignore[arg-type]
    key_path, pub_path = save_keypair(key, out, passphrase=passphrase, overwrite=force)
    result = {
        "kind": key.kind,
        "alg": key.alg,
        "key_id": key.key_id,
        "private_key": str(key_path),
        "public_key": str(pub_path),
        "encrypted": passphrase is not None,
    }
    if as_json:
        print_json(result)
    else:
        kv(
            f"{key.kind} key",
            [
                ("algorithm", key.alg),
                ("key id", key.key_id),
                ("private", f"{key_path} (0600)"),
                ("public", str(pub_path)),
            ],
        )


def _generate_in_token(
    out: Path,
    kind: str,
    alg: str | None,
    pkcs11: str | None,
    tpm2: str | None,
    force: bool,
    as_json: bool,
) -> None:
    from edge_sdk.keys.key_uri import Pkcs11Uri, Tpm2Reference

    if pkcs11 is not None:
        from edge_sdk.keys.pkcs11 import generate_pkcs11_key

        made = generate_pkcs11_key(
            Pkcs11Uri.parse(pkcs11),
            kind="device" if kind == "device" else "signing",
            alg=alg,
            out=out,
            overwrite=force,
        )
        public, pub_path, where = made.public, made.public_file, f"PKCS#11 token {made.token!r}"
        extra: dict[str, Any] = {"object": made.object, "id": made.id}
        private = pkcs11
    else:
        assert tpm2 is not None
        if kind != "device" or alg not in (None, "p256"):
            raise UsageError("a TPM key is a p256 device key (--kind device)")
        from edge_sdk.keys.tpm import generate_tpm_key

        ref = Tpm2Reference.parse(tpm2)
        made_tpm = generate_tpm_key(ref, out=out, overwrite=force)
        public, pub_path, where = made_tpm.public, made_tpm.public_file, made_tpm.where
        extra = {}
        private = ref.display()
    from edge_sdk.keys.key_uri import redact

    result = {
        "kind": public.kind,
        "alg": public.alg,
        "key_id": public.key_id,
        "location": where,
        "private_key": redact(private),
        "public_key": str(pub_path),
        **extra,
    }
    _render(f"{public.kind} key (inside the token, not extractable)", result, as_json)


@keys_app.command("show")
def keys_show(
    file: Annotated[
        str, typer.Argument(help="A .pub or .key file, a pkcs11: URI or a tpm2: reference.")
    ],
    kind: Annotated[
        str | None,
        typer.Option(help="signing | device (a P-256 file key is shown as signing unless told)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a key's kind, algorithm and key id (never the private material)."""
    from edge_sdk.keys import load_public_key, open_key_reference
    from edge_sdk.keys.key_uri import is_key_reference

    if kind not in (None, "signing", "device"):
        raise UsageError(f"--kind must be 'signing' or 'device', not {kind!r}")
    if is_key_reference(file):
        key = open_key_reference(file, kind=kind, public_only=True)  # type: ignore[arg-type]
        assert key.hardware is not None
        details = key.hardware.describe()
        key.close()
        result: dict[str, Any] = {
            "kind": key.kind,
            "alg": key.alg,
            "key_id": key.key_id,
            **details,
        }
        _render(details["reference"], result, as_json)
        return
    public = load_public_key(file, kind=kind)  # type: ignore[arg-type]
    result = {"file": file, "kind": public.kind, "alg": public.alg, "key_id": public.key_id}
    if as_json:
        print_json(result)
    else:
        kv(file, [("kind", public.kind), ("algorithm", public.alg), ("key id", public.key_id)])
