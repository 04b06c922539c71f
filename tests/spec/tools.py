"""Running both tools over an OpenSpec tree: the pinned OpenSpec CLI and panther spec."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = os.environ.get("PANTHEROS_OPENSPEC_CLI") or str(
    REPO / ".ci/openspec/node_modules/.bin/openspec"
)
ENV = {
    **os.environ,
    "OPENSPEC_TELEMETRY": "0",
    "DO_NOT_TRACK": "1",
    "CI": "1",
    "OPENSPEC_NO_UPDATE_CHECK": "1",
    "NO_COLOR": "1",
    "PYTHONPATH": str(REPO / "src"),
}


def node_ok() -> bool:
    """OpenSpec 1.13.2 needs Node.js 20.19 or newer."""
    if shutil.which("node") is None:
        return False
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout
    parts = [int(p) for p in out.strip().lstrip("v").split(".")[:2] if p.isdigit()]
    return len(parts) == 2 and tuple(parts) >= (20, 19)


def openspec_argv(*args: str) -> list[str]:
    return [CLI, *args]


def panther_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pantheros", "spec", *args]


def openspec(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        openspec_argv(*args), cwd=cwd, env=ENV, capture_output=True, text=True, check=False
    )


def panther(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        panther_argv(*args), cwd=cwd, env=ENV, capture_output=True, text=True, check=False
    )


def one_line_error(proc: subprocess.CompletedProcess[str], prog: str = "panther") -> str:
    """Assert the failure is one clear line on stderr and return it."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog}: error: "), proc.stderr
    return lines[0]
