"""tools/portability_table.py: every environment gets a row, whatever happened to it.

The portability stage must never drop an environment silently: one whose build failed is a
failure, and one that cannot exist (tflite-runtime on Python 3.13) is shown with its reason. These
tests build a fake run directory and read the table the script makes from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import portability_table


def _passing(where: Path, python: str) -> None:
    where.mkdir(parents=True)
    (where / "junit.xml").write_text(
        '<testsuites><testsuite name="device">'
        '<testcase name="test_tensorflow_never_enters_sys_modules"/>'
        '<testcase name="test_rollback_is_refused"/>'
        "</testsuite></testsuites>"
    )
    (where / "report.jsonl").write_text(
        json.dumps({"event": "environment", "python": python, "backend_version": "9.9.9"}) + "\n"
    )
    (where / "build.seconds").write_text("3\n")
    (where / "run.seconds").write_text("1\n")


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "fixtures").mkdir(parents=True)
    host = {"tensorflow": "t", "keras": "k", "ai-edge-litert": "l", "python": "p"}
    (run / "fixtures" / "fixtures.json").write_text(json.dumps({"host": host}))
    for name in portability_table.ENVIRONMENTS:
        _passing(run / name, python=f"python-of-{name}")
    return run


def test_every_environment_has_a_row_and_passing_ones_pass(tmp_path: Path) -> None:
    run = _run(tmp_path)
    text, counts, problems = portability_table.render(run)
    for name in portability_table.ENVIRONMENTS:
        assert f"python-of-{name}" in text
    assert counts["pass"] == 2 * len(portability_table.ENVIRONMENTS)
    assert problems == []
    assert "cannot exist" not in text


def test_an_environment_that_cannot_exist_is_shown_with_its_reason_and_is_no_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(tmp_path)
    impossible = next(name for name in portability_table.ENVIRONMENTS if "trixie" in name)
    for leftover in (run / impossible).iterdir():
        leftover.unlink()
    (run / impossible / "unavailable").write_text("no wheel for this Python\n")
    out = tmp_path / "PORTABILITY.md"
    assert portability_table.main([str(run), str(out)]) == 0
    text = out.read_text()
    assert capsys.readouterr().out == text
    row = next(line for line in text.splitlines() if "(none installable)" in line)
    cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
    tests = cells[4:-2]  # between numpy and the build/run seconds
    assert tests and all(cell == "cannot exist" for cell in tests), row
    assert f"- {impossible}: no wheel for this Python" in text


def test_an_environment_that_failed_to_build_fails_the_table(tmp_path: Path) -> None:
    run = _run(tmp_path)
    broken = next(iter(portability_table.ENVIRONMENTS))
    (run / broken / "junit.xml").unlink()
    (run / broken / "skipped").write_text("environment build failed\n")
    out = tmp_path / "PORTABILITY.md"
    assert portability_table.main([str(run), str(out)]) == 1
    assert f"- {broken}: environment build failed" in out.read_text()


def test_a_failed_device_test_fails_the_table(tmp_path: Path) -> None:
    run = _run(tmp_path)
    name = next(iter(portability_table.ENVIRONMENTS))
    (run / name / "junit.xml").write_text(
        '<testsuites><testsuite name="device"><testcase name="test_rollback_is_refused">'
        '<failure message="no"/></testcase></testsuite></testsuites>'
    )
    out = tmp_path / "PORTABILITY.md"
    assert portability_table.main([str(run), str(out)]) == 1
    assert "**FAIL** (1/1)" in out.read_text()
