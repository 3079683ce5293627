"""Fleet commands: ``deploy``, ``rollback``, ``status``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_sdk.errors import EdgeSDKError, UsageError

from ._common import (
    AcceptNewOpt,
    DeviceOpt,
    GroupOpt,
    IdentityOpt,
    InventoryOpt,
    JsonOpt,
    KnownHostsOpt,
    PortOpt,
    TargetOpt,
    TimeoutOpt,
    app,
    console,
    exit_code_of,
    print_json,
    publisher_trust,
    safe,
    say,
    select_devices,
    select_targets,
    ssh_options,
    table,
    warn,
)


def _fleet_progress(show: bool) -> Any:
    """A context manager yielding a deploy progress callback: one bar per device on stderr."""
    import contextlib

    @contextlib.contextmanager
    def run() -> Any:
        err = console(stderr=True)
        if not show or not err.is_terminal:
            yield None
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        tasks: dict[str, Any] = {}
        # Device names and targets come from an inventory or a command line: shown, never parsed.
        with Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                      TextColumn("{task.fields[phase]}", markup=False), console=err) as bars:  # fmt: skip

            def update(event: Any) -> None:
                key = event.device or event.target
                if key not in tasks:
                    tasks[key] = bars.add_task(safe(key), total=None, phase="")
                phase = event.phase if event.result is None else event.result.status
                bars.update(
                    tasks[key], completed=event.sent, total=event.total or None, phase=safe(phase)
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
        typer.Option(
            help="Verify each bundle against these publisher keys first (default: the project's "
            "signing key from edge-sdk.toml)."
        ),
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
    slips: Annotated[
        Path | None,
        typer.Option(
            help="Key slips of the bundle (edge-sdk slips issue): each inventory device "
            "gets its own beside the release."
        ),
    ] = None,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_keys: AcceptNewOpt = False,
    port: PortOpt = None,
    connect_timeout: TimeoutOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """Install bundles on a target or a fleet: upload, check, switch `current` atomically."""
    from edge_sdk.fleet.deploy import DeployOptions, deploy_fleet, prepare_bundle
    from edge_sdk.fleet.transports import RetryPolicy

    ssh = ssh_options(identity, known_hosts, accept_new_host_keys, port, connect_timeout)
    options = DeployOptions(keep=keep, verify_remote=verify_remote, health_check=health_check,
                            health_timeout=health_timeout, allow_downgrade=allow_downgrade,
                            retry=RetryPolicy(attempts=retries))  # fmt: skip
    try:
        store = publisher_trust(trust, "deploy")
    except UsageError:
        store = None  # no --trust and no project key: integrity only, and said so
        if not as_json:
            warn(
                "the bundles are not checked against a publisher key (only their integrity): "
                "pass --trust PUBLISHER.pub, or run 'edge-sdk init' in this project"
            )
    prepared = [prepare_bundle(b, trust=store) for b in bundles]
    devices = select_devices(target, inventory, device, group, ssh)
    results: list[Any] = []
    stopped = False
    with _fleet_progress(not as_json) as progress:
        for bundle in prepared:
            fleet = deploy_fleet(bundle, devices, options, parallel=parallel, canary=canary,
                                 max_failures=max_failures, progress=progress,
                                 slips=slips)  # fmt: skip
            results.extend(fleet.results)
            stopped = stopped or fleet.stopped
    failed_count = sum(1 for r in results if r.status not in ("ok", "unchanged"))
    errors = [r.error for r in results if r.error is not None]
    if len(devices) == 1 and len(errors) == len(results) and errors:
        raise errors[0]  # one target: its error, message, hint and exit code, as every command
    if as_json:
        print_json({
            "ok": failed_count == 0 and not stopped,
            "stopped": stopped,
            "results": [{"device": r.device, "target": r.target, "name": r.name, "version": r.version,
                         "digest": r.digest, "status": r.status, "uploaded": r.uploaded, "file": r.file,
                         "previous": r.previous, "rolled_back": r.rolled_back, "reason": r.reason,
                         "error": r.error.kind if r.error else None, "elapsed": r.elapsed} for r in results],
        })  # fmt: skip
    else:
        table(None, ["device", "name", "version", "digest", "status", "uploaded", "time", "reason"],
               _deploy_rows(results))  # fmt: skip
        skipped = sum(1 for r in results if r.status == "skipped")
        say(f"{len(results) - failed_count} of {len(results)} deploy(s) succeeded"
                         + (f" (rollout stopped: {skipped} skipped)" if stopped and skipped else ""))  # fmt: skip
    if failed_count or stopped:
        raise typer.Exit(exit_code_of(errors))


def _each_target(
    targets: list[Any],
    one: Callable[[Any], list[dict[str, Any]]],
    failed: Callable[[Any, EdgeSDKError], dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[EdgeSDKError]]:
    """Rows from every target, and the failures. A single target's failure is raised as it is
    (its own message, hint and exit code); in a fleet it becomes that target's row."""
    rows: list[dict[str, Any]] = []
    errors: list[EdgeSDKError] = []
    for tgt in targets:
        try:
            rows.extend(one(tgt))
        except EdgeSDKError as exc:
            if len(targets) == 1:
                raise
            errors.append(exc)
            rows.append(failed(tgt, exc))
    return rows, errors


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
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            help="Roll back only to releases that verify against these publisher keys (default: "
            "the project's signing key from edge-sdk.toml)."
        ),
    ] = None,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_keys: AcceptNewOpt = False,
    port: PortOpt = None,
    connect_timeout: TimeoutOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """Switch `current` back to the previous (or a given) release."""
    from edge_sdk.fleet.deploy import rollback as do_rollback

    ssh = ssh_options(identity, known_hosts, accept_new_host_keys, port, connect_timeout)
    try:
        store = publisher_trust(trust, "rollback")
    except UsageError:
        store = None  # releases are then ordered by their file names, unverified

    def one(tgt: Any) -> list[dict[str, Any]]:
        result = do_rollback(name, tgt, to_version=to_version, ssh=ssh, trust=store)
        return [{"target": tgt.label, "ok": True, "from": result.from_file, "to": result.to_file,
                 "version": result.version}]  # fmt: skip

    rows, errors = _each_target(select_targets(target, inventory, device, group, ssh), one,
                                lambda tgt, exc: {"target": tgt.label, "ok": False, "error": exc.kind,
                                                  "reason": exc.message})  # fmt: skip
    if as_json:
        print_json({"ok": not errors, "results": rows})
    else:
        table(None, ["target", "result"], [
            [r["target"], f"{r['from']} → {r['to']} (v{r['version']})" if r["ok"] else f"FAILED: {r['reason']}"]
            for r in rows
        ])  # fmt: skip
    if errors:
        raise typer.Exit(exit_code_of(errors))


