"""Layouts users bring: other subvolume names, nested locations, no ESP, the empty-root design."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pantheros import manifest as manifests
from tests.helpers import panther

pytestmark = pytest.mark.root


def custom(workdir: Path, **impermanence: str) -> Path:
    doc = json.loads(manifests.bundled_path("lab").read_text())
    doc["host"] = "custom"
    doc["storage"]["esp"] = None
    doc["storage"]["subvolumes"] = [
        {"name": "@", "mountpoint": "/", "role": "root"},
        {"name": "@nix", "mountpoint": "/nix", "role": "nix"},
        {"name": "@persist", "mountpoint": "/persist", "role": "persist"},
        {"name": "@log", "mountpoint": "/var/log", "role": "log"},
        {"name": "@home", "mountpoint": "/home", "role": "home"},
        {"name": "containers/data", "mountpoint": "/var/lib/containers", "role": "other"},
    ]
    doc["storage"]["blank_snapshot"] = "snapshots/@blank"
    doc["storage"]["old_roots"] = "snapshots/old"
    doc["impermanence"].update(impermanence)
    path = workdir / "custom.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("design", ["blank-snapshot", "empty-subvolume"])
def test_a_custom_layout_rolls_back_diffs_and_persists(workdir: Path, design: str) -> None:
    lab = workdir / "lab"
    up = panther(
        "lab", "up", str(lab), "--manifest", str(custom(workdir, design=design)), "--size", "1G"
    )
    assert up.returncode == 0, up.stderr
    root = lab / "mnt"
    status = json.loads(panther("lab", "status", str(lab), "--json").stdout)
    assert status["mounts"][str(root)] == "@"
    assert status["mounts"][str(root / "var/lib/containers")] == "containers/data"
    (root / "scratch").write_text("goes")
    (root / "var/lib/containers/kept").write_text("own subvolume")
    (root / "var/lib/app").mkdir(parents=True)
    (root / "var/lib/app/db").write_text("data")
    listing = panther("diff", "--list", "--lab", str(lab)).stdout.splitlines()
    assert "+ /scratch" in listing
    assert not any("containers" in line for line in listing)
    assert panther("persist", "add", "/var/lib/app", "--lab", str(lab)).returncode == 0
    reboot = panther("lab", "reboot", str(lab))
    assert reboot.returncode == 0, reboot.stderr
    assert not (root / "scratch").exists()
    assert (root / "var/lib/app/db").read_text() == "data"
    assert (root / "var/lib/containers/kept").read_text() == "own subvolume"
    roots = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"]
    assert len(roots) == 1
    restored = panther("restore", "/scratch", "--from", roots[0]["name"], "--lab", str(lab))
    assert restored.returncode == 0, restored.stderr
    assert (root / "scratch").read_text() == "goes"
