"""The arrows between the parts of edge_sdk (shared/DESIGN.md), checked over the import graph.

A module's part is the folder it is written in: ``edge_sdk/device/runtime.py`` is device, a file
directly in ``edge_sdk/`` is base, the package root is the public API. There is no table to keep:
a new module is placed by where it is written, and then it may import only what its part may.

A board installs only the device extra: nothing the device path imports may reach host
conversion, fleet tooling or the CLI (and through them TensorFlow, typer's rich tables, asyncssh
or python-tuf). Every ``edge_sdk`` import counts, including the ones inside functions (the lazy
imports that keep start-up fast are still dependencies) and the ones only type checkers run.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

from .conftest import REPO

#: The folders of edge_sdk/, each a part, and what each part may import (DESIGN.md's table).
MAY_USE = {
    "cli": {"cli", "host", "fleet", "device", "format", "keys", "base", "api"},
    "host": {"host", "device", "format", "keys", "base", "api"},
    "fleet": {"fleet", "device", "format", "keys", "base", "api"},
    "device": {"device", "format", "keys", "base", "api"},
    "format": {"format", "keys", "base"},
    "keys": {"keys", "base"},
    "base": {"base"},
    # The package root re-exports the device API (lazily) and the error tree.
    "api": {"device", "base"},
}


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_edges(path: Path, module: str) -> set[tuple[str, str]]:
    """(module, name) pairs this file imports from edge_sdk: ``name`` is "" for whole modules."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source.split(".")[0] in ("edge_sdk", "tools"):
                found.update((source, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update((a.name, "") for a in node.names if a.name.startswith("edge_sdk"))
    return found


def _graph(
    root: Path = REPO, package: str = "edge_sdk"
) -> tuple[dict[str, set[str]], dict[str, set[tuple[str, str]]]]:
    """Module → modules it imports, and module → (module, name) for names it imports."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    modules: dict[str, set[str]] = {}
    names: dict[str, set[tuple[str, str]]] = {}
    for module, path in files.items():
        edges = _import_edges(path, module)
        targets = set()
        for source, name in edges:
            # `from edge_sdk.device import runtime` names a module; `from x import load` does not.
            full = f"{source}.{name}" if name else source
            targets.add(full if full in files else source)
        modules[module] = {t for t in targets if t != module}
        names[module] = {(s, n) for s, n in edges if n and f"{s}.{n}" not in files}
    return modules, names


def part_of(module: str) -> str:
    parts = module.split(".")
    if module == "edge_sdk":
        return "api"
    if parts[1] == "__main__":
        return "cli"
    return parts[1] if len(parts) > 2 or parts[1] in MAY_USE else "base"


def forbidden_arrows(graph: Mapping[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in sorted(graph.items()):
        source = part_of(module)
        for target in sorted(targets):
            if part_of(target) not in MAY_USE[source]:
                wrong.append(f"{module} ({source}) imports {target} ({part_of(target)})")
    return wrong


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def private_imports(names: Mapping[str, set[tuple[str, str]]]) -> list[str]:
    return sorted(
        f"{module} imports {source}.{name}"
        for module, pairs in names.items()
        for source, name in pairs
        if name.startswith("_") and not name.startswith("__") and source != module
    )


def test_every_folder_is_a_part() -> None:
    folders = {p.name for p in (REPO / "edge_sdk").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(MAY_USE) - {"base", "api"}, "a new folder needs a row in MAY_USE"
    for folder in folders:
        doc = ast.get_docstring(ast.parse((REPO / "edge_sdk" / folder / "__init__.py").read_text()))
        assert doc and "May import" in doc, (
            f"edge_sdk/{folder}/__init__.py must say what it may import"
        )


def test_the_arrows_point_one_way() -> None:
    graph, _ = _graph()
    assert forbidden_arrows(graph) == []


def test_there_are_no_circles() -> None:
    graph, _ = _graph()
    assert circles(graph) == []


def test_no_module_imports_another_modules_private_names() -> None:
    _, names = _graph()
    assert private_imports(names) == []


def test_base_stays_small() -> None:
    # The base imports nothing of ours beyond itself; it is what every part may lean on.
    base = sorted(p.stem for p in (REPO / "edge_sdk").glob("*.py") if p.stem[0] != "_")
    assert base == ["errors", "files", "native_output", "profiles"]


def test_tools_have_no_circles() -> None:
    # The benchmark suites share helpers through one module that imports no suite.
    graph, _ = _graph(REPO, "tools")
    assert circles(graph) == []


def test_the_checks_can_fail() -> None:
    # Each checker over a made-up graph that breaks its rule.
    assert forbidden_arrows({"edge_sdk.device.runtime": {"edge_sdk.host.convert"}}) == [
        "edge_sdk.device.runtime (device) imports edge_sdk.host.convert (host)"
    ]
    assert forbidden_arrows({"edge_sdk.format.bundle": {"edge_sdk.cli.package"}})
    assert forbidden_arrows({"edge_sdk.errors": {"edge_sdk.keys.key_files"}})
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert private_imports({"edge_sdk.keys.tpm": {("edge_sdk.files", "_write")}})
    assert private_imports({"edge_sdk.agent": {("edge_sdk", "__version__")}}) == []
    assert (
        part_of("edge_sdk.fleet.transports.ssh") == "fleet" and part_of("edge_sdk.files") == "base"
    )
    assert part_of("edge_sdk") == "api" and part_of("edge_sdk.__main__") == "cli"
    # And the real graph is read: the watcher's lazy import of the runtime is an edge.
    graph, _ = _graph()
    assert (
        "edge_sdk.device.runtime" in graph["edge_sdk.device.watch"]
        or "edge_sdk" in graph["edge_sdk.device.watch"]
    )
