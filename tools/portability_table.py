"""Turn one run of ``tools/test_portability.sh`` into its table (markdown), and print it.

The stage writes it to ``.cache/portability/PORTABILITY.md``; ``docs/PORTABILITY.md`` is a copy
of that file from the last full run, committed by hand.

``python tools/portability_table.py RUN_DIR OUT.md`` reads, per environment directory of RUN_DIR,
the device suite's JUnit XML (pass/fail per test) and its JSON-lines report (parity figures,
runtime versions), plus the fixtures' manifest, and writes the table. An environment directory
holding a file ``unavailable`` (the reason) is an environment that cannot exist, shown as such. Its last line,
``portability: N passed, N failed``, counts device-suite tests over all environments.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The environments test_portability.sh builds, in table order: name → (arch label, runtime).
ENVIRONMENTS = {
    "x86_64-litert": ("x86_64", "ai-edge-litert"),
    "x86_64-tflite214": ("x86_64", "tflite-runtime"),
    "aarch64-litert": ("aarch64 Debian 12 (qemu, Cortex-A72)", "ai-edge-litert"),
    "aarch64-tflite214": ("aarch64 Debian 12 (qemu, Cortex-A72)", "tflite-runtime"),
    "aarch64-trixie-litert": ("aarch64 Debian 13 (qemu, Cortex-A72)", "ai-edge-litert"),
    "aarch64-trixie-tflite214": ("aarch64 Debian 13 (qemu, Cortex-A72)", "tflite-runtime"),
}
MODES = ("float32", "dynamic", "int8")
SECURITY = "rollback, audit log, bad inputs"
NO_TF = "no TensorFlow"
ZOO = "model zoo (batch 1, N, 0), Interpreter"


@dataclass
class Environment:
    """What one environment's run left behind."""

    name: str
    outcomes: dict[str, list[str]] = field(default_factory=dict)  # column → outcomes
    parity: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    unavailable: str = ""  # why this environment cannot exist at all
    seconds: dict[str, str] = field(default_factory=dict)


def _column(test: str) -> str:
    if test.startswith("test_parity_with_the_host["):
        return test.split("[", 1)[1].rstrip("]")
    if test == "test_tensorflow_never_enters_sys_modules":
        return NO_TF
    if test.startswith(("test_model_zoo", "test_interpreter")):
        return ZOO
    return SECURITY


def _read(run: Path, name: str) -> Environment:
    env = Environment(name)
    where = run / name
    for label in ("build", "run"):
        path = where / f"{label}.seconds"
        env.seconds[label] = path.read_text().strip() if path.exists() else "-"
    if (where / "unavailable").exists():
        env.unavailable = (where / "unavailable").read_text().strip()
        env.info = {"backend_version": "(none installable)"}
        return env
    if (where / "skipped").exists():
        env.problem = (where / "skipped").read_text().strip()
        return env
    junit = where / "junit.xml"
    if not junit.exists():
        env.problem = "the device suite did not start (see pytest.log)"
        return env
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            outcome = "skip"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "FAIL"
        else:
            outcome = "pass"
        env.outcomes.setdefault(_column(case.get("name", "")), []).append(outcome)
    report = where / "report.jsonl"
    for line in report.read_text().splitlines() if report.exists() else ():
        record = json.loads(line)
        if record["event"] == "environment":
            env.info = record
        elif record["event"] == "parity":
            env.parity.append(record)
    return env


def _cell(env: Environment, column: str) -> str:
    if env.unavailable:
        return "cannot exist"
    if env.problem:
        return "not run"
    outcomes = env.outcomes.get(column, [])
    if not outcomes:
        return "-"
    if "FAIL" in outcomes:
        verdict = f"**FAIL** ({outcomes.count('FAIL')}/{len(outcomes)})"
    elif all(o == "skip" for o in outcomes):
        return "skip"
    else:
        verdict = (
            "pass" if len(outcomes) == 1 else f"pass ({outcomes.count('pass')}/{len(outcomes)})"
        )
    figures = [p for p in env.parity if p.get("mode") == column]
    if column == "float32" and figures:
        verdict += f" · ≤ {_fmt(max(p['max_abs_err_vs_keras'] for p in figures))} vs Keras"
    elif column == "dynamic" and figures:
        verdict += f" · ≤ {_fmt(max(p['max_abs_err_vs_reference'] for p in figures))} vs ref."
    elif column == "int8" and figures:
        exact = all(p["identical_to_reference"] for p in figures)
        verdict += " · bit-exact" if exact else " · not bit-exact"
    return verdict


def _qemu() -> str:
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        return "qemu-aarch64 not installed"
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "qemu-aarch64 (unknown version)"


def _fmt(value: float) -> str:
    return "0" if value == 0 else f"{value:.1e}"


