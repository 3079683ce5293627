"""``edge-sdk inspect``, ``verify`` and ``recipients``: read and check bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    JsonOpt,
    NameOpt,
    ProjectTrustOpt,
    app,
    human_size,
    kv,
    load_private,
    print_json,
    pruning_line,
    publisher_trust,
    say,
    warn,
)
from .attest import provenance_lines, provenance_summary


def _bundle_summary(bundle: Any) -> dict[str, Any]:
    m = bundle.manifest
    return {
        "format_version": bundle.format_version,
        "digest": bundle.digest,
        "manifest": m.to_dict(),
        "signatures": [{"key_id": s.key_id, "alg": s.alg} for s in bundle.signatures],
        "recipients": [{"key_id": r.key_id, "kem": r.kem} for r in bundle.recipients],
        "sizes": {
            "model": m.model.size,
            "payload": m.payload.size,
            "compressed": m.payload.compressed_size,
        },
        "encrypted": m.payload.encrypted,
        "sparsity": pruning.get("sparsity")
        if isinstance(pruning := m.reports.get("pruning"), dict)
        else None,
        "provenance": provenance_summary(m),
    }


@app.command()
def inspect(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")], as_json: JsonOpt = False
) -> None:
    """Show a bundle's manifest, signers, recipients and sizes. Needs no key, verifies nothing."""
    from edge_sdk.format.bundle import open_parts

    # The header alone (the lengths still checked against the file): a multi-GB bundle is
    # inspected without reading its payload.
    with open_parts(bundle, trust=None) as (parsed, _):
        pass
    summary = _bundle_summary(parsed)
    if as_json:
        print_json(summary)
        return
    m = parsed.manifest
    pairs = [
        ("name", m.name),
        ("version", str(m.version)),
        ("digest", parsed.digest),
        ("created", m.created),
        ("expires", m.expires or "never"),
        ("target", f"{m.target.profile} ({m.target.runtime} {m.target.runtime_version})".rstrip()),
        ("hardware ids", ", ".join(m.target.hardware_ids) or "any"),
        ("model", f"{m.model.format}, {human_size(m.model.size)}, sha256 {m.model.sha256}"),
        ("compression", _compression_line(m)),
        ("sparsity", pruning_line(m.reports.get("pruning"))),
        (
            "payload",
            f"{m.payload.encryption}, {human_size(m.payload.size)}"
            + (
                f", {m.payload.compression} ({human_size(m.payload.compressed_size or 0)})"
                if m.payload.compression != "none"
                else ""
            ),
        ),
        (
            "signatures (not verified here)",
            ", ".join(f"{s.key_id[:16]} ({s.alg})" for s in parsed.signatures) or "nobody",
        ),
        (
            "recipients",
            ", ".join(f"{r.key_id[:16]} ({r.kem})" for r in parsed.recipients)
            or ("none: NOT ENCRYPTED" if not m.payload.encrypted else "none"),
        ),
    ]
    pairs.extend(provenance_lines(m))
    for spec in m.model.inputs:
        pairs.append((f"input {spec.name}", f"{list(spec.shape)} {spec.dtype}"))
    for spec in m.model.outputs:
        pairs.append((f"output {spec.name}", f"{list(spec.shape)} {spec.dtype}"))
    for name, report in m.reports.items():
        # Shown above: pruning's per-layer table and the attestation would be cut off here.
        if name not in ("pruning", "provenance"):
            pairs.append((f"report {name}", _report_line(report)))
    kv(str(bundle), pairs)


def _compression_line(m: Any) -> str:
    if m.payload.compression == "none" or not m.payload.compressed_size:
        return f"none ({human_size(m.model.size)})"
    ratio = m.payload.compressed_size / m.model.size if m.model.size else 1.0
    return (
        f"{m.payload.compression}: {human_size(m.model.size)} → "
        f"{human_size(m.payload.compressed_size)} ({ratio:.0%})"
    )


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")],
    trust: ProjectTrustOpt = None,
    device_key: Annotated[
        str | None,
        typer.Option(
            help="Also unwrap, decrypt in memory and check the model hash (file, pkcs11: or tpm2:)."
        ),
    ] = None,
    slip: Annotated[
        Path | None,
        typer.Option(
            help="With --device-key: open with this key slip instead of the bundle's recipients."
        ),
    ] = None,
    threshold: Annotated[
        int | None, typer.Option(help="Override the trust store's threshold.")
    ] = None,
    expected_name: NameOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a bundle: structure, signatures, trust, revocation, expiry, hashes."""
    from edge_sdk.format.verify import Policy, open_verified

    store = publisher_trust(trust, "verify", threshold)
    key = load_private(device_key, "device") if device_key else None
    # The one check order (verify.check_bundle), with what an auditor can check: no device state.
    from edge_sdk.errors import UsageError
    from edge_sdk.format.key_slip import read_key_slip

    if slip is not None and key is None:
        raise UsageError("--slip opens the bundle with a device key: pass --device-key too")
    policy = Policy(store, expected_name=expected_name, device_key=key,
                    key_slip=read_key_slip(slip) if slip is not None else None)  # fmt: skip
    result = open_verified(bundle, policy, decrypt=key is not None).verification
    out = {
        "ok": True,
        "bundle": str(bundle),
        "name": result.manifest.name,
        "version": result.manifest.version,
        "digest": result.digest,
        "signers": list(result.signers),
        "unknown_signers": list(result.unknown_signers),
        "decrypted": key is not None,
        "warnings": list(result.warnings),
    }
    if as_json:
        print_json(out)
        return
    for warning in result.warnings:
        warn(warning)
    checked = "signature, trust, expiry, payload hash" + (
        ", decryption, model hash" if key is not None else ""
    )
    say(
        f"OK {result.manifest.name} v{result.manifest.version} ({result.digest[:16]}): "
        f"signed by {', '.join(s[:16] for s in result.signers)}; checked {checked}"
    )


recipients_app = typer.Typer(help="Manage who can open a bundle.", no_args_is_help=True)
app.add_typer(recipients_app, name="recipients")


@recipients_app.command("add")
def recipients_add(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg to extend (rewritten atomically).")],
    device_key: Annotated[
        str, typer.Option(help="A device key that is already a recipient (file, pkcs11: or tpm2:).")
    ],
    recipient: Annotated[list[Path], typer.Option(help="Device public key to add; repeatable.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of in place.")
    ] = None,
) -> None:
    """Give more devices access to a bundle without re-signing it."""
    from edge_sdk.format.bundle import read_bundle, save_bundle
    from edge_sdk.host.sealing import add_recipients
    from edge_sdk.keys import load_public_key

    opener = load_private(device_key, "device")
    new = [load_public_key(p, kind="device") for p in recipient]
    updated = add_recipients(read_bundle(bundle), opener, new)
    save_bundle(updated, out or bundle)
    say(f"{out or bundle}: {len(updated.recipients)} recipient(s)")


def _report_line(report: Any, limit: int = 300) -> str:
    """A report as JSON when it is short; otherwise its keys (never JSON cut mid-token)."""
    text = json.dumps(report, sort_keys=True)
    if len(text) <= limit:
        return text
    if isinstance(report, dict):
        keys = sorted(map(str, report))
        shown = ", ".join(k[:40] for k in keys[:12]) + (", …" if len(keys) > 12 else "")
        return f"{len(keys)} fields: {shown} (inspect --json shows them all)"
    return f"{type(report).__name__} of {len(text):,} characters (inspect --json shows it)"
