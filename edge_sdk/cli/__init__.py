"""The ``edge-sdk`` command line: parse, call one library function, render the result.

One module per command group; each registers its commands on the shared :data:`app` when imported.
Only the CLI imports typer and rich, and nothing in the library imports the CLI. Every
:class:`~edge_sdk.errors.EdgeSDKError` becomes one message on stderr and its documented exit code
in :func:`main`; nothing else in the package prints or exits.

May import: every part; nothing imports the CLI.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from edge_sdk.errors import EdgeSDKError

# Importing a command module registers its commands; the order is the order of --help.
from . import (  # noqa: F401
    attest,
    audit,
    bundles,
    device,
    fleet,
    keys,
    llm,
    package,
    profiles,
    project,
    repo,
    slips,
)
from ._common import app, print_json, safe


def _fail(exc: EdgeSDKError, as_json: bool) -> NoReturn:
    if as_json:
        print_json(
            {
                "ok": False,
                "error": exc.kind,
                "exit_code": exc.exit_code,
                "message": exc.message,
                "hint": exc.hint,
            }
        )
    else:
        sys.stderr.write(f"error: {safe(exc.diagnostics(), keep_newlines=True)}\n")
    sys.exit(exc.exit_code)


_METAVARS = {"Path": "PATH", "str": "TEXT", "int": "INTEGER", "float": "FLOAT"}


def _classic_metavars(command: Any) -> Any:
    """Give every option and argument the metavar users know from other tools (``PATH``,
    ``TEXT``, ``MODEL``) instead of typer's ``<list[Path]>``."""
    for param in getattr(command, "params", []):
        if param.metavar is not None or getattr(param, "is_flag", False):
            continue
        if param.param_type_name == "argument":
            param.metavar = param.name.upper()
            param.display_type_rich = lambda ctx: None  # the name says it: MODEL, BUNDLE, PATHS...
        else:
            bare = param.type_descriptor.annotation
            element = (
                getattr(bare, "__args__", (bare,))[0] if param.type_descriptor.is_list else bare
            )
            param.metavar = _METAVARS.get(getattr(element, "__name__", ""), "VALUE")
    for sub in getattr(command, "commands", {}).values():
        _classic_metavars(sub)
    return command


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, map every EdgeSDKError to its exit code."""
    import typer.main

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command = _classic_metavars(typer.main.get_command(app))
        command.main(args=args, prog_name="edge-sdk")
    except EdgeSDKError as exc:
        _fail(exc, "--json" in args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
