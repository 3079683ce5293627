"""The arrows between the parts of edge_sdk (shared/DESIGN.md), checked over the import graph.

A board installs only the device extra: nothing the device path imports may reach host
conversion, fleet tooling or the CLI (and through them TensorFlow, typer's rich tables, asyncssh
or python-tuf). Every ``edge_sdk`` import counts, including the ones inside functions (the lazy
imports that keep start-up fast are still dependencies). A new module must be given a part here.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

PARTS = {
    "cli": ["edge_sdk.cli", "edge_sdk.__main__"],
    "host": ["edge_sdk.convert", "edge_sdk.pruning", "edge_sdk.packaging", "edge_sdk.sealing",
             "edge_sdk.config", "edge_sdk.provenance", "edge_sdk.model_signature"],
    "fleet": ["edge_sdk.deploy", "edge_sdk.transports", "edge_sdk.inventory", "edge_sdk.agent",
              "edge_sdk.tuf_repo", "edge_sdk.audit", "edge_sdk.provenance_policy", "edge_sdk.fleet"],
    "device": ["edge_sdk.runtime", "edge_sdk.interpreter", "edge_sdk.state", "edge_sdk.audit_log",
               "edge_sdk.watch",
               "edge_sdk.doctor", "edge_sdk.benchmark"],
    # compat reads a .tflite without TensorFlow: the device uses it for the runtime check.
    "reader": ["edge_sdk.compat", "edge_sdk.op_versions"],
    "format": ["edge_sdk.bundle", "edge_sdk.manifest", "edge_sdk.strict_json", "edge_sdk.signing",
               "edge_sdk.encryption", "edge_sdk.keys", "edge_sdk.verify", "edge_sdk.compression",
               "edge_sdk.hashing", "edge_sdk.memory", "edge_sdk.files",
               # keys held in hardware: read by keys, used by signing and encryption
               "edge_sdk.key_uri", "edge_sdk.pkcs11", "edge_sdk.tpm", "edge_sdk.hpke_delegated",
               "edge_sdk.native_isolation", "edge_sdk.attestation", "edge_sdk.format"],
    "base": ["edge_sdk.errors", "edge_sdk.profiles", "edge_sdk.native_output"],
    # The package root only re-exports the device API, lazily.
    "api": ["edge_sdk"],
}  # fmt: skip
MAY_USE = {
    "cli": {"cli", "host", "fleet", "device", "reader", "format", "base", "api"},
    "host": {"host", "device", "reader", "format", "base", "api"},
    "fleet": {"fleet", "device", "reader", "format", "base", "api"},
    "device": {"device", "reader", "format", "base", "api"},
    "reader": {"reader", "format", "base"},
    "format": {"format", "base"},
    "base": {"base"},
    "api": {"device", "base"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            if node.module:
                found.add(".".join([*base, node.module]))
            else:
                found.update(".".join([*base, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edge_sdk"):
            found.add(str(node.module))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edge_sdk"))
    return found


def _part(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for part, prefixes in PARTS.items():
        for prefix in prefixes:
            # The package root is its own part; it is not a prefix of every module.
            matches = module == prefix or (prefix != "edge_sdk" and module.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), part)
    return best[1] if best else None


def _graph() -> dict[str, set[str]]:
    return {
        _module_name(path): _imports(path, _module_name(path))
        for path in sorted((REPO / "edge_sdk").rglob("*.py"))
    }


def test_every_module_has_a_part() -> None:
    unplaced = [m for m in _graph() if _part(m) is None]
    assert not unplaced, f"give these modules a part in {__file__}: {unplaced}"


def test_the_arrows_point_one_way() -> None:
    graph = _graph()
    wrong = []
    for module, imports in graph.items():
        source = _part(module)
        for target in imports:
            # `from . import load` names an attribute of the package, not a module.
            name = target if target in graph else target.rsplit(".", 1)[0]
            dest = _part(name)
            if source and dest and dest not in MAY_USE[source]:
                wrong.append(f"{module} ({source}) imports {target} ({dest})")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli() -> None:
    graph = _graph()
    users = [
        m
        for m, imports in graph.items()
        if _part(m) != "cli" and any(_part(i) == "cli" for i in imports)
    ]
    assert users == [], users


def test_the_check_can_fail() -> None:
    # The checker itself: a device module importing the CLI or host conversion is caught.
    assert (
        "cli" not in MAY_USE["device"]
        and "host" not in MAY_USE["device"]
        and "fleet" not in MAY_USE["device"]
    )
    assert _part("edge_sdk.cli.package") == "cli" and _part("edge_sdk.runtime") == "device"
    assert _imports(REPO / "edge_sdk" / "watch.py", "edge_sdk.watch") >= {"edge_sdk.runtime"}
