"""The Nix CI workflow and scripts/nixos-facts: what a machine with Nix and nixpkgs runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO

WORKFLOW = REPO / ".github" / "workflows" / "nix.yml"
NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")


def steps() -> list[dict[str, Any]]:
    document = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as true; GitHub reads it as "on".
    assert set(document.get("on", document.get(True))) >= {"push", "pull_request"}
    [job] = document["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    found: list[dict[str, Any]] = job["steps"]
    return found


def test_the_workflow_runs_the_flake_checks_with_kvm() -> None:
    runs = [s.get("run", "") for s in steps()]
    uses = [s.get("uses", "") for s in steps()]
    assert any(u.startswith("actions/checkout@") for u in uses)
    install = next(s for s in steps() if s.get("uses", "").startswith("cachix/install-nix-action@"))
    config = install["with"]["extra_nix_config"]
    assert "experimental-features = nix-command flakes" in config
    assert "kvm" in config.split("system-features =", 1)[1]
    assert any("udevadm trigger --name-match=kvm" in r for r in runs)
    check = runs.index("nix flake check -L")
    assert any("nix flake lock" in r for r in runs[:check])
    assert any("scripts/nixos-facts" in r for r in runs[check:])


def test_nixos_facts_refuses_an_unknown_host() -> None:
    proc = subprocess.run(
        [str(REPO / "scripts" / "nixos-facts"), "laptop"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "usage: scripts/nixos-facts" in proc.stderr


@pytest.mark.skipif(
    not NIXPKGS_LIB or not Path(NIXPKGS_LIB, "lib").is_dir(),
    reason="the stub evaluation needs PANTHEROS_NIXPKGS_LIB (a nixpkgs lib checkout)",
)
def test_nixos_facts_prints_what_the_stub_evaluation_asserts() -> None:
    proc = subprocess.run(
        [str(REPO / "scripts" / "nixos-facts"), "--stub", "server"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["drvPath"] is None
    facts = printed["facts"]
    assert facts["sysctl"]["kernel.yama.ptrace_scope"] == 3
    assert facts["sysctl"]["vm.max_map_count"] == 1048576
    unit = facts["initrd"]["services"]["pantheros-rollback"]
    assert unit["serviceConfig"]["ExecStart"].startswith("<store>/bin/pantheros-btrfs rollback ")
    assert unit["requiredBy"] == ["sysroot.mount"]
    assert facts["initrd"]["storePaths"] == ["<store>"]
    assert facts["initrd"]["extraBin"] == {
        "btrfs": "<store>/bin/btrfs",
    }
    assert "install cramfs <store>/bin/false" in facts["extraModprobeConfig"]
    assert facts["fileSystems"]["/tmp"]["options"][-1] in {"noexec", "strictatime"}
    assert facts["manifest"]["host"] == "server"
