"""``edge-sdk slips issue``: a signed key slip per device for one sealed release."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ._common import JsonOpt, app, human_size, load_private, print_json, publisher_signers, say

slips_app = typer.Typer(
    help="Key slips: the content key of a release, one small signed file per device.",
    no_args_is_help=True,
)
app.add_typer(slips_app, name="slips")


@slips_app.command("issue")
def slips_issue(
    bundle: Annotated[Path, typer.Argument(help="The sealed .edgepkg the slips open.")],
    opener: Annotated[
        str,
        typer.Option(
            help="A device key that is a recipient of the bundle, e.g. the publisher's "
            "escrow key (file, pkcs11: or tpm2:)."
        ),
    ],
    devices: Annotated[
        list[Path],
        typer.Option("--devices", help="A device .pub file, or a directory of them; repeatable."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="New directory for the slips.")],
    signing_key: Annotated[
        list[str] | None,
        typer.Option(
            help="Publisher signing key, one that signed the bundle (default: the project's, "
            "from edge-sdk init); repeatable."
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Key id (or .pub file) of a revoked device: no slip; repeatable."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write <key id>.edgeslip for every device into a new directory, in one pass."""
    from edge_sdk.fleet.key_slips import content_key_of, load_device_keys, write_key_slips
    from edge_sdk.format.bundle import read_bundle
    from edge_sdk.keys import load_public_key

    started = time.perf_counter()
    sealed = read_bundle(bundle)
    key = content_key_of(sealed, load_private(opener, "device"))
    signers = publisher_signers(signing_key, "slips issue")
    fleet = load_device_keys(devices)
    revoked = [
        load_public_key(e, kind="device").key_id if e.endswith(".pub") else e for e in exclude or []
    ]
    report = write_key_slips(out, sealed, key, fleet, signers, exclude=revoked)
    seconds = time.perf_counter() - started
    result = {
        "ok": True,
        "bundle": str(bundle),
        "digest": sealed.digest,
        "out": str(report.directory),
        "slips": report.count,
        "excluded": list(report.excluded),
        "bytes": report.total_bytes,
        "largest": report.largest,
        "seconds": round(seconds, 3),
    }
    if as_json:
        print_json(result)
        return
    say(
        f"{report.directory}: {report.count} key slip(s) for {sealed.manifest.name} "
        f"v{sealed.manifest.version} ({sealed.digest[:16]}), {human_size(report.total_bytes)} "
        f"(largest {report.largest} B), {len(report.excluded)} excluded, in {seconds:.1f} s"
    )
