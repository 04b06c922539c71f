"""One table of exit codes (docs/cli.md), held to what the commands do: every row is run.

The table of codes is ExitCode's; the table of refusals names a command for each kind of refusal
and the code it must end in, so that two refusals alike never end in different codes.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pantheros.errors import ExitCode
from tests.helpers import REPO, panther
from tests.spec import corpus

CLI_MD = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")


def _rows(heading: str) -> list[list[str]]:
    """The rows of the first table after heading, as lists of cells."""
    lines = CLI_MD.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table


REFUSALS = [
    (what, re.findall(r"`([^`]*)`", example)[0], int(code))
    for what, example, code in _rows("### Which refusal is which code")
]


def test_the_codes_are_those_of_exit_code() -> None:
    documented = {int(code): meaning for code, meaning in _rows("## Exit codes")}
    assert set(documented) == {int(c) for c in ExitCode} | {130}
    assert len(REFUSALS) >= 15


def _run(command: str, lab: Path | None, spec: Path | None) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command.replace("$LAB", str(lab)))
    assert argv[0] == "panther"
    if argv[1] == "spec":
        assert spec is not None
        return subprocess.run(
            [sys.executable, "-m", "pantheros", *argv[1:]],
            cwd=spec,
            capture_output=True,
            text=True,
            check=False,
            env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src")},
        )
    return panther(*argv[1:])


def _walk(rows: list[tuple[str, str, int]], lab: Path | None, spec: Path | None) -> list[str]:
    wrong = []
    for what, command, code in rows:
        proc = _run(command, lab, spec)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        one_line = len(lines) == 1 and lines[0].startswith("panther: error: ")
        if proc.returncode != code or not one_line:
            wrong.append(f"{what}: `{command}` exited {proc.returncode}, not {code}: {proc.stderr}")
    return wrong


def test_every_refusal_without_a_machine(tmp_path: Path) -> None:
    spec = corpus.write(tmp_path / "spec")
    rows = [row for row in REFUSALS if "$LAB" not in row[1]]
    assert len(rows) >= 5
    assert _walk(rows, None, spec) == []


@pytest.mark.root
def test_every_refusal_on_a_lab(lab: Path) -> None:
    root = lab / "mnt"
    (root / "etc-note").write_text("first")
    reboot = panther("lab", "reboot", str(lab))
    assert reboot.returncode == 0, reboot.stderr
    (root / "etc-note").write_text("second")
    (root / "var/lib").mkdir(parents=True, exist_ok=True)
    (root / "var/lib/link").symlink_to("/etc")
    rows = [row for row in REFUSALS if "$LAB" in row[1]]
    assert len(rows) >= 10
    assert _walk(rows, lab, None) == []
