"""``edge-sdk keys``: generate and show signing and device keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from edge_sdk.errors import UsageError

from ._common import JsonOpt, app, kv, print_json

keys_app = typer.Typer(help="Generate and show signing and device keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Writes OUT.key (0600) and OUT.pub.")],
    kind: Annotated[str, typer.Option(help="signing | device")] = "signing",
    alg: Annotated[
        str | None,
        typer.Option(
            help="signing: ed25519 | ecdsa-p256 | ed25519+mldsa65; device: x25519 | mlkem768-x25519"
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


@keys_app.command("show")
def keys_show(
    file: Annotated[Path, typer.Argument(help="A .pub or .key file.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a key's kind, algorithm and key id (never the private material)."""
    from edge_sdk.keys import load_public_key

    key = load_public_key(file)
    result = {"file": str(file), "kind": key.kind, "alg": key.alg, "key_id": key.key_id}
    if as_json:
        print_json(result)
    else:
        kv(str(file), [("kind", key.kind), ("algorithm", key.alg), ("key id", key.key_id)])
