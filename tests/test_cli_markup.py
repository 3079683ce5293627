"""Names from files reach the terminal literally: rich never reads them as markup.

With markup on, ``[/bogus]`` in a file name, manifest field, tensor name, log record or symlink
target crashed the command with a raw MarkupError, and ``[link=…]…[/link]`` drew an OSC 8
hyperlink the publisher chose. Each sink below runs through the real CLI on a console that
renders styles (as a terminal would), with both names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from edge_sdk.device.audit_log import AuditLog
from edge_sdk.format.manifest import Target, TensorSpec

from .conftest import KeySet, make_bundle_bytes

NAMES = ["[/bogus]", "[link=http://x]y[/link]"]
#: The same names as paths can spell them (a path has no empty component: '//' is one '/').
PATHS = ["[/bogus]", "[link=http:/x]y[/link]"]
OSC8 = "\x1b]8;"


@pytest.fixture(autouse=True)
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make rich render styles and links as it does on a real terminal (stdout is captured)."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)


def _planted(root: Path, name: str, data: bytes) -> Path:
    """A file whose *path* spells ``name`` (a '/' in it becomes a directory boundary)."""
    path = root / f"{name}.edgepkg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _literal(result: Any, *expected: str) -> None:
    text = result.out + result.err
    assert result.code == 0, result.err
    assert "MarkupError" not in text and OSC8 not in text
    for name in expected:
        assert name in text, (name, text)


def test_styles_are_really_rendered_here(cli: Any, keyset: KeySet, tmp_path: Path) -> None:
    # Without this the OSC 8 assertions below could pass on a console that drops all styles.
    from edge_sdk.cli._common import console

    assert console().is_terminal and console().color_system is not None


def test_audit_shows_planted_paths_literally(
    cli: Any, keyset: KeySet, key_files: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "bundles"
    for name in PATHS:
        _planted(root, name, make_bundle_bytes(keyset))
    result = cli("audit", root, "--trust", key_files["signer.pub"])
    _literal(result, *PATHS)


def test_inspect_shows_manifest_fields_and_tensor_names_literally(
    cli: Any, keyset: KeySet, tmp_path: Path
) -> None:
    for name, spelled in zip(NAMES, PATHS, strict=True):
        data = make_bundle_bytes(
            keyset,
            target=Target("x86_64", runtime_version=name),
            inputs=[TensorSpec(f"in{name}", (1, 4), "float32")],
            outputs=[TensorSpec(f"out{name}", (1, 2), "float32")],
            reports={f"r{name}": {name: name}},
        )
        path = _planted(tmp_path / "b", spelled, data)
        result = cli("inspect", path)
        _literal(
            result, str(path), f"ai-edge-litert {name}", f"input in{name}", f"out{name}", f"r{name}"
        )


def test_audit_log_shows_records_literally(cli: Any, tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    for name in NAMES:
        log.append("load", name=name, result="rejected", reason=f"because {name}")
    for _ in range(2):  # the record stays: every later run must still show it
        result = cli("audit", "log", tmp_path / "audit.log", "--verify")
        _literal(result, *NAMES, *(f"because {n}" for n in NAMES))


def test_status_shows_a_planted_current_link_literally(cli: Any, tmp_path: Path) -> None:
    root = tmp_path / "root"
    for index, name in enumerate(NAMES):
        folder = root / f"model{index}"
        (folder / "releases").mkdir(parents=True)
        os.symlink(name, folder / "current")
    result = cli("status", "--target", root)
    _literal(result, *NAMES)


def test_keys_show_and_recipients_name_a_planted_path_literally(
    cli: Any, keyset: KeySet, key_files: dict[str, Path], tmp_path: Path
) -> None:
    for name in PATHS:
        pub = tmp_path / "keys" / f"{name}.pub"
        pub.parent.mkdir(parents=True, exist_ok=True)
        pub.write_bytes(key_files["device2.pub"].read_bytes())
        _literal(cli("keys", "show", pub), str(pub))
        bundle = _planted(tmp_path / "b", name, make_bundle_bytes(keyset))
        result = cli("recipients", "add", bundle, "--device-key", key_files["device"],
                     "--recipient", pub)  # fmt: skip
        _literal(result, f"{bundle}: 2 recipient(s)")


def test_every_rich_sink_goes_through_the_literal_helpers() -> None:
    # The class, not the instances: a new command that prints a str to rich directly (or builds
    # its own Table, spinner or progress column) would parse markup again.
    import re

    cli_dir = Path(__file__).parent.parent / "edge_sdk" / "cli"
    offenders = []
    for source in sorted(cli_dir.glob("*.py")):
        text = source.read_text()
        if source.name != "_common.py":
            offenders += [f"{source.name}: {m}" for m in re.findall(r"\.print\(|Table\(", text)]
        offenders += [
            f"{source.name}: {m}"
            for m in re.findall(r"TextColumn\([^)]*\)", text)
            if "markup=False" not in m
        ]
        offenders += [f"{source.name}: {m}" for m in re.findall(r"\.status\(\"", text)]
    assert not offenders
