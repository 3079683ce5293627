"""``edge-sdk attest``: export a bundle's build attestation for standard in-toto tooling.

Also the two renderers ``inspect`` and ``package`` share to show a bundle's provenance.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import app, say

TrustListOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--trust",
        help="Verify the bundle and the attestation's signatures against these keys first.",
    ),
]


@app.command()
def attest(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of to stdout.")
    ] = None,
    statement: Annotated[
        bool,
        typer.Option("--statement", help="The bare in-toto Statement, not the signed envelope."),
    ] = False,
    trust: TrustListOpt = None,
) -> None:
    """Export the signed build attestation (a DSSE envelope: in-toto Statement, SLSA Provenance v1)."""
    from edge_sdk.errors import ProvenanceError, UsageError
    from edge_sdk.format.attestation import read_attestation, verified_attestation
    from edge_sdk.format.bundle import read_bundle
    from edge_sdk.format.strict_json import canonical_bytes
    from edge_sdk.format.verify import verify_bundle
    from edge_sdk.keys import TrustStore

    if trust:
        store = TrustStore.load(trust)
        parsed = read_bundle(bundle, trust=store)
        verify_bundle(parsed, store)
        found = verified_attestation(parsed.manifest, store)
    else:
        parsed = read_bundle(bundle)
        attestation = read_attestation(parsed.manifest)
        if attestation is None:
            raise ProvenanceError(
                f"{bundle} carries no build attestation",
                hint="bundles made by `edge-sdk package` carry one; re-package this model",
            )
        found = attestation
    data = found.statement_bytes if statement else canonical_bytes(dict(found.envelope))
    if out is None:
        sys.stdout.write(data.decode("ascii") + "\n")
    else:
        from edge_sdk.files import atomic_write

        try:
            atomic_write(out, data)  # a symlink planted at --output is replaced, never followed
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}") from None
    checked = (
        "bundle and attestation signatures verified against --trust"
        if trust
        else "NOT verified here: pass --trust, or verify it with in-toto tooling"
    )
    what = "statement" if statement else "DSSE envelope"
    say(
        f"{out or 'stdout'}: {what} for {parsed.manifest.name} v{parsed.manifest.version} "
        f"({len(found.signatures)} signature(s)); {checked}",
        stderr=True,
    )


def provenance_summary(manifest: Any) -> dict[str, Any]:
    """The attestation's facts for ``--json`` output; never raises (an invalid one says why)."""
    from edge_sdk.errors import ProvenanceError
    from edge_sdk.format.attestation import read_attestation

    try:
        attestation = read_attestation(manifest)
    except ProvenanceError as exc:
        return {"present": True, "valid": False, "error": exc.message}
    if attestation is None:
        return {"present": False}
    facts = attestation.provenance
    gate = facts.gate
    return {
        "present": True,
        "valid": True,
        "verified": False,
        "signature_keyids": [k for k, _ in attestation.signatures],
        "source": {
            "name": facts.source.name,
            "sha256": facts.source.sha256,
            "model_signature": dict(facts.source.signature) or None,
        },
        "converter": facts.converter,
        "quantization": facts.quantization,
        "sparsity": facts.sparsity,
        "gate": None if gate is None else vars(gate),
        "data": [
            {"role": m.role, "name": m.name, "sha256": m.sha256}
            for m in facts.materials
            if m.role.endswith("-data")
        ],
        "tools": {m.name: m.version for m in facts.materials if m.role == "tool"},
        "builder": facts.builder_id,
        "finished_on": facts.finished_on,
    }


def provenance_lines(manifest: Any) -> list[tuple[str, str]]:
    """Key/value lines for ``inspect`` and ``package`` (unverified: they only read)."""
    summary = provenance_summary(manifest)
    if not summary["present"]:
        return [("provenance", "none (no build attestation)")]
    if not summary["valid"]:
        return [("provenance", f"INVALID: {summary['error']}")]
    source = summary["source"]
    signed = source["model_signature"]
    if signed:
        who = signed.get("signer", "")
        who = (
            f"key {who[:16]}"
            if signed.get("method") == "key"
            else f"{who} ({signed.get('issuer')})"
        )
        check = f"model-signing signature by {who} verified at packaging"
    else:
        check = "no model signature was checked"
    tools = ", ".join(f"{n} {v}" for n, v in summary["tools"].items() if v)
    lines = [
        (
            "provenance",
            f"in-toto SLSA v1 attestation, {len(summary['signature_keyids'])} signature(s) "
            "(verify: edge-sdk attest --trust, or audit --require-provenance)",
        ),
        ("source", f"{source['name']} sha256 {source['sha256']}; {check}"),
        (
            "built with",
            "; ".join(
                filter(None, [summary["converter"] and f"converter {summary['converter']}", tools])
            )
            or "n/a",
        ),
    ]
    for item in summary["data"]:
        lines.append((item["role"], f"{item['name']} sha256 {item['sha256']}"))
    gate = summary["gate"]
    if gate is not None:
        lines.append(("gate", _gate_line(gate)))
    return lines


def _gate_line(gate: dict[str, Any]) -> str:
    def g(name: str) -> str:
        value = gate.get(name)
        return "?" if value is None else f"{value:g}"

    verdict = "passed" if gate["passed"] else "FAILED"
    if gate["metric"] == "accuracy":
        return (
            f"{verdict}: accuracy {g('float_accuracy')}% → {g('quantized_accuracy')}% "
            f"(drop {g('drop_points')} points) on {g('samples')} samples"
        )
    if gate["metric"] == "output-error":
        return (
            f"{verdict}: relative RMS error {g('relative_rmse')}, cosine {g('cosine')} "
            f"on {g('samples')} samples"
        )
    return f"{verdict}: {gate['metric']}"
