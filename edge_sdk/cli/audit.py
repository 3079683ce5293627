"""``edge-sdk audit``: bundles on disk or on targets, and device audit logs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from edge_sdk.errors import UsageError

from ._common import (
    AcceptNewOpt,
    GroupOpt,
    IdentityOpt,
    InventoryOpt,
    JsonOpt,
    KnownHostsOpt,
    PortOpt,
    ProjectTrustOpt,
    TimeoutOpt,
    app,
    counter,
    print_json,
    publisher_trust,
    say,
    ssh_options,
    table,
    warn,
)


class _AsParent(typer.Context):
    """A context that reports its parent's command path (the hidden scan is `edge-sdk audit`)."""

    @property
    def command_path(self) -> str:
        return str(self.parent.command_path) if self.parent is not None else super().command_path


class _AuditGroup(TyperGroup):
    """``edge-sdk audit PATH…`` scans; ``edge-sdk audit log FILE`` reads a device log."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        # The scan is what `edge-sdk audit` does: show its arguments and options, then `log`.
        scan = self.commands["scan"]
        scan.format_usage(ctx, formatter)
        scan.format_help_text(ctx, formatter)
        scan.format_options(ctx, formatter)
        with formatter.section("Device audit logs"):
            formatter.write_dl([("edge-sdk audit log FILE [--verify] [--repair]",
                                 "Print, check or repair a device's hash-chained audit log.")])  # fmt: skip

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name, command, rest = super().resolve_command(ctx, args)
        if name == "scan" and command is not None:
            # The scan *is* `edge-sdk audit`: its usage lines and errors must not name a hidden
            # subcommand the user never typed.
            command.context_class = _AsParent
            return "", command, rest
        return name, command, rest

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
    trust: ProjectTrustOpt = None,
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
    require_provenance: Annotated[
        bool,
        typer.Option(
            "--require-provenance",
            help="Each bundle must carry a build attestation bound to it and signed by trust.",
        ),
    ] = False,
    policy: Annotated[
        Path | None,
        typer.Option(help="Provenance policy TOML (implies --require-provenance)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every bundle without a device key: one row each, a summary, an exit code."""
    from datetime import timedelta

    from edge_sdk.fleet.audit import audit_paths, failed, summarize, to_csv

    fmt = "json" if as_json else output_format
    if fmt not in ("table", "json", "csv"):
        raise UsageError(f"--format must be table, json or csv, not {fmt!r}")
    from edge_sdk.fleet.audit import audit_targets
    from edge_sdk.fleet.inventory import load_inventory
    from edge_sdk.fleet.transports import parse_target

    if not (paths or target or inventory):
        from edge_sdk.host.config import find_config

        # Nothing named: what this project deploys to (edge-sdk.toml's [deploy]), if anything.
        config = find_config()
        if config is not None and config.deploy_target:
            target = [config.deploy_target]
        elif config is not None and config.deploy_inventory:
            inventory, group = config.deploy_inventory, group or list(config.deploy_groups)
        else:
            raise UsageError("nothing to audit: give PATHs, --target or --inventory")
    store = publisher_trust(trust, "audit", threshold)
    provenance = None
    if policy is not None or require_provenance:
        from edge_sdk.fleet.provenance_policy import ProvenancePolicy

        provenance = ProvenancePolicy.load(policy) if policy is not None else ProvenancePolicy()
    ssh = ssh_options(identity, known_hosts, accept_new_host_keys, port, connect_timeout)
    remote = [parse_target(t, ssh=ssh) for t in target or []]
    if inventory is not None:
        remote += [d.open_target() for d in load_inventory(inventory).select((), group or [])]
    elif group:
        raise UsageError("--group selects devices from an --inventory")
    within = timedelta(days=expiring_days)
    with counter(fmt == "table", "Auditing") as progress:
        rows = audit_paths(
            paths or [], store, warn_within=within, progress=progress, provenance=provenance
        )
        rows += audit_targets(remote, store, warn_within=within, progress=progress,
                              provenance=provenance)  # fmt: skip
    summary = summarize(rows)
    bad = failed(rows, fail_on)
    if fmt == "json":
        print_json({"ok": not bad, "summary": summary, "rows": [r.to_dict() for r in rows]})
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows))
    else:
        extra = ["provenance"] if provenance is not None else []
        table(None, ["device", "path", "name", "version", "digest", "signers", *extra, "status", "reason"], [
            [r.device, r.path + (" (current)" if r.current else ""), r.name or "", str(r.version or ""),
             (r.digest or "")[:16], " ".join(k[:16] for k in r.signers), *([r.provenance] if extra else []),
             r.status.upper(), r.reason]
            for r in rows
        ])  # fmt: skip
        say(
            f"{summary['total']} bundle(s): {summary['ok']} ok, {summary['warning']} warning, "
            f"{summary['error']} error"
        )
    if bad:
        raise typer.Exit(1)


@audit_app.command("log")
def audit_log(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="The device's audit.log; rotated files are read too (default: this device's, in "
            "its state directory)."
        ),
    ] = None,
    verify_chain: Annotated[bool, typer.Option("--verify", help="Check the hash chain.")] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Recover a torn or unreadable last record (what the next load would do), "
            "keeping it as evidence.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print a device's audit log; with --verify, name the first broken record."""
    from edge_sdk.device.audit_log import AuditLog, log_files, read_log, verify_log
    from edge_sdk.device.state import default_state_dir

    path = path or default_state_dir() / "audit.log"
    files = log_files(path)
    if not files:
        raise UsageError(f"audit log {path} does not exist")
    if repair:
        done = AuditLog(path).repair()
        message = f"recovered {done.detail}" if done.action != "none" else "nothing to repair"
        if as_json:
            print_json({"ok": True, "action": done.action, "detail": done.detail})
        else:
            say(f"{path}: {message}")
        return
    report = read_log(files)
    if as_json:
        problem = report.problem
        print_json({"ok": report.ok, "records": list(report.records), "notes": list(report.notes),
                    "problem": None if problem is None else vars(problem)})  # fmt: skip
    else:
        table(None, ["seq", "time", "event", "name", "version", "result", "reason"], [
            [str(r.get("seq")), str(r.get("time", "")), str(r.get("event", "")), str(r.get("name", "")),
             str(r.get("version", "")), str(r.get("result", "")), str(r.get("reason", ""))]
            for r in report.records
        ])  # fmt: skip
        for note in report.notes:
            warn(note)
    if verify_chain:
        verify_log(path)  # raises AuditLogError naming the first break
        if not as_json:
            say(f"chain intact: {len(report.records)} record(s)")
