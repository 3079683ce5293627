"""README.md, executed: every shell and Python block, in order, as a new user would type them.

The blocks run one after another in one fresh directory (state carries over, as it does for a
person following the page), with ``HOME`` inside it and nothing of the checkout on ``PATH``. The
documented fixture preamble puts there what the README tells the reader to bring:

* ``dist/edgepkg-<version>-py3-none-any.whl`` — the wheel built from the committed tree (the
  README's first block builds it; that block is covered by tests/test_wheel.py);
* ``demo_model.py`` (copied from ``tools/``) and ``digits.h5``, ``calibration.npz``, ``eval.npz``,
  ``sample.npy`` — what it writes (a small CNN trained on scikit-learn's digits, and data from the same set);
* ``EDGE_SDK_STATE_DIR`` pointing inside the directory (as root, the default state directory is the
  machine's ``/var/lib/edge-sdk``).

Shell blocks run with ``bash -euo pipefail``; Python blocks with the Python of the ``.venv`` the
README's install block creates. A block preceded by ``<!-- readme-test: skip: REASON -->`` is not
run (it needs hardware or a network this machine does not have) and must say why; a block
preceded by ``<!-- readme-test: file NAME -->`` is written to ``NAME`` instead of run (a TOML file
the page asks the reader to create). Other languages (``toml``, ``text``) are data, not commands.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO, Dist

README = REPO / "README.md"
_FENCE = re.compile(
    r"(?:<!--\s*readme-test:\s*(?P<mark>.*?)\s*-->\s*\n)?^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```\s*$",
    re.S | re.M,
)
SHELL = ("bash", "sh", "shell", "console")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str
    mark: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    return [
        Block(
            text.count("\n", 0, m.start("body")), m.group("lang"), m.group("body"), m.group("mark")
        )
        for m in _FENCE.finditer(text)
    ]


def test_the_parser_sees_marks_and_blocks() -> None:
    sample = "a\n<!-- readme-test: skip: no board here -->\n```bash\necho hi\n```\n\n```python\nprint(1)\n```\n"
    blocks = readme_blocks(sample)
    assert [(b.lang, b.mark, b.body) for b in blocks] == [
        ("bash", "skip: no board here", "echo hi\n"),
        ("python", None, "print(1)\n"),
    ]


def test_every_skip_says_why() -> None:
    for block in readme_blocks():
        if block.mark is None:
            continue
        kind, _, reason = block.mark.partition(":")
        assert kind.strip() in ("skip", "file"), f"{block}: unknown mark {block.mark!r}"
        assert len(reason.strip()) >= 10, (
            f"{block}: a skipped block must say why it cannot run here"
        )
    runnable = [b for b in readme_blocks() if b.lang in (*SHELL, "python") and b.mark is None]
    assert len(runnable) >= 6  # the page is mostly commands that run


def test_the_documented_load_signature_is_the_real_one() -> None:
    from edge_sdk.device.runtime import load

    text = README.read_text()
    match = re.search(r"`edge_sdk\.load\((.*?)\)` runs every check", text, re.S)
    assert match, "the README documents edge_sdk.load's signature"
    documented = [p.split("=")[0].strip() for p in match.group(1).replace("\n", " ").split(",")]
    documented = [p for p in documented if p not in ("*", "")]
    assert documented == list(inspect.signature(load).parameters), documented


def test_the_install_check_can_fail() -> None:
    assert _strangers("run `pip install 'edge-sdk[device]'` now") and _strangers(
        "pip install edge-sdk"
    )
    assert _strangers("pip install 'edgepkg[tpm]'") and not _strangers(
        'pip install "dist/edgepkg-1.0.whl[tpm]"'
    )
    assert not _strangers(
        'pip install "dist/edgepkg-0.2.0-py3-none-any.whl[tuf]"\nedge-sdk repo init'
    )


def _strangers(text: str) -> list[str]:
    """Install lines that would resolve a name on PyPI instead of installing our wheel: the name
    edge-sdk (somebody else's project), or edgepkg without a path to the wheel."""
    return re.findall(r"pip install[^\n`]*?[ '\"](?:edge-sdk|edgepkg)(?:\[|[ '\"]|$)", text, re.M)


def test_no_install_line_fetches_a_strangers_package() -> None:
    for path in [README, *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        # "edge-sdk" on PyPI is an unrelated project: a line like `pip install edge-sdk[...]`
        # (or 'edge-sdk[...]') would install it.
        bad = _strangers(text)
        assert not bad, f"{path.name}: {bad}"


@pytest.fixture(scope="module")
def sandbox(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture preamble above: the wheel and the demo's model and data files."""
    from tools.demo_model import write_demo

    root = tmp_path_factory.mktemp("readme")
    (root / "dist").mkdir()
    shutil.copy2(dist.wheel, root / "dist" / dist.wheel.name)
    shutil.copy2(REPO / "tools" / "demo_model.py", root / "demo_model.py")
    (root / "home").mkdir()
    write_demo(root)
    return root


def _env(root: Path) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EDGE_SDK_", "VIRTUAL_ENV", "PYTHON", "XDG_"))
    }
    path = [p for p in keep.get("PATH", "").split(os.pathsep) if p and not p.startswith(str(REPO))]
    # EDGE_SDK_STATE_DIR: as root (CI) the default state directory is /var/lib/edge-sdk, which a
    # test must not share with the machine; the README documents the variable.
    return {**keep, "HOME": str(root / "home"), "PATH": os.pathsep.join([str(root / ".venv" / "bin"), *path]),
            "COLUMNS": "200", "EDGE_SDK_STATE_DIR": str(root / "state")}  # fmt: skip


def test_the_readme_runs_as_written(sandbox: Path) -> None:
    ran, skipped = 0, 0
    for block in readme_blocks():
        if block.mark and block.mark.startswith("file"):
            (sandbox / block.mark.split(None, 1)[1].strip()).write_text(block.body)
            continue
        if block.lang not in (*SHELL, "python"):
            continue
        if block.mark and block.mark.startswith("skip"):
            skipped += 1
            continue
        if block.lang == "python":
            command = [str(sandbox / ".venv" / "bin" / "python"), "-c", block.body]
        else:
            command = ["bash", "-euo", "pipefail", "-c", block.body]
        done = subprocess.run(command, cwd=sandbox, env=_env(sandbox), capture_output=True, text=True,
                              timeout=900, check=False)  # fmt: skip
        assert done.returncode == 0, (
            f"{block} failed with exit {done.returncode}:\n{block.body}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}"
        )
        assert "Traceback" not in done.stderr, f"{block}:\n{done.stderr[-3000:]}"
        ran += 1
    assert ran >= 6 and skipped >= 1
