"""``edge-sdk init``: the one-time setup (publisher key and ``edge-sdk.toml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import JsonOpt, app, kv, print_json, warn


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="The project directory (default: the current one).")
    ] = Path("."),
    key_dir: Annotated[
        Path | None,
        typer.Option(help="Where the signing key goes (default: ~/.config/edge-sdk/keys)."),
    ] = None,
    alg: Annotated[
        str | None, typer.Option(help="ed25519 (default) | ecdsa-p256 | ed25519+mldsa65")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rewrite an existing edge-sdk.toml.")] = False,
    recipient: Annotated[
        list[str] | None,
        typer.Option(help="A device public key every bundle is encrypted for; repeatable."),
    ] = None,
    inventory: Annotated[
        str | None, typer.Option(help="Encrypt for the devices of this fleet inventory.")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Only these inventory groups.")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="The default device profile.")] = None,
    target: Annotated[
        str | None, typer.Option(help="Where 'edge-sdk deploy BUNDLE' installs by default.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """One-time setup: a publisher signing key and the project's edge-sdk.toml."""
    from edge_sdk.host.config import init_project

    result = init_project(
        directory, key_dir=key_dir, alg=alg, force=force, recipients=recipient,
        inventory=inventory, groups=group, profile=profile, target=target,
    )  # fmt: skip
    out = {
        "config": str(result.config),
        "signing_key": str(result.signing_key),
        "public_key": str(result.project_public_key),
        "key_id": result.key_id,
        "created_key": result.created_key,
    }
    if as_json:
        print_json(out)
        return
    kv(
        "edge-sdk project",
        [
            ("config", str(result.config)),
            (
                "signing key",
                f"{result.signing_key} (0600, {'new' if result.created_key else 'existing'})",
            ),
            ("trust this", f"{result.project_public_key} (key id {result.key_id[:16]})"),
            ("next", "edge-sdk package MODEL --profile PROFILE"),
        ],
    )
    if not recipient and not inventory:
        warn(
            "no devices are configured yet: bundles will be signed but NOT encrypted until you "
            f"add recipients or an inventory to {result.config.name}"
        )
