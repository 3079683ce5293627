"""TUF commands: ``repo`` (publisher side) and ``agent`` (device side)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_sdk.errors import UsageError

from ._common import (
    JsonOpt,
    ProfileOpt,
    TrustOpt,
    app,
    human_size,
    kv,
    load_private,
    print_json,
    publisher_signers,
    publisher_trust,
    say,
    table,
    warn,
)

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
        print_json(status.to_dict())
        return
    table("roles", ["role", "version", "expires", "threshold", "keys", "available"], [
        [r.name, str(r.version), f"{r.expires:%Y-%m-%d %H:%M}Z", str(r.threshold),
         " ".join(k[:16] for k in r.keyids), str(r.keys_available)]
        for r in status.roles
    ])  # fmt: skip
    table("targets", ["name", "version", "digest", "groups", "hardware", "size"], [
        [t.name, str(t.version), t.digest[:16], " ".join(t.groups) or "(all)",
         " ".join(t.hardware_ids) or "(any)", human_size(t.length)]
        for t in status.targets
    ])  # fmt: skip
    for warning in status.warnings:
        warn(warning)


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

    from edge_sdk.fleet.tuf_repo import init_repo

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
        say(
            f"ship {directory / 'metadata' / '1.root.json'} in the device image; "
            f"move {root_keys or directory / 'root-keys'} offline"
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
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            help="The publisher keys devices trust (.pub or trust directory); each bundle must "
            "verify against them before it is published. Default: the project's signing key."
        ),
    ] = None,
    slips: Annotated[
        Path | None,
        typer.Option(
            "--slips",
            help="The release's key slips ('edge-sdk slips issue --out DIR'): each device gets "
            "its own through the repository's hashed bins.",
        ),
    ] = None,
    devices: Annotated[
        list[Path] | None,
        typer.Option(
            "--devices",
            help="Issue a slip for every device key here (.pub file or directory; repeatable) "
            "and publish them: one command for the whole fleet (needs --opener, --signing-key).",
        ),
    ] = None,
    opener: Annotated[
        str | None,
        typer.Option(help="With --devices: a recipient key of the bundle (the escrow key)."),
    ] = None,
    signing_key: Annotated[
        list[str] | None,
        typer.Option(
            help="With --devices: publisher key(s) signing the slips, ones that signed the "
            "bundle (default: the project's, from edge-sdk init); repeatable."
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            help="With --devices: key id (or .pub) of a revoked device, which gets no slip."
        ),
    ] = None,
    keep_slips: Annotated[
        int, typer.Option(help="Releases per name whose slips the bins keep.")
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Add bundles as targets; signs new targets, snapshot and timestamp metadata."""
    from edge_sdk.fleet.tuf_repo import publish

    by_key = _release_slips(bundles, slips, devices, opener, signing_key, exclude)
    result = publish(bundles, repo, group, keep=keep, trust=publisher_trust(trust, "repo publish"),
                     slips=by_key, keep_slips=keep_slips)  # fmt: skip
    if as_json:
        print_json({
            "published": [{"path": t.path, "length": t.length, **t.to_custom()} for t in result.published],
            "versions": dict(result.versions), "slips": result.slips, "bins": result.bins,
        })  # fmt: skip
        return
    table(None, ["name", "version", "digest", "groups", "size", "target"], [
        [t.name, str(t.version), t.digest[:16], " ".join(t.groups) or "(all)", human_size(t.length), t.path]
        for t in result.published
    ])  # fmt: skip
    say(", ".join(f"{role} v{v}" for role, v in result.versions.items()))
    if result.slips:
        say(f"{result.slips} key slip(s) in {result.bins} hashed bins")