def render(run: Path) -> tuple[str, Counter[str], list[str]]:
    """The markdown for ``run``, the outcome counts, and the environments that did not run."""
    fixtures = json.loads((run / "fixtures" / "fixtures.json").read_text())
    envs = [_read(run, name) for name in ENVIRONMENTS]
    counts: Counter[str] = Counter(
        o for env in envs for outcomes in env.outcomes.values() for o in outcomes
    )
    host = fixtures["host"]
    total = (run / "total.seconds").read_text().strip() if (run / "total.seconds").exists() else "?"
    lines = [
        "# Portability",
        "",
        "Generated by `tools/test_portability.sh` (the second stage of the test command), which",
        "writes it to `.cache/portability/PORTABILITY.md` on every run; `docs/PORTABILITY.md` is",
        "that file from the last full run, copied unedited (`cp .cache/portability/PORTABILITY.md",
        "docs/`) and committed. Every cell is from one run of the device suite (`tests/device`)",
        "inside a device install that has no TensorFlow, on fixtures (bundles, keys, inputs,",
        "expected outputs) built on the host with TensorFlow.",
        "",
        f"- run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({platform.platform(terse=True)}), {total} s for the whole stage",
        f"- host: TensorFlow {host['tensorflow']}, Keras {host['keras']}, ai-edge-litert "
        f"{host['ai-edge-litert']}, Python {host['python']}",
        "- aarch64: the arm64 CPython of Debian 12 bookworm (3.11, Raspberry Pi OS bookworm) and "
        "of Debian 13 trixie (3.13, Raspberry Pi OS trixie), unpacked from Debian's .debs, "
        f"under `{_qemu()}`, `-cpu cortex-a72` "
        "(the Raspberry Pi 4's core); rpi4 bundles are loaded with the profile's hardware id "
        'passed explicitly (`hardware_ids=["raspberrypi,4-model-b"]`), x86_64 bundles likewise '
        "on aarch64 and with detected ids on x86_64",
        "- parity bars: float32 within 1e-5 of Keras; int8 bit-exact to the host's reference "
        "from the same runtime version (x86_64), else the same classes within 0.05; dynamic "
        "within 1e-3 of the reference, same classes",
        "- refusing at packaging time a model that needs newer op versions than tflite-runtime "
        "2.14 has: host test `tests/test_package.py::test_refuses_a_tflite_the_old_runtime_cannot_run` "
        "(main stage), which also shows the real tflite-runtime 2.14 refusing it",
        "",
        "| arch | runtime | python | numpy | "
        + " | ".join(MODES)
        + f" | {SECURITY} | {ZOO} | {NO_TF} |"
        " build s | run s |",
        "|" + "---|" * (len(MODES) + 9),
    ]
    for env in envs:
        arch, runtime = ENVIRONMENTS[env.name]
        version = env.info.get("backend_version", "")
        cells = [_cell(env, column) for column in (*MODES, SECURITY, ZOO, NO_TF)]
        lines.append(
            f"| {arch} | {runtime} {version} | {env.info.get('python', '-')} | "
            f"{env.info.get('numpy', '-')} | " + " | ".join(cells) + f" | {env.seconds['build']} |"
            f" {env.seconds['run']} |"
        )
    problems = [f"- {env.name}: {env.problem}" for env in envs if env.problem]
    if problems:
        lines += ["", "Not run:", "", *problems]
    impossible = [f"- {env.name}: {env.unavailable}" for env in envs if env.unavailable]
    if impossible:
        lines += ["", "Cannot exist (checked on every run; not a failure):", "", *impossible]
    lines += [
        "",
        "On a real board: copy `.cache/portability/run/fixtures/` and `tests/device/` to it, "
        "install the edgepkg wheel with `[device]` and pytest (or the wheel, "
        "`tflite-runtime==2.14.0`, `'numpy<2'` and pytest), and run "
        "`EDGE_SDK_DEVICE_FIXTURES=fixtures python -P -m pytest tests/device "
        "--confcutdir tests/device --import-mode importlib -p no:cacheprovider`; there the "
        "hardware ids are detected from the device tree instead of passed.",
    ]
    lines += [
        "",
        "## Parity per bundle",
        "",
        "Max absolute error over the 397 held-out digits × 10 class probabilities. The reference "
        "is what the host computed from the same decrypted model with the bundle's own runtime.",
        "",
        "| arch | runtime | bundle | mode | hardware ids | vs Keras | vs reference | reference "
        "| outputs ≠ ref. | vs host ai-edge-litert | accuracy % |",
        "|" + "---|" * 11,
    ]
    for env in envs:
        arch, runtime = ENVIRONMENTS[env.name]
        for p in env.parity:
            lines.append(
                f"| {arch} | {runtime} {p['backend_version']} | {p['bundle']} | {p['mode']} | "
                f"{p['hardware_ids']} | {_fmt(p['max_abs_err_vs_keras'])} | "
                f"{_fmt(p['max_abs_err_vs_reference'])} | {p['reference']} | "
                f"{p['outputs_differing_from_reference']}/{p['outputs']} | "
                f"{_fmt(p['max_abs_err_vs_host_litert'])} | {p['accuracy']:.3f} |"
            )
    lines += [
        "",
        f"portability: {counts['pass']} passed, {counts['FAIL']} failed, {counts['skip']} skipped",
    ]
    return "\n".join(lines) + "\n", counts, problems


def main(argv: list[str]) -> int:
    """Write and print the table; exit 1 when a test failed or an environment did not run."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    run, out = Path(argv[0]), Path(argv[1])
    text, counts, problems = render(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text, end="")
    return 1 if counts["FAIL"] or problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
