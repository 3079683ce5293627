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
from typer.core import TyperGroup

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
    typer.Option(
        "--trust", help="Trusted signing public key (.pub) or a trust directory; repeatable."
    ),
]


# -- rendering helpers ------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        # Piped output: never wrap a 64-digit key id or digest in the middle.
        console.width = max(console.width, 160)
    return console


def _table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(_safe(cell) for cell in row))
    _console().print(table)


def _kv(title: str, pairs: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(_safe(key), _safe(value))
    _console().print(table)


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127] if c != 10}


def _safe(text: str) -> str:
    """Text from a bundle, shown without its control characters (no terminal escapes)."""
    return text.translate(_CONTROL)


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _warn(message: str) -> None:
    _console(stderr=True).print(f"warning: {_safe(message)}", style="yellow", markup=False)


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
        "sparsity": (m.reports.get("pruning") or {}).get("sparsity"),
    }


@app.command()
def inspect(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")], as_json: JsonOpt = False
) -> None:
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
        ("compression", _compression_line(m)),
        ("sparsity", _pruning_line(m.reports.get("pruning"))),
        (
            "payload",
            f"{m.payload.encryption}, {_human_size(m.payload.size)}"
            + (
                f", {m.payload.compression} ({_human_size(m.payload.compressed_size or 0)})"
                if m.payload.compression != "none"
                else ""
            ),
        ),
        (
            "signed by",
            ", ".join(f"{s.key_id[:16]} ({s.alg})" for s in parsed.signatures) or "nobody",
        ),
        (
            "recipients",
            ", ".join(f"{r.key_id[:16]} ({r.kem})" for r in parsed.recipients)
            or ("none: NOT ENCRYPTED" if not m.payload.encrypted else "none"),
        ),
    ]
    for spec in m.model.inputs:
        pairs.append((f"input {spec.name}", f"{list(spec.shape)} {spec.dtype}"))
    for spec in m.model.outputs:
        pairs.append((f"output {spec.name}", f"{list(spec.shape)} {spec.dtype}"))
    for name, report in m.reports.items():
        if name != "pruning":  # shown above; its per-layer table would be cut off here anyway
            pairs.append((f"report {name}", json.dumps(report, sort_keys=True)[:200]))
    _kv(str(bundle), pairs)


def _compression_line(m: Any) -> str:
    if m.payload.compression == "none" or not m.payload.compressed_size:
        return f"none ({_human_size(m.model.size)})"
    ratio = m.payload.compressed_size / m.model.size if m.model.size else 1.0
    return (
        f"{m.payload.compression}: {_human_size(m.model.size)} → "
        f"{_human_size(m.payload.compressed_size)} ({ratio:.0%})"
    )


