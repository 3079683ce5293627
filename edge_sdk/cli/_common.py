"""What every command group shares: the app, option types, rendering and key prompts.

Only the CLI imports typer and rich; rich is imported inside the functions that draw, so
``edge-sdk --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from edge_sdk.errors import EdgeSDKError, KeyFileError, UsageError, escape_text

#: The order of ``edge-sdk --help``: the way a project uses the tool, first to last.
COMMAND_ORDER = (
    "init", "keys", "profiles", "package", "inspect", "verify", "recipients", "deploy", "status",
    "rollback", "audit", "run", "bench", "doctor", "repo", "agent",
)  # fmt: skip


class _OrderedGroup(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        known = super().list_commands(ctx)
        return [c for c in COMMAND_ORDER if c in known] + [
            c for c in known if c not in COMMAND_ORDER
        ]


app = typer.Typer(
    cls=_OrderedGroup,
    name="edge-sdk",
    help="Take a trained model to a fleet of edge boards: package, verify, deploy, run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # private keys must never appear in a traceback
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        from edge_sdk import __version__

        sys.stdout.write(f"edge-sdk {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Take a trained model to a fleet of edge boards: package, verify, deploy, run."""


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ProjectTrustOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--trust",
        help="Trusted signing public key (.pub) or trust directory; repeatable (default: the "
        "project's signing key from edge-sdk.toml).",
    ),
]
TrustOpt = Annotated[
    list[Path],
    typer.Option(
        "--trust", help="Trusted signing public key (.pub) or a trust directory; repeatable."
    ),
]


DeviceKeyOpt = Annotated[
    str | None,
    typer.Option(
        help="This device's private key: a key file, a pkcs11: URI or a tpm2: reference "
        "(for encrypted bundles; docs/KEYS.md)."
    ),
]
SlipOpt = Annotated[
    Path | None,
    typer.Option(help="This device's key slip for the bundle (default: the .edgeslip beside it)."),
]
ProfileOpt = Annotated[
    str | None, typer.Option(help="This board's profile (threads, delegates, target check).")
]
StateOpt = Annotated[Path | None, typer.Option(help="Anti-rollback state and audit log directory.")]
StrictOpt = Annotated[
    bool, typer.Option("--strict-delegates", help="A delegate that fails to load is an error.")
]
NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="The bundle name you expect; another is refused (default: from the deploy layout "
        "NAME/current).",
    ),
]
AllowUnencryptedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unencrypted", help="Accept a signed-only bundle although a device key is given."
    ),
]
MismatchOpt = Annotated[
    bool, typer.Option("--allow-target-mismatch", help="Testing: skip the target check.")
]


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


# -- rendering helpers ------------------------------------------------------------------------


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def console(stderr: bool = False) -> Any:
    """A rich console that never reads markup or emoji codes in what it prints.

    Nearly everything we print holds text we did not write (file names, manifest fields, tensor
    names, symlink targets, log records): with markup on, ``[/x]`` in such a string crashes the
    command with a MarkupError and ``[link=…]`` emits an OSC 8 hyperlink. Styles we want are
    given as ``style=``, never as markup.
    """
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)
    if not out.is_terminal:
        # Piped output: never wrap a 64-digit key id or digest in the middle.
        out.width = max(out.width, 160)
    return out


def plain(text: str) -> Any:
    """Untrusted text as a rich ``Text``: control characters escaped, markup never parsed.

    Tables, titles, spinners and progress bars parse a ``str`` as markup whatever the console
    says, so every string handed to one of them goes through here.
    """
    from rich.text import Text

    return Text(safe(text))


def table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(
        title=None if title is None else plain(title), show_header=True, header_style="bold"
    )
    for col in columns:
        table.add_column(plain(col), overflow="fold")
    for row in rows:
        table.add_row(*(plain(cell) for cell in row))
    console().print(table)