def _version_cell(row: dict[str, Any]) -> str:
    if row.get("version") is None:
        return ""
    return str(row["version"]) + ("" if row.get("verified") else " (unverified)")


@app.command()
def status(
    target: TargetOpt = None,
    inventory: InventoryOpt = None,
    device: DeviceOpt = None,
    group: GroupOpt = None,
    trust: Annotated[
        list[Path] | None,
        typer.Option(
            help="Verify what is current against these publisher keys (default: the project's "
            "signing key from edge-sdk.toml); without either, versions are shown unverified."
        ),
    ] = None,
    identity: IdentityOpt = None,
    known_hosts: KnownHostsOpt = None,
    accept_new_host_keys: AcceptNewOpt = False,
    port: PortOpt = None,
    connect_timeout: TimeoutOpt = 15.0,
    as_json: JsonOpt = False,
) -> None:
    """What each device runs: name, version, digest, when it was switched."""
    from edge_sdk.fleet.deploy import status as get_status

    ssh = ssh_options(identity, known_hosts, accept_new_host_keys, port, connect_timeout)
    try:
        store = publisher_trust(trust, "status")
    except UsageError:
        store = None  # versions are then what each manifest claims, marked unverified

    def one(tgt: Any) -> list[dict[str, Any]]:
        return [{"target": tgt.label, "name": rel.name, "version": rel.version, "digest": rel.digest,
                 "file": rel.file, "switched_at": rel.switched_at.isoformat() if rel.switched_at else None,
                 "releases": list(rel.releases), "problem": rel.problem, "verified": rel.verified}
                for rel in get_status(tgt, ssh=ssh, trust=store)]  # fmt: skip

    rows, errors = _each_target(select_targets(target, inventory, device, group, ssh), one,
                                lambda tgt, exc: {"target": tgt.label, "name": None,
                                                  "problem": f"{exc.kind}: {exc.message}"})  # fmt: skip
    if as_json:
        print_json({"ok": not errors, "releases": rows})
    else:
        table(None, ["target", "name", "version", "digest", "switched", "releases", "problem"], [
            [r["target"], r.get("name") or "", _version_cell(r), (r.get("digest") or "")[:16],
             r.get("switched_at") or "", str(len(r.get("releases") or [])), r.get("problem") or ""]
            for r in rows
        ])  # fmt: skip
    if errors:
        raise typer.Exit(exit_code_of(errors))
