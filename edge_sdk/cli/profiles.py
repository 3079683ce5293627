"""``edge-sdk profiles``: list and show device profiles."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ._common import JsonOpt, app, kv, print_json, table

profiles_app = typer.Typer(help="List and show device profiles.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


@profiles_app.command("list")
def profiles_list(as_json: JsonOpt = False) -> None:
    """All known profiles (built-in and from EDGE_SDK_PROFILE_PATH)."""
    from edge_sdk.profiles import list_profiles

    profiles = list_profiles()
    if as_json:
        print_json([p.to_dict() for p in profiles])
        return
    table(
        None,
        ["name", "arch", "cpu", "runtime", "quantize", "aead", "delegates"],
        [
            [
                p.name,
                p.architecture,
                f"{p.cpu.cores}× {p.cpu.model}",
                f"{p.runtime.package} {p.runtime.version}",
                p.quantization,
                p.aead,
                " → ".join(d.name for d in p.delegates) or "cpu",
            ]
            for p in profiles
        ],
    )


@profiles_app.command("show")
def profiles_show(
    name: Annotated[str, typer.Argument(help="Profile name or .toml path.")],
    as_json: JsonOpt = False,
) -> None:
    """One profile in full."""
    from edge_sdk.profiles import load_profile

    prof = load_profile(name)
    data = prof.to_dict()
    if as_json:
        print_json(data)
        return
    kv(prof.name, [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in data.items()])
