"""The ``edge-sdk`` command line: parse, call one library function, render the result.

One module per command group; each registers its commands on the shared :data:`app` when imported.
Only the CLI imports typer and rich, and nothing in the library imports the CLI. Every
:class:`~edge_sdk.errors.EdgeSDKError` becomes one message on stderr and its documented exit code
in :func:`main`; nothing else in the package prints or exits.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from edge_sdk.errors import EdgeSDKError

from . import attest, audit, bundles, device, fleet, keys, package, profiles, repo  # noqa: F401  (registers)
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
        sys.stderr.write(f"error: {safe(exc.diagnostics())}\n")
    sys.exit(exc.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, map every EdgeSDKError to its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="edge-sdk")
    except EdgeSDKError as exc:
        _fail(exc, "--json" in args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
