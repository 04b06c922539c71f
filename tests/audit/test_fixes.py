"""Fixes that compose: every plain fix of a report, applied in order, leaves all in effect; the
NixOS fixes of a report form one module that Nix parses and evaluates."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from trees import LEVEL, failing_tree

from helpers import nix_eval_json, panther
from pantheros.audit import fixes


def report(root: Path) -> dict[str, Any]:
    proc = panther("audit", "--root", str(root), "--level", LEVEL, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def apply(root: Path, fix: str) -> None:
    """Run a plain fix against root: its files are the quoted absolute paths ('/etc/...')."""
    proc = subprocess.run(
        ["sh", "-c", fix.replace("'/", f"'{root}/")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{fix}\n{proc.stderr}"


def test_every_plain_fix_applied_in_order_leaves_all_in_effect(tmp_path: Path) -> None:
    root = failing_tree(tmp_path / "tree")
    before = report(root)
    failed = [f for f in before["findings"] if f["status"] == "fail"]
    areas = {f["area"] for f in failed}
    assert {"sysctl", "cmdline", "module", "mount", "ssh", "users", "files"} <= areas
    assert sum(1 for f in failed if f["area"] == "sysctl") >= 15
    for f in failed:
        assert f["fix"]["other"], f["id"]
        apply(root, f["fix"]["other"])
    after = {f["id"]: f for f in report(root)["findings"]}
    still = [
        (f["id"], after[f["id"]]["status"]) for f in failed if after[f["id"]]["status"] != "pass"
    ]
    assert still == []
    # Twice is the same as once.
    for f in failed:
        apply(root, f["fix"]["other"])
    again = {f["id"]: f["status"] for f in report(root)["findings"]}
    assert all(again[f["id"]] == "pass" for f in failed)
    # Other keys in the edited files are left alone.
    grub = (root / "etc/default/grub").read_text()
    assert grub.startswith("GRUB_DEFAULT=0\n")
    assert "quiet init_on_alloc=0" in grub  # the later init_on_alloc=1 overrides it
    assert "Match User backup" in (root / "etc/ssh/sshd_config").read_text()


@pytest.mark.skipif(shutil.which("nix-instantiate") is None, reason="needs nix-instantiate")
def test_the_fix_snippet_is_one_module_nix_parses_and_evaluates(tmp_path: Path) -> None:
    root = failing_tree(tmp_path / "tree")
    failed = [f for f in report(root)["findings"] if f["status"] == "fail"]
    proc = panther("audit", "--root", str(root), "--level", LEVEL, "--fix-snippet")
    assert proc.returncode == 1, proc.stderr
    module = tmp_path / "fixes.nix"
    module.write_text(proc.stdout)
    parsed = subprocess.run(
        ["nix-instantiate", "--parse", str(module)], capture_output=True, text=True, check=False
    )
    assert parsed.returncode == 0, parsed.stderr
    expr = (
        f"let m = import {module} {{ lib = {{ }}; pkgs = {{ linuxPackages_hardened = null; }}; }};"
        " in { inherit (m.boot) kernelParams blacklistedKernelModules extraModprobeConfig;"
        " sysctl = m.boot.kernel.sysctl; ssh = m.services.openssh.settings;"
        " users = m.users.users; }"
    )
    out = nix_eval_json(expr)
    by_area: dict[str, list[dict[str, Any]]] = {}
    for f in failed:
        by_area.setdefault(f["area"], []).append(f)
    # Every failing kernel parameter and module in one list each; every sysctl and SSH key.
    params = [f["fix"]["nixos"].split('"')[1] for f in by_area["cmdline"]]
    assert sorted(out["kernelParams"]) == sorted(params)
    modules = [f["id"].removeprefix("module.") for f in by_area["module"]]
    assert sorted(out["blacklistedKernelModules"]) == sorted(modules)
    assert out["extraModprobeConfig"].count("/bin/false") == len(modules)
    assert sorted(out["sysctl"]) == sorted(
        f["id"].removeprefix("sysctl.") for f in by_area["sysctl"]
    )
    assert sorted(out["ssh"]) == sorted(f["id"].removeprefix("ssh.") for f in by_area["ssh"])
    assert out["ssh"]["PermitRootLogin"] == "no"
    assert out["users"]["bob"] == {"hashedPassword": "!"}
    assert out["users"]["toor"]["uid"] >= 1000


def test_merging_definitions() -> None:
    merged, conflicts = fixes.merge(
        [
            ("boot.kernelParams", ["a"]),
            ("boot.kernelParams", ["b", "a"]),
            ("x.enable", True),
            ("x.enable", True),
            ("y", 1),
            ("y", 2),
            ("boot.extraModprobeConfig", fixes.Lines("install a /bin/false")),
            ("boot.extraModprobeConfig", fixes.Lines("install b /bin/false")),
        ]
    )
    assert dict(merged)["boot.kernelParams"] == ["a", "b"]
    assert dict(merged)["x.enable"] is True
    assert dict(merged)["boot.extraModprobeConfig"].text.count("\n") == 1
    assert conflicts == ["y: wanted both 1 and 2"]
    assert fixes.nix_value('say "${hi}"\n') == '"say \\"\\${hi}\\"\\n"'


def test_names_from_the_tree_are_data_in_the_fixes_never_shell(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    evil = "$(touch PWNED)'`touch PWNED`&/x"
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\n{evil}:x:0:0::/:/bin/sh\n")
    (root / "etc/shadow").write_text(f"root:!:1::::::\n{evil}::1::::::\n")
    drop = root / "var" / "it's $(touch PWNED)\x1b[2J"  # and a terminal escape
    drop.mkdir(parents=True)
    drop.chmod(0o777)
    failed = [f for f in report(root)["findings"] if f["status"] == "fail"]
    assert {f["id"] for f in failed} >= {
        "users.uid0",
        "users.empty_password",
        "files.world_writable",
    }
    for f in failed:
        if f["area"] in ("users", "files"):
            proc = subprocess.run(
                ["sh", "-c", f["fix"]["other"].replace("'/", f"'{root}/")],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "PWNED").exists()
    after = {f["id"]: f["status"] for f in report(root)["findings"]}
    assert after["users.uid0"] == after["users.empty_password"] == "pass"
    assert after["files.world_writable"] == "pass"
    text = panther("audit", "--root", str(root), "--level", LEVEL).stdout
    assert "\x1b" not in text
