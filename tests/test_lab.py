"""`panther lab`: up, status, down on a real sparse image."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import one_line_error, panther

pytestmark = pytest.mark.root


def loops_of(image: Path) -> str:
    return subprocess.run(
        ["losetup", "--associated", str(image)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.scenario("storage-layout: Lab up, status and down")
def test_lab_up_status_down(workdir: Path) -> None:
    lab = workdir / "lab"
    up = panther("lab", "up", str(lab), "--size", "1G")
    assert up.returncode == 0, up.stderr
    assert "What to try next" in up.stdout
    status = json.loads(panther("lab", "status", str(lab), "--json").stdout)
    assert status["image"] == str(lab / "disk.img")
    assert status["device"].startswith("/dev/loop")
    assert status["manifest"] == str(lab / "manifest.json")
    assert status["up"] is True
    mnt = lab / "mnt"
    assert status["mounts"] == {
        str(mnt): "root",
        str(mnt / "nix"): "nix",
        str(mnt / "persist"): "persist",
        str(mnt / "var/log"): "log",
        str(mnt / "home"): "home",
    }
    # A sparse image: it takes far less space than its size.
    assert (lab / "disk.img").stat().st_size == 1024**3
    assert (lab / "disk.img").stat().st_blocks * 512 < 200 * 1024**2

    (mnt / "persist" / "kept").write_text("data")
    again = panther("lab", "up", str(lab))
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr
    assert loops_of(lab / "disk.img").count("\n") == 1

    down = panther("lab", "down", str(lab))
    assert down.returncode == 0, down.stderr
    assert loops_of(lab / "disk.img") == ""
    with open("/proc/self/mountinfo") as f:
        assert not any(line.split()[4].startswith(str(lab)) for line in f)

    # Up again on the same image keeps what was written to persist.
    assert panther("lab", "up", str(lab)).returncode == 0
    assert (mnt / "persist" / "kept").read_text() == "data"
    assert panther("lab", "down", str(lab), "--purge").returncode == 0
    assert not (lab / "disk.img").exists()


def test_lab_status_without_a_lab(workdir: Path) -> None:
    proc = panther("lab", "status", str(workdir / "none"), "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["image"] is None


def test_lab_up_rejects_a_bad_manifest_and_a_bad_size(workdir: Path) -> None:
    bad = workdir / "bad.json"
    bad.write_text('{"version": 1}')
    proc = panther("lab", "up", str(workdir / "lab"), "--manifest", str(bad))
    assert "missing required property" in one_line_error(proc)
    assert not (workdir / "lab" / "disk.img").exists()
    proc = panther("lab", "up", str(workdir / "lab2"), "--size", "lots")
    assert "not a size" in one_line_error(proc)
