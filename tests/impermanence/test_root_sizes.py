"""`roots list --size`: what `btrfs filesystem du` prints, read (the runner replaced; the real
tool is run by tests/impermanence/test_roots_restore_status.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from pantheros import process
from pantheros.errors import PantherError
from pantheros.impermanence import oldroots


def fake_du(monkeypatch: pytest.MonkeyPatch, stdout: str) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(argv: Sequence[str], *, check: bool) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, stdout, "")

    monkeypatch.setattr(process, "run", run)
    return calls


def test_total_and_exclusive_from_the_summary_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_du(
        monkeypatch,
        "     Total   Exclusive  Set shared  Filename\n"
        "   2113536     2097152       16384  /top/old_roots/000000000010-x\n",
    )
    assert oldroots.measured_sizes(Path("/top/old_roots/r")) == (2113536, 2097152)
    assert calls == [["btrfs", "filesystem", "du", "-s", "--raw", "/top/old_roots/r"]]


@pytest.mark.parametrize("stdout", ["", "     Total   Exclusive  Set shared  Filename\n", "1 2\n"])
def test_output_it_cannot_read_is_one_error(monkeypatch: pytest.MonkeyPatch, stdout: str) -> None:
    fake_du(monkeypatch, stdout)
    with pytest.raises(PantherError, match="cannot read the size of /r from btrfs filesystem du"):
        oldroots.measured_sizes(Path("/r"))
