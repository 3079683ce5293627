"""Language-model commands: ``chat``, and the generation behind ``run --prompt``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_sdk.errors import InferenceInputError

from ._common import (
    AllowUnencryptedOpt,
    DeviceKeyOpt,
    MismatchOpt,
    NameOpt,
    ProfileOpt,
    SlipOpt,
    StateOpt,
    TrustOpt,
    app,
    load_private,
    safe,
    say,
    warn,
)

MaxTokensOpt = Annotated[int, typer.Option(help="Most tokens to generate per reply.")]
TemperatureOpt = Annotated[
    float, typer.Option(help="Sampling temperature; 0 is greedy (the same text every run).")
]
TopKOpt = Annotated[
    int | None, typer.Option(help="With --temperature > 0: sample from the K likeliest tokens.")
]
TopPOpt = Annotated[
    float | None, typer.Option(help="With --temperature > 0: nucleus probability, in (0, 1].")
]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed (0 to 2**31-1).")]
WeightCacheOpt = Annotated[
    str,
    typer.Option(
        help="Where the weights packed for this CPU are kept between starts: 'encrypted' (in "
        "the state directory, for this device; later starts skip packing) or 'memory' (packed "
        "every start, nothing stored)."
    ),
]


def check_weight_cache_option(mode: str) -> None:
    """``--weight-cache`` checked before the bundle is opened."""
    from edge_sdk.device.llm import WEIGHT_CACHE_MODES
    from edge_sdk.errors import UsageError

    if mode not in WEIGHT_CACHE_MODES:
        raise UsageError(
            f"--weight-cache must be {' or '.join(WEIGHT_CACHE_MODES)}, not {safe(mode)}"
        )


def check_generation_options(prompt: str | None = None, **sampling: Any) -> None:
    """The library's own checks of a prompt and the sampling options, before the bundle is
    opened (verifying and decrypting a model of gigabytes, for a typo, would waste minutes)."""
    from edge_sdk.device.llm import check_prompt, check_sampling
    from edge_sdk.errors import UsageError

    try:
        check_sampling(**sampling)
    except UsageError as exc:
        # The library names its parameter (max_tokens); here the user typed --max-tokens.
        option = exc.message.split(" ", 1)[0]
        flag = "--" + option.replace("_", "-")
        raise UsageError(
            exc.message.replace(option, flag), hint=(exc.hint or "").replace(option, flag)
        ) from None
    if prompt is not None:
        check_prompt(prompt)


def read_prompt_line() -> str:
    """One line of stdin, bounded; a line that is not text is a typed error, not a traceback."""
    from edge_sdk.device.llm import MAX_PROMPT_CHARS
    from edge_sdk.errors import InferenceInputError

    try:
        line = sys.stdin.readline(MAX_PROMPT_CHARS + 1)
    except UnicodeDecodeError as exc:
        raise InferenceInputError(
            f"a line of input is not text in {exc.encoding}: byte {exc.start} is "
            f"0x{exc.object[exc.start]:02x}",
            hint="give prompts as UTF-8 text (check the terminal's or the file's encoding)",
        ) from None
    if len(line) > MAX_PROMPT_CHARS:
        raise InferenceInputError(
            f"a line of input is longer than the {MAX_PROMPT_CHARS:,} characters a prompt may hold"
        )
    return line


def load_llm_bundle(bundle: Path, trust: list[Path], device_key: str | None, **options: Any) -> Any:
    """``edge_sdk.load_llm`` with a key file (prompting for its passphrase when needed)."""
    from edge_sdk.device.llm import load_llm
    from edge_sdk.native_output import quiet_runtime_info

    key = load_private(device_key, "device") if device_key else None
    with quiet_runtime_info():
        return load_llm(bundle, trust=trust, device_key=key, **options)


def say_loaded(model: Any) -> None:
    """What was loaded, on stderr: the model, and where its packed weights came from."""
    say(f"{model!r}", stderr=True)
    problem = f" ({model.weight_cache_problem})" if model.weight_cache_problem else ""
    say(f"weight cache: {safe(model.weight_cache)}{safe(problem)}", stderr=True)


def stream_reply(pieces: Iterable[str]) -> int:
    """Write generated text to stdout as it is decoded; the number of pieces written.

    The text comes from a model, so every control character is escaped (a model can emit ESC
    sequences that would drive the terminal); newlines and tabs are kept.
    """
    count = 0
    for piece in pieces:
        sys.stdout.write(safe(piece, keep_newlines=True))
        sys.stdout.flush()
        count += 1
    sys.stdout.write("\n")
    return count


@app.command()
def chat(
    bundle: Annotated[Path, typer.Argument(help="The .edgepkg holding a LiteRT-LM model.")],
    trust: TrustOpt,
    device_key: DeviceKeyOpt = None,
    slip: SlipOpt = None,
    profile: ProfileOpt = None,
    state_dir: StateOpt = None,
    threads: Annotated[int | None, typer.Option(help="Engine threads (default: profile).")] = None,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    top_k: TopKOpt = None,
    top_p: TopPOpt = None,
    seed: SeedOpt = 0,
    template: Annotated[
        bool, typer.Option(help="Wrap each prompt in the model's own chat template.")
    ] = True,
    allow_target_mismatch: MismatchOpt = False,
    expected_name: NameOpt = None,
    allow_unencrypted: AllowUnencryptedOpt = False,
    weight_cache: WeightCacheOpt = "encrypted",
) -> None:
    """Verify an LLM bundle, open it from sealed memory, and chat: one prompt per line of stdin.

    Each reply is streamed as it is generated and sees the turns before it (the model's own
    chat template; ``--no-template`` sends each line as a bare prompt, without memory). An empty
    line, ``exit`` or end of input stops.
    """
    sampling: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature,
                                "seed": seed, "top_k": top_k, "top_p": top_p}  # fmt: skip
    check_generation_options(**sampling)
    check_weight_cache_option(weight_cache)
    with load_llm_bundle(
        bundle, trust, device_key, slip=slip, profile=profile, state_dir=state_dir,
        threads=threads, allow_target_mismatch=allow_target_mismatch,
        expected_name=expected_name, require_encryption=False if allow_unencrypted else None,
        weight_cache=weight_cache,
    ) as model, contextlib.ExitStack() as turns:  # fmt: skip
        conversation = turns.enter_context(model.chat(**sampling)) if template else None
        interactive = sys.stdin.isatty()
        say_loaded(model)
        if interactive:
            say("type a prompt and press Enter; an empty line or 'exit' ends", stderr=True)
        while True:
            if interactive:
                sys.stderr.write("> ")
                sys.stderr.flush()
            line = read_prompt_line()
            prompt = line.strip()
            if not line or not prompt or prompt == "exit":
                return
            try:
                pieces = (
                    conversation.reply(prompt)
                    if conversation is not None
                    else model.stream(prompt, **sampling)
                )
            except InferenceInputError as exc:
                if not interactive:
                    raise  # a script gets the exit code
                # At a terminal, a prompt too long (or not text) does not end the conversation.
                warn(exc.diagnostics())
                continue
            try:
                stream_reply(pieces)
            except InferenceInputError as exc:
                if not interactive or conversation is None:
                    raise  # a script gets the exit code (72)
                # At a terminal, a conversation that filled the context starts over, and the
                # prompt it could not answer is the new chat's first.
                warn(exc.diagnostics())
                conversation.close()
                conversation = turns.enter_context(model.chat(**sampling))
                say("started a new chat (the earlier turns are forgotten)", stderr=True)
                stream_reply(conversation.reply(prompt))
