"""``edge-sdk package``: convert, quantize, check and seal a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_sdk.errors import UsageError

from ._common import (
    JsonOpt,
    app,
    console,
    human_size,
    kv,
    load_private,
    parse_expiry,
    plain,
    print_json,
    pruning_line,
    warn,
)
from .attest import provenance_lines, provenance_summary


def _progress_runner(as_json: bool) -> Any:
    """A context manager yielding a ``progress(step)`` callback drawn as a spinner on stderr."""
    import contextlib

    labels = {"load": "Loading model", "convert": "Converting to TFLite", "calibrate": "Calibrating and quantizing",
              "quantize": "Quantizing", "check": "Checking runtime compatibility", "evaluate": "Evaluating accuracy",
              "seal": "Signing and encrypting", "prune": "Pruning",
              "verify": "Verifying the model's signature"}  # fmt: skip

    @contextlib.contextmanager
    def run() -> Any:
        err = console(stderr=True)
        if as_json or not err.is_terminal:
            yield lambda step: None
            return
        with err.status(plain("Starting")) as status:
            yield lambda step: status.update(plain(f"{labels.get(step, step)}…"))

    return run()


@app.command()
def package(
    model: Annotated[Path, typer.Argument(help=".keras, .h5, SavedModel directory, or .tflite")],
    profile: Annotated[
        str | None,
        typer.Option(help="Device profile name or .toml path (default: edge-sdk.toml's)."),
    ] = None,
    sign_key: Annotated[
        list[str] | None,
        typer.Option(
            help="Signing private key file or pkcs11: URI of an HSM key; repeatable "
            "(default: edge-sdk.toml's)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Bundle name (default: the model's file name).")
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(help="Monotonic version (default: UTC build time, YYYYMMDDhhmmss)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output path (default: NAME.PROFILE.edgepkg beside it)."),
    ] = None,
    recipient: Annotated[
        list[Path] | None,
        typer.Option(
            help="Device public key to encrypt for; repeatable (default: edge-sdk.toml's)."
        ),
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
        float | None, typer.Option(help="Accuracy budget in percentage points (default 1.0).")
    ] = None,
    max_output_error: Annotated[
        float | None, typer.Option(help="Budget for relative RMS output error (default 0.05).")
    ] = None,
    min_output_cosine: Annotated[
        float | None,
        typer.Option(help="Minimum cosine of quantized vs float outputs (default 0.99)."),
    ] = None,
    input_shape: Annotated[
        list[str] | None,
        typer.Option(
            "--input-shape",
            help="NAME=1x96x96x3: size of made-up parity inputs where the model leaves "
            "dimensions open (repeatable; default 224x224 images)",
        ),
    ] = None,
    custom_objects: Annotated[
        list[str] | None,
        typer.Option(
            "--custom-objects", help="module:Class of a custom layer the model uses (repeatable)"
        ),
    ] = None,
    import_module: Annotated[
        list[str] | None,
        typer.Option(
            "--import", help="Import this module or .py file first, e.g. one registering layers"
        ),
    ] = None,
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
    # -- provenance: the source model's model-signing signature (edge_sdk/host/model_signature.py) --
    model_signature: Annotated[
        Path | None,
        typer.Option(help="model-signing signature of MODEL (e.g. model.sig); checked first."),
    ] = None,
    model_signer: Annotated[
        Path | None, typer.Option(help="EC public key (PEM) MODEL must be signed with.")
    ] = None,
    model_signer_identity: Annotated[
        str | None, typer.Option(help="Sigstore keyless: the signer's certificate identity.")
    ] = None,
    model_signer_issuer: Annotated[
        str | None, typer.Option(help="Sigstore keyless: that identity's OIDC issuer URL.")
    ] = None,
    sigstore_trust_config: Annotated[
        Path | None, typer.Option(help="Sigstore keyless: a client trust config file (offline).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Convert, quantize, check and seal a model into a signed (and encrypted) bundle."""
    from edge_sdk.host.config import default_name, default_output, default_version, find_config
    from edge_sdk.host.packaging import PackageOptions, package_model
    from edge_sdk.host.pruning import parse_sparsity
    from edge_sdk.keys import load_public_key
    from edge_sdk.profiles import load_profile

    config = find_config()
    profile = profile or (config.profile if config is not None else None)
    if profile is None:
        raise UsageError("which board is this for? give --profile (see 'edge-sdk profiles list')")
    prof = load_profile(profile)
    if not sign_key:
        if config is None or config.signing_key is None:
            raise UsageError(
                "no signing key: run 'edge-sdk init' once to create one (or pass --sign-key)"
            )
        sign_key = [str(config.signing_key)]
    signers = [load_private(p, "signing") for p in sign_key]
    if group and inventory is None:
        raise UsageError("--group selects devices from an --inventory")
    if recipient is None and inventory is None and config is not None:
        # The project's devices, unless the command line names its own.
        recipient = list(config.recipients)
        if config.inventory is not None:
            inventory, group = config.inventory, list(config.groups)
    recipients = [load_public_key(p, kind="device") for p in recipient or []]
    if inventory is not None:
        recipients += _inventory_recipients(inventory, group or [])
    out = out or default_output(model, prof.name, config.output_dir if config else None)
    signature_check = None
    if any(
        v is not None
        for v in (model_signature, model_signer, model_signer_identity, model_signer_issuer,
                  sigstore_trust_config)
    ):  # fmt: skip
        from edge_sdk.host.model_signature import ModelSignatureOptions

        signature_check = ModelSignatureOptions(
            model_signature, model_signer, model_signer_identity, model_signer_issuer,
            sigstore_trust_config,
        )  # fmt: skip
    options = PackageOptions(
        name=name or default_name(model),
        version=version if version is not None else default_version(),
        quantize=quantize,
        io_dtype=io_dtype,
        aead=aead,
        compress=compress,
        calibration=calibration,
        evaluation=eval_data,
        max_accuracy_drop=max_accuracy_drop,
        max_output_error=max_output_error,
        min_output_cosine=min_output_cosine,
        input_shapes=tuple(input_shape or ()),
        custom_objects=tuple(custom_objects or ()),
        imports=tuple(import_module or ()),
        expires=parse_expiry(expires),
        prune=parse_sparsity(prune) if prune is not None else None,
        train=train,
        epochs=epochs,
        model_signature=signature_check,
    )
    from edge_sdk.native_output import quiet_runtime_info

    with _progress_runner(as_json) as progress, quiet_runtime_info():
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
        "provenance": provenance_summary(m),
    }
    if as_json:
        print_json(summary)
        return
    for note in result.notes:
        warn(note)
    accuracy = result.reports.get("accuracy", {})
    compat = result.reports.get("compatibility", {})
    llm = result.reports.get("litertlm")
    model_lines = (
        [("model", f"LiteRT-LM, {human_size(result.model_size)}, as built: {_sections_line(llm)}")]
        if llm is not None
        else [
            ("model", f"{result.source_format} → tflite {result.quantization}, "
                      f"{human_size(result.model_size)}"),
            ("accuracy", _accuracy_line(accuracy) if accuracy else "not evaluated (already TFLite)"),
        ]
    )  # fmt: skip
    runtime = f"{m.target.runtime} {m.target.runtime_version}".strip()
    pairs = [
        ("bundle", f"{result.path} ({human_size(result.size)})"),
        *model_lines,
        *(
            [("pruning", pruning_line(result.reports["pruning"]))]
            if "pruning" in result.reports
            else []
        ),
        (
            ("runtime", f"{runtime} (LiteRT-LM's engine; its header was read, the model not run)")
            if llm is not None
            else (
                "compatibility",
                f"{'OK' if compat.get('ok') else 'FAILED'} for {prof.runtime.package} "
                f"{prof.runtime.version}",
            )
        ),
        *provenance_lines(m),
        ("payload", f"{m.payload.encryption}, {m.payload.compression}"),
        ("signed by", ", ".join(s.key_id[:16] for s in result.bundle.signatures)),
        (
            "recipients",
            ", ".join(r.key_id[:16] for r in result.bundle.recipients) or "none: NOT ENCRYPTED",
        ),
        ("digest", result.bundle.digest),
    ]
    kv(f"{m.name} v{m.version} for {prof.name}", pairs)
    if not result.bundle.recipients:
        # Last, after the build succeeded, where it cannot scroll away.
        warn(
            "NOT ENCRYPTED: no device is configured, so this bundle is signed only and any "
            "reader can extract the model. Add recipients (or an inventory) to edge-sdk.toml, "
            "or pass --recipient DEVICE.pub."
        )