def kv(title: str, pairs: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=plain(title), show_header=False, box=None, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(plain(key), plain(value))
    console().print(table)


def safe(text: str, *, keep_newlines: bool = False) -> str:
    """Text that may come from a bundle or file, with every control character escaped.

    C0 and C1 controls (ESC, CSI 0x9b, OSC …), DEL and line separators could move the cursor,
    rewrite the terminal title or fake table rows; they are shown as ``\\xNN``. Newlines survive
    only where we put them ourselves (an error's hint line).
    """
    if keep_newlines:
        return "\n".join(escape_text(line) for line in text.split("\n"))
    return escape_text(text)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def say(line: str, *, stderr: bool = False, style: str | None = None) -> None:
    """Print one line that may hold names from files, literally (escaped, never markup)."""
    console(stderr=stderr).print(plain(line), style=style)


def warn(message: str) -> None:
    say(f"warning: {message}", stderr=True, style="yellow")


# -- key loading with passphrase prompt -----------------------------------------------------------


def load_private(path: Path | str, kind: str) -> Any:
    """A private key file (prompting for its passphrase on a terminal), or a token/TPM key."""
    from edge_sdk.keys import load_private_key
    from edge_sdk.keys.key_uri import is_key_reference

    if is_key_reference(path):
        return load_private_key(path, kind=kind)  # type: ignore[arg-type]
    try:
        return load_private_key(path, kind=kind)  # type: ignore[arg-type]
    except KeyFileError as exc:
        if "no passphrase was given" not in exc.message or not sys.stdin.isatty():
            raise
    passphrase = typer.prompt(f"Passphrase for {path}", hide_input=True)
    return load_private_key(path, kind=kind, passphrase=passphrase.encode())  # type: ignore[arg-type]


def parse_expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--expires {text!r} is not a date", hint="use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and abs(value) < 1e300 else None


def pruning_line(report: Any) -> str:
    """The pruning report of a manifest in one line; a report of another shape is said to be so
    (it is signed, but written by whoever held the key: never trust its shape)."""
    if not isinstance(report, dict):
        return "not pruned"
    sparsity, weights = _number(report.get("sparsity")), _number(report.get("prunable_weights"))
    if sparsity is None or weights is None:
        return "pruned (report not readable; see inspect --json)"
    tuned = report.get("fine_tune")
    epochs = _number(tuned.get("epochs")) if isinstance(tuned, dict) else None
    how = f"{str(report.get('mode', '?'))[:20]}, " + (
        f"fine-tuned {epochs:.0f} epochs" if epochs else "post-training"
    )
    return f"{sparsity:.1%} of {weights:,.0f} prunable weights are zero ({how})"


def ssh_options(identity: Path | None, known_hosts: Path | None, accept_new: bool, port: int | None,
                 connect_timeout: float) -> Any:  # fmt: skip
    from edge_sdk.fleet.transports import SshOptions

    return SshOptions(identity=identity, known_hosts=known_hosts, accept_new_host_keys=accept_new, port=port,
                      connect_timeout=connect_timeout)  # fmt: skip


def select_devices(target: str | None, inventory: Path | None, devices: list[str] | None, groups: list[str] | None,
             ssh: Any) -> list[Any]:  # fmt: skip
    """``--target`` (as a one-device fleet), the selected inventory devices, or — with neither —
    the ``[deploy]`` target or inventory of the project's edge-sdk.toml."""
    from edge_sdk.fleet.inventory import Device, load_inventory

    if target is not None and inventory is not None:
        raise UsageError("give --target or --inventory, not both")
    if target is None and inventory is None:
        from edge_sdk.host.config import find_config

        config = find_config()
        if config is not None and (config.deploy_target or config.deploy_inventory):
            target, inventory = config.deploy_target, config.deploy_inventory
            groups = groups or list(config.deploy_groups)
        else:
            raise UsageError(
                "where to? give --target DIR|ssh://user@host/path or --inventory fleet.toml",
                hint="or set [deploy] target or inventory in edge-sdk.toml",
            )
    if target is not None:
        if devices or groups:
            raise UsageError("--device and --group select from an --inventory")
        return [Device(name=target, target=target, ssh=ssh)]
    assert inventory is not None
    return list(load_inventory(inventory).select(devices or [], groups or []))


def select_targets(target: str | None, inventory: Path | None, devices: list[str] | None, groups: list[str] | None,
             ssh: Any) -> list[Any]:  # fmt: skip
    """The devices of :func:`select_devices`, as deploy targets."""
    return [d.open_target() for d in select_devices(target, inventory, devices, groups, ssh)]


def counter(show: bool, label: str) -> Any:
    """A context manager yielding ``progress(count)``, drawn on stderr when it is a terminal."""
    import contextlib

    @contextlib.contextmanager
    def run() -> Any:
        err = console(stderr=True)
        if not show or not err.is_terminal:
            yield lambda _n: None
            return
        with err.status(plain(label)) as status:
            yield lambda n: status.update(plain(f"{label}: {n} done"))

    return run()


def publisher_trust(paths: list[Path] | None, command: str, threshold: int | None = None) -> Any:
    """The trust store a host-side command checks bundles against.

    ``--trust`` when given, else the public key of the project's signing key (``edge-sdk init``);
    with neither, the command refuses rather than check against nothing.
    """
    from edge_sdk.keys import TrustStore

    if paths:
        return TrustStore.load(paths, threshold=threshold)
    from edge_sdk.host.config import find_config

    config = find_config()
    if config is not None and config.signing_public is not None:
        return TrustStore.load([config.signing_public], threshold=threshold)
    raise UsageError(
        f"{command} checks bundles against the publisher's keys: give --trust PUBLISHER.pub",
        hint="or run 'edge-sdk init' so the project's signing key is the default",
    )


def publisher_signers(paths: list[str] | None, command: str) -> list[Any]:
    """The signing keys a host-side command signs with: ``--signing-key`` when given, else the
    project's (``edge-sdk init``, from edge-sdk.toml), as ``package`` does."""
    if not paths:
        from edge_sdk.host.config import find_config

        config = find_config()
        if config is None or config.signing_key is None:
            raise UsageError(
                f"{command} signs with the publisher's key: give --signing-key PUBLISHER.key",
                hint="or run 'edge-sdk init' so the project's signing key is the default",
            )
        paths = [str(config.signing_key)]
    return [load_private(p, "signing") for p in paths]


def exit_code_of(errors: list[EdgeSDKError]) -> int:
    """A fleet command's exit code: the documented code of its failures when they agree (e.g.
    80 when every failure was the network), else 1."""
    codes = {e.exit_code for e in errors}
    return codes.pop() if len(codes) == 1 else 1