def _release_slips(
    bundles: list[Path],
    slips: Path | None,
    devices: list[Path] | None,
    opener: str | None,
    signing_key: list[str] | None,
    exclude: list[str] | None,
) -> dict[str, bytes] | None:
    """The slips ``repo publish`` was given or asked to issue, by device key id (None: none)."""
    if slips is not None and devices:
        raise UsageError("--slips and --devices exclude each other")
    if (opener or signing_key or exclude) and not devices:
        raise UsageError("--opener, --signing-key and --exclude go with --devices")
    if slips is not None:
        from edge_sdk.fleet.tuf_repo import read_slip_dir

        return read_slip_dir(slips)
    if not devices:
        return None
    if opener is None:
        raise UsageError(
            "--devices needs --opener: a device key the bundle is encrypted for (the escrow key)",
            hint="make one with 'edge-sdk keys generate --kind device --out escrow' and package "
            "with --recipient escrow.pub (it opens the release once, to issue the slips)",
        )
    if len(bundles) != 1:
        raise UsageError("key slips are published with one bundle at a time")
    from edge_sdk.fleet.key_slips import content_key_of, issue_key_slips, load_device_keys
    from edge_sdk.format.bundle import read_bundle
    from edge_sdk.keys import load_public_key

    sealed = read_bundle(bundles[0])
    key = content_key_of(sealed, load_private(opener, "device"))
    signers = publisher_signers(signing_key, "repo publish --devices")
    revoked = {
        load_public_key(e, kind="device").key_id if e.endswith(".pub") else e for e in exclude or []
    }
    fleet = [d for d in load_device_keys(devices) if d.key_id not in revoked]
    return {device.key_id: raw for device, raw in issue_key_slips(sealed, key, fleet, signers)}


@repo_app.command("refresh")
def repo_refresh(
    repo: RepoOpt,
    force: Annotated[bool, typer.Option(help="Re-sign every online role now.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-sign roles that expire soon (run hourly from cron)."""
    from edge_sdk.fleet.tuf_repo import refresh

    result = refresh(repo, force=force)
    if as_json:
        print_json({"resigned": dict(result.resigned), "warnings": list(result.warnings)})
        return
    done = ", ".join(f"{role} v{v}" for role, v in result.resigned.items())
    say(f"re-signed {done}" if done else "nothing due")
    for warning in result.warnings:
        warn(warning)


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
    from edge_sdk.fleet.tuf_repo import rotate_key

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
        print_json(result)
        return
    kv(f"{role} key rotated", [
        ("added", " ".join(change.added)), ("removed", " ".join(change.removed)),
        ("threshold", str(change.threshold)),
        ("new versions", ", ".join(f"{r} v{v}" for r, v in change.versions.items())),
    ])  # fmt: skip


@repo_app.command("status")
def repo_status(repo: RepoOpt, root_keys: RootKeysOpt = None, as_json: JsonOpt = False) -> None:
    """Roles, versions, expiries, thresholds, key availability and targets."""
    from edge_sdk.fleet.tuf_repo import status as get_repo_status

    _repo_status(get_repo_status(repo, root_keys=root_keys), as_json)


def _agent_result(result: Any, as_json: bool) -> None:
    if as_json:
        print_json({
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
        warn(f"poll failed: {result.error.message}")
        return
    table(None, ["name", "status", "version", "previous", "reason"], [
        [o.name, o.status, str(o.version or ""), o.previous or "", o.reason or ""] for o in result.outcomes
    ])  # fmt: skip
    say(f"{result.requests} request(s), {human_size(result.bytes)} in {result.elapsed:.2f} s")


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
    profile: ProfileOpt = None,
    device_key: Annotated[
        str | None,
        typer.Option(
            help="This device's key (file, pkcs11: or tpm2: reference): every release is opened "
            "in memory before it is installed, and signed-only releases are refused."
        ),
    ] = None,
    allow_unencrypted: Annotated[
        bool,
        typer.Option("--allow-unencrypted", help="Accept signed-only releases with --device-key."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Pull updates from a TUF repository: verify (TUF and bundle signatures), install, roll back."""
    from edge_sdk.fleet.agent import Agent
    from edge_sdk.keys import TrustStore

    if once and interval is not None:
        raise UsageError("--once and --interval exclude each other")
    device = Agent(
        repo, root, state_dir, install_dir, TrustStore.load(trust),
        group=group, hardware_ids=hardware_id or None, health_check=health_check, profile=profile,
        device_key=load_private(device_key, "device") if device_key else None,
        allow_unencrypted=allow_unencrypted,
    )  # fmt: skip
    if interval is None:
        result = device.poll()
        _agent_result(result, as_json)
        if result.errors and as_json:
            raise typer.Exit(result.errors[0].exit_code)  # the JSON above already says why
        result.raise_for_errors()
        return
    device.run(interval, on_poll=lambda result: _agent_result(result, as_json))
