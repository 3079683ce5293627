"""The ``edge-sdk`` command line: parse, call one library function, render the result.

This is the only module that imports typer and rich. Every :class:`~edge_sdk.errors.EdgeSDKError`
is turned into one message on stderr and its documented exit code in :func:`main`; nothing else
in the package prints or exits.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .errors import EdgeSDKError, KeyFileError, UsageError

app = typer.Typer(
    name="edge-sdk",
    help="Take a trained model to a fleet of edge boards: package, verify, deploy, run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # private keys must never appear in a traceback
    rich_markup_mode=None,
)
keys_app = typer.Typer(help="Generate and show signing and device keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TrustOpt = Annotated[
    list[Path],
    typer.Option("--trust", help="Trusted signing public key (.pub) or a trust directory; repeatable."),
]


# -- rendering helpers ------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    _console().print(table)


def _kv(title: str, pairs: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(key, value)
    _console().print(table)


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _warn(message: str) -> None:
    _console(stderr=True).print(f"warning: {message}", style="yellow", markup=False)


# -- key loading with passphrase prompt -----------------------------------------------------------


def _load_private(path: Path, kind: str) -> Any:
    from .keys import load_private_key

    try:
        return load_private_key(path, kind=kind)  # type: ignore[arg-type]
    except KeyFileError as exc:
        if "no passphrase was given" not in exc.message or not sys.stdin.isatty():
            raise
    passphrase = typer.prompt(f"Passphrase for {path}", hide_input=True)
    return load_private_key(path, kind=kind, passphrase=passphrase.encode())  # type: ignore[arg-type]


def _parse_expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--expires {text!r} is not a date", hint="use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


# -- keys ------------------------------------------------------------------------------------


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Writes OUT.key (0600) and OUT.pub.")],
    kind: Annotated[str, typer.Option(help="signing | device")] = "signing",
    alg: Annotated[
        str | None,
        typer.Option(help="signing: ed25519 | ecdsa-p256 | ed25519+mldsa65; device: x25519 | mlkem768-x25519"),
    ] = None,
    passphrase_env: Annotated[
        str | None, typer.Option(help="Encrypt the private key with the passphrase in this env var.")
    ] = None,
    prompt_passphrase: Annotated[
        bool, typer.Option("--prompt-passphrase", help="Ask for a passphrase to encrypt the key.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Generate a signing key (for publishers) or a device key (for boards)."""
    from .keys import generate_key, save_keypair

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
        _print_json(result)
    else:
        _kv(
            f"{key.kind} key",
            [("algorithm", key.alg), ("key id", key.key_id), ("private", f"{key_path} (0600)"),
             ("public", str(pub_path))],
        )


@keys_app.command("show")
def keys_show(
    file: Annotated[Path, typer.Argument(help="A .pub or .key file.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a key's kind, algorithm and key id (never the private material)."""
    from .keys import load_public_key

    key = load_public_key(file)
    result = {"file": str(file), "kind": key.kind, "alg": key.alg, "key_id": key.key_id}
    if as_json:
        _print_json(result)
    else:
        _kv(str(file), [("kind", key.kind), ("algorithm", key.alg), ("key id", key.key_id)])


# -- inspect / verify ----------------------------------------------------------------------------


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
    }


@app.command()
def inspect(bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")], as_json: JsonOpt = False) -> None:
    """Show a bundle's manifest, signers, recipients and sizes. Needs no key, verifies nothing."""
    from .bundle import read_bundle

    parsed = read_bundle(bundle)
    summary = _bundle_summary(parsed)
    if as_json:
        _print_json(summary)
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
        ("model", f"{m.model.format}, {_human_size(m.model.size)}, sha256 {m.model.sha256}"),
        ("payload", f"{m.payload.encryption}, {_human_size(m.payload.size)}"
         + (f", {m.payload.compression} ({_human_size(m.payload.compressed_size or 0)})"
            if m.payload.compression != "none" else "")),
        ("signed by", ", ".join(f"{s.key_id[:16]} ({s.alg})" for s in parsed.signatures) or "nobody"),
        ("recipients", ", ".join(f"{r.key_id[:16]} ({r.kem})" for r in parsed.recipients)
         or ("none: NOT ENCRYPTED" if not m.payload.encrypted else "none")),
    ]
    for spec in m.model.inputs:
        pairs.append((f"input {spec.name}", f"{list(spec.shape)} {spec.dtype}"))
    for spec in m.model.outputs:
        pairs.append((f"output {spec.name}", f"{list(spec.shape)} {spec.dtype}"))
    for name, report in m.reports.items():
        pairs.append((f"report {name}", json.dumps(report, sort_keys=True)[:200]))
    _kv(str(bundle), pairs)


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")],
    trust: TrustOpt,
    device_key: Annotated[
        Path | None, typer.Option(help="Also unwrap, decrypt in memory and check the model hash.")
    ] = None,
    threshold: Annotated[int | None, typer.Option(help="Override the trust store's threshold.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a bundle: structure, signatures, trust, revocation, expiry, hashes."""
    from .bundle import read_bundle
    from .keys import TrustStore
    from .verify import decrypt_model, verify_bundle

    store = TrustStore.load(trust, threshold=threshold)
    key = _load_private(device_key, "device") if device_key else None
    parsed = read_bundle(bundle)
    result = verify_bundle(parsed, store)
    if key is not None:
        decrypt_model(parsed, key)
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
        _print_json(out)
        return
    for warning in result.warnings:
        _warn(warning)
    checked = "signature, trust, expiry, payload hash" + (
        ", decryption, model hash" if key is not None else ""
    )
    _console().print(
        f"OK {result.manifest.name} v{result.manifest.version} ({result.digest[:16]}): "
        f"signed by {', '.join(s[:16] for s in result.signers)}; checked {checked}",
        markup=False,
    )


# -- entry point --------------------------------------------------------------------------------


def _fail(exc: EdgeSDKError, as_json: bool) -> NoReturn:
    if as_json:
        _print_json({"ok": False, "error": exc.kind, "exit_code": exc.exit_code, "message": exc.message,
                     "hint": exc.hint})
    else:
        sys.stderr.write(f"error: {exc.diagnostics()}\n")
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