def _pruning_line(report: Any) -> str:
    if not isinstance(report, dict):
        return "not pruned"
    tuned = report.get("fine_tune") or {}
    how = f"{report.get('mode', '?')}, " + (
        f"fine-tuned {tuned['epochs']} epochs" if tuned.get("epochs") else "post-training"
    )
    return (
        f"{report.get('sparsity', 0):.1%} of {report.get('prunable_weights', 0):,} prunable "
        f"weights are zero ({how})"
    )


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")],
    trust: TrustOpt,
    device_key: Annotated[
        Path | None, typer.Option(help="Also unwrap, decrypt in memory and check the model hash.")
    ] = None,
    threshold: Annotated[
        int | None, typer.Option(help="Override the trust store's threshold.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a bundle: structure, signatures, trust, revocation, expiry, hashes."""
    from .bundle import read_bundle
    from .keys import TrustStore
    from .verify import decrypt_model, verify_bundle

    store = TrustStore.load(trust, threshold=threshold)
    key = _load_private(device_key, "device") if device_key else None
    parsed = read_bundle(bundle, trust=store)
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


# -- package -----------------------------------------------------------------------------------


def _progress_runner(as_json: bool) -> Any:
    """A context manager yielding a ``progress(step)`` callback drawn as a spinner on stderr."""
    import contextlib

    labels = {"load": "Loading model", "convert": "Converting to TFLite", "calibrate": "Calibrating and quantizing",
              "quantize": "Quantizing", "check": "Checking runtime compatibility", "evaluate": "Evaluating accuracy",
              "seal": "Signing and encrypting", "prune": "Pruning"}  # fmt: skip

    @contextlib.contextmanager
    def run() -> Any:
        console = _console(stderr=True)
        if as_json or not console.is_terminal:
            yield lambda step: None
            return
        with console.status("Starting") as status:
            yield lambda step: status.update(f"{labels.get(step, step)}…")

    return run()


@app.command()
def package(
    model: Annotated[Path, typer.Argument(help=".keras, .h5, SavedModel directory, or .tflite")],
    profile: Annotated[str, typer.Option(help="Device profile name or path to a .toml file.")],
    sign_key: Annotated[
        list[Path], typer.Option(help="Signing private key; repeat for several signers.")
    ],
    name: Annotated[str, typer.Option(help="Bundle name (letters, digits, . _ -).")],
    version: Annotated[int, typer.Option(help="Monotonic version number (anti-rollback).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .edgepkg path.")],
    recipient: Annotated[
        list[Path] | None,
        typer.Option(help="Device public key to encrypt for; repeatable. None: signed only."),
    ] = None,
    quantize: Annotated[
        str | None, typer.Option(help="none|dynamic|float16|int8|int16x8 (default: profile)")
    ] = None,
    io_dtype: Annotated[
        str | None, typer.Option(help="float32|int8 inputs/outputs for int8 models")
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help=".npy/.npz or image directory for int8 calibration")
    ] = None,
    eval_data: Annotated[
        Path | None, typer.Option("--eval", help=".npz with x and y labels for the accuracy gate")
    ] = None,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="Accuracy budget in percentage points.")
    ] = 1.0,
    max_output_error: Annotated[
        float, typer.Option(help="Budget for relative RMS output error.")
    ] = 0.05,
    aead: Annotated[
        str | None, typer.Option(help="aes-256-gcm | chacha20-poly1305 (default: profile)")
    ] = None,
    compress: Annotated[
        int | None, typer.Option(help="zstd level, 0 = none (default: profile)")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="Expiry date, e.g. 2027-06-30")] = None,
    inventory: Annotated[
        Path | None, typer.Option(help="Encrypt for the device keys of this fleet inventory.")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Only these inventory groups.")
    ] = None,
    prune: Annotated[
        str | None,
        typer.Option(
            help="Zero this fraction of each kernel (0.8, 80%) or 'auto': the most "
            "that stays within the accuracy budget"
        ),
    ] = None,
    train: Annotated[
        Path | None, typer.Option(help=".npz with x and y: fine-tune while pruning")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Fine-tuning epochs with --train (default 8)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Convert, quantize, check and seal a model into a signed (and encrypted) bundle."""
    from .keys import load_public_key
    from .packaging import PackageOptions, package_model
    from .profiles import load_profile
    from .pruning import parse_sparsity

    prof = load_profile(profile)
    signers = [_load_private(p, "signing") for p in sign_key]
    recipients = [load_public_key(p, kind="device") for p in recipient or []]
    if inventory is not None:
        recipients += _inventory_recipients(inventory, group or [])
    elif group:
        raise UsageError("--group selects devices from an --inventory")
    options = PackageOptions(
        name=name,
        version=version,
        quantize=quantize,
        io_dtype=io_dtype,
        aead=aead,
        compress=compress,
        calibration=calibration,
        evaluation=eval_data,
        max_accuracy_drop=max_accuracy_drop,
        max_output_error=max_output_error,
        expires=_parse_expiry(expires),
        prune=parse_sparsity(prune) if prune is not None else None,
        train=train,
        epochs=epochs,
    )
    with _progress_runner(as_json) as progress:
        result = package_model(model, out, prof, options, signers, recipients, progress)
    m = result.bundle.manifest
    summary = {
        "bundle": str(result.path),
        "digest": result.bundle.digest,
        "name": m.name,
        "version": m.version,
        "profile": prof.name,
        "source_format": result.source_format,
        "quantization": result.quantization,
        "model_size": result.model_size,
        "bundle_size": result.size,
        "encryption": m.payload.encryption,
        "compression": m.payload.compression,
        "signers": [s.key_id for s in result.bundle.signatures],
        "recipients": [r.key_id for r in result.bundle.recipients],
        "reports": result.reports,
        "notes": list(result.notes),
    }
    if as_json:
        _print_json(summary)
        return
    for note in result.notes:
        _warn(note)
    accuracy = result.reports.get("accuracy", {})
    compat = result.reports.get("compatibility", {})
    pairs = [
        ("bundle", f"{result.path} ({_human_size(result.size)})"),
        (
            "model",
            f"{result.source_format} → tflite {result.quantization}, {_human_size(result.model_size)}",
        ),
        ("accuracy", _accuracy_line(accuracy) if accuracy else "not evaluated (already TFLite)"),
        *(
            [("pruning", _pruning_line(result.reports["pruning"]))]
            if "pruning" in result.reports
            else []
        ),
        (
            "compatibility",
            f"{'OK' if compat.get('ok') else 'FAILED'} for {prof.runtime.package} {prof.runtime.version}",
        ),
        ("payload", f"{m.payload.encryption}, {m.payload.compression}"),
        ("signed by", ", ".join(s.key_id[:16] for s in result.bundle.signatures)),
        (
            "recipients",
            ", ".join(r.key_id[:16] for r in result.bundle.recipients) or "none: NOT ENCRYPTED",
        ),
        ("digest", result.bundle.digest),
    ]
    _kv(f"{m.name} v{m.version} for {prof.name}", pairs)


def _inventory_recipients(inventory: Path, groups: list[str]) -> list[Any]:
    """The device keys of the selected inventory devices (each device must have one)."""
    from .inventory import load_inventory

    devices = load_inventory(inventory).select((), groups)
    missing = [d.name for d in devices if d.public_key is None]
    if missing:
        raise UsageError(
            f"inventory devices without a public_key cannot be recipients: {', '.join(missing)}"
        )
    return [d.public_key for d in devices]


def _accuracy_line(gate: dict[str, Any]) -> str:
    if gate.get("metric") == "accuracy":
        return (
            f"{gate['float_accuracy']:.2f}% → {gate['quantized_accuracy']:.2f}% "
            f"(drop {gate['drop_points']:.2f} ≤ {gate['budget_points']} points) on {gate['samples']} samples"
        )
    if gate.get("metric") == "output-error":
        return (
            f"relative RMS error {gate['relative_rmse']:.4f}, cosine {gate['cosine']:.4f} "
            f"on {gate['samples']} samples ({gate['data']})"
        )
    return str(gate.get("metric", "n/a"))


recipients_app = typer.Typer(help="Manage who can open a bundle.", no_args_is_help=True)
app.add_typer(recipients_app, name="recipients")


@recipients_app.command("add")
def recipients_add(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg to extend (rewritten atomically).")],
    device_key: Annotated[Path, typer.Option(help="A device key that is already a recipient.")],
    recipient: Annotated[list[Path], typer.Option(help="Device public key to add; repeatable.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of in place.")
    ] = None,
) -> None:
    """Give more devices access to a bundle without re-signing it."""
    from .bundle import read_bundle, save_bundle
    from .keys import load_public_key
    from .sealing import add_recipients

    opener = _load_private(device_key, "device")
    new = [load_public_key(p, kind="device") for p in recipient]
    updated = add_recipients(read_bundle(bundle), opener, new)
    save_bundle(updated, out or bundle)
    _console().print(f"{out or bundle}: {len(updated.recipients)} recipient(s)", markup=False)


# -- profiles ---------------------------------------------------------------------------------


profiles_app = typer.Typer(help="List and show device profiles.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")


@profiles_app.command("list")
def profiles_list(as_json: JsonOpt = False) -> None:
    """All known profiles (built-in and from EDGE_SDK_PROFILE_PATH)."""
    from .profiles import list_profiles

    profiles = list_profiles()
    if as_json:
        _print_json([p.to_dict() for p in profiles])
        return
    _table(
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
    from .profiles import load_profile

    prof = load_profile(name)
    data = prof.to_dict()
    if as_json:
        _print_json(data)
        return
    _kv(prof.name, [(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in data.items()])


# -- device side: run, bench, doctor -------------------------------------------------------------


def _device_load(
    bundle: Path,
    trust: list[Path],
    device_key: Path | None,
    profile: str | None,
    state_dir: Path | None,
    threads: int | None,
    strict_delegates: bool,
    allow_target_mismatch: bool,
) -> Any:
    from .runtime import load

    key = _load_private(device_key, "device") if device_key else None
    return load(
        bundle,
        trust=trust,
        device_key=key,
        profile=profile,
        state_dir=state_dir,
        threads=threads,
        strict_delegates=strict_delegates,
        allow_target_mismatch=allow_target_mismatch,
    )


DeviceKeyOpt = Annotated[
    Path | None, typer.Option(help="This device's private key (for encrypted bundles).")
]
ProfileOpt = Annotated[
    str | None, typer.Option(help="This board's profile (threads, delegates, target check).")
]
StateOpt = Annotated[Path | None, typer.Option(help="Anti-rollback state and audit log directory.")]
StrictOpt = Annotated[
    bool, typer.Option("--strict-delegates", help="A delegate that fails to load is an error.")
]
MismatchOpt = Annotated[
    bool, typer.Option("--allow-target-mismatch", help="Testing: skip the target check.")
]


def _load_inputs(path: Path) -> Any:
    import zipfile

    import numpy as np

    from .errors import DataError

    try:
        # Our own file handle: numpy leaves its handle open when a .npz turns out corrupt.
        with open(path, "rb") as handle:
            data = np.load(handle, allow_pickle=False)
            if isinstance(data, np.ndarray):
                return data
            with data:  # .npz members load lazily: read them inside the same error handling
                return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DataError(f"input file {path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as .npy/.npz: {str(exc)[:200]}") from None


@app.command()
def run(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")],
    trust: TrustOpt,
    input: Annotated[
        Path, typer.Option("--input", "-i", help=".npy (one input) or .npz (by input name)")
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write outputs to this .npz")
    ] = None,
    device_key: DeviceKeyOpt = None,
    profile: ProfileOpt = None,
    state_dir: StateOpt = None,
    threads: Annotated[
        int | None, typer.Option(help="Interpreter threads (default: profile).")
    ] = None,
    raw: Annotated[
        bool, typer.Option(help="Feed and return quantized integers as they are.")
    ] = False,
    strict_delegates: StrictOpt = False,
    allow_target_mismatch: MismatchOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify, decrypt in memory and run a bundle on the inputs; print or save the outputs."""
    import numpy as np

    x = _load_inputs(input)
    with _device_load(
        bundle,
        trust,
        device_key,
        profile,
        state_dir,
        threads,
        strict_delegates,
        allow_target_mismatch,
    ) as model:
        y = model.predict(x, raw=raw)
        outputs = y if isinstance(y, dict) else {model.outputs[0].name: y}
        if output is not None:
            try:
                np.savez(output, **outputs)
            except OSError as exc:
                from .errors import DataError

                raise DataError(
                    f"cannot write outputs to {output}: {exc.strerror or exc}"
                ) from None
        info = model.describe()
    result = {
        "name": model.manifest.name,
        "version": model.manifest.version,
        **info,
        "results": {
            k: {
                "shape": list(v.shape),
                "dtype": str(v.dtype),
                **(
                    {"argmax": np.argmax(v.reshape(len(v), -1), axis=1).tolist()[:32]}
                    if v.ndim == 2
                    else {}
                ),
            }
            for k, v in outputs.items()
        },
        "output_file": str(output) if output else None,
    }
    if as_json:
        _print_json(result)
        return
    delegates = (
        ", ".join(f"{d['name']}{'' if d['applied'] else ' (fell back)'}" for d in info["delegates"])
        or "none"
    )
    _console().print(
        f"{result['name']} v{result['version']} on {info['backend']['package']} "
        f"{info['backend']['version']}, delegates: {delegates}",
        markup=False,
    )
    for name, value in outputs.items():
        _console().print(f"{name}: shape {list(value.shape)} {value.dtype}", markup=False)
        if value.ndim == 2:
            _console().print(f"  argmax: {np.argmax(value, axis=1).tolist()[:32]}", markup=False)
    if output:
        _console().print(f"saved to {output}", markup=False)


@app.command()
def bench(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")],
    trust: TrustOpt,
    device_key: DeviceKeyOpt = None,
    profile: ProfileOpt = None,
    state_dir: StateOpt = None,
    threads: Annotated[str, typer.Option(help="Comma-separated thread counts to compare.")] = "1,2",
    runs: Annotated[int, typer.Option(help="Timed runs per configuration.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 5,
    allow_target_mismatch: MismatchOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure load time and latency percentiles per thread count on this board."""
    from .benchmark import bench_bundle

    counts = _int_list(threads, "--threads")
    key = _load_private(device_key, "device") if device_key else None
    report = bench_bundle(
        bundle,
        trust=trust,
        device_key=key,
        profile=profile,
        state_dir=state_dir,
        threads=counts,
        runs=runs,
        warmup=warmup,
        allow_target_mismatch=allow_target_mismatch,
    )
    if as_json:
        _print_json(report)
        return
    _console().print(
        f"{report['name']} v{report['version']} on {report['backend']}; load "
        f"{report['load_ms']:.1f} ms; delegates: {', '.join(report['delegates']) or 'none'}",
        markup=False,
    )
    _table(
        None,
        ["threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "runs"],
        [
            [
                str(r["threads"]),
                f"{r['p50_ms']:.3f}",
                f"{r['p90_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['mean_ms']:.3f}",
                str(r["runs"]),
            ]
            for r in report["configs"]
        ],
    )


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UsageError(f"{option} needs positive integers, got {text!r}")
    return values


@app.command()
def doctor(
    profile: ProfileOpt = None,
    device_key: DeviceKeyOpt = None,
    state_dir: StateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check this board: Python, arch, runtime, numpy, crypto speed, delegates, state, key."""
    from .doctor import run_checks

    checks = run_checks(profile=profile, device_key=device_key, state_dir=state_dir)
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        _print_json({"ok": not failed, "checks": [c.to_dict() for c in checks]})
    else:
        _table(
            None,
            ["check", "status", "detail", "fix"],
            [[c.name, c.status.upper(), c.detail, c.fix or ""] for c in checks],
        )
    if failed:
        raise typer.Exit(1)


# -- deploy, rollback, status -------------------------------------------------------------------


TargetOpt = Annotated[
    str | None, typer.Option("--target", help="A directory or ssh://user@host[:port]/path.")
]
InventoryOpt = Annotated[Path | None, typer.Option(help="Fleet inventory TOML.")]
GroupOpt = Annotated[list[str] | None, typer.Option("--group", help="Inventory group; repeatable.")]
DeviceOpt = Annotated[
    list[str] | None, typer.Option("--device", help="Inventory device name; repeatable.")
]
IdentityOpt = Annotated[Path | None, typer.Option(help="SSH private key for the boards.")]
KnownHostsOpt = Annotated[
    Path | None, typer.Option(help="known_hosts file (default ~/.ssh/known_hosts).")
]
AcceptNewOpt = Annotated[
    bool,
    typer.Option("--accept-new-host-keys", help="Trust and record hosts seen for the first time."),
]
PortOpt = Annotated[int | None, typer.Option(help="SSH port (overrides the URI).")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to connect and log in.")]


def _ssh_options(identity: Path | None, known_hosts: Path | None, accept_new: bool, port: int | None,
                 connect_timeout: float) -> Any:  # fmt: skip
    from .transports import SshOptions

    return SshOptions(identity=identity, known_hosts=known_hosts, accept_new_host_keys=accept_new, port=port,
                      connect_timeout=connect_timeout)  # fmt: skip


def _devices(target: str | None, inventory: Path | None, devices: list[str] | None, groups: list[str] | None,
             ssh: Any) -> list[Any]:  # fmt: skip
    """``--target`` (as a one-device fleet) or the selected inventory devices."""
    from .inventory import Device, load_inventory

    if (target is None) == (inventory is None):
        raise UsageError("give exactly one of --target or --inventory")
    if target is not None:
        if devices or groups:
            raise UsageError("--device and --group select from an --inventory")
        return [Device(name=target, target=target, ssh=ssh)]
    assert inventory is not None
    return list(load_inventory(inventory).select(devices or [], groups or []))


def _targets(target: str | None, inventory: Path | None, devices: list[str] | None, groups: list[str] | None,
             ssh: Any) -> list[Any]:  # fmt: skip
    """``--target`` or the selected inventory devices, as deploy targets."""
    from .transports import parse_target

    chosen = _devices(target, inventory, devices, groups, ssh)
    return (
        [parse_target(target, ssh=ssh)] if target is not None else [d.open_target() for d in chosen]
    )


def _fleet_progress(show: bool) -> Any:
    """A context manager yielding a deploy progress callback: one bar per device on stderr."""
    import contextlib

    @contextlib.contextmanager
    def run() -> Any:
        console = _console(stderr=True)
        if not show or not console.is_terminal:
            yield None
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        tasks: dict[str, Any] = {}
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TextColumn("{task.fields[phase]}"), console=console) as bars:  # fmt: skip

            def update(event: Any) -> None:
                key = event.device or event.target
                if key not in tasks:
                    tasks[key] = bars.add_task(key, total=None, phase="")
                phase = event.phase if event.result is None else event.result.status
                bars.update(
                    tasks[key], completed=event.sent, total=event.total or None, phase=phase
                )

            yield update

    return run()


def _deploy_rows(results: list[Any]) -> list[list[str]]:
    return [
        [r.device or r.target, r.name, str(r.version), r.digest[:16], r.status.upper(),
         "yes" if r.uploaded else "no", f"{r.elapsed:.2f}s", r.reason or ""]
        for r in results
    ]  # fmt: skip


@app.command()
def deploy(
    bundles: Annotated[list[Path], typer.Argument(help="Bundles to install.")],
    target: TargetOpt = None,
    inventory: InventoryOpt = None,
    device: DeviceOpt = None,
    group: GroupOpt = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option(help="Verify each bundle locally against this trust store first."),
    ] = None,
    keep: Annotated[int, typer.Option(help="Releases to keep per bundle name.")] = 3,
    verify_remote: Annotated[
        str | None,
        typer.Option(
            help="Trust store path ON THE BOARD: run edge-sdk verify there before switching."
        ),
    ] = None,
    health_check: Annotated[
        str | None,
        typer.Option(help="Command run on the board after the switch; failure rolls back."),
    ] = None,
    health_timeout: Annotated[
        float, typer.Option(help="Seconds the health check may take.")
    ] = 30.0,
    allow_downgrade: Annotated[
        bool, typer.Option(help="Allow a lower version than the current one.")
    ] = False,
    retries: Annotated[int, typer.Option(help="Attempts for network failures (with backoff).")] = 3,
    parallel: Annotated[int, typer.Option(help="Devices deployed at once.")] = 8,
    canary: Annotated[
        int, typer.Option(help="Deploy to N devices first; continue only if they pass.")
    ] = 0,
    max_failures: Annotated[
        int, typer.Option(help="Stop starting new devices after this many failures.")
    ] = 0,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_keys: AcceptNewOpt = False,
    port: PortOpt = None,
    connect_timeout: TimeoutOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """Install bundles on a target or a fleet: upload, check, switch `current` atomically."""
    from .deploy import DeployOptions, deploy_fleet, prepare_bundle
    from .keys import TrustStore
    from .transports import RetryPolicy

    ssh = _ssh_options(identity, known_hosts, accept_new_host_keys, port, connect_timeout)
    options = DeployOptions(keep=keep, verify_remote=verify_remote, health_check=health_check,
                            health_timeout=health_timeout, allow_downgrade=allow_downgrade,
                            retry=RetryPolicy(attempts=retries))  # fmt: skip
    store = TrustStore.load(trust) if trust else None
    prepared = [prepare_bundle(b, trust=store) for b in bundles]
    devices = _devices(target, inventory, device, group, ssh)
    results: list[Any] = []
    stopped = False
    with _fleet_progress(not as_json) as progress:
        for bundle in prepared:
            fleet = deploy_fleet(bundle, devices, options, parallel=parallel, canary=canary,
                                 max_failures=max_failures, progress=progress)  # fmt: skip
            results.extend(fleet.results)
            stopped = stopped or fleet.stopped
    failed_count = sum(1 for r in results if r.status not in ("ok", "unchanged"))
    if as_json:
        _print_json({
            "ok": failed_count == 0 and not stopped,
            "stopped": stopped,
            "results": [{"device": r.device, "target": r.target, "name": r.name, "version": r.version,
                         "digest": r.digest, "status": r.status, "uploaded": r.uploaded, "file": r.file,
                         "previous": r.previous, "rolled_back": r.rolled_back, "reason": r.reason,
                         "error": r.error.kind if r.error else None, "elapsed": r.elapsed} for r in results],
        })  # fmt: skip
    else:
        _table(None, ["device", "name", "version", "digest", "status", "uploaded", "time", "reason"],
               _deploy_rows(results))  # fmt: skip
        skipped = sum(1 for r in results if r.status == "skipped")
        _console().print(f"{len(results) - failed_count} of {len(results)} deploy(s) succeeded"
                         + (f" (rollout stopped: {skipped} skipped)" if stopped and skipped else ""),
                         markup=False)  # fmt: skip
    if failed_count or stopped:
        raise typer.Exit(1)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Bundle name to roll back.")],
    target: TargetOpt = None,
    inventory: InventoryOpt = None,
    device: DeviceOpt = None,
    group: GroupOpt = None,
    to_version: Annotated[
        int | None, typer.Option(help="Switch to this version instead of the previous one.")
    ] = None,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_keys: AcceptNewOpt = False,
    port: PortOpt = None,
    connect_timeout: TimeoutOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """Switch `current` back to the previous (or a given) release."""
    from .deploy import rollback as do_rollback

    ssh = _ssh_options(identity, known_hosts, accept_new_host_keys, port, connect_timeout)
    rows, failures = [], 0
    for tgt in _targets(target, inventory, device, group, ssh):
        try:
            result = do_rollback(name, tgt, to_version=to_version, ssh=ssh)
            rows.append({"target": tgt.label, "ok": True, "from": result.from_file, "to": result.to_file,
                         "version": result.version})  # fmt: skip
        except EdgeSDKError as exc:
            if target is not None:
                raise
            failures += 1
            rows.append(
                {"target": tgt.label, "ok": False, "error": exc.kind, "reason": exc.message}
            )
    if as_json:
        _print_json({"ok": not failures, "results": rows})
    else:
        _table(None, ["target", "result"], [
            [r["target"], f"{r['from']} → {r['to']} (v{r['version']})" if r["ok"] else f"FAILED: {r['reason']}"]
            for r in rows
        ])  # fmt: skip
    if failures:
        raise typer.Exit(1)


@app.command()
def status(
    target: TargetOpt = None,
    inventory: InventoryOpt = None,
    device: DeviceOpt = None,
    group: GroupOpt = None,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_keys: AcceptNewOpt = False,
    port: PortOpt = None,
    connect_timeout: TimeoutOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """What each device runs: name, version, digest, when it was switched."""
    from .deploy import status as get_status

    ssh = _ssh_options(identity, known_hosts, accept_new_host_keys, port, connect_timeout)
    rows: list[dict[str, Any]] = []
    failures = 0
    for tgt in _targets(target, inventory, device, group, ssh):
        try:
            for rel in get_status(tgt, ssh=ssh):
                rows.append({"target": tgt.label, "name": rel.name, "version": rel.version, "digest": rel.digest,
                             "file": rel.file, "switched_at": rel.switched_at.isoformat() if rel.switched_at else None,
                             "releases": list(rel.releases), "problem": rel.problem})  # fmt: skip
        except EdgeSDKError as exc:
            if target is not None:
                raise
            failures += 1
            rows.append(
                {"target": tgt.label, "name": None, "problem": f"{exc.kind}: {exc.message}"}
            )
    if as_json:
        _print_json({"ok": not failures, "releases": rows})
    else:
        _table(None, ["target", "name", "version", "digest", "switched", "releases", "problem"], [
            [r["target"], r.get("name") or "", str(r.get("version") or ""), (r.get("digest") or "")[:16],
             r.get("switched_at") or "", str(len(r.get("releases") or [])), r.get("problem") or ""]
            for r in rows
        ])  # fmt: skip
    if failures:
        raise typer.Exit(1)


# -- TUF repository (host) and update agent (device) -----------------------------------------------

repo_app = typer.Typer(
    help="Publish bundles through a TUF repository; devices pull them with 'edge-sdk agent'.",
    no_args_is_help=True,
)
app.add_typer(repo_app, name="repo")

RepoOpt = Annotated[Path, typer.Option("--repo", help="The TUF repository directory.")]
RootKeysOpt = Annotated[
    Path | None,
    typer.Option(
        "--root-keys", help="Root key directory (default DIR/root-keys); keep it offline."
    ),
]
AskPassOpt = Annotated[
    bool, typer.Option("--prompt-passphrase", help="Ask for the root keys' passphrase.")
]


def _root_passphrase(prompt: bool, confirm: bool = False) -> bytes | None:
    if not prompt:
        return None  # encrypted root keys then use EDGE_SDK_KEY_PASSPHRASE
    answer: str = typer.prompt("Root key passphrase", hide_input=True, confirmation_prompt=confirm)
    return answer.encode()


def _repo_status(status: Any, as_json: bool) -> None:
    if as_json:
        _print_json(status.to_dict())
        return
    _table("roles", ["role", "version", "expires", "threshold", "keys", "available"], [
        [r.name, str(r.version), f"{r.expires:%Y-%m-%d %H:%M}Z", str(r.threshold),
         " ".join(k[:16] for k in r.keyids), str(r.keys_available)]
        for r in status.roles
    ])  # fmt: skip
    _table("targets", ["name", "version", "digest", "groups", "hardware", "size"], [
        [t.name, str(t.version), t.digest[:16], " ".join(t.groups) or "(all)",
         " ".join(t.hardware_ids) or "(any)", _human_size(t.length)]
        for t in status.targets
    ])  # fmt: skip
    for warning in status.warnings:
        _warn(warning)


@repo_app.command("init")
def repo_init(
    directory: Annotated[Path, typer.Argument(help="Directory for the new repository.")],
    root_keys: RootKeysOpt = None,
    root_key_count: Annotated[int, typer.Option(help="Root keys to generate.")] = 1,
    root_threshold: Annotated[int, typer.Option(help="Root signatures required.")] = 1,
    timestamp_hours: Annotated[
        float, typer.Option(help="Timestamp lifetime; run 'repo refresh' well within it.")
    ] = 24.0,
    prompt_passphrase: Annotated[
        bool, typer.Option("--prompt-passphrase", help="Encrypt the root keys with a passphrase.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a repository: keys for every role, root v1, empty targets."""
    from datetime import timedelta

    from .tuf_repo import init_repo

    if timestamp_hours <= 0:
        raise UsageError("--timestamp-hours must be positive")
    status = init_repo(
        directory,
        root_keys=root_keys,
        keys={"root": root_key_count},
        thresholds={"root": root_threshold},
        expiry={"timestamp": timedelta(hours=timestamp_hours)},
        root_passphrase=_root_passphrase(prompt_passphrase, confirm=True),
    )
    _repo_status(status, as_json)
    if not as_json:
        _console().print(
            f"ship {directory / 'metadata' / '1.root.json'} in the device image; "
            f"move {root_keys or directory / 'root-keys'} offline",
            markup=False,
        )


@repo_app.command("publish")
def repo_publish(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle files to publish.")],
    repo: RepoOpt,
    group: Annotated[
        str | None, typer.Option(help="Only devices of this group (default: every device).")
    ] = None,
    keep: Annotated[
        int | None, typer.Option(help="List only the newest N versions per bundle name.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add bundles as targets; signs new targets, snapshot and timestamp metadata."""
    from .tuf_repo import publish

    result = publish(bundles, repo, group, keep=keep)
    if as_json:
        _print_json({
            "published": [{"path": t.path, "length": t.length, **t.to_custom()} for t in result.published],
            "versions": dict(result.versions),
        })  # fmt: skip
        return
    _table(None, ["name", "version", "digest", "groups", "size", "target"], [
        [t.name, str(t.version), t.digest[:16], " ".join(t.groups) or "(all)", _human_size(t.length), t.path]
        for t in result.published
    ])  # fmt: skip
    _console().print(", ".join(f"{role} v{v}" for role, v in result.versions.items()), markup=False)


@repo_app.command("refresh")
def repo_refresh(
    repo: RepoOpt,
    force: Annotated[bool, typer.Option(help="Re-sign every online role now.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-sign roles that expire soon (run hourly from cron)."""
    from .tuf_repo import refresh

    result = refresh(repo, force=force)
    if as_json:
        _print_json({"resigned": dict(result.resigned), "warnings": list(result.warnings)})
        return
    done = ", ".join(f"{role} v{v}" for role, v in result.resigned.items())
    _console().print(f"re-signed {done}" if done else "nothing due", markup=False)
    for warning in result.warnings:
        _warn(warning)


@repo_app.command("rotate-key")
def repo_rotate_key(
    role: Annotated[str, typer.Argument(help="root | targets | snapshot | timestamp")],
    repo: RepoOpt,
    old_key: Annotated[
        str | None, typer.Option(help="Key id (prefix) to replace, when the role has several.")
    ] = None,
    root_keys: RootKeysOpt = None,
    prompt_passphrase: AskPassOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace a role's key; root is re-signed by the old and the new root keys."""
    from .tuf_repo import rotate_key

    change = rotate_key(
        repo,
        role,
        old_key=old_key,
        root_keys=root_keys,
        root_passphrase=_root_passphrase(prompt_passphrase),
    )
    result = {
        "role": change.role, "added": list(change.added), "removed": list(change.removed),
        "threshold": change.threshold, "versions": dict(change.versions),
    }  # fmt: skip
    if as_json:
        _print_json(result)
        return
    _kv(f"{role} key rotated", [
        ("added", " ".join(change.added)), ("removed", " ".join(change.removed)),
        ("threshold", str(change.threshold)),
        ("new versions", ", ".join(f"{r} v{v}" for r, v in change.versions.items())),
    ])  # fmt: skip


@repo_app.command("status")
def repo_status(repo: RepoOpt, root_keys: RootKeysOpt = None, as_json: JsonOpt = False) -> None:
    """Roles, versions, expiries, thresholds, key availability and targets."""
    from .tuf_repo import status as get_repo_status

    _repo_status(get_repo_status(repo, root_keys=root_keys), as_json)


def _agent_result(result: Any, as_json: bool) -> None:
    if as_json:
        _print_json({
            "ok": not result.errors,
            "outcomes": [
                {"name": o.name, "status": o.status, "version": o.version, "digest": o.digest,
                 "previous": o.previous, "reason": o.reason, "error": o.error.kind if o.error else None}
                for o in result.outcomes
            ],
            "requests": result.requests, "bytes": result.bytes, "attempts": result.attempts,
            "error": result.error.message if result.error else None,
        })  # fmt: skip
        return
    if result.error is not None:
        _warn(f"poll failed: {result.error.message}")
        return
    _table(None, ["name", "status", "version", "previous", "reason"], [
        [o.name, o.status, str(o.version or ""), o.previous or "", o.reason or ""] for o in result.outcomes
    ])  # fmt: skip
    _console().print(
        f"{result.requests} request(s), {_human_size(result.bytes)} in {result.elapsed:.2f} s",
        markup=False,
    )


@app.command()
def agent(
    repo: Annotated[str, typer.Option("--repo", help="Repository base URL (http:// or https://).")],
    root: Annotated[
        Path, typer.Option("--root", help="Trusted root.json shipped with the device.")
    ],
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="TUF cache, audit log, anti-rollback state.")
    ],
    install_dir: Annotated[
        Path, typer.Option("--install-dir", help="Deploy root: NAME/releases/, NAME/current.")
    ],
    trust: TrustOpt,
    group: Annotated[str | None, typer.Option(help="This device's rollout group.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Poll once and exit (the default).")] = False,
    interval: Annotated[
        float | None, typer.Option(help="Poll every S seconds (±10 % jitter) until stopped.")
    ] = None,
    health_check: Annotated[
        str | None,
        typer.Option(
            help="Command run after a switch ({current}, {file}, {version}…); failure rolls back."
        ),
    ] = None,
    hardware_id: Annotated[
        list[str] | None,
        typer.Option("--hardware-id", help="This device's ids (default: detected)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pull updates from a TUF repository: verify (TUF and bundle signatures), install, roll back."""
    from .agent import Agent
    from .keys import TrustStore

    if once and interval is not None:
        raise UsageError("--once and --interval exclude each other")
    device = Agent(
        repo, root, state_dir, install_dir, TrustStore.load(trust),
        group=group, hardware_ids=hardware_id or None, health_check=health_check,
    )  # fmt: skip
    if interval is None:
        result = device.poll()
        _agent_result(result, as_json)
        if result.errors and as_json:
            raise typer.Exit(result.errors[0].exit_code)  # the JSON above already says why
        result.raise_for_errors()
        return
    device.run(interval, on_poll=lambda result: _agent_result(result, as_json))


# -- audit ------------------------------------------------------------------------------------


class _AuditGroup(TyperGroup):
    """``edge-sdk audit PATH…`` scans; ``edge-sdk audit log FILE`` reads a device log."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["scan", *args]
        return list(super().parse_args(ctx, args))


audit_app = typer.Typer(
    cls=_AuditGroup,
    help="Audit bundles (edge-sdk audit PATH… --trust DIR) or a device's log (edge-sdk audit log FILE).",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


@audit_app.command("scan", hidden=True)
def audit_scan(
    trust: TrustOpt,
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Bundles or directories (searched recursively).")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="A deploy target (directory or ssh://…); repeatable."),
    ] = None,
    inventory: InventoryOpt = None,
    group: GroupOpt = None,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_keys: AcceptNewOpt = False,
    port: PortOpt = None,
    connect_timeout: TimeoutOpt = 15.0,
    threshold: Annotated[
        int | None, typer.Option(help="Override the trust store's threshold.")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table | json | csv")] = "table",
    fail_on: Annotated[str, typer.Option(help="Exit non-zero on: error | warning")] = "error",
    expiring_days: Annotated[
        int, typer.Option(help="Warn when a bundle expires within N days.")
    ] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Check every bundle without a device key: one row each, a summary, an exit code."""
    from datetime import timedelta

    from .audit import audit_paths, failed, summarize, to_csv
    from .keys import TrustStore

    fmt = "json" if as_json else output_format
    if fmt not in ("table", "json", "csv"):
        raise UsageError(f"--format must be table, json or csv, not {fmt!r}")
    from .audit import audit_targets
    from .inventory import load_inventory
    from .transports import parse_target

    if not (paths or target or inventory):
        raise UsageError("nothing to audit: give PATHs, --target or --inventory")
    store = TrustStore.load(trust, threshold=threshold)
    ssh = _ssh_options(identity, known_hosts, accept_new_host_keys, port, connect_timeout)
    remote = [parse_target(t, ssh=ssh) for t in target or []]
    if inventory is not None:
        remote += [d.open_target() for d in load_inventory(inventory).select((), group or [])]
    elif group:
        raise UsageError("--group selects devices from an --inventory")
    within = timedelta(days=expiring_days)
    with _counter(fmt == "table", "Auditing") as progress:
        rows = audit_paths(paths or [], store, warn_within=within, progress=progress)
        rows += audit_targets(remote, store, warn_within=within, progress=progress)
    summary = summarize(rows)
    bad = failed(rows, fail_on)
    if fmt == "json":
        _print_json({"ok": not bad, "summary": summary, "rows": [r.to_dict() for r in rows]})
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows))
    else:
        _table(None, ["device", "path", "name", "version", "digest", "signers", "status", "reason"], [
            [r.device, r.path + (" (current)" if r.current else ""), r.name or "", str(r.version or ""),
             (r.digest or "")[:16], " ".join(k[:16] for k in r.signers), r.status.upper(), r.reason]
            for r in rows
        ])  # fmt: skip
        _console().print(
            f"{summary['total']} bundle(s): {summary['ok']} ok, {summary['warning']} warning, "
            f"{summary['error']} error",
            markup=False,
        )
    if bad:
        raise typer.Exit(1)


@audit_app.command("log")
def audit_log(
    path: Annotated[
        Path, typer.Argument(help="The device's audit.log (rotated files are read too).")
    ],
    verify_chain: Annotated[bool, typer.Option("--verify", help="Check the hash chain.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a device's audit log; with --verify, name the first broken record."""
    from .audit_log import log_files, read_log

    files = log_files(path)
    if not files:
        raise UsageError(f"audit log {path} does not exist")
    report = read_log(files)
    if as_json:
        problem = report.problem
        _print_json({"ok": report.ok, "records": list(report.records),
                     "problem": None if problem is None else vars(problem)})  # fmt: skip
    else:
        _table(None, ["seq", "time", "event", "name", "version", "result", "reason"], [
            [str(r.get("seq")), str(r.get("time", "")), str(r.get("event", "")), str(r.get("name", "")),
             str(r.get("version", "")), str(r.get("result", "")), str(r.get("reason", ""))]
            for r in report.records
        ])  # fmt: skip
    if verify_chain and report.problem is not None:
        from .errors import AuditLogError

        p = report.problem
        raise AuditLogError(f"audit log broken at {p.file}:{p.line} (seq {p.seq}): {p.problem}")
    if verify_chain and not as_json:
        _console().print(f"chain intact: {len(report.records)} record(s)", markup=False)


def _counter(show: bool, label: str) -> Any:
    """A context manager yielding ``progress(count)``, drawn on stderr when it is a terminal."""
    import contextlib

    @contextlib.contextmanager
    def run() -> Any:
        console = _console(stderr=True)
        if not show or not console.is_terminal:
            yield lambda _n: None
            return
        with console.status(label) as status:
            yield lambda n: status.update(f"{label}: {n} done")

    return run()


# -- entry point --------------------------------------------------------------------------------


def _fail(exc: EdgeSDKError, as_json: bool) -> NoReturn:
    if as_json:
        _print_json(
            {
                "ok": False,
                "error": exc.kind,
                "exit_code": exc.exit_code,
                "message": exc.message,
                "hint": exc.hint,
            }
        )
    else:
        sys.stderr.write(f"error: {_safe(exc.diagnostics())}\n")
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