def _inventory_recipients(inventory: Path, groups: list[str]) -> list[Any]:
    """The device keys of the selected inventory devices (each device must have one)."""
    from edge_sdk.fleet.inventory import load_inventory

    devices = load_inventory(inventory).select((), groups)
    missing = [d.name for d in devices if d.public_key is None]
    if missing:
        raise UsageError(
            f"inventory devices without a public_key cannot be recipients: {', '.join(missing)}"
        )
    return [d.public_key for d in devices]


def _accuracy_line(gate: dict[str, Any]) -> str:
    outputs = gate.get("outputs")
    if isinstance(outputs, dict) and len(outputs) > 1:
        return "; ".join(
            f"{name}: {_accuracy_line({**result, 'samples': gate.get('samples'), 'data': gate.get('data')})}"
            for name, result in outputs.items()
        )
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


def _sections_line(info: dict[str, Any]) -> str:
    """``format v1.5.0, 3 sections (TFLiteModel, SP_Tokenizer, LlmMetadataProto)``."""
    kinds = [str(s.get("kind", "?")) for s in info.get("sections", [])]
    shown = ", ".join(kinds[:6]) + (", …" if len(kinds) > 6 else "")
    return f"format v{info.get('version', '?')}, {len(kinds)} sections ({shown})"
