"""Device-side commands: ``run``, ``bench``, ``doctor``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_sdk.errors import UsageError

from ._common import (
    AllowUnencryptedOpt,
    DeviceKeyOpt,
    JsonOpt,
    MismatchOpt,
    NameOpt,
    ProfileOpt,
    SlipOpt,
    StateOpt,
    StrictOpt,
    TrustOpt,
    app,
    load_private,
    print_json,
    say,
    table,
)
from .llm import (
    MaxTokensOpt,
    SeedOpt,
    TemperatureOpt,
    TopKOpt,
    TopPOpt,
    WeightCacheOpt,
    check_generation_options,
    check_weight_cache_option,
    load_llm_bundle,
    say_loaded,
    stream_reply,
)


def _device_load(bundle: Path, trust: list[Path], device_key: str | None, **options: Any) -> Any:
    """``edge_sdk.load`` with a key file (prompting for its passphrase when needed)."""
    from edge_sdk.device.runtime import load
    from edge_sdk.native_output import quiet_runtime_info

    key = load_private(device_key, "device") if device_key else None
    with quiet_runtime_info():
        return load(bundle, trust=trust, device_key=key, **options)


def _load_inputs(path: Path) -> Any:
    import zipfile

    import numpy as np

    from edge_sdk.errors import DataError, unreadable_file
    from edge_sdk.files import open_regular

    try:
        handle = open_regular(path)  # a FIFO or /dev/zero is refused, not waited on or read
    except OSError as exc:
        raise unreadable_file(DataError, "input file", path, exc,
                              hint="give a .npy or .npz file") from None  # fmt: skip
    try:
        # Our own file handle: numpy leaves its handle open when a .npz turns out corrupt.
        with handle:
            magic = handle.read(6)
            if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
                raise DataError(
                    f"{path} is not a numpy array file (.npy or .npz)",
                    hint="save inputs with numpy.save(path, x), or numpy.savez(path, name=x) "
                    "for several inputs",
                )
            handle.seek(0)
            data = np.load(handle, allow_pickle=False)
            if isinstance(data, np.ndarray):
                return data
            with data:  # .npz members load lazily: read them inside the same error handling
                return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as .npy/.npz: {str(exc)[:200]}") from None


def _class_probabilities(value: Any) -> bool:
    """Whether ``value`` reads as class probabilities (N rows of C > 1 values in [0, 1] summing
    to 1), the one kind of output whose argmax is a predicted class: a (N, 1) score, logits or
    box coordinates get no argmax."""
    import numpy as np

    if value.ndim != 2 or value.shape[1] < 2 or value.dtype.kind != "f" or not value.size:
        return False
    finite = np.isfinite(value).all()
    in_range = finite and float(value.min()) >= 0.0 and float(value.max()) <= 1.0
    # 0.05: a quantized softmax (steps of 1/256 per class) sums to 1 only approximately.
    return bool(in_range and np.allclose(value.sum(axis=1), 1.0, atol=0.05))


@app.command()
def run(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg file.")],
    trust: TrustOpt,
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help=".npy (one input) or .npz (by input name)")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option(help="For an LLM bundle: generate a reply to this prompt.")
    ] = None,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    seed: SeedOpt = 0,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write outputs to this .npz")
    ] = None,
    device_key: DeviceKeyOpt = None,
    slip: SlipOpt = None,
    profile: ProfileOpt = None,
    state_dir: StateOpt = None,
    threads: Annotated[
        int | None, typer.Option(help="Interpreter threads (default: profile).")
    ] = None,
    raw: Annotated[
        bool, typer.Option(help="Feed and return quantized integers as they are.")
    ] = False,
    signature: Annotated[
        str | None, typer.Option(help="Which signature to run, for a model with several.")
    ] = None,
    strict_delegates: StrictOpt = False,
    allow_target_mismatch: MismatchOpt = False,
    expected_name: NameOpt = None,
    allow_unencrypted: AllowUnencryptedOpt = False,
    as_json: JsonOpt = False,
    weight_cache: WeightCacheOpt = "encrypted",
) -> None:
    """Verify, decrypt in memory and run a bundle on the inputs; print or save the outputs.

    For an LLM bundle, ``--prompt`` generates a reply (streamed; ``--json`` prints it whole)
    with the model opened from sealed memory.
    """
    import numpy as np

    if (input is None) == (prompt is None):
        raise UsageError(
            "give --input for a model bundle or --prompt for a language-model bundle (one of them)"
        )
    if prompt is not None:
        if output is not None or raw or signature is not None:
            raise UsageError("--output, --raw and --signature are for --input, not --prompt")
        sampling: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature,
                                    "seed": seed, "top_k": top_k, "top_p": top_p}  # fmt: skip
        check_generation_options(prompt, **sampling)
        check_weight_cache_option(weight_cache)
        _generate(bundle, trust, device_key, prompt, as_json=as_json, slip=slip, profile=profile,
                  state_dir=state_dir, threads=threads, sampling=sampling,
                  allow_target_mismatch=allow_target_mismatch,
                  expected_name=expected_name, weight_cache=weight_cache,
                  require_encryption=False if allow_unencrypted else None)  # fmt: skip
        return
    assert input is not None
    x = _load_inputs(input)
    with _device_load(
        bundle, trust, device_key, slip=slip, profile=profile, state_dir=state_dir,
        threads=threads, strict_delegates=strict_delegates,
        allow_target_mismatch=allow_target_mismatch, expected_name=expected_name,
        require_encryption=False if allow_unencrypted else None,
    ) as model:  # fmt: skip
        if (
            isinstance(x, dict)
            and len(model.inputs) == 1
            and model.inputs[0].name not in x
            and "x" in x
        ):
            x = x["x"]  # the .npz format package takes (x, and y for labels): one input, so "x"
        y = model.predict(x, raw=raw, signature=signature)
        outputs = y if isinstance(y, dict) else {model.tensors(signature)[1][0].name: y}
        if output is not None:
            import io

            from edge_sdk.files import atomic_write

            # numpy.savez's own naming (it appends .npz), written through atomic_write so a
            # symlink planted at the name is replaced, never followed.
            if not output.name.endswith(".npz"):
                output = output.with_name(output.name + ".npz")
            buffer = io.BytesIO()
            np.savez(buffer, **outputs)
            try:
                atomic_write(output, buffer.getvalue())
            except OSError as exc:
                from edge_sdk.errors import DataError

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
                **({"argmax": np.argmax(v, axis=1).tolist()} if _class_probabilities(v) else {}),
            }
            for k, v in outputs.items()
        },
        "output_file": str(output) if output else None,
    }
    if as_json:
        print_json(result)
        return
    delegates = (
        ", ".join(f"{d['name']}{'' if d['applied'] else ' (fell back)'}" for d in info["delegates"])
        or "none"
    )
    say(
        f"{result['name']} v{result['version']} on {info['backend']['package']} "
        f"{info['backend']['version']}, delegates: {delegates}"
    )
    for name, value in outputs.items():
        say(f"{name}: shape {list(value.shape)} {value.dtype}")
        if _class_probabilities(value):
            classes = np.argmax(value, axis=1).tolist()
            more = (
                f" … (first 32 of {len(classes)}; --output saves all)" if len(classes) > 32 else ""
            )
            say(f"  argmax: {classes[:32]}{more}")
    if output:
        say(f"saved to {output}")


def _generate(
    bundle: Path,
    trust: list[Path],
    device_key: str | None,
    prompt: str,
    *,
    as_json: bool,
    sampling: dict[str, Any],
    **options: Any,
) -> None:
    with load_llm_bundle(bundle, trust, device_key, **options) as model:
        if as_json:
            text = model.generate(prompt, **sampling)
            print_json({"name": model.manifest.name, "version": model.manifest.version,
                        **model.describe(), "prompt": prompt, "text": text})  # fmt: skip
            return
        say_loaded(model)
        stream_reply(model.stream(prompt, **sampling))


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
    from edge_sdk.device.benchmark import bench_bundle

    counts = _int_list(threads, "--threads")
    from edge_sdk.native_output import quiet_runtime_info

    key = load_private(device_key, "device") if device_key else None
    with quiet_runtime_info():
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
        print_json(report)
        return
    say(
        f"{report['name']} v{report['version']} on {report['backend']}; load "
        f"{report['load_ms']:.1f} ms; delegates: {', '.join(report['delegates']) or 'none'}"
    )
    table(
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
    from edge_sdk.device.doctor import run_checks

    checks = run_checks(profile=profile, device_key=device_key, state_dir=state_dir)
    failed = [c for c in checks if c.status == "fail"]
    if as_json:
        print_json({"ok": not failed, "checks": [c.to_dict() for c in checks]})
    else:
        table(
            None,
            ["check", "status", "detail", "fix"],
            [[c.name, c.status.upper(), c.detail, c.fix or ""] for c in checks],
        )
    if failed:
        raise typer.Exit(1)
