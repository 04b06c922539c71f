"""The single runner, and the command line's conventions."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pantheros import __version__, process
from pantheros.errors import CommandFailed, ToolMissing
from tests.helpers import one_line_error, panther


def test_runner_logs_argv_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pantheros.process"):
        proc = process.run(["echo", "hello world"], check=True)
    assert proc.stdout == "hello world\n"
    assert "run: echo hello world" in caplog.text


def test_runner_check_decides() -> None:
    assert process.run(["false"], check=False).returncode == 1
    with pytest.raises(CommandFailed) as info:
        process.run(["sh", "-c", "echo boom: broken >&2; exit 3"], check=True)
    assert info.value.returncode == 3
    assert str(info.value) == "sh failed: boom: broken"


def test_missing_tool_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolMissing, match=r"not found: mkfs.btrfs \(install the btrfs-progs"):
        process.run(["mkfs.btrfs", "--version"], check=True)


def test_version_help_and_usage_errors() -> None:
    assert panther("--version").stdout.strip() == f"panther {__version__}"
    helptext = panther("--help").stdout
    assert "disk" in helptext
    assert "lab" in helptext
    proc = panther("disk", "frobnicate")
    assert proc.returncode == 2
    assert "invalid choice" in one_line_error(proc)


@pytest.mark.root
def test_verbose_logs_external_commands(image: Callable[..., Path]) -> None:
    img = image(512)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True, capture_output=True)
    loud = panther("-v", "disk", "format", "--manifest", "lab", str(img))
    assert loud.returncode == 5
    assert "panther: run: losetup --find --show --partscan" in loud.stderr
    assert "panther: run: wipefs" in loud.stderr
    quiet = panther("disk", "format", "--manifest", "lab", str(img))
    assert "run:" not in quiet.stderr
    assert "--yes-wipe" in one_line_error(quiet)
